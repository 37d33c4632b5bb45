/* The codec: what it accepts, what it refuses and why. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "loom/codec.h"
#include "loom/err.h"

static int roundtrip(loom_msg_t *m, char *why, size_t whylen, loom_msg_t **out)
{
    uint8_t *buf;
    size_t len;
    assert_int_equal(loom_codec_encode(m, &buf, &len), 0);
    int rc = loom_codec_decode(buf, len, out, why, whylen);
    free(buf);
    return rc;
}

static void test_dispatch_roundtrip(void **state)
{
    (void)state;
    char *argv[] = {"python3", "train.py", "--lr", "0.1"};
    Loom__EnvVar ev = LOOM__ENV_VAR__INIT;
    ev.name = "EPOCHS";
    ev.value = "3";
    Loom__EnvVar *env[] = {&ev};
    Loom__Dispatch d = LOOM__DISPATCH__INIT;
    d.attempt_id = 42;
    d.run_id = 7;
    d.task = "train";
    d.argv = argv;
    d.n_argv = 4;
    d.env = env;
    d.n_env = 1;
    d.timeout_ms = 60000;
    loom_msg_t m = LOOM__ENVELOPE__INIT;
    m.body_case = LOOM__ENVELOPE__BODY_DISPATCH;
    m.dispatch = &d;
    loom_msg_t *out = NULL;
    char why[128];
    assert_int_equal(roundtrip(&m, why, sizeof why, &out), 0);
    assert_int_equal(out->version, LOOM_PROTO_VERSION);
    assert_int_equal(out->dispatch->attempt_id, 42);
    assert_int_equal(out->dispatch->n_argv, 4);
    assert_string_equal(out->dispatch->argv[3], "0.1");
    assert_string_equal(out->dispatch->env[0]->name, "EPOCHS");
    assert_string_equal(loom_codec_kind_name(out->body_case), "dispatch");
    loom_codec_free(out);
}

static void expect_refused(loom_msg_t *m, const char *reason)
{
    loom_msg_t *out = (loom_msg_t *)1;
    char why[160] = "";
    assert_int_equal(roundtrip(m, why, sizeof why, &out), LOOM_EPROTO);
    assert_null(out);
    assert_non_null(strstr(why, reason));
}

static void test_field_rules(void **state)
{
    (void)state;
    loom_msg_t m = LOOM__ENVELOPE__INIT;

    Loom__Hello h = LOOM__HELLO__INIT;
    uint8_t session[16] = {1};
    h.name = "bad name";
    h.session.data = session;
    h.session.len = sizeof session;
    m.body_case = LOOM__ENVELOPE__BODY_HELLO;
    m.hello = &h;
    expect_refused(&m, "agent name");
    h.name = "ok";
    h.session.len = 0;
    expect_refused(&m, "session");

    Loom__LogChunk c = LOOM__LOG_CHUNK__INIT;
    c.attempt_id = 1;
    m.body_case = LOOM__ENVELOPE__BODY_LOG;
    m.log = &c;
    expect_refused(&m, "seq is 0");
    c.seq = 1;
    c.data.len = LOOM_LOG_CHUNK_MAX + 1;
    c.data.data = calloc(1, c.data.len);
    expect_refused(&m, "chunk over");
    free(c.data.data);

    Loom__Dispatch d = LOOM__DISPATCH__INIT;
    d.attempt_id = 3;
    m.body_case = LOOM__ENVELOPE__BODY_DISPATCH;
    m.dispatch = &d;
    expect_refused(&m, "neither argv nor shell");

    Loom__Finished f = LOOM__FINISHED__INIT;
    m.body_case = LOOM__ENVELOPE__BODY_FINISHED;
    m.finished = &f;
    expect_refused(&m, "attempt_id is 0");
    f.attempt_id = 1;
    f.signal = 500;
    expect_refused(&m, "signal 500");

    /* An executor's job id is shown and stored: short and printable. */
    Loom__Started st = LOOM__STARTED__INIT;
    st.attempt_id = 1;
    st.job_id = "slurm:12 34";
    m.body_case = LOOM__ENVELOPE__BODY_STARTED;
    m.started = &st;
    expect_refused(&m, "job_id");
    st.job_id = "slurm:1234";
    char why[256];
    loom_msg_t *out = NULL;
    assert_int_equal(roundtrip(&m, why, sizeof why, &out), 0);
    assert_string_equal(out->started->job_id, "slurm:1234");
    loom_codec_free(out);
}

static void test_garbage_and_future(void **state)
{
    (void)state;
    loom_msg_t *out = NULL;
    char why[160];
    assert_int_equal(loom_codec_decode("\xff\xff\xff\xff", 4, &out, why, sizeof why), LOOM_EPROTO);
    assert_non_null(strstr(why, "not a valid envelope"));
    /* A future kind (field 99) with a future field in it decodes to no body. */
    static const uint8_t future[] = {0x08, 0x01, 0x9a, 0x06, 0x02, 0x08, 0x05};
    assert_int_equal(loom_codec_decode(future, sizeof future, &out, why, sizeof why), LOOM_EPROTO);
    assert_string_equal(why, "unknown message kind");
    static const uint8_t v2[] = {0x08, 0x02};
    assert_int_equal(loom_codec_decode(v2, sizeof v2, &out, why, sizeof why), LOOM_EPROTO);
    assert_non_null(strstr(why, "version 2"));
    assert_int_equal(loom_codec_decode("x", LOOM_MSG_MAX + 1, &out, why, sizeof why), LOOM_EPROTO);
    assert_non_null(strstr(why, "exceeds"));
}

static void test_unknown_fields_are_ignored(void **state)
{
    (void)state;
    /* A heartbeat (field 12) with sent_unix_ms 9 and a field 50 from a newer
     * peer: the newer field is skipped, the rest is read. */
    static const uint8_t hb[] = {0x08, 0x01, 0x62, 0x05, 0x08, 0x09, 0x90, 0x03, 0x07};
    loom_msg_t *out = NULL;
    char why[160];
    assert_int_equal(loom_codec_decode(hb, sizeof hb, &out, why, sizeof why), 0);
    assert_int_equal(out->body_case, LOOM__ENVELOPE__BODY_HEARTBEAT);
    assert_int_equal(out->heartbeat->sent_unix_ms, 9);
    loom_codec_free(out);
}

/* What protobuf-c accepts and loom must not: every message is checked
 * after unpacking, whatever its kind. */
static void test_validated_after_unpacking(void **state)
{
    (void)state;
    loom_msg_t m = LOOM__ENVELOPE__INIT;
    loom_msg_t *out = NULL;
    char why[160];

    /* Found by fuzz_codec: an unknown field numbered 0 (in a two-byte tag)
     * unpacked, then encoded as bytes that no longer decoded. */
    static const uint8_t field0[] = {0x08, 0x01, 0x7a, 0x0e, 0x08, 0x07, 0x10,
                                     0x01, 0x18, 0x01, 0x22, 0x06, 'h',  'e',
                                     'l',  'l',  0,    0,    0x80, 0x00, 0x0a};
    assert_int_equal(loom_codec_decode(field0, sizeof field0, &out, why, sizeof why), LOOM_EPROTO);
    assert_null(out);
    assert_non_null(strstr(why, "numbered 0"));

    /* An enum value the descriptor does not know. */
    Loom__LogChunk c = LOOM__LOG_CHUNK__INIT;
    c.attempt_id = 1;
    c.seq = 1;
    c.stream = (Loom__Stream)7;
    m.body_case = LOOM__ENVELOPE__BODY_LOG;
    m.log = &c;
    expect_refused(&m, "LogChunk.stream: unknown value 7");

    /* Dispatch: names, paths, modes, hashes and counts. */
    char *argv[] = {"true"};
    Loom__EnvVar ev = LOOM__ENV_VAR__INIT, *env[] = {&ev};
    Loom__Dispatch d = LOOM__DISPATCH__INIT;
    d.attempt_id = 3;
    d.task = "train[3]";
    d.argv = argv;
    d.n_argv = 1;
    m.body_case = LOOM__ENVELOPE__BODY_DISPATCH;
    m.dispatch = &d;
    assert_int_equal(roundtrip(&m, why, sizeof why, &out), 0); /* a foreach copy's name */
    loom_codec_free(out);
    d.task = "a/b";
    expect_refused(&m, "dispatch: task");
    d.task = "train";
    ev.name = "BAD=NAME";
    d.env = env;
    d.n_env = 1;
    expect_refused(&m, "not a variable name");
    ev.name = "GOOD_1";
    d.bundle = "not-a-hash";
    expect_refused(&m, "bundle must be 64 lowercase hex");
    d.bundle = "";
    Loom__File file = LOOM__FILE__INIT, *files[] = {&file};
    file.path = "/etc/cron.d/x";
    d.files = files;
    d.n_files = 1;
    expect_refused(&m, "file 0: bad path");
    file.path = "a/../../x";
    expect_refused(&m, "file 0: bad path");
    file.path = "params.json";
    file.mode = 0100644;
    expect_refused(&m, "file 0: mode");
    file.mode = 0600;
    file.env = "1X";
    expect_refused(&m, "file 0: env");
    file.env = "LOOM_PARAMS";
    d.metrics = "/etc/passwd";
    expect_refused(&m, "metrics: bad path");
    d.metrics = "out/../../m.json";
    expect_refused(&m, "metrics: bad path");
    d.metrics = "./out/metrics.json"; /* as the DAG allows it */
    char *outputs[] = {"out/", "../secrets"};
    d.outputs = outputs;
    d.n_outputs = 1;
    assert_int_equal(roundtrip(&m, why, sizeof why, &out), 0);
    loom_codec_free(out);
    d.n_outputs = 2;
    expect_refused(&m, "output 1: bad path");
    d.n_outputs = 1;
    uint32_t gpus[65] = {0};
    d.gpus = gpus;
    d.n_gpus = 65;
    expect_refused(&m, "65 GPUs");
    d.n_gpus = 0;
    d.cpus = -1;
    expect_refused(&m, "cpus out of range");
    d.cpus = 0;

    /* Hello: resources within bounds. */
    Loom__Hello h = LOOM__HELLO__INIT;
    uint8_t session[16] = {1};
    h.name = "gpu-01";
    h.session.data = session;
    h.session.len = sizeof session;
    Loom__Resources res = LOOM__RESOURCES__INIT;
    Loom__Resources__LabelsEntry lab = LOOM__RESOURCES__LABELS_ENTRY__INIT, *labs[] = {&lab};
    lab.key = "";
    lab.value = "a";
    res.labels = labs;
    res.n_labels = 1;
    h.resources = &res;
    m.body_case = LOOM__ENVELOPE__BODY_HELLO;
    m.hello = &h;
    expect_refused(&m, "label 0");
    lab.key = "zone";
    char *long_host = calloc(1, 300);
    memset(long_host, 'h', 299);
    h.hostname = long_host;
    expect_refused(&m, "hostname");
    h.hostname = "host";
    res.prefetch = 1025;
    expect_refused(&m, "prefetch 1025");
    res.prefetch = 1024;
    assert_int_equal(roundtrip(&m, why, sizeof why, &out), 0);
    loom_codec_free(out);

    /* Free text is bounded; a chunk lies within its object. */
    Loom__Error e = LOOM__ERROR__INIT;
    char *big = calloc(1, 5000);
    memset(big, 'x', 4999);
    e.message = big;
    m.body_case = LOOM__ENVELOPE__BODY_ERROR;
    m.error = &e;
    expect_refused(&m, "error: message over");
    Loom__ObjectChunk oc = LOOM__OBJECT_CHUNK__INIT;
    oc.hash = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    oc.offset = 10;
    oc.size = 12;
    oc.data.data = (uint8_t *)"abcd";
    oc.data.len = 4;
    m.body_case = LOOM__ENVELOPE__BODY_OBJECT;
    m.object = &oc;
    expect_refused(&m, "past the object's size");
    oc.hash = "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef";
    expect_refused(&m, "64 lowercase hex");
    Loom__FetchObject fo = LOOM__FETCH_OBJECT__INIT;
    fo.hash = "../../../../../../../../../../../../../../../../../etc/passwd...";
    m.body_case = LOOM__ENVELOPE__BODY_FETCH;
    m.fetch = &fo;
    expect_refused(&m, "fetch: hash");
    free(long_host);
    free(big);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dispatch_roundtrip),
        cmocka_unit_test(test_field_rules),
        cmocka_unit_test(test_garbage_and_future),
        cmocka_unit_test(test_unknown_fields_are_ignored),
        cmocka_unit_test(test_validated_after_unpacking),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
