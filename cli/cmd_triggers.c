/* `loom triggers`, `loom events` and `loom pause|resume`: what starts runs
 * on its own, what it decided and why, and how a monitor sends an event. */
#include "cli.h"
#include "fmt.h"
#include "table.h"

#include "loom/util.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void fmt_time(int64_t ms, char *out, size_t len)
{
    if (ms <= 0) {
        snprintf(out, len, "-");
        return;
    }
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(out, len, "%Y-%m-%d %H:%M:%S %Z", &tm);
}

/* What a trigger watches, in one cell. */
static char *trigger_spec(const json_t *t)
{
    const char *kind = cli_jstr(t, "kind");
    if (kind && strcmp(kind, "schedule") == 0)
        return loom_xasprintf("\"%s\" %s, catchup %s", cli_jstr(t, "cron"), cli_jstr(t, "timezone"),
                              cli_jstr(t, "catchup"));
    if (kind && strcmp(kind, "data") == 0) {
        json_t *b = json_object_get(t, "batch");
        int64_t files = 1;
        cli_jint(b, "max_files", &files);
        return loom_xasprintf("%s/%s%s, batch %lld", cli_jstr(t, "path"), cli_jstr(t, "glob"),
                              json_is_true(json_object_get(t, "recursive")) ? " (recursive)" : "",
                              (long long)files);
    }
    return loom_xstrdup(cli_jstr(t, "event") ? cli_jstr(t, "event") : "?");
}

static void print_triggers(const json_t *list)
{
    static const char *const headers[] = {"PIPELINE", "KIND", "WATCHES", "WHEN", "NEXT"};
    cli_table_t *t = cli_table_new(headers, 5);
    size_t i;
    json_t *tr;
    json_array_foreach(list, i, tr)
    {
        char *spec = trigger_spec(tr);
        char next[64] = "-";
        int64_t at = 0;
        if (json_is_true(json_object_get(tr, "paused")))
            snprintf(next, sizeof next, "paused");
        else if (cli_jint(tr, "next_fire_unix_ms", &at))
            fmt_time(at, next, sizeof next);
        else if (cli_jint(tr, "waiting_files", &at) && at > 0)
            snprintf(next, sizeof next, "%lld file%s waiting", (long long)at, at == 1 ? "" : "s");
        cli_table_add(t, cli_jstr(tr, "pipeline"));
        cli_table_add(t, cli_jstr(tr, "kind"));
        cli_table_add(t, spec);
        cli_table_add(t, cli_jstr(tr, "when"));
        cli_table_add(t, next);
        free(spec);
    }
    cli_table_print(t, stdout);
    cli_table_destroy(&t);
}

static void print_decisions(const json_t *list)
{
    static const char *const headers[] = {"TIME", "TRIGGER", "DECISION", "RUN", "WHY"};
    cli_table_t *t = cli_table_new(headers, 5);
    /* Oldest first, as a log reads. */
    for (size_t i = json_array_size(list); i-- > 0;) {
        const json_t *d = json_array_get(list, i);
        char when[64];
        int64_t at = 0, run = 0;
        cli_jint(d, "at_unix_ms", &at);
        fmt_time(at, when, sizeof when);
        cli_table_add(t, when);
        cli_table_add(t, cli_jstr(d, "what"));
        cli_table_add(t, cli_jstr(d, "decision"));
        if (cli_jint(d, "run_id", &run))
            cli_table_addf(t, "%lld", (long long)run);
        else
            cli_table_add(t, "");
        cli_table_add(t, cli_jstr(d, "reason"));
    }
    cli_table_print(t, stdout);
    cli_table_destroy(&t);
}

static int explain(loom_cli_t *cli, const char *pipeline, int64_t limit)
{
    char *esc = cli_url_escape(pipeline);
    char *path = loom_xasprintf("/api/v1/pipelines/%s/decisions?limit=%lld", esc, (long long)limit);
    free(esc);
    cli_http_resp_t r;
    int rc = cli_fetch(cli, "GET", path, NULL, &r);
    free(path);
    if (rc == CLI_EXIT_OK) {
        if (cli->json) {
            cli_print_json(r.json);
        } else {
            json_t *list = cli_jarr(r.json, "decisions");
            char *safe = cli_sanitize(pipeline);
            if (json_is_true(json_object_get(r.json, "paused")))
                printf("%s is paused: its triggers start no runs (loom resume %s)\n", safe, safe);
            if (json_array_size(list) == 0)
                printf("no trigger has fired for %s yet\n", safe);
            else
                print_decisions(list);
            free(safe);
        }
    }
    cli_http_resp_free(&r);
    return rc;
}

int cmd_triggers(loom_cli_t *cli, int argc, char **argv)
{
    enum { OPT_EXPLAIN = 1, OPT_LIMIT };
    static const struct option longopts[] = {{"explain", required_argument, NULL, OPT_EXPLAIN},
                                             {"limit", required_argument, NULL, OPT_LIMIT},
                                             CLI_COMMON_LONGOPTS,
                                             {0}};
    const char *pipeline = NULL;
    int64_t limit = 20;
    cli_opts_begin(cli, argv);
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (c == OPT_EXPLAIN) {
            pipeline = optarg;
        } else if (c == OPT_LIMIT) {
            int rc = cli_opt_limit(cli, optarg, &limit);
            if (rc >= 0) return rc;
        } else {
            int rc = cli_opt_common(cli, c);
            if (rc >= 0) return rc;
        }
    }
    if (optind < argc) return cli_usage_error(cli, "unexpected argument '%s'", argv[optind]);
    if (pipeline) return explain(cli, pipeline, limit);
    return cli_show_list(cli, "/api/v1/triggers", "triggers",
                         "no triggers (add `triggers:` to a DAG file and submit it)",
                         print_triggers);
}

/* "training: started run 12; serving: skipped (cooldown ...)" */
static char *outcome_text(const json_t *outcome)
{
    loom_buf_t b = {0};
    size_t i;
    json_t *o;
    json_array_foreach(outcome, i, o)
    {
        int64_t run = 0;
        loom_buf_printf(&b, "%s%s: %s", i ? "; " : "", cli_jstr(o, "pipeline"),
                        cli_jstr(o, "decision"));
        if (cli_jint(o, "run_id", &run)) loom_buf_printf(&b, " run %lld", (long long)run);
        if (cli_jstr(o, "reason")) loom_buf_printf(&b, " (%s)", cli_jstr(o, "reason"));
    }
    return b.data ? loom_buf_steal(&b) : loom_xstrdup("no pipeline listens");
}

static void print_events(const json_t *list)
{
    static const char *const headers[] = {"ID", "NAME", "SOURCE", "RECEIVED", "OUTCOME"};
    cli_table_t *t = cli_table_new(headers, 5);
    cli_table_align_right(t, 0);
    uint64_t now = loom_unix_ms();
    size_t i;
    json_t *e;
    json_array_foreach(list, i, e)
    {
        int64_t at = 0;
        char ago[32];
        cli_jint(e, "received_unix_ms", &at);
        cli_fmt_ago(now, at, ago, sizeof ago);
        char *out = outcome_text(cli_jarr(e, "outcome"));
        cli_table_add_int(t, e, "id");
        cli_table_add(t, cli_jstr(e, "name"));
        cli_table_add(t, cli_jstr(e, "source"));
        cli_table_add(t, ago);
        cli_table_add(t, out);
        free(out);
    }
    cli_table_print(t, stdout);
    cli_table_destroy(&t);
}

/* `loom events send NAME [-d JSON | --data-file FILE] [--key KEY]`. */
static int send_event(loom_cli_t *cli, int argc, char **argv)
{
    enum { OPT_KEY = 1, OPT_FILE };
    static const struct option longopts[] = {{"data", required_argument, NULL, 'd'},
                                             {"data-file", required_argument, NULL, OPT_FILE},
                                             {"key", required_argument, NULL, OPT_KEY},
                                             CLI_COMMON_LONGOPTS,
                                             {0}};
    const char *data = NULL, *file = NULL, *key = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "hd:", longopts, NULL)) != -1) {
        if (c == 'd')
            data = optarg;
        else if (c == OPT_FILE)
            file = optarg;
        else if (c == OPT_KEY)
            key = optarg;
        else {
            int rc = cli_opt_common(cli, c);
            if (rc >= 0) return rc;
        }
    }
    if (argc - optind != 1) return cli_usage_error(cli, "events send wants one event NAME");
    if (data && file)
        return cli_usage_error(cli, "give the payload with -d or --data-file, not both");
    json_error_t err;
    json_t *body = NULL;
    if (file)
        body = strcmp(file, "-") == 0 ? json_loadf(stdin, 0, &err) : json_load_file(file, 0, &err);
    else
        body = json_loads(data ? data : "{}", 0, &err);
    if (!body || !json_is_object(body)) {
        if (body)
            cli_error("the event payload must be a JSON object");
        else
            cli_error("%s: line %d, column %d: %s", file ? file : "-d", err.line, err.column,
                      err.text);
        json_decref(body);
        return CLI_EXIT_USAGE;
    }
    if (key) json_object_set_new(body, "event_id", json_string(key));
    char *esc = cli_url_escape(argv[optind]);
    char *path = loom_xasprintf("/api/v1/events/%s", esc);
    free(esc);
    cli_http_resp_t r;
    int rc = cli_fetch(cli, "POST", path, body, &r);
    free(path);
    json_decref(body);
    if (rc == CLI_EXIT_OK) {
        if (cli->json) {
            cli_print_json(r.json);
        } else {
            int64_t id = 0;
            cli_jint(r.json, "event_id", &id);
            char *out = outcome_text(cli_jarr(r.json, "outcome"));
            char *safe = cli_sanitize(out);
            printf("event %lld%s: %s\n", (long long)id,
                   json_is_true(json_object_get(r.json, "duplicate")) ? " (a repeat: nothing new)"
                                                                      : "",
                   safe);
            free(safe);
            free(out);
        }
    }
    cli_http_resp_free(&r);
    return rc;
}

int cmd_events(loom_cli_t *cli, int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "send") == 0) {
        cli_opts_begin(cli, argv + 1);
        snprintf(cli->prog, sizeof cli->prog, "loom events send");
        return send_event(cli, argc - 1, argv + 1);
    }
    enum { OPT_NAME = 1, OPT_LIMIT };
    static const struct option longopts[] = {{"name", required_argument, NULL, OPT_NAME},
                                             {"limit", required_argument, NULL, OPT_LIMIT},
                                             CLI_COMMON_LONGOPTS,
                                             {0}};
    const char *name = NULL;
    int64_t limit = 20;
    cli_opts_begin(cli, argv);
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (c == OPT_NAME) {
            name = optarg;
        } else if (c == OPT_LIMIT) {
            int rc = cli_opt_limit(cli, optarg, &limit);
            if (rc >= 0) return rc;
        } else {
            int rc = cli_opt_common(cli, c);
            if (rc >= 0) return rc;
        }
    }
    if (optind < argc) return cli_usage_error(cli, "unknown subcommand '%s' (send)", argv[optind]);
    char *esc = name ? cli_url_escape(name) : NULL;
    char *path = loom_xasprintf("/api/v1/events?limit=%lld%s%s", (long long)limit,
                                esc ? "&name=" : "", esc ? esc : "");
    free(esc);
    int rc = cli_show_list(cli, path, "events", "no events yet", print_events);
    free(path);
    return rc;
}

int cmd_pause(loom_cli_t *cli, int argc, char **argv)
{
    bool pause = strcmp(argv[0], "pause") == 0;
    int stop = cli_opts_common_only(cli, argc, argv);
    if (stop >= 0) return stop;
    if (argc - optind != 1) return cli_usage_error(cli, "wants one PIPELINE");
    char *esc = cli_url_escape(argv[optind]);
    char *path = loom_xasprintf("/api/v1/pipelines/%s/%s", esc, pause ? "pause" : "resume");
    free(esc);
    cli_http_resp_t r;
    int rc = cli_fetch(cli, "POST", path, NULL, &r);
    free(path);
    if (rc == CLI_EXIT_OK) {
        if (cli->json) {
            cli_print_json(r.json);
        } else {
            char *safe = cli_sanitize(argv[optind]);
            printf(pause ? "%s is paused: its triggers start no runs\n"
                         : "%s is resumed: its triggers start runs again\n",
                   safe);
            free(safe);
        }
    }
    cli_http_resp_free(&r);
    return rc;
}
