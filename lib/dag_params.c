/* `params`: typed pipeline parameters with defaults, and the typed values
 * that parameters, trigger params and foreach lists share. Values become
 * JSON (jansson) here, once, so loomd never re-reads YAML at run time. */
#include "dag_int.h"
#include "loom/expr.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const type_names[] = {"string", "int", "float", "bool", "list", NULL};

char *dag_json_text(const json_t *v)
{
    return loom_expr_value_text(v, true);
}

void dag_params_free(loom_dag_param_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(p[i].name);
        free(p[i].default_json);
        free(p[i].description);
    }
    free(p);
}

static const char *skip_sign(const char *s)
{
    return *s == '-' || *s == '+' ? s + 1 : s;
}

static bool looks_int(const char *s)
{
    s = skip_sign(s);
    if (!*s) return false;
    for (; *s; s++)
        if (*s < '0' || *s > '9') return false;
    return true;
}

/* A decimal number with a point or an exponent: 0.5, .5, 1e-3, -2.5E+4. No
 * hex, no inf or nan, no "1_000": YAML spellings a JSON reader would not
 * take back. */
static bool looks_float(const char *s)
{
    s = skip_sign(s);
    size_t digits = 0;
    bool dot = false, exp = false;
    for (; *s >= '0' && *s <= '9'; s++) digits++;
    if (*s == '.') {
        dot = true;
        for (s++; *s >= '0' && *s <= '9'; s++) digits++;
    }
    if (digits == 0) return false;
    if (*s == 'e' || *s == 'E') {
        exp = true;
        s = skip_sign(s + 1);
        if (*s < '0' || *s > '9') return false;
        while (*s >= '0' && *s <= '9') s++;
    }
    return *s == '\0' && (dot || exp);
}

static bool is_str_tag(const loom_ynode_t *v)
{
    return v->tag && strcmp(v->tag, "tag:yaml.org,2002:str") == 0;
}

loom_param_type dag_infer_type(const loom_ynode_t *v)
{
    int b;
    int64_t i;
    if (v->kind == LOOM_YSEQ) return LOOM_PARAM_LIST;
    if (v->kind != LOOM_YSCALAR || !v->plain || is_str_tag(v)) return LOOM_PARAM_STRING;
    if (looks_int(v->str) && loom_parse_i64(v->str, INT64_MIN, INT64_MAX, &i) == 0)
        return LOOM_PARAM_INT;
    if (looks_float(v->str) && isfinite(strtod(v->str, NULL))) return LOOM_PARAM_FLOAT;
    if (dag_bool_text(v->str, &b)) return LOOM_PARAM_BOOL;
    return LOOM_PARAM_STRING;
}

/* One value of a scalar type, or NULL after reporting. */
static json_t *scalar_value(pctx *c, loom_param_type type, const loom_ynode_t *v, const char *what)
{
    static const char *const wanted[] = {"a string", "an int", "a number", "true or false"};
    json_t *j = NULL;
    int64_t i;
    int b;
    if (v->kind == LOOM_YSCALAR && !loom_ynode_is_null(v)) {
        if (type == LOOM_PARAM_STRING) {
            j = json_string(v->str);
        } else if (type == LOOM_PARAM_INT) {
            if (looks_int(v->str) && loom_parse_i64(v->str, INT64_MIN, INT64_MAX, &i) == 0)
                j = json_integer((json_int_t)i);
        } else if (type == LOOM_PARAM_FLOAT) {
            if (looks_int(v->str) || looks_float(v->str)) j = json_real(strtod(v->str, NULL));
        } else if (type == LOOM_PARAM_BOOL) {
            if (dag_bool_text(v->str, &b)) j = json_boolean(b);
        }
    }
    if (!j) {
        char got[LOOM_YQUOTE_MAX];
        loom_ynode_describe(v, got, sizeof got);
        dag_error(c, v, "%s must be %s, got %s", what, wanted[type], got);
    }
    return j;
}

json_t *dag_typed_value(pctx *c, loom_param_type type, const loom_ynode_t *v, const char *what)
{
    char got[LOOM_YQUOTE_MAX];
    if (type != LOOM_PARAM_LIST) return scalar_value(c, type, v, what);
    if (v->kind != LOOM_YSEQ) {
        loom_ynode_describe(v, got, sizeof got);
        dag_error(c, v, "%s must be a list, got %s", what, got);
        return NULL;
    }
    json_t *list = json_array();
    bool ok = true;
    for (size_t i = 0; i < v->n_items; i++) {
        const loom_ynode_t *item = v->items[i];
        if (item->kind != LOOM_YSCALAR || loom_ynode_is_null(item)) {
            loom_ynode_describe(item, got, sizeof got);
            dag_error(c, item, "%s: list items must be single values, got %s", what, got);
            ok = false;
            continue;
        }
        json_t *j = scalar_value(c, dag_infer_type(item), item, what);
        if (j) json_array_append_new(list, j);
    }
    if (!ok) {
        json_decref(list);
        return NULL;
    }
    return list;
}

/* {type, default, description}: the full form of a parameter. */
static const loom_ynode_t *param_spec(pctx *c, loom_dag_param_t *p, const loom_ynode_t *v,
                                      bool *typed)
{
    static const char *const keys[] = {"type", "default", "description", NULL};
    const loom_ynode_t *dflt = NULL;
    char q[LOOM_YQUOTE_MAX], qp[LOOM_YQUOTE_MAX], hint[LOOM_YQUOTE_MAX + 24];
    for (size_t i = 0; i < v->n_pairs; i++) {
        const loom_ynode_t *k = v->pairs[i].key, *val = v->pairs[i].value;
        if (strcmp(k->str, "type") == 0) {
            int t = dag_want_enum(c, k, val, type_names);
            if (t >= 0) p->type = (loom_param_type)t;
            *typed = true; /* even when wrong: no second message about its default */
        } else if (strcmp(k->str, "default") == 0) {
            dflt = loom_ynode_is_null(val) ? NULL : val;
        } else if (strcmp(k->str, "description") == 0) {
            const char *s = loom_ynode_is_null(val) ? NULL : dag_want_string(c, k, val);
            if (s) p->description = loom_xstrdup(s);
        } else {
            dag_suggest_word(c, k->str, keys, hint, sizeof hint);
            dag_error(c, k, "unknown key %s in param %s%s", dag_qname(k->str, q),
                      dag_qname(p->name, qp), hint);
        }
    }
    return dflt;
}

static void parse_param(pctx *c, loom_dag_param_t *p, const loom_ynode_t *name,
                        const loom_ynode_t *v)
{
    char q[LOOM_YQUOTE_MAX];
    p->name = loom_xstrdup(name->str);
    p->line = name->line;
    p->col = name->col;
    if (!dag_ident_valid(p->name))
        dag_error(c, name,
                  "invalid param name %s: use letters, digits and '_', not starting with a digit",
                  dag_qname(p->name, q));
    const loom_ynode_t *dflt = NULL;
    bool typed = false;
    if (v->kind == LOOM_YMAP)
        dflt = param_spec(c, p, v, &typed);
    else if (!loom_ynode_is_null(v))
        dflt = v; /* the shorthand: the default alone */
    if (!typed) p->type = dflt ? dag_infer_type(dflt) : LOOM_PARAM_STRING;
    if (!dflt) return;
    char what[LOOM_YQUOTE_MAX + 24];
    snprintf(what, sizeof what, "default of param %s", dag_qname(p->name, q));
    json_t *j = dag_typed_value(c, p->type, dflt, what);
    if (j) p->default_json = dag_json_text(j);
    json_decref(j);
}

void dag_parse_params(pctx *c, const loom_ynode_t *k, const loom_ynode_t *v)
{
    if (loom_ynode_is_null(v)) return;
    if (v->kind != LOOM_YMAP) {
        char got[LOOM_YQUOTE_MAX];
        loom_ynode_describe(v, got, sizeof got);
        dag_error(c, v,
                  "\"params\" must be a mapping of names to defaults or {type, default}, "
                  "got %s",
                  got);
        return;
    }
    loom_dag_t *d = c->dag;
    d->params = loom_xcalloc(v->n_pairs ? v->n_pairs : 1, sizeof *d->params);
    for (size_t i = 0; i < v->n_pairs; i++)
        parse_param(c, &d->params[d->n_params++], v->pairs[i].key, v->pairs[i].value);
}
