/* CURVE key files and join tokens; see curve.h. */
#include "loom/curve.h"
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
#include <zmq.h>

#define SECRET_BYTES 32

bool loom_curve_key_valid(const char *z85)
{
    uint8_t raw[32];
    if (!z85 || strlen(z85) != LOOM_CURVE_KEY_LEN) return false;
    return zmq_z85_decode(raw, z85) != NULL;
}

int loom_curve_key_read(const char *path, loom_curve_key_t key, char *why, size_t whylen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        if (errno == ENOENT) return LOOM_ENOTFOUND;
        snprintf(why, whylen, "cannot read %s: %s", path, strerror(errno));
        return LOOM_EIO;
    }
    char line[128] = "";
    bool got = fgets(line, sizeof line, f) != NULL;
    fclose(f);
    line[strcspn(line, "\r\n")] = '\0';
    if (!got || !loom_curve_key_valid(line)) {
        snprintf(why, whylen, "%s: not a 40-character Z85 CURVE key", path);
        return LOOM_EPARSE;
    }
    memcpy(key, line, LOOM_CURVE_KEY_LEN + 1);
    return 0;
}

static int write_atomic(const char *path, const char *text, mode_t mode, char *why, size_t whylen)
{
    char *tmp = loom_xasprintf("%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    int rc = 0;
    if (fd < 0) {
        snprintf(why, whylen, "cannot create %s: %s", tmp, strerror(errno));
        free(tmp);
        return LOOM_EIO;
    }
    size_t len = strlen(text);
    if (fchmod(fd, mode) != 0 || write(fd, text, len) != (ssize_t)len || fsync(fd) != 0) {
        snprintf(why, whylen, "cannot write %s: %s", tmp, strerror(errno));
        rc = LOOM_EIO;
    }
    close(fd);
    if (rc == 0 && rename(tmp, path) != 0) {
        snprintf(why, whylen, "cannot rename %s: %s", tmp, strerror(errno));
        rc = LOOM_EIO;
    }
    if (rc) unlink(tmp);
    free(tmp);
    return rc;
}

int loom_curve_key_write(const char *path, const char *key, char *why, size_t whylen)
{
    char *text = loom_xasprintf("%s\n", key);
    int rc = write_atomic(path, text, 0644, why, whylen);
    free(text);
    return rc;
}

int loom_curve_keypair_load(const char *dir, const char *name, loom_curve_key_t pub,
                            loom_curve_key_t sec, char *why, size_t whylen)
{
    if (loom_mkdirs(dir, 0700) != 0) {
        snprintf(why, whylen, "cannot create %s: %s", dir, strerror(errno));
        return LOOM_EIO;
    }
    char *secpath = loom_xasprintf("%s/%s.key", dir, name);
    char *pubpath = loom_xasprintf("%s/%s.pub", dir, name);
    struct stat st;
    int rc;
    if (stat(secpath, &st) == 0) {
        if (st.st_mode & 077) {
            snprintf(why, whylen, "%s is readable by others (mode %03o): chmod 600 it", secpath,
                     (unsigned)(st.st_mode & 0777));
            rc = LOOM_EINVAL;
        } else {
            rc = loom_curve_key_read(secpath, sec, why, whylen);
        }
        if (rc == 0 && zmq_curve_public(pub, sec) != 0) {
            snprintf(why, whylen, "%s: cannot derive the public key", secpath);
            rc = LOOM_EPARSE;
        }
        /* The .pub file is a convenience copy; keep it in step. */
        loom_curve_key_t onfile;
        char ignore[64];
        if (rc == 0 && (loom_curve_key_read(pubpath, onfile, ignore, sizeof ignore) != 0 ||
                        strcmp(onfile, pub) != 0))
            rc = loom_curve_key_write(pubpath, pub, why, whylen);
    } else if (errno == ENOENT) {
        if (zmq_curve_keypair(pub, sec) != 0) {
            snprintf(why, whylen, "cannot make a CURVE key pair: %s", zmq_strerror(errno));
            rc = LOOM_EINVAL;
        } else {
            char *text = loom_xasprintf("%s\n", sec);
            rc = write_atomic(secpath, text, 0600, why, whylen);
            sodium_memzero(text, strlen(text));
            free(text);
            if (rc == 0) rc = loom_curve_key_write(pubpath, pub, why, whylen);
        }
    } else {
        snprintf(why, whylen, "cannot read %s: %s", secpath, strerror(errno));
        rc = LOOM_EIO;
    }
    free(secpath);
    free(pubpath);
    return rc;
}

int loom_join_token_parse(const char *token, loom_curve_key_t server_key, const char **secret,
                          char *why, size_t whylen)
{
    size_t plen = strlen(LOOM_JOIN_TOKEN_PREFIX);
    if (!token || strncmp(token, LOOM_JOIN_TOKEN_PREFIX, plen) != 0) {
        snprintf(why, whylen, "join token must start with \"%s\"", LOOM_JOIN_TOKEN_PREFIX);
        return LOOM_EPARSE;
    }
    const char *key = token + plen;
    /* Z85 has '.' in its alphabet: the key is found by its length. */
    const char *dot = strlen(key) > LOOM_CURVE_KEY_LEN ? key + LOOM_CURVE_KEY_LEN : NULL;
    if (!dot || *dot != '.') {
        snprintf(why, whylen, "join token: the server key must be 40 characters after \"%s\"",
                 LOOM_JOIN_TOKEN_PREFIX);
        return LOOM_EPARSE;
    }
    memcpy(server_key, key, LOOM_CURVE_KEY_LEN);
    server_key[LOOM_CURVE_KEY_LEN] = '\0';
    if (!loom_curve_key_valid(server_key)) {
        snprintf(why, whylen, "join token: the server key is not valid Z85");
        return LOOM_EPARSE;
    }
    const char *sec = dot + 1;
    size_t n = strlen(sec);
    if (n < 16 || n > 128 ||
        strspn(sec, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                    "0123456789-_") != n) {
        snprintf(why, whylen, "join token: the secret part is malformed");
        return LOOM_EPARSE;
    }
    *secret = sec;
    return 0;
}

void loom_join_secret_hash(const char *secret, unsigned char out[32])
{
    crypto_generichash(out, 32, (const unsigned char *)secret, strlen(secret), NULL, 0);
}

char *loom_join_token_new(const char *server_key, unsigned char hash[32])
{
    unsigned char raw[SECRET_BYTES];
    char secret[sodium_base64_ENCODED_LEN(SECRET_BYTES, sodium_base64_VARIANT_URLSAFE_NO_PADDING)];
    randombytes_buf(raw, sizeof raw);
    sodium_bin2base64(secret, sizeof secret, raw, sizeof raw,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(raw, sizeof raw);
    loom_join_secret_hash(secret, hash);
    char *token = loom_xasprintf("%s%s.%s", LOOM_JOIN_TOKEN_PREFIX, server_key, secret);
    sodium_memzero(secret, sizeof secret);
    return token;
}
