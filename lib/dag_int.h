/* Inside the DAG parser: the parse context and the helpers its files share
 * (dag.c: entry, messages, shared values; dag_task.c: task keys and
 * defaults; dag_params.c: params and typed values; dag_triggers.c: triggers
 * and concurrency; dag_refs.c: references between tasks; dag_order.c:
 * order and cycles). Not for use outside lib/dag*.c. */
#ifndef LOOM_DAG_INT_H
#define LOOM_DAG_INT_H

#include "loom/dag.h"
#include "loom/util.h"
#include "loom/ytree.h"

#include <jansson.h>
#include <stdbool.h>

#define NO_TASK SIZE_MAX

/* A reference from one task to another, checked once every task's needs are
 * known: the other task must exist and be needed, directly or not. */
typedef enum {
    DEP_METRICS, /* tasks.T.metrics.M, in `run` or `if` */
    DEP_STATUS,  /* tasks.T.status, in `if` */
    DEP_INPUT,   /* `inputs: [T:path]` */
    USE_ITEM,    /* ${{ item }}: the task must have `foreach` */
} dep_kind;

typedef struct {
    dep_kind kind;
    size_t task;  /* the task that refers */
    char *target; /* the task referred to (NULL for USE_ITEM) */
    int line, col;
} dep_ref;

/* Where a task's keys came from, for checks that involve two keys. */
typedef struct {
    const loom_ynode_t *retry_delay, *max_retry_delay;
    bool retry_delay_default, max_retry_delay_default; /* from `defaults` */
} task_keys_seen;

typedef struct {
    const char *file;
    loom_diags_t *diags;
    size_t n_errors;
    size_t suggest_budget;
    bool quiet; /* applying `defaults` to a task: their problems were reported once */
    loom_dag_t *dag;
    loom_dag_task_t **by_name;    /* tasks sorted by name, for lookups */
    size_t *seen;                 /* seen[j] == i + 1: task i already needs task j */
    const loom_ynode_t *defaults; /* `defaults`, once it proved a mapping */
    size_t cur;                   /* index of the task being parsed, or NO_TASK */
    task_keys_seen keys;          /* of the task being parsed */
    dep_ref *deps;
    size_t n_deps, cap_deps;
} pctx;

void dag_error(pctx *c, const loom_ynode_t *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void dag_error_pos(pctx *c, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* A null value has no position of its own worth showing: its key's. */
const loom_ynode_t *dag_where(const loom_ynode_t *k, const loom_ynode_t *v);
/* A name for a message: quoted and escaped (out has LOOM_YQUOTE_MAX bytes). */
const char *dag_qname(const char *name, char *out);
/* "; did you mean "x"?" for the closest of n candidates (structs of size
 * stride, each starting with a name pointer), or "". */
void dag_suggest(pctx *c, const char *word, const void *base, size_t n, size_t stride, char *out,
                 size_t outlen);
/* The same over a NULL-terminated list of words. */
void dag_suggest_word(pctx *c, const char *word, const char *const *words, char *out,
                      size_t outlen);

typedef void (*key_fn)(pctx *c, void *obj, const loom_ynode_t *k, const loom_ynode_t *v);
typedef struct {
    const char *key; /* first: dag_suggest reads it */
    key_fn fn;
} key_handler;

/* The handler for key, or NULL. */
const key_handler *dag_handler(const key_handler *tab, size_t n, const char *key);
/* Runs the handler of each key in map; unknown keys are errors (in is
 * appended to their message: " in task \"x\""). */
void dag_dispatch(pctx *c, void *obj, const loom_ynode_t *map, const key_handler *tab, size_t n,
                  const char *in);

/* Typed values: each reports what it found instead, at its position, and
 * returns false then. */
const char *dag_want_string(pctx *c, const loom_ynode_t *k, const loom_ynode_t *v);
bool dag_want_bool(pctx *c, const loom_ynode_t *k, const loom_ynode_t *v, int *out);
bool dag_want_duration(pctx *c, const loom_ynode_t *k, const loom_ynode_t *v, uint64_t *out);
/* true/false/True/False/TRUE/FALSE. */
bool dag_bool_text(const char *s, int *out);
/* [A-Za-z_][A-Za-z0-9_]*: env and param names. */
bool dag_ident_valid(const char *s);
/* NULL when p is a relative path that stays below its folder, else why not. */
const char *dag_rel_path_problem(const char *p);
/* env: a mapping of NAME: value into a new list. */
void dag_parse_env(pctx *c, const loom_ynode_t *k, const loom_ynode_t *v, loom_env_t **out,
                   size_t *n_out);
void dag_env_free(loom_env_t *env, size_t n);
/* The enum value whose name is v's text, or -1 after reporting it. */
int dag_want_enum(pctx *c, const loom_ynode_t *k, const loom_ynode_t *v, const char *const *names);

/* Where the byte off of scalar v's text is written. */
void dag_pos_in(const loom_ynode_t *v, size_t off, int *line, int *col);

/* dag_params.c */
void dag_parse_params(pctx *c, const loom_ynode_t *k, const loom_ynode_t *v);
/* The JSON value of a YAML scalar or list of scalars as a param of type
 * type would hold it, or NULL after reporting (what: "param \"x\""). */
json_t *dag_typed_value(pctx *c, loom_param_type type, const loom_ynode_t *v, const char *what);
/* What a plain scalar or list means when nobody said: int, float, bool,
 * list, else string. */
loom_param_type dag_infer_type(const loom_ynode_t *v);
/* JSON text of v (valid JSON; reals in their shortest form). */
char *dag_json_text(const json_t *v);
void dag_params_free(loom_dag_param_t *p, size_t n);

/* dag_triggers.c */
void dag_parse_triggers(pctx *c, const loom_ynode_t *k, const loom_ynode_t *v);
void dag_parse_concurrency(pctx *c, const loom_ynode_t *k, const loom_ynode_t *v);

/* dag_task.c */
void dag_parse_tasks(pctx *c, const loom_ynode_t *k, const loom_ynode_t *v);
void dag_check_defaults(pctx *c, const loom_ynode_t *k, const loom_ynode_t *v);
void dag_task_free(loom_dag_task_t *t);
/* dag_secrets.c: a task's `secrets` key, and the checks that need the whole
 * task (a variable set both by `env` and by a secret). */
void dag_task_secrets(pctx *c, void *obj, const loom_ynode_t *k, const loom_ynode_t *v);
void dag_check_secrets(pctx *c, const loom_dag_task_t *t, const loom_ynode_t *body);
void dag_secrets_free(loom_dag_secret_t *s, size_t n);

/* dag_refs.c */
/* Checks the references in a condition: params must exist; tasks.* only
 * where task is not NO_TASK (they become deps); event.* are free. Errors at
 * v's position plus the reference's column. */
void dag_check_cond(pctx *c, const loom_ynode_t *k, const loom_ynode_t *v, size_t task,
                    char **src_out);
/* Parses a `run` string into t, checking each reference. */
void dag_parse_tmpl(pctx *c, const loom_ynode_t *v, int shell, loom_tmpl_t *t);
void dag_add_dep(pctx *c, dep_kind kind, const char *target, int line, int col);
/* Once every task is parsed: each dep's target exists and is needed. */
void dag_check_deps(pctx *c);

/* dag_order.c */
void dag_order_tasks(pctx *c);

#endif
