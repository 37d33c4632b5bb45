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

/* Parses src. On error returns LOOM_EPARSE with a message in why and the
 * 1-based column of the problem in *col. */
int loom_expr_parse(const char *src, loom_expr_t **out, char *why, size_t whylen, int *col);
void loom_expr_destroy(loom_expr_t **e);

/* Calls cb for every reference path in the expression, in order; stops at
 * the first non-zero return and returns it. */
int loom_expr_each_ref(const loom_expr_t *e, int (*cb)(void *ud, const char *path), void *ud);

/* Evaluates e. lookup returns a new reference to a path's value, or NULL
 * (which is null). A comparison between values of different types is
 * false (and != is true); and/or/not use truthiness (false, null, 0, "" and
 * empty lists are false). If seen is not NULL it receives, for the record,
 * "path=value" for every reference read, comma-separated (caller frees). */
bool loom_expr_eval(const loom_expr_t *e, json_t *(*lookup)(void *ud, const char *path), void *ud,
                    char **seen);

#endif
