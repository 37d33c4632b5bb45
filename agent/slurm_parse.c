/* Parsers for Slurm's client commands (see slurm_parse.h). */
#include "slurm_parse.h"

#include "loom/util.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *slurm_sh_quote(const char *s)
{
    loom_buf_t b = {0};
    loom_buf_puts(&b, "'");
    for (; *s; s++) {
        if (*s == '\'')
            loom_buf_puts(&b, "'\\''");
        else
            loom_buf_append(&b, s, 1);
    }
    loom_buf_puts(&b, "'");
    return loom_buf_steal(&b);
}

static bool all_digits(const char *s, size_t n)
{
    if (n == 0) return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9') return false;
    return true;
}

int slurm_parse_sbatch(const char *text, char *id, size_t idlen)
{
    size_t n = strcspn(text, ";\n");
    const char *rest = text + n;
    if (*rest == ';') rest += strcspn(rest, "\n");
    if (!all_digits(text, n) || n >= idlen || (*rest && strcmp(rest, "\n") != 0)) return -1;
    memcpy(id, text, n);
    id[n] = '\0';
    return 0;
}

/* Splits line (len bytes, no newline) at '|' into at most max fields, each
 * copied NUL-terminated into fields[i] (cap bytes). Returns the count. */
static int split(const char *line, size_t len, char fields[][64], int max)
{
    int n = 0;
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && line[i] != '|') continue;
        if (n == max) return max + 1;
        size_t flen = i - start;
        if (flen >= 64) flen = 63;
        memcpy(fields[n], line + start, flen);
        fields[n][flen] = '\0';
        n++;
        start = i + 1;
    }
    return n;
}

int slurm_parse_squeue(const char *text, slurm_row_t **rows, char *why, size_t whylen)
{
    size_t cap = 16, n = 0;
    slurm_row_t *r = loom_xcalloc(cap, sizeof *r);
    int lineno = 0;
    for (const char *p = text; *p;) {
        size_t len = strcspn(p, "\n");
        lineno++;
        char f[6][64];
        /* squeue ends each field with the '|' suffix: a trailing empty one. */
        int k = split(p, len, f, 5);
        if (k != 5 || f[4][0] != '\0') {
            snprintf(why, whylen, "squeue line %d: expected 4 fields ending in '|': \"%.*s\"",
                     lineno, (int)(len > 80 ? 80 : len), p);
            goto bad;
        }
        char *end;
        errno = 0;
        long ws = strtol(f[3], &end, 10);
        if (!all_digits(f[0], strlen(f[0])) || strlen(f[0]) >= sizeof r->id || !f[1][0] || *end ||
            end == f[3] || errno || ws < 0 || ws > 0xffff) {
            snprintf(why, whylen, "squeue line %d: bad job id, state or exit code: \"%.*s\"",
                     lineno, (int)(len > 80 ? 80 : len), p);
            goto bad;
        }
        if (n == cap) r = loom_xrealloc(r, (cap *= 2) * sizeof *r);
        snprintf(r[n].id, sizeof r[n].id, "%s", f[0]);
        snprintf(r[n].state, sizeof r[n].state, "%s", f[1]);
        snprintf(r[n].reason, sizeof r[n].reason, "%s", f[2]);
        r[n].wait_status = (int)ws;
        n++;
        p += len;
        if (*p == '\n') p++;
    }
    *rows = r;
    return (int)n;
bad:
    free(r);
    *rows = NULL;
    return -1;
}

int slurm_parse_sacct(const char *text, slurm_row_t **rows, char *why, size_t whylen)
{
    size_t cap = 16, n = 0;
    slurm_row_t *r = loom_xcalloc(cap, sizeof *r);
    int lineno = 0;
    for (const char *p = text; *p;) {
        size_t len = strcspn(p, "\n");
        lineno++;
        char f[4][64];
        int k = split(p, len, f, 3);
        const char *line = p;
        p += len;
        if (*p == '\n') p++;
        if (k == 3 && strchr(f[0], '.')) continue; /* a step (12.batch): the job's line counts */
        char *colon = k == 3 ? strchr(f[2], ':') : NULL;
        char *e1 = NULL, *e2 = NULL;
        long code = colon ? strtol(f[2], &e1, 10) : -1;
        long sig = colon ? strtol(colon + 1, &e2, 10) : -1;
        f[1][strcspn(f[1], " ")] = '\0'; /* "CANCELLED by 0" */
        if (k != 3 || !all_digits(f[0], strlen(f[0])) || !f[1][0] || !colon || e1 != colon || *e2 ||
            code < 0 || code > 255 || sig < 0 || sig > 127) {
            snprintf(why, whylen, "sacct line %d: expected JOBID|STATE|CODE:SIGNAL: \"%.*s\"",
                     lineno, (int)(len > 80 ? 80 : len), line);
            free(r);
            *rows = NULL;
            return -1;
        }
        if (n == cap) r = loom_xrealloc(r, (cap *= 2) * sizeof *r);
        snprintf(r[n].id, sizeof r[n].id, "%s", f[0]);
        snprintf(r[n].state, sizeof r[n].state, "%s", f[1]);
        snprintf(r[n].reason, sizeof r[n].reason, "from sacct");
        r[n].wait_status = sig ? (int)sig : (int)code << 8;
        n++;
    }
    *rows = r;
    return (int)n;
}

void slurm_capacity_free(slurm_capacity_t *c)
{
    for (size_t i = 0; i < c->n_gpus; i++) gpu_free(&c->gpus[i]);
    free(c->gpus);
    memset(c, 0, sizeof *c);
}

/* One gres entry, "gpu:4", "gpu:a100:4" or "gpu:a100:4(S:0-1)": adds its GPUs. */
static int add_gres(slurm_capacity_t *c, const char *g)
{
    if (strncmp(g, "gpu:", 4) != 0) return 0; /* other generic resources: not ours */
    char buf[64];
    snprintf(buf, sizeof buf, "%s", g + 4);
    buf[strcspn(buf, "(")] = '\0';
    char *colon = strrchr(buf, ':');
    const char *count = colon ? colon + 1 : buf;
    if (colon) *colon = '\0';
    const char *model = colon ? buf : "";
    if (!all_digits(count, strlen(count)) || strlen(count) > 4) return -1;
    long n = strtol(count, NULL, 10);
    for (long i = 0; i < n; i++) {
        c->gpus = loom_xrealloc(c->gpus, (c->n_gpus + 1) * sizeof *c->gpus);
        gpu_t *gp = &c->gpus[c->n_gpus];
        gp->index = (uint32_t)c->n_gpus;
        gp->uuid = loom_xstrdup("");
        gp->model = loom_xstrdup(model);
        gp->memory_bytes = 0;
        c->n_gpus++;
    }
    return 0;
}

int slurm_parse_sinfo(const char *text, slurm_capacity_t *c, char *why, size_t whylen)
{
    memset(c, 0, sizeof *c);
    int lineno = 0;
    char seen[64][64];
    size_t n_seen = 0;
    for (const char *p = text; *p;) {
        size_t len = strcspn(p, "\n");
        lineno++;
        char f[6][64];
        int k = split(p, len, f, 5);
        char *e1, *e2;
        long cpus = k == 5 ? strtol(f[1], &e1, 10) : 0;
        long long mem = k == 5 ? strtoll(f[2], &e2, 10) : 0;
        if (k != 5 || !f[0][0] || *e1 || e1 == f[1] || *e2 || e2 == f[2] || cpus < 0 || mem < 0) {
            snprintf(why, whylen,
                     "sinfo line %d: expected NODE|CPUS|MEMORY_MB|GRES|STATE: \"%.*s\"", lineno,
                     (int)(len > 80 ? 80 : len), p);
            slurm_capacity_free(c);
            return -1;
        }
        p += len;
        if (*p == '\n') p++;
        /* A node in several partitions is listed once per partition. */
        bool dup = false;
        for (size_t i = 0; i < n_seen; i++) dup = dup || strcmp(seen[i], f[0]) == 0;
        const char *st = f[4];
        bool up = !strstr(st, "down") && !strstr(st, "drain") && !strstr(st, "fail") &&
                  !strstr(st, "unk") && !strstr(st, "*");
        if (dup || !up) continue;
        if (n_seen < 64) snprintf(seen[n_seen++], sizeof seen[0], "%s", f[0]);
        c->nodes++;
        c->cpus += (uint32_t)cpus;
        c->memory_bytes += (uint64_t)mem << 20;
        char gres[64];
        snprintf(gres, sizeof gres, "%s", f[3]);
        for (char *save = NULL, *g = strtok_r(gres, ",", &save); g; g = strtok_r(NULL, ",", &save))
            if (add_gres(c, g) != 0) {
                snprintf(why, whylen, "sinfo line %d: bad GPU gres \"%s\"", lineno, g);
                slurm_capacity_free(c);
                return -1;
            }
    }
    return 0;
}
