/* The folder watcher of watch.h: raw inotify read from a uv_poll_t (libuv's
 * uv_fs_event cannot report IN_CLOSE_WRITE), a settle timer for files seen
 * changing, and a periodic rescan for what inotify misses (queue overflow,
 * network filesystems, a folder mounted late). */
#include "watch.h"

#include "loom/map.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

/* IN_EXCL_UNLINK: a file unlinked while still open stops producing events. */
#define DIR_MASK                                                                                   \
    (IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_MODIFY | IN_DELETE | IN_MOVED_FROM |            \
     IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_EXCL_UNLINK)
/* Inotify read rounds per wake-up, so a flood cannot hold the loop; the poll
 * is level-triggered and calls again for the rest. */
#define MAX_READS 16

typedef struct wlink {
    struct wlink *prev, *next;
} wlink_t;

typedef struct {
    int wd;
    char *path;
    uint64_t gen; /* the last scan that found it */
} wdir_t;

/* A file reported, or waiting to settle (or both: a new version of a file
 * reported before). */
typedef struct {
    wlink_t link; /* first: in w->pending while pending */
    char *path;   /* the files map's key */
    bool pending;
    bool ready;     /* a scan found it complete: report at the next tick */
    bool from_scan; /* became pending through a scan, not an event */
    bool reported;
    uint64_t size; /* as last seen while pending */
    int64_t mtime_ns;
    uint64_t since; /* monotonic ms of the last change seen */
    uint64_t rep_size;
    int64_t rep_mtime_ns;
    uint64_t gen; /* the last scan that found it */
} entry_t;

struct loom_watch {
    uv_loop_t *loop;
    char *root;
    char *glob;
    bool recursive;
    uint64_t settle_ms, rescan_ms;
    loom_clock_t mono, wall;
    void (*on_file)(void *ud, const char *path, uint64_t size, int64_t mtime_ns, const char *how);
    void (*on_error)(void *ud, const char *why);
    void *ud;

    int ifd;
    int root_wd;       /* -1 while the folder is not watched */
    bool root_missing; /* said so through on_error; cleared when it is back */
    loom_map_t dirs;   /* wd -> wdir_t* */
    loom_map_t files;  /* path -> entry_t* */
    wlink_t pending;
    uint64_t gen;

    uv_poll_t poll;
    uv_timer_t tick_timer;
    uv_timer_t rescan_timer;
    int open_handles;

    int depth; /* callbacks in progress: rescan and tick wait for the loop */
    bool starting, stopping, want_rescan;
    char *deferred_error; /* raised inside loom_watch_start, told from the loop */
    char *scan_problem;   /* the last scan problem told, so a lasting one is told once */
};

static uint64_t real_wall(void *ud)
{
    (void)ud;
    return loom_unix_ms();
}

static int64_t mtime_ns_of(const struct stat *st)
{
    return (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
}

static bool has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Names that common tools give files still in progress. */
static bool in_progress_name(const char *name)
{
    static const char *const suffixes[] = {".tmp", ".part", ".partial", ".crdownload"};
    if (name[0] == '.') return true;
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++)
        if (has_suffix(name, suffixes[i])) return true;
    return false;
}

static bool name_counts(const loom_watch_t *w, const char *name)
{
    return !in_progress_name(name) && fnmatch(w->glob, name, 0) == 0;
}

/* dir + "/" + name into out; false when it does not fit. */
static bool join(char *out, size_t outlen, const char *dir, const char *name)
{
    const char *sep = has_suffix(dir, "/") ? "" : "/";
    int n = snprintf(out, outlen, "%s%s%s", dir, sep, name);
    return n > 0 && (size_t)n < outlen;
}

/* path is dir or inside it. */
static bool is_under(const char *path, const char *dir)
{
    size_t n = strlen(dir);
    return strncmp(path, dir, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

/* strerror, with the inotify limits named (ENOSPC reads "No space left"). */
static const char *why_not(int err)
{
    if (err == ENOSPC) return "the inotify watch limit is reached (fs.inotify.max_user_watches)";
    if (err == EMFILE)
        return "too many inotify instances or files open (fs.inotify.max_user_instances)";
    return strerror(err);
}

static void raise_error(loom_watch_t *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void raise_error(loom_watch_t *w, const char *fmt, ...)
{
    char msg[PATH_MAX + 256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (w->starting) {
        if (!w->deferred_error) w->deferred_error = loom_xstrdup(msg);
        return;
    }
    if (!w->on_error || w->stopping) return;
    w->depth++;
    w->on_error(w->ud, msg);
    w->depth--;
}

/* ---- entries ---- */

static entry_t *entry_get(loom_watch_t *w, const char *path)
{
    entry_t *e = loom_smap_get(&w->files, path);
    if (e) return e;
    e = loom_xcalloc(1, sizeof *e);
    e->path = loom_xstrdup(path);
    loom_smap_put(&w->files, e->path, e);
    return e;
}

static void pending_add(loom_watch_t *w, entry_t *e)
{
    if (e->pending) return;
    e->pending = true;
    e->link.prev = w->pending.prev;
    e->link.next = &w->pending;
    w->pending.prev->next = &e->link;
    w->pending.prev = &e->link;
}

static void pending_remove(entry_t *e)
{
    if (!e->pending) return;
    e->pending = false;
    e->ready = false;
    e->link.prev->next = e->link.next;
    e->link.next->prev = e->link.prev;
    e->link.prev = e->link.next = NULL;
}

static void forget(loom_watch_t *w, entry_t *e)
{
    pending_remove(e);
    loom_smap_del(&w->files, e->path);
    free(e->path);
    free(e);
}

static void forget_path(loom_watch_t *w, const char *path)
{
    entry_t *e = loom_smap_get(&w->files, path);
    if (e) forget(w, e);
}

static void forget_files_under(loom_watch_t *w, const char *dir)
{
    void *v;
    for (size_t i = 0; loom_map_next(&w->files, &i, &v);) {
        entry_t *e = v;
        if (is_under(e->path, dir)) forget(w, e); /* erasing leaves a tombstone: safe */
    }
}

static bool same_as_reported(const entry_t *e, uint64_t size, int64_t mtime_ns)
{
    return e->reported && e->rep_size == size && e->rep_mtime_ns == mtime_ns;
}

/* Tells the caller; false once the caller has stopped the watcher. */
static bool report(loom_watch_t *w, entry_t *e, uint64_t size, int64_t mtime_ns, const char *how)
{
    pending_remove(e);
    e->reported = true;
    e->rep_size = size;
    e->rep_mtime_ns = mtime_ns;
    w->depth++;
    w->on_file(w->ud, e->path, size, mtime_ns, how);
    w->depth--;
    return !w->stopping;
}

/* A writer closed it or it was renamed in: it counts now, if it is a
 * regular file and a version not reported yet. */
static void report_now(loom_watch_t *w, const char *path, const char *how)
{
    struct stat st;
    if (lstat(path, &st) != 0 || !S_ISREG(st.st_mode)) return;
    entry_t *e = entry_get(w, path);
    if (same_as_reported(e, (uint64_t)st.st_size, mtime_ns_of(&st))) {
        pending_remove(e);
        return;
    }
    report(w, e, (uint64_t)st.st_size, mtime_ns_of(&st), how);
}

/* Created or written: a candidate that must settle. A stat only when it
 * becomes one (a writer makes an IN_MODIFY per write): later writes restart
 * its wait, and the tick compares size and mtime with this first look, which
 * also catches writes whose events the loop has not read yet. */
static void observe_event(loom_watch_t *w, const char *path)
{
    entry_t *e = loom_smap_get(&w->files, path);
    if (!e || !e->pending) {
        struct stat st;
        if (lstat(path, &st) != 0 || !S_ISREG(st.st_mode)) return;
        if (e && same_as_reported(e, (uint64_t)st.st_size, mtime_ns_of(&st))) return;
        e = entry_get(w, path);
        pending_add(w, e);
        e->from_scan = false;
        e->size = (uint64_t)st.st_size;
        e->mtime_ns = mtime_ns_of(&st);
    }
    e->ready = false;
    e->since = loom_clock_now(&w->mono);
}

static bool old_enough(const loom_watch_t *w, int64_t mtime_ns, uint64_t wall)
{
    int64_t age = (int64_t)wall - mtime_ns / 1000000;
    return age >= 0 && (uint64_t)age >= w->settle_ms;
}

static void observe_scan(loom_watch_t *w, const char *path, const struct stat *st)
{
    uint64_t size = (uint64_t)st->st_size;
    int64_t mtime_ns = mtime_ns_of(st);
    entry_t *e = entry_get(w, path);
    e->gen = w->gen;
    if (same_as_reported(e, size, mtime_ns)) {
        pending_remove(e);
        return;
    }
    if (!e->pending) {
        pending_add(w, e);
        e->from_scan = true;
        e->since = loom_clock_now(&w->mono);
        e->ready = w->settle_ms == 0 || old_enough(w, mtime_ns, loom_clock_now(&w->wall));
    } else if (e->size != size || e->mtime_ns != mtime_ns) {
        e->since = loom_clock_now(&w->mono);
        e->ready = false;
    } else if (w->settle_ms == 0 && !e->from_scan &&
               loom_clock_now(&w->mono) - e->since >= LOOM_WATCH_RESCAN_DEFAULT_MS) {
        /* settle 0 waits for the writer's close; a file that got none (a
         * hard link) counts at a rescan once it has been quiet for 30 s. */
        e->from_scan = true;
        e->ready = true;
    }
    e->size = size;
    e->mtime_ns = mtime_ns;
}

/* ---- the settle timer ---- */

static void on_tick_timer(uv_timer_t *t);

static uint64_t sat_add(uint64_t a, uint64_t b)
{
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

/* Milliseconds until e may count, as far as the clocks tell now. */
static uint64_t due_in(const loom_watch_t *w, const entry_t *e, uint64_t now, uint64_t wall)
{
    if (e->ready) return 0;
    if (w->settle_ms == 0) return e->from_scan ? 0 : UINT64_MAX; /* waits for its close */
    uint64_t due = sat_add(e->since, w->settle_ms);
    uint64_t in = due > now ? due - now : 0;
    int64_t mtime_ms = e->mtime_ns / 1000000;
    uint64_t old_at = mtime_ms < 0 ? 0 : sat_add((uint64_t)mtime_ms, w->settle_ms);
    uint64_t wall_in = old_at > wall ? old_at - wall : 0;
    return wall_in < in ? wall_in : in;
}

static void arm_tick(loom_watch_t *w)
{
    if (w->stopping || w->deferred_error || w->want_rescan) return; /* a kick is armed */
    if (w->pending.next == &w->pending) {
        uv_timer_stop(&w->tick_timer);
        return;
    }
    uint64_t now = loom_clock_now(&w->mono), wall = loom_clock_now(&w->wall);
    uint64_t in = UINT64_MAX;
    for (wlink_t *l = w->pending.next; l != &w->pending && in > 0; l = l->next) {
        uint64_t d = due_in(w, (const entry_t *)l, now, wall);
        if (d < in) in = d;
    }
    if (in == UINT64_MAX)
        uv_timer_stop(&w->tick_timer);
    else
        uv_timer_start(&w->tick_timer, on_tick_timer, in, 0);
}

/* Runs tick (and a wanted rescan) from the loop, soon. */
static void kick(loom_watch_t *w)
{
    if (!w->stopping) uv_timer_start(&w->tick_timer, on_tick_timer, 0, 0);
}

/* Re-stats a pending file; reports it if it counts. False once stopped. */
static bool settle_one(loom_watch_t *w, entry_t *e, uint64_t now, uint64_t wall)
{
    if (e->ready) return report(w, e, e->size, e->mtime_ns, e->from_scan ? "scanned" : "settled");
    struct stat st;
    if (lstat(e->path, &st) != 0 || !S_ISREG(st.st_mode)) {
        forget(w, e);
        return true;
    }
    uint64_t size = (uint64_t)st.st_size;
    int64_t mtime_ns = mtime_ns_of(&st);
    if (same_as_reported(e, size, mtime_ns)) {
        pending_remove(e);
        return true;
    }
    if (e->size != size || e->mtime_ns != mtime_ns) e->since = now;
    e->size = size;
    e->mtime_ns = mtime_ns;
    /* settle 0: a file seen being written counts at its close (or rename),
     * never half-written. */
    if (w->settle_ms == 0 && !e->from_scan) return true;
    bool quiet = now >= e->since && now - e->since >= w->settle_ms;
    if (w->settle_ms == 0 || quiet || old_enough(w, mtime_ns, wall))
        return report(w, e, size, mtime_ns, "settled");
    return true;
}

void loom_watch_tick(loom_watch_t *w)
{
    if (!w || w->stopping) return;
    if (w->depth > 0) {
        kick(w);
        return;
    }
    uint64_t now = loom_clock_now(&w->mono), wall = loom_clock_now(&w->wall);
    for (wlink_t *l = w->pending.next, *next; l != &w->pending; l = next) {
        next = l->next; /* settle_one unlinks or frees l, never another entry */
        if (!settle_one(w, (entry_t *)l, now, wall)) return;
    }
    arm_tick(w);
}

static void on_tick_timer(uv_timer_t *t)
{
    loom_watch_t *w = t->data;
    if (w->deferred_error) {
        char *msg = w->deferred_error;
        w->deferred_error = NULL;
        raise_error(w, "%s", msg);
        free(msg);
        if (w->stopping) return;
    }
    if (w->want_rescan) {
        w->want_rescan = false;
        loom_watch_rescan(w);
    } else {
        loom_watch_tick(w);
    }
}

/* ---- folders ---- */

static void drop_dir(loom_watch_t *w, wdir_t *d)
{
    inotify_rm_watch(w->ifd, d->wd); /* its IN_IGNORED then finds no entry */
    loom_map_del(&w->dirs, (uint64_t)d->wd);
    if (d->wd == w->root_wd) w->root_wd = -1;
    free(d->path);
    free(d);
}

static void drop_dirs_under(loom_watch_t *w, const char *path)
{
    void *v;
    for (size_t i = 0; loom_map_next(&w->dirs, &i, &v);)
        if (is_under(((wdir_t *)v)->path, path)) drop_dir(w, v);
}

static void drop_all_dirs(loom_watch_t *w)
{
    void *v;
    for (size_t i = 0; loom_map_next(&w->dirs, &i, &v);) drop_dir(w, v);
    w->root_wd = -1;
}

/* Records the watch inotify gave for path: the same folder (inode) gives
 * the same wd, whose path is then brought up to date (renamed folders). */
static void note_dir(loom_watch_t *w, int wd, const char *path)
{
    wdir_t *d = loom_map_get(&w->dirs, (uint64_t)wd);
    if (!d) {
        d = loom_xcalloc(1, sizeof *d);
        d->wd = wd;
        loom_map_put(&w->dirs, (uint64_t)wd, d);
    }
    if (!d->path || strcmp(d->path, path) != 0) {
        free(d->path);
        d->path = loom_xstrdup(path);
    }
    d->gen = w->gen;
}

/* Watches the folder if it is not watched, or no longer the folder at that
 * path (deleted and made again, mounted over). False, having said why once,
 * when it cannot be scanned now; true without a watch at the inotify watch
 * limit, where rescans alone find files. */
static bool ensure_root(loom_watch_t *w)
{
    int wd = inotify_add_watch(w->ifd, w->root, DIR_MASK);
    if (wd < 0) {
        int err = errno;
        if (w->root_wd >= 0) drop_all_dirs(w);
        if (!w->root_missing) {
            w->root_missing = true;
            raise_error(w, "watch %s: %s; trying again at each rescan", w->root, why_not(err));
        }
        return err == ENOSPC;
    }
    if (wd != w->root_wd && w->root_wd >= 0) drop_all_dirs(w);
    w->root_wd = wd;
    w->root_missing = false;
    note_dir(w, wd, w->root);
    return true;
}

static void root_gone(loom_watch_t *w, const char *what)
{
    drop_all_dirs(w);
    w->root_missing = true;
    raise_error(w, "watch %s: the folder %s; trying again at each rescan", w->root, what);
}

/* ---- scans ---- */

typedef struct {
    char **stack;
    size_t n, cap;
    unsigned problems;
    char first[PATH_MAX + 128];
    bool complete; /* every folder was read: what was not found is gone */
} scan_t;

static void scan_push(scan_t *s, const char *dir, const char *name)
{
    char path[PATH_MAX];
    if (!join(path, sizeof path, dir, name)) return;
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 16;
        s->stack = loom_xrealloc(s->stack, s->cap * sizeof *s->stack);
    }
    s->stack[s->n++] = loom_xstrdup(path);
}

static void scan_problem(scan_t *s, const char *path, const char *what, int err)
{
    if (s->problems++ == 0)
        snprintf(s->first, sizeof s->first, "%s: %s%s", path, what, why_not(err));
}

static void scan_entry(loom_watch_t *w, scan_t *s, int dfd, const char *dir,
                       const struct dirent *de)
{
    const char *name = de->d_name;
    if (name[0] == '.') return; /* ".", "..", dot-files and dot-folders */
    if (de->d_type == DT_DIR) {
        if (w->recursive) scan_push(s, dir, name);
        return;
    }
    if (de->d_type != DT_REG && de->d_type != DT_UNKNOWN) return;
    if (de->d_type == DT_REG && !name_counts(w, name)) return;
    struct stat st;
    if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) return;
    if (S_ISDIR(st.st_mode)) {
        if (w->recursive) scan_push(s, dir, name);
        return;
    }
    char path[PATH_MAX];
    if (!S_ISREG(st.st_mode) || !name_counts(w, name) || !join(path, sizeof path, dir, name))
        return;
    observe_scan(w, path, &st);
}

/* Reads one folder, watching it first (a sub-folder) so that nothing that
 * arrives while it is read is missed. */
static void scan_dir(loom_watch_t *w, scan_t *s, const char *dir, bool is_root)
{
    if (!is_root) {
        int wd = inotify_add_watch(w->ifd, dir, DIR_MASK | IN_DONT_FOLLOW);
        if (wd >= 0)
            note_dir(w, wd, dir);
        else if (errno == ENOSPC)
            scan_problem(s, dir, "not watched, found by rescans only: ", ENOSPC);
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | (is_root ? 0 : O_NOFOLLOW));
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        int err = errno;
        if (fd >= 0) close(fd);
        if (err == ENOENT || err == ENOTDIR || err == ELOOP) return; /* gone, or now a link */
        s->complete = false;
        scan_problem(s, dir, "cannot read: ", err);
        return;
    }
    struct dirent *de;
    for (;;) {
        errno = 0; /* readdir tells the end from an error only through errno */
        if (!(de = readdir(d))) break;
        scan_entry(w, s, fd, dir, de);
    }
    if (errno) {
        s->complete = false;
        scan_problem(s, dir, "cannot read: ", errno);
    }
    closedir(d);
}

/* After a complete scan, what it did not find no longer exists. */
static void sweep(loom_watch_t *w)
{
    void *v;
    for (size_t i = 0; loom_map_next(&w->files, &i, &v);)
        if (((entry_t *)v)->gen != w->gen) forget(w, v);
    for (size_t i = 0; loom_map_next(&w->dirs, &i, &v);)
        if (((wdir_t *)v)->gen != w->gen) drop_dir(w, v);
}

/* Scans top and, when recursive, the folders under it. full: top is the
 * root and this is a rescan, which may forget what it did not find. */
static void scan_tree(loom_watch_t *w, const char *top, bool full)
{
    scan_t s = {.complete = true};
    scan_dir(w, &s, top, full);
    while (s.n > 0) {
        char *dir = s.stack[--s.n];
        scan_dir(w, &s, dir, false);
        free(dir);
    }
    free(s.stack);
    if (full && s.complete) sweep(w);
    if (s.problems == 0) {
        if (full) {
            free(w->scan_problem);
            w->scan_problem = NULL;
        }
        return;
    }
    char msg[sizeof s.first + 64];
    snprintf(msg, sizeof msg, "%s (%u problem%s in this scan)", s.first, s.problems,
             s.problems == 1 ? "" : "s");
    if (w->scan_problem && strcmp(w->scan_problem, msg) == 0) return;
    free(w->scan_problem);
    w->scan_problem = loom_xstrdup(msg);
    raise_error(w, "watch %s: %s", w->root, msg);
}

static void scan_all(loom_watch_t *w)
{
    w->gen++;
    if (ensure_root(w)) scan_tree(w, w->root, true);
}

void loom_watch_rescan(loom_watch_t *w)
{
    if (!w || w->stopping) return;
    if (w->depth > 0) {
        w->want_rescan = true;
        kick(w);
        return;
    }
    scan_all(w);
    loom_watch_tick(w);
}

static void on_rescan_timer(uv_timer_t *t)
{
    loom_watch_rescan(t->data);
}

/* ---- inotify ---- */

/* An event about a watched folder itself. */
static void on_dir_self(loom_watch_t *w, wdir_t *d, uint32_t mask)
{
    if (d->wd != w->root_wd) {
        /* A sub-folder: its parent's IN_DELETE or IN_MOVED_FROM did the rest. */
        if (mask & IN_IGNORED) {
            loom_map_del(&w->dirs, (uint64_t)d->wd);
            free(d->path);
            free(d);
        }
        return;
    }
    if (mask & IN_MOVE_SELF)
        root_gone(w, "was moved away");
    else if (mask & IN_IGNORED)
        root_gone(w, "is gone (deleted or unmounted)");
    /* IN_DELETE_SELF and IN_UNMOUNT: IN_IGNORED follows. */
}

static void on_subdir_event(loom_watch_t *w, const char *path, const char *name, uint32_t mask)
{
    if (mask & (IN_CREATE | IN_MOVED_TO)) {
        /* Files may have arrived before the watch: scan it. */
        if (w->recursive && name[0] != '.') scan_tree(w, path, false);
    } else if (mask & IN_MOVED_FROM) {
        /* Its files get no events of their own; if it moved within the tree,
         * IN_MOVED_TO scans it again under its new name. */
        drop_dirs_under(w, path);
        if (w->recursive) forget_files_under(w, path);
    } else if (mask & IN_DELETE) {
        drop_dirs_under(w, path); /* its files had IN_DELETE each */
    }
}

static void handle_event(loom_watch_t *w, const struct inotify_event *ev)
{
    if (ev->mask & IN_Q_OVERFLOW) {
        loom_watch_rescan(w);
        return;
    }
    wdir_t *d = loom_map_get(&w->dirs, (uint64_t)ev->wd);
    if (!d) return; /* a watch dropped already */
    if (ev->mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT)) {
        on_dir_self(w, d, ev->mask);
        return;
    }
    char path[PATH_MAX];
    if (ev->len == 0 || !join(path, sizeof path, d->path, ev->name)) return;
    if (ev->mask & IN_ISDIR) {
        on_subdir_event(w, path, ev->name, ev->mask);
        return;
    }
    if (!name_counts(w, ev->name)) return;
    if (ev->mask & IN_CLOSE_WRITE)
        report_now(w, path, "closed");
    else if (ev->mask & IN_MOVED_TO)
        report_now(w, path, "moved");
    else if (ev->mask & (IN_CREATE | IN_MODIFY))
        observe_event(w, path);
    else if (ev->mask & (IN_DELETE | IN_MOVED_FROM))
        forget_path(w, path);
}

static void on_inotify_readable(uv_poll_t *h, int status, int events)
{
    loom_watch_t *w = h->data;
    (void)events;
    if (status < 0) {
        /* Not expected on an inotify descriptor; rescans still find files. */
        uv_poll_stop(h);
        raise_error(w, "watch %s: polling inotify: %s; rescans only from now", w->root,
                    uv_strerror(status));
        return;
    }
    char buf[16384] __attribute__((aligned(__alignof__(struct inotify_event))));
    for (int round = 0; round < MAX_READS && !w->stopping; round++) {
        ssize_t n = read(w->ifd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno != EAGAIN)
            raise_error(w, "watch %s: reading inotify: %s", w->root, strerror(errno));
        if (n <= 0) break;
        for (char *p = buf; p < buf + n && !w->stopping;) {
            const struct inotify_event *ev = (const struct inotify_event *)p;
            p += sizeof *ev + ev->len;
            handle_event(w, ev);
        }
    }
    arm_tick(w);
}

/* ---- lifetime ---- */

static void destroy(loom_watch_t *w)
{
    void *v;
    for (size_t i = 0; loom_map_next(&w->files, &i, &v);) {
        free(((entry_t *)v)->path);
        free(v);
    }
    for (size_t i = 0; loom_map_next(&w->dirs, &i, &v);) {
        free(((wdir_t *)v)->path);
        free(v);
    }
    loom_map_free(&w->files);
    loom_map_free(&w->dirs);
    if (w->ifd >= 0) close(w->ifd);
    free(w->deferred_error);
    free(w->scan_problem);
    free(w->root);
    free(w->glob);
    free(w);
}

static void on_handle_closed(uv_handle_t *h)
{
    loom_watch_t *w = h->data;
    if (--w->open_handles == 0) destroy(w);
}

static bool config_ok(const loom_watch_config_t *cfg, char *why, size_t whylen)
{
    const char *problem = NULL;
    if (!cfg->path || cfg->path[0] != '/')
        problem = "the folder must be an absolute path";
    else if (strlen(cfg->path) >= PATH_MAX)
        problem = "the folder's path is too long";
    else if (cfg->glob && strchr(cfg->glob, '/'))
        problem = "the glob matches file names and cannot contain '/'";
    else if (!cfg->on_file)
        problem = "no on_file callback";
    if (problem) snprintf(why, whylen, "watch %s: %s", cfg->path ? cfg->path : "(null)", problem);
    return problem == NULL;
}

static loom_watch_t *watch_new(uv_loop_t *loop, const loom_watch_config_t *cfg)
{
    loom_watch_t *w = loom_xcalloc(1, sizeof *w);
    w->loop = loop;
    size_t len = strlen(cfg->path);
    while (len > 1 && cfg->path[len - 1] == '/') len--;
    w->root = loom_xstrndup(cfg->path, len);
    w->glob = loom_xstrdup(cfg->glob && cfg->glob[0] ? cfg->glob : "*");
    w->recursive = cfg->recursive;
    w->settle_ms = cfg->settle_ms;
    w->rescan_ms =
        cfg->rescan_ms == LOOM_WATCH_RESCAN_DEFAULT ? LOOM_WATCH_RESCAN_DEFAULT_MS : cfg->rescan_ms;
    w->mono = cfg->mono.now_ms ? cfg->mono : loom_clock_real();
    w->wall = cfg->wall.now_ms ? cfg->wall : (loom_clock_t){real_wall, NULL};
    w->on_file = cfg->on_file;
    w->on_error = cfg->on_error;
    w->ud = cfg->ud;
    w->root_wd = -1;
    w->pending.prev = w->pending.next = &w->pending;
    return w;
}

loom_watch_t *loom_watch_start(uv_loop_t *loop, const loom_watch_config_t *cfg, char *why,
                               size_t whylen)
{
    if (!config_ok(cfg, why, whylen)) return NULL;
    loom_watch_t *w = watch_new(loop, cfg);
    w->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (w->ifd < 0) {
        snprintf(why, whylen, "watch %s: inotify: %s", w->root, why_not(errno));
        destroy(w);
        return NULL;
    }
    /* A missing folder waits for a rescan; any other refusal is a setup
     * error the caller should see now (not a folder, no permission, the
     * inotify watch limit). */
    w->root_wd = inotify_add_watch(w->ifd, w->root, DIR_MASK);
    if (w->root_wd < 0 && errno != ENOENT) {
        snprintf(why, whylen, "watch %s: %s", w->root,
                 errno == ENOTDIR ? "not a folder" : why_not(errno));
        destroy(w);
        return NULL;
    }
    int rc = uv_poll_init(loop, &w->poll, w->ifd);
    if (rc < 0) {
        snprintf(why, whylen, "watch %s: polling inotify: %s", w->root, uv_strerror(rc));
        destroy(w);
        return NULL;
    }
    uv_timer_init(loop, &w->tick_timer);
    uv_timer_init(loop, &w->rescan_timer);
    w->poll.data = w->tick_timer.data = w->rescan_timer.data = w;
    w->open_handles = 3;
    uv_poll_start(&w->poll, UV_READABLE, on_inotify_readable);
    if (w->rescan_ms > 0)
        uv_timer_start(&w->rescan_timer, on_rescan_timer, w->rescan_ms, w->rescan_ms);

    w->starting = true; /* errors and files wait for the loop */
    scan_all(w);
    w->starting = false;
    kick(w);
    return w;
}

void loom_watch_stop(loom_watch_t *w)
{
    if (!w || w->stopping) return;
    w->stopping = true;
    uv_close((uv_handle_t *)&w->poll, on_handle_closed);
    uv_close((uv_handle_t *)&w->tick_timer, on_handle_closed);
    uv_close((uv_handle_t *)&w->rescan_timer, on_handle_closed);
}
