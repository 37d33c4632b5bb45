/* Aligned text tables; see table.h. */
#include "table.h"

#include "fmt.h"

#include "loom/util.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct cli_table {
    size_t ncols;
    char **cells; /* row-major; the first ncols are the headers */
    size_t n, cap;
    bool *right;
};

char *cli_sanitize(const char *s)
{
    size_t n = strlen(s);
    char *out = loom_xstrndup(s, n);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)out[i];
        if (c == '\n' || c == '\r' || c == '\t') {
            out[i] = ' ';
        } else if (c < 0x20 || c == 0x7f) {
            out[i] = '?';
        } else if (c == 0xc2 && i + 1 < n && (unsigned char)out[i + 1] >= 0x80 &&
                   (unsigned char)out[i + 1] <= 0x9f) {
            /* U+0080..U+009F: some terminals read U+009B as an escape (CSI).
             * Two bytes become "??" so the string keeps its length. */
            out[i] = '?';
            out[i + 1] = '?';
            i++;
        }
    }
    return out;
}

size_t cli_text_width(const char *s)
{
    size_t w = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xc0) != 0x80) w++; /* skip continuation bytes */
    return w;
}

static void push(cli_table_t *t, char *cell)
{
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 32;
        t->cells = loom_xrealloc(t->cells, t->cap * sizeof *t->cells);
    }
    t->cells[t->n++] = cell;
}

cli_table_t *cli_table_new(const char *const *headers, size_t ncols)
{
    cli_table_t *t = loom_xcalloc(1, sizeof *t);
    t->ncols = ncols;
    t->right = loom_xcalloc(ncols, sizeof *t->right);
    for (size_t i = 0; i < ncols; i++) push(t, cli_sanitize(headers[i]));
    return t;
}

void cli_table_destroy(cli_table_t **tp)
{
    cli_table_t *t = tp ? *tp : NULL;
    if (!t) return;
    for (size_t i = 0; i < t->n; i++) free(t->cells[i]);
    free(t->cells);
    free(t->right);
    free(t);
    *tp = NULL;
}

void cli_table_align_right(cli_table_t *t, size_t col)
{
    if (col < t->ncols) t->right[col] = true;
}

void cli_table_add(cli_table_t *t, const char *cell)
{
    push(t, cli_sanitize(cell && *cell ? cell : "-"));
}

void cli_table_addf(cli_table_t *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        cli_table_add(t, NULL);
        return;
    }
    char *s = loom_xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    cli_table_add(t, s);
    free(s);
}

size_t cli_table_rows(const cli_table_t *t)
{
    return (t->n + t->ncols - 1) / t->ncols - 1;
}

static void pad(loom_buf_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++) loom_buf_append(b, " ", 1);
}

char *cli_table_render(const cli_table_t *t)
{
    size_t *width = loom_xcalloc(t->ncols, sizeof *width);
    for (size_t i = 0; i < t->n; i++) {
        size_t w = cli_text_width(t->cells[i]);
        if (w > width[i % t->ncols]) width[i % t->ncols] = w;
    }
    loom_buf_t b = {0};
    for (size_t i = 0; i < t->n; i++) {
        size_t col = i % t->ncols;
        bool last = col + 1 == t->ncols || i + 1 == t->n;
        size_t fill = width[col] - cli_text_width(t->cells[i]);
        if (t->right[col]) pad(&b, fill);
        loom_buf_puts(&b, t->cells[i]);
        /* The last column gets no padding, so no line ends in spaces. */
        if (!last) {
            if (!t->right[col]) pad(&b, fill);
            loom_buf_puts(&b, "  ");
        } else {
            loom_buf_puts(&b, "\n");
        }
    }
    free(width);
    return loom_buf_steal(&b);
}

void cli_table_print(const cli_table_t *t, FILE *out)
{
    char *s = cli_table_render(t);
    fputs(s, out);
    free(s);
}

void cli_table_add_int(cli_table_t *t, const json_t *o, const char *key)
{
    int64_t v;
    if (cli_jint(o, key, &v))
        cli_table_addf(t, "%lld", (long long)v);
    else
        cli_table_add(t, NULL);
}
