/* Blocking work on an attempt's outputs; see outputs.h. Runs on the thread
 * pool, so it may block, but it must not touch the agent. */
#include "outputs.h"

#include "workdir.h"

#include "loom/codec.h"
#include "loom/err.h"
#include "loom/map.h"
#include "loom/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Read size while hashing: large enough that the syscalls cost nothing
 * next to BLAKE2b, small enough to stay in cache. */
#define HASH_BUF (256 * 1024)

#define FAIL(code, ...)                                                                            \
    do {                                                                                           \
        snprintf(why, whylen, __VA_ARGS__);                                                        \
        return (code);                                                                             \
    } while (0)

/* --- patterns -------------------------------------------------------------- */

char *outputs_check_pattern(const char *pattern)
{
    if (!pattern || !*pattern) return loom_xstrdup("output \"\" is empty");
    if (pattern[0] == '/')
        return loom_xasprintf("output \"%s\" is an absolute path: outputs are relative to the "
                              "working folder",
                              pattern);
    for (const char *seg = pattern; *seg;) {
        size_t n = strcspn(seg, "/");
        if (n == 2 && seg[0] == '.' && seg[1] == '.')
            return loom_xasprintf("output \"%s\" leaves the working folder (a \"..\" segment)",
                                  pattern);
        seg += n;
        if (*seg == '/') seg++;
    }
    return NULL;
}

/* The pattern's segments, without empty and "." ones ("./out//a/" is
 * "out", "a"); none at all means the whole folder. */
static char **split_pattern(const char *pattern, size_t *n)
{
    char **segs = loom_xcalloc(strlen(pattern) / 2 + 2, sizeof *segs);
    size_t k = 0;
    for (const char *seg = pattern; *seg;) {
        size_t len = strcspn(seg, "/");
        if (len && !(len == 1 && seg[0] == '.')) segs[k++] = loom_xstrndup(seg, len);
        seg += len;
        if (*seg == '/') seg++;
    }
    *n = k;
    return segs;
}

static void free_strings(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++) free(v[i]);
    free(v);
}

/* --- the walk -------------------------------------------------------------- */

typedef struct {
    const char *pattern; /* for messages */
    char **paths;
    size_t n, cap;
    loom_map_t seen; /* path -> 1, across patterns */
    size_t matched;  /* files the current pattern matched */
    char *why;
    size_t whylen;
} walk_t;

static int add_file(walk_t *w, const char *path)
{
    char *why = w->why, bad[256];
    size_t whylen = w->whylen;
    if (loom_bundle_path_check(path, bad, sizeof bad) != 0)
        FAIL(LOOM_EINVAL, "output \"%s\": \"%s\" cannot be an artifact: %s", w->pattern, path, bad);
    w->matched++;
    if (loom_smap_get(&w->seen, path)) return 0;
    if (w->n == LOOM_ARTIFACTS_MAX)
        FAIL(LOOM_ETOOBIG, "outputs match more than %d files", LOOM_ARTIFACTS_MAX);
    if (w->n == w->cap) {
        w->cap = w->cap ? w->cap * 2 : 16;
        w->paths = loom_xrealloc(w->paths, w->cap * sizeof *w->paths);
    }
    w->paths[w->n] = loom_xstrdup(path);
    loom_smap_put(&w->seen, w->paths[w->n], (void *)1);
    w->n++;
    return 0;
}

static char *join(const char *prefix, const char *name)
{
    return *prefix ? loom_xasprintf("%s/%s", prefix, name) : loom_xstrdup(name);
}

static int symlink_error(walk_t *w, const char *path)
{
    char *why = w->why;
    size_t whylen = w->whylen;
    FAIL(LOOM_EINVAL, "output \"%s\": \"%s\" is a symbolic link (links are not followed)",
         w->pattern, path);
}

/* Opens a folder entry (never a link: the caller looked). */
static int open_sub(walk_t *w, int dirfd, const char *name, const char *path)
{
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0) return fd;
    if (errno == ELOOP || errno == ENOTDIR) return symlink_error(w, path); /* swapped under us */
    char *why = w->why;
    size_t whylen = w->whylen;
    FAIL(LOOM_EIO, "output \"%s\": cannot open \"%s\": %s", w->pattern, path, strerror(errno));
}

/* The names in a folder (not "." or ".."), sorted; closes nothing. */
static int list_dir(walk_t *w, int dirfd, const char *path, char ***names, size_t *n)
{
    char *why = w->why;
    size_t whylen = w->whylen;
    int fd = dup(dirfd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0) close(fd);
        FAIL(LOOM_EIO, "output \"%s\": cannot list \"%s\": %s", w->pattern, *path ? path : ".",
             strerror(errno));
    }
    rewinddir(d);
    size_t cap = 0;
    *names = NULL;
    *n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            *names = loom_xrealloc(*names, cap * sizeof **names);
        }
        (*names)[(*n)++] = loom_xstrdup(e->d_name);
    }
    closedir(d);
    return 0;
}

/* Every regular file under the folder dirfd (at path), recursively. */
static int walk_folder(walk_t *w, int dirfd, const char *path, size_t depth)
{
    char *why = w->why;
    size_t whylen = w->whylen;
    if (depth > LOOM_BUNDLE_DEPTH_MAX)
        FAIL(LOOM_EINVAL, "output \"%s\": \"%s\" is nested over %d folders deep", w->pattern, path,
             LOOM_BUNDLE_DEPTH_MAX);
    char **names;
    size_t n;
    int rc = list_dir(w, dirfd, path, &names, &n);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        char *sub = join(path, names[i]);
        struct stat st;
        if (fstatat(dirfd, names[i], &st, AT_SYMLINK_NOFOLLOW) != 0) {
            if (errno != ENOENT) /* else removed meanwhile: not a match */
                rc = (snprintf(why, whylen, "output \"%s\": \"%s\": %s", w->pattern, sub,
                               strerror(errno)),
                      LOOM_EIO);
        } else if (S_ISLNK(st.st_mode)) {
            rc = symlink_error(w, sub);
        } else if (S_ISDIR(st.st_mode)) {
            int fd = open_sub(w, dirfd, names[i], sub);
            rc = fd < 0 ? fd : walk_folder(w, fd, sub, depth + 1);
            if (fd >= 0) close(fd);
        } else if (S_ISREG(st.st_mode)) {
            rc = add_file(w, sub);
        } /* sockets, fifos, devices: not files to keep */
        free(sub);
    }
    free_strings(names, n);
    return rc;
}

static int expand(walk_t *w, int dirfd, const char *path, char **segs, size_t nseg);

/* name in the folder dirfd matched the segment; rest follows. */
static int match_entry(walk_t *w, int dirfd, const char *path, const char *name, char **rest,
                       size_t nrest, bool literal)
{
    char *why = w->why;
    size_t whylen = w->whylen;
    char *sub = join(path, name);
    struct stat st;
    int rc = 0;
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno != ENOENT && errno != ENOTDIR)
            rc = (snprintf(why, whylen, "output \"%s\": \"%s\": %s", w->pattern, sub,
                           strerror(errno)),
                  LOOM_EIO);
    } else if (S_ISLNK(st.st_mode)) {
        rc = symlink_error(w, sub);
    } else if (S_ISDIR(st.st_mode)) {
        int fd = open_sub(w, dirfd, name, sub);
        rc = fd < 0 ? fd : expand(w, fd, sub, rest, nrest);
        if (fd >= 0) close(fd);
    } else if (S_ISREG(st.st_mode)) {
        if (nrest == 0) rc = add_file(w, sub); /* else a file where a folder was wanted */
    } else if (literal && nrest == 0) {
        rc = (snprintf(why, whylen, "output \"%s\": \"%s\" is not a regular file or a folder",
                       w->pattern, sub),
              LOOM_EINVAL);
    }
    free(sub);
    return rc;
}

static bool is_glob(const char *seg)
{
    return strpbrk(seg, "*?[") != NULL;
}

/* Matches segs beneath the folder dirfd (at path); none left: the folder
 * itself matched. */
static int expand(walk_t *w, int dirfd, const char *path, char **segs, size_t nseg)
{
    if (nseg == 0) return walk_folder(w, dirfd, path, 0);
    if (!is_glob(segs[0])) return match_entry(w, dirfd, path, segs[0], segs + 1, nseg - 1, true);
    char **names;
    size_t n;
    int rc = list_dir(w, dirfd, path, &names, &n);
    for (size_t i = 0; rc == 0 && i < n; i++)
        if (fnmatch(segs[0], names[i], FNM_PERIOD) == 0)
            rc = match_entry(w, dirfd, path, names[i], segs + 1, nseg - 1, false);
    free_strings(names, n);
    return rc;
}

static int by_path(const void *x, const void *y)
{
    return strcmp(*(char *const *)x, *(char *const *)y);
}

int outputs_collect(const char *dir, char *const *patterns, size_t n_patterns, char ***paths,
                    size_t *n_paths, char *why, size_t whylen)
{
    *paths = NULL;
    *n_paths = 0;
    for (size_t i = 0; i < n_patterns; i++) {
        char *bad = outputs_check_pattern(patterns[i]);
        if (bad) {
            snprintf(why, whylen, "%s", bad);
            free(bad);
            return LOOM_EINVAL;
        }
    }
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dirfd < 0) FAIL(LOOM_EIO, "outputs: cannot open %s: %s", dir, strerror(errno));
    walk_t w = {.why = why, .whylen = whylen};
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < n_patterns; i++) {
        size_t nseg;
        char **segs = split_pattern(patterns[i], &nseg);
        w.pattern = patterns[i];
        w.matched = 0;
        rc = expand(&w, dirfd, "", segs, nseg);
        if (rc == 0 && w.matched == 0) {
            snprintf(why, whylen, "output \"%s\" matched no file", patterns[i]);
            rc = LOOM_EINVAL;
        }
        free_strings(segs, nseg);
    }
    close(dirfd);
    loom_map_free(&w.seen);
    if (rc != 0) {
        free_strings(w.paths, w.n);
        return rc;
    }
    qsort(w.paths, w.n, sizeof *w.paths, by_path);
    *paths = w.paths;
    *n_paths = w.n;
    return 0;
}

/* --- reading --------------------------------------------------------------- */

int outputs_open(const char *dir, const char *rel, char *why, size_t whylen)
{
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dirfd < 0) FAIL(-1, "cannot open %s: %s", dir, strerror(errno));
    /* O_NONBLOCK: a fifo put in the file's place must not hang the job. */
    int fd = workdir_open_beneath(dirfd, rel, O_RDONLY | O_NONBLOCK, 0, false);
    close(dirfd);
    if (fd == -ELOOP) FAIL(-1, "\"%s\": a symbolic link is in the way", rel);
    if (fd < 0) FAIL(-1, "\"%s\": %s", rel, strerror(-fd));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        FAIL(-1, "\"%s\" is no longer a regular file", rel);
    }
    return fd;
}

int outputs_pread(int fd, uint8_t *buf, size_t len, uint64_t off, char *why, size_t whylen)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = pread(fd, buf + got, len - got, (off_t)(off + got));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) FAIL(LOOM_EIO, "read error: %s", strerror(errno));
        if (n == 0) FAIL(LOOM_EIO, "the file shrank after it was hashed");
        got += (size_t)n;
    }
    return 0;
}

/* --- hashing --------------------------------------------------------------- */

void outputs_hash_init(out_hash_t *h)
{
    memset(h, 0, sizeof *h);
    h->fd = -1;
    crypto_generichash_init(&h->st, NULL, 0, crypto_generichash_BYTES);
}

void outputs_hash_end(out_hash_t *h)
{
    if (h->fd >= 0) close(h->fd);
    h->fd = -1;
}

int outputs_hash_step(const char *dir, const char *rel, out_hash_t *h, uint64_t slice,
                      const atomic_bool *stop, char hex[LOOM_HASH_HEX_LEN + 1], char *why,
                      size_t whylen)
{
    if (h->fd < 0) {
        h->fd = outputs_open(dir, rel, why, whylen);
        if (h->fd < 0) return LOOM_EIO;
        struct stat st;
        if (fstat(h->fd, &st) == 0) h->mode = (uint32_t)(st.st_mode & 0777);
        posix_fadvise(h->fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    }
    uint8_t *buf = loom_xmalloc(HASH_BUF);
    int rc = 1;
    for (uint64_t done = 0; rc == 1 && done < slice;) {
        if (atomic_load(stop)) {
            rc = LOOM_ECANCELLED;
            snprintf(why, whylen, "stopped");
            break;
        }
        ssize_t n = read(h->fd, buf, HASH_BUF);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            rc = LOOM_EIO;
            snprintf(why, whylen, "\"%s\": read error: %s", rel, strerror(errno));
        } else if (n == 0) {
            unsigned char bin[crypto_generichash_BYTES];
            crypto_generichash_final(&h->st, bin, sizeof bin);
            sodium_bin2hex(hex, LOOM_HASH_HEX_LEN + 1, bin, sizeof bin);
            outputs_hash_end(h);
            rc = 0;
        } else {
            crypto_generichash_update(&h->st, buf, (size_t)n);
            h->size += (uint64_t)n;
            done += (uint64_t)n;
        }
    }
    free(buf);
    return rc;
}
