/* API tokens against a real SQLite file: creating and checking them, what
 * is stored, revocation, expiry, the once-a-minute use stamp, and the admin
 * token file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth.h"
#include "loom/err.h"
#include "loom/util.h"
#include "store_auth.h"

static char dir[64];
static char path[128];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/loom-auth-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/loom.db", dir);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char p[160];
    static const char *const files[] = {"loom.db", "loom.db-wal", "loom.db-shm", "admin.token",
                                        "other.token"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        unlink(p);
    }
    rmdir(dir);
    return 0;
}

static loom_store_t *open_store(void)
{
    loom_store_t *s = NULL;
    char why[256] = "";
    assert_int_equal(loom_store_open(path, LOOM_SYNC_NORMAL, &s, why, sizeof why), 0);
    return s;
}

static void test_create_and_check(void **state)
{
    (void)state;
    loom_store_t *s = open_store();
    char *tok = NULL;
    uint64_t id = 0, got_id = 0;
    api_role_t role = API_ROLE_NONE;
    assert_int_equal(loom_auth_token_create(s, API_ROLE_OPERATE, "ci", 0, &tok, &id), 0);
    assert_int_equal(strncmp(tok, "loom_", 5), 0);
    uint64_t now = loom_unix_ms();
    assert_int_equal(loom_auth_check(s, tok, now, &role, &got_id), LOOM_AUTH_OK);
    assert_int_equal(role, API_ROLE_OPERATE);
    assert_int_equal(got_id, id);

    /* Stored: the hash of the secret, not the token. */
    loom_token_row_t row;
    assert_int_equal(loom_store_token_get(s, id, &row), 0);
    const char *secret = strrchr(tok, '_') + 1;
    uint8_t want[32];
    crypto_generichash(want, sizeof want, (const unsigned char *)secret, strlen(secret), NULL, 0);
    assert_memory_equal(row.hash, want, 32);
    assert_string_equal(row.role, "operate");

    /* One wrong hex digit, a wrong id, bad shapes. */
    char *bad = loom_xstrdup(tok);
    bad[strlen(bad) - 1] = bad[strlen(bad) - 1] == '0' ? '1' : '0';
    assert_int_equal(loom_auth_check(s, bad, now, &role, &got_id), LOOM_AUTH_UNKNOWN);
    char *other = loom_xasprintf("loom_%llu_%s", (unsigned long long)id + 1, secret);
    assert_int_equal(loom_auth_check(s, other, now, &role, &got_id), LOOM_AUTH_UNKNOWN);
    static const char *const malformed[] = {"",         "loom_",         "loom_1_",   "loom__abc",
                                            "Bearer x", "loom_1_ABCDEF", "loom_0_00", "loom_x_00"};
    for (size_t i = 0; i < sizeof malformed / sizeof malformed[0]; i++)
        assert_int_equal(loom_auth_check(s, malformed[i], now, &role, &got_id),
                         LOOM_AUTH_MALFORMED);
    free(bad);
    free(other);

    /* Revoked: refused; revoking again is fine; an unknown id is not. */
    assert_int_equal(loom_store_token_revoke(s, id, "api", now), 0);
    assert_int_equal(loom_auth_check(s, tok, now, &role, &got_id), LOOM_AUTH_REVOKED);
    assert_int_equal(loom_store_token_revoke(s, id, "api", now + 5), 0);
    assert_int_equal(loom_store_token_revoke(s, id + 100, "api", now), LOOM_ENOTFOUND);
    assert_int_equal(loom_store_token_revoke(s, id, "join", now), LOOM_ENOTFOUND);
    free(tok);
    loom_store_destroy(&s);
}

static void test_expiry_and_use_stamp(void **state)
{
    (void)state;
    loom_store_t *s = open_store();
    uint64_t now = loom_unix_ms();
    char *tok = NULL;
    uint64_t id = 0, got_id;
    api_role_t role;
    assert_int_equal(loom_auth_token_create(s, API_ROLE_READ, "", now + 3600000, &tok, &id), 0);
    assert_int_equal(loom_auth_check(s, tok, now, &role, &got_id), LOOM_AUTH_OK);
    loom_token_row_t row;
    assert_int_equal(loom_store_token_get(s, id, &row), 0);
    assert_int_equal(row.used_ms, now);
    /* Within a minute: no write. After it: one. */
    assert_int_equal(loom_auth_check(s, tok, now + 30000, &role, &got_id), LOOM_AUTH_OK);
    assert_int_equal(loom_store_token_get(s, id, &row), 0);
    assert_int_equal(row.used_ms, now);
    assert_int_equal(loom_auth_check(s, tok, now + 61000, &role, &got_id), LOOM_AUTH_OK);
    assert_int_equal(loom_store_token_get(s, id, &row), 0);
    assert_int_equal(row.used_ms, now + 61000);
    /* Expired at its expiry, not a millisecond later. */
    assert_int_equal(loom_auth_check(s, tok, now + 3600000, &role, &got_id), LOOM_AUTH_EXPIRED);
    json_t *list = NULL;
    assert_int_equal(loom_store_tokens_json(s, "api", now + 3600000, &list), 0);
    json_t *t0 = json_array_get(json_object_get(list, "tokens"), 0);
    assert_string_equal(json_string_value(json_object_get(t0, "state")), "expired");
    assert_null(json_object_get(t0, "hash"));
    json_decref(list);
    free(tok);
    loom_store_destroy(&s);
}

static void test_bootstrap_file(void **state)
{
    (void)state;
    loom_store_t *s = open_store();
    char why[256] = "";
    assert_int_equal(loom_auth_bootstrap(s, dir, why, sizeof why), 0);
    char file[160];
    snprintf(file, sizeof file, "%s/admin.token", dir);
    struct stat st;
    assert_int_equal(stat(file, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(loom_read_file(file, 4096, &text, &len), 0);
    text[strcspn(text, "\n")] = '\0';
    uint64_t id;
    api_role_t role;
    assert_int_equal(loom_auth_check(s, text, loom_unix_ms(), &role, &id), LOOM_AUTH_OK);
    assert_int_equal(role, API_ROLE_ADMIN);
    /* A second start: nothing new, the file untouched. */
    assert_int_equal(loom_auth_bootstrap(s, dir, why, sizeof why), 0);
    uint64_t n = 0;
    assert_int_equal(loom_store_token_count(s, "api", &n), 0);
    assert_int_equal(n, 1);
    /* Never over an existing file. */
    assert_int_equal(loom_auth_write_token_file(file, "x"), LOOM_EEXISTS);
    assert_int_equal(loom_auth_new_admin_file(s, file, "again", why, sizeof why), LOOM_EEXISTS);
    assert_non_null(strstr(why, "already exists"));
    char *again = NULL;
    assert_int_equal(loom_read_file(file, 4096, &again, &len), 0);
    assert_int_equal(strncmp(again, text, strlen(text)), 0);
    free(again);
    free(text);
    loom_store_destroy(&s);
}

static void test_stale_token_file_is_not_trusted(void **state)
{
    (void)state;
    loom_store_t *s = open_store();
    char file[160], why[256] = "";
    snprintf(file, sizeof file, "%s/admin.token", dir);
    assert_int_equal(loom_auth_write_token_file(file, "loom_1_old"), 0);
    assert_int_equal(loom_auth_bootstrap(s, dir, why, sizeof why), LOOM_EEXISTS);
    assert_non_null(strstr(why, "earlier database"));
    uint64_t n = 1;
    assert_int_equal(loom_store_token_count(s, "api", &n), 0);
    assert_int_equal(n, 0);
    loom_store_destroy(&s);
}

int main(void)
{
    if (sodium_init() < 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_create_and_check, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expiry_and_use_stamp, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bootstrap_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_token_file_is_not_trusted, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
