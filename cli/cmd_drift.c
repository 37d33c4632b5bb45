/* `loom drift REFERENCE.csv CURRENT.csv`: compares two datasets column by
 * column for data drift, offline (statistics in lib/drift*.c). Exit status
 * 0 when the dataset has not drifted, 1 when it has, 2 for bad usage or
 * input; nothing is printed until both files have been read whole, so a bad
 * file leaves no partial report. */
#include "cli.h"
#include "fmt.h"
#include "table.h"

#include "loom/drift.h"
#include "loom/err.h"
#include "loom/util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SAMPLE 100000000

typedef struct {
    char **columns; /* --columns, split */
    size_t n_columns;
    loom_drift_colopt_t *colopts;
    size_t n_colopts;
    loom_drift_opts_t opts;
    const char *emit; /* --emit EVENT: post the report to loomd as this event */
} drift_args_t;

static void args_free(drift_args_t *a)
{
    for (size_t i = 0; i < a->n_columns; i++) free(a->columns[i]);
    free(a->columns);
    for (size_t i = 0; i < a->n_colopts; i++) free((char *)a->colopts[i].name);
    free(a->colopts);
}

/* The options of one column, added on first mention. */
static loom_drift_colopt_t *colopt(drift_args_t *a, const char *name, size_t len)
{
    for (size_t i = 0; i < a->n_colopts; i++)
        if (strlen(a->colopts[i].name) == len && memcmp(a->colopts[i].name, name, len) == 0)
            return &a->colopts[i];
    a->colopts = loom_xrealloc(a->colopts, (a->n_colopts + 1) * sizeof *a->colopts);
    loom_drift_colopt_t *o = &a->colopts[a->n_colopts++];
    memset(o, 0, sizeof *o);
    o->name = loom_xstrndup(name, len);
    return o;
}

/* Splits "a,b,c" and calls take for each name; false on an empty name. */
static bool each_name(loom_cli_t *cli, const char *opt, const char *list, drift_args_t *a,
                      bool (*take)(loom_cli_t *, drift_args_t *, const char *, size_t))
{
    for (const char *p = list;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len == 0) {
            cli_usage_error(cli, "%s: empty column name in '%s'", opt, list);
            return false;
        }
        if (!take(cli, a, p, len)) return false;
        if (!comma) return true;
        p = comma + 1;
    }
}

static bool take_column(loom_cli_t *cli, drift_args_t *a, const char *name, size_t len)
{
    a->columns = loom_xrealloc(a->columns, (a->n_columns + 1) * sizeof *a->columns);
    a->columns[a->n_columns++] = loom_xstrndup(name, len);
    return true;
}

static bool declare(loom_cli_t *cli, drift_args_t *a, const char *name, size_t len,
                    loom_drift_type_t type)
{
    loom_drift_colopt_t *o = colopt(a, name, len);
    if (o->type != LOOM_DRIFT_AUTO && o->type != type) {
        cli_usage_error(cli, "column '%s' is declared both --numeric and --categorical", o->name);
        return false;
    }
    o->type = type;
    return true;
}

static bool take_numeric(loom_cli_t *cli, drift_args_t *a, const char *name, size_t len)
{
    return declare(cli, a, name, len, LOOM_DRIFT_NUMERIC);
}

static bool take_categorical(loom_cli_t *cli, drift_args_t *a, const char *name, size_t len)
{
    return declare(cli, a, name, len, LOOM_DRIFT_CATEGORICAL);
}

/* "COL=VALUE": the column's options and the value. */
static loom_drift_colopt_t *col_assign(loom_cli_t *cli, drift_args_t *a, const char *opt,
                                       const char *arg, const char **value)
{
    const char *eq = strrchr(arg, '=');
    if (!eq || eq == arg || !eq[1]) {
        cli_usage_error(cli, "%s wants COLUMN=VALUE, not '%s'", opt, arg);
        return NULL;
    }
    *value = eq + 1;
    return colopt(a, arg, (size_t)(eq - arg));
}

static bool parse_real(const char *s, double lo, double hi, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !isfinite(v) || v < lo || v > hi) return false;
    *out = v;
    return true;
}

static bool take_test(loom_cli_t *cli, drift_args_t *a, const char *arg)
{
    const char *value;
    loom_drift_colopt_t *o = col_assign(cli, a, "--test", arg, &value);
    if (!o) return false;
    if (loom_drift_test_parse(value, &o->test) != 0) {
        cli_usage_error(cli, "--test %s: unknown test '%s' (psi, ks, wasserstein, js or chisq)",
                        arg, value);
        return false;
    }
    return true;
}

static bool take_threshold(loom_cli_t *cli, drift_args_t *a, const char *arg)
{
    const char *value;
    loom_drift_colopt_t *o = col_assign(cli, a, "--threshold", arg, &value);
    if (!o) return false;
    if (!parse_real(value, 0, INFINITY, &o->threshold)) {
        cli_usage_error(cli, "--threshold %s: '%s' is not a number >= 0", arg, value);
        return false;
    }
    o->has_threshold = true;
    return true;
}

enum {
    OPT_COLUMNS = 0x2000,
    OPT_NUMERIC,
    OPT_CATEGORICAL,
    OPT_TEST,
    OPT_THRESHOLD,
    OPT_SHARE,
    OPT_SEED,
    OPT_SAMPLE,
    OPT_EMIT,
};

/* One option. Returns -1 to go on, else the exit status. */
static int take_option(loom_cli_t *cli, drift_args_t *a, int c)
{
    int64_t n;
    bool ok = true;
    switch (c) {
    case OPT_COLUMNS:
        ok = each_name(cli, "--columns", optarg, a, take_column);
        break;
    case OPT_NUMERIC:
        ok = each_name(cli, "--numeric", optarg, a, take_numeric);
        break;
    case OPT_CATEGORICAL:
        ok = each_name(cli, "--categorical", optarg, a, take_categorical);
        break;
    case OPT_TEST:
        ok = take_test(cli, a, optarg);
        break;
    case OPT_THRESHOLD:
        ok = take_threshold(cli, a, optarg);
        break;
    case OPT_SHARE:
        if (!parse_real(optarg, 0, 1, &a->opts.share) || a->opts.share == 0)
            return cli_usage_error(cli, "--share wants a number in (0, 1], not '%s'", optarg);
        a->opts.has_share = true;
        break;
    case OPT_SEED:
        if (loom_parse_i64(optarg, 0, INT64_MAX, &n) != 0)
            return cli_usage_error(cli, "--seed wants a whole number >= 0, not '%s'", optarg);
        a->opts.seed = (uint64_t)n;
        break;
    case OPT_SAMPLE:
        if (loom_parse_i64(optarg, 1, MAX_SAMPLE, &n) != 0)
            return cli_usage_error(cli, "--sample wants a whole number in 1..%d, not '%s'",
                                   MAX_SAMPLE, optarg);
        a->opts.sample = (size_t)n;
        break;
    case OPT_EMIT:
        if (!loom_name_valid(optarg))
            return cli_usage_error(cli,
                                   "--emit wants an event name (letters, digits, '_', '.', "
                                   "'-'), not '%s'",
                                   optarg);
        a->emit = optarg;
        break;
    default:
        return cli_opt_common(cli, c);
    }
    return ok ? -1 : CLI_EXIT_USAGE;
}

static int parse_args(loom_cli_t *cli, int argc, char **argv, drift_args_t *a)
{
    static const struct option longopts[] = {
        {"columns", required_argument, NULL, OPT_COLUMNS},
        {"numeric", required_argument, NULL, OPT_NUMERIC},
        {"categorical", required_argument, NULL, OPT_CATEGORICAL},
        {"test", required_argument, NULL, OPT_TEST},
        {"threshold", required_argument, NULL, OPT_THRESHOLD},
        {"share", required_argument, NULL, OPT_SHARE},
        {"seed", required_argument, NULL, OPT_SEED},
        {"sample", required_argument, NULL, OPT_SAMPLE},
        {"emit", required_argument, NULL, OPT_EMIT},
        CLI_COMMON_LONGOPTS,
        {0}};
    a->opts.seed = LOOM_DRIFT_SEED;
    cli_opts_begin(cli, argv);
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        int rc = take_option(cli, a, c);
        if (rc >= 0) return rc;
    }
    if (argc - optind < 2) return cli_usage_error(cli, "missing REFERENCE.csv and CURRENT.csv");
    if (argc - optind > 2) return cli_usage_error(cli, "too many operands: '%s'", argv[optind + 2]);
    a->opts.columns = (const char *const *)a->columns;
    a->opts.n_columns = a->n_columns;
    a->opts.colopts = a->colopts;
    a->opts.n_colopts = a->n_colopts;
    return -1;
}

static void add_stat(cli_table_t *t, double v)
{
    if (isfinite(v))
        cli_table_addf(t, "%.4f", v);
    else
        cli_table_add(t, NULL);
}

static void add_score(cli_table_t *t, const loom_drift_col_t *c)
{
    if (c->skipped) {
        cli_table_add(t, NULL);
        cli_table_add(t, NULL);
    } else if (loom_drift_test_is_pvalue(c->test)) {
        cli_table_addf(t, "p=%.4g", c->score);
        cli_table_addf(t, "p<%g", c->threshold);
    } else {
        cli_table_addf(t, "%.4f", c->score);
        cli_table_addf(t, ">=%g", c->threshold);
    }
}

static void print_notes(const loom_drift_report_t *r)
{
    for (size_t i = 0; i < r->n_columns; i++) {
        const loom_drift_col_t *c = &r->columns[i];
        char *name = cli_sanitize(c->name);
        if (c->skipped) printf("  %s: not tested: %s\n", name, c->skipped);
        if (c->std_zero)
            printf("  %s: the reference is constant, so W1 is divided by 1, not by its standard "
                   "deviation\n",
                   name);
        if (c->invalid[0] + c->invalid[1] > 0)
            printf("  %s: values that are not numbers left out: %llu in the reference, %llu in "
                   "the current data\n",
                   name, (unsigned long long)c->invalid[0], (unsigned long long)c->invalid[1]);
        free(name);
    }
    if (r->sampled)
        printf("  sampled: numeric columns with more than %zu values per file were compared on a "
               "uniform sample of %zu (seed %llu)\n",
               r->sample, r->sample, (unsigned long long)r->seed);
    printf("  PSI and JS use %d reference-quantile bins (or the categories); PSI counts an empty "
           "bin as a share of %g\n",
           LOOM_DRIFT_BINS, LOOM_DRIFT_EPSILON);
}

static void print_report(const loom_drift_report_t *r)
{
    static const char *const headers[] = {"COLUMN", "TYPE", "TEST", "SCORE", "THRESHOLD", "DRIFT",
                                          "PSI",    "KS",   "W1",   "JS",    "MISSING"};
    cli_table_t *t = cli_table_new(headers, sizeof headers / sizeof headers[0]);
    for (size_t i = 0; i < r->n_columns; i++) {
        const loom_drift_col_t *c = &r->columns[i];
        cli_table_add(t, c->name);
        cli_table_add(t, loom_drift_type_name(c->type));
        cli_table_add(t, c->skipped ? NULL : loom_drift_test_name(c->test));
        add_score(t, c);
        cli_table_add(t, c->skipped ? "skipped" : c->drift ? "yes" : "no");
        add_stat(t, c->psi);
        add_stat(t, c->ks);
        add_stat(t, c->wasserstein);
        add_stat(t, c->js);
        cli_table_addf(t, "%llu/%llu", (unsigned long long)c->missing[0],
                       (unsigned long long)c->missing[1]);
    }
    cli_table_print(t, stdout);
    cli_table_destroy(&t);
    printf("\nrows: %llu in the reference, %llu in the current data\n",
           (unsigned long long)r->rows[0], (unsigned long long)r->rows[1]);
    printf("drift in %zu of %zu columns tested (%.0f%%; the dataset drifts at %g%% or more): %s\n",
           r->drifted, r->tested, r->share * 100, r->share_threshold * 100,
           r->drift ? "DRIFT" : "no drift");
    printf("notes:\n");
    print_notes(r);
}

/* ---- loom drift perf ---- */

static const cli_cmd_t perf_cmd = {
    "drift perf", NULL,
    "drift perf PREDICTIONS.csv --metric accuracy|auc|rmse --baseline X --label COL\n"
    "       --prediction COL [--tolerance X] [--sample N] [--seed N]",
    "Compare a model's metric on labelled predictions with a baseline, offline.",
    "Rows whose label is missing (empty, NA, NaN, null) are counted and left out,\n"
    "so the file may hold predictions whose labels have not arrived yet.\n"
    "  --metric M        accuracy (prediction equals label, as numbers or text),\n"
    "                    auc (a score against a label 1/0, true/false or yes/no),\n"
    "                    or rmse (numeric prediction and label)\n"
    "  --baseline X      the metric's expected value, e.g. at training time\n"
    "  --tolerance X     accepted loss relative to the baseline (default 0.05):\n"
    "                    degraded when accuracy or auc < baseline * (1 - X), or\n"
    "                    rmse > baseline * (1 + X)\n"
    "  --sample N, --seed N   auc keeps N scores per class (default 1000000), a\n"
    "                    seeded uniform sample beyond\n"
    "Exit status: 0 within tolerance, 1 degraded, 2 bad usage or input.\n"};

enum { OPT_METRIC = 0x2100, OPT_BASELINE, OPT_LABEL, OPT_PREDICTION, OPT_TOLERANCE };

static int perf_option(loom_cli_t *cli, loom_perf_opts_t *o, bool *has_baseline, int c)
{
    int64_t n;
    switch (c) {
    case OPT_METRIC:
        if (loom_perf_metric_parse(optarg, &o->metric) != 0)
            return cli_usage_error(cli, "--metric: accuracy, auc or rmse, not '%s'", optarg);
        return -1;
    case OPT_BASELINE:
        if (!parse_real(optarg, -INFINITY, INFINITY, &o->baseline))
            return cli_usage_error(cli, "--baseline wants a number, not '%s'", optarg);
        *has_baseline = true;
        return -1;
    case OPT_LABEL:
        o->label = optarg;
        return -1;
    case OPT_PREDICTION:
        o->prediction = optarg;
        return -1;
    case OPT_TOLERANCE:
        if (!parse_real(optarg, 0, INFINITY, &o->tolerance))
            return cli_usage_error(cli, "--tolerance wants a number >= 0, not '%s'", optarg);
        o->has_tolerance = true;
        return -1;
    case OPT_SEED:
        if (loom_parse_i64(optarg, 0, INT64_MAX, &n) != 0)
            return cli_usage_error(cli, "--seed wants a whole number >= 0, not '%s'", optarg);
        o->seed = (uint64_t)n;
        return -1;
    case OPT_SAMPLE:
        if (loom_parse_i64(optarg, 1, MAX_SAMPLE, &n) != 0)
            return cli_usage_error(cli, "--sample wants a whole number in 1..%d, not '%s'",
                                   MAX_SAMPLE, optarg);
        o->sample = (size_t)n;
        return -1;
    default:
        return cli_opt_common(cli, c);
    }
}

static void print_perf(const loom_perf_report_t *r)
{
    static const char *const headers[] = {"METRIC", "VALUE", "BASELINE", "LIMIT", "DEGRADED"};
    cli_table_t *t = cli_table_new(headers, 5);
    cli_table_add(t, loom_perf_metric_name(r->metric));
    cli_table_addf(t, "%.4f", r->value);
    cli_table_addf(t, "%g", r->baseline);
    cli_table_addf(t, "%s%.4f", r->metric == LOOM_PERF_RMSE ? "<=" : ">=", r->limit);
    cli_table_add(t, r->degraded ? "yes" : "no");
    cli_table_print(t, stdout);
    cli_table_destroy(&t);
    printf("\nrows: %llu, labelled %llu, used %llu (%llu without a prediction, %llu invalid)\n",
           (unsigned long long)r->rows, (unsigned long long)(r->rows - r->unlabelled),
           (unsigned long long)r->used, (unsigned long long)r->unscored,
           (unsigned long long)r->invalid);
    if (r->metric == LOOM_PERF_AUC)
        printf("classes: %llu positive, %llu negative%s\n", (unsigned long long)r->positives,
               (unsigned long long)r->negatives,
               r->sampled ? " (AUC computed on a seeded sample of each class)" : "");
    printf("%s\n", r->degraded ? "DEGRADED" : "within tolerance");
}

static int cmd_drift_perf(loom_cli_t *cli, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"metric", required_argument, NULL, OPT_METRIC},
        {"baseline", required_argument, NULL, OPT_BASELINE},
        {"label", required_argument, NULL, OPT_LABEL},
        {"prediction", required_argument, NULL, OPT_PREDICTION},
        {"tolerance", required_argument, NULL, OPT_TOLERANCE},
        {"seed", required_argument, NULL, OPT_SEED},
        {"sample", required_argument, NULL, OPT_SAMPLE},
        CLI_COMMON_LONGOPTS,
        {0}};
    cli->cmd = &perf_cmd;
    cli_opts_begin(cli, argv);
    snprintf(cli->prog, sizeof cli->prog, "loom drift perf");
    loom_perf_opts_t o = {.seed = LOOM_DRIFT_SEED};
    bool has_baseline = false;
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        int rc = perf_option(cli, &o, &has_baseline, c);
        if (rc >= 0) return rc;
    }
    if (!o.metric) return cli_usage_error(cli, "missing --metric");
    if (!has_baseline) return cli_usage_error(cli, "missing --baseline");
    if (!o.label || !o.prediction) return cli_usage_error(cli, "missing --label or --prediction");
    if (argc - optind != 1) return cli_usage_error(cli, "wants one PREDICTIONS.csv");
    loom_csv_t *csv = NULL;
    char *why = NULL;
    loom_perf_report_t r;
    int rc = loom_csv_open(argv[optind], &csv, &why);
    if (rc == 0) rc = loom_perf_read(&o, csv, &r, &why);
    loom_csv_destroy(&csv);
    if (rc < 0) {
        cli_error("%s", why);
        free(why);
        return CLI_EXIT_USAGE;
    }
    if (cli->json) {
        json_t *j = loom_perf_report_json(&r);
        cli_print_json(j);
        json_decref(j);
    } else {
        print_perf(&r);
    }
    return r.degraded ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}

/* Posts the report to loomd as event NAME; says what it started on stderr
 * (stdout holds the report). */
static int emit_report(loom_cli_t *cli, const char *name, const json_t *report)
{
    char *path = loom_xasprintf("/api/v1/events/%s", name);
    cli_http_resp_t r;
    int rc = cli_fetch(cli, "POST", path, report, &r);
    free(path);
    if (rc == CLI_EXIT_OK) {
        int64_t id = 0;
        cli_jint(r.json, "event_id", &id);
        size_t n = json_array_size(json_object_get(r.json, "outcome"));
        fprintf(stderr, "loom drift: sent as event %s #%lld (%zu pipeline%s listening)\n", name,
                (long long)id, n, n == 1 ? "" : "s");
    }
    cli_http_resp_free(&r);
    return rc;
}

int cmd_drift(loom_cli_t *cli, int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "perf") == 0) return cmd_drift_perf(cli, argc - 1, argv + 1);
    drift_args_t a = {0};
    int rc = parse_args(cli, argc, argv, &a);
    if (rc >= 0) {
        args_free(&a);
        return rc;
    }
    loom_drift_t *d = loom_drift_new(&a.opts);
    loom_drift_report_t report = {0};
    char *why = NULL;
    if (loom_drift_read_file(d, LOOM_DRIFT_REF, argv[optind], &why) < 0 ||
        loom_drift_read_file(d, LOOM_DRIFT_CUR, argv[optind + 1], &why) < 0 ||
        loom_drift_compute(d, &report, &why) < 0) {
        cli_error("%s", why);
        rc = CLI_EXIT_USAGE;
        goto out;
    }
    json_t *j = loom_drift_report_json(&report);
    if (cli->json)
        cli_print_json(j);
    else
        print_report(&report);
    if (report.tested == 0) {
        cli_error("no column could be compared");
        rc = CLI_EXIT_USAGE;
    } else {
        rc = report.drift ? CLI_EXIT_FAIL : CLI_EXIT_OK;
    }
    if (rc != CLI_EXIT_USAGE && a.emit) {
        /* Every check is sent, drifting or not: an event trigger's
         * `consecutive` counts checks in a row. */
        int sent = emit_report(cli, a.emit, j);
        if (sent != CLI_EXIT_OK) rc = sent;
    }
    json_decref(j);
out:
    free(why);
    loom_drift_report_free(&report);
    loom_drift_destroy(&d);
    args_free(&a);
    return rc;
}
