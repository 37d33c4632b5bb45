/* Where the agent's own cgroups are, and the small reads and writes of
 * cgroup files that resources.c and task_limits.c need. The folders are found
 * through /proc/self/cgroup and /proc/self/mountinfo, so a hierarchy mounted
 * from a subtree (a container without a cgroup namespace) still resolves to
 * the right folder. Everything is read beneath a root folder that tests
 * replace with a fake tree ("" or NULL: the real one). */
#ifndef LOOM_AGENT_CGROUP_H
#define LOOM_AGENT_CGROUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    char *v2;        /* the agent's cgroup v2 folder, or NULL */
    char *v2_mount;  /* the cgroup2 mount point it lies under */
    char *v1_memory; /* the agent's folder in the v1 memory hierarchy, or NULL */
    char *v1_memory_mount;
    char *v1_cpu; /* ... in the v1 cpu hierarchy, or NULL */
    char *v1_cpu_mount;
} cgroup_where_t;

/* Fills w (every path absolute, root included); a hierarchy that is not
 * mounted or not found stays NULL. Reads two small files: cheap. */
void cgroup_locate(const char *root, cgroup_where_t *w);
void cgroup_where_free(cgroup_where_t *w);

/* Parsers behind cgroup_locate, for tests. From /proc/self/cgroup text: the
 * v2 path ("0::PATH") and the v1 paths of the hierarchies holding the memory
 * and cpu controllers; each set to a new string or NULL. */
void cgroup_parse_self(const char *text, char **v2, char **memory, char **cpu);

/* Reads the file dir/name (at most len-1 bytes; trailing newlines cut).
 * Returns 0 or -errno. */
int cgroup_read(const char *dir, const char *name, char *buf, size_t len);
/* Writes value to dir/name in one write(2). Returns 0 or -errno. */
int cgroup_write(const char *dir, const char *name, const char *value);
/* The number after "key " on a line of a flat keyed file (memory.events,
 * memory.oom_control). Returns 0, -ENOENT (no such line) or -errno. */
int cgroup_read_key(const char *dir, const char *name, const char *key, uint64_t *out);
bool cgroup_has(const char *dir, const char *name);
/* Whether the space-separated list contains word. */
bool cgroup_list_has(const char *list, const char *word);

#endif
