/* loom, the command line for loomd: global options, then one command from
 * the dispatch table below (one file per command, as in tmux). */
#include "cli.h"

#include <curl/curl.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

static int cmd_help(loom_cli_t *cli, int argc, char **argv);

static const cli_cmd_t commands[] = {
    {"submit", cmd_submit, "submit FILE [--no-bundle]",
     "Send a DAG file and its folder (the code bundle) to loomd; a new version if changed.",
     "Bundles the folder beside FILE (honouring .loomignore, else .gitignore; .git/\n"
     "is skipped), uploads only the files loomd lacks, and records the git commit\n"
     "when the folder is a checkout. Prints \"submitted NAME version N (...)\", or\n"
     "\"NAME is unchanged (version N)\". An invalid DAG is reported as\n"
     "file:line:col: error: message lines on stderr, with exit status 1.\n"
     "  --no-bundle   send the DAG file alone; tasks run in an empty folder\n"},
    {"validate", cmd_validate, "validate FILE...", "Check DAG files offline, without loomd.",
     "Prints \"FILE: ok (N tasks)\" for each valid file and every problem found as\n"
     "file:line:col: error: message on stderr; exit status 1 if any file is invalid.\n"},
    {"graph", cmd_graph, "graph FILE [--dot]", "Draw a DAG file's graph, offline.",
     "Prints the DAG as text in a terminal, or as Graphviz DOT with --dot (or when\n"
     "the output is not a terminal).\n"},
    {"run", cmd_run, "run PIPELINE [-p NAME=VALUE]... [--version N] [--no-cache] [--wait] [--logs]",
     "Start a run of a pipeline.",
     "  -p, --param NAME=VALUE  a parameter for this run (checked against its declared type)\n"
     "  --version N  run version N (default: the latest)\n"
     "  --no-cache   run every task, even those with `cache: true` and a cached result\n"
     "  --wait       wait for the run to end, print its tasks, and exit 0 only if it\n"
     "               succeeded (1 if it failed or was cancelled)\n"
     "  --logs       like --wait, and print each task's log once the run has ended\n"},
    {"status", cmd_status, "status [RUN] [--pipeline NAME] [--limit N]",
     "List recent runs, or show one run and its tasks.",
     "  --pipeline NAME  only runs of this pipeline\n"
     "  --limit N        at most N runs (default 20)\n"
     "The exit status is 0 whatever state the run is in, 1 if there is no such run.\n"},
    {"logs", cmd_logs, "logs RUN TASK [-f|--follow] [--attempt N] [--timestamps]",
     "Print a task's output (stdout and stderr combined).",
     "  -f, --follow   keep printing new output until the attempt ends (waits for the\n"
     "                 task to start if it has not)\n"
     "  --attempt N    attempt N, counting from 1 (default: the latest)\n"
     "  --timestamps   start each line with the time loomd stored it (UTC, ms)\n"},
    {"watch", cmd_watch, "watch RUN", "Follow a run live until it ends.",
     "In a terminal: the tasks in DAG order with state, attempts, duration and\n"
     "agent, and a progress line, redrawn in place as they change (a run too\n"
     "large for the terminal shows the running and failed tasks first and counts\n"
     "the rest). Otherwise one line per change: \"12:01:02 train running on gpu-01\".\n"
     "Exit status 0 if the run succeeded, 1 if it did not.\n"},
    {"cancel", cmd_cancel, "cancel RUN", "Cancel a run that has not ended.",
     "Pending and queued tasks are cancelled; running ones are stopped on their\n"
     "agents. Exit status 1 if the run has already ended.\n"},
    {"pipelines", cmd_pipelines, "pipelines [show NAME [--version N] | history NAME]",
     "List pipelines, show one pipeline's source, or its versions.",
     "  show NAME         the versions and the latest source\n"
     "  show NAME --version N   the source of version N\n"
     "  history NAME      every version: hash, code bundle, git commit, when\n"},
    {"agents", cmd_agents,
     "agents [drain|cordon|uncordon|revoke NAME | token [--name N] [--ttl DUR] | keys | "
     "approve KEY [--name N]]",
     "List agents (slots, CPUs, memory, GPUs in use), stop/resume giving one work, or enrol "
     "them.",
     "  drain NAME     take no new work, finish what runs (shown as draining)\n"
     "  cordon NAME    take no new work\n"
     "  uncordon NAME  take work again\n"
     "  token [--name N] [--ttl DUR]  a one-time join token for a new agent (default\n"
     "                 valid 1h); give it to the agent as LOOM_JOIN_TOKEN\n"
     "  keys           agents' public keys: pending, approved, revoked\n"
     "  approve KEY [--name N]  let in an agent that asked without a token\n"
     "  revoke NAME    cut an agent off now; its key is refused from then on\n"},
    {"artifacts", cmd_artifacts, "artifacts RUN [TASK] | artifacts get RUN TASK PATH [-o FILE]",
     "List the files a run's tasks left (outputs), or download one.",
     "  get RUN TASK PATH  write the file to stdout, or with -o FILE to FILE (through a\n"
     "                     temporary file: a failed download leaves nothing)\n"},
    {"lineage", cmd_lineage, "lineage HASH | lineage RUN:TASK:PATH",
     "Where an artifact came from: the runs, tasks, code and data that made it.", NULL},
    {"models", cmd_models, "models [show NAME | alias NAME ALIAS VERSION]",
     "List registered models, one model's versions, or point an alias at a version.",
     "  show NAME                   every version with its metrics, run and aliases\n"
     "  alias NAME ALIAS VERSION    move ALIAS (champion, challenger...) to VERSION;\n"
     "                              a model.alias event other pipelines can trigger on\n"},
    {"metrics", cmd_metrics, "metrics PIPELINE TASK",
     "A task's metrics across the pipeline's recent runs, newest first.", NULL},
    {"gc", cmd_gc, "gc [--keep-last N] [--max-age DURATION] [--dry-run]",
     "Delete old runs (logs, records) and the stored files nothing refers to any more.",
     "  --keep-last N     keep each pipeline's newest N runs\n"
     "  --max-age D       delete ended runs older than D (30d, 12h)\n"
     "  --dry-run         say what would go, delete nothing\n"
     "With both, a run goes only when it is beyond the newest N and older than D.\n"
     "Runs that registered a model version are kept, and so is every file a model\n"
     "version, a stored pipeline's code bundle or a kept run refers to.\n"},
    {"triggers", cmd_triggers, "triggers [--explain PIPELINE] [--limit N]",
     "List every trigger and its next fire, or why a pipeline's triggers did what they did.",
     "  --explain PIPELINE  the latest trigger decisions of PIPELINE, oldest first:\n"
     "                      started, queued, debounced, skipped, filtered, missed, with why\n"
     "  --limit N           at most N decisions (default 20)\n"},
    {"events", cmd_events,
     "events [--name NAME] [--limit N] | events send NAME [-d JSON | --data-file FILE] [--key KEY]",
     "List recent events and what they started, or send one (what a monitor does).",
     "  send NAME        POST an event: pipelines with `event: NAME` triggers react\n"
     "  -d JSON          its payload, a JSON object (default {}); tasks see event.FIELD\n"
     "  --data-file FILE the payload from FILE (- for stdin)\n"
     "  --key KEY        an idempotency key: a second event with the same key starts nothing\n"
     "  --name NAME      list only events called NAME\n"},
    {"cron", cmd_cron, "cron \"EXPR\" [--tz ZONE] [-n N] [--from TIME]",
     "Print the next fire times of a cron expression, offline.",
     "  --tz ZONE      an IANA time zone such as Europe/Berlin (default UTC)\n"
     "  -n, --count N  how many fire times to show (default 5, at most 1000)\n"
     "  --from TIME    fire times at or after TIME (default: now): RFC 3339 such as\n"
     "                 2026-03-08T00:00:00Z or ...+01:00, a wall time in the zone such as\n"
     "                 \"2026-03-08 00:00\", or @UNIXSECONDS\n"
     "Exit status 1 if the expression never fires.\n"},
    {"pause", cmd_pause, "pause PIPELINE",
     "Stop a pipeline's triggers from starting runs (runs started by hand still start).",
     "Schedules skip their fire times while paused; data files that arrive wait, and\n"
     "start their run on resume; events are recorded as skipped.\n"},
    {"resume", cmd_pause, "resume PIPELINE", "Let a paused pipeline's triggers start runs again.",
     NULL},
    {"up", cmd_up, "up [--home DIR] [--http HOST:PORT] [--bind ENDPOINT] [--slots N] [--name NAME]",
     "Run loomd and one loom-agent on this machine, until Ctrl-C.",
     "  --home DIR        state folder (default: $LOOM_HOME, else ~/.loom)\n"
     "  --http HOST:PORT  loomd's HTTP API address (default 127.0.0.1:8420; port 0:\n"
     "                    any free port)\n"
     "  --bind ENDPOINT   where agents connect (default tcp://127.0.0.1:8421)\n"
     "  --slots N         tasks the local agent runs at once (default: the agent's)\n"
     "  --name NAME       the local agent's name (default \"local\")\n"
     "loomd and loom-agent are looked for beside this loom, then on $PATH.\n"
     "Exit status 1 if either stops unexpectedly.\n"},
    {"drift", cmd_drift,
     "drift REFERENCE.csv CURRENT.csv [--columns A,B] [--numeric A,B] [--categorical C]\n"
     "       [--test COL=TEST] [--threshold COL=X] [--share X] [--seed N] [--sample N]",
     "Compare two CSV datasets column by column for data drift, offline.",
     "Reads both files once (RFC 4180 CSV with a header row) and tests each column\n"
     "of the reference (all must be in the current file, in any order). A column is\n"
     "numeric when every value is a finite number, else categorical. Empty, NA, NaN\n"
     "and null (any case) count as missing and are left out.\n"
     "  --columns A,B        compare only these columns\n"
     "  --numeric A,B        treat these as numeric (other values count as invalid)\n"
     "  --categorical C      treat these as categories\n"
     "  --test COL=TEST      psi, ks, wasserstein, js or chisq for one column\n"
     "  --threshold COL=X    that column's threshold (p-value or distance)\n"
     "  --share X            the dataset drifts when at least this share of the\n"
     "                       columns tested drift (default 0.5)\n"
     "  --sample N           numbers kept per column and file before sampling\n"
     "                       (default 1000000)\n"
     "  --seed N             seed of that sample (default 1)\n"
     "Defaults: with at most 1000 reference rows, ks for numbers and chisq for\n"
     "categories (drift when p < 0.05); beyond, wasserstein (W1 / reference std)\n"
     "and js (Jensen-Shannon distance, base 2) (drift when >= 0.1).\n"
     "PSI and JS use 10 reference-decile bins; PSI counts an empty bin as 0.0001.\n"
     "Exit status: 0 no drift, 1 drift found, 2 bad usage or input.\n"
     "`loom drift perf --help`: a model metric on labelled predictions against a\n"
     "baseline (accuracy, auc, rmse).\n"},
    {"secrets", cmd_secrets, "secrets [list | set NAME | rm NAME]",
     "Store secrets for tasks (encrypted in loomd), list them by name, remove them.",
     "  set NAME  store or replace NAME; the value is read from stdin (hidden at a\n"
     "            terminal; one trailing newline dropped), never from the command line\n"
     "  list      names, when set, and which pipelines' tasks use each: never values\n"
     "  rm NAME   remove NAME; tasks that list it then fail to start\n"
     "A task receives the secrets it lists under `secrets:` (see docs/dag-format.md).\n"},
    {"hooks", cmd_hooks, "hooks [list] | hooks secret set HOOK [--generate] | hooks secret rm HOOK",
     "Manage the secrets that webhook deliveries are signed with.",
     "  HOOK        alertmanager, s3, events (every event without its own) or events.NAME\n"
     "  secret set  store HOOK's secret, read from stdin (never from the command line)\n"
     "  --generate  make a random secret instead, store it and print it once\n"
     "  secret rm   remove HOOK's secret\n"
     "  list        which hooks have a secret\n"
     "A delivery then carries X-Loom-Signature: sha256=<hex HMAC-SHA256 of the body>\n"
     "(or GitHub's X-Hub-Signature-256); see docs/api.md.\n"},
    {"tokens", cmd_tokens,
     "tokens [list | create --role ROLE [--name NAME] [--ttl DURATION] | revoke ID]",
     "Manage API tokens (admin): create one, list them, revoke one.",
     "  create --role ROLE  a new token with role read (GET routes), operate (also submit,\n"
     "                      run, cancel, send events, pause) or admin (also gc, tokens,\n"
     "                      agent drain/cordon); printed once, alone on stdout\n"
     "  --name NAME         what it is for (shown by list)\n"
     "  --ttl DURATION      it stops working after DURATION (30d, 12h); default: never\n"
     "  list                every token: id, role, state, name, last use (never secrets)\n"
     "  revoke ID           the token stops working at its next request\n"
     "Agent join tokens: `loom agents token`.\n"},
    {"help", cmd_help, "help [COMMAND]", "Show help for loom or one command.", NULL},
};

#define N_COMMANDS (sizeof commands / sizeof commands[0])

static const cli_cmd_t *find_command(const char *name)
{
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0) return &commands[i];
    return NULL;
}

static void print_usage(FILE *out)
{
    fprintf(out, "usage: loom [--server URL] [--json] COMMAND [ARGS]\n\nCommands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\nOptions (also accepted after the command):\n"
                 "  --server URL  loomd's HTTP address. Default: $LOOM_SERVER, else \"http\" in\n"
                 "                $LOOM_HOME/loomd.json (LOOM_HOME defaults to ~/.loom), else\n"
                 "                http://127.0.0.1:8420\n"
                 "Credentials: $LOOM_TOKEN, else `token` in $LOOM_CONFIG or\n"
                 "~/.config/loom/config (`key = value` lines: server, token, ca_cert; mode\n"
                 "0600), else $LOOM_HOME/admin.token for the loomd of $LOOM_HOME. For https\n"
                 "with a private CA: $LOOM_CA_CERT or ca_cert.\n"
                 "  --json        print loomd's JSON answer instead of a table\n"
                 "  -h, --help    this help; `loom COMMAND --help` for one command\n"
                 "  --version     print loom's version\n"
                 "\nExit status:\n"
                 "  0  success\n"
                 "  1  it failed: the run failed or was cancelled, a DAG is invalid, or loomd\n"
                 "     refused the request (its message is printed)\n"
                 "  2  usage error: unknown command or option, missing or bad argument\n"
                 "  3  cannot reach loomd (start one with `loom up`)\n");
}

static int cmd_help(loom_cli_t *cli, int argc, char **argv)
{
    int stop = cli_opts_common_only(cli, argc, argv);
    if (stop >= 0) return stop;
    if (optind >= argc) {
        print_usage(stdout);
        return CLI_EXIT_OK;
    }
    const cli_cmd_t *cmd = find_command(argv[optind]);
    if (!cmd) return cli_usage_error(cli, "unknown command '%s'", argv[optind]);
    cli_print_help(cmd, stdout);
    return CLI_EXIT_OK;
}

/* Options before the command. Returns -1 to go on, else an exit status. */
static int parse_global(loom_cli_t *cli, int argc, char **argv)
{
    enum { OPT_VERSION = 0x2000 };
    static const struct option longopts[] = {
        CLI_COMMON_LONGOPTS, {"version", no_argument, NULL, OPT_VERSION}, {0}};
    static const cli_cmd_t top = {"", NULL, "[--server URL] [--json] COMMAND [ARGS]", "", NULL};
    cli->cmd = &top;
    snprintf(cli->prog, sizeof cli->prog, "loom");
    int c;
    /* "+": stop at the command; its own options are its business. */
    while ((c = getopt_long(argc, argv, "+h", longopts, NULL)) != -1) {
        if (c == OPT_VERSION) {
            printf("loom %s\n", LOOM_VERSION);
            return CLI_EXIT_OK;
        }
        if (c == 'h') {
            print_usage(stdout);
            return CLI_EXIT_OK;
        }
        int rc = cli_opt_common(cli, c);
        if (rc >= 0) return rc;
    }
    return -1;
}

int main(int argc, char **argv)
{
    loom_cli_t cli = {0};
    int rc = parse_global(&cli, argc, argv);
    if (rc >= 0) goto out;
    if (optind >= argc) {
        fprintf(stderr, "loom: missing command\n\n");
        print_usage(stderr);
        rc = CLI_EXIT_USAGE;
        goto out;
    }
    cli.cmd = find_command(argv[optind]);
    if (!cli.cmd) {
        fprintf(stderr, "loom: unknown command '%s' (see `loom --help`)\n", argv[optind]);
        rc = CLI_EXIT_USAGE;
        goto out;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "loom: cannot initialise libcurl\n");
        rc = CLI_EXIT_FAIL;
        goto out;
    }
    rc = cli.cmd->run(&cli, argc - optind, argv + optind);
    curl_global_cleanup();
out:
    cli_free(&cli);
    if (fflush(stdout) != 0 && rc == CLI_EXIT_OK) rc = CLI_EXIT_FAIL;
    return rc;
}
