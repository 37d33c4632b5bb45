/* Hostile input for the DAG parser: whatever arrives (junk bytes, bombs,
 * deep nesting, huge files, wrong types in every key), the answer is a
 * precise error or a valid DAG, in bounded time and memory. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "dag_testutil.h"
#include "loom/expr.h"
#include "loom/ytree.h"

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

static void test_truncated_and_mutated_input(void **state)
{
    (void)state;
    size_t len = strlen(dag_diamond());
    for (size_t n = 0; n <= len; n++) check_outcome(dag_diamond(), n);
    char *buf = loom_xmalloc(len);
    uint64_t seed = 0x9E3779B97F4A7C15u;
    for (int round = 0; round < 500; round++) {
        memcpy(buf, dag_diamond(), len);
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

/* The full format, for the mutation test below. */
static const char full[] =
    "pipeline: full\n"
    "params:\n"
    "  min_auc: 0.8\n"
    "  lrs: [0.1, 0.01]\n"
    "  model: {type: string, default: base, description: which}\n"
    "defaults:\n"
    "  retries: 1\n"
    "  env: {A: '1'}\n"
    "  resources: {cpus: 0.5, memory: 1G}\n"
    "triggers:\n"
    "  - schedule: '0 3 * * *'\n"
    "    timezone: Europe/Berlin\n"
    "  - data: {path: /srv/in, glob: '*.csv', batch: {max_files: 5, max_wait: 1m}}\n"
    "  - event: drift\n"
    "    when: event.score > 0.3\n"
    "concurrency: {max_active_runs: 1, on_overlap: skip}\n"
    "tasks:\n"
    "  sweep:\n"
    "    foreach: params.lrs\n"
    "    run: train --lr ${{ item }} --model \"${{ params.model }}\"\n"
    "    metrics: m.json\n"
    "  evaluate:\n"
    "    needs: sweep\n"
    "    run: [eval, '${{ params.model }}']\n"
    "    metrics: m.json\n"
    "    outputs: [report.html]\n"
    "  register:\n"
    "    needs: evaluate\n"
    "    if: tasks.evaluate.metrics.auc >= params.min_auc\n"
    "    inputs: ['evaluate:report.html']\n"
    "    trigger_rule: all_done\n"
    "    run: echo ok\n";

static void test_full_format_truncated_and_mutated(void **state)
{
    (void)state;
    size_t len = strlen(full);
    loom_dag_t *dag = parse_ok(full); /* the original is valid */
    loom_dag_destroy(&dag);
    for (size_t n = 0; n <= len; n++) check_outcome(full, n);
    char *buf = loom_xmalloc(len);
    uint64_t seed = 0xD1B54A32D192ED03u;
    for (int round = 0; round < 2000; round++) {
        memcpy(buf, full, len);
        for (int k = 0; k < 3; k++)
            buf[next_random(&seed) % len] = (char)(next_random(&seed) & 0xFF);
        check_outcome(buf, len);
    }
    /* Swapping in characters that matter to templates and conditions. */
    static const char special[] = "${}()'\"\\`#<>=!.:- \n";
    for (int round = 0; round < 2000; round++) {
        memcpy(buf, full, len);
        for (int k = 0; k < 3; k++)
            buf[next_random(&seed) % len] = special[next_random(&seed) % (sizeof special - 1)];
        check_outcome(buf, len);
    }
    free(buf);
}

/* Every new key given the wrong kind of value: one exact message each. */
static void test_wrong_types_in_every_key(void **state)
{
    (void)state;
    assert_errors(
        "pipeline: p\n"
        "params: [a]\n"
        "defaults: x\n"
        "triggers: {schedule: x}\n"
        "concurrency: 3\n"
        "tasks:\n"
        "  a:\n"
        "    run: x\n"
        "    if: [a]\n"
        "    trigger_rule: [x]\n"
        "    retry_delay: {x: 1}\n"
        "    max_retry_delay: [1]\n"
        "    retry_jitter: 2\n"
        "    resources: [1]\n"
        "    inputs: {a: b}\n"
        "    outputs: [[x]]\n"
        "    metrics: [m]\n"
        "    cache: []\n"
        "    foreach: {a: 1}\n",
        "dag.yaml:2:9: error: \"params\" must be a mapping of names to defaults or {type, "
        "default}, got a list\n"
        "dag.yaml:3:11: error: \"defaults\" must be a mapping of task keys, got \"x\"\n"
        "dag.yaml:4:11: error: \"triggers\" must be a list, such as [{schedule: \"0 3 * "
        "* *\"}], got a mapping\n"
        "dag.yaml:5:14: error: \"concurrency\" must be a mapping such as "
        "{max_active_runs: 1}, got \"3\"\n"
        "dag.yaml:9:9: error: \"if\" must be a string, got a list\n"
        "dag.yaml:10:19: error: \"trigger_rule\" must be one of all_success, all_done, "
        "one_failed, got a list\n"
        "dag.yaml:11:18: error: \"retry_delay\" must be a duration such as \"90s\", "
        "\"10m\" or \"2h\", got a mapping\n"
        "dag.yaml:12:22: error: \"max_retry_delay\" must be a duration such as \"90s\", "
        "\"10m\" or \"2h\", got a list\n"
        "dag.yaml:13:19: error: \"retry_jitter\" must be true or false, got \"2\"\n"
        "dag.yaml:14:16: error: \"resources\" must be a mapping such as {cpus: 2, "
        "memory: 4G}, got a list\n"
        "dag.yaml:15:13: error: \"inputs\" must be a list of paths, got a mapping\n"
        "dag.yaml:16:15: error: \"outputs\" entries must be strings, got a list\n"
        "dag.yaml:17:14: error: \"metrics\" must be a string, got a list\n"
        "dag.yaml:18:12: error: \"cache\" must be true or false, got an empty list\n"
        "dag.yaml:19:14: error: \"foreach\" must be params.NAME (a list param), "
        "trigger.files or a list of values, got a mapping\n");
}

/* Conditions are capped in length and nesting before any recursion. */
static void test_hostile_conditions(void **state)
{
    (void)state;
    loom_buf_t src = {0};
    loom_buf_puts(&src, "pipeline: p\ntasks:\n  a:\n    run: x\n    if: \"");
    for (int i = 0; i < 1000; i++) loom_buf_puts(&src, "(");
    loom_buf_puts(&src, "\"\n");
    uint64_t t0 = loom_mono_ms();
    assert_errors(src.data, "dag.yaml:5:74: error: invalid condition in \"if\": nested deeper than "
                            "64 levels\n");
    loom_buf_reset(&src);
    loom_buf_puts(&src, "pipeline: p\ntasks:\n  a:\n    run: x\n    if: \"");
    for (int i = 0; i < 3000; i++) loom_buf_puts(&src, "not ");
    loom_buf_puts(&src, "true\"\n");
    assert_errors(src.data, "dag.yaml:5:10: error: invalid condition in \"if\": condition is "
                            "12004 bytes; the limit is 4096\n");
    loom_buf_reset(&src);
    loom_buf_puts(&src, "pipeline: p\ntasks:\n  a:\n    run: x\n    if: \"a \\x01 b\"\n");
    /* Column 12: where the "\x01" escape is written. */
    assert_errors(src.data, "dag.yaml:5:12: error: invalid condition in \"if\": unexpected "
                            "character\n");
    assert_true(loom_mono_ms() - t0 < 2000);
    loom_buf_free(&src);
}

/* Templates are scanned in one pass: many references, or many openings
 * with nothing to close them, cost linear time. */
static void test_hostile_templates(void **state)
{
    (void)state;
    loom_buf_t src = {0};
    loom_buf_puts(&src, "pipeline: p\nparams: {x: 1}\ntasks:\n  a:\n    run: \"");
    for (int i = 0; i < 100000; i++) loom_buf_puts(&src, "${{ params.x }}");
    loom_buf_puts(&src, "\"\n");
    uint64_t t0 = loom_mono_ms();
    loom_dag_t *dag = parse_ok(src.data);
    assert_int_equal(dag->tasks[0].shell_tmpl.n_parts, 100000);
    loom_dag_destroy(&dag);
    loom_buf_reset(&src);
    loom_buf_puts(&src, "pipeline: p\ntasks:\n  a:\n    run: \"");
    for (int i = 0; i < 200000; i++) loom_buf_puts(&src, "${{");
    loom_buf_puts(&src, "\"\n");
    assert_errors(src.data, "dag.yaml:4:11: error: unterminated \"${{\": no \"}}\" after it\n");
    /* Quotes nested past the lexer's depth are refused, not overflowed. */
    loom_buf_reset(&src);
    loom_buf_puts(&src, "pipeline: p\ntasks:\n  a:\n    run: echo ");
    for (int i = 0; i < 100; i++) loom_buf_puts(&src, "$(");
    loom_buf_puts(&src, "\n");
    /* The 65th "$(" (column 15 + 64 * 2) is one level too many. */
    assert_errors(src.data, "dag.yaml:4:143: error: shell command nests too deeply\n");
    assert_true(loom_mono_ms() - t0 < 5000);
    loom_buf_free(&src);
}

/* 20,000 tasks in a chain, each reading the metrics of the first: the
 * ancestry walks are budgeted, so this finishes quickly however the
 * references are spread. */
static void test_many_task_references_bounded(void **state)
{
    (void)state;
    loom_buf_t src = {0};
    loom_buf_puts(&src, "pipeline: p\ntasks:\n  t0: {run: x, metrics: m.json}\n");
    for (int i = 1; i < 20000; i++)
        loom_buf_printf(&src, "  t%d: {run: 'echo ${{ tasks.t0.metrics.m }}', needs: t%d}\n", i,
                        i - 1);
    uint64_t t0 = loom_mono_ms();
    loom_dag_t *dag = parse_ok(src.data);
    assert_int_equal(dag->n_tasks, 20000);
    loom_dag_destroy(&dag);
    assert_true(loom_mono_ms() - t0 < 10000);
    loom_buf_free(&src);
}

/* Duplicate keys inside the new mappings are reported like any other. */
static void test_duplicates_in_new_keys(void **state)
{
    (void)state;
    assert_errors("pipeline: p\n"
                  "params: {a: 1, a: 2}\n"
                  "concurrency: {max_active_runs: 1, max_active_runs: 2}\n"
                  "tasks:\n"
                  "  t:\n"
                  "    run: x\n"
                  "    resources: {cpus: 1, cpus: 2}\n",
                  "dag.yaml:2:16: error: duplicate key \"a\" (first at 2:10)\n"
                  "dag.yaml:3:35: error: duplicate key \"max_active_runs\" (first at 3:15)\n"
                  "dag.yaml:7:26: error: duplicate key \"cpus\" (first at 7:17)\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
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
        cmocka_unit_test(test_full_format_truncated_and_mutated),
        cmocka_unit_test(test_wrong_types_in_every_key),
        cmocka_unit_test(test_hostile_conditions),
        cmocka_unit_test(test_hostile_templates),
        cmocka_unit_test(test_many_task_references_bounded),
        cmocka_unit_test(test_duplicates_in_new_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
