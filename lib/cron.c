/* Cron expressions: a parser that names the field and token at fault, and
 * loom_cron_next, which walks a zone's offset periods and, inside each,
 * jumps by month, day and hour to the next matching wall time instead of
 * stepping minute by minute. The daylight-saving contract is in cron.h. */
#include "loom/cron.h"

#include "loom/err.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define DAY 86400
/* Instants outside years 1-9999 have no fire times. */
#define MIN_T (-62135596800LL)
#define MAX_T 253402300799LL

/* ---- parsing ---- */

typedef struct {
    const char *name;
    int min, max;
    const char *const *names; /* names[i] is the value min + i, or NULL */
    const char *names_hint;
} field_def;

static const char *const month_names[] = {"JAN", "FEB", "MAR", "APR", "MAY", "JUN",
                                          "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"};
/* Eight entries, one per value 0-7: 7 is Sunday too, but only "SUN" names it
 * (without the NULL the name lookup read past the end of the table). */
static const char *const dow_names[] = {"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT", NULL};

enum { F_MINUTE, F_HOUR, F_DOM, F_MONTH, F_DOW, N_FIELDS };

static const field_def fields[N_FIELDS] = {
    {"minute", 0, 59, NULL, NULL},
    {"hour", 0, 23, NULL, NULL},
    {"day-of-month", 1, 31, NULL, NULL},
    {"month", 1, 12, month_names, "JAN-DEC"},
    {"day-of-week", 0, 7, dow_names, "SUN-SAT"}, /* 7 is Sunday too */
};

static const struct {
    const char *name, *expr;
} macros[] = {
    {"@hourly", "0 * * * *"},   {"@daily", "0 0 * * *"},   {"@midnight", "0 0 * * *"},
    {"@weekly", "0 0 * * 0"},   {"@monthly", "0 0 1 * *"}, {"@yearly", "0 0 1 1 *"},
    {"@annually", "0 0 1 1 *"},
};

/* Text from the user as it may be shown: printable ASCII, bounded. */
static const char *shown(const char *s, size_t n, char *buf, size_t len)
{
    size_t k = 0;
    for (size_t i = 0; i < n && k + 4 < len; i++)
        buf[k++] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
    if (k + 4 >= len && n > k) buf[k++] = '.', buf[k++] = '.', buf[k++] = '.';
    buf[k] = '\0';
    return buf;
}

typedef struct {
    const char *expr;
    const field_def *f;
    char *why;
    size_t whylen;
} pctx;

/* "<field> <what> in "<expr>"", with tokens from the user shown safely. */
static int perr(const pctx *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int perr(const pctx *p, const char *fmt, ...)
{
    char what[160], e[112];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    snprintf(p->why, p->whylen, "%s %s in \"%s\"", p->f->name, what,
             shown(p->expr, strlen(p->expr), e, sizeof e));
    return LOOM_EPARSE;
}

static bool is_alnum(char ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z');
}

/* A number or (in month and day-of-week) a name, checked against the
 * field's range. *s advances past it; end bounds the list item. */
static int value(const pctx *p, const char **s, const char *item, const char *end, int *out)
{
    const char *tok = *s;
    size_t n = 0;
    char t[48];
    while (tok + n < end && is_alnum(tok[n])) n++;
    if (n == 0)
        return perr(p, "\"%s\" is not a number, range or step",
                    shown(item, (size_t)(end - item), t, sizeof t));
    *s = tok + n;
    shown(tok, n, t, sizeof t);
    if (strspn(tok, "0123456789") >= n) {
        int v = 0;
        for (size_t i = 0; i < n && v <= 9999; i++) v = v * 10 + (tok[i] - '0');
        if (v < p->f->min || v > p->f->max)
            return perr(p, "%s out of range %d-%d", t, p->f->min, p->f->max);
        *out = v;
        return 0;
    }
    if (p->f->names && n == 3)
        for (int i = 0; i <= p->f->max - p->f->min; i++)
            if (p->f->names[i] && strncasecmp(tok, p->f->names[i], 3) == 0) {
                *out = p->f->min + i;
                return 0;
            }
    if (p->f->names)
        return perr(p, "\"%s\" is neither a number %d-%d nor a name %s", t, p->f->min, p->f->max,
                    p->f->names_hint);
    return perr(p, "\"%s\" is not a number %d-%d", t, p->f->min, p->f->max);
}

/* The step after '/': 1 to the size of the field's range. */
static int step_value(const pctx *p, const char *tok, const char *end, int *out)
{
    char t[48];
    int span = p->f->max - p->f->min + 1, v = 0;
    size_t n = (size_t)(end - tok);
    shown(tok, n, t, sizeof t);
    if (n == 0 || strspn(tok, "0123456789") < n) return perr(p, "step \"%s\" is not a number", t);
    for (size_t i = 0; i < n && v <= span; i++) v = v * 10 + (tok[i] - '0');
    if (v < 1 || v > span) return perr(p, "step %s out of range 1-%d", t, span);
    *out = v;
    return 0;
}

/* One list item: "*", "N", "N-M", any of them with "/STEP", or "N/STEP"
 * (N to the field's end). Sets its bits in *bits. */
static int item(const pctx *p, const char *s, const char *end, uint64_t *bits)
{
    const field_def *f = p->f;
    const char *start = s;
    int lo = f->min, hi = f->max, step = 1, err;
    char t[48];
    if (end - s == 1 && *s == '?') return perr(p, "\"?\" is not supported (use \"*\")");
    if (*s == '*') {
        s++;
        if (f == &fields[F_DOW]) hi = 6; /* 7 would only repeat Sunday */
    } else {
        if ((err = value(p, &s, start, end, &lo))) return err;
        hi = lo;
        if (s < end && *s == '-') {
            s++;
            if ((err = value(p, &s, start, end, &hi))) return err;
            if (hi < lo)
                return perr(p, "range %s goes backwards",
                            shown(start, (size_t)(s - start), t, sizeof t));
        } else if (s < end && *s == '/') {
            hi = f->max; /* "5/10": from 5 to the end, every 10 */
        }
    }
    if (s < end && *s == '/') {
        if ((err = step_value(p, s + 1, end, &step))) return err;
        s = end;
    }
    if (s != end)
        return perr(p, "\"%s\" is not a number, range or step",
                    shown(start, (size_t)(end - start), t, sizeof t));
    for (int v = lo; v <= hi; v += step) *bits |= 1ULL << v;
    return 0;
}

static int field(const pctx *p, const char *s, size_t n, uint64_t *bits)
{
    const char *end = s + n;
    *bits = 0;
    for (;;) {
        const char *comma = memchr(s, ',', (size_t)(end - s));
        const char *stop = comma ? comma : end;
        if (stop == s) return perr(p, "list has an empty item");
        int err = item(p, s, stop, bits);
        if (err) return err;
        if (!comma) return 0;
        s = comma + 1;
    }
}

static int parse_fields(const char *expr, const char *text, loom_cron_t *out, char *why,
                        size_t whylen)
{
    const char *tok[N_FIELDS + 1];
    size_t len[N_FIELDS + 1];
    int n = 0;
    for (const char *s = text;;) {
        s += strspn(s, " \t");
        if (!*s) break;
        size_t k = strcspn(s, " \t");
        if (n <= N_FIELDS) {
            tok[n] = s;
            len[n] = k;
        }
        n++;
        s += k;
    }
    if (n != N_FIELDS) {
        char e[112];
        snprintf(why, whylen,
                 "expected 5 fields (minute hour day-of-month month day-of-week), got %d in "
                 "\"%s\"",
                 n, shown(expr, strlen(expr), e, sizeof e));
        return LOOM_EPARSE;
    }
    uint64_t bits[N_FIELDS];
    for (int i = 0; i < N_FIELDS; i++) {
        pctx p = {expr, &fields[i], why, whylen};
        int err = field(&p, tok[i], len[i], &bits[i]);
        if (err) return err;
    }
    *out = (loom_cron_t){
        .minutes = bits[F_MINUTE],
        .hours = (uint32_t)bits[F_HOUR],
        .dom = (uint32_t)bits[F_DOM],
        .months = (uint16_t)bits[F_MONTH],
        .dow = (uint8_t)((bits[F_DOW] | bits[F_DOW] >> 7) & 0x7f), /* 7 is Sunday */
        .flags = (tok[F_HOUR][0] == '*' ? LOOM_CRON_HOUR_STAR : 0) |
                 (tok[F_DOM][0] == '*' ? LOOM_CRON_DOM_STAR : 0) |
                 (tok[F_DOW][0] == '*' ? LOOM_CRON_DOW_STAR : 0),
    };
    return 0;
}

int loom_cron_parse(const char *expr, loom_cron_t *out, char *why, size_t whylen)
{
    memset(out, 0, sizeof *out);
    size_t n = strlen(expr);
    if (n > LOOM_CRON_MAX_LEN) {
        snprintf(why, whylen, "cron expression longer than %d characters", LOOM_CRON_MAX_LEN);
        return LOOM_EPARSE;
    }
    const char *s = expr + strspn(expr, " \t");
    if (!*s) {
        snprintf(why, whylen, "empty cron expression");
        return LOOM_EPARSE;
    }
    if (*s != '@') return parse_fields(expr, s, out, why, whylen);
    size_t k = strcspn(s, " \t");
    if (s[k + strspn(s + k, " \t")] == '\0')
        for (size_t i = 0; i < sizeof macros / sizeof macros[0]; i++)
            if (strlen(macros[i].name) == k && strncasecmp(s, macros[i].name, k) == 0)
                return parse_fields(expr, macros[i].expr, out, why, whylen);
    char e[112];
    snprintf(why, whylen,
             "unknown macro \"%s\" (use @hourly, @daily, @midnight, @weekly, @monthly, @yearly "
             "or @annually)",
             shown(s, strlen(s), e, sizeof e));
    return LOOM_EPARSE;
}

/* ---- the next fire time ---- */

static int64_t floor_div(int64_t a, int64_t b)
{
    return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

static int month_days(int64_t y, int m)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : days[m - 1];
}

/* The first day >= d of month m in year y that matches, or 0. */
static int find_day(const loom_cron_t *c, int64_t y, int m, int d)
{
    int mdays = month_days(y, m);
    int64_t first = loom_tz_days_from_civil(y, m, d);
    int wd = (int)((first % 7 + 11) % 7); /* 1970-01-01 was a Thursday */
    if (!(c->flags & (LOOM_CRON_DOM_STAR | LOOM_CRON_DOW_STAR))) {
        /* Vixie's rule: both restricted, either one matching will do. */
        int best = 0;
        uint32_t dom = c->dom & (~0u << d);
        if (dom && __builtin_ctz(dom) <= mdays) best = __builtin_ctz(dom);
        for (int k = 0; k < 7 && d + k <= mdays && (!best || d + k < best); k++)
            if (c->dow >> ((wd + k) % 7) & 1) {
                best = d + k;
                break;
            }
        return best;
    }
    for (int dd = d; dd <= mdays;) {
        uint32_t dom = c->dom & (~0u << dd);
        if (!dom || __builtin_ctz(dom) > mdays) return 0;
        dd = __builtin_ctz(dom);
        if (c->dow >> ((wd + dd - d) % 7) & 1) return dd;
        dd++;
    }
    return 0;
}

/* The first matching wall time (local seconds, as if UTC) at or after from
 * and before limit. */
static bool wall_next(const loom_cron_t *c, int64_t from, int64_t limit, int64_t *out)
{
    int64_t w = floor_div(from + 59, 60) * 60;
    if (w >= limit) return false;
    int64_t days = floor_div(w, DAY), y;
    int sod = (int)(w - days * DAY), m, d;
    loom_tz_civil_from_days(days, &y, &m, &d);
    int h = sod / 3600, mi = sod % 3600 / 60;
    for (;;) {
        int day = 0;
        if (c->months >> m & 1) day = find_day(c, y, m, d);
        if (!day) { /* the first of the next month */
            if (++m > 12) m = 1, y++;
            d = 1, h = 0, mi = 0;
            if (loom_tz_days_from_civil(y, m, 1) * DAY >= limit) return false;
            continue;
        }
        if (day != d) d = day, h = 0, mi = 0;
        uint32_t hours = c->hours & (~0u << h);
        uint64_t minutes = 0;
        if (hours) {
            if (__builtin_ctz(hours) != h) h = __builtin_ctz(hours), mi = 0;
            minutes = c->minutes & (~0ULL << mi);
        }
        if (!minutes) { /* a later hour today, else tomorrow */
            if (hours && h < 23) {
                h++, mi = 0;
                continue;
            }
            if (++d > month_days(y, m)) {
                if (++m > 12) m = 1, y++;
                d = 1;
            }
            h = 0, mi = 0;
            if (loom_tz_days_from_civil(y, m, d) * DAY >= limit) return false;
            continue;
        }
        mi = __builtin_ctzll(minutes);
        *out = loom_tz_days_from_civil(y, m, d) * DAY + h * 3600 + mi * 60;
        return *out < limit;
    }
}

int64_t loom_cron_next(const loom_cron_t *c, const loom_tz_t *tz, int64_t after)
{
    if (after < MIN_T || after > MAX_T || !c->minutes || !c->hours || !c->months) return -1;
    int64_t u = after + 1,
            last = after < MAX_T - LOOM_CRON_HORIZON_S ? after + LOOM_CRON_HORIZON_S : MAX_T;
    /* Within one period the offset is fixed, so wall time and instant map
     * one to one; the period's start is where the DST rules apply. */
    while (u <= last) {
        loom_tz_period_t p;
        loom_tz_period(tz, u, &p);
        int64_t from = u + p.off, gap_end = INT64_MIN;
        if (u == p.start && p.prev_off < p.off) {
            /* Wall times in [start+prev_off, start+off) were skipped: they
             * fire once, at the transition. */
            from = p.start + p.prev_off;
            gap_end = p.start + p.off;
        } else if (p.prev_off > p.off && !(c->flags & LOOM_CRON_HOUR_STAR) &&
                   p.start + p.prev_off > from) {
            /* Wall times before start+prev_off already happened in the
             * previous period; only "every hour" expressions fire again. */
            from = p.start + p.prev_off;
        }
        int64_t end = p.end <= last ? p.end : last + 1;
        int64_t w;
        if (wall_next(c, from, end + p.off, &w)) return w < gap_end ? p.start : w - p.off;
        u = end;
    }
    return -1;
}
