#include "sched_fixture.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "loom/bundle.h"
#include "loom/codec.h"
#include "loom/err.h"
#include "loom/log.h"
#include "loom/util.h"
#include "objects.h"
#include "scheduler.h"

typedef struct {
    char dir[64];
    loom_objects_t *o;
} store_fx_t;

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int store_setup(void **state)
{
    store_fx_t *f = loom_xcalloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/loom-objects-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    char why[256];
    assert_int_equal(loom_objects_open(f->dir, &f->o, why, sizeof why), 0);
    loom_log_set_level(LOOM_LOG_ERROR);
    *state = f;
    return 0;
}

static int store_teardown(void **state)
{
    store_fx_t *f = *state;
    loom_objects_destroy(&f->o);
    assert_null(f->o);
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static size_t count_tmp(const char *dir)
{
    char path[128];
    snprintf(path, sizeof path, "%s/objects/tmp", dir);
    DIR *d = opendir(path);
    assert_non_null(d);
    size_t n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* Streams data in pieces and commits with the claimed hash. */
static int put(loom_objects_t *o, const void *data, size_t len, const char *claim, char *why,
               size_t whylen)
{
    loom_obj_writer_t *w = NULL;
    assert_int_equal(loom_objects_writer_new(o, &w), 0);
    for (size_t off = 0; off < len; off += 1000) {
        size_t n = len - off < 1000 ? len - off : 1000;
        assert_int_equal(loom_objects_writer_append(w, (const char *)data + off, n), 0);
    }
    int rc = loom_objects_writer_commit(&w, claim, why, whylen);
    assert_null(w);
    return rc;
}

static void put_ok(loom_objects_t *o, const void *data, size_t len, char hex[65])
{
    char why[256];
    loom_hash_bytes(data, len, hex);
    assert_int_equal(put(o, data, len, hex, why, sizeof why), 0);
}

static void test_upload_is_verified_and_idempotent(void **state)
{
    store_fx_t *f = *state;
    static const char body[] = "print('hello from the bundle')\n";
    char hex[65], why[256];
    loom_hash_bytes(body, sizeof body - 1, hex);
    assert_false(loom_objects_has(f->o, hex));
    assert_int_equal(put(f->o, body, sizeof body - 1, hex, why, sizeof why), 0);
    assert_true(loom_objects_has(f->o, hex));
    char *path = loom_objects_path(f->o, hex);
    char *want = loom_xasprintf("%s/objects/%.2s/%s", f->dir, hex, hex + 2);
    assert_string_equal(path, want);
    char *got = NULL;
    size_t len = 0;
    assert_int_equal(loom_read_file(path, 1024, &got, &len), 0);
    assert_int_equal(len, sizeof body - 1);
    assert_memory_equal(got, body, len);
    free(got);
    assert_int_equal(count_tmp(f->dir), 0);

    /* Stored again: accepted, and the object is unchanged. */
    struct stat before, after;
    assert_int_equal(stat(path, &before), 0);
    assert_int_equal(put(f->o, body, sizeof body - 1, hex, why, sizeof why), 0);
    assert_int_equal(stat(path, &after), 0);
    assert_int_equal(before.st_ino, after.st_ino);
    assert_int_equal(count_tmp(f->dir), 0);
    free(path);
    free(want);
}

static void test_wrong_hash_stores_nothing(void **state)
{
    store_fx_t *f = *state;
    static const char body[] = "tampered";
    char claim[65], real[65], why[256] = "";
    loom_hash_bytes("original", 8, claim);
    loom_hash_bytes(body, sizeof body - 1, real);
    assert_int_equal(put(f->o, body, sizeof body - 1, claim, why, sizeof why), LOOM_EPARSE);
    char *want = loom_xasprintf("content hash is %s, not %s", real, claim);
    assert_string_equal(why, want);
    free(want);
    assert_false(loom_objects_has(f->o, claim));
    assert_false(loom_objects_has(f->o, real));
    assert_int_equal(count_tmp(f->dir), 0);

    /* An abort leaves nothing either. */
    loom_obj_writer_t *w = NULL;
    assert_int_equal(loom_objects_writer_new(f->o, &w), 0);
    assert_int_equal(loom_objects_writer_append(w, "x", 1), 0);
    assert_int_equal(count_tmp(f->dir), 1);
    loom_objects_writer_abort(&w);
    assert_null(w);
    loom_objects_writer_abort(&w); /* NULL-safe */
    assert_int_equal(count_tmp(f->dir), 0);
    assert_false(loom_objects_hash_valid("../../etc/passwd"));
    assert_null(loom_objects_path(f->o, "../../etc/passwd"));
}

static void test_open_removes_unfinished_uploads(void **state)
{
    store_fx_t *f = *state;
    loom_obj_writer_t *w = NULL;
    assert_int_equal(loom_objects_writer_new(f->o, &w), 0);
    assert_int_equal(loom_objects_writer_append(w, "half", 4), 0);
    assert_int_equal(count_tmp(f->dir), 1);
    /* loomd died here: the next one starts clean. */
    loom_objects_t *again = NULL;
    char why[256];
    assert_int_equal(loom_objects_open(f->dir, &again, why, sizeof why), 0);
    assert_int_equal(count_tmp(f->dir), 0);
    loom_objects_destroy(&again);
    loom_objects_writer_abort(&w);
}

static void put_manifest(loom_objects_t *o, loom_manifest_t *m, char hex[65])
{
    char *text, why[256];
    size_t len;
    loom_manifest_sort(m);
    assert_int_equal(loom_manifest_encode(m, &text, &len, why, sizeof why), 0);
    put_ok(o, text, len, hex);
    free(text);
}

static void test_check_bundle(void **state)
{
    store_fx_t *f = *state;
    char a[65], b[65], man[65], why[512];
    put_ok(f->o, "aaa", 3, a);
    loom_hash_bytes("bbb", 3, b); /* not uploaded */
    loom_manifest_t m = {0};
    loom_manifest_add(&m, "a.py", 0644, 3, a);
    loom_manifest_add(&m, "lib/b.py", 0644, 3, b);
    char text_hex[65];
    {
        char *text;
        size_t len;
        loom_manifest_sort(&m);
        assert_int_equal(loom_manifest_encode(&m, &text, &len, why, sizeof why), 0);
        loom_hash_bytes(text, len, text_hex);
        free(text);
    }
    /* Manifest not uploaded yet. */
    assert_int_equal(loom_objects_check_bundle(f->o, text_hex, why, sizeof why), LOOM_ENOTFOUND);
    assert_non_null(strstr(why, "manifest"));
    put_manifest(f->o, &m, man);
    assert_string_equal(man, text_hex);
    /* A file missing: named, with its hash. */
    assert_int_equal(loom_objects_check_bundle(f->o, man, why, sizeof why), LOOM_ENOTFOUND);
    assert_non_null(strstr(why, "lib/b.py"));
    assert_non_null(strstr(why, b));
    put_ok(f->o, "bbb", 3, b);
    assert_int_equal(loom_objects_check_bundle(f->o, man, why, sizeof why), 0);
    loom_manifest_free(&m);

    /* Malformed and hostile manifests are refused as malformed. */
    char bad[65];
    put_ok(f->o, "not json", 8, bad);
    assert_int_equal(loom_objects_check_bundle(f->o, bad, why, sizeof why), LOOM_EPARSE);
    assert_non_null(strstr(why, "malformed"));
    char *evil = loom_xasprintf("{\"version\":1,\"files\":[{\"path\":\"../evil\",\"mode\":420,"
                                "\"size\":3,\"hash\":\"%s\"}]}",
                                a);
    put_ok(f->o, evil, strlen(evil), bad);
    assert_int_equal(loom_objects_check_bundle(f->o, bad, why, sizeof why), LOOM_EPARSE);
    assert_non_null(strstr(why, "../evil"));
    free(evil);

    /* A size that is not the object's. */
    loom_manifest_add(&m, "a.py", 0644, 4, a);
    put_manifest(f->o, &m, bad);
    assert_int_equal(loom_objects_check_bundle(f->o, bad, why, sizeof why), LOOM_EPARSE);
    assert_non_null(strstr(why, "\"a.py\" is 3 bytes, not 4"));
    loom_manifest_free(&m);
}

/* --- FetchObject against a real scheduler --- */

static int sched_setup(void **state)
{
    loom_log_set_level(LOOM_LOG_ERROR);
    fixture_t *f = fixture_open(NULL, 0);
    hello(f, dealer(f, "fetcher"), "fetcher", 1);
    *state = f;
    return 0;
}

static loom_msg_t *fetch(fixture_t *f, const char *hash, uint64_t offset, uint32_t max)
{
    Loom__FetchObject fo = LOOM__FETCH_OBJECT__INIT;
    fo.hash = (char *)hash;
    fo.offset = offset;
    fo.max = max;
    loom_msg_t m = LOOM__ENVELOPE__INIT;
    m.body_case = LOOM__ENVELOPE__BODY_FETCH;
    m.fetch = &fo;
    send_msg(f->socks[0], &m);
    return expect(f, f->socks[0], LOOM__ENVELOPE__BODY_OBJECT);
}

static void test_fetch_serves_chunks(void **state)
{
    fixture_t *f = *state;
    size_t size = 2 * LOOM_OBJECT_CHUNK_MAX + 12345;
    uint8_t *data = loom_xmalloc(size);
    for (size_t i = 0; i < size; i++) data[i] = (uint8_t)(i * 31 + (i >> 11));
    char hex[65];
    put_ok(loom_sched_objects(f->s), data, size, hex);

    /* Pieces asked in order reassemble to the object; max is capped. */
    uint8_t *got = loom_xmalloc(size);
    uint64_t off = 0;
    int chunks = 0;
    while (off < size) {
        loom_msg_t *c = fetch(f, hex, off, 0);
        const Loom__ObjectChunk *oc = c->object;
        assert_string_equal(oc->hash, hex);
        assert_string_equal(oc->error, "");
        assert_int_equal(oc->offset, off);
        assert_int_equal(oc->size, size);
        assert_true(oc->data.len > 0 && oc->data.len <= LOOM_OBJECT_CHUNK_MAX);
        memcpy(got + off, oc->data.data, oc->data.len);
        off += oc->data.len;
        chunks++;
        loom_codec_free(c);
    }
    assert_int_equal(chunks, 3);
    assert_memory_equal(got, data, size);

    loom_msg_t *c = fetch(f, hex, 10, 100);
    assert_int_equal(c->object->data.len, 100);
    assert_memory_equal(c->object->data.data, data + 10, 100);
    loom_codec_free(c);
    c = fetch(f, hex, 0, 64u << 20); /* asks too much: capped */
    assert_int_equal(c->object->data.len, LOOM_OBJECT_CHUNK_MAX);
    loom_codec_free(c);
    c = fetch(f, hex, size, 0); /* at the end: empty, not an error */
    assert_int_equal(c->object->data.len, 0);
    assert_string_equal(c->object->error, "");
    loom_codec_free(c);
    c = fetch(f, hex, size + 1, 0);
    assert_non_null(strstr(c->object->error, "past the end"));
    loom_codec_free(c);

    char unknown[65];
    loom_hash_bytes("never stored", 12, unknown);
    c = fetch(f, unknown, 0, 0);
    assert_string_equal(c->object->hash, unknown);
    assert_string_equal(c->object->error, "no such object");
    assert_int_equal(c->object->data.len, 0);
    loom_codec_free(c);
    /* 64 characters, not hex: the codec refuses the message, so it is never
     * looked up as a path; loomd answers with an Error. */
    Loom__FetchObject fo = LOOM__FETCH_OBJECT__INIT;
    fo.hash = "../../../../../../../../../../../../../../../../../etc/passwd...";
    loom_msg_t m = LOOM__ENVELOPE__INIT;
    m.body_case = LOOM__ENVELOPE__BODY_FETCH;
    m.fetch = &fo;
    send_msg(f->socks[0], &m);
    c = expect(f, f->socks[0], LOOM__ENVELOPE__BODY_ERROR);
    assert_non_null(strstr(c->error->message, "hex"));
    loom_codec_free(c);
    free(got);
    free(data);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_upload_is_verified_and_idempotent, store_setup,
                                        store_teardown),
        cmocka_unit_test_setup_teardown(test_wrong_hash_stores_nothing, store_setup,
                                        store_teardown),
        cmocka_unit_test_setup_teardown(test_open_removes_unfinished_uploads, store_setup,
                                        store_teardown),
        cmocka_unit_test_setup_teardown(test_check_bundle, store_setup, store_teardown),
        cmocka_unit_test_setup_teardown(test_fetch_serves_chunks, sched_setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
