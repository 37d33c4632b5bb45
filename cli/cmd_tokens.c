/* `loom tokens`: create, list and revoke API tokens (admin only). A new
 * token is printed once, alone on stdout, so that it can be piped into a
 * file; loomd keeps only its hash. */
#include "cli.h"
#include "fmt.h"
#include "table.h"

#include "loom/util.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void print_tokens(const json_t *list)
{
    static const char *const headers[] = {"ID",      "ROLE",      "STATE",  "NAME",
                                          "CREATED", "LAST-USED", "EXPIRES"};
    uint64_t now = loom_unix_ms();
    cli_table_t *t = cli_table_new(headers, 7);
    cli_table_align_right(t, 0);
    size_t i;
    json_t *tok;
    json_array_foreach(list, i, tok)
    {
        int64_t created = 0, used = 0, expires = 0;
        char created_text[32], used_text[32], expires_text[48] = "never";
        cli_jint(tok, "created_unix_ms", &created);
        cli_jint(tok, "used_unix_ms", &used);
        cli_fmt_ago(now, created, created_text, sizeof created_text);
        cli_fmt_ago(now, used, used_text, sizeof used_text);
        if (cli_jint(tok, "expires_unix_ms", &expires) && expires > 0) {
            if ((uint64_t)expires > now) {
                char left[32];
                loom_format_duration((uint64_t)expires - now, left, sizeof left);
                snprintf(expires_text, sizeof expires_text, "in %s", left);
            } else {
                cli_fmt_ago(now, expires, expires_text, sizeof expires_text);
            }
        }
        cli_table_add_int(t, tok, "id");
        cli_table_add(t, cli_jstr(tok, "role"));
        cli_table_add(t, cli_jstr(tok, "state"));
        cli_table_add(t, cli_jstr(tok, "name"));
        cli_table_add(t, created_text);
        cli_table_add(t, used_text);
        cli_table_add(t, expires_text);
    }
    cli_table_print(t, stdout);
    cli_table_destroy(&t);
}

static int tokens_create(loom_cli_t *cli, int argc, char **argv)
{
    enum { OPT_ROLE = 0x100, OPT_NAME, OPT_TTL, OPT_AGENT };
    static const struct option longopts[] = {{"role", required_argument, NULL, OPT_ROLE},
                                             {"name", required_argument, NULL, OPT_NAME},
                                             {"ttl", required_argument, NULL, OPT_TTL},
                                             {"agent", no_argument, NULL, OPT_AGENT},
                                             CLI_COMMON_LONGOPTS,
                                             {0}};
    const char *role = NULL, *name = NULL;
    uint64_t ttl_ms = 0;
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_ROLE:
            role = optarg;
            break;
        case OPT_NAME:
            name = optarg;
            break;
        case OPT_TTL:
            if (loom_parse_duration_ms(optarg, &ttl_ms) || ttl_ms < 1000)
                return cli_usage_error(cli,
                                       "--ttl wants a duration of at least 1s (30d, 12h), "
                                       "not '%s'",
                                       optarg);
            break;
        case OPT_AGENT:
            return cli_usage_error(cli, "agent join tokens are made with `loom agents token`");
        default: {
            int rc = cli_opt_common(cli, c);
            if (rc >= 0) return rc;
        }
        }
    }
    if (optind + 1 < argc)
        return cli_usage_error(cli, "unexpected argument '%s'", argv[optind + 1]);
    if (!role) return cli_usage_error(cli, "--role is required: read, operate or admin");
    if (strcmp(role, "read") != 0 && strcmp(role, "operate") != 0 && strcmp(role, "admin") != 0)
        return cli_usage_error(cli, "--role wants read, operate or admin, not '%s'", role);
    json_t *body = json_pack("{s:s}", "role", role);
    if (name) json_object_set_new(body, "name", json_string(name));
    if (ttl_ms)
        json_object_set_new(body, "ttl_s", json_integer((json_int_t)((ttl_ms + 999) / 1000)));
    cli_http_resp_t r;
    int rc = cli_fetch(cli, "POST", "/api/v1/tokens", body, &r);
    json_decref(body);
    if (rc == CLI_EXIT_OK) {
        const char *token = cli_jstr(r.json, "token");
        int64_t id = 0;
        cli_jint(r.json, "id", &id);
        if (cli->json) {
            cli_print_json(r.json);
        } else if (token) {
            char expiry[64] = "never expires";
            if (ttl_ms) {
                char d[32];
                loom_format_duration(ttl_ms, d, sizeof d);
                snprintf(expiry, sizeof expiry, "expires in %s", d);
            }
            printf("%s\n", token);
            fprintf(stderr,
                    "loom: created token %lld (role %s, %s); it is shown only this once: keep "
                    "it in $LOOM_TOKEN or `token = ...` in ~/.config/loom/config (mode 0600)\n",
                    (long long)id, role, expiry);
        }
        if (!token) {
            cli_error("loomd's answer has no token");
            rc = CLI_EXIT_FAIL;
        }
    }
    cli_http_resp_free(&r);
    return rc;
}

static int tokens_revoke(loom_cli_t *cli, const char *id_text)
{
    int64_t id;
    if (loom_parse_i64(id_text, 1, INT64_MAX, &id) != 0)
        return cli_usage_error(cli, "'%s' is not a token id (see `loom tokens list`)", id_text);
    char path[64];
    snprintf(path, sizeof path, "/api/v1/tokens/%lld", (long long)id);
    cli_http_resp_t r;
    int rc = cli_fetch(cli, "DELETE", path, NULL, &r);
    if (rc == CLI_EXIT_OK) {
        if (cli->json)
            cli_print_json(r.json);
        else
            printf("revoked token %lld\n", (long long)id);
    }
    cli_http_resp_free(&r);
    return rc;
}

int cmd_tokens(loom_cli_t *cli, int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "create") == 0) return tokens_create(cli, argc - 1, argv + 1);
    int stop = cli_opts_common_only(cli, argc, argv);
    if (stop >= 0) return stop;
    const char *sub = optind < argc ? argv[optind] : "list";
    if (strcmp(sub, "list") == 0) {
        if (optind + 1 < argc)
            return cli_usage_error(cli, "unexpected argument '%s'", argv[optind + 1]);
        return cli_show_list(cli, "/api/v1/tokens", "tokens", "no API tokens", print_tokens);
    }
    if (strcmp(sub, "revoke") == 0) {
        if (optind + 2 != argc) return cli_usage_error(cli, "revoke wants one token id");
        return tokens_revoke(cli, argv[optind + 1]);
    }
    if (strcmp(sub, "create") == 0)
        return cli_usage_error(cli, "put options after create: loom tokens create --role ROLE");
    return cli_usage_error(cli, "unknown subcommand '%s' (create, list, revoke)", sub);
}
