/* Code bundles: the canonical manifest and its hash (which must never
 * change for the same files), the path rules that keep a bundle inside its
 * folder, the ignore rules and the folder walk. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "loom/bundle.h"
#include "loom/err.h"
#include "loom/util.h"

#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define A64 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define Z64 "0000000000000000000000000000000000000000000000000000000000000000"

static const char canonical[] =
    "{\"version\":1,\"files\":[{\"path\":\"run.sh\",\"mode\":493,\"size\":3,\"hash\":\"" A64
    "\"},{\"path\":\"src/train.py\",\"mode\":420,\"size\":0,\"hash\":\"" Z64 "\"}]}";

static void test_hashes_are_blake2b_256(void **state)
{
    (void)state;
    char hex[65];
    loom_hash_bytes("", 0, hex);
    assert_string_equal(hex, "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8");
    loom_hash_bytes("abc", 3, hex);
    assert_string_equal(hex, "bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319");
    assert_true(loom_hash_hex_valid(hex));
    assert_false(
        loom_hash_hex_valid("BDDD813C634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319"));
    assert_false(loom_hash_hex_valid(A64 "a"));
    assert_false(loom_hash_hex_valid("abc"));
    assert_false(loom_hash_hex_valid(NULL));

    /* Streaming over a file gives the same hash as hashing it whole. */
    char path[] = "/tmp/loom-test-hash-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t len = 300001;
    char *data = loom_xmalloc(len);
    for (size_t i = 0; i < len; i++) data[i] = (char)(i * 7);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
    char whole[65], streamed[65];
    uint64_t size = 0;
    loom_hash_bytes(data, len, whole);
    assert_int_equal(loom_hash_fd(fd, streamed, &size), 0);
    assert_string_equal(streamed, whole);
    assert_int_equal(size, len);
    close(fd);
    unlink(path);
    free(data);
}

static void test_manifest_canonical_form_and_hash(void **state)
{
    (void)state;
    loom_manifest_t m = {0};
    /* Added out of order, with a mode that only keeps its exec bit. */
    loom_manifest_add(&m, "src/train.py", 0600, 0, Z64);
    loom_manifest_add(&m, "run.sh", 0700, 3, A64);
    loom_manifest_sort(&m);
    char *text = NULL, why[256];
    size_t len = 0;
    assert_int_equal(loom_manifest_encode(&m, &text, &len, why, sizeof why), 0);
    assert_string_equal(text, canonical);
    assert_int_equal(len, strlen(canonical));
    char hex[65];
    loom_hash_bytes(text, len, hex);
    /* Fixed for ever: a new loom must name the same files the same way. */
    assert_string_equal(hex, "acbc899092250eedcbdee6c5ba17dec3def38477081ece5be9ead2241a05d487");

    loom_manifest_t back;
    assert_int_equal(loom_manifest_parse(text, len, &back, why, sizeof why), 0);
    assert_int_equal(back.n, 2);
    assert_string_equal(back.files[0].path, "run.sh");
    assert_int_equal(back.files[0].mode, 0755);
    assert_int_equal(back.files[0].size, 3);
    assert_string_equal(back.files[1].hash, Z64);
    assert_int_equal(back.files[1].mode, 0644);
    assert_non_null(loom_manifest_find(&back, "src/train.py"));
    assert_null(loom_manifest_find(&back, "src"));
    loom_manifest_free(&back);
    loom_manifest_free(&m);
    free(text);

    /* Escapes are minimal and fixed. */
    loom_manifest_add(&m, "we\"ird\\name.txt", 0644, 1, A64);
    assert_int_equal(loom_manifest_encode(&m, &text, &len, why, sizeof why), 0);
    assert_non_null(strstr(text, "\"path\":\"we\\\"ird\\\\name.txt\""));
    assert_int_equal(loom_manifest_parse(text, len, &back, why, sizeof why), 0);
    assert_string_equal(back.files[0].path, "we\"ird\\name.txt");
    loom_manifest_free(&back);
    loom_manifest_free(&m);
    free(text);
}

static void expect_parse_error(const char *text, const char *needle)
{
    loom_manifest_t m;
    char why[256] = "";
    int rc = loom_manifest_parse(text, strlen(text), &m, why, sizeof why);
    if (rc == 0) fail_msg("accepted: %s", text);
    if (!strstr(why, needle)) fail_msg("\"%s\" does not say \"%s\"", why, needle);
    assert_int_equal(m.n, 0);
}

#define FILE_(path, mode)                                                                          \
    "{\"path\":\"" path "\",\"mode\":" #mode ",\"size\":1,\"hash\":\"" A64 "\"}"
#define MANIFEST(files) "{\"version\":1,\"files\":[" files "]}"

static void test_manifest_refusals(void **state)
{
    (void)state;
    expect_parse_error(MANIFEST(FILE_("../evil", 420)), "not allowed");
    expect_parse_error(MANIFEST(FILE_("a/../../evil", 420)), "not allowed");
    expect_parse_error(MANIFEST(FILE_("/etc/passwd", 420)), "absolute");
    expect_parse_error(MANIFEST(FILE_("a\\u0000b", 420)), "");
    expect_parse_error(MANIFEST(FILE_("a//b", 420)), "empty path segment");
    expect_parse_error(MANIFEST(FILE_("./a", 420)), "not allowed");
    expect_parse_error(MANIFEST(FILE_("a", 511)), "mode");
    expect_parse_error(MANIFEST(FILE_("b", 420) "," FILE_("a", 420)), "out of order");
    expect_parse_error(MANIFEST(FILE_("a", 420) "," FILE_("a", 420)), "twice");
    expect_parse_error(MANIFEST(FILE_("a", 420) "," FILE_("a/b", 420)), "also the folder");
    expect_parse_error("{\"version\":2,\"files\":[]}", "version 2");
    expect_parse_error("{\"version\":1,\"files\":[],\"x\":1}", "a manifest is");
    expect_parse_error("{\"version\": 1,\"files\":[]}", "canonical");
    expect_parse_error("{\"files\":[],\"version\":1}", "canonical");
    expect_parse_error(MANIFEST("{\"path\":\"a\",\"mode\":420,\"size\":1,\"hash\":\"AB\"}"),
                       "hash");
    expect_parse_error("[", "not JSON");
    /* The empty bundle is fine. */
    loom_manifest_t m;
    char why[64];
    assert_int_equal(loom_manifest_parse(MANIFEST(""), strlen(MANIFEST("")), &m, why, sizeof why),
                     0);
    assert_int_equal(m.n, 0);
    loom_manifest_free(&m);
}

static void expect_path_error(const char *path, const char *needle)
{
    char why[256] = "";
    assert_int_equal(loom_bundle_path_check(path, why, sizeof why), LOOM_EINVAL);
    if (!strstr(why, needle)) fail_msg("\"%s\" does not say \"%s\"", why, needle);
}

static void test_path_rules(void **state)
{
    (void)state;
    char why[256];
    assert_int_equal(loom_bundle_path_check("src/train.py", why, sizeof why), 0);
    assert_int_equal(loom_bundle_path_check("with space/\xc3\xbc.py", why, sizeof why), 0);
    assert_int_equal(loom_bundle_path_check("back\\slash", why, sizeof why), 0);
    assert_int_equal(loom_bundle_path_check(".hidden/..x/x..", why, sizeof why), 0);
    expect_path_error("", "empty");
    expect_path_error("/abs", "absolute");
    expect_path_error("..", "not allowed");
    expect_path_error("a/..", "not allowed");
    expect_path_error("a/./b", "not allowed");
    expect_path_error("a/", "empty");
    expect_path_error("a\nb", "control character");
    expect_path_error("bad\xff", "UTF-8");
    expect_path_error("\xc0\xaf", "UTF-8"); /* overlong '/' */
    loom_buf_t deep = {0};
    for (int i = 0; i <= LOOM_BUNDLE_DEPTH_MAX; i++) loom_buf_puts(&deep, i ? "/d" : "d");
    expect_path_error(deep.data, "deeper");
    loom_buf_free(&deep);
}

static bool ignored(const char *rules, const char *path, bool dir)
{
    loom_ignore_t *ig = loom_ignore_new();
    loom_ignore_add_text(ig, rules, strlen(rules));
    bool r = loom_ignore_match(ig, path, dir);
    loom_ignore_destroy(&ig);
    return r;
}

static void test_ignore_rules(void **state)
{
    (void)state;
    assert_true(ignored("*.pyc\n", "a/b/c.pyc", false));
    assert_false(ignored("*.pyc\n", "a/b/c.py", false));
    assert_false(ignored("# *.py\n\n   \n", "x.py", false));
    assert_true(ignored("\\#notes\n", "#notes", false));
    assert_true(ignored("data\n", "data", true));
    assert_true(ignored("data\n", "sub/data", false));
    /* dir-only */
    assert_true(ignored("build/\n", "x/build", true));
    assert_false(ignored("build/\n", "x/build", false));
    /* anchoring */
    assert_true(ignored("/out\n", "out", true));
    assert_false(ignored("/out\n", "src/out", true));
    assert_true(ignored("docs/*.md\n", "docs/a.md", false));
    assert_false(ignored("docs/*.md\n", "x/docs/a.md", false));
    assert_false(ignored("docs/*.md\n", "docs/sub/a.md", false));
    /* globstars */
    assert_true(ignored("**/cache\n", "cache", true));
    assert_true(ignored("**/cache\n", "a/b/cache", true));
    assert_true(ignored("a/**/z\n", "a/z", false));
    assert_true(ignored("a/**/z\n", "a/b/c/z", false));
    assert_false(ignored("a/**/z\n", "b/a/z", false));
    assert_true(ignored("logs/**\n", "logs/x/y.txt", false));
    assert_false(ignored("logs/**\n", "logs", true));
    /* negation: the last match wins */
    assert_false(ignored("*.log\n!keep.log\n", "a/keep.log", false));
    assert_true(ignored("*.log\n!keep.log\n", "a/other.log", false));
    assert_true(ignored("!keep.log\n*.log\n", "keep.log", false));
    /* classes, ?, escapes, CRLF and trailing spaces */
    assert_true(ignored("file[0-9].txt\n", "file7.txt", false));
    assert_false(ignored("file[!0-9].txt\n", "file7.txt", false));
    assert_true(ignored("?.c\r\n", "x.c", false));
    assert_false(ignored("?.c\n", "xy.c", false));
    assert_true(ignored("ckpt  \n", "ckpt", false));
    assert_true(ignored("a*\n", "b/ab", true));
    assert_false(ignored("a*\n", "ab/c", false)); /* "*" stays within a name */
}

/* --- the walk --- */

static char tmp[64];

static void put(const char *rel, const char *content, mode_t mode)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", tmp, rel);
    char *slash = strrchr(path, '/');
    *slash = '\0';
    assert_int_equal(loom_mkdirs(path, 0755), 0);
    *slash = '/';
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, content, strlen(content)), (ssize_t)strlen(content));
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

typedef struct {
    char skipped[8][128];
    int n;
} skips_t;

static void on_skip(void *ud, const char *path, const char *why)
{
    skips_t *s = ud;
    (void)why;
    if (s->n < 8) snprintf(s->skipped[s->n++], sizeof s->skipped[0], "%s", path);
}

static void test_walk_honours_ignores_and_skips_links(void **state)
{
    (void)state;
    snprintf(tmp, sizeof tmp, "/tmp/loom-test-walk-XXXXXX");
    assert_non_null(mkdtemp(tmp));
    put("dag.yaml", "pipeline: p\n", 0644);
    put("run.sh", "echo hi\n", 0755);
    put("src/train.py", "print(1)\n", 0600);
    put("data/big.bin", "0123456789", 0644);
    put("logs/a.log", "x", 0644);
    put("logs/keep.log", "y", 0644);
    put(".git/config", "[core]\n", 0644);
    put(".loomignore", "# not code\ndata/\n*.log\n!keep.log\n", 0644);
    put(".gitignore", "src/\n", 0644); /* .loomignore wins */
    char link[PATH_MAX];
    snprintf(link, sizeof link, "%s/escape", tmp);
    assert_int_equal(symlink("/etc/passwd", link), 0);

    loom_ignore_t *ig = NULL;
    const char *source = NULL;
    assert_int_equal(loom_ignore_load(tmp, &ig, &source), 0);
    assert_string_equal(source, ".loomignore");
    skips_t skips = {0};
    loom_walk_opts_t opts = {.on_skip = on_skip, .ud = &skips};
    loom_manifest_t m = {0};
    char why[256];
    assert_int_equal(loom_bundle_walk(tmp, ig, &opts, &m, why, sizeof why), 0);
    const char *want[] = {".gitignore",    ".loomignore", "dag.yaml",
                          "logs/keep.log", "run.sh",      "src/train.py"};
    assert_int_equal(m.n, sizeof want / sizeof want[0]);
    for (size_t i = 0; i < m.n; i++) assert_string_equal(m.files[i].path, want[i]);
    assert_int_equal(loom_manifest_find(&m, "run.sh")->mode, 0755);
    assert_int_equal(loom_manifest_find(&m, "src/train.py")->mode, 0644);
    assert_int_equal(loom_manifest_find(&m, "dag.yaml")->size, 12);
    assert_int_equal(skips.n, 1);
    assert_string_equal(skips.skipped[0], "escape");
    loom_manifest_free(&m);

    /* Limits stop the walk with a reason. */
    opts.max_files = 3;
    assert_int_equal(loom_bundle_walk(tmp, ig, &opts, &m, why, sizeof why), LOOM_ETOOBIG);
    assert_non_null(strstr(why, "more than 3 files"));
    loom_manifest_free(&m);
    opts.max_files = 0;
    opts.max_bytes = 20;
    assert_int_equal(loom_bundle_walk(tmp, ig, &opts, &m, why, sizeof why), LOOM_ETOOBIG);
    loom_manifest_free(&m);
    loom_ignore_destroy(&ig);

    /* Without .loomignore, .gitignore applies. */
    snprintf(link, sizeof link, "%s/.loomignore", tmp);
    unlink(link);
    assert_int_equal(loom_ignore_load(tmp, &ig, &source), 0);
    assert_string_equal(source, ".gitignore");
    assert_int_equal(loom_bundle_walk(tmp, ig, NULL, &m, why, sizeof why), 0);
    assert_null(loom_manifest_find(&m, "src/train.py"));
    assert_non_null(loom_manifest_find(&m, "data/big.bin"));
    assert_null(loom_manifest_find(&m, ".git/config"));
    loom_manifest_free(&m);
    loom_ignore_destroy(&ig);

    /* A name that cannot be bundled is an error naming it. */
    put("bad\nname", "z", 0644);
    assert_int_equal(loom_bundle_walk(tmp, NULL, NULL, &m, why, sizeof why), LOOM_EINVAL);
    assert_non_null(strstr(why, "control character"));
    loom_manifest_free(&m);
    nftw(tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Manifest paths an agent would write: absolute, "..", a NUL byte (a JSON
 * "\u0000" escape), a control byte, and a file through another file ("a"
 * then "a/b": the first would have to be a folder) are all refused. */
static void test_manifest_hostile_paths(void **state)
{
    (void)state;
    static const char *const paths[] = {"/etc/passwd",      "../x",      "a/../../x",
                                        "a\\u0000/../../x", "a\\u0001b", "./x"};
    for (size_t i = 0; i < sizeof paths / sizeof *paths; i++) {
        char *text = loom_xasprintf("{\"version\":1,\"files\":[{\"path\":\"%s\",\"mode\":420,"
                                    "\"size\":1,\"hash\":\"" A64 "\"}]}",
                                    paths[i]);
        loom_manifest_t m = {0};
        char why[256];
        int rc = loom_manifest_parse(text, strlen(text), &m, why, sizeof why);
        if (rc == 0) fail_msg("manifest path %s was accepted", paths[i]);
        assert_int_equal(m.n, 0);
        free(text);
    }
    char *text = loom_xstrdup("{\"version\":1,\"files\":[{\"path\":\"a\",\"mode\":420,\"size\":1,"
                              "\"hash\":\"" A64 "\"},{\"path\":\"a/b\",\"mode\":420,\"size\":1,"
                              "\"hash\":\"" A64 "\"}]}");
    loom_manifest_t m = {0};
    char why[256];
    assert_int_not_equal(loom_manifest_parse(text, strlen(text), &m, why, sizeof why), 0);
    assert_non_null(strstr(why, "a/b"));
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hashes_are_blake2b_256),
        cmocka_unit_test(test_manifest_canonical_form_and_hash),
        cmocka_unit_test(test_manifest_refusals),
        cmocka_unit_test(test_manifest_hostile_paths),
        cmocka_unit_test(test_path_rules),
        cmocka_unit_test(test_ignore_rules),
        cmocka_unit_test(test_walk_honours_ignores_and_skips_links),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
