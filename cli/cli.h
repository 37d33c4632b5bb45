/* What every `loom` command shares: the context built from the global
 * options, exit statuses, option parsing and calls to loomd's API. */
#ifndef LOOM_CLI_H
#define LOOM_CLI_H

#include "http.h"

#include <getopt.h>
#include <jansson.h>
#include <stdbool.h>

/* Exit statuses, documented in `loom --help`. */
enum {
    CLI_EXIT_OK = 0,
    CLI_EXIT_FAIL = 1,        /* a run failed, a DAG is invalid, loomd said no */
    CLI_EXIT_USAGE = 2,       /* unknown command or option, missing argument */
    CLI_EXIT_UNREACHABLE = 3, /* nothing answered at the server URL */
};

/* Timeout for ordinary API calls. */
#define CLI_API_TIMEOUT_S 60L

typedef struct loom_cli loom_cli_t;

typedef struct {
    const char *name;
    int (*run)(loom_cli_t *cli, int argc, char **argv);
    const char *usage;   /* after "loom " */
    const char *summary; /* one line for `loom --help` */
    const char *help;    /* options and details for `loom CMD --help` */
} cli_cmd_t;

struct loom_cli {
    char *server;            /* base URL, resolved on first use */
    const char *server_from; /* where it came from, for error messages */
    char *server_from_buf;
    char *home_server; /* the "http" of $LOOM_HOME/loomd.json, if any */
    /* The bearer token sent with every request, and where it came from;
     * NULL when none was found. Never from argv: ps shows argv. */
    char *token;
    const char *token_from;
    char *ca_cert;       /* CA file for https (LOOM_CA_CERT or ca_cert) */
    char *config_path;   /* the configuration file read, if one was */
    bool creds_resolved; /* the config file was read and the above settled */
    int creds_error;     /* an exit status when the config file is unusable */
    bool json;           /* --json: print loomd's answer as it is */
    const cli_cmd_t *cmd;
    char prog[64]; /* "loom submit", for messages */
};

/* Long options every command accepts; end a command's option table with
 * CLI_COMMON_LONGOPTS, {0}. */
enum { CLI_OPT_JSON = 0x1000, CLI_OPT_SERVER };
#define CLI_COMMON_LONGOPTS                                                                        \
    {"json", no_argument, NULL, CLI_OPT_JSON},                                                     \
        {"server", required_argument, NULL, CLI_OPT_SERVER},                                       \
    {                                                                                              \
        "help", no_argument, NULL, 'h'                                                             \
    }

/* Starts getopt over a command's arguments (argv[0] is the command name). */
void cli_opts_begin(loom_cli_t *cli, char **argv);
/* Handles an option every command takes, or getopt's complaint. Returns -1
 * when parsing goes on, else the status the command should exit with now
 * (0 after --help, 2 after a bad option). */
int cli_opt_common(loom_cli_t *cli, int c);
/* Parses a command that takes only the common options. Returns -1 when the
 * command goes on with its operands from optind, else the exit status. */
int cli_opts_common_only(loom_cli_t *cli, int argc, char **argv);
/* Prints "loom CMD: message" and the usage line; returns CLI_EXIT_USAGE. */
int cli_usage_error(loom_cli_t *cli, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void cli_print_help(const cli_cmd_t *cmd, FILE *out);
/* Prints "loom: message" (sanitized) on stderr. */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Parses --limit (1..1000) into *out; -1 when fine, else the exit status
 * after printing a usage error. */
int cli_opt_limit(loom_cli_t *cli, const char *arg, int64_t *out);
/* Parses a run id; prints a usage error and returns false if it is not one. */
bool cli_parse_run_id(loom_cli_t *cli, const char *s, long long *out);

/* The server base URL: --server, $LOOM_SERVER, `server` in the config
 * file, "http" in $LOOM_HOME/loomd.json, or the default. */
const char *cli_server(loom_cli_t *cli);
/* Settles the server, token and CA certificate (see docs: $LOOM_TOKEN, then
 * `token` in the config file, then $LOOM_HOME/admin.token when the server
 * is the loomd of $LOOM_HOME) and hands them to the HTTP layer. Returns
 * CLI_EXIT_OK, or an exit status after printing why the config file cannot
 * be used. cli_call and cli_url call it. */
int cli_credentials(loom_cli_t *cli);
/* $LOOM_HOME, or ~/.loom. Caller frees. */
char *cli_loom_home(void);
void cli_free(loom_cli_t *cli);

/* Calls loomd: method on path (under the server URL) with an optional JSON
 * body. Returns CLI_EXIT_OK when loomd answered with any status, or prints
 * why it could not be reached and returns CLI_EXIT_UNREACHABLE. */
int cli_call(loom_cli_t *cli, const char *method, const char *path, const json_t *body,
             long timeout_s, cli_http_resp_t *r);
/* CLI_EXIT_OK for a 2xx answer holding a JSON object; otherwise prints
 * loomd's "error" text and returns CLI_EXIT_FAIL. */
int cli_check(loom_cli_t *cli, const cli_http_resp_t *r);
/* cli_call then cli_check, with the ordinary timeout. */
int cli_fetch(loom_cli_t *cli, const char *method, const char *path, const json_t *body,
              cli_http_resp_t *r);
/* The full URL of path. Caller frees. */
char *cli_url(loom_cli_t *cli, const char *path);
/* Reports a failed stream (cli_http_stream's result); returns an exit status. */
int cli_stream_failed(loom_cli_t *cli, int err, const cli_http_resp_t *r);
/* Reads a DAG file within the parser's size limit. On failure returns NULL
 * and a sentence for the user in *why (caller frees). */
char *cli_read_dag(const char *path, size_t *len, char **why);
/* Pretty-prints j (for --json) on stdout. */
void cli_print_json(const json_t *j);

/* GETs path and shows it: --json as loomd said it, else print(). */
int cli_show(loom_cli_t *cli, const char *path, void (*print)(const json_t *obj));
/* GETs path and shows it: --json as loomd said it, else print() for the
 * array under key, or empty_msg when that array is missing or empty. */
int cli_show_list(loom_cli_t *cli, const char *path, const char *key, const char *empty_msg,
                  void (*print)(const json_t *list));

/* Run states that will not change any more. */
bool cli_run_state_final(const char *state);
/* Prints a run: the header line and its task table (`loom status RUN`). */
void cli_print_run(const json_t *run);

/* The commands. */
int cmd_submit(loom_cli_t *cli, int argc, char **argv);
int cmd_validate(loom_cli_t *cli, int argc, char **argv);
int cmd_run(loom_cli_t *cli, int argc, char **argv);
int cmd_cancel(loom_cli_t *cli, int argc, char **argv);
/* cmd_watch.c: `loom watch RUN`, also shown by `loom run --wait` in a
 * terminal. Follows the run to its end: 0 if it succeeded, 1 otherwise;
 * the final run (when it ended) in *final (may be NULL; caller decrefs). */
int cmd_watch(loom_cli_t *cli, int argc, char **argv);
int cli_watch_run(loom_cli_t *cli, long long id, json_t **final);
int cmd_status(loom_cli_t *cli, int argc, char **argv);
int cmd_logs(loom_cli_t *cli, int argc, char **argv);
int cmd_agents(loom_cli_t *cli, int argc, char **argv);
int cmd_pipelines(loom_cli_t *cli, int argc, char **argv);
int cmd_up(loom_cli_t *cli, int argc, char **argv);
int cmd_graph(loom_cli_t *cli, int argc, char **argv);
int cmd_triggers(loom_cli_t *cli, int argc, char **argv);
int cmd_events(loom_cli_t *cli, int argc, char **argv);
int cmd_pause(loom_cli_t *cli, int argc, char **argv);
int cmd_cron(loom_cli_t *cli, int argc, char **argv);
int cmd_drift(loom_cli_t *cli, int argc, char **argv);
int cmd_artifacts(loom_cli_t *cli, int argc, char **argv);
int cmd_lineage(loom_cli_t *cli, int argc, char **argv);
int cmd_models(loom_cli_t *cli, int argc, char **argv);
int cmd_metrics(loom_cli_t *cli, int argc, char **argv);
int cmd_gc(loom_cli_t *cli, int argc, char **argv);
int cmd_secrets(loom_cli_t *cli, int argc, char **argv);
int cmd_hooks(loom_cli_t *cli, int argc, char **argv);
int cmd_tokens(loom_cli_t *cli, int argc, char **argv);

/* Prints one task's log under a "==> TASK (state, exit N) <==" header; used
 * by `loom run --logs`. Returns an exit status. */
int cli_print_task_log(loom_cli_t *cli, long long run_id, const json_t *task);

#endif
