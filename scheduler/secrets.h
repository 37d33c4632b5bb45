/* Secrets at rest: a 32-byte key kept in its own file (never in loom.db),
 * values sealed with XChaCha20-Poly1305 whose additional data binds each
 * ciphertext to its row (kind and name), and the HMAC check of signed
 * webhook deliveries. Pure functions over bytes: the store keeps the rows,
 * the scheduler and the API decide who may see what. */
#ifndef LOOM_SCHED_SECRETS_H
#define LOOM_SCHED_SECRETS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LOOM_SECRETS_KEY_BYTES 32
#define LOOM_SECRETS_NONCE_BYTES 24
/* A signed delivery's X-Loom-Timestamp may be this far from loomd's clock. */
#define LOOM_WEBHOOK_MAX_SKEW_S 300

typedef struct loom_secrets loom_secrets_t;

/* Reads the key file, creating it first (32 random bytes, mode 0600,
 * atomically) when it does not exist. Refuses a key file that group or
 * others may read, or that is not exactly 32 bytes. */
int loom_secrets_open(const char *key_path, loom_secrets_t **out, char *why, size_t whylen);
void loom_secrets_destroy(loom_secrets_t **ks);

/* Seals value for the row (kind, name): *ct (caller frees) is len + 16 bytes. */
void loom_secrets_seal(const loom_secrets_t *ks, const char *kind, const char *name,
                       const uint8_t *value, size_t len, uint8_t nonce[LOOM_SECRETS_NONCE_BYTES],
                       uint8_t **ct, size_t *ctlen);
/* Opens a sealed row; LOOM_EPARSE when it does not authenticate (another
 * key, or a row altered or moved). *value is NUL-terminated; release it
 * with loom_secret_free. */
int loom_secrets_unseal(const loom_secrets_t *ks, const char *kind, const char *name,
                        const uint8_t *nonce, size_t nonce_len, const uint8_t *ct, size_t ctlen,
                        uint8_t **value, size_t *len);
/* Wipes and frees a plaintext value (NULL is fine). */
void loom_secret_free(uint8_t *value, size_t len);

typedef enum {
    LOOM_SIG_NONE,    /* no signature header */
    LOOM_SIG_VALID,   /* every signature header present verifies */
    LOOM_SIG_INVALID, /* a header is present and does not verify (why says which) */
} loom_sig_result;

/* Checks a webhook delivery's signatures with the hook's key (key NULL: the
 * hook has none, so a signature cannot verify).
 *   loom_sig  X-Loom-Signature: sha256=<hex HMAC-SHA256>, of the body, or of
 *             "<loom_ts>.<body>" when loom_ts (X-Loom-Timestamp, unix
 *             seconds) is given, which must then be within
 *             LOOM_WEBHOOK_MAX_SKEW_S of now_s;
 *   hub_sig   X-Hub-Signature-256: sha256=<hex> (GitHub's), of the body.
 * Headers may be NULL. Digests are compared in constant time. */
loom_sig_result loom_webhook_verify(const uint8_t *key, size_t key_len, const char *loom_sig,
                                    const char *loom_ts, const char *hub_sig, const void *body,
                                    size_t len, int64_t now_s, char *why, size_t whylen);

/* Hook names that may have a secret: alertmanager, s3, events, events.NAME. */
bool loom_hook_name_valid(const char *hook);

#endif
