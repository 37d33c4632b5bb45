/* `loom submit FILE` sends a DAG file to loomd; `loom validate FILE...`
 * checks files offline with the same parser loomd uses. */
#include "cli.h"
#include "fmt.h"
#include "table.h"

#include "loom/dag.h"
#include "loom/err.h"
#include "loom/util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash && slash[1] ? slash + 1 : path;
}

/* Prints a 422's diagnostics as file:line:col: error: message. loomd names
 * the file by the base name we sent; show the path the user typed instead,
 * so editors can jump to it. */
static void print_diagnostics(const json_t *resp, const char *path)
{
    json_t *diags = cli_jarr(resp, "diagnostics");
    size_t i;
    json_t *d;
    if (!diags || json_array_size(diags) == 0) {
        const char *msg = cli_jstr(resp, "error");
        fprintf(stderr, "%s: error: %s\n", path, msg ? msg : "invalid DAG");
        return;
    }
    json_array_foreach(diags, i, d)
    {
        const char *file = cli_jstr(d, "file");
        const char *msg = cli_jstr(d, "message");
        if (!file || strcmp(file, base_name(path)) == 0) file = path;
        char *safe_file = cli_sanitize(file);
        char *safe_msg = cli_sanitize(msg ? msg : "invalid DAG");
        int64_t line = 0, col = 0;
        cli_jint(d, "line", &line);
        cli_jint(d, "col", &col);
        if (line > 0 && col > 0)
            fprintf(stderr, "%s:%lld:%lld: error: %s\n", safe_file, (long long)line, (long long)col,
                    safe_msg);
        else if (line > 0)
            fprintf(stderr, "%s:%lld: error: %s\n", safe_file, (long long)line, safe_msg);
        else
            fprintf(stderr, "%s: error: %s\n", safe_file, safe_msg);
        free(safe_file);
        free(safe_msg);
    }
}

static void print_submitted(const json_t *resp)
{
    const char *name = cli_jstr(resp, "pipeline");
    int64_t version = 0, tasks = 0;
    cli_jint(resp, "version", &version);
    cli_jint(resp, "tasks", &tasks);
    char *safe = cli_sanitize(name ? name : "?");
    if (json_is_false(json_object_get(resp, "created")))
        printf("%s is unchanged (version %lld)\n", safe, (long long)version);
    else
        printf("submitted %s version %lld (%lld task%s)\n", safe, (long long)version,
               (long long)tasks, tasks == 1 ? "" : "s");
    free(safe);
}

static int submit_file(loom_cli_t *cli, const char *path)
{
    char *why = NULL;
    size_t len = 0;
    char *src = cli_read_dag(path, &len, &why);
    if (!src) {
        cli_error("%s: %s", path, why);
        free(why);
        return CLI_EXIT_FAIL;
    }
    json_t *source = json_stringn(src, len);
    free(src);
    if (!source) {
        cli_error("%s: not UTF-8 text", path);
        return CLI_EXIT_FAIL;
    }
    json_t *body = json_object();
    json_object_set_new(body, "file", json_string(base_name(path)));
    json_object_set_new(body, "source", source);
    cli_http_resp_t r;
    int rc = cli_call(cli, "POST", "/api/v1/pipelines", body, CLI_API_TIMEOUT_S, &r);
    json_decref(body);
    if (rc != CLI_EXIT_OK) goto out;
    if (r.status == 422) {
        if (cli->json && r.json) cli_print_json(r.json);
        print_diagnostics(r.json, path);
        rc = CLI_EXIT_FAIL;
        goto out;
    }
    rc = cli_check(cli, &r);
    if (rc != CLI_EXIT_OK) goto out;
    if (cli->json)
        cli_print_json(r.json);
    else
        print_submitted(r.json);
out:
    cli_http_resp_free(&r);
    return rc;
}

int cmd_submit(loom_cli_t *cli, int argc, char **argv)
{
    int stop = cli_opts_common_only(cli, argc, argv);
    if (stop >= 0) return stop;
    if (optind >= argc) return cli_usage_error(cli, "missing FILE");
    if (argc - optind > 1) return cli_usage_error(cli, "one FILE at a time");
    return submit_file(cli, argv[optind]);
}
