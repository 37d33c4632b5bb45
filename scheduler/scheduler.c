/* loomd's scheduler object: lifecycle, the end-of-turn flush and recovery.
 *
 * The flush is the heart of the durability rule "write before acting": every
 * handler writes into the open transaction and queues its outgoing messages
 * in the outbox; before the loop blocks again (uv_prepare), the transaction
 * is committed, and only then are the messages sent and waiting HTTP clients
 * told. One commit per loop turn, however many messages the turn handled. */
#include "sched_internal.h"

#include "fault.h"
#include "secrets.h"
#include "triggers.h"

#include "loom/err.h"
#include "loom/log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

uint64_t sched_now(loom_sched_t *s)
{
    return loom_clock_now(&s->cfg.clock);
}

uint64_t loom_sched_wall_ms(loom_sched_t *s)
{
    return trig_now(s);
}

loom_sched_t *loom_sched_new(uv_loop_t *loop, const loom_sched_config_t *cfg)
{
    loom_sched_t *s = loom_xcalloc(1, sizeof *s);
    s->loop = loop;
    s->cfg = *cfg;
    if (!s->cfg.heartbeat_ms) s->cfg.heartbeat_ms = 1000;
    if (!s->cfg.agent_timeout_ms) s->cfg.agent_timeout_ms = 10000;
    if (!s->cfg.max_lost_retries) s->cfg.max_lost_retries = 3;
    if (!s->cfg.clock.now_ms) s->cfg.clock = loom_clock_real();
    if (!s->cfg.max_log_bytes) s->cfg.max_log_bytes = 1ull << 30;
    s->state_dir = loom_xstrdup(cfg->state_dir ? cfg->state_dir : ".");
    s->metrics = loom_metrics_new(s->state_dir);
    s->bind = loom_xstrdup(cfg->bind ? cfg->bind : "tcp://127.0.0.1:8421");
    s->cfg.state_dir = s->state_dir;
    s->cfg.bind = s->bind;
    link_init(&s->groups);
    s->lock_fd = -1;
    link_init(&s->retry_wait);
    s->out_tail = &s->out_head;
    return s;
}

loom_store_t *loom_sched_store(loom_sched_t *s)
{
    return s->store;
}

loom_objects_t *loom_sched_objects(loom_sched_t *s)
{
    return s->objects;
}

void loom_sched_set_observer(loom_sched_t *s, const loom_sched_observer_t *obs)
{
    s->obs = *obs;
}

void loom_sched_stats(loom_sched_t *s, loom_sched_stats_t *out)
{
    *out = s->stats;
}

void loom_sched_metrics_text(loom_sched_t *s, loom_buf_t *out)
{
    loom_metrics_render(s, s->metrics, s->loop, out);
}

void loom_sched_metrics_http(loom_sched_t *s, const char *method, const char *route,
                             unsigned status, double seconds)
{
    loom_metrics_http(s->metrics, method, route, status, seconds);
}

static void enqueue(loom_sched_t *s, const char *agent, const uint8_t *rid, size_t rid_len,
                    loom_msg_t *msg)
{
    outmsg_t *m = loom_xcalloc(1, sizeof *m);
    if (loom_codec_encode(msg, &m->data, &m->len) != 0) {
        LOG_ERROR("cannot encode %s for agent=%s", loom_codec_kind_name(msg->body_case),
                  agent ? agent : "?");
        free(m);
        return;
    }
    if (agent) {
        m->agent = loom_xstrdup(agent);
    } else {
        m->rid = loom_xmalloc(rid_len);
        memcpy(m->rid, rid, rid_len);
        m->rid_len = rid_len;
    }
    *s->out_tail = m;
    s->out_tail = &m->next;
    sched_request_flush(s);
}

void sched_send(loom_sched_t *s, const char *agent, loom_msg_t *msg)
{
    enqueue(s, agent, NULL, 0, msg);
}

void sched_send_rid(loom_sched_t *s, const uint8_t *rid, size_t rid_len, loom_msg_t *msg)
{
    enqueue(s, NULL, rid, rid_len, msg);
}

void sched_mark_changed(loom_sched_t *s, uint64_t run_id)
{
    loom_map_put(&s->changed_runs, run_id, (void *)1);
    run_t *r = loom_map_get(&s->runs, run_id);
    if (r) r->seq++;
}

uint64_t loom_sched_run_seq(loom_sched_t *s, uint64_t run_id)
{
    run_t *r = loom_map_get(&s->runs, run_id);
    return r ? r->seq : 0;
}

void sched_mark_output(loom_sched_t *s, uint64_t run_id)
{
    loom_map_put(&s->output_runs, run_id, (void *)1);
}

int loom_sched_commit(loom_sched_t *s)
{
    if (!loom_store_in_txn(s->store)) return 0;
    int rc = loom_store_commit(s->store);
    if (rc) {
        /* The database refused a commit (disk full, I/O error): acting on
         * unrecorded state would break every promise, so stop here. */
        LOG_ERROR("commit failed: %s; loomd stops rather than act on state it could not "
                  "record (nothing recorded is lost: free space or fix the disk, then start "
                  "loomd again)",
                  loom_store_errmsg(s->store));
        abort();
    }
    s->stats.commits++;
    return 0;
}

static void send_outbox(loom_sched_t *s)
{
    outmsg_t *m = s->out_head;
    s->out_head = NULL;
    s->out_tail = &s->out_head;
    while (m) {
        outmsg_t *next = m->next;
        /* To the agent's connection as it is now: a reconnect since the
         * message was queued has a new routing id. */
        agent_t *to = m->agent ? loom_smap_get(&s->agents, m->agent) : NULL;
        const void *parts[2] = {to ? to->rid : m->rid, m->data};
        size_t lens[2] = {to ? to->rid_len : m->rid_len, m->len};
        if (m->agent && (!to || !to->rid_hex)) {
            LOG_DEBUG("dropped %zu bytes for agent=%s: not connected", m->len, m->agent);
        } else if (s->router && loom_zsock_send(s->router, parts, lens, 2) != 0) {
            /* The agent's connection is gone or full, so this message (a
             * Dispatch, say) is lost. Make the agent say hello again: the
             * Hello lists what it holds, and whatever it does not is lost
             * and retried. If it never comes back, the timeout does that. */
            LOG_WARN("send to agent=%s failed: %s", m->agent ? m->agent : "(not enrolled)",
                     zmq_strerror(errno));
            if (to && to->state == AGENT_CONNECTED) to->state = AGENT_DISCONNECTED;
        }
        free(m->agent);
        free(m->rid);
        free(m->data);
        free(m);
        m = next;
    }
}

static void notify(loom_sched_t *s, loom_map_t *set, void (*cb)(void *, uint64_t))
{
    if (set->count == 0) return;
    /* Copy first: the callback may start new work that marks runs again. */
    size_t n = 0, cap = set->count;
    uint64_t *ids = loom_xmalloc(cap * sizeof *ids);
    for (size_t i = 0; i < set->cap && n < cap; i++)
        if (set->slots[i].used == 1) ids[n++] = set->slots[i].key;
    loom_map_free(set);
    for (size_t i = 0; cb && i < n; i++) cb(s->obs.ud, ids[i]);
    free(ids);
}

/* Runs whose last task failed inside placement (a Dispatch that could not be
 * built): ending one there would free it under placement's feet. */
static void check_runs(loom_sched_t *s)
{
    while (s->check_runs.count) {
        void *v = NULL;
        size_t i = 0;
        loom_map_next(&s->check_runs, &i, &v);
        uint64_t id = (uint64_t)(uintptr_t)v;
        loom_map_del(&s->check_runs, id);
        run_t *r = loom_map_get(&s->runs, id);
        if (r) run_check_done(s, r);
    }
}

static bool flush_pending(loom_sched_t *s)
{
    return loom_store_in_txn(s->store) || s->out_head || s->changed_runs.count ||
           s->check_runs.count || s->output_runs.count || s->trig_freed.count || s->pending_events;
}

/* Commit, then act: send queued messages and tell observers. Sending may read
 * more messages (zsock drains after sends), so repeat until quiet; if a
 * burst keeps us busy, yield with an idle handle so the loop turns again
 * without blocking. */
static void flush(loom_sched_t *s)
{
    for (int round = 0; round < 16 && flush_pending(s); round++) {
        check_runs(s);
        triggers_flush(s); /* queued triggers whose runs ended: their runs join this commit */
        bool had_changes = loom_store_in_txn(s->store);
        loom_sched_commit(s);
        if (had_changes) loom_fault_reached(LOOM_FAULT_AFTER_COMMIT_BEFORE_SEND);
        send_outbox(s);
        notify(s, &s->changed_runs, s->obs.on_run_changed);
        notify(s, &s->output_runs, s->obs.on_task_output);
    }
    if (s->store) loom_store_release(s->store);
    if (flush_pending(s))
        sched_request_flush(s);
    else if (uv_is_active((uv_handle_t *)&s->flush_idle))
        uv_idle_stop(&s->flush_idle);
}

void sched_flush_now(loom_sched_t *s)
{
    flush(s);
}

static void on_flush_prepare(uv_prepare_t *h)
{
    flush(h->data);
}

static void on_flush_idle(uv_idle_t *h)
{
    (void)h; /* the prepare callback of this turn does the work */
}

void sched_request_flush(loom_sched_t *s)
{
    /* The prepare handle runs every turn; the idle handle only makes sure the
     * turn happens now rather than after the next I/O event. */
    if (s->flush_idle.loop && !uv_is_active((uv_handle_t *)&s->flush_idle) && !s->closing)
        uv_idle_start(&s->flush_idle, on_flush_idle);
}

/* Liveness runs on the monotonic clock, which a stepped wall clock does not
 * move; schedules run on the wall clock. When the two part by more than two
 * seconds between ticks, the wall clock was stepped: look at the schedules
 * now rather than at the trigger timer's next minute. */
static void watch_wall_clock(loom_sched_t *s)
{
    uint64_t mono = sched_now(s), wall = loom_sched_wall_ms(s);
    if (s->clock_mono) {
        int64_t skew = (int64_t)(wall - s->clock_wall) - (int64_t)(mono - s->clock_mono);
        if (skew > 2000 || skew < -2000) {
            LOG_WARN("the wall clock stepped %+lld s; schedules are looked at again",
                     (long long)(skew / 1000));
            loom_sched_triggers_tick(s);
        }
    }
    s->clock_mono = mono;
    s->clock_wall = wall;
}

static void on_liveness_timer(uv_timer_t *h)
{
    loom_sched_t *s = h->data;
    agents_check_liveness(s);
    sched_disk_poll(s);
    watch_wall_clock(s);
}

static int load_agent(void *ud, const loom_agent_row_t *row)
{
    loom_sched_t *s = ud;
    agent_t *a = agent_get_or_add(s, row->name);
    a->hostname = loom_xstrdup(row->hostname ? row->hostname : "");
    a->version = loom_xstrdup(row->version ? row->version : "");
    free(a->labels_json);
    a->labels_json = loom_xstrdup(row->labels_json ? row->labels_json : "{}");
    a->cpus = row->cpus;
    a->slots = row->slots;
    a->memory_bytes = row->memory_bytes;
    a->connected_ms = row->connected_ms;
    a->last_seen_unix = row->last_seen_ms;
    a->cordoned = row->cordoned;
    /* Until it says hello again it cannot take work; its running attempts
     * get until the agent timeout (counted from now) to be reclaimed. */
    a->state = AGENT_DISCONNECTED;
    a->last_seen = sched_now(s);
    return 0;
}

static int recover_run(void *ud, const loom_run_row_t *row)
{
    return run_recover(ud, row);
}

/* One loomd per state folder: two would interleave their writes to the
 * same logs and fight over the database. The lock is released by the
 * kernel when the process ends, however it ends. */
static int lock_state_dir(loom_sched_t *s, char *why, size_t whylen)
{
    char *path = loom_xasprintf("%s/loomd.lock", s->state_dir);
    s->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    free(path);
    if (s->lock_fd < 0) {
        snprintf(why, whylen, "cannot open %s/loomd.lock: %s", s->state_dir, strerror(errno));
        return LOOM_EIO;
    }
    if (flock(s->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        char pid[32] = "";
        ssize_t n = pread(s->lock_fd, pid, sizeof pid - 1, 0);
        pid[n > 0 ? n : 0] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        snprintf(why, whylen, "state folder %s is in use by another loomd%s%s%s", s->state_dir,
                 *pid ? " (pid " : "", pid, *pid ? ")" : "");
        close(s->lock_fd);
        s->lock_fd = -1;
        return LOOM_ESTATE;
    }
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(s->lock_fd, 0) != 0 || pwrite(s->lock_fd, pid, (size_t)n, 0) != n)
        LOG_WARN("cannot record the pid in %s/loomd.lock", s->state_dir);
    return 0;
}

static int add_pools(loom_sched_t *s, char *why, size_t whylen)
{
    for (size_t i = 0; i < s->cfg.n_pools; i++) {
        const char *spec = s->cfg.pools[i];
        const char *eq = strchr(spec, '=');
        int64_t limit;
        char *name = eq ? loom_xstrndup(spec, (size_t)(eq - spec)) : NULL;
        if (!name || !loom_name_valid(name) || loom_parse_i64(eq + 1, 1, 1000000, &limit) != 0) {
            snprintf(why, whylen, "pool \"%s\": want NAME=LIMIT, LIMIT 1..1000000", spec);
            free(name);
            return LOOM_EINVAL;
        }
        pool_t *p = loom_smap_get(&s->pools, name);
        if (!p) {
            p = loom_xcalloc(1, sizeof *p);
            p->name = name;
            loom_smap_put(&s->pools, p->name, p);
        } else {
            free(name);
        }
        p->limit = (uint32_t)limit;
    }
    return 0;
}

int loom_sched_open(loom_sched_t *s, char *why, size_t whylen)
{
    if (loom_fault_setup(getenv("LOOM_FAULT"), why, whylen) != 0) return LOOM_EINVAL;
    if (add_pools(s, why, whylen) != 0) return LOOM_EINVAL;
    char *logs = loom_xasprintf("%s/logs", s->state_dir);
    int rc = loom_mkdirs(s->state_dir, 0700);
    if (rc == 0) rc = loom_mkdirs(logs, 0700);
    free(logs);
    if (rc) {
        snprintf(why, whylen, "cannot create state folder %s: %s", s->state_dir, strerror(errno));
        return rc;
    }
    rc = lock_state_dir(s, why, whylen);
    if (rc) return rc;
    rc = loom_objects_open(s->state_dir, &s->objects, why, whylen);
    if (rc) return rc;
    char *db = loom_xasprintf("%s/loom.db", s->state_dir);
    rc = loom_store_open(db, s->cfg.sync, &s->store, why, whylen);
    free(db);
    if (rc) return rc;
    rc = sched_secrets_open(s, why, whylen);
    if (rc) return rc;
    rc = loom_store_each_agent(s->store, load_agent, s);
    if (rc == 0) rc = loom_store_each_active_run(s->store, recover_run, s);
    if (rc == 0) rc = loom_sched_commit(s);
    if (rc) {
        snprintf(why, whylen, "recovery failed: %s", loom_errname(rc));
        return rc;
    }
    LOG_INFO("state opened dir=%s runs_in_flight=%zu attempts_in_flight=%zu", s->state_dir,
             s->runs.count, s->attempts.count);

    uv_prepare_init(s->loop, &s->flush_prepare);
    s->flush_prepare.data = s;
    uv_prepare_start(&s->flush_prepare, on_flush_prepare);
    uv_idle_init(s->loop, &s->flush_idle);
    s->flush_idle.data = s;
    uv_timer_init(s->loop, &s->liveness_timer);
    s->liveness_timer.data = s;
    uv_timer_init(s->loop, &s->retry_timer);
    s->retry_timer.data = s;
    uint64_t every = s->cfg.heartbeat_ms;
    uv_timer_start(&s->liveness_timer, on_liveness_timer, every, every);
    s->open_handles = 4;
    retry_timer_start(s); /* recovered tasks may be waiting for a retry */
    rc = triggers_open(s);
    if (rc == 0) rc = loom_sched_commit(s);
    if (rc) snprintf(why, whylen, "cannot load triggers: %s", loom_errname(rc));
    return rc;
}

int loom_sched_bind(loom_sched_t *s, char *out, size_t outlen, char *why, size_t whylen)
{
    if (!s->zctx) {
        s->zctx = s->cfg.zmq_ctx;
        if (!s->zctx) {
            s->zctx = zmq_ctx_new();
            s->own_zctx = true;
        }
    }
    void *sock = zmq_socket(s->zctx, ZMQ_ROUTER);
    int one = 1, zero = 0;
    int64_t maxsize = LOOM_MSG_MAX;
    int hwm = 100000;
    /* MANDATORY: a send to a gone agent fails instead of vanishing. No
     * HANDOVER: routing ids are ZeroMQ's own, one per connection, and an
     * agent is tied to its connection by its CURVE key (sched_auth.c). */
    zmq_setsockopt(sock, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    zmq_setsockopt(sock, ZMQ_MAXMSGSIZE, &maxsize, sizeof maxsize);
    zmq_setsockopt(sock, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(sock, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(sock, ZMQ_RCVHWM, &hwm, sizeof hwm);
    /* The ZAP handler first: CURVE without one admits every client. */
    int rc = auth_open(s, sock, why, whylen);
    if (rc) {
        zmq_close(sock);
        return rc;
    }
    if (zmq_bind(sock, s->bind) != 0) {
        snprintf(why, whylen, "cannot bind %s: %s", s->bind, zmq_strerror(errno));
        zmq_close(sock);
        return LOOM_ENET;
    }
    size_t len = outlen;
    if (zmq_getsockopt(sock, ZMQ_LAST_ENDPOINT, out, &len) != 0)
        snprintf(out, outlen, "%s", s->bind);
    s->router = loom_zsock_new(s->loop, sock, on_router_message, s);
    if (!s->router || loom_zsock_start(s->router) != 0) {
        snprintf(why, whylen, "cannot watch the agents' socket");
        return LOOM_EIO;
    }
    s->open_handles++;
    rc = auth_selfcheck(s, out, why, whylen);
    if (rc) return rc;
    LOG_INFO("listening for agents on %s (%s)", out,
             s->cfg.insecure_plaintext ? "PLAINTEXT, no authentication" : "CURVE");
    return 0;
}

static void on_handle_closed(uv_handle_t *h)
{
    loom_sched_t *s = h->data;
    if (--s->open_handles == 0 && s->on_closed) s->on_closed(s->closed_ud);
}

static void on_router_closed(void *ud)
{
    loom_sched_t *s = ud;
    if (--s->open_handles == 0 && s->on_closed) s->on_closed(s->closed_ud);
}

void loom_sched_close(loom_sched_t *s, void (*on_closed)(void *ud), void *ud)
{
    s->on_closed = on_closed;
    s->closed_ud = ud;
    if (s->store) {
        flush(s);
        loom_sched_commit(s);
    }
    s->closing = true;
    if (s->open_handles == 0) {
        if (on_closed) on_closed(ud);
        return;
    }
    if (s->router) {
        loom_zsock_close(s->router, on_router_closed);
        s->router = NULL;
    }
    auth_close(s);
    if (s->flush_prepare.loop) {
        uv_close((uv_handle_t *)&s->flush_prepare, on_handle_closed);
        uv_close((uv_handle_t *)&s->flush_idle, on_handle_closed);
        uv_close((uv_handle_t *)&s->liveness_timer, on_handle_closed);
        uv_close((uv_handle_t *)&s->retry_timer, on_handle_closed);
    }
    if (s->trig_open) {
        triggers_close(s);
        uv_close((uv_handle_t *)&s->trig_timer, on_handle_closed);
    }
}

void loom_sched_destroy(loom_sched_t **sp)
{
    loom_sched_t *s = sp ? *sp : NULL;
    if (!s) return;
    void *v;
    triggers_free(s);
    artifacts_free_uploads(s);
    loom_metrics_destroy(&s->metrics);
    loom_secrets_destroy(&s->secrets);
    json_decref(s->pending_events);
    for (size_t i = 0; loom_map_next(&s->runs, &i, &v);) run_free(v);
    for (size_t i = 0; loom_map_next(&s->agents, &i, &v);) agent_free(v);
    for (size_t i = 0; loom_map_next(&s->pools, &i, &v);) {
        pool_t *p = v;
        free(p->name);
        free(p);
    }
    loom_map_free(&s->pools);
    for (size_t i = 0; loom_map_next(&s->group_of, &i, &v);) free(v);
    loom_map_free(&s->group_of);
    free(s->agent_list);
    free(s->recent_ring);
    loom_map_free(&s->recent_ended);
    free(s->freed);
    loom_map_free(&s->pipeline_running);
    loom_map_free(&s->runs);
    loom_map_free(&s->check_runs);
    loom_map_free(&s->attempts);
    loom_map_free(&s->agents);
    loom_map_free(&s->by_rid);
    sodium_memzero(s->server_sec, sizeof s->server_sec);
    loom_map_free(&s->changed_runs);
    loom_map_free(&s->output_runs);
    while (s->out_head) {
        outmsg_t *m = s->out_head;
        s->out_head = m->next;
        free(m->agent);
        free(m->rid);
        free(m->data);
        free(m);
    }
    loom_store_destroy(&s->store);
    loom_objects_destroy(&s->objects);
    if (s->lock_fd >= 0) close(s->lock_fd);
    if (s->own_zctx) zmq_ctx_term(s->zctx);
    free(s->state_dir);
    free(s->bind);
    free(s);
    *sp = NULL;
}

char *loom_sched_log_path(loom_sched_t *s, uint64_t run_id, uint64_t attempt_id)
{
    return loom_xasprintf("%s/logs/%llu/%llu.log", s->state_dir, (unsigned long long)run_id,
                          (unsigned long long)attempt_id);
}

char *loom_sched_log_ts_path(loom_sched_t *s, uint64_t run_id, uint64_t attempt_id)
{
    return loom_xasprintf("%s/logs/%llu/%llu.ts", s->state_dir, (unsigned long long)run_id,
                          (unsigned long long)attempt_id);
}

bool loom_sched_run_active(loom_sched_t *s, uint64_t run_id)
{
    return loom_map_get(&s->runs, run_id) != NULL;
}

bool loom_sched_attempt_active(loom_sched_t *s, uint64_t attempt_id)
{
    return loom_map_get(&s->attempts, attempt_id) != NULL;
}
