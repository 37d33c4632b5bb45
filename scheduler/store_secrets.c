/* The secrets table: sealed values (secrets.c seals and opens them), their
 * names and times. Nothing here ever sees a plaintext. */
#include "store.h"
#include "store_int.h"

#include "loom/err.h"
#include "loom/util.h"

#include <stdlib.h>
#include <string.h>

int loom_store_secret_put(loom_store_t *s, const char *kind, const char *name, const uint8_t *nonce,
                          size_t nonce_len, const uint8_t *ct, size_t ct_len, uint64_t now_ms)
{
    sqlite3_stmt *st = store_write_stmt(
        s, "INSERT INTO secrets(kind, name, nonce, ciphertext, created_ms, updated_ms)"
           " VALUES (?1, ?2, ?3, ?4, ?5, ?5) ON CONFLICT(kind, name)"
           " DO UPDATE SET nonce = ?3, ciphertext = ?4, updated_ms = ?5");
    if (!st) return LOOM_EDB;
    store_bind_text(st, 1, kind);
    store_bind_text(st, 2, name);
    sqlite3_bind_blob(st, 3, nonce, (int)nonce_len, SQLITE_TRANSIENT);
    sqlite3_bind_blob(st, 4, ct, (int)ct_len, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 5, (sqlite3_int64)now_ms);
    return store_write_done(s, st, "secret");
}

static uint8_t *copy_blob(sqlite3_stmt *st, int i, size_t *len)
{
    *len = (size_t)sqlite3_column_bytes(st, i);
    uint8_t *out = loom_xmalloc(*len ? *len : 1);
    if (*len) memcpy(out, sqlite3_column_blob(st, i), *len);
    return out;
}

int loom_store_secret_get(loom_store_t *s, const char *kind, const char *name, uint8_t **nonce,
                          size_t *nonce_len, uint8_t **ct, size_t *ct_len)
{
    sqlite3_stmt *st =
        store_prepare(s, "SELECT nonce, ciphertext FROM secrets WHERE kind = ?1 AND name = ?2");
    if (!st) return LOOM_EDB;
    store_bind_text(st, 1, kind);
    store_bind_text(st, 2, name);
    int rc = LOOM_ENOTFOUND;
    if (sqlite3_step(st) == SQLITE_ROW) {
        *nonce = copy_blob(st, 0, nonce_len);
        *ct = copy_blob(st, 1, ct_len);
        rc = 0;
    }
    sqlite3_finalize(st);
    return rc;
}

int loom_store_secret_delete(loom_store_t *s, const char *kind, const char *name)
{
    sqlite3_stmt *st = store_write_stmt(s, "DELETE FROM secrets WHERE kind = ?1 AND name = ?2");
    if (!st) return LOOM_EDB;
    store_bind_text(st, 1, kind);
    store_bind_text(st, 2, name);
    int rc = store_write_done(s, st, "delete secret");
    if (rc == 0 && sqlite3_changes(store_db(s)) == 0) rc = LOOM_ENOTFOUND;
    return rc;
}

int loom_store_secret_first(loom_store_t *s, char **kind, char **name)
{
    sqlite3_stmt *st = store_prepare(s, "SELECT kind, name FROM secrets LIMIT 1");
    if (!st) return LOOM_EDB;
    int rc = LOOM_ENOTFOUND;
    if (sqlite3_step(st) == SQLITE_ROW) {
        *kind = loom_xstrdup(store_col_text(st, 0));
        *name = loom_xstrdup(store_col_text(st, 1));
        rc = 0;
    }
    sqlite3_finalize(st);
    return rc;
}

int loom_store_json_secrets(loom_store_t *s, const char *kind, json_t **out)
{
    sqlite3_stmt *st = store_prepare(s, "SELECT name, created_ms, updated_ms FROM secrets"
                                        " WHERE kind = ?1 ORDER BY name");
    if (!st) return LOOM_EDB;
    store_bind_text(st, 1, kind);
    json_t *list = json_array();
    while (sqlite3_step(st) == SQLITE_ROW)
        json_array_append_new(list, json_pack("{s:o,s:o,s:o}", "name", store_json_text(st, 0),
                                              "created_ms", store_json_int(st, 1), "updated_ms",
                                              store_json_int(st, 2)));
    sqlite3_finalize(st);
    *out = list;
    return 0;
}
