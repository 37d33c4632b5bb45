/* The DAG model: gives meaning to the YAML tree that ytree reads (one handler
 * per key, so a new key is one table line), validates names and references,
 * and orders the tasks. Every problem is collected, not just the first, so a
 * user fixes a file in one round. */
#include "loom/dag.h"
#include "loom/err.h"
#include "loom/util.h"
#include "loom/ytree.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- diagnostics ---- */

void loom_diags_vadd(loom_diags_t *d, const char *file, int line, int col, const char *fmt,
                     va_list ap)
{
    if (d->n > LOOM_DIAGS_MAX) return;
    if ((d->n & (d->n - 1)) == 0) /* room for 2^k items once n reaches 2^(k-1) */
        d->items = loom_xrealloc(d->items, (d->n ? d->n * 2 : 1) * sizeof *d->items);
    loom_diag_t *g = &d->items[d->n++];
    g->file = loom_xstrdup(file ? file : "<input>");
    if (d->n > LOOM_DIAGS_MAX) {
        g->line = g->col = 0;
        g->message = loom_xasprintf("too many errors; stopping after %d", LOOM_DIAGS_MAX);
        return;
    }
    g->line = line;
    g->col = col;
    va_list copy;
    va_copy(copy, ap);
    int n = vsnprintf(NULL, 0, fmt, copy);
    va_end(copy);
    g->message = loom_xmalloc(n > 0 ? (size_t)n + 1 : 1);
    g->message[0] = '\0';
    if (n > 0) vsnprintf(g->message, (size_t)n + 1, fmt, ap);
}

void loom_diags_add(loom_diags_t *d, const char *file, int line, int col, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    loom_diags_vadd(d, file, line, col, fmt, ap);
    va_end(ap);
}

char *loom_diags_format(const loom_diags_t *d)
{
    loom_buf_t b = {0};
    for (size_t i = 0; i < d->n; i++) {
        const loom_diag_t *g = &d->items[i];
        loom_buf_puts(&b, g->file);
        if (g->line > 0) loom_buf_printf(&b, ":%d", g->line);
        if (g->line > 0 && g->col > 0) loom_buf_printf(&b, ":%d", g->col);
        loom_buf_printf(&b, ": error: %s\n", g->message);
    }
    return loom_buf_steal(&b);
}

void loom_diags_free(loom_diags_t *d)
{
    if (!d) return;
    for (size_t i = 0; i < d->n; i++) {
        free(d->items[i].file);
        free(d->items[i].message);
    }
    free(d->items);
    d->items = NULL;
    d->n = 0;
}

/* Problems are found key by key, then reference by reference; users read them
 * in file order. Insertion sort: the list holds at most LOOM_DIAGS_MAX. */
static void sort_diags(loom_diags_t *d, size_t from)
{
    size_t end = d->n < LOOM_DIAGS_MAX ? d->n : LOOM_DIAGS_MAX; /* the "too many" line stays last */
    for (size_t i = from + 1; i < end; i++) {
        loom_diag_t g = d->items[i];
        size_t j = i;
        for (; j > from; j--) {
            const loom_diag_t *p = &d->items[j - 1];
            if (p->line < g.line || (p->line == g.line && p->col <= g.col)) break;
            d->items[j] = *p;
        }
        d->items[j] = g;
    }
}

/* ---- the model ---- */

static void env_free(loom_env_t *env, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(env[i].name);
        free(env[i].value);
    }
    free(env);
}

static void task_free(loom_dag_task_t *t)
{
    free(t->name);
    free(t->shell);
    for (size_t i = 0; i < t->argc; i++) free(t->argv[i]);
    free(t->argv);
    for (size_t i = 0; i < t->n_needs; i++) free(t->needs[i]);
    free(t->needs);
    free(t->needs_idx);
    env_free(t->env, t->n_env);
}

void loom_dag_destroy(loom_dag_t **dag)
{
    if (!dag || !*dag) return;
    loom_dag_t *d = *dag;
    free(d->name);
    free(d->description);
    env_free(d->env, d->n_env);
    for (size_t i = 0; i < d->n_tasks; i++) task_free(&d->tasks[i]);
    free(d->tasks);
    free(d->order);
    free(d);
    *dag = NULL;
}

ssize_t loom_dag_find(const loom_dag_t *dag, const char *name)
{
    for (size_t i = 0; dag && i < dag->n_tasks; i++)
        if (strcmp(dag->tasks[i].name, name) == 0) return (ssize_t)i;
    return -1;
}

/* ---- parse context, messages, suggestions ---- */

/* Edit distances computed for "did you mean" per file: enough for any real
 * file, and it bounds the time a file of 100,000 misspelt names can cost. */
#define SUGGEST_BUDGET 2000000

typedef struct {
    const char *file;
    loom_diags_t *diags;
    size_t n_errors;
    size_t suggest_budget;
    loom_dag_t *dag;
    loom_dag_task_t **by_name; /* tasks sorted by name, for lookups */
    size_t *seen;              /* seen[j] == i + 1: task i already needs task j */
} pctx;

static void error_at(pctx *c, const loom_ynode_t *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void error_at(pctx *c, const loom_ynode_t *at, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    loom_diags_vadd(c->diags, c->file, at ? at->line : 0, at ? at->col : 0, fmt, ap);
    va_end(ap);
    c->n_errors++;
}

/* A null value has no position of its own worth showing: point at its key. */
static const loom_ynode_t *where(const loom_ynode_t *k, const loom_ynode_t *v)
{
    return loom_ynode_is_null(v) ? k : v;
}

/* A task name for a message: as written, quoted and escaped. */
static const char *qname(const char *name, char *out)
{
    loom_yquote(name, strlen(name), out, LOOM_YQUOTE_MAX);
    return out;
}

/* Optimal string alignment distance (a swap of neighbours counts once),
 * capped: anything above 2 is returned as 3. */
static int near_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64 || (la > lb ? la - lb : lb - la) > 2) return 3;
    int d[65][65];
    for (size_t i = 0; i <= la; i++) d[i][0] = (int)i;
    for (size_t j = 0; j <= lb; j++) d[0][j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        for (size_t j = 1; j <= lb; j++) {
            int v = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            if (d[i - 1][j] + 1 < v) v = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < v) v = d[i][j - 1] + 1;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                d[i - 2][j - 2] + 1 < v)
                v = d[i - 2][j - 2] + 1;
            d[i][j] = v;
        }
    }
    return d[la][lb] > 2 ? 3 : d[la][lb];
}

/* "; did you mean "x"?" for the closest candidate within distance 2, or "".
 * Candidates are n structs of size stride that each begin with a name
 * pointer (the key tables and loom_dag_task_t both do). */
static void suggest(pctx *c, const char *word, const void *base, size_t n, size_t stride, char *out,
                    size_t outlen)
{
    const char *best = NULL;
    int best_d = 3;
    size_t wl = strlen(word);
    for (size_t i = 0; i < n && c->suggest_budget > 0; i++, c->suggest_budget--) {
        const char *cand = *(const char *const *)((const char *)base + i * stride);
        int d = cand ? near_distance(word, cand) : 3;
        if (d < best_d && (size_t)d < wl) {
            best = cand;
            best_d = d;
        }
    }
    char q[LOOM_YQUOTE_MAX];
    if (best)
        snprintf(out, outlen, "; did you mean %s?", qname(best, q));
    else if (outlen)
        out[0] = '\0';
}

/* The text of a value that should be a string, or NULL after reporting it.
 * Numbers and booleans are taken as written: `retries` and `timeout` parse
 * their own text, and an env value "3" is text anyway. */
static const char *want_string(pctx *c, const loom_ynode_t *k, const loom_ynode_t *v)
{
    if (v->kind == LOOM_YSCALAR && !loom_ynode_is_null(v)) return v->str;
    char got[LOOM_YQUOTE_MAX];
    loom_ynode_describe(v, got, sizeof got);
    error_at(c, where(k, v), "\"%s\" must be a string, got %s", k->str, got);
    return NULL;
}

typedef void (*key_fn)(pctx *c, void *obj, const loom_ynode_t *k, const loom_ynode_t *v);

typedef struct {
    const char *key; /* first: suggest() reads it */
    key_fn fn;
} key_handler;

/* Runs the handler of each key in map; unknown keys are errors. */
static void dispatch(pctx *c, void *obj, const loom_ynode_t *map, const key_handler *tab, size_t n,
                     const char *in)
{
    for (size_t i = 0; i < map->n_pairs; i++) {
        const loom_ynode_t *k = map->pairs[i].key, *v = map->pairs[i].value;
        size_t h = 0;
        while (h < n && strcmp(tab[h].key, k->str) != 0) h++;
        if (h < n) {
            tab[h].fn(c, obj, k, v);
            continue;
        }
        char q[LOOM_YQUOTE_MAX], hint[LOOM_YQUOTE_MAX + 24];
        loom_yquote(k->str, k->len, q, sizeof q);
        suggest(c, k->str, tab, n, sizeof *tab, hint, sizeof hint);
        error_at(c, k, "unknown key %s%s%s", q, in, hint);
    }
}

/* ---- values shared by several keys ---- */

static bool env_name_valid(const char *s)
{
    if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || *s == '_')) return false;
    for (s++; *s; s++)
        if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ||
              *s == '_'))
            return false;
    return true;
}

/* env: a mapping of NAME: value. A null value is the empty string. */
static void parse_env(pctx *c, const loom_ynode_t *k, const loom_ynode_t *v, loom_env_t **out,
                      size_t *n_out)
{
    if (loom_ynode_is_null(v)) return;
    char q[LOOM_YQUOTE_MAX], got[LOOM_YQUOTE_MAX];
    if (v->kind != LOOM_YMAP) {
        loom_ynode_describe(v, got, sizeof got);
        error_at(c, v, "\"%s\" must be a mapping of NAME: value, got %s", k->str, got);
        return;
    }
    *out = loom_xcalloc(v->n_pairs, sizeof **out);
    for (size_t i = 0; i < v->n_pairs; i++) {
        const loom_ynode_t *name = v->pairs[i].key, *val = v->pairs[i].value;
        loom_yquote(name->str, name->len, q, sizeof q);
        if (!env_name_valid(name->str)) {
            error_at(c, name,
                     "invalid env name %s: use letters, digits and '_', not starting with a digit",
                     q);
            continue;
        }
        if (val->kind != LOOM_YSCALAR) {
            loom_ynode_describe(val, got, sizeof got);
            error_at(c, val, "env %s must be a string, got %s", q, got);
            continue;
        }
        loom_env_t *e = &(*out)[(*n_out)++];
        e->name = loom_xstrdup(name->str);
        e->value = loom_xstrdup(loom_ynode_is_null(val) ? "" : val->str);
    }
}

static bool blank(const char *s)
{
    while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r') s++;
    return *s == '\0';
}

/* ---- task keys ---- */

static void task_run(pctx *c, void *obj, const loom_ynode_t *k, const loom_ynode_t *v)
{
    loom_dag_task_t *t = obj;
    char got[LOOM_YQUOTE_MAX];
    if (v->kind == LOOM_YSCALAR && !loom_ynode_is_null(v) && !blank(v->str)) {
        t->shell = loom_xstrdup(v->str);
        return;
    }
    if (v->kind != LOOM_YSEQ || v->n_items == 0) {
        loom_ynode_describe(v, got, sizeof got);
        error_at(c, where(k, v), "\"run\" must be a non-empty string or list of strings, got %s",
                 got);
        return;
    }
    /* Argv entries are taken literally: no shell, so no null or number. */
    t->argv = loom_xcalloc(v->n_items + 1, sizeof *t->argv);
    for (size_t i = 0; i < v->n_items; i++) {
        const loom_ynode_t *a = v->items[i];
        t->argv[t->argc++] = loom_xstrdup(a->kind == LOOM_YSCALAR ? a->str : "");
        if (a->kind != LOOM_YSCALAR) {
            loom_ynode_describe(a, got, sizeof got);
            error_at(c, a, "\"run\" list entries must be strings, got %s", got);
        } else if (i == 0 && blank(a->str)) {
            error_at(c, a, "\"run\" list must start with a program name");
        }
    }
}

static int cmp_task_name(const void *x, const void *y)
{
    return strcmp((*(loom_dag_task_t *const *)x)->name, (*(loom_dag_task_t *const *)y)->name);
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
        error_at(c, item, "\"needs\" entries must be task names, got %s", qn);
        return;
    }
    loom_dag_t *d = c->dag;
    loom_dag_task_t **hit =
        bsearch(item->str, c->by_name, d->n_tasks, sizeof *c->by_name, cmp_key_task);
    qname(t->name, qt);
    qname(item->str, qn);
    if (!hit) {
        suggest(c, item->str, d->tasks, d->n_tasks, sizeof *d->tasks, hint, sizeof hint);
        error_at(c, item, "task %s needs unknown task %s%s", qt, qn, hint);
        return;
    }
    size_t j = (size_t)(*hit - d->tasks), i = (size_t)(t - d->tasks);
    if (j == i) {
        error_at(c, item, "task %s needs itself", qt);
    } else if (c->seen[j] == i + 1) {
        error_at(c, item, "task %s lists %s in \"needs\" twice", qt, qn);
    } else {
        c->seen[j] = i + 1;
        t->needs[t->n_needs] = loom_xstrdup(item->str);
        t->needs_idx[t->n_needs++] = j;
    }
}

/* needs: one task name, or a list of them. Null means none. */
static void task_needs(pctx *c, void *obj, const loom_ynode_t *k, const loom_ynode_t *v)
{
    loom_dag_task_t *t = obj;
    if (loom_ynode_is_null(v)) return;
    if (v->kind == LOOM_YMAP) {
        error_at(c, v, "\"needs\" must be a task name or a list of task names, got a mapping");
        return;
    }
    const loom_ynode_t *const *items = (const loom_ynode_t *const *)v->items;
    size_t n = v->n_items;
    if (v->kind == LOOM_YSCALAR) {
        items = &v;
        n = 1;
    }
    t->needs = loom_xcalloc(n, sizeof *t->needs);
    t->needs_idx = loom_xcalloc(n, sizeof *t->needs_idx);
    for (size_t i = 0; i < n; i++) add_need(c, t, items[i]);
}

static void task_env(pctx *c, void *obj, const loom_ynode_t *k, const loom_ynode_t *v)
{
    loom_dag_task_t *t = obj;
    parse_env(c, k, v, &t->env, &t->n_env);
}

static void task_timeout(pctx *c, void *obj, const loom_ynode_t *k, const loom_ynode_t *v)
{
    loom_dag_task_t *t = obj;
    if (loom_ynode_is_null(v)) return;
    char got[LOOM_YQUOTE_MAX];
    loom_ynode_describe(v, got, sizeof got);
    uint64_t ms = 0;
    if (v->kind != LOOM_YSCALAR || loom_parse_duration_ms(v->str, &ms) != 0)
        error_at(c, v, "\"timeout\" must be a duration such as \"90s\", \"10m\" or \"2h\", got %s",
                 got);
    else if (ms == 0)
        error_at(c, v, "\"timeout\" must be more than 0, got %s", got);
    else
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
        error_at(c, v, "\"retries\" must be an integer 0..100, got %s", got);
        return;
    }
    t->retries = (uint32_t)n;
}

static const key_handler task_keys[] = {
    {"run", task_run},         {"needs", task_needs},     {"env", task_env},
    {"timeout", task_timeout}, {"retries", task_retries},
};

static void parse_task(pctx *c, loom_dag_task_t *t, const loom_ynode_t *body)
{
    char q[LOOM_YQUOTE_MAX], got[LOOM_YQUOTE_MAX];
    qname(t->name, q);
    const loom_ynode_t *at = loom_ynode_is_null(body) ? NULL : body;
    if (body->kind != LOOM_YMAP) {
        loom_ynode_describe(body, got, sizeof got);
        loom_diags_add(c->diags, c->file, at ? at->line : t->line, at ? at->col : t->col,
                       "task %s must be a mapping with at least \"run\", got %s", q, got);
        c->n_errors++;
        return;
    }
    char in[LOOM_YQUOTE_MAX + 16];
    snprintf(in, sizeof in, " in task %s", q);
    dispatch(c, t, body, task_keys, sizeof task_keys / sizeof task_keys[0], in);
    if (!loom_ynode_get(body, "run")) {
        loom_diags_add(c->diags, c->file, t->line, t->col, "task %s has no \"run\"", q);
        c->n_errors++;
    }
}

/* ---- top-level keys ---- */

static void top_pipeline(pctx *c, void *obj, const loom_ynode_t *k, const loom_ynode_t *v)
{
    const char *s = want_string(c, k, v);
    if (!s) return;
    if (!loom_name_valid(s)) {
        char q[LOOM_YQUOTE_MAX];
        error_at(c, v,
                 "invalid pipeline name %s: use 1-63 letters, digits, '_', '.' or '-', not "
                 "starting with '.' or '-'",
                 qname(s, q));
    }
    c->dag->name = loom_xstrdup(s);
}

static void top_description(pctx *c, void *obj, const loom_ynode_t *k, const loom_ynode_t *v)
{
    if (loom_ynode_is_null(v)) return;
    const char *s = want_string(c, k, v);
    if (s) c->dag->description = loom_xstrdup(s);
}

static void top_env(pctx *c, void *obj, const loom_ynode_t *k, const loom_ynode_t *v)
{
    parse_env(c, k, v, &c->dag->env, &c->dag->n_env);
}

/* Names first, all of them, so that needs can point forward. */
static void top_tasks(pctx *c, void *obj, const loom_ynode_t *k, const loom_ynode_t *v)
{
    loom_dag_t *d = c->dag;
    char q[LOOM_YQUOTE_MAX];
    if (v->kind != LOOM_YMAP) {
        loom_ynode_describe(v, q, sizeof q);
        error_at(c, where(k, v), "\"tasks\" must be a mapping of task names to tasks, got %s", q);
        return;
    }
    if (v->n_pairs == 0) {
        error_at(c, v, "\"tasks\" must list at least one task");
        return;
    }
    if (v->n_pairs > LOOM_DAG_MAX_TASKS) {
        error_at(c, v, "too many tasks: %zu (the limit is %d)", v->n_pairs, LOOM_DAG_MAX_TASKS);
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
            error_at(c, name,
                     "invalid task name %s: use 1-63 letters, digits, '_', '.' or '-', not "
                     "starting with '.' or '-'",
                     qname(t->name, q));
    }
    qsort(c->by_name, d->n_tasks, sizeof *c->by_name, cmp_task_name);
    for (size_t i = 0; i < d->n_tasks; i++) parse_task(c, &d->tasks[i], v->pairs[i].value);
}

static const key_handler top_keys[] = {
    {"pipeline", top_pipeline},
    {"description", top_description},
    {"env", top_env},
    {"tasks", top_tasks},
};

/* ---- order and cycles ---- */

/* A min-heap of task indexes: Kahn's algorithm takes the lowest ready index,
 * so the order is stable and follows the file where it can. */
static void heap_push(size_t *h, size_t *n, size_t v)
{
    size_t i = (*n)++;
    for (; i > 0 && h[(i - 1) / 2] > v; i = (i - 1) / 2) h[i] = h[(i - 1) / 2];
    h[i] = v;
}

static size_t heap_pop(size_t *h, size_t *n)
{
    size_t top = h[0], v = h[--*n], i = 0;
    for (;;) {
        size_t m = 2 * i + 1;
        if (m >= *n) break;
        if (m + 1 < *n && h[m + 1] < h[m]) m++;
        if (h[m] >= v) break;
        h[i] = h[m];
        i = m;
    }
    h[i] = v;
    return top;
}

/* Appends a task name to a cycle message, quoted only if it is not a valid
 * name (a valid one needs no escaping). */
static void cycle_name(loom_buf_t *b, const char *name)
{
    char q[LOOM_YQUOTE_MAX];
    loom_buf_puts(b, loom_name_valid(name) ? name : qname(name, q));
}

/* Tarjan's strongly connected components, iterative (a chain of 100,000
 * tasks must not overflow the C stack), over the tasks Kahn's algorithm could
 * not order. Each component of two or more tasks holds at least one cycle. */
typedef struct {
    const size_t *indeg; /* > 0: not ordered */
    size_t *index, *low, *stack, *frame, *edge, *comp, *parent, *queue;
    bool *on_stack;
    size_t next, sp, n_comp;
} tarjan;

/* Reports the shortest cycle through s within its component: a breadth-first
 * search along needs until one leads back to s. parent[w] is the task that
 * needs w on the way, so from the last task back to s the chain runs the way
 * work flows, which is how the cycle is printed. */
static void report_cycle(pctx *c, tarjan *t, size_t s)
{
    enum { SHOWN = 12 };
    const loom_dag_task_t *tasks = c->dag->tasks;
    size_t head = 0, tail = 0, last = s;
    t->queue[tail++] = s;
    t->parent[s] = s;
    while (head < tail && last == s) {
        const loom_dag_task_t *v = &tasks[t->queue[head++]];
        for (size_t k = 0; k < v->n_needs && last == s; k++) {
            size_t w = v->needs_idx[k];
            if (w == s) last = (size_t)(v - tasks);
            if (t->comp[w] != t->comp[s] || t->parent[w] != SIZE_MAX) continue;
            t->parent[w] = (size_t)(v - tasks);
            t->queue[tail++] = w;
        }
    }
    loom_buf_t b = {0};
    loom_buf_puts(&b, "cycle: ");
    cycle_name(&b, tasks[s].name);
    size_t len = 1;
    for (size_t x = last; x != s; x = t->parent[x], len++) {
        if (len >= SHOWN) continue;
        loom_buf_puts(&b, " -> ");
        cycle_name(&b, tasks[x].name);
    }
    if (len > SHOWN) loom_buf_printf(&b, " -> ... (%zu more)", len - SHOWN);
    loom_buf_puts(&b, " -> ");
    cycle_name(&b, tasks[s].name);
    loom_diags_add(c->diags, c->file, tasks[s].line, tasks[s].col, "%s", b.data);
    c->n_errors++;
    loom_buf_free(&b);
}

static void pop_component(pctx *c, tarjan *t, size_t root)
{
    size_t top = t->sp, lowest = root, w, id = ++t->n_comp;
    do {
        w = t->stack[--t->sp];
        t->on_stack[w] = false;
        t->comp[w] = id;
        if (w < lowest) lowest = w;
    } while (w != root);
    if (top - t->sp > 1) report_cycle(c, t, lowest); /* from the task written first */
}

static void visit(tarjan *t, size_t v, size_t *fp)
{
    t->index[v] = t->low[v] = t->next++;
    t->stack[t->sp++] = v;
    t->on_stack[v] = true;
    t->frame[*fp] = v;
    t->edge[(*fp)++] = 0;
}

static void strong_connect(pctx *c, tarjan *t, size_t s)
{
    size_t fp = 0;
    visit(t, s, &fp);
    while (fp > 0) {
        size_t v = t->frame[fp - 1];
        const loom_dag_task_t *task = &c->dag->tasks[v];
        if (t->edge[fp - 1] < task->n_needs) {
            size_t w = task->needs_idx[t->edge[fp - 1]++];
            if (t->indeg[w] == 0) continue; /* ordered, so on no cycle */
            if (t->index[w] == 0)
                visit(t, w, &fp);
            else if (t->on_stack[w] && t->index[w] < t->low[v])
                t->low[v] = t->index[w];
            continue;
        }
        fp--;
        if (fp > 0 && t->low[v] < t->low[t->frame[fp - 1]]) t->low[t->frame[fp - 1]] = t->low[v];
        if (t->low[v] == t->index[v]) pop_component(c, t, v);
    }
}

/* One cycle per tangle of tasks that need each other, positioned at the
 * tasks written first; tasks merely downstream of a cycle are not blamed. */
static void report_cycles(pctx *c, const size_t *indeg)
{
    size_t n = c->dag->n_tasks;
    size_t *mem = loom_xcalloc(8 * n, sizeof *mem);
    tarjan t = {.indeg = indeg, .next = 1};
    size_t **arrays[] = {&t.index, &t.low,  &t.stack,  &t.frame,
                         &t.edge,  &t.comp, &t.parent, &t.queue};
    for (size_t i = 0; i < 8; i++) *arrays[i] = mem + i * n;
    t.on_stack = loom_xcalloc(n, sizeof *t.on_stack);
    for (size_t i = 0; i < n; i++) t.parent[i] = SIZE_MAX;
    for (size_t s = 0; s < n; s++)
        if (indeg[s] > 0 && t.index[s] == 0) strong_connect(c, &t, s);
    free(t.on_stack);
    free(mem);
}

static void order_tasks(pctx *c)
{
    loom_dag_t *d = c->dag;
    size_t n = d->n_tasks, done = 0, nh = 0;
    size_t *indeg = loom_xcalloc(n, sizeof *indeg);
    size_t *start = loom_xcalloc(n + 1, sizeof *start); /* dependents of j: start[j]..start[j+1] */
    for (size_t i = 0; i < n; i++) {
        indeg[i] = d->tasks[i].n_needs;
        for (size_t k = 0; k < d->tasks[i].n_needs; k++) start[d->tasks[i].needs_idx[k] + 1]++;
    }
    for (size_t j = 0; j < n; j++) start[j + 1] += start[j];
    size_t *fill = loom_xmalloc((n + 1) * sizeof *fill);
    memcpy(fill, start, (n + 1) * sizeof *fill);
    size_t *dependents = loom_xmalloc((start[n] ? start[n] : 1) * sizeof *dependents);
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < d->tasks[i].n_needs; k++)
            dependents[fill[d->tasks[i].needs_idx[k]]++] = i;
    size_t *heap = loom_xmalloc(n * sizeof *heap);
    d->order = loom_xmalloc(n * sizeof *d->order);
    for (size_t i = 0; i < n; i++)
        if (indeg[i] == 0) heap_push(heap, &nh, i);
    while (nh > 0) {
        size_t j = heap_pop(heap, &nh);
        d->order[done++] = j;
        for (size_t e = start[j]; e < start[j + 1]; e++)
            if (--indeg[dependents[e]] == 0) heap_push(heap, &nh, dependents[e]);
    }
    if (done < n) report_cycles(c, indeg);
    free(heap);
    free(dependents);
    free(fill);
    free(start);
    free(indeg);
}

/* ---- entry point ---- */

static void parse_root(pctx *c, const loom_ynode_t *root)
{
    if (root->kind != LOOM_YMAP) {
        char got[LOOM_YQUOTE_MAX];
        loom_ynode_describe(root, got, sizeof got);
        error_at(c, root, "expected a mapping with \"pipeline\" and \"tasks\", got %s", got);
        return;
    }
    dispatch(c, c->dag, root, top_keys, sizeof top_keys / sizeof top_keys[0], "");
    if (!loom_ynode_get(root, "pipeline")) error_at(c, root, "missing key \"pipeline\"");
    if (!loom_ynode_get(root, "tasks")) error_at(c, root, "missing key \"tasks\"");
    if (c->dag->n_tasks > 0) order_tasks(c);
}

int loom_dag_parse(const char *src, size_t len, const char *filename, loom_dag_t **out,
                   loom_diags_t *diags)
{
    *out = NULL;
    loom_diags_t mine = {0}; /* for callers that want only a yes or no */
    if (!diags) diags = &mine;
    size_t first = diags->n;
    pctx c = {.file = filename, .diags = diags, .suggest_budget = SUGGEST_BUDGET};
    c.dag = loom_xcalloc(1, sizeof *c.dag);
    loom_ynode_t *root = NULL;
    if (loom_ytree_parse(src, len, filename, NULL, &root, diags) != 0) c.n_errors++;
    if (root)
        parse_root(&c, root);
    else if (c.n_errors == 0)
        error_at(&c, NULL, "the file is empty; expected a mapping with \"pipeline\" and \"tasks\"");
    loom_ytree_destroy(&root);
    free(c.by_name);
    free(c.seen);
    sort_diags(diags, first);
    loom_diags_free(&mine);
    if (c.n_errors > 0) {
        loom_dag_destroy(&c.dag);
        return LOOM_EPARSE;
    }
    *out = c.dag;
    return 0;
}
