/* Secrets at rest and webhook signatures; see secrets.h. */
#include "secrets.h"

#include "loom/err.h"
#include "loom/util.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct loom_secrets {
    uint8_t key[LOOM_SECRETS_KEY_BYTES];
};

/* A new key, written to a temporary file and linked into place: link()
 * never replaces an existing file, so two loomds racing keep one key. */
static int create_key(const char *path, char *why, size_t whylen)
{
    uint8_t key[LOOM_SECRETS_KEY_BYTES];
    randombytes_buf(key, sizeof key);
    char *tmp = loom_xasprintf("%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    int rc = 0;
    if (fd < 0 || write(fd, key, sizeof key) != (ssize_t)sizeof key || fsync(fd) != 0) {
        snprintf(why, whylen, "cannot write the secrets key %s: %s", tmp, strerror(errno));
        rc = LOOM_EIO;
    }
    if (fd >= 0) close(fd);
    if (rc == 0 && link(tmp, path) != 0 && errno != EEXIST) {
        snprintf(why, whylen, "cannot create the secrets key %s: %s", path, strerror(errno));
        rc = LOOM_EIO;
    }
    unlink(tmp);
    free(tmp);
    sodium_memzero(key, sizeof key);
    return rc;
}

int loom_secrets_open(const char *key_path, loom_secrets_t **out, char *why, size_t whylen)
{
    *out = NULL;
    if (sodium_init() < 0) {
        snprintf(why, whylen, "libsodium cannot be initialised");
        return LOOM_EINTERNAL;
    }
    struct stat st;
    if (lstat(key_path, &st) != 0 && errno == ENOENT) {
        int rc = create_key(key_path, why, whylen);
        if (rc) return rc;
    }
    int fd = open(key_path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        snprintf(why, whylen, "cannot open the secrets key %s: %s", key_path, strerror(errno));
        return LOOM_EIO;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        snprintf(why, whylen, "the secrets key %s is not a regular file", key_path);
        return LOOM_EINVAL;
    }
    if (st.st_mode & 0077) {
        close(fd);
        snprintf(why, whylen,
                 "the secrets key %s may be read by group or others (mode %03o): "
                 "chmod 600 it",
                 key_path, (unsigned)(st.st_mode & 0777));
        return LOOM_EINVAL;
    }
    loom_secrets_t *ks = loom_xcalloc(1, sizeof *ks);
    uint8_t extra;
    ssize_t n = read(fd, ks->key, sizeof ks->key);
    bool longer = n == (ssize_t)sizeof ks->key && read(fd, &extra, 1) == 1;
    close(fd);
    if (n != (ssize_t)sizeof ks->key || longer) {
        loom_secrets_destroy(&ks);
        snprintf(why, whylen, "the secrets key %s must hold exactly %d bytes", key_path,
                 LOOM_SECRETS_KEY_BYTES);
        return LOOM_EINVAL;
    }
    *out = ks;
    return 0;
}

void loom_secrets_destroy(loom_secrets_t **ks)
{
    if (!ks || !*ks) return;
    sodium_memzero((*ks)->key, sizeof(*ks)->key);
    free(*ks);
    *ks = NULL;
}

/* "loom-secret\0KIND\0NAME": a row's ciphertext opens only in its own row. */
static size_t additional_data(const char *kind, const char *name, char *out, size_t cap)
{
    int n = snprintf(out, cap, "loom-secret%c%s%c%s", 0, kind, 0, name);
    return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap;
}

void loom_secrets_seal(const loom_secrets_t *ks, const char *kind, const char *name,
                       const uint8_t *value, size_t len, uint8_t nonce[LOOM_SECRETS_NONCE_BYTES],
                       uint8_t **ct, size_t *ctlen)
{
    char ad[512];
    size_t adlen = additional_data(kind, name, ad, sizeof ad);
    randombytes_buf(nonce, LOOM_SECRETS_NONCE_BYTES);
    *ct = loom_xmalloc(len + crypto_aead_xchacha20poly1305_ietf_ABYTES);
    unsigned long long n = 0;
    crypto_aead_xchacha20poly1305_ietf_encrypt(*ct, &n, value, len, (const uint8_t *)ad, adlen,
                                               NULL, nonce, ks->key);
    *ctlen = (size_t)n;
}

int loom_secrets_unseal(const loom_secrets_t *ks, const char *kind, const char *name,
                        const uint8_t *nonce, size_t nonce_len, const uint8_t *ct, size_t ctlen,
                        uint8_t **value, size_t *len)
{
    *value = NULL;
    *len = 0;
    if (nonce_len != LOOM_SECRETS_NONCE_BYTES || ctlen < crypto_aead_xchacha20poly1305_ietf_ABYTES)
        return LOOM_EPARSE;
    char ad[512];
    size_t adlen = additional_data(kind, name, ad, sizeof ad);
    uint8_t *out = loom_xmalloc(ctlen - crypto_aead_xchacha20poly1305_ietf_ABYTES + 1);
    unsigned long long n = 0;
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(out, &n, NULL, ct, ctlen, (const uint8_t *)ad,
                                                   adlen, nonce, ks->key) != 0) {
        free(out);
        return LOOM_EPARSE;
    }
    out[n] = '\0';
    *value = out;
    *len = (size_t)n;
    return 0;
}

void loom_secret_free(uint8_t *value, size_t len)
{
    if (!value) return;
    sodium_memzero(value, len);
    free(value);
}

/* --- webhook signatures ----------------------------------------------------- */

/* "sha256=<64 hex>" to 32 bytes. */
static bool parse_sig(const char *h, uint8_t out[crypto_auth_hmacsha256_BYTES])
{
    static const char prefix[] = "sha256=";
    size_t used = 0;
    if (strncmp(h, prefix, sizeof prefix - 1) != 0) return false;
    h += sizeof prefix - 1;
    if (strlen(h) != 2 * crypto_auth_hmacsha256_BYTES) return false;
    return sodium_hex2bin(out, crypto_auth_hmacsha256_BYTES, h, strlen(h), NULL, &used, NULL) ==
               0 &&
           used == crypto_auth_hmacsha256_BYTES;
}

static bool hmac_matches(const uint8_t *key, size_t key_len, const char *prefix, const void *body,
                         size_t len, const uint8_t want[crypto_auth_hmacsha256_BYTES])
{
    crypto_auth_hmacsha256_state st;
    uint8_t mac[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256_init(&st, key, key_len);
    if (prefix) {
        crypto_auth_hmacsha256_update(&st, (const uint8_t *)prefix, strlen(prefix));
        crypto_auth_hmacsha256_update(&st, (const uint8_t *)".", 1);
    }
    crypto_auth_hmacsha256_update(&st, body, len);
    crypto_auth_hmacsha256_final(&st, mac);
    bool ok = sodium_memcmp(mac, want, sizeof mac) == 0;
    sodium_memzero(&st, sizeof st);
    return ok;
}

loom_sig_result loom_webhook_verify(const uint8_t *key, size_t key_len, const char *loom_sig,
                                    const char *loom_ts, const char *hub_sig, const void *body,
                                    size_t len, int64_t now_s, char *why, size_t whylen)
{
    uint8_t want[crypto_auth_hmacsha256_BYTES];
    if (!body) body = "";
    if (!loom_sig && !hub_sig) return LOOM_SIG_NONE;
    if (!key) {
        snprintf(why, whylen,
                 "the delivery is signed but this hook has no secret to check it "
                 "with (loom hooks secret set)");
        return LOOM_SIG_INVALID;
    }
    if (loom_sig) {
        if (!parse_sig(loom_sig, want)) {
            snprintf(why, whylen, "X-Loom-Signature must be sha256=<64 hex digits>");
            return LOOM_SIG_INVALID;
        }
        if (loom_ts) {
            int64_t ts;
            if (loom_parse_i64(loom_ts, 0, INT64_MAX / 2, &ts) != 0) {
                snprintf(why, whylen, "X-Loom-Timestamp must be unix seconds");
                return LOOM_SIG_INVALID;
            }
            if (ts < now_s - LOOM_WEBHOOK_MAX_SKEW_S || ts > now_s + LOOM_WEBHOOK_MAX_SKEW_S) {
                snprintf(why, whylen,
                         "X-Loom-Timestamp is more than %d seconds from loomd's clock: a stale "
                         "or replayed delivery",
                         LOOM_WEBHOOK_MAX_SKEW_S);
                return LOOM_SIG_INVALID;
            }
        }
        if (!hmac_matches(key, key_len, loom_ts, body, len, want)) {
            snprintf(why, whylen,
                     "X-Loom-Signature does not match: HMAC-SHA256 of %s with the "
                     "hook's secret expected",
                     loom_ts ? "\"<X-Loom-Timestamp>.<body>\"" : "the body");
            return LOOM_SIG_INVALID;
        }
    }
    if (hub_sig) {
        if (!parse_sig(hub_sig, want)) {
            snprintf(why, whylen, "X-Hub-Signature-256 must be sha256=<64 hex digits>");
            return LOOM_SIG_INVALID;
        }
        if (!hmac_matches(key, key_len, NULL, body, len, want)) {
            snprintf(why, whylen,
                     "X-Hub-Signature-256 does not match: HMAC-SHA256 of the body "
                     "with the hook's secret expected");
            return LOOM_SIG_INVALID;
        }
    }
    return LOOM_SIG_VALID;
}

bool loom_hook_name_valid(const char *hook)
{
    if (strcmp(hook, "alertmanager") == 0 || strcmp(hook, "s3") == 0 || strcmp(hook, "events") == 0)
        return true;
    return strncmp(hook, "events.", 7) == 0 && loom_name_valid(hook + 7);
}
