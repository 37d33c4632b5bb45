/* Code bundle manifests: content hashes, path rules and the canonical
 * manifest form (see bundle.h). Ignore rules and the folder walk are in
 * bundle_walk.c. */
#include "loom/bundle.h"

#include "loom/err.h"
#include "loom/util.h"

#include <errno.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define HASH_BYTES 32
#define READ_CHUNK 65536

#define FAIL(code, ...)                                                                            \
    do {                                                                                           \
        snprintf(why, whylen, __VA_ARGS__);                                                        \
        return (code);                                                                             \
    } while (0)

/* --- hashes --------------------------------------------------------------- */

bool loom_hash_hex_valid(const char *hex)
{
    if (!hex) return false;
    size_t i = 0;
    for (; hex[i]; i++) {
        char c = hex[i];
        if (i >= LOOM_HASH_HEX_LEN || !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;
    }
    return i == LOOM_HASH_HEX_LEN;
}

static void hex_of(const unsigned char *h, char hex[LOOM_HASH_HEX_LEN + 1])
{
    sodium_bin2hex(hex, LOOM_HASH_HEX_LEN + 1, h, HASH_BYTES);
}

void loom_hash_bytes(const void *data, size_t len, char hex[LOOM_HASH_HEX_LEN + 1])
{
    unsigned char h[HASH_BYTES];
    crypto_generichash(h, sizeof h, data, len, NULL, 0);
    hex_of(h, hex);
}

int loom_hash_fd(int fd, char hex[LOOM_HASH_HEX_LEN + 1], uint64_t *size)
{
    crypto_generichash_state st;
    unsigned char h[HASH_BYTES];
    unsigned char *buf = loom_xmalloc(READ_CHUNK);
    uint64_t total = 0;
    crypto_generichash_init(&st, NULL, 0, sizeof h);
    for (;;) {
        ssize_t n = read(fd, buf, READ_CHUNK);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            free(buf);
            return LOOM_EIO;
        }
        if (n == 0) break;
        crypto_generichash_update(&st, buf, (size_t)n);
        total += (uint64_t)n;
    }
    free(buf);
    crypto_generichash_final(&st, h, sizeof h);
    hex_of(h, hex);
    if (size) *size = total;
    return 0;
}

/* --- paths ---------------------------------------------------------------- */

/* Length of the UTF-8 sequence at s, or 0 if it is not valid (overlong
 * forms, surrogates and code points past U+10FFFF included). */
static size_t utf8_len(const unsigned char *s)
{
    if (s[0] < 0x80) return 1;
    size_t n = s[0] >= 0xf0 ? 4 : s[0] >= 0xe0 ? 3 : s[0] >= 0xc2 ? 2 : 0;
    if (n == 0 || s[0] > 0xf4) return 0;
    for (size_t i = 1; i < n; i++)
        if ((s[i] & 0xc0) != 0x80) return 0;
    if (n == 3 && s[0] == 0xe0 && s[1] < 0xa0) return 0;  /* overlong */
    if (n == 3 && s[0] == 0xed && s[1] >= 0xa0) return 0; /* surrogate */
    if (n == 4 && s[0] == 0xf0 && s[1] < 0x90) return 0;  /* overlong */
    if (n == 4 && s[0] == 0xf4 && s[1] >= 0x90) return 0; /* > U+10FFFF */
    return n;
}

static int check_segment(const char *seg, size_t len, const char *path, char *why, size_t whylen)
{
    if (len == 0) FAIL(LOOM_EINVAL, "\"%s\": empty path segment", path);
    if ((len == 1 && seg[0] == '.') || (len == 2 && seg[0] == '.' && seg[1] == '.'))
        FAIL(LOOM_EINVAL, "\"%s\": \"%.*s\" is not allowed in a path", path, (int)len, seg);
    return 0;
}

int loom_bundle_path_check(const char *path, char *why, size_t whylen)
{
    if (!path || !*path) FAIL(LOOM_EINVAL, "empty path");
    size_t len = strlen(path);
    if (len > LOOM_BUNDLE_PATH_MAX)
        FAIL(LOOM_EINVAL, "\"%.64s...\": path longer than %d bytes", path, LOOM_BUNDLE_PATH_MAX);
    if (path[0] == '/') FAIL(LOOM_EINVAL, "\"%s\": absolute path", path);
    size_t depth = 0;
    const char *seg = path;
    for (const unsigned char *p = (const unsigned char *)path;;) {
        if (*p == '/' || *p == '\0') {
            int rc = check_segment(seg, (size_t)((const char *)p - seg), path, why, whylen);
            if (rc) return rc;
            if (++depth > LOOM_BUNDLE_DEPTH_MAX)
                FAIL(LOOM_EINVAL, "\"%s\": nested deeper than %d", path, LOOM_BUNDLE_DEPTH_MAX);
            if (*p == '\0') break;
            seg = (const char *)++p;
            continue;
        }
        if (*p < 0x20 || *p == 0x7f)
            FAIL(LOOM_EINVAL, "\"%s\": control character 0x%02x in a path", path, *p);
        size_t n = utf8_len(p);
        if (n == 0) FAIL(LOOM_EINVAL, "\"%s\": not valid UTF-8", path);
        p += n;
    }
    return 0;
}

/* --- manifests ------------------------------------------------------------ */

static uint32_t norm_mode(uint32_t mode)
{
    return (mode & 0100) ? 0755 : 0644;
}

void loom_manifest_add(loom_manifest_t *m, const char *path, uint32_t mode, uint64_t size,
                       const char *hash)
{
    if (m->n == m->cap) {
        m->cap = m->cap ? m->cap * 2 : 64;
        m->files = loom_xrealloc(m->files, m->cap * sizeof *m->files);
    }
    loom_bundle_file_t *f = &m->files[m->n++];
    f->path = loom_xstrdup(path);
    f->mode = norm_mode(mode);
    f->size = size;
    snprintf(f->hash, sizeof f->hash, "%s", hash ? hash : "");
}

static int by_path(const void *a, const void *b)
{
    return strcmp(((const loom_bundle_file_t *)a)->path, ((const loom_bundle_file_t *)b)->path);
}

void loom_manifest_sort(loom_manifest_t *m)
{
    if (m->n > 1) qsort(m->files, m->n, sizeof *m->files, by_path);
}

const loom_bundle_file_t *loom_manifest_find(const loom_manifest_t *m, const char *path)
{
    loom_bundle_file_t key = {.path = (char *)path};
    return m->n ? bsearch(&key, m->files, m->n, sizeof *m->files, by_path) : NULL;
}

void loom_manifest_free(loom_manifest_t *m)
{
    for (size_t i = 0; i < m->n; i++) free(m->files[i].path);
    free(m->files);
    memset(m, 0, sizeof *m);
}

/* A path that is also a folder of another ("a" and "a/b") cannot be
 * unpacked. Each parent of each path is looked up among the files. */
static int check_folders(const loom_manifest_t *m, char *why, size_t whylen)
{
    char buf[LOOM_BUNDLE_PATH_MAX + 1];
    for (size_t i = 0; i < m->n; i++) {
        snprintf(buf, sizeof buf, "%s", m->files[i].path);
        for (char *slash = strrchr(buf, '/'); slash; slash = strrchr(buf, '/')) {
            *slash = '\0';
            if (loom_manifest_find(m, buf))
                FAIL(LOOM_EINVAL, "\"%s\" is a file and also the folder of \"%s\"", buf,
                     m->files[i].path);
        }
    }
    return 0;
}

static int check_manifest(const loom_manifest_t *m, char *why, size_t whylen)
{
    if (m->n > LOOM_MANIFEST_MAX_FILES)
        FAIL(LOOM_EINVAL, "%zu files, more than %d", m->n, LOOM_MANIFEST_MAX_FILES);
    for (size_t i = 0; i < m->n; i++) {
        const loom_bundle_file_t *f = &m->files[i];
        int rc = loom_bundle_path_check(f->path, why, whylen);
        if (rc) return rc;
        if (!loom_hash_hex_valid(f->hash))
            FAIL(LOOM_EINVAL, "\"%s\": hash is not 64 lowercase hex digits", f->path);
        if (f->mode != 0644 && f->mode != 0755)
            FAIL(LOOM_EINVAL, "\"%s\": mode %o is neither 644 nor 755", f->path, f->mode);
        if (i > 0 && strcmp(m->files[i - 1].path, f->path) >= 0)
            FAIL(LOOM_EINVAL, "\"%s\" %s", f->path,
                 strcmp(m->files[i - 1].path, f->path) == 0 ? "is listed twice"
                                                            : "is out of order (sort by path)");
    }
    return check_folders(m, why, whylen);
}

static void put_string(loom_buf_t *b, const char *s)
{
    loom_buf_append(b, "\"", 1);
    for (const char *p = s; *p;) {
        size_t plain = 0;
        while (p[plain] && p[plain] != '"' && p[plain] != '\\' && (unsigned char)p[plain] >= 0x20)
            plain++;
        loom_buf_append(b, p, plain);
        p += plain;
        if (!*p) break;
        unsigned char c = (unsigned char)*p++;
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            loom_buf_append(b, esc, 2);
        } else {
            loom_buf_printf(b, "\\u%04x", c);
        }
    }
    loom_buf_append(b, "\"", 1);
}

int loom_manifest_encode(const loom_manifest_t *m, char **out, size_t *len, char *why,
                         size_t whylen)
{
    int rc = check_manifest(m, why, whylen);
    if (rc) return rc;
    loom_buf_t b = {0};
    loom_buf_printf(&b, "{\"version\":%d,\"files\":[", LOOM_MANIFEST_VERSION);
    for (size_t i = 0; i < m->n; i++) {
        const loom_bundle_file_t *f = &m->files[i];
        loom_buf_puts(&b, i ? ",{\"path\":" : "{\"path\":");
        put_string(&b, f->path);
        loom_buf_printf(&b, ",\"mode\":%u,\"size\":%llu,\"hash\":\"%s\"}", f->mode,
                        (unsigned long long)f->size, f->hash);
    }
    loom_buf_puts(&b, "]}");
    *len = b.len;
    *out = loom_buf_steal(&b);
    return 0;
}

/* One entry of "files": exactly path, mode, size and hash. */
static int parse_file(json_t *jf, size_t i, loom_manifest_t *m, char *why, size_t whylen)
{
    json_t *jp = json_object_get(jf, "path"), *jm = json_object_get(jf, "mode");
    json_t *js = json_object_get(jf, "size"), *jh = json_object_get(jf, "hash");
    if (!json_is_object(jf) || json_object_size(jf) != 4 || !json_is_string(jp) ||
        !json_is_integer(jm) || !json_is_integer(js) || !json_is_string(jh))
        FAIL(LOOM_EPARSE, "files[%zu] must be {\"path\", \"mode\", \"size\", \"hash\"}", i);
    if (strlen(json_string_value(jp)) != json_string_length(jp))
        FAIL(LOOM_EPARSE, "files[%zu]: NUL in path", i);
    if (json_integer_value(js) < 0) FAIL(LOOM_EPARSE, "files[%zu]: negative size", i);
    json_int_t mode = json_integer_value(jm);
    if (mode != 0644 && mode != 0755)
        FAIL(LOOM_EPARSE, "files[%zu]: mode must be 420 (0644) or 493 (0755)", i);
    if (!loom_hash_hex_valid(json_string_value(jh)))
        FAIL(LOOM_EPARSE, "files[%zu]: hash is not 64 lowercase hex digits", i);
    loom_manifest_add(m, json_string_value(jp), (uint32_t)mode, (uint64_t)json_integer_value(js),
                      json_string_value(jh));
    return 0;
}

static int parse_json(json_t *root, loom_manifest_t *m, char *why, size_t whylen)
{
    json_t *jv = json_object_get(root, "version"), *jfiles = json_object_get(root, "files");
    if (!json_is_object(root) || json_object_size(root) != 2 || !json_is_integer(jv) ||
        !json_is_array(jfiles))
        FAIL(LOOM_EPARSE, "a manifest is {\"version\": 1, \"files\": [...]}");
    if (json_integer_value(jv) != LOOM_MANIFEST_VERSION)
        FAIL(LOOM_EPARSE, "manifest version %lld is not supported (expected %d)",
             (long long)json_integer_value(jv), LOOM_MANIFEST_VERSION);
    if (json_array_size(jfiles) > LOOM_MANIFEST_MAX_FILES)
        FAIL(LOOM_ETOOBIG, "more than %d files", LOOM_MANIFEST_MAX_FILES);
    size_t i;
    json_t *jf;
    json_array_foreach(jfiles, i, jf)
    {
        int rc = parse_file(jf, i, m, why, whylen);
        if (rc) return rc;
    }
    return 0;
}

int loom_manifest_parse(const char *data, size_t len, loom_manifest_t *out, char *why,
                        size_t whylen)
{
    memset(out, 0, sizeof *out);
    if (len > LOOM_MANIFEST_MAX_BYTES)
        FAIL(LOOM_ETOOBIG, "manifest of %zu bytes exceeds %u", len, LOOM_MANIFEST_MAX_BYTES);
    json_error_t jerr;
    json_t *root = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) FAIL(LOOM_EPARSE, "not JSON: %d:%d: %s", jerr.line, jerr.column, jerr.text);
    int rc = parse_json(root, out, why, whylen);
    json_decref(root);
    char *canon = NULL;
    size_t clen = 0;
    if (rc == 0 && loom_manifest_encode(out, &canon, &clen, why, whylen) != 0) rc = LOOM_EPARSE;
    if (rc == 0 && (clen != len || memcmp(canon, data, len) != 0)) {
        snprintf(why, whylen, "not in canonical form (compact, keys in order, sorted by path)");
        rc = LOOM_EPARSE;
    }
    free(canon);
    if (rc) loom_manifest_free(out);
    return rc;
}
