/* CURVE key pairs kept in files, and the join token format. Shared by loomd
 * (its server key pair), loom-agent (its own key pair, the pinned server
 * key) and the CLI. Keys are Z85 text: 40 characters, NUL-terminated. */
#ifndef LOOM_CURVE_H
#define LOOM_CURVE_H

#include <stdbool.h>
#include <stddef.h>

#define LOOM_CURVE_KEY_LEN 40
#define LOOM_JOIN_TOKEN_PREFIX "loomjoin1."

typedef char loom_curve_key_t[LOOM_CURVE_KEY_LEN + 1];

/* True for 40 characters of the Z85 alphabet that decode to 32 bytes. */
bool loom_curve_key_valid(const char *z85);

/* Loads DIR/NAME.key (secret) and DIR/NAME.pub, or creates both on first
 * use: DIR mode 0700, the secret key file 0600, written to a temporary file
 * and renamed into place so a crash never leaves half a key. A secret key
 * file readable by group or others is refused. why names the file. */
int loom_curve_keypair_load(const char *dir, const char *name, loom_curve_key_t pub,
                            loom_curve_key_t sec, char *why, size_t whylen);

/* Reads one Z85 key (first line) from path; LOOM_ENOTFOUND if absent. */
int loom_curve_key_read(const char *path, loom_curve_key_t key, char *why, size_t whylen);
/* Writes one key atomically (mode 0644: public keys only). */
int loom_curve_key_write(const char *path, const char *key, char *why, size_t whylen);

/* Join tokens: "loomjoin1.<40-char Z85 server key>.<43-char base64url
 * secret>". Parsing checks the shape only; loomd checks the secret. */
int loom_join_token_parse(const char *token, loom_curve_key_t server_key, const char **secret,
                          char *why, size_t whylen);
/* BLAKE2b-256 of the secret part, as stored in the tokens table. */
void loom_join_secret_hash(const char *secret, unsigned char out[32]);
/* A new token for server_key: the text (caller frees) and its hash. */
char *loom_join_token_new(const char *server_key, unsigned char hash[32]);

#endif
