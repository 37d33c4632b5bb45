/* The DAG parser as users meet it, for the minimal format: what a valid
 * file becomes, its task order, and the exact file:line:col message for each
 * kind of mistake. The full format is in test_dag_format.c, templates in
 * test_dag_tmpl.c, hostile input in test_dag_hostile.c. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "dag_testutil.h"

#include <dirent.h>
#include <sys/stat.h>

static size_t position_in_order(const loom_dag_t *dag, size_t task)
{
    for (size_t i = 0; i < dag->n_tasks; i++)
        if (dag->order[i] == task) return i;
    fail_msg("task %zu is not in the order", task);
    return 0;
}

static void test_diamond_fields(void **state)
{
    (void)state;
    loom_dag_t *dag = parse_ok(dag_diamond());
    assert_string_equal(dag->name, "diamond");
    assert_string_equal(dag->description, "A diamond");
    assert_int_equal(dag->n_env, 1);
    assert_string_equal(dag->env[0].name, "REGION");
    assert_string_equal(dag->env[0].value, "eu-west");
    assert_int_equal(dag->n_tasks, 4);

    const loom_dag_task_t *train = &dag->tasks[0];
    assert_string_equal(train->name, "train");
    assert_int_equal(train->line, 6);
    assert_int_equal(train->col, 3);
    assert_null(train->shell);
    assert_int_equal(train->argc, 4);
    assert_string_equal(train->argv[0], "python3");
    assert_string_equal(train->argv[3], "3");
    assert_null(train->argv[4]);
    assert_int_equal(train->n_needs, 2);
    assert_string_equal(train->needs[0], "clean");
    assert_int_equal(train->needs_idx[0], 2);
    assert_string_equal(train->needs[1], "stats");
    assert_int_equal(train->needs_idx[1], 3);
    assert_int_equal(train->n_env, 2);
    assert_string_equal(train->env[0].name, "EPOCHS");
    assert_string_equal(train->env[0].value, "3");
    assert_string_equal(train->env[1].name, "DEBUG");
    assert_string_equal(train->env[1].value, ""); /* null is the empty string */
    assert_int_equal(train->timeout_ms, 600000);
    assert_int_equal(train->retries, 2);

    const loom_dag_task_t *extract = &dag->tasks[1];
    assert_string_equal(extract->shell, "echo extract");
    assert_null(extract->argv);
    assert_int_equal(extract->n_needs, 0);
    assert_int_equal(extract->timeout_ms, 0);
    assert_int_equal(extract->retries, 0);
    assert_int_equal(extract->line, 14);
    assert_string_equal(dag->tasks[3].shell, "echo stats\nwc -l data.csv\n");

    assert_int_equal(loom_dag_find(dag, "stats"), 3);
    assert_int_equal(loom_dag_find(dag, "nope"), -1);
    loom_dag_destroy(&dag);
    assert_null(dag);
    loom_dag_destroy(&dag); /* NULL is fine */
}

static void test_order_respects_needs_and_is_stable(void **state)
{
    (void)state;
    loom_dag_t *dag = parse_ok(dag_diamond());
    for (size_t i = 0; i < dag->n_tasks; i++)
        for (size_t k = 0; k < dag->tasks[i].n_needs; k++)
            assert_true(position_in_order(dag, dag->tasks[i].needs_idx[k]) <
                        position_in_order(dag, i));
    /* extract, then clean and stats in file order, then train */
    size_t want[] = {1, 2, 3, 0};
    for (size_t i = 0; i < 4; i++) assert_int_equal(dag->order[i], want[i]);
    loom_dag_destroy(&dag);

    /* With no needs at all, the order is the file's. */
    dag = parse_ok("pipeline: p\ntasks: {z: {run: a}, y: {run: b}, x: {run: c}}\n");
    for (size_t i = 0; i < 3; i++) assert_int_equal(dag->order[i], i);
    loom_dag_destroy(&dag);
}

/* The order is exactly "the lowest-numbered task whose needs are all done",
 * checked against that rule written the slow way, on a random DAG of 300
 * tasks whose needs point both up and down the file. */
static void test_order_is_lowest_ready_first(void **state)
{
    (void)state;
    enum { N = 300 };
    size_t rank[N]; /* needs go to higher ranks only, so there is no cycle */
    for (size_t i = 0; i < N; i++) rank[i] = i;
    uint64_t seed = 42;
    for (size_t i = N - 1; i > 0; i--) {
        size_t j = next_random(&seed) % (i + 1), tmp = rank[i];
        rank[i] = rank[j];
        rank[j] = tmp;
    }
    static bool need[N][N];
    memset(need, 0, sizeof need);
    loom_buf_t src = {0};
    loom_buf_puts(&src, "pipeline: random\ntasks:\n");
    for (size_t i = 0; i < N; i++) {
        loom_buf_printf(&src, "  t%zu:\n    run: x\n    needs: [", i);
        const char *sep = "";
        for (size_t j = 0; j < N; j++) {
            if (rank[j] <= rank[i] || next_random(&seed) % 40 != 0) continue;
            need[i][j] = true;
            loom_buf_printf(&src, "%st%zu", sep, j);
            sep = ", ";
        }
        loom_buf_puts(&src, "]\n");
    }
    loom_dag_t *dag = parse_ok(src.data);
    bool done[N] = {0};
    for (size_t k = 0; k < N; k++) {
        size_t pick = 0;
        for (bool ready = false; !ready; pick++) {
            ready = !done[pick];
            for (size_t j = 0; j < N && ready; j++) ready = !need[pick][j] || done[j];
        }
        pick--;
        assert_int_equal(dag->order[k], pick);
        done[pick] = true;
    }
    loom_dag_destroy(&dag);
    loom_buf_free(&src);
}

static void test_needs_as_one_string_and_forward_reference(void **state)
{
    (void)state;
    loom_dag_t *dag = parse_ok("pipeline: p\n"
                               "tasks:\n"
                               "  late:\n"
                               "    run: echo late\n"
                               "    needs: early\n"
                               "  early:\n"
                               "    run: echo early\n"
                               "    needs: []\n");
    assert_int_equal(dag->tasks[0].n_needs, 1);
    assert_string_equal(dag->tasks[0].needs[0], "early");
    assert_int_equal(dag->tasks[0].needs_idx[0], 1);
    assert_int_equal(dag->order[0], 1);
    assert_int_equal(dag->order[1], 0);
    loom_dag_destroy(&dag);
}

static void test_quoted_and_typed_scalars(void **state)
{
    (void)state;
    /* Numbers and words are text where text is expected; a quoted "3" is a
     * fine retry count; null-valued optional keys mean "not set". */
    loom_dag_t *dag = parse_ok("pipeline: p\n"
                               "description:\n"
                               "tasks:\n"
                               "  a:\n"
                               "    run: 42\n"
                               "    retries: \"3\"\n"
                               "    timeout: ~\n"
                               "    needs:\n"
                               "    env: {FLAG: yes, RATE: 0.5}\n");
    assert_null(dag->description);
    assert_string_equal(dag->tasks[0].shell, "42");
    assert_int_equal(dag->tasks[0].retries, 3);
    assert_int_equal(dag->tasks[0].timeout_ms, 0);
    assert_int_equal(dag->tasks[0].n_needs, 0);
    assert_string_equal(dag->tasks[0].env[0].value, "yes");
    assert_string_equal(dag->tasks[0].env[1].value, "0.5");
    loom_dag_destroy(&dag);
}

static void test_quickstart_example(void **state)
{
    (void)state;
    const char *dir = getenv("LOOM_SOURCE_DIR");
    assert_non_null(dir);
    char *path = loom_xasprintf("%s/dag-examples/quickstart.yaml", dir);
    char *src = NULL;
    size_t len = 0;
    assert_int_equal(loom_read_file(path, LOOM_DAG_MAX_BYTES, &src, &len), 0);
    loom_diags_t d = {0};
    loom_dag_t *dag = NULL;
    int rc = loom_dag_parse(src, len, path, &dag, &d);
    if (rc != 0) {
        char *text = loom_diags_format(&d);
        print_error("%s", text);
        free(text);
    }
    assert_int_equal(rc, 0);
    assert_string_equal(dag->name, "quickstart");
    assert_true(dag->n_tasks >= 4 && dag->n_tasks <= 5);
    bool shell = false, argv = false, needs = false, env = false;
    for (size_t i = 0; i < dag->n_tasks; i++) {
        shell |= dag->tasks[i].shell != NULL;
        argv |= dag->tasks[i].argv != NULL;
        needs |= dag->tasks[i].n_needs > 1; /* the diamond joins */
        env |= dag->tasks[i].n_env > 0;
    }
    assert_true(shell && argv && needs && env);
    loom_dag_destroy(&dag);
    loom_diags_free(&d);
    free(src);
    free(path);
}

/* What the examples show between them: every major key is used somewhere. */
typedef struct {
    int files, params, foreach, cond, metrics, triggers, concurrency, argv;
} example_stats;

static void count_features(const loom_dag_t *dag, example_stats *st)
{
    st->files++;
    st->params += dag->n_params > 0;
    st->triggers += dag->triggers_json != NULL;
    st->concurrency += dag->concurrency_json != NULL;
    for (size_t i = 0; i < dag->n_tasks; i++) {
        const loom_dag_task_t *t = &dag->tasks[i];
        st->foreach += t->foreach != NULL || t->foreach_json != NULL;
        st->cond += t->cond != NULL;
        st->metrics += t->metrics != NULL;
        st->argv += t->argv != NULL;
    }
}

static void check_example(const char *path, example_stats *st)
{
    char *src = NULL;
    size_t len = 0;
    assert_int_equal(loom_read_file(path, LOOM_DAG_MAX_BYTES, &src, &len), 0);
    loom_diags_t diags = {0};
    loom_dag_t *dag = NULL;
    if (loom_dag_parse(src, len, path, &dag, &diags) != 0) {
        char *text = loom_diags_format(&diags);
        fail_msg("%s", text);
    }
    count_features(dag, st);
    loom_dag_destroy(&dag);
    free(src);
}

/* Every .yaml/.yml under dir, sub-folders included. */
static void walk_examples(const char *dir, int depth, example_stats *st)
{
    assert_true(depth < 8);
    DIR *d = opendir(dir);
    assert_non_null(d);
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        char *path = loom_xasprintf("%s/%s", dir, e->d_name);
        struct stat sb;
        assert_int_equal(stat(path, &sb), 0);
        size_t n = strlen(e->d_name);
        if (S_ISDIR(sb.st_mode))
            walk_examples(path, depth + 1, st);
        else if ((n > 5 && strcmp(e->d_name + n - 5, ".yaml") == 0) ||
                 (n > 4 && strcmp(e->d_name + n - 4, ".yml") == 0))
            check_example(path, st);
        free(path);
    }
    closedir(d);
}

/* STYLE.md: every file in dag-examples/ is validated by a test. */
static void test_every_example_parses(void **state)
{
    (void)state;
    const char *root = getenv("LOOM_SOURCE_DIR");
    assert_non_null(root);
    char *dir = loom_xasprintf("%s/dag-examples", root);
    example_stats st = {0};
    walk_examples(dir, 0, &st);
    free(dir);
    assert_true(st.files >= 6);
    assert_true(st.params > 0 && st.foreach > 0 && st.cond > 0 && st.metrics > 0);
    assert_true(st.triggers >= 2 && st.concurrency > 0 && st.argv > 0);
}

static void test_unknown_keys_suggest(void **state)
{
    (void)state;
    assert_errors("pipeline: p\n"
                  "taks: {}\n"
                  "tasks:\n"
                  "  a:\n"
                  "    run: x\n"
                  "    nedds: [b]\n"
                  "    colour: red\n"
                  "  b:\n"
                  "    rnu: echo b\n"
                  "    tiemuot: 5s\n",
                  "dag.yaml:2:1: error: unknown key \"taks\"; did you mean \"tasks\"?\n"
                  "dag.yaml:6:5: error: unknown key \"nedds\" in task \"a\"; did you mean "
                  "\"needs\"?\n"
                  "dag.yaml:7:5: error: unknown key \"colour\" in task \"a\"\n"
                  "dag.yaml:8:3: error: task \"b\" has no \"run\"\n"
                  "dag.yaml:9:5: error: unknown key \"rnu\" in task \"b\"; did you mean "
                  "\"run\"?\n"
                  "dag.yaml:10:5: error: unknown key \"tiemuot\" in task \"b\"; did you mean "
                  "\"timeout\"?\n");
}

static void test_unknown_and_self_needs(void **state)
{
    (void)state;
    assert_errors("pipeline: p\n"
                  "tasks:\n"
                  "  extract:\n"
                  "    run: x\n"
                  "  train:\n"
                  "    run: x\n"
                  "    needs: [extrct, train, prep, extract, extract]\n",
                  "dag.yaml:7:13: error: task \"train\" needs unknown task \"extrct\"; did you "
                  "mean \"extract\"?\n"
                  "dag.yaml:7:21: error: task \"train\" needs itself\n"
                  "dag.yaml:7:28: error: task \"train\" needs unknown task \"prep\"\n"
                  "dag.yaml:7:43: error: task \"train\" lists \"extract\" in \"needs\" twice\n");
}

static void test_wrong_types_name_what_was_expected(void **state)
{
    (void)state;
    assert_errors("pipeline: p\n"
                  "tasks:\n"
                  "  a:\n"
                  "    run: x\n"
                  "    retries: lots\n"
                  "    timeout: soon\n"
                  "  b:\n"
                  "    run: []\n"
                  "    retries: 101\n"
                  "    timeout: 0s\n"
                  "  c:\n"
                  "    run: {sh: x}\n"
                  "    needs: {a: 1}\n"
                  "  d:\n"
                  "    run: [\"\", [x]]\n"
                  "    needs: [[a]]\n"
                  "  e:\n"
                  "    run:\n"
                  "  f: echo f\n",
                  "dag.yaml:5:14: error: \"retries\" must be an integer 0..100, got \"lots\"\n"
                  "dag.yaml:6:14: error: \"timeout\" must be a duration such as \"90s\", \"10m\" "
                  "or \"2h\", got \"soon\"\n"
                  "dag.yaml:8:10: error: \"run\" must be a non-empty string or list of strings, "
                  "got an empty list\n"
                  "dag.yaml:9:14: error: \"retries\" must be an integer 0..100, got \"101\"\n"
                  "dag.yaml:10:14: error: \"timeout\" must be more than 0, got \"0s\"\n"
                  "dag.yaml:12:10: error: \"run\" must be a non-empty string or list of strings, "
                  "got a mapping\n"
                  "dag.yaml:13:12: error: \"needs\" must be a task name or a list of task names, "
                  "got a mapping\n"
                  "dag.yaml:15:11: error: \"run\" list must start with a program name\n"
                  "dag.yaml:15:15: error: \"run\" list entries must be strings, got a list\n"
                  "dag.yaml:16:13: error: \"needs\" entries must be task names, got a list\n"
                  "dag.yaml:18:5: error: \"run\" must be a non-empty string or list of strings, "
                  "got an empty value\n"
                  "dag.yaml:19:6: error: task \"f\" must be a mapping with at least \"run\", got "
                  "\"echo f\"\n");
}

static void test_names_and_env(void **state)
{
    (void)state;
    assert_errors("pipeline: my pipeline\n"
                  "env: {1X: a, OK: [1]}\n"
                  "tasks:\n"
                  "  -bad:\n"
                  "    run: x\n"
                  "    env: [A]\n",
                  "dag.yaml:1:11: error: invalid pipeline name \"my pipeline\": use 1-63 letters, "
                  "digits, '_', '.' or '-', not starting with '.' or '-'\n"
                  "dag.yaml:2:7: error: invalid env name \"1X\": use letters, digits and '_', not "
                  "starting with a digit\n"
                  "dag.yaml:2:18: error: env \"OK\" must be a string, got a list\n"
                  "dag.yaml:4:3: error: invalid task name \"-bad\": use 1-63 letters, digits, "
                  "'_', '.' or '-', not starting with '.' or '-'\n"
                  "dag.yaml:6:10: error: \"env\" must be a mapping of NAME: value, got a list\n");
}

static void test_missing_keys(void **state)
{
    (void)state;
    assert_errors("description: nothing else\n", "dag.yaml:1:1: error: missing key \"pipeline\"\n"
                                                 "dag.yaml:1:1: error: missing key \"tasks\"\n");
    assert_errors("pipeline: p\ntasks: {}\n",
                  "dag.yaml:2:8: error: \"tasks\" must list at least one task\n");
    assert_errors("pipeline: p\ntasks:\n",
                  "dag.yaml:2:1: error: \"tasks\" must be a mapping of task names to tasks, got "
                  "an empty value\n");
    assert_errors("pipeline:\ntasks:\n  a:\n    needs: []\n",
                  "dag.yaml:1:1: error: \"pipeline\" must be a string, got an empty value\n"
                  "dag.yaml:3:3: error: task \"a\" has no \"run\"\n");
    assert_errors("- pipeline: p\n",
                  "dag.yaml:1:1: error: expected a mapping with \"pipeline\" and \"tasks\", got "
                  "a list\n");
}

/* Every problem at once, in file order, though found in several passes. */
static void test_every_error_reported_together(void **state)
{
    (void)state;
    assert_errors("pipeline: demo\n"
                  "tasks:\n"
                  "  a:\n"
                  "    run: echo a\n"
                  "    nedds: [b]\n"
                  "    needs: c\n"
                  "  b:\n"
                  "    run: echo b\n"
                  "    retries: lots\n"
                  "  c:\n"
                  "    needs: [a, prep]\n",
                  "dag.yaml:3:3: error: cycle: a -> c -> a\n"
                  "dag.yaml:5:5: error: unknown key \"nedds\" in task \"a\"; did you mean "
                  "\"needs\"?\n"
                  "dag.yaml:9:14: error: \"retries\" must be an integer 0..100, got \"lots\"\n"
                  "dag.yaml:10:3: error: task \"c\" has no \"run\"\n"
                  "dag.yaml:11:16: error: task \"c\" needs unknown task \"prep\"\n");
}

static void test_cycles_reported_as_paths(void **state)
{
    (void)state;
    assert_errors("pipeline: loops\n"
                  "tasks:\n"
                  "  a: {run: x, needs: c}\n"
                  "  b: {run: x, needs: a}\n"
                  "  c: {run: x, needs: b}\n"
                  "  d: {run: x, needs: [a, e]}\n"
                  "  e: {run: x, needs: d}\n"
                  "  f: {run: x}\n"
                  "  g: {run: x, needs: [f, c]}\n",
                  "dag.yaml:3:3: error: cycle: a -> b -> c -> a\n"
                  "dag.yaml:6:3: error: cycle: d -> e -> d\n");
}

static void test_long_cycle_is_shortened(void **state)
{
    (void)state;
    loom_buf_t src = {0};
    loom_buf_puts(&src, "pipeline: ring\ntasks:\n");
    for (int i = 0; i < 20; i++)
        loom_buf_printf(&src, "  t%02d: {run: x, needs: t%02d}\n", i, (i + 19) % 20);
    assert_errors(src.data, "dag.yaml:3:3: error: cycle: t00 -> t01 -> t02 -> t03 -> t04 -> t05 "
                            "-> t06 -> t07 -> t08 -> t09 -> t10 -> t11 -> ... (8 more) -> t00\n");
    loom_buf_free(&src);
}

static void test_diags_format_and_cap(void **state)
{
    (void)state;
    loom_diags_t d = {0};
    loom_diags_add(&d, "f.yaml", 3, 7, "bad %s", "thing");
    loom_diags_add(&d, "f.yaml", 0, 0, "no position");
    loom_diags_add(&d, NULL, 2, 0, "line only");
    char *text = loom_diags_format(&d);
    assert_string_equal(text, "f.yaml:3:7: error: bad thing\n"
                              "f.yaml: error: no position\n"
                              "<input>:2: error: line only\n");
    free(text);
    for (int i = 0; i < 500; i++) loom_diags_add(&d, "f.yaml", i + 1, 1, "problem %d", i);
    assert_int_equal(d.n, LOOM_DIAGS_MAX + 1);
    assert_string_equal(d.items[LOOM_DIAGS_MAX].message, "too many errors; stopping after 100");
    loom_diags_free(&d);
    assert_int_equal(d.n, 0);
    assert_null(d.items);
    loom_diags_free(&d);

    /* A parse adds to what the list already holds. */
    loom_diags_add(&d, "other.yaml", 1, 1, "earlier");
    loom_dag_t *dag;
    assert_int_equal(loom_dag_parse("x", 1, "dag.yaml", &dag, &d), LOOM_EPARSE);
    assert_int_equal(d.n, 2);
    assert_string_equal(d.items[0].message, "earlier");
    loom_diags_free(&d);

    /* Without a list, the answer is still yes or no. */
    assert_int_equal(loom_dag_parse("x", 1, "dag.yaml", &dag, NULL), LOOM_EPARSE);
    assert_null(dag);
    assert_int_equal(loom_dag_parse(dag_diamond(), strlen(dag_diamond()), "dag.yaml", &dag, NULL),
                     0);
    assert_int_equal(dag->n_tasks, 4);
    loom_dag_destroy(&dag);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_diamond_fields),
        cmocka_unit_test(test_order_respects_needs_and_is_stable),
        cmocka_unit_test(test_order_is_lowest_ready_first),
        cmocka_unit_test(test_needs_as_one_string_and_forward_reference),
        cmocka_unit_test(test_quoted_and_typed_scalars),
        cmocka_unit_test(test_quickstart_example),
        cmocka_unit_test(test_every_example_parses),
        cmocka_unit_test(test_unknown_keys_suggest),
        cmocka_unit_test(test_unknown_and_self_needs),
        cmocka_unit_test(test_wrong_types_name_what_was_expected),
        cmocka_unit_test(test_names_and_env),
        cmocka_unit_test(test_missing_keys),
        cmocka_unit_test(test_every_error_reported_together),
        cmocka_unit_test(test_cycles_reported_as_paths),
        cmocka_unit_test(test_long_cycle_is_shortened),
        cmocka_unit_test(test_diags_format_and_cap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
