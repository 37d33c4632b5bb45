/* `loom agents` lists the agents loomd knows: their state, capacity and
 * labels; and enrols them: join tokens, approving and revoking keys. */
#include "cli.h"
#include "fmt.h"
#include "table.h"

#include "loom/util.h"

#include <getopt.h>
#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

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
        int64_t running = 0, queued = 0;
        cli_jint(a, "running", &running);
        if (cli_jint(a, "queued", &queued) && queued > 0)
            /* prefetched tasks held beyond the slots, not started yet */
            cli_table_addf(t, "%lld+%lld held", (long long)running, (long long)queued);
        else
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

/* `loom agents drain|cordon|uncordon|revoke NAME`: POST /agents/NAME/OP. */
static int agent_op(loom_cli_t *cli, const char *op, const char *name)
{
    char *esc = cli_url_escape(name);
    char *path = loom_xasprintf("/api/v1/agents/%s/%s", esc, op);
    free(esc);
    cli_http_resp_t r;
    int rc = cli_fetch(cli, "POST", path, NULL, &r);
    free(path);
    if (rc == CLI_EXIT_OK && cli->json) {
        cli_print_json(r.json);
    } else if (rc == CLI_EXIT_OK) {
        char *safe = cli_sanitize(name);
        int64_t n = 0;
        if (strcmp(op, "revoke") == 0) {
            cli_jint(r.json, "keys_revoked", &n);
            printf("agent %s revoked (%lld key%s): it is cut off and its tasks are retried "
                   "elsewhere\n",
                   safe, (long long)n, n == 1 ? "" : "s");
        } else if (strcmp(op, "uncordon") == 0) {
            printf("agent %s takes new work again\n", safe);
        } else {
            cli_jint(r.json, "running", &n);
            printf("agent %s takes no new work (%s); %lld task%s still running\n", safe, op,
                   (long long)n, n == 1 ? "" : "s");
        }
        free(safe);
    }
    cli_http_resp_free(&r);
    return rc;
}

/* `loom agents token`: a one-time join token, printed once. */
static int agent_token(loom_cli_t *cli, const char *name, uint64_t ttl_ms)
{
    json_t *body = json_object();
    if (name) json_object_set_new(body, "name", json_string(name));
    if (ttl_ms) json_object_set_new(body, "ttl_s", json_integer((json_int_t)(ttl_ms / 1000)));
    cli_http_resp_t r;
    int rc = cli_fetch(cli, "POST", "/api/v1/agents/tokens", body, &r);
    json_decref(body);
    if (rc == CLI_EXIT_OK) {
        if (cli->json) {
            cli_print_json(r.json);
        } else {
            const char *token = cli_jstr(r.json, "token");
            int64_t expires = 0;
            cli_jint(r.json, "expires_unix_ms", &expires);
            uint64_t now = loom_unix_ms();
            uint64_t mins = (uint64_t)expires > now ? ((uint64_t)expires - now + 59999) / 60000 : 0;
            printf("%s\n\n", token ? token : "?");
            printf(
                "One agent%s%s may join with it, within %llu minute%s. On the agent's "
                "machine:\n\n"
                "  LOOM_JOIN_TOKEN='<the token>' loom-agent --server tcp://THIS-HOST:8421%s%s\n\n"
                "(or put it in a file and give --join-token-file FILE; never on the command "
                "line). This token is not shown again.\n",
                name ? " named " : "", name ? name : "", (unsigned long long)mins,
                mins == 1 ? "" : "s", name ? " --name " : "", name ? name : "");
        }
    }
    cli_http_resp_free(&r);
    return rc;
}

/* A Z85 key as 64 hex digits: Z85 has '/', '?' and '%', which a URL
 * path cannot carry as they are. */
static char *key_hex(const char *z85)
{
    uint8_t raw[32];
    if (strlen(z85) != 40 || !zmq_z85_decode(raw, z85)) return NULL;
    char hex[65];
    sodium_bin2hex(hex, sizeof hex, raw, sizeof raw);
    return loom_xstrdup(hex);
}

static int agent_approve(loom_cli_t *cli, const char *key, const char *name)
{
    char *hex = key_hex(key);
    if (!hex) return cli_usage_error(cli, "'%s' is not a 40-character Z85 public key", key);
    char *path = loom_xasprintf("/api/v1/agents/keys/%s/approve", hex);
    free(hex);
    json_t *body = json_object();
    if (name) json_object_set_new(body, "name", json_string(name));
    cli_http_resp_t r;
    int rc = cli_fetch(cli, "POST", path, body, &r);
    json_decref(body);
    free(path);
    if (rc == CLI_EXIT_OK) {
        if (cli->json)
            cli_print_json(r.json);
        else
            printf("key approved; the agent is let in at its next try (within a few seconds)\n");
    }
    cli_http_resp_free(&r);
    return rc;
}

static void print_keys(const json_t *keys)
{
    static const char *const headers[] = {"AGENT", "STATE", "PUBLIC-KEY", "VIA", "SINCE"};
    uint64_t now = loom_unix_ms();
    cli_table_t *t = cli_table_new(headers, 5);
    size_t i;
    json_t *k;
    json_array_foreach(keys, i, k)
    {
        if (!json_is_object(k)) continue;
        const char *state = cli_jstr(k, "state");
        int64_t since = 0;
        char since_text[32];
        if (!state) state = "?";
        cli_jint(k,
                 strcmp(state, "approved") == 0  ? "approved_unix_ms"
                 : strcmp(state, "revoked") == 0 ? "revoked_unix_ms"
                                                 : "created_unix_ms",
                 &since);
        cli_fmt_ago(now, since, since_text, sizeof since_text);
        cli_table_add(t, cli_jstr(k, "agent"));
        cli_table_add(t, state);
        cli_table_add(t, cli_jstr(k, "public_key"));
        cli_table_add(t, cli_jstr(k, "via") ? cli_jstr(k, "via") : "-");
        cli_table_add(t, since_text);
    }
    cli_table_print(t, stdout);
    cli_table_destroy(&t);
}

enum { OPT_NAME = 0x2000, OPT_TTL };

int cmd_agents(loom_cli_t *cli, int argc, char **argv)
{
    static const struct option longopts[] = {{"name", required_argument, NULL, OPT_NAME},
                                             {"ttl", required_argument, NULL, OPT_TTL},
                                             CLI_COMMON_LONGOPTS,
                                             {0}};
    const char *name = NULL;
    uint64_t ttl_ms = 0;
    cli_opts_begin(cli, argv);
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (c == OPT_NAME) {
            if (!loom_name_valid(optarg))
                return cli_usage_error(cli, "--name %s: use 1-63 of [A-Za-z0-9_.-]", optarg);
            name = optarg;
        } else if (c == OPT_TTL) {
            if (loom_parse_duration_ms(optarg, &ttl_ms) != 0 || ttl_ms < 1000)
                return cli_usage_error(cli, "--ttl %s: expected a duration such as 1h or 30m",
                                       optarg);
        } else {
            int rc = cli_opt_common(cli, c);
            if (rc >= 0) return rc;
        }
    }
    const char *op = optind < argc ? argv[optind] : NULL;
    int nargs = argc - optind - 1;
    if ((name || ttl_ms) && (!op || (strcmp(op, "token") != 0 && strcmp(op, "approve") != 0) ||
                             (ttl_ms && strcmp(op, "token") != 0)))
        return cli_usage_error(cli, "--name and --ttl go with `agents token` (--name also with "
                                    "`agents approve`)");
    if (!op)
        return cli_show_list(
            cli, "/api/v1/agents", "agents",
            "no agents (start one with `loom-agent --server ENDPOINT`, or use `loom up`)",
            print_agents);
    if (strcmp(op, "token") == 0) {
        if (nargs != 0) return cli_usage_error(cli, "token takes no arguments");
        return agent_token(cli, name, ttl_ms);
    }
    if (strcmp(op, "keys") == 0) {
        if (nargs != 0) return cli_usage_error(cli, "keys takes no arguments");
        return cli_show_list(cli, "/api/v1/agents/keys", "keys", "no agent keys", print_keys);
    }
    if (strcmp(op, "approve") == 0) {
        if (nargs != 1) return cli_usage_error(cli, "approve wants one public KEY");
        return agent_approve(cli, argv[optind + 1], name);
    }
    if (strcmp(op, "revoke") == 0) {
        if (nargs != 1) return cli_usage_error(cli, "revoke wants one agent NAME");
        return agent_op(cli, "revoke", argv[optind + 1]);
    }
    if (strcmp(op, "drain") != 0 && strcmp(op, "cordon") != 0 && strcmp(op, "uncordon") != 0)
        return cli_usage_error(cli,
                               "unknown subcommand '%s' (drain, cordon, uncordon, token, keys, "
                               "approve, revoke)",
                               op);
    if (nargs != 1) return cli_usage_error(cli, "%s wants one agent NAME", op);
    return agent_op(cli, op, argv[optind + 1]);
}
