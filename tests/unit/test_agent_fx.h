/* The fake loomd the agent's tests run against: a real ZeroMQ ROUTER on
 * 127.0.0.1 (port picked by the OS) driven from the same libuv loop as the
 * agent, with helpers to send what loomd sends and to wait for what the
 * agent sends. Each wait ends on a message or fails at a deadline. Shared
 * by the test_agent*.c files; not every file uses every helper.
 *
 * Optionally (fx_store_enable) it also keeps objects as loomd does: it
 * answers FetchObject from them, and takes uploads (PutObject), answering
 * each with a PutAck, verifying the hash and storing the object at the end;
 * it counts what it received and checks the agent's window as it goes. */
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
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define AGENT_NAME "agent-test"
#define WAIT_MS 10000
#define HB_MS 30

#define FX static __attribute__((unused))

typedef struct fx fx_t;
typedef struct fx_store fx_store_t;

struct fx {
    uv_loop_t loop;
    uv_timer_t deadline;
    void *zctx;
    loom_zsock_t *router;
    char endpoint[256];
    char server_pub[41], server_sec[41]; /* the fake loomd is a CURVE server */
    uint8_t rid[256];                    /* the agent's connection, as last heard */
    size_t rid_len;
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
    /* The object store, when enabled: FetchObject and PutObject go to it
     * and are not recorded in msgs (a large upload is not kept). */
    fx_store_t *store;
};

FX bool fx_store_on_msg(fx_t *f, const loom_msg_t *m);
FX void fx_store_serve(fx_t *f);

FX void on_router_message(void *ud, zmq_msg_t *parts, size_t nparts)
{
    fx_t *f = ud;
    char why[256];
    loom_msg_t *m;
    assert_int_equal(nparts, 2);
    /* The agent sets no routing id: the connection has one ZeroMQ made. */
    f->rid_len = zmq_msg_size(&parts[0]);
    assert_true(f->rid_len > 0 && f->rid_len <= sizeof f->rid);
    memcpy(f->rid, zmq_msg_data(&parts[0]), f->rid_len);
    if (loom_codec_decode(zmq_msg_data(&parts[1]), zmq_msg_size(&parts[1]), &m, why, sizeof why))
        fail_msg("agent sent an invalid message: %s", why);
    if (f->store && fx_store_on_msg(f, m)) {
        loom_codec_free(m);
        uv_stop(&f->loop);
        return;
    }
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
    if (f->store) fx_store_serve(f);
    uv_timer_start(&f->deadline, on_deadline_timer, ms, 0);
    uv_run(&f->loop, UV_RUN_ONCE);
    uv_timer_stop(&f->deadline);
    if (f->on_turn) f->on_turn(f);
    if (f->store) fx_store_serve(f);
}

/* Runs the loop until cond(f, arg) holds; fails the test after WAIT_MS. */
FX void run_until(fx_t *f, bool (*cond)(fx_t *f, uint64_t arg), uint64_t arg, const char *what)
{
    uint64_t end = loom_mono_ms() + WAIT_MS;
    while (!cond(f, arg)) {
        uint64_t now = loom_mono_ms();
        if (now >= end) fail_msg("%s: not within %d ms", what, WAIT_MS);
        run_once(f, end - now < 50 ? end - now : 50);
    }
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
    const void *parts[2] = {f->rid, data};
    size_t lens[2] = {f->rid_len, len};
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

/* if_queued: hand the attempt back only if it is held unstarted. */
FX void send_cancel_if(fx_t *f, uint64_t id, const char *reason, bool if_queued)
{
    Loom__Cancel c = LOOM__CANCEL__INIT;
    c.attempt_id = id;
    c.reason = (char *)reason;
    c.if_queued = if_queued;
    loom_msg_t m = LOOM__ENVELOPE__INIT;
    m.body_case = LOOM__ENVELOPE__BODY_CANCEL;
    m.cancel = &c;
    send_msg(f, &m);
}

FX void send_cancel(fx_t *f, uint64_t id, const char *reason)
{
    send_cancel_if(f, id, reason, false);
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

/* --- the object store (fx_store_enable) --- */

#define FX_OBJECTS_MAX 64
#define FX_UPLOADS_MAX 64
#define FX_PENDING_MAX 4096
#define FX_STATS_MAX 64
/* Objects up to this size keep their bytes (to serve them, to compare);
 * larger ones only their hash and size, so a test of a large upload does
 * not hold it in memory. */
#define FX_KEEP_MAX (8u << 20)

typedef struct {
    char hash[65];
    uint8_t *data; /* NULL when not kept */
    size_t len;
    size_t fetches; /* FetchObject requests for it */
} fx_object_t;

/* One object being uploaded (loomd keeps one per agent and object). */
typedef struct {
    uint64_t attempt_id;
    char hash[65];
    uint64_t size, held;
    uint64_t acked; /* the highest offset sent back (not just queued) */
    crypto_generichash_state st;
    loom_buf_t data;
    bool open;
} fx_upload_t;

/* An answer waiting to be sent: a PutAck, or an ObjectChunk for a request. */
typedef struct {
    bool is_fetch;
    bool is_answer_to_query; /* never held */
    uint64_t attempt_id;
    char hash[65];
    uint64_t offset;
    uint32_t max;
    bool stored;
    char error[160];
} fx_answer_t;

typedef struct {
    uint64_t attempt_id;
    size_t puts, queries;
    uint64_t data_bytes;
    uint64_t unacked_max; /* the most data bytes it had unacknowledged */
} fx_attempt_stat_t;

struct fx_store {
    fx_object_t objects[FX_OBJECTS_MAX];
    size_t n_objects;
    fx_upload_t uploads[FX_UPLOADS_MAX];
    size_t n_uploads;
    fx_answer_t pending[FX_PENDING_MAX];
    size_t n_pending;
    fx_attempt_stat_t stats[FX_STATS_MAX];
    size_t n_stats;
    bool hold_acks; /* keep PutAcks to chunks queued instead of sending them */
    /* true: a query for an object being uploaded answers the bytes held
     * (the contract allows it); false: it starts again from 0 (loomd). */
    bool resume;
    char fail_hash[65]; /* answer an error for this object ... */
    uint64_t fail_at;   /* ... at the chunk reaching this offset (0: its query) */
    const char *fail_error;
    size_t puts_after_error; /* PutObjects for fail_hash after the error was sent */
    bool error_sent;
};

FX fx_attempt_stat_t *fx_stat(fx_t *f, uint64_t attempt_id)
{
    fx_store_t *s = f->store;
    for (size_t i = 0; i < s->n_stats; i++)
        if (s->stats[i].attempt_id == attempt_id) return &s->stats[i];
    assert_true(s->n_stats < FX_STATS_MAX);
    fx_attempt_stat_t *st = &s->stats[s->n_stats++];
    memset(st, 0, sizeof *st);
    st->attempt_id = attempt_id;
    return st;
}

FX void fx_hash_hex(const void *data, size_t len, char hex[65])
{
    unsigned char h[crypto_generichash_BYTES];
    crypto_generichash(h, sizeof h, data, len, NULL, 0);
    sodium_bin2hex(hex, 65, h, sizeof h);
}

FX fx_object_t *fx_find_object(fx_t *f, const char *hash)
{
    for (size_t i = 0; i < f->store->n_objects; i++)
        if (strcmp(f->store->objects[i].hash, hash) == 0) return &f->store->objects[i];
    return NULL;
}

/* Stores data (as loomd would after an upload); its hash in hex (may be
 * NULL). */
FX fx_object_t *fx_add_object(fx_t *f, const void *data, size_t len, char hex[65])
{
    char h[65];
    fx_hash_hex(data, len, h);
    if (hex) memcpy(hex, h, 65);
    fx_object_t *o = fx_find_object(f, h);
    if (o) return o;
    assert_true(f->store->n_objects < FX_OBJECTS_MAX);
    o = &f->store->objects[f->store->n_objects++];
    memcpy(o->hash, h, 65);
    o->data = len <= FX_KEEP_MAX ? loom_xmalloc(len ? len : 1) : NULL;
    if (o->data && len) memcpy(o->data, data, len);
    o->len = len;
    o->fetches = 0;
    return o;
}

FX void fx_queue(fx_t *f, const fx_answer_t *a)
{
    assert_true(f->store->n_pending < FX_PENDING_MAX);
    f->store->pending[f->store->n_pending++] = *a;
}

FX void fx_queue_ack(fx_t *f, uint64_t attempt_id, const char *hash, uint64_t offset, bool stored,
                     const char *error)
{
    fx_answer_t a = {.attempt_id = attempt_id, .offset = offset, .stored = stored};
    snprintf(a.hash, sizeof a.hash, "%s", hash);
    snprintf(a.error, sizeof a.error, "%s", error ? error : "");
    fx_queue(f, &a);
}

FX fx_upload_t *fx_find_upload(fx_t *f, const char *hash)
{
    for (size_t i = 0; i < f->store->n_uploads; i++)
        if (f->store->uploads[i].open && strcmp(f->store->uploads[i].hash, hash) == 0)
            return &f->store->uploads[i];
    return NULL;
}

FX void fx_close_upload(fx_upload_t *u)
{
    u->open = false;
    loom_buf_free(&u->data);
}

FX fx_upload_t *fx_open_upload(fx_t *f, const Loom__PutObject *p)
{
    fx_store_t *s = f->store;
    fx_upload_t *u = NULL;
    for (size_t i = 0; i < s->n_uploads && !u; i++)
        if (!s->uploads[i].open) u = &s->uploads[i];
    if (!u) {
        assert_true(s->n_uploads < FX_UPLOADS_MAX);
        u = &s->uploads[s->n_uploads++];
    }
    memset(u, 0, sizeof *u);
    u->open = true;
    u->attempt_id = p->attempt_id;
    snprintf(u->hash, sizeof u->hash, "%s", p->hash);
    u->size = p->size;
    crypto_generichash_init(&u->st, NULL, 0, crypto_generichash_BYTES);
    return u;
}

/* What the attempt has sent and not had acknowledged, over its uploads. */
FX uint64_t fx_unacked(fx_t *f, uint64_t attempt_id)
{
    uint64_t n = 0;
    for (size_t i = 0; i < f->store->n_uploads; i++) {
        const fx_upload_t *u = &f->store->uploads[i];
        if (u->open && u->attempt_id == attempt_id) n += u->held - u->acked;
    }
    return n;
}

FX void fx_answer_query(fx_t *f, const Loom__PutObject *p, uint64_t offset, bool stored,
                        const char *error)
{
    fx_queue_ack(f, p->attempt_id, p->hash, offset, stored, error);
    f->store->pending[f->store->n_pending - 1].is_answer_to_query = true;
}

/* As loomd: stored (a duplicate costs nothing; an empty object is its own
 * proof), else where to go on from. */
FX void fx_on_put_query(fx_t *f, const Loom__PutObject *p)
{
    fx_store_t *s = f->store;
    fx_upload_t *u = fx_find_upload(f, p->hash);
    if (strcmp(p->hash, s->fail_hash) == 0 && s->fail_at == 0) {
        fx_answer_query(f, p, 0, false, s->fail_error);
        s->error_sent = true;
        return;
    }
    char empty[65];
    fx_hash_hex("", 0, empty);
    if (p->size == 0 && strcmp(p->hash, empty) == 0) fx_add_object(f, "", 0, NULL);
    if (fx_find_object(f, p->hash)) {
        fx_answer_query(f, p, p->size, true, NULL);
        return;
    }
    if (u && s->resume) {
        u->acked = u->held; /* what the agent forgot it sent is no longer in flight */
        u->attempt_id = p->attempt_id;
        fx_answer_query(f, p, u->held, false, NULL);
        return;
    }
    if (u) fx_close_upload(u);
    fx_open_upload(f, p);
    fx_answer_query(f, p, 0, false, NULL);
}

/* The upload is whole: verified and stored, or refused. */
FX void fx_complete_upload(fx_t *f, fx_upload_t *u)
{
    unsigned char h[crypto_generichash_BYTES];
    char got[65];
    crypto_generichash_final(&u->st, h, sizeof h);
    sodium_bin2hex(got, sizeof got, h, sizeof h);
    if (strcmp(got, u->hash) != 0) {
        char why[160];
        snprintf(why, sizeof why, "content hash is %.12s, not %.12s", got, u->hash);
        fx_queue_ack(f, u->attempt_id, u->hash, 0, false, why);
        fx_close_upload(u);
        return;
    }
    fx_store_t *s = f->store;
    assert_true(s->n_objects < FX_OBJECTS_MAX);
    fx_object_t *o = &s->objects[s->n_objects++];
    memcpy(o->hash, u->hash, 65);
    o->len = u->size;
    o->fetches = 0;
    o->data = u->size <= FX_KEEP_MAX ? (uint8_t *)loom_buf_steal(&u->data) : NULL;
    fx_queue_ack(f, u->attempt_id, u->hash, u->size, true, NULL);
    fx_close_upload(u);
}

FX void fx_on_put_chunk(fx_t *f, const Loom__PutObject *p)
{
    fx_store_t *s = f->store;
    fx_upload_t *u = fx_find_upload(f, p->hash);
    if (!u && p->offset == 0 && !fx_find_object(f, p->hash)) u = fx_open_upload(f, p);
    if (!u || p->offset != u->held || p->size != u->size) {
        /* Out of order (a chunk from before a restart): say where we are. */
        fx_queue_ack(f, p->attempt_id, p->hash, u ? u->held : 0, false, NULL);
        return;
    }
    if (strcmp(p->hash, s->fail_hash) == 0 && s->fail_at && p->offset + p->data.len >= s->fail_at) {
        fx_queue_ack(f, p->attempt_id, p->hash, 0, false, s->fail_error);
        s->error_sent = true;
        fx_close_upload(u);
        return;
    }
    crypto_generichash_update(&u->st, p->data.data, p->data.len);
    if (u->size <= FX_KEEP_MAX) loom_buf_append(&u->data, p->data.data, p->data.len);
    u->held += p->data.len;
    fx_attempt_stat_t *st = fx_stat(f, p->attempt_id);
    uint64_t unacked = fx_unacked(f, p->attempt_id);
    if (unacked > st->unacked_max) st->unacked_max = unacked;
    if (u->held == u->size)
        fx_complete_upload(f, u);
    else
        fx_queue_ack(f, p->attempt_id, p->hash, u->held, false, NULL);
}

FX void fx_on_fetch(fx_t *f, const Loom__FetchObject *fo)
{
    fx_answer_t a = {.is_fetch = true, .offset = fo->offset, .max = fo->max};
    snprintf(a.hash, sizeof a.hash, "%s", fo->hash);
    fx_object_t *o = fx_find_object(f, fo->hash);
    if (o && fo->offset == 0) o->fetches++;
    fx_queue(f, &a);
}

/* Takes PutObject and FetchObject (true: not to be recorded). */
FX bool fx_store_on_msg(fx_t *f, const loom_msg_t *m)
{
    fx_store_t *s = f->store;
    if (m->body_case == LOOM__ENVELOPE__BODY_FETCH) {
        fx_on_fetch(f, m->fetch);
        return true;
    }
    if (m->body_case != LOOM__ENVELOPE__BODY_PUT) return false;
    const Loom__PutObject *p = m->put;
    fx_attempt_stat_t *st = fx_stat(f, p->attempt_id);
    st->puts++;
    st->data_bytes += p->data.len;
    if (s->error_sent && strcmp(p->hash, s->fail_hash) == 0) s->puts_after_error++;
    if (p->offset == 0 && p->data.len == 0) {
        st->queries++;
        fx_on_put_query(f, p);
    } else {
        fx_on_put_chunk(f, p);
    }
    return true;
}

FX void fx_send_answer(fx_t *f, const fx_answer_t *a)
{
    loom_msg_t m = LOOM__ENVELOPE__INIT;
    if (a->is_fetch) {
        const fx_object_t *o = fx_find_object(f, a->hash);
        Loom__ObjectChunk c = LOOM__OBJECT_CHUNK__INIT;
        c.hash = (char *)a->hash;
        c.offset = a->offset;
        if (!o || (!o->data && o->len)) {
            c.error = "no such object";
        } else {
            size_t n = a->max && a->max < LOOM_OBJECT_CHUNK_MAX ? a->max : LOOM_OBJECT_CHUNK_MAX;
            if (o->len - a->offset < n) n = o->len - a->offset;
            c.size = o->len;
            c.data.data = o->data + a->offset;
            c.data.len = n;
        }
        m.body_case = LOOM__ENVELOPE__BODY_OBJECT;
        m.object = &c;
        send_msg(f, &m);
        return;
    }
    Loom__PutAck ack = LOOM__PUT_ACK__INIT;
    ack.attempt_id = a->attempt_id;
    ack.hash = (char *)a->hash;
    ack.offset = a->offset;
    ack.stored = a->stored;
    ack.error = (char *)a->error;
    m.body_case = LOOM__ENVELOPE__BODY_PUT_ACK;
    m.put_ack = &ack;
    send_msg(f, &m);
    fx_upload_t *u = fx_find_upload(f, a->hash);
    if (u && u->attempt_id == a->attempt_id && a->offset > u->acked) u->acked = a->offset;
}

/* Runs around every loop turn: sends what is not held. */
FX void fx_store_serve(fx_t *f)
{
    fx_store_t *s = f->store;
    size_t k = 0;
    for (size_t i = 0; i < s->n_pending; i++) {
        if (s->hold_acks && !s->pending[i].is_fetch && !s->pending[i].is_answer_to_query)
            s->pending[k++] = s->pending[i];
        else
            fx_send_answer(f, &s->pending[i]);
    }
    s->n_pending = k;
}

/* Answers held so far are lost (as across a lost connection). */
FX void fx_drop_acks(fx_t *f)
{
    size_t k = 0;
    for (size_t i = 0; i < f->store->n_pending; i++)
        if (f->store->pending[i].is_fetch) f->store->pending[k++] = f->store->pending[i];
    f->store->n_pending = k;
}

/* As loomd restarting: uploads under way are gone (objects stay). */
FX void fx_forget_uploads(fx_t *f)
{
    for (size_t i = 0; i < f->store->n_uploads; i++) fx_close_upload(&f->store->uploads[i]);
}

FX void fx_store_enable(fx_t *f)
{
    f->store = loom_xcalloc(1, sizeof *f->store);
}

FX void fx_store_free(fx_t *f)
{
    fx_store_t *s = f->store;
    if (!s) return;
    for (size_t i = 0; i < s->n_objects; i++) free(s->objects[i].data);
    for (size_t i = 0; i < s->n_uploads; i++) fx_close_upload(&s->uploads[i]);
    free(s);
    f->store = NULL;
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
    /* CURVE, as loomd speaks it (without ZAP: this fake admits any key). */
    assert_int_equal(zmq_curve_keypair(f->server_pub, f->server_sec), 0);
    zmq_setsockopt(s, ZMQ_CURVE_SERVER, &one, sizeof one);
    zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, f->server_sec, 40);
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
        .server_key = f->server_pub,
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
    fx_store_free(f);
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
