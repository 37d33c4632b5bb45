/* The streaming CSV reader declared in csv.h. The input is read in chunks
 * into one buffer; a record is parsed in place once it lies whole in the
 * buffer, and a record cut by the end of a chunk is parsed again from its
 * start after the next read. That is why nothing is written into the buffer
 * (doubled quotes are collapsed) until a record is known to be complete. */
#include "loom/csv.h"
#include "loom/err.h"
#include "loom/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FIRST_BUFFER (1u << 20)

struct loom_csv {
    char *name;
    int fd; /* -1 when reading from memory */
    const char *mem;
    size_t mem_len, mem_pos;
    size_t chunk;

    char *buf;
    size_t cap, pos, end; /* unparsed bytes are buf[pos, end) */
    bool eof;             /* the source has no more bytes */
    bool bom_done;

    loom_csv_field_t *fields;
    const char **starts; /* where each field's raw text starts, for errors */
    size_t fcap;
    size_t header_n; /* 0 until the header has been read */

    uint64_t line;     /* line of buf[pos] */
    uint64_t rec_line; /* line of the last record returned */
    uint64_t offset;   /* bytes of the source before buf[pos] */
    int failed;        /* a sticky error */
    char *err;
};

enum { NEED_MORE = 0, COMPLETE = 1 };

static loom_csv_t *reader_new(const char *name, int fd)
{
    loom_csv_t *r = loom_xcalloc(1, sizeof *r);
    r->name = loom_xstrdup(name);
    r->fd = fd;
    r->cap = FIRST_BUFFER;
    r->buf = loom_xmalloc(r->cap);
    r->chunk = SIZE_MAX;
    r->line = 1;
    return r;
}

int loom_csv_open(const char *path, loom_csv_t **out, char **why)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        *why = loom_xasprintf("%s: %s", path, strerror(errno));
        return errno == ENOENT ? LOOM_ENOTFOUND : LOOM_EIO;
    }
#ifdef POSIX_FADV_SEQUENTIAL
    (void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
#endif
    *out = reader_new(path, fd);
    return 0;
}

loom_csv_t *loom_csv_new_mem(const char *name, const char *data, size_t len)
{
    loom_csv_t *r = reader_new(name, -1);
    r->mem = data;
    r->mem_len = len;
    return r;
}

void loom_csv_set_chunk(loom_csv_t *r, size_t chunk)
{
    r->chunk = chunk > 0 ? chunk : 1;
}

void loom_csv_destroy(loom_csv_t **rp)
{
    loom_csv_t *r = *rp;
    if (!r) return;
    if (r->fd >= 0) close(r->fd);
    free(r->name);
    free(r->buf);
    free(r->fields);
    free(r->starts);
    free(r->err);
    free(r);
    *rp = NULL;
}

const char *loom_csv_name(const loom_csv_t *r)
{
    return r->name;
}

const char *loom_csv_error(const loom_csv_t *r)
{
    return r->err ? r->err : "";
}

uint64_t loom_csv_line(const loom_csv_t *r)
{
    return r->rec_line;
}

uint64_t loom_csv_offset(const loom_csv_t *r)
{
    return r->offset;
}

static int fail(loom_csv_t *r, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(loom_csv_t *r, int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg = NULL;
    if (vasprintf(&msg, fmt, ap) < 0) msg = NULL;
    va_end(ap);
    free(r->err);
    r->err = msg ? msg : loom_xstrdup(loom_strerror(err));
    r->failed = err;
    return err;
}

/* A parse error at x, in the record that starts at s (on line r->line). */
static int fail_at(loom_csv_t *r, const char *s, const char *x, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail_at(loom_csv_t *r, const char *s, const char *x, const char *fmt, ...)
{
    uint64_t line = r->line;
    const char *line_start = s;
    for (const char *q = s; (q = memchr(q, '\n', (size_t)(x - q))) != NULL; q++) {
        line++;
        line_start = q + 1;
    }
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return fail(r, LOOM_EPARSE, "%s:%llu:%llu: %s", r->name, (unsigned long long)line,
                (unsigned long long)(x - line_start + 1), msg);
}

static void grow_fields(loom_csv_t *r)
{
    size_t cap = r->fcap ? r->fcap * 2 : 64;
    r->fields = loom_xrealloc(r->fields, cap * sizeof *r->fields);
    r->starts = loom_xrealloc(r->starts, cap * sizeof *r->starts);
    r->fcap = cap;
}

/* Where an unquoted field that starts at p ends: the next comma or LF, or end. */
static inline const char *unquoted_end(const char *p, const char *end)
{
    while (p < end && *p != ',' && *p != '\n') p++;
    return p;
}

/* Parses the record at buf[pos]. Returns COMPLETE with *n fields, *next (the
 * offset after its terminator) and *nl (line breaks it spans); NEED_MORE when
 * the buffer ends inside it; or an error. */
static int parse_record(loom_csv_t *r, size_t *n_out, size_t *next, uint64_t *nl_out)
{
    const char *s = r->buf + r->pos, *end = r->buf + r->end, *p = s;
    size_t n = 0;
    uint64_t nl = 0;
    const char *term; /* the record's terminator (or end) */
    bool lf = false;  /* it ends in a line break, not at the end of the input */
    for (;;) {
        if (n == LOOM_CSV_MAX_FIELDS)
            return fail_at(r, s, p, "more than %d fields", LOOM_CSV_MAX_FIELDS);
        if (n == r->fcap) grow_fields(r);
        r->starts[n] = p;
        if (p < end && *p == '"') {
            const char *q = p + 1, *close;
            for (;;) {
                close = memchr(q, '"', (size_t)(end - q));
                if (!close) {
                    if (!r->eof) return NEED_MORE;
                    return fail_at(r, s, p, "unterminated quoted field (it opens here)");
                }
                if (close + 1 == end && !r->eof) return NEED_MORE; /* perhaps a doubled quote */
                if (close + 1 < end && close[1] == '"') {
                    q = close + 2;
                    continue;
                }
                break;
            }
            for (const char *x = p + 1; (x = memchr(x, '\n', (size_t)(close - x))) != NULL; x++)
                nl++;
            r->fields[n].data = p + 1;
            r->fields[n].len = (size_t)(close - p - 1);
            n++;
            p = close + 1;
            if (p < end && *p == ',') {
                p++;
                continue;
            }
            term = p;
            if (p == end) {
                if (!r->eof) return NEED_MORE;
                *next = r->end;
            } else if (*p == '\n') {
                lf = true;
                *next = (size_t)(p + 1 - r->buf);
            } else if (*p == '\r' && p + 1 == end) {
                if (!r->eof) return NEED_MORE;
                *next = r->end;
            } else if (*p == '\r' && p[1] == '\n') {
                lf = true;
                *next = (size_t)(p + 2 - r->buf);
            } else {
                return fail_at(r, s, p,
                               "unexpected character after a closing quote (write a quote "
                               "inside a quoted field as \"\")");
            }
            break;
        }
        const char *q = unquoted_end(p, end);
        if (q == end && !r->eof) return NEED_MORE;
        r->fields[n].data = p;
        r->fields[n].len = (size_t)(q - p);
        n++;
        if (q < end && *q == ',') {
            p = q + 1;
            continue;
        }
        /* LF or the end of the input: a CR before it belongs to the line end. */
        term = q;
        if (q > p && q[-1] == '\r') {
            r->fields[n - 1].len--;
            term = q - 1;
        }
        lf = q < end;
        *next = lf ? (size_t)(q + 1 - r->buf) : r->end;
        break;
    }
    if (r->header_n == 0) {
        r->header_n = n;
    } else if (n != r->header_n) {
        const char *at = n > r->header_n ? r->starts[r->header_n] : term;
        return fail_at(r, s, at, "record has %zu field%s, the header has %zu", n, n == 1 ? "" : "s",
                       r->header_n);
    }
    *n_out = n;
    *nl_out = nl + lf;
    return COMPLETE;
}

/* Collapses doubled quotes in the quoted fields of a complete record. */
static void unescape_quotes(loom_csv_t *r, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (r->starts[i][0] != '"') continue;
        char *d = (char *)r->fields[i].data;
        size_t len = r->fields[i].len;
        char *q = memchr(d, '"', len);
        if (!q) continue;
        char *w = q, *e = d + len;
        for (const char *x = q; x < e; x++) {
            *w++ = *x;
            if (*x == '"') x++; /* skip the second quote of the pair */
        }
        r->fields[i].len = (size_t)(w - d);
    }
}

/* Moves the unparsed bytes to the front and reads more. */
static int fill(loom_csv_t *r)
{
    if (r->pos > 0) {
        memmove(r->buf, r->buf + r->pos, r->end - r->pos);
        r->end -= r->pos;
        r->pos = 0;
    }
    if (r->end == r->cap) {
        if (r->cap >= LOOM_CSV_MAX_RECORD)
            return fail(r, LOOM_ETOOBIG, "%s:%llu: record longer than %u MiB (a quote not closed?)",
                        r->name, (unsigned long long)r->line, LOOM_CSV_MAX_RECORD >> 20);
        r->cap *= 2;
        r->buf = loom_xrealloc(r->buf, r->cap);
    }
    size_t want = r->cap - r->end;
    if (want > r->chunk) want = r->chunk;
    if (r->fd < 0) {
        size_t left = r->mem_len - r->mem_pos;
        if (want > left) want = left;
        memcpy(r->buf + r->end, r->mem + r->mem_pos, want);
        r->mem_pos += want;
        r->end += want;
        if (want == 0) r->eof = true;
        return 0;
    }
    ssize_t got;
    do got = read(r->fd, r->buf + r->end, want);
    while (got < 0 && errno == EINTR);
    if (got < 0) return fail(r, LOOM_EIO, "%s: read error: %s", r->name, strerror(errno));
    if (got == 0) r->eof = true;
    r->end += (size_t)got;
    return 0;
}

/* Skips a byte order mark and blank lines. Returns NEED_MORE when it cannot
 * tell yet, COMPLETE when buf[pos] starts a record or the input has ended. */
static int skip_blank(loom_csv_t *r)
{
    if (!r->bom_done) {
        if (r->end - r->pos < 3 && !r->eof) return NEED_MORE;
        if (r->end - r->pos >= 3 && memcmp(r->buf + r->pos, "\xEF\xBB\xBF", 3) == 0) {
            r->pos += 3;
            r->offset += 3;
        }
        r->bom_done = true;
    }
    while (r->pos < r->end) {
        const char *p = r->buf + r->pos;
        size_t skip;
        if (*p == '\n') {
            skip = 1;
        } else if (*p == '\r') {
            if (r->pos + 1 == r->end) {
                if (!r->eof) return NEED_MORE;
                skip = 1;
            } else if (p[1] == '\n') {
                skip = 2;
            } else {
                break;
            }
        } else {
            break;
        }
        r->pos += skip;
        r->offset += skip;
        r->line++;
    }
    return COMPLETE;
}

int loom_csv_next(loom_csv_t *r, const loom_csv_field_t **fields, size_t *n)
{
    *fields = NULL;
    *n = 0;
    if (r->failed) return r->failed;
    for (;;) {
        int rc = skip_blank(r);
        if (rc == COMPLETE) {
            if (r->pos == r->end && r->eof) return 0;
            size_t next = 0;
            uint64_t nl = 0;
            rc = r->pos < r->end ? parse_record(r, n, &next, &nl) : NEED_MORE;
            if (rc < 0) return rc;
            if (rc == COMPLETE) {
                unescape_quotes(r, *n);
                r->rec_line = r->line;
                r->line += nl;
                r->offset += next - r->pos;
                r->pos = next;
                *fields = r->fields;
                return 1;
            }
        }
        if (r->eof) return fail(r, LOOM_EINTERNAL, "%s: reader stalled", r->name);
        rc = fill(r);
        if (rc < 0) return rc;
    }
}
