/* The pure parts of the webhook routes: turning an Alertmanager alert or an
 * S3 notification record into what loomd acts on. No scheduler, no HTTP, so
 * the fuzz targets (fuzz/fuzz_hooks.c) can call them directly. */
#ifndef LOOM_HOOK_PARSE_H
#define LOOM_HOOK_PARSE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* One firing alert as an event: its labels and annotations as fields (a
 * label wins over an annotation of the same name), plus its status, times
 * and fingerprint; *name is its alertname (borrowed from alert) and key its
 * idempotency key. Returns a new object, or NULL with *why set when it
 * cannot be one. */
json_t *hook_alert_event(json_t *alert, const char **name, char *key, size_t keylen,
                         const char **why);

/* One S3 notification record as a data arrival. Returns 1 with *path
 * ("s3://BUCKET/KEY", caller frees), *size and *tag (borrowed from rec, may
 * be NULL); or 0 with *why when the record is ignored. */
int hook_s3_record(json_t *rec, char **path, uint64_t *size, const char **tag, const char **why);

#endif
