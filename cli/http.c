/* libcurl behind two calls; see http.h. curl's error codes are translated
 * here, once, into loom errors plus a sentence for the user. */
#include "http.h"

#include "loom/err.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CONNECT_TIMEOUT_S 10L

/* Uploads that move no byte for this long are given up. */
#define STALL_S 60L

/* The credentials of this one-shot process, set once by cli_credentials
 * (the CLI's only mutable module state: threading them through every call
 * would touch every command for no gain). */
static struct {
    char *auth_header;
    const char *ca_cert;
} creds;

void cli_http_set_auth(const char *token, const char *ca_cert)
{
    free(creds.auth_header);
    creds.auth_header = token ? loom_xasprintf("Authorization: Bearer %s", token) : NULL;
    creds.ca_cert = ca_cert;
}

/* Adds the Authorization header to a request's headers. */
static struct curl_slist *with_auth(struct curl_slist *hdr)
{
    return creds.auth_header ? curl_slist_append(hdr, creds.auth_header) : hdr;
}

typedef struct {
    CURL *curl;
    cli_http_resp_t *r;
    FILE *out; /* where a streamed 2xx body goes; NULL: buffer it */
    bool too_big;
    bool out_failed;
    int in_fd;        /* cli_http_put_fd: the body's source */
    uint64_t in_left; /* bytes of it still to send */
    bool in_failed;
} xfer_t;

static size_t on_body_data(char *ptr, size_t size, size_t nmemb, void *ud)
{
    xfer_t *x = ud;
    size_t n = size * nmemb;
    if (x->out) {
        long code = 0;
        curl_easy_getinfo(x->curl, CURLINFO_RESPONSE_CODE, &code);
        if (code >= 200 && code < 300) {
            /* Flush every piece: `loom logs -f` is watched live, and piped
             * into tools that act on each line. */
            if (fwrite(ptr, 1, n, x->out) != n || fflush(x->out) != 0) {
                x->out_failed = true;
                return 0;
            }
            if (n > 0) x->r->last = ptr[n - 1];
            x->r->streamed += n;
            return n;
        }
    }
    if (x->r->body.len + n > CLI_HTTP_MAX_BODY) {
        x->too_big = true;
        return 0;
    }
    loom_buf_append(&x->r->body, ptr, n);
    return n;
}

/* Connection-level failures: nothing answered at that address. */
static bool is_unreachable(CURL *c, CURLcode rc)
{
    if (rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST ||
        rc == CURLE_COULDNT_RESOLVE_PROXY)
        return true;
    if (rc == CURLE_OPERATION_TIMEDOUT) {
        curl_off_t connect_us = 0;
        curl_easy_getinfo(c, CURLINFO_CONNECT_TIME_T, &connect_us);
        return connect_us == 0;
    }
    return false;
}

static int perform(xfer_t *x)
{
    cli_http_resp_t *r = x->r;
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(x->curl, CURLOPT_ERRORBUFFER, errbuf);
    CURLcode rc = curl_easy_perform(x->curl);
    if (rc != CURLE_OK) {
        if (x->in_failed) {
            snprintf(r->error, sizeof r->error, "cannot read the file to upload");
            return LOOM_EIO;
        }
        if (x->out_failed) {
            snprintf(r->error, sizeof r->error, "cannot write the output");
            return LOOM_EIO;
        }
        if (x->too_big) {
            snprintf(r->error, sizeof r->error, "response larger than %u MiB",
                     CLI_HTTP_MAX_BODY >> 20);
            return LOOM_ETOOBIG;
        }
        snprintf(r->error, sizeof r->error, "%s", errbuf[0] ? errbuf : curl_easy_strerror(rc));
        r->unreachable = is_unreachable(x->curl, rc);
        return LOOM_ENET;
    }
    curl_easy_getinfo(x->curl, CURLINFO_RESPONSE_CODE, &r->status);
    if (r->body.len > 0) {
        json_error_t jerr;
        r->json = json_loadb(r->body.data, r->body.len, 0, &jerr);
    }
    return 0;
}

static CURL *open_handle(const char *url, xfer_t *x)
{
    CURL *c = curl_easy_init();
    if (!c) return NULL;
    x->curl = c;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    /* No SIGALRM games: we are single-threaded and use the threaded
     * resolver; a closed stdout should still raise SIGPIPE as usual. */
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, CONNECT_TIMEOUT_S);
    curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "loom/" LOOM_VERSION);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
    if (creds.ca_cert) curl_easy_setopt(c, CURLOPT_CAINFO, creds.ca_cert);
    /* The token must not follow a redirect to another host. */
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    return c;
}

static void start(cli_http_resp_t *r)
{
    memset(r, 0, sizeof *r);
}

int cli_http_request(const char *method, const char *url, const char *json_body, long timeout_s,
                     cli_http_resp_t *r)
{
    start(r);
    xfer_t x = {.r = r};
    CURL *c = open_handle(url, &x);
    if (!c) {
        snprintf(r->error, sizeof r->error, "cannot start libcurl");
        return LOOM_ENET;
    }
    struct curl_slist *hdr = with_auth(curl_slist_append(NULL, "Accept: application/json"));
    if (strcmp(method, "GET") != 0) {
        /* "Expect:" off: loomd answers at once, no 100-continue round trip. */
        hdr = curl_slist_append(hdr, "Content-Type: application/json");
        hdr = curl_slist_append(hdr, "Expect:");
        const char *body = json_body ? json_body : "";
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        if (strcmp(method, "POST") != 0) curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, timeout_s);
    int rc = perform(&x);
    curl_easy_cleanup(c);
    curl_slist_free_all(hdr);
    return rc;
}

int cli_http_stream(const char *url, FILE *out, cli_http_resp_t *r)
{
    start(r);
    xfer_t x = {.r = r, .out = out};
    CURL *c = open_handle(url, &x);
    if (!c) {
        snprintf(r->error, sizeof r->error, "cannot start libcurl");
        return LOOM_ENET;
    }
    struct curl_slist *hdr = with_auth(NULL);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
    int rc = perform(&x);
    curl_easy_cleanup(c);
    curl_slist_free_all(hdr);
    return rc;
}

/* Sends at most what was announced: a file that grew meanwhile is cut,
 * and loomd's hash check then refuses it. */
static size_t on_upload_read(char *buf, size_t size, size_t nmemb, void *ud)
{
    xfer_t *x = ud;
    size_t want = size * nmemb;
    if (want > x->in_left) want = (size_t)x->in_left;
    if (want == 0) return 0;
    ssize_t n;
    do {
        n = read(x->in_fd, buf, want);
    } while (n < 0 && errno == EINTR);
    if (n <= 0) {
        /* Shorter than announced, or unreadable: curl must not wait for
         * bytes that will never come. */
        x->in_failed = true;
        return CURL_READFUNC_ABORT;
    }
    x->in_left -= (uint64_t)n;
    return (size_t)n;
}

static int put(const char *url, xfer_t *x, const void *data, size_t len)
{
    cli_http_resp_t *r = x->r;
    CURL *c = open_handle(url, x);
    if (!c) {
        snprintf(r->error, sizeof r->error, "cannot start libcurl");
        return LOOM_ENET;
    }
    struct curl_slist *hdr = with_auth(curl_slist_append(NULL, "Accept: application/json"));
    hdr = curl_slist_append(hdr, "Content-Type: application/octet-stream");
    hdr = curl_slist_append(hdr, "Expect:");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, STALL_S);
    if (data) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, data);
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "PUT");
    } else {
        curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)x->in_left);
        curl_easy_setopt(c, CURLOPT_READFUNCTION, on_upload_read);
        curl_easy_setopt(c, CURLOPT_READDATA, x);
    }
    int rc = perform(x);
    curl_easy_cleanup(c);
    curl_slist_free_all(hdr);
    return rc;
}

int cli_http_put_fd(const char *url, int fd, uint64_t size, cli_http_resp_t *r)
{
    start(r);
    xfer_t x = {.r = r, .in_fd = fd, .in_left = size};
    return put(url, &x, NULL, 0);
}

int cli_http_put_data(const char *url, const void *data, size_t len, cli_http_resp_t *r)
{
    start(r);
    xfer_t x = {.r = r};
    /* POSTFIELDS with a NULL pointer would make curl read stdin. */
    return put(url, &x, data ? data : "", len);
}

void cli_http_resp_free(cli_http_resp_t *r)
{
    loom_buf_free(&r->body);
    json_decref(r->json);
    r->json = NULL;
}
