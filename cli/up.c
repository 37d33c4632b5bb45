/* `loom up`: one-machine mode. Starts loomd, waits until it says (through
 * HOME/loomd.json) where it listens, starts one loom-agent against it, and
 * supervises both until Ctrl-C or until one of them stops on its own.
 *
 * Signals are blocked and taken with sigtimedwait, so there is no handler
 * and no global flag; the children get the old mask back before exec. */
#include "cli.h"
#include "fmt.h"

#include "loom/util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#define READY_TIMEOUT_MS 15000 /* loomd must be listening by then */
#define STOP_TIMEOUT_MS 10000  /* after a stop signal, then SIGKILL */
#define TICK_MS 50

static void up_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void up_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("loom up: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

typedef struct {
    const char *what; /* "loomd" or "loom-agent" */
    pid_t pid;        /* 0 once reaped (or never started) */
} child_t;

typedef struct {
    char *home;
    const char *http, *bind, *slots, *name;
    char *zmq_endpoint; /* from loomd.json */
    char *http_url;
    child_t daemon, agent;
    sigset_t watched, old_mask;
    int stop_signal;  /* what we forwarded; 0 while running */
    uint64_t stop_ms; /* when we did */
    bool unexpected;  /* a child stopped by itself */
} up_t;

/* The program beside this loom (a build folder or an install prefix), else
 * NULL: the child then searches $PATH. */
static char *find_program(const char *name)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return NULL;
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    if (!slash) return NULL;
    *slash = '\0';
    char *path = loom_xasprintf("%s/%s", self, name);
    if (access(path, X_OK) == 0) return path;
    free(path);
    return NULL;
}

/* In the child, between fork and exec: only async-signal-safe calls. */
static void exec_child(up_t *up, char **argv, const char *path, pid_t parent, int err_fd)
{
    /* Own process group: a terminal's Ctrl-C reaches only `loom up`, which
     * forwards it once. PDEATHSIG: if `loom up` is killed, so are we. */
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(127);
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) {
        dup2(devnull, STDIN_FILENO);
        if (devnull != STDIN_FILENO) close(devnull);
    }
    /* Signals we forward must work in the child even when `loom up` was
     * started with them ignored (a background job of a script ignores
     * SIGINT, and exec keeps ignored signals ignored). */
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    sigaction(SIGINT, &dfl, NULL);
    sigaction(SIGTERM, &dfl, NULL);
    sigaction(SIGHUP, &dfl, NULL);
    sigprocmask(SIG_SETMASK, &up->old_mask, NULL);
    if (path)
        execv(path, argv);
    else
        execvp(argv[0], argv);
    int e = errno;
    if (write(err_fd, &e, sizeof e) < 0) { /* the parent sees EOF and a 127 */
    }
    _exit(127);
}

/* Starts argv[0] (beside us or on $PATH). Returns its pid, or 0 with a
 * message printed when it could not be started. */
static pid_t spawn(up_t *up, char **argv)
{
    char *path = find_program(argv[0]);
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
        up_error("pipe: %s", strerror(errno));
        free(path);
        return 0;
    }
    pid_t parent = getpid();
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) exec_child(up, argv, path, parent, fds[1]);
    close(fds[1]);
    int e = 0;
    /* The pipe closes on a successful exec (CLOEXEC); otherwise the child
     * sends errno first, so a missing binary is reported here, by name. */
    ssize_t n = pid > 0 ? read(fds[0], &e, sizeof e) : -1;
    close(fds[0]);
    if (pid < 0) {
        up_error("cannot fork: %s", strerror(errno));
    } else if (n == (ssize_t)sizeof e) {
        up_error("cannot run %s: %s (looked beside loom and on $PATH)", path ? path : argv[0],
                 strerror(e));
        waitpid(pid, NULL, 0);
        pid = 0;
    }
    free(path);
    return pid > 0 ? pid : 0;
}

static void describe_status(int status, char *out, size_t len)
{
    if (WIFEXITED(status)) {
        snprintf(out, len, "exit status %d", WEXITSTATUS(status));
    } else if (WIFSIGNALED(status)) {
        const char *name = sigabbrev_np(WTERMSIG(status));
        snprintf(out, len, "killed by SIG%s", name ? name : "?");
    } else {
        snprintf(out, len, "wait status %d", status);
    }
}

static void signal_children(up_t *up, int sig)
{
    if (up->daemon.pid > 0) kill(up->daemon.pid, sig);
    if (up->agent.pid > 0) kill(up->agent.pid, sig);
}

static void begin_stop(up_t *up, int sig)
{
    if (up->stop_signal == 0) {
        up->stop_signal = sig;
        up->stop_ms = loom_mono_ms();
    }
    signal_children(up, sig);
}

static void on_child_exit(up_t *up, child_t *c, int status)
{
    c->pid = 0;
    char how[64];
    describe_status(status, how, sizeof how);
    if (up->stop_signal == 0) {
        up_error("%s stopped unexpectedly (%s); stopping the rest", c->what, how);
        up->unexpected = true;
        begin_stop(up, SIGTERM);
        return;
    }
    /* While stopping, a clean end is exit 0 or the signal we sent. */
    bool clean = (WIFEXITED(status) && WEXITSTATUS(status) == 0) ||
                 (WIFSIGNALED(status) && WTERMSIG(status) == up->stop_signal);
    if (!clean) {
        up_error("%s stopped badly (%s)", c->what, how);
        up->unexpected = true;
    }
}

static void reap(up_t *up)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        if (pid == up->daemon.pid)
            on_child_exit(up, &up->daemon, status);
        else if (pid == up->agent.pid)
            on_child_exit(up, &up->agent, status);
    }
}

/* Waits up to one tick for a signal and acts on it. */
static void tick(up_t *up)
{
    struct timespec ts = {0, TICK_MS * 1000000L};
    siginfo_t info;
    int sig = sigtimedwait(&up->watched, &info, &ts);
    if (sig == SIGINT || sig == SIGTERM) {
        if (up->stop_signal == 0) fprintf(stderr, "\nloom up: stopping\n");
        begin_stop(up, sig);
    } else if (sig == SIGHUP) {
        begin_stop(up, SIGTERM);
    }
    reap(up);
    if (up->stop_signal && loom_mono_ms() - up->stop_ms > STOP_TIMEOUT_MS &&
        (up->daemon.pid > 0 || up->agent.pid > 0)) {
        up_error("still running %d s after the stop signal; killing", STOP_TIMEOUT_MS / 1000);
        signal_children(up, SIGKILL);
        up->unexpected = true;
        up->stop_ms = loom_mono_ms(); /* once more at most */
    }
}

/* The endpoint the local agent connects to: a wildcard bind (a "*" or 0.0.0.0 host,
 * so remote agents can join too) is reached here through loopback. */
static char *connectable(const char *endpoint)
{
    static const char *const wildcards[] = {"tcp://*:", "tcp://0.0.0.0:"};
    for (size_t i = 0; i < sizeof wildcards / sizeof wildcards[0]; i++) {
        size_t n = strlen(wildcards[i]);
        if (strncmp(endpoint, wildcards[i], n) == 0)
            return loom_xasprintf("tcp://127.0.0.1:%s", endpoint + n);
    }
    return loom_xstrdup(endpoint);
}

/* HOME/loomd.json, the addresses loomd writes once it listens; NULL when
 * it is missing or unreadable. */
static json_t *read_loomd_json(const char *home)
{
    char *path = loom_xasprintf("%s/loomd.json", home);
    char *text = NULL;
    size_t len = 0;
    int err = loom_read_file(path, 64 * 1024, &text, &len);
    free(path);
    if (err != 0) return NULL;
    json_error_t jerr;
    json_t *j = json_loadb(text, len, 0, &jerr);
    free(text);
    return j;
}

/* True once HOME/loomd.json comes from our loomd: a file left by an earlier
 * loomd has another pid. */
static bool read_ready(up_t *up)
{
    json_t *j = read_loomd_json(up->home);
    if (!j) return false;
    int64_t pid = 0;
    const char *http = cli_jstr(j, "http");
    const char *zmq = cli_jstr(j, "zmq");
    bool ready = cli_jint(j, "pid", &pid) && pid == up->daemon.pid && http && zmq;
    if (ready) {
        up->http_url = loom_xstrdup(http);
        up->zmq_endpoint = connectable(zmq);
    }
    json_decref(j);
    return ready;
}

static bool wait_ready(up_t *up)
{
    uint64_t deadline = loom_mono_ms() + READY_TIMEOUT_MS;
    while (!up->stop_signal) {
        if (read_ready(up)) return true;
        if (loom_mono_ms() > deadline) {
            up_error("loomd did not report listening within %d s (%s/loomd.json)",
                     READY_TIMEOUT_MS / 1000, up->home);
            up->unexpected = true;
            begin_stop(up, SIGTERM);
            break;
        }
        tick(up);
    }
    return false;
}

static bool start_daemon(up_t *up)
{
    char *argv[] = {"loomd",          "--state-dir", up->home,         "--http",
                    (char *)up->http, "--bind",      (char *)up->bind, NULL};
    up->daemon.pid = spawn(up, argv);
    return up->daemon.pid > 0;
}

/* A join token for our agent, unless it joined this loomd before (its
 * pinned server key is then in its work folder). NULL: none needed. */
static char *join_token(up_t *up, const char *work)
{
    char *pinned = loom_xasprintf("%s/curve/server.pub", work);
    bool joined = access(pinned, F_OK) == 0;
    free(pinned);
    if (joined) return NULL;
    /* Asked with the admin token the loomd we just started wrote. */
    char *tok_path = loom_xasprintf("%s/admin.token", up->home);
    char *admin = NULL;
    size_t admin_len = 0;
    if (loom_read_file(tok_path, 4096, &admin, &admin_len) == 0) {
        admin[strcspn(admin, "\r\n")] = '\0';
        cli_http_set_auth(admin, NULL);
        memset(admin, 0, admin_len);
        free(admin);
    }
    free(tok_path);
    char *url = loom_xasprintf("%s/api/v1/agents/tokens", up->http_url);
    json_t *body = json_pack("{s:s,s:i}", "name", up->name, "ttl_s", 600);
    char *text = json_dumps(body, JSON_COMPACT);
    cli_http_resp_t r;
    char *token = NULL;
    if (cli_http_request("POST", url, text, 10, &r) == 0 && r.status == 201)
        token = loom_xstrdup(cli_jstr(r.json, "token") ? cli_jstr(r.json, "token") : "");
    else
        up_error("cannot get a join token for the agent from %s (status %ld)", url, r.status);
    cli_http_resp_free(&r);
    json_decref(body);
    free(text);
    free(url);
    return token;
}

static bool start_agent(up_t *up)
{
    char *work = loom_xasprintf("%s/agent", up->home);
    /* The agent gets its join token in its environment, never in argv. */
    char *token = join_token(up, work);
    if (token) setenv("LOOM_JOIN_TOKEN", token, 1);
    /* `loom up` stops everything at once: no drain on the agent's SIGTERM. */
    /* Tasks run as whoever runs `loom up`: this is one person's machine and
     * the tasks are theirs. As root that is root, said explicitly (the agent
     * insists) and warned about in the banner. */
    struct passwd *pw = getpwuid(geteuid());
    /* Tasks that use the loom CLI find this loomd as `loom` itself does:
     * through LOOM_HOME or LOOM_SERVER (tasks see no other agent variable). */
    char *argv[24] = {"loom-agent", "--server",       up->zmq_endpoint,  "--work-dir", work,
                      "--name",     (char *)up->name, "--drain-timeout", "0",          "--pass-env",
                      "LOOM_HOME",  "--pass-env",     "LOOM_SERVER"};
    size_t n = 13;
    if (pw) {
        argv[n++] = "--run-as";
        argv[n++] = pw->pw_name;
    }
    if (up->slots) {
        argv[n++] = "--slots";
        argv[n++] = (char *)up->slots;
    }
    /* One agent, so no other could have started a held task sooner:
     * prefetch as many tasks as it has slots. */
    char prefetch[24];
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int64_t slots = cpus > 0 ? cpus : 1;
    if (up->slots) loom_parse_i64(up->slots, 1, 1024, &slots);
    snprintf(prefetch, sizeof prefetch, "%lld", (long long)(slots < 1024 ? slots : 1024));
    argv[n++] = "--prefetch";
    argv[n++] = prefetch;
    argv[n] = NULL;
    up->agent.pid = spawn(up, argv);
    if (token) {
        unsetenv("LOOM_JOIN_TOKEN");
        free(token);
    }
    free(work);
    return up->agent.pid > 0;
}

static void print_banner(const up_t *up)
{
    printf("loomd listening on %s  (agents connect to %s)\n", up->http_url, up->zmq_endpoint);
    printf("agent \"%s\" started (work dir %s/agent)\n", up->name, up->home);
    if (geteuid() == 0)
        printf("warning: running as root, so tasks run as root; run `loom up` as an ordinary "
               "user, or start loom-agent with --run-as USER\n");
    printf("\n");
    printf("In another terminal:\n"
           "  export LOOM_HOME=%s\n"
           "  loom submit dag.yaml && loom run PIPELINE --wait\n"
           "Press Ctrl-C to stop.\n",
           up->home);
    fflush(stdout);
}

/* Runs until both children have stopped; returns the exit status. */
static int supervise(up_t *up)
{
    while (up->daemon.pid > 0 || up->agent.pid > 0) tick(up);
    return up->unexpected ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}

/* A loomd already serving this home: its loomd.json names a live process
 * whose HTTP address answers. Two loomds on one state folder would fight
 * over its database. */
static bool home_in_use(const char *home)
{
    json_t *j = read_loomd_json(home);
    if (!j) return false;
    int64_t pid = 0;
    const char *http = cli_jstr(j, "http");
    bool in_use = false;
    if (http && cli_jint(j, "pid", &pid) && pid > 0 && pid <= INT32_MAX &&
        (kill((pid_t)pid, 0) == 0 || errno == EPERM)) {
        /* A pid can be reused: it counts only if that loomd still answers. */
        char *base = cli_url_normalize(http);
        char *url = loom_xasprintf("%s/api/v1/health", base);
        cli_http_resp_t r;
        in_use = cli_http_request("GET", url, NULL, 3, &r) == 0 && r.status == 200;
        cli_http_resp_free(&r);
        if (in_use)
            up_error("a loomd (pid %lld, %s) already uses %s; stop it or pick another --home",
                     (long long)pid, base, home);
        free(url);
        free(base);
    }
    json_decref(j);
    return in_use;
}

/* Makes the home and the agent's work dir, and makes home absolute so the
 * printed `export LOOM_HOME=...` works from any folder. */
static bool prepare_home(up_t *up)
{
    char *work = loom_xasprintf("%s/agent", up->home);
    int err = loom_mkdirs(up->home, 0700);
    if (err == 0) err = loom_mkdirs(work, 0700);
    free(work);
    if (err != 0) {
        up_error("cannot create %s: %s", up->home, strerror(errno));
        return false;
    }
    char *abs = realpath(up->home, NULL);
    if (abs) {
        free(up->home);
        up->home = abs;
    }
    return true;
}

static int run_up(up_t *up)
{
    if (!prepare_home(up) || home_in_use(up->home)) return CLI_EXIT_FAIL;
    sigemptyset(&up->watched);
    sigaddset(&up->watched, SIGINT);
    sigaddset(&up->watched, SIGTERM);
    sigaddset(&up->watched, SIGHUP);
    sigaddset(&up->watched, SIGCHLD);
    sigprocmask(SIG_BLOCK, &up->watched, &up->old_mask);
    int rc = CLI_EXIT_FAIL;
    if (start_daemon(up)) {
        if (wait_ready(up) && start_agent(up)) {
            print_banner(up);
        } else if (up->stop_signal == 0) {
            up->unexpected = true; /* the agent could not be started */
            begin_stop(up, SIGTERM);
        }
        rc = supervise(up);
    }
    sigprocmask(SIG_SETMASK, &up->old_mask, NULL);
    return rc;
}

static int parse_up(loom_cli_t *cli, up_t *up, int argc, char **argv)
{
    enum { OPT_HOME = 1, OPT_HTTP, OPT_BIND, OPT_SLOTS, OPT_NAME };
    static const struct option longopts[] = {{"home", required_argument, NULL, OPT_HOME},
                                             {"http", required_argument, NULL, OPT_HTTP},
                                             {"bind", required_argument, NULL, OPT_BIND},
                                             {"slots", required_argument, NULL, OPT_SLOTS},
                                             {"name", required_argument, NULL, OPT_NAME},
                                             CLI_COMMON_LONGOPTS,
                                             {0}};
    int64_t slots;
    int c;
    cli_opts_begin(cli, argv);
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (c == OPT_HOME) {
            free(up->home);
            up->home = loom_xstrdup(optarg);
        } else if (c == OPT_HTTP) {
            up->http = optarg;
        } else if (c == OPT_BIND) {
            up->bind = optarg;
        } else if (c == OPT_SLOTS) {
            if (loom_parse_i64(optarg, 1, 4096, &slots) != 0)
                return cli_usage_error(cli, "--slots wants a number from 1 to 4096, not '%s'",
                                       optarg);
            up->slots = optarg;
        } else if (c == OPT_NAME) {
            if (!loom_name_valid(optarg))
                return cli_usage_error(cli, "--name '%s' is not a valid agent name", optarg);
            up->name = optarg;
        } else {
            int rc = cli_opt_common(cli, c);
            if (rc >= 0) return rc;
        }
    }
    if (optind < argc) return cli_usage_error(cli, "unexpected argument '%s'", argv[optind]);
    return -1;
}

int cmd_up(loom_cli_t *cli, int argc, char **argv)
{
    up_t up = {
        .http = "127.0.0.1:8420",
        .bind = "tcp://127.0.0.1:8421",
        .name = "local",
        .daemon = {.what = "loomd"},
        .agent = {.what = "loom-agent"},
    };
    int rc = parse_up(cli, &up, argc, argv);
    if (rc < 0) {
        if (!up.home) up.home = cli_loom_home();
        rc = run_up(&up);
    }
    free(up.home);
    free(up.http_url);
    free(up.zmq_endpoint);
    return rc;
}
