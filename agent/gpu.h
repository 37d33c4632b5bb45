/* The agent's GPUs: from the configuration (--gpu), else from NVML loaded at
 * run time (never linked: most agents have no NVIDIA driver), else from
 * nvidia-smi's CSV output, else none. Detection blocks (NVML initialisation
 * and nvidia-smi can take seconds), so the agent runs it once, on the thread
 * pool, before its first Hello. Live usage is sampled through NVML only. */
#ifndef LOOM_AGENT_GPU_H
#define LOOM_AGENT_GPU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GPU_NVML_LIBRARY "libnvidia-ml.so.1"
#define GPU_SMI_COMMAND "nvidia-smi"
#define GPU_SMI_TIMEOUT_MS 5000

typedef struct {
    uint32_t index;
    char *uuid; /* "" when the configuration gives none */
    char *model;
    uint64_t memory_bytes;
} gpu_t;

typedef struct {
    uint32_t index;
    uint32_t utilization_percent;
    uint64_t memory_used_bytes;
} gpu_usage_t;

struct gpu_nvml;

typedef struct {
    gpu_t *gpus;
    size_t n;
    const char *source;    /* "config", "nvml", "nvidia-smi" or "none" */
    struct gpu_nvml *nvml; /* kept loaded for usage when the source is NVML */
} gpu_inv_t;

typedef struct {
    const char *const *specs; /* --gpu INDEX:MODEL:MEMORY[:UUID]; any: no detection */
    size_t n_specs;
    bool no_detect;           /* --no-gpu-detect: skip NVML and nvidia-smi */
    const char *nvml_library; /* NULL: GPU_NVML_LIBRARY */
    const char *smi_command;  /* NULL: GPU_SMI_COMMAND, looked up on PATH */
    uint64_t smi_timeout_ms;  /* 0: GPU_SMI_TIMEOUT_MS; then it is killed */
} gpu_detect_opts_t;

/* Parses one --gpu value; MEMORY is a size such as 40G. Returns 0, or
 * LOOM_EINVAL with the reason in why. */
int gpu_parse_spec(const char *spec, gpu_t *out, char *why, size_t whylen);
/* Checks the specs together (each valid, no index twice). */
int gpu_check_specs(const char *const *specs, size_t n, char *why, size_t whylen);
/* Parses nvidia-smi --query-gpu=index,uuid,name,memory.total
 * --format=csv,noheader,nounits: one "I, UUID, NAME, MiB" line per GPU.
 * Anything else refuses the whole output (LOOM_EPARSE, why names the line):
 * a half-understood inventory would place work on GPUs that are not there. */
int gpu_parse_smi(const char *text, gpu_t **gpus, size_t *n, char *why, size_t whylen);

/* Blocking. Tries the sources in order; a source that fails is logged (a
 * warning where something is wrong, not where it is simply absent) and the
 * next one is tried. Specs must have passed gpu_check_specs. */
void gpu_detect(const gpu_detect_opts_t *o, gpu_inv_t *inv);
/* Blocking briefly (NVML calls). Fills out[i] for each GPU and returns how
 * many; 0 when usage is not available (the source is not NVML). */
size_t gpu_sample(const gpu_inv_t *inv, gpu_usage_t *out, size_t max);
bool gpu_inv_has(const gpu_inv_t *inv, uint32_t index);
/* Shuts NVML down and frees everything; inv may be reused. */
void gpu_inv_free(gpu_inv_t *inv);
void gpu_free(gpu_t *g);

#endif
