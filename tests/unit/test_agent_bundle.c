/* The agent's code bundles against a fake loomd that serves objects: a real
 * ZeroMQ ROUTER on 127.0.0.1 driven from the agent's own libuv loop. It
 * answers FetchObject from an in-memory store, or holds the requests when a
 * test wants to look at the window or lose them. Every wait ends on a
 * message or fails at a deadline. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "agent.h"
#include "fetch.h"
#include "workdir.h"

#include "loom/bundle.h"
#include "loom/codec.h"
#include "loom/err.h"
#include "loom/log.h"
#include "loom/util.h"
#include "loom/zsock.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define AGENT_NAME "agent-bundle"
#define WAIT_MS 10000
#define HB_MS 30
#define MAX_OBJECTS 16
#define MAX_HELD 64

typedef struct {
    char hash[65];
    uint8_t *data;
    size_t len;
} object_t;

typedef struct {
    char hash[65];
    uint64_t offset;
    uint32_t max;
} request_t;

typedef struct {
    uv_loop_t loop;
    uv_timer_t deadline;
    void *zctx;
    loom_zsock_t *router;
    char endpoint[256];
    char tmp[64];
    loom_agent_config_t cfg;
    loom_agent_t *agent;
    loom_msg_t **msgs; /* everything the agent sent, in order */
    size_t n_msgs, cursor;
    object_t objects[MAX_OBJECTS];
    size_t n_objects;
    request_t held[MAX_HELD]; /* FetchObject not answered yet */
    size_t n_held;
    bool hold;          /* keep requests instead of answering them */
    char hold_hash[65]; /* ... or only those for this object */
    bool stopped, router_closed;
} fx_t;

/* --- the fake loomd --- */

static void on_router_message(void *ud, zmq_msg_t *parts, size_t nparts)
{
    fx_t *f = ud;
    char why[256];
    loom_msg_t *m;
    assert_int_equal(nparts, 2);
    if (loom_codec_decode(zmq_msg_data(&parts[1]), zmq_msg_size(&parts[1]), &m, why, sizeof why))
        fail_msg("agent sent an invalid message: %s", why);
    f->msgs = loom_xrealloc(f->msgs, (f->n_msgs + 1) * sizeof *f->msgs);
    f->msgs[f->n_msgs++] = m;
    if (m->body_case == LOOM__ENVELOPE__BODY_FETCH) {
        assert_true(f->n_held < MAX_HELD);
        request_t *r = &f->held[f->n_held++];
        snprintf(r->hash, sizeof r->hash, "%s", m->fetch->hash);
        r->offset = m->fetch->offset;
        r->max = m->fetch->max;
    }
    uv_stop(&f->loop);
}

static void send_msg(fx_t *f, loom_msg_t *m)
{
    uint8_t *data;
    size_t len;
    assert_int_equal(loom_codec_encode(m, &data, &len), 0);
    const void *parts[2] = {AGENT_NAME, data};
    size_t lens[2] = {strlen(AGENT_NAME), len};
    assert_int_equal(loom_zsock_send(f->router, parts, lens, 2), 0);
    free(data);
}

static const object_t *find_object(fx_t *f, const char *hash)
{
    for (size_t i = 0; i < f->n_objects; i++)
        if (strcmp(f->objects[i].hash, hash) == 0) return &f->objects[i];
    return NULL;
}

/* Answers a request as loomd's objects_on_fetch does. */
static void answer(fx_t *f, const request_t *r)
{
    const object_t *o = find_object(f, r->hash);
    Loom__ObjectChunk c = LOOM__OBJECT_CHUNK__INIT;
    c.hash = (char *)r->hash;
    c.offset = r->offset;
    if (!o) {
        c.error = "no such object";
    } else {
        size_t n = r->max && r->max < LOOM_OBJECT_CHUNK_MAX ? r->max : LOOM_OBJECT_CHUNK_MAX;
        if (o->len - r->offset < n) n = o->len - r->offset;
        c.size = o->len;
        c.data.data = o->data + r->offset;
        c.data.len = n;
    }
    loom_msg_t m = LOOM__ENVELOPE__INIT;
    m.body_case = LOOM__ENVELOPE__BODY_OBJECT;
    m.object = &c;
    send_msg(f, &m);
}

static void serve(fx_t *f)
{
    size_t k = 0;
    for (size_t i = 0; i < f->n_held; i++) {
        if (f->hold || strcmp(f->held[i].hash, f->hold_hash) == 0)
            f->held[k++] = f->held[i];
        else
            answer(f, &f->held[i]);
    }
    f->n_held = k;
}

static void on_deadline_timer(uv_timer_t *handle)
{
    fx_t *f = handle->data;
    uv_stop(&f->loop);
}

static void run_once(fx_t *f, uint64_t ms)
{
    serve(f);
    uv_timer_start(&f->deadline, on_deadline_timer, ms, 0);
    uv_run(&f->loop, UV_RUN_ONCE);
    uv_timer_stop(&f->deadline);
    serve(f);
}

static bool for_attempt(const loom_msg_t *m, uint64_t id)
{
    switch (m->body_case) {
    case LOOM__ENVELOPE__BODY_STARTED:
        return m->started->attempt_id == id;
    case LOOM__ENVELOPE__BODY_LOG:
        return m->log->attempt_id == id;
    case LOOM__ENVELOPE__BODY_FINISHED:
        return m->finished->attempt_id == id;
    default:
        return true;
    }
}

static const loom_msg_t *wait_msg(fx_t *f, Loom__Envelope__BodyCase kind, uint64_t id)
{
    uint64_t end = loom_mono_ms() + WAIT_MS;
    for (;;) {
        for (; f->cursor < f->n_msgs; f->cursor++) {
            const loom_msg_t *m = f->msgs[f->cursor];
            if (m->body_case == kind && for_attempt(m, id)) {
                f->cursor++;
                return m;
            }
        }
        uint64_t now = loom_mono_ms();
        if (now >= end) fail_msg("no %s within %d ms", loom_codec_kind_name(kind), WAIT_MS);
        run_once(f, end - now);
    }
}

/* Turns the loop until n requests are held. */
static void wait_held(fx_t *f, size_t n)
{
    uint64_t end = loom_mono_ms() + WAIT_MS;
    while (f->n_held < n) {
        uint64_t now = loom_mono_ms();
        if (now >= end) fail_msg("%zu requests held, waited for %zu", f->n_held, n);
        run_once(f, end - now);
    }
}

static size_t count(const fx_t *f, size_t from, Loom__Envelope__BodyCase kind, uint64_t id)
{
    size_t n = 0;
    for (size_t i = from; i < f->n_msgs; i++)
        n += f->msgs[i]->body_case == kind && for_attempt(f->msgs[i], id);
    return n;
}

static size_t count_fetches(const fx_t *f, size_t from, const char *hash, int64_t offset)
{
    size_t n = 0;
    for (size_t i = from; i < f->n_msgs; i++) {
        const loom_msg_t *m = f->msgs[i];
        if (m->body_case != LOOM__ENVELOPE__BODY_FETCH || strcmp(m->fetch->hash, hash) != 0)
            continue;
        n += offset < 0 || m->fetch->offset == (uint64_t)offset;
    }
    return n;
}

/* The attempt's output, both streams, as one string (caller frees). */
static char *output_of(const fx_t *f, uint64_t id)
{
    loom_buf_t b = {0};
    loom_buf_puts(&b, "");
    for (size_t i = 0; i < f->n_msgs; i++)
        if (f->msgs[i]->body_case == LOOM__ENVELOPE__BODY_LOG && f->msgs[i]->log->attempt_id == id)
            loom_buf_append(&b, f->msgs[i]->log->data.data, f->msgs[i]->log->data.len);
    return loom_buf_steal(&b);
}

/* --- objects and bundles --- */

static void add_object(fx_t *f, const void *data, size_t len, char hex[65])
{
    assert_true(f->n_objects < MAX_OBJECTS);
    object_t *o = &f->objects[f->n_objects++];
    loom_hash_bytes(data, len, o->hash);
    o->data = loom_xmalloc(len ? len : 1);
    memcpy(o->data, data, len);
    o->len = len;
    if (hex) memcpy(hex, o->hash, 65);
}

typedef struct {
    const char *path;
    const char *content;
    uint32_t mode;
} bfile_t;

/* Stores the files and their manifest; returns the manifest hash in hex. */
static void add_bundle(fx_t *f, const bfile_t *files, size_t n, char hex[65])
{
    loom_manifest_t m = {0};
    for (size_t i = 0; i < n; i++) {
        char h[65];
        add_object(f, files[i].content, strlen(files[i].content), h);
        loom_manifest_add(&m, files[i].path, files[i].mode, strlen(files[i].content), h);
    }
    loom_manifest_sort(&m);
    char *text, why[256];
    size_t len;
    assert_int_equal(loom_manifest_encode(&m, &text, &len, why, sizeof why), 0);
    add_object(f, text, len, hex);
    free(text);
    loom_manifest_free(&m);
}

static void dispatch(fx_t *f, uint64_t id, const char *bundle, const char *shell,
                     Loom__File **files, size_t n_files, const char *metrics)
{
    Loom__Dispatch d = LOOM__DISPATCH__INIT;
    d.attempt_id = id;
    d.run_id = 1;
    d.pipeline = "pipe";
    d.task = "task";
    d.shell = (char *)shell;
    d.seq = id;
    d.attempt_number = 1;
    d.bundle = (char *)(bundle ? bundle : "");
    d.files = files;
    d.n_files = n_files;
    d.metrics = (char *)(metrics ? metrics : "");
    loom_msg_t m = LOOM__ENVELOPE__INIT;
    m.body_case = LOOM__ENVELOPE__BODY_DISPATCH;
    m.dispatch = &d;
    send_msg(f, &m);
}

static void send_welcome(fx_t *f)
{
    Loom__Welcome w = LOOM__WELCOME__INIT;
    w.heartbeat_ms = HB_MS;
    w.timeout_ms = 10000;
    loom_msg_t m = LOOM__ENVELOPE__INIT;
    m.body_case = LOOM__ENVELOPE__BODY_WELCOME;
    m.welcome = &w;
    send_msg(f, &m);
}

/* --- fixture --- */

static int setup(void **state)
{
    fx_t *f = loom_xcalloc(1, sizeof *f);
    snprintf(f->tmp, sizeof f->tmp, "/tmp/loom-test-bundle-XXXXXX");
    assert_non_null(mkdtemp(f->tmp));
    uv_loop_init(&f->loop);
    uv_timer_init(&f->loop, &f->deadline);
    f->deadline.data = f;
    f->zctx = zmq_ctx_new();
    void *s = zmq_socket(f->zctx, ZMQ_ROUTER);
    int one = 1, zero = 0;
    zmq_setsockopt(s, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    assert_int_equal(zmq_bind(s, "tcp://127.0.0.1:*"), 0);
    size_t len = sizeof f->endpoint;
    assert_int_equal(zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, f->endpoint, &len), 0);
    f->router = loom_zsock_new(&f->loop, s, on_router_message, f);
    assert_int_equal(loom_zsock_start(f->router), 0);
    char *work = loom_xasprintf("%s/work", f->tmp);
    f->cfg = (loom_agent_config_t){.name = AGENT_NAME,
                                   .server = f->endpoint,
                                   .work_dir = work,
                                   .slots = 2,
                                   .hello_interval_ms = 50,
                                   .kill_grace_ms = 2000,
                                   .zmq_ctx = f->zctx};
    loom_log_set_level(LOOM_LOG_ERROR);
    *state = f;
    return 0;
}

static void start_welcomed(fx_t *f)
{
    f->agent = loom_agent_new(&f->loop, &f->cfg);
    assert_int_equal(loom_agent_start(f->agent), 0);
    wait_msg(f, LOOM__ENVELOPE__BODY_HELLO, 0);
    send_welcome(f);
    wait_msg(f, LOOM__ENVELOPE__BODY_HEARTBEAT, 0);
}

static void on_agent_stopped(void *ud)
{
    fx_t *f = ud;
    f->stopped = true;
}

static void stop_agent(fx_t *f)
{
    uint64_t end = loom_mono_ms() + WAIT_MS;
    loom_agent_stop(f->agent, on_agent_stopped, f);
    while (!f->stopped) {
        if (loom_mono_ms() >= end) fail_msg("agent did not stop");
        run_once(f, 50);
    }
}

static void on_router_closed(void *ud)
{
    fx_t *f = ud;
    f->router_closed = true;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int teardown(void **state)
{
    fx_t *f = *state;
    if (f->agent && !f->stopped) stop_agent(f);
    loom_agent_destroy(&f->agent);
    loom_zsock_close(f->router, on_router_closed);
    uv_close((uv_handle_t *)&f->deadline, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_true(f->router_closed);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    zmq_ctx_term(f->zctx);
    for (size_t i = 0; i < f->n_msgs; i++) loom_codec_free(f->msgs[i]);
    for (size_t i = 0; i < f->n_objects; i++) free(f->objects[i].data);
    free(f->msgs);
    free((char *)f->cfg.work_dir);
    nftw(f->tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static char *work_path(fx_t *f, const char *rel)
{
    char *real = realpath(f->cfg.work_dir, NULL);
    char *p = loom_xasprintf("%s/%s", real, rel);
    free(real);
    return p;
}

/* --- tests --- */

static const bfile_t train_bundle[] = {
    {"run.sh", "echo from-bundle; cat data/x.txt; stat -c '%a %n' run.sh data/x.txt\n", 0755},
    {"data/x.txt", "payload-42\n", 0644},
    {"copy.txt", "payload-42\n", 0644}, /* same content, other path: one object */
};

static void test_bundle_unpacked_with_modes_then_cached(void **state)
{
    fx_t *f = *state;
    start_welcomed(f);
    char man[65];
    add_bundle(f, train_bundle, 3, man);
    size_t from = f->n_msgs;
    dispatch(f, 1, man, "./run.sh", NULL, 0, NULL);
    const loom_msg_t *fin = wait_msg(f, LOOM__ENVELOPE__BODY_FINISHED, 1);
    assert_int_equal(fin->finished->exit_code, 0);
    assert_string_equal(fin->finished->error, "");
    char *out = output_of(f, 1);
    assert_string_equal(out, "from-bundle\npayload-42\n755 run.sh\n644 data/x.txt\n");
    free(out);
    /* The manifest, then each distinct object, each asked for once. */
    assert_int_equal(count_fetches(f, from, man, 0), 1);
    assert_int_equal(count_fetches(f, from, f->objects[0].hash, -1), 1);
    assert_int_equal(count_fetches(f, from, f->objects[1].hash, -1), 1);
    char *cached = work_path(f, "cache/objects");
    char *obj = loom_xasprintf("%s/%.2s/%s", cached, f->objects[1].hash, f->objects[1].hash + 2);
    assert_int_equal(access(obj, R_OK), 0);
    free(obj);
    free(cached);

    /* A second dispatch of the same bundle fetches nothing. */
    from = f->n_msgs;
    dispatch(f, 2, man, "cat copy.txt", NULL, 0, NULL);
    fin = wait_msg(f, LOOM__ENVELOPE__BODY_FINISHED, 2);
    assert_int_equal(fin->finished->exit_code, 0);
    out = output_of(f, 2);
    assert_string_equal(out, "payload-42\n");
    free(out);
    assert_int_equal(count(f, from, LOOM__ENVELOPE__BODY_FETCH, 0), 0);
}

static void test_concurrent_dispatches_share_downloads(void **state)
{
    fx_t *f = *state;
    start_welcomed(f);
    char man[65];
    add_bundle(f, train_bundle, 3, man);
    f->hold = true;
    dispatch(f, 11, man, "cat data/x.txt", NULL, 0, NULL);
    dispatch(f, 12, man, "cat copy.txt", NULL, 0, NULL);
    wait_held(f, 1);
    f->hold = false;
    wait_msg(f, LOOM__ENVELOPE__BODY_FINISHED, 11);
    f->cursor = 0; /* 12 may have finished first */
    wait_msg(f, LOOM__ENVELOPE__BODY_FINISHED, 12);
    for (size_t i = 0; i < f->n_objects; i++)
        assert_int_equal(count_fetches(f, 0, f->objects[i].hash, 0), 1);
    char *a = output_of(f, 11), *b = output_of(f, 12);
    assert_string_equal(a, "payload-42\n");
    assert_string_equal(b, "payload-42\n");
    free(a);
    free(b);
}

static uint64_t outstanding(const fx_t *f, const char *hash)
{
    uint64_t n = 0;
    for (size_t i = 0; i < f->n_held; i++) n += strcmp(f->held[i].hash, hash) == 0;
    return n;
}

static void test_large_object_window_and_resume(void **state)
{
    fx_t *f = *state;
    start_welcomed(f);
    size_t big_len = 6 * LOOM_OBJECT_CHUNK_MAX + 777;
    char *big = loom_xmalloc(big_len + 1);
    for (size_t i = 0; i < big_len; i++) big[i] = (char)('a' + (i * 13 + i / 4096) % 26);
    big[big_len] = '\0';
    bfile_t files[] = {{"big.bin", big, 0644}};
    char man[65];
    add_bundle(f, files, 1, man);
    const char *big_hash = f->objects[0].hash;
    memcpy(f->hold_hash, big_hash, 65);
    dispatch(f, 21, man, "wc -c < big.bin", NULL, 0, NULL);
    /* The manifest is served; big.bin's first request is held. Its size is
     * not known yet, so there is only one. */
    wait_held(f, 1);
    assert_int_equal(f->held[0].offset, 0);
    for (int i = 0; i < 3; i++) wait_msg(f, LOOM__ENVELOPE__BODY_HEARTBEAT, 0);
    assert_int_equal(f->n_held, 1);
    answer(f, &f->held[0]);
    f->n_held = 0;
    /* The window: once the first chunk is written, FETCH_WINDOW requests,
     * and no more while none is answered. */
    wait_held(f, FETCH_WINDOW);
    for (int i = 0; i < 5; i++) wait_msg(f, LOOM__ENVELOPE__BODY_HEARTBEAT, 0);
    assert_int_equal(outstanding(f, big_hash), FETCH_WINDOW);
    assert_int_equal(f->held[0].offset, LOOM_OBJECT_CHUNK_MAX);
    /* Lose them all, and loomd asks for a hello: after the Welcome the
     * agent asks again from the first byte it lacks. */
    f->n_held = 0;
    Loom__Error e = LOOM__ERROR__INIT;
    e.message = "who are you?";
    e.hello_required = true;
    loom_msg_t m = LOOM__ENVELOPE__INIT;
    m.body_case = LOOM__ENVELOPE__BODY_ERROR;
    m.error = &e;
    send_msg(f, &m);
    wait_msg(f, LOOM__ENVELOPE__BODY_HELLO, 0);
    size_t from = f->n_msgs;
    send_welcome(f);
    wait_held(f, 1);
    assert_int_equal(f->held[0].offset, LOOM_OBJECT_CHUNK_MAX);
    f->hold_hash[0] = '\0';
    const loom_msg_t *fin = wait_msg(f, LOOM__ENVELOPE__BODY_FINISHED, 21);
    assert_int_equal(fin->finished->exit_code, 0);
    char *out = output_of(f, 21);
    char *want = loom_xasprintf("%zu\n", big_len);
    assert_string_equal(out, want);
    assert_true(count_fetches(f, from, big_hash, LOOM_OBJECT_CHUNK_MAX) >= 1);
    free(want);
    free(out);
    char *path = work_path(f, "attempts/21/big.bin");
    char *got = NULL;
    size_t got_len = 0;
    assert_int_equal(loom_read_file(path, big_len + 1, &got, &got_len), 0);
    assert_int_equal(got_len, big_len);
    assert_memory_equal(got, big, big_len);
    free(got);
    free(path);
    free(big);
}

/* The attempt ended without a process; its error says error_part. */
static const char *expect_not_run(fx_t *f, uint64_t id, const char *error_part)
{
    const loom_msg_t *fin = wait_msg(f, LOOM__ENVELOPE__BODY_FINISHED, id);
    assert_int_equal(fin->finished->exit_code, -1);
    if (!strstr(fin->finished->error, error_part))
        fail_msg("error \"%s\" does not say \"%s\"", fin->finished->error, error_part);
    assert_int_equal(count(f, 0, LOOM__ENVELOPE__BODY_STARTED, id), 0);
    return fin->finished->error;
}

static void test_hostile_or_missing_bundles_are_refused(void **state)
{
    fx_t *f = *state;
    start_welcomed(f);
    char payload[65], evil[65];
    add_object(f, "owned\n", 6, payload);
    char *text = loom_xasprintf("{\"version\":1,\"files\":[{\"path\":\"../../evil\",\"mode\":493,"
                                "\"size\":6,\"hash\":\"%s\"}]}",
                                payload);
    add_object(f, text, strlen(text), evil);
    free(text);
    dispatch(f, 31, evil, "true", NULL, 0, NULL);
    const char *error = expect_not_run(f, 31, "bundle: manifest");
    assert_non_null(strstr(error, "\"..\" is not allowed"));
    char *outside = work_path(f, "evil");
    assert_int_equal(access(outside, F_OK), -1);
    free(outside);
    outside = work_path(f, "attempts/evil");
    assert_int_equal(access(outside, F_OK), -1);
    free(outside);

    char unknown[65];
    loom_hash_bytes("nobody stored this", 18, unknown);
    dispatch(f, 32, unknown, "true", NULL, 0, NULL);
    expect_not_run(f, 32, "bundle: manifest: loomd: no such object");

    /* A manifest naming a file loomd does not have. */
    loom_manifest_t m = {0};
    char lost[65];
    loom_hash_bytes("lost", 4, lost);
    loom_manifest_add(&m, "lost.py", 0644, 4, lost);
    char why[128], man[65];
    size_t len;
    assert_int_equal(loom_manifest_encode(&m, &text, &len, why, sizeof why), 0);
    add_object(f, text, len, man);
    free(text);
    loom_manifest_free(&m);
    dispatch(f, 33, man, "true", NULL, 0, NULL);
    expect_not_run(f, 33, "bundle: lost.py: loomd: no such object");

    dispatch(f, 34, "not-a-hash", "true", NULL, 0, NULL);
    expect_not_run(f, 34, "bundle: ");
}

static void test_open_beneath_refuses_symlinks(void **state)
{
    fx_t *f = *state;
    char *dir = loom_xasprintf("%s/confined", f->tmp);
    char *outside = loom_xasprintf("%s/outside", f->tmp);
    assert_int_equal(mkdir(dir, 0700), 0);
    assert_int_equal(mkdir(outside, 0700), 0);
    char *link = loom_xasprintf("%s/sub", dir);
    assert_int_equal(symlink(outside, link), 0);
    char *flink = loom_xasprintf("%s/f", dir);
    assert_int_equal(symlink("/etc/hostname", flink), 0);
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY);
    assert_true(dirfd >= 0);
    assert_int_equal(workdir_open_beneath(dirfd, "sub/x", O_WRONLY | O_CREAT, 0600, true), -ELOOP);
    assert_int_equal(workdir_open_beneath(dirfd, "f", O_RDONLY, 0, false), -ELOOP);
    assert_int_equal(workdir_open_beneath(dirfd, "../x", O_WRONLY | O_CREAT, 0600, true), -EINVAL);
    assert_int_equal(workdir_open_beneath(dirfd, "/tmp/x", O_WRONLY | O_CREAT, 0600, true),
                     -EINVAL);
    int fd = workdir_open_beneath(dirfd, "a/b/c", O_WRONLY | O_CREAT, 0600, true);
    assert_true(fd >= 0);
    close(fd);
    close(dirfd);
    char *x = loom_xasprintf("%s/x", outside);
    assert_int_equal(access(x, F_OK), -1);
    free(x);
    free(flink);
    free(link);
    free(outside);
    free(dir);
}

static void test_dispatch_files_written(void **state)
{
    fx_t *f = *state;
    start_welcomed(f);
    char man[65];
    add_bundle(f, train_bundle, 3, man);
    Loom__File params = LOOM__FILE__INIT, cfg = LOOM__FILE__INIT, over = LOOM__FILE__INIT;
    params.path = "params.json";
    params.content.data = (uint8_t *)"{\"lr\": 0.1}";
    params.content.len = 11;
    params.env = "LOOM_PARAMS";
    cfg.path = "conf/run.cfg";
    cfg.content.data = (uint8_t *)"x=1\n";
    cfg.content.len = 4;
    cfg.mode = 0640;
    over.path = "copy.txt"; /* replaces the bundle's file */
    over.content.data = (uint8_t *)"mine\n";
    over.content.len = 5;
    Loom__File *files[] = {&params, &cfg, &over};
    dispatch(
        f, 41, man,
        "cat \"$LOOM_PARAMS\"; echo; cat conf/run.cfg copy.txt; "
        "stat -c '%a %n' params.json conf/run.cfg; test \"$LOOM_PARAMS\" = \"$PWD/params.json\"",
        files, 3, NULL);
    const loom_msg_t *fin = wait_msg(f, LOOM__ENVELOPE__BODY_FINISHED, 41);
    assert_int_equal(fin->finished->exit_code, 0);
    char *out = output_of(f, 41);
    assert_string_equal(out, "{\"lr\": 0.1}\nx=1\nmine\n600 params.json\n640 conf/run.cfg\n");
    free(out);

    Loom__File bad = LOOM__FILE__INIT;
    bad.path = "../escape.txt";
    Loom__File *bad_files[] = {&bad};
    dispatch(f, 42, NULL, "true", bad_files, 1, NULL);
    expect_not_run(f, 42, "files: ");
    char *outside = work_path(f, "attempts/escape.txt");
    assert_int_equal(access(outside, F_OK), -1);
    free(outside);
}

static void expect_metrics(fx_t *f, uint64_t id, const char *shell, const char *json,
                           const char *error_part)
{
    dispatch(f, id, NULL, shell, NULL, 0, "out/metrics.json");
    const loom_msg_t *fin = wait_msg(f, LOOM__ENVELOPE__BODY_FINISHED, id);
    const Loom__Finished *r = fin->finished;
    assert_string_equal(r->metrics_json, json);
    if (!strstr(r->metrics_error, error_part))
        fail_msg("metrics error \"%s\" does not say \"%s\"", r->metrics_error, error_part);
    if (!*error_part) assert_string_equal(r->metrics_error, "");
}

static void test_metrics_read_after_success(void **state)
{
    fx_t *f = *state;
    start_welcomed(f);
    expect_metrics(f, 51,
                   "mkdir out; echo '{\"auc\": 0.5, \"loss\": 3, \"n\": -1e3}' > out/metrics.json",
                   "{\"auc\":0.5,\"loss\":3,\"n\":-1000.0}", "");
    expect_metrics(f, 52, "true", "", "metrics file \"out/metrics.json\" not found");
    expect_metrics(f, 53, "mkdir out; echo 'auc=1' > out/metrics.json", "", "is not JSON");
    expect_metrics(f, 54, "mkdir out; echo '{\"auc\": \"high\"}' > out/metrics.json", "",
                   "\"auc\" is a string, not a number");
    expect_metrics(f, 55, "mkdir out; echo '[1]' > out/metrics.json", "", "not a JSON object");
    expect_metrics(f, 56, "ln -s /etc out", "", "symbolic link");
    expect_metrics(f, 57, "mkdir out; ln -s /etc/hostname out/metrics.json", "", "symbolic link");
    expect_metrics(f, 58, "mkdir out; head -c 70000 /dev/zero > out/metrics.json", "", "over");
    /* A failed task's metrics are not read. */
    expect_metrics(f, 59, "mkdir out; echo '{\"a\": 1}' > out/metrics.json; exit 3", "", "");
}

static void test_cancel_and_stop_while_fetching(void **state)
{
    fx_t *f = *state;
    start_welcomed(f);
    char man[65];
    add_bundle(f, train_bundle, 3, man);
    f->hold = true;
    dispatch(f, 61, man, "true", NULL, 0, NULL);
    dispatch(f, 62, man, "true", NULL, 0, NULL);
    wait_held(f, 1);
    Loom__Cancel c = LOOM__CANCEL__INIT;
    c.attempt_id = 61;
    c.reason = "user asked";
    loom_msg_t m = LOOM__ENVELOPE__INIT;
    m.body_case = LOOM__ENVELOPE__BODY_CANCEL;
    m.cancel = &c;
    send_msg(f, &m);
    const loom_msg_t *fin = wait_msg(f, LOOM__ENVELOPE__BODY_FINISHED, 61);
    assert_true(fin->finished->cancelled);
    assert_string_equal(fin->finished->error, "cancelled: user asked");
    assert_int_equal(count(f, 0, LOOM__ENVELOPE__BODY_STARTED, 61), 0);
    /* 62 is still waiting for its bundle, and held: stopping ends it
     * without a run, and does not wait for the download. */
    assert_int_equal(loom_agent_held(f->agent), 2);
    uint64_t t0 = loom_mono_ms();
    stop_agent(f);
    assert_true(loom_mono_ms() - t0 < 1000);
    assert_int_equal(count(f, 0, LOOM__ENVELOPE__BODY_STARTED, 62), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_bundle_unpacked_with_modes_then_cached, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_dispatches_share_downloads, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_large_object_window_and_resume, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hostile_or_missing_bundles_are_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_open_beneath_refuses_symlinks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dispatch_files_written, setup, teardown),
        cmocka_unit_test_setup_teardown(test_metrics_read_after_success, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_and_stop_while_fetching, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
