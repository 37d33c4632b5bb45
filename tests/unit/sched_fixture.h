/* A loomd scheduler in-process against fake agents: real ZeroMQ DEALER
 * sockets speaking the wire protocol by hand. Shared by the scheduler's
 * unit tests (each includes it once). */
#ifndef LOOM_TEST_SCHED_FIXTURE_H
#define LOOM_TEST_SCHED_FIXTURE_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "loom/codec.h"
#include "loom/err.h"
#include "loom/util.h"
#include "sched_internal.h"

/* Each test uses the helpers it needs. */
#pragma GCC diagnostic ignored "-Wunused-function"

typedef struct {
    uv_loop_t loop;
    loom_sched_t *s;
    void *zctx;
    char endpoint[256];
    char dir[64];
    void *socks[16]; /* fake agents, closed by teardown (also after a failure) */
    size_t n_socks;
    bool curve;    /* run as loomd does (CURVE); else plaintext for raw DEALERs */
    bool skip_zap; /* fault: no ZAP handler */
} fixture_t;

/* Opens f's scheduler (again) in f->dir; wall: an injected wall clock, or
 * NULL for the real one. */
static void fixture_start(fixture_t *f, const char *const *pools, size_t n_pools,
                          const loom_clock_t *wall)
{
    loom_sched_config_t cfg = {.state_dir = f->dir,
                               .bind = "tcp://127.0.0.1:*",
                               .heartbeat_ms = 100,
                               .agent_timeout_ms = 5000,
                               .zmq_ctx = f->zctx,
                               .insecure_plaintext = !f->curve,
                               .fault_skip_zap = f->skip_zap,
                               .pools = pools,
                               .n_pools = n_pools,
                               .wall = wall ? *wall : (loom_clock_t){0}};
    char why[256];
    f->s = loom_sched_new(&f->loop, &cfg);
    int rc = loom_sched_open(f->s, why, sizeof why);
    if (rc == 0) rc = loom_sched_bind(f->s, f->endpoint, sizeof f->endpoint, why, sizeof why);
    if (rc) print_error("scheduler did not start: %s (%s)\n", why, loom_errname(rc));
    assert_int_equal(rc, 0);
}

/* A scheduler in a temporary folder, on its own loop, bound to an
 * OS-picked port; pools as loomd's --pool takes them. */
static fixture_t *fixture_open(const char *const *pools, size_t n_pools)
{
    fixture_t *f = loom_xcalloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/loom-sched-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    uv_loop_init(&f->loop);
    f->zctx = zmq_ctx_new();
    fixture_start(f, pools, n_pools, NULL);
    return f;
}

static void on_closed(void *ud);

/* Closes the scheduler as loomd does on exit, keeping its folder. */
static void fixture_stop(fixture_t *f)
{
    loom_sched_close(f->s, on_closed, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    loom_sched_destroy(&f->s);
}

static int setup(void **state)
{
    *state = fixture_open(NULL, 0);
    return 0;
}

static void on_closed(void *ud)
{
    (void)ud;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    for (size_t i = 0; i < f->n_socks; i++) zmq_close(f->socks[i]);
    if (f->s) fixture_stop(f);
    uv_loop_close(&f->loop);
    zmq_ctx_term(f->zctx);
    nftw(f->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static void *dealer(fixture_t *f, const char *name)
{
    void *d = zmq_socket(f->zctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(d, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(d, ZMQ_ROUTING_ID, name, strlen(name));
    assert_int_equal(zmq_connect(d, f->endpoint), 0);
    assert_true(f->n_socks < sizeof f->socks / sizeof f->socks[0]);
    f->socks[f->n_socks++] = d;
    return d;
}

static void send_raw(void *d, const void *data, size_t len)
{
    assert_true(zmq_send(d, data, len, 0) >= 0);
}

static void send_msg(void *d, loom_msg_t *m)
{
    uint8_t *buf;
    size_t len;
    assert_int_equal(loom_codec_encode(m, &buf, &len), 0);
    send_raw(d, buf, len);
    free(buf);
}

/* Turns the scheduler's loop until the fake agent receives a message, and
 * returns it; NULL once the monotonic clock reaches end. */
static loom_msg_t *recv_until(fixture_t *f, void *d, uint64_t end)
{
    while (loom_mono_ms() < end) {
        uv_run(&f->loop, UV_RUN_NOWAIT);
        zmq_pollitem_t it = {d, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 5) <= 0) continue;
        zmq_msg_t m;
        zmq_msg_init(&m);
        assert_true(zmq_msg_recv(&m, d, 0) >= 0);
        loom_msg_t *msg = NULL;
        char why[128];
        assert_int_equal(
            loom_codec_decode(zmq_msg_data(&m), zmq_msg_size(&m), &msg, why, sizeof why), 0);
        zmq_msg_close(&m);
        return msg;
    }
    return NULL;
}

/* The next message for the fake agent, whatever its kind; fails after 5 s. */
static loom_msg_t *next_msg(fixture_t *f, void *d)
{
    loom_msg_t *msg = recv_until(f, d, loom_mono_ms() + 5000);
    if (!msg) fail_msg("nothing arrived");
    return msg;
}

/* The next message of the wanted kind (others are skipped); fails after
 * 5 s. */
static loom_msg_t *expect(fixture_t *f, void *d, Loom__Envelope__BodyCase kind)
{
    uint64_t end = loom_mono_ms() + 5000;
    loom_msg_t *msg;
    while ((msg = recv_until(f, d, end)) != NULL) {
        if (msg->body_case == kind) return msg;
        loom_codec_free(msg);
    }
    fail_msg("no %s arrived", loom_codec_kind_name(kind));
    return NULL;
}

/* Sends the Hello of the agent called name (its session follows from the
 * name, so a second Hello comes from the same agent process), holding the
 * attempts in held. */
static void send_hello_holding(void *d, const char *name, Loom__Resources *res, uint64_t *held,
                               size_t n_held)
{
    Loom__Hello h = LOOM__HELLO__INIT;
    h.name = (char *)name;
    uint8_t session[16] = {1, 2, 3};
    session[15] = (uint8_t)name[0];
    h.session.data = session;
    h.session.len = sizeof session;
    h.resources = res;
    h.attempts = held;
    h.n_attempts = n_held;
    loom_msg_t m = LOOM__ENVELOPE__INIT;
    m.body_case = LOOM__ENVELOPE__BODY_HELLO;
    m.hello = &h;
    send_msg(d, &m);
}

/* Says hello with these resources (slots set from the argument). */
static void hello_with(fixture_t *f, void *d, const char *name, uint32_t slots,
                       Loom__Resources *given)
{
    Loom__Resources plain = LOOM__RESOURCES__INIT;
    Loom__Resources *res = given ? given : &plain;
    res->slots = slots;
    send_hello_holding(d, name, res, NULL, 0);
    loom_msg_t *w = expect(f, d, LOOM__ENVELOPE__BODY_WELCOME);
    assert_int_equal(w->welcome->heartbeat_ms, 100);
    loom_codec_free(w);
}

static void hello(fixture_t *f, void *d, const char *name, uint32_t slots)
{
    hello_with(f, d, name, slots, NULL);
}

#endif
