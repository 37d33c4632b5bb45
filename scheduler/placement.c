/* Placement: which connected agent runs a queued task, and on which GPUs.
 *
 * Queued tasks wait in one FIFO per (run, DAG task): copies of one DAG task
 * ask for the same resources at the same priority, so placement only ever
 * looks at the first task of each queue, and a queue whose first task does
 * not fit is passed over as a whole (other queues' smaller tasks backfill).
 * Among queues, the highest priority goes first; at equal priority the
 * pipeline with the fewest attempts in flight goes first, so one pipeline's
 * 10,000-task fan-out cannot starve another's retrain. Among agents, best
 * fit: GPU machines are kept for GPU work, and the agent left with the
 * least unused capacity wins. */
#include "sched_internal.h"

#include "loom/err.h"
#include "loom/log.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- agents' resources ------------------------------------------------------- */

void agent_free_resources(agent_t *a)
{
    for (uint32_t i = 0; i < a->n_gpus; i++) {
        free(a->gpus[i].uuid);
        free(a->gpus[i].model);
    }
    free(a->gpus);
    for (size_t i = 0; i < a->n_labels; i++) {
        free(a->labels[i].name);
        free(a->labels[i].value);
    }
    free(a->labels);
    free(a->gpu_source);
    json_decref(a->usage);
    a->gpus = NULL;
    a->n_gpus = 0;
    a->labels = NULL;
    a->n_labels = 0;
    a->gpu_source = NULL;
    a->usage = NULL;
}

void agent_set_resources(agent_t *a, const Loom__Resources *res)
{
    /* GPUs in use by attempts still running keep their reservation: the
     * agent came back with the same devices (or its attempts are lost). */
    /* Reservations are rebuilt from the attempts by placement_mark_gpus. */
    json_t *usage = json_incref(a->usage);
    agent_free_resources(a);
    a->usage = usage;
    if (!res) return;
    a->cpus_total = res->cpus_usable > 0 ? res->cpus_usable : (double)res->cpus;
    a->memory_bytes = res->memory_bytes;
    a->gpu_source = loom_xstrdup(res->gpu_source ? res->gpu_source : "");
    a->n_gpus = (uint32_t)(res->n_gpus < 64 ? res->n_gpus : 64);
    a->gpus = loom_xcalloc(a->n_gpus ? a->n_gpus : 1, sizeof *a->gpus);
    for (uint32_t i = 0; i < a->n_gpus; i++) {
        const Loom__Gpu *g = res->gpus[i];
        a->gpus[i].index = g->index;
        a->gpus[i].uuid = loom_xstrdup(g->uuid ? g->uuid : "");
        a->gpus[i].model = loom_xstrdup(g->model ? g->model : "");
        a->gpus[i].memory_bytes = g->memory_bytes;
    }
    a->n_labels = res->n_labels;
    a->labels = loom_xcalloc(a->n_labels ? a->n_labels : 1, sizeof *a->labels);
    for (size_t i = 0; i < res->n_labels; i++) {
        a->labels[i].name = loom_xstrdup(res->labels[i]->key);
        a->labels[i].value = loom_xstrdup(res->labels[i]->value);
    }
}

static bool has_label(const agent_t *a, const loom_env_t *want)
{
    for (size_t i = 0; i < a->n_labels; i++)
        if (strcmp(a->labels[i].name, want->name) == 0 &&
            strcmp(a->labels[i].value, want->value) == 0)
            return true;
    return false;
}

static bool gpu_matches(const gpu_t *g, const loom_dag_resources_t *r)
{
    if (r->gpu_model && !strcasestr(g->model, r->gpu_model)) return false;
    return g->memory_bytes >= r->gpu_memory_bytes;
}

/* GPUs of a that match r: all of them, or only the free ones. */
/* GPUs of a that match r: all of them, or only the free ones. Busy GPUs
 * are skipped before their model is compared: this sits on the hot path. */
/* Whether g can take a task asking for r now. A shared request fits next
 * to other shared tasks while their gpu_memory adds up; an exclusive one
 * needs the GPU to itself. */
static bool gpu_free_for(const gpu_t *g, const loom_dag_resources_t *r)
{
    if (g->busy) return false;
    if (r->gpu_shared)
        return g->memory_bytes - g->shared_used >= r->gpu_memory_bytes && gpu_matches(g, r);
    return g->shared_count == 0 && gpu_matches(g, r);
}

/* GPUs of a that match r: all of them, or only those free for it. Busy
 * GPUs are skipped before their model is compared: this is the hot path. */
static uint32_t matching_gpus(const agent_t *a, const loom_dag_resources_t *r, bool free_only)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < a->n_gpus; i++)
        if (free_only ? gpu_free_for(&a->gpus[i], r) : gpu_matches(&a->gpus[i], r)) n++;
    return n;
}

static bool labels_match(const agent_t *a, const loom_dag_resources_t *r)
{
    for (size_t i = 0; i < r->n_labels; i++)
        if (!has_label(a, &r->labels[i])) return false;
    return true;
}

/* Whether a could run it at all, were it idle. */
static bool could_fit(const agent_t *a, const loom_dag_resources_t *r)
{
    return labels_match(a, r) && r->cpus <= a->cpus_total + 1e-9 &&
           r->memory_bytes <= a->memory_bytes && matching_gpus(a, r, false) >= r->gpus;
}

static bool schedulable(const agent_t *a)
{
    return a->state == AGENT_CONNECTED && !a->cordoned && !a->draining && !a->held_off &&
           a->running < a->slots;
}

/* Whether r fits on a now; *free_gpus gets a's matching free GPUs. */
static bool fits_now(const agent_t *a, const loom_dag_resources_t *r, uint32_t *free_gpus)
{
    if (!schedulable(a) || r->cpus > a->cpus_total - a->cpus_used + 1e-9 ||
        r->memory_bytes > a->memory_bytes - a->memory_used || a->n_gpus < r->gpus ||
        !labels_match(a, r))
        return false;
    *free_gpus = r->gpus || a->n_gpus ? matching_gpus(a, r, true) : 0;
    return *free_gpus >= r->gpus;
}

/* Lower is better: keep GPU machines for GPU work, then leave the least
 * capacity unused (best fit), so large requests find room later. */
/* Lower is better: keep GPU machines for GPU work, then leave the least
 * capacity unused (best fit), so large requests find room later. */
static double fit_score(const agent_t *a, const loom_dag_resources_t *r, uint32_t free_gpus)
{
    double score = 0;
    if (a->n_gpus && !r->gpus) score += 1000;
    score += 10.0 * (free_gpus - r->gpus);
    if (a->cpus_total > 0) score += (a->cpus_total - a->cpus_used - r->cpus) / a->cpus_total;
    if (a->memory_bytes)
        score +=
            (double)(a->memory_bytes - a->memory_used - r->memory_bytes) / (double)a->memory_bytes;
    score += (double)(a->running + 1) / (double)(a->slots ? a->slots : 1) * 0.01;
    return score;
}

static agent_t *best_agent(loom_sched_t *s, const loom_dag_resources_t *r)
{
    agent_t *best = NULL;
    double best_score = INFINITY;
    for (size_t i = 0; i < s->n_agent_list; i++) {
        agent_t *a = s->agent_list[i];
        uint32_t free_gpus;
        if (!fits_now(a, r, &free_gpus)) continue;
        double score = fit_score(a, r, free_gpus);
        if (score < best_score) {
            best = a;
            best_score = score;
        }
    }
    return best;
}

/* --- prefetch ---------------------------------------------------------------------------- */

/* An agent that prefetches holds up to `prefetch` Dispatches beyond its
 * slots and starts each the moment a slot frees, saving the round trip to
 * loomd between one short task and the next. Only where no agent has room
 * now, and only for tasks that need no GPU and no pool (those are assigned
 * at placement). The agent starts them by slots alone, oldest first, and
 * placement_promote does the same, so both sides agree on what runs. */
static bool backlog_room(const agent_t *a)
{
    return a->state == AGENT_CONNECTED && !a->cordoned && !a->draining && !a->held_off &&
           a->queued < a->prefetch;
}

static bool prefetchable(const loom_dag_resources_t *r)
{
    return r->gpus == 0 && !r->gpu_shared && !r->pool;
}

static bool backlog_fits(const agent_t *a, const loom_dag_resources_t *r)
{
    return backlog_room(a) && prefetchable(r) && could_fit(a, r);
}

/* The agent with the shortest backlog that could run r. */
static agent_t *backlog_agent(loom_sched_t *s, const loom_dag_resources_t *r)
{
    agent_t *best = NULL;
    for (size_t i = 0; i < s->n_agent_list; i++) {
        agent_t *a = s->agent_list[i];
        if (backlog_fits(a, r) && (!best || a->queued < best->queued)) best = a;
    }
    return best;
}

static void promote(loom_sched_t *s, agent_t *a, attempt_t *x)
{
    link_remove(&x->in_backlog);
    x->queued = false;
    a->queued--;
    s->backlog_total--;
    if (x->withdrawing) {
        /* Started (or about to) where it was: the withdrawal will be
         * ignored by the agent. */
        x->withdrawing = false;
        s->withdrawing--;
    }
    a->running++;
    placement_reserve(s, a, x);
    /* Its backlog has room again. */
    placement_agent_freed(s, a);
}

void placement_promote(loom_sched_t *s, agent_t *a)
{
    while (!link_empty(&a->backlog) && a->running < a->slots)
        promote(s, a, CONTAINER_OF(a->backlog.next, attempt_t, in_backlog));
}

static int by_id_newest_first(const void *x, const void *y)
{
    uint64_t a = (*(attempt_t *const *)x)->id, b = (*(attempt_t *const *)y)->id;
    return a < b ? 1 : a > b ? -1 : 0;
}

void placement_rebuild_backlog(loom_sched_t *s, agent_t *a, const uint64_t *held, size_t n_held)
{
    if (!a->prefetch) return;
    size_t n = 0;
    attempt_t **v = loom_xmalloc((n_held + 1) * sizeof *v);
    for (link_t *l = a->attempts.next; l != &a->attempts && n < n_held; l = l->next) {
        attempt_t *x = CONTAINER_OF(l, attempt_t, on_agent);
        if (!x->queued && ids_contain(held, n_held, x->id)) v[n++] = x;
    }
    size_t k = 0;
    if (n > a->slots) {
        qsort(v, n, sizeof *v, by_id_newest_first);
        while (k < n - a->slots && v[k]->state == ATT_DISPATCHED &&
               prefetchable(&dag_task(v[k]->task)->resources))
            k++;
    }
    /* Oldest first, as the agent will start them. */
    for (size_t i = k; i-- > 0;) {
        attempt_t *x = v[i];
        placement_release(s, x);
        if (a->running) a->running--;
        x->queued = true;
        link_push(&a->backlog, &x->in_backlog);
        a->queued++;
        s->backlog_total++;
    }
    if (k)
        LOG_INFO("agent %s holds %zu attempt(s) beyond its %u slot(s): back in its backlog",
                 a->name, k, a->slots);
    free(v);
}

void placement_started(loom_sched_t *s, attempt_t *x)
{
    /* The agent freed a slot before loomd heard of it: it counts now. */
    if (x->queued) promote(s, x->agent, x);
}

/* --- pools and fair share ---------------------------------------------------------- */

static pool_t *pool_of(loom_sched_t *s, const loom_dag_resources_t *r)
{
    return r->pool ? loom_smap_get(&s->pools, r->pool) : NULL;
}

static bool pool_full(loom_sched_t *s, const loom_dag_resources_t *r)
{
    pool_t *p = pool_of(s, r);
    return p && p->used >= p->limit;
}

static uint32_t pipeline_running(loom_sched_t *s, uint64_t pipeline_id)
{
    return (uint32_t)(uintptr_t)loom_map_get(&s->pipeline_running, pipeline_id);
}

static void pipeline_running_add(loom_sched_t *s, uint64_t pipeline_id, int delta)
{
    uint32_t n = pipeline_running(s, pipeline_id);
    n = delta > 0 ? n + 1 : (n ? n - 1 : 0);
    if (n)
        loom_map_put(&s->pipeline_running, pipeline_id, (void *)(uintptr_t)n);
    else
        loom_map_del(&s->pipeline_running, pipeline_id);
}

/* --- queues ---------------------------------------------------------------------------- */

/* The queues of one pipeline that hold tasks, by priority (highest first)
 * then age: the first that fits is that pipeline's best. Fair share picks
 * between pipelines, so there are only ever as many of these to compare as
 * pipelines with queued work, however many queues each has. */
struct pgroup {
    uint64_t pipeline_id;
    link_t queues;
    link_t link; /* in s->groups while it has queues */
};

static tq_t *tq_of(task_t *t)
{
    run_t *r = t->run;
    if (!r->tqs) {
        r->tqs = loom_xcalloc(r->dag->n_tasks, sizeof *r->tqs);
        for (size_t i = 0; i < r->dag->n_tasks; i++) {
            r->tqs[i].run = r;
            r->tqs[i].dag_idx = (uint32_t)i;
            link_init(&r->tqs[i].tasks);
            link_init(&r->tqs[i].active);
        }
    }
    return &r->tqs[t->dag_idx];
}

void tq_free(tq_t *q)
{
    free(q->reason);
    q->reason = NULL;
}

static int32_t tq_priority(const tq_t *q)
{
    return q->run->dag->tasks[q->dag_idx].priority;
}

static struct pgroup *group_for(loom_sched_t *s, uint64_t pipeline_id)
{
    struct pgroup *g = loom_map_get(&s->group_of, pipeline_id);
    if (!g) {
        g = loom_xcalloc(1, sizeof *g);
        g->pipeline_id = pipeline_id;
        link_init(&g->queues);
        link_init(&g->link);
        loom_map_put(&s->group_of, pipeline_id, g);
    }
    return g;
}

static void activate(loom_sched_t *s, tq_t *q)
{
    struct pgroup *g = group_for(s, q->run->pipeline_id);
    q->group = g;
    q->since = ++s->tq_seq;
    /* From the back: new queues are the youngest, so this stops at once
     * unless a higher priority is behind. */
    link_t *l = g->queues.prev;
    while (l != &g->queues && tq_priority(CONTAINER_OF(l, tq_t, active)) < tq_priority(q))
        l = l->prev;
    link_push(l->next, &q->active); /* after l */
    if (link_empty(&g->link)) link_push(&s->groups, &g->link);
}

void placement_queue(loom_sched_t *s, task_t *t)
{
    tq_t *q = tq_of(t);
    if (link_empty(&q->tasks)) activate(s, q);
    link_push(&q->tasks, &t->in_queue);
    t->in_tq = true;
    if (!t->ready_ns) t->ready_ns = uv_hrtime();
    q->fresh = true;
}

void placement_unqueue(loom_sched_t *s, task_t *t)
{
    (void)s;
    if (!t->in_tq) return;
    tq_t *q = tq_of(t);
    link_remove(&t->in_queue);
    t->in_tq = false;
    if (!link_empty(&q->tasks)) return;
    link_remove(&q->active);
    if (link_empty(&q->group->queues)) link_remove(&q->group->link);
}

static const loom_dag_resources_t *tq_request(const tq_t *q)
{
    return &q->run->dag->tasks[q->dag_idx].resources;
}

/* Whether queue a should be served before queue b. */
static bool tq_before(loom_sched_t *s, const tq_t *a, const tq_t *b)
{
    int32_t pa = tq_priority(a), pb = tq_priority(b);
    if (pa != pb) return pa > pb;
    uint32_t ra = pipeline_running(s, a->run->pipeline_id);
    uint32_t rb = pipeline_running(s, b->run->pipeline_id);
    if (ra != rb) return ra < rb;
    return a->since < b->since;
}

/* Requests that did not fit, remembered for one pass: thousands of queues
 * usually ask for the same few things. Only plain requests are compared. */
typedef struct {
    const loom_dag_resources_t *r[8];
    size_t n;
} misses_t;

static bool same_request(const loom_dag_resources_t *a, const loom_dag_resources_t *b)
{
    return a->cpus == b->cpus && a->memory_bytes == b->memory_bytes && a->gpus == b->gpus &&
           a->gpu_memory_bytes == b->gpu_memory_bytes && !a->n_labels && !b->n_labels && !a->pool &&
           !b->pool &&
           (a->gpu_model == b->gpu_model ||
            (a->gpu_model && b->gpu_model && strcmp(a->gpu_model, b->gpu_model) == 0));
}

static bool missed(const misses_t *m, const loom_dag_resources_t *r)
{
    for (size_t i = 0; i < m->n; i++)
        if (m->r[i] == r || same_request(m->r[i], r)) return true;
    return false;
}

static void remember_miss(misses_t *m, const loom_dag_resources_t *r)
{
    if (m->n < sizeof m->r / sizeof m->r[0]) m->r[m->n++] = r;
}

/* The best queue, by tq_before, whose first task fits on a now. */
static tq_t *best_queue_for(loom_sched_t *s, agent_t *a, bool backlog)
{
    tq_t *best = NULL;
    misses_t misses = {0};
    for (link_t *gl = s->groups.next; gl != &s->groups; gl = gl->next) {
        struct pgroup *g = CONTAINER_OF(gl, struct pgroup, link);
        for (link_t *l = g->queues.next; l != &g->queues; l = l->next) {
            tq_t *q = CONTAINER_OF(l, tq_t, active);
            if (best && tq_priority(q) < tq_priority(best)) break;
            const loom_dag_resources_t *r = tq_request(q);
            uint32_t free_gpus;
            if (missed(&misses, r)) continue;
            bool fits =
                backlog ? backlog_fits(a, r) : !pool_full(s, r) && fits_now(a, r, &free_gpus);
            if (!fits) {
                remember_miss(&misses, r);
                continue;
            }
            if (!best || tq_before(s, q, best)) best = q;
            break; /* later queues of this pipeline come after this one */
        }
    }
    return best;
}

/* --- placing ---------------------------------------------------------------------------- */

void placement_agent_freed(loom_sched_t *s, agent_t *a)
{
    if (a->in_freed) return;
    if (s->n_freed == s->cap_freed) {
        s->cap_freed = s->cap_freed ? s->cap_freed * 2 : 16;
        s->freed = loom_xrealloc(s->freed, s->cap_freed * sizeof *s->freed);
    }
    s->freed[s->n_freed++] = a;
    a->in_freed = true;
}

static void place_first(loom_sched_t *s, tq_t *q, agent_t *a, bool queued)
{
    task_t *t = CONTAINER_OF(q->tasks.next, task_t, in_queue);
    placement_unqueue(s, t);
    dispatch_task(s, t, a, queued);
}

/* Where capacity grew on one agent, only that agent can take a queue that
 * was passed over before: fill it from the queues, best first. */
static void fill_freed_agents(loom_sched_t *s, agent_t ***backlogs, size_t *n_backlogs)
{
    while (s->n_freed) {
        agent_t *a = s->freed[--s->n_freed];
        a->in_freed = false;
        tq_t *q;
        while (schedulable(a) && (q = best_queue_for(s, a, false)) != NULL)
            place_first(s, q, a, false);
        if (backlog_room(a)) {
            *backlogs = loom_xrealloc(*backlogs, (*n_backlogs + 1) * sizeof **backlogs);
            (*backlogs)[(*n_backlogs)++] = a;
        }
    }
}

/* Backlogs last: a task goes into one only once no free slot anywhere can
 * take it (the freed agents and the fresh queues have had their turn). */
static void fill_backlogs(loom_sched_t *s, agent_t **agents, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        tq_t *q;
        while (backlog_room(agents[i]) && (q = best_queue_for(s, agents[i], true)) != NULL)
            place_first(s, q, agents[i], true);
    }
}

static int by_running(const void *x, const void *y, void *ud)
{
    loom_sched_t *s = ud;
    uint32_t a = pipeline_running(s, (*(struct pgroup *const *)x)->pipeline_id);
    uint32_t b = pipeline_running(s, (*(struct pgroup *const *)y)->pipeline_id);
    return a < b ? -1 : a > b;
}

/* Places the tasks of one fresh queue anywhere they fit; false when the
 * queue is left with tasks (it is then fresh no more). */
static void place_fresh_queue(loom_sched_t *s, tq_t *q, misses_t *misses)
{
    const loom_dag_resources_t *r = tq_request(q);
    q->fresh = false;
    while (!link_empty(&q->tasks)) {
        agent_t *a = NULL;
        bool queued = false;
        if (!missed(misses, r) && !pool_full(s, r)) a = best_agent(s, r);
        if (!a && !missed(misses, r) && (a = backlog_agent(s, r)) != NULL) queued = true;
        if (!a) {
            remember_miss(misses, r);
            return;
        }
        place_first(s, q, a, queued);
    }
}

/* Queues with new tasks have not been tried against every agent yet.
 * Pipelines go fewest-in-flight first, each pipeline's queues in order. */
static void place_fresh_queues(loom_sched_t *s)
{
    size_t n = 0, cap = 8;
    struct pgroup **groups = loom_xmalloc(cap * sizeof *groups);
    for (link_t *gl = s->groups.next; gl != &s->groups; gl = gl->next) {
        if (n == cap) groups = loom_xrealloc(groups, (cap *= 2) * sizeof *groups);
        groups[n++] = CONTAINER_OF(gl, struct pgroup, link);
    }
    qsort_r(groups, n, sizeof *groups, by_running, s);
    misses_t misses = {0};
    for (size_t i = 0; i < n; i++) {
        link_t *l = groups[i]->queues.next;
        while (l != &groups[i]->queues) {
            tq_t *q = CONTAINER_OF(l, tq_t, active);
            l = l->next; /* q may leave the list once empty */
            if (q->fresh) place_fresh_queue(s, q, &misses);
        }
    }
    free(groups);
}

/* A slot free on one agent while tasks wait in another's backlog: ask the
 * newest of them back (the agent hands it back only if it has not started
 * it) so that it runs on the free slot instead. At most as many asked back
 * at once as there are free slots that could take them. */
static void steal_for_free_slots(loom_sched_t *s)
{
    if (s->backlog_total == 0) return;
    uint32_t free_slots = 0;
    for (size_t i = 0; i < s->n_agent_list; i++) {
        const agent_t *b = s->agent_list[i];
        if (schedulable(b)) free_slots += b->slots - b->running;
    }
    for (size_t i = 0; i < s->n_agent_list && s->withdrawing < free_slots; i++) {
        agent_t *a = s->agent_list[i];
        for (link_t *l = a->backlog.prev; l != &a->backlog && s->withdrawing < free_slots;
             l = l->prev) {
            attempt_t *x = CONTAINER_OF(l, attempt_t, in_backlog);
            if (x->withdrawing) continue;
            const loom_dag_resources_t *r = &dag_task(x->task)->resources;
            agent_t *to = NULL;
            for (size_t j = 0; j < s->n_agent_list && !to; j++) {
                agent_t *b = s->agent_list[j];
                uint32_t free_gpus;
                if (b != a && fits_now(b, r, &free_gpus)) to = b;
            }
            if (!to) continue;
            char why[160];
            snprintf(why, sizeof why, "agent %s has a free slot", to->name);
            LOG_DEBUG("withdrawing attempt=%llu task=%s from agent=%s: %s",
                      (unsigned long long)x->id, x->task->name, a->name, why);
            x->withdrawing = x->asked_back = true;
            s->withdrawing++;
            sched_withdraw(s, x, why);
        }
    }
}

void dispatch_ready(loom_sched_t *s)
{
    /* Every queue has been tried against every agent when it got tasks (a
     * fresh queue); after that it can only fit where capacity grows. So
     * two passes: agents whose capacity grew against all queues, then
     * fresh queues against all agents. While the disk is nearly full
     * nothing new starts; sched_disk_poll calls again once space is back. */
    if (sched_disk_low(s)) return;
    agent_t **backlogs = NULL;
    size_t n_backlogs = 0;
    fill_freed_agents(s, &backlogs, &n_backlogs);
    place_fresh_queues(s);
    fill_backlogs(s, backlogs, n_backlogs);
    free(backlogs);
    steal_for_free_slots(s);
}

/* --- reserving ------------------------------------------------------------------------ */

void placement_mark_gpus(agent_t *a, const attempt_t *x)
{
    for (uint32_t i = 0; i < x->n_gpus; i++)
        for (uint32_t j = 0; j < a->n_gpus; j++) {
            gpu_t *g = &a->gpus[j];
            if (g->index != x->gpus[i]) continue;
            if (x->gpu_shared_mem) {
                g->shared_count++;
                g->shared_used += x->gpu_shared_mem;
            } else {
                g->busy = x->id;
            }
        }
}

void placement_reserve(loom_sched_t *s, agent_t *a, attempt_t *x)
{
    const loom_dag_resources_t *r = &dag_task(x->task)->resources;
    x->cpus = r->cpus;
    x->memory_bytes = r->memory_bytes;
    a->cpus_used += r->cpus;
    a->memory_used += r->memory_bytes;
    x->gpu_shared_mem = r->gpu_shared ? r->gpu_memory_bytes : 0;
    if (x->gpus) {
        /* Recovered after a restart: the GPUs it was given stay its own. */
        placement_mark_gpus(a, x);
    } else if (r->gpu_shared) {
        /* Best fit: the GPU with the least room left that still has enough. */
        gpu_t *best = NULL;
        for (uint32_t i = 0; i < a->n_gpus; i++) {
            gpu_t *g = &a->gpus[i];
            if (gpu_free_for(g, r) && (!best || g->memory_bytes - g->shared_used <
                                                    best->memory_bytes - best->shared_used))
                best = g;
        }
        x->gpus = loom_xcalloc(1, sizeof *x->gpus);
        if (best) x->gpus[x->n_gpus++] = best->index;
        placement_mark_gpus(a, x);
    } else {
        x->gpus = loom_xcalloc(r->gpus ? r->gpus : 1, sizeof *x->gpus);
        for (uint32_t i = 0; i < a->n_gpus && x->n_gpus < r->gpus; i++) {
            gpu_t *g = &a->gpus[i];
            if (!gpu_free_for(g, r)) continue;
            g->busy = x->id;
            x->gpus[x->n_gpus++] = g->index;
        }
    }
    pool_t *p = pool_of(s, r);
    if (p) {
        p->used++;
        x->pool = loom_xstrdup(p->name);
    }
    pipeline_running_add(s, x->run->pipeline_id, +1);
}

/* A pool slot freed: its queues may now fit anywhere, so try them again
 * against every agent. */
static void pool_freed(loom_sched_t *s, const char *pool)
{
    for (link_t *gl = s->groups.next; gl != &s->groups; gl = gl->next) {
        struct pgroup *g = CONTAINER_OF(gl, struct pgroup, link);
        for (link_t *l = g->queues.next; l != &g->queues; l = l->next) {
            tq_t *q = CONTAINER_OF(l, tq_t, active);
            const char *p = tq_request(q)->pool;
            if (p && strcmp(p, pool) == 0) q->fresh = true;
        }
    }
}

void placement_release(loom_sched_t *s, attempt_t *x)
{
    agent_t *a = x->agent;
    if (x->queued) {
        /* Held no slot and reserved nothing: only its backlog place. */
        link_remove(&x->in_backlog);
        x->queued = false;
        a->queued--;
        s->backlog_total--;
        placement_agent_freed(s, a);
        return;
    }
    a->cpus_used = a->cpus_used > x->cpus ? a->cpus_used - x->cpus : 0;
    a->memory_used = a->memory_used > x->memory_bytes ? a->memory_used - x->memory_bytes : 0;
    for (uint32_t i = 0; i < x->n_gpus; i++)
        for (uint32_t j = 0; j < a->n_gpus; j++) {
            gpu_t *g = &a->gpus[j];
            if (g->index != x->gpus[i]) continue;
            if (x->gpu_shared_mem && g->shared_count) {
                g->shared_count--;
                g->shared_used -=
                    x->gpu_shared_mem < g->shared_used ? x->gpu_shared_mem : g->shared_used;
            } else if (g->busy == x->id) {
                g->busy = 0;
            }
        }
    if (x->pool) {
        pool_t *p = loom_smap_get(&s->pools, x->pool);
        if (p && p->used) p->used--;
    }
    pipeline_running_add(s, x->run->pipeline_id, -1);
    placement_agent_freed(s, a);
    if (x->pool) pool_freed(s, x->pool);
    free(x->gpus);
    free(x->pool);
    x->gpus = NULL;
    x->pool = NULL;
    x->n_gpus = 0;
    s->capacity_epoch++;
}

/* --- explaining --------------------------------------------------------------------------- */

static void describe_request(const loom_dag_resources_t *r, loom_buf_t *b)
{
    char size[32];
    const char *sep = "";
    if (r->gpus) {
        loom_buf_printf(b, "%u GPU%s", r->gpus, r->gpus == 1 ? "" : "s");
        if (r->gpu_model) loom_buf_printf(b, " (%s)", r->gpu_model);
        if (r->gpu_memory_bytes) {
            loom_format_size(r->gpu_memory_bytes, size, sizeof size);
            loom_buf_printf(b, " with ≥ %s", size);
        }
        sep = ", ";
    }
    if (r->cpus > 0) {
        loom_buf_printf(b, "%s%g CPUs", sep, r->cpus);
        sep = ", ";
    }
    if (r->memory_bytes) {
        loom_format_size(r->memory_bytes, size, sizeof size);
        loom_buf_printf(b, "%s%s memory", sep, size);
        sep = ", ";
    }
    for (size_t i = 0; i < r->n_labels; i++) {
        loom_buf_printf(b, "%slabel %s=%s", sep, r->labels[i].name, r->labels[i].value);
        sep = ", ";
    }
    if (!*sep) loom_buf_puts(b, "a free slot");
}

char *placement_never_fits(loom_sched_t *s, const loom_dag_resources_t *r)
{
    void *v;
    for (size_t i = 0; loom_map_next(&s->agents, &i, &v);)
        if (could_fit(v, r)) return NULL;
    loom_buf_t b = {0};
    loom_buf_puts(&b, "needs ");
    describe_request(r, &b);
    loom_buf_printf(&b, "; no known agent (of %zu) has that", s->agents.count);
    return loom_buf_steal(&b);
}

/* Why q's first task waits; recomputed when capacity has changed. */
static const char *tq_reason(loom_sched_t *s, tq_t *q)
{
    if (q->reason && q->reason_epoch == s->capacity_epoch) return q->reason;
    const loom_dag_resources_t *r = tq_request(q);
    loom_buf_t b = {0};
    uint32_t free_gpus = 0, schedulable_agents = 0, could = 0;
    void *v;
    for (size_t i = 0; loom_map_next(&s->agents, &i, &v);) {
        agent_t *a = v;
        if (could_fit(a, r)) could++;
        if (!schedulable(a)) continue;
        schedulable_agents++;
        if (labels_match(a, r)) {
            uint32_t g = matching_gpus(a, r, true);
            if (g > free_gpus) free_gpus = g;
        }
    }
    pool_t *p = pool_of(s, r);
    if (p && p->used >= p->limit) {
        loom_buf_printf(&b, "waiting: pool %s is full (%u/%u)", p->name, p->used, p->limit);
    } else {
        loom_buf_puts(&b, "waiting: needs ");
        describe_request(r, &b);
        if (!could)
            loom_buf_puts(&b, "; no connected agent could ever run it");
        else if (r->gpus)
            loom_buf_printf(&b, "; largest free: %u", free_gpus);
        else if (!schedulable_agents)
            loom_buf_puts(&b, "; no agent has a free slot");
        else
            loom_buf_puts(&b, "; no agent has that free now");
    }
    free(q->reason);
    q->reason = loom_buf_steal(&b);
    q->reason_epoch = s->capacity_epoch;
    return q->reason;
}

const char *placement_wait_reason(loom_sched_t *s, task_t *t)
{
    if (!t->in_tq) return NULL;
    return tq_reason(s, tq_of(t));
}
