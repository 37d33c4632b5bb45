/* Log sink for loom programs. */
#include "loom/log.h"
#include "loom/err.h"

#include <stdarg.h>
#include <stdbool.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

loom_log_level loom_log_threshold = LOOM_LOG_INFO;
static FILE *log_sink;
static char log_component[32] = "loom";
static loom_log_format log_format = LOOM_LOG_TEXT;

void loom_log_set_level(loom_log_level level)
{
    loom_log_threshold = level;
}

int loom_log_parse_level(const char *s, loom_log_level *out)
{
    static const char *names[] = {"debug", "info", "warn", "error", "off"};
    for (int i = 0; i < 5; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = (loom_log_level)i;
            return 0;
        }
    }
    return LOOM_EINVAL;
}

void loom_log_set_sink(FILE *sink)
{
    log_sink = sink;
}

int loom_log_parse_format(const char *s, loom_log_format *out)
{
    if (strcmp(s, "text") == 0)
        *out = LOOM_LOG_TEXT;
    else if (strcmp(s, "json") == 0)
        *out = LOOM_LOG_JSON;
    else
        return LOOM_EINVAL;
    return 0;
}

void loom_log_set_format(loom_log_format format)
{
    log_format = format;
}

void loom_log_set_component(const char *component)
{
    snprintf(log_component, sizeof log_component, "%s", component);
}

/* A bounded writer: what does not fit is cut, the output stays terminated. */
typedef struct {
    char *p;
    size_t len, cap;
} out_t;

static void put(out_t *o, const char *s, size_t n)
{
    if (o->len + 1 >= o->cap) return;
    size_t room = o->cap - 1 - o->len;
    if (n > room) n = room;
    memcpy(o->p + o->len, s, n);
    o->len += n;
    o->p[o->len] = '\0';
}

/* A JSON string: quotes, backslashes and control bytes escaped; bytes
 * >= 0x80 are passed through (messages are UTF-8 or ASCII). */
static void put_json(out_t *o, const char *s, size_t n)
{
    put(o, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            put(o, esc, 2);
        } else if (c == '\n') {
            put(o, "\\n", 2);
        } else if (c == '\t') {
            put(o, "\\t", 2);
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            put(o, esc, 6);
        } else {
            put(o, (const char *)&s[i], 1);
        }
    }
    put(o, "\"", 1);
}

static bool key_char(char c, bool first)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
           (!first && ((c >= '0' && c <= '9') || c == '-' || c == '.'));
}

static bool reserved_key(const char *k, size_t n)
{
    static const char *const names[] = {"ts", "level", "component", "msg"};
    for (int i = 0; i < 4; i++)
        if (strlen(names[i]) == n && memcmp(names[i], k, n) == 0) return true;
    return false;
}

/* Each "key=value" word of the message (value up to the next space, or a
 * "quoted string") becomes a field; "msg" keeps the whole message. A key
 * seen twice keeps its first value, so every line is valid JSON. */
static void put_fields(out_t *o, const char *msg)
{
    const char *seen[32];
    size_t seen_len[32], n_seen = 0;
    for (const char *w = msg; *w;) {
        while (*w == ' ') w++;
        const char *k = w;
        size_t kn = 0;
        while (key_char(k[kn], kn == 0)) kn++;
        const char *end = k + kn;
        if (kn && *end == '=' && (k == msg || k[-1] == ' ')) {
            const char *v = end + 1, *ve;
            if (*v == '"') {
                ve = strchr(v + 1, '"');
                ve = ve ? ve + 1 : v + strlen(v);
            } else {
                ve = v + strcspn(v, " ");
            }
            bool dup = reserved_key(k, kn);
            for (size_t i = 0; i < n_seen && !dup; i++)
                dup = seen_len[i] == kn && memcmp(seen[i], k, kn) == 0;
            if (!dup && n_seen < 32) {
                seen[n_seen] = k;
                seen_len[n_seen++] = kn;
                put(o, ",", 1);
                put_json(o, k, kn);
                put(o, ":", 1);
                if (*v == '"' && ve - v >= 2 && ve[-1] == '"')
                    put_json(o, v + 1, (size_t)(ve - v - 2));
                else
                    put_json(o, v, (size_t)(ve - v));
            }
            w = ve;
            continue;
        }
        w += strcspn(w, " ");
    }
}

void loom_log_format_line(char *buf, size_t buflen, loom_log_format format, const char *stamp,
                          loom_log_level level, const char *component, const char *msg)
{
    static const char *tags[] = {"DEBUG", "INFO", "WARN", "ERROR", "OFF"};
    static const char *names[] = {"debug", "info", "warn", "error", "off"};
    if (format == LOOM_LOG_TEXT) {
        snprintf(buf, buflen, "%s %-5s %s: %s", stamp, tags[level], component, msg);
        return;
    }
    out_t o = {buf, 0, buflen};
    if (buflen) buf[0] = '\0';
    put(&o, "{\"ts\":", 6);
    put_json(&o, stamp, strlen(stamp));
    put(&o, ",\"level\":", 9);
    put_json(&o, names[level], strlen(names[level]));
    put(&o, ",\"component\":", 13);
    put_json(&o, component, strlen(component));
    put(&o, ",\"msg\":", 7);
    put_json(&o, msg, strlen(msg));
    put_fields(&o, msg);
    /* Cut short: end the object anyway rather than emit broken JSON. */
    if (o.len + 2 >= o.cap && buflen > 64) {
        o.len = 0;
        snprintf(buf, buflen,
                 "{\"ts\":\"%s\",\"level\":\"%s\",\"component\":\"%s\",\"msg\":\"(line too long "
                 "for JSON)\"}",
                 stamp, names[level], component);
        return;
    }
    put(&o, "}", 1);
}

void loom_log_write(loom_log_level level, const char *fmt, ...)
{
    FILE *out = log_sink ? log_sink : stderr;
    struct timeval tv;
    struct tm tm;
    char stamp[64];
    char when[32];
    char line[2048];
    char formatted[8192];
    va_list ap;

    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(stamp, sizeof stamp, "%s.%03ldZ", when, (long)(tv.tv_usec / 1000));
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    loom_log_format_line(formatted, sizeof formatted, log_format, stamp, level, log_component,
                         line);
    /* One fprintf per line so concurrent writers do not interleave mid-line. */
    fprintf(out, "%s\n", formatted);
    fflush(out);
}
