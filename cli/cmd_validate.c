/* `loom validate FILE...`: checks DAG files offline, like a compiler. */
#include "cli.h"

#include "loom/dag.h"
#include "loom/err.h"
#include "loom/util.h"

#include <stdlib.h>
#include <string.h>

static json_t *diags_json(const loom_diags_t *diags)
{
    json_t *a = json_array();
    for (size_t i = 0; i < diags->n; i++) {
        const loom_diag_t *d = &diags->items[i];
        json_array_append_new(a, json_pack("{s:s?, s:i, s:i, s:s?}", "file", d->file, "line",
                                           d->line, "col", d->col, "message", d->message));
    }
    return a;
}

/* Validates one file; appends its outcome to report (--json) or prints it.
 * Returns true when the file is a valid DAG. */
static bool validate_file(const char *path, json_t *report)
{
    char *why = NULL;
    size_t len = 0;
    char *src = cli_read_dag(path, &len, &why);
    loom_diags_t diags = {0};
    loom_dag_t *dag = NULL;
    if (src) {
        int err = loom_dag_parse(src, len, path, &dag, &diags);
        if (err != 0 && diags.n == 0) loom_diags_add(&diags, path, 0, 0, "%s", loom_strerror(err));
        free(src);
    } else {
        loom_diags_add(&diags, path, 0, 0, "%s", why);
        free(why);
    }
    bool ok = dag != NULL;
    if (report) {
        json_t *entry =
            json_pack("{s:s, s:b, s:o}", "file", path, "ok", ok, "diagnostics", diags_json(&diags));
        if (ok) json_object_set_new(entry, "tasks", json_integer((json_int_t)dag->n_tasks));
        json_array_append_new(report, entry);
    } else {
        if (diags.n > 0) {
            char *text = loom_diags_format(&diags);
            fputs(text, stderr);
            free(text);
        }
        if (ok) printf("%s: ok (%zu task%s)\n", path, dag->n_tasks, dag->n_tasks == 1 ? "" : "s");
    }
    loom_dag_destroy(&dag);
    loom_diags_free(&diags);
    return ok;
}

int cmd_validate(loom_cli_t *cli, int argc, char **argv)
{
    int stop = cli_opts_common_only(cli, argc, argv);
    if (stop >= 0) return stop;
    if (optind >= argc) return cli_usage_error(cli, "missing FILE");
    json_t *report = cli->json ? json_array() : NULL;
    bool all_ok = true;
    for (int i = optind; i < argc; i++)
        if (!validate_file(argv[i], report)) all_ok = false;
    if (report) {
        json_t *doc = json_pack("{s:o}", "files", report);
        cli_print_json(doc);
        json_decref(doc);
    }
    return all_ok ? CLI_EXIT_OK : CLI_EXIT_FAIL;
}
