/* Placeholder until the object store lands (code bundles). */
#include "objects.h"

#include "loom/err.h"
#include "sched_internal.h"

#include <stdlib.h>
#include <string.h>

int loom_objects_open(const char *state_dir, loom_objects_t **out, char *why, size_t whylen)
{
    (void)state_dir;
    (void)why;
    (void)whylen;
    *out = NULL;
    return 0;
}

void loom_objects_destroy(loom_objects_t **o)
{
    if (o) *o = NULL;
}

bool loom_objects_hash_valid(const char *hex)
{
    if (!hex || strlen(hex) != 64) return false;
    for (size_t i = 0; i < 64; i++)
        if (!strchr("0123456789abcdef", hex[i])) return false;
    return true;
}

bool loom_objects_has(loom_objects_t *o, const char *hex)
{
    (void)o;
    (void)hex;
    return false;
}

char *loom_objects_path(loom_objects_t *o, const char *hex)
{
    (void)o;
    (void)hex;
    return NULL;
}

int loom_objects_writer_new(loom_objects_t *o, loom_obj_writer_t **out)
{
    (void)o;
    *out = NULL;
    return LOOM_EINTERNAL;
}

int loom_objects_writer_append(loom_obj_writer_t *w, const void *data, size_t len)
{
    (void)w;
    (void)data;
    (void)len;
    return LOOM_EINTERNAL;
}

int loom_objects_writer_commit(loom_obj_writer_t **w, const char *expect_hex, char *why,
                               size_t whylen)
{
    (void)w;
    (void)expect_hex;
    (void)why;
    (void)whylen;
    return LOOM_EINTERNAL;
}

void loom_objects_writer_abort(loom_obj_writer_t **w)
{
    if (w) *w = NULL;
}

int loom_objects_check_bundle(loom_objects_t *o, const char *manifest_hex, char *why, size_t whylen)
{
    (void)o;
    (void)manifest_hex;
    (void)why;
    (void)whylen;
    return LOOM_ENOTFOUND;
}

void objects_on_fetch(loom_sched_t *s, agent_t *a, const loom_msg_t *m)
{
    (void)s;
    (void)a;
    (void)m;
}
