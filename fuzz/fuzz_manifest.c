/* Code bundle manifests, which an agent parses before placing files: a
 * manifest that parses is canonical, so encoding it again gives the same
 * bytes, and every path in it is one the path rules accept. */
#include "loom/bundle.h"
#include "loom/codec.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    loom_manifest_t m = {0};
    char why[256];
    if (loom_manifest_parse((const char *)data, size, &m, why, sizeof why) != 0) {
        loom_manifest_free(&m);
        return 0;
    }
    char *again = NULL;
    size_t len = 0;
    if (loom_manifest_encode(&m, &again, &len, why, sizeof why) != 0) abort();
    if (len != size || memcmp(again, data, size) != 0) abort();
    free(again);
    for (size_t i = 0; i < m.n; i++) {
        const char *p = m.files[i].path;
        if (loom_bundle_path_check(p, why, sizeof why) != 0) abort();
        if (!loom_codec_relpath_ok(p)) abort();
        if (loom_manifest_find(&m, p) != &m.files[i]) abort();
    }
    loom_manifest_free(&m);
    return 0;
}
