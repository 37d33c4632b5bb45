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
} loom_dag_task_t;

typedef struct {
    char *name;
    char *description; /* may be NULL */
    loom_env_t *env;
    size_t n_env;
    loom_dag_task_t *tasks; /* in file order */
    size_t n_tasks;
    size_t *order; /* a topological order: indexes into tasks */
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

/* Appends one diagnostic (message formatted printf-style). */
void loom_diags_add(loom_diags_t *d, const char *file, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
void loom_diags_vadd(loom_diags_t *d, const char *file, int line, int col, const char *fmt,
                     va_list ap) __attribute__((format(printf, 5, 0)));
/* "file:line:col: error: message\n" for each, in order; caller frees. */
char *loom_diags_format(const loom_diags_t *d);
void loom_diags_free(loom_diags_t *d);

#endif
