/* HTTP routes for agent enrolment: join tokens, agents' CURVE keys,
 * approval and revocation. Creating tokens, approving and revoking need
 * the admin role; listing keys needs read. */
#include "api_int.h"
#include "scheduler.h"

#include "loom/curve.h"
#include "loom/err.h"

#include <sodium.h>
#include <string.h>
#include <zmq.h>

#define MAX_TTL_S (30u * 24 * 3600)

static bool allowed(req_t *r, api_role_t need, enum MHD_Result *rc)
{
    if (r->role >= need) return true;
    *rc = api_respond_error(r, MHD_HTTP_FORBIDDEN, "this needs the %s role",
                            need == API_ROLE_ADMIN ? "admin" : "read");
    return false;
}

static json_t *optional_body(req_t *r, enum MHD_Result *rc)
{
    return r->body.len ? api_parse_body(r, rc) : json_object();
}

/* POST /agents/tokens {"name"?, "ttl_s"?} */
enum MHD_Result api_post_join_token(req_t *r, const path_t *p)
{
    (void)p;
    enum MHD_Result rc;
    if (!allowed(r, API_ROLE_ADMIN, &rc)) return rc;
    json_t *body = optional_body(r, &rc);
    if (!body) return rc;
    json_t *jname = json_object_get(body, "name");
    json_t *jttl = json_object_get(body, "ttl_s");
    const char *name = json_string_value(jname);
    json_int_t ttl = jttl ? json_integer_value(jttl) : 3600;
    if (jname && !json_is_null(jname) && (!name || !loom_name_valid(name)))
        rc = api_respond_error(r, MHD_HTTP_BAD_REQUEST,
                               "\"name\" must be an agent name: 1-63 of [A-Za-z0-9_.-]");
    else if (jttl && (!json_is_integer(jttl) || ttl < 1 || ttl > (json_int_t)MAX_TTL_S))
        rc = api_respond_error(r, MHD_HTTP_BAD_REQUEST,
                               "\"ttl_s\" must be a whole number of seconds from 1 to %u",
                               MAX_TTL_S);
    else {
        json_t *out = NULL;
        int err = loom_sched_join_token(r->api->sched, name, (uint64_t)ttl * 1000, &out);
        if (err == LOOM_ESTATE)
            rc = api_respond_error(r, MHD_HTTP_CONFLICT,
                                   "loomd runs without CURVE: agents need no token");
        else if (err)
            rc = api_respond_loom_error(r, err, "join token");
        else
            rc = api_respond_json(r, MHD_HTTP_CREATED, out);
    }
    json_decref(body);
    return rc;
}

/* GET /agents/keys */
enum MHD_Result api_get_agent_keys(req_t *r, const path_t *p)
{
    (void)p;
    enum MHD_Result rc;
    if (!allowed(r, API_ROLE_READ, &rc)) return rc;
    return api_respond_json(r, MHD_HTTP_OK,
                            json_pack("{s:o,s:s}", "keys", loom_sched_keys_json(r->api->sched),
                                      "server_public_key", loom_sched_server_key(r->api->sched)));
}

/* A key in a URL path: Z85 can hold '/', '?', '#' and '%', so clients send
 * the 32 bytes as 64 hex digits; plain Z85 is taken when it survives. */
static bool key_from_path(const char *seg, char out[41])
{
    uint8_t raw[32];
    size_t len = 0;
    if (strlen(seg) == 64 && sodium_hex2bin(raw, sizeof raw, seg, 64, NULL, &len, NULL) == 0 &&
        len == 32) {
        zmq_z85_encode(out, raw, 32);
        return true;
    }
    if (!loom_curve_key_valid(seg)) return false;
    memcpy(out, seg, 41);
    return true;
}

/* POST /agents/keys/KEY/approve {"name"?} */
enum MHD_Result api_post_key_approve(req_t *r, const path_t *p)
{
    enum MHD_Result rc;
    if (!allowed(r, API_ROLE_ADMIN, &rc)) return rc;
    char key[41];
    if (!key_from_path(p->segs[4], key))
        return api_respond_error(r, MHD_HTTP_BAD_REQUEST,
                                 "\"%s\" is not a CURVE public key (40 Z85 or 64 hex characters)",
                                 p->segs[4]);
    json_t *body = optional_body(r, &rc);
    if (!body) return rc;
    json_t *jname = json_object_get(body, "name");
    const char *name = json_string_value(jname);
    char why[256] = "";
    if (jname && !json_is_null(jname) && !name) {
        rc = api_respond_error(r, MHD_HTTP_BAD_REQUEST, "\"name\" must be a string");
    } else {
        int err = loom_sched_key_approve(r->api->sched, key, name, why, sizeof why);
        if (err == LOOM_EINVAL)
            rc = api_respond_error(r, MHD_HTTP_BAD_REQUEST, "%s", why);
        else if (err == LOOM_ESTATE || err == LOOM_EEXISTS)
            rc = api_respond_error(r, MHD_HTTP_CONFLICT, "%s", why);
        else if (err)
            rc = api_respond_loom_error(r, err, "approve");
        else
            rc = api_respond_json(r, MHD_HTTP_OK,
                                  json_pack("{s:s,s:s}", "public_key", key, "state", "approved"));
    }
    json_decref(body);
    return rc;
}

/* POST /agents/NAME/revoke (from post_agent_op) */
enum MHD_Result api_agent_revoke(req_t *r, const char *name)
{
    enum MHD_Result rc;
    if (!allowed(r, API_ROLE_ADMIN, &rc)) return rc;
    uint32_t n = 0;
    int err = loom_sched_agent_revoke(r->api->sched, name, &n);
    if (err == LOOM_ENOTFOUND)
        return api_respond_error(r, MHD_HTTP_NOT_FOUND, "no agent named \"%s\"", name);
    if (err) return api_respond_loom_error(r, err, "revoke");
    return api_respond_json(r, MHD_HTTP_OK,
                            json_pack("{s:s,s:i}", "agent", name, "keys_revoked", (int)n));
}
