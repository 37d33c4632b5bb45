/* Logging: one macro that checks the level before formatting anything.
 * Lines are "TIME LEVEL component: message key=value ..." on stderr (or the
 * sink set by loom_log_set_sink). The sink and level are the only globals. */
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
