/* What the agent tells loomd about its host: the resources in its Hello
 * (usable CPUs, memory, GPUs and where they were found, labels, slots) and
 * the usage in each heartbeat. GPU detection and NVML samples may block, so
 * they run on the thread pool; everything else here reads small files. */
#include "agent_int.h"
#include "resources.h"

#include "loom/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void host_init(loom_agent_t *a)
{
    char tag[32], mem[32];
    cgroup_locate(a->sys_root, &a->cgroups);
    a->cpus_usable = resources_cpus_usable(&a->cgroups);
    a->memory_bytes = resources_memory_bytes(&a->cgroups);
    if (a->slots == 0) a->slots = resources_cpus_whole(a->cpus_usable);
    snprintf(tag, sizeof tag, "%d", (int)getpid());
    a->limits = limits_new(&a->cgroups, tag);
    limits_format_size(a->memory_bytes, mem, sizeof mem);
    LOG_INFO("host agent=%s cpus_usable=%.2f memory=%s", a->name, a->cpus_usable, mem);
}

/* --- GPU detection ----------------------------------------------------------- */

typedef struct {
    loom_agent_t *a;
    void (*done)(loom_agent_t *a);
    gpu_inv_t inv; /* filled off the loop, handed over on it */
} detect_job_t;

static void on_detect_work(void *ud)
{
    detect_job_t *j = ud;
    loom_agent_t *a = j->a;
    gpu_detect_opts_t o = {
        .specs = (const char *const *)a->gpu_specs,
        .n_specs = a->n_gpu_specs,
        .no_detect = a->no_gpu_detect,
        .nvml_library = a->nvml_library,
        .smi_timeout_ms = a->gpu_timeout_ms,
    };
    gpu_detect(&o, &j->inv);
}

static void on_detect_done(void *ud)
{
    detect_job_t *j = ud;
    loom_agent_t *a = j->a;
    a->gpus = j->inv;
    a->detected = true;
    LOG_INFO("gpus agent=%s source=%s count=%zu", a->name, a->gpus.source, a->gpus.n);
    for (size_t i = 0; i < a->gpus.n; i++) {
        char mem[32];
        limits_format_size(a->gpus.gpus[i].memory_bytes, mem, sizeof mem);
        LOG_INFO("gpu index=%u model=\"%s\" memory=%s uuid=%s", a->gpus.gpus[i].index,
                 a->gpus.gpus[i].model, mem, a->gpus.gpus[i].uuid);
    }
    j->done(a);
    free(j);
}

void host_detect(loom_agent_t *a, void (*done)(loom_agent_t *a))
{
    detect_job_t *j = loom_xcalloc(1, sizeof *j);
    j->a = a;
    j->done = done;
    agent_queue_job(a, on_detect_work, on_detect_done, j);
}

/* --- Hello's resources -------------------------------------------------------- */

Loom__Resources *host_resources(const loom_agent_t *a)
{
    Loom__Resources *r = loom_xmalloc(sizeof *r);
    loom__resources__init(r);
    r->labels = loom_xcalloc(a->n_labels + 1, sizeof *r->labels);
    for (size_t i = 0; i < a->n_labels; i++) {
        const char *eq = strchr(a->labels[i], '=');
        Loom__Resources__LabelsEntry *e = loom_xmalloc(sizeof *e);
        loom__resources__labels_entry__init(e);
        e->key = loom_xstrndup(a->labels[i], (size_t)(eq - a->labels[i]));
        e->value = loom_xstrdup(eq + 1);
        r->labels[r->n_labels++] = e;
    }
    r->gpus = loom_xcalloc(a->gpus.n + 1, sizeof *r->gpus);
    for (size_t i = 0; i < a->gpus.n; i++) {
        Loom__Gpu *g = loom_xmalloc(sizeof *g);
        loom__gpu__init(g);
        g->index = a->gpus.gpus[i].index;
        g->uuid = loom_xstrdup(a->gpus.gpus[i].uuid);
        g->model = loom_xstrdup(a->gpus.gpus[i].model);
        g->memory_bytes = a->gpus.gpus[i].memory_bytes;
        r->gpus[r->n_gpus++] = g;
    }
    r->cpus = resources_cpus_whole(a->cpus_usable);
    r->cpus_usable = a->cpus_usable;
    r->memory_bytes = a->memory_bytes;
    r->slots = a->slots;
    r->prefetch = a->prefetch;
    r->gpu_source = loom_xstrdup(a->gpus.source ? a->gpus.source : "none");
    return r;
}

void host_resources_free(Loom__Resources *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->n_labels; i++) {
        free(r->labels[i]->key);
        free(r->labels[i]->value);
        free(r->labels[i]);
    }
    for (size_t i = 0; i < r->n_gpus; i++) {
        free(r->gpus[i]->uuid);
        free(r->gpus[i]->model);
        free(r->gpus[i]);
    }
    free(r->labels);
    free(r->gpus);
    free(r->gpu_source);
    free(r);
}

/* --- heartbeat usage ------------------------------------------------------------ */

typedef struct {
    loom_agent_t *a;
    gpu_usage_t *usage;
    size_t n;
} sample_job_t;

static void on_sample_work(void *ud)
{
    sample_job_t *j = ud;
    j->n = gpu_sample(&j->a->gpus, j->usage, j->a->gpus.n);
}

static void on_sample_done(void *ud)
{
    sample_job_t *j = ud;
    loom_agent_t *a = j->a;
    free(a->gpu_usage);
    a->gpu_usage = j->usage;
    a->n_gpu_usage = j->n;
    a->sampling = false;
    free(j);
}

/* NVML calls are quick, but a GPU in a bad state can make one hang: they
 * run on the thread pool, one sample at a time, and each heartbeat carries
 * the latest. */
static void start_sample(loom_agent_t *a)
{
    if (!a->gpus.nvml || a->sampling || a->stopping) return;
    sample_job_t *j = loom_xcalloc(1, sizeof *j);
    j->a = a;
    j->usage = loom_xcalloc(a->gpus.n + 1, sizeof *j->usage);
    a->sampling = true;
    agent_queue_job(a, on_sample_work, on_sample_done, j);
}

Loom__Usage *host_usage(loom_agent_t *a)
{
    Loom__Usage *u = loom_xmalloc(sizeof *u);
    loom__usage__init(u);
    resources_usage(a->sys_root, &u->load1, &u->memory_available_bytes);
    u->gpus = loom_xcalloc(a->n_gpu_usage + 1, sizeof *u->gpus);
    for (size_t i = 0; i < a->n_gpu_usage; i++) {
        Loom__GpuUsage *g = loom_xmalloc(sizeof *g);
        loom__gpu_usage__init(g);
        g->index = a->gpu_usage[i].index;
        g->utilization_percent = a->gpu_usage[i].utilization_percent;
        g->memory_used_bytes = a->gpu_usage[i].memory_used_bytes;
        u->gpus[u->n_gpus++] = g;
    }
    start_sample(a);
    return u;
}

void host_usage_free(Loom__Usage *u)
{
    if (!u) return;
    for (size_t i = 0; i < u->n_gpus; i++) free(u->gpus[i]);
    free(u->gpus);
    free(u);
}

void host_free(loom_agent_t *a)
{
    gpu_inv_free(&a->gpus);
    limits_destroy(&a->limits);
    cgroup_where_free(&a->cgroups);
    free(a->gpu_usage);
    a->gpu_usage = NULL;
    for (size_t i = 0; i < a->n_gpu_specs; i++) free(a->gpu_specs[i]);
    free(a->gpu_specs);
    a->gpu_specs = NULL;
    free(a->nvml_library);
    free(a->sys_root);
}
