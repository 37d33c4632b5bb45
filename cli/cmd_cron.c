/* `loom cron EXPR [--tz ZONE] [-n N] [--from TIME]`: when a schedule would
 * fire, offline, with the same parser and zone code loomd uses. */
#include "cli.h"

#include "loom/cron.h"
#include "loom/tz.h"
#include "loom/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_COUNT 1000

/* Reads exactly n digits as a number, or returns -1. */
static int digits(const char **s, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++, (*s)++) {
        if (**s < '0' || **s > '9') return -1;
        v = v * 10 + (**s - '0');
    }
    return v;
}

static int month_days(int64_t y, int m)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : days[m - 1];
}

/* "Z", "+HH:MM", "-HHMM" after a time; seconds east of UTC. */
static bool utc_offset(const char *s, int32_t *off)
{
    if ((s[0] == 'Z' || s[0] == 'z') && !s[1]) {
        *off = 0;
        return true;
    }
    if (s[0] != '+' && s[0] != '-') return false;
    int sign = s[0] == '-' ? -1 : 1;
    s++;
    int h = digits(&s, 2), m = 0;
    if (*s == ':') s++;
    if (*s) m = digits(&s, 2);
    if (h < 0 || h > 23 || m < 0 || m > 59 || *s) return false;
    *off = sign * (h * 3600 + m * 60);
    return true;
}

/* --from: "@SECONDS", RFC 3339 with Z or an offset, or a wall time in tz
 * ("2026-03-08 00:00", "2026-03-08T00:00:00", "2026-03-08"). A skipped
 * wall time means the change that skipped it; a repeated one its first
 * occurrence. */
static bool parse_from(const char *s, const loom_tz_t *tz, int64_t *out)
{
    if (s[0] == '@') return loom_parse_i64(s + 1, -62135596800LL, 253402300799LL, out) == 0;
    int y = digits(&s, 4), mo, d, h = 0, mi = 0, sec = 0;
    if (y < 1 || *s++ != '-' || (mo = digits(&s, 2)) < 1 || mo > 12 || *s++ != '-' ||
        (d = digits(&s, 2)) < 1 || d > month_days(y, mo))
        return false;
    if (*s == 'T' || *s == 't' || *s == ' ') {
        s++;
        if ((h = digits(&s, 2)) < 0 || h > 23 || *s++ != ':' || (mi = digits(&s, 2)) < 0 || mi > 59)
            return false;
        if (*s == ':' && (s++, (sec = digits(&s, 2)) < 0 || sec > 60)) return false;
        if (*s == '.' || *s == ',') /* fractions of a second: whole seconds suffice */
            for (s++; *s >= '0' && *s <= '9'; s++) {
            }
    }
    int64_t wall = loom_tz_days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec;
    if (!*s) {
        *out = loom_tz_from_local(tz, wall);
        return true;
    }
    int32_t off;
    if (!utc_offset(s, &off)) return false;
    *out = wall - off;
    return true;
}

static void format_offset(int32_t off, char *buf, size_t len)
{
    int a = off < 0 ? -off : off;
    if (a % 60)
        snprintf(buf, len, "%c%02d:%02d:%02d", off < 0 ? '-' : '+', a / 3600, a / 60 % 60, a % 60);
    else
        snprintf(buf, len, "%c%02d:%02d", off < 0 ? '-' : '+', a / 3600, a / 60 % 60);
}

/* "2026-03-08T07:00:00" for the wall clock showing t + off. */
static void format_wall(int64_t t, int32_t off, char sep, char *buf, size_t len)
{
    int64_t w = t + off, days = w / 86400 - (w % 86400 < 0), y;
    int sod = (int)(w - days * 86400), m, d;
    loom_tz_civil_from_days(days, &y, &m, &d);
    snprintf(buf, len, "%04lld-%02d-%02d%c%02d:%02d:%02d", (long long)y, m, d, sep, sod / 3600,
             sod / 60 % 60, sod % 60);
}

static json_t *time_json(const loom_tz_t *tz, int64_t t)
{
    const char *abbr = NULL;
    int32_t off = loom_tz_offset(tz, t, &abbr);
    char utc[40], local[40], offs[16];
    format_wall(t, 0, 'T', utc, sizeof utc);
    format_wall(t, off, 'T', local, sizeof local);
    format_offset(off, offs, sizeof offs);
    char *local_full = loom_xasprintf("%s%s", local, offs);
    char *utc_full = loom_xasprintf("%sZ", utc);
    json_t *j = json_pack("{s:s, s:s, s:s, s:i, s:I}", "utc", utc_full, "local", local_full, "abbr",
                          abbr, "offset", (int)off, "unix", (json_int_t)t);
    free(local_full);
    free(utc_full);
    return j;
}

static void print_time(const loom_tz_t *tz, int64_t t)
{
    const char *abbr = NULL;
    int32_t off = loom_tz_offset(tz, t, &abbr);
    char utc[40], local[40], offs[16];
    format_wall(t, 0, 'T', utc, sizeof utc);
    format_wall(t, off, ' ', local, sizeof local);
    format_offset(off, offs, sizeof offs);
    printf("%s %s (%s)  %sZ\n", local, abbr, offs, utc);
}

/* The operands, joined by spaces: `loom cron 0 3 '*' '*' '*'` works too. */
static char *join_operands(int argc, char **argv, int from)
{
    loom_buf_t b = {0};
    for (int i = from; i < argc; i++) loom_buf_printf(&b, "%s%s", i > from ? " " : "", argv[i]);
    return loom_buf_steal(&b);
}

int cmd_cron(loom_cli_t *cli, int argc, char **argv)
{
    enum { OPT_TZ = 0x3000, OPT_FROM };
    static const struct option longopts[] = {{"tz", required_argument, NULL, OPT_TZ},
                                             {"from", required_argument, NULL, OPT_FROM},
                                             {"count", required_argument, NULL, 'n'},
                                             CLI_COMMON_LONGOPTS,
                                             {0}};
    const char *zone = "UTC", *from_text = NULL;
    int64_t count = 5;
    cli_opts_begin(cli, argv);
    int c;
    while ((c = getopt_long(argc, argv, "hn:", longopts, NULL)) != -1) {
        if (c == OPT_TZ) {
            zone = optarg;
        } else if (c == OPT_FROM) {
            from_text = optarg;
        } else if (c == 'n') {
            if (loom_parse_i64(optarg, 1, MAX_COUNT, &count) != 0)
                return cli_usage_error(cli, "-n wants a number 1-%d, got '%s'", MAX_COUNT, optarg);
        } else {
            int rc = cli_opt_common(cli, c);
            if (rc >= 0) return rc;
        }
    }
    if (optind >= argc) return cli_usage_error(cli, "missing EXPR, such as \"0 3 * * *\"");
    char why[256];
    loom_cron_t cron;
    char *expr = join_operands(argc, argv, optind);
    loom_tz_t *tz = NULL;
    int rc = CLI_EXIT_OK;
    int64_t from = (int64_t)(loom_unix_ms() / 1000);
    if (loom_cron_parse(expr, &cron, why, sizeof why) != 0 ||
        loom_tz_load(zone, &tz, why, sizeof why) != 0) {
        rc = cli_usage_error(cli, "%s", why);
        goto out;
    }
    if (from_text && !parse_from(from_text, tz, &from)) {
        rc = cli_usage_error(cli,
                             "--from wants 2026-03-08T00:00:00Z (RFC 3339), a wall time in %s "
                             "such as \"2026-03-08 00:00\", or @UNIXSECONDS; got '%s'",
                             zone, from_text);
        goto out;
    }
    json_t *times = json_array();
    int64_t t = from - 1, shown = 0; /* "from" itself counts */
    for (; shown < count && (t = loom_cron_next(&cron, tz, t)) != -1; shown++) {
        if (cli->json)
            json_array_append_new(times, time_json(tz, t));
        else
            print_time(tz, t);
    }
    if (cli->json) {
        json_t *doc = json_pack("{s:s, s:s, s:o, s:o}", "cron", expr, "timezone", zone, "from",
                                time_json(tz, from), "times", json_incref(times));
        cli_print_json(doc);
        json_decref(doc);
    }
    if (shown == 0) {
        cli_error("\"%s\" never fires: no time matches within %lld years", expr,
                  LOOM_CRON_HORIZON_S / (365LL * 86400));
        rc = CLI_EXIT_FAIL;
    }
    json_decref(times);
out:
    loom_tz_free(&tz);
    free(expr);
    return rc;
}
