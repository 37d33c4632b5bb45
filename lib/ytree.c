/* A YAML node tree with positions, built from libyaml events (see ytree.h for
 * what is refused and why). libyaml's own errors are translated here, once,
 * into positioned diagnostics. */
#include "loom/ytree.h"
#include "loom/err.h"
#include "loom/util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

typedef struct {
    const char *src;
    size_t len;
    const char *file;
    loom_diags_t *diags;
    loom_ytree_limits_t lim;
    loom_ynode_t *root;
    loom_ynode_t **stack; /* open sequences and mappings, innermost last */
    int depth;
    size_t n_nodes;
    int n_docs;
    size_t lc_line,
        lc_off; /* a forward-only cursor: byte offset where line lc_line (0-based) starts */
    bool fatal;
    bool dups; /* duplicate keys were reported (not fatal) */
} builder;

static void report(builder *b, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void report(builder *b, int line, int col, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    loom_diags_vadd(b->diags, b->file, line, col, fmt, ap);
    va_end(ap);
}

/* Stops the build: no tree comes back after this. */
#define FATAL(b, mark, ...)                                                                        \
    do {                                                                                           \
        report((b), (int)(mark).line + 1, (int)(mark).column + 1, __VA_ARGS__);                    \
        (b)->fatal = true;                                                                         \
    } while (0)

static void node_free(loom_ynode_t *n)
{
    if (!n) return;
    for (size_t i = 0; i < n->n_items; i++) node_free(n->items[i]);
    for (size_t i = 0; i < n->n_pairs; i++) {
        node_free(n->pairs[i].key);
        node_free(n->pairs[i].value);
    }
    free(n->items);
    free(n->pairs);
    free(n->str);
    free(n->tag);
    free(n);
}

void loom_ytree_destroy(loom_ynode_t **root)
{
    if (!root) return;
    node_free(*root);
    *root = NULL;
}

/* Line and column (1-based, in characters) of a byte offset, for reader errors
 * which libyaml reports as an offset only. */
static void offset_pos(const char *src, size_t len, size_t off, int *line, int *col)
{
    int l = 1, c = 1;
    for (size_t i = 0; i < off && i < len; i++) {
        unsigned char ch = (unsigned char)src[i];
        if (ch == '\n') {
            l++;
            c = 1;
        } else if ((ch & 0xC0) != 0x80) {
            c++;
        }
    }
    *line = l;
    *col = c;
}

/* The byte at a libyaml mark (line and column count characters), or -1. */
static int byte_at(const char *src, size_t len, yaml_mark_t m)
{
    size_t i = 0;
    for (size_t l = 0; l < m.line && i < len; i++)
        if (src[i] == '\n') l++;
    for (size_t c = 0; i < len; i++) {
        if (((unsigned char)src[i] & 0xC0) == 0x80) continue;
        if (c++ == m.column) return (unsigned char)src[i];
    }
    return -1;
}

static void report_libyaml(builder *b, const yaml_parser_t *p)
{
    if (p->error == YAML_READER_ERROR) {
        int line, col;
        offset_pos(b->src, b->len, p->problem_offset, &line, &col);
        if (p->problem_offset < b->len && b->src[p->problem_offset] == '\0')
            report(b, line, col, "NUL byte in input: a YAML file must be UTF-8 text");
        else if (p->problem_value >= 0)
            report(b, line, col, "invalid text: %s (0x%02X)", p->problem, p->problem_value);
        else
            report(b, line, col, "invalid text: %s", p->problem);
    } else if (p->error == YAML_SCANNER_ERROR || p->error == YAML_PARSER_ERROR) {
        yaml_mark_t m = p->problem_mark;
        const char *hint = byte_at(b->src, b->len, m) == '\t'
                               ? "; tabs are not allowed in YAML indentation, use spaces"
                               : "";
        yaml_mark_t cm = p->context_mark;
        if (p->context && (cm.line != m.line || cm.column != m.column))
            report(b, (int)m.line + 1, (int)m.column + 1, "invalid YAML: %s (%s at %d:%d)%s",
                   p->problem, p->context, (int)cm.line + 1, (int)cm.column + 1, hint);
        else if (p->context)
            report(b, (int)m.line + 1, (int)m.column + 1, "invalid YAML: %s (%s)%s", p->problem,
                   p->context, hint);
        else
            report(b, (int)m.line + 1, (int)m.column + 1, "invalid YAML: %s%s", p->problem, hint);
    } else {
        report(b, 0, 0, "could not read YAML: %s", p->problem ? p->problem : "out of memory");
    }
    b->fatal = true;
}

/* Room for one more element in arr (n used, *cap allocated). */
static void *grow(void *arr, size_t *cap, size_t n, size_t size)
{
    if (n < *cap) return arr;
    *cap = *cap ? *cap * 2 : 4;
    return loom_xrealloc(arr, *cap * size);
}

/* Links a new node into the open container (or makes it the root). Returns
 * false when it cannot go there; the caller still owns it then. */
static bool attach(builder *b, loom_ynode_t *n, yaml_mark_t mark)
{
    if (b->depth == 0) {
        b->root = n;
        return true;
    }
    loom_ynode_t *parent = b->stack[b->depth - 1];
    if (parent->kind == LOOM_YSEQ) {
        parent->items = grow(parent->items, &parent->cap, parent->n_items, sizeof *parent->items);
        parent->items[parent->n_items++] = n;
        return true;
    }
    loom_ypair_t *last = parent->n_pairs ? &parent->pairs[parent->n_pairs - 1] : NULL;
    if (last && !last->value) {
        last->value = n;
        return true;
    }
    if (n->kind != LOOM_YSCALAR) {
        FATAL(b, mark, "mapping keys must be strings, got %s",
              n->kind == LOOM_YSEQ ? "a list" : "a mapping");
        return false;
    }
    parent->pairs = grow(parent->pairs, &parent->cap, parent->n_pairs, sizeof *parent->pairs);
    parent->pairs[parent->n_pairs++] = (loom_ypair_t){n, NULL};
    return true;
}

static loom_ynode_t *node_new(builder *b, loom_ykind kind, const yaml_event_t *ev,
                              const yaml_char_t *anchor, const yaml_char_t *tag)
{
    if (anchor) {
        FATAL(b, ev->start_mark, "YAML anchors and aliases are not supported");
        return NULL;
    }
    if (++b->n_nodes > b->lim.max_nodes) {
        FATAL(b, ev->start_mark, "too many YAML nodes (the limit is %zu)", b->lim.max_nodes);
        return NULL;
    }
    loom_ynode_t *n = loom_xcalloc(1, sizeof *n);
    n->kind = kind;
    n->line = (int)ev->start_mark.line + 1;
    n->col = (int)ev->start_mark.column + 1;
    if (tag) n->tag = loom_xstrdup((const char *)tag);
    return n;
}

/* Byte offset where line (0-based) starts, or len. Events arrive in file
 * order, so the cursor only moves forward: one pass over the input in all. */
static size_t line_start(builder *b, size_t line)
{
    if (line < b->lc_line) b->lc_line = b->lc_off = 0;
    while (b->lc_line < line && b->lc_off < b->len) {
        const char *nl = memchr(b->src + b->lc_off, '\n', b->len - b->lc_off);
        b->lc_off = nl ? (size_t)(nl - b->src) + 1 : b->len;
        b->lc_line++;
    }
    return b->lc_off;
}

/* The column where a block scalar's lines start: the indentation of its first
 * line that is not blank (the lines after the "|" or ">" that opens it). */
static int block_indent(builder *b, const yaml_event_t *ev)
{
    size_t i = line_start(b, ev->start_mark.line + 1);
    for (;;) {
        size_t start = i;
        while (i < b->len && b->src[i] == ' ') i++;
        if (i >= b->len || (b->src[i] != '\n' && b->src[i] != '\r')) return (int)(i - start);
        i++;
    }
}

static loom_ystyle scalar_style(yaml_scalar_style_t s)
{
    switch (s) {
    case YAML_SINGLE_QUOTED_SCALAR_STYLE:
        return LOOM_YSINGLE;
    case YAML_DOUBLE_QUOTED_SCALAR_STYLE:
        return LOOM_YDOUBLE;
    case YAML_LITERAL_SCALAR_STYLE:
        return LOOM_YLITERAL;
    case YAML_FOLDED_SCALAR_STYLE:
        return LOOM_YFOLDED;
    default:
        return LOOM_YPLAIN;
    }
}

static void on_scalar(builder *b, const yaml_event_t *ev)
{
    loom_ynode_t *n = node_new(b, LOOM_YSCALAR, ev, ev->data.scalar.anchor, ev->data.scalar.tag);
    if (!n) return;
    const char *v = (const char *)ev->data.scalar.value;
    size_t len = ev->data.scalar.length;
    n->str = loom_xstrndup(v, len);
    n->len = len;
    n->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
    n->style = scalar_style(ev->data.scalar.style);
    if (n->style == LOOM_YLITERAL || n->style == LOOM_YFOLDED) n->indent = block_indent(b, ev);
    if (memchr(v, '\0', len)) { /* a "\0" escape: no C string could carry it */
        FATAL(b, ev->start_mark, "NUL characters are not allowed in strings");
        node_free(n);
        return;
    }
    if (!attach(b, n, ev->start_mark)) node_free(n);
}

static void on_start(builder *b, const yaml_event_t *ev, loom_ykind kind)
{
    const yaml_char_t *anchor, *tag;
    if (kind == LOOM_YSEQ) {
        anchor = ev->data.sequence_start.anchor;
        tag = ev->data.sequence_start.tag;
    } else {
        anchor = ev->data.mapping_start.anchor;
        tag = ev->data.mapping_start.tag;
    }
    if (b->depth >= b->lim.max_depth) {
        FATAL(b, ev->start_mark, "nesting is deeper than %d levels", b->lim.max_depth);
        return;
    }
    loom_ynode_t *n = node_new(b, kind, ev, anchor, tag);
    if (!n) return;
    if (!attach(b, n, ev->start_mark)) {
        node_free(n);
        return;
    }
    b->stack[b->depth++] = n;
}

static int cmp_pair_key(const void *x, const void *y)
{
    const loom_ypair_t *a = *(const loom_ypair_t *const *)x;
    const loom_ypair_t *c = *(const loom_ypair_t *const *)y;
    size_t n = a->key->len < c->key->len ? a->key->len : c->key->len;
    int r = memcmp(a->key->str, c->key->str, n);
    if (r) return r;
    if (a->key->len != c->key->len) return a->key->len < c->key->len ? -1 : 1;
    return a < c ? -1 : a > c; /* equal keys keep file order */
}

/* Reports and drops every key seen before in this mapping. Sorting keeps a
 * mapping of 100,000 tasks from costing 10^10 comparisons. */
static void drop_duplicate_keys(builder *b, loom_ynode_t *map)
{
    size_t n = map->n_pairs;
    if (n < 2) return;
    loom_ypair_t **sorted = loom_xmalloc(n * sizeof *sorted);
    /* By file index: the key node this one repeats (nodes never move). */
    const loom_ynode_t **first = loom_xcalloc(n, sizeof *first);
    for (size_t i = 0; i < n; i++) sorted[i] = &map->pairs[i];
    qsort(sorted, n, sizeof *sorted, cmp_pair_key);
    bool any = false;
    for (size_t i = 1, head = 0; i < n; i++) {
        if (sorted[i]->key->len == sorted[head]->key->len &&
            memcmp(sorted[i]->key->str, sorted[head]->key->str, sorted[i]->key->len) == 0) {
            first[sorted[i] - map->pairs] = sorted[head]->key;
            any = true;
        } else {
            head = i;
        }
    }
    size_t kept = 0;
    for (size_t i = 0; any && i < n; i++) {
        loom_ypair_t *p = &map->pairs[i];
        if (!first[i]) {
            map->pairs[kept++] = *p;
            continue;
        }
        char q[80];
        loom_yquote(p->key->str, p->key->len, q, sizeof q);
        report(b, p->key->line, p->key->col, "duplicate key %s (first at %d:%d)", q, first[i]->line,
               first[i]->col);
        node_free(p->key);
        node_free(p->value);
    }
    if (any) {
        map->n_pairs = kept;
        b->dups = true;
    }
    free(first);
    free(sorted);
}

static void on_end(builder *b)
{
    loom_ynode_t *n = b->stack[--b->depth];
    if (n->kind == LOOM_YMAP) drop_duplicate_keys(b, n);
}

static void on_event(builder *b, const yaml_event_t *ev)
{
    switch (ev->type) {
    case YAML_DOCUMENT_START_EVENT:
        if (++b->n_docs > 1)
            FATAL(b, ev->start_mark, "only one YAML document is allowed in a file");
        break;
    case YAML_ALIAS_EVENT:
        FATAL(b, ev->start_mark, "YAML anchors and aliases are not supported");
        break;
    case YAML_SCALAR_EVENT:
        on_scalar(b, ev);
        break;
    case YAML_SEQUENCE_START_EVENT:
        on_start(b, ev, LOOM_YSEQ);
        break;
    case YAML_MAPPING_START_EVENT:
        on_start(b, ev, LOOM_YMAP);
        break;
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
        on_end(b);
        break;
    default: /* stream start/end, document end */
        break;
    }
}

int loom_ytree_parse(const char *src, size_t len, const char *filename,
                     const loom_ytree_limits_t *lim, loom_ynode_t **root, loom_diags_t *diags)
{
    builder b = {.src = src, .len = len, .file = filename, .diags = diags};
    b.lim = lim ? *lim
                : (loom_ytree_limits_t){(size_t)LOOM_DAG_MAX_BYTES, LOOM_YTREE_MAX_NODES,
                                        LOOM_DAG_MAX_DEPTH};
    *root = NULL;
    if (len > b.lim.max_bytes) {
        report(&b, 0, 0, "file is %zu bytes; the limit is %zu", len, b.lim.max_bytes);
        return LOOM_EPARSE;
    }
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p)) {
        report(&b, 0, 0, "could not start the YAML parser");
        return LOOM_EPARSE;
    }
    yaml_parser_set_input_string(&p, (const unsigned char *)src, len);
    yaml_parser_set_encoding(&p, YAML_UTF8_ENCODING);
    b.stack = loom_xcalloc((size_t)b.lim.max_depth + 1, sizeof *b.stack);
    for (bool done = false; !done && !b.fatal;) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&p, &ev)) {
            report_libyaml(&b, &p);
            break;
        }
        done = ev.type == YAML_STREAM_END_EVENT;
        on_event(&b, &ev);
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&p);
    free(b.stack);
    if (b.fatal) {
        node_free(b.root);
        return LOOM_EPARSE;
    }
    *root = b.root;
    return b.dups ? LOOM_EPARSE : 0;
}

const loom_ynode_t *loom_ynode_get(const loom_ynode_t *map, const char *key)
{
    if (!map || map->kind != LOOM_YMAP) return NULL;
    size_t klen = strlen(key);
    for (size_t i = 0; i < map->n_pairs; i++) {
        const loom_ynode_t *k = map->pairs[i].key;
        if (k->len == klen && memcmp(k->str, key, klen) == 0) return map->pairs[i].value;
    }
    return NULL;
}

bool loom_ynode_is_null(const loom_ynode_t *n)
{
    if (!n) return true;
    if (n->kind != LOOM_YSCALAR || !n->plain || n->tag) return false;
    static const char *const nulls[] = {"", "~", "null", "Null", "NULL"};
    for (size_t i = 0; i < sizeof nulls / sizeof nulls[0]; i++)
        if (strcmp(n->str, nulls[i]) == 0) return true;
    return false;
}

void loom_ycursor_init(loom_ycursor_t *cur, const loom_ynode_t *n)
{
    cur->off = 0;
    cur->line = n->line;
    cur->col = n->col;
    if (n->style == LOOM_YSINGLE || n->style == LOOM_YDOUBLE) {
        cur->col++; /* the opening quote */
    } else if (n->style == LOOM_YLITERAL || n->style == LOOM_YFOLDED) {
        cur->line++; /* the text starts below the "|" or ">" */
        cur->col = n->indent + 1;
    }
}

void loom_ycursor_seek(loom_ycursor_t *cur, const loom_ynode_t *n, size_t off)
{
    if (off < cur->off) loom_ycursor_init(cur, n);
    bool block = n->style == LOOM_YLITERAL || n->style == LOOM_YFOLDED;
    for (; cur->off < off && cur->off < n->len; cur->off++) {
        unsigned char ch = (unsigned char)n->str[cur->off];
        if (ch == '\n') {
            cur->line++;
            cur->col = block ? n->indent + 1 : 1;
        } else if ((ch & 0xC0) != 0x80) {
            cur->col++;
        }
    }
}

void loom_yquote(const char *s, size_t len, char *out, size_t outlen)
{
    loom_buf_t b = {0};
    loom_buf_puts(&b, "\"");
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (b.len >= 60 && (c & 0xC0) != 0x80) { /* cut between characters */
            loom_buf_puts(&b, "...");
            break;
        }
        if (c == '"' || c == '\\')
            loom_buf_printf(&b, "\\%c", c);
        else if (c == '\n')
            loom_buf_puts(&b, "\\n");
        else if (c == '\t')
            loom_buf_puts(&b, "\\t");
        else if (c < 0x20 || c == 0x7F)
            loom_buf_printf(&b, "\\x%02X", c);
        else
            loom_buf_append(&b, &s[i], 1);
    }
    loom_buf_puts(&b, "\"");
    snprintf(out, outlen, "%s", b.data);
    loom_buf_free(&b);
}

void loom_ynode_describe(const loom_ynode_t *n, char *out, size_t outlen)
{
    if (loom_ynode_is_null(n))
        snprintf(out, outlen, "an empty value");
    else if (n->kind == LOOM_YSEQ)
        snprintf(out, outlen, n->n_items ? "a list" : "an empty list");
    else if (n->kind == LOOM_YMAP)
        snprintf(out, outlen, n->n_pairs ? "a mapping" : "an empty mapping");
    else
        loom_yquote(n->str, n->len, out, outlen);
}
