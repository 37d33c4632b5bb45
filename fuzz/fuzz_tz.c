/* TZif files (RFC 8536, with POSIX TZ footers), then every question loom
 * asks of a zone, at ordinary and extreme instants. */
#include "loom/cron.h"
#include "loom/tz.h"

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    loom_tz_t *tz = NULL;
    char why[256];
    if (loom_tz_parse("fuzz", data, size, &tz, why, sizeof why) != 0) {
        if (tz) abort();
        return 0;
    }
    static const int64_t at[] = {INT64_MIN / 2, -62135596800, -1,         0,
                                 1711846800,    1729990800,   2147483647, 253402300799,
                                 INT64_MAX / 2};
    for (size_t i = 0; i < sizeof at / sizeof *at; i++) {
        const char *abbr = NULL;
        (void)loom_tz_offset(tz, at[i], &abbr);
        loom_tz_period_t p;
        loom_tz_period(tz, at[i], &p);
        (void)loom_tz_from_local(tz, at[i]);
    }
    loom_cron_t c;
    if (loom_cron_parse("*/30 1-3 * * *", &c, why, sizeof why) != 0) abort();
    int64_t t = loom_cron_next(&c, tz, 1711846800);
    if (t != -1 && t <= 1711846800) abort();
    (void)loom_tz_name(tz);
    loom_tz_free(&tz);
    return 0;
}
