/* One error table for all of loom: every fallible function returns 0 or a
 * negative loom error from this list (libuv's UV_ERRNO_MAP pattern). Codes
 * from libraries are translated once, in the module that wraps the library. */
#ifndef LOOM_ERR_H
#define LOOM_ERR_H

#define LOOM_ERR_MAP(X)                                                                            \
    X(NOMEM, "out of memory")                                                                      \
    X(INVAL, "invalid argument")                                                                   \
    X(PARSE, "malformed input")                                                                    \
    X(NOTFOUND, "not found")                                                                       \
    X(EXISTS, "already exists")                                                                    \
    X(IO, "input/output error")                                                                    \
    X(DB, "database error")                                                                        \
    X(NET, "network error")                                                                        \
    X(PROTO, "protocol error")                                                                     \
    X(TOOBIG, "too large")                                                                         \
    X(STATE, "not allowed in the current state")                                                   \
    X(FENCED, "attempt is no longer current")                                                      \
    X(SPAWN, "could not start process")                                                            \
    X(TIMEOUT, "timed out")                                                                        \
    X(CANCELLED, "cancelled")                                                                      \
    X(INTERNAL, "internal error")

typedef enum {
    LOOM_OK = 0,
#define LOOM_ERR_ENUM(name, msg) LOOM_E##name,
    LOOM_E_FIRST_ = -1000,
    LOOM_ERR_MAP(LOOM_ERR_ENUM)
#undef LOOM_ERR_ENUM
} loom_err;

/* Human-readable text for a loom error (or "unknown error"). */
const char *loom_strerror(int err);
/* The symbolic name, e.g. "LOOM_ENOTFOUND". */
const char *loom_errname(int err);

#endif
