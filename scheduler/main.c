/* loomd: parses flags, builds the scheduler and its HTTP API, runs the loop
 * until SIGINT or SIGTERM, then tears down. */
#include "api.h"
#include "auth.h"
#include "scheduler.h"

#include "loom/err.h"
#include "loom/log.h"
#include "loom/util.h"

#include <getopt.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    char *state_dir;
    char http_host[64];
    uint16_t http_port;
    const char *bind;
    uint64_t heartbeat_ms, agent_timeout_ms, max_log_bytes, min_free_bytes;
    loom_sync_mode sync;
    const char *pools[64];
    size_t n_pools;
    const char *secrets_key;
    const char *tls_cert, *tls_key; /* paths */
    uint64_t http_timeout_ms;
    unsigned http_max_conns, http_max_per_ip;
    const char *new_admin_token; /* --new-admin-token FILE: write one and exit */
} options_t;

typedef struct {
    uv_loop_t *loop;
    loom_sched_t *sched;
    loom_api_t *api;
    uv_signal_t sigint, sigterm;
    char addr_file[PATH_MAX];
    int closing;
} daemon_t;

static void usage(FILE *out)
{
    fputs("usage: loomd [options]\n"
          "  --state-dir DIR        database and logs (default $LOOM_HOME or ~/.loom)\n"
          "  --http HOST:PORT       HTTP API address (default 127.0.0.1:8420; port 0 = any)\n"
          "  --bind ENDPOINT        ZeroMQ endpoint for agents (default tcp://127.0.0.1:8421;\n"
          "                         tcp://127.0.0.1:* = any port)\n"
          "  --heartbeat DURATION   agent heartbeat interval (default 1s)\n"
          "  --agent-timeout DUR    silence before an agent is lost (default 10s)\n"
          "  --sync normal|full     SQLite durability (default normal: survives a crash of\n"
          "                         loomd; full also survives power loss, slower)\n"
          "  --pool NAME=LIMIT      at most LIMIT tasks of pool NAME at once (repeatable)\n"
          "  --max-log-bytes SIZE   keep at most SIZE of each attempt's output, then a notice\n"
          "                         (default 1G)\n"
          "  --min-free SIZE        free space kept on STATE_DIR's disk: below it loomd takes\n"
          "                         on no new work until space is freed (default 64M; 0: off)\n"
          "  --secrets-key FILE     key that encrypts stored secrets (default\n"
          "                         STATE_DIR/secrets.key, created on first start; keep it\n"
          "                         on another volume than loom.db, mode 0600)\n"
          "  --tls-cert FILE        serve HTTPS with this PEM certificate (chain)...\n"
          "  --tls-key FILE         ...and this PEM private key\n"
          "  --http-timeout DUR     a client must send its request headers within DUR and\n"
          "                         not stay silent longer mid-request (default 30s)\n"
          "  --http-max-conns N     open HTTP connections at most (default 1000)\n"
          "  --http-max-per-ip N    HTTP connections from one address at most (default 256)\n"
          "  --new-admin-token FILE create an admin API token, write it to FILE (mode 0600,\n"
          "                         never overwritten) and exit; works while loomd runs\n"
          "  --log-level LEVEL      debug, info, warn, error (default info)\n"
          "  --log-format FORMAT    text (default) or json: one JSON object per line\n"
          "                         (also LOOM_LOG_FORMAT)\n"
          "  --version, --help\n"
          "Once listening, loomd writes STATE_DIR/loomd.json with the bound addresses.\n"
          "On first start it writes an admin API token to STATE_DIR/admin.token.\n",
          out);
}

static int fail_flag(const char *flag, const char *value, const char *want)
{
    fprintf(stderr, "loomd: %s %s: %s\n", flag, value ? value : "", want);
    return 2;
}

static int parse_hostport(const char *s, options_t *o)
{
    const char *colon = strrchr(s, ':');
    int64_t port;
    if (!colon || colon == s || (size_t)(colon - s) >= sizeof o->http_host ||
        loom_parse_i64(colon + 1, 0, 65535, &port) != 0)
        return LOOM_EINVAL;
    memcpy(o->http_host, s, (size_t)(colon - s));
    o->http_host[colon - s] = '\0';
    o->http_port = (uint16_t)port;
    return 0;
}

static char *default_state_dir(void)
{
    const char *home = getenv("LOOM_HOME");
    if (home && *home) return loom_xstrdup(home);
    home = getenv("HOME");
    return loom_xasprintf("%s/.loom", home && *home ? home : ".");
}

static int parse_args(int argc, char **argv, options_t *o)
{
    static const struct option longopts[] = {{"state-dir", required_argument, NULL, 's'},
                                             {"http", required_argument, NULL, 'H'},
                                             {"bind", required_argument, NULL, 'b'},
                                             {"heartbeat", required_argument, NULL, 'h'},
                                             {"agent-timeout", required_argument, NULL, 't'},
                                             {"sync", required_argument, NULL, 'y'},
                                             {"pool", required_argument, NULL, 'p'},
                                             {"max-log-bytes", required_argument, NULL, 'm'},
                                             {"min-free", required_argument, NULL, 'F'},
                                             {"log-level", required_argument, NULL, 'l'},
                                             {"log-format", required_argument, NULL, 'J'},
                                             {"secrets-key", required_argument, NULL, 'k'},
                                             {"tls-cert", required_argument, NULL, 'C'},
                                             {"tls-key", required_argument, NULL, 'K'},
                                             {"http-timeout", required_argument, NULL, 'T'},
                                             {"http-max-conns", required_argument, NULL, 'M'},
                                             {"http-max-per-ip", required_argument, NULL, 'I'},
                                             {"new-admin-token", required_argument, NULL, 'N'},
                                             {"version", no_argument, NULL, 'V'},
                                             {"help", no_argument, NULL, '?'},
                                             {NULL, 0, NULL, 0}};
    int c;
    loom_log_level level;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 's':
            free(o->state_dir);
            o->state_dir = loom_xstrdup(optarg);
            break;
        case 'H':
            if (parse_hostport(optarg, o)) return fail_flag("--http", optarg, "want HOST:PORT");
            break;
        case 'b':
            o->bind = optarg;
            break;
        case 'k':
            o->secrets_key = optarg;
            break;
        case 'h':
            if (loom_parse_duration_ms(optarg, &o->heartbeat_ms) || o->heartbeat_ms < 10)
                return fail_flag("--heartbeat", optarg, "want a duration of at least 10ms");
            break;
        case 't':
            if (loom_parse_duration_ms(optarg, &o->agent_timeout_ms) || o->agent_timeout_ms < 50)
                return fail_flag("--agent-timeout", optarg, "want a duration of at least 50ms");
            break;
        case 'y':
            if (strcmp(optarg, "normal") == 0)
                o->sync = LOOM_SYNC_NORMAL;
            else if (strcmp(optarg, "full") == 0)
                o->sync = LOOM_SYNC_FULL;
            else
                return fail_flag("--sync", optarg, "want normal or full");
            break;
        case 'm':
            if (loom_parse_size(optarg, &o->max_log_bytes) || o->max_log_bytes < 1024)
                return fail_flag("--max-log-bytes", optarg, "want a size of at least 1K");
            break;
        case 'F':
            if (loom_parse_size(optarg, &o->min_free_bytes))
                return fail_flag("--min-free", optarg, "want a size such as 64M");
            if (o->min_free_bytes == 0) o->min_free_bytes = 1; /* off: any room at all */
            break;
        case 'p':
            if (o->n_pools == sizeof o->pools / sizeof o->pools[0])
                return fail_flag("--pool", optarg, "too many pools");
            o->pools[o->n_pools++] = optarg;
            break;
        case 'l':
            if (loom_log_parse_level(optarg, &level))
                return fail_flag("--log-level", optarg, "want debug, info, warn or error");
            loom_log_set_level(level);
            break;
        case 'J': {
            loom_log_format format;
            if (loom_log_parse_format(optarg, &format))
                return fail_flag("--log-format", optarg, "want text or json");
            loom_log_set_format(format);
            break;
        }
        case 'C':
            o->tls_cert = optarg;
            break;
        case 'K':
            o->tls_key = optarg;
            break;
        case 'T':
            if (loom_parse_duration_ms(optarg, &o->http_timeout_ms) || o->http_timeout_ms < 100 ||
                o->http_timeout_ms > 3600000)
                return fail_flag("--http-timeout", optarg, "want a duration from 100ms to 1h");
            break;
        case 'M':
        case 'I': {
            int64_t n;
            if (loom_parse_i64(optarg, 1, 100000, &n))
                return fail_flag(c == 'M' ? "--http-max-conns" : "--http-max-per-ip", optarg,
                                 "want a number from 1 to 100000");
            if (c == 'M')
                o->http_max_conns = (unsigned)n;
            else
                o->http_max_per_ip = (unsigned)n;
            break;
        }
        case 'N':
            o->new_admin_token = optarg;
            break;
        case 'V':
            printf("loomd %s\n", LOOM_VERSION);
            exit(0);
        default:
            if (optopt == 0 && strcmp(argv[optind - 1], "--help") == 0) {
                usage(stdout);
                exit(0);
            }
            fprintf(stderr, "loomd: unknown or incomplete option \"%s\"\n", argv[optind - 1]);
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "loomd: unexpected argument \"%s\"\n", argv[optind]);
        return 2;
    }
    if (!o->tls_cert != !o->tls_key) {
        fprintf(stderr, "loomd: --tls-cert and --tls-key go together\n");
        return 2;
    }
    return 0;
}

/* --new-admin-token FILE: opens the database beside a running loomd (SQLite
 * arbitrates), adds an admin token and writes it to FILE. */
static int new_admin_token(const options_t *o)
{
    char why[512] = "";
    char *db = loom_xasprintf("%s/loom.db", o->state_dir);
    loom_store_t *store = NULL;
    int rc = access(db, F_OK) != 0 ? LOOM_ENOTFOUND : 0;
    if (rc)
        snprintf(why, sizeof why, "no loomd state in %s (no loom.db): check --state-dir",
                 o->state_dir);
    if (rc == 0) rc = loom_store_open(db, o->sync, &store, why, sizeof why);
    if (rc == 0)
        rc = loom_auth_new_admin_file(store, o->new_admin_token, "recovery", why, sizeof why);
    loom_store_destroy(&store);
    free(db);
    if (rc) {
        fprintf(stderr, "loomd: %s\n", why);
        return 1;
    }
    printf("wrote a new admin token to %s\n", o->new_admin_token);
    return 0;
}

/* Reads a PEM file for --tls-cert or --tls-key. */
static char *read_pem(const char *flag, const char *path)
{
    char *text = NULL;
    size_t len = 0;
    int rc = loom_read_file(path, 1 << 20, &text, &len);
    if (rc) {
        fprintf(stderr, "loomd: %s %s: %s\n", flag, path,
                rc == LOOM_ENOTFOUND ? "no such file" : "cannot read it (or over 1 MiB)");
        return NULL;
    }
    if (!strstr(text, "-----BEGIN ")) {
        fprintf(stderr, "loomd: %s %s: not a PEM file (no -----BEGIN line)\n", flag, path);
        free(text);
        return NULL;
    }
    return text;
}

static void on_closed(void *ud)
{
    daemon_t *d = ud;
    if (--d->closing == 0) uv_stop(d->loop);
}

static void on_signal(uv_signal_t *h, int signum)
{
    daemon_t *d = h->data;
    if (d->closing) return;
    LOG_INFO("signal %d: shutting down", signum);
    unlink(d->addr_file);
    uv_close((uv_handle_t *)&d->sigint, NULL);
    uv_close((uv_handle_t *)&d->sigterm, NULL);
    d->closing = 2;
    loom_api_close(d->api, on_closed, d);
    loom_sched_close(d->sched, on_closed, d);
}

static int write_addr_file(daemon_t *d, const options_t *o, uint16_t port, const char *zmq_ep)
{
    json_t *j = json_pack("{s:s,s:s,s:i}", "http", "", "zmq", zmq_ep, "pid", (int)getpid());
    char url[128];
    snprintf(url, sizeof url, "%s://%s:%u", o->tls_cert ? "https" : "http", o->http_host, port);
    json_object_set_new(j, "http", json_string(url));
    char *text = json_dumps(j, JSON_INDENT(2));
    json_decref(j);
    snprintf(d->addr_file, sizeof d->addr_file, "%s/loomd.json", o->state_dir);
    int rc = loom_write_file_atomic(d->addr_file, text, strlen(text));
    free(text);
    return rc;
}

int main(int argc, char **argv)
{
    options_t o = {.http_port = 8420, .bind = "tcp://127.0.0.1:8421"};
    snprintf(o.http_host, sizeof o.http_host, "127.0.0.1");
    loom_log_set_component("loomd");
    o.state_dir = default_state_dir();
    const char *env_format = getenv("LOOM_LOG_FORMAT");
    loom_log_format format;
    if (env_format && *env_format) {
        if (loom_log_parse_format(env_format, &format)) {
            free(o.state_dir);
            return fail_flag("LOOM_LOG_FORMAT", env_format, "want text or json");
        }
        loom_log_set_format(format);
    }
    int rc = parse_args(argc, argv, &o);
    if (rc) {
        free(o.state_dir);
        return rc;
    }
    if (sodium_init() < 0) {
        LOG_ERROR("libsodium failed to initialise");
        return 1;
    }
    if (o.new_admin_token) {
        rc = new_admin_token(&o);
        free(o.state_dir);
        return rc;
    }
    loom_api_options_t api_opts = {.timeout_ms = (uint32_t)o.http_timeout_ms,
                                   .max_conns = o.http_max_conns,
                                   .max_conns_per_ip = o.http_max_per_ip};
    char *cert = NULL, *key = NULL;
    if (o.tls_cert) {
        if (!loom_api_tls_supported()) {
            fprintf(stderr, "loomd: --tls-cert: this libmicrohttpd was built without TLS "
                            "(GnuTLS) support\n");
            free(o.state_dir);
            return 1;
        }
        cert = read_pem("--tls-cert", o.tls_cert);
        key = cert ? read_pem("--tls-key", o.tls_key) : NULL;
        if (!key) {
            free(cert);
            free(o.state_dir);
            return 2;
        }
        api_opts.tls_cert_pem = cert;
        api_opts.tls_key_pem = key;
    }
    daemon_t d = {.loop = uv_default_loop()};
    loom_sched_config_t cfg = {.state_dir = o.state_dir,
                               .bind = o.bind,
                               .heartbeat_ms = (uint32_t)o.heartbeat_ms,
                               .max_log_bytes = o.max_log_bytes,
                               .min_free_bytes = o.min_free_bytes,
                               .agent_timeout_ms = (uint32_t)o.agent_timeout_ms,
                               .sync = o.sync,
                               .pools = o.pools,
                               .n_pools = o.n_pools,
                               .secrets_key = o.secrets_key};
    char why[512] = "", endpoint[256] = "";
    uint16_t port = 0;
    d.sched = loom_sched_new(d.loop, &cfg);
    d.api = loom_api_new(d.loop, d.sched);
    loom_api_configure(d.api, &api_opts);
    if (loom_sched_open(d.sched, why, sizeof why) ||
        loom_auth_bootstrap(loom_sched_store(d.sched), o.state_dir, why, sizeof why) ||
        loom_sched_bind(d.sched, endpoint, sizeof endpoint, why, sizeof why) ||
        loom_api_listen(d.api, o.http_host, o.http_port, &port, why, sizeof why) ||
        (write_addr_file(&d, &o, port, endpoint) &&
         snprintf(why, sizeof why, "cannot write %s", d.addr_file))) {
        LOG_ERROR("%s", why);
        rc = 1;
        d.closing = 2;
        loom_api_close(d.api, on_closed, &d);
        loom_sched_close(d.sched, on_closed, &d);
    } else {
        uv_signal_init(d.loop, &d.sigint);
        uv_signal_init(d.loop, &d.sigterm);
        d.sigint.data = d.sigterm.data = &d;
        uv_signal_start(&d.sigint, on_signal, SIGINT);
        uv_signal_start(&d.sigterm, on_signal, SIGTERM);
        LOG_INFO("loomd %s ready state=%s http=%s://%s:%u agents=%s", LOOM_VERSION, o.state_dir,
                 o.tls_cert ? "https" : "http", o.http_host, port, endpoint);
    }
    uv_run(d.loop, UV_RUN_DEFAULT);
    uv_run(d.loop, UV_RUN_NOWAIT); /* let close callbacks finish */
    loom_api_destroy(&d.api);
    loom_sched_destroy(&d.sched);
    uv_loop_close(d.loop);
    if (key) sodium_memzero(key, strlen(key));
    free(cert);
    free(key);
    free(o.state_dir);
    return rc;
}
