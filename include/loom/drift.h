/* Data drift: how far a current dataset has moved from a reference one,
 * column by column, with the statistics drift tools use (Evidently's
 * defaults), computed in one pass over two CSV files with bounded memory.
 *
 * Statistics, per column:
 * - PSI, population stability index: sum over bins of (q - p) ln(q / p),
 *   p and q the reference and current shares. Numeric columns use
 *   LOOM_DRIFT_BINS bins cut at the reference's deciles (linear
 *   interpolation between order statistics, as numpy's default; bins are
 *   closed on the right, equal edges merged); categorical columns use their
 *   categories. An empty bin's share is replaced by LOOM_DRIFT_EPSILON, so
 *   the logarithm stays finite (Evidently does the same).
 * - JS, the Jensen-Shannon distance over the same bins, base 2, so in [0, 1]:
 *   sqrt(JSD); 0 log 0 counts as 0, so no smoothing is needed.
 * - KS, the two-sample Kolmogorov-Smirnov statistic D = sup |F_ref - F_cur|,
 *   and its asymptotic p-value Q_KS((sqrt(ne) + 0.12 + 0.11 / sqrt(ne)) D),
 *   ne = n m / (n + m), Q_KS the Kolmogorov distribution's survival
 *   function (Stephens' effective-n correction, as in Numerical Recipes).
 * - W1, the Wasserstein-1 distance (the area between the two empirical CDFs)
 *   divided by the reference's standard deviation (population, ddof 0); a
 *   constant reference divides by 1 instead, and the column says so.
 * - chi-square, for categorical columns: the 2 x k contingency test of
 *   homogeneity over the categories seen in either file, without Yates'
 *   correction; p = Q((k - 1) / 2, X^2 / 2), Q the regularised upper
 *   incomplete gamma function.
 *
 * Defaults (Evidently's): with at most LOOM_DRIFT_SMALL rows in the
 * reference, numeric columns use KS and categorical ones chi-square, and a
 * column drifts when p < 0.05; beyond that, numeric columns use W1 and
 * categorical ones JS, and a column drifts when the distance is >= 0.1 (PSI
 * likewise, >= 0.1). The dataset drifts when at least LOOM_DRIFT_SHARE of
 * the columns tested drift.
 *
 * Scale: numeric values are kept exactly, up to `sample` (default
 * LOOM_DRIFT_SAMPLE) per column and file; beyond that a uniform reservoir
 * sample of that size (Algorithm R, seeded) stands in and the report says it
 * sampled. Categories are counted exactly, up to LOOM_DRIFT_MAX_CATEGORIES
 * distinct values per column; a categorical column with more is skipped. So
 * memory is at most 16 MB per numeric column, whatever the number of rows. */
#ifndef LOOM_DRIFT_H
#define LOOM_DRIFT_H

#include "loom/csv.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LOOM_DRIFT_BINS 10
#define LOOM_DRIFT_EPSILON 1e-4
#define LOOM_DRIFT_SAMPLE 1000000
#define LOOM_DRIFT_MAX_CATEGORIES 10000
#define LOOM_DRIFT_SMALL 1000
#define LOOM_DRIFT_SHARE 0.5
#define LOOM_DRIFT_SEED 1

/* The two inputs, as indexes into the per-file arrays below. */
enum { LOOM_DRIFT_REF = 0, LOOM_DRIFT_CUR = 1 };

typedef enum {
    LOOM_DRIFT_AUTO = 0, /* numeric if every value is a finite number */
    LOOM_DRIFT_NUMERIC,
    LOOM_DRIFT_CATEGORICAL,
} loom_drift_type_t;

typedef enum {
    LOOM_DRIFT_TEST_DEFAULT = 0, /* by type and reference size */
    LOOM_DRIFT_PSI,
    LOOM_DRIFT_KS,
    LOOM_DRIFT_WASSERSTEIN,
    LOOM_DRIFT_JS,
    LOOM_DRIFT_CHISQ,
} loom_drift_test_t;

/* "psi", "ks", "wasserstein", "js", "chisq" ("default" for DEFAULT). */
const char *loom_drift_test_name(loom_drift_test_t t);
/* The reverse; LOOM_EINVAL for an unknown name. */
int loom_drift_test_parse(const char *s, loom_drift_test_t *out);
/* Whether the test's score is a p-value (drift when below the threshold)
 * rather than a distance (drift when at or above it). */
bool loom_drift_test_is_pvalue(loom_drift_test_t t);
double loom_drift_test_default_threshold(loom_drift_test_t t);
const char *loom_drift_type_name(loom_drift_type_t t);

/* ---- Statistics: pure functions on sorted samples and on counts ---- */

/* Sorts finite doubles ascending (an LSD radix sort: the samples are large). */
void loom_drift_sort(double *v, size_t n);
/* KS statistic of two sorted, non-empty samples. */
double loom_drift_ks(const double *a, size_t n, const double *b, size_t m);
/* Survival function of the Kolmogorov distribution, P(K > lambda). */
double loom_drift_kolmogorov_sf(double lambda);
/* The asymptotic p-value of D for samples of n and m values. */
double loom_drift_ks_pvalue(double d, size_t n, size_t m);
/* W1 distance of two sorted, non-empty samples (not normalised). */
double loom_drift_wasserstein(const double *a, size_t n, const double *b, size_t m);
/* Population mean and standard deviation of v. */
void loom_drift_mean_std(const double *v, size_t n, double *mean, double *std);
/* Cuts a sorted, non-empty sample at its quantiles k / bins, k = 1..bins-1,
 * merging equal edges. Writes at most bins - 1 edges; returns how many. */
size_t loom_drift_quantile_edges(const double *sorted, size_t n, size_t bins, double *edges);
/* Counts a sorted sample into the n_edges + 1 bins (-inf, e1], (e1, e2], ...,
 * (e_last, inf). */
void loom_drift_histogram(const double *sorted, size_t n, const double *edges, size_t n_edges,
                          uint64_t *counts);
/* PSI of two histograms over the same k bins, empty shares set to eps. */
double loom_drift_psi(const uint64_t *ref, const uint64_t *cur, size_t k, double eps);
/* Jensen-Shannon distance (base 2) of two histograms over the same k bins. */
double loom_drift_js(const uint64_t *ref, const uint64_t *cur, size_t k);
/* The regularised upper incomplete gamma function Q(a, x), a > 0, x >= 0. */
double loom_drift_gamma_q(double a, double x);
/* Chi-square test of homogeneity of two histograms over the same k bins;
 * bins empty in both are left out. dof 0 (one category) gives 0 and p = 1. */
void loom_drift_chisq(const uint64_t *ref, const uint64_t *cur, size_t k, double *stat, double *dof,
                      double *p);
/* A finite decimal number ([+-]digits[.digits][e[+-]digits]), surrounding
 * blanks allowed; false for anything else (hex, inf, nan, overflow). */
bool loom_drift_parse_number(const char *s, size_t len, double *out);
/* Whether a value counts as missing: empty, NA, NaN or null (any case),
 * surrounding blanks allowed. */
bool loom_drift_is_missing(const char *s, size_t len);

/* ---- Comparing two datasets ---- */

/* What the user set for one column. */
typedef struct {
    const char *name;
    loom_drift_type_t type;
    loom_drift_test_t test;
    bool has_threshold;
    double threshold;
} loom_drift_colopt_t;

typedef struct {
    const char *const *columns; /* the columns to compare; NULL: all of the reference's */
    size_t n_columns;
    const loom_drift_colopt_t *colopts;
    size_t n_colopts;
    bool has_share;
    double share; /* the share of drifting columns that makes the dataset drift */
    uint64_t seed;
    size_t sample; /* numeric values kept per column and file; 0: LOOM_DRIFT_SAMPLE */
} loom_drift_opts_t;

typedef struct {
    char *name;
    loom_drift_type_t type; /* AUTO when it had no value at all */
    bool declared;          /* the type was given, not detected */
    loom_drift_test_t test; /* DEFAULT when skipped */
    char *skipped;          /* why no test ran, or NULL */
    double score;           /* what the test compares with the threshold */
    double threshold;
    bool drift;
    /* Every statistic that applies; NAN for the others. */
    double psi, js, ks, ks_p, wasserstein, chisq, chisq_dof, chisq_p;
    double ref_std;
    bool std_zero; /* W1 was divided by 1: the reference is constant */
    size_t bins;   /* PSI/JS bins, or categories */
    uint64_t missing[2], invalid[2], values[2];
    uint64_t used[2]; /* values that entered the statistics */
    bool sampled;
} loom_drift_col_t;

typedef struct {
    loom_drift_col_t *columns;
    size_t n_columns;
    uint64_t rows[2];
    size_t tested, drifted;
    double share; /* drifted / tested */
    double share_threshold;
    bool drift;
    bool sampled;
    size_t sample;
    uint64_t seed;
} loom_drift_report_t;

typedef struct loom_drift loom_drift_t;

loom_drift_t *loom_drift_new(const loom_drift_opts_t *opts);
void loom_drift_destroy(loom_drift_t **d);
/* Reads a whole CSV (header first) as the reference (which = LOOM_DRIFT_REF,
 * read first) or the current data. On failure returns a negative loom error
 * and a sentence for the user in *why (caller frees): a malformed file, a
 * column that is not there, an option naming an unknown column. */
int loom_drift_read(loom_drift_t *d, int which, loom_csv_t *csv, char **why);
int loom_drift_read_file(loom_drift_t *d, int which, const char *path, char **why);
/* Computes the report once both files are read. Fails (LOOM_EINVAL, *why)
 * when a chosen test does not fit a column's type. */
int loom_drift_compute(loom_drift_t *d, loom_drift_report_t *out, char **why);
void loom_drift_report_free(loom_drift_report_t *r);
/* {"drift", "share", "share_threshold", "columns_tested", "columns_drifted",
 *  "rows": {"reference", "current"}, "sampled", "sample_size", "seed",
 *  "psi_bins", "psi_epsilon", "columns": [...]} */
json_t *loom_drift_report_json(const loom_drift_report_t *r);

/* ---- Prediction monitoring: a model metric against its baseline ---- */

/* The tolerance when none is given: 5% of the baseline. */
#define LOOM_PERF_TOLERANCE 0.05

typedef enum {
    LOOM_PERF_ACCURACY = 1, /* share of rows where prediction equals label */
    LOOM_PERF_AUC,          /* ROC AUC of a score against a 0/1 label */
    LOOM_PERF_RMSE,         /* root mean squared error of a numeric prediction */
} loom_perf_metric_t;

const char *loom_perf_metric_name(loom_perf_metric_t m);
int loom_perf_metric_parse(const char *s, loom_perf_metric_t *out);
/* ROC AUC from the sorted scores of the positive and the negative rows: the
 * chance that a positive outscores a negative, ties counting half (the
 * Mann-Whitney U statistic over np * nn). */
double loom_drift_auc(const double *pos, size_t np, const double *neg, size_t nn);

typedef struct {
    loom_perf_metric_t metric;
    const char *label, *prediction; /* column names */
    double baseline;
    bool has_tolerance;
    double tolerance; /* relative to the baseline */
    uint64_t seed;
    size_t sample; /* AUC: scores kept per class; 0: LOOM_DRIFT_SAMPLE */
} loom_perf_opts_t;

typedef struct {
    loom_perf_metric_t metric;
    double value, baseline, tolerance;
    double limit;                  /* the worst value still accepted */
    bool degraded;                 /* value is worse than limit */
    uint64_t rows;                 /* data rows read */
    uint64_t unlabelled;           /* rows whose label is missing (labels arrive late) */
    uint64_t unscored;             /* rows with a label but no prediction */
    uint64_t invalid;              /* rows whose label or prediction does not fit the metric */
    uint64_t used;                 /* rows that entered the metric */
    uint64_t positives, negatives; /* AUC */
    bool sampled;
} loom_perf_report_t;

/* Reads predictions and labels and compares the metric with its baseline:
 * higher is better for accuracy and AUC (degraded below baseline * (1 -
 * tolerance)), lower for RMSE (degraded above baseline * (1 + tolerance)).
 * Rows without a label are counted and left out. Fails, with *why, on a bad
 * file, a missing column, or no usable row (AUC: none of one class). */
int loom_perf_read(const loom_perf_opts_t *o, loom_csv_t *csv, loom_perf_report_t *out, char **why);
/* {"metric", "value", "baseline", "tolerance", "limit", "degraded", "drift"
 *  (the same), "rows": {"total", "labelled", "unscored", "invalid", "used"},
 *  "sampled", and for AUC "positives", "negatives"} */
json_t *loom_perf_report_json(const loom_perf_report_t *r);

#endif
