/* Cron expressions for schedule triggers: parsing, and the next fire time
 * in a time zone, with Vixie cron's rules and an exact contract for
 * daylight-saving changes (see loom_cron_next). Pure functions on values:
 * no globals, no clock, no allocation. */
#ifndef LOOM_CRON_H
#define LOOM_CRON_H

#include "loom/tz.h"

#include <stddef.h>
#include <stdint.h>

/* Flags: the field was written starting with '*' (Vixie cron's *_STAR). */
enum {
    LOOM_CRON_HOUR_STAR = 0x1, /* runs every hour: fires on both passes of a repeated hour */
    LOOM_CRON_DOM_STAR = 0x2,
    LOOM_CRON_DOW_STAR = 0x4,
};

typedef struct {
    uint64_t minutes; /* bit m: minute m, 0-59 */
    uint32_t hours;   /* bit h: hour h, 0-23 */
    uint32_t dom;     /* bit d: day of month d, 1-31 */
    uint16_t months;  /* bit m: month m, 1-12 */
    uint8_t dow;      /* bit d: day of week d, 0 (Sunday) - 6 */
    uint8_t flags;
} loom_cron_t;

/* The longest expression accepted; longer ones are parse errors. */
#define LOOM_CRON_MAX_LEN 1024
/* loom_cron_next looks this far ahead (8 years and a bit: far enough for
 * every leap day, 2100 included) before it gives up. */
#define LOOM_CRON_HORIZON_S (3000LL * 86400)

/* Parses five fields (minute hour day-of-month month day-of-week) with
 * lists, ranges, steps ("1-30/5", "5/10" = 5-59/10, or a step after "*"), names
 * JAN-DEC and SUN-SAT (any case), day-of-week 7 = Sunday, or a macro:
 * @hourly @daily @midnight @weekly @monthly @yearly @annually. Returns 0,
 * or LOOM_EPARSE with a message in why naming the field and the token:
 * `minute 61 out of range 0-59 in "61 * * * *"`. */
int loom_cron_parse(const char *expr, loom_cron_t *out, char *why, size_t whylen);

/* The first fire instant strictly after `after` (unix seconds) in tz, or
 * -1 when there is none within LOOM_CRON_HORIZON_S ("0 0 30 2 *"). Fire
 * times before 1970 are negative, so test for -1, not < 0 (-1 itself is
 * never a fire time: no zone's wall clock shows a whole minute then).
 * Instants outside the years 1-9999 have no fire times.
 *
 * Candidate times are wall-clock times in tz. Day of month and day of week
 * follow Vixie cron: when both are restricted (neither written starting
 * with '*') a day matches if either does. A wall time skipped by a
 * daylight-saving change fires once, at the transition (the first instant
 * after it); several skipped times fire once together. A wall time that
 * happens twice fires at its first occurrence only, except when the hour
 * field starts with '*' ("0 * * * *", or every 15 minutes of every hour):
 * such expressions fire at every real instant that matches, on both
 * passes, as Vixie cron and cronie do. */
int64_t loom_cron_next(const loom_cron_t *c, const loom_tz_t *tz, int64_t after);

#endif
