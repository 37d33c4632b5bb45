/* Comparing two datasets for drift (drift.h): reads each CSV once, keeps per
 * column a bounded sample of its numbers and exact counts of its categories,
 * then computes the statistics of drift_stats.c and the report. */
#include "loom/drift.h"
#include "drift_int.h"
#include "loom/err.h"
#include "loom/util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Exact counts of a column's distinct values in both files, keyed by their
 * text; dropped (overflow) past LOOM_DRIFT_MAX_CATEGORIES values. */
typedef struct {
    uint64_t hash;
    uint64_t count[2];
    uint32_t off, len; /* the text, in the arena */
} cat_slot_t;

typedef struct {
    cat_slot_t *slots; /* open addressing; len == UINT32_MAX marks a free slot */
    size_t cap, n;
    char *arena;
    size_t alen, acap;
    bool overflow;
} cats_t;

typedef struct {
    char *name;
    size_t src[2];          /* the field index in each file */
    loom_drift_type_t type; /* as declared */
    loom_drift_test_t test; /* as chosen by the user */
    bool has_threshold;
    double threshold;
    bool numeric; /* every value so far was a number (or it is declared numeric) */
    bool counts_categories;
    sample_t num[2];
    cats_t cats;
    uint64_t missing[2], invalid[2], values[2];
} col_t;

struct loom_drift {
    loom_drift_opts_t opts;
    col_t *cols;
    size_t n_cols;
    uint64_t rows[2];
    bool read[2];
};

loom_drift_t *loom_drift_new(const loom_drift_opts_t *opts)
{
    loom_drift_t *d = loom_xcalloc(1, sizeof *d);
    d->opts = *opts;
    if (d->opts.sample == 0) d->opts.sample = LOOM_DRIFT_SAMPLE;
    if (!d->opts.has_share) d->opts.share = LOOM_DRIFT_SHARE;
    return d;
}

static void cats_free(cats_t *c)
{
    free(c->slots);
    free(c->arena);
    c->slots = NULL;
    c->arena = NULL;
    c->cap = c->n = c->alen = c->acap = 0;
}

void loom_drift_destroy(loom_drift_t **dp)
{
    loom_drift_t *d = *dp;
    if (!d) return;
    for (size_t i = 0; i < d->n_cols; i++) {
        col_t *c = &d->cols[i];
        free(c->name);
        free(c->num[0].v);
        free(c->num[1].v);
        cats_free(&c->cats);
    }
    free(d->cols);
    free(d);
    *dp = NULL;
}

/* ---- Category counts ---- */

static inline uint64_t hash_bytes(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a, then a final mix */
    for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return h;
}

static void cats_rehash(cats_t *c, size_t cap)
{
    cat_slot_t *old = c->slots;
    size_t oldcap = c->cap;
    c->slots = loom_xmalloc(cap * sizeof *c->slots);
    for (size_t i = 0; i < cap; i++) c->slots[i].len = UINT32_MAX;
    c->cap = cap;
    for (size_t i = 0; i < oldcap; i++) {
        if (old[i].len == UINT32_MAX) continue;
        size_t k = old[i].hash & (cap - 1);
        while (c->slots[k].len != UINT32_MAX) k = (k + 1) & (cap - 1);
        c->slots[k] = old[i];
    }
    free(old);
}

static void cats_add(cats_t *c, int which, const char *s, size_t len)
{
    if (c->cap == 0) cats_rehash(c, 64);
    uint64_t h = hash_bytes(s, len);
    size_t k = h & (c->cap - 1);
    for (;; k = (k + 1) & (c->cap - 1)) {
        cat_slot_t *slot = &c->slots[k];
        if (slot->len == UINT32_MAX) break;
        if (slot->hash == h && slot->len == len && memcmp(c->arena + slot->off, s, len) == 0) {
            slot->count[which]++;
            return;
        }
    }
    if (c->n >= LOOM_DRIFT_MAX_CATEGORIES || len >= UINT32_MAX || c->alen + len >= UINT32_MAX) {
        /* Too many distinct values to test as categories: stop counting. */
        cats_free(c);
        c->overflow = true;
        return;
    }
    if (c->alen + len > c->acap) {
        c->acap = (c->alen + len) * 2 + 256;
        c->arena = loom_xrealloc(c->arena, c->acap);
    }
    if (len) memcpy(c->arena + c->alen, s, len);
    cat_slot_t *slot = &c->slots[k];
    slot->hash = h;
    slot->off = (uint32_t)c->alen;
    slot->len = (uint32_t)len;
    slot->count[0] = slot->count[1] = 0;
    slot->count[which] = 1;
    c->alen += len;
    if (++c->n * 2 > c->cap) cats_rehash(c, c->cap * 2);
}

/* ---- Reading ---- */

static void trim(const char **s, size_t *len)
{
    const char *p = *s, *e = p + *len;
    while (p < e && (*p == ' ' || *p == '\t')) p++;
    while (e > p && (e[-1] == ' ' || e[-1] == '\t')) e--;
    *s = p;
    *len = (size_t)(e - p);
}

static inline void add_value(loom_drift_t *d, col_t *c, int which, const char *s, size_t len)
{
    trim(&s, &len);
    if (len <= 4 && loom_drift_is_missing(s, len)) {
        c->missing[which]++;
        return;
    }
    if (c->numeric) {
        double x;
        if (loom_drift_parse_number(s, len, &x)) {
            sample_add(&c->num[which], x, d->opts.sample);
        } else if (c->type == LOOM_DRIFT_NUMERIC) {
            c->invalid[which]++;
            return;
        } else {
            /* One value that is not a number makes the column categorical. */
            c->numeric = false;
            sample_free(&c->num[0]);
            sample_free(&c->num[1]);
        }
    }
    c->values[which]++;
    if (c->counts_categories && !c->cats.overflow) cats_add(&c->cats, which, s, len);
}

static const loom_drift_colopt_t *find_colopt(const loom_drift_t *d, const char *name)
{
    for (size_t i = 0; i < d->opts.n_colopts; i++)
        if (strcmp(d->opts.colopts[i].name, name) == 0) return &d->opts.colopts[i];
    return NULL;
}

/* The header's index of name, or -1. Fails on a name given twice. */
static long find_field(const loom_csv_field_t *f, size_t n, const char *name, bool *dup)
{
    long at = -1;
    size_t len = strlen(name);
    for (size_t i = 0; i < n; i++)
        if (f[i].len == len && memcmp(f[i].data, name, len) == 0) {
            if (at >= 0) *dup = true;
            at = (long)i;
        }
    return at;
}

static void add_column(loom_drift_t *d, const char *name, size_t src, size_t index)
{
    d->cols = loom_xrealloc(d->cols, (d->n_cols + 1) * sizeof *d->cols);
    col_t *c = &d->cols[d->n_cols++];
    memset(c, 0, sizeof *c);
    c->name = loom_xstrdup(name);
    c->src[LOOM_DRIFT_REF] = src;
    const loom_drift_colopt_t *o = find_colopt(d, name);
    if (o) {
        c->type = o->type;
        c->test = o->test;
        c->has_threshold = o->has_threshold;
        c->threshold = o->threshold;
    }
    c->numeric = c->type != LOOM_DRIFT_CATEGORICAL;
    c->counts_categories = c->type != LOOM_DRIFT_NUMERIC;
    /* Independent, reproducible streams for every column and file. */
    uint64_t s = d->opts.seed ^ (0x9E3779B97F4A7C15ULL * (index + 1));
    c->num[0].rng = splitmix64(&s);
    c->num[1].rng = splitmix64(&s);
}

/* Picks the columns from the reference's header. */
static int take_header(loom_drift_t *d, const loom_csv_field_t *f, size_t n, const char *file,
                       char **why)
{
    if (d->opts.columns) {
        for (size_t i = 0; i < d->opts.n_columns; i++) {
            bool dup = false;
            long at = find_field(f, n, d->opts.columns[i], &dup);
            if (at < 0) {
                *why = loom_xasprintf("%s: no column '%s' in the header", file, d->opts.columns[i]);
                return LOOM_ENOTFOUND;
            }
            if (dup) {
                *why = loom_xasprintf("%s: column '%s' appears twice in the header", file,
                                      d->opts.columns[i]);
                return LOOM_EINVAL;
            }
            add_column(d, d->opts.columns[i], (size_t)at, i);
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            char *name = loom_xstrndup(f[i].data, f[i].len);
            bool dup = false;
            find_field(f, n, name, &dup);
            if (dup) {
                *why = loom_xasprintf("%s: column '%s' appears twice in the header", file, name);
                free(name);
                return LOOM_EINVAL;
            }
            add_column(d, name, i, i);
            free(name);
        }
    }
    for (size_t i = 0; i < d->opts.n_colopts; i++) {
        const char *name = d->opts.colopts[i].name;
        bool known = false;
        for (size_t k = 0; k < d->n_cols && !known; k++) known = strcmp(d->cols[k].name, name) == 0;
        if (!known) {
            *why =
                loom_xasprintf("an option names column '%s', which is not compared (not in %s%s)",
                               name, file, d->opts.columns ? "'s selected columns" : "");
            return LOOM_EINVAL;
        }
    }
    return 0;
}

/* Finds the reference's columns in the current file's header. */
static int match_header(loom_drift_t *d, const loom_csv_field_t *f, size_t n, const char *file,
                        char **why)
{
    for (size_t i = 0; i < d->n_cols; i++) {
        bool dup = false;
        long at = find_field(f, n, d->cols[i].name, &dup);
        if (at < 0) {
            *why =
                loom_xasprintf("%s: no column '%s' (the reference has it)", file, d->cols[i].name);
            return LOOM_ENOTFOUND;
        }
        if (dup) {
            *why = loom_xasprintf("%s: column '%s' appears twice in the header", file,
                                  d->cols[i].name);
            return LOOM_EINVAL;
        }
        d->cols[i].src[LOOM_DRIFT_CUR] = (size_t)at;
    }
    return 0;
}

int loom_drift_read(loom_drift_t *d, int which, loom_csv_t *csv, char **why)
{
    *why = NULL;
    if (which != LOOM_DRIFT_REF && which != LOOM_DRIFT_CUR) return LOOM_EINVAL;
    if (d->read[which] || (which == LOOM_DRIFT_CUR && !d->read[LOOM_DRIFT_REF])) {
        *why = loom_xstrdup("read the reference first, then the current data, once each");
        return LOOM_ESTATE;
    }
    const loom_csv_field_t *f;
    size_t n;
    int rc = loom_csv_next(csv, &f, &n);
    if (rc == 0) {
        *why = loom_xasprintf("%s: empty file (a CSV file needs a header row)", loom_csv_name(csv));
        return LOOM_EPARSE;
    }
    if (rc < 0) goto bad_csv;
    rc = which == LOOM_DRIFT_REF ? take_header(d, f, n, loom_csv_name(csv), why)
                                 : match_header(d, f, n, loom_csv_name(csv), why);
    if (rc < 0) return rc;
    uint64_t rows = 0;
    col_t *cols = d->cols;
    size_t n_cols = d->n_cols;
    while ((rc = loom_csv_next(csv, &f, &n)) == 1) {
        rows++;
        for (size_t i = 0; i < n_cols; i++) {
            const loom_csv_field_t *x = &f[cols[i].src[which]];
            add_value(d, &cols[i], which, x->data, x->len);
        }
    }
    if (rc < 0) goto bad_csv;
    d->rows[which] = rows;
    d->read[which] = true;
    return 0;
bad_csv:
    *why = loom_xstrdup(loom_csv_error(csv));
    return rc;
}

int loom_drift_read_file(loom_drift_t *d, int which, const char *path, char **why)
{
    loom_csv_t *csv = NULL;
    int rc = loom_csv_open(path, &csv, why);
    if (rc < 0) return rc;
    rc = loom_drift_read(d, which, csv, why);
    loom_csv_destroy(&csv);
    return rc;
}

/* ---- The report ---- */

static int choose_test(const col_t *c, loom_drift_col_t *r, uint64_t ref_rows, char **why)
{
    bool num = r->type == LOOM_DRIFT_NUMERIC, small = ref_rows <= LOOM_DRIFT_SMALL;
    loom_drift_test_t t = c->test;
    if (t == LOOM_DRIFT_TEST_DEFAULT)
        t = num ? (small ? LOOM_DRIFT_KS : LOOM_DRIFT_WASSERSTEIN)
                : (small ? LOOM_DRIFT_CHISQ : LOOM_DRIFT_JS);
    if (num && t == LOOM_DRIFT_CHISQ) {
        *why = loom_xasprintf("column '%s' is numeric, and chisq compares categories (use psi, "
                              "js, ks or wasserstein, or declare it --categorical)",
                              c->name);
        return LOOM_EINVAL;
    }
    if (!num && (t == LOOM_DRIFT_KS || t == LOOM_DRIFT_WASSERSTEIN)) {
        *why = loom_xasprintf("column '%s' is categorical, and %s compares numbers (use psi, js "
                              "or chisq%s)",
                              c->name, loom_drift_test_name(t),
                              c->type == LOOM_DRIFT_AUTO ? ", or declare it --numeric" : "");
        return LOOM_EINVAL;
    }
    r->test = t;
    r->threshold = c->has_threshold ? c->threshold : loom_drift_test_default_threshold(t);
    return 0;
}

static void numeric_stats(col_t *c, loom_drift_col_t *r)
{
    sample_t *a = &c->num[LOOM_DRIFT_REF], *b = &c->num[LOOM_DRIFT_CUR];
    loom_drift_sort(a->v, a->n);
    loom_drift_sort(b->v, b->n);
    r->ks = loom_drift_ks(a->v, a->n, b->v, b->n);
    r->ks_p = loom_drift_ks_pvalue(r->ks, a->n, b->n);
    double mean;
    loom_drift_mean_std(a->v, a->n, &mean, &r->ref_std);
    double w = loom_drift_wasserstein(a->v, a->n, b->v, b->n);
    /* Test constancy on the values: a computed std of a constant column may
     * be a rounding error above 0. */
    r->std_zero = a->v[0] == a->v[a->n - 1];
    if (r->std_zero) r->ref_std = 0;
    r->wasserstein = r->std_zero ? w : w / r->ref_std;
    double edges[LOOM_DRIFT_BINS - 1];
    size_t n_edges = loom_drift_quantile_edges(a->v, a->n, LOOM_DRIFT_BINS, edges);
    uint64_t hr[LOOM_DRIFT_BINS], hc[LOOM_DRIFT_BINS];
    loom_drift_histogram(a->v, a->n, edges, n_edges, hr);
    loom_drift_histogram(b->v, b->n, edges, n_edges, hc);
    r->bins = n_edges + 1;
    r->psi = loom_drift_psi(hr, hc, r->bins, LOOM_DRIFT_EPSILON);
    r->js = loom_drift_js(hr, hc, r->bins);
    for (int w2 = 0; w2 < 2; w2++) {
        r->used[w2] = c->num[w2].n;
        if (c->num[w2].seen > c->num[w2].n) r->sampled = true;
    }
}

static void categorical_stats(col_t *c, loom_drift_col_t *r)
{
    size_t k = c->cats.n, j = 0;
    uint64_t *hr = loom_xcalloc(k ? k : 1, sizeof *hr), *hc = loom_xcalloc(k ? k : 1, sizeof *hc);
    for (size_t i = 0; i < c->cats.cap; i++) {
        const cat_slot_t *s = &c->cats.slots[i];
        if (s->len == UINT32_MAX) continue;
        hr[j] = s->count[LOOM_DRIFT_REF];
        hc[j] = s->count[LOOM_DRIFT_CUR];
        j++;
    }
    r->bins = k;
    loom_drift_chisq(hr, hc, k, &r->chisq, &r->chisq_dof, &r->chisq_p);
    r->psi = loom_drift_psi(hr, hc, k, LOOM_DRIFT_EPSILON);
    r->js = loom_drift_js(hr, hc, k);
    r->used[0] = c->values[0];
    r->used[1] = c->values[1];
    free(hr);
    free(hc);
}

/* Why a column cannot be tested, or NULL. */
static char *skip_reason(const col_t *c, loom_drift_type_t type)
{
    if (c->values[0] == 0 && c->values[1] == 0)
        return loom_xstrdup(c->invalid[0] + c->invalid[1] > 0 ? "no numbers in either file"
                                                              : "no values in either file");
    if (c->values[0] == 0) return loom_xstrdup("no values in the reference");
    if (c->values[1] == 0) return loom_xstrdup("no values in the current data");
    if (type == LOOM_DRIFT_CATEGORICAL && c->cats.overflow)
        return loom_xasprintf("more than %d distinct values, too many to compare as categories%s",
                              LOOM_DRIFT_MAX_CATEGORIES,
                              c->type == LOOM_DRIFT_AUTO ? " (declare it --numeric if it holds "
                                                           "numbers)"
                                                         : "");
    return NULL;
}

static int column_report(loom_drift_t *d, col_t *c, loom_drift_col_t *r, char **why)
{
    memset(r, 0, sizeof *r);
    r->name = loom_xstrdup(c->name);
    r->declared = c->type != LOOM_DRIFT_AUTO;
    r->psi = r->js = r->ks = r->ks_p = r->wasserstein = NAN;
    r->chisq = r->chisq_dof = r->chisq_p = r->ref_std = r->score = r->threshold = NAN;
    for (int w = 0; w < 2; w++) {
        r->missing[w] = c->missing[w];
        r->invalid[w] = c->invalid[w];
        r->values[w] = c->values[w];
    }
    if (c->type != LOOM_DRIFT_AUTO)
        r->type = c->type;
    else if (c->values[0] + c->values[1] > 0)
        r->type = c->numeric ? LOOM_DRIFT_NUMERIC : LOOM_DRIFT_CATEGORICAL;
    r->skipped = skip_reason(c, r->type);
    if (r->skipped) return 0;
    int rc = choose_test(c, r, d->rows[LOOM_DRIFT_REF], why);
    if (rc < 0) return rc;
    if (r->type == LOOM_DRIFT_NUMERIC)
        numeric_stats(c, r);
    else
        categorical_stats(c, r);
    switch (r->test) {
    case LOOM_DRIFT_PSI:
        r->score = r->psi;
        break;
    case LOOM_DRIFT_KS:
        r->score = r->ks_p;
        break;
    case LOOM_DRIFT_WASSERSTEIN:
        r->score = r->wasserstein;
        break;
    case LOOM_DRIFT_JS:
        r->score = r->js;
        break;
    default:
        r->score = r->chisq_p;
        break;
    }
    r->drift =
        loom_drift_test_is_pvalue(r->test) ? r->score < r->threshold : r->score >= r->threshold;
    return 0;
}

int loom_drift_compute(loom_drift_t *d, loom_drift_report_t *out, char **why)
{
    *why = NULL;
    memset(out, 0, sizeof *out);
    if (!d->read[LOOM_DRIFT_REF] || !d->read[LOOM_DRIFT_CUR]) {
        *why = loom_xstrdup("both files must be read before computing drift");
        return LOOM_ESTATE;
    }
    out->columns = loom_xcalloc(d->n_cols ? d->n_cols : 1, sizeof *out->columns);
    out->rows[0] = d->rows[0];
    out->rows[1] = d->rows[1];
    out->share_threshold = d->opts.share;
    out->sample = d->opts.sample;
    out->seed = d->opts.seed;
    for (size_t i = 0; i < d->n_cols; i++) {
        loom_drift_col_t *r = &out->columns[out->n_columns++];
        int rc = column_report(d, &d->cols[i], r, why);
        if (rc < 0) {
            loom_drift_report_free(out);
            return rc;
        }
        if (r->skipped) continue;
        out->tested++;
        if (r->drift) out->drifted++;
        if (r->sampled) out->sampled = true;
    }
    out->share = out->tested ? (double)out->drifted / (double)out->tested : 0;
    out->drift = out->tested > 0 && out->share >= out->share_threshold;
    return 0;
}

void loom_drift_report_free(loom_drift_report_t *r)
{
    for (size_t i = 0; i < r->n_columns; i++) {
        free(r->columns[i].name);
        free(r->columns[i].skipped);
    }
    free(r->columns);
    memset(r, 0, sizeof *r);
}

static void set_real(json_t *o, const char *key, double v)
{
    if (isfinite(v)) json_object_set_new(o, key, json_real(v));
}

static json_t *pair_json(const uint64_t v[2])
{
    return json_pack("{s:I, s:I}", "reference", (json_int_t)v[0], "current", (json_int_t)v[1]);
}

static json_t *column_json(const loom_drift_col_t *c)
{
    json_t *o = json_pack("{s:s, s:s, s:b}", "name", c->name, "type", loom_drift_type_name(c->type),
                          "declared", c->declared);
    if (c->skipped) {
        json_object_set_new(o, "test", json_null());
        json_object_set_new(o, "drift", json_false());
        json_object_set_new(o, "skipped", json_string(c->skipped));
    } else {
        json_object_set_new(o, "test", json_string(loom_drift_test_name(c->test)));
        set_real(o, "score", c->score);
        set_real(o, "threshold", c->threshold);
        json_object_set_new(o, "drift", json_boolean(c->drift));
        set_real(o, "psi", c->psi);
        set_real(o, "js", c->js);
        set_real(o, "ks", c->ks);
        set_real(o, "ks_p", c->ks_p);
        set_real(o, "wasserstein", c->wasserstein);
        set_real(o, "chisq", c->chisq);
        set_real(o, "chisq_dof", c->chisq_dof);
        set_real(o, "chisq_p", c->chisq_p);
        if (c->type == LOOM_DRIFT_NUMERIC) {
            set_real(o, "reference_std", c->ref_std);
            json_object_set_new(o, "std_zero", json_boolean(c->std_zero));
        }
        json_object_set_new(o, c->type == LOOM_DRIFT_NUMERIC ? "bins" : "categories",
                            json_integer((json_int_t)c->bins));
        json_object_set_new(o, "used", pair_json(c->used));
        json_object_set_new(o, "sampled", json_boolean(c->sampled));
    }
    json_object_set_new(o, "values", pair_json(c->values));
    json_object_set_new(o, "missing", pair_json(c->missing));
    if (c->type == LOOM_DRIFT_NUMERIC && c->declared)
        json_object_set_new(o, "invalid", pair_json(c->invalid));
    return o;
}

json_t *loom_drift_report_json(const loom_drift_report_t *r)
{
    json_t *cols = json_array();
    for (size_t i = 0; i < r->n_columns; i++)
        json_array_append_new(cols, column_json(&r->columns[i]));
    return json_pack("{s:b, s:f, s:f, s:I, s:I, s:o, s:b, s:I, s:I, s:i, s:f, s:o}", "drift",
                     r->drift, "share", r->share, "share_threshold", r->share_threshold,
                     "columns_tested", (json_int_t)r->tested, "columns_drifted",
                     (json_int_t)r->drifted, "rows", pair_json(r->rows), "sampled", r->sampled,
                     "sample_size", (json_int_t)r->sample, "seed", (json_int_t)r->seed, "psi_bins",
                     LOOM_DRIFT_BINS, "psi_epsilon", LOOM_DRIFT_EPSILON, "columns", cols);
}
