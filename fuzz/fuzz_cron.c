/* Cron expressions (DAG schedules, `loom cron`), and the next fire time of
 * whatever parses, in UTC and in a zone with daylight-saving changes. */
#include "loom/cron.h"
#include "loom/tz.h"

#include <stdlib.h>
#include <string.h>

static loom_tz_t *utc, *zone;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char why[256];
    if (loom_tz_load("UTC", &utc, why, sizeof why) != 0) abort();
    if (loom_tz_load("Europe/London", &zone, why, sizeof why) != 0) zone = NULL;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > LOOM_CRON_MAX_LEN + 16) return 0;
    char *expr = malloc(size + 1);
    memcpy(expr, data, size);
    expr[size] = '\0';
    loom_cron_t c;
    char why[256];
    if (loom_cron_parse(expr, &c, why, sizeof why) == 0) {
        static const int64_t after[] = {0, 1711846800 /* 2024-03-31 01:00 UTC */,
                                        1729990800 /* 2024-10-27 01:00 UTC */, 253402300000};
        for (size_t i = 0; i < sizeof after / sizeof *after; i++) {
            int64_t t = loom_cron_next(&c, utc, after[i]);
            if (t != -1 && t <= after[i]) abort();
            if (zone) {
                t = loom_cron_next(&c, zone, after[i]);
                if (t != -1 && t <= after[i]) abort();
            }
        }
    }
    free(expr);
    return 0;
}
