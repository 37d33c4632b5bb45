/* Task attempts on the agent: starting them, turning their output into
 * LogChunks and their exit into a Finished, and keeping both until loomd
 * acknowledges them, so that nothing is lost across a loomd restart. */
#include "agent_int.h"
#include "prepare.h"
#include "upload.h"
#include "mask.h"
#include "workdir.h"

#include "loom/err.h"
#include "loom/log.h"

#include <signal.h>
#include <sodium.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <string.h>

static attempt_t *find(const loom_agent_t *a, uint64_t id)
{
    for (attempt_t *t = a->attempts; t; t = t->next)
        if (t->id == id) return t;
    return NULL;
}

static bool held(const attempt_t *t)
{
    return !t->forgotten &&
           (t->queued || t->preparing || t->running || t->finishing || t->finished);
}

size_t loom_agent_held(const loom_agent_t *a)
{
    size_t n = 0;
    for (attempt_t *t = a->attempts; t; t = t->next) n += held(t);
    return n;
}

uint64_t *agent_held_ids(const loom_agent_t *a, size_t *n)
{
    uint64_t *ids = loom_xcalloc(loom_agent_held(a) + 1, sizeof *ids);
    size_t k = 0;
    for (attempt_t *t = a->attempts; t; t = t->next)
        if (held(t)) ids[k++] = t->id;
    *n = k;
    return ids;
}

static attempt_t *attempt_add(loom_agent_t *a, const Loom__Dispatch *d)
{
    attempt_t *t = loom_xcalloc(1, sizeof *t);
    t->agent = a;
    t->id = d->attempt_id;
    t->task = loom_xstrdup(d->task);
    t->timeout_ms = d->timeout_ms;
    t->metrics = d->metrics && *d->metrics ? loom_xstrdup(d->metrics) : NULL;
    t->outputs = loom_xcalloc(d->n_outputs + 1, sizeof *t->outputs);
    for (size_t i = 0; i < d->n_outputs; i++) t->outputs[i] = loom_xstrdup(d->outputs[i]);
    t->n_outputs = d->n_outputs;
    t->dir = loom_xasprintf("%s/attempts/%llu", a->work_dir, (unsigned long long)t->id);
    if (d->n_secrets) {
        t->mask = loom_mask_new();
        t->secret_files = loom_xcalloc(d->n_secrets, sizeof *t->secret_files);
    }
    for (size_t i = 0; i < d->n_secrets; i++) {
        const Loom__Secret *sec = d->secrets[i];
        loom_mask_add(t->mask, sec->value.data, sec->value.len);
        if (sec->file && *sec->file) t->secret_files[t->n_secret_files++] = loom_xstrdup(sec->file);
    }
    agent_folder_take(a, t->dir);
    t->prev = a->attempts_tail;
    if (a->attempts_tail)
        a->attempts_tail->next = t;
    else
        a->attempts = t;
    a->attempts_tail = t;
    return t;
}

static void drop_chunk_head(loom_agent_t *a, attempt_t *t)
{
    chunk_t *c = t->chunks;
    t->chunks = c->next;
    if (!t->chunks) t->chunks_tail = NULL;
    if (t->unsent == c) t->unsent = c->next;
    a->unacked_bytes -= c->data_len;
    free(c->msg);
    free(c);
}

static void drop_finished(attempt_t *t)
{
    free(t->finished);
    t->finished = NULL;
    t->finished_len = 0;
    t->finished_sent = false;
}

/* A result built while finishing owns its strings; its artifacts are
 * borrowed from the upload for as long as set_finished takes. */
static void free_result(Loom__Finished *f)
{
    if (!f) return;
    free(f->error);
    free(f->metrics_json);
    free(f->metrics_error);
    free(f->outputs_error);
    free(f);
}

/* The attempt's folder goes once loomd has its result, unless the keep
 * policy says otherwise. */
static void remove_folder(loom_agent_t *a, attempt_t *t)
{
    loom_keep_attempts keep = a->keep_attempts;
    if (!t->dir || keep == LOOM_KEEP_ALL || (keep == LOOM_KEEP_FAILED && !t->succeeded)) return;
    agent_folder_release(a, t->dir);
    t->dir = NULL;
}

/* The secrets' files go as soon as the process has exited: before its
 * outputs are collected (a glob must not upload one) and before the folder
 * is kept for a look (--keep-attempts). A few unlinks: done on the loop. */
static void remove_secret_files(attempt_t *t)
{
    if (!t->n_secret_files) return;
    workdir_remove_secrets(t->dir, t->secret_files, t->n_secret_files);
    for (size_t i = 0; i < t->n_secret_files; i++) free(t->secret_files[i]);
    t->n_secret_files = 0;
}

static void drop_msg(loom_msg_t *msg);
static void start_queued(loom_agent_t *a);

static void attempt_free(attempt_t *t)
{
    if (t->queued_msg) drop_msg(t->queued_msg);
    remove_secret_files(t);
    free(t->secret_files);
    loom_mask_destroy(&t->mask);
    upload_detach(t->upload);
    t->upload = NULL;
    for (size_t i = 0; i < t->n_outputs; i++) free(t->outputs[i]);
    free(t->outputs);
    limits_box_release(t->agent->limits, &t->box);
    while (t->chunks) drop_chunk_head(t->agent, t);
    drop_finished(t);
    free_result(t->exit_fin);
    free(t->task);
    free(t->cancel_reason);
    free(t->metrics);
    free(t->dir);
    free(t);
}

/* Frees the attempt once nothing about it is owed to loomd. */
#define DONE_RING 4096

static void remember_done(loom_agent_t *a, uint64_t id)
{
    if (!a->done_ring) a->done_ring = loom_xcalloc(DONE_RING, sizeof *a->done_ring);
    uint64_t old = a->done_ring[a->done_next];
    if (old) loom_map_del(&a->done, old);
    a->done_ring[a->done_next] = id;
    a->done_next = (a->done_next + 1) % DONE_RING;
    loom_map_put(&a->done, id, (void *)1);
}

static void maybe_free(loom_agent_t *a, attempt_t *t)
{
    if (t->queued || t->preparing || t->running || t->finishing || t->finished || t->chunks) return;
    remember_done(a, t->id);
    if (t->prev)
        t->prev->next = t->next;
    else
        a->attempts = t->next;
    if (t->next)
        t->next->prev = t->prev;
    else
        a->attempts_tail = t->prev;
    remove_folder(a, t);
    attempt_free(t);
    agent_check_drained(a);
}

static void pause_output(loom_agent_t *a, bool paused)
{
    if (a->paused == paused) return;
    a->paused = paused;
    LOG_INFO("%s task output: %zu bytes unacked agent=%s", paused ? "pausing" : "resuming",
             a->unacked_bytes, a->name);
    for (attempt_t *t = a->attempts; t; t = t->next)
        if (t->runner) a->exec->pause(t->runner, paused);
}

/* Sends what is unsent of one attempt: its chunks in order, then its
 * Finished. Returns false when a send failed (retried later). */
static bool flush_attempt(loom_agent_t *a, attempt_t *t)
{
    if (!a->welcomed || a->send_blocked || !a->zs) return false;
    while (t->unsent) {
        if (agent_send_raw(a, t->unsent->msg, t->unsent->len) != 0) goto blocked;
        t->unsent = t->unsent->next;
    }
    /* Its uploads report a failed send themselves. */
    if (t->upload && !upload_flush(t->upload)) return false;
    if (t->finished && !t->finished_sent) {
        if (agent_send_raw(a, t->finished, t->finished_len) != 0) goto blocked;
        t->finished_sent = true;
    }
    return true;
blocked:
    agent_send_failed(a);
    return false;
}

void agent_flush_all(loom_agent_t *a)
{
    for (attempt_t *t = a->attempts; t; t = t->next)
        if (!flush_attempt(a, t)) return;
}

void agent_resend_stale(loom_agent_t *a, uint64_t after_ms)
{
    uint64_t now = loom_clock_now(&a->clock);
    bool any = false;
    for (attempt_t *t = a->attempts; t; t = t->next) {
        bool outstanding =
            (t->chunks && t->unsent != t->chunks) || (t->finished && t->finished_sent);
        if (!outstanding || now - t->acked_ms < after_ms) continue;
        LOG_INFO("resending what loomd has not acknowledged attempt=%llu agent=%s",
                 (unsigned long long)t->id, a->name);
        t->unsent = t->chunks;
        t->finished_sent = false;
        t->acked_ms = now;
        any = true;
    }
    if (any) agent_flush_all(a);
}

void agent_rewind_all(loom_agent_t *a)
{
    for (attempt_t *t = a->attempts; t; t = t->next) {
        t->unsent = t->chunks;
        t->finished_sent = false;
        if (t->upload) upload_restart(t->upload);
    }
}

static void add_chunk(loom_agent_t *a, attempt_t *t, loom_runner_stream stream, const char *data,
                      size_t len)
{
    Loom__LogChunk lc = LOOM__LOG_CHUNK__INIT;
    lc.attempt_id = t->id;
    lc.seq = ++t->log_seq;
    lc.stream =
        stream == LOOM_RUNNER_STDERR ? LOOM__STREAM__STREAM_STDERR : LOOM__STREAM__STREAM_STDOUT;
    lc.data.data = (uint8_t *)data;
    lc.data.len = len;
    loom_msg_t m = LOOM__ENVELOPE__INIT;
    m.body_case = LOOM__ENVELOPE__BODY_LOG;
    m.log = &lc;
    chunk_t *c = loom_xcalloc(1, sizeof *c);
    if (loom_codec_encode(&m, &c->msg, &c->len) != 0) abort(); /* a chunk always fits */
    c->seq = lc.seq;
    c->data_len = len;
    if (!t->chunks) t->acked_ms = loom_clock_now(&a->clock);
    if (t->chunks_tail)
        t->chunks_tail->next = c;
    else
        t->chunks = c;
    t->chunks_tail = c;
    if (!t->unsent) t->unsent = c;
    a->unacked_bytes += len;
}

static void add_chunks(loom_agent_t *a, attempt_t *t, loom_runner_stream stream, const char *data,
                       size_t len)
{
    while (len > 0) {
        size_t n = len < LOOM_LOG_CHUNK_MAX ? len : LOOM_LOG_CHUNK_MAX;
        add_chunk(a, t, stream, data, n);
        data += n;
        len -= n;
    }
}

/* The bytes held back in case they began a secret: the pipes are at EOF. */
static void flush_mask(loom_agent_t *a, attempt_t *t)
{
    if (!t->mask || t->forgotten) return;
    for (int s = 0; s < LOOM_MASK_STREAMS; s++) {
        loom_buf_t rest = {0};
        loom_mask_flush(t->mask, s, &rest);
        add_chunks(a, t, (loom_runner_stream)s, rest.data, rest.len);
        loom_buf_free(&rest);
    }
}

static void on_runner_output(void *ud, loom_runner_stream stream, const char *data, size_t len)
{
    attempt_t *t = ud;
    loom_agent_t *a = t->agent;
    if (t->forgotten) return;
    loom_buf_t masked = {0};
    if (t->mask) {
        loom_mask_feed(t->mask, stream, data, len, &masked);
        data = masked.data;
        len = masked.len;
    }
    add_chunks(a, t, stream, data, len);
    loom_buf_free(&masked);
    flush_attempt(a, t);
    /* Backpressure: a child whose pipe we stop reading blocks on write, so
     * a slow or absent loomd delays output but never loses it. */
    if (!a->stopping && a->unacked_bytes > a->max_unacked) pause_output(a, true);
}

static void set_finished(loom_agent_t *a, attempt_t *t, Loom__Finished *f)
{
    t->succeeded = f->exit_code == 0 && f->signal == 0 && !f->refused && !f->timed_out &&
                   !f->cancelled && !(f->error && *f->error) &&
                   !(f->metrics_error && *f->metrics_error) &&
                   !(f->outputs_error && *f->outputs_error);
    loom_msg_t m = LOOM__ENVELOPE__INIT;
    m.body_case = LOOM__ENVELOPE__BODY_FINISHED;
    m.finished = f;
    f->attempt_id = t->id;
    f->log_seq = t->log_seq;
    drop_finished(t);
    t->acked_ms = loom_clock_now(&a->clock);
    if (loom_codec_encode(&m, &t->finished, &t->finished_len) != 0) {
        /* Only a list of artifacts can make it too large for one message
         * (LOOM_ARTIFACTS_MAX paths of up to a kilobyte each). */
        Loom__Finished copy = *f;
        char *why = loom_xasprintf("outputs: the list of %zu artifacts does not fit in one "
                                   "message of %d bytes",
                                   f->n_artifacts, LOOM_MSG_MAX);
        copy.artifacts = NULL;
        copy.n_artifacts = 0;
        copy.outputs_error = why;
        m.finished = &copy;
        t->succeeded = false;
        LOG_WARN("attempt=%llu task=%s: %s", (unsigned long long)t->id, t->task, why);
        if (loom_codec_encode(&m, &t->finished, &t->finished_len) != 0) abort();
        free(why);
    }
    flush_attempt(a, t);
}

static char *exit_error(const attempt_t *t, const loom_runner_result_t *res, uint64_t oom_limit)
{
    char dur[32];
    if (res->error) return loom_xstrdup(res->error);
    if (oom_limit) {
        limits_format_size(oom_limit, dur, sizeof dur);
        return loom_xasprintf("killed: out of memory, limit %s", dur);
    }
    if (t->cancelled) return loom_xasprintf("cancelled: %s", t->cancel_reason);
    if (res->timed_out) {
        loom_format_duration(t->timeout_ms, dur, sizeof dur);
        return loom_xasprintf("timed out after %s", dur);
    }
    if (t->stopped) return loom_xstrdup("agent stopped");
    return loom_xstrdup("");
}

static void on_runner_closed(void *ud)
{
    loom_agent_t *a = ud;
    agent_handle_closed(a);
}

/* Reads the attempt's OOM count, then lets its cgroups go: the process
 * group is gone (the runner killed it before reporting). */
static bool release_limits(loom_agent_t *a, attempt_t *t, const loom_runner_result_t *res,
                           uint64_t *limit)
{
    bool failed = !res->started || res->exit_code != 0 || res->signal != 0;
    bool oom = failed && limits_box_oom_killed(t->box, res->signal == SIGKILL);
    *limit = limits_box_memory(t->box);
    limits_box_release(a->limits, &t->box);
    if (oom)
        LOG_WARN("out of memory attempt=%llu task=%s limit_bytes=%llu", (unsigned long long)t->id,
                 t->task, (unsigned long long)*limit);
    return oom;
}

static Loom__Finished *exit_result(loom_agent_t *a, attempt_t *t, const loom_runner_result_t *res)
{
    uint64_t limit;
    bool oom = release_limits(a, t, res, &limit) || res->oom_killed;
    Loom__Finished *f = loom_xmalloc(sizeof *f);
    loom__finished__init(f);
    /* Owned strings from here on (free_result), not protobuf-c's shared "". */
    f->metrics_json = f->metrics_error = f->outputs_error = NULL;
    f->exit_code = res->exit_code;
    f->signal = res->signal;
    f->started_unix_ms = res->started_unix_ms;
    f->ended_unix_ms = res->ended_unix_ms;
    f->user_cpu_us = res->user_cpu_us;
    f->sys_cpu_us = res->sys_cpu_us;
    f->max_rss_bytes = res->max_rss_bytes;
    f->timed_out = res->timed_out;
    f->cancelled = t->cancelled;
    f->oom_killed = oom;
    f->lost = res->lost;
    f->memory_limit_bytes = limit;
    f->error = exit_error(t, res, oom ? limit : 0);
    return f;
}

/* The result of a finishing attempt is whole (metrics and outputs in it, or
 * why not): it goes to loomd. */
static void complete(loom_agent_t *a, attempt_t *t)
{
    Loom__Finished *f = t->exit_fin;
    t->exit_fin = NULL;
    t->finishing = false;
    if (!t->forgotten) set_finished(a, t, f);
    free_result(f);
    maybe_free(a, t);
    agent_maybe_close(a);
}

static void on_outputs_done(attempt_t *t, Loom__Artifact **arts, size_t n, const char *error)
{
    Loom__Finished *f = t->exit_fin;
    t->upload = NULL;
    f->artifacts = arts; /* borrowed: encoded by complete(), before it returns */
    f->n_artifacts = n;
    f->outputs_error = error ? loom_xstrdup(error) : NULL;
    complete(t->agent, t);
}

/* Ends an upload that will not be finished, with why in outputs_error. */
static void abandon_outputs(loom_agent_t *a, attempt_t *t, const char *why)
{
    Loom__Finished *f = t->exit_fin;
    upload_detach(t->upload);
    t->upload = NULL;
    if (t->cancel_outputs) {
        f->cancelled = true;
        free(f->error);
        f->error = loom_xasprintf("cancelled: %s", t->cancel_reason);
    }
    f->outputs_error = loom_xstrdup(why);
    complete(a, t);
}

/* After a successful exit and its metrics: the outputs, if it has any. */
static void collect_outputs(loom_agent_t *a, attempt_t *t)
{
    const Loom__Finished *f = t->exit_fin;
    if (t->forgotten || t->n_outputs == 0 || (f->metrics_error && *f->metrics_error))
        complete(a, t); /* failed anyway: nothing worth keeping */
    else if (t->cancel_outputs)
        abandon_outputs(a, t, "cancelled before the outputs were uploaded");
    else if (a->stopping)
        abandon_outputs(a, t, "agent stopped before the outputs were uploaded");
    else
        t->upload = upload_start(a, t, t->outputs, t->n_outputs, on_outputs_done);
}

static void on_metrics_read(attempt_t *t, const char *json, const char *error)
{
    Loom__Finished *f = t->exit_fin;
    if (error)
        LOG_WARN("no metrics attempt=%llu task=%s: %s", (unsigned long long)t->id, t->task, error);
    f->metrics_json = json ? loom_xstrdup(json) : NULL;
    f->metrics_error = error ? loom_xstrdup(error) : NULL;
    collect_outputs(t->agent, t);
}

static void on_runner_exit(void *ud, const loom_runner_result_t *res)
{
    attempt_t *t = ud;
    loom_agent_t *a = t->agent;
    t->running = false;
    a->running--;
    a->exec->close(t->runner, on_runner_closed, a);
    t->runner = NULL;
    flush_mask(a, t);
    remove_secret_files(t);
    LOG_INFO("attempt ended attempt=%llu task=%s exit=%d signal=%d chunks=%llu%s%s",
             (unsigned long long)t->id, t->task, res->exit_code, res->signal,
             (unsigned long long)t->log_seq, res->error ? " error=" : "",
             res->error ? res->error : "");
    if (t->forgotten) {
        limits_box_release(a->limits, &t->box);
    } else {
        Loom__Finished *f = exit_result(a, t, res);
        bool succeeded = res->started && res->exit_code == 0 && res->signal == 0 &&
                         !res->timed_out && !t->cancelled;
        if (succeeded && t->metrics) {
            /* Held (finishing) until the file is read and the outputs are
             * uploaded: the result waits. */
            t->finishing = true;
            t->exit_fin = f;
            prep_read_metrics(a, t, on_metrics_read);
        } else if (succeeded && t->n_outputs) {
            t->finishing = true;
            t->exit_fin = f;
            t->upload = upload_start(a, t, t->outputs, t->n_outputs, on_outputs_done);
        } else {
            set_finished(a, t, f);
            free_result(f);
        }
    }
    maybe_free(a, t);
    start_queued(a);
    agent_maybe_close(a);
}

static void finish_unstarted(loom_agent_t *a, attempt_t *t, int exit_code, const char *error)
{
    Loom__Finished f = LOOM__FINISHED__INIT;
    f.exit_code = exit_code;
    f.started_unix_ms = f.ended_unix_ms = loom_unix_ms();
    f.error = (char *)error;
    LOG_WARN("attempt not run attempt=%llu task=%s: %s", (unsigned long long)t->id, t->task, error);
    set_finished(a, t, &f);
}

/* A Dispatch the agent will not run at all: loomd places it again. */
static void finish_refused(loom_agent_t *a, attempt_t *t, const char *error)
{
    Loom__Finished f = LOOM__FINISHED__INIT;
    f.exit_code = -1;
    f.refused = true;
    f.started_unix_ms = f.ended_unix_ms = loom_unix_ms();
    f.error = (char *)error;
    LOG_WARN("attempt refused attempt=%llu task=%s: %s", (unsigned long long)t->id, t->task, error);
    set_finished(a, t, &f);
}

static void send_started(loom_agent_t *a, attempt_t *t)
{
    if (!a->welcomed) return; /* loomd learns of it from the next Hello */
    Loom__Started st = LOOM__STARTED__INIT;
    st.attempt_id = t->id;
    st.started_unix_ms = a->exec->started_unix_ms(t->runner);
    st.pid = (uint32_t)a->exec->pid(t->runner);
    st.job_id = (char *)a->exec->job_id(t->runner);
    loom_msg_t m = LOOM__ENVELOPE__INIT;
    m.body_case = LOOM__ENVELOPE__BODY_STARTED;
    m.started = &st;
    agent_send(a, &m);
}

static void on_job_started(void *ud)
{
    attempt_t *t = ud;
    const executor_ops_t *x = t->agent->exec;
    if (x->local)
        LOG_INFO("attempt started attempt=%llu task=%s pid=%d", (unsigned long long)t->id, t->task,
                 x->pid(t->runner));
    else
        LOG_INFO("attempt started attempt=%llu task=%s job=%s", (unsigned long long)t->id, t->task,
                 x->job_id(t->runner));
    send_started(t->agent, t);
}

/* The GPU model of the dispatched GPUs (the first one's), for executors
 * that ask a cluster for GPUs by model. */
static const char *gpu_model(const loom_agent_t *a, const Loom__Dispatch *d)
{
    for (size_t i = 0; i < a->gpus.n && d->n_gpus; i++)
        if (a->gpus.gpus[i].index == d->gpus[0]) return a->gpus.gpus[i].model;
    return NULL;
}

static int on_attempt_spawned(void *ud, int pid, char *why, size_t whylen)
{
    attempt_t *t = ud;
    return limits_box_enter(t->box, pid, why, whylen);
}

static void run_attempt(loom_agent_t *a, attempt_t *t, const Loom__Dispatch *d)
{
    char bad[512];
    const char *dir = t->dir;
    char **env = agent_dispatch_env(a, d, dir, bad, sizeof bad);
    if (env) env = agent_task_env(a, env);
    if (env && agent_task_dir_give(a, dir, false, bad, sizeof bad) != 0) {
        for (char **e = env; *e; e++) free(*e);
        free(env);
        env = NULL;
    }
    if (env && a->exec->local &&
        limits_box_new(a->limits, t->id, d->cpus, d->memory_bytes, d->n_gpus > 0, &t->box, bad,
                       sizeof bad) != 0) {
        agent_env_free(env);
        env = NULL;
    }
    if (!env) {
        char *error = loom_xasprintf("could not start: %s", bad);
        finish_unstarted(a, t, LOOM_RUNNER_EXIT_NOT_STARTED, error);
        free(error);
        return;
    }
    const char **argv = loom_xcalloc(d->n_argv + 1, sizeof *argv);
    for (size_t i = 0; i < d->n_argv; i++) argv[i] = d->argv[i];
    loom_runner_spec_t spec = {
        .argv = d->n_argv ? argv : NULL,
        .shell = d->shell,
        .dir = dir,
        .env = (const char *const *)env,
        .timeout_ms = d->timeout_ms,
        .kill_grace_ms = a->kill_grace_ms,
        .on_spawned = t->box ? on_attempt_spawned : NULL, /* a gate only where needed */
        .spawned_ud = t,
        .env_only = true,
        .user = a->run_as,
        .spawner = a->spawner,
    };
    loom_runner_cb_t cb = {on_runner_output, on_runner_exit, t, on_job_started};
    exec_spec_t espec = {
        .run = &spec,
        .attempt_id = t->id,
        .task = t->task,
        .cpus = d->cpus,
        .memory_bytes = d->memory_bytes,
        .n_gpus = (uint32_t)d->n_gpus,
        .gpu_model = gpu_model(a, d),
    };
    t->runner = a->exec->job_new(a->exec_state, a->loop, &cb);
    a->pending_closes++;
    t->running = true;
    a->running++;
    if (a->paused) a->exec->pause(t->runner, true);
    a->exec->start(t->runner, &espec); /* a failed start ends through on_exit */
    agent_env_free(env);
    free(argv);
}

static bool slot_free(const loom_agent_t *a)
{
    return a->running + a->preparing < a->slots;
}

/* Why the agent will not run d, or NULL. Each refusal is a Finished with
 * exit code -1 that loomd can tell from a run by the absence of Started. */
static char *refusal(const loom_agent_t *a, const Loom__Dispatch *d)
{
    if (a->draining) return loom_xasprintf("agent %s is draining", a->name);
    if (!slot_free(a) && a->n_queued >= a->prefetch)
        return loom_xasprintf("agent %s has no free slot", a->name);
    for (size_t i = 0; i < d->n_gpus; i++)
        if (!gpu_inv_has(&a->gpus, d->gpus[i]))
            return loom_xasprintf("agent %s has no GPU %u", a->name, d->gpus[i]);
    return NULL;
}

void agent_wipe_secrets(loom_msg_t *msg)
{
    if (!msg || msg->body_case != LOOM__ENVELOPE__BODY_DISPATCH) return;
    for (size_t i = 0; i < msg->dispatch->n_secrets; i++) {
        ProtobufCBinaryData *v = &msg->dispatch->secrets[i]->value;
        if (v->data) sodium_memzero(v->data, v->len);
    }
}

static void begin(loom_agent_t *a, attempt_t *t, loom_msg_t *msg);

void agent_dispatch(loom_agent_t *a, loom_msg_t *msg)
{
    const Loom__Dispatch *d = msg->dispatch;
    if (find(a, d->attempt_id) || loom_map_get(&a->done, d->attempt_id)) {
        LOG_DEBUG("duplicate dispatch ignored attempt=%llu", (unsigned long long)d->attempt_id);
        agent_wipe_secrets(msg);
        loom_codec_free(msg);
        return;
    }
    attempt_t *t = attempt_add(a, d);
    char *error = refusal(a, d);
    if (error) {
        finish_refused(a, t, error);
        free(error);
        agent_wipe_secrets(msg);
        loom_codec_free(msg);
        return;
    }
    if (!slot_free(a)) {
        /* Prefetched: it starts when a slot frees (start_queued). */
        t->queued = true;
        t->queued_msg = msg;
        if (a->queue_tail)
            a->queue_tail->q_next = t;
        else
            a->queue_head = t;
        a->queue_tail = t;
        a->n_queued++;
        LOG_DEBUG("attempt queued attempt=%llu task=%s queued=%u", (unsigned long long)t->id,
                  t->task, a->n_queued);
        return;
    }
    begin(a, t, msg);
}

/* Takes t out of the queue; its Dispatch is the caller's. */
static loom_msg_t *unqueue(loom_agent_t *a, attempt_t *t)
{
    attempt_t **p = &a->queue_head, *prev = NULL;
    while (*p && *p != t) {
        prev = *p;
        p = &(*p)->q_next;
    }
    if (*p) {
        *p = t->q_next;
        if (a->queue_tail == t) a->queue_tail = prev;
        a->n_queued--;
    }
    t->q_next = NULL;
    t->queued = false;
    loom_msg_t *msg = t->queued_msg;
    t->queued_msg = NULL;
    return msg;
}

static void drop_msg(loom_msg_t *msg)
{
    agent_wipe_secrets(msg);
    loom_codec_free(msg);
}

/* Starts prefetched attempts, oldest first, while slots are free. */
static void start_queued(loom_agent_t *a)
{
    while (a->queue_head && slot_free(a) && !a->stopping) {
        attempt_t *t = a->queue_head;
        begin(a, t, unqueue(a, t));
    }
}

/* Runs an accepted Dispatch: prepares its folder first where needed. */
static void begin(loom_agent_t *a, attempt_t *t, loom_msg_t *msg)
{
    const Loom__Dispatch *d = msg->dispatch;
    if (prep_needed(d)) {
        /* The slot is taken now; the process starts once the folder is
         * ready (agent_prepared). */
        t->preparing = true;
        a->preparing++;
        prep_start(a, t, msg);
        return;
    }
    run_attempt(a, t, d);
    drop_msg(msg);
}

void agent_prepared(loom_agent_t *a, attempt_t *t, const Loom__Dispatch *d, const char *error)
{
    t->preparing = false;
    a->preparing--;
    if (error)
        finish_unstarted(a, t, -1, error);
    else
        run_attempt(a, t, d);
    start_queued(a); /* the slot is free again if it did not start */
}

/* Stops preparing the attempt's folder: it will not run. */
static void stop_preparing(loom_agent_t *a, attempt_t *t)
{
    prep_detach(t);
    t->preparing = false;
    a->preparing--;
}

void agent_ack_log(loom_agent_t *a, uint64_t attempt_id, uint64_t seq)
{
    attempt_t *t = find(a, attempt_id);
    if (!t) return;
    if (t->chunks && t->chunks->seq <= seq) t->acked_ms = loom_clock_now(&a->clock);
    while (t->chunks && t->chunks->seq <= seq) drop_chunk_head(a, t);
    if (a->paused && a->unacked_bytes < a->max_unacked / 2) pause_output(a, false);
    maybe_free(a, t);
}

void agent_put_ack(loom_agent_t *a, const Loom__PutAck *ack)
{
    attempt_t *t = find(a, ack->attempt_id);
    upload_t *u = t ? t->upload : NULL;
    /* No attempt named: the upload sending this object now. */
    if (!ack->attempt_id) u = loom_smap_get(&a->uploading, ack->hash);
    if (u) upload_on_ack(u, ack);
}

void agent_kick_uploads(loom_agent_t *a)
{
    for (attempt_t *t = a->attempts; t; t = t->next)
        if (t->upload) upload_pump(t->upload);
}

void agent_tick_uploads(loom_agent_t *a)
{
    uint64_t now = loom_clock_now(&a->clock);
    for (attempt_t *t = a->attempts; t; t = t->next)
        if (t->upload) upload_tick(t->upload, now);
}

void agent_ack_finished(loom_agent_t *a, uint64_t attempt_id)
{
    attempt_t *t = find(a, attempt_id);
    if (!t || !t->finished) return;
    drop_finished(t);
    maybe_free(a, t);
}

void agent_cancel(loom_agent_t *a, uint64_t attempt_id, const char *reason, bool if_queued)
{
    attempt_t *t = find(a, attempt_id);
    if (!t || t->forgotten) {
        LOG_DEBUG("cancel for an attempt not held attempt=%llu", (unsigned long long)attempt_id);
        return;
    }
    if (if_queued) {
        /* loomd would rather run it elsewhere: only if it has not started. */
        if (!t->queued) return;
        LOG_INFO("handing back attempt=%llu task=%s before it started reason=%s",
                 (unsigned long long)t->id, t->task, reason);
        drop_msg(unqueue(a, t));
        char *why = loom_xasprintf("withdrawn before it started: %s", reason);
        finish_refused(a, t, why);
        free(why);
        return;
    }
    if (t->preparing || t->queued) {
        LOG_INFO("cancelling attempt=%llu task=%s before it started reason=%s",
                 (unsigned long long)t->id, t->task, reason);
        if (t->preparing) stop_preparing(a, t);
        if (t->queued) drop_msg(unqueue(a, t));
        t->cancelled = true;
        Loom__Finished f = LOOM__FINISHED__INIT;
        f.exit_code = -1;
        f.cancelled = true;
        f.started_unix_ms = f.ended_unix_ms = loom_unix_ms();
        f.error = loom_xasprintf("cancelled: %s", reason);
        set_finished(a, t, &f);
        free(f.error);
        start_queued(a);
        return;
    }
    if (t->finishing) {
        /* Exited: its result follows, unless its outputs are to be
         * uploaded, which may take long; then they are not. */
        if (t->n_outputs == 0 || t->cancel_outputs) return;
        LOG_INFO("cancelling attempt=%llu task=%s after it exited: its outputs are dropped "
                 "reason=%s",
                 (unsigned long long)t->id, t->task, reason);
        t->cancel_outputs = true;
        t->cancelled = true;
        free(t->cancel_reason);
        t->cancel_reason = loom_xstrdup(reason);
        if (t->upload) abandon_outputs(a, t, "cancelled before the outputs were uploaded");
        return;
    }
    if (!t->running) {
        /* Already over: loomd has settled the attempt without our result. */
        drop_finished(t);
        maybe_free(a, t);
        return;
    }
    if (t->cancelled) return;
    LOG_INFO("cancelling attempt=%llu task=%s reason=%s", (unsigned long long)t->id, t->task,
             reason);
    t->cancelled = true;
    t->cancel_reason = loom_xstrdup(reason);
    a->exec->terminate(t->runner);
}

void agent_forget_attempt(loom_agent_t *a, uint64_t attempt_id)
{
    attempt_t *t = find(a, attempt_id);
    if (!t || t->forgotten) return;
    LOG_INFO("forgetting attempt=%llu task=%s (no longer current)", (unsigned long long)t->id,
             t->task);
    t->forgotten = true;
    if (t->queued) drop_msg(unqueue(a, t));
    if (t->preparing) {
        stop_preparing(a, t);
        start_queued(a);
    }
    if (t->upload) {
        upload_detach(t->upload);
        t->upload = NULL;
        t->finishing = false;
        free_result(t->exit_fin);
        t->exit_fin = NULL;
    }
    while (t->chunks) drop_chunk_head(a, t);
    drop_finished(t);
    if (t->running) a->exec->terminate(t->runner);
    if (a->paused && a->unacked_bytes < a->max_unacked / 2) pause_output(a, false);
    maybe_free(a, t);
}

void agent_stop_attempts(loom_agent_t *a)
{
    /* Stopping must not wait for acks that may never come. */
    pause_output(a, false);
    for (attempt_t *t = a->attempts, *next; t; t = next) {
        next = t->next;
        if (t->upload) {
            t->stopped = true;
            abandon_outputs(a, t, "agent stopped before the outputs were uploaded");
            continue;
        }
        if (t->queued) {
            /* Never started: loomd places it again. */
            drop_msg(unqueue(a, t));
            t->stopped = true;
            finish_refused(a, t, "agent stopped before it started");
            continue;
        }
        if (t->preparing) {
            stop_preparing(a, t);
            t->stopped = true;
            finish_unstarted(a, t, -1, "agent stopped");
        }
        if (!t->running) continue;
        t->stopped = true;
        a->exec->terminate(t->runner);
    }
}

void agent_free_attempts(loom_agent_t *a)
{
    agent_folders_free(a);
    while (a->attempts) {
        attempt_t *t = a->attempts;
        a->attempts = t->next;
        attempt_free(t);
    }
    a->attempts_tail = NULL;
}
