/* HTTP routes for secrets (admin only): task secrets and webhook secrets,
 * written and listed but never read back; and the check every webhook
 * route makes: a valid signature with the hook's secret, or a token. See
 * docs/api.md. */
#include "api_int.h"
#include "secrets.h"

#include "loom/codec.h"
#include "loom/err.h"
#include "loom/util.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The request body held the plaintext: wipe it once parsed. */
static void wipe_body(req_t *r)
{
    if (r->body.data) sodium_memzero(r->body.data, r->body.len);
}

/* {"value": "..."}: 1 to LOOM_SECRET_VALUE_MAX bytes of text. */
static enum MHD_Result put_secret(req_t *r, const char *kind, const char *name)
{
    enum MHD_Result rc;
    json_t *body = api_parse_body(r, &rc);
    wipe_body(r);
    if (!body) return rc;
    json_t *v = json_object_get(body, "value");
    if (!json_is_string(v) || json_string_length(v) == 0 ||
        json_string_length(v) > LOOM_SECRET_VALUE_MAX) {
        json_decref(body);
        return api_respond_error(r, MHD_HTTP_BAD_REQUEST,
                                 "the body must be {\"value\": \"...\"}, 1 to %d bytes of text",
                                 LOOM_SECRET_VALUE_MAX);
    }
    int err = loom_sched_secret_set(r->api->sched, kind, name,
                                    (const uint8_t *)json_string_value(v), json_string_length(v));
    /* jansson frees without wiping: do it here. */
    sodium_memzero((char *)json_string_value(v), json_string_length(v));
    json_decref(body);
    if (err) return api_respond_loom_error(r, err, "secret");
    return api_respond_json(r, MHD_HTTP_OK, json_pack("{s:s,s:b}", "name", name, "stored", 1));
}

static enum MHD_Result delete_secret(req_t *r, const char *kind, const char *name)
{
    int err = loom_sched_secret_delete(r->api->sched, kind, name);
    if (err == LOOM_ENOTFOUND)
        return api_respond_error(r, MHD_HTTP_NOT_FOUND, "no %s secret \"%s\"",
                                 strcmp(kind, "task") == 0 ? "task" : "hook", name);
    if (err) return api_respond_loom_error(r, err, "secret");
    return api_respond_json(r, MHD_HTTP_OK, json_pack("{s:s,s:b}", "name", name, "deleted", 1));
}

static enum MHD_Result bad_name(req_t *r, const char *name)
{
    return api_respond_error(r, MHD_HTTP_BAD_REQUEST,
                             "invalid secret name \"%.130s\": use letters, digits and '_', not "
                             "starting with a digit, at most %d characters",
                             name, LOOM_SECRET_NAME_MAX);
}

static enum MHD_Result bad_hook(req_t *r, const char *hook)
{
    return api_respond_error(r, MHD_HTTP_BAD_REQUEST,
                             "unknown hook \"%.130s\": use alertmanager, s3, events (every event "
                             "without its own secret) or events.NAME",
                             hook);
}

/* PUT /secrets/NAME (admin) */
enum MHD_Result api_put_secret(req_t *r, const path_t *p)
{
    const char *name = p->segs[3];
    if (!loom_secret_name_valid(name)) {
        wipe_body(r);
        return bad_name(r, name);
    }
    return put_secret(r, "task", name);
}

/* DELETE /secrets/NAME (admin) */
enum MHD_Result api_delete_secret(req_t *r, const path_t *p)
{
    const char *name = p->segs[3];
    if (!loom_secret_name_valid(name)) return bad_name(r, name);
    return delete_secret(r, "task", name);
}

/* GET /secrets (admin): names and times, never values. */
enum MHD_Result api_get_secrets(req_t *r, const path_t *p)
{
    (void)p;
    json_t *out = NULL;
    int err = loom_sched_secrets_json(r->api->sched, "task", &out);
    if (err) return api_respond_loom_error(r, err, "secrets");
    return api_respond_json(r, MHD_HTTP_OK, json_pack("{s:o}", "secrets", out));
}

/* PUT /hooks/secrets/HOOK (admin) */
enum MHD_Result api_put_hook_secret(req_t *r, const path_t *p)
{
    const char *hook = p->segs[4];
    if (!loom_hook_name_valid(hook)) {
        wipe_body(r);
        return bad_hook(r, hook);
    }
    return put_secret(r, "webhook", hook);
}

/* DELETE /hooks/secrets/HOOK (admin) */
enum MHD_Result api_delete_hook_secret(req_t *r, const path_t *p)
{
    const char *hook = p->segs[4];
    if (!loom_hook_name_valid(hook)) return bad_hook(r, hook);
    return delete_secret(r, "webhook", hook);
}

/* GET /hooks/secrets (admin): which hooks have a secret. */
enum MHD_Result api_get_hook_secrets(req_t *r, const path_t *p)
{
    (void)p;
    json_t *out = NULL;
    int err = loom_sched_secrets_json(r->api->sched, "webhook", &out);
    if (err) return api_respond_loom_error(r, err, "hook secrets");
    return api_respond_json(r, MHD_HTTP_OK, json_pack("{s:o}", "hooks", out));
}

static const char *header(req_t *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

bool api_hook_authorized(req_t *r, const char *hook, const char *fallback, enum MHD_Result *rc)
{
    loom_sched_t *s = r->api->sched;
    uint8_t *key = NULL;
    size_t key_len = 0;
    const char *used = hook;
    int err = loom_sched_secret_get(s, "webhook", hook, &key, &key_len);
    if (err == LOOM_ENOTFOUND && fallback) {
        used = fallback;
        err = loom_sched_secret_get(s, "webhook", fallback, &key, &key_len);
    }
    if (err && err != LOOM_ENOTFOUND) {
        *rc = api_respond_error(
            r, MHD_HTTP_INTERNAL_SERVER_ERROR, "the secret of hook %s cannot be read: %s", used,
            err == LOOM_EPARSE ? "it does not decrypt with loomd's key" : loom_strerror(err));
        return false;
    }
    char why[256] = "";
    loom_sig_result sig = loom_webhook_verify(
        key, key_len, header(r, "X-Loom-Signature"), header(r, "X-Loom-Timestamp"),
        header(r, "X-Hub-Signature-256"), r->body.data, r->body.len,
        (int64_t)(loom_sched_wall_ms(s) / 1000), why, sizeof why);
    loom_secret_free(key, key_len);
    if (sig == LOOM_SIG_VALID) return true;
    if (sig == LOOM_SIG_INVALID) {
        *rc = api_respond_error(r, MHD_HTTP_UNAUTHORIZED, "hook %s: %s", used, why);
        return false;
    }
    if (r->role >= API_ROLE_OPERATE) return true;
    if (r->role != API_ROLE_NONE) {
        api_require_role(r, API_ROLE_OPERATE, rc); /* a valid token below operate: 403 */
        return false;
    }
    if (key)
        *rc = api_respond_error(r, MHD_HTTP_UNAUTHORIZED,
                                "hook %s has a secret: sign the delivery with X-Loom-Signature: "
                                "sha256=<hex HMAC-SHA256 of the body> (or GitHub's "
                                "X-Hub-Signature-256), or send a token with the operate role",
                                used);
    else
        *rc = api_respond_error(r, MHD_HTTP_UNAUTHORIZED,
                                "this hook needs a bearer token with the operate role, or a hook "
                                "secret (loom hooks secret set %s) and an X-Loom-Signature header",
                                hook);
    return false;
}
