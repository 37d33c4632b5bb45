/* loom-bench-validate [TASKS] [RUNS]: how long loom_dag_parse takes on a
 * large pipeline, and the memory it peaks at. It writes, in memory, a random
 * layered DAG of TASKS tasks (default 10,000) where every task outside the
 * first layer needs 3 tasks of earlier layers, with the keys a real file
 * uses (params, defaults, templates, conditions, env, retries), then parses
 * it RUNS times (default 9) and prints the median, for docs/benchmarks.md.
 * Targets: under 100 ms and 50 MB for 10,000 tasks, release build. */
#include "loom/dag.h"
#include "loom/util.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

#define LAYER_WIDTH 100
#define NEEDS_PER_TASK 3

/* xorshift64: reproducible, and no rand() in loom. */
static uint64_t next_random(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void write_task(loom_buf_t *b, size_t i, uint64_t *seed)
{
    loom_buf_printf(b, "  step-%zu:\n", i);
    size_t layer = i / LAYER_WIDTH;
    if (layer > 0) {
        /* Three distinct tasks from earlier layers. */
        size_t pick[NEEDS_PER_TASK];
        for (size_t k = 0; k < NEEDS_PER_TASK; k++) {
            bool fresh;
            do {
                pick[k] = next_random(seed) % (layer * LAYER_WIDTH);
                fresh = true;
                for (size_t j = 0; j < k; j++) fresh = fresh && pick[j] != pick[k];
            } while (!fresh);
        }
        loom_buf_printf(b, "    needs: [step-%zu, step-%zu, step-%zu]\n", pick[0], pick[1],
                        pick[2]);
    }
    loom_buf_printf(b, "    run: python3 step.py --shard %zu --lr ${{ params.lr }} --out out/%zu\n",
                    i, i);
    if (i % 10 == 3) loom_buf_puts(b, "    if: params.full or params.epochs > 2\n");
    if (i % 7 == 0) loom_buf_printf(b, "    env: {SHARD: \"%zu\", MODE: fast}\n", i);
    if (i % 5 == 0) loom_buf_puts(b, "    timeout: 10m\n    retries: 1\n");
}

static char *make_dag(size_t n_tasks, size_t *len)
{
    loom_buf_t b = {0};
    loom_buf_puts(&b, "pipeline: bench\n"
                      "description: a large layered DAG\n"
                      "params:\n"
                      "  lr: 0.01\n"
                      "  epochs: {type: int, default: 3}\n"
                      "  full: false\n"
                      "defaults:\n"
                      "  retries: 2\n"
                      "  retry_delay: 5s\n"
                      "  resources: {cpus: 1, memory: 1G}\n"
                      "tasks:\n");
    uint64_t seed = 0x2545F4914F6CDD1Du;
    for (size_t i = 0; i < n_tasks; i++) write_task(&b, i, &seed);
    *len = b.len;
    return loom_buf_steal(&b);
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static bool parse_arg(const char *s, int64_t max, size_t *out)
{
    int64_t v;
    if (loom_parse_i64(s, 1, max, &v) != 0) return false;
    *out = (size_t)v;
    return true;
}

int main(int argc, char **argv)
{
    size_t n_tasks = 10000, runs = 9;
    if ((argc > 1 && !parse_arg(argv[1], LOOM_DAG_MAX_TASKS, &n_tasks)) ||
        (argc > 2 && !parse_arg(argv[2], 1000, &runs)) || argc > 3) {
        fprintf(stderr, "usage: loom-bench-validate [TASKS (1..%d)] [RUNS (1..1000)]\n",
                LOOM_DAG_MAX_TASKS);
        return 2;
    }
    size_t len;
    char *src = make_dag(n_tasks, &len);
    double *ms = loom_xcalloc(runs, sizeof *ms);
    for (size_t r = 0; r < runs; r++) {
        loom_diags_t diags = {0};
        loom_dag_t *dag = NULL;
        double t0 = now_ms();
        int err = loom_dag_parse(src, len, "bench.yaml", &dag, &diags);
        ms[r] = now_ms() - t0;
        if (err != 0) {
            char *text = loom_diags_format(&diags);
            fprintf(stderr, "the generated DAG does not parse:\n%s", text);
            return 1;
        }
        loom_dag_destroy(&dag);
        loom_diags_free(&diags);
    }
    qsort(ms, runs, sizeof *ms, cmp_double);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("loom_dag_parse: %zu tasks, %zu needs, %.1f KiB of YAML: median %.1f ms (min %.1f, "
           "max %.1f, %zu runs), peak RSS %.1f MiB\n",
           n_tasks, n_tasks > LAYER_WIDTH ? (n_tasks - LAYER_WIDTH) * NEEDS_PER_TASK : 0,
           len / 1024.0, ms[runs / 2], ms[0], ms[runs - 1], runs, ru.ru_maxrss / 1024.0);
    free(ms);
    free(src);
    return 0;
}
