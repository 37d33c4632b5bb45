/* API bearer tokens: "loom_<id>_<secret>", the secret 32 random bytes in
 * hex. Only BLAKE2b-256(secret) is stored (store_auth.h); a request's token
 * is looked up by id and its hash compared in constant time. Roles are
 * ordered read < operate < admin. See docs/api.md, "Authentication". */
#ifndef LOOM_AUTH_H
#define LOOM_AUTH_H

#include "api_int.h"
#include "store.h"

#include <stddef.h>
#include <stdint.h>

#define LOOM_TOKEN_PREFIX "loom_"
/* The longest token text accepted: prefix, a 20-digit id, '_', 64 hex. */
#define LOOM_TOKEN_MAX 96

/* "read", "operate", "admin" ("none" for API_ROLE_NONE). */
const char *loom_auth_role_name(api_role_t role);
/* Parses a role name; LOOM_EINVAL for anything but read, operate, admin. */
int loom_auth_role_parse(const char *s, api_role_t *out);

/* Creates an API token of role named name, expiring at expires_unix_ms (0:
 * never). *token (caller frees) is the only copy of the secret there will
 * ever be. */
int loom_auth_token_create(loom_store_t *s, api_role_t role, const char *name,
                           uint64_t expires_unix_ms, char **token, uint64_t *id);

typedef enum {
    LOOM_AUTH_OK = 0,
    LOOM_AUTH_MALFORMED, /* not of the form loom_<id>_<secret> */
    LOOM_AUTH_UNKNOWN,   /* no such token, or the secret does not match */
    LOOM_AUTH_REVOKED,
    LOOM_AUTH_EXPIRED,
    LOOM_AUTH_ERROR, /* the database failed */
} loom_auth_result_t;

/* Checks a presented token at now_unix_ms: its role and id on
 * LOOM_AUTH_OK. Records the use at most once a minute per token. */
loom_auth_result_t loom_auth_check(loom_store_t *s, const char *token, uint64_t now_unix_ms,
                                   api_role_t *role, uint64_t *id);
/* A sentence for a failed check, naming no secret. */
const char *loom_auth_result_text(loom_auth_result_t res);

/* Writes token to path with mode 0600, atomically and never over an
 * existing file (LOOM_EXISTS then). */
int loom_auth_write_token_file(const char *path, const char *token);

/* On first start (no API token at all), creates an admin token named
 * "bootstrap" and writes it to STATE_DIR/admin.token. Commits. */
int loom_auth_bootstrap(loom_store_t *s, const char *state_dir, char *why, size_t whylen);
/* Creates an admin token named name and writes it to path (which must not
 * exist). Commits. For `loomd --new-admin-token FILE`. */
int loom_auth_new_admin_file(loom_store_t *s, const char *path, const char *name, char *why,
                             size_t whylen);

#endif
