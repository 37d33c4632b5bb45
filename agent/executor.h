/* What runs an attempt's command: the local runner (a process on this host,
 * runner.c) or a Slurm job (exec_slurm.c). attempt.c drives either through
 * this table and the runner's callbacks (output bytes, one final result),
 * so preparing the folder, masking, logs, metrics and outputs are the same
 * whichever runs it. */
#ifndef LOOM_AGENT_EXECUTOR_H
#define LOOM_AGENT_EXECUTOR_H

#include "runner.h"

typedef struct {
    const loom_runner_spec_t *run; /* command, folder, environment, timeout */
    uint64_t attempt_id;
    const char *task;
    double cpus;           /* 0: the executor's default */
    uint64_t memory_bytes; /* 0: the executor's default */
    uint32_t n_gpus;
    const char *gpu_model; /* NULL or "": any model */
} exec_spec_t;

typedef struct {
    const char *name;
    /* The agent's own limits (cgroups) apply and Started goes as soon as
     * start returns; else the executor confines the job itself and calls
     * cb->on_started when the job really starts. */
    bool local;
    void *(*job_new)(void *exec, uv_loop_t *loop, const loom_runner_cb_t *cb);
    /* As loom_runner_start: on_exit always follows, from the loop. */
    int (*start)(void *job, const exec_spec_t *spec);
    int (*pid)(const void *job);
    /* The executor's name for the job ("slurm:1234"), or "". */
    const char *(*job_id)(const void *job);
    uint64_t (*started_unix_ms)(const void *job);
    void (*terminate)(void *job);
    void (*pause)(void *job, bool paused);
    void (*close)(void *job, void (*on_closed)(void *ud), void *ud);
} executor_ops_t;

extern const executor_ops_t exec_local_ops;
extern const executor_ops_t exec_slurm_ops;

#endif
