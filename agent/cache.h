/* The agent's object cache (<cache>/objects/ab/cdef...: bundle files,
 * manifests and input artifacts, named by their BLAKE2b-256) kept under a
 * size bound by evicting the least recently used objects.
 *
 * The loop holds the index (what is cached, how large, in which order it
 * was last used), so that a decision to evict and a decision to use an
 * object are never taken on two threads: an attempt pins what it is about
 * to place, and a pinned object is never evicted. Use is also recorded on
 * disk as the object's mtime (touched where it is copied out), so the order
 * survives a restart. */
#ifndef LOOM_AGENT_CACHE_H
#define LOOM_AGENT_CACHE_H

#include <stdbool.h>
#include <stdint.h>

typedef struct loom_agent loom_agent_t;
typedef struct cache cache_t;

#define CACHE_DEFAULT_MAX (10ull << 30)

cache_t *cache_new(loom_agent_t *a, const char *cache_dir, uint64_t max_bytes);
/* Reads what objects/ holds, oldest use (mtime) first, then trims. Blocking:
 * call once at start, before the loop runs. Returns 0 or LOOM_EIO. */
int cache_load(cache_t *c);
bool cache_has(const cache_t *c, const char *hash);
/* A download installed hash (size bytes): it counts, as used now; trims. */
void cache_added(cache_t *c, const char *hash, uint64_t size);
/* The file of a listed object is gone (removed behind the agent's back). */
void cache_dropped(cache_t *c, const char *hash);
/* An attempt is about to place hash (cached or not yet): it is not evicted
 * until unpinned. Pins count; each pin needs one unpin. */
void cache_pin(cache_t *c, const char *hash);
/* Marks it used now, then trims. */
void cache_unpin(cache_t *c, const char *hash);
/* Evicts the least recently used unpinned objects until the cache holds at
 * most its bound: each is renamed out of objects/ here (a metadata change,
 * so a download of the same hash can never be unlinked by mistake) and
 * unlinked on the thread pool. */
void cache_trim(cache_t *c);
uint64_t cache_bytes(const cache_t *c);
uint64_t cache_max(const cache_t *c);
/* Objects evicted since start (for tests and logs). */
uint64_t cache_evicted(const cache_t *c);
void cache_destroy(cache_t **c);

#endif
