/* Draining: an agent told to drain (loom_agent_drain, or SIGTERM to the
 * loom-agent program) lets running attempts finish, reports draining,
 * refuses new dispatches, and ends once loomd has acknowledged everything;
 * a drain timeout or a second signal stops it at once. */
#include "test_agent_fx.h"

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <spawn.h>
#include <sys/wait.h>

extern char **environ;

typedef struct {
    bool called;
    bool timed_out;
    fx_t *f;
} drained_t;

static void on_drained(void *ud, bool timed_out)
{
    drained_t *d = ud;
    d->called = true;
    d->timed_out = timed_out;
    uv_stop(&d->f->loop);
}

static void wait_drained(fx_t *f, drained_t *d)
{
    uint64_t end = loom_mono_ms() + WAIT_MS;
    while (!d->called) {
        uint64_t now = loom_mono_ms();
        if (now >= end) fail_msg("no end of drain within %d ms", WAIT_MS);
        run_once(f, end - now);
    }
}

static bool heartbeat_draining(const loom_msg_t *m, uint64_t arg)
{
    (void)arg;
    return m->heartbeat->draining;
}

/* A task that runs until the test creates its "go" file. */
static char *dispatch_until_go(fx_t *f, uint64_t id, uint64_t seq)
{
    char *go = loom_xasprintf("%s/go-%llu", f->tmp, (unsigned long long)id);
    char *shell =
        loom_xasprintf("echo waiting; while [ ! -e %s ]; do sleep 0.01; done; echo done", go);
    dispatch_shell(f, id, seq, shell, 0);
    free(shell);
    return go;
}

static void touch(const char *path)
{
    assert_int_equal(loom_write_file_atomic(path, "", 0), 0);
}

/* Acknowledges every chunk and the result of attempt id. */
static void ack_all(fx_t *f, uint64_t id)
{
    uint64_t last = 0;
    for (size_t i = 0; i < f->n_msgs; i++)
        if (f->msgs[i]->body_case == LOOM__ENVELOPE__BODY_LOG && f->msgs[i]->log->attempt_id == id)
            last = f->msgs[i]->log->seq;
    if (last) send_log_ack(f, id, last);
    send_finished_ack(f, id);
}

/* The refusal a draining agent answers a dispatch with. */
static void assert_refused(fx_t *f, uint64_t id)
{
    const loom_msg_t *fin = wait_msg(f, LOOM__ENVELOPE__BODY_FINISHED, for_attempt, id);
    assert_int_equal(fin->finished->exit_code, -1);
    assert_string_equal(fin->finished->error, "agent " AGENT_NAME " is draining");
    assert_int_equal(count_since(f, 0, LOOM__ENVELOPE__BODY_STARTED, id), 0);
}

static void test_drain_lets_work_finish_and_waits_for_acks(void **state)
{
    fx_t *f = *state;
    drained_t d = {.f = f};
    start_welcomed(f, 10000);
    char *go = dispatch_until_go(f, 1, 1);
    wait_msg(f, LOOM__ENVELOPE__BODY_STARTED, for_attempt, 1);
    loom_agent_drain(f->agent, 0, on_drained, &d);
    assert_true(loom_agent_draining(f->agent));
    assert_false(d.called); /* never from inside the call */
    wait_msg(f, LOOM__ENVELOPE__BODY_HEARTBEAT, heartbeat_draining, 0);
    dispatch_shell(f, 2, 2, "echo must not run", 0);
    assert_refused(f, 2);
    send_finished_ack(f, 2);
    touch(go);
    const loom_msg_t *fin = wait_msg(f, LOOM__ENVELOPE__BODY_FINISHED, for_attempt, 1);
    assert_int_equal(fin->finished->exit_code, 0);
    /* Finished but not acknowledged: the drain goes on. */
    for (int i = 0; i < 3; i++) wait_msg(f, LOOM__ENVELOPE__BODY_HEARTBEAT, heartbeat_draining, 0);
    assert_false(d.called);
    assert_int_equal(loom_agent_held(f->agent), 1);
    char *out = attempt_output(f, 1);
    assert_string_equal(out, "waiting\ndone\n");
    free(out);
    ack_all(f, 1);
    wait_drained(f, &d);
    assert_false(d.timed_out);
    assert_int_equal(loom_agent_held(f->agent), 0);
    free(go);
}

static void test_drain_timeout(void **state)
{
    fx_t *f = *state;
    drained_t d = {.f = f};
    start_welcomed(f, 10000);
    dispatch_shell(f, 3, 1, "exec sleep 60", 0);
    wait_msg(f, LOOM__ENVELOPE__BODY_STARTED, for_attempt, 3);
    uint64_t t0 = loom_mono_ms();
    loom_agent_drain(f->agent, 200, on_drained, &d);
    wait_drained(f, &d);
    assert_true(d.timed_out);
    assert_true(loom_mono_ms() - t0 >= 200);
    assert_int_equal(loom_agent_running(f->agent), 1); /* the caller stops it */
    stop_agent(f);
    const loom_msg_t *fin = wait_msg(f, LOOM__ENVELOPE__BODY_FINISHED, for_attempt, 3);
    assert_string_equal(fin->finished->error, "agent stopped");
}

static void test_idle_drain_ends_on_the_next_turn(void **state)
{
    fx_t *f = *state;
    drained_t d = {.f = f};
    start_welcomed(f, 10000);
    loom_agent_drain(f->agent, 0, on_drained, &d);
    assert_false(d.called);
    wait_drained(f, &d);
    assert_false(d.timed_out);
}

/* --- the loom-agent program and its signals --- */

static pid_t agent_pid;

static pid_t spawn_agent(fx_t *f, const char *drain_timeout)
{
    const char *build = getenv("LOOM_BUILD_DIR");
    char *exe = loom_xasprintf("%s/loom-agent", build && *build ? build : ".");
    char *work = loom_xasprintf("%s/agent-work", f->tmp);
    char *log = loom_xasprintf("%s/agent.log", f->tmp);
    /* Tasks run as whoever runs the test (root in CI says so explicitly). */
    struct passwd *me = getpwuid(geteuid());
    char *argv[] = {exe,
                    "--server",
                    f->endpoint,
                    "--name",
                    AGENT_NAME,
                    "--work-dir",
                    work,
                    "--no-gpu-detect",
                    "--log-level",
                    "info",
                    "--drain-timeout",
                    (char *)drain_timeout,
                    "--server-key",
                    f->server_pub,
                    "--run-as",
                    me ? me->pw_name : "root",
                    NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    pid_t pid;
    int rc = posix_spawn(&pid, exe, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) fail_msg("cannot run %s: %s", exe, strerror(rc));
    free(exe);
    free(work);
    free(log);
    agent_pid = pid;
    return pid;
}

/* The program's exit status, waiting for it (while serving the socket). */
static int wait_exit(fx_t *f, pid_t pid)
{
    uint64_t end = loom_mono_ms() + WAIT_MS;
    int status;
    for (;;) {
        pid_t got = waitpid(pid, &status, WNOHANG);
        if (got == pid) break;
        if (got < 0 && errno != EINTR) fail_msg("waitpid: %s", strerror(errno));
        if (loom_mono_ms() >= end) fail_msg("loom-agent did not exit within %d ms", WAIT_MS);
        run_once(f, 20);
    }
    agent_pid = 0;
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

static int prog_teardown(void **state)
{
    if (agent_pid > 0) {
        kill(agent_pid, SIGKILL);
        waitpid(agent_pid, NULL, 0);
        agent_pid = 0;
    }
    return teardown(state);
}

static void welcome_program(fx_t *f)
{
    wait_msg(f, LOOM__ENVELOPE__BODY_HELLO, NULL, 0);
    send_welcome(f, 10000, NULL, 0);
    wait_msg(f, LOOM__ENVELOPE__BODY_HEARTBEAT, NULL, 0);
}

static void test_sigterm_drains_then_exits_0(void **state)
{
    fx_t *f = *state;
    pid_t pid = spawn_agent(f, "10m");
    welcome_program(f);
    char *go = dispatch_until_go(f, 1, 1);
    wait_msg(f, LOOM__ENVELOPE__BODY_STARTED, for_attempt, 1);
    assert_int_equal(kill(pid, SIGTERM), 0);
    wait_msg(f, LOOM__ENVELOPE__BODY_HEARTBEAT, heartbeat_draining, 0);
    dispatch_shell(f, 2, 2, "echo must not run", 0);
    assert_refused(f, 2);
    send_finished_ack(f, 2);
    touch(go);
    const loom_msg_t *fin = wait_msg(f, LOOM__ENVELOPE__BODY_FINISHED, for_attempt, 1);
    assert_int_equal(fin->finished->exit_code, 0);
    assert_string_equal(fin->finished->error, "");
    /* Still there, heartbeating, until its result is acknowledged. */
    wait_msg(f, LOOM__ENVELOPE__BODY_HEARTBEAT, heartbeat_draining, 0);
    assert_int_equal(waitpid(pid, NULL, WNOHANG), 0);
    ack_all(f, 1);
    assert_int_equal(wait_exit(f, pid), 0);
    free(go);
}

static void test_second_sigterm_stops_at_once(void **state)
{
    fx_t *f = *state;
    pid_t pid = spawn_agent(f, "10m");
    welcome_program(f);
    dispatch_shell(f, 1, 1, "exec sleep 60", 0);
    wait_msg(f, LOOM__ENVELOPE__BODY_STARTED, for_attempt, 1);
    assert_int_equal(kill(pid, SIGTERM), 0);
    wait_msg(f, LOOM__ENVELOPE__BODY_HEARTBEAT, heartbeat_draining, 0);
    assert_int_equal(kill(pid, SIGINT), 0);
    const loom_msg_t *fin = wait_msg(f, LOOM__ENVELOPE__BODY_FINISHED, for_attempt, 1);
    assert_string_equal(fin->finished->error, "agent stopped");
    assert_int_equal(fin->finished->signal, SIGTERM);
    assert_int_equal(wait_exit(f, pid), 0);
}

static void test_drain_timeout_flag(void **state)
{
    fx_t *f = *state;
    pid_t pid = spawn_agent(f, "300ms");
    welcome_program(f);
    dispatch_shell(f, 1, 1, "exec sleep 60", 0);
    wait_msg(f, LOOM__ENVELOPE__BODY_STARTED, for_attempt, 1);
    uint64_t t0 = loom_mono_ms();
    assert_int_equal(kill(pid, SIGTERM), 0);
    const loom_msg_t *fin = wait_msg(f, LOOM__ENVELOPE__BODY_FINISHED, for_attempt, 1);
    assert_true(loom_mono_ms() - t0 >= 300);
    assert_string_equal(fin->finished->error, "agent stopped");
    assert_int_equal(wait_exit(f, pid), 0);
}

static void test_drain_timeout_0_stops_on_the_first_signal(void **state)
{
    fx_t *f = *state;
    pid_t pid = spawn_agent(f, "0");
    welcome_program(f);
    dispatch_shell(f, 1, 1, "exec sleep 60", 0);
    wait_msg(f, LOOM__ENVELOPE__BODY_STARTED, for_attempt, 1);
    assert_int_equal(kill(pid, SIGTERM), 0);
    const loom_msg_t *fin = wait_msg(f, LOOM__ENVELOPE__BODY_FINISHED, for_attempt, 1);
    assert_string_equal(fin->finished->error, "agent stopped");
    assert_int_equal(wait_exit(f, pid), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_drain_lets_work_finish_and_waits_for_acks, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_drain_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idle_drain_ends_on_the_next_turn, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sigterm_drains_then_exits_0, setup, prog_teardown),
        cmocka_unit_test_setup_teardown(test_second_sigterm_stops_at_once, setup, prog_teardown),
        cmocka_unit_test_setup_teardown(test_drain_timeout_flag, setup, prog_teardown),
        cmocka_unit_test_setup_teardown(test_drain_timeout_0_stops_on_the_first_signal, setup,
                                        prog_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
