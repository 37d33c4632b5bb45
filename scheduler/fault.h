/* Fault points, for tests only: LOOM_FAULT=POINT:N in loomd's environment
 * makes loomd kill itself with SIGKILL the N-th time it reaches POINT, so a
 * test can place a crash exactly at the instants where durability could
 * break (a commit whose messages were never sent, a result applied in memory
 * but never committed) instead of hoping a random kill lands there.
 *
 * Not a user feature: nothing outside the test suite should set LOOM_FAULT.
 * When it is unset, a fault point costs one call and a compare. */
#ifndef LOOM_FAULT_H
#define LOOM_FAULT_H

#include <stddef.h>

typedef enum {
    /* In the end-of-turn flush: a transaction with changes has just been
     * committed and its outbox (Dispatch, acks) not yet sent. */
    LOOM_FAULT_AFTER_COMMIT_BEFORE_SEND,
    /* In the Finished handler: the attempt's result is applied to memory
     * and to the open transaction, nothing of it committed yet. */
    LOOM_FAULT_AFTER_RESULT_BEFORE_COMMIT,
    LOOM_FAULT_N_POINTS
} loom_fault_point;

/* Arms the fault named by spec ("POINT:N", N >= 1), or disarms every point
 * when spec is NULL or empty. Returns 0, or LOOM_EINVAL with a message in
 * why naming the bad value. Called once, at startup. */
int loom_fault_setup(const char *spec, char *why, size_t whylen);

/* Counts one pass through point; on the armed pass, logs and dies with
 * SIGKILL (no flush, no atexit, no close: as abrupt as `kill -9`). */
void loom_fault_reached(loom_fault_point point);

#endif
