/* loomd's Prometheus metrics (see metrics.h and docs/api.md). Counters and
 * histograms are bumped in place by hooks on the loop thread; gauges are
 * read from the in-memory model when scraped; the sizes of the stored logs
 * and objects come from a folder walk on the thread pool, at most every
 * SIZE_REFRESH_MS and only when scraped. */
#include "metrics.h"
#include "sched_internal.h"

#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#define SIZE_REFRESH_MS 30000

/* --- the exposition writer ------------------------------------------------------ */

void loom_hist_init(loom_hist_t *h, const double *bounds, size_t n_bounds)
{
    memset(h, 0, sizeof *h);
    h->bounds = bounds;
    h->n_bounds = n_bounds < LOOM_HIST_MAX_BUCKETS ? n_bounds : LOOM_HIST_MAX_BUCKETS;
}

void loom_hist_observe(loom_hist_t *h, double v)
{
    size_t i = 0;
    while (i < h->n_bounds && v > h->bounds[i]) i++;
    h->counts[i]++;
    h->sum += v;
    h->count++;
}

static void put_number(loom_buf_t *b, double v)
{
    if (isnan(v))
        loom_buf_puts(b, "NaN");
    else if (isinf(v))
        loom_buf_puts(b, v > 0 ? "+Inf" : "-Inf");
    else if (v == floor(v) && fabs(v) < 1e15)
        loom_buf_printf(b, "%.0f", v);
    else
        loom_buf_printf(b, "%.15g", v);
}

/* Escapes for a label value: backslash, double quote and newline; for
 * HELP text: backslash and newline. */
static void put_escaped(loom_buf_t *b, const char *s, bool quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            loom_buf_puts(b, "\\\\");
        else if (*s == '\n')
            loom_buf_puts(b, "\\n");
        else if (quote && *s == '"')
            loom_buf_puts(b, "\\\"");
        else
            loom_buf_append(b, s, 1);
    }
}

void loom_prom_family(loom_buf_t *b, const char *name, const char *type, const char *help)
{
    loom_buf_printf(b, "# HELP %s ", name);
    put_escaped(b, help, false);
    loom_buf_printf(b, "\n# TYPE %s %s\n", name, type);
}

static void put_labels(loom_buf_t *b, const char *const *labels, size_t n, const char *le)
{
    if (!n && !le) return;
    loom_buf_puts(b, "{");
    for (size_t i = 0; i < n; i++) {
        loom_buf_printf(b, "%s%s=\"", i ? "," : "", labels[2 * i]);
        put_escaped(b, labels[2 * i + 1] ? labels[2 * i + 1] : "", true);
        loom_buf_puts(b, "\"");
    }
    if (le) loom_buf_printf(b, "%sle=\"%s\"", n ? "," : "", le);
    loom_buf_puts(b, "}");
}

void loom_prom_sample(loom_buf_t *b, const char *name, const char *const *labels, size_t n,
                      double value)
{
    loom_buf_puts(b, name);
    put_labels(b, labels, n, NULL);
    loom_buf_puts(b, " ");
    put_number(b, value);
    loom_buf_puts(b, "\n");
}

void loom_prom_histogram(loom_buf_t *b, const char *name, const char *const *labels, size_t n,
                         const loom_hist_t *h)
{
    uint64_t cum = 0;
    for (size_t i = 0; i <= h->n_bounds; i++) {
        cum += h->counts[i];
        char le[32];
        if (i == h->n_bounds) {
            snprintf(le, sizeof le, "+Inf");
        } else {
            loom_buf_t t = {0};
            put_number(&t, h->bounds[i]);
            snprintf(le, sizeof le, "%s", t.data);
            loom_buf_free(&t);
        }
        loom_buf_printf(b, "%s_bucket", name);
        put_labels(b, labels, n, le);
        loom_buf_printf(b, " %llu\n", (unsigned long long)cum);
    }
    loom_buf_printf(b, "%s_sum", name);
    put_labels(b, labels, n, NULL);
    loom_buf_puts(b, " ");
    put_number(b, h->sum);
    loom_buf_printf(b, "\n%s_count", name);
    put_labels(b, labels, n, NULL);
    loom_buf_printf(b, " %llu\n", (unsigned long long)h->count);
}

/* --- loomd's metrics -------------------------------------------------------------- */

static const double dispatch_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                         0.25,   0.5,   1,      2.5,   5,    10,    30,   60};
static const double trigger_bounds[] = {0.01, 0.05, 0.1, 0.25, 0.5, 1,   2.5,
                                        5,    10,   30,  60,   120, 300, 600};
static const double http_bounds[] = {0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30};

static const char *const run_end_states[] = {"succeeded", "failed", "cancelled"};
static const char *const task_end_states[] = {"succeeded", "failed", "upstream_failed", "skipped",
                                              "cancelled"};
static const char *const trigger_kinds[] = {"schedule", "data", "event", "other"};
#define N_RUN_END 3
#define N_TASK_END 5
#define N_KINDS 4

typedef struct {
    char kind[16], decision[16];
    uint64_t n;
} decision_t;

typedef struct {
    char method[8];
    const char *route; /* a static route pattern */
    unsigned status;
    uint64_t n;
} http_count_t;

typedef struct {
    char method[8];
    const char *route;
    loom_hist_t h;
} http_hist_t;

/* The background folder walk; orphaned (m = NULL) if loomd shuts down first. */
typedef struct sizer {
    uv_work_t req;
    loom_metrics_t *m;
    char *logs, *objects;
    uint64_t log_bytes, object_bytes;
} sizer_t;

struct loom_metrics {
    char *state_dir;
    uint64_t runs_ended[N_RUN_END];
    uint64_t tasks_ended[N_TASK_END];
    loom_hist_t dispatch;
    loom_hist_t trigger_start[N_KINDS];
    decision_t *decisions;
    size_t n_decisions, cap_decisions;
    http_count_t *http;
    size_t n_http, cap_http;
    http_hist_t *http_h;
    size_t n_http_h, cap_http_h;
    uint64_t log_bytes, object_bytes;
    uint64_t sized_ms; /* monotonic; 0: never */
    sizer_t *sizing;   /* in flight */
};

loom_metrics_t *loom_metrics_new(const char *state_dir)
{
    loom_metrics_t *m = loom_xcalloc(1, sizeof *m);
    m->state_dir = loom_xstrdup(state_dir ? state_dir : ".");
    loom_hist_init(&m->dispatch, dispatch_bounds, sizeof dispatch_bounds / sizeof(double));
    for (int i = 0; i < N_KINDS; i++)
        loom_hist_init(&m->trigger_start[i], trigger_bounds,
                       sizeof trigger_bounds / sizeof(double));
    return m;
}

void loom_metrics_destroy(loom_metrics_t **mp)
{
    loom_metrics_t *m = mp ? *mp : NULL;
    if (!m) return;
    if (m->sizing) m->sizing->m = NULL;
    free(m->state_dir);
    free(m->decisions);
    free(m->http);
    free(m->http_h);
    free(m);
    *mp = NULL;
}

static int index_of(const char *const *names, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], s) == 0) return (int)i;
    return -1;
}

void loom_metrics_run_ended(loom_metrics_t *m, const char *state)
{
    int i = m ? index_of(run_end_states, N_RUN_END, state) : -1;
    if (i >= 0) m->runs_ended[i]++;
}

void loom_metrics_task_ended(loom_metrics_t *m, const char *state)
{
    int i = m ? index_of(task_end_states, N_TASK_END, state) : -1;
    if (i >= 0) m->tasks_ended[i]++;
}

void loom_metrics_dispatched(loom_metrics_t *m, double s)
{
    if (m) loom_hist_observe(&m->dispatch, s);
}

void loom_metrics_trigger_started(loom_metrics_t *m, const char *kind, double s)
{
    if (!m) return;
    int i = index_of(trigger_kinds, N_KINDS - 1, kind);
    loom_hist_observe(&m->trigger_start[i < 0 ? N_KINDS - 1 : i], s);
}

void loom_metrics_trigger_decision(loom_metrics_t *m, const char *kind, const char *decision)
{
    if (!m) return;
    for (size_t i = 0; i < m->n_decisions; i++)
        if (strcmp(m->decisions[i].kind, kind) == 0 &&
            strcmp(m->decisions[i].decision, decision) == 0) {
            m->decisions[i].n++;
            return;
        }
    if (m->n_decisions == m->cap_decisions) {
        m->cap_decisions = m->cap_decisions ? 2 * m->cap_decisions : 16;
        m->decisions = loom_xrealloc(m->decisions, m->cap_decisions * sizeof *m->decisions);
    }
    decision_t *d = &m->decisions[m->n_decisions++];
    snprintf(d->kind, sizeof d->kind, "%s", kind);
    snprintf(d->decision, sizeof d->decision, "%s", decision);
    d->n = 1;
}

void loom_metrics_http(loom_metrics_t *m, const char *method, const char *route, unsigned status,
                       double seconds)
{
    if (!m) return;
    /* Only the methods the API knows: the label set stays bounded whatever
     * clients send. */
    static const char *const methods[] = {"GET", "POST", "PUT", "DELETE", "HEAD"};
    if (index_of(methods, 5, method) < 0) method = "other";
    http_count_t *c = NULL;
    for (size_t i = 0; i < m->n_http && !c; i++)
        if (m->http[i].status == status && strcmp(m->http[i].route, route) == 0 &&
            strcmp(m->http[i].method, method) == 0)
            c = &m->http[i];
    if (!c) {
        if (m->n_http == m->cap_http) {
            m->cap_http = m->cap_http ? 2 * m->cap_http : 32;
            m->http = loom_xrealloc(m->http, m->cap_http * sizeof *m->http);
        }
        c = &m->http[m->n_http++];
        snprintf(c->method, sizeof c->method, "%s", method);
        c->route = route;
        c->status = status;
        c->n = 0;
    }
    c->n++;
    http_hist_t *h = NULL;
    for (size_t i = 0; i < m->n_http_h && !h; i++)
        if (strcmp(m->http_h[i].route, route) == 0 && strcmp(m->http_h[i].method, method) == 0)
            h = &m->http_h[i];
    if (!h) {
        if (m->n_http_h == m->cap_http_h) {
            m->cap_http_h = m->cap_http_h ? 2 * m->cap_http_h : 32;
            m->http_h = loom_xrealloc(m->http_h, m->cap_http_h * sizeof *m->http_h);
        }
        h = &m->http_h[m->n_http_h++];
        snprintf(h->method, sizeof h->method, "%s", method);
        h->route = route;
        loom_hist_init(&h->h, http_bounds, sizeof http_bounds / sizeof(double));
    }
    loom_hist_observe(&h->h, seconds);
}

/* --- stored bytes: a walk on the thread pool ------------------------------------ */

static uint64_t tree_bytes(int dirfd_, int depth)
{
    uint64_t total = 0;
    DIR *d = fdopendir(dirfd_);
    if (!d) {
        close(dirfd_);
        return 0;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        struct stat st;
        if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
        if (S_ISDIR(st.st_mode) && depth < 8) {
            int fd = openat(dirfd(d), e->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (fd >= 0) total += tree_bytes(fd, depth + 1);
        } else if (S_ISREG(st.st_mode)) {
            total += (uint64_t)st.st_size;
        }
    }
    closedir(d);
    return total;
}

static uint64_t path_bytes(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    return fd < 0 ? 0 : tree_bytes(fd, 0);
}

static void on_size_work(uv_work_t *req)
{
    sizer_t *z = req->data;
    z->log_bytes = path_bytes(z->logs);
    z->object_bytes = path_bytes(z->objects);
}

static void on_size_done(uv_work_t *req, int status)
{
    sizer_t *z = req->data;
    if (z->m && status == 0) {
        z->m->log_bytes = z->log_bytes;
        z->m->object_bytes = z->object_bytes;
    }
    if (z->m) z->m->sizing = NULL;
    free(z->logs);
    free(z->objects);
    free(z);
}

static void refresh_sizes(loom_metrics_t *m, uv_loop_t *loop, uint64_t now)
{
    if (!loop || m->sizing || (m->sized_ms && now - m->sized_ms < SIZE_REFRESH_MS)) return;
    sizer_t *z = loom_xcalloc(1, sizeof *z);
    z->m = m;
    z->logs = loom_xasprintf("%s/logs", m->state_dir);
    z->objects = loom_xasprintf("%s/objects", m->state_dir);
    z->req.data = z;
    if (uv_queue_work(loop, &z->req, on_size_work, on_size_done) != 0) {
        free(z->logs);
        free(z->objects);
        free(z);
        return;
    }
    m->sizing = z;
    m->sized_ms = now ? now : 1;
}

/* --- process_* from /proc ---------------------------------------------------------- */

static void render_process(loom_buf_t *b)
{
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "re");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f) fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    unsigned long long utime = 0, stime = 0, start = 0, vsize = 0, rss = 0;
    if (p && sscanf(p + 2,
                    "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d "
                    "%*d %llu %llu %llu",
                    &utime, &stime, &start, &vsize, &rss) != 5)
        utime = stime = start = vsize = rss = 0;
    double tck = (double)sysconf(_SC_CLK_TCK);
    long page = sysconf(_SC_PAGESIZE);
    unsigned long long btime = 0;
    f = fopen("/proc/stat", "re");
    while (f && fgets(buf, sizeof buf, f))
        if (sscanf(buf, "btime %llu", &btime) == 1) break;
    if (f) fclose(f);
    size_t fds = 0;
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.') fds++;
    if (d) closedir(d);
    if (fds) fds--; /* the descriptor opendir itself holds */
    struct rlimit rl;
    double max_fds = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY
                         ? (double)rl.rlim_cur
                         : -1;

    loom_prom_family(b, "process_cpu_seconds_total", "counter",
                     "Total user and system CPU time spent in seconds.");
    loom_prom_sample(b, "process_cpu_seconds_total", NULL, 0, (double)(utime + stime) / tck);
    loom_prom_family(b, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
    loom_prom_sample(b, "process_resident_memory_bytes", NULL, 0, (double)rss * (double)page);
    loom_prom_family(b, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
    loom_prom_sample(b, "process_virtual_memory_bytes", NULL, 0, (double)vsize);
    loom_prom_family(b, "process_open_fds", "gauge", "Number of open file descriptors.");
    loom_prom_sample(b, "process_open_fds", NULL, 0, (double)fds);
    if (max_fds >= 0) {
        loom_prom_family(b, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
        loom_prom_sample(b, "process_max_fds", NULL, 0, max_fds);
    }
    loom_prom_family(b, "process_start_time_seconds", "gauge",
                     "Start time of the process since unix epoch in seconds.");
    loom_prom_sample(b, "process_start_time_seconds", NULL, 0, (double)btime + (double)start / tck);
}

/* --- the scrape -------------------------------------------------------------------- */

static void render_runs(loom_sched_t *s, loom_metrics_t *m, loom_buf_t *b)
{
    uint64_t runs[2] = {0, 0};     /* queued, running */
    uint64_t tasks[3] = {0, 0, 0}; /* pending, queued, running */
    void *val;
    for (size_t it = 0; loom_map_next(&s->runs, &it, &val);) {
        const run_t *r = val;
        if (r->state <= RUN_RUNNING) runs[r->state]++;
        for (uint32_t i = 0; i < r->n_tasks; i++)
            if (r->tasks[i].state <= TASK_RUNNING) tasks[r->tasks[i].state]++;
    }
    const char *lab[2] = {"state", NULL};
    loom_prom_family(b, "loom_runs", "gauge", "Runs in flight, by state.");
    lab[1] = "queued";
    loom_prom_sample(b, "loom_runs", lab, 1, (double)runs[0]);
    lab[1] = "running";
    loom_prom_sample(b, "loom_runs", lab, 1, (double)runs[1]);
    loom_prom_family(b, "loom_runs_ended_total", "counter",
                     "Runs that ended since loomd started, by final state.");
    for (int i = 0; i < N_RUN_END; i++) {
        lab[1] = run_end_states[i];
        loom_prom_sample(b, "loom_runs_ended_total", lab, 1, (double)m->runs_ended[i]);
    }
    static const char *const live[] = {"pending", "queued", "running"};
    loom_prom_family(b, "loom_tasks", "gauge", "Tasks of the runs in flight that have not ended.");
    for (int i = 0; i < 3; i++) {
        lab[1] = live[i];
        loom_prom_sample(b, "loom_tasks", lab, 1, (double)tasks[i]);
    }
    loom_prom_family(b, "loom_tasks_ended_total", "counter",
                     "Tasks that ended since loomd started, by final state.");
    for (int i = 0; i < N_TASK_END; i++) {
        lab[1] = task_end_states[i];
        loom_prom_sample(b, "loom_tasks_ended_total", lab, 1, (double)m->tasks_ended[i]);
    }
    loom_prom_family(b, "loom_queue_depth", "gauge",
                     "Tasks ready to run and waiting for an agent (or for a retry delay).");
    loom_prom_sample(b, "loom_queue_depth", NULL, 0, (double)tasks[1]);
    loom_prom_family(b, "loom_dispatch_latency_seconds", "histogram",
                     "Time from a task becoming ready to its dispatch to an agent.");
    loom_prom_histogram(b, "loom_dispatch_latency_seconds", NULL, 0, &m->dispatch);
    loom_prom_family(b, "loom_trigger_start_latency_seconds", "histogram",
                     "Time from a trigger creating a run (an event received, a schedule or data "
                     "firing) to the run's first task process starting.");
    for (int i = 0; i < N_KINDS; i++) {
        const char *kl[2] = {"kind", trigger_kinds[i]};
        loom_prom_histogram(b, "loom_trigger_start_latency_seconds", kl, 1, &m->trigger_start[i]);
    }
    loom_prom_family(b, "loom_trigger_decisions_total", "counter",
                     "Trigger firings by kind and the admission decision taken (started, "
                     "queued, debounced, skipped, filtered, failed).");
    for (size_t i = 0; i < m->n_decisions; i++) {
        const char *dl[4] = {"kind", m->decisions[i].kind, "decision", m->decisions[i].decision};
        loom_prom_sample(b, "loom_trigger_decisions_total", dl, 2, (double)m->decisions[i].n);
    }
}

static void agent_sample(loom_buf_t *b, const char *name, const char *agent, const char *gpu,
                         double v)
{
    const char *l[4] = {"agent", agent, "gpu", gpu};
    loom_prom_sample(b, name, l, gpu ? 2 : 1, v);
}

typedef struct {
    const char *name, *type, *help;
} family_t;

static const family_t agent_families[] = {
    {"loom_agent_up", "gauge", "1 while the agent is connected, else 0."},
    {"loom_agent_tasks_running", "gauge", "Attempts placed on the agent and not ended."},
    {"loom_agent_cpus", "gauge", "CPUs the agent offers."},
    {"loom_agent_cpus_reserved", "gauge", "CPUs reserved by the attempts placed on the agent."},
    {"loom_agent_load1", "gauge", "The agent machine's 1-minute load average (heartbeat)."},
    {"loom_agent_memory_bytes", "gauge", "Memory the agent offers."},
    {"loom_agent_memory_reserved_bytes", "gauge", "Memory reserved by the attempts placed there."},
    {"loom_agent_memory_available_bytes", "gauge",
     "Memory available on the agent machine (heartbeat)."},
    {"loom_agent_gpu_memory_bytes", "gauge", "A GPU's total memory."},
    {"loom_agent_gpu_reserved", "gauge",
     "1 while a GPU is reserved by an exclusive attempt; else the number of shared attempts."},
    {"loom_agent_gpu_utilization_ratio", "gauge", "A GPU's utilisation, 0 to 1 (heartbeat)."},
    {"loom_agent_gpu_memory_used_bytes", "gauge", "GPU memory in use (heartbeat)."},
};
#define N_AGENT_FAMILIES (sizeof agent_families / sizeof agent_families[0])

static void agent_family_samples(loom_sched_t *s, loom_buf_t *b, size_t f)
{
    const char *name = agent_families[f].name;
    for (size_t i = 0; i < s->n_agent_list; i++) {
        const agent_t *a = s->agent_list[i];
        bool up = a->state == AGENT_CONNECTED;
        json_t *u = a->usage;
        if (f == 0) agent_sample(b, name, a->name, NULL, up);
        if (!up) continue; /* no stale figures for agents that are gone */
        switch (f) {
        case 1:
            agent_sample(b, name, a->name, NULL, a->running);
            break;
        case 2:
            agent_sample(b, name, a->name, NULL, a->cpus_total);
            break;
        case 3:
            agent_sample(b, name, a->name, NULL, a->cpus_used);
            break;
        case 4:
            if (u)
                agent_sample(b, name, a->name, NULL, json_real_value(json_object_get(u, "load1")));
            break;
        case 5:
            agent_sample(b, name, a->name, NULL, (double)a->memory_bytes);
            break;
        case 6:
            agent_sample(b, name, a->name, NULL, (double)a->memory_used);
            break;
        case 7:
            if (u)
                agent_sample(
                    b, name, a->name, NULL,
                    (double)json_integer_value(json_object_get(u, "memory_available_bytes")));
            break;
        case 8:
        case 9:
            for (uint32_t g = 0; g < a->n_gpus; g++) {
                char idx[16];
                snprintf(idx, sizeof idx, "%u", a->gpus[g].index);
                double v = f == 8            ? (double)a->gpus[g].memory_bytes
                           : a->gpus[g].busy ? 1
                                             : (double)a->gpus[g].shared_count;
                agent_sample(b, name, a->name, idx, v);
            }
            break;
        default: {
            json_t *gpus = u ? json_object_get(u, "gpus") : NULL;
            size_t k;
            json_t *g;
            json_array_foreach(gpus, k, g)
            {
                char idx[16];
                snprintf(idx, sizeof idx, "%lld",
                         (long long)json_integer_value(json_object_get(g, "index")));
                double v =
                    f == 10
                        ? (double)json_integer_value(json_object_get(g, "utilization_percent")) /
                              100
                        : (double)json_integer_value(json_object_get(g, "memory_used_bytes"));
                agent_sample(b, name, a->name, idx, v);
            }
        }
        }
    }
}

static void render_agents(loom_sched_t *s, loom_buf_t *b)
{
    uint64_t by_state[3] = {0, 0, 0};
    static const char *const names[] = {"connected", "disconnected", "lost"};
    for (size_t i = 0; i < s->n_agent_list; i++)
        if ((unsigned)s->agent_list[i]->state < 3) by_state[s->agent_list[i]->state]++;
    loom_prom_family(b, "loom_agents", "gauge", "Known agents, by state.");
    for (int i = 0; i < 3; i++) {
        const char *l[2] = {"state", names[i]};
        loom_prom_sample(b, "loom_agents", l, 1, (double)by_state[i]);
    }
    for (size_t f = 0; f < N_AGENT_FAMILIES; f++) {
        loom_prom_family(b, agent_families[f].name, agent_families[f].type, agent_families[f].help);
        agent_family_samples(s, b, f);
    }
}

static void render_http(loom_metrics_t *m, loom_buf_t *b)
{
    loom_prom_family(b, "loom_http_requests_total", "counter",
                     "HTTP requests answered, by method, route pattern and status code.");
    for (size_t i = 0; i < m->n_http; i++) {
        char code[8];
        snprintf(code, sizeof code, "%u", m->http[i].status);
        const char *l[6] = {"method", m->http[i].method, "route", m->http[i].route, "code", code};
        loom_prom_sample(b, "loom_http_requests_total", l, 3, (double)m->http[i].n);
    }
    loom_prom_family(b, "loom_http_request_duration_seconds", "histogram",
                     "Time from a request's headers to the end of its response, by method and "
                     "route pattern (long polls and followed logs included).");
    for (size_t i = 0; i < m->n_http_h; i++) {
        const char *l[4] = {"method", m->http_h[i].method, "route", m->http_h[i].route};
        loom_prom_histogram(b, "loom_http_request_duration_seconds", l, 2, &m->http_h[i].h);
    }
}

void loom_metrics_render(loom_sched_t *s, loom_metrics_t *m, uv_loop_t *loop, loom_buf_t *b)
{
    refresh_sizes(m, loop, loom_mono_ms());
    const char *v[2] = {"version", LOOM_VERSION};
    loom_prom_family(b, "loom_build_info", "gauge", "Always 1; the loomd version as a label.");
    loom_prom_sample(b, "loom_build_info", v, 1, 1);
    render_runs(s, m, b);
    render_agents(s, b);
    loom_prom_family(b, "loom_log_bytes", "gauge",
                     "Bytes of task logs stored (measured at most every 30 s).");
    loom_prom_sample(b, "loom_log_bytes", NULL, 0, (double)m->log_bytes);
    loom_prom_family(b, "loom_object_bytes", "gauge",
                     "Bytes of artifacts and code bundles in the object store (measured at most "
                     "every 30 s).");
    loom_prom_sample(b, "loom_object_bytes", NULL, 0, (double)m->object_bytes);
    render_http(m, b);
    render_process(b);
}
