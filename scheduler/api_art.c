/* HTTP routes for artifacts (listing, download with Range), lineage, the
 * model registry, metrics across runs and retention. See docs/api.md. */
#include "api_int.h"

#include "loom/err.h"
#include "loom/util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *query(req_t *r, const char *key)
{
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, key);
}

/* "bytes=A-B", "bytes=A-", "bytes=-N" (one range) into [*from, *to]. */
static int parse_range(const char *h, uint64_t size, uint64_t *from, uint64_t *to)
{
    if (strncmp(h, "bytes=", 6) != 0 || strchr(h, ',')) return -1;
    const char *p = h + 6, *dash = strchr(p, '-');
    if (!dash) return -1;
    int64_t a = -1, b = -1;
    char first[32], second[32];
    snprintf(first, sizeof first, "%.*s", (int)(dash - p), p);
    snprintf(second, sizeof second, "%s", dash + 1);
    if (*first && loom_parse_i64(first, 0, INT64_MAX, &a) != 0) return -1;
    if (*second && loom_parse_i64(second, 0, INT64_MAX, &b) != 0) return -1;
    if (a < 0 && b < 0) return -1;
    if (a < 0) { /* the last b bytes */
        if (b == 0 || size == 0) return -1;
        *from = (uint64_t)b >= size ? 0 : size - (uint64_t)b;
        *to = size - 1;
        return 0;
    }
    if ((uint64_t)a >= size || (b >= 0 && b < a)) return -1;
    *from = (uint64_t)a;
    *to = b < 0 || (uint64_t)b >= size ? size - 1 : (uint64_t)b;
    return 0;
}

/* Sends a stored object, whole or the asked Range. */
static enum MHD_Result send_object(req_t *r, const char *hash, const char *name)
{
    char *path = loom_objects_path(loom_sched_objects(r->api->sched), hash);
    int fd = path ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    free(path);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        if (fd >= 0) close(fd);
        return api_respond_error(r, MHD_HTTP_NOT_FOUND,
                                 "object %s is not stored (deleted by loom gc?)", hash);
    }
    uint64_t size = (uint64_t)st.st_size, from = 0, to = size ? size - 1 : 0;
    const char *range = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Range");
    unsigned status = MHD_HTTP_OK;
    char cr[96];
    if (range) {
        if (parse_range(range, size, &from, &to) != 0) {
            close(fd);
            struct MHD_Response *resp =
                MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
            snprintf(cr, sizeof cr, "bytes */%" PRIu64, size);
            MHD_add_response_header(resp, "Content-Range", cr);
            enum MHD_Result rc = api_queue(r, MHD_HTTP_RANGE_NOT_SATISFIABLE, resp);
            MHD_destroy_response(resp);
            return rc;
        }
        status = MHD_HTTP_PARTIAL_CONTENT;
        snprintf(cr, sizeof cr, "bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64, from, to, size);
    }
    uint64_t len = size ? to - from + 1 : 0;
    struct MHD_Response *resp = MHD_create_response_from_fd_at_offset64(len, fd, from);
    MHD_add_response_header(resp, "Content-Type", "application/octet-stream");
    MHD_add_response_header(resp, "Accept-Ranges", "bytes");
    MHD_add_response_header(resp, "X-Loom-Hash", hash);
    if (status == MHD_HTTP_PARTIAL_CONTENT) MHD_add_response_header(resp, "Content-Range", cr);
    if (name) {
        const char *base = strrchr(name, '/');
        char *cd = loom_xasprintf("attachment; filename=\"%s\"", base ? base + 1 : name);
        for (char *c = cd; *c; c++)
            if (*c == '\\' || (unsigned char)*c < 0x20) *c = '_';
        MHD_add_response_header(resp, "Content-Disposition", cd);
        free(cd);
    }
    enum MHD_Result rc = api_queue(r, status, resp);
    MHD_destroy_response(resp);
    return rc;
}

/* GET /runs/{id}/artifacts[?task=T] — and with &path=P, the file itself. */
enum MHD_Result api_get_artifacts(req_t *r, const path_t *p)
{
    uint64_t run_id;
    if (!api_parse_id(p->segs[3], &run_id))
        return api_respond_error(r, MHD_HTTP_BAD_REQUEST, "bad run id \"%s\"", p->segs[3]);
    loom_store_t *st = loom_sched_store(r->api->sched);
    const char *task = query(r, "task"), *path = query(r, "path");
    if (path) {
        if (!task) return api_respond_error(r, MHD_HTTP_BAD_REQUEST, "\"path\" needs \"task\" too");
        char hash[65];
        uint64_t size;
        int err = loom_store_artifact_find(st, run_id, task, path, hash, &size);
        if (err == LOOM_ENOTFOUND)
            return api_respond_error(r, MHD_HTTP_NOT_FOUND,
                                     "run %llu task \"%s\" has no artifact \"%s\"",
                                     (unsigned long long)run_id, task, path);
        if (err) return api_respond_loom_error(r, err, "artifact");
        return send_object(r, hash, path);
    }
    json_t *run = NULL;
    int err = loom_store_json_run_summary(st, run_id, &run);
    json_decref(run);
    if (err == LOOM_ENOTFOUND)
        return api_respond_error(r, MHD_HTTP_NOT_FOUND, "no run %llu", (unsigned long long)run_id);
    json_t *out = NULL;
    err = err ? err : loom_store_json_artifacts(st, run_id, task, &out);
    return err ? api_respond_loom_error(r, err, "artifacts")
               : api_respond_json(r, MHD_HTTP_OK, out);
}

/* GET /objects/{hash}: a stored object by hash (with Range). */
enum MHD_Result api_get_object(req_t *r, const path_t *p)
{
    if (!loom_objects_hash_valid(p->segs[3]))
        return api_respond_error(r, MHD_HTTP_BAD_REQUEST, "\"%s\" is not 64 lowercase hex digits",
                                 p->segs[3]);
    return send_object(r, p->segs[3], NULL);
}

/* GET /lineage?hash=H, or ?run=R&task=T&path=P */
enum MHD_Result api_get_lineage(req_t *r, const path_t *p)
{
    (void)p;
    const char *hash = query(r, "hash"), *run = query(r, "run");
    const char *task = query(r, "task"), *path = query(r, "path");
    uint64_t run_id = 0;
    if (hash && !loom_objects_hash_valid(hash))
        return api_respond_error(r, MHD_HTTP_BAD_REQUEST, "\"hash\" must be 64 lowercase hex");
    if (!hash && (!run || !task || !path || !api_parse_id(run, &run_id)))
        return api_respond_error(r, MHD_HTTP_BAD_REQUEST,
                                 "give \"hash\", or \"run\", \"task\" and \"path\"");
    json_t *out = NULL;
    int err =
        loom_store_json_lineage(loom_sched_store(r->api->sched), hash, run_id, task, path, &out);
    if (err == LOOM_ENOTFOUND) return api_respond_error(r, MHD_HTTP_NOT_FOUND, "no such artifact");
    return err ? api_respond_loom_error(r, err, "lineage") : api_respond_json(r, MHD_HTTP_OK, out);
}

enum MHD_Result api_get_models(req_t *r, const path_t *p)
{
    json_t *out = NULL;
    loom_store_t *st = loom_sched_store(r->api->sched);
    int err =
        p->n > 3 ? loom_store_json_model(st, p->segs[3], &out) : loom_store_json_models(st, &out);
    if (err == LOOM_ENOTFOUND)
        return api_respond_error(r, MHD_HTTP_NOT_FOUND, "no model named \"%s\"", p->segs[3]);
    return err ? api_respond_loom_error(r, err, "models") : api_respond_json(r, MHD_HTTP_OK, out);
}

/* POST /models/{name}/aliases/{alias} {"version": N} */
enum MHD_Result api_post_alias(req_t *r, const path_t *p)
{
    enum MHD_Result rc;
    json_t *body = api_parse_body(r, &rc);
    if (!body) return rc;
    json_t *v = json_object_get(body, "version");
    json_int_t version = json_is_integer(v) ? json_integer_value(v) : 0;
    json_decref(body);
    if (version < 1 || version > UINT32_MAX)
        return api_respond_error(r, MHD_HTTP_BAD_REQUEST, "\"version\" must be a positive integer");
    if (!loom_name_valid(p->segs[5]))
        return api_respond_error(r, MHD_HTTP_BAD_REQUEST, "invalid alias \"%s\"", p->segs[5]);
    int err = loom_sched_model_alias(r->api->sched, p->segs[3], p->segs[5], (uint32_t)version);
    if (err == LOOM_ENOTFOUND)
        return api_respond_error(r, MHD_HTTP_NOT_FOUND, "model \"%s\" has no version %lld",
                                 p->segs[3], (long long)version);
    if (err) return api_respond_loom_error(r, err, "alias");
    return api_respond_json(r, MHD_HTTP_OK,
                            json_pack("{s:s,s:s,s:I}", "model", p->segs[3], "alias", p->segs[5],
                                      "version", (json_int_t)version));
}

/* GET /pipelines/{name}/tasks/{task}/metrics?limit=N */
enum MHD_Result api_get_metrics(req_t *r, const path_t *p)
{
    uint64_t limit;
    if (api_query_u64(r, "limit", 1000, 20, &limit) != 0 || limit == 0)
        return api_respond_error(r, MHD_HTTP_BAD_REQUEST, "\"limit\" must be an integer 1..1000");
    json_t *out = NULL;
    int err = loom_store_json_metrics(loom_sched_store(r->api->sched), p->segs[3], p->segs[5],
                                      (int)limit, &out);
    return err ? api_respond_loom_error(r, err, "metrics") : api_respond_json(r, MHD_HTTP_OK, out);
}

/* POST /gc {"keep_last": N, "max_age": "30d", "dry_run": bool} */
enum MHD_Result api_post_gc(req_t *r, const path_t *p)
{
    (void)p;
    enum MHD_Result rc;
    json_t *body = api_parse_body(r, &rc);
    if (!body) return rc;
    loom_gc_opts_t o = {0};
    json_t *keep = json_object_get(body, "keep_last"), *age = json_object_get(body, "max_age");
    json_t *dry = json_object_get(body, "dry_run");
    const char *bad = NULL;
    if (keep && (!json_is_integer(keep) || json_integer_value(keep) < 1 ||
                 json_integer_value(keep) > 1000000))
        bad = "\"keep_last\" must be an integer 1..1000000";
    else if (keep)
        o.keep_last = (uint32_t)json_integer_value(keep);
    if (age &&
        (!json_is_string(age) ||
         loom_parse_duration_ms(json_string_value(age), &o.max_age_ms) != 0 || o.max_age_ms == 0))
        bad = "\"max_age\" must be a duration such as \"30d\" or \"12h\"";
    if (dry && !json_is_boolean(dry)) bad = "\"dry_run\" must be true or false";
    o.dry_run = json_is_true(dry);
    json_decref(body);
    if (!bad && !o.keep_last && !o.max_age_ms)
        bad = "give \"keep_last\", \"max_age\" or both: gc deletes nothing by default";
    if (bad) return api_respond_error(r, MHD_HTTP_BAD_REQUEST, "%s", bad);
    json_t *out = NULL;
    int err = loom_sched_gc(r->api->sched, &o, &out);
    return err ? api_respond_loom_error(r, err, "gc") : api_respond_json(r, MHD_HTTP_OK, out);
}
