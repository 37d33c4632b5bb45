/* An attempt's working folder, before and after its process: the steps of
 * preparing it (read the bundle's manifest, fetch what the cache lacks of
 * the bundle and of the inputs, unpack the bundle, place the inputs, write
 * the dispatch's files) and reading its metrics file afterwards. The steps
 * run on the thread pool; this file moves them along on the loop. Every
 * object the attempt will copy out of the cache is pinned there until it
 * has been, so that the cache's bound never evicts it in between. */
#include "prepare.h"

#include "cache.h"
#include "fetch.h"
#include "workdir.h"

#include "loom/err.h"
#include "loom/log.h"
#include "loom/map.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct prep {
    loom_agent_t *a;
    attempt_t *t;    /* NULL once detached */
    loom_msg_t *msg; /* the Dispatch */
    char *dir;
    loom_manifest_t m;
    bool have_manifest;
    bool fetched_manifest; /* asked loomd for it once already */
    char **missing;        /* distinct objects to fetch */
    size_t n_missing;
    char **pins; /* objects pinned in the cache (one entry per pin) */
    size_t n_pins;
    size_t waiting; /* fetches not yet answered */
    bool busy;      /* a job is out */
    int rc;         /* the job's result */
    char why[512];  /* the job's (or a fetch's) failure */
    char *error;
};

bool prep_needed(const Loom__Dispatch *d)
{
    for (size_t i = 0; i < d->n_secrets; i++)
        if (d->secrets[i]->file && *d->secrets[i]->file) return true;
    return (d->bundle && *d->bundle) || d->n_files > 0 || d->n_inputs > 0;
}

static void free_missing(prep_t *p)
{
    for (size_t i = 0; i < p->n_missing; i++) free(p->missing[i]);
    free(p->missing);
    p->missing = NULL;
    p->n_missing = 0;
}

static void prep_free(prep_t *p)
{
    free_missing(p);
    for (size_t i = 0; i < p->n_pins; i++) {
        cache_unpin(p->a->cache, p->pins[i]);
        free(p->pins[i]);
    }
    free(p->pins);
    loom_manifest_free(&p->m);
    agent_wipe_secrets(p->msg);
    loom_codec_free(p->msg);
    free(p->dir);
    free(p->error);
    free(p);
}

/* Frees a detached preparation once nothing of it is out. */
static bool drop_if_detached(prep_t *p)
{
    if (p->t) return false;
    if (!p->busy && p->waiting == 0) prep_free(p);
    return true;
}

static void finish(prep_t *p, const char *error)
{
    attempt_t *t = p->t;
    p->t = NULL;
    t->prep = NULL;
    agent_prepared(p->a, t, p->msg->dispatch, error);
    prep_free(p);
}

static void fail(prep_t *p, const char *prefix, const char *detail)
{
    char *error = loom_xasprintf("%s%s", prefix, detail);
    finish(p, error);
    free(error);
}

/* --- unpack ---------------------------------------------------------------- */

static void on_unpack_work(void *ud)
{
    prep_t *p = ud;
    const Loom__Dispatch *d = p->msg->dispatch;
    p->rc = workdir_populate(p->dir, p->a->cache_dir, p->have_manifest ? &p->m : NULL, d->inputs,
                             d->n_inputs, d->files, d->n_files, p->why, sizeof p->why);
    /* Last, so that nothing unpacked after them can replace them. */
    if (p->rc == 0)
        p->rc = workdir_write_secrets(p->dir, d->secrets, d->n_secrets, p->why, sizeof p->why);
    /* What loom wrote for the task is the task's (--run-as). */
    if (p->rc == 0) p->rc = agent_task_dir_give(p->a, p->dir, true, p->why, sizeof p->why);
}

static void on_unpack_done(void *ud)
{
    prep_t *p = ud;
    p->busy = false;
    if (drop_if_detached(p)) return;
    if (p->rc == 0)
        finish(p, NULL);
    else if (strncmp(p->why, "files: ", 7) == 0 || strncmp(p->why, "input ", 6) == 0)
        fail(p, "", p->why);
    else
        fail(p, "bundle: ", p->why);
}

static void unpack(prep_t *p)
{
    p->busy = true;
    agent_queue_job(p->a, on_unpack_work, on_unpack_done, p);
}

/* --- fetch ----------------------------------------------------------------- */

static void scan(prep_t *p);

/* Says which file a failed download was for. */
static char *fetch_error(const prep_t *p, const char *hash, const char *error, bool refused)
{
    const Loom__Dispatch *d = p->msg->dispatch;
    for (size_t i = 0; i < d->n_inputs; i++) {
        if (strcmp(d->inputs[i]->hash, hash) != 0) continue;
        if (refused)
            return loom_xasprintf("input \"%s\": object %.12s… not found on loomd: %s",
                                  d->inputs[i]->path, hash, error);
        return loom_xasprintf("input \"%s\": object %.12s…: %s", d->inputs[i]->path, hash, error);
    }
    const char *path = "manifest";
    for (size_t i = 0; p->have_manifest && i < p->m.n; i++)
        if (strcmp(p->m.files[i].hash, hash) == 0) path = p->m.files[i].path;
    return loom_xasprintf("bundle: %s: %s%s", path, refused ? "loomd: " : "", error);
}

static void on_fetched(void *ud, const char *hash, const char *error, bool refused)
{
    prep_t *p = ud;
    p->waiting--;
    if (error && !p->error && p->t) p->error = fetch_error(p, hash, error, refused);
    if (drop_if_detached(p) || p->waiting > 0) return;
    const char *bundle = p->msg->dispatch->bundle;
    if (p->error)
        fail(p, "", p->error);
    else if (bundle && *bundle && !p->have_manifest)
        scan(p); /* the manifest came: now its files */
    else
        unpack(p);
}

static void fetch_missing(prep_t *p)
{
    p->waiting = p->n_missing;
    LOG_INFO("fetching objects attempt=%llu objects=%zu", (unsigned long long)p->t->id,
             p->n_missing);
    for (size_t i = 0; i < p->n_missing; i++)
        fetcher_want(p->a->fetcher, p->missing[i], on_fetched, p);
}

static void fetch_or_unpack(prep_t *p)
{
    if (p->n_missing)
        fetch_missing(p);
    else
        unpack(p);
}

/* --- pins and what is missing ---------------------------------------------- */

static void pin(prep_t *p, const char *hash)
{
    cache_pin(p->a->cache, hash);
    p->pins = loom_xrealloc(p->pins, (p->n_pins + 1) * sizeof *p->pins);
    p->pins[p->n_pins++] = loom_xstrdup(hash);
}

static bool listed(char *const *list, size_t n, const char *hash)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i], hash) == 0) return true;
    return false;
}

static void want(prep_t *p, const char *hash)
{
    if (listed(p->missing, p->n_missing, hash)) return;
    p->missing = loom_xrealloc(p->missing, (p->n_missing + 1) * sizeof *p->missing);
    p->missing[p->n_missing++] = loom_xstrdup(hash);
}

/* Pins the bundle's objects and lists the ones to fetch. The cache's index
 * says what is cached (an object evicted since the scan looked is not);
 * one the scan found gone although listed was removed behind our back. */
static void want_bundle(prep_t *p, char **scan_missing, size_t n_scan_missing)
{
    loom_map_t seen = {0};
    for (size_t i = 0; i < p->m.n; i++) {
        const char *h = p->m.files[i].hash;
        if (loom_smap_get(&seen, h)) continue;
        loom_smap_put(&seen, h, (void *)1);
        pin(p, h);
        bool gone = listed(scan_missing, n_scan_missing, h);
        if (gone) cache_dropped(p->a->cache, h);
        if (gone || !cache_has(p->a->cache, h)) want(p, h);
    }
    loom_map_free(&seen);
}

static void want_inputs(prep_t *p)
{
    const Loom__Dispatch *d = p->msg->dispatch;
    for (size_t i = 0; i < d->n_inputs; i++) {
        pin(p, d->inputs[i]->hash);
        if (!cache_has(p->a->cache, d->inputs[i]->hash)) want(p, d->inputs[i]->hash);
    }
}

/* --- scan ------------------------------------------------------------------ */

static void on_scan_work(void *ud)
{
    prep_t *p = ud;
    p->rc = workdir_scan(p->a->cache_dir, p->msg->dispatch->bundle, &p->m, &p->missing,
                         &p->n_missing, p->why, sizeof p->why);
}

static void on_scan_done(void *ud)
{
    prep_t *p = ud;
    p->busy = false;
    if (drop_if_detached(p)) return;
    if (p->rc == LOOM_ENOTFOUND && !p->fetched_manifest) {
        p->fetched_manifest = true;
        p->waiting = 1;
        cache_dropped(p->a->cache, p->msg->dispatch->bundle); /* if listed, it is not there */
        fetcher_want(p->a->fetcher, p->msg->dispatch->bundle, on_fetched, p);
        return;
    }
    if (p->rc == LOOM_ENOTFOUND) {
        fail(p, "bundle: manifest vanished from the cache: ", p->msg->dispatch->bundle);
        return;
    }
    if (p->rc) {
        fail(p, "bundle: ", p->why);
        return;
    }
    p->have_manifest = true;
    char **scan_missing = p->missing;
    size_t n_scan_missing = p->n_missing;
    p->missing = NULL;
    p->n_missing = 0;
    want_bundle(p, scan_missing, n_scan_missing);
    for (size_t i = 0; i < n_scan_missing; i++) free(scan_missing[i]);
    free(scan_missing);
    want_inputs(p);
    fetch_or_unpack(p);
}

static void scan(prep_t *p)
{
    free_missing(p);
    p->busy = true;
    agent_queue_job(p->a, on_scan_work, on_scan_done, p);
}

/* --- the attempt's side ---------------------------------------------------- */

/* Why the dispatch's inputs cannot be placed, before anything is fetched:
 * two at one path (the codec has checked each path and hash). */
static bool inputs_bad(const Loom__Dispatch *d, char *why, size_t whylen)
{
    loom_map_t seen = {0};
    bool bad = false;
    for (size_t i = 0; i < d->n_inputs && !bad; i++) {
        if (loom_smap_get(&seen, d->inputs[i]->path)) {
            snprintf(why, whylen, "input \"%s\" is listed twice", d->inputs[i]->path);
            bad = true;
        }
        loom_smap_put(&seen, d->inputs[i]->path, (void *)1);
    }
    loom_map_free(&seen);
    return bad;
}

void prep_start(loom_agent_t *a, attempt_t *t, loom_msg_t *msg)
{
    prep_t *p = loom_xcalloc(1, sizeof *p);
    p->a = a;
    p->t = t;
    p->msg = msg;
    p->dir = loom_xstrdup(t->dir);
    t->prep = p;
    const Loom__Dispatch *d = msg->dispatch;
    bool bad_bundle = d->bundle && *d->bundle && !loom_hash_hex_valid(d->bundle);
    if (bad_bundle) snprintf(p->why, sizeof p->why, "\"%.80s\" is not a manifest hash", d->bundle);
    if (bad_bundle || inputs_bad(d, p->why, sizeof p->why)) {
        /* Not from the thread pool: finish must not run inside this call's
         * caller's bookkeeping, so report through the same job path. */
        p->rc = LOOM_EINVAL;
        p->busy = true;
        agent_queue_job(a, NULL, on_unpack_done, p);
        return;
    }
    if (d->bundle && *d->bundle) {
        pin(p, d->bundle);
        scan(p);
        return;
    }
    want_inputs(p);
    fetch_or_unpack(p);
}

void prep_detach(attempt_t *t)
{
    prep_t *p = t->prep;
    if (!p) return;
    t->prep = NULL;
    p->t = NULL;
    drop_if_detached(p);
}

/* --- metrics --------------------------------------------------------------- */

typedef struct {
    attempt_t *t;
    char *dir, *rel;
    char *json, *error;
    void (*done)(attempt_t *t, const char *json, const char *error);
} metrics_job_t;

static void on_metrics_work(void *ud)
{
    metrics_job_t *j = ud;
    workdir_read_metrics(j->dir, j->rel, &j->json, &j->error);
}

static void on_metrics_done(void *ud)
{
    metrics_job_t *j = ud;
    j->done(j->t, j->json, j->error);
    free(j->dir);
    free(j->rel);
    free(j->json);
    free(j->error);
    free(j);
}

void prep_read_metrics(loom_agent_t *a, attempt_t *t,
                       void (*done)(attempt_t *t, const char *json, const char *error))
{
    metrics_job_t *j = loom_xcalloc(1, sizeof *j);
    j->t = t;
    j->dir = loom_xstrdup(t->dir);
    j->rel = loom_xstrdup(t->metrics);
    j->done = done;
    agent_queue_job(a, on_metrics_work, on_metrics_done, j);
}
