/* The YAML node tree under the DAG parser: nodes keep their kind, text,
 * style and position; limits and duplicates are reported; a cursor finds
 * where a byte of a scalar's text is written. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "loom/dag.h"
#include "loom/err.h"
#include "loom/util.h"
#include "loom/ytree.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_ytree_nodes(void **state)
{
    (void)state;
    const char *src = "a: plain\n"
                      "b: 'quoted'\n"
                      "c: !!str 7\n"
                      "d: [~, \"\", {k: v}]\n"
                      "e:\n";
    loom_diags_t d = {0};
    loom_ynode_t *root = NULL;
    assert_int_equal(loom_ytree_parse(src, strlen(src), "t.yaml", NULL, &root, &d), 0);
    assert_int_equal(d.n, 0);
    assert_int_equal(root->kind, LOOM_YMAP);
    assert_int_equal(root->n_pairs, 5);
    assert_string_equal(root->pairs[1].key->str, "b");
    assert_int_equal(root->pairs[1].key->line, 2);
    assert_int_equal(root->pairs[1].value->col, 4);
    assert_true(loom_ynode_get(root, "a")->plain);
    assert_false(loom_ynode_get(root, "b")->plain);
    assert_string_equal(loom_ynode_get(root, "c")->tag, "tag:yaml.org,2002:str");
    assert_null(loom_ynode_get(root, "missing"));

    const loom_ynode_t *list = loom_ynode_get(root, "d");
    assert_int_equal(list->kind, LOOM_YSEQ);
    assert_int_equal(list->n_items, 3);
    assert_true(loom_ynode_is_null(list->items[0]));
    assert_false(loom_ynode_is_null(list->items[1])); /* "" is a string, not null */
    assert_true(loom_ynode_is_null(loom_ynode_get(root, "e")));
    assert_false(loom_ynode_is_null(loom_ynode_get(root, "c")));
    assert_string_equal(loom_ynode_get(list->items[2], "k")->str, "v");

    char out[LOOM_YQUOTE_MAX];
    loom_ynode_describe(list, out, sizeof out);
    assert_string_equal(out, "a list");
    loom_ynode_describe(list->items[0], out, sizeof out);
    assert_string_equal(out, "an empty value");
    loom_ynode_describe(loom_ynode_get(root, "b"), out, sizeof out);
    assert_string_equal(out, "\"quoted\"");
    loom_ytree_destroy(&root);
    assert_null(root);
}

static void test_ytree_quote_and_limits(void **state)
{
    (void)state;
    char out[LOOM_YQUOTE_MAX];
    loom_yquote("a\"b\\c\n\t\x1b", 8, out, sizeof out);
    assert_string_equal(out, "\"a\\\"b\\\\c\\n\\t\\x1B\"");
    char longer[200];
    memset(longer, 'x', sizeof longer);
    loom_yquote(longer, sizeof longer, out, sizeof out);
    assert_true(strlen(out) < 70);
    assert_string_equal(out + strlen(out) - 4, "...\"");

    loom_ytree_limits_t lim = {.max_bytes = 1000, .max_nodes = 5, .max_depth = 2};
    loom_diags_t d = {0};
    loom_ynode_t *root = NULL;
    const char *six = "[1, 2, 3, 4, 5]";
    assert_int_equal(loom_ytree_parse(six, strlen(six), "t", &lim, &root, &d), LOOM_EPARSE);
    assert_null(root);
    assert_string_equal(d.items[0].message, "too many YAML nodes (the limit is 5)");
    assert_int_equal(d.items[0].col, 14);
    const char *deep = "a: [[1]]";
    assert_int_equal(loom_ytree_parse(deep, strlen(deep), "t", &lim, &root, &d), LOOM_EPARSE);
    assert_string_equal(d.items[1].message, "nesting is deeper than 2 levels");
    /* A duplicate is reported but the tree comes back, without it. */
    lim.max_nodes = 100;
    const char *dup = "{a: 1, b: 2, a: 3}";
    assert_int_equal(loom_ytree_parse(dup, strlen(dup), "t", &lim, &root, &d), LOOM_EPARSE);
    assert_non_null(root);
    assert_int_equal(root->n_pairs, 2);
    assert_string_equal(loom_ynode_get(root, "a")->str, "1");
    assert_string_equal(d.items[2].message, "duplicate key \"a\" (first at 1:2)");
    loom_ytree_destroy(&root);
    loom_diags_free(&d);
}

static loom_ynode_t *tree(const char *src)
{
    loom_diags_t d = {0};
    loom_ynode_t *root = NULL;
    assert_int_equal(loom_ytree_parse(src, strlen(src), "t.yaml", NULL, &root, &d), 0);
    assert_int_equal(d.n, 0);
    return root;
}

static void test_ytree_scalar_styles(void **state)
{
    (void)state;
    loom_ynode_t *root = tree("a: plain\n"
                              "b: 'single'\n"
                              "c: \"double\"\n"
                              "d: |\n"
                              "\n"
                              "      literal\n"
                              "e: >\n"
                              "   folded\n");
    assert_int_equal(loom_ynode_get(root, "a")->style, LOOM_YPLAIN);
    assert_int_equal(loom_ynode_get(root, "b")->style, LOOM_YSINGLE);
    assert_int_equal(loom_ynode_get(root, "c")->style, LOOM_YDOUBLE);
    const loom_ynode_t *d = loom_ynode_get(root, "d");
    assert_int_equal(d->style, LOOM_YLITERAL);
    assert_int_equal(d->indent, 6); /* the first line that is not blank says */
    assert_string_equal(d->str, "\nliteral\n");
    assert_int_equal(loom_ynode_get(root, "e")->style, LOOM_YFOLDED);
    assert_int_equal(loom_ynode_get(root, "e")->indent, 3);
    loom_ytree_destroy(&root);
}

/* Line and column of a byte of the text, for each style. */
static void where(const loom_ynode_t *n, size_t off, int line, int col)
{
    loom_ycursor_t cur;
    loom_ycursor_init(&cur, n);
    loom_ycursor_seek(&cur, n, off);
    assert_int_equal(cur.line, line);
    assert_int_equal(cur.col, col);
}

static void test_ytree_cursor(void **state)
{
    (void)state;
    loom_ynode_t *root = tree("a: echo x\n"
                              "b: 'echo \xc3\xa9 x'\n"
                              "list: [\"q x\"]\n"
                              "c: |\n"
                              "    first\n"
                              "    second x\n");
    where(loom_ynode_get(root, "a"), 5, 1, 9);  /* "x" */
    where(loom_ynode_get(root, "b"), 8, 2, 12); /* after a 2-byte "é": characters count */
    where(loom_ynode_get(root, "list")->items[0], 2, 3, 11);
    const loom_ynode_t *c = loom_ynode_get(root, "c");
    where(c, 0, 5, 5);
    where(c, 13, 6, 12); /* "x" on the second line */

    /* Forward steps reuse the walk; going back starts over and agrees. */
    loom_ycursor_t cur;
    loom_ycursor_init(&cur, c);
    loom_ycursor_seek(&cur, c, 6);
    assert_int_equal(cur.line, 6);
    assert_int_equal(cur.col, 5);
    loom_ycursor_seek(&cur, c, 13);
    assert_int_equal(cur.col, 12);
    loom_ycursor_seek(&cur, c, 2);
    assert_int_equal(cur.line, 5);
    assert_int_equal(cur.col, 7);
    loom_ycursor_seek(&cur, c, 10000); /* past the end stops at it */
    assert_int_equal(cur.off, c->len);
    loom_ytree_destroy(&root);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ytree_nodes),
        cmocka_unit_test(test_ytree_quote_and_limits),
        cmocka_unit_test(test_ytree_scalar_styles),
        cmocka_unit_test(test_ytree_cursor),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
