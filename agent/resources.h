/* What the agent's host gives it and how busy the host is: the CPUs it may
 * use (its affinity mask, capped by the CPU quota of its cgroup and every
 * ancestor), its memory (RAM, capped likewise by cgroup memory limits), and
 * the live figures sent with each heartbeat. All reads are of small /proc
 * and cgroup files: cheap enough for the loop thread. */
#ifndef LOOM_AGENT_RESOURCES_H
#define LOOM_AGENT_RESOURCES_H

#include "cgroup.h"

#include <stdint.h>

/* CPUs the calling thread may run on (sched_getaffinity), capped by the
 * smallest CPU quota on the way from the agent's cgroup up to its mount
 * (cgroup v2 cpu.max, v1 cpu.cfs_quota_us / cpu.cfs_period_us). At least
 * one hundredth of a CPU. */
double resources_cpus_usable(const cgroup_where_t *w);
/* Installed RAM (sysinfo), capped by the smallest cgroup memory limit on
 * the way up (v2 memory.max, v1 memory.limit_in_bytes). */
uint64_t resources_memory_bytes(const cgroup_where_t *w);

/* The whole number of CPUs that covers cpus (1.5 -> 2); at least 1. The
 * agent avoids libm. */
uint32_t resources_cpus_whole(double cpus);

/* "QUOTA PERIOD" of cgroup v2 cpu.max: *cpus is QUOTA/PERIOD, or 0 for
 * "max". Returns 0 or LOOM_EPARSE. */
int resources_parse_cpu_max(const char *text, double *cpus);

/* The 1-minute load average (/proc/loadavg) and MemAvailable
 * (/proc/meminfo), read beneath root ("" or NULL: the real /proc).
 * Returns 0 or LOOM_EIO; a field that cannot be read is left 0. */
int resources_usage(const char *root, double *load1, uint64_t *mem_available);

#endif
