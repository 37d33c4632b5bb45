/* What the scheduler's source files share: the in-memory model of runs,
 * tasks, attempts and agents. The database holds the same facts; memory
 * holds only what is in flight, so lookups on the hot path never query. */
#ifndef LOOM_SCHED_INTERNAL_H
#define LOOM_SCHED_INTERNAL_H

#include "metrics.h"
#include "objects.h"
#include "scheduler.h"

#include "loom/codec.h"
#include "loom/map.h"
#include "loom/zsock.h"

typedef struct s_agent agent_t;
typedef struct s_attempt attempt_t;
typedef struct s_task task_t;
typedef struct s_run run_t;

/* Intrusive doubly-linked list. */
typedef struct link {
    struct link *prev, *next;
} link_t;

typedef enum { AGENT_CONNECTED, AGENT_DISCONNECTED, AGENT_LOST } agent_state_t;
typedef enum { ATT_DISPATCHED, ATT_RUNNING, ATT_ENDED } attempt_state_t;
typedef enum {
    TASK_PENDING,
    TASK_QUEUED,
    TASK_RUNNING,
    /* ended: */
    TASK_SUCCEEDED,
    TASK_FAILED,
    TASK_UPSTREAM_FAILED,
    TASK_SKIPPED,
    TASK_CANCELLED,
} task_state_t;
typedef enum { RUN_QUEUED, RUN_RUNNING, RUN_SUCCEEDED, RUN_FAILED, RUN_CANCELLED } run_state_t;

typedef struct {
    uint32_t index;
    char *uuid;
    char *model;
    uint64_t memory_bytes;
    uint64_t busy;         /* attempt id using it alone; 0: none */
    uint64_t shared_used;  /* gpu_memory of the shared tasks on it */
    uint32_t shared_count; /* shared tasks on it */
} gpu_t;

struct s_agent {
    char *name;
    char *hostname;
    char *version;
    char *labels_json;
    uint8_t session[64];
    size_t session_len;
    uint32_t cpus, slots, running;
    uint64_t memory_bytes;
    agent_state_t state;
    uint64_t last_seen;    /* monotonic ms */
    uint64_t connected_ms; /* unix ms */
    uint64_t last_seen_unix;
    uint64_t dispatch_seq; /* last Dispatch.seq sent since Welcome */
    link_t attempts;       /* attempts placed here and not yet ended */
    /* Prefetch (loom-agent --prefetch): attempts sent beyond the slots,
     * oldest first, which reserve nothing until the agent starts them in a
     * slot that frees (placement_promote mirrors that). */
    uint32_t prefetch, queued;
    link_t backlog;

    /* What placement needs (placement.c). */
    double cpus_total, cpus_used; /* usable CPUs; reserved by attempts */
    uint64_t memory_used;         /* reserved by attempts (memory_bytes is the total) */
    gpu_t *gpus;
    uint32_t n_gpus;
    char *gpu_source;
    loom_env_t *labels; /* parsed from labels_json */
    size_t n_labels;
    bool in_freed; /* in s->freed: capacity grew since the last placement */
    bool cordoned; /* takes no new work (loom agents cordon / drain) */
    bool draining; /* the agent itself said it is going away (SIGTERM) */
    /* It refused a Dispatch loomd thought it had room for: loomd's view of
     * it is behind (attempts loomd gave up on may still be ending there).
     * Nothing more goes to it until it reports again (a Heartbeat, Hello
     * or the end of a started attempt), or each retry would bounce off it
     * at once and use up its task's attempts in milliseconds. */
    bool held_off;
    bool drain_requested;
    json_t *usage; /* the latest Heartbeat.usage, as JSON */
    /* Its connection (sched_auth.c): the ZeroMQ routing id of the
     * connection whose Hello was accepted, and that connection's CURVE key.
     * Every later message must come from this routing id with this key. */
    char *rid_hex; /* key in s->by_rid; NULL: not connected */
    uint8_t rid[256];
    size_t rid_len;
    char key[41]; /* Z85; "" in plaintext mode */
};

struct s_attempt {
    uint64_t id;
    uint32_t number;
    run_t *run;
    task_t *task;
    agent_t *agent;
    link_t on_agent;
    bool queued;       /* in its agent's backlog: sent, holding no slot yet */
    bool withdrawing;  /* asked back from the backlog, answer not yet heard */
    bool asked_back;   /* ... ever: a hand-back is loomd's doing, not a loss */
    link_t in_backlog; /* valid while queued */
    attempt_state_t state;
    uint64_t dispatch_seq;
    uint64_t dispatched_ms, started_ms; /* unix ms */
    uint64_t log_seq, log_bytes;
    int log_fd;
    int ts_fd; /* the log's time index: (offset, unix ms) per chunk; -1: closed */
    bool cancel_sent;
    /* Resources reserved on the agent until the attempt ends. */
    double cpus;
    uint64_t memory_bytes;
    uint32_t *gpus; /* indexes */
    uint32_t n_gpus;
    uint64_t gpu_shared_mem; /* on a shared GPU: the memory it counts for; 0: exclusive */
    char *pool;
};

/* A task of a run: one per DAG task, or one per item of a foreach task
 * ("sweep[0]", "sweep[1]", ...). Its upstream tasks are every copy of every
 * DAG task it needs. */
struct s_task {
    run_t *run;
    uint32_t idx;     /* position in run->tasks */
    uint32_t dag_idx; /* the DAG task it is (a copy of) */
    uint64_t id;
    char *name;
    json_t *item; /* foreach item; NULL when not a copy */
    int item_index;
    uint32_t *up; /* indexes of upstream tasks in run->tasks */
    uint32_t n_up;
    uint32_t *down; /* indexes of tasks that need this one */
    uint32_t n_down;
    task_state_t state;
    uint32_t attempts;        /* attempts made */
    uint32_t lost;            /* attempts lost with their agent */
    uint32_t undelivered;     /* ... of which never started (lost Dispatches) */
    uint32_t withdrawn;       /* ... of which handed back from a backlog (prefetch) */
    attempt_t *current;       /* the attempt in flight, if any */
    uint64_t last_attempt_id; /* the latest attempt, in flight or ended */
    link_t in_queue;          /* in the ready queue, or the retry wait list */
    uint64_t not_before;      /* a retry's earliest start, unix ms; 0: now */
    uint64_t started_ms, ended_ms;
    bool has_exit;
    int exit_code, signal;
    char *error; /* why it failed, or why it did not run */
    json_t *metrics;
    bool in_tq;        /* queued in its run's placement queue (placement.c) */
    char *cache_key;   /* `cache: true`: the key its attempt's result is kept under */
    uint64_t ready_ns; /* uv_hrtime() when it last became ready; 0: not waiting */
};

/* Queued tasks of one DAG task of one run: they all ask for the same
 * resources at the same priority, so if the first cannot be placed none
 * can, and placement looks at one task per queue (placement.c). */
typedef struct {
    run_t *run;
    uint32_t dag_idx;
    link_t tasks;  /* FIFO */
    link_t active; /* in its pipeline group while it has tasks */
    struct pgroup *group;
    uint64_t since;  /* order in which queues became non-empty */
    uint64_t passed; /* the dispatch round that last passed it over */
    bool fresh;      /* got tasks since placement last tried it everywhere */
    uint64_t reason_epoch;
    char *reason; /* why its first task waits, computed on demand */
} tq_t;

struct s_run {
    uint64_t id;
    uint64_t pipeline_id;
    char *pipeline;
    uint32_t version;
    run_state_t state;
    loom_dag_t *dag;
    task_t *tasks; /* in topological order of their DAG tasks */
    uint32_t n_tasks;
    uint32_t n_ended;
    bool cancelling;
    bool any_started; /* a task process of it has started (trigger-to-start latency) */
    uint64_t seq;     /* bumped at each change: GET /runs/ID?since=SEQ waits for the next */
    uint64_t created_ms, started_ms, ended_ms;
    char *trigger;
    json_t *params; /* every parameter, defaults filled in */
    json_t *event;  /* what triggered it (event payload, {"files"}); NULL for manual runs */
    json_t *origin; /* how it started ({"kind", ...}); NULL for manual runs */
    char *bundle;   /* code bundle manifest hash, or NULL */
    tq_t *tqs;      /* one placement queue per DAG task */
};

/* One message to send once this turn's writes are committed. */
typedef struct outmsg {
    struct outmsg *next;
    char *agent;  /* sent to this agent's current connection; or, when NULL, */
    uint8_t *rid; /* to this routing id (an answer to a peer not yet known) */
    size_t rid_len;
    uint8_t *data;
    size_t len;
} outmsg_t;

struct loom_sched {
    uv_loop_t *loop;
    loom_sched_config_t cfg;
    char *state_dir;
    char *bind;
    loom_store_t *store;
    loom_objects_t *objects;
    struct loom_secrets *secrets; /* the secrets key (sched_secrets.c) */
    int lock_fd;                  /* holds the state folder's flock */
    void *zctx;
    bool own_zctx;
    loom_zsock_t *router;
    loom_zsock_t *zap;   /* the ZAP handler (sched_auth.c); NULL in plaintext mode */
    char server_pub[41]; /* CURVE server key pair, Z85 */
    char server_sec[41];
    char selfcheck_key[41];  /* the start-up self-check's client key */
    bool selfcheck_zap_seen; /* the ZAP handler saw the self-check's handshake */
    bool selfcheck_refused;  /* ...and its Hello was answered "not enrolled" */
    loom_map_t by_rid;       /* hex routing id -> agent_t*, connected agents */
    uv_prepare_t flush_prepare;
    uv_idle_t flush_idle;
    uv_timer_t liveness_timer;
    int open_handles;
    void (*on_closed)(void *ud);
    void *closed_ud;
    bool closing;

    loom_map_t runs;     /* id -> run_t*, runs in flight */
    loom_map_t attempts; /* id -> attempt_t*, attempts not ended */
    loom_map_t agents;   /* name -> agent_t*, every agent ever seen */
    link_t groups;       /* pipelines with queued tasks (placement.c) */
    loom_map_t group_of; /* pipeline id -> struct pgroup* */
    uint64_t tq_seq;
    uint64_t capacity_epoch; /* bumped whenever free capacity may have grown */
    agent_t **agent_list;    /* every agent, for scans without the hash map */
    size_t n_agent_list, cap_agent_list;
    /* Attempts that ended lately and the agent they ran on: an agent lists
     * such an attempt in its heartbeats until its result is acknowledged,
     * which is no reason to tell it to cancel. A ring, so bounded. */
    loom_map_t recent_ended;
    uint64_t *recent_ring;
    size_t recent_next;
    agent_t **freed; /* agents whose capacity grew since the last placement */
    size_t n_freed, cap_freed;
    loom_map_t pools;            /* name -> pool_t*: concurrency caps (--pool) */
    loom_map_t pipeline_running; /* pipeline id -> attempts in flight, for fair share */
    link_t retry_wait;           /* tasks waiting for their retry delay, by not_before */
    uv_timer_t retry_timer;

    /* Triggers (triggers.c): each pipeline's, and the runs each has active. */
    loom_map_t trig_pipes;  /* pipeline id -> trig_pipe_t* */
    loom_map_t active_runs; /* pipeline id -> runs not ended (as a count) */
    loom_map_t trig_freed;  /* pipelines whose runs ended this turn */
    uv_timer_t trig_timer;
    bool trig_open;

    /* Artifacts (sched_art.c) */
    loom_map_t uploads;     /* "AGENT\nHASH" -> upload in progress (a string map) */
    uint32_t backlog_total; /* attempts queued in agents' backlogs (prefetch) */
    uint32_t withdrawing;   /* ... asked back, answer not yet heard */
    json_t *pending_events; /* model events to fire at the end of the turn */

    outmsg_t *out_head, **out_tail;
    loom_map_t check_runs;   /* run ids whose end is checked at the flush (the value is the id) */
    loom_map_t changed_runs; /* run ids to tell the observer about */
    loom_map_t output_runs;
    loom_sched_observer_t obs;
    loom_sched_stats_t stats;
    loom_metrics_t *metrics; /* what GET /metrics shows (metrics.c) */

    /* Free space on the state folder (disk.c) */
    uint64_t disk_checked_ms, disk_free;
    bool disk_low, disk_was_low;
    /* The clocks at the last liveness tick, to notice a stepped wall clock */
    uint64_t clock_mono, clock_wall;
};

/* list.c-style helpers */
static inline void link_init(link_t *l)
{
    l->prev = l->next = l;
}
static inline bool link_empty(const link_t *l)
{
    return l->next == l;
}
/* Whether an agent's list of held attempts (Hello, Heartbeat) names id. */
static inline bool ids_contain(const uint64_t *ids, size_t n, uint64_t id)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] == id) return true;
    return false;
}

static inline void link_push(link_t *head, link_t *l)
{
    l->prev = head->prev;
    l->next = head;
    head->prev->next = l;
    head->prev = l;
}
static inline void link_remove(link_t *l)
{
    l->prev->next = l->next;
    l->next->prev = l->prev;
    link_init(l);
}
#define CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* sched.c */
uint64_t sched_now(loom_sched_t *s); /* monotonic ms */
/* disk.c: true while free space is below the reserve (cached for 250 ms);
 * sched_disk_poll re-checks and resumes work once space is back. */
bool sched_disk_low(loom_sched_t *s);
void sched_disk_poll(loom_sched_t *s);
void sched_send(loom_sched_t *s, const char *agent, loom_msg_t *msg);
/* Asks x's agent to hand x back if it has not started it (prefetch). */
void sched_withdraw(loom_sched_t *s, attempt_t *x, const char *why);
void sched_mark_changed(loom_sched_t *s, uint64_t run_id);
void sched_mark_output(loom_sched_t *s, uint64_t run_id);
void sched_request_flush(loom_sched_t *s);

/* sched_run.c: runs, their tasks, recovery, cancel */
/* How a run starts: by hand (origin NULL) or by a trigger. */
typedef struct {
    const char *trigger; /* "manual", "schedule", "data", "event" */
    json_t *origin;      /* {"kind", ...}: shown with the run, given to tasks; may be NULL */
    json_t *event;       /* event.* and trigger.files for the tasks; may be NULL */
    bool no_cache;       /* `loom run --no-cache`: run every task, even `cache: true` ones */
} run_origin_t;
int run_create(loom_sched_t *s, uint64_t pipeline_id, const char *pipeline, uint32_t version,
               const char *source, size_t len, const run_origin_t *origin, json_t *params,
               uint64_t *run_id, char *why, size_t whylen);
int run_recover(loom_sched_t *s, const loom_run_row_t *row);
void run_free(run_t *r);
/* Settles the run once every task has ended. */
void run_check_done(loom_sched_t *s, run_t *r);
void save_task(loom_sched_t *s, task_t *t);
void save_run(loom_sched_t *s, run_t *r);
const char *task_state_name(task_state_t st);
const char *run_state_name(run_state_t st);
bool task_state_parse(const char *name, task_state_t *out);
static inline bool task_ended(const task_t *t)
{
    return t->state >= TASK_SUCCEEDED;
}
static inline const loom_dag_task_t *dag_task(const task_t *t)
{
    return &t->run->dag->tasks[t->dag_idx];
}

/* placement.c: which agent runs a queued task, and on which GPUs */
typedef struct {
    char *name;
    uint32_t limit, used;
} pool_t;

void placement_queue(loom_sched_t *s, task_t *t);
void placement_unqueue(loom_sched_t *s, task_t *t);
/* Places as many queued tasks as fit, highest priority first, pipelines
 * sharing fairly (fewest attempts in flight first). */
void dispatch_ready(loom_sched_t *s);
/* Reserves t's resources on a (assigning GPUs) for attempt x. */
void placement_reserve(loom_sched_t *s, agent_t *a, attempt_t *x);
void placement_release(loom_sched_t *s, attempt_t *x);
/* A slot of a freed: its oldest backlog attempts take it, as the agent
 * itself does. Also an attempt still queued here that the agent reports
 * started. */
void placement_promote(loom_sched_t *s, agent_t *a);
void placement_started(loom_sched_t *s, attempt_t *x);
/* After a loomd restart, the attempts an agent holds beyond its slots
 * (prefetch) come back from the store as if each had a slot: the store
 * does not say which were held. The agent starts held ones oldest first,
 * and only when a slot frees, so what it holds is the newest of its
 * unstarted attempts, as many as it has beyond its slots (of those its
 * Hello lists in held): those go back into its backlog. */
void placement_rebuild_backlog(loom_sched_t *s, agent_t *a, const uint64_t *held, size_t n_held);
/* Marks the GPUs x holds as busy on a (after a's resources were reset). */
void placement_mark_gpus(agent_t *a, const attempt_t *x);
/* Why t is still queued ("needs 2 GPUs with ≥ 40 GiB; largest free: 1"). */
const char *placement_wait_reason(loom_sched_t *s, task_t *t);
/* NULL if some known agent could ever run a task asking for r; else why
 * not (caller frees). */
char *placement_never_fits(loom_sched_t *s, const loom_dag_resources_t *r);
void agent_set_resources(agent_t *a, const Loom__Resources *res);
/* a may have room for more now (hello, uncordon): placement looks at it. */
void placement_agent_freed(loom_sched_t *s, agent_t *a);
#define RECENT_ENDED 65536
void recent_ended_add(loom_sched_t *s, uint64_t attempt_id, agent_t *a);
void agent_free_resources(agent_t *a);
void tq_free(tq_t *q);

/* sched_task.c: when tasks are ready, dispatch, attempts and their outcome */
/* Starts an attempt of t on agent a (placement has checked it fits). */
/* queued: into a's backlog (prefetch) rather than a free slot. */
void dispatch_task(loom_sched_t *s, task_t *t, agent_t *a, bool queued);
/* Decides what a pending task does now that (some of) its upstream ended:
 * nothing yet, queue, skip, or upstream_failed. */
void task_evaluate(loom_sched_t *s, task_t *t);
void task_end(loom_sched_t *s, task_t *t, task_state_t st, const char *error);
void dispatch_ready(loom_sched_t *s);
void retry_timer_start(loom_sched_t *s);
/* Waits until not_before (unix ms) before queueing t again. */
void retry_later(loom_sched_t *s, task_t *t, uint64_t not_before);
/* The delay before retry number `failures` (1 = first retry), with jitter
 * drawn from `random` (any 32-bit value). */
uint64_t retry_delay_ms(const loom_dag_task_t *dt, uint32_t failures, uint32_t random);
/* An attempt ended: record it and move its task and run on. */
void attempt_finished(loom_sched_t *s, attempt_t *a, const Loom__Finished *f);
/* An attempt's agent went away: record it lost and retry the task. */
void attempt_lost(loom_sched_t *s, attempt_t *a, const char *why);
void attempt_started(loom_sched_t *s, attempt_t *a, uint64_t started_ms);
int attempt_log(loom_sched_t *s, attempt_t *a, const Loom__LogChunk *c);

/* triggers.c: what starts runs besides a request */
int triggers_open(loom_sched_t *s);
void triggers_close(loom_sched_t *s);
void triggers_free(loom_sched_t *s);
/* A new version of a pipeline was stored (source, len): its triggers may have
 * changed. *parsed, the source's DAG, is taken (and set to NULL) when the
 * triggers keep it; else it stays the caller's. */
void triggers_reload(loom_sched_t *s, uint64_t pipeline_id, const char *name, uint32_t version,
                     const char *source, size_t len, loom_dag_t **parsed);
void triggers_run_started(loom_sched_t *s, uint64_t pipeline_id);
void triggers_run_ended(loom_sched_t *s, uint64_t pipeline_id);
/* Starts what waited for the runs that ended this turn (from the flush). */
void triggers_flush(loom_sched_t *s);

/* sched_art.c: artifacts, inputs, the cache, models */
void artifacts_on_put(loom_sched_t *s, agent_t *a, const Loom__PutObject *p);
void artifacts_free_uploads(loom_sched_t *s);
/* The inputs of an attempt (recorded for lineage when attempt_id is set). */
int inputs_resolve(loom_sched_t *s, const task_t *t, uint64_t attempt_id, Loom__Input ***out,
                   size_t *n_out, char *why, size_t whylen);
void inputs_free(Loom__Input **items, size_t n);
/* NULL when a successful attempt's outputs are all stored; else why not. */
char *artifacts_check(loom_sched_t *s, const task_t *t, const Loom__Finished *f);
void artifacts_record(loom_sched_t *s, const attempt_t *a, const Loom__Finished *f,
                      const json_t *metrics);
void artifacts_fire_events(loom_sched_t *s);
/* `cache: true`: computes t's key; on a hit copies the earlier outputs and
 * returns the note to end the task with (succeeded). NULL: run it. */
char *cache_lookup(loom_sched_t *s, task_t *t);
/* The task's command with its references filled in (sched_task.c). */
bool task_render(const task_t *t, char **shell, char ***argv, size_t *argc, char *why,
                 size_t whylen);

/* objects.c: answers an agent's FetchObject with an ObjectChunk. */
void objects_on_fetch(loom_sched_t *s, agent_t *a, const loom_msg_t *m);

/* sched_wire.c: agent protocol */
void on_router_message(void *ud, zmq_msg_t *parts, size_t nparts);
/* Queues a message to a routing id (a peer that is not a known agent). */
void sched_send_rid(loom_sched_t *s, const uint8_t *rid, size_t rid_len, loom_msg_t *msg);
/* Commits and sends what is queued now (the start-up self-check). */
void sched_flush_now(loom_sched_t *s);

/* --- agent authentication (sched_auth.c) --- */
/* Loads or creates the server key pair, starts the ZAP handler; call
 * before binding the agents' socket. */
int auth_open(loom_sched_t *s, void *router, char *why, size_t whylen);
/* Connects with a fresh key and checks that ZAP saw it and that it gets
 * nothing but "not enrolled"; after binding. */
int auth_selfcheck(loom_sched_t *s, const char *endpoint, char *why, size_t whylen);
void auth_close(loom_sched_t *s);
/* Who sent this message: the agent whose connection it came on, after
 * checking the message's CURVE key matches. Handles Join and Hello
 * itself (returns NULL then, with *done set). */
agent_t *auth_sender(loom_sched_t *s, zmq_msg_t *parts, const loom_msg_t *m, bool *done);
void auth_unbind(loom_sched_t *s, agent_t *a);
void agents_check_liveness(loom_sched_t *s);
agent_t *agent_get_or_add(loom_sched_t *s, const char *name);
void agent_free(agent_t *a);

/* sched_secrets.c */
int sched_secrets_open(loom_sched_t *s, char *why, size_t whylen);
/* The task's secrets, decrypted, for its Dispatch; why names a missing one. */
int sched_secrets_resolve(loom_sched_t *s, const loom_dag_task_t *dt, Loom__Secret ***out,
                          size_t *n_out, char *why, size_t whylen);
void sched_secrets_free(Loom__Secret **list, size_t n);

#endif
