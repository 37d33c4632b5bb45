/* ${{ }} templates in `run`: how text splits into parts, where a reference
 * sits in a shell command and how that decides its quoting, the places no
 * quoting can protect, and the proof that matters: hostile values rendered
 * into a command and run by /bin/sh come out as exactly those bytes and
 * execute nothing. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "dag_testutil.h"

#include <dirent.h>
#include <errno.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- parsing ---- */

static loom_tmpl_t tmpl_ok(const char *text, int shell)
{
    loom_tmpl_t t;
    char why[200] = "";
    size_t off = 99;
    int rc = loom_tmpl_parse(text, shell, &t, why, sizeof why, &off);
    if (rc != 0) print_error("%s at %zu\n", why, off);
    assert_int_equal(rc, 0);
    return t;
}

static void assert_part(const loom_tmpl_t *t, size_t i, int is_ref, const char *text, size_t off,
                        int quote)
{
    assert_true(i < t->n_parts);
    assert_int_equal(t->parts[i].is_ref, is_ref);
    assert_string_equal(t->parts[i].text, text);
    assert_int_equal(t->parts[i].off, off);
    if (is_ref) assert_int_equal(t->parts[i].quote, quote);
}

static void test_parts(void **state)
{
    (void)state;
    loom_tmpl_t t =
        tmpl_ok("train --lr ${{ params.lr }} --x=${{item}}${{ tasks.a-1.metrics.m }}.", 1);
    assert_int_equal(t.n_parts, 6);
    assert_part(&t, 0, 0, "train --lr ", 0, 0);
    assert_part(&t, 1, 1, "params.lr", 11, LOOM_TMPL_BARE);
    assert_part(&t, 2, 0, " --x=", 27, 0);
    assert_part(&t, 3, 1, "item", 32, LOOM_TMPL_BARE);
    assert_part(&t, 4, 1, "tasks.a-1.metrics.m", 41, LOOM_TMPL_BARE);
    assert_part(&t, 5, 0, ".", 67, 0);
    loom_tmpl_free(&t);
    assert_int_equal(t.n_parts, 0);

    t = tmpl_ok("no references at all", 1);
    assert_int_equal(t.n_parts, 1);
    assert_part(&t, 0, 0, "no references at all", 0, 0);
    loom_tmpl_free(&t);
    t = tmpl_ok("", 0);
    assert_int_equal(t.n_parts, 0);
    loom_tmpl_free(&t);
    /* Whitespace of any kind inside the braces; digits may start later names. */
    t = tmpl_ok("${{\n\tparams.x \r\n}}${{ tasks.1st.metrics.m }}", 0);
    assert_part(&t, 0, 1, "params.x", 0, 0);
    assert_part(&t, 1, 1, "tasks.1st.metrics.m", 18, 0);
    loom_tmpl_free(&t);
}

static void expect_tmpl_error(const char *text, int shell, const char *why_want, size_t off_want)
{
    loom_tmpl_t t = {(void *)1, 1};
    char why[200] = "";
    size_t off = 999;
    assert_int_equal(loom_tmpl_parse(text, shell, &t, why, sizeof why, &off), LOOM_EPARSE);
    assert_string_equal(why, why_want);
    assert_int_equal(off, off_want);
    assert_null(t.parts);
    assert_int_equal(t.n_parts, 0);
}

static void test_syntax_errors(void **state)
{
    (void)state;
    const char *bad_path = "invalid reference in \"${{ }}\": expected a path such as params.NAME";
    expect_tmpl_error("echo ${{ params.x", 0, "unterminated \"${{\": no \"}}\" after it", 5);
    expect_tmpl_error("a ${{ x }} b ${{ y", 0, "unterminated \"${{\": no \"}}\" after it", 13);
    expect_tmpl_error("echo ${{  }}", 0, "empty reference \"${{ }}\"", 5);
    expect_tmpl_error("${{ params. }}", 0, bad_path, 0);
    expect_tmpl_error("x ${{ 1abc }}", 0, bad_path, 2);
    expect_tmpl_error("${{ params..x }}", 0, bad_path, 0);
    expect_tmpl_error("${{ a b }}", 0, bad_path, 0);
    expect_tmpl_error("${{ params.x } }}", 0, bad_path, 0);
    expect_tmpl_error("${{ $(id) }}", 0, bad_path, 0);
    /* "$${{" is no escape: it is "$" and then a reference. */
    loom_tmpl_t t = tmpl_ok("cost: $${{ params.p }}", 0);
    assert_part(&t, 0, 0, "cost: $", 0, 0);
    assert_part(&t, 1, 1, "params.p", 7, 0);
    loom_tmpl_free(&t);
}

/* The quoting context of the one reference in text. */
static int quote_of(const char *text)
{
    loom_tmpl_t t = tmpl_ok(text, 1);
    int q = -1;
    for (size_t i = 0; i < t.n_parts; i++)
        if (t.parts[i].is_ref) q = t.parts[i].quote;
    loom_tmpl_free(&t);
    return q;
}

static void test_shell_contexts(void **state)
{
    (void)state;
    assert_int_equal(quote_of("echo ${{ p.x }}"), LOOM_TMPL_BARE);
    assert_int_equal(quote_of("echo '${{ p.x }}'"), LOOM_TMPL_SQUOTED);
    assert_int_equal(quote_of("echo \"a ${{ p.x }} b\""), LOOM_TMPL_DQUOTED);
    assert_int_equal(quote_of("echo \"it's\" ${{ p.x }}"), LOOM_TMPL_BARE);
    assert_int_equal(quote_of("echo 'say \"hi\"' \"${{ p.x }}\""), LOOM_TMPL_DQUOTED);
    assert_int_equal(quote_of("echo \\' ${{ p.x }}"), LOOM_TMPL_BARE); /* an escaped quote */
    assert_int_equal(quote_of("echo \"$(printf %s ${{ p.x }})\""), LOOM_TMPL_BARE);
    assert_int_equal(quote_of("echo \"$(echo \"${{ p.x }}\")\""), LOOM_TMPL_DQUOTED);
    assert_int_equal(quote_of("echo ${X:-${{ p.x }}}"), LOOM_TMPL_BARE);
    assert_int_equal(quote_of("echo \"${X:-$(echo ${{ p.x }})}\""), LOOM_TMPL_BARE);
    assert_int_equal(quote_of("echo ${#X} ${{ p.x }}"), LOOM_TMPL_BARE);
    assert_int_equal(quote_of("x=1 # it's a comment\necho ${{ p.x }}"), LOOM_TMPL_BARE);
    assert_int_equal(quote_of("echo $(( 1 + 2 )) ${{ p.x }}"), LOOM_TMPL_BARE);
    assert_int_equal(quote_of("cat <<'EOF'\nit's\nEOF\necho ${{ p.x }}"), LOOM_TMPL_BARE);
    assert_int_equal(quote_of("cat <<-END >f\n\tdon't\n\tEND\necho ${{ p.x }}"), LOOM_TMPL_BARE);
    assert_int_equal(quote_of("cat <<<'here string' ${{ p.x }}"), LOOM_TMPL_BARE);
    assert_int_equal(quote_of("a#b ${{ p.x }}"), LOOM_TMPL_BARE); /* # inside a word */
}

static void test_unsafe_places_refused(void **state)
{
    (void)state;
    expect_tmpl_error("echo hi # ${{ p.x }}", 1,
                      "a ${{ }} reference in a shell comment could end the comment; remove it", 10);
    expect_tmpl_error("cat <<EOF\n${{ p.x }}\nEOF", 1,
                      "a ${{ }} reference in a here-document cannot be quoted safely; set a "
                      "variable first (x=${{ ... }}) and use $x in it",
                      10);
    expect_tmpl_error("cat <<'EOF'\nvalue: ${{ p.x }}\nEOF", 1,
                      "a ${{ }} reference in a here-document cannot be quoted safely; set a "
                      "variable first (x=${{ ... }}) and use $x in it",
                      19);
    expect_tmpl_error("echo `echo ${{ p.x }}`", 1,
                      "a ${{ }} reference inside `backquotes` cannot be quoted safely; use $( ) "
                      "instead",
                      11);
    expect_tmpl_error("echo \"`echo $(echo ${{ p.x }})`\"", 1,
                      "a ${{ }} reference inside `backquotes` cannot be quoted safely; use $( ) "
                      "instead",
                      19);
    expect_tmpl_error("echo $(( ${{ p.n }} + 1 ))", 1,
                      "a ${{ }} reference inside $(( )) cannot be quoted safely; set a variable "
                      "first (n=${{ ... }}) and use $n",
                      9);
    expect_tmpl_error("echo \\${{ p.x }}", 1, "a \"\\\" right before ${{ }} would undo its quoting",
                      5);
    expect_tmpl_error("echo \"\\${{ p.x }}\"", 1,
                      "a \"\\\" right before ${{ }} would undo its quoting", 6);
    expect_tmpl_error("echo \"$${{ p.x }}\"", 1,
                      "a \"$\" right before ${{ }} would join with its value", 6);
    /* In "${X:-...}" bash reads a ' in the value as a quote, dash as text. */
    expect_tmpl_error("echo \"${X:-${{ p.x }}}\"", 1,
                      "a ${{ }} reference inside \"${...}\" is read differently by different "
                      "shells; set a variable first (x=${{ ... }})",
                      11);
    expect_tmpl_error("echo \"${X:-'${{ p.x }}'}\"", 1,
                      "a ${{ }} reference inside \"${...}\" is read differently by different "
                      "shells; set a variable first (x=${{ ... }})",
                      12);
    expect_tmpl_error("cat <<${{ p.x }}\nx\n", 1,
                      "a ${{ }} reference cannot be a here-document's delimiter", 6);
    /* The argv form has no shell: none of this applies. */
    loom_tmpl_t t = tmpl_ok("# `${{ p.x }}` $(( \\${{ p.y }}", 0);
    assert_int_equal(t.n_parts, 4);
    loom_tmpl_free(&t);
}

/* ---- rendering ---- */

typedef struct {
    const char *path, *value;
} binding;

static char *on_lookup(void *ud, const char *path)
{
    for (const binding *b = ud; b->path; b++)
        if (strcmp(b->path, path) == 0) return loom_xstrdup(b->value);
    return NULL;
}

static void test_render(void **state)
{
    (void)state;
    binding vals[] = {{"params.a", "it's"}, {"item", "$x \"y\" `z` \\"}, {NULL, NULL}};
    loom_tmpl_t t = tmpl_ok("echo ${{ params.a }} '${{ params.a }}' \"${{ item }}\"", 1);
    char why[100] = "";
    char *out = loom_tmpl_render(&t, 1, on_lookup, vals, why, sizeof why);
    assert_string_equal(out, "echo 'it'\\''s' 'it'\\''s' \"\\$x \\\"y\\\" \\`z\\` \\\\\"");
    free(out);
    /* Without shell quoting (argv): exactly the values. */
    out = loom_tmpl_render(&t, 0, on_lookup, vals, why, sizeof why);
    assert_string_equal(out, "echo it's 'it's' \"$x \"y\" `z` \\\"");
    free(out);
    loom_tmpl_free(&t);

    t = tmpl_ok("echo ${{ params.a }} ${{ params.missing }}", 1);
    assert_null(loom_tmpl_render(&t, 1, on_lookup, vals, why, sizeof why));
    assert_string_equal(why, "no value for params.missing");
    loom_tmpl_free(&t);
}

/* ---- the proof: /bin/sh runs what was rendered ---- */

/* Runs argv[0] with argv in dir, with HOME=dir so that even a broken
 * quoting's "rm -rf ~" could only reach the test's own folder. Returns its
 * stdout; asserts it exited 0. */
static char *run_in(const char *dir, char *const argv[])
{
    int fd[2];
    assert_int_equal(pipe(fd), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fd[1], 1);
    posix_spawn_file_actions_addclose(&fa, fd[0]);
    posix_spawn_file_actions_addclose(&fa, fd[1]);
    posix_spawn_file_actions_addchdir_np(&fa, dir);
    char *home = loom_xasprintf("HOME=%s", dir);
    char *env[] = {"PATH=/usr/bin:/bin", home, NULL};
    pid_t pid;
    assert_int_equal(posix_spawn(&pid, argv[0], &fa, NULL, argv, env), 0);
    posix_spawn_file_actions_destroy(&fa);
    close(fd[1]);
    loom_buf_t out = {0};
    char buf[4096];
    for (ssize_t n; (n = read(fd[0], buf, sizeof buf)) != 0;) {
        if (n < 0 && errno == EINTR) continue;
        assert_true(n > 0);
        loom_buf_append(&out, buf, (size_t)n);
    }
    close(fd[0]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    free(home);
    return loom_buf_steal(&out);
}

/* Names in dir other than "keep". */
static int stray_files(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && strcmp(e->d_name, "keep")) n++;
    closedir(d);
    return n;
}

static const char *const hostile[] = {
    "$(touch pwned)",
    "`touch pwned`",
    "; rm -rf ~; touch pwned",
    "a\nb; touch pwned\n",
    "' ; touch pwned ; '",
    "\" ; touch pwned ; \"",
    "it's \"quoted\"",
    "\\'$(touch pwned)\\",
    "${HOME} $HOME *",
    "'\"'\"'\\\\\\",
    "",
    "x\ny\n\n",
    "EOF\ntouch pwned\nEOF",
};

/* Each command prints exactly prefix + value + suffix (less trailing
 * newlines where $( ) strips them: the shell's rule, not the quoting's). */
static const struct {
    const char *cmd, *prefix, *suffix;
    bool strips_newlines;
} contexts[] = {
    {"printf '%s' ${{ params.v }}", "", "", false},
    {"printf '%s' 'in ${{ params.v }} single'", "in ", " single", false},
    {"printf '%s' \"in ${{ params.v }} double\"", "in ", " double", false},
    {"printf '%s' ${UNSET:-${{ params.v }}}", "", "", false},
    {"printf '%s' \"$(printf '%s' ${{ params.v }})\"", "", "", true},
    {"v=${{ params.v }}; printf '%s' \"$v\"", "", "", false},
    {"printf '%s' x${{ params.v }}y", "x", "y", false},
};

static void test_hostile_values_stay_text_in_sh(void **state)
{
    (void)state;
    char dir[] = "/tmp/loom-tmpl-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char *keep = loom_xasprintf("%s/keep", dir);
    FILE *f = fopen(keep, "w");
    assert_non_null(f);
    fclose(f);
    for (size_t c = 0; c < sizeof contexts / sizeof contexts[0]; c++) {
        loom_tmpl_t t = tmpl_ok(contexts[c].cmd, 1);
        for (size_t h = 0; h < sizeof hostile / sizeof hostile[0]; h++) {
            binding vals[] = {{"params.v", hostile[h]}, {NULL, NULL}};
            char why[100];
            char *cmd = loom_tmpl_render(&t, 1, on_lookup, vals, why, sizeof why);
            assert_non_null(cmd);
            char *argv[] = {"/bin/sh", "-c", cmd, NULL};
            char *out = run_in(dir, argv);
            char *want =
                loom_xasprintf("%s%s%s", contexts[c].prefix, hostile[h], contexts[c].suffix);
            size_t n = strlen(want);
            while (contexts[c].strips_newlines && n > 0 && want[n - 1] == '\n') want[--n] = '\0';
            if (strcmp(out, want) != 0) fprintf(stderr, "command: %s\n", cmd);
            assert_string_equal(out, want);
            assert_int_equal(stray_files(dir), 0);   /* nothing was created ... */
            assert_int_equal(access(keep, F_OK), 0); /* ... or removed */
            free(want);
            free(out);
            free(cmd);
        }
        loom_tmpl_free(&t);
    }
    /* The argv form, as loomd renders it: each value inside its argument. */
    loom_tmpl_t t = tmpl_ok("<${{ params.v }}>", 0);
    for (size_t h = 0; h < sizeof hostile / sizeof hostile[0]; h++) {
        binding vals[] = {{"params.v", hostile[h]}, {NULL, NULL}};
        char why[100];
        char *arg = loom_tmpl_render(&t, 0, on_lookup, vals, why, sizeof why);
        char *argv[] = {"/usr/bin/printf", "%s", arg, NULL};
        char *out = run_in(dir, argv);
        char *want = loom_xasprintf("<%s>", hostile[h]);
        assert_string_equal(out, want);
        assert_int_equal(stray_files(dir), 0);
        free(want);
        free(out);
        free(arg);
    }
    loom_tmpl_free(&t);
    unlink(keep);
    free(keep);
    assert_int_equal(rmdir(dir), 0);
}

/* The same through the DAG parser: run as the user writes it. */
static void test_dag_run_renders(void **state)
{
    (void)state;
    loom_dag_t *dag = parse_ok("pipeline: p\n"
                               "params: {msg: hi, n: 3}\n"
                               "tasks:\n"
                               "  a:\n"
                               "    run: |\n"
                               "      echo \"msg=${{ params.msg }}\"\n"
                               "      echo ${{ params.n }}\n"
                               "  b:\n"
                               "    run: [printf, \"%s|\", \"n=${{ params.n }}\"]\n");
    binding vals[] = {{"params.msg", "$(id)"}, {"params.n", "3"}, {NULL, NULL}};
    char why[100];
    char *cmd = loom_tmpl_render(&dag->tasks[0].shell_tmpl, 1, on_lookup, vals, why, sizeof why);
    assert_string_equal(cmd, "echo \"msg=\\$(id)\"\necho '3'\n");
    free(cmd);
    assert_int_equal(dag->tasks[1].argc, 3);
    char *arg = loom_tmpl_render(&dag->tasks[1].argv_tmpl[2], 0, on_lookup, vals, why, sizeof why);
    assert_string_equal(arg, "n=3");
    free(arg);
    assert_int_equal(dag->tasks[1].argv_tmpl[0].n_parts, 1);
    assert_string_equal(dag->tasks[1].argv[2], "n=${{ params.n }}"); /* as written, too */
    loom_dag_destroy(&dag);
}

/* Template problems in a DAG are positioned on the reference. */
static void test_dag_template_errors(void **state)
{
    (void)state;
    assert_errors("pipeline: p\n"
                  "params: {lr: 0.1}\n"
                  "tasks:\n"
                  "  a:\n"
                  "    run: train --lr ${{ params.lrr }} ${{ params }} ${{ tasks.a.status }}\n"
                  "  b:\n"
                  "    run: |\n"
                  "      set -e\n"
                  "      train --lr ${{ parms.lr }}\n"
                  "  c:\n"
                  "    run: [train, \"--lr=${{ params.lr\"]\n"
                  "  d:\n"
                  "    run: \"echo '${{ params.lr }}' # ${{ params.lr }}\"\n",
                  "dag.yaml:5:21: error: unknown param \"lrr\"; did you mean \"lr\"?\n"
                  "dag.yaml:5:39: error: unknown reference \"params\" in ${{ }}; use params.NAME, "
                  "tasks.TASK.metrics.NAME or item\n"
                  "dag.yaml:5:53: error: unknown reference \"tasks.a.status\" in ${{ }}; use "
                  "params.NAME, tasks.TASK.metrics.NAME or item\n"
                  "dag.yaml:9:18: error: unknown reference \"parms.lr\" in ${{ }}; use "
                  "params.NAME, tasks.TASK.metrics.NAME or item\n"
                  "dag.yaml:11:24: error: unterminated \"${{\": no \"}}\" after it\n"
                  "dag.yaml:13:37: error: a ${{ }} reference in a shell comment could end the "
                  "comment; remove it\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parts),
        cmocka_unit_test(test_syntax_errors),
        cmocka_unit_test(test_shell_contexts),
        cmocka_unit_test(test_unsafe_places_refused),
        cmocka_unit_test(test_render),
        cmocka_unit_test(test_hostile_values_stay_text_in_sh),
        cmocka_unit_test(test_dag_run_renders),
        cmocka_unit_test(test_dag_template_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
