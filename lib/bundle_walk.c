/* What goes into a code bundle: .loomignore / .gitignore rules (the subset
 * described in bundle.h) and the walk over the pipeline's folder. The walk
 * opens every folder relative to its parent with O_NOFOLLOW and never
 * follows a symbolic link, so nothing outside the folder is ever read. */
#include "loom/bundle.h"

#include "loom/err.h"
#include "loom/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define IGNORE_FILE_MAX (1024 * 1024)

typedef struct {
    char *pat;
    bool negate, dir_only, anchored;
} rule_t;

struct loom_ignore {
    rule_t *rules;
    size_t n, cap;
};

/* --- glob matching -------------------------------------------------------- */

/* "[...]" at p against c. Returns the length of the class, or 0 when p is
 * not a well-formed class (then '[' is matched literally). */
static size_t match_class(const char *p, char c, bool *matched)
{
    size_t i = 1;
    bool neg = p[i] == '!' || p[i] == '^';
    if (neg) i++;
    bool hit = false;
    for (bool first = true; p[i] && (first || p[i] != ']'); first = false) {
        char lo = p[i], hi = lo;
        if (p[i + 1] == '-' && p[i + 2] && p[i + 2] != ']') {
            hi = p[i + 2];
            i += 3;
        } else {
            i++;
        }
        if (c >= lo && c <= hi) hit = true;
    }
    if (p[i] != ']') return 0;
    *matched = c != '/' && hit != neg;
    return i + 1;
}

static bool glob(const char *p, const char *t);

/* "**" followed by "/" or the end, as a whole segment. */
static bool is_globstar(const char *p, const char *start)
{
    return p[0] == '*' && p[1] == '*' && (p == start || p[-1] == '/') &&
           (p[2] == '/' || p[2] == '\0');
}

static bool globstar(const char *p, const char *t)
{
    if (p[2] == '\0') return true; /* a trailing globstar: everything below */
    for (const char *s = t;; s++) {
        if ((s == t || s[-1] == '/') && glob(p + 3, s)) return true;
        if (!*s) return false;
    }
}

static bool glob_at(const char *p, const char *t, const char *start)
{
    for (; *p; p++, t++) {
        if (is_globstar(p, start)) return globstar(p, t);
        if (*p == '*') {
            for (const char *s = t;; s++) {
                if (glob_at(p + 1, s, start)) return true;
                if (!*s || *s == '/') return false;
            }
        }
        if (!*t) return false;
        if (*p == '?') {
            if (*t == '/') return false;
            continue;
        }
        if (*p == '[') {
            bool matched = false;
            size_t n = match_class(p, *t, &matched);
            if (n) {
                if (!matched) return false;
                p += n - 1;
                continue;
            }
        }
        if (*p == '\\' && p[1]) p++;
        if (*p != *t) return false;
    }
    return *t == '\0';
}

static bool glob(const char *p, const char *t)
{
    return glob_at(p, t, p);
}

/* --- rules ---------------------------------------------------------------- */

loom_ignore_t *loom_ignore_new(void)
{
    return loom_xcalloc(1, sizeof(loom_ignore_t));
}

void loom_ignore_destroy(loom_ignore_t **igp)
{
    loom_ignore_t *ig = igp ? *igp : NULL;
    if (!ig) return;
    for (size_t i = 0; i < ig->n; i++) free(ig->rules[i].pat);
    free(ig->rules);
    free(ig);
    *igp = NULL;
}

/* One line, without its newline. */
static void add_line(loom_ignore_t *ig, const char *line, size_t len)
{
    if (len && line[len - 1] == '\r') len--;
    /* Trailing spaces go, unless quoted with a backslash. */
    while (len && line[len - 1] == ' ' && !(len >= 2 && line[len - 2] == '\\')) len--;
    if (len == 0 || line[0] == '#') return;
    rule_t r = {0};
    if (line[0] == '!') {
        r.negate = true;
        line++;
        len--;
    } else if (line[0] == '\\' && len > 1 && (line[1] == '#' || line[1] == '!')) {
        line++;
        len--;
    }
    if (len && line[len - 1] == '/') {
        r.dir_only = true;
        len--;
    }
    r.anchored = memchr(line, '/', len) != NULL;
    if (len && line[0] == '/') {
        line++;
        len--;
    }
    if (len == 0) return;
    r.pat = loom_xstrndup(line, len);
    if (ig->n == ig->cap) {
        ig->cap = ig->cap ? ig->cap * 2 : 16;
        ig->rules = loom_xrealloc(ig->rules, ig->cap * sizeof *ig->rules);
    }
    ig->rules[ig->n++] = r;
}

void loom_ignore_add_text(loom_ignore_t *ig, const char *text, size_t len)
{
    const char *end = text + len;
    while (text < end) {
        const char *nl = memchr(text, '\n', (size_t)(end - text));
        size_t n = nl ? (size_t)(nl - text) : (size_t)(end - text);
        add_line(ig, text, n);
        text += n + (nl != NULL);
    }
}

bool loom_ignore_match(const loom_ignore_t *ig, const char *path, bool is_dir)
{
    if (!ig) return false;
    const char *slash = strrchr(path, '/');
    const char *name = slash ? slash + 1 : path;
    bool ignored = false;
    for (size_t i = 0; i < ig->n; i++) {
        const rule_t *r = &ig->rules[i];
        if (r->dir_only && !is_dir) continue;
        if (r->negate != ignored) continue; /* cannot change the outcome */
        if (glob(r->pat, r->anchored ? path : name)) ignored = !r->negate;
    }
    return ignored;
}

int loom_ignore_load(const char *root, loom_ignore_t **out, const char **source)
{
    static const char *const names[] = {".loomignore", ".gitignore"};
    *out = NULL;
    if (source) *source = NULL;
    for (size_t i = 0; i < 2; i++) {
        char *path = loom_xasprintf("%s/%s", root, names[i]);
        char *text = NULL;
        size_t len = 0;
        int rc = loom_read_file(path, IGNORE_FILE_MAX, &text, &len);
        free(path);
        if (rc == LOOM_ENOTFOUND) continue;
        if (rc) return LOOM_EIO;
        *out = loom_ignore_new();
        loom_ignore_add_text(*out, text, len);
        free(text);
        if (source) *source = names[i];
        return 0;
    }
    return 0;
}

/* --- the walk ------------------------------------------------------------- */

typedef struct {
    const loom_ignore_t *ig;
    const loom_walk_opts_t *o;
    size_t max_files;
    uint64_t bytes;
    loom_manifest_t *m;
    char *why;
    size_t whylen;
} walk_t;

#define WFAIL(w, code, ...)                                                                        \
    do {                                                                                           \
        snprintf((w)->why, (w)->whylen, __VA_ARGS__);                                              \
        return (code);                                                                             \
    } while (0)

static int walk_dir(walk_t *w, int dirfd, const char *prefix, int depth);

static void skip(walk_t *w, const char *path, const char *why)
{
    if (w->o && w->o->on_skip) w->o->on_skip(w->o->ud, path, why);
}

static int add_file(walk_t *w, const char *path, const struct stat *st)
{
    if (w->m->n >= w->max_files) WFAIL(w, LOOM_ETOOBIG, "more than %zu files", w->max_files);
    w->bytes += (uint64_t)st->st_size;
    if (w->o && w->o->max_bytes && w->bytes > w->o->max_bytes)
        WFAIL(w, LOOM_ETOOBIG, "more than %llu bytes (at %s)", (unsigned long long)w->o->max_bytes,
              path);
    loom_manifest_add(w->m, path, (uint32_t)st->st_mode, (uint64_t)st->st_size, NULL);
    return 0;
}

static int walk_entry(walk_t *w, int dirfd, const char *name, const char *path, int depth)
{
    struct stat st;
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno == ENOENT) return 0; /* gone since readdir */
        WFAIL(w, LOOM_EIO, "%s: %s", path, strerror(errno));
    }
    if (strcmp(name, ".git") == 0) return 0;
    if (S_ISLNK(st.st_mode)) {
        skip(w, path, "symbolic link (not followed)");
        return 0;
    }
    if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode)) {
        skip(w, path, "not a regular file");
        return 0;
    }
    if (loom_ignore_match(w->ig, path, S_ISDIR(st.st_mode))) return 0;
    int rc = loom_bundle_path_check(path, w->why, w->whylen);
    if (rc) return rc;
    if (S_ISREG(st.st_mode)) return add_file(w, path, &st);
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) WFAIL(w, LOOM_EIO, "%s: %s", path, strerror(errno));
    return walk_dir(w, fd, path, depth + 1);
}

/* Walks the folder open at dirfd (and closes it). */
static int walk_dir(walk_t *w, int dirfd, const char *prefix, int depth)
{
    if (depth > LOOM_BUNDLE_DEPTH_MAX) {
        close(dirfd);
        WFAIL(w, LOOM_EINVAL, "%s: folders nested deeper than %d", prefix, LOOM_BUNDLE_DEPTH_MAX);
    }
    DIR *d = fdopendir(dirfd);
    if (!d) {
        close(dirfd);
        WFAIL(w, LOOM_EIO, "%s: %s", prefix ? prefix : ".", strerror(errno));
    }
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (errno = 0, e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        char *path = prefix ? loom_xasprintf("%s/%s", prefix, e->d_name) : loom_xstrdup(e->d_name);
        rc = walk_entry(w, dirfd, e->d_name, path, depth);
        free(path);
    }
    if (rc == 0 && errno != 0) {
        snprintf(w->why, w->whylen, "%s: %s", prefix ? prefix : ".", strerror(errno));
        rc = LOOM_EIO;
    }
    closedir(d);
    return rc;
}

int loom_bundle_walk(const char *root, const loom_ignore_t *ig, const loom_walk_opts_t *opts,
                     loom_manifest_t *m, char *why, size_t whylen)
{
    walk_t w = {.ig = ig, .o = opts, .m = m, .why = why, .whylen = whylen};
    w.max_files = opts && opts->max_files ? opts->max_files : LOOM_MANIFEST_MAX_FILES;
    int fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) WFAIL(&w, LOOM_EIO, "%s: %s", root, strerror(errno));
    int rc = walk_dir(&w, fd, NULL, 1);
    if (rc == 0) loom_manifest_sort(m);
    return rc;
}
