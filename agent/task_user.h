/* Who a task runs as and what environment it gets (the security issue's
 * "tasks" part): the --run-as user (looked up once, at start), the
 * environment allowlist plus --pass-env, and giving an attempt folder to
 * that user. See docs/security.md. */
#ifndef LOOM_AGENT_TASK_USER_H
#define LOOM_AGENT_TASK_USER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct task_user {
    char *name, *home;
    uid_t uid;
    gid_t gid;
    gid_t *groups; /* supplementary groups (initgroups' list), computed up front */
    size_t n_groups;
    bool other; /* not the agent's own user: the child switches before exec */
} task_user_t;

/* Looks name up (getpwnam, getgrouplist). Returns 0, or LOOM_EINVAL with why
 * ("no user \"x\" on this host"). */
int task_user_lookup(const char *name, task_user_t *out, char *why, size_t whylen);
void task_user_free(task_user_t *u);

/* 0 when u may search every folder from / down to dir (mode bits for its
 * uid, gid and groups; root always may), else LOOM_EINVAL with why naming
 * the first folder in the way. */
int task_user_check_reach(const task_user_t *u, const char *dir, char *why, size_t whylen);

/* Gives dir and everything beneath it to uid:gid without following a
 * symbolic link. Returns 0 or LOOM_EIO with why. */
int task_user_chown_tree(const char *dir, uid_t uid, gid_t gid, char *why, size_t whylen);

/* The environment a task starts from, as "NAME=value" strings (each and the
 * NULL-terminated array the caller's): from the agent's environment only
 * the allowlist (PATH, LANG, LANGUAGE, LC_*, TZ, TMPDIR) and the variables
 * that match a --pass-env pattern ("NAME", or "PREFIX*"); then HOME, USER
 * and LOGNAME: u's when u is another user, else the agent's (u's where the
 * agent has none); PATH defaults to /usr/local/bin:/usr/bin:/bin. The DAG's env and
 * loom's own variables are added after these by the caller, and win. */
char **task_env_base(const task_user_t *u, const char *const *pass, size_t n_pass);
/* True when s is a usable --pass-env pattern: a variable name, optionally
 * ending in '*'. */
bool task_env_pattern_ok(const char *s);

/* In a forked child, before exec: switch to u (groups, gid, then uid, which
 * cannot be undone). Only async-signal-safe calls. Returns 0 or -errno. */
int task_user_enter(const task_user_t *u);

#endif
