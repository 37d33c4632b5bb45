/* A task's `secrets`: which stored secrets each attempt receives, and how
 * (an environment variable, or a file in the working folder). The values
 * never appear in a DAG; only names do. */
#include "dag_int.h"

#include "loom/codec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool loom_secret_name_valid(const char *name)
{
    return name && dag_ident_valid(name) && strlen(name) <= LOOM_SECRET_NAME_MAX;
}

void dag_secrets_free(loom_dag_secret_t *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(s[i].name);
        free(s[i].env);
        free(s[i].file);
    }
    free(s);
}

static bool name_ok(pctx *c, const loom_ynode_t *v, const char *what)
{
    char q[LOOM_YQUOTE_MAX];
    if (v->kind != LOOM_YSCALAR || loom_ynode_is_null(v)) {
        loom_ynode_describe(v, q, sizeof q);
        dag_error(c, v, "%s must be a name, got %s", what, q);
        return false;
    }
    if (!loom_secret_name_valid(v->str)) {
        dag_error(c, v,
                  "invalid %s %s: use letters, digits and '_', not starting with a digit, at "
                  "most %d characters",
                  what, dag_qname(v->str, q), LOOM_SECRET_NAME_MAX);
        return false;
    }
    return true;
}

/* {name: NAME, env: VAR} or {name: NAME, file: PATH[, env: VAR]}. */
static bool parse_entry_map(pctx *c, const loom_ynode_t *v, loom_dag_secret_t *out)
{
    static const char *const keys[] = {"name", "env", "file", NULL};
    char q[LOOM_YQUOTE_MAX], hint[LOOM_YQUOTE_MAX + 24];
    bool ok = true;
    for (size_t i = 0; i < v->n_pairs; i++) {
        const loom_ynode_t *mk = v->pairs[i].key, *mv = v->pairs[i].value;
        if (strcmp(mk->str, "name") == 0) {
            if ((ok = name_ok(c, mv, "secret name") && ok)) out->name = loom_xstrdup(mv->str);
        } else if (strcmp(mk->str, "env") == 0) {
            if ((ok = name_ok(c, mv, "secret env name") && ok)) out->env = loom_xstrdup(mv->str);
        } else if (strcmp(mk->str, "file") == 0) {
            const char *s = dag_want_string(c, mk, mv), *why = s ? dag_rel_path_problem(s) : NULL;
            if (why) dag_error(c, mv, "secret file %s %s", dag_qname(s, q), why);
            if (!s || why) ok = false;
            if (s && !why) out->file = loom_xstrdup(s);
        } else {
            dag_suggest_word(c, mk->str, keys, hint, sizeof hint);
            dag_error(c, mk, "unknown key %s in a \"secrets\" entry%s", dag_qname(mk->str, q),
                      hint);
            ok = false;
        }
    }
    if (!loom_ynode_get(v, "name")) {
        dag_error(c, v, "a \"secrets\" entry needs a \"name\"");
        ok = false;
    } else if (ok && !out->env && !out->file) {
        dag_error(c, v, "secret %s needs \"env\" (a variable) or \"file\" (a path)",
                  dag_qname(out->name, q));
        ok = false;
    }
    return ok;
}

/* secrets: [NAME, {name: NAME, env: VAR}, {name: NAME, file: PATH}] */
void dag_task_secrets(pctx *c, void *obj, const loom_ynode_t *k, const loom_ynode_t *v)
{
    loom_dag_task_t *t = obj;
    char q[LOOM_YQUOTE_MAX];
    if (loom_ynode_is_null(v)) return;
    if (v->kind != LOOM_YSEQ) {
        loom_ynode_describe(v, q, sizeof q);
        dag_error(c, dag_where(k, v),
                  "\"secrets\" must be a list of secret names or {name, env|file} mappings, got "
                  "%s",
                  q);
        return;
    }
    if (v->n_items > LOOM_SECRETS_MAX) {
        dag_error(c, v, "too many secrets: %zu (the limit is %d)", v->n_items, LOOM_SECRETS_MAX);
        return;
    }
    dag_secrets_free(t->secrets, t->n_secrets); /* defaults, replaced by the task's own */
    t->secrets = loom_xcalloc(v->n_items ? v->n_items : 1, sizeof *t->secrets);
    t->n_secrets = 0;
    for (size_t i = 0; i < v->n_items; i++) {
        const loom_ynode_t *item = v->items[i];
        loom_dag_secret_t e = {0};
        bool ok;
        if (item->kind == LOOM_YMAP) {
            ok = parse_entry_map(c, item, &e);
        } else {
            ok = name_ok(c, item, "secret name");
            if (ok) {
                e.name = loom_xstrdup(item->str);
                e.env = loom_xstrdup(item->str);
            }
        }
        if (!ok) {
            free(e.name);
            free(e.env);
            free(e.file);
            continue;
        }
        /* Two entries giving the same variable or file is a mistake. */
        for (size_t j = 0; j < t->n_secrets; j++) {
            const loom_dag_secret_t *o = &t->secrets[j];
            if (e.env && o->env && strcmp(e.env, o->env) == 0)
                dag_error(c, item, "secrets set variable %s twice", dag_qname(e.env, q));
            else if (e.file && o->file && strcmp(e.file, o->file) == 0)
                dag_error(c, item, "secrets write file %s twice", dag_qname(e.file, q));
        }
        t->secrets[t->n_secrets++] = e;
    }
}

void dag_check_secrets(pctx *c, const loom_dag_task_t *t, const loom_ynode_t *body)
{
    const loom_ynode_t *at = loom_ynode_get(body, "secrets");
    char q[LOOM_YQUOTE_MAX];
    for (size_t i = 0; i < t->n_secrets; i++) {
        const char *env = t->secrets[i].env;
        for (size_t j = 0; env && j < t->n_env; j++)
            if (strcmp(env, t->env[j].name) == 0)
                dag_error_pos(c, at ? at->line : t->line, at ? at->col : t->col,
                              "variable %s is set both by \"env\" and by \"secrets\"",
                              dag_qname(env, q));
        if (env && strncmp(env, "LOOM_", 5) == 0)
            dag_error_pos(c, at ? at->line : t->line, at ? at->col : t->col,
                          "secret variable %s: names starting with LOOM_ are loom's own",
                          dag_qname(env, q));
    }
}
