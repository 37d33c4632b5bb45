/* API bearer tokens: creating, checking, and the admin token file that
 * bootstraps a fresh loomd. See auth.h. */
#include "auth.h"
#include "store_auth.h"

#include "loom/err.h"
#include "loom/log.h"
#include "loom/util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SECRET_BYTES 32
#define SECRET_HEX (SECRET_BYTES * 2)
/* used_ms is written at most this often per token, not once a request. */
#define TOUCH_EVERY_MS 60000

static const char *const role_names[] = {"none", "read", "operate", "admin"};

const char *loom_auth_role_name(api_role_t role)
{
    return (unsigned)role < sizeof role_names / sizeof role_names[0] ? role_names[role] : "none";
}

int loom_auth_role_parse(const char *s, api_role_t *out)
{
    for (int i = API_ROLE_READ; i <= API_ROLE_ADMIN; i++)
        if (s && strcmp(s, role_names[i]) == 0) {
            *out = (api_role_t)i;
            return 0;
        }
    return LOOM_EINVAL;
}

static void hash_secret(const char *secret_hex, uint8_t out[LOOM_TOKEN_HASH_BYTES])
{
    crypto_generichash(out, LOOM_TOKEN_HASH_BYTES, (const unsigned char *)secret_hex, SECRET_HEX,
                       NULL, 0);
}

int loom_auth_token_create(loom_store_t *s, api_role_t role, const char *name,
                           uint64_t expires_unix_ms, char **token, uint64_t *id)
{
    uint8_t raw[SECRET_BYTES], hash[LOOM_TOKEN_HASH_BYTES];
    char hex[SECRET_HEX + 1];
    randombytes_buf(raw, sizeof raw);
    sodium_bin2hex(hex, sizeof hex, raw, sizeof raw);
    sodium_memzero(raw, sizeof raw);
    hash_secret(hex, hash);
    int rc = loom_store_token_insert(s, "api", loom_auth_role_name(role), name, hash,
                                     loom_unix_ms(), expires_unix_ms, id);
    if (rc == 0) *token = loom_xasprintf(LOOM_TOKEN_PREFIX "%llu_%s", (unsigned long long)*id, hex);
    sodium_memzero(hex, sizeof hex);
    return rc;
}

/* Splits loom_<id>_<64 hex> into its id and secret. */
static bool parse_token(const char *token, uint64_t *id, const char **secret)
{
    size_t plen = sizeof LOOM_TOKEN_PREFIX - 1;
    if (!token || strlen(token) > LOOM_TOKEN_MAX || strncmp(token, LOOM_TOKEN_PREFIX, plen) != 0)
        return false;
    const char *p = token + plen;
    const char *us = strchr(p, '_');
    if (!us || us == p || us - p > 20) return false;
    char digits[21];
    memcpy(digits, p, (size_t)(us - p));
    digits[us - p] = '\0';
    int64_t n;
    if (loom_parse_i64(digits, 1, INT64_MAX, &n) != 0) return false;
    const char *hex = us + 1;
    if (strlen(hex) != SECRET_HEX || strspn(hex, "0123456789abcdef") != SECRET_HEX) return false;
    *id = (uint64_t)n;
    *secret = hex;
    return true;
}

loom_auth_result_t loom_auth_check(loom_store_t *s, const char *token, uint64_t now_unix_ms,
                                   api_role_t *role, uint64_t *id)
{
    const char *secret;
    uint64_t tid;
    if (!parse_token(token, &tid, &secret)) return LOOM_AUTH_MALFORMED;
    loom_token_row_t row;
    int rc = loom_store_token_get(s, tid, &row);
    if (rc == LOOM_ENOTFOUND) return LOOM_AUTH_UNKNOWN;
    if (rc) return LOOM_AUTH_ERROR;
    uint8_t hash[LOOM_TOKEN_HASH_BYTES];
    hash_secret(secret, hash);
    /* Constant time: how much of a guess matched must not show in timing. */
    if (sodium_memcmp(hash, row.hash, sizeof hash) != 0 || strcmp(row.kind, "api") != 0)
        return LOOM_AUTH_UNKNOWN;
    if (row.revoked_ms) return LOOM_AUTH_REVOKED;
    if (row.expires_ms && row.expires_ms <= now_unix_ms) return LOOM_AUTH_EXPIRED;
    if (loom_auth_role_parse(row.role, role) != 0) return LOOM_AUTH_UNKNOWN;
    if (now_unix_ms >= row.used_ms + TOUCH_EVERY_MS) loom_store_token_touch(s, tid, now_unix_ms);
    *id = tid;
    return LOOM_AUTH_OK;
}

const char *loom_auth_result_text(loom_auth_result_t res)
{
    switch (res) {
    case LOOM_AUTH_OK:
        return "valid";
    case LOOM_AUTH_MALFORMED:
        return "the bearer token is not a loom token (loom_<id>_<secret>)";
    case LOOM_AUTH_UNKNOWN:
        return "the bearer token is not known to this loomd";
    case LOOM_AUTH_REVOKED:
        return "the bearer token has been revoked";
    case LOOM_AUTH_EXPIRED:
        return "the bearer token has expired";
    case LOOM_AUTH_ERROR:
        break;
    }
    return "the bearer token could not be checked (database error)";
}

int loom_auth_write_token_file(const char *path, const char *token)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return LOOM_EINVAL;
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return LOOM_EIO;
    size_t len = strlen(token);
    bool ok = write(fd, token, len) == (ssize_t)len && write(fd, "\n", 1) == 1 && fsync(fd) == 0;
    ok = close(fd) == 0 && ok;
    /* link(), not rename(): it fails instead of replacing a token file
     * someone may still rely on. */
    int rc = !ok ? LOOM_EIO : link(tmp, path) == 0 ? 0 : errno == EEXIST ? LOOM_EEXISTS : LOOM_EIO;
    unlink(tmp);
    return rc;
}

int loom_auth_new_admin_file(loom_store_t *s, const char *path, const char *name, char *why,
                             size_t whylen)
{
    if (access(path, F_OK) == 0) {
        snprintf(why, whylen, "%s already exists; loomd never overwrites a token file", path);
        return LOOM_EEXISTS;
    }
    char *token = NULL;
    uint64_t id = 0;
    int rc = loom_auth_token_create(s, API_ROLE_ADMIN, name, 0, &token, &id);
    if (rc == 0) rc = loom_store_commit(s);
    if (rc) {
        snprintf(why, whylen, "cannot store an admin token: %s", loom_strerror(rc));
        free(token);
        return rc;
    }
    rc = loom_auth_write_token_file(path, token);
    sodium_memzero(token, strlen(token));
    free(token);
    if (rc) {
        /* Nobody can ever see this token: revoke it rather than leave it. */
        loom_store_token_revoke(s, id, "api", loom_unix_ms());
        loom_store_commit(s);
        snprintf(why, whylen, "cannot write the admin token to %s: %s", path,
                 rc == LOOM_EEXISTS ? "it already exists" : strerror(errno));
        return rc;
    }
    LOG_INFO("created admin token id=%llu name=%s; it is in %s", (unsigned long long)id, name,
             path);
    return 0;
}

int loom_auth_bootstrap(loom_store_t *s, const char *state_dir, char *why, size_t whylen)
{
    uint64_t n = 0;
    int rc = loom_store_token_count(s, "api", &n);
    if (rc) {
        snprintf(why, whylen, "cannot read the tokens table: %s", loom_strerror(rc));
        return rc;
    }
    if (n > 0) return 0;
    char *path = loom_xasprintf("%s/admin.token", state_dir);
    if (access(path, F_OK) == 0) {
        /* Left from an earlier database: its token is valid nowhere now,
         * but loomd does not delete what it did not make this time. */
        snprintf(why, whylen,
                 "%s exists but the database holds no API token: it belongs to an earlier "
                 "database; remove it and start loomd again to get a new admin token",
                 path);
        free(path);
        return LOOM_EEXISTS;
    }
    rc = loom_auth_new_admin_file(s, path, "bootstrap", why, whylen);
    free(path);
    return rc;
}
