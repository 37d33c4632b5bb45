/* The folder watcher behind data triggers: real files in a temporary folder,
 * a real libuv loop, and injected clocks for everything that waits to
 * settle, so no test sleeps. Where a test must show that something is NOT
 * reported, it writes a sentinel file afterwards and waits for that: inotify
 * delivers a folder's events in order, so by then the others were seen. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "loom/util.h"
#include "watch.h"

#define SETTLE_MS 1000
#define FAKE_MONO_START 1000000

typedef struct {
    char path[PATH_MAX];
    uint64_t size;
    int64_t mtime_ns;
    char how[16];
} rep_t;

typedef struct {
    uv_loop_t loop;
    uv_timer_t beat; /* wakes uv_run(UV_RUN_ONCE) so a wait can time out */
    char tmp[64];
    char dir[128]; /* the watched folder: tmp/in */
    loom_watch_config_t cfg;
    loom_watch_t *w;
    uint64_t mono, wall; /* the injected clocks; wall is frozen at setup */
    time_t old;          /* an hour before setup: the mtime of put_old files */
    rep_t reps[64];
    size_t n;
    char errors[8][512];
    size_t n_err;
    bool stop_in_file, stop_in_error;
    bool rescan_in_file; /* on_file calls rescan and tick (deferred to the loop) */
    unsigned sentinels;
} fx_t;

static uint64_t fake_mono(void *ud)
{
    return ((fx_t *)ud)->mono;
}

static uint64_t fake_wall(void *ud)
{
    return ((fx_t *)ud)->wall;
}

static void on_file(void *ud, const char *path, uint64_t size, int64_t mtime_ns, const char *how)
{
    fx_t *fx = ud;
    assert_true(fx->n < sizeof fx->reps / sizeof fx->reps[0]);
    rep_t *r = &fx->reps[fx->n++];
    snprintf(r->path, sizeof r->path, "%s", path);
    r->size = size;
    r->mtime_ns = mtime_ns;
    snprintf(r->how, sizeof r->how, "%s", how);
    if (fx->rescan_in_file) {
        loom_watch_rescan(fx->w);
        loom_watch_tick(fx->w);
    }
    if (fx->stop_in_file) {
        loom_watch_stop(fx->w);
        fx->w = NULL;
    }
}

static void on_error(void *ud, const char *why)
{
    fx_t *fx = ud;
    if (fx->n_err < sizeof fx->errors / sizeof fx->errors[0])
        snprintf(fx->errors[fx->n_err], sizeof fx->errors[0], "%s", why);
    fx->n_err++;
    if (fx->stop_in_error) {
        loom_watch_stop(fx->w);
        fx->w = NULL;
    }
}

static void on_beat(uv_timer_t *t)
{
    (void)t;
}

static int setup(void **state)
{
    fx_t *fx = loom_xcalloc(1, sizeof *fx);
    snprintf(fx->tmp, sizeof fx->tmp, "/tmp/loom-watch-XXXXXX");
    assert_non_null(mkdtemp(fx->tmp));
    snprintf(fx->dir, sizeof fx->dir, "%s/in", fx->tmp);
    assert_int_equal(mkdir(fx->dir, 0755), 0);
    assert_int_equal(uv_loop_init(&fx->loop), 0);
    uv_timer_init(&fx->loop, &fx->beat);
    uv_timer_start(&fx->beat, on_beat, 5, 5);
    fx->mono = FAKE_MONO_START;
    fx->wall = loom_unix_ms();
    fx->old = (time_t)(fx->wall / 1000) - 3600;
    fx->cfg = (loom_watch_config_t){.path = fx->dir,
                                    .glob = "*.csv",
                                    .settle_ms = SETTLE_MS,
                                    .rescan_ms = 0,
                                    .mono = {fake_mono, fx},
                                    .wall = {fake_wall, fx},
                                    .on_file = on_file,
                                    .on_error = on_error,
                                    .ud = fx};
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    loom_watch_stop(fx->w);
    uv_close((uv_handle_t *)&fx->beat, NULL);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&fx->loop), 0); /* the watcher released everything */
    assert_int_equal(loom_empty_tree(fx->tmp), 0);
    rmdir(fx->tmp);
    free(fx);
    return 0;
}

/* tmp/in/rel, or tmp/rel when rel starts with "../". */
static const char *at(fx_t *fx, const char *rel)
{
    static char bufs[4][PATH_MAX];
    static unsigned next;
    char *p = bufs[next++ % 4];
    if (strncmp(rel, "../", 3) == 0)
        snprintf(p, PATH_MAX, "%s/%s", fx->tmp, rel + 3);
    else
        snprintf(p, PATH_MAX, "%s/%s", fx->dir, rel);
    return p;
}

static void put(fx_t *fx, const char *rel, const char *data)
{
    int fd = open(at(fx, rel), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, strlen(data)), (ssize_t)strlen(data));
    assert_int_equal(close(fd), 0);
}

/* A file last written an hour ago: complete when a scan finds it. */
static void put_old(fx_t *fx, const char *rel, const char *data)
{
    put(fx, rel, data);
    struct timespec t[2] = {{fx->old, 0}, {fx->old, 0}};
    assert_int_equal(utimensat(AT_FDCWD, at(fx, rel), t, 0), 0);
}

static void md(fx_t *fx, const char *rel)
{
    assert_int_equal(mkdir(at(fx, rel), 0755), 0);
}

static void start(fx_t *fx)
{
    char why[256] = "";
    fx->w = loom_watch_start(&fx->loop, &fx->cfg, why, sizeof why);
    if (!fx->w) fail_msg("start: %s", why);
    assert_int_equal(fx->n, 0); /* never from inside start */
    assert_int_equal(fx->n_err, 0);
}

/* How many reports name rel. */
static size_t count(fx_t *fx, const char *rel)
{
    const char *path = at(fx, rel);
    size_t k = 0;
    for (size_t i = 0; i < fx->n; i++) k += strcmp(fx->reps[i].path, path) == 0;
    return k;
}

/* The last report that names rel. */
static const rep_t *last(fx_t *fx, const char *rel)
{
    const char *path = at(fx, rel);
    for (size_t i = fx->n; i-- > 0;)
        if (strcmp(fx->reps[i].path, path) == 0) return &fx->reps[i];
    fail_msg("%s was not reported", path);
    return NULL;
}

/* Turns the loop until there are n reports. advance: each turn also moves
 * the monotonic clock past the settle time and ticks, for files that may
 * arrive either by event or through the settle rule. */
static void wait_reports(fx_t *fx, size_t n, bool advance)
{
    uint64_t deadline = loom_mono_ms() + 10000;
    while (fx->n < n) {
        if (loom_mono_ms() > deadline) fail_msg("waited for %zu reports, have %zu", n, fx->n);
        uv_run(&fx->loop, UV_RUN_ONCE);
        if (advance && fx->w && fx->n < n) {
            fx->mono += SETTLE_MS + 1;
            loom_watch_tick(fx->w);
        }
    }
}

static void wait_errors(fx_t *fx, size_t n)
{
    uint64_t deadline = loom_mono_ms() + 10000;
    while (fx->n_err < n) {
        if (loom_mono_ms() > deadline) fail_msg("waited for %zu errors, have %zu", n, fx->n_err);
        uv_run(&fx->loop, UV_RUN_ONCE);
    }
}

/* Writes a sentinel file in rel_dir and waits for its report, then drops
 * it from the list: every event queued before it has been handled. */
static void sync_events(fx_t *fx, const char *rel_dir)
{
    char rel[128];
    snprintf(rel, sizeof rel, "%s%szz-sentinel-%u.csv", rel_dir, rel_dir[0] ? "/" : "",
             fx->sentinels++);
    size_t before = fx->n;
    put(fx, rel, "s");
    wait_reports(fx, before + 1, false);
    assert_int_equal(count(fx, rel), 1);
    assert_string_equal(last(fx, rel)->how, "closed");
    fx->n--;
    assert_int_equal(unlink(at(fx, rel)), 0);
}

/* Gives everything a chance: a rescan, then the clocks far past settling. */
static void flush_all(fx_t *fx)
{
    loom_watch_rescan(fx->w);
    fx->mono += 100 * SETTLE_MS;
    fx->wall += 100 * SETTLE_MS;
    loom_watch_tick(fx->w);
    loom_watch_rescan(fx->w);
}

static int64_t mtime_of(fx_t *fx, const char *rel)
{
    struct stat st;
    assert_int_equal(stat(at(fx, rel), &st), 0);
    return (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
}

/* ---- tests ---- */

static void test_closed_file_is_reported_once(void **state)
{
    fx_t *fx = *state;
    start(fx);
    uv_run(&fx->loop, UV_RUN_NOWAIT);
    assert_int_equal(fx->n, 0); /* an empty folder */
    put(fx, "a.csv", "hello");
    wait_reports(fx, 1, false);
    const rep_t *r = last(fx, "a.csv");
    assert_string_equal(r->how, "closed");
    assert_int_equal(r->size, 5);
    assert_int_equal(r->mtime_ns, mtime_of(fx, "a.csv"));
    sync_events(fx, "");
    flush_all(fx);
    assert_int_equal(fx->n, 1);

    /* Rewritten with another size: a new version, reported again. */
    put(fx, "a.csv", "hello, again");
    wait_reports(fx, 2, false);
    assert_string_equal(last(fx, "a.csv")->how, "closed");
    assert_int_equal(last(fx, "a.csv")->size, 12);
    sync_events(fx, "");
    assert_int_equal(count(fx, "a.csv"), 2);
}

static void test_slow_writer_is_reported_once_after_close(void **state)
{
    fx_t *fx = *state;
    start(fx);
    int fd = open(at(fx, "slow.csv"), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(write(fd, "piece,", 6), 6);
        sync_events(fx, ""); /* the loop has seen this write */
        fx->mono += SETTLE_MS / 2;
        loom_watch_tick(fx->w);
        assert_int_equal(count(fx, "slow.csv"), 0);
    }
    assert_int_equal(close(fd), 0);
    wait_reports(fx, 1, false);
    assert_string_equal(last(fx, "slow.csv")->how, "closed");
    assert_int_equal(last(fx, "slow.csv")->size, 24);
    sync_events(fx, "");
    flush_all(fx);
    assert_int_equal(fx->n, 1);
}

static void test_rename_into_folder_is_reported_as_moved(void **state)
{
    fx_t *fx = *state;
    md(fx, "../outside");
    start(fx);
    put(fx, "../outside/b.csv", "from a sibling folder");
    assert_int_equal(rename(at(fx, "../outside/b.csv"), at(fx, "b.csv")), 0);
    put(fx, ".c.csv", "from a dot-file");
    assert_int_equal(rename(at(fx, ".c.csv"), at(fx, "c.csv")), 0);
    put(fx, "d.csv.part", "from a .part file");
    assert_int_equal(rename(at(fx, "d.csv.part"), at(fx, "d.csv")), 0);
    wait_reports(fx, 3, false);
    sync_events(fx, "");
    flush_all(fx);
    assert_int_equal(fx->n, 3);
    const char *names[] = {"b.csv", "c.csv", "d.csv"};
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(count(fx, names[i]), 1);
        assert_string_equal(last(fx, names[i])->how, "moved");
    }
    assert_int_equal(last(fx, "b.csv")->size, strlen("from a sibling folder"));
}

static void test_unmatched_and_in_progress_names_are_ignored(void **state)
{
    fx_t *fx = *state;
    static const char *const names[] = {"x.txt",     ".hidden.csv",   "e.csv.part",
                                        "f.csv.tmp", "g.csv.partial", "h.csv.crdownload",
                                        "csv",       "notes.csv.bak"};
    put_old(fx, "old.txt", "not a csv");
    put_old(fx, ".old.csv", "dot-file");
    put_old(fx, "old.csv.part", "in progress");
    put_old(fx, "../target.csv", "a link's target");
    assert_int_equal(symlink(at(fx, "../target.csv"), at(fx, "link1.csv")), 0);
    start(fx);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) put(fx, names[i], "data");
    assert_int_equal(symlink(at(fx, "../target.csv"), at(fx, "link2.csv")), 0);
    sync_events(fx, "");
    flush_all(fx);
    assert_int_equal(fx->n, 0);
}

static void test_recursive_reports_files_in_new_subfolders(void **state)
{
    fx_t *fx = *state;
    fx->cfg.recursive = true;
    start(fx);

    /* The file may be written before the watch on its folder exists: either
     * its close is seen, or the scan of the new folder finds it. */
    md(fx, "sub");
    put(fx, "sub/a.csv", "a");
    wait_reports(fx, 1, true);
    assert_int_equal(count(fx, "sub/a.csv"), 1);
    put(fx, "sub/b.csv", "b"); /* the folder is watched now */
    wait_reports(fx, 2, false);
    assert_string_equal(last(fx, "sub/b.csv")->how, "closed");

    /* Folders made several levels at once. */
    md(fx, "x");
    md(fx, "x/y");
    md(fx, "x/y/z");
    put(fx, "x/y/z/c.csv", "c");
    wait_reports(fx, 3, true);
    assert_int_equal(count(fx, "x/y/z/c.csv"), 1);
    sync_events(fx, "x/y/z");

    /* A folder moved in with files already inside. */
    md(fx, "../outside");
    put(fx, "../outside/m.csv", "m");
    assert_int_equal(rename(at(fx, "../outside"), at(fx, "moved-in")), 0);
    wait_reports(fx, 4, true);
    assert_int_equal(count(fx, "moved-in/m.csv"), 1);
    sync_events(fx, "moved-in");

    /* Neither dot-folders nor links to folders are entered. */
    md(fx, ".staging");
    put(fx, ".staging/s.csv", "s");
    md(fx, "../elsewhere");
    put_old(fx, "../elsewhere/e.csv", "e");
    assert_int_equal(symlink(at(fx, "../elsewhere"), at(fx, "link")), 0);
    sync_events(fx, "");
    flush_all(fx);
    assert_int_equal(fx->n, 4);
}

static void test_non_recursive_ignores_subfolders(void **state)
{
    fx_t *fx = *state;
    md(fx, "old");
    put_old(fx, "old/a.csv", "a");
    start(fx);
    md(fx, "sub");
    put(fx, "sub/b.csv", "b");
    sync_events(fx, "");
    flush_all(fx);
    assert_int_equal(fx->n, 0);
}

static void test_first_scan_reports_existing_files_from_the_loop(void **state)
{
    fx_t *fx = *state;
    put_old(fx, "a.csv", "aaa");
    put_old(fx, "b.csv", "bb");
    start(fx); /* asserts nothing is reported from inside start */
    wait_reports(fx, 2, false);
    assert_string_equal(last(fx, "a.csv")->how, "scanned");
    assert_int_equal(last(fx, "a.csv")->size, 3);
    assert_int_equal(last(fx, "a.csv")->mtime_ns, mtime_of(fx, "a.csv"));
    assert_string_equal(last(fx, "b.csv")->how, "scanned");
    assert_int_equal(last(fx, "b.csv")->size, 2);
}

static void test_fresh_file_found_by_scan_waits_to_settle(void **state)
{
    fx_t *fx = *state;
    put(fx, "fresh.csv", "still arriving?"); /* before start: no inotify event */
    start(fx);
    for (int i = 0; i < 5; i++) uv_run(&fx->loop, UV_RUN_NOWAIT);
    loom_watch_tick(fx->w);
    assert_int_equal(fx->n, 0);
    fx->mono += SETTLE_MS - 1;
    loom_watch_tick(fx->w);
    loom_watch_rescan(fx->w); /* finding it again does not restart its wait */
    assert_int_equal(fx->n, 0);
    fx->mono += 1;
    loom_watch_tick(fx->w);
    assert_int_equal(fx->n, 1);
    assert_string_equal(last(fx, "fresh.csv")->how, "settled");
    assert_int_equal(last(fx, "fresh.csv")->size, strlen("still arriving?"));
}

static void test_size_change_restarts_settle(void **state)
{
    fx_t *fx = *state;
    put(fx, "grow.csv", "0123456789");
    start(fx);
    uv_run(&fx->loop, UV_RUN_NOWAIT);
    fx->mono += 600;
    loom_watch_tick(fx->w);
    assert_int_equal(fx->n, 0);
    /* truncate() writes without a close: only the settle rule can count it. */
    assert_int_equal(truncate(at(fx, "grow.csv"), 100), 0);
    loom_watch_tick(fx->w); /* sees the change: waits again from now */
    fx->mono += 500;        /* 1100 ms since found, 500 since the change */
    loom_watch_tick(fx->w);
    assert_int_equal(fx->n, 0);
    fx->mono += SETTLE_MS - 500;
    loom_watch_tick(fx->w);
    assert_int_equal(fx->n, 1);
    assert_string_equal(last(fx, "grow.csv")->how, "settled");
    assert_int_equal(last(fx, "grow.csv")->size, 100);
    sync_events(fx, ""); /* the IN_MODIFY from truncate does not report it again */
    flush_all(fx);
    assert_int_equal(fx->n, 1);
}

static void test_file_arriving_without_close_counts_once_settled(void **state)
{
    fx_t *fx = *state;
    put(fx, "../outside.csv", "0123456789");
    start(fx);
    /* A hard link makes IN_CREATE and nothing else. */
    assert_int_equal(link(at(fx, "../outside.csv"), at(fx, "linked.csv")), 0);
    sync_events(fx, ""); /* its IN_CREATE has been read */
    fx->mono += SETTLE_MS - 1;
    loom_watch_tick(fx->w);
    assert_int_equal(fx->n, 0);
    /* Written again, and the tick runs before the loop reads that event:
     * the tick's own look at the file must notice. */
    assert_int_equal(truncate(at(fx, "linked.csv"), 50), 0);
    fx->mono += 2;
    loom_watch_tick(fx->w);
    assert_int_equal(fx->n, 0);
    fx->mono += SETTLE_MS;
    loom_watch_tick(fx->w);
    assert_int_equal(fx->n, 1);
    assert_string_equal(last(fx, "linked.csv")->how, "settled");
    assert_int_equal(last(fx, "linked.csv")->size, 50);
    sync_events(fx, "");
    flush_all(fx);
    assert_int_equal(fx->n, 1);
}

static void test_same_file_not_reported_twice_across_rescans(void **state)
{
    fx_t *fx = *state;
    put_old(fx, "a.csv", "a");
    start(fx);
    wait_reports(fx, 1, false);
    for (int i = 0; i < 3; i++) flush_all(fx);
    sync_events(fx, "");
    assert_int_equal(fx->n, 1);

    /* A file that is gone is forgotten: the same version coming back is
     * reported again (the caller's record removes the duplicate). */
    int64_t mtime = last(fx, "a.csv")->mtime_ns;
    assert_int_equal(unlink(at(fx, "a.csv")), 0);
    loom_watch_rescan(fx->w);
    put_old(fx, "a.csv", "a");
    wait_reports(fx, 2, true);
    assert_int_equal(count(fx, "a.csv"), 2);
    assert_int_equal(last(fx, "a.csv")->mtime_ns, mtime);
}

/* Fills the inotify queue past its limit (fs.inotify.max_queued_events)
 * without letting the loop read it: later events are lost and the kernel
 * queues IN_Q_OVERFLOW instead. */
static void overflow_inotify(fx_t *fx)
{
    long max = 16384;
    FILE *f = fopen("/proc/sys/fs/inotify/max_queued_events", "r");
    if (f) {
        if (fscanf(f, "%ld", &max) != 1) max = 16384;
        fclose(f);
    }
    int fd[2];
    for (int i = 0; i < 2; i++) {
        fd[i] =
            open(at(fx, i ? "flood-1.txt" : "flood-0.txt"), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        assert_true(fd[i] >= 0);
    }
    /* Alternate files: the kernel merges only identical consecutive events. */
    for (long i = 0; i < max + 64; i++) assert_int_equal(write(fd[i % 2], "x", 1), 1);
    for (int i = 0; i < 2; i++) assert_int_equal(close(fd[i]), 0);
}

static void test_queue_overflow_rescans(void **state)
{
    fx_t *fx = *state;
    put_old(fx, "a.csv", "a");
    start(fx);
    wait_reports(fx, 1, false);

    /* What arrives while the queue is full is found by the rescan that
     * IN_Q_OVERFLOW starts. */
    overflow_inotify(fx);
    put_old(fx, "b.csv", "b");
    wait_reports(fx, 2, false);
    assert_string_equal(last(fx, "b.csv")->how, "scanned");

    /* A deletion inotify lost is noticed by a rescan, which forgets the file:
     * when the same version comes back it is reported again. */
    overflow_inotify(fx);
    assert_int_equal(unlink(at(fx, "a.csv")), 0);
    loom_watch_rescan(fx->w);
    put_old(fx, "a.csv", "a");
    wait_reports(fx, 3, false);
    assert_int_equal(count(fx, "a.csv"), 2);
    assert_string_equal(last(fx, "a.csv")->how, "scanned");
    sync_events(fx, "");
    assert_int_equal(fx->n, 3);
}

static void test_missing_folder_is_reported_then_watched_once_it_exists(void **state)
{
    fx_t *fx = *state;
    char later[128];
    snprintf(later, sizeof later, "%s/later", fx->tmp);
    fx->cfg.path = later;
    start(fx);
    wait_errors(fx, 1);
    assert_non_null(strstr(fx->errors[0], later));
    loom_watch_rescan(fx->w); /* a lasting problem is told once */
    assert_int_equal(fx->n_err, 1);

    assert_int_equal(mkdir(later, 0755), 0);
    put_old(fx, "../later/a.csv", "a");
    loom_watch_rescan(fx->w);
    assert_int_equal(fx->n, 1);
    assert_string_equal(last(fx, "../later/a.csv")->how, "scanned");
    put(fx, "../later/b.csv", "b"); /* watched now */
    wait_reports(fx, 2, false);
    assert_string_equal(last(fx, "../later/b.csv")->how, "closed");

    /* Deleted: told, and picked up again when it is back. */
    assert_int_equal(unlink(at(fx, "../later/a.csv")), 0);
    assert_int_equal(unlink(at(fx, "../later/b.csv")), 0);
    assert_int_equal(rmdir(later), 0);
    wait_errors(fx, 2);
    assert_non_null(strstr(fx->errors[1], "gone"));
    assert_int_equal(mkdir(later, 0755), 0);
    put_old(fx, "../later/c.csv", "c");
    loom_watch_rescan(fx->w);
    assert_int_equal(count(fx, "../later/c.csv"), 1);
    put(fx, "../later/d.csv", "d");
    wait_reports(fx, 4, false);
    assert_string_equal(last(fx, "../later/d.csv")->how, "closed");
    assert_int_equal(fx->n_err, 2);
}

static void test_periodic_rescan_finds_a_folder_created_later(void **state)
{
    fx_t *fx = *state;
    char later[128];
    snprintf(later, sizeof later, "%s/later", fx->tmp);
    fx->cfg.path = later;
    fx->cfg.rescan_ms = 20; /* real milliseconds */
    start(fx);
    wait_errors(fx, 1);
    assert_int_equal(mkdir(later, 0755), 0);
    put_old(fx, "../later/a.csv", "a");
    wait_reports(fx, 1, false); /* no explicit rescan */
    assert_string_equal(last(fx, "../later/a.csv")->how, "scanned");
}

static void test_settle_zero_counts_scanned_files_at_once(void **state)
{
    fx_t *fx = *state;
    fx->cfg.settle_ms = 0;
    put(fx, "fresh.csv", "x");
    start(fx);
    wait_reports(fx, 1, false);
    assert_string_equal(last(fx, "fresh.csv")->how, "scanned");
}

/* settle 0 is no licence to report a file half-written: a writer seen by
 * inotify counts at its close, however long it takes. */
static void test_settle_zero_still_waits_for_the_close(void **state)
{
    fx_t *fx = *state;
    fx->cfg.settle_ms = 0;
    start(fx);
    int fd = open(at(fx, "big.csv"), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(write(fd, "piece,", 6), 6);
        sync_events(fx, "");
        fx->mono += 1000;
        loom_watch_tick(fx->w);
        assert_int_equal(count(fx, "big.csv"), 0);
    }
    loom_watch_rescan(fx->w); /* a rescan mid-write does not count it either */
    sync_events(fx, "");
    assert_int_equal(count(fx, "big.csv"), 0);
    assert_int_equal(close(fd), 0);
    wait_reports(fx, 1, false);
    assert_string_equal(last(fx, "big.csv")->how, "closed");
    assert_int_equal(last(fx, "big.csv")->size, 24);
    sync_events(fx, "");
    flush_all(fx);
    assert_int_equal(count(fx, "big.csv"), 1);
}

static void test_stop_inside_on_file(void **state)
{
    fx_t *fx = *state;
    put_old(fx, "a.csv", "a");
    put_old(fx, "b.csv", "b");
    put_old(fx, "c.csv", "c");
    fx->stop_in_file = true;
    start(fx);
    wait_reports(fx, 1, false);
    assert_null(fx->w);
    uv_run(&fx->loop, UV_RUN_NOWAIT);
    uv_run(&fx->loop, UV_RUN_NOWAIT);
    assert_int_equal(fx->n, 1); /* nothing after stop */
}

static void test_rescan_inside_on_file_waits_for_the_loop(void **state)
{
    fx_t *fx = *state;
    put_old(fx, "a.csv", "a");
    put_old(fx, "b.csv", "b");
    fx->rescan_in_file = true;
    start(fx);
    wait_reports(fx, 2, false);
    put(fx, "c.csv", "c");
    wait_reports(fx, 3, false);
    sync_events(fx, "");
    flush_all(fx);
    assert_int_equal(fx->n, 3);
    assert_int_equal(count(fx, "a.csv"), 1);
    assert_int_equal(count(fx, "c.csv"), 1);
}

static void test_stop_inside_on_error(void **state)
{
    fx_t *fx = *state;
    char later[128];
    snprintf(later, sizeof later, "%s/later", fx->tmp);
    fx->cfg.path = later;
    fx->stop_in_error = true;
    start(fx);
    wait_errors(fx, 1);
    assert_null(fx->w);
}

static void test_bad_configurations_are_refused(void **state)
{
    fx_t *fx = *state;
    char why[256];
    loom_watch_config_t cfg = fx->cfg;
    cfg.path = "relative/in";
    assert_null(loom_watch_start(&fx->loop, &cfg, why, sizeof why));
    assert_non_null(strstr(why, "absolute"));
    cfg = fx->cfg;
    cfg.glob = "sub/*.csv";
    assert_null(loom_watch_start(&fx->loop, &cfg, why, sizeof why));
    assert_non_null(strstr(why, "glob"));
    put(fx, "../plain-file", "x");
    cfg = fx->cfg;
    cfg.path = at(fx, "../plain-file");
    assert_null(loom_watch_start(&fx->loop, &cfg, why, sizeof why));
    assert_non_null(strstr(why, "not a folder"));
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_closed_file_is_reported_once),
        T(test_slow_writer_is_reported_once_after_close),
        T(test_rename_into_folder_is_reported_as_moved),
        T(test_unmatched_and_in_progress_names_are_ignored),
        T(test_recursive_reports_files_in_new_subfolders),
        T(test_non_recursive_ignores_subfolders),
        T(test_first_scan_reports_existing_files_from_the_loop),
        T(test_fresh_file_found_by_scan_waits_to_settle),
        T(test_size_change_restarts_settle),
        T(test_file_arriving_without_close_counts_once_settled),
        T(test_same_file_not_reported_twice_across_rescans),
        T(test_queue_overflow_rescans),
        T(test_missing_folder_is_reported_then_watched_once_it_exists),
        T(test_periodic_rescan_finds_a_folder_created_later),
        T(test_settle_zero_counts_scanned_files_at_once),
        T(test_settle_zero_still_waits_for_the_close),
        T(test_stop_inside_on_file),
        T(test_rescan_inside_on_file_waits_for_the_loop),
        T(test_stop_inside_on_error),
        T(test_bad_configurations_are_refused),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
