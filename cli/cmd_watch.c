/* `loom watch RUN`: a live view of a run. In a terminal, the tasks in DAG
 * order with state, attempts, duration and agent, and a progress line,
 * redrawn in place (ANSI cursor movement) when something changed; to a pipe,
 * one plain line per state change. Both follow the run with the API's long
 * poll (GET /runs/ID?wait=N&since=SEQ), which answers at the run's next
 * change: no busy polling. */
#include "cli.h"
#include "fmt.h"
#include "table.h"

#include "loom/util.h"

#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

/* In a terminal the elapsed time ticks, so a poll ends at least every
 * second; to a pipe only changes matter. */
#define TTY_WAIT_S 1
#define PIPE_WAIT_S 30
#define WAIT_SLACK_S 30

static volatile sig_atomic_t winch;

static void on_sigwinch(int sig)
{
    (void)sig;
    winch = 1;
}

/* Ctrl-C in the middle of a redraw: give the cursor back, then go. */
static void on_sigint(int sig)
{
    static const char show[] = "\033[?25h\033[0m\n";
    ssize_t n = write(STDOUT_FILENO, show, sizeof show - 1);
    (void)n;
    signal(sig, SIG_DFL);
    raise(sig);
}

typedef struct {
    char *name;
    char *state;
    int64_t attempts;
} seen_t;

typedef struct {
    loom_cli_t *cli;
    long long id;
    bool tty;
    int lines_drawn; /* lines of the last frame, to move back over */
    char *last_frame;
    seen_t *seen; /* pipe mode: what was printed per task */
    size_t n_seen;
    bool announced; /* pipe mode: printed the run's end */
} watch_t;

static uint64_t now_ms(void)
{
    return loom_unix_ms();
}

static const char *task_state(const json_t *t)
{
    const char *s = cli_jstr(t, "state");
    return s ? s : "?";
}

/* --- the terminal view ------------------------------------------------------------ */

static int state_rank(const char *s)
{
    static const char *const order[] = {"running", "failed",    "upstream_failed", "queued",
                                        "pending", "cancelled", "skipped",         "succeeded"};
    for (int i = 0; i < 8; i++)
        if (strcmp(order[i], s) == 0) return i;
    return 3;
}

static const char *state_color(const char *s)
{
    if (strcmp(s, "succeeded") == 0) return "\033[32m";
    if (strcmp(s, "failed") == 0 || strcmp(s, "upstream_failed") == 0) return "\033[31m";
    if (strcmp(s, "running") == 0) return "\033[33m";
    return "\033[2m";
}

static void term_size(int *rows, int *cols)
{
    struct winsize ws;
    *rows = 24;
    *cols = 80;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0) {
        if (ws.ws_row) *rows = ws.ws_row;
        if (ws.ws_col) *cols = ws.ws_col;
    }
}

/* Appends s cut to width columns (ASCII after cli_sanitize: a byte is a column). */
static void put_cut(loom_buf_t *b, const char *s, int width)
{
    int n = (int)strlen(s);
    loom_buf_append(b, s, (size_t)(n < width ? n : width < 0 ? 0 : width));
}

static void task_line(loom_buf_t *b, const json_t *t, int name_w, int cols, uint64_t now)
{
    char *name = cli_sanitize(cli_jstr(t, "name") ? cli_jstr(t, "name") : "?");
    const char *st = task_state(t);
    char *agent = cli_sanitize(cli_jstr(t, "agent") ? cli_jstr(t, "agent") : "");
    int64_t attempts = 0, started = 0, ended = 0;
    cli_jint(t, "attempts", &attempts);
    cli_jint(t, "started_unix_ms", &started);
    cli_jint(t, "ended_unix_ms", &ended);
    char dur[32] = "";
    if (started > 0) cli_fmt_span(started, ended, now, dur, sizeof dur);
    char att[32] = "";
    if (attempts == 1) snprintf(att, sizeof att, "1 attempt");
    if (attempts > 1) snprintf(att, sizeof att, "%lld attempts", (long long)attempts);
    char text[512];
    snprintf(text, sizeof text, "  %-*.*s  %-15s %-10s %8s  %s", name_w, name_w, name, st, att, dur,
             agent);
    /* The state in colour; the rest plain. The text is cut to the width
     * first so that no line wraps (a wrapped line breaks the redraw). */
    char cut[512];
    snprintf(cut, sizeof cut, "%.*s", cols > 1 ? cols - 1 : 1, text);
    size_t at = 2 + (size_t)name_w + 2;
    if (strlen(cut) > at) {
        loom_buf_append(b, cut, at);
        loom_buf_puts(b, state_color(st));
        size_t sl = strlen(st) < strlen(cut) - at ? strlen(st) : strlen(cut) - at;
        loom_buf_append(b, cut + at, sl);
        loom_buf_puts(b, "\033[0m");
        loom_buf_puts(b, cut + at + sl);
    } else {
        loom_buf_puts(b, cut);
    }
    loom_buf_puts(b, "\033[K\n");
    free(name);
    free(agent);
}

typedef struct {
    size_t total, done, failed, running, queued, pending, by_state_hidden[8];
} counts_t;

/* The frame for a run: header, as many tasks as fit (in DAG order, the
 * ones worth seeing first: running, failed, queued...), a summary of the
 * rest, and the progress line. */
static char *render_frame(const json_t *run, int rows, int cols, uint64_t now, int *n_lines)
{
    static const char *const rank_names[] = {"running", "failed",   "upstream_failed",
                                             "queued",  "pending",  "cancelled",
                                             "skipped", "succeeded"};
    loom_buf_t b = {0};
    json_t *tasks = cli_jarr(run, "tasks");
    size_t n = json_array_size(tasks);
    counts_t c = {.total = n};
    int name_w = 4;
    for (size_t i = 0; i < n; i++) {
        json_t *t = json_array_get(tasks, i);
        const char *st = task_state(t);
        const char *nm = cli_jstr(t, "name");
        if (nm && (int)strlen(nm) > name_w) name_w = (int)strlen(nm);
        if (strcmp(st, "running") == 0) c.running++;
        if (strcmp(st, "queued") == 0) c.queued++;
        if (strcmp(st, "failed") == 0 || strcmp(st, "upstream_failed") == 0) c.failed++;
        if (cli_run_state_final(st) || strcmp(st, "skipped") == 0 ||
            strcmp(st, "upstream_failed") == 0)
            c.done++;
    }
    if (name_w > 32) name_w = 32;
    /* Rows for tasks: the terminal less the header, the progress line, a
     * summary line and the line the cursor rests on. */
    int room = rows - 4;
    if (room < 1) room = 1;
    bool *show = loom_xcalloc(n ? n : 1, sizeof *show);
    size_t shown = 0;
    if ((int)n <= room + 1) {
        for (size_t i = 0; i < n; i++) show[i] = true;
        shown = n;
    } else {
        for (int rank = 0; rank < 8 && (int)shown < room; rank++)
            for (size_t i = 0; i < n && (int)shown < room; i++)
                if (!show[i] && state_rank(task_state(json_array_get(tasks, i))) == rank) {
                    show[i] = true;
                    shown++;
                }
    }
    char *pipe = cli_sanitize(cli_jstr(run, "pipeline") ? cli_jstr(run, "pipeline") : "?");
    const char *rst = cli_jstr(run, "state") ? cli_jstr(run, "state") : "?";
    char head[256];
    int64_t id = 0;
    cli_jint(run, "id", &id);
    snprintf(head, sizeof head, "run %lld  %s  %s", (long long)id, pipe, rst);
    free(pipe);
    loom_buf_puts(&b, "\033[1m");
    put_cut(&b, head, cols - 1);
    loom_buf_puts(&b, "\033[0m\033[K\n");
    int lines = 1;
    size_t hidden[8] = {0};
    for (size_t i = 0; i < n; i++) {
        json_t *t = json_array_get(tasks, i);
        if (show[i]) {
            task_line(&b, t, name_w, cols, now);
            lines++;
        } else {
            hidden[state_rank(task_state(t))]++;
        }
    }
    if (shown < n) {
        loom_buf_t sum = {0};
        loom_buf_puts(&sum, "  \xe2\x80\xa6");
        bool first = true;
        for (int k = 7; k >= 0; k--)
            if (hidden[k]) {
                loom_buf_printf(&sum, "%s %zu more %s", first ? "" : ",", hidden[k], rank_names[k]);
                first = false;
            }
        /* The ellipsis is 3 bytes, 1 column. */
        put_cut(&b, sum.data, cols + 1);
        loom_buf_free(&sum);
        loom_buf_puts(&b, "\033[K\n");
        lines++;
    }
    int64_t started = 0, ended = 0, created = 0;
    cli_jint(run, "created_unix_ms", &created);
    cli_jint(run, "started_unix_ms", &started);
    cli_jint(run, "ended_unix_ms", &ended);
    char el[32];
    cli_fmt_span(started > 0 ? started : created, ended, now, el, sizeof el);
    char prog[256];
    snprintf(prog, sizeof prog, "%zu/%zu done  %zu failed  %zu running  %zu queued  %s elapsed",
             c.done, c.total, c.failed, c.running, c.queued, el);
    put_cut(&b, prog, cols - 1);
    loom_buf_puts(&b, "\033[K\n");
    lines++;
    free(show);
    *n_lines = lines;
    return loom_buf_steal(&b);
}

static void draw(watch_t *w, const json_t *run)
{
    int rows, cols;
    term_size(&rows, &cols);
    int n_lines;
    char *frame = render_frame(run, rows, cols, now_ms(), &n_lines);
    bool resized = winch;
    winch = 0;
    if (!resized && w->last_frame && strcmp(frame, w->last_frame) == 0) {
        free(frame);
        return; /* nothing changed: no redraw */
    }
    loom_buf_t out = {0};
    if (w->lines_drawn) loom_buf_printf(&out, "\r\033[%dA", w->lines_drawn);
    loom_buf_puts(&out, frame);
    loom_buf_puts(&out, "\033[J"); /* the old frame may have been longer */
    fwrite(out.data, 1, out.len, stdout);
    fflush(stdout);
    loom_buf_free(&out);
    free(w->last_frame);
    w->last_frame = frame;
    w->lines_drawn = n_lines;
}

/* --- plain lines ------------------------------------------------------------------ */

static void clock_text(int64_t ms, char *out, size_t len)
{
    time_t t = (time_t)((ms > 0 ? (uint64_t)ms : now_ms()) / 1000);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(out, len, "%H:%M:%S", &tm);
}

static seen_t *seen_for(watch_t *w, const char *name)
{
    for (size_t i = 0; i < w->n_seen; i++)
        if (strcmp(w->seen[i].name, name) == 0) return &w->seen[i];
    w->seen = loom_xrealloc(w->seen, (w->n_seen + 1) * sizeof *w->seen);
    seen_t *s = &w->seen[w->n_seen++];
    s->name = loom_xstrdup(name);
    s->state = loom_xstrdup("pending");
    s->attempts = 0;
    return s;
}

typedef struct {
    int64_t at;
    size_t order;
    char *text;
} line_t;

static int line_cmp(const void *a, const void *b)
{
    const line_t *x = a, *y = b;
    if (x->at != y->at) return x->at < y->at ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

/* One line per change since the last answer: a task starting (each
 * attempt) and a task's end; pending and queued are not news. Sorted by
 * when they happened. */
static void print_changes(watch_t *w, const json_t *run)
{
    json_t *tasks = cli_jarr(run, "tasks");
    size_t n = json_array_size(tasks);
    line_t *lines = loom_xcalloc(2 * n + 1, sizeof *lines);
    size_t nl = 0;
    uint64_t now = now_ms();
    for (size_t i = 0; i < n; i++) {
        json_t *t = json_array_get(tasks, i);
        const char *name = cli_jstr(t, "name");
        if (!name) continue;
        const char *st = task_state(t);
        seen_t *s = seen_for(w, name);
        int64_t attempts = 0, started = 0, ended = 0;
        cli_jint(t, "attempts", &attempts);
        cli_jint(t, "started_unix_ms", &started);
        cli_jint(t, "ended_unix_ms", &ended);
        char *sname = cli_sanitize(name);
        char *agent = cli_sanitize(cli_jstr(t, "agent") ? cli_jstr(t, "agent") : "?");
        bool ran = attempts > 0 && cli_jstr(t, "agent");
        if (ran && attempts > s->attempts && strcmp(st, "queued") != 0) {
            lines[nl++] = (line_t){started, 2 * i,
                                   attempts > 1 ? loom_xasprintf("%s running on %s (attempt %lld)",
                                                                 sname, agent, (long long)attempts)
                                                : loom_xasprintf("%s running on %s", sname, agent)};
            s->attempts = attempts;
        }
        bool final = cli_run_state_final(st) || strcmp(st, "upstream_failed") == 0 ||
                     strcmp(st, "skipped") == 0;
        if (final && strcmp(s->state, st) != 0) {
            const char *err = cli_jstr(t, "error");
            char *serr = err ? cli_sanitize(err) : NULL;
            char dur[32] = "";
            if (started > 0 && ran) cli_fmt_span(started, ended, now, dur, sizeof dur);
            lines[nl++] =
                (line_t){ended > 0 ? ended : (int64_t)now, 2 * i + 1,
                         loom_xasprintf("%s %s%s%s%s%s%s", sname, st, *dur ? " in " : "", dur,
                                        serr ? " (" : "", serr ? serr : "", serr ? ")" : "")};
            free(serr);
        }
        free(s->state);
        s->state = loom_xstrdup(st);
        free(sname);
        free(agent);
    }
    qsort(lines, nl, sizeof *lines, line_cmp);
    for (size_t i = 0; i < nl; i++) {
        char clk[16];
        clock_text(lines[i].at, clk, sizeof clk);
        printf("%s %s\n", clk, lines[i].text);
        free(lines[i].text);
    }
    free(lines);
    const char *rst = cli_jstr(run, "state");
    if (rst && cli_run_state_final(rst) && !w->announced) {
        w->announced = true;
        int64_t started = 0, ended = 0, created = 0;
        cli_jint(run, "created_unix_ms", &created);
        cli_jint(run, "started_unix_ms", &started);
        cli_jint(run, "ended_unix_ms", &ended);
        char el[32], clk[16];
        cli_fmt_span(started > 0 ? started : created, ended, now, el, sizeof el);
        clock_text(ended, clk, sizeof clk);
        printf("%s run %lld %s in %s\n", clk, w->id, rst, el);
    }
    fflush(stdout);
}

/* --- the loop --------------------------------------------------------------------- */

int cli_watch_run(loom_cli_t *cli, long long id, json_t **final)
{
    watch_t w = {.cli = cli, .id = id, .tty = isatty(STDOUT_FILENO) == 1};
    struct sigaction sa_winch = {0}, sa_int = {0}, old_winch, old_int, old_term;
    if (w.tty) {
        sa_winch.sa_handler = on_sigwinch;
        sigaction(SIGWINCH, &sa_winch, &old_winch);
        sa_int.sa_handler = on_sigint;
        sigaction(SIGINT, &sa_int, &old_int);
        sigaction(SIGTERM, &sa_int, &old_term);
        fputs("\033[?25l", stdout); /* hide the cursor while drawing */
    }
    uint64_t seq = 0;
    bool have_seq = false;
    int rc;
    json_t *run = NULL;
    for (;;) {
        char *path = have_seq
                         ? loom_xasprintf("/api/v1/runs/%lld?wait=%d&since=%llu", id,
                                          w.tty ? TTY_WAIT_S : PIPE_WAIT_S, (unsigned long long)seq)
                         : loom_xasprintf("/api/v1/runs/%lld", id);
        cli_http_resp_t r;
        rc = cli_call(cli, "GET", path, NULL, PIPE_WAIT_S + WAIT_SLACK_S, &r);
        free(path);
        if (rc == CLI_EXIT_OK) rc = cli_check(cli, &r);
        if (rc != CLI_EXIT_OK) {
            cli_http_resp_free(&r);
            break;
        }
        json_decref(run);
        run = json_incref(r.json);
        cli_http_resp_free(&r);
        /* No "seq" (a run that never changed since loomd started): 0 is
         * what loomd compares with then. */
        int64_t s = 0;
        cli_jint(run, "seq", &s);
        seq = (uint64_t)s;
        have_seq = true;
        if (w.tty)
            draw(&w, run);
        else
            print_changes(&w, run);
        const char *st = cli_jstr(run, "state");
        if (!st) {
            cli_error("unexpected answer from loomd: run %lld has no state", id);
            rc = CLI_EXIT_FAIL;
            break;
        }
        if (cli_run_state_final(st)) {
            rc = strcmp(st, "succeeded") == 0 ? CLI_EXIT_OK : CLI_EXIT_FAIL;
            break;
        }
    }
    if (w.tty) {
        fputs("\033[?25h", stdout);
        fflush(stdout);
        sigaction(SIGWINCH, &old_winch, NULL);
        sigaction(SIGINT, &old_int, NULL);
        sigaction(SIGTERM, &old_term, NULL);
    }
    free(w.last_frame);
    for (size_t i = 0; i < w.n_seen; i++) {
        free(w.seen[i].name);
        free(w.seen[i].state);
    }
    free(w.seen);
    if (final && rc != CLI_EXIT_UNREACHABLE && run && cli_jstr(run, "state") &&
        cli_run_state_final(cli_jstr(run, "state")))
        *final = json_incref(run);
    json_decref(run);
    return rc;
}

int cmd_watch(loom_cli_t *cli, int argc, char **argv)
{
    int stop = cli_opts_common_only(cli, argc, argv);
    if (stop >= 0) return stop;
    if (optind >= argc) return cli_usage_error(cli, "missing RUN");
    if (argc - optind > 1) return cli_usage_error(cli, "one RUN at a time");
    long long id;
    if (!cli_parse_run_id(cli, argv[optind], &id)) return CLI_EXIT_USAGE;
    return cli_watch_run(cli, id, NULL);
}
