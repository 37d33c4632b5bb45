/* GET /api/v1/runs/ID/events: a run's changes as server-sent events. The
 * first event carries the run and all its tasks; each later one the run and
 * only the tasks that changed since the event before. The connection is
 * suspended between changes and resumed by the scheduler's observer (like
 * the long polls in api_stream.c), so a watching browser costs no thread
 * and no polling; the stream ends after the event that shows the run ended. */
#include "api_int.h"

#include "loom/err.h"
#include "loom/log.h"
#include "loom/util.h"

#include <stdlib.h>
#include <string.h>

struct sse {
    loom_api_t *api;
    struct MHD_Connection *conn;
    uint64_t run_id;
    bool dirty; /* the run changed since the last event was built */
    bool suspended;
    bool ended;         /* the last event is built: end after sending it */
    json_t *last_run;   /* the run as last sent, without its tasks */
    json_t *last_tasks; /* its tasks as last sent, in the run's order */
    char *buf;          /* the event being sent */
    size_t len, off;
    sse_t *next, *prev;
};

static void sse_unlink(sse_t *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else if (e->api->streams == e)
        e->api->streams = e->next;
    if (e->next) e->next->prev = e->prev;
    e->next = e->prev = NULL;
}

static void on_sse_free(void *cls)
{
    sse_t *e = cls;
    sse_unlink(e);
    json_decref(e->last_run);
    json_decref(e->last_tasks);
    free(e->buf);
    free(e);
}

static void set_event(sse_t *e, const char *name, json_t *data)
{
    char *text = json_dumps(data, JSON_COMPACT);
    json_decref(data);
    loom_buf_t b = {0};
    loom_buf_append(&b, "event: ", 7);
    loom_buf_append(&b, name, strlen(name));
    loom_buf_append(&b, "\ndata: ", 7);
    /* JSON_COMPACT never writes a newline, which would end the data line. */
    if (text) loom_buf_append(&b, text, strlen(text));
    loom_buf_append(&b, "\n\n", 2);
    free(text);
    free(e->buf);
    e->buf = b.data;
    e->len = b.len;
    e->off = 0;
}

/* Builds the next event from committed state; leaves e->len 0 when nothing
 * a client can see changed. */
static void build_event(sse_t *e)
{
    e->dirty = false;
    e->len = e->off = 0;
    json_t *run = NULL;
    int err = loom_store_json_run(loom_sched_store(e->api->sched), e->run_id, &run);
    if (err) {
        set_event(e, "error", json_pack("{s:s}", "error", loom_strerror(err)));
        e->ended = true;
        return;
    }
    /* Read after the snapshot: a run that ends between the two is caught
     * by the next change, which the end always reports. */
    bool active = loom_sched_run_active(e->api->sched, e->run_id);
    json_t *tasks = json_incref(json_object_get(run, "tasks"));
    json_object_del(run, "tasks");
    json_t *changed = json_array();
    size_t n_old = json_array_size(e->last_tasks);
    for (size_t i = 0; i < json_array_size(tasks); i++) {
        json_t *t = json_array_get(tasks, i);
        if (i >= n_old || !json_equal(t, json_array_get(e->last_tasks, i)))
            json_array_append(changed, t);
    }
    bool full = e->last_run == NULL;
    bool same = !full && json_array_size(changed) == 0 && json_equal(run, e->last_run);
    json_decref(e->last_tasks);
    e->last_tasks = tasks;
    json_decref(e->last_run);
    e->last_run = json_incref(run);
    if (!active) e->ended = true;
    if (same && active) {
        json_decref(changed);
        json_decref(run);
        return;
    }
    set_event(e, "run", json_pack("{s:o,s:o,s:b}", "run", run, "tasks", changed, "full", full));
}

static ssize_t on_sse_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    sse_t *e = cls;
    (void)pos;
    if (e->off == e->len) {
        if (e->ended || e->api->closing) return MHD_CONTENT_READER_END_OF_STREAM;
        if (e->dirty) build_event(e);
    }
    if (e->off < e->len) {
        size_t n = e->len - e->off < max ? e->len - e->off : max;
        memcpy(buf, e->buf + e->off, n);
        e->off += n;
        return (ssize_t)n;
    }
    if (e->ended) return MHD_CONTENT_READER_END_OF_STREAM;
    e->suspended = true;
    MHD_suspend_connection(e->conn);
    return 0;
}

enum MHD_Result api_get_run_events(req_t *r, const path_t *p)
{
    loom_api_t *api = r->api;
    uint64_t run_id;
    if (!api_parse_id(p->segs[3], &run_id))
        return api_respond_error(r, MHD_HTTP_BAD_REQUEST, "run id \"%s\" is not a number",
                                 p->segs[3]);
    json_t *summary = NULL;
    int err = loom_store_json_run_summary(loom_sched_store(api->sched), run_id, &summary);
    if (err == LOOM_ENOTFOUND)
        return api_respond_error(r, MHD_HTTP_NOT_FOUND, "no run %llu", (unsigned long long)run_id);
    if (err) return api_respond_loom_error(r, err, "run");
    json_decref(summary);
    sse_t *e = loom_xcalloc(1, sizeof *e);
    e->api = api;
    e->conn = r->conn;
    e->run_id = run_id;
    e->dirty = true; /* the first event: the whole run */
    e->next = api->streams;
    if (e->next) e->next->prev = e;
    api->streams = e;
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 64 * 1024, on_sse_read, e, on_sse_free);
    MHD_add_response_header(resp, "Content-Type", "text/event-stream; charset=utf-8");
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    /* Proxies such as nginx would otherwise hold events back in a buffer. */
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    enum MHD_Result rc = MHD_queue_response(r->conn, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return rc;
}

bool api_events_changed(loom_api_t *api, uint64_t run_id)
{
    bool resumed = false;
    for (sse_t *e = api->streams; e; e = e->next) {
        if (e->run_id != run_id) continue;
        e->dirty = true;
        if (e->suspended) {
            e->suspended = false;
            MHD_resume_connection(e->conn);
            resumed = true;
        }
    }
    return resumed;
}

void api_events_close(loom_api_t *api)
{
    for (sse_t *e = api->streams; e; e = e->next)
        if (e->suspended) {
            e->suspended = false;
            MHD_resume_connection(e->conn);
        }
}
