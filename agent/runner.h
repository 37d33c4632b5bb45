/* One task process on the agent's libuv loop: started with posix_spawn in its
 * own process group, its stdout and stderr read through pipes, its exit
 * learned through a pidfd (not libuv's SIGCHLD reaper, which discards
 * rusage). The agent sees output and one final result, never pids' plumbing. */
#ifndef LOOM_AGENT_RUNNER_H
#define LOOM_AGENT_RUNNER_H

#include <stdbool.h>
#include <stddef.h>
#include <spawn.h>
#include <stdint.h>
#include <uv.h>

/* Exit code reported for a process that could not be started (as a shell
 * reports a command it cannot find). */
#define LOOM_RUNNER_EXIT_NOT_STARTED 127
#define LOOM_RUNNER_KILL_GRACE_MS 5000
/* How long, after the process exits and its group is killed, the pipes may
 * stay open (held by a descendant that left the group) before we close them. */
#define LOOM_RUNNER_DRAIN_MS 2000

typedef struct loom_runner loom_runner_t;

typedef enum {
    LOOM_RUNNER_STDOUT = 0,
    LOOM_RUNNER_STDERR = 1,
} loom_runner_stream;

typedef struct {
    const char *const *argv; /* NULL-terminated; when set, exec'd directly, PATH searched */
    const char *shell;       /* else run as /bin/sh -c shell */
    const char *dir;         /* working folder, created (0700) if missing */
    /* NULL-terminated "NAME=value" entries added to the agent's environment;
     * they override it, and a later entry overrides an earlier one. */
    const char *const *env;
    uint64_t timeout_ms;    /* 0: no limit; else terminate and set timed_out */
    uint64_t kill_grace_ms; /* SIGTERM -> SIGKILL; 0: LOOM_RUNNER_KILL_GRACE_MS */
    uint64_t drain_ms;      /* 0: LOOM_RUNNER_DRAIN_MS */
    /* Optional: called right after the process is spawned and before the
     * task's program runs (the agent puts it in its cgroups here). The
     * process then starts as /bin/sh waiting at a gate, which execs the task
     * once this returns 0; so a command that cannot be found shows as the
     * shell's exit 127 and message, not as a failed start. Non-zero: the
     * process is killed and reported as not started, with why. */
    int (*on_spawned)(void *ud, int pid, char *why, size_t whylen);
    void *spawned_ud;
    /* env is the whole environment: nothing is inherited from the agent's. */
    bool env_only;
    /* Optional: run as this user (agent/task_user.h). When it is not the
     * agent's own, the process is started with fork and switches (groups,
     * gid, uid) before exec, since posix_spawn cannot change users. */
    const struct task_user *user;
    /* Optional: spawn on one of its threads (agent/spawner.h); the loop
     * goes on meanwhile, and on_started reports the process. NULL: spawn
     * inside loom_runner_start. */
    struct loom_spawner *spawner;
} loom_runner_spec_t;

typedef struct {
    bool started;  /* false: never ran; error says why */
    int exit_code; /* valid when signal == 0; LOOM_RUNNER_EXIT_NOT_STARTED if !started */
    int signal;    /* terminating signal, 0 if it exited */
    bool timed_out;
    uint64_t started_unix_ms;
    uint64_t ended_unix_ms;
    uint64_t user_cpu_us;
    uint64_t sys_cpu_us;
    uint64_t max_rss_bytes;
    const char *error; /* NULL, or "could not start: ..."; valid during on_exit */
    /* Set by executors that learn them from elsewhere (Slurm's job state):
     * killed for exceeding its memory, or lost with its node (retried). */
    bool oom_killed;
    bool lost;
} loom_runner_result_t;

typedef struct {
    /* Bytes as read from one pipe, in order per stream; data is borrowed. */
    void (*on_output)(void *ud, loom_runner_stream stream, const char *data, size_t len);
    /* Once, after the process was reaped and both pipes reached EOF (or were
     * given up on), so every output byte came before it. */
    void (*on_exit)(void *ud, const loom_runner_result_t *result);
    void *ud;
    /* Once the process is running: inside start when the runner spawns
     * inline, later from the loop when a spawner thread does (or, for the
     * Slurm executor, when the job leaves the queue); may be NULL. */
    void (*on_started)(void *ud);
} loom_runner_cb_t;

loom_runner_t *loom_runner_new(uv_loop_t *loop, const loom_runner_cb_t *cb);
/* Spawns the process (with spec->spawner, hands it to a spawner thread).
 * Returns 0, or LOOM_ESPAWN when it could not be started here (a spawner
 * thread's failure shows only in on_exit); either way on_exit follows later
 * from the loop (never from inside this call). Call once. */
int loom_runner_start(loom_runner_t *r, const loom_runner_spec_t *spec);
/* The process id while running, 0 before start or when it never started. */
int loom_runner_pid(const loom_runner_t *r);
uint64_t loom_runner_started_unix_ms(const loom_runner_t *r);
/* SIGTERM to the process group now, SIGKILL after the grace period. No-op
 * once the process has exited or a kill is already under way. */
void loom_runner_terminate(loom_runner_t *r);
/* Stops (true) or resumes reading the pipes: a stopped reader makes the
 * child block on write, so output is delayed, never lost. */
void loom_runner_pause(loom_runner_t *r, bool paused);
/* Releases the runner: a process still running is killed (SIGKILL to its
 * group) and reaped first; no callback but on_closed runs after this call.
 * Memory is freed when libuv has released every handle; on_closed (may be
 * NULL) runs then. */
void loom_runner_close(loom_runner_t *r, void (*on_closed)(void *ud), void *ud);

/* Spawn attributes every child of the agent gets: its own process group
 * (so it and what it starts are signalled together), an empty signal mask
 * and default dispositions for the signals the agent itself handles. */
void loom_runner_spawnattr_init(posix_spawnattr_t *attr);

#endif
