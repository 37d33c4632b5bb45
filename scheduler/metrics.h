/* loomd's Prometheus metrics: counters and histograms updated in place where
 * events happen, gauges read from the in-memory model at scrape time, and
 * the text exposition format (version 0.0.4) that GET /metrics serves. */
#ifndef LOOM_METRICS_H
#define LOOM_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "loom/util.h"

#include <uv.h>

/* --- the exposition writer (usable on its own; unit-tested) --- */

/* A histogram with fixed upper bounds (ascending, +Inf implied). counts[i]
 * is the number of observations in bucket i alone; the writer makes them
 * cumulative. */
#define LOOM_HIST_MAX_BUCKETS 16
typedef struct {
    const double *bounds;
    size_t n_bounds;
    uint64_t counts[LOOM_HIST_MAX_BUCKETS + 1]; /* the last one: above every bound */
    double sum;
    uint64_t count;
} loom_hist_t;

void loom_hist_init(loom_hist_t *h, const double *bounds, size_t n_bounds);
void loom_hist_observe(loom_hist_t *h, double v);

/* "# HELP name help\n# TYPE name type\n" (help escaped). */
void loom_prom_family(loom_buf_t *b, const char *name, const char *type, const char *help);
/* One sample: name{k1="v1",...} value. labels: n pairs of (name, value);
 * values are escaped (backslash, double quote, newline). */
void loom_prom_sample(loom_buf_t *b, const char *name, const char *const *labels, size_t n,
                      double value);
/* name_bucket{...,le="..."} (cumulative, ending with +Inf), name_sum, name_count. */
void loom_prom_histogram(loom_buf_t *b, const char *name, const char *const *labels, size_t n,
                         const loom_hist_t *h);

/* --- loomd's metrics --- */

typedef struct loom_metrics loom_metrics_t;
struct loom_sched;

loom_metrics_t *loom_metrics_new(const char *state_dir);
/* Safe while a background size walk is running: it finishes on its own. */
void loom_metrics_destroy(loom_metrics_t **m);

/* Hooks, called on the loop thread where the event happens. */
void loom_metrics_run_ended(loom_metrics_t *m, const char *state);
void loom_metrics_task_ended(loom_metrics_t *m, const char *state);
void loom_metrics_dispatched(loom_metrics_t *m, double ready_to_dispatch_s);
void loom_metrics_trigger_started(loom_metrics_t *m, const char *kind, double fire_to_start_s);
void loom_metrics_trigger_decision(loom_metrics_t *m, const char *kind, const char *decision);
void loom_metrics_http(loom_metrics_t *m, const char *method, const char *route, unsigned status,
                       double seconds);

/* Appends the whole exposition for a scrape. Costs one pass over the runs,
 * tasks and agents in memory; no database query. */
void loom_metrics_render(struct loom_sched *s, loom_metrics_t *m, uv_loop_t *loop, loom_buf_t *out);

#endif
