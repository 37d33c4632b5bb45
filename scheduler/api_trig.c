/* HTTP routes for triggers: events (ours, Alertmanager's), S3 bucket
 * notifications as data arrivals, the trigger list, the decision log, and
 * pausing a pipeline. See docs/api.md. */
#include "api_int.h"
#include "hook_parse.h"

#include "loom/err.h"
#include "loom/util.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define IDEM_KEY_MAX 200

static const char *header(req_t *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

/* The body as a JSON object; an empty body is {}. */
static json_t *body_object(req_t *r, enum MHD_Result *rc)
{
    return r->body.len ? api_parse_body(r, rc) : json_object();
}

/* POST /events/NAME: the body (a JSON object) is the event. */
enum MHD_Result api_post_event(req_t *r, const path_t *p)
{
    const char *name = p->segs[3];
    if (!loom_name_valid(name))
        return api_respond_error(r, MHD_HTTP_BAD_REQUEST,
                                 "invalid event name \"%s\": use 1-63 letters, digits, '_', '.' "
                                 "or '-', not starting with '.' or '-'",
                                 name);
    enum MHD_Result rc;
    char hook[80];
    snprintf(hook, sizeof hook, "events.%s", name);
    if (!api_hook_authorized(r, hook, "events", &rc)) return rc;
    json_t *body = body_object(r, &rc);
    if (!body) return rc;
    /* The delivery's identity: a header, or the payload's event_id. */
    const char *key = header(r, "Idempotency-Key");
    char num[32];
    json_t *id = json_object_get(body, "event_id");
    if (!key && json_is_string(id)) key = json_string_value(id);
    if (!key && json_is_integer(id)) {
        snprintf(num, sizeof num, "%lld", (long long)json_integer_value(id));
        key = num;
    }
    if (key && (strlen(key) == 0 || strlen(key) > IDEM_KEY_MAX)) {
        json_decref(body);
        return api_respond_error(r, MHD_HTTP_BAD_REQUEST,
                                 "an idempotency key must be 1-%d characters", IDEM_KEY_MAX);
    }
    json_t *result = NULL;
    int err = loom_sched_event(r->api->sched, name, "api", body, key, &result);
    json_decref(body);
    if (err) return api_respond_loom_error(r, err, "event");
    bool dup = json_is_true(json_object_get(result, "duplicate"));
    return api_respond_json(r, dup ? MHD_HTTP_OK : MHD_HTTP_ACCEPTED, result);
}

enum MHD_Result api_get_events(req_t *r, const path_t *p)
{
    (void)p;
    uint64_t limit;
    if (api_query_u64(r, "limit", 1000, 50, &limit) != 0 || limit == 0)
        return api_respond_error(r, MHD_HTTP_BAD_REQUEST, "\"limit\" must be an integer 1..1000");
    const char *name = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "name");
    json_t *out = NULL;
    int err = loom_store_json_events(loom_sched_store(r->api->sched), name, (int)limit, &out);
    return err ? api_respond_loom_error(r, err, "events") : api_respond_json(r, MHD_HTTP_OK, out);
}

/* POST /hooks/alertmanager: Prometheus Alertmanager's webhook (version 4). */
enum MHD_Result api_post_alertmanager(req_t *r, const path_t *p)
{
    (void)p;
    enum MHD_Result rc;
    if (!api_hook_authorized(r, "alertmanager", NULL, &rc)) return rc;
    json_t *body = api_parse_body(r, &rc);
    if (!body) return rc;
    const char *version = json_string_value(json_object_get(body, "version"));
    json_t *alerts = json_object_get(body, "alerts");
    if (!version || strcmp(version, "4") != 0 || !json_is_array(alerts)) {
        json_decref(body);
        return api_respond_error(r, MHD_HTTP_BAD_REQUEST,
                                 "not an Alertmanager webhook payload: want \"version\": \"4\" "
                                 "and an \"alerts\" list");
    }
    json_t *out = json_array();
    size_t i;
    json_t *alert;
    json_array_foreach(alerts, i, alert)
    {
        const char *name = NULL, *why = NULL;
        char key[256];
        json_t *ev =
            json_is_object(alert) ? hook_alert_event(alert, &name, key, sizeof key, &why) : NULL;
        if (!ev) {
            json_array_append_new(out, json_pack("{s:i,s:s?,s:s}", "alert", (int)i, "name", name,
                                                 "ignored", why ? why : "not an object"));
            continue;
        }
        json_t *result = NULL;
        int err = loom_sched_event(r->api->sched, name, "alertmanager", ev, key, &result);
        json_decref(ev);
        if (err) {
            json_decref(out);
            json_decref(body);
            return api_respond_loom_error(r, err, "alert");
        }
        json_object_set_new(result, "alert", json_integer((json_int_t)i));
        json_object_set_new(result, "name", json_string(name));
        json_array_append_new(out, result);
    }
    json_decref(body);
    return api_respond_json(r, MHD_HTTP_OK, json_pack("{s:o}", "events", out));
}

/* POST /hooks/s3: an S3 (or MinIO) bucket notification; each created object
 * is a data arrival at s3://BUCKET/KEY. */
enum MHD_Result api_post_s3(req_t *r, const path_t *p)
{
    (void)p;
    enum MHD_Result rc;
    if (!api_hook_authorized(r, "s3", NULL, &rc)) return rc;
    json_t *body = api_parse_body(r, &rc);
    if (!body) return rc;
    json_t *records = json_object_get(body, "Records");
    if (!json_is_array(records)) {
        json_decref(body);
        return api_respond_error(r, MHD_HTTP_BAD_REQUEST,
                                 "not an S3 event notification: want a \"Records\" list");
    }
    json_t *out = json_array();
    size_t i;
    json_t *rec;
    json_array_foreach(records, i, rec)
    {
        char *path;
        uint64_t size;
        const char *tag, *why;
        if (!hook_s3_record(rec, &path, &size, &tag, &why)) {
            json_array_append_new(out, json_pack("{s:i,s:s}", "record", (int)i, "ignored", why));
            continue;
        }
        json_t *result = NULL;
        int err = loom_sched_data_arrived(r->api->sched, path, size, tag, &result);
        free(path);
        if (err) {
            json_decref(out);
            json_decref(body);
            return api_respond_loom_error(r, err, "s3 notification");
        }
        json_object_set_new(result, "record", json_integer((json_int_t)i));
        json_array_append_new(out, result);
    }
    json_decref(body);
    return api_respond_json(r, MHD_HTTP_OK, json_pack("{s:o}", "records", out));
}

enum MHD_Result api_get_triggers(req_t *r, const path_t *p)
{
    (void)p;
    return api_respond_json(r, MHD_HTTP_OK, loom_sched_triggers_json(r->api->sched));
}

enum MHD_Result api_get_decisions(req_t *r, const path_t *p)
{
    uint64_t limit;
    if (api_query_u64(r, "limit", 1000, 20, &limit) != 0 || limit == 0)
        return api_respond_error(r, MHD_HTTP_BAD_REQUEST, "\"limit\" must be an integer 1..1000");
    json_t *out = NULL;
    int err =
        loom_store_json_decisions(loom_sched_store(r->api->sched), p->segs[3], (int)limit, &out);
    if (err == LOOM_ENOTFOUND)
        return api_respond_error(r, MHD_HTTP_NOT_FOUND, "no pipeline named \"%s\"", p->segs[3]);
    return err ? api_respond_loom_error(r, err, "decisions")
               : api_respond_json(r, MHD_HTTP_OK, out);
}

/* POST /pipelines/NAME/pause and /resume. */
enum MHD_Result api_post_pause(req_t *r, const path_t *p)
{
    bool pause = strcmp(p->segs[4], "pause") == 0;
    int err = loom_sched_pipeline_pause(r->api->sched, p->segs[3], pause);
    if (err == LOOM_ENOTFOUND)
        return api_respond_error(r, MHD_HTTP_NOT_FOUND, "no pipeline named \"%s\"", p->segs[3]);
    if (err) return api_respond_loom_error(r, err, "pause");
    return api_respond_json(r, MHD_HTTP_OK,
                            json_pack("{s:s,s:b}", "pipeline", p->segs[3], "paused", pause));
}
