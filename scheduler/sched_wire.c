/* The agent protocol on loomd's side: a table of handlers, one per message
 * kind, plus agent liveness. Every inbound message is decoded and validated
 * by the codec first; anything malformed is logged, answered with an Error
 * and dropped, so one bad agent cannot hurt the others. Fencing lives here:
 * anything about an attempt that is not the current one on the sending agent
 * is refused. */
#include "sched_internal.h"

#include "fault.h"

#include "loom/err.h"
#include "loom/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

agent_t *agent_get_or_add(loom_sched_t *s, const char *name)
{
    agent_t *a = loom_smap_get(&s->agents, name);
    if (a) return a;
    a = loom_xcalloc(1, sizeof *a);
    a->name = loom_xstrdup(name);
    a->labels_json = loom_xstrdup("{}");
    a->state = AGENT_DISCONNECTED;
    a->last_seen = sched_now(s);
    link_init(&a->attempts);
    link_init(&a->backlog);
    loom_smap_put(&s->agents, a->name, a);
    if (s->n_agent_list == s->cap_agent_list) {
        s->cap_agent_list = s->cap_agent_list ? s->cap_agent_list * 2 : 16;
        s->agent_list = loom_xrealloc(s->agent_list, s->cap_agent_list * sizeof *s->agent_list);
    }
    s->agent_list[s->n_agent_list++] = a;
    return a;
}

void agent_free(agent_t *a)
{
    if (!a) return;
    /* Attempts still linked here belong to runs, which free them. */
    while (!link_empty(&a->attempts)) {
        attempt_t *x = CONTAINER_OF(a->attempts.next, attempt_t, on_agent);
        link_remove(&x->on_agent);
        if (x->log_fd >= 0) close(x->log_fd);
        if (x->ts_fd >= 0) close(x->ts_fd);
        free(x->gpus);
        free(x->pool);
        free(x);
    }
    free(a->name);
    free(a->rid_hex);
    free(a->hostname);
    free(a->version);
    free(a->labels_json);
    agent_free_resources(a);
    free(a);
}

static void send_error(loom_sched_t *s, const char *agent, const char *text, bool hello)
{
    Loom__Error e = LOOM__ERROR__INIT;
    e.code = hello ? LOOM_ESTATE : LOOM_EPROTO;
    e.message = (char *)text;
    e.hello_required = hello;
    loom_msg_t msg = LOOM__ENVELOPE__INIT;
    msg.body_case = LOOM__ENVELOPE__BODY_ERROR;
    msg.error = &e;
    sched_send(s, agent, &msg);
}

static void send_cancel_if(loom_sched_t *s, const char *agent, uint64_t attempt_id, const char *why,
                           bool if_queued)
{
    Loom__Cancel c = LOOM__CANCEL__INIT;
    c.attempt_id = attempt_id;
    c.reason = (char *)why;
    c.if_queued = if_queued;
    loom_msg_t msg = LOOM__ENVELOPE__INIT;
    msg.body_case = LOOM__ENVELOPE__BODY_CANCEL;
    msg.cancel = &c;
    sched_send(s, agent, &msg);
}

static void send_cancel(loom_sched_t *s, const char *agent, uint64_t attempt_id, const char *why)
{
    send_cancel_if(s, agent, attempt_id, why, false);
}

void sched_withdraw(loom_sched_t *s, attempt_t *x, const char *why)
{
    send_cancel_if(s, x->agent->name, x->id, why, true);
}

/* The attempt, if it is current and placed on this agent. */
static attempt_t *current_attempt(loom_sched_t *s, agent_t *a, uint64_t id)
{
    attempt_t *x = loom_map_get(&s->attempts, id);
    return x && x->agent == a ? x : NULL;
}

static char *labels_to_json(const Loom__Resources *res)
{
    json_t *o = json_object();
    for (size_t i = 0; res && i < res->n_labels; i++)
        json_object_set_new(o, res->labels[i]->key, json_string(res->labels[i]->value));
    char *text = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    return text ? text : loom_xstrdup("{}");
}

static void save_agent(loom_sched_t *s, agent_t *a, const char *state)
{
    loom_agent_row_t row = {.name = a->name,
                            .hostname = a->hostname,
                            .version = a->version,
                            .cpus = a->cpus,
                            .slots = a->slots,
                            .memory_bytes = a->memory_bytes,
                            .labels_json = a->labels_json,
                            .state = state,
                            .connected_ms = a->connected_ms,
                            .last_seen_ms = a->last_seen_unix};
    loom_store_agent_upsert(s->store, &row);
}

static void on_hello(loom_sched_t *s, agent_t *a, const loom_msg_t *m)
{
    const Loom__Hello *h = m->hello;
    const Loom__Resources *res = h->resources;
    bool restarted = a->session_len != h->session.len ||
                     memcmp(a->session, h->session.data, h->session.len) != 0;
    free(a->hostname);
    free(a->version);
    free(a->labels_json);
    a->hostname = loom_xstrdup(h->hostname ? h->hostname : "");
    a->version = loom_xstrdup(h->agent_version ? h->agent_version : "");
    a->labels_json = labels_to_json(res);
    a->cpus = res ? res->cpus : 0;
    a->memory_bytes = res ? res->memory_bytes : 0;
    a->slots = res && res->slots ? res->slots : 1;
    a->prefetch = res ? res->prefetch : 0;
    agent_set_resources(a, res);
    a->draining = false;
    a->held_off = false;
    for (link_t *l = a->attempts.next; l != &a->attempts; l = l->next)
        placement_mark_gpus(a, CONTAINER_OF(l, attempt_t, on_agent));
    memcpy(a->session, h->session.data, h->session.len);
    a->session_len = h->session.len;
    a->state = AGENT_CONNECTED;
    a->last_seen = sched_now(s);
    a->last_seen_unix = a->connected_ms = loom_unix_ms();
    a->dispatch_seq = 0;

    /* Reconcile. What it holds that is no longer current, it must drop... */
    uint64_t *cancel = loom_xcalloc(h->n_attempts + 1, sizeof *cancel);
    size_t n_cancel = 0;
    for (size_t i = 0; i < h->n_attempts; i++)
        if (!current_attempt(s, a, h->attempts[i])) cancel[n_cancel++] = h->attempts[i];
    /* ...and what we placed there that it no longer holds is lost. Listed
     * before any is marked: losing one places its retry at once, possibly
     * on this very agent, and that new attempt is not in this Hello's list
     * (marking it lost too would burn every retry in one Hello). The same
     * agent process (same session) may have sent this Hello before our
     * latest Dispatches reached it -- a second Hello, answered after we
     * welcomed the first and dispatched -- so an unstarted attempt this
     * loomd dispatched is left to the heartbeats, which judge it by the
     * Dispatch sequence the agent echoes, or by its age. */
    size_t n_lost = 0, cap = 0;
    uint64_t *lost = NULL;
    for (link_t *l = a->attempts.next; l != &a->attempts; l = l->next) {
        attempt_t *x = CONTAINER_OF(l, attempt_t, on_agent);
        if (ids_contain(h->attempts, h->n_attempts, x->id)) continue;
        if (!restarted && x->state == ATT_DISPATCHED && x->dispatch_seq) continue;
        if (n_lost == cap) lost = loom_xrealloc(lost, (cap = cap ? cap * 2 : 8) * sizeof *lost);
        lost[n_lost++] = x->id;
    }

    placement_rebuild_backlog(s, a, h->attempts, h->n_attempts);
    save_agent(s, a, "connected");
    s->stats.agents_connected++;
    LOG_INFO("agent connected agent=%s host=%s slots=%u holds=%zu cancel=%zu lost=%zu", a->name,
             a->hostname, a->slots, h->n_attempts, n_cancel, n_lost);

    /* Welcome first, so the agent has it before any Dispatch that follows. */
    Loom__Welcome w = LOOM__WELCOME__INIT;
    w.heartbeat_ms = s->cfg.heartbeat_ms;
    w.timeout_ms = s->cfg.agent_timeout_ms;
    w.cancel = cancel;
    w.n_cancel = n_cancel;
    loom_msg_t reply = LOOM__ENVELOPE__INIT;
    reply.body_case = LOOM__ENVELOPE__BODY_WELCOME;
    reply.welcome = &w;
    sched_send(s, a->name, &reply);
    free(cancel);
    for (size_t i = 0; i < n_lost; i++) {
        attempt_t *x = loom_map_get(&s->attempts, lost[i]);
        if (x && x->agent == a)
            attempt_lost(s, x, restarted ? "agent restarted" : "agent no longer has it");
    }
    free(lost);
    placement_agent_freed(s, a);
    dispatch_ready(s);
}

static void on_heartbeat(loom_sched_t *s, agent_t *a, const loom_msg_t *m)
{
    const Loom__Heartbeat *hb = m->heartbeat;
    if (hb->draining != a->draining) {
        LOG_INFO("agent %s agent=%s", hb->draining ? "draining" : "no longer draining", a->name);
        a->draining = hb->draining;
    }
    if (hb->usage) {
        json_t *gpus = json_array();
        for (size_t i = 0; i < hb->usage->n_gpus; i++)
            json_array_append_new(
                gpus,
                json_pack("{s:i,s:i,s:I}", "index", (int)hb->usage->gpus[i]->index,
                          "utilization_percent", (int)hb->usage->gpus[i]->utilization_percent,
                          "memory_used_bytes", (json_int_t)hb->usage->gpus[i]->memory_used_bytes));
        json_decref(a->usage);
        a->usage = json_pack("{s:f,s:I,s:o}", "load1", hb->usage->load1, "memory_available_bytes",
                             (json_int_t)hb->usage->memory_available_bytes, "gpus", gpus);
    }
    /* Attempts dispatched up to the echoed sequence have reached the agent;
     * if it does not hold one of them, it is gone. Later ones are in flight
     * -- unless one has been "in flight" for long: then its Dispatch was
     * lost, and no later Dispatch will ever move the echo past it. Listed
     * first: a retry placed on this agent must not be judged by this
     * heartbeat (it cannot know it yet). */
    uint64_t now = loom_unix_ms();
    uint64_t stale = 5 * (uint64_t)s->cfg.heartbeat_ms;
    if (stale < 2000) stale = 2000;
    size_t n_lost = 0, cap = 0;
    uint64_t *lost = NULL;
    const char **why = NULL;
    for (link_t *l = a->attempts.next; l != &a->attempts; l = l->next) {
        attempt_t *x = CONTAINER_OF(l, attempt_t, on_agent);
        if (!x->dispatch_seq || ids_contain(hb->attempts, hb->n_attempts, x->id)) continue;
        const char *reason = NULL;
        if (x->dispatch_seq <= hb->dispatch_seq)
            reason = "agent does not have it";
        else if (x->state == ATT_DISPATCHED && now > x->dispatched_ms + stale)
            reason = "its dispatch never reached the agent";
        if (!reason) continue;
        if (n_lost == cap) {
            cap = cap ? cap * 2 : 8;
            lost = loom_xrealloc(lost, cap * sizeof *lost);
            why = loom_xrealloc(why, cap * sizeof *why);
        }
        why[n_lost] = reason;
        lost[n_lost++] = x->id;
    }
    for (size_t i = 0; i < n_lost; i++) {
        attempt_t *x = loom_map_get(&s->attempts, lost[i]);
        if (x && x->agent == a) attempt_lost(s, x, why[i]);
    }
    free(lost);
    free(why);
    if (a->held_off) {
        a->held_off = false;
        placement_agent_freed(s, a);
        dispatch_ready(s);
    }
    for (size_t i = 0; i < hb->n_attempts; i++)
        if (!current_attempt(s, a, hb->attempts[i]) &&
            loom_map_get(&s->recent_ended, hb->attempts[i]) != a)
            send_cancel(s, a->name, hb->attempts[i], "attempt is no longer current");
    Loom__Heartbeat back = LOOM__HEARTBEAT__INIT;
    back.sent_unix_ms = loom_unix_ms();
    loom_msg_t reply = LOOM__ENVELOPE__INIT;
    reply.body_case = LOOM__ENVELOPE__BODY_HEARTBEAT;
    reply.heartbeat = &back;
    sched_send(s, a->name, &reply);
}

static void on_started(loom_sched_t *s, agent_t *a, const loom_msg_t *m)
{
    attempt_t *x = current_attempt(s, a, m->started->attempt_id);
    if (!x) {
        s->stats.refused++;
        send_cancel(s, a->name, m->started->attempt_id, "attempt is no longer current");
        return;
    }
    placement_started(s, x);
    attempt_started(s, x, m->started->started_unix_ms);
    if (m->started->job_id && *m->started->job_id)
        loom_store_attempt_job(s->store, x->id, m->started->job_id);
}

/* Whether a message about an ended attempt is a harmless resend: the attempt
 * was recorded as ended on this same agent. */
static bool is_resend(loom_sched_t *s, agent_t *a, uint64_t attempt_id, uint64_t *log_seq)
{
    loom_attempt_row_t row;
    if (loom_store_attempt_get(s->store, attempt_id, &row) != 0) return false;
    if (log_seq) *log_seq = row.log_seq;
    return strcmp(row.agent, a->name) == 0 && strcmp(row.state, "lost") != 0;
}

static void send_log_ack(loom_sched_t *s, agent_t *a, uint64_t attempt_id, uint64_t seq)
{
    Loom__LogAck ack = LOOM__LOG_ACK__INIT;
    ack.attempt_id = attempt_id;
    ack.seq = seq;
    loom_msg_t reply = LOOM__ENVELOPE__INIT;
    reply.body_case = LOOM__ENVELOPE__BODY_LOG_ACK;
    reply.log_ack = &ack;
    sched_send(s, a->name, &reply);
}

static void on_log(loom_sched_t *s, agent_t *a, const loom_msg_t *m)
{
    const Loom__LogChunk *c = m->log;
    attempt_t *x = current_attempt(s, a, c->attempt_id);
    if (x) {
        /* Nearly full: neither stored nor acknowledged, so the agent keeps
         * the chunk and sends it again later. */
        if (sched_disk_low(s)) return;
        if (attempt_log(s, x, c) == 0) send_log_ack(s, a, x->id, x->log_seq);
        return;
    }
    uint64_t have = 0;
    if (!is_resend(s, a, c->attempt_id, &have) || c->seq > have) {
        /* Refused: not stored. Acknowledged all the same so the agent lets
         * go of it, and told to stop the attempt if it still runs. */
        s->stats.refused++;
        LOG_WARN("refused log agent=%s attempt=%llu seq=%llu: not current", a->name,
                 (unsigned long long)c->attempt_id, (unsigned long long)c->seq);
        send_cancel(s, a->name, c->attempt_id, "attempt is no longer current");
    }
    send_log_ack(s, a, c->attempt_id, c->seq);
}

static void on_finished(loom_sched_t *s, agent_t *a, const loom_msg_t *m)
{
    const Loom__Finished *f = m->finished;
    attempt_t *x = current_attempt(s, a, f->attempt_id);
    /* A refusal of what loomd did not ask back: the agent is fuller than
     * loomd thinks (see held_off). An attempt that ran and ended freed a
     * slot there: loomd's view may count again. */
    bool was_held_off = a->held_off;
    if (x && f->refused && !x->asked_back)
        a->held_off = true;
    else if (!f->refused)
        a->held_off = false;
    bool let_in = was_held_off && !a->held_off;
    if (let_in) placement_agent_freed(s, a);
    if (x) {
        attempt_finished(s, x, f);
        loom_fault_reached(LOOM_FAULT_AFTER_RESULT_BEFORE_COMMIT);
    } else if (!is_resend(s, a, f->attempt_id, NULL)) {
        s->stats.refused++;
        LOG_WARN("refused result agent=%s attempt=%llu: not current", a->name,
                 (unsigned long long)f->attempt_id);
    }
    if (let_in && !x) dispatch_ready(s); /* attempt_finished did it otherwise */
    /* Acknowledge in every case: recorded now, recorded before, or refused,
     * the agent has nothing more to do with it. */
    Loom__FinishedAck ack = LOOM__FINISHED_ACK__INIT;
    ack.attempt_id = f->attempt_id;
    loom_msg_t reply = LOOM__ENVELOPE__INIT;
    reply.body_case = LOOM__ENVELOPE__BODY_FINISHED_ACK;
    reply.finished_ack = &ack;
    sched_send(s, a->name, &reply);
}

static void on_agent_error(loom_sched_t *s, agent_t *a, const loom_msg_t *m)
{
    LOG_WARN("agent error agent=%s code=%d: %s", a->name, (int)m->error->code,
             m->error->message ? m->error->message : "");
}

/* An output of an attempt this agent runs; anything else is refused, so
 * an agent cannot fill loomd's disk for attempts it does not hold. */
static void on_put(loom_sched_t *s, agent_t *a, const loom_msg_t *m)
{
    const Loom__PutObject *p = m->put;
    attempt_t *x = loom_map_get(&s->attempts, p->attempt_id);
    if (!x || x->agent != a) {
        Loom__PutAck ack = LOOM__PUT_ACK__INIT;
        ack.attempt_id = p->attempt_id;
        ack.hash = p->hash;
        ack.error = "the attempt is not running on this agent";
        loom_msg_t reply = LOOM__ENVELOPE__INIT;
        reply.body_case = LOOM__ENVELOPE__BODY_PUT_ACK;
        reply.put_ack = &ack;
        sched_send(s, a->name, &reply);
        return;
    }
    artifacts_on_put(s, a, p);
}

typedef void (*handler_fn)(loom_sched_t *s, agent_t *a, const loom_msg_t *m);

static const struct {
    Loom__Envelope__BodyCase kind;
    handler_fn fn;
} handlers[] = {
    {LOOM__ENVELOPE__BODY_HELLO, on_hello},         {LOOM__ENVELOPE__BODY_HEARTBEAT, on_heartbeat},
    {LOOM__ENVELOPE__BODY_STARTED, on_started},     {LOOM__ENVELOPE__BODY_LOG, on_log},
    {LOOM__ENVELOPE__BODY_FINISHED, on_finished},   {LOOM__ENVELOPE__BODY_ERROR, on_agent_error},
    {LOOM__ENVELOPE__BODY_FETCH, objects_on_fetch}, {LOOM__ENVELOPE__BODY_PUT, on_put},
};

static handler_fn find_handler(Loom__Envelope__BodyCase kind)
{
    for (size_t i = 0; i < sizeof handlers / sizeof handlers[0]; i++)
        if (handlers[i].kind == kind) return handlers[i].fn;
    return NULL;
}

void on_router_message(void *ud, zmq_msg_t *parts, size_t nparts)
{
    loom_sched_t *s = ud;
    size_t idlen = nparts >= 1 ? zmq_msg_size(&parts[0]) : 0;
    if (nparts != 2 || idlen == 0) {
        s->stats.bad_messages++;
        LOG_WARN("dropped message with %zu parts", nparts);
        return;
    }
    loom_msg_t *m = NULL;
    char why[160];
    if (loom_codec_decode(zmq_msg_data(&parts[1]), zmq_msg_size(&parts[1]), &m, why, sizeof why) !=
        0) {
        s->stats.bad_messages++;
        LOG_WARN("bad message from a peer: %s", why);
        Loom__Error e = LOOM__ERROR__INIT;
        e.code = LOOM_EPROTO;
        e.message = why;
        loom_msg_t reply = LOOM__ENVELOPE__INIT;
        reply.body_case = LOOM__ENVELOPE__BODY_ERROR;
        reply.error = &e;
        sched_send_rid(s, zmq_msg_data(&parts[0]), zmq_msg_size(&parts[0]), &reply);
        return;
    }
    /* Which agent this is comes from the connection and its CURVE key,
     * never from the message (sched_auth.c). */
    bool done = false;
    agent_t *a = auth_sender(s, parts, m, &done);
    handler_fn fn = done ? NULL : find_handler(m->body_case);
    if (done) {
        /* answered (or dropped) by auth_sender */
    } else if (!fn) {
        s->stats.bad_messages++;
        LOG_WARN("unexpected %s from agent=%s", loom_codec_kind_name(m->body_case), a->name);
        send_error(s, a->name, "unexpected message kind", false);
    } else if (m->body_case == LOOM__ENVELOPE__BODY_HELLO) {
        fn(s, a, m);
    } else if (a->state != AGENT_CONNECTED) {
        send_error(s, a->name, "unknown agent: send hello", true);
    } else {
        a->last_seen = sched_now(s);
        a->last_seen_unix = loom_unix_ms();
        fn(s, a, m);
    }
    loom_codec_free(m);
}

void agents_check_liveness(loom_sched_t *s)
{
    uint64_t now = sched_now(s);
    void *v;
    for (size_t i = 0; loom_map_next(&s->agents, &i, &v);) {
        agent_t *a = v;
        if (a->state == AGENT_LOST || now - a->last_seen <= s->cfg.agent_timeout_ms) continue;
        char *why = loom_xasprintf("agent %s lost: silent for %llu ms", a->name,
                                   (unsigned long long)(now - a->last_seen));
        LOG_WARN("%s", why);
        a->state = AGENT_LOST;
        loom_store_agent_state(s->store, a->name, "lost", a->last_seen_unix);
        while (!link_empty(&a->attempts))
            attempt_lost(s, CONTAINER_OF(a->attempts.next, attempt_t, on_agent), why);
        free(why);
    }
}
