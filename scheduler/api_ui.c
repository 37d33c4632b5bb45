/* Serves the web UI embedded in loomd (see ui/ and cmake/embed_ui.cmake).
 * The pages hold no data, so they load without a token; every data call
 * they make goes to /api/v1 with the user's bearer token. */
#include "api_int.h"
#include "ui_assets.h"

#include <string.h>

/* The browser runs only what loomd serves: no inline script, no other
 * origin. This is what keeps an injected string from reading the token in
 * sessionStorage (the UI also never writes server text as HTML). */
static const char csp[] = "default-src 'none'; script-src 'self'; style-src 'self'; "
                          "img-src 'self' data: blob:; connect-src 'self'; "
                          "base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

static const loom_ui_asset_t *find_asset(const char *path)
{
    for (size_t i = 0; i < loom_ui_n_assets; i++)
        if (strcmp(loom_ui_assets[i].path, path) == 0) return &loom_ui_assets[i];
    return NULL;
}

static enum MHD_Result respond_asset(req_t *r, const loom_ui_asset_t *a, bool immutable, bool head)
{
    const char *inm =
        MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_IF_NONE_MATCH);
    bool fresh = inm && strstr(inm, a->etag) != NULL;
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        fresh || head ? 0 : a->len, (void *)a->data, MHD_RESPMEM_PERSISTENT);
    MHD_add_response_header(resp, "Content-Type", a->content_type);
    MHD_add_response_header(resp, "ETag", a->etag);
    /* Versioned URLs never change; the others (index.html above all, which
     * names the current version) are revalidated by ETag on every load. */
    MHD_add_response_header(resp, "Cache-Control",
                            immutable ? "public, max-age=31536000, immutable" : "no-cache");
    MHD_add_response_header(resp, "Content-Security-Policy", csp);
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(resp, "X-Frame-Options", "DENY");
    enum MHD_Result rc =
        MHD_queue_response(r->conn, fresh ? MHD_HTTP_NOT_MODIFIED : MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return rc;
}

bool api_ui_path(const char *url)
{
    return strcmp(url, "/") == 0 || strcmp(url, "/ui") == 0 || strncmp(url, "/ui/", 4) == 0;
}

enum MHD_Result api_ui_serve(req_t *r, const char *url, const char *method)
{
    bool head = strcmp(method, "HEAD") == 0;
    if (!head && strcmp(method, "GET") != 0)
        return api_respond_error(r, MHD_HTTP_METHOD_NOT_ALLOWED,
                                 "%s is not allowed on the web UI (%.200s)", method, url);
    if (strcmp(url, "/") == 0 || strcmp(url, "/ui") == 0) {
        struct MHD_Response *resp =
            MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_LOCATION, "/ui/");
        enum MHD_Result rc = MHD_queue_response(r->conn, MHD_HTTP_FOUND, resp);
        MHD_destroy_response(resp);
        return rc;
    }
    const char *rest = url + 4; /* after "/ui/" */
    /* /ui/_/VERSION/PATH: immutable when VERSION is this build's; an older
     * page asking for its own version still gets today's file, revalidated. */
    if (strncmp(rest, "_/", 2) == 0) {
        const char *slash = strchr(rest + 2, '/');
        if (slash) {
            size_t vlen = (size_t)(slash - (rest + 2));
            bool current =
                vlen == strlen(loom_ui_version) && strncmp(rest + 2, loom_ui_version, vlen) == 0;
            const loom_ui_asset_t *a = find_asset(slash + 1);
            if (a) return respond_asset(r, a, current, head);
        }
        return api_respond_error(r, MHD_HTTP_NOT_FOUND, "no such UI file: %.200s", url);
    }
    const loom_ui_asset_t *a = find_asset(rest);
    /* Any other path is one of the app's own routes (/ui/runs/42): the app
     * reads location and draws that page. */
    if (!a) a = find_asset("index.html");
    if (!a) return api_respond_error(r, MHD_HTTP_NOT_FOUND, "this loomd was built without a UI");
    return respond_asset(r, a, false, head);
}
