/* A DAG's tasks in a stable topological order (Kahn's algorithm, lowest
 * ready index first), and when there is none, each cycle reported as the
 * path that closes it. */
#include "dag_int.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* A min-heap of task indexes: Kahn's algorithm takes the lowest ready index,
 * so the order is stable and follows the file where it can. */
static void heap_push(size_t *h, size_t *n, size_t v)
{
    size_t i = (*n)++;
    for (; i > 0 && h[(i - 1) / 2] > v; i = (i - 1) / 2) h[i] = h[(i - 1) / 2];
    h[i] = v;
}

static size_t heap_pop(size_t *h, size_t *n)
{
    size_t top = h[0], v = h[--*n], i = 0;
    for (;;) {
        size_t m = 2 * i + 1;
        if (m >= *n) break;
        if (m + 1 < *n && h[m + 1] < h[m]) m++;
        if (h[m] >= v) break;
        h[i] = h[m];
        i = m;
    }
    h[i] = v;
    return top;
}

/* Appends a task name to a cycle message, quoted only if it is not a valid
 * name (a valid one needs no escaping). */
static void cycle_name(loom_buf_t *b, const char *name)
{
    char q[LOOM_YQUOTE_MAX];
    loom_buf_puts(b, loom_name_valid(name) ? name : dag_qname(name, q));
}

/* Tarjan's strongly connected components, iterative (a chain of 100,000
 * tasks must not overflow the C stack), over the tasks Kahn's algorithm could
 * not order. Each component of two or more tasks holds at least one cycle. */
typedef struct {
    const size_t *indeg; /* > 0: not ordered */
    size_t *index, *low, *stack, *frame, *edge, *comp, *parent, *queue;
    bool *on_stack;
    size_t next, sp, n_comp;
} tarjan;

/* Reports the shortest cycle through s within its component: a breadth-first
 * search along needs until one leads back to s. parent[w] is the task that
 * needs w on the way, so from the last task back to s the chain runs the way
 * work flows, which is how the cycle is printed. */
static void report_cycle(pctx *c, tarjan *t, size_t s)
{
    enum { SHOWN = 12 };
    const loom_dag_task_t *tasks = c->dag->tasks;
    size_t head = 0, tail = 0, last = s;
    t->queue[tail++] = s;
    t->parent[s] = s;
    while (head < tail && last == s) {
        const loom_dag_task_t *v = &tasks[t->queue[head++]];
        for (size_t k = 0; k < v->n_needs && last == s; k++) {
            size_t w = v->needs_idx[k];
            if (w == s) last = (size_t)(v - tasks);
            if (t->comp[w] != t->comp[s] || t->parent[w] != SIZE_MAX) continue;
            t->parent[w] = (size_t)(v - tasks);
            t->queue[tail++] = w;
        }
    }
    loom_buf_t b = {0};
    loom_buf_puts(&b, "cycle: ");
    cycle_name(&b, tasks[s].name);
    size_t len = 1;
    for (size_t x = last; x != s; x = t->parent[x], len++) {
        if (len >= SHOWN) continue;
        loom_buf_puts(&b, " -> ");
        cycle_name(&b, tasks[x].name);
    }
    if (len > SHOWN) loom_buf_printf(&b, " -> ... (%zu more)", len - SHOWN);
    loom_buf_puts(&b, " -> ");
    cycle_name(&b, tasks[s].name);
    dag_error_pos(c, tasks[s].line, tasks[s].col, "%s", b.data);
    loom_buf_free(&b);
}

static void pop_component(pctx *c, tarjan *t, size_t root)
{
    size_t top = t->sp, lowest = root, w, id = ++t->n_comp;
    do {
        w = t->stack[--t->sp];
        t->on_stack[w] = false;
        t->comp[w] = id;
        if (w < lowest) lowest = w;
    } while (w != root);
    if (top - t->sp > 1) report_cycle(c, t, lowest); /* from the task written first */
}

static void visit(tarjan *t, size_t v, size_t *fp)
{
    t->index[v] = t->low[v] = t->next++;
    t->stack[t->sp++] = v;
    t->on_stack[v] = true;
    t->frame[*fp] = v;
    t->edge[(*fp)++] = 0;
}

static void strong_connect(pctx *c, tarjan *t, size_t s)
{
    size_t fp = 0;
    visit(t, s, &fp);
    while (fp > 0) {
        size_t v = t->frame[fp - 1];
        const loom_dag_task_t *task = &c->dag->tasks[v];
        if (t->edge[fp - 1] < task->n_needs) {
            size_t w = task->needs_idx[t->edge[fp - 1]++];
            if (t->indeg[w] == 0) continue; /* ordered, so on no cycle */
            if (t->index[w] == 0)
                visit(t, w, &fp);
            else if (t->on_stack[w] && t->index[w] < t->low[v])
                t->low[v] = t->index[w];
            continue;
        }
        fp--;
        if (fp > 0 && t->low[v] < t->low[t->frame[fp - 1]]) t->low[t->frame[fp - 1]] = t->low[v];
        if (t->low[v] == t->index[v]) pop_component(c, t, v);
    }
}

/* One cycle per tangle of tasks that need each other, positioned at the
 * tasks written first; tasks merely downstream of a cycle are not blamed. */
static void report_cycles(pctx *c, const size_t *indeg)
{
    size_t n = c->dag->n_tasks;
    size_t *mem = loom_xcalloc(8 * n, sizeof *mem);
    tarjan t = {.indeg = indeg, .next = 1};
    size_t **arrays[] = {&t.index, &t.low,  &t.stack,  &t.frame,
                         &t.edge,  &t.comp, &t.parent, &t.queue};
    for (size_t i = 0; i < 8; i++) *arrays[i] = mem + i * n;
    t.on_stack = loom_xcalloc(n, sizeof *t.on_stack);
    for (size_t i = 0; i < n; i++) t.parent[i] = SIZE_MAX;
    for (size_t s = 0; s < n; s++)
        if (indeg[s] > 0 && t.index[s] == 0) strong_connect(c, &t, s);
    free(t.on_stack);
    free(mem);
}

void dag_order_tasks(pctx *c)
{
    loom_dag_t *d = c->dag;
    size_t n = d->n_tasks, done = 0, nh = 0;
    size_t *indeg = loom_xcalloc(n, sizeof *indeg);
    size_t *start = loom_xcalloc(n + 1, sizeof *start); /* dependents of j: start[j]..start[j+1] */
    for (size_t i = 0; i < n; i++) {
        indeg[i] = d->tasks[i].n_needs;
        for (size_t k = 0; k < d->tasks[i].n_needs; k++) start[d->tasks[i].needs_idx[k] + 1]++;
    }
    for (size_t j = 0; j < n; j++) start[j + 1] += start[j];
    size_t *fill = loom_xmalloc((n + 1) * sizeof *fill);
    memcpy(fill, start, (n + 1) * sizeof *fill);
    size_t *dependents = loom_xmalloc((start[n] ? start[n] : 1) * sizeof *dependents);
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < d->tasks[i].n_needs; k++)
            dependents[fill[d->tasks[i].needs_idx[k]]++] = i;
    size_t *heap = loom_xmalloc(n * sizeof *heap);
    d->order = loom_xmalloc(n * sizeof *d->order);
    for (size_t i = 0; i < n; i++)
        if (indeg[i] == 0) heap_push(heap, &nh, i);
    while (nh > 0) {
        size_t j = heap_pop(heap, &nh);
        d->order[done++] = j;
        for (size_t e = start[j]; e < start[j + 1]; e++)
            if (--indeg[dependents[e]] == 0) heap_push(heap, &nh, dependents[e]);
    }
    if (done < n) report_cycles(c, indeg);
    free(heap);
    free(dependents);
    free(fill);
    free(start);
    free(indeg);
}
