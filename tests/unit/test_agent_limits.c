/* Per-attempt CPU and memory limits. Where this machine lets the agent make
 * cgroups (root, with a writable v1 or v2 hierarchy), real tasks run under
 * real limits: one allocating 200 MB under 50 MB is killed and reported as
 * out of memory. Without cgroups those tests skip, saying why; the rlimit
 * fallback and the cgroup file handling (fake trees) are tested anyway. */
#include "test_agent_fx.h"

#include "cgroup.h"
#include "task_limits.h"

#include <sys/stat.h>

#define MIB (1024ull * 1024)
/* Holds ~200 MB for real: tail keeps a line until it ends, and this one
 * never does. */
#define ALLOC_200M "head -c 200M /dev/zero | tail > /dev/null"

/* The mechanism this machine offers the agent. */
static char *real_mechanism(void)
{
    cgroup_where_t w;
    cgroup_locate(NULL, &w);
    limits_t *l = limits_new(&w, "test-probe");
    char *m = loom_xstrdup(limits_mechanism(l));
    limits_destroy(&l);
    cgroup_where_free(&w);
    return m;
}

static bool have_cgroups(void)
{
    char *m = real_mechanism();
    bool ok = strcmp(m, "rlimit") != 0;
    free(m);
    if (!ok)
        fprintf(stderr, "SKIP: no cgroup the agent can create here (needs root and a writable "
                        "cgroup v1 memory hierarchy, or v2 with the memory controller)\n");
    return ok;
}

static void dispatch_limited(fx_t *f, uint64_t id, const char *shell, double cpus, uint64_t mem,
                             Loom__EnvVar **env, size_t n_env)
{
    Loom__Dispatch d = LOOM__DISPATCH__INIT;
    d.attempt_id = id;
    d.run_id = 1;
    d.pipeline = "pipe";
    d.task = "limited";
    d.shell = (char *)shell;
    d.seq = id;
    d.attempt_number = 1;
    d.cpus = cpus;
    d.memory_bytes = mem;
    d.env = env;
    d.n_env = n_env;
    send_dispatch(f, &d);
}

static const Loom__Finished *finished(fx_t *f, uint64_t id)
{
    return wait_msg(f, LOOM__ENVELOPE__BODY_FINISHED, for_attempt, id)->finished;
}

/* Waits (heartbeat by heartbeat: cgroups still busy are retried on each)
 * until path is gone. */
static void wait_gone(fx_t *f, const char *path)
{
    for (int i = 0; i < 200 && access(path, F_OK) == 0; i++)
        wait_msg(f, LOOM__ENVELOPE__BODY_HEARTBEAT, NULL, 0);
    if (access(path, F_OK) == 0) fail_msg("%s was not removed", path);
}

/* The attempt's cgroup folders, as the agent names them. */
static void attempt_dirs(uint64_t id, char **mem, char **cpu)
{
    cgroup_where_t w;
    cgroup_locate(NULL, &w);
    char *m = real_mechanism();
    if (strcmp(m, "cgroup v2") == 0) {
        *mem = loom_xasprintf("%s/loom-%d-%llu", w.v2, (int)getpid(), (unsigned long long)id);
        *cpu = loom_xstrdup(*mem);
    } else {
        *mem =
            loom_xasprintf("%s/loom/%d-%llu", w.v1_memory, (int)getpid(), (unsigned long long)id);
        *cpu = w.v1_cpu ? loom_xasprintf("%s/loom/%d-%llu", w.v1_cpu, (int)getpid(),
                                         (unsigned long long)id)
                        : NULL;
    }
    free(m);
    cgroup_where_free(&w);
}

/* --- real cgroups --- */

static void test_memory_limit_kills_and_reports_oom(void **state)
{
    fx_t *f = *state;
    if (!have_cgroups()) skip();
    f->cfg.no_gpu_detect = true;
    start_welcomed(f, 10000);
    dispatch_limited(f, 1, ALLOC_200M, 0, 50 * MIB, NULL, 0);
    const Loom__Finished *fin = finished(f, 1);
    assert_true(fin->oom_killed);
    assert_int_equal(fin->memory_limit_bytes, 50 * MIB);
    assert_string_equal(fin->error, "killed: out of memory, limit 50 MiB");
    assert_true(fin->exit_code != 0 || fin->signal != 0);
    char *mem, *cpu;
    attempt_dirs(1, &mem, &cpu);
    wait_gone(f, mem);
    free(mem);
    free(cpu);
}

static void test_same_task_without_limit_succeeds(void **state)
{
    fx_t *f = *state;
    f->cfg.no_gpu_detect = true;
    start_welcomed(f, 10000);
    dispatch_limited(f, 2, ALLOC_200M, 0, 0, NULL, 0);
    const Loom__Finished *fin = finished(f, 2);
    assert_int_equal(fin->exit_code, 0);
    assert_int_equal(fin->signal, 0);
    assert_false(fin->oom_killed);
    assert_int_equal(fin->memory_limit_bytes, 0);
    assert_string_equal(fin->error, "");
}

static void test_task_runs_inside_its_cgroups(void **state)
{
    fx_t *f = *state;
    if (!have_cgroups()) skip();
    char *mem, *cpu;
    attempt_dirs(3, &mem, &cpu);
    if (!cpu) {
        fprintf(stderr, "SKIP: no cpu cgroup hierarchy here\n");
        free(mem);
        skip();
    }
    bool v2 = strcmp(mem, cpu) == 0;
    Loom__EnvVar em = LOOM__ENV_VAR__INIT, ec = LOOM__ENV_VAR__INIT;
    em.name = "MEMDIR";
    em.value = mem;
    ec.name = "CPUDIR";
    ec.value = cpu;
    Loom__EnvVar *env[] = {&em, &ec};
    const char *script =
        v2 ? "cat $MEMDIR/memory.max $CPUDIR/cpu.max; grep -c \"^$$\\$\" $MEMDIR/cgroup.procs"
           : "cat $MEMDIR/memory.limit_in_bytes $CPUDIR/cpu.cfs_quota_us "
             "$CPUDIR/cpu.cfs_period_us; grep -c \"^$$\\$\" $MEMDIR/cgroup.procs "
             "$CPUDIR/cgroup.procs";
    f->cfg.no_gpu_detect = true;
    start_welcomed(f, 10000);
    dispatch_limited(f, 3, script, 0.5, 100 * MIB, env, 2);
    const Loom__Finished *fin = finished(f, 3);
    assert_int_equal(fin->exit_code, 0);
    assert_false(fin->oom_killed);
    assert_int_equal(fin->memory_limit_bytes, 100 * MIB);
    char *out = attempt_output(f, 3);
    char *want = v2 ? loom_xstrdup("104857600\n50000 100000\n1\n")
                    : loom_xasprintf("104857600\n50000\n100000\n%s/cgroup.procs:1\n"
                                     "%s/cgroup.procs:1\n",
                                     mem, cpu);
    assert_string_equal(out, want);
    wait_gone(f, mem);
    wait_gone(f, cpu);
    free(want);
    free(out);
    free(mem);
    free(cpu);
}

static void test_cpu_limit_throttles(void **state)
{
    fx_t *f = *state;
    if (!have_cgroups()) skip();
    f->cfg.no_gpu_detect = true;
    start_welcomed(f, 10000);
    dispatch_limited(f, 4, "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done", 0.25, 0, NULL, 0);
    const Loom__Finished *fin = finished(f, 4);
    assert_int_equal(fin->exit_code, 0);
    uint64_t cpu_us = fin->user_cpu_us + fin->sys_cpu_us;
    uint64_t wall_us = (fin->ended_unix_ms - fin->started_unix_ms) * 1000;
    assert_true(cpu_us >= 50000); /* it did work */
    /* A quarter of a CPU: at least 2.5 times as long as the CPU it used
     * (unlimited, on an idle machine, the two are about equal). */
    if (wall_us * 10 < cpu_us * 25)
        fail_msg("used %llu us of CPU in %llu us: not throttled", (unsigned long long)cpu_us,
                 (unsigned long long)wall_us);
}

/* --- the rlimit fallback (no cgroups: an empty root) --- */

static void start_without_cgroups(fx_t *f, const char *const *gpus, size_t n_gpus)
{
    char *root = loom_xasprintf("%s/empty-root", f->tmp);
    assert_int_equal(mkdir(root, 0755), 0);
    f->cfg.sys_root = root;
    f->cfg.no_gpu_detect = true;
    f->cfg.gpus = gpus;
    f->cfg.n_gpus = n_gpus;
    start_welcomed(f, 10000);
    free(root); /* the agent keeps its own copy */
    assert_string_equal(loom_agent_limit_mechanism(f->agent), "rlimit");
}

static void test_rlimit_fallback_bounds_memory(void **state)
{
    fx_t *f = *state;
    start_without_cgroups(f, NULL, 0);
    dispatch_limited(f, 5, ALLOC_200M, 1, 50 * MIB, NULL, 0);
    const Loom__Finished *fin = finished(f, 5);
    /* The allocation fails inside the task: an error, not an OOM kill. */
    assert_true(fin->exit_code != 0);
    assert_false(fin->oom_killed);
    assert_int_equal(fin->memory_limit_bytes, 50 * MIB);
    assert_string_equal(fin->error, "");
    dispatch_limited(f, 6, ALLOC_200M, 1, 0, NULL, 0);
    fin = finished(f, 6);
    assert_int_equal(fin->exit_code, 0);
}

static void test_rlimit_spares_gpu_tasks(void **state)
{
    fx_t *f = *state;
    const char *gpus[] = {"0:NVIDIA A100:40G"};
    start_without_cgroups(f, gpus, 1);
    Loom__Dispatch d = LOOM__DISPATCH__INIT;
    uint32_t gpu0[] = {0};
    d.attempt_id = 7;
    d.run_id = 1;
    d.pipeline = "pipe";
    d.task = "cuda";
    d.shell = ALLOC_200M;
    d.seq = 1;
    d.memory_bytes = 50 * MIB;
    d.gpus = gpu0;
    d.n_gpus = 1;
    send_dispatch(f, &d);
    const Loom__Finished *fin = finished(f, 7);
    assert_int_equal(fin->exit_code, 0); /* RLIMIT_AS would break CUDA: not applied */
    assert_int_equal(fin->memory_limit_bytes, 0);
}

/* --- cgroup files, on fake trees --- */

static void put(const char *root, const char *rel, const char *text)
{
    char *path = loom_xasprintf("%s/%s", root, rel);
    char *slash = strrchr(path, '/');
    *slash = '\0';
    assert_int_equal(loom_mkdirs(path, 0755), 0);
    *slash = '/';
    assert_int_equal(loom_write_file_atomic(path, text, strlen(text)), 0);
    free(path);
}

static char *slurp(const char *dir, const char *name)
{
    char buf[256];
    int rc = cgroup_read(dir, name, buf, sizeof buf);
    if (rc != 0) fail_msg("%s/%s: %s", dir, name, strerror(-rc));
    return loom_xstrdup(buf);
}

static void assert_file(const char *dir, const char *name, const char *want)
{
    char *got = slurp(dir, name);
    assert_string_equal(got, want);
    free(got);
}

static void clear_dir(const char *dir)
{
    static const char *names[] = {"memory.max",
                                  "cpu.max",
                                  "cgroup.procs",
                                  "memory.events",
                                  "memory.limit_in_bytes",
                                  "cpu.cfs_quota_us",
                                  "cpu.cfs_period_us",
                                  "memory.oom_control",
                                  "memory.failcnt"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char *p = loom_xasprintf("%s/%s", dir, names[i]);
        unlink(p);
        free(p);
    }
}

static void test_v2_box_on_a_fake_tree(void **state)
{
    fx_t *f = *state;
    char why[512];
    put(f->tmp, "proc/self/cgroup", "0::/agent.service\n");
    put(f->tmp, "proc/self/mountinfo", "30 22 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
    put(f->tmp, "sys/fs/cgroup/agent.service/cgroup.controllers", "cpuset cpu io memory pids\n");
    put(f->tmp, "sys/fs/cgroup/agent.service/cgroup.subtree_control", "cpu memory\n");
    cgroup_where_t w;
    cgroup_locate(f->tmp, &w);
    limits_t *l = limits_new(&w, "42");
    assert_string_equal(limits_mechanism(l), "cgroup v2");
    assert_true(limits_cpu_enforced(l));
    limit_box_t *b = NULL;
    assert_int_equal(limits_box_new(l, 7, 0, 0, false, &b, why, sizeof why), 0);
    assert_null(b); /* nothing asked, nothing made */
    assert_int_equal(limits_box_new(l, 7, 1.5, 64 * MIB, false, &b, why, sizeof why), 0);
    assert_non_null(b);
    char *dir = loom_xasprintf("%s/loom-42-7", w.v2);
    assert_file(dir, "memory.max", "67108864");
    assert_file(dir, "cpu.max", "150000 100000");
    assert_false(cgroup_has(dir, "memory.swap.max")); /* written only where it exists */
    assert_int_equal(limits_box_enter(b, 4242, why, sizeof why), 0);
    assert_file(dir, "cgroup.procs", "4242");
    assert_false(limits_box_oom_killed(b, true)); /* no memory.events: no evidence */
    put(dir, "memory.events", "low 0\nhigh 0\nmax 12\noom 1\noom_kill 0\n");
    assert_false(limits_box_oom_killed(b, true));
    put(dir, "memory.events", "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\n");
    assert_true(limits_box_oom_killed(b, false));
    assert_int_equal(limits_box_memory(b), 64 * MIB);
    /* Busy (here: not empty) on release, removed by a later sweep. */
    limits_box_release(l, &b);
    assert_null(b);
    assert_int_equal(access(dir, F_OK), 0);
    clear_dir(dir);
    limits_sweep(l);
    assert_int_equal(access(dir, F_OK), -1);
    limits_destroy(&l);
    cgroup_where_free(&w);
    free(dir);
}

static void test_v2_without_memory_controller_falls_back(void **state)
{
    fx_t *f = *state;
    put(f->tmp, "proc/self/cgroup", "0::/\n");
    put(f->tmp, "proc/self/mountinfo", "30 22 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
    put(f->tmp, "sys/fs/cgroup/cgroup.controllers", "hugetlb\n");
    cgroup_where_t w;
    cgroup_locate(f->tmp, &w);
    limits_t *l = limits_new(&w, "42");
    assert_string_equal(limits_mechanism(l), "rlimit");
    assert_false(limits_cpu_enforced(l));
    limits_destroy(&l);
    cgroup_where_free(&w);
}

static void test_v1_box_on_a_fake_tree(void **state)
{
    fx_t *f = *state;
    char why[512];
    put(f->tmp, "proc/self/cgroup", "4:memory:/svc\n3:cpu,cpuacct:/\n0::/\n");
    put(f->tmp, "proc/self/mountinfo",
        "40 30 0:31 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
        "41 30 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n");
    put(f->tmp, "sys/fs/cgroup/memory/svc/memory.limit_in_bytes", "9223372036854771712\n");
    put(f->tmp, "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "-1\n");
    cgroup_where_t w;
    cgroup_locate(f->tmp, &w);
    limits_t *l = limits_new(&w, "42");
    assert_string_equal(limits_mechanism(l), "cgroup v1");
    limit_box_t *b = NULL;
    assert_int_equal(limits_box_new(l, 9, 0.5, 8ull << 30, false, &b, why, sizeof why), 0);
    char *mem = loom_xasprintf("%s/sys/fs/cgroup/memory/svc/loom/42-9", f->tmp);
    char *cpu = loom_xasprintf("%s/sys/fs/cgroup/cpu,cpuacct/loom/42-9", f->tmp);
    assert_file(mem, "memory.limit_in_bytes", "8589934592");
    assert_file(cpu, "cpu.cfs_period_us", "100000");
    assert_file(cpu, "cpu.cfs_quota_us", "50000");
    assert_int_equal(limits_box_enter(b, 99, why, sizeof why), 0);
    assert_file(mem, "cgroup.procs", "99");
    assert_file(cpu, "cgroup.procs", "99");
    put(mem, "memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n");
    assert_true(limits_box_oom_killed(b, false));
    /* Kernels before 4.13 have no counter: failcnt and a SIGKILL tell. */
    put(mem, "memory.oom_control", "oom_kill_disable 0\nunder_oom 0\n");
    put(mem, "memory.failcnt", "5\n");
    assert_true(limits_box_oom_killed(b, true));
    assert_false(limits_box_oom_killed(b, false));
    clear_dir(mem);
    clear_dir(cpu);
    limits_box_release(l, &b);
    assert_int_equal(access(mem, F_OK), -1);
    assert_int_equal(access(cpu, F_OK), -1);
    /* A cpus-only box makes no memory cgroup. */
    assert_int_equal(limits_box_new(l, 10, 2, 0, false, &b, why, sizeof why), 0);
    char *mem10 = loom_xasprintf("%s/sys/fs/cgroup/memory/svc/loom/42-10", f->tmp);
    char *cpu10 = loom_xasprintf("%s/sys/fs/cgroup/cpu,cpuacct/loom/42-10", f->tmp);
    assert_int_equal(access(mem10, F_OK), -1);
    assert_file(cpu10, "cpu.cfs_quota_us", "200000");
    assert_false(limits_box_oom_killed(b, true));
    clear_dir(cpu10);
    limits_box_release(l, &b);
    limits_destroy(&l);
    cgroup_where_free(&w);
    free(mem);
    free(cpu);
    free(mem10);
    free(cpu10);
}

static void test_format_size(void **state)
{
    (void)state;
    static const struct {
        uint64_t bytes;
        const char *text;
    } cases[] = {{0, "0 B"},
                 {512, "512 B"},
                 {50 * MIB, "50 MiB"},
                 {8ull << 30, "8 GiB"},
                 {3ull << 29, "1.5 GiB"},
                 {1536, "1.5 KiB"}};
    char out[32];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        limits_format_size(cases[i].bytes, out, sizeof out);
        assert_string_equal(out, cases[i].text);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_memory_limit_kills_and_reports_oom, setup, teardown),
        cmocka_unit_test_setup_teardown(test_same_task_without_limit_succeeds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_task_runs_inside_its_cgroups, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cpu_limit_throttles, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rlimit_fallback_bounds_memory, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rlimit_spares_gpu_tasks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_v2_box_on_a_fake_tree, setup, teardown),
        cmocka_unit_test_setup_teardown(test_v2_without_memory_controller_falls_back, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_v1_box_on_a_fake_tree, setup, teardown),
        cmocka_unit_test_setup_teardown(test_format_size, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
