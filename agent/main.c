/* loom-agent: parses flags, builds the agent, runs the loop until SIGINT or
 * SIGTERM has stopped it, and tears down. The first signal drains (running
 * tasks finish and are reported, no new ones start); a second one, or the
 * drain timeout, stops at once and kills what still runs. */
#include "agent.h"
#include "gpu.h"

#include "loom/curve.h"
#include "loom/err.h"
#include "loom/log.h"
#include "loom/util.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pwd.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_LABELS 256
#define MAX_GPUS 256
#define MAX_PASS_ENV 256
#define MAX_SLURM_OPTIONS 64

/* Long options without a short letter (the Slurm executor's). */
enum {
    OPT_EXECUTOR = 1000,
    OPT_SLURM_PARTITION,
    OPT_SLURM_ACCOUNT,
    OPT_SLURM_QOS,
    OPT_SLURM_OPTION,
    OPT_SLURM_POLL,
    OPT_PREFETCH,
};
#define DEFAULT_DRAIN_TIMEOUT_MS (10 * 60 * 1000)

typedef struct {
    loom_agent_config_t cfg;
    const char *labels[MAX_LABELS];
    const char *gpus[MAX_GPUS];
    const char *slurm_options[MAX_SLURM_OPTIONS];
    char *work_dir;   /* owned when defaulted */
    char *join_token; /* read from --join-token-file or LOOM_JOIN_TOKEN */
    const char *pass_env[MAX_PASS_ENV];
    loom_log_level level;
    uint64_t drain_timeout_ms; /* 0: no draining, the first signal stops */
} options_t;

typedef struct {
    loom_agent_t *agent;
    uv_signal_t sigint, sigterm;
    uv_timer_t refused_timer;
    uint64_t drain_timeout_ms;
    bool draining, stopping, refused;
} app_t;

static void usage(FILE *out)
{
    fprintf(out,
            "usage: loom-agent [options]\n"
            "  --server ENDPOINT   loomd ZeroMQ endpoint (default tcp://127.0.0.1:8421)\n"
            "  --name NAME         agent name (default: hostname)\n"
            "  --slots N           tasks run at once (default: CPUs)\n"
            "  --prefetch N        hold up to N more tasks, each started the moment a slot\n"
            "                      frees (default 0; for many short tasks, see\n"
            "                      docs/architecture.md)\n"
            "  --work-dir DIR      attempt folders (default $LOOM_HOME/agent or ~/.loom/agent)\n"
            "  --label K=V         a label for placement; repeatable\n"
            "  --kill-grace DUR    SIGTERM to SIGKILL delay, e.g. 5s (default 5s)\n"
            "  --gpu I:MODEL:MEM[:UUID]  a GPU of this host, e.g. 0:NVIDIA A100:40G;\n"
            "                      repeatable; given, GPUs are not detected\n"
            "  --no-gpu-detect     neither NVML nor nvidia-smi: no GPUs unless --gpu\n"
            "  --drain-timeout DUR on SIGTERM/SIGINT, let running tasks finish for at most\n"
            "                      this long (default 10m; 0: stop at once); a second\n"
            "                      signal stops at once\n"
            "  --keep-attempts K   which attempt folders stay after their result reached\n"
            "                      loomd: failed (default), all or none\n"
            "  --cache-size SIZE   bound on the object cache (bundle files and input\n"
            "                      artifacts under WORK_DIR/cache), e.g. 20G (default 10G):\n"
            "                      the least recently used objects are evicted, never one\n"
            "                      an attempt is placing; an object larger than SIZE\n"
            "                      cannot be fetched\n"
            "  --join-token-file PATH  a join token from `loom agents token` (also\n"
            "                      LOOM_JOIN_TOKEN); needed only until the agent has joined\n"
            "  --server-key KEY    loomd's CURVE public key (Z85), to be approved with\n"
            "                      `loom agents approve` instead of joining with a token\n"
            "  --run-as USER       run tasks as USER (the agent must be root for another\n"
            "                      user); as root, required: --run-as root runs tasks\n"
            "                      as root knowingly\n"
            "  --pass-env NAME     let tasks see this agent variable (or every one\n"
            "                      starting with PREFIX for PREFIX*); repeatable. Tasks\n"
            "                      otherwise get only PATH, HOME, USER, LOGNAME, LANG,\n"
            "                      LANGUAGE, LC_*, TZ and TMPDIR from the agent\n"
            "  --executor E        local (default): tasks run here; slurm: each task is\n"
            "                      a Slurm batch job (WORK_DIR on a shared filesystem;\n"
            "                      see docs/slurm.md)\n"
            "  --slurm-partition P, --slurm-account A, --slurm-qos Q\n"
            "                      sbatch's --partition, --account and --qos\n"
            "  --slurm-option OPT  one more sbatch option, e.g. --constraint=ib; repeatable\n"
            "  --slurm-poll DUR    one squeue for all jobs per interval (default 2s)\n"
            "  --log-level LEVEL   debug, info, warn or error (default info)\n"
            "  --log-format FORMAT text (default) or json: one JSON object per line\n"
            "                      (also LOOM_LOG_FORMAT)\n"
            "  --help              show this help\n"
            "  --version           print the version\n"
            "environment: LOOM_NVML_LIBRARY, the NVML library to load (libnvidia-ml.so.1);\n"
            "  LOOM_JOIN_TOKEN, a join token (never put one in argv: ps shows it)\n"
            "keys: WORK_DIR/curve/agent.key (made on first start, mode 0600) and\n"
            "  WORK_DIR/curve/server.pub (loomd's key, pinned once joined)\n");
}

static int bad_flag(const char *flag, const char *value, const char *why)
{
    if (value)
        fprintf(stderr, "loom-agent: %s %s: %s\n", flag, value, why);
    else
        fprintf(stderr, "loom-agent: %s: %s\n", flag, why);
    return 2;
}

static char *default_work_dir(void)
{
    const char *home = getenv("LOOM_HOME");
    if (home && *home) return loom_xasprintf("%s/agent", home);
    home = getenv("HOME");
    return loom_xasprintf("%s/.loom/agent", home && *home ? home : ".");
}

/* Running tasks as root is a choice made explicitly: as root, --run-as is
 * required; not root, tasks can only run as ourselves. Returns -1 to go on,
 * else an exit status. */
static int check_run_as(const char *run_as)
{
    if (geteuid() == 0 && !run_as) {
        fprintf(stderr, "loom-agent: running as root: tasks would run as root too. Pass "
                        "--run-as USER to run them as an unprivileged user (e.g. --run-as "
                        "nobody), or --run-as root to run them as root knowingly.\n");
        return 2;
    }
    if (!run_as || geteuid() == 0) return -1;
    struct passwd *pw = getpwnam(run_as);
    if (!pw) return bad_flag("--run-as", run_as, "no such user");
    if (pw->pw_uid != geteuid())
        return bad_flag("--run-as", run_as,
                        "only root can run tasks as another user (leave --run-as out to run "
                        "them as yourself)");
    return -1;
}

/* Returns -1 to go on, else an exit status. */
static int parse_gpu(options_t *o, const char *arg)
{
    char why[256];
    gpu_t g;
    if (gpu_parse_spec(arg, &g, why, sizeof why) != 0) return bad_flag("--gpu", arg, why);
    gpu_free(&g);
    if (o->cfg.n_gpus == MAX_GPUS) return bad_flag("--gpu", arg, "too many GPUs");
    o->gpus[o->cfg.n_gpus++] = arg;
    return -1;
}

static int read_token_file(options_t *o, const char *path)
{
    FILE *f = fopen(path, "r");
    char buf[512] = "";
    if (!f) return bad_flag("--join-token-file", path, strerror(errno));
    bool got = fgets(buf, sizeof buf, f) != NULL;
    fclose(f);
    buf[strcspn(buf, "\r\n")] = '\0';
    if (!got || !buf[0]) return bad_flag("--join-token-file", path, "the file is empty");
    free(o->join_token);
    o->join_token = loom_xstrdup(buf);
    sodium_memzero(buf, sizeof buf);
    return -1;
}

static int parse_flag(options_t *o, int c, const char *arg)
{
    int64_t n;
    uint64_t ms, size;
    switch (c) {
    case 'g':
        return parse_gpu(o, arg);
    case 'G':
        o->cfg.no_gpu_detect = true;
        return -1;
    case 'D':
        if (loom_parse_duration_ms(arg, &ms) != 0)
            return bad_flag("--drain-timeout", arg, "expected a duration such as 10m or 0");
        o->drain_timeout_ms = ms;
        return -1;
    case 's':
        o->cfg.server = arg;
        return -1;
    case 'n':
        if (!loom_name_valid(arg)) return bad_flag("--name", arg, "use 1-63 of [A-Za-z0-9_.-]");
        o->cfg.name = arg;
        return -1;
    case 'S':
        if (loom_parse_i64(arg, 1, 1000000, &n) != 0)
            return bad_flag("--slots", arg, "expected a number from 1 to 1000000");
        o->cfg.slots = (uint32_t)n;
        return -1;
    case OPT_PREFETCH:
        if (loom_parse_i64(arg, 0, 1024, &n) != 0)
            return bad_flag("--prefetch", arg, "expected a number from 0 to 1024");
        o->cfg.prefetch = (uint32_t)n;
        return -1;
    case 'w':
        o->cfg.work_dir = arg;
        return -1;
    case 'l':
        if (!strchr(arg, '=') || arg[0] == '=') return bad_flag("--label", arg, "expected K=V");
        if (o->cfg.n_labels == MAX_LABELS) return bad_flag("--label", arg, "too many labels");
        o->labels[o->cfg.n_labels++] = arg;
        return -1;
    case 'k':
        if (loom_parse_duration_ms(arg, &ms) != 0 || ms == 0)
            return bad_flag("--kill-grace", arg, "expected a duration such as 5s or 500ms");
        o->cfg.kill_grace_ms = ms;
        return -1;
    case 'K':
        if (strcmp(arg, "failed") == 0)
            o->cfg.keep_attempts = LOOM_KEEP_FAILED;
        else if (strcmp(arg, "all") == 0)
            o->cfg.keep_attempts = LOOM_KEEP_ALL;
        else if (strcmp(arg, "none") == 0)
            o->cfg.keep_attempts = LOOM_KEEP_NONE;
        else
            return bad_flag("--keep-attempts", arg, "expected failed, all or none");
        return -1;
    case 'C':
        if (loom_parse_size(arg, &size) != 0 || size == 0)
            return bad_flag("--cache-size", arg, "expected a size such as 20G or 512M");
        o->cfg.cache_size_bytes = size;
        return -1;
    case 'T':
        return read_token_file(o, arg);
    case 'P':
        if (!loom_curve_key_valid(arg))
            return bad_flag("--server-key", arg, "expected loomd's 40-character Z85 public key");
        o->cfg.server_key = arg;
        return -1;
    case 'u':
        o->cfg.run_as = arg;
        return -1;
    case 'E':
        if (o->cfg.n_pass_env == MAX_PASS_ENV) return bad_flag("--pass-env", arg, "too many");
        o->pass_env[o->cfg.n_pass_env++] = arg;
        return -1;
    case OPT_EXECUTOR:
        if (strcmp(arg, "local") != 0 && strcmp(arg, "slurm") != 0)
            return bad_flag("--executor", arg, "expected local or slurm");
        o->cfg.executor = arg;
        return -1;
    case OPT_SLURM_PARTITION:
    case OPT_SLURM_ACCOUNT:
    case OPT_SLURM_QOS:
        if (!*arg || strpbrk(arg, " \t\n"))
            return bad_flag(c == OPT_SLURM_PARTITION ? "--slurm-partition"
                            : c == OPT_SLURM_ACCOUNT ? "--slurm-account"
                                                     : "--slurm-qos",
                            arg, "expected a name without spaces");
        if (c == OPT_SLURM_PARTITION) o->cfg.slurm_partition = arg;
        if (c == OPT_SLURM_ACCOUNT) o->cfg.slurm_account = arg;
        if (c == OPT_SLURM_QOS) o->cfg.slurm_qos = arg;
        return -1;
    case OPT_SLURM_OPTION:
        if (strncmp(arg, "--", 2) != 0 || !arg[2])
            return bad_flag("--slurm-option", arg,
                            "expected a long sbatch option such as "
                            "--constraint=ib");
        if (o->cfg.n_slurm_options == MAX_SLURM_OPTIONS)
            return bad_flag("--slurm-option", arg, "too many options");
        o->slurm_options[o->cfg.n_slurm_options++] = arg;
        return -1;
    case OPT_SLURM_POLL:
        if (loom_parse_duration_ms(arg, &ms) != 0 || ms < 100)
            return bad_flag("--slurm-poll", arg, "expected a duration of at least 100ms");
        o->cfg.slurm_poll_ms = ms;
        return -1;
    case 'L':
        if (loom_log_parse_level(arg, &o->level) != 0)
            return bad_flag("--log-level", arg, "expected debug, info, warn or error");
        return -1;
    case 'F': {
        loom_log_format format;
        if (loom_log_parse_format(arg, &format) != 0)
            return bad_flag("--log-format", arg, "expected text or json");
        loom_log_set_format(format);
        return -1;
    }
    case 'h':
        usage(stdout);
        return 0;
    case 'v':
        printf("loom-agent %s\n", LOOM_VERSION);
        return 0;
    default:
        return 2;
    }
}

static int parse_args(options_t *o, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"server", required_argument, NULL, 's'},
        {"name", required_argument, NULL, 'n'},
        {"slots", required_argument, NULL, 'S'},
        {"prefetch", required_argument, NULL, OPT_PREFETCH},
        {"work-dir", required_argument, NULL, 'w'},
        {"label", required_argument, NULL, 'l'},
        {"kill-grace", required_argument, NULL, 'k'},
        {"log-level", required_argument, NULL, 'L'},
        {"log-format", required_argument, NULL, 'F'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'v'},
        {"gpu", required_argument, NULL, 'g'},
        {"no-gpu-detect", no_argument, NULL, 'G'},
        {"executor", required_argument, NULL, OPT_EXECUTOR},
        {"slurm-partition", required_argument, NULL, OPT_SLURM_PARTITION},
        {"slurm-account", required_argument, NULL, OPT_SLURM_ACCOUNT},
        {"slurm-qos", required_argument, NULL, OPT_SLURM_QOS},
        {"slurm-option", required_argument, NULL, OPT_SLURM_OPTION},
        {"slurm-poll", required_argument, NULL, OPT_SLURM_POLL},
        {"drain-timeout", required_argument, NULL, 'D'},
        {"keep-attempts", required_argument, NULL, 'K'},
        {"cache-size", required_argument, NULL, 'C'},
        {"join-token-file", required_argument, NULL, 'T'},
        {"server-key", required_argument, NULL, 'P'},
        {"run-as", required_argument, NULL, 'u'},
        {"pass-env", required_argument, NULL, 'E'},
        {NULL, 0, NULL, 0},
    };
    opterr = 0;
    o->level = LOOM_LOG_INFO;
    o->drain_timeout_ms = DEFAULT_DRAIN_TIMEOUT_MS;
    o->cfg.labels = o->labels;
    o->cfg.gpus = o->gpus;
    o->cfg.pass_env = o->pass_env;
    o->cfg.slurm_options = o->slurm_options;
    for (;;) {
        int c = getopt_long(argc, argv, "", longopts, NULL);
        if (c == -1) break;
        if (c == '?' || c == ':') {
            const char *flag = argv[optind - 1];
            fprintf(stderr, "loom-agent: %s: %s\n", flag,
                    optopt ? "needs a value" : "unknown flag (see --help)");
            return 2;
        }
        int rc = parse_flag(o, c, optarg);
        if (rc >= 0) return rc;
    }
    if (optind < argc) return bad_flag(argv[optind], NULL, "unexpected argument (see --help)");
    int rc = check_run_as(o->cfg.run_as);
    if (rc >= 0) return rc;
    if (!o->cfg.work_dir) o->cfg.work_dir = o->work_dir = default_work_dir();
    const char *env_token = getenv("LOOM_JOIN_TOKEN");
    if (!o->join_token && env_token && *env_token) o->join_token = loom_xstrdup(env_token);
    /* Tasks inherit the agent's environment (and Slurm jobs get it through
     * sbatch's default --export=ALL): the token must not go with them. */
    unsetenv("LOOM_JOIN_TOKEN");
    o->cfg.join_token = o->join_token;
    const char *nvml = getenv("LOOM_NVML_LIBRARY");
    if (nvml && *nvml) o->cfg.nvml_library = nvml;
    return -1;
}

/* Tasks inherit fds 0-2 through pipes we open; if one were closed, a pipe
 * could land on it and be clobbered by the child's own redirections. */
static void ensure_std_fds(void)
{
    for (int fd = 0; fd < 3; fd++) {
        if (fcntl(fd, F_GETFD) != -1) continue;
        int nul = open("/dev/null", O_RDWR);
        if (nul >= 0 && nul != fd) close(nul);
    }
}

static void on_agent_stopped(void *ud)
{
    app_t *app = ud;
    uv_close((uv_handle_t *)&app->sigint, NULL);
    uv_close((uv_handle_t *)&app->sigterm, NULL);
    uv_close((uv_handle_t *)&app->refused_timer, NULL);
}

static void stop_now(app_t *app)
{
    app->stopping = true;
    loom_agent_stop(app->agent, on_agent_stopped, app);
}

static void on_agent_drained(void *ud, bool timed_out)
{
    app_t *app = ud;
    if (app->stopping) return;
    if (timed_out) LOG_WARN("drain timeout: stopping, killing the tasks still running");
    stop_now(app);
}

static void on_refused_timer(uv_timer_t *handle)
{
    app_t *app = handle->data;
    if (!app->stopping) stop_now(app);
}

/* From inside the agent's own handler: stop from the next loop turn. */
static void on_agent_refused(void *ud)
{
    app_t *app = ud;
    app->refused = true;
    uv_timer_start(&app->refused_timer, on_refused_timer, 0, 0);
}

static void on_signal_received(uv_signal_t *handle, int signum)
{
    app_t *app = handle->data;
    if (app->stopping) {
        LOG_WARN("signal %d: already stopping, tasks get their grace period", signum);
        return;
    }
    if (app->draining || app->drain_timeout_ms == 0) {
        LOG_INFO("signal %d: stopping now", signum);
        stop_now(app);
        return;
    }
    LOG_INFO("signal %d: draining (running tasks finish; another signal stops at once)", signum);
    app->draining = true;
    loom_agent_drain(app->agent, app->drain_timeout_ms, on_agent_drained, app);
}

static int run(const options_t *o)
{
    uv_loop_t loop;
    app_t app = {0};
    uv_loop_init(&loop);
    loom_agent_config_t cfg = o->cfg;
    cfg.on_refused = on_agent_refused;
    cfg.refused_ud = &app;
    uv_timer_init(&loop, &app.refused_timer);
    app.refused_timer.data = &app;
    app.agent = loom_agent_new(&loop, &cfg);
    int rc = loom_agent_start(app.agent);
    if (rc != 0) {
        LOG_ERROR("cannot start: %s", loom_strerror(rc));
        uv_close((uv_handle_t *)&app.refused_timer, NULL);
        loom_agent_stop(app.agent, NULL, NULL);
        uv_run(&loop, UV_RUN_DEFAULT);
        loom_agent_destroy(&app.agent);
        uv_loop_close(&loop);
        return 1;
    }
    app.drain_timeout_ms = o->drain_timeout_ms;
    uv_signal_init(&loop, &app.sigint);
    uv_signal_init(&loop, &app.sigterm);
    app.sigint.data = app.sigterm.data = &app;
    uv_signal_start(&app.sigint, on_signal_received, SIGINT);
    uv_signal_start(&app.sigterm, on_signal_received, SIGTERM);
    uv_run(&loop, UV_RUN_DEFAULT);
    loom_agent_destroy(&app.agent);
    uv_loop_close(&loop);
    return app.refused ? 1 : 0;
}

int main(int argc, char **argv)
{
    options_t o;
    memset(&o, 0, sizeof o);
    loom_log_set_component("agent");
    const char *env_format = getenv("LOOM_LOG_FORMAT");
    loom_log_format format;
    if (env_format && *env_format) {
        if (loom_log_parse_format(env_format, &format) != 0)
            return bad_flag("LOOM_LOG_FORMAT", env_format, "expected text or json");
        loom_log_set_format(format);
    }
    int rc = parse_args(&o, argc, argv);
    if (rc < 0) {
        loom_log_set_level(o.level);
        ensure_std_fds();
        rc = run(&o);
    }
    free(o.work_dir);
    if (o.join_token) sodium_memzero(o.join_token, strlen(o.join_token));
    free(o.join_token);
    return rc;
}
