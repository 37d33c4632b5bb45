/* An attempt's outputs: collect, hash, upload; see upload.h for the
 * protocol. The blocking work (listing, hashing, reading) runs as jobs on
 * the thread pool (outputs.c); this file moves it along on the loop.
 *
 * Per object, acked <= sent <= read_to: loomd holds [0, acked); chunks
 * [sent, read_to) are being read or wait to be sent. The window is the sum
 * over the attempt's objects of read_to - acked. A PutAck's offset is what
 * loomd held when it answered: one lower than acked is stale (it answers a
 * message from before a restart) and is ignored; one above sent means loomd
 * has more than we sent in this round (an earlier one reached it), so we go
 * on from there. */
#include "upload.h"

#include "outputs.h"

#include "loom/err.h"
#include "loom/log.h"
#include "loom/map.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    char *path;
    out_hash_t h;
    char hash[LOOM_HASH_HEX_LEN + 1];
} ofile_t;

typedef struct piece {
    struct piece *next;
    uint64_t off;
    size_t len;
    uint8_t data[];
} piece_t;

typedef enum {
    OBJ_WAITING, /* for a place among the PUT_ACTIVE */
    OBJ_QUERY,   /* asked whether loomd has it */
    OBJ_SENDING,
    OBJ_STORED,
} obj_state;

typedef struct obj {
    struct obj *next; /* while waiting */
    upload_t *u;
    char hash[LOOM_HASH_HEX_LEN + 1];
    uint64_t size;
    const char *path; /* the first file with this content */
    obj_state state;
    bool query_unsent;
    uint64_t acked, sent, read_to;
    piece_t *pieces, *pieces_tail; /* read, not yet sent */
    int fd;                        /* opened by the first read job */
    bool reading;                  /* a read job is out: it owns fd */
    uint32_t gen;                  /* bumped when we start again from the query */
    uint64_t heard_ms;             /* last answer (or last ask) */
} obj_t;

struct upload {
    loom_agent_t *a;
    attempt_t *t; /* NULL once ended or detached */
    upload_done_cb done;
    char *dir;
    char **patterns;
    size_t n_patterns;
    atomic_bool stop; /* read by the jobs */
    size_t jobs;      /* out on the thread pool */
    bool ended;
    /* files */
    ofile_t *files;
    size_t n_files, next_hash, hashing, n_hashed;
    bool collected;
    /* objects */
    loom_map_t by_hash; /* hash -> obj_t* */
    obj_t **objs;
    size_t n_objs, cap_objs;
    obj_t *waiting, *waiting_tail;
    obj_t *active[PUT_ACTIVE]; /* querying or sending; NULL: a free place */
    size_t n_active, n_stored;
    uint64_t bytes_sent, started_ms;
};

static uint64_t now_ms(const upload_t *u)
{
    return loom_clock_now(&u->a->clock);
}

uint64_t upload_bytes_sent(const upload_t *u)
{
    return u->bytes_sent;
}

static void free_pieces(obj_t *o)
{
    while (o->pieces) {
        piece_t *p = o->pieces;
        o->pieces = p->next;
        free(p);
    }
    o->pieces_tail = NULL;
}

static void upload_free(upload_t *u)
{
    for (size_t i = 0; i < u->n_objs; i++) {
        obj_t *o = u->objs[i];
        free_pieces(o);
        if (o->fd >= 0) close(o->fd);
        free(o);
    }
    free(u->objs);
    loom_map_free(&u->by_hash);
    for (size_t i = 0; i < u->n_files; i++) {
        outputs_hash_end(&u->files[i].h);
        free(u->files[i].path);
    }
    free(u->files);
    for (size_t i = 0; i < u->n_patterns; i++) free(u->patterns[i]);
    free(u->patterns);
    free(u->dir);
    free(u);
}

/* After a job came back: true when the upload is over for the caller (it
 * may have been freed). */
static bool job_back(upload_t *u)
{
    u->jobs--;
    if (!u->ended) return false;
    if (u->jobs == 0) upload_free(u);
    return true;
}

/* Lets go of the object: another attempt's upload of it may go. */
static void release(upload_t *u, obj_t *o)
{
    for (size_t i = 0; i < PUT_ACTIVE; i++)
        if (u->active[i] == o) u->active[i] = NULL;
    u->n_active--;
    if (loom_smap_get(&u->a->uploading, o->hash) == u) loom_smap_del(&u->a->uploading, o->hash);
}

static void release_all(upload_t *u)
{
    bool any = false;
    for (size_t i = 0; i < PUT_ACTIVE; i++) {
        if (!u->active[i]) continue;
        release(u, u->active[i]);
        any = true;
    }
    if (any) agent_kick_uploads(u->a);
}

static void stop_jobs(upload_t *u)
{
    u->ended = true;
    atomic_store(&u->stop, true);
    u->t = NULL;
    release_all(u);
    if (u->jobs == 0) upload_free(u);
}

void upload_detach(upload_t *u)
{
    if (u) stop_jobs(u);
}

/* Reports to the attempt, once. */
static void end(upload_t *u, const char *error)
{
    if (u->ended) return;
    attempt_t *t = u->t;
    upload_done_cb done = u->done;
    Loom__Artifact *arts = NULL, **ptrs = NULL;
    size_t n = 0;
    u->ended = true; /* anything the callback does finds it over */
    u->t = NULL;
    atomic_store(&u->stop, true);
    release_all(u);
    if (!error) {
        arts = loom_xcalloc(u->n_files + 1, sizeof *arts);
        ptrs = loom_xcalloc(u->n_files + 1, sizeof *ptrs);
        for (; n < u->n_files; n++) {
            loom__artifact__init(&arts[n]);
            arts[n].path = u->files[n].path;
            arts[n].hash = u->files[n].hash;
            arts[n].size = u->files[n].h.size;
            arts[n].mode = u->files[n].h.mode;
            ptrs[n] = &arts[n];
        }
        uint64_t ms = now_ms(u) - u->started_ms;
        LOG_INFO("outputs stored attempt=%llu files=%zu objects=%zu sent_bytes=%llu ms=%llu",
                 (unsigned long long)t->id, u->n_files, u->n_objs,
                 (unsigned long long)u->bytes_sent, (unsigned long long)ms);
    } else {
        LOG_WARN("outputs failed attempt=%llu task=%s: %s", (unsigned long long)t->id, t->task,
                 error);
    }
    done(t, ptrs, n, error);
    free(ptrs);
    free(arts);
    if (u->jobs == 0) upload_free(u);
}

static void fail(upload_t *u, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void fail(upload_t *u, const char *fmt, ...)
{
    char why[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    end(u, why);
}

static void check_done(upload_t *u)
{
    if (u->ended || !u->collected || u->n_hashed < u->n_files || u->n_stored < u->n_objs) return;
    end(u, NULL);
}

/* --- sending --------------------------------------------------------------- */

static bool can_send(const upload_t *u)
{
    const loom_agent_t *a = u->a;
    return a->welcomed && !a->send_blocked && a->zs;
}

static bool send_put(upload_t *u, obj_t *o, uint64_t off, const uint8_t *data, size_t len)
{
    Loom__PutObject po = LOOM__PUT_OBJECT__INIT;
    po.attempt_id = u->t->id;
    po.hash = o->hash;
    po.offset = off;
    po.data.data = (uint8_t *)data;
    po.data.len = len;
    po.size = o->size;
    loom_msg_t m = LOOM__ENVELOPE__INIT;
    m.body_case = LOOM__ENVELOPE__BODY_PUT;
    m.put = &po;
    if (agent_send(u->a, &m) == 0) return true;
    agent_send_failed(u->a); /* the retry calls upload_flush */
    return false;
}

static bool send_query(upload_t *u, obj_t *o)
{
    if (!o->query_unsent) return true;
    if (!can_send(u) || !send_put(u, o, 0, NULL, 0)) return false;
    o->query_unsent = false;
    o->heard_ms = now_ms(u);
    return true;
}

static bool send_pieces(upload_t *u, obj_t *o)
{
    while (o->pieces) {
        piece_t *p = o->pieces;
        if (!can_send(u) || !send_put(u, o, p->off, p->data, p->len)) return false;
        o->sent = p->off + p->len;
        o->heard_ms = now_ms(u); /* a stall counts from the last exchange */
        u->bytes_sent += p->len;
        o->pieces = p->next;
        if (!o->pieces) o->pieces_tail = NULL;
        free(p);
    }
    return true;
}

/* --- reading --------------------------------------------------------------- */

typedef struct {
    upload_t *u;
    obj_t *o;
    uint32_t gen;
    uint64_t from, to;
    piece_t *pieces, *tail;
    int rc;
    char why[512];
} read_job_t;

static void on_read_work(void *ud)
{
    read_job_t *j = ud;
    obj_t *o = j->o;
    if (atomic_load(&j->u->stop)) return;
    if (o->fd < 0) {
        o->fd = outputs_open(j->u->dir, o->path, j->why, sizeof j->why);
        if (o->fd < 0) {
            j->rc = LOOM_EIO;
            return;
        }
    }
    for (uint64_t off = j->from; off < j->to && j->rc == 0;) {
        size_t len = j->to - off < PUT_CHUNK ? (size_t)(j->to - off) : PUT_CHUNK;
        piece_t *p = loom_xmalloc(sizeof *p + len);
        p->next = NULL;
        p->off = off;
        p->len = len;
        j->rc = outputs_pread(o->fd, p->data, len, off, j->why, sizeof j->why);
        if (j->tail)
            j->tail->next = p;
        else
            j->pieces = p;
        j->tail = p;
        off += len;
    }
}

static void top_up_all(upload_t *u);

static void on_read_done(void *ud)
{
    read_job_t *j = ud;
    upload_t *u = j->u;
    obj_t *o = j->o;
    o->reading = false;
    bool current = !u->ended && j->gen == o->gen && o->state == OBJ_SENDING;
    if (current && j->rc == 0) {
        if (o->pieces_tail)
            o->pieces_tail->next = j->pieces;
        else
            o->pieces = j->pieces;
        o->pieces_tail = j->tail;
        j->pieces = NULL;
    }
    while (j->pieces) {
        piece_t *p = j->pieces;
        j->pieces = p->next;
        free(p);
    }
    if (o->state == OBJ_STORED && o->fd >= 0) {
        close(o->fd);
        o->fd = -1;
    }
    int rc = j->rc;
    char why[sizeof j->why];
    memcpy(why, j->why, sizeof why);
    free(j);
    if (job_back(u)) return;
    if (current && rc != 0) {
        fail(u, "output \"%s\": %s", o->path, why);
        return;
    }
    if (current) send_pieces(u, o);
    top_up_all(u);
}

static uint64_t in_window(const upload_t *u)
{
    uint64_t n = 0;
    for (size_t i = 0; i < PUT_ACTIVE; i++) {
        const obj_t *o = u->active[i];
        if (o && o->state == OBJ_SENDING) n += o->read_to - o->acked;
    }
    return n;
}

/* Reads the next chunks of o, as many as the attempt's window has room for. */
static void top_up(upload_t *u, obj_t *o)
{
    if (u->ended || o->state != OBJ_SENDING || o->reading || o->read_to >= o->size) return;
    uint64_t used = in_window(u);
    uint64_t room = used < PUT_WINDOW ? PUT_WINDOW - used : 0;
    uint64_t left = o->size - o->read_to;
    uint64_t want = left < room ? left : room;
    /* Whole chunks only (but for the last): fewer, fuller messages. */
    if (want < left) want -= want % PUT_CHUNK;
    if (want == 0) return;
    read_job_t *j = loom_xcalloc(1, sizeof *j);
    j->u = u;
    j->o = o;
    j->gen = o->gen;
    j->from = o->read_to;
    j->to = o->read_to + want;
    o->read_to = j->to;
    o->reading = true;
    u->jobs++;
    agent_queue_job(u->a, on_read_work, on_read_done, j);
}

static void top_up_all(upload_t *u)
{
    for (size_t i = 0; i < PUT_ACTIVE && !u->ended; i++)
        if (u->active[i]) top_up(u, u->active[i]);
}

/* --- the objects ----------------------------------------------------------- */

/* Forgets what was sent of o and asks loomd again. */
static void ask_again(upload_t *u, obj_t *o)
{
    o->gen++;
    free_pieces(o);
    o->state = OBJ_QUERY;
    o->query_unsent = true;
    o->acked = o->sent = o->read_to = 0;
    o->heard_ms = now_ms(u);
}

/* The first waiting object no other attempt of this agent is sending. */
static obj_t *take_waiting(upload_t *u)
{
    for (obj_t *o = u->waiting, *prev = NULL; o; prev = o, o = o->next) {
        if (loom_smap_get(&u->a->uploading, o->hash)) continue;
        if (prev)
            prev->next = o->next;
        else
            u->waiting = o->next;
        if (u->waiting_tail == o) u->waiting_tail = prev;
        o->next = NULL;
        return o;
    }
    return NULL;
}

static void pump_objects(upload_t *u)
{
    for (size_t i = 0; i < PUT_ACTIVE && !u->ended && u->waiting; i++) {
        if (u->active[i]) continue;
        obj_t *o = take_waiting(u);
        if (!o) return;
        u->active[i] = o;
        u->n_active++;
        loom_smap_put(&u->a->uploading, o->hash, u);
        ask_again(u, o);
        send_query(u, o);
    }
}

void upload_pump(upload_t *u)
{
    pump_objects(u);
}

static void add_object(upload_t *u, const ofile_t *f)
{
    if (loom_smap_get(&u->by_hash, f->hash)) return; /* same content: uploaded once */
    obj_t *o = loom_xcalloc(1, sizeof *o);
    o->u = u;
    memcpy(o->hash, f->hash, sizeof o->hash);
    o->size = f->h.size;
    o->path = f->path;
    o->fd = -1;
    o->state = OBJ_WAITING;
    loom_smap_put(&u->by_hash, o->hash, o);
    if (u->n_objs == u->cap_objs) {
        u->cap_objs = u->cap_objs ? u->cap_objs * 2 : 8;
        u->objs = loom_xrealloc(u->objs, u->cap_objs * sizeof *u->objs);
    }
    u->objs[u->n_objs++] = o;
    if (u->waiting_tail)
        u->waiting_tail->next = o;
    else
        u->waiting = o;
    u->waiting_tail = o;
}

static void stored(upload_t *u, obj_t *o)
{
    o->state = OBJ_STORED;
    o->gen++;
    free_pieces(o);
    if (o->fd >= 0 && !o->reading) {
        close(o->fd);
        o->fd = -1;
    }
    release(u, o);
    u->n_stored++;
    pump_objects(u);
    agent_kick_uploads(u->a); /* before check_done, which may free u */
    top_up_all(u);
    check_done(u);
}

void upload_on_ack(upload_t *u, const Loom__PutAck *ack)
{
    obj_t *o = loom_smap_get(&u->by_hash, ack->hash);
    if (u->ended || !o || o->state == OBJ_WAITING || o->state == OBJ_STORED) return;
    /* Answers to what was sent before we started again from the query. */
    if (o->query_unsent) return;
    o->heard_ms = now_ms(u);
    if (ack->error && *ack->error) {
        fail(u, "output \"%s\": loomd refused the upload: %s", o->path, ack->error);
        return;
    }
    if (ack->stored) {
        LOG_DEBUG("object stored attempt=%llu hash=%s sent_bytes=%llu",
                  (unsigned long long)u->t->id, o->hash, (unsigned long long)o->sent);
        stored(u, o);
        return;
    }
    if (ack->offset > o->size) {
        fail(u, "output \"%s\": loomd acknowledged %llu bytes of %llu", o->path,
             (unsigned long long)ack->offset, (unsigned long long)o->size);
        return;
    }
    if (o->state == OBJ_QUERY || ack->offset > o->sent) {
        /* loomd holds ack->offset bytes: go on from there. */
        o->gen++;
        free_pieces(o);
        o->state = OBJ_SENDING;
        o->acked = o->sent = o->read_to = ack->offset;
    } else if (ack->offset > o->acked) {
        o->acked = ack->offset;
    } else {
        return; /* stale, or a repeat */
    }
    top_up_all(u);
}

bool upload_flush(upload_t *u)
{
    for (size_t i = 0; i < PUT_ACTIVE && !u->ended; i++) {
        obj_t *o = u->active[i];
        if (!o) continue;
        if (o->state == OBJ_QUERY && !send_query(u, o)) return false;
        if (o->state == OBJ_SENDING && !send_pieces(u, o)) return false;
    }
    return true;
}

void upload_restart(upload_t *u)
{
    size_t n = 0;
    for (size_t i = 0; i < PUT_ACTIVE && !u->ended; i++) {
        obj_t *o = u->active[i];
        if (!o) continue;
        ask_again(u, o);
        n++;
    }
    if (n)
        LOG_INFO("uploads start again from the query attempt=%llu objects=%zu",
                 (unsigned long long)u->t->id, n);
}

void upload_tick(upload_t *u, uint64_t now)
{
    for (size_t i = 0; i < PUT_ACTIVE && !u->ended; i++) {
        obj_t *o = u->active[i];
        if (!o) continue;
        /* Waiting for loomd: for the answer to a query, for acks of bytes in
         * flight, or for "stored" after the last byte; not for our window. */
        bool waiting = o->state == OBJ_QUERY ||
                       (o->state == OBJ_SENDING && (o->sent > o->acked || o->acked == o->size));
        if (!waiting || o->query_unsent || now - o->heard_ms < PUT_STALL_MS) continue;
        LOG_WARN("no answer from loomd for object hash=%s attempt=%llu; asking again", o->hash,
                 (unsigned long long)u->t->id);
        ask_again(u, o);
        send_query(u, o);
    }
}

/* --- hashing --------------------------------------------------------------- */

typedef struct {
    upload_t *u;
    ofile_t *f;
    int rc;
    char why[512];
} hash_job_t;

static void pump_hashes(upload_t *u);

static void on_hash_work(void *ud)
{
    hash_job_t *j = ud;
    upload_t *u = j->u;
    j->rc = outputs_hash_step(u->dir, j->f->path, &j->f->h, HASH_SLICE, &u->stop, j->f->hash,
                              j->why, sizeof j->why);
}

static void on_hash_done(void *ud)
{
    hash_job_t *j = ud;
    upload_t *u = j->u;
    if (job_back(u)) {
        free(j);
        return;
    }
    if (j->rc == 1) {
        /* More to hash: back in the queue, behind whatever waits. */
        u->jobs++;
        agent_queue_job(u->a, on_hash_work, on_hash_done, j);
        return;
    }
    int rc = j->rc;
    ofile_t *f = j->f;
    char why[sizeof j->why];
    memcpy(why, j->why, sizeof why);
    free(j);
    u->hashing--;
    if (rc != 0) {
        fail(u, "output \"%s\": %s", f->path, why);
        return;
    }
    u->n_hashed++;
    LOG_DEBUG("output hashed attempt=%llu path=%s size=%llu hash=%s", (unsigned long long)u->t->id,
              f->path, (unsigned long long)f->h.size, f->hash);
    add_object(u, f);
    pump_hashes(u);
    pump_objects(u);
    check_done(u);
}

static void pump_hashes(upload_t *u)
{
    while (!u->ended && u->hashing < HASH_JOBS && u->next_hash < u->n_files) {
        hash_job_t *j = loom_xcalloc(1, sizeof *j);
        j->u = u;
        j->f = &u->files[u->next_hash++];
        u->hashing++;
        u->jobs++;
        agent_queue_job(u->a, on_hash_work, on_hash_done, j);
    }
}

/* --- collecting ------------------------------------------------------------ */

typedef struct {
    upload_t *u;
    char **paths;
    size_t n;
    int rc;
    char why[1024];
} collect_job_t;

static void on_collect_work(void *ud)
{
    collect_job_t *j = ud;
    upload_t *u = j->u;
    j->rc = outputs_collect(u->dir, u->patterns, u->n_patterns, &j->paths, &j->n, j->why,
                            sizeof j->why);
}

static void on_collect_done(void *ud)
{
    collect_job_t *j = ud;
    upload_t *u = j->u;
    if (job_back(u)) {
        /* over: nothing to do but free the list */
    } else if (j->rc != 0) {
        end(u, j->why);
    } else {
        u->files = loom_xcalloc(j->n + 1, sizeof *u->files);
        for (size_t i = 0; i < j->n; i++) {
            u->files[i].path = j->paths[i];
            outputs_hash_init(&u->files[i].h);
            j->paths[i] = NULL;
        }
        u->n_files = j->n;
        u->collected = true;
        pump_hashes(u);
        check_done(u);
    }
    for (size_t i = 0; i < j->n; i++) free(j->paths[i]);
    free(j->paths);
    free(j);
}

upload_t *upload_start(loom_agent_t *a, attempt_t *t, char *const *patterns, size_t n,
                       upload_done_cb done)
{
    upload_t *u = loom_xcalloc(1, sizeof *u);
    u->a = a;
    u->t = t;
    u->done = done;
    u->dir = loom_xstrdup(t->dir);
    u->patterns = loom_xcalloc(n + 1, sizeof *u->patterns);
    for (size_t i = 0; i < n; i++) u->patterns[i] = loom_xstrdup(patterns[i]);
    u->n_patterns = n;
    atomic_init(&u->stop, false);
    u->started_ms = now_ms(u);
    collect_job_t *j = loom_xcalloc(1, sizeof *j);
    j->u = u;
    u->jobs++;
    agent_queue_job(a, on_collect_work, on_collect_done, j);
    return u;
}
