/* The Slurm executor: each attempt becomes one batch job on the cluster the
 * agent's login node can reach. sbatch submits it; one squeue query per
 * interval tracks all of this agent's jobs (by job name); the job's output
 * files on the shared filesystem are followed live; scancel cancels it; sinfo
 * gives the capacity the agent reports. Every command runs as a child
 * process with a deadline, off the loop's critical path (slurm_cmd.c). */
#ifndef LOOM_AGENT_EXEC_SLURM_H
#define LOOM_AGENT_EXEC_SLURM_H

#include "executor.h"
#include "slurm_parse.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define SLURM_POLL_MS 2000
#define SLURM_TAIL_MS 250
#define SLURM_CMD_TIMEOUT_MS 30000
#define SLURM_MISSING_POLLS 3

typedef struct slurm_exec slurm_exec_t;

typedef struct {
    const char *job_name; /* every job of this agent: squeue --name */
    const char *dir;      /* batch scripts and output files: on the shared filesystem */
    const char *partition, *account, *qos; /* NULL: the cluster's defaults */
    const char *const *options;            /* more sbatch options, as given */
    size_t n_options;
    uint64_t poll_ms;        /* squeue interval; 0: SLURM_POLL_MS */
    uint64_t tail_ms;        /* output files read this often; 0: SLURM_TAIL_MS */
    uint64_t cmd_timeout_ms; /* a Slurm command is killed after this; 0: default */
} slurm_exec_config_t;

/* Copies cfg; uses the loop only once started. */
slurm_exec_t *slurm_exec_new(uv_loop_t *loop, const slurm_exec_config_t *cfg);
/* dir is absolute from here on (Slurm runs the job elsewhere). */
void slurm_exec_set_dir(slurm_exec_t *x, const char *dir);
void slurm_exec_start(slurm_exec_t *x);
/* Cancels nothing: stops the timer and waits for commands in flight, then
 * frees and calls on_closed(ud) (may be NULL) from the loop; never started,
 * it frees at once. Jobs must be closed first. */
void slurm_exec_close(slurm_exec_t *x, void (*on_closed)(void *ud), void *ud);

/* Cancels every job of this user with this agent's job name: jobs an
 * earlier run of the agent left (it was killed, or its host rebooted).
 * loomd has retried or will retry their attempts elsewhere; left running
 * they would run a task twice. cb gets NULL or why it failed. */
void slurm_exec_sweep(slurm_exec_t *x, void (*cb)(void *ud, const char *error), void *ud);

/* Runs sinfo; cb gets the capacity, or error (then c is empty). */
void slurm_exec_capacity(slurm_exec_t *x,
                         void (*cb)(void *ud, const slurm_capacity_t *c, const char *error),
                         void *ud);

#endif
