/* `loom gc`: retention. Ended runs beyond the last N of their pipeline
 * and/or older than a maximum age are deleted with their tasks, attempts,
 * logs, artifact records and cache entries; then every stored object that
 * nothing references any more (no artifact record, no model version, no
 * code bundle of a stored version) is deleted. A run that registered a
 * model version is kept, so the model and its lineage stay. Objects younger
 * than an hour are kept too: an upload may be stored but not yet recorded. */
#include "sched_internal.h"
#include "store_int.h"

#include "loom/bundle.h"
#include "loom/err.h"
#include "loom/log.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define GC_OBJECT_GRACE_MS (3600 * 1000ull)

typedef struct {
    loom_map_t keep; /* hash -> its own copy of the hash (the key) */
    uint64_t objects, bytes;
} sweep_t;

static void keep_hash(sweep_t *w, const char *hash)
{
    if (!hash || loom_smap_get(&w->keep, hash)) return;
    char *k = loom_xstrdup(hash); /* the map borrows its keys: the value owns it */
    loom_smap_put(&w->keep, k, k);
}

static void keep_bundle(loom_sched_t *s, sweep_t *w, const char *manifest)
{
    keep_hash(w, manifest);
    char *path = loom_objects_path(s->objects, manifest);
    char *text = NULL;
    size_t len = 0;
    if (path && loom_read_file(path, LOOM_MANIFEST_MAX_BYTES, &text, &len) == 0) {
        loom_manifest_t m;
        char why[128];
        if (loom_manifest_parse(text, len, &m, why, sizeof why) == 0) {
            for (size_t i = 0; i < m.n; i++) keep_hash(w, m.files[i].hash);
            loom_manifest_free(&m);
        }
    }
    free(text);
    free(path);
}

static int collect_kept(loom_sched_t *s, sweep_t *w)
{
    static const char *const q[] = {"SELECT DISTINCT hash FROM artifacts",
                                    "SELECT DISTINCT hash FROM models",
                                    "SELECT DISTINCT bundle FROM pipeline_versions"
                                    " WHERE bundle IS NOT NULL"};
    for (size_t i = 0; i < 3; i++) {
        sqlite3_stmt *st = store_prepare(s->store, q[i]);
        if (!st) return LOOM_EDB;
        while (sqlite3_step(st) == SQLITE_ROW) {
            const char *h = store_col_text(st, 0);
            if (i == 2)
                keep_bundle(s, w, h);
            else
                keep_hash(w, h);
        }
        sqlite3_finalize(st);
    }
    return 0;
}

static void sweep_objects(loom_sched_t *s, sweep_t *w, bool dry_run)
{
    char *root = loom_xasprintf("%s/objects", s->state_dir);
    DIR *d = opendir(root);
    uint64_t now = loom_unix_ms();
    for (struct dirent *e; d && (e = readdir(d));) {
        if (strlen(e->d_name) != 2) continue;
        char *sub = loom_xasprintf("%s/%s", root, e->d_name);
        DIR *d2 = opendir(sub);
        for (struct dirent *f; d2 && (f = readdir(d2));) {
            if (strlen(f->d_name) != 62) continue;
            char hash[65];
            memcpy(hash, e->d_name, 2);
            memcpy(hash + 2, f->d_name, 62);
            hash[64] = '\0';
            if (!loom_objects_hash_valid(hash) || loom_smap_get(&w->keep, hash)) continue;
            char *path = loom_xasprintf("%s/%s", sub, f->d_name);
            struct stat st;
            if (lstat(path, &st) == 0 && S_ISREG(st.st_mode) &&
                (uint64_t)st.st_mtime * 1000 + GC_OBJECT_GRACE_MS < now &&
                (dry_run || unlink(path) == 0)) {
                w->objects++;
                w->bytes += (uint64_t)st.st_size;
            }
            free(path);
        }
        if (d2) closedir(d2);
        free(sub);
    }
    if (d) closedir(d);
    free(root);
}

static void remove_tree(const char *path)
{
    DIR *d = opendir(path);
    for (struct dirent *e; d && (e = readdir(d));) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        char *p = loom_xasprintf("%s/%s", path, e->d_name);
        unlink(p);
        free(p);
    }
    if (d) closedir(d);
    rmdir(path);
}

static uint64_t dir_bytes(const char *path)
{
    uint64_t n = 0;
    DIR *d = opendir(path);
    for (struct dirent *e; d && (e = readdir(d));) {
        char *p = loom_xasprintf("%s/%s", path, e->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISREG(st.st_mode)) n += (uint64_t)st.st_size;
        free(p);
    }
    if (d) closedir(d);
    return n;
}

static int exec_run(loom_sched_t *s, const char *q, uint64_t run_id)
{
    sqlite3_stmt *st = store_prepare(s->store, q);
    if (!st) return LOOM_EDB;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)run_id);
    int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : LOOM_EDB;
    sqlite3_finalize(st);
    return rc;
}

static int delete_run(loom_sched_t *s, uint64_t run_id)
{
    static const char *const q[] = {
        "DELETE FROM attempt_inputs WHERE attempt_id IN (SELECT id FROM attempts WHERE run_id = "
        "?1)",
        "DELETE FROM artifacts WHERE run_id = ?1",
        "DELETE FROM task_cache WHERE run_id = ?1",
        "DELETE FROM attempts WHERE run_id = ?1",
        "DELETE FROM tasks WHERE run_id = ?1",
        "DELETE FROM runs WHERE id = ?1",
    };
    int rc = loom_store_begin(s->store);
    for (size_t i = 0; rc == 0 && i < sizeof q / sizeof q[0]; i++) rc = exec_run(s, q[i], run_id);
    return rc;
}

int loom_sched_gc(loom_sched_t *s, const loom_gc_opts_t *o, json_t **result)
{
    if (!o->keep_last && !o->max_age_ms) return LOOM_EINVAL;
    uint64_t now = loom_unix_ms();
    /* Ended runs to delete: beyond the last keep_last of their pipeline (if
     * given) and older than max_age (if given); never one that made a
     * model version. */
    sqlite3_stmt *st = store_prepare(
        s->store, "SELECT id FROM (SELECT r.id, r.created_ms, r.state,"
                  " row_number() OVER (PARTITION BY r.pipeline_id ORDER BY r.id DESC) AS n"
                  " FROM runs r) WHERE state NOT IN ('queued', 'running')"
                  " AND (?1 = 0 OR n > ?1) AND (?2 = 0 OR created_ms < ?3)"
                  " AND id NOT IN (SELECT run_id FROM models) ORDER BY id");
    if (!st) return LOOM_EDB;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)o->keep_last);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)o->max_age_ms);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)(now > o->max_age_ms ? now - o->max_age_ms : 0));
    uint64_t *ids = NULL;
    size_t n = 0, cap = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        if (n == cap) ids = loom_xrealloc(ids, (cap = cap ? cap * 2 : 64) * sizeof *ids);
        ids[n++] = (uint64_t)sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    uint64_t log_bytes = 0;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (loom_map_get(&s->runs, ids[i])) continue; /* in flight after all */
        char *logs = loom_xasprintf("%s/logs/%llu", s->state_dir, (unsigned long long)ids[i]);
        log_bytes += dir_bytes(logs);
        if (!o->dry_run) rc = delete_run(s, ids[i]);
        if (rc == 0 && !o->dry_run) remove_tree(logs);
        free(logs);
    }
    if (rc == 0) rc = loom_sched_commit(s);
    sweep_t w = {0};
    if (rc == 0) rc = collect_kept(s, &w);
    if (rc == 0) sweep_objects(s, &w, o->dry_run);
    void *v;
    for (size_t i = 0; loom_map_next(&w.keep, &i, &v);) free(v);
    loom_map_free(&w.keep);
    if (rc == 0) {
        LOG_INFO("gc runs=%zu objects=%llu bytes=%llu dry_run=%d", n, (unsigned long long)w.objects,
                 (unsigned long long)(w.bytes + log_bytes), o->dry_run);
        *result =
            json_pack("{s:b,s:I,s:I,s:I,s:I,s:I}", "dry_run", o->dry_run, "runs_deleted",
                      (json_int_t)n, "objects_deleted", (json_int_t)w.objects, "object_bytes_freed",
                      (json_int_t)w.bytes, "log_bytes_freed", (json_int_t)log_bytes, "bytes_freed",
                      (json_int_t)(w.bytes + log_bytes));
    }
    free(ids);
    return rc;
}
