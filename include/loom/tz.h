/* Time zones for schedules, read from the system's TZif files (RFC 8536)
 * without the C library's global TZ state: no setenv("TZ"), no localtime,
 * so zones are plain values that any thread or test may hold side by side. */
#ifndef LOOM_TZ_H
#define LOOM_TZ_H

#include <stddef.h>
#include <stdint.h>

typedef struct loom_tz loom_tz_t;

/* Where zone files are looked for when $TZDIR is unset or empty. */
#define LOOM_TZ_DEFAULT_DIR "/usr/share/zoneinfo"
/* Zone files larger than this are refused (the largest real ones are ~4 KiB). */
#define LOOM_TZ_MAX_FILE (256 * 1024)

/* Loads a zone by IANA name: "UTC" and "Etc/UTC" are built in, any other
 * name is read from $TZDIR (or LOOM_TZ_DEFAULT_DIR). A name must not start
 * with '/' nor contain ".." and uses only letters, digits, '_', '+', '-'
 * and '/'. Returns 0, LOOM_EINVAL (a bad name), LOOM_ENOTFOUND (no such
 * zone) or LOOM_EPARSE (not a usable TZif file), with a sentence in why. */
int loom_tz_load(const char *name, loom_tz_t **out, char *why, size_t whylen);
/* The same from a given folder (NULL: $TZDIR or the default). */
int loom_tz_load_dir(const char *dir, const char *name, loom_tz_t **out, char *why, size_t whylen);
/* Parses TZif bytes (versions 1 to 4; the 64-bit data and the POSIX TZ
 * footer are used when present). name is kept for loom_tz_name(). */
int loom_tz_parse(const char *name, const void *data, size_t len, loom_tz_t **out, char *why,
                  size_t whylen);
void loom_tz_free(loom_tz_t **tz);

const char *loom_tz_name(const loom_tz_t *tz);

/* The offset from UTC in seconds (east positive) at instant t (unix
 * seconds), and in *abbr (if not NULL) its abbreviation ("EDT", "+0530"),
 * borrowed from tz. */
int32_t loom_tz_offset(const loom_tz_t *tz, int64_t t, const char **abbr);

/* The stretch of time around an instant during which the offset stays the
 * same: [start, end), where start is the transition into it (INT64_MIN when
 * none is known) and end the next one (INT64_MAX when none comes). prev_off
 * is the offset just before start (equal to off when start is INT64_MIN):
 * prev_off < off means wall times were skipped at start, prev_off > off
 * that wall times repeat after it. A transition may leave the offset as it
 * was (only the abbreviation changes). */
typedef struct {
    int64_t start, end;
    int32_t off, prev_off;
    const char *abbr;
} loom_tz_period_t;

void loom_tz_period(const loom_tz_t *tz, int64_t t, loom_tz_period_t *p);

/* The instant at which the wall clock in tz first shows wall (local
 * seconds counted as if the zone were UTC). A wall time that is skipped
 * (spring forward) gives the transition instant after it; one that
 * happens twice (autumn) gives its first occurrence. */
int64_t loom_tz_from_local(const loom_tz_t *tz, int64_t wall);

/* Proleptic Gregorian calendar arithmetic on days since 1970-01-01
 * (Howard Hinnant's algorithms); any int32 year is safe. */
int64_t loom_tz_days_from_civil(int64_t y, int m, int d);
void loom_tz_civil_from_days(int64_t days, int64_t *y, int *m, int *d);

#endif
