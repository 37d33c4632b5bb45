/* The scheduler's side of secrets: the key file opened with the state, the
 * sealed rows behind the API, and a task's secrets decrypted into its
 * Dispatch (and nowhere else) at dispatch time. */
#include "sched_internal.h"
#include "secrets.h"
#include "triggers.h"

#include "loom/err.h"
#include "loom/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int sched_secrets_open(loom_sched_t *s, char *why, size_t whylen)
{
    char *dflt = loom_xasprintf("%s/secrets.key", s->state_dir);
    const char *path = s->cfg.secrets_key ? s->cfg.secrets_key : dflt;
    int rc = loom_secrets_open(path, &s->secrets, why, whylen);
    char *kind = NULL, *name = NULL;
    /* A key that cannot open the rows already stored is the wrong key:
     * better to refuse now than to fail every task that needs a secret. */
    if (rc == 0 && loom_store_secret_first(s->store, &kind, &name) == 0) {
        uint8_t *value = NULL;
        size_t len = 0;
        rc = loom_sched_secret_get(s, kind, name, &value, &len);
        loom_secret_free(value, len);
        if (rc) {
            snprintf(why, whylen,
                     "the secrets key %s does not decrypt the secrets stored in %s/loom.db "
                     "(secret \"%s\"): is it the key they were stored with?",
                     path, s->state_dir, name);
            rc = LOOM_EINVAL;
        }
    }
    free(kind);
    free(name);
    free(dflt);
    return rc;
}

int loom_sched_secret_set(loom_sched_t *s, const char *kind, const char *name, const uint8_t *value,
                          size_t len)
{
    if (!s->secrets) return LOOM_ESTATE;
    uint8_t nonce[LOOM_SECRETS_NONCE_BYTES], *ct = NULL;
    size_t ctlen = 0;
    loom_secrets_seal(s->secrets, kind, name, value, len, nonce, &ct, &ctlen);
    int rc =
        loom_store_secret_put(s->store, kind, name, nonce, sizeof nonce, ct, ctlen, loom_unix_ms());
    free(ct);
    if (rc == 0) rc = loom_sched_commit(s);
    return rc;
}

int loom_sched_secret_get(loom_sched_t *s, const char *kind, const char *name, uint8_t **value,
                          size_t *len)
{
    *value = NULL;
    *len = 0;
    if (!s->secrets) return LOOM_ESTATE;
    uint8_t *nonce = NULL, *ct = NULL;
    size_t nlen = 0, ctlen = 0;
    int rc = loom_store_secret_get(s->store, kind, name, &nonce, &nlen, &ct, &ctlen);
    if (rc == 0)
        rc = loom_secrets_unseal(s->secrets, kind, name, nonce, nlen, ct, ctlen, value, len);
    free(nonce);
    free(ct);
    return rc;
}

int loom_sched_secret_delete(loom_sched_t *s, const char *kind, const char *name)
{
    int rc = loom_store_secret_delete(s->store, kind, name);
    if (rc == 0) rc = loom_sched_commit(s);
    return rc;
}

/* "used_by": the latest versions' tasks that list the secret. */
static json_t *used_by(loom_sched_t *s, const char *name)
{
    json_t *out = json_array();
    void *v;
    for (size_t i = 0; loom_map_next(&s->trig_pipes, &i, &v);) {
        const trig_pipe_t *tp = v;
        for (size_t t = 0; tp->dag && t < tp->dag->n_tasks; t++) {
            const loom_dag_task_t *dt = &tp->dag->tasks[t];
            for (size_t k = 0; k < dt->n_secrets; k++)
                if (strcmp(dt->secrets[k].name, name) == 0) {
                    json_array_append_new(out, json_sprintf("%s/%s", tp->name, dt->name));
                    break;
                }
        }
    }
    return out;
}

int loom_sched_secrets_json(loom_sched_t *s, const char *kind, json_t **out)
{
    int rc = loom_store_json_secrets(s->store, kind, out);
    if (rc || strcmp(kind, "task") != 0) return rc;
    size_t i;
    json_t *row;
    json_array_foreach(*out, i, row)
    {
        const char *name = json_string_value(json_object_get(row, "name"));
        json_object_set_new(row, "used_by", used_by(s, name));
    }
    return 0;
}

void sched_secrets_free(Loom__Secret **list, size_t n)
{
    for (size_t i = 0; list && i < n; i++) {
        loom_secret_free(list[i]->value.data, list[i]->value.len);
        free(list[i]);
    }
    free(list);
}

int sched_secrets_resolve(loom_sched_t *s, const loom_dag_task_t *dt, Loom__Secret ***out,
                          size_t *n_out, char *why, size_t whylen)
{
    *out = NULL;
    *n_out = 0;
    if (!dt->n_secrets) return 0;
    Loom__Secret **list = loom_xcalloc(dt->n_secrets, sizeof *list);
    size_t n = 0;
    for (size_t i = 0; i < dt->n_secrets; i++) {
        const loom_dag_secret_t *e = &dt->secrets[i];
        uint8_t *value = NULL;
        size_t len = 0;
        int rc = loom_sched_secret_get(s, "task", e->name, &value, &len);
        if (rc) {
            if (rc == LOOM_ENOTFOUND)
                snprintf(why, whylen, "secret %s does not exist; `loom secrets set %s`", e->name,
                         e->name);
            else
                snprintf(why, whylen, "secret %s cannot be read: %s", e->name,
                         rc == LOOM_EPARSE ? "it does not decrypt with loomd's secrets key"
                                           : loom_strerror(rc));
            sched_secrets_free(list, n);
            return rc;
        }
        Loom__Secret *sec = loom_xmalloc(sizeof *sec);
        loom__secret__init(sec);
        sec->name = e->name;
        sec->env = e->env ? e->env : "";
        sec->file = e->file ? e->file : "";
        sec->value.data = value;
        sec->value.len = len;
        list[n++] = sec;
    }
    *out = list;
    *n_out = n;
    return 0;
}
