/* A small libcurl wrapper for the command line: one request, its status and
 * body (parsed as JSON when it is JSON), or a streamed body for logs. */
#ifndef LOOM_CLI_HTTP_H
#define LOOM_CLI_HTTP_H

#include "loom/util.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* Responses bigger than this are refused rather than held in memory. */
#define CLI_HTTP_MAX_BODY (64u * 1024 * 1024)

typedef struct {
    long status;      /* HTTP status; 0 when no response arrived */
    loom_buf_t body;  /* the body; when streaming, only an error body */
    json_t *json;     /* body parsed as JSON, or NULL */
    bool unreachable; /* could not connect, resolve or was timed out */
    char error[256];  /* what went wrong when status is 0 */
    size_t streamed;  /* bytes cli_http_stream wrote out */
    char last;        /* the last of them */
} cli_http_resp_t;

/* What every following request carries: "Authorization: Bearer token"
 * (NULL: none) and, for https, the CA certificates file to trust besides
 * the system's (NULL: the system's alone). Certificate verification is
 * never turned off. The strings must outlive the requests. */
void cli_http_set_auth(const char *token, const char *ca_cert);

/* Sends method to url with an optional JSON body and waits at most timeout_s
 * seconds (0: no limit). Returns 0 when the server answered, whatever the
 * status, or LOOM_ENET / LOOM_ETOOBIG with r->error set. */
int cli_http_request(const char *method, const char *url, const char *json_body, long timeout_s,
                     cli_http_resp_t *r);
/* GETs url and writes a 2xx body to out as it arrives, flushing each piece
 * (a non-2xx body is kept in r->body and parsed into r->json). No time limit:
 * a followed log may be silent for hours. Returns as cli_http_request, or
 * LOOM_EIO when out could not be written. */
int cli_http_stream(const char *url, FILE *out, cli_http_resp_t *r);
/* PUTs size bytes read from fd (from its current offset) as
 * application/octet-stream, a piece at a time: a large file is never whole
 * in memory. No overall time limit; gives up when nothing moves for a
 * minute. Returns as cli_http_request, or LOOM_EIO when fd cannot be read. */
int cli_http_put_fd(const char *url, int fd, uint64_t size, cli_http_resp_t *r);
/* PUTs a buffer as application/octet-stream. */
int cli_http_put_data(const char *url, const void *data, size_t len, cli_http_resp_t *r);
void cli_http_resp_free(cli_http_resp_t *r);

#endif
