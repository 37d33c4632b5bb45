/* loomd's top object: owns the state database, the agents' ROUTER socket and
 * every run in flight, all on one libuv loop. The HTTP API (api.c) and main.c
 * sit on top; a test can run a scheduler and agents in one process. */
#ifndef LOOM_SCHEDULER_H
#define LOOM_SCHEDULER_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "loom/dag.h"
#include "loom/util.h"
#include "objects.h"
#include "store.h"

typedef struct loom_sched loom_sched_t;

typedef struct {
    const char *state_dir;     /* loom.db and logs/ live here */
    const char *bind;          /* ZeroMQ endpoint for agents, e.g. tcp://127.0.0.1:* */
    uint32_t heartbeat_ms;     /* default 1000 */
    uint32_t agent_timeout_ms; /* silence before an agent is lost; default 10000 */
    uint32_t max_lost_retries; /* extra attempts when agents die; default 3 */
    loom_sync_mode sync;
    const char *const *pools; /* "NAME=LIMIT": at most LIMIT tasks of the pool at once */
    size_t n_pools;
    void *zmq_ctx;           /* optional shared context */
    loom_clock_t clock;      /* zero value: the real monotonic clock */
    loom_clock_t wall;       /* unix ms, for schedules and trigger windows; zero: the real one */
    uint64_t data_rescan_ms; /* data folders' rescan period; 0: 30 s */
    uint64_t max_log_bytes;  /* an attempt's log is cut here, with a notice; 0: 1 GiB */
    uint64_t min_free_bytes; /* free space kept on the state folder's disk; 0: 64 MiB */
    const char *secrets_key; /* the secrets key file; NULL: state_dir/secrets.key */
    /* In-process tests and benchmarks that drive the scheduler with raw
     * DEALER sockets only: no CURVE, no key checks. Never a loomd flag. */
    bool insecure_plaintext;
    /* Fault injection for tests: do not start the ZAP handler (so CURVE is
     * fail-open); the start-up self-check must then refuse to run. */
    bool fault_skip_zap;
} loom_sched_config_t;

/* Told, after each commit, what changed, so that waiting HTTP clients can be
 * answered. Never called from inside another loom callback's stack frame
 * that holds state: only from the end-of-turn flush. */
typedef struct {
    void (*on_run_changed)(void *ud, uint64_t run_id);
    void (*on_task_output)(void *ud, uint64_t run_id);
    void *ud;
} loom_sched_observer_t;

loom_sched_t *loom_sched_new(uv_loop_t *loop, const loom_sched_config_t *cfg);
/* Opens the database under state_dir and recovers runs in flight. */
int loom_sched_open(loom_sched_t *s, char *why, size_t whylen);
/* Binds the agents' socket; the endpoint actually bound goes to out. */
int loom_sched_bind(loom_sched_t *s, char *out, size_t outlen, char *why, size_t whylen);
void loom_sched_set_observer(loom_sched_t *s, const loom_sched_observer_t *obs);
/* Stops all handles; on_closed runs once the last one is released. */
void loom_sched_close(loom_sched_t *s, void (*on_closed)(void *ud), void *ud);
void loom_sched_destroy(loom_sched_t **s);

loom_store_t *loom_sched_store(loom_sched_t *s);
loom_objects_t *loom_sched_objects(loom_sched_t *s);
/* NULL while there is room; else why loomd takes on no new work, in buf. */
const char *loom_sched_disk_full(loom_sched_t *s, char *buf, size_t len);
/* Commits the writes of this turn now (before answering a client). */
int loom_sched_commit(loom_sched_t *s);

/* Where a submitted version comes from; every field may be NULL/-1. */
typedef struct {
    const char *bundle;     /* code bundle manifest hash; must be stored */
    const char *git_commit; /* commit of the folder, if it is a checkout */
    int git_dirty;          /* 1 dirty, 0 clean, -1 unknown */
} loom_submit_origin_t;

/* Validates and stores a DAG (and checks its bundle is complete). Returns 0
 * with *result ({"pipeline", "version", "created", "tasks", "hash"}),
 * LOOM_EPARSE with *diags filled, LOOM_ENOTFOUND with the missing object in
 * *diags, or another error. A version is new when the DAG text or the
 * bundle differs from the latest one. */
int loom_sched_submit(loom_sched_t *s, const char *file, const char *source, size_t len,
                      const loom_submit_origin_t *origin, json_t **result, loom_diags_t *diags);
/* Creates a run of a pipeline version (0: latest) with parameters (a JSON
 * object, may be NULL; values are checked against the declared types, text
 * is converted) and queues its first tasks. LOOM_ENOTFOUND for an unknown
 * pipeline or version, LOOM_EINVAL (why set) for bad parameters. */
int loom_sched_start_run(loom_sched_t *s, const char *pipeline, uint32_t version,
                         const char *trigger, json_t *params, bool no_cache, uint64_t *run_id,
                         char *why, size_t whylen);
/* LOOM_ENOTFOUND, LOOM_ESTATE if the run already ended. */
int loom_sched_cancel_run(loom_sched_t *s, uint64_t run_id, const char *reason);
/* A run in flight's change counter (0 once ended): it grows with every
 * change of the run or its tasks, so a client can wait for the next one. */
uint64_t loom_sched_run_seq(loom_sched_t *s, uint64_t run_id);
/* True while the run has not ended. */
bool loom_sched_run_active(loom_sched_t *s, uint64_t run_id);
/* True while the attempt may still produce output. */
bool loom_sched_attempt_active(loom_sched_t *s, uint64_t attempt_id);
/* Path of an attempt's log file; caller frees. */
char *loom_sched_log_path(loom_sched_t *s, uint64_t run_id, uint64_t attempt_id);
/* Its time index: native-endian uint64 pairs (byte offset where a chunk
 * starts, unix ms loomd stored it), in order; entries at or past the log's
 * recorded size are stale (a restart trims the log, not the index). */
char *loom_sched_log_ts_path(loom_sched_t *s, uint64_t run_id, uint64_t attempt_id);
json_t *loom_sched_agents_json(loom_sched_t *s);
/* Stops (cordon) or resumes placing work on an agent; drain also shows it
 * as draining until what it runs has finished. LOOM_ENOTFOUND if unknown. */
int loom_sched_agent_cordon(loom_sched_t *s, const char *name, bool cordon, bool drain);
/* --- agent enrolment (sched_auth.c) --- */

/* The CURVE server public key (Z85), once bound; "" in plaintext mode. */
const char *loom_sched_server_key(loom_sched_t *s);
/* A one-time join token for an agent called name (NULL: any name), valid
 * ttl_ms (0: one hour). *result: {"token", "id", "expires_unix_ms"}; the
 * token text exists only there (loomd keeps its hash). */
int loom_sched_join_token(loom_sched_t *s, const char *name, uint64_t ttl_ms, json_t **result);
/* Approves a key for name (NULL: the name it claimed when it was refused).
 * LOOM_EINVAL (bad key, no name known), LOOM_ESTATE (revoked), LOOM_EXISTS
 * (name has another approved key); why says which. */
int loom_sched_key_approve(loom_sched_t *s, const char *key, const char *name, char *why,
                           size_t whylen);
/* Revokes every key of the agent, drops its connection's messages from now
 * on, marks it lost (its attempts are retried) and tells it so.
 * LOOM_ENOTFOUND when the agent has no key and is unknown. */
int loom_sched_agent_revoke(loom_sched_t *s, const char *name, uint32_t *n_keys);
/* [{"public_key", "agent", "state", "created_unix_ms", ...}] */
json_t *loom_sched_keys_json(loom_sched_t *s);
/* Adds "waiting" (why it is still queued) to the queued tasks of a run's
 * JSON, when the run is in flight. */
void loom_sched_annotate_run(loom_sched_t *s, json_t *run);
/* Why task idx of a run in flight is still queued, or NULL. */
const char *loom_sched_task_waiting(loom_sched_t *s, uint64_t run_id, uint32_t idx);

/* --- triggers (triggers.c, trig_sources.c) --- */

/* An event arrived (POST /events/NAME, an Alertmanager alert, `loom events
 * send`): it is stored, and every pipeline with an event trigger of that
 * name whose `when` holds gets a firing through its admission policy. A
 * repeated idempotency key starts nothing. *result: {"event_id",
 * "duplicate", "outcome": [{"pipeline", "decision", "run_id", "reason"}]}. */
int loom_sched_event(loom_sched_t *s, const char *name, const char *source, json_t *payload,
                     const char *idem_key, json_t **result);
/* Data arrivals from outside loomd's file system (S3 notifications): path
 * like "s3://bucket/key", with size and a version tag. */
int loom_sched_data_arrived(loom_sched_t *s, const char *path, uint64_t size, const char *tag,
                            json_t **result);
/* Every trigger of every pipeline, with its next fire time. */
json_t *loom_sched_triggers_json(loom_sched_t *s);
/* LOOM_ENOTFOUND for an unknown pipeline. */
int loom_sched_pipeline_pause(loom_sched_t *s, const char *pipeline, bool paused);
/* Fires what is due as of the wall clock now (the timer calls it; tests
 * with an injected clock call it after moving time). */
void loom_sched_triggers_tick(loom_sched_t *s);

/* Points a model's alias at a version (loom models alias); fires a
 * model.alias event. LOOM_ENOTFOUND for an unknown model or version. */
int loom_sched_model_alias(loom_sched_t *s, const char *name, const char *alias, uint32_t version);

/* Retention (loom gc). At least one of keep_last and max_age_ms. */
typedef struct {
    uint32_t keep_last;  /* keep each pipeline's newest N runs; 0: no such rule */
    uint64_t max_age_ms; /* delete ended runs older than this; 0: no such rule */
    bool dry_run;        /* count, delete nothing */
} loom_gc_opts_t;
/* *result: {"runs_deleted", "objects_deleted", "bytes_freed", ...}.
 * LOOM_EINVAL when no rule is given. */
int loom_sched_gc(loom_sched_t *s, const loom_gc_opts_t *o, json_t **result);

/* Counters for tests and benchmarks. */
typedef struct {
    uint64_t dispatched, finished, refused, bad_messages, agents_connected, commits;
} loom_sched_stats_t;
void loom_sched_stats(loom_sched_t *s, loom_sched_stats_t *out);
/* The Prometheus exposition of loomd's metrics (metrics.c), appended to out. */
void loom_sched_metrics_text(loom_sched_t *s, loom_buf_t *out);
/* Counts an answered HTTP request (route: its pattern, a static string). */
void loom_sched_metrics_http(loom_sched_t *s, const char *method, const char *route,
                             unsigned status, double seconds);

/* --- secrets (sched_secrets.c) ---
 * kind "task" (given to tasks that list them) or "webhook" (a hook's HMAC
 * key). Values are sealed before they reach the database; set and delete
 * commit before they return. get gives a plaintext to release with
 * loom_secret_free; LOOM_ENOTFOUND, or LOOM_EPARSE when the row does not
 * decrypt with the key. */
int loom_sched_secret_set(loom_sched_t *s, const char *kind, const char *name, const uint8_t *value,
                          size_t len);
int loom_sched_secret_get(loom_sched_t *s, const char *kind, const char *name, uint8_t **value,
                          size_t *len);
int loom_sched_secret_delete(loom_sched_t *s, const char *kind, const char *name);
/* [{"name", "created_ms", "updated_ms"[, "used_by": ["PIPELINE/TASK"]]}]: never values. */
int loom_sched_secrets_json(loom_sched_t *s, const char *kind, json_t **out);
/* The scheduler's wall clock (cfg.wall), unix ms. */
uint64_t loom_sched_wall_ms(loom_sched_t *s);

#endif
