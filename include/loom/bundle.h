/* Code bundles, shared by the CLI (which builds and uploads them), loomd
 * (which checks them) and the agent (which unpacks them). A bundle is a
 * manifest object listing each file's path, mode, size and content hash;
 * the files are objects in the same content-addressed store, named by the
 * BLAKE2b-256 of their bytes in lowercase hex, like a git tree.
 *
 * The manifest's bytes are canonical, so one set of files has exactly one
 * manifest hash:
 *   {"version":1,"files":[{"path":"a.py","mode":420,"size":12,"hash":"..."}]}
 * no whitespace, keys in that order, files sorted by path (bytewise), modes
 * 420 (0644) or 493 (0755) only, strings escaped minimally ('"', '\\' and
 * bytes below 0x20 as \u00XX). See docs/bundles.md. */
#ifndef LOOM_BUNDLE_H
#define LOOM_BUNDLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LOOM_MANIFEST_VERSION 1
/* Bounds on any manifest a program accepts (the CLI builds smaller ones). */
#define LOOM_MANIFEST_MAX_FILES 100000
#define LOOM_MANIFEST_MAX_BYTES (16u * 1024 * 1024)
/* A path in a bundle, in bytes; folders nest at most this deep. */
#define LOOM_BUNDLE_PATH_MAX 1024
#define LOOM_BUNDLE_DEPTH_MAX 64
#define LOOM_HASH_HEX_LEN 64

typedef struct {
    char *path;    /* relative, '/'-separated, normalised */
    uint32_t mode; /* 0644 or 0755 */
    uint64_t size;
    char hash[LOOM_HASH_HEX_LEN + 1];
} loom_bundle_file_t;

typedef struct {
    loom_bundle_file_t *files;
    size_t n, cap;
} loom_manifest_t;

/* --- hashes --------------------------------------------------------------- */

/* True for exactly 64 lowercase hex digits. */
bool loom_hash_hex_valid(const char *hex);
void loom_hash_bytes(const void *data, size_t len, char hex[LOOM_HASH_HEX_LEN + 1]);
/* Hashes what is left to read of fd, 64 KiB at a time. Returns 0 or
 * LOOM_EIO (errno set). *size (may be NULL) gets the bytes read. */
int loom_hash_fd(int fd, char hex[LOOM_HASH_HEX_LEN + 1], uint64_t *size);

/* --- paths ---------------------------------------------------------------- */

/* 0 when path may name a file in a bundle (or in a task's working folder):
 * relative, '/'-separated, valid UTF-8, no empty, "." or ".." segment, no
 * control character, at most LOOM_BUNDLE_PATH_MAX bytes and
 * LOOM_BUNDLE_DEPTH_MAX segments. Else LOOM_EINVAL and the reason in why. */
int loom_bundle_path_check(const char *path, char *why, size_t whylen);

/* --- manifests ------------------------------------------------------------ */

/* Copies path and hash. Modes other than 0644/0755 are reduced to those by
 * the owner's exec bit. */
void loom_manifest_add(loom_manifest_t *m, const char *path, uint32_t mode, uint64_t size,
                       const char *hash);
/* Sorts the files by path, as the canonical form requires. */
void loom_manifest_sort(loom_manifest_t *m);
/* The canonical bytes (NUL-terminated; the caller frees). Fails with
 * LOOM_EINVAL and a reason when a path or hash is invalid, paths are not
 * sorted and unique, or a path is both a file and a folder ("a", "a/b"). */
int loom_manifest_encode(const loom_manifest_t *m, char **out, size_t *len, char *why,
                         size_t whylen);
/* Parses a manifest and checks everything encode checks, plus that the bytes
 * are exactly the canonical form. Returns 0, LOOM_ETOOBIG or LOOM_EPARSE with
 * the reason in why; on failure *out is empty. */
int loom_manifest_parse(const char *data, size_t len, loom_manifest_t *out, char *why,
                        size_t whylen);
/* The file at path, or NULL (binary search: the manifest must be sorted). */
const loom_bundle_file_t *loom_manifest_find(const loom_manifest_t *m, const char *path);
void loom_manifest_free(loom_manifest_t *m);

/* --- ignore rules and the folder walk (bundle_walk.c) --------------------- */

/* A subset of .gitignore: blank lines and "#" comments; "!" negates;
 * a trailing "/" matches folders only; a pattern with a "/" other than a
 * trailing one is anchored at the bundle's root (a leading "/" just
 * anchors), one without matches a name at any depth; "*" and "?" do not
 * match "/", "**" as a whole segment matches any number of segments, and
 * "[a-z]", "[!x]" are classes; "\" quotes the next character. The last
 * matching rule wins. Not supported: nested ignore files, and re-including
 * a file whose folder is ignored (git cannot either). */
typedef struct loom_ignore loom_ignore_t;

loom_ignore_t *loom_ignore_new(void);
/* Adds every rule of a file's text. */
void loom_ignore_add_text(loom_ignore_t *ig, const char *text, size_t len);
/* Whether the relative path (a folder when is_dir) is ignored. */
bool loom_ignore_match(const loom_ignore_t *ig, const char *path, bool is_dir);
void loom_ignore_destroy(loom_ignore_t **ig);

/* The rules of root/.loomignore, else root/.gitignore, else none. *source
 * (may be NULL) gets ".loomignore", ".gitignore" or NULL. Returns 0 or
 * LOOM_EIO when a file exists but cannot be read. */
int loom_ignore_load(const char *root, loom_ignore_t **out, const char **source);

typedef struct {
    size_t max_files;   /* 0: LOOM_MANIFEST_MAX_FILES */
    uint64_t max_bytes; /* 0: no limit */
    /* Told of every entry left out other than by an ignore rule: symbolic
     * links (never followed, so nothing outside the folder is read),
     * sockets, devices. May be NULL. */
    void (*on_skip)(void *ud, const char *path, const char *why);
    void *ud;
} loom_walk_opts_t;

/* Lists the regular files under root, recursively, skipping ".git" and
 * what ig ignores (ig may be NULL), into m (sorted; hashes left empty).
 * Returns 0; LOOM_ETOOBIG past a limit; LOOM_EINVAL for a name that cannot
 * be bundled; LOOM_EIO. Every failure names the path in why. */
int loom_bundle_walk(const char *root, const loom_ignore_t *ig, const loom_walk_opts_t *opts,
                     loom_manifest_t *m, char *why, size_t whylen);

#endif
