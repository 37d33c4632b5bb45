/* Cron expressions and time zones: parsing and its messages, next fire
 * times across lists, ranges, steps, names, macros and Vixie's day rule,
 * the daylight-saving contract in New York, Berlin and Lord Howe (checked
 * against a minute-by-minute reference), slim TZif files whose footer rule
 * does the work, zone errors, and the speed of loom_cron_next. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "loom/cron.h"
#include "loom/err.h"
#include "loom/tz.h"
#include "loom/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define ZONEINFO "/usr/share/zoneinfo"

/* ---- helpers ---- */

/* "2026-03-08T07:00:00Z" (seconds optional) to unix seconds. */
static int64_t at(const char *iso)
{
    int y, mo, d, h, mi, s = 0;
    int n = sscanf(iso, "%d-%d-%dT%d:%d:%d", &y, &mo, &d, &h, &mi, &s);
    if (n < 5) fail_msg("bad time in test: %s", iso);
    return loom_tz_days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s;
}

static const char *iso(int64_t t, char *buf, size_t len)
{
    if (t == -1) {
        snprintf(buf, len, "never");
        return buf;
    }
    int64_t days = t / 86400 - (t % 86400 < 0), y;
    int sod = (int)(t - days * 86400), m, d;
    loom_tz_civil_from_days(days, &y, &m, &d);
    snprintf(buf, len, "%04lld-%02d-%02dT%02d:%02d:%02dZ", (long long)y, m, d, sod / 3600,
             sod / 60 % 60, sod % 60);
    return buf;
}

static loom_tz_t *zone(const char *name)
{
    loom_tz_t *tz = NULL;
    char why[256] = "";
    if (loom_tz_load(name, &tz, why, sizeof why) != 0)
        fail_msg("%s (is tzdata installed? it provides " ZONEINFO ")", why);
    return tz;
}

static loom_cron_t cron(const char *expr)
{
    loom_cron_t c;
    char why[256] = "";
    if (loom_cron_parse(expr, &c, why, sizeof why) != 0) fail_msg("%s: %s", expr, why);
    return c;
}

/* The instant a local day starts, and the next one, in tz. */
static void local_day(const loom_tz_t *tz, const char *date, int64_t *start, int64_t *end)
{
    char midnight[32];
    snprintf(midnight, sizeof midnight, "%sT00:00", date);
    int64_t wall = at(midnight);
    *start = loom_tz_from_local(tz, wall);
    *end = loom_tz_from_local(tz, wall + 86400);
}

static int count_fires(const char *expr, const loom_tz_t *tz, const char *date)
{
    loom_cron_t c = cron(expr);
    int64_t start, end;
    local_day(tz, date, &start, &end);
    int n = 0;
    for (int64_t t = start - 1; (t = loom_cron_next(&c, tz, t)) >= 0 && t < end;) n++;
    return n;
}

/* ---- parsing ---- */

static void test_parse_fields(void **state)
{
    (void)state;
    loom_cron_t c = cron("*/15 * * * *");
    assert_true(c.minutes == (1ULL << 0 | 1ULL << 15 | 1ULL << 30 | 1ULL << 45));
    assert_int_equal(c.hours, 0xffffff);
    assert_int_equal(c.dom, 0xfffffffe);
    assert_int_equal(c.months, 0x1ffe);
    assert_int_equal(c.dow, 0x7f);
    assert_int_equal(c.flags, LOOM_CRON_HOUR_STAR | LOOM_CRON_DOM_STAR | LOOM_CRON_DOW_STAR);

    c = cron("5/10 1-23/2 1,15 JAN,jul Mon-fRI");
    assert_true(c.minutes ==
                (1ULL << 5 | 1ULL << 15 | 1ULL << 25 | 1ULL << 35 | 1ULL << 45 | 1ULL << 55));
    assert_int_equal(c.hours, 0xaaaaaa); /* the odd hours */
    assert_int_equal(c.dom, 1u << 1 | 1u << 15);
    assert_int_equal(c.months, 1 << 1 | 1 << 7);
    assert_int_equal(c.dow, 0x3e);
    assert_int_equal(c.flags, 0);

    assert_int_equal(cron("0 0 * * 7").dow, 1); /* 7 is Sunday */
    assert_int_equal(cron("0 0 * * 0").dow, 1);
    assert_int_equal(cron("0 0 * * 5-7").dow, 1 | 1 << 5 | 1 << 6);
    assert_int_equal(cron("0 0 * * 0-7").dow, 0x7f);
    assert_int_equal(cron("0 0 * * SUN,sat").dow, 1 | 1 << 6);
    assert_int_equal(cron("0 */6 * * *").hours, 1 | 1 << 6 | 1 << 12 | 1 << 18);
    assert_int_equal(cron("0 */6 * * *").flags & LOOM_CRON_HOUR_STAR, LOOM_CRON_HOUR_STAR);
    assert_int_equal(cron("0 0 */10 * 1").flags, LOOM_CRON_DOM_STAR);
    assert_int_equal(cron("0 0 1-31/10 * 1").flags, 0);
    assert_true(cron("59 23 31 12 6").minutes == 1ULL << 59);
    assert_true(cron("*/60 * * * *").minutes == 1); /* a step as long as the field */
    assert_true(cron("0,1,2,1 * * * *").minutes == 7);
    assert_true(cron("  0\t3  * *   *  ").hours == 1 << 3);
}

static void test_parse_macros(void **state)
{
    (void)state;
    static const struct {
        const char *macro, *expr;
    } same[] = {
        {"@hourly", "0 * * * *"},   {"@daily", "0 0 * * *"},   {"@midnight", "0 0 * * *"},
        {"@weekly", "0 0 * * 0"},   {"@monthly", "0 0 1 * *"}, {"@yearly", "0 0 1 1 *"},
        {"@annually", "0 0 1 1 *"}, {" @DAILY ", "0 0 * * *"},
    };
    for (size_t i = 0; i < sizeof same / sizeof same[0]; i++) {
        loom_cron_t a = cron(same[i].macro), b = cron(same[i].expr);
        if (memcmp(&a, &b, sizeof a) != 0)
            fail_msg("%s differs from %s", same[i].macro, same[i].expr);
    }
}

static void test_parse_errors(void **state)
{
    (void)state;
    static const struct {
        const char *expr, *why;
    } bad[] = {
        {"61 * * * *", "minute 61 out of range 0-59 in \"61 * * * *\""},
        {"0 3 * *", "expected 5 fields (minute hour day-of-month month day-of-week), got 4 in "
                    "\"0 3 * *\""},
        {"0 0 1 1 * 2026", "expected 5 fields (minute hour day-of-month month day-of-week), got "
                           "6 in \"0 0 1 1 * 2026\""},
        {"", "empty cron expression"},
        {" \t ", "empty cron expression"},
        {"* 24 * * *", "hour 24 out of range 0-23 in \"* 24 * * *\""},
        {"* * 0 * *", "day-of-month 0 out of range 1-31 in \"* * 0 * *\""},
        {"* * 32 * *", "day-of-month 32 out of range 1-31 in \"* * 32 * *\""},
        {"* * * 13 *", "month 13 out of range 1-12 in \"* * * 13 *\""},
        {"* * * 0 *", "month 0 out of range 1-12 in \"* * * 0 *\""},
        {"* * * * 8", "day-of-week 8 out of range 0-7 in \"* * * * 8\""},
        {"99999999999 * * * *", "minute 99999999999 out of range 0-59 in \"99999999999 * * * *\""},
        /* Found by fuzz_cron: a three-letter day that is no name read past
         * the end of the name table (AddressSanitizer in the debug build). */
        {"0 0 * * Mol", "day-of-week \"Mol\" is neither a number 0-7 nor a name SUN-SAT in "
                        "\"0 0 * * Mol\""},
        {"* * * FOO *",
         "month \"FOO\" is neither a number 1-12 nor a name JAN-DEC in \"* * * FOO *\""},
        {"* * * JANUARY *",
         "month \"JANUARY\" is neither a number 1-12 nor a name JAN-DEC in \"* * * JANUARY *\""},
        {"* * * * FUNDAY",
         "day-of-week \"FUNDAY\" is neither a number 0-7 nor a name SUN-SAT in \"* * * * FUNDAY\""},
        {"MON * * * *", "minute \"MON\" is not a number 0-59 in \"MON * * * *\""},
        {"x * * * *", "minute \"x\" is not a number 0-59 in \"x * * * *\""},
        {"0 0 L * *", "day-of-month \"L\" is not a number 1-31 in \"0 0 L * *\""},
        {"0 0 1W * *", "day-of-month \"1W\" is not a number 1-31 in \"0 0 1W * *\""},
        {"*/0 * * * *", "minute step 0 out of range 1-60 in \"*/0 * * * *\""},
        {"*/61 * * * *", "minute step 61 out of range 1-60 in \"*/61 * * * *\""},
        {"0 */25 * * *", "hour step 25 out of range 1-24 in \"0 */25 * * *\""},
        {"*/x * * * *", "minute step \"x\" is not a number in \"*/x * * * *\""},
        {"5/ * * * *", "minute step \"\" is not a number in \"5/ * * * *\""},
        {"1-5/2/3 * * * *", "minute step \"2/3\" is not a number in \"1-5/2/3 * * * *\""},
        {"5-1 * * * *", "minute range 5-1 goes backwards in \"5-1 * * * *\""},
        {"0 0 * * FRI-MON", "day-of-week range FRI-MON goes backwards in \"0 0 * * FRI-MON\""},
        {"1,,2 * * * *", "minute list has an empty item in \"1,,2 * * * *\""},
        {"1, * * * *", "minute list has an empty item in \"1, * * * *\""},
        {"0 0 ? * *", "day-of-month \"?\" is not supported (use \"*\") in \"0 0 ? * *\""},
        {"1-2-3 * * * *", "minute \"1-2-3\" is not a number, range or step in \"1-2-3 * * * *\""},
        {"*5 * * * *", "minute \"*5\" is not a number, range or step in \"*5 * * * *\""},
        {"-5 * * * *", "minute \"-5\" is not a number, range or step in \"-5 * * * *\""},
        {"1- * * * *", "minute \"1-\" is not a number, range or step in \"1- * * * *\""},
        {"@reboot", "unknown macro \"@reboot\" (use @hourly, @daily, @midnight, @weekly, "
                    "@monthly, @yearly or @annually)"},
        {"@daily 5", "unknown macro \"@daily 5\" (use @hourly, @daily, @midnight, @weekly, "
                     "@monthly, @yearly or @annually)"},
        {"\x1b[31m * * * *",
         "minute \"?[31m\" is not a number, range or step in \"?[31m * * * *\""},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        loom_cron_t c;
        char why[256] = "";
        int rc = loom_cron_parse(bad[i].expr, &c, why, sizeof why);
        if (rc != LOOM_EPARSE || strcmp(why, bad[i].why) != 0)
            fail_msg("\"%s\": rc %d, why\n  got:  %s\n  want: %s", bad[i].expr, rc, why,
                     bad[i].why);
    }
    char *long_expr = loom_xmalloc(LOOM_CRON_MAX_LEN + 2);
    memset(long_expr, '1', LOOM_CRON_MAX_LEN + 1);
    long_expr[LOOM_CRON_MAX_LEN + 1] = '\0';
    loom_cron_t c;
    char why[256];
    assert_int_equal(loom_cron_parse(long_expr, &c, why, sizeof why), LOOM_EPARSE);
    assert_string_equal(why, "cron expression longer than 1024 characters");
    free(long_expr);
    /* A short buffer truncates the message, never overflows. */
    char tiny[8];
    assert_int_equal(loom_cron_parse("61 * * * *", &c, tiny, sizeof tiny), LOOM_EPARSE);
    assert_string_equal(tiny, "minute ");
}

/* ---- next fire times ---- */

typedef struct {
    const char *expr, *zone, *after, *next; /* next "never" for -1 */
} next_case;

static const next_case next_cases[] = {
    /* Lists, ranges, steps, names in UTC. */
    {"*/15 * * * *", "UTC", "2026-01-01T00:00:00", "2026-01-01T00:15:00Z"},
    {"*/15 * * * *", "UTC", "2026-01-01T00:07:30", "2026-01-01T00:15:00Z"},
    {"*/15 * * * *", "UTC", "2026-01-01T00:14:59", "2026-01-01T00:15:00Z"},
    {"*/15 * * * *", "UTC", "2026-01-01T23:45:00", "2026-01-02T00:00:00Z"},
    {"* * * * *", "UTC", "2026-01-01T00:00:00", "2026-01-01T00:01:00Z"},
    {"* * * * *", "UTC", "2026-01-01T00:00:59", "2026-01-01T00:01:00Z"},
    {"1-30/5 * * * *", "UTC", "2026-01-01T00:26:00", "2026-01-01T01:01:00Z"},
    {"5/10 * * * *", "UTC", "2026-01-01T00:55:00", "2026-01-01T01:05:00Z"},
    {"5/10 * * * *", "UTC", "2026-01-01T00:05:00", "2026-01-01T00:15:00Z"},
    {"0,30 9-17 * * MON-FRI", "UTC", "2026-01-02T17:30:00", "2026-01-05T09:00:00Z"},
    {"0,30 9-17 * * MON-FRI", "UTC", "2026-01-05T09:00:00", "2026-01-05T09:30:00Z"},
    {"0 12 * JAN,jul *", "UTC", "2026-02-01T00:00:00", "2026-07-01T12:00:00Z"},
    {"0 12 * JAN,jul *", "UTC", "2026-07-31T12:00:00", "2027-01-01T12:00:00Z"},
    {"0 0 * * 7", "UTC", "2026-01-01T00:00:00", "2026-01-04T00:00:00Z"},
    {"0 0 * * 5-7", "UTC", "2026-01-01T00:00:00", "2026-01-02T00:00:00Z"},
    {"0 0 * * 5-7", "UTC", "2026-01-04T00:00:00", "2026-01-09T00:00:00Z"},
    {"59 23 31 12 *", "UTC", "2026-12-31T23:59:00", "2027-12-31T23:59:00Z"},
    {"0 0 1 1 *", "UTC", "1969-06-01T00:00:00", "1970-01-01T00:00:00Z"},
    {"30 4 * * *", "UTC", "1969-12-31T04:30:00", "1970-01-01T04:30:00Z"},
    /* Macros. */
    {"@hourly", "UTC", "2026-01-01T00:00:00", "2026-01-01T01:00:00Z"},
    {"@daily", "UTC", "2026-01-01T00:00:00", "2026-01-02T00:00:00Z"},
    {"@midnight", "UTC", "2026-01-01T12:00:00", "2026-01-02T00:00:00Z"},
    {"@weekly", "UTC", "2026-01-01T00:00:00", "2026-01-04T00:00:00Z"},
    {"@monthly", "UTC", "2026-01-01T00:00:00", "2026-02-01T00:00:00Z"},
    {"@yearly", "UTC", "2026-01-01T00:00:00", "2027-01-01T00:00:00Z"},
    {"@annually", "UTC", "2025-12-31T23:59:59", "2026-01-01T00:00:00Z"},
    /* Vixie's day rule: both restricted = either; one '*' = only the other. */
    {"0 0 13 * 5", "UTC", "2026-01-01T00:00:00", "2026-01-02T00:00:00Z"}, /* a Friday */
    {"0 0 13 * 5", "UTC", "2026-01-09T00:00:00", "2026-01-13T00:00:00Z"}, /* the 13th, a Tue */
    {"0 0 13 * 5", "UTC", "2026-01-13T00:00:00", "2026-01-16T00:00:00Z"},
    {"0 0 13 * FRI", "UTC", "2026-02-06T00:00:00", "2026-02-13T00:00:00Z"}, /* both at once */
    {"0 0 * * 5", "UTC", "2026-01-09T00:00:00", "2026-01-16T00:00:00Z"},
    {"0 0 13 * *", "UTC", "2026-01-01T00:00:00", "2026-01-13T00:00:00Z"},
    {"0 0 13 * *", "UTC", "2026-01-13T00:00:00", "2026-02-13T00:00:00Z"},
    {"0 0 */10 * 1", "UTC", "2026-01-01T00:00:00", "2026-05-11T00:00:00Z"},    /* '*': both */
    {"0 0 1-31/10 * 1", "UTC", "2026-01-01T00:00:00", "2026-01-05T00:00:00Z"}, /* either */
    {"0 0 31 * 0", "UTC", "2026-01-30T00:00:00", "2026-01-31T00:00:00Z"},
    {"0 0 31 * 0", "UTC", "2026-01-31T00:00:00", "2026-02-01T00:00:00Z"},
    /* Leap years, and what never happens. */
    {"0 0 29 2 *", "UTC", "2026-01-01T00:00:00", "2028-02-29T00:00:00Z"},
    {"0 0 29 2 *", "UTC", "2028-02-29T00:00:00", "2032-02-29T00:00:00Z"},
    {"0 0 29 2 *", "UTC", "2096-03-01T00:00:00", "2104-02-29T00:00:00Z"}, /* 2100 is not leap */
    {"0 0 29 2 *", "UTC", "1999-03-01T00:00:00", "2000-02-29T00:00:00Z"}, /* 2000 is */
    {"0 0 29 2 1", "UTC", "2026-02-20T00:00:00", "2026-02-23T00:00:00Z"},
    {"0 0 30 2 *", "UTC", "2026-01-01T00:00:00", "never"},
    {"0 0 31 4,6,9,11 *", "UTC", "2026-01-01T00:00:00", "never"},
    {"0 0 30 2 *", "America/New_York", "2026-01-01T00:00:00", "never"},
    {"0 0 31 2 MON", "UTC", "2026-01-01T00:00:00", "2026-02-02T00:00:00Z"}, /* Feb Mondays */
    /* New York, spring forward on 2026-03-08 at 07:00Z (02:00 EST -> 03:00 EDT). */
    {"0 12 * * *", "America/New_York", "2026-01-01T00:00:00", "2026-01-01T17:00:00Z"},
    {"0 12 * * *", "America/New_York", "2026-07-01T00:00:00", "2026-07-01T16:00:00Z"},
    {"30 2 * * *", "America/New_York", "2026-03-08T00:00:00", "2026-03-08T07:00:00Z"},
    {"30 2 * * *", "America/New_York", "2026-03-08T06:59:59", "2026-03-08T07:00:00Z"},
    {"30 2 * * *", "America/New_York", "2026-03-08T07:00:00", "2026-03-09T06:30:00Z"},
    {"0 2 * * *", "America/New_York", "2026-03-08T00:00:00", "2026-03-08T07:00:00Z"},
    {"59 2 * * *", "America/New_York", "2026-03-08T00:00:00", "2026-03-08T07:00:00Z"},
    {"0 3 * * *", "America/New_York", "2026-03-08T00:00:00", "2026-03-08T07:00:00Z"},
    {"30 3 * * *", "America/New_York", "2026-03-08T00:00:00", "2026-03-08T07:30:00Z"},
    {"*/15 * * * *", "America/New_York", "2026-03-08T06:45:00", "2026-03-08T07:00:00Z"},
    {"*/15 * * * *", "America/New_York", "2026-03-08T07:00:00", "2026-03-08T07:15:00Z"},
    {"30 2 8 3 *", "America/New_York", "2026-03-08T07:00:00", "2027-03-08T07:30:00Z"},
    /* New York, fall back on 2026-11-01 at 06:00Z (02:00 EDT -> 01:00 EST). */
    {"30 1 * * *", "America/New_York", "2026-11-01T00:00:00", "2026-11-01T05:30:00Z"},
    {"30 1 * * *", "America/New_York", "2026-11-01T05:30:00", "2026-11-02T06:30:00Z"},
    {"30 1 * * *", "America/New_York", "2026-11-01T05:45:00", "2026-11-02T06:30:00Z"},
    {"0 1 * * *", "America/New_York", "2026-11-01T05:00:00", "2026-11-02T06:00:00Z"},
    {"0 * * * *", "America/New_York", "2026-11-01T05:00:00", "2026-11-01T06:00:00Z"},
    {"30 * * * *", "America/New_York", "2026-11-01T05:30:00", "2026-11-01T06:30:00Z"},
    {"*/15 1 * * *", "America/New_York", "2026-11-01T05:45:00", "2026-11-02T06:00:00Z"},
    {"0 2 * * *", "America/New_York", "2026-11-01T00:00:00", "2026-11-01T07:00:00Z"},
    /* After the fat file's table ends (2037) the footer rule takes over. */
    {"30 2 * * *", "America/New_York", "2040-03-11T00:00:00", "2040-03-11T07:00:00Z"},
    {"30 1 * * *", "America/New_York", "2040-11-04T00:00:00", "2040-11-04T05:30:00Z"},
    {"0 12 * * *", "America/New_York", "2100-07-04T00:00:00", "2100-07-04T16:00:00Z"},
    /* Before 1883-11-18 17:00Z New York kept local mean time, -4:56:02; the
     * change to EST repeated the wall times 12:00:00 to 12:03:57. */
    {"0 0 * * *", "America/New_York", "1883-11-17T00:00:00", "1883-11-17T04:56:02Z"},
    {"0 12 * * *", "America/New_York", "1883-11-18T00:00:00", "1883-11-18T16:56:02Z"},
    {"0 12 * * *", "America/New_York", "1883-11-18T16:56:02", "1883-11-19T17:00:00Z"},
    {"0 * * * *", "America/New_York", "1883-11-18T16:56:02", "1883-11-18T17:00:00Z"},
    {"0 0 1 1 *", "America/New_York", "1960-06-01T00:00:00", "1961-01-01T05:00:00Z"},
    /* Berlin: 2026-03-29 01:00Z (02:00 CET -> 03:00 CEST), 2026-10-25 01:00Z back. */
    {"0 3 * * *", "Europe/Berlin", "2026-01-10T00:00:00", "2026-01-10T02:00:00Z"},
    {"0 3 * * *", "Europe/Berlin", "2026-07-10T00:00:00", "2026-07-10T01:00:00Z"},
    {"30 2 * * *", "Europe/Berlin", "2026-03-29T00:00:00", "2026-03-29T01:00:00Z"},
    {"30 2 * * *", "Europe/Berlin", "2026-03-29T01:00:00", "2026-03-30T00:30:00Z"},
    {"30 2 * * *", "Europe/Berlin", "2026-10-25T00:00:00", "2026-10-25T00:30:00Z"},
    {"30 2 * * *", "Europe/Berlin", "2026-10-25T00:30:00", "2026-10-26T01:30:00Z"},
    {"30 * * * *", "Europe/Berlin", "2026-10-25T00:30:00", "2026-10-25T01:30:00Z"},
    /* A half-hour offset, and a half-hour daylight-saving change. */
    {"0 9 * * *", "Asia/Kolkata", "2026-01-01T00:00:00", "2026-01-01T03:30:00Z"},
    {"0 0 * * *", "Asia/Kolkata", "2026-01-01T00:00:00", "2026-01-01T18:30:00Z"},
    {"*/45 * * * *", "Asia/Kolkata", "2026-01-01T00:00:00", "2026-01-01T00:15:00Z"},
    {"15 2 * * *", "Australia/Lord_Howe", "2026-10-03T00:00:00", "2026-10-03T15:30:00Z"},
    {"45 1 * * *", "Australia/Lord_Howe", "2026-04-04T00:00:00", "2026-04-04T14:45:00Z"},
    {"45 1 * * *", "Australia/Lord_Howe", "2026-04-04T14:45:00", "2026-04-05T15:15:00Z"},
    {"45 * * * *", "Australia/Lord_Howe", "2026-04-04T14:45:00", "2026-04-04T15:15:00Z"},
};

static void test_next_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof next_cases / sizeof next_cases[0]; i++) {
        const next_case *k = &next_cases[i];
        loom_tz_t *tz = zone(k->zone);
        loom_cron_t c = cron(k->expr);
        char got[40];
        iso(loom_cron_next(&c, tz, at(k->after)), got, sizeof got);
        if (strcmp(got, k->next) != 0)
            fail_msg("\"%s\" in %s after %s: got %s, want %s", k->expr, k->zone, k->after, got,
                     k->next);
        loom_tz_free(&tz);
    }
}

/* The contract's daylight-saving counts, per local day. */
static void test_dst_counts(void **state)
{
    (void)state;
    static const struct {
        const char *expr, *zone, *date;
        int fires;
    } counts[] = {
        {"*/15 * * * *", "America/New_York", "2026-03-08", 92},
        {"*/15 * * * *", "America/New_York", "2026-11-01", 100},
        {"*/15 * * * *", "America/New_York", "2026-06-01", 96},
        {"*/15 * * * *", "Europe/Berlin", "2026-03-29", 92},
        {"*/15 * * * *", "Europe/Berlin", "2026-10-25", 100},
        {"0 * * * *", "America/New_York", "2026-03-08", 23},
        {"0 * * * *", "America/New_York", "2026-11-01", 25},
        {"30 1 * * *", "America/New_York", "2026-11-01", 1},
        {"30 2 * * *", "America/New_York", "2026-03-08", 1},
        {"30 2 * * *", "Europe/Berlin", "2026-03-29", 1},
        {"30 2 * * *", "Europe/Berlin", "2026-10-25", 1},
        {"0,15,30,45 2 * * *", "America/New_York", "2026-03-08", 1}, /* all at 03:00 EDT */
        {"0,15,30,45 1 * * *", "America/New_York", "2026-11-01", 4},
        {"*/15 1 * * *", "America/New_York", "2026-11-01", 4},
        {"*/15 * * * *", "Australia/Lord_Howe", "2026-10-04", 94},
        {"*/15 * * * *", "Australia/Lord_Howe", "2026-04-05", 98},
        {"0 * * * *", "Australia/Lord_Howe", "2026-10-04", 24}, /* 02:00 fires at 02:30 */
        {"0 * * * *", "Australia/Lord_Howe", "2026-04-05", 24},
        {"*/15 * * * *", "Asia/Kolkata", "2026-03-08", 96},
        {"*/15 * * * *", "UTC", "2026-03-08", 96},
        {"*/15 * * * *", "America/New_York", "2040-03-11", 92}, /* from the footer */
        {"*/15 * * * *", "America/New_York", "2040-11-04", 100},
    };
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
        loom_tz_t *tz = zone(counts[i].zone);
        int n = count_fires(counts[i].expr, tz, counts[i].date);
        if (n != counts[i].fires)
            fail_msg("\"%s\" in %s on %s: %d fires, want %d", counts[i].expr, counts[i].zone,
                     counts[i].date, n, counts[i].fires);
        loom_tz_free(&tz);
    }
    /* The exact instants of the contract's examples. */
    loom_tz_t *ny = zone("America/New_York"), *berlin = zone("Europe/Berlin");
    loom_cron_t c = cron("30 1 * * *");
    char got[40];
    assert_string_equal(iso(loom_cron_next(&c, ny, at("2026-11-01T04:00")), got, sizeof got),
                        "2026-11-01T05:30:00Z");
    c = cron("30 2 * * *");
    const char *abbr = NULL;
    int64_t t = loom_cron_next(&c, berlin, at("2026-03-28T23:00"));
    assert_string_equal(iso(t, got, sizeof got), "2026-03-29T01:00:00Z");
    assert_int_equal(loom_tz_offset(berlin, t, &abbr), 7200);
    assert_string_equal(abbr, "CEST");
    loom_tz_free(&ny);
    loom_tz_free(&berlin);
}

/* ---- a minute-by-minute reference for the daylight-saving rules ---- */

static bool wall_matches(const loom_cron_t *c, int64_t wall)
{
    int64_t days = wall / 86400 - (wall % 86400 < 0), y;
    int sod = (int)(wall - days * 86400), m, d;
    loom_tz_civil_from_days(days, &y, &m, &d);
    int dow = (int)((days % 7 + 11) % 7);
    bool dom_ok = c->dom >> d & 1, dow_ok = c->dow >> dow & 1;
    bool day_ok =
        c->flags & (LOOM_CRON_DOM_STAR | LOOM_CRON_DOW_STAR) ? dom_ok && dow_ok : dom_ok || dow_ok;
    return sod % 60 == 0 && (c->minutes >> (sod / 60 % 60) & 1) && (c->hours >> (sod / 3600) & 1) &&
           (c->months >> m & 1) && day_ok;
}

/* Does instant u fire, by the contract read literally? Uses only
 * loom_tz_offset, so it checks loom_cron_next's period logic. */
static bool reference_fires(const loom_cron_t *c, const loom_tz_t *tz, int64_t u)
{
    int64_t wall = u + loom_tz_offset(tz, u, NULL);
    int64_t before = u - 60 + loom_tz_offset(tz, u - 60, NULL);
    if (wall - before > 60) /* wall times were skipped just before u */
        for (int64_t w = before + 60; w < wall; w += 60)
            if (wall_matches(c, w)) return true;
    if (!wall_matches(c, wall)) return false;
    if (c->flags & LOOM_CRON_HOUR_STAR) return true;
    for (int k = 1; k <= 24; k++) { /* did this wall time happen earlier? */
        int32_t off = loom_tz_offset(tz, u - k * 15 * 60, NULL);
        int64_t earlier = wall - off;
        if (earlier < u && loom_tz_offset(tz, earlier, NULL) == off) return false;
    }
    return true;
}

static void check_reference(const char *expr, const loom_tz_t *tz, int64_t from, int64_t to)
{
    loom_cron_t c = cron(expr);
    int64_t t = loom_cron_next(&c, tz, from - 1);
    char a[40], b[40];
    for (int64_t u = from; u < to; u += 60) {
        bool want = reference_fires(&c, tz, u);
        if (want != (t == u))
            fail_msg("\"%s\" in %s: the reference %s at %s, next() gives %s", expr,
                     loom_tz_name(tz), want ? "fires" : "does not fire", iso(u, a, sizeof a),
                     iso(t, b, sizeof b));
        if (t == u) t = loom_cron_next(&c, tz, t);
    }
}

static const char *const dst_exprs[] = {
    "*/15 * * * *",  "0 * * * *",     "30 1 * * *", "30 2 * * *",        "0,15,30,45 2 * * *",
    "*/7 1-3 * * *", "59 * * * *",    "0 2 * * 0",  "*/20 */2 * * *",    "45 1,2 * * *",
    "0 0 * * *",     "*/5 0-4 * * *", "1 2 * * *",  "29,31 1,2,3 * * *", "* 2 * * *",
};

static void test_dst_reference(void **state)
{
    (void)state;
    static const struct {
        const char *zone, *from, *to;
    } windows[] = {
        {"America/New_York", "2026-03-07T12:00", "2026-03-09T12:00"},
        {"America/New_York", "2026-10-31T12:00", "2026-11-02T12:00"},
        {"Europe/Berlin", "2026-03-28T12:00", "2026-03-30T00:00"},
        {"Europe/Berlin", "2026-10-24T12:00", "2026-10-26T00:00"},
        {"Australia/Lord_Howe", "2026-10-03T00:00", "2026-10-04T12:00"},
        {"Australia/Lord_Howe", "2026-04-04T00:00", "2026-04-05T12:00"},
        {"America/New_York", "2045-11-04T00:00", "2045-11-06T00:00"}, /* the footer's time */
    };
    for (size_t w = 0; w < sizeof windows / sizeof windows[0]; w++) {
        loom_tz_t *tz = zone(windows[w].zone);
        for (size_t e = 0; e < sizeof dst_exprs / sizeof dst_exprs[0]; e++)
            check_reference(dst_exprs[e], tz, at(windows[w].from), at(windows[w].to));
        loom_tz_free(&tz);
    }
}

/* Day rules over a year and a half in UTC, against the same reference. */
static void test_calendar_reference(void **state)
{
    (void)state;
    static const char *const exprs[] = {
        "0 0 13 * 5",
        "0 0 * * 5",
        "0 0 13 * *",
        "0 0 */10 * 1",
        "0 0 1-31/10 * 1",
        "0 0 29 2 *",
        "0 0 31 * *",
        "0 12 1,15 * MON",
        "0 0 * 2 SUN",
        "0 0 30 * 6-7",
        "0 0 1 JAN-MAR,OCT */3",
        "0 */5 */3 * *",
        "0 23 28-31 * *",
    };
    loom_tz_t *utc = zone("UTC");
    for (size_t i = 0; i < sizeof exprs / sizeof exprs[0]; i++) {
        loom_cron_t c = cron(exprs[i]);
        int64_t from = at("2027-11-01T00:00"), to = at("2029-05-01T00:00");
        int64_t t = loom_cron_next(&c, utc, from - 1);
        char a[40], b[40];
        for (int64_t u = from; u < to; u += 3600) { /* these all fire on the hour */
            bool want = wall_matches(&c, u);
            if (want != (t == u))
                fail_msg("\"%s\": the reference %s at %s, next() gives %s", exprs[i],
                         want ? "fires" : "does not fire", iso(u, a, sizeof a),
                         iso(t, b, sizeof b));
            if (t == u) t = loom_cron_next(&c, utc, t);
        }
    }
    loom_tz_free(&utc);
}

/* ---- zones ---- */

static void test_tz_offsets(void **state)
{
    (void)state;
    static const struct {
        const char *zone, *when, *abbr;
        int32_t off;
    } cases[] = {
        {"UTC", "2026-07-01T00:00", "UTC", 0},
        {"Etc/UTC", "1900-01-01T00:00", "UTC", 0},
        {"America/New_York", "2026-01-15T00:00", "EST", -18000},
        {"America/New_York", "2026-07-15T00:00", "EDT", -14400},
        {"America/New_York", "2026-03-08T06:59:59", "EST", -18000},
        {"America/New_York", "2026-03-08T07:00", "EDT", -14400},
        {"America/New_York", "2026-11-01T05:59:59", "EDT", -14400},
        {"America/New_York", "2026-11-01T06:00", "EST", -18000},
        {"America/New_York", "2100-07-01T00:00", "EDT", -14400}, /* footer */
        {"America/New_York", "2100-12-01T00:00", "EST", -18000},
        {"America/New_York", "1800-01-01T00:00", "LMT", -17762}, /* before the table */
        {"Europe/Berlin", "2026-01-15T00:00", "CET", 3600},
        {"Europe/Berlin", "2026-07-15T00:00", "CEST", 7200},
        {"Asia/Kolkata", "2026-07-15T00:00", "IST", 19800},
        {"Australia/Lord_Howe", "2026-07-15T00:00", "+1030", 37800},
        {"Australia/Lord_Howe", "2026-12-15T00:00", "+11", 39600},
        {"Australia/Sydney", "2026-01-15T00:00", "AEDT", 39600},
        {"Australia/Sydney", "2060-07-15T00:00", "AEST", 36000},
        {"Australia/Sydney", "2060-12-31T23:59", "AEDT", 39600},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        loom_tz_t *tz = zone(cases[i].zone);
        const char *abbr = NULL;
        int32_t off = loom_tz_offset(tz, at(cases[i].when), &abbr);
        if (off != cases[i].off || strcmp(abbr, cases[i].abbr) != 0)
            fail_msg("%s at %s: %d %s, want %d %s", cases[i].zone, cases[i].when, off, abbr,
                     cases[i].off, cases[i].abbr);
        loom_tz_free(&tz);
    }
}

/* Any instant is a valid question (UBSan watches the arithmetic). */
static void test_extremes(void **state)
{
    (void)state;
    static const char *const zones[] = {"UTC", "America/New_York", "Australia/Lord_Howe"};
    static const int64_t ts[] = {INT64_MIN,      INT64_MIN + 1, -62135596801LL,
                                 253402300800LL, INT64_MAX - 1, INT64_MAX};
    loom_cron_t c = cron("*/15 * * * *");
    for (size_t i = 0; i < sizeof zones / sizeof zones[0]; i++) {
        loom_tz_t *tz = zone(zones[i]);
        for (size_t k = 0; k < sizeof ts / sizeof ts[0]; k++) {
            const char *abbr = NULL;
            int32_t off = loom_tz_offset(tz, ts[k], &abbr);
            assert_true(off > -93600 && off < 93600);
            assert_non_null(abbr);
            assert_int_equal(loom_cron_next(&c, tz, ts[k]), -1);
            (void)loom_tz_from_local(tz, ts[k]);
        }
        char got[40];
        assert_string_equal(iso(loom_cron_next(&c, tz, at("9999-12-31T23:59:59")), got, 40),
                            "never");
        loom_tz_free(&tz);
    }
}

static void test_tz_periods_and_local(void **state)
{
    (void)state;
    loom_tz_t *ny = zone("America/New_York");
    loom_tz_period_t p;
    loom_tz_period(ny, at("2026-05-01T00:00"), &p);
    assert_int_equal(p.start, at("2026-03-08T07:00"));
    assert_int_equal(p.end, at("2026-11-01T06:00"));
    assert_int_equal(p.off, -14400);
    assert_int_equal(p.prev_off, -18000);
    loom_tz_period(ny, at("2050-05-01T00:00"), &p); /* from the footer */
    assert_int_equal(p.start, at("2050-03-13T07:00"));
    assert_int_equal(p.end, at("2050-11-06T06:00"));
    assert_int_equal(p.off, -14400);
    assert_int_equal(p.prev_off, -18000);
    static const struct {
        const char *wall, *utc;
    } locals[] = {
        {"2026-07-01T12:00", "2026-07-01T16:00:00Z"},
        {"2026-03-08T01:59", "2026-03-08T06:59:00Z"},
        {"2026-03-08T02:30", "2026-03-08T07:00:00Z"}, /* skipped: the change */
        {"2026-03-08T03:00", "2026-03-08T07:00:00Z"},
        {"2026-11-01T01:30", "2026-11-01T05:30:00Z"}, /* twice: the first */
        {"2026-11-01T02:00", "2026-11-01T07:00:00Z"},
    };
    char got[40];
    for (size_t i = 0; i < sizeof locals / sizeof locals[0]; i++)
        assert_string_equal(iso(loom_tz_from_local(ny, at(locals[i].wall)), got, sizeof got),
                            locals[i].utc);
    assert_string_equal(loom_tz_name(ny), "America/New_York");
    loom_tz_free(&ny);
    loom_tz_free(&ny); /* NULL is fine */
}

static void test_tz_errors(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        int err;
        const char *why;
    } bad[] = {
        {"Mars/Olympus", LOOM_ENOTFOUND,
         "unknown time zone \"Mars/Olympus\": not found in " ZONEINFO},
        {"America", LOOM_ENOTFOUND, "unknown time zone \"America\": not found in " ZONEINFO},
        {"../etc/passwd", LOOM_EINVAL,
         "invalid time zone name \"../etc/passwd\": use an IANA name such as \"Europe/Berlin\""},
        {"Europe/../../etc/passwd", LOOM_EINVAL,
         "invalid time zone name \"Europe/../../etc/passwd\": use an IANA name such as "
         "\"Europe/Berlin\""},
        {"/etc/localtime", LOOM_EINVAL,
         "invalid time zone name \"/etc/localtime\": use an IANA name such as \"Europe/Berlin\""},
        {"", LOOM_EINVAL,
         "invalid time zone name \"\": use an IANA name such as \"Europe/Berlin\""},
        {"Europe/Ber lin", LOOM_EINVAL,
         "invalid time zone name \"Europe/Ber lin\": use an IANA name such as \"Europe/Berlin\""},
        {"right/UTC", LOOM_EPARSE,
         "time zone \"right/UTC\": " ZONEINFO "/right/UTC: it counts leap seconds (a \"right/\" "
         "zone); use the plain zone"},
        {"zone.tab", LOOM_EINVAL,
         "invalid time zone name \"zone.tab\": use an IANA name such as \"Europe/Berlin\""},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        loom_tz_t *tz = (loom_tz_t *)&tz; /* must come back NULL */
        char why[256] = "";
        int rc = loom_tz_load(bad[i].name, &tz, why, sizeof why);
        if (rc != bad[i].err || strcmp(why, bad[i].why) != 0 || tz)
            fail_msg("\"%s\": rc %d, why\n  got:  %s\n  want: %s", bad[i].name, rc, why,
                     bad[i].why);
    }
    loom_tz_t *tz = NULL;
    char why[256];
    assert_int_equal(loom_tz_load_dir("/nonexistent", "Europe/Berlin", &tz, why, sizeof why),
                     LOOM_ENOTFOUND);
    assert_string_equal(why, "unknown time zone \"Europe/Berlin\": not found in /nonexistent "
                             "(that folder is missing: install tzdata)");
    assert_int_equal(loom_tz_load_dir("/nonexistent", "UTC", &tz, why, sizeof why), 0);
    loom_tz_free(&tz);

    /* A file that is not TZif, in a folder of our own. */
    char dir[] = "/tmp/loom-tz-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char *path = loom_xasprintf("%s/Bad", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("# not a zone\n", f);
    fclose(f);
    assert_int_equal(loom_tz_load_dir(dir, "Bad", &tz, why, sizeof why), LOOM_EPARSE);
    char *want = loom_xasprintf("time zone \"Bad\": %s: not a TZif file", path);
    assert_string_equal(why, want);
    free(want);
    unlink(path);
    rmdir(dir);
    free(path);
}

/* ---- TZif variants built in memory ---- */

typedef struct {
    unsigned char b[4096];
    size_t n;
} bytes;

static void put(bytes *o, const void *p, size_t n)
{
    assert_true(o->n + n <= sizeof o->b);
    if (n == 0) return;
    memcpy(o->b + o->n, p, n);
    o->n += n;
}

static void put32(bytes *o, uint32_t v)
{
    unsigned char b[4] = {v >> 24, v >> 16 & 0xff, v >> 8 & 0xff, v & 0xff};
    put(o, b, 4);
}

static void put64(bytes *o, int64_t v)
{
    put32(o, (uint32_t)((uint64_t)v >> 32));
    put32(o, (uint32_t)v);
}

typedef struct {
    int32_t off;
    unsigned char dst, abbr;
} type_spec;

/* A TZif file: version ('\0', '2', '3'), transitions with their types, the
 * types, the abbreviations (each NUL-ended), and for v2+ a footer. */
static void tzif(bytes *o, char version, const int64_t *times, const unsigned char *idx,
                 uint32_t n_times, const type_spec *types, uint32_t n_types, const char *abbrs,
                 uint32_t n_chars, const char *footer, uint32_t leaps)
{
    o->n = 0;
    for (int pass = 0; pass < (version ? 2 : 1); pass++) {
        unsigned timesize = pass ? 8 : 4;
        put(o, "TZif", 4);
        put(o, &version, 1);
        put(o, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 15);
        uint32_t hdr[6] = {0, 0, leaps, n_times, n_types, n_chars};
        for (int i = 0; i < 6; i++) put32(o, hdr[i]);
        for (uint32_t i = 0; i < n_times; i++) {
            if (timesize == 8)
                put64(o, times[i]);
            else
                put32(o, (uint32_t)times[i]);
        }
        put(o, idx, n_times);
        for (uint32_t i = 0; i < n_types; i++) {
            put32(o, (uint32_t)types[i].off);
            put(o, &types[i].dst, 1);
            put(o, &types[i].abbr, 1);
        }
        put(o, abbrs, n_chars);
        for (uint32_t i = 0; i < leaps; i++) {
            if (timesize == 8)
                put64(o, 78796800);
            else
                put32(o, 78796800);
            put32(o, 1);
        }
    }
    if (version) {
        put(o, "\n", 1);
        put(o, footer, strlen(footer));
        put(o, "\n", 1);
    }
}

static loom_tz_t *slim(const char *name, const char *footer, int32_t std_off, const char *abbr)
{
    bytes o;
    type_spec t = {std_off, 0, 0};
    char abbrs[16];
    size_t n = strlen(abbr) + 1;
    memcpy(abbrs, abbr, n);
    tzif(&o, '2', NULL, NULL, 0, &t, 1, abbrs, (uint32_t)n, footer, 0);
    loom_tz_t *tz = NULL;
    char why[200] = "";
    if (loom_tz_parse(name, o.b, o.n, &tz, why, sizeof why) != 0) fail_msg("%s", why);
    return tz;
}

/* A slim file has no transitions at all: the footer rule is the zone. It
 * must agree with the fat file everywhere. */
static void test_slim_footer(void **state)
{
    (void)state;
    static const struct {
        const char *zone, *footer, *abbr;
        int32_t std;
    } pairs[] = {
        {"America/New_York", "EST5EDT,M3.2.0,M11.1.0", "EST", -18000},
        {"Europe/Berlin", "CET-1CEST,M3.5.0,M10.5.0/3", "CET", 3600},
        {"Australia/Sydney", "AEST-10AEDT,M10.1.0,M4.1.0/3", "AEST", 36000},
        {"Australia/Lord_Howe", "<+1030>-10:30<+11>-11,M10.1.0,M4.1.0", "+1030", 37800},
    };
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        loom_tz_t *fat = zone(pairs[i].zone);
        loom_tz_t *thin = slim(pairs[i].zone, pairs[i].footer, pairs[i].std, pairs[i].abbr);
        for (int64_t t = at("2010-01-01T00:00"); t < at("2036-01-01T00:00"); t += 3 * 3600 + 17) {
            const char *a1, *a2;
            int32_t o1 = loom_tz_offset(fat, t, &a1), o2 = loom_tz_offset(thin, t, &a2);
            char when[40];
            if (o1 != o2 || strcmp(a1, a2) != 0)
                fail_msg("%s at %s: fat %d %s, slim %d %s", pairs[i].zone, iso(t, when, 40), o1, a1,
                         o2, a2);
        }
        for (size_t e = 0; e < sizeof dst_exprs / sizeof dst_exprs[0]; e++) {
            loom_cron_t c = cron(dst_exprs[e]);
            int64_t t1 = at("2026-01-01T00:00"), t2 = t1;
            for (int k = 0; k < 2000; k++) {
                t1 = loom_cron_next(&c, fat, t1);
                t2 = loom_cron_next(&c, thin, t2);
                char w1[40], w2[40];
                if (t1 != t2)
                    fail_msg("\"%s\" in %s: fat %s, slim %s", dst_exprs[e], pairs[i].zone,
                             iso(t1, w1, 40), iso(t2, w2, 40));
            }
        }
        loom_tz_free(&fat);
        loom_tz_free(&thin);
    }
    /* The contract holds from the footer alone. */
    loom_tz_t *ny = slim("America/New_York", "EST5EDT,M3.2.0,M11.1.0", -18000, "EST");
    assert_int_equal(count_fires("*/15 * * * *", ny, "2026-03-08"), 92);
    assert_int_equal(count_fires("*/15 * * * *", ny, "2026-11-01"), 100);
    assert_int_equal(count_fires("30 1 * * *", ny, "2026-11-01"), 1);
    loom_tz_free(&ny);
}

static void test_footer_rules(void **state)
{
    (void)state;
    /* DST all year: starts Jan 1 00:00, ends Dec 31 25:00 = the next start. */
    loom_tz_t *tz = slim("X/AllYear", "EST5EDT,0/0,J365/25", -18000, "EST");
    const char *abbr;
    for (int64_t t = at("2026-01-01T00:00"); t < at("2028-01-01T00:00"); t += 86400 / 3) {
        assert_int_equal(loom_tz_offset(tz, t, &abbr), -14400);
        assert_string_equal(abbr, "EDT");
    }
    loom_tz_free(&tz);
    /* A fixed offset with a quoted name, and one with seconds. */
    tz = slim("X/India", "<+0530>-5:30", 19800, "+0530");
    assert_int_equal(loom_tz_offset(tz, at("2030-06-01T00:00"), &abbr), 19800);
    assert_string_equal(abbr, "+0530");
    loom_tz_free(&tz);
    /* Jn and n dates; no rule given at all means the US rule. */
    tz = slim("X/Julian", "AAA3BBB,J60/0,300/0", -10800, "AAA");
    assert_int_equal(loom_tz_offset(tz, at("2028-03-01T02:59"), NULL), -10800); /* leap year */
    assert_int_equal(loom_tz_offset(tz, at("2028-03-01T03:00"), NULL), -7200);  /* J60 = Mar 1 */
    assert_int_equal(loom_tz_offset(tz, at("2028-10-27T01:59"), NULL), -7200);  /* day 300 */
    assert_int_equal(loom_tz_offset(tz, at("2028-10-27T02:00"), NULL), -10800);
    loom_tz_free(&tz);
    tz = slim("X/Default", "EST5EDT", -18000, "EST");
    assert_int_equal(loom_tz_offset(tz, at("2026-07-01T00:00"), NULL), -14400);
    loom_tz_free(&tz);
}

static void test_tzif_versions_and_damage(void **state)
{
    (void)state;
    /* A v1 file: 32-bit transitions, no footer; the last type lasts forever. */
    int64_t times[] = {at("2020-03-01T00:00"), at("2020-10-01T00:00")};
    unsigned char idx[] = {1, 0};
    type_spec types[] = {{3600, 0, 0}, {7200, 1, 4}};
    bytes o;
    tzif(&o, '\0', times, idx, 2, types, 2, "AAA\0BBB", 8, NULL, 0);
    loom_tz_t *tz = NULL;
    char why[200] = "";
    assert_int_equal(loom_tz_parse("X/V1", o.b, o.n, &tz, why, sizeof why), 0);
    const char *abbr;
    assert_int_equal(loom_tz_offset(tz, at("2019-01-01T00:00"), &abbr), 3600);
    assert_string_equal(abbr, "AAA");
    assert_int_equal(loom_tz_offset(tz, at("2020-06-01T00:00"), &abbr), 7200);
    assert_string_equal(abbr, "BBB");
    assert_int_equal(loom_tz_offset(tz, at("2090-06-01T00:00"), &abbr), 3600);
    loom_tz_free(&tz);
    /* v3 with transitions and a footer: the table, then the rule. */
    int64_t eu[] = {at("2020-03-29T01:00"), at("2020-10-25T01:00")};
    tzif(&o, '3', eu, idx, 2, types, 2, "AAA\0BBB", 8, "AAA-1BBB,M3.5.0,M10.5.0/3", 0);
    assert_int_equal(loom_tz_parse("X/V3", o.b, o.n, &tz, why, sizeof why), 0);
    assert_int_equal(loom_tz_offset(tz, at("2020-01-01T00:00"), NULL), 3600); /* type 0 */
    assert_int_equal(loom_tz_offset(tz, at("2020-06-01T00:00"), NULL), 7200);
    assert_int_equal(loom_tz_offset(tz, at("2021-01-01T00:00"), NULL), 3600);
    assert_int_equal(loom_tz_offset(tz, at("2021-06-01T00:00"), NULL), 7200); /* the rule */
    loom_tz_period_t p;
    loom_tz_period(tz, at("2020-12-01T00:00"), &p);
    assert_int_equal(p.start, at("2020-10-25T01:00")); /* the table's last change... */
    assert_int_equal(p.end, at("2021-03-28T01:00"));   /* ...then the rule's next */
    assert_int_equal(p.prev_off, 7200);
    assert_int_equal(p.off, 3600);
    loom_tz_free(&tz);

    static const struct {
        const char *what, *why;
    } damage[] = {
        {"short", "not a TZif file"},
        {"truncated", "truncated TZif data"},
        {"leap", "it counts leap seconds (a \"right/\" zone); use the plain zone"},
        {"footer", "bad TZ string \"EST5EDT,M13.1.0,M11.1.0\" in the footer"},
        {"nofooter", "missing TZ string footer"},
        {"order", "transition times out of order"},
        {"badidx", "a transition names no type"},
    };
    for (size_t i = 0; i < sizeof damage / sizeof damage[0]; i++) {
        const char *w = damage[i].what;
        size_t len;
        if (strcmp(w, "short") == 0) {
            memcpy(o.b, "TZif2", 5);
            o.n = 20;
        } else if (strcmp(w, "leap") == 0) {
            tzif(&o, '2', times, idx, 2, types, 2, "AAA\0BBB", 8, "", 1);
        } else if (strcmp(w, "footer") == 0) {
            tzif(&o, '2', times, idx, 2, types, 2, "AAA\0BBB", 8, "EST5EDT,M13.1.0,M11.1.0", 0);
        } else if (strcmp(w, "order") == 0) {
            int64_t back[] = {times[1], times[0]};
            tzif(&o, '2', back, idx, 2, types, 2, "AAA\0BBB", 8, "", 0);
        } else if (strcmp(w, "badidx") == 0) {
            unsigned char bad_idx[] = {0, 2};
            tzif(&o, '2', times, bad_idx, 2, types, 2, "AAA\0BBB", 8, "", 0);
        } else {
            tzif(&o, '2', times, idx, 2, types, 2, "AAA\0BBB", 8, "", 0);
            o.n -= strcmp(w, "truncated") == 0 ? 10 : 2; /* "nofooter": drop "\n\n" */
        }
        len = o.n;
        tz = (loom_tz_t *)&tz;
        int rc = loom_tz_parse("X/Bad", o.b, len, &tz, why, sizeof why);
        if (rc != LOOM_EPARSE || strcmp(why, damage[i].why) != 0 || tz)
            fail_msg("%s: rc %d, why %s", w, rc, why);
        /* Every shorter prefix fails cleanly too (ASan watches the reads). */
        for (size_t cut = 0; cut < len; cut += 7) {
            assert_int_equal(loom_tz_parse("X/Bad", o.b, cut, &tz, why, sizeof why), LOOM_EPARSE);
            assert_null(tz);
        }
    }
}

/* ---- speed ---- */

static void test_next_speed(void **state)
{
    (void)state;
    static const struct {
        const char *expr, *zone;
    } cases[] = {
        {"*/15 * * * *", "America/New_York"}, {"0 3 * * *", "Europe/Berlin"},
        {"0 0 13 * 5", "America/New_York"},   {"0 0 29 2 *", "America/New_York"},
        {"30 2 * * *", "America/New_York"},   {"0 0 30 2 *", "UTC"},
        {"0 9 * * MON-FRI", "Asia/Kolkata"},  {"0 0 1 1 *", "Australia/Lord_Howe"},
        {"*/15 * * * *", "slim New York"},    {"0 0 29 2 *", "slim New York"},
    };
    enum { CALLS = 20000 };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        /* "slim": the footer rule alone, evaluated on every period lookup. */
        loom_tz_t *tz = strncmp(cases[i].zone, "slim ", 5) == 0
                            ? slim("America/New_York", "EST5EDT,M3.2.0,M11.1.0", -18000, "EST")
                            : zone(cases[i].zone);
        loom_cron_t c = cron(cases[i].expr);
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        int64_t t = at("2026-01-01T00:00"), sink = 0;
        for (int k = 0; k < CALLS; k++) {
            /* Start points 6 hours 7 minutes apart, over almost 4 years. */
            int64_t r = loom_cron_next(&c, tz, t + (int64_t)k * (6 * 3600 + 7 * 60));
            sink += r;
        }
        clock_gettime(CLOCK_MONOTONIC, &b);
        double us =
            ((double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec)) / 1e3 / CALLS;
        print_message("next(\"%s\", %s): %.2f us per call\n", cases[i].expr, cases[i].zone, us);
        /* Minute-by-minute search would take milliseconds for the yearly
         * ones; this bound is loose enough for a sanitizer build on a busy
         * machine and still catches that. */
        assert_true(us < 500.0);
        assert_true(sink != 12345);
        loom_tz_free(&tz);
    }
}

int main(void)
{
    struct stat st;
    if (stat(ZONEINFO "/America/New_York", &st) != 0) {
        fprintf(stderr, "test_cron: %s/America/New_York is missing: install tzdata\n", ZONEINFO);
        return 1;
    }
    setenv("TZDIR", ZONEINFO, 1); /* this test process only: the zones under test */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_fields),       cmocka_unit_test(test_parse_macros),
        cmocka_unit_test(test_parse_errors),       cmocka_unit_test(test_next_table),
        cmocka_unit_test(test_dst_counts),         cmocka_unit_test(test_dst_reference),
        cmocka_unit_test(test_calendar_reference), cmocka_unit_test(test_tz_offsets),
        cmocka_unit_test(test_extremes),           cmocka_unit_test(test_tz_periods_and_local),
        cmocka_unit_test(test_tz_errors),          cmocka_unit_test(test_slim_footer),
        cmocka_unit_test(test_footer_rules),       cmocka_unit_test(test_tzif_versions_and_damage),
        cmocka_unit_test(test_next_speed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
