/* GPU detection and GPU assignment on the agent: the configuration
 * override, NVML (a stand-in library built here with the C compiler, since
 * no real one is on this machine), nvidia-smi (the stand-in script from
 * tests/integration on PATH) in its good, malformed, failing and hanging
 * forms, and the CUDA/NVIDIA variables a task sees. */
#include "test_agent_fx.h"

#include "gpu.h"

#include <errno.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>

extern char **environ;

#define NO_NVML "/nonexistent/libnvidia-ml.so.1"
#define A100_UUID "GPU-5c0e3b7a-1d2f-4e6a-9b8c-0a1b2c3d4e5f"
#define H100_UUID "GPU-9f8e7d6c-5b4a-4392-8170-fedcba987654"
#define MIB (1024ull * 1024)

static char *source_dir(void)
{
    const char *env = getenv("LOOM_SOURCE_DIR");
    if (env && *env) return loom_xstrdup(env);
    char *dir = loom_xstrdup(__FILE__); /* .../tests/unit/test_agent_gpu.c */
    for (int i = 0; i < 3; i++) {
        char *slash = strrchr(dir, '/');
        if (slash) *slash = '\0';
    }
    return dir;
}

/* Puts the stand-in nvidia-smi first on PATH, answering `mode`, and
 * returns the file it creates when run. */
static char *use_fake_smi(fx_t *f, const char *mode)
{
    char *bin = loom_xasprintf("%s/bin", f->tmp);
    char *link = loom_xasprintf("%s/nvidia-smi", bin);
    char *src = source_dir();
    char *script = loom_xasprintf("%s/tests/integration/fake-nvidia-smi", src);
    if (access(link, F_OK) != 0) {
        assert_int_equal(mkdir(bin, 0755), 0);
        assert_int_equal(symlink(script, link), 0);
        const char *path = getenv("PATH");
        char *newpath = loom_xasprintf("%s:%s", bin, path ? path : "/usr/bin:/bin");
        setenv("PATH", newpath, 1);
        free(newpath);
    }
    char *mark = loom_xasprintf("%s/smi-ran", f->tmp);
    setenv("FAKE_NVIDIA_SMI", mode, 1);
    setenv("FAKE_NVIDIA_SMI_MARK", mark, 1);
    free(script);
    free(src);
    free(link);
    free(bin);
    return mark;
}

static char *saved_path;

static int gpu_setup(void **state)
{
    saved_path = loom_xstrdup(getenv("PATH") ? getenv("PATH") : "/usr/bin:/bin");
    return setup(state);
}

static int gpu_teardown(void **state)
{
    loom_log_set_sink(NULL);
    setenv("PATH", saved_path, 1);
    free(saved_path);
    unsetenv("FAKE_NVIDIA_SMI");
    unsetenv("FAKE_NVIDIA_SMI_MARK");
    unsetenv("FAKE_NVIDIA_SMI_PIDFILE");
    unsetenv("FAKE_NVML_INIT_FAIL");
    unsetenv("CUDA_VISIBLE_DEVICES");
    return teardown(state);
}

/* Log lines go to a memory stream while `log` is open. */
typedef struct {
    char *text;
    size_t len;
    FILE *fp;
} logcap_t;

static void capture_log(logcap_t *c)
{
    memset(c, 0, sizeof *c);
    c->fp = open_memstream(&c->text, &c->len);
    assert_non_null(c->fp);
    loom_log_set_sink(c->fp);
}

static void end_capture(logcap_t *c)
{
    loom_log_set_sink(NULL);
    fclose(c->fp);
}

static void assert_gpu(const gpu_t *g, uint32_t index, const char *uuid, const char *model,
                       uint64_t mem)
{
    assert_int_equal(g->index, index);
    assert_string_equal(g->uuid, uuid);
    assert_string_equal(g->model, model);
    assert_int_equal(g->memory_bytes, mem);
}

static void detect(gpu_inv_t *inv, const char *nvml, bool no_detect, uint64_t timeout_ms)
{
    gpu_detect_opts_t o = {
        .nvml_library = nvml, .no_detect = no_detect, .smi_timeout_ms = timeout_ms};
    gpu_detect(&o, inv);
}

/* --- parsing --- */

static void test_parse_spec(void **state)
{
    (void)state;
    char why[256];
    gpu_t g;
    assert_int_equal(gpu_parse_spec("1:NVIDIA A100-SXM4-40GB:40G:GPU-abc-123", &g, why, sizeof why),
                     0);
    assert_gpu(&g, 1, "GPU-abc-123", "NVIDIA A100-SXM4-40GB", 40ull << 30);
    gpu_free(&g);
    assert_int_equal(gpu_parse_spec("0:Tesla T4:15.5G", &g, why, sizeof why), 0);
    assert_gpu(&g, 0, "", "Tesla T4", (uint64_t)(15.5 * (1ull << 30)));
    gpu_free(&g);
    static const char *bad[] = {"",
                                "0",
                                "0:A100",
                                "x:A100:40G",
                                "-1:A100:40G",
                                "0::40G",
                                "0:A100:forty",
                                "0:A100:0",
                                "0:A100:40G:",
                                "0:A100:40G:u u",
                                "0:A100:40G:u:v",
                                "99999:A100:40G"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        why[0] = '\0';
        if (gpu_parse_spec(bad[i], &g, why, sizeof why) != LOOM_EINVAL)
            fail_msg("--gpu \"%s\" was accepted", bad[i]);
        assert_true(why[0] != '\0');
    }
    const char *dup[] = {"0:A:1G", "1:B:1G", "0:C:1G"};
    assert_int_equal(gpu_check_specs(dup, 3, why, sizeof why), LOOM_EINVAL);
    assert_string_equal(why, "--gpu 0:C:1G: GPU 0 is given twice");
    assert_int_equal(gpu_check_specs(dup, 2, why, sizeof why), 0);
}

static void test_parse_smi_is_strict(void **state)
{
    (void)state;
    char why[256];
    gpu_t *gpus = NULL;
    size_t n = 99;
    assert_int_equal(gpu_parse_smi("", &gpus, &n, why, sizeof why), 0);
    assert_int_equal(n, 0);
    free(gpus);
    assert_int_equal(
        gpu_parse_smi("3, GPU-a, Tesla V100-SXM2-16GB, 16160\r\n", &gpus, &n, why, sizeof why), 0);
    assert_int_equal(n, 1);
    assert_gpu(&gpus[0], 3, "GPU-a", "Tesla V100-SXM2-16GB", 16160 * MIB);
    gpu_free(&gpus[0]);
    free(gpus);
    static const struct {
        const char *text, *why;
    } bad[] = {
        {"0, GPU-a, A100, [N/A]\n", "line 1: memory is not a number of MiB"},
        {"0, GPU-a, A100\n", "line 1: fewer than 4 fields"},
        {"0, GPU-a, A100, 40960, extra\n", "line 1: more than 4 fields"},
        {"0, GPU-a, A100, 40960\n\n1, GPU-b, A100, 40960\n", "line 2: fewer than 4 fields"},
        {"0, GPU-a, A100, 40960\n0, GPU-b, A100, 40960\n", "line 2: index given twice"},
        {"zero, GPU-a, A100, 40960\n", "line 1: bad index"},
        {"0, GPU a, A100, 40960\n", "line 1: bad uuid"},
        {"0, GPU-a, , 40960\n", "line 1: bad name"},
        {"No devices were found\n", "line 1: fewer than 4 fields"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        gpus = NULL;
        if (gpu_parse_smi(bad[i].text, &gpus, &n, why, sizeof why) != LOOM_EPARSE)
            fail_msg("accepted: %s", bad[i].text);
        assert_string_equal(why, bad[i].why);
        assert_null(gpus);
    }
}

/* --- detection --- */

static void test_smi_two_gpus_after_nvml_absent(void **state)
{
    fx_t *f = *state;
    char *mark = use_fake_smi(f, "two");
    gpu_inv_t inv;
    detect(&inv, NO_NVML, false, 0);
    assert_string_equal(inv.source, "nvidia-smi");
    assert_int_equal(inv.n, 2);
    assert_gpu(&inv.gpus[0], 0, A100_UUID, "NVIDIA A100-SXM4-40GB", 40960 * MIB);
    assert_gpu(&inv.gpus[1], 1, H100_UUID, "NVIDIA H100 80GB HBM3", 81559 * MIB);
    gpu_usage_t u[2];
    assert_int_equal(gpu_sample(&inv, u, 2), 0); /* usage only through NVML */
    gpu_inv_free(&inv);
    assert_int_equal(access(mark, F_OK), 0);
    free(mark);
}

static void test_smi_malformed_is_refused_with_warning(void **state)
{
    fx_t *f = *state;
    char *mark = use_fake_smi(f, "malformed");
    logcap_t log;
    gpu_inv_t inv;
    capture_log(&log);
    detect(&inv, NO_NVML, false, 0);
    end_capture(&log);
    assert_string_equal(inv.source, "none");
    assert_int_equal(inv.n, 0);
    assert_non_null(strstr(log.text, "WARN"));
    assert_non_null(strstr(log.text, "nvidia-smi printed output we do not understand (line 1: "
                                     "memory is not a number of MiB)"));
    gpu_inv_free(&inv);
    free(log.text);
    free(mark);
}

static void test_smi_failing_means_none_with_warning(void **state)
{
    fx_t *f = *state;
    char *mark = use_fake_smi(f, "fail");
    logcap_t log;
    gpu_inv_t inv;
    capture_log(&log);
    detect(&inv, NO_NVML, false, 0);
    end_capture(&log);
    assert_string_equal(inv.source, "none");
    assert_int_equal(inv.n, 0);
    assert_non_null(strstr(log.text, "nvidia-smi failed (status 9): NVIDIA-SMI has failed"));
    gpu_inv_free(&inv);
    free(log.text);
    free(mark);
}

static void test_smi_hanging_is_killed_at_the_deadline(void **state)
{
    fx_t *f = *state;
    char *mark = use_fake_smi(f, "hang");
    char *pidfile = loom_xasprintf("%s/smi.pid", f->tmp);
    setenv("FAKE_NVIDIA_SMI_PIDFILE", pidfile, 1);
    logcap_t log;
    gpu_inv_t inv;
    capture_log(&log);
    uint64_t t0 = loom_mono_ms();
    detect(&inv, NO_NVML, false, 300);
    uint64_t took = loom_mono_ms() - t0;
    end_capture(&log);
    assert_true(took >= 300);
    assert_true(took < 3000);
    assert_string_equal(inv.source, "none");
    assert_non_null(strstr(log.text, "nvidia-smi did not answer within 300 ms; killed it"));
    /* Killed and reaped, not left behind. */
    char *text = NULL;
    assert_int_equal(loom_read_file(pidfile, 64, &text, NULL), 0);
    int64_t pid;
    text[strcspn(text, "\n")] = '\0';
    assert_int_equal(loom_parse_i64(text, 1, INT32_MAX, &pid), 0);
    assert_int_equal(kill((pid_t)pid, 0), -1);
    assert_int_equal(errno, ESRCH);
    gpu_inv_free(&inv);
    free(text);
    free(log.text);
    free(pidfile);
    free(mark);
}

static void test_config_override_skips_detection(void **state)
{
    fx_t *f = *state;
    char *mark = use_fake_smi(f, "two");
    const char *specs[] = {"2:NVIDIA L4:24G:GPU-l4", "5:NVIDIA L4:22.5G"};
    gpu_detect_opts_t o = {.specs = specs, .n_specs = 2, .nvml_library = NO_NVML};
    gpu_inv_t inv;
    gpu_detect(&o, &inv);
    assert_string_equal(inv.source, "config");
    assert_int_equal(inv.n, 2);
    assert_gpu(&inv.gpus[0], 2, "GPU-l4", "NVIDIA L4", 24ull << 30);
    assert_gpu(&inv.gpus[1], 5, "", "NVIDIA L4", (uint64_t)(22.5 * (1ull << 30)));
    assert_true(gpu_inv_has(&inv, 5));
    assert_false(gpu_inv_has(&inv, 0));
    gpu_inv_free(&inv);
    assert_int_equal(access(mark, F_OK), -1); /* nvidia-smi never ran */
    free(mark);
}

static void test_no_detect_runs_nothing(void **state)
{
    fx_t *f = *state;
    char *mark = use_fake_smi(f, "two");
    gpu_inv_t inv;
    detect(&inv, NO_NVML, true, 0);
    assert_string_equal(inv.source, "none");
    assert_int_equal(inv.n, 0);
    assert_int_equal(access(mark, F_OK), -1);
    gpu_inv_free(&inv);
    free(mark);
}

/* --- NVML, through a stand-in library --- */

static const char fake_nvml_src[] =
    "#include <stdio.h>\n"
    "#include <stdlib.h>\n"
    "typedef struct { unsigned long long total, free, used; } mem_t;\n"
    "typedef struct { unsigned int gpu, memory; } util_t;\n"
    "static int up;\n"
    "int nvmlInit_v2(void) { if (getenv(\"FAKE_NVML_INIT_FAIL\")) return 9; up = 1; return 0; }\n"
    "int nvmlShutdown(void) { up = 0; return 0; }\n"
    "const char *nvmlErrorString(int r) { return r == 9 ? \"Driver Not Loaded\" : \"?\"; }\n"
    "int nvmlDeviceGetCount_v2(unsigned int *n) { if (!up) return 1; *n = 2; return 0; }\n"
    "int nvmlDeviceGetHandleByIndex_v2(unsigned int i, void **d)\n"
    "{ if (i > 1) return 2; *d = (void *)(unsigned long)(i + 1); return 0; }\n"
    "int nvmlDeviceGetName(void *d, char *b, unsigned int n)\n"
    "{ snprintf(b, n, \"%s\", d == (void *)1 ? \"NVIDIA A100-SXM4-40GB\" : \"NVIDIA H100 80GB "
    "HBM3\"); return 0; }\n"
    "int nvmlDeviceGetUUID(void *d, char *b, unsigned int n)\n"
    "{ snprintf(b, n, \"GPU-fake-%lu\", (unsigned long)d); return 0; }\n"
    "int nvmlDeviceGetMemoryInfo(void *d, mem_t *m)\n"
    "{ m->total = (unsigned long long)d * 40 << 30; m->used = (unsigned long long)d << 30;\n"
    "  m->free = m->total - m->used; return 0; }\n"
    "int nvmlDeviceGetUtilizationRates(void *d, util_t *u)\n"
    "{ u->gpu = 30 + (unsigned)(unsigned long)d; u->memory = 5; return 0; }\n";

/* Builds the stand-in NVML with the C compiler; NULL (the test skips)
 * where there is none. */
static char *build_fake_nvml(fx_t *f)
{
    char *src = loom_xasprintf("%s/fake_nvml.c", f->tmp);
    char *lib = loom_xasprintf("%s/libnvidia-ml.so.1", f->tmp);
    assert_int_equal(loom_write_file_atomic(src, fake_nvml_src, sizeof fake_nvml_src - 1), 0);
    char *argv[] = {"cc", "-shared", "-fPIC", "-o", lib, src, NULL};
    pid_t pid;
    int status = -1;
    int rc = posix_spawnp(&pid, "cc", NULL, NULL, argv, environ);
    if (rc == 0)
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
    free(src);
    if (rc != 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        free(lib);
        return NULL;
    }
    return lib;
}

static void test_nvml_found_first_and_samples_usage(void **state)
{
    fx_t *f = *state;
    char *mark = use_fake_smi(f, "two");
    char *lib = build_fake_nvml(f);
    if (!lib) skip(); /* no C compiler to build the stand-in NVML */
    gpu_inv_t inv;
    detect(&inv, lib, false, 0);
    assert_string_equal(inv.source, "nvml");
    assert_int_equal(inv.n, 2);
    assert_gpu(&inv.gpus[0], 0, "GPU-fake-1", "NVIDIA A100-SXM4-40GB", 40ull << 30);
    assert_gpu(&inv.gpus[1], 1, "GPU-fake-2", "NVIDIA H100 80GB HBM3", 80ull << 30);
    gpu_usage_t u[2];
    assert_int_equal(gpu_sample(&inv, u, 2), 2);
    assert_int_equal(u[0].index, 0);
    assert_int_equal(u[0].utilization_percent, 31);
    assert_int_equal(u[0].memory_used_bytes, 1ull << 30);
    assert_int_equal(u[1].index, 1);
    assert_int_equal(u[1].utilization_percent, 32);
    assert_int_equal(u[1].memory_used_bytes, 2ull << 30);
    gpu_inv_free(&inv);
    assert_int_equal(access(mark, F_OK), -1); /* NVML answered: no nvidia-smi */
    free(lib);
    free(mark);
}

static void test_nvml_failing_falls_back_to_smi(void **state)
{
    fx_t *f = *state;
    char *mark = use_fake_smi(f, "two");
    char *lib = build_fake_nvml(f);
    if (!lib) skip();
    setenv("FAKE_NVML_INIT_FAIL", "1", 1);
    logcap_t log;
    gpu_inv_t inv;
    capture_log(&log);
    detect(&inv, lib, false, 0);
    end_capture(&log);
    assert_string_equal(inv.source, "nvidia-smi");
    assert_int_equal(inv.n, 2);
    assert_non_null(strstr(log.text, "Driver Not Loaded; trying nvidia-smi"));
    gpu_inv_free(&inv);
    free(log.text);
    free(lib);
    free(mark);
}

/* --- the agent --- */

static void test_hello_reports_gpus_and_cpus(void **state)
{
    fx_t *f = *state;
    char *mark = use_fake_smi(f, "two");
    f->cfg.nvml_library = NO_NVML;
    start_agent(f);
    const loom_msg_t *m = wait_msg(f, LOOM__ENVELOPE__BODY_HELLO, NULL, 0);
    const Loom__Resources *r = m->hello->resources;
    assert_string_equal(r->gpu_source, "nvidia-smi");
    assert_int_equal(r->n_gpus, 2);
    assert_int_equal(r->gpus[0]->index, 0);
    assert_string_equal(r->gpus[0]->uuid, A100_UUID);
    assert_string_equal(r->gpus[0]->model, "NVIDIA A100-SXM4-40GB");
    assert_int_equal(r->gpus[0]->memory_bytes, 40960 * MIB);
    assert_int_equal(r->gpus[1]->index, 1);
    assert_string_equal(r->gpus[1]->model, "NVIDIA H100 80GB HBM3");
    assert_int_equal(r->gpus[1]->memory_bytes, 81559 * MIB);
    assert_true(r->cpus_usable > 0);
    assert_true(r->cpus >= r->cpus_usable && r->cpus < r->cpus_usable + 1);
    free(mark);
}

static void dispatch_env_probe(fx_t *f, uint64_t id, uint32_t *gpus, size_t n_gpus,
                               Loom__EnvVar **env, size_t n_env)
{
    static const char script[] = "for v in CUDA_VISIBLE_DEVICES NVIDIA_VISIBLE_DEVICES "
                                 "CUDA_DEVICE_ORDER; do eval \"echo $v=\\${$v-unset}\"; done";
    Loom__Dispatch d = LOOM__DISPATCH__INIT;
    d.attempt_id = id;
    d.run_id = 1;
    d.pipeline = "pipe";
    d.task = "gpu";
    d.shell = (char *)script;
    d.seq = id;
    d.attempt_number = 1;
    d.gpus = gpus;
    d.n_gpus = n_gpus;
    d.env = env;
    d.n_env = n_env;
    send_dispatch(f, &d);
}

static char *env_seen(fx_t *f, uint64_t id)
{
    const loom_msg_t *fin = wait_msg(f, LOOM__ENVELOPE__BODY_FINISHED, for_attempt, id);
    assert_int_equal(fin->finished->exit_code, 0);
    return attempt_output(f, id);
}

static void test_dispatch_gpus_set_visible_devices_exactly(void **state)
{
    fx_t *f = *state;
    const char *specs[] = {"0:NVIDIA A100:40G", "1:NVIDIA A100:40G", "3:NVIDIA A100:40G"};
    f->cfg.gpus = specs;
    f->cfg.n_gpus = 3;
    const loom_msg_t *hello = start_welcomed(f, 10000);
    assert_string_equal(hello->hello->resources->gpu_source, "config");
    /* Dispatch.env cannot widen the assignment. */
    Loom__EnvVar wide = LOOM__ENV_VAR__INIT;
    wide.name = "CUDA_VISIBLE_DEVICES";
    wide.value = "0,1,3";
    Loom__EnvVar *env[] = {&wide};
    uint32_t two[] = {3, 1};
    dispatch_env_probe(f, 1, two, 2, env, 1);
    char *out = env_seen(f, 1);
    assert_string_equal(out, "CUDA_VISIBLE_DEVICES=3,1\nNVIDIA_VISIBLE_DEVICES=3,1\n"
                             "CUDA_DEVICE_ORDER=PCI_BUS_ID\n");
    free(out);
    /* Asked for none on a GPU agent: both set, empty. */
    dispatch_env_probe(f, 2, NULL, 0, env, 1);
    out = env_seen(f, 2);
    assert_string_equal(out, "CUDA_VISIBLE_DEVICES=\nNVIDIA_VISIBLE_DEVICES=\n"
                             "CUDA_DEVICE_ORDER=PCI_BUS_ID\n");
    free(out);
    /* A GPU this agent does not have: refused, not run. */
    uint32_t absent[] = {2};
    dispatch_env_probe(f, 3, absent, 1, NULL, 0);
    const loom_msg_t *fin = wait_msg(f, LOOM__ENVELOPE__BODY_FINISHED, for_attempt, 3);
    assert_int_equal(fin->finished->exit_code, -1);
    assert_string_equal(fin->finished->error, "agent " AGENT_NAME " has no GPU 2");
    assert_int_equal(count_since(f, 0, LOOM__ENVELOPE__BODY_STARTED, 3), 0);
}

static void test_gpuless_agent_leaves_variables_alone(void **state)
{
    fx_t *f = *state;
    f->cfg.no_gpu_detect = true;
    setenv("CUDA_VISIBLE_DEVICES", "inherited", 1);
    const loom_msg_t *hello = start_welcomed(f, 10000);
    assert_string_equal(hello->hello->resources->gpu_source, "none");
    assert_int_equal(hello->hello->resources->n_gpus, 0);
    dispatch_env_probe(f, 1, NULL, 0, NULL, 0);
    char *out = env_seen(f, 1);
    assert_string_equal(out, "CUDA_VISIBLE_DEVICES=inherited\nNVIDIA_VISIBLE_DEVICES=unset\n"
                             "CUDA_DEVICE_ORDER=unset\n");
    free(out);
    Loom__EnvVar mine = LOOM__ENV_VAR__INIT;
    mine.name = "NVIDIA_VISIBLE_DEVICES";
    mine.value = "all";
    Loom__EnvVar *env[] = {&mine};
    dispatch_env_probe(f, 2, NULL, 0, env, 1);
    out = env_seen(f, 2);
    assert_string_equal(out, "CUDA_VISIBLE_DEVICES=inherited\nNVIDIA_VISIBLE_DEVICES=all\n"
                             "CUDA_DEVICE_ORDER=unset\n");
    free(out);
}

static bool heartbeat_with_gpu_usage(const loom_msg_t *m, uint64_t arg)
{
    (void)arg;
    return m->heartbeat->usage && m->heartbeat->usage->n_gpus == 2;
}

static void test_heartbeat_usage(void **state)
{
    fx_t *f = *state;
    char *mark = use_fake_smi(f, "two");
    char *lib = build_fake_nvml(f);
    if (!lib) skip();
    f->cfg.nvml_library = lib;
    const loom_msg_t *hello = start_welcomed(f, 10000);
    assert_string_equal(hello->hello->resources->gpu_source, "nvml");
    const loom_msg_t *hb = wait_msg(f, LOOM__ENVELOPE__BODY_HEARTBEAT, heartbeat_with_gpu_usage, 0);
    const Loom__Usage *u = hb->heartbeat->usage;
    assert_true(u->load1 >= 0);
    assert_true(u->memory_available_bytes > 0);
    assert_int_equal(u->gpus[0]->index, 0);
    assert_int_equal(u->gpus[0]->utilization_percent, 31);
    assert_int_equal(u->gpus[0]->memory_used_bytes, 1ull << 30);
    assert_int_equal(u->gpus[1]->utilization_percent, 32);
    assert_false(hb->heartbeat->draining);
    free(lib);
    free(mark);
}

static void test_heartbeat_usage_without_nvml_has_no_gpus(void **state)
{
    fx_t *f = *state;
    char *mark = use_fake_smi(f, "two");
    f->cfg.nvml_library = NO_NVML;
    start_welcomed(f, 10000);
    for (int i = 0; i < 3; i++) {
        const loom_msg_t *hb = wait_msg(f, LOOM__ENVELOPE__BODY_HEARTBEAT, NULL, 0);
        assert_non_null(hb->heartbeat->usage);
        assert_true(hb->heartbeat->usage->memory_available_bytes > 0);
        assert_int_equal(hb->heartbeat->usage->n_gpus, 0);
    }
    free(mark);
}

#define T(name) cmocka_unit_test_setup_teardown(name, gpu_setup, gpu_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_parse_spec),
        T(test_parse_smi_is_strict),
        T(test_smi_two_gpus_after_nvml_absent),
        T(test_smi_malformed_is_refused_with_warning),
        T(test_smi_failing_means_none_with_warning),
        T(test_smi_hanging_is_killed_at_the_deadline),
        T(test_config_override_skips_detection),
        T(test_no_detect_runs_nothing),
        T(test_nvml_found_first_and_samples_usage),
        T(test_nvml_failing_falls_back_to_smi),
        T(test_hello_reports_gpus_and_cpus),
        T(test_dispatch_gpus_set_visible_devices_exactly),
        T(test_gpuless_agent_leaves_variables_alone),
        T(test_heartbeat_usage),
        T(test_heartbeat_usage_without_nvml_has_no_gpus),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
