/* The CSV reader (drift reference and current data): every record of the
 * input, read in chunks whose size the first byte picks, so records are cut
 * at every offset. */
#include "loom/csv.h"

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    size_t chunk = data[0] % 64;
    loom_csv_t *r = loom_csv_new_mem("fuzz.csv", (const char *)data + 1, size - 1);
    if (chunk) loom_csv_set_chunk(r, chunk);
    const loom_csv_field_t *f;
    size_t n;
    int rc;
    size_t bytes = 0;
    while ((rc = loom_csv_next(r, &f, &n)) == 1) {
        for (size_t i = 0; i < n; i++) bytes += f[i].len;
        if (bytes > size) abort(); /* fields come from the input: never more than it */
    }
    if (rc < 0 && !*loom_csv_error(r)) abort();
    (void)loom_csv_line(r);
    (void)loom_csv_offset(r);
    loom_csv_destroy(&r);
    return 0;
}
