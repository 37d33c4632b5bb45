/* An attempt's working folder, before and after its process: the steps of
 * preparing it (scan the cache, fetch what is missing, unpack, write the
 * dispatch's files) and reading its metrics file afterwards. The steps run
 * on the thread pool; this file moves them along on the loop. */
#include "prepare.h"

#include "fetch.h"
#include "workdir.h"

#include "loom/err.h"
#include "loom/log.h"

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
    char **missing;
    size_t n_missing;
    size_t waiting; /* fetches not yet answered */
    bool busy;      /* a job is out */
    int rc;         /* the job's result */
    char why[512];  /* the job's (or a fetch's) failure */
    char *error;
};

bool prep_needed(const Loom__Dispatch *d)
{
    return (d->bundle && *d->bundle) || d->n_files > 0;
}

static void prep_free(prep_t *p)
{
    for (size_t i = 0; i < p->n_missing; i++) free(p->missing[i]);
    free(p->missing);
    loom_manifest_free(&p->m);
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
    p->rc = workdir_populate(p->dir, p->a->cache_dir, p->have_manifest ? &p->m : NULL, d->files,
                             d->n_files, p->why, sizeof p->why);
}

static void on_unpack_done(void *ud)
{
    prep_t *p = ud;
    p->busy = false;
    if (drop_if_detached(p)) return;
    if (p->rc == 0)
        finish(p, NULL);
    else if (strncmp(p->why, "files: ", 7) == 0)
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

/* The file a missing object is for, to name it in errors. */
static const char *path_of(const prep_t *p, const char *hash)
{
    for (size_t i = 0; p->have_manifest && i < p->m.n; i++)
        if (strcmp(p->m.files[i].hash, hash) == 0) return p->m.files[i].path;
    return "manifest";
}

static void on_fetched(void *ud, const char *hash, const char *error)
{
    prep_t *p = ud;
    p->waiting--;
    if (error && !p->error) p->error = loom_xasprintf("%s: %s", path_of(p, hash), error);
    if (drop_if_detached(p) || p->waiting > 0) return;
    if (p->error)
        fail(p, "bundle: ", p->error);
    else if (!p->have_manifest)
        scan(p);
    else
        unpack(p);
}

static void fetch_missing(prep_t *p)
{
    p->waiting = p->n_missing;
    LOG_INFO("fetching bundle attempt=%llu objects=%zu", (unsigned long long)p->t->id,
             p->n_missing);
    for (size_t i = 0; i < p->n_missing; i++)
        fetcher_want(p->a->fetcher, p->missing[i], on_fetched, p);
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
    if (p->n_missing)
        fetch_missing(p);
    else
        unpack(p);
}

static void scan(prep_t *p)
{
    p->busy = true;
    agent_queue_job(p->a, on_scan_work, on_scan_done, p);
}

/* --- the attempt's side ---------------------------------------------------- */

void prep_start(loom_agent_t *a, attempt_t *t, loom_msg_t *msg)
{
    prep_t *p = loom_xcalloc(1, sizeof *p);
    p->a = a;
    p->t = t;
    p->msg = msg;
    p->dir = loom_xstrdup(t->dir);
    t->prep = p;
    const Loom__Dispatch *d = msg->dispatch;
    if (d->bundle && *d->bundle && !loom_hash_hex_valid(d->bundle)) {
        /* Not from the thread pool: finish must not run inside this call's
         * caller's bookkeeping, so report through the same job path. */
        p->rc = LOOM_EINVAL;
        snprintf(p->why, sizeof p->why, "\"%.80s\" is not a manifest hash", d->bundle);
        p->busy = true;
        agent_queue_job(a, NULL, on_unpack_done, p);
        return;
    }
    if (d->bundle && *d->bundle)
        scan(p);
    else
        unpack(p);
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
