/* The trigger engine: each pipeline's triggers (from its latest version),
 * one admission policy for all of them, and one timer for everything that
 * happens at a time (schedules, debounce windows, batches, cooldowns).
 *
 * Admission, in order: a paused pipeline starts nothing; with `debounce`,
 * triggers gather in a window that opens with the first and closes
 * `debounce` later, and the window is admitted as one; within `cooldown` of
 * the last trigger-started run a trigger is skipped; with max_active_runs
 * runs active, on_overlap decides: queue (wait for a slot, in order, kept
 * across restarts), skip, or cancel_running (cancel the active runs, start
 * now). Runs started by hand are not admitted, but they count as active.
 * Every decision is recorded with its reason. */
#include "triggers.h"

#include "loom/err.h"
#include "loom/expr.h"
#include "loom/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

uint64_t trig_now(loom_sched_t *s)
{
    return s->cfg.wall.now_ms ? loom_clock_now(&s->cfg.wall) : loom_unix_ms();
}

void firing_free(firing_t *f)
{
    free(f->what);
    json_decref(f->origin);
    json_decref(f->event);
    json_decref(f->params);
    memset(f, 0, sizeof *f);
}

static uint32_t active_runs(loom_sched_t *s, uint64_t pipeline_id)
{
    return (uint32_t)(uintptr_t)loom_map_get(&s->active_runs, pipeline_id);
}

void triggers_run_started(loom_sched_t *s, uint64_t pipeline_id)
{
    loom_map_put(&s->active_runs, pipeline_id,
                 (void *)(uintptr_t)(active_runs(s, pipeline_id) + 1));
}

void triggers_run_ended(loom_sched_t *s, uint64_t pipeline_id)
{
    uint32_t n = active_runs(s, pipeline_id);
    if (n <= 1)
        loom_map_del(&s->active_runs, pipeline_id);
    else
        loom_map_put(&s->active_runs, pipeline_id, (void *)(uintptr_t)(n - 1));
    trig_pipe_t *tp = loom_map_get(&s->trig_pipes, pipeline_id);
    if (tp && tp->n_queued) {
        /* Not from inside run_check_done's frame: the flush starts them. */
        loom_map_put(&s->trig_freed, pipeline_id, (void *)1);
        sched_request_flush(s);
    }
}

void trig_decide(loom_sched_t *s, trig_pipe_t *tp, const char *kind, const char *what,
                 const char *decision, uint64_t run_id, const char *reason)
{
    loom_store_decision(s->store, tp->id, trig_now(s), kind, what, decision, run_id, reason);
    loom_metrics_trigger_decision(s->metrics, kind, decision);
    LOG_INFO("trigger pipeline=%s kind=%s decision=%s run=%llu %s%s", tp->name, kind, decision,
             (unsigned long long)run_id, reason ? "reason=" : "", reason ? reason : "");
}

static json_t *outcome_json(const trig_pipe_t *tp, const char *decision, uint64_t run_id,
                            const char *reason)
{
    return json_pack("{s:s,s:s,s:o,s:s?}", "pipeline", tp->name, "decision", decision, "run_id",
                     run_id ? json_integer((json_int_t)run_id) : json_null(), "reason", reason);
}

/* ---- `when` ---- */

typedef struct {
    const trig_pipe_t *tp;
    json_t *event, *params;
} when_ctx;

static json_t *when_lookup(void *ud, const char *path)
{
    when_ctx *c = ud;
    if (strncmp(path, "event.", 6) == 0) {
        /* Nested fields: event.labels.severity */
        json_t *v = c->event;
        char buf[256];
        snprintf(buf, sizeof buf, "%s", path + 6);
        for (char *part = strtok(buf, "."); part && v; part = strtok(NULL, "."))
            v = json_is_object(v) ? json_object_get(v, part) : NULL;
        return v ? json_incref(v) : NULL;
    }
    if (strncmp(path, "params.", 7) == 0) {
        json_t *v = json_object_get(c->params, path + 7);
        if (v) return json_incref(v);
        const loom_dag_param_t *p = loom_dag_param(c->tp->dag, path + 7);
        return p && p->default_json ? json_loads(p->default_json, JSON_DECODE_ANY, NULL) : NULL;
    }
    return NULL;
}

bool trig_when(const trig_pipe_t *tp, const char *when, json_t *event, json_t *params, char **seen)
{
    if (seen) *seen = NULL;
    if (!when) return true;
    loom_expr_t *e = NULL;
    char why[128];
    int col;
    if (loom_expr_parse(when, &e, why, sizeof why, &col) != 0) return false; /* checked at submit */
    when_ctx c = {tp, event, params};
    bool ok = loom_expr_eval(e, when_lookup, &c, seen);
    loom_expr_destroy(&e);
    return ok;
}

/* ---- admission ---- */

static json_t *run_params(const trig_pipe_t *tp, const firing_t *f)
{
    json_t *p = json_deep_copy(f->params ? f->params : json_object());
    if (!p) p = json_object();
    /* A pipeline that declares a list parameter `data_files` gets them there too. */
    const loom_dag_param_t *df = loom_dag_param(tp->dag, "data_files");
    json_t *files = f->event ? json_object_get(f->event, "files") : NULL;
    if (df && df->type == LOOM_PARAM_LIST && json_is_array(files))
        json_object_set(p, "data_files", files);
    return p;
}

/* Starts the run now; 0 and *why on failure. */
static uint64_t start_run(loom_sched_t *s, trig_pipe_t *tp, const firing_t *f, char *why,
                          size_t whylen)
{
    if (loom_sched_disk_full(s, why, whylen)) return 0;
    json_t *params = run_params(tp, f);
    run_origin_t o = {.trigger = f->kind, .origin = f->origin, .event = f->event};
    uint64_t run_id = 0;
    int rc = run_create(s, tp->id, tp->name, tp->version, tp->source, tp->len, &o, params, &run_id,
                        why, whylen);
    json_decref(params);
    if (rc) {
        if (!*why) snprintf(why, whylen, "%s", loom_errname(rc));
        return 0;
    }
    tp->last_trigger_run_ms = trig_now(s);
    loom_store_pipeline_set_last_trigger(s->store, tp->id, tp->last_trigger_run_ms);
    return run_id;
}

static char *queue_text(const json_t *j)
{
    return j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY) : NULL;
}

static void queue_row(const trig_pipe_t *tp, const firing_t *f, uint64_t due, uint64_t now,
                      loom_queue_row_t *row, char **texts)
{
    texts[0] = queue_text(f->origin);
    texts[1] = queue_text(f->event);
    texts[2] = queue_text(f->params);
    *row = (loom_queue_row_t){.pipeline_id = tp->id,
                              .due_ms = due,
                              .created_ms = now,
                              .origin_json = texts[0],
                              .event_json = texts[1],
                              .params_json = texts[2]};
}

static void free_texts(char **texts)
{
    for (int i = 0; i < 3; i++) free(texts[i]);
}

/* Cancels the pipeline's active runs (on_overlap: cancel_running); their ids
 * go into ids. */
static void cancel_active(loom_sched_t *s, trig_pipe_t *tp, loom_buf_t *ids)
{
    uint64_t *list = NULL;
    size_t n = 0, cap = 0;
    void *v;
    for (size_t i = 0; loom_map_next(&s->runs, &i, &v);) {
        run_t *r = v;
        if (r->pipeline_id != tp->id || r->cancelling) continue;
        if (n == cap) list = loom_xrealloc(list, (cap = cap ? cap * 2 : 8) * sizeof *list);
        list[n++] = r->id;
    }
    for (size_t i = 0; i < n; i++) {
        loom_buf_printf(ids, "%s%llu", i ? ", " : "", (unsigned long long)list[i]);
        loom_sched_cancel_run(s, list[i],
                              "a newer trigger replaced it (on_overlap: cancel_running)");
    }
    free(list);
}

static const char *overlap_name(overlap_t o)
{
    return o == OVERLAP_SKIP ? "skip" : o == OVERLAP_CANCEL ? "cancel_running" : "queue";
}

/* After debounce: cooldown, overlap, start. Takes f. */
static uint64_t admit_now(loom_sched_t *s, trig_pipe_t *tp, firing_t *f, json_t **outcome)
{
    uint64_t now = trig_now(s), run_id = 0;
    char why[512] = "";
    const char *decision;
    uint32_t active = active_runs(s, tp->id);
    if (tp->pol.cooldown_ms && tp->last_trigger_run_ms &&
        now < tp->last_trigger_run_ms + tp->pol.cooldown_ms) {
        decision = "skipped";
        snprintf(
            why, sizeof why,
            "cooldown: the last triggered run started %.1f s ago; the next may start in %.1f s",
            (double)(now - tp->last_trigger_run_ms) / 1000.0,
            (double)(tp->last_trigger_run_ms + tp->pol.cooldown_ms - now) / 1000.0);
    } else if (tp->pol.max_active && active >= tp->pol.max_active &&
               tp->pol.overlap != OVERLAP_CANCEL) {
        if (tp->pol.overlap == OVERLAP_SKIP) {
            decision = "skipped";
            snprintf(why, sizeof why, "%u run%s active (max_active_runs %u, on_overlap: skip)",
                     active, active == 1 ? "" : "s", tp->pol.max_active);
        } else if (tp->n_queued >= TRIG_QUEUE_MAX) {
            decision = "skipped";
            snprintf(why, sizeof why, "%u triggers already wait for a run slot (the most kept)",
                     tp->n_queued);
        } else {
            queued_t *q = loom_xcalloc(1, sizeof *q);
            char *texts[3];
            loom_queue_row_t row;
            queue_row(tp, f, 0, now, &row, texts);
            loom_store_queue_insert(s->store, &row);
            free_texts(texts);
            q->id = row.id;
            q->f = *f;
            memset(f, 0, sizeof *f);
            *tp->q_tail = q;
            tp->q_tail = &q->next;
            tp->n_queued++;
            snprintf(why, sizeof why,
                     "%u run%s active (max_active_runs %u, on_overlap: %s); waits as number %u",
                     active, active == 1 ? "" : "s", tp->pol.max_active,
                     overlap_name(tp->pol.overlap), tp->n_queued);
            trig_decide(s, tp, q->f.kind, q->f.what, "queued", 0, why);
            if (outcome) *outcome = outcome_json(tp, "queued", 0, why);
            return 0;
        }
    } else {
        loom_buf_t cancelled = {0};
        if (tp->pol.max_active && active >= tp->pol.max_active) cancel_active(s, tp, &cancelled);
        run_id = start_run(s, tp, f, why, sizeof why);
        decision = run_id ? "started" : "failed";
        if (run_id && cancelled.len)
            snprintf(why, sizeof why, "cancelled run%s %s (on_overlap: cancel_running)",
                     strchr(cancelled.data, ',') ? "s" : "", cancelled.data);
        loom_buf_free(&cancelled);
    }
    trig_decide(s, tp, f->kind, f->what, decision, run_id, *why ? why : NULL);
    if (outcome) *outcome = outcome_json(tp, decision, run_id, *why ? why : NULL);
    firing_free(f);
    return run_id;
}

/* Adds f to the open debounce window, or opens one. */
static void debounce_add(loom_sched_t *s, trig_pipe_t *tp, firing_t *f, json_t **outcome)
{
    uint64_t now = trig_now(s);
    char why[160];
    char *texts[3];
    loom_queue_row_t row;
    if (!tp->debounce_id) {
        tp->debounce = *f;
        memset(f, 0, sizeof *f);
        tp->debounce_due = now + tp->pol.debounce_ms;
        tp->debounce_count = 1;
        queue_row(tp, &tp->debounce, tp->debounce_due, now, &row, texts);
        loom_store_queue_insert(s->store, &row);
        free_texts(texts);
        tp->debounce_id = row.id;
        trig_arm_timer(s);
    } else {
        /* The window's run gets every trigger: the latest event, all files. */
        firing_t *w = &tp->debounce;
        json_t *files = w->event ? json_object_get(w->event, "files") : NULL;
        json_t *more = f->event ? json_object_get(f->event, "files") : NULL;
        if (json_is_array(files) && json_is_array(more)) {
            json_array_extend(files, more);
        } else if (f->event) {
            json_decref(w->event);
            w->event = json_incref(f->event);
        }
        json_t *merged = json_object_get(w->origin, "merged");
        if (!json_is_array(merged)) {
            merged = json_array();
            json_object_set_new(w->origin, "merged", merged);
        }
        json_array_append(merged, f->origin);
        if (json_object_size(f->params)) {
            json_decref(w->params);
            w->params = json_incref(f->params);
        }
        tp->debounce_count++;
        queue_row(tp, w, tp->debounce_due, now, &row, texts);
        row.id = tp->debounce_id;
        loom_store_queue_update(s->store, &row);
        free_texts(texts);
    }
    snprintf(why, sizeof why, "debounce: %u trigger%s gathered; the window closes in %.1f s",
             tp->debounce_count, tp->debounce_count == 1 ? "" : "s",
             (double)(tp->debounce_due - now) / 1000.0);
    trig_decide(s, tp, f->kind ? f->kind : tp->debounce.kind, f->what ? f->what : tp->debounce.what,
                "debounced", 0, why);
    if (outcome) *outcome = outcome_json(tp, "debounced", 0, why);
    firing_free(f);
}

uint64_t trig_admit(loom_sched_t *s, trig_pipe_t *tp, firing_t *f, json_t **outcome)
{
    if (tp->paused) {
        trig_decide(s, tp, f->kind, f->what, "skipped", 0, "the pipeline is paused");
        if (outcome) *outcome = outcome_json(tp, "skipped", 0, "the pipeline is paused");
        firing_free(f);
        return 0;
    }
    if (tp->pol.debounce_ms) {
        debounce_add(s, tp, f, outcome);
        return 0;
    }
    return admit_now(s, tp, f, outcome);
}

/* Starts queued triggers while slots are free (and cooldown allows);
 * returns the wall ms to look again, or 0. */
static uint64_t pump_queue(loom_sched_t *s, trig_pipe_t *tp, uint64_t now)
{
    while (tp->q_head && !tp->paused &&
           (!tp->pol.max_active || active_runs(s, tp->id) < tp->pol.max_active)) {
        if (tp->pol.cooldown_ms && tp->last_trigger_run_ms &&
            now < tp->last_trigger_run_ms + tp->pol.cooldown_ms)
            return tp->last_trigger_run_ms + tp->pol.cooldown_ms;
        queued_t *q = tp->q_head;
        tp->q_head = q->next;
        if (!tp->q_head) tp->q_tail = &tp->q_head;
        tp->n_queued--;
        loom_store_queue_delete(s->store, q->id);
        char why[512] = "";
        uint64_t run_id = start_run(s, tp, &q->f, why, sizeof why);
        trig_decide(s, tp, q->f.kind, q->f.what, run_id ? "started" : "failed", run_id,
                    run_id ? "a run slot freed up" : why);
        firing_free(&q->f);
        free(q);
    }
    return 0;
}

void triggers_flush(loom_sched_t *s)
{
    if (s->pending_events) artifacts_fire_events(s); /* model events */
    if (s->trig_freed.count == 0) return;
    uint64_t now = trig_now(s);
    for (size_t i = 0; i < s->trig_freed.cap; i++) {
        if (s->trig_freed.slots[i].used != 1) continue;
        trig_pipe_t *tp = loom_map_get(&s->trig_pipes, s->trig_freed.slots[i].key);
        if (tp && pump_queue(s, tp, now)) trig_arm_timer(s);
    }
    loom_map_free(&s->trig_freed);
}

/* ---- pipelines ---- */

static void tp_free_triggers(trig_pipe_t *tp)
{
    for (size_t i = 0; i < tp->n_scheds; i++) sched_trig_free(&tp->scheds[i]);
    for (size_t i = 0; i < tp->n_datas; i++) data_trig_free(&tp->datas[i]);
    for (size_t i = 0; i < tp->n_events; i++) {
        free(tp->events[i].name);
        free(tp->events[i].when);
        free(tp->events[i].streak_key);
        json_decref(tp->events[i].params);
    }
    free(tp->scheds);
    free(tp->datas);
    free(tp->events);
    tp->scheds = NULL;
    tp->datas = NULL;
    tp->events = NULL;
    tp->n_scheds = tp->n_datas = tp->n_events = 0;
    loom_dag_destroy(&tp->dag);
    free(tp->source);
    tp->source = NULL;
}

static void tp_free(trig_pipe_t *tp)
{
    tp_free_triggers(tp);
    firing_free(&tp->debounce);
    while (tp->q_head) {
        queued_t *q = tp->q_head;
        tp->q_head = q->next;
        firing_free(&q->f);
        free(q);
    }
    free(tp->name);
    free(tp);
}

static void read_policy(trig_pipe_t *tp)
{
    tp->pol = (trig_policy_t){0};
    json_t *c = tp->dag->concurrency_json ? json_loads(tp->dag->concurrency_json, 0, NULL) : NULL;
    if (!c) return;
    tp->pol.max_active = (uint32_t)json_integer_value(json_object_get(c, "max_active_runs"));
    const char *o = json_string_value(json_object_get(c, "on_overlap"));
    tp->pol.overlap = o && strcmp(o, "skip") == 0             ? OVERLAP_SKIP
                      : o && strcmp(o, "cancel_running") == 0 ? OVERLAP_CANCEL
                                                              : OVERLAP_QUEUE;
    tp->pol.debounce_ms = (uint64_t)json_integer_value(json_object_get(c, "debounce_ms"));
    tp->pol.cooldown_ms = (uint64_t)json_integer_value(json_object_get(c, "cooldown_ms"));
    json_decref(c);
}

/* Builds the pipeline's triggers from its (latest) DAG source. parsed, when
 * not NULL, is that source already parsed (by the submit that stored it):
 * taken over rather than parsed again, which for a 100,000-task pipeline
 * was a third of the submit's time. */
static int tp_load(loom_sched_t *s, trig_pipe_t *tp, uint32_t version, const char *source,
                   size_t len, loom_dag_t **parsed)
{
    tp->version = version;
    tp->source = loom_xstrndup(source, len);
    tp->len = len;
    if (parsed && *parsed) {
        tp->dag = *parsed;
        *parsed = NULL;
    } else if (loom_dag_parse(source, len, tp->name, &tp->dag, NULL) != 0) {
        LOG_ERROR("pipeline=%s version=%u no longer parses; its triggers are off", tp->name,
                  version);
        return LOOM_EPARSE;
    }
    read_policy(tp);
    json_t *all = tp->dag->triggers_json ? json_loads(tp->dag->triggers_json, 0, NULL) : NULL;
    size_t n = json_array_size(all);
    tp->scheds = loom_xcalloc(n ? n : 1, sizeof *tp->scheds);
    tp->datas = loom_xcalloc(n ? n : 1, sizeof *tp->datas);
    tp->events = loom_xcalloc(n ? n : 1, sizeof *tp->events);
    for (size_t i = 0; i < n; i++) {
        json_t *t = json_array_get(all, i);
        const char *kind = json_string_value(json_object_get(t, "kind"));
        if (kind && strcmp(kind, "schedule") == 0) {
            if (sched_trig_load(tp, &tp->scheds[tp->n_scheds], t, (int)i) == 0) tp->n_scheds++;
        } else if (kind && strcmp(kind, "data") == 0) {
            if (data_trig_load(tp, &tp->datas[tp->n_datas], t, (int)i) == 0) tp->n_datas++;
        } else if (kind && strcmp(kind, "event") == 0) {
            event_trig_t *e = &tp->events[tp->n_events++];
            e->index = (int)i;
            e->name = loom_xstrdup(json_string_value(json_object_get(t, "event")));
            const char *when = json_string_value(json_object_get(t, "when"));
            e->when = when ? loom_xstrdup(when) : NULL;
            json_t *params = json_object_get(t, "params");
            e->params = params ? json_incref(params) : json_object();
            e->consecutive = (uint32_t)json_integer_value(json_object_get(t, "consecutive"));
            if (e->consecutive > 1) {
                /* The streak survives restarts and versions with the same
                 * event and filter. */
                e->streak_key = loom_xasprintf("streak|%s|%s", e->name, e->when ? e->when : "");
                if (loom_store_schedule_get(s->store, tp->id, e->streak_key, &e->streak) != 0)
                    e->streak = 0;
            }
        }
    }
    json_decref(all);
    return 0;
}

static trig_pipe_t *tp_new(loom_sched_t *s, uint64_t id, const char *name)
{
    trig_pipe_t *tp = loom_xcalloc(1, sizeof *tp);
    tp->s = s;
    tp->id = id;
    tp->name = loom_xstrdup(name);
    tp->q_tail = &tp->q_head;
    loom_store_pipeline_flags(s->store, id, &tp->paused, &tp->last_trigger_run_ms);
    loom_map_put(&s->trig_pipes, id, tp);
    return tp;
}

static int load_latest(void *ud, uint64_t pipeline_id, const char *name, uint32_t version,
                       const char *source, size_t len)
{
    loom_sched_t *s = ud;
    trig_pipe_t *tp = tp_new(s, pipeline_id, name);
    tp_load(s, tp, version, source, len, NULL);
    return 0;
}

static json_t *loads_opt(const char *text)
{
    return text ? json_loads(text, JSON_DECODE_ANY, NULL) : NULL;
}

static int load_queued(void *ud, const loom_queue_row_t *row)
{
    loom_sched_t *s = ud;
    trig_pipe_t *tp = loom_map_get(&s->trig_pipes, row->pipeline_id);
    if (!tp) return 0;
    firing_t f = {.origin = loads_opt(row->origin_json),
                  .event = loads_opt(row->event_json),
                  .params = loads_opt(row->params_json)};
    if (!f.origin) f.origin = json_object();
    if (!f.params) f.params = json_object();
    const char *kind = json_string_value(json_object_get(f.origin, "kind"));
    f.kind = kind && strcmp(kind, "schedule") == 0 ? "schedule"
             : kind && strcmp(kind, "data") == 0   ? "data"
                                                   : "event";
    f.what = loom_xasprintf("%s trigger kept across a restart", f.kind);
    if (row->due_ms) {
        firing_free(&tp->debounce);
        tp->debounce = f;
        tp->debounce_id = row->id;
        tp->debounce_due = row->due_ms;
        json_t *merged = json_object_get(f.origin, "merged");
        tp->debounce_count = 1 + (uint32_t)json_array_size(merged);
    } else {
        queued_t *q = loom_xcalloc(1, sizeof *q);
        q->id = row->id;
        q->f = f;
        *tp->q_tail = q;
        tp->q_tail = &q->next;
        tp->n_queued++;
        loom_map_put(&s->trig_freed, tp->id, (void *)1); /* a slot may be free already */
    }
    return 0;
}

static void on_trig_timer(uv_timer_t *h)
{
    loom_sched_triggers_tick(h->data);
}

int triggers_open(loom_sched_t *s)
{
    uv_timer_init(s->loop, &s->trig_timer);
    s->trig_timer.data = s;
    s->open_handles++;
    s->trig_open = true;
    int rc = loom_store_each_latest(s->store, load_latest, s);
    if (rc == 0) rc = loom_store_each_queued(s->store, load_queued, s);
    if (rc) return rc;
    loom_sched_triggers_tick(s); /* catch up on what came due while loomd was down */
    triggers_flush(s);
    return 0;
}

void triggers_reload(loom_sched_t *s, uint64_t pipeline_id, const char *name, uint32_t version,
                     const char *source, size_t len, loom_dag_t **parsed)
{
    if (!s->trig_open) return;
    trig_pipe_t *tp = loom_map_get(&s->trig_pipes, pipeline_id);
    if (!tp) tp = tp_new(s, pipeline_id, name);
    tp_free_triggers(tp);
    tp_load(s, tp, version, source, len, parsed);
    LOG_INFO("triggers loaded pipeline=%s version=%u schedules=%zu data=%zu events=%zu", name,
             version, tp->n_scheds, tp->n_datas, tp->n_events);
    loom_sched_triggers_tick(s);
}

void triggers_close(loom_sched_t *s)
{
    if (!s->trig_open) return;
    void *v;
    for (size_t i = 0; loom_map_next(&s->trig_pipes, &i, &v);) {
        trig_pipe_t *tp = v;
        for (size_t j = 0; j < tp->n_datas; j++)
            if (tp->datas[j].watch) {
                loom_watch_stop(tp->datas[j].watch);
                tp->datas[j].watch = NULL;
            }
    }
    uv_timer_stop(&s->trig_timer);
}

void triggers_free(loom_sched_t *s)
{
    void *v;
    for (size_t i = 0; loom_map_next(&s->trig_pipes, &i, &v);) tp_free(v);
    loom_map_free(&s->trig_pipes);
    loom_map_free(&s->active_runs);
    loom_map_free(&s->trig_freed);
}

/* ---- time ---- */

static uint64_t earliest(uint64_t a, uint64_t b)
{
    return !a ? b : !b ? a : a < b ? a : b;
}

/* Everything due now, for every pipeline; returns the next wall ms due. */
static uint64_t tick_all(loom_sched_t *s, uint64_t now)
{
    uint64_t next = 0;
    void *v;
    for (size_t i = 0; loom_map_next(&s->trig_pipes, &i, &v);) {
        trig_pipe_t *tp = v;
        for (size_t j = 0; j < tp->n_scheds; j++) {
            int64_t at = sched_trig_tick(s, &tp->scheds[j], now);
            if (at >= 0) next = earliest(next, (uint64_t)at * 1000);
        }
        for (size_t j = 0; j < tp->n_datas; j++)
            next = earliest(next, data_trig_tick(s, &tp->datas[j], now, false));
        if (tp->debounce_id && now >= tp->debounce_due) {
            firing_t f = tp->debounce;
            memset(&tp->debounce, 0, sizeof tp->debounce);
            loom_store_queue_delete(s->store, tp->debounce_id);
            tp->debounce_id = 0;
            json_object_set_new(f.origin, "debounced", json_integer(tp->debounce_count));
            if (tp->paused) {
                trig_decide(s, tp, f.kind, f.what, "skipped", 0, "the pipeline is paused");
                firing_free(&f);
            } else {
                admit_now(s, tp, &f, NULL);
            }
        } else if (tp->debounce_id) {
            next = earliest(next, tp->debounce_due);
        }
        next = earliest(next, pump_queue(s, tp, now));
    }
    return next;
}

void trig_arm_timer(loom_sched_t *s)
{
    if (!s->trig_open || s->closing) return;
    uint64_t now = trig_now(s);
    uint64_t next = 0;
    void *v;
    for (size_t i = 0; loom_map_next(&s->trig_pipes, &i, &v);) {
        trig_pipe_t *tp = v;
        for (size_t j = 0; j < tp->n_scheds; j++)
            if (tp->scheds[j].next_s >= 0)
                next = earliest(next, (uint64_t)tp->scheds[j].next_s * 1000);
        for (size_t j = 0; j < tp->n_datas; j++)
            if (json_array_size(tp->datas[j].batch) && tp->datas[j].max_wait_ms)
                next = earliest(next, tp->datas[j].batch_since + tp->datas[j].max_wait_ms);
        if (tp->debounce_id) next = earliest(next, tp->debounce_due);
        if (tp->q_head && tp->pol.cooldown_ms)
            next = earliest(next, tp->last_trigger_run_ms + tp->pol.cooldown_ms);
    }
    /* Look again at least every minute: the wall clock may be stepped. */
    uint64_t delay = 60000;
    if (next) delay = next <= now ? 0 : next - now < delay ? next - now : delay;
    uv_timer_start(&s->trig_timer, on_trig_timer, delay, 0);
}

void loom_sched_triggers_tick(loom_sched_t *s)
{
    if (!s->trig_open) return;
    tick_all(s, trig_now(s));
    trig_arm_timer(s);
    sched_request_flush(s);
}

/* ---- requests ---- */

int loom_sched_pipeline_pause(loom_sched_t *s, const char *pipeline, bool paused)
{
    trig_pipe_t *tp = NULL;
    void *v;
    for (size_t i = 0; loom_map_next(&s->trig_pipes, &i, &v);)
        if (strcmp(((trig_pipe_t *)v)->name, pipeline) == 0) tp = v;
    if (!tp) return LOOM_ENOTFOUND;
    if (tp->paused == paused) return 0;
    tp->paused = paused;
    loom_store_pipeline_set_paused(s->store, tp->id, paused);
    trig_decide(s, tp, "pipeline", pipeline, paused ? "paused" : "resumed", 0, NULL);
    if (!paused) {
        /* Schedules start again from now: the paused time is not caught up. */
        int64_t now_s = (int64_t)(trig_now(s) / 1000);
        for (size_t j = 0; j < tp->n_scheds; j++) {
            sched_trig_t *st = &tp->scheds[j];
            st->last_fire_s = now_s;
            loom_store_schedule_set(s->store, tp->id, st->key, now_s);
            st->next_s = loom_cron_next(&st->cron, st->tz, now_s);
        }
        uint64_t now = trig_now(s);
        for (size_t j = 0; j < tp->n_datas; j++) data_trig_tick(s, &tp->datas[j], now, false);
        pump_queue(s, tp, now);
    }
    trig_arm_timer(s);
    return loom_sched_commit(s);
}

static json_t *trigger_json(const trig_pipe_t *tp, json_t *spec, int index)
{
    json_t *t = json_deep_copy(spec);
    json_object_set_new(t, "pipeline", json_string(tp->name));
    json_object_set_new(t, "index", json_integer(index));
    json_object_set_new(t, "paused", json_boolean(tp->paused));
    for (size_t i = 0; i < tp->n_scheds; i++)
        if (tp->scheds[i].index == index) {
            const sched_trig_t *st = &tp->scheds[i];
            json_object_set_new(t, "next_fire_unix_ms",
                                st->next_s >= 0 && !tp->paused
                                    ? json_integer((json_int_t)st->next_s * 1000)
                                    : json_null());
            json_object_set_new(t, "last_fire_unix_ms",
                                json_integer((json_int_t)st->last_fire_s * 1000));
        }
    for (size_t i = 0; i < tp->n_datas; i++)
        if (tp->datas[i].index == index)
            json_object_set_new(t, "waiting_files",
                                json_integer((json_int_t)json_array_size(tp->datas[i].batch)));
    return t;
}

json_t *loom_sched_triggers_json(loom_sched_t *s)
{
    json_t *list = json_array();
    void *v;
    for (size_t i = 0; loom_map_next(&s->trig_pipes, &i, &v);) {
        trig_pipe_t *tp = v;
        json_t *all =
            tp->dag && tp->dag->triggers_json ? json_loads(tp->dag->triggers_json, 0, NULL) : NULL;
        size_t k;
        json_t *spec;
        json_array_foreach(all, k, spec)
            json_array_append_new(list, trigger_json(tp, spec, (int)k));
        json_decref(all);
    }
    return json_pack("{s:o}", "triggers", list);
}

int loom_sched_event(loom_sched_t *s, const char *name, const char *source, json_t *payload,
                     const char *idem_key, json_t **result)
{
    char *key = idem_key ? loom_xasprintf("%s\n%s", name, idem_key) : NULL;
    uint64_t id = 0;
    char *prior = NULL;
    if (key && loom_store_event_find(s->store, key, &id, &prior) == 0) {
        json_t *o = json_loads(prior, 0, NULL);
        *result = json_pack("{s:I,s:b,s:o}", "event_id", (json_int_t)id, "duplicate", 1, "outcome",
                            o ? o : json_array());
        free(prior);
        free(key);
        return 0;
    }
    char *text = json_dumps(payload, JSON_COMPACT | JSON_ENCODE_ANY);
    int rc = loom_store_event_insert(s->store, name, source, trig_now(s), key, text, &id);
    free(text);
    free(key);
    if (rc) return rc;
    json_t *outcome = json_array();
    void *v;
    for (size_t i = 0; loom_map_next(&s->trig_pipes, &i, &v);) {
        trig_pipe_t *tp = v;
        for (size_t j = 0; j < tp->n_events; j++) {
            event_trig_t *e = &tp->events[j];
            if (strcmp(e->name, name) != 0) continue;
            char *what = loom_xasprintf("event %s #%llu", name, (unsigned long long)id);
            char *seen = NULL;
            bool pass = trig_when(tp, e->when, payload, e->params, &seen);
            if (e->streak_key) {
                e->streak = pass ? e->streak + 1 : 0;
                if (e->streak >= e->consecutive) e->streak = 0; /* fires now; count again */
                loom_store_schedule_set(s->store, tp->id, e->streak_key, e->streak);
            }
            if (pass && e->streak_key && e->streak > 0) {
                char *why = loom_xasprintf("consecutive: %lld of %u events in a row so far",
                                           (long long)e->streak, e->consecutive);
                trig_decide(s, tp, "event", what, "skipped", 0, why);
                json_array_append_new(outcome, outcome_json(tp, "skipped", 0, why));
                free(why);
                free(seen);
                free(what);
                continue;
            }
            if (!pass) {
                char *why = loom_xasprintf("when: %s is false (%s)", e->when, seen ? seen : "");
                trig_decide(s, tp, "event", what, "filtered", 0, why);
                json_array_append_new(outcome, outcome_json(tp, "filtered", 0, why));
                free(why);
                free(seen);
                free(what);
                continue;
            }
            free(seen);
            firing_t f = {.kind = "event",
                          .what = what,
                          .origin = json_pack("{s:s,s:i,s:s,s:I,s:s}", "kind", "event", "trigger",
                                              e->index, "event", name, "event_id", (json_int_t)id,
                                              "source", source),
                          .event = json_incref(payload),
                          .params = json_incref(e->params)};
            json_t *o = NULL;
            trig_admit(s, tp, &f, &o);
            if (o) json_array_append_new(outcome, o);
        }
    }
    char *otext = json_dumps(outcome, JSON_COMPACT);
    loom_store_event_outcome(s->store, id, otext);
    free(otext);
    *result =
        json_pack("{s:I,s:b,s:o}", "event_id", (json_int_t)id, "duplicate", 0, "outcome", outcome);
    return loom_sched_commit(s);
}
