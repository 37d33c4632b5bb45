/* SQLite-backed state for loomd; see store.h. Statements are prepared once
 * and cached; schema changes are numbered migrations tracked with
 * PRAGMA user_version. */
#include "store.h"
#include "store_int.h"

#include "loom/err.h"
#include "loom/log.h"
#include "loom/util.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const migrations[] = {
    /* 1: the spine */
    "CREATE TABLE pipelines ("
    "  id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
    "  latest_version INTEGER NOT NULL, created_ms INTEGER NOT NULL,"
    "  updated_ms INTEGER NOT NULL);"
    "CREATE TABLE pipeline_versions ("
    "  pipeline_id INTEGER NOT NULL REFERENCES pipelines(id), version INTEGER NOT NULL,"
    "  hash TEXT NOT NULL, file TEXT NOT NULL, source BLOB NOT NULL,"
    "  n_tasks INTEGER NOT NULL, created_ms INTEGER NOT NULL,"
    "  PRIMARY KEY (pipeline_id, version));"
    "CREATE TABLE runs ("
    "  id INTEGER PRIMARY KEY, pipeline_id INTEGER NOT NULL REFERENCES pipelines(id),"
    "  version INTEGER NOT NULL, state TEXT NOT NULL, trigger TEXT NOT NULL,"
    "  created_ms INTEGER NOT NULL, started_ms INTEGER, ended_ms INTEGER);"
    "CREATE INDEX runs_by_pipeline ON runs(pipeline_id, id);"
    "CREATE INDEX runs_active ON runs(state) WHERE state IN ('queued', 'running');"
    "CREATE TABLE tasks ("
    "  id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL REFERENCES runs(id),"
    "  idx INTEGER NOT NULL, name TEXT NOT NULL, needs TEXT NOT NULL,"
    "  state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,"
    "  current_attempt INTEGER, started_ms INTEGER, ended_ms INTEGER,"
    "  exit_code INTEGER, signal INTEGER, error TEXT,"
    "  UNIQUE (run_id, idx));"
    "CREATE TABLE attempts ("
    "  id INTEGER PRIMARY KEY, task_id INTEGER NOT NULL REFERENCES tasks(id),"
    "  run_id INTEGER NOT NULL, number INTEGER NOT NULL, agent TEXT NOT NULL,"
    "  state TEXT NOT NULL, dispatched_ms INTEGER NOT NULL, started_ms INTEGER,"
    "  ended_ms INTEGER, exit_code INTEGER, signal INTEGER, error TEXT,"
    "  user_cpu_us INTEGER, sys_cpu_us INTEGER, max_rss INTEGER,"
    "  log_seq INTEGER NOT NULL DEFAULT 0, log_bytes INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX attempts_by_task ON attempts(task_id, number);"
    "CREATE TABLE agents ("
    "  name TEXT PRIMARY KEY, hostname TEXT, version TEXT, cpus INTEGER,"
    "  memory_bytes INTEGER, slots INTEGER, labels TEXT NOT NULL DEFAULT '{}',"
    "  state TEXT NOT NULL, connected_ms INTEGER, last_seen_ms INTEGER);",
    /* 2: the DAG format (parameters, foreach, backoff, metrics) and bundles */
    "ALTER TABLE pipeline_versions ADD COLUMN bundle TEXT;"
    "ALTER TABLE pipeline_versions ADD COLUMN git_commit TEXT;"
    "ALTER TABLE pipeline_versions ADD COLUMN git_dirty INTEGER;"
    "ALTER TABLE runs ADD COLUMN params TEXT NOT NULL DEFAULT '{}';"
    "ALTER TABLE tasks ADD COLUMN dag_idx INTEGER;"
    "ALTER TABLE tasks ADD COLUMN item TEXT;"
    "ALTER TABLE tasks ADD COLUMN not_before_ms INTEGER;"
    "ALTER TABLE attempts ADD COLUMN metrics TEXT;"
    "UPDATE tasks SET dag_idx = idx;",
    /* 3: the fleet (GPU assignments, cordoned agents) */
    "ALTER TABLE attempts ADD COLUMN gpus TEXT;"
    "ALTER TABLE agents ADD COLUMN cordoned INTEGER NOT NULL DEFAULT 0;",
    /* 4: triggers (schedules, data arrival, events) and admission */
    "ALTER TABLE runs ADD COLUMN origin TEXT;"
    "ALTER TABLE runs ADD COLUMN event TEXT;"
    "ALTER TABLE pipelines ADD COLUMN paused INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE pipelines ADD COLUMN last_trigger_run_ms INTEGER;"
    "CREATE TABLE schedules ("
    "  pipeline_id INTEGER NOT NULL REFERENCES pipelines(id), key TEXT NOT NULL,"
    "  last_fire_s INTEGER NOT NULL, PRIMARY KEY (pipeline_id, key));"
    "CREATE TABLE data_files ("
    "  pipeline_id INTEGER NOT NULL REFERENCES pipelines(id), key TEXT NOT NULL,"
    "  path TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,"
    "  seen_ms INTEGER NOT NULL, run_id INTEGER,"
    "  PRIMARY KEY (pipeline_id, key, path));"
    "CREATE TABLE events ("
    "  id INTEGER PRIMARY KEY, name TEXT NOT NULL, source TEXT NOT NULL,"
    "  received_ms INTEGER NOT NULL, idem_key TEXT UNIQUE, payload TEXT NOT NULL,"
    "  outcome TEXT NOT NULL DEFAULT '[]');"
    "CREATE TABLE trigger_queue ("
    "  id INTEGER PRIMARY KEY, pipeline_id INTEGER NOT NULL REFERENCES pipelines(id),"
    "  due_ms INTEGER, origin TEXT NOT NULL, event TEXT, params TEXT NOT NULL,"
    "  created_ms INTEGER NOT NULL);"
    "CREATE TABLE trigger_decisions ("
    "  id INTEGER PRIMARY KEY, pipeline_id INTEGER NOT NULL REFERENCES pipelines(id),"
    "  at_ms INTEGER NOT NULL, kind TEXT NOT NULL, what TEXT NOT NULL,"
    "  decision TEXT NOT NULL, run_id INTEGER, reason TEXT);"
    "CREATE INDEX decisions_by_pipeline ON trigger_decisions(pipeline_id, id);",
    /* 5: artifacts, the task cache, lineage and the model registry */
    "CREATE TABLE artifacts ("
    "  id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL REFERENCES runs(id),"
    "  task_id INTEGER NOT NULL, attempt_id INTEGER, task TEXT NOT NULL,"
    "  path TEXT NOT NULL, hash TEXT NOT NULL, size INTEGER NOT NULL,"
    "  mode INTEGER NOT NULL, created_ms INTEGER NOT NULL, cached_from INTEGER);"
    "CREATE INDEX artifacts_by_run ON artifacts(run_id, task, path);"
    "CREATE INDEX artifacts_by_attempt ON artifacts(attempt_id);"
    "CREATE INDEX artifacts_by_hash ON artifacts(hash);"
    "CREATE TABLE attempt_inputs ("
    "  attempt_id INTEGER NOT NULL, path TEXT NOT NULL, hash TEXT NOT NULL,"
    "  from_task TEXT NOT NULL, from_attempt INTEGER, PRIMARY KEY (attempt_id, path));"
    "CREATE TABLE task_cache ("
    "  key TEXT PRIMARY KEY, run_id INTEGER NOT NULL, task_id INTEGER NOT NULL,"
    "  attempt_id INTEGER NOT NULL, created_ms INTEGER NOT NULL);"
    "CREATE INDEX task_cache_by_run ON task_cache(run_id);"
    "ALTER TABLE tasks ADD COLUMN cached_from INTEGER;"
    "ALTER TABLE attempts ADD COLUMN cache_key TEXT;"
    "ALTER TABLE runs ADD COLUMN no_cache INTEGER NOT NULL DEFAULT 0;"
    "CREATE TABLE models ("
    "  name TEXT NOT NULL, version INTEGER NOT NULL, run_id INTEGER NOT NULL,"
    "  task TEXT NOT NULL, attempt_id INTEGER NOT NULL, path TEXT NOT NULL,"
    "  hash TEXT NOT NULL, size INTEGER NOT NULL, metrics TEXT,"
    "  created_ms INTEGER NOT NULL, PRIMARY KEY (name, version));"
    "CREATE INDEX models_by_hash ON models(hash);"
    "CREATE TABLE model_aliases ("
    "  name TEXT NOT NULL, alias TEXT NOT NULL, version INTEGER NOT NULL,"
    "  updated_ms INTEGER NOT NULL, PRIMARY KEY (name, alias));",
    /* 6: security. agent_keys: CURVE public keys (Z85) and the agent each
     * speaks for; state pending|approved|revoked. tokens: API tokens
     * (kind 'api', role read|operate|admin) and one-time agent join tokens
     * (kind 'join'), stored only as BLAKE2b-256 hashes of the secret part.
     * secrets: values sealed with XChaCha20-Poly1305 (kind and name as
     * additional data) under a key file kept outside the database; kind
     * 'task' (given to tasks) or 'webhook' (a hook's HMAC key). */
    "CREATE TABLE agent_keys ("
    "  public_key TEXT PRIMARY KEY, agent TEXT NOT NULL, state TEXT NOT NULL,"
    "  created_ms INTEGER NOT NULL, approved_ms INTEGER, revoked_ms INTEGER, via TEXT);"
    "CREATE INDEX agent_keys_by_agent ON agent_keys(agent);"
    "CREATE TABLE tokens ("
    "  id INTEGER PRIMARY KEY, kind TEXT NOT NULL, role TEXT, name TEXT NOT NULL,"
    "  hash BLOB NOT NULL UNIQUE, created_ms INTEGER NOT NULL, expires_ms INTEGER,"
    "  used_ms INTEGER, revoked_ms INTEGER);"
    "CREATE TABLE secrets ("
    "  name TEXT NOT NULL, kind TEXT NOT NULL, nonce BLOB NOT NULL, ciphertext BLOB NOT NULL,"
    "  created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL, PRIMARY KEY (kind, name));",
    /* 7: executors. job_id: the executor's name for the attempt's job
     * ("slurm:1234"); NULL for a local process. */
    "ALTER TABLE attempts ADD COLUMN job_id TEXT;",
};

enum {
    Q_BEGIN,
    Q_COMMIT,
    Q_PIPE_LATEST,
    Q_PIPE_INSERT,
    Q_PIPE_BUMP,
    Q_VERSION_INSERT,
    Q_VERSION_SOURCE,
    Q_RUN_INSERT,
    Q_RUN_UPDATE,
    Q_TASK_INSERT,
    Q_TASK_UPDATE,
    Q_ATTEMPT_INSERT,
    Q_ATTEMPT_UPDATE,
    Q_ATTEMPT_LOG,
    Q_ATTEMPT_GET,
    Q_AGENT_UPSERT,
    Q_AGENT_STATE,
    Q_COUNT
};

static const char *const sql[Q_COUNT] = {
    [Q_BEGIN] = "BEGIN IMMEDIATE",
    [Q_COMMIT] = "COMMIT",
    [Q_PIPE_LATEST] = "SELECT p.id, p.latest_version, v.hash FROM pipelines p"
                      " JOIN pipeline_versions v ON v.pipeline_id = p.id"
                      " AND v.version = p.latest_version WHERE p.name = ?1",
    [Q_PIPE_INSERT] = "INSERT INTO pipelines(name, latest_version, created_ms, updated_ms)"
                      " VALUES (?1, 1, ?2, ?2)",
    [Q_PIPE_BUMP] = "UPDATE pipelines SET latest_version = ?2, updated_ms = ?3 WHERE id = ?1",
    [Q_VERSION_INSERT] = "INSERT INTO pipeline_versions(pipeline_id, version, hash, file,"
                         " source, n_tasks, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [Q_VERSION_SOURCE] = "SELECT p.id, v.version, v.source FROM pipelines p"
                         " JOIN pipeline_versions v ON v.pipeline_id = p.id"
                         " WHERE p.name = ?1 AND v.version = CASE WHEN ?2 = 0"
                         " THEN p.latest_version ELSE ?2 END",
    [Q_RUN_INSERT] = "INSERT INTO runs(pipeline_id, version, state, trigger, created_ms,"
                     " started_ms, ended_ms, params, origin, event) VALUES (?1, ?2, ?3, ?4, ?5,"
                     " ?6, ?7, coalesce(?8, '{}'), ?9, ?10)",
    [Q_RUN_UPDATE] = "UPDATE runs SET state = ?2, started_ms = ?3, ended_ms = ?4 WHERE id = ?1",
    [Q_TASK_INSERT] = "INSERT INTO tasks(run_id, idx, name, needs, state, dag_idx, item)"
                      " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [Q_TASK_UPDATE] = "UPDATE tasks SET state = ?2, attempts = ?3, current_attempt = ?4,"
                      " started_ms = ?5, ended_ms = ?6, exit_code = ?7, signal = ?8,"
                      " error = ?9, not_before_ms = ?10 WHERE id = ?1",
    [Q_ATTEMPT_INSERT] = "INSERT INTO attempts(task_id, run_id, number, agent, state,"
                         " dispatched_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [Q_ATTEMPT_UPDATE] = "UPDATE attempts SET state = ?2, started_ms = ?3, ended_ms = ?4,"
                         " exit_code = ?5, signal = ?6, error = ?7, user_cpu_us = ?8,"
                         " sys_cpu_us = ?9, max_rss = ?10, log_seq = ?11, log_bytes = ?12,"
                         " metrics = ?13 WHERE id = ?1",
    [Q_ATTEMPT_LOG] = "UPDATE attempts SET log_seq = ?2, log_bytes = ?3 WHERE id = ?1",
    [Q_ATTEMPT_GET] = "SELECT id, task_id, run_id, number, agent, state, dispatched_ms,"
                      " started_ms, ended_ms, exit_code, signal, error, user_cpu_us,"
                      " sys_cpu_us, max_rss, log_seq, log_bytes, metrics, gpus FROM attempts"
                      " WHERE id = ?1",
    [Q_AGENT_UPSERT] = "INSERT INTO agents(name, hostname, version, cpus, memory_bytes, slots,"
                       " labels, state, connected_ms, last_seen_ms)"
                       " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
                       " ON CONFLICT(name) DO UPDATE SET hostname = ?2, version = ?3,"
                       " cpus = ?4, memory_bytes = ?5, slots = ?6, labels = ?7, state = ?8,"
                       " connected_ms = ?9, last_seen_ms = ?10",
    [Q_AGENT_STATE] = "UPDATE agents SET state = ?2, last_seen_ms = ?3 WHERE name = ?1",
};

struct loom_store {
    sqlite3 *db;
    sqlite3_stmt *stmts[Q_COUNT];
    bool in_txn;
};

sqlite3 *store_db(loom_store_t *s)
{
    return s->db;
}

sqlite3_stmt *store_write_stmt(loom_store_t *s, const char *q)
{
    return loom_store_begin(s) ? NULL : store_prepare(s, q);
}

int store_write_done(loom_store_t *s, sqlite3_stmt *st, const char *what)
{
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        LOG_ERROR("database: %s: %s", what, sqlite3_errmsg(s->db));
        return LOOM_EDB;
    }
    return 0;
}

json_t *store_json_int(sqlite3_stmt *st, int i)
{
    return sqlite3_column_type(st, i) == SQLITE_NULL ? json_null()
                                                     : json_integer(sqlite3_column_int64(st, i));
}

json_t *store_json_text(sqlite3_stmt *st, int i)
{
    const char *t = store_col_text(st, i);
    return t ? json_string(t) : json_null();
}

json_t *store_json_parsed(sqlite3_stmt *st, int i)
{
    const char *t = store_col_text(st, i);
    json_t *j = t ? json_loads(t, JSON_DECODE_ANY, NULL) : NULL;
    return j ? j : json_null();
}

static int db_err(loom_store_t *s, const char *what)
{
    LOG_ERROR("database: %s: %s", what, sqlite3_errmsg(s->db));
    return LOOM_EDB;
}

static sqlite3_stmt *stmt(loom_store_t *s, int q)
{
    sqlite3_stmt *st = s->stmts[q];
    if (!st && sqlite3_prepare_v3(s->db, sql[q], -1, SQLITE_PREPARE_PERSISTENT, &s->stmts[q],
                                  NULL) != SQLITE_OK) {
        db_err(s, sql[q]);
        return NULL;
    }
    st = s->stmts[q];
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return st;
}

/* Runs a statement that returns no rows. */
static int step_done(loom_store_t *s, sqlite3_stmt *st, const char *what)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) return db_err(s, what);
    return 0;
}

void store_bind_text(sqlite3_stmt *st, int i, const char *v)
{
    if (v)
        sqlite3_bind_text(st, i, v, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(st, i);
}

/* 0 means "not reached" and is stored as NULL. */
static void bind_ms(sqlite3_stmt *st, int i, uint64_t v)
{
    if (v)
        sqlite3_bind_int64(st, i, (sqlite3_int64)v);
    else
        sqlite3_bind_null(st, i);
}

static uint64_t col_u64(sqlite3_stmt *st, int i)
{
    return (uint64_t)sqlite3_column_int64(st, i);
}

const char *store_col_text(sqlite3_stmt *st, int i)
{
    return (const char *)sqlite3_column_text(st, i);
}

static int exec(loom_store_t *s, const char *q)
{
    char *msg = NULL;
    if (sqlite3_exec(s->db, q, NULL, NULL, &msg) != SQLITE_OK) {
        LOG_ERROR("database: %s: %s", q, msg ? msg : "?");
        sqlite3_free(msg);
        return LOOM_EDB;
    }
    return 0;
}

static int migrate(loom_store_t *s, char *why, size_t whylen)
{
    int have = loom_store_schema_version(s);
    int want = loom_store_schema_latest();
    if (have > want) {
        snprintf(why, whylen, "database schema %d is newer than this loomd (%d)", have, want);
        return LOOM_EDB;
    }
    for (int v = have; v < want; v++) {
        char pragma[64];
        snprintf(pragma, sizeof pragma, "PRAGMA user_version = %d", v + 1);
        if (exec(s, "BEGIN IMMEDIATE") || exec(s, migrations[v]) || exec(s, pragma) ||
            exec(s, "COMMIT")) {
            exec(s, "ROLLBACK");
            snprintf(why, whylen, "schema migration %d failed: %s", v + 1, sqlite3_errmsg(s->db));
            return LOOM_EDB;
        }
        LOG_INFO("database migrated to schema %d", v + 1);
    }
    return 0;
}

int loom_store_open(const char *path, loom_sync_mode sync, loom_store_t **out, char *why,
                    size_t whylen)
{
    loom_store_t *s = loom_xcalloc(1, sizeof *s);
    *out = NULL;
    if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
        SQLITE_OK) {
        snprintf(why, whylen, "cannot open %s: %s", path, sqlite3_errmsg(s->db));
        loom_store_destroy(&s);
        return LOOM_EDB;
    }
    sqlite3_busy_timeout(s->db, 5000);
    const char *mode =
        sync == LOOM_SYNC_FULL ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL";
    if (exec(s, "PRAGMA journal_mode = WAL") || exec(s, mode) ||
        exec(s, "PRAGMA foreign_keys = ON") || exec(s, "PRAGMA temp_store = MEMORY")) {
        snprintf(why, whylen, "cannot configure %s: %s", path, sqlite3_errmsg(s->db));
        loom_store_destroy(&s);
        return LOOM_EDB;
    }
    int rc = migrate(s, why, whylen);
    if (rc) {
        loom_store_destroy(&s);
        return rc;
    }
    *out = s;
    return 0;
}

void loom_store_destroy(loom_store_t **sp)
{
    loom_store_t *s = sp ? *sp : NULL;
    if (!s) return;
    if (s->in_txn) loom_store_commit(s);
    for (int i = 0; i < Q_COUNT; i++) sqlite3_finalize(s->stmts[i]);
    sqlite3_close(s->db);
    free(s);
    *sp = NULL;
}

int loom_store_schema_latest(void)
{
    return (int)(sizeof migrations / sizeof migrations[0]);
}

int loom_store_schema_version(loom_store_t *s)
{
    sqlite3_stmt *st;
    int v = -1;
    if (sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK) return -1;
    if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return v;
}

int loom_store_begin(loom_store_t *s)
{
    if (s->in_txn) return 0;
    sqlite3_stmt *st = stmt(s, Q_BEGIN);
    if (!st || step_done(s, st, "begin")) return LOOM_EDB;
    s->in_txn = true;
    return 0;
}

/* A statement left stepping (loom_store_attempt_get lends its row's strings
 * until the next call) keeps a read transaction open after the commit, and
 * no checkpoint can then move the WAL past that snapshot: the WAL grew
 * without bound in bench/soak.py until this was called each turn. */
void loom_store_release(loom_store_t *s)
{
    for (sqlite3_stmt *b = sqlite3_next_stmt(s->db, NULL); b; b = sqlite3_next_stmt(s->db, b))
        if (sqlite3_stmt_busy(b)) sqlite3_reset(b);
}

int loom_store_commit(loom_store_t *s)
{
    if (!s->in_txn) return 0;
    loom_store_release(s);
    sqlite3_stmt *st = stmt(s, Q_COMMIT);
    if (!st || step_done(s, st, "commit")) return LOOM_EDB;
    s->in_txn = false;
    return 0;
}

bool loom_store_in_txn(const loom_store_t *s)
{
    return s->in_txn;
}

const char *loom_store_errmsg(loom_store_t *s)
{
    return sqlite3_errmsg(s->db);
}

int loom_store_pipeline_submit(loom_store_t *s, const char *name, const char *file,
                               const char *source, size_t len, const char *hash_hex,
                               uint32_t n_tasks, uint64_t now_ms, loom_submit_result_t *res)
{
    sqlite3_stmt *st = stmt(s, Q_PIPE_LATEST);
    if (!st || loom_store_begin(s)) return LOOM_EDB;
    store_bind_text(st, 1, name);
    memset(res, 0, sizeof *res);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        res->pipeline_id = col_u64(st, 0);
        res->version = (uint32_t)sqlite3_column_int(st, 1);
        bool same = strcmp(store_col_text(st, 2), hash_hex) == 0;
        sqlite3_reset(st);
        if (same) return 0;
        res->version++;
        st = stmt(s, Q_PIPE_BUMP);
        if (!st) return LOOM_EDB;
        sqlite3_bind_int64(st, 1, (sqlite3_int64)res->pipeline_id);
        sqlite3_bind_int(st, 2, (int)res->version);
        sqlite3_bind_int64(st, 3, (sqlite3_int64)now_ms);
        if (step_done(s, st, "bump pipeline")) return LOOM_EDB;
    } else {
        sqlite3_reset(st);
        if (rc != SQLITE_DONE) return db_err(s, "find pipeline");
        st = stmt(s, Q_PIPE_INSERT);
        if (!st) return LOOM_EDB;
        store_bind_text(st, 1, name);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)now_ms);
        if (step_done(s, st, "insert pipeline")) return LOOM_EDB;
        res->pipeline_id = (uint64_t)sqlite3_last_insert_rowid(s->db);
        res->version = 1;
    }
    st = stmt(s, Q_VERSION_INSERT);
    if (!st) return LOOM_EDB;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)res->pipeline_id);
    sqlite3_bind_int(st, 2, (int)res->version);
    store_bind_text(st, 3, hash_hex);
    store_bind_text(st, 4, file);
    sqlite3_bind_blob(st, 5, source, (int)len, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 6, (int)n_tasks);
    sqlite3_bind_int64(st, 7, (sqlite3_int64)now_ms);
    if (step_done(s, st, "insert version")) return LOOM_EDB;
    res->created = true;
    return 0;
}

int loom_store_version_origin(loom_store_t *s, uint64_t pipeline_id, uint32_t version,
                              const char *bundle, const char *git_commit, int git_dirty)
{
    sqlite3_stmt *st = store_prepare(s, "UPDATE pipeline_versions SET bundle = ?3, git_commit = ?4,"
                                        " git_dirty = ?5 WHERE pipeline_id = ?1 AND version = ?2");
    if (!st) return LOOM_EDB;
    if (loom_store_begin(s)) {
        sqlite3_finalize(st);
        return LOOM_EDB;
    }
    sqlite3_bind_int64(st, 1, (sqlite3_int64)pipeline_id);
    sqlite3_bind_int(st, 2, (int)version);
    store_bind_text(st, 3, bundle);
    store_bind_text(st, 4, git_commit);
    if (git_dirty >= 0) sqlite3_bind_int(st, 5, git_dirty);
    int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : db_err(s, "version origin");
    sqlite3_finalize(st);
    return rc;
}

int loom_store_attempt_gpus(loom_store_t *s, uint64_t attempt_id, const char *gpus_json)
{
    sqlite3_stmt *st = store_prepare(s, "UPDATE attempts SET gpus = ?2 WHERE id = ?1");
    if (!st) return LOOM_EDB;
    if (loom_store_begin(s)) {
        sqlite3_finalize(st);
        return LOOM_EDB;
    }
    sqlite3_bind_int64(st, 1, (sqlite3_int64)attempt_id);
    store_bind_text(st, 2, gpus_json);
    int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : db_err(s, "attempt gpus");
    sqlite3_finalize(st);
    return rc;
}

int loom_store_attempt_job(loom_store_t *s, uint64_t attempt_id, const char *job_id)
{
    sqlite3_stmt *st = store_prepare(s, "UPDATE attempts SET job_id = ?2 WHERE id = ?1");
    if (!st) return LOOM_EDB;
    if (loom_store_begin(s)) {
        sqlite3_finalize(st);
        return LOOM_EDB;
    }
    sqlite3_bind_int64(st, 1, (sqlite3_int64)attempt_id);
    store_bind_text(st, 2, job_id);
    int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : db_err(s, "attempt job id");
    sqlite3_finalize(st);
    return rc;
}

int loom_store_agent_cordon(loom_store_t *s, const char *name, bool cordoned)
{
    sqlite3_stmt *st = store_prepare(s, "UPDATE agents SET cordoned = ?2 WHERE name = ?1");
    if (!st) return LOOM_EDB;
    if (loom_store_begin(s)) {
        sqlite3_finalize(st);
        return LOOM_EDB;
    }
    store_bind_text(st, 1, name);
    sqlite3_bind_int(st, 2, cordoned);
    int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : db_err(s, "agent cordon");
    sqlite3_finalize(st);
    return rc;
}

char *loom_store_version_bundle(loom_store_t *s, uint64_t pipeline_id, uint32_t version)
{
    sqlite3_stmt *st = store_prepare(s, "SELECT bundle FROM pipeline_versions"
                                        " WHERE pipeline_id = ?1 AND version = ?2");
    if (!st) return NULL;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)pipeline_id);
    sqlite3_bind_int(st, 2, (int)version);
    char *out = NULL;
    if (sqlite3_step(st) == SQLITE_ROW && store_col_text(st, 0))
        out = loom_xstrdup(store_col_text(st, 0));
    sqlite3_finalize(st);
    return out;
}

static char *col_blob_dup(sqlite3_stmt *st, int i, size_t *len)
{
    const void *p = sqlite3_column_blob(st, i);
    size_t n = (size_t)sqlite3_column_bytes(st, i);
    if (len) *len = n;
    return loom_xstrndup(p ? p : "", n);
}

int loom_store_pipeline_source(loom_store_t *s, const char *name, uint32_t version,
                               uint64_t *pipeline_id, uint32_t *version_out, char **source,
                               size_t *len)
{
    sqlite3_stmt *st = stmt(s, Q_VERSION_SOURCE);
    if (!st) return LOOM_EDB;
    store_bind_text(st, 1, name);
    sqlite3_bind_int(st, 2, (int)version);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        sqlite3_reset(st);
        return rc == SQLITE_DONE ? LOOM_ENOTFOUND : db_err(s, "pipeline source");
    }
    *pipeline_id = col_u64(st, 0);
    *version_out = (uint32_t)sqlite3_column_int(st, 1);
    *source = col_blob_dup(st, 2, len);
    sqlite3_reset(st);
    return 0;
}

int loom_store_run_insert(loom_store_t *s, loom_run_row_t *row)
{
    sqlite3_stmt *st = stmt(s, Q_RUN_INSERT);
    if (!st || loom_store_begin(s)) return LOOM_EDB;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)row->pipeline_id);
    sqlite3_bind_int(st, 2, (int)row->version);
    store_bind_text(st, 3, row->state);
    store_bind_text(st, 4, row->trigger);
    sqlite3_bind_int64(st, 5, (sqlite3_int64)row->created_ms);
    bind_ms(st, 6, row->started_ms);
    bind_ms(st, 7, row->ended_ms);
    store_bind_text(st, 8, row->params_json);
    store_bind_text(st, 9, row->origin_json);
    store_bind_text(st, 10, row->event_json);
    if (step_done(s, st, "insert run")) return LOOM_EDB;
    row->id = (uint64_t)sqlite3_last_insert_rowid(s->db);
    return 0;
}

int loom_store_run_update(loom_store_t *s, const loom_run_row_t *row)
{
    sqlite3_stmt *st = stmt(s, Q_RUN_UPDATE);
    if (!st || loom_store_begin(s)) return LOOM_EDB;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)row->id);
    store_bind_text(st, 2, row->state);
    bind_ms(st, 3, row->started_ms);
    bind_ms(st, 4, row->ended_ms);
    return step_done(s, st, "update run");
}

int loom_store_task_insert(loom_store_t *s, loom_task_row_t *row)
{
    sqlite3_stmt *st = stmt(s, Q_TASK_INSERT);
    if (!st || loom_store_begin(s)) return LOOM_EDB;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)row->run_id);
    sqlite3_bind_int(st, 2, (int)row->idx);
    store_bind_text(st, 3, row->name);
    store_bind_text(st, 4, row->needs_json ? row->needs_json : "[]");
    store_bind_text(st, 5, row->state);
    sqlite3_bind_int(st, 6, (int)row->dag_idx);
    store_bind_text(st, 7, row->item_json);
    if (step_done(s, st, "insert task")) return LOOM_EDB;
    row->id = (uint64_t)sqlite3_last_insert_rowid(s->db);
    return 0;
}

int loom_store_task_update(loom_store_t *s, const loom_task_row_t *row)
{
    sqlite3_stmt *st = stmt(s, Q_TASK_UPDATE);
    if (!st || loom_store_begin(s)) return LOOM_EDB;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)row->id);
    store_bind_text(st, 2, row->state);
    sqlite3_bind_int(st, 3, (int)row->attempts);
    bind_ms(st, 4, row->current_attempt);
    bind_ms(st, 5, row->started_ms);
    bind_ms(st, 6, row->ended_ms);
    if (row->has_exit) {
        sqlite3_bind_int(st, 7, row->exit_code);
        sqlite3_bind_int(st, 8, row->signal);
    }
    store_bind_text(st, 9, row->error);
    bind_ms(st, 10, row->not_before_ms);
    return step_done(s, st, "update task");
}

int loom_store_attempt_insert(loom_store_t *s, loom_attempt_row_t *row)
{
    sqlite3_stmt *st = stmt(s, Q_ATTEMPT_INSERT);
    if (!st || loom_store_begin(s)) return LOOM_EDB;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)row->task_id);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)row->run_id);
    sqlite3_bind_int(st, 3, (int)row->number);
    store_bind_text(st, 4, row->agent);
    store_bind_text(st, 5, row->state);
    sqlite3_bind_int64(st, 6, (sqlite3_int64)row->dispatched_ms);
    if (step_done(s, st, "insert attempt")) return LOOM_EDB;
    row->id = (uint64_t)sqlite3_last_insert_rowid(s->db);
    return 0;
}

int loom_store_attempt_update(loom_store_t *s, const loom_attempt_row_t *row)
{
    sqlite3_stmt *st = stmt(s, Q_ATTEMPT_UPDATE);
    if (!st || loom_store_begin(s)) return LOOM_EDB;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)row->id);
    store_bind_text(st, 2, row->state);
    bind_ms(st, 3, row->started_ms);
    bind_ms(st, 4, row->ended_ms);
    if (row->has_exit) {
        sqlite3_bind_int(st, 5, row->exit_code);
        sqlite3_bind_int(st, 6, row->signal);
        sqlite3_bind_int64(st, 8, (sqlite3_int64)row->user_cpu_us);
        sqlite3_bind_int64(st, 9, (sqlite3_int64)row->sys_cpu_us);
        sqlite3_bind_int64(st, 10, (sqlite3_int64)row->max_rss);
    }
    store_bind_text(st, 7, row->error);
    sqlite3_bind_int64(st, 11, (sqlite3_int64)row->log_seq);
    sqlite3_bind_int64(st, 12, (sqlite3_int64)row->log_bytes);
    store_bind_text(st, 13, row->metrics_json);
    return step_done(s, st, "update attempt");
}

int loom_store_attempt_log(loom_store_t *s, uint64_t attempt_id, uint64_t seq, uint64_t bytes)
{
    sqlite3_stmt *st = stmt(s, Q_ATTEMPT_LOG);
    if (!st || loom_store_begin(s)) return LOOM_EDB;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)attempt_id);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)seq);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)bytes);
    return step_done(s, st, "attempt log");
}

static void read_attempt(sqlite3_stmt *st, loom_attempt_row_t *row)
{
    memset(row, 0, sizeof *row);
    row->id = col_u64(st, 0);
    row->task_id = col_u64(st, 1);
    row->run_id = col_u64(st, 2);
    row->number = (uint32_t)sqlite3_column_int(st, 3);
    row->agent = store_col_text(st, 4);
    row->state = store_col_text(st, 5);
    row->dispatched_ms = col_u64(st, 6);
    row->started_ms = col_u64(st, 7);
    row->ended_ms = col_u64(st, 8);
    row->has_exit = sqlite3_column_type(st, 9) != SQLITE_NULL;
    row->exit_code = sqlite3_column_int(st, 9);
    row->signal = sqlite3_column_int(st, 10);
    row->error = store_col_text(st, 11);
    row->user_cpu_us = col_u64(st, 12);
    row->sys_cpu_us = col_u64(st, 13);
    row->max_rss = col_u64(st, 14);
    row->log_seq = col_u64(st, 15);
    row->log_bytes = col_u64(st, 16);
    row->metrics_json = store_col_text(st, 17);
    row->gpus_json = store_col_text(st, 18);
}

int loom_store_attempt_get(loom_store_t *s, uint64_t attempt_id, loom_attempt_row_t *row)
{
    sqlite3_stmt *st = stmt(s, Q_ATTEMPT_GET);
    if (!st) return LOOM_EDB;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)attempt_id);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        sqlite3_reset(st);
        return rc == SQLITE_DONE ? LOOM_ENOTFOUND : db_err(s, "get attempt");
    }
    /* Left un-reset so the borrowed strings stay valid until the next call or
     * the end of the loop turn (loom_store_release). */
    read_attempt(st, row);
    return 0;
}

/* Prepares an ad-hoc (uncached) query; used by the rarely run reads. */
sqlite3_stmt *store_prepare(loom_store_t *s, const char *q)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->db, q, -1, &st, NULL) != SQLITE_OK) {
        db_err(s, q);
        return NULL;
    }
    return st;
}

static void read_run(sqlite3_stmt *st, loom_run_row_t *row)
{
    memset(row, 0, sizeof *row);
    row->id = col_u64(st, 0);
    row->pipeline_id = col_u64(st, 1);
    row->pipeline = store_col_text(st, 2);
    row->version = (uint32_t)sqlite3_column_int(st, 3);
    row->state = store_col_text(st, 4);
    row->trigger = store_col_text(st, 5);
    row->created_ms = col_u64(st, 6);
    row->started_ms = col_u64(st, 7);
    row->ended_ms = col_u64(st, 8);
    row->params_json = store_col_text(st, 9);
    row->origin_json = store_col_text(st, 10);
    row->event_json = store_col_text(st, 11);
}

int loom_store_each_active_run(loom_store_t *s, int (*cb)(void *ud, const loom_run_row_t *row),
                               void *ud)
{
    sqlite3_stmt *st = store_prepare(s, "SELECT " RUN_COLUMNS " FROM runs r JOIN pipelines p"
                                        " ON p.id = r.pipeline_id"
                                        " WHERE r.state IN ('queued', 'running') ORDER BY r.id");
    if (!st) return LOOM_EDB;
    int rc = 0, step;
    while (rc == 0 && (step = sqlite3_step(st)) == SQLITE_ROW) {
        loom_run_row_t row;
        read_run(st, &row);
        rc = cb(ud, &row);
    }
    sqlite3_finalize(st);
    return rc;
}

static void read_task(sqlite3_stmt *st, loom_task_row_t *row)
{
    memset(row, 0, sizeof *row);
    row->id = col_u64(st, 0);
    row->run_id = col_u64(st, 1);
    row->idx = (uint32_t)sqlite3_column_int(st, 2);
    row->name = store_col_text(st, 3);
    row->needs_json = store_col_text(st, 4);
    row->state = store_col_text(st, 5);
    row->attempts = (uint32_t)sqlite3_column_int(st, 6);
    row->current_attempt = col_u64(st, 7);
    row->started_ms = col_u64(st, 8);
    row->ended_ms = col_u64(st, 9);
    row->has_exit = sqlite3_column_type(st, 10) != SQLITE_NULL;
    row->exit_code = sqlite3_column_int(st, 10);
    row->signal = sqlite3_column_int(st, 11);
    row->error = store_col_text(st, 12);
    row->dag_idx = (uint32_t)sqlite3_column_int(st, 13);
    row->item_json = store_col_text(st, 14);
    row->not_before_ms = col_u64(st, 15);
}

int loom_store_each_task(loom_store_t *s, uint64_t run_id,
                         int (*cb)(void *ud, const loom_task_row_t *row), void *ud)
{
    sqlite3_stmt *st =
        store_prepare(s, "SELECT " TASK_COLUMNS " FROM tasks t WHERE t.run_id = ?1 ORDER BY t.idx");
    if (!st) return LOOM_EDB;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)run_id);
    int rc = 0;
    while (rc == 0 && sqlite3_step(st) == SQLITE_ROW) {
        loom_task_row_t row;
        read_task(st, &row);
        rc = cb(ud, &row);
    }
    sqlite3_finalize(st);
    return rc;
}

int loom_store_run_source(loom_store_t *s, uint64_t run_id, char **source, size_t *len)
{
    sqlite3_stmt *st =
        store_prepare(s, "SELECT v.source FROM runs r JOIN pipeline_versions v"
                         " ON v.pipeline_id = r.pipeline_id AND v.version = r.version"
                         " WHERE r.id = ?1");
    if (!st) return LOOM_EDB;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)run_id);
    int rc = LOOM_ENOTFOUND;
    if (sqlite3_step(st) == SQLITE_ROW) {
        *source = col_blob_dup(st, 0, len);
        rc = 0;
    }
    sqlite3_finalize(st);
    return rc;
}

int loom_store_find_attempt(loom_store_t *s, uint64_t run_id, const char *task, uint32_t number,
                            uint64_t *attempt_id, uint32_t *number_out)
{
    sqlite3_stmt *st = store_prepare(s, "SELECT t.id, a.id, a.number FROM tasks t"
                                        " LEFT JOIN attempts a ON a.task_id = t.id"
                                        " AND (?3 = 0 OR a.number = ?3)"
                                        " WHERE t.run_id = ?1 AND t.name = ?2"
                                        " ORDER BY a.number DESC LIMIT 1");
    if (!st) return LOOM_EDB;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)run_id);
    store_bind_text(st, 2, task);
    sqlite3_bind_int(st, 3, (int)number);
    int rc = LOOM_ENOTFOUND;
    *attempt_id = 0;
    *number_out = 0;
    if (sqlite3_step(st) == SQLITE_ROW) {
        *attempt_id = col_u64(st, 1); /* 0 when the task has no such attempt yet */
        *number_out = (uint32_t)sqlite3_column_int(st, 2);
        rc = 0;
    }
    sqlite3_finalize(st);
    return rc;
}

int loom_store_agent_upsert(loom_store_t *s, const loom_agent_row_t *row)
{
    sqlite3_stmt *st = stmt(s, Q_AGENT_UPSERT);
    if (!st || loom_store_begin(s)) return LOOM_EDB;
    store_bind_text(st, 1, row->name);
    store_bind_text(st, 2, row->hostname);
    store_bind_text(st, 3, row->version);
    sqlite3_bind_int(st, 4, (int)row->cpus);
    sqlite3_bind_int64(st, 5, (sqlite3_int64)row->memory_bytes);
    sqlite3_bind_int(st, 6, (int)row->slots);
    store_bind_text(st, 7, row->labels_json ? row->labels_json : "{}");
    store_bind_text(st, 8, row->state);
    bind_ms(st, 9, row->connected_ms);
    bind_ms(st, 10, row->last_seen_ms);
    return step_done(s, st, "upsert agent");
}

int loom_store_agent_state(loom_store_t *s, const char *name, const char *state,
                           uint64_t last_seen_ms)
{
    sqlite3_stmt *st = stmt(s, Q_AGENT_STATE);
    if (!st || loom_store_begin(s)) return LOOM_EDB;
    store_bind_text(st, 1, name);
    store_bind_text(st, 2, state);
    bind_ms(st, 3, last_seen_ms);
    return step_done(s, st, "agent state");
}

int loom_store_each_agent(loom_store_t *s, int (*cb)(void *ud, const loom_agent_row_t *row),
                          void *ud)
{
    sqlite3_stmt *st =
        store_prepare(s, "SELECT name, hostname, version, cpus, memory_bytes, slots,"
                         " labels, state, connected_ms, last_seen_ms, cordoned FROM agents"
                         " ORDER BY name");
    if (!st) return LOOM_EDB;
    int rc = 0;
    while (rc == 0 && sqlite3_step(st) == SQLITE_ROW) {
        loom_agent_row_t row = {
            .name = store_col_text(st, 0),
            .hostname = store_col_text(st, 1),
            .version = store_col_text(st, 2),
            .cpus = (uint32_t)sqlite3_column_int(st, 3),
            .memory_bytes = col_u64(st, 4),
            .slots = (uint32_t)sqlite3_column_int(st, 5),
            .labels_json = store_col_text(st, 6),
            .state = store_col_text(st, 7),
            .connected_ms = col_u64(st, 8),
            .last_seen_ms = col_u64(st, 9),
            .cordoned = sqlite3_column_int(st, 10) != 0,
        };
        rc = cb(ud, &row);
    }
    sqlite3_finalize(st);
    return rc;
}
