/* Logging: one macro that checks the level before formatting anything.
 * Lines are "TIME LEVEL component: message key=value ..." on stderr (or the
 * sink set by loom_log_set_sink), or in JSON format one object per line:
 * {"ts", "level", "component", "msg", and each key=value of the message as
 * a string field}. The sink, level and format are the only globals. */
#ifndef LOOM_LOG_H
#define LOOM_LOG_H

#include <stdio.h>

typedef enum {
    LOOM_LOG_DEBUG = 0,
    LOOM_LOG_INFO = 1,
    LOOM_LOG_WARN = 2,
    LOOM_LOG_ERROR = 3,
    LOOM_LOG_OFF = 4,
} loom_log_level;

extern loom_log_level loom_log_threshold;

void loom_log_set_level(loom_log_level level);
/* Parses "debug", "info", "warn", "error", "off"; returns 0 or LOOM_EINVAL. */
int loom_log_parse_level(const char *s, loom_log_level *out);
void loom_log_set_sink(FILE *sink);
typedef enum { LOOM_LOG_TEXT = 0, LOOM_LOG_JSON = 1 } loom_log_format;
/* Parses "text" or "json"; returns 0 or LOOM_EINVAL. */
int loom_log_parse_format(const char *s, loom_log_format *out);
void loom_log_set_format(loom_log_format format);
/* Formats one line (no trailing newline) as loom_log_write would; for tests. */
void loom_log_format_line(char *out, size_t outlen, loom_log_format format, const char *stamp,
                          loom_log_level level, const char *component, const char *msg);
void loom_log_set_component(const char *component);
void loom_log_write(loom_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define LOOM_LOG(level, ...)                                                                       \
    do {                                                                                           \
        if ((level) >= loom_log_threshold) loom_log_write((level), __VA_ARGS__);                   \
    } while (0)
#define LOG_DEBUG(...) LOOM_LOG(LOOM_LOG_DEBUG, __VA_ARGS__)
#define LOG_INFO(...) LOOM_LOG(LOOM_LOG_INFO, __VA_ARGS__)
#define LOG_WARN(...) LOOM_LOG(LOOM_LOG_WARN, __VA_ARGS__)
#define LOG_ERROR(...) LOOM_LOG(LOOM_LOG_ERROR, __VA_ARGS__)

#endif
