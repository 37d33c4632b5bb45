/* The user a task runs as and the environment it starts with; see
 * task_user.h. */
#include "task_user.h"

#include "agent_int.h"

#include "loom/log.h"

#include "loom/err.h"
#include "loom/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

extern char **environ;

#define FAIL(code, ...)                                                                            \
    do {                                                                                           \
        snprintf(why, whylen, __VA_ARGS__);                                                        \
        return (code);                                                                             \
    } while (0)

int task_user_lookup(const char *name, task_user_t *out, char *why, size_t whylen)
{
    memset(out, 0, sizeof *out);
    long bufsize = sysconf(_SC_GETPW_R_SIZE_MAX);
    size_t len = bufsize > 0 ? (size_t)bufsize : 16384;
    char *buf = loom_xmalloc(len);
    struct passwd pw, *res = NULL;
    int err = getpwnam_r(name, &pw, buf, len, &res);
    if (err || !res) {
        free(buf);
        FAIL(LOOM_EINVAL, "no user \"%s\" on this host%s%s", name, err ? ": " : "",
             err ? strerror(err) : "");
    }
    out->name = loom_xstrdup(pw.pw_name);
    out->home = loom_xstrdup(pw.pw_dir && *pw.pw_dir ? pw.pw_dir : "/");
    out->uid = pw.pw_uid;
    out->gid = pw.pw_gid;
    out->other = pw.pw_uid != geteuid();
    int n = 32;
    for (;;) {
        out->groups = loom_xrealloc(out->groups, (size_t)n * sizeof *out->groups);
        int got = n;
        if (getgrouplist(pw.pw_name, pw.pw_gid, out->groups, &got) >= 0) {
            out->n_groups = (size_t)got;
            break;
        }
        if (got <= n || got > 65536) { /* cannot say how many: just the primary group */
            out->groups[0] = pw.pw_gid;
            out->n_groups = 1;
            break;
        }
        n = got;
    }
    free(buf);
    return 0;
}

void task_user_free(task_user_t *u)
{
    if (!u) return;
    free(u->name);
    free(u->home);
    free(u->groups);
    memset(u, 0, sizeof *u);
}

static bool in_groups(const task_user_t *u, gid_t g)
{
    if (g == u->gid) return true;
    for (size_t i = 0; i < u->n_groups; i++)
        if (u->groups[i] == g) return true;
    return false;
}

/* Whether u may search the folder path (mode bits only; no ACLs). */
static int check_one(const task_user_t *u, const char *path, const char *dir, char *why,
                     size_t whylen)
{
    struct stat st;
    if (stat(path, &st) != 0)
        FAIL(LOOM_EINVAL, "user \"%s\" cannot reach %s: %s: %s", u->name, dir, path,
             strerror(errno));
    mode_t bit = st.st_uid == u->uid ? S_IXUSR : in_groups(u, st.st_gid) ? S_IXGRP : S_IXOTH;
    if (!(st.st_mode & bit))
        FAIL(LOOM_EINVAL,
             "user \"%s\" cannot reach %s: %s is mode %04o, owner %u:%u; choose a --work-dir "
             "that user can reach",
             u->name, dir, path, (unsigned)(st.st_mode & 07777), (unsigned)st.st_uid,
             (unsigned)st.st_gid);
    return 0;
}

int task_user_check_reach(const task_user_t *u, const char *dir, char *why, size_t whylen)
{
    if (u->uid == 0) return 0;
    int rc = check_one(u, "/", dir, why, whylen);
    char *path = loom_xstrdup(dir);
    size_t len = strlen(path);
    for (size_t i = 1; rc == 0 && i <= len; i++) {
        if (i < len && path[i] != '/') continue;
        char saved = path[i];
        path[i] = '\0';
        rc = check_one(u, path, dir, why, whylen);
        path[i] = saved;
    }
    free(path);
    return rc;
}

static int chown_beneath(int dirfd, uid_t uid, gid_t gid, int depth)
{
    if (depth > 256) return -ELOOP;
    int fd = dup(dirfd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0) close(fd);
        return -errno;
    }
    int rc = 0;
    for (struct dirent *e; rc == 0 && (e = readdir(d)) != NULL;) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        if (fchownat(dirfd, e->d_name, uid, gid, AT_SYMLINK_NOFOLLOW) != 0) {
            rc = -errno;
            break;
        }
        int sub = openat(dirfd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (sub >= 0) {
            rc = chown_beneath(sub, uid, gid, depth + 1);
            close(sub);
        }
    }
    closedir(d);
    return rc;
}

int task_user_chown_tree(const char *dir, uid_t uid, gid_t gid, char *why, size_t whylen)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) FAIL(LOOM_EIO, "cannot open %s: %s", dir, strerror(errno));
    int rc = fchown(fd, uid, gid) == 0 ? chown_beneath(fd, uid, gid, 0) : -errno;
    close(fd);
    if (rc) FAIL(LOOM_EIO, "cannot give %s to uid %u: %s", dir, (unsigned)uid, strerror(-rc));
    return 0;
}

/* --- environment ----------------------------------------------------------- */

static const char *const allowed[] = {"PATH", "LANG", "LANGUAGE", "TZ", "TMPDIR", "LC_*"};

static bool name_matches(const char *entry, const char *pattern)
{
    size_t n = strcspn(entry, "=");
    size_t p = strlen(pattern);
    if (p && pattern[p - 1] == '*') return n >= p - 1 && strncmp(entry, pattern, p - 1) == 0;
    return n == p && strncmp(entry, pattern, n) == 0;
}

bool task_env_pattern_ok(const char *s)
{
    if (!s || !*s || (*s >= '0' && *s <= '9') || strlen(s) > 255) return false;
    size_t n = strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_");
    return s[n] == '\0' || (s[n] == '*' && s[n + 1] == '\0');
}

char **task_env_base(const task_user_t *u, const char *const *pass, size_t n_pass)
{
    size_t n_env = 0;
    while (environ && environ[n_env]) n_env++;
    char **env = loom_xcalloc(n_env + 5, sizeof *env);
    size_t k = 0;
    bool have_path = false;
    static const char *const who[] = {"HOME", "USER", "LOGNAME"};
    bool have_who[3] = {false, false, false};
    bool mine = !u || !u->other;
    for (size_t i = 0; i < n_env; i++) {
        const char *e = environ[i];
        if (!strchr(e, '=')) continue;
        bool ok = false;
        for (size_t j = 0; !ok && j < sizeof allowed / sizeof *allowed; j++)
            ok = name_matches(e, allowed[j]);
        for (size_t j = 0; !ok && j < n_pass; j++) ok = name_matches(e, pass[j]);
        /* Who the task is: another user's own (added below), else ours. */
        for (size_t j = 0; j < 3; j++)
            if (name_matches(e, who[j])) {
                ok = mine;
                have_who[j] = mine;
            }
        if (!ok) continue;
        have_path = have_path || name_matches(e, "PATH");
        env[k++] = loom_xstrdup(e);
    }
    if (!have_path) env[k++] = loom_xstrdup("PATH=/usr/local/bin:/usr/bin:/bin");
    for (size_t j = 0; u && j < 3; j++)
        if (!have_who[j]) env[k++] = loom_xasprintf("%s=%s", who[j], j == 0 ? u->home : u->name);
    env[k] = NULL;
    return env;
}

int task_user_enter(const task_user_t *u)
{
    if (setgroups(u->n_groups, u->groups) != 0) return -errno;
    if (setgid(u->gid) != 0) return -errno;
    if (setuid(u->uid) != 0) return -errno;
    /* Make sure it cannot be undone (setuid as root sets all three ids). */
    if (u->uid != 0 && setuid(0) == 0) return -EPERM;
    return 0;
}

/* --- the agent's side ------------------------------------------------------ */

void agent_task_user_config(loom_agent_t *a, const loom_agent_config_t *cfg)
{
    a->run_as_name = cfg->run_as ? loom_xstrdup(cfg->run_as) : NULL;
    a->pass_env = loom_xcalloc(cfg->n_pass_env + 1, sizeof *a->pass_env);
    for (size_t i = 0; i < cfg->n_pass_env; i++) a->pass_env[i] = loom_xstrdup(cfg->pass_env[i]);
    a->n_pass_env = cfg->n_pass_env;
}

int agent_task_user_start(loom_agent_t *a)
{
    char why[512];
    for (size_t i = 0; i < a->n_pass_env; i++)
        if (!task_env_pattern_ok(a->pass_env[i])) {
            LOG_ERROR("--pass-env \"%s\": expected a variable name, or a prefix ending in '*'",
                      a->pass_env[i]);
            return LOOM_EINVAL;
        }
    if (!a->run_as_name) return 0;
    task_user_t *u = loom_xcalloc(1, sizeof *u);
    if (task_user_lookup(a->run_as_name, u, why, sizeof why) != 0) {
        free(u);
        LOG_ERROR("--run-as: %s", why);
        return LOOM_EINVAL;
    }
    a->run_as = u;
    if (!u->other) return 0;
    if (geteuid() != 0) {
        LOG_ERROR("--run-as %s: only an agent running as root can run tasks as another user",
                  u->name);
        return LOOM_EINVAL;
    }
    /* The user must get through the work folder to its attempt folders (but
     * not list them, nor reach the cache, which stay the agent's). */
    char *attempts = loom_xasprintf("%s/attempts", a->work_dir);
    int rc = chmod(a->work_dir, 0711) == 0 && chmod(attempts, 0711) == 0 ? 0 : LOOM_EIO;
    if (rc) LOG_ERROR("cannot open %s to user %s: %s", attempts, u->name, strerror(errno));
    if (rc == 0 && task_user_check_reach(u, attempts, why, sizeof why) != 0) {
        LOG_ERROR("--run-as: %s", why);
        rc = LOOM_EINVAL;
    }
    free(attempts);
    if (rc == 0)
        LOG_INFO("tasks run as user=%s uid=%u gid=%u", u->name, (unsigned)u->uid, (unsigned)u->gid);
    return rc;
}

void agent_task_user_free(loom_agent_t *a)
{
    if (a->run_as) task_user_free(a->run_as);
    free(a->run_as);
    a->run_as = NULL;
    free(a->run_as_name);
    a->run_as_name = NULL;
    for (size_t i = 0; i < a->n_pass_env; i++) free(a->pass_env[i]);
    free(a->pass_env);
    a->pass_env = NULL;
}

char **agent_task_env(const loom_agent_t *a, char **env)
{
    /* A GPU-less agent leaves the GPU variables as its own environment has
     * them (gpu_env in attempt.c sets them only on an agent with GPUs). */
    static const char *const gpu_vars[] = {"CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES",
                                           "CUDA_DEVICE_ORDER"};
    size_t n = a->n_pass_env, extra = a->gpus.n == 0 ? 3 : 0;
    const char **pass = loom_xcalloc(n + extra + 1, sizeof *pass);
    for (size_t i = 0; i < n; i++) pass[i] = a->pass_env[i];
    for (size_t i = 0; i < extra; i++) pass[n + i] = gpu_vars[i];
    char **base = task_env_base(a->run_as, pass, n + extra);
    free(pass);
    size_t nb = 0, ne = 0;
    while (base[nb]) nb++;
    while (env && env[ne]) ne++;
    base = loom_xrealloc(base, (nb + ne + 1) * sizeof *base);
    for (size_t i = 0; i < ne; i++) base[nb + i] = env[i];
    base[nb + ne] = NULL;
    free(env);
    return base;
}

int agent_task_dir_give(const loom_agent_t *a, const char *dir, bool tree, char *why, size_t whylen)
{
    const task_user_t *u = a->run_as;
    if (!u || !u->other) return 0;
    if (tree) return task_user_chown_tree(dir, u->uid, u->gid, why, whylen);
    if (loom_mkdirs(dir, 0700) != 0 || lchown(dir, u->uid, u->gid) != 0)
        FAIL(LOOM_EIO, "cannot give %s to user %s: %s", dir, u->name, strerror(errno));
    return 0;
}
