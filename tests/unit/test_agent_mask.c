/* Masking secret values in task output (agent/mask.c): whole values,
 * values split across reads at every position, overlapping and repeated
 * values, separate streams, and output with no secret passing unchanged. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "mask.h"

#include <stdlib.h>
#include <string.h>

/* Feeds text to stream 0 in pieces of the given sizes (0 ends), then flushes. */
static char *run(loom_mask_t *m, const char *text, const size_t *pieces)
{
    loom_buf_t out = {0};
    size_t off = 0, n = strlen(text);
    for (size_t i = 0; pieces && pieces[i] && off < n; i++) {
        size_t k = pieces[i] < n - off ? pieces[i] : n - off;
        loom_mask_feed(m, 0, text + off, k, &out);
        off += k;
    }
    if (off < n) loom_mask_feed(m, 0, text + off, n - off, &out);
    loom_mask_flush(m, 0, &out);
    loom_buf_puts(&out, "");
    return loom_buf_steal(&out);
}

static loom_mask_t *mask_of(const char *a, const char *b)
{
    loom_mask_t *m = loom_mask_new();
    if (a) loom_mask_add(m, (const uint8_t *)a, strlen(a));
    if (b) loom_mask_add(m, (const uint8_t *)b, strlen(b));
    return m;
}

static void test_whole_values(void **state)
{
    (void)state;
    loom_mask_t *m = mask_of("s3cr3t-value", "abc"); /* "abc" is too short to mask */
    assert_int_equal(loom_mask_count(m), 1);
    char *got = run(m, "x s3cr3t-value y s3cr3t-values3cr3t-value abc\n", NULL);
    assert_string_equal(got, "x *** y ****** abc\n");
    free(got);
    loom_mask_destroy(&m);
    assert_null(m);
}

static void test_split_at_every_position(void **state)
{
    (void)state;
    const char *text = "before s3cr3t-value after, and s3cr3t-valu (almost) s3cr3t-value";
    const char *want = "before *** after, and s3cr3t-valu (almost) ***";
    for (size_t a = 1; a < strlen(text); a++) {
        for (size_t b = 1; b < 20; b++) {
            loom_mask_t *m = mask_of("s3cr3t-value", NULL);
            size_t pieces[] = {a, b, b, b, b, b, b, b, b, b, 0};
            char *got = run(m, text, pieces);
            assert_string_equal(got, want);
            free(got);
            loom_mask_destroy(&m);
        }
    }
}

static void test_byte_by_byte_and_self_overlap(void **state)
{
    (void)state;
    /* A value that overlaps itself: "aaab" inside "aaaab". */
    loom_mask_t *m = mask_of("aaab", NULL);
    size_t ones[200];
    for (size_t i = 0; i < 199; i++) ones[i] = 1;
    ones[199] = 0;
    char *got = run(m, "aaaab aaab aaa", ones);
    assert_string_equal(got, "a*** *** aaa");
    free(got);
    loom_mask_destroy(&m);
}

static void test_longer_value_wins(void **state)
{
    (void)state;
    loom_mask_t *m = mask_of("token", "token-with-suffix");
    char *got = run(m, "token-with-suffix token", NULL);
    assert_string_equal(got, "*** ***");
    free(got);
    loom_mask_destroy(&m);
}

static void test_streams_are_separate(void **state)
{
    (void)state;
    loom_mask_t *m = mask_of("password", NULL);
    loom_buf_t out = {0}, err = {0};
    loom_mask_feed(m, 0, "pass", 4, &out);
    loom_mask_feed(m, 1, "word", 4, &err); /* not the rest of stdout's "pass" */
    loom_mask_feed(m, 0, "word!", 5, &out);
    loom_mask_flush(m, 0, &out);
    loom_mask_flush(m, 1, &err);
    assert_int_equal(out.len, 4);
    assert_memory_equal(out.data, "***!", 4);
    assert_int_equal(err.len, 4);
    assert_memory_equal(err.data, "word", 4);
    loom_buf_free(&out);
    loom_buf_free(&err);
    loom_mask_destroy(&m);
}

static void test_nothing_held_without_a_prefix(void **state)
{
    (void)state;
    loom_mask_t *m = mask_of("zebra-secret", NULL);
    loom_buf_t out = {0};
    /* Output that cannot begin the value is given out at once, in full. */
    loom_mask_feed(m, 0, "progress 10%\n", 13, &out);
    assert_int_equal(out.len, 13);
    /* Only the possible beginning is held back. */
    loom_mask_feed(m, 0, "next: zeb", 9, &out);
    assert_int_equal(out.len, 13 + 6);
    loom_mask_feed(m, 0, "ra-secret\n", 10, &out);
    loom_mask_flush(m, 0, &out);
    loom_buf_puts(&out, "");
    assert_string_equal(out.data, "progress 10%\nnext: ***\n");
    loom_buf_free(&out);
    loom_mask_destroy(&m);
    /* Without values, bytes pass untouched. */
    m = loom_mask_new();
    char *got = run(m, "plain", NULL);
    assert_string_equal(got, "plain");
    free(got);
    loom_mask_destroy(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_whole_values),
        cmocka_unit_test(test_split_at_every_position),
        cmocka_unit_test(test_byte_by_byte_and_self_overlap),
        cmocka_unit_test(test_longer_value_wins),
        cmocka_unit_test(test_streams_are_separate),
        cmocka_unit_test(test_nothing_held_without_a_prefix),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
