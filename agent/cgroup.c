/* The agent's own cgroups: which folders they are, found the way the kernel
 * describes them (/proc/self/cgroup for the paths, /proc/self/mountinfo for
 * where each hierarchy is mounted and from which subtree), and the few file
 * operations the rest of the agent needs on them. */
#include "cgroup.h"

#include "loom/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SELF_MAX (64 * 1024)
#define MOUNTINFO_MAX (4 * 1024 * 1024)

static char *read_text(const char *root, const char *path, size_t max)
{
    char *full = loom_xasprintf("%s%s", root, path);
    char *text = NULL;
    if (loom_read_file(full, max, &text, NULL) != 0) text = NULL;
    free(full);
    return text;
}

/* Whether the comma-separated list contains word. */
static bool comma_has(const char *list, size_t len, const char *word)
{
    size_t wlen = strlen(word);
    const char *p = list, *end = list + len;
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        size_t n = comma ? (size_t)(comma - p) : (size_t)(end - p);
        if (n == wlen && memcmp(p, word, n) == 0) return true;
        p += n + 1;
    }
    return false;
}

bool cgroup_list_has(const char *list, const char *word)
{
    size_t wlen = strlen(word);
    for (const char *p = list; p && *p;) {
        p += strspn(p, " \t\n");
        size_t n = strcspn(p, " \t\n");
        if (n == wlen && memcmp(p, word, n) == 0) return true;
        p += n;
    }
    return false;
}

void cgroup_parse_self(const char *text, char **v2, char **memory, char **cpu)
{
    *v2 = *memory = *cpu = NULL;
    for (const char *line = text; line && *line;) {
        const char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        /* "ID:CONTROLLERS:PATH"; the path may itself contain ':' */
        const char *c1 = memchr(line, ':', len);
        const char *c2 = c1 ? memchr(c1 + 1, ':', len - (size_t)(c1 + 1 - line)) : NULL;
        if (c2 && c2[1] == '/') {
            const char *ctl = c1 + 1;
            size_t ctl_len = (size_t)(c2 - ctl);
            char *path = loom_xstrndup(c2 + 1, len - (size_t)(c2 + 1 - line));
            char **slot = NULL;
            if (ctl_len == 0 && strncmp(line, "0:", 2) == 0)
                slot = v2;
            else if (comma_has(ctl, ctl_len, "memory"))
                slot = memory;
            else if (comma_has(ctl, ctl_len, "cpu"))
                slot = cpu;
            if (slot && !*slot)
                *slot = path;
            else
                free(path);
        }
        line = nl ? nl + 1 : NULL;
    }
}

/* mountinfo escapes space, tab, newline and backslash as \ooo. */
static char *unescape(const char *s, size_t len)
{
    char *out = loom_xmalloc(len + 1);
    size_t k = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '\\' && i + 3 < len && s[i + 1] >= '0' && s[i + 1] <= '3') {
            out[k++] = (char)((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0'));
            i += 3;
        } else {
            out[k++] = s[i];
        }
    }
    out[k] = '\0';
    return out;
}

/* The part of path below the mount's root, or NULL if the mount does not
 * show that part of the hierarchy. */
static const char *below(const char *mount_root, const char *path)
{
    if (strcmp(mount_root, "/") == 0) return strcmp(path, "/") == 0 ? "" : path;
    size_t n = strlen(mount_root);
    if (strncmp(path, mount_root, n) != 0 || (path[n] != '/' && path[n] != '\0')) return NULL;
    return path + n;
}

typedef struct {
    char *fields[6]; /* 3: root, 4: mount point; after " - ": 0 type, 2 super options */
    char *type, *super;
} mount_t;

/* The next space-separated word of *p (NUL-terminated in place), or NULL. */
static char *next_word(char **p)
{
    char *s = *p + strspn(*p, " ");
    if (!*s) return NULL;
    size_t n = strcspn(s, " ");
    *p = s[n] ? s + n + 1 : s + n;
    s[n] = '\0';
    return s;
}

static bool split_mount(char *line, mount_t *m)
{
    memset(m, 0, sizeof *m);
    char *word;
    for (int i = 0; (word = next_word(&line)) != NULL; i++) {
        if (i < 6) m->fields[i] = word;
        if (i >= 6 && strcmp(word, "-") == 0) {
            m->type = next_word(&line);
            if (m->type && next_word(&line)) m->super = next_word(&line);
            break;
        }
    }
    return m->fields[4] && m->type && m->super;
}

/* Sets *dir and *mount from the first mount that shows path. */
static void resolve(const char *root, const mount_t *m, const char *path, char **dir, char **mount)
{
    if (!path || *dir) return;
    char *mroot = unescape(m->fields[3], strlen(m->fields[3]));
    const char *rel = below(mroot, path);
    if (rel) {
        char *point = unescape(m->fields[4], strlen(m->fields[4]));
        *mount = loom_xasprintf("%s%s", root, point);
        *dir = loom_xasprintf("%s%s", *mount, rel);
        free(point);
    }
    free(mroot);
}

void cgroup_locate(const char *root, cgroup_where_t *w)
{
    char *v2, *mem, *cpu;
    memset(w, 0, sizeof *w);
    if (!root) root = "";
    char *self = read_text(root, "/proc/self/cgroup", SELF_MAX);
    char *info = self ? read_text(root, "/proc/self/mountinfo", MOUNTINFO_MAX) : NULL;
    cgroup_parse_self(self, &v2, &mem, &cpu);
    for (char *line = info, *nl; line && *line; line = nl ? nl + 1 : NULL) {
        nl = strchr(line, '\n');
        if (nl) *nl = '\0';
        mount_t m;
        if (!split_mount(line, &m)) continue;
        size_t slen = strlen(m.super);
        if (strcmp(m.type, "cgroup2") == 0) {
            resolve(root, &m, v2, &w->v2, &w->v2_mount);
        } else if (strcmp(m.type, "cgroup") == 0) {
            if (comma_has(m.super, slen, "memory"))
                resolve(root, &m, mem, &w->v1_memory, &w->v1_memory_mount);
            if (comma_has(m.super, slen, "cpu"))
                resolve(root, &m, cpu, &w->v1_cpu, &w->v1_cpu_mount);
        }
    }
    free(v2);
    free(mem);
    free(cpu);
    free(self);
    free(info);
}

void cgroup_where_free(cgroup_where_t *w)
{
    free(w->v2);
    free(w->v2_mount);
    free(w->v1_memory);
    free(w->v1_memory_mount);
    free(w->v1_cpu);
    free(w->v1_cpu_mount);
    memset(w, 0, sizeof *w);
}

int cgroup_read(const char *dir, const char *name, char *buf, size_t len)
{
    char *path = loom_xasprintf("%s/%s", dir, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    free(path);
    if (fd < 0) return -errno;
    ssize_t n;
    do {
        n = read(fd, buf, len - 1);
    } while (n < 0 && errno == EINTR);
    int err = n < 0 ? -errno : 0;
    close(fd);
    if (err) return err;
    while (n > 0 && buf[n - 1] == '\n') n--;
    buf[n] = '\0';
    return 0;
}

int cgroup_write(const char *dir, const char *name, const char *value)
{
    char *path = loom_xasprintf("%s/%s", dir, name);
    /* O_CREAT is harmless on cgroupfs (the file exists or cannot be made)
     * and lets the tests' fake trees record what was written. */
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    free(path);
    if (fd < 0) return -errno;
    size_t len = strlen(value);
    ssize_t n;
    do {
        n = write(fd, value, len);
    } while (n < 0 && errno == EINTR);
    int err = n < 0 ? -errno : (size_t)n != len ? -EIO : 0;
    if (close(fd) != 0 && !err) err = -errno;
    return err;
}

int cgroup_read_key(const char *dir, const char *name, const char *key, uint64_t *out)
{
    char buf[4096];
    int rc = cgroup_read(dir, name, buf, sizeof buf);
    if (rc != 0) return rc;
    size_t klen = strlen(key);
    for (const char *line = buf; line && *line;) {
        if (strncmp(line, key, klen) == 0 && line[klen] == ' ') {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(line + klen + 1, &end, 10);
            if (errno || end == line + klen + 1) return -EINVAL;
            *out = v;
            return 0;
        }
        line = strchr(line, '\n');
        if (line) line++;
    }
    return -ENOENT;
}

bool cgroup_has(const char *dir, const char *name)
{
    char *path = loom_xasprintf("%s/%s", dir, name);
    bool ok = access(path, F_OK) == 0;
    free(path);
    return ok;
}
