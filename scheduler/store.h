/* The state database: the only module that touches sqlite3. SQLite in WAL
 * mode is loomd's single source of truth; writes made during one loop turn
 * join one transaction (loom_store_begin is idempotent) that the scheduler
 * commits before it acts on them. Read queries for the HTTP API build their
 * JSON here, straight from the rows. */
#ifndef LOOM_STORE_H
#define LOOM_STORE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct loom_store loom_store_t;

typedef enum {
    LOOM_SYNC_NORMAL, /* survives a process crash; may lose the last commits on power loss */
    LOOM_SYNC_FULL,   /* fsync every commit */
} loom_sync_mode;

/* Opens (creating if needed) and migrates the database. On failure the
 * reason is in why. */
int loom_store_open(const char *path, loom_sync_mode sync, loom_store_t **out, char *why,
                    size_t whylen);
void loom_store_destroy(loom_store_t **s);
int loom_store_schema_version(loom_store_t *s);
/* The schema this loomd migrates to. */
int loom_store_schema_latest(void);

/* Starts a transaction unless one is open. */
int loom_store_begin(loom_store_t *s);
/* Commits the open transaction, if any. */
int loom_store_commit(loom_store_t *s);
/* Resets every statement still stepping, ending the read transaction it
 * holds; borrowed row strings are invalid afterwards. Called each turn. */
void loom_store_release(loom_store_t *s);
bool loom_store_in_txn(const loom_store_t *s);
/* Text of the last SQLite error. */
const char *loom_store_errmsg(loom_store_t *s);

/* --- pipelines ------------------------------------------------------------ */

typedef struct {
    uint64_t pipeline_id;
    uint32_t version;
    bool created; /* false: identical to the latest version */
} loom_submit_result_t;

int loom_store_pipeline_submit(loom_store_t *s, const char *name, const char *file,
                               const char *source, size_t len, const char *hash_hex,
                               uint32_t n_tasks, uint64_t now_ms, loom_submit_result_t *res);
/* Records where a new version came from: its code bundle (manifest hash,
 * or NULL) and git commit (or NULL; dirty -1 when unknown). */
int loom_store_version_origin(loom_store_t *s, uint64_t pipeline_id, uint32_t version,
                              const char *bundle, const char *git_commit, int git_dirty);
/* The code bundle of a version, or NULL (caller frees). */
char *loom_store_version_bundle(loom_store_t *s, uint64_t pipeline_id, uint32_t version);
/* Source of a version (0: the latest). Caller frees *source. */
int loom_store_pipeline_source(loom_store_t *s, const char *name, uint32_t version,
                               uint64_t *pipeline_id, uint32_t *version_out, char **source,
                               size_t *len);

/* --- runs, tasks, attempts ------------------------------------------------- */

typedef struct {
    uint64_t id;
    uint64_t pipeline_id;
    const char *pipeline; /* borrowed */
    uint32_t version;
    const char *state;
    const char *trigger;
    uint64_t created_ms, started_ms, ended_ms; /* 0: not reached */
    const char *params_json;                   /* the run's parameters, a JSON object */
    const char *origin_json; /* how it started: {"kind": "manual"|"schedule"|...}; NULL: manual */
    const char *event_json;  /* what a task sees as event.* and trigger.files; NULL: none */
} loom_run_row_t;

typedef struct {
    uint64_t id;
    uint64_t run_id;
    uint32_t idx; /* index in the DAG */
    const char *name;
    const char *needs_json; /* JSON array of names, written once */
    const char *state;
    uint32_t attempts;
    uint64_t current_attempt;
    uint64_t started_ms, ended_ms;
    bool has_exit;
    int exit_code;
    int signal;
    const char *error;      /* NULL: none */
    uint32_t dag_idx;       /* the DAG task this is (a copy of, for foreach) */
    const char *item_json;  /* foreach item as JSON; NULL: not a copy */
    uint64_t not_before_ms; /* a retry waits until then (unix ms); 0: now */
} loom_task_row_t;

typedef struct {
    uint64_t id;
    uint64_t task_id, run_id;
    uint32_t number;
    const char *agent;
    const char *state;
    uint64_t dispatched_ms, started_ms, ended_ms;
    bool has_exit;
    int exit_code;
    int signal;
    const char *error;
    uint64_t user_cpu_us, sys_cpu_us, max_rss;
    uint64_t log_seq, log_bytes;
    const char *metrics_json; /* NULL: none */
    const char *gpus_json;    /* GPU indexes assigned, a JSON array; NULL: none */
} loom_attempt_row_t;

int loom_store_run_insert(loom_store_t *s, loom_run_row_t *row); /* sets row->id */
int loom_store_run_update(loom_store_t *s, const loom_run_row_t *row);
int loom_store_task_insert(loom_store_t *s, loom_task_row_t *row); /* sets row->id */
int loom_store_task_update(loom_store_t *s, const loom_task_row_t *row);
int loom_store_attempt_insert(loom_store_t *s, loom_attempt_row_t *row); /* sets row->id */
int loom_store_attempt_update(loom_store_t *s, const loom_attempt_row_t *row);
int loom_store_attempt_log(loom_store_t *s, uint64_t attempt_id, uint64_t seq, uint64_t bytes);
/* Records the GPUs an attempt was given (a JSON array of indexes). */
int loom_store_attempt_gpus(loom_store_t *s, uint64_t attempt_id, const char *gpus_json);
/* Records the executor's name for an attempt's job ("slurm:1234"). */
int loom_store_attempt_job(loom_store_t *s, uint64_t attempt_id, const char *job_id);
/* Reads one attempt (strings borrowed until the next store call). */
int loom_store_attempt_get(loom_store_t *s, uint64_t attempt_id, loom_attempt_row_t *row);

/* Calls cb for every run that has not ended, oldest first. */
int loom_store_each_active_run(loom_store_t *s, int (*cb)(void *ud, const loom_run_row_t *row),
                               void *ud);
/* Calls cb for every task of a run, in DAG order. */
int loom_store_each_task(loom_store_t *s, uint64_t run_id,
                         int (*cb)(void *ud, const loom_task_row_t *row), void *ud);
/* Version source of a run's pipeline; caller frees *source. */
int loom_store_run_source(loom_store_t *s, uint64_t run_id, char **source, size_t *len);

/* Which attempt a log request means: number 0 is the latest. */
int loom_store_find_attempt(loom_store_t *s, uint64_t run_id, const char *task, uint32_t number,
                            uint64_t *attempt_id, uint32_t *number_out);

/* --- agents ----------------------------------------------------------------- */

typedef struct {
    const char *name;
    const char *hostname;
    const char *version;
    uint32_t cpus, slots;
    uint64_t memory_bytes;
    const char *labels_json;
    const char *state;
    uint64_t connected_ms, last_seen_ms;
    bool cordoned;
} loom_agent_row_t;

int loom_store_agent_upsert(loom_store_t *s, const loom_agent_row_t *row);
int loom_store_agent_state(loom_store_t *s, const char *name, const char *state,
                           uint64_t last_seen_ms);
int loom_store_agent_cordon(loom_store_t *s, const char *name, bool cordoned);
int loom_store_each_agent(loom_store_t *s, int (*cb)(void *ud, const loom_agent_row_t *row),
                          void *ud);

/* --- JSON for the API -------------------------------------------------------- */

/* --- triggers and admission (store_trig.c) ----------------------------------- */

/* Calls cb with the latest version of every pipeline, by name. */
int loom_store_each_latest(loom_store_t *s,
                           int (*cb)(void *ud, uint64_t pipeline_id, const char *name,
                                     uint32_t version, const char *source, size_t len),
                           void *ud);
int loom_store_pipeline_flags(loom_store_t *s, uint64_t pipeline_id, bool *paused,
                              uint64_t *last_trigger_run_ms);
int loom_store_pipeline_set_paused(loom_store_t *s, uint64_t pipeline_id, bool paused);
int loom_store_pipeline_set_last_trigger(loom_store_t *s, uint64_t pipeline_id, uint64_t ms);
/* A schedule's last fire time; LOOM_ENOTFOUND if it never had one. */
int loom_store_schedule_get(loom_store_t *s, uint64_t pipeline_id, const char *key,
                            int64_t *last_fire_s);
int loom_store_schedule_set(loom_store_t *s, uint64_t pipeline_id, const char *key,
                            int64_t last_fire_s);
/* A data file seen by a data trigger; LOOM_ENOTFOUND if never. */
int loom_store_data_file_get(loom_store_t *s, uint64_t pipeline_id, const char *key,
                             const char *path, uint64_t *size, int64_t *mtime_ns);
/* Records a file as arrived and waiting for a run (run_id NULL). */
int loom_store_data_file_put(loom_store_t *s, uint64_t pipeline_id, const char *key,
                             const char *path, uint64_t size, int64_t mtime_ns, uint64_t seen_ms);
/* Files arrived and waiting, oldest first. */
int loom_store_data_files_waiting(loom_store_t *s, uint64_t pipeline_id, const char *key,
                                  int (*cb)(void *ud, const char *path), void *ud);
/* Marks the waiting files in paths (a JSON array) as handled by run_id (0:
 * handled without a run). */
int loom_store_data_files_done(loom_store_t *s, uint64_t pipeline_id, const char *key,
                               const json_t *paths, uint64_t run_id);
/* An event delivered before under this idempotency key: its id and outcome
 * (caller frees); LOOM_ENOTFOUND if none. */
int loom_store_event_find(loom_store_t *s, const char *idem_key, uint64_t *id, char **outcome);
int loom_store_event_insert(loom_store_t *s, const char *name, const char *source,
                            uint64_t received_ms, const char *idem_key, const char *payload,
                            uint64_t *id);
int loom_store_event_outcome(loom_store_t *s, uint64_t id, const char *outcome_json);
/* Triggers waiting to be admitted: in a debounce window (due_ms > 0) or for
 * a free run slot (due_ms 0). */
typedef struct {
    uint64_t id, pipeline_id, due_ms, created_ms;
    const char *origin_json, *event_json, *params_json;
} loom_queue_row_t;
int loom_store_queue_insert(loom_store_t *s, loom_queue_row_t *row); /* sets row->id */
int loom_store_queue_update(loom_store_t *s, const loom_queue_row_t *row);
int loom_store_queue_delete(loom_store_t *s, uint64_t id);
int loom_store_each_queued(loom_store_t *s, int (*cb)(void *ud, const loom_queue_row_t *row),
                           void *ud);
/* Records what a trigger led to ("started", "queued", "skipped", ...). */
int loom_store_decision(loom_store_t *s, uint64_t pipeline_id, uint64_t at_ms, const char *kind,
                        const char *what, const char *decision, uint64_t run_id,
                        const char *reason);
int loom_store_json_decisions(loom_store_t *s, const char *pipeline, int limit, json_t **out);
int loom_store_json_events(loom_store_t *s, const char *name, int limit, json_t **out);

/* --- artifacts, cache, models (store_art.c) ---------------------------------- */

typedef struct {
    uint64_t run_id, task_id, attempt_id; /* attempt 0: reused from the cache */
    const char *task, *path, *hash;
    uint64_t size;
    uint32_t mode;
    uint64_t created_ms;
    uint64_t cached_from; /* the run it was made by, when reused; 0: made here */
} loom_artifact_row_t;

int loom_store_artifact_add(loom_store_t *s, const loom_artifact_row_t *a);
/* Calls cb for each artifact of a task (of a run), by path. */
int loom_store_task_artifacts(loom_store_t *s, uint64_t task_id,
                              int (*cb)(void *ud, const loom_artifact_row_t *a), void *ud);
/* Records that an attempt was given an artifact (lineage). */
int loom_store_attempt_input(loom_store_t *s, uint64_t attempt_id, const char *path,
                             const char *hash, const char *from_task, uint64_t from_attempt);
int loom_store_attempt_cache_key(loom_store_t *s, uint64_t attempt_id, const char *key);
int loom_store_attempt_cache_key_get(loom_store_t *s, uint64_t attempt_id, char **key);
/* The successful attempt recorded under a cache key; LOOM_ENOTFOUND if none. */
int loom_store_cache_get(loom_store_t *s, const char *key, uint64_t *run_id, uint64_t *task_id,
                         uint64_t *attempt_id);
int loom_store_cache_put(loom_store_t *s, const char *key, uint64_t run_id, uint64_t task_id,
                         uint64_t attempt_id, uint64_t now_ms);
int loom_store_task_cached_from(loom_store_t *s, uint64_t task_id, uint64_t run_id);
/* Reads (set false) or writes (set true) a run's `--no-cache`. */
int loom_store_run_no_cache(loom_store_t *s, uint64_t run_id, bool *no_cache, bool set);

typedef struct {
    const char *name;
    uint64_t run_id;
    const char *task;
    uint64_t attempt_id;
    const char *path, *hash;
    uint64_t size;
    const char *metrics_json;
    uint64_t created_ms;
} loom_model_row_t;

/* Adds the next version of a model; its number goes to *version. */
int loom_store_model_register(loom_store_t *s, const loom_model_row_t *m, uint32_t *version);
/* LOOM_ENOTFOUND if there is no such version; *metrics_json (may be NULL)
 * is the caller's to free. */
int loom_store_model_version(loom_store_t *s, const char *name, uint32_t version,
                             char **metrics_json);
int loom_store_model_alias_get(loom_store_t *s, const char *name, const char *alias,
                               uint32_t *version);
int loom_store_model_alias_set(loom_store_t *s, const char *name, const char *alias,
                               uint32_t version, uint64_t now_ms);
int loom_store_json_artifacts(loom_store_t *s, uint64_t run_id, const char *task, json_t **out);
int loom_store_artifact_find(loom_store_t *s, uint64_t run_id, const char *task, const char *path,
                             char hash[65], uint64_t *size);
int loom_store_json_models(loom_store_t *s, json_t **out);
int loom_store_json_model(loom_store_t *s, const char *name, json_t **out);
int loom_store_json_metrics(loom_store_t *s, const char *pipeline, const char *task, int limit,
                            json_t **out);
/* The chain of runs and artifacts that made an artifact (by hash, or by
 * run, task and path), back to the data that started them. */
int loom_store_json_lineage(loom_store_t *s, const char *hash, uint64_t run_id, const char *task,
                            const char *path, json_t **out);

int loom_store_json_pipelines(loom_store_t *s, json_t **out);
/* A pipeline with its versions and the source of version (0: the latest). */
int loom_store_json_pipeline(loom_store_t *s, const char *name, uint32_t version, json_t **out);
int loom_store_json_runs(loom_store_t *s, const char *pipeline, int limit, json_t **out);
int loom_store_json_run(loom_store_t *s, uint64_t run_id, json_t **out);
/* The run with its tasks as JSON text, built a task at a time; waiting
 * (may be NULL) gives a queued task's "waiting" by its index. */
int loom_store_run_text(loom_store_t *s, uint64_t run_id,
                        const char *(*waiting)(void *ud, uint32_t idx), void *ud, char **out,
                        size_t *len);
/* The run without its tasks, with "tasks_total": cheap for huge runs. */
int loom_store_json_run_summary(loom_store_t *s, uint64_t run_id, json_t **out);
/* Every attempt of one task of a run, oldest first. */
int loom_store_json_attempts(loom_store_t *s, uint64_t run_id, const char *task, json_t **out);

/* --- secrets (store_secrets.c): sealed rows only, never a plaintext ------ */

/* Creates or replaces the row (kind "task" or "webhook", name); created_ms
 * is kept on replace. */
int loom_store_secret_put(loom_store_t *s, const char *kind, const char *name, const uint8_t *nonce,
                          size_t nonce_len, const uint8_t *ct, size_t ct_len, uint64_t now_ms);
/* Copies of the row's nonce and ciphertext (caller frees); LOOM_ENOTFOUND. */
int loom_store_secret_get(loom_store_t *s, const char *kind, const char *name, uint8_t **nonce,
                          size_t *nonce_len, uint8_t **ct, size_t *ct_len);
/* LOOM_ENOTFOUND when there is no such row. */
int loom_store_secret_delete(loom_store_t *s, const char *kind, const char *name);
/* Some row, any (to check a key against); LOOM_ENOTFOUND when none. */
int loom_store_secret_first(loom_store_t *s, char **kind, char **name);
/* [{"name", "created_ms", "updated_ms"}] of one kind, by name. */
int loom_store_json_secrets(loom_store_t *s, const char *kind, json_t **out);

#endif
