/* The HTTP API's JSON, built straight from rows (see store.h). */
#include "store.h"
#include "store_int.h"

#include "loom/err.h"
#include "loom/util.h"

#include <stdbool.h>
#include <string.h>

int loom_store_json_pipelines(loom_store_t *s, json_t **out)
{
    sqlite3_stmt *st = store_prepare(
        s, "SELECT p.name, p.latest_version, v.n_tasks, p.created_ms, p.updated_ms,"
           " (SELECT r.id FROM runs r WHERE r.pipeline_id = p.id ORDER BY r.id DESC LIMIT 1),"
           " (SELECT r.state FROM runs r WHERE r.pipeline_id = p.id ORDER BY r.id DESC LIMIT 1)"
           " FROM pipelines p JOIN pipeline_versions v ON v.pipeline_id = p.id"
           " AND v.version = p.latest_version ORDER BY p.name");
    if (!st) return LOOM_EDB;
    json_t *list = json_array();
    while (sqlite3_step(st) == SQLITE_ROW) {
        json_t *last = json_null();
        if (sqlite3_column_type(st, 5) != SQLITE_NULL)
            last = json_pack("{s:I,s:o}", "id", sqlite3_column_int64(st, 5), "state",
                             store_json_text(st, 6));
        json_array_append_new(
            list, json_pack("{s:o,s:i,s:i,s:o,s:o,s:o}", "name", store_json_text(st, 0),
                            "latest_version", sqlite3_column_int(st, 1), "tasks",
                            sqlite3_column_int(st, 2), "created_unix_ms", store_json_int(st, 3),
                            "updated_unix_ms", store_json_int(st, 4), "last_run", last));
    }
    sqlite3_finalize(st);
    *out = json_pack("{s:o}", "pipelines", list);
    return 0;
}

int loom_store_json_pipeline(loom_store_t *s, const char *name, uint32_t version, json_t **out)
{
    sqlite3_stmt *st =
        store_prepare(s, "SELECT v.version, v.hash, v.created_ms, v.n_tasks, v.source,"
                         " p.latest_version, v.file, v.bundle, v.git_commit, v.git_dirty"
                         " FROM pipelines p JOIN pipeline_versions v"
                         " ON v.pipeline_id = p.id WHERE p.name = ?1"
                         " ORDER BY v.version");
    if (!st) return LOOM_EDB;
    store_bind_text(st, 1, name);
    json_t *versions = json_array();
    json_t *source = NULL;
    int latest = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        latest = sqlite3_column_int(st, 5);
        int v = sqlite3_column_int(st, 0);
        json_t *git = sqlite3_column_type(st, 8) == SQLITE_NULL
                          ? json_null()
                          : json_pack("{s:o,s:o}", "commit", store_json_text(st, 8), "dirty",
                                      sqlite3_column_type(st, 9) == SQLITE_NULL
                                          ? json_null()
                                          : json_boolean(sqlite3_column_int(st, 9)));
        json_array_append_new(
            versions, json_pack("{s:i,s:o,s:o,s:i,s:o,s:o,s:o}", "version", v, "hash",
                                store_json_text(st, 1), "created_unix_ms", store_json_int(st, 2),
                                "tasks", sqlite3_column_int(st, 3), "file", store_json_text(st, 6),
                                "bundle", store_json_text(st, 7), "git", git));
        if ((version == 0 && v == latest) || (uint32_t)v == version) {
            json_decref(source);
            source = json_stringn_nocheck(sqlite3_column_blob(st, 4),
                                          (size_t)sqlite3_column_bytes(st, 4));
        }
    }
    sqlite3_finalize(st);
    if (json_array_size(versions) == 0 || !source) {
        json_decref(versions);
        json_decref(source);
        return LOOM_ENOTFOUND;
    }
    *out = json_pack("{s:s,s:i,s:i,s:o,s:o}", "name", name, "latest_version", latest, "version",
                     version ? (int)version : latest, "versions", versions, "source", source);
    return 0;
}

/* A JSON column, parsed; fallback when it is NULL or unreadable. */
static json_t *json_col(sqlite3_stmt *st, int i, json_t *fallback)
{
    const char *t = store_col_text(st, i);
    json_t *v = t ? json_loads(t, JSON_DECODE_ANY, NULL) : NULL;
    if (v) {
        json_decref(fallback);
        return v;
    }
    return fallback;
}

static json_t *run_json(sqlite3_stmt *st)
{
    return json_pack("{s:I,s:o,s:i,s:o,s:o,s:o,s:o,s:o,s:o,s:o}", "id", sqlite3_column_int64(st, 0),
                     "pipeline", store_json_text(st, 2), "version", sqlite3_column_int(st, 3),
                     "state", store_json_text(st, 4), "trigger", store_json_text(st, 5),
                     "created_unix_ms", store_json_int(st, 6), "started_unix_ms",
                     store_json_int(st, 7), "ended_unix_ms", store_json_int(st, 8), "params",
                     json_col(st, 9, json_object()), "origin",
                     json_col(st, 10, json_pack("{s:s}", "kind", "manual")));
}

int loom_store_json_runs(loom_store_t *s, const char *pipeline, int limit, json_t **out)
{
    sqlite3_stmt *st = store_prepare(s, "SELECT " RUN_COLUMNS " FROM runs r JOIN pipelines p"
                                        " ON p.id = r.pipeline_id WHERE (?1 IS NULL OR p.name = ?1)"
                                        " ORDER BY r.id DESC LIMIT ?2");
    if (!st) return LOOM_EDB;
    store_bind_text(st, 1, pipeline);
    sqlite3_bind_int(st, 2, limit);
    json_t *list = json_array();
    while (sqlite3_step(st) == SQLITE_ROW) json_array_append_new(list, run_json(st));
    sqlite3_finalize(st);
    *out = json_pack("{s:o}", "runs", list);
    return 0;
}

static json_t *task_json(sqlite3_stmt *st)
{
    bool exited = sqlite3_column_type(st, 10) != SQLITE_NULL;
    int sig = sqlite3_column_int(st, 11);
    json_t *exit_code = exited && sig == 0 ? json_integer(sqlite3_column_int(st, 10)) : json_null();
    json_t *signal = exited && sig != 0 ? json_integer(sig) : json_null();
    json_t *t =
        json_pack("{s:o,s:o,s:o,s:i,s:o,s:o,s:o,s:o,s:o,s:o,s:o}", "name", store_json_text(st, 3),
                  "state", store_json_text(st, 5), "needs", json_col(st, 4, json_array()),
                  "attempts", sqlite3_column_int(st, 6), "attempt_id", store_json_int(st, 7),
                  "agent", store_json_text(st, 16), "exit_code", exit_code, "signal", signal,
                  "error", store_json_text(st, 12), "started_unix_ms", store_json_int(st, 8),
                  "ended_unix_ms", store_json_int(st, 9));
    json_object_set_new(t, "metrics", json_col(st, 17, json_null()));
    if (sqlite3_column_type(st, 14) != SQLITE_NULL)
        json_object_set_new(t, "item", json_col(st, 14, json_null()));
    json_object_set_new(t, "retry_at_unix_ms", store_json_int(st, 15));
    json_object_set_new(t, "job_id", store_json_text(st, 18));
    return t;
}

int loom_store_json_run_summary(loom_store_t *s, uint64_t run_id, json_t **out)
{
    sqlite3_stmt *st = store_prepare(s, "SELECT " RUN_COLUMNS ", (SELECT count(*) FROM tasks t"
                                        " WHERE t.run_id = r.id) FROM runs r JOIN pipelines p"
                                        " ON p.id = r.pipeline_id WHERE r.id = ?1");
    if (!st) return LOOM_EDB;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)run_id);
    if (sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_finalize(st);
        return LOOM_ENOTFOUND;
    }
    json_t *run = run_json(st);
    json_object_set_new(run, "tasks_total", json_integer(sqlite3_column_int64(st, 12)));
    sqlite3_finalize(st);
    *out = run;
    return 0;
}

int loom_store_json_run(loom_store_t *s, uint64_t run_id, json_t **out)
{
    sqlite3_stmt *st = store_prepare(s, "SELECT " RUN_COLUMNS " FROM runs r JOIN pipelines p"
                                        " ON p.id = r.pipeline_id WHERE r.id = ?1");
    if (!st) return LOOM_EDB;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)run_id);
    if (sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_finalize(st);
        return LOOM_ENOTFOUND;
    }
    json_t *run = run_json(st);
    sqlite3_finalize(st);
    st = store_prepare(s, "SELECT " TASK_COLUMNS ", a.agent, a.metrics, a.job_id FROM tasks t"
                          " LEFT JOIN attempts a ON a.id = t.current_attempt"
                          " WHERE t.run_id = ?1 ORDER BY t.idx");
    if (!st) {
        json_decref(run);
        return LOOM_EDB;
    }
    sqlite3_bind_int64(st, 1, (sqlite3_int64)run_id);
    json_t *tasks = json_array();
    while (sqlite3_step(st) == SQLITE_ROW) json_array_append_new(tasks, task_json(st));
    sqlite3_finalize(st);
    json_object_set_new(run, "tasks", tasks);
    *out = run;
    return 0;
}

int loom_store_json_attempts(loom_store_t *s, uint64_t run_id, const char *task, json_t **out)
{
    sqlite3_stmt *st =
        store_prepare(s, "SELECT a.id, a.number, a.agent, a.state, a.dispatched_ms,"
                         " a.started_ms, a.ended_ms, a.exit_code, a.signal, a.error,"
                         " a.user_cpu_us, a.sys_cpu_us, a.max_rss, a.log_bytes, t.id, a.gpus,"
                         " a.job_id"
                         " FROM tasks t LEFT JOIN attempts a ON a.task_id = t.id"
                         " WHERE t.run_id = ?1 AND t.name = ?2 ORDER BY a.number");
    if (!st) return LOOM_EDB;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)run_id);
    store_bind_text(st, 2, task);
    json_t *list = json_array();
    bool found = false;
    while (sqlite3_step(st) == SQLITE_ROW) {
        found = true;
        if (sqlite3_column_type(st, 0) == SQLITE_NULL) continue; /* task without attempts */
        int sig = sqlite3_column_int(st, 8);
        bool exited = sqlite3_column_type(st, 7) != SQLITE_NULL;
        json_t *a = json_pack(
            "{s:I,s:i,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:I}", "id",
            sqlite3_column_int64(st, 0), "number", sqlite3_column_int(st, 1), "agent",
            store_json_text(st, 2), "state", store_json_text(st, 3), "dispatched_unix_ms",
            store_json_int(st, 4), "started_unix_ms", store_json_int(st, 5), "ended_unix_ms",
            store_json_int(st, 6), "exit_code",
            exited && sig == 0 ? json_integer(sqlite3_column_int(st, 7)) : json_null(), "signal",
            exited && sig ? json_integer(sig) : json_null(), "error", store_json_text(st, 9),
            "user_cpu_us", store_json_int(st, 10), "sys_cpu_us", store_json_int(st, 11),
            "max_rss_bytes", store_json_int(st, 12), "log_bytes", sqlite3_column_int64(st, 13));
        json_object_set_new(a, "gpus", json_col(st, 15, json_array()));
        json_object_set_new(a, "job_id", store_json_text(st, 16));
        json_array_append_new(list, a);
    }
    sqlite3_finalize(st);
    if (!found) {
        json_decref(list);
        return LOOM_ENOTFOUND;
    }
    *out = json_pack("{s:o}", "attempts", list);
    return 0;
}

int loom_store_run_text(loom_store_t *s, uint64_t run_id,
                        const char *(*waiting)(void *ud, uint32_t idx), void *ud, char **out,
                        size_t *len)
{
    json_t *run = NULL;
    int rc = loom_store_json_run_summary(s, run_id, &run);
    if (rc) return rc;
    json_object_del(run, "tasks_total");
    char *head = json_dumps(run, JSON_COMPACT);
    json_decref(run);
    sqlite3_stmt *st =
        store_prepare(s, "SELECT " TASK_COLUMNS ", a.agent, a.metrics, a.job_id FROM tasks t"
                         " LEFT JOIN attempts a ON a.id = t.current_attempt"
                         " WHERE t.run_id = ?1 ORDER BY t.idx");
    if (!head || !st) {
        free(head);
        sqlite3_finalize(st);
        return LOOM_EDB;
    }
    /* The run object without its closing brace, then the tasks one at a
     * time: only one task's JSON objects exist at once, so a run of 100,000
     * tasks costs its text, not ten times that in objects. */
    loom_buf_t b = {0};
    loom_buf_append(&b, head, strlen(head) - 1);
    loom_buf_puts(&b, ",\"tasks\":[");
    free(head);
    sqlite3_bind_int64(st, 1, (sqlite3_int64)run_id);
    for (uint32_t i = 0; sqlite3_step(st) == SQLITE_ROW; i++) {
        json_t *t = task_json(st);
        const char *why = waiting ? waiting(ud, (uint32_t)sqlite3_column_int(st, 2)) : NULL;
        if (why) json_object_set_new(t, "waiting", json_string(why));
        char *text = json_dumps(t, JSON_COMPACT);
        json_decref(t);
        if (i) loom_buf_puts(&b, ",");
        if (text) loom_buf_puts(&b, text);
        free(text);
    }
    sqlite3_finalize(st);
    loom_buf_puts(&b, "]}");
    *len = b.len;
    *out = loom_buf_steal(&b);
    return 0;
}
