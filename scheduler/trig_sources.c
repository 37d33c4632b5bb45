/* Where firings come from: schedules (cron in a zone, with catch-up after
 * downtime) and data folders (a watcher, the files seen so far, batches).
 * Events come in through loom_sched_event (triggers.c). */
#include "triggers.h"

#include "loom/err.h"
#include "loom/log.h"

#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- schedules ---- */

static const char *const catchups[] = {"none", "latest", "all"};

int sched_trig_load(trig_pipe_t *tp, sched_trig_t *st, const json_t *spec, int index)
{
    loom_sched_t *s = tp->s;
    char why[256];
    memset(st, 0, sizeof *st);
    st->tp = tp;
    st->index = index;
    st->next_s = -1;
    st->cron_text = loom_xstrdup(json_string_value(json_object_get(spec, "cron")));
    st->tz_name = loom_xstrdup(json_string_value(json_object_get(spec, "timezone")));
    const char *c = json_string_value(json_object_get(spec, "catchup"));
    for (int i = 0; i < 3; i++)
        if (c && strcmp(c, catchups[i]) == 0) st->catchup = i;
    json_t *params = json_object_get(spec, "params");
    st->params = params ? json_incref(params) : json_object();
    const char *when = json_string_value(json_object_get(spec, "when"));
    st->when = when ? loom_xstrdup(when) : NULL;
    st->key = loom_xasprintf("%s|%s", st->cron_text, st->tz_name);
    if (loom_cron_parse(st->cron_text, &st->cron, why, sizeof why) != 0 ||
        loom_tz_load(st->tz_name, &st->tz, why, sizeof why) != 0) {
        LOG_ERROR("pipeline=%s schedule \"%s\" is off: %s", tp->name, st->cron_text, why);
        sched_trig_free(st);
        return LOOM_EINVAL;
    }
    int64_t now_s = (int64_t)(trig_now(s) / 1000);
    if (loom_store_schedule_get(s->store, tp->id, st->key, &st->last_fire_s) != 0) {
        /* New: it counts from now, not from the epoch. */
        st->last_fire_s = now_s;
        loom_store_schedule_set(s->store, tp->id, st->key, now_s);
    }
    st->next_s = loom_cron_next(&st->cron, st->tz, st->last_fire_s);
    return 0;
}

void sched_trig_free(sched_trig_t *st)
{
    free(st->key);
    free(st->cron_text);
    free(st->tz_name);
    free(st->when);
    json_decref(st->params);
    loom_tz_free(&st->tz);
    memset(st, 0, sizeof *st);
    st->next_s = -1;
}

static void iso_utc(int64_t t, char *out, size_t len)
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void sched_fire(loom_sched_t *s, sched_trig_t *st, int64_t at, const char *note)
{
    trig_pipe_t *tp = st->tp;
    char iso[32];
    iso_utc(at, iso, sizeof iso);
    firing_t f = {
        .kind = "schedule",
        .what =
            loom_xasprintf("schedule \"%s\" %s for %s%s", st->cron_text, st->tz_name, iso, note),
        .origin = json_pack("{s:s,s:i,s:s,s:s,s:s,s:I}", "kind", "schedule", "trigger", st->index,
                            "cron", st->cron_text, "timezone", st->tz_name, "scheduled_for", iso,
                            "scheduled_for_unix_ms", (json_int_t)at * 1000),
        .event = NULL,
        .params = json_incref(st->params)};
    char *seen = NULL;
    if (!trig_when(tp, st->when, NULL, st->params, &seen)) {
        char *why = loom_xasprintf("when: %s is false (%s)", st->when, seen ? seen : "");
        trig_decide(s, tp, "schedule", f.what, "filtered", 0, why);
        free(why);
        firing_free(&f);
    } else {
        trig_admit(s, tp, &f, NULL);
    }
    free(seen);
}

/* Fire times looked at after downtime, at most; beyond it they are counted
 * as missed without being listed. */
#define CATCHUP_SCAN_MAX 100000
#define CATCHUP_ALL_MAX 100

int64_t sched_trig_tick(loom_sched_t *s, sched_trig_t *st, uint64_t now_ms)
{
    trig_pipe_t *tp = st->tp;
    int64_t now_s = (int64_t)(now_ms / 1000);
    if (st->next_s < 0 || st->next_s > now_s) return st->next_s;
    /* Every fire time in (last, now]: normally one; more after downtime. */
    int64_t due[CATCHUP_ALL_MAX], t = st->next_s, latest = t;
    size_t n = 0, total = 0;
    while (t >= 0 && t <= now_s && total < CATCHUP_SCAN_MAX) {
        if (n < CATCHUP_ALL_MAX) due[n++] = t;
        latest = t;
        total++;
        t = loom_cron_next(&st->cron, st->tz, t);
    }
    if (total == CATCHUP_SCAN_MAX) t = loom_cron_next(&st->cron, st->tz, now_s);
    size_t fired = 0;
    if (tp->paused) {
        char why[96];
        snprintf(why, sizeof why, "the pipeline is paused (%zu fire time%s)", total,
                 total == 1 ? "" : "s");
        char *what = loom_xasprintf("schedule \"%s\" %s", st->cron_text, st->tz_name);
        trig_decide(s, tp, "schedule", what, "skipped", 0, why);
        free(what);
        fired = total;
    } else if (st->catchup == 2) { /* all */
        for (size_t i = 0; i < n; i++) sched_fire(s, st, due[i], n > 1 ? " (catchup: all)" : "");
        fired = n;
    } else if (st->catchup == 1 || latest >= now_s - TRIG_GRACE_S) { /* latest, or on time */
        sched_fire(s, st, latest, total > 1 ? " (catchup: latest)" : "");
        fired = 1;
    }
    if (total > fired) {
        char why[160];
        snprintf(why, sizeof why,
                 "%zu%s fire time%s passed while loomd was not running (catchup: %s)",
                 total - fired, total == CATCHUP_SCAN_MAX ? "+" : "", total - fired == 1 ? "" : "s",
                 catchups[st->catchup]);
        char *what = loom_xasprintf("schedule \"%s\" %s", st->cron_text, st->tz_name);
        trig_decide(s, tp, "schedule", what, "missed", 0, why);
        free(what);
    }
    st->last_fire_s = latest;
    loom_store_schedule_set(s->store, tp->id, st->key, latest);
    st->next_s = t;
    return t;
}

/* ---- data ---- */

static bool batch_has(const json_t *batch, const char *path)
{
    size_t i;
    json_t *p;
    json_array_foreach(batch, i, p) if (strcmp(json_string_value(p), path) == 0) return true;
    return false;
}

static void data_arrived(loom_sched_t *s, data_trig_t *dt, const char *path, uint64_t size,
                         int64_t mtime_ns)
{
    trig_pipe_t *tp = dt->tp;
    uint64_t old_size;
    int64_t old_mtime;
    if (loom_store_data_file_get(s->store, tp->id, dt->key, path, &old_size, &old_mtime) == 0 &&
        old_size == size && old_mtime == mtime_ns)
        return; /* seen before: this version already had its run */
    uint64_t now = trig_now(s);
    loom_store_data_file_put(s->store, tp->id, dt->key, path, size, mtime_ns, now);
    if (!batch_has(dt->batch, path)) {
        if (json_array_size(dt->batch) == 0) dt->batch_since = now;
        json_array_append_new(dt->batch, json_string(path));
    }
    LOG_DEBUG("data file arrived pipeline=%s path=%s size=%llu", tp->name, path,
              (unsigned long long)size);
    data_trig_tick(s, dt, now, false);
    trig_arm_timer(s);
    sched_request_flush(s);
}

static void on_watch_file(void *ud, const char *path, uint64_t size, int64_t mtime_ns,
                          const char *how)
{
    data_trig_t *dt = ud;
    (void)how;
    data_arrived(dt->tp->s, dt, path, size, mtime_ns);
}

static void on_watch_error(void *ud, const char *why)
{
    data_trig_t *dt = ud;
    free(dt->error);
    dt->error = loom_xstrdup(why);
    LOG_WARN("pipeline=%s data trigger %s: %s", dt->tp->name, dt->path, why);
}

static int load_waiting(void *ud, const char *path)
{
    data_trig_t *dt = ud;
    if (!batch_has(dt->batch, path)) json_array_append_new(dt->batch, json_string(path));
    return 0;
}

int data_trig_load(trig_pipe_t *tp, data_trig_t *dt, const json_t *spec, int index)
{
    loom_sched_t *s = tp->s;
    memset(dt, 0, sizeof *dt);
    dt->tp = tp;
    dt->index = index;
    dt->path = loom_xstrdup(json_string_value(json_object_get(spec, "path")));
    dt->glob = loom_xstrdup(json_string_value(json_object_get(spec, "glob")));
    dt->recursive = json_is_true(json_object_get(spec, "recursive"));
    dt->settle_ms = (uint64_t)json_integer_value(json_object_get(spec, "settle_ms"));
    json_t *batch = json_object_get(spec, "batch");
    dt->max_files = (uint32_t)json_integer_value(json_object_get(batch, "max_files"));
    if (dt->max_files == 0) dt->max_files = 1;
    dt->max_wait_ms = (uint64_t)json_integer_value(json_object_get(batch, "max_wait_ms"));
    json_t *params = json_object_get(spec, "params");
    dt->params = params ? json_incref(params) : json_object();
    const char *when = json_string_value(json_object_get(spec, "when"));
    dt->when = when ? loom_xstrdup(when) : NULL;
    dt->key = loom_xasprintf("%s|%s|%d", dt->path, dt->glob, dt->recursive);
    dt->batch = json_array();
    loom_store_data_files_waiting(s->store, tp->id, dt->key, load_waiting, dt);
    if (json_array_size(dt->batch)) dt->batch_since = trig_now(s);
    if (strncmp(dt->path, "s3://", 5) == 0) return 0; /* arrivals come by notification */
    char why[256];
    loom_watch_config_t cfg = {.path = dt->path,
                               .glob = dt->glob,
                               .recursive = dt->recursive,
                               .settle_ms = dt->settle_ms,
                               .rescan_ms = s->cfg.data_rescan_ms ? s->cfg.data_rescan_ms
                                                                  : LOOM_WATCH_RESCAN_DEFAULT,
                               .wall = s->cfg.wall,
                               .on_file = on_watch_file,
                               .on_error = on_watch_error,
                               .ud = dt};
    dt->watch = loom_watch_start(s->loop, &cfg, why, sizeof why);
    if (!dt->watch) {
        dt->error = loom_xstrdup(why);
        LOG_ERROR("pipeline=%s cannot watch %s: %s", tp->name, dt->path, why);
    }
    return 0;
}

void data_trig_free(data_trig_t *dt)
{
    loom_watch_stop(dt->watch);
    free(dt->key);
    free(dt->path);
    free(dt->glob);
    free(dt->when);
    free(dt->error);
    json_decref(dt->params);
    json_decref(dt->batch);
    memset(dt, 0, sizeof *dt);
}

/* Starts a run for the first max_files waiting files. */
static void data_fire(loom_sched_t *s, data_trig_t *dt, uint64_t now)
{
    trig_pipe_t *tp = dt->tp;
    size_t take = json_array_size(dt->batch);
    if (take > dt->max_files) take = dt->max_files;
    json_t *files = json_array(), *rest = json_array();
    for (size_t i = 0; i < json_array_size(dt->batch); i++)
        json_array_append(i < take ? files : rest, json_array_get(dt->batch, i));
    json_decref(dt->batch);
    dt->batch = rest;
    dt->batch_since = json_array_size(rest) ? now : 0;
    json_t *event = json_pack("{s:O}", "files", files);
    firing_t f = {.kind = "data",
                  .what = loom_xasprintf("data %s: %zu file%s, first %s", dt->path, take,
                                         take == 1 ? "" : "s",
                                         json_string_value(json_array_get(files, 0))),
                  .origin = json_pack("{s:s,s:i,s:s,s:I}", "kind", "data", "trigger", dt->index,
                                      "path", dt->path, "files", (json_int_t)take),
                  .event = event,
                  .params = json_incref(dt->params)};
    uint64_t run_id = 0;
    char *seen = NULL;
    if (!trig_when(tp, dt->when, event, dt->params, &seen)) {
        char *why = loom_xasprintf("when: %s is false (%s)", dt->when, seen ? seen : "");
        trig_decide(s, tp, "data", f.what, "filtered", 0, why);
        free(why);
        firing_free(&f);
    } else {
        run_id = trig_admit(s, tp, &f, NULL);
    }
    free(seen);
    loom_store_data_files_done(s->store, tp->id, dt->key, files, run_id);
    json_decref(files);
}

uint64_t data_trig_tick(loom_sched_t *s, data_trig_t *dt, uint64_t now, bool force)
{
    while (json_array_size(dt->batch) && !dt->tp->paused) {
        bool full = json_array_size(dt->batch) >= dt->max_files;
        bool waited = dt->max_wait_ms && now >= dt->batch_since + dt->max_wait_ms;
        if (!full && !waited && !force)
            return dt->max_wait_ms ? dt->batch_since + dt->max_wait_ms : 0;
        data_fire(s, dt, now);
        force = false;
    }
    return 0;
}

/* ---- arrivals reported from outside (S3 notifications) ---- */

/* A stable 63-bit number for a version tag (an ETag), stored where a local
 * file keeps its mtime. */
static int64_t tag_number(const char *tag)
{
    uint64_t h = 1469598103934665603ull;
    for (const char *p = tag ? tag : ""; *p; p++) h = (h ^ (uint8_t)*p) * 1099511628211ull;
    return (int64_t)(h >> 1);
}

static bool s3_matches(const data_trig_t *dt, const char *path)
{
    size_t n = strlen(dt->path);
    while (n > 5 && dt->path[n - 1] == '/') n--;
    if (strncmp(path, dt->path, n) != 0 || path[n] != '/') return false;
    const char *rest = path + n + 1;
    const char *name = strrchr(rest, '/');
    if (name && !dt->recursive) return false;
    name = name ? name + 1 : rest;
    return *name && fnmatch(dt->glob, name, 0) == 0;
}

int loom_sched_data_arrived(loom_sched_t *s, const char *path, uint64_t size, const char *tag,
                            json_t **result)
{
    json_t *matched = json_array();
    void *v;
    for (size_t i = 0; loom_map_next(&s->trig_pipes, &i, &v);) {
        trig_pipe_t *tp = v;
        for (size_t j = 0; j < tp->n_datas; j++) {
            data_trig_t *dt = &tp->datas[j];
            if (strncmp(dt->path, "s3://", 5) != 0 || !s3_matches(dt, path)) continue;
            data_arrived(s, dt, path, size, tag_number(tag));
            json_array_append_new(
                matched, json_pack("{s:s,s:i}", "pipeline", tp->name, "trigger", dt->index));
        }
    }
    *result = json_pack("{s:s,s:o}", "path", path, "matched", matched);
    return loom_sched_commit(s);
}
