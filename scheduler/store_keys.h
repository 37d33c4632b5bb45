/* The store's rows for agent enrolment (store_keys.c): agents' CURVE keys
 * and join tokens (schema 6). Kept apart from store.h so that the API-token
 * work, which shares the tokens table, can grow its own file. */
#ifndef LOOM_STORE_KEYS_H
#define LOOM_STORE_KEYS_H

#include <jansson.h>
#include <stdint.h>

#include "store.h"

typedef enum { KEY_UNKNOWN, KEY_PENDING, KEY_APPROVED, KEY_REVOKED } loom_key_state;

/* The key's state and the agent it is (or claims to be) for; agent may be
 * NULL; *agent is the caller's to free. */
int loom_store_key_get(loom_store_t *s, const char *key, loom_key_state *state, char **agent);
/* Records an unknown key as pending for the name it claims (or updates a
 * pending key's claim); approved and revoked keys are left as they are. */
int loom_store_key_pending(loom_store_t *s, const char *key, const char *agent, uint64_t now_ms);
/* Approves a key for agent (inserting or updating its row). */
int loom_store_key_approve(loom_store_t *s, const char *key, const char *agent, const char *via,
                           uint64_t now_ms);
/* Another approved key of this agent, if any (*other: caller frees, or NULL). */
int loom_store_key_other_approved(loom_store_t *s, const char *agent, const char *key,
                                  char **other);
/* Revokes every key of the agent; *n: how many were not revoked before. */
int loom_store_keys_revoke(loom_store_t *s, const char *agent, uint64_t now_ms, uint32_t *n);
json_t *loom_store_keys_json(loom_store_t *s);

/* A join token's row, by the hash of its secret. */
typedef struct {
    uint64_t id;
    char *name; /* "" : any agent name */
    uint64_t expires_ms, used_ms, revoked_ms;
} loom_join_row_t;
int loom_store_join_add(loom_store_t *s, const char *name, const unsigned char hash[32],
                        uint64_t now_ms, uint64_t expires_ms, uint64_t *id);
/* LOOM_ENOTFOUND if no join token has this hash; row->name to free. */
int loom_store_join_get(loom_store_t *s, const unsigned char hash[32], loom_join_row_t *row);
int loom_store_join_use(loom_store_t *s, uint64_t id, uint64_t now_ms);

#endif
