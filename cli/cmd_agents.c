/* `loom agents` lists the agents loomd knows: their state, capacity and
 * labels. */
#include "cli.h"
#include "fmt.h"
#include "table.h"

#include "loom/util.h"

#include <stdint.h>
#include <stdlib.h>

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

static void print_agents(const json_t *agents)
{
    static const char *const headers[] = {"NAME", "STATE",  "SLOTS",     "RUNNING",
                                          "CPUS", "MEMORY", "LAST-SEEN", "LABELS"};
    uint64_t now = loom_unix_ms();
    cli_table_t *t = cli_table_new(headers, 8);
    for (size_t col = 2; col <= 5; col++) cli_table_align_right(t, col);
    size_t i;
    json_t *a;
    json_array_foreach(agents, i, a)
    {
        if (!json_is_object(a)) continue;
        int64_t mem = 0, seen = 0;
        char mem_text[32] = "", seen_text[32];
        if (cli_jint(a, "memory_bytes", &mem) && mem >= 0)
            cli_fmt_bytes((uint64_t)mem, mem_text, sizeof mem_text);
        cli_jint(a, "last_seen_unix_ms", &seen);
        cli_fmt_ago(now, seen, seen_text, sizeof seen_text);
        char *labels = format_labels(cli_jobj(a, "labels"));
        cli_table_add(t, cli_jstr(a, "name"));
        cli_table_add(t, cli_jstr(a, "state"));
        cli_table_add_int(t, a, "slots");
        cli_table_add_int(t, a, "running");
        cli_table_add_int(t, a, "cpus");
        cli_table_add(t, mem_text);
        cli_table_add(t, seen_text);
        cli_table_add(t, labels);
        free(labels);
    }
    cli_table_print(t, stdout);
    cli_table_destroy(&t);
}

int cmd_agents(loom_cli_t *cli, int argc, char **argv)
{
    int stop = cli_opts_common_only(cli, argc, argv);
    if (stop >= 0) return stop;
    if (optind < argc) return cli_usage_error(cli, "unexpected argument '%s'", argv[optind]);
    return cli_show_list(
        cli, "/api/v1/agents", "agents",
        "no agents (start one with `loom-agent --server ENDPOINT`, or use `loom up`)",
        print_agents);
}
