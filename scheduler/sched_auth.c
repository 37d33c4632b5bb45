/* Who may speak on the agents' socket. The socket is a CURVE server; its
 * ZAP handler (an inproc REP socket served by this loop) admits every key
 * but revoked ones, so that an unknown key can still present a join token,
 * and names each connection by its key (ZeroMQ's User-Id metadata). Then,
 * per message: Join enrols a key with a one-time token; Hello is accepted
 * only from a key approved for the agent it names, and binds that agent to
 * the connection (routing id); every later message must come on that
 * connection with that key, or it is dropped.
 *
 * libzmq's CURVE server admits any client that knows the server key when
 * no ZAP handler answers, so the handler is started before the socket is
 * bound, a failure of it stops loomd, and every start checks with a fresh
 * key that the handler saw the handshake and that the key got nothing. */
#include "sched_internal.h"
#include "store_keys.h"

#include "loom/curve.h"
#include "loom/err.h"
#include "loom/log.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ZAP_ENDPOINT "inproc://zeromq.zap.01"
#define SELFCHECK_NAME "loomd-selfcheck"
#define SELFCHECK_MS 5000
#define JOIN_TTL_MS (3600u * 1000u)

const char *loom_sched_server_key(loom_sched_t *s)
{
    return s->server_pub;
}

/* --- ZAP ----------------------------------------------------------------- */

static void zap_fatal(const char *what)
{
    /* Without its ZAP handler the CURVE server would admit anyone. */
    LOG_ERROR("ZAP handler failed: %s; exiting, since CURVE without it admits every client", what);
    exit(3);
}

static void on_zap_request(void *ud, zmq_msg_t *parts, size_t nparts)
{
    loom_sched_t *s = ud;
    if (nparts < 6) zap_fatal("malformed request");
    const char *status = "400", *text = "refused";
    char key[41] = "";
    size_t mech_len = zmq_msg_size(&parts[5]);
    bool curve = mech_len == 5 && memcmp(zmq_msg_data(&parts[5]), "CURVE", 5) == 0;
    if (curve && nparts >= 7 && zmq_msg_size(&parts[6]) == 32) {
        zmq_z85_encode(key, zmq_msg_data(&parts[6]), 32);
        loom_key_state state = KEY_UNKNOWN;
        if (strcmp(key, s->selfcheck_key) == 0) s->selfcheck_zap_seen = true;
        if (loom_store_key_get(s->store, key, &state, NULL) != 0) {
            text = "database error";
        } else if (state == KEY_REVOKED) {
            text = "key revoked";
            LOG_WARN("refused a revoked key at handshake key=%s", key);
        } else {
            /* Approved, pending or unknown: unknown keys may only Join or
             * be told they are not enrolled (auth_sender). */
            status = "200";
            text = "OK";
        }
    }
    const void *out[6] = {"1.0", zmq_msg_data(&parts[1]), status, text, key, ""};
    size_t lens[6] = {3, zmq_msg_size(&parts[1]), 3, strlen(text), strlen(key), 0};
    if (loom_zsock_send(s->zap, out, lens, 6) != 0) zap_fatal(zmq_strerror(errno));
}

static void on_zap_closed(void *ud)
{
    loom_sched_t *s = ud;
    if (--s->open_handles == 0 && s->on_closed) s->on_closed(s->closed_ud);
}

void auth_close(loom_sched_t *s)
{
    if (!s->zap) return;
    loom_zsock_close(s->zap, on_zap_closed);
    s->zap = NULL;
}

/* Binds the ZAP endpoint. zmq_close() returns before ZeroMQ's reaper
 * thread has unregistered the closed socket's inproc endpoints, so a
 * scheduler reopened on the same context (loom_sched_close, then _new and
 * _open again in one process) can find the name still taken for a moment;
 * only a socket of this context can hold it, so waiting a little is safe. */
static int zap_bind(void *rep)
{
    uint64_t end = loom_mono_ms() + 2000;
    while (zmq_bind(rep, ZAP_ENDPOINT) != 0) {
        if (errno != EADDRINUSE || loom_mono_ms() >= end) return -1;
        uv_sleep(2);
    }
    return 0;
}

int auth_open(loom_sched_t *s, void *router, char *why, size_t whylen)
{
    if (s->cfg.insecure_plaintext) {
        LOG_WARN("agents' socket in PLAINTEXT mode: no encryption, no authentication");
        return 0;
    }
    char *dir = loom_xasprintf("%s/curve", s->state_dir);
    int rc = loom_curve_keypair_load(dir, "server", s->server_pub, s->server_sec, why, whylen);
    free(dir);
    if (rc) return rc;
    if (!s->cfg.fault_skip_zap) {
        void *rep = zmq_socket(s->zctx, ZMQ_REP);
        int zero = 0;
        zmq_setsockopt(rep, ZMQ_LINGER, &zero, sizeof zero);
        if (zap_bind(rep) != 0) {
            snprintf(why, whylen, "cannot start the ZAP handler on %s: %s", ZAP_ENDPOINT,
                     zmq_strerror(errno));
            zmq_close(rep);
            return LOOM_ENET;
        }
        s->zap = loom_zsock_new(s->loop, rep, on_zap_request, s);
        if (!s->zap || loom_zsock_start(s->zap) != 0) {
            snprintf(why, whylen, "cannot watch the ZAP handler's socket");
            return LOOM_EIO;
        }
        s->open_handles++;
    }
    int one = 1;
    if (zmq_setsockopt(router, ZMQ_CURVE_SERVER, &one, sizeof one) != 0 ||
        zmq_setsockopt(router, ZMQ_CURVE_SECRETKEY, s->server_sec, 40) != 0 ||
        zmq_setsockopt(router, ZMQ_ZAP_DOMAIN, "loom", 4) != 0) {
        snprintf(why, whylen, "cannot make the agents' socket a CURVE server: %s",
                 zmq_strerror(errno));
        return LOOM_ENET;
    }
    return 0;
}

/* --- self-check ---------------------------------------------------------- */

/* Where a client reaches an endpoint bound to a wildcard address. */
static char *connect_endpoint(const char *bound)
{
    if (strncmp(bound, "tcp://0.0.0.0:", 14) == 0)
        return loom_xasprintf("tcp://127.0.0.1:%s", bound + 14);
    if (strncmp(bound, "tcp://[::]:", 11) == 0) return loom_xasprintf("tcp://[::1]:%s", bound + 11);
    return loom_xstrdup(bound);
}

static int selfcheck_hello(void *d)
{
    uint8_t session[16];
    randombytes_buf(session, sizeof session);
    Loom__Hello h = LOOM__HELLO__INIT;
    h.name = SELFCHECK_NAME;
    h.session.data = session;
    h.session.len = sizeof session;
    loom_msg_t m = LOOM__ENVELOPE__INIT;
    m.body_case = LOOM__ENVELOPE__BODY_HELLO;
    m.hello = &h;
    uint8_t *buf;
    size_t len;
    if (loom_codec_encode(&m, &buf, &len) != 0) return -1;
    int rc = zmq_send(d, buf, len, ZMQ_DONTWAIT) < 0 ? -1 : 0;
    free(buf);
    return rc;
}

int auth_selfcheck(loom_sched_t *s, const char *endpoint, char *why, size_t whylen)
{
    if (s->cfg.insecure_plaintext) return 0;
    char sec[41];
    zmq_curve_keypair(s->selfcheck_key, sec);
    s->selfcheck_zap_seen = s->selfcheck_refused = false;
    void *d = zmq_socket(s->zctx, ZMQ_DEALER);
    int zero = 0;
    char *to = connect_endpoint(endpoint);
    zmq_setsockopt(d, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(d, ZMQ_CURVE_SERVERKEY, s->server_pub, 40);
    zmq_setsockopt(d, ZMQ_CURVE_PUBLICKEY, s->selfcheck_key, 40);
    zmq_setsockopt(d, ZMQ_CURVE_SECRETKEY, sec, 40);
    sodium_memzero(sec, sizeof sec);
    bool other = false;
    if (zmq_connect(d, to) == 0 && selfcheck_hello(d) == 0) {
        /* The loop is not running yet: serve the ZAP and agents' sockets
         * by hand until the answer comes. */
        uint64_t end = loom_mono_ms() + SELFCHECK_MS;
        while (!s->selfcheck_refused && !other && loom_mono_ms() < end) {
            zmq_pollitem_t item = {.socket = d, .events = ZMQ_POLLIN};
            zmq_poll(&item, 1, 10);
            if (s->zap) loom_zsock_drain(s->zap);
            loom_zsock_drain(s->router);
            sched_flush_now(s);
            zmq_msg_t msg;
            zmq_msg_init(&msg);
            if (zmq_msg_recv(&msg, d, ZMQ_DONTWAIT) >= 0) {
                loom_msg_t *m = NULL;
                char ignore[160];
                if (loom_codec_decode(zmq_msg_data(&msg), zmq_msg_size(&msg), &m, ignore,
                                      sizeof ignore) == 0 &&
                    m->body_case == LOOM__ENVELOPE__BODY_ERROR && m->error->not_enrolled)
                    s->selfcheck_refused = true;
                else
                    other = true;
                loom_codec_free(m);
            }
            zmq_msg_close(&msg);
        }
    }
    zmq_close(d);
    free(to);
    if (!s->selfcheck_zap_seen) {
        snprintf(why, whylen,
                 "CURVE self-check failed: the ZAP handler never saw a test client's handshake on "
                 "%s, so any client knowing the server key would get in; refusing to run",
                 endpoint);
        return LOOM_ESTATE;
    }
    if (!s->selfcheck_refused) {
        snprintf(why, whylen,
                 "CURVE self-check failed: a fresh, unenrolled key %s on %s; refusing to run",
                 other ? "got an answer other than \"not enrolled\"" : "got no answer", endpoint);
        return LOOM_ESTATE;
    }
    LOG_INFO("CURVE self-check passed: an unknown key is refused");
    return 0;
}

/* --- per message --------------------------------------------------------- */

static void rid_hex(const zmq_msg_t *rid, char *out, size_t outlen)
{
    sodium_bin2hex(out, outlen, zmq_msg_data((zmq_msg_t *)rid), zmq_msg_size((zmq_msg_t *)rid));
}

static void send_refusal(loom_sched_t *s, zmq_msg_t *rid, const char *text, bool not_enrolled,
                         bool revoked, bool hello)
{
    Loom__Error e = LOOM__ERROR__INIT;
    e.code = LOOM_ESTATE;
    e.message = (char *)text;
    e.not_enrolled = not_enrolled;
    e.revoked = revoked;
    e.hello_required = hello;
    loom_msg_t msg = LOOM__ENVELOPE__INIT;
    msg.body_case = LOOM__ENVELOPE__BODY_ERROR;
    msg.error = &e;
    sched_send_rid(s, zmq_msg_data(rid), zmq_msg_size(rid), &msg);
}

void auth_unbind(loom_sched_t *s, agent_t *a)
{
    if (a->rid_hex) {
        if (loom_smap_get(&s->by_rid, a->rid_hex) == a) loom_smap_del(&s->by_rid, a->rid_hex);
        free(a->rid_hex);
        a->rid_hex = NULL;
    }
    a->rid_len = 0;
    a->key[0] = '\0';
}

static void bind_agent(loom_sched_t *s, agent_t *a, zmq_msg_t *rid, const char *hex,
                       const char *key)
{
    agent_t *prev = loom_smap_get(&s->by_rid, hex);
    if (prev && prev != a) auth_unbind(s, prev);
    auth_unbind(s, a);
    a->rid_hex = loom_xstrdup(hex);
    a->rid_len = zmq_msg_size(rid);
    memcpy(a->rid, zmq_msg_data(rid), a->rid_len);
    snprintf(a->key, sizeof a->key, "%s", key);
    loom_smap_put(&s->by_rid, a->rid_hex, a);
}

static void send_joined(loom_sched_t *s, zmq_msg_t *rid, const char *error)
{
    Loom__Joined j = LOOM__JOINED__INIT;
    j.server_public_key = error ? "" : s->server_pub;
    j.error = (char *)(error ? error : "");
    loom_msg_t msg = LOOM__ENVELOPE__INIT;
    msg.body_case = LOOM__ENVELOPE__BODY_JOINED;
    msg.joined = &j;
    sched_send_rid(s, zmq_msg_data(rid), zmq_msg_size(rid), &msg);
}

static bool approved_for(loom_sched_t *s, const char *key, const char *name)
{
    loom_key_state state;
    char *agent = NULL;
    bool yes = loom_store_key_get(s->store, key, &state, &agent) == 0 && state == KEY_APPROVED &&
               strcmp(agent, name) == 0;
    free(agent);
    return yes;
}

/* Why the join cannot happen, or NULL; *token_id set when it can, and
 * *already when this key already joined as this name with it. */
static char *join_refusal(loom_sched_t *s, const char *key, const Loom__Join *j, uint64_t *token_id,
                          bool *already)
{
    loom_curve_key_t server;
    const char *secret;
    char why[160];
    if (loom_join_token_parse(j->token, server, &secret, why, sizeof why) != 0)
        return loom_xstrdup(why);
    if (strcmp(server, s->server_pub) != 0)
        return loom_xstrdup("join token is for another loomd (its server key differs)");
    unsigned char hash[32];
    loom_join_secret_hash(secret, hash);
    loom_join_row_t row = {0};
    int rc = loom_store_join_get(s->store, hash, &row);
    char *refusal = NULL;
    uint64_t now = loom_unix_ms();
    if (rc == LOOM_ENOTFOUND)
        refusal = loom_xstrdup("join token not recognised");
    else if (rc)
        refusal = loom_xstrdup("database error");
    else if (row.revoked_ms)
        refusal = loom_xasprintf("join token %llu was revoked", (unsigned long long)row.id);
    else if (row.used_ms && !approved_for(s, key, j->name))
        refusal = loom_xasprintf("join token %llu was already used", (unsigned long long)row.id);
    else if (row.used_ms)
        *already = true; /* a resent Join (its answer was lost): same answer */
    else if (row.expires_ms && now >= row.expires_ms)
        refusal = loom_xasprintf("join token %llu has expired", (unsigned long long)row.id);
    else if (row.name[0] && strcmp(row.name, j->name) != 0)
        refusal = loom_xasprintf("join token %llu is for agent \"%s\", not \"%s\"",
                                 (unsigned long long)row.id, row.name, j->name);
    free(row.name);
    *token_id = row.id;
    if (refusal || *already) return refusal;
    loom_key_state state;
    char *agent = NULL, *other = NULL;
    if (loom_store_key_get(s->store, key, &state, &agent) != 0)
        return loom_xstrdup("database error");
    if (state == KEY_REVOKED)
        refusal = loom_xstrdup("this key was revoked; make a new one");
    else if (state == KEY_APPROVED && strcmp(agent, j->name) != 0)
        refusal = loom_xasprintf("this key is already approved for agent \"%s\"", agent);
    else if (loom_store_key_other_approved(s->store, j->name, key, &other) != 0)
        refusal = loom_xstrdup("database error");
    else if (other)
        refusal = loom_xasprintf("agent \"%s\" already has an approved key; revoke it first "
                                 "(`loom agents revoke %s`) or choose another name",
                                 j->name, j->name);
    free(agent);
    free(other);
    return refusal;
}

static void on_join(loom_sched_t *s, zmq_msg_t *rid, const char *key, const Loom__Join *j)
{
    if (s->cfg.insecure_plaintext) {
        send_joined(s, rid, "loomd runs without CURVE: nothing to join");
        return;
    }
    uint64_t token_id = 0;
    bool already = false;
    char *refusal = join_refusal(s, key, j, &token_id, &already);
    if (!refusal && !already) {
        /* The key's approval and the token's use commit together. */
        char *via = loom_xasprintf("join token %llu", (unsigned long long)token_id);
        uint64_t now = loom_unix_ms();
        if (loom_store_key_approve(s->store, key, j->name, via, now) != 0 ||
            loom_store_join_use(s->store, token_id, now) != 0)
            refusal = loom_xstrdup("database error");
        free(via);
    }
    if (refusal) {
        LOG_WARN("join refused agent=%s key=%s: %s", j->name, key, refusal);
    } else if (!already) {
        loom_sched_commit(s);
        LOG_INFO("agent joined agent=%s key=%s token=%llu", j->name, key,
                 (unsigned long long)token_id);
    }
    send_joined(s, rid, refusal);
    free(refusal);
}

/* A Hello: the agent it names, if the key is approved for it. */
static agent_t *hello_sender(loom_sched_t *s, zmq_msg_t *rid, const char *hex, const char *key,
                             const Loom__Hello *h)
{
    if (!s->cfg.insecure_plaintext) {
        if (strcmp(key, s->selfcheck_key) == 0) {
            s->selfcheck_refused = true; /* and answered as any stranger is */
            send_refusal(s, rid, "not enrolled", true, false, false);
            return NULL;
        }
        loom_key_state state;
        char *agent = NULL;
        if (loom_store_key_get(s->store, key, &state, &agent) != 0) return NULL;
        char *text = NULL;
        if (state == KEY_UNKNOWN || state == KEY_PENDING) {
            /* Recorded (and logged) once per claim, not at every retry. */
            if (state == KEY_UNKNOWN || strcmp(agent, h->name) != 0) {
                LOG_WARN("agent not enrolled agent=%s key=%s: approve with `loom agents approve "
                         "%s`",
                         h->name, key, key);
                loom_store_key_pending(s->store, key, h->name, loom_unix_ms());
            }
            text = loom_xasprintf("not enrolled: run `loom agents approve %s` on the server, or "
                                  "join with a token (`loom agents token`)",
                                  key);
            send_refusal(s, rid, text, true, false, false);
        } else if (state == KEY_REVOKED) {
            send_refusal(s, rid, "this agent's key was revoked", false, true, false);
        } else if (strcmp(agent, h->name) != 0) {
            s->stats.bad_messages++;
            LOG_WARN("refused hello agent=%s: key=%s is approved for agent=%s", h->name, key,
                     agent);
            text =
                loom_xasprintf("this key is approved for agent \"%s\", not \"%s\"", agent, h->name);
            send_refusal(s, rid, text, false, false, false);
        }
        free(agent);
        if (state != KEY_APPROVED || text) {
            free(text);
            return NULL;
        }
    }
    agent_t *a = agent_get_or_add(s, h->name);
    bind_agent(s, a, rid, hex, key);
    return a;
}

agent_t *auth_sender(loom_sched_t *s, zmq_msg_t *parts, const loom_msg_t *m, bool *done)
{
    *done = true;
    const char *key = "";
    if (!s->cfg.insecure_plaintext) {
        key = zmq_msg_gets(&parts[1], "User-Id");
        if (!key || !loom_curve_key_valid(key)) {
            /* Only a connection that went through ZAP has one. */
            s->stats.bad_messages++;
            LOG_WARN("dropped a message without a CURVE key (ZAP did not see its connection)");
            return NULL;
        }
    }
    char hex[2 * 256 + 1];
    rid_hex(&parts[0], hex, sizeof hex);
    if (m->body_case == LOOM__ENVELOPE__BODY_JOIN) {
        on_join(s, &parts[0], key, m->join);
        return NULL;
    }
    if (m->body_case == LOOM__ENVELOPE__BODY_HELLO) {
        agent_t *a = hello_sender(s, &parts[0], hex, key, m->hello);
        *done = a == NULL;
        return a;
    }
    agent_t *a = loom_smap_get(&s->by_rid, hex);
    if (!a) {
        send_refusal(s, &parts[0], "unknown agent: send hello", false, false, true);
        return NULL;
    }
    if (strcmp(a->key, key) != 0) {
        /* Cannot happen on one connection; refuse loudly if it ever does. */
        s->stats.bad_messages++;
        LOG_ERROR("dropped %s claiming agent=%s: its key %s is not the agent's",
                  loom_codec_kind_name(m->body_case), a->name, key);
        return NULL;
    }
    *done = false;
    return a;
}

/* --- administration ------------------------------------------------------ */

int loom_sched_join_token(loom_sched_t *s, const char *name, uint64_t ttl_ms, json_t **result)
{
    if (!s->server_pub[0]) return LOOM_ESTATE;
    if (name && *name && !loom_name_valid(name)) return LOOM_EINVAL;
    unsigned char hash[32];
    char *token = loom_join_token_new(s->server_pub, hash);
    uint64_t now = loom_unix_ms(), id = 0;
    uint64_t expires = now + (ttl_ms ? ttl_ms : JOIN_TTL_MS);
    int rc = loom_store_join_add(s->store, name, hash, now, expires, &id);
    if (rc == 0) rc = loom_sched_commit(s);
    if (rc == 0) {
        *result =
            json_pack("{s:s,s:I,s:I,s:s?}", "token", token, "id", (json_int_t)id, "expires_unix_ms",
                      (json_int_t)expires, "name", name && *name ? name : NULL);
        LOG_INFO("join token created id=%llu name=%s", (unsigned long long)id,
                 name && *name ? name : "(any)");
    }
    sodium_memzero(token, strlen(token));
    free(token);
    return rc;
}

int loom_sched_key_approve(loom_sched_t *s, const char *key, const char *name, char *why,
                           size_t whylen)
{
    if (!loom_curve_key_valid(key)) {
        snprintf(why, whylen, "\"%s\" is not a 40-character Z85 CURVE public key", key);
        return LOOM_EINVAL;
    }
    if (name && !loom_name_valid(name)) {
        snprintf(why, whylen, "agent name \"%s\" is invalid: use 1-63 of [A-Za-z0-9_.-]", name);
        return LOOM_EINVAL;
    }
    loom_key_state state;
    char *claimed = NULL, *other = NULL;
    int rc = loom_store_key_get(s->store, key, &state, &claimed);
    if (rc) return rc;
    const char *agent = name ? name : claimed;
    if (state == KEY_REVOKED) {
        snprintf(why, whylen,
                 "key %s was revoked; a revoked key stays revoked (the agent must "
                 "make a new key pair)",
                 key);
        rc = LOOM_ESTATE;
    } else if (!agent) {
        snprintf(why, whylen, "key %s has never connected: give the agent's name", key);
        rc = LOOM_EINVAL;
    } else if (state == KEY_APPROVED && strcmp(claimed, agent) != 0) {
        snprintf(why, whylen, "key %s is already approved for agent \"%s\"", key, claimed);
        rc = LOOM_EEXISTS;
    } else if ((rc = loom_store_key_other_approved(s->store, agent, key, &other)) != 0) {
        snprintf(why, whylen, "database error");
    } else if (other) {
        snprintf(why, whylen,
                 "agent \"%s\" already has an approved key; revoke it first (`loom "
                 "agents revoke %s`)",
                 agent, agent);
        rc = LOOM_EEXISTS;
    } else {
        rc = loom_store_key_approve(s->store, key, agent, "approved by an administrator",
                                    loom_unix_ms());
        if (rc == 0) rc = loom_sched_commit(s);
        if (rc == 0) LOG_INFO("agent key approved agent=%s key=%s", agent, key);
        if (rc) snprintf(why, whylen, "database error");
    }
    free(claimed);
    free(other);
    return rc;
}

int loom_sched_agent_revoke(loom_sched_t *s, const char *name, uint32_t *n_keys)
{
    *n_keys = 0;
    int rc = loom_store_keys_revoke(s->store, name, loom_unix_ms(), n_keys);
    if (rc) return rc;
    agent_t *a = loom_smap_get(&s->agents, name);
    if (!a && *n_keys == 0) return LOOM_ENOTFOUND;
    if (a) {
        if (a->rid_hex) {
            Loom__Error e = LOOM__ERROR__INIT;
            e.code = LOOM_ESTATE;
            e.message = "this agent's key was revoked";
            e.revoked = true;
            loom_msg_t msg = LOOM__ENVELOPE__INIT;
            msg.body_case = LOOM__ENVELOPE__BODY_ERROR;
            msg.error = &e;
            sched_send_rid(s, a->rid, a->rid_len, &msg);
        }
        auth_unbind(s, a);
        if (a->state != AGENT_LOST) {
            a->state = AGENT_LOST;
            loom_store_agent_state(s->store, a->name, "lost", a->last_seen_unix);
        }
        while (!link_empty(&a->attempts))
            attempt_lost(s, CONTAINER_OF(a->attempts.next, attempt_t, on_agent), "agent revoked");
    }
    LOG_WARN("agent revoked agent=%s keys=%u", name, *n_keys);
    return loom_sched_commit(s);
}

json_t *loom_sched_keys_json(loom_sched_t *s)
{
    return loom_store_keys_json(s->store);
}
