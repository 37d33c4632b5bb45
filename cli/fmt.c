/* Text helpers for the command line; see fmt.h. */
#include "fmt.h"

#include "loom/util.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

const char *cli_jstr(const json_t *o, const char *key)
{
    /* json_object_get returns NULL for a non-object; json_string_value
     * returns NULL for a non-string. */
    return json_string_value(json_object_get(o, key));
}

bool cli_jint(const json_t *o, const char *key, int64_t *out)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v)) return false;
    *out = (int64_t)json_integer_value(v);
    return true;
}

json_t *cli_jarr(const json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_array(v) ? v : NULL;
}

json_t *cli_jobj(const json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_object(v) ? v : NULL;
}

void cli_fmt_ago(uint64_t now_ms, int64_t then_ms, char *out, size_t len)
{
    if (then_ms <= 0) {
        snprintf(out, len, "-");
        return;
    }
    /* A timestamp ahead of our clock is skew between two machines, not the
     * future: show it as now. */
    uint64_t s = (uint64_t)then_ms >= now_ms ? 0 : (now_ms - (uint64_t)then_ms) / 1000;
    if (s == 0)
        snprintf(out, len, "just now");
    else if (s < 60)
        snprintf(out, len, "%llus ago", (unsigned long long)s);
    else if (s < 3600)
        snprintf(out, len, "%llum ago", (unsigned long long)(s / 60));
    else if (s < 86400)
        snprintf(out, len, "%lluh ago", (unsigned long long)(s / 3600));
    else
        snprintf(out, len, "%llud ago", (unsigned long long)(s / 86400));
}

void cli_fmt_bytes(uint64_t n, char *out, size_t len)
{
    static const char *const units[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    if (n < 1024) {
        snprintf(out, len, "%llu B", (unsigned long long)n);
        return;
    }
    double v = (double)n / 1024.0;
    size_t u = 0;
    while (v >= 1024.0 && u + 1 < sizeof units / sizeof units[0]) {
        v /= 1024.0;
        u++;
    }
    snprintf(out, len, "%.1f %s", v, units[u]);
}

void cli_fmt_span(int64_t start_ms, int64_t end_ms, uint64_t now_ms, char *out, size_t len)
{
    if (start_ms <= 0) {
        snprintf(out, len, "-");
        return;
    }
    uint64_t end = end_ms > 0 ? (uint64_t)end_ms : now_ms;
    uint64_t ms = end > (uint64_t)start_ms ? end - (uint64_t)start_ms : 0;
    loom_format_duration(ms, out, len);
}

void cli_fmt_exit(const json_t *task, char *out, size_t len)
{
    int64_t v;
    if (cli_jint(task, "signal", &v) && v > 0 && v < 256) {
        const char *abbrev = sigabbrev_np((int)v);
        if (abbrev)
            snprintf(out, len, "SIG%s", abbrev);
        else
            snprintf(out, len, "signal %lld", (long long)v);
    } else if (cli_jint(task, "exit_code", &v)) {
        snprintf(out, len, "%lld", (long long)v);
    } else {
        snprintf(out, len, "-");
    }
}

char *cli_url_escape(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    loom_buf_t b = {0};
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        unsigned char c = *p;
        bool plain = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                     c == '-' || c == '.' || c == '_' || c == '~';
        if (plain) {
            loom_buf_append(&b, p, 1);
        } else {
            char enc[3] = {'%', hex[c >> 4], hex[c & 15]};
            loom_buf_append(&b, enc, 3);
        }
    }
    return loom_buf_steal(&b);
}

char *cli_url_normalize(const char *s)
{
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == '/') n--;
    if (strstr(s, "://")) return loom_xstrndup(s, n);
    return loom_xasprintf("http://%.*s", (int)n, s);
}
