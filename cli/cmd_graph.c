/* `loom graph FILE [--dot]`: a DAG file's shape, offline. In a terminal,
 * the tasks by level (the longest chain of needs above each); with --dot,
 * or when the output is a pipe or file, Graphviz DOT for `dot -Tsvg`; with
 * --json, the same facts as JSON. */
#include "cli.h"
#include "table.h"

#include "loom/dag.h"
#include "loom/err.h"
#include "loom/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Conditions and lists are shown, but not at any length. */
#define NOTE_MAX 60
/* Beyond this many needs a text line says "+N more". */
#define NEEDS_SHOWN 6

/* level[i]: 0 for a task that needs nothing, else one more than the
 * highest level among its needs. The topological order has every need
 * before its dependents, so one pass suffices. */
static size_t *task_levels(const loom_dag_t *dag, size_t *n_levels)
{
    size_t *level = loom_xcalloc(dag->n_tasks ? dag->n_tasks : 1, sizeof *level);
    *n_levels = 0;
    for (size_t o = 0; o < dag->n_tasks; o++) {
        size_t i = dag->order[o];
        const loom_dag_task_t *t = &dag->tasks[i];
        for (size_t k = 0; k < t->n_needs; k++)
            if (level[t->needs_idx[k]] + 1 > level[i]) level[i] = level[t->needs_idx[k]] + 1;
        if (level[i] + 1 > *n_levels) *n_levels = level[i] + 1;
    }
    return level;
}

/* A short, printable note: cut at NOTE_MAX bytes on a character boundary. */
static char *note(const char *s)
{
    char *safe = cli_sanitize(s);
    size_t n = strlen(safe);
    if (n > NOTE_MAX) {
        n = NOTE_MAX;
        while (n > 0 && ((unsigned char)safe[n] & 0xC0) == 0x80) n--;
        safe[n] = '\0';
        char *cut = loom_xasprintf("%s...", safe);
        free(safe);
        return cut;
    }
    return safe;
}

static const char *const rule_names[] = {"all_success", "all_done", "one_failed"};

/* "foreach params.lrs", "if ...", "all_done": what sets a task apart. */
static void task_notes(const loom_dag_task_t *t, loom_buf_t *b, const char *sep)
{
    const char *fe = t->foreach ? t->foreach : t->foreach_json;
    char *s;
    if (fe) {
        s = note(fe);
        loom_buf_printf(b, "%sforeach %s", b->len ? sep : "", s);
        free(s);
    }
    if (t->cond) {
        s = note(t->cond);
        loom_buf_printf(b, "%sif %s", b->len ? sep : "", s);
        free(s);
    }
    if (t->rule != LOOM_RULE_ALL_SUCCESS)
        loom_buf_printf(b, "%s%s", b->len ? sep : "", rule_names[t->rule]);
}

/* One line: level column, name, what it needs, its notes. */
static void print_task(const loom_dag_task_t *t, const char *lvl, int lw, int width)
{
    loom_buf_t b = {0};
    loom_buf_printf(&b, "  %-*s %-*s", lw, lvl, width, t->name);
    for (size_t k = 0; k < t->n_needs && k < NEEDS_SHOWN; k++)
        loom_buf_printf(&b, "%s%s", k ? ", " : "  <- ", t->needs[k]);
    if (t->n_needs > NEEDS_SHOWN) loom_buf_printf(&b, ", +%zu more", t->n_needs - NEEDS_SHOWN);
    loom_buf_t notes = {0};
    task_notes(t, &notes, "; ");
    if (notes.len) loom_buf_printf(&b, "   (%s)", notes.data);
    while (b.len > 0 && b.data[b.len - 1] == ' ') b.data[--b.len] = '\0';
    puts(b.data);
    loom_buf_free(&b);
    loom_buf_free(&notes);
}

static void print_text(const loom_dag_t *dag)
{
    size_t n_levels, width = 0;
    size_t *level = task_levels(dag, &n_levels);
    for (size_t i = 0; i < dag->n_tasks; i++) {
        size_t w = strlen(dag->tasks[i].name);
        if (w > width) width = w;
    }
    char lvl[24];
    int lw = snprintf(lvl, sizeof lvl, "[%zu]", n_levels ? n_levels - 1 : 0);
    char *name = cli_sanitize(dag->name);
    printf("%s  (%zu task%s, %zu level%s)\n", name, dag->n_tasks, dag->n_tasks == 1 ? "" : "s",
           n_levels, n_levels == 1 ? "" : "s");
    free(name);
    for (size_t l = 0; l < n_levels; l++) {
        bool first = true;
        for (size_t o = 0; o < dag->n_tasks; o++) {
            if (level[dag->order[o]] != l) continue;
            snprintf(lvl, sizeof lvl, first ? "[%zu]" : "", l);
            print_task(&dag->tasks[dag->order[o]], lvl, lw, (int)width);
            first = false;
        }
    }
    free(level);
}

/* A DOT string: quoted, " and \ escaped, a newline as DOT's line break
 * (user text reaches here sanitized, so newlines are ours), other control
 * bytes dropped. */
static void dot_str(loom_buf_t *b, const char *s)
{
    loom_buf_puts(b, "\"");
    for (; *s; s++) {
        if (*s == '\n') {
            loom_buf_puts(b, "\\n");
            continue;
        }
        if (*s == '"' || *s == '\\') loom_buf_puts(b, "\\");
        if ((unsigned char)*s >= 0x20 && *s != 0x7F) loom_buf_append(b, s, 1);
    }
    loom_buf_puts(b, "\"");
}

static void print_dot(const loom_dag_t *dag)
{
    loom_buf_t b = {0};
    loom_buf_puts(&b, "digraph ");
    dot_str(&b, dag->name);
    loom_buf_puts(&b, " {\n  rankdir=LR;\n  node [shape=box, style=rounded];\n");
    for (size_t i = 0; i < dag->n_tasks; i++) {
        const loom_dag_task_t *t = &dag->tasks[i];
        loom_buf_t label = {0};
        loom_buf_puts(&label, t->name);
        loom_buf_t notes = {0};
        task_notes(t, &notes, "\n");
        if (notes.len) loom_buf_printf(&label, "\n%s", notes.data);
        loom_buf_puts(&b, "  ");
        dot_str(&b, t->name);
        loom_buf_puts(&b, " [label=");
        dot_str(&b, label.data);
        if (t->foreach || t->foreach_json) loom_buf_puts(&b, ", shape=box3d");
        if (t->cond) loom_buf_puts(&b, ", style=\"rounded,dashed\"");
        loom_buf_puts(&b, "];\n");
        loom_buf_free(&label);
        loom_buf_free(&notes);
    }
    for (size_t i = 0; i < dag->n_tasks; i++)
        for (size_t k = 0; k < dag->tasks[i].n_needs; k++) {
            loom_buf_puts(&b, "  ");
            dot_str(&b, dag->tasks[i].needs[k]);
            loom_buf_puts(&b, " -> ");
            dot_str(&b, dag->tasks[i].name);
            loom_buf_puts(&b, ";\n");
        }
    loom_buf_puts(&b, "}\n");
    fputs(b.data, stdout);
    loom_buf_free(&b);
}

static void print_json(const loom_dag_t *dag)
{
    size_t n_levels;
    size_t *level = task_levels(dag, &n_levels);
    json_t *tasks = json_array();
    for (size_t o = 0; o < dag->n_tasks; o++) {
        const loom_dag_task_t *t = &dag->tasks[dag->order[o]];
        json_t *needs = json_array();
        for (size_t k = 0; k < t->n_needs; k++)
            json_array_append_new(needs, json_string(t->needs[k]));
        json_t *j = json_pack("{s:s, s:I, s:o, s:s}", "name", t->name, "level",
                              (json_int_t)level[dag->order[o]], "needs", needs, "trigger_rule",
                              rule_names[t->rule]);
        if (t->foreach) json_object_set_new(j, "foreach", json_string(t->foreach));
        if (t->foreach_json)
            json_object_set_new(j, "foreach", json_loads(t->foreach_json, JSON_DECODE_ANY, NULL));
        if (t->cond) json_object_set_new(j, "if", json_string(t->cond));
        json_array_append_new(tasks, j);
    }
    json_t *doc = json_pack("{s:s, s:I, s:o}", "pipeline", dag->name, "levels",
                            (json_int_t)n_levels, "tasks", tasks);
    cli_print_json(doc);
    json_decref(doc);
    free(level);
}

/* Parses path; prints its problems and returns NULL when it is not a DAG. */
static loom_dag_t *load(const char *path)
{
    char *why = NULL;
    size_t len = 0;
    char *src = cli_read_dag(path, &len, &why);
    if (!src) {
        cli_error("%s: %s", path, why);
        free(why);
        return NULL;
    }
    loom_diags_t diags = {0};
    loom_dag_t *dag = NULL;
    int err = loom_dag_parse(src, len, path, &dag, &diags);
    free(src);
    if (err != 0) {
        if (diags.n == 0) loom_diags_add(&diags, path, 0, 0, "%s", loom_strerror(err));
        char *text = loom_diags_format(&diags);
        fputs(text, stderr);
        free(text);
    }
    loom_diags_free(&diags);
    return dag;
}

int cmd_graph(loom_cli_t *cli, int argc, char **argv)
{
    enum { OPT_DOT = 1 };
    static const struct option longopts[] = {
        {"dot", no_argument, NULL, OPT_DOT}, CLI_COMMON_LONGOPTS, {0}};
    bool dot = false;
    cli_opts_begin(cli, argv);
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (c == OPT_DOT) {
            dot = true;
        } else {
            int rc = cli_opt_common(cli, c);
            if (rc >= 0) return rc;
        }
    }
    if (optind >= argc) return cli_usage_error(cli, "missing FILE");
    if (argc - optind > 1) return cli_usage_error(cli, "one FILE at a time");
    loom_dag_t *dag = load(argv[optind]);
    if (!dag) return CLI_EXIT_FAIL;
    if (cli->json)
        print_json(dag);
    else if (dot || !isatty(STDOUT_FILENO))
        print_dot(dag);
    else
        print_text(dag);
    loom_dag_destroy(&dag);
    return CLI_EXIT_OK;
}
