/* Log sink for loom programs. */
#include "loom/log.h"
#include "loom/err.h"

#include <stdarg.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

loom_log_level loom_log_threshold = LOOM_LOG_INFO;
static FILE *log_sink;
static char log_component[32] = "loom";

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

void loom_log_set_component(const char *component)
{
    snprintf(log_component, sizeof log_component, "%s", component);
}

void loom_log_write(loom_log_level level, const char *fmt, ...)
{
    static const char *tags[] = {"DEBUG", "INFO", "WARN", "ERROR", "OFF"};
    FILE *out = log_sink ? log_sink : stderr;
    struct timeval tv;
    struct tm tm;
    char stamp[32];
    char line[2048];
    va_list ap;

    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    /* One fprintf per line so concurrent writers do not interleave mid-line. */
    fprintf(out, "%s.%03ldZ %-5s %s: %s\n", stamp, (long)(tv.tv_usec / 1000), tags[level],
            log_component, line);
    fflush(out);
}
