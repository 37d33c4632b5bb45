/* The statistics behind `loom drift` (see drift.h for their definitions):
 * pure functions on sorted samples and on histograms, plus the number and
 * missing-value rules the reader applies to each field. */
#include "loom/drift.h"
#include "loom/err.h"
#include "loom/util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const struct {
    loom_drift_test_t test;
    const char *name;
} test_names[] = {
    {LOOM_DRIFT_TEST_DEFAULT, "default"},    {LOOM_DRIFT_PSI, "psi"}, {LOOM_DRIFT_KS, "ks"},
    {LOOM_DRIFT_WASSERSTEIN, "wasserstein"}, {LOOM_DRIFT_JS, "js"},   {LOOM_DRIFT_CHISQ, "chisq"},
};

const char *loom_drift_test_name(loom_drift_test_t t)
{
    for (size_t i = 0; i < sizeof test_names / sizeof test_names[0]; i++)
        if (test_names[i].test == t) return test_names[i].name;
    return "?";
}

int loom_drift_test_parse(const char *s, loom_drift_test_t *out)
{
    for (size_t i = 1; i < sizeof test_names / sizeof test_names[0]; i++)
        if (strcmp(test_names[i].name, s) == 0) {
            *out = test_names[i].test;
            return 0;
        }
    return LOOM_EINVAL;
}

bool loom_drift_test_is_pvalue(loom_drift_test_t t)
{
    return t == LOOM_DRIFT_KS || t == LOOM_DRIFT_CHISQ;
}

double loom_drift_test_default_threshold(loom_drift_test_t t)
{
    return loom_drift_test_is_pvalue(t) ? 0.05 : 0.1;
}

const char *loom_drift_type_name(loom_drift_type_t t)
{
    switch (t) {
    case LOOM_DRIFT_NUMERIC:
        return "numeric";
    case LOOM_DRIFT_CATEGORICAL:
        return "categorical";
    default:
        return "empty";
    }
}

/* ---- Sorting ---- */

/* Maps a double to an unsigned key in the same order: flip every bit of a
 * negative number, only the sign bit of a positive one. */
static inline uint64_t sort_key(double x)
{
    uint64_t u;
    memcpy(&u, &x, sizeof u);
    return (u >> 63) ? ~u : u | (1ULL << 63);
}

static inline double key_value(uint64_t k)
{
    uint64_t u = (k >> 63) ? k & ~(1ULL << 63) : ~k;
    double x;
    memcpy(&x, &u, sizeof x);
    return x;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

#define RADIX_BITS 11
#define RADIX_SIZE (1u << RADIX_BITS)
#define RADIX_PASSES 6 /* ceil(64 / 11) */

void loom_drift_sort(double *v, size_t n)
{
    if (n < 512) {
        qsort(v, n, sizeof *v, cmp_double);
        return;
    }
    uint64_t *keys = loom_xmalloc(n * sizeof *keys);
    uint64_t *tmp = loom_xmalloc(n * sizeof *tmp);
    size_t(*count)[RADIX_SIZE] = loom_xcalloc(RADIX_PASSES, sizeof *count);
    for (size_t i = 0; i < n; i++) {
        uint64_t k = sort_key(v[i]);
        keys[i] = k;
        for (int p = 0; p < RADIX_PASSES; p++)
            count[p][(k >> (p * RADIX_BITS)) & (RADIX_SIZE - 1)]++;
    }
    uint64_t *src = keys, *dst = tmp;
    for (int p = 0; p < RADIX_PASSES; p++) {
        unsigned shift = (unsigned)(p * RADIX_BITS);
        /* A digit every key shares orders nothing: skip its pass. */
        if (count[p][(src[0] >> shift) & (RADIX_SIZE - 1)] == n) continue;
        size_t sum = 0;
        for (size_t d = 0; d < RADIX_SIZE; d++) {
            size_t c = count[p][d];
            count[p][d] = sum;
            sum += c;
        }
        for (size_t i = 0; i < n; i++)
            dst[count[p][(src[i] >> shift) & (RADIX_SIZE - 1)]++] = src[i];
        uint64_t *t = src;
        src = dst;
        dst = t;
    }
    for (size_t i = 0; i < n; i++) v[i] = key_value(src[i]);
    free(count);
    free(tmp);
    free(keys);
}

/* ---- Kolmogorov-Smirnov ---- */

double loom_drift_ks(const double *a, size_t n, const double *b, size_t m)
{
    /* Walk both samples in step, one distinct value at a time, so ties move
     * both CDFs together; compare i/n with j/m as i*m against j*n, exactly. */
    size_t i = 0, j = 0;
    uint64_t best = 0;
    while (i < n && j < m) {
        double x = a[i] < b[j] ? a[i] : b[j];
        while (i < n && a[i] == x) i++;
        while (j < m && b[j] == x) j++;
        uint64_t l = (uint64_t)i * m, r = (uint64_t)j * n;
        uint64_t diff = l > r ? l - r : r - l;
        if (diff > best) best = diff;
    }
    return (double)best / ((double)n * (double)m);
}

double loom_drift_kolmogorov_sf(double lambda)
{
    if (!(lambda > 0)) return 1.0;
    if (lambda < 1.0) {
        /* The theta-function form of the CDF converges fast for small lambda:
         * P(K <= l) = sqrt(2 pi) / l * sum_k exp(-(2k - 1)^2 pi^2 / (8 l^2)). */
        double f = -M_PI * M_PI / (8 * lambda * lambda), cdf = 0;
        for (int k = 1; k <= 20; k++) {
            double t = exp((2 * k - 1) * (2 * k - 1) * f);
            cdf += t;
            if (t < 1e-17 * cdf) break;
        }
        cdf *= sqrt(2 * M_PI) / lambda;
        return 1.0 - cdf;
    }
    /* P(K > l) = 2 sum_k (-1)^(k-1) exp(-2 k^2 l^2). */
    double sf = 0, sign = 1;
    for (int k = 1; k <= 100; k++) {
        double t = exp(-2.0 * k * k * lambda * lambda);
        sf += sign * t;
        sign = -sign;
        if (t < 1e-17) break;
    }
    sf *= 2;
    return sf < 0 ? 0 : sf > 1 ? 1 : sf;
}

double loom_drift_ks_pvalue(double d, size_t n, size_t m)
{
    if (n == 0 || m == 0) return 1.0;
    double ne = (double)n * (double)m / ((double)n + (double)m);
    double sq = sqrt(ne);
    return loom_drift_kolmogorov_sf((sq + 0.12 + 0.11 / sq) * d);
}

/* ---- Wasserstein ---- */

double loom_drift_wasserstein(const double *a, size_t n, const double *b, size_t m)
{
    /* Integrate |F_a - F_b| between consecutive distinct values, where both
     * CDFs are constant. */
    size_t i = 0, j = 0;
    double prev = a[0] < b[0] ? a[0] : b[0], w = 0, comp = 0;
    while (i < n || j < m) {
        double x;
        if (i == n)
            x = b[j];
        else if (j == m)
            x = a[i];
        else
            x = a[i] < b[j] ? a[i] : b[j];
        double gap = fabs((double)i / (double)n - (double)j / (double)m);
        /* Kahan summation: millions of small terms. */
        double y = gap * (x - prev) - comp, t = w + y;
        comp = (t - w) - y;
        w = t;
        while (i < n && a[i] == x) i++;
        while (j < m && b[j] == x) j++;
        prev = x;
    }
    return w;
}

void loom_drift_mean_std(const double *v, size_t n, double *mean, double *std)
{
    if (n == 0) {
        *mean = *std = NAN;
        return;
    }
    double s = 0;
    for (size_t i = 0; i < n; i++) s += v[i];
    double mu = s / (double)n, ss = 0;
    for (size_t i = 0; i < n; i++) ss += (v[i] - mu) * (v[i] - mu);
    *mean = mu;
    *std = sqrt(ss / (double)n);
}

/* ---- Binned statistics ---- */

size_t loom_drift_quantile_edges(const double *sorted, size_t n, size_t bins, double *edges)
{
    size_t k = 0;
    for (size_t q = 1; q < bins; q++) {
        double h = (double)(n - 1) * (double)q / (double)bins;
        size_t lo = (size_t)h;
        double frac = h - (double)lo;
        double e = sorted[lo];
        if (lo + 1 < n && frac > 0) e += frac * (sorted[lo + 1] - sorted[lo]);
        if (k == 0 || e > edges[k - 1]) edges[k++] = e;
    }
    return k;
}

void loom_drift_histogram(const double *sorted, size_t n, const double *edges, size_t n_edges,
                          uint64_t *counts)
{
    size_t i = 0;
    for (size_t b = 0; b < n_edges; b++) {
        size_t start = i;
        while (i < n && sorted[i] <= edges[b]) i++;
        counts[b] = i - start;
    }
    counts[n_edges] = n - i;
}

static uint64_t total(const uint64_t *c, size_t k)
{
    uint64_t t = 0;
    for (size_t i = 0; i < k; i++) t += c[i];
    return t;
}

double loom_drift_psi(const uint64_t *ref, const uint64_t *cur, size_t k, double eps)
{
    double nr = (double)total(ref, k), nc = (double)total(cur, k), psi = 0;
    if (nr == 0 || nc == 0) return NAN;
    for (size_t i = 0; i < k; i++) {
        double p = ref[i] ? (double)ref[i] / nr : eps;
        double q = cur[i] ? (double)cur[i] / nc : eps;
        psi += (q - p) * log(q / p);
    }
    return psi;
}

double loom_drift_js(const uint64_t *ref, const uint64_t *cur, size_t k)
{
    double nr = (double)total(ref, k), nc = (double)total(cur, k), jsd = 0;
    if (nr == 0 || nc == 0) return NAN;
    for (size_t i = 0; i < k; i++) {
        double p = (double)ref[i] / nr, q = (double)cur[i] / nc, mid = (p + q) / 2;
        if (p > 0) jsd += p * log2(p / mid);
        if (q > 0) jsd += q * log2(q / mid);
    }
    jsd /= 2;
    return jsd > 0 ? sqrt(jsd < 1 ? jsd : 1) : 0;
}

/* ---- Chi-square ---- */

#define GAMMA_EPS 1e-16
#define GAMMA_ITER 100000
#define TINY 1e-300

/* P(a, x) by its series, for x < a + 1 (Numerical Recipes' gser). */
static double gamma_p_series(double a, double x)
{
    double ap = a, del = 1.0 / a, sum = del;
    for (int i = 0; i < GAMMA_ITER; i++) {
        ap += 1;
        del *= x / ap;
        sum += del;
        if (fabs(del) < fabs(sum) * GAMMA_EPS) break;
    }
    return sum * exp(-x + a * log(x) - lgamma(a));
}

/* Q(a, x) by its continued fraction, for x >= a + 1 (modified Lentz, as in
 * Numerical Recipes' gcf). */
static double gamma_q_fraction(double a, double x)
{
    double b = x + 1 - a, c = 1 / TINY, d = 1 / b, h = d;
    for (int i = 1; i < GAMMA_ITER; i++) {
        double an = -i * (i - a);
        b += 2;
        d = an * d + b;
        if (fabs(d) < TINY) d = TINY;
        c = b + an / c;
        if (fabs(c) < TINY) c = TINY;
        d = 1 / d;
        double del = d * c;
        h *= del;
        if (fabs(del - 1) < GAMMA_EPS) break;
    }
    return exp(-x + a * log(x) - lgamma(a)) * h;
}

double loom_drift_gamma_q(double a, double x)
{
    if (!(a > 0) || x < 0 || isnan(x)) return NAN;
    if (x == 0) return 1.0;
    if (isinf(x)) return 0.0;
    if (x < a + 1) {
        double q = 1.0 - gamma_p_series(a, x);
        return q < 0 ? 0 : q;
    }
    return gamma_q_fraction(a, x);
}

void loom_drift_chisq(const uint64_t *ref, const uint64_t *cur, size_t k, double *stat, double *dof,
                      double *p)
{
    double nr = (double)total(ref, k), nc = (double)total(cur, k), n = nr + nc, x2 = 0;
    size_t used = 0;
    for (size_t i = 0; i < k; i++) {
        double col = (double)ref[i] + (double)cur[i];
        if (col == 0) continue;
        used++;
        double er = nr * col / n, ec = nc * col / n;
        double dr = (double)ref[i] - er, dc = (double)cur[i] - ec;
        x2 += dr * dr / er + dc * dc / ec;
    }
    if (used < 2 || nr == 0 || nc == 0) {
        *stat = 0;
        *dof = used > 0 ? (double)(used - 1) : 0;
        *p = 1;
        return;
    }
    *stat = x2;
    *dof = (double)(used - 1);
    *p = loom_drift_gamma_q(*dof / 2, x2 / 2);
}

/* ---- Field values ---- */

static inline bool is_blank(char c)
{
    return c == ' ' || c == '\t';
}

static void trim(const char **s, size_t *len)
{
    const char *p = *s, *e = p + *len;
    while (p < e && is_blank(*p)) p++;
    while (e > p && is_blank(e[-1])) e--;
    *s = p;
    *len = (size_t)(e - p);
}

bool loom_drift_is_missing(const char *s, size_t len)
{
    trim(&s, &len);
    switch (len) {
    case 0:
        return true;
    case 2:
        return strncasecmp(s, "na", 2) == 0;
    case 3:
        return strncasecmp(s, "nan", 3) == 0;
    case 4:
        return strncasecmp(s, "null", 4) == 0;
    default:
        return false;
    }
}

static const double pow10_exact[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                     1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                     1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* strtod on a copy, once the syntax is known to be decimal. */
static bool parse_slow(const char *s, size_t len, double *out)
{
    char small[64];
    char *copy = len < sizeof small ? small : loom_xmalloc(len + 1);
    memcpy(copy, s, len);
    copy[len] = '\0';
    char *end;
    double x = strtod(copy, &end);
    bool ok = end == copy + len && isfinite(x);
    if (copy != small) free(copy);
    if (ok) *out = x;
    return ok;
}

bool loom_drift_parse_number(const char *s, size_t len, double *out)
{
    trim(&s, &len);
    const char *p = s, *e = s + len;
    bool neg = false;
    if (p < e && (*p == '+' || *p == '-')) neg = *p++ == '-';
    uint64_t mant = 0;
    int digits = 0, exp10 = 0;
    bool any = false, inexact = false;
    for (; p < e && (unsigned)(*p - '0') < 10; p++) {
        any = true;
        if (digits < 19) {
            mant = mant * 10 + (unsigned)(*p - '0');
            if (mant) digits++;
        } else {
            exp10++;
            inexact = true;
        }
    }
    if (p < e && *p == '.') {
        for (p++; p < e && (unsigned)(*p - '0') < 10; p++) {
            any = true;
            if (digits < 19) {
                mant = mant * 10 + (unsigned)(*p - '0');
                if (mant) digits++;
                exp10--;
            } else {
                inexact = true;
            }
        }
    }
    if (!any) return false;
    if (p < e && (*p == 'e' || *p == 'E')) {
        p++;
        bool eneg = false;
        if (p < e && (*p == '+' || *p == '-')) eneg = *p++ == '-';
        if (p == e) return false;
        int ex = 0;
        for (; p < e && (unsigned)(*p - '0') < 10; p++)
            if (ex < 100000) ex = ex * 10 + (*p - '0');
        exp10 += eneg ? -ex : ex;
    }
    if (p != e) return false;
    /* Clinger's fast path: a mantissa below 2^53 and a power of ten that is
     * itself exact give a correctly rounded result in one operation. */
    if (!inexact && mant <= (1ULL << 53) && exp10 >= -22 && exp10 <= 22) {
        double x = (double)mant;
        x = exp10 < 0 ? x / pow10_exact[-exp10] : x * pow10_exact[exp10];
        *out = neg ? -x : x;
        return true;
    }
    return parse_slow(s, len, out);
}
