/* References in a DAG: ${{ params.x }}, tasks.T.metrics.M and friends in
 * `run` templates and `if` conditions, and the tasks that `inputs` name.
 * Params are checked at once (they are read first); references to other
 * tasks wait until every task's needs are known, then must name a task that
 * the referring one needs, directly or through others: only then has it
 * ended, with its status and metrics, by the time they are read. */
#include "dag_int.h"
#include "loom/expr.h"

#include <stdlib.h>
#include <string.h>

void dag_add_dep(pctx *c, dep_kind kind, const char *target, int line, int col)
{
    if (c->cur == NO_TASK) return;
    if (c->n_deps == c->cap_deps) {
        c->cap_deps = c->cap_deps ? c->cap_deps * 2 : 16;
        c->deps = loom_xrealloc(c->deps, c->cap_deps * sizeof *c->deps);
    }
    c->deps[c->n_deps++] = (dep_ref){kind, c->cur, target ? loom_xstrdup(target) : NULL, line, col};
}

/* tasks.T.status or tasks.T.metrics.M. Task names may hold dots, so T is
 * what lies between "tasks." and the known ending. Returns T's length. */
static size_t split_task_ref(const char *path, dep_kind *kind)
{
    if (strncmp(path, "tasks.", 6) != 0) return 0;
    const char *t = path + 6;
    size_t n = strlen(t);
    if (n > 7 && strcmp(t + n - 7, ".status") == 0) {
        *kind = DEP_STATUS;
        return n - 7;
    }
    const char *last = strrchr(t, '.');
    size_t pre = last ? (size_t)(last - t) : 0;
    if (pre <= 8 || memcmp(t + pre - 8, ".metrics", 8) != 0 || !last[1]) return 0;
    *kind = DEP_METRICS;
    return pre - 8;
}

/* params.NAME: reports an unknown name. */
static void check_param(pctx *c, const char *name, int line, int col)
{
    if (loom_dag_param(c->dag, name)) return;
    char q[LOOM_YQUOTE_MAX], hint[LOOM_YQUOTE_MAX + 24];
    dag_suggest(c, name, c->dag->params, c->dag->n_params, sizeof *c->dag->params, hint,
                sizeof hint);
    dag_error_pos(c, line, col, "unknown param %s%s", dag_qname(name, q), hint);
}

static bool is_param_ref(const char *path)
{
    return strncmp(path, "params.", 7) == 0 && path[7] && !strchr(path + 7, '.');
}

/* A task reference (tasks.T.metrics.M, and in conditions tasks.T.status):
 * recorded for dag_check_deps. False when path is not one. */
static bool task_ref(pctx *c, const char *path, bool status_ok, int line, int col)
{
    dep_kind kind;
    size_t n = split_task_ref(path, &kind);
    if (n == 0 || (kind == DEP_STATUS && !status_ok)) return false;
    char *target = loom_xstrndup(path + 6, n);
    dag_add_dep(c, kind, target, line, col);
    free(target);
    return true;
}

/* ---- templates ---- */

static void tmpl_ref(pctx *c, const char *path, int line, int col)
{
    if (strcmp(path, "item") == 0) {
        dag_add_dep(c, USE_ITEM, NULL, line, col);
    } else if (is_param_ref(path)) {
        check_param(c, path + 7, line, col);
    } else if (!task_ref(c, path, false, line, col)) {
        char q[LOOM_YQUOTE_MAX];
        dag_error_pos(c, line, col,
                      "unknown reference %s in ${{ }}; use params.NAME, tasks.TASK.metrics.NAME "
                      "or item",
                      dag_qname(path, q));
    }
}

void dag_parse_tmpl(pctx *c, const loom_ynode_t *v, int shell, loom_tmpl_t *t)
{
    char why[200];
    size_t off = 0;
    loom_ycursor_t cur;
    loom_ycursor_init(&cur, v);
    if (loom_tmpl_parse(v->str, shell, t, why, sizeof why, &off) != 0) {
        loom_ycursor_seek(&cur, v, off);
        dag_error_pos(c, cur.line, cur.col, "%s", why);
        return;
    }
    for (size_t i = 0; i < t->n_parts; i++) {
        if (!t->parts[i].is_ref) continue;
        loom_ycursor_seek(&cur, v, t->parts[i].off); /* offsets grow: one pass in all */
        tmpl_ref(c, t->parts[i].text, cur.line, cur.col);
    }
}

/* ---- conditions ---- */

typedef struct {
    pctx *c;
    const loom_ynode_t *v;
    size_t task;
} cond_ctx;

/* The byte offset of 1-based character column col in s. */
static size_t byte_of_col(const char *s, int col)
{
    size_t i = 0;
    for (int n = 1; s[i] && n < col; i++)
        if (((unsigned char)s[i + 1] & 0xC0) != 0x80) n++;
    return i;
}

static int on_cond_ref(void *ud, const char *path, int col)
{
    cond_ctx *x = ud;
    pctx *c = x->c;
    int line, at;
    dag_pos_in(x->v, byte_of_col(x->v->str, col), &line, &at);
    if (is_param_ref(path)) {
        check_param(c, path + 7, line, at);
    } else if (strncmp(path, "event.", 6) == 0) {
        /* a trigger's payload: any field */
    } else if (x->task == NO_TASK || !task_ref(c, path, true, line, at)) {
        char q[LOOM_YQUOTE_MAX];
        dag_error_pos(c, line, at, "unknown reference %s; use %s", dag_qname(path, q),
                      x->task == NO_TASK ? "params.*, event.*"
                                         : "params.*, tasks.*.status, tasks.*.metrics.*, event.*");
    }
    return 0;
}

void dag_check_cond(pctx *c, const loom_ynode_t *k, const loom_ynode_t *v, size_t task,
                    char **src_out)
{
    if (loom_ynode_is_null(v)) return;
    const char *src = dag_want_string(c, k, v);
    if (!src) return;
    loom_expr_t *e = NULL;
    char why[200];
    int col = 0, line, at;
    if (loom_expr_parse(src, &e, why, sizeof why, &col) != 0) {
        dag_pos_in(v, byte_of_col(src, col), &line, &at);
        dag_error_pos(c, line, at, "invalid condition in \"%s\": %s", k->str, why);
        return;
    }
    cond_ctx x = {c, v, task};
    size_t saved = c->cur;
    c->cur = task;
    loom_expr_each_ref_at(e, on_cond_ref, &x);
    c->cur = saved;
    loom_expr_destroy(&e);
    if (src_out && !*src_out) *src_out = loom_xstrdup(src);
}

/* ---- references between tasks ---- */

static int cmp_key_task(const void *key, const void *elem)
{
    return strcmp(key, (*(loom_dag_task_t *const *)elem)->name);
}

/* Edges followed while finding what tasks need, per file. Real pipelines
 * use a sliver of it; past it (a hostile file with thousands of references
 * across a huge graph) the remaining references go unchecked here and fail,
 * if wrong, when the run reads them. */
#define DEPS_BUDGET 20000000

typedef struct {
    size_t *mark, *stack;
    size_t stamp, budget;
    bool complete; /* the current mark set is every task the current one needs */
} ancestry;

/* Marks every task that task i needs, directly or not. */
static void mark_ancestors(const loom_dag_t *d, ancestry *a, size_t i)
{
    size_t sp = 0;
    a->stamp++;
    a->complete = true;
    a->stack[sp++] = i;
    while (sp > 0) {
        const loom_dag_task_t *t = &d->tasks[a->stack[--sp]];
        for (size_t k = 0; k < t->n_needs; k++) {
            if (a->budget == 0) {
                a->complete = false;
                return;
            }
            a->budget--;
            size_t j = t->needs_idx[k];
            if (a->mark[j] == a->stamp) continue;
            a->mark[j] = a->stamp;
            a->stack[sp++] = j;
        }
    }
}

static void check_dep(pctx *c, const dep_ref *r, ancestry *a, size_t j)
{
    const loom_dag_t *d = c->dag;
    char qt[LOOM_YQUOTE_MAX], qn[LOOM_YQUOTE_MAX];
    dag_qname(d->tasks[r->task].name, qt);
    dag_qname(d->tasks[j].name, qn);
    bool needed = !a->complete || a->mark[j] == a->stamp;
    const char *field = r->kind == DEP_STATUS ? "status" : "metrics";
    if (r->kind == DEP_INPUT) {
        if (!needed)
            dag_error_pos(c, r->line, r->col, "task %s takes inputs from %s but does not need it",
                          qt, qn);
    } else if (!needed) {
        dag_error_pos(c, r->line, r->col, "task %s uses tasks.%s.%s but does not need %s", qt,
                      r->target, field, qn);
    } else if (r->kind == DEP_METRICS && !d->tasks[j].metrics) {
        dag_error_pos(c, r->line, r->col,
                      "task %s uses tasks.%s.metrics but %s has no \"metrics\" file", qt, r->target,
                      qn);
    } else if (r->kind == DEP_METRICS && (d->tasks[j].foreach || d->tasks[j].foreach_json)) {
        /* Which copy's? Each has its own: a task after them must gather. */
        dag_error_pos(c, r->line, r->col,
                      "task %s uses tasks.%s.metrics but %s is a foreach task, whose copies each "
                      "have their own metrics; gather them in a task that needs %s",
                      qt, r->target, qn, qn);
    }
}

static void unknown_target(pctx *c, const dep_ref *r)
{
    const loom_dag_t *d = c->dag;
    char qt[LOOM_YQUOTE_MAX], qn[LOOM_YQUOTE_MAX], hint[LOOM_YQUOTE_MAX + 24];
    dag_qname(d->tasks[r->task].name, qt);
    dag_qname(r->target, qn);
    dag_suggest(c, r->target, d->tasks, d->n_tasks, sizeof *d->tasks, hint, sizeof hint);
    if (r->kind == DEP_INPUT)
        dag_error_pos(c, r->line, r->col, "task %s takes inputs from unknown task %s%s", qt, qn,
                      hint);
    else
        dag_error_pos(c, r->line, r->col, "task %s uses tasks.%s.%s but there is no task %s%s", qt,
                      r->target, r->kind == DEP_STATUS ? "status" : "metrics", qn, hint);
}

void dag_check_deps(pctx *c)
{
    const loom_dag_t *d = c->dag;
    if (c->n_deps == 0) return;
    ancestry a = {.budget = DEPS_BUDGET};
    a.mark = loom_xcalloc(d->n_tasks, sizeof *a.mark);
    a.stack = loom_xmalloc((d->n_tasks + 1) * sizeof *a.stack); /* a cycle may push i twice */
    size_t marked_for = NO_TASK;
    for (size_t i = 0; i < c->n_deps; i++) {
        const dep_ref *r = &c->deps[i];
        const loom_dag_task_t *t = &d->tasks[r->task];
        if (r->kind == USE_ITEM) {
            if (!t->foreach && !t->foreach_json) {
                char q[LOOM_YQUOTE_MAX];
                dag_error_pos(c, r->line, r->col, "task %s uses ${{ item }} but has no \"foreach\"",
                              dag_qname(t->name, q));
            }
            continue;
        }
        loom_dag_task_t **hit =
            bsearch(r->target, c->by_name, d->n_tasks, sizeof *c->by_name, cmp_key_task);
        if (!hit) {
            unknown_target(c, r);
            continue;
        }
        if (marked_for != r->task) {
            mark_ancestors(d, &a, r->task);
            marked_for = r->task;
        }
        check_dep(c, r, &a, (size_t)(*hit - d->tasks));
    }
    free(a.mark);
    free(a.stack);
}
