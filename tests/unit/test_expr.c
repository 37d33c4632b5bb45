/* Conditions: precedence, comparisons across types, truthiness, the record
 * of values read, syntax errors with their column, the caps that bound
 * hostile input, references in order, and values as text. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "loom/err.h"
#include "loom/expr.h"
#include "loom/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Values for references, as JSON text by path. */
typedef struct {
    const char *path, *json;
} var;

static const var vars[] = {
    {"params.min_auc", "0.8"},
    {"params.epochs", "3"},
    {"params.name", "\"resnet\""},
    {"params.empty", "\"\""},
    {"params.zero", "0"},
    {"params.zero_real", "0.0"},
    {"params.on", "true"},
    {"params.off", "false"},
    {"params.none", "null"},
    {"params.list", "[1, 2]"},
    {"params.no_items", "[]"},
    {"params.obj", "{\"a\": 1}"},
    {"params.no_keys", "{}"},
    {"tasks.evaluate.metrics.auc", "0.83"},
    {"tasks.train.status", "\"succeeded\""},
    {"event.score", "0.35"},
    {NULL, NULL},
};

static int lookups;

static json_t *on_lookup(void *ud, const char *path)
{
    (void)ud;
    lookups++;
    for (const var *v = vars; v->path; v++)
        if (strcmp(v->path, path) == 0) return json_loads(v->json, JSON_DECODE_ANY, NULL);
    return NULL;
}

static loom_expr_t *parse_ok(const char *src)
{
    loom_expr_t *e = NULL;
    char why[200] = "";
    int col = -1;
    int rc = loom_expr_parse(src, &e, why, sizeof why, &col);
    if (rc != 0) print_error("%s: %s at %d\n", src, why, col);
    assert_int_equal(rc, 0);
    assert_int_equal(col, 0);
    return e;
}

static bool eval(const char *src)
{
    loom_expr_t *e = parse_ok(src);
    bool r = loom_expr_eval(e, on_lookup, NULL, NULL);
    loom_expr_destroy(&e);
    return r;
}

#define assert_holds(src) assert_true(eval(src))
#define assert_fails(src) assert_false(eval(src))

static void test_precedence(void **state)
{
    (void)state;
    assert_holds("true or false and false"); /* and binds tighter than or */
    assert_fails("(true or false) and false");
    assert_fails("not true or false");  /* not binds tighter than or */
    assert_holds("not false and true"); /* ... and than and */
    assert_fails("not (false or true)");
    assert_holds("not 1 == 2"); /* not applies to the comparison */
    assert_holds("not not true");
    assert_holds("1 < 2 and 2 < 3 or false");
    assert_holds("false or false or true");
    assert_fails("true and true and false");
    assert_holds("((((true))))");
}

static void test_comparisons(void **state)
{
    (void)state;
    /* Numbers: integers and reals compare as numbers. */
    assert_holds("1 == 1.0");
    assert_holds("2 > 1.5");
    assert_holds("-1 < 0");
    assert_holds("params.epochs >= 3 and params.epochs <= 3");
    assert_holds("tasks.evaluate.metrics.auc >= params.min_auc");
    assert_fails("tasks.evaluate.metrics.auc < params.min_auc");
    assert_holds("9007199254740993 > 9007199254740992"); /* exact as integers */
    assert_holds("1e3 == 1000");
    /* Strings: byte by byte. */
    assert_holds("'abc' < 'abd'");
    assert_holds("'ab' < 'abc'");
    assert_holds("'B' < 'a'");
    assert_holds("tasks.train.status == \"succeeded\"");
    assert_holds("params.name != 'vgg'");
    /* Booleans and null: equality only. */
    assert_holds("params.on == true");
    assert_holds("true != false");
    assert_fails("true < false");
    assert_fails("false >= false");
    assert_holds("params.none == null");
    assert_holds("params.missing == null"); /* no value reads as null */
    assert_fails("null < null");
    /* Different kinds are never equal, and never ordered. */
    assert_fails("'1' == 1");
    assert_holds("'1' != 1");
    assert_fails("'1' < 2");
    assert_fails("0 == false");
    assert_holds("0 != false");
    assert_fails("null == false");
    assert_fails("params.list < 3");
    /* Lists and objects: equal when their contents are. */
    assert_holds("params.list == params.list");
    assert_fails("params.list != params.list");
    assert_fails("params.list == params.no_items");
    assert_fails("params.obj < params.obj");
}

static void test_truthiness(void **state)
{
    (void)state;
    static const char *const falsy[] = {"false",
                                        "null",
                                        "0",
                                        "0.0",
                                        "''",
                                        "params.off",
                                        "params.none",
                                        "params.zero",
                                        "params.zero_real",
                                        "params.empty",
                                        "params.no_items",
                                        "params.no_keys",
                                        "params.missing"};
    for (size_t i = 0; i < sizeof falsy / sizeof falsy[0]; i++) {
        if (eval(falsy[i])) fail_msg("%s should be false", falsy[i]);
        char *neg = loom_xasprintf("not %s", falsy[i]);
        assert_true(eval(neg));
        free(neg);
    }
    static const char *const truthy[] = {"true",       "1",          "-1",        "0.5",
                                         "'x'",        "'false'",    "params.on", "params.list",
                                         "params.obj", "params.name"};
    for (size_t i = 0; i < sizeof truthy / sizeof truthy[0]; i++)
        if (!eval(truthy[i])) fail_msg("%s should be true", truthy[i]);
}

static char *seen_of(const char *src, bool *result)
{
    loom_expr_t *e = parse_ok(src);
    char *seen = NULL;
    *result = loom_expr_eval(e, on_lookup, NULL, &seen);
    loom_expr_destroy(&e);
    assert_non_null(seen);
    return seen;
}

static void test_seen_record(void **state)
{
    (void)state;
    bool r;
    char *seen = seen_of("tasks.evaluate.metrics.auc >= params.min_auc", &r);
    assert_true(r);
    /* Sorted by path, numbers as written (not 0.82999999999999996). */
    assert_string_equal(seen, "params.min_auc=0.8, tasks.evaluate.metrics.auc=0.83");
    free(seen);
    seen = seen_of("params.name == 'x' or params.epochs > 1 or params.name == 'y'", &r);
    assert_true(r);
    assert_string_equal(seen, "params.epochs=3, params.name=\"resnet\""); /* each path once */
    free(seen);
    seen = seen_of("params.missing or params.list == params.obj", &r);
    assert_false(r);
    assert_string_equal(seen, "params.list=[1,2], params.missing=null, params.obj={\"a\":1}");
    free(seen);
    seen = seen_of("1 < 2", &r);
    assert_string_equal(seen, "");
    free(seen);
    /* and/or stop early: what they did not need is not read. */
    lookups = 0;
    seen = seen_of("params.off and params.epochs > 1", &r);
    assert_false(r);
    assert_int_equal(lookups, 1);
    assert_string_equal(seen, "params.off=false");
    free(seen);
    lookups = 0;
    seen = seen_of("params.on or params.epochs > 1", &r);
    assert_true(r);
    assert_int_equal(lookups, 1);
    free(seen);
}

static void test_literals_and_strings(void **state)
{
    (void)state;
    assert_holds("'it\\'s' == \"it's\"");
    assert_holds("\"a\\\\b\" == 'a\\\\b'");
    assert_holds("'tab\\there' != 'tab here'");
    assert_holds("'line\\n' != 'line'");
    assert_holds("'\xc3\xa9' > 'z'"); /* UTF-8 bytes compare after ASCII */
    assert_holds("1.5e2 == 150");
    assert_holds("-0.5 < 0");
    assert_holds("event.score > 0.3");
    /* Names may hold "-" and, after a dot, start with a digit. */
    loom_expr_t *e = parse_ok("tasks.train-2.status == 'x' and tasks.2nd.status");
    loom_expr_destroy(&e);
}

static void expect_error(const char *src, const char *why_want, int col_want)
{
    loom_expr_t *e = (loom_expr_t *)1;
    char why[200] = "";
    int col = -1;
    assert_int_equal(loom_expr_parse(src, &e, why, sizeof why, &col), LOOM_EPARSE);
    assert_null(e);
    if (strcmp(why, why_want) != 0 || col != col_want)
        fail_msg("%s: got \"%s\" at %d, want \"%s\" at %d", src, why, col, why_want, col_want);
}

static void test_syntax_errors(void **state)
{
    (void)state;
    expect_error("", "condition is empty", 1);
    expect_error("   ", "condition is empty", 1);
    expect_error("a ==", "expected a value, got the end of the condition", 5);
    expect_error("a = 1", "\"=\" is not an operator; use \"==\"", 3);
    expect_error("a && b", "\"&\" is not an operator; use \"and\"", 3);
    expect_error("a || b", "\"|\" is not an operator; use \"or\"", 3);
    expect_error("!a", "\"!\" is not an operator; use \"not\"", 1);
    expect_error("(a == 1",
                 "expected \")\" to close the \"(\" at column 1, got the end of the "
                 "condition",
                 8);
    expect_error("a == 1)", "unexpected \")\" after the condition", 7);
    expect_error("1 < 2 < 3", "comparisons cannot be chained; join them with \"and\"", 7);
    expect_error("'abc", "unterminated string", 1);
    expect_error("x == 'a\\qb'", "unknown escape in string; use \\\\, \\', \\\", \\n, \\t or \\r",
                 8);
    expect_error("params.", "expected a name after \".\"", 8);
    expect_error("params..x", "expected a name after \".\"", 8);
    expect_error("1.", "expected a digit after \".\"", 3);
    expect_error("1e", "expected a digit in the exponent", 3);
    expect_error("12abc", "invalid number", 1);
    expect_error("1e999 > 1", "number is out of range", 1);
    expect_error("a b", "unexpected \"b\" after the condition", 3);
    expect_error("a and", "expected a value, got the end of the condition", 6);
    expect_error("not", "expected a value, got the end of the condition", 4);
    expect_error("()", "expected a value, got \")\"", 2);
    expect_error("a == @", "unexpected \"@\"", 6);
    expect_error("a == \x01", "unexpected character", 6);
    expect_error("'\xc3\xa9' == \xc3\xa9", "unexpected character",
                 8); /* columns count characters */
    expect_error("- 1", "unexpected \"-\"", 1);
}

static void test_bounded(void **state)
{
    (void)state;
    loom_buf_t b = {0};
    for (int i = 0; i < LOOM_EXPR_MAX_DEPTH; i++) loom_buf_puts(&b, "(");
    loom_buf_puts(&b, "true");
    for (int i = 0; i < LOOM_EXPR_MAX_DEPTH; i++) loom_buf_puts(&b, ")");
    assert_true(eval(b.data)); /* 64 levels are fine */
    loom_buf_reset(&b);
    for (int i = 0; i <= LOOM_EXPR_MAX_DEPTH; i++) loom_buf_puts(&b, "(");
    loom_buf_puts(&b, "true");
    expect_error(b.data, "nested deeper than 64 levels", 65);
    loom_buf_reset(&b);
    for (int i = 0; i <= LOOM_EXPR_MAX_DEPTH; i++) loom_buf_puts(&b, "not ");
    loom_buf_puts(&b, "true");
    expect_error(b.data, "nested deeper than 64 levels", 257);
    /* Chains of and/or are loops, not nesting: as long as the length cap. */
    loom_buf_reset(&b);
    loom_buf_puts(&b, "true");
    while (b.len + 9 <= LOOM_EXPR_MAX_LEN) loom_buf_puts(&b, " and true");
    assert_true(eval(b.data));
    loom_buf_puts(&b, "         "); /* past 4096 bytes, even as blanks */
    char *why = loom_xasprintf("condition is %zu bytes; the limit is 4096", b.len);
    assert_true(b.len > LOOM_EXPR_MAX_LEN);
    expect_error(b.data, why, 1);
    free(why);
    loom_buf_free(&b);
}

static int count_refs(void *ud, const char *path)
{
    loom_buf_printf(ud, "%s;", path);
    return 0;
}

static int refs_at(void *ud, const char *path, int col)
{
    loom_buf_printf(ud, "%s@%d;", path, col);
    return strcmp(path, "stop.here") == 0 ? 7 : 0;
}

static void test_each_ref(void **state)
{
    (void)state;
    loom_expr_t *e = parse_ok("a.b == 1 and (not c or 'x' < d.e.f) or a.b");
    loom_buf_t b = {0};
    assert_int_equal(loom_expr_each_ref(e, count_refs, &b), 0);
    assert_string_equal(b.data, "a.b;c;d.e.f;a.b;");
    loom_buf_reset(&b);
    assert_int_equal(loom_expr_each_ref_at(e, refs_at, &b), 0);
    assert_string_equal(b.data, "a.b@1;c@19;d.e.f@30;a.b@40;");
    loom_expr_destroy(&e);
    /* A non-zero return stops the walk and comes back. */
    loom_buf_reset(&b);
    e = parse_ok("x or stop.here or y");
    assert_int_equal(loom_expr_each_ref_at(e, refs_at, &b), 7);
    assert_string_equal(b.data, "x@1;stop.here@6;");
    loom_expr_destroy(&e);
    loom_expr_destroy(&e); /* NULL is fine */
    loom_buf_free(&b);
}

static void expect_text(const char *json, bool quote, const char *want)
{
    json_t *v = json_loads(json, JSON_DECODE_ANY, NULL);
    assert_non_null(v);
    char *got = loom_expr_value_text(v, quote);
    assert_string_equal(got, want);
    free(got);
    json_decref(v);
}

static void test_value_text(void **state)
{
    (void)state;
    expect_text("0.83", false, "0.83");
    expect_text("0.1", true, "0.1");
    expect_text("1.0", false, "1.0");
    expect_text("1000.0", false, "1000.0");
    expect_text("1e20", false, "1e+20");
    expect_text("0.0001", false, "0.0001");
    expect_text("0.00001", false, "1e-05");
    expect_text("-2.5", false, "-2.5");
    expect_text("3", false, "3");
    expect_text("-9007199254740993", false, "-9007199254740993");
    expect_text("true", false, "true");
    expect_text("null", true, "null");
    expect_text("\"a \\\"b\\\" \\n\\u0001\"", false, "a \"b\" \n\x01");
    expect_text("\"a \\\"b\\\" \\n\\u0001\"", true, "\"a \\\"b\\\" \\n\\u0001\"");
    expect_text("[0.1, \"x\", [true], {}]", false, "[0.1,\"x\",[true],{}]");
    expect_text("{\"k\": [1, 0.5], \"s\": \"\\\\\"}", false, "{\"k\":[1,0.5],\"s\":\"\\\\\"}");
    char *n = loom_expr_value_text(NULL, true);
    assert_string_equal(n, "null");
    free(n);
    /* Deep values are cut, not recursed into without end. */
    json_t *deep = json_array(), *cur = deep;
    for (int i = 0; i < 1000; i++) {
        json_t *next = json_array();
        json_array_append_new(cur, next);
        cur = next;
    }
    char *t = loom_expr_value_text(deep, true);
    assert_int_equal(strlen(t), 64 + 4 + 64); /* 64 "[", "null", 64 "]" */
    json_t *back = json_loads(t, 0, NULL);    /* still valid JSON */
    assert_non_null(back);
    json_decref(back);
    free(t);
    json_decref(deep);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_precedence),
        cmocka_unit_test(test_comparisons),
        cmocka_unit_test(test_truthiness),
        cmocka_unit_test(test_seen_record),
        cmocka_unit_test(test_literals_and_strings),
        cmocka_unit_test(test_syntax_errors),
        cmocka_unit_test(test_bounded),
        cmocka_unit_test(test_each_ref),
        cmocka_unit_test(test_value_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
