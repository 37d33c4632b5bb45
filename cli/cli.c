/* Helpers every `loom` command uses: option parsing, messages, finding the
 * server and calling its API; see cli.h. */
#include "cli.h"

#include "fmt.h"
#include "table.h"

#include "loom/dag.h"
#include "loom/err.h"
#include "loom/util.h"

#include <errno.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_SERVER "http://127.0.0.1:8420"

void cli_opts_begin(loom_cli_t *cli, char **argv)
{
    snprintf(cli->prog, sizeof cli->prog, "loom %s", argv[0]);
    /* getopt names argv[0] in its complaints: "loom run: unrecognized option". */
    argv[0] = cli->prog;
    optind = 0; /* 0, not 1: glibc re-initialises its permutation state */
    opterr = 1;
}

void cli_print_help(const cli_cmd_t *cmd, FILE *out)
{
    fprintf(out, "usage: loom %s\n\n%s\n", cmd->usage, cmd->summary);
    if (cmd->help) fprintf(out, "\n%s", cmd->help);
    fprintf(out, "\nAlso: --server URL, --json, -h/--help (see `loom --help`).\n");
}

static void usage_hint(const loom_cli_t *cli)
{
    fprintf(stderr, "usage: loom %s\n(see `%s --help`)\n", cli->cmd->usage, cli->prog);
}

int cli_opt_common(loom_cli_t *cli, int c)
{
    switch (c) {
    case CLI_OPT_JSON:
        cli->json = true;
        return -1;
    case CLI_OPT_SERVER:
        free(cli->server);
        cli->server = cli_url_normalize(optarg);
        cli->server_from = "--server";
        return -1;
    case 'h':
        cli_print_help(cli->cmd, stdout);
        return CLI_EXIT_OK;
    default: /* '?': getopt has already named the bad option */
        usage_hint(cli);
        return CLI_EXIT_USAGE;
    }
}

int cli_usage_error(loom_cli_t *cli, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", cli->prog);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    usage_hint(cli);
    return CLI_EXIT_USAGE;
}

void cli_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg = NULL;
    if (vasprintf(&msg, fmt, ap) < 0) msg = NULL;
    va_end(ap);
    if (!msg) return;
    /* Messages often quote loomd or a file: keep terminal escapes out. */
    char *safe = cli_sanitize(msg);
    fprintf(stderr, "loom: %s\n", safe);
    free(safe);
    free(msg);
}

bool cli_parse_run_id(loom_cli_t *cli, const char *s, long long *out)
{
    int64_t v;
    if (loom_parse_i64(s, 1, INT64_MAX, &v) != 0) {
        cli_usage_error(cli, "'%s' is not a run id (a positive number)", s);
        return false;
    }
    *out = (long long)v;
    return true;
}

char *cli_loom_home(void)
{
    const char *home = getenv("LOOM_HOME");
    if (home && *home) return loom_xstrdup(home);
    const char *user_home = getenv("HOME");
    if (!user_home || !*user_home) {
        struct passwd *pw = getpwuid(getuid());
        user_home = pw && pw->pw_dir ? pw->pw_dir : ".";
    }
    return loom_xasprintf("%s/.loom", user_home);
}

/* The "http" field of $LOOM_HOME/loomd.json, which loomd writes once it
 * listens; NULL when there is no such file or field. */
static char *server_from_home(char **path_out)
{
    char *home = cli_loom_home();
    char *path = loom_xasprintf("%s/loomd.json", home);
    free(home);
    char *text = NULL;
    size_t len = 0;
    char *url = NULL;
    if (loom_read_file(path, 64 * 1024, &text, &len) == 0) {
        json_error_t jerr;
        json_t *j = json_loadb(text, len, 0, &jerr);
        const char *http = cli_jstr(j, "http");
        if (http && *http) url = cli_url_normalize(http);
        json_decref(j);
        free(text);
    }
    if (url)
        *path_out = path;
    else
        free(path);
    return url;
}

/* A token as sent in a header: printable, no spaces (a stray newline would
 * end the header). */
static bool token_text_ok(const char *t)
{
    if (!*t || strlen(t) > 512) return false;
    for (const char *c = t; *c; c++)
        if (*c <= ' ' || *c == 0x7f) return false;
    return true;
}

/* Strips surrounding blanks in place. */
static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t') s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
        s[--n] = '\0';
    return s;
}

typedef struct {
    char *server, *token, *ca_cert;
} config_t;

static void config_free(config_t *c)
{
    free(c->server);
    if (c->token) memset(c->token, 0, strlen(c->token));
    free(c->token);
    free(c->ca_cert);
}

/* $LOOM_CONFIG, else $XDG_CONFIG_HOME/loom/config, else
 * ~/.config/loom/config; *explicit when it came from $LOOM_CONFIG. */
static char *config_path(bool *explicit)
{
    const char *env = getenv("LOOM_CONFIG");
    *explicit = env && *env;
    if (*explicit) return loom_xstrdup(env);
    const char *xdg = getenv("XDG_CONFIG_HOME");
    if (xdg && *xdg) return loom_xasprintf("%s/loom/config", xdg);
    const char *home = getenv("HOME");
    if (!home || !*home) {
        struct passwd *pw = getpwuid(getuid());
        home = pw && pw->pw_dir ? pw->pw_dir : ".";
    }
    return loom_xasprintf("%s/.config/loom/config", home);
}

/* Reads `key = value` lines (server, token, ca_cert; # starts a comment).
 * Returns false after printing what is wrong and where. */
static bool read_config(const char *path, bool explicit, config_t *cfg)
{
    char *text = NULL;
    size_t len = 0;
    errno = 0;
    int err = loom_read_file(path, 64 * 1024, &text, &len);
    if (err == LOOM_ENOTFOUND && !explicit) return true;
    if (err) {
        cli_error("config file %s (from $LOOM_CONFIG): %s", path,
                  err == LOOM_ENOTFOUND ? "no such file"
                  : errno               ? strerror(errno)
                                        : loom_strerror(err));
        return false;
    }
    bool ok = true;
    int lineno = 0;
    for (char *line = text, *next; ok && line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = '\0';
        lineno++;
        char *l = trim(line);
        if (!*l || *l == '#') continue;
        char *eq = strchr(l, '=');
        if (!eq) {
            cli_error("%s:%d: want `key = value`", path, lineno);
            ok = false;
            break;
        }
        *eq = '\0';
        char *key = trim(l), *value = trim(eq + 1);
        char **slot = strcmp(key, "server") == 0    ? &cfg->server
                      : strcmp(key, "token") == 0   ? &cfg->token
                      : strcmp(key, "ca_cert") == 0 ? &cfg->ca_cert
                                                    : NULL;
        if (!slot) {
            cli_error("%s:%d: unknown key \"%s\" (known: server, token, ca_cert)", path, lineno,
                      key);
            ok = false;
        } else if (!*value) {
            cli_error("%s:%d: %s has no value", path, lineno, key);
            ok = false;
        } else if (slot == &cfg->token && !token_text_ok(value)) {
            cli_error("%s:%d: token is not a token (printable, no spaces)", path, lineno);
            ok = false;
        } else {
            free(*slot);
            *slot = loom_xstrdup(value);
        }
    }
    memset(text, 0, len);
    free(text);
    struct stat st;
    if (ok && cfg->token && stat(path, &st) == 0 && (st.st_mode & 077)) {
        cli_error("config file %s holds a token but others can read it (mode %04o); refusing "
                  "to use it: run `chmod 600 %s`",
                  path, (unsigned)(st.st_mode & 07777), path);
        ok = false;
    }
    return ok;
}

/* $LOOM_HOME/admin.token, which loomd writes on its first start; NULL when
 * it cannot be read. */
static char *token_from_home(char **path_out)
{
    char *home = cli_loom_home();
    char *path = loom_xasprintf("%s/admin.token", home);
    free(home);
    char *text = NULL;
    size_t len = 0;
    char *tok = NULL;
    if (loom_read_file(path, 4096, &text, &len) == 0) {
        char *t = trim(text);
        if (token_text_ok(t)) tok = loom_xstrdup(t);
        memset(text, 0, len);
        free(text);
    }
    if (tok)
        *path_out = path;
    else
        free(path);
    return tok;
}

int cli_credentials(loom_cli_t *cli)
{
    if (cli->creds_resolved) return cli->creds_error;
    cli->creds_resolved = true;
    bool explicit = false;
    config_t cfg = {0};
    cli->config_path = config_path(&explicit);
    if (!read_config(cli->config_path, explicit, &cfg)) {
        config_free(&cfg);
        cli->creds_error = CLI_EXIT_USAGE;
        return cli->creds_error;
    }
    cli->home_server = server_from_home(&cli->server_from_buf);
    const char *env = getenv("LOOM_SERVER");
    if (cli->server) {
        /* --server */
    } else if (env && *env) {
        cli->server = cli_url_normalize(env);
        cli->server_from = "$LOOM_SERVER";
    } else if (cfg.server) {
        cli->server = cli_url_normalize(cfg.server);
        cli->server_from = cli->config_path;
    } else if (cli->home_server) {
        cli->server = loom_xstrdup(cli->home_server);
        cli->server_from = cli->server_from_buf;
    } else {
        cli->server = loom_xstrdup(DEFAULT_SERVER);
        cli->server_from = "the default";
    }
    env = getenv("LOOM_TOKEN");
    if (env && *env) {
        if (!token_text_ok(env)) {
            cli_error("$LOOM_TOKEN is not a token (printable, no spaces)");
            config_free(&cfg);
            cli->creds_error = CLI_EXIT_USAGE;
            return cli->creds_error;
        }
        cli->token = loom_xstrdup(env);
        cli->token_from = "$LOOM_TOKEN";
    } else if (cfg.token) {
        cli->token = cfg.token;
        cfg.token = NULL;
        cli->token_from = cli->config_path;
    } else if (cli->home_server && strcmp(cli->home_server, cli->server) == 0) {
        /* Only for the loomd of $LOOM_HOME: its admin token must not be sent
         * to some other server. */
        char *path = NULL;
        cli->token = token_from_home(&path);
        if (cli->token) {
            free(cli->server_from_buf);
            cli->server_from_buf = path;
            cli->token_from = path;
        }
    }
    env = getenv("LOOM_CA_CERT");
    if (env && *env)
        cli->ca_cert = loom_xstrdup(env);
    else if (cfg.ca_cert)
        cli->ca_cert = loom_xstrdup(cfg.ca_cert);
    config_free(&cfg);
    cli_http_set_auth(cli->token, cli->ca_cert);
    return CLI_EXIT_OK;
}

const char *cli_server(loom_cli_t *cli)
{
    /* A config file that cannot be used is fatal before any request. */
    if (cli_credentials(cli) != CLI_EXIT_OK) exit(cli->creds_error);
    return cli->server;
}

void cli_free(loom_cli_t *cli)
{
    cli_http_set_auth(NULL, NULL);
    free(cli->server);
    free(cli->server_from_buf);
    free(cli->home_server);
    if (cli->token) memset(cli->token, 0, strlen(cli->token));
    free(cli->token);
    free(cli->ca_cert);
    free(cli->config_path);
    cli->server = cli->server_from_buf = cli->home_server = cli->token = NULL;
    cli->ca_cert = cli->config_path = NULL;
}

char *cli_url(loom_cli_t *cli, const char *path)
{
    return loom_xasprintf("%s%s", cli_server(cli), path);
}

/* Says why a request got no answer and returns the exit status for it. */
static int report_transport(loom_cli_t *cli, int err, const cli_http_resp_t *r)
{
    if (err == LOOM_EIO || err == LOOM_ETOOBIG) {
        cli_error("%s", r->error);
        return CLI_EXIT_FAIL;
    }
    if (r->unreachable) {
        cli_error("cannot reach loomd at %s (from %s): %s", cli->server, cli->server_from,
                  r->error);
        fprintf(stderr, "loom: start one with `loom up`, or point --server or $LOOM_SERVER "
                        "at a running loomd\n");
    } else {
        cli_error("lost the connection to loomd at %s: %s", cli->server, r->error);
    }
    return CLI_EXIT_UNREACHABLE;
}

int cli_call(loom_cli_t *cli, const char *method, const char *path, const json_t *body,
             long timeout_s, cli_http_resp_t *r)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    char *url = cli_url(cli, path);
    int err = cli_http_request(method, url, text, timeout_s, r);
    free(url);
    free(text);
    return err == 0 ? CLI_EXIT_OK : report_transport(cli, err, r);
}

/* After a 401 or 403: where the token came from and how to set one. */
static void explain_auth(loom_cli_t *cli, long status)
{
    if (status != 401 && status != 403) return;
    if (!cli->token)
        fprintf(stderr,
                "loom: no API token was sent to %s: set $LOOM_TOKEN, or `token = ...` in "
                "%s (mode 0600); an admin creates one with `loom tokens create --role "
                "ROLE`\n",
                cli->server, cli->config_path ? cli->config_path : "~/.config/loom/config");
    else if (status == 401)
        fprintf(stderr,
                "loom: the token from %s was not accepted by %s; ask an admin for a new "
                "one (`loom tokens create --role ROLE`)\n",
                cli->token_from, cli->server);
    else
        fprintf(stderr,
                "loom: the token from %s lacks the role for this; ask an admin for one "
                "with a higher role\n",
                cli->token_from);
}

int cli_check(loom_cli_t *cli, const cli_http_resp_t *r)
{
    if (r->status >= 200 && r->status < 300 && json_is_object(r->json)) return CLI_EXIT_OK;
    const char *msg = cli_jstr(r->json, "error");
    if (msg)
        cli_error("%s", msg);
    else if (r->status >= 200 && r->status < 300)
        cli_error("unexpected answer from loomd (HTTP %ld, not a JSON object)", r->status);
    else
        cli_error("loomd answered HTTP %ld", r->status);
    explain_auth(cli, r->status);
    return CLI_EXIT_FAIL;
}

int cli_fetch(loom_cli_t *cli, const char *method, const char *path, const json_t *body,
              cli_http_resp_t *r)
{
    int rc = cli_call(cli, method, path, body, CLI_API_TIMEOUT_S, r);
    return rc != CLI_EXIT_OK ? rc : cli_check(cli, r);
}

int cli_stream_failed(loom_cli_t *cli, int err, const cli_http_resp_t *r)
{
    if (err != 0) return report_transport(cli, err, r);
    const char *msg = cli_jstr(r->json, "error");
    if (msg)
        cli_error("%s", msg);
    else
        cli_error("loomd answered HTTP %ld", r->status);
    explain_auth(cli, r->status);
    return CLI_EXIT_FAIL;
}

void cli_print_json(const json_t *j)
{
    json_dumpf(j, stdout, JSON_INDENT(2));
    fputc('\n', stdout);
}

bool cli_run_state_final(const char *state)
{
    return state && (strcmp(state, "succeeded") == 0 || strcmp(state, "failed") == 0 ||
                     strcmp(state, "cancelled") == 0);
}

int cli_opts_common_only(loom_cli_t *cli, int argc, char **argv)
{
    static const struct option longopts[] = {CLI_COMMON_LONGOPTS, {0}};
    cli_opts_begin(cli, argv);
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        int rc = cli_opt_common(cli, c);
        if (rc >= 0) return rc;
    }
    return -1;
}

int cli_show(loom_cli_t *cli, const char *path, void (*print)(const json_t *obj))
{
    cli_http_resp_t r;
    int rc = cli_fetch(cli, "GET", path, NULL, &r);
    if (rc == CLI_EXIT_OK) {
        if (cli->json)
            cli_print_json(r.json);
        else
            print(r.json);
    }
    cli_http_resp_free(&r);
    return rc;
}

int cli_show_list(loom_cli_t *cli, const char *path, const char *key, const char *empty_msg,
                  void (*print)(const json_t *list))
{
    cli_http_resp_t r;
    int rc = cli_fetch(cli, "GET", path, NULL, &r);
    if (rc == CLI_EXIT_OK) {
        json_t *list = cli_jarr(r.json, key);
        if (cli->json)
            cli_print_json(r.json);
        else if (!list || json_array_size(list) == 0)
            printf("%s\n", empty_msg);
        else
            print(list);
    }
    cli_http_resp_free(&r);
    return rc;
}

/* Reads a DAG file within the parser's size limit. On failure returns NULL
 * and a sentence for the user in *why (caller frees). */
char *cli_read_dag(const char *path, size_t *len, char **why)
{
    char *src = NULL;
    errno = 0;
    int err = loom_read_file(path, LOOM_DAG_MAX_BYTES, &src, len);
    if (err == 0) return src;
    if (err == LOOM_ENOTFOUND)
        *why = loom_xstrdup("no such file");
    else if (err == LOOM_ETOOBIG)
        *why = loom_xasprintf("larger than %d MiB, the limit for a DAG file",
                              LOOM_DAG_MAX_BYTES >> 20);
    else
        *why = loom_xasprintf("cannot read it: %s", errno ? strerror(errno) : loom_strerror(err));
    return NULL;
}

int cli_opt_limit(loom_cli_t *cli, const char *arg, int64_t *out)
{
    if (loom_parse_i64(arg, 1, 1000, out) == 0) return -1;
    return cli_usage_error(cli, "--limit wants a number from 1 to 1000, not '%s'", arg);
}
