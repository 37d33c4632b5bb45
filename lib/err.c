/* Text for the error table in err.h. */
#include "loom/err.h"

const char *loom_strerror(int err)
{
    switch (err) {
    case LOOM_OK:
        return "ok";
#define X(name, msg)                                                                               \
    case LOOM_E##name:                                                                             \
        return msg;
        LOOM_ERR_MAP(X)
#undef X
    default:
        return "unknown error";
    }
}

const char *loom_errname(int err)
{
    switch (err) {
    case LOOM_OK:
        return "LOOM_OK";
#define X(name, msg)                                                                               \
    case LOOM_E##name:                                                                             \
        return "LOOM_E" #name;
        LOOM_ERR_MAP(X)
#undef X
    default:
        return "LOOM_EUNKNOWN";
    }
}
