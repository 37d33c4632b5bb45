/* Inside the agent: the state shared by agent.c (the connection to loomd)
 * and attempt.c (task attempts and their unacknowledged output). */
#ifndef LOOM_AGENT_INT_H
#define LOOM_AGENT_INT_H

#include "agent.h"
#include "cgroup.h"
#include "gpu.h"
#include "task_limits.h"
#include "runner.h"
#include "executor.h"

#include "loom/codec.h"
#include "loom/map.h"
#include "loom/zsock.h"

/* One LogChunk kept until loomd acknowledges it, encoded once so that a
 * resend sends exactly the bytes sent before. */
typedef struct chunk {
    struct chunk *next;
    uint64_t seq;
    size_t data_len; /* output bytes, counted against max_unacked */
    uint8_t *msg;
    size_t len;
} chunk_t;

struct prep;
struct fetcher;
struct upload;
struct cache;

/* An attempt lives while its working folder is prepared, while its process
 * runs, while its metrics are read and its outputs collected and uploaded,
 * while its Finished is unacked, or while any of its chunks is unacked. */
typedef struct attempt {
    struct attempt *prev, *next;
    loom_agent_t *agent;
    uint64_t id;
    char *task;        /* for logs */
    void *runner;      /* the executor's job (a loom_runner_t for the local one) */
    struct prep *prep; /* fetching and unpacking its bundle, writing its files */
    bool preparing;    /* prep is under way: no process yet */
    bool finishing;    /* exited; its metrics are read, its outputs uploaded */
    char *metrics;     /* Dispatch.metrics, or NULL */
    char **outputs;    /* Dispatch.outputs (patterns) */
    size_t n_outputs;
    struct upload *upload; /* collecting, hashing, uploading its outputs */
    char *dir;             /* its working folder */
    bool running;          /* the process has not been reported exited */
    bool forgotten;        /* loomd cancelled it in a Welcome: no result, no logs */
    bool cancelled;
    bool stopped;
    bool succeeded; /* its result says success: the folder may go */
    char *cancel_reason;
    bool cancel_outputs; /* cancelled after it exited: upload nothing */
    uint64_t timeout_ms;
    limit_box_t *box; /* its cgroups (or rlimit), while it runs */
    uint64_t log_seq; /* last chunk seq given out */
    chunk_t *chunks, *chunks_tail;
    chunk_t *unsent;          /* first chunk not yet sent on this connection */
    Loom__Finished *exit_fin; /* while finishing: the result, less metrics and outputs */
    uint8_t *finished;        /* encoded Finished, kept until FinishedAck */
    size_t finished_len;
    bool finished_sent;
    /* When loomd last acknowledged something of it, or it last went from
     * nothing outstanding to something: what was sent and is still not
     * acknowledged long after is sent again (a lost message, the
     * connection up). */
    uint64_t acked_ms;
    struct loom_mask *mask; /* the secrets' values, masked in its output */
    /* Prefetched: held until a slot frees, in the agent's queue. */
    bool queued;
    loom_msg_t *queued_msg; /* its Dispatch, kept until it starts */
    struct attempt *q_next;
    char **secret_files; /* removed when the process exits (or never starts) */
    size_t n_secret_files;
} attempt_t;

typedef struct inbox_msg {
    struct inbox_msg *next;
    loom_msg_t *msg;
} inbox_msg_t;

struct loom_agent {
    uv_loop_t *loop;
    char *run_as_name;        /* --run-as, until looked up */
    struct task_user *run_as; /* NULL: tasks run as the agent's user */
    char **pass_env;          /* --pass-env patterns */
    size_t n_pass_env;
    char *name, *server, *work_dir, *hostname;
    char **labels;
    size_t n_labels;
    uint32_t slots;
    /* --prefetch: Dispatches accepted beyond the slots. They wait in
     * arrival order and start the moment a slot frees, without a round
     * trip to loomd (which accounts for them the same way). */
    uint32_t prefetch;
    uint32_t n_queued;
    struct attempt *queue_head, *queue_tail;
    uint32_t hello_interval_ms;
    uint64_t kill_grace_ms;
    loom_keep_attempts keep_attempts;
    /* Emptied folders of finished attempts, reused (renamed) for new ones:
     * creating and removing a folder per attempt costs the filesystem
     * (ext4's inode allocator) far more than renaming an empty one. */
    char *spare_dirs[64];
    size_t n_spare_dirs;
    uint64_t spare_seq;
    size_t max_unacked;
    loom_clock_t clock;
    void *zctx;
    bool own_zctx;
    loom_zsock_t *zs;
    uv_timer_t hello_timer;
    uv_timer_t heartbeat_timer;
    uv_timer_t retry_timer; /* resends after a send failed on a live connection */
    uv_idle_t inbox_idle;   /* runs the handlers for received messages */
    inbox_msg_t *inbox, *inbox_tail;
    uint8_t session[LOOM_AGENT_SESSION_LEN];
    /* CURVE (agent.c): our key pair (WORK_DIR/curve/agent.key), loomd's key
     * (pinned in WORK_DIR/curve/server.pub once joined), and a join token
     * until it has been used. */
    char curve_pub[41], curve_sec[41], server_key[41];
    char *join_token;
    bool joining;    /* sending Join, not Hello, until Joined */
    bool pinned;     /* server.pub holds server_key */
    bool told_enrol; /* "not enrolled" has been logged */
    bool refused;    /* revoked, or the join was refused: we stop */
    void (*on_refused)(void *ud);
    void *refused_ud;
    bool started, welcomed, stopping, closing;
    bool send_blocked; /* a send failed: stop sending until the next retry */
    bool paused;       /* output reading stopped for lack of acks */
    uint32_t heartbeat_ms, timeout_ms;
    uint64_t last_heard_ms;
    uint64_t dispatch_seq;               /* highest Dispatch.seq since the last Welcome */
    attempt_t *attempts, *attempts_tail; /* oldest first */
    uint32_t running;
    uint32_t preparing;           /* attempts holding a slot before their process starts */
    uint32_t jobs;                /* thread-pool jobs not yet completed */
    char *cache_dir;              /* <work_dir>/cache: objects/ab/cdef..., tmp/ */
    uint64_t cache_max;           /* --cache-size */
    struct cache *cache;          /* what the cache holds, its bound, pins */
    struct fetcher *fetcher;      /* object downloads from loomd */
    struct loom_spawner *spawner; /* threads that start task processes (local executor) */
    /* hash -> the upload (upload.c) sending that object now: one attempt at
     * a time per object, since loomd keeps one upload per agent and object
     * (a second attempt's query would restart the first one's upload). */
    loom_map_t uploading;
    /* Attempts this agent finished with lately (ids, in a ring): a Dispatch
     * for one of them is a duplicate or a late copy, never run again. */
    loom_map_t done;
    uint64_t *done_ring;
    size_t done_next;
    size_t unacked_bytes;
    int pending_closes; /* handles and runners whose close has not completed */
    void (*on_stopped)(void *ud);
    void *stopped_ud;

    /* The host (host.c) */
    char *sys_root;
    char **gpu_specs;
    size_t n_gpu_specs;
    bool no_gpu_detect;
    char *nvml_library;
    uint64_t gpu_timeout_ms;
    cgroup_where_t cgroups;
    double cpus_usable;
    uint64_t memory_bytes;
    gpu_inv_t gpus;         /* set once detection has reported */
    bool detected;          /* GPUs known: Hello may go */
    gpu_usage_t *gpu_usage; /* the latest NVML sample */
    size_t n_gpu_usage;
    bool sampling; /* a sample job is out */
    limits_t *limits;

    /* The executor (executor.h): local processes, or Slurm jobs. */
    const executor_ops_t *exec;
    void *exec_state;         /* the executor's object (NULL for local) */
    struct slurm_exec *slurm; /* when the executor is Slurm */
    bool bad_executor;        /* neither local nor slurm */
    bool slots_given;         /* --slots, not the capacity found */

    /* Draining (agent.c) */
    bool draining, drain_reported;
    uv_timer_t drain_timer; /* the drain timeout, then reporting the end */
    void (*on_drained)(void *ud, bool timed_out);
    void *drained_ud;
};

/* agent.c */
int agent_send(loom_agent_t *a, loom_msg_t *m);
int agent_send_raw(loom_agent_t *a, const uint8_t *data, size_t len);
void agent_handle_closed(loom_agent_t *a);
void agent_maybe_close(loom_agent_t *a);
/* A reliable send failed: hold further sends and retry shortly. */
void agent_send_failed(loom_agent_t *a);

/* Runs work(ud) on the libuv thread pool, then done(ud) on the loop thread.
 * The agent does not finish stopping while a job is out. */
void agent_queue_job(loom_agent_t *a, void (*work)(void *ud), void (*done)(void *ud), void *ud);

/* Draining: reports the end of a drain (from the loop) once nothing is held. */
void agent_check_drained(loom_agent_t *a);

/* host.c */
/* CPUs, memory and the limit mechanism; cheap, on the loop. */
void host_init(loom_agent_t *a);
/* GPU detection on the thread pool; then done(a) on the loop. */
void host_detect(loom_agent_t *a, void (*done)(loom_agent_t *a));
/* Hello's resources, labels included; free with host_resources_free. */
Loom__Resources *host_resources(const loom_agent_t *a);
void host_resources_free(Loom__Resources *r);
/* The heartbeat's usage; starts a GPU sample for the next one. Free with
 * host_usage_free. */
Loom__Usage *host_usage(loom_agent_t *a);
void host_usage_free(Loom__Usage *u);
void host_free(loom_agent_t *a);

/* attempt.c */
uint64_t *agent_held_ids(const loom_agent_t *a, size_t *n);
/* Takes the Dispatch message. */
void agent_dispatch(loom_agent_t *a, loom_msg_t *msg);
/* Wipes the secret values of a Dispatch (msg may be NULL) before it is freed. */
void agent_wipe_secrets(loom_msg_t *msg);
/* The attempt's folder is ready (error NULL), or cannot be (error says
 * why): start it, or report it not started. Called by prepare.c. */
void agent_prepared(loom_agent_t *a, attempt_t *t, const Loom__Dispatch *d, const char *error);
void agent_ack_log(loom_agent_t *a, uint64_t attempt_id, uint64_t seq);
void agent_ack_finished(loom_agent_t *a, uint64_t attempt_id);
/* loomd's answer to a PutObject, for the attempt's upload. */
void agent_put_ack(loom_agent_t *a, const Loom__PutAck *ack);
/* Called with each heartbeat: uploads that heard nothing for long ask again. */
void agent_tick_uploads(loom_agent_t *a);
/* Resends the chunks and results loomd has not acknowledged for after_ms:
 * a message lost while the connection stayed up is otherwise never sent
 * again (only a new Welcome rewinds everything). loomd drops duplicates. */
void agent_resend_stale(loom_agent_t *a, uint64_t after_ms);
/* An object was let go by the upload sending it: others waiting for it go. */
void agent_kick_uploads(loom_agent_t *a);
/* if_queued: only an attempt held unstarted (prefetch), which is handed
 * back (a refused Finished) rather than cancelled. */
void agent_cancel(loom_agent_t *a, uint64_t attempt_id, const char *reason, bool if_queued);
void agent_forget_attempt(loom_agent_t *a, uint64_t attempt_id);
/* Marks every unacked chunk and Finished as not yet sent on this connection. */
void agent_rewind_all(loom_agent_t *a);
/* Sends, in order, what is unsent; stops at the first failure. */
void agent_flush_all(loom_agent_t *a);
void agent_stop_attempts(loom_agent_t *a);
void agent_free_attempts(loom_agent_t *a);

/* Who tasks run as and what they inherit (task_user.c). */
void agent_task_user_config(loom_agent_t *a, const loom_agent_config_t *cfg);
/* Looks up --run-as and checks --pass-env; for another user, opens the work
 * folder to it (search only) and checks it can reach its attempt folders.
 * Returns 0 or LOOM_EINVAL (logged). */
int agent_task_user_start(loom_agent_t *a);
void agent_task_user_free(loom_agent_t *a);
/* The whole environment of a task: the allowlisted base, then env (which
 * wins); takes env (and its strings), returns a new NULL-terminated array. */
char **agent_task_env(const loom_agent_t *a, char **env);

/* task_env.c: the entries a Dispatch adds to its task's environment (NULL
 * with *bad set for an invalid name); agent_env_free wipes them, since
 * they may hold secrets. */
char **agent_dispatch_env(const loom_agent_t *a, const Loom__Dispatch *d, const char *dir,
                          char *bad, size_t badlen);
void agent_env_free(char **env);

/* folders.c: attempt folders reused. take: an emptied folder, if one is
 * kept, is renamed to dir. release: takes dir, empties it (on the thread
 * pool unless it is empty already) and keeps it aside, or removes it.
 * folders_free: removes those kept, at teardown. */
void agent_folder_take(loom_agent_t *a, const char *dir);
void agent_folder_release(loom_agent_t *a, char *dir);
void agent_folders_free(loom_agent_t *a);
/* Gives an attempt folder (all of it with tree) to the --run-as user; no-op
 * without one. Returns 0 or LOOM_EIO with why. */
int agent_task_dir_give(const loom_agent_t *a, const char *dir, bool tree, char *why,
                        size_t whylen);

#endif
