/* What Slurm's client commands print, read strictly: sbatch --parsable,
 * squeue and sacct in '|'-separated formats, sinfo per node. Anything else
 * is refused with the line and what is wrong, never guessed at. */
#ifndef LOOM_AGENT_SLURM_PARSE_H
#define LOOM_AGENT_SLURM_PARSE_H

#include "gpu.h"

#include <stddef.h>
#include <stdint.h>

/* What the partition offers, from sinfo: nodes that are up, summed. */
typedef struct {
    uint32_t nodes;
    uint32_t cpus;
    uint64_t memory_bytes;
    gpu_t *gpus; /* one per GPU, indexes 0.., model from the gres type ("" if none) */
    size_t n_gpus;
} slurm_capacity_t;

void slurm_capacity_free(slurm_capacity_t *c);

typedef struct {
    char id[64];
    char state[64];
    char reason[160];
    int wait_status; /* squeue's exit_code: a wait(2) status */
} slurm_row_t;

/* squeue --noheader -O "JobID:|,State:|,Reason:|,exit_code:|": one row per
 * line. Returns the count, or -1 with why (line number and what is wrong). */
int slurm_parse_squeue(const char *text, slurm_row_t **rows, char *why, size_t whylen);
/* sacct --noheader --parsable2 --format=JobID,State,ExitCode: the jobs'
 * lines (steps skipped), exit codes "CODE:SIGNAL" as a wait status. */
int slurm_parse_sacct(const char *text, slurm_row_t **rows, char *why, size_t whylen);
/* sinfo -h -N -o "%N|%c|%m|%G|%t": sums the nodes that are up. */
int slurm_parse_sinfo(const char *text, slurm_capacity_t *c, char *why, size_t whylen);
/* sbatch --parsable: "ID" or "ID;CLUSTER". Returns 0 and the id, or -1. */
int slurm_parse_sbatch(const char *text, char *id, size_t idlen);
/* Single-quotes s for /bin/sh. */
char *slurm_sh_quote(const char *s);

#endif
