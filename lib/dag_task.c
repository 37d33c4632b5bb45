/* A task's keys (one handler each), its needs, and `defaults`: task keys
 * written once for every task. A task's own value wins; env maps merge. */
#include "dag_int.h"

#include <math.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void dag_task_free(loom_dag_task_t *t)
{
    free(t->name);
    free(t->shell);
    for (size_t i = 0; i < t->argc; i++) {
        free(t->argv[i]);
        if (t->argv_tmpl) loom_tmpl_free(&t->argv_tmpl[i]);
    }
    free(t->argv);
    free(t->argv_tmpl);
    loom_tmpl_free(&t->shell_tmpl);
    for (size_t i = 0; i < t->n_needs; i++) free(t->needs[i]);
    free(t->needs);
    free(t->needs_idx);
    dag_env_free(t->env, t->n_env);
    free(t->cond);
    free(t->resources.gpu_model);
    dag_env_free(t->resources.labels, t->resources.n_labels);
    free(t->resources.pool);
    free(t->foreach);
    free(t->foreach_json);
    free(t->metrics);
    for (size_t i = 0; i < t->n_inputs; i++) free(t->inputs[i]);
    free(t->inputs);
    for (size_t i = 0; i < t->n_outputs; i++) free(t->outputs[i]);
    free(t->outputs);
    free(t->model_name);
    free(t->model_path);
    free(t->promote_alias);
    free(t->promote_metric);
    dag_secrets_free(t->secrets, t->n_secrets);
}

static void task_init(loom_dag_task_t *t)
{
    t->rule = LOOM_RULE_ALL_SUCCESS;
    t->retry_delay_ms = 1000;
    t->max_retry_delay_ms = 5 * 60 * 1000;
    t->retry_jitter = 1;
}

static bool blank(const char *s)
{
    while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r') s++;
    return *s == '\0';
}

/* ---- run, needs, env, timeout, retries (the minimal format) ---- */

static void task_run(pctx *c, void *obj, const loom_ynode_t *k, const loom_ynode_t *v)
{
    loom_dag_task_t *t = obj;
    char got[LOOM_YQUOTE_MAX];
    if (v->kind == LOOM_YSCALAR && !loom_ynode_is_null(v) && !blank(v->str)) {
        t->shell = loom_xstrdup(v->str);
        dag_parse_tmpl(c, v, 1, &t->shell_tmpl);
        return;
    }
    if (v->kind != LOOM_YSEQ || v->n_items == 0) {
        loom_ynode_describe(v, got, sizeof got);
        dag_error(c, dag_where(k, v),
                  "\"run\" must be a non-empty string or list of strings, got %s", got);
        return;
    }
    /* Argv entries are taken literally: no shell, so no null or number. */
    t->argv = loom_xcalloc(v->n_items + 1, sizeof *t->argv);
    t->argv_tmpl = loom_xcalloc(v->n_items, sizeof *t->argv_tmpl);
    for (size_t i = 0; i < v->n_items; i++) {
        const loom_ynode_t *a = v->items[i];
        t->argv[t->argc++] = loom_xstrdup(a->kind == LOOM_YSCALAR ? a->str : "");
        if (a->kind != LOOM_YSCALAR) {
            loom_ynode_describe(a, got, sizeof got);
            dag_error(c, a, "\"run\" list entries must be strings, got %s", got);
        } else if (i == 0 && blank(a->str)) {
            dag_error(c, a, "\"run\" list must start with a program name");
        } else {
            dag_parse_tmpl(c, a, 0, &t->argv_tmpl[i]);
        }
    }
}

static int cmp_key_task(const void *key, const void *elem)
{
    return strcmp(key, (*(loom_dag_task_t *const *)elem)->name);
}

static void add_need(pctx *c, loom_dag_task_t *t, const loom_ynode_t *item)
{
    char qt[LOOM_YQUOTE_MAX], qn[LOOM_YQUOTE_MAX], hint[LOOM_YQUOTE_MAX + 24];
    if (item->kind != LOOM_YSCALAR || loom_ynode_is_null(item)) {
        loom_ynode_describe(item, qn, sizeof qn);
        dag_error(c, item, "\"needs\" entries must be task names, got %s", qn);
        return;
    }
    loom_dag_t *d = c->dag;
    loom_dag_task_t **hit =
        bsearch(item->str, c->by_name, d->n_tasks, sizeof *c->by_name, cmp_key_task);
    dag_qname(t->name, qt);
    dag_qname(item->str, qn);
    if (!hit) {
        dag_suggest(c, item->str, d->tasks, d->n_tasks, sizeof *d->tasks, hint, sizeof hint);
        dag_error(c, item, "task %s needs unknown task %s%s", qt, qn, hint);
        return;
    }
    size_t j = (size_t)(*hit - d->tasks), i = (size_t)(t - d->tasks);
    if (j == i) {
        dag_error(c, item, "task %s needs itself", qt);
    } else if (c->seen[j] == i + 1) {
        dag_error(c, item, "task %s lists %s in \"needs\" twice", qt, qn);
    } else {
        c->seen[j] = i + 1;
        t->needs[t->n_needs] = loom_xstrdup(item->str);
        t->needs_idx[t->n_needs++] = j;
    }
}

/* A scalar stands for a list of one (needs: a, inputs: "a:x"); null is none. */
static const loom_ynode_t *const *as_list(const loom_ynode_t *const *v, size_t *n)
{
    if ((*v)->kind == LOOM_YSCALAR) {
        *n = loom_ynode_is_null(*v) ? 0 : 1;
        return v;
    }
    *n = (*v)->n_items;
    return (const loom_ynode_t *const *)(*v)->items;
}

static void task_needs(pctx *c, void *obj, const loom_ynode_t *k, const loom_ynode_t *v)
{
    loom_dag_task_t *t = obj;
    if (v->kind == LOOM_YMAP) {
        dag_error(c, v, "\"needs\" must be a task name or a list of task names, got a mapping");
        return;
    }
    size_t n;
    const loom_ynode_t *const *items = as_list(&v, &n);
    if (n == 0) return;
    t->needs = loom_xcalloc(n, sizeof *t->needs);
    t->needs_idx = loom_xcalloc(n, sizeof *t->needs_idx);
    for (size_t i = 0; i < n; i++) add_need(c, t, items[i]);
}

static void task_env(pctx *c, void *obj, const loom_ynode_t *k, const loom_ynode_t *v)
{
    loom_dag_task_t *t = obj;
    dag_parse_env(c, k, v, &t->env, &t->n_env);
}

static void task_timeout(pctx *c, void *obj, const loom_ynode_t *k, const loom_ynode_t *v)
{
    loom_dag_task_t *t = obj;
    uint64_t ms = 0;
    if (loom_ynode_is_null(v) || !dag_want_duration(c, k, v, &ms)) return;
    if (ms == 0) {
        char got[LOOM_YQUOTE_MAX];
        loom_ynode_describe(v, got, sizeof got);
        dag_error(c, v, "\"timeout\" must be more than 0, got %s", got);
        return;
    }
    t->timeout_ms = ms;
}

static void task_retries(pctx *c, void *obj, const loom_ynode_t *k, const loom_ynode_t *v)
{
    loom_dag_task_t *t = obj;
    if (loom_ynode_is_null(v)) return;
    int64_t n;
    if (v->kind != LOOM_YSCALAR || loom_parse_i64(v->str, 0, 100, &n) != 0) {
        char got[LOOM_YQUOTE_MAX];
        loom_ynode_describe(v, got, sizeof got);
        dag_error(c, v, "\"retries\" must be an integer 0..100, got %s", got);
        return;
    }
    t->retries = (uint32_t)n;
}

static void task_priority(pctx *c, void *obj, const loom_ynode_t *k, const loom_ynode_t *v)
{
    loom_dag_task_t *t = obj;
    if (loom_ynode_is_null(v)) return;
    int64_t n;
    if (v->kind != LOOM_YSCALAR || loom_parse_i64(v->str, -1000, 1000, &n) != 0) {
        char got[LOOM_YQUOTE_MAX];
        loom_ynode_describe(v, got, sizeof got);
        dag_error(c, v, "\"priority\" must be an integer -1000..1000, got %s", got);
        return;
    }
    t->priority = (int32_t)n;
}

/* ---- retry backoff, trigger rule, condition, cache ---- */

static void task_retry_delay(pctx *c, void *obj, const loom_ynode_t *k, const loom_ynode_t *v)
{
    loom_dag_task_t *t = obj;
    if (loom_ynode_is_null(v) || !dag_want_duration(c, k, v, &t->retry_delay_ms)) return;
    c->keys.retry_delay = v;
    c->keys.retry_delay_default = c->quiet;
}

static void task_max_retry_delay(pctx *c, void *obj, const loom_ynode_t *k, const loom_ynode_t *v)
{
    loom_dag_task_t *t = obj;
    if (loom_ynode_is_null(v) || !dag_want_duration(c, k, v, &t->max_retry_delay_ms)) return;
    c->keys.max_retry_delay = v;
    c->keys.max_retry_delay_default = c->quiet;
}

static void task_retry_jitter(pctx *c, void *obj, const loom_ynode_t *k, const loom_ynode_t *v)
{
    loom_dag_task_t *t = obj;
    if (!loom_ynode_is_null(v)) dag_want_bool(c, k, v, &t->retry_jitter);
}

static void task_cache(pctx *c, void *obj, const loom_ynode_t *k, const loom_ynode_t *v)
{
    loom_dag_task_t *t = obj;
    if (!loom_ynode_is_null(v)) dag_want_bool(c, k, v, &t->cache);
}

static void task_trigger_rule(pctx *c, void *obj, const loom_ynode_t *k, const loom_ynode_t *v)
{
    static const char *const rules[] = {"all_success", "all_done", "one_failed", NULL};
    loom_dag_task_t *t = obj;
    if (loom_ynode_is_null(v)) return;
    int r = dag_want_enum(c, k, v, rules);
    if (r >= 0) t->rule = (loom_trigger_rule)r;
}

static void task_if(pctx *c, void *obj, const loom_ynode_t *k, const loom_ynode_t *v)
{
    loom_dag_task_t *t = obj;
    dag_check_cond(c, k, v, c->cur, &t->cond);
}

/* ---- resources ---- */

static void res_cpus(pctx *c, void *obj, const loom_ynode_t *k, const loom_ynode_t *v)
{
    loom_dag_resources_t *r = obj;
    char *end = NULL;
    double n = v->kind == LOOM_YSCALAR ? strtod(v->str, &end) : 0;
    if (end && end != v->str && *end == '\0' && isfinite(n) && n > 0 && n <= 1e6) {
        r->cpus = n;
        return;
    }
    char got[LOOM_YQUOTE_MAX];
    loom_ynode_describe(v, got, sizeof got);
    dag_error(c, dag_where(k, v), "\"cpus\" must be a number more than 0, such as 2 or 0.5, got %s",
              got);
}

static bool want_size(pctx *c, const loom_ynode_t *k, const loom_ynode_t *v, uint64_t *out)
{
    if (v->kind == LOOM_YSCALAR && loom_parse_size(v->str, out) == 0 && *out > 0) return true;
    char got[LOOM_YQUOTE_MAX];
    loom_ynode_describe(v, got, sizeof got);
    dag_error(c, dag_where(k, v),
              "\"%s\" must be a size more than 0, such as \"512M\" or \"4G\", "
              "got %s",
              k->str, got);
    return false;
}

static void res_memory(pctx *c, void *obj, const loom_ynode_t *k, const loom_ynode_t *v)
{
    loom_dag_resources_t *r = obj;
    want_size(c, k, v, &r->memory_bytes);
}

static void res_gpu_memory(pctx *c, void *obj, const loom_ynode_t *k, const loom_ynode_t *v)
{
    loom_dag_resources_t *r = obj;
    want_size(c, k, v, &r->gpu_memory_bytes);
}

static void res_gpus(pctx *c, void *obj, const loom_ynode_t *k, const loom_ynode_t *v)
{
    loom_dag_resources_t *r = obj;
    int64_t n;
    if (v->kind == LOOM_YSCALAR && loom_parse_i64(v->str, 0, 1024, &n) == 0) {
        r->gpus = (uint32_t)n;
        return;
    }
    char got[LOOM_YQUOTE_MAX];
    loom_ynode_describe(v, got, sizeof got);
    dag_error(c, dag_where(k, v), "\"gpus\" must be an integer 0..1024, got %s", got);
}

static void res_gpu_model(pctx *c, void *obj, const loom_ynode_t *k, const loom_ynode_t *v)
{
    loom_dag_resources_t *r = obj;
    const char *s = dag_want_string(c, k, v);
    if (s) r->gpu_model = loom_xstrdup(s);
}

static void res_pool(pctx *c, void *obj, const loom_ynode_t *k, const loom_ynode_t *v)
{
    loom_dag_resources_t *r = obj;
    const char *s = dag_want_string(c, k, v);
    if (!s) return;
    char q[LOOM_YQUOTE_MAX];
    if (!loom_name_valid(s))
        dag_error(c, v,
                  "invalid pool name %s: use 1-63 letters, digits, '_', '.' or '-', not starting "
                  "with '.' or '-'",
                  dag_qname(s, q));
    else
        r->pool = loom_xstrdup(s);
}

static void res_labels(pctx *c, void *obj, const loom_ynode_t *k, const loom_ynode_t *v)
{
    loom_dag_resources_t *r = obj;
    char q[LOOM_YQUOTE_MAX], got[LOOM_YQUOTE_MAX];
    if (v->kind != LOOM_YMAP) {
        loom_ynode_describe(v, got, sizeof got);
        dag_error(c, dag_where(k, v), "\"labels\" must be a mapping of name: value, got %s", got);
        return;
    }
    r->labels = loom_xcalloc(v->n_pairs ? v->n_pairs : 1, sizeof *r->labels);
    for (size_t i = 0; i < v->n_pairs; i++) {
        const loom_ynode_t *name = v->pairs[i].key, *val = v->pairs[i].value;
        dag_qname(name->str, q);
        if (!loom_name_valid(name->str)) {
            dag_error(c, name, "invalid label name %s: use 1-63 letters, digits, '_', '.' or '-'",
                      q);
        } else if (val->kind != LOOM_YSCALAR || loom_ynode_is_null(val)) {
            loom_ynode_describe(val, got, sizeof got);
            dag_error(c, dag_where(name, val), "label %s must be a string, got %s", q, got);
        } else {
            r->labels[r->n_labels].name = loom_xstrdup(name->str);
            r->labels[r->n_labels++].value = loom_xstrdup(val->str);
        }
    }
}

static void res_gpu_shared(pctx *c, void *obj, const loom_ynode_t *k, const loom_ynode_t *v)
{
    loom_dag_resources_t *r = obj;
    if (!loom_ynode_is_null(v)) dag_want_bool(c, k, v, &r->gpu_shared);
}

static const key_handler res_keys[] = {
    {"cpus", res_cpus},           {"memory", res_memory},         {"gpus", res_gpus},
    {"gpu_model", res_gpu_model}, {"gpu_memory", res_gpu_memory}, {"labels", res_labels},
    {"pool", res_pool},           {"gpu_shared", res_gpu_shared},
};

static void task_resources(pctx *c, void *obj, const loom_ynode_t *k, const loom_ynode_t *v)
{
    loom_dag_task_t *t = obj;
    if (loom_ynode_is_null(v)) return;
    if (v->kind != LOOM_YMAP) {
        char got[LOOM_YQUOTE_MAX];
        loom_ynode_describe(v, got, sizeof got);
        dag_error(c, v, "\"resources\" must be a mapping such as {cpus: 2, memory: 4G}, got %s",
                  got);
        return;
    }
    dag_dispatch(c, &t->resources, v, res_keys, sizeof res_keys / sizeof res_keys[0],
                 " in \"resources\"");
    static const char *const gpu_only[] = {"gpu_model", "gpu_memory"};
    for (size_t i = 0; i < v->n_pairs && t->resources.gpus == 0; i++)
        for (size_t g = 0; g < 2; g++)
            if (strcmp(v->pairs[i].key->str, gpu_only[g]) == 0)
                dag_error(c, v->pairs[i].key, "\"%s\" needs \"gpus\" of at least 1", gpu_only[g]);
    const loom_dag_resources_t *r = &t->resources;
    if (r->gpu_shared && (r->gpus != 1 || !r->gpu_memory_bytes))
        dag_error(c, k,
                  "\"gpu_shared\" needs \"gpus: 1\" and \"gpu_memory\" (how much of the GPU the "
                  "task uses)");
}

/* ---- files: inputs, outputs, metrics ---- */

/* The entries of a list of strings (or of one string) in a new array. */
static char **string_list(pctx *c, const loom_ynode_t *k, const loom_ynode_t *v, size_t *n_out,
                          const loom_ynode_t ***nodes)
{
    char got[LOOM_YQUOTE_MAX];
    size_t n;
    if (v->kind == LOOM_YMAP) {
        dag_error(c, v, "\"%s\" must be a list of paths, got a mapping", k->str);
        return NULL;
    }
    const loom_ynode_t *const *items = as_list(&v, &n);
    char **out = loom_xcalloc(n ? n : 1, sizeof *out);
    *nodes = loom_xcalloc(n ? n : 1, sizeof **nodes);
    for (size_t i = 0; i < n; i++) {
        if (items[i]->kind != LOOM_YSCALAR || loom_ynode_is_null(items[i])) {
            loom_ynode_describe(items[i], got, sizeof got);
            dag_error(c, items[i], "\"%s\" entries must be strings, got %s", k->str, got);
            continue;
        }
        (*nodes)[*n_out] = items[i];
        out[(*n_out)++] = loom_xstrdup(items[i]->str);
    }
    return out;
}

static void task_inputs(pctx *c, void *obj, const loom_ynode_t *k, const loom_ynode_t *v)
{
    loom_dag_task_t *t = obj;
    const loom_ynode_t **nodes = NULL;
    t->inputs = string_list(c, k, v, &t->n_inputs, &nodes);
    char q[LOOM_YQUOTE_MAX];
    for (size_t i = 0; i < t->n_inputs; i++) {
        const char *s = t->inputs[i], *colon = strchr(s, ':');
        char *task = colon ? loom_xstrndup(s, (size_t)(colon - s)) : NULL;
        const char *why = colon ? dag_rel_path_problem(colon + 1) : NULL;
        dag_qname(s, q);
        if (!task || !loom_name_valid(task))
            dag_error(c, nodes[i], "input %s must be TASK:PATH or TASK:*", q);
        else if (why)
            dag_error(c, nodes[i], "input %s: the path %s", q, why);
        else
            dag_add_dep(c, DEP_INPUT, task, nodes[i]->line, nodes[i]->col);
        free(task);
    }
    free(nodes);
}

static void task_outputs(pctx *c, void *obj, const loom_ynode_t *k, const loom_ynode_t *v)
{
    loom_dag_task_t *t = obj;
    const loom_ynode_t **nodes = NULL;
    t->outputs = string_list(c, k, v, &t->n_outputs, &nodes);
    char q[LOOM_YQUOTE_MAX];
    for (size_t i = 0; i < t->n_outputs; i++) {
        const char *why = dag_rel_path_problem(t->outputs[i]);
        if (why) dag_error(c, nodes[i], "output %s %s", dag_qname(t->outputs[i], q), why);
    }
    free(nodes);
}

static void task_metrics(pctx *c, void *obj, const loom_ynode_t *k, const loom_ynode_t *v)
{
    loom_dag_task_t *t = obj;
    if (loom_ynode_is_null(v)) return;
    const char *s = dag_want_string(c, k, v), *why = s ? dag_rel_path_problem(s) : NULL;
    char q[LOOM_YQUOTE_MAX];
    if (why)
        dag_error(c, v, "\"metrics\" file %s %s", dag_qname(s, q), why);
    else if (s)
        t->metrics = loom_xstrdup(s);
}

/* ---- model ---- */

static void model_promote(pctx *c, loom_dag_task_t *t, const loom_ynode_t *k, const loom_ynode_t *v)
{
    static const char *const keys[] = {"alias", "metric", "direction", NULL};
    static const char *const directions[] = {"max", "min", NULL};
    char q[LOOM_YQUOTE_MAX], hint[LOOM_YQUOTE_MAX + 24];
    if (v->kind != LOOM_YMAP) {
        loom_ynode_describe(v, q, sizeof q);
        dag_error(c, dag_where(k, v),
                  "\"promote\" must be a mapping {alias, metric, direction}, got %s", q);
        return;
    }
    for (size_t i = 0; i < v->n_pairs; i++) {
        const loom_ynode_t *pk = v->pairs[i].key, *pv = v->pairs[i].value;
        if (strcmp(pk->str, "alias") == 0) {
            const char *s = dag_want_string(c, pk, pv);
            if (s && !loom_name_valid(s))
                dag_error(c, pv, "invalid alias %s: use 1-63 letters, digits, '_', '.' or '-'",
                          dag_qname(s, q));
            else if (s)
                t->promote_alias = loom_xstrdup(s);
        } else if (strcmp(pk->str, "metric") == 0) {
            const char *s = dag_want_string(c, pk, pv);
            if (s && !dag_ident_valid(s))
                dag_error(c, pv, "invalid metric name %s", dag_qname(s, q));
            else if (s)
                t->promote_metric = loom_xstrdup(s);
        } else if (strcmp(pk->str, "direction") == 0) {
            t->promote_lower = dag_want_enum(c, pk, pv, directions) == 1;
        } else {
            dag_suggest_word(c, pk->str, keys, hint, sizeof hint);
            dag_error(c, pk, "unknown key %s in \"promote\"%s", dag_qname(pk->str, q), hint);
        }
    }
    if (!t->promote_alias) dag_error(c, v, "\"promote\" needs an \"alias\", such as champion");
    /* Without a metric the alias always moves: the gate is the task's `if`. */
}

/* model: {name, path, promote}. Checked after the whole task is read, so
 * `outputs` and `metrics` may come after it. */
static void task_model(pctx *c, void *obj, const loom_ynode_t *k, const loom_ynode_t *v)
{
    loom_dag_task_t *t = obj;
    static const char *const keys[] = {"name", "path", "promote", NULL};
    char q[LOOM_YQUOTE_MAX], hint[LOOM_YQUOTE_MAX + 24];
    if (loom_ynode_is_null(v)) return;
    if (v->kind != LOOM_YMAP) {
        loom_ynode_describe(v, q, sizeof q);
        dag_error(c, dag_where(k, v), "\"model\" must be a mapping {name, path, promote}, got %s",
                  q);
        return;
    }
    const loom_ynode_t *promote = NULL, *promote_key = NULL;
    for (size_t i = 0; i < v->n_pairs; i++) {
        const loom_ynode_t *mk = v->pairs[i].key, *mv = v->pairs[i].value;
        if (strcmp(mk->str, "name") == 0) {
            const char *s = dag_want_string(c, mk, mv);
            if (s && !loom_name_valid(s))
                dag_error(c, mv, "invalid model name %s: use 1-63 letters, digits, '_', '.' or '-'",
                          dag_qname(s, q));
            else if (s)
                t->model_name = loom_xstrdup(s);
        } else if (strcmp(mk->str, "path") == 0) {
            const char *s = dag_want_string(c, mk, mv), *why = s ? dag_rel_path_problem(s) : NULL;
            if (why)
                dag_error(c, mv, "model path %s %s", dag_qname(s, q), why);
            else if (s)
                t->model_path = loom_xstrdup(s);
        } else if (strcmp(mk->str, "promote") == 0) {
            promote_key = mk;
            promote = mv;
        } else {
            dag_suggest_word(c, mk->str, keys, hint, sizeof hint);
            dag_error(c, mk, "unknown key %s in \"model\"%s", dag_qname(mk->str, q), hint);
        }
    }
    if (!loom_ynode_get(v, "name")) dag_error(c, v, "\"model\" needs a \"name\"");
    if (!loom_ynode_get(v, "path")) dag_error(c, v, "\"model\" needs the \"path\" of the file");
    if (promote) model_promote(c, t, promote_key, promote);
}

/* The model file must be one of the task's outputs (by name, under an
 * output folder, or matching an output glob). */
static void check_model(pctx *c, const loom_dag_task_t *t, const loom_ynode_t *where)
{
    if (!t->model_path) return;
    char q[LOOM_YQUOTE_MAX];
    if (t->promote_metric && !t->metrics)
        dag_error(c, where, "\"promote\" compares metrics: the task needs \"metrics: FILE\"");
    if (t->foreach || t->foreach_json) {
        dag_error(c, where, "a \"foreach\" task cannot register a model (one version per run)");
        return;
    }
    for (size_t i = 0; i < t->n_outputs; i++) {
        const char *o = t->outputs[i];
        size_t n = strlen(o);
        if (strcmp(o, t->model_path) == 0 || fnmatch(o, t->model_path, FNM_PATHNAME) == 0 ||
            (strncmp(o, t->model_path, n) == 0 && t->model_path[n] == '/'))
            return;
    }
    dag_error(c, where, "model path %s must be one of the task's \"outputs\"",
              dag_qname(t->model_path, q));
}

/* ---- foreach ---- */

static void foreach_what(pctx *c, const loom_ynode_t *v)
{
    char got[LOOM_YQUOTE_MAX];
    loom_ynode_describe(v, got, sizeof got);
    dag_error(c, v,
              "\"foreach\" must be params.NAME (a list param), trigger.files or a list of values, "
              "got %s",
              got);
}

static void foreach_path(pctx *c, loom_dag_task_t *t, const loom_ynode_t *v)
{
    char q[LOOM_YQUOTE_MAX], hint[LOOM_YQUOTE_MAX + 24];
    const char *s = v->str;
    if (strcmp(s, "trigger.files") == 0) {
        t->foreach = loom_xstrdup(s);
    } else if (strncmp(s, "params.", 7) == 0 && dag_ident_valid(s + 7)) {
        const loom_dag_param_t *p = loom_dag_param(c->dag, s + 7);
        static const char *const types[] = {"a string", "an int", "a float", "a bool", "a list"};
        if (!p) {
            dag_suggest(c, s + 7, c->dag->params, c->dag->n_params, sizeof *c->dag->params, hint,
                        sizeof hint);
            dag_error(c, v, "unknown param %s%s", dag_qname(s + 7, q), hint);
        } else if (p->type != LOOM_PARAM_LIST) {
            dag_error(c, v, "\"foreach\" needs a list param; %s is %s", dag_qname(p->name, q),
                      types[p->type]);
        } else {
            t->foreach = loom_xstrdup(s);
        }
    } else if (strstr(s, "${{")) {
        dag_error(c, v, "\"foreach\" takes the path itself, without ${{ }}: foreach: params.NAME");
    } else {
        foreach_what(c, v);
    }
}

static void task_foreach(pctx *c, void *obj, const loom_ynode_t *k, const loom_ynode_t *v)
{
    loom_dag_task_t *t = obj;
    if (loom_ynode_is_null(v)) return;
    if (v->kind == LOOM_YSCALAR) {
        foreach_path(c, t, v);
    } else if (v->kind == LOOM_YMAP) {
        foreach_what(c, v);
    } else if (v->n_items == 0) {
        dag_error(c, v, "\"foreach\" list is empty");
    } else {
        json_t *items = dag_typed_value(c, LOOM_PARAM_LIST, v, "\"foreach\"");
        if (items) t->foreach_json = dag_json_text(items);
        json_decref(items);
    }
}

/* ---- a task, and defaults ---- */

static const key_handler task_keys[] = {
    {"run", task_run},
    {"needs", task_needs},
    {"env", task_env},
    {"timeout", task_timeout},
    {"retries", task_retries},
    {"priority", task_priority},
    {"retry_delay", task_retry_delay},
    {"max_retry_delay", task_max_retry_delay},
    {"retry_jitter", task_retry_jitter},
    {"if", task_if},
    {"trigger_rule", task_trigger_rule},
    {"resources", task_resources},
    {"inputs", task_inputs},
    {"outputs", task_outputs},
    {"metrics", task_metrics},
    {"cache", task_cache},
    {"foreach", task_foreach},
    {"model", task_model},
    {"secrets", dag_task_secrets},
};
#define N_TASK_KEYS (sizeof task_keys / sizeof task_keys[0])

/* Keys every task sets for itself. */
static bool not_a_default(const char *key)
{
    return strcmp(key, "run") == 0 || strcmp(key, "needs") == 0 || strcmp(key, "foreach") == 0 ||
           strcmp(key, "if") == 0;
}

/* retry_delay <= max_retry_delay, reported where the task (or, when both
 * come from there, `defaults`) wrote one of them. */
static void check_backoff(pctx *c, const loom_dag_task_t *t, bool in_defaults)
{
    const task_keys_seen *s = &c->keys;
    if (t->max_retry_delay_ms >= t->retry_delay_ms) return;
    const loom_ynode_t *at =
        s->max_retry_delay && (in_defaults || !s->max_retry_delay_default) ? s->max_retry_delay
        : s->retry_delay && (in_defaults || !s->retry_delay_default)       ? s->retry_delay
                                                                           : NULL;
    if (!at) return; /* both from defaults: reported there, once */
    char a[32], b[32];
    loom_format_duration(t->max_retry_delay_ms, a, sizeof a);
    loom_format_duration(t->retry_delay_ms, b, sizeof b);
    dag_error(c, at, "\"max_retry_delay\" (%s) must not be less than \"retry_delay\" (%s)", a, b);
}

void dag_check_defaults(pctx *c, const loom_ynode_t *k, const loom_ynode_t *v)
{
    char q[LOOM_YQUOTE_MAX], hint[LOOM_YQUOTE_MAX + 24];
    if (loom_ynode_is_null(v)) return;
    if (v->kind != LOOM_YMAP) {
        loom_ynode_describe(v, q, sizeof q);
        dag_error(c, v, "\"defaults\" must be a mapping of task keys, got %s", q);
        return;
    }
    loom_dag_task_t scratch = {0};
    task_init(&scratch);
    c->cur = NO_TASK;
    memset(&c->keys, 0, sizeof c->keys);
    for (size_t i = 0; i < v->n_pairs; i++) {
        const loom_ynode_t *key = v->pairs[i].key;
        const key_handler *h = dag_handler(task_keys, N_TASK_KEYS, key->str);
        dag_qname(key->str, q);
        if (h && not_a_default(key->str)) {
            dag_error(c, key, "%s cannot be in \"defaults\": each task sets its own", q);
        } else if (h) {
            h->fn(c, &scratch, key, v->pairs[i].value);
        } else {
            dag_suggest(c, key->str, task_keys, N_TASK_KEYS, sizeof *task_keys, hint, sizeof hint);
            dag_error(c, key, "unknown key %s in \"defaults\"%s", q, hint);
        }
    }
    check_backoff(c, &scratch, true);
    dag_task_free(&scratch);
    c->defaults = v;
}

/* Env from defaults first, then the task's own, which wins on a name. */
static void merge_env(pctx *c, loom_dag_task_t *t, const loom_ynode_t *k, const loom_ynode_t *v)
{
    loom_env_t *base = NULL;
    size_t n_base = 0, n = 0;
    dag_parse_env(c, k, v, &base, &n_base);
    loom_env_t *all = loom_xcalloc(n_base + t->n_env + 1, sizeof *all);
    for (size_t i = 0; i < n_base; i++) {
        bool overridden = false;
        for (size_t j = 0; j < t->n_env && !overridden; j++)
            overridden = strcmp(base[i].name, t->env[j].name) == 0;
        if (overridden) {
            free(base[i].name);
            free(base[i].value);
        } else {
            all[n++] = base[i];
        }
    }
    memcpy(all + n, t->env, t->n_env * sizeof *all);
    free(t->env);
    free(base);
    t->env = all;
    t->n_env = n + t->n_env;
}

static void apply_defaults(pctx *c, loom_dag_task_t *t, const loom_ynode_t *body)
{
    const loom_ynode_t *d = c->defaults;
    c->quiet = true;
    for (size_t i = 0; i < d->n_pairs; i++) {
        const loom_ynode_t *k = d->pairs[i].key, *v = d->pairs[i].value;
        const key_handler *h = dag_handler(task_keys, N_TASK_KEYS, k->str);
        if (!h || not_a_default(k->str)) continue;
        if (!loom_ynode_get(body, k->str))
            h->fn(c, t, k, v);
        else if (strcmp(k->str, "env") == 0)
            merge_env(c, t, k, v);
    }
    c->quiet = false;
}

static void parse_task(pctx *c, size_t i, const loom_ynode_t *body)
{
    loom_dag_task_t *t = &c->dag->tasks[i];
    char q[LOOM_YQUOTE_MAX], got[LOOM_YQUOTE_MAX];
    dag_qname(t->name, q);
    task_init(t);
    if (body->kind != LOOM_YMAP) {
        const loom_ynode_t *at = loom_ynode_is_null(body) ? NULL : body;
        loom_ynode_describe(body, got, sizeof got);
        dag_error_pos(c, at ? at->line : t->line, at ? at->col : t->col,
                      "task %s must be a mapping with at least \"run\", got %s", q, got);
        return;
    }
    c->cur = i;
    memset(&c->keys, 0, sizeof c->keys);
    char in[LOOM_YQUOTE_MAX + 16];
    snprintf(in, sizeof in, " in task %s", q);
    dag_dispatch(c, t, body, task_keys, N_TASK_KEYS, in);
    if (c->defaults) apply_defaults(c, t, body);
    const loom_ynode_t *model = loom_ynode_get(body, "model");
    if (model) check_model(c, t, model);
    check_backoff(c, t, false);
    dag_check_secrets(c, t, body);
    if (!loom_ynode_get(body, "run"))
        dag_error_pos(c, t->line, t->col, "task %s has no \"run\"", q);
    c->cur = NO_TASK;
}

static int cmp_task_name(const void *x, const void *y)
{
    return strcmp((*(loom_dag_task_t *const *)x)->name, (*(loom_dag_task_t *const *)y)->name);
}

/* Names first, all of them, so that needs can point forward. */
void dag_parse_tasks(pctx *c, const loom_ynode_t *k, const loom_ynode_t *v)
{
    loom_dag_t *d = c->dag;
    char q[LOOM_YQUOTE_MAX];
    if (v->kind != LOOM_YMAP) {
        loom_ynode_describe(v, q, sizeof q);
        dag_error(c, dag_where(k, v), "\"tasks\" must be a mapping of task names to tasks, got %s",
                  q);
        return;
    }
    if (v->n_pairs == 0) {
        dag_error(c, v, "\"tasks\" must list at least one task");
        return;
    }
    if (v->n_pairs > LOOM_DAG_MAX_TASKS) {
        dag_error(c, v, "too many tasks: %zu (the limit is %d)", v->n_pairs, LOOM_DAG_MAX_TASKS);
        return;
    }
    d->n_tasks = v->n_pairs;
    d->tasks = loom_xcalloc(d->n_tasks, sizeof *d->tasks);
    c->by_name = loom_xmalloc(d->n_tasks * sizeof *c->by_name);
    c->seen = loom_xcalloc(d->n_tasks, sizeof *c->seen);
    for (size_t i = 0; i < d->n_tasks; i++) {
        const loom_ynode_t *name = v->pairs[i].key;
        loom_dag_task_t *t = &d->tasks[i];
        t->name = loom_xstrdup(name->str);
        t->line = name->line;
        t->col = name->col;
        c->by_name[i] = t;
        if (!loom_name_valid(t->name))
            dag_error(c, name,
                      "invalid task name %s: use 1-63 letters, digits, '_', '.' or '-', not "
                      "starting with '.' or '-'",
                      dag_qname(t->name, q));
    }
    qsort(c->by_name, d->n_tasks, sizeof *c->by_name, cmp_task_name);
    for (size_t i = 0; i < d->n_tasks; i++) parse_task(c, i, v->pairs[i].value);
}
