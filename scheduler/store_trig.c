/* The trigger engine's rows (see store.h): schedules' last fire times, data
 * files seen, events delivered, triggers waiting for admission, and the
 * decisions that explain what each trigger did. These run at trigger rate,
 * not task rate, so their statements are prepared per call. */
#include "store.h"
#include "store_int.h"

#include "loom/err.h"
#include "loom/log.h"
#include "loom/util.h"

#include <stdlib.h>
#include <string.h>

static void bind_opt(sqlite3_stmt *st, int i, uint64_t v)
{
    if (v)
        sqlite3_bind_int64(st, i, (sqlite3_int64)v);
    else
        sqlite3_bind_null(st, i);
}

int loom_store_each_latest(loom_store_t *s,
                           int (*cb)(void *ud, uint64_t pipeline_id, const char *name,
                                     uint32_t version, const char *source, size_t len),
                           void *ud)
{
    sqlite3_stmt *st = store_prepare(s, "SELECT p.id, p.name, v.version, v.source FROM pipelines p"
                                        " JOIN pipeline_versions v ON v.pipeline_id = p.id"
                                        " AND v.version = p.latest_version ORDER BY p.name");
    if (!st) return LOOM_EDB;
    int rc = 0;
    while (rc == 0 && sqlite3_step(st) == SQLITE_ROW)
        rc = cb(ud, (uint64_t)sqlite3_column_int64(st, 0), store_col_text(st, 1),
                (uint32_t)sqlite3_column_int(st, 2), sqlite3_column_blob(st, 3),
                (size_t)sqlite3_column_bytes(st, 3));
    sqlite3_finalize(st);
    return rc;
}

int loom_store_pipeline_flags(loom_store_t *s, uint64_t pipeline_id, bool *paused,
                              uint64_t *last_trigger_run_ms)
{
    sqlite3_stmt *st =
        store_prepare(s, "SELECT paused, last_trigger_run_ms FROM pipelines WHERE id = ?1");
    if (!st) return LOOM_EDB;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)pipeline_id);
    int rc = LOOM_ENOTFOUND;
    if (sqlite3_step(st) == SQLITE_ROW) {
        *paused = sqlite3_column_int(st, 0) != 0;
        *last_trigger_run_ms = (uint64_t)sqlite3_column_int64(st, 1);
        rc = 0;
    }
    sqlite3_finalize(st);
    return rc;
}

int loom_store_pipeline_set_paused(loom_store_t *s, uint64_t pipeline_id, bool paused)
{
    sqlite3_stmt *st = store_write_stmt(s, "UPDATE pipelines SET paused = ?2 WHERE id = ?1");
    if (!st) return LOOM_EDB;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)pipeline_id);
    sqlite3_bind_int(st, 2, paused);
    return store_write_done(s, st, "pause pipeline");
}

int loom_store_pipeline_set_last_trigger(loom_store_t *s, uint64_t pipeline_id, uint64_t ms)
{
    sqlite3_stmt *st =
        store_write_stmt(s, "UPDATE pipelines SET last_trigger_run_ms = ?2 WHERE id = ?1");
    if (!st) return LOOM_EDB;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)pipeline_id);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)ms);
    return store_write_done(s, st, "pipeline last trigger");
}

int loom_store_schedule_get(loom_store_t *s, uint64_t pipeline_id, const char *key,
                            int64_t *last_fire_s)
{
    sqlite3_stmt *st =
        store_prepare(s, "SELECT last_fire_s FROM schedules WHERE pipeline_id = ?1 AND key = ?2");
    if (!st) return LOOM_EDB;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)pipeline_id);
    store_bind_text(st, 2, key);
    int rc = LOOM_ENOTFOUND;
    if (sqlite3_step(st) == SQLITE_ROW) {
        *last_fire_s = sqlite3_column_int64(st, 0);
        rc = 0;
    }
    sqlite3_finalize(st);
    return rc;
}

int loom_store_schedule_set(loom_store_t *s, uint64_t pipeline_id, const char *key,
                            int64_t last_fire_s)
{
    sqlite3_stmt *st = store_write_stmt(s, "INSERT INTO schedules(pipeline_id, key, last_fire_s)"
                                           " VALUES (?1, ?2, ?3) ON CONFLICT(pipeline_id, key)"
                                           " DO UPDATE SET last_fire_s = ?3");
    if (!st) return LOOM_EDB;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)pipeline_id);
    store_bind_text(st, 2, key);
    sqlite3_bind_int64(st, 3, last_fire_s);
    return store_write_done(s, st, "schedule fire time");
}

int loom_store_data_file_get(loom_store_t *s, uint64_t pipeline_id, const char *key,
                             const char *path, uint64_t *size, int64_t *mtime_ns)
{
    sqlite3_stmt *st = store_prepare(s, "SELECT size, mtime_ns FROM data_files"
                                        " WHERE pipeline_id = ?1 AND key = ?2 AND path = ?3");
    if (!st) return LOOM_EDB;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)pipeline_id);
    store_bind_text(st, 2, key);
    store_bind_text(st, 3, path);
    int rc = LOOM_ENOTFOUND;
    if (sqlite3_step(st) == SQLITE_ROW) {
        *size = (uint64_t)sqlite3_column_int64(st, 0);
        *mtime_ns = sqlite3_column_int64(st, 1);
        rc = 0;
    }
    sqlite3_finalize(st);
    return rc;
}

int loom_store_data_file_put(loom_store_t *s, uint64_t pipeline_id, const char *key,
                             const char *path, uint64_t size, int64_t mtime_ns, uint64_t seen_ms)
{
    sqlite3_stmt *st = store_write_stmt(
        s, "INSERT INTO data_files(pipeline_id, key, path, size, mtime_ns, seen_ms, run_id)"
           " VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL) ON CONFLICT(pipeline_id, key, path)"
           " DO UPDATE SET size = ?4, mtime_ns = ?5, seen_ms = ?6, run_id = NULL");
    if (!st) return LOOM_EDB;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)pipeline_id);
    store_bind_text(st, 2, key);
    store_bind_text(st, 3, path);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)size);
    sqlite3_bind_int64(st, 5, mtime_ns);
    sqlite3_bind_int64(st, 6, (sqlite3_int64)seen_ms);
    return store_write_done(s, st, "data file");
}

int loom_store_data_files_waiting(loom_store_t *s, uint64_t pipeline_id, const char *key,
                                  int (*cb)(void *ud, const char *path), void *ud)
{
    sqlite3_stmt *st = store_prepare(s, "SELECT path FROM data_files WHERE pipeline_id = ?1"
                                        " AND key = ?2 AND run_id IS NULL ORDER BY seen_ms, path");
    if (!st) return LOOM_EDB;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)pipeline_id);
    store_bind_text(st, 2, key);
    int rc = 0;
    while (rc == 0 && sqlite3_step(st) == SQLITE_ROW) rc = cb(ud, store_col_text(st, 0));
    sqlite3_finalize(st);
    return rc;
}

int loom_store_data_files_done(loom_store_t *s, uint64_t pipeline_id, const char *key,
                               const json_t *paths, uint64_t run_id)
{
    size_t i;
    json_t *p;
    json_array_foreach(paths, i, p)
    {
        sqlite3_stmt *st =
            store_write_stmt(s, "UPDATE data_files SET run_id = ?4 WHERE pipeline_id = ?1"
                                " AND key = ?2 AND path = ?3");
        if (!st) return LOOM_EDB;
        sqlite3_bind_int64(st, 1, (sqlite3_int64)pipeline_id);
        store_bind_text(st, 2, key);
        store_bind_text(st, 3, json_string_value(p));
        sqlite3_bind_int64(st, 4, (sqlite3_int64)run_id);
        if (store_write_done(s, st, "data file done")) return LOOM_EDB;
    }
    return 0;
}

int loom_store_event_find(loom_store_t *s, const char *idem_key, uint64_t *id, char **outcome)
{
    sqlite3_stmt *st = store_prepare(s, "SELECT id, outcome FROM events WHERE idem_key = ?1");
    if (!st) return LOOM_EDB;
    store_bind_text(st, 1, idem_key);
    int rc = LOOM_ENOTFOUND;
    if (sqlite3_step(st) == SQLITE_ROW) {
        *id = (uint64_t)sqlite3_column_int64(st, 0);
        *outcome = loom_xstrdup(store_col_text(st, 1) ? store_col_text(st, 1) : "[]");
        rc = 0;
    }
    sqlite3_finalize(st);
    return rc;
}

int loom_store_event_insert(loom_store_t *s, const char *name, const char *source,
                            uint64_t received_ms, const char *idem_key, const char *payload,
                            uint64_t *id)
{
    sqlite3_stmt *st =
        store_write_stmt(s, "INSERT INTO events(name, source, received_ms, idem_key, payload)"
                            " VALUES (?1, ?2, ?3, ?4, ?5)");
    if (!st) return LOOM_EDB;
    store_bind_text(st, 1, name);
    store_bind_text(st, 2, source);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)received_ms);
    store_bind_text(st, 4, idem_key);
    store_bind_text(st, 5, payload);
    int rc = store_write_done(s, st, "insert event");
    if (rc == 0) *id = (uint64_t)sqlite3_last_insert_rowid(store_db(s));
    return rc;
}

int loom_store_event_outcome(loom_store_t *s, uint64_t id, const char *outcome_json)
{
    sqlite3_stmt *st = store_write_stmt(s, "UPDATE events SET outcome = ?2 WHERE id = ?1");
    if (!st) return LOOM_EDB;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)id);
    store_bind_text(st, 2, outcome_json);
    return store_write_done(s, st, "event outcome");
}

int loom_store_queue_insert(loom_store_t *s, loom_queue_row_t *row)
{
    sqlite3_stmt *st =
        store_write_stmt(s, "INSERT INTO trigger_queue(pipeline_id, due_ms, origin, event, params,"
                            " created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
    if (!st) return LOOM_EDB;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)row->pipeline_id);
    bind_opt(st, 2, row->due_ms);
    store_bind_text(st, 3, row->origin_json);
    store_bind_text(st, 4, row->event_json);
    store_bind_text(st, 5, row->params_json ? row->params_json : "{}");
    sqlite3_bind_int64(st, 6, (sqlite3_int64)row->created_ms);
    int rc = store_write_done(s, st, "queue trigger");
    if (rc == 0) row->id = (uint64_t)sqlite3_last_insert_rowid(store_db(s));
    return rc;
}

int loom_store_queue_update(loom_store_t *s, const loom_queue_row_t *row)
{
    sqlite3_stmt *st = store_write_stmt(s, "UPDATE trigger_queue SET due_ms = ?2, origin = ?3,"
                                           " event = ?4 WHERE id = ?1");
    if (!st) return LOOM_EDB;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)row->id);
    bind_opt(st, 2, row->due_ms);
    store_bind_text(st, 3, row->origin_json);
    store_bind_text(st, 4, row->event_json);
    return store_write_done(s, st, "update queued trigger");
}

int loom_store_queue_delete(loom_store_t *s, uint64_t id)
{
    sqlite3_stmt *st = store_write_stmt(s, "DELETE FROM trigger_queue WHERE id = ?1");
    if (!st) return LOOM_EDB;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)id);
    return store_write_done(s, st, "delete queued trigger");
}

int loom_store_each_queued(loom_store_t *s, int (*cb)(void *ud, const loom_queue_row_t *row),
                           void *ud)
{
    sqlite3_stmt *st = store_prepare(s, "SELECT id, pipeline_id, due_ms, created_ms, origin, event,"
                                        " params FROM trigger_queue ORDER BY id");
    if (!st) return LOOM_EDB;
    int rc = 0;
    while (rc == 0 && sqlite3_step(st) == SQLITE_ROW) {
        loom_queue_row_t row = {.id = (uint64_t)sqlite3_column_int64(st, 0),
                                .pipeline_id = (uint64_t)sqlite3_column_int64(st, 1),
                                .due_ms = (uint64_t)sqlite3_column_int64(st, 2),
                                .created_ms = (uint64_t)sqlite3_column_int64(st, 3),
                                .origin_json = store_col_text(st, 4),
                                .event_json = store_col_text(st, 5),
                                .params_json = store_col_text(st, 6)};
        rc = cb(ud, &row);
    }
    sqlite3_finalize(st);
    return rc;
}

/* Decisions kept per pipeline; older ones are pruned as new ones come. */
#define DECISIONS_KEPT 1000

int loom_store_decision(loom_store_t *s, uint64_t pipeline_id, uint64_t at_ms, const char *kind,
                        const char *what, const char *decision, uint64_t run_id, const char *reason)
{
    sqlite3_stmt *st = store_write_stmt(
        s, "INSERT INTO trigger_decisions(pipeline_id, at_ms, kind, what, decision,"
           " run_id, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)");
    if (!st) return LOOM_EDB;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)pipeline_id);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)at_ms);
    store_bind_text(st, 3, kind);
    store_bind_text(st, 4, what);
    store_bind_text(st, 5, decision);
    bind_opt(st, 6, run_id);
    store_bind_text(st, 7, reason);
    int rc = store_write_done(s, st, "trigger decision");
    sqlite3_int64 id = sqlite3_last_insert_rowid(store_db(s));
    if (rc == 0 && id % 64 == 0) {
        st = store_prepare(s, "DELETE FROM trigger_decisions WHERE pipeline_id = ?1 AND id <="
                              " (SELECT id FROM trigger_decisions WHERE pipeline_id = ?1"
                              " ORDER BY id DESC LIMIT 1 OFFSET ?2)");
        if (!st) return LOOM_EDB;
        sqlite3_bind_int64(st, 1, (sqlite3_int64)pipeline_id);
        sqlite3_bind_int(st, 2, DECISIONS_KEPT);
        rc = store_write_done(s, st, "prune decisions");
    }
    return rc;
}

int loom_store_json_decisions(loom_store_t *s, const char *pipeline, int limit, json_t **out)
{
    sqlite3_stmt *st = store_prepare(
        s, "SELECT d.id, d.at_ms, d.kind, d.what, d.decision, d.run_id, d.reason, p.paused"
           " FROM pipelines p LEFT JOIN trigger_decisions d ON d.pipeline_id = p.id"
           " WHERE p.name = ?1 ORDER BY d.id DESC LIMIT ?2");
    if (!st) return LOOM_EDB;
    store_bind_text(st, 1, pipeline);
    sqlite3_bind_int(st, 2, limit);
    json_t *list = json_array();
    bool found = false, paused = false;
    while (sqlite3_step(st) == SQLITE_ROW) {
        found = true;
        paused = sqlite3_column_int(st, 7) != 0;
        if (sqlite3_column_type(st, 0) == SQLITE_NULL) continue;
        json_array_append_new(
            list,
            json_pack("{s:I,s:I,s:o,s:o,s:o,s:o,s:o}", "id", sqlite3_column_int64(st, 0),
                      "at_unix_ms", sqlite3_column_int64(st, 1), "kind", store_json_text(st, 2),
                      "what", store_json_text(st, 3), "decision", store_json_text(st, 4), "run_id",
                      store_json_int(st, 5), "reason", store_json_text(st, 6)));
    }
    sqlite3_finalize(st);
    if (!found) {
        json_decref(list);
        return LOOM_ENOTFOUND;
    }
    *out = json_pack("{s:s,s:b,s:o}", "pipeline", pipeline, "paused", paused, "decisions", list);
    return 0;
}

int loom_store_json_events(loom_store_t *s, const char *name, int limit, json_t **out)
{
    sqlite3_stmt *st =
        store_prepare(s, "SELECT id, name, source, received_ms, idem_key, payload, outcome"
                         " FROM events WHERE (?1 IS NULL OR name = ?1) ORDER BY id DESC LIMIT ?2");
    if (!st) return LOOM_EDB;
    store_bind_text(st, 1, name);
    sqlite3_bind_int(st, 2, limit);
    json_t *list = json_array();
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *payload = store_col_text(st, 5), *outcome = store_col_text(st, 6);
        json_t *pj = payload ? json_loads(payload, JSON_DECODE_ANY, NULL) : NULL;
        json_t *oj = outcome ? json_loads(outcome, 0, NULL) : NULL;
        json_array_append_new(
            list,
            json_pack("{s:I,s:o,s:o,s:I,s:o,s:o,s:o}", "id", sqlite3_column_int64(st, 0), "name",
                      store_json_text(st, 1), "source", store_json_text(st, 2), "received_unix_ms",
                      sqlite3_column_int64(st, 3), "idempotency_key", store_json_text(st, 4),
                      "payload", pj ? pj : json_null(), "outcome", oj ? oj : json_array()));
    }
    sqlite3_finalize(st);
    *out = json_pack("{s:o}", "events", list);
    return 0;
}
