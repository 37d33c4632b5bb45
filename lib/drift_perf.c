/* Prediction monitoring for `loom drift perf` (drift.h): one pass over a
 * CSV of predictions and the labels that have arrived, computing accuracy,
 * ROC AUC or RMSE and comparing it with a baseline. Accuracy and RMSE are
 * exact sums; AUC keeps each class's scores, as a seeded reservoir sample
 * beyond the sample size, so memory stays bounded. */
#include "loom/drift.h"
#include "drift_int.h"
#include "loom/err.h"
#include "loom/util.h"

#include <math.h>
#include <string.h>
#include <strings.h>

const char *loom_perf_metric_name(loom_perf_metric_t m)
{
    switch (m) {
    case LOOM_PERF_ACCURACY:
        return "accuracy";
    case LOOM_PERF_AUC:
        return "auc";
    case LOOM_PERF_RMSE:
        return "rmse";
    }
    return "?";
}

int loom_perf_metric_parse(const char *s, loom_perf_metric_t *out)
{
    for (loom_perf_metric_t m = LOOM_PERF_ACCURACY; m <= LOOM_PERF_RMSE; m++)
        if (strcmp(s, loom_perf_metric_name(m)) == 0) {
            *out = m;
            return 0;
        }
    return LOOM_EINVAL;
}

double loom_drift_auc(const double *pos, size_t np, const double *neg, size_t nn)
{
    if (np == 0 || nn == 0) return NAN;
    /* For each positive, the negatives below it count 1 and those equal to
     * it 1/2; both pointers only move forward. */
    size_t below = 0, upto = 0;
    double u = 0;
    for (size_t i = 0; i < np; i++) {
        while (below < nn && neg[below] < pos[i]) below++;
        if (upto < below) upto = below;
        while (upto < nn && neg[upto] <= pos[i]) upto++;
        u += (double)below + 0.5 * (double)(upto - below);
    }
    return u / ((double)np * (double)nn);
}

static void trim(const char **s, size_t *len)
{
    const char *p = *s, *e = p + *len;
    while (p < e && (*p == ' ' || *p == '\t')) p++;
    while (e > p && (e[-1] == ' ' || e[-1] == '\t')) e--;
    *s = p;
    *len = (size_t)(e - p);
}

/* A binary label: 1/0 (as numbers), true/false, yes/no. -1 for anything else. */
static int binary_label(const char *s, size_t len)
{
    double x;
    if (loom_drift_parse_number(s, len, &x)) return x == 1 ? 1 : x == 0 ? 0 : -1;
    trim(&s, &len);
    if ((len == 4 && strncasecmp(s, "true", 4) == 0) || (len == 3 && strncasecmp(s, "yes", 3) == 0))
        return 1;
    if ((len == 5 && strncasecmp(s, "false", 5) == 0) || (len == 2 && strncasecmp(s, "no", 2) == 0))
        return 0;
    return -1;
}

/* Labels and predictions are equal as numbers when both are numbers, else as
 * text. */
static bool same_value(const char *a, size_t na, const char *b, size_t nb)
{
    double x, y;
    if (loom_drift_parse_number(a, na, &x) && loom_drift_parse_number(b, nb, &y)) return x == y;
    trim(&a, &na);
    trim(&b, &nb);
    return na == nb && memcmp(a, b, na) == 0;
}

typedef struct {
    const loom_perf_opts_t *o;
    loom_perf_report_t *r;
    double sum; /* correct rows, or squared errors (Kahan-summed) */
    double comp;
    sample_t cls[2]; /* AUC: scores of the negatives and the positives */
} perf_t;

static void add_sum(perf_t *p, double v)
{
    double y = v - p->comp, t = p->sum + y;
    p->comp = (t - p->sum) - y;
    p->sum = t;
}

static void add_row(perf_t *p, const loom_csv_field_t *label, const loom_csv_field_t *pred)
{
    loom_perf_report_t *r = p->r;
    if (loom_drift_is_missing(label->data, label->len)) {
        r->unlabelled++;
        return;
    }
    if (loom_drift_is_missing(pred->data, pred->len)) {
        r->unscored++;
        return;
    }
    double x, y;
    switch (p->o->metric) {
    case LOOM_PERF_ACCURACY:
        add_sum(p, same_value(label->data, label->len, pred->data, pred->len));
        break;
    case LOOM_PERF_RMSE:
        if (!loom_drift_parse_number(label->data, label->len, &x) ||
            !loom_drift_parse_number(pred->data, pred->len, &y)) {
            r->invalid++;
            return;
        }
        add_sum(p, (y - x) * (y - x));
        break;
    case LOOM_PERF_AUC: {
        int cls = binary_label(label->data, label->len);
        if (cls < 0 || !loom_drift_parse_number(pred->data, pred->len, &y)) {
            r->invalid++;
            return;
        }
        sample_add(&p->cls[cls], y, p->o->sample ? p->o->sample : LOOM_DRIFT_SAMPLE);
        break;
    }
    }
    r->used++;
}

static long find_column(const loom_csv_field_t *f, size_t n, const char *name)
{
    size_t len = strlen(name);
    for (size_t i = 0; i < n; i++)
        if (f[i].len == len && memcmp(f[i].data, name, len) == 0) return (long)i;
    return -1;
}

/* The metric from the sums; fails when no row could be used. */
static int finish(perf_t *p, const char *file, char **why)
{
    loom_perf_report_t *r = p->r;
    if (r->used == 0) {
        *why = loom_xasprintf("%s: no row has both a label and a usable prediction (%llu "
                              "unlabelled, %llu unscored, %llu invalid)",
                              file, (unsigned long long)r->unlabelled,
                              (unsigned long long)r->unscored, (unsigned long long)r->invalid);
        return LOOM_EINVAL;
    }
    if (p->o->metric == LOOM_PERF_ACCURACY) {
        r->value = p->sum / (double)r->used;
    } else if (p->o->metric == LOOM_PERF_RMSE) {
        r->value = sqrt(p->sum / (double)r->used);
    } else {
        r->negatives = p->cls[0].seen;
        r->positives = p->cls[1].seen;
        if (r->negatives == 0 || r->positives == 0) {
            *why = loom_xasprintf("%s: AUC needs labels of both classes (%llu positive, %llu "
                                  "negative)",
                                  file, (unsigned long long)r->positives,
                                  (unsigned long long)r->negatives);
            return LOOM_EINVAL;
        }
        r->sampled = p->cls[0].seen > p->cls[0].n || p->cls[1].seen > p->cls[1].n;
        loom_drift_sort(p->cls[0].v, p->cls[0].n);
        loom_drift_sort(p->cls[1].v, p->cls[1].n);
        r->value = loom_drift_auc(p->cls[1].v, p->cls[1].n, p->cls[0].v, p->cls[0].n);
    }
    bool lower_better = p->o->metric == LOOM_PERF_RMSE;
    r->limit = r->baseline * (lower_better ? 1 + r->tolerance : 1 - r->tolerance);
    r->degraded = lower_better ? r->value > r->limit : r->value < r->limit;
    return 0;
}

int loom_perf_read(const loom_perf_opts_t *o, loom_csv_t *csv, loom_perf_report_t *out, char **why)
{
    *why = NULL;
    memset(out, 0, sizeof *out);
    out->metric = o->metric;
    out->baseline = o->baseline;
    out->tolerance = o->has_tolerance ? o->tolerance : LOOM_PERF_TOLERANCE;
    const char *file = loom_csv_name(csv);
    const loom_csv_field_t *f;
    size_t n;
    int rc = loom_csv_next(csv, &f, &n);
    if (rc == 0) {
        *why = loom_xasprintf("%s: empty file (a CSV file needs a header row)", file);
        return LOOM_EPARSE;
    }
    if (rc < 0) {
        *why = loom_xstrdup(loom_csv_error(csv));
        return rc;
    }
    long li = find_column(f, n, o->label), pi = find_column(f, n, o->prediction);
    if (li < 0 || pi < 0) {
        *why = loom_xasprintf("%s: no column '%s' in the header", file,
                              li < 0 ? o->label : o->prediction);
        return LOOM_ENOTFOUND;
    }
    perf_t p = {.o = o, .r = out};
    uint64_t s = o->seed;
    p.cls[0].rng = splitmix64(&s);
    p.cls[1].rng = splitmix64(&s);
    while ((rc = loom_csv_next(csv, &f, &n)) == 1) {
        out->rows++;
        add_row(&p, &f[li], &f[pi]);
    }
    if (rc < 0)
        *why = loom_xstrdup(loom_csv_error(csv));
    else
        rc = finish(&p, file, why);
    sample_free(&p.cls[0]);
    sample_free(&p.cls[1]);
    return rc;
}

json_t *loom_perf_report_json(const loom_perf_report_t *r)
{
    json_t *rows =
        json_pack("{s:I, s:I, s:I, s:I, s:I}", "total", (json_int_t)r->rows, "labelled",
                  (json_int_t)(r->rows - r->unlabelled), "unscored", (json_int_t)r->unscored,
                  "invalid", (json_int_t)r->invalid, "used", (json_int_t)r->used);
    json_t *o = json_pack("{s:s, s:f, s:f, s:f, s:f, s:b, s:b, s:o, s:b}", "metric",
                          loom_perf_metric_name(r->metric), "value", r->value, "baseline",
                          r->baseline, "tolerance", r->tolerance, "limit", r->limit, "degraded",
                          r->degraded, "drift", r->degraded, "rows", rows, "sampled", r->sampled);
    if (r->metric == LOOM_PERF_AUC) {
        json_object_set_new(o, "positives", json_integer((json_int_t)r->positives));
        json_object_set_new(o, "negatives", json_integer((json_int_t)r->negatives));
    }
    return o;
}
