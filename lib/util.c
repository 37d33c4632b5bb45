/* Helpers declared in util.h. */
#include "loom/util.h"
#include "loom/err.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void oom(void)
{
    static const char msg[] = "loom: out of memory\n";
    if (write(2, msg, sizeof msg - 1) < 0) { /* nothing left to try */
    }
    abort();
}

void *loom_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) oom();
    return p;
}

void *loom_xcalloc(size_t count, size_t size)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) oom();
    return p;
}

void *loom_xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p) oom();
    return p;
}

char *loom_xstrdup(const char *s)
{
    return loom_xstrndup(s, strlen(s));
}

char *loom_xstrndup(const char *s, size_t n)
{
    char *p = loom_xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *loom_xasprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) oom();
    char *p = loom_xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

static void buf_reserve(loom_buf_t *b, size_t extra)
{
    if (b->len + extra + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + extra + 1) cap *= 2;
    b->data = loom_xrealloc(b->data, cap);
    b->cap = cap;
}

void loom_buf_append(loom_buf_t *b, const void *data, size_t len)
{
    buf_reserve(b, len);
    if (len) memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
}

void loom_buf_puts(loom_buf_t *b, const char *s)
{
    loom_buf_append(b, s, strlen(s));
}

void loom_buf_printf(loom_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    buf_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void loom_buf_reset(loom_buf_t *b)
{
    b->len = 0;
    if (b->data) b->data[0] = '\0';
}

void loom_buf_free(loom_buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

char *loom_buf_steal(loom_buf_t *b)
{
    char *p = b->data ? b->data : loom_xstrdup("");
    b->data = NULL;
    b->len = b->cap = 0;
    return p;
}

uint64_t loom_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t loom_unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t real_now(void *ud)
{
    (void)ud;
    return loom_mono_ms();
}

loom_clock_t loom_clock_real(void)
{
    loom_clock_t c = {real_now, NULL};
    return c;
}

int loom_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out)
{
    if (!s || !*s || isspace((unsigned char)*s)) return LOOM_EINVAL;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end != '\0' || v < min || v > max) return LOOM_EINVAL;
    *out = v;
    return 0;
}

/* Splits "123unit" into a number and a suffix. */
static int split_number(const char *s, double *num, const char **unit)
{
    if (!s || !*s || !(isdigit((unsigned char)*s) || *s == '.')) return LOOM_EINVAL;
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || v < 0) return LOOM_EINVAL;
    *num = v;
    *unit = end;
    return 0;
}

int loom_parse_duration_ms(const char *s, uint64_t *out)
{
    static const struct {
        const char *unit;
        double ms;
    } units[] = {{"", 1000}, {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}};
    double v;
    const char *unit;
    if (split_number(s, &v, &unit) != 0) return LOOM_EINVAL;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(unit, units[i].unit) == 0) {
            double ms = v * units[i].ms;
            if (ms > 9.0e15) return LOOM_EINVAL;
            *out = (uint64_t)ms;
            return 0;
        }
    }
    return LOOM_EINVAL;
}

int loom_parse_size(const char *s, uint64_t *out)
{
    double v;
    const char *unit;
    if (split_number(s, &v, &unit) != 0) return LOOM_EINVAL;
    double mult = 1;
    switch (toupper((unsigned char)*unit)) {
    case '\0':
        break;
    case 'K':
        mult = 1024.0;
        unit++;
        break;
    case 'M':
        mult = 1024.0 * 1024;
        unit++;
        break;
    case 'G':
        mult = 1024.0 * 1024 * 1024;
        unit++;
        break;
    case 'T':
        mult = 1024.0 * 1024 * 1024 * 1024;
        unit++;
        break;
    case 'B':
        break;
    default:
        return LOOM_EINVAL;
    }
    if (strcmp(unit, "") != 0 && strcmp(unit, "B") != 0 && strcmp(unit, "iB") != 0 &&
        strcmp(unit, "b") != 0)
        return LOOM_EINVAL;
    double bytes = v * mult;
    if (bytes > 1.8e19) return LOOM_EINVAL;
    *out = (uint64_t)bytes;
    return 0;
}

void loom_format_size(uint64_t bytes, char *out, size_t outlen)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    double v = (double)bytes;
    size_t u = 0;
    while (v >= 1024 && u + 1 < sizeof units / sizeof units[0]) {
        v /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(out, outlen, "%llu B", (unsigned long long)bytes);
    else if (v == (double)(uint64_t)v)
        snprintf(out, outlen, "%.0f %s", v, units[u]);
    else
        snprintf(out, outlen, "%.1f %s", v, units[u]);
}

void loom_format_duration(uint64_t ms, char *out, size_t outlen)
{
    if (ms < 60000)
        snprintf(out, outlen, "%llu.%03llus", (unsigned long long)(ms / 1000),
                 (unsigned long long)(ms % 1000));
    else if (ms < 3600000)
        snprintf(out, outlen, "%llum%02llus", (unsigned long long)(ms / 60000),
                 (unsigned long long)(ms / 1000 % 60));
    else
        snprintf(out, outlen, "%lluh%02llum", (unsigned long long)(ms / 3600000),
                 (unsigned long long)(ms / 60000 % 60));
}

bool loom_name_valid(const char *s)
{
    size_t n = 0;
    if (!s || !*s || *s == '.' || *s == '-') return false;
    for (; s[n]; n++) {
        unsigned char c = (unsigned char)s[n];
        if (!(isalnum(c) || c == '_' || c == '.' || c == '-')) return false;
        if (n >= 63) return false;
    }
    return true;
}

int loom_write_file_atomic(const char *path, const void *data, size_t len)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return LOOM_EINVAL;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return LOOM_EIO;
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t n = write(fd, p, left);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            close(fd);
            unlink(tmp);
            return LOOM_EIO;
        }
        p += n;
        left -= (size_t)n;
    }
    if (fsync(fd) != 0 || close(fd) != 0 || rename(tmp, path) != 0) {
        unlink(tmp);
        return LOOM_EIO;
    }
    return 0;
}

int loom_read_file(const char *path, size_t max, char **out, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT ? LOOM_ENOTFOUND : LOOM_EIO;
    loom_buf_t b = {0};
    char chunk[65536];
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            close(fd);
            loom_buf_free(&b);
            return LOOM_EIO;
        }
        if (n == 0) break;
        if (b.len + (size_t)n > max) {
            close(fd);
            loom_buf_free(&b);
            return LOOM_ETOOBIG;
        }
        loom_buf_append(&b, chunk, (size_t)n);
    }
    close(fd);
    if (len) *len = b.len;
    *out = loom_buf_steal(&b);
    return 0;
}

int loom_mkdirs(const char *path, int mode)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp) return LOOM_EINVAL;
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST) return LOOM_EIO;
        *p = '/';
    }
    if (mkdir(tmp, (mode_t)mode) != 0 && errno != EEXIST) return LOOM_EIO;
    return 0;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path) == 0 || errno == ENOENT ? 0 : -1;
}

static int remove_inner(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    if (ftw->level == 0) return 0; /* the folder itself stays */
    return remove_entry(path, sb, flag, ftw);
}

int loom_empty_tree(const char *path)
{
    return nftw(path, remove_inner, 16, FTW_DEPTH | FTW_PHYS) == 0 ? 0 : LOOM_EIO;
}
