/* The scheduler's operations for clients: submit a pipeline, start a run,
 * describe agents. The HTTP layer (api.c) translates requests into these. */
#include "sched_internal.h"

#include "loom/err.h"
#include "loom/log.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A version's identity: the DAG text and the bundle it runs with. */
static void version_hash(const char *data, size_t len, const char *bundle, char out[65])
{
    unsigned char h[32];
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, sizeof h);
    crypto_generichash_update(&st, (const unsigned char *)data, len);
    if (bundle) {
        crypto_generichash_update(&st, (const unsigned char *)"\0bundle:", 8);
        crypto_generichash_update(&st, (const unsigned char *)bundle, strlen(bundle));
    }
    crypto_generichash_final(&st, h, sizeof h);
    sodium_bin2hex(out, 65, h, sizeof h);
}

/* Tasks that no agent loomd knows could ever run: not an error (the right
 * agent may join later), but worth saying at submit time. */
static json_t *fit_warnings(loom_sched_t *s, const loom_dag_t *dag)
{
    json_t *list = json_array();
    for (size_t i = 0; i < dag->n_tasks; i++) {
        char *why = placement_never_fits(s, &dag->tasks[i].resources);
        if (!why) continue;
        json_array_append_new(list, json_sprintf("task \"%s\" %s", dag->tasks[i].name, why));
        free(why);
    }
    return list;
}

int loom_sched_submit(loom_sched_t *s, const char *file, const char *source, size_t len,
                      const loom_submit_origin_t *origin, json_t **result, loom_diags_t *diags)
{
    static const loom_submit_origin_t none = {NULL, NULL, -1};
    loom_dag_t *dag = NULL;
    char why[256];
    *result = NULL;
    if (!origin) origin = &none;
    int rc = loom_dag_parse(source, len, file, &dag, diags);
    if (rc) return rc;
    if (origin->bundle) {
        rc = loom_objects_check_bundle(s->objects, origin->bundle, why, sizeof why);
        if (rc) {
            loom_diags_add(diags, file, 0, 0, "code bundle: %s", why);
            loom_dag_destroy(&dag);
            return rc;
        }
    }
    char hex[65];
    version_hash(source, len, origin->bundle, hex);
    loom_submit_result_t res;
    rc = loom_store_pipeline_submit(s->store, dag->name, file, source, len, hex,
                                    (uint32_t)dag->n_tasks, loom_unix_ms(), &res);
    if (rc == 0 && res.created)
        rc = loom_store_version_origin(s->store, res.pipeline_id, res.version, origin->bundle,
                                       origin->git_commit, origin->git_dirty);
    /* What the answer needs from the DAG, before the triggers take it over. */
    char *name = loom_xstrdup(dag->name);
    size_t n_tasks = dag->n_tasks;
    json_t *warnings = rc == 0 ? fit_warnings(s, dag) : NULL;
    if (rc == 0 && res.created)
        triggers_reload(s, res.pipeline_id, name, res.version, source, len, &dag);
    if (rc == 0) rc = loom_sched_commit(s);
    if (rc == 0) {
        *result = json_pack("{s:s,s:i,s:b,s:i,s:s}", "pipeline", name, "version", (int)res.version,
                            "created", res.created, "tasks", (int)n_tasks, "hash", hex);
        json_object_set_new(*result, "warnings", warnings);
        warnings = NULL;
        LOG_INFO("pipeline submitted pipeline=%s version=%u created=%d bundle=%s", name,
                 res.version, res.created, origin->bundle ? origin->bundle : "-");
    }
    json_decref(warnings);
    free(name);
    loom_dag_destroy(&dag);
    return rc;
}

int loom_sched_start_run(loom_sched_t *s, const char *pipeline, uint32_t version,
                         const char *trigger, json_t *params, bool no_cache, uint64_t *run_id,
                         char *why, size_t whylen)
{
    uint64_t pipeline_id;
    uint32_t found_version;
    char *source = NULL;
    size_t len = 0;
    int rc = loom_store_pipeline_source(s->store, pipeline, version, &pipeline_id, &found_version,
                                        &source, &len);
    if (rc) return rc;
    json_t *given = params ? json_incref(params) : json_object();
    run_origin_t origin = {.trigger = trigger, .no_cache = no_cache};
    rc = run_create(s, pipeline_id, pipeline, found_version, source, len, &origin, given, run_id,
                    why, whylen);
    json_decref(given);
    free(source);
    if (rc == 0) rc = loom_sched_commit(s);
    return rc;
}

static const char *agent_state_name(agent_state_t st)
{
    switch (st) {
    case AGENT_CONNECTED:
        return "connected";
    case AGENT_LOST:
        return "lost";
    default:
        return "disconnected";
    }
}

static int by_name(const void *a, const void *b)
{
    const agent_t *x = *(agent_t *const *)a, *y = *(agent_t *const *)b;
    return strcmp(x->name, y->name);
}

static json_t *agent_gpus_json(const agent_t *a)
{
    json_t *arr = json_array();
    for (uint32_t i = 0; i < a->n_gpus; i++) {
        const gpu_t *g = &a->gpus[i];
        json_array_append_new(arr,
                              json_pack("{s:i,s:s,s:s,s:I,s:o}", "index", (int)g->index, "uuid",
                                        g->uuid, "model", g->model, "memory_bytes",
                                        (json_int_t)g->memory_bytes, "attempt_id",
                                        g->busy ? json_integer((json_int_t)g->busy) : json_null()));
        json_t *last = json_array_get(arr, json_array_size(arr) - 1);
        json_object_set_new(last, "shared_tasks", json_integer(g->shared_count));
        json_object_set_new(last, "shared_memory_bytes", json_integer((json_int_t)g->shared_used));
    }
    return arr;
}

static json_t *agent_json(const agent_t *a)
{
    json_t *labels = json_loads(a->labels_json ? a->labels_json : "{}", 0, NULL);
    json_t *j =
        json_pack("{s:s,s:s,s:s,s:s,s:i,s:i,s:i,s:I,s:o,s:I,s:I}", "name", a->name, "hostname",
                  a->hostname ? a->hostname : "", "version", a->version ? a->version : "", "state",
                  agent_state_name(a->state), "slots", (int)a->slots, "running", (int)a->running,
                  "cpus", (int)a->cpus, "memory_bytes", (json_int_t)a->memory_bytes, "labels",
                  labels ? labels : json_object(), "connected_unix_ms", (json_int_t)a->connected_ms,
                  "last_seen_unix_ms", (json_int_t)a->last_seen_unix);
    /* Prefetch: tasks held by the agent beyond its slots, not started. */
    json_object_set_new(j, "prefetch", json_integer(a->prefetch));
    json_object_set_new(j, "queued", json_integer(a->queued));
    json_object_set_new(j, "cpus_usable", json_real(a->cpus_total));
    json_object_set_new(j, "cpus_used", json_real(a->cpus_used));
    json_object_set_new(j, "memory_used_bytes", json_integer((json_int_t)a->memory_used));
    json_object_set_new(j, "gpus", agent_gpus_json(a));
    json_object_set_new(j, "gpu_source", json_string(a->gpu_source ? a->gpu_source : ""));
    json_object_set_new(j, "usage", a->usage ? json_incref(a->usage) : json_null());
    json_object_set_new(j, "cordoned", json_boolean(a->cordoned));
    json_object_set_new(j, "draining", json_boolean(a->draining || a->drain_requested));
    json_object_set_new(j, "schedulable",
                        json_boolean(a->state == AGENT_CONNECTED && !a->cordoned && !a->draining));
    return j;
}

json_t *loom_sched_agents_json(loom_sched_t *s)
{
    size_t n = 0;
    agent_t **list = loom_xcalloc(s->agents.count + 1, sizeof *list);
    void *v;
    for (size_t i = 0; loom_map_next(&s->agents, &i, &v);) list[n++] = v;
    qsort(list, n, sizeof *list, by_name);
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(arr, agent_json(list[i]));
    free(list);
    return json_pack("{s:o}", "agents", arr);
}

int loom_sched_agent_cordon(loom_sched_t *s, const char *name, bool cordon, bool drain)
{
    agent_t *a = loom_smap_get(&s->agents, name);
    if (!a) return LOOM_ENOTFOUND;
    a->cordoned = cordon;
    a->drain_requested = cordon && drain;
    int rc = loom_store_agent_cordon(s->store, name, cordon);
    if (rc == 0) rc = loom_sched_commit(s);
    LOG_INFO("agent %s agent=%s", cordon ? (drain ? "draining" : "cordoned") : "uncordoned", name);
    if (!cordon) {
        placement_agent_freed(s, a);
        dispatch_ready(s);
    }
    return rc;
}

void loom_sched_annotate_run(loom_sched_t *s, json_t *run)
{
    json_t *jid = json_object_get(run, "id");
    run_t *r = jid ? loom_map_get(&s->runs, (uint64_t)json_integer_value(jid)) : NULL;
    json_t *tasks = json_object_get(run, "tasks");
    if (!r || json_array_size(tasks) != r->n_tasks) return;
    for (uint32_t i = 0; i < r->n_tasks; i++) {
        const char *why = placement_wait_reason(s, &r->tasks[i]);
        if (why) json_object_set_new(json_array_get(tasks, i), "waiting", json_string(why));
    }
}

const char *loom_sched_task_waiting(loom_sched_t *s, uint64_t run_id, uint32_t idx)
{
    run_t *r = loom_map_get(&s->runs, run_id);
    if (!r || idx >= r->n_tasks) return NULL;
    return placement_wait_reason(s, &r->tasks[idx]);
}
