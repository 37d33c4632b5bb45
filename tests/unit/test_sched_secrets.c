/* Secrets at rest and webhook signatures (scheduler/secrets.c): the key
 * file's rules, sealing bound to the row, and HMAC verification against
 * GitHub's published test vector. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "secrets.h"

#include "loom/err.h"
#include "loom/util.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char *tmpdir(void)
{
    char tmpl[] = "/tmp/loom-secrets-XXXXXX";
    assert_non_null(mkdtemp(tmpl));
    return loom_xstrdup(tmpl);
}

static void rmdir_all(const char *dir, const char *file)
{
    char *p = loom_xasprintf("%s/%s", dir, file);
    unlink(p);
    free(p);
    rmdir(dir);
}

static void test_key_created_private_and_reused(void **state)
{
    (void)state;
    char *dir = tmpdir(), *key = loom_xasprintf("%s/secrets.key", dir), why[256];
    loom_secrets_t *ks = NULL, *again = NULL;
    assert_int_equal(loom_secrets_open(key, &ks, why, sizeof why), 0);
    struct stat st;
    assert_int_equal(stat(key, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(st.st_size, LOOM_SECRETS_KEY_BYTES);

    uint8_t nonce[LOOM_SECRETS_NONCE_BYTES], *ct, *out;
    size_t ctlen, len;
    const char *value = "hunter2-but-longer";
    loom_secrets_seal(ks, "task", "DB", (const uint8_t *)value, strlen(value), nonce, &ct, &ctlen);
    assert_null(memmem(ct, ctlen, value, strlen(value)));
    /* The same file opened again opens what the first sealed. */
    assert_int_equal(loom_secrets_open(key, &again, why, sizeof why), 0);
    assert_int_equal(
        loom_secrets_unseal(again, "task", "DB", nonce, sizeof nonce, ct, ctlen, &out, &len), 0);
    assert_int_equal(len, strlen(value));
    assert_memory_equal(out, value, len);
    loom_secret_free(out, len);
    /* Another row's name or kind, or a flipped bit: refused. */
    assert_int_equal(
        loom_secrets_unseal(ks, "task", "DB2", nonce, sizeof nonce, ct, ctlen, &out, &len),
        LOOM_EPARSE);
    assert_int_equal(
        loom_secrets_unseal(ks, "webhook", "DB", nonce, sizeof nonce, ct, ctlen, &out, &len),
        LOOM_EPARSE);
    ct[0] ^= 1;
    assert_int_equal(
        loom_secrets_unseal(ks, "task", "DB", nonce, sizeof nonce, ct, ctlen, &out, &len),
        LOOM_EPARSE);
    assert_null(out);
    free(ct);
    loom_secrets_destroy(&ks);
    loom_secrets_destroy(&again);
    assert_null(ks);
    rmdir_all(dir, "secrets.key");
    free(key);
    free(dir);
}

static void test_key_file_problems(void **state)
{
    (void)state;
    char *dir = tmpdir(), *key = loom_xasprintf("%s/secrets.key", dir), why[256];
    loom_secrets_t *ks = NULL;
    FILE *f = fopen(key, "w");
    fputs("short", f);
    fclose(f);
    chmod(key, 0600);
    assert_int_equal(loom_secrets_open(key, &ks, why, sizeof why), LOOM_EINVAL);
    assert_non_null(strstr(why, "exactly 32 bytes"));
    assert_null(ks);
    f = fopen(key, "w");
    for (int i = 0; i < 32; i++) fputc('k', f);
    fclose(f);
    chmod(key, 0644);
    assert_int_equal(loom_secrets_open(key, &ks, why, sizeof why), LOOM_EINVAL);
    assert_non_null(strstr(why, "chmod 600"));
    chmod(key, 0600);
    assert_int_equal(loom_secrets_open(key, &ks, why, sizeof why), 0);
    loom_secrets_destroy(&ks);
    /* A symbolic link is not followed. */
    char *link = loom_xasprintf("%s/link.key", dir);
    assert_int_equal(symlink(key, link), 0);
    assert_int_not_equal(loom_secrets_open(link, &ks, why, sizeof why), 0);
    unlink(link);
    free(link);
    rmdir_all(dir, "secrets.key");
    free(key);
    free(dir);
}

static const char GH_SECRET[] = "It's a Secret to Everybody";
static const char GH_BODY[] = "Hello, World!";
static const char GH_SIG[] =
    "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

static loom_sig_result verify(const char *key, const char *sig, const char *ts, const char *hub,
                              const char *body, int64_t now, char *why)
{
    return loom_webhook_verify((const uint8_t *)key, key ? strlen(key) : 0, sig, ts, hub, body,
                               strlen(body), now, why, 256);
}

static void test_github_vector(void **state)
{
    (void)state;
    char why[256] = "";
    /* GitHub's header, and ours, over the body alone. */
    assert_int_equal(verify(GH_SECRET, NULL, NULL, GH_SIG, GH_BODY, 0, why), LOOM_SIG_VALID);
    assert_int_equal(verify(GH_SECRET, GH_SIG, NULL, NULL, GH_BODY, 0, why), LOOM_SIG_VALID);
    assert_int_equal(verify(GH_SECRET, GH_SIG, NULL, GH_SIG, GH_BODY, 0, why), LOOM_SIG_VALID);
    assert_int_equal(verify("It's a Secret to Everybody!", NULL, NULL, GH_SIG, GH_BODY, 0, why),
                     LOOM_SIG_INVALID);
    assert_non_null(strstr(why, "X-Hub-Signature-256 does not match"));
    assert_int_equal(verify(GH_SECRET, NULL, NULL, GH_SIG, "Hello, World?", 0, why),
                     LOOM_SIG_INVALID);
    /* One good header does not excuse a bad one. */
    assert_int_equal(verify(GH_SECRET, "sha256=00", NULL, GH_SIG, GH_BODY, 0, why),
                     LOOM_SIG_INVALID);
    assert_non_null(strstr(why, "64 hex digits"));
    assert_int_equal(verify(GH_SECRET, NULL, NULL, NULL, GH_BODY, 0, why), LOOM_SIG_NONE);
    assert_int_equal(verify(NULL, NULL, NULL, GH_SIG, GH_BODY, 0, why), LOOM_SIG_INVALID);
    assert_non_null(strstr(why, "no secret"));
    assert_int_equal(verify(GH_SECRET, "md5=abc", NULL, NULL, GH_BODY, 0, why), LOOM_SIG_INVALID);
}

static void sign_ts(const char *key, const char *ts, const char *body, char *out)
{
    crypto_auth_hmacsha256_state st;
    uint8_t mac[32];
    crypto_auth_hmacsha256_init(&st, (const uint8_t *)key, strlen(key));
    crypto_auth_hmacsha256_update(&st, (const uint8_t *)ts, strlen(ts));
    crypto_auth_hmacsha256_update(&st, (const uint8_t *)".", 1);
    crypto_auth_hmacsha256_update(&st, (const uint8_t *)body, strlen(body));
    crypto_auth_hmacsha256_final(&st, mac);
    memcpy(out, "sha256=", 7);
    sodium_bin2hex(out + 7, 65, mac, sizeof mac);
}

static void test_timestamped_signatures(void **state)
{
    (void)state;
    char why[256] = "", sig[80];
    const int64_t now = 1790000000;
    sign_ts("k3y", "1790000000", "{}", sig);
    assert_int_equal(verify("k3y", sig, "1790000000", NULL, "{}", now, why), LOOM_SIG_VALID);
    /* Within five minutes either way. */
    assert_int_equal(verify("k3y", sig, "1790000000", NULL, "{}", now + 300, why), LOOM_SIG_VALID);
    assert_int_equal(verify("k3y", sig, "1790000000", NULL, "{}", now - 300, why), LOOM_SIG_VALID);
    assert_int_equal(verify("k3y", sig, "1790000000", NULL, "{}", now + 301, why),
                     LOOM_SIG_INVALID);
    assert_non_null(strstr(why, "more than 300 seconds"));
    /* The timestamp is signed: another one does not verify. */
    char sig2[80];
    sign_ts("k3y", "1790000000", "{}", sig2);
    assert_int_equal(verify("k3y", sig2, "1790000001", NULL, "{}", now, why), LOOM_SIG_INVALID);
    assert_int_equal(verify("k3y", sig, "soon", NULL, "{}", now, why), LOOM_SIG_INVALID);
    assert_non_null(strstr(why, "unix seconds"));
    /* Signed over the body alone but sent with a timestamp: refused. */
    assert_int_equal(verify(GH_SECRET, GH_SIG, "1790000000", NULL, GH_BODY, now, why),
                     LOOM_SIG_INVALID);
}

static void test_hook_names(void **state)
{
    (void)state;
    assert_true(loom_hook_name_valid("alertmanager"));
    assert_true(loom_hook_name_valid("s3"));
    assert_true(loom_hook_name_valid("events"));
    assert_true(loom_hook_name_valid("events.model-drift"));
    assert_false(loom_hook_name_valid("events."));
    assert_false(loom_hook_name_valid("github"));
    assert_false(loom_hook_name_valid("events.a/b"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_created_private_and_reused),
        cmocka_unit_test(test_key_file_problems),
        cmocka_unit_test(test_github_vector),
        cmocka_unit_test(test_timestamped_signatures),
        cmocka_unit_test(test_hook_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
