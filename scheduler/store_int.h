/* What store.c shares with store_json.c: statement helpers and the column
 * lists the row readers and the JSON builders agree on. */
#ifndef LOOM_STORE_INT_H
#define LOOM_STORE_INT_H

#include <sqlite3.h>

#include "store.h"

/* Prepares an ad-hoc (uncached) query; NULL after logging on error. */
sqlite3_stmt *store_prepare(loom_store_t *s, const char *q);
/* Binds text, or NULL for a NULL pointer. */
void store_bind_text(sqlite3_stmt *st, int i, const char *v);
const char *store_col_text(sqlite3_stmt *st, int i);
sqlite3 *store_db(loom_store_t *s);
/* For statements prepared per call: begins the turn's transaction and
 * prepares a write (NULL after logging on error); runs it to the end,
 * finalizes it, and reports a failure as LOOM_EDB. */
sqlite3_stmt *store_write_stmt(loom_store_t *s, const char *q);
int store_write_done(loom_store_t *s, sqlite3_stmt *st, const char *what);
/* A column as JSON: an integer, a string, or parsed JSON text; SQL NULL
 * (or unparsable text) gives JSON null. */
json_t *store_json_int(sqlite3_stmt *st, int i);
json_t *store_json_text(sqlite3_stmt *st, int i);
json_t *store_json_parsed(sqlite3_stmt *st, int i);

#define RUN_COLUMNS                                                                                \
    "r.id, r.pipeline_id, p.name, r.version, r.state, r.trigger, r.created_ms, "                   \
    "r.started_ms, r.ended_ms, r.params, r.origin, r.event"

#define TASK_COLUMNS                                                                               \
    "t.id, t.run_id, t.idx, t.name, t.needs, t.state, t.attempts, t.current_attempt, "             \
    "t.started_ms, t.ended_ms, t.exit_code, t.signal, t.error, t.dag_idx, t.item, "                \
    "t.not_before_ms"

#endif
