/* Hash maps declared in map.h: linear probing with tombstones, grown at 70%
 * load (live entries plus tombstones). */
#include "loom/map.h"
#include "loom/util.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return mix64(h);
}

static bool slot_matches(const loom_map_slot_t *s, bool str, uint64_t key, const char *skey)
{
    if (s->used != 1) return false;
    return str ? strcmp(s->skey, skey) == 0 : s->key == key;
}

static loom_map_slot_t *find(const loom_map_t *m, bool str, uint64_t key, const char *skey)
{
    if (!m->cap) return NULL;
    uint64_t h = str ? hash_str(skey) : mix64(key);
    for (size_t i = 0; i < m->cap; i++) {
        loom_map_slot_t *s = &m->slots[(h + i) & (m->cap - 1)];
        if (s->used == 0) return NULL;
        if (slot_matches(s, str, key, skey)) return s;
    }
    return NULL;
}

static void insert(loom_map_t *m, bool str, uint64_t key, const char *skey, void *value);

static void grow(loom_map_t *m, bool str)
{
    loom_map_slot_t *old = m->slots;
    size_t oldcap = m->cap;
    size_t cap = 16;
    /* Rehashing also clears tombstones, so size for the live entries only. */
    while ((m->count + 1) * 2 >= cap) cap *= 2;
    m->slots = loom_xcalloc(cap, sizeof *m->slots);
    m->cap = cap;
    m->count = 0;
    m->tombs = 0;
    for (size_t i = 0; i < oldcap; i++)
        if (old[i].used == 1) insert(m, str, old[i].key, old[i].skey, old[i].value);
    free(old);
}

static void insert(loom_map_t *m, bool str, uint64_t key, const char *skey, void *value)
{
    loom_map_slot_t *hit = find(m, str, key, skey);
    if (hit) {
        hit->value = value;
        return;
    }
    if ((m->count + m->tombs + 1) * 10 >= m->cap * 7) grow(m, str);
    uint64_t h = str ? hash_str(skey) : mix64(key);
    for (size_t i = 0;; i++) {
        loom_map_slot_t *s = &m->slots[(h + i) & (m->cap - 1)];
        if (s->used == 1) continue;
        if (s->used == 2) m->tombs--;
        s->used = 1;
        s->key = key;
        s->skey = skey;
        s->value = value;
        m->count++;
        return;
    }
}

static void *erase(loom_map_t *m, bool str, uint64_t key, const char *skey)
{
    loom_map_slot_t *s = find(m, str, key, skey);
    if (!s) return NULL;
    void *v = s->value;
    s->used = 2;
    s->value = NULL;
    m->count--;
    m->tombs++;
    return v;
}

void *loom_map_get(const loom_map_t *m, uint64_t key)
{
    loom_map_slot_t *s = find(m, false, key, NULL);
    return s ? s->value : NULL;
}

void loom_map_put(loom_map_t *m, uint64_t key, void *value)
{
    insert(m, false, key, NULL, value);
}

void *loom_map_del(loom_map_t *m, uint64_t key)
{
    return erase(m, false, key, NULL);
}

void *loom_smap_get(const loom_map_t *m, const char *key)
{
    loom_map_slot_t *s = find(m, true, 0, key);
    return s ? s->value : NULL;
}

void loom_smap_put(loom_map_t *m, const char *key, void *value)
{
    insert(m, true, 0, key, value);
}

void *loom_smap_del(loom_map_t *m, const char *key)
{
    return erase(m, true, 0, key);
}

int loom_map_next(const loom_map_t *m, size_t *iter, void **value)
{
    while (*iter < m->cap) {
        loom_map_slot_t *s = &m->slots[(*iter)++];
        if (s->used == 1) {
            *value = s->value;
            return 1;
        }
    }
    return 0;
}

void loom_map_free(loom_map_t *m)
{
    free(m->slots);
    memset(m, 0, sizeof *m);
}
