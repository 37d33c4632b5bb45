/* Agents' CURVE keys and join tokens (see store_keys.h). These change at
 * enrolment rate, so statements are prepared per call. */
#include "store_keys.h"
#include "store_int.h"

#include "loom/err.h"
#include "loom/util.h"

#include <stdlib.h>
#include <string.h>

static loom_key_state parse_state(const char *t)
{
    if (!t) return KEY_UNKNOWN;
    if (strcmp(t, "approved") == 0) return KEY_APPROVED;
    if (strcmp(t, "revoked") == 0) return KEY_REVOKED;
    return KEY_PENDING;
}

int loom_store_key_get(loom_store_t *s, const char *key, loom_key_state *state, char **agent)
{
    sqlite3_stmt *st =
        store_prepare(s, "SELECT state, agent FROM agent_keys WHERE public_key = ?1");
    if (!st) return LOOM_EDB;
    store_bind_text(st, 1, key);
    *state = KEY_UNKNOWN;
    if (agent) *agent = NULL;
    if (sqlite3_step(st) == SQLITE_ROW) {
        *state = parse_state(store_col_text(st, 0));
        if (agent) *agent = loom_xstrdup(store_col_text(st, 1) ? store_col_text(st, 1) : "");
    }
    sqlite3_finalize(st);
    return 0;
}

int loom_store_key_pending(loom_store_t *s, const char *key, const char *agent, uint64_t now_ms)
{
    sqlite3_stmt *st = store_write_stmt(
        s, "INSERT INTO agent_keys(public_key, agent, state, created_ms) VALUES (?1, ?2,"
           " 'pending', ?3) ON CONFLICT(public_key) DO UPDATE SET agent = ?2"
           " WHERE state = 'pending'");
    if (!st) return LOOM_EDB;
    store_bind_text(st, 1, key);
    store_bind_text(st, 2, agent);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)now_ms);
    return store_write_done(s, st, "pending key");
}

int loom_store_key_approve(loom_store_t *s, const char *key, const char *agent, const char *via,
                           uint64_t now_ms)
{
    sqlite3_stmt *st = store_write_stmt(
        s, "INSERT INTO agent_keys(public_key, agent, state, created_ms, approved_ms, via)"
           " VALUES (?1, ?2, 'approved', ?3, ?3, ?4) ON CONFLICT(public_key) DO UPDATE SET"
           " agent = ?2, state = 'approved', approved_ms = ?3, via = ?4 WHERE state != 'revoked'");
    if (!st) return LOOM_EDB;
    store_bind_text(st, 1, key);
    store_bind_text(st, 2, agent);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)now_ms);
    store_bind_text(st, 4, via);
    return store_write_done(s, st, "approve key");
}

int loom_store_key_other_approved(loom_store_t *s, const char *agent, const char *key, char **other)
{
    sqlite3_stmt *st = store_prepare(s, "SELECT public_key FROM agent_keys WHERE agent = ?1"
                                        " AND state = 'approved' AND public_key != ?2 LIMIT 1");
    if (!st) return LOOM_EDB;
    store_bind_text(st, 1, agent);
    store_bind_text(st, 2, key);
    *other = NULL;
    if (sqlite3_step(st) == SQLITE_ROW) *other = loom_xstrdup(store_col_text(st, 0));
    sqlite3_finalize(st);
    return 0;
}

int loom_store_keys_revoke(loom_store_t *s, const char *agent, uint64_t now_ms, uint32_t *n)
{
    sqlite3_stmt *st = store_write_stmt(s, "UPDATE agent_keys SET state = 'revoked',"
                                           " revoked_ms = ?2 WHERE agent = ?1"
                                           " AND state != 'revoked'");
    if (!st) return LOOM_EDB;
    store_bind_text(st, 1, agent);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)now_ms);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return LOOM_EDB;
    *n = (uint32_t)sqlite3_changes(store_db(s));
    return 0;
}

json_t *loom_store_keys_json(loom_store_t *s)
{
    json_t *out = json_array();
    sqlite3_stmt *st = store_prepare(s, "SELECT public_key, agent, state, created_ms, approved_ms,"
                                        " revoked_ms, via FROM agent_keys"
                                        " ORDER BY agent, created_ms");
    if (!st) return out;
    while (sqlite3_step(st) == SQLITE_ROW)
        json_array_append_new(
            out, json_pack("{s:o,s:o,s:o,s:o,s:o,s:o,s:o}", "public_key", store_json_text(st, 0),
                           "agent", store_json_text(st, 1), "state", store_json_text(st, 2),
                           "created_unix_ms", store_json_int(st, 3), "approved_unix_ms",
                           store_json_int(st, 4), "revoked_unix_ms", store_json_int(st, 5), "via",
                           store_json_text(st, 6)));
    sqlite3_finalize(st);
    return out;
}

int loom_store_join_add(loom_store_t *s, const char *name, const unsigned char hash[32],
                        uint64_t now_ms, uint64_t expires_ms, uint64_t *id)
{
    sqlite3_stmt *st = store_write_stmt(s, "INSERT INTO tokens(kind, name, hash, created_ms,"
                                           " expires_ms) VALUES ('join', ?1, ?2, ?3, ?4)");
    if (!st) return LOOM_EDB;
    store_bind_text(st, 1, name ? name : "");
    sqlite3_bind_blob(st, 2, hash, 32, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)now_ms);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)expires_ms);
    int rc = store_write_done(s, st, "join token");
    if (rc == 0) *id = (uint64_t)sqlite3_last_insert_rowid(store_db(s));
    return rc;
}

int loom_store_join_get(loom_store_t *s, const unsigned char hash[32], loom_join_row_t *row)
{
    sqlite3_stmt *st = store_prepare(s, "SELECT id, name, expires_ms, used_ms, revoked_ms"
                                        " FROM tokens WHERE kind = 'join' AND hash = ?1");
    if (!st) return LOOM_EDB;
    sqlite3_bind_blob(st, 1, hash, 32, SQLITE_TRANSIENT);
    int rc = LOOM_ENOTFOUND;
    if (sqlite3_step(st) == SQLITE_ROW) {
        row->id = (uint64_t)sqlite3_column_int64(st, 0);
        row->name = loom_xstrdup(store_col_text(st, 1) ? store_col_text(st, 1) : "");
        row->expires_ms = (uint64_t)sqlite3_column_int64(st, 2);
        row->used_ms = (uint64_t)sqlite3_column_int64(st, 3);
        row->revoked_ms = (uint64_t)sqlite3_column_int64(st, 4);
        rc = 0;
    }
    sqlite3_finalize(st);
    return rc;
}

int loom_store_join_use(loom_store_t *s, uint64_t id, uint64_t now_ms)
{
    sqlite3_stmt *st = store_write_stmt(s, "UPDATE tokens SET used_ms = ?2 WHERE id = ?1"
                                           " AND kind = 'join' AND used_ms IS NULL");
    if (!st) return LOOM_EDB;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)id);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)now_ms);
    return store_write_done(s, st, "use join token");
}
