/* What the agent says it has: CPUs honouring its affinity and its cgroups'
 * quotas, memory honouring their limits (fake cgroup trees under a
 * temporary root, v1 and v2, including a container's bind-mounted subtree),
 * and the usage figures of its heartbeats. */
#include "test_agent_fx.h"

#include "cgroup.h"
#include "resources.h"

#include <sched.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>

/* Writes root/rel, creating the folders on the way. */
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

static double affinity_count(void)
{
    cpu_set_t set;
    assert_int_equal(sched_getaffinity(0, sizeof set, &set), 0);
    return (double)CPU_COUNT(&set);
}

static uint64_t ram(void)
{
    struct sysinfo si;
    assert_int_equal(sysinfo(&si), 0);
    return (uint64_t)si.totalram * si.mem_unit;
}

static double min_d(double a, double b)
{
    return a < b ? a : b;
}

static void test_parse_self_and_cpu_max(void **state)
{
    (void)state;
    char *v2, *mem, *cpu;
    cgroup_parse_self("12:pids:/a\n5:cpu,cpuacct:/docker/x\n4:memory:/docker/x\n"
                      "1:name=systemd:/s\n0::/init.scope\n",
                      &v2, &mem, &cpu);
    assert_string_equal(v2, "/init.scope");
    assert_string_equal(mem, "/docker/x");
    assert_string_equal(cpu, "/docker/x");
    free(v2);
    free(mem);
    free(cpu);
    cgroup_parse_self("0::/\n", &v2, &mem, &cpu);
    assert_string_equal(v2, "/");
    assert_null(mem);
    assert_null(cpu);
    free(v2);
    cgroup_parse_self("3:cpuacct:/x\n", &v2, &mem, &cpu); /* cpuacct is not cpu */
    assert_null(cpu);

    double cpus = -1;
    assert_int_equal(resources_parse_cpu_max("max 100000", &cpus), 0);
    assert_true(cpus == 0);
    assert_int_equal(resources_parse_cpu_max("250000 100000", &cpus), 0);
    assert_true(cpus == 2.5);
    assert_int_equal(resources_parse_cpu_max("50000", &cpus), LOOM_EPARSE);
    assert_int_equal(resources_parse_cpu_max("max 0", &cpus), LOOM_EPARSE);
    assert_int_equal(resources_parse_cpu_max("-5 100000", &cpus), LOOM_EPARSE);
    assert_int_equal(resources_cpus_whole(1.5), 2);
    assert_int_equal(resources_cpus_whole(2.0), 2);
    assert_int_equal(resources_cpus_whole(0.25), 1);
}

static void test_affinity_caps_cpus(void **state)
{
    fx_t *f = *state;
    cpu_set_t all, one;
    assert_int_equal(sched_getaffinity(0, sizeof all, &all), 0);
    if (CPU_COUNT(&all) < 2) {
        fprintf(stderr, "SKIP: one CPU here, so a narrower affinity cannot be told apart\n");
        skip();
    }
    cgroup_where_t real;
    cgroup_locate(NULL, &real);
    double cap = resources_cpus_usable(&real); /* with every CPU: the quota, if any */
    cgroup_where_free(&real);
    int first = 0;
    while (!CPU_ISSET(first, &all)) first++;
    CPU_ZERO(&one);
    CPU_SET(first, &one);
    /* The agent runs on this thread, so the mask applies to it. */
    assert_int_equal(sched_setaffinity(0, sizeof one, &one), 0);
    cgroup_where_t none = {0};
    double usable = resources_cpus_usable(&none);
    f->cfg.no_gpu_detect = true;
    f->cfg.slots = 0; /* defaults to the usable CPUs */
    start_agent(f);
    const loom_msg_t *hello = wait_msg(f, LOOM__ENVELOPE__BODY_HELLO, NULL, 0);
    assert_int_equal(sched_setaffinity(0, sizeof all, &all), 0);
    assert_true(usable == 1.0);
    assert_true(hello->hello->resources->cpus_usable == min_d(1.0, cap));
    assert_int_equal(hello->hello->resources->cpus, 1);
    assert_int_equal(hello->hello->resources->slots, 1);
}

/* A cgroup v2 host: the agent in /kubepods/pod1/ctr, quota on pod1. */
static void fake_v2(const char *root)
{
    put(root, "proc/self/cgroup", "0::/kubepods/pod1/ctr\n");
    put(root, "proc/self/mountinfo",
        "22 1 0:20 / / rw - ext4 /dev/sda1 rw\n"
        "30 22 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n");
    put(root, "sys/fs/cgroup/kubepods/cpu.max", "400000 100000\n");
    put(root, "sys/fs/cgroup/kubepods/memory.max", "max\n");
    put(root, "sys/fs/cgroup/kubepods/pod1/cpu.max", "150000 100000\n");
    put(root, "sys/fs/cgroup/kubepods/pod1/memory.max", "1073741824\n");
    put(root, "sys/fs/cgroup/kubepods/pod1/ctr/cpu.max", "max 100000\n");
    put(root, "sys/fs/cgroup/kubepods/pod1/ctr/memory.max", "max\n");
}

static void test_v2_quota_and_limit_of_an_ancestor(void **state)
{
    fx_t *f = *state;
    fake_v2(f->tmp);
    cgroup_where_t w;
    cgroup_locate(f->tmp, &w);
    char *want = loom_xasprintf("%s/sys/fs/cgroup/kubepods/pod1/ctr", f->tmp);
    assert_string_equal(w.v2, want);
    assert_null(w.v1_memory);
    assert_true(resources_cpus_usable(&w) == min_d(affinity_count(), 1.5));
    uint64_t mem = resources_memory_bytes(&w);
    assert_int_equal(mem, ram() < (1ull << 30) ? ram() : 1ull << 30);
    cgroup_where_free(&w);
    free(want);
}

/* A container without a cgroup namespace: /proc/self/cgroup names
 * /docker/abc, and that subtree is what is mounted. */
static void fake_v1(const char *root, const char *quota, const char *limit)
{
    put(root, "proc/self/cgroup", "5:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n0::/\n");
    put(root, "proc/self/mountinfo",
        "40 30 0:31 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro,nosuid - cgroup cgroup "
        "rw,cpu,cpuacct\n"
        "41 30 0:32 /docker/abc /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory\n"
        "42 30 0:33 /docker/abc /sys/fs/cgroup/my\\040cpuacct ro - cgroup cgroup rw,cpuacct\n");
    put(root, "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", quota);
    put(root, "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n");
    put(root, "sys/fs/cgroup/memory/memory.limit_in_bytes", limit);
}

static void test_v1_bind_mounted_subtree(void **state)
{
    fx_t *f = *state;
    fake_v1(f->tmp, "50000\n", "536870912\n");
    cgroup_where_t w;
    cgroup_locate(f->tmp, &w);
    char *cpu = loom_xasprintf("%s/sys/fs/cgroup/cpu,cpuacct", f->tmp);
    char *mem = loom_xasprintf("%s/sys/fs/cgroup/memory", f->tmp);
    assert_string_equal(w.v1_cpu, cpu);
    assert_string_equal(w.v1_memory, mem);
    assert_null(w.v2); /* "0::/" but no cgroup2 mount */
    assert_true(resources_cpus_usable(&w) == 0.5);
    assert_int_equal(resources_memory_bytes(&w), min_d((double)ram(), 536870912.0));
    cgroup_where_free(&w);
    free(cpu);
    free(mem);
}

static void test_v1_no_quota_and_absurd_limit_mean_none(void **state)
{
    fx_t *f = *state;
    fake_v1(f->tmp, "-1\n", "9223372036854771712\n");
    cgroup_where_t w;
    cgroup_locate(f->tmp, &w);
    assert_true(resources_cpus_usable(&w) == affinity_count());
    assert_int_equal(resources_memory_bytes(&w), ram());
    cgroup_where_free(&w);
}

static void test_mountinfo_escapes_and_foreign_subtrees(void **state)
{
    fx_t *f = *state;
    put(f->tmp, "proc/self/cgroup", "4:memory:/elsewhere\n");
    /* The first mount shows another subtree; the second (escaped name)
     * shows the whole hierarchy. */
    put(f->tmp, "proc/self/mountinfo",
        "41 30 0:32 /docker/abc /a rw - cgroup cgroup rw,memory\n"
        "42 30 0:32 / /cg\\040mem rw - cgroup cgroup rw,memory\n");
    cgroup_where_t w;
    cgroup_locate(f->tmp, &w);
    char *want = loom_xasprintf("%s/cg mem/elsewhere", f->tmp);
    assert_string_equal(w.v1_memory, want);
    cgroup_where_free(&w);
    free(want);
    cgroup_locate("/nonexistent-root", &w);
    assert_null(w.v2);
    assert_null(w.v1_memory);
    assert_null(w.v1_cpu);
    assert_true(resources_cpus_usable(&w) == affinity_count());
}

static void test_usage(void **state)
{
    fx_t *f = *state;
    double load;
    uint64_t avail;
    put(f->tmp, "proc/loadavg", "0.42 0.30 0.20 1/123 4567\n");
    put(f->tmp, "proc/meminfo",
        "MemTotal:       16318504 kB\nMemFree:         1234 kB\nMemAvailable:   123456 kB\n");
    assert_int_equal(resources_usage(f->tmp, &load, &avail), 0);
    assert_true(load == 0.42);
    assert_int_equal(avail, 123456ull * 1024);
    assert_int_equal(resources_usage(NULL, &load, &avail), 0);
    assert_true(load >= 0);
    assert_true(avail > 0 && avail <= ram());
    assert_int_equal(resources_usage("/nonexistent-root", &load, &avail), LOOM_EIO);
}

static bool heartbeat_says_draining(const loom_msg_t *m, uint64_t arg)
{
    return m->heartbeat->draining == (arg != 0);
}

static void test_heartbeat_carries_usage(void **state)
{
    fx_t *f = *state;
    f->cfg.no_gpu_detect = true;
    start_welcomed(f, 10000);
    const loom_msg_t *hb = wait_msg(f, LOOM__ENVELOPE__BODY_HEARTBEAT, heartbeat_says_draining, 0);
    const Loom__Usage *u = hb->heartbeat->usage;
    assert_non_null(u);
    assert_true(u->load1 >= 0);
    assert_true(u->memory_available_bytes > 0 && u->memory_available_bytes <= ram());
    assert_int_equal(u->n_gpus, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_parse_self_and_cpu_max, setup, teardown),
        cmocka_unit_test_setup_teardown(test_affinity_caps_cpus, setup, teardown),
        cmocka_unit_test_setup_teardown(test_v2_quota_and_limit_of_an_ancestor, setup, teardown),
        cmocka_unit_test_setup_teardown(test_v1_bind_mounted_subtree, setup, teardown),
        cmocka_unit_test_setup_teardown(test_v1_no_quota_and_absurd_limit_mean_none, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_mountinfo_escapes_and_foreign_subtrees, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_usage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_heartbeat_carries_usage, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
