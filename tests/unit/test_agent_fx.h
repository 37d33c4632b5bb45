/* The fake loomd the agent's tests run against: a real ZeroMQ ROUTER on
 * 127.0.0.1 (port picked by the OS) driven from the same libuv loop as the
 * agent, with helpers to send what loomd sends and to wait for what the
 * agent sends. Each wait ends on a message or fails at a deadline. Shared
 * by the test_agent*.c files; not every file uses every helper. */
#ifndef LOOM_TEST_AGENT_FX_H
#define LOOM_TEST_AGENT_FX_H

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

#define FX static __attribute__((unused))

typedef struct fx fx_t;

struct fx {
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
    /* Optional, for a file whose loomd does more than record (the bundle
     * tests serve objects): on_msg sees each message as it is recorded;
     * on_turn runs before and after each loop turn a wait takes, so it can
     * answer what came in and what the test let go. ud is theirs. */
    void (*on_msg)(fx_t *f, const loom_msg_t *m);
    void (*on_turn)(fx_t *f);
    void *ud;
};

FX void on_router_message(void *ud, zmq_msg_t *parts, size_t nparts)
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
    if (f->on_msg) f->on_msg(f, m);
    uv_stop(&f->loop);
}

FX void on_deadline_timer(uv_timer_t *handle)
{
    fx_t *f = handle->data;
    uv_stop(&f->loop);
}

/* One loop iteration, at most ms long. */
FX void run_once(fx_t *f, uint64_t ms)
{
    if (f->on_turn) f->on_turn(f);
    uv_timer_start(&f->deadline, on_deadline_timer, ms, 0);
    uv_run(&f->loop, UV_RUN_ONCE);
    uv_timer_stop(&f->deadline);
    if (f->on_turn) f->on_turn(f);
}

typedef bool (*msg_pred)(const loom_msg_t *m, uint64_t arg);

/* The next message of kind (and matching pred) from the cursor on; the
 * cursor moves past it. Fails the test after ms. */
FX const loom_msg_t *wait_msg_for(fx_t *f, Loom__Envelope__BodyCase kind, msg_pred pred,
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

FX const loom_msg_t *wait_msg(fx_t *f, Loom__Envelope__BodyCase kind, msg_pred pred, uint64_t arg)
{
    return wait_msg_for(f, kind, pred, arg, WAIT_MS);
}

/* The next message of any kind. */
FX const loom_msg_t *next_msg(fx_t *f)
{
    uint64_t end = loom_mono_ms() + WAIT_MS;
    while (f->cursor == f->n_msgs) {
        uint64_t now = loom_mono_ms();
        if (now >= end) fail_msg("no message within %d ms", WAIT_MS);
        run_once(f, end - now);
    }
    return f->msgs[f->cursor++];
}

FX bool heartbeat_seq_is(const loom_msg_t *m, uint64_t seq)
{
    return m->heartbeat->dispatch_seq == seq;
}

FX bool for_attempt(const loom_msg_t *m, uint64_t id)
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

FX const loom_msg_t *find_since(const fx_t *f, size_t from, Loom__Envelope__BodyCase kind,
                                uint64_t id)
{
    for (size_t i = from; i < f->n_msgs; i++)
        if (f->msgs[i]->body_case == kind && for_attempt(f->msgs[i], id)) return f->msgs[i];
    return NULL;
}

FX size_t count_since(const fx_t *f, size_t from, Loom__Envelope__BodyCase kind, uint64_t id)
{
    size_t n = 0;
    for (size_t i = from; i < f->n_msgs; i++)
        n += f->msgs[i]->body_case == kind && for_attempt(f->msgs[i], id);
    return n;
}

FX bool holds(const uint64_t *ids, size_t n, uint64_t id)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] == id) return true;
    return false;
}

/* Everything attempt id wrote, both streams, in the order sent (the caller
 * frees). */
FX char *attempt_output(const fx_t *f, uint64_t id)
{
    loom_buf_t out = {0};
    loom_buf_puts(&out, "");
    for (size_t i = 0; i < f->n_msgs; i++)
        if (f->msgs[i]->body_case == LOOM__ENVELOPE__BODY_LOG && f->msgs[i]->log->attempt_id == id)
            loom_buf_append(&out, f->msgs[i]->log->data.data, f->msgs[i]->log->data.len);
    return loom_buf_steal(&out);
}

/* --- what the fake loomd sends --- */

FX void send_raw(fx_t *f, const void *data, size_t len)
{
    const void *parts[2] = {AGENT_NAME, data};
    size_t lens[2] = {strlen(AGENT_NAME), len};
    assert_int_equal(loom_zsock_send(f->router, parts, lens, 2), 0);
}

FX void send_msg(fx_t *f, loom_msg_t *m)
{
    uint8_t *data;
    size_t len;
    assert_int_equal(loom_codec_encode(m, &data, &len), 0);
    send_raw(f, data, len);
    free(data);
}

FX void send_welcome(fx_t *f, uint32_t timeout_ms, uint64_t *cancel, size_t n_cancel)
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

FX void send_dispatch(fx_t *f, Loom__Dispatch *d)
{
    loom_msg_t m = LOOM__ENVELOPE__INIT;
    m.body_case = LOOM__ENVELOPE__BODY_DISPATCH;
    m.dispatch = d;
    send_msg(f, &m);
}

/* The first attempt id of run 1's pipe/task, running shell: a Dispatch for
 * the caller to add to and send. */
FX Loom__Dispatch shell_dispatch(uint64_t id, uint64_t seq, const char *shell)
{
    Loom__Dispatch d = LOOM__DISPATCH__INIT;
    d.attempt_id = id;
    d.run_id = 1;
    d.pipeline = "pipe";
    d.task = "task";
    d.shell = (char *)shell;
    d.seq = seq;
    d.attempt_number = 1;
    return d;
}

FX void dispatch_shell(fx_t *f, uint64_t id, uint64_t seq, const char *shell, uint64_t timeout_ms)
{
    Loom__Dispatch d = shell_dispatch(id, seq, shell);
    d.timeout_ms = timeout_ms;
    send_dispatch(f, &d);
}

FX void send_log_ack(fx_t *f, uint64_t id, uint64_t seq)
{
    Loom__LogAck ack = LOOM__LOG_ACK__INIT;
    ack.attempt_id = id;
    ack.seq = seq;
    loom_msg_t m = LOOM__ENVELOPE__INIT;
    m.body_case = LOOM__ENVELOPE__BODY_LOG_ACK;
    m.log_ack = &ack;
    send_msg(f, &m);
}

FX void send_finished_ack(fx_t *f, uint64_t id)
{
    Loom__FinishedAck ack = LOOM__FINISHED_ACK__INIT;
    ack.attempt_id = id;
    loom_msg_t m = LOOM__ENVELOPE__INIT;
    m.body_case = LOOM__ENVELOPE__BODY_FINISHED_ACK;
    m.finished_ack = &ack;
    send_msg(f, &m);
}

FX void send_cancel(fx_t *f, uint64_t id, const char *reason)
{
    Loom__Cancel c = LOOM__CANCEL__INIT;
    c.attempt_id = id;
    c.reason = (char *)reason;
    loom_msg_t m = LOOM__ENVELOPE__INIT;
    m.body_case = LOOM__ENVELOPE__BODY_CANCEL;
    m.cancel = &c;
    send_msg(f, &m);
}

FX void send_hello_required(fx_t *f)
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

FX int setup(void **state)
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

FX void start_agent(fx_t *f)
{
    f->agent = loom_agent_new(&f->loop, &f->cfg);
    assert_int_equal(loom_agent_start(f->agent), 0);
}

FX void on_agent_stopped(void *ud)
{
    fx_t *f = ud;
    f->stopped = true;
    uv_stop(&f->loop);
}

FX void stop_agent(fx_t *f)
{
    uint64_t end = loom_mono_ms() + WAIT_MS;
    loom_agent_stop(f->agent, on_agent_stopped, f);
    while (!f->stopped) {
        uint64_t now = loom_mono_ms();
        if (now >= end) fail_msg("agent did not stop within %d ms", WAIT_MS);
        run_once(f, end - now);
    }
}

FX void on_router_closed(void *ud)
{
    fx_t *f = ud;
    f->router_closed = true;
}

FX int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

FX int teardown(void **state)
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
FX const loom_msg_t *start_welcomed(fx_t *f, uint32_t timeout_ms)
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
FX size_t rewelcome(fx_t *f, const loom_msg_t **hello)
{
    send_hello_required(f);
    const loom_msg_t *h = wait_msg(f, LOOM__ENVELOPE__BODY_HELLO, NULL, 0);
    if (hello) *hello = h;
    size_t from = f->n_msgs;
    send_welcome(f, 10000, NULL, 0);
    wait_msg(f, LOOM__ENVELOPE__BODY_HEARTBEAT, NULL, 0);
    return from;
}

#endif
