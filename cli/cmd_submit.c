/* `loom submit FILE` sends a DAG file to loomd together with a code bundle
 * of the folder it sits in: every file is hashed (streamed, never whole in
 * memory), loomd says which hashes it lacks, only those are uploaded, then
 * the manifest, then the DAG naming the manifest. See docs/bundles.md. */
#include "cli.h"
#include "fmt.h"
#include "table.h"

#include "loom/bundle.h"
#include "loom/dag.h"
#include "loom/err.h"
#include "loom/map.h"
#include "loom/util.h"

#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* What one submit may bundle: past these, the folder is almost certainly
 * not just code (data sets, checkpoints, a virtualenv) and belongs in
 * .loomignore. */
#define BUNDLE_MAX_FILES 10000
#define BUNDLE_MAX_BYTES (2ull << 30)
#define GIT_OUT_MAX 4096

typedef struct {
    loom_cli_t *cli;
    char *root; /* the folder bundled */
    loom_manifest_t m;
    char *manifest;
    size_t manifest_len;
    char manifest_hash[LOOM_HASH_HEX_LEN + 1];
    size_t uploaded;
    uint64_t uploaded_bytes;
    char *git_commit; /* NULL: not in a git checkout */
    bool git_dirty;
} bundle_t;

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash && slash[1] ? slash + 1 : path;
}

/* The folder holding path: "dir/dag.yaml" -> "dir", "dag.yaml" -> ".". */
static char *folder_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash) return loom_xstrdup(".");
    if (slash == path) return loom_xstrdup("/");
    return loom_xstrndup(path, (size_t)(slash - path));
}

/* --- git ------------------------------------------------------------------ */

/* Runs `git -C dir args...` without a shell; keeps at most GIT_OUT_MAX bytes
 * of its stdout (the rest is read and dropped). Returns its exit status, or
 * -1 when git could not be run. */
static int run_git(const char *dir, const char *const *args, loom_buf_t *out)
{
    const char *argv[16] = {"git", "-C", dir};
    size_t n = 3;
    for (; args[n - 3] && n < 15; n++) argv[n] = args[n - 3];
    argv[n] = NULL;
    size_t n_env = 0;
    while (environ[n_env]) n_env++;
    char **envp = loom_xcalloc(n_env + 2, sizeof *envp);
    for (size_t i = 0; i < n_env; i++) envp[i] = environ[i];
    envp[n_env] = "GIT_OPTIONAL_LOCKS=0"; /* status must not take the index lock */
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
        free(envp);
        return -1;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    pid_t pid;
    int rc = posix_spawnp(&pid, "git", &fa, NULL, (char *const *)argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    free(envp);
    close(fds[1]);
    if (rc != 0) {
        close(fds[0]);
        return -1;
    }
    char buf[4096];
    ssize_t got;
    while ((got = read(fds[0], buf, sizeof buf)) != 0) {
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) break;
        if (out->len < GIT_OUT_MAX) loom_buf_append(out, buf, (size_t)got);
    }
    close(fds[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* The commit the folder is checked out at, and whether the folder has
 * changes git would commit. Not a checkout, no commit yet, or no git: no
 * origin is recorded. */
static void git_origin(bundle_t *b)
{
    static const char *const head[] = {"rev-parse", "--verify", "-q", "HEAD", NULL};
    static const char *const status[] = {"status", "--porcelain", "--", ".", NULL};
    loom_buf_t out = {0};
    if (run_git(b->root, head, &out) != 0 || !out.data) {
        loom_buf_free(&out);
        return;
    }
    size_t len = strcspn(out.data, "\r\n");
    if (len == 40 || len == LOOM_HASH_HEX_LEN) b->git_commit = loom_xstrndup(out.data, len);
    loom_buf_reset(&out);
    if (b->git_commit) b->git_dirty = run_git(b->root, status, &out) != 0 || out.len > 0;
    loom_buf_free(&out);
}

/* --- building the bundle -------------------------------------------------- */

static void on_walk_skip(void *ud, const char *path, const char *why)
{
    bundle_t *b = ud;
    char *safe = cli_sanitize(path);
    fprintf(stderr, "loom: warning: not bundled: %s/%s: %s\n", b->root, safe, why);
    free(safe);
}

static int hash_files(bundle_t *b)
{
    for (size_t i = 0; i < b->m.n; i++) {
        loom_bundle_file_t *f = &b->m.files[i];
        char *path = loom_xasprintf("%s/%s", b->root, f->path);
        int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        int rc = fd < 0 ? LOOM_EIO : loom_hash_fd(fd, f->hash, &f->size);
        if (rc) cli_error("%s: cannot read it: %s", path, strerror(errno));
        if (fd >= 0) close(fd);
        free(path);
        if (rc) return CLI_EXIT_FAIL;
    }
    return CLI_EXIT_OK;
}

static int build_bundle(bundle_t *b)
{
    loom_ignore_t *ig = NULL;
    char why[512];
    if (loom_ignore_load(b->root, &ig, NULL) != 0) {
        cli_error("%s: cannot read its .loomignore or .gitignore: %s", b->root, strerror(errno));
        return CLI_EXIT_FAIL;
    }
    loom_walk_opts_t opts = {.max_files = BUNDLE_MAX_FILES,
                             .max_bytes = BUNDLE_MAX_BYTES,
                             .on_skip = on_walk_skip,
                             .ud = b};
    int rc = loom_bundle_walk(b->root, ig, &opts, &b->m, why, sizeof why);
    loom_ignore_destroy(&ig);
    if (rc == LOOM_ETOOBIG) {
        cli_error("%s: too much to bundle: %s (limits: %d files, %llu GiB)", b->root, why,
                  BUNDLE_MAX_FILES, BUNDLE_MAX_BYTES >> 30);
        fprintf(stderr,
                "loom: list what the tasks do not need (data, checkpoints, virtualenvs) in "
                "%s/.loomignore, or submit with --no-bundle\n",
                b->root);
        return CLI_EXIT_FAIL;
    }
    if (rc) {
        cli_error("%s: cannot bundle: %s", b->root, why);
        if (rc == LOOM_EINVAL) fprintf(stderr, "loom: list it in %s/.loomignore\n", b->root);
        return CLI_EXIT_FAIL;
    }
    if (hash_files(b) != CLI_EXIT_OK) return CLI_EXIT_FAIL;
    if (loom_manifest_encode(&b->m, &b->manifest, &b->manifest_len, why, sizeof why) != 0) {
        cli_error("%s: cannot bundle: %s", b->root, why);
        return CLI_EXIT_FAIL;
    }
    loom_hash_bytes(b->manifest, b->manifest_len, b->manifest_hash);
    git_origin(b);
    return CLI_EXIT_OK;
}

/* --- uploading ------------------------------------------------------------ */

/* Asks loomd which of the bundle's objects it lacks; fills *missing with
 * them (keys borrowed from *resp, which the caller frees). */
static int ask_missing(bundle_t *b, json_t **resp, loom_map_t *missing)
{
    json_t *hashes = json_array();
    loom_map_t seen = {0};
    for (size_t i = 0; i < b->m.n; i++) {
        if (loom_smap_get(&seen, b->m.files[i].hash)) continue;
        loom_smap_put(&seen, b->m.files[i].hash, (void *)1);
        json_array_append_new(hashes, json_string(b->m.files[i].hash));
    }
    loom_map_free(&seen);
    json_array_append_new(hashes, json_string(b->manifest_hash));
    json_t *body = json_pack("{s:o}", "hashes", hashes);
    cli_http_resp_t r;
    int rc = cli_fetch(b->cli, "POST", "/api/v1/objects/missing", body, &r);
    json_decref(body);
    json_t *list = cli_jarr(r.json, "missing");
    if (rc == CLI_EXIT_OK && !list) {
        cli_error("unexpected answer from loomd: no \"missing\" list");
        rc = CLI_EXIT_FAIL;
    }
    *resp = NULL;
    if (rc == CLI_EXIT_OK) {
        size_t i;
        json_t *h;
        json_array_foreach(list, i, h)
        {
            if (json_is_string(h)) loom_smap_put(missing, json_string_value(h), (void *)1);
        }
        *resp = json_incref(r.json);
    }
    cli_http_resp_free(&r);
    return rc;
}

/* Reports a PUT that did not store the object. */
static int put_failed(bundle_t *b, const char *what, int err, const cli_http_resp_t *r)
{
    if (err == 0 && r->status == 422) {
        cli_error("%s changed while it was being submitted; submit again", what);
        return CLI_EXIT_FAIL;
    }
    if (err == 0 && r->status >= 200 && r->status < 300) return CLI_EXIT_OK;
    if (err == 0) {
        const char *msg = cli_jstr(r->json, "error");
        cli_error("cannot upload %s: %s", what, msg ? msg : "loomd said no");
        return CLI_EXIT_FAIL;
    }
    return cli_stream_failed(b->cli, err, r);
}

static int upload_file(bundle_t *b, const loom_bundle_file_t *f)
{
    char *path = loom_xasprintf("%s/%s", b->root, f->path);
    char *rel = loom_xasprintf("/api/v1/objects/%s", f->hash);
    char *url = cli_url(b->cli, rel);
    int rc = CLI_EXIT_FAIL;
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        cli_error("%s: cannot read it: %s", path, strerror(errno));
    } else {
        cli_http_resp_t r;
        int err = cli_http_put_fd(url, fd, f->size, &r);
        rc = put_failed(b, path, err, &r);
        cli_http_resp_free(&r);
        close(fd);
    }
    if (rc == CLI_EXIT_OK) {
        b->uploaded++;
        b->uploaded_bytes += f->size;
    }
    free(url);
    free(rel);
    free(path);
    return rc;
}

static int upload_manifest(bundle_t *b)
{
    char *rel = loom_xasprintf("/api/v1/objects/%s", b->manifest_hash);
    char *url = cli_url(b->cli, rel);
    cli_http_resp_t r;
    int err = cli_http_put_data(url, b->manifest, b->manifest_len, &r);
    int rc = put_failed(b, "the bundle's manifest", err, &r);
    cli_http_resp_free(&r);
    free(url);
    free(rel);
    return rc;
}

/* Uploads what loomd lacks: files first, the manifest last, so loomd never
 * holds a manifest whose files are missing because of this upload. */
static int upload_bundle(bundle_t *b)
{
    json_t *resp = NULL;
    loom_map_t missing = {0};
    int rc = ask_missing(b, &resp, &missing);
    for (size_t i = 0; rc == CLI_EXIT_OK && i < b->m.n; i++) {
        const loom_bundle_file_t *f = &b->m.files[i];
        if (!loom_smap_get(&missing, f->hash)) continue;
        rc = upload_file(b, f);
        loom_smap_del(&missing, f->hash); /* the same content under two paths */
    }
    if (rc == CLI_EXIT_OK && loom_smap_get(&missing, b->manifest_hash)) rc = upload_manifest(b);
    loom_map_free(&missing);
    json_decref(resp);
    return rc;
}

static void bundle_free(bundle_t *b)
{
    loom_manifest_free(&b->m);
    free(b->manifest);
    free(b->root);
    free(b->git_commit);
}

/* --- the submit itself ---------------------------------------------------- */

/* Prints a 422's diagnostics as file:line:col: error: message. loomd names
 * the file by the base name we sent; show the path the user typed instead,
 * so editors can jump to it. */
static void print_diagnostics(const json_t *resp, const char *path)
{
    json_t *diags = cli_jarr(resp, "diagnostics");
    size_t i;
    json_t *d;
    if (!diags || json_array_size(diags) == 0) {
        const char *msg = cli_jstr(resp, "error");
        fprintf(stderr, "%s: error: %s\n", path, msg ? msg : "invalid DAG");
        return;
    }
    json_array_foreach(diags, i, d)
    {
        const char *file = cli_jstr(d, "file");
        const char *msg = cli_jstr(d, "message");
        if (!file || strcmp(file, base_name(path)) == 0) file = path;
        char *safe_file = cli_sanitize(file);
        char *safe_msg = cli_sanitize(msg ? msg : "invalid DAG");
        int64_t line = 0, col = 0;
        cli_jint(d, "line", &line);
        cli_jint(d, "col", &col);
        if (line > 0 && col > 0)
            fprintf(stderr, "%s:%lld:%lld: error: %s\n", safe_file, (long long)line, (long long)col,
                    safe_msg);
        else if (line > 0)
            fprintf(stderr, "%s:%lld: error: %s\n", safe_file, (long long)line, safe_msg);
        else
            fprintf(stderr, "%s: error: %s\n", safe_file, safe_msg);
        free(safe_file);
        free(safe_msg);
    }
}

static void print_submitted(const json_t *resp, const bundle_t *b)
{
    const char *name = cli_jstr(resp, "pipeline");
    int64_t version = 0, tasks = 0;
    cli_jint(resp, "version", &version);
    cli_jint(resp, "tasks", &tasks);
    char *safe = cli_sanitize(name ? name : "?");
    char extra[160] = "", size[32];
    if (b) {
        cli_fmt_bytes(b->uploaded_bytes, size, sizeof size);
        snprintf(extra, sizeof extra, ", bundle %zu file%s, %zu uploaded, %s", b->m.n,
                 b->m.n == 1 ? "" : "s", b->uploaded, size);
    }
    if (json_is_false(json_object_get(resp, "created")))
        printf("%s is unchanged (version %lld%s)\n", safe, (long long)version, extra);
    else
        printf("submitted %s version %lld (%lld task%s%s)\n", safe, (long long)version,
               (long long)tasks, tasks == 1 ? "" : "s", extra);
    free(safe);
    size_t i;
    json_t *w;
    json_array_foreach(cli_jarr(resp, "warnings"), i, w)
    {
        if (!json_is_string(w)) continue;
        char *text = cli_sanitize(json_string_value(w));
        fprintf(stderr, "loom: warning: %s\n", text);
        free(text);
    }
}

/* The request body: the DAG text, and the bundle and git origin if any. */
static json_t *submit_body(const char *path, char *src, size_t len, const bundle_t *b)
{
    json_t *source = json_stringn(src, len);
    if (!source) return NULL;
    json_t *body = json_object();
    json_object_set_new(body, "file", json_string(base_name(path)));
    json_object_set_new(body, "source", source);
    if (b) json_object_set_new(body, "bundle", json_string(b->manifest_hash));
    if (b && b->git_commit)
        json_object_set_new(body, "git",
                            json_pack("{s:s,s:b}", "commit", b->git_commit, "dirty", b->git_dirty));
    return body;
}

static int send_dag(loom_cli_t *cli, const char *path, json_t *body, const bundle_t *b)
{
    cli_http_resp_t r;
    int rc = cli_call(cli, "POST", "/api/v1/pipelines", body, CLI_API_TIMEOUT_S, &r);
    if (rc != CLI_EXIT_OK) goto out;
    if (r.status == 422) {
        if (cli->json && r.json) cli_print_json(r.json);
        print_diagnostics(r.json, path);
        rc = CLI_EXIT_FAIL;
        goto out;
    }
    rc = cli_check(cli, &r);
    if (rc != CLI_EXIT_OK) goto out;
    if (cli->json)
        cli_print_json(r.json);
    else
        print_submitted(r.json, b);
out:
    cli_http_resp_free(&r);
    return rc;
}

static int submit_file(loom_cli_t *cli, const char *path, bool with_bundle)
{
    char *why = NULL;
    size_t len = 0;
    char *src = cli_read_dag(path, &len, &why);
    if (!src) {
        cli_error("%s: %s", path, why);
        free(why);
        return CLI_EXIT_FAIL;
    }
    bundle_t b = {.cli = cli, .root = folder_of(path)};
    int rc = with_bundle ? build_bundle(&b) : CLI_EXIT_OK;
    if (rc == CLI_EXIT_OK && with_bundle) rc = upload_bundle(&b);
    json_t *body = rc == CLI_EXIT_OK ? submit_body(path, src, len, with_bundle ? &b : NULL) : NULL;
    if (rc == CLI_EXIT_OK && !body) {
        cli_error("%s: not UTF-8 text", path);
        rc = CLI_EXIT_FAIL;
    }
    if (rc == CLI_EXIT_OK) rc = send_dag(cli, path, body, with_bundle ? &b : NULL);
    json_decref(body);
    bundle_free(&b);
    free(src);
    return rc;
}

int cmd_submit(loom_cli_t *cli, int argc, char **argv)
{
    enum { OPT_NO_BUNDLE = 1 };
    static const struct option longopts[] = {
        {"no-bundle", no_argument, NULL, OPT_NO_BUNDLE}, CLI_COMMON_LONGOPTS, {0}};
    bool with_bundle = true;
    int rc = -1, c;
    cli_opts_begin(cli, argv);
    while (rc < 0 && (c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (c == OPT_NO_BUNDLE)
            with_bundle = false;
        else
            rc = cli_opt_common(cli, c);
    }
    if (rc >= 0) return rc;
    if (optind >= argc) return cli_usage_error(cli, "missing FILE");
    if (argc - optind > 1) return cli_usage_error(cli, "one FILE at a time");
    return submit_file(cli, argv[optind], with_bundle);
}
