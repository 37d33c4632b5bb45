/* Object downloads into the agent's cache; see fetch.h for the protocol.
 *
 * A download accepts chunks strictly in order (offset == bytes accepted):
 * anything else is a duplicate or a leftover of a request asked again, and
 * is dropped. Asking again is how loss is handled: after a Welcome, and
 * when a download has waited FETCH_STALL_MS for an answer, requests restart
 * from the first byte not yet accepted. The window counts from the bytes
 * written, so a slow disk slows the requests down instead of piling chunks
 * up in memory. */
#include "fetch.h"

#include "agent_int.h"
#include "cache.h"

#include "loom/bundle.h"
#include "loom/err.h"
#include "loom/log.h"
#include "loom/map.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CHUNK ((uint64_t)LOOM_OBJECT_CHUNK_MAX)
#define TICK_MS 1000

typedef struct {
    fetch_cb cb;
    void *ud;
} waiter_t;

typedef struct piece {
    struct piece *next;
    size_t len;
    uint8_t data[];
} piece_t;

typedef struct dl {
    struct dl *prev, *next; /* in the fetcher's queue or active list */
    fetcher_t *f;
    char hash[LOOM_HASH_HEX_LEN + 1];
    bool active, ended, size_known;
    uint64_t size;
    uint64_t accepted;             /* bytes received in order */
    uint64_t written;              /* of those, written and hashed */
    uint64_t requested;            /* requests out cover [accepted, requested) */
    piece_t *pieces, *pieces_tail; /* accepted, not yet handed to a job */
    waiter_t *waiters;
    size_t n_waiters;
    uint64_t asked_ms; /* last progress, or last time we asked */
    int stalls;
    /* The write job: while `writing`, only the job touches the fields
     * below; the loop touches them only when no job runs. */
    bool writing, final_job;
    piece_t *batch;
    uint64_t batch_bytes;
    int fd;
    char *tmp;
    crypto_generichash_state st;
    char *job_error;
} dl_t;

typedef struct {
    dl_t *head, *tail;
} dl_list_t;

struct fetcher {
    loom_agent_t *a;
    char *cache;
    uv_timer_t timer;
    bool timer_running, stopped;
    loom_map_t by_hash; /* hash -> dl_t*, downloads not ended */
    dl_list_t queue, active;
    size_t n_active;
    uint64_t requests;
    void (*on_closed)(loom_agent_t *a);
};

static void list_push(dl_list_t *l, dl_t *d)
{
    d->prev = l->tail;
    d->next = NULL;
    if (l->tail)
        l->tail->next = d;
    else
        l->head = d;
    l->tail = d;
}

static void list_remove(dl_list_t *l, dl_t *d)
{
    if (d->prev)
        d->prev->next = d->next;
    else
        l->head = d->next;
    if (d->next)
        d->next->prev = d->prev;
    else
        l->tail = d->prev;
    d->prev = d->next = NULL;
}

static uint64_t now_ms(fetcher_t *f)
{
    return loom_clock_now(&f->a->clock);
}

fetcher_t *fetcher_new(loom_agent_t *a, const char *cache_dir)
{
    fetcher_t *f = loom_xcalloc(1, sizeof *f);
    f->a = a;
    f->cache = loom_xstrdup(cache_dir);
    uv_timer_init(a->loop, &f->timer);
    f->timer.data = f;
    a->pending_closes++;
    return f;
}

uint64_t fetcher_requests(const fetcher_t *f)
{
    return f->requests;
}

/* --- asking loomd --------------------------------------------------------- */

static bool send_fetch(dl_t *d, uint64_t offset)
{
    Loom__FetchObject fo = LOOM__FETCH_OBJECT__INIT;
    fo.hash = d->hash;
    fo.offset = offset;
    fo.max = (uint32_t)CHUNK;
    loom_msg_t m = LOOM__ENVELOPE__INIT;
    m.body_case = LOOM__ENVELOPE__BODY_FETCH;
    m.fetch = &fo;
    if (agent_send(d->f->a, &m) != 0) return false; /* asked again later */
    d->f->requests++;
    return true;
}

/* Keeps the window full. Until the first chunk tells the size, one request
 * only: most objects are small and need no more. */
static void top_up(dl_t *d)
{
    if (!d->f->a->welcomed || d->ended) return;
    if (!d->size_known) {
        if (d->requested == 0 && send_fetch(d, 0)) d->requested = CHUNK;
        return;
    }
    while (d->requested < d->size && d->requested - d->written < FETCH_WINDOW * CHUNK) {
        if (!send_fetch(d, d->requested)) return;
        uint64_t left = d->size - d->requested;
        d->requested += left < CHUNK ? left : CHUNK;
    }
}

static void activate_next(fetcher_t *f)
{
    while (!f->stopped && f->n_active < FETCH_ACTIVE && f->queue.head) {
        dl_t *d = f->queue.head;
        list_remove(&f->queue, d);
        list_push(&f->active, d);
        d->active = true;
        f->n_active++;
        d->asked_ms = now_ms(f);
        top_up(d);
    }
}

/* --- ending a download ---------------------------------------------------- */

static void free_pieces(piece_t *p)
{
    while (p) {
        piece_t *next = p->next;
        free(p);
        p = next;
    }
}

/* Drops the temporary file and the memory (no job may be running). */
static void dl_free(dl_t *d)
{
    if (d->fd >= 0) close(d->fd);
    if (d->tmp) unlink(d->tmp);
    free(d->tmp);
    free_pieces(d->pieces);
    free_pieces(d->batch);
    free(d->job_error);
    free(d->waiters);
    free(d);
}

/* error is NULL on success; refused: it is loomd's answer (ObjectChunk.error). */
static void dl_end_as(dl_t *d, const char *error, bool refused)
{
    fetcher_t *f = d->f;
    char hash[LOOM_HASH_HEX_LEN + 1];
    memcpy(hash, d->hash, sizeof hash);
    waiter_t *waiters = d->waiters;
    size_t n = d->n_waiters;
    d->waiters = NULL;
    d->n_waiters = 0;
    d->ended = true;
    loom_smap_del(&f->by_hash, d->hash);
    if (d->active) {
        list_remove(&f->active, d);
        f->n_active--;
    } else {
        list_remove(&f->queue, d);
    }
    if (error) {
        LOG_WARN("object download failed hash=%s agent=%s: %s%s", hash, f->a->name,
                 refused ? "loomd: " : "", error);
    } else {
        LOG_DEBUG("object cached hash=%s size=%llu", hash, (unsigned long long)d->size);
        /* Listed before the waiters hear of it, so they find it cached. */
        cache_added(f->a->cache, hash, d->size);
    }
    if (!d->writing) dl_free(d); /* else when its job returns */
    for (size_t i = 0; i < n; i++) waiters[i].cb(waiters[i].ud, hash, error, refused);
    free(waiters);
    activate_next(f);
}

static void dl_end(dl_t *d, const char *error)
{
    dl_end_as(d, error, false);
}

/* --- writing, on the thread pool ------------------------------------------ */

static int job_open(dl_t *d)
{
    d->tmp = loom_xasprintf("%s/tmp/%s.XXXXXX", d->f->cache, d->hash);
    d->fd = mkostemp(d->tmp, O_CLOEXEC);
    if (d->fd < 0) {
        d->job_error = loom_xasprintf("cannot create %s: %s", d->tmp, strerror(errno));
        free(d->tmp);
        d->tmp = NULL;
        return -1;
    }
    return 0;
}

static int job_write(dl_t *d, const piece_t *p)
{
    for (size_t off = 0; off < p->len;) {
        ssize_t n = write(d->fd, p->data + off, p->len - off);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            d->job_error = loom_xasprintf("cannot write the cache: %s", strerror(errno));
            return -1;
        }
        off += (size_t)n;
    }
    crypto_generichash_update(&d->st, p->data, p->len);
    return 0;
}

/* Verified, synced, then renamed: a cached object is always whole. */
static int job_install(dl_t *d)
{
    unsigned char h[32];
    char got[LOOM_HASH_HEX_LEN + 1];
    crypto_generichash_final(&d->st, h, sizeof h);
    sodium_bin2hex(got, sizeof got, h, sizeof h);
    if (strcmp(got, d->hash) != 0) {
        d->job_error = loom_xasprintf("content hash is %s, not %s", got, d->hash);
        return -1;
    }
    char *sub = loom_xasprintf("%s/objects/%.2s", d->f->cache, d->hash);
    char *final = loom_xasprintf("%s/%s", sub, d->hash + 2);
    int rc = fsync(d->fd);
    if (rc == 0) rc = close(d->fd);
    d->fd = -1;
    if (rc == 0 && mkdir(sub, 0700) != 0 && errno != EEXIST) rc = -1;
    if (rc == 0) rc = rename(d->tmp, final);
    if (rc != 0) d->job_error = loom_xasprintf("cannot store %s: %s", final, strerror(errno));
    if (rc == 0) {
        free(d->tmp);
        d->tmp = NULL;
    }
    free(sub);
    free(final);
    return rc;
}

static void on_write_work(void *ud)
{
    dl_t *d = ud;
    if (d->fd < 0 && job_open(d) != 0) return;
    for (piece_t *p = d->batch; p; p = p->next)
        if (job_write(d, p) != 0) return;
    if (d->final_job) job_install(d);
}

static void start_job(dl_t *d);

static void on_write_done(void *ud)
{
    dl_t *d = ud;
    free_pieces(d->batch);
    d->batch = NULL;
    d->written += d->batch_bytes;
    d->writing = false;
    if (d->ended) {
        dl_free(d);
        return;
    }
    if (d->job_error) {
        char *error = d->job_error;
        d->job_error = NULL;
        dl_end(d, error);
        free(error);
        return;
    }
    if (d->final_job) {
        dl_end(d, NULL);
        return;
    }
    start_job(d);
    top_up(d);
}

/* Hands what was accepted to one job at a time (the hash is sequential). */
static void start_job(dl_t *d)
{
    bool complete = d->size_known && d->accepted == d->size;
    if (d->writing || (!d->pieces && !complete)) return;
    d->batch = d->pieces;
    d->batch_bytes = d->accepted - d->written;
    d->pieces = d->pieces_tail = NULL;
    d->final_job = complete;
    d->writing = true;
    agent_queue_job(d->f->a, on_write_work, on_write_done, d);
}

/* --- chunks from loomd ---------------------------------------------------- */

/* Checks a chunk at the expected offset; returns why it is unacceptable. */
static const char *bad_chunk(dl_t *d, const Loom__ObjectChunk *c)
{
    if (!d->size_known && c->size > cache_max(d->f->a->cache))
        return "object larger than the agent's whole cache (--cache-size)";
    if (d->size_known && c->size != d->size) return "loomd changed the object's size";
    uint64_t size = d->size_known ? d->size : c->size;
    if (c->offset > size || c->data.len > size - c->offset) return "chunk past the object's end";
    if (c->data.len == 0 && c->offset < size) return "empty chunk";
    return NULL;
}

void fetcher_on_chunk(fetcher_t *f, const Loom__ObjectChunk *c)
{
    dl_t *d = loom_smap_get(&f->by_hash, c->hash);
    if (!d || !d->active) return;
    if (c->error && *c->error) {
        dl_end_as(d, c->error, true);
        return;
    }
    if (c->offset != d->accepted) return; /* a duplicate, or a leftover */
    const char *bad = bad_chunk(d, c);
    if (bad) {
        dl_end(d, bad);
        return;
    }
    if (!d->size_known) {
        d->size_known = true;
        d->size = c->size;
        if (d->requested > d->size) d->requested = d->size;
    }
    piece_t *p = loom_xmalloc(sizeof *p + c->data.len);
    p->next = NULL;
    p->len = c->data.len;
    if (c->data.len) memcpy(p->data, c->data.data, c->data.len);
    if (d->pieces_tail)
        d->pieces_tail->next = p;
    else
        d->pieces = p;
    d->pieces_tail = p;
    d->accepted += c->data.len;
    d->asked_ms = now_ms(f);
    d->stalls = 0;
    start_job(d);
    top_up(d);
}

/* --- wanting, resuming, stalls, stopping ---------------------------------- */

static void on_tick_timer(uv_timer_t *handle);

typedef struct {
    fetch_cb cb;
    void *ud;
    char hash[LOOM_HASH_HEX_LEN + 1];
} cached_t;

static void on_cached_done(void *ud)
{
    cached_t *c = ud;
    c->cb(c->ud, c->hash, NULL, false);
    free(c);
}

/* Installed since the caller last looked (a download that ended between
 * its scan of the cache and now): nothing to fetch. The cache's index, not
 * the file system, says so: an evicted object's file may linger a moment. */
static bool in_cache(fetcher_t *f, const char *hash)
{
    return cache_has(f->a->cache, hash);
}

void fetcher_want(fetcher_t *f, const char *hash, fetch_cb cb, void *ud)
{
    assert(!f->stopped && loom_hash_hex_valid(hash));
    dl_t *d = loom_smap_get(&f->by_hash, hash);
    if (!d && in_cache(f, hash)) {
        /* Through the thread pool (doing nothing there) only so that the
         * callback comes later from the loop, as promised. */
        cached_t *c = loom_xcalloc(1, sizeof *c);
        c->cb = cb;
        c->ud = ud;
        memcpy(c->hash, hash, sizeof c->hash);
        agent_queue_job(f->a, NULL, on_cached_done, c);
        return;
    }
    if (!d) {
        d = loom_xcalloc(1, sizeof *d);
        d->f = f;
        d->fd = -1;
        memcpy(d->hash, hash, sizeof d->hash);
        crypto_generichash_init(&d->st, NULL, 0, 32);
        loom_smap_put(&f->by_hash, d->hash, d);
        list_push(&f->queue, d);
    }
    d->waiters = loom_xrealloc(d->waiters, (d->n_waiters + 1) * sizeof *d->waiters);
    d->waiters[d->n_waiters++] = (waiter_t){cb, ud};
    if (!f->timer_running) {
        uv_timer_start(&f->timer, on_tick_timer, TICK_MS, TICK_MS);
        f->timer_running = true;
    }
    activate_next(f);
}

void fetcher_resume(fetcher_t *f)
{
    for (dl_t *d = f->active.head; d; d = d->next) {
        d->requested = d->accepted;
        d->asked_ms = now_ms(f);
        d->stalls = 0;
        top_up(d);
    }
}

static void check_stall(fetcher_t *f, dl_t *d, uint64_t now)
{
    bool waiting = !d->size_known || d->requested > d->accepted;
    if (!f->a->welcomed || !waiting) {
        d->asked_ms = now; /* not loomd's silence */
        return;
    }
    if (now - d->asked_ms < FETCH_STALL_MS) return;
    if (++d->stalls >= FETCH_STALLS) {
        dl_end(d, "no answer from loomd");
        return;
    }
    LOG_WARN("no answer for object hash=%s offset=%llu; asking again agent=%s", d->hash,
             (unsigned long long)d->accepted, f->a->name);
    d->requested = d->accepted;
    d->asked_ms = now;
    top_up(d);
}

static void on_tick_timer(uv_timer_t *handle)
{
    fetcher_t *f = handle->data;
    uint64_t now = now_ms(f);
    for (dl_t *d = f->active.head, *next; d; d = next) {
        next = d->next;
        check_stall(f, d, now);
    }
    if (!f->active.head && !f->queue.head) {
        uv_timer_stop(&f->timer);
        f->timer_running = false;
    }
}

void fetcher_stop(fetcher_t *f)
{
    f->stopped = true;
    while (f->active.head) dl_end(f->active.head, "agent stopped");
    while (f->queue.head) dl_end(f->queue.head, "agent stopped");
    uv_timer_stop(&f->timer);
    f->timer_running = false;
}

static void on_timer_closed(uv_handle_t *handle)
{
    fetcher_t *f = handle->data;
    f->on_closed(f->a);
}

void fetcher_close(fetcher_t *f, void (*on_closed)(loom_agent_t *a))
{
    f->on_closed = on_closed;
    uv_close((uv_handle_t *)&f->timer, on_timer_closed);
}

void fetcher_destroy(fetcher_t **fp)
{
    fetcher_t *f = fp ? *fp : NULL;
    if (!f) return;
    /* Downloads still listed never had a job (the loop stopped first). */
    while (f->active.head) {
        dl_t *d = f->active.head;
        list_remove(&f->active, d);
        dl_free(d);
    }
    while (f->queue.head) {
        dl_t *d = f->queue.head;
        list_remove(&f->queue, d);
        dl_free(d);
    }
    loom_map_free(&f->by_hash);
    free(f->cache);
    free(f);
    *fp = NULL;
}
