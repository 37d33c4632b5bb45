/* GPU inventory for the agent. NVML is opened with dlopen and its few
 * entry points declared here (Debian ships no NVML headers, and an agent
 * must start on hosts without the driver); nvidia-smi is the fallback, run
 * with a deadline and killed after it, and its output is parsed strictly. */
#include "gpu.h"
#include "runner.h"

#include "loom/err.h"
#include "loom/log.h"
#include "loom/util.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define MIB (1024ull * 1024)
#define SMI_OUTPUT_MAX (1024 * 1024)
#define FIELD_MAX 95 /* NVML's name and UUID buffers are 96 bytes */
#define INDEX_MAX 65535

/* --- parsing ---------------------------------------------------------------- */

void gpu_free(gpu_t *g)
{
    free(g->uuid);
    free(g->model);
    memset(g, 0, sizeof *g);
}

static bool printable(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e) return false;
    return true;
}

static bool uuid_valid(const char *s)
{
    if (strlen(s) > FIELD_MAX) return false;
    for (; *s; s++)
        if (!(*s == '-' || (*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'z') ||
              (*s >= 'A' && *s <= 'Z')))
            return false;
    return true;
}

int gpu_parse_spec(const char *spec, gpu_t *out, char *why, size_t whylen)
{
    char *copy = loom_xstrdup(spec);
    char *f[5] = {copy, NULL, NULL, NULL, NULL};
    int n = 1, rc = LOOM_EINVAL;
    int64_t index;
    uint64_t mem;
    for (char *p = copy; *p; p++)
        if (*p == ':') {
            *p = '\0';
            if (n < 5) f[n] = p + 1;
            n++;
        }
    memset(out, 0, sizeof *out);
    if (n < 3 || n > 4)
        snprintf(why, whylen, "expected INDEX:MODEL:MEMORY[:UUID]");
    else if (loom_parse_i64(f[0], 0, INDEX_MAX, &index) != 0)
        snprintf(why, whylen, "index \"%s\" is not a number from 0 to %d", f[0], INDEX_MAX);
    else if (!*f[1] || strlen(f[1]) > FIELD_MAX || !printable(f[1]))
        snprintf(why, whylen, "model must be 1-%d printable characters", FIELD_MAX);
    else if (loom_parse_size(f[2], &mem) != 0 || mem == 0)
        snprintf(why, whylen, "memory \"%s\" is not a size such as 40G", f[2]);
    else if (n == 4 && (!*f[3] || !uuid_valid(f[3])))
        snprintf(why, whylen, "uuid \"%s\" is not letters, digits and '-'", f[3]);
    else
        rc = 0;
    if (rc == 0) {
        out->index = (uint32_t)index;
        out->model = loom_xstrdup(f[1]);
        out->uuid = loom_xstrdup(n == 4 ? f[3] : "");
        out->memory_bytes = mem;
    }
    free(copy);
    return rc;
}

int gpu_check_specs(const char *const *specs, size_t n, char *why, size_t whylen)
{
    uint32_t *seen = loom_xcalloc(n + 1, sizeof *seen);
    int rc = 0;
    char detail[256];
    for (size_t i = 0; i < n && rc == 0; i++) {
        gpu_t g;
        rc = gpu_parse_spec(specs[i], &g, detail, sizeof detail);
        if (rc != 0) {
            snprintf(why, whylen, "--gpu %s: %s", specs[i], detail);
            break;
        }
        for (size_t j = 0; j < i; j++)
            if (seen[j] == g.index) {
                snprintf(why, whylen, "--gpu %s: GPU %u is given twice", specs[i], g.index);
                rc = LOOM_EINVAL;
            }
        seen[i] = g.index;
        gpu_free(&g);
    }
    free(seen);
    return rc;
}

static char *trim(char *s)
{
    while (*s == ' ') s++;
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == ' ') s[--n] = '\0';
    return s;
}

/* One "I, UUID, NAME, MiB" line into g. Returns NULL, or what is wrong. */
static const char *parse_smi_line(char *line, gpu_t *g)
{
    char *f[4];
    int n = 0;
    for (char *p = line;; p++) {
        char *comma = strchr(p, ',');
        if (n == 4) return "more than 4 fields";
        f[n++] = p;
        if (!comma) break;
        *comma = '\0';
        p = comma;
    }
    if (n != 4) return "fewer than 4 fields";
    for (int i = 0; i < 4; i++) f[i] = trim(f[i]);
    int64_t index, mib;
    if (loom_parse_i64(f[0], 0, INDEX_MAX, &index) != 0) return "bad index";
    if (!*f[1] || !uuid_valid(f[1])) return "bad uuid";
    if (!*f[2] || strlen(f[2]) > FIELD_MAX || !printable(f[2])) return "bad name";
    if (loom_parse_i64(f[3], 1, INT64_MAX / (int64_t)MIB, &mib) != 0)
        return "memory is not a number of MiB";
    g->index = (uint32_t)index;
    g->uuid = loom_xstrdup(f[1]);
    g->model = loom_xstrdup(f[2]);
    g->memory_bytes = (uint64_t)mib * MIB;
    return NULL;
}

static void free_gpus(gpu_t *gpus, size_t n)
{
    for (size_t i = 0; i < n; i++) gpu_free(&gpus[i]);
    free(gpus);
}

int gpu_parse_smi(const char *text, gpu_t **gpus, size_t *n, char *why, size_t whylen)
{
    char *copy = loom_xstrdup(text);
    size_t len = strlen(copy), count = 0;
    gpu_t *out = NULL;
    int rc = 0, lineno = 0;
    if (len > 0 && copy[len - 1] == '\n') copy[--len] = '\0';
    for (char *line = copy, *nl; len > 0 && line; line = nl ? nl + 1 : NULL) {
        nl = strchr(line, '\n');
        if (nl) *nl = '\0';
        lineno++;
        out = loom_xrealloc(out, (count + 1) * sizeof *out);
        memset(&out[count], 0, sizeof *out);
        size_t ll = strlen(line);
        if (ll > 0 && line[ll - 1] == '\r') line[ll - 1] = '\0';
        const char *bad = parse_smi_line(line, &out[count]);
        if (!bad) {
            for (size_t j = 0; j < count && !bad; j++)
                if (out[j].index == out[count].index) bad = "index given twice";
            count++;
        }
        if (bad) {
            snprintf(why, whylen, "line %d: %s", lineno, bad);
            rc = LOOM_EPARSE;
            break;
        }
    }
    free(copy);
    if (rc != 0) {
        free_gpus(out, count);
        return rc;
    }
    *gpus = out;
    *n = count;
    return 0;
}

/* --- NVML ------------------------------------------------------------------- */

/* The few NVML declarations we use, as nvml.h has them: nvmlReturn_t is an
 * enum where 0 is NVML_SUCCESS, nvmlDevice_t an opaque pointer. */
typedef int nvml_ret;
typedef struct nvml_device_st *nvml_device;
typedef struct {
    unsigned long long total, free, used; /* nvmlMemory_t */
} nvml_memory;
typedef struct {
    unsigned int gpu, memory; /* nvmlUtilization_t, percent */
} nvml_utilization;

struct gpu_nvml {
    void *lib;
    nvml_ret (*init)(void);
    nvml_ret (*shutdown)(void);
    nvml_ret (*count)(unsigned int *n);
    nvml_ret (*by_index)(unsigned int index, nvml_device *d);
    nvml_ret (*name)(nvml_device d, char *buf, unsigned int len);
    nvml_ret (*uuid)(nvml_device d, char *buf, unsigned int len);
    nvml_ret (*memory)(nvml_device d, nvml_memory *m);
    nvml_ret (*utilization)(nvml_device d, nvml_utilization *u);
    const char *(*error_string)(nvml_ret r);
    bool initialised;
    nvml_device *devices; /* one per inventory entry */
};

static const char *nvml_error(const struct gpu_nvml *v, nvml_ret r)
{
    const char *s = v->error_string ? v->error_string(r) : NULL;
    return s ? s : "NVML error";
}

static void nvml_close(struct gpu_nvml *v)
{
    if (!v) return;
    if (v->initialised && v->shutdown) v->shutdown();
    if (v->lib) dlclose(v->lib);
    free(v->devices);
    free(v);
}

/* dlsym returns an object pointer; POSIX guarantees it converts to the
 * function pointer it stands for. */
static bool resolve(void *lib, const char *sym, void *slot)
{
    void *p = dlsym(lib, sym);
    memcpy(slot, &p, sizeof p);
    return p != NULL;
}

#define RESOLVE(v, field, sym) resolve((v)->lib, sym, &(v)->field)

static struct gpu_nvml *nvml_open(const char *library)
{
    struct gpu_nvml *v = loom_xcalloc(1, sizeof *v);
    v->lib = dlopen(library, RTLD_NOW | RTLD_LOCAL);
    if (!v->lib) {
        const char *err = dlerror();
        LOG_DEBUG("no NVML: %s", err ? err : library);
        nvml_close(v);
        return NULL;
    }
    RESOLVE(v, shutdown, "nvmlShutdown");
    RESOLVE(v, error_string, "nvmlErrorString");
    if (!RESOLVE(v, init, "nvmlInit_v2") || !RESOLVE(v, count, "nvmlDeviceGetCount_v2") ||
        !RESOLVE(v, by_index, "nvmlDeviceGetHandleByIndex_v2") ||
        !RESOLVE(v, name, "nvmlDeviceGetName") || !RESOLVE(v, uuid, "nvmlDeviceGetUUID") ||
        !RESOLVE(v, memory, "nvmlDeviceGetMemoryInfo") ||
        !RESOLVE(v, utilization, "nvmlDeviceGetUtilizationRates")) {
        LOG_WARN("%s lacks an NVML function we need; not using NVML", library);
        nvml_close(v);
        return NULL;
    }
    return v;
}

/* Lists the GPUs NVML sees. Returns 0 or LOOM_EIO (logged). */
static int nvml_detect(const char *library, gpu_inv_t *inv)
{
    struct gpu_nvml *v = nvml_open(library);
    unsigned int count = 0;
    if (!v) return LOOM_ENOTFOUND;
    nvml_ret r = v->init();
    v->initialised = r == 0;
    if (r == 0) r = v->count(&count);
    if (r != 0) goto failed;
    gpu_t *gpus = loom_xcalloc(count + 1, sizeof *gpus);
    v->devices = loom_xcalloc(count + 1, sizeof *v->devices);
    for (unsigned int i = 0; i < count && r == 0; i++) {
        char name[FIELD_MAX + 1] = "", uuid[FIELD_MAX + 1] = "";
        nvml_memory mem = {0};
        r = v->by_index(i, &v->devices[i]);
        if (r == 0) r = v->name(v->devices[i], name, sizeof name);
        if (r == 0) r = v->uuid(v->devices[i], uuid, sizeof uuid);
        if (r == 0) r = v->memory(v->devices[i], &mem);
        name[FIELD_MAX] = uuid[FIELD_MAX] = '\0';
        gpus[i] = (gpu_t){i, loom_xstrdup(uuid), loom_xstrdup(name), mem.total};
    }
    if (r != 0) {
        free_gpus(gpus, count);
        goto failed;
    }
    inv->gpus = gpus;
    inv->n = count;
    inv->source = count ? "nvml" : "none";
    if (count)
        inv->nvml = v;
    else
        nvml_close(v);
    return 0;
failed:
    LOG_WARN("NVML (%s): %s; trying nvidia-smi", library, nvml_error(v, r));
    nvml_close(v);
    return LOOM_EIO;
}

size_t gpu_sample(const gpu_inv_t *inv, gpu_usage_t *out, size_t max)
{
    const struct gpu_nvml *v = inv->nvml;
    size_t k = 0;
    if (!v) return 0;
    for (size_t i = 0; i < inv->n && k < max; i++) {
        nvml_utilization u;
        nvml_memory m;
        if (v->utilization(v->devices[i], &u) != 0 || v->memory(v->devices[i], &m) != 0) continue;
        out[k++] = (gpu_usage_t){inv->gpus[i].index, u.gpu, m.used};
    }
    return k;
}

/* --- nvidia-smi ------------------------------------------------------------- */

static int spawn_smi(const char *cmd, int out_w, pid_t *pid)
{
    char *argv[] = {(char *)cmd, "--query-gpu=index,uuid,name,memory.total",
                    "--format=csv,noheader,nounits", NULL};
    posix_spawnattr_t attr;
    posix_spawn_file_actions_t fa;
    /* Its own group, so that a hung nvidia-smi and anything it started die
     * together. */
    loom_runner_spawnattr_init(&attr);
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, out_w, 1);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    int rc = posix_spawnp(pid, cmd, &fa, &attr, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    return rc;
}

/* Reads the pipe until EOF and the process has exited, or the deadline.
 * Returns true if both happened in time. */
static bool collect(int out_r, int pidfd, uint64_t deadline, loom_buf_t *out)
{
    bool eof = false, exited = false;
    char chunk[4096];
    while (!eof || !exited) {
        uint64_t now = loom_mono_ms();
        if (now >= deadline) return false;
        struct pollfd p[2] = {{eof ? -1 : out_r, POLLIN, 0}, {exited ? -1 : pidfd, POLLIN, 0}};
        int n = poll(p, 2, (int)(deadline - now));
        if (n < 0 && errno != EINTR) return false;
        if (n <= 0) continue;
        if (p[1].revents) exited = true;
        if (p[0].revents) {
            ssize_t got = read(out_r, chunk, sizeof chunk);
            if (got < 0 && errno == EINTR) continue;
            if (got <= 0) {
                eof = true;
            } else if (out->len + (size_t)got <= SMI_OUTPUT_MAX) {
                loom_buf_append(out, chunk, (size_t)got);
            }
        }
    }
    return true;
}

/* Runs nvidia-smi; *status is its wait status. Returns 0, LOOM_ENOTFOUND,
 * LOOM_ETIMEOUT or LOOM_ESPAWN. */
static int run_smi(const char *cmd, uint64_t timeout_ms, loom_buf_t *out, int *status)
{
    int fds[2];
    pid_t pid;
    if (pipe2(fds, O_CLOEXEC) != 0) return LOOM_ESPAWN;
    int rc = spawn_smi(cmd, fds[1], &pid);
    close(fds[1]);
    if (rc != 0) {
        close(fds[0]);
        LOG_DEBUG("cannot run %s: %s", cmd, strerror(rc));
        return rc == ENOENT ? LOOM_ENOTFOUND : LOOM_ESPAWN;
    }
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    bool done = pidfd >= 0 && collect(fds[0], pidfd, loom_mono_ms() + timeout_ms, out);
    /* The unreaped leader pins the group id: this reaches only its group. */
    kill(-pid, SIGKILL);
    while (waitpid(pid, status, 0) < 0 && errno == EINTR) {
    }
    if (pidfd >= 0) close(pidfd);
    close(fds[0]);
    return done ? 0 : pidfd < 0 ? LOOM_ESPAWN : LOOM_ETIMEOUT;
}

static int smi_detect(const gpu_detect_opts_t *o, gpu_inv_t *inv)
{
    const char *cmd = o->smi_command ? o->smi_command : GPU_SMI_COMMAND;
    uint64_t timeout = o->smi_timeout_ms ? o->smi_timeout_ms : GPU_SMI_TIMEOUT_MS;
    loom_buf_t out = {0};
    char why[256];
    int status = 0;
    int rc = run_smi(cmd, timeout, &out, &status);
    if (rc == LOOM_ETIMEOUT)
        LOG_WARN("%s did not answer within %llu ms; killed it: no GPUs", cmd,
                 (unsigned long long)timeout);
    else if (rc == LOOM_ESPAWN)
        LOG_WARN("cannot run %s: no GPUs", cmd);
    if (rc != 0) goto done;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        const char *text = out.data ? out.data : "";
        LOG_WARN("%s failed (status %d): %.*s: no GPUs", cmd,
                 WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status),
                 (int)strcspn(text, "\n"), text);
        rc = LOOM_EIO;
    } else if ((rc = gpu_parse_smi(out.data ? out.data : "", &inv->gpus, &inv->n, why,
                                   sizeof why)) != 0) {
        LOG_WARN("%s printed output we do not understand (%s); ignoring it: no GPUs", cmd, why);
    } else {
        inv->source = inv->n ? "nvidia-smi" : "none";
    }
done:
    loom_buf_free(&out);
    return rc;
}

/* --- detection -------------------------------------------------------------- */

void gpu_detect(const gpu_detect_opts_t *o, gpu_inv_t *inv)
{
    char why[256];
    memset(inv, 0, sizeof *inv);
    inv->source = "none";
    if (o->n_specs > 0) {
        inv->gpus = loom_xcalloc(o->n_specs, sizeof *inv->gpus);
        for (size_t i = 0; i < o->n_specs; i++)
            if (gpu_parse_spec(o->specs[i], &inv->gpus[inv->n], why, sizeof why) == 0) inv->n++;
        inv->source = "config";
        return;
    }
    if (o->no_detect) return;
    if (nvml_detect(o->nvml_library ? o->nvml_library : GPU_NVML_LIBRARY, inv) == 0) return;
    smi_detect(o, inv);
}

bool gpu_inv_has(const gpu_inv_t *inv, uint32_t index)
{
    for (size_t i = 0; i < inv->n; i++)
        if (inv->gpus[i].index == index) return true;
    return false;
}

void gpu_inv_free(gpu_inv_t *inv)
{
    nvml_close(inv->nvml);
    free_gpus(inv->gpus, inv->n);
    memset(inv, 0, sizeof *inv);
    inv->source = "none";
}
