/* `loom logs RUN TASK` prints a task's output, and with --follow keeps
 * printing it as the agent sends it, until the attempt ends. */
#include "cli.h"
#include "fmt.h"
#include "table.h"

#include "loom/util.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Streams one task's log to stdout. */
static int stream_log(loom_cli_t *cli, long long run, const char *task, int64_t attempt,
                      bool follow, bool timestamps, cli_http_resp_t *r)
{
    char *esc = cli_url_escape(task);
    loom_buf_t path = {0};
    loom_buf_printf(&path, "/api/v1/runs/%lld/tasks/%s/log", run, esc);
    free(esc);
    const char *sep = "?";
    if (attempt > 0) {
        loom_buf_printf(&path, "%sattempt=%lld", sep, (long long)attempt);
        sep = "&";
    }
    if (follow) {
        loom_buf_printf(&path, "%sfollow=1", sep);
        sep = "&";
    }
    if (timestamps) loom_buf_printf(&path, "%stimestamps=1", sep);
    char *url = cli_url(cli, path.data);
    loom_buf_free(&path);
    fflush(stdout);
    int err = cli_http_stream(url, stdout, r);
    free(url);
    if (err == 0 && r->status >= 200 && r->status < 300) return CLI_EXIT_OK;
    return cli_stream_failed(cli, err, r);
}

int cli_print_task_log(loom_cli_t *cli, long long run_id, const json_t *task)
{
    const char *name = cli_jstr(task, "name");
    if (!name) return CLI_EXIT_FAIL;
    const char *state = cli_jstr(task, "state");
    char outcome[48] = "";
    int64_t v;
    if (cli_jint(task, "signal", &v) && v > 0) {
        char sig[32];
        cli_fmt_exit(task, sig, sizeof sig);
        snprintf(outcome, sizeof outcome, ", killed by %s", sig);
    } else if (cli_jint(task, "exit_code", &v)) {
        snprintf(outcome, sizeof outcome, ", exit %lld", (long long)v);
    }
    char *head = loom_xasprintf("==> %s (%s%s) <==", name, state ? state : "?", outcome);
    char *safe = cli_sanitize(head);
    printf("%s\n", safe);
    free(safe);
    free(head);
    /* A task that never started has no log to ask for. */
    int64_t attempts;
    if (cli_jint(task, "attempts", &attempts) && attempts == 0) return CLI_EXIT_OK;
    cli_http_resp_t r;
    int rc = stream_log(cli, run_id, name, 0, false, false, &r);
    /* Keep the next header on a line of its own. */
    if (rc == CLI_EXIT_OK && r.streamed > 0 && r.last != '\n') putchar('\n');
    cli_http_resp_free(&r);
    return rc;
}

int cmd_logs(loom_cli_t *cli, int argc, char **argv)
{
    enum { OPT_ATTEMPT = 1, OPT_TIMESTAMPS };
    static const struct option longopts[] = {{"follow", no_argument, NULL, 'f'},
                                             {"attempt", required_argument, NULL, OPT_ATTEMPT},
                                             {"timestamps", no_argument, NULL, OPT_TIMESTAMPS},
                                             CLI_COMMON_LONGOPTS,
                                             {0}};
    bool follow = false, timestamps = false;
    int64_t attempt = 0;
    cli_opts_begin(cli, argv);
    int c;
    while ((c = getopt_long(argc, argv, "fh", longopts, NULL)) != -1) {
        if (c == 'f') {
            follow = true;
        } else if (c == OPT_TIMESTAMPS) {
            timestamps = true;
        } else if (c == OPT_ATTEMPT) {
            if (loom_parse_i64(optarg, 1, INT32_MAX, &attempt) != 0)
                return cli_usage_error(cli, "--attempt wants a number from 1, not '%s'", optarg);
        } else {
            int rc = cli_opt_common(cli, c);
            if (rc >= 0) return rc;
        }
    }
    if (argc - optind < 2)
        return cli_usage_error(cli, optind >= argc ? "missing RUN and TASK" : "missing TASK");
    if (argc - optind > 2) return cli_usage_error(cli, "too many arguments");
    long long run;
    if (!cli_parse_run_id(cli, argv[optind], &run)) return CLI_EXIT_USAGE;
    cli_http_resp_t r;
    int rc = stream_log(cli, run, argv[optind + 1], attempt, follow, timestamps, &r);
    cli_http_resp_free(&r);
    return rc;
}
