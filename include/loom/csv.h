/* A streaming CSV reader (RFC 4180): one pass, memory bounded by the longest
 * record rather than the file. Quoted fields may hold commas, doubled quotes
 * and line breaks; records end in LF or CRLF; the first record is the header
 * and every later record must have as many fields. Blank lines are skipped
 * and a UTF-8 byte order mark at the start is ignored. Errors name the file,
 * line and column (1-based, in bytes). */
#ifndef LOOM_CSV_H
#define LOOM_CSV_H

#include <stddef.h>
#include <stdint.h>

/* The longest record the reader accepts, and the most fields in a record:
 * the bounds on its memory. */
#define LOOM_CSV_MAX_RECORD (16u << 20)
#define LOOM_CSV_MAX_FIELDS 100000

typedef struct loom_csv loom_csv_t;

/* One field, unquoted; data is not NUL-terminated and stays valid until the
 * next call to loom_csv_next. */
typedef struct {
    const char *data;
    size_t len;
} loom_csv_field_t;

/* Opens path for reading. On failure returns a negative loom error and a
 * sentence for the user in *why (caller frees). */
int loom_csv_open(const char *path, loom_csv_t **out, char **why);
/* Reads from memory instead (copied in chunks, as from a file); name is used
 * in error messages. The data must outlive the reader. */
loom_csv_t *loom_csv_new_mem(const char *name, const char *data, size_t len);
/* Reads at most chunk bytes at a time (tests use tiny chunks to cut records
 * at every byte). */
void loom_csv_set_chunk(loom_csv_t *r, size_t chunk);
void loom_csv_destroy(loom_csv_t **r);

/* The next record: returns 1 and its fields, 0 at the end of the input, or a
 * negative loom error (LOOM_EPARSE, LOOM_ETOOBIG, LOOM_EIO) with the reason
 * in loom_csv_error. The first record returned is the header. */
int loom_csv_next(loom_csv_t *r, const loom_csv_field_t **fields, size_t *n);
/* The file name given to loom_csv_open (or loom_csv_new_mem). */
const char *loom_csv_name(const loom_csv_t *r);
/* "file:line:col: message" for the last error, or "" when there was none. */
const char *loom_csv_error(const loom_csv_t *r);
/* The line on which the last record returned starts. */
uint64_t loom_csv_line(const loom_csv_t *r);
/* Bytes consumed so far. */
uint64_t loom_csv_offset(const loom_csv_t *r);

#endif
