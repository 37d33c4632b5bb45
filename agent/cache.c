/* The object cache's size bound; see cache.h. An index entry exists while
 * its object is cached or pinned; the cached ones are also on a list from
 * least to most recently used, so eviction is one walk from the old end. */
#include "cache.h"

#include "agent_int.h"

#include "loom/bundle.h"
#include "loom/err.h"
#include "loom/log.h"
#include "loom/map.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct centry {
    struct centry *prev, *next; /* the use list, while present */
    char hash[LOOM_HASH_HEX_LEN + 1];
    uint64_t size;
    bool present;
    uint32_t pins;
} centry_t;

struct cache {
    loom_agent_t *a;
    char *dir;
    uint64_t max, bytes;
    loom_map_t by_hash; /* hash -> centry_t* */
    centry_t *oldest, *newest;
    uint64_t evicted, trash_seq;
};

cache_t *cache_new(loom_agent_t *a, const char *cache_dir, uint64_t max_bytes)
{
    cache_t *c = loom_xcalloc(1, sizeof *c);
    c->a = a;
    c->dir = loom_xstrdup(cache_dir);
    c->max = max_bytes ? max_bytes : CACHE_DEFAULT_MAX;
    return c;
}

uint64_t cache_bytes(const cache_t *c)
{
    return c->bytes;
}

uint64_t cache_max(const cache_t *c)
{
    return c->max;
}

uint64_t cache_evicted(const cache_t *c)
{
    return c->evicted;
}

/* --- the index ------------------------------------------------------------- */

static void unlink_use(cache_t *c, centry_t *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        c->oldest = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        c->newest = e->prev;
    e->prev = e->next = NULL;
}

static void push_newest(cache_t *c, centry_t *e)
{
    e->prev = c->newest;
    e->next = NULL;
    if (c->newest)
        c->newest->next = e;
    else
        c->oldest = e;
    c->newest = e;
}

static centry_t *entry(cache_t *c, const char *hash)
{
    centry_t *e = loom_smap_get(&c->by_hash, hash);
    if (e) return e;
    e = loom_xcalloc(1, sizeof *e);
    snprintf(e->hash, sizeof e->hash, "%s", hash);
    loom_smap_put(&c->by_hash, e->hash, e);
    return e;
}

/* Drops the entry once it is neither cached nor pinned. */
static void maybe_forget(cache_t *c, centry_t *e)
{
    if (e->present || e->pins) return;
    loom_smap_del(&c->by_hash, e->hash);
    free(e);
}

static void set_present(cache_t *c, centry_t *e, uint64_t size)
{
    if (e->present) {
        c->bytes -= e->size;
        unlink_use(c, e);
    }
    e->present = true;
    e->size = size;
    c->bytes += size;
    push_newest(c, e);
}

static void set_absent(cache_t *c, centry_t *e)
{
    if (!e->present) return;
    e->present = false;
    c->bytes -= e->size;
    unlink_use(c, e);
}

bool cache_has(const cache_t *c, const char *hash)
{
    const centry_t *e = loom_smap_get(&c->by_hash, hash);
    return e && e->present;
}

void cache_added(cache_t *c, const char *hash, uint64_t size)
{
    set_present(c, entry(c, hash), size);
    cache_trim(c);
}

void cache_dropped(cache_t *c, const char *hash)
{
    centry_t *e = loom_smap_get(&c->by_hash, hash);
    if (!e) return;
    set_absent(c, e);
    maybe_forget(c, e);
}

void cache_pin(cache_t *c, const char *hash)
{
    centry_t *e = entry(c, hash);
    e->pins++;
    if (e->present) {
        unlink_use(c, e);
        push_newest(c, e);
    }
}

void cache_unpin(cache_t *c, const char *hash)
{
    centry_t *e = loom_smap_get(&c->by_hash, hash);
    if (!e || e->pins == 0) return;
    e->pins--;
    if (e->present) {
        unlink_use(c, e);
        push_newest(c, e);
    }
    maybe_forget(c, e);
    cache_trim(c);
}

/* --- eviction -------------------------------------------------------------- */

typedef struct {
    char **paths;
    size_t n;
} trash_t;

static void on_trash_work(void *ud)
{
    trash_t *t = ud;
    for (size_t i = 0; i < t->n; i++) unlink(t->paths[i]);
}

static void on_trash_done(void *ud)
{
    trash_t *t = ud;
    for (size_t i = 0; i < t->n; i++) free(t->paths[i]);
    free(t->paths);
    free(t);
}

/* Moves the object out of objects/ into tmp/ (emptied at start, so a crash
 * before the unlink leaves nothing behind). Returns the new path, or NULL
 * when the file was already gone. */
static char *move_to_trash(cache_t *c, const centry_t *e)
{
    char *from = loom_xasprintf("%s/objects/%.2s/%s", c->dir, e->hash, e->hash + 2);
    char *to =
        loom_xasprintf("%s/tmp/evict-%llu-%s", c->dir, (unsigned long long)++c->trash_seq, e->hash);
    if (rename(from, to) != 0) {
        if (errno != ENOENT)
            LOG_WARN("cannot evict %s from the cache: %s; deleting it here", from, strerror(errno));
        if (errno != ENOENT) unlink(from);
        free(to);
        to = NULL;
    }
    free(from);
    return to;
}

void cache_trim(cache_t *c)
{
    if (c->bytes <= c->max) return;
    trash_t *t = loom_xcalloc(1, sizeof *t);
    size_t cap = 0;
    uint64_t freed = 0;
    for (centry_t *e = c->oldest, *next; e && c->bytes > c->max; e = next) {
        next = e->next;
        if (e->pins) continue; /* an attempt is placing it */
        char *path = move_to_trash(c, e);
        if (path) {
            if (t->n == cap) {
                cap = cap ? cap * 2 : 8;
                t->paths = loom_xrealloc(t->paths, cap * sizeof *t->paths);
            }
            t->paths[t->n++] = path;
        }
        freed += e->size;
        c->evicted++;
        set_absent(c, e);
        maybe_forget(c, e);
    }
    if (t->n)
        LOG_INFO("cache over its bound: evicted %zu objects (%llu bytes); %llu of %llu bytes held",
                 t->n, (unsigned long long)freed, (unsigned long long)c->bytes,
                 (unsigned long long)c->max);
    if (c->bytes > c->max)
        LOG_WARN("cache holds %llu bytes, over its bound of %llu, all in use by attempts",
                 (unsigned long long)c->bytes, (unsigned long long)c->max);
    if (t->n == 0) {
        on_trash_done(t);
        return;
    }
    agent_queue_job(c->a, on_trash_work, on_trash_done, t);
}

/* --- loading at start ------------------------------------------------------ */

typedef struct {
    char hash[LOOM_HASH_HEX_LEN + 1];
    uint64_t size;
    struct timespec used;
} found_t;

static int by_use(const void *x, const void *y)
{
    const found_t *a = x, *b = y;
    if (a->used.tv_sec != b->used.tv_sec) return a->used.tv_sec < b->used.tv_sec ? -1 : 1;
    if (a->used.tv_nsec != b->used.tv_nsec) return a->used.tv_nsec < b->used.tv_nsec ? -1 : 1;
    return strcmp(a->hash, b->hash);
}

/* Lists objects/ab/cdef... files; anything else is left alone. */
static int scan_sub(int subfd, const char *prefix, found_t **list, size_t *n, size_t *cap)
{
    DIR *d = fdopendir(subfd);
    if (!d) {
        close(subfd);
        return LOOM_EIO;
    }
    for (struct dirent *de; (de = readdir(d)) != NULL;) {
        char hash[LOOM_HASH_HEX_LEN + 1];
        if (snprintf(hash, sizeof hash, "%s%s", prefix, de->d_name) != LOOM_HASH_HEX_LEN ||
            !loom_hash_hex_valid(hash))
            continue;
        struct stat st;
        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode))
            continue;
        if (*n == *cap) {
            *cap = *cap ? *cap * 2 : 256;
            *list = loom_xrealloc(*list, *cap * sizeof **list);
        }
        found_t *f = &(*list)[(*n)++];
        memcpy(f->hash, hash, sizeof hash);
        f->size = (uint64_t)st.st_size;
        f->used = st.st_mtim;
    }
    closedir(d);
    return 0;
}

int cache_load(cache_t *c)
{
    char *objects = loom_xasprintf("%s/objects", c->dir);
    DIR *d = opendir(objects);
    free(objects);
    if (!d) return LOOM_EIO;
    found_t *list = NULL;
    size_t n = 0, cap = 0;
    for (struct dirent *de; (de = readdir(d)) != NULL;) {
        if (strlen(de->d_name) != 2 || strspn(de->d_name, "0123456789abcdef") != 2) continue;
        int fd = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd >= 0) scan_sub(fd, de->d_name, &list, &n, &cap);
    }
    closedir(d);
    if (n) qsort(list, n, sizeof *list, by_use);
    for (size_t i = 0; i < n; i++) set_present(c, entry(c, list[i].hash), list[i].size);
    free(list);
    LOG_INFO("cache holds %zu objects, %llu bytes (bound %llu)", n, (unsigned long long)c->bytes,
             (unsigned long long)c->max);
    cache_trim(c);
    return 0;
}

void cache_destroy(cache_t **cp)
{
    cache_t *c = cp ? *cp : NULL;
    if (!c) return;
    void *v;
    for (size_t i = 0; loom_map_next(&c->by_hash, &i, &v);) free(v);
    loom_map_free(&c->by_hash);
    free(c->dir);
    free(c);
    *cp = NULL;
}
