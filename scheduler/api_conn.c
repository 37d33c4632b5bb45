/* The header deadline against slow clients. libmicrohttpd's own timeout
 * counts only silence, so a client that sends one header byte every few
 * seconds (slowloris) would hold its connection for hours. Every connection
 * is tracked here from accept; one that has not completed a request's
 * headers within timeout_ms of connecting, or of finishing its previous
 * request, is shut down. A request in progress (a body upload, a suspended
 * long poll, a followed log) is not subject to it. */
#include "api_int.h"

#include "loom/log.h"
#include "loom/util.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <sys/socket.h>

struct api_conn {
    struct MHD_Connection *conn;
    int fd;
    uint64_t since; /* monotonic ms: accepted, or its last request ended */
    bool in_request;
    bool cut;
    api_conn_t *next, *prev;
};

static api_conn_t *conn_of(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

static void describe_peer(struct MHD_Connection *conn, char *out, size_t outlen)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    snprintf(out, outlen, "?");
    if (ci && ci->client_addr && ci->client_addr->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)ci->client_addr)->sin_addr, out,
                  (socklen_t)outlen);
}

static void on_guard_timer(uv_timer_t *h)
{
    loom_api_t *api = h->data;
    uint64_t now = loom_mono_ms();
    bool cut_any = false;
    for (api_conn_t *c = api->conns; c; c = c->next) {
        if (c->in_request || c->cut || now - c->since < api->opts.timeout_ms) continue;
        char peer[64];
        describe_peer(c->conn, peer, sizeof peer);
        LOG_INFO("api: closing a connection from %s: no complete request within %u ms", peer,
                 api->opts.timeout_ms);
        /* shutdown, not close: the descriptor stays MHD's to close, and
         * MHD sees the end of the stream on its next read. */
        shutdown(c->fd, SHUT_RDWR);
        c->cut = true;
        cut_any = true;
    }
    if (!api->conns) uv_timer_stop(&api->guard);
    if (cut_any) api_run(api);
}

void api_conn_init(loom_api_t *api)
{
    uv_timer_init(api->loop, &api->guard);
    api->guard.data = api;
}

void api_conn_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                     enum MHD_ConnectionNotificationCode code)
{
    loom_api_t *api = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        api_conn_t *c = loom_xcalloc(1, sizeof *c);
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        c->conn = conn;
        c->fd = ci ? ci->connect_fd : -1;
        c->since = loom_mono_ms();
        c->next = api->conns;
        if (api->conns) api->conns->prev = c;
        api->conns = c;
        *socket_context = c;
        if (!uv_is_active((uv_handle_t *)&api->guard) && !api->closing) {
            uint64_t every = api->opts.timeout_ms / 4;
            if (every < 50) every = 50;
            if (every > 1000) every = 1000;
            uv_timer_start(&api->guard, on_guard_timer, every, every);
        }
        return;
    }
    api_conn_t *c = *socket_context;
    if (!c) return;
    if (c->prev)
        c->prev->next = c->next;
    else
        api->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    free(c);
    *socket_context = NULL;
}

void api_conn_request_started(loom_api_t *api, struct MHD_Connection *conn)
{
    (void)api;
    api_conn_t *c = conn_of(conn);
    if (c) c->in_request = true;
}

void api_conn_request_done(loom_api_t *api, struct MHD_Connection *conn)
{
    (void)api;
    api_conn_t *c = conn_of(conn);
    if (!c) return;
    c->in_request = false;
    c->since = loom_mono_ms();
}
