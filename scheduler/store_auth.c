/* The tokens table: see store_auth.h. Tokens are checked at request rate,
 * but one primary-key lookup per request is cheap next to the request
 * itself, so statements are prepared per call like the other rare rows. */
#include "store_auth.h"
#include "store_int.h"

#include "loom/err.h"
#include "loom/log.h"

#include <string.h>

static void bind_opt_ms(sqlite3_stmt *st, int i, uint64_t v)
{
    if (v)
        sqlite3_bind_int64(st, i, (sqlite3_int64)v);
    else
        sqlite3_bind_null(st, i);
}

int loom_store_token_insert(loom_store_t *s, const char *kind, const char *role, const char *name,
                            const uint8_t hash[LOOM_TOKEN_HASH_BYTES], uint64_t created_ms,
                            uint64_t expires_ms, uint64_t *id)
{
    sqlite3_stmt *st =
        store_write_stmt(s, "INSERT INTO tokens (kind, role, name, hash, created_ms, expires_ms)"
                            " VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
    if (!st) return LOOM_EDB;
    store_bind_text(st, 1, kind);
    store_bind_text(st, 2, role);
    store_bind_text(st, 3, name ? name : "");
    sqlite3_bind_blob(st, 4, hash, LOOM_TOKEN_HASH_BYTES, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 5, (sqlite3_int64)created_ms);
    bind_opt_ms(st, 6, expires_ms);
    int rc = store_write_done(s, st, "insert token");
    if (rc == 0) *id = (uint64_t)sqlite3_last_insert_rowid(store_db(s));
    return rc;
}

int loom_store_token_get(loom_store_t *s, uint64_t id, loom_token_row_t *row)
{
    sqlite3_stmt *st = store_prepare(s, "SELECT kind, role, hash, created_ms, expires_ms, used_ms,"
                                        " revoked_ms FROM tokens WHERE id = ?1");
    if (!st) return LOOM_EDB;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)id);
    int rc = LOOM_ENOTFOUND;
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_bytes(st, 2) == LOOM_TOKEN_HASH_BYTES) {
        memset(row, 0, sizeof *row);
        row->id = id;
        const char *kind = store_col_text(st, 0);
        const char *role = store_col_text(st, 1);
        snprintf(row->kind, sizeof row->kind, "%s", kind ? kind : "");
        snprintf(row->role, sizeof row->role, "%s", role ? role : "");
        memcpy(row->hash, sqlite3_column_blob(st, 2), LOOM_TOKEN_HASH_BYTES);
        row->created_ms = (uint64_t)sqlite3_column_int64(st, 3);
        row->expires_ms = (uint64_t)sqlite3_column_int64(st, 4);
        row->used_ms = (uint64_t)sqlite3_column_int64(st, 5);
        row->revoked_ms = (uint64_t)sqlite3_column_int64(st, 6);
        rc = 0;
    }
    sqlite3_finalize(st);
    return rc;
}

int loom_store_token_touch(loom_store_t *s, uint64_t id, uint64_t used_ms)
{
    sqlite3_stmt *st = store_write_stmt(s, "UPDATE tokens SET used_ms = ?2 WHERE id = ?1");
    if (!st) return LOOM_EDB;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)id);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)used_ms);
    return store_write_done(s, st, "token used");
}

int loom_store_token_revoke(loom_store_t *s, uint64_t id, const char *kind, uint64_t now_ms)
{
    sqlite3_stmt *st = store_write_stmt(s, "UPDATE tokens SET revoked_ms = coalesce(revoked_ms, ?3)"
                                           " WHERE id = ?1 AND kind = ?2");
    if (!st) return LOOM_EDB;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)id);
    store_bind_text(st, 2, kind);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)now_ms);
    int rc = store_write_done(s, st, "revoke token");
    if (rc == 0 && sqlite3_changes(store_db(s)) == 0) rc = LOOM_ENOTFOUND;
    return rc;
}

int loom_store_token_count(loom_store_t *s, const char *kind, uint64_t *n)
{
    sqlite3_stmt *st = store_prepare(s, "SELECT count(*) FROM tokens WHERE kind = ?1");
    if (!st) return LOOM_EDB;
    store_bind_text(st, 1, kind);
    int rc = LOOM_EDB;
    if (sqlite3_step(st) == SQLITE_ROW) {
        *n = (uint64_t)sqlite3_column_int64(st, 0);
        rc = 0;
    }
    sqlite3_finalize(st);
    return rc;
}

int loom_store_tokens_json(loom_store_t *s, const char *kind, uint64_t now_ms, json_t **out)
{
    sqlite3_stmt *st = store_prepare(s, "SELECT id, role, name, created_ms, expires_ms, used_ms,"
                                        " revoked_ms FROM tokens WHERE kind = ?1 ORDER BY id");
    if (!st) return LOOM_EDB;
    store_bind_text(st, 1, kind);
    json_t *list = json_array();
    while (sqlite3_step(st) == SQLITE_ROW) {
        uint64_t expires = (uint64_t)sqlite3_column_int64(st, 4);
        const char *state = sqlite3_column_type(st, 6) != SQLITE_NULL ? "revoked"
                            : expires && expires <= now_ms            ? "expired"
                                                                      : "active";
        json_array_append_new(
            list, json_pack("{s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:s}", "id", store_json_int(st, 0),
                            "role", store_json_text(st, 1), "name", store_json_text(st, 2),
                            "created_unix_ms", store_json_int(st, 3), "expires_unix_ms",
                            store_json_int(st, 4), "used_unix_ms", store_json_int(st, 5),
                            "revoked_unix_ms", store_json_int(st, 6), "state", state));
    }
    sqlite3_finalize(st);
    *out = json_pack("{s:o}", "tokens", list);
    return 0;
}
