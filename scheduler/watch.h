/* A folder watcher for data-arrival triggers (`data:` in docs/dag-format.md):
 * reports each file that has finished arriving in one folder (optionally its
 * sub-folders), once per version, from raw inotify on the loop plus a settle
 * rule and a periodic rescan for what inotify cannot see.
 *
 * When a file counts, and the `how` passed to on_file:
 *   "closed"  a writer closed it after writing (IN_CLOSE_WRITE): at once.
 *   "moved"   it was renamed into the folder (IN_MOVED_TO): at once.
 *   "settled" it was seen to change (created, written, or found by a scan
 *             while still fresh) and then stayed the same size and mtime for
 *             settle_ms on the monotonic clock, or its mtime became settle_ms
 *             older than the wall clock.
 *   "scanned" a scan (the first one at start, a periodic one, a rescan after
 *             an inotify overflow or after the folder came back) found it
 *             already complete: its mtime is settle_ms older than the wall
 *             clock, or settle_ms is 0.
 * The first scan reports every matching file that already exists ("scanned"
 * or, when fresh, "settled" later): the caller decides which are new from its
 * own persistent record of (path, size, mtime).
 *
 * Names: a file counts when its name (not its path) matches the glob
 * (fnmatch, no flags) and is not in progress by a common convention: names
 * starting with '.' and names ending in ".tmp", ".part", ".partial" or
 * ".crdownload" are never reported, so "write a dot-file or .part, then
 * rename" reports once, as "moved". Sub-folders whose name starts with '.'
 * are not entered either (staging areas). Only regular files are reported;
 * symbolic links are neither reported nor followed (the configured folder
 * itself may be a link).
 *
 * Once per version: a file is reported once per (path, size, mtime_ns) while
 * the watcher lives. A file rewritten later with a different size or mtime is
 * reported again -- and so is a file whose mtime alone changes after the
 * report (`touch`, or a tool that sets times after closing, such as tar). A
 * file deleted or renamed away is forgotten (at the event, or at the next
 * rescan), so memory stays bounded by the files that exist; if the same
 * version comes back, it is reported again. The caller's persistent record
 * removes such duplicates.
 *
 * settle_ms 0 never reports a file inotify saw being written before its
 * close: it counts at IN_CLOSE_WRITE or IN_MOVED_TO, and a file found by a
 * scan counts at once. (A file that changes with no close, such as a hard
 * link, counts at a rescan once it has not changed for 30 s.) With settle_ms > 0, a writer that
 * pauses longer than settle_ms with the file open gets a "settled" report for the partial file and
 * another ("closed") when it closes: settle_ms must exceed the longest
 * pause.
 *
 * A missing folder is not an error at start: on_error says so (from the
 * loop) and every rescan tries again, so a folder mounted later is picked up
 * by the next periodic rescan (with rescan_ms 0, only when the caller calls
 * loom_watch_rescan). A folder that goes away later (deleted, renamed,
 * unmounted) is reported through on_error the same way. on_error is called
 * when a problem starts or changes, not on every rescan while it lasts.
 *
 * All callbacks run on the loop thread, never from inside loom_watch_start.
 * loom_watch_stop may be called from inside on_file or on_error; a call to
 * loom_watch_rescan or loom_watch_tick from inside them is deferred to the
 * loop. Linux only (inotify). */
#ifndef LOOM_WATCH_H
#define LOOM_WATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "loom/util.h"

/* rescan_ms value that picks the default interval, 30 s. */
#define LOOM_WATCH_RESCAN_DEFAULT UINT64_MAX
#define LOOM_WATCH_RESCAN_DEFAULT_MS 30000

typedef struct {
    const char *path; /* absolute folder; copied */
    const char *glob; /* file-name pattern (no '/'); NULL or "": "*"; copied */
    bool recursive;   /* sub-folders too, including ones created later */
    uint64_t settle_ms;
    uint64_t rescan_ms; /* 0: no periodic rescan; LOOM_WATCH_RESCAN_DEFAULT: 30 s */
    loom_clock_t mono;  /* monotonic ms; zero value: loom_clock_real() */
    loom_clock_t wall;  /* unix ms, compared with file mtimes; zero value: loom_unix_ms */
    /* path is absolute and borrowed for the call; how is "closed", "moved",
     * "settled" or "scanned" (see above). */
    void (*on_file)(void *ud, const char *path, uint64_t size, int64_t mtime_ns, const char *how);
    void (*on_error)(void *ud, const char *why); /* may be NULL */
    void *ud;
} loom_watch_config_t;

typedef struct loom_watch loom_watch_t;

/* Adds the inotify watches and does the first scan; its files are reported
 * from the loop, not from inside this call. Returns NULL with why set when
 * the configuration is invalid (relative path, '/' in the glob, no on_file)
 * or the folder cannot be watched (inotify unavailable, permission denied,
 * not a folder). A missing folder is not an error (see above). */
loom_watch_t *loom_watch_start(uv_loop_t *loop, const loom_watch_config_t *cfg, char *why,
                               size_t whylen);
/* Walks the folder now (what the periodic rescan does), re-adding watches
 * that are missing, then reports what counts as of now (loom_watch_tick).
 * It runs on the loop thread in one go: one readdir pass and one fstatat per
 * matching file, about 180 ms for 100,000 files (warm cache, local ext4);
 * names the glob rejects cost no stat. */
void loom_watch_rescan(loom_watch_t *w);
/* Re-stats the files waiting to settle and reports those that have settled
 * as of the clocks' now. The settle timer calls it; tests call it directly
 * after moving an injected clock. */
void loom_watch_tick(loom_watch_t *w);
/* Stops reporting at once and frees the watcher once libuv has released its
 * handles (so run the loop before closing it). Accepts NULL. Safe to call
 * from on_file and on_error. */
void loom_watch_stop(loom_watch_t *w);

#endif
