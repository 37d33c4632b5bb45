/* Runs, tasks and attempts: the state machine and dispatch. Everything here
 * is event-driven: a finished task immediately queues its ready dependents,
 * and a queued task goes at once to an agent with a free slot. */
#include "sched_internal.h"

#include "loom/err.h"
#include "loom/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const task_names[] = {
    [TASK_PENDING] = "pending",     [TASK_QUEUED] = "queued",
    [TASK_RUNNING] = "running",     [TASK_SUCCEEDED] = "succeeded",
    [TASK_FAILED] = "failed",       [TASK_UPSTREAM_FAILED] = "upstream_failed",
    [TASK_CANCELLED] = "cancelled",
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

static bool task_state_parse(const char *name, task_state_t *out)
{
    for (size_t i = 0; name && i < sizeof task_names / sizeof task_names[0]; i++) {
        if (strcmp(task_names[i], name) == 0) {
            *out = (task_state_t)i;
            return true;
        }
    }
    return false;
}

static bool task_ended(const task_t *t)
{
    return t->state >= TASK_SUCCEEDED;
}

static const loom_dag_task_t *dag_task(const task_t *t)
{
    return &t->run->dag->tasks[t->idx];
}

static void save_task(loom_sched_t *s, task_t *t)
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
    };
    loom_store_task_update(s->store, &row);
    sched_mark_changed(s, t->run->id);
}

static void save_run(loom_sched_t *s, run_t *r)
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
    for (size_t i = 0; r->dependents && i < r->dag->n_tasks; i++) free(r->dependents[i]);
    for (size_t i = 0; r->tasks && i < r->dag->n_tasks; i++) free(r->tasks[i].error);
    free(r->dependents);
    free(r->n_dependents);
    free(r->tasks);
    loom_dag_destroy(&r->dag);
    free(r->pipeline);
    free(r->trigger);
    free(r);
}

/* Builds the in-memory run from its DAG; tasks start pending. */
static run_t *run_build(loom_dag_t *dag, uint64_t id, const char *pipeline)
{
    run_t *r = loom_xcalloc(1, sizeof *r);
    size_t n = dag->n_tasks;
    r->id = id;
    r->dag = dag;
    r->pipeline = loom_xstrdup(pipeline);
    r->tasks = loom_xcalloc(n, sizeof *r->tasks);
    r->dependents = loom_xcalloc(n, sizeof *r->dependents);
    r->n_dependents = loom_xcalloc(n, sizeof *r->n_dependents);
    for (size_t i = 0; i < n; i++) {
        task_t *t = &r->tasks[i];
        t->run = r;
        t->idx = (uint32_t)i;
        t->state = TASK_PENDING;
        t->waiting = (uint32_t)dag->tasks[i].n_needs;
        link_init(&t->in_queue);
        for (size_t j = 0; j < dag->tasks[i].n_needs; j++) {
            size_t up = dag->tasks[i].needs_idx[j];
            r->dependents[up] =
                loom_xrealloc(r->dependents[up], (r->n_dependents[up] + 1) * sizeof(uint32_t));
            r->dependents[up][r->n_dependents[up]++] = (uint32_t)i;
        }
    }
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

static void enqueue(loom_sched_t *s, task_t *t)
{
    t->state = TASK_QUEUED;
    link_push(&s->ready, &t->in_queue);
}

int run_create(loom_sched_t *s, uint64_t pipeline_id, const char *pipeline, uint32_t version,
               const char *source, size_t len, const char *trigger, uint64_t *run_id)
{
    loom_dag_t *dag = NULL;
    loom_diags_t diags = {0};
    if (loom_dag_parse(source, len, pipeline, &dag, &diags) != 0) {
        loom_diags_free(&diags);
        return LOOM_EPARSE; /* a stored version is always valid; be safe anyway */
    }
    uint64_t now = loom_unix_ms();
    loom_run_row_t row = {.pipeline_id = pipeline_id,
                          .version = version,
                          .state = run_state_name(RUN_QUEUED),
                          .trigger = trigger,
                          .created_ms = now};
    int rc = loom_store_run_insert(s->store, &row);
    if (rc) {
        loom_dag_destroy(&dag);
        return rc;
    }
    run_t *r = run_build(dag, row.id, pipeline);
    r->pipeline_id = pipeline_id;
    r->version = version;
    r->state = RUN_QUEUED;
    r->created_ms = now;
    r->trigger = loom_xstrdup(trigger);
    for (size_t i = 0; i < dag->n_tasks; i++) {
        task_t *t = &r->tasks[i];
        char *needs = needs_json(&dag->tasks[i]);
        loom_task_row_t trow = {.run_id = r->id,
                                .idx = (uint32_t)i,
                                .name = dag->tasks[i].name,
                                .needs_json = needs,
                                .state = task_state_name(TASK_PENDING)};
        rc = loom_store_task_insert(s->store, &trow);
        free(needs);
        if (rc) break;
        t->id = trow.id;
    }
    if (rc) {
        run_free(r);
        return rc;
    }
    loom_map_put(&s->runs, r->id, r);
    for (size_t i = 0; i < dag->n_tasks; i++) {
        task_t *t = &r->tasks[dag->order[i]];
        if (t->waiting == 0) {
            enqueue(s, t);
            save_task(s, t);
        }
    }
    sched_mark_changed(s, r->id);
    LOG_INFO("run created run=%llu pipeline=%s version=%u trigger=%s tasks=%zu",
             (unsigned long long)r->id, pipeline, version, trigger, dag->n_tasks);
    *run_id = r->id;
    dispatch_ready(s);
    return 0;
}

/* --- dispatch -------------------------------------------------------------- */

/* Spine placement: the connected agent with the most free slots. The fleet
 * issue replaces this with resource-aware best fit. */
static agent_t *pick_agent(loom_sched_t *s)
{
    agent_t *best = NULL;
    void *v;
    for (size_t i = 0; loom_map_next(&s->agents, &i, &v);) {
        agent_t *a = v;
        if (a->state != AGENT_CONNECTED || a->running >= a->slots) continue;
        if (!best || a->slots - a->running > best->slots - best->running) best = a;
    }
    return best;
}

static void add_env(Loom__EnvVar **vars, size_t *n, const loom_env_t *env, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        loom__env_var__init(vars[*n]);
        vars[*n]->name = env[i].name;
        vars[*n]->value = env[i].value;
        (*n)++;
    }
}

static void send_dispatch(loom_sched_t *s, attempt_t *a)
{
    const loom_dag_task_t *dt = dag_task(a->task);
    const loom_dag_t *dag = a->run->dag;
    size_t n_env = dag->n_env + dt->n_env, used = 0;
    Loom__EnvVar *storage = loom_xcalloc(n_env ? n_env : 1, sizeof *storage);
    Loom__EnvVar **vars = loom_xcalloc(n_env ? n_env : 1, sizeof *vars);
    for (size_t i = 0; i < n_env; i++) vars[i] = &storage[i];
    add_env(vars, &used, dag->env, dag->n_env);
    add_env(vars, &used, dt->env, dt->n_env);

    Loom__Dispatch d = LOOM__DISPATCH__INIT;
    d.attempt_id = a->id;
    d.run_id = a->run->id;
    d.pipeline = a->run->pipeline;
    d.task = dt->name;
    d.argv = dt->argv;
    d.n_argv = dt->argv ? dt->argc : 0;
    d.shell = dt->shell ? dt->shell : "";
    d.env = vars;
    d.n_env = used;
    d.timeout_ms = dt->timeout_ms;
    d.seq = a->dispatch_seq;
    d.attempt_number = a->number;
    loom_msg_t msg = LOOM__ENVELOPE__INIT;
    msg.body_case = LOOM__ENVELOPE__BODY_DISPATCH;
    msg.dispatch = &d;
    sched_send(s, a->agent->name, &msg);
    free(vars);
    free(storage);
}

static void dispatch_task(loom_sched_t *s, task_t *t, agent_t *ag)
{
    run_t *r = t->run;
    uint64_t now = loom_unix_ms();
    attempt_t *a = loom_xcalloc(1, sizeof *a);
    a->number = ++t->attempts;
    a->run = r;
    a->task = t;
    a->agent = ag;
    a->state = ATT_DISPATCHED;
    a->dispatched_ms = now;
    a->dispatch_seq = ++ag->dispatch_seq;
    a->log_fd = -1;
    loom_attempt_row_t row = {.task_id = t->id,
                              .run_id = r->id,
                              .number = a->number,
                              .agent = ag->name,
                              .state = "dispatched",
                              .dispatched_ms = now};
    if (loom_store_attempt_insert(s->store, &row) != 0) {
        /* Cannot record it, so cannot run it: leave the task queued. */
        t->attempts--;
        free(a);
        link_push(&s->ready, &t->in_queue);
        return;
    }
    a->id = row.id;
    link_push(&ag->attempts, &a->on_agent);
    ag->running++;
    loom_map_put(&s->attempts, a->id, a);
    t->current = a;
    t->last_attempt_id = a->id;
    t->state = TASK_RUNNING;
    if (!t->started_ms) t->started_ms = now;
    save_task(s, t);
    if (r->state == RUN_QUEUED) {
        r->state = RUN_RUNNING;
        r->started_ms = now;
        save_run(s, r);
    }
    s->stats.dispatched++;
    LOG_DEBUG("dispatch run=%llu task=%s attempt=%llu agent=%s", (unsigned long long)r->id,
              dag_task(t)->name, (unsigned long long)a->id, ag->name);
    send_dispatch(s, a);
}

void dispatch_ready(loom_sched_t *s)
{
    while (!link_empty(&s->ready)) {
        agent_t *ag = pick_agent(s);
        if (!ag) return;
        task_t *t = CONTAINER_OF(s->ready.next, task_t, in_queue);
        link_remove(&t->in_queue);
        dispatch_task(s, t, ag);
    }
}

/* --- task and run transitions ------------------------------------------------ */

static void run_check_done(loom_sched_t *s, run_t *r)
{
    if (r->n_ended < r->dag->n_tasks) return;
    bool failed = false, cancelled = false;
    for (size_t i = 0; i < r->dag->n_tasks; i++) {
        task_state_t st = r->tasks[i].state;
        if (st == TASK_FAILED || st == TASK_UPSTREAM_FAILED) failed = true;
        if (st == TASK_CANCELLED) cancelled = true;
    }
    r->state = failed ? RUN_FAILED : cancelled ? RUN_CANCELLED : RUN_SUCCEEDED;
    r->ended_ms = loom_unix_ms();
    if (!r->started_ms) r->started_ms = r->ended_ms;
    save_run(s, r);
    LOG_INFO("run ended run=%llu pipeline=%s state=%s", (unsigned long long)r->id, r->pipeline,
             run_state_name(r->state));
    loom_map_del(&s->runs, r->id);
    run_free(r);
}

static void task_end(loom_sched_t *s, task_t *t, task_state_t st, const char *error)
{
    if (!link_empty(&t->in_queue)) link_remove(&t->in_queue);
    t->state = st;
    t->ended_ms = loom_unix_ms();
    if (error) {
        free(t->error);
        t->error = loom_xstrdup(error);
    }
    t->run->n_ended++;
    save_task(s, t);
}

/* Marks everything downstream of t that has not started as upstream_failed:
 * those tasks never run. */
static void fail_downstream(loom_sched_t *s, task_t *t)
{
    run_t *r = t->run;
    for (uint32_t i = 0; i < r->n_dependents[t->idx]; i++) {
        task_t *d = &r->tasks[r->dependents[t->idx][i]];
        if (d->state != TASK_PENDING) continue;
        char *why = loom_xasprintf("upstream task \"%s\" did not succeed", dag_task(t)->name);
        task_end(s, d, TASK_UPSTREAM_FAILED, why);
        free(why);
        fail_downstream(s, d);
    }
}

static void task_succeeded(loom_sched_t *s, task_t *t)
{
    run_t *r = t->run;
    task_end(s, t, TASK_SUCCEEDED, NULL);
    for (uint32_t i = 0; i < r->n_dependents[t->idx]; i++) {
        task_t *d = &r->tasks[r->dependents[t->idx][i]];
        if (d->state == TASK_PENDING && --d->waiting == 0 && !r->cancelling) {
            enqueue(s, d);
            save_task(s, d);
        }
    }
}

static void task_failed(loom_sched_t *s, task_t *t, const char *error)
{
    task_end(s, t, TASK_FAILED, error);
    fail_downstream(s, t);
}

/* After an attempt ends: retry, or settle the task, then the run. */
static void task_after_attempt(loom_sched_t *s, task_t *t, bool ok, bool lost, const char *error)
{
    run_t *r = t->run;
    const loom_dag_task_t *dt = dag_task(t);
    t->current = NULL;
    if (r->cancelling) {
        task_end(s, t, TASK_CANCELLED, error ? error : "cancelled");
    } else if (ok) {
        task_succeeded(s, t);
    } else if ((lost && t->lost <= s->cfg.max_lost_retries) ||
               (!lost && t->attempts - t->lost <= dt->retries)) {
        LOG_INFO("retrying run=%llu task=%s after attempt %u: %s", (unsigned long long)r->id,
                 dt->name, t->attempts, error ? error : "failed");
        enqueue(s, t);
        save_task(s, t);
    } else {
        task_failed(s, t, error);
    }
    run_check_done(s, r);
}

static void attempt_detach(loom_sched_t *s, attempt_t *a)
{
    a->state = ATT_ENDED;
    link_remove(&a->on_agent);
    if (a->agent->running > 0) a->agent->running--;
    loom_map_del(&s->attempts, a->id);
    if (a->log_fd >= 0) close(a->log_fd);
    a->log_fd = -1;
}

static char *describe_exit(const Loom__Finished *f)
{
    if (f->error && *f->error) return loom_xstrdup(f->error);
    if (f->signal)
        return loom_xasprintf("killed by signal %d (%s)", f->signal, strsignal(f->signal));
    if (f->exit_code) return loom_xasprintf("exited with status %d", f->exit_code);
    return NULL;
}

void attempt_finished(loom_sched_t *s, attempt_t *a, const Loom__Finished *f)
{
    task_t *t = a->task;
    bool ok = f->signal == 0 && f->exit_code == 0 && !f->timed_out && !f->cancelled &&
              !(f->error && *f->error);
    char *error = describe_exit(f);
    const char *state = ok ? "succeeded" : f->cancelled ? "cancelled" : "failed";
    loom_attempt_row_t row = {.id = a->id,
                              .state = state,
                              .started_ms = f->started_unix_ms ? f->started_unix_ms : a->started_ms,
                              .ended_ms = f->ended_unix_ms ? f->ended_unix_ms : loom_unix_ms(),
                              .has_exit = true,
                              .exit_code = f->exit_code,
                              .signal = f->signal,
                              .error = error,
                              .user_cpu_us = f->user_cpu_us,
                              .sys_cpu_us = f->sys_cpu_us,
                              .max_rss = f->max_rss_bytes,
                              .log_seq = a->log_seq,
                              .log_bytes = a->log_bytes};
    loom_store_attempt_update(s->store, &row);
    t->has_exit = true;
    t->exit_code = f->exit_code;
    t->signal = f->signal;
    attempt_detach(s, a);
    s->stats.finished++;
    LOG_DEBUG("finished run=%llu task=%s attempt=%llu state=%s", (unsigned long long)a->run->id,
              dag_task(t)->name, (unsigned long long)a->id, state);
    task_after_attempt(s, t, ok, false, error);
    free(error);
    free(a);
    dispatch_ready(s);
}

void attempt_lost(loom_sched_t *s, attempt_t *a, const char *why)
{
    task_t *t = a->task;
    loom_attempt_row_t row = {.id = a->id,
                              .state = "lost",
                              .started_ms = a->started_ms,
                              .ended_ms = loom_unix_ms(),
                              .error = why,
                              .log_seq = a->log_seq,
                              .log_bytes = a->log_bytes};
    loom_store_attempt_update(s->store, &row);
    LOG_WARN("attempt lost run=%llu task=%s attempt=%llu agent=%s: %s",
             (unsigned long long)a->run->id, dag_task(t)->name, (unsigned long long)a->id,
             a->agent->name, why);
    attempt_detach(s, a);
    t->lost++;
    task_after_attempt(s, t, false, true, why);
    free(a);
    dispatch_ready(s);
}

void attempt_started(loom_sched_t *s, attempt_t *a, uint64_t started_ms)
{
    if (a->state != ATT_DISPATCHED) return;
    a->state = ATT_RUNNING;
    a->started_ms = started_ms ? started_ms : loom_unix_ms();
    loom_attempt_row_t row = {.id = a->id,
                              .state = "running",
                              .started_ms = a->started_ms,
                              .log_seq = a->log_seq,
                              .log_bytes = a->log_bytes};
    loom_store_attempt_update(s->store, &row);
    sched_mark_changed(s, a->run->id);
}

static int open_log(loom_sched_t *s, attempt_t *a)
{
    if (a->log_fd >= 0) return 0;
    char *dir = loom_xasprintf("%s/logs/%llu", s->state_dir, (unsigned long long)a->run->id);
    char *path = loom_sched_log_path(s, a->run->id, a->id);
    int rc = loom_mkdirs(dir, 0700);
    if (rc == 0) {
        a->log_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (a->log_fd < 0) rc = LOOM_EIO;
    }
    if (rc) LOG_ERROR("cannot open log %s: %s", path, strerror(errno));
    free(dir);
    free(path);
    return rc;
}

/* Appends one chunk exactly once. Returns 0 when the chunk is stored (or was
 * already), so the caller acknowledges it; an error leaves it unacknowledged
 * for the agent to send again. */
int attempt_log(loom_sched_t *s, attempt_t *a, const Loom__LogChunk *c)
{
    if (c->seq <= a->log_seq) return 0; /* a resend of what we have */
    if (c->seq != a->log_seq + 1) {
        LOG_WARN("log gap attempt=%llu have=%llu got=%llu", (unsigned long long)a->id,
                 (unsigned long long)a->log_seq, (unsigned long long)c->seq);
        return LOOM_EPROTO;
    }
    if (open_log(s, a) != 0) return LOOM_EIO;
    const uint8_t *p = c->data.data;
    size_t left = c->data.len;
    while (left > 0) {
        ssize_t n = write(a->log_fd, p, left);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            /* Undo a partial append so the file matches the recorded size. */
            if (ftruncate(a->log_fd, (off_t)a->log_bytes) != 0) { /* reported below */
            }
            LOG_ERROR("log write failed attempt=%llu: %s", (unsigned long long)a->id,
                      strerror(errno));
            return LOOM_EIO;
        }
        p += n;
        left -= (size_t)n;
    }
    a->log_seq = c->seq;
    a->log_bytes += c->data.len;
    loom_store_attempt_log(s->store, a->id, a->log_seq, a->log_bytes);
    sched_mark_output(s, a->run->id);
    return 0;
}

/* --- recovery ----------------------------------------------------------------- */

typedef struct {
    loom_sched_t *s;
    run_t *r;
    int rc;
} recover_ctx_t;

/* Re-attaches an attempt that was in flight when loomd stopped. Its agent
 * gets until the agent timeout to say hello and claim it; otherwise it is
 * lost and retried. Log bytes past the recorded size were written but never
 * acknowledged: cut them, the agent sends them again. */
static void recover_attempt(loom_sched_t *s, task_t *t, uint64_t attempt_id)
{
    loom_attempt_row_t row;
    if (loom_store_attempt_get(s->store, attempt_id, &row) != 0) return;
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
    char *path = loom_sched_log_path(s, t->run->id, a->id);
    if (truncate(path, (off_t)a->log_bytes) != 0 && errno != ENOENT)
        LOG_WARN("cannot trim log %s: %s", path, strerror(errno));
    free(path);
    link_push(&a->agent->attempts, &a->on_agent);
    a->agent->running++;
    loom_map_put(&s->attempts, a->id, a);
    t->current = a;
}

static int recover_task(void *ud, const loom_task_row_t *row)
{
    recover_ctx_t *c = ud;
    run_t *r = c->r;
    if (row->idx >= r->dag->n_tasks) {
        c->rc = LOOM_EINTERNAL;
        return c->rc;
    }
    task_t *t = &r->tasks[row->idx];
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
    if (task_ended(t)) r->n_ended++;
    return 0;
}

int run_recover(loom_sched_t *s, const loom_run_row_t *row)
{
    char *source = NULL;
    size_t len = 0;
    loom_dag_t *dag = NULL;
    loom_diags_t diags = {0};
    int rc = loom_store_run_source(s->store, row->id, &source, &len);
    if (rc == 0 && loom_dag_parse(source, len, row->pipeline, &dag, &diags) != 0) rc = LOOM_EPARSE;
    free(source);
    loom_diags_free(&diags);
    if (rc) {
        LOG_ERROR("cannot recover run=%llu: %s", (unsigned long long)row->id, loom_errname(rc));
        return 0; /* one bad run must not keep loomd down */
    }
    run_t *r = run_build(dag, row->id, row->pipeline);
    r->pipeline_id = row->pipeline_id;
    r->version = row->version;
    r->state = strcmp(row->state, "running") == 0 ? RUN_RUNNING : RUN_QUEUED;
    r->created_ms = row->created_ms;
    r->started_ms = row->started_ms;
    r->trigger = loom_xstrdup(row->trigger ? row->trigger : "manual");
    recover_ctx_t c = {s, r, 0};
    rc = loom_store_each_task(s->store, r->id, recover_task, &c);
    if (rc || c.rc) {
        run_free(r);
        return 0;
    }
    loom_map_put(&s->runs, r->id, r);
    for (size_t i = 0; i < dag->n_tasks; i++) {
        task_t *t = &r->tasks[dag->order[i]];
        const loom_dag_task_t *dt = &dag->tasks[t->idx];
        if (t->state == TASK_PENDING) {
            t->waiting = 0;
            for (size_t j = 0; j < dt->n_needs; j++)
                if (r->tasks[dt->needs_idx[j]].state != TASK_SUCCEEDED) t->waiting++;
            if (t->waiting == 0) t->state = TASK_QUEUED;
        }
        if (t->state == TASK_RUNNING) {
            recover_attempt(s, t, t->last_attempt_id);
            if (!t->current) t->state = TASK_QUEUED; /* its attempt had ended: run again */
        }
        if (t->state == TASK_QUEUED) link_push(&s->ready, &t->in_queue);
    }
    LOG_INFO("recovered run=%llu pipeline=%s state=%s", (unsigned long long)r->id, r->pipeline,
             run_state_name(r->state));
    run_check_done(s, r);
    return 0;
}

/* --- cancel ------------------------------------------------------------------- */

int loom_sched_cancel_run(loom_sched_t *s, uint64_t run_id, const char *reason)
{
    run_t *r = loom_map_get(&s->runs, run_id);
    if (!r) {
        json_t *j = NULL;
        int rc = loom_store_json_run(s->store, run_id, &j);
        json_decref(j);
        return rc == 0 ? LOOM_ESTATE : LOOM_ENOTFOUND;
    }
    r->cancelling = true;
    char *why = loom_xasprintf("cancelled: %s", reason ? reason : "by request");
    for (size_t i = 0; i < r->dag->n_tasks; i++) {
        task_t *t = &r->tasks[i];
        if (t->state == TASK_PENDING || t->state == TASK_QUEUED) {
            task_end(s, t, TASK_CANCELLED, why);
        } else if (t->current && !t->current->cancel_sent) {
            attempt_t *a = t->current;
            Loom__Cancel c = LOOM__CANCEL__INIT;
            c.attempt_id = a->id;
            c.reason = (char *)(reason ? reason : "by request"); /* the agent adds "cancelled: " */
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
