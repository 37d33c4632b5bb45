/* loomd's content-addressed object store (see objects.h) and the loomd side
 * of the object pull protocol: FetchObject in, ObjectChunk out. */
#include "objects.h"

#include "loom/bundle.h"
#include "loom/err.h"
#include "loom/log.h"
#include "sched_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct loom_objects {
    char *dir; /* STATE/objects */
    char *tmp; /* STATE/objects/tmp: uploads in progress */
};

struct loom_obj_writer {
    loom_objects_t *o;
    int fd;
    char *tmp_path;
    crypto_generichash_state st;
    uint64_t size;
};

/* Uploads a previous loomd did not finish are garbage: nobody can resume
 * them, since a writer's temporary name is known only to its request. */
static void clean_tmp(const char *tmp)
{
    DIR *d = opendir(tmp);
    if (!d) return;
    struct dirent *e;
    size_t n = 0;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        if (unlinkat(dirfd(d), e->d_name, 0) == 0) n++;
    }
    closedir(d);
    if (n) LOG_INFO("removed %zu unfinished uploads dir=%s", n, tmp);
}

int loom_objects_open(const char *state_dir, loom_objects_t **out, char *why, size_t whylen)
{
    loom_objects_t *o = loom_xcalloc(1, sizeof *o);
    o->dir = loom_xasprintf("%s/objects", state_dir);
    o->tmp = loom_xasprintf("%s/tmp", o->dir);
    *out = NULL;
    if (loom_mkdirs(o->tmp, 0700) != 0) {
        snprintf(why, whylen, "cannot create %s: %s", o->tmp, strerror(errno));
        loom_objects_destroy(&o);
        return LOOM_EIO;
    }
    clean_tmp(o->tmp);
    *out = o;
    return 0;
}

void loom_objects_destroy(loom_objects_t **op)
{
    loom_objects_t *o = op ? *op : NULL;
    if (!o) return;
    free(o->dir);
    free(o->tmp);
    free(o);
    *op = NULL;
}

bool loom_objects_hash_valid(const char *hex)
{
    return loom_hash_hex_valid(hex);
}

char *loom_objects_path(loom_objects_t *o, const char *hex)
{
    if (!o || !loom_hash_hex_valid(hex)) return NULL;
    return loom_xasprintf("%s/%.2s/%s", o->dir, hex, hex + 2);
}

bool loom_objects_has(loom_objects_t *o, const char *hex)
{
    char *path = loom_objects_path(o, hex);
    struct stat st;
    bool has = path && stat(path, &st) == 0 && S_ISREG(st.st_mode);
    free(path);
    return has;
}

/* --- writing -------------------------------------------------------------- */

int loom_objects_writer_new(loom_objects_t *o, loom_obj_writer_t **out)
{
    *out = NULL;
    if (!o) return LOOM_ESTATE;
    loom_obj_writer_t *w = loom_xcalloc(1, sizeof *w);
    w->o = o;
    w->tmp_path = loom_xasprintf("%s/upload-XXXXXX", o->tmp);
    w->fd = mkostemp(w->tmp_path, O_CLOEXEC);
    if (w->fd < 0) {
        LOG_ERROR("cannot create %s: %s", w->tmp_path, strerror(errno));
        free(w->tmp_path);
        free(w);
        return LOOM_EIO;
    }
    crypto_generichash_init(&w->st, NULL, 0, 32);
    *out = w;
    return 0;
}

int loom_objects_writer_append(loom_obj_writer_t *w, const void *data, size_t len)
{
    if (!w) return LOOM_ESTATE;
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t n = write(w->fd, p, left);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            LOG_ERROR("cannot write %s: %s", w->tmp_path, strerror(errno));
            return LOOM_EIO;
        }
        p += n;
        left -= (size_t)n;
    }
    crypto_generichash_update(&w->st, data, len);
    w->size += len;
    return 0;
}

void loom_objects_writer_abort(loom_obj_writer_t **wp)
{
    loom_obj_writer_t *w = wp ? *wp : NULL;
    if (!w) return;
    if (w->fd >= 0) close(w->fd);
    unlink(w->tmp_path);
    free(w->tmp_path);
    free(w);
    *wp = NULL;
}

/* fsyncs the folder so a rename into it survives a crash. */
static void sync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    if (fsync(fd) != 0) LOG_WARN("fsync %s: %s", path, strerror(errno));
    close(fd);
}

/* Moves a verified upload to its final name: fsync, then rename, so a
 * stored object is never half written. */
static int store(loom_obj_writer_t *w, const char *hex, char *why, size_t whylen)
{
    char *final = loom_objects_path(w->o, hex);
    char *sub = loom_xasprintf("%s/%.2s", w->o->dir, hex);
    int rc = 0;
    if (fsync(w->fd) != 0 || close(w->fd) != 0) {
        snprintf(why, whylen, "cannot write it: %s", strerror(errno));
        rc = LOOM_EIO;
    }
    w->fd = -1;
    if (rc == 0 && mkdir(sub, 0700) != 0 && errno != EEXIST) {
        snprintf(why, whylen, "cannot create %s: %s", sub, strerror(errno));
        rc = LOOM_EIO;
    }
    if (rc == 0 && rename(w->tmp_path, final) != 0) {
        snprintf(why, whylen, "cannot store it: %s", strerror(errno));
        rc = LOOM_EIO;
    }
    if (rc == 0) sync_dir(sub);
    free(final);
    free(sub);
    return rc;
}

int loom_objects_writer_commit(loom_obj_writer_t **wp, const char *expect_hex, char *why,
                               size_t whylen)
{
    loom_obj_writer_t *w = *wp;
    if (!w) return LOOM_ESTATE;
    unsigned char h[32];
    char got[LOOM_HASH_HEX_LEN + 1];
    crypto_generichash_final(&w->st, h, sizeof h);
    sodium_bin2hex(got, sizeof got, h, sizeof h);
    int rc = 0;
    if (!loom_hash_hex_valid(expect_hex)) {
        snprintf(why, whylen, "\"%s\" is not 64 lowercase hex digits", expect_hex);
        rc = LOOM_EINVAL;
    } else if (strcmp(got, expect_hex) != 0) {
        snprintf(why, whylen, "content hash is %s, not %s", got, expect_hex);
        rc = LOOM_EPARSE;
    } else if (!loom_objects_has(w->o, expect_hex)) {
        rc = store(w, expect_hex, why, whylen);
        if (rc == 0) LOG_DEBUG("object stored hash=%s size=%llu", got, (unsigned long long)w->size);
    }
    /* Stored, already there (the existing copy is kept), or refused: the
     * temporary file goes in every case. */
    loom_objects_writer_abort(wp);
    return rc;
}

/* --- bundles -------------------------------------------------------------- */

int loom_objects_check_bundle(loom_objects_t *o, const char *manifest_hex, char *why, size_t whylen)
{
    char *path = loom_objects_path(o, manifest_hex);
    if (!path) {
        snprintf(why, whylen, "manifest hash \"%s\" is invalid", manifest_hex);
        return LOOM_EPARSE;
    }
    char *text = NULL;
    size_t len = 0;
    int rc = loom_read_file(path, LOOM_MANIFEST_MAX_BYTES, &text, &len);
    free(path);
    if (rc == LOOM_ENOTFOUND) {
        snprintf(why, whylen, "manifest %s is not stored: upload it first", manifest_hex);
        return LOOM_ENOTFOUND;
    }
    if (rc) {
        snprintf(why, whylen, "manifest %s: %s", manifest_hex, loom_strerror(rc));
        return rc == LOOM_ETOOBIG ? LOOM_EPARSE : rc;
    }
    loom_manifest_t m;
    char bad[256];
    rc = loom_manifest_parse(text, len, &m, bad, sizeof bad);
    free(text);
    if (rc) {
        snprintf(why, whylen, "manifest %s is malformed: %s", manifest_hex, bad);
        return LOOM_EPARSE;
    }
    for (size_t i = 0; i < m.n && rc == 0; i++) {
        const loom_bundle_file_t *f = &m.files[i];
        char *obj = loom_objects_path(o, f->hash);
        struct stat st;
        if (stat(obj, &st) != 0 || !S_ISREG(st.st_mode)) {
            snprintf(why, whylen, "file \"%s\" (object %s) is not stored: upload it first", f->path,
                     f->hash);
            rc = LOOM_ENOTFOUND;
        } else if ((uint64_t)st.st_size != f->size) {
            snprintf(why, whylen, "manifest %s is malformed: \"%s\" is %llu bytes, not %llu",
                     manifest_hex, f->path, (unsigned long long)st.st_size,
                     (unsigned long long)f->size);
            rc = LOOM_EPARSE;
        }
        free(obj);
    }
    loom_manifest_free(&m);
    return rc;
}

/* --- the pull protocol ---------------------------------------------------- */

static void send_chunk(loom_sched_t *s, agent_t *a, Loom__ObjectChunk *c)
{
    loom_msg_t msg = LOOM__ENVELOPE__INIT;
    msg.body_case = LOOM__ENVELOPE__BODY_OBJECT;
    msg.object = c;
    sched_send(s, a->name, &msg);
}

/* Reads [offset, offset + max) of the object into c->data; returns an error
 * text for the agent, or NULL. */
static const char *read_chunk(loom_objects_t *o, const Loom__FetchObject *f, Loom__ObjectChunk *c)
{
    char *path = loom_objects_path(o, f->hash);
    if (!path) return "no such object";
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    int open_errno = errno;
    free(path);
    if (fd < 0) return open_errno == ENOENT ? "no such object" : "cannot open the object";
    struct stat st;
    const char *err = NULL;
    if (fstat(fd, &st) != 0) {
        err = "cannot read the object";
    } else if (f->offset > (uint64_t)st.st_size) {
        err = "offset past the end of the object";
    } else {
        uint64_t left = (uint64_t)st.st_size - f->offset;
        size_t want = f->max && f->max < LOOM_OBJECT_CHUNK_MAX ? f->max : LOOM_OBJECT_CHUNK_MAX;
        if (left < want) want = (size_t)left;
        c->size = (uint64_t)st.st_size;
        c->data.data = loom_xmalloc(want ? want : 1);
        ssize_t n;
        do {
            n = pread(fd, c->data.data, want, (off_t)f->offset);
        } while (n < 0 && errno == EINTR);
        if (n < 0) err = "cannot read the object";
        c->data.len = n > 0 ? (size_t)n : 0;
    }
    close(fd);
    return err;
}

void objects_on_fetch(loom_sched_t *s, agent_t *a, const loom_msg_t *m)
{
    const Loom__FetchObject *f = m->fetch;
    Loom__ObjectChunk c = LOOM__OBJECT_CHUNK__INIT;
    c.hash = f->hash;
    c.offset = f->offset;
    const char *err = loom_hash_hex_valid(f->hash) ? read_chunk(s->objects, f, &c)
                                                   : "hash is not 64 lowercase hex digits";
    if (err) {
        LOG_WARN("cannot serve object agent=%s hash=%.64s offset=%llu: %s", a->name, f->hash,
                 (unsigned long long)f->offset, err);
        c.error = (char *)err;
        c.size = 0;
        c.data.len = 0;
    }
    send_chunk(s, a, &c);
    free(c.data.data);
}
