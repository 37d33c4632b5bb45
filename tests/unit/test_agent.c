/* The agent against a fake loomd: a real ZeroMQ ROUTER on 127.0.0.1 (port
 * picked by the OS) driven from the same libuv loop. Each wait ends on a
 * message or fails at a deadline. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "agent.h"

#include "loom/codec.h"
#include "loom/err.h"
#include "loom/log.h"
#include "loom/util.h"
#include "loom/zsock.h"

#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define AGENT_NAME "agent-test"
#define WAIT_MS 10000
#define HB_MS 30

typedef struct {
    uv_loop_t loop;
    uv_timer_t deadline;
    void *zctx;
    loom_zsock_t *router;
    char endpoint[256];
    char tmp[PATH_MAX];
    const char *labels[2];
    loom_agent_config_t cfg;
    loom_agent_t *agent;
    loom_msg_t **msgs; /* everything the agent sent, in order */
    size_t n_msgs;
    size_t cursor; /* wait_msg looks from here */
    bool stopped;
    bool router_closed;
} fx_t;

static void on_router_message(void *ud, zmq_msg_t *parts, size_t nparts)
{
    fx_t *f = ud;
    char why[256];
    loom_msg_t *m;
    assert_int_equal(nparts, 2);
    assert_int_equal(zmq_msg_size(&parts[0]), strlen(AGENT_NAME));
    assert_memory_equal(zmq_msg_data(&parts[0]), AGENT_NAME, strlen(AGENT_NAME));
    if (loom_codec_decode(zmq_msg_data(&parts[1]), zmq_msg_size(&parts[1]), &m, why, sizeof why))
        fail_msg("agent sent an invalid message: %s", why);
    f->msgs = loom_xrealloc(f->msgs, (f->n_msgs + 1) * sizeof *f->msgs);
    f->msgs[f->n_msgs++] = m;
    uv_stop(&f->loop);
}

static void on_deadline_timer(uv_timer_t *handle)
{
    fx_t *f = handle->data;
    uv_stop(&f->loop);
}

/* One loop iteration, at most ms long. */
static void run_once(fx_t *f, uint64_t ms)
{
    uv_timer_start(&f->deadline, on_deadline_timer, ms, 0);
    uv_run(&f->loop, UV_RUN_ONCE);
    uv_timer_stop(&f->deadline);
}

typedef bool (*msg_pred)(const loom_msg_t *m, uint64_t arg);

/* The next message of kind (and matching pred) from the cursor on; the
 * cursor moves past it. Fails the test after ms. */
static const loom_msg_t *wait_msg_for(fx_t *f, Loom__Envelope__BodyCase kind, msg_pred pred,
                                      uint64_t arg, uint64_t ms)
{
    uint64_t end = loom_mono_ms() + ms;
    for (;;) {
        for (; f->cursor < f->n_msgs; f->cursor++) {
            const loom_msg_t *m = f->msgs[f->cursor];
            if (m->body_case == kind && (!pred || pred(m, arg))) {
                f->cursor++;
                return m;
            }
        }
        uint64_t now = loom_mono_ms();
        if (now >= end)
            fail_msg("no %s message within %llu ms", loom_codec_kind_name(kind),
                     (unsigned long long)ms);
        run_once(f, end - now);
    }
}

static const loom_msg_t *wait_msg(fx_t *f, Loom__Envelope__BodyCase kind, msg_pred pred,
                                  uint64_t arg)
{
    return wait_msg_for(f, kind, pred, arg, WAIT_MS);
}

/* The next message of any kind. */
static const loom_msg_t *next_msg(fx_t *f)
{
    uint64_t end = loom_mono_ms() + WAIT_MS;
    while (f->cursor == f->n_msgs) {
        uint64_t now = loom_mono_ms();
        if (now >= end) fail_msg("no message within %d ms", WAIT_MS);
        run_once(f, end - now);
    }
    return f->msgs[f->cursor++];
}

static bool heartbeat_seq_is(const loom_msg_t *m, uint64_t seq)
{
    return m->heartbeat->dispatch_seq == seq;
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
        return false;
    }
}

static const loom_msg_t *find_since(const fx_t *f, size_t from, Loom__Envelope__BodyCase kind,
                                    uint64_t id)
{
    for (size_t i = from; i < f->n_msgs; i++)
        if (f->msgs[i]->body_case == kind && for_attempt(f->msgs[i], id)) return f->msgs[i];
    return NULL;
}

static size_t count_since(const fx_t *f, size_t from, Loom__Envelope__BodyCase kind, uint64_t id)
{
    size_t n = 0;
    for (size_t i = from; i < f->n_msgs; i++)
        n += f->msgs[i]->body_case == kind && for_attempt(f->msgs[i], id);
    return n;
}

static bool holds(const uint64_t *ids, size_t n, uint64_t id)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] == id) return true;
    return false;
}

/* --- what the fake loomd sends --- */

static void send_raw(fx_t *f, const void *data, size_t len)
{
    const void *parts[2] = {AGENT_NAME, data};
    size_t lens[2] = {strlen(AGENT_NAME), len};
    assert_int_equal(loom_zsock_send(f->router, parts, lens, 2), 0);
}

static void send_msg(fx_t *f, loom_msg_t *m)
{
    uint8_t *data;
    size_t len;
    assert_int_equal(loom_codec_encode(m, &data, &len), 0);
    send_raw(f, data, len);
    free(data);
}

static void send_welcome(fx_t *f, uint32_t timeout_ms, uint64_t *cancel, size_t n_cancel)
{
    Loom__Welcome w = LOOM__WELCOME__INIT;
    w.heartbeat_ms = HB_MS;
    w.timeout_ms = timeout_ms;
    w.cancel = cancel;
    w.n_cancel = n_cancel;
    loom_msg_t m = LOOM__ENVELOPE__INIT;
    m.body_case = LOOM__ENVELOPE__BODY_WELCOME;
    m.welcome = &w;
    send_msg(f, &m);
}

static void send_dispatch(fx_t *f, Loom__Dispatch *d)
{
    loom_msg_t m = LOOM__ENVELOPE__INIT;
    m.body_case = LOOM__ENVELOPE__BODY_DISPATCH;
    m.dispatch = d;
    send_msg(f, &m);
}

static void dispatch_shell(fx_t *f, uint64_t id, uint64_t seq, const char *shell,
                           uint64_t timeout_ms)
{
    Loom__Dispatch d = LOOM__DISPATCH__INIT;
    d.attempt_id = id;
    d.run_id = 1;
    d.pipeline = "pipe";
    d.task = "task";
    d.shell = (char *)shell;
    d.seq = seq;
    d.timeout_ms = timeout_ms;
    d.attempt_number = 1;
    send_dispatch(f, &d);
}

static void send_log_ack(fx_t *f, uint64_t id, uint64_t seq)
{
    Loom__LogAck ack = LOOM__LOG_ACK__INIT;
    ack.attempt_id = id;
    ack.seq = seq;
    loom_msg_t m = LOOM__ENVELOPE__INIT;
    m.body_case = LOOM__ENVELOPE__BODY_LOG_ACK;
    m.log_ack = &ack;
    send_msg(f, &m);
}

static void send_finished_ack(fx_t *f, uint64_t id)
{
    Loom__FinishedAck ack = LOOM__FINISHED_ACK__INIT;
    ack.attempt_id = id;
    loom_msg_t m = LOOM__ENVELOPE__INIT;
    m.body_case = LOOM__ENVELOPE__BODY_FINISHED_ACK;
    m.finished_ack = &ack;
    send_msg(f, &m);
}

static void send_cancel(fx_t *f, uint64_t id, const char *reason)
{
    Loom__Cancel c = LOOM__CANCEL__INIT;
    c.attempt_id = id;
    c.reason = (char *)reason;
    loom_msg_t m = LOOM__ENVELOPE__INIT;
    m.body_case = LOOM__ENVELOPE__BODY_CANCEL;
    m.cancel = &c;
    send_msg(f, &m);
}

static void send_hello_required(fx_t *f)
{
    Loom__Error e = LOOM__ERROR__INIT;
    e.code = 1;
    e.message = "who are you?";
    e.hello_required = true;
    loom_msg_t m = LOOM__ENVELOPE__INIT;
    m.body_case = LOOM__ENVELOPE__BODY_ERROR;
    m.error = &e;
    send_msg(f, &m);
}

/* --- fixture --- */

static int setup(void **state)
{
    fx_t *f = loom_xcalloc(1, sizeof *f);
    const char *base = getenv("TMPDIR");
    snprintf(f->tmp, sizeof f->tmp, "%s/loom-test-agent-XXXXXX", base && *base ? base : "/tmp");
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
    assert_non_null(f->router);
    assert_int_equal(loom_zsock_start(f->router), 0);
    f->labels[0] = "zone=eu";
    f->labels[1] = "gpu=none";
    f->cfg = (loom_agent_config_t){
        .name = AGENT_NAME,
        .server = f->endpoint,
        .work_dir = f->tmp,
        .slots = 2,
        .labels = f->labels,
        .n_labels = 2,
        .hello_interval_ms = 50,
        .kill_grace_ms = 2000,
        .zmq_ctx = f->zctx,
    };
    loom_log_set_level(LOOM_LOG_WARN);
    *state = f;
    return 0;
}

static void start_agent(fx_t *f)
{
    f->agent = loom_agent_new(&f->loop, &f->cfg);
    assert_int_equal(loom_agent_start(f->agent), 0);
}

static void on_agent_stopped(void *ud)
{
    fx_t *f = ud;
    f->stopped = true;
    uv_stop(&f->loop);
}

static void stop_agent(fx_t *f)
{
    uint64_t end = loom_mono_ms() + WAIT_MS;
    loom_agent_stop(f->agent, on_agent_stopped, f);
    while (!f->stopped) {
        uint64_t now = loom_mono_ms();
        if (now >= end) fail_msg("agent did not stop within %d ms", WAIT_MS);
        run_once(f, end - now);
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
    free(f->msgs);
    nftw(f->tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

/* Starts the agent and answers its Hello. */
static const loom_msg_t *start_welcomed(fx_t *f, uint32_t timeout_ms)
{
    start_agent(f);
    const loom_msg_t *hello = wait_msg(f, LOOM__ENVELOPE__BODY_HELLO, NULL, 0);
    send_welcome(f, timeout_ms, NULL, 0);
    wait_msg(f, LOOM__ENVELOPE__BODY_HEARTBEAT, NULL, 0);
    assert_true(loom_agent_welcomed(f->agent));
    return hello;
}

/* Asks for a Hello and answers it: the agent resends what is unacked, then
 * heartbeats. Returns the index of the first message after the Welcome and
 * the Hello in *hello. Heartbeats stop while the agent is unwelcomed, so
 * the next heartbeat comes after any resend. */
static size_t rewelcome(fx_t *f, const loom_msg_t **hello)
{
    send_hello_required(f);
    const loom_msg_t *h = wait_msg(f, LOOM__ENVELOPE__BODY_HELLO, NULL, 0);
    if (hello) *hello = h;
    size_t from = f->n_msgs;
    send_welcome(f, 10000, NULL, 0);
    wait_msg(f, LOOM__ENVELOPE__BODY_HEARTBEAT, NULL, 0);
    return from;
}

/* --- tests --- */

static void test_hello_contents_and_resend(void **state)
{
    fx_t *f = *state;
    start_agent(f);
    const loom_msg_t *m = wait_msg(f, LOOM__ENVELOPE__BODY_HELLO, NULL, 0);
    const Loom__Hello *h = m->hello;
    assert_string_equal(h->name, AGENT_NAME);
    assert_string_equal(h->agent_version, LOOM_VERSION);
    assert_int_equal(h->session.len, LOOM_AGENT_SESSION_LEN);
    assert_memory_equal(h->session.data, loom_agent_session(f->agent), LOOM_AGENT_SESSION_LEN);
    assert_non_null(h->resources);
    assert_true(h->resources->cpus >= 1);
    assert_true(h->resources->memory_bytes > 0);
    assert_int_equal(h->resources->slots, 2);
    assert_int_equal(h->resources->n_labels, 2);
    assert_string_equal(h->resources->labels[0]->key, "zone");
    assert_string_equal(h->resources->labels[0]->value, "eu");
    assert_string_equal(h->resources->labels[1]->key, "gpu");
    assert_string_equal(h->resources->labels[1]->value, "none");
    assert_int_equal(h->n_attempts, 0);
    assert_true(h->hostname[0] != '\0');
    assert_false(loom_agent_welcomed(f->agent));
    /* Unanswered, it is sent again, from the same session. */
    const loom_msg_t *again = wait_msg(f, LOOM__ENVELOPE__BODY_HELLO, NULL, 0);
    assert_memory_equal(again->hello->session.data, h->session.data, LOOM_AGENT_SESSION_LEN);
}

static void test_heartbeats_echo_dispatch_seq_and_held(void **state)
{
    fx_t *f = *state;
    start_welcomed(f, 10000);
    const loom_msg_t *hb = wait_msg(f, LOOM__ENVELOPE__BODY_HEARTBEAT, NULL, 0);
    assert_int_equal(hb->heartbeat->dispatch_seq, 0);
    assert_int_equal(hb->heartbeat->n_attempts, 0);
    dispatch_shell(f, 101, 7, "exec sleep 60", 0);
    const loom_msg_t *st = wait_msg(f, LOOM__ENVELOPE__BODY_STARTED, NULL, 0);
    assert_int_equal(st->started->attempt_id, 101);
    assert_true(st->started->pid > 0);
    hb = wait_msg(f, LOOM__ENVELOPE__BODY_HEARTBEAT, heartbeat_seq_is, 7);
    assert_int_equal(hb->heartbeat->running, 1);
    assert_int_equal(hb->heartbeat->n_attempts, 1);
    assert_int_equal(hb->heartbeat->attempts[0], 101);
    assert_true(hb->heartbeat->sent_unix_ms > 0);
    /* A new Welcome starts the echo again from 0. */
    send_welcome(f, 10000, NULL, 0);
    hb = wait_msg(f, LOOM__ENVELOPE__BODY_HEARTBEAT, heartbeat_seq_is, 0);
    assert_true(holds(hb->heartbeat->attempts, hb->heartbeat->n_attempts, 101));
}

static void test_dispatch_streams_output_then_finished(void **state)
{
    fx_t *f = *state;
    start_welcomed(f, 10000);
    size_t from = f->n_msgs;
    dispatch_shell(f, 5, 1, "seq 1 30000; echo done >&2; exit 3", 0);
    const loom_msg_t *fin = wait_msg(f, LOOM__ENVELOPE__BODY_FINISHED, for_attempt, 5);
    assert_int_equal(fin->finished->exit_code, 3);
    assert_int_equal(fin->finished->signal, 0);
    assert_string_equal(fin->finished->error, "");
    assert_true(fin->finished->ended_unix_ms >= fin->finished->started_unix_ms);
    assert_true(fin->finished->max_rss_bytes > 0);

    loom_buf_t want = {0}, out = {0}, err = {0};
    for (int i = 1; i <= 30000; i++) loom_buf_printf(&want, "%d\n", i);
    uint64_t seq = 0;
    bool started = false;
    for (size_t i = from; f->msgs[i] != fin; i++) {
        const loom_msg_t *m = f->msgs[i];
        if (m->body_case == LOOM__ENVELOPE__BODY_STARTED) started = true;
        if (m->body_case != LOOM__ENVELOPE__BODY_LOG) continue;
        assert_true(started); /* Started comes first */
        assert_int_equal(m->log->attempt_id, 5);
        assert_int_equal(m->log->seq, ++seq); /* consecutive over both streams */
        assert_true(m->log->data.len > 0 && m->log->data.len <= LOOM_LOG_CHUNK_MAX);
        loom_buf_append(m->log->stream == LOOM__STREAM__STREAM_STDERR ? &err : &out,
                        m->log->data.data, m->log->data.len);
    }
    assert_true(seq >= 2);
    assert_int_equal(fin->finished->log_seq, seq);
    assert_int_equal(out.len, want.len);
    assert_string_equal(out.data, want.data);
    assert_string_equal(err.data, "done\n");
    /* Acked, the attempt is no longer held. */
    send_log_ack(f, 5, seq);
    send_finished_ack(f, 5);
    send_welcome(f, 10000, NULL, 0);
    const loom_msg_t *hb = wait_msg(f, LOOM__ENVELOPE__BODY_HEARTBEAT, heartbeat_seq_is, 0);
    assert_int_equal(hb->heartbeat->n_attempts, 0);
    assert_int_equal(loom_agent_unacked_bytes(f->agent), 0);
    loom_buf_free(&want);
    loom_buf_free(&out);
    loom_buf_free(&err);
}

static void test_task_environment_and_folder(void **state)
{
    fx_t *f = *state;
    start_welcomed(f, 10000);
    Loom__EnvVar foo = LOOM__ENV_VAR__INIT, evil = LOOM__ENV_VAR__INIT;
    foo.name = "FOO";
    foo.value = "bar baz";
    evil.name = "LOOM_TASK";
    evil.value = "not-mine";
    Loom__EnvVar *env[] = {&foo, &evil};
    static const char script[] =
        "env | grep -E '^(FOO|LOOM_(ATTEMPT|ATTEMPT_ID|RUN_ID|TASK|PIPELINE|WORK_DIR))=' "
        "| sort; pwd -P";
    char *argv[] = {"sh", "-c", (char *)script};
    Loom__Dispatch d = LOOM__DISPATCH__INIT;
    d.attempt_id = 9;
    d.run_id = 77;
    d.pipeline = "nightly";
    d.task = "train";
    d.argv = argv;
    d.n_argv = 3;
    d.env = env;
    d.n_env = 2;
    d.seq = 1;
    d.attempt_number = 3;
    send_dispatch(f, &d);
    wait_msg(f, LOOM__ENVELOPE__BODY_FINISHED, for_attempt, 9);
    loom_buf_t out = {0};
    for (size_t i = 0; i < f->n_msgs; i++)
        if (f->msgs[i]->body_case == LOOM__ENVELOPE__BODY_LOG)
            loom_buf_append(&out, f->msgs[i]->log->data.data, f->msgs[i]->log->data.len);
    char *real = realpath(f->tmp, NULL);
    char *want = loom_xasprintf("FOO=bar baz\nLOOM_ATTEMPT=3\nLOOM_ATTEMPT_ID=9\n"
                                "LOOM_PIPELINE=nightly\nLOOM_RUN_ID=77\nLOOM_TASK=train\n"
                                "LOOM_WORK_DIR=%s/attempts/9\n%s/attempts/9\n",
                                real, real);
    assert_string_equal(out.data, want);
    free(want);
    free(real);
    loom_buf_free(&out);
}

static void test_finished_resent_until_acked(void **state)
{
    fx_t *f = *state;
    start_welcomed(f, 10000);
    dispatch_shell(f, 12, 1, "exit 4", 0);
    const loom_msg_t *fin = wait_msg(f, LOOM__ENVELOPE__BODY_FINISHED, for_attempt, 12);
    assert_int_equal(fin->finished->exit_code, 4);
    const loom_msg_t *hello;
    size_t from = rewelcome(f, &hello);
    assert_true(holds(hello->hello->attempts, hello->hello->n_attempts, 12));
    assert_int_equal(count_since(f, from, LOOM__ENVELOPE__BODY_FINISHED, 12), 1);
    fin = find_since(f, from, LOOM__ENVELOPE__BODY_FINISHED, 12);
    assert_int_equal(fin->finished->exit_code, 4);

    send_finished_ack(f, 12);
    from = rewelcome(f, &hello);
    assert_int_equal(hello->hello->n_attempts, 0);
    assert_int_equal(count_since(f, from, LOOM__ENVELOPE__BODY_FINISHED, 12), 0);
}

static void test_unacked_chunks_resent_after_welcome(void **state)
{
    fx_t *f = *state;
    start_welcomed(f, 10000);
    size_t from = f->n_msgs;
    dispatch_shell(f, 21, 1, "printf abc; printf def >&2; printf ghi", 0);
    wait_msg(f, LOOM__ENVELOPE__BODY_FINISHED, for_attempt, 21);
    send_finished_ack(f, 21);
    size_t first = count_since(f, from, LOOM__ENVELOPE__BODY_LOG, 21);
    assert_true(first >= 2);
    const loom_msg_t *orig[16];
    size_t n = 0;
    for (size_t i = from; i < f->n_msgs && n < 16; i++)
        if (f->msgs[i]->body_case == LOOM__ENVELOPE__BODY_LOG) orig[n++] = f->msgs[i];

    size_t again = rewelcome(f, NULL);
    size_t k = 0;
    for (size_t i = again; i < f->n_msgs; i++) {
        const loom_msg_t *m = f->msgs[i];
        if (m->body_case != LOOM__ENVELOPE__BODY_LOG) continue;
        assert_true(k < n);
        assert_int_equal(m->log->seq, orig[k]->log->seq);
        assert_int_equal(m->log->stream, orig[k]->log->stream);
        assert_int_equal(m->log->data.len, orig[k]->log->data.len);
        assert_memory_equal(m->log->data.data, orig[k]->log->data.data, m->log->data.len);
        k++;
    }
    assert_int_equal(k, n);

    /* Acking up to a seq drops those chunks only. */
    send_log_ack(f, 21, orig[0]->log->seq);
    again = rewelcome(f, NULL);
    assert_int_equal(count_since(f, again, LOOM__ENVELOPE__BODY_LOG, 21), n - 1);
    send_log_ack(f, 21, orig[n - 1]->log->seq);
    again = rewelcome(f, NULL);
    assert_int_equal(count_since(f, again, LOOM__ENVELOPE__BODY_LOG, 21), 0);
    assert_int_equal(loom_agent_unacked_bytes(f->agent), 0);
}

static void test_hello_required_keeps_session(void **state)
{
    fx_t *f = *state;
    const loom_msg_t *first = start_welcomed(f, 10000);
    send_hello_required(f);
    const loom_msg_t *again = wait_msg(f, LOOM__ENVELOPE__BODY_HELLO, NULL, 0);
    assert_false(loom_agent_welcomed(f->agent));
    assert_int_equal(again->hello->session.len, LOOM_AGENT_SESSION_LEN);
    assert_memory_equal(again->hello->session.data, first->hello->session.data,
                        LOOM_AGENT_SESSION_LEN);
}

static void test_cancel_kills_promptly(void **state)
{
    fx_t *f = *state;
    start_welcomed(f, 10000);
    dispatch_shell(f, 31, 1, "exec sleep 60", 0);
    wait_msg(f, LOOM__ENVELOPE__BODY_STARTED, for_attempt, 31);
    uint64_t t0 = loom_mono_ms();
    send_cancel(f, 31, "user asked");
    /* Well inside the 2 s grace: SIGTERM did it. */
    const loom_msg_t *fin = wait_msg_for(f, LOOM__ENVELOPE__BODY_FINISHED, for_attempt, 31, 1500);
    assert_true(loom_mono_ms() - t0 < 1500);
    assert_true(fin->finished->cancelled);
    assert_false(fin->finished->timed_out);
    assert_int_equal(fin->finished->signal, SIGTERM);
    assert_string_equal(fin->finished->error, "cancelled: user asked");
    assert_int_equal(loom_agent_running(f->agent), 0);
}

static void test_cancel_after_finish_drops_result(void **state)
{
    fx_t *f = *state;
    start_welcomed(f, 10000);
    dispatch_shell(f, 32, 1, "true", 0);
    wait_msg(f, LOOM__ENVELOPE__BODY_FINISHED, for_attempt, 32);
    send_cancel(f, 32, "too late");
    const loom_msg_t *hello;
    size_t from = rewelcome(f, &hello);
    assert_int_equal(hello->hello->n_attempts, 0);
    assert_int_equal(count_since(f, from, LOOM__ENVELOPE__BODY_FINISHED, 32), 0);
}

static void test_timeout_reports_timed_out(void **state)
{
    fx_t *f = *state;
    start_welcomed(f, 10000);
    dispatch_shell(f, 41, 1, "exec sleep 60", 200);
    const loom_msg_t *fin = wait_msg(f, LOOM__ENVELOPE__BODY_FINISHED, for_attempt, 41);
    assert_true(fin->finished->timed_out);
    assert_false(fin->finished->cancelled);
    assert_int_equal(fin->finished->signal, SIGTERM);
    assert_string_equal(fin->finished->error, "timed out after 0.200s");
}

static void test_no_free_slot_and_duplicates(void **state)
{
    fx_t *f = *state;
    start_welcomed(f, 10000);
    dispatch_shell(f, 51, 1, "exec sleep 60", 0);
    dispatch_shell(f, 51, 2, "exec sleep 60", 0); /* duplicate: ignored */
    dispatch_shell(f, 52, 3, "exec sleep 60", 0);
    dispatch_shell(f, 53, 4, "exec sleep 60", 0); /* slots = 2 */
    const loom_msg_t *fin = wait_msg(f, LOOM__ENVELOPE__BODY_FINISHED, for_attempt, 53);
    assert_int_equal(fin->finished->exit_code, -1);
    assert_string_equal(fin->finished->error, "agent " AGENT_NAME " has no free slot");
    const loom_msg_t *hb = wait_msg(f, LOOM__ENVELOPE__BODY_HEARTBEAT, heartbeat_seq_is, 4);
    assert_int_equal(hb->heartbeat->running, 2);
    assert_int_equal(count_since(f, 0, LOOM__ENVELOPE__BODY_STARTED, 51), 1);
    assert_int_equal(count_since(f, 0, LOOM__ENVELOPE__BODY_STARTED, 52), 1);
    assert_int_equal(count_since(f, 0, LOOM__ENVELOPE__BODY_STARTED, 53), 0);
    assert_int_equal(count_since(f, 0, LOOM__ENVELOPE__BODY_FINISHED, 51), 0);
}

static bool heartbeat_idle(const loom_msg_t *m, uint64_t arg)
{
    (void)arg;
    return m->heartbeat->running == 0 && m->heartbeat->n_attempts == 0;
}

static void test_welcome_cancel_forgets(void **state)
{
    fx_t *f = *state;
    start_welcomed(f, 10000);
    dispatch_shell(f, 61, 1, "echo out; exec sleep 60", 0);
    wait_msg(f, LOOM__ENVELOPE__BODY_LOG, for_attempt, 61);
    send_hello_required(f);
    const loom_msg_t *hello = wait_msg(f, LOOM__ENVELOPE__BODY_HELLO, NULL, 0);
    assert_true(holds(hello->hello->attempts, hello->hello->n_attempts, 61));
    size_t from = f->n_msgs;
    uint64_t cancel[] = {61};
    send_welcome(f, 10000, cancel, 1);
    wait_msg(f, LOOM__ENVELOPE__BODY_HEARTBEAT, heartbeat_idle, 0);
    /* Killed and forgotten: no result, and its chunks are not resent. */
    assert_int_equal(count_since(f, from, LOOM__ENVELOPE__BODY_FINISHED, 61), 0);
    assert_int_equal(count_since(f, from, LOOM__ENVELOPE__BODY_LOG, 61), 0);
    assert_int_equal(loom_agent_unacked_bytes(f->agent), 0);
}

static void test_garbage_does_not_crash(void **state)
{
    fx_t *f = *state;
    start_welcomed(f, 10000);
    send_raw(f, "\xff\x00garbage\x01", 10);
    /* version 1 and a body field (99) no version of loom knows */
    static const uint8_t unknown[] = {0x08, 0x01, 0x9a, 0x06, 0x02, 0x08, 0x01};
    send_raw(f, unknown, sizeof unknown);
    static const uint8_t wrong_version[] = {0x08, 0x63};
    send_raw(f, wrong_version, sizeof wrong_version);
    send_raw(f, "", 0);
    const void *parts[3] = {AGENT_NAME, "a", "b"};
    size_t lens[3] = {strlen(AGENT_NAME), 1, 1};
    assert_int_equal(loom_zsock_send(f->router, parts, lens, 3), 0);
    /* A kind the agent never receives */
    Loom__Started st = LOOM__STARTED__INIT;
    st.attempt_id = 1;
    loom_msg_t m = LOOM__ENVELOPE__INIT;
    m.body_case = LOOM__ENVELOPE__BODY_STARTED;
    m.started = &st;
    send_msg(f, &m);
    dispatch_shell(f, 71, 1, "echo alive", 0);
    const loom_msg_t *log = wait_msg(f, LOOM__ENVELOPE__BODY_LOG, for_attempt, 71);
    assert_int_equal(log->log->data.len, 6);
    assert_memory_equal(log->log->data.data, "alive\n", 6);
    const loom_msg_t *fin = wait_msg(f, LOOM__ENVELOPE__BODY_FINISHED, for_attempt, 71);
    assert_int_equal(fin->finished->exit_code, 0);
    assert_true(loom_agent_welcomed(f->agent));
}

static void test_silent_loomd_means_hello_again(void **state)
{
    fx_t *f = *state;
    start_welcomed(f, 150);
    uint64_t t0 = loom_mono_ms();
    wait_msg(f, LOOM__ENVELOPE__BODY_HELLO, NULL, 0);
    assert_true(loom_mono_ms() - t0 >= 100);
    assert_false(loom_agent_welcomed(f->agent));
}

static void test_backpressure_pauses_without_loss(void **state)
{
    fx_t *f = *state;
    enum { TOTAL = 600000, LIMIT = 16384 };
    f->cfg.max_unacked_bytes = LIMIT;
    start_welcomed(f, 10000);
    dispatch_shell(f, 81, 1, "yes 0123456789abcdef | head -c 600000", 0);
    loom_buf_t got = {0};
    uint64_t last = 0;
    while (got.len <= LIMIT) {
        const loom_msg_t *m = wait_msg(f, LOOM__ENVELOPE__BODY_LOG, for_attempt, 81);
        loom_buf_append(&got, m->log->data.data, m->log->data.len);
        last = m->log->seq;
    }
    /* Unacked, the agent stops reading: a few heartbeats later little more
     * has come, and the task has not been able to finish. */
    for (int i = 0; i < 5; i++) wait_msg(f, LOOM__ENVELOPE__BODY_HEARTBEAT, NULL, 0);
    assert_true(loom_agent_output_paused(f->agent));
    size_t held = 0;
    for (size_t i = 0; i < f->n_msgs; i++)
        if (f->msgs[i]->body_case == LOOM__ENVELOPE__BODY_LOG) held += f->msgs[i]->log->data.len;
    assert_true(held < LIMIT + 2 * 65536);
    assert_int_equal(count_since(f, 0, LOOM__ENVELOPE__BODY_FINISHED, 81), 0);
    /* Ack as we go and everything arrives, in order. */
    send_log_ack(f, 81, last);
    const loom_msg_t *fin = NULL;
    while (!fin) {
        const loom_msg_t *m = next_msg(f);
        if (m->body_case == LOOM__ENVELOPE__BODY_FINISHED) fin = m;
        if (m->body_case != LOOM__ENVELOPE__BODY_LOG) continue;
        assert_int_equal(m->log->seq, ++last);
        loom_buf_append(&got, m->log->data.data, m->log->data.len);
        send_log_ack(f, 81, m->log->seq);
    }
    assert_int_equal(fin->finished->exit_code, 0);
    assert_int_equal(got.len, TOTAL);
    for (size_t i = 0; i < got.len; i++)
        assert_int_equal(got.data[i], "0123456789abcdef\n"[i % 17]);
    loom_buf_free(&got);
}

static void test_stop_kills_running_tasks(void **state)
{
    fx_t *f = *state;
    start_welcomed(f, 10000);
    dispatch_shell(f, 91, 1, "exec sleep 60", 0);
    const loom_msg_t *st = wait_msg(f, LOOM__ENVELOPE__BODY_STARTED, for_attempt, 91);
    uint64_t t0 = loom_mono_ms();
    stop_agent(f);
    assert_true(loom_mono_ms() - t0 < 1500); /* SIGTERM, not the grace period */
    char path[64];
    snprintf(path, sizeof path, "/proc/%u", st->started->pid);
    assert_int_equal(access(path, F_OK), -1); /* killed and reaped */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_hello_contents_and_resend, setup, teardown),
        cmocka_unit_test_setup_teardown(test_heartbeats_echo_dispatch_seq_and_held, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_dispatch_streams_output_then_finished, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_task_environment_and_folder, setup, teardown),
        cmocka_unit_test_setup_teardown(test_finished_resent_until_acked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unacked_chunks_resent_after_welcome, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hello_required_keeps_session, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_kills_promptly, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_after_finish_drops_result, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout_reports_timed_out, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_free_slot_and_duplicates, setup, teardown),
        cmocka_unit_test_setup_teardown(test_welcome_cancel_forgets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_garbage_does_not_crash, setup, teardown),
        cmocka_unit_test_setup_teardown(test_silent_loomd_means_hello_again, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backpressure_pauses_without_loss, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_kills_running_tasks, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
