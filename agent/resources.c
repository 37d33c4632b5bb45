/* CPUs, memory and live usage of the agent's host, as the agent may use
 * them: a container limited to 1.5 CPUs on a 64-core host offers 1.5, not
 * 64. Limits are looked up on the agent's cgroup and on each ancestor up to
 * the mount, because a parent's limit binds its children as well. */
#include "resources.h"

#include "loom/err.h"
#include "loom/util.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysinfo.h>
#include <unistd.h>

/* Memory limits at or above this mean "none" (v1 reports 2^63 rounded
 * down to a page for an unlimited cgroup). */
#define NO_LIMIT_BYTES (1ull << 60)
#define MIN_CPUS 0.01

static double affinity_cpus(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return (double)CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (double)n : 1.0;
}

static int parse_u64(const char *s, uint64_t *out)
{
    int64_t v;
    if (loom_parse_i64(s, 0, INT64_MAX, &v) != 0) return LOOM_EPARSE;
    *out = (uint64_t)v;
    return 0;
}

uint32_t resources_cpus_whole(double cpus)
{
    if (!(cpus > 1)) return 1;
    if (cpus >= 4294967295.0) return UINT32_MAX;
    uint32_t n = (uint32_t)cpus;
    return (double)n < cpus ? n + 1 : n;
}

int resources_parse_cpu_max(const char *text, double *cpus)
{
    char quota[32];
    const char *sp = strchr(text, ' ');
    uint64_t q, period;
    if (!sp || (size_t)(sp - text) >= sizeof quota) return LOOM_EPARSE;
    memcpy(quota, text, (size_t)(sp - text));
    quota[sp - text] = '\0';
    if (parse_u64(sp + 1, &period) != 0 || period == 0) return LOOM_EPARSE;
    if (strcmp(quota, "max") == 0) {
        *cpus = 0;
        return 0;
    }
    if (parse_u64(quota, &q) != 0) return LOOM_EPARSE;
    *cpus = (double)q / (double)period;
    return 0;
}

/* The quota of one folder in CPUs; 0: none (or unreadable). */
static double folder_cpus(const char *dir, bool v2)
{
    char buf[128], per[64];
    double cpus = 0;
    if (v2) {
        if (cgroup_read(dir, "cpu.max", buf, sizeof buf) == 0 &&
            resources_parse_cpu_max(buf, &cpus) != 0)
            cpus = 0;
        return cpus;
    }
    int64_t quota;
    uint64_t period;
    if (cgroup_read(dir, "cpu.cfs_quota_us", buf, sizeof buf) != 0 ||
        cgroup_read(dir, "cpu.cfs_period_us", per, sizeof per) != 0)
        return 0;
    if (loom_parse_i64(buf, -1, INT64_MAX, &quota) != 0 || quota <= 0) return 0;
    if (parse_u64(per, &period) != 0 || period == 0) return 0;
    return (double)quota / (double)period;
}

static uint64_t folder_memory(const char *dir, bool v2)
{
    char buf[64];
    uint64_t v;
    if (cgroup_read(dir, v2 ? "memory.max" : "memory.limit_in_bytes", buf, sizeof buf) != 0)
        return 0;
    if (strcmp(buf, "max") == 0 || parse_u64(buf, &v) != 0 || v >= NO_LIMIT_BYTES) return 0;
    return v;
}

/* Calls fn on dir and each parent folder down to (and including) mount,
 * keeping the smallest non-zero answer. */
static double smallest_up(const char *dir, const char *mount, bool v2,
                          double (*fn)(const char *dir, bool v2))
{
    double best = 0;
    if (!dir || !mount) return 0;
    char *d = loom_xstrdup(dir);
    size_t mlen = strlen(mount);
    for (;;) {
        double v = fn(d, v2);
        if (v > 0 && (best == 0 || v < best)) best = v;
        char *slash = strrchr(d, '/');
        if (strlen(d) <= mlen || !slash || (size_t)(slash - d) < mlen) break;
        *slash = '\0';
    }
    free(d);
    return best;
}

double resources_cpus_usable(const cgroup_where_t *w)
{
    double cpus = affinity_cpus();
    double q2 = smallest_up(w->v2, w->v2_mount, true, folder_cpus);
    double q1 = smallest_up(w->v1_cpu, w->v1_cpu_mount, false, folder_cpus);
    if (q2 > 0 && q2 < cpus) cpus = q2;
    if (q1 > 0 && q1 < cpus) cpus = q1;
    return cpus < MIN_CPUS ? MIN_CPUS : cpus;
}

static double memory_as_double(const char *dir, bool v2)
{
    return (double)folder_memory(dir, v2);
}

uint64_t resources_memory_bytes(const cgroup_where_t *w)
{
    struct sysinfo si;
    uint64_t total = sysinfo(&si) == 0 ? (uint64_t)si.totalram * si.mem_unit : 0;
    /* Below 2^53 a double holds every byte count exactly. */
    uint64_t l2 = (uint64_t)smallest_up(w->v2, w->v2_mount, true, memory_as_double);
    uint64_t l1 = (uint64_t)smallest_up(w->v1_memory, w->v1_memory_mount, false, memory_as_double);
    if (l2 && (total == 0 || l2 < total)) total = l2;
    if (l1 && (total == 0 || l1 < total)) total = l1;
    return total;
}

int resources_usage(const char *root, double *load1, uint64_t *mem_available)
{
    char *path, *text = NULL;
    int rc = 0;
    *load1 = 0;
    *mem_available = 0;
    if (!root) root = "";
    path = loom_xasprintf("%s/proc/loadavg", root);
    if (loom_read_file(path, 4096, &text, NULL) == 0) {
        char *end;
        double v = strtod(text, &end);
        if (end != text && v >= 0 && v < 1e9) *load1 = v;
    } else {
        rc = LOOM_EIO;
    }
    free(path);
    free(text);
    text = NULL;
    path = loom_xasprintf("%s/proc/meminfo", root);
    if (loom_read_file(path, 1 << 20, &text, NULL) == 0) {
        const char *p = strstr(text, "MemAvailable:");
        unsigned long long kib;
        if (p && sscanf(p + 13, "%llu kB", &kib) == 1) *mem_available = (uint64_t)kib * 1024u;
    } else {
        rc = LOOM_EIO;
    }
    free(path);
    free(text);
    return rc;
}
