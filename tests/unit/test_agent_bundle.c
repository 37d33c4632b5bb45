/* The agent's code bundles against a fake loomd that serves objects: the
 * shared one of test_agent_fx.h, which here also answers FetchObject from an
 * in-memory store, or holds the requests when a test wants to look at the
 * window or lose them. Every wait ends on a message or fails at a deadline. */
#include "test_agent_fx.h"

#include "fetch.h"
#include "workdir.h"

#include "loom/bundle.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>

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

/* What this file's loomd adds to the shared one, hung off fx_t's ud. */
typedef struct {
    object_t objects[MAX_OBJECTS];
    size_t n_objects;
    request_t held[MAX_HELD]; /* FetchObject not answered yet */
    size_t n_held;
    bool hold;          /* keep requests instead of answering them */
    char hold_hash[65]; /* ... or only those for this object */
} store_t;

static store_t *store(const fx_t *f)
{
    return f->ud;
}

/* --- the object store --- */

static void on_fetch_recorded(fx_t *f, const loom_msg_t *m)
{
    store_t *s = store(f);
    if (m->body_case != LOOM__ENVELOPE__BODY_FETCH) return;
    assert_true(s->n_held < MAX_HELD);
    request_t *r = &s->held[s->n_held++];
    snprintf(r->hash, sizeof r->hash, "%s", m->fetch->hash);
    r->offset = m->fetch->offset;
    r->max = m->fetch->max;
}

static const object_t *find_object(const store_t *s, const char *hash)
{
    for (size_t i = 0; i < s->n_objects; i++)
        if (strcmp(s->objects[i].hash, hash) == 0) return &s->objects[i];
    return NULL;
}

/* Answers a request as loomd's objects_on_fetch does. */
static void answer(fx_t *f, const request_t *r)
{
    const object_t *o = find_object(store(f), r->hash);
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

/* Runs around every loop turn: answers what is not held. */
static void serve(fx_t *f)
{
    store_t *s = store(f);
    size_t k = 0;
    for (size_t i = 0; i < s->n_held; i++) {
        if (s->hold || strcmp(s->held[i].hash, s->hold_hash) == 0)
            s->held[k++] = s->held[i];
        else
            answer(f, &s->held[i]);
    }
    s->n_held = k;
}

/* Turns the loop until n requests are held. */
static void wait_held(fx_t *f, size_t n)
{
    uint64_t end = loom_mono_ms() + WAIT_MS;
    while (store(f)->n_held < n) {
        uint64_t now = loom_mono_ms();
        if (now >= end) fail_msg("%zu requests held, waited for %zu", store(f)->n_held, n);
        run_once(f, end - now);
    }
}

/* FetchObject requests from message from on, for hash (NULL: any) at
 * offset (negative: any). */
static size_t count_fetches(const fx_t *f, size_t from, const char *hash, int64_t offset)
{
    size_t n = 0;
    for (size_t i = from; i < f->n_msgs; i++) {
        const loom_msg_t *m = f->msgs[i];
        if (m->body_case != LOOM__ENVELOPE__BODY_FETCH ||
            (hash && strcmp(m->fetch->hash, hash) != 0))
            continue;
        n += offset < 0 || m->fetch->offset == (uint64_t)offset;
    }
    return n;
}

/* --- objects and bundles --- */

static void add_object(fx_t *f, const void *data, size_t len, char hex[65])
{
    store_t *s = store(f);
    assert_true(s->n_objects < MAX_OBJECTS);
    object_t *o = &s->objects[s->n_objects++];
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
    Loom__Dispatch d = shell_dispatch(id, id, shell);
    d.bundle = (char *)(bundle ? bundle : "");
    d.files = files;
    d.n_files = n_files;
    d.metrics = (char *)(metrics ? metrics : "");
    send_dispatch(f, &d);
}

/* --- fixture: the shared one, with the store and work in tmp/work --- */

static int setup_store(void **state)
{
    if (setup(state)) return -1;
    fx_t *f = *state;
    f->ud = loom_xcalloc(1, sizeof(store_t));
    f->on_msg = on_fetch_recorded;
    f->on_turn = serve;
    /* A work folder the agent must create, beside the others the tests
     * make in tmp. */
    f->cfg.work_dir = loom_xasprintf("%s/work", f->tmp);
    loom_log_set_level(LOOM_LOG_ERROR);
    return 0;
}

static int teardown_store(void **state)
{
    fx_t *f = *state;
    store_t *s = store(f);
    char *work = (char *)f->cfg.work_dir;
    int rc = teardown(state);
    for (size_t i = 0; i < s->n_objects; i++) free(s->objects[i].data);
    free(s);
    free(work);
    return rc;
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
    store_t *s = store(f);
    start_welcomed(f, 10000);
    char man[65];
    add_bundle(f, train_bundle, 3, man);
    size_t from = f->n_msgs;
    dispatch(f, 1, man, "./run.sh", NULL, 0, NULL);
    const loom_msg_t *fin = wait_msg(f, LOOM__ENVELOPE__BODY_FINISHED, for_attempt, 1);
    assert_int_equal(fin->finished->exit_code, 0);
    assert_string_equal(fin->finished->error, "");
    char *out = attempt_output(f, 1);
    assert_string_equal(out, "from-bundle\npayload-42\n755 run.sh\n644 data/x.txt\n");
    free(out);
    /* The manifest, then each distinct object, each asked for once. */
    assert_int_equal(count_fetches(f, from, man, 0), 1);
    assert_int_equal(count_fetches(f, from, s->objects[0].hash, -1), 1);
    assert_int_equal(count_fetches(f, from, s->objects[1].hash, -1), 1);
    char *cached = work_path(f, "cache/objects");
    char *obj = loom_xasprintf("%s/%.2s/%s", cached, s->objects[1].hash, s->objects[1].hash + 2);
    assert_int_equal(access(obj, R_OK), 0);
    free(obj);
    free(cached);

    /* A second dispatch of the same bundle fetches nothing. */
    from = f->n_msgs;
    dispatch(f, 2, man, "cat copy.txt", NULL, 0, NULL);
    fin = wait_msg(f, LOOM__ENVELOPE__BODY_FINISHED, for_attempt, 2);
    assert_int_equal(fin->finished->exit_code, 0);
    out = attempt_output(f, 2);
    assert_string_equal(out, "payload-42\n");
    free(out);
    assert_int_equal(count_fetches(f, from, NULL, -1), 0);
}

static void test_concurrent_dispatches_share_downloads(void **state)
{
    fx_t *f = *state;
    store_t *s = store(f);
    start_welcomed(f, 10000);
    char man[65];
    add_bundle(f, train_bundle, 3, man);
    s->hold = true;
    dispatch(f, 11, man, "cat data/x.txt", NULL, 0, NULL);
    dispatch(f, 12, man, "cat copy.txt", NULL, 0, NULL);
    wait_held(f, 1);
    s->hold = false;
    wait_msg(f, LOOM__ENVELOPE__BODY_FINISHED, for_attempt, 11);
    f->cursor = 0; /* 12 may have finished first */
    wait_msg(f, LOOM__ENVELOPE__BODY_FINISHED, for_attempt, 12);
    for (size_t i = 0; i < s->n_objects; i++)
        assert_int_equal(count_fetches(f, 0, s->objects[i].hash, 0), 1);
    char *a = attempt_output(f, 11), *b = attempt_output(f, 12);
    assert_string_equal(a, "payload-42\n");
    assert_string_equal(b, "payload-42\n");
    free(a);
    free(b);
}

static uint64_t outstanding(const fx_t *f, const char *hash)
{
    const store_t *s = store(f);
    uint64_t n = 0;
    for (size_t i = 0; i < s->n_held; i++) n += strcmp(s->held[i].hash, hash) == 0;
    return n;
}

static void test_large_object_window_and_resume(void **state)
{
    fx_t *f = *state;
    store_t *s = store(f);
    start_welcomed(f, 10000);
    size_t big_len = 6 * LOOM_OBJECT_CHUNK_MAX + 777;
    char *big = loom_xmalloc(big_len + 1);
    for (size_t i = 0; i < big_len; i++) big[i] = (char)('a' + (i * 13 + i / 4096) % 26);
    big[big_len] = '\0';
    bfile_t files[] = {{"big.bin", big, 0644}};
    char man[65];
    add_bundle(f, files, 1, man);
    const char *big_hash = s->objects[0].hash;
    memcpy(s->hold_hash, big_hash, 65);
    dispatch(f, 21, man, "wc -c < big.bin", NULL, 0, NULL);
    /* The manifest is served; big.bin's first request is held. Its size is
     * not known yet, so there is only one. */
    wait_held(f, 1);
    assert_int_equal(s->held[0].offset, 0);
    for (int i = 0; i < 3; i++) wait_msg(f, LOOM__ENVELOPE__BODY_HEARTBEAT, NULL, 0);
    assert_int_equal(s->n_held, 1);
    answer(f, &s->held[0]);
    s->n_held = 0;
    /* The window: once the first chunk is written, FETCH_WINDOW requests,
     * and no more while none is answered. */
    wait_held(f, FETCH_WINDOW);
    for (int i = 0; i < 5; i++) wait_msg(f, LOOM__ENVELOPE__BODY_HEARTBEAT, NULL, 0);
    assert_int_equal(outstanding(f, big_hash), FETCH_WINDOW);
    assert_int_equal(s->held[0].offset, LOOM_OBJECT_CHUNK_MAX);
    /* Lose them all, and loomd asks for a hello: after the Welcome the
     * agent asks again from the first byte it lacks. */
    s->n_held = 0;
    send_hello_required(f);
    wait_msg(f, LOOM__ENVELOPE__BODY_HELLO, NULL, 0);
    size_t from = f->n_msgs;
    send_welcome(f, 10000, NULL, 0);
    wait_held(f, 1);
    assert_int_equal(s->held[0].offset, LOOM_OBJECT_CHUNK_MAX);
    s->hold_hash[0] = '\0';
    const loom_msg_t *fin = wait_msg(f, LOOM__ENVELOPE__BODY_FINISHED, for_attempt, 21);
    assert_int_equal(fin->finished->exit_code, 0);
    char *out = attempt_output(f, 21);
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
    const loom_msg_t *fin = wait_msg(f, LOOM__ENVELOPE__BODY_FINISHED, for_attempt, id);
    assert_int_equal(fin->finished->exit_code, -1);
    if (!strstr(fin->finished->error, error_part))
        fail_msg("error \"%s\" does not say \"%s\"", fin->finished->error, error_part);
    assert_int_equal(count_since(f, 0, LOOM__ENVELOPE__BODY_STARTED, id), 0);
    return fin->finished->error;
}

/* A Dispatch the codec refuses (a bad path or hash) never reaches the
 * attempt code: the agent drops it, runs nothing, and goes on with the next
 * one (probe_id, which must succeed). */
static void expect_dropped(fx_t *f, uint64_t id, uint64_t probe_id)
{
    dispatch(f, probe_id, NULL, "true", NULL, 0, NULL);
    const loom_msg_t *fin = wait_msg(f, LOOM__ENVELOPE__BODY_FINISHED, for_attempt, probe_id);
    assert_int_equal(fin->finished->exit_code, 0);
    assert_int_equal(count_since(f, 0, LOOM__ENVELOPE__BODY_STARTED, id), 0);
    assert_int_equal(count_since(f, 0, LOOM__ENVELOPE__BODY_FINISHED, id), 0);
}

static void test_hostile_or_missing_bundles_are_refused(void **state)
{
    fx_t *f = *state;
    start_welcomed(f, 10000);
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
    expect_dropped(f, 34, 35);
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

/* An input or a file whose parent folder is a symbolic link already in the
 * attempt folder (left by something earlier: a process of a previous task
 * that escaped its group and still writes there) is refused, and nothing
 * is written where the link points. So is an attempt folder that is itself
 * a link. */
static void test_populate_refuses_symlinked_parents(void **state)
{
    fx_t *f = *state;
    char *cache = loom_xasprintf("%s/pcache", f->tmp);
    assert_int_equal(workdir_cache_init(cache), 0);
    char hex[65];
    loom_hash_bytes("owned\n", 6, hex);
    char *obj = workdir_object_path(cache, hex);
    char *parent = loom_xstrndup(obj, strrchr(obj, '/') - obj);
    mkdir(parent, 0700);
    assert_int_equal(loom_write_file_atomic(obj, "owned\n", 6), 0);
    char *dir = loom_xasprintf("%s/attempt", f->tmp);
    char *outside = loom_xasprintf("%s/elsewhere", f->tmp);
    assert_int_equal(mkdir(dir, 0700), 0);
    assert_int_equal(mkdir(outside, 0700), 0);
    char *link = loom_xasprintf("%s/data", dir);
    assert_int_equal(symlink(outside, link), 0);

    Loom__Input in = LOOM__INPUT__INIT, *ins[] = {&in};
    in.path = "data/passwd";
    in.hash = hex;
    in.size = 6;
    char why[256];
    assert_int_equal(workdir_populate(dir, cache, NULL, ins, 1, NULL, 0, why, sizeof why),
                     LOOM_EINVAL);
    assert_non_null(strstr(why, "input \"data/passwd\""));
    Loom__File file = LOOM__FILE__INIT, *files[] = {&file};
    file.path = "data/cron";
    file.content.data = (uint8_t *)"x";
    file.content.len = 1;
    assert_int_equal(workdir_populate(dir, cache, NULL, NULL, 0, files, 1, why, sizeof why),
                     LOOM_EINVAL);
    assert_non_null(strstr(why, "data/cron"));
    char *leak = loom_xasprintf("%s/passwd", outside);
    assert_int_equal(access(leak, F_OK), -1);
    free(leak);
    leak = loom_xasprintf("%s/cron", outside);
    assert_int_equal(access(leak, F_OK), -1);
    free(leak);

    /* The attempt folder itself a link. */
    char *dir2 = loom_xasprintf("%s/attempt2", f->tmp);
    assert_int_equal(symlink(outside, dir2), 0);
    in.path = "x";
    assert_int_not_equal(workdir_populate(dir2, cache, NULL, ins, 1, NULL, 0, why, sizeof why), 0);
    leak = loom_xasprintf("%s/x", outside);
    assert_int_equal(access(leak, F_OK), -1);
    free(leak);
    free(dir2);
    free(link);
    free(outside);
    free(dir);
    free(parent);
    free(obj);
    free(cache);
}

static void test_dispatch_files_written(void **state)
{
    fx_t *f = *state;
    start_welcomed(f, 10000);
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
    const loom_msg_t *fin = wait_msg(f, LOOM__ENVELOPE__BODY_FINISHED, for_attempt, 41);
    assert_int_equal(fin->finished->exit_code, 0);
    char *out = attempt_output(f, 41);
    assert_string_equal(out, "{\"lr\": 0.1}\nx=1\nmine\n600 params.json\n640 conf/run.cfg\n");
    free(out);

    Loom__File bad = LOOM__FILE__INIT;
    bad.path = "../escape.txt";
    Loom__File *bad_files[] = {&bad};
    dispatch(f, 42, NULL, "true", bad_files, 1, NULL);
    expect_dropped(f, 42, 43);
    char *outside = work_path(f, "attempts/escape.txt");
    assert_int_equal(access(outside, F_OK), -1);
    free(outside);
}

static void expect_metrics(fx_t *f, uint64_t id, const char *shell, const char *json,
                           const char *error_part)
{
    dispatch(f, id, NULL, shell, NULL, 0, "out/metrics.json");
    const loom_msg_t *fin = wait_msg(f, LOOM__ENVELOPE__BODY_FINISHED, for_attempt, id);
    const Loom__Finished *r = fin->finished;
    assert_string_equal(r->metrics_json, json);
    if (!strstr(r->metrics_error, error_part))
        fail_msg("metrics error \"%s\" does not say \"%s\"", r->metrics_error, error_part);
    if (!*error_part) assert_string_equal(r->metrics_error, "");
}

static void test_metrics_read_after_success(void **state)
{
    fx_t *f = *state;
    start_welcomed(f, 10000);
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
    store_t *s = store(f);
    start_welcomed(f, 10000);
    char man[65];
    add_bundle(f, train_bundle, 3, man);
    s->hold = true;
    dispatch(f, 61, man, "true", NULL, 0, NULL);
    dispatch(f, 62, man, "true", NULL, 0, NULL);
    wait_held(f, 1);
    send_cancel(f, 61, "user asked");
    const loom_msg_t *fin = wait_msg(f, LOOM__ENVELOPE__BODY_FINISHED, for_attempt, 61);
    assert_true(fin->finished->cancelled);
    assert_string_equal(fin->finished->error, "cancelled: user asked");
    assert_int_equal(count_since(f, 0, LOOM__ENVELOPE__BODY_STARTED, 61), 0);
    /* 62 is still waiting for its bundle, and held: stopping ends it
     * without a run, and does not wait for the download. */
    assert_int_equal(loom_agent_held(f->agent), 2);
    uint64_t t0 = loom_mono_ms();
    stop_agent(f);
    assert_true(loom_mono_ms() - t0 < 1000);
    assert_int_equal(count_since(f, 0, LOOM__ENVELOPE__BODY_STARTED, 62), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_bundle_unpacked_with_modes_then_cached, setup_store,
                                        teardown_store),
        cmocka_unit_test_setup_teardown(test_concurrent_dispatches_share_downloads, setup_store,
                                        teardown_store),
        cmocka_unit_test_setup_teardown(test_large_object_window_and_resume, setup_store,
                                        teardown_store),
        cmocka_unit_test_setup_teardown(test_hostile_or_missing_bundles_are_refused, setup_store,
                                        teardown_store),
        cmocka_unit_test_setup_teardown(test_populate_refuses_symlinked_parents, setup_store,
                                        teardown_store),
        cmocka_unit_test_setup_teardown(test_open_beneath_refuses_symlinks, setup_store,
                                        teardown_store),
        cmocka_unit_test_setup_teardown(test_dispatch_files_written, setup_store, teardown_store),
        cmocka_unit_test_setup_teardown(test_metrics_read_after_success, setup_store,
                                        teardown_store),
        cmocka_unit_test_setup_teardown(test_cancel_and_stop_while_fetching, setup_store,
                                        teardown_store),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
