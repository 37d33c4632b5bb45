/* Per-attempt limits: which mechanism this host allows, a cgroup (or an
 * rlimit) per attempt that asks for one, OOM kills read back after exit,
 * and the cgroups removed afterwards. See task_limits.h for the choices. */
#include "task_limits.h"

#include "loom/err.h"
#include "loom/log.h"
#include "loom/util.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#define CPU_PERIOD_US 100000
#define CPU_QUOTA_MIN_US 1000 /* the kernel's floor */
#define SWEEP_TRIES 5

typedef enum { KIND_RLIMIT, KIND_V1, KIND_V2 } kind_t;

typedef struct leftover {
    struct leftover *next;
    char *dir;
    int tries;
} leftover_t;

struct limits {
    kind_t kind;
    char *tag;
    char *v2_parent; /* where attempt cgroups go (v2) */
    bool v2_cpu;
    char *v1_memory; /* <agent's memory cgroup>/loom (v1) */
    char *v1_cpu;    /* <agent's cpu cgroup>/loom, NULL: no CPU limit */
    leftover_t *leftovers;
};

struct limit_box {
    kind_t kind;
    char *dirs[2]; /* v2: [0]; v1: memory [0], cpu [1] */
    uint64_t memory;
    bool rlimit; /* memory enforced with RLIMIT_AS */
};

/* --- choosing the mechanism ------------------------------------------------ */

static int enable_controllers(const char *dir, const char *controllers)
{
    const char *want = cgroup_list_has(controllers, "cpu") ? "+memory +cpu" : "+memory";
    return cgroup_write(dir, "cgroup.subtree_control", want);
}

/* cgroup v2 lets a non-root cgroup hand controllers to children only while
 * it holds no process itself ("no internal processes"). An agent alone in
 * a delegated cgroup (systemd Delegate=yes) moves itself into a leaf of it
 * first, as systemd's documentation asks of delegated services. */
static int move_self_and_enable(const char *dir, const char *controllers, const char *tag)
{
    char procs[256], pid[32];
    snprintf(pid, sizeof pid, "%d", (int)getpid());
    if (cgroup_read(dir, "cgroup.procs", procs, sizeof procs) != 0 || strcmp(procs, pid) != 0)
        return -EBUSY; /* not alone: not ours to rearrange */
    char *leaf = loom_xasprintf("%s/loom-agent-%s", dir, tag);
    int rc = mkdir(leaf, 0755) != 0 && errno != EEXIST ? -errno : 0;
    if (rc == 0) rc = cgroup_write(leaf, "cgroup.procs", pid);
    if (rc == 0) rc = enable_controllers(dir, controllers);
    if (rc != 0) {
        cgroup_write(dir, "cgroup.procs", pid);
        rmdir(leaf);
    } else {
        LOG_INFO("moved the agent into %s so that its cgroup can hold task cgroups", leaf);
    }
    free(leaf);
    return rc;
}

/* A folder we can create and remove again: the hierarchy is writable. */
static int probe_dir(const char *parent, const char *tag)
{
    char *probe = loom_xasprintf("%s/loom-probe-%s", parent, tag);
    int rc = mkdir(probe, 0755) == 0 || errno == EEXIST ? 0 : -errno;
    if (rc == 0 && rmdir(probe) != 0) rc = -errno;
    free(probe);
    return rc;
}

/* Gives the agent's cgroup's children the memory (and cpu) controller,
 * if they do not have it yet. Returns 0 or -errno. */
static int delegate(const char *dir, const char *ctl, char *sub, size_t sublen, const char *tag)
{
    if (cgroup_read(dir, "cgroup.subtree_control", sub, sublen) != 0) sub[0] = '\0';
    bool want_cpu = cgroup_list_has(ctl, "cpu");
    if (cgroup_list_has(sub, "memory") && (!want_cpu || cgroup_list_has(sub, "cpu"))) return 0;
    int rc = enable_controllers(dir, ctl);
    if (rc == -EBUSY) rc = move_self_and_enable(dir, ctl, tag);
    if (rc != 0) return rc;
    if (cgroup_read(dir, "cgroup.subtree_control", sub, sublen) != 0) sub[0] = '\0';
    return cgroup_list_has(sub, "memory") ? 0 : -EPERM;
}

static bool try_v2(limits_t *l, const cgroup_where_t *w, char *why, size_t whylen)
{
    char ctl[256], sub[256];
    if (!w->v2) {
        snprintf(why, whylen, "no cgroup v2");
        return false;
    }
    if (cgroup_read(w->v2, "cgroup.controllers", ctl, sizeof ctl) != 0 ||
        !cgroup_list_has(ctl, "memory")) {
        snprintf(why, whylen, "cgroup v2 offers %s no memory controller", w->v2);
        return false;
    }
    int rc = delegate(w->v2, ctl, sub, sizeof sub, l->tag);
    if (rc == 0) rc = probe_dir(w->v2, l->tag);
    if (rc != 0) {
        snprintf(why, whylen, "cgroup v2 %s: cannot give children the memory controller: %s", w->v2,
                 strerror(-rc));
        return false;
    }
    l->kind = KIND_V2;
    l->v2_parent = loom_xstrdup(w->v2);
    l->v2_cpu = cgroup_list_has(sub, "cpu");
    return true;
}

static char *v1_parent(const char *dir, char *why, size_t whylen)
{
    char *parent = loom_xasprintf("%s/loom", dir);
    if (mkdir(parent, 0755) != 0 && errno != EEXIST) {
        snprintf(why, whylen, "cannot create %s: %s", parent, strerror(errno));
        free(parent);
        return NULL;
    }
    return parent;
}

static bool try_v1(limits_t *l, const cgroup_where_t *w, char *why, size_t whylen)
{
    if (!w->v1_memory) {
        size_t n = strlen(why);
        snprintf(why + n, whylen - n, "%sno cgroup v1 memory hierarchy", n ? "; " : "");
        return false;
    }
    char tmp[512];
    l->v1_memory = v1_parent(w->v1_memory, tmp, sizeof tmp);
    if (!l->v1_memory || probe_dir(l->v1_memory, l->tag) != 0) {
        size_t n = strlen(why);
        snprintf(why + n, whylen - n, "%scgroup v1: %s", n ? "; " : "",
                 l->v1_memory ? "cannot create cgroups" : tmp);
        free(l->v1_memory);
        l->v1_memory = NULL;
        return false;
    }
    l->kind = KIND_V1;
    if (w->v1_cpu) l->v1_cpu = v1_parent(w->v1_cpu, tmp, sizeof tmp);
    if (w->v1_cpu && !l->v1_cpu) LOG_WARN("no CPU limits for tasks: %s", tmp);
    return true;
}

limits_t *limits_new(const cgroup_where_t *w, const char *tag)
{
    limits_t *l = loom_xcalloc(1, sizeof *l);
    char why[1024] = "";
    l->tag = loom_xstrdup(tag);
    if (try_v2(l, w, why, sizeof why)) {
        LOG_INFO("task limits: cgroup v2 under %s (memory%s)", l->v2_parent,
                 l->v2_cpu ? ", cpu" : "; no cpu controller: no CPU limits");
    } else if (try_v1(l, w, why, sizeof why)) {
        LOG_INFO("task limits: cgroup v1 under %s (memory) and %s (cpu)", l->v1_memory,
                 l->v1_cpu ? l->v1_cpu : "none: no CPU limits");
    } else {
        l->kind = KIND_RLIMIT;
        LOG_INFO("task limits: RLIMIT_AS for memory (weaker: it bounds address space; an "
                 "allocation over it fails instead of being killed), no CPU limits (%s)",
                 why);
    }
    return l;
}

const char *limits_mechanism(const limits_t *l)
{
    return l->kind == KIND_V2 ? "cgroup v2" : l->kind == KIND_V1 ? "cgroup v1" : "rlimit";
}

bool limits_cpu_enforced(const limits_t *l)
{
    return l->kind == KIND_V2 ? l->v2_cpu : l->kind == KIND_V1 && l->v1_cpu;
}

/* --- removing cgroups ----------------------------------------------------- */

static void leave_for_later(limits_t *l, char *dir)
{
    leftover_t *o = loom_xcalloc(1, sizeof *o);
    o->dir = dir;
    o->next = l->leftovers;
    l->leftovers = o;
}

/* rmdir of a cgroup fails with EBUSY while a process is still in it (a
 * killed one may take a moment to exit). */
static bool remove_dir(const char *dir)
{
    return rmdir(dir) == 0 || errno == ENOENT;
}

void limits_sweep(limits_t *l)
{
    for (leftover_t **p = &l->leftovers; *p;) {
        leftover_t *o = *p;
        bool gone = remove_dir(o->dir);
        if (!gone && ++o->tries >= SWEEP_TRIES)
            LOG_WARN("cannot remove cgroup %s: %s; leaving it", o->dir, strerror(errno));
        if (gone || o->tries >= SWEEP_TRIES) {
            *p = o->next;
            free(o->dir);
            free(o);
        } else {
            p = &o->next;
        }
    }
}

void limits_destroy(limits_t **lp)
{
    limits_t *l = lp ? *lp : NULL;
    if (!l) return;
    limits_sweep(l);
    while (l->leftovers) {
        leftover_t *o = l->leftovers;
        l->leftovers = o->next;
        LOG_WARN("cgroup %s still busy at exit; leaving it", o->dir);
        free(o->dir);
        free(o);
    }
    free(l->tag);
    free(l->v2_parent);
    free(l->v1_memory);
    free(l->v1_cpu);
    free(l);
    *lp = NULL;
}

void limits_box_release(limits_t *l, limit_box_t **bp)
{
    limit_box_t *b = bp ? *bp : NULL;
    if (!b) return;
    for (int i = 0; i < 2; i++) {
        if (!b->dirs[i]) continue;
        if (remove_dir(b->dirs[i]))
            free(b->dirs[i]);
        else
            leave_for_later(l, b->dirs[i]);
    }
    free(b);
    *bp = NULL;
}

/* --- one attempt's box ---------------------------------------------------- */

static uint64_t cpu_quota_us(double cpus)
{
    double q = cpus * CPU_PERIOD_US + 0.5; /* rounded */
    return q < CPU_QUOTA_MIN_US ? CPU_QUOTA_MIN_US : (uint64_t)q;
}

/* Creates dir (a stale one of a dead agent with the same pid is removed
 * first) and writes the files given as name, value pairs; an optional
 * file (name starting with '?') is written only if it exists. */
static int make_cgroup(const char *dir, const char *const *kv, size_t n, char *why, size_t whylen)
{
    if (mkdir(dir, 0755) != 0 && (errno != EEXIST || rmdir(dir) != 0 || mkdir(dir, 0755) != 0)) {
        snprintf(why, whylen, "cannot create cgroup %s: %s", dir, strerror(errno));
        return LOOM_EIO;
    }
    for (size_t i = 0; i + 1 < n; i += 2) {
        const char *name = kv[i];
        if (!kv[i + 1]) continue;
        if (name[0] == '?' && !cgroup_has(dir, ++name)) continue;
        int rc = cgroup_write(dir, name, kv[i + 1]);
        if (rc != 0) {
            snprintf(why, whylen, "cannot write %s/%s: %s", dir, name, strerror(-rc));
            rmdir(dir);
            return LOOM_EIO;
        }
    }
    return 0;
}

static int box_v2(limits_t *l, limit_box_t *b, uint64_t id, double cpus, char *why, size_t len)
{
    char mem[32], cpu[48];
    snprintf(mem, sizeof mem, "%llu", (unsigned long long)b->memory);
    snprintf(cpu, sizeof cpu, "%llu %d", (unsigned long long)cpu_quota_us(cpus), CPU_PERIOD_US);
    const char *kv[] = {"memory.max",       b->memory ? mem : NULL,
                        "?memory.swap.max", b->memory ? "0" : NULL,
                        "cpu.max",          cpus > 0 && l->v2_cpu ? cpu : NULL};
    b->dirs[0] = loom_xasprintf("%s/loom-%s-%llu", l->v2_parent, l->tag, (unsigned long long)id);
    return make_cgroup(b->dirs[0], kv, 6, why, len);
}

static int box_v1(limits_t *l, limit_box_t *b, uint64_t id, double cpus, char *why, size_t len)
{
    char mem[32], quota[32], period[32];
    snprintf(mem, sizeof mem, "%llu", (unsigned long long)b->memory);
    snprintf(quota, sizeof quota, "%llu", (unsigned long long)cpu_quota_us(cpus));
    snprintf(period, sizeof period, "%d", CPU_PERIOD_US);
    /* memsw (memory + swap) may not be below the memory limit: after it. */
    const char *mkv[] = {"memory.limit_in_bytes", mem, "?memory.memsw.limit_in_bytes", mem};
    const char *ckv[] = {"cpu.cfs_period_us", period, "cpu.cfs_quota_us", quota};
    if (b->memory) {
        b->dirs[0] = loom_xasprintf("%s/%s-%llu", l->v1_memory, l->tag, (unsigned long long)id);
        if (make_cgroup(b->dirs[0], mkv, 4, why, len) != 0) return LOOM_EIO;
    }
    if (cpus > 0 && l->v1_cpu) {
        b->dirs[1] = loom_xasprintf("%s/%s-%llu", l->v1_cpu, l->tag, (unsigned long long)id);
        if (make_cgroup(b->dirs[1], ckv, 4, why, len) != 0) return LOOM_EIO;
    }
    return 0;
}

int limits_box_new(limits_t *l, uint64_t attempt_id, double cpus, uint64_t memory_bytes, bool gpus,
                   limit_box_t **out, char *why, size_t whylen)
{
    *out = NULL;
    if (!(cpus > 0 && limits_cpu_enforced(l)) && memory_bytes == 0) return 0;
    limit_box_t *b = loom_xcalloc(1, sizeof *b);
    b->kind = l->kind;
    b->memory = memory_bytes;
    int rc = 0;
    if (l->kind == KIND_V2) {
        rc = box_v2(l, b, attempt_id, cpus, why, whylen);
    } else if (l->kind == KIND_V1) {
        rc = box_v1(l, b, attempt_id, cpus, why, whylen);
    } else if (gpus) {
        LOG_WARN("memory limit not enforced attempt=%llu: RLIMIT_AS would break CUDA, which "
                 "reserves far more address space than it uses",
                 (unsigned long long)attempt_id);
        b->memory = 0;
    } else {
        b->rlimit = true;
    }
    if (rc != 0 || (!b->dirs[0] && !b->dirs[1] && !b->rlimit)) {
        for (int i = 0; i < 2; i++)
            if (b->dirs[i]) rmdir(b->dirs[i]);
        free(b->dirs[0]);
        free(b->dirs[1]);
        free(b);
        return rc;
    }
    *out = b;
    return 0;
}

int limits_box_enter(limit_box_t *b, int pid, char *why, size_t whylen)
{
    char p[32];
    snprintf(p, sizeof p, "%d", pid);
    if (b->rlimit) {
        struct rlimit rl = {(rlim_t)b->memory, (rlim_t)b->memory};
        if (prlimit(pid, RLIMIT_AS, &rl, NULL) != 0) {
            snprintf(why, whylen, "cannot set its memory rlimit: %s", strerror(errno));
            return LOOM_EIO;
        }
        return 0;
    }
    for (int i = 0; i < 2; i++) {
        if (!b->dirs[i]) continue;
        int rc = cgroup_write(b->dirs[i], "cgroup.procs", p);
        if (rc != 0) {
            snprintf(why, whylen, "cannot move it into cgroup %s: %s", b->dirs[i], strerror(-rc));
            return LOOM_EIO;
        }
    }
    return 0;
}

bool limits_box_oom_killed(const limit_box_t *b, bool sigkilled)
{
    uint64_t n = 0;
    if (!b || !b->memory || !b->dirs[0]) return false;
    if (b->kind == KIND_V2)
        return cgroup_read_key(b->dirs[0], "memory.events", "oom_kill", &n) == 0 && n > 0;
    int rc = cgroup_read_key(b->dirs[0], "memory.oom_control", "oom_kill", &n);
    if (rc == 0) return n > 0;
    /* Before Linux 4.13 there is no counter: a SIGKILL after the limit
     * was hit is the OOM killer's. */
    char buf[32];
    return sigkilled && cgroup_read(b->dirs[0], "memory.failcnt", buf, sizeof buf) == 0 &&
           strcmp(buf, "0") != 0;
}

uint64_t limits_box_memory(const limit_box_t *b)
{
    return b ? b->memory : 0;
}

void limits_format_size(uint64_t bytes, char *out, size_t len)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    size_t u = 0;
    uint64_t whole = bytes;
    bool exact = true;
    while (whole >= 1024 && u + 1 < sizeof units / sizeof units[0]) {
        exact = exact && whole % 1024 == 0;
        whole /= 1024;
        u++;
    }
    if (exact)
        snprintf(out, len, "%llu %s", (unsigned long long)whole, units[u]);
    else
        snprintf(out, len, "%.1f %s", (double)bytes / (double)(1ull << (10 * u)), units[u]);
}
