/* The HTTP API's answers that wait: task logs (read from offsets, or
 * followed while the attempt runs) and long polls on runs. Both suspend
 * their MHD connection and are resumed when the scheduler reports a change,
 * so no client polls and loomd keeps no thread per waiting client. */
#include "api_int.h"

#include "loom/err.h"
#include "loom/log.h"
#include "loom/util.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* --- logs ------------------------------------------------------------------------ */

static void follower_unlink(follow_t *f)
{
    if (f->prev)
        f->prev->next = f->next;
    else if (f->api->followers == f)
        f->api->followers = f->next;
    if (f->next) f->next->prev = f->prev;
    f->next = f->prev = NULL;
}

static void on_follow_free(void *cls)
{
    follow_t *f = cls;
    follower_unlink(f);
    if (f->fd >= 0) close(f->fd);
    free(f->ts);
    free(f);
}

/* Reloads the time index (it grows while the attempt runs). */
static void load_times(follow_t *f)
{
    char *path = loom_sched_log_ts_path(f->api->sched, f->run_id, f->attempt_id);
    char *data = NULL;
    size_t len = 0;
    if (loom_read_file(path, 64u << 20, &data, &len) == 0) {
        free(f->ts);
        f->n_ts = len / (2 * sizeof(uint64_t));
        f->ts = loom_xmalloc(f->n_ts * 2 * sizeof(uint64_t) + 1);
        memcpy(f->ts, data, f->n_ts * 2 * sizeof(uint64_t));
    }
    free(data);
    free(path);
}

/* When the byte at raw offset was stored: the last chunk starting at or
 * before it; 0 when unknown (a log written before the index existed). */
static uint64_t time_of(follow_t *f, uint64_t raw)
{
    if (f->n_ts == 0 || f->ts[2 * (f->n_ts - 1)] < raw) load_times(f);
    size_t lo = 0, hi = f->n_ts;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (f->ts[2 * mid] <= raw)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo ? f->ts[2 * (lo - 1) + 1] : 0;
}

#define TS_PREFIX 25 /* "2026-11-27T10:31:50.123Z " */

static void format_time(uint64_t ms, char out[64])
{
    if (!ms) {
        snprintf(out, 64, "%-24s ", "-");
        return;
    }
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    char base[24];
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, 64, "%.19s.%03uZ ", base, (unsigned)(ms % 1000));
}

/* Reads raw bytes at f->raw and writes them to buf with a time before each
 * line; returns the bytes written (0 at the end of what is there). */
static ssize_t read_stamped(follow_t *f, char *buf, size_t max)
{
    char raw[16384];
    size_t want = max / 2 < sizeof raw ? max / 2 : sizeof raw;
    if (want == 0) want = 1;
    ssize_t n = pread(f->fd, raw, want, (off_t)f->raw);
    if (n <= 0) return n;
    size_t out = 0, used = 0;
    while (used < (size_t)n) {
        if (f->line_start) {
            if (out + TS_PREFIX + 1 > max) break;
            char stamp[64];
            format_time(time_of(f, f->raw + used), stamp);
            memcpy(buf + out, stamp, TS_PREFIX);
            out += TS_PREFIX;
            f->line_start = false;
        }
        if (out + 1 > max) break;
        char c = raw[used++];
        buf[out++] = c;
        if (c == '\n') f->line_start = true;
    }
    f->raw += used;
    return (ssize_t)out;
}

/* Serves the log file from offset+pos. At the end of what is written so far
 * a followed log of a live attempt suspends its connection (returning 0 is
 * then allowed) until the scheduler reports more output. */
static ssize_t on_log_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    follow_t *f = cls;
    loom_api_t *api = f->api;
    if (f->fd < 0) {
        char *path = loom_sched_log_path(api->sched, f->run_id, f->attempt_id);
        f->fd = open(path, O_RDONLY | O_CLOEXEC);
        free(path);
    }
    if (f->fd >= 0) {
        ssize_t n = f->timestamps ? read_stamped(f, buf, max)
                                  : pread(f->fd, buf, max, (off_t)(f->offset + pos));
        if (n > 0) return n;
        if (n < 0) return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    if (f->follow && !api->closing && loom_sched_attempt_active(api->sched, f->attempt_id)) {
        f->suspended = true;
        MHD_suspend_connection(f->conn);
        return 0;
    }
    return MHD_CONTENT_READER_END_OF_STREAM;
}

enum MHD_Result api_get_log(req_t *r, const path_t *p)
{
    loom_api_t *api = r->api;
    uint64_t run_id, offset, number, follow, timestamps;
    if (!api_parse_id(p->segs[3], &run_id))
        return api_respond_error(r, MHD_HTTP_BAD_REQUEST, "run id \"%s\" is not a number",
                                 p->segs[3]);
    if (api_query_u64(r, "offset", INT64_MAX, 0, &offset) ||
        api_query_u64(r, "attempt", UINT32_MAX, 0, &number) ||
        api_query_u64(r, "follow", 1, 0, &follow) ||
        api_query_u64(r, "timestamps", 1, 0, &timestamps))
        return api_respond_error(r, MHD_HTTP_BAD_REQUEST,
                                 "offset and attempt must be non-negative integers, follow and "
                                 "timestamps 0 or 1");
    uint64_t attempt_id = 0;
    uint32_t found = 0;
    int err = loom_store_find_attempt(loom_sched_store(api->sched), run_id, p->segs[5],
                                      (uint32_t)number, &attempt_id, &found);
    if (err == LOOM_ENOTFOUND)
        return api_respond_error(r, MHD_HTTP_NOT_FOUND, "run %llu has no task \"%s\"",
                                 (unsigned long long)run_id, p->segs[5]);
    if (err) return api_respond_loom_error(r, err, "log");
    if (!attempt_id && number)
        return api_respond_error(r, MHD_HTTP_NOT_FOUND, "task \"%s\" has no attempt %llu",
                                 p->segs[5], (unsigned long long)number);
    if (!attempt_id && follow && !r->deadline) r->deadline = loom_mono_ms() + MAX_WAIT_S * 1000ull;
    if (!attempt_id && follow && r->deadline > loom_mono_ms() &&
        loom_sched_run_active(api->sched, run_id)) {
        /* Not started yet: wait for its first attempt like a long poll. */
        r->wait_run = run_id;
        api_waiter_add(api, r);
        return MHD_YES;
    }
    follow_t *f = loom_xcalloc(1, sizeof *f);
    f->api = api;
    f->conn = r->conn;
    f->run_id = run_id;
    f->attempt_id = attempt_id;
    f->offset = offset;
    f->fd = -1;
    f->follow = follow != 0 && attempt_id != 0;
    f->timestamps = timestamps != 0;
    f->raw = offset;
    f->line_start = true;
    f->next = api->followers;
    if (f->next) f->next->prev = f;
    api->followers = f;
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 64 * 1024,
                                                                  on_log_read, f, on_follow_free);
    char num[24];
    snprintf(num, sizeof num, "%u", found);
    MHD_add_response_header(resp, "Content-Type", "text/plain; charset=utf-8");
    MHD_add_response_header(resp, "X-Loom-Attempt", num);
    enum MHD_Result rc = api_queue(r, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return rc;
}

enum MHD_Result api_get_attempts(req_t *r, const path_t *p)
{
    uint64_t run_id;
    if (!api_parse_id(p->segs[3], &run_id))
        return api_respond_error(r, MHD_HTTP_BAD_REQUEST, "run id \"%s\" is not a number",
                                 p->segs[3]);
    json_t *out = NULL;
    int err = loom_store_json_attempts(loom_sched_store(r->api->sched), run_id, p->segs[5], &out);
    if (err == LOOM_ENOTFOUND)
        return api_respond_error(r, MHD_HTTP_NOT_FOUND, "run %llu has no task \"%s\"",
                                 (unsigned long long)run_id, p->segs[5]);
    return err ? api_respond_loom_error(r, err, "attempts") : api_respond_json(r, MHD_HTTP_OK, out);
}

/* --- long polls ---------------------------------------------------------------- */

void api_waiter_remove(loom_api_t *api, req_t *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else if (api->waiters == r)
        api->waiters = r->next;
    if (r->next) r->next->prev = r->prev;
    r->next = r->prev = NULL;
}

static void rearm_wait_timer(loom_api_t *api);

void api_waiter_add(loom_api_t *api, req_t *r)
{
    r->next = api->waiters;
    if (r->next) r->next->prev = r;
    api->waiters = r;
    r->suspended = true;
    MHD_suspend_connection(r->conn);
    rearm_wait_timer(api);
}

void api_waiter_resume(loom_api_t *api, req_t *r)
{
    api_waiter_remove(api, r);
    r->suspended = false;
    MHD_resume_connection(r->conn);
}

static void on_wait_timer(uv_timer_t *h)
{
    loom_api_t *api = h->data;
    uint64_t now = loom_mono_ms();
    req_t *r = api->waiters;
    while (r) {
        req_t *next = r->next;
        if (r->deadline <= now) api_waiter_resume(api, r);
        r = next;
    }
    rearm_wait_timer(api);
    api_run(api);
}

static void rearm_wait_timer(loom_api_t *api)
{
    uint64_t soonest = 0, now = loom_mono_ms();
    for (req_t *r = api->waiters; r; r = r->next)
        if (!soonest || r->deadline < soonest) soonest = r->deadline;
    if (!soonest) {
        uv_timer_stop(&api->wait_timer);
        return;
    }
    uv_timer_start(&api->wait_timer, on_wait_timer, soonest > now ? soonest - now : 0, 0);
}

void api_on_run_changed(void *ud, uint64_t run_id)
{
    loom_api_t *api = ud;
    bool resumed = false;
    req_t *r = api->waiters;
    while (r) {
        req_t *next = r->next;
        /* A log wait resumes on any change (its first attempt may exist now);
         * a run wait only once the run has ended. */
        if (r->wait_run == run_id) {
            api_waiter_resume(api, r);
            resumed = true;
        }
        r = next;
    }
    for (follow_t *f = api->followers; f; f = f->next) {
        if (f->run_id == run_id && f->suspended) {
            f->suspended = false;
            MHD_resume_connection(f->conn);
            resumed = true;
        }
    }
    if (api_events_changed(api, run_id)) resumed = true;
    if (resumed) {
        rearm_wait_timer(api);
        api_run(api);
    }
}

void api_on_task_output(void *ud, uint64_t run_id)
{
    api_on_run_changed(ud, run_id);
}
