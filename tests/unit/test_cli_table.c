/* The command line's pure helpers: aligned tables, terminal-safe text, and
 * the tolerant JSON reads and formats behind `loom status` and friends.
 * The sources are compiled in directly: the CLI is a program, not a library. */
#include "../../cli/fmt.c"
#include "../../cli/table.c"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

static void test_table_aligns_columns(void **state)
{
    (void)state;
    static const char *const headers[] = {"NAME", "N", "STATE"};
    cli_table_t *t = cli_table_new(headers, 3);
    cli_table_align_right(t, 1);
    cli_table_add(t, "extract");
    cli_table_addf(t, "%d", 1);
    cli_table_add(t, "succeeded");
    cli_table_add(t, "a");
    cli_table_addf(t, "%d", 120);
    cli_table_add(t, NULL);
    assert_int_equal(cli_table_rows(t), 2);
    char *s = cli_table_render(t);
    assert_string_equal(s, "NAME       N  STATE\n"
                           "extract    1  succeeded\n"
                           "a        120  -\n");
    free(s);
    cli_table_destroy(&t);
    assert_null(t);
    cli_table_destroy(&t); /* NULL is fine */
}

static void test_table_no_trailing_spaces(void **state)
{
    (void)state;
    static const char *const headers[] = {"A", "LONG-HEADER"};
    cli_table_t *t = cli_table_new(headers, 2);
    cli_table_add(t, "x");
    cli_table_add(t, "");
    char *s = cli_table_render(t);
    assert_string_equal(s, "A  LONG-HEADER\nx  -\n");
    for (char *p = s; (p = strchr(p, '\n')) != NULL; p++) assert_true(p == s || p[-1] != ' ');
    free(s);
    cli_table_destroy(&t);
}

static void test_table_counts_utf8_as_one_column(void **state)
{
    (void)state;
    static const char *const headers[] = {"K", "V"};
    cli_table_t *t = cli_table_new(headers, 2);
    cli_table_add(t, "\xc3\xa9t\xc3\xa9"); /* "été": 3 columns, 5 bytes */
    cli_table_add(t, "1");
    cli_table_add(t, "abcd");
    cli_table_add(t, "2");
    char *s = cli_table_render(t);
    assert_string_equal(s, "K     V\n\xc3\xa9t\xc3\xa9   1\nabcd  2\n");
    free(s);
    cli_table_destroy(&t);
}

static void test_table_cells_cannot_break_lines_or_the_terminal(void **state)
{
    (void)state;
    static const char *const headers[] = {"ERROR"};
    cli_table_t *t = cli_table_new(headers, 1);
    cli_table_add(t, "line1\nline2\t\x1b[2J\xc2\x9b"
                     "x");
    char *s = cli_table_render(t);
    assert_string_equal(s, "ERROR\nline1 line2 ?[2J??x\n");
    free(s);
    cli_table_destroy(&t);
    char *ok = cli_sanitize("caf\xc3\xa9 \xc2\xa0ok");
    assert_string_equal(ok, "caf\xc3\xa9 \xc2\xa0ok"); /* ordinary UTF-8 untouched */
    free(ok);
}

static void test_json_reads_treat_wrong_types_as_absent(void **state)
{
    (void)state;
    json_error_t err;
    json_t *j = json_loads("{\"s\": \"x\", \"n\": 5, \"f\": 1.5, \"z\": null, \"a\": [], "
                           "\"o\": {}, \"ns\": \"7\"}",
                           0, &err);
    assert_non_null(j);
    int64_t v = -1;
    assert_string_equal(cli_jstr(j, "s"), "x");
    assert_null(cli_jstr(j, "n"));
    assert_null(cli_jstr(j, "missing"));
    assert_null(cli_jstr(j, "z"));
    assert_true(cli_jint(j, "n", &v));
    assert_int_equal(v, 5);
    assert_false(cli_jint(j, "f", &v));
    assert_false(cli_jint(j, "ns", &v));
    assert_false(cli_jint(j, "z", &v));
    assert_non_null(cli_jarr(j, "a"));
    assert_null(cli_jarr(j, "o"));
    assert_non_null(cli_jobj(j, "o"));
    assert_null(cli_jobj(j, "a"));
    /* Not an object at all, or nothing. */
    json_t *arr = json_array();
    assert_null(cli_jstr(arr, "s"));
    assert_false(cli_jint(NULL, "n", &v));
    assert_null(cli_jobj(NULL, "o"));
    json_decref(arr);
    json_decref(j);
}

static void test_fmt_ago(void **state)
{
    (void)state;
    char b[32];
    uint64_t now = 1764230400000ull;
    cli_fmt_ago(now, 0, b, sizeof b);
    assert_string_equal(b, "-");
    cli_fmt_ago(now, -5, b, sizeof b);
    assert_string_equal(b, "-");
    cli_fmt_ago(now, (int64_t)now - 400, b, sizeof b);
    assert_string_equal(b, "just now");
    cli_fmt_ago(now, (int64_t)now + 5000, b, sizeof b); /* clock skew */
    assert_string_equal(b, "just now");
    cli_fmt_ago(now, (int64_t)now - 3000, b, sizeof b);
    assert_string_equal(b, "3s ago");
    cli_fmt_ago(now, (int64_t)now - 125000, b, sizeof b);
    assert_string_equal(b, "2m ago");
    cli_fmt_ago(now, (int64_t)now - 3 * 3600000 - 1, b, sizeof b);
    assert_string_equal(b, "3h ago");
    cli_fmt_ago(now, (int64_t)now - 50 * 3600000, b, sizeof b);
    assert_string_equal(b, "2d ago");
}

static void test_fmt_bytes(void **state)
{
    (void)state;
    char b[32];
    cli_fmt_bytes(0, b, sizeof b);
    assert_string_equal(b, "0 B");
    cli_fmt_bytes(1023, b, sizeof b);
    assert_string_equal(b, "1023 B");
    cli_fmt_bytes(1536, b, sizeof b);
    assert_string_equal(b, "1.5 KiB");
    cli_fmt_bytes(16ull << 30, b, sizeof b);
    assert_string_equal(b, "16.0 GiB");
    cli_fmt_bytes(UINT64_MAX, b, sizeof b);
    assert_string_equal(b, "16.0 EiB");
}

static void test_fmt_span(void **state)
{
    (void)state;
    char b[32];
    cli_fmt_span(0, 0, 1000, b, sizeof b);
    assert_string_equal(b, "-");
    cli_fmt_span(1000, 2204, 99999, b, sizeof b);
    assert_string_equal(b, "1.204s");
    cli_fmt_span(1000, 0, 4000, b, sizeof b); /* still running: until now */
    assert_string_equal(b, "3.000s");
    cli_fmt_span(5000, 1000, 9000, b, sizeof b); /* ended before it started */
    assert_string_equal(b, "0.000s");
    cli_fmt_span(1000, 1000 + 123000, 0, b, sizeof b);
    assert_string_equal(b, "2m03s");
}

static void test_fmt_exit(void **state)
{
    (void)state;
    char b[32];
    json_error_t err;
    json_t *t = json_loads("{\"exit_code\": 0, \"signal\": null}", 0, &err);
    cli_fmt_exit(t, b, sizeof b);
    assert_string_equal(b, "0");
    json_decref(t);
    t = json_loads("{\"exit_code\": null, \"signal\": 9}", 0, &err);
    cli_fmt_exit(t, b, sizeof b);
    assert_string_equal(b, "SIGKILL");
    json_decref(t);
    t = json_loads("{\"exit_code\": \"1\", \"signal\": 300}", 0, &err);
    cli_fmt_exit(t, b, sizeof b);
    assert_string_equal(b, "-");
    json_decref(t);
    cli_fmt_exit(NULL, b, sizeof b);
    assert_string_equal(b, "-");
}

static void test_url_helpers(void **state)
{
    (void)state;
    char *s = cli_url_escape("a b/c?d&e%f.g_h-i~j\xc3\xa9");
    assert_string_equal(s, "a%20b%2Fc%3Fd%26e%25f.g_h-i~j%C3%A9");
    free(s);
    s = cli_url_normalize("127.0.0.1:1234");
    assert_string_equal(s, "http://127.0.0.1:1234");
    free(s);
    s = cli_url_normalize("https://loom.example.com/");
    assert_string_equal(s, "https://loom.example.com");
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_aligns_columns),
        cmocka_unit_test(test_table_no_trailing_spaces),
        cmocka_unit_test(test_table_counts_utf8_as_one_column),
        cmocka_unit_test(test_table_cells_cannot_break_lines_or_the_terminal),
        cmocka_unit_test(test_json_reads_treat_wrong_types_as_absent),
        cmocka_unit_test(test_fmt_ago),
        cmocka_unit_test(test_fmt_bytes),
        cmocka_unit_test(test_fmt_span),
        cmocka_unit_test(test_fmt_exit),
        cmocka_unit_test(test_url_helpers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
