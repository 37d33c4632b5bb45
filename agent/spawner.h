/* Threads that start task processes off the agent's loop. posix_spawn
 * suspends its caller until the child has exec'd (glibc spawns with
 * CLONE_VFORK): about 250 us a task here, which on the loop thread was the
 * agent's largest serial cost. A few dedicated threads (not libuv's pool,
 * where a long hash could hold a start back) do the spawn; the result comes
 * back to the loop. */
#ifndef LOOM_AGENT_SPAWNER_H
#define LOOM_AGENT_SPAWNER_H

#include <uv.h>

typedef struct loom_spawner loom_spawner_t;

typedef struct loom_spawn_req {
    void (*work)(struct loom_spawn_req *req); /* on a spawner thread */
    void (*done)(struct loom_spawn_req *req); /* then on the loop thread */
    struct loom_spawn_req *next;
} loom_spawn_req_t;

/* threads: how many spawns may be under way at once (at least 1). */
int loom_spawner_new(uv_loop_t *loop, unsigned threads, loom_spawner_t **out);

/* Queues req; its done callback always runs, on the loop, never inside this
 * call. req must live until then. */
void loom_spawner_submit(loom_spawner_t *s, loom_spawn_req_t *req);

/* Finishes what was submitted (running every done callback), joins the
 * threads and frees s in a later close callback, then calls on_closed. */
void loom_spawner_close(loom_spawner_t *s, void (*on_closed)(void *ud), void *ud);

#endif
