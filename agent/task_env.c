/* A task's own environment entries, from its Dispatch: the DAG's `env`,
 * the paths of its files and secrets, loom's LOOM_* variables and, on a
 * GPU host, the devices it may see. agent_task_env (task_user.c) puts the
 * allowlisted base underneath. */
#include "agent_int.h"

#include "loom/util.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool env_name_valid(const char *name)
{
    return name && *name && !strchr(name, '=');
}

/* The GPUs the task may see, on an agent that has any: exactly the
 * dispatched indexes ("" for none). CUDA numbers devices fastest first
 * unless told otherwise; PCI order makes its numbers NVML's and
 * nvidia-smi's, which are the ones loomd assigns. */
static size_t gpu_env(const loom_agent_t *a, const Loom__Dispatch *d, char **env)
{
    if (a->gpus.n == 0) return 0;  /* a GPU-less host's environment is left alone */
    if (!a->exec->local) return 0; /* Slurm sets them for the GPUs it allocates */
    loom_buf_t ids = {0};
    loom_buf_puts(&ids, "");
    for (size_t i = 0; i < d->n_gpus; i++) loom_buf_printf(&ids, "%s%u", i ? "," : "", d->gpus[i]);
    env[0] = loom_xasprintf("CUDA_VISIBLE_DEVICES=%s", ids.data);
    env[1] = loom_xasprintf("NVIDIA_VISIBLE_DEVICES=%s", ids.data);
    env[2] = loom_xstrdup("CUDA_DEVICE_ORDER=PCI_BUS_ID");
    loom_buf_free(&ids);
    return 3;
}

/* "NAME=value" strings for the task: the dispatch's, the paths of its files
 * that name a variable, then ours (which win). */
char **agent_dispatch_env(const loom_agent_t *a, const Loom__Dispatch *d, const char *dir,
                          char *bad, size_t badlen)
{
    char **env = loom_xcalloc(d->n_env + d->n_files + d->n_secrets + 10, sizeof *env);
    size_t k = 0;
    for (size_t i = 0; i < d->n_env + d->n_files; i++) {
        const Loom__File *file = i >= d->n_env ? d->files[i - d->n_env] : NULL;
        const char *name = file ? file->env : d->env[i]->name;
        if (file && (!name || !*name)) continue;
        if (!env_name_valid(name)) {
            snprintf(bad, badlen, "environment variable name \"%s\" is invalid", name);
            for (size_t j = 0; j < k; j++) free(env[j]);
            free(env);
            return NULL;
        }
        env[k++] = file ? loom_xasprintf("%s=%s/%s", name, dir, file->path)
                        : loom_xasprintf("%s=%s", name, d->env[i]->value);
    }
    for (size_t i = 0; i < d->n_secrets; i++) {
        const Loom__Secret *sec = d->secrets[i];
        if (!sec->env || !*sec->env) continue;
        if (sec->file && *sec->file) {
            env[k++] = loom_xasprintf("%s=%s/%s", sec->env, dir, sec->file);
        } else {
            /* The value as text: a NUL in it would end the variable. */
            loom_buf_t b = {0};
            loom_buf_printf(&b, "%s=", sec->env);
            loom_buf_append(&b, sec->value.data, sec->value.len);
            env[k++] = loom_buf_steal(&b);
        }
    }
    env[k++] = loom_xasprintf("LOOM_ATTEMPT_ID=%llu", (unsigned long long)d->attempt_id);
    env[k++] = loom_xasprintf("LOOM_RUN_ID=%llu", (unsigned long long)d->run_id);
    env[k++] = loom_xasprintf("LOOM_TASK=%s", d->task);
    env[k++] = loom_xasprintf("LOOM_PIPELINE=%s", d->pipeline);
    env[k++] = loom_xasprintf("LOOM_ATTEMPT=%u", d->attempt_number);
    env[k++] = loom_xasprintf("LOOM_WORK_DIR=%s", dir);
    k += gpu_env(a, d, env + k);
    return env;
}

/* The environment held secret values: wipe it. */
void agent_env_free(char **env)
{
    for (char **e = env; *e; e++) {
        sodium_memzero(*e, strlen(*e));
        free(*e);
    }
    free(env);
}
