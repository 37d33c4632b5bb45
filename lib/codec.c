/* Protobuf packing, unpacking and validation for the loom wire contract. */
#include "loom/codec.h"
#include "loom/err.h"
#include "loom/util.h"

#include <stdio.h>
#include <string.h>

const char *loom_codec_kind_name(Loom__Envelope__BodyCase kind)
{
    switch (kind) {
    case LOOM__ENVELOPE__BODY_HELLO:
        return "hello";
    case LOOM__ENVELOPE__BODY_WELCOME:
        return "welcome";
    case LOOM__ENVELOPE__BODY_HEARTBEAT:
        return "heartbeat";
    case LOOM__ENVELOPE__BODY_DISPATCH:
        return "dispatch";
    case LOOM__ENVELOPE__BODY_STARTED:
        return "started";
    case LOOM__ENVELOPE__BODY_LOG:
        return "log";
    case LOOM__ENVELOPE__BODY_LOG_ACK:
        return "log_ack";
    case LOOM__ENVELOPE__BODY_FINISHED:
        return "finished";
    case LOOM__ENVELOPE__BODY_FINISHED_ACK:
        return "finished_ack";
    case LOOM__ENVELOPE__BODY_CANCEL:
        return "cancel";
    case LOOM__ENVELOPE__BODY_ERROR:
        return "error";
    case LOOM__ENVELOPE__BODY_FETCH:
        return "fetch";
    case LOOM__ENVELOPE__BODY_OBJECT:
        return "object";
    case LOOM__ENVELOPE__BODY_PUT:
        return "put";
    case LOOM__ENVELOPE__BODY_PUT_ACK:
        return "put_ack";
    case LOOM__ENVELOPE__BODY_JOIN:
        return "join";
    case LOOM__ENVELOPE__BODY_JOINED:
        return "joined";
    default:
        return "unknown";
    }
}

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        snprintf(why, whylen, __VA_ARGS__);                                                        \
        return LOOM_EPROTO;                                                                        \
    } while (0)

/* An executor's job id ("slurm:1234"): shown by `loom status` and stored,
 * so short and printable. Empty: a local process. */
static bool job_id_ok(const char *id)
{
    size_t n = strlen(id);
    if (n > 128) return false;
    for (size_t i = 0; i < n; i++)
        if (id[i] <= ' ' || id[i] > '~') return false;
    return true;
}

static bool hash_ok(const char *h)
{
    return h && strlen(h) == 64 && strspn(h, "0123456789abcdef") == 64;
}

/* A relative, normalised path inside a working folder: no leading '/', no
 * empty, "." or ".." segment, no NUL (protobuf strings cannot hold one). */
bool loom_codec_relpath_ok(const char *p)
{
    if (!p || !*p || *p == '/' || strlen(p) > 4096) return false;
    for (const char *seg = p; *seg;) {
        size_t n = strcspn(seg, "/");
        if (n == 0 || (n == 1 && seg[0] == '.') || (n == 2 && seg[0] == '.' && seg[1] == '.'))
            return false;
        seg += n;
        if (*seg == '/' && !*++seg) return false; /* a trailing slash */
    }
    return true;
}

static int check_body(const loom_msg_t *m, char *why, size_t whylen)
{
    switch (m->body_case) {
    case LOOM__ENVELOPE__BODY_HELLO:
        if (!m->hello->name || !loom_name_valid(m->hello->name))
            FAIL("hello: agent name must be 1-63 of [A-Za-z0-9_.-]");
        if (m->hello->session.len == 0 || m->hello->session.len > 64)
            FAIL("hello: session must be 1-64 bytes");
        if (m->hello->n_attempts > 100000) FAIL("hello: too many attempts");
        break;
    case LOOM__ENVELOPE__BODY_HEARTBEAT:
        if (m->heartbeat->n_attempts > 100000) FAIL("heartbeat: too many attempts");
        break;
    case LOOM__ENVELOPE__BODY_DISPATCH:
        if (m->dispatch->attempt_id == 0) FAIL("dispatch: attempt_id is 0");
        if (m->dispatch->n_argv == 0 && (!m->dispatch->shell || !*m->dispatch->shell))
            FAIL("dispatch: neither argv nor shell");
        if (m->dispatch->n_inputs > LOOM_ARTIFACTS_MAX) FAIL("dispatch: too many inputs");
        for (size_t i = 0; i < m->dispatch->n_inputs; i++) {
            const Loom__Input *in = m->dispatch->inputs[i];
            if (!loom_codec_relpath_ok(in->path)) FAIL("dispatch: input %zu: bad path", i);
            if (!hash_ok(in->hash)) FAIL("dispatch: input %zu: hash must be 64 hex", i);
        }
        if (m->dispatch->n_secrets > LOOM_SECRETS_MAX) FAIL("dispatch: too many secrets");
        for (size_t i = 0; i < m->dispatch->n_secrets; i++) {
            const Loom__Secret *sec = m->dispatch->secrets[i];
            bool has_env = sec->env && *sec->env, has_file = sec->file && *sec->file;
            if (!has_env && !has_file) FAIL("dispatch: secret %zu: neither env nor file", i);
            if (has_file && !loom_codec_relpath_ok(sec->file))
                FAIL("dispatch: secret %zu: bad file path", i);
            if (has_env && strchr(sec->env, '=')) FAIL("dispatch: secret %zu: bad env name", i);
            if (sec->value.len > LOOM_SECRET_VALUE_MAX)
                FAIL("dispatch: secret %zu: value over %d bytes", i, LOOM_SECRET_VALUE_MAX);
        }
        break;
    case LOOM__ENVELOPE__BODY_STARTED:
        if (m->started->attempt_id == 0) FAIL("started: attempt_id is 0");
        if (m->started->job_id && !job_id_ok(m->started->job_id))
            FAIL("started: job_id is not 1-128 printable characters without spaces");
        break;
    case LOOM__ENVELOPE__BODY_LOG:
        if (m->log->attempt_id == 0) FAIL("log: attempt_id is 0");
        if (m->log->seq == 0) FAIL("log: seq is 0");
        if (m->log->data.len > LOOM_LOG_CHUNK_MAX)
            FAIL("log: chunk over %d bytes", LOOM_LOG_CHUNK_MAX);
        break;
    case LOOM__ENVELOPE__BODY_LOG_ACK:
        if (m->log_ack->attempt_id == 0) FAIL("log_ack: attempt_id is 0");
        break;
    case LOOM__ENVELOPE__BODY_FINISHED_ACK:
        if (m->finished_ack->attempt_id == 0) FAIL("finished_ack: attempt_id is 0");
        break;
    case LOOM__ENVELOPE__BODY_CANCEL:
        if (m->cancel->attempt_id == 0) FAIL("cancel: attempt_id is 0");
        break;
    case LOOM__ENVELOPE__BODY_FETCH:
        if (!m->fetch->hash || strlen(m->fetch->hash) != 64) FAIL("fetch: hash must be 64 hex");
        break;
    case LOOM__ENVELOPE__BODY_OBJECT:
        if (!m->object->hash || strlen(m->object->hash) != 64) FAIL("object: hash must be 64 hex");
        if (m->object->data.len > LOOM_OBJECT_CHUNK_MAX)
            FAIL("object: chunk over %d bytes", LOOM_OBJECT_CHUNK_MAX);
        break;
    case LOOM__ENVELOPE__BODY_PUT:
        if (m->put->attempt_id == 0) FAIL("put: attempt_id is 0");
        if (!hash_ok(m->put->hash)) FAIL("put: hash must be 64 lowercase hex");
        if (m->put->data.len > LOOM_OBJECT_CHUNK_MAX)
            FAIL("put: chunk over %d bytes", LOOM_OBJECT_CHUNK_MAX);
        if (m->put->offset > m->put->size || m->put->data.len > m->put->size - m->put->offset)
            FAIL("put: chunk past the object's size");
        break;
    case LOOM__ENVELOPE__BODY_PUT_ACK:
        if (!hash_ok(m->put_ack->hash)) FAIL("put_ack: hash must be 64 lowercase hex");
        break;
    case LOOM__ENVELOPE__BODY_FINISHED:
        if (m->finished->attempt_id == 0) FAIL("finished: attempt_id is 0");
        if (m->finished->n_artifacts > LOOM_ARTIFACTS_MAX) FAIL("finished: too many artifacts");
        for (size_t i = 0; i < m->finished->n_artifacts; i++) {
            const Loom__Artifact *a = m->finished->artifacts[i];
            if (!loom_codec_relpath_ok(a->path)) FAIL("finished: artifact %zu: bad path", i);
            if (!hash_ok(a->hash)) FAIL("finished: artifact %zu: hash must be 64 hex", i);
        }
        if (m->finished->signal < 0 || m->finished->signal > 128)
            FAIL("finished: signal %d out of range", (int)m->finished->signal);
        if (m->finished->metrics_json && strlen(m->finished->metrics_json) > LOOM_METRICS_MAX)
            FAIL("finished: metrics over %d bytes", LOOM_METRICS_MAX);
        break;
    case LOOM__ENVELOPE__BODY_JOIN:
        if (!m->join->name || !loom_name_valid(m->join->name))
            FAIL("join: agent name must be 1-63 of [A-Za-z0-9_.-]");
        if (!m->join->token || !*m->join->token || strlen(m->join->token) > 256)
            FAIL("join: token must be 1-256 characters");
        break;
    case LOOM__ENVELOPE__BODY_JOINED:
        if (m->joined->server_public_key && *m->joined->server_public_key &&
            strlen(m->joined->server_public_key) != 40)
            FAIL("joined: server_public_key must be 40 Z85 characters");
        break;
    case LOOM__ENVELOPE__BODY_WELCOME:
    case LOOM__ENVELOPE__BODY_ERROR:
        break;
    default:
        FAIL("unknown message kind");
    }
    return 0;
}

int loom_codec_decode(const void *data, size_t len, loom_msg_t **out, char *why, size_t whylen)
{
    *out = NULL;
    if (len > LOOM_MSG_MAX) FAIL("message of %zu bytes exceeds %d", len, LOOM_MSG_MAX);
    loom_msg_t *m = loom__envelope__unpack(NULL, len, data);
    if (!m) FAIL("not a valid envelope (%zu bytes)", len);
    if (m->version != LOOM_PROTO_VERSION) {
        snprintf(why, whylen, "protocol version %u not supported (speaking %d)", m->version,
                 LOOM_PROTO_VERSION);
        loom__envelope__free_unpacked(m, NULL);
        return LOOM_EPROTO;
    }
    int rc = check_body(m, why, whylen);
    if (rc != 0) {
        loom__envelope__free_unpacked(m, NULL);
        return rc;
    }
    *out = m;
    return 0;
}

void loom_codec_free(loom_msg_t *msg)
{
    if (msg) loom__envelope__free_unpacked(msg, NULL);
}

int loom_codec_encode(loom_msg_t *msg, uint8_t **out, size_t *len)
{
    msg->version = LOOM_PROTO_VERSION;
    size_t n = loom__envelope__get_packed_size(msg);
    if (n > LOOM_MSG_MAX) return LOOM_ETOOBIG;
    uint8_t *buf = loom_xmalloc(n ? n : 1);
    loom__envelope__pack(msg, buf);
    *out = buf;
    *len = n;
    return 0;
}
