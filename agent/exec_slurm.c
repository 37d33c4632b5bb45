/* The Slurm executor (see exec_slurm.h). A job goes SUBMITTING (sbatch out)
 * -> QUEUED (has an id) -> RUNNING (squeue says so: Started goes) -> ENDED
 * (a terminal state: the rest of its output is read, then one result). */
#include "exec_slurm.h"
#include "slurm_cmd.h"

#include "loom/log.h"
#include "loom/map.h"
#include "loom/util.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* How much of an output file is read per job per tick: a job writing faster
 * is read over several ticks (its file keeps it; nothing is lost). */
#define TAIL_READ_MAX (256u << 10)

/* ENDING: Slurm says it is over; the rest of its output is being read. */
typedef enum { J_SUBMITTING, J_QUEUED, J_RUNNING, J_ENDING, J_ENDED } jstate;

typedef struct sjob {
    struct sjob *prev, *next;
    slurm_exec_t *x;
    loom_runner_cb_t cb;
    jstate state;
    char id[32];
    char label[48]; /* "slurm:ID" */
    uint64_t attempt_id;
    char *script, *paths[2];
    int fds[2];
    uint64_t timeout_ms, deadline_ms; /* agent-side time limit (Slurm's is in minutes) */
    uint64_t started_unix_ms;
    int cmds;           /* commands in flight about this job */
    int missing;        /* polls in a row that did not list it */
    uint64_t submitted; /* poll count when its id arrived */
    bool cancel_wanted, cancel_sent, timed_out, paused, closed, exited;
    bool asking_sacct; /* gone from squeue: sacct is asked for its end */
    slurm_row_t final; /* while ENDING: how it ended */
    char *start_error; /* reported from the next tick: never from inside start */
    void (*on_closed)(void *ud);
    void *closed_ud;
} sjob_t;

struct slurm_exec {
    uv_loop_t *loop;
    char *job_name, *dir, *partition, *account, *qos;
    char **options;
    size_t n_options;
    uint64_t poll_ms, tail_ms, cmd_timeout_ms;
    uv_timer_t timer;
    uint64_t ticks, polls;
    bool querying;
    int cmds; /* commands in flight */
    sjob_t *jobs;
    bool started, closing;
    void (*on_closed)(void *ud);
    void *closed_ud;
};

static void job_unlink(sjob_t *j)
{
    slurm_exec_t *x = j->x;
    if (j->prev)
        j->prev->next = j->next;
    else
        x->jobs = j->next;
    if (j->next) j->next->prev = j->prev;
}

static void job_free(sjob_t *j)
{
    for (int s = 0; s < 2; s++) {
        if (j->fds[s] >= 0) close(j->fds[s]);
        if (j->paths[s]) unlink(j->paths[s]);
        free(j->paths[s]);
    }
    if (j->script) unlink(j->script); /* it may hold secret values */
    free(j->script);
    free(j->start_error);
    free(j);
}

/* --- commands ------------------------------------------------------------- */

typedef struct {
    slurm_exec_t *x;
    sjob_t *j; /* NULL: about no one job */
    void (*done)(slurm_exec_t *x, sjob_t *j, const slurm_cmd_result_t *res, void *ud);
    void *ud;
} cmd_ctx_t;

static void maybe_release(sjob_t *j);
static void maybe_closed(slurm_exec_t *x);

static void on_cmd_done(void *ud, const slurm_cmd_result_t *res)
{
    cmd_ctx_t *c = ud;
    slurm_exec_t *x = c->x;
    sjob_t *j = c->j;
    x->cmds--;
    if (j) j->cmds--;
    c->done(x, j, res, c->ud);
    free(c);
    if (j) maybe_release(j);
    maybe_closed(x);
}

static void run_cmd(slurm_exec_t *x, sjob_t *j, const char *const *argv,
                    void (*done)(slurm_exec_t *, sjob_t *, const slurm_cmd_result_t *, void *),
                    void *ud)
{
    cmd_ctx_t *c = loom_xcalloc(1, sizeof *c);
    c->x = x;
    c->j = j;
    c->done = done;
    c->ud = ud;
    x->cmds++;
    if (j) j->cmds++;
    slurm_cmd_run(x->loop, argv, x->cmd_timeout_ms, on_cmd_done, c);
}

/* First line of a command's error output, for messages. */
static char *first_line(const char *s)
{
    while (*s == ' ' || *s == '\n') s++;
    return loom_xstrndup(s, strcspn(s, "\n"));
}

/* --- the executor --------------------------------------------------------- */

static void on_tick(uv_timer_t *t);

slurm_exec_t *slurm_exec_new(uv_loop_t *loop, const slurm_exec_config_t *cfg)
{
    slurm_exec_t *x = loom_xcalloc(1, sizeof *x);
    x->loop = loop;
    x->job_name = loom_xstrdup(cfg->job_name);
    x->dir = loom_xstrdup(cfg->dir);
    x->partition = cfg->partition && *cfg->partition ? loom_xstrdup(cfg->partition) : NULL;
    x->account = cfg->account && *cfg->account ? loom_xstrdup(cfg->account) : NULL;
    x->qos = cfg->qos && *cfg->qos ? loom_xstrdup(cfg->qos) : NULL;
    x->options = loom_xcalloc(cfg->n_options + 1, sizeof *x->options);
    for (size_t i = 0; i < cfg->n_options; i++) x->options[i] = loom_xstrdup(cfg->options[i]);
    x->n_options = cfg->n_options;
    x->poll_ms = cfg->poll_ms ? cfg->poll_ms : SLURM_POLL_MS;
    x->tail_ms = cfg->tail_ms ? cfg->tail_ms : SLURM_TAIL_MS;
    if (x->tail_ms > x->poll_ms) x->tail_ms = x->poll_ms;
    x->cmd_timeout_ms = cfg->cmd_timeout_ms ? cfg->cmd_timeout_ms : SLURM_CMD_TIMEOUT_MS;
    return x;
}

void slurm_exec_set_dir(slurm_exec_t *x, const char *dir)
{
    free(x->dir);
    x->dir = loom_xstrdup(dir);
}

void slurm_exec_start(slurm_exec_t *x)
{
    x->started = true;
    uv_timer_init(x->loop, &x->timer);
    x->timer.data = x;
    uv_timer_start(&x->timer, on_tick, x->tail_ms, x->tail_ms);
}

static void free_exec(uv_handle_t *h)
{
    slurm_exec_t *x = h->data;
    void (*cb)(void *) = x->on_closed;
    void *ud = x->closed_ud;
    for (size_t i = 0; i < x->n_options; i++) free(x->options[i]);
    free(x->options);
    free(x->job_name);
    free(x->dir);
    free(x->partition);
    free(x->account);
    free(x->qos);
    free(x);
    if (cb) cb(ud);
}

static void maybe_closed(slurm_exec_t *x)
{
    if (!x->closing || x->cmds > 0 || x->jobs || uv_is_closing((uv_handle_t *)&x->timer)) return;
    uv_close((uv_handle_t *)&x->timer, free_exec);
}

void slurm_exec_close(slurm_exec_t *x, void (*on_closed)(void *ud), void *ud)
{
    x->closing = true;
    x->on_closed = on_closed;
    x->closed_ud = ud;
    if (!x->started) {
        x->timer.data = x;
        free_exec((uv_handle_t *)&x->timer);
        return;
    }
    maybe_closed(x);
}

/* --- one job -------------------------------------------------------------- */

static void *job_new(void *exec, uv_loop_t *loop, const loom_runner_cb_t *cb)
{
    (void)loop;
    slurm_exec_t *x = exec;
    sjob_t *j = loom_xcalloc(1, sizeof *j);
    j->x = x;
    j->cb = *cb;
    j->fds[0] = j->fds[1] = -1;
    j->next = x->jobs;
    if (x->jobs) x->jobs->prev = j;
    x->jobs = j;
    return j;
}

/* Reports the end once: every output byte went before. */
static void deliver(sjob_t *j, loom_runner_result_t *res)
{
    if (j->exited) return;
    j->exited = true;
    j->state = J_ENDED;
    if (!res->ended_unix_ms) res->ended_unix_ms = loom_unix_ms();
    if (j->closed) return; /* the attempt let it go: no callback */
    j->cb.on_exit(j->cb.ud, res);
}

static void not_started(sjob_t *j, const char *why)
{
    loom_runner_result_t res = {0};
    char *error = loom_xasprintf("could not start: %s", why);
    res.exit_code = LOOM_RUNNER_EXIT_NOT_STARTED;
    res.started_unix_ms = loom_unix_ms();
    res.error = error;
    LOG_WARN("slurm job not submitted attempt=%llu: %s", (unsigned long long)j->attempt_id, why);
    deliver(j, &res);
    free(error);
}

static void on_scancel_done(slurm_exec_t *x, sjob_t *j, const slurm_cmd_result_t *res, void *ud)
{
    (void)x;
    (void)ud;
    if (!res->ok) LOG_WARN("scancel job=%s failed: %s", j->id, res->err);
}

static void send_scancel(sjob_t *j)
{
    if (j->cancel_sent || !j->id[0]) return;
    j->cancel_sent = true;
    LOG_INFO("scancel job=%s attempt=%llu", j->id, (unsigned long long)j->attempt_id);
    const char *argv[] = {"scancel", j->id, NULL};
    run_cmd(j->x, j, argv, on_scancel_done, NULL);
}

static void on_sbatch_done(slurm_exec_t *x, sjob_t *j, const slurm_cmd_result_t *res, void *ud)
{
    (void)ud;
    if (!res->ok || slurm_parse_sbatch(res->out, j->id, sizeof j->id) != 0) {
        char *err = first_line(res->ok ? res->out : res->err);
        char *why = loom_xasprintf("sbatch %s: %s", res->timed_out ? "timed out" : "failed",
                                   *err ? err : "no job id in its output");
        not_started(j, why);
        free(why);
        free(err);
        return;
    }
    snprintf(j->label, sizeof j->label, "slurm:%s", j->id);
    j->state = J_QUEUED;
    j->submitted = x->polls;
    LOG_INFO("slurm job submitted job=%s attempt=%llu", j->id, (unsigned long long)j->attempt_id);
    if (j->cancel_wanted || j->closed) send_scancel(j);
}

/* The batch script: the environment, the folder, then the command, exec'd
 * so that Slurm's signals reach it. Written 0600 (it may hold secrets) and
 * removed with the job. */
static char *script_text(const exec_spec_t *spec)
{
    const loom_runner_spec_t *r = spec->run;
    loom_buf_t b = {0};
    loom_buf_printf(&b, "#!/bin/sh\n# loom attempt %llu (task %s)\n",
                    (unsigned long long)spec->attempt_id, spec->task);
    for (const char *const *e = r->env; e && *e; e++) {
        const char *eq = strchr(*e, '=');
        if (!eq) continue;
        char *v = slurm_sh_quote(eq + 1);
        loom_buf_printf(&b, "export %.*s=%s\n", (int)(eq - *e), *e, v);
        free(v);
    }
    char *dir = slurm_sh_quote(r->dir);
    loom_buf_printf(&b, "cd %s || exit 127\nexec", dir);
    free(dir);
    if (r->argv) {
        for (const char *const *a = r->argv; *a; a++) {
            char *q = slurm_sh_quote(*a);
            loom_buf_printf(&b, " %s", q);
            free(q);
        }
    } else {
        char *q = slurm_sh_quote(r->shell ? r->shell : "");
        loom_buf_printf(&b, " /bin/sh -c %s", q);
        free(q);
    }
    loom_buf_puts(&b, "\n");
    return loom_buf_steal(&b);
}

static int write_file(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) return -errno;
    size_t len = strlen(text), off = 0;
    while (off < len) {
        ssize_t n = write(fd, text + off, len - off);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            int e = errno;
            close(fd);
            return -e;
        }
        off += (size_t)n;
    }
    return close(fd) == 0 ? 0 : -errno;
}

static int start(void *job, const exec_spec_t *spec)
{
    sjob_t *j = job;
    slurm_exec_t *x = j->x;
    j->attempt_id = spec->attempt_id;
    j->timeout_ms = spec->run->timeout_ms;
    j->script = loom_xasprintf("%s/%llu.sh", x->dir, (unsigned long long)spec->attempt_id);
    j->paths[0] = loom_xasprintf("%s/%llu.out", x->dir, (unsigned long long)spec->attempt_id);
    j->paths[1] = loom_xasprintf("%s/%llu.err", x->dir, (unsigned long long)spec->attempt_id);
    char *text = script_text(spec);
    int rc = mkdir(spec->run->dir, 0700) == 0 || errno == EEXIST ? 0 : -errno;
    if (rc == 0) rc = write_file(j->script, text, 0700);
    free(text);
    for (int s = 0; s < 2 && rc == 0; s++) rc = write_file(j->paths[s], "", 0600);
    j->state = J_SUBMITTING;
    if (rc != 0) {
        j->start_error =
            loom_xasprintf("writing the batch script %s: %s", j->script, strerror(-rc));
        return -1;
    }
    char *opts[24];
    int n = 0;
    opts[n++] = loom_xstrdup("sbatch");
    opts[n++] = loom_xstrdup("--parsable");
    opts[n++] = loom_xasprintf("--job-name=%s", x->job_name);
    opts[n++] = loom_xasprintf("--chdir=%s", spec->run->dir);
    opts[n++] = loom_xasprintf("--output=%s", j->paths[0]);
    opts[n++] = loom_xasprintf("--error=%s", j->paths[1]);
    opts[n++] = loom_xstrdup("--open-mode=append");
    opts[n++] = loom_xasprintf("--comment=loom-attempt-%llu", (unsigned long long)j->attempt_id);
    opts[n++] = loom_xstrdup("--nodes=1");
    opts[n++] = loom_xstrdup("--ntasks=1");
    /* A job lost with its node comes back to loom (NODE_FAIL), which retries
     * it by its own policy and counts it, rather than Slurm requeueing it
     * behind loom's back. */
    opts[n++] = loom_xstrdup("--no-requeue");
    if (x->partition) opts[n++] = loom_xasprintf("--partition=%s", x->partition);
    if (x->account) opts[n++] = loom_xasprintf("--account=%s", x->account);
    if (x->qos) opts[n++] = loom_xasprintf("--qos=%s", x->qos);
    if (spec->cpus > 0)
        opts[n++] = loom_xasprintf("--cpus-per-task=%u", (unsigned)ceil(spec->cpus));
    if (spec->memory_bytes)
        opts[n++] = loom_xasprintf(
            "--mem=%lluM", (unsigned long long)((spec->memory_bytes + (1 << 20) - 1) >> 20));
    if (spec->n_gpus) {
        if (spec->gpu_model && *spec->gpu_model)
            opts[n++] = loom_xasprintf("--gpus=%s:%u", spec->gpu_model, spec->n_gpus);
        else
            opts[n++] = loom_xasprintf("--gpus=%u", spec->n_gpus);
    }
    /* Slurm counts time limits in whole minutes: its limit is the next whole
     * minute, a backstop; the agent enforces the exact one (on_tick). */
    if (j->timeout_ms)
        opts[n++] =
            loom_xasprintf("--time=%llu", (unsigned long long)((j->timeout_ms + 59999) / 60000));
    const char **argv = loom_xcalloc((size_t)n + x->n_options + 2, sizeof *argv);
    int k = 0;
    for (int i = 0; i < n; i++) argv[k++] = opts[i];
    for (size_t i = 0; i < x->n_options; i++) argv[k++] = x->options[i];
    argv[k++] = j->script;
    argv[k] = NULL;
    run_cmd(x, j, argv, on_sbatch_done, NULL);
    free(argv);
    for (int i = 0; i < n; i++) free(opts[i]);
    return 0;
}

static int pid(const void *job)
{
    (void)job;
    return 0;
}

static const char *job_id(const void *job)
{
    const sjob_t *j = job;
    return j->label;
}

static uint64_t started_unix_ms(const void *job)
{
    const sjob_t *j = job;
    return j->started_unix_ms;
}

static void terminate(void *job)
{
    sjob_t *j = job;
    if (j->state >= J_ENDING) return;
    j->cancel_wanted = true;
    send_scancel(j);
}

static void pause_job(void *job, bool paused)
{
    sjob_t *j = job;
    j->paused = paused; /* the file keeps what is not read yet */
}

static void maybe_release(sjob_t *j)
{
    if (!j->closed || j->cmds > 0) return;
    if (j->state < J_ENDING && j->id[0] && !j->cancel_sent) {
        send_scancel(j); /* let go while queued or running: it must not run on */
        return;
    }
    if (j->cmds > 0) return;
    job_unlink(j);
    void (*cb)(void *) = j->on_closed;
    void *ud = j->closed_ud;
    job_free(j);
    if (cb) cb(ud);
}

static void close_job(void *job, void (*on_closed)(void *ud), void *ud)
{
    sjob_t *j = job;
    j->closed = true;
    j->on_closed = on_closed;
    j->closed_ud = ud;
    /* Released from the next tick: never from inside the caller's callback. */
}

/* --- tracking ------------------------------------------------------------- */

/* Reads what the job wrote since the last read, up to max bytes a stream.
 * Returns whether both files are at their end (or absent). */
static bool tail(sjob_t *j, size_t max)
{
    char *buf = NULL;
    int eofs = 0;
    for (int s = 0; s < 2; s++) {
        if (j->fds[s] < 0) j->fds[s] = open(j->paths[s], O_RDONLY | O_CLOEXEC);
        if (j->fds[s] < 0) {
            eofs++;
            continue;
        }
        size_t got = 0;
        while (got < max) {
            if (!buf) buf = loom_xmalloc(64 << 10);
            ssize_t n = read(j->fds[s], buf, 64 << 10);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) {
                eofs++;
                break;
            }
            got += (size_t)n;
            if (!j->closed) j->cb.on_output(j->cb.ud, (loom_runner_stream)s, buf, (size_t)n);
        }
    }
    free(buf);
    return eofs == 2;
}

static void mark_running(sjob_t *j)
{
    if (j->state == J_RUNNING) return;
    j->state = J_RUNNING;
    j->started_unix_ms = loom_unix_ms();
    if (j->timeout_ms) j->deadline_ms = uv_now(j->x->loop) + j->timeout_ms;
    LOG_INFO("slurm job running job=%s attempt=%llu", j->id, (unsigned long long)j->attempt_id);
    if (j->cb.on_started && !j->closed) j->cb.on_started(j->cb.ud);
}

static bool terminal(const char *st)
{
    static const char *const states[] = {"COMPLETED",     "FAILED",    "CANCELLED",   "TIMEOUT",
                                         "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED",   "BOOT_FAIL",
                                         "DEADLINE",      "REVOKED",   "SPECIAL_EXIT"};
    for (size_t i = 0; i < sizeof states / sizeof states[0]; i++)
        if (strcmp(st, states[i]) == 0) return true;
    return false;
}

/* The job is over and its output read to the end: one result. */
static void finish(sjob_t *j)
{
    const slurm_row_t *row = &j->final;
    const char *st = row->state;
    bool ran = j->started_unix_ms != 0;
    loom_runner_result_t res = {0};
    res.started = ran;
    res.started_unix_ms = ran ? j->started_unix_ms : loom_unix_ms();
    res.exit_code = WIFEXITED(row->wait_status) ? WEXITSTATUS(row->wait_status) : 0;
    res.signal = WIFSIGNALED(row->wait_status) ? WTERMSIG(row->wait_status) : 0;
    if (!ran) res.exit_code = -1; /* never ran: no exit code of its own */
    res.timed_out = j->timed_out || strcmp(st, "TIMEOUT") == 0 || strcmp(st, "DEADLINE") == 0;
    res.oom_killed = strcmp(st, "OUT_OF_MEMORY") == 0;
    res.lost = strcmp(st, "NODE_FAIL") == 0 || strcmp(st, "PREEMPTED") == 0 ||
               strcmp(st, "BOOT_FAIL") == 0 || strcmp(st, "REVOKED") == 0;
    char *error = NULL;
    if (res.lost)
        error = loom_xasprintf("slurm job %s ended %s (%s)", j->id, st, row->reason);
    else if (res.oom_killed)
        error = loom_xasprintf("slurm job %s: out of memory (OUT_OF_MEMORY)", j->id);
    else if (strcmp(st, "TIMEOUT") == 0 && !j->timed_out)
        error = loom_xasprintf("slurm job %s hit Slurm's time limit (TIMEOUT)", j->id);
    else if (res.exit_code == 0 && res.signal == 0 && strcmp(st, "COMPLETED") != 0 &&
             !j->cancel_wanted && !res.timed_out)
        error = loom_xasprintf("slurm job %s ended %s (%s)", j->id, st, row->reason);
    res.error = error;
    LOG_INFO("slurm job ended job=%s attempt=%llu state=%s exit=%d signal=%d", j->id,
             (unsigned long long)j->attempt_id, st, res.exit_code, res.signal);
    deliver(j, &res);
    free(error);
}

/* Reads the rest of an ended job's output: at once what is there (the
 * common case: little), and over the following ticks what is more, while
 * output reading is not paused for lack of acknowledgements. */
static void drain(sjob_t *j, size_t max)
{
    if (j->paused && !j->closed) return;
    if (tail(j, max)) finish(j);
}

static void ended(sjob_t *j, const slurm_row_t *row)
{
    bool ran = j->state == J_RUNNING || strcmp(row->state, "CANCELLED") != 0 || j->timed_out;
    if (ran) mark_running(j);
    j->final = *row;
    j->state = J_ENDING;
    drain(j, TAIL_READ_MAX * 16);
}

static void lost_job(sjob_t *j, const char *why)
{
    slurm_row_t gone = {.wait_status = 0};
    snprintf(gone.id, sizeof gone.id, "%s", j->id);
    snprintf(gone.state, sizeof gone.state, "NODE_FAIL");
    snprintf(gone.reason, sizeof gone.reason, "%.150s", why);
    ended(j, &gone);
}

static void on_sacct_done(slurm_exec_t *x, sjob_t *unused, const slurm_cmd_result_t *res, void *ud)
{
    (void)unused;
    (void)ud;
    slurm_row_t *rows = NULL;
    char why[256] = "";
    int n = -1;
    if (!res->ok) {
        char *err = first_line(res->err);
        snprintf(why, sizeof why, "not in squeue, and sacct %s: %s",
                 res->timed_out ? "timed out" : "failed", err);
        free(err);
    } else {
        n = slurm_parse_sacct(res->out, &rows, why, sizeof why);
    }
    loom_map_t by_id = {0};
    for (int i = 0; i < n; i++) loom_smap_put(&by_id, rows[i].id, &rows[i]);
    for (sjob_t *j = x->jobs, *next; j; j = next) {
        next = j->next;
        if (!j->asking_sacct) continue;
        j->asking_sacct = false;
        if (j->state != J_QUEUED && j->state != J_RUNNING) continue;
        const slurm_row_t *row = n > 0 ? loom_smap_get(&by_id, j->id) : NULL;
        if (row && terminal(row->state))
            ended(j, row);
        else if (!row)
            lost_job(j, why[0] ? why : "in neither squeue nor sacct");
        /* else: sacct says it is still going: squeue is asked again */
    }
    loom_map_free(&by_id);
    free(rows);
}

/* Jobs squeue no longer lists (purged past MinJobAge, a controller that
 * lost its state): one sacct query for all of them, which has their end
 * where slurmdbd keeps accounting; without it, they are lost. */
static void ask_sacct(slurm_exec_t *x, sjob_t **missing, size_t n)
{
    loom_buf_t ids = {0};
    loom_buf_puts(&ids, "--jobs=");
    for (size_t i = 0; i < n; i++) {
        loom_buf_printf(&ids, "%s%s", i ? "," : "", missing[i]->id);
        missing[i]->asking_sacct = true;
    }
    const char *argv[] = {
        "sacct", "--noheader", "--parsable2", ids.data, "--format=JobID,State,ExitCode", NULL};
    run_cmd(x, NULL, argv, on_sacct_done, NULL);
    loom_buf_free(&ids);
}

static void on_squeue_done(slurm_exec_t *x, sjob_t *unused, const slurm_cmd_result_t *res, void *ud)
{
    (void)unused;
    uint64_t poll = (uint64_t)(uintptr_t)ud;
    x->querying = false;
    slurm_row_t *rows = NULL;
    char why[256];
    int n = -1;
    if (!res->ok)
        snprintf(why, sizeof why, "squeue %s: %s", res->timed_out ? "timed out" : "failed",
                 res->err);
    else
        n = slurm_parse_squeue(res->out, &rows, why, sizeof why);
    if (n < 0) {
        LOG_WARN("slurm tracking: %s (tried again in %llu ms)", why,
                 (unsigned long long)x->poll_ms);
        return;
    }
    loom_map_t by_id = {0};
    for (int i = 0; i < n; i++) loom_smap_put(&by_id, rows[i].id, &rows[i]);
    sjob_t **missing = NULL;
    size_t n_missing = 0;
    for (sjob_t *j = x->jobs, *next; j; j = next) {
        next = j->next;
        if (j->state != J_QUEUED && j->state != J_RUNNING) continue;
        const slurm_row_t *row = loom_smap_get(&by_id, j->id);
        if (!row) {
            /* Submitted before this query began, yet not listed. */
            if (j->submitted >= poll || j->asking_sacct || ++j->missing < SLURM_MISSING_POLLS)
                continue;
            missing = loom_xrealloc(missing, (n_missing + 1) * sizeof *missing);
            missing[n_missing++] = j;
            continue;
        }
        j->missing = 0;
        if (terminal(row->state))
            ended(j, row);
        else if (strcmp(row->state, "PENDING") != 0 && strcmp(row->state, "CONFIGURING") != 0)
            mark_running(j);
    }
    if (n_missing) ask_sacct(x, missing, n_missing);
    free(missing);
    loom_map_free(&by_id);
    free(rows);
}

static void poll_now(slurm_exec_t *x)
{
    bool any = false;
    for (sjob_t *j = x->jobs; j && !any; j = j->next)
        any = j->state == J_QUEUED || j->state == J_RUNNING;
    if (!any || x->querying) return;
    x->querying = true;
    uint64_t poll = ++x->polls;
    char *name = loom_xasprintf("--name=%s", x->job_name);
    /* --me: the controller filters by user (slurm_load_job_user), not
     * squeue after loading every job of the cluster. */
    const char *argv[] = {"squeue", "--noheader",
                          "--me",   "--states=all",
                          name,     "--Format=JobID:|,State:|,Reason:|,exit_code:|",
                          NULL};
    run_cmd(x, NULL, argv, on_squeue_done, (void *)(uintptr_t)poll);
    free(name);
}

static void on_tick(uv_timer_t *t)
{
    slurm_exec_t *x = t->data;
    uint64_t now = uv_now(x->loop);
    for (sjob_t *j = x->jobs, *next; j; j = next) {
        next = j->next;
        if (j->start_error && !j->exited) not_started(j, j->start_error);
        if (j->closed) {
            maybe_release(j);
            continue;
        }
        if (j->state == J_ENDING) drain(j, TAIL_READ_MAX);
        if (j->state != J_RUNNING) continue;
        if (!j->paused) tail(j, TAIL_READ_MAX);
        if (j->deadline_ms && now >= j->deadline_ms && !j->timed_out) {
            LOG_INFO("slurm job timed out job=%s attempt=%llu", j->id,
                     (unsigned long long)j->attempt_id);
            j->timed_out = true;
            j->cancel_wanted = true;
            send_scancel(j);
        }
    }
    if (x->closing) {
        maybe_closed(x);
        return;
    }
    if (++x->ticks * x->tail_ms >= x->poll_ms) {
        x->ticks = 0;
        poll_now(x);
    }
}

/* --- sweeping an earlier agent's jobs ------------------------------------- */

typedef struct {
    void (*cb)(void *ud, const char *error);
    void *ud;
} sweep_ctx_t;

static void on_sweep_done(slurm_exec_t *x, sjob_t *j, const slurm_cmd_result_t *res, void *ud)
{
    (void)x;
    (void)j;
    sweep_ctx_t *c = ud;
    char *err = res->ok ? NULL : first_line(res->err);
    char *why =
        err ? loom_xasprintf("scancel %s: %s", res->timed_out ? "timed out" : "failed", err) : NULL;
    c->cb(c->ud, why);
    free(why);
    free(err);
    free(c);
}

void slurm_exec_sweep(slurm_exec_t *x, void (*cb)(void *ud, const char *error), void *ud)
{
    sweep_ctx_t *c = loom_xcalloc(1, sizeof *c);
    c->cb = cb;
    c->ud = ud;
    char *name = loom_xasprintf("--name=%s", x->job_name);
    const char *argv[] = {"scancel", "--me", name, NULL};
    run_cmd(x, NULL, argv, on_sweep_done, c);
    free(name);
}

/* --- capacity ------------------------------------------------------------- */

typedef struct {
    void (*cb)(void *ud, const slurm_capacity_t *c, const char *error);
    void *ud;
} cap_ctx_t;

static void on_sinfo_done(slurm_exec_t *x, sjob_t *j, const slurm_cmd_result_t *res, void *ud)
{
    (void)j;
    cap_ctx_t *c = ud;
    slurm_capacity_t cap = {0};
    char why[256] = "";
    if (!res->ok)
        snprintf(why, sizeof why, "sinfo %s: %s", res->timed_out ? "timed out" : "failed",
                 res->err);
    else if (slurm_parse_sinfo(res->out, &cap, why, sizeof why) == 0 && cap.nodes == 0)
        snprintf(why, sizeof why, "sinfo: no node of partition %s is up",
                 x->partition ? x->partition : "(default)");
    c->cb(c->ud, &cap, why[0] ? why : NULL);
    slurm_capacity_free(&cap);
    free(c);
}

void slurm_exec_capacity(slurm_exec_t *x,
                         void (*cb)(void *ud, const slurm_capacity_t *c, const char *error),
                         void *ud)
{
    cap_ctx_t *c = loom_xcalloc(1, sizeof *c);
    c->cb = cb;
    c->ud = ud;
    char *part = x->partition ? loom_xasprintf("--partition=%s", x->partition) : NULL;
    const char *argv[] = {
        "sinfo", "--noheader", "--Node", "--format=%N|%c|%m|%G|%t", part ? part : NULL, NULL};
    run_cmd(x, NULL, argv, on_sinfo_done, c);
    free(part);
}

const executor_ops_t exec_slurm_ops = {
    .name = "slurm",
    .local = false,
    .job_new = job_new,
    .start = start,
    .pid = pid,
    .job_id = job_id,
    .started_unix_ms = started_unix_ms,
    .terminate = terminate,
    .pause = pause_job,
    .close = close_job,
};
