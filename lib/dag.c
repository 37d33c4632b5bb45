/* The DAG model: gives meaning to the YAML tree that ytree reads (one handler
 * per key, so a new key is one table line), validates names and references,
 * and orders the tasks. Every problem is collected, not just the first, so a
 * user fixes a file in one round. This file holds the entry point, the
 * messages, the values several keys share and the pipeline's own keys; see
 * dag_int.h for the others. */
#include "dag_int.h"
#include "loom/err.h"

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

void dag_env_free(loom_env_t *env, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(env[i].name);
        free(env[i].value);
    }
    free(env);
}

void loom_dag_destroy(loom_dag_t **dag)
{
    if (!dag || !*dag) return;
    loom_dag_t *d = *dag;
    free(d->name);
    free(d->description);
    dag_env_free(d->env, d->n_env);
    for (size_t i = 0; i < d->n_tasks; i++) dag_task_free(&d->tasks[i]);
    free(d->tasks);
    free(d->order);
    dag_params_free(d->params, d->n_params);
    free(d->triggers_json);
    free(d->concurrency_json);
    free(d);
    *dag = NULL;
}

ssize_t loom_dag_find(const loom_dag_t *dag, const char *name)
{
    for (size_t i = 0; dag && i < dag->n_tasks; i++)
        if (strcmp(dag->tasks[i].name, name) == 0) return (ssize_t)i;
    return -1;
}

const loom_dag_param_t *loom_dag_param(const loom_dag_t *dag, const char *name)
{
    for (size_t i = 0; dag && i < dag->n_params; i++)
        if (strcmp(dag->params[i].name, name) == 0) return &dag->params[i];
    return NULL;
}

/* ---- messages and suggestions ---- */

/* Edit distances computed for "did you mean" per file: enough for any real
 * file, and it bounds the time a file of 100,000 misspelt names can cost. */
#define SUGGEST_BUDGET 2000000

void dag_error_pos(pctx *c, int line, int col, const char *fmt, ...)
{
    if (c->quiet) return;
    va_list ap;
    va_start(ap, fmt);
    loom_diags_vadd(c->diags, c->file, line, col, fmt, ap);
    va_end(ap);
    c->n_errors++;
}

void dag_error(pctx *c, const loom_ynode_t *at, const char *fmt, ...)
{
    if (c->quiet) return;
    va_list ap;
    va_start(ap, fmt);
    loom_diags_vadd(c->diags, c->file, at ? at->line : 0, at ? at->col : 0, fmt, ap);
    va_end(ap);
    c->n_errors++;
}

const loom_ynode_t *dag_where(const loom_ynode_t *k, const loom_ynode_t *v)
{
    return loom_ynode_is_null(v) ? k : v;
}

const char *dag_qname(const char *name, char *out)
{
    loom_yquote(name, strlen(name), out, LOOM_YQUOTE_MAX);
    return out;
}

void dag_pos_in(const loom_ynode_t *v, size_t off, int *line, int *col)
{
    loom_ycursor_t cur;
    loom_ycursor_init(&cur, v);
    loom_ycursor_seek(&cur, v, off);
    *line = cur.line;
    *col = cur.col;
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

void dag_suggest(pctx *c, const char *word, const void *base, size_t n, size_t stride, char *out,
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
        snprintf(out, outlen, "; did you mean %s?", dag_qname(best, q));
    else if (outlen)
        out[0] = '\0';
}

void dag_suggest_word(pctx *c, const char *word, const char *const *words, char *out, size_t outlen)
{
    size_t n = 0;
    while (words[n]) n++;
    dag_suggest(c, word, words, n, sizeof *words, out, outlen);
}

/* ---- dispatch ---- */

const key_handler *dag_handler(const key_handler *tab, size_t n, const char *key)
{
    for (size_t h = 0; h < n; h++)
        if (strcmp(tab[h].key, key) == 0) return &tab[h];
    return NULL;
}

void dag_dispatch(pctx *c, void *obj, const loom_ynode_t *map, const key_handler *tab, size_t n,
                  const char *in)
{
    for (size_t i = 0; i < map->n_pairs; i++) {
        const loom_ynode_t *k = map->pairs[i].key, *v = map->pairs[i].value;
        const key_handler *h = dag_handler(tab, n, k->str);
        if (h) {
            h->fn(c, obj, k, v);
            continue;
        }
        char q[LOOM_YQUOTE_MAX], hint[LOOM_YQUOTE_MAX + 24];
        loom_yquote(k->str, k->len, q, sizeof q);
        dag_suggest(c, k->str, tab, n, sizeof *tab, hint, sizeof hint);
        dag_error(c, k, "unknown key %s%s%s", q, in, hint);
    }
}

/* ---- values shared by several keys ---- */

/* Numbers and booleans are taken as written where text is wanted: `retries`
 * and `timeout` parse their own text, and an env value "3" is text anyway. */
const char *dag_want_string(pctx *c, const loom_ynode_t *k, const loom_ynode_t *v)
{
    if (v->kind == LOOM_YSCALAR && !loom_ynode_is_null(v)) return v->str;
    char got[LOOM_YQUOTE_MAX];
    loom_ynode_describe(v, got, sizeof got);
    dag_error(c, dag_where(k, v), "\"%s\" must be a string, got %s", k->str, got);
    return NULL;
}

bool dag_bool_text(const char *s, int *out)
{
    static const char *const yes[] = {"true", "True", "TRUE"}, *const no[] = {"false", "False",
                                                                              "FALSE"};
    for (size_t i = 0; i < 3; i++) {
        if (strcmp(s, yes[i]) == 0 || strcmp(s, no[i]) == 0) {
            *out = strcmp(s, yes[i]) == 0;
            return true;
        }
    }
    return false;
}

bool dag_want_bool(pctx *c, const loom_ynode_t *k, const loom_ynode_t *v, int *out)
{
    if (v->kind == LOOM_YSCALAR && dag_bool_text(v->str, out)) return true;
    char got[LOOM_YQUOTE_MAX];
    loom_ynode_describe(v, got, sizeof got);
    dag_error(c, dag_where(k, v), "\"%s\" must be true or false, got %s", k->str, got);
    return false;
}

bool dag_want_duration(pctx *c, const loom_ynode_t *k, const loom_ynode_t *v, uint64_t *out)
{
    if (v->kind == LOOM_YSCALAR && loom_parse_duration_ms(v->str, out) == 0) return true;
    char got[LOOM_YQUOTE_MAX];
    loom_ynode_describe(v, got, sizeof got);
    dag_error(c, dag_where(k, v),
              "\"%s\" must be a duration such as \"90s\", \"10m\" or \"2h\", got %s", k->str, got);
    return false;
}

int dag_want_enum(pctx *c, const loom_ynode_t *k, const loom_ynode_t *v, const char *const *names)
{
    for (int i = 0; v->kind == LOOM_YSCALAR && names[i]; i++)
        if (strcmp(v->str, names[i]) == 0) return i;
    loom_buf_t b = {0};
    for (int i = 0; names[i]; i++) loom_buf_printf(&b, "%s%s", i ? ", " : "", names[i]);
    char got[LOOM_YQUOTE_MAX], hint[LOOM_YQUOTE_MAX + 24] = "";
    loom_ynode_describe(v, got, sizeof got);
    if (v->kind == LOOM_YSCALAR) dag_suggest_word(c, v->str, names, hint, sizeof hint);
    dag_error(c, dag_where(k, v), "\"%s\" must be one of %s, got %s%s", k->str, b.data, got, hint);
    loom_buf_free(&b);
    return -1;
}

bool dag_ident_valid(const char *s)
{
    if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || *s == '_')) return false;
    for (s++; *s; s++)
        if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ||
              *s == '_'))
            return false;
    return true;
}

const char *dag_rel_path_problem(const char *p)
{
    if (!*p) return "is empty";
    if (*p == '/') return "must be relative to the task's working folder, not absolute";
    for (const char *s = p; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f) return "must not hold a control character";
    for (const char *s = p; *s;) {
        size_t n = strcspn(s, "/");
        if (n == 2 && s[0] == '.' && s[1] == '.') return "must not go up with \"..\"";
        s += n;
        if (*s == '/') s++;
    }
    return NULL;
}

/* env: a mapping of NAME: value. A null value is the empty string. */
void dag_parse_env(pctx *c, const loom_ynode_t *k, const loom_ynode_t *v, loom_env_t **out,
                   size_t *n_out)
{
    if (loom_ynode_is_null(v)) return;
    char q[LOOM_YQUOTE_MAX], got[LOOM_YQUOTE_MAX];
    if (v->kind != LOOM_YMAP) {
        loom_ynode_describe(v, got, sizeof got);
        dag_error(c, v, "\"%s\" must be a mapping of NAME: value, got %s", k->str, got);
        return;
    }
    *out = loom_xcalloc(v->n_pairs, sizeof **out);
    for (size_t i = 0; i < v->n_pairs; i++) {
        const loom_ynode_t *name = v->pairs[i].key, *val = v->pairs[i].value;
        loom_yquote(name->str, name->len, q, sizeof q);
        if (!dag_ident_valid(name->str)) {
            dag_error(c, name,
                      "invalid env name %s: use letters, digits and '_', not starting with a digit",
                      q);
            continue;
        }
        if (val->kind != LOOM_YSCALAR) {
            loom_ynode_describe(val, got, sizeof got);
            dag_error(c, val, "env %s must be a string, got %s", q, got);
            continue;
        }
        loom_env_t *e = &(*out)[(*n_out)++];
        e->name = loom_xstrdup(name->str);
        e->value = loom_xstrdup(loom_ynode_is_null(val) ? "" : val->str);
    }
}

/* ---- the pipeline's keys ---- */

static void top_pipeline(pctx *c, void *obj, const loom_ynode_t *k, const loom_ynode_t *v)
{
    const char *s = dag_want_string(c, k, v);
    if (!s) return;
    if (!loom_name_valid(s)) {
        char q[LOOM_YQUOTE_MAX];
        dag_error(c, v,
                  "invalid pipeline name %s: use 1-63 letters, digits, '_', '.' or '-', not "
                  "starting with '.' or '-'",
                  dag_qname(s, q));
    }
    c->dag->name = loom_xstrdup(s);
}

static void top_description(pctx *c, void *obj, const loom_ynode_t *k, const loom_ynode_t *v)
{
    if (loom_ynode_is_null(v)) return;
    const char *s = dag_want_string(c, k, v);
    if (s) c->dag->description = loom_xstrdup(s);
}

static void top_env(pctx *c, void *obj, const loom_ynode_t *k, const loom_ynode_t *v)
{
    dag_parse_env(c, k, v, &c->dag->env, &c->dag->n_env);
}

/* Keys that depend on others are read after the dispatch, in the order
 * their dependencies need: params before the tasks and triggers that use
 * them, defaults before the tasks they fill in. */
static void top_later(pctx *c, void *obj, const loom_ynode_t *k, const loom_ynode_t *v) {}

static const key_handler top_keys[] = {
    {"pipeline", top_pipeline}, {"description", top_description},
    {"params", top_later},      {"env", top_env},
    {"defaults", top_later},    {"triggers", top_later},
    {"concurrency", top_later}, {"tasks", top_later},
};

/* ---- entry point ---- */

static const loom_ynode_t *key_of(const loom_ynode_t *map, const char *key)
{
    for (size_t i = 0; i < map->n_pairs; i++)
        if (strcmp(map->pairs[i].key->str, key) == 0) return map->pairs[i].key;
    return NULL;
}

static void parse_root(pctx *c, const loom_ynode_t *root)
{
    if (root->kind != LOOM_YMAP) {
        char got[LOOM_YQUOTE_MAX];
        loom_ynode_describe(root, got, sizeof got);
        dag_error(c, root, "expected a mapping with \"pipeline\" and \"tasks\", got %s", got);
        return;
    }
    dag_dispatch(c, c->dag, root, top_keys, sizeof top_keys / sizeof top_keys[0], "");
    static const struct {
        const char *key;
        void (*fn)(pctx *, const loom_ynode_t *, const loom_ynode_t *);
    } later[] = {{"params", dag_parse_params},
                 {"defaults", dag_check_defaults},
                 {"tasks", dag_parse_tasks},
                 {"triggers", dag_parse_triggers},
                 {"concurrency", dag_parse_concurrency}};
    for (size_t i = 0; i < sizeof later / sizeof later[0]; i++) {
        const loom_ynode_t *k = key_of(root, later[i].key);
        if (k) later[i].fn(c, k, loom_ynode_get(root, later[i].key));
    }
    if (!loom_ynode_get(root, "pipeline")) dag_error(c, root, "missing key \"pipeline\"");
    if (!loom_ynode_get(root, "tasks")) dag_error(c, root, "missing key \"tasks\"");
    if (c->dag->n_tasks > 0) {
        dag_order_tasks(c);
        dag_check_deps(c);
    }
}

int loom_dag_parse(const char *src, size_t len, const char *filename, loom_dag_t **out,
                   loom_diags_t *diags)
{
    *out = NULL;
    loom_diags_t mine = {0}; /* for callers that want only a yes or no */
    if (!diags) diags = &mine;
    size_t first = diags->n;
    pctx c = {.file = filename, .diags = diags, .suggest_budget = SUGGEST_BUDGET, .cur = NO_TASK};
    c.dag = loom_xcalloc(1, sizeof *c.dag);
    loom_ynode_t *root = NULL;
    if (loom_ytree_parse(src, len, filename, NULL, &root, diags) != 0) c.n_errors++;
    if (root)
        parse_root(&c, root);
    else if (c.n_errors == 0)
        dag_error(&c, NULL,
                  "the file is empty; expected a mapping with \"pipeline\" and \"tasks\"");
    loom_ytree_destroy(&root);
    free(c.by_name);
    free(c.seen);
    for (size_t i = 0; i < c.n_deps; i++) free(c.deps[i].target);
    free(c.deps);
    sort_diags(diags, first);
    loom_diags_free(&mine);
    if (c.n_errors > 0) {
        loom_dag_destroy(&c.dag);
        return LOOM_EPARSE;
    }
    *out = c.dag;
    return 0;
}
