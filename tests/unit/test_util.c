/* The shared helpers: number, duration and size parsing as users write them
 * in DAG files and flags, names, the byte buffer, and whole-file I/O. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "loom/err.h"
#include "loom/util.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void test_parse_duration(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        uint64_t ms;
    } ok[] = {
        {"250ms", 250},  {"30s", 30000},    {"5m", 300000},
        {"2h", 7200000}, {"1d", 86400000},  {"90", 90000}, /* a bare number is seconds */
        {"1.5s", 1500},  {"0.25h", 900000}, {"0", 0},
        {"0ms", 0},      {".5s", 500},      {"100000d", 8640000000000},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        uint64_t ms = 12345;
        assert_int_equal(loom_parse_duration_ms(ok[i].text, &ms), 0);
        assert_int_equal(ms, ok[i].ms);
    }
    static const char *const bad[] = {"",   "s",   "-1s", "10x", " 5s", "5 s",   "5s ",
                                      "1w", "ms5", ".",   "inf", "nan", "1e400", "1e12d"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t ms = 777;
        assert_int_equal(loom_parse_duration_ms(bad[i], &ms), LOOM_EINVAL);
        assert_int_equal(ms, 777); /* untouched on error */
    }
    uint64_t ms;
    assert_int_equal(loom_parse_duration_ms(NULL, &ms), LOOM_EINVAL);
}

static void test_parse_size(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        uint64_t bytes;
    } ok[] = {
        {"512", 512},
        {"0", 0},
        {"64k", 65536},
        {"64K", 65536},
        {"100M", 104857600},
        {"2G", 2147483648u},
        {"1T", 1099511627776u},
        {"2GB", 2147483648u},
        {"2GiB", 2147483648u},
        {"1.5k", 1536},
        {"10B", 10},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        uint64_t v = 1;
        assert_int_equal(loom_parse_size(ok[i].text, &v), 0);
        assert_int_equal(v, ok[i].bytes);
    }
    static const char *const bad[] = {"", "k", "-1", "1X", "1KB2", "1 K", "1e30", "lots"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t v = 99;
        assert_int_equal(loom_parse_size(bad[i], &v), LOOM_EINVAL);
        assert_int_equal(v, 99);
    }
}

static void test_parse_i64(void **state)
{
    (void)state;
    int64_t v = 0;
    assert_int_equal(loom_parse_i64("42", 0, 100, &v), 0);
    assert_int_equal(v, 42);
    assert_int_equal(loom_parse_i64("-5", -10, 10, &v), 0);
    assert_int_equal(v, -5);
    assert_int_equal(loom_parse_i64("0", 0, 100, &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(loom_parse_i64("100", 0, 100, &v), 0); /* bounds are inclusive */
    assert_int_equal(v, 100);
    assert_int_equal(loom_parse_i64("9223372036854775807", INT64_MIN, INT64_MAX, &v), 0);
    assert_true(v == INT64_MAX);
    assert_int_equal(loom_parse_i64("-9223372036854775808", INT64_MIN, INT64_MAX, &v), 0);
    assert_true(v == INT64_MIN);

    v = 7;
    static const char *const bad[] = {"101", "-1",   "",    " 1",    "1 ",
                                      "1.0", "0x10", "abc", "12abc", "9223372036854775808"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(loom_parse_i64(bad[i], 0, 100, &v), LOOM_EINVAL);
    assert_int_equal(loom_parse_i64("9223372036854775808", INT64_MIN, INT64_MAX, &v), LOOM_EINVAL);
    assert_int_equal(loom_parse_i64(NULL, 0, 1, &v), LOOM_EINVAL);
    assert_int_equal(v, 7);
}

static void test_name_valid(void **state)
{
    (void)state;
    char longest[64], too_long[65];
    memset(longest, 'a', 63);
    longest[63] = '\0';
    memset(too_long, 'a', 64);
    too_long[64] = '\0';
    static const char *const good[] = {"a", "train", "train-v2.1_x", "A9", "9lives", "_x"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) assert_true(loom_name_valid(good[i]));
    assert_true(loom_name_valid(longest));
    static const char *const bad[] = {"",     ".hidden", "-flag",       "a b", "a/b",
                                      "../x", "a:b",     "caf\xc3\xa9", "x\n"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) assert_false(loom_name_valid(bad[i]));
    assert_false(loom_name_valid(too_long));
    assert_false(loom_name_valid(NULL));
}

static void test_buf(void **state)
{
    (void)state;
    loom_buf_t b = {0};
    loom_buf_puts(&b, "hello");
    loom_buf_append(&b, ", \0x", 3); /* bytes, NUL included */
    assert_int_equal(b.len, 8);
    assert_memory_equal(b.data, "hello, \0", 9);
    loom_buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_string_equal(b.data, "");
    for (int i = 0; i < 1000; i++) loom_buf_printf(&b, "%d,", i); /* grows past 64 */
    assert_int_equal(b.len, strlen(b.data));
    assert_int_equal(strncmp(b.data, "0,1,2,", 6), 0);
    assert_string_equal(b.data + b.len - 4, "999,");
    assert_true(b.cap > b.len);
    char *s = loom_buf_steal(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(strncmp(s, "0,1,", 4), 0);
    free(s);
    /* Stealing an empty buffer still gives a string to free. */
    s = loom_buf_steal(&b);
    assert_string_equal(s, "");
    free(s);
    loom_buf_free(&b);
    loom_buf_free(&b);

    char *p = loom_xasprintf("%s-%03d", "run", 7);
    assert_string_equal(p, "run-007");
    free(p);
    p = loom_xstrndup("abcdef", 3);
    assert_string_equal(p, "abc");
    free(p);
}

static void test_format_duration(void **state)
{
    (void)state;
    char out[32];
    loom_format_duration(0, out, sizeof out);
    assert_string_equal(out, "0.000s");
    loom_format_duration(1234, out, sizeof out);
    assert_string_equal(out, "1.234s");
    loom_format_duration(123000, out, sizeof out);
    assert_string_equal(out, "2m03s");
    loom_format_duration(3660000, out, sizeof out);
    assert_string_equal(out, "1h01m");
}

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) n++;
    closedir(d);
    return n;
}

static void test_file_roundtrip(void **state)
{
    (void)state;
    char dir[] = "/tmp/loom-test-util-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char *path = loom_xasprintf("%s/state.bin", dir);

    static const char data[] = "line one\n\0binary\xff";
    assert_int_equal(loom_write_file_atomic(path, data, sizeof data), 0);
    char *got = NULL;
    size_t len = 0;
    assert_int_equal(loom_read_file(path, 1024, &got, &len), 0);
    assert_int_equal(len, sizeof data);
    assert_memory_equal(got, data, sizeof data);
    assert_int_equal(got[len], '\0');
    free(got);

    /* Replacing leaves only the new content and no temporary file. */
    assert_int_equal(loom_write_file_atomic(path, "new", 3), 0);
    assert_int_equal(loom_read_file(path, 3, &got, &len), 0); /* exactly max is fine */
    assert_string_equal(got, "new");
    free(got);
    assert_int_equal(count_entries(dir), 1);

    got = NULL;
    assert_int_equal(loom_read_file(path, 2, &got, &len), LOOM_ETOOBIG);
    assert_null(got);
    assert_int_equal(loom_write_file_atomic(path, "", 0), 0);
    assert_int_equal(loom_read_file(path, 10, &got, &len), 0);
    assert_int_equal(len, 0);
    assert_string_equal(got, "");
    free(got);

    char *missing = loom_xasprintf("%s/missing", dir);
    assert_int_equal(loom_read_file(missing, 10, &got, &len), LOOM_ENOTFOUND);
    char *nodir = loom_xasprintf("%s/no/such/dir/file", dir);
    assert_int_equal(loom_write_file_atomic(nodir, "x", 1), LOOM_EIO);
    assert_int_equal(count_entries(dir), 1);

    char *deep = loom_xasprintf("%s/a/b/c", dir);
    assert_int_equal(loom_mkdirs(deep, 0700), 0);
    assert_int_equal(loom_mkdirs(deep, 0700), 0); /* already there is fine */
    struct stat st;
    assert_int_equal(stat(deep, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0700);

    char *b = loom_xasprintf("%s/a/b", dir), *a = loom_xasprintf("%s/a", dir);
    assert_int_equal(rmdir(deep), 0);
    assert_int_equal(rmdir(b), 0);
    assert_int_equal(rmdir(a), 0);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(rmdir(dir), 0);
    free(a);
    free(b);
    free(deep);
    free(nodir);
    free(missing);
    free(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_duration),
        cmocka_unit_test(test_parse_size),
        cmocka_unit_test(test_parse_i64),
        cmocka_unit_test(test_name_valid),
        cmocka_unit_test(test_buf),
        cmocka_unit_test(test_format_duration),
        cmocka_unit_test(test_file_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
