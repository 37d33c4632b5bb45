/* Open-addressing hash maps keyed by uint64 or by string, holding borrowed
 * pointers. Used where lookups sit on a hot path (attempts by id, agents by
 * name). The map never owns keys or values: string keys must outlive their
 * entry. */
#ifndef LOOM_MAP_H
#define LOOM_MAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t key;     /* u64 maps */
    const char *skey; /* string maps */
    void *value;
    uint8_t used; /* 0 empty, 1 used, 2 deleted */
} loom_map_slot_t;

typedef struct {
    loom_map_slot_t *slots;
    size_t cap;   /* power of two */
    size_t count; /* live entries */
    size_t tombs; /* deleted slots */
} loom_map_t;

void *loom_map_get(const loom_map_t *m, uint64_t key);
void loom_map_put(loom_map_t *m, uint64_t key, void *value);
void *loom_map_del(loom_map_t *m, uint64_t key);

void *loom_smap_get(const loom_map_t *m, const char *key);
void loom_smap_put(loom_map_t *m, const char *key, void *value);
void *loom_smap_del(loom_map_t *m, const char *key);

/* Iterate: for (size_t i = 0; loom_map_next(m, &i, &v);) ... */
int loom_map_next(const loom_map_t *m, size_t *iter, void **value);
void loom_map_free(loom_map_t *m);

#endif
