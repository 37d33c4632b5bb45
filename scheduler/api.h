/* loomd's HTTP+JSON API (docs/api.md), served by libmicrohttpd from the
 * scheduler's libuv loop: MHD runs without threads of its own, its epoll
 * descriptor is watched by a uv_poll_t and its timeouts by a uv_timer_t.
 * Long polls and followed logs suspend their connection and are resumed
 * when the scheduler reports a change, so no client needs to poll. */
#ifndef LOOM_API_H
#define LOOM_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "scheduler.h"

typedef struct loom_api loom_api_t;

/* HTTP hardening and TLS; zero fields take the defaults. */
typedef struct {
    const char *tls_cert_pem; /* PEM text (not a path); both or neither: TLS */
    const char *tls_key_pem;
    /* A client must send a request's headers within this long of connecting
     * (or of its previous request), and may not stay silent longer than
     * this mid-request. Suspended long polls and log follows are exempt. */
    uint32_t timeout_ms;       /* default 30 s */
    unsigned max_conns;        /* open connections at most; default 1000 */
    unsigned max_conns_per_ip; /* from one address; default 256 */
    size_t conn_memory;        /* per connection: bounds the request headers; 64 KiB */
} loom_api_options_t;

loom_api_t *loom_api_new(uv_loop_t *loop, loom_sched_t *sched);
/* Sets the options loom_api_listen uses (the strings must outlive it). */
void loom_api_configure(loom_api_t *api, const loom_api_options_t *opts);
/* Whether this libmicrohttpd can serve TLS. */
bool loom_api_tls_supported(void);
/* Listens on host:port (port 0: the OS picks); the port bound goes to *bound. */
int loom_api_listen(loom_api_t *api, const char *host, uint16_t port, uint16_t *bound, char *why,
                    size_t whylen);
/* Stops serving; on_closed runs when the handles are released. */
void loom_api_close(loom_api_t *api, void (*on_closed)(void *ud), void *ud);
void loom_api_destroy(loom_api_t **api);

#endif
