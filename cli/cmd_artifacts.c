/* `loom artifacts`, `loom lineage`, `loom models`, `loom metrics` and
 * `loom gc`: what runs left behind, where it came from, which versions of
 * a model exist and which one is the champion, and keeping it all in
 * bounds. */
#include "cli.h"
#include "fmt.h"
#include "table.h"

#include "loom/util.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void short_hash(const char *h, char out[16])
{
    snprintf(out, 16, "%.12s", h ? h : "-");
}

static void print_artifacts(const json_t *list)
{
    static const char *const headers[] = {"TASK", "PATH", "SIZE", "HASH", "NOTE"};
    cli_table_t *t = cli_table_new(headers, 5);
    cli_table_align_right(t, 2);
    size_t i;
    json_t *a;
    json_array_foreach(list, i, a)
    {
        int64_t size = 0, from = 0;
        char sz[32], h[16];
        cli_jint(a, "size", &size);
        cli_fmt_bytes((uint64_t)size, sz, sizeof sz);
        short_hash(cli_jstr(a, "hash"), h);
        cli_table_add(t, cli_jstr(a, "task"));
        cli_table_add(t, cli_jstr(a, "path"));
        cli_table_add(t, sz);
        cli_table_add(t, h);
        if (cli_jint(a, "cached_from_run", &from) && from > 0)
            cli_table_addf(t, "cached from run %lld", (long long)from);
        else
            cli_table_add(t, "");
    }
    cli_table_print(t, stdout);
    cli_table_destroy(&t);
}

/* Writes to FILE through a temporary file renamed at the end, so a failed
 * download leaves nothing half-written. */
static int get_artifact(loom_cli_t *cli, long long run, const char *task, const char *path,
                        const char *out)
{
    char *et = cli_url_escape(task), *ep = cli_url_escape(path);
    char *rel = loom_xasprintf("/api/v1/runs/%lld/artifacts?task=%s&path=%s", run, et, ep);
    free(et);
    free(ep);
    char *url = cli_url(cli, rel);
    free(rel);
    FILE *f = stdout;
    char *tmp = NULL;
    if (out && strcmp(out, "-") != 0) {
        tmp = loom_xasprintf("%s.loom-XXXXXX", out);
        int fd = mkstemp(tmp);
        f = fd >= 0 ? fdopen(fd, "wb") : NULL;
        if (!f) {
            cli_error("cannot write %s: %s", out, strerror(errno));
            if (fd >= 0) close(fd);
            free(tmp);
            free(url);
            return CLI_EXIT_FAIL;
        }
    }
    cli_http_resp_t r;
    int err = cli_http_stream(url, f, &r);
    free(url);
    bool ok = err == 0 && r.status >= 200 && r.status < 300;
    int rc = ok ? CLI_EXIT_OK : cli_stream_failed(cli, err, &r);
    if (tmp) {
        if (fflush(f) != 0 || fsync(fileno(f)) != 0) ok = false;
        fclose(f);
        if (ok && rename(tmp, out) != 0) {
            cli_error("cannot write %s: %s", out, strerror(errno));
            ok = false;
            rc = CLI_EXIT_FAIL;
        }
        if (!ok) unlink(tmp);
        free(tmp);
    }
    cli_http_resp_free(&r);
    return rc;
}

int cmd_artifacts(loom_cli_t *cli, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"output", required_argument, NULL, 'o'}, CLI_COMMON_LONGOPTS, {0}};
    const char *out = NULL;
    cli_opts_begin(cli, argv);
    int c;
    while ((c = getopt_long(argc, argv, "ho:", longopts, NULL)) != -1) {
        if (c == 'o') {
            out = optarg;
        } else {
            int rc = cli_opt_common(cli, c);
            if (rc >= 0) return rc;
        }
    }
    long long run;
    if (optind < argc && strcmp(argv[optind], "get") == 0) {
        if (argc - optind != 4) return cli_usage_error(cli, "get wants RUN TASK PATH");
        if (!cli_parse_run_id(cli, argv[optind + 1], &run)) return CLI_EXIT_USAGE;
        return get_artifact(cli, run, argv[optind + 2], argv[optind + 3], out);
    }
    if (out) return cli_usage_error(cli, "-o goes with `artifacts get`");
    if (argc - optind < 1 || argc - optind > 2) return cli_usage_error(cli, "wants RUN [TASK]");
    if (!cli_parse_run_id(cli, argv[optind], &run)) return CLI_EXIT_USAGE;
    char *task = argc - optind == 2 ? cli_url_escape(argv[optind + 1]) : NULL;
    char *path = loom_xasprintf("/api/v1/runs/%lld/artifacts%s%s", run, task ? "?task=" : "",
                                task ? task : "");
    free(task);
    int rc = cli_show_list(cli, path, "artifacts", "no artifacts", print_artifacts);
    free(path);
    return rc;
}

/* ---- lineage ---- */

static void print_lineage(const json_t *o)
{
    json_t *chain = cli_jarr(o, "chain");
    size_t i;
    json_t *a;
    json_array_foreach(chain, i, a)
    {
        const json_t *m = cli_jobj(a, "made_by");
        int64_t run = 0, ver = 0, size = 0;
        char h[16], sz[32];
        cli_jint(a, "run_id", &run);
        cli_jint(m, "version", &ver);
        cli_jint(a, "size", &size);
        cli_fmt_bytes((uint64_t)size, sz, sizeof sz);
        short_hash(cli_jstr(a, "hash"), h);
        char *line = loom_xasprintf(
            "%s%s (%s, %s) made by run %lld task %s (%s v%lld, agent %s, bundle %.12s%s%s)",
            i ? "  <- " : "", cli_jstr(a, "path"), sz, h, (long long)run, cli_jstr(a, "task"),
            cli_jstr(m, "pipeline"), (long long)ver, cli_jstr(m, "agent"),
            cli_jstr(m, "bundle") ? cli_jstr(m, "bundle") : "none",
            cli_jstr(m, "git_commit") ? ", git " : "",
            cli_jstr(m, "git_commit") ? cli_jstr(m, "git_commit") : "");
        char *safe = cli_sanitize(line);
        puts(safe);
        free(safe);
        free(line);
        const json_t *origin = cli_jobj(m, "origin");
        char *params = json_dumps(cli_jobj(m, "params"), JSON_COMPACT | JSON_SORT_KEYS);
        line = loom_xasprintf("      params %s, started by %s", params ? params : "{}",
                              cli_jstr(origin, "kind") ? cli_jstr(origin, "kind") : "?");
        free(params);
        safe = cli_sanitize(line);
        puts(safe);
        free(safe);
        free(line);
        json_t *files = json_object_get(m, "data_files");
        size_t k;
        json_t *fp;
        json_array_foreach(files, k, fp)
        {
            char *l = loom_xasprintf("      data file %s", json_string_value(fp));
            char *sl = cli_sanitize(l);
            puts(sl);
            free(sl);
            free(l);
        }
    }
    json_t *models = cli_jarr(o, "models");
    json_array_foreach(models, i, a)
    {
        int64_t v = 0;
        cli_jint(a, "version", &v);
        char *safe = cli_sanitize(cli_jstr(a, "name"));
        printf("registered as model %s version %lld\n", safe, (long long)v);
        free(safe);
    }
}

int cmd_lineage(loom_cli_t *cli, int argc, char **argv)
{
    int stop = cli_opts_common_only(cli, argc, argv);
    if (stop >= 0) return stop;
    if (argc - optind != 1) return cli_usage_error(cli, "wants HASH or RUN:TASK:PATH");
    const char *arg = argv[optind];
    char *path;
    const char *c1 = strchr(arg, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
    if (c2) {
        char *run = loom_xstrndup(arg, (size_t)(c1 - arg));
        char *task = loom_xstrndup(c1 + 1, (size_t)(c2 - c1 - 1));
        long long id;
        if (!cli_parse_run_id(cli, run, &id)) {
            free(run);
            free(task);
            return CLI_EXIT_USAGE;
        }
        char *et = cli_url_escape(task), *ep = cli_url_escape(c2 + 1);
        path = loom_xasprintf("/api/v1/lineage?run=%lld&task=%s&path=%s", id, et, ep);
        free(et);
        free(ep);
        free(run);
        free(task);
    } else if (strlen(arg) == 64 && strspn(arg, "0123456789abcdef") == 64) {
        path = loom_xasprintf("/api/v1/lineage?hash=%s", arg);
    } else {
        return cli_usage_error(cli, "'%s' is neither a 64-digit hash nor RUN:TASK:PATH", arg);
    }
    int rc = cli_show(cli, path, print_lineage);
    free(path);
    return rc;
}

/* ---- models ---- */

static char *aliases_text(const json_t *aliases)
{
    loom_buf_t b = {0};
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)aliases, k, v)
        loom_buf_printf(&b, "%s%s=v%lld", b.len ? "," : "", k, (long long)json_integer_value(v));
    return b.data ? loom_buf_steal(&b) : loom_xstrdup("");
}

static char *metrics_text(const json_t *m)
{
    loom_buf_t b = {0};
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)m, k, v)
        loom_buf_printf(&b, "%s%s=%g", b.len ? " " : "", k, json_number_value(v));
    return b.data ? loom_buf_steal(&b) : loom_xstrdup("");
}

static void print_models(const json_t *list)
{
    static const char *const headers[] = {"MODEL", "LATEST", "ALIASES", "METRICS", "RUN"};
    cli_table_t *t = cli_table_new(headers, 5);
    size_t i;
    json_t *m;
    json_array_foreach(list, i, m)
    {
        char *al = aliases_text(cli_jobj(m, "aliases")), *mt = metrics_text(cli_jobj(m, "metrics"));
        cli_table_add(t, cli_jstr(m, "name"));
        cli_table_addf(t, "v%lld", (long long)json_integer_value(json_object_get(m, "version")));
        cli_table_add(t, al);
        cli_table_add(t, mt);
        cli_table_add_int(t, m, "run_id");
        free(al);
        free(mt);
    }
    cli_table_print(t, stdout);
    cli_table_destroy(&t);
}

static void print_model(const json_t *o)
{
    const json_t *aliases = cli_jobj(o, "aliases");
    static const char *const headers[] = {"VERSION", "ALIASES", "METRICS", "RUN",
                                          "TASK",    "HASH",    "CREATED"};
    cli_table_t *t = cli_table_new(headers, 7);
    size_t i;
    json_t *v;
    uint64_t now = loom_unix_ms();
    json_array_foreach(cli_jarr(o, "versions"), i, v)
    {
        int64_t ver = 0, created = 0;
        cli_jint(v, "version", &ver);
        cli_jint(v, "created_unix_ms", &created);
        loom_buf_t al = {0};
        const char *k;
        json_t *a;
        json_object_foreach((json_t *)aliases, k, a) if (json_integer_value(a) == ver)
            loom_buf_printf(&al, "%s%s", al.len ? "," : "", k);
        char *mt = metrics_text(cli_jobj(v, "metrics"));
        char h[16], ago[32];
        short_hash(cli_jstr(v, "hash"), h);
        cli_fmt_ago(now, created, ago, sizeof ago);
        cli_table_addf(t, "v%lld", (long long)ver);
        cli_table_add(t, al.data ? al.data : "");
        cli_table_add(t, mt);
        cli_table_add_int(t, v, "run_id");
        cli_table_add(t, cli_jstr(v, "task"));
        cli_table_add(t, h);
        cli_table_add(t, ago);
        loom_buf_free(&al);
        free(mt);
    }
    cli_table_print(t, stdout);
    cli_table_destroy(&t);
}

int cmd_models(loom_cli_t *cli, int argc, char **argv)
{
    int stop = cli_opts_common_only(cli, argc, argv);
    if (stop >= 0) return stop;
    if (optind >= argc)
        return cli_show_list(cli, "/api/v1/models", "models",
                             "no models (a task with `model: {name, path}` registers one)",
                             print_models);
    const char *sub = argv[optind];
    if (strcmp(sub, "show") == 0) {
        if (argc - optind != 2) return cli_usage_error(cli, "show wants NAME");
        char *e = cli_url_escape(argv[optind + 1]);
        char *path = loom_xasprintf("/api/v1/models/%s", e);
        free(e);
        int rc = cli_show(cli, path, print_model);
        free(path);
        return rc;
    }
    if (strcmp(sub, "alias") == 0) {
        if (argc - optind != 4) return cli_usage_error(cli, "alias wants NAME ALIAS VERSION");
        int64_t version;
        const char *vs = argv[optind + 3];
        if (*vs == 'v') vs++;
        if (loom_parse_i64(vs, 1, UINT32_MAX, &version) != 0)
            return cli_usage_error(cli, "VERSION must be a number such as 3, not '%s'",
                                   argv[optind + 3]);
        char *en = cli_url_escape(argv[optind + 1]), *ea = cli_url_escape(argv[optind + 2]);
        char *path = loom_xasprintf("/api/v1/models/%s/aliases/%s", en, ea);
        free(en);
        free(ea);
        json_t *body = json_pack("{s:I}", "version", (json_int_t)version);
        cli_http_resp_t r;
        int rc = cli_fetch(cli, "POST", path, body, &r);
        json_decref(body);
        free(path);
        if (rc == CLI_EXIT_OK) {
            if (cli->json) {
                cli_print_json(r.json);
            } else {
                char *sm = cli_sanitize(argv[optind + 1]), *sa = cli_sanitize(argv[optind + 2]);
                printf("%s %s is now version %lld\n", sm, sa, (long long)version);
                free(sm);
                free(sa);
            }
        }
        cli_http_resp_free(&r);
        return rc;
    }
    return cli_usage_error(cli, "unknown subcommand '%s' (show, alias)", sub);
}

/* ---- metrics ---- */

static void print_metrics(const json_t *list)
{
    /* One column per metric name, in order of first appearance. */
    json_t *names = json_array();
    size_t i;
    json_t *row;
    json_array_foreach(list, i, row)
    {
        const char *k;
        json_t *v;
        json_object_foreach(cli_jobj(row, "metrics"), k, v)
        {
            bool seen = false;
            size_t j;
            json_t *n;
            json_array_foreach(names, j, n) if (strcmp(json_string_value(n), k) == 0) seen = true;
            if (!seen && json_array_size(names) < 12) json_array_append_new(names, json_string(k));
        }
    }
    size_t nc = 3 + json_array_size(names);
    const char **headers = loom_xcalloc(nc, sizeof *headers);
    headers[0] = "RUN";
    headers[1] = "VERSION";
    headers[2] = "TASK";
    for (size_t j = 0; j < json_array_size(names); j++)
        headers[3 + j] = json_string_value(json_array_get(names, j));
    cli_table_t *t = cli_table_new(headers, nc);
    json_array_foreach(list, i, row)
    {
        cli_table_add_int(t, row, "run_id");
        cli_table_add_int(t, row, "version");
        cli_table_add(t, cli_jstr(row, "task"));
        for (size_t j = 0; j < json_array_size(names); j++) {
            json_t *v = json_object_get(cli_jobj(row, "metrics"), headers[3 + j]);
            if (json_is_number(v))
                cli_table_addf(t, "%g", json_number_value(v));
            else
                cli_table_add(t, "");
        }
    }
    cli_table_print(t, stdout);
    cli_table_destroy(&t);
    free(headers);
    json_decref(names);
}

int cmd_metrics(loom_cli_t *cli, int argc, char **argv)
{
    int stop = cli_opts_common_only(cli, argc, argv);
    if (stop >= 0) return stop;
    if (argc - optind != 2) return cli_usage_error(cli, "wants PIPELINE TASK");
    char *ep = cli_url_escape(argv[optind]), *et = cli_url_escape(argv[optind + 1]);
    char *path = loom_xasprintf("/api/v1/pipelines/%s/tasks/%s/metrics?limit=50", ep, et);
    free(ep);
    free(et);
    int rc = cli_show_list(cli, path, "runs", "no successful run of that task reported metrics",
                           print_metrics);
    free(path);
    return rc;
}

/* ---- gc ---- */

int cmd_gc(loom_cli_t *cli, int argc, char **argv)
{
    enum { OPT_KEEP = 1, OPT_AGE, OPT_DRY };
    static const struct option longopts[] = {{"keep-last", required_argument, NULL, OPT_KEEP},
                                             {"max-age", required_argument, NULL, OPT_AGE},
                                             {"dry-run", no_argument, NULL, OPT_DRY},
                                             CLI_COMMON_LONGOPTS,
                                             {0}};
    json_t *body = json_object();
    cli_opts_begin(cli, argv);
    int c, rc = -1;
    while (rc < 0 && (c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        int64_t n;
        uint64_t ms;
        if (c == OPT_KEEP) {
            if (loom_parse_i64(optarg, 1, 1000000, &n) != 0)
                rc = cli_usage_error(cli, "--keep-last wants a number >= 1, not '%s'", optarg);
            else
                json_object_set_new(body, "keep_last", json_integer(n));
        } else if (c == OPT_AGE) {
            if (loom_parse_duration_ms(optarg, &ms) != 0 || ms == 0)
                rc = cli_usage_error(cli, "--max-age wants a duration such as 30d, not '%s'",
                                     optarg);
            else
                json_object_set_new(body, "max_age", json_string(optarg));
        } else if (c == OPT_DRY) {
            json_object_set_new(body, "dry_run", json_true());
        } else {
            rc = cli_opt_common(cli, c);
        }
    }
    if (rc < 0 && optind < argc) rc = cli_usage_error(cli, "unexpected '%s'", argv[optind]);
    if (rc < 0 && !json_object_get(body, "keep_last") && !json_object_get(body, "max_age"))
        rc = cli_usage_error(cli, "give --keep-last N, --max-age DURATION or both");
    if (rc >= 0) {
        json_decref(body);
        return rc;
    }
    cli_http_resp_t r;
    rc = cli_fetch(cli, "POST", "/api/v1/gc", body, &r);
    json_decref(body);
    if (rc == CLI_EXIT_OK) {
        if (cli->json) {
            cli_print_json(r.json);
        } else {
            int64_t runs = 0, objects = 0, bytes = 0;
            cli_jint(r.json, "runs_deleted", &runs);
            cli_jint(r.json, "objects_deleted", &objects);
            cli_jint(r.json, "bytes_freed", &bytes);
            char b[32];
            cli_fmt_bytes((uint64_t)bytes, b, sizeof b);
            bool dry = json_is_true(json_object_get(r.json, "dry_run"));
            printf("%s %lld run%s and %lld object%s, %s %s\n", dry ? "would delete" : "deleted",
                   (long long)runs, runs == 1 ? "" : "s", (long long)objects,
                   objects == 1 ? "" : "s", b, dry ? "to free" : "freed");
        }
    }
    cli_http_resp_free(&r);
    return rc;
}
