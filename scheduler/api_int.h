/* What the HTTP API's source files share (api.c: routes and handlers;
 * api_stream.c: logs and long polls). */
#ifndef LOOM_API_INT_H
#define LOOM_API_INT_H

#include <jansson.h>
#include <microhttpd.h>
#include <stdbool.h>
#include <stdint.h>

#include "api.h"
#include "loom/util.h"

#define MAX_BODY (8 * 1024 * 1024)
/* Largest object (a file of a code bundle) one PUT may store. */
#define LOOM_OBJECT_MAX (4ull << 30)
#define MAX_WAIT_S 3600
#define MAX_SEGMENTS 8

typedef struct req req_t;

/* What the request's bearer token allows, set by the router before a route's
 * handler runs. Webhook routes also run with API_ROLE_NONE: their handlers
 * accept a valid signature instead. */
typedef enum { API_ROLE_NONE = 0, API_ROLE_READ, API_ROLE_OPERATE, API_ROLE_ADMIN } api_role_t;
typedef struct follow follow_t;
typedef struct sse sse_t;
typedef struct api_conn api_conn_t;

struct loom_api {
    uv_loop_t *loop;
    loom_sched_t *sched;
    struct MHD_Daemon *mhd;
    uv_poll_t poll;
    uv_timer_t timer;      /* MHD's own timeouts */
    uv_timer_t wait_timer; /* the earliest long-poll deadline */
    int open_handles;
    bool closing;
    int commits; /* object commits on the thread pool */
    void (*on_closed)(void *ud);
    void *closed_ud;
    req_t *waiters;      /* suspended long polls */
    follow_t *followers; /* log streams */
    sse_t *streams;      /* run event streams (api_events.c) */
    loom_api_options_t opts;
    api_conn_t *conns; /* open connections, for the header deadline */
    uv_timer_t guard;  /* checks that deadline */
};

/* Per-connection state, freed when MHD reports the request completed. */
struct req {
    loom_api_t *api;
    struct MHD_Connection *conn;
    loom_buf_t body;
    api_role_t role;        /* from the bearer token; API_ROLE_NONE without one */
    const char *auth_error; /* a token was sent but is not valid: why */
    uint64_t token_id;
    bool refused; /* will be answered 401/403: its body is dropped */
    bool too_big;
    loom_obj_writer_t *upload; /* PUT /objects/HASH streams here, not into body */
    struct commit *commit;     /* its commit on the thread pool (api.c) */
    bool commit_done;
    const char *upload_error;
    char disk_full[256]; /* upload_error's text when the disk is nearly full */
    uint64_t uploaded;
    bool suspended;
    uint64_t wait_run;  /* run a long poll waits on */
    uint64_t deadline;  /* monotonic ms; 0: no long poll asked for */
    req_t *next, *prev; /* in api->waiters while suspended */
    /* For loom_http_requests_total: set by the router and api_queue. */
    char method[8];
    const char *route; /* the matched pattern, or "unmatched" */
    unsigned status;   /* 0: no response queued */
    uint64_t start_ns;
};

/* A log response body being streamed; freed by MHD with the response. */
struct follow {
    loom_api_t *api;
    struct MHD_Connection *conn;
    uint64_t run_id, attempt_id;
    uint64_t offset;
    int fd;
    bool follow;
    bool suspended;
    follow_t *next, *prev;
    /* ?timestamps=1: each line prefixed with when loomd stored it. */
    bool timestamps;
    bool line_start;
    uint64_t raw; /* next byte of the log file to read */
    uint64_t *ts; /* the time index: (offset, unix ms) pairs */
    size_t n_ts;
};

typedef struct {
    const char *segs[MAX_SEGMENTS];
    size_t n;
} path_t;

typedef enum MHD_Result (*route_fn)(req_t *r, const path_t *p);

/* api.c */
void api_run(loom_api_t *api);
enum MHD_Result api_respond_json(req_t *r, unsigned status, json_t *body);
/* MHD_queue_response, noting the status for the HTTP metrics. Every
 * response goes through it. */
enum MHD_Result api_queue(req_t *r, unsigned status, struct MHD_Response *resp);
enum MHD_Result api_respond_error(req_t *r, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
enum MHD_Result api_respond_loom_error(req_t *r, int err, const char *what);
int api_query_u64(req_t *r, const char *key, uint64_t max, uint64_t dflt, uint64_t *out);
bool api_parse_id(const char *s, uint64_t *out);
/* The body as a JSON object, or NULL after answering 400. */
json_t *api_parse_body(req_t *r, enum MHD_Result *rc);

/* Whether the request's token has role min or above; if not, answers 401
 * (no valid token) or 403 (role too low), sets *rc and returns false. */
bool api_require_role(req_t *r, api_role_t min, enum MHD_Result *rc);

/* api_conn.c: the header deadline. Tracks every connection from accept
 * and cuts one that has not sent a complete request's headers within
 * opts.header_timeout_ms (slowloris), whatever trickle keeps it alive. */
void api_conn_init(loom_api_t *api);
void api_conn_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                     enum MHD_ConnectionNotificationCode code);
void api_conn_request_started(loom_api_t *api, struct MHD_Connection *conn);
void api_conn_request_done(loom_api_t *api, struct MHD_Connection *conn);

/* api_auth.c: authentication and token management */
/* Sets r->role from the request's bearer token once its headers are in, or
 * r->auth_error when a token was sent but is not valid. */
void api_authenticate(req_t *r);
/* 401 with WWW-Authenticate: Bearer and a hint. */
enum MHD_Result api_respond_unauthorized(req_t *r, const char *why);
enum MHD_Result api_post_token(req_t *r, const path_t *p);
enum MHD_Result api_get_tokens(req_t *r, const path_t *p);
enum MHD_Result api_revoke_token(req_t *r, const path_t *p);

/* api_art.c: artifacts, lineage, models, metrics, gc */
enum MHD_Result api_get_artifacts(req_t *r, const path_t *p);
enum MHD_Result api_get_object(req_t *r, const path_t *p);
enum MHD_Result api_get_lineage(req_t *r, const path_t *p);
enum MHD_Result api_get_models(req_t *r, const path_t *p);
enum MHD_Result api_post_alias(req_t *r, const path_t *p);
enum MHD_Result api_get_metrics(req_t *r, const path_t *p);
enum MHD_Result api_post_gc(req_t *r, const path_t *p);

/* api_trig.c: events, webhooks, triggers */
enum MHD_Result api_post_event(req_t *r, const path_t *p);
enum MHD_Result api_get_events(req_t *r, const path_t *p);
enum MHD_Result api_post_alertmanager(req_t *r, const path_t *p);
enum MHD_Result api_post_s3(req_t *r, const path_t *p);
enum MHD_Result api_get_triggers(req_t *r, const path_t *p);
enum MHD_Result api_get_decisions(req_t *r, const path_t *p);
enum MHD_Result api_post_pause(req_t *r, const path_t *p);

/* api_secrets.c: secrets (admin routes), and the webhooks' authentication */
enum MHD_Result api_put_secret(req_t *r, const path_t *p);
enum MHD_Result api_delete_secret(req_t *r, const path_t *p);
enum MHD_Result api_get_secrets(req_t *r, const path_t *p);
enum MHD_Result api_put_hook_secret(req_t *r, const path_t *p);
enum MHD_Result api_delete_hook_secret(req_t *r, const path_t *p);
enum MHD_Result api_get_hook_secrets(req_t *r, const path_t *p);
/* A webhook delivery may go on: its signatures (if any) verify with the
 * secret of hook (else of fallback, may be NULL), or, unsigned, it carries
 * a token of the operate role. Otherwise answers 401 (rc) and says false. */
bool api_hook_authorized(req_t *r, const char *hook, const char *fallback, enum MHD_Result *rc);
/* api_agents.c: join tokens, agents' keys, approve, revoke */
enum MHD_Result api_post_join_token(req_t *r, const path_t *p);
enum MHD_Result api_get_agent_keys(req_t *r, const path_t *p);
enum MHD_Result api_post_key_approve(req_t *r, const path_t *p);
enum MHD_Result api_agent_revoke(req_t *r, const char *name);

/* api_stream.c */
enum MHD_Result api_get_log(req_t *r, const path_t *p);
enum MHD_Result api_get_attempts(req_t *r, const path_t *p);
void api_waiter_add(loom_api_t *api, req_t *r);
void api_waiter_remove(loom_api_t *api, req_t *r);
void api_waiter_resume(loom_api_t *api, req_t *r);
void api_on_run_changed(void *ud, uint64_t run_id);
void api_on_task_output(void *ud, uint64_t run_id);

/* api_events.c: server-sent events of a run's changes */
enum MHD_Result api_get_run_events(req_t *r, const path_t *p);
/* Marks run_id's streams changed and resumes the suspended ones: whether any was. */
bool api_events_changed(loom_api_t *api, uint64_t run_id);
/* Resumes every stream so that each ends (api->closing is set). */
void api_events_close(loom_api_t *api);

/* api_ui.c: the embedded web UI, served before the /api/v1 router */
bool api_ui_path(const char *url);
enum MHD_Result api_ui_serve(req_t *r, const char *url, const char *method);

#endif
