/* Pure text helpers for the loom command line: tolerant reads of loomd's JSON
 * (a missing field, a null or a wrong type all read as "absent"), times,
 * sizes, exit statuses and URL pieces. No I/O, so the unit test compiles
 * this file directly. */
#ifndef LOOM_CLI_FMT_H
#define LOOM_CLI_FMT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The string at key, or NULL when o is not an object or the value is absent
 * or not a string. */
const char *cli_jstr(const json_t *o, const char *key);
/* True and *out set when the value at key is an integer. */
bool cli_jint(const json_t *o, const char *key, int64_t *out);
/* The array / object at key, or NULL. */
json_t *cli_jarr(const json_t *o, const char *key);
json_t *cli_jobj(const json_t *o, const char *key);

/* "3s ago", "5m ago", "2h ago", "4d ago", "just now"; "-" when then_ms <= 0. */
void cli_fmt_ago(uint64_t now_ms, int64_t then_ms, char *out, size_t len);
/* "512 B", "1.5 KiB", "15.6 GiB". */
void cli_fmt_bytes(uint64_t n, char *out, size_t len);
/* The time between start_ms and end_ms, or start_ms and now_ms when end_ms is
 * absent (<= 0); "-" when start_ms is absent. Formatted by
 * loom_format_duration. */
void cli_fmt_span(int64_t start_ms, int64_t end_ms, uint64_t now_ms, char *out, size_t len);
/* A task's outcome from its "exit_code" and "signal": "0", "SIGKILL", "-". */
void cli_fmt_exit(const json_t *task, char *out, size_t len);

/* Percent-encodes s for one URL path segment or query value. Caller frees. */
char *cli_url_escape(const char *s);
/* Adds "http://" when s has no scheme and drops trailing slashes. Caller
 * frees. */
char *cli_url_normalize(const char *s);

#endif
