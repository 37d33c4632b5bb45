/* `loom pipelines` lists pipelines; `loom pipelines show NAME` shows one
 * pipeline's versions and its latest source. */
#include "cli.h"
#include "fmt.h"
#include "table.h"

#include "loom/util.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define HASH_SHOWN 12

static void print_pipelines(const json_t *pipelines)
{
    static const char *const headers[] = {"NAME", "VERSION", "TASKS", "LAST-RUN", "UPDATED"};
    uint64_t now = loom_unix_ms();
    cli_table_t *t = cli_table_new(headers, 5);
    cli_table_align_right(t, 1);
    cli_table_align_right(t, 2);
    size_t i;
    json_t *p;
    json_array_foreach(pipelines, i, p)
    {
        if (!json_is_object(p)) continue;
        int64_t updated = 0, run_id = 0;
        char ago[32];
        cli_jint(p, "updated_unix_ms", &updated);
        cli_fmt_ago(now, updated, ago, sizeof ago);
        json_t *last = cli_jobj(p, "last_run");
        const char *run_state = cli_jstr(last, "state");
        cli_table_add(t, cli_jstr(p, "name"));
        cli_table_add_int(t, p, "latest_version");
        cli_table_add_int(t, p, "tasks");
        if (cli_jint(last, "id", &run_id))
            cli_table_addf(t, "%lld %s", (long long)run_id, run_state ? run_state : "");
        else
            cli_table_add(t, NULL);
        cli_table_add(t, ago);
    }
    cli_table_print(t, stdout);
    cli_table_destroy(&t);
}

static void print_versions(const json_t *versions)
{
    static const char *const headers[] = {"VERSION", "TASKS", "HASH", "CREATED"};
    uint64_t now = loom_unix_ms();
    cli_table_t *t = cli_table_new(headers, 4);
    cli_table_align_right(t, 0);
    cli_table_align_right(t, 1);
    size_t i;
    json_t *v;
    json_array_foreach(versions, i, v)
    {
        if (!json_is_object(v)) continue;
        int64_t created = 0;
        char ago[32];
        cli_jint(v, "created_unix_ms", &created);
        cli_fmt_ago(now, created, ago, sizeof ago);
        const char *hash = cli_jstr(v, "hash");
        cli_table_add_int(t, v, "version");
        cli_table_add_int(t, v, "tasks");
        if (hash)
            cli_table_addf(t, "%.*s", HASH_SHOWN, hash);
        else
            cli_table_add(t, NULL);
        cli_table_add(t, ago);
    }
    cli_table_print(t, stdout);
    cli_table_destroy(&t);
}

static void print_pipeline(const json_t *p)
{
    const char *name = cli_jstr(p, "name");
    const char *source = cli_jstr(p, "source");
    int64_t latest = 0;
    cli_jint(p, "latest_version", &latest);
    char *safe = cli_sanitize(name ? name : "?");
    printf("pipeline %s  latest version %lld\n", safe, (long long)latest);
    free(safe);
    json_t *versions = cli_jarr(p, "versions");
    if (versions && json_array_size(versions) > 0) {
        putchar('\n');
        print_versions(versions);
    }
    if (source) {
        /* The source as stored: it is the user's own YAML, shown verbatim. */
        printf("\n--- source (version %lld) ---\n%s", (long long)latest, source);
        size_t n = strlen(source);
        if (n > 0 && source[n - 1] != '\n') putchar('\n');
    }
}

static int show(loom_cli_t *cli, const char *name)
{
    char *esc = cli_url_escape(name);
    char *path = loom_xasprintf("/api/v1/pipelines/%s", esc);
    free(esc);
    int rc = cli_show(cli, path, print_pipeline);
    free(path);
    return rc;
}

static int list(loom_cli_t *cli)
{
    return cli_show_list(cli, "/api/v1/pipelines", "pipelines",
                         "no pipelines yet (submit one with `loom submit FILE`)", print_pipelines);
}

int cmd_pipelines(loom_cli_t *cli, int argc, char **argv)
{
    int stop = cli_opts_common_only(cli, argc, argv);
    if (stop >= 0) return stop;
    if (optind >= argc) return list(cli);
    if (strcmp(argv[optind], "show") != 0)
        return cli_usage_error(cli, "unknown subcommand '%s'", argv[optind]);
    if (argc - optind < 2) return cli_usage_error(cli, "missing NAME");
    if (argc - optind > 2) return cli_usage_error(cli, "one NAME at a time");
    return show(cli, argv[optind + 1]);
}
