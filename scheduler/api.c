/* HTTP API routes and their handlers; see api.h and docs/api.md. */
#include "api_int.h"
#include "auth.h"

#include "loom/err.h"
#include "loom/log.h"
#include "loom/util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* --- responses ---------------------------------------------------------------- */

enum MHD_Result api_queue(req_t *r, unsigned status, struct MHD_Response *resp)
{
    r->status = status;
    return MHD_queue_response(r->conn, status, resp);
}

enum MHD_Result api_respond_json(req_t *r, unsigned status, json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (!text) text = loom_xstrdup("{}");
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(resp, "Content-Type", "application/json");
    enum MHD_Result rc = api_queue(r, status, resp);
    MHD_destroy_response(resp);
    return rc;
}

enum MHD_Result api_respond_error(req_t *r, unsigned status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return api_respond_json(r, status, json_pack("{s:s}", "error", msg));
}

enum MHD_Result api_respond_loom_error(req_t *r, int err, const char *what)
{
    unsigned status = err == LOOM_ENOTFOUND ? MHD_HTTP_NOT_FOUND
                      : err == LOOM_ESTATE  ? MHD_HTTP_CONFLICT
                      : err == LOOM_EPARSE  ? MHD_HTTP_UNPROCESSABLE_CONTENT
                                            : MHD_HTTP_INTERNAL_SERVER_ERROR;
    return api_respond_error(r, status, "%s: %s", what, loom_strerror(err));
}

/* --- arguments ---------------------------------------------------------------- */

int api_query_u64(req_t *r, const char *key, uint64_t max, uint64_t dflt, uint64_t *out)
{
    const char *v = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, key);
    int64_t n;
    if (!v) {
        *out = dflt;
        return 0;
    }
    if (loom_parse_i64(v, 0, (int64_t)max, &n) != 0) return LOOM_EINVAL;
    *out = (uint64_t)n;
    return 0;
}

bool api_parse_id(const char *s, uint64_t *out)
{
    int64_t n;
    if (loom_parse_i64(s, 1, INT64_MAX, &n) != 0) return false;
    *out = (uint64_t)n;
    return true;
}

json_t *api_parse_body(req_t *r, enum MHD_Result *rc)
{
    json_error_t err;
    json_t *j =
        json_loadb(r->body.data ? r->body.data : "", r->body.len, JSON_REJECT_DUPLICATES, &err);
    if (!j) {
        *rc = api_respond_error(r, MHD_HTTP_BAD_REQUEST, "request body: line %d, column %d: %s",
                                err.line, err.column, err.text);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        *rc = api_respond_error(r, MHD_HTTP_BAD_REQUEST, "request body must be a JSON object");
        return NULL;
    }
    return j;
}

/* --- handlers ------------------------------------------------------------------ */

static enum MHD_Result get_health(req_t *r, const path_t *p)
{
    (void)p;
    return api_respond_json(r, MHD_HTTP_OK,
                            json_pack("{s:s,s:s}", "status", "ok", "version", LOOM_VERSION));
}

static json_t *diags_json(const loom_diags_t *d)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < d->n; i++)
        json_array_append_new(arr, json_pack("{s:s,s:i,s:i,s:s}", "file",
                                             d->items[i].file ? d->items[i].file : "", "line",
                                             d->items[i].line, "col", d->items[i].col, "message",
                                             d->items[i].message));
    return arr;
}

/* Reads the optional "bundle" and "git" members of a submit request. */
static const char *parse_origin(json_t *body, loom_submit_origin_t *o)
{
    json_t *jb = json_object_get(body, "bundle");
    json_t *jg = json_object_get(body, "git");
    o->bundle = NULL;
    o->git_commit = NULL;
    o->git_dirty = -1;
    if (jb && !json_is_null(jb)) {
        if (!json_is_string(jb) || !loom_objects_hash_valid(json_string_value(jb)))
            return "\"bundle\" must be a manifest hash (64 lowercase hex digits)";
        o->bundle = json_string_value(jb);
    }
    if (jg && !json_is_null(jg)) {
        json_t *jc = json_object_get(jg, "commit");
        json_t *jd = json_object_get(jg, "dirty");
        if (!json_is_object(jg) || !json_is_string(jc) || json_string_length(jc) > 64 ||
            (jd && !json_is_boolean(jd)))
            return "\"git\" must be {\"commit\": string, \"dirty\": bool}";
        o->git_commit = json_string_value(jc);
        o->git_dirty = jd ? json_is_true(jd) : -1;
    }
    return NULL;
}

static enum MHD_Result post_pipeline(req_t *r, const path_t *p)
{
    (void)p;
    enum MHD_Result rc;
    json_t *body = api_parse_body(r, &rc);
    if (!body) return rc;
    json_t *jfile = json_object_get(body, "file");
    json_t *jsource = json_object_get(body, "source");
    loom_submit_origin_t origin;
    const char *bad = parse_origin(body, &origin);
    if (!json_is_string(jsource)) bad = "\"source\" must be a string (the DAG file)";
    if (jfile && !json_is_string(jfile)) bad = "\"file\" must be a string";
    if (bad) {
        json_decref(body);
        return api_respond_error(r, MHD_HTTP_BAD_REQUEST, "%s", bad);
    }
    const char *file = jfile ? json_string_value(jfile) : "dag.yaml";
    json_t *result = NULL;
    loom_diags_t diags = {0};
    int err = loom_sched_submit(r->api->sched, file, json_string_value(jsource),
                                json_string_length(jsource), &origin, &result, &diags);
    json_decref(body);
    if (err == LOOM_EPARSE || err == LOOM_ENOTFOUND) {
        rc = api_respond_json(
            r, MHD_HTTP_UNPROCESSABLE_CONTENT,
            json_pack("{s:s,s:o}", "error",
                      err == LOOM_EPARSE ? "invalid DAG" : "incomplete code bundle", "diagnostics",
                      diags_json(&diags)));
        loom_diags_free(&diags);
        return rc;
    }
    loom_diags_free(&diags);
    if (err) return api_respond_loom_error(r, err, "cannot store pipeline");
    bool created = json_is_true(json_object_get(result, "created"));
    return api_respond_json(r, created ? MHD_HTTP_CREATED : MHD_HTTP_OK, result);
}

/* POST /objects/missing {"hashes": [...]}: which of these loomd lacks. */
static enum MHD_Result post_objects_missing(req_t *r, const path_t *p)
{
    (void)p;
    enum MHD_Result rc;
    json_t *body = api_parse_body(r, &rc);
    if (!body) return rc;
    json_t *hashes = json_object_get(body, "hashes");
    if (!json_is_array(hashes) || json_array_size(hashes) > 100000) {
        json_decref(body);
        return api_respond_error(r, MHD_HTTP_BAD_REQUEST,
                                 "\"hashes\" must be a list of at most 100000 hashes");
    }
    json_t *missing = json_array();
    size_t i;
    json_t *h;
    json_array_foreach(hashes, i, h)
    {
        const char *hex = json_string_value(h);
        if (!loom_objects_hash_valid(hex)) {
            json_decref(missing);
            json_decref(body);
            return api_respond_error(r, MHD_HTTP_BAD_REQUEST,
                                     "hashes[%zu] is not 64 lowercase hex digits", i);
        }
        if (!loom_objects_has(loom_sched_objects(r->api->sched), hex))
            json_array_append(missing, h);
    }
    json_decref(body);
    return api_respond_json(r, MHD_HTTP_OK, json_pack("{s:o}", "missing", missing));
}

/* PUT /objects/HASH: the body was streamed into r->upload as it arrived. */
/* Verifying, fsyncing and renaming an object into place takes a
 * millisecond or more: it runs on the thread pool while the request waits,
 * suspended, so loomd's loop goes on scheduling meanwhile. */
struct commit {
    uv_work_t work;
    loom_api_t *api;
    req_t *r;
    loom_obj_writer_t *writer;
    char hash[65];
    int err;
    char why[256];
};

static void on_commit_work(uv_work_t *w)
{
    struct commit *c = w->data;
    c->err = loom_objects_writer_commit(&c->writer, c->hash, c->why, sizeof c->why);
}

static void finish_close(loom_api_t *api);

static void on_commit_done(uv_work_t *w, int status)
{
    struct commit *c = w->data;
    loom_api_t *api = c->api;
    (void)status;
    api->commits--;
    c->r->commit_done = true;
    MHD_resume_connection(c->r->conn);
    if (api->closing) {
        if (api->commits == 0) finish_close(api);
    } else {
        api_run(api);
    }
}

static enum MHD_Result put_object(req_t *r, const path_t *p)
{
    if (!r->upload && !r->commit)
        return api_respond_error(r, MHD_HTTP_BAD_REQUEST, "object \"%s\": %s", p->segs[3],
                                 r->upload_error ? r->upload_error : "not stored");
    if (!r->commit) {
        struct commit *c = loom_xcalloc(1, sizeof *c);
        c->work.data = c;
        c->api = r->api;
        c->r = r;
        c->writer = r->upload;
        r->upload = NULL;
        snprintf(c->hash, sizeof c->hash, "%s", p->segs[3]);
        r->commit = c;
        MHD_suspend_connection(r->conn);
        r->api->commits++;
        if (uv_queue_work(r->api->loop, &c->work, on_commit_work, on_commit_done) != 0) abort();
        return MHD_YES; /* answered when the commit is done */
    }
    if (!r->commit_done) return MHD_YES;
    struct commit *c = r->commit;
    if (c->err)
        return api_respond_error(r, MHD_HTTP_UNPROCESSABLE_CONTENT, "object %s: %s", p->segs[3],
                                 c->why);
    return api_respond_json(
        r, MHD_HTTP_CREATED,
        json_pack("{s:s,s:I}", "hash", p->segs[3], "size", (json_int_t)r->uploaded));
}

static enum MHD_Result get_pipelines(req_t *r, const path_t *p)
{
    (void)p;
    json_t *out = NULL;
    int err = loom_store_json_pipelines(loom_sched_store(r->api->sched), &out);
    return err ? api_respond_loom_error(r, err, "pipelines")
               : api_respond_json(r, MHD_HTTP_OK, out);
}

/* The parameters a version declares, for clients that start runs. */
static json_t *params_json(const json_t *source)
{
    static const char *const types[] = {"string", "int", "float", "bool", "list"};
    loom_dag_t *dag = NULL;
    json_t *list = json_array();
    if (!json_is_string(source) ||
        loom_dag_parse(json_string_value(source), json_string_length(source), "pipeline", &dag,
                       NULL) != 0)
        return list;
    for (size_t i = 0; i < dag->n_params; i++) {
        const loom_dag_param_t *p = &dag->params[i];
        json_t *dflt = p->default_json ? json_loads(p->default_json, JSON_DECODE_ANY, NULL) : NULL;
        json_array_append_new(
            list,
            json_pack("{s:s,s:s,s:o,s:b,s:o}", "name", p->name, "type", types[p->type], "default",
                      dflt ? dflt : json_null(), "required", p->default_json == NULL, "description",
                      p->description ? json_string(p->description) : json_null()));
    }
    loom_dag_destroy(&dag);
    return list;
}

static enum MHD_Result get_pipeline(req_t *r, const path_t *p)
{
    json_t *out = NULL;
    uint64_t version;
    if (api_query_u64(r, "version", UINT32_MAX, 0, &version) != 0)
        return api_respond_error(r, MHD_HTTP_BAD_REQUEST, "\"version\" must be a positive integer");
    int err = loom_store_json_pipeline(loom_sched_store(r->api->sched), p->segs[3],
                                       (uint32_t)version, &out);
    if (err == LOOM_ENOTFOUND && version)
        return api_respond_error(r, MHD_HTTP_NOT_FOUND, "pipeline \"%s\" has no version %llu",
                                 p->segs[3], (unsigned long long)version);
    if (err == LOOM_ENOTFOUND)
        return api_respond_error(r, MHD_HTTP_NOT_FOUND, "no pipeline named \"%s\"", p->segs[3]);
    if (err) return api_respond_loom_error(r, err, "pipeline");
    json_object_set_new(out, "params", params_json(json_object_get(out, "source")));
    return api_respond_json(r, MHD_HTTP_OK, out);
}

/* A run as JSON, with its tasks unless the request says ?tasks=0 (a run
 * of 100,000 tasks is tens of megabytes). */
typedef struct {
    loom_sched_t *sched;
    uint64_t run_id;
} waiting_ctx_t;

static const char *run_task_waiting(void *ud, uint32_t idx)
{
    waiting_ctx_t *c = ud;
    return loom_sched_task_waiting(c->sched, c->run_id, idx);
}

static enum MHD_Result respond_text(req_t *r, unsigned status, char *text, size_t len)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(resp, "Content-Type", "application/json");
    enum MHD_Result rc = api_queue(r, status, resp);
    MHD_destroy_response(resp);
    return rc;
}

static enum MHD_Result run_response(req_t *r, unsigned status, uint64_t run_id, bool wrap)
{
    uint64_t with_tasks = 1;
    if (api_query_u64(r, "tasks", 1, 1, &with_tasks) != 0)
        return api_respond_error(r, MHD_HTTP_BAD_REQUEST, "\"tasks\" must be 0 or 1");
    loom_store_t *store = loom_sched_store(r->api->sched);
    json_t *run = NULL;
    char *text = NULL;
    size_t len = 0;
    waiting_ctx_t ctx = {r->api->sched, run_id};
    int err = with_tasks ? loom_store_run_text(store, run_id, run_task_waiting, &ctx, &text, &len)
                         : loom_store_json_run_summary(store, run_id, &run);
    if (err == LOOM_ENOTFOUND)
        return api_respond_error(r, MHD_HTTP_NOT_FOUND, "no run %llu", (unsigned long long)run_id);
    if (err) return api_respond_loom_error(r, err, "run");
    /* "seq" (runs in flight only): what ?since= waits to see change. */
    uint64_t seq = loom_sched_run_seq(r->api->sched, run_id);
    if (run && seq) json_object_set_new(run, "seq", json_integer((json_int_t)seq));
    if (run) return api_respond_json(r, status, wrap ? json_pack("{s:o}", "run", run) : run);
    if (seq && len > 1 && text[0] == '{') {
        char head[32];
        int n = snprintf(head, sizeof head, "{\"seq\":%llu%s", (unsigned long long)seq,
                         text[1] == '}' ? "" : ",");
        char *with = loom_xmalloc(len + (size_t)n);
        memcpy(with, head, (size_t)n);
        memcpy(with + n, text + 1, len - 1);
        with[len + (size_t)n - 1] = '\0';
        free(text);
        text = with;
        len += (size_t)n - 1;
    }
    if (wrap) {
        /* {"run": TEXT} around text that can be tens of megabytes. */
        char *wrapped = loom_xmalloc(len + 9);
        memcpy(wrapped, "{\"run\":", 7);
        memcpy(wrapped + 7, text, len);
        wrapped[len + 7] = '}';
        wrapped[len + 8] = '\0';
        free(text);
        text = wrapped;
        len += 8;
    }
    return respond_text(r, status, text, len);
}

static enum MHD_Result post_run(req_t *r, const path_t *p)
{
    enum MHD_Result rc;
    json_t *body = r->body.len ? api_parse_body(r, &rc) : json_object();
    if (!body) return rc;
    json_t *jv = json_object_get(body, "version");
    json_t *params = json_object_get(body, "params");
    json_t *no_cache = json_object_get(body, "no_cache");
    const char *bad = NULL;
    if (jv &&
        (!json_is_integer(jv) || json_integer_value(jv) < 1 || json_integer_value(jv) > UINT32_MAX))
        bad = "\"version\" must be a positive integer";
    if (params && !json_is_object(params)) bad = "\"params\" must be an object";
    if (no_cache && !json_is_boolean(no_cache)) bad = "\"no_cache\" must be true or false";
    if (bad) {
        json_decref(body);
        return api_respond_error(r, MHD_HTTP_BAD_REQUEST, "%s", bad);
    }
    uint32_t version = jv ? (uint32_t)json_integer_value(jv) : 0;
    uint64_t run_id = 0;
    char why[256] = "";
    int err = loom_sched_start_run(r->api->sched, p->segs[3], version, "manual", params,
                                   json_is_true(no_cache), &run_id, why, sizeof why);
    json_decref(body);
    if (err == LOOM_ENOTFOUND) {
        if (version)
            return api_respond_error(r, MHD_HTTP_NOT_FOUND, "pipeline \"%s\" has no version %u",
                                     p->segs[3], version);
        return api_respond_error(r, MHD_HTTP_NOT_FOUND, "no pipeline named \"%s\"", p->segs[3]);
    }
    if (err == LOOM_EINVAL || err == LOOM_ETOOBIG)
        return api_respond_error(r, MHD_HTTP_BAD_REQUEST, "%s", why);
    if (err) return api_respond_loom_error(r, err, "cannot start run");
    return run_response(r, MHD_HTTP_CREATED, run_id, true);
}

static enum MHD_Result get_runs(req_t *r, const path_t *p)
{
    (void)p;
    uint64_t limit;
    if (api_query_u64(r, "limit", 1000, 50, &limit) != 0 || limit == 0)
        return api_respond_error(r, MHD_HTTP_BAD_REQUEST, "\"limit\" must be an integer 1..1000");
    const char *pipeline = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "pipeline");
    json_t *out = NULL;
    int err = loom_store_json_runs(loom_sched_store(r->api->sched), pipeline, (int)limit, &out);
    return err ? api_respond_loom_error(r, err, "runs") : api_respond_json(r, MHD_HTTP_OK, out);
}

static enum MHD_Result get_run(req_t *r, const path_t *p)
{
    uint64_t run_id, wait_s, since;
    if (!api_parse_id(p->segs[3], &run_id))
        return api_respond_error(r, MHD_HTTP_BAD_REQUEST, "run id \"%s\" is not a number",
                                 p->segs[3]);
    if (api_query_u64(r, "wait", MAX_WAIT_S, 0, &wait_s) != 0)
        return api_respond_error(r, MHD_HTTP_BAD_REQUEST, "\"wait\" must be seconds, 0..%d",
                                 MAX_WAIT_S);
    if (api_query_u64(r, "since", INT64_MAX, UINT64_MAX, &since) != 0)
        return api_respond_error(r, MHD_HTTP_BAD_REQUEST,
                                 "\"since\" must be a run's \"seq\" (a whole number)");
    /* Called again each time the connection is resumed: keep the first
     * deadline, so that changes along the way do not extend the wait. */
    if (!r->deadline && wait_s > 0) r->deadline = loom_mono_ms() + wait_s * 1000;
    bool changed = since != UINT64_MAX && loom_sched_run_seq(r->api->sched, run_id) != since;
    if (!changed && r->deadline > loom_mono_ms() && loom_sched_run_active(r->api->sched, run_id)) {
        r->wait_run = run_id;
        api_waiter_add(r->api, r);
        return MHD_YES; /* answered when the run ends or the deadline passes */
    }
    return run_response(r, MHD_HTTP_OK, run_id, false);
}

static enum MHD_Result post_cancel(req_t *r, const path_t *p)
{
    uint64_t run_id;
    if (!api_parse_id(p->segs[3], &run_id))
        return api_respond_error(r, MHD_HTTP_BAD_REQUEST, "run id \"%s\" is not a number",
                                 p->segs[3]);
    int err = loom_sched_cancel_run(r->api->sched, run_id, "by request");
    if (err == LOOM_ENOTFOUND)
        return api_respond_error(r, MHD_HTTP_NOT_FOUND, "no run %llu", (unsigned long long)run_id);
    if (err == LOOM_ESTATE)
        return api_respond_error(r, MHD_HTTP_CONFLICT, "run %llu has already ended",
                                 (unsigned long long)run_id);
    if (err) return api_respond_loom_error(r, err, "cancel");
    loom_sched_commit(r->api->sched);
    return run_response(r, MHD_HTTP_OK, run_id, false);
}

static enum MHD_Result post_agent_op(req_t *r, const path_t *p)
{
    const char *op = p->segs[4];
    if (strcmp(op, "revoke") == 0) return api_agent_revoke(r, p->segs[3]);
    bool cordon = strcmp(op, "uncordon") != 0;
    bool drain = strcmp(op, "drain") == 0;
    if (!drain && strcmp(op, "cordon") != 0 && strcmp(op, "uncordon") != 0)
        return api_respond_error(r, MHD_HTTP_NOT_FOUND,
                                 "no agent operation \"%s\" (drain, cordon, uncordon, revoke)", op);
    int err = loom_sched_agent_cordon(r->api->sched, p->segs[3], cordon, drain);
    if (err == LOOM_ENOTFOUND)
        return api_respond_error(r, MHD_HTTP_NOT_FOUND, "no agent named \"%s\"", p->segs[3]);
    if (err) return api_respond_loom_error(r, err, op);
    json_t *all = loom_sched_agents_json(r->api->sched);
    json_t *found = NULL;
    size_t i;
    json_t *a;
    json_array_foreach(json_object_get(all, "agents"), i, a)
    {
        if (strcmp(json_string_value(json_object_get(a, "name")), p->segs[3]) == 0) found = a;
    }
    json_t *out = json_incref(found);
    json_decref(all);
    return api_respond_json(r, MHD_HTTP_OK, out ? out : json_object());
}

static enum MHD_Result get_agents(req_t *r, const path_t *p)
{
    (void)p;
    return api_respond_json(r, MHD_HTTP_OK, loom_sched_agents_json(r->api->sched));
}

/* GET /metrics (and /api/v1/metrics): Prometheus text format 0.0.4. */
static enum MHD_Result get_prometheus(req_t *r, const path_t *p)
{
    (void)p;
    loom_buf_t b = {0};
    loom_sched_metrics_text(r->api->sched, &b);
    size_t len = b.len;
    char *text = loom_buf_steal(&b);
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, text ? text : loom_xstrdup(""), MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(resp, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    enum MHD_Result rc = api_queue(r, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return rc;
}

/* --- routing ----------------------------------------------------------------------- */

/* Each route's least role. API_ROLE_NONE: no token needed; the handler
 * runs with r->role = API_ROLE_NONE when none is sent (webhooks check a
 * signature instead), or with the token's role when one is. */
#define R API_ROLE_READ
#define O API_ROLE_OPERATE
#define A API_ROLE_ADMIN
#define OPEN API_ROLE_NONE
static const struct {
    const char *method;
    const char *pattern; /* segments after /api/v1/, '*' matches one */
    route_fn fn;
    api_role_t min;
} routes[] = {
    {"GET", "health", get_health, OPEN},
    {"POST", "pipelines", post_pipeline, O},
    {"POST", "objects/missing", post_objects_missing, O},
    {"PUT", "objects/*", put_object, O},
    {"GET", "pipelines", get_pipelines, R},
    {"GET", "pipelines/*", get_pipeline, R},
    {"POST", "pipelines/*/runs", post_run, O},
    {"GET", "runs", get_runs, R},
    {"GET", "runs/*", get_run, R},
    {"POST", "runs/*/cancel", post_cancel, O},
    {"GET", "runs/*/events", api_get_run_events, R},
    {"GET", "runs/*/tasks/*/log", api_get_log, R},
    {"GET", "runs/*/tasks/*/attempts", api_get_attempts, R},
    {"GET", "agents", get_agents, R},
    {"GET", "metrics", get_prometheus, R}, /* also served at /metrics */
    {"POST", "agents/tokens", api_post_join_token, A},
    {"GET", "agents/keys", api_get_agent_keys, R},
    {"POST", "agents/keys/*/approve", api_post_key_approve, A},
    {"POST", "agents/*/*", post_agent_op, A},
    {"POST", "events/*", api_post_event, OPEN},
    {"GET", "events", api_get_events, R},
    {"POST", "hooks/alertmanager", api_post_alertmanager, OPEN},
    {"POST", "hooks/s3", api_post_s3, OPEN},
    {"GET", "triggers", api_get_triggers, R},
    {"GET", "pipelines/*/decisions", api_get_decisions, R},
    {"GET", "runs/*/artifacts", api_get_artifacts, R},
    {"GET", "objects/*", api_get_object, R},
    {"GET", "lineage", api_get_lineage, R},
    {"GET", "models", api_get_models, R},
    {"GET", "models/*", api_get_models, R},
    {"POST", "models/*/aliases/*", api_post_alias, O},
    {"GET", "pipelines/*/tasks/*/metrics", api_get_metrics, R},
    {"POST", "gc", api_post_gc, A},
    {"POST", "pipelines/*/pause", api_post_pause, O},
    {"POST", "pipelines/*/resume", api_post_pause, O},
    {"POST", "tokens", api_post_token, A},
    {"GET", "tokens", api_get_tokens, A},
    {"DELETE", "tokens/*", api_revoke_token, A},
    {"POST", "tokens/*/revoke", api_revoke_token, A},
    {"PUT", "secrets/*", api_put_secret, A},
    {"DELETE", "secrets/*", api_delete_secret, A},
    {"GET", "secrets", api_get_secrets, A},
    {"PUT", "hooks/secrets/*", api_put_hook_secret, A},
    {"DELETE", "hooks/secrets/*", api_delete_hook_secret, A},
    {"GET", "hooks/secrets", api_get_hook_secrets, A},
};
#undef R
#undef O
#undef A
#undef OPEN

/* Splits "/api/v1/a/b" into segments in buf; false if too deep. */
static bool split_path(const char *url, char *buf, size_t buflen, path_t *p)
{
    snprintf(buf, buflen, "%s", url);
    p->n = 0;
    for (char *s = buf; *s;) {
        while (*s == '/') *s++ = '\0';
        if (!*s) break;
        if (p->n == MAX_SEGMENTS) return false;
        p->segs[p->n++] = s;
        while (*s && *s != '/') s++;
    }
    return true;
}

static bool pattern_matches(const char *pattern, const path_t *p)
{
    char buf[128];
    path_t want;
    if (!split_path(pattern, buf, sizeof buf, &want) || want.n + 2 != p->n) return false;
    for (size_t i = 0; i < want.n; i++)
        if (strcmp(want.segs[i], "*") != 0 && strcmp(want.segs[i], p->segs[i + 2]) != 0)
            return false;
    return true;
}

/* Changes allowed while the disk is nearly full: they free space or end
 * work; every other POST/PUT/DELETE is refused with 507 then. */
static bool allowed_when_full(const char *pattern)
{
    static const char *const ok[] = {"runs/*/cancel", "agents/*/*", "gc", "pipelines/*/pause",
                                     "pipelines/*/resume"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (strcmp(ok[i], pattern) == 0) return true;
    return false;
}

/* The route for url and method: its index, or -1 with *known telling
 * whether the path exists under another method. */
static int find_route(const char *url, const char *method, path_t *p, char *buf, size_t buflen,
                      bool *known)
{
    *known = false;
    /* Prometheus' conventional path is an alias of /api/v1/metrics. */
    if (strcmp(url, "/metrics") == 0) url = "/api/v1/metrics";
    if (strlen(url) >= buflen || !split_path(url, buf, buflen, p) || p->n < 3 ||
        strcmp(p->segs[0], "api") != 0 || strcmp(p->segs[1], "v1") != 0)
        return -1;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (!pattern_matches(routes[i].pattern, p)) continue;
        *known = true;
        if (strcmp(routes[i].method, method) == 0) return (int)i;
    }
    return -1;
}

/* Whether a request may go on to its handler (and its body be kept):
 * a token that was sent must be valid, and the route's role reached. */
static bool allowed(const req_t *r, const char *url, const char *method)
{
    char buf[1024];
    path_t p;
    bool known;
    int i = find_route(url, method, &p, buf, sizeof buf, &known);
    /* No route (404, 405): no handler will read the body either. */
    return i >= 0 && !r->auth_error && r->role >= routes[i].min;
}

static enum MHD_Result route(req_t *r, const char *url, const char *method)
{
    char buf[1024];
    path_t p;
    bool known;
    /* The UI's files hold no data: they load without a token (a browser
     * sends none when it loads a page) and ignore one that is sent. */
    if (api_ui_path(url)) return api_ui_serve(r, url, method);
    int i = find_route(url, method, &p, buf, sizeof buf, &known);
    /* Metrics are labelled by pattern, never by the path sent (bounded). */
    r->route = i >= 0 ? routes[i].pattern : "unmatched";
    if (r->auth_error) return api_respond_unauthorized(r, r->auth_error);
    if (i < 0 && known)
        return api_respond_error(r, MHD_HTTP_METHOD_NOT_ALLOWED, "%s is not allowed on %.200s",
                                 method, url);
    if (i < 0 && p.n >= 2 && strcmp(p.segs[0], "api") == 0 && strcmp(p.segs[1], "v1") == 0)
        return api_respond_error(r, MHD_HTTP_NOT_FOUND, "no such path: %.200s", url);
    if (i < 0)
        return api_respond_error(r, MHD_HTTP_NOT_FOUND,
                                 "no such path: %.200s (the API is under /api/v1)", url);
    enum MHD_Result rc;
    if (!api_require_role(r, routes[i].min, &rc)) return rc;
    char full[256];
    if (strcmp(method, "GET") != 0 && !allowed_when_full(routes[i].pattern) &&
        loom_sched_disk_full(r->api->sched, full, sizeof full))
        return api_respond_error(r, MHD_HTTP_INSUFFICIENT_STORAGE, "%s", full);
    /* Answer from committed state only: what a client is told must
     * survive a crash the moment after (the turn's writes may still be
     * open when MHD runs in the same loop iteration). */
    loom_sched_commit(r->api->sched);
    return routes[i].fn(r, &p);
}

/* Objects are streamed to a temporary file as they arrive instead of being
 * held in memory like other bodies. */
static void start_upload(req_t *r, const char *url, const char *method)
{
    static const char prefix[] = "/api/v1/objects/";
    if (strcmp(method, "PUT") != 0 || strncmp(url, prefix, sizeof prefix - 1) != 0) return;
    if (!loom_objects_hash_valid(url + sizeof prefix - 1))
        r->upload_error = "the name must be the content's BLAKE2b-256, 64 lowercase hex digits";
    else if (loom_sched_disk_full(r->api->sched, r->disk_full, sizeof r->disk_full))
        r->upload_error = r->disk_full;
    else if (loom_objects_writer_new(loom_sched_objects(r->api->sched), &r->upload) != 0)
        r->upload_error = "loomd cannot store objects";
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    loom_api_t *api = cls;
    req_t *r = *con_cls;
    (void)version;
    if (!r) {
        r = loom_xcalloc(1, sizeof *r);
        r->api = api;
        r->conn = conn;
        r->start_ns = uv_hrtime();
        snprintf(r->method, sizeof r->method, "%s", method);
        *con_cls = r;
        api_conn_request_started(api, conn);
        api_authenticate(r);
        r->refused = !allowed(r, url, method);
        /* A refused request's body is read and dropped, never stored. */
        if (!r->refused) start_upload(r, url, method);
        return MHD_YES;
    }
    if (*upload_data_size && (r->upload || r->upload_error)) {
        if (r->upload &&
            (r->uploaded + *upload_data_size > LOOM_OBJECT_MAX ||
             loom_objects_writer_append(r->upload, upload_data, *upload_data_size) != 0)) {
            loom_objects_writer_abort(&r->upload);
            r->upload_error = "too large, or loomd could not write it";
        }
        r->uploaded += *upload_data_size;
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (*upload_data_size && r->refused) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (*upload_data_size) {
        if (r->body.len + *upload_data_size > MAX_BODY)
            r->too_big = true;
        else
            loom_buf_append(&r->body, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (r->too_big)
        return api_respond_error(r, MHD_HTTP_CONTENT_TOO_LARGE, "request body over %d bytes",
                                 MAX_BODY);
    return route(r, url, method);
}

static void on_request_done(void *cls, struct MHD_Connection *conn, void **con_cls,
                            enum MHD_RequestTerminationCode toe)
{
    loom_api_t *api = cls;
    req_t *r = *con_cls;
    (void)toe;
    if (conn) api_conn_request_done(api, conn);
    if (!r) return;
    if (r->status && r->route)
        loom_sched_metrics_http(api->sched, r->method, r->route, r->status,
                                (double)(uv_hrtime() - r->start_ns) / 1e9);
    api_waiter_remove(api, r);
    loom_objects_writer_abort(&r->upload);
    free(r->commit);
    loom_buf_free(&r->body);
    free(r);
    *con_cls = NULL;
}

/* --- the libuv side ------------------------------------------------------------------ */

static void on_mhd_timer(uv_timer_t *h)
{
    api_run(h->data);
}

void api_run(loom_api_t *api)
{
    if (!api->mhd) return;
    MHD_run(api->mhd);
    MHD_UNSIGNED_LONG_LONG timeout;
    if (MHD_get_timeout(api->mhd, &timeout) == MHD_YES)
        uv_timer_start(&api->timer, on_mhd_timer, timeout, 0);
    else
        uv_timer_stop(&api->timer);
}

static void on_mhd_readable(uv_poll_t *h, int status, int events)
{
    (void)status;
    (void)events;
    api_run(h->data);
}

loom_api_t *loom_api_new(uv_loop_t *loop, loom_sched_t *sched)
{
    loom_api_t *api = loom_xcalloc(1, sizeof *api);
    api->loop = loop;
    api->sched = sched;
    loom_sched_observer_t obs = {api_on_run_changed, api_on_task_output, api};
    loom_sched_set_observer(sched, &obs);
    return api;
}

void loom_api_configure(loom_api_t *api, const loom_api_options_t *opts)
{
    api->opts = *opts;
}

bool loom_api_tls_supported(void)
{
    return MHD_is_feature_supported(MHD_FEATURE_TLS) == MHD_YES;
}

/* libmicrohttpd's own messages go through loom's log, so that they follow
 * --log-format (a JSON log stays one object per line). */
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = '\0';
    LOG_WARN("http: %s", msg);
}

static void apply_defaults(loom_api_options_t *o)
{
    if (!o->timeout_ms) o->timeout_ms = 30000;
    if (!o->max_conns) o->max_conns = 1000;
    if (!o->max_conns_per_ip) o->max_conns_per_ip = 256;
    if (!o->conn_memory) o->conn_memory = 64 * 1024;
}

int loom_api_listen(loom_api_t *api, const char *host, uint16_t port, uint16_t *bound, char *why,
                    size_t whylen)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, host, &sin.sin_addr) != 1) {
        snprintf(why, whylen, "HTTP address \"%s\" is not an IPv4 address", host);
        return LOOM_EINVAL;
    }
    loom_api_options_t *o = &api->opts;
    apply_defaults(o);
    bool tls = o->tls_cert_pem && o->tls_key_pem;
    if (tls && !loom_api_tls_supported()) {
        snprintf(why, whylen,
                 "this libmicrohttpd was built without TLS (GnuTLS) support: "
                 "cannot serve https");
        return LOOM_EINVAL;
    }
    /* MHD counts its idle timeout in whole seconds. */
    unsigned idle_s = (o->timeout_ms + 999) / 1000;
    struct MHD_OptionItem opts[] = {
        {MHD_OPTION_SOCK_ADDR, 0, &sin},
        {MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)on_mhd_log, NULL},
        {MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_request_done, api},
        {MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)api_conn_notify, api},
        {MHD_OPTION_CONNECTION_TIMEOUT, idle_s, NULL},
        {MHD_OPTION_CONNECTION_LIMIT, o->max_conns, NULL},
        {MHD_OPTION_PER_IP_CONNECTION_LIMIT, o->max_conns_per_ip, NULL},
        {MHD_OPTION_CONNECTION_MEMORY_LIMIT, (intptr_t)o->conn_memory, NULL},
        {tls ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, 0, (void *)o->tls_cert_pem},
        {tls ? MHD_OPTION_HTTPS_MEM_KEY : MHD_OPTION_END, 0, (void *)o->tls_key_pem},
        {MHD_OPTION_END, 0, NULL},
    };
    unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (tls) flags |= MHD_USE_TLS;
    api_conn_init(api);
    api->open_handles = 1; /* the guard timer */
    api->mhd = MHD_start_daemon(flags, port, NULL, NULL, on_request, api, MHD_OPTION_ARRAY, opts,
                                MHD_OPTION_END);
    if (!api->mhd) {
        snprintf(why, whylen, "cannot listen on %s://%s:%u: %s%s", tls ? "https" : "http", host,
                 port, strerror(errno),
                 tls ? " (or the TLS certificate and key are not valid PEM, or do not match)" : "");
        return LOOM_ENET;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(api->mhd, MHD_DAEMON_INFO_EPOLL_FD);
    const union MHD_DaemonInfo *pinfo = MHD_get_daemon_info(api->mhd, MHD_DAEMON_INFO_BIND_PORT);
    *bound = pinfo ? pinfo->port : port;
    uv_poll_init(api->loop, &api->poll, info->epoll_fd);
    api->poll.data = api;
    uv_poll_start(&api->poll, UV_READABLE, on_mhd_readable);
    uv_timer_init(api->loop, &api->timer);
    api->timer.data = api;
    uv_timer_init(api->loop, &api->wait_timer);
    api->wait_timer.data = api;
    api->open_handles = 4;
    api_run(api);
    LOG_INFO("HTTP API on %s://%s:%u/api/v1", tls ? "https" : "http", host, *bound);
    return 0;
}

static void on_api_handle_closed(uv_handle_t *h)
{
    loom_api_t *api = h->data;
    if (--api->open_handles == 0 && api->on_closed) api->on_closed(api->closed_ud);
}

/* Stops MHD and releases the handles, once no object commit is in flight
 * (each holds a suspended connection, which MHD cannot stop with). */
static void finish_close(loom_api_t *api)
{
    if (api->mhd) {
        MHD_run(api->mhd);
        MHD_stop_daemon(api->mhd);
        api->mhd = NULL;
    }
    if (api->open_handles == 0) {
        if (api->on_closed) api->on_closed(api->closed_ud);
        return;
    }
    if (api->open_handles == 1) {
        /* listen failed after the guard timer was set up */
        uv_close((uv_handle_t *)&api->guard, on_api_handle_closed);
        return;
    }
    uv_close((uv_handle_t *)&api->guard, on_api_handle_closed);
    uv_close((uv_handle_t *)&api->poll, on_api_handle_closed);
    uv_close((uv_handle_t *)&api->timer, on_api_handle_closed);
    uv_close((uv_handle_t *)&api->wait_timer, on_api_handle_closed);
}

void loom_api_close(loom_api_t *api, void (*on_closed)(void *ud), void *ud)
{
    api->closing = true;
    api->on_closed = on_closed;
    api->closed_ud = ud;
    if (api->mhd) {
        /* Suspended connections must be resumed before MHD can stop; they
         * then end their responses because closing is set. */
        while (api->waiters) {
            api->waiters->deadline = 1; /* answer now */
            api_waiter_resume(api, api->waiters);
        }
        for (follow_t *f = api->followers; f; f = f->next)
            if (f->suspended) {
                f->suspended = false;
                MHD_resume_connection(f->conn);
            }
        api_events_close(api);
    }
    if (api->commits == 0) finish_close(api);
}

void loom_api_destroy(loom_api_t **ap)
{
    loom_api_t *api = ap ? *ap : NULL;
    if (!api) return;
    free(api);
    *ap = NULL;
}
