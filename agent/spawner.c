/* Spawner threads: a FIFO of requests in, a list of finished ones out,
 * handed to the loop through one uv_async_t. */
#include "spawner.h"

#include "loom/err.h"
#include "loom/log.h"
#include "loom/util.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define MAX_THREADS 8

struct loom_spawner {
    uv_async_t wake; /* the loop's end: finished requests are waiting */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    loom_spawn_req_t *head, *tail; /* submitted, not yet taken by a thread */
    loom_spawn_req_t *finished;    /* done by a thread, not yet delivered */
    pthread_t threads[MAX_THREADS];
    unsigned n_threads;
    bool stopping;
    void (*on_closed)(void *ud);
    void *closed_ud;
};

static void *thread_main(void *arg)
{
    loom_spawner_t *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->head && !s->stopping) pthread_cond_wait(&s->cv, &s->mu);
        loom_spawn_req_t *req = s->head;
        if (!req) break; /* stopping, and nothing left to do */
        s->head = req->next;
        if (!s->head) s->tail = NULL;
        pthread_mutex_unlock(&s->mu);
        req->work(req);
        pthread_mutex_lock(&s->mu);
        req->next = s->finished;
        s->finished = req;
        uv_async_send(&s->wake);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* Delivers in submission order: the list is built newest first. */
static void deliver(loom_spawner_t *s)
{
    pthread_mutex_lock(&s->mu);
    loom_spawn_req_t *list = s->finished;
    s->finished = NULL;
    pthread_mutex_unlock(&s->mu);
    loom_spawn_req_t *ordered = NULL;
    while (list) {
        loom_spawn_req_t *next = list->next;
        list->next = ordered;
        ordered = list;
        list = next;
    }
    while (ordered) {
        loom_spawn_req_t *next = ordered->next;
        ordered->done(ordered);
        ordered = next;
    }
}

static void on_spawner_wake(uv_async_t *handle)
{
    deliver(handle->data);
}

static void on_wake_closed(uv_handle_t *handle)
{
    loom_spawner_t *s = handle->data;
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    if (s->on_closed) s->on_closed(s->closed_ud);
    free(s);
}

int loom_spawner_new(uv_loop_t *loop, unsigned threads, loom_spawner_t **out)
{
    loom_spawner_t *s = loom_xcalloc(1, sizeof *s);
    if (threads < 1) threads = 1;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    if (uv_async_init(loop, &s->wake, on_spawner_wake) != 0) {
        pthread_cond_destroy(&s->cv);
        pthread_mutex_destroy(&s->mu);
        free(s);
        return LOOM_ENOMEM;
    }
    s->wake.data = s;
    for (unsigned i = 0; i < threads; i++) {
        /* Small stacks: a thread only calls posix_spawn or fork. */
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, 256 * 1024);
        int rc = pthread_create(&s->threads[s->n_threads], &attr, thread_main, s);
        pthread_attr_destroy(&attr);
        if (rc != 0) {
            LOG_WARN("spawner thread: %s", strerror(rc));
            break;
        }
        s->n_threads++;
    }
    if (s->n_threads == 0) {
        /* Without a thread nothing would ever run: give up now. */
        uv_close((uv_handle_t *)&s->wake, on_wake_closed); /* frees s */
        *out = NULL;
        return LOOM_ENOMEM;
    }
    *out = s;
    return 0;
}

void loom_spawner_submit(loom_spawner_t *s, loom_spawn_req_t *req)
{
    req->next = NULL;
    pthread_mutex_lock(&s->mu);
    if (s->tail)
        s->tail->next = req;
    else
        s->head = req;
    s->tail = req;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void loom_spawner_close(loom_spawner_t *s, void (*on_closed)(void *ud), void *ud)
{
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    for (unsigned i = 0; i < s->n_threads; i++) pthread_join(s->threads[i], NULL);
    deliver(s);
    s->on_closed = on_closed;
    s->closed_ud = ud;
    uv_close((uv_handle_t *)&s->wake, on_wake_closed);
}
