/* `loom run PIPELINE` starts a run (and with --wait follows it to the end);
 * `loom cancel RUN` stops one. */
#include "cli.h"
#include "fmt.h"
#include "table.h"

#include "loom/util.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Seconds loomd holds each long poll; the HTTP timeout leaves it slack. */
#define WAIT_POLL_S 60
#define WAIT_SLACK_S 30

/* Long-polls the run until its state is final. Returns an exit status and,
 * on success, the final run in *out (caller decrefs). */
static int wait_run(loom_cli_t *cli, long long id, json_t **out)
{
    /* Waiting, only the run's state matters: its tasks come once at the end. */
    char *path = loom_xasprintf("/api/v1/runs/%lld?wait=%d&tasks=0", id, WAIT_POLL_S);
    int rc;
    for (;;) {
        cli_http_resp_t r;
        rc = cli_call(cli, "GET", path, NULL, WAIT_POLL_S + WAIT_SLACK_S, &r);
        if (rc == CLI_EXIT_OK) rc = cli_check(cli, &r);
        const char *state = cli_jstr(r.json, "state");
        if (rc == CLI_EXIT_OK && !state) {
            cli_error("unexpected answer from loomd: run %lld has no state", id);
            rc = CLI_EXIT_FAIL;
        }
        if (rc == CLI_EXIT_OK && cli_run_state_final(state)) {
            cli_http_resp_free(&r);
            char *full = loom_xasprintf("/api/v1/runs/%lld", id);
            rc = cli_fetch(cli, "GET", full, NULL, &r);
            free(full);
            if (rc == CLI_EXIT_OK) *out = json_incref(r.json);
            cli_http_resp_free(&r);
            break;
        }
        cli_http_resp_free(&r);
        if (rc != CLI_EXIT_OK) break;
    }
    free(path);
    return rc;
}

static void print_logs(loom_cli_t *cli, long long id, const json_t *run)
{
    size_t i;
    json_t *task;
    bool first = true;
    json_array_foreach(cli_jarr(run, "tasks"), i, task)
    {
        if (!cli_jstr(task, "name")) continue;
        if (!first) putchar('\n'); /* a blank line between sections, as tail does */
        first = false;
        /* A log that cannot be fetched is reported; the others still print. */
        cli_print_task_log(cli, id, task);
    }
}

/* The part of `loom run` after the run exists. */
static int follow_run(loom_cli_t *cli, long long id, bool logs)
{
    json_t *final = NULL;
    if (!cli->json && isatty(STDOUT_FILENO) == 1) {
        /* In a terminal: the live view while waiting (cmd_watch.c); it
         * ends showing the final states, so no table after it. */
        int rc = cli_watch_run(cli, id, &final);
        if (!final) return rc;
        if (logs) {
            putchar('\n');
            print_logs(cli, id, final);
        }
        json_decref(final);
        return rc;
    }
    int rc = wait_run(cli, id, &final);
    if (rc != CLI_EXIT_OK) return rc;
    if (logs) {
        print_logs(cli, id, final);
        if (!cli->json) putchar('\n');
    }
    if (cli->json)
        cli_print_json(final);
    else
        cli_print_run(final);
    const char *state = cli_jstr(final, "state");
    rc = strcmp(state, "succeeded") == 0 ? CLI_EXIT_OK : CLI_EXIT_FAIL;
    json_decref(final);
    return rc;
}

static int start_run(loom_cli_t *cli, const char *pipeline, int64_t version, json_t *params,
                     bool no_cache, bool wait, bool logs)
{
    json_t *body = json_object();
    if (no_cache) json_object_set_new(body, "no_cache", json_true());
    if (version > 0) json_object_set_new(body, "version", json_integer((json_int_t)version));
    if (json_object_size(params)) json_object_set(body, "params", params);
    char *esc = cli_url_escape(pipeline);
    char *path = loom_xasprintf("/api/v1/pipelines/%s/runs?tasks=0", esc);
    free(esc);
    cli_http_resp_t r;
    int rc = cli_fetch(cli, "POST", path, body, &r);
    free(path);
    json_decref(body);
    if (rc != CLI_EXIT_OK) goto out;
    json_t *run = cli_jobj(r.json, "run");
    int64_t id = 0, ver = 0;
    if (!cli_jint(run, "id", &id) || id <= 0) {
        cli_error("unexpected answer from loomd: no run id");
        rc = CLI_EXIT_FAIL;
        goto out;
    }
    if (cli->json && !wait) {
        cli_print_json(r.json);
        goto out;
    }
    if (!cli->json) {
        cli_jint(run, "version", &ver);
        const char *name = cli_jstr(run, "pipeline");
        char *safe = cli_sanitize(name ? name : pipeline);
        printf("run %lld started (%s v%lld)\n", (long long)id, safe, (long long)ver);
        free(safe);
        /* Seen now, not after the run: the wait may be long. */
        fflush(stdout);
    }
    if (wait) rc = follow_run(cli, (long long)id, logs);
out:
    cli_http_resp_free(&r);
    return rc;
}

int cmd_run(loom_cli_t *cli, int argc, char **argv)
{
    enum { OPT_VERSION = 1, OPT_WAIT, OPT_LOGS, OPT_NO_CACHE };
    static const struct option longopts[] = {{"version", required_argument, NULL, OPT_VERSION},
                                             {"param", required_argument, NULL, 'p'},
                                             {"wait", no_argument, NULL, OPT_WAIT},
                                             {"logs", no_argument, NULL, OPT_LOGS},
                                             {"no-cache", no_argument, NULL, OPT_NO_CACHE},
                                             CLI_COMMON_LONGOPTS,
                                             {0}};
    int64_t version = 0;
    bool wait = false, logs = false, no_cache = false;
    json_t *params = json_object();
    int rc = -1;
    cli_opts_begin(cli, argv);
    int c;
    while (rc < 0 && (c = getopt_long(argc, argv, "hp:", longopts, NULL)) != -1) {
        if (c == 'p') {
            /* Sent as text: loomd converts it to the parameter's declared type. */
            const char *eq = strchr(optarg, '=');
            if (!eq || eq == optarg)
                rc = cli_usage_error(cli, "-p wants NAME=VALUE, not '%s'", optarg);
            else
                json_object_setn_new(params, optarg, (size_t)(eq - optarg), json_string(eq + 1));
        } else if (c == OPT_VERSION) {
            if (loom_parse_i64(optarg, 1, INT64_MAX, &version) != 0)
                rc = cli_usage_error(cli, "--version wants a version number, not '%s'", optarg);
        } else if (c == OPT_WAIT) {
            wait = true;
        } else if (c == OPT_LOGS) {
            wait = logs = true;
        } else if (c == OPT_NO_CACHE) {
            no_cache = true;
        } else {
            rc = cli_opt_common(cli, c);
        }
    }
    if (rc < 0 && optind >= argc) rc = cli_usage_error(cli, "missing PIPELINE");
    if (rc < 0 && argc - optind > 1) rc = cli_usage_error(cli, "one PIPELINE at a time");
    if (rc < 0) rc = start_run(cli, argv[optind], version, params, no_cache, wait, logs);
    json_decref(params);
    return rc;
}

static void print_cancelling(long long id, const char *state)
{
    char *safe = cli_sanitize(state ? state : "?");
    printf("run %lld is being cancelled (state %s)\n", id, safe);
    free(safe);
}

int cmd_cancel(loom_cli_t *cli, int argc, char **argv)
{
    int stop = cli_opts_common_only(cli, argc, argv);
    if (stop >= 0) return stop;
    if (optind >= argc) return cli_usage_error(cli, "missing RUN");
    if (argc - optind > 1) return cli_usage_error(cli, "one RUN at a time");
    long long id;
    if (!cli_parse_run_id(cli, argv[optind], &id)) return CLI_EXIT_USAGE;
    char *path = loom_xasprintf("/api/v1/runs/%lld/cancel", id);
    json_t *body = json_object();
    cli_http_resp_t r;
    int rc = cli_fetch(cli, "POST", path, body, &r);
    json_decref(body);
    free(path);
    if (rc == CLI_EXIT_OK) {
        const char *state = cli_jstr(r.json, "state");
        if (cli->json)
            cli_print_json(r.json);
        else if (state && strcmp(state, "cancelled") == 0)
            printf("run %lld cancelled\n", id);
        else
            /* Running attempts are being killed on their agents; the run
             * ends when they report back. */
            print_cancelling(id, state);
    }
    cli_http_resp_free(&r);
    return rc;
}
