/* The local executor: the attempt's process runs on this host (runner.c). */
#include "executor.h"

static void *job_new(void *exec, uv_loop_t *loop, const loom_runner_cb_t *cb)
{
    (void)exec;
    return loom_runner_new(loop, cb);
}

static int start(void *job, const exec_spec_t *spec)
{
    return loom_runner_start(job, spec->run);
}

static int pid(const void *job)
{
    return loom_runner_pid(job);
}

static const char *job_id(const void *job)
{
    (void)job;
    return "";
}

static uint64_t started_unix_ms(const void *job)
{
    return loom_runner_started_unix_ms(job);
}

static void terminate(void *job)
{
    loom_runner_terminate(job);
}

static void pause_job(void *job, bool paused)
{
    loom_runner_pause(job, paused);
}

static void close_job(void *job, void (*on_closed)(void *ud), void *ud)
{
    loom_runner_close(job, on_closed, ud);
}

const executor_ops_t exec_local_ops = {
    .name = "local",
    .local = true,
    .job_new = job_new,
    .start = start,
    .pid = pid,
    .job_id = job_id,
    .started_unix_ms = started_unix_ms,
    .terminate = terminate,
    .pause = pause_job,
    .close = close_job,
};
