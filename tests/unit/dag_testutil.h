/* Helpers shared by the DAG parser's test files (test_dag*.c): parse from an
 * exact-size copy, expect success, or expect exactly these diagnostics.
 * Include after cmocka.h. */
#ifndef LOOM_DAG_TESTUTIL_H
#define LOOM_DAG_TESTUTIL_H

#include "loom/dag.h"
#include "loom/err.h"
#include "loom/util.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Parses src from an exact-size heap copy (no NUL after it, so the sanitizer
 * catches any read past len). */
static inline int parse(const char *src, size_t len, loom_dag_t **dag, loom_diags_t *d)
{
    char *copy = loom_xmalloc(len ? len : 1);
    memcpy(copy, src, len);
    *dag = (loom_dag_t *)copy; /* must be overwritten */
    int rc = loom_dag_parse(copy, len, "dag.yaml", dag, d);
    free(copy);
    return rc;
}

static inline loom_dag_t *parse_ok(const char *src)
{
    loom_diags_t d = {0};
    loom_dag_t *dag;
    int rc = parse(src, strlen(src), &dag, &d);
    if (rc != 0) {
        char *text = loom_diags_format(&d);
        print_error("%s", text);
        free(text);
    }
    assert_int_equal(rc, 0);
    assert_int_equal(d.n, 0);
    assert_non_null(dag);
    loom_diags_free(&d);
    return dag;
}

/* All the diagnostics for src, formatted, after checking that it failed. */
static inline char *errors_of_len(const char *src, size_t len)
{
    loom_diags_t d = {0};
    loom_dag_t *dag;
    int rc = parse(src, len, &dag, &d);
    assert_int_equal(rc, LOOM_EPARSE);
    assert_null(dag);
    assert_true(d.n > 0);
    char *text = loom_diags_format(&d);
    loom_diags_free(&d);
    return text;
}

/* On a mismatch the whole text is printed first: cmocka cuts long strings. */
#define assert_errors(src, expected)                                                               \
    do {                                                                                           \
        char *got_ = errors_of_len((src), strlen(src));                                            \
        if (strcmp(got_, (expected)) != 0) fprintf(stderr, "got:\n%s", got_);                      \
        assert_string_equal(got_, (expected));                                                     \
        free(got_);                                                                                \
    } while (0)

/* Deterministic pseudo-random numbers (xorshift64): no rand() in loom. */
static inline uint64_t next_random(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Any input either parses cleanly or fails with diagnostics, never both,
 * never a crash, a leak or a read past the end. */
static inline void check_outcome(const char *src, size_t len)
{
    loom_diags_t d = {0};
    loom_dag_t *dag;
    int rc = parse(src, len, &dag, &d);
    if (rc == 0) {
        assert_non_null(dag);
        assert_int_equal(d.n, 0);
    } else {
        assert_int_equal(rc, LOOM_EPARSE);
        assert_null(dag);
        assert_true(d.n > 0);
    }
    loom_dag_destroy(&dag);
    loom_diags_free(&d);
}

/* A valid DAG with every basic key, shared by the parser's tests. */
static inline const char *dag_diamond(void)
{
    return "pipeline: diamond\n"
           "description: A diamond\n"
           "env:\n"
           "  REGION: eu-west\n"
           "tasks:\n"
           "  train:\n"
           "    run: [python3, train.py, --epochs, \"3\"]\n"
           "    needs: [clean, stats]\n"
           "    env:\n"
           "      EPOCHS: 3\n"
           "      DEBUG: ~\n"
           "    timeout: 10m\n"
           "    retries: 2\n"
           "  extract:\n"
           "    run: echo extract\n"
           "  clean:\n"
           "    run: echo clean\n"
           "    needs: extract\n"
           "  stats:\n"
           "    run: |\n"
           "      echo stats\n"
           "      wc -l data.csv\n"
           "    needs: [extract]\n";
}

#endif
