/* Aligned text tables for the command line: a header row, then cells added
 * row by row; columns are as wide as their widest cell, two spaces apart,
 * and no line ends in padding. */
#ifndef LOOM_CLI_TABLE_H
#define LOOM_CLI_TABLE_H

#include <stddef.h>
#include <jansson.h>
#include <stdio.h>

typedef struct cli_table cli_table_t;

/* headers: ncols column titles, copied. */
cli_table_t *cli_table_new(const char *const *headers, size_t ncols);
void cli_table_destroy(cli_table_t **t);
/* Right-aligns a column (counts). */
void cli_table_align_right(cli_table_t *t, size_t col);
/* Appends the next cell, left to right, wrapping to a new row after the last
 * column. NULL or "" prints as "-". Control characters are made harmless. */
void cli_table_add(cli_table_t *t, const char *cell);
void cli_table_addf(cli_table_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Adds the integer o[key], or an empty cell when it is missing or not one. */
void cli_table_add_int(cli_table_t *t, const json_t *o, const char *key);
size_t cli_table_rows(const cli_table_t *t);
/* The whole table as text; the caller frees it. */
char *cli_table_render(const cli_table_t *t);
void cli_table_print(const cli_table_t *t, FILE *out);

/* A copy of s safe to print on a terminal: newlines and tabs become spaces,
 * other control characters (C0, DEL, C1) become '?'. Caller frees. */
char *cli_sanitize(const char *s);
/* Columns s takes on a terminal (UTF-8 code points). */
size_t cli_text_width(const char *s);

#endif
