/* The agent's process runner, with real processes on a real libuv loop.
 * Every wait ends on an event or fails at a deadline; none hopes. Each test
 * runs twice: spawning inside start, and on spawner threads as the agent
 * does. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "runner.h"
#include "spawner.h"
#include "task_user.h"

#include "loom/err.h"
#include "loom/util.h"

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    uv_loop_t loop;
    uv_timer_t deadline;
    bool expired;
    char tmp[PATH_MAX];
    loom_runner_t *runner;
    loom_buf_t out[2];
    bool exited;
    int exits;
    loom_runner_result_t res;
    char error[512];
    bool closed;
    loom_spawner_t *spawner; /* NULL: the runner spawns inline */
    bool started;            /* on_started came */
    int starts;
    bool spawner_closed;
} fx_t;

static void on_deadline_timer(uv_timer_t *handle)
{
    fx_t *f = handle->data;
    f->expired = true;
    uv_stop(&f->loop);
}

/* Runs the loop until *flag is true; false if ms passed first. Callbacks
 * that set a flag call uv_stop so the loop does not go on to block. */
static bool wait_for(fx_t *f, const bool *flag, uint64_t ms)
{
    f->expired = false;
    uv_timer_start(&f->deadline, on_deadline_timer, ms, 0);
    while (!*flag && !f->expired) uv_run(&f->loop, UV_RUN_ONCE);
    uv_timer_stop(&f->deadline);
    return *flag;
}

static void on_runner_output(void *ud, loom_runner_stream stream, const char *data, size_t len)
{
    fx_t *f = ud;
    assert_false(f->exited);
    loom_buf_append(&f->out[stream], data, len);
}

static void on_runner_exit(void *ud, const loom_runner_result_t *res)
{
    fx_t *f = ud;
    f->exited = true;
    f->exits++;
    uv_stop(&f->loop);
    f->res = *res;
    snprintf(f->error, sizeof f->error, "%s", res->error ? res->error : "");
    f->res.error = NULL;
}

static void on_runner_started(void *ud)
{
    fx_t *f = ud;
    f->started = true;
    f->starts++;
    uv_stop(&f->loop);
}

static void on_spawner_closed(void *ud)
{
    fx_t *f = ud;
    f->spawner_closed = true;
}

/* Starts spec with the fixture's spawner. */
static int start_spec(fx_t *f, loom_runner_spec_t *spec)
{
    spec->spawner = f->spawner;
    return loom_runner_start(f->runner, spec);
}

static void on_runner_closed(void *ud)
{
    fx_t *f = ud;
    f->closed = true;
    uv_stop(&f->loop);
}

static int setup_with(void **state, bool spawner)
{
    fx_t *f = loom_xcalloc(1, sizeof *f);
    const char *base = getenv("TMPDIR");
    snprintf(f->tmp, sizeof f->tmp, "%s/loom-test-runner-XXXXXX", base && *base ? base : "/tmp");
    assert_non_null(mkdtemp(f->tmp));
    uv_loop_init(&f->loop);
    uv_timer_init(&f->loop, &f->deadline);
    f->deadline.data = f;
    if (spawner) assert_int_equal(loom_spawner_new(&f->loop, 2, &f->spawner), 0);
    loom_runner_cb_t cb = {on_runner_output, on_runner_exit, f, on_runner_started};
    f->runner = loom_runner_new(&f->loop, &cb);
    *state = f;
    return 0;
}

static int setup(void **state)
{
    return setup_with(state, false);
}

static int setup_spawner(void **state)
{
    return setup_with(state, true);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int teardown(void **state)
{
    fx_t *f = *state;
    if (f->runner) {
        loom_runner_close(f->runner, on_runner_closed, f);
        assert_true(wait_for(f, &f->closed, 10000));
    }
    assert_true(f->exits <= 1);
    assert_true(f->starts <= 1);
    if (f->spawner) {
        loom_spawner_close(f->spawner, on_spawner_closed, f);
        assert_true(wait_for(f, &f->spawner_closed, 10000));
    }
    uv_close((uv_handle_t *)&f->deadline, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    nftw(f->tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    loom_buf_free(&f->out[0]);
    loom_buf_free(&f->out[1]);
    free(f);
    return 0;
}

static char *attempt_dir(fx_t *f)
{
    return loom_xasprintf("%s/attempts/1", f->tmp);
}

/* Starts spec (dir defaulted) and waits for on_exit. Returns start's code. */
static int run_spec(fx_t *f, loom_runner_spec_t spec, uint64_t deadline_ms)
{
    char *dir = attempt_dir(f);
    if (!spec.dir) spec.dir = dir;
    int rc = start_spec(f, &spec);
    assert_false(f->exited); /* never from inside start */
    assert_true(wait_for(f, &f->exited, deadline_ms));
    free(dir);
    /* A spawner thread's failure is known only from on_exit. */
    if (f->spawner && rc == 0 && !f->res.started) rc = LOOM_ESPAWN;
    assert_int_equal(f->starts, f->res.started ? 1 : 0);
    return rc;
}

static int run_shell(fx_t *f, const char *shell)
{
    loom_runner_spec_t spec = {.shell = shell};
    return run_spec(f, spec, 10000);
}

static void test_exit_code(void **state)
{
    fx_t *f = *state;
    assert_int_equal(run_shell(f, "exit 7"), 0);
    assert_true(f->res.started);
    assert_int_equal(f->res.exit_code, 7);
    assert_int_equal(f->res.signal, 0);
    assert_false(f->res.timed_out);
    assert_string_equal(f->error, "");
}

static void test_signal(void **state)
{
    fx_t *f = *state;
    assert_int_equal(run_shell(f, "kill -KILL $$"), 0);
    assert_int_equal(f->res.signal, SIGKILL);
}

static void test_output_in_order_per_stream(void **state)
{
    fx_t *f = *state;
    loom_buf_t want_out = {0}, want_err = {0};
    for (int i = 0; i < 3000; i++) {
        loom_buf_printf(&want_out, "out %d\n", i);
        loom_buf_printf(&want_err, "err %d\n", i);
    }
    assert_int_equal(run_shell(f, "i=0; while [ $i -lt 3000 ]; do echo \"out $i\"; "
                                  "echo \"err $i\" >&2; i=$((i+1)); done"),
                     0);
    assert_int_equal(f->res.exit_code, 0);
    assert_int_equal(f->out[LOOM_RUNNER_STDOUT].len, want_out.len);
    assert_string_equal(f->out[LOOM_RUNNER_STDOUT].data, want_out.data);
    assert_string_equal(f->out[LOOM_RUNNER_STDERR].data, want_err.data);
    loom_buf_free(&want_out);
    loom_buf_free(&want_err);
}

static void test_argv_is_literal(void **state)
{
    fx_t *f = *state;
    const char *argv[] = {"printf", "%s|", "a b", "$(echo x)", "*", "'q'", NULL};
    loom_runner_spec_t spec = {.argv = argv};
    assert_int_equal(run_spec(f, spec, 10000), 0);
    assert_int_equal(f->res.exit_code, 0);
    assert_string_equal(f->out[LOOM_RUNNER_STDOUT].data, "a b|$(echo x)|*|'q'|");
}

static void test_env_inherited_and_overridden(void **state)
{
    fx_t *f = *state;
    setenv("LOOM_TEST_INHERITED", "yes", 1);
    setenv("LOOM_TEST_OVERRIDE", "parent", 1);
    const char *env[] = {"LOOM_TEST_OVERRIDE=child", "LOOM_TEST_NEW=first", "LOOM_TEST_NEW=a b",
                         NULL};
    loom_runner_spec_t spec = {.shell = "env | grep '^LOOM_TEST_' | sort", .env = env};
    assert_int_equal(run_spec(f, spec, 10000), 0);
    unsetenv("LOOM_TEST_INHERITED");
    unsetenv("LOOM_TEST_OVERRIDE");
    assert_string_equal(f->out[LOOM_RUNNER_STDOUT].data,
                        "LOOM_TEST_INHERITED=yes\nLOOM_TEST_NEW=a b\nLOOM_TEST_OVERRIDE=child\n");
}

static void test_bad_env_entry_is_a_start_failure(void **state)
{
    fx_t *f = *state;
    const char *env[] = {"=nameless", NULL};
    loom_runner_spec_t spec = {.shell = "true", .env = env};
    assert_int_equal(run_spec(f, spec, 10000), LOOM_ESPAWN);
    assert_false(f->res.started);
    assert_int_equal(f->res.exit_code, LOOM_RUNNER_EXIT_NOT_STARTED);
    assert_non_null(strstr(f->error, "not NAME=value"));
}

static void test_runs_in_its_own_folder(void **state)
{
    fx_t *f = *state;
    char *dir = attempt_dir(f);
    assert_int_equal(run_shell(f, "pwd -P; echo x > made-here"), 0);
    char *real = realpath(dir, NULL);
    assert_non_null(real);
    char *want = loom_xasprintf("%s\n", real);
    assert_string_equal(f->out[LOOM_RUNNER_STDOUT].data, want);
    struct stat st;
    assert_int_equal(stat(dir, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    char *made = loom_xasprintf("%s/made-here", dir);
    assert_int_equal(access(made, F_OK), 0);
    free(made);
    free(want);
    free(real);
    free(dir);
}

static void test_command_not_found(void **state)
{
    fx_t *f = *state;
    const char *argv[] = {"loom-no-such-command-xyz", "arg", NULL};
    loom_runner_spec_t spec = {.argv = argv};
    assert_int_equal(run_spec(f, spec, 10000), LOOM_ESPAWN);
    assert_false(f->res.started);
    assert_int_equal(f->res.exit_code, 127);
    assert_int_equal(f->res.signal, 0);
    assert_non_null(strstr(f->error, "could not start: "));
    assert_non_null(strstr(f->error, "loom-no-such-command-xyz"));
    assert_int_equal(loom_runner_pid(f->runner), 0);
}

/* Dead means gone or a zombie: it holds nothing and runs nothing. */
static bool pid_dead(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *fp = fopen(path, "r");
    if (!fp) return true;
    size_t n = fread(buf, 1, sizeof buf - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    const char *paren = strrchr(buf, ')');
    return paren && (paren[2] == 'Z' || paren[2] == 'X');
}

typedef struct {
    uv_timer_t timer;
    pid_t pid;
    bool dead;
} death_watch_t;

static void on_death_watch_timer(uv_timer_t *handle)
{
    death_watch_t *w = handle->data;
    w->dead = pid_dead(w->pid);
    if (w->dead) {
        uv_timer_stop(handle);
        uv_stop(handle->loop);
    }
}

/* Waits (bounded) for pid to die, checking every few milliseconds. */
static bool wait_dead(fx_t *f, pid_t pid, uint64_t ms)
{
    death_watch_t w = {.pid = pid};
    uv_timer_init(&f->loop, &w.timer);
    w.timer.data = &w;
    uv_timer_start(&w.timer, on_death_watch_timer, 0, 5);
    wait_for(f, &w.dead, ms);
    uv_close((uv_handle_t *)&w.timer, NULL);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    return w.dead;
}

static void test_background_child_is_killed(void **state)
{
    fx_t *f = *state;
    uint64_t t0 = loom_mono_ms();
    assert_int_equal(run_shell(f, "sleep 100 & echo $!"), 0);
    uint64_t took = loom_mono_ms() - t0;
    assert_int_equal(f->res.exit_code, 0);
    /* Well under LOOM_RUNNER_DRAIN_MS: the group kill ended it, not the
     * give-up timer. */
    assert_true(took < LOOM_RUNNER_DRAIN_MS / 2);
    int64_t pid;
    f->out[0].data[strcspn(f->out[0].data, "\n")] = '\0';
    assert_int_equal(loom_parse_i64(f->out[0].data, 2, INT32_MAX, &pid), 0);
    assert_true(wait_dead(f, (pid_t)pid, 5000));
}

static void test_escaped_child_cannot_hold_completion(void **state)
{
    fx_t *f = *state;
    /* The grandchild leaves the process group (setsid) but keeps stdout:
     * only the drain bound can end the wait. The loop makes sure it has
     * left the group before the shell exits and the group is killed. */
    loom_runner_spec_t spec = {
        .shell = "setsid sleep 100 & p=$!; "
                 "while [ \"$(cut -d' ' -f6 /proc/$p/stat 2>/dev/null)\" != \"$p\" ]; do :; done; "
                 "echo $p",
        .drain_ms = 300,
    };
    uint64_t t0 = loom_mono_ms();
    assert_int_equal(run_spec(f, spec, 10000), 0);
    uint64_t took = loom_mono_ms() - t0;
    int64_t pid;
    f->out[0].data[strcspn(f->out[0].data, "\n")] = '\0';
    assert_int_equal(loom_parse_i64(f->out[0].data, 2, INT32_MAX, &pid), 0);
    kill((pid_t)pid, SIGKILL);
    assert_int_equal(f->res.exit_code, 0);
    assert_true(took >= 300);
    assert_true(took < 5000);
}

static void test_timeout_terminates(void **state)
{
    fx_t *f = *state;
    loom_runner_spec_t spec = {.shell = "sleep 60", .timeout_ms = 200};
    uint64_t t0 = loom_mono_ms();
    assert_int_equal(run_spec(f, spec, 10000), 0);
    assert_true(loom_mono_ms() - t0 >= 200);
    assert_true(f->res.timed_out);
    assert_int_equal(f->res.signal, SIGTERM);
}

static void test_timeout_escalates_to_sigkill(void **state)
{
    fx_t *f = *state;
    loom_runner_spec_t spec = {
        .shell = "trap '' TERM; sleep 60", .timeout_ms = 100, .kill_grace_ms = 200};
    uint64_t t0 = loom_mono_ms();
    assert_int_equal(run_spec(f, spec, 10000), 0);
    assert_true(loom_mono_ms() - t0 >= 300);
    assert_true(f->res.timed_out);
    assert_int_equal(f->res.signal, SIGKILL);
}

static void test_terminate(void **state)
{
    fx_t *f = *state;
    char *dir = attempt_dir(f);
    loom_runner_spec_t spec = {.shell = "echo up; exec sleep 60", .dir = dir};
    assert_int_equal(start_spec(f, &spec), 0);
    assert_true(wait_for(f, &f->started, 10000));
    assert_true(loom_runner_pid(f->runner) > 0);
    loom_runner_terminate(f->runner);
    assert_true(wait_for(f, &f->exited, 10000));
    assert_int_equal(f->res.signal, SIGTERM);
    assert_false(f->res.timed_out);
    free(dir);
}

static void test_rusage(void **state)
{
    fx_t *f = *state;
    uint64_t before = loom_unix_ms();
    assert_int_equal(run_shell(f, "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done"), 0);
    assert_int_equal(f->res.exit_code, 0);
    assert_true(f->res.max_rss_bytes > 64 * 1024);
    assert_true(f->res.max_rss_bytes < (uint64_t)1 << 40);
    assert_true(f->res.user_cpu_us + f->res.sys_cpu_us > 0);
    assert_true(f->res.started_unix_ms >= before);
    assert_true(f->res.ended_unix_ms >= f->res.started_unix_ms);
    assert_true(f->res.ended_unix_ms <= loom_unix_ms());
}

static void test_close_kills_and_reaps(void **state)
{
    fx_t *f = *state;
    char *dir = attempt_dir(f);
    loom_runner_spec_t spec = {.shell = "exec sleep 60", .dir = dir};
    assert_int_equal(start_spec(f, &spec), 0);
    assert_true(wait_for(f, &f->started, 10000));
    pid_t pid = loom_runner_pid(f->runner);
    assert_true(pid > 0);
    loom_runner_close(f->runner, on_runner_closed, f);
    f->runner = NULL;
    assert_true(wait_for(f, &f->closed, 10000));
    /* Reaped, not a zombie: /proc no longer has it. */
    char path[64];
    snprintf(path, sizeof path, "/proc/%d", (int)pid);
    assert_int_equal(access(path, F_OK), -1);
    assert_false(f->exited);
    free(dir);
}

/* What on_spawned saw: the process as it was while on_spawned ran. */
typedef struct {
    int pid;
    char cmdline[512];
    bool fail;
} spawned_t;

static int on_spawned(void *ud, int pid, char *why, size_t whylen)
{
    spawned_t *s = ud;
    char path[64], *text = NULL;
    size_t len = 0;
    s->pid = pid;
    snprintf(path, sizeof path, "/proc/%d/cmdline", pid);
    /* Read right after exec, the command line may not be set up yet; the
     * process cannot get past the gate while we are here, so whatever it
     * shows once set is what runs before the task. */
    uint64_t end = loom_mono_ms() + 5000;
    do {
        free(text);
        text = NULL;
        assert_int_equal(loom_read_file(path, 4096, &text, &len), 0);
    } while (len == 0 && loom_mono_ms() < end);
    for (size_t i = 0; i < len; i++)
        if (text[i] == '\0') text[i] = ' ';
    snprintf(s->cmdline, sizeof s->cmdline, "%s", text);
    free(text);
    if (s->fail) {
        snprintf(why, whylen, "cannot move it: no");
        return -1;
    }
    return 0;
}

/* Closes the runner and starts over with a new one. */
static void fresh_runner(fx_t *f)
{
    loom_runner_close(f->runner, on_runner_closed, f);
    assert_true(wait_for(f, &f->closed, 10000));
    loom_runner_cb_t cb = {on_runner_output, on_runner_exit, f, on_runner_started};
    f->runner = loom_runner_new(&f->loop, &cb);
    f->exited = f->closed = f->started = false;
    f->exits = f->starts = 0;
    loom_buf_reset(&f->out[0]);
    loom_buf_reset(&f->out[1]);
}

static void test_on_spawned_runs_before_the_task(void **state)
{
    fx_t *f = *state;
    spawned_t s = {0};
    const char *argv[] = {"sh", "-c", "echo ran as $$", NULL};
    loom_runner_spec_t spec = {.argv = argv, .on_spawned = on_spawned, .spawned_ud = &s};
    assert_int_equal(run_spec(f, spec, 10000), 0);
    /* While on_spawned ran, the process was still the gate, not the task. */
    assert_non_null(strstr(s.cmdline, "/bin/sh -c read -r _ <&3"));
    assert_non_null(strstr(s.cmdline, "loom-gate sh -c echo ran as $$"));
    assert_int_equal(f->res.exit_code, 0);
    char want[64];
    snprintf(want, sizeof want, "ran as %d\n", s.pid); /* the same process, exec'd */
    assert_string_equal(f->out[LOOM_RUNNER_STDOUT].data, want);
    /* The gate's descriptor (fd 3 until the gate execs the task) does not
     * reach the task. */
    fresh_runner(f);
    spec = (loom_runner_spec_t){.shell =
                                    "if [ -e /proc/$$/fd/3 ]; then echo open; else echo closed; fi",
                                .on_spawned = on_spawned,
                                .spawned_ud = &s};
    assert_int_equal(run_spec(f, spec, 10000), 0);
    assert_string_equal(f->out[LOOM_RUNNER_STDOUT].data, "closed\n");
}

static void test_on_spawned_failure_kills_it_unstarted(void **state)
{
    fx_t *f = *state;
    spawned_t s = {.fail = true};
    char *mark = loom_xasprintf("%s/ran", f->tmp);
    char *shell = loom_xasprintf("touch %s", mark);
    loom_runner_spec_t spec = {.shell = shell, .on_spawned = on_spawned, .spawned_ud = &s};
    assert_int_equal(run_spec(f, spec, 10000), LOOM_ESPAWN);
    assert_false(f->res.started);
    assert_int_equal(f->res.exit_code, LOOM_RUNNER_EXIT_NOT_STARTED);
    assert_string_equal(f->error, "could not start: cannot move it: no");
    assert_int_equal(access(mark, F_OK), -1); /* the task never ran */
    assert_int_equal(kill(s.pid, 0), -1);     /* killed and reaped */
    free(shell);
    free(mark);
}

static void test_gated_command_not_found(void **state)
{
    fx_t *f = *state;
    spawned_t s = {0};
    const char *argv[] = {"loom-no-such-command", NULL};
    loom_runner_spec_t spec = {.argv = argv, .on_spawned = on_spawned, .spawned_ud = &s};
    assert_int_equal(run_spec(f, spec, 10000), 0);
    /* Behind the gate the shell reports it (see runner.h). */
    assert_true(f->res.started);
    assert_int_equal(f->res.exit_code, 127);
    assert_non_null(strstr(f->out[LOOM_RUNNER_STDERR].data, "loom-no-such-command"));
}

/* --run-as: the process switches to the user before exec (by fork, since
 * posix_spawn cannot), behind the gate too; a folder it cannot enter is a
 * failed start, not a task running elsewhere. Needs root. */
static void test_runs_as_another_user(void **state)
{
    fx_t *f = *state;
    if (geteuid() != 0) skip();
    task_user_t u;
    char why[256];
    assert_int_equal(task_user_lookup("nobody", &u, why, sizeof why), 0);
    assert_true(u.other);
    assert_int_equal(chmod(f->tmp, 0711), 0);
    char *dir = attempt_dir(f);
    assert_int_equal(loom_mkdirs(dir, 0700), 0); /* root's: nobody cannot enter */
    const char *env[] = {"ONLY=this", NULL};
    loom_runner_spec_t spec = {.shell = "id -u; echo \"${HOME:-no-home} $ONLY\"",
                               .env = env,
                               .env_only = true,
                               .user = &u};
    assert_int_equal(run_spec(f, spec, 10000), LOOM_ESPAWN);
    assert_false(f->res.started);
    assert_non_null(strstr(f->error, "Permission denied"));

    fresh_runner(f);
    assert_int_equal(task_user_chown_tree(dir, u.uid, u.gid, why, sizeof why), 0);
    assert_int_equal(run_spec(f, spec, 10000), 0);
    char *want = loom_xasprintf("%u\nno-home this\n", (unsigned)u.uid);
    assert_string_equal(f->out[LOOM_RUNNER_STDOUT].data, want);
    free(want);

    /* Behind the gate (a task with limits), the same. */
    fresh_runner(f);
    spawned_t s = {0};
    spec.on_spawned = on_spawned;
    spec.spawned_ud = &s;
    spec.shell = "id -u; touch mine; stat -c %u mine";
    assert_int_equal(run_spec(f, spec, 10000), 0);
    want = loom_xasprintf("%u\n%u\n", (unsigned)u.uid, (unsigned)u.uid);
    assert_string_equal(f->out[LOOM_RUNNER_STDOUT].data, want);
    free(want);

    /* A program that does not exist: not started, as with posix_spawnp. */
    fresh_runner(f);
    const char *argv[] = {"loom-no-such-command-xyz", NULL};
    spec = (loom_runner_spec_t){.argv = argv, .env = env, .env_only = true, .user = &u};
    assert_int_equal(run_spec(f, spec, 10000), LOOM_ESPAWN);
    assert_false(f->res.started);
    assert_non_null(strstr(f->error, "loom-no-such-command-xyz"));
    free(dir);
    task_user_free(&u);
}

/* Released while a spawner thread is starting it: the process never
 * gets to run the task and is reaped; no exit is reported. */
static void test_close_while_spawning(void **state)
{
    fx_t *f = *state;
    char *dir = attempt_dir(f);
    char *mark = loom_xasprintf("%s/ran", f->tmp);
    char *shell = loom_xasprintf("sleep 0.5; touch %s", mark);
    loom_runner_spec_t spec = {.shell = shell, .dir = dir};
    assert_int_equal(start_spec(f, &spec), 0);
    loom_runner_close(f->runner, on_runner_closed, f);
    f->runner = NULL;
    assert_true(wait_for(f, &f->closed, 10000));
    assert_false(f->exited);
    /* Killed at once: the mark is never made, even after its sleep. */
    usleep(800 * 1000);
    assert_int_equal(access(mark, F_OK), -1);
    free(shell);
    free(mark);
    free(dir);
}

/* Terminate before the pid is known still terminates it. */
static void test_terminate_while_spawning(void **state)
{
    fx_t *f = *state;
    char *dir = attempt_dir(f);
    loom_runner_spec_t spec = {.shell = "exec sleep 60", .dir = dir};
    assert_int_equal(start_spec(f, &spec), 0);
    loom_runner_terminate(f->runner);
    assert_true(wait_for(f, &f->exited, 10000));
    assert_true(f->res.started);
    assert_int_equal(f->res.signal, SIGTERM);
    free(dir);
}

#define BOTH(t)                                                                                    \
    cmocka_unit_test_setup_teardown(t, setup, teardown),                                           \
        cmocka_unit_test_setup_teardown(t, setup_spawner, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        BOTH(test_exit_code),
        BOTH(test_runs_as_another_user),
        BOTH(test_signal),
        BOTH(test_output_in_order_per_stream),
        BOTH(test_argv_is_literal),
        BOTH(test_env_inherited_and_overridden),
        BOTH(test_bad_env_entry_is_a_start_failure),
        BOTH(test_runs_in_its_own_folder),
        BOTH(test_command_not_found),
        BOTH(test_background_child_is_killed),
        BOTH(test_escaped_child_cannot_hold_completion),
        BOTH(test_timeout_terminates),
        BOTH(test_timeout_escalates_to_sigkill),
        BOTH(test_terminate),
        BOTH(test_rusage),
        BOTH(test_close_kills_and_reaps),
        BOTH(test_on_spawned_runs_before_the_task),
        BOTH(test_on_spawned_failure_kills_it_unstarted),
        BOTH(test_gated_command_not_found),
        BOTH(test_close_while_spawning),
        BOTH(test_terminate_while_spawning),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
