/* Fault points for tests: see fault.h. The armed point and its countdown are
 * process-wide statics rather than fields of loom_sched_t: the crash they
 * cause is process-wide too, and a static keeps an unarmed point down to one
 * compare in the hot paths (flush, on_finished). */
#include "fault.h"

#include "loom/err.h"
#include "loom/log.h"
#include "loom/util.h"

#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static const char *const point_names[LOOM_FAULT_N_POINTS] = {
    [LOOM_FAULT_AFTER_COMMIT_BEFORE_SEND] = "after_commit_before_send",
    [LOOM_FAULT_AFTER_RESULT_BEFORE_COMMIT] = "after_result_before_commit",
};

static int armed = -1; /* the armed point, or -1 */
static uint64_t passes_left;

int loom_fault_setup(const char *spec, char *why, size_t whylen)
{
    armed = -1;
    passes_left = 0;
    if (!spec || !*spec) return 0;
    const char *colon = strchr(spec, ':');
    int64_t n;
    if (!colon || loom_parse_i64(colon + 1, 1, INT64_MAX, &n) != 0) {
        snprintf(why, whylen, "LOOM_FAULT=\"%s\": want POINT:N with N >= 1", spec);
        return LOOM_EINVAL;
    }
    size_t len = (size_t)(colon - spec);
    for (int p = 0; p < LOOM_FAULT_N_POINTS; p++) {
        if (strlen(point_names[p]) == len && memcmp(point_names[p], spec, len) == 0) {
            armed = p;
            passes_left = (uint64_t)n;
            LOG_WARN("fault injection armed: SIGKILL at pass %lld of %s", (long long)n,
                     point_names[p]);
            return 0;
        }
    }
    int at = snprintf(why, whylen, "LOOM_FAULT=\"%s\": unknown point \"%.*s\"; known:", spec,
                      (int)len, spec);
    for (int p = 0; p < LOOM_FAULT_N_POINTS && at > 0 && (size_t)at < whylen; p++)
        at += snprintf(why + at, whylen - (size_t)at, " %s", point_names[p]);
    return LOOM_EINVAL;
}

void loom_fault_reached(loom_fault_point point)
{
    if ((int)point != armed) return;
    if (--passes_left > 0) return;
    LOG_WARN("fault injection: SIGKILL at %s", point_names[point]);
    raise(SIGKILL);
}
