/* Object downloads from loomd into the agent's content-addressed cache
 * (<cache>/objects/ab/cdef...). Pull-based: the agent asks for chunks of at
 * most LOOM_OBJECT_CHUNK_MAX bytes with FetchObject and keeps a window of a
 * few outstanding per object, so its memory is bounded by the window, not by
 * the object. Each object is downloaded once however many attempts want it,
 * a few objects at a time; the bytes are written and hashed on the thread
 * pool, verified against the name, and renamed into the cache, so a cached
 * object is always whole and correct. */
#ifndef LOOM_AGENT_FETCH_H
#define LOOM_AGENT_FETCH_H

#include "loom/codec.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct loom_agent loom_agent_t;
typedef struct fetcher fetcher_t;

/* Outstanding FetchObject requests per object, and objects fetched at once:
 * at most FETCH_WINDOW * FETCH_ACTIVE MiB in flight. */
#define FETCH_WINDOW 4
#define FETCH_ACTIVE 4
/* No answer for this long while welcomed: ask again; after FETCH_STALLS
 * such rounds the download fails. */
#define FETCH_STALL_MS 5000
#define FETCH_STALLS 6
/* The largest object an agent accepts is its cache's bound (cache.h). */

/* error is NULL when the object is now in the cache (and listed there);
 * refused: error is loomd's own answer (it lacks the object, or cannot
 * read it), not a failure on the way. */
typedef void (*fetch_cb)(void *ud, const char *hash, const char *error, bool refused);

/* Initialises its timer on the agent's loop (counted in pending_closes). */
fetcher_t *fetcher_new(loom_agent_t *a, const char *cache_dir);
/* Downloads hash into the cache (or joins the download under way) and calls
 * cb once, later, from the loop: never from inside this call. */
void fetcher_want(fetcher_t *f, const char *hash, fetch_cb cb, void *ud);
/* An ObjectChunk from loomd. */
void fetcher_on_chunk(fetcher_t *f, const Loom__ObjectChunk *c);
/* After a Welcome: what was asked before may be lost, ask again. */
void fetcher_resume(fetcher_t *f);
/* Fails every download ("agent stopped"); no new ones start. */
void fetcher_stop(fetcher_t *f);
/* Closes the timer; on_closed(a) runs from its close callback. */
void fetcher_close(fetcher_t *f, void (*on_closed)(loom_agent_t *a));
/* FetchObject requests sent so far (for tests and logs). */
uint64_t fetcher_requests(const fetcher_t *f);
/* After fetcher_close has completed, or if the loop never ran it. */
void fetcher_destroy(fetcher_t **f);

#endif
