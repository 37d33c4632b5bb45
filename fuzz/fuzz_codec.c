/* The wire envelope and, through it, every message body: what loomd reads
 * from any agent and an agent reads from loomd. A message that decodes must
 * encode again and decode to the same kind (the validation is stable). */
#include "loom/codec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char why[256];
    loom_msg_t *m = NULL;
    if (loom_codec_decode(data, size, &m, why, sizeof why) != 0) {
        if (m || !why[0]) abort(); /* a failure allocates nothing and says why */
        return 0;
    }
    (void)loom_codec_kind_name(m->body_case);
    uint8_t *buf = NULL;
    size_t len = 0;
    if (loom_codec_encode(m, &buf, &len) == 0) {
        loom_msg_t *again = NULL;
        if (loom_codec_decode(buf, len, &again, why, sizeof why) != 0) {
            fprintf(stderr, "re-decode: %s\n", why);
            abort();
        }
        if (again->body_case != m->body_case) abort();
        loom_codec_free(again);
        free(buf);
    }
    loom_codec_free(m);
    return 0;
}
