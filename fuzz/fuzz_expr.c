/* Condition expressions (`when:`): parse, list references, evaluate against
 * a fixed set of values, and print values. */
#include "loom/expr.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static json_t *values;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    values = json_loads("{\"params\":{\"min_auc\":0.8,\"name\":\"x\",\"n\":3,\"on\":true,"
                        "\"l\":[1,\"a\",null],\"o\":{\"k\":1e300}},"
                        "\"tasks\":{\"evaluate\":{\"metrics\":{\"auc\":0.83},\"outcome\":"
                        "\"succeeded\"}}}",
                        0, NULL);
    if (!values) abort();
    return 0;
}

static json_t *lookup(void *ud, const char *path)
{
    json_t *v = values;
    char *copy = strdup(path), *save = NULL;
    for (char *seg = strtok_r(copy, ".", &save); seg && v; seg = strtok_r(NULL, ".", &save))
        v = json_object_get(v, seg);
    free(copy);
    return v ? json_incref(v) : NULL;
}

static int count_ref(void *ud, const char *path, int col)
{
    if (!path || col < 1) abort();
    ++*(int *)ud;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > LOOM_EXPR_MAX_LEN + 16) return 0;
    char *src = malloc(size + 1);
    memcpy(src, data, size);
    src[size] = '\0';
    loom_expr_t *e = NULL;
    char why[256];
    int col = 0;
    if (loom_expr_parse(src, &e, why, sizeof why, &col) == 0) {
        int n = 0;
        loom_expr_each_ref_at(e, count_ref, &n);
        char *seen = NULL;
        (void)loom_expr_eval(e, lookup, NULL, &seen);
        free(seen);
        loom_expr_destroy(&e);
    } else if (e) {
        abort();
    }
    json_t *v = json_loadb(src, size, JSON_DECODE_ANY, NULL);
    if (v) {
        free(loom_expr_value_text(v, true));
        free(loom_expr_value_text(v, false));
        json_decref(v);
    }
    free(src);
    return 0;
}
