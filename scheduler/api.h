/* loomd's HTTP+JSON API (docs/api.md), served by libmicrohttpd from the
 * scheduler's libuv loop: MHD runs without threads of its own, its epoll
 * descriptor is watched by a uv_poll_t and its timeouts by a uv_timer_t.
 * Long polls and followed logs suspend their connection and are resumed
 * when the scheduler reports a change, so no client needs to poll. */
#ifndef LOOM_API_H
#define LOOM_API_H

#include <stdint.h>
#include <uv.h>

#include "scheduler.h"

typedef struct loom_api loom_api_t;

loom_api_t *loom_api_new(uv_loop_t *loop, loom_sched_t *sched);
/* Listens on host:port (port 0: the OS picks); the port bound goes to *bound. */
int loom_api_listen(loom_api_t *api, const char *host, uint16_t port, uint16_t *bound, char *why,
                    size_t whylen);
/* Stops serving; on_closed runs when the handles are released. */
void loom_api_close(loom_api_t *api, void (*on_closed)(void *ud), void *ud);
void loom_api_destroy(loom_api_t **api);

#endif
