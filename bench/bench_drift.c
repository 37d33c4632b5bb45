/* loom-bench-drift [MB] [DIR]: how fast `loom drift` gets through CSV. It
 * writes two CSV files of MB/2 megabytes each (default 300 MB in all) into
 * DIR (default /tmp): a reference and a shifted current dataset with 8
 * numeric columns (decimals, integers, scientific notation, some missing)
 * and 3 categorical ones, like a feature table. Then it times the whole
 * computation (reading both files, parsing, sampling, sorting, statistics)
 * and, separately, the CSV reader alone, and prints MB/s on one core and the
 * peak memory, for docs/benchmarks.md. The files are removed afterwards.
 * Target: at least 100 MB/s per core, release build. */
#include "loom/csv.h"
#include "loom/drift.h"
#include "loom/util.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static const char header[] =
    "user_id,age,income,score,clicks,ratio,tiny,temp,country,device,plan\n";
static const char *const countries[] = {"fr", "de", "us", "uk", "jp", "br", "in", "es"};
static const char *const devices[] = {"mobile", "desktop", "tablet"};
static const char *const plans[] = {"free", "basic", "pro", "\"team, annual\""};

static uint64_t next_random(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static double uniform(uint64_t *s)
{
    return ((double)(next_random(s) >> 11) + 0.5) / 9007199254740992.0;
}

static double normal(uint64_t *s)
{
    return sqrt(-2 * log(uniform(s))) * cos(2 * M_PI * uniform(s));
}

/* Writes rows until the file holds bytes; shift moves every distribution. */
static int write_csv(const char *path, uint64_t bytes, double shift, uint64_t seed, uint64_t *rows)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        return -1;
    }
    static char buf[1 << 20];
    setvbuf(f, buf, _IOFBF, sizeof buf);
    fputs(header, f);
    uint64_t s = seed, written = sizeof header - 1, n = 0;
    while (written < bytes) {
        char line[256], temp[16] = ""; /* temp: missing one row in 50 */
        int age = (int)(38 + 12 * normal(&s) + 3 * shift);
        double income = exp(10.5 + 0.6 * normal(&s) + 0.1 * shift);
        if (next_random(&s) % 50) snprintf(temp, sizeof temp, "%.1f", 15 + 8 * normal(&s) + shift);
        const char *country = countries[next_random(&s) % (shift > 0 ? 8 : 6)];
        int len = snprintf(line, sizeof line, "%llu,%d,%.2f,%.6f,%d,%.4e,%.3g,%s,%s,%s,%s\n",
                           (unsigned long long)(1000000 + n), age, income,
                           0.5 + 0.15 * normal(&s) + 0.05 * shift, (int)(next_random(&s) % 40),
                           uniform(&s) * (1 + shift), 1e-3 * normal(&s), temp, country,
                           devices[next_random(&s) % 3], plans[next_random(&s) % 4]);
        fwrite(line, 1, (size_t)len, f);
        written += (uint64_t)len;
        n++;
    }
    *rows = n;
    if (fclose(f) != 0) {
        perror(path);
        return -1;
    }
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Reads a file with the CSV reader alone; returns the fields seen. */
static uint64_t read_only(const char *path)
{
    loom_csv_t *r = NULL;
    char *why = NULL;
    if (loom_csv_open(path, &r, &why) < 0) {
        fprintf(stderr, "%s\n", why);
        exit(1);
    }
    const loom_csv_field_t *f;
    size_t n;
    uint64_t fields = 0;
    int rc;
    while ((rc = loom_csv_next(r, &f, &n)) == 1) fields += n;
    if (rc < 0) {
        fprintf(stderr, "%s\n", loom_csv_error(r));
        exit(1);
    }
    loom_csv_destroy(&r);
    return fields;
}

int main(int argc, char **argv)
{
    int64_t mb = 300;
    if ((argc > 1 && loom_parse_i64(argv[1], 2, 100000, &mb) != 0) || argc > 3) {
        fprintf(stderr, "usage: loom-bench-drift [MB (2..100000)] [DIR]\n");
        return 2;
    }
    const char *dir = argc > 2 ? argv[2] : "/tmp";
    char *ref = loom_xasprintf("%s/loom-bench-drift-%d-ref.csv", dir, (int)getpid());
    char *cur = loom_xasprintf("%s/loom-bench-drift-%d-cur.csv", dir, (int)getpid());
    uint64_t half = (uint64_t)mb * 1000000 / 2, rows[2];
    double t0 = now_s();
    if (write_csv(ref, half, 0, 0x9E3779B97F4A7C15ULL, &rows[0]) < 0 ||
        write_csv(cur, half, 1, 0x2545F4914F6CDD1DULL, &rows[1]) < 0)
        return 1;
    printf("wrote %s and %s: %llu + %llu rows, %.0f MB, in %.1f s\n", ref, cur,
           (unsigned long long)rows[0], (unsigned long long)rows[1], 2 * half / 1e6, now_s() - t0);

    /* The reader alone (the page cache is warm from writing). */
    double c0 = cpu_s(), w0 = now_s();
    uint64_t fields = read_only(ref) + read_only(cur);
    double read_cpu = cpu_s() - c0, read_wall = now_s() - w0;

    /* The whole computation, as `loom drift` runs it. */
    c0 = cpu_s();
    w0 = now_s();
    loom_drift_opts_t opts = {.seed = LOOM_DRIFT_SEED};
    loom_drift_t *d = loom_drift_new(&opts);
    char *why = NULL;
    loom_drift_report_t rep;
    if (loom_drift_read_file(d, LOOM_DRIFT_REF, ref, &why) < 0 ||
        loom_drift_read_file(d, LOOM_DRIFT_CUR, cur, &why) < 0) {
        fprintf(stderr, "%s\n", why);
        return 1;
    }
    double pass_cpu = cpu_s() - c0;
    if (loom_drift_compute(d, &rep, &why) < 0) {
        fprintf(stderr, "%s\n", why);
        return 1;
    }
    double all_cpu = cpu_s() - c0, all_wall = now_s() - w0;
    unlink(ref);
    unlink(cur);

    double total_mb = 2 * half / 1e6;
    printf("csv reader alone: %.2f s CPU (%.2f s wall), %.0f MB/s per core, %llu fields\n",
           read_cpu, read_wall, total_mb / read_cpu, (unsigned long long)fields);
    printf("loom drift, whole: %.2f s CPU (%.2f s wall), %.0f MB/s per core "
           "(one pass %.2f s, statistics %.2f s)\n",
           all_cpu, all_wall, total_mb / all_cpu, pass_cpu, all_cpu - pass_cpu);
    printf("report: %zu columns, %zu drifted, dataset drift %s, sampled %s\n", rep.n_columns,
           rep.drifted, rep.drift ? "yes" : "no", rep.sampled ? "yes" : "no");
    for (size_t i = 0; i < rep.n_columns; i++) {
        const loom_drift_col_t *c = &rep.columns[i];
        printf("  %-8s %-11s %-11s score %-10.4g psi %.4f js %.4f%s%s\n", c->name,
               loom_drift_type_name(c->type), c->skipped ? "-" : loom_drift_test_name(c->test),
               c->score, c->psi, c->js, c->drift ? "  DRIFT" : "", c->skipped ? "  (skipped)" : "");
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("peak RSS %.1f MiB\n", ru.ru_maxrss / 1024.0);
    loom_drift_report_free(&rep);
    loom_drift_destroy(&d);
    free(ref);
    free(cur);
    return 0;
}
