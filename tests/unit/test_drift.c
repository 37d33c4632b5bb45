/* loom drift: the CSV reader, each statistic against values worked out
 * independently, the dataset comparison (types, missing values, sampling),
 * and the `loom drift` command's exit statuses end to end.
 *
 * Where the expected values come from: those marked "by hand" follow from
 * the definitions in drift.h with pencil arithmetic, shown in the comment;
 * the others were computed with SciPy 1.10.1 (Debian 12's python3-scipy) and
 * cross-checked to 20 digits with mpmath 1.3 (the Kolmogorov series and the
 * incomplete gamma function summed at 30-digit precision). */
#include "loom/csv.h"
#include "loom/drift.h"
#include "loom/err.h"
#include "loom/util.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

extern char **environ;

#define assert_near(a, b, tol) assert_true(fabs((a) - (b)) <= (tol))

/* ---- CSV reader ---- */

/* Reads all records of text with reads of chunk bytes; returns them as
 * "f1|f2|...\n" lines, or "ERROR: message". */
static char *read_all(const char *text, size_t len, size_t chunk)
{
    loom_csv_t *r = loom_csv_new_mem("t.csv", text, len);
    loom_csv_set_chunk(r, chunk);
    loom_buf_t out = {0};
    const loom_csv_field_t *f;
    size_t n;
    int rc;
    while ((rc = loom_csv_next(r, &f, &n)) == 1) {
        loom_buf_printf(&out, "%llu:", (unsigned long long)loom_csv_line(r));
        for (size_t i = 0; i < n; i++) {
            if (i) loom_buf_puts(&out, "|");
            loom_buf_append(&out, f[i].data, f[i].len);
        }
        loom_buf_puts(&out, "\n");
    }
    if (rc < 0) {
        loom_buf_reset(&out);
        loom_buf_printf(&out, "ERROR: %s", loom_csv_error(r));
    }
    loom_csv_destroy(&r);
    assert_null(r);
    if (!out.data) loom_buf_puts(&out, "");
    return loom_buf_steal(&out);
}

/* The same result whatever the chunk size, so records cut at every byte. */
static void expect_csv(const char *text, const char *want)
{
    size_t len = strlen(text);
    for (size_t chunk = 1; chunk <= len + 1; chunk++) {
        char *got = read_all(text, len, chunk);
        if (strcmp(got, want) != 0) fail_msg("chunk %zu:\n%s\nwanted:\n%s", chunk, got, want);
        free(got);
    }
}

static void test_csv_rfc4180(void **state)
{
    (void)state;
    /* A BOM, CRLF, a quoted comma, a doubled quote, a line break inside
     * quotes (the next record is then on line 4), a blank line skipped, an
     * empty quoted field, and a last record without a line end. */
    expect_csv("\xEF\xBB\xBFid,text,n\r\n"
               "1,\"a, b\",2\r\n"
               "2,\"say \"\"hi\"\"\nthere\",3\r\n"
               "\r\n"
               "3,\"\",\n"
               "4,plain,5",
               "1:id|text|n\n"
               "2:1|a, b|2\n"
               "3:2|say \"hi\"\nthere|3\n"
               "6:3||\n"
               "7:4|plain|5\n");
    expect_csv("a\n\n\nb\n", "1:a\n4:b\n");
    expect_csv("x,y\r\n\"q\"\r\n", "ERROR: t.csv:2:4: record has 1 field, the header has 2");
    expect_csv("x,y\n\"1\",\"\"\"\"\r", "1:x|y\n2:1|\"\n");
}

static void test_csv_errors_name_line_and_column(void **state)
{
    (void)state;
    expect_csv("a,b\n1,2\n3,\"open\n\nstill", "ERROR: t.csv:3:3: unterminated quoted field (it "
                                              "opens here)");
    expect_csv("a,b\n1,2,3\n", "ERROR: t.csv:2:5: record has 3 fields, the header has 2");
    /* The line break inside quotes moves the next record to line 4. */
    expect_csv("a,b\n\"x\ny\",1\n2\n", "ERROR: t.csv:4:2: record has 1 field, the header has 2");
    expect_csv("a,b\n\"x\"y,1\n", "ERROR: t.csv:2:4: unexpected character after a closing quote "
                                  "(write a quote inside a quoted field as \"\")");
    /* An empty input has no header. */
    char *got = read_all("", 0, 4);
    assert_string_equal(got, "");
    free(got);
}

static void test_csv_file(void **state)
{
    (void)state;
    char path[] = "/tmp/loom-test-drift-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char text[] = "a,b\n1,2\n";
    assert_int_equal(write(fd, text, sizeof text - 1), (ssize_t)(sizeof text - 1));
    close(fd);
    loom_csv_t *r = NULL;
    char *why = NULL;
    assert_int_equal(loom_csv_open(path, &r, &why), 0);
    const loom_csv_field_t *f;
    size_t n;
    assert_int_equal(loom_csv_next(r, &f, &n), 1);
    assert_int_equal(loom_csv_next(r, &f, &n), 1);
    assert_int_equal(n, 2);
    assert_memory_equal(f[1].data, "2", 1);
    assert_int_equal(loom_csv_next(r, &f, &n), 0);
    assert_int_equal(loom_csv_offset(r), sizeof text - 1);
    loom_csv_destroy(&r);
    unlink(path);
    assert_int_equal(loom_csv_open(path, &r, &why), LOOM_ENOTFOUND);
    assert_non_null(strstr(why, "No such file"));
    free(why);
}

/* ---- Statistics ---- */

static void test_sort_matches_qsort(void **state)
{
    (void)state;
    size_t n = 5000;
    double *v = loom_xmalloc(n * sizeof *v);
    uint64_t s = 88172645463325252ULL;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        v[i] = ((double)(s >> 11) / 9007199254740992.0 - 0.5) * pow(10, (double)(s % 20) - 10);
    }
    v[0] = 0.0, v[1] = -0.0, v[2] = -1e300, v[3] = 1e300, v[4] = 5e-324;
    loom_drift_sort(v, n);
    for (size_t i = 1; i < n; i++) assert_true(v[i - 1] <= v[i]);
    free(v);
}

static void test_ks_known_samples(void **state)
{
    (void)state;
    /* By hand: a = 1..8, b = 5..12. After 4, F_a = 4/8 and F_b = 0, and no
     * gap is wider, so D = 0.5. ne = 8*8/16 = 4, so lambda = (2 + 0.12 +
     * 0.11/2) * 0.5 = 1.0875, and p = Q_KS(1.0875) = 0.18768427419801342
     * (scipy.stats.kstwobign.sf(1.0875); mpmath's series agrees to 20
     * digits). scipy's ks_2samp(method="asymp") prints 0.1875 here because
     * it uses kstwo.sf(D, round(ne)), another approximation; the exact
     * p-value is 0.2827. */
    double a[] = {1, 2, 3, 4, 5, 6, 7, 8}, b[] = {5, 6, 7, 8, 9, 10, 11, 12};
    double d = loom_drift_ks(a, 8, b, 8);
    assert_near(d, 0.5, 1e-15);
    assert_near(loom_drift_ks_pvalue(d, 8, 8), 0.18768427419801342, 1e-9);

    /* Ties, by hand: a = {1,1,2,2,3}, b = {1,2,2,3,3,3}. At 1: 2/5 - 1/6 =
     * 0.2333; at 2: 4/5 - 3/6 = 0.3; at 3: 1 - 1 = 0. D = 0.3; ne = 30/11,
     * lambda = 0.5514161866439058, p = kstwobign.sf(lambda) =
     * 0.9213873971936145. */
    double c[] = {1, 1, 2, 2, 3}, e[] = {1, 2, 2, 3, 3, 3};
    d = loom_drift_ks(c, 5, e, 6);
    assert_near(d, 0.3, 1e-15);
    assert_near(loom_drift_ks_pvalue(d, 5, 6), 0.9213873971936145, 1e-9);
}

static void test_kolmogorov_distribution(void **state)
{
    (void)state;
    /* scipy.stats.kstwobign.sf, both branches of the implementation. */
    static const double lam[] = {0.3, 0.5, 0.8, 1.0, 1.36, 2.0};
    static const double sf[] = {0.9999906941986655,  0.9639452436648751,   0.5441424115741981,
                                0.26999967167735456, 0.049485876755377876, 0.0006709252557796953};
    for (size_t i = 0; i < 6; i++) assert_near(loom_drift_kolmogorov_sf(lam[i]), sf[i], 1e-12);
    assert_true(loom_drift_kolmogorov_sf(0) == 1.0);
    assert_true(loom_drift_kolmogorov_sf(10) < 1e-80);
}

static void test_wasserstein_known(void **state)
{
    (void)state;
    /* By hand: a shifted by 5 is W1 = 5. {1,2,3} against {1,2,3,4}: the CDFs
     * differ by 1/12 on [1,2), 1/6 on [2,3) and 1/4 on [3,4): 1/2. */
    double a[] = {0, 1, 3}, b[] = {5, 6, 8};
    assert_near(loom_drift_wasserstein(a, 3, b, 3), 5.0, 1e-12);
    double c[] = {1, 2, 3}, e[] = {1, 2, 3, 4};
    assert_near(loom_drift_wasserstein(c, 3, e, 4), 0.5, 1e-12);
    double mean, std;
    loom_drift_mean_std(a, 3, &mean, &std);
    /* mean 4/3, squares (16 + 1 + 25)/9 / 3 = 14/9. */
    assert_near(mean, 4.0 / 3, 1e-12);
    assert_near(std, sqrt(14.0 / 9), 1e-12);
}

static void test_identical_samples_show_no_drift(void **state)
{
    (void)state;
    double a[200];
    for (int i = 0; i < 200; i++) a[i] = sin(i) * 10;
    loom_drift_sort(a, 200);
    assert_true(loom_drift_ks(a, 200, a, 200) == 0);
    assert_true(loom_drift_ks_pvalue(0, 200, 200) == 1);
    assert_true(loom_drift_wasserstein(a, 200, a, 200) == 0);
    double edges[LOOM_DRIFT_BINS - 1];
    size_t ne = loom_drift_quantile_edges(a, 200, LOOM_DRIFT_BINS, edges);
    assert_int_equal(ne, 9);
    uint64_t h[LOOM_DRIFT_BINS];
    loom_drift_histogram(a, 200, edges, ne, h);
    for (size_t i = 0; i <= ne; i++) assert_int_equal(h[i], 20);
    assert_true(loom_drift_psi(h, h, ne + 1, LOOM_DRIFT_EPSILON) == 0);
    assert_true(loom_drift_js(h, h, ne + 1) == 0);
    double x2, dof, p;
    loom_drift_chisq(h, h, ne + 1, &x2, &dof, &p);
    assert_true(x2 == 0);
    assert_near(p, 1, 1e-12);
}

static void test_quantile_edges(void **state)
{
    (void)state;
    /* numpy.quantile(1..100, k/10): h = 99k/10, so the first edge is
     * v[9] + 0.9 (v[10] - v[9]) = 10.9. */
    double v[100];
    for (int i = 0; i < 100; i++) v[i] = i + 1;
    double e[9];
    assert_int_equal(loom_drift_quantile_edges(v, 100, 10, e), 9);
    for (int k = 0; k < 9; k++) assert_near(e[k], 10.9 + 9.9 * k, 1e-9);
    /* Ties merge: a constant sample has one edge, so two bins. */
    double c[] = {7, 7, 7, 7};
    assert_int_equal(loom_drift_quantile_edges(c, 4, 10, e), 1);
    assert_true(e[0] == 7);
    uint64_t h[2];
    double cur[] = {6, 7, 8};
    loom_drift_histogram(cur, 3, e, 1, h); /* (-inf, 7] and (7, inf) */
    assert_int_equal(h[0], 2);
    assert_int_equal(h[1], 1);
    /* A single value: every quantile is that value. */
    assert_int_equal(loom_drift_quantile_edges(c, 1, 10, e), 1);
}

static void test_psi_and_js_known(void **state)
{
    (void)state;
    /* By hand: shares 0.5/0.5 against 0.9/0.1: PSI = 0.4 ln(1.8) + (-0.4)
     * ln(0.2) = 0.8788898309344878. JS: m = (0.7, 0.3); JSD = (0.5 log2
     * (0.5/0.7) + 0.5 log2(0.5/0.3) + 0.9 log2(0.9/0.7) + 0.1 log2(0.1/0.3))
     * / 2 = 0.1467931; its root 0.3831358798599423 (scipy's jensenshannon,
     * base 2). */
    uint64_t r[] = {50, 50}, c[] = {90, 10};
    assert_near(loom_drift_psi(r, c, 2, LOOM_DRIFT_EPSILON), 0.8788898309344878, 1e-12);
    assert_near(loom_drift_js(r, c, 2), 0.3831358798599423, 1e-12);
    /* An empty bin is smoothed to 1e-4: ref (1, 0) -> (1, 1e-4), cur (0.5,
     * 0.5): PSI = -0.5 ln 0.5 + (0.5 - 1e-4) ln(0.5 / 1e-4). JS needs no
     * smoothing: 0.5579230452841438 (scipy). */
    uint64_t r2[] = {10, 0}, c2[] = {5, 5};
    assert_near(loom_drift_psi(r2, c2, 2, 1e-4), -0.5 * log(0.5) + (0.5 - 1e-4) * log(0.5 / 1e-4),
                1e-12);
    assert_near(loom_drift_psi(r2, c2, 2, 1e-4), 4.604318466668949, 1e-12);
    assert_near(loom_drift_js(r2, c2, 2), 0.5579230452841438, 1e-12);
    /* Disjoint supports are as far apart as JS goes. */
    uint64_t r3[] = {5, 0}, c3[] = {0, 5};
    assert_near(loom_drift_js(r3, c3, 2), 1.0, 1e-12);
}

static void test_incomplete_gamma(void **state)
{
    (void)state;
    /* Closed forms: Q(1, x) = e^-x and Q(1/2, x) = erfc(sqrt(x)). */
    for (double x = 0.05; x < 40; x *= 1.7) {
        assert_near(loom_drift_gamma_q(1, x), exp(-x), 1e-14);
        assert_near(loom_drift_gamma_q(0.5, x), erfc(sqrt(x)), 1e-13);
    }
    /* scipy.special.gammaincc (mpmath agrees to 20 digits on Q(5, 3)). */
    assert_near(loom_drift_gamma_q(5, 3), 0.8152632445237722, 1e-13);
    assert_near(loom_drift_gamma_q(2.5, 10), 0.0012497305630313773, 1e-15);
    assert_near(loom_drift_gamma_q(50, 60), 0.08440668109369177, 1e-12);
    assert_near(loom_drift_gamma_q(1000, 1100), 0.0010593232539299773, 1e-12);
    assert_near(loom_drift_gamma_q(3, 0.1), 0.9998453469297354, 1e-14);
    assert_true(loom_drift_gamma_q(3, 0) == 1);
    assert_true(isnan(loom_drift_gamma_q(0, 1)));
}

static void test_chisq_known_contingency(void **state)
{
    (void)state;
    /* By hand: [[10,20,30],[20,20,20]], N = 120; both rows total 60, the
     * columns 30, 40, 50, so every expected count is 15, 20, 25 and
     * X^2 = 2 (25/15 + 0 + 25/25) = 16/3 with 2 degrees of freedom, whose
     * survival function is exp(-x/2): p = exp(-8/3) = 0.0694834512228015. */
    uint64_t r[] = {10, 20, 30}, c[] = {20, 20, 20};
    double x2, dof, p;
    loom_drift_chisq(r, c, 3, &x2, &dof, &p);
    assert_near(x2, 16.0 / 3, 1e-12);
    assert_near(dof, 2, 0);
    assert_near(p, exp(-8.0 / 3), 1e-12);
    /* A category in one file only still counts (a column of the table). */
    uint64_t r2[] = {10, 0}, c2[] = {5, 5};
    loom_drift_chisq(r2, c2, 2, &x2, &dof, &p);
    /* E: ref (10*15/20, 10*5/20) = (7.5, 2.5), cur (7.5, 2.5):
     * X^2 = 2.5^2/7.5 + 2.5^2/2.5 + 2.5^2/7.5 + 2.5^2/2.5 = 6.6667, dof 1. */
    assert_near(x2, 20.0 / 3, 1e-12);
    assert_near(p, erfc(sqrt(10.0 / 3)), 1e-12);
    /* One category: nothing to compare. */
    uint64_t one[] = {4}, two[] = {9};
    loom_drift_chisq(one, two, 1, &x2, &dof, &p);
    assert_true(x2 == 0 && dof == 0 && p == 1);
}

static void test_numbers_and_missing(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        bool ok;
        double v;
    } cases[] = {
        {"0", true, 0},
        {"-12.5", true, -12.5},
        {" 3 ", true, 3},
        {"+.5", true, 0.5},
        {"1.", true, 1},
        {"1e3", true, 1000},
        {"2.5E-3", true, 0.0025},
        {"0.1", true, 0.1},
        {"123456789012345678901", true, 1.2345678901234568e20},
        {"1e400", false, 0},
        {"inf", false, 0},
        {"nan", false, 0},
        {"0x10", false, 0},
        {"1,5", false, 0},
        {"", false, 0},
        {".", false, 0},
        {"-", false, 0},
        {"1e", false, 0},
        {"1e+", false, 0},
        {"12abc", false, 0},
        {"0.30000000000000004", true, 0.30000000000000004},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        double v = -1;
        bool ok = loom_drift_parse_number(cases[i].s, strlen(cases[i].s), &v);
        if (ok != cases[i].ok) fail_msg("'%s' parsed %d", cases[i].s, ok);
        if (ok && v != cases[i].v) fail_msg("'%s' gave %.17g", cases[i].s, v);
    }
    static const char *const missing[] = {"", "  ", "NA", "na", "NaN", "nan", "null", "NULL"};
    for (size_t i = 0; i < sizeof missing / sizeof missing[0]; i++)
        assert_true(loom_drift_is_missing(missing[i], strlen(missing[i])));
    assert_false(loom_drift_is_missing("N/A", 3));
    assert_false(loom_drift_is_missing("0", 1));
    assert_false(loom_drift_is_missing("none", 4));
}

/* ---- Datasets ---- */

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* A standard normal deviate (Box-Muller). */
static double normal(uint64_t *s)
{
    double u = ((double)(rng_next(s) >> 11) + 0.5) / 9007199254740992.0;
    double v = (double)(rng_next(s) >> 11) / 9007199254740992.0;
    return sqrt(-2 * log(u)) * cos(2 * M_PI * v);
}

/* CSV text with columns x (normal, mean mu), c (categories a/b/c with
 * weights shifted by tilt), k (constant 1). */
static char *make_csv(size_t rows, double mu, double tilt, uint64_t seed)
{
    loom_buf_t b = {0};
    loom_buf_puts(&b, "x,c,k\n");
    uint64_t s = seed;
    for (size_t i = 0; i < rows; i++) {
        double u = (double)(rng_next(&s) % 1000) / 1000;
        const char *cat = u < 0.5 - tilt ? "a" : u < 0.8 ? "b" : "c";
        loom_buf_printf(&b, "%.6f,%s,1\n", mu + normal(&s), cat);
    }
    return loom_buf_steal(&b);
}

/* Compares two CSV texts; returns the rc and fills rep on success. */
static int compare(const loom_drift_opts_t *o, const char *ref, const char *cur,
                   loom_drift_report_t *rep, char **why)
{
    loom_drift_t *d = loom_drift_new(o);
    loom_csv_t *a = loom_csv_new_mem("ref.csv", ref, strlen(ref));
    loom_csv_t *b = loom_csv_new_mem("cur.csv", cur, strlen(cur));
    int rc = loom_drift_read(d, LOOM_DRIFT_REF, a, why);
    if (rc == 0) rc = loom_drift_read(d, LOOM_DRIFT_CUR, b, why);
    if (rc == 0) rc = loom_drift_compute(d, rep, why);
    loom_csv_destroy(&a);
    loom_csv_destroy(&b);
    loom_drift_destroy(&d);
    assert_null(d);
    return rc;
}

static const loom_drift_col_t *col(const loom_drift_report_t *r, const char *name)
{
    for (size_t i = 0; i < r->n_columns; i++)
        if (strcmp(r->columns[i].name, name) == 0) return &r->columns[i];
    fail_msg("no column %s", name);
    return NULL;
}

static void test_shifted_normal_drifts(void **state)
{
    (void)state;
    loom_drift_opts_t o = {.seed = 1};
    char *ref = make_csv(3000, 0, 0, 11), *same = make_csv(3000, 0, 0, 22);
    char *moved = make_csv(3000, 0.5, 0.2, 33);
    loom_drift_report_t rep;
    char *why = NULL;
    /* Same distributions: nothing drifts (3000 rows: W1 and JS defaults). */
    assert_int_equal(compare(&o, ref, same, &rep, &why), 0);
    assert_false(rep.drift);
    assert_int_equal(rep.tested, 3);
    assert_int_equal(col(&rep, "x")->test, LOOM_DRIFT_WASSERSTEIN);
    assert_int_equal(col(&rep, "c")->test, LOOM_DRIFT_JS);
    assert_true(col(&rep, "x")->wasserstein < 0.1);
    assert_true(col(&rep, "x")->ks_p > 0.05);
    assert_true(col(&rep, "c")->chisq_p > 0.05);
    assert_true(col(&rep, "x")->psi < 0.1);
    loom_drift_report_free(&rep);
    /* The mean moves by half a standard deviation: W1/std is about 0.5. */
    assert_int_equal(compare(&o, ref, moved, &rep, &why), 0);
    assert_true(rep.drift);
    const loom_drift_col_t *x = col(&rep, "x");
    assert_true(x->drift);
    assert_true(x->wasserstein > 0.4 && x->wasserstein < 0.6);
    assert_true(x->ks > 0.15 && x->ks_p < 1e-10);
    assert_true(x->psi > 0.1);
    assert_true(col(&rep, "c")->drift);
    assert_false(col(&rep, "k")->drift);
    assert_true(col(&rep, "k")->std_zero);
    assert_int_equal(rep.drifted, 2);
    assert_near(rep.share, 2.0 / 3, 1e-12);
    json_t *j = loom_drift_report_json(&rep);
    assert_true(json_is_true(json_object_get(j, "drift")));
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "rows"), "current")),
                     3000);
    json_decref(j);
    loom_drift_report_free(&rep);
    free(ref);
    free(same);
    free(moved);
}

static void test_small_reference_uses_p_values(void **state)
{
    (void)state;
    loom_drift_opts_t o = {0};
    char *ref = make_csv(500, 0, 0, 5), *cur = make_csv(400, 1, 0, 6);
    loom_drift_report_t rep;
    char *why = NULL;
    assert_int_equal(compare(&o, ref, cur, &rep, &why), 0);
    assert_int_equal(col(&rep, "x")->test, LOOM_DRIFT_KS);
    assert_near(col(&rep, "x")->threshold, 0.05, 0);
    assert_true(col(&rep, "x")->drift);
    assert_int_equal(col(&rep, "c")->test, LOOM_DRIFT_CHISQ);
    /* k is constant in both: KS p = 1, no drift. */
    assert_false(col(&rep, "k")->drift);
    /* One of three columns: under the default share of one half. */
    assert_false(rep.drift);
    loom_drift_report_free(&rep);
    /* A lower share makes the dataset drift; a threshold override stops x. */
    loom_drift_colopt_t opt = {
        .name = "x", .test = LOOM_DRIFT_PSI, .has_threshold = true, .threshold = 100};
    o.has_share = true;
    o.share = 0.3;
    assert_int_equal(compare(&o, ref, cur, &rep, &why), 0);
    assert_true(rep.drift);
    loom_drift_report_free(&rep);
    o.colopts = &opt;
    o.n_colopts = 1;
    assert_int_equal(compare(&o, ref, cur, &rep, &why), 0);
    assert_int_equal(col(&rep, "x")->test, LOOM_DRIFT_PSI);
    assert_false(col(&rep, "x")->drift);
    assert_false(rep.drift);
    loom_drift_report_free(&rep);
    free(ref);
    free(cur);
}

static void test_types_missing_and_invalid(void **state)
{
    (void)state;
    const char *ref = "n,s,m,e\n1,a,1,\n2,b,x,NA\nNA,a,3,\n4, b ,4,null\n";
    const char *cur = "e,m,s,n\n,2,b,null\n,2,c,5\nnan,y,a,6\n";
    loom_drift_opts_t o = {0};
    loom_drift_report_t rep;
    char *why = NULL;
    assert_int_equal(compare(&o, ref, cur, &rep, &why), 0);
    const loom_drift_col_t *n = col(&rep, "n"), *s = col(&rep, "s"), *m = col(&rep, "m");
    assert_int_equal(n->type, LOOM_DRIFT_NUMERIC);
    assert_int_equal(n->missing[0], 1);
    assert_int_equal(n->missing[1], 1);
    assert_int_equal(n->values[0], 3);
    assert_int_equal(s->type, LOOM_DRIFT_CATEGORICAL);
    assert_int_equal(s->bins, 3);                      /* a, b (blanks trimmed), c */
    assert_int_equal(m->type, LOOM_DRIFT_CATEGORICAL); /* "x" is not a number */
    assert_non_null(col(&rep, "e")->skipped);
    assert_int_equal(col(&rep, "e")->missing[0], 4);
    assert_int_equal(rep.tested, 3);
    loom_drift_report_free(&rep);
    /* Declared numeric: the text values count as invalid, not as categories. */
    loom_drift_colopt_t decl = {.name = "m", .type = LOOM_DRIFT_NUMERIC};
    o.colopts = &decl;
    o.n_colopts = 1;
    assert_int_equal(compare(&o, ref, cur, &rep, &why), 0);
    m = col(&rep, "m");
    assert_int_equal(m->type, LOOM_DRIFT_NUMERIC);
    assert_int_equal(m->invalid[0], 1);
    assert_int_equal(m->invalid[1], 1);
    assert_int_equal(m->values[0], 3);
    assert_int_equal(m->used[1], 2);
    loom_drift_report_free(&rep);
    /* A numeric test on a categorical column is refused. */
    loom_drift_colopt_t bad = {.name = "s", .test = LOOM_DRIFT_KS};
    o.colopts = &bad;
    assert_int_equal(compare(&o, ref, cur, &rep, &why), LOOM_EINVAL);
    assert_non_null(strstr(why, "'s' is categorical"));
    free(why);
}

static void test_columns_and_headers(void **state)
{
    (void)state;
    loom_drift_report_t rep;
    char *why = NULL;
    const char *const pick[] = {"b"};
    loom_drift_opts_t o = {.columns = pick, .n_columns = 1};
    assert_int_equal(compare(&o, "a,b\n1,2\n", "b\n3\n", &rep, &why), 0);
    assert_int_equal(rep.n_columns, 1);
    loom_drift_report_free(&rep);
    const char *const nope[] = {"zz"};
    o.columns = nope;
    assert_int_equal(compare(&o, "a,b\n1,2\n", "b\n3\n", &rep, &why), LOOM_ENOTFOUND);
    assert_string_equal(why, "ref.csv: no column 'zz' in the header");
    free(why);
    loom_drift_opts_t all = {0};
    assert_int_equal(compare(&all, "a,b\n1,2\n", "b\n3\n", &rep, &why), LOOM_ENOTFOUND);
    assert_string_equal(why, "cur.csv: no column 'a' (the reference has it)");
    free(why);
    assert_int_equal(compare(&all, "a,a\n1,2\n", "a\n3\n", &rep, &why), LOOM_EINVAL);
    free(why);
    assert_int_equal(compare(&all, "", "a\n3\n", &rep, &why), LOOM_EPARSE);
    assert_string_equal(why, "ref.csv: empty file (a CSV file needs a header row)");
    free(why);
    assert_int_equal(compare(&all, "a,b\n1,2\n", "a,b\n1,2,3\n", &rep, &why), LOOM_EPARSE);
    assert_string_equal(why, "cur.csv:2:5: record has 3 fields, the header has 2");
    free(why);
    loom_drift_colopt_t ghost = {.name = "ghost", .test = LOOM_DRIFT_JS};
    all.colopts = &ghost;
    all.n_colopts = 1;
    assert_int_equal(compare(&all, "a\n1\n", "a\n3\n", &rep, &why), LOOM_EINVAL);
    free(why);
}

static void test_single_row_and_constant(void **state)
{
    (void)state;
    loom_drift_opts_t o = {0};
    loom_drift_report_t rep;
    char *why = NULL;
    /* One row each, same value: nothing moved. */
    assert_int_equal(compare(&o, "v,c\n5,a\n", "v,c\n5,a\n", &rep, &why), 0);
    assert_near(col(&rep, "v")->ks, 0, 0);
    assert_true(col(&rep, "v")->std_zero);
    assert_false(rep.drift);
    loom_drift_report_free(&rep);
    /* A constant reference: W1 is divided by 1 (here |7 - 5| = 2). */
    assert_int_equal(compare(&o, "v\n5\n5\n5\n", "v\n7\n7\n", &rep, &why), 0);
    assert_near(col(&rep, "v")->wasserstein, 2, 1e-12);
    assert_near(col(&rep, "v")->ks, 1, 0);
    assert_int_equal(col(&rep, "v")->bins, 2);
    loom_drift_report_free(&rep);
}

static void test_too_many_categories_skipped(void **state)
{
    (void)state;
    loom_buf_t ref = {0}, cur = {0};
    loom_buf_puts(&ref, "id\n");
    loom_buf_puts(&cur, "id\n");
    for (int i = 0; i <= LOOM_DRIFT_MAX_CATEGORIES; i++) loom_buf_printf(&ref, "u%d\n", i);
    loom_buf_puts(&cur, "u1\n");
    loom_drift_opts_t o = {0};
    loom_drift_report_t rep;
    char *why = NULL;
    assert_int_equal(compare(&o, ref.data, cur.data, &rep, &why), 0);
    assert_non_null(strstr(col(&rep, "id")->skipped, "distinct values"));
    assert_int_equal(rep.tested, 0);
    assert_false(rep.drift);
    loom_drift_report_free(&rep);
    loom_buf_free(&ref);
    loom_buf_free(&cur);
}

static void test_sampling_is_seeded(void **state)
{
    (void)state;
    char *ref = make_csv(5000, 0, 0, 7), *cur = make_csv(4000, 0.3, 0, 8);
    loom_drift_opts_t o = {.sample = 300, .seed = 42};
    loom_drift_report_t a, b, c, full;
    char *why = NULL;
    assert_int_equal(compare(&o, ref, cur, &a, &why), 0);
    assert_int_equal(compare(&o, ref, cur, &b, &why), 0);
    o.seed = 43;
    assert_int_equal(compare(&o, ref, cur, &c, &why), 0);
    o.sample = 0;
    assert_int_equal(compare(&o, ref, cur, &full, &why), 0);
    const loom_drift_col_t *xa = col(&a, "x"), *xb = col(&b, "x"), *xc = col(&c, "x");
    assert_true(a.sampled);
    assert_true(xa->sampled);
    assert_int_equal(xa->used[0], 300);
    assert_int_equal(xa->used[1], 300);
    assert_int_equal(xa->values[0], 5000); /* counts stay exact */
    /* The same seed gives the same sample, another seed another one. */
    assert_true(xa->ks == xb->ks && xa->wasserstein == xb->wasserstein && xa->psi == xb->psi);
    assert_true(xa->ks != xc->ks || xa->wasserstein != xc->wasserstein);
    assert_false(full.sampled);
    assert_int_equal(col(&full, "x")->used[0], 5000);
    /* Categories are always exact. */
    assert_true(col(&a, "c")->js == col(&full, "c")->js);
    json_t *j = loom_drift_report_json(&a);
    assert_true(json_is_true(json_object_get(j, "sampled")));
    assert_int_equal(json_integer_value(json_object_get(j, "sample_size")), 300);
    json_decref(j);
    loom_drift_report_free(&a);
    loom_drift_report_free(&b);
    loom_drift_report_free(&c);
    loom_drift_report_free(&full);
    free(ref);
    free(cur);
}

static void test_sample_is_uniform(void **state)
{
    (void)state;
    /* The reference holds 1..20000 in ascending order, the current data the
     * same values scrambled. A reservoir that favoured early (or late) rows
     * would see a much smaller (larger) reference than current sample; a
     * uniform one sees two samples of one distribution. */
    loom_buf_t ref = {0}, cur = {0};
    loom_buf_puts(&ref, "v\n");
    loom_buf_puts(&cur, "v\n");
    for (int i = 0; i < 20000; i++) {
        loom_buf_printf(&ref, "%d\n", i + 1);
        loom_buf_printf(&cur, "%d\n", (int)((i * 7919L) % 20000) + 1);
    }
    for (uint64_t seed = 1; seed <= 5; seed++) {
        loom_drift_opts_t o = {.sample = 500, .seed = seed};
        loom_drift_report_t rep;
        char *why = NULL;
        assert_int_equal(compare(&o, ref.data, cur.data, &rep, &why), 0);
        const loom_drift_col_t *v = col(&rep, "v");
        assert_true(v->sampled);
        /* Two uniform samples of 500: D is about 0.05 (it would be ~0.5 if
         * the reference kept its first half), p is no outlier. */
        if (!(v->ks < 0.12 && v->ks_p > 0.001 && v->wasserstein < 0.2))
            fail_msg("seed %llu: KS %g p %g W1 %g", (unsigned long long)seed, v->ks, v->ks_p,
                     v->wasserstein);
        loom_drift_report_free(&rep);
    }
    loom_buf_free(&ref);
    loom_buf_free(&cur);
}

/* ---- Prediction monitoring ---- */

static void test_auc_known(void **state)
{
    (void)state;
    /* By hand: positives {0.4, 0.8, 0.9}, negatives {0.1, 0.4, 0.5}. 0.9 and
     * 0.8 beat all three negatives (3 + 3); 0.4 beats 0.1 and ties 0.4
     * (1 + 1/2). U = 7.5 of 9 pairs: AUC = 0.8333. */
    double pos[] = {0.4, 0.8, 0.9}, neg[] = {0.1, 0.4, 0.5};
    assert_near(loom_drift_auc(pos, 3, neg, 3), 7.5 / 9, 1e-15);
    /* Perfect, reversed, and all tied. */
    double hi[] = {2, 3}, lo[] = {0, 1}, same[] = {1, 1};
    assert_near(loom_drift_auc(hi, 2, lo, 2), 1, 0);
    assert_near(loom_drift_auc(lo, 2, hi, 2), 0, 0);
    assert_near(loom_drift_auc(same, 2, same, 2), 0.5, 0);
    assert_true(isnan(loom_drift_auc(hi, 2, lo, 0)));
}

static int perf(loom_perf_metric_t m, double baseline, const char *text, loom_perf_report_t *r,
                char **why)
{
    loom_perf_opts_t o = {.metric = m, .label = "y", .prediction = "p", .baseline = baseline};
    loom_csv_t *csv = loom_csv_new_mem("pred.csv", text, strlen(text));
    int rc = loom_perf_read(&o, csv, r, why);
    loom_csv_destroy(&csv);
    return rc;
}

static void test_perf_metrics(void **state)
{
    (void)state;
    loom_perf_report_t r;
    char *why = NULL;
    /* Accuracy: rows 1-4 are labelled, 3 of them right ("1.0" equals "1" as
     * numbers); the label of the 5th has not arrived. 0.75 < 0.9 * 0.95. */
    const char *acc = "id,y,p\n1,cat,cat\n2,1,1.0\n3,0,1\n4,dog,dog\n5,,cat\n";
    assert_int_equal(perf(LOOM_PERF_ACCURACY, 0.9, acc, &r, &why), 0);
    assert_near(r.value, 0.75, 1e-15);
    assert_int_equal(r.rows, 5);
    assert_int_equal(r.unlabelled, 1);
    assert_int_equal(r.used, 4);
    assert_near(r.limit, 0.855, 1e-12);
    assert_true(r.degraded);
    assert_int_equal(perf(LOOM_PERF_ACCURACY, 0.78, acc, &r, &why), 0);
    assert_false(r.degraded); /* 0.75 >= 0.78 * 0.95 = 0.741 */
    /* RMSE: errors 1, -2, 2 -> sqrt(9 / 3) = sqrt(3); "x" is invalid. */
    const char *reg = "y,p\n1,2\n4,2\n0,2\n5,x\nNA,3\n";
    assert_int_equal(perf(LOOM_PERF_RMSE, 1.6, reg, &r, &why), 0);
    assert_near(r.value, sqrt(3), 1e-15);
    assert_int_equal(r.invalid, 1);
    assert_int_equal(r.unlabelled, 1);
    assert_true(r.degraded); /* sqrt(3) = 1.732 > 1.6 * 1.05 = 1.68 */
    assert_int_equal(perf(LOOM_PERF_RMSE, 1.7, reg, &r, &why), 0);
    assert_false(r.degraded);
    /* AUC with the hand-worked scores above, labels in three spellings. */
    const char *cls = "y,p\n1,0.4\ntrue,0.8\nyes,0.9\n0,0.1\nfalse,0.4\nno,0.5\n2,0.3\n";
    assert_int_equal(perf(LOOM_PERF_AUC, 0.8, cls, &r, &why), 0);
    assert_near(r.value, 7.5 / 9, 1e-15);
    assert_int_equal(r.positives, 3);
    assert_int_equal(r.negatives, 3);
    assert_int_equal(r.invalid, 1); /* the label 2 */
    assert_false(r.degraded);
    json_t *j = loom_perf_report_json(&r);
    assert_string_equal(json_string_value(json_object_get(j, "metric")), "auc");
    assert_true(json_is_false(json_object_get(j, "drift")));
    json_decref(j);
    /* Failures: one class only, no labels at all, a missing column. */
    assert_int_equal(perf(LOOM_PERF_AUC, 0.8, "y,p\n1,0.5\n1,0.7\n", &r, &why), LOOM_EINVAL);
    assert_non_null(strstr(why, "both classes"));
    free(why);
    assert_int_equal(perf(LOOM_PERF_ACCURACY, 0.8, "y,p\n,1\nNA,2\n", &r, &why), LOOM_EINVAL);
    assert_non_null(strstr(why, "2 unlabelled"));
    free(why);
    assert_int_equal(perf(LOOM_PERF_ACCURACY, 0.8, "y,q\n1,1\n", &r, &why), LOOM_ENOTFOUND);
    free(why);
}

/* ---- The command, end to end ---- */

typedef struct {
    char dir[64];
} cli_fx_t;

static char *write_tmp(const cli_fx_t *fx, const char *name, const char *text)
{
    char *path = loom_xasprintf("%s/%s", fx->dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

/* Runs `loom drift ARGS...`; returns its exit status, stdout in *out. */
static int run_loom(const char *const *args, char **out)
{
    const char *build = getenv("LOOM_BUILD_DIR");
    assert_non_null(build);
    char *exe = loom_xasprintf("%s/loom", build);
    const char *argv[16] = {exe, "drift"};
    size_t n = 2;
    for (; args[n - 2]; n++) {
        assert_true(n + 1 < sizeof argv / sizeof argv[0]);
        argv[n] = args[n - 2];
    }
    argv[n] = NULL;
    int fd[2];
    assert_int_equal(pipe(fd), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fd[1], 1);
    posix_spawn_file_actions_addclose(&fa, fd[0]);
    posix_spawn_file_actions_addclose(&fa, fd[1]);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    pid_t pid;
    assert_int_equal(posix_spawn(&pid, exe, &fa, NULL, (char **)argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    close(fd[1]);
    loom_buf_t b = {0};
    char buf[4096];
    for (ssize_t k; (k = read(fd[0], buf, sizeof buf)) != 0;) {
        if (k < 0 && errno == EINTR) continue;
        assert_true(k > 0);
        loom_buf_append(&b, buf, (size_t)k);
    }
    close(fd[0]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    free(exe);
    loom_buf_puts(&b, "");
    *out = loom_buf_steal(&b);
    return WEXITSTATUS(status);
}

static void test_cli_exit_statuses(void **state)
{
    (void)state;
    /* The command must be in cli/main.c's table: "unknown command" is 2. */
    char *out;
    const char *const help[] = {"--help", NULL};
    if (run_loom(help, &out) != 0) fail_msg("`loom drift --help` failed: is drift in cli/main.c?");
    free(out);
    cli_fx_t fx;
    snprintf(fx.dir, sizeof fx.dir, "/tmp/loom-test-drift-XXXXXX");
    assert_non_null(mkdtemp(fx.dir));
    char *base = make_csv(2000, 0, 0, 1), *same = make_csv(2000, 0, 0, 2);
    char *moved = make_csv(2000, 1, 0.2, 3);
    char *ref = write_tmp(&fx, "ref.csv", base), *ok = write_tmp(&fx, "same.csv", same);
    char *bad = write_tmp(&fx, "moved.csv", moved);
    char *broken = write_tmp(&fx, "broken.csv", "x,c,k\n1,a,1\n2,\"b,1\n");

    const char *const a1[] = {ref, ok, "--json", NULL};
    assert_int_equal(run_loom(a1, &out), 0);
    json_error_t err;
    json_t *j = json_loads(out, 0, &err);
    assert_non_null(j);
    assert_true(json_is_false(json_object_get(j, "drift")));
    assert_int_equal(json_array_size(json_object_get(j, "columns")), 3);
    json_decref(j);
    free(out);

    const char *const a2[] = {ref, bad, "--json", NULL};
    assert_int_equal(run_loom(a2, &out), 1);
    j = json_loads(out, 0, &err);
    assert_non_null(j);
    assert_true(json_is_true(json_object_get(j, "drift")));
    assert_true(json_is_false(json_object_get(j, "sampled")));
    json_t *x = json_array_get(json_object_get(j, "columns"), 0);
    assert_string_equal(json_string_value(json_object_get(x, "name")), "x");
    assert_string_equal(json_string_value(json_object_get(x, "test")), "wasserstein");
    assert_true(json_is_true(json_object_get(x, "drift")));
    json_decref(j);
    free(out);

    /* The table, and options that change the outcome. */
    const char *const a3[] = {ref, bad, "--columns", "k", NULL};
    assert_int_equal(run_loom(a3, &out), 0);
    assert_non_null(strstr(out, "no drift"));
    free(out);
    const char *const a4[] = {ref,     bad,           "--threshold", "x=5", "--test",
                              "c=psi", "--threshold", "c=9",         NULL};
    assert_int_equal(run_loom(a4, &out), 0);
    free(out);

    /* Bad input or usage: 2, and no report on stdout. */
    const char *const bads[][8] = {
        {ref, broken, NULL},
        {ref, "/nonexistent/x.csv", NULL},
        {ref, NULL},
        {ref, ok, "--test", "x=median", NULL},
        {ref, ok, "--test", "c=ks", NULL},
        {ref, ok, "--share", "0", NULL},
        {ref, ok, "--columns", "nope", NULL},
        {ref, ok, "--numeric", "c", "--categorical", "c", NULL},
    };
    for (size_t i = 0; i < sizeof bads / sizeof bads[0]; i++) {
        int rc = run_loom(bads[i], &out);
        if (rc != 2) fail_msg("case %zu: exit %d", i, rc);
        assert_string_equal(out, "");
        free(out);
    }

    /* loom drift perf: within tolerance 0, degraded 1, bad input 2. */
    char *pred = write_tmp(&fx, "pred.csv", "y,p\n1,1\n0,0\n1,0\n,1\n");
    const char *const p1[] = {"perf",    pred, "--metric",     "accuracy", "--baseline", "0.7",
                              "--label", "y",  "--prediction", "p",        "--json",     NULL};
    assert_int_equal(run_loom(p1, &out), 0); /* 2/3 >= 0.7 * 0.95 */
    j = json_loads(out, 0, &err);
    assert_non_null(j);
    assert_near(json_real_value(json_object_get(j, "value")), 2.0 / 3, 1e-12);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "rows"), "labelled")),
                     3);
    json_decref(j);
    free(out);
    const char *const p2[] = {"perf",    pred, "--metric",     "accuracy", "--baseline", "0.9",
                              "--label", "y",  "--prediction", "p",        NULL};
    assert_int_equal(run_loom(p2, &out), 1);
    assert_non_null(strstr(out, "DEGRADED"));
    free(out);
    const char *const p3[] = {"perf",    pred, "--metric",     "auc",  "--baseline", "0.9",
                              "--label", "y",  "--prediction", "nope", NULL};
    assert_int_equal(run_loom(p3, &out), 2);
    free(out);
    const char *const p4[] = {"perf", pred,           "--metric", "auc", "--label",
                              "y",    "--prediction", "p",        NULL};
    assert_int_equal(run_loom(p4, &out), 2); /* no --baseline */
    free(out);

    const char *files[] = {ref, ok, bad, broken, pred};
    for (size_t i = 0; i < 5; i++) {
        unlink(files[i]);
        free((char *)files[i]);
    }
    assert_int_equal(rmdir(fx.dir), 0);
    free(base);
    free(same);
    free(moved);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_csv_rfc4180),
        cmocka_unit_test(test_csv_errors_name_line_and_column),
        cmocka_unit_test(test_csv_file),
        cmocka_unit_test(test_sort_matches_qsort),
        cmocka_unit_test(test_ks_known_samples),
        cmocka_unit_test(test_kolmogorov_distribution),
        cmocka_unit_test(test_wasserstein_known),
        cmocka_unit_test(test_identical_samples_show_no_drift),
        cmocka_unit_test(test_quantile_edges),
        cmocka_unit_test(test_psi_and_js_known),
        cmocka_unit_test(test_incomplete_gamma),
        cmocka_unit_test(test_chisq_known_contingency),
        cmocka_unit_test(test_numbers_and_missing),
        cmocka_unit_test(test_shifted_normal_drifts),
        cmocka_unit_test(test_small_reference_uses_p_values),
        cmocka_unit_test(test_types_missing_and_invalid),
        cmocka_unit_test(test_columns_and_headers),
        cmocka_unit_test(test_single_row_and_constant),
        cmocka_unit_test(test_too_many_categories_skipped),
        cmocka_unit_test(test_sampling_is_seeded),
        cmocka_unit_test(test_sample_is_uniform),
        cmocka_unit_test(test_auc_known),
        cmocka_unit_test(test_perf_metrics),
        cmocka_unit_test(test_cli_exit_statuses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
