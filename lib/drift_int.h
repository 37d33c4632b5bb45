/* What the drift modules share inside lib/: the bounded, seeded sample of a
 * stream of numbers. */
#ifndef LOOM_DRIFT_INT_H
#define LOOM_DRIFT_INT_H

#include "loom/util.h"

#include <stdint.h>
#include <stdlib.h>

/* Numbers seen in one stream: all of them up to limit, then a uniform
 * reservoir sample of limit (Algorithm R). */
typedef struct {
    double *v;
    size_t n, cap;
    uint64_t seen;
    uint64_t rng; /* splitmix64 state */
} sample_t;

static inline uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static inline void sample_add(sample_t *s, double x, size_t limit)
{
    s->seen++;
    if (s->n < limit) {
        if (s->n == s->cap) {
            s->cap = s->cap ? s->cap * 2 : 1024;
            if (s->cap > limit) s->cap = limit;
            s->v = loom_xrealloc(s->v, s->cap * sizeof *s->v);
        }
        s->v[s->n++] = x;
        return;
    }
    /* Keep the seen-th value with probability limit / seen, in a uniform
     * slot: every value seen so far is then in the sample with that chance. */
    uint64_t j = (uint64_t)(((unsigned __int128)splitmix64(&s->rng) * s->seen) >> 64);
    if (j < limit) s->v[j] = x;
}

static inline void sample_free(sample_t *s)
{
    free(s->v);
    s->v = NULL;
    s->n = s->cap = 0;
}

#endif
