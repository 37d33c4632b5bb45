/* Artifacts, the task cache, inputs (for lineage) and the model registry
 * (see store.h). */
#include "store.h"
#include "store_int.h"

#include "loom/err.h"
#include "loom/log.h"
#include "loom/util.h"

#include <stdlib.h>
#include <string.h>

/* ---- artifacts ---- */

int loom_store_artifact_add(loom_store_t *s, const loom_artifact_row_t *a)
{
    sqlite3_stmt *st = store_write_stmt(
        s, "INSERT INTO artifacts(run_id, task_id, attempt_id, task, path, hash, size, mode,"
           " created_ms, cached_from) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)");
    if (!st) return LOOM_EDB;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)a->run_id);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)a->task_id);
    if (a->attempt_id)
        sqlite3_bind_int64(st, 3, (sqlite3_int64)a->attempt_id);
    else
        sqlite3_bind_null(st, 3);
    store_bind_text(st, 4, a->task);
    store_bind_text(st, 5, a->path);
    store_bind_text(st, 6, a->hash);
    sqlite3_bind_int64(st, 7, (sqlite3_int64)a->size);
    sqlite3_bind_int(st, 8, (int)a->mode);
    sqlite3_bind_int64(st, 9, (sqlite3_int64)a->created_ms);
    if (a->cached_from)
        sqlite3_bind_int64(st, 10, (sqlite3_int64)a->cached_from);
    else
        sqlite3_bind_null(st, 10);
    return store_write_done(s, st, "insert artifact");
}

int loom_store_task_artifacts(loom_store_t *s, uint64_t task_id,
                              int (*cb)(void *ud, const loom_artifact_row_t *a), void *ud)
{
    sqlite3_stmt *st = store_prepare(s, "SELECT run_id, task_id, attempt_id, task, path, hash,"
                                        " size, mode, created_ms, cached_from FROM artifacts"
                                        " WHERE task_id = ?1 ORDER BY path");
    if (!st) return LOOM_EDB;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)task_id);
    int rc = 0;
    while (rc == 0 && sqlite3_step(st) == SQLITE_ROW) {
        loom_artifact_row_t a = {.run_id = (uint64_t)sqlite3_column_int64(st, 0),
                                 .task_id = (uint64_t)sqlite3_column_int64(st, 1),
                                 .attempt_id = (uint64_t)sqlite3_column_int64(st, 2),
                                 .task = store_col_text(st, 3),
                                 .path = store_col_text(st, 4),
                                 .hash = store_col_text(st, 5),
                                 .size = (uint64_t)sqlite3_column_int64(st, 6),
                                 .mode = (uint32_t)sqlite3_column_int(st, 7),
                                 .created_ms = (uint64_t)sqlite3_column_int64(st, 8),
                                 .cached_from = (uint64_t)sqlite3_column_int64(st, 9)};
        rc = cb(ud, &a);
    }
    sqlite3_finalize(st);
    return rc;
}

int loom_store_attempt_input(loom_store_t *s, uint64_t attempt_id, const char *path,
                             const char *hash, const char *from_task, uint64_t from_attempt)
{
    sqlite3_stmt *st =
        store_write_stmt(s, "INSERT OR REPLACE INTO attempt_inputs(attempt_id, path, hash,"
                            " from_task, from_attempt) VALUES (?1, ?2, ?3, ?4, ?5)");
    if (!st) return LOOM_EDB;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)attempt_id);
    store_bind_text(st, 2, path);
    store_bind_text(st, 3, hash);
    store_bind_text(st, 4, from_task);
    sqlite3_bind_int64(st, 5, (sqlite3_int64)from_attempt);
    return store_write_done(s, st, "attempt input");
}

int loom_store_attempt_cache_key(loom_store_t *s, uint64_t attempt_id, const char *key)
{
    sqlite3_stmt *st = store_write_stmt(s, "UPDATE attempts SET cache_key = ?2 WHERE id = ?1");
    if (!st) return LOOM_EDB;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)attempt_id);
    store_bind_text(st, 2, key);
    return store_write_done(s, st, "attempt cache key");
}

int loom_store_attempt_cache_key_get(loom_store_t *s, uint64_t attempt_id, char **key)
{
    sqlite3_stmt *st = store_prepare(s, "SELECT cache_key FROM attempts WHERE id = ?1");
    if (!st) return LOOM_EDB;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)attempt_id);
    *key = NULL;
    if (sqlite3_step(st) == SQLITE_ROW && store_col_text(st, 0))
        *key = loom_xstrdup(store_col_text(st, 0));
    sqlite3_finalize(st);
    return *key ? 0 : LOOM_ENOTFOUND;
}

/* ---- the task cache ---- */

int loom_store_cache_get(loom_store_t *s, const char *key, uint64_t *run_id, uint64_t *task_id,
                         uint64_t *attempt_id)
{
    sqlite3_stmt *st =
        store_prepare(s, "SELECT run_id, task_id, attempt_id FROM task_cache WHERE key = ?1");
    if (!st) return LOOM_EDB;
    store_bind_text(st, 1, key);
    int rc = LOOM_ENOTFOUND;
    if (sqlite3_step(st) == SQLITE_ROW) {
        *run_id = (uint64_t)sqlite3_column_int64(st, 0);
        *task_id = (uint64_t)sqlite3_column_int64(st, 1);
        *attempt_id = (uint64_t)sqlite3_column_int64(st, 2);
        rc = 0;
    }
    sqlite3_finalize(st);
    return rc;
}

int loom_store_cache_put(loom_store_t *s, const char *key, uint64_t run_id, uint64_t task_id,
                         uint64_t attempt_id, uint64_t now_ms)
{
    sqlite3_stmt *st =
        store_write_stmt(s, "INSERT OR REPLACE INTO task_cache(key, run_id, task_id, attempt_id,"
                            " created_ms) VALUES (?1, ?2, ?3, ?4, ?5)");
    if (!st) return LOOM_EDB;
    store_bind_text(st, 1, key);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)run_id);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)task_id);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)attempt_id);
    sqlite3_bind_int64(st, 5, (sqlite3_int64)now_ms);
    return store_write_done(s, st, "cache entry");
}

int loom_store_task_cached_from(loom_store_t *s, uint64_t task_id, uint64_t run_id)
{
    sqlite3_stmt *st = store_write_stmt(s, "UPDATE tasks SET cached_from = ?2 WHERE id = ?1");
    if (!st) return LOOM_EDB;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)task_id);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)run_id);
    return store_write_done(s, st, "task cached");
}

int loom_store_run_no_cache(loom_store_t *s, uint64_t run_id, bool *no_cache, bool set)
{
    sqlite3_stmt *st = set ? store_write_stmt(s, "UPDATE runs SET no_cache = ?2 WHERE id = ?1")
                           : store_prepare(s, "SELECT no_cache FROM runs WHERE id = ?1");
    if (!st) return LOOM_EDB;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)run_id);
    if (set) {
        sqlite3_bind_int(st, 2, *no_cache);
        return store_write_done(s, st, "run no_cache");
    }
    *no_cache = sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return 0;
}

/* ---- models ---- */

int loom_store_model_register(loom_store_t *s, const loom_model_row_t *m, uint32_t *version)
{
    sqlite3_stmt *st =
        store_prepare(s, "SELECT coalesce(max(version), 0) + 1 FROM models WHERE name = ?1");
    if (!st) return LOOM_EDB;
    store_bind_text(st, 1, m->name);
    *version = sqlite3_step(st) == SQLITE_ROW ? (uint32_t)sqlite3_column_int(st, 0) : 1;
    sqlite3_finalize(st);
    st = store_write_stmt(
        s, "INSERT INTO models(name, version, run_id, task, attempt_id, path, hash,"
           " size, metrics, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)");
    if (!st) return LOOM_EDB;
    store_bind_text(st, 1, m->name);
    sqlite3_bind_int(st, 2, (int)*version);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)m->run_id);
    store_bind_text(st, 4, m->task);
    sqlite3_bind_int64(st, 5, (sqlite3_int64)m->attempt_id);
    store_bind_text(st, 6, m->path);
    store_bind_text(st, 7, m->hash);
    sqlite3_bind_int64(st, 8, (sqlite3_int64)m->size);
    store_bind_text(st, 9, m->metrics_json);
    sqlite3_bind_int64(st, 10, (sqlite3_int64)m->created_ms);
    return store_write_done(s, st, "register model");
}

int loom_store_model_version(loom_store_t *s, const char *name, uint32_t version,
                             char **metrics_json)
{
    sqlite3_stmt *st =
        store_prepare(s, "SELECT metrics FROM models WHERE name = ?1 AND version = ?2");
    if (!st) return LOOM_EDB;
    store_bind_text(st, 1, name);
    sqlite3_bind_int(st, 2, (int)version);
    int rc = LOOM_ENOTFOUND;
    if (sqlite3_step(st) == SQLITE_ROW) {
        if (metrics_json)
            *metrics_json = store_col_text(st, 0) ? loom_xstrdup(store_col_text(st, 0)) : NULL;
        rc = 0;
    }
    sqlite3_finalize(st);
    return rc;
}

int loom_store_model_alias_get(loom_store_t *s, const char *name, const char *alias,
                               uint32_t *version)
{
    sqlite3_stmt *st =
        store_prepare(s, "SELECT version FROM model_aliases WHERE name = ?1 AND alias = ?2");
    if (!st) return LOOM_EDB;
    store_bind_text(st, 1, name);
    store_bind_text(st, 2, alias);
    int rc = LOOM_ENOTFOUND;
    if (sqlite3_step(st) == SQLITE_ROW) {
        *version = (uint32_t)sqlite3_column_int(st, 0);
        rc = 0;
    }
    sqlite3_finalize(st);
    return rc;
}

int loom_store_model_alias_set(loom_store_t *s, const char *name, const char *alias,
                               uint32_t version, uint64_t now_ms)
{
    sqlite3_stmt *st =
        store_write_stmt(s, "INSERT INTO model_aliases(name, alias, version, updated_ms)"
                            " VALUES (?1, ?2, ?3, ?4) ON CONFLICT(name, alias)"
                            " DO UPDATE SET version = ?3, updated_ms = ?4");
    if (!st) return LOOM_EDB;
    store_bind_text(st, 1, name);
    store_bind_text(st, 2, alias);
    sqlite3_bind_int(st, 3, (int)version);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)now_ms);
    return store_write_done(s, st, "model alias");
}

/* ---- JSON for the API ---- */

static json_t *artifact_json(sqlite3_stmt *st)
{
    return json_pack("{s:o,s:o,s:o,s:I,s:i,s:o,s:I,s:o}", "task", store_json_text(st, 0), "path",
                     store_json_text(st, 1), "hash", store_json_text(st, 2), "size",
                     sqlite3_column_int64(st, 3), "mode", sqlite3_column_int(st, 4), "attempt_id",
                     store_json_int(st, 5), "created_unix_ms", sqlite3_column_int64(st, 6),
                     "cached_from_run", store_json_int(st, 7));
}

int loom_store_json_artifacts(loom_store_t *s, uint64_t run_id, const char *task, json_t **out)
{
    sqlite3_stmt *st = store_prepare(
        s, "SELECT task, path, hash, size, mode, attempt_id, created_ms, cached_from"
           " FROM artifacts WHERE run_id = ?1 AND (?2 IS NULL OR task = ?2) ORDER BY task, path");
    if (!st) return LOOM_EDB;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)run_id);
    store_bind_text(st, 2, task);
    json_t *list = json_array();
    while (sqlite3_step(st) == SQLITE_ROW) json_array_append_new(list, artifact_json(st));
    sqlite3_finalize(st);
    *out = json_pack("{s:I,s:o}", "run_id", (json_int_t)run_id, "artifacts", list);
    return 0;
}

int loom_store_artifact_find(loom_store_t *s, uint64_t run_id, const char *task, const char *path,
                             char hash[65], uint64_t *size)
{
    sqlite3_stmt *st = store_prepare(s, "SELECT hash, size FROM artifacts WHERE run_id = ?1"
                                        " AND task = ?2 AND path = ?3 ORDER BY id DESC LIMIT 1");
    if (!st) return LOOM_EDB;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)run_id);
    store_bind_text(st, 2, task);
    store_bind_text(st, 3, path);
    int rc = LOOM_ENOTFOUND;
    if (sqlite3_step(st) == SQLITE_ROW && store_col_text(st, 0)) {
        snprintf(hash, 65, "%s", store_col_text(st, 0));
        *size = (uint64_t)sqlite3_column_int64(st, 1);
        rc = 0;
    }
    sqlite3_finalize(st);
    return rc;
}

static json_t *model_json(sqlite3_stmt *st)
{
    return json_pack("{s:o,s:i,s:I,s:o,s:I,s:o,s:o,s:I,s:o,s:I}", "name", store_json_text(st, 0),
                     "version", sqlite3_column_int(st, 1), "run_id", sqlite3_column_int64(st, 2),
                     "task", store_json_text(st, 3), "attempt_id", sqlite3_column_int64(st, 4),
                     "path", store_json_text(st, 5), "hash", store_json_text(st, 6), "size",
                     sqlite3_column_int64(st, 7), "metrics", store_json_parsed(st, 8),
                     "created_unix_ms", sqlite3_column_int64(st, 9));
}

#define MODEL_COLUMNS                                                                              \
    "name, version, run_id, task, attempt_id, path, hash, size, metrics, created_ms"

static json_t *aliases_of(loom_store_t *s, const char *name)
{
    json_t *o = json_object();
    sqlite3_stmt *st =
        store_prepare(s, "SELECT alias, version FROM model_aliases WHERE name = ?1 ORDER BY alias");
    if (!st) return o;
    store_bind_text(st, 1, name);
    while (sqlite3_step(st) == SQLITE_ROW)
        json_object_set_new(o, store_col_text(st, 0), json_integer(sqlite3_column_int(st, 1)));
    sqlite3_finalize(st);
    return o;
}

int loom_store_json_models(loom_store_t *s, json_t **out)
{
    sqlite3_stmt *st = store_prepare(s, "SELECT " MODEL_COLUMNS " FROM models m WHERE version ="
                                        " (SELECT max(version) FROM models WHERE name = m.name)"
                                        " ORDER BY name");
    if (!st) return LOOM_EDB;
    json_t *list = json_array();
    while (sqlite3_step(st) == SQLITE_ROW) {
        json_t *m = model_json(st);
        json_object_set_new(m, "latest_version", json_integer(sqlite3_column_int(st, 1)));
        json_object_set_new(m, "aliases", aliases_of(s, store_col_text(st, 0)));
        json_array_append_new(list, m);
    }
    sqlite3_finalize(st);
    *out = json_pack("{s:o}", "models", list);
    return 0;
}

int loom_store_json_model(loom_store_t *s, const char *name, json_t **out)
{
    sqlite3_stmt *st = store_prepare(s, "SELECT " MODEL_COLUMNS
                                        " FROM models WHERE name = ?1 ORDER BY version DESC");
    if (!st) return LOOM_EDB;
    store_bind_text(st, 1, name);
    json_t *list = json_array();
    while (sqlite3_step(st) == SQLITE_ROW) json_array_append_new(list, model_json(st));
    sqlite3_finalize(st);
    if (json_array_size(list) == 0) {
        json_decref(list);
        return LOOM_ENOTFOUND;
    }
    *out =
        json_pack("{s:s,s:o,s:o}", "name", name, "aliases", aliases_of(s, name), "versions", list);
    return 0;
}

int loom_store_json_metrics(loom_store_t *s, const char *pipeline, const char *task, int limit,
                            json_t **out)
{
    sqlite3_stmt *st =
        store_prepare(s, "SELECT r.id, r.version, r.created_ms, a.id, a.metrics, t.name FROM runs r"
                         " JOIN pipelines p ON p.id = r.pipeline_id JOIN tasks t ON t.run_id = r.id"
                         " JOIN attempts a ON a.id = t.current_attempt"
                         " WHERE p.name = ?1 AND (t.name = ?2 OR t.name LIKE ?2 || '[%]')"
                         " AND t.state = 'succeeded' AND a.metrics IS NOT NULL"
                         " ORDER BY r.id DESC, t.idx LIMIT ?3");
    if (!st) return LOOM_EDB;
    store_bind_text(st, 1, pipeline);
    store_bind_text(st, 2, task);
    sqlite3_bind_int(st, 3, limit);
    json_t *list = json_array();
    while (sqlite3_step(st) == SQLITE_ROW)
        json_array_append_new(
            list, json_pack("{s:I,s:i,s:I,s:I,s:o,s:o}", "run_id", sqlite3_column_int64(st, 0),
                            "version", sqlite3_column_int(st, 1), "created_unix_ms",
                            sqlite3_column_int64(st, 2), "attempt_id", sqlite3_column_int64(st, 3),
                            "metrics", store_json_parsed(st, 4), "task", store_json_text(st, 5)));
    sqlite3_finalize(st);
    *out = json_pack("{s:s,s:s,s:o}", "pipeline", pipeline, "task", task, "runs", list);
    return 0;
}

/* ---- lineage ---- */

/* What made one artifact: its run (pipeline, version, bundle, git commit,
 * params, origin), task, attempt and agent, and the artifacts it read. */
static json_t *made_by(loom_store_t *s, uint64_t run_id, const char *task, uint64_t attempt_id)
{
    sqlite3_stmt *st = store_prepare(
        s, "SELECT p.name, r.version, v.bundle, v.git_commit, r.params, r.origin, r.event,"
           " (SELECT agent FROM attempts WHERE id = ?2)"
           " FROM runs r JOIN pipelines p ON p.id = r.pipeline_id"
           " JOIN pipeline_versions v ON v.pipeline_id = r.pipeline_id AND v.version = r.version"
           " WHERE r.id = ?1");
    if (!st) return json_null();
    sqlite3_bind_int64(st, 1, (sqlite3_int64)run_id);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)attempt_id);
    json_t *j = json_null();
    if (sqlite3_step(st) == SQLITE_ROW) {
        json_t *origin = store_json_parsed(st, 5);
        if (json_is_null(origin)) {
            json_decref(origin);
            origin = json_pack("{s:s}", "kind", "manual");
        }
        json_t *event = store_json_parsed(st, 6);
        json_t *files = json_object_get(event, "files");
        j = json_pack("{s:I,s:o,s:i,s:o,s:o,s:o,s:o,s:s,s:I,s:o}", "run_id", (json_int_t)run_id,
                      "pipeline", store_json_text(st, 0), "version", sqlite3_column_int(st, 1),
                      "bundle", store_json_text(st, 2), "git_commit", store_json_text(st, 3),
                      "params", store_json_parsed(st, 4), "origin", origin, "task", task,
                      "attempt_id", (json_int_t)attempt_id, "agent", store_json_text(st, 7));
        if (json_is_array(files)) json_object_set(j, "data_files", files);
        json_decref(event);
    }
    sqlite3_finalize(st);
    return j;
}

#define LINEAGE_MAX 200

int loom_store_json_lineage(loom_store_t *s, const char *hash, uint64_t run_id, const char *task,
                            const char *path, json_t **out)
{
    /* The artifact asked for: by hash (its first record), or by run:task:path. */
    sqlite3_stmt *st =
        hash ? store_prepare(s, "SELECT run_id, task, path, hash, size, attempt_id, cached_from"
                                " FROM artifacts WHERE hash = ?1 ORDER BY id LIMIT 1")
             : store_prepare(s, "SELECT run_id, task, path, hash, size, attempt_id, cached_from"
                                " FROM artifacts WHERE run_id = ?2 AND task = ?3 AND path = ?4"
                                " ORDER BY id DESC LIMIT 1");
    if (!st) return LOOM_EDB;
    if (hash) {
        store_bind_text(st, 1, hash);
    } else {
        sqlite3_bind_int64(st, 2, (sqlite3_int64)run_id);
        store_bind_text(st, 3, task);
        store_bind_text(st, 4, path);
    }
    if (sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_finalize(st);
        return LOOM_ENOTFOUND;
    }
    /* Walk back through inputs, breadth first, each artifact once. */
    json_t *chain = json_array(), *queue = json_array(), *seen = json_object();
    json_array_append_new(
        queue, json_pack("{s:I,s:s,s:s,s:s,s:I,s:I,s:I}", "run_id", sqlite3_column_int64(st, 0),
                         "task", store_col_text(st, 1), "path", store_col_text(st, 2), "hash",
                         store_col_text(st, 3), "size", sqlite3_column_int64(st, 4), "attempt_id",
                         sqlite3_column_int64(st, 5), "cached_from", sqlite3_column_int64(st, 6)));
    sqlite3_finalize(st);
    for (size_t i = 0; i < json_array_size(queue) && json_array_size(chain) < LINEAGE_MAX; i++) {
        json_t *a = json_array_get(queue, i);
        uint64_t rid = (uint64_t)json_integer_value(json_object_get(a, "run_id"));
        uint64_t att = (uint64_t)json_integer_value(json_object_get(a, "attempt_id"));
        const char *t = json_string_value(json_object_get(a, "task"));
        char key[64];
        snprintf(key, sizeof key, "%llu/%s", (unsigned long long)att,
                 json_string_value(json_object_get(a, "hash")));
        if (json_object_get(seen, key)) continue;
        json_object_set_new(seen, key, json_true());
        json_t *entry = json_deep_copy(a);
        json_object_set_new(entry, "made_by", made_by(s, rid, t, att));
        json_t *inputs = json_array();
        st = store_prepare(s, "SELECT i.path, i.hash, i.from_task, i.from_attempt, a.run_id,"
                              " a.path, a.size FROM attempt_inputs i"
                              " LEFT JOIN artifacts a ON a.attempt_id = i.from_attempt"
                              " AND a.hash = i.hash WHERE i.attempt_id = ?1 GROUP BY i.path"
                              " ORDER BY i.path");
        if (st) {
            sqlite3_bind_int64(st, 1, (sqlite3_int64)att);
            while (sqlite3_step(st) == SQLITE_ROW) {
                json_array_append_new(
                    inputs, json_pack("{s:o,s:o,s:o}", "path", store_json_text(st, 0), "hash",
                                      store_json_text(st, 1), "from_task", store_json_text(st, 2)));
                if (sqlite3_column_type(st, 4) != SQLITE_NULL)
                    json_array_append_new(
                        queue,
                        json_pack("{s:I,s:s,s:s,s:s,s:I,s:I,s:I}", "run_id",
                                  sqlite3_column_int64(st, 4), "task", store_col_text(st, 2),
                                  "path", store_col_text(st, 5), "hash", store_col_text(st, 1),
                                  "size", sqlite3_column_int64(st, 6), "attempt_id",
                                  sqlite3_column_int64(st, 3), "cached_from", (json_int_t)0));
            }
            sqlite3_finalize(st);
        }
        json_object_set_new(entry, "inputs", inputs);
        json_array_append_new(chain, entry);
    }
    json_decref(queue);
    json_decref(seen);
    /* Model versions made of it. */
    json_t *first = json_array_get(chain, 0);
    json_t *models = json_array();
    st =
        store_prepare(s, "SELECT name, version FROM models WHERE hash = ?1 ORDER BY name, version");
    if (st) {
        store_bind_text(st, 1, json_string_value(json_object_get(first, "hash")));
        while (sqlite3_step(st) == SQLITE_ROW)
            json_array_append_new(models, json_pack("{s:o,s:i}", "name", store_json_text(st, 0),
                                                    "version", sqlite3_column_int(st, 1)));
        sqlite3_finalize(st);
    }
    *out = json_pack("{s:o,s:o}", "chain", chain, "models", models);
    return 0;
}
