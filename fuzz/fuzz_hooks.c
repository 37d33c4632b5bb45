/* Webhook bodies: Alertmanager v4 payloads (first byte even) and S3 bucket
 * notifications (odd), parsed as the HTTP routes parse them. What becomes a
 * data arrival path has no ".." segment and no control byte. */
#include "hook_parse.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void alerts(json_t *body)
{
    json_t *list = json_object_get(body, "alerts");
    size_t i;
    json_t *alert;
    json_array_foreach(list, i, alert)
    {
        const char *name = NULL, *why = NULL;
        char key[256];
        json_t *ev = hook_alert_event(alert, &name, key, sizeof key, &why);
        if (!ev && !why) abort();
        if (ev && (!name || strlen(key) >= sizeof key)) abort();
        json_decref(ev);
    }
}

static void records(json_t *body)
{
    json_t *list = json_object_get(body, "Records");
    size_t i;
    json_t *rec;
    json_array_foreach(list, i, rec)
    {
        char *path = NULL;
        uint64_t size;
        const char *tag, *why = NULL;
        if (!hook_s3_record(rec, &path, &size, &tag, &why)) {
            if (path || !why) abort();
            continue;
        }
        if (strncmp(path, "s3://", 5) != 0) abort();
        for (const char *c = path; *c; c++)
            if ((unsigned char)*c < 0x20) abort();
        for (const char *seg = path + 5;;) {
            size_t n = strcspn(seg, "/");
            if (n == 2 && seg[0] == '.' && seg[1] == '.') abort();
            if (!seg[n]) break;
            seg += n + 1;
        }
        free(path);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    json_t *body = json_loadb((const char *)data + 1, size - 1, JSON_REJECT_DUPLICATES, NULL);
    if (!body) return 0;
    if (data[0] & 1)
        records(body);
    else
        alerts(body);
    json_decref(body);
    return 0;
}
