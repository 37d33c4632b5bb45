/* One Slurm client command (sbatch, squeue, scancel, sinfo) run as a child
 * process on the agent's loop: its standard output and error are collected
 * (bounded), it is killed at its deadline, and one callback reports how it
 * ended. The loop never waits for the controller. */
#ifndef LOOM_AGENT_SLURM_CMD_H
#define LOOM_AGENT_SLURM_CMD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* Output past this is dropped (and the command reported failed): squeue's
 * answer for 10,000 jobs is well under it. */
#define SLURM_CMD_OUT_MAX (8u << 20)

typedef struct {
    bool ok;         /* exited 0, within its deadline, output within bounds */
    int exit_status; /* -1 when killed or not started */
    bool timed_out;
    const char *out; /* NUL-terminated; borrowed for the callback */
    size_t out_len;
    const char *err; /* stderr, or why it could not run */
} slurm_cmd_result_t;

typedef void (*slurm_cmd_cb)(void *ud, const slurm_cmd_result_t *res);

/* Starts argv (argv[0] searched in PATH) with stdin from /dev/null. The
 * callback always runs later from the loop, exactly once, also when the
 * command could not be started. */
void slurm_cmd_run(uv_loop_t *loop, const char *const *argv, uint64_t deadline_ms, slurm_cmd_cb cb,
                   void *ud);

#endif
