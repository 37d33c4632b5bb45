/* The full DAG format, key by key: what each valid form becomes, defaults
 * merging into tasks, and the exact file:line:col message for each mistake
 * (with "did you mean" where a name is close). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "dag_testutil.h"

/* ---- params ---- */

static void test_params_shorthand_and_full_forms(void **state)
{
    (void)state;
    loom_dag_t *dag = parse_ok("pipeline: p\n"
                               "params:\n"
                               "  epochs: 3\n"
                               "  lr: 0.010\n"
                               "  big: 1e3\n"
                               "  debug: false\n"
                               "  lrs: [0.1, 1, x, true, \"2\"]\n"
                               "  name: resnet\n"
                               "  quoted: \"7\"\n"
                               "  model:\n"
                               "  ratio: {type: float, default: 1, description: how much}\n"
                               "  tag: {type: string, default: 42}\n"
                               "  empty: {type: list, default: []}\n"
                               "  need: {type: int}\n"
                               "  auto: {default: [a]}\n"
                               "tasks: {a: {run: x}}\n");
    assert_int_equal(dag->n_params, 13);
    static const struct {
        const char *name;
        loom_param_type type;
        const char *json;
    } want[] = {{"epochs", LOOM_PARAM_INT, "3"},
                {"lr", LOOM_PARAM_FLOAT, "0.01"},
                {"big", LOOM_PARAM_FLOAT, "1000.0"},
                {"debug", LOOM_PARAM_BOOL, "false"},
                {"lrs", LOOM_PARAM_LIST, "[0.1,1,\"x\",true,\"2\"]"},
                {"name", LOOM_PARAM_STRING, "\"resnet\""},
                {"quoted", LOOM_PARAM_STRING, "\"7\""},
                {"model", LOOM_PARAM_STRING, NULL},
                {"ratio", LOOM_PARAM_FLOAT, "1.0"},
                {"tag", LOOM_PARAM_STRING, "\"42\""},
                {"empty", LOOM_PARAM_LIST, "[]"},
                {"need", LOOM_PARAM_INT, NULL},
                {"auto", LOOM_PARAM_LIST, "[\"a\"]"}};
    for (size_t i = 0; i < 13; i++) {
        const loom_dag_param_t *p = &dag->params[i];
        assert_string_equal(p->name, want[i].name);
        assert_int_equal(p->type, want[i].type);
        if (want[i].json)
            assert_string_equal(p->default_json, want[i].json);
        else
            assert_null(p->default_json); /* required at run time */
    }
    assert_int_equal(dag->params[0].line, 3);
    assert_int_equal(dag->params[0].col, 3);
    assert_string_equal(dag->params[8].description, "how much");
    assert_null(dag->params[0].description);
    assert_ptr_equal(loom_dag_param(dag, "ratio"), &dag->params[8]);
    assert_null(loom_dag_param(dag, "nope"));
    loom_dag_destroy(&dag);
}

static void test_param_errors(void **state)
{
    (void)state;
    assert_errors("pipeline: p\n"
                  "params:\n"
                  "  epochs: {type: int, default: \"abc\"}\n"
                  "  lr: {type: float, default: fast}\n"
                  "  on: {type: bool, default: yes}\n"
                  "  lrs: {type: list, default: 0.1}\n"
                  "  s: {type: string, default: [a]}\n"
                  "  n: {type: strng}\n"
                  "  m: {type: int, defualt: 3}\n"
                  "  2fast: 1\n"
                  "  deep: [1, [2]]\n"
                  "  big: 99999999999999999999\n"
                  "tasks: {a: {run: x}}\n",
                  "dag.yaml:3:32: error: default of param \"epochs\" must be an int, got \"abc\"\n"
                  "dag.yaml:4:30: error: default of param \"lr\" must be a number, got \"fast\"\n"
                  "dag.yaml:5:29: error: default of param \"on\" must be true or false, got "
                  "\"yes\"\n"
                  "dag.yaml:6:30: error: default of param \"lrs\" must be a list, got \"0.1\"\n"
                  "dag.yaml:7:30: error: default of param \"s\" must be a string, got a list\n"
                  "dag.yaml:8:13: error: \"type\" must be one of string, int, float, bool, list, "
                  "got \"strng\"; did you mean \"string\"?\n"
                  "dag.yaml:9:18: error: unknown key \"defualt\" in param \"m\"; did you mean "
                  "\"default\"?\n"
                  "dag.yaml:10:3: error: invalid param name \"2fast\": use letters, digits and "
                  "'_', not starting with a digit\n"
                  "dag.yaml:11:13: error: default of param \"deep\": list items must be single "
                  "values, got a list\n");
}

/* ---- defaults ---- */

static void test_defaults_merge_into_every_task(void **state)
{
    (void)state;
    loom_dag_t *dag = parse_ok("pipeline: p\n"
                               "defaults:\n"
                               "  retries: 2\n"
                               "  timeout: 5m\n"
                               "  env: {A: a, B: b}\n"
                               "  resources: {cpus: 2, memory: 1G}\n"
                               "  trigger_rule: all_done\n"
                               "  retry_jitter: false\n"
                               "  cache: true\n"
                               "tasks:\n"
                               "  plain:\n"
                               "    run: x\n"
                               "  own:\n"
                               "    run: y\n"
                               "    retries: 0\n"
                               "    env: {B: mine, C: c}\n"
                               "    resources: {gpus: 1}\n"
                               "    trigger_rule: all_success\n");
    const loom_dag_task_t *p = &dag->tasks[0], *o = &dag->tasks[1];
    assert_int_equal(p->retries, 2);
    assert_int_equal(p->timeout_ms, 300000);
    assert_int_equal(p->n_env, 2);
    assert_string_equal(p->env[0].name, "A");
    assert_true(p->resources.cpus == 2.0);
    assert_int_equal(p->resources.memory_bytes, 1ull << 30);
    assert_int_equal(p->rule, LOOM_RULE_ALL_DONE);
    assert_int_equal(p->retry_jitter, 0);
    assert_int_equal(p->cache, 1);
    /* A task's own value wins, whole; env maps merge, the task's names win. */
    assert_int_equal(o->retries, 0);
    assert_int_equal(o->timeout_ms, 300000);
    assert_int_equal(o->rule, LOOM_RULE_ALL_SUCCESS);
    assert_true(o->resources.cpus == 0.0);
    assert_int_equal(o->resources.gpus, 1);
    assert_int_equal(o->n_env, 3);
    assert_string_equal(o->env[0].name, "A");
    assert_string_equal(o->env[0].value, "a");
    assert_string_equal(o->env[1].name, "B");
    assert_string_equal(o->env[1].value, "mine");
    assert_string_equal(o->env[2].name, "C");
    loom_dag_destroy(&dag);
}

/* A mistake in defaults is reported once, where it is written, however
 * many tasks it would fill in. */
static void test_defaults_errors_reported_once(void **state)
{
    (void)state;
    assert_errors("pipeline: p\n"
                  "defaults:\n"
                  "  retires: 2\n"
                  "  run: echo\n"
                  "  needs: a\n"
                  "  foreach: [1]\n"
                  "  if: 'true'\n"
                  "  timeout: soon\n"
                  "  resources: {gpu_model: A100}\n"
                  "tasks:\n"
                  "  a: {run: x}\n"
                  "  b: {run: x}\n"
                  "  c: {run: x}\n",
                  "dag.yaml:3:3: error: unknown key \"retires\" in \"defaults\"; did you mean "
                  "\"retries\"?\n"
                  "dag.yaml:4:3: error: \"run\" cannot be in \"defaults\": each task sets its own\n"
                  "dag.yaml:5:3: error: \"needs\" cannot be in \"defaults\": each task sets its "
                  "own\n"
                  "dag.yaml:6:3: error: \"foreach\" cannot be in \"defaults\": each task sets its "
                  "own\n"
                  "dag.yaml:7:3: error: \"if\" cannot be in \"defaults\": each task sets its own\n"
                  "dag.yaml:8:12: error: \"timeout\" must be a duration such as \"90s\", \"10m\" "
                  "or \"2h\", got \"soon\"\n"
                  "dag.yaml:9:15: error: \"gpu_model\" needs \"gpus\" of at least 1\n");
    /* Defaults come before tasks whatever the order in the file. */
    loom_dag_t *dag = parse_ok("pipeline: p\ntasks: {a: {run: x}}\ndefaults: {retries: 4}\n");
    assert_int_equal(dag->tasks[0].retries, 4);
    loom_dag_destroy(&dag);
}

/* ---- retries and backoff ---- */

static void test_retry_backoff(void **state)
{
    (void)state;
    loom_dag_t *dag = parse_ok("pipeline: p\n"
                               "tasks:\n"
                               "  a: {run: x}\n"
                               "  b: {run: x, retries: 3, retry_delay: 250ms, max_retry_delay: "
                               "1m, retry_jitter: false}\n"
                               "  c: {run: x, retry_delay: 0s, max_retry_delay: 0s}\n");
    const loom_dag_task_t *a = &dag->tasks[0], *b = &dag->tasks[1], *c = &dag->tasks[2];
    assert_int_equal(a->retries, 0);
    assert_int_equal(a->retry_delay_ms, 1000);
    assert_int_equal(a->max_retry_delay_ms, 300000);
    assert_int_equal(a->retry_jitter, 1);
    assert_int_equal(b->retries, 3);
    assert_int_equal(b->retry_delay_ms, 250);
    assert_int_equal(b->max_retry_delay_ms, 60000);
    assert_int_equal(b->retry_jitter, 0);
    assert_int_equal(c->retry_delay_ms, 0);
    loom_dag_destroy(&dag);

    /* The cap may not be below the first delay: reported at the task's own
     * key, counting the defaults it inherits. */
    assert_errors("pipeline: p\n"
                  "defaults: {max_retry_delay: 10s}\n"
                  "tasks:\n"
                  "  a: {run: x, retry_delay: 1m, max_retry_delay: 30s}\n"
                  "  b: {run: x, retry_delay: 20s}\n"
                  "  c: {run: x, retry_delay: 6m}\n",
                  "dag.yaml:4:49: error: \"max_retry_delay\" (30.000s) must not be less than "
                  "\"retry_delay\" (1m00s)\n"
                  "dag.yaml:5:28: error: \"max_retry_delay\" (10.000s) must not be less than "
                  "\"retry_delay\" (20.000s)\n"
                  "dag.yaml:6:28: error: \"max_retry_delay\" (10.000s) must not be less than "
                  "\"retry_delay\" (6m00s)\n");
    /* Task b without its own delays is fine: 1s <= 10s. Both in defaults:
     * once, there. The default 5m cap applies against a long delay too. */
    assert_errors("pipeline: p\n"
                  "defaults: {retry_delay: 1h, max_retry_delay: 1m}\n"
                  "tasks: {a: {run: x}, b: {run: x}}\n",
                  "dag.yaml:2:46: error: \"max_retry_delay\" (1m00s) must not be less than "
                  "\"retry_delay\" (1h00m)\n");
    assert_errors("pipeline: p\ntasks: {a: {run: x, retry_delay: 10m}}\n",
                  "dag.yaml:2:34: error: \"max_retry_delay\" (5m00s) must not be less than "
                  "\"retry_delay\" (10m00s)\n");
}

/* ---- trigger_rule ---- */

static void test_trigger_rule(void **state)
{
    (void)state;
    loom_dag_t *dag = parse_ok("pipeline: p\n"
                               "tasks:\n"
                               "  a: {run: x}\n"
                               "  b: {run: x, needs: a, trigger_rule: all_done}\n"
                               "  c: {run: x, needs: a, trigger_rule: one_failed}\n"
                               "  d: {run: x, needs: a, trigger_rule: all_success}\n");
    assert_int_equal(dag->tasks[0].rule, LOOM_RULE_ALL_SUCCESS);
    assert_int_equal(dag->tasks[1].rule, LOOM_RULE_ALL_DONE);
    assert_int_equal(dag->tasks[2].rule, LOOM_RULE_ONE_FAILED);
    assert_int_equal(dag->tasks[3].rule, LOOM_RULE_ALL_SUCCESS);
    loom_dag_destroy(&dag);
    assert_errors("pipeline: p\ntasks: {a: {run: x, trigger_rule: one_fail}}\n",
                  "dag.yaml:2:35: error: \"trigger_rule\" must be one of all_success, all_done, "
                  "one_failed, got \"one_fail\"; did you mean \"one_failed\"?\n");
}

/* ---- resources ---- */

static void test_resources(void **state)
{
    (void)state;
    loom_dag_t *dag = parse_ok("pipeline: p\n"
                               "tasks:\n"
                               "  train:\n"
                               "    run: x\n"
                               "    resources:\n"
                               "      cpus: 0.5\n"
                               "      memory: 4G\n"
                               "      gpus: 2\n"
                               "      gpu_model: A100\n"
                               "      gpu_memory: 40G\n"
                               "      labels: {zone: eu-west, tier: gold}\n"
                               "      pool: training\n");
    const loom_dag_resources_t *r = &dag->tasks[0].resources;
    assert_true(r->cpus == 0.5);
    assert_int_equal(r->memory_bytes, 4ull << 30);
    assert_int_equal(r->gpus, 2);
    assert_string_equal(r->gpu_model, "A100");
    assert_int_equal(r->gpu_memory_bytes, 40ull << 30);
    assert_int_equal(r->n_labels, 2);
    assert_string_equal(r->labels[1].name, "tier");
    assert_string_equal(r->labels[1].value, "gold");
    assert_string_equal(r->pool, "training");
    loom_dag_destroy(&dag);

    assert_errors("pipeline: p\n"
                  "tasks:\n"
                  "  a:\n"
                  "    run: x\n"
                  "    resources:\n"
                  "      cpu: 2\n"
                  "      cpus: 0\n"
                  "      memory: 4X\n"
                  "      gpus: -1\n"
                  "      gpu_memory: 8G\n"
                  "      labels: {bad name: x, ok: [1]}\n"
                  "      pool: .hidden\n",
                  "dag.yaml:6:7: error: unknown key \"cpu\" in \"resources\"; did you mean "
                  "\"cpus\"?\n"
                  "dag.yaml:7:13: error: \"cpus\" must be a number more than 0, such as 2 or 0.5, "
                  "got \"0\"\n"
                  "dag.yaml:8:15: error: \"memory\" must be a size more than 0, such as \"512M\" "
                  "or \"4G\", got \"4X\"\n"
                  "dag.yaml:9:13: error: \"gpus\" must be an integer 0..1024, got \"-1\"\n"
                  "dag.yaml:10:7: error: \"gpu_memory\" needs \"gpus\" of at least 1\n"
                  "dag.yaml:11:16: error: invalid label name \"bad name\": use 1-63 letters, "
                  "digits, '_', '.' or '-'\n"
                  "dag.yaml:11:33: error: label \"ok\" must be a string, got a list\n"
                  "dag.yaml:12:13: error: invalid pool name \".hidden\": use 1-63 letters, "
                  "digits, '_', '.' or '-', not starting with '.' or '-'\n");

    dag = parse_ok("pipeline: p\ntasks:\n  a:\n    run: x\n"
                   "    resources: {gpus: 1, gpu_memory: 10G, gpu_shared: true}\n");
    assert_true(dag->tasks[0].resources.gpu_shared);
    loom_dag_destroy(&dag);
    assert_errors("pipeline: p\ntasks:\n  a:\n    run: x\n"
                  "    resources: {gpus: 2, gpu_shared: true}\n",
                  "dag.yaml:5:5: error: \"gpu_shared\" needs \"gpus: 1\" and \"gpu_memory\" "
                  "(how much of the GPU the task uses)\n");
}

/* ---- inputs, outputs, metrics, cache ---- */

static void test_files(void **state)
{
    (void)state;
    loom_dag_t *dag = parse_ok("pipeline: p\n"
                               "tasks:\n"
                               "  prep: {run: x, outputs: [data/*.csv, stats.json]}\n"
                               "  train:\n"
                               "    run: x\n"
                               "    needs: prep\n"
                               "    outputs: model.bin\n"
                               "    metrics: out/metrics.json\n"
                               "    cache: true\n"
                               "  eval:\n"
                               "    run: x\n"
                               "    needs: train\n"
                               "    inputs: [\"train:model.bin\", \"prep:*\"]\n");
    const loom_dag_task_t *prep = &dag->tasks[0], *train = &dag->tasks[1], *eval = &dag->tasks[2];
    assert_int_equal(prep->n_outputs, 2);
    assert_string_equal(prep->outputs[0], "data/*.csv");
    assert_int_equal(train->n_outputs, 1);
    assert_string_equal(train->metrics, "out/metrics.json");
    assert_int_equal(train->cache, 1);
    assert_int_equal(prep->cache, 0);
    assert_int_equal(eval->n_inputs, 2);
    assert_string_equal(eval->inputs[1], "prep:*"); /* needed through train */
    loom_dag_destroy(&dag);

    assert_errors(
        "pipeline: p\n"
        "tasks:\n"
        "  a: {run: x, outputs: [/etc/passwd, a/../../b, ''], metrics: ../m.json}\n"
        "  b:\n"
        "    run: x\n"
        "    inputs: [\"a:x\", \"c:/abs\", nocolon, \"zz:x\", \"a:x/../..\", \"c:*\"]\n"
        "  c: {run: x, needs: b}\n",
        "dag.yaml:3:25: error: output \"/etc/passwd\" must be relative to the task's "
        "working folder, not absolute\n"
        "dag.yaml:3:38: error: output \"a/../../b\" must not go up with \"..\"\n"
        "dag.yaml:3:49: error: output \"\" is empty\n"
        "dag.yaml:3:63: error: \"metrics\" file \"../m.json\" must not go up with "
        "\"..\"\n"
        "dag.yaml:6:14: error: task \"b\" takes inputs from \"a\" but does not need it\n"
        "dag.yaml:6:21: error: input \"c:/abs\": the path must be relative to the "
        "task's working folder, not absolute\n"
        "dag.yaml:6:31: error: input \"nocolon\" must be TASK:PATH or TASK:*\n"
        "dag.yaml:6:40: error: task \"b\" takes inputs from unknown task \"zz\"\n"
        "dag.yaml:6:48: error: input \"a:x/../..\": the path must not go up with "
        "\"..\"\n"
        "dag.yaml:6:61: error: task \"b\" takes inputs from \"c\" but does not need it\n");
    /* Control characters (a YAML escape can write any) are no part of a path. */
    assert_errors("pipeline: p\n"
                  "tasks:\n"
                  "  a: {run: x, outputs: [\"out\\x01/x\"], metrics: \"m\\n.json\"}\n",
                  "dag.yaml:3:25: error: output \"out\\x01/x\" must not hold a control character\n"
                  "dag.yaml:3:48: error: \"metrics\" file \"m\\n.json\" must not hold a control "
                  "character\n");
}

/* ---- foreach ---- */

static void test_foreach(void **state)
{
    (void)state;
    loom_dag_t *dag = parse_ok("pipeline: p\n"
                               "params: {lrs: [0.1, 0.01]}\n"
                               "tasks:\n"
                               "  a: {run: 'echo ${{ item }}', foreach: params.lrs}\n"
                               "  b: {run: [echo, '${{item}}'], foreach: [1, 2.50, x, \"y z\"]}\n"
                               "  c: {run: 'echo ${{ item }}', foreach: trigger.files}\n");
    assert_string_equal(dag->tasks[0].foreach, "params.lrs");
    assert_null(dag->tasks[0].foreach_json);
    assert_null(dag->tasks[1].foreach);
    assert_string_equal(dag->tasks[1].foreach_json, "[1,2.5,\"x\",\"y z\"]");
    assert_string_equal(dag->tasks[2].foreach, "trigger.files");
    loom_dag_destroy(&dag);

    assert_errors("pipeline: p\n"
                  "params: {lrs: [1], lr: 0.1}\n"
                  "tasks:\n"
                  "  a: {run: x, foreach: params.lsr}\n"
                  "  b: {run: x, foreach: params.lr}\n"
                  "  c: {run: x, foreach: []}\n"
                  "  d: {run: x, foreach: [[1]]}\n"
                  "  e: {run: x, foreach: '${{ params.lrs }}'}\n"
                  "  f: {run: x, foreach: lrs}\n"
                  "  g: {run: 'echo ${{ item }}'}\n",
                  "dag.yaml:4:24: error: unknown param \"lsr\"; did you mean \"lrs\"?\n"
                  "dag.yaml:5:24: error: \"foreach\" needs a list param; \"lr\" is a float\n"
                  "dag.yaml:6:24: error: \"foreach\" list is empty\n"
                  "dag.yaml:7:25: error: \"foreach\": list items must be single values, got a "
                  "list\n"
                  "dag.yaml:8:24: error: \"foreach\" takes the path itself, without ${{ }}: "
                  "foreach: params.NAME\n"
                  "dag.yaml:9:24: error: \"foreach\" must be params.NAME (a list param), "
                  "trigger.files or a list of values, got \"lrs\"\n"
                  "dag.yaml:10:18: error: task \"g\" uses ${{ item }} but has no \"foreach\"\n");
}

/* ---- if ---- */

static void test_if_conditions(void **state)
{
    (void)state;
    loom_dag_t *dag = parse_ok("pipeline: p\n"
                               "params: {min_auc: 0.8}\n"
                               "tasks:\n"
                               "  train: {run: x, metrics: m.json}\n"
                               "  evaluate: {run: x, needs: train, metrics: m.json}\n"
                               "  gate:\n"
                               "    needs: evaluate\n"
                               "    run: x\n"
                               "    if: tasks.evaluate.metrics.auc >= params.min_auc and\n"
                               "      tasks.train.status == 'succeeded' or event.force\n");
    assert_string_equal(dag->tasks[2].cond,
                        "tasks.evaluate.metrics.auc >= params.min_auc and tasks.train.status == "
                        "'succeeded' or event.force");
    assert_null(dag->tasks[0].cond);
    loom_dag_destroy(&dag);

    assert_errors("pipeline: p\n"
                  "params: {min_auc: 0.8}\n"
                  "tasks:\n"
                  "  train: {run: x}\n"
                  "  side: {run: x, metrics: m.json}\n"
                  "  a:\n"
                  "    needs: train\n"
                  "    run: x\n"
                  "    if: params.min_acu > 1 and tasks.side.metrics.auc > 0\n"
                  "  b:\n"
                  "    needs: train\n"
                  "    run: x\n"
                  "    if: tasks.train.metrics.auc > 0 or tasks.tran.status == 'x' or foo.bar\n"
                  "  c:\n"
                  "    run: x\n"
                  "    if: \"params.min_auc >= = 1\"\n"
                  "  d:\n"
                  "    run: x\n"
                  "    if: ''\n",
                  "dag.yaml:9:9: error: unknown param \"min_acu\"; did you mean \"min_auc\"?\n"
                  "dag.yaml:9:32: error: task \"a\" uses tasks.side.metrics but does not need "
                  "\"side\"\n"
                  "dag.yaml:13:9: error: task \"b\" uses tasks.train.metrics but \"train\" has no "
                  "\"metrics\" file\n"
                  "dag.yaml:13:40: error: task \"b\" uses tasks.tran.status but there is no task "
                  "\"tran\"; did you mean \"train\"?\n"
                  "dag.yaml:13:68: error: unknown reference \"foo.bar\"; use params.*, "
                  "tasks.*.status, tasks.*.metrics.*, event.*\n"
                  "dag.yaml:16:28: error: invalid condition in \"if\": \"=\" is not an operator; "
                  "use \"==\"\n"
                  "dag.yaml:19:10: error: invalid condition in \"if\": condition is empty\n");
}

/* Needed through other tasks counts; a cycle does not confuse the check. */
static void test_metrics_of_a_foreach_task_are_refused(void **state)
{
    (void)state;
    assert_errors(
        "pipeline: p\nparams:\n  xs: [1, 2]\ntasks:\n"
        "  sweep:\n    foreach: params.xs\n    run: x\n    metrics: m.json\n"
        "  pick:\n    needs: [sweep]\n    if: tasks.sweep.metrics.auc > 0.5\n    run: x\n",
        "dag.yaml:11:9: error: task \"pick\" uses tasks.sweep.metrics but \"sweep\" is a "
        "foreach task, whose copies each have their own metrics; gather them in a task "
        "that needs \"sweep\"\n");
}

static void test_references_follow_needs_transitively(void **state)
{
    (void)state;
    loom_dag_t *dag = parse_ok("pipeline: p\n"
                               "tasks:\n"
                               "  a: {run: x, metrics: m.json}\n"
                               "  b: {run: x, needs: a}\n"
                               "  c: {run: x, needs: b}\n"
                               "  d:\n"
                               "    needs: c\n"
                               "    if: tasks.a.metrics.x > 1 and tasks.b.status == 'ok'\n"
                               "    run: echo ${{ tasks.a.metrics.x }}\n");
    loom_dag_destroy(&dag);
    assert_errors("pipeline: p\n"
                  "tasks:\n"
                  "  a: {run: x, needs: c, metrics: m.json}\n"
                  "  b: {run: x, needs: a}\n"
                  "  c: {run: 'echo ${{ tasks.a.metrics.x }}', needs: b}\n"
                  "  d: {run: 'echo ${{ tasks.d.metrics.x }}', metrics: m.json}\n",
                  "dag.yaml:3:3: error: cycle: a -> b -> c -> a\n"
                  "dag.yaml:6:18: error: task \"d\" uses tasks.d.metrics but does not need "
                  "\"d\"\n");
}

/* ---- triggers ---- */

static void test_triggers_normalised(void **state)
{
    (void)state;
    loom_dag_t *dag = parse_ok("pipeline: p\n"
                               "params: {full: false, n: 1}\n"
                               "triggers:\n"
                               "  - schedule: \"0  3 * * *\"\n"
                               "    timezone: Europe/Berlin\n"
                               "    catchup: latest\n"
                               "    params: {full: true}\n"
                               "  - schedule: '@daily'\n"
                               "  - data: /srv/incoming\n"
                               "  - data:\n"
                               "      path: /srv/landing\n"
                               "      glob: \"*.parquet\"\n"
                               "      recursive: true\n"
                               "      settle: 30s\n"
                               "      batch: {max_files: 100, max_wait: 10m}\n"
                               "    when: event.count > 10\n"
                               "  - event: drift\n"
                               "    when: event.score >= 0.3 and params.n > 0\n"
                               "    params: {n: 5}\n"
                               "tasks: {a: {run: x}}\n");
    assert_string_equal(
        dag->triggers_json,
        "[{\"kind\":\"schedule\",\"cron\":\"0 3 * * *\",\"timezone\":\"Europe/Berlin\","
        "\"catchup\":\"latest\",\"params\":{\"full\":true}},"
        "{\"kind\":\"schedule\",\"cron\":\"@daily\",\"timezone\":\"UTC\",\"catchup\":\"none\"},"
        "{\"kind\":\"data\",\"path\":\"/srv/incoming\",\"glob\":\"*\",\"recursive\":false,"
        "\"settle_ms\":5000,\"batch\":{\"max_files\":1,\"max_wait_ms\":0}},"
        "{\"kind\":\"data\",\"path\":\"/srv/landing\",\"glob\":\"*.parquet\",\"recursive\":true,"
        "\"settle_ms\":30000,\"batch\":{\"max_files\":100,\"max_wait_ms\":600000},"
        "\"when\":\"event.count > 10\"},"
        "{\"kind\":\"event\",\"event\":\"drift\",\"when\":\"event.score >= 0.3 and params.n > "
        "0\",\"params\":{\"n\":5}}]");
    assert_null(dag->concurrency_json);
    loom_dag_destroy(&dag);

    dag = parse_ok("pipeline: p\ntriggers: []\ntasks: {a: {run: x}}\n");
    assert_null(dag->triggers_json);
    loom_dag_destroy(&dag);
}

static void test_trigger_errors(void **state)
{
    (void)state;
    assert_errors("pipeline: p\n"
                  "params: {n: 1}\n"
                  "triggers:\n"
                  "  - schedule: 0 3 * *\n"
                  "    timezone: ../etc\n"
                  "    catchup: some\n"
                  "  - shedule: '@daily'\n"
                  "  - data: relative/dir\n"
                  "    timezone: UTC\n"
                  "  - data: {glob: a/*.csv, settle: soon, batch: {max_files: 0, wait: 1m}}\n"
                  "  - event: drift\n"
                  "    schedule: '@hourly'\n"
                  "    when: tasks.a.status == 'x'\n"
                  "    params: {m: 1, n: many}\n"
                  "  - event: 'bad name'\n"
                  "    when: event.x >\n"
                  "  - just a string\n"
                  "tasks: {a: {run: x}}\n",
                  "dag.yaml:4:15: error: invalid \"schedule\": expected 5 fields (minute hour "
                  "day-of-month month day-of-week), got 4 in \"0 3 * *\"\n"
                  "dag.yaml:5:15: error: \"timezone\" must be a zone name such as \"UTC\" or "
                  "\"Europe/Berlin\", got \"../etc\"\n"
                  "dag.yaml:6:14: error: \"catchup\" must be one of none, latest, all, got "
                  "\"some\"; did you mean \"none\"?\n"
                  "dag.yaml:7:5: error: unknown key \"shedule\" in a trigger; did you mean "
                  "\"schedule\"?\n"
                  "dag.yaml:7:5: error: a trigger needs one of \"schedule\", \"data\" or "
                  "\"event\"\n"
                  "dag.yaml:8:11: error: the folder to watch must be an absolute path without "
                  "\"..\" (or s3://BUCKET/PREFIX), got \"relative/dir\"\n"
                  "dag.yaml:9:5: error: \"timezone\" applies only to a \"schedule\" trigger\n"
                  "dag.yaml:10:11: error: \"data\" needs a \"path\": the folder to watch\n"
                  "dag.yaml:10:18: error: \"glob\" matches file names, such as \"*.csv\"; it "
                  "cannot hold \"/\"\n"
                  "dag.yaml:10:35: error: \"settle\" must be a duration such as \"90s\", \"10m\" "
                  "or \"2h\", got \"soon\"\n"
                  "dag.yaml:10:60: error: \"max_files\" must be an integer 1..100000, got \"0\"\n"
                  "dag.yaml:10:63: error: unknown key \"wait\" in \"batch\"\n"
                  "dag.yaml:12:5: error: a trigger has one kind: \"event\" and \"schedule\" "
                  "cannot be combined\n"
                  "dag.yaml:13:11: error: unknown reference \"tasks.a.status\"; use params.*, "
                  "event.*\n"
                  "dag.yaml:14:14: error: unknown param \"m\"\n"
                  "dag.yaml:14:23: error: param \"n\" must be an int, got \"many\"\n"
                  "dag.yaml:15:12: error: invalid event name \"bad name\": use 1-63 letters, "
                  "digits, '_', '.' or '-', not starting with '.' or '-'\n"
                  "dag.yaml:16:20: error: invalid condition in \"when\": expected a value, got "
                  "the end of the condition\n"
                  "dag.yaml:17:5: error: a trigger must be a mapping such as {schedule: \"0 3 * * "
                  "*\"}, got \"just a string\"\n");
}

/* ---- concurrency ---- */

static void test_models(void **state)
{
    (void)state;
    loom_dag_t *dag = parse_ok("pipeline: p\n"
                               "tasks:\n"
                               "  t:\n"
                               "    run: x\n"
                               "    model: {name: churn, path: out/model.pkl,\n"
                               "            promote: {alias: champion, metric: loss, "
                               "direction: min}}\n"
                               "    metrics: m.json\n"
                               "    outputs: [out]\n");
    assert_string_equal(dag->tasks[0].model_name, "churn");
    assert_string_equal(dag->tasks[0].model_path, "out/model.pkl");
    assert_string_equal(dag->tasks[0].promote_alias, "champion");
    assert_string_equal(dag->tasks[0].promote_metric, "loss");
    assert_int_equal(dag->tasks[0].promote_lower, 1);
    loom_dag_destroy(&dag);
    assert_errors("pipeline: p\n"
                  "tasks:\n"
                  "  a: {run: x, outputs: [m.pkl], model: {name: 'bad name', path: m.pkl}}\n"
                  "  b: {run: x, outputs: [m.pkl], model: {path: other.pkl, promote: {metric: "
                  "auc}}}\n"
                  "  c: {run: x, foreach: [1, 2], outputs: [m.pkl], model: {name: m, path: "
                  "m.pkl}}\n"
                  "  d: {run: x, model: [m]}\n",
                  "dag.yaml:3:47: error: invalid model name \"bad name\": use 1-63 letters, "
                  "digits, '_', '.' or '-'\n"
                  "dag.yaml:4:40: error: \"model\" needs a \"name\"\n"
                  "dag.yaml:4:40: error: \"promote\" compares metrics: the task needs "
                  "\"metrics: FILE\"\n"
                  "dag.yaml:4:40: error: model path \"other.pkl\" must be one of the task's "
                  "\"outputs\"\n"
                  "dag.yaml:4:67: error: \"promote\" needs an \"alias\", such as champion\n"
                  "dag.yaml:5:57: error: a \"foreach\" task cannot register a model (one version "
                  "per run)\n"
                  "dag.yaml:6:22: error: \"model\" must be a mapping {name, path, promote}, got a "
                  "list\n");
}

static void test_concurrency(void **state)
{
    (void)state;
    loom_dag_t *dag = parse_ok("pipeline: p\n"
                               "concurrency: {max_active_runs: 3, on_overlap: cancel_running, "
                               "debounce: 2s, cooldown: 1h}\n"
                               "tasks: {a: {run: x}}\n");
    assert_string_equal(dag->concurrency_json,
                        "{\"max_active_runs\":3,\"on_overlap\":\"cancel_running\","
                        "\"debounce_ms\":2000,\"cooldown_ms\":3600000}");
    loom_dag_destroy(&dag);
    dag = parse_ok("pipeline: p\nconcurrency: {}\ntasks: {a: {run: x}}\n");
    assert_string_equal(dag->concurrency_json, "{\"max_active_runs\":1,\"on_overlap\":\"queue\","
                                               "\"debounce_ms\":0,\"cooldown_ms\":0}");
    loom_dag_destroy(&dag);
    assert_errors("pipeline: p\n"
                  "concurrency:\n"
                  "  max_active_runs: 0\n"
                  "  on_overlap: skipp\n"
                  "  debounce: later\n"
                  "  cooldwn: 1m\n"
                  "tasks: {a: {run: x}}\n",
                  "dag.yaml:3:20: error: \"max_active_runs\" must be an integer 1..10000, got "
                  "\"0\"\n"
                  "dag.yaml:4:15: error: \"on_overlap\" must be one of queue, skip, "
                  "cancel_running, got \"skipp\"; did you mean \"skip\"?\n"
                  "dag.yaml:5:13: error: \"debounce\" must be a duration such as \"90s\", \"10m\" "
                  "or \"2h\", got \"later\"\n"
                  "dag.yaml:6:3: error: unknown key \"cooldwn\" in \"concurrency\"; did you mean "
                  "\"cooldown\"?\n");
}

/* ---- did you mean, across the new keys ---- */

static void test_new_keys_suggest(void **state)
{
    (void)state;
    assert_errors("pipeline: p\n"
                  "param: {}\n"
                  "default: {}\n"
                  "trigers: []\n"
                  "concurency: {}\n"
                  "tasks:\n"
                  "  a:\n"
                  "    run: x\n"
                  "    trigger_rul: all_done\n"
                  "    retry_dealy: 1s\n"
                  "    for_each: [1]\n"
                  "    ressources: {}\n"
                  "    output: [x]\n"
                  "    fi: 'true'\n",
                  "dag.yaml:2:1: error: unknown key \"param\"; did you mean \"params\"?\n"
                  "dag.yaml:3:1: error: unknown key \"default\"; did you mean \"defaults\"?\n"
                  "dag.yaml:4:1: error: unknown key \"trigers\"; did you mean \"triggers\"?\n"
                  "dag.yaml:5:1: error: unknown key \"concurency\"; did you mean "
                  "\"concurrency\"?\n"
                  "dag.yaml:9:5: error: unknown key \"trigger_rul\" in task \"a\"; did you mean "
                  "\"trigger_rule\"?\n"
                  "dag.yaml:10:5: error: unknown key \"retry_dealy\" in task \"a\"; did you mean "
                  "\"retry_delay\"?\n"
                  "dag.yaml:11:5: error: unknown key \"for_each\" in task \"a\"; did you mean "
                  "\"foreach\"?\n"
                  "dag.yaml:12:5: error: unknown key \"ressources\" in task \"a\"; did you mean "
                  "\"resources\"?\n"
                  "dag.yaml:13:5: error: unknown key \"output\" in task \"a\"; did you mean "
                  "\"outputs\"?\n"
                  "dag.yaml:14:5: error: unknown key \"fi\" in task \"a\"; did you mean "
                  "\"if\"?\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_params_shorthand_and_full_forms),
        cmocka_unit_test(test_param_errors),
        cmocka_unit_test(test_defaults_merge_into_every_task),
        cmocka_unit_test(test_defaults_errors_reported_once),
        cmocka_unit_test(test_retry_backoff),
        cmocka_unit_test(test_trigger_rule),
        cmocka_unit_test(test_resources),
        cmocka_unit_test(test_files),
        cmocka_unit_test(test_foreach),
        cmocka_unit_test(test_if_conditions),
        cmocka_unit_test(test_references_follow_needs_transitively),
        cmocka_unit_test(test_metrics_of_a_foreach_task_are_refused),
        cmocka_unit_test(test_triggers_normalised),
        cmocka_unit_test(test_trigger_errors),
        cmocka_unit_test(test_concurrency),
        cmocka_unit_test(test_models),
        cmocka_unit_test(test_new_keys_suggest),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
