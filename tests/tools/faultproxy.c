/* faultproxy: a ZeroMQ hop between loom-agents and loomd that loses,
 * duplicates, delays and reorders messages on purpose, for the fault tests.
 *
 * Agents connect their DEALER to our ROUTER. For each agent connection we
 * open a DEALER to loomd; replies come back on that DEALER and go out of the
 * ROUTER to the agent. loomd speaks CURVE, which a message-level hop cannot
 * pass through, so with --curve-secret-file (loomd's server.key) the proxy
 * ends CURVE on both sides: its ROUTER is a CURVE server with loomd's own
 * key pair (so the agents' pinned key fits), its ZAP handler learns each
 * agent's key, and its DEALER to loomd uses a key pair derived from that
 * agent's key (the same agent always gets the same one, so what the agent
 * enrols through the proxy stays enrolled). Every message, either way, draws from a seeded
 * generator: dropped, sent twice, held back for a random delay (which also reorders it behind later
 * ones), or swapped with the next one on the same path. Each fault is logged with the message's
 * kind and attempt, so a test that fails can say which message was lost. */
#include "loom/codec.h"

#include <sodium.h>

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#define MAX_PEERS 64
#define MAX_ID 255
#define HOLD_MAX_MS 50 /* a message held for a swap goes out after this anyway */

typedef struct {
    double drop, dup, delay, reorder;
    uint64_t delay_max_ms, seed;
    const char *listen, *connect, *addr_file, *curve_secret_file;
    bool verbose;
} options_t;

typedef struct msg {
    struct msg *next;
    int peer; /* index into peers */
    bool to_agent;
    uint64_t due; /* monotonic ms */
    size_t len;
    unsigned char data[];
} msg_t;

typedef struct {
    unsigned char id[MAX_ID];
    size_t idlen;
    void *dealer;
    msg_t *held[2]; /* a message waiting to be swapped, per direction */
} peer_t;

typedef struct {
    options_t o;
    void *zctx, *router;
    void *zap;                           /* with CURVE: our ZAP handler */
    char server_pub[41], server_sec[41]; /* loomd's key pair */
    peer_t peers[MAX_PEERS];
    int n_peers;
    msg_t *delayed; /* sorted by due */
    uint64_t rng;
    uint64_t forwarded, dropped, duplicated, delayed_n, reordered;
} proxy_t;

static volatile sig_atomic_t stop;
/* A partition: SIGUSR1 cuts every route (messages both ways are lost),
 * SIGUSR2 heals it. */
static volatile sig_atomic_t cut;

static void on_cut(int sig)
{
    cut = sig == SIGUSR1;
}

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* splitmix64: reproducible from --seed, which is all a test tool needs. */
static uint64_t next_u64(proxy_t *p)
{
    uint64_t z = (p->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static bool chance(proxy_t *p, double rate)
{
    return rate > 0 && (double)(next_u64(p) >> 11) / 9007199254740992.0 < rate;
}

/* "finished attempt=12" for the log; unknown bytes are "?". */
static void describe(const msg_t *m, char *out, size_t outlen)
{
    Loom__Envelope *e = loom__envelope__unpack(NULL, m->len, m->data);
    if (!e) {
        snprintf(out, outlen, "?");
        return;
    }
    uint64_t att = 0;
    switch (e->body_case) {
    case LOOM__ENVELOPE__BODY_DISPATCH:
        att = e->dispatch->attempt_id;
        break;
    case LOOM__ENVELOPE__BODY_STARTED:
        att = e->started->attempt_id;
        break;
    case LOOM__ENVELOPE__BODY_LOG:
        att = e->log->attempt_id;
        break;
    case LOOM__ENVELOPE__BODY_LOG_ACK:
        att = e->log_ack->attempt_id;
        break;
    case LOOM__ENVELOPE__BODY_FINISHED:
        att = e->finished->attempt_id;
        break;
    case LOOM__ENVELOPE__BODY_FINISHED_ACK:
        att = e->finished_ack->attempt_id;
        break;
    case LOOM__ENVELOPE__BODY_CANCEL:
        att = e->cancel->attempt_id;
        break;
    default:
        break;
    }
    if (att)
        snprintf(out, outlen, "%s attempt=%" PRIu64, loom_codec_kind_name(e->body_case), att);
    else
        snprintf(out, outlen, "%s", loom_codec_kind_name(e->body_case));
    loom__envelope__free_unpacked(e, NULL);
}

static void note(proxy_t *p, const char *what, const msg_t *m)
{
    if (!p->o.verbose) return;
    char desc[96];
    describe(m, desc, sizeof desc);
    fprintf(stderr, "faultproxy: %" PRIu64 " %s %s agent=%.*s %s\n", now_ms(), what,
            m->to_agent ? "to-agent" : "to-loomd", (int)p->peers[m->peer].idlen,
            (const char *)p->peers[m->peer].id, desc);
}

static void send_now(proxy_t *p, const msg_t *m)
{
    peer_t *peer = &p->peers[m->peer];
    int rc;
    if (m->to_agent) {
        rc = zmq_send(p->router, peer->id, peer->idlen, ZMQ_SNDMORE | ZMQ_DONTWAIT);
        if (rc >= 0) rc = zmq_send(p->router, m->data, m->len, ZMQ_DONTWAIT);
    } else {
        rc = zmq_send(peer->dealer, m->data, m->len, ZMQ_DONTWAIT);
    }
    if (rc < 0 && p->o.verbose) note(p, "send-failed", m);
    p->forwarded++;
}

static void schedule(proxy_t *p, msg_t *m)
{
    msg_t **at = &p->delayed;
    while (*at && (*at)->due <= m->due) at = &(*at)->next;
    m->next = *at;
    *at = m;
}

static msg_t *copy_msg(const msg_t *m)
{
    msg_t *c = malloc(sizeof *c + m->len);
    if (!c) abort();
    memcpy(c, m, sizeof *c + m->len);
    c->next = NULL;
    return c;
}

/* Sends m now, or after its delay, through the swap slot of its path. */
static void deliver(proxy_t *p, msg_t *m)
{
    peer_t *peer = &p->peers[m->peer];
    msg_t **held = &peer->held[m->to_agent];
    if (!*held && chance(p, p->o.reorder)) {
        note(p, "hold-for-swap", m);
        p->reordered++;
        m->due = now_ms() + HOLD_MAX_MS;
        *held = m;
        return;
    }
    send_now(p, m);
    free(m);
    if (*held) {
        send_now(p, *held);
        free(*held);
        *held = NULL;
    }
}

static void route(proxy_t *p, int peer, bool to_agent, const void *data, size_t len)
{
    msg_t *m = malloc(sizeof *m + len);
    if (!m) abort();
    *m = (msg_t){.peer = peer, .to_agent = to_agent, .len = len};
    memcpy(m->data, data, len);
    if (cut) {
        note(p, "cut", m);
        p->dropped++;
        free(m);
        return;
    }
    if (chance(p, p->o.drop)) {
        note(p, "drop", m);
        p->dropped++;
        free(m);
        return;
    }
    int copies = 1;
    if (chance(p, p->o.dup)) {
        note(p, "duplicate", m);
        p->duplicated++;
        copies = 2;
    }
    for (int i = 0; i < copies; i++) {
        msg_t *c = i + 1 < copies ? copy_msg(m) : m;
        if (chance(p, p->o.delay) && p->o.delay_max_ms) {
            c->due = now_ms() + 1 + next_u64(p) % p->o.delay_max_ms;
            note(p, "delay", c);
            p->delayed_n++;
            schedule(p, c);
        } else {
            deliver(p, c);
        }
    }
}

/* Our key pair towards loomd for the agent whose key is agent_z85. */
static bool derive_keys(const char *agent_z85, char pub[41], char sec[41])
{
    uint8_t raw[32], s[32], pk[32];
    if (!agent_z85 || strlen(agent_z85) != 40 || !zmq_z85_decode(raw, agent_z85)) return false;
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, sizeof s);
    crypto_generichash_update(&st, raw, sizeof raw);
    crypto_generichash_update(&st, (const uint8_t *)"faultproxy", 10);
    crypto_generichash_final(&st, s, sizeof s);
    crypto_scalarmult_base(pk, s);
    zmq_z85_encode(pub, pk, 32);
    zmq_z85_encode(sec, s, 32);
    return true;
}

static int find_or_add_peer(proxy_t *p, const void *id, size_t idlen, const char *agent_key)
{
    for (int i = 0; i < p->n_peers; i++)
        if (p->peers[i].idlen == idlen && memcmp(p->peers[i].id, id, idlen) == 0) return i;
    if (p->n_peers == MAX_PEERS || idlen == 0 || idlen > MAX_ID) return -1;
    peer_t *peer = &p->peers[p->n_peers];
    void *d = zmq_socket(p->zctx, ZMQ_DEALER);
    int zero = 0;
    char pub[41], sec[41];
    if (p->zap && !derive_keys(agent_key, pub, sec)) {
        fprintf(stderr, "faultproxy: a message without the agent's CURVE key\n");
        if (d) zmq_close(d);
        return -1;
    }
    if (d && p->zap &&
        (zmq_setsockopt(d, ZMQ_CURVE_SERVERKEY, p->server_pub, 40) != 0 ||
         zmq_setsockopt(d, ZMQ_CURVE_PUBLICKEY, pub, 40) != 0 ||
         zmq_setsockopt(d, ZMQ_CURVE_SECRETKEY, sec, 40) != 0)) {
        zmq_close(d);
        d = NULL;
    }
    if (!d || zmq_setsockopt(d, ZMQ_LINGER, &zero, sizeof zero) != 0 ||
        zmq_connect(d, p->o.connect) != 0) {
        fprintf(stderr, "faultproxy: cannot connect to %s: %s\n", p->o.connect,
                zmq_strerror(zmq_errno()));
        if (d) zmq_close(d);
        return -1;
    }
    memcpy(peer->id, id, idlen);
    peer->idlen = idlen;
    peer->dealer = d;
    fprintf(stderr, "faultproxy: new agent connection key=%s\n", agent_key ? agent_key : "-");
    return p->n_peers++;
}

/* Everything waiting on the router: [identity, body] from agents. */
static void drain_router(proxy_t *p)
{
    for (;;) {
        zmq_msg_t id, body;
        zmq_msg_init(&id);
        if (zmq_msg_recv(&id, p->router, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&id);
            return;
        }
        zmq_msg_init(&body);
        bool two = zmq_msg_more(&id) && zmq_msg_recv(&body, p->router, 0) >= 0;
        while (two && zmq_msg_more(&body)) { /* agents send one frame; discard extras */
            zmq_msg_t extra;
            zmq_msg_init(&extra);
            zmq_msg_recv(&extra, p->router, 0);
            zmq_msg_close(&extra);
        }
        const char *key = two && p->zap ? zmq_msg_gets(&body, "User-Id") : NULL;
        int peer = two ? find_or_add_peer(p, zmq_msg_data(&id), zmq_msg_size(&id), key) : -1;
        if (peer >= 0) route(p, peer, false, zmq_msg_data(&body), zmq_msg_size(&body));
        zmq_msg_close(&id);
        zmq_msg_close(&body);
    }
}

static void drain_dealer(proxy_t *p, int peer)
{
    for (;;) {
        zmq_msg_t body;
        zmq_msg_init(&body);
        if (zmq_msg_recv(&body, p->peers[peer].dealer, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&body);
            return;
        }
        route(p, peer, true, zmq_msg_data(&body), zmq_msg_size(&body));
        zmq_msg_close(&body);
    }
}

/* Releases delayed messages and swap slots whose time has come; returns
 * how long until the next one, or -1 when nothing waits. */
static long release_due(proxy_t *p)
{
    uint64_t now = now_ms();
    while (p->delayed && p->delayed->due <= now) {
        msg_t *m = p->delayed;
        p->delayed = m->next;
        deliver(p, m);
    }
    uint64_t next = p->delayed ? p->delayed->due : UINT64_MAX;
    for (int i = 0; i < p->n_peers; i++) {
        for (int dir = 0; dir < 2; dir++) {
            msg_t *h = p->peers[i].held[dir];
            if (h && h->due <= now) {
                p->peers[i].held[dir] = NULL;
                send_now(p, h);
                free(h);
            } else if (h && h->due < next) {
                next = h->due;
            }
        }
    }
    return next == UINT64_MAX ? -1 : (long)(next - now);
}

/* ZAP: admit every key, and name the connection by it (User-Id). */
static void serve_zap(proxy_t *p)
{
    /* version, request id, domain, address, routing id, mechanism, key */
    zmq_msg_t parts[7];
    size_t n = 0;
    bool more = true;
    while (more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, p->zap, n ? 0 : ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            break;
        }
        more = zmq_msg_more(&m);
        if (n < 7)
            parts[n++] = m;
        else
            zmq_msg_close(&m);
    }
    if (n == 0) return;
    char key[41] = "";
    if (n == 7 && zmq_msg_size(&parts[6]) == 32) zmq_z85_encode(key, zmq_msg_data(&parts[6]), 32);
    zmq_send(p->zap, "1.0", 3, ZMQ_SNDMORE);
    zmq_send(p->zap, n > 1 ? zmq_msg_data(&parts[1]) : "", n > 1 ? zmq_msg_size(&parts[1]) : 0,
             ZMQ_SNDMORE);
    zmq_send(p->zap, key[0] ? "200" : "400", 3, ZMQ_SNDMORE);
    zmq_send(p->zap, "", 0, ZMQ_SNDMORE);
    zmq_send(p->zap, key, strlen(key), ZMQ_SNDMORE);
    zmq_send(p->zap, "", 0, 0);
    for (size_t i = 0; i < n; i++) zmq_msg_close(&parts[i]);
}

static int run(proxy_t *p)
{
    zmq_pollitem_t items[2 + MAX_PEERS];
    while (!stop) {
        long wait = release_due(p);
        items[0] = (zmq_pollitem_t){.socket = p->router, .events = ZMQ_POLLIN};
        for (int i = 0; i < p->n_peers; i++)
            items[1 + i] = (zmq_pollitem_t){.socket = p->peers[i].dealer, .events = ZMQ_POLLIN};
        int nz = p->n_peers + 1;
        if (p->zap) items[nz++] = (zmq_pollitem_t){.socket = p->zap, .events = ZMQ_POLLIN};
        int n = zmq_poll(items, nz, wait < 0 ? 200 : wait);
        if (n < 0) {
            if (errno == EINTR) continue;
            fprintf(stderr, "faultproxy: poll: %s\n", zmq_strerror(errno));
            return 1;
        }
        if (p->zap && (items[1 + p->n_peers].revents & ZMQ_POLLIN)) serve_zap(p);
        if (items[0].revents & ZMQ_POLLIN) drain_router(p);
        for (int i = 0; i < p->n_peers; i++)
            if (items[1 + i].revents & ZMQ_POLLIN) drain_dealer(p, i);
    }
    return 0;
}

static int parse_rate(const char *flag, const char *v, double *out)
{
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (errno || end == v || *end || d < 0 || d > 1) {
        fprintf(stderr, "faultproxy: %s %s: want a rate from 0 to 1\n", flag, v);
        return -1;
    }
    *out = d;
    return 0;
}

static int parse_u64(const char *flag, const char *v, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    if (errno || end == v || *end || *v == '-') {
        fprintf(stderr, "faultproxy: %s %s: want a whole number\n", flag, v);
        return -1;
    }
    *out = n;
    return 0;
}

static void usage(FILE *out)
{
    fputs("usage: faultproxy --connect ENDPOINT [options]\n"
          "  --listen ENDPOINT   where agents connect (default tcp://127.0.0.1:*)\n"
          "  --connect ENDPOINT  loomd's agent endpoint\n"
          "  --addr-file FILE    write the bound endpoint here once listening\n"
          "  --curve-secret-file FILE  loomd's server.key: end CURVE on both sides\n"
          "  --drop RATE         lose a message (0..1)\n"
          "  --dup RATE          send a message twice\n"
          "  --delay RATE        hold a message back 1..--delay-max ms\n"
          "  --delay-max MS      (default 200)\n"
          "  --reorder RATE      swap a message with the next one on its path\n"
          "  --seed N            generator seed (default 1)\n"
          "  --verbose           log every fault with the message's kind and attempt\n",
          out);
}

static int parse_args(int argc, char **argv, options_t *o)
{
    static const struct option longopts[] = {{"listen", required_argument, NULL, 'l'},
                                             {"connect", required_argument, NULL, 'c'},
                                             {"addr-file", required_argument, NULL, 'a'},
                                             {"curve-secret-file", required_argument, NULL, 'k'},
                                             {"drop", required_argument, NULL, 'd'},
                                             {"dup", required_argument, NULL, 'u'},
                                             {"delay", required_argument, NULL, 'y'},
                                             {"delay-max", required_argument, NULL, 'm'},
                                             {"reorder", required_argument, NULL, 'r'},
                                             {"seed", required_argument, NULL, 's'},
                                             {"verbose", no_argument, NULL, 'v'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    int c, bad = 0;
    while (!bad && (c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'l':
            o->listen = optarg;
            break;
        case 'c':
            o->connect = optarg;
            break;
        case 'a':
            o->addr_file = optarg;
            break;
        case 'k':
            o->curve_secret_file = optarg;
            break;
        case 'd':
            bad = parse_rate("--drop", optarg, &o->drop);
            break;
        case 'u':
            bad = parse_rate("--dup", optarg, &o->dup);
            break;
        case 'y':
            bad = parse_rate("--delay", optarg, &o->delay);
            break;
        case 'r':
            bad = parse_rate("--reorder", optarg, &o->reorder);
            break;
        case 'm':
            bad = parse_u64("--delay-max", optarg, &o->delay_max_ms);
            break;
        case 's':
            bad = parse_u64("--seed", optarg, &o->seed);
            break;
        case 'v':
            o->verbose = true;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return 2;
        }
    }
    if (bad) return 2;
    if (!o->connect || optind < argc) {
        usage(stderr);
        return 2;
    }
    return 0;
}

static int write_addr(const char *path, const char *endpoint)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return -1;
    fprintf(f, "%s\n", endpoint);
    if (fclose(f) != 0) return -1;
    return rename(tmp, path);
}

int main(int argc, char **argv)
{
    proxy_t p = {.o = {.listen = "tcp://127.0.0.1:*", .delay_max_ms = 200, .seed = 1}};
    int rc = parse_args(argc, argv, &p.o);
    if (rc) return rc;
    p.rng = p.o.seed;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGUSR1, on_cut);
    signal(SIGUSR2, on_cut);
    p.zctx = zmq_ctx_new();
    p.router = zmq_socket(p.zctx, ZMQ_ROUTER);
    int one = 1, zero = 0;
    zmq_setsockopt(p.router, ZMQ_LINGER, &zero, sizeof zero);
    if (p.o.curve_secret_file) {
        FILE *f = fopen(p.o.curve_secret_file, "r");
        char line[128] = "";
        if (!f || !fgets(line, sizeof line, f)) {
            fprintf(stderr, "faultproxy: cannot read %s\n", p.o.curve_secret_file);
            if (f) fclose(f);
            return 1;
        }
        fclose(f);
        line[strcspn(line, "\r\n")] = '\0';
        if (strlen(line) == 40) memcpy(p.server_sec, line, 41);
        p.zap = zmq_socket(p.zctx, ZMQ_REP);
        zmq_setsockopt(p.zap, ZMQ_LINGER, &zero, sizeof zero);
        if (strlen(p.server_sec) != 40 || zmq_curve_public(p.server_pub, p.server_sec) != 0 ||
            zmq_bind(p.zap, "inproc://zeromq.zap.01") != 0 ||
            zmq_setsockopt(p.router, ZMQ_CURVE_SERVER, &one, sizeof one) != 0 ||
            zmq_setsockopt(p.router, ZMQ_CURVE_SECRETKEY, p.server_sec, 40) != 0) {
            fprintf(stderr, "faultproxy: cannot set up CURVE from %s\n", p.o.curve_secret_file);
            return 1;
        }
    }
    char endpoint[256];
    size_t len = sizeof endpoint;
    if (zmq_bind(p.router, p.o.listen) != 0 ||
        zmq_getsockopt(p.router, ZMQ_LAST_ENDPOINT, endpoint, &len) != 0) {
        fprintf(stderr, "faultproxy: cannot bind %s: %s\n", p.o.listen, zmq_strerror(zmq_errno()));
        return 1;
    }
    if (p.o.addr_file && write_addr(p.o.addr_file, endpoint) != 0) {
        fprintf(stderr, "faultproxy: cannot write %s\n", p.o.addr_file);
        return 1;
    }
    fprintf(stderr, "faultproxy: listening on %s, loomd at %s, seed %" PRIu64 "\n", endpoint,
            p.o.connect, p.o.seed);
    rc = run(&p);
    fprintf(stderr,
            "faultproxy: forwarded=%" PRIu64 " dropped=%" PRIu64 " duplicated=%" PRIu64
            " delayed=%" PRIu64 " reordered=%" PRIu64 "\n",
            p.forwarded, p.dropped, p.duplicated, p.delayed_n, p.reordered);
    while (p.delayed) {
        msg_t *m = p.delayed;
        p.delayed = m->next;
        free(m);
    }
    for (int i = 0; i < p.n_peers; i++) {
        free(p.peers[i].held[0]);
        free(p.peers[i].held[1]);
        zmq_close(p.peers[i].dealer);
    }
    zmq_close(p.router);
    if (p.zap) zmq_close(p.zap);
    sodium_memzero(p.server_sec, sizeof p.server_sec);
    zmq_ctx_term(p.zctx);
    return rc;
}
