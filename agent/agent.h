/* loom-agent as a library object: one DEALER connection to loomd, the task
 * processes it is given, and the buffers (unacked log chunks, unacked
 * results) that make their output survive a loomd restart. Everything runs
 * on the caller's libuv loop; see proto/loom.proto for the protocol. */
#ifndef LOOM_AGENT_H
#define LOOM_AGENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "loom/util.h"

#define LOOM_AGENT_SESSION_LEN 16

typedef struct loom_agent loom_agent_t;

/* Which attempt folders stay once loomd has the result: the failed ones by
 * default (for a look at what went wrong), all, or none. */
typedef enum {
    LOOM_KEEP_FAILED = 0,
    LOOM_KEEP_ALL,
    LOOM_KEEP_NONE,
} loom_keep_attempts;

typedef struct {
    const char *name;          /* routing id and identity; default: hostname */
    const char *server;        /* loomd ZeroMQ endpoint, e.g. tcp://127.0.0.1:8421 */
    const char *work_dir;      /* attempts run in <work_dir>/attempts/<attempt_id>/ */
    uint32_t slots;            /* tasks at once; default: CPUs */
    uint32_t prefetch;         /* Dispatches held beyond slots, started as slots free */
    const char *const *labels; /* "key=value" */
    size_t n_labels;
    uint32_t hello_interval_ms; /* resend Hello until welcomed; default 1000 */
    uint64_t kill_grace_ms;     /* SIGTERM -> SIGKILL; default 5000 */
    size_t max_unacked_bytes;   /* log bytes held unacked before pausing reads; 16 MiB */
    void *zmq_ctx;              /* optional shared zmq context; else own one */
    loom_clock_t clock;         /* monotonic ms; zero value = real clock */
    const char *const *gpus;    /* "INDEX:MODEL:MEMORY[:UUID]": these GPUs, no detection */
    size_t n_gpus;
    bool no_gpu_detect;             /* neither NVML nor nvidia-smi: no GPUs unless given */
    const char *nvml_library;       /* default libnvidia-ml.so.1 (tests point elsewhere) */
    uint64_t gpu_detect_timeout_ms; /* nvidia-smi is killed after this; default 5000 */
    const char *sys_root;           /* tests: /proc and cgroups are read beneath it; default "/" */
    loom_keep_attempts keep_attempts; /* which attempt folders outlive their attempt */
    /* The object cache (bundle files, inputs) is kept under this many bytes
     * by evicting the least recently used objects; default 10 GiB. */
    uint64_t cache_size_bytes;
    /* CURVE: a join token ("loomjoin1.<server key>.<secret>", from `loom
     * agents token`) enrols this agent's key and gives loomd's key; or
     * server_key (Z85) when an administrator approves the key instead. Once
     * joined, loomd's key is pinned in WORK_DIR/curve/server.pub and these
     * are not needed again. */
    const char *join_token;
    const char *server_key;
    /* Called once when loomd refuses this agent for good (its key was
     * revoked, or its join token was refused); the agent has stopped
     * sending and the caller should stop it and exit non-zero. */
    void (*on_refused)(void *ud);
    void *refused_ud;
    /* Tasks run as this user (NULL: as the agent's own). Another user than
     * the agent's needs the agent to run as root. */
    const char *run_as;
    /* Agent variables a task may see beyond the allowlist: names, or
     * prefixes ending in '*'. */
    const char *const *pass_env;
    size_t n_pass_env;
    /* What runs attempts: NULL or "local", processes on this host; "slurm",
     * one Slurm batch job each (docs/slurm.md), with these settings (NULL:
     * the cluster's defaults). WORK_DIR must then be on a filesystem the
     * cluster's nodes share. */
    const char *executor;
    const char *slurm_partition, *slurm_account, *slurm_qos;
    const char *const *slurm_options; /* more sbatch options, e.g. "--constraint=ib" */
    size_t n_slurm_options;
    uint64_t slurm_poll_ms; /* one squeue per interval; default 2000 */
} loom_agent_config_t;

/* Copies what it needs from cfg. */
loom_agent_t *loom_agent_new(uv_loop_t *loop, const loom_agent_config_t *cfg);
/* Validates the configuration, prepares the work folder, looks at the host
 * (CPUs, memory, how task limits can be enforced), connects, detects GPUs on
 * the thread pool and then sends Hello. Returns 0, LOOM_EINVAL (bad name,
 * label or GPU, logged), LOOM_EIO (work folder) or LOOM_ENET. */
int loom_agent_start(loom_agent_t *a);
/* Asynchronous: terminates running tasks (SIGTERM, SIGKILL after the grace
 * period), sends their Finished best-effort, closes every handle, then calls
 * on_stopped (may be NULL) from the last close callback. Call once. */
void loom_agent_stop(loom_agent_t *a, void (*on_stopped)(void *ud), void *ud);
/* Drains: the agent takes no new attempt (a Dispatch is answered with a
 * Finished, exit code -1, error "agent NAME is draining"), says so in every
 * heartbeat, and calls on_drained once every attempt it holds has ended and
 * loomd has acknowledged its result and output, or once timeout_ms (0: no
 * limit) has passed, with timed_out set. on_drained runs from the loop,
 * never from inside this call; the caller then stops the agent. No-op when
 * draining or stopping already. */
void loom_agent_drain(loom_agent_t *a, uint64_t timeout_ms,
                      void (*on_drained)(void *ud, bool timed_out), void *ud);
bool loom_agent_draining(const loom_agent_t *a);
/* After on_stopped, or if never started. NULL-safe; sets *a to NULL. */
void loom_agent_destroy(loom_agent_t **a);

/* Read-only views for tests and logs. */
const char *loom_agent_name(const loom_agent_t *a);
bool loom_agent_welcomed(const loom_agent_t *a);
/* The agent's CURVE public key (Z85), once started. */
const char *loom_agent_public_key(const loom_agent_t *a);
/* loomd refused this agent for good (revoked, or a refused join token). */
bool loom_agent_refused(const loom_agent_t *a);
/* Processes running now (including ones being killed). */
uint32_t loom_agent_running(const loom_agent_t *a);
/* Attempts reported to loomd: running, or finished and not yet acked. */
size_t loom_agent_held(const loom_agent_t *a);
/* Log bytes sent or waiting, not yet acknowledged. */
size_t loom_agent_unacked_bytes(const loom_agent_t *a);
/* True while output reading is paused for lack of acknowledgements. */
bool loom_agent_output_paused(const loom_agent_t *a);
const uint8_t *loom_agent_session(const loom_agent_t *a);
/* Bytes in the object cache now, and objects evicted from it so far. */
uint64_t loom_agent_cache_bytes(const loom_agent_t *a);
uint64_t loom_agent_cache_evicted(const loom_agent_t *a);
/* How task limits are enforced: "cgroup v2", "cgroup v1" or "rlimit"
 * (after a successful start). */
const char *loom_agent_limit_mechanism(const loom_agent_t *a);

#endif
