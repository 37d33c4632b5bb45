/* A task's life in loomd: when it is ready (trigger rule, condition), how it
 * is dispatched (rendered command, environment, files), what its attempts'
 * outcomes do to it (retry with backoff, settle), and appending its output.
 * Everything is event-driven: an upstream task ending re-evaluates its
 * dependents at once, and a ready task goes straight to a free slot. */
#include "sched_internal.h"

#include "loom/err.h"
#include "loom/expr.h"
#include "loom/log.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* --- values for conditions and templates ------------------------------------- */

/* The state of a DAG task in a run, over all its copies: one failure makes
 * it failed, all copies succeeded make it succeeded. */
static const char *dag_task_status(const run_t *r, const char *name)
{
    ssize_t di = loom_dag_find(r->dag, name);
    const char *st = NULL;
    for (uint32_t i = 0; di >= 0 && i < r->n_tasks; i++) {
        const task_t *t = &r->tasks[i];
        if (t->dag_idx != (uint32_t)di) continue;
        const char *mine = task_state_name(t->state);
        if (!st || t->state == TASK_FAILED || t->state == TASK_UPSTREAM_FAILED ||
            (strcmp(st, "succeeded") == 0 && t->state != TASK_SUCCEEDED))
            st = mine;
    }
    return st;
}

static const task_t *dag_task_single(const run_t *r, const char *name)
{
    ssize_t di = loom_dag_find(r->dag, name);
    for (uint32_t i = 0; di >= 0 && i < r->n_tasks; i++)
        if (r->tasks[i].dag_idx == (uint32_t)di) return &r->tasks[i];
    return NULL;
}

/* Resolves params.X, tasks.T.status, tasks.T.metrics.M, event.F, item. */
static json_t *lookup_value(const task_t *t, const char *path)
{
    const run_t *r = t->run;
    char buf[256];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) return NULL;
    char *dot = strchr(buf, '.');
    char *rest = dot ? dot + 1 : NULL;
    if (dot) *dot = '\0';
    if (strcmp(buf, "item") == 0 && !rest) return t->item ? json_incref(t->item) : NULL;
    if (strcmp(buf, "params") == 0 && rest) return json_incref(json_object_get(r->params, rest));
    if (strcmp(buf, "event") == 0 && rest) {
        json_t *v = r->event; /* event.labels.severity: nested fields */
        for (char *part = strtok(rest, "."); part && v; part = strtok(NULL, "."))
            v = json_is_object(v) ? json_object_get(v, part) : NULL;
        return v ? json_incref(v) : NULL;
    }
    if (strcmp(buf, "tasks") != 0 || !rest) return NULL;
    char *field = strchr(rest, '.');
    if (!field) return NULL;
    *field++ = '\0';
    if (strcmp(field, "status") == 0) {
        const char *st = dag_task_status(r, rest);
        return st ? json_string(st) : NULL;
    }
    if (strncmp(field, "metrics.", 8) == 0) {
        const task_t *up = dag_task_single(r, rest);
        return up && up->metrics ? json_incref(json_object_get(up->metrics, field + 8)) : NULL;
    }
    return NULL;
}

static json_t *on_expr_lookup(void *ud, const char *path)
{
    return lookup_value(ud, path);
}

/* A value as it is substituted into a command: strings as they are, other
 * JSON values as compact JSON. */
static char *value_text(json_t *v)
{
    return loom_expr_value_text(v, false);
}

static char *on_tmpl_lookup(void *ud, const char *path)
{
    json_t *v = lookup_value(ud, path);
    if (!v || json_is_null(v)) {
        json_decref(v);
        return NULL;
    }
    char *text = value_text(v);
    json_decref(v);
    return text;
}

/* --- readiness ----------------------------------------------------------------- */

/* Tasks whose upstream changed, evaluated with an explicit stack rather
 * than recursion: a failure at the root of a 100,000-task chain must not
 * run out of C stack. */
typedef struct {
    task_t **items;
    size_t n, cap;
} tstack_t;

static void push_down(tstack_t *st, const task_t *t)
{
    /* Pushed last-first, so they are evaluated (and queued) in task order. */
    for (uint32_t i = t->n_down; i-- > 0;) {
        if (st->n == st->cap) {
            st->cap = st->cap ? st->cap * 2 : 16;
            st->items = loom_xrealloc(st->items, st->cap * sizeof *st->items);
        }
        st->items[st->n++] = &t->run->tasks[t->down[i]];
    }
}

static void enqueue(loom_sched_t *s, task_t *t)
{
    t->state = TASK_QUEUED;
    t->not_before = 0;
    placement_queue(s, t);
    save_task(s, t);
}

/* Records the end of a task; its dependents are the caller's to evaluate. */
static void mark_ended(loom_sched_t *s, task_t *t, task_state_t st, const char *error)
{
    if (t->in_tq)
        placement_unqueue(s, t);
    else if (!link_empty(&t->in_queue))
        link_remove(&t->in_queue); /* waiting for a retry */
    t->state = st;
    t->ended_ms = loom_unix_ms();
    t->not_before = 0;
    if (error) {
        free(t->error);
        t->error = loom_xstrdup(error);
    }
    t->run->n_ended++;
    t->ready_ns = 0;
    loom_metrics_task_ended(s->metrics, task_state_name(st));
    save_task(s, t);
    LOG_DEBUG("task ended run=%llu task=%s state=%s", (unsigned long long)t->run->id, t->name,
              task_state_name(st));
}

static void end_and_push(loom_sched_t *s, task_t *t, task_state_t st, const char *error,
                         tstack_t *stack)
{
    mark_ended(s, t, st, error);
    push_down(stack, t);
}

/* Checks `if`. Returns true to run; false after settling the task as
 * skipped, with the expression and the values it saw. */
static bool condition_holds(loom_sched_t *s, task_t *t, tstack_t *stack)
{
    const char *src = dag_task(t)->cond;
    if (!src) return true;
    loom_expr_t *e = NULL;
    char why[160];
    int col;
    if (loom_expr_parse(src, &e, why, sizeof why, &col) != 0) {
        char *msg = loom_xasprintf("condition \"%s\": %s", src, why);
        end_and_push(s, t, TASK_FAILED, msg, stack);
        free(msg);
        return false;
    }
    char *seen = NULL;
    bool ok = loom_expr_eval(e, on_expr_lookup, t, &seen);
    loom_expr_destroy(&e);
    if (!ok) {
        char *msg = loom_xasprintf("skipped: condition \"%s\" is false (%s)", src,
                                   seen && *seen ? seen : "no values");
        end_and_push(s, t, TASK_SKIPPED, msg, stack);
        free(msg);
    }
    free(seen);
    return ok;
}

typedef struct {
    uint32_t ended, failed, skipped;
    const task_t *first_bad;
} upstream_t;

static upstream_t count_upstream(const task_t *t)
{
    upstream_t u = {0};
    for (uint32_t i = 0; i < t->n_up; i++) {
        const task_t *up = &t->run->tasks[t->up[i]];
        if (!task_ended(up)) continue;
        u.ended++;
        if (up->state == TASK_FAILED || up->state == TASK_UPSTREAM_FAILED) {
            u.failed++;
            if (!u.first_bad || u.first_bad->state == TASK_SKIPPED ||
                u.first_bad->state == TASK_CANCELLED)
                u.first_bad = up;
        } else if (up->state != TASK_SUCCEEDED) {
            u.skipped++;
            if (!u.first_bad) u.first_bad = up;
        }
    }
    return u;
}

/* What the trigger rule says now: 1 ready, 0 not yet, -1 settled (ended). */
static int apply_rule(loom_sched_t *s, task_t *t, tstack_t *stack)
{
    upstream_t u = count_upstream(t);
    bool all_ended = u.ended == t->n_up;
    char *msg = NULL;
    int verdict = 0;
    switch (dag_task(t)->rule) {
    case LOOM_RULE_ALL_SUCCESS:
        if (u.failed) {
            msg = loom_xasprintf("upstream task \"%s\" did not succeed", u.first_bad->name);
            end_and_push(s, t, TASK_UPSTREAM_FAILED, msg, stack);
            verdict = -1;
        } else if (all_ended && u.skipped) {
            msg = loom_xasprintf("skipped: upstream task \"%s\" was %s", u.first_bad->name,
                                 task_state_name(u.first_bad->state));
            end_and_push(s, t, TASK_SKIPPED, msg, stack);
            verdict = -1;
        } else {
            verdict = all_ended;
        }
        break;
    case LOOM_RULE_ALL_DONE:
        verdict = all_ended;
        break;
    case LOOM_RULE_ONE_FAILED:
        if (u.failed) {
            verdict = 1;
        } else if (all_ended) {
            end_and_push(s, t, TASK_SKIPPED, "skipped: no upstream task failed", stack);
            verdict = -1;
        }
        break;
    }
    free(msg);
    return verdict;
}

static void evaluate(loom_sched_t *s, task_t *t, tstack_t *stack)
{
    if (t->state != TASK_PENDING) return;
    if (t->run->cancelling) return;
    if (apply_rule(s, t, stack) != 1) return;
    if (t->item_index == -2) {
        end_and_push(s, t, TASK_SKIPPED, "skipped: foreach over an empty list", stack);
    } else if (condition_holds(s, t, stack)) {
        char *cached = cache_lookup(s, t);
        if (cached)
            end_and_push(s, t, TASK_SUCCEEDED, cached, stack);
        else
            enqueue(s, t);
        free(cached);
    }
}

static void drain(loom_sched_t *s, tstack_t *stack)
{
    while (stack->n) evaluate(s, stack->items[--stack->n], stack);
    free(stack->items);
}

void task_evaluate(loom_sched_t *s, task_t *t)
{
    tstack_t stack = {0};
    evaluate(s, t, &stack);
    drain(s, &stack);
}

void task_end(loom_sched_t *s, task_t *t, task_state_t st, const char *error)
{
    tstack_t stack = {0};
    end_and_push(s, t, st, error, &stack);
    drain(s, &stack);
}

/* --- dispatch -------------------------------------------------------------------- */

/* A growable list of NAME=VALUE pairs for a Dispatch (strings owned). */
typedef struct {
    Loom__EnvVar *vars;
    Loom__EnvVar **ptrs;
    size_t n, cap;
} envlist_t;

static void env_add(envlist_t *l, const char *name, const char *value)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 16;
        l->vars = loom_xrealloc(l->vars, l->cap * sizeof *l->vars);
        l->ptrs = loom_xrealloc(l->ptrs, l->cap * sizeof *l->ptrs);
    }
    loom__env_var__init(&l->vars[l->n]);
    l->vars[l->n].name = loom_xstrdup(name);
    l->vars[l->n].value = loom_xstrdup(value);
    l->n++;
}

static void env_free(envlist_t *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->vars[i].name);
        free(l->vars[i].value);
    }
    free(l->vars);
    free(l->ptrs);
}

#define LOOM_PARAM_ENV_MAX 4096

/* Pipeline env, task env, then what loom adds: every parameter as
 * LOOM_PARAM_<NAME>, the foreach item, the parameters file. */
/* Adds PREFIX<KEY> (upper case) = value as text, when KEY is a plain name
 * (letters, digits, '_') and the text is short enough for an environment:
 * a long list would be copied into every task's environment, which has a
 * size limit, so those stay in the files. */
static void env_add_json(envlist_t *l, const char *prefix, const char *key, json_t *v)
{
    char name[128];
    size_t n = (size_t)snprintf(name, sizeof name, "%s", prefix);
    if (!*key || strlen(key) >= sizeof name - n) return;
    for (const char *c = key; *c; c++) {
        if (!isalnum((unsigned char)*c) && *c != '_') return;
        name[n++] = (char)toupper((unsigned char)*c);
    }
    name[n] = '\0';
    char *text = value_text(v);
    if (strlen(text) <= LOOM_PARAM_ENV_MAX) env_add(l, name, text);
    free(text);
}

static void build_env(const task_t *t, envlist_t *l)
{
    const run_t *r = t->run;
    const loom_dag_task_t *dt = dag_task(t);
    for (size_t i = 0; i < r->dag->n_env; i++)
        env_add(l, r->dag->env[i].name, r->dag->env[i].value);
    for (size_t i = 0; i < dt->n_env; i++) env_add(l, dt->env[i].name, dt->env[i].value);
    const char *key;
    json_t *v;
    json_object_foreach(r->params, key, v) env_add_json(l, "LOOM_PARAM_", key, v);
    if (t->item) {
        char *text = value_text(t->item);
        char index[16];
        snprintf(index, sizeof index, "%d", t->item_index);
        env_add(l, "LOOM_ITEM", text);
        env_add(l, "LOOM_ITEM_INDEX", index);
        free(text);
    }
    env_add(l, "LOOM_TRIGGER", r->trigger ? r->trigger : "manual");
    /* The scalar facts of how the run started: LOOM_TRIGGER_EVENT_ID,
     * LOOM_TRIGGER_SCHEDULED_FOR, ... (lists stay in the files). */
    json_object_foreach(r->origin, key, v)
    {
        if (!json_is_array(v) && !json_is_object(v) && strcmp(key, "kind") != 0)
            env_add_json(l, "LOOM_TRIGGER_", key, v);
    }
    /* The event's top-level scalars as LOOM_EVENT_<FIELD>: an event comes
     * from outside, so it reaches commands only this way and by file. */
    json_object_foreach(json_is_object(r->event) ? r->event : NULL, key, v)
    {
        if (json_is_string(v) || json_is_number(v) || json_is_boolean(v))
            env_add_json(l, "LOOM_EVENT_", key, v);
    }
    for (size_t i = 0; i < l->n; i++) l->ptrs[i] = &l->vars[i];
}

/* The command with its ${{ references }} filled in: shell values quoted,
 * argv values kept within their argument. Returns false with why set. */
bool task_render(const task_t *t, char **shell, char ***argv, size_t *argc, char *why,
                 size_t whylen)
{
    const loom_dag_task_t *dt = dag_task(t);
    *shell = NULL;
    *argv = NULL;
    *argc = 0;
    if (dt->shell) {
        *shell = dt->shell_tmpl.n_parts
                     ? loom_tmpl_render(&dt->shell_tmpl, 1, on_tmpl_lookup, (void *)t, why, whylen)
                     : loom_xstrdup(dt->shell);
        return *shell != NULL;
    }
    char **out = loom_xcalloc(dt->argc + 1, sizeof *out);
    for (size_t i = 0; i < dt->argc; i++) {
        out[i] =
            dt->argv_tmpl && dt->argv_tmpl[i].n_parts
                ? loom_tmpl_render(&dt->argv_tmpl[i], 0, on_tmpl_lookup, (void *)t, why, whylen)
                : loom_xstrdup(dt->argv[i]);
        if (!out[i]) {
            for (size_t j = 0; j < i; j++) free(out[j]);
            free(out);
            return false;
        }
    }
    *argv = out;
    *argc = dt->argc;
    return true;
}

static void free_argv(char **argv, size_t argc)
{
    for (size_t i = 0; argv && i < argc; i++) free(argv[i]);
    free(argv);
}

/* Builds and queues the Dispatch. Returns false (why set) when the command
 * cannot be rendered, an input or a secret is missing; nothing is sent then. */
static bool send_dispatch(loom_sched_t *s, attempt_t *a, char *why, size_t whylen)
{
    const task_t *t = a->task;
    const loom_dag_task_t *dt = dag_task(t);
    char *shell, **argv;
    size_t argc;
    if (!task_render(t, &shell, &argv, &argc, why, whylen)) {
        char *detail = loom_xstrdup(why);
        snprintf(why, whylen, "cannot render the command: %s", detail);
        free(detail);
        return false;
    }
    envlist_t env = {0};
    build_env(t, &env);
    char *params = json_dumps(t->run->params, JSON_COMPACT | JSON_SORT_KEYS);
    Loom__File params_file = LOOM__FILE__INIT;
    params_file.path = "loom-params.json";
    params_file.content.data = (uint8_t *)params;
    params_file.content.len = params ? strlen(params) : 0;
    params_file.env = "LOOM_PARAMS_FILE";
    /* How the run started (origin and event, as JSON), and for a data
     * trigger the files, one path per line. */
    char *trigger_text = NULL;
    loom_buf_t list = {0};
    Loom__File trigger_file = LOOM__FILE__INIT, data_file = LOOM__FILE__INIT;
    Loom__File *files[3];
    size_t n_files = 0;
    if (json_object_size(t->run->params)) files[n_files++] = &params_file;
    if (t->run->origin) {
        json_t *j = json_pack("{s:O,s:O?}", "origin", t->run->origin, "event", t->run->event);
        trigger_text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
        json_decref(j);
        trigger_file.path = "loom-trigger.json";
        trigger_file.content.data = (uint8_t *)trigger_text;
        trigger_file.content.len = trigger_text ? strlen(trigger_text) : 0;
        trigger_file.env = "LOOM_TRIGGER_FILE";
        files[n_files++] = &trigger_file;
    }
    json_t *data = t->run->event ? json_object_get(t->run->event, "files") : NULL;
    if (json_is_array(data)) {
        size_t i;
        json_t *f;
        json_array_foreach(data, i, f) if (json_is_string(f))
            loom_buf_printf(&list, "%s\n", json_string_value(f));
        data_file.path = "loom-data-files.txt";
        data_file.content.data = (uint8_t *)(list.data ? list.data : "");
        data_file.content.len = list.len;
        data_file.env = "LOOM_DATA_FILES";
        files[n_files++] = &data_file;
    }

    Loom__Input **inputs = NULL;
    size_t n_inputs = 0;
    Loom__Secret **secrets = NULL;
    size_t n_secrets = 0;
    if ((dt->n_inputs && inputs_resolve(s, t, a->id, &inputs, &n_inputs, why, whylen) != 0) ||
        sched_secrets_resolve(s, dt, &secrets, &n_secrets, why, whylen) != 0) {
        inputs_free(inputs, n_inputs);
        free(params);
        free(trigger_text);
        loom_buf_free(&list);
        env_free(&env);
        free(shell);
        free_argv(argv, argc);
        return false;
    }
    Loom__Dispatch d = LOOM__DISPATCH__INIT;
    d.attempt_id = a->id;
    d.inputs = inputs;
    d.n_inputs = n_inputs;
    d.outputs = dt->outputs;
    d.n_outputs = dt->n_outputs;
    d.run_id = t->run->id;
    d.pipeline = t->run->pipeline;
    d.task = t->name;
    d.argv = argv;
    d.n_argv = argc;
    d.shell = shell ? shell : "";
    d.env = env.ptrs;
    d.n_env = env.n;
    d.timeout_ms = dt->timeout_ms;
    d.seq = a->dispatch_seq;
    d.attempt_number = a->number;
    d.bundle = t->run->bundle ? t->run->bundle : "";
    /* Only a pipeline with parameters gets the file: creating a file per
     * attempt is a measurable share of an agent's work at 1,000 tasks/s. */
    d.files = files;
    d.n_files = n_files;
    d.metrics = dt->metrics ? dt->metrics : "";
    d.gpus = a->gpus;
    d.n_gpus = a->n_gpus;
    d.cpus = a->cpus;
    d.memory_bytes = a->memory_bytes;
    d.secrets = secrets;
    d.n_secrets = n_secrets;
    loom_msg_t msg = LOOM__ENVELOPE__INIT;
    msg.body_case = LOOM__ENVELOPE__BODY_DISPATCH;
    msg.dispatch = &d;
    sched_send(s, a->agent->name, &msg);
    free(params);
    free(trigger_text);
    loom_buf_free(&list);
    env_free(&env);
    free(shell);
    free_argv(argv, argc);
    inputs_free(inputs, n_inputs);
    sched_secrets_free(secrets, n_secrets); /* wiped: the plaintext lives only in the message */
    return true;
}

void dispatch_task(loom_sched_t *s, task_t *t, agent_t *ag, bool queued)
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
    a->log_fd = -1;
    a->ts_fd = -1;
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
        placement_queue(s, t);
        return;
    }
    a->id = row.id;
    a->dispatch_seq = ag->dispatch_seq + 1;
    if (!queued) placement_reserve(s, ag, a);
    if (a->n_gpus) {
        json_t *g = json_array();
        for (uint32_t i = 0; i < a->n_gpus; i++) json_array_append_new(g, json_integer(a->gpus[i]));
        char *text = json_dumps(g, JSON_COMPACT);
        loom_store_attempt_gpus(s->store, a->id, text);
        free(text);
        json_decref(g);
    }
    char why[256];
    if (!send_dispatch(s, a, why, sizeof why)) {
        if (!queued) placement_release(s, a);
        loom_attempt_row_t failed = {.id = a->id, .state = "failed", .ended_ms = now, .error = why};
        loom_store_attempt_update(s->store, &failed);
        t->last_attempt_id = a->id;
        free(a);
        task_end(s, t, TASK_FAILED, why);
        /* Not here: placement may be walking this run's queues. */
        loom_map_put(&s->check_runs, r->id, (void *)(uintptr_t)r->id);
        sched_request_flush(s);
        return;
    }
    ag->dispatch_seq++;
    link_push(&ag->attempts, &a->on_agent);
    if (queued) {
        a->queued = true;
        link_push(&ag->backlog, &a->in_backlog);
        ag->queued++;
        s->backlog_total++;
    } else {
        ag->running++;
    }
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
    if (t->ready_ns) {
        loom_metrics_dispatched(s->metrics, (double)(uv_hrtime() - t->ready_ns) / 1e9);
        t->ready_ns = 0;
    }
    LOG_DEBUG("dispatch run=%llu task=%s attempt=%llu agent=%s", (unsigned long long)r->id, t->name,
              (unsigned long long)a->id, ag->name);
}

/* --- retries ----------------------------------------------------------------------- */

uint64_t retry_delay_ms(const loom_dag_task_t *dt, uint32_t failures, uint32_t random)
{
    uint64_t delay = dt->retry_delay_ms;
    for (uint32_t i = 1; i < failures && delay < dt->max_retry_delay_ms; i++) delay *= 2;
    if (dt->max_retry_delay_ms && delay > dt->max_retry_delay_ms) delay = dt->max_retry_delay_ms;
    if (dt->retry_jitter && delay > 0) {
        /* +-25%, so that a hundred tasks failing together do not retry as a herd. */
        uint64_t span = delay / 2;
        delay = delay - delay / 4 + (span ? (uint64_t)random % (span + 1) : 0);
    }
    return delay;
}

static void on_retry_timer(uv_timer_t *h)
{
    loom_sched_t *s = h->data;
    uint64_t now = loom_unix_ms();
    while (!link_empty(&s->retry_wait)) {
        task_t *t = CONTAINER_OF(s->retry_wait.next, task_t, in_queue);
        if (t->not_before > now) break;
        link_remove(&t->in_queue);
        enqueue(s, t);
    }
    retry_timer_start(s);
    dispatch_ready(s);
}

void retry_timer_start(loom_sched_t *s)
{
    if (!s->retry_timer.loop) return;
    if (link_empty(&s->retry_wait)) {
        uv_timer_stop(&s->retry_timer);
        return;
    }
    task_t *first = CONTAINER_OF(s->retry_wait.next, task_t, in_queue);
    uint64_t now = loom_unix_ms();
    uv_timer_start(&s->retry_timer, on_retry_timer,
                   first->not_before > now ? first->not_before - now : 0, 0);
}

/* Puts t on the retry wait list, kept sorted by not_before. */
void retry_later(loom_sched_t *s, task_t *t, uint64_t not_before)
{
    t->state = TASK_QUEUED;
    t->not_before = not_before;
    link_t *l = s->retry_wait.next;
    while (l != &s->retry_wait && CONTAINER_OF(l, task_t, in_queue)->not_before <= not_before)
        l = l->next;
    link_push(l, &t->in_queue); /* before l */
    save_task(s, t);
    retry_timer_start(s);
}

/* --- attempt outcomes ---------------------------------------------------------------- */

/* Attempts lost before they started (their Dispatch never arrived) cost the
 * task nothing -- it never ran -- so they do not count against
 * max_lost_retries; this bound only stops a task bouncing for ever between
 * agents that never take it. */
#define MAX_UNDELIVERED 20

/* After an attempt ends: retry (after the backoff), or settle the task. */
static void task_after_attempt(loom_sched_t *s, task_t *t, bool ok, bool lost, const char *error)
{
    run_t *r = t->run;
    const loom_dag_task_t *dt = dag_task(t);
    uint32_t failures = t->attempts - t->lost;
    t->current = NULL;
    if (r->cancelling) {
        task_end(s, t, TASK_CANCELLED, error ? error : "cancelled");
    } else if (ok) {
        task_end(s, t, TASK_SUCCEEDED, NULL);
    } else if (lost && t->lost - t->undelivered <= s->cfg.max_lost_retries &&
               t->undelivered - t->withdrawn <= MAX_UNDELIVERED) {
        LOG_INFO("retrying run=%llu task=%s: %s", (unsigned long long)r->id, t->name, error);
        enqueue(s, t); /* not the task's fault: no backoff */
    } else if (!lost && failures <= dt->retries) {
        uint64_t delay = retry_delay_ms(dt, failures, randombytes_random());
        LOG_INFO("retrying run=%llu task=%s in %llu ms after attempt %u: %s",
                 (unsigned long long)r->id, t->name, (unsigned long long)delay, t->attempts,
                 error ? error : "failed");
        if (delay)
            retry_later(s, t, loom_unix_ms() + delay);
        else
            enqueue(s, t);
    } else {
        task_end(s, t, TASK_FAILED, error);
    }
    run_check_done(s, r);
}

void recent_ended_add(loom_sched_t *s, uint64_t attempt_id, agent_t *a)
{
    if (!s->recent_ring) s->recent_ring = loom_xcalloc(RECENT_ENDED, sizeof *s->recent_ring);
    uint64_t old = s->recent_ring[s->recent_next];
    if (old) loom_map_del(&s->recent_ended, old);
    s->recent_ring[s->recent_next] = attempt_id;
    s->recent_next = (s->recent_next + 1) % RECENT_ENDED;
    loom_map_put(&s->recent_ended, attempt_id, a);
}

static void attempt_detach(loom_sched_t *s, attempt_t *a)
{
    bool held_slot = !a->queued;
    if (a->withdrawing) {
        a->withdrawing = false;
        s->withdrawing--;
    }
    placement_release(s, a);
    a->state = ATT_ENDED;
    link_remove(&a->on_agent);
    if (held_slot && a->agent->running > 0) a->agent->running--;
    if (held_slot) placement_promote(s, a->agent);
    loom_map_del(&s->attempts, a->id);
    if (a->log_fd >= 0) close(a->log_fd);
    a->log_fd = -1;
    if (a->ts_fd >= 0) close(a->ts_fd);
    a->ts_fd = -1;
}

static char *describe_exit(const Loom__Finished *f, bool metrics_bad)
{
    if (f->error && *f->error) return loom_xstrdup(f->error);
    if (f->signal)
        return loom_xasprintf("killed by signal %d (%s)", f->signal, strsignal(f->signal));
    if (f->exit_code) return loom_xasprintf("exited with status %d", f->exit_code);
    if (metrics_bad) return loom_xasprintf("metrics: %s", f->metrics_error);
    return NULL;
}

/* Metrics a successful attempt reported: a JSON object of numbers. */
static json_t *parse_metrics(const Loom__Finished *f)
{
    if (!f->metrics_json || !*f->metrics_json) return NULL;
    json_t *m = json_loads(f->metrics_json, 0, NULL);
    const char *key;
    json_t *v;
    bool ok = json_is_object(m);
    json_object_foreach(m, key, v) if (!json_is_number(v)) ok = false;
    if (!ok) json_decref(m);
    return ok ? m : NULL;
}

void attempt_finished(loom_sched_t *s, attempt_t *a, const Loom__Finished *f)
{
    if (f->refused || f->lost) {
        /* The agent would not run it (draining, full), or its executor lost
         * it (a Slurm node failed, the job was preempted): not the task's
         * fault, so placed again like an attempt lost with its agent. */
        attempt_lost(s, a,
                     f->error && *f->error ? f->error
                     : f->lost             ? "lost by the agent's executor"
                                           : "refused by the agent");
        return;
    }
    task_t *t = a->task;
    bool metrics_bad = dag_task(t)->metrics && f->metrics_error && *f->metrics_error;
    bool ok = f->signal == 0 && f->exit_code == 0 && !f->timed_out && !f->cancelled &&
              !(f->error && *f->error) && !metrics_bad;
    char *error = describe_exit(f, metrics_bad);
    if (ok && !error) {
        /* Succeeded only once every output is stored. */
        error = artifacts_check(s, t, f);
        ok = error == NULL;
    }
    json_t *metrics = ok ? parse_metrics(f) : NULL;
    char *metrics_text = metrics ? json_dumps(metrics, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
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
                              .log_bytes = a->log_bytes,
                              .metrics_json = metrics_text};
    loom_store_attempt_update(s->store, &row);
    if (ok) artifacts_record(s, a, f, metrics);
    t->has_exit = true;
    t->exit_code = f->exit_code;
    t->signal = f->signal;
    json_decref(t->metrics);
    t->metrics = metrics;
    recent_ended_add(s, a->id, a->agent); /* its agent may still list it until acked */
    attempt_detach(s, a);
    s->stats.finished++;
    LOG_DEBUG("finished run=%llu task=%s attempt=%llu state=%s", (unsigned long long)a->run->id,
              t->name, (unsigned long long)a->id, state);
    task_after_attempt(s, t, ok, false, error);
    free(metrics_text);
    free(error);
    free(a);
    dispatch_ready(s);
}

static void log_notice(loom_sched_t *s, attempt_t *a, const char *text);

void attempt_lost(loom_sched_t *s, attempt_t *a, const char *why)
{
    task_t *t = a->task;
    if (a->log_seq > 0 || a->state == ATT_RUNNING) {
        /* Never silently: what the agent had not sent yet is gone with it. */
        char *text = loom_xasprintf("attempt lost (%s): output after byte %llu that the agent had "
                                    "not yet sent is missing",
                                    why, (unsigned long long)a->log_bytes);
        log_notice(s, a, text);
        free(text);
    }
    loom_attempt_row_t row = {.id = a->id,
                              .state = "lost",
                              .started_ms = a->started_ms,
                              .ended_ms = loom_unix_ms(),
                              .error = why,
                              .log_seq = a->log_seq,
                              .log_bytes = a->log_bytes};
    loom_store_attempt_update(s->store, &row);
    LOG_WARN("attempt lost run=%llu task=%s attempt=%llu agent=%s: %s",
             (unsigned long long)a->run->id, t->name, (unsigned long long)a->id, a->agent->name,
             why);
    bool started = a->state != ATT_DISPATCHED;
    if (a->asked_back && !started) t->withdrawn++;
    attempt_detach(s, a);
    t->lost++;
    if (!started) t->undelivered++;
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
    run_t *r = a->run;
    if (!r->any_started) {
        r->any_started = true;
        /* loomd's own clock at both ends: the agent's may be skewed. */
        uint64_t now = loom_unix_ms();
        if (r->trigger && strcmp(r->trigger, "manual") != 0 && now >= r->created_ms)
            loom_metrics_trigger_started(s->metrics, r->trigger,
                                         (double)(now - r->created_ms) / 1000.0);
    }
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
    if (rc == 0) {
        /* Best effort: without it, `--timestamps` has no times to show. */
        char *ts = loom_sched_log_ts_path(s, a->run->id, a->id);
        a->ts_fd = open(ts, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        free(ts);
    }
    if (rc) LOG_ERROR("cannot open log %s: %s", path, strerror(errno));
    free(dir);
    free(path);
    return rc;
}

/* Appends one chunk exactly once. Returns 0 when the chunk is stored (or was
 * already), so the caller acknowledges it; an error leaves it unacknowledged
 * for the agent to send again. */
/* Appends to the attempt's log file; on failure the file is trimmed back
 * to the recorded size. */
static int log_append(loom_sched_t *s, attempt_t *a, const void *data, size_t len)
{
    if (open_log(s, a) != 0) return LOOM_EIO;
    const uint8_t *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t n = write(a->log_fd, p, left);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            LOG_ERROR("log write failed attempt=%llu: %s", (unsigned long long)a->id,
                      strerror(errno));
            /* Undo a partial append so the file matches the recorded size. */
            if (ftruncate(a->log_fd, (off_t)a->log_bytes) != 0)
                LOG_ERROR("cannot trim log attempt=%llu", (unsigned long long)a->id);
            return LOOM_EIO;
        }
        p += n;
        left -= (size_t)n;
    }
    a->log_bytes += len;
    return 0;
}

/* A line loomd adds to a log: on a line of its own, marked [loom]. */
static void log_notice(loom_sched_t *s, attempt_t *a, const char *text)
{
    char *line = loom_xasprintf("\n[loom] %s\n", text);
    if (log_append(s, a, line, strlen(line)) == 0) {
        loom_store_attempt_log(s->store, a->id, a->log_seq, a->log_bytes);
        sched_mark_output(s, a->run->id);
    }
    free(line);
}

int attempt_log(loom_sched_t *s, attempt_t *a, const Loom__LogChunk *c)
{
    if (c->seq <= a->log_seq) return 0; /* a resend of what we have */
    if (c->seq != a->log_seq + 1) {
        LOG_WARN("log gap attempt=%llu have=%llu got=%llu", (unsigned long long)a->id,
                 (unsigned long long)a->log_seq, (unsigned long long)c->seq);
        return LOOM_EPROTO;
    }
    uint64_t cap = s->cfg.max_log_bytes;
    size_t keep = c->data.len;
    bool truncating = false;
    if (a->log_bytes >= cap) {
        keep = 0; /* over the limit already: acknowledged, not kept */
    } else if (a->log_bytes + keep > cap) {
        keep = (size_t)(cap - a->log_bytes);
        truncating = true;
    }
    uint64_t at = a->log_bytes;
    if (keep && log_append(s, a, c->data.data, keep) != 0) return LOOM_EIO;
    if (keep && a->ts_fd >= 0) {
        uint64_t rec[2] = {at, loom_unix_ms()};
        if (write(a->ts_fd, rec, sizeof rec) != (ssize_t)sizeof rec)
            LOG_WARN("cannot index log times attempt=%llu", (unsigned long long)a->id);
    }
    a->log_seq = c->seq;
    if (truncating) {
        char text[160];
        snprintf(text, sizeof text,
                 "output truncated: this attempt's log reached loomd's limit of %llu bytes "
                 "(--max-log-bytes); the rest is not kept",
                 (unsigned long long)cap);
        log_notice(s, a, text);
    }
    loom_store_attempt_log(s->store, a->id, a->log_seq, a->log_bytes);
    if (keep) sched_mark_output(s, a->run->id);
    return 0;
}
