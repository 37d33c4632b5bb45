/* The tokens table (schema 6): API tokens (kind 'api') and agent join
 * tokens (kind 'join'), stored only as BLAKE2b-256 hashes of their secret.
 * Kept apart from store.h so the token code stays in one place. */
#ifndef LOOM_STORE_AUTH_H
#define LOOM_STORE_AUTH_H

#include "store.h"

#include <stdbool.h>
#include <stdint.h>

#define LOOM_TOKEN_HASH_BYTES 32

typedef struct {
    uint64_t id;
    char kind[8];  /* "api" or "join" */
    char role[16]; /* "read", "operate", "admin"; "" when NULL */
    uint8_t hash[LOOM_TOKEN_HASH_BYTES];
    uint64_t created_ms, expires_ms, used_ms, revoked_ms; /* unix ms; 0: never */
} loom_token_row_t;

/* Inserts a token; its id goes to *id. expires_ms 0: never expires. */
int loom_store_token_insert(loom_store_t *s, const char *kind, const char *role, const char *name,
                            const uint8_t hash[LOOM_TOKEN_HASH_BYTES], uint64_t created_ms,
                            uint64_t expires_ms, uint64_t *id);
/* One token by id; LOOM_ENOTFOUND when there is none. */
int loom_store_token_get(loom_store_t *s, uint64_t id, loom_token_row_t *row);
/* Records when a token was last used. */
int loom_store_token_touch(loom_store_t *s, uint64_t id, uint64_t used_ms);
/* Revokes a token of this kind; LOOM_ENOTFOUND when there is none, 0 when
 * it was revoked already (revoking is idempotent). */
int loom_store_token_revoke(loom_store_t *s, uint64_t id, const char *kind, uint64_t now_ms);
/* How many tokens of this kind exist, revoked and expired ones included. */
int loom_store_token_count(loom_store_t *s, const char *kind, uint64_t *n);
/* {"tokens": [{id, role, name, created_unix_ms, expires_unix_ms,
 * used_unix_ms, revoked_unix_ms, state}]} for one kind: never the hash. */
int loom_store_tokens_json(loom_store_t *s, const char *kind, uint64_t now_ms, json_t **out);

#endif
