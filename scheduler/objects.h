/* loomd's content-addressed object store: STATE/objects/ab/cdef..., named by
 * the BLAKE2b-256 of the content (lowercase hex). Code bundles (a manifest
 * object listing path, mode and hash of each file, plus the files) live
 * here; agents pull objects over ZeroMQ with FetchObject. An object is
 * written to a temporary file, hashed as it arrives, verified, fsynced and
 * renamed into place, so a half-written object is never visible. */
#ifndef LOOM_OBJECTS_H
#define LOOM_OBJECTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct loom_objects loom_objects_t;
typedef struct loom_obj_writer loom_obj_writer_t;

int loom_objects_open(const char *state_dir, loom_objects_t **out, char *why, size_t whylen);
void loom_objects_destroy(loom_objects_t **o);

/* True for 64 lowercase hex digits. */
bool loom_objects_hash_valid(const char *hex);
bool loom_objects_has(loom_objects_t *o, const char *hex);
/* Path of a stored object; caller frees. */
char *loom_objects_path(loom_objects_t *o, const char *hex);

/* Streams one object in: append as bytes arrive, then commit with the hash
 * the sender claims. A mismatch stores nothing. */
int loom_objects_writer_new(loom_objects_t *o, loom_obj_writer_t **out);
int loom_objects_writer_append(loom_obj_writer_t *w, const void *data, size_t len);
int loom_objects_writer_commit(loom_obj_writer_t **w, const char *expect_hex, char *why,
                               size_t whylen);
void loom_objects_writer_abort(loom_obj_writer_t **w);

/* Checks that a bundle manifest and every file it lists are stored.
 * Returns 0, LOOM_ENOTFOUND with the first missing hash in why, or
 * LOOM_EPARSE when the manifest is malformed. */
int loom_objects_check_bundle(loom_objects_t *o, const char *manifest_hex, char *why,
                              size_t whylen);

#endif
