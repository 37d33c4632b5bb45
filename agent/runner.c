/* Task processes for the agent: posix_spawn (Debian's libuv spawns with
 * fork(), too slow for thousands of tasks a second), on a spawner thread
 * when the agent has one, output through pipes on the loop, exit through a
 * pidfd so that wait4 gives us the rusage. */
#include "runner.h"
#include "spawner.h"
#include "task_user.h"

#include "loom/err.h"
#include "loom/log.h"
#include "loom/util.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define READ_BUF_SIZE 65536

struct loom_runner {
    uv_loop_t *loop;
    loom_runner_cb_t cb;
    uv_timer_t deadline; /* timeout, then the kill grace; also reports a failed start */
    uv_timer_t drain;    /* bounds the wait for EOF once the process is gone */
    uv_poll_t exit_poll; /* the pidfd: readable when the process has exited */
    uv_pipe_t pipes[2];  /* read ends of stdout and stderr */
    bool pipe_open[2];
    bool poll_open;
    int handles; /* initialised handles whose close callback has not run */
    pid_t pid;
    int pidfd;
    bool spawned, reaped, reported, paused, closing;
    bool spawning;          /* a spawner thread has it: no pid yet */
    bool terminate_pending; /* terminate asked for while spawning */
    int kill_stage;         /* 0: none, 1: SIGTERM sent, 2: SIGKILL sent */
    uint64_t grace_ms;
    uint64_t drain_ms;
    loom_runner_result_t result;
    char *error;
    char *buf;
    void (*on_closed)(void *ud);
    void *closed_ud;
};

loom_runner_t *loom_runner_new(uv_loop_t *loop, const loom_runner_cb_t *cb)
{
    loom_runner_t *r = loom_xcalloc(1, sizeof *r);
    r->loop = loop;
    r->cb = *cb;
    r->pidfd = -1;
    r->grace_ms = LOOM_RUNNER_KILL_GRACE_MS;
    r->drain_ms = LOOM_RUNNER_DRAIN_MS;
    uv_timer_init(loop, &r->deadline);
    uv_timer_init(loop, &r->drain);
    r->deadline.data = r;
    r->drain.data = r;
    r->handles = 2;
    return r;
}

int loom_runner_pid(const loom_runner_t *r)
{
    return r->spawned && !r->reaped ? (int)r->pid : 0;
}

uint64_t loom_runner_started_unix_ms(const loom_runner_t *r)
{
    return r->result.started_unix_ms;
}

/* "A=1" names the same variable as "A=2". */
static bool same_name(const char *a, const char *b)
{
    size_t n = strcspn(a, "=");
    return strncmp(a, b, n) == 0 && b[n] == '=';
}

static bool overridden(const char *entry, const char *const *extra)
{
    for (size_t i = 0; extra && extra[i]; i++)
        if (same_name(extra[i], entry)) return true;
    return false;
}

/* The agent's environment plus the task's entries, which win. The strings
 * are borrowed; the array is the caller's to free. */
static char **build_env(const char *const *extra, bool env_only, char *why, size_t whylen)
{
    size_t n_env = 0, n_extra = 0;
    while (!env_only && environ && environ[n_env]) n_env++;
    while (extra && extra[n_extra]) n_extra++;
    for (size_t i = 0; i < n_extra; i++) {
        const char *eq = strchr(extra[i], '=');
        if (!eq || eq == extra[i]) {
            snprintf(why, whylen, "environment entry \"%s\" is not NAME=value", extra[i]);
            return NULL;
        }
    }
    char **envp = loom_xcalloc(n_env + n_extra + 1, sizeof *envp);
    size_t k = 0;
    for (size_t i = 0; i < n_env; i++)
        if (!overridden(environ[i], extra)) envp[k++] = environ[i];
    for (size_t i = 0; i < n_extra; i++)
        if (!overridden(extra[i], extra + i + 1)) envp[k++] = (char *)extra[i];
    envp[k] = NULL;
    return envp;
}

/* A gated process starts as a shell that waits for one line on fd 3 before
 * it execs the task, so that whatever on_spawned does (moving it into its
 * cgroups: a move can take tens of milliseconds, time enough for a task to
 * fork children that would stay outside) is done before the task runs. */
#define GATE_FD 3
#define GATE_SCRIPT "read -r _ <&3 || exit 126; exec 3<&-; exec \"$@\""

/* argv for the gate: the shell, then the task's own argv. */
static const char **gated_argv(const loom_runner_spec_t *spec)
{
    size_t n = 0;
    while (spec->argv && spec->argv[n]) n++;
    const char **argv = loom_xcalloc(n + 8, sizeof *argv);
    size_t k = 0;
    argv[k++] = "/bin/sh";
    argv[k++] = "-c";
    argv[k++] = GATE_SCRIPT;
    argv[k++] = "loom-gate"; /* $0: names the gate in the shell's messages */
    if (n > 0) {
        for (size_t i = 0; i < n; i++) argv[k++] = spec->argv[i];
    } else {
        argv[k++] = "/bin/sh";
        argv[k++] = "-c";
        argv[k++] = spec->shell ? spec->shell : "";
    }
    return argv;
}

void loom_runner_spawnattr_init(posix_spawnattr_t *attr)
{
    static const int defaulted[] = {SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGCHLD, SIGQUIT};
    sigset_t mask, def;
    sigemptyset(&mask);
    sigemptyset(&def);
    for (size_t i = 0; i < sizeof defaulted / sizeof defaulted[0]; i++)
        sigaddset(&def, defaulted[i]);
    posix_spawnattr_init(attr);
    posix_spawnattr_setflags(attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                       POSIX_SPAWN_SETSIGDEF);
    posix_spawnattr_setpgroup(attr, 0);
    posix_spawnattr_setsigmask(attr, &mask);
    posix_spawnattr_setsigdefault(attr, &def);
}

static int spawn_as(const loom_runner_spec_t *spec, char **envp, int out_w, int err_w, int gate,
                    pid_t *pid);

/* Returns 0 or an errno value from posix_spawn (which reports a failed exec
 * too: glibc spawns with CLONE_VFORK and passes the child's error back).
 * gate: the read end of the gate, or -1. */
static int spawn(const loom_runner_spec_t *spec, char **envp, int out_w, int err_w, int gate,
                 pid_t *pid)
{
    posix_spawnattr_t attr;
    posix_spawn_file_actions_t fa;
    int rc;

    if (spec->user && spec->user->other) return spawn_as(spec, envp, out_w, err_w, gate, pid);
    loom_runner_spawnattr_init(&attr);
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, out_w, 1);
    posix_spawn_file_actions_adddup2(&fa, err_w, 2);
    posix_spawn_file_actions_addchdir_np(&fa, spec->dir);
    if (gate >= 0) {
        posix_spawn_file_actions_adddup2(&fa, gate, GATE_FD);
        const char **argv = gated_argv(spec);
        rc = posix_spawn(pid, "/bin/sh", &fa, &attr, (char *const *)argv, envp);
        free(argv);
    } else if (spec->argv && spec->argv[0]) {
        rc = posix_spawnp(pid, spec->argv[0], &fa, &attr, (char *const *)spec->argv, envp);
    } else {
        const char *sh[] = {"/bin/sh", "-c", spec->shell ? spec->shell : "", NULL};
        rc = posix_spawn(pid, "/bin/sh", &fa, &attr, (char *const *)sh, envp);
    }
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    return rc;
}

/* In the forked child: what posix_spawn's attributes and file actions do,
 * then the switch to the task's user, then exec. Only async-signal-safe
 * calls (the agent has threads). Reports errno on err_fd and exits 127. */
static void child_exec(const loom_runner_spec_t *spec, const char *file, char *const *argv,
                       bool search, char **envp, int fds[3], int gate, int err_fd)
{
    static const int defaulted[] = {SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGCHLD, SIGQUIT};
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (size_t i = 0; i < sizeof defaulted / sizeof defaulted[0]; i++)
        sigaction(defaulted[i], &dfl, NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    int err = 0;
    if (setpgid(0, 0) != 0) err = errno;
    int nul = err ? -1 : open("/dev/null", O_RDONLY);
    if (!err && nul < 0) err = errno;
    if (!err && (dup2(nul, 0) < 0 || dup2(fds[1], 1) < 0 || dup2(fds[2], 2) < 0 ||
                 (gate >= 0 && dup2(gate, GATE_FD) < 0)))
        err = errno;
    if (!err) {
        int rc = task_user_enter(spec->user);
        if (rc) err = -rc;
    }
    /* After the switch, so a folder the user cannot reach fails here. */
    if (!err && chdir(spec->dir) != 0) err = errno;
    if (!err) {
        if (search)
            execvpe(file, argv, envp);
        else
            execve(file, argv, envp);
        err = errno;
    }
    while (write(err_fd, &err, sizeof err) < 0 && errno == EINTR) {
    }
    _exit(LOOM_RUNNER_EXIT_NOT_STARTED);
}

/* spawn() for a task that runs as another user. */
static int spawn_as(const loom_runner_spec_t *spec, char **envp, int out_w, int err_w, int gate,
                    pid_t *pid)
{
    const char **gated = gate >= 0 ? gated_argv(spec) : NULL;
    const char *sh[] = {"/bin/sh", "-c", spec->shell ? spec->shell : "", NULL};
    bool search = !gated && spec->argv && spec->argv[0];
    const char *file = search ? spec->argv[0] : "/bin/sh";
    char *const *argv = (char *const *)(gated ? gated : search ? (const char **)spec->argv : sh);
    int errp[2];
    if (pipe2(errp, O_CLOEXEC) != 0) {
        free(gated);
        return errno;
    }
    int fds[3] = {-1, out_w, err_w};
    pid_t child = fork();
    if (child == 0) {
        close(errp[0]);
        child_exec(spec, file, argv, search, envp, fds, gate, errp[1]);
    }
    int saved = errno;
    close(errp[1]);
    free(gated);
    if (child < 0) {
        close(errp[0]);
        return saved;
    }
    int err = 0;
    ssize_t n;
    while ((n = read(errp[0], &err, sizeof err)) < 0 && errno == EINTR) {
    }
    close(errp[0]);
    if (n == (ssize_t)sizeof err && err) { /* it never ran: reap it, as posix_spawn would */
        while (waitpid(child, NULL, 0) < 0 && errno == EINTR) {
        }
        return err;
    }
    *pid = child;
    return 0;
}

static void close_fds(int *fds, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (fds[i] >= 0) close(fds[i]);
        fds[i] = -1;
    }
}

/* Kills and reaps a process we will not run after all. */
static int unspawn(loom_runner_t *r)
{
    kill(-r->pid, SIGKILL);
    while (waitpid(r->pid, NULL, 0) < 0 && errno == EINTR) {
    }
    r->spawned = false;
    return LOOM_ESPAWN;
}

/* A socket pair rather than a pipe, so that opening a gate whose process
 * already died fails with EPIPE instead of raising SIGPIPE. The child's end
 * is moved above the descriptors the file actions use. */
static int open_gate(int gate[2])
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return -1;
    gate[0] = fcntl(sv[0], F_DUPFD_CLOEXEC, 10);
    gate[1] = sv[1];
    close(sv[0]);
    return gate[0] >= 0 ? 0 : -1;
}

/* Runs on_spawned, then lets the gated process go on to exec the task. */
static int pass_gate(loom_runner_t *r, const loom_runner_spec_t *spec, int gate_w, char *why,
                     size_t whylen)
{
    if (spec->on_spawned(spec->spawned_ud, (int)r->pid, why, whylen) != 0) return unspawn(r);
    if (send(gate_w, "go\n", 3, MSG_NOSIGNAL) != 3) {
        snprintf(why, whylen, "opening the gate: %s", strerror(errno));
        return unspawn(r);
    }
    return 0;
}

/* What a spawn needs, owned, so that it can run on a spawner thread after
 * the caller's spec is gone. */
typedef struct {
    loom_spawn_req_t req; /* first: the spawner hands this back */
    loom_runner_t *r;
    loom_runner_spec_t spec; /* argv, shell and dir point into the copies below */
    char **argv;
    char **envp;
    char why[512];
    int fds[4];  /* stdout read, write, stderr read, write */
    int gate[2]; /* the child's end, ours; -1 when ungated */
    int rc;      /* 0 or an errno value from the spawn */
    pid_t pid;
    uint64_t started_unix_ms;
} launch_t;

static char **dup_strv(const char *const *v)
{
    size_t n = 0;
    while (v && v[n]) n++;
    char **out = loom_xcalloc(n + 1, sizeof *out);
    for (size_t i = 0; i < n; i++) out[i] = loom_xstrdup(v[i]);
    return out;
}

static void free_strv(char **v)
{
    for (size_t i = 0; v && v[i]; i++) free(v[i]);
    free(v);
}

static void launch_free(launch_t *l)
{
    close_fds(l->fds, 4);
    close_fds(l->gate, 2);
    free_strv(l->argv);
    free_strv(l->envp);
    free((char *)l->spec.shell);
    free((char *)l->spec.dir);
    free(l);
}

/* Creates the folder, pipes and environment; on failure fills why. */
static launch_t *launch_new(loom_runner_t *r, const loom_runner_spec_t *spec, char *why,
                            size_t whylen)
{
    launch_t *l = loom_xcalloc(1, sizeof *l);
    l->r = r;
    for (int i = 0; i < 4; i++) l->fds[i] = -1;
    l->gate[0] = l->gate[1] = -1;
    if (loom_mkdirs(spec->dir, 0700) != 0) {
        snprintf(why, whylen, "cannot create %s: %s", spec->dir, strerror(errno));
        goto fail;
    }
    if (pipe2(l->fds, O_CLOEXEC) != 0 || pipe2(l->fds + 2, O_CLOEXEC) != 0 ||
        (spec->on_spawned && open_gate(l->gate) != 0)) {
        snprintf(why, whylen, "pipe: %s", strerror(errno));
        goto fail;
    }
    char **envp = build_env(spec->env, spec->env_only, why, whylen);
    if (!envp) goto fail;
    l->envp = dup_strv((const char *const *)envp);
    free(envp);
    l->spec = *spec;
    l->argv = spec->argv ? dup_strv(spec->argv) : NULL;
    l->spec.argv = (const char *const *)l->argv;
    l->spec.shell = spec->shell ? loom_xstrdup(spec->shell) : NULL;
    l->spec.dir = loom_xstrdup(spec->dir);
    l->spec.env = NULL;
    return l;
fail:
    launch_free(l);
    return NULL;
}

/* The spawn itself: on a spawner thread, or inline without one. */
static void launch_spawn(loom_spawn_req_t *req)
{
    launch_t *l = (launch_t *)req;
    const char *what = l->spec.argv && l->spec.argv[0] ? l->spec.argv[0] : "/bin/sh";
    l->started_unix_ms = loom_unix_ms();
    l->rc = spawn(&l->spec, l->envp, l->fds[1], l->fds[3], l->gate[0], &l->pid);
    if (l->rc != 0) snprintf(l->why, sizeof l->why, "%s: %s", what, strerror(l->rc));
    /* The child has its copies: ours of its ends go, or we would never
     * see EOF. */
    close_fds(&l->fds[1], 1);
    close_fds(&l->fds[3], 1);
    close_fds(&l->gate[0], 1);
}

/* After the spawn, on the loop: the gate, then the pidfd; on failure fills
 * why and leaves no process behind. */
static int launch_finish(loom_runner_t *r, launch_t *l, char *why, size_t whylen)
{
    r->result.started_unix_ms = l->started_unix_ms;
    if (l->rc != 0) {
        snprintf(why, whylen, "%s", l->why);
        return LOOM_ESPAWN;
    }
    r->pid = l->pid;
    int rc = 0;
    if (l->spec.on_spawned) rc = pass_gate(r, &l->spec, l->gate[1], why, whylen);
    close_fds(&l->gate[1], 1);
    if (rc != 0) return LOOM_ESPAWN;
    r->spawned = true;
    r->pidfd = (int)syscall(SYS_pidfd_open, r->pid, 0);
    if (r->pidfd < 0) {
        snprintf(why, whylen, "pidfd_open: %s", strerror(errno));
        return unspawn(r);
    }
    return 0;
}

static void runner_unref(loom_runner_t *r)
{
    if (--r->handles > 0) return;
    if (r->on_closed) r->on_closed(r->closed_ud);
    free(r->error);
    free(r->buf);
    free(r);
}

static void on_handle_closed(uv_handle_t *handle)
{
    runner_unref(handle->data);
}

static void maybe_report(loom_runner_t *r)
{
    if (r->reported || r->closing || !r->reaped || r->pipe_open[0] || r->pipe_open[1]) return;
    r->reported = true;
    uv_timer_stop(&r->drain);
    r->cb.on_exit(r->cb.ud, &r->result);
}

static void close_pipe(loom_runner_t *r, int i)
{
    if (!r->pipe_open[i]) return;
    r->pipe_open[i] = false;
    uv_close((uv_handle_t *)&r->pipes[i], on_handle_closed);
}

static void on_pipe_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    loom_runner_t *r = handle->data;
    (void)suggested;
    /* libuv calls alloc, read(2) and the read callback back to back, so
     * both pipes can share one buffer. */
    if (!r->buf) r->buf = loom_xmalloc(READ_BUF_SIZE);
    *buf = uv_buf_init(r->buf, READ_BUF_SIZE);
}

static void on_pipe_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    loom_runner_t *r = stream->data;
    int i = stream == (uv_stream_t *)&r->pipes[LOOM_RUNNER_STDOUT] ? LOOM_RUNNER_STDOUT
                                                                   : LOOM_RUNNER_STDERR;
    if (nread > 0) {
        r->cb.on_output(r->cb.ud, (loom_runner_stream)i, buf->base, (size_t)nread);
        return;
    }
    if (nread == 0) return;
    if (nread != UV_EOF)
        LOG_WARN("reading task output: %s pid=%d", uv_strerror((int)nread), r->pid);
    close_pipe(r, i);
    maybe_report(r);
}

static void signal_group(loom_runner_t *r, int sig)
{
    /* Only while the leader is unreaped: its zombie keeps the process group
     * id from being reused, so the signal cannot reach a stranger. */
    if (r->spawned && !r->reaped && kill(-r->pid, sig) != 0 && errno != ESRCH)
        LOG_WARN("kill process group: %s pid=%d", strerror(errno), r->pid);
}

static void fill_result(loom_runner_t *r, int status, const struct rusage *ru)
{
    loom_runner_result_t *res = &r->result;
    res->ended_unix_ms = loom_unix_ms();
    if (WIFEXITED(status)) {
        res->exit_code = WEXITSTATUS(status);
    } else if (WIFSIGNALED(status)) {
        res->signal = WTERMSIG(status);
        res->exit_code = 128 + res->signal;
    }
    res->user_cpu_us = (uint64_t)ru->ru_utime.tv_sec * 1000000u + (uint64_t)ru->ru_utime.tv_usec;
    res->sys_cpu_us = (uint64_t)ru->ru_stime.tv_sec * 1000000u + (uint64_t)ru->ru_stime.tv_usec;
    res->max_rss_bytes = (uint64_t)ru->ru_maxrss * 1024u; /* Linux reports KiB */
}

static void on_drain_timer(uv_timer_t *handle);

static void arm_drain(loom_runner_t *r)
{
    uv_timer_start(&r->drain, on_drain_timer, r->drain_ms, 0);
}

static void on_drain_timer(uv_timer_t *handle)
{
    loom_runner_t *r = handle->data;
    /* Paused readers leave bytes in the pipe that we owe the agent: the
     * bound counts only while we are reading. */
    if (r->paused) {
        arm_drain(r);
        return;
    }
    LOG_WARN("task exited but its output pipes stay open; closing them pid=%d", r->pid);
    close_pipe(r, LOOM_RUNNER_STDOUT);
    close_pipe(r, LOOM_RUNNER_STDERR);
    maybe_report(r);
}

static void on_exit_poll_closed(uv_handle_t *handle)
{
    loom_runner_t *r = handle->data;
    close(r->pidfd);
    r->pidfd = -1;
    on_handle_closed(handle);
}

static void on_exit_readable(uv_poll_t *handle, int status, int events)
{
    loom_runner_t *r = handle->data;
    siginfo_t info;
    struct rusage ru;
    int wstatus = 0;
    (void)events;
    if (status < 0) LOG_WARN("pidfd poll: %s pid=%d", uv_strerror(status), r->pid);
    memset(&info, 0, sizeof info);
    if (waitid(P_PID, (id_t)r->pid, &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == 0)
        return; /* still running */
    /* Kill the group before reaping: strays must not outlive the task or
     * hold its pipes open, and the zombie still pins the group id. */
    if (kill(-r->pid, SIGKILL) != 0 && errno != ESRCH) LOG_WARN("kill: %s", strerror(errno));
    memset(&ru, 0, sizeof ru);
    pid_t got;
    do {
        got = wait4(r->pid, &wstatus, WNOHANG, &ru);
    } while (got < 0 && errno == EINTR);
    if (got == 0) return;
    if (got < 0) {
        LOG_ERROR("wait4: %s pid=%d", strerror(errno), r->pid);
        r->error = loom_xasprintf("exit status lost: %s", strerror(errno));
        r->result.error = r->error;
        wstatus = 0xff00; /* reads as exit code 255 */
    }
    fill_result(r, wstatus, &ru);
    r->reaped = true;
    r->poll_open = false;
    uv_close((uv_handle_t *)handle, on_exit_poll_closed);
    if (r->closing) return;
    uv_timer_stop(&r->deadline);
    if (r->pipe_open[0] || r->pipe_open[1]) arm_drain(r);
    maybe_report(r);
}

static void on_deadline_timer(uv_timer_t *handle)
{
    loom_runner_t *r = handle->data;
    if (!r->spawned) {
        maybe_report(r);
        return;
    }
    if (r->kill_stage == 0) {
        r->result.timed_out = true;
        loom_runner_terminate(r);
    } else if (r->kill_stage == 1) {
        r->kill_stage = 2;
        signal_group(r, SIGKILL);
    }
}

static int fail_start(loom_runner_t *r, const char *why)
{
    r->error = loom_xasprintf("could not start: %s", why);
    r->result.started = false;
    r->result.exit_code = LOOM_RUNNER_EXIT_NOT_STARTED;
    r->result.error = r->error;
    r->result.ended_unix_ms = loom_unix_ms();
    if (!r->result.started_unix_ms) r->result.started_unix_ms = r->result.ended_unix_ms;
    /* Reported from the loop, like every other exit. */
    r->reaped = true;
    uv_timer_start(&r->deadline, on_deadline_timer, 0, 0);
    return LOOM_ESPAWN;
}

/* The process runs: its pipes and exit join the loop. */
static void watch(loom_runner_t *r, launch_t *l, uint64_t timeout_ms)
{
    r->result.started = true;
    for (int i = 0; i < 2; i++) {
        uv_pipe_init(r->loop, &r->pipes[i], 0);
        r->pipes[i].data = r;
        r->handles++;
        r->pipe_open[i] = true;
        int fd = l->fds[2 * i];
        l->fds[2 * i] = -1; /* the pipe handle owns it now */
        if (uv_pipe_open(&r->pipes[i], fd) != 0) {
            close(fd);
            close_pipe(r, i);
            continue;
        }
        if (!r->paused) uv_read_start((uv_stream_t *)&r->pipes[i], on_pipe_alloc, on_pipe_read);
    }
    uv_poll_init(r->loop, &r->exit_poll, r->pidfd);
    r->exit_poll.data = r;
    r->handles++;
    r->poll_open = true;
    uv_poll_start(&r->exit_poll, UV_READABLE, on_exit_readable);
    if (timeout_ms) uv_timer_start(&r->deadline, on_deadline_timer, timeout_ms, 0);
}

/* Back on the loop from a spawner thread. */
static void on_launched(loom_spawn_req_t *req)
{
    launch_t *l = (launch_t *)req;
    loom_runner_t *r = l->r;
    char why[512];
    r->spawning = false;
    if (r->closing) {
        /* Released meanwhile: the process must not run, nor be left a
         * zombie. */
        if (l->rc == 0) {
            r->pid = l->pid;
            r->spawned = true;
            unspawn(r);
        }
        launch_free(l);
        runner_unref(r);
        return;
    }
    int rc = launch_finish(r, l, why, sizeof why);
    if (rc == 0) watch(r, l, l->spec.timeout_ms);
    launch_free(l);
    runner_unref(r);
    if (rc != 0) {
        fail_start(r, why);
        return;
    }
    if (r->cb.on_started) r->cb.on_started(r->cb.ud);
    if (r->terminate_pending) loom_runner_terminate(r);
}

int loom_runner_start(loom_runner_t *r, const loom_runner_spec_t *spec)
{
    char why[512];
    if (spec->kill_grace_ms) r->grace_ms = spec->kill_grace_ms;
    if (spec->drain_ms) r->drain_ms = spec->drain_ms;
    launch_t *l = launch_new(r, spec, why, sizeof why);
    if (!l) return fail_start(r, why);
    if (spec->spawner) {
        /* Counted like a handle: r outlives the spawn even if closed. */
        r->handles++;
        r->spawning = true;
        l->req.work = launch_spawn;
        l->req.done = on_launched;
        loom_spawner_submit(spec->spawner, &l->req);
        return 0;
    }
    launch_spawn(&l->req);
    int rc = launch_finish(r, l, why, sizeof why);
    if (rc == 0) watch(r, l, spec->timeout_ms);
    launch_free(l);
    if (rc != 0) return fail_start(r, why);
    if (r->cb.on_started) r->cb.on_started(r->cb.ud);
    return 0;
}

void loom_runner_terminate(loom_runner_t *r)
{
    if (r->spawning) {
        r->terminate_pending = true;
        return;
    }
    if (!r->spawned || r->reaped || r->kill_stage != 0) return;
    r->kill_stage = 1;
    signal_group(r, SIGTERM);
    uv_timer_start(&r->deadline, on_deadline_timer, r->grace_ms, 0);
}

void loom_runner_pause(loom_runner_t *r, bool paused)
{
    if (r->paused == paused) return;
    r->paused = paused;
    for (int i = 0; i < 2; i++) {
        if (!r->pipe_open[i]) continue;
        if (paused)
            uv_read_stop((uv_stream_t *)&r->pipes[i]);
        else
            uv_read_start((uv_stream_t *)&r->pipes[i], on_pipe_alloc, on_pipe_read);
    }
    /* A resumed reader gets the whole drain period again. */
    if (!paused && uv_is_active((uv_handle_t *)&r->drain)) arm_drain(r);
}

void loom_runner_close(loom_runner_t *r, void (*on_closed)(void *ud), void *ud)
{
    if (!r) return;
    r->closing = true;
    r->on_closed = on_closed;
    r->closed_ud = ud;
    close_pipe(r, LOOM_RUNNER_STDOUT);
    close_pipe(r, LOOM_RUNNER_STDERR);
    uv_close((uv_handle_t *)&r->deadline, on_handle_closed);
    uv_close((uv_handle_t *)&r->drain, on_handle_closed);
    /* A live process is killed, and its poll handle stays to reap it so
     * that no zombie is left behind. */
    if (r->poll_open && !r->reaped) signal_group(r, SIGKILL);
}
