/* A ZeroMQ socket inside a libuv loop. ZMQ_FD is edge-triggered and only says
 * that ZMQ_EVENTS may have changed, so after every wake-up and every send we
 * drain: read ZMQ_EVENTS and receive with ZMQ_DONTWAIT until POLLIN clears.
 * Use the socket only from the loop thread. */
#ifndef LOOM_ZSOCK_H
#define LOOM_ZSOCK_H

#include <stddef.h>
#include <uv.h>
#include <zmq.h>

#define LOOM_ZSOCK_MAX_PARTS 8 /* a ZAP request has 7 */

typedef struct loom_zsock loom_zsock_t;

/* One received multipart message. Parts beyond LOOM_ZSOCK_MAX_PARTS are
 * counted in nparts but dropped; the parts are closed after the callback. */
typedef void (*loom_zsock_recv_cb)(void *ud, zmq_msg_t *parts, size_t nparts);

/* Takes ownership of the ZeroMQ socket; it is closed with the wrapper. */
loom_zsock_t *loom_zsock_new(uv_loop_t *loop, void *socket, loom_zsock_recv_cb cb, void *ud);
int loom_zsock_start(loom_zsock_t *zs);
void *loom_zsock_socket(loom_zsock_t *zs);
/* Sends parts as one message, without blocking. Returns 0, or LOOM_ENET with
 * errno left as zmq set it (EAGAIN at the high-water mark, EHOSTUNREACH for
 * an unknown ROUTER peer). Drains incoming messages afterwards. */
int loom_zsock_send(loom_zsock_t *zs, const void *const *parts, const size_t *lens, size_t n);
/* Processes whatever is readable now; call after sending from outside. */
void loom_zsock_drain(loom_zsock_t *zs);
/* Stops watching, closes the socket with linger 0 and frees the wrapper once
 * libuv has released the handle; on_closed (may be NULL) runs then. */
void loom_zsock_close(loom_zsock_t *zs, void (*on_closed)(void *ud));

#endif
