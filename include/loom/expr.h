/* Conditions: a small, safe expression language for a task's `if` and for
 * trigger filters. Literals (numbers, 'strings', "strings", true, false,
 * null), reference paths (params.x, tasks.t.status, tasks.t.metrics.m,
 * event.field), comparisons (== != < <= > >=), and, or, not, parentheses.
 * No calls, no assignment, nothing that can loop: evaluation is linear in
 * the size of the expression. */
#ifndef LOOM_EXPR_H
#define LOOM_EXPR_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct loom_expr loom_expr_t;

/* Hostile input stays bounded: longer sources and deeper nesting (brackets
 * and `not`s) are syntax errors. */
#define LOOM_EXPR_MAX_LEN 4096
#define LOOM_EXPR_MAX_DEPTH 64

/* Parses src. On error returns LOOM_EPARSE with a message in why and the
 * 1-based column of the problem in *col. */
int loom_expr_parse(const char *src, loom_expr_t **out, char *why, size_t whylen, int *col);
void loom_expr_destroy(loom_expr_t **e);

/* Calls cb for every reference path in the expression, in order; stops at
 * the first non-zero return and returns it. */
int loom_expr_each_ref(const loom_expr_t *e, int (*cb)(void *ud, const char *path), void *ud);
/* The same, with the 1-based column where each path starts in the source. */
int loom_expr_each_ref_at(const loom_expr_t *e, int (*cb)(void *ud, const char *path, int col),
                          void *ud);

/* Evaluates e. lookup returns a new reference to a path's value, or NULL
 * (which is null). A comparison between values of different types is
 * false (and != is true); and/or/not use truthiness (false, null, 0, "" and
 * empty lists are false). If seen is not NULL it receives, for the record,
 * "path=value" for every reference read, comma-separated (caller frees):
 * sorted by path, each once, values as loom_expr_value_text(v, true) gives
 * them ("params.min_auc=0.8, tasks.evaluate.metrics.auc=0.83"). and/or stop
 * early, so a reference they did not need is not read. */
bool loom_expr_eval(const loom_expr_t *e, json_t *(*lookup)(void *ud, const char *path), void *ud,
                    char **seen);

/* A value as text, for a command line or a record: numbers in the shortest
 * form that reads back as the same number (0.83, not jansson's
 * 0.82999999999999996; a real keeps its ".0"), true, false, null, lists and
 * objects as compact JSON. A string is JSON-quoted when quote_strings, else
 * as it is (strings inside lists and objects are always JSON). With
 * quote_strings the result is always valid JSON. Caller frees. */
char *loom_expr_value_text(const json_t *v, bool quote_strings);

#endif
