/* Per-attempt CPU and memory limits (Dispatch.cpus, Dispatch.memory_bytes).
 *
 * Mechanism, chosen once when the agent starts and logged:
 *  - cgroup v2 when the agent's cgroup lets it create children with the
 *    memory (and cpu) controller: <agent cgroup>/loom-<tag>-<attempt>, with
 *    memory.max, memory.swap.max 0 and cpu.max "QUOTA 100000";
 *  - else cgroup v1: <agent's memory cgroup>/loom/<tag>-<attempt> with
 *    memory.limit_in_bytes (and memory.memsw.limit_in_bytes), and the same
 *    under the cpu hierarchy with cpu.cfs_quota_us / cpu.cfs_period_us;
 *  - else RLIMIT_AS for memory, which is weaker: it bounds address space,
 *    not memory used, so a program that reserves much more than it touches
 *    fails early (CUDA reserves terabytes: attempts with GPUs get no rlimit),
 *    and an allocation that fails is the program's error, not a kill we can
 *    report. No CPU limit then.
 * tag (the agent's pid) keeps two agents on one host apart.
 *
 * The process enters its cgroups right after posix_spawn returns (there is
 * no hook between fork and exec in posix_spawn): by then it has exec'd and
 * done almost nothing, and the pages it touched before the move are
 * immaterial. A task that forked within those microseconds would leave a
 * child outside; nothing real does. */
#ifndef LOOM_AGENT_TASK_LIMITS_H
#define LOOM_AGENT_TASK_LIMITS_H

#include "cgroup.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct limits limits_t;
typedef struct limit_box limit_box_t;

/* Probes w for a usable mechanism (creating and removing a folder to be
 * sure it can) and logs which one it uses. Never fails. */
limits_t *limits_new(const cgroup_where_t *w, const char *tag);
/* "cgroup v2", "cgroup v1" or "rlimit". */
const char *limits_mechanism(const limits_t *l);
/* Whether Dispatch.cpus can be enforced. */
bool limits_cpu_enforced(const limits_t *l);
/* Retries removing cgroups that were busy when released; call now and
 * then (the agent does on each heartbeat). */
void limits_sweep(limits_t *l);
/* Sweeps once more and frees. NULL-safe. */
void limits_destroy(limits_t **l);

/* Creates the attempt's cgroups. *out is NULL when nothing is asked (no
 * limit, or none this mechanism can enforce). Returns 0, or LOOM_EIO with
 * why: the attempt must not run unconfined. */
int limits_box_new(limits_t *l, uint64_t attempt_id, double cpus, uint64_t memory_bytes, bool gpus,
                   limit_box_t **out, char *why, size_t whylen);
/* Puts the freshly spawned process in the box. Returns 0, or LOOM_EIO with
 * why (the caller kills it). */
int limits_box_enter(limit_box_t *b, int pid, char *why, size_t whylen);
/* After the process has exited: whether the OOM killer killed a process of
 * the box. sigkilled (the main process died of SIGKILL) lets kernels that
 * lack the oom_kill counter fall back to memory.failcnt. */
bool limits_box_oom_killed(const limit_box_t *b, bool sigkilled);
/* The memory limit enforced, 0 for none. */
uint64_t limits_box_memory(const limit_box_t *b);
/* Removes the box's cgroups once its processes are gone (a busy folder is
 * left to limits_sweep) and frees it. NULL-safe; sets *b to NULL. */
void limits_box_release(limits_t *l, limit_box_t **b);

/* "50 MiB", "8 GiB", "1.5 GiB". */
void limits_format_size(uint64_t bytes, char *out, size_t len);

#endif
