/* Runs in loomd: building a run's tasks from its DAG (foreach expanded into
 * copies), checking its parameters, settling it when every task has ended,
 * rebuilding runs in flight after a restart, and cancelling. */
#include "sched_internal.h"

#include "loom/err.h"
#include "loom/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const task_names[] = {
    [TASK_PENDING] = "pending", [TASK_QUEUED] = "queued",
    [TASK_RUNNING] = "running", [TASK_SUCCEEDED] = "succeeded",
    [TASK_FAILED] = "failed",   [TASK_UPSTREAM_FAILED] = "upstream_failed",
    [TASK_SKIPPED] = "skipped", [TASK_CANCELLED] = "cancelled",
};
static const char *const run_names[] = {
    [RUN_QUEUED] = "queued", [RUN_RUNNING] = "running",     [RUN_SUCCEEDED] = "succeeded",
    [RUN_FAILED] = "failed", [RUN_CANCELLED] = "cancelled",
};

const char *task_state_name(task_state_t st)
{
    return task_names[st];
}

const char *run_state_name(run_state_t st)
{
    return run_names[st];
}

bool task_state_parse(const char *name, task_state_t *out)
{
    for (size_t i = 0; name && i < sizeof task_names / sizeof task_names[0]; i++) {
        if (strcmp(task_names[i], name) == 0) {
            *out = (task_state_t)i;
            return true;
        }
    }
    return false;
}

void save_task(loom_sched_t *s, task_t *t)
{
    loom_task_row_t row = {
        .id = t->id,
        .state = task_state_name(t->state),
        .attempts = t->attempts,
        .current_attempt = t->last_attempt_id,
        .started_ms = t->started_ms,
        .ended_ms = t->ended_ms,
        .has_exit = t->has_exit,
        .exit_code = t->exit_code,
        .signal = t->signal,
        .error = t->error,
        .not_before_ms = t->not_before,
    };
    loom_store_task_update(s->store, &row);
    sched_mark_changed(s, t->run->id);
}

void save_run(loom_sched_t *s, run_t *r)
{
    loom_run_row_t row = {
        .id = r->id,
        .state = run_state_name(r->state),
        .started_ms = r->started_ms,
        .ended_ms = r->ended_ms,
    };
    loom_store_run_update(s->store, &row);
    sched_mark_changed(s, r->id);
}

void run_free(run_t *r)
{
    if (!r) return;
    for (uint32_t i = 0; r->tasks && i < r->n_tasks; i++) {
        task_t *t = &r->tasks[i];
        free(t->name);
        free(t->error);
        free(t->up);
        free(t->down);
        json_decref(t->item);
        json_decref(t->metrics);
        free(t->cache_key);
    }
    free(r->tasks);
    for (size_t i = 0; r->tqs && i < r->dag->n_tasks; i++) tq_free(&r->tqs[i]);
    free(r->tqs);
    loom_dag_destroy(&r->dag);
    json_decref(r->params);
    json_decref(r->event);
    json_decref(r->origin);
    free(r->pipeline);
    free(r->trigger);
    free(r->bundle);
    free(r);
}

/* --- parameters ---------------------------------------------------------------------- */

static const char *const type_names[] = {"string", "int", "float", "bool", "list"};

/* A run's value for a parameter, converted to its type. The CLI sends
 * everything as text (-p lr=0.1), so strings are parsed; other JSON values
 * must already have the type. NULL (why set) when it cannot be. */
static json_t *coerce(const loom_dag_param_t *p, json_t *v, char *why, size_t whylen)
{
    const char *text = json_string_value(v);
    int64_t i;
    switch (p->type) {
    case LOOM_PARAM_STRING:
        if (text) return json_incref(v);
        break;
    case LOOM_PARAM_INT:
        if (json_is_integer(v)) return json_incref(v);
        if (text && loom_parse_i64(text, INT64_MIN, INT64_MAX, &i) == 0) return json_integer(i);
        break;
    case LOOM_PARAM_FLOAT: {
        if (json_is_number(v)) return json_real(json_number_value(v));
        char *end = NULL;
        double d = text && *text ? strtod(text, &end) : 0;
        if (text && *text && end && *end == '\0') return json_real(d);
        break;
    }
    case LOOM_PARAM_BOOL:
        if (json_is_boolean(v)) return json_incref(v);
        if (text && (!strcmp(text, "true") || !strcmp(text, "yes") || !strcmp(text, "1")))
            return json_true();
        if (text && (!strcmp(text, "false") || !strcmp(text, "no") || !strcmp(text, "0")))
            return json_false();
        break;
    case LOOM_PARAM_LIST:
        if (json_is_array(v)) return json_incref(v);
        if (text) {
            json_t *list = json_loads(text, JSON_DECODE_ANY, NULL);
            if (json_is_array(list)) return list;
            json_decref(list);
        }
        break;
    }
    char *shown = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    snprintf(why, whylen, "parameter \"%s\" must be %s %s, got %.80s", p->name,
             p->type == LOOM_PARAM_INT ? "an" : "a", type_names[p->type], shown ? shown : "?");
    free(shown);
    return NULL;
}

/* Every declared parameter: the given value (converted), else the default.
 * Unknown names and missing required ones are errors. */
static json_t *resolve_params(const loom_dag_t *dag, json_t *given, char *why, size_t whylen)
{
    json_t *out = json_object();
    const char *key;
    json_t *v;
    json_object_foreach(given, key, v)
    {
        if (!loom_dag_param(dag, key)) {
            snprintf(why, whylen, "unknown parameter \"%s\" (pipeline %s declares %zu)", key,
                     dag->name, dag->n_params);
            json_decref(out);
            return NULL;
        }
    }
    for (size_t i = 0; i < dag->n_params; i++) {
        const loom_dag_param_t *p = &dag->params[i];
        json_t *value = json_object_get(given, p->name);
        json_t *got = NULL;
        if (value)
            got = coerce(p, value, why, whylen);
        else if (p->default_json)
            got = json_loads(p->default_json, JSON_DECODE_ANY, NULL);
        else
            snprintf(why, whylen, "parameter \"%s\" is required (type %s)", p->name,
                     type_names[p->type]);
        if (!got) {
            json_decref(out);
            return NULL;
        }
        json_object_set_new(out, p->name, got);
    }
    return out;
}

/* --- building a run's tasks --------------------------------------------------------- */

/* One task of a run, before it exists. */
typedef struct {
    uint32_t dag_idx;
    char *name;
    json_t *item;
    int item_index; /* -1: not a copy; -2: stands for a foreach over nothing */
} spec_t;

static void specs_free(spec_t *specs, uint32_t n)
{
    for (uint32_t i = 0; specs && i < n; i++) {
        free(specs[i].name);
        json_decref(specs[i].item);
    }
    free(specs);
}

/* The list a foreach task fans out over; NULL when it is not one. */
static json_t *foreach_items(const loom_dag_task_t *dt, json_t *params, json_t *event)
{
    if (dt->foreach_json) return json_loads(dt->foreach_json, JSON_DECODE_ANY, NULL);
    if (!dt->foreach) return NULL;
    json_t *v = NULL;
    if (strncmp(dt->foreach, "params.", 7) == 0) v = json_object_get(params, dt->foreach + 7);
    if (strcmp(dt->foreach, "trigger.files") == 0 && event) v = json_object_get(event, "files");
    return json_is_array(v) ? json_incref(v) : json_array();
}

/* Every task of a new run, DAG tasks in topological order, foreach tasks as
 * one copy per item ("sweep[0]", "sweep[1]", ...). */
static int expand(const loom_dag_t *dag, json_t *params, json_t *event, spec_t **out,
                  uint32_t *n_out, char *why, size_t whylen)
{
    spec_t *specs = NULL;
    size_t n = 0, cap = 0;
    for (size_t o = 0; o < dag->n_tasks; o++) {
        const loom_dag_task_t *dt = &dag->tasks[dag->order[o]];
        json_t *items = foreach_items(dt, params, event);
        size_t copies = items && json_array_size(items) ? json_array_size(items) : 1;
        if (n + copies > LOOM_DAG_MAX_TASKS) {
            snprintf(why, whylen, "the run would have more than %d tasks", LOOM_DAG_MAX_TASKS);
            json_decref(items);
            specs_free(specs, (uint32_t)n);
            return LOOM_ETOOBIG;
        }
        if (n + copies > cap) {
            cap = (n + copies) * 2;
            specs = loom_xrealloc(specs, cap * sizeof *specs);
        }
        for (size_t k = 0; k < copies; k++) {
            spec_t *sp = &specs[n++];
            sp->dag_idx = (uint32_t)dag->order[o];
            sp->item = NULL;
            sp->item_index = -1;
            if (!items) {
                sp->name = loom_xstrdup(dt->name);
            } else if (json_array_size(items) == 0) {
                sp->name = loom_xstrdup(dt->name);
                sp->item_index = -2;
            } else {
                sp->name = loom_xasprintf("%s[%zu]", dt->name, k);
                sp->item = json_incref(json_array_get(items, k));
                sp->item_index = (int)k;
            }
        }
        json_decref(items);
    }
    *out = specs;
    *n_out = (uint32_t)n;
    return 0;
}

/* Builds the in-memory run: every copy of a needed DAG task is upstream of
 * every copy of the task that needs it. Tasks start pending. Takes the
 * specs' names and items. */
static run_t *run_build(loom_dag_t *dag, uint64_t id, const char *pipeline, spec_t *specs,
                        uint32_t n)
{
    run_t *r = loom_xcalloc(1, sizeof *r);
    r->id = id;
    r->dag = dag;
    r->pipeline = loom_xstrdup(pipeline);
    r->n_tasks = n;
    r->tasks = loom_xcalloc(n ? n : 1, sizeof *r->tasks);
    uint32_t *first = loom_xcalloc(dag->n_tasks, sizeof *first);
    uint32_t *count = loom_xcalloc(dag->n_tasks, sizeof *count);
    for (uint32_t i = n; i-- > 0;) {
        first[specs[i].dag_idx] = i;
        count[specs[i].dag_idx]++;
    }
    for (uint32_t i = 0; i < n; i++) {
        task_t *t = &r->tasks[i];
        t->run = r;
        t->idx = i;
        t->dag_idx = specs[i].dag_idx;
        t->name = specs[i].name;
        t->item = specs[i].item;
        t->item_index = specs[i].item_index;
        specs[i].name = NULL;
        specs[i].item = NULL;
        t->state = TASK_PENDING;
        link_init(&t->in_queue);
        const loom_dag_task_t *dt = &dag->tasks[t->dag_idx];
        for (size_t j = 0; j < dt->n_needs; j++) t->n_up += count[dt->needs_idx[j]];
        t->up = loom_xcalloc(t->n_up ? t->n_up : 1, sizeof *t->up);
        t->n_up = 0;
        for (size_t j = 0; j < dt->n_needs; j++) {
            size_t need = dt->needs_idx[j];
            for (uint32_t k = 0; k < count[need]; k++) {
                task_t *u = &r->tasks[first[need] + k];
                t->up[t->n_up++] = first[need] + k;
                u->down = loom_xrealloc(u->down, (u->n_down + 1) * sizeof *u->down);
                u->down[u->n_down++] = i;
            }
        }
    }
    free(first);
    free(count);
    return r;
}

static char *needs_json(const loom_dag_task_t *dt)
{
    json_t *a = json_array();
    for (size_t i = 0; i < dt->n_needs; i++) json_array_append_new(a, json_string(dt->needs[i]));
    char *text = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    return text;
}

static int insert_tasks(loom_sched_t *s, run_t *r)
{
    for (uint32_t i = 0; i < r->n_tasks; i++) {
        task_t *t = &r->tasks[i];
        char *needs = needs_json(dag_task(t));
        char *item = t->item ? json_dumps(t->item, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
        loom_task_row_t row = {.run_id = r->id,
                               .idx = i,
                               .name = t->name,
                               .needs_json = needs,
                               .state = task_state_name(TASK_PENDING),
                               .dag_idx = t->dag_idx,
                               .item_json = item};
        int rc = loom_store_task_insert(s->store, &row);
        free(needs);
        free(item);
        if (rc) return rc;
        t->id = row.id;
    }
    return 0;
}

int run_create(loom_sched_t *s, uint64_t pipeline_id, const char *pipeline, uint32_t version,
               const char *source, size_t len, const run_origin_t *origin, json_t *given,
               uint64_t *run_id, char *why, size_t whylen)
{
    loom_dag_t *dag = NULL;
    if (loom_dag_parse(source, len, pipeline, &dag, NULL) != 0) {
        snprintf(why, whylen, "stored version %u no longer parses", version);
        return LOOM_EPARSE; /* a stored version is always valid; be safe anyway */
    }
    json_t *params = resolve_params(dag, given, why, whylen);
    spec_t *specs = NULL;
    uint32_t n = 0;
    const char *trigger = origin->trigger ? origin->trigger : "manual";
    int rc = params ? expand(dag, params, origin->event, &specs, &n, why, whylen) : LOOM_EINVAL;
    if (rc) {
        json_decref(params);
        loom_dag_destroy(&dag);
        return rc;
    }
    uint64_t now = loom_unix_ms();
    char *params_text = json_dumps(params, JSON_COMPACT | JSON_SORT_KEYS);
    char *origin_text =
        origin->origin ? json_dumps(origin->origin, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    char *event_text =
        origin->event ? json_dumps(origin->event, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY)
                      : NULL;
    loom_run_row_t row = {.pipeline_id = pipeline_id,
                          .version = version,
                          .state = run_state_name(RUN_QUEUED),
                          .trigger = trigger,
                          .created_ms = now,
                          .params_json = params_text,
                          .origin_json = origin_text,
                          .event_json = event_text};
    rc = loom_store_run_insert(s->store, &row);
    free(params_text);
    free(origin_text);
    free(event_text);
    bool no_cache = true;
    if (rc == 0 && origin->no_cache)
        rc = loom_store_run_no_cache(s->store, row.id, &no_cache, true);
    if (rc) {
        specs_free(specs, n);
        json_decref(params);
        loom_dag_destroy(&dag);
        return rc;
    }
    run_t *r = run_build(dag, row.id, pipeline, specs, n);
    specs_free(specs, n);
    r->pipeline_id = pipeline_id;
    r->version = version;
    r->state = RUN_QUEUED;
    r->created_ms = now;
    r->trigger = loom_xstrdup(trigger);
    r->params = params;
    r->origin = origin->origin ? json_incref(origin->origin) : NULL;
    r->event = origin->event ? json_incref(origin->event) : NULL;
    r->bundle = loom_store_version_bundle(s->store, pipeline_id, version);
    rc = insert_tasks(s, r);
    if (rc) {
        run_free(r);
        return rc;
    }
    loom_map_put(&s->runs, r->id, r);
    triggers_run_started(s, pipeline_id);
    LOG_INFO("run created run=%llu pipeline=%s version=%u trigger=%s tasks=%u",
             (unsigned long long)r->id, pipeline, version, trigger, r->n_tasks);
    *run_id = r->id;
    sched_mark_changed(s, r->id);
    for (uint32_t i = 0; i < r->n_tasks && loom_map_get(&s->runs, *run_id); i++)
        if (r->tasks[i].n_up == 0) task_evaluate(s, &r->tasks[i]);
    if (loom_map_get(&s->runs, *run_id)) run_check_done(s, r);
    dispatch_ready(s);
    return 0;
}

void run_check_done(loom_sched_t *s, run_t *r)
{
    if (r->n_ended < r->n_tasks) return;
    bool failed = false, cancelled = false;
    for (uint32_t i = 0; i < r->n_tasks; i++) {
        task_state_t st = r->tasks[i].state;
        if (st == TASK_FAILED || st == TASK_UPSTREAM_FAILED) failed = true;
        if (st == TASK_CANCELLED) cancelled = true;
    }
    r->state = failed ? RUN_FAILED : cancelled ? RUN_CANCELLED : RUN_SUCCEEDED;
    r->ended_ms = loom_unix_ms();
    if (!r->started_ms) r->started_ms = r->ended_ms;
    save_run(s, r);
    loom_metrics_run_ended(s->metrics, run_state_name(r->state));
    LOG_INFO("run ended run=%llu pipeline=%s state=%s", (unsigned long long)r->id, r->pipeline,
             run_state_name(r->state));
    loom_map_del(&s->runs, r->id);
    triggers_run_ended(s, r->pipeline_id);
    run_free(r);
}

/* --- recovery --------------------------------------------------------------------- */

typedef struct {
    spec_t *specs;
    loom_task_row_t *rows; /* strings copied */
    uint32_t n, cap;
    uint32_t n_dag;
    int rc;
} recover_ctx_t;

static int collect_task(void *ud, const loom_task_row_t *row)
{
    recover_ctx_t *c = ud;
    if (row->idx != c->n || row->dag_idx >= c->n_dag) {
        c->rc = LOOM_EINTERNAL; /* rows must be 0..n-1 of this DAG */
        return c->rc;
    }
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 16;
        c->specs = loom_xrealloc(c->specs, c->cap * sizeof *c->specs);
        c->rows = loom_xrealloc(c->rows, c->cap * sizeof *c->rows);
    }
    spec_t *sp = &c->specs[c->n];
    sp->dag_idx = row->dag_idx;
    sp->name = loom_xstrdup(row->name);
    sp->item = row->item_json ? json_loads(row->item_json, JSON_DECODE_ANY, NULL) : NULL;
    sp->item_index = -1;
    if (sp->item) {
        const char *open = strrchr(row->name, '[');
        sp->item_index = open ? (int)strtol(open + 1, NULL, 10) : 0;
    }
    loom_task_row_t *copy = &c->rows[c->n++];
    *copy = *row;
    copy->name = NULL;
    copy->needs_json = NULL;
    copy->item_json = NULL;
    copy->state = loom_xstrdup(row->state ? row->state : "pending");
    copy->error = row->error ? loom_xstrdup(row->error) : NULL;
    return 0;
}

/* Re-attaches an attempt that was in flight when loomd stopped. Its agent
 * gets until the agent timeout to say hello and claim it; otherwise it is
 * lost and retried. Log bytes past the recorded size were written but never
 * acknowledged: cut them, the agent sends them again. */
static void recover_attempt(loom_sched_t *s, task_t *t)
{
    loom_attempt_row_t row;
    if (loom_store_attempt_get(s->store, t->last_attempt_id, &row) != 0) return;
    if (strcmp(row.state, "succeeded") == 0 && row.metrics_json)
        t->metrics = json_loads(row.metrics_json, 0, NULL);
    if (strcmp(row.state, "dispatched") != 0 && strcmp(row.state, "running") != 0) return;
    attempt_t *a = loom_xcalloc(1, sizeof *a);
    a->id = row.id;
    a->number = row.number;
    a->run = t->run;
    a->task = t;
    a->agent = agent_get_or_add(s, row.agent);
    a->state = strcmp(row.state, "running") == 0 ? ATT_RUNNING : ATT_DISPATCHED;
    a->dispatched_ms = row.dispatched_ms;
    a->started_ms = row.started_ms;
    a->log_seq = row.log_seq;
    a->log_bytes = row.log_bytes;
    a->log_fd = -1;
    a->ts_fd = -1;
    char *path = loom_sched_log_path(s, t->run->id, a->id);
    if (truncate(path, (off_t)a->log_bytes) != 0 && errno != ENOENT)
        LOG_WARN("cannot trim log %s: %s", path, strerror(errno));
    free(path);
    link_push(&a->agent->attempts, &a->on_agent);
    a->agent->running++;
    loom_map_put(&s->attempts, a->id, a);
    t->current = a;
    json_t *gpus = row.gpus_json ? json_loads(row.gpus_json, 0, NULL) : NULL;
    if (json_array_size(gpus)) {
        a->gpus = loom_xcalloc(json_array_size(gpus), sizeof *a->gpus);
        for (size_t i = 0; i < json_array_size(gpus); i++)
            a->gpus[a->n_gpus++] = (uint32_t)json_integer_value(json_array_get(gpus, i));
    }
    json_decref(gpus);
    /* The agent's GPUs are known again at its hello, which marks these. */
    placement_reserve(s, a->agent, a);
}

/* Restores one task's state from its row and puts it back where it was:
 * in flight on its agent, in the ready queue, or waiting for a retry. */
static void recover_task(loom_sched_t *s, task_t *t, const loom_task_row_t *row)
{
    t->id = row->id;
    if (!task_state_parse(row->state, &t->state)) t->state = TASK_PENDING;
    t->attempts = row->attempts;
    t->last_attempt_id = row->current_attempt;
    t->started_ms = row->started_ms;
    t->ended_ms = row->ended_ms;
    t->has_exit = row->has_exit;
    t->exit_code = row->exit_code;
    t->signal = row->signal;
    t->error = row->error ? loom_xstrdup(row->error) : NULL;
    t->not_before = row->not_before_ms;
    if (task_ended(t)) t->run->n_ended++;
    if (t->last_attempt_id) recover_attempt(s, t);
    if (t->state == TASK_RUNNING && !t->current) t->state = TASK_QUEUED; /* it had ended */
    if (t->state == TASK_QUEUED && t->not_before > loom_unix_ms())
        retry_later(s, t, t->not_before);
    else if (t->state == TASK_QUEUED)
        placement_queue(s, t);
}

static void recover_free(recover_ctx_t *c)
{
    specs_free(c->specs, c->n);
    for (uint32_t i = 0; i < c->n; i++) {
        free((char *)c->rows[i].state);
        free((char *)c->rows[i].error);
    }
    free(c->rows);
}

int run_recover(loom_sched_t *s, const loom_run_row_t *row)
{
    char *source = NULL;
    size_t len = 0;
    loom_dag_t *dag = NULL;
    int rc = loom_store_run_source(s->store, row->id, &source, &len);
    if (rc == 0 && loom_dag_parse(source, len, row->pipeline, &dag, NULL) != 0) rc = LOOM_EPARSE;
    free(source);
    recover_ctx_t c = {.n_dag = dag ? (uint32_t)dag->n_tasks : 0};
    if (rc == 0) rc = loom_store_each_task(s->store, row->id, collect_task, &c);
    if (rc == 0) rc = c.rc;
    if (rc) {
        LOG_ERROR("cannot recover run=%llu: %s", (unsigned long long)row->id, loom_errname(rc));
        recover_free(&c);
        loom_dag_destroy(&dag);
        return 0; /* one bad run must not keep loomd down */
    }
    run_t *r = run_build(dag, row->id, row->pipeline, c.specs, c.n);
    r->pipeline_id = row->pipeline_id;
    r->version = row->version;
    r->state = strcmp(row->state, "running") == 0 ? RUN_RUNNING : RUN_QUEUED;
    r->created_ms = row->created_ms;
    r->started_ms = row->started_ms;
    r->any_started = row->started_ms != 0;
    r->trigger = loom_xstrdup(row->trigger ? row->trigger : "manual");
    r->params = json_loads(row->params_json ? row->params_json : "{}", 0, NULL);
    if (!r->params) r->params = json_object();
    r->origin = row->origin_json ? json_loads(row->origin_json, 0, NULL) : NULL;
    r->event = row->event_json ? json_loads(row->event_json, JSON_DECODE_ANY, NULL) : NULL;
    r->bundle = loom_store_version_bundle(s->store, r->pipeline_id, r->version);
    loom_map_put(&s->runs, r->id, r);
    triggers_run_started(s, r->pipeline_id);
    for (uint32_t i = 0; i < r->n_tasks; i++) recover_task(s, &r->tasks[i], &c.rows[i]);
    recover_free(&c);
    /* Pending tasks whose upstream ended while loomd was down move on now. */
    for (uint32_t i = 0; i < r->n_tasks && loom_map_get(&s->runs, row->id); i++)
        task_evaluate(s, &r->tasks[i]);
    LOG_INFO("recovered run=%llu pipeline=%s state=%s", (unsigned long long)r->id, r->pipeline,
             run_state_name(r->state));
    run_check_done(s, r);
    return 0;
}

/* --- cancel ------------------------------------------------------------------------- */

int loom_sched_cancel_run(loom_sched_t *s, uint64_t run_id, const char *reason)
{
    run_t *r = loom_map_get(&s->runs, run_id);
    if (!r) {
        json_t *j = NULL;
        int rc = loom_store_json_run(s->store, run_id, &j);
        json_decref(j);
        return rc == 0 ? LOOM_ESTATE : LOOM_ENOTFOUND;
    }
    if (!reason) reason = "by request";
    r->cancelling = true;
    char *why = loom_xasprintf("cancelled: %s", reason);
    for (uint32_t i = 0; i < r->n_tasks; i++) {
        task_t *t = &r->tasks[i];
        if (t->state == TASK_PENDING || t->state == TASK_QUEUED) {
            task_end(s, t, TASK_CANCELLED, why);
        } else if (t->current && !t->current->cancel_sent) {
            attempt_t *a = t->current;
            Loom__Cancel c = LOOM__CANCEL__INIT;
            c.attempt_id = a->id;
            c.reason = (char *)reason; /* the agent adds "cancelled: " */
            loom_msg_t msg = LOOM__ENVELOPE__INIT;
            msg.body_case = LOOM__ENVELOPE__BODY_CANCEL;
            msg.cancel = &c;
            sched_send(s, a->agent->name, &msg);
            a->cancel_sent = true;
        }
    }
    free(why);
    LOG_INFO("cancelling run=%llu", (unsigned long long)run_id);
    run_check_done(s, r);
    return 0;
}
