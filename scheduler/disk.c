/* Room on the state folder's filesystem. loomd keeps a reserve (--min-free)
 * so that what it has already promised -- results of attempts in flight,
 * cancellations, agents' liveness -- can always be committed: once free
 * space falls below the reserve it takes on no new work (no submits,
 * uploads, runs, dispatches or log bytes; the agents keep unacknowledged
 * log chunks and send them again), and picks up where it stopped once space
 * is back. A commit that fails anyway still stops loomd (scheduler.c):
 * acting on unrecorded state would break the guarantees. */
#include "sched_internal.h"

#include "loom/log.h"

#include <stdio.h>
#include <sys/statvfs.h>

#define DISK_DEFAULT_MIN_FREE (64ull << 20)
#define DISK_RECHECK_MS 250

static uint64_t min_free(const loom_sched_t *s)
{
    return s->cfg.min_free_bytes ? s->cfg.min_free_bytes : DISK_DEFAULT_MIN_FREE;
}

static void disk_check(loom_sched_t *s, uint64_t now)
{
    struct statvfs st;
    s->disk_checked_ms = now;
    if (statvfs(s->state_dir, &st) != 0) return; /* keep the last answer */
    uint64_t avail = (uint64_t)st.f_bavail * (uint64_t)st.f_frsize;
    bool low = avail < min_free(s);
    s->disk_free = avail;
    if (low && !s->disk_low)
        LOG_WARN("disk nearly full: %llu MiB free on %s, below the reserve of %llu MiB "
                 "(--min-free); taking on no new work until space is freed",
                 (unsigned long long)(avail >> 20), s->state_dir,
                 (unsigned long long)(min_free(s) >> 20));
    else if (!low && s->disk_low)
        LOG_INFO("disk space back: %llu MiB free on %s; work resumes",
                 (unsigned long long)(avail >> 20), s->state_dir);
    s->disk_was_low = s->disk_low;
    s->disk_low = low;
}

bool sched_disk_low(loom_sched_t *s)
{
    uint64_t now = sched_now(s);
    if (!s->disk_checked_ms || now - s->disk_checked_ms >= DISK_RECHECK_MS) disk_check(s, now);
    return s->disk_low;
}

/* Asked before taking on work from a client: always a fresh look. */
const char *loom_sched_disk_full(loom_sched_t *s, char *buf, size_t len)
{
    disk_check(s, sched_now(s));
    if (!s->disk_low) return NULL;
    snprintf(buf, len,
             "loomd's disk is nearly full: %llu MiB free on %s, below the reserve of %llu MiB "
             "(loomd --min-free); it takes on no new work until space is freed",
             (unsigned long long)(s->disk_free >> 20), s->state_dir,
             (unsigned long long)(min_free(s) >> 20));
    return buf;
}

void sched_disk_poll(loom_sched_t *s)
{
    disk_check(s, sched_now(s));
    if (s->disk_was_low && !s->disk_low) {
        s->disk_was_low = false;
        /* What waited for space: queued tasks and due triggers. */
        dispatch_ready(s);
        loom_sched_triggers_tick(s);
        sched_request_flush(s);
    }
}
