/* The blocking file work behind an attempt's working folder: the object
 * cache, unpacking a bundle, placing inputs, writing Dispatch.files,
 * reading the metrics file. Nothing here touches the loop; prepare.c runs it on the thread
 * pool. Every path that comes from loomd or from the task is opened one
 * segment at a time with O_NOFOLLOW beneath the working folder, so neither
 * a hostile manifest nor a task's symbolic link can reach outside it. */
#ifndef LOOM_AGENT_WORKDIR_H
#define LOOM_AGENT_WORKDIR_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "loom/bundle.h"
#include "loom/codec.h"

/* Opens rel (checked with loom_bundle_path_check) beneath the folder dirfd,
 * following no symbolic link, with open(2) flags for its last segment
 * (O_NOFOLLOW and O_CLOEXEC are added). With mkdirs, missing folders on
 * the way are created (0755). Returns a descriptor or -errno (-ELOOP for a
 * symbolic link on the way, -EINVAL for a path that is not allowed). */
int workdir_open_beneath(int dirfd, const char *rel, int flags, mode_t mode, bool mkdirs);

/* <cache>/objects/ab/cdef... (caller frees). */
char *workdir_object_path(const char *cache, const char *hash);
/* Creates <cache>/objects and <cache>/tmp and empties tmp (downloads a
 * previous agent process did not finish). */
int workdir_cache_init(const char *cache);

/* Reads the cached manifest and lists the distinct objects of its files the
 * cache lacks (*missing: an array of strings, each and the array freed by
 * the caller). Returns 0, LOOM_ENOTFOUND when the manifest itself is not
 * cached, or another error with the reason in why. */
int workdir_scan(const char *cache, const char *manifest_hash, loom_manifest_t *m, char ***missing,
                 size_t *n_missing, char *why, size_t whylen);

/* Creates the folder dir (0700) if needed, then unpacks the bundle (m may
 * be NULL) from the cache into it, places the inputs (each object at its
 * path, parent folders created, with its mode, 0 meaning 0644; its size
 * checked) and writes the dispatch's files last (an input or a file of the
 * dispatch replaces a bundle file of the same path). Copies are reflinks
 * where the file system can (FICLONE), else in-kernel copies: never hard
 * links, which a task writing to its file would turn into a corrupted
 * cache. Each object copied is touched (mtime), which is how the cache's
 * order of use survives a restart. Returns 0 or an error with the reason
 * in why, naming the path ("input \"PATH\": ..." for an input). */
int workdir_populate(const char *dir, const char *cache, const loom_manifest_t *m,
                     Loom__Input *const *inputs, size_t n_inputs, Loom__File *const *files,
                     size_t n_files, char *why, size_t whylen);

/* Writes the secrets given as files into the folder dir: each created
 * anew (O_EXCL: never through a file or link already there), mode 0600.
 * Returns 0 or an error with the reason in why (naming the path, never the
 * value). */
int workdir_write_secrets(const char *dir, Loom__Secret *const *secrets, size_t n, char *why,
                          size_t whylen);
/* Removes the secrets' files from the folder dir (those that exist),
 * following no symbolic link on the way. */
void workdir_remove_secrets(const char *dir, char *const *paths, size_t n);

/* Reads the metrics file rel of the folder dir: a regular file of at most
 * LOOM_METRICS_MAX bytes holding a JSON object whose values are numbers.
 * Sets *json (compact) or *error (why not); the caller frees either. */
void workdir_read_metrics(const char *dir, const char *rel, char **json, char **error);

#endif
