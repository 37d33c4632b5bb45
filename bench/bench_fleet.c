/* loom-bench-fleet: a simulated fleet against a real loomd. One process holds
 * N agent connections (ZeroMQ DEALER sockets, one context, one thread) that
 * finish every Dispatch at once, while one run of up to 100,000 foreach tasks
 * with mixed resource requests goes through loomd. It measures placements
 * plus recorded completions per second, loomd's memory and CPU, and checks
 * that every task was dispatched once, answered once and acknowledged once.
 * bench/fleet.sh starts loomd and runs this. */
#include "loom/codec.h"
#include "loom/map.h"
#include "loom/util.h"

#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <pthread.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#define GIB (1024ull * 1024 * 1024)
#define HELLO_RETRY_MS 100
#define BUCKET_MS 100
#define MAX_DRAIN 256 /* messages read from one socket before moving on */

/* ---- the simulated machines and the task mix --------------------------------------- */

typedef enum { BOX_CPU, BOX_GPU, BOX_BIG, BOX_KINDS } box_kind;

typedef struct {
    const char *kind; /* the "kind" label */
    uint32_t cpus, slots, n_gpus;
    uint64_t memory, gpu_memory;
    const char *gpu_model;
} box_t;

/* 70% CPU boxes, 25% 4-GPU boxes, 5% 8-GPU boxes (box_of). */
static const box_t boxes[BOX_KINDS] = {
    {"cpu", 32, 32, 0, 128 * GIB, 0, ""},
    {"gpu", 16, 8, 4, 64 * GIB, 40 * GIB, "NVIDIA A100-SXM4-40GB"},
    {"gpu-big", 96, 16, 8, 1024 * GIB, 80 * GIB, "NVIDIA H100 80GB HBM3"},
};

typedef struct {
    const char *name;
    unsigned percent;
    double cpus;
    uint64_t memory;
    uint32_t gpus;
    const char *gpu_model; /* substring, or NULL */
    uint64_t gpu_memory;
    const char *yaml;
} job_t;

#define N_JOBS 4
#define JOB_UNKNOWN 0xff
static const job_t jobs[N_JOBS] = {
    {"cpu_small", 60, 1, 1 * GIB, 0, NULL, 0, "{cpus: 1, memory: 1G}"},
    {"cpu_big", 15, 8, 16 * GIB, 0, NULL, 0, "{cpus: 8, memory: 16G}"},
    {"gpu_one", 20, 0, 0, 1, "A100", 0, "{gpus: 1, gpu_model: A100}"},
    {"gpu_four", 5, 0, 0, 4, NULL, 40 * GIB, "{gpus: 4, gpu_memory: 40G}"},
};

static box_kind box_of(uint32_t i)
{
    uint32_t k = i % 20;
    return k == 0 ? BOX_BIG : k <= 5 ? BOX_GPU : BOX_CPU;
}

static bool job_fits(const job_t *j, const box_t *b)
{
    return j->cpus <= b->cpus && j->memory <= b->memory && j->gpus <= b->n_gpus &&
           (!j->gpu_model || strstr(b->gpu_model, j->gpu_model)) && j->gpu_memory <= b->gpu_memory;
}

static uint8_t job_of(const char *task)
{
    size_t n = strcspn(task, "[");
    for (uint8_t i = 0; i < N_JOBS; i++)
        if (strlen(jobs[i].name) == n && strncmp(task, jobs[i].name, n) == 0) return i;
    return JOB_UNKNOWN;
}

/* ---- state ---------------------------------------------------------------------- */

typedef struct {
    const char *server;   /* http://127.0.0.1:PORT */
    const char *endpoint; /* tcp://127.0.0.1:PORT */
    const char *describe; /* how loomd was started, for the report */
    const char *foreach;  /* "literal" or "params" */
    long agents, tasks, log_bytes, heartbeat_ms, hold_ms, io_threads, timeout_s, loomd_pid;
    bool timeline;
} opts_t;

enum { ATT_HELD = 1, ATT_ACKED, ATT_CANCELLED };

typedef struct {
    uint64_t id;
    uint64_t due_ms; /* --hold-ms: when to finish */
    uint64_t gpu_mask;
    uint32_t agent;
    uint8_t job;
    uint8_t state;
    bool finished_sent;
    bool running; /* between Dispatch and Finished, as far as we know */
} att_t;

typedef struct outmsg {
    struct outmsg *next;
    size_t len;
    uint8_t data[];
} outmsg_t;

typedef struct {
    void *sock;
    char name[16];
    char pub[41], sec[41]; /* its CURVE key pair, approved before it connects */
    box_kind kind;
    uint8_t session[16];
    bool welcomed, ever_welcomed;
    uint32_t hb_ms;
    uint64_t next_hb, next_hello, dispatch_seq, dispatches;
    uint32_t *held; /* attempts (indexes into sim.atts) whose result is not acknowledged */
    size_t n_held, cap_held;
    outmsg_t *out_head, *out_tail;
    uint32_t running;
    double cpus_used;
    uint64_t mem_used, gpus_used;
} agent_t;

typedef struct {
    uint64_t dispatches, dup_dispatches, started, finished_sent, logs_sent, log_acks, acks,
        dup_acks, unknown_acks, early_acks, cancels, late_cancels, errors, hello_again, hb_sent,
        hb_replies, bad_messages, queued_sends, unknown_jobs, welcome_cancels;
    uint64_t placed[N_JOBS][BOX_KINDS], misfit;
    uint64_t gpu_count_mismatch, gpu_conflicts, over_slots, over_cpus, over_memory;
    uint64_t peak_running; /* attempts between Dispatch and Finished, fleet-wide */
    uint64_t rx_bytes, dispatch_bytes, dispatch_bytes_max;
} stats_t;

typedef struct {
    opts_t o;
    void *zctx;
    char server_pub[41]; /* loomd's CURVE key */
    agent_t *agents;
    zmq_pollitem_t *items;
    att_t *atts;
    size_t n_atts, cap_atts;
    loom_map_t by_id; /* attempt id -> index + 1 */
    uint32_t *holdq;  /* --hold-ms: attempts to finish, in arrival order */
    size_t hold_head, hold_tail, hold_cap;
    uint8_t *log_data;
    stats_t st;
    uint64_t running;
    uint64_t job_first_ack[N_JOBS], job_last_ack[N_JOBS], job_acks[N_JOBS]; /* ns, count */
    uint64_t t_first_dispatch, t_last_ack, t_prev_ack, max_gap_ns;          /* monotonic ns */
    /* when the longest gap began (since the first Dispatch), after how many completions */
    uint64_t max_gap_at_ns, max_gap_after;
    uint32_t *buckets; /* acknowledged completions per BUCKET_MS since t0 */
    size_t n_buckets;
    uint64_t rss_peak_sampled_kib;
    double loomd_cpu_end;
    uint64_t hwm_last_ack_kib, rss_last_ack_kib;
    bool cpu_end_read;
    struct rusage ru_end;
} sim_t;

/* Shared with the HTTP thread: everything it writes before setting `phase`
 * to PHASE_DONE or PHASE_FAILED is read by the main thread only after. */
enum { PHASE_SUBMIT, PHASE_RUNNING, PHASE_DONE, PHASE_FAILED };

typedef struct {
    const opts_t *o;
    uint64_t counts[N_JOBS];
    _Atomic int phase;
    _Atomic uint64_t t0; /* monotonic ns just before POST /runs; 0 until then */
    _Atomic bool stop;
    double loomd_cpu_t0;
    struct rusage ru_t0;
    uint64_t post_ms;                  /* how long POST /runs took (run creation) */
    size_t post_bytes, get_bytes;      /* the size of loomd's answers */
    uint64_t rss_t0_kib, hwm_post_kib; /* loomd before POST /runs; its peak once answered */
    uint64_t run_id;
    json_t *run; /* the ended run, with its tasks */
    char error[512];
} ctl_t;

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t mono_ms(void)
{
    return mono_ns() / 1000000ull;
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("bench_fleet: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

/* ---- loomd's process: /proc ------------------------------------------------------ */

static double proc_cpu_s(long pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')');
    unsigned long long ut = 0, stt = 0;
    /* After the command: state ppid pgrp session tty tpgid flags minflt
     * cminflt majflt cmajflt utime stime. */
    if (!p ||
        sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &stt) != 2)
        return -1;
    return (double)(ut + stt) / (double)sysconf(_SC_CLK_TCK);
}

static uint64_t proc_status_kib(long pid, const char *key)
{
    char path[64], line[256];
    size_t klen = strlen(key);
    uint64_t v = 0;
    snprintf(path, sizeof path, "/proc/%ld/status", pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
            v = strtoull(line + klen + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return v;
}

static double rusage_s(const struct rusage *r)
{
    return (double)r->ru_utime.tv_sec + (double)r->ru_utime.tv_usec / 1e6 +
           (double)r->ru_stime.tv_sec + (double)r->ru_stime.tv_usec / 1e6;
}

/* ---- sending ---------------------------------------------------------------------- */

static void out_push(sim_t *s, uint32_t i, const uint8_t *data, size_t len)
{
    agent_t *a = &s->agents[i];
    outmsg_t *m = loom_xmalloc(sizeof *m + len);
    m->next = NULL;
    m->len = len;
    memcpy(m->data, data, len);
    if (a->out_tail)
        a->out_tail->next = m;
    else
        a->out_head = m;
    a->out_tail = m;
    s->items[i].events |= ZMQ_POLLOUT;
    s->st.queued_sends++;
}

/* Sends what waits for room, in order; stops at the first that does not fit. */
static void out_flush(sim_t *s, uint32_t i)
{
    agent_t *a = &s->agents[i];
    while (a->out_head) {
        outmsg_t *m = a->out_head;
        if (zmq_send(a->sock, m->data, m->len, ZMQ_DONTWAIT) < 0) {
            if (errno == EAGAIN) return;
            die("send on %s: %s", a->name, zmq_strerror(errno));
        }
        a->out_head = m->next;
        if (!a->out_head) a->out_tail = NULL;
        free(m);
    }
    s->items[i].events &= (short)~ZMQ_POLLOUT;
}

/* Sends now, or queues behind what already waits; `droppable` messages
 * (Hello before a connection exists) are not queued but retried later. */
static bool send_msg(sim_t *s, uint32_t i, loom_msg_t *m, bool droppable)
{
    agent_t *a = &s->agents[i];
    uint8_t *data;
    size_t len;
    if (loom_codec_encode(m, &data, &len) != 0) die("cannot encode a message");
    bool sent = true;
    if (a->out_head) {
        out_push(s, i, data, len);
    } else if (zmq_send(a->sock, data, len, ZMQ_DONTWAIT) < 0) {
        if (errno != EAGAIN) die("send on %s: %s", a->name, zmq_strerror(errno));
        if (droppable)
            sent = false;
        else
            out_push(s, i, data, len);
    }
    free(data);
    return sent;
}

static uint64_t *held_ids(const sim_t *s, const agent_t *a)
{
    uint64_t *ids = loom_xcalloc(a->n_held + 1, sizeof *ids);
    for (size_t k = 0; k < a->n_held; k++) ids[k] = s->atts[a->held[k]].id;
    return ids;
}

static void send_hello(sim_t *s, uint32_t i)
{
    agent_t *a = &s->agents[i];
    const box_t *b = &boxes[a->kind];
    Loom__Gpu gpu[8], *gpus[8];
    char uuid[8][48];
    for (uint32_t g = 0; g < b->n_gpus; g++) {
        loom__gpu__init(&gpu[g]);
        snprintf(uuid[g], sizeof uuid[g], "GPU-%s-%u", a->name, g);
        gpu[g].index = g;
        gpu[g].uuid = uuid[g];
        gpu[g].model = (char *)b->gpu_model;
        gpu[g].memory_bytes = b->gpu_memory;
        gpus[g] = &gpu[g];
    }
    Loom__Resources__LabelsEntry label = LOOM__RESOURCES__LABELS_ENTRY__INIT, *labels[1] = {&label};
    label.key = "kind";
    label.value = (char *)b->kind;
    Loom__Resources res = LOOM__RESOURCES__INIT;
    res.cpus = b->cpus;
    res.memory_bytes = b->memory;
    res.slots = b->slots;
    res.gpus = gpus;
    res.n_gpus = b->n_gpus;
    res.labels = labels;
    res.n_labels = 1;
    res.gpu_source = b->n_gpus ? "config" : "none";
    Loom__Hello h = LOOM__HELLO__INIT;
    h.name = a->name;
    h.agent_version = "bench-fleet";
    h.hostname = a->name;
    h.session.data = a->session;
    h.session.len = sizeof a->session;
    h.resources = &res;
    h.attempts = held_ids(s, a);
    h.n_attempts = a->n_held;
    loom_msg_t m = LOOM__ENVELOPE__INIT;
    m.body_case = LOOM__ENVELOPE__BODY_HELLO;
    m.hello = &h;
    send_msg(s, i, &m, true);
    free(h.attempts);
    a->next_hello = mono_ms() + HELLO_RETRY_MS;
}

static void send_heartbeat(sim_t *s, uint32_t i)
{
    agent_t *a = &s->agents[i];
    Loom__Heartbeat hb = LOOM__HEARTBEAT__INIT;
    hb.sent_unix_ms = loom_unix_ms();
    hb.attempts = held_ids(s, a);
    hb.n_attempts = a->n_held;
    hb.dispatch_seq = a->dispatch_seq;
    hb.running = a->running;
    loom_msg_t m = LOOM__ENVELOPE__INIT;
    m.body_case = LOOM__ENVELOPE__BODY_HEARTBEAT;
    m.heartbeat = &hb;
    send_msg(s, i, &m, false);
    free(hb.attempts);
    s->st.hb_sent++;
}

/* ---- attempts ---------------------------------------------------------------------- */

static att_t *att_find(sim_t *s, uint64_t id)
{
    uintptr_t v = (uintptr_t)loom_map_get(&s->by_id, id);
    return v ? &s->atts[v - 1] : NULL;
}

static void held_remove(agent_t *a, uint32_t idx)
{
    for (size_t k = 0; k < a->n_held; k++) {
        if (a->held[k] == idx) {
            a->held[k] = a->held[--a->n_held];
            return;
        }
    }
}

/* The attempt no longer occupies the agent (as far as we can tell: loomd
 * frees it later, when our Finished arrives, so our view never overstates). */
static void att_release(sim_t *s, att_t *x)
{
    if (!x->running) return;
    agent_t *a = &s->agents[x->agent];
    x->running = false;
    a->running--;
    s->running--;
    if (x->job != JOB_UNKNOWN) {
        a->cpus_used -= jobs[x->job].cpus;
        a->mem_used -= jobs[x->job].memory;
    }
    a->gpus_used &= ~x->gpu_mask;
}

static void finish_attempt(sim_t *s, att_t *x)
{
    uint64_t now = loom_unix_ms();
    uint32_t i = x->agent;
    if (s->o.log_bytes > 0) {
        Loom__LogChunk c = LOOM__LOG_CHUNK__INIT;
        c.attempt_id = x->id;
        c.seq = 1;
        c.stream = LOOM__STREAM__STREAM_STDOUT;
        c.data.data = s->log_data;
        c.data.len = (size_t)s->o.log_bytes;
        loom_msg_t m = LOOM__ENVELOPE__INIT;
        m.body_case = LOOM__ENVELOPE__BODY_LOG;
        m.log = &c;
        send_msg(s, i, &m, false);
        s->st.logs_sent++;
    }
    Loom__Finished f = LOOM__FINISHED__INIT;
    f.attempt_id = x->id;
    f.exit_code = 0;
    f.started_unix_ms = now;
    f.ended_unix_ms = now;
    f.log_seq = s->o.log_bytes > 0 ? 1 : 0;
    loom_msg_t m = LOOM__ENVELOPE__INIT;
    m.body_case = LOOM__ENVELOPE__BODY_FINISHED;
    m.finished = &f;
    send_msg(s, i, &m, false);
    att_release(s, x);
    if (!x->finished_sent) s->st.finished_sent++;
    x->finished_sent = true;
}

/* Records what the placement did: does the task fit the machine at all, and
 * does it fit beside what (as far as we know) still runs there. */
static void check_placement(sim_t *s, agent_t *a, att_t *x, const Loom__Dispatch *d)
{
    const box_t *b = &boxes[a->kind];
    if (x->job == JOB_UNKNOWN) {
        s->st.unknown_jobs++;
        return;
    }
    const job_t *j = &jobs[x->job];
    s->st.placed[x->job][a->kind]++;
    if (!job_fits(j, b)) s->st.misfit++;
    if (d->n_gpus && d->n_gpus != j->gpus) s->st.gpu_count_mismatch++;
    for (size_t g = 0; g < d->n_gpus; g++) {
        uint64_t bit = d->gpus[g] < 64 ? 1ull << d->gpus[g] : 0;
        if (d->gpus[g] >= b->n_gpus || (a->gpus_used & bit) || (x->gpu_mask & bit))
            s->st.gpu_conflicts++;
        x->gpu_mask |= bit;
    }
    if (a->running + 1 > b->slots) s->st.over_slots++;
    if (a->cpus_used + j->cpus > b->cpus) s->st.over_cpus++;
    if (a->mem_used + j->memory > b->memory) s->st.over_memory++;
    a->running++;
    if (++s->running > s->st.peak_running) s->st.peak_running = s->running;
    a->cpus_used += j->cpus;
    a->mem_used += j->memory;
    a->gpus_used |= x->gpu_mask;
    x->running = true;
}

static void hold_push(sim_t *s, uint32_t idx)
{
    if (s->hold_tail == s->hold_cap) {
        if (s->hold_head > 0) {
            memmove(s->holdq, s->holdq + s->hold_head,
                    (s->hold_tail - s->hold_head) * sizeof *s->holdq);
            s->hold_tail -= s->hold_head;
            s->hold_head = 0;
        }
        if (s->hold_tail == s->hold_cap) {
            s->hold_cap = s->hold_cap ? s->hold_cap * 2 : 1024;
            s->holdq = loom_xrealloc(s->holdq, s->hold_cap * sizeof *s->holdq);
        }
    }
    s->holdq[s->hold_tail++] = idx;
}

/* ---- what loomd sends ------------------------------------------------------------- */

static void on_welcome(sim_t *s, uint32_t i, const loom_msg_t *m)
{
    agent_t *a = &s->agents[i];
    const Loom__Welcome *w = m->welcome;
    for (size_t k = 0; k < w->n_cancel; k++) {
        att_t *x = att_find(s, w->cancel[k]);
        s->st.welcome_cancels++;
        if (x && x->agent == i && x->state == ATT_HELD) {
            held_remove(a, (uint32_t)(x - s->atts));
            att_release(s, x);
            x->state = ATT_CANCELLED;
        }
    }
    a->welcomed = true;
    a->dispatch_seq = 0;
    a->hb_ms = s->o.heartbeat_ms > 0 ? (uint32_t)s->o.heartbeat_ms
                                     : (w->heartbeat_ms ? w->heartbeat_ms : 1000);
    /* Spread the fleet's heartbeats over the interval, as independent
     * machines would be. */
    a->next_hb = mono_ms() + 1 + (uint64_t)i * a->hb_ms / (uint64_t)s->o.agents;
    if (a->ever_welcomed) {
        /* Like loom-agent: loomd may have missed what we sent; say it again. */
        for (size_t k = 0; k < a->n_held; k++) {
            att_t *x = &s->atts[a->held[k]];
            if (x->finished_sent) finish_attempt(s, x);
        }
    }
    a->ever_welcomed = true;
}

static void on_dispatch(sim_t *s, uint32_t i, const loom_msg_t *m)
{
    agent_t *a = &s->agents[i];
    const Loom__Dispatch *d = m->dispatch;
    uint64_t now = mono_ns();
    if (d->seq > a->dispatch_seq) a->dispatch_seq = d->seq;
    if (att_find(s, d->attempt_id)) {
        s->st.dup_dispatches++; /* an attempt id we have seen: never answered twice */
        return;
    }
    if (!s->t_first_dispatch) s->t_first_dispatch = now;
    s->st.dispatches++;
    a->dispatches++;
    if (s->n_atts == s->cap_atts) {
        s->cap_atts = s->cap_atts ? s->cap_atts * 2 : 4096;
        s->atts = loom_xrealloc(s->atts, s->cap_atts * sizeof *s->atts);
    }
    uint32_t idx = (uint32_t)s->n_atts++;
    att_t *x = &s->atts[idx];
    memset(x, 0, sizeof *x);
    x->id = d->attempt_id;
    x->agent = i;
    x->job = job_of(d->task ? d->task : "");
    x->state = ATT_HELD;
    loom_map_put(&s->by_id, x->id, (void *)(uintptr_t)(idx + 1));
    if (a->n_held == a->cap_held) {
        a->cap_held = a->cap_held ? a->cap_held * 2 : 8;
        a->held = loom_xrealloc(a->held, a->cap_held * sizeof *a->held);
    }
    a->held[a->n_held++] = idx;
    check_placement(s, a, x, d);

    Loom__Started st = LOOM__STARTED__INIT;
    st.attempt_id = x->id;
    st.started_unix_ms = loom_unix_ms();
    st.pid = (uint32_t)getpid();
    loom_msg_t out = LOOM__ENVELOPE__INIT;
    out.body_case = LOOM__ENVELOPE__BODY_STARTED;
    out.started = &st;
    send_msg(s, i, &out, false);
    s->st.started++;
    if (s->o.hold_ms > 0) {
        x->due_ms = mono_ms() + (uint64_t)s->o.hold_ms;
        hold_push(s, idx);
    } else {
        finish_attempt(s, x);
    }
}

static void record_ack(sim_t *s, uint64_t now)
{
    uint64_t t0 = s->t_first_dispatch;
    if (s->t_prev_ack && now - s->t_prev_ack > s->max_gap_ns) {
        s->max_gap_ns = now - s->t_prev_ack;
        s->max_gap_at_ns = s->t_prev_ack - t0;
        s->max_gap_after = s->st.acks - 1;
    }
    s->t_prev_ack = now;
    s->t_last_ack = now;
    size_t b = t0 && now > t0 ? (size_t)((now - t0) / (BUCKET_MS * 1000000ull)) : 0;
    if (b < s->n_buckets) s->buckets[b]++;
}

static void on_finished_ack(sim_t *s, uint32_t i, const loom_msg_t *m)
{
    att_t *x = att_find(s, m->finished_ack->attempt_id);
    if (!x || x->agent != i) {
        s->st.unknown_acks++;
        return;
    }
    if (x->state == ATT_ACKED) {
        s->st.dup_acks++;
        return;
    }
    if (!x->finished_sent || x->state != ATT_HELD) {
        s->st.early_acks++;
        return;
    }
    x->state = ATT_ACKED;
    held_remove(&s->agents[i], (uint32_t)(x - s->atts));
    s->st.acks++;
    uint64_t now = mono_ns();
    record_ack(s, now);
    if (x->job != JOB_UNKNOWN) {
        if (!s->job_first_ack[x->job]) s->job_first_ack[x->job] = now;
        s->job_last_ack[x->job] = now;
        s->job_acks[x->job]++;
    }
}

static void on_cancel(sim_t *s, uint32_t i, const loom_msg_t *m)
{
    att_t *x = att_find(s, m->cancel->attempt_id);
    if (x && x->agent == i && x->finished_sent) {
        /* Our heartbeat listed an attempt whose Finished loomd had already
         * recorded but not yet acknowledged (the ack may be just ahead of
         * this Cancel): harmless, the result is in. */
        s->st.late_cancels++;
        return;
    }
    s->st.cancels++;
    if (s->st.cancels <= 10)
        fprintf(stderr, "bench_fleet: cancel agent=%s attempt=%llu: %s\n", s->agents[i].name,
                (unsigned long long)m->cancel->attempt_id,
                m->cancel->reason ? m->cancel->reason : "");
    if (x && x->agent == i && x->state == ATT_HELD) {
        held_remove(&s->agents[i], (uint32_t)(x - s->atts));
        att_release(s, x);
        x->state = ATT_CANCELLED;
    }
}

static void on_error(sim_t *s, uint32_t i, const loom_msg_t *m)
{
    agent_t *a = &s->agents[i];
    s->st.errors++;
    if (s->st.errors <= 10)
        fprintf(stderr, "bench_fleet: loomd error agent=%s code=%d: %s\n", a->name,
                (int)m->error->code, m->error->message ? m->error->message : "");
    if (m->error->hello_required) {
        s->st.hello_again++;
        a->welcomed = false;
        send_hello(s, i);
    }
}

static void on_log_ack(sim_t *s, uint32_t i, const loom_msg_t *m)
{
    (void)i;
    (void)m;
    s->st.log_acks++;
}

static void on_heartbeat(sim_t *s, uint32_t i, const loom_msg_t *m)
{
    (void)i;
    (void)m;
    s->st.hb_replies++;
}

typedef void (*handler_fn)(sim_t *s, uint32_t i, const loom_msg_t *m);

static const struct {
    Loom__Envelope__BodyCase kind;
    handler_fn fn;
} handlers[] = {
    {LOOM__ENVELOPE__BODY_WELCOME, on_welcome},
    {LOOM__ENVELOPE__BODY_DISPATCH, on_dispatch},
    {LOOM__ENVELOPE__BODY_FINISHED_ACK, on_finished_ack},
    {LOOM__ENVELOPE__BODY_LOG_ACK, on_log_ack},
    {LOOM__ENVELOPE__BODY_HEARTBEAT, on_heartbeat},
    {LOOM__ENVELOPE__BODY_CANCEL, on_cancel},
    {LOOM__ENVELOPE__BODY_ERROR, on_error},
};

static void handle(sim_t *s, uint32_t i, const void *data, size_t len)
{
    loom_msg_t *m;
    char why[256];
    if (loom_codec_decode(data, len, &m, why, sizeof why) != 0) {
        s->st.bad_messages++;
        fprintf(stderr, "bench_fleet: bad message to %s: %s\n", s->agents[i].name, why);
        return;
    }
    s->st.rx_bytes += len;
    if (m->body_case == LOOM__ENVELOPE__BODY_DISPATCH) {
        s->st.dispatch_bytes += len;
        if (len > s->st.dispatch_bytes_max) s->st.dispatch_bytes_max = len;
    }
    for (size_t k = 0; k < sizeof handlers / sizeof handlers[0]; k++) {
        if (handlers[k].kind == m->body_case) {
            handlers[k].fn(s, i, m);
            loom_codec_free(m);
            return;
        }
    }
    s->st.bad_messages++;
    fprintf(stderr, "bench_fleet: unexpected %s to %s\n", loom_codec_kind_name(m->body_case),
            s->agents[i].name);
    loom_codec_free(m);
}

static void drain(sim_t *s, uint32_t i)
{
    for (int n = 0; n < MAX_DRAIN; n++) {
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, s->agents[i].sock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&msg);
            if (errno != EAGAIN) die("recv on %s: %s", s->agents[i].name, zmq_strerror(errno));
            return;
        }
        if (zmq_msg_more(&msg)) s->st.bad_messages++; /* loomd sends one frame */
        handle(s, i, zmq_msg_data(&msg), zmq_msg_size(&msg));
        zmq_msg_close(&msg);
    }
}

/* ---- the fleet ---------------------------------------------------------------------- */

static void raise_fd_limit(long need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
    if (rl.rlim_cur >= (rlim_t)need) return;
    rl.rlim_cur =
        rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= (rlim_t)need ? (rlim_t)need : rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur < (rlim_t)need)
        fprintf(stderr, "bench_fleet: only %llu file descriptors for %ld agents\n",
                (unsigned long long)rl.rlim_cur, need / 2);
}

static void fleet_open(sim_t *s)
{
    long n = s->o.agents;
    /* Each socket holds a mailbox descriptor and a TCP connection. */
    raise_fd_limit(2 * n + 64);
    s->zctx = zmq_ctx_new();
    if (zmq_ctx_set(s->zctx, ZMQ_MAX_SOCKETS, (int)n + 16) != 0 ||
        zmq_ctx_set(s->zctx, ZMQ_IO_THREADS, (int)s->o.io_threads) != 0)
        die("zmq_ctx_set: %s", zmq_strerror(errno));
    s->items = loom_xcalloc((size_t)n, sizeof *s->items);
    for (long i = 0; i < n; i++) {
        agent_t *a = &s->agents[i];
        int one = 1, zero = 0;
        int64_t max_msg = LOOM_MSG_MAX;
        snprintf(a->name, sizeof a->name, "sim-%04u", (unsigned)(i + 1));
        a->kind = box_of((uint32_t)i);
        randombytes_buf(a->session, sizeof a->session);
        a->sock = zmq_socket(s->zctx, ZMQ_DEALER);
        if (!a->sock) die("socket %ld: %s", i + 1, zmq_strerror(errno));
        /* CURVE, as loom-agent: loomd knows the connection by its key. */
        if (zmq_setsockopt(a->sock, ZMQ_CURVE_SERVERKEY, s->server_pub, 40) != 0 ||
            zmq_setsockopt(a->sock, ZMQ_CURVE_PUBLICKEY, a->pub, 40) != 0 ||
            zmq_setsockopt(a->sock, ZMQ_CURVE_SECRETKEY, a->sec, 40) != 0 ||
            zmq_setsockopt(a->sock, ZMQ_IMMEDIATE, &one, sizeof one) != 0 ||
            zmq_setsockopt(a->sock, ZMQ_MAXMSGSIZE, &max_msg, sizeof max_msg) != 0 ||
            zmq_setsockopt(a->sock, ZMQ_LINGER, &zero, sizeof zero) != 0 ||
            zmq_connect(a->sock, s->o.endpoint) != 0)
            die("connect %s to %s: %s", a->name, s->o.endpoint, zmq_strerror(errno));
        s->items[i].socket = a->sock;
        s->items[i].events = ZMQ_POLLIN;
    }
}

static void fleet_close(sim_t *s)
{
    for (long i = 0; i < s->o.agents; i++) {
        agent_t *a = &s->agents[i];
        while (a->out_head) {
            outmsg_t *m = a->out_head;
            a->out_head = m->next;
            free(m);
        }
        free(a->held);
        zmq_close(a->sock);
    }
    zmq_ctx_term(s->zctx);
    free(s->agents);
    free(s->items);
}

/* Timers: Hello retries until welcomed, heartbeats, held attempts due. */
static void run_timers(sim_t *s)
{
    uint64_t now = mono_ms();
    for (uint32_t i = 0; i < (uint32_t)s->o.agents; i++) {
        agent_t *a = &s->agents[i];
        if (!a->welcomed) {
            if (now >= a->next_hello) send_hello(s, i);
        } else if (now >= a->next_hb) {
            send_heartbeat(s, i);
            a->next_hb = now + a->hb_ms;
        }
    }
    while (s->hold_head < s->hold_tail) {
        att_t *x = &s->atts[s->holdq[s->hold_head]];
        if (x->due_ms > now) break;
        s->hold_head++;
        if (x->state == ATT_HELD && !x->finished_sent) finish_attempt(s, x);
    }
}

static void poll_once(sim_t *s, long timeout_ms)
{
    int n = zmq_poll(s->items, (int)s->o.agents, timeout_ms);
    if (n < 0) {
        if (errno == EINTR) return;
        die("zmq_poll: %s", zmq_strerror(errno));
    }
    for (uint32_t i = 0; n > 0 && i < (uint32_t)s->o.agents; i++) {
        short rev = s->items[i].revents;
        if (!rev) continue;
        n--;
        if (rev & ZMQ_POLLOUT) out_flush(s, i);
        if (rev & ZMQ_POLLIN) drain(s, i);
    }
}

static long welcomed_count(const sim_t *s)
{
    long n = 0;
    for (long i = 0; i < s->o.agents; i++) n += s->agents[i].welcomed;
    return n;
}

/* ---- HTTP (its own thread, so the fleet keeps heartbeating meanwhile) -------------- */

static size_t on_body(char *data, size_t size, size_t n, void *ud)
{
    loom_buf_append(ud, data, size * n);
    return size * n;
}

/* One request to loomd; returns the HTTP status (0 on a transport error,
 * with the reason in ctl->error) and, when `parse` is set or the request
 * failed, the JSON body in *out; the body's size in *bytes. */
static long http(ctl_t *c, const char *method, const char *path, const char *body, long timeout_s,
                 bool parse, json_t **out, size_t *bytes)
{
    char url[512];
    snprintf(url, sizeof url, "%s%s", c->o->server, path);
    CURL *h = curl_easy_init();
    if (!h) die("curl_easy_init failed");
    loom_buf_t resp = {0};
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
    /* loomd's API wants a token: $LOOM_TOKEN (never argv, which ps shows). */
    const char *token = getenv("LOOM_TOKEN");
    char auth[600];
    if (token && *token &&
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", token) < (int)sizeof auth)
        hdr = curl_slist_append(hdr, auth);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, timeout_s);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &resp);
    if (body) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
    }
    long status = 0;
    CURLcode rc = curl_easy_perform(h);
    if (rc == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    else
        snprintf(c->error, sizeof c->error, "%s %.200s: %s", method, url, curl_easy_strerror(rc));
    curl_slist_free_all(hdr);
    curl_easy_cleanup(h);
    *out = NULL;
    if (bytes) *bytes = resp.len;
    if (status && resp.data && (parse || status >= 300)) {
        json_error_t err;
        *out = json_loadb(resp.data, resp.len, 0, &err);
        if (!*out)
            snprintf(c->error, sizeof c->error, "%s %s: status %ld, not JSON: %.200s", method, path,
                     status, resp.data);
    }
    loom_buf_free(&resp);
    return status;
}

static bool http_fail(ctl_t *c, const char *what, long status, json_t *j)
{
    json_t *e = json_object_get(j, "error");
    if (status)
        snprintf(c->error, sizeof c->error, "%s: HTTP %ld: %s", what, status,
                 json_is_string(e) ? json_string_value(e) : "(no error text)");
    json_decref(j);
    return false;
}

static void append_items(loom_buf_t *b, uint64_t n)
{
    loom_buf_puts(b, "[");
    for (uint64_t k = 0; k < n; k++)
        loom_buf_printf(b, k ? ",%llu" : "%llu", (unsigned long long)k);
    loom_buf_puts(b, "]");
}

/* The DAG: one foreach task per kind of request. `literal` puts the item
 * lists in the file; `params` makes them list parameters given at run time. */
static char *pipeline_yaml(const ctl_t *c, bool literal)
{
    loom_buf_t b = {0};
    loom_buf_puts(&b, "pipeline: fleet-bench\n"
                      "description: bench_fleet simulated fleet, instant tasks\n");
    if (!literal) {
        loom_buf_puts(&b, "params:\n");
        for (int k = 0; k < N_JOBS; k++)
            if (c->counts[k])
                loom_buf_printf(&b, "  %s: {type: list, default: []}\n", jobs[k].name);
    }
    loom_buf_puts(&b, "tasks:\n");
    for (int k = 0; k < N_JOBS; k++) {
        if (!c->counts[k]) continue;
        loom_buf_printf(&b, "  %s:\n    run: [\"true\"]\n    resources: %s\n    foreach: ",
                        jobs[k].name, jobs[k].yaml);
        if (literal)
            append_items(&b, c->counts[k]);
        else
            loom_buf_printf(&b, "params.%s", jobs[k].name);
        loom_buf_puts(&b, "\n");
    }
    return loom_buf_steal(&b);
}

static char *run_body(const ctl_t *c, bool literal)
{
    loom_buf_t b = {0};
    loom_buf_puts(&b, "{\"params\": {");
    for (int k = 0, first = 1; !literal && k < N_JOBS; k++) {
        if (!c->counts[k]) continue;
        loom_buf_printf(&b, "%s\"%s\": ", first ? "" : ", ", jobs[k].name);
        append_items(&b, c->counts[k]);
        first = 0;
    }
    loom_buf_puts(&b, "}}");
    return loom_buf_steal(&b);
}

static bool ctl_submit(ctl_t *c, bool literal)
{
    char *yaml = pipeline_yaml(c, literal);
    json_t *req = json_pack("{s:s,s:s}", "file", "fleet-bench.yaml", "source", yaml);
    char *body = json_dumps(req, JSON_COMPACT);
    json_t *resp;
    long status = http(c, "POST", "/api/v1/pipelines", body, 120, true, &resp, NULL);
    free(body);
    json_decref(req);
    free(yaml);
    if (status != 200 && status != 201) return http_fail(c, "submit", status, resp);
    json_decref(resp);
    return true;
}

static bool run_ended(const json_t *run)
{
    const char *st = json_string_value(json_object_get(run, "state"));
    return st && strcmp(st, "queued") != 0 && strcmp(st, "running") != 0;
}

static bool ctl_start_and_wait(ctl_t *c, bool literal)
{
    char *body = run_body(c, literal);
    json_t *resp;
    c->ru_t0 = (struct rusage){0};
    getrusage(RUSAGE_SELF, &c->ru_t0);
    c->loomd_cpu_t0 = proc_cpu_s(c->o->loomd_pid);
    c->rss_t0_kib = proc_status_kib(c->o->loomd_pid, "VmRSS");
    uint64_t t0 = mono_ns();
    atomic_store(&c->t0, t0);
    /* loomd answers with the whole run, every task included: not parsed
     * here, so that this thread takes no CPU from loomd while it runs. */
    long status = http(c, "POST", "/api/v1/pipelines/fleet-bench/runs?tasks=0", body, 300, false,
                       &resp, &c->post_bytes);
    c->post_ms = (mono_ns() - t0) / 1000000ull;
    c->hwm_post_kib = proc_status_kib(c->o->loomd_pid, "VmHWM");
    free(body);
    if (status != 201) return http_fail(c, "start run", status, resp);
    status =
        http(c, "GET", "/api/v1/runs?pipeline=fleet-bench&limit=1", NULL, 60, true, &resp, NULL);
    if (status != 200) return http_fail(c, "find the run", status, resp);
    c->run_id = (uint64_t)json_integer_value(
        json_object_get(json_array_get(json_object_get(resp, "runs"), 0), "id"));
    json_decref(resp);
    atomic_store(&c->phase, PHASE_RUNNING);
    char path[128];
    /* Long polls without the tasks (tens of MB at this size); the whole run
     * once, at the end, to check every task. */
    snprintf(path, sizeof path, "/api/v1/runs/%llu?wait=60&tasks=0", (unsigned long long)c->run_id);
    while (!atomic_load(&c->stop)) {
        status = http(c, "GET", path, NULL, 120, true, &resp, &c->get_bytes);
        if (status != 200) return http_fail(c, "wait for the run", status, resp);
        bool ended = run_ended(resp);
        json_decref(resp);
        if (!ended) continue;
        snprintf(path, sizeof path, "/api/v1/runs/%llu", (unsigned long long)c->run_id);
        status = http(c, "GET", path, NULL, 120, true, &resp, &c->get_bytes);
        if (status != 200) return http_fail(c, "read the run", status, resp);
        c->run = resp;
        return true;
    }
    snprintf(c->error, sizeof c->error, "stopped before the run ended");
    return false;
}

static void *ctl_main(void *ud)
{
    ctl_t *c = ud;
    bool literal = strcmp(c->o->foreach, "literal") == 0;
    bool ok = ctl_submit(c, literal) && ctl_start_and_wait(c, literal);
    atomic_store(&c->phase, ok ? PHASE_DONE : PHASE_FAILED);
    return NULL;
}

/* ---- checking the run ------------------------------------------------------------------ */

typedef struct {
    uint64_t tasks, succeeded, one_attempt, ours, other_state;
    const char *run_state;
    uint64_t started_ms, ended_ms;
    char first_bad[256];
} verdict_t;

static void verify_run(sim_t *s, const ctl_t *c, verdict_t *v)
{
    memset(v, 0, sizeof *v);
    v->run_state = c->run ? json_string_value(json_object_get(c->run, "state")) : NULL;
    if (!c->run) return;
    v->started_ms = (uint64_t)json_integer_value(json_object_get(c->run, "started_unix_ms"));
    v->ended_ms = (uint64_t)json_integer_value(json_object_get(c->run, "ended_unix_ms"));
    json_t *tasks = json_object_get(c->run, "tasks"), *t;
    size_t k;
    json_array_foreach(tasks, k, t)
    {
        const char *st = json_string_value(json_object_get(t, "state"));
        const char *agent = json_string_value(json_object_get(t, "agent"));
        uint64_t id = (uint64_t)json_integer_value(json_object_get(t, "attempt_id"));
        att_t *x = att_find(s, id);
        bool ok = st && strcmp(st, "succeeded") == 0;
        bool ours =
            x && x->state == ATT_ACKED && agent && strcmp(agent, s->agents[x->agent].name) == 0;
        v->tasks++;
        v->succeeded += ok;
        v->one_attempt += json_integer_value(json_object_get(t, "attempts")) == 1;
        v->ours += ours;
        if ((!ok || !ours) && !v->first_bad[0])
            snprintf(v->first_bad, sizeof v->first_bad, "task %s: state %s, attempt %llu, agent %s",
                     json_string_value(json_object_get(t, "name")), st ? st : "?",
                     (unsigned long long)id, agent ? agent : "none");
    }
}

/* ---- the report ------------------------------------------------------------------------- */

static void machine(char *out, size_t len)
{
    char cpu[128] = "unknown CPU", line[256];
    FILE *f = fopen("/proc/cpuinfo", "r");
    while (f && fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) == 0) {
            const char *p = strchr(line, ':');
            if (p) snprintf(cpu, sizeof cpu, "%s", p + 2);
            cpu[strcspn(cpu, "\n")] = '\0';
            break;
        }
    }
    if (f) fclose(f);
    struct utsname u;
    uname(&u);
    snprintf(out, len, "%s, %ld cores, %llu GiB, Linux %s", cpu, sysconf(_SC_NPROCESSORS_ONLN),
             (unsigned long long)((uint64_t)sysconf(_SC_PHYS_PAGES) *
                                  (uint64_t)sysconf(_SC_PAGESIZE) / GIB),
             u.release);
}

static void fmt_count(char *out, size_t len, uint64_t n)
{
    if (n >= 1000000)
        snprintf(out, len, "%llu,%03llu,%03llu", (unsigned long long)(n / 1000000),
                 (unsigned long long)(n / 1000 % 1000), (unsigned long long)(n % 1000));
    else if (n >= 1000)
        snprintf(out, len, "%llu,%03llu", (unsigned long long)(n / 1000),
                 (unsigned long long)(n % 1000));
    else
        snprintf(out, len, "%llu", (unsigned long long)n);
}

/* Slowest full second of completions, and the per-second series. */
static uint64_t slowest_second(const sim_t *s, size_t *n_seconds)
{
    size_t last = 0;
    for (size_t b = 0; b < s->n_buckets; b++)
        if (s->buckets[b]) last = b;
    size_t per = 1000 / BUCKET_MS, secs = (last + 1) / per;
    uint64_t min = UINT64_MAX;
    for (size_t sec = 0; sec < secs; sec++) {
        uint64_t n = 0;
        for (size_t b = sec * per; b < (sec + 1) * per; b++) n += s->buckets[b];
        if (n < min) min = n;
    }
    *n_seconds = secs;
    return secs ? min : 0;
}

/* Completions per second; for runs up to a minute, per 100 ms too, one row
 * per second, so that a stall shows where it happened. */
static void print_timeline(const sim_t *s)
{
    size_t per = 1000 / BUCKET_MS, secs;
    slowest_second(s, &secs);
    bool fine = secs <= 60;
    printf("\nCompletions per second from the first Dispatch%s:\n\n```\n",
           fine ? " (and per 100 ms)" : "");
    for (size_t sec = 0; sec <= secs && sec * per < s->n_buckets; sec++) {
        uint64_t n = 0;
        for (size_t b = sec * per; b < (sec + 1) * per && b < s->n_buckets; b++) n += s->buckets[b];
        if (fine) {
            printf("%4zu s: %6llu |", sec, (unsigned long long)n);
            for (size_t b = sec * per; b < (sec + 1) * per && b < s->n_buckets; b++)
                printf(" %5u", s->buckets[b]);
            printf("\n");
        } else {
            printf("%s%llu", sec % 10 ? " " : sec ? "\n" : "", (unsigned long long)n);
        }
    }
    printf("%s```\n", fine ? "" : "\n");
}

static void spread(const sim_t *s, box_kind kind, uint64_t *min, uint64_t *max, uint64_t *zero)
{
    *min = UINT64_MAX;
    *max = *zero = 0;
    for (long i = 0; i < s->o.agents; i++) {
        const agent_t *a = &s->agents[i];
        if (a->kind != kind) continue;
        if (a->dispatches < *min) *min = a->dispatches;
        if (a->dispatches > *max) *max = a->dispatches;
        *zero += a->dispatches == 0;
    }
    if (*min == UINT64_MAX) *min = 0;
}

static bool print_checks(const sim_t *s, const verdict_t *v, uint64_t expected)
{
    const stats_t *st = &s->st;
    bool exact = st->dispatches == expected && st->acks == expected && st->dup_dispatches == 0 &&
                 st->dup_acks == 0 && st->unknown_acks == 0 && st->early_acks == 0 &&
                 st->cancels == 0 && st->welcome_cancels == 0 && st->bad_messages == 0 &&
                 st->unknown_jobs == 0 && st->errors == 0;
    bool run_ok = v->run_state && strcmp(v->run_state, "succeeded") == 0 && v->tasks == expected &&
                  v->succeeded == expected && v->one_attempt == expected && v->ours == expected;
    printf("| the run, as loomd reports it | %s; %llu of %llu tasks succeeded, %llu with one "
           "attempt, %llu on the agent that answered that attempt's Dispatch | all succeeded: "
           "**%s** |\n",
           v->run_state ? v->run_state : "no answer", (unsigned long long)v->succeeded,
           (unsigned long long)expected, (unsigned long long)v->one_attempt,
           (unsigned long long)v->ours, run_ok ? "yes" : "NO");
    printf("| exactly once, as the agents saw it | %llu Dispatches (%llu for an attempt seen "
           "before), %llu FinishedAcks (%llu repeated, %llu for unknown attempts, %llu before the "
           "result); %llu Cancels of unfinished attempts, %llu in Welcome; %llu Errors (%llu "
           "asking for Hello again); %llu undecodable | every Dispatch answered once: **%s** |\n",
           (unsigned long long)st->dispatches, (unsigned long long)st->dup_dispatches,
           (unsigned long long)st->acks, (unsigned long long)st->dup_acks,
           (unsigned long long)st->unknown_acks, (unsigned long long)st->early_acks,
           (unsigned long long)st->cancels, (unsigned long long)st->welcome_cancels,
           (unsigned long long)st->errors, (unsigned long long)st->hello_again,
           (unsigned long long)st->bad_messages, exact ? "yes" : "NO");
    if (v->first_bad[0]) printf("\nFirst task that is not right: %s\n", v->first_bad);
    return exact && run_ok;
}

static void print_placement(const sim_t *s)
{
    const stats_t *st = &s->st;
    printf("| placement | %llu of %llu placements on a machine that cannot hold the task; "
           "GPU indexes: %llu wrong counts, %llu clashes; beside what still ran there: %llu over "
           "slots, %llu over CPUs, %llu over memory | 0 misfits |\n",
           (unsigned long long)st->misfit, (unsigned long long)st->dispatches,
           (unsigned long long)st->gpu_count_mismatch, (unsigned long long)st->gpu_conflicts,
           (unsigned long long)st->over_slots, (unsigned long long)st->over_cpus,
           (unsigned long long)st->over_memory);
    printf("\nWhere each kind of task went (tasks per kind of machine), and when its completions "
           "came (seconds after the first Dispatch):\n\n"
           "| task | cpu boxes | 4×A100 boxes | 8×H100 boxes | first – last completion | "
           "rate |\n|---|---|---|---|---|---|\n");
    for (int j = 0; j < N_JOBS; j++) {
        double t1 = s->job_first_ack[j] ? (double)(s->job_first_ack[j] - s->t_first_dispatch) / 1e9
                                        : 0,
               t2 = s->job_last_ack[j] ? (double)(s->job_last_ack[j] - s->t_first_dispatch) / 1e9
                                       : 0;
        printf("| %s %s | %llu | %llu | %llu | %.2f – %.2f s | %.0f/s |\n", jobs[j].name,
               jobs[j].yaml, (unsigned long long)st->placed[j][BOX_CPU],
               (unsigned long long)st->placed[j][BOX_GPU],
               (unsigned long long)st->placed[j][BOX_BIG], t1, t2,
               t2 > t1 ? (double)s->job_acks[j] / (t2 - t1) : 0);
    }
    printf("\nAt most %llu attempts ran at once (Dispatch received, Finished not yet sent).\n",
           (unsigned long long)st->peak_running);
    printf("\nTasks per agent (min / max, agents given none):");
    for (int k = 0; k < BOX_KINDS; k++) {
        uint64_t mn, mx, zero;
        spread(s, (box_kind)k, &mn, &mx, &zero);
        printf("%s %s %llu / %llu, %llu", k ? ";" : "", boxes[k].kind, (unsigned long long)mn,
               (unsigned long long)mx, (unsigned long long)zero);
    }
    printf("\n");
}

/* The rows on speed: overall, by phase, CPU, stalls. */
static void print_rates(const sim_t *s, const ctl_t *c, const verdict_t *v)
{
    const opts_t *o = &s->o;
    uint64_t t0 = atomic_load(&c->t0);
    double done = (double)s->st.acks; /* completions recorded: all of them, unless it gave up */
    double wall = s->t_last_ack > t0 ? (double)(s->t_last_ack - t0) / 1e9 : 0;
    double steady = s->t_last_ack > s->t_first_dispatch
                        ? (double)(s->t_last_ack - s->t_first_dispatch) / 1e9
                        : 0;
    double cpu = s->loomd_cpu_end - c->loomd_cpu_t0;
    double sim_cpu = rusage_s(&s->ru_end) - rusage_s(&c->ru_t0);
    char ntasks[32], nagents[32], held[64] = "instant";
    fmt_count(ntasks, sizeof ntasks, (uint64_t)o->tasks);
    fmt_count(nagents, sizeof nagents, (uint64_t)o->agents);
    if (o->hold_ms) snprintf(held, sizeof held, "%ld ms", o->hold_ms);
    if (o->log_bytes)
        snprintf(held + strlen(held), sizeof held - strlen(held), ", %ld log bytes", o->log_bytes);
    printf("| %s tasks (%s; 4 kinds of request, foreach %s) on %s simulated agents: "
           "placements + recorded completions | **%.0f tasks/s** (= %.0f placements + %.0f "
           "completions per s), %.2f s from POST /runs to the last FinishedAck | ≥ 20,000/s |\n",
           ntasks, held, o->foreach, nagents, wall > 0 ? done / wall : 0,
           wall > 0 ? done / wall : 0, wall > 0 ? done / wall : 0, wall);
    printf("| … of which POST /runs (creates the run; answered with %.1f MB of JSON) | %.2f s "
           "| — |\n",
           (double)c->post_bytes / 1e6, (double)c->post_ms / 1000);
    printf("| … POST /runs → first Dispatch | %.2f s | — |\n",
           s->t_first_dispatch > t0 ? (double)(s->t_first_dispatch - t0) / 1e9 : 0);
    printf("| … first Dispatch → last FinishedAck | %.2f s: **%.0f tasks/s** | — |\n", steady,
           steady > 0 ? done / steady : 0);
    if (v->ended_ms > v->started_ms)
        printf("| … loomd's own clock, run started → ended | %.2f s | — |\n",
               (double)(v->ended_ms - v->started_ms) / 1000);
    printf("| loomd CPU, POST /runs → last FinishedAck | %.1f s, **%.0f%% of one core** | — |\n",
           cpu, wall > 0 ? 100 * cpu / wall : 0);
    printf("| simulator CPU (all its threads) meanwhile | %.1f s, %.0f%% of one core | — |\n",
           sim_cpu, wall > 0 ? 100 * sim_cpu / wall : 0);
    size_t secs;
    uint64_t slow = slowest_second(s, &secs);
    printf("| stalls | longest gap between two completions %.1f ms (%.2f s after the first "
           "Dispatch, after %llu completions); slowest full second: ",
           (double)s->max_gap_ns / 1e6, (double)s->max_gap_at_ns / 1e9,
           (unsigned long long)s->max_gap_after);
    if (secs)
        printf("%llu tasks (of %zu seconds) | — |\n", (unsigned long long)slow, secs);
    else
        printf("n/a (under a second) | — |\n");
}

static void print_memory(const sim_t *s, const ctl_t *c)
{
    uint64_t rss = proc_status_kib(s->o.loomd_pid, "VmRSS"),
             hwm = proc_status_kib(s->o.loomd_pid, "VmHWM");
    printf("| loomd peak memory (VmHWM) | **%.1f MiB** | < 300 MB |\n", (double)hwm / 1024);
    printf("| … VmRSS before the run / peak once POST /runs was answered / peak at the last "
           "completion / peak after the run's final GET | %.1f / %.1f / %.1f / %.1f MiB "
           "(VmRSS sampled every 250 ms peaked at %.1f; at the last completion %.1f, at the end "
           "%.1f) | — |\n",
           (double)c->rss_t0_kib / 1024, (double)c->hwm_post_kib / 1024,
           (double)s->hwm_last_ack_kib / 1024, (double)hwm / 1024,
           (double)s->rss_peak_sampled_kib / 1024, (double)s->rss_last_ack_kib / 1024,
           (double)rss / 1024);
}

static void print_messages(const sim_t *s)
{
    const stats_t *st = &s->st;
    printf("\nFrom loomd: %.1f MB in all; Dispatches %.0f bytes on average, %llu at most.\n",
           (double)st->rx_bytes / 1e6,
           st->dispatches ? (double)st->dispatch_bytes / (double)st->dispatches : 0,
           (unsigned long long)st->dispatch_bytes_max);
    printf("\nMessages: %llu Started, %llu Finished, %llu LogChunks (%llu acked), %llu heartbeats "
           "sent (%llu answered), %llu sends waited for room; %llu Cancels for attempts whose "
           "Finished loomd had already recorded (a heartbeat listed them before their ack came).\n",
           (unsigned long long)st->started, (unsigned long long)st->finished_sent,
           (unsigned long long)st->logs_sent, (unsigned long long)st->log_acks,
           (unsigned long long)st->hb_sent, (unsigned long long)st->hb_replies,
           (unsigned long long)st->queued_sends, (unsigned long long)st->late_cancels);
}

/* Prints the Markdown report; true when every check passed. */
static bool report(sim_t *s, const ctl_t *c, int argc, char **argv)
{
    verdict_t v;
    verify_run(s, c, &v);
    char mach[256];
    machine(mach, sizeof mach);
    printf("\nMachine: %s; loom release build.\nCommand:", mach);
    for (int k = 0; k < argc; k++) printf(" %s", argv[k]);
    printf("\nloomd: %s\n\n", s->o.describe ? s->o.describe : "(as started by the caller)");
    printf("| benchmark | result | target |\n|---|---|---|\n");
    print_rates(s, c, &v);
    print_memory(s, c);
    bool ok = print_checks(s, &v, (uint64_t)s->o.tasks);
    print_placement(s);
    print_messages(s);
    if (s->o.timeline) print_timeline(s);
    return ok;
}

/* ---- main ------------------------------------------------------------------------------ */

static void usage(FILE *out)
{
    fputs("usage: loom-bench-fleet --server http://127.0.0.1:PORT --endpoint tcp://127.0.0.1:PORT\n"
          "                        --loomd-pid PID [options]\n"
          "  --agents N        simulated agents, one DEALER socket each (default 1000)\n"
          "  --tasks N         tasks in the run, at most 100000 (default 100000)\n"
          "  --log-bytes N     one LogChunk of N bytes per task (default 0: none)\n"
          "  --heartbeat-ms N  heartbeat interval (default: what Welcome says)\n"
          "  --hold-ms N       hold each task N ms before finishing it (default 0)\n"
          "  --foreach MODE    literal: item lists in the DAG file (default); params: list\n"
          "                    parameters given at run time\n"
          "  --io-threads N    ZeroMQ I/O threads in this process (default 1)\n"
          "  --timeout-s N     give up after N seconds (default 600)\n"
          "  --describe TEXT   how loomd was started, printed with the results\n"
          "  --timeline        print completions per second\n"
          "The API token (admin, for gc) comes from $LOOM_TOKEN.\n",
          out);
}

static long parse_num(const char *flag, const char *v, long min, long max)
{
    int64_t n;
    if (loom_parse_i64(v, min, max, &n) != 0) {
        fprintf(stderr, "bench_fleet: %s %s: want an integer %ld..%ld\n", flag, v, min, max);
        exit(2);
    }
    return (long)n;
}

static void parse_args(int argc, char **argv, opts_t *o)
{
    static const struct option lo[] = {
        {"server", 1, NULL, 's'},       {"endpoint", 1, NULL, 'e'},  {"loomd-pid", 1, NULL, 'p'},
        {"agents", 1, NULL, 'a'},       {"tasks", 1, NULL, 't'},     {"log-bytes", 1, NULL, 'l'},
        {"heartbeat-ms", 1, NULL, 'h'}, {"hold-ms", 1, NULL, 'H'},   {"foreach", 1, NULL, 'f'},
        {"io-threads", 1, NULL, 'i'},   {"timeout-s", 1, NULL, 'T'}, {"describe", 1, NULL, 'd'},
        {"timeline", 0, NULL, 'L'},     {"help", 0, NULL, '?'},      {NULL, 0, NULL, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 's':
            o->server = optarg;
            break;
        case 'e':
            o->endpoint = optarg;
            break;
        case 'p':
            o->loomd_pid = parse_num("--loomd-pid", optarg, 1, 1L << 30);
            break;
        case 'a':
            o->agents = parse_num("--agents", optarg, 1, 20000);
            break;
        case 't':
            o->tasks = parse_num("--tasks", optarg, 1, 100000);
            break;
        case 'l':
            o->log_bytes = parse_num("--log-bytes", optarg, 0, LOOM_LOG_CHUNK_MAX);
            break;
        case 'h':
            o->heartbeat_ms = parse_num("--heartbeat-ms", optarg, 10, 600000);
            break;
        case 'H':
            o->hold_ms = parse_num("--hold-ms", optarg, 0, 600000);
            break;
        case 'f':
            o->foreach = optarg;
            break;
        case 'i':
            o->io_threads = parse_num("--io-threads", optarg, 1, 64);
            break;
        case 'T':
            o->timeout_s = parse_num("--timeout-s", optarg, 1, 86400);
            break;
        case 'd':
            o->describe = optarg;
            break;
        case 'L':
            o->timeline = true;
            break;
        default:
            usage(ch == '?' && optopt == 0 ? stdout : stderr);
            exit(ch == '?' && optopt == 0 ? 0 : 2);
        }
    }
    /* This benchmark talks to a loomd on this machine and nowhere else. */
    if (!o->server || strncmp(o->server, "http://127.0.0.1:", 17) != 0 || !o->endpoint ||
        strncmp(o->endpoint, "tcp://127.0.0.1:", 16) != 0 || !o->loomd_pid ||
        (strcmp(o->foreach, "literal") != 0 && strcmp(o->foreach, "params") != 0) ||
        optind < argc) {
        usage(stderr);
        exit(2);
    }
}

static bool settled(const sim_t *s)
{
    return s->st.acks + s->st.cancels >= s->st.dispatches;
}

static void wait_welcomed(sim_t *s, uint64_t deadline)
{
    uint64_t t0 = mono_ns();
    while (welcomed_count(s) < s->o.agents) {
        if (mono_ms() > deadline)
            die("only %ld of %ld agents welcomed", welcomed_count(s), s->o.agents);
        run_timers(s);
        poll_once(s, 10);
    }
    fprintf(stderr, "bench_fleet: %ld agents welcomed in %.2f s\n", s->o.agents,
            (double)(mono_ns() - t0) / 1e9);
}

/* loomd's CPU time and peak memory once every task is acknowledged (or the
 * run is over), and its resident memory every 250 ms meanwhile. */
static void sample_loomd(sim_t *s, const ctl_t *c, bool end, uint64_t *next_sample)
{
    if (!s->cpu_end_read && (end || s->st.acks >= (uint64_t)s->o.tasks)) {
        s->loomd_cpu_end = proc_cpu_s(s->o.loomd_pid);
        getrusage(RUSAGE_SELF, &s->ru_end);
        s->hwm_last_ack_kib = proc_status_kib(s->o.loomd_pid, "VmHWM");
        s->rss_last_ack_kib = proc_status_kib(s->o.loomd_pid, "VmRSS");
        s->cpu_end_read = true;
    }
    if (!end && mono_ms() >= *next_sample && atomic_load(&c->t0)) {
        uint64_t rss = proc_status_kib(s->o.loomd_pid, "VmRSS");
        if (rss > s->rss_peak_sampled_kib) s->rss_peak_sampled_kib = rss;
        *next_sample = mono_ms() + 250;
    }
}

/* Serves the fleet until the run has ended and its results are acknowledged,
 * the HTTP thread failed, or the deadline passed (returns false then). */
static bool serve(sim_t *s, ctl_t *c, uint64_t deadline)
{
    uint64_t next_sample = 0, t_done = 0;
    for (;;) {
        int phase = atomic_load(&c->phase);
        if (phase == PHASE_DONE && !t_done) t_done = mono_ms();
        /* Once the run has ended, every FinishedAck is on its way: allow a
         * few seconds for stragglers, then report what is missing. */
        if (phase == PHASE_FAILED || (t_done && (settled(s) || mono_ms() > t_done + 5000))) break;
        if (mono_ms() > deadline) return false;
        sample_loomd(s, c, false, &next_sample);
        run_timers(s);
        poll_once(s, s->o.hold_ms > 0 ? 1 : 10);
    }
    return true;
}

/* Every simulated agent gets a key pair, approved for its name through the
 * API before it connects (as `loom agents approve` does). */
static void enrol(sim_t *s)
{
    s->agents = loom_xcalloc((size_t)s->o.agents, sizeof *s->agents);
    ctl_t c = {.o = &s->o};
    json_t *keys = NULL;
    long st = http(&c, "GET", "/api/v1/agents/keys", NULL, 30, true, &keys, NULL);
    const char *server = json_string_value(json_object_get(keys, "server_public_key"));
    if (st != 200 || !server || strlen(server) != 40)
        die("GET /api/v1/agents/keys: status %ld %s", st, c.error);
    memcpy(s->server_pub, server, 41);
    json_decref(keys);
    for (long i = 0; i < s->o.agents; i++) {
        agent_t *a = &s->agents[i];
        snprintf(a->name, sizeof a->name, "sim-%04u", (unsigned)(i + 1));
        if (zmq_curve_keypair(a->pub, a->sec) != 0) die("zmq_curve_keypair failed");
        uint8_t raw[32];
        char hex[65], path[128], body[64];
        zmq_z85_decode(raw, a->pub);
        sodium_bin2hex(hex, sizeof hex, raw, sizeof raw);
        snprintf(path, sizeof path, "/api/v1/agents/keys/%s/approve", hex);
        snprintf(body, sizeof body, "{\"name\":\"%s\"}", a->name);
        json_t *answer = NULL;
        st = http(&c, "POST", path, body, 30, false, &answer, NULL);
        json_decref(answer);
        if (st != 200) die("approving the key of %s: status %ld %s", a->name, st, c.error);
    }
}

int main(int argc, char **argv)
{
    sim_t s = {.o = {.agents = 1000,
                     .tasks = 100000,
                     .io_threads = 1,
                     .timeout_s = 600,
                     .foreach = "literal"}};
    parse_args(argc, argv, &s.o);
    if (sodium_init() < 0) die("libsodium failed to initialise");
    curl_global_init(CURL_GLOBAL_DEFAULT);
    uint64_t deadline = mono_ms() + (uint64_t)s.o.timeout_s * 1000;
    s.n_buckets = (size_t)s.o.timeout_s * (1000 / BUCKET_MS) + 1;
    s.buckets = loom_xcalloc(s.n_buckets, sizeof *s.buckets);
    s.log_data = loom_xmalloc((size_t)s.o.log_bytes + 1);
    memset(s.log_data, 'x', (size_t)s.o.log_bytes + 1);
    if (s.o.log_bytes) s.log_data[s.o.log_bytes - 1] = '\n';

    enrol(&s);
    fleet_open(&s);
    wait_welcomed(&s, deadline);
    ctl_t c = {.o = &s.o};
    for (int k = 0, left = (int)s.o.tasks; k < N_JOBS; k++) {
        c.counts[k] =
            k == N_JOBS - 1 ? (uint64_t)left : (uint64_t)s.o.tasks * jobs[k].percent / 100;
        left -= (int)c.counts[k];
    }
    pthread_t th;
    if (pthread_create(&th, NULL, ctl_main, &c) != 0) die("cannot start the HTTP thread");
    bool in_time = serve(&s, &c, deadline);
    uint64_t unused = 0;
    sample_loomd(&s, &c, true, &unused);
    if (!in_time) {
        atomic_store(&c.stop, true);
        fprintf(stderr, "bench_fleet: gave up after %ld s: %llu of %ld tasks acknowledged\n",
                s.o.timeout_s, (unsigned long long)s.st.acks, s.o.tasks);
        report(&s, &c, argc, argv);
        fflush(stdout);
        _exit(1); /* the HTTP thread may sit in a long poll */
    }
    pthread_join(th, NULL);
    if (atomic_load(&c.phase) == PHASE_FAILED) fprintf(stderr, "bench_fleet: %s\n", c.error);
    /* For a profiler recording loomd with CLOCK_MONOTONIC time stamps
     * (fleet.sh --perf): the run's phases, in seconds. */
    fprintf(stderr, "bench_fleet: window post=%.6f first_dispatch=%.6f last_ack=%.6f\n",
            (double)atomic_load(&c.t0) / 1e9, (double)s.t_first_dispatch / 1e9,
            (double)s.t_last_ack / 1e9);
    bool ok = report(&s, &c, argc, argv);
    json_decref(c.run);
    fleet_close(&s);
    loom_map_free(&s.by_id);
    free(s.atts);
    free(s.holdq);
    free(s.buckets);
    free(s.log_data);
    curl_global_cleanup();
    return ok ? 0 : 1;
}
