/* Artifacts in loomd: uploads from agents (PutObject), the inputs a task is
 * given, what a finished attempt left (recorded only once every object is
 * stored), the task cache, and the model registry with its aliases.
 *
 * Uploads: the agent asks first (a PutObject with no data); loomd answers
 * "stored" when it has the object, so a duplicate costs no bytes. Chunks
 * then arrive in order; each is written and hashed on the thread pool, one
 * at a time per upload and never on the loop (hashing 4 GiB there held
 * every other message up for seconds), and acknowledged with the offset
 * held once written, so the agent's window bounds what waits here. After
 * the last one the object is verified, fsynced and renamed, also on the
 * thread pool, and only then acknowledged as stored. */
#include "sched_internal.h"

#include "loom/err.h"
#include "loom/log.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- uploads ---- */

typedef struct chunk {
    struct chunk *next;
    size_t len;
    uint8_t data[];
} chunk_t;

typedef struct upload {
    loom_sched_t *s;
    char *key; /* "AGENT\nHASH" */
    char *agent;
    char hash[65];
    uint64_t attempt_id;
    uint64_t size, received;       /* received: written and hashed */
    uint64_t expected;             /* the offset the next chunk must have */
    chunk_t *queued, *queued_tail; /* arrived, waiting for the writer */
    chunk_t *writing;              /* on the thread pool now */
    bool dropped;                  /* out of the map; freed when the write is done */
    uv_work_t write_work;
    int write_err;
    loom_obj_writer_t *writer;
    bool committing;
    uv_work_t work;
    int err;
    char why[256];
} upload_t;

static void send_put_ack(loom_sched_t *s, const char *agent, uint64_t attempt_id, const char *hash,
                         uint64_t offset, bool stored, const char *error)
{
    Loom__PutAck ack = LOOM__PUT_ACK__INIT;
    ack.attempt_id = attempt_id;
    ack.hash = (char *)hash;
    ack.offset = offset;
    ack.stored = stored;
    ack.error = (char *)(error ? error : "");
    loom_msg_t msg = LOOM__ENVELOPE__INIT;
    msg.body_case = LOOM__ENVELOPE__BODY_PUT_ACK;
    msg.put_ack = &ack;
    sched_send(s, agent, &msg);
}

static void upload_free(upload_t *u)
{
    while (u->queued) {
        chunk_t *c = u->queued;
        u->queued = c->next;
        free(c);
    }
    free(u->writing);
    loom_objects_writer_abort(&u->writer);
    free(u->key);
    free(u->agent);
    free(u);
}

static void upload_drop(loom_sched_t *s, upload_t *u)
{
    loom_smap_del(&s->uploads, u->key);
    if (u->writing)
        u->dropped = true; /* the thread pool still has it: on_write_done frees it */
    else
        upload_free(u);
}

static void on_commit_work(uv_work_t *w)
{
    upload_t *u = w->data;
    u->err = loom_objects_writer_commit(&u->writer, u->hash, u->why, sizeof u->why);
}

static void on_commit_done(uv_work_t *w, int status)
{
    upload_t *u = w->data;
    loom_sched_t *s = u->s;
    if (status != 0 && !u->err) {
        u->err = LOOM_EIO;
        snprintf(u->why, sizeof u->why, "commit was cancelled");
    }
    if (u->err)
        LOG_WARN("upload failed agent=%s hash=%.12s: %s", u->agent, u->hash, u->why);
    else
        LOG_DEBUG("object stored hash=%.12s size=%llu agent=%s", u->hash,
                  (unsigned long long)u->size, u->agent);
    if (!s->closing) {
        send_put_ack(s, u->agent, u->attempt_id, u->hash, u->err ? 0 : u->size, !u->err,
                     u->err ? u->why : NULL);
        sched_request_flush(s);
    }
    if (loom_smap_get(&s->uploads, u->key) == u) loom_smap_del(&s->uploads, u->key);
    upload_free(u);
}

static void upload_fail(loom_sched_t *s, upload_t *u, const char *why)
{
    send_put_ack(s, u->agent, u->attempt_id, u->hash, 0, false, why);
    upload_drop(s, u);
}

static void on_write_work(uv_work_t *w)
{
    upload_t *u = w->data;
    u->write_err = loom_objects_writer_append(u->writer, u->writing->data, u->writing->len);
}

static void on_write_done(uv_work_t *w, int status);

/* The next queued chunk to the thread pool. */
static void write_next(upload_t *u)
{
    chunk_t *c = u->queued;
    u->queued = c->next;
    if (!u->queued) u->queued_tail = NULL;
    c->next = NULL;
    u->writing = c;
    if (uv_queue_work(u->s->loop, &u->write_work, on_write_work, on_write_done) != 0) abort();
}

static void on_write_done(uv_work_t *w, int status)
{
    upload_t *u = w->data;
    loom_sched_t *s = u->s;
    size_t len = u->writing->len;
    free(u->writing);
    u->writing = NULL;
    if (status != 0 && !u->write_err) u->write_err = LOOM_EIO;
    if (u->dropped || s->closing) {
        if (!u->dropped && loom_smap_get(&s->uploads, u->key) == u)
            loom_smap_del(&s->uploads, u->key);
        upload_free(u);
        return;
    }
    if (u->write_err) {
        upload_fail(s, u, "loomd cannot write the object (disk full?); nothing of it is kept");
        sched_request_flush(s);
        return;
    }
    u->received += len;
    if (u->received < u->size) {
        send_put_ack(s, u->agent, u->attempt_id, u->hash, u->received, false, NULL);
        sched_request_flush(s);
        if (u->queued) write_next(u);
        return;
    }
    u->committing = true;
    if (uv_queue_work(s->loop, &u->work, on_commit_work, on_commit_done) != 0) abort();
}

void artifacts_on_put(loom_sched_t *s, agent_t *ag, const Loom__PutObject *p)
{
    char *key = loom_xasprintf("%s\n%s", ag->name, p->hash);
    upload_t *u = loom_smap_get(&s->uploads, key);
    if (p->offset == 0 && p->data.len == 0) {
        /* The question: does loomd lack it? A new question restarts. */
        if (u && !u->committing) upload_drop(s, u);
        free(key);
        if (loom_objects_has(s->objects, p->hash) || p->size == 0) {
            if (!loom_objects_has(s->objects, p->hash)) {
                /* An empty file: store it now, it is its own proof. */
                loom_obj_writer_t *w = NULL;
                char why[128];
                if (loom_objects_writer_new(s->objects, &w) != 0 ||
                    loom_objects_writer_commit(&w, p->hash, why, sizeof why) != 0) {
                    loom_objects_writer_abort(&w);
                    send_put_ack(s, ag->name, p->attempt_id, p->hash, 0, false,
                                 "cannot store an empty object (wrong hash?)");
                    return;
                }
            }
            send_put_ack(s, ag->name, p->attempt_id, p->hash, p->size, true, NULL);
            return;
        }
        send_put_ack(s, ag->name, p->attempt_id, p->hash, 0, false, NULL);
        return;
    }
    if (!u && p->offset == 0) {
        char full[256];
        if (loom_sched_disk_full(s, full, sizeof full)) {
            free(key);
            send_put_ack(s, ag->name, p->attempt_id, p->hash, 0, false, full);
            return;
        }
        u = loom_xcalloc(1, sizeof *u);
        u->s = s;
        u->key = key;
        key = NULL;
        u->agent = loom_xstrdup(ag->name);
        snprintf(u->hash, sizeof u->hash, "%s", p->hash);
        u->attempt_id = p->attempt_id;
        u->size = p->size;
        u->work.data = u;
        u->write_work.data = u;
        if (loom_objects_writer_new(s->objects, &u->writer) != 0) {
            send_put_ack(s, ag->name, p->attempt_id, p->hash, 0, false,
                         "loomd cannot create a temporary file for the object");
            upload_free(u);
            return;
        }
        loom_smap_put(&s->uploads, u->key, u);
    }
    free(key);
    if (!u || u->committing || p->offset != u->expected || p->size != u->size ||
        p->data.len > u->size - u->expected) {
        /* Out of order (a chunk from before a reconnect): say where we are
         * (what is written, or queued to be: a write that fails fails the
         * whole upload). */
        send_put_ack(s, ag->name, p->attempt_id, p->hash, u ? u->expected : 0, false, NULL);
        return;
    }
    chunk_t *c = loom_xmalloc(sizeof *c + p->data.len);
    c->next = NULL;
    c->len = p->data.len;
    memcpy(c->data, p->data.data, p->data.len);
    if (u->queued_tail)
        u->queued_tail->next = c;
    else
        u->queued = c;
    u->queued_tail = c;
    u->expected += p->data.len;
    if (!u->writing) write_next(u);
}

void artifacts_free_uploads(loom_sched_t *s)
{
    void *v;
    for (size_t i = 0; loom_map_next(&s->uploads, &i, &v);)
        if (!((upload_t *)v)->committing && !((upload_t *)v)->writing) upload_free(v);
    loom_map_free(&s->uploads);
}

/* ---- inputs ---- */

typedef struct {
    Loom__Input **items;
    size_t n, cap;
    const char *want; /* path asked for; NULL: every file ("TASK:*") */
    const char *prefix;
    const char *from_task;
    uint64_t from_attempt;
    loom_sched_t *s;
    uint64_t attempt_id;
    bool found;
} inputs_t;

static int add_input(void *ud, const loom_artifact_row_t *a)
{
    inputs_t *in = ud;
    if (in->want && strcmp(in->want, a->path) != 0) return 0;
    in->found = true;
    if (in->n == in->cap) {
        in->cap = in->cap ? in->cap * 2 : 8;
        in->items = loom_xrealloc(in->items, in->cap * sizeof *in->items);
    }
    Loom__Input *x = loom_xmalloc(sizeof *x);
    loom__input__init(x);
    x->path = in->prefix ? loom_xasprintf("%s/%s", in->prefix, a->path) : loom_xstrdup(a->path);
    x->hash = loom_xstrdup(a->hash);
    x->size = a->size;
    x->mode = a->mode;
    in->items[in->n++] = x;
    if (in->attempt_id)
        loom_store_attempt_input(in->s->store, in->attempt_id, x->path, a->hash, in->from_task,
                                 a->attempt_id ? a->attempt_id : in->from_attempt);
    return 0;
}

void inputs_free(Loom__Input **items, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(items[i]->path);
        free(items[i]->hash);
        free(items[i]);
    }
    free(items);
}

int inputs_resolve(loom_sched_t *s, const task_t *t, uint64_t attempt_id, Loom__Input ***out,
                   size_t *n_out, char *why, size_t whylen)
{
    const loom_dag_task_t *dt = dag_task(t);
    const run_t *r = t->run;
    inputs_t in = {.s = s, .attempt_id = attempt_id};
    *out = NULL;
    *n_out = 0;
    for (size_t i = 0; i < dt->n_inputs; i++) {
        const char *spec = dt->inputs[i], *colon = strchr(spec, ':');
        char task[128];
        snprintf(task, sizeof task, "%.*s", (int)(colon - spec), spec);
        ssize_t di = loom_dag_find(r->dag, task);
        const char *path = colon + 1;
        in.want = strcmp(path, "*") == 0 ? NULL : path;
        in.from_task = task;
        bool foreach = di >= 0 && (r->dag->tasks[di].foreach || r->dag->tasks[di].foreach_json);
        bool any = false;
        for (uint32_t k = 0; di >= 0 && k < r->n_tasks; k++) {
            const task_t *up = &r->tasks[k];
            if (up->dag_idx != (uint32_t)di || up->state != TASK_SUCCEEDED) continue;
            /* A foreach task's copies each bring theirs, under "TASK[i]/". */
            in.prefix = foreach ? up->name : NULL;
            in.from_attempt = up->last_attempt_id;
            in.found = false;
            if (loom_store_task_artifacts(s->store, up->id, add_input, &in) != 0) {
                snprintf(why, whylen, "input \"%s\": cannot read the artifacts", spec);
                inputs_free(in.items, in.n);
                return LOOM_EDB;
            }
            any = any || in.found;
        }
        if (!any) {
            snprintf(why, whylen, "input \"%s\": task \"%s\" left no %s%s%s", spec, task,
                     in.want ? "file \"" : "outputs", in.want ? in.want : "",
                     in.want ? "\" among its outputs" : "");
            inputs_free(in.items, in.n);
            return LOOM_ENOTFOUND;
        }
    }
    /* Two inputs on one path would overwrite each other. */
    for (size_t i = 0; i < in.n; i++)
        for (size_t j = i + 1; j < in.n; j++)
            if (strcmp(in.items[i]->path, in.items[j]->path) == 0 &&
                strcmp(in.items[i]->hash, in.items[j]->hash) != 0) {
                snprintf(why, whylen, "inputs: two different files for \"%s\"", in.items[i]->path);
                inputs_free(in.items, in.n);
                return LOOM_EINVAL;
            }
    *out = in.items;
    *n_out = in.n;
    return 0;
}

/* ---- a finished attempt's outputs ---- */

char *artifacts_check(loom_sched_t *s, const task_t *t, const Loom__Finished *f)
{
    if (f->outputs_error && *f->outputs_error)
        return loom_xasprintf("outputs: %s", f->outputs_error);
    const loom_dag_task_t *dt = dag_task(t);
    if (dt->n_outputs && f->n_artifacts == 0)
        return loom_xstrdup("outputs: the agent reported no files (is it older than loomd?)");
    for (size_t i = 0; i < f->n_artifacts; i++)
        if (!loom_objects_has(s->objects, f->artifacts[i]->hash))
            return loom_xasprintf("outputs: \"%s\" was not stored on loomd (object %.12s…)",
                                  f->artifacts[i]->path, f->artifacts[i]->hash);
    if (dt->model_path) {
        for (size_t i = 0; i < f->n_artifacts; i++)
            if (strcmp(f->artifacts[i]->path, dt->model_path) == 0) return NULL;
        return loom_xasprintf("model: \"%s\" is not among the files the task left", dt->model_path);
    }
    return NULL;
}

/* A model event for other pipelines' event triggers; fired at the end of
 * the turn (triggers_flush), not from inside this attempt's handling. */
static void queue_event(loom_sched_t *s, const char *name, json_t *payload)
{
    if (!s->pending_events) s->pending_events = json_array();
    json_array_append_new(s->pending_events,
                          json_pack("{s:s,s:o}", "name", name, "payload", payload));
    sched_request_flush(s);
}

/* Moves `alias` to the new version if its metric beats the current one's. */
static void promote(loom_sched_t *s, const loom_dag_task_t *dt, uint32_t version,
                    const json_t *metrics, uint64_t run_id)
{
    const char *name = dt->model_name, *alias = dt->promote_alias, *metric = dt->promote_metric;
    json_t *mine = metric ? json_object_get(metrics, metric) : NULL;
    uint32_t current = 0;
    char why[256];
    bool better = true;
    if (!metric) {
        snprintf(why, sizeof why, "no metric to compare: the task's `if` was the gate");
        loom_store_model_alias_get(s->store, name, alias, &current);
    } else if (!json_is_number(mine)) {
        snprintf(why, sizeof why, "metric \"%s\" missing from the candidate's metrics", metric);
        better = false;
    } else if (loom_store_model_alias_get(s->store, name, alias, &current) == 0) {
        char *text = NULL;
        loom_store_model_version(s->store, name, current, &text);
        json_t *theirs_all = text ? json_loads(text, 0, NULL) : NULL;
        json_t *theirs = json_object_get(theirs_all, metric);
        double a = json_number_value(mine), b = json_number_value(theirs);
        if (!json_is_number(theirs))
            snprintf(why, sizeof why, "%s v%u has no %s: the candidate wins", alias, current,
                     metric);
        else if (dt->promote_lower ? a < b : a > b)
            snprintf(why, sizeof why, "%s %g beats %s v%u's %g", metric, a, alias, current, b);
        else {
            snprintf(why, sizeof why, "%s %g does not beat %s v%u's %g", metric, a, alias, current,
                     b);
            better = false;
        }
        json_decref(theirs_all);
        free(text);
    } else {
        snprintf(why, sizeof why, "no %s yet", alias);
    }
    LOG_INFO("model %s v%u %s %s: %s", name, version, better ? "becomes" : "stays behind", alias,
             why);
    if (!better) {
        queue_event(s, "model.gate",
                    json_pack("{s:s,s:i,s:s,s:b,s:s,s:I}", "model", name, "version", (int)version,
                              "alias", alias, "promoted", 0, "reason", why, "run_id",
                              (json_int_t)run_id));
        return;
    }
    loom_store_model_alias_set(s->store, name, alias, version, loom_unix_ms());
    queue_event(s, "model.alias",
                json_pack("{s:s,s:s,s:i,s:o,s:s,s:I}", "model", name, "alias", alias, "version",
                          (int)version, "previous", current ? json_integer(current) : json_null(),
                          "reason", why, "run_id", (json_int_t)run_id));
}

void artifacts_record(loom_sched_t *s, const attempt_t *a, const Loom__Finished *f,
                      const json_t *metrics)
{
    const task_t *t = a->task;
    const loom_dag_task_t *dt = dag_task(t);
    uint64_t now = loom_unix_ms();
    const Loom__Artifact *model = NULL;
    for (size_t i = 0; i < f->n_artifacts; i++) {
        const Loom__Artifact *x = f->artifacts[i];
        loom_artifact_row_t row = {.run_id = a->run->id,
                                   .task_id = t->id,
                                   .attempt_id = a->id,
                                   .task = t->name,
                                   .path = x->path,
                                   .hash = x->hash,
                                   .size = x->size,
                                   .mode = x->mode ? x->mode : 0644,
                                   .created_ms = now};
        loom_store_artifact_add(s->store, &row);
        if (dt->model_path && strcmp(x->path, dt->model_path) == 0) model = x;
    }
    if (dt->cache && t->cache_key)
        loom_store_cache_put(s->store, t->cache_key, a->run->id, t->id, a->id, now);
    if (!model) return;
    char *mtext = metrics ? json_dumps(metrics, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    loom_model_row_t m = {.name = dt->model_name,
                          .run_id = a->run->id,
                          .task = t->name,
                          .attempt_id = a->id,
                          .path = model->path,
                          .hash = model->hash,
                          .size = model->size,
                          .metrics_json = mtext,
                          .created_ms = now};
    uint32_t version = 0;
    if (loom_store_model_register(s->store, &m, &version) == 0) {
        LOG_INFO("model registered name=%s version=%u run=%llu", dt->model_name, version,
                 (unsigned long long)a->run->id);
        queue_event(s, "model.registered",
                    json_pack("{s:s,s:i,s:I,s:s,s:s,s:O?}", "model", dt->model_name, "version",
                              (int)version, "run_id", (json_int_t)a->run->id, "task", t->name,
                              "hash", model->hash, "metrics", metrics));
        if (dt->promote_alias) promote(s, dt, version, metrics, a->run->id);
    }
    free(mtext);
}

int loom_sched_model_alias(loom_sched_t *s, const char *name, const char *alias, uint32_t version)
{
    if (loom_store_model_version(s->store, name, version, NULL) != 0) return LOOM_ENOTFOUND;
    uint32_t current = 0;
    bool had = loom_store_model_alias_get(s->store, name, alias, &current) == 0;
    int rc = loom_store_model_alias_set(s->store, name, alias, version, loom_unix_ms());
    if (rc) return rc;
    if (!had || current != version)
        queue_event(s, "model.alias",
                    json_pack("{s:s,s:s,s:i,s:o,s:s}", "model", name, "alias", alias, "version",
                              (int)version, "previous", had ? json_integer(current) : json_null(),
                              "reason", "set by hand"));
    return loom_sched_commit(s);
}

void artifacts_fire_events(loom_sched_t *s)
{
    json_t *events = s->pending_events;
    s->pending_events = NULL;
    size_t i;
    json_t *e;
    json_array_foreach(events, i, e)
    {
        json_t *res = NULL;
        loom_sched_event(s, json_string_value(json_object_get(e, "name")), "loomd",
                         json_object_get(e, "payload"), NULL, &res);
        json_decref(res);
    }
    json_decref(events);
}

/* ---- the task cache ---- */

static void hash_str(crypto_generichash_state *st, const char *tag, const char *v)
{
    /* Length-prefixed, so that fields cannot run into each other. */
    uint64_t n = v ? strlen(v) : UINT64_MAX;
    crypto_generichash_update(st, (const unsigned char *)tag, strlen(tag) + 1);
    crypto_generichash_update(st, (const unsigned char *)&n, sizeof n);
    if (v) crypto_generichash_update(st, (const unsigned char *)v, strlen(v));
}

char *cache_key(loom_sched_t *s, const task_t *t, char *why, size_t whylen)
{
    const loom_dag_task_t *dt = dag_task(t);
    const run_t *r = t->run;
    char *shell = NULL, **argv = NULL;
    size_t argc = 0;
    if (!task_render(t, &shell, &argv, &argc, why, whylen)) return NULL;
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, 32);
    hash_str(&st, "pipeline", r->pipeline);
    hash_str(&st, "task", dt->name);
    hash_str(&st, "shell", shell);
    for (size_t i = 0; i < argc; i++) hash_str(&st, "arg", argv[i]);
    for (size_t i = 0; i < r->dag->n_env; i++) {
        hash_str(&st, "env", r->dag->env[i].name);
        hash_str(&st, "=", r->dag->env[i].value);
    }
    for (size_t i = 0; i < dt->n_env; i++) {
        hash_str(&st, "tenv", dt->env[i].name);
        hash_str(&st, "=", dt->env[i].value);
    }
    char *params = json_dumps(r->params, JSON_COMPACT | JSON_SORT_KEYS);
    hash_str(&st, "params", params);
    free(params);
    char *item =
        t->item ? json_dumps(t->item, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY) : NULL;
    hash_str(&st, "item", item);
    free(item);
    hash_str(&st, "bundle", r->bundle);
    for (size_t i = 0; i < dt->n_outputs; i++) hash_str(&st, "output", dt->outputs[i]);
    hash_str(&st, "metrics", dt->metrics);
    /* The inputs' content, by hash. */
    Loom__Input **in = NULL;
    size_t n_in = 0;
    if (dt->n_inputs) {
        if (inputs_resolve(s, t, 0, &in, &n_in, why, whylen) != 0) {
            free(shell);
            for (size_t i = 0; i < argc; i++) free(argv[i]);
            free(argv);
            return NULL;
        }
    }
    for (size_t i = 0; i < n_in; i++) {
        hash_str(&st, "input", in[i]->path);
        hash_str(&st, "hash", in[i]->hash);
    }
    inputs_free(in, n_in);
    free(shell);
    for (size_t i = 0; i < argc; i++) free(argv[i]);
    free(argv);
    unsigned char h[32];
    crypto_generichash_final(&st, h, sizeof h);
    char *hex = loom_xmalloc(65);
    sodium_bin2hex(hex, 65, h, sizeof h);
    return hex;
}

typedef struct {
    loom_sched_t *s;
    const task_t *t;
    uint64_t from_run;
} copy_ctx;

static int copy_artifact(void *ud, const loom_artifact_row_t *a)
{
    copy_ctx *c = ud;
    loom_artifact_row_t row = *a;
    row.run_id = c->t->run->id;
    row.task_id = c->t->id;
    row.task = c->t->name;
    row.cached_from = a->cached_from ? a->cached_from : c->from_run;
    row.created_ms = loom_unix_ms();
    return loom_store_artifact_add(c->s->store, &row);
}

char *cache_lookup(loom_sched_t *s, task_t *t)
{
    const loom_dag_task_t *dt = dag_task(t);
    free(t->cache_key);
    t->cache_key = NULL;
    if (!dt->cache) return NULL;
    char why[256];
    t->cache_key = cache_key(s, t, why, sizeof why);
    if (!t->cache_key) return NULL; /* the attempt will fail and say why */
    bool no_cache = false;
    loom_store_run_no_cache(s->store, t->run->id, &no_cache, false);
    uint64_t run_id, task_id, attempt_id;
    if (no_cache ||
        loom_store_cache_get(s->store, t->cache_key, &run_id, &task_id, &attempt_id) != 0)
        return NULL;
    /* Every object it left must still be stored (gc may have run). */
    loom_attempt_row_t arow;
    if (loom_store_attempt_get(s->store, attempt_id, &arow) != 0) return NULL;
    json_t *metrics = arow.metrics_json ? json_loads(arow.metrics_json, 0, NULL) : NULL;
    copy_ctx c = {s, t, run_id};
    if (loom_store_task_artifacts(s->store, task_id, copy_artifact, &c) != 0) {
        json_decref(metrics);
        return NULL;
    }
    json_decref(t->metrics);
    t->metrics = metrics;
    loom_store_task_cached_from(s->store, t->id, run_id);
    LOG_INFO("cached run=%llu task=%s from run=%llu", (unsigned long long)t->run->id, t->name,
             (unsigned long long)run_id);
    return loom_xasprintf("cached: the same command and inputs succeeded in run %llu",
                          (unsigned long long)run_id);
}
