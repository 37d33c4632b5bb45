/* A task's `secrets` key: the three entry forms, defaults, and the exact
 * file:line:col message for each mistake. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "dag_testutil.h"

static void test_secret_forms(void **state)
{
    (void)state;
    loom_dag_t *dag = parse_ok("pipeline: p\n"
                               "tasks:\n"
                               "  a:\n"
                               "    run: x\n"
                               "    secrets:\n"
                               "      - API_TOKEN\n"
                               "      - {name: DB, env: DATABASE_PASSWORD}\n"
                               "      - {name: KEY, file: creds/key.pem}\n"
                               "      - {name: KEY, file: other.pem, env: KEY_PATH}\n"
                               "  b: {run: x}\n");
    const loom_dag_task_t *a = &dag->tasks[0];
    assert_int_equal(a->n_secrets, 4);
    assert_string_equal(a->secrets[0].name, "API_TOKEN");
    assert_string_equal(a->secrets[0].env, "API_TOKEN");
    assert_null(a->secrets[0].file);
    assert_string_equal(a->secrets[1].env, "DATABASE_PASSWORD");
    assert_string_equal(a->secrets[2].file, "creds/key.pem");
    assert_null(a->secrets[2].env);
    assert_string_equal(a->secrets[3].env, "KEY_PATH");
    assert_int_equal(dag->tasks[1].n_secrets, 0);
    loom_dag_destroy(&dag);
}

static void test_secrets_from_defaults(void **state)
{
    (void)state;
    loom_dag_t *dag = parse_ok("pipeline: p\n"
                               "defaults: {secrets: [SHARED]}\n"
                               "tasks:\n"
                               "  a: {run: x}\n"
                               "  b: {run: x, secrets: [OWN]}\n");
    assert_int_equal(dag->tasks[0].n_secrets, 1);
    assert_string_equal(dag->tasks[0].secrets[0].name, "SHARED");
    /* A task's own list replaces the default one, as for other keys. */
    assert_int_equal(dag->tasks[1].n_secrets, 1);
    assert_string_equal(dag->tasks[1].secrets[0].name, "OWN");
    loom_dag_destroy(&dag);
}

static void test_secret_errors(void **state)
{
    (void)state;
    assert_errors("pipeline: p\n"
                  "tasks:\n"
                  "  a:\n"
                  "    run: x\n"
                  "    env: {TOKEN: plain}\n"
                  "    secrets:\n"
                  "      - 9LIVES\n"
                  "      - {name: A, file: ../up}\n"
                  "      - {name: B, file: /etc/passwd}\n"
                  "      - {name: C}\n"
                  "      - {env: X}\n"
                  "      - {name: D, evn: Y}\n"
                  "      - TOKEN\n"
                  "      - {name: E, env: LOOM_TASK}\n"
                  "      - {name: F, env: TOKEN2}\n"
                  "      - {name: G, env: TOKEN2}\n"
                  "  b: {run: x, secrets: TOKEN}\n",
                  "dag.yaml:7:7: error: variable \"TOKEN\" is set both by \"env\" and by "
                  "\"secrets\"\n"
                  "dag.yaml:7:7: error: secret variable \"LOOM_TASK\": names starting with LOOM_ "
                  "are loom's own\n"
                  "dag.yaml:7:9: error: invalid secret name \"9LIVES\": use letters, digits and "
                  "'_', not starting with a digit, at most 128 characters\n"
                  "dag.yaml:8:25: error: secret file \"../up\" must not go up with \"..\"\n"
                  "dag.yaml:9:25: error: secret file \"/etc/passwd\" must be relative to the "
                  "task's working folder, not absolute\n"
                  "dag.yaml:10:9: error: secret \"C\" needs \"env\" (a variable) or \"file\" (a "
                  "path)\n"
                  "dag.yaml:11:9: error: a \"secrets\" entry needs a \"name\"\n"
                  "dag.yaml:12:19: error: unknown key \"evn\" in a \"secrets\" entry; did you "
                  "mean \"env\"?\n"
                  "dag.yaml:16:9: error: secrets set variable \"TOKEN2\" twice\n"
                  "dag.yaml:17:24: error: \"secrets\" must be a list of secret names or {name, "
                  "env|file} mappings, got \"TOKEN\"\n");
}

static void test_secret_name_rule(void **state)
{
    (void)state;
    char longest[LOOM_SECRET_NAME_MAX + 2];
    memset(longest, 'A', sizeof longest);
    longest[LOOM_SECRET_NAME_MAX] = '\0';
    assert_true(loom_secret_name_valid(longest));
    longest[LOOM_SECRET_NAME_MAX] = 'A';
    longest[LOOM_SECRET_NAME_MAX + 1] = '\0';
    assert_false(loom_secret_name_valid(longest));
    assert_true(loom_secret_name_valid("_x9"));
    assert_false(loom_secret_name_valid(""));
    assert_false(loom_secret_name_valid("a-b"));
    assert_false(loom_secret_name_valid("a.b"));
    assert_false(loom_secret_name_valid("A=B"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_secret_forms),
        cmocka_unit_test(test_secrets_from_defaults),
        cmocka_unit_test(test_secret_errors),
        cmocka_unit_test(test_secret_name_rule),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
