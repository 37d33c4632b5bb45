/* Masks secret values in a task's output before it leaves the agent: each
 * occurrence becomes "***", also when a value is split across two reads.
 * Per stream, the bytes at the end of a read that could begin a value are
 * held back (at most the longest value less one byte) until the next read
 * or the flush at the end shows whether they do. */
#ifndef LOOM_AGENT_MASK_H
#define LOOM_AGENT_MASK_H

#include <stddef.h>
#include <stdint.h>

#include "loom/util.h"

/* Shorter values are not masked: "***" would hide every "a" or "ok". */
#define LOOM_MASK_MIN_LEN 4
#define LOOM_MASK_STREAMS 2
#define LOOM_MASK_TEXT "***"

typedef struct loom_mask loom_mask_t;

loom_mask_t *loom_mask_new(void);
/* Adds a value to mask (copied; ignored when shorter than LOOM_MASK_MIN_LEN). */
void loom_mask_add(loom_mask_t *m, const uint8_t *value, size_t len);
size_t loom_mask_count(const loom_mask_t *m);
/* Appends to out what of stream's bytes (the held-back ones, then data)
 * can be given out now, masked. */
void loom_mask_feed(loom_mask_t *m, int stream, const char *data, size_t len, loom_buf_t *out);
/* Appends the held-back bytes of stream, masked: the stream has ended. */
void loom_mask_flush(loom_mask_t *m, int stream, loom_buf_t *out);
/* Wipes the values and frees. */
void loom_mask_destroy(loom_mask_t **m);

#endif
