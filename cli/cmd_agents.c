/* `loom agents` lists the agents loomd knows: their state, capacity and
 * labels. */
#include "cli.h"
#include "fmt.h"
#include "table.h"

#include "loom/util.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* "gpu=a100,zone=eu"; non-string values as JSON, null as the bare key. */
static char *format_labels(const json_t *labels)
{
    loom_buf_t b = {0};
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)labels, key, v)
    {
        if (b.len) loom_buf_puts(&b, ",");
        loom_buf_puts(&b, key);
        if (json_is_string(v)) {
            loom_buf_printf(&b, "=%s", json_string_value(v));
        } else if (!json_is_null(v)) {
            char *text = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
            if (text) loom_buf_printf(&b, "=%s", text);
            free(text);
        }
    }
    return loom_buf_steal(&b);
}

/* "2/4 A100 (1 free)": GPUs in use of those the agent has, by model. */
static char *format_gpus(const json_t *gpus)
{
    size_t n = json_array_size(gpus), busy = 0;
    if (n == 0) return loom_xstrdup("-");
    size_t i;
    json_t *g;
    json_array_foreach(gpus, i, g)
    {
        if (!json_is_null(json_object_get(g, "attempt_id"))) busy++;
    }
    const char *model = cli_jstr(json_array_get(gpus, 0), "model");
    return loom_xasprintf("%zu/%zu %s", busy, n, model ? model : "GPU");
}

static void print_agents(const json_t *agents)
{
    static const char *const headers[] = {"NAME",   "STATE", "SLOTS",     "RUNNING", "CPUS",
                                          "MEMORY", "GPUS",  "LAST-SEEN", "LABELS"};
    uint64_t now = loom_unix_ms();
    cli_table_t *t = cli_table_new(headers, 9);
    for (size_t col = 2; col <= 5; col++) cli_table_align_right(t, col);
    size_t i;
    json_t *a;
    json_array_foreach(agents, i, a)
    {
        if (!json_is_object(a)) continue;
        int64_t mem = 0, seen = 0, used = 0;
        char mem_text[32] = "", used_text[32] = "", seen_text[32];
        if (cli_jint(a, "memory_bytes", &mem) && mem >= 0)
            cli_fmt_bytes((uint64_t)mem, mem_text, sizeof mem_text);
        if (cli_jint(a, "memory_used_bytes", &used) && used > 0)
            cli_fmt_bytes((uint64_t)used, used_text, sizeof used_text);
        cli_jint(a, "last_seen_unix_ms", &seen);
        cli_fmt_ago(now, seen, seen_text, sizeof seen_text);
        char *labels = format_labels(cli_jobj(a, "labels"));
        char *gpus = format_gpus(cli_jarr(a, "gpus"));
        const char *state = cli_jstr(a, "state");
        bool cordoned = json_is_true(json_object_get(a, "cordoned"));
        bool draining = json_is_true(json_object_get(a, "draining"));
        cli_table_add(t, cli_jstr(a, "name"));
        cli_table_addf(t, "%s%s", state ? state : "?",
                       draining   ? ",draining"
                       : cordoned ? ",cordoned"
                                  : "");
        cli_table_add_int(t, a, "slots");
        cli_table_add_int(t, a, "running");
        json_t *cu = json_object_get(a, "cpus_used");
        json_t *ct = json_object_get(a, "cpus_usable");
        if (json_is_number(ct) && json_number_value(ct) > 0)
            cli_table_addf(t, "%g/%g", json_is_number(cu) ? json_number_value(cu) : 0.0,
                           json_number_value(ct));
        else
            cli_table_add_int(t, a, "cpus");
        if (*used_text)
            cli_table_addf(t, "%s/%s", used_text, mem_text);
        else
            cli_table_add(t, mem_text);
        cli_table_add(t, gpus);
        cli_table_add(t, seen_text);
        cli_table_add(t, labels);
        free(labels);
        free(gpus);
    }
    cli_table_print(t, stdout);
    cli_table_destroy(&t);
}

/* `loom agents drain|cordon|uncordon NAME`. */
static int agent_op(loom_cli_t *cli, const char *op, const char *name)
{
    char *esc = cli_url_escape(name);
    char *path = loom_xasprintf("/api/v1/agents/%s/%s", esc, op);
    free(esc);
    cli_http_resp_t r;
    int rc = cli_fetch(cli, "POST", path, NULL, &r);
    free(path);
    if (rc == CLI_EXIT_OK) {
        if (cli->json) {
            cli_print_json(r.json);
        } else {
            char *safe = cli_sanitize(name);
            int64_t running = 0;
            cli_jint(r.json, "running", &running);
            if (strcmp(op, "uncordon") == 0)
                printf("agent %s takes new work again\n", safe);
            else
                printf("agent %s takes no new work (%s); %lld task%s still running\n", safe, op,
                       (long long)running, running == 1 ? "" : "s");
            free(safe);
        }
    }
    cli_http_resp_free(&r);
    return rc;
}

int cmd_agents(loom_cli_t *cli, int argc, char **argv)
{
    int stop = cli_opts_common_only(cli, argc, argv);
    if (stop >= 0) return stop;
    if (optind < argc) {
        const char *op = argv[optind];
        if (strcmp(op, "drain") != 0 && strcmp(op, "cordon") != 0 && strcmp(op, "uncordon") != 0)
            return cli_usage_error(cli, "unknown subcommand '%s' (drain, cordon, uncordon)", op);
        if (argc - optind != 2) return cli_usage_error(cli, "%s wants one agent NAME", op);
        return agent_op(cli, op, argv[optind + 1]);
    }
    return cli_show_list(
        cli, "/api/v1/agents", "agents",
        "no agents (start one with `loom-agent --server ENDPOINT`, or use `loom up`)",
        print_agents);
}
