/* The path rules every path from a message, a manifest or a DAG goes
 * through. Whatever they accept must be relative and confined: no leading
 * '/', no empty, "." or ".." segment, no control byte for the bundle rule. */
#include "loom/bundle.h"
#include "loom/codec.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void confined(const char *p)
{
    if (!*p || *p == '/') abort();
    for (const char *seg = p;;) {
        size_t n = strcspn(seg, "/");
        if (n == 0) abort();
        if (n == 1 && seg[0] == '.') abort();
        if (n == 2 && seg[0] == '.' && seg[1] == '.') abort();
        if (!seg[n]) break;
        seg += n + 1;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 8192) return 0;
    char *p = malloc(size + 1);
    memcpy(p, data, size);
    p[size] = '\0';
    char why[256];
    if (loom_bundle_path_check(p, why, sizeof why) == 0) {
        confined(p);
        for (const char *c = p; *c; c++)
            if ((unsigned char)*c < 0x20 || *c == 0x7f) abort();
        if (!loom_codec_relpath_ok(p)) abort(); /* the bundle rule is the stricter */
    }
    if (loom_codec_relpath_ok(p)) confined(p);
    free(p);
    return 0;
}
