/* `loom status` lists recent runs; `loom status RUN` shows one run and the
 * state of each of its tasks. */
#include "cli.h"
#include "fmt.h"
#include "table.h"

#include "loom/util.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_LIMIT 20

static void print_run_header(const json_t *run, uint64_t now)
{
    int64_t id = 0, version = 0, started = 0, ended = 0;
    cli_jint(run, "id", &id);
    cli_jint(run, "started_unix_ms", &started);
    cli_jint(run, "ended_unix_ms", &ended);
    const char *pipeline = cli_jstr(run, "pipeline");
    const char *state = cli_jstr(run, "state");
    char ver[24] = "?", dur[32] = "";
    if (cli_jint(run, "version", &version)) snprintf(ver, sizeof ver, "%lld", (long long)version);
    /* A run that has not started has no duration yet: leave it out. */
    if (started > 0) cli_fmt_span(started, ended, now, dur, sizeof dur);
    char *line =
        loom_xasprintf("run %lld  %s v%s  %s%s%s", (long long)id, pipeline ? pipeline : "?", ver,
                       state ? state : "?", dur[0] ? "  " : "", dur);
    char *safe = cli_sanitize(line);
    puts(safe);
    free(safe);
    free(line);
    /* How it started, when a trigger started it. */
    const json_t *o = cli_jobj(run, "origin");
    const char *kind = cli_jstr(o, "kind");
    if (!kind || strcmp(kind, "manual") == 0) return;
    int64_t n = 0;
    if (strcmp(kind, "schedule") == 0)
        line = loom_xasprintf("started by schedule \"%s\" (%s) for %s", cli_jstr(o, "cron"),
                              cli_jstr(o, "timezone"), cli_jstr(o, "scheduled_for"));
    else if (strcmp(kind, "event") == 0 && cli_jint(o, "event_id", &n))
        line = loom_xasprintf("started by event %s #%lld (%s)", cli_jstr(o, "event"), (long long)n,
                              cli_jstr(o, "source"));
    else if (strcmp(kind, "data") == 0 && cli_jint(o, "files", &n))
        line = loom_xasprintf("started by %lld file%s in %s", (long long)n, n == 1 ? "" : "s",
                              cli_jstr(o, "path"));
    else
        line = loom_xasprintf("started by %s", kind);
    if (cli_jint(o, "debounced", &n) && n > 1) {
        char *more =
            loom_xasprintf("%s, standing for %lld triggers (debounce)", line, (long long)n);
        free(line);
        line = more;
    }
    safe = cli_sanitize(line);
    puts(safe);
    free(safe);
    free(line);
}

/* What the NOTE column says of a task: why it failed or did not run, or
 * why it is still queued. */
static const char *task_note(const json_t *t)
{
    const char *note = cli_jstr(t, "error");
    if (!note || !*note) note = cli_jstr(t, "waiting");
    return note && *note ? note : NULL;
}

static bool any_note(const json_t *tasks)
{
    size_t i;
    json_t *t;
    json_array_foreach(tasks, i, t)
    {
        if (task_note(t)) return true;
    }
    return false;
}

void cli_print_run(const json_t *run)
{
    uint64_t now = loom_unix_ms();
    print_run_header(run, now);
    json_t *tasks = cli_jarr(run, "tasks");
    if (!tasks || json_array_size(tasks) == 0) return;
    static const char *const headers[] = {"TASK", "STATE",    "ATTEMPTS", "AGENT",
                                          "EXIT", "DURATION", "NOTE"};
    /* The NOTE column only when some task has one: it is usually empty. */
    bool errors = any_note(tasks);
    cli_table_t *t = cli_table_new(headers, errors ? 7 : 6);
    cli_table_align_right(t, 2);
    cli_table_align_right(t, 5);
    size_t i;
    json_t *task;
    json_array_foreach(tasks, i, task)
    {
        if (!json_is_object(task)) continue;
        int64_t attempts = 0, started = 0, ended = 0;
        cli_jint(task, "started_unix_ms", &started);
        cli_jint(task, "ended_unix_ms", &ended);
        char exit_text[32], dur[32];
        cli_fmt_exit(task, exit_text, sizeof exit_text);
        cli_fmt_span(started, ended, now, dur, sizeof dur);
        cli_table_add(t, cli_jstr(task, "name"));
        cli_table_add(t, cli_jstr(task, "state"));
        if (cli_jint(task, "attempts", &attempts))
            cli_table_addf(t, "%lld", (long long)attempts);
        else
            cli_table_add(t, NULL);
        const char *job = cli_jstr(task, "job_id");
        if (job && *job)
            cli_table_addf(t, "%s (%s)", cli_jstr(task, "agent") ? cli_jstr(task, "agent") : "-",
                           job);
        else
            cli_table_add(t, cli_jstr(task, "agent"));
        cli_table_add(t, exit_text);
        cli_table_add(t, dur);
        if (errors) cli_table_add(t, task_note(task));
    }
    putchar('\n');
    cli_table_print(t, stdout);
    cli_table_destroy(&t);
}

static void print_run_list(const json_t *runs)
{
    static const char *const headers[] = {"RUN",     "PIPELINE", "VER",     "STATE",
                                          "TRIGGER", "STARTED",  "DURATION"};
    uint64_t now = loom_unix_ms();
    cli_table_t *t = cli_table_new(headers, 7);
    cli_table_align_right(t, 0);
    cli_table_align_right(t, 2);
    cli_table_align_right(t, 6);
    size_t i;
    json_t *run;
    json_array_foreach(runs, i, run)
    {
        if (!json_is_object(run)) continue;
        int64_t id = 0, version = 0, started = 0, ended = 0;
        bool has_id = cli_jint(run, "id", &id);
        bool has_version = cli_jint(run, "version", &version);
        cli_jint(run, "started_unix_ms", &started);
        cli_jint(run, "ended_unix_ms", &ended);
        char ago[32], dur[32];
        cli_fmt_ago(now, started, ago, sizeof ago);
        cli_fmt_span(started, ended, now, dur, sizeof dur);
        if (has_id)
            cli_table_addf(t, "%lld", (long long)id);
        else
            cli_table_add(t, NULL);
        cli_table_add(t, cli_jstr(run, "pipeline"));
        if (has_version)
            cli_table_addf(t, "%lld", (long long)version);
        else
            cli_table_add(t, NULL);
        cli_table_add(t, cli_jstr(run, "state"));
        cli_table_add(t, cli_jstr(run, "trigger"));
        cli_table_add(t, ago);
        cli_table_add(t, dur);
    }
    cli_table_print(t, stdout);
    cli_table_destroy(&t);
}

static int show_run(loom_cli_t *cli, const char *arg)
{
    long long id;
    if (!cli_parse_run_id(cli, arg, &id)) return CLI_EXIT_USAGE;
    char *path = loom_xasprintf("/api/v1/runs/%lld", id);
    int rc = cli_show(cli, path, cli_print_run);
    free(path);
    return rc;
}

static int list_runs(loom_cli_t *cli, const char *pipeline, long long limit)
{
    loom_buf_t path = {0};
    loom_buf_printf(&path, "/api/v1/runs?limit=%lld", limit);
    if (pipeline) {
        char *esc = cli_url_escape(pipeline);
        loom_buf_printf(&path, "&pipeline=%s", esc);
        free(esc);
    }
    cli_http_resp_t r;
    int rc = cli_fetch(cli, "GET", path.data, NULL, &r);
    loom_buf_free(&path);
    if (rc != CLI_EXIT_OK) goto out;
    json_t *runs = cli_jarr(r.json, "runs");
    if (cli->json)
        cli_print_json(r.json);
    else if (!runs || json_array_size(runs) == 0)
        printf("no runs yet (start one with `loom run PIPELINE`)\n");
    else
        print_run_list(runs);
out:
    cli_http_resp_free(&r);
    return rc;
}

int cmd_status(loom_cli_t *cli, int argc, char **argv)
{
    enum { OPT_PIPELINE = 1, OPT_LIMIT };
    static const struct option longopts[] = {{"pipeline", required_argument, NULL, OPT_PIPELINE},
                                             {"limit", required_argument, NULL, OPT_LIMIT},
                                             CLI_COMMON_LONGOPTS,
                                             {0}};
    const char *pipeline = NULL;
    int64_t limit = DEFAULT_LIMIT;
    cli_opts_begin(cli, argv);
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (c == OPT_PIPELINE) {
            pipeline = optarg;
        } else if (c == OPT_LIMIT) {
            int rc = cli_opt_limit(cli, optarg, &limit);
            if (rc >= 0) return rc;
        } else {
            int rc = cli_opt_common(cli, c);
            if (rc >= 0) return rc;
        }
    }
    if (argc - optind > 1) return cli_usage_error(cli, "one RUN at a time");
    if (optind < argc) {
        if (pipeline) return cli_usage_error(cli, "--pipeline lists runs; it does not go with RUN");
        return show_run(cli, argv[optind]);
    }
    return list_runs(cli, pipeline, (long long)limit);
}
