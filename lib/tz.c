/* Time zones from TZif files (RFC 8536), read and evaluated here rather than
 * through localtime(), whose TZ state is global. A zone is its transitions
 * table plus the POSIX TZ footer rule ("EST5EDT,M3.2.0,M11.1.0") for the
 * time after the table: Debian may ship "slim" files whose table stops
 * early or is empty, so the footer is not an afterthought. */
#include "loom/tz.h"

#include "loom/err.h"
#include "loom/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ABBR_MAX 16      /* a footer's abbreviation, NUL included */
#define MAX_OFFSET 93599 /* 25:59:59, RFC 8536's bound on UT offsets */
#define RULE_MAX_H 167   /* RFC 8536 extends the footer's rule times to ±167h */
#define DAY 86400
#define RULE_T_MAX (1LL << 52) /* about 140 million years */

typedef struct {
    int32_t off;
    uint8_t abbr; /* index into abbrs */
} ttype;

/* A footer's rule date: Jn (1-365, no Feb 29), n (0-365) or Mm.w.d. */
typedef struct {
    char kind; /* 'J', 'N' or 'M' */
    int day, m, w, wd;
    int32_t time; /* seconds after local midnight; may be negative */
} rule_date;

typedef struct {
    bool present, has_dst;
    int32_t std_off, dst_off; /* east positive, unlike POSIX */
    char std_abbr[ABBR_MAX], dst_abbr[ABBR_MAX];
    rule_date start, end;
} rule_t;

struct loom_tz {
    char *name;
    size_t n_trans;
    int64_t *trans;
    uint8_t *idx; /* the type after each transition */
    size_t n_types;
    ttype *types;
    char *abbrs; /* NUL-terminated strings, one more NUL at the end */
    rule_t rule;
};

/* ---- calendar ---- */

int64_t loom_tz_days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

void loom_tz_civil_from_days(int64_t days, int64_t *y, int *m, int *d)
{
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static int64_t floor_div(int64_t a, int64_t b)
{
    return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

static bool is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int month_days(int64_t y, int m)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap(y) ? 29 : days[m - 1];
}

/* ---- the footer: a POSIX TZ string ---- */

static const char *posix_abbr(const char *s, char *out)
{
    size_t n = 0;
    if (*s == '<') {
        for (s++; *s && *s != '>'; s++) {
            if (!strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+-", *s) ||
                n + 1 >= ABBR_MAX)
                return NULL;
            out[n++] = *s;
        }
        if (*s++ != '>') return NULL;
    } else {
        for (; (*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z'); s++) {
            if (n + 1 >= ABBR_MAX) return NULL;
            out[n++] = *s;
        }
    }
    out[n] = '\0';
    return n >= 3 ? s : NULL;
}

static const char *posix_num(const char *s, int max, int *out)
{
    if (*s < '0' || *s > '9') return NULL;
    int v = 0;
    for (; *s >= '0' && *s <= '9'; s++) {
        v = v * 10 + (*s - '0');
        if (v > max) return NULL;
    }
    *out = v;
    return s;
}

/* [+-]hh[:mm[:ss]] with hh up to max_h. */
static const char *posix_hms(const char *s, int max_h, int32_t *out)
{
    int sign = 1, h = 0, m = 0, sec = 0;
    if (*s == '+' || *s == '-') sign = *s++ == '-' ? -1 : 1;
    if (!(s = posix_num(s, max_h, &h))) return NULL;
    if (*s == ':' && !(s = posix_num(s + 1, 59, &m))) return NULL;
    if (*s == ':' && !(s = posix_num(s + 1, 59, &sec))) return NULL;
    *out = sign * (h * 3600 + m * 60 + sec);
    return s;
}

static const char *posix_date(const char *s, rule_date *d)
{
    d->time = 2 * 3600;
    if (*s == 'J') {
        d->kind = 'J';
        if (!(s = posix_num(s + 1, 365, &d->day)) || d->day < 1) return NULL;
    } else if (*s == 'M') {
        d->kind = 'M';
        if (!(s = posix_num(s + 1, 12, &d->m)) || d->m < 1 || *s != '.') return NULL;
        if (!(s = posix_num(s + 1, 5, &d->w)) || d->w < 1 || *s != '.') return NULL;
        if (!(s = posix_num(s + 1, 6, &d->wd))) return NULL;
    } else {
        d->kind = 'N';
        if (!(s = posix_num(s, 365, &d->day))) return NULL;
    }
    if (*s == '/') s = posix_hms(s + 1, RULE_MAX_H, &d->time);
    return s;
}

/* "std offset [dst [offset] [,start[/time],end[/time]]]"; an empty string
 * means no rule. */
static bool parse_posix(const char *s, rule_t *r)
{
    memset(r, 0, sizeof *r);
    if (!*s) return true;
    int32_t off;
    if (!(s = posix_abbr(s, r->std_abbr)) || !(s = posix_hms(s, 24, &off))) return false;
    r->present = true;
    r->std_off = r->dst_off = -off;
    if (!*s) return true;
    r->has_dst = true;
    if (!(s = posix_abbr(s, r->dst_abbr))) return false;
    r->dst_off = r->std_off + 3600;
    if (*s && *s != ',') {
        if (!(s = posix_hms(s, 24, &off))) return false;
        r->dst_off = -off;
    }
    if (!*s) { /* no rule given: the US rule, as glibc assumes */
        r->start = (rule_date){.kind = 'M', .m = 3, .w = 2, .wd = 0, .time = 7200};
        r->end = (rule_date){.kind = 'M', .m = 11, .w = 1, .wd = 0, .time = 7200};
        return true;
    }
    if (*s != ',' || !(s = posix_date(s + 1, &r->start))) return false;
    if (*s != ',' || !(s = posix_date(s + 1, &r->end))) return false;
    return *s == '\0' && r->std_off >= -MAX_OFFSET && r->std_off <= MAX_OFFSET &&
           r->dst_off >= -MAX_OFFSET && r->dst_off <= MAX_OFFSET;
}

/* Local seconds (as if UTC) at which a rule date happens in year y. */
static int64_t rule_local(const rule_date *d, int64_t y)
{
    int64_t day;
    if (d->kind == 'J') {
        day = loom_tz_days_from_civil(y, 1, 1) + d->day - 1 + (is_leap(y) && d->day >= 60);
    } else if (d->kind == 'N') {
        day = loom_tz_days_from_civil(y, 1, 1) + d->day;
    } else {
        int64_t first = loom_tz_days_from_civil(y, d->m, 1);
        int wd1 = (int)((first % 7 + 11) % 7); /* 1970-01-01 was a Thursday */
        day = first + (d->wd - wd1 + 7) % 7 + (d->w - 1) * 7;
        while (day >= first + month_days(y, d->m)) day -= 7; /* week 5 = the last */
    }
    return day * DAY + d->time;
}

typedef struct {
    int64_t t;
    bool dst; /* the offset after it */
} rule_event;

static void rule_period(const rule_t *r, int64_t t, loom_tz_period_t *p)
{
    if (!r->has_dst) {
        *p = (loom_tz_period_t){INT64_MIN, INT64_MAX, r->std_off, r->std_off, r->std_abbr};
        return;
    }
    /* Years far beyond any use still need arithmetic that cannot overflow. */
    int64_t y, tc = t < -RULE_T_MAX ? -RULE_T_MAX : t > RULE_T_MAX ? RULE_T_MAX : t;
    int m, d;
    loom_tz_civil_from_days(floor_div(tc + r->std_off, DAY), &y, &m, &d);
    rule_event ev[8];
    size_t n = 0;
    for (int64_t yy = y - 1; yy <= y + 2; yy++) {
        rule_event s = {rule_local(&r->start, yy) - r->std_off, true};
        rule_event e = {rule_local(&r->end, yy) - r->dst_off, false};
        /* Insertion keeps equal times in the order made, so below the later
         * of two events at one instant wins (DST all year: "J365/25,0/0"). */
        rule_event pair[2] = {s, e};
        for (int k = 0; k < 2; k++) {
            size_t j = n++;
            while (j > 0 && ev[j - 1].t > pair[k].t) {
                ev[j] = ev[j - 1];
                j--;
            }
            ev[j] = pair[k];
        }
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (i + 1 < n && ev[i + 1].t == ev[i].t) continue;
        ev[k++] = ev[i];
    }
    n = k;
    size_t i = 0;
    while (i < n && ev[i].t <= t) i++;
    bool dst;
    if (i == 0) { /* not for sane rules: events start a year before t */
        dst = !ev[0].dst;
        p->start = INT64_MIN;
        p->prev_off = dst ? r->dst_off : r->std_off;
    } else {
        dst = ev[i - 1].dst;
        p->start = ev[i - 1].t;
        bool before = i >= 2 ? ev[i - 2].dst : !dst;
        p->prev_off = before ? r->dst_off : r->std_off;
    }
    p->end = i < n ? ev[i].t : INT64_MAX;
    p->off = dst ? r->dst_off : r->std_off;
    p->abbr = dst ? r->dst_abbr : r->std_abbr;
}

/* ---- lookups ---- */

const char *loom_tz_name(const loom_tz_t *tz)
{
    return tz->name;
}

static void type_period(const loom_tz_t *tz, size_t type, loom_tz_period_t *p)
{
    p->off = tz->types[type].off;
    p->abbr = tz->abbrs + tz->types[type].abbr;
}

void loom_tz_period(const loom_tz_t *tz, int64_t t, loom_tz_period_t *p)
{
    size_t n = tz->n_trans;
    if (n == 0 && tz->rule.present) {
        rule_period(&tz->rule, t, p);
        return;
    }
    if (n == 0 || t < tz->trans[0]) { /* RFC 8536: type 0 before the first transition */
        type_period(tz, 0, p);
        p->start = INT64_MIN;
        p->end = n ? tz->trans[0] : INT64_MAX;
        p->prev_off = p->off;
        return;
    }
    size_t lo = 0, hi = n; /* the last transition at or before t */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (tz->trans[mid] <= t)
            lo = mid;
        else
            hi = mid;
    }
    int32_t before = tz->types[lo ? tz->idx[lo - 1] : 0].off;
    if (lo == n - 1 && tz->rule.present) {
        rule_period(&tz->rule, t, p);
        if (p->start <= tz->trans[lo]) {
            p->start = tz->trans[lo];
            p->prev_off = before;
        }
        return;
    }
    type_period(tz, tz->idx[lo], p);
    p->start = tz->trans[lo];
    p->end = lo + 1 < n ? tz->trans[lo + 1] : INT64_MAX;
    p->prev_off = before;
}

int32_t loom_tz_offset(const loom_tz_t *tz, int64_t t, const char **abbr)
{
    loom_tz_period_t p;
    loom_tz_period(tz, t, &p);
    if (abbr) *abbr = p.abbr;
    return p.off;
}

int64_t loom_tz_from_local(const loom_tz_t *tz, int64_t wall)
{
    if (wall < INT64_MIN / 2 || wall > INT64_MAX / 2) return wall;
    /* Offsets stay within ±MAX_OFFSET, so the instant lies within that much
     * of wall; walk the periods from there and take the first that shows
     * wall. One whose range starts past wall means wall fell in its gap. */
    int64_t t = wall - MAX_OFFSET - 1;
    for (;;) {
        loom_tz_period_t p;
        loom_tz_period(tz, t, &p);
        int64_t u = wall - p.off;
        if (u < p.start) return p.start;
        if (u < p.end) return u;
        t = p.end;
    }
}

/* ---- reading TZif ---- */

typedef struct {
    uint32_t isut, isstd, leap, time, type, chars;
} counts;

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t be64(const uint8_t *p)
{
    return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4));
}

#define HEADER 44

static bool read_header(const uint8_t *p, size_t len, size_t at, char *version, counts *c)
{
    if (len < at || len - at < HEADER || memcmp(p + at, "TZif", 4) != 0) return false;
    *version = (char)p[at + 4];
    const uint8_t *q = p + at + 20;
    *c = (counts){be32(q), be32(q + 4), be32(q + 8), be32(q + 12), be32(q + 16), be32(q + 20)};
    return true;
}

static uint64_t block_size(const counts *c, unsigned timesize)
{
    return (uint64_t)c->time * (timesize + 1) + (uint64_t)c->type * 6 + c->chars +
           (uint64_t)c->leap * (timesize + 4) + c->isstd + c->isut;
}

static int fail(char *why, size_t whylen, const char *msg)
{
    snprintf(why, whylen, "%s", msg);
    return LOOM_EPARSE;
}

/* Copies one data block into tz, checking what the lookups rely on. */
static int load_block(loom_tz_t *tz, const uint8_t *p, const counts *c, unsigned timesize,
                      char *why, size_t whylen)
{
    if (c->type == 0 || c->type > 256 || c->chars == 0)
        return fail(why, whylen, "no local time types");
    if (c->leap != 0)
        return fail(why, whylen, "it counts leap seconds (a \"right/\" zone); use the plain zone");
    if ((c->isstd && c->isstd != c->type) || (c->isut && c->isut != c->type))
        return fail(why, whylen, "inconsistent counts in the header");
    tz->n_trans = c->time;
    tz->trans = loom_xcalloc(c->time, sizeof *tz->trans);
    tz->idx = loom_xcalloc(c->time, 1);
    for (size_t i = 0; i < c->time; i++, p += timesize) {
        tz->trans[i] = timesize == 8 ? be64(p) : (int32_t)be32(p);
        if (i > 0 && tz->trans[i] <= tz->trans[i - 1])
            return fail(why, whylen, "transition times out of order");
    }
    for (size_t i = 0; i < c->time; i++) {
        tz->idx[i] = *p++;
        if (tz->idx[i] >= c->type) return fail(why, whylen, "a transition names no type");
    }
    tz->n_types = c->type;
    tz->types = loom_xcalloc(c->type, sizeof *tz->types);
    for (size_t i = 0; i < c->type; i++, p += 6) {
        int32_t off = (int32_t)be32(p);
        if (off < -MAX_OFFSET || off > MAX_OFFSET || p[4] > 1 || p[5] >= c->chars)
            return fail(why, whylen, "a local time type is out of range");
        tz->types[i] = (ttype){off, p[5]};
    }
    tz->abbrs = loom_xmalloc(c->chars + 1);
    memcpy(tz->abbrs, p, c->chars);
    tz->abbrs[c->chars] = '\0';
    return 0;
}

static int parse_tzif(loom_tz_t *tz, const uint8_t *p, size_t len, char *why, size_t whylen)
{
    char version;
    counts c;
    if (!read_header(p, len, 0, &version, &c)) return fail(why, whylen, "not a TZif file");
    uint64_t size = block_size(&c, 4);
    if (size > len - HEADER) return fail(why, whylen, "truncated TZif data");
    if (version == '\0') return load_block(tz, p + HEADER, &c, 4, why, whylen);
    if (version < '2') return fail(why, whylen, "unknown TZif version");
    /* Version 2 and later repeat the data with 64-bit times, then a footer. */
    size_t at = HEADER + (size_t)size;
    char v2;
    if (!read_header(p, len, at, &v2, &c)) return fail(why, whylen, "truncated TZif data");
    at += HEADER;
    size = block_size(&c, 8);
    if (size > len - at) return fail(why, whylen, "truncated TZif data");
    int err = load_block(tz, p + at, &c, 8, why, whylen);
    if (err) return err;
    at += (size_t)size;
    if (at >= len || p[at] != '\n') return fail(why, whylen, "missing TZ string footer");
    const char *footer = (const char *)p + at + 1;
    const char *nl = memchr(footer, '\n', len - at - 1);
    if (!nl) return fail(why, whylen, "missing TZ string footer");
    char rule[128];
    if ((size_t)(nl - footer) >= sizeof rule) return fail(why, whylen, "TZ string too long");
    memcpy(rule, footer, (size_t)(nl - footer));
    rule[nl - footer] = '\0';
    if (!parse_posix(rule, &tz->rule)) {
        snprintf(why, whylen, "bad TZ string \"%s\" in the footer", rule);
        return LOOM_EPARSE;
    }
    return 0;
}

int loom_tz_parse(const char *name, const void *data, size_t len, loom_tz_t **out, char *why,
                  size_t whylen)
{
    *out = NULL;
    loom_tz_t *tz = loom_xcalloc(1, sizeof *tz);
    tz->name = loom_xstrdup(name);
    int err = parse_tzif(tz, data, len, why, whylen);
    if (err) {
        loom_tz_free(&tz);
        return err;
    }
    *out = tz;
    return 0;
}

void loom_tz_free(loom_tz_t **tz)
{
    if (!tz || !*tz) return;
    free((*tz)->name);
    free((*tz)->trans);
    free((*tz)->idx);
    free((*tz)->types);
    free((*tz)->abbrs);
    free(*tz);
    *tz = NULL;
}

/* ---- loading by name ---- */

static loom_tz_t *utc(const char *name)
{
    loom_tz_t *tz = loom_xcalloc(1, sizeof *tz);
    tz->name = loom_xstrdup(name);
    parse_posix("UTC0", &tz->rule);
    return tz;
}

static bool name_ok(const char *s)
{
    size_t n = strlen(s);
    return n > 0 && n <= 255 && s[0] != '/' && !strstr(s, "..") &&
           strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_+-/") == n;
}

/* The name as it may be shown: printable ASCII, at most 64 characters. */
static const char *shown(const char *s, char *buf, size_t len)
{
    size_t n = 0;
    for (; *s && n + 4 < len && n < 64; s++) buf[n++] = *s >= 0x20 && *s < 0x7f ? *s : '?';
    if (*s) buf[n++] = '.', buf[n++] = '.', buf[n++] = '.';
    buf[n] = '\0';
    return buf;
}

static int read_zone(const char *path, char **data, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT || errno == ENOTDIR ? LOOM_ENOTFOUND : LOOM_EIO;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return LOOM_ENOTFOUND; /* a folder such as "America" is not a zone */
    }
    close(fd);
    return loom_read_file(path, LOOM_TZ_MAX_FILE, data, len);
}

int loom_tz_load_dir(const char *dir, const char *name, loom_tz_t **out, char *why, size_t whylen)
{
    *out = NULL;
    char q[80];
    if (!name_ok(name)) {
        snprintf(why, whylen,
                 "invalid time zone name \"%s\": use an IANA name such as \"Europe/Berlin\"",
                 shown(name, q, sizeof q));
        return LOOM_EINVAL;
    }
    if (strcmp(name, "UTC") == 0 || strcmp(name, "Etc/UTC") == 0) {
        *out = utc(name);
        return 0;
    }
    if (!dir) dir = getenv("TZDIR");
    if (!dir || !*dir) dir = LOOM_TZ_DEFAULT_DIR;
    char *path = loom_xasprintf("%s/%s", dir, name);
    char *data = NULL;
    size_t len = 0;
    int err = read_zone(path, &data, &len);
    if (err == LOOM_ENOTFOUND) {
        struct stat st;
        bool have_dir = stat(dir, &st) == 0 && S_ISDIR(st.st_mode);
        snprintf(why, whylen, "unknown time zone \"%s\": not found in %s%s", name, dir,
                 have_dir ? "" : " (that folder is missing: install tzdata)");
    } else if (err == LOOM_ETOOBIG) {
        snprintf(why, whylen, "time zone \"%s\": %s is too large for a zone file", name, path);
        err = LOOM_EPARSE;
    } else if (err) {
        snprintf(why, whylen, "time zone \"%s\": cannot read %s: %s", name, path, strerror(errno));
    } else {
        char inner[160];
        err = loom_tz_parse(name, data, len, out, inner, sizeof inner);
        if (err) snprintf(why, whylen, "time zone \"%s\": %s: %s", name, path, inner);
    }
    free(data);
    free(path);
    return err;
}

int loom_tz_load(const char *name, loom_tz_t **out, char *why, size_t whylen)
{
    return loom_tz_load_dir(NULL, name, out, why, whylen);
}
