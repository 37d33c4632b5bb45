/* Blocking file work for attempts' working folders; see workdir.h. Runs on
 * the libuv thread pool, so it may block, but it must not touch the agent. */
#include "workdir.h"

#include "loom/err.h"
#include "loom/map.h"
#include "loom/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#define COPY_BUF 65536

#define FAIL(code, ...)                                                                            \
    do {                                                                                           \
        snprintf(why, whylen, __VA_ARGS__);                                                        \
        return (code);                                                                             \
    } while (0)

/* Opens (creating it with mkdirs) one folder segment beneath dirfd. */
static int open_folder(int dirfd, const char *name, bool mkdirs)
{
    int flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
    int fd = openat(dirfd, name, flags);
    if (fd < 0 && errno == ENOENT && mkdirs) {
        if (mkdirat(dirfd, name, 0755) != 0 && errno != EEXIST) return -errno;
        fd = openat(dirfd, name, flags);
    }
    /* A symbolic link opened with O_NOFOLLOW | O_DIRECTORY fails with
     * ENOTDIR on some kernels, ELOOP on others: say which it was. */
    if (fd < 0 && errno == ENOTDIR) {
        struct stat st;
        if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode))
            errno = ELOOP;
    }
    return fd < 0 ? -errno : fd;
}

int workdir_open_beneath(int dirfd, const char *rel, int flags, mode_t mode, bool mkdirs)
{
    char why[8];
    if (loom_bundle_path_check(rel, why, sizeof why) != 0) return -EINVAL;
    char *path = loom_xstrdup(rel);
    char *seg = path;
    int cur = dirfd, fd;
    for (char *slash; (slash = strchr(seg, '/')) != NULL; seg = slash + 1) {
        *slash = '\0';
        fd = open_folder(cur, seg, mkdirs);
        if (cur != dirfd) close(cur);
        if (fd < 0) {
            free(path);
            return fd;
        }
        cur = fd;
    }
    fd = openat(cur, seg, flags | O_NOFOLLOW | O_CLOEXEC, mode);
    int err = errno;
    if (cur != dirfd) close(cur);
    free(path);
    return fd < 0 ? -err : fd;
}

char *workdir_object_path(const char *cache, const char *hash)
{
    return loom_xasprintf("%s/objects/%.2s/%s", cache, hash, hash + 2);
}

int workdir_cache_init(const char *cache)
{
    char *objects = loom_xasprintf("%s/objects", cache);
    char *tmp = loom_xasprintf("%s/tmp", cache);
    int rc = loom_mkdirs(objects, 0700);
    if (rc == 0) rc = loom_mkdirs(tmp, 0700);
    DIR *d = rc == 0 ? opendir(tmp) : NULL;
    for (struct dirent *e; d && (e = readdir(d)) != NULL;)
        if (e->d_name[0] != '.') unlinkat(dirfd(d), e->d_name, 0);
    if (d) closedir(d);
    free(objects);
    free(tmp);
    return rc;
}

/* --- scanning the cache --------------------------------------------------- */

int workdir_scan(const char *cache, const char *manifest_hash, loom_manifest_t *m, char ***missing,
                 size_t *n_missing, char *why, size_t whylen)
{
    *missing = NULL;
    *n_missing = 0;
    char *path = workdir_object_path(cache, manifest_hash);
    char *text = NULL;
    size_t len = 0;
    int rc = loom_read_file(path, LOOM_MANIFEST_MAX_BYTES, &text, &len);
    if (rc == 0) utimensat(AT_FDCWD, path, NULL, 0); /* used now: the cache's order */
    free(path);
    if (rc == LOOM_ENOTFOUND) return rc;
    if (rc) FAIL(rc, "manifest %.12s: %s", manifest_hash, loom_strerror(rc));
    char bad[256];
    rc = loom_manifest_parse(text, len, m, bad, sizeof bad);
    free(text);
    if (rc) FAIL(rc, "manifest %.12s is malformed: %s", manifest_hash, bad);
    loom_map_t seen = {0};
    char **list = loom_xcalloc(m->n + 1, sizeof *list);
    size_t n = 0;
    for (size_t i = 0; i < m->n; i++) {
        const char *h = m->files[i].hash;
        if (loom_smap_get(&seen, h)) continue;
        loom_smap_put(&seen, h, (void *)1);
        char *obj = workdir_object_path(cache, h);
        if (access(obj, F_OK) != 0) list[n++] = loom_xstrdup(h);
        free(obj);
    }
    loom_map_free(&seen);
    *missing = list;
    *n_missing = n;
    return 0;
}

/* --- populating a working folder ------------------------------------------ */

static int copy_plain(int src, int dst)
{
    char *buf = loom_xmalloc(COPY_BUF);
    int rc = 0;
    for (;;) {
        ssize_t n = read(src, buf, COPY_BUF);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            rc = n < 0 ? -errno : 0;
            break;
        }
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(dst, buf + off, (size_t)(n - off));
            if (w < 0 && errno == EINTR) continue;
            if (w < 0) {
                free(buf);
                return -errno;
            }
            off += w;
        }
    }
    free(buf);
    return rc;
}

/* A reflink shares blocks copy-on-write (btrfs, XFS): as cheap as a hard
 * link, without a task's writes reaching the cache. Elsewhere the kernel
 * copies (copy_file_range), and where it cannot, we do. */
static int copy_fd(int src, int dst, uint64_t size)
{
    if (ioctl(dst, FICLONE, src) == 0) return 0;
    uint64_t done = 0;
    while (done < size) {
        ssize_t n = copy_file_range(src, NULL, dst, NULL, (size_t)(size - done), 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        done += (uint64_t)n;
    }
    if (done == size) return 0;
    if (lseek(src, (off_t)done, SEEK_SET) < 0 || lseek(dst, (off_t)done, SEEK_SET) < 0)
        return -errno;
    return copy_plain(src, dst);
}

static const char *errtext(int neg_errno)
{
    if (neg_errno == -ELOOP) return "a symbolic link is in the way";
    if (neg_errno == -EEXIST) return "listed twice, or already there";
    if (neg_errno == -EINVAL) return "path not allowed";
    return strerror(-neg_errno);
}

static int unpack_file(int dirfd, const char *cache, const loom_bundle_file_t *f, char *why,
                       size_t whylen)
{
    char *obj = workdir_object_path(cache, f->hash);
    int src = open(obj, O_RDONLY | O_CLOEXEC);
    free(obj);
    if (src < 0) FAIL(LOOM_EIO, "%s: object %.12s is not in the cache", f->path, f->hash);
    struct stat st;
    if (fstat(src, &st) != 0 || (uint64_t)st.st_size != f->size) {
        close(src);
        FAIL(LOOM_EPARSE, "%s: the manifest says %llu bytes, its content has %lld", f->path,
             (unsigned long long)f->size, (long long)st.st_size);
    }
    int dst = workdir_open_beneath(dirfd, f->path, O_WRONLY | O_CREAT | O_EXCL, 0600, true);
    if (dst < 0) {
        close(src);
        FAIL(LOOM_EINVAL, "%s: %s", f->path, errtext(dst));
    }
    int rc = copy_fd(src, dst, f->size);
    if (rc == 0 && fchmod(dst, f->mode) != 0) rc = -errno;
    if (close(dst) != 0 && rc == 0) rc = -errno;
    futimens(src, NULL); /* used now: the cache's order survives a restart */
    close(src);
    if (rc) FAIL(LOOM_EIO, "%s: %s", f->path, strerror(-rc));
    return 0;
}

/* A copy of the cached object, never a link: the task may write to it. An
 * input replaces a bundle file of the same path. */
static int place_input(int dirfd, const char *cache, const Loom__Input *in, char *why,
                       size_t whylen)
{
    char *obj = workdir_object_path(cache, in->hash);
    int src = open(obj, O_RDONLY | O_CLOEXEC);
    free(obj);
    if (src < 0)
        FAIL(LOOM_EIO, "input \"%s\": object %.12s… is not in the cache", in->path, in->hash);
    struct stat st;
    if (fstat(src, &st) != 0 || (uint64_t)st.st_size != in->size) {
        close(src);
        FAIL(LOOM_EPARSE, "input \"%s\": object %.12s… holds %lld bytes, the dispatch says %llu",
             in->path, in->hash, (long long)st.st_size, (unsigned long long)in->size);
    }
    mode_t mode = in->mode ? (mode_t)(in->mode & 0777) : 0644;
    int dst = workdir_open_beneath(dirfd, in->path, O_WRONLY | O_CREAT | O_TRUNC, 0600, true);
    if (dst < 0) {
        close(src);
        FAIL(LOOM_EINVAL, "input \"%s\": %s", in->path, errtext(dst));
    }
    int rc = copy_fd(src, dst, in->size);
    if (rc == 0 && fchmod(dst, mode) != 0) rc = -errno;
    if (close(dst) != 0 && rc == 0) rc = -errno;
    futimens(src, NULL);
    close(src);
    if (rc) FAIL(LOOM_EIO, "input \"%s\": %s", in->path, strerror(-rc));
    return 0;
}

static int write_all(int fd, const uint8_t *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return -errno;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int write_file(int dirfd, const Loom__File *f, char *why, size_t whylen)
{
    const char *path = f->path ? f->path : "";
    char bad[256];
    if (loom_bundle_path_check(path, bad, sizeof bad) != 0) FAIL(LOOM_EINVAL, "files: %s", bad);
    mode_t mode = f->mode ? (mode_t)(f->mode & 0777) : 0600;
    int fd = workdir_open_beneath(dirfd, path, O_WRONLY | O_CREAT | O_TRUNC, mode, true);
    if (fd < 0) FAIL(LOOM_EINVAL, "files: %s: %s", path, errtext(fd));
    int rc = write_all(fd, f->content.data, f->content.len);
    if (rc == 0 && fchmod(fd, mode) != 0) rc = -errno;
    if (close(fd) != 0 && rc == 0) rc = -errno;
    if (rc) FAIL(LOOM_EIO, "files: %s: %s", path, strerror(-rc));
    return 0;
}

int workdir_populate(const char *dir, const char *cache, const loom_manifest_t *m,
                     Loom__Input *const *inputs, size_t n_inputs, Loom__File *const *files,
                     size_t n_files, char *why, size_t whylen)
{
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        FAIL(LOOM_EIO, "cannot create %s: %s", dir, strerror(errno));
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dirfd < 0) FAIL(LOOM_EIO, "cannot open %s: %s", dir, strerror(errno));
    int rc = 0;
    for (size_t i = 0; m && rc == 0 && i < m->n; i++)
        rc = unpack_file(dirfd, cache, &m->files[i], why, whylen);
    for (size_t i = 0; rc == 0 && i < n_inputs; i++)
        rc = place_input(dirfd, cache, inputs[i], why, whylen);
    for (size_t i = 0; rc == 0 && i < n_files; i++) rc = write_file(dirfd, files[i], why, whylen);
    close(dirfd);
    return rc;
}

/* --- secrets -------------------------------------------------------------- */

int workdir_write_secrets(const char *dir, Loom__Secret *const *secrets, size_t n, char *why,
                          size_t whylen)
{
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        FAIL(LOOM_EIO, "cannot create %s: %s", dir, strerror(errno));
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dirfd < 0) FAIL(LOOM_EIO, "cannot open %s: %s", dir, strerror(errno));
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const Loom__Secret *sec = secrets[i];
        if (!sec->file || !*sec->file) continue;
        int fd = workdir_open_beneath(dirfd, sec->file, O_WRONLY | O_CREAT | O_EXCL, 0600, true);
        if (fd < 0) {
            snprintf(why, whylen, "files: secret %s: %s: %s", sec->name, sec->file,
                     fd == -EEXIST ? "a file is already there" : errtext(fd));
            rc = LOOM_EINVAL;
            break;
        }
        int w = write_all(fd, sec->value.data, sec->value.len);
        if (w == 0 && fchmod(fd, 0600) != 0) w = -errno;
        if (close(fd) != 0 && w == 0) w = -errno;
        if (w) {
            snprintf(why, whylen, "files: secret %s: %s: %s", sec->name, sec->file, strerror(-w));
            rc = LOOM_EIO;
        }
    }
    close(dirfd);
    return rc;
}

void workdir_remove_secrets(const char *dir, char *const *paths, size_t n)
{
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dirfd < 0) return;
    for (size_t i = 0; i < n; i++) {
        const char *slash = strrchr(paths[i], '/');
        int parent = dirfd;
        if (slash) {
            char *folder = loom_xstrndup(paths[i], (size_t)(slash - paths[i]));
            parent = workdir_open_beneath(dirfd, folder, O_RDONLY | O_DIRECTORY, 0, false);
            free(folder);
            if (parent < 0) continue;
        }
        unlinkat(parent, slash ? slash + 1 : paths[i], 0);
        if (parent != dirfd) close(parent);
    }
    close(dirfd);
}

/* --- metrics -------------------------------------------------------------- */

static char *check_metrics(const char *rel, json_t *j)
{
    if (!json_is_object(j)) return loom_xasprintf("metrics file \"%s\" is not a JSON object", rel);
    const char *key;
    json_t *v;
    json_object_foreach(j, key, v)
    {
        if (json_is_number(v)) continue;
        const char *kind = json_is_string(v)    ? "a string"
                           : json_is_boolean(v) ? "a boolean"
                           : json_is_null(v)    ? "null"
                           : json_is_array(v)   ? "an array"
                                                : "an object";
        return loom_xasprintf("metrics file \"%s\": \"%s\" is %s, not a number", rel, key, kind);
    }
    return NULL;
}

static char *read_small(int fd, const char *rel, char *buf, size_t *len)
{
    struct stat st;
    if (fstat(fd, &st) != 0) return loom_xasprintf("metrics file \"%s\": %s", rel, strerror(errno));
    if (!S_ISREG(st.st_mode)) return loom_xasprintf("metrics file \"%s\" is not a file", rel);
    if (st.st_size > LOOM_METRICS_MAX)
        return loom_xasprintf("metrics file \"%s\" is over %d bytes", rel, LOOM_METRICS_MAX);
    size_t got = 0;
    for (;;) {
        ssize_t n = read(fd, buf + got, LOOM_METRICS_MAX + 1 - got);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return loom_xasprintf("metrics file \"%s\": %s", rel, strerror(errno));
        if (n == 0) break;
        got += (size_t)n;
        if (got > LOOM_METRICS_MAX)
            return loom_xasprintf("metrics file \"%s\" is over %d bytes", rel, LOOM_METRICS_MAX);
    }
    *len = got;
    return NULL;
}

void workdir_read_metrics(const char *dir, const char *rel, char **json, char **error)
{
    *json = *error = NULL;
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int fd = dirfd < 0 ? -errno : workdir_open_beneath(dirfd, rel, O_RDONLY | O_NONBLOCK, 0, false);
    if (dirfd >= 0) close(dirfd);
    if (fd < 0) {
        *error = fd == -ENOENT ? loom_xasprintf("metrics file \"%s\" not found", rel)
                               : loom_xasprintf("metrics file \"%s\": %s", rel, errtext(fd));
        return;
    }
    char *buf = loom_xmalloc(LOOM_METRICS_MAX + 1);
    size_t len = 0;
    *error = read_small(fd, rel, buf, &len);
    close(fd);
    json_error_t jerr;
    json_t *j = *error ? NULL : json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
    free(buf);
    if (!*error && !j)
        *error = loom_xasprintf("metrics file \"%s\" is not JSON: %d:%d: %s", rel, jerr.line,
                                jerr.column, jerr.text);
    if (!*error) *error = check_metrics(rel, j);
    if (!*error) {
        *json = json_dumps(j, JSON_COMPACT);
        if (!*json || strlen(*json) > LOOM_METRICS_MAX) {
            free(*json);
            *json = NULL;
            *error = loom_xasprintf("metrics file \"%s\" is too large", rel);
        }
    }
    json_decref(j);
}
