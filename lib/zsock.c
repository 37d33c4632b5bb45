/* ZeroMQ socket watched by a libuv poll handle; see zsock.h. */
#include "loom/zsock.h"
#include "loom/err.h"
#include "loom/log.h"
#include "loom/util.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Messages handled per wake-up before the loop gets a turn (to commit, send
 * and serve others); the rest are read on the next turn. */
#define DRAIN_BUDGET 2048

struct loom_zsock {
    uv_poll_t poll;
    uv_idle_t more; /* runs while a drain stopped at its budget */
    int open_handles;
    void *sock;
    loom_zsock_recv_cb cb;
    void *ud;
    bool draining;
    bool closing;
    void (*on_closed)(void *ud);
};

loom_zsock_t *loom_zsock_new(uv_loop_t *loop, void *socket, loom_zsock_recv_cb cb, void *ud)
{
    loom_zsock_t *zs = loom_xcalloc(1, sizeof *zs);
    int fd;
    size_t fdlen = sizeof fd;
    zs->sock = socket;
    zs->cb = cb;
    zs->ud = ud;
    if (zmq_getsockopt(socket, ZMQ_FD, &fd, &fdlen) != 0 ||
        uv_poll_init(loop, &zs->poll, fd) != 0) {
        free(zs);
        return NULL;
    }
    zs->poll.data = zs;
    uv_idle_init(loop, &zs->more);
    zs->more.data = zs;
    zs->open_handles = 2;
    return zs;
}

void *loom_zsock_socket(loom_zsock_t *zs)
{
    return zs->sock;
}

static bool readable(loom_zsock_t *zs)
{
    int events = 0;
    size_t len = sizeof events;
    if (zmq_getsockopt(zs->sock, ZMQ_EVENTS, &events, &len) != 0) return false;
    return (events & ZMQ_POLLIN) != 0;
}

static void on_more_idle(uv_idle_t *h);

void loom_zsock_drain(loom_zsock_t *zs)
{
    /* A handler that sends comes back here through loom_zsock_send; the
     * outer loop below re-reads ZMQ_EVENTS, so the inner call can return. */
    if (zs->draining || zs->closing) return;
    zs->draining = true;
    int handled = 0;
    while (!zs->closing && readable(zs)) {
        if (handled++ == DRAIN_BUDGET) {
            /* ZMQ_FD will not fire again for what is already queued, so the
             * idle handle brings us back on the next turn. */
            uv_idle_start(&zs->more, on_more_idle);
            break;
        }
        zmq_msg_t parts[LOOM_ZSOCK_MAX_PARTS];
        size_t n = 0;
        bool failed = false;
        for (;;) {
            zmq_msg_t scratch;
            zmq_msg_t *m = n < LOOM_ZSOCK_MAX_PARTS ? &parts[n] : &scratch;
            zmq_msg_init(m);
            if (zmq_msg_recv(m, zs->sock, ZMQ_DONTWAIT) < 0) {
                zmq_msg_close(m);
                failed = true;
                break;
            }
            n++;
            bool more = zmq_msg_more(m);
            if (m == &scratch) zmq_msg_close(m);
            if (!more) break;
        }
        size_t kept = n < LOOM_ZSOCK_MAX_PARTS ? n : LOOM_ZSOCK_MAX_PARTS;
        if (!failed && n > 0) zs->cb(zs->ud, parts, n);
        for (size_t i = 0; i < kept; i++) zmq_msg_close(&parts[i]);
        if (failed && n == 0) break;
    }
    if (handled <= DRAIN_BUDGET && uv_is_active((uv_handle_t *)&zs->more)) uv_idle_stop(&zs->more);
    zs->draining = false;
}

static void on_more_idle(uv_idle_t *h)
{
    loom_zsock_drain(h->data);
}

static void on_socket_readable(uv_poll_t *handle, int status, int events)
{
    loom_zsock_t *zs = handle->data;
    (void)events;
    if (status < 0) LOG_WARN("zmq poll error: %s", uv_strerror(status));
    loom_zsock_drain(zs);
}

int loom_zsock_start(loom_zsock_t *zs)
{
    if (uv_poll_start(&zs->poll, UV_READABLE, on_socket_readable) != 0) return LOOM_EIO;
    /* Messages may already be queued: the edge may have passed before us. */
    loom_zsock_drain(zs);
    return 0;
}

int loom_zsock_send(loom_zsock_t *zs, const void *const *parts, const size_t *lens, size_t n)
{
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        int flags = ZMQ_DONTWAIT | (i + 1 < n ? ZMQ_SNDMORE : 0);
        if (zmq_send(zs->sock, parts[i], lens[i], flags) < 0) {
            rc = LOOM_ENET;
            break;
        }
    }
    int saved = errno;
    loom_zsock_drain(zs);
    errno = saved;
    return rc;
}

static void on_poll_closed(uv_handle_t *handle)
{
    loom_zsock_t *zs = handle->data;
    if (--zs->open_handles > 0) return;
    int linger = 0;
    zmq_setsockopt(zs->sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_close(zs->sock);
    if (zs->on_closed) zs->on_closed(zs->ud);
    free(zs);
}

void loom_zsock_close(loom_zsock_t *zs, void (*on_closed)(void *ud))
{
    if (!zs) return;
    zs->closing = true;
    zs->on_closed = on_closed;
    uv_close((uv_handle_t *)&zs->poll, on_poll_closed);
    uv_close((uv_handle_t *)&zs->more, on_poll_closed);
}
