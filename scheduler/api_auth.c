/* Who is asking: a request's bearer token read into its role, and the 401
 * and 403 answers. Then the token routes (admin only, see the route table in
 * api.c): create an API token, list them, revoke one. A new token's secret is
 * in the create answer and nowhere else, ever. */
#include "api_int.h"
#include "auth.h"
#include "store_auth.h"

#include "loom/err.h"
#include "loom/log.h"
#include "loom/util.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum MHD_Result api_respond_unauthorized(req_t *r, const char *why)
{
    json_t *body = json_pack("{s:s,s:s}", "error", why, "hint",
                             "send \"Authorization: Bearer TOKEN\"; an admin creates tokens "
                             "with `loom tokens create --role ROLE`");
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(resp, "Content-Type", "application/json");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"loom\"");
    enum MHD_Result rc = api_queue(r, MHD_HTTP_UNAUTHORIZED, resp);
    MHD_destroy_response(resp);
    return rc;
}

bool api_require_role(req_t *r, api_role_t min, enum MHD_Result *rc)
{
    if (r->role >= min) return true;
    if (r->role == API_ROLE_NONE)
        *rc = api_respond_unauthorized(r, r->auth_error ? r->auth_error
                                                        : "this request needs a bearer token");
    else
        *rc = api_respond_error(r, MHD_HTTP_FORBIDDEN,
                                "this request needs a token with role %s or above; this "
                                "token's role is %s",
                                loom_auth_role_name(min), loom_auth_role_name(r->role));
    return false;
}

/* Reads the request's bearer token, once its headers are in: sets r->role,
 * or r->auth_error when a token was sent but is not valid. */
void api_authenticate(req_t *r)
{
    const char *h =
        MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    r->role = API_ROLE_NONE;
    if (!h) return;
    if (strncasecmp(h, "Bearer ", 7) != 0) {
        r->auth_error = "the Authorization header must be \"Bearer TOKEN\"";
        return;
    }
    h += 7;
    while (*h == ' ') h++;
    uint64_t id = 0;
    api_role_t role = API_ROLE_NONE;
    loom_auth_result_t res =
        loom_auth_check(loom_sched_store(r->api->sched), h, loom_unix_ms(), &role, &id);
    if (res != LOOM_AUTH_OK) {
        r->auth_error = loom_auth_result_text(res);
        /* Never the token itself: it may be a real secret with a typo. */
        LOG_INFO("api: refused a bearer token: %s", r->auth_error);
        return;
    }
    r->role = role;
    r->token_id = id;
}

#define NAME_MAX_LEN 100
/* Ten years: a longer ttl_s is almost certainly a unit mistake. */
#define TTL_MAX_S (10ull * 366 * 24 * 3600)

static bool name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n > NAME_MAX_LEN) return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) return false;
    return true;
}

enum MHD_Result api_post_token(req_t *r, const path_t *p)
{
    (void)p;
    enum MHD_Result rc;
    json_t *body = api_parse_body(r, &rc);
    if (!body) return rc;
    json_t *jrole = json_object_get(body, "role");
    json_t *jname = json_object_get(body, "name");
    json_t *jttl = json_object_get(body, "ttl_s");
    api_role_t role = API_ROLE_NONE;
    const char *bad = NULL;
    if (json_object_get(body, "agent"))
        bad = "agent join tokens are made with `loom agents token` (POST /api/v1/agents/...), "
              "not here";
    else if (!json_is_string(jrole) || loom_auth_role_parse(json_string_value(jrole), &role) != 0)
        bad = "\"role\" must be \"read\", \"operate\" or \"admin\"";
    else if (jname && (!json_is_string(jname) || !name_ok(json_string_value(jname))))
        bad = "\"name\" must be a string of at most 100 printable characters";
    else if (jttl && (!json_is_integer(jttl) || json_integer_value(jttl) < 1 ||
                      (uint64_t)json_integer_value(jttl) > TTL_MAX_S))
        bad = "\"ttl_s\" must be a number of seconds, 1 to ten years";
    if (bad) {
        json_decref(body);
        return api_respond_error(r, MHD_HTTP_BAD_REQUEST, "%s", bad);
    }
    uint64_t expires = jttl ? loom_unix_ms() + (uint64_t)json_integer_value(jttl) * 1000 : 0;
    char *token = NULL;
    uint64_t id = 0;
    loom_store_t *store = loom_sched_store(r->api->sched);
    int err = loom_auth_token_create(store, role, jname ? json_string_value(jname) : "", expires,
                                     &token, &id);
    json_decref(body);
    if (err == 0) err = loom_sched_commit(r->api->sched);
    if (err) {
        free(token);
        return api_respond_loom_error(r, err, "cannot create token");
    }
    LOG_INFO("api: token created id=%llu role=%s by token=%llu", (unsigned long long)id,
             loom_auth_role_name(role), (unsigned long long)r->token_id);
    json_t *out = json_pack("{s:s,s:I,s:s,s:o}", "token", token, "id", (json_int_t)id, "role",
                            loom_auth_role_name(role), "expires_unix_ms",
                            expires ? json_integer((json_int_t)expires) : json_null());
    sodium_memzero(token, strlen(token));
    free(token);
    return api_respond_json(r, MHD_HTTP_CREATED, out);
}

enum MHD_Result api_get_tokens(req_t *r, const path_t *p)
{
    (void)p;
    json_t *out = NULL;
    int err = loom_store_tokens_json(loom_sched_store(r->api->sched), "api", loom_unix_ms(), &out);
    return err ? api_respond_loom_error(r, err, "tokens") : api_respond_json(r, MHD_HTTP_OK, out);
}

/* DELETE /tokens/ID and POST /tokens/ID/revoke. */
enum MHD_Result api_revoke_token(req_t *r, const path_t *p)
{
    uint64_t id;
    if (!api_parse_id(p->segs[3], &id))
        return api_respond_error(r, MHD_HTTP_BAD_REQUEST, "token id \"%s\" is not a number",
                                 p->segs[3]);
    int err = loom_store_token_revoke(loom_sched_store(r->api->sched), id, "api", loom_unix_ms());
    if (err == 0) err = loom_sched_commit(r->api->sched);
    if (err == LOOM_ENOTFOUND)
        return api_respond_error(r, MHD_HTTP_NOT_FOUND, "no API token %llu",
                                 (unsigned long long)id);
    if (err) return api_respond_loom_error(r, err, "revoke");
    LOG_INFO("api: token revoked id=%llu by token=%llu", (unsigned long long)id,
             (unsigned long long)r->token_id);
    return api_respond_json(r, MHD_HTTP_OK,
                            json_pack("{s:I,s:s}", "id", (json_int_t)id, "state", "revoked"));
}
