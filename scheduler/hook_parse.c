/* Webhook payloads (Alertmanager v4, S3 notifications) to events and data
 * arrivals: parsing and validation only, see hook_parse.h. */
#include "hook_parse.h"

#include "loom/util.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

json_t *hook_alert_event(json_t *alert, const char **name, char *key, size_t keylen,
                         const char **why)
{
    json_t *labels = json_object_get(alert, "labels");
    json_t *ann = json_object_get(alert, "annotations");
    const char *status = json_string_value(json_object_get(alert, "status"));
    *name = json_string_value(json_object_get(labels, "alertname"));
    if (!json_is_object(labels) || !*name) {
        *why = "an alert needs labels with an alertname";
        return NULL;
    }
    if (!loom_name_valid(*name)) {
        *why = "the alertname is not a valid event name (1-63 letters, digits, '_', '.', '-')";
        return NULL;
    }
    if (!status || strcmp(status, "firing") != 0) {
        *why = "not firing";
        return NULL;
    }
    json_t *ev = json_object();
    if (json_is_object(ann)) json_object_update(ev, ann);
    json_object_update(ev, labels);
    const char *starts = json_string_value(json_object_get(alert, "startsAt"));
    const char *fp = json_string_value(json_object_get(alert, "fingerprint"));
    json_object_set_new(ev, "status", json_string(status));
    json_object_set_new(ev, "labels", json_deep_copy(labels));
    json_object_set_new(ev, "annotations",
                        json_is_object(ann) ? json_deep_copy(ann) : json_object());
    if (starts) json_object_set_new(ev, "starts_at", json_string(starts));
    if (fp) json_object_set_new(ev, "fingerprint", json_string(fp));
    /* Alertmanager repeats a firing alert every repeat_interval with the
     * same fingerprint and start: one alert, one event. */
    if (fp) {
        snprintf(key, keylen, "alertmanager:%s:%s", fp, starts ? starts : "");
    } else {
        char *l = json_dumps(labels, JSON_COMPACT | JSON_SORT_KEYS);
        snprintf(key, keylen, "alertmanager:%.120s:%s", l ? l : "", starts ? starts : "");
        free(l);
    }
    return ev;
}

/* S3 event notifications URL-encode object keys, with '+' for a space. */
static char *url_decode(const char *s)
{
    char *out = loom_xmalloc(strlen(s) + 1), *o = out;
    for (; *s; s++) {
        if (*s == '+') {
            *o++ = ' ';
        } else if (*s == '%' && isxdigit((unsigned char)s[1]) && isxdigit((unsigned char)s[2])) {
            char hex[3] = {s[1], s[2], 0};
            *o++ = (char)strtol(hex, NULL, 16);
            s += 2;
        } else {
            *o++ = *s;
        }
    }
    *o = '\0';
    return out;
}

/* A decoded key loom will use as a path: no NUL, no "..", no control bytes. */
static bool s3_key_ok(const char *key, size_t raw_len)
{
    if (!*key || strlen(key) > 1024 || strlen(key) > raw_len) return false;
    for (const char *c = key; *c; c++)
        if ((unsigned char)*c < 0x20) return false;
    for (const char *seg = key; *seg;) {
        size_t n = strcspn(seg, "/");
        if (n == 2 && seg[0] == '.' && seg[1] == '.') return false;
        seg += n;
        if (*seg) seg++;
    }
    return true;
}

int hook_s3_record(json_t *rec, char **path, uint64_t *size, const char **tag, const char **why)
{
    *path = NULL;
    const char *ev = json_string_value(json_object_get(rec, "eventName"));
    json_t *s3 = json_object_get(rec, "s3");
    const char *bucket = json_string_value(json_object_get(json_object_get(s3, "bucket"), "name"));
    json_t *obj = json_object_get(s3, "object");
    const char *raw = json_string_value(json_object_get(obj, "key"));
    json_t *jsize = json_object_get(obj, "size");
    *tag = json_string_value(json_object_get(obj, "sequencer"));
    if (!*tag) *tag = json_string_value(json_object_get(obj, "eTag"));
    *size = json_is_integer(jsize) ? (uint64_t)json_integer_value(jsize) : 0;
    if (!ev || strncmp(ev, "ObjectCreated:", 14) != 0) {
        *why = "not an ObjectCreated event";
        return 0;
    }
    char *key = raw ? url_decode(raw) : NULL;
    if (!bucket || !loom_name_valid(bucket) || !key || !s3_key_ok(key, strlen(raw))) {
        *why = "needs s3.bucket.name and a usable s3.object.key";
        free(key);
        return 0;
    }
    *path = loom_xasprintf("s3://%s/%s", bucket, key);
    free(key);
    return 1;
}
