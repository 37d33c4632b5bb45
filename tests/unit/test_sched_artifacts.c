/* loomd's side of artifacts against a fake agent over real ZeroMQ, with a
 * real object store and SQLite: uploads (duplicates cost nothing, hash
 * mismatches store nothing, only the attempt's agent may upload), outputs
 * recorded only when stored and passed on as inputs, the task cache,
 * the model registry with its champion gate and events, and gc. */
#include "sched_fixture.h"

#include "loom/log.h"

#include <sodium.h>
#include <sys/stat.h>
#include <utime.h>

static void hex_of(const char *data, char out[65])
{
    unsigned char h[32];
    crypto_generichash(h, sizeof h, (const unsigned char *)data, strlen(data), NULL, 0);
    sodium_bin2hex(out, 65, h, sizeof h);
}

static void submit_dag(fixture_t *f, const char *dag)
{
    json_t *res = NULL;
    loom_diags_t diags = {0};
    int rc = loom_sched_submit(f->s, "p.yaml", dag, strlen(dag), NULL, &res, &diags);
    if (rc) {
        char *t = loom_diags_format(&diags);
        fail_msg("submit: %s", t);
    }
    json_decref(res);
    loom_diags_free(&diags);
}

static uint64_t run(fixture_t *f, const char *pipeline, bool no_cache)
{
    uint64_t id = 0;
    char why[128];
    assert_int_equal(
        loom_sched_start_run(f->s, pipeline, 0, "manual", NULL, no_cache, &id, why, sizeof why), 0);
    return id;
}

static void put(void *d, uint64_t attempt, const char *hash, uint64_t offset, const char *data,
                uint64_t size)
{
    Loom__PutObject p = LOOM__PUT_OBJECT__INIT;
    p.attempt_id = attempt;
    p.hash = (char *)hash;
    p.offset = offset;
    p.data.data = (uint8_t *)data;
    p.data.len = data ? strlen(data) : 0;
    p.size = size;
    loom_msg_t m = LOOM__ENVELOPE__INIT;
    m.body_case = LOOM__ENVELOPE__BODY_PUT;
    m.put = &p;
    send_msg(d, &m);
}

/* Uploads content as an agent does: ask, then chunks of 4 bytes. Returns
 * how many data bytes were sent. */
static size_t upload(fixture_t *f, void *d, uint64_t attempt, const char *content)
{
    char hash[65];
    hex_of(content, hash);
    size_t len = strlen(content), sent = 0;
    put(d, attempt, hash, 0, NULL, len);
    loom_msg_t *ack = expect(f, d, LOOM__ENVELOPE__BODY_PUT_ACK);
    bool stored = ack->put_ack->stored;
    assert_string_equal(ack->put_ack->error, "");
    loom_codec_free(ack);
    for (size_t off = 0; !stored && off < len; off += 4) {
        char chunk[5] = {0};
        memcpy(chunk, content + off, len - off < 4 ? len - off : 4);
        put(d, attempt, hash, off, chunk, len);
        sent += strlen(chunk);
        ack = expect(f, d, LOOM__ENVELOPE__BODY_PUT_ACK);
        assert_string_equal(ack->put_ack->error, "");
        assert_int_equal(ack->put_ack->offset, off + strlen(chunk));
        stored = ack->put_ack->stored;
        loom_codec_free(ack);
    }
    assert_true(stored);
    return sent;
}

typedef struct {
    const char *path, *content;
} out_t;

/* Sends Finished. With next, returns the Dispatch that follows (loomd
 * sends it before the FinishedAck); else waits for the FinishedAck. */
static loom_msg_t *finish_next(fixture_t *f, void *d, uint64_t attempt, const out_t *outs, size_t n,
                               const char *metrics, const char *outputs_error, bool next)
{
    Loom__Artifact arts[8], *ptrs[8];
    char hashes[8][65];
    for (size_t i = 0; i < n; i++) {
        loom__artifact__init(&arts[i]);
        hex_of(outs[i].content, hashes[i]);
        arts[i].path = (char *)outs[i].path;
        arts[i].hash = hashes[i];
        arts[i].size = strlen(outs[i].content);
        arts[i].mode = 0644;
        ptrs[i] = &arts[i];
    }
    Loom__Finished fin = LOOM__FINISHED__INIT;
    fin.attempt_id = attempt;
    fin.artifacts = ptrs;
    fin.n_artifacts = n;
    fin.metrics_json = (char *)(metrics ? metrics : "");
    fin.outputs_error = (char *)(outputs_error ? outputs_error : "");
    loom_msg_t m = LOOM__ENVELOPE__INIT;
    m.body_case = LOOM__ENVELOPE__BODY_FINISHED;
    m.finished = &fin;
    send_msg(d, &m);
    if (next) return expect(f, d, LOOM__ENVELOPE__BODY_DISPATCH);
    loom_codec_free(expect(f, d, LOOM__ENVELOPE__BODY_FINISHED_ACK));
    return NULL;
}

static void finish(fixture_t *f, void *d, uint64_t attempt, const out_t *outs, size_t n,
                   const char *metrics, const char *outputs_error)
{
    finish_next(f, d, attempt, outs, n, metrics, outputs_error, false);
}

static json_t *run_json(fixture_t *f, uint64_t id)
{
    json_t *r = NULL;
    assert_int_equal(loom_store_json_run(loom_sched_store(f->s), id, &r), 0);
    return r;
}

static const char *task_field(json_t *run, size_t idx, const char *key)
{
    return json_string_value(
        json_object_get(json_array_get(json_object_get(run, "tasks"), idx), key));
}

static const char *pipe_dag = "pipeline: p\n"
                              "tasks:\n"
                              "  train:\n"
                              "    run: train\n"
                              "    outputs: [model.pkl, report.txt]\n"
                              "  serve:\n"
                              "    needs: [train]\n"
                              "    inputs: ['train:model.pkl']\n"
                              "    run: serve\n";

static void test_outputs_are_uploaded_recorded_and_passed_on(void **state)
{
    fixture_t *f = *state;
    void *ag = dealer(f, "ag");
    hello(f, ag, "ag", 1);
    submit_dag(f, pipe_dag);
    uint64_t id = run(f, "p", false);
    loom_msg_t *d = expect(f, ag, LOOM__ENVELOPE__BODY_DISPATCH);
    uint64_t att = d->dispatch->attempt_id;
    assert_int_equal(d->dispatch->n_outputs, 2);
    assert_string_equal(d->dispatch->outputs[0], "model.pkl");
    loom_codec_free(d);

    assert_int_equal(upload(f, ag, att, "weights-v1"), 10);
    /* Identical content (another file, or again): no byte is sent. */
    assert_int_equal(upload(f, ag, att, "weights-v1"), 0);
    assert_int_equal(upload(f, ag, att, "report"), 6);

    /* A wrong hash stores nothing and says so. */
    char bad[65];
    hex_of("something else", bad);
    put(ag, att, bad, 0, NULL, 4);
    loom_codec_free(expect(f, ag, LOOM__ENVELOPE__BODY_PUT_ACK));
    put(ag, att, bad, 0, "abcd", 4);
    loom_msg_t *ack = expect(f, ag, LOOM__ENVELOPE__BODY_PUT_ACK);
    assert_false(ack->put_ack->stored);
    assert_non_null(strstr(ack->put_ack->error, "content hash is"));
    loom_codec_free(ack);
    assert_false(loom_objects_has(loom_sched_objects(f->s), bad));

    /* Another agent cannot upload for this attempt. */
    void *other = dealer(f, "other");
    hello(f, other, "other", 0);
    put(other, att, bad, 0, NULL, 4);
    ack = expect(f, other, LOOM__ENVELOPE__BODY_PUT_ACK);
    assert_non_null(strstr(ack->put_ack->error, "not running on this agent"));
    loom_codec_free(ack);

    out_t outs[] = {{"model.pkl", "weights-v1"}, {"report.txt", "report"}};
    d = finish_next(f, ag, att, outs, 2, NULL, NULL, true);
    assert_string_equal(d->dispatch->task, "serve");
    assert_int_equal(d->dispatch->n_inputs, 1);
    assert_string_equal(d->dispatch->inputs[0]->path, "model.pkl");
    char want[65];
    hex_of("weights-v1", want);
    assert_string_equal(d->dispatch->inputs[0]->hash, want);
    assert_int_equal(d->dispatch->inputs[0]->size, 10);
    uint64_t att2 = d->dispatch->attempt_id;
    loom_codec_free(d);
    finish(f, ag, att2, NULL, 0, NULL, NULL);

    json_t *arts = NULL;
    assert_int_equal(loom_store_json_artifacts(loom_sched_store(f->s), id, NULL, &arts), 0);
    assert_int_equal(json_array_size(json_object_get(arts, "artifacts")), 2);
    json_decref(arts);
    /* Lineage: serve read train's model; the model came from train. */
    json_t *lin = NULL;
    assert_int_equal(loom_store_json_lineage(loom_sched_store(f->s), want, 0, NULL, NULL, &lin), 0);
    json_t *first = json_array_get(json_object_get(lin, "chain"), 0);
    assert_string_equal(json_string_value(json_object_get(first, "task")), "train");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(first, "made_by"), "pipeline")), "p");
    json_decref(lin);
}

/* As the agent sends: several chunks before any acknowledgement. loomd
 * writes them off the loop, acknowledges each in order once written, and a
 * question asked again mid-upload starts it over cleanly. */
static void test_upload_window_and_restart(void **state)
{
    fixture_t *f = *state;
    void *ag = dealer(f, "ag");
    hello(f, ag, "ag", 1);
    submit_dag(f, pipe_dag);
    run(f, "p", false);
    loom_msg_t *d = expect(f, ag, LOOM__ENVELOPE__BODY_DISPATCH);
    uint64_t att = d->dispatch->attempt_id;
    loom_codec_free(d);

    const char *content = "0123456789abcdefghij";
    char hash[65];
    hex_of(content, hash);
    put(ag, att, hash, 0, NULL, 20);
    loom_msg_t *ack = expect(f, ag, LOOM__ENVELOPE__BODY_PUT_ACK);
    assert_false(ack->put_ack->stored);
    loom_codec_free(ack);
    for (uint64_t off = 0; off < 20; off += 4) {
        char chunk[5] = {0};
        memcpy(chunk, content + off, 4);
        put(ag, att, hash, off, chunk, 20);
    }
    uint64_t last = 0;
    bool stored = false;
    while (!stored) {
        ack = expect(f, ag, LOOM__ENVELOPE__BODY_PUT_ACK);
        assert_string_equal(ack->put_ack->error, "");
        stored = ack->put_ack->stored;
        assert_int_equal(ack->put_ack->offset, stored ? 20 : last + 4);
        last = ack->put_ack->offset;
        loom_codec_free(ack);
    }
    assert_true(loom_objects_has(loom_sched_objects(f->s), hash));

    /* A chunk out of place is answered with where loomd is. */
    const char *other = "ABCDEFGH";
    char other_hash[65];
    hex_of(other, other_hash);
    put(ag, att, other_hash, 0, NULL, 8);
    loom_codec_free(expect(f, ag, LOOM__ENVELOPE__BODY_PUT_ACK));
    put(ag, att, other_hash, 4, "EFGH", 8);
    ack = expect(f, ag, LOOM__ENVELOPE__BODY_PUT_ACK);
    assert_false(ack->put_ack->stored);
    assert_int_equal(ack->put_ack->offset, 0);
    loom_codec_free(ack);
    /* A first chunk, then the question again while it may be being
     * written: whatever was acknowledged, the question's answer is 0. */
    put(ag, att, other_hash, 0, "ABCD", 8);
    put(ag, att, other_hash, 0, NULL, 8);
    do {
        ack = expect(f, ag, LOOM__ENVELOPE__BODY_PUT_ACK);
        assert_false(ack->put_ack->stored);
        last = ack->put_ack->offset;
        loom_codec_free(ack);
    } while (last != 0);
    assert_int_equal(upload(f, ag, att, other), 8);
    assert_true(loom_objects_has(loom_sched_objects(f->s), other_hash));
}

static void test_unstored_or_refused_outputs_fail_the_attempt(void **state)
{
    fixture_t *f = *state;
    void *ag = dealer(f, "ag");
    hello(f, ag, "ag", 1);
    submit_dag(f, "pipeline: q\ntasks:\n  t: {run: x, outputs: [a.bin]}\n");
    uint64_t id = run(f, "q", false);
    loom_msg_t *d = expect(f, ag, LOOM__ENVELOPE__BODY_DISPATCH);
    uint64_t att = d->dispatch->attempt_id;
    loom_codec_free(d);
    out_t outs[] = {{"a.bin", "never uploaded"}};
    finish(f, ag, att, outs, 1, NULL, NULL);
    json_t *r = run_json(f, id);
    assert_string_equal(task_field(r, 0, "state"), "failed");
    assert_non_null(strstr(task_field(r, 0, "error"), "was not stored on loomd"));
    json_decref(r);

    id = run(f, "q", false);
    d = expect(f, ag, LOOM__ENVELOPE__BODY_DISPATCH);
    att = d->dispatch->attempt_id;
    loom_codec_free(d);
    finish(f, ag, att, NULL, 0, NULL, "output \"../x\" leaves the working folder");
    r = run_json(f, id);
    assert_string_equal(task_field(r, 0, "error"),
                        "outputs: output \"../x\" leaves the working folder");
    json_decref(r);
}

static const char *cached_dag = "pipeline: c\n"
                                "tasks:\n"
                                "  prep: {run: prep, outputs: [data.csv], cache: true}\n"
                                "  fit:\n"
                                "    needs: [prep]\n"
                                "    inputs: ['prep:*']\n"
                                "    run: fit\n";

static void test_cache_skips_a_task_with_the_same_inputs(void **state)
{
    fixture_t *f = *state;
    void *ag = dealer(f, "ag");
    hello(f, ag, "ag", 1);
    submit_dag(f, cached_dag);
    hello(f, ag, "ag", 4); /* run 3's prep stays running */
    uint64_t id1 = run(f, "c", false);
    loom_msg_t *d = expect(f, ag, LOOM__ENVELOPE__BODY_DISPATCH);
    uint64_t att = d->dispatch->attempt_id;
    loom_codec_free(d);
    upload(f, ag, att, "a,b\n1,2\n");
    out_t outs[] = {{"data.csv", "a,b\n1,2\n"}};
    d = finish_next(f, ag, att, outs, 1, NULL, NULL, true);
    assert_string_equal(d->dispatch->task, "fit");
    att = d->dispatch->attempt_id;
    loom_codec_free(d);
    finish(f, ag, att, NULL, 0, NULL, NULL);

    /* Same command, same inputs: prep is not run again; fit gets its file. */
    uint64_t id2 = run(f, "c", false);
    d = expect(f, ag, LOOM__ENVELOPE__BODY_DISPATCH);
    assert_string_equal(d->dispatch->task, "fit");
    assert_int_equal(d->dispatch->n_inputs, 1);
    assert_string_equal(d->dispatch->inputs[0]->path, "data.csv");
    att = d->dispatch->attempt_id;
    loom_codec_free(d);
    finish(f, ag, att, NULL, 0, NULL, NULL);
    json_t *r = run_json(f, id2);
    assert_string_equal(task_field(r, 0, "state"), "succeeded");
    char note[64];
    snprintf(note, sizeof note, "cached: the same command and inputs succeeded in run %llu",
             (unsigned long long)id1);
    assert_string_equal(task_field(r, 0, "error"), note);
    json_decref(r);

    /* --no-cache runs it anyway. */
    run(f, "c", true);
    d = expect(f, ag, LOOM__ENVELOPE__BODY_DISPATCH);
    assert_string_equal(d->dispatch->task, "prep");
    loom_codec_free(d);

    /* A changed command (a new version) is a new key. */
    submit_dag(f,
               "pipeline: c\ntasks:\n  prep: {run: prep --v2, outputs: [data.csv], cache: true}\n");
    run(f, "c", false);
    d = expect(f, ag, LOOM__ENVELOPE__BODY_DISPATCH);
    assert_string_equal(d->dispatch->shell, "prep --v2");
    loom_codec_free(d);
}

static const char *model_dag = "pipeline: m\n"
                               "tasks:\n"
                               "  train:\n"
                               "    run: train\n"
                               "    outputs: [model.pkl]\n"
                               "    metrics: metrics.json\n"
                               "    model:\n"
                               "      name: churn\n"
                               "      path: model.pkl\n"
                               "      promote: {alias: champion, metric: auc}\n";

static uint64_t train_once(fixture_t *f, void *ag, const char *weights, const char *metrics)
{
    uint64_t id = run(f, "m", false);
    loom_msg_t *d = expect(f, ag, LOOM__ENVELOPE__BODY_DISPATCH);
    while (strcmp(d->dispatch->task, "train") != 0) { /* a deploy run's task */
        loom_codec_free(d);
        d = expect(f, ag, LOOM__ENVELOPE__BODY_DISPATCH);
    }
    uint64_t att = d->dispatch->attempt_id;
    loom_codec_free(d);
    upload(f, ag, att, weights);
    out_t outs[] = {{"model.pkl", weights}};
    finish(f, ag, att, outs, 1, metrics, NULL);
    for (int i = 0; i < 5; i++) uv_run(&f->loop, UV_RUN_NOWAIT); /* events at the flush */
    return id;
}

static int champion(fixture_t *f)
{
    uint32_t v = 0;
    return loom_store_model_alias_get(loom_sched_store(f->s), "churn", "champion", &v) == 0 ? (int)v
                                                                                            : 0;
}

static size_t count_runs(fixture_t *f, const char *pipeline)
{
    json_t *out = NULL;
    assert_int_equal(loom_store_json_runs(loom_sched_store(f->s), pipeline, 100, &out), 0);
    size_t n = json_array_size(json_object_get(out, "runs"));
    json_decref(out);
    return n;
}

static void test_models_register_and_promote_only_when_better(void **state)
{
    fixture_t *f = *state;
    void *ag = dealer(f, "ag");
    hello(f, ag, "ag", 8); /* deploy runs keep their slots */
    submit_dag(f, model_dag);
    submit_dag(f, "pipeline: deploy\n"
                  "triggers: [{event: model.alias, when: \"event.alias == 'champion'\"}]\n"
                  "tasks: {d: {run: deploy}}\n");
    train_once(f, ag, "w1", "{\"auc\": 0.80}");
    assert_int_equal(champion(f), 1);
    assert_int_equal(count_runs(f, "deploy"), 1);
    train_once(f, ag, "w2", "{\"auc\": 0.75}"); /* worse: registered, not promoted */
    assert_int_equal(champion(f), 1);
    assert_int_equal(count_runs(f, "deploy"), 1);
    train_once(f, ag, "w3", "{\"auc\": 0.91}");
    assert_int_equal(champion(f), 3);
    assert_int_equal(count_runs(f, "deploy"), 2);
    json_t *m = NULL;
    assert_int_equal(loom_store_json_model(loom_sched_store(f->s), "churn", &m), 0);
    assert_int_equal(json_array_size(json_object_get(m, "versions")), 3);
    json_decref(m);
    /* By hand: back to v2, an event too. */
    assert_int_equal(loom_sched_model_alias(f->s, "churn", "champion", 2), 0);
    for (int i = 0; i < 5; i++) uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(champion(f), 2);
    assert_int_equal(count_runs(f, "deploy"), 3);
    assert_int_equal(loom_sched_model_alias(f->s, "churn", "champion", 9), LOOM_ENOTFOUND);
}

/* Makes an object look old enough for gc (it keeps fresh ones). */
static void age_object(fixture_t *f, const char *content)
{
    char hash[65];
    hex_of(content, hash);
    char *path = loom_objects_path(loom_sched_objects(f->s), hash);
    struct utimbuf old = {.actime = 1000000000, .modtime = 1000000000};
    assert_int_equal(utime(path, &old), 0);
    free(path);
}

static void test_gc_deletes_old_runs_and_unreferenced_objects(void **state)
{
    fixture_t *f = *state;
    void *ag = dealer(f, "ag");
    hello(f, ag, "ag", 1);
    submit_dag(f, model_dag);
    submit_dag(f, "pipeline: q\ntasks:\n  t: {run: x, outputs: [a.bin]}\n");
    train_once(f, ag, "kept-model", "{\"auc\": 0.5}");
    uint64_t ids[3];
    const char *contents[3] = {"old-1", "old-2", "new-3"};
    for (int i = 0; i < 3; i++) {
        ids[i] = run(f, "q", false);
        loom_msg_t *d = expect(f, ag, LOOM__ENVELOPE__BODY_DISPATCH);
        uint64_t att = d->dispatch->attempt_id;
        loom_codec_free(d);
        upload(f, ag, att, contents[i]);
        out_t outs[] = {{"a.bin", contents[i]}};
        finish(f, ag, att, outs, 1, NULL, NULL);
        age_object(f, contents[i]);
    }
    age_object(f, "kept-model");
    loom_gc_opts_t o = {.keep_last = 1};
    json_t *res = NULL;
    assert_int_equal(loom_sched_gc(f->s, &o, &res), 0);
    assert_int_equal(json_integer_value(json_object_get(res, "runs_deleted")), 2);
    assert_int_equal(json_integer_value(json_object_get(res, "objects_deleted")), 2);
    assert_int_equal(json_integer_value(json_object_get(res, "object_bytes_freed")), 10);
    json_decref(res);
    char hash[65];
    hex_of("old-1", hash);
    assert_false(loom_objects_has(loom_sched_objects(f->s), hash));
    hex_of("new-3", hash);
    assert_true(loom_objects_has(loom_sched_objects(f->s), hash));
    hex_of("kept-model", hash); /* a model version refers to it */
    assert_true(loom_objects_has(loom_sched_objects(f->s), hash));
    json_t *r = NULL;
    assert_int_equal(loom_store_json_run(loom_sched_store(f->s), ids[0], &r), LOOM_ENOTFOUND);
    assert_int_equal(loom_store_json_run(loom_sched_store(f->s), ids[2], &r), 0);
    json_decref(r);
    loom_gc_opts_t none = {0};
    assert_int_equal(loom_sched_gc(f->s, &none, &res), LOOM_EINVAL);
}

static void send_log(void *d, uint64_t attempt, uint64_t seq, const char *text)
{
    Loom__LogChunk c = LOOM__LOG_CHUNK__INIT;
    c.attempt_id = attempt;
    c.seq = seq;
    c.data.data = (uint8_t *)text;
    c.data.len = strlen(text);
    loom_msg_t m = LOOM__ENVELOPE__INIT;
    m.body_case = LOOM__ENVELOPE__BODY_LOG;
    m.log = &c;
    send_msg(d, &m);
}

static char *log_of(fixture_t *f, uint64_t run_id, uint64_t attempt)
{
    char *path = loom_sched_log_path(f->s, run_id, attempt);
    char *text = NULL;
    assert_int_equal(loom_read_file(path, 1 << 20, &text, NULL), 0);
    free(path);
    return text;
}

/* A log over the limit ends with a notice (and the agent is still acked);
 * an attempt lost with its agent gets a line saying output may be missing. */
static void test_log_limit_and_loss_are_marked(void **state)
{
    fixture_t *f = *state;
    f->s->cfg.max_log_bytes = 16;
    void *ag = dealer(f, "ag");
    hello(f, ag, "ag", 1);
    submit_dag(f, "pipeline: l\ntasks:\n  t: {run: x}\n");
    uint64_t id = run(f, "l", false);
    loom_msg_t *d = expect(f, ag, LOOM__ENVELOPE__BODY_DISPATCH);
    uint64_t att = d->dispatch->attempt_id;
    loom_codec_free(d);
    send_log(ag, att, 1, "0123456789");
    send_log(ag, att, 2, "abcdefghij");
    send_log(ag, att, 3, "more");
    loom_msg_t *ack = NULL;
    for (int i = 0; i < 3; i++) {
        loom_codec_free(ack);
        ack = expect(f, ag, LOOM__ENVELOPE__BODY_LOG_ACK);
    }
    assert_int_equal(ack->log_ack->seq, 3);
    loom_codec_free(ack);
    char *text = log_of(f, id, att);
    assert_non_null(strstr(text, "0123456789abcdef\n[loom] output truncated"));
    assert_null(strstr(text, "more"));
    free(text);

    /* The agent restarts (a new session): its attempt is lost, and said so. */
    Loom__Resources res = LOOM__RESOURCES__INIT;
    res.slots = 1;
    Loom__Hello h = LOOM__HELLO__INIT;
    h.name = "ag";
    uint8_t session[16] = {9, 9, 9};
    h.session.data = session;
    h.session.len = sizeof session;
    h.resources = &res;
    loom_msg_t m = LOOM__ENVELOPE__INIT;
    m.body_case = LOOM__ENVELOPE__BODY_HELLO;
    m.hello = &h;
    send_msg(ag, &m);
    loom_codec_free(expect(f, ag, LOOM__ENVELOPE__BODY_WELCOME));
    text = log_of(f, id, att);
    assert_non_null(strstr(text, "[loom] attempt lost ("));
    assert_non_null(strstr(text, "output after byte"));
    free(text);
}

int main(void)
{
    if (getenv("LOOM_TEST_DEBUG")) loom_log_set_level(LOOM_LOG_DEBUG);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_outputs_are_uploaded_recorded_and_passed_on, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_upload_window_and_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unstored_or_refused_outputs_fail_the_attempt, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_cache_skips_a_task_with_the_same_inputs, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_models_register_and_promote_only_when_better, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_gc_deletes_old_runs_and_unreferenced_objects, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_log_limit_and_loss_are_marked, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
