/* `loom secrets` and `loom hooks`: store task secrets and webhook secrets
 * in loomd (encrypted there), list them by name, remove them. A value is
 * read from stdin, never from the command line, where `ps` would show it. */
#include "cli.h"
#include "fmt.h"
#include "table.h"

#include "loom/codec.h"
#include "loom/util.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

static void fmt_time(const json_t *o, const char *key, char *out, size_t len)
{
    int64_t ms = 0;
    if (!cli_jint(o, key, &ms) || ms <= 0) {
        snprintf(out, len, "-");
        return;
    }
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(out, len, "%Y-%m-%d %H:%M:%S", &tm);
}

/* The value from stdin: typed without echo at a terminal, else everything
 * piped in. One trailing newline is dropped. NULL (after a message) when
 * empty or too large; the caller wipes and frees it. */
static char *read_value(const char *what, size_t *len)
{
    bool tty = isatty(STDIN_FILENO);
    struct termios old, quiet;
    if (tty) {
        fprintf(stderr, "value for %s (input is hidden): ", what);
        fflush(stderr);
        if (tcgetattr(STDIN_FILENO, &old) == 0) {
            quiet = old;
            quiet.c_lflag &= ~(tcflag_t)ECHO;
            quiet.c_lflag |= ECHONL;
            tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
        } else {
            tty = false;
        }
    }
    size_t cap = LOOM_SECRET_VALUE_MAX + 2, n = 0;
    char *buf = loom_xmalloc(cap + 1);
    for (;;) {
        ssize_t got = read(STDIN_FILENO, buf + n, cap - n);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) break;
        n += (size_t)got;
        if (n == cap || (tty && memchr(buf + n - (size_t)got, '\n', (size_t)got))) break;
    }
    if (tty) tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
    if (tty) {
        char *nl = memchr(buf, '\n', n);
        if (nl) n = (size_t)(nl - buf) + 1;
    }
    if (n && buf[n - 1] == '\n') n--;
    if (n && buf[n - 1] == '\r') n--;
    buf[n] = '\0';
    if (n == 0 || n > LOOM_SECRET_VALUE_MAX || strlen(buf) != n) {
        cli_error("the value for %s must be 1 to %d bytes of text on stdin", what,
                  LOOM_SECRET_VALUE_MAX);
        sodium_memzero(buf, cap + 1);
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

/* PUTs {"value"} to path; the JSON text is wiped after. */
static int put_value(loom_cli_t *cli, const char *path, char *value, size_t len)
{
    json_t *body = json_pack("{s:s%}", "value", value, len);
    sodium_memzero(value, len);
    cli_http_resp_t r;
    int rc = body ? cli_fetch(cli, "PUT", path, body, &r) : CLI_EXIT_FAIL;
    if (body) {
        sodium_memzero((char *)json_string_value(json_object_get(body, "value")), len);
        json_decref(body);
        cli_http_resp_free(&r);
    }
    return rc;
}

static int delete_at(loom_cli_t *cli, const char *path, const char *what)
{
    cli_http_resp_t r;
    int rc = cli_fetch(cli, "DELETE", path, NULL, &r);
    if (rc == CLI_EXIT_OK && !cli->json) printf("removed %s\n", what);
    if (rc == CLI_EXIT_OK && cli->json) cli_print_json(r.json);
    cli_http_resp_free(&r);
    return rc;
}

static void print_secrets(const json_t *list)
{
    static const char *const headers[] = {"NAME", "CREATED", "UPDATED", "USED BY"};
    cli_table_t *t = cli_table_new(headers, 4);
    size_t i;
    json_t *s;
    json_array_foreach(list, i, s)
    {
        char created[64], updated[64];
        fmt_time(s, "created_ms", created, sizeof created);
        fmt_time(s, "updated_ms", updated, sizeof updated);
        loom_buf_t used = {0};
        size_t j;
        json_t *u;
        json_array_foreach(json_object_get(s, "used_by"), j, u)
            loom_buf_printf(&used, "%s%s", j ? ", " : "", json_string_value(u));
        cli_table_add(t, cli_jstr(s, "name"));
        cli_table_add(t, created);
        cli_table_add(t, updated);
        cli_table_add(t, used.len ? used.data : "-");
        loom_buf_free(&used);
    }
    cli_table_print(t, stdout);
    cli_table_destroy(&t);
}

static void print_hooks(const json_t *list)
{
    static const char *const headers[] = {"HOOK", "CREATED", "UPDATED"};
    cli_table_t *t = cli_table_new(headers, 3);
    size_t i;
    json_t *s;
    json_array_foreach(list, i, s)
    {
        char created[64], updated[64];
        fmt_time(s, "created_ms", created, sizeof created);
        fmt_time(s, "updated_ms", updated, sizeof updated);
        cli_table_add(t, cli_jstr(s, "name"));
        cli_table_add(t, created);
        cli_table_add(t, updated);
    }
    cli_table_print(t, stdout);
    cli_table_destroy(&t);
}

int cmd_secrets(loom_cli_t *cli, int argc, char **argv)
{
    int rc = cli_opts_common_only(cli, argc, argv);
    if (rc >= 0) return rc;
    const char *sub = optind < argc ? argv[optind] : "list";
    int left = argc - optind - (optind < argc);
    const char *name = left >= 1 ? argv[optind + 1] : NULL;
    if (strcmp(sub, "list") == 0 && left == 0)
        return cli_show_list(cli, "/api/v1/secrets", "secrets",
                             "no secrets (loom secrets set NAME stores one)", print_secrets);
    if ((strcmp(sub, "set") == 0 || strcmp(sub, "rm") == 0) && left == 1) {
        char *esc = cli_url_escape(name);
        char *path = loom_xasprintf("/api/v1/secrets/%s", esc);
        free(esc);
        if (strcmp(sub, "rm") == 0) {
            char *what = loom_xasprintf("secret %s", name);
            rc = delete_at(cli, path, what);
            free(what);
        } else {
            size_t len = 0;
            char *value = read_value(name, &len);
            rc = value ? put_value(cli, path, value, len) : CLI_EXIT_FAIL;
            free(value);
            if (rc == CLI_EXIT_OK) printf("stored secret %s\n", name);
        }
        free(path);
        return rc;
    }
    if (strcmp(sub, "set") == 0 && left > 1)
        return cli_usage_error(cli, "the value is read from stdin, not from the command line "
                                    "(where ps would show it)");
    return cli_usage_error(cli, "want list, set NAME or rm NAME");
}

int cmd_hooks(loom_cli_t *cli, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"generate", no_argument, NULL, 'g'}, CLI_COMMON_LONGOPTS, {0}};
    bool generate = false;
    int c;
    cli_opts_begin(cli, argv);
    while ((c = getopt_long(argc, argv, "+", longopts, NULL)) != -1) {
        if (c == 'g') {
            generate = true;
            continue;
        }
        int rc = cli_opt_common(cli, c);
        if (rc >= 0) return rc;
    }
    /* Options may also follow the operands: `hooks secret set s3 --generate`. */
    char *ops[4];
    int n = 0;
    for (int i = optind; i < argc; i++) {
        if (strcmp(argv[i], "--generate") == 0)
            generate = true;
        else if (n < 4)
            ops[n++] = argv[i];
        else
            return cli_usage_error(cli, "too many arguments");
    }
    if (n == 0 || (n == 1 && strcmp(ops[0], "list") == 0))
        return cli_show_list(cli, "/api/v1/hooks/secrets", "hooks",
                             "no hook has a secret (loom hooks secret set HOOK)", print_hooks);
    if (n != 3 || strcmp(ops[0], "secret") != 0 ||
        (strcmp(ops[1], "set") != 0 && strcmp(ops[1], "rm") != 0))
        return cli_usage_error(cli, "want list, secret set HOOK [--generate] or secret rm HOOK");
    const char *hook = ops[2];
    char *esc = cli_url_escape(hook);
    char *path = loom_xasprintf("/api/v1/hooks/secrets/%s", esc);
    free(esc);
    int rc;
    char *what = loom_xasprintf("the secret of hook %s", hook);
    if (strcmp(ops[1], "rm") == 0) {
        rc = delete_at(cli, path, what);
    } else if (generate) {
        uint8_t raw[32];
        char hex[2 * sizeof raw + 1];
        randombytes_buf(raw, sizeof raw);
        sodium_bin2hex(hex, sizeof hex, raw, sizeof raw);
        sodium_memzero(raw, sizeof raw);
        char *copy = loom_xstrdup(hex);
        rc = put_value(cli, path, copy, strlen(hex));
        free(copy);
        /* Shown once: loomd never gives it back. */
        if (rc == CLI_EXIT_OK) printf("%s\n", hex);
        sodium_memzero(hex, sizeof hex);
    } else {
        size_t len = 0;
        char *value = read_value(hook, &len);
        rc = value ? put_value(cli, path, value, len) : CLI_EXIT_FAIL;
        free(value);
        if (rc == CLI_EXIT_OK) printf("stored %s\n", what);
    }
    free(what);
    free(path);
    return rc;
}
