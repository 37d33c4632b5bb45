/* Attempt folders on the agent: once loomd has an attempt's result its
 * folder is emptied and set aside (work_dir/spare/) to be renamed into a
 * later attempt's place: a fresh, empty folder each time, without the
 * mkdir/rmdir pair per attempt that ext4 makes expensive at thousands of
 * attempts a second. */
#include "agent_int.h"

#include "loom/util.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct {
    loom_agent_t *a;
    char *dir;
    bool emptied;
} cleanup_t;

static void on_cleanup_work(void *ud)
{
    cleanup_t *c = ud;
    c->emptied = loom_empty_tree(c->dir) == 0;
}

static void on_cleanup_done(void *ud)
{
    cleanup_t *c = ud;
    loom_agent_t *a = c->a;
    size_t cap = sizeof a->spare_dirs / sizeof a->spare_dirs[0];
    char *spare = NULL;
    if (c->emptied && a->n_spare_dirs < cap && !a->stopping) {
        /* Out of attempts/, which lists only attempts that still matter. */
        char *folder = loom_xasprintf("%s/spare", a->work_dir);
        if (mkdir(folder, 0700) == 0 || errno == EEXIST)
            spare = loom_xasprintf("%s/%llu", folder, (unsigned long long)++a->spare_seq);
        if (spare && rename(c->dir, spare) != 0) {
            free(spare);
            spare = NULL;
        }
        free(folder);
    }
    if (spare)
        a->spare_dirs[a->n_spare_dirs++] = spare;
    else
        rmdir(c->dir);
    free(c->dir);
    free(c);
}

/* Whether dir has nothing in it: one getdents, cheaper than a trip to the
 * thread pool and back for the many tasks that leave nothing behind. */
static bool folder_empty(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return false;
    bool empty = true;
    struct dirent *e;
    while (empty && (e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) empty = false;
    closedir(d);
    return empty;
}

void agent_folder_release(loom_agent_t *a, char *dir)
{
    cleanup_t *c = loom_xcalloc(1, sizeof *c);
    c->a = a;
    c->dir = dir;
    if (folder_empty(dir)) {
        c->emptied = true;
        on_cleanup_done(c);
        return;
    }
    /* Removing a tree can be slow: the thread pool does it. */
    agent_queue_job(a, on_cleanup_work, on_cleanup_done, c);
}

void agent_folder_take(loom_agent_t *a, const char *dir)
{
    if (!a->n_spare_dirs) return;
    char *spare = a->spare_dirs[--a->n_spare_dirs];
    if (rename(spare, dir) != 0) rmdir(spare);
    free(spare);
}

void agent_folders_free(loom_agent_t *a)
{
    while (a->n_spare_dirs) {
        char *spare = a->spare_dirs[--a->n_spare_dirs];
        rmdir(spare);
        free(spare);
    }
}
