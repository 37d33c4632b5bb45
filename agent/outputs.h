/* The blocking side of an attempt's outputs (Dispatch.outputs): expanding
 * the patterns into files beneath the working folder, hashing a file a
 * slice at a time, reading the chunks of an upload. Nothing here touches
 * the loop; upload.c runs it on the thread pool. Like workdir.c, every path
 * is opened one segment at a time without following symbolic links, and a
 * symbolic link met on the way is refused, never skipped: a task must not
 * be able to publish what lies outside its folder. */
#ifndef LOOM_AGENT_OUTPUTS_H
#define LOOM_AGENT_OUTPUTS_H

#include <sodium.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loom/bundle.h"

/* Why a pattern is refused before anything is looked at (absolute, a ".."
 * segment, empty), or NULL. The string is the caller's to free. */
char *outputs_check_pattern(const char *pattern);

/* Expands the patterns beneath the folder dir: a file, a folder (every
 * regular file under it, recursively), or globs in any segment ("*.csv",
 * "run-?/model.pt"; fnmatch(3) per segment, so "*" never matches "/", nor
 * a leading "."). Sets
 * *paths (sorted, distinct, relative and normalised; the caller frees each
 * and the array). Fails when a pattern is refused, matches no file, or a
 * match is or passes through a symbolic link: LOOM_EINVAL with the reason
 * in why; LOOM_ETOOBIG past LOOM_ARTIFACTS_MAX files; LOOM_EIO. */
int outputs_collect(const char *dir, char *const *patterns, size_t n_patterns, char ***paths,
                    size_t *n_paths, char *why, size_t whylen);

/* One file being hashed, across jobs. */
typedef struct {
    int fd; /* -1 until the first step */
    uint64_t size;
    uint32_t mode; /* permission bits */
    crypto_generichash_state st;
} out_hash_t;

void outputs_hash_init(out_hash_t *h);
/* Hashes up to slice more bytes of rel beneath dir (opening it on the first
 * step), stopping early when *stop is set. Returns 1 when bytes remain, 0
 * when done (hex and h->size set, the file closed), or LOOM_EIO /
 * LOOM_EINVAL / LOOM_ECANCELLED with the reason in why. */
int outputs_hash_step(const char *dir, const char *rel, out_hash_t *h, uint64_t slice,
                      const atomic_bool *stop, char hex[LOOM_HASH_HEX_LEN + 1], char *why,
                      size_t whylen);
void outputs_hash_end(out_hash_t *h);

/* Opens rel beneath dir for reading (no symbolic link on the way). Returns
 * a descriptor, or -1 with the reason in why. */
int outputs_open(const char *dir, const char *rel, char *why, size_t whylen);
/* Reads exactly len bytes at off. Returns 0, or LOOM_EIO with why (a short
 * read means the file shrank since it was hashed). */
int outputs_pread(int fd, uint8_t *buf, size_t len, uint64_t off, char *why, size_t whylen);

#endif
