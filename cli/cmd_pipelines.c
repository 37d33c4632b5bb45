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

/* The origin of a version: "git 1a2b3c4d5e6f (dirty)", or "-". */
static void add_git(cli_table_t *t, const json_t *v)
{
    json_t *git = cli_jobj(v, "git");
    const char *commit = cli_jstr(git, "commit");
    if (!commit) {
        cli_table_add(t, NULL);
        return;
    }
    json_t *dirty = json_object_get(git, "dirty");
    cli_table_addf(t, "%.*s%s", HASH_SHOWN, commit, json_is_true(dirty) ? " (dirty)" : "");
}

static void print_versions(const json_t *versions)
{
    static const char *const headers[] = {"VERSION", "TASKS", "HASH", "BUNDLE", "GIT", "CREATED"};
    uint64_t now = loom_unix_ms();
    cli_table_t *t = cli_table_new(headers, 6);
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
        const char *bundle = cli_jstr(v, "bundle");
        cli_table_add_int(t, v, "version");
        cli_table_add_int(t, v, "tasks");
        if (hash)
            cli_table_addf(t, "%.*s", HASH_SHOWN, hash);
        else
            cli_table_add(t, NULL);
        if (bundle)
            cli_table_addf(t, "%.*s", HASH_SHOWN, bundle);
        else
            cli_table_add(t, NULL);
        add_git(t, v);
        cli_table_add(t, ago);
    }
    cli_table_print(t, stdout);
    cli_table_destroy(&t);
}

static void print_header(const json_t *p)
{
    const char *name = cli_jstr(p, "name");
    int64_t latest = 0;
    cli_jint(p, "latest_version", &latest);
    char *safe = cli_sanitize(name ? name : "?");
    printf("pipeline %s  latest version %lld\n", safe, (long long)latest);
    free(safe);
}

static void print_history(const json_t *p)
{
    print_header(p);
    json_t *versions = cli_jarr(p, "versions");
    if (versions && json_array_size(versions) > 0) {
        putchar('\n');
        print_versions(versions);
    }
}

static void print_pipeline(const json_t *p)
{
    print_history(p);
    const char *source = cli_jstr(p, "source");
    int64_t version = 0;
    cli_jint(p, "version", &version);
    if (source) {
        /* The source as stored: it is the user's own YAML, shown verbatim. */
        printf("\n--- source (version %lld) ---\n%s", (long long)version, source);
        size_t n = strlen(source);
        if (n > 0 && source[n - 1] != '\n') putchar('\n');
    }
}

static int show(loom_cli_t *cli, const char *name, int64_t version, bool history)
{
    char *esc = cli_url_escape(name);
    char *path = version
                     ? loom_xasprintf("/api/v1/pipelines/%s?version=%lld", esc, (long long)version)
                     : loom_xasprintf("/api/v1/pipelines/%s", esc);
    free(esc);
    int rc = cli_show(cli, path, history ? print_history : print_pipeline);
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
    enum { OPT_VERSION = 1 };
    static const struct option longopts[] = {
        {"version", required_argument, NULL, OPT_VERSION}, CLI_COMMON_LONGOPTS, {0}};
    int64_t version = 0;
    cli_opts_begin(cli, argv);
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (c == OPT_VERSION) {
            if (loom_parse_i64(optarg, 1, UINT32_MAX, &version) != 0)
                return cli_usage_error(cli, "--version wants a version number, not '%s'", optarg);
        } else {
            int rc = cli_opt_common(cli, c);
            if (rc >= 0) return rc;
        }
    }
    if (optind >= argc) return list(cli);
    const char *sub = argv[optind];
    bool history = strcmp(sub, "history") == 0;
    if (!history && strcmp(sub, "show") != 0)
        return cli_usage_error(cli, "unknown subcommand '%s' (show, history)", sub);
    if (argc - optind < 2) return cli_usage_error(cli, "missing NAME");
    if (argc - optind > 2) return cli_usage_error(cli, "one NAME at a time");
    return show(cli, argv[optind + 1], version, history);
}
