/* The wire envelope and, through it, every message body: what loomd reads
 * from any agent and an agent reads from loomd. A message that decodes must
 * encode again and decode to the same kind (the validation is stable).
 *
 * An input whose first byte has its top bit set is an envelope as is; else
 * the first byte picks a body kind (so every message decoder is reached
 * even when mutations break the envelope's framing) and the rest is that
 * body's bytes, wrapped here in a version-1 envelope. */
#include "loom/codec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FIRST_KIND 10 /* Envelope.hello */
#define N_KINDS 15    /* hello .. put_ack */

static size_t put_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    do {
        p[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    return n;
}

static void check(const uint8_t *data, size_t size)
{
    char why[256];
    loom_msg_t *m = NULL;
    if (loom_codec_decode(data, size, &m, why, sizeof why) != 0) {
        if (m || !why[0]) abort(); /* a failure allocates nothing and says why */
        return;
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
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0 || (data[0] & 0x80)) {
        check(size ? data + 1 : data, size ? size - 1 : 0);
        return 0;
    }
    uint32_t field = FIRST_KIND + data[0] % N_KINDS;
    uint8_t *env = malloc(size + 16);
    size_t n = 0;
    env[n++] = 0x08; /* version = 1 */
    env[n++] = 0x01;
    n += put_varint(env + n, (uint64_t)field << 3 | 2);
    n += put_varint(env + n, size - 1);
    memcpy(env + n, data + 1, size - 1);
    check(env, n + size - 1);
    free(env);
    return 0;
}
