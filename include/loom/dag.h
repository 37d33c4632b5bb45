/* The DAG model and its YAML parser, shared by loomd (which validates every
 * submitted pipeline) and the CLI (which validates offline).
 *
 * A DAG file, minimal form:
 *
 *   pipeline: quickstart
 *   description: optional text
 *   env: {KEY: value}            # optional, for every task
 *   tasks:
 *     extract:
 *       run: echo hello          # a shell string (run by /bin/sh -c) ...
 *     train:
 *       run: [python3, train.py] # ... or an argv list (exec'd directly)
 *       needs: [extract]         # a name or a list of names
 *       env: {EPOCHS: "3"}
 *       timeout: 10m
 *       retries: 2
 *
 * Parsing collects every problem it finds, each with file:line:column. */
#ifndef LOOM_DAG_H
#define LOOM_DAG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Limits that keep hostile files bounded in time and memory. */
#define LOOM_DAG_MAX_BYTES (4 * 1024 * 1024)
#define LOOM_DAG_MAX_TASKS 100000
#define LOOM_DAG_MAX_DEPTH 32

typedef struct {
    char *name;
    char *value;
} loom_env_t;

/* Parameter types. Values travel as JSON (jansson) once parsed. */
typedef enum {
    LOOM_PARAM_STRING,
    LOOM_PARAM_INT,
    LOOM_PARAM_FLOAT,
    LOOM_PARAM_BOOL,
    LOOM_PARAM_LIST,
} loom_param_type;

typedef struct {
    char *name;
    loom_param_type type;
    char *default_json; /* the default as JSON text; NULL: the run must give it */
    char *description;  /* may be NULL */
    int line, col;
} loom_dag_param_t;

typedef enum {
    LOOM_RULE_ALL_SUCCESS, /* default: every needed task succeeded */
    LOOM_RULE_ALL_DONE,    /* every needed task ended, whatever its state */
    LOOM_RULE_ONE_FAILED,  /* at least one needed task failed (clean-up, alerts) */
} loom_trigger_rule;

typedef struct {
    double cpus;               /* 0: not asked for */
    uint64_t memory_bytes;     /* 0: not asked for */
    uint32_t gpus;             /* count */
    char *gpu_model;           /* substring the GPU's model must contain; NULL: any */
    uint64_t gpu_memory_bytes; /* minimum memory per GPU; 0: any */
    loom_env_t *labels;        /* label selectors: the agent must have key=value */
    size_t n_labels;
    char *pool;     /* NULL: none */
    int gpu_shared; /* 1: may share its one GPU with other shared tasks, using gpu_memory of it */
} loom_dag_resources_t;

/* A piece of a `run` after parsing its ${{ ... }} references: literal text,
 * or a reference path ("params.lr", "tasks.train.metrics.auc", "item"). */
typedef struct {
    char *text; /* literal text, or the reference path */
    int is_ref;
    size_t off; /* byte offset in the text as written where the part starts */
    int quote;  /* a reference in a shell-form run: LOOM_TMPL_BARE, _SQUOTED or _DQUOTED */
} loom_tmpl_part_t;

/* Where a reference sits in a shell command, which decides how its value is
 * quoted (see loom_tmpl_render). */
enum {
    LOOM_TMPL_BARE,    /* outside quotes: echo ${{ params.x }} */
    LOOM_TMPL_SQUOTED, /* inside '...' */
    LOOM_TMPL_DQUOTED, /* inside "..." */
};

typedef struct {
    loom_tmpl_part_t *parts;
    size_t n_parts;
} loom_tmpl_t;

/* One entry of a task's `secrets`: the secret `name` (see
 * loom_secret_name_valid) given as the variable env, or as the file (a path
 * relative to the working folder; env, if also set, holds its path). */
typedef struct {
    char *name;
    char *env;  /* NULL: none */
    char *file; /* NULL: none */
} loom_dag_secret_t;

/* Secret names look like environment variable names: a letter or '_', then
 * letters, digits or '_', at most LOOM_SECRET_NAME_MAX characters. */
#define LOOM_SECRET_NAME_MAX 128
bool loom_secret_name_valid(const char *name);

typedef struct {
    char *name;
    char *shell; /* run as a string; NULL in the argv form */
    char **argv; /* run as a list, NULL-terminated; NULL in the shell form */
    size_t argc;
    char **needs;      /* names as written */
    size_t *needs_idx; /* the same, as indexes into loom_dag_t.tasks */
    size_t n_needs;
    loom_env_t *env;
    size_t n_env;
    uint64_t timeout_ms; /* 0: no limit */
    uint32_t retries;    /* further attempts after a failure */
    int line, col;       /* where the task's name is written */

    /* `run` split into literal text and ${{ references }}: shell_tmpl for the
     * shell form, argv_tmpl[argc] for the argv form (one per argument). */
    loom_tmpl_t shell_tmpl;
    loom_tmpl_t *argv_tmpl;
    char *cond;                  /* `if` expression source; NULL: always */
    loom_trigger_rule rule;      /* `trigger_rule` */
    uint64_t retry_delay_ms;     /* first retry's delay (default 1s) */
    uint64_t max_retry_delay_ms; /* cap of the exponential backoff (default 5m) */
    int retry_jitter;            /* 1: +-25% random jitter (default) */
    loom_dag_resources_t resources;
    char *foreach;      /* reference path ("params.lrs") or NULL */
    char *foreach_json; /* a literal list, as JSON text, or NULL */
    char *metrics;      /* `metrics: FILE`, relative to the working folder; NULL: none */
    char **inputs;      /* `inputs` as written (parsed here, used by the artifacts issue) */
    size_t n_inputs;
    char **outputs; /* `outputs` as written */
    size_t n_outputs;
    int cache; /* `cache: true` */
    /* `model: {name, path, promote: {alias, metric, direction}}`: on success
     * the output `path` is registered as a new version of model `name`; with
     * `promote`, `alias` moves to it when its `metric` beats the alias's. */
    char *model_name, *model_path;
    char *promote_alias, *promote_metric;
    int promote_lower;          /* 1: a lower metric is better (direction: min) */
    int32_t priority;           /* higher runs first among queued tasks; -1000..1000, default 0 */
    loom_dag_secret_t *secrets; /* `secrets`: given to each attempt, masked in its log */
    size_t n_secrets;
} loom_dag_task_t;

typedef struct {
    char *name;
    char *description; /* may be NULL */
    loom_env_t *env;
    size_t n_env;
    loom_dag_task_t *tasks; /* in file order */
    size_t n_tasks;
    size_t *order; /* a topological order: indexes into tasks */

    loom_dag_param_t *params;
    size_t n_params;
    char *triggers_json;    /* `triggers` as a JSON array, shape-checked; NULL: none */
    char *concurrency_json; /* `concurrency` as a JSON object; NULL: none */
} loom_dag_t;

typedef struct {
    char *file;
    int line, col; /* 1-based; 0 when the problem has no position */
    char *message;
} loom_diag_t;

typedef struct {
    loom_diag_t *items;
    size_t n;
} loom_diags_t;

/* Parses and validates src (len bytes, need not be NUL-terminated). filename
 * is used only in diagnostics. Returns 0 and a DAG, or LOOM_EPARSE with every
 * problem found appended to diags (which may be NULL) in file order, and *out
 * NULL. */
int loom_dag_parse(const char *src, size_t len, const char *filename, loom_dag_t **out,
                   loom_diags_t *diags);
void loom_dag_destroy(loom_dag_t **dag);
/* Index of the task named name, or -1. */
ssize_t loom_dag_find(const loom_dag_t *dag, const char *name);

/* A list keeps at most this many diagnostics, then one "too many errors" line:
 * nobody reads the 101st, and a hostile file must not grow the list without
 * bound. */
#define LOOM_DIAGS_MAX 100

/* The parameter named name, or NULL. */
const loom_dag_param_t *loom_dag_param(const loom_dag_t *dag, const char *name);

/* Splits text into literal parts and ${{ REF }} references (whitespace in
 * the braces allowed; REF a dotted path such as params.lr). With shell set,
 * text is a /bin/sh command: each reference's quoting context is recorded in
 * its part's quote, and a reference where no quoting is safe is refused (in a
 * comment, a here-document, `backquotes` or $(( )), or right after a "\" or
 * "$"). Returns 0, or LOOM_EPARSE with a message in why, the byte offset of
 * the problem in *err_off, and *out empty. Free with loom_tmpl_free. */
int loom_tmpl_parse(const char *text, int shell, loom_tmpl_t *out, char *why, size_t whylen,
                    size_t *err_off);
void loom_tmpl_free(loom_tmpl_t *t);

/* Renders a template. lookup returns the value of a reference path as text
 * (a new string the renderer frees), or NULL when it has none, in which case
 * rendering fails with the path in why. In shell form (shell_quote) every
 * value is substituted single-quoted, so $(...), backticks, ;, newlines and
 * quotes in it are literal text; in argv form it is inserted as is, always
 * within its one argument. Returns a new string, or NULL.
 *
 * Shell form in detail, by the part's quote: LOOM_TMPL_BARE wraps the value
 * in '...' with each ' written '\''; LOOM_TMPL_SQUOTED (already inside '...')
 * writes only the ' as '\''; LOOM_TMPL_DQUOTED (inside "...") puts a "\"
 * before each \, ", $ and `. Either way the shell sees the value as text. */
char *loom_tmpl_render(const loom_tmpl_t *t, int shell_quote,
                       char *(*lookup)(void *ud, const char *path), void *ud, char *why,
                       size_t whylen);

/* Appends one diagnostic (message formatted printf-style). */
void loom_diags_add(loom_diags_t *d, const char *file, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
void loom_diags_vadd(loom_diags_t *d, const char *file, int line, int col, const char *fmt,
                     va_list ap) __attribute__((format(printf, 5, 0)));
/* "file:line:col: error: message\n" for each, in order; caller frees. */
char *loom_diags_format(const loom_diags_t *d);
void loom_diags_free(loom_diags_t *d);

#endif
