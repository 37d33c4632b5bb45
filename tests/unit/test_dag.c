/* The DAG parser as users meet it: what a valid file becomes, and the exact
 * file:line:col message for each kind of mistake and hostile input. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "loom/dag.h"
#include "loom/err.h"
#include "loom/util.h"
#include "loom/ytree.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Parses src from an exact-size heap copy (no NUL after it, so the sanitizer
 * catches any read past len). */
static int parse(const char *src, size_t len, loom_dag_t **dag, loom_diags_t *d)
{
    char *copy = loom_xmalloc(len);
    memcpy(copy, src, len);
    *dag = (loom_dag_t *)copy; /* must be overwritten */
    int rc = loom_dag_parse(copy, len, "dag.yaml", dag, d);
    free(copy);
    return rc;
}

static loom_dag_t *parse_ok(const char *src)
{
    loom_diags_t d = {0};
    loom_dag_t *dag;
    int rc = parse(src, strlen(src), &dag, &d);
    if (rc != 0) {
        char *text = loom_diags_format(&d);
        print_error("%s", text);
        free(text);
    }
    assert_int_equal(rc, 0);
    assert_int_equal(d.n, 0);
    assert_non_null(dag);
    loom_diags_free(&d);
    return dag;
}

/* All the diagnostics for src, formatted, after checking that it failed. */
static char *errors_of_len(const char *src, size_t len)
{
    loom_diags_t d = {0};
    loom_dag_t *dag;
    int rc = parse(src, len, &dag, &d);
    assert_int_equal(rc, LOOM_EPARSE);
    assert_null(dag);
    assert_true(d.n > 0);
    char *text = loom_diags_format(&d);
    loom_diags_free(&d);
    return text;
}

#define assert_errors(src, expected)                                                               \
    do {                                                                                           \
        char *got_ = errors_of_len((src), strlen(src));                                            \
        assert_string_equal(got_, (expected));                                                     \
        free(got_);                                                                                \
    } while (0)

static const char diamond[] = "pipeline: diamond\n"
                              "description: A diamond\n"
                              "env:\n"
                              "  REGION: eu-west\n"
                              "tasks:\n"
                              "  train:\n"
                              "    run: [python3, train.py, --epochs, \"3\"]\n"
                              "    needs: [clean, stats]\n"
                              "    env:\n"
                              "      EPOCHS: 3\n"
                              "      DEBUG: ~\n"
                              "    timeout: 10m\n"
                              "    retries: 2\n"
                              "  extract:\n"
                              "    run: echo extract\n"
                              "  clean:\n"
                              "    run: echo clean\n"
                              "    needs: extract\n"
                              "  stats:\n"
                              "    run: |\n"
                              "      echo stats\n"
                              "      wc -l data.csv\n"
                              "    needs: [extract]\n";

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
    loom_dag_t *dag = parse_ok(diamond);
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
    loom_dag_t *dag = parse_ok(diamond);
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

static uint64_t next_random(uint64_t *s);

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

/* STYLE.md: every file in dag-examples/ is validated by a test. */
static void test_every_example_parses(void **state)
{
    (void)state;
    const char *root = getenv("LOOM_SOURCE_DIR");
    assert_non_null(root);
    char *dir = loom_xasprintf("%s/dag-examples", root);
    DIR *d = opendir(dir);
    assert_non_null(d);
    int checked = 0;
    for (struct dirent *e; (e = readdir(d));) {
        size_t n = strlen(e->d_name);
        if (n < 5 || (strcmp(e->d_name + n - 5, ".yaml") != 0 && strcmp(e->d_name + n - 4, ".yml")))
            continue;
        char *path = loom_xasprintf("%s/%s", dir, e->d_name);
        char *src = NULL;
        size_t len = 0;
        assert_int_equal(loom_read_file(path, LOOM_DAG_MAX_BYTES, &src, &len), 0);
        loom_diags_t diags = {0};
        loom_dag_t *dag = NULL;
        if (loom_dag_parse(src, len, path, &dag, &diags) != 0) {
            char *text = loom_diags_format(&diags);
            fail_msg("%s", text);
        }
        loom_dag_destroy(&dag);
        free(src);
        free(path);
        checked++;
    }
    closedir(d);
    free(dir);
    assert_true(checked >= 1);
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

static void test_duplicate_keys(void **state)
{
    (void)state;
    /* Reported with both places; the first copy is kept, so validation goes
     * on and finds the bad retries too. */
    assert_errors("pipeline: p\n"
                  "tasks:\n"
                  "  a:\n"
                  "    run: x\n"
                  "    retries: lots\n"
                  "    run: y\n"
                  "  b: {run: x}\n"
                  "  a: {run: z}\n"
                  "pipeline: q\n",
                  "dag.yaml:5:14: error: \"retries\" must be an integer 0..100, got \"lots\"\n"
                  "dag.yaml:6:5: error: duplicate key \"run\" (first at 4:5)\n"
                  "dag.yaml:8:3: error: duplicate key \"a\" (first at 3:3)\n"
                  "dag.yaml:9:1: error: duplicate key \"pipeline\" (first at 1:1)\n");
    /* Quoting does not make a different key. */
    assert_errors("pipeline: p\ntasks: {a: {run: x}, \"a\": {run: y}}\n",
                  "dag.yaml:2:22: error: duplicate key \"a\" (first at 2:9)\n");
}

static void test_anchors_and_billion_laughs(void **state)
{
    (void)state;
    loom_buf_t src = {0};
    loom_buf_puts(&src,
                  "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
    for (char c = 'b'; c <= 'j'; c++) {
        loom_buf_printf(&src, "%c: &%c [", c, c);
        for (int i = 0; i < 9; i++) loom_buf_printf(&src, "%s*%c", i ? "," : "", c - 1);
        loom_buf_puts(&src, "]\n");
    }
    uint64_t t0 = loom_mono_ms();
    assert_errors(src.data, "dag.yaml:1:4: error: YAML anchors and aliases are not supported\n");
    /* Expanding it would take 8 * 9^9 strings; refusing takes no time. */
    assert_true(loom_mono_ms() - t0 < 2000);
    loom_buf_free(&src);

    assert_errors("pipeline: p\ntasks:\n  a: {run: x}\n  b: {run: *x}\n",
                  "dag.yaml:4:12: error: YAML anchors and aliases are not supported\n");
}

static void test_deep_nesting(void **state)
{
    (void)state;
    loom_buf_t src = {0};
    loom_buf_puts(&src, "pipeline: p\ntasks: {a: {run: x}}\nx: ");
    for (int i = 0; i < 100000; i++) loom_buf_puts(&src, "[");
    /* The root mapping is level 1, so the 32nd "[" is one too many. */
    assert_errors(src.data, "dag.yaml:3:35: error: nesting is deeper than 32 levels\n");
    loom_buf_free(&src);
}

static void test_tabs_positioned(void **state)
{
    (void)state;
    assert_errors("pipeline: p\ntasks:\n  a:\n\trun: x\n",
                  "dag.yaml:4:1: error: invalid YAML: found character that cannot start any token "
                  "(while scanning for the next token); tabs are not allowed in YAML indentation, "
                  "use spaces\n");
}

static void test_syntax_error_has_context(void **state)
{
    (void)state;
    assert_errors("pipeline: p\ntasks:\n  a:\n    run: [x, y\n  b: {run: x}\n",
                  "dag.yaml:5:4: error: invalid YAML: did not find expected ',' or ']' (while "
                  "parsing a flow sequence at 4:10)\n");
}

static void test_binary_junk(void **state)
{
    (void)state;
    static const char nul[] = "pipeline: p\n\0tasks: {}\n";
    char *got = errors_of_len(nul, sizeof nul - 1);
    assert_string_equal(got, "dag.yaml:2:1: error: NUL byte in input: a YAML file must be UTF-8 "
                             "text\n");
    free(got);
    assert_errors("pipeline: p\n  \xff\xfe tasks:\n",
                  "dag.yaml:2:3: error: invalid text: invalid leading UTF-8 octet (0xFF)\n");
    assert_errors("pipeline: p\ntasks:\n  a:\n    run: \"a\\0b\"\n",
                  "dag.yaml:4:10: error: NUL characters are not allowed in strings\n");
}

/* Deterministic pseudo-random bytes (xorshift64): no rand() in loom. */
static uint64_t next_random(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Any input either parses cleanly or fails with diagnostics, never both,
 * never a crash, a leak or a read past the end. */
static void check_outcome(const char *src, size_t len)
{
    loom_diags_t d = {0};
    loom_dag_t *dag;
    int rc = parse(src, len, &dag, &d);
    if (rc == 0) {
        assert_non_null(dag);
        assert_int_equal(d.n, 0);
    } else {
        assert_int_equal(rc, LOOM_EPARSE);
        assert_null(dag);
        assert_true(d.n > 0);
    }
    loom_dag_destroy(&dag);
    loom_diags_free(&d);
}

static void test_truncated_and_mutated_input(void **state)
{
    (void)state;
    size_t len = strlen(diamond);
    for (size_t n = 0; n <= len; n++) check_outcome(diamond, n);
    char *buf = loom_xmalloc(len);
    uint64_t seed = 0x9E3779B97F4A7C15u;
    for (int round = 0; round < 500; round++) {
        memcpy(buf, diamond, len);
        for (int k = 0; k < 4; k++)
            buf[next_random(&seed) % len] = (char)(next_random(&seed) & 0xFF);
        check_outcome(buf, len);
    }
    for (size_t i = 0; i < len; i++) buf[i] = (char)(next_random(&seed) & 0xFF);
    check_outcome(buf, len);
    free(buf);
}

static void test_empty_and_comment_only(void **state)
{
    (void)state;
    const char *want = "dag.yaml: error: the file is empty; expected a mapping with \"pipeline\" "
                       "and \"tasks\"\n";
    assert_errors("", want);
    assert_errors("# just a comment\n\n", want);
}

static void test_one_document_only(void **state)
{
    (void)state;
    assert_errors("pipeline: p\ntasks: {a: {run: x}}\n---\npipeline: q\n",
                  "dag.yaml:3:1: error: only one YAML document is allowed in a file\n");
}

static void test_keys_must_be_strings(void **state)
{
    (void)state;
    assert_errors("pipeline: p\n? [a, b]\n: c\n",
                  "dag.yaml:2:3: error: mapping keys must be strings, got a list\n");
}

static void test_size_and_count_limits(void **state)
{
    (void)state;
    size_t len = (size_t)LOOM_DAG_MAX_BYTES + 1;
    char *big = loom_xmalloc(len);
    memset(big, '#', len);
    char *got = errors_of_len(big, len);
    assert_string_equal(got, "dag.yaml: error: file is 4194305 bytes; the limit is 4194304\n");
    free(got);
    free(big);

    loom_buf_t src = {0};
    loom_buf_puts(&src, "pipeline: p\ntasks:\n");
    for (int i = 0; i <= LOOM_DAG_MAX_TASKS; i++) loom_buf_printf(&src, " t%d: {run: x}\n", i);
    assert_errors(src.data, "dag.yaml:3:2: error: too many tasks: 100001 (the limit is 100000)\n");
    loom_buf_free(&src);

    loom_buf_puts(&src, "x: [");
    for (int i = 0; i < LOOM_YTREE_MAX_NODES; i++) loom_buf_puts(&src, "0,");
    loom_buf_puts(&src, "0]\n");
    assert_errors(src.data, "dag.yaml:1:1999999: error: too many YAML nodes (the limit is "
                            "1000000)\n");
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
    assert_int_equal(loom_dag_parse(diamond, strlen(diamond), "dag.yaml", &dag, NULL), 0);
    assert_int_equal(dag->n_tasks, 4);
    loom_dag_destroy(&dag);
}

static void test_ytree_nodes(void **state)
{
    (void)state;
    const char *src = "a: plain\n"
                      "b: 'quoted'\n"
                      "c: !!str 7\n"
                      "d: [~, \"\", {k: v}]\n"
                      "e:\n";
    loom_diags_t d = {0};
    loom_ynode_t *root = NULL;
    assert_int_equal(loom_ytree_parse(src, strlen(src), "t.yaml", NULL, &root, &d), 0);
    assert_int_equal(d.n, 0);
    assert_int_equal(root->kind, LOOM_YMAP);
    assert_int_equal(root->n_pairs, 5);
    assert_string_equal(root->pairs[1].key->str, "b");
    assert_int_equal(root->pairs[1].key->line, 2);
    assert_int_equal(root->pairs[1].value->col, 4);
    assert_true(loom_ynode_get(root, "a")->plain);
    assert_false(loom_ynode_get(root, "b")->plain);
    assert_string_equal(loom_ynode_get(root, "c")->tag, "tag:yaml.org,2002:str");
    assert_null(loom_ynode_get(root, "missing"));

    const loom_ynode_t *list = loom_ynode_get(root, "d");
    assert_int_equal(list->kind, LOOM_YSEQ);
    assert_int_equal(list->n_items, 3);
    assert_true(loom_ynode_is_null(list->items[0]));
    assert_false(loom_ynode_is_null(list->items[1])); /* "" is a string, not null */
    assert_true(loom_ynode_is_null(loom_ynode_get(root, "e")));
    assert_false(loom_ynode_is_null(loom_ynode_get(root, "c")));
    assert_string_equal(loom_ynode_get(list->items[2], "k")->str, "v");

    char out[LOOM_YQUOTE_MAX];
    loom_ynode_describe(list, out, sizeof out);
    assert_string_equal(out, "a list");
    loom_ynode_describe(list->items[0], out, sizeof out);
    assert_string_equal(out, "an empty value");
    loom_ynode_describe(loom_ynode_get(root, "b"), out, sizeof out);
    assert_string_equal(out, "\"quoted\"");
    loom_ytree_destroy(&root);
    assert_null(root);
}

static void test_ytree_quote_and_limits(void **state)
{
    (void)state;
    char out[LOOM_YQUOTE_MAX];
    loom_yquote("a\"b\\c\n\t\x1b", 8, out, sizeof out);
    assert_string_equal(out, "\"a\\\"b\\\\c\\n\\t\\x1B\"");
    char longer[200];
    memset(longer, 'x', sizeof longer);
    loom_yquote(longer, sizeof longer, out, sizeof out);
    assert_true(strlen(out) < 70);
    assert_string_equal(out + strlen(out) - 4, "...\"");

    loom_ytree_limits_t lim = {.max_bytes = 1000, .max_nodes = 5, .max_depth = 2};
    loom_diags_t d = {0};
    loom_ynode_t *root = NULL;
    const char *six = "[1, 2, 3, 4, 5]";
    assert_int_equal(loom_ytree_parse(six, strlen(six), "t", &lim, &root, &d), LOOM_EPARSE);
    assert_null(root);
    assert_string_equal(d.items[0].message, "too many YAML nodes (the limit is 5)");
    assert_int_equal(d.items[0].col, 14);
    const char *deep = "a: [[1]]";
    assert_int_equal(loom_ytree_parse(deep, strlen(deep), "t", &lim, &root, &d), LOOM_EPARSE);
    assert_string_equal(d.items[1].message, "nesting is deeper than 2 levels");
    /* A duplicate is reported but the tree comes back, without it. */
    lim.max_nodes = 100;
    const char *dup = "{a: 1, b: 2, a: 3}";
    assert_int_equal(loom_ytree_parse(dup, strlen(dup), "t", &lim, &root, &d), LOOM_EPARSE);
    assert_non_null(root);
    assert_int_equal(root->n_pairs, 2);
    assert_string_equal(loom_ynode_get(root, "a")->str, "1");
    assert_string_equal(d.items[2].message, "duplicate key \"a\" (first at 1:2)");
    loom_ytree_destroy(&root);
    loom_diags_free(&d);
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
        cmocka_unit_test(test_duplicate_keys),
        cmocka_unit_test(test_anchors_and_billion_laughs),
        cmocka_unit_test(test_deep_nesting),
        cmocka_unit_test(test_tabs_positioned),
        cmocka_unit_test(test_syntax_error_has_context),
        cmocka_unit_test(test_binary_junk),
        cmocka_unit_test(test_truncated_and_mutated_input),
        cmocka_unit_test(test_empty_and_comment_only),
        cmocka_unit_test(test_one_document_only),
        cmocka_unit_test(test_keys_must_be_strings),
        cmocka_unit_test(test_size_and_count_limits),
        cmocka_unit_test(test_diags_format_and_cap),
        cmocka_unit_test(test_ytree_nodes),
        cmocka_unit_test(test_ytree_quote_and_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
