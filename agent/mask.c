/* Secret masking of task output; see mask.h. For each value a KMP failure
 * table finds, in time linear in the read, the longest end of the buffer
 * that is a beginning of the value: exactly what must be held back. */
#include "mask.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    uint8_t *v;
    size_t len;
    size_t *fail; /* fail[i]: longest proper border of v[0..i] */
} value_t;

struct loom_mask {
    value_t *vals;
    size_t n;
    loom_buf_t carry[LOOM_MASK_STREAMS];
    loom_buf_t work;
};

loom_mask_t *loom_mask_new(void)
{
    return loom_xcalloc(1, sizeof(loom_mask_t));
}

size_t loom_mask_count(const loom_mask_t *m)
{
    return m ? m->n : 0;
}

/* Longest first, so that a value that contains another is masked whole. */
static int by_length_desc(const void *x, const void *y)
{
    const value_t *a = x, *b = y;
    return a->len < b->len ? 1 : a->len > b->len ? -1 : 0;
}

void loom_mask_add(loom_mask_t *m, const uint8_t *value, size_t len)
{
    if (len < LOOM_MASK_MIN_LEN) return;
    for (size_t i = 0; i < m->n; i++)
        if (m->vals[i].len == len && memcmp(m->vals[i].v, value, len) == 0) return;
    m->vals = loom_xrealloc(m->vals, (m->n + 1) * sizeof *m->vals);
    value_t *v = &m->vals[m->n++];
    v->v = loom_xmalloc(len);
    memcpy(v->v, value, len);
    v->len = len;
    v->fail = loom_xcalloc(len, sizeof *v->fail);
    for (size_t i = 1, k = 0; i < len; i++) {
        while (k > 0 && value[i] != value[k]) k = v->fail[k - 1];
        if (value[i] == value[k]) k++;
        v->fail[i] = k;
    }
    qsort(m->vals, m->n, sizeof *m->vals, by_length_desc);
}

/* Length of the longest end of b[0..n) that is a proper beginning of v. */
static size_t partial_tail(const value_t *v, const uint8_t *b, size_t n)
{
    size_t start = n > v->len - 1 ? n - (v->len - 1) : 0, k = 0;
    for (size_t i = start; i < n; i++) {
        while (k > 0 && b[i] != v->v[k]) k = v->fail[k - 1];
        if (b[i] == v->v[k]) k++;
        if (k == v->len) k = v->fail[k - 1];
    }
    return k;
}

/* Masks b[0..n), giving out at most the first limit bytes' worth (a match
 * that starts before limit is given out whole); returns where it stopped. */
static size_t mask_span(const loom_mask_t *m, const uint8_t *b, size_t n, size_t limit,
                        loom_buf_t *out)
{
    size_t i = 0, lit = 0;
    while (i < limit) {
        const value_t *hit = NULL;
        for (size_t j = 0; j < m->n && !hit; j++) {
            const value_t *v = &m->vals[j];
            if (b[i] == v->v[0] && n - i >= v->len && memcmp(b + i, v->v, v->len) == 0) hit = v;
        }
        if (!hit) {
            i++;
            continue;
        }
        loom_buf_append(out, b + lit, i - lit);
        loom_buf_puts(out, LOOM_MASK_TEXT);
        i += hit->len;
        lit = i;
    }
    loom_buf_append(out, b + lit, i - lit);
    return i;
}

void loom_mask_feed(loom_mask_t *m, int stream, const char *data, size_t len, loom_buf_t *out)
{
    if (!m || m->n == 0) {
        loom_buf_append(out, data, len);
        return;
    }
    loom_buf_t *carry = &m->carry[stream];
    const uint8_t *b = (const uint8_t *)data;
    size_t n = len;
    if (carry->len) {
        loom_buf_reset(&m->work);
        loom_buf_append(&m->work, carry->data, carry->len);
        loom_buf_append(&m->work, data, len);
        b = (const uint8_t *)m->work.data;
        n = m->work.len;
    }
    size_t hold = 0;
    for (size_t j = 0; j < m->n; j++) {
        size_t k = partial_tail(&m->vals[j], b, n);
        if (k > hold) hold = k;
    }
    size_t done = mask_span(m, b, n, n - hold, out);
    /* What is held back may be part of the next read's secret. */
    uint8_t *rest = loom_xmalloc(n - done + 1);
    memcpy(rest, b + done, n - done);
    if (carry->data) sodium_memzero(carry->data, carry->cap);
    loom_buf_reset(carry);
    loom_buf_append(carry, rest, n - done);
    sodium_memzero(rest, n - done);
    free(rest);
    if (m->work.len) sodium_memzero(m->work.data, m->work.len);
    loom_buf_reset(&m->work);
}

void loom_mask_flush(loom_mask_t *m, int stream, loom_buf_t *out)
{
    if (!m) return;
    loom_buf_t *carry = &m->carry[stream];
    if (!carry->len) return;
    mask_span(m, (const uint8_t *)carry->data, carry->len, carry->len, out);
    sodium_memzero(carry->data, carry->cap);
    loom_buf_reset(carry);
}

void loom_mask_destroy(loom_mask_t **mp)
{
    loom_mask_t *m = mp ? *mp : NULL;
    if (!m) return;
    for (size_t i = 0; i < m->n; i++) {
        sodium_memzero(m->vals[i].v, m->vals[i].len);
        free(m->vals[i].v);
        free(m->vals[i].fail);
    }
    free(m->vals);
    for (int s = 0; s < LOOM_MASK_STREAMS; s++) {
        if (m->carry[s].data) sodium_memzero(m->carry[s].data, m->carry[s].cap);
        loom_buf_free(&m->carry[s]);
    }
    if (m->work.data) sodium_memzero(m->work.data, m->work.cap);
    loom_buf_free(&m->work);
    free(m);
    *mp = NULL;
}
