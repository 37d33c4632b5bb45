/* Small helpers shared by every loom program: allocation that aborts on
 * exhaustion (a daemon that cannot allocate a few bytes cannot report it
 * either; Redis makes the same choice), a growable byte buffer, clocks and
 * checked number parsing. */
#ifndef LOOM_UTIL_H
#define LOOM_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

void *loom_xmalloc(size_t n);
void *loom_xcalloc(size_t count, size_t size);
void *loom_xrealloc(void *p, size_t n);
char *loom_xstrdup(const char *s);
char *loom_xstrndup(const char *s, size_t n);
/* printf into a new string; the caller frees it. */
char *loom_xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

typedef struct {
    char *data; /* always NUL-terminated when non-NULL */
    size_t len;
    size_t cap;
} loom_buf_t;

void loom_buf_append(loom_buf_t *b, const void *data, size_t len);
void loom_buf_puts(loom_buf_t *b, const char *s);
void loom_buf_printf(loom_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void loom_buf_reset(loom_buf_t *b);
void loom_buf_free(loom_buf_t *b);
/* Hands the bytes to the caller (who frees them) and empties the buffer. */
char *loom_buf_steal(loom_buf_t *b);

/* A clock that tests can replace. now_ms returns monotonic milliseconds. */
typedef struct {
    uint64_t (*now_ms)(void *ud);
    void *ud;
} loom_clock_t;

uint64_t loom_mono_ms(void);
uint64_t loom_unix_ms(void);
/* The real monotonic clock. */
loom_clock_t loom_clock_real(void);
static inline uint64_t loom_clock_now(const loom_clock_t *c)
{
    return c->now_ms(c->ud);
}

/* Whole string must be a decimal number within [min, max]. */
int loom_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out);
/* "250ms", "30s", "5m", "2h", "1d", or a bare number of seconds. */
int loom_parse_duration_ms(const char *s, uint64_t *out);
/* "512", "64k", "100M", "2G" (powers of 1024, optional trailing "B"/"iB"). */
int loom_parse_size(const char *s, uint64_t *out);
/* Formats a byte count as "512 B", "1.5 KiB", "40 GiB" into out. */
void loom_format_size(uint64_t bytes, char *out, size_t outlen);
/* Formats milliseconds as "1.234s" / "2m03s" into out. */
void loom_format_duration(uint64_t ms, char *out, size_t outlen);

/* A name safe for files, routing ids and URLs: [A-Za-z0-9_.-], 1..63 chars,
 * not starting with '.' or '-'. */
bool loom_name_valid(const char *s);

/* Writes the whole buffer to path atomically (temporary file, fsync, rename). */
int loom_write_file_atomic(const char *path, const void *data, size_t len);
/* Reads a whole file, at most max bytes; *out is NUL-terminated. */
int loom_read_file(const char *path, size_t max, char **out, size_t *len);
/* Removes what is inside the folder path (not following symbolic links),
 * keeping the folder; 0 or LOOM_EIO. Blocking. */
int loom_empty_tree(const char *path);
/* mkdir -p with mode 0700 for the last component and 0755 above. */
int loom_mkdirs(const char *path, int mode);

#endif
