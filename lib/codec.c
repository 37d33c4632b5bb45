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

/* Bounds protobuf-c does not enforce, checked on every message of the tree:
 * no repeated field longer than REPEATED_MAX, no nesting deeper than
 * DEPTH_MAX, every enum a value the descriptor knows (an unknown Stream is
 * meaningless to us), and no unknown field numbered 0 (invalid protobuf,
 * which protobuf-c 1.4 accepts in a multi-byte tag but then encodes as bytes
 * it refuses). Strings and bytes are bounded by LOOM_MSG_MAX as a whole and
 * by the per-kind rules below. */
#define REPEATED_MAX 100000
#define DEPTH_MAX 8

static int check_tree(const ProtobufCMessage *m, int depth, char *why, size_t whylen)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    if (depth > DEPTH_MAX) FAIL("%s: nested too deep", d->short_name);
    for (unsigned i = 0; i < m->n_unknown_fields; i++)
        if (m->unknown_fields[i].tag == 0) FAIL("%s: a field numbered 0", d->short_name);
    const char *base = (const char *)m;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
            *(const uint32_t *)(base + f->quantifier_offset) != f->id)
            continue;
        size_t n = 1;
        const char *vals = base + f->offset;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            n = *(const size_t *)(base + f->quantifier_offset);
            if (n > REPEATED_MAX)
                FAIL("%s.%s: %zu values, at most %d", d->short_name, f->name, n, REPEATED_MAX);
            vals = *(char *const *)vals;
        }
        for (size_t k = 0; k < n; k++) {
            if (f->type == PROTOBUF_C_TYPE_ENUM) {
                int v = ((const int *)vals)[k];
                if (!protobuf_c_enum_descriptor_get_value(f->descriptor, v))
                    FAIL("%s.%s: unknown value %d", d->short_name, f->name, v);
            } else if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
                const ProtobufCMessage *sub = ((ProtobufCMessage *const *)vals)[k];
                if (!sub) continue;
                int rc = check_tree(sub, depth + 1, why, whylen);
                if (rc) return rc;
            }
        }
    }
    return 0;
}

/* Short free text (names, versions, reasons, errors). */
#define TEXT_MAX 4096
#define NAME_MAX_LEN 255

static bool text_ok(const char *s, size_t max)
{
    return !s || strlen(s) <= max;
}

/* An environment variable name: [A-Za-z_][A-Za-z0-9_]*, at most 255. */
static bool env_name_ok(const char *s)
{
    if (!s || !*s || strlen(s) > NAME_MAX_LEN || (*s >= '0' && *s <= '9')) return false;
    return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") ==
           strlen(s);
}

/* An `outputs` or `metrics` entry as the DAG allows it (dag_rel_path_problem):
 * relative, no ".." segment, no control byte; "out/" and "./x" are fine (the
 * agent resolves them beneath the working folder). */
static bool output_ok(const char *p)
{
    if (!p || !*p || *p == '/' || strlen(p) > 4096) return false;
    for (const char *c = p; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f) return false;
    for (const char *seg = p; *seg;) {
        size_t n = strcspn(seg, "/");
        if (n == 2 && seg[0] == '.' && seg[1] == '.') return false;
        seg += n;
        if (*seg) seg++;
    }
    return true;
}

/* A task name as loomd gives it ("train", "train[3]" for a foreach copy). */
static bool task_name_ok(const char *s)
{
    if (!s || !*s || strlen(s) > NAME_MAX_LEN) return false;
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == '/') return false;
    return true;
}

static int check_resources(const Loom__Resources *r, char *why, size_t whylen)
{
    if (!r) return 0;
    if (r->n_gpus > 64) FAIL("hello: %zu GPUs, at most 64", r->n_gpus);
    for (size_t i = 0; i < r->n_gpus; i++)
        if (!text_ok(r->gpus[i]->uuid, NAME_MAX_LEN) || !text_ok(r->gpus[i]->model, NAME_MAX_LEN))
            FAIL("hello: GPU %zu: uuid or model over %d bytes", i, NAME_MAX_LEN);
    if (r->n_labels > 256) FAIL("hello: %zu labels, at most 256", r->n_labels);
    for (size_t i = 0; i < r->n_labels; i++) {
        const Loom__Resources__LabelsEntry *l = r->labels[i];
        if (!l->key || !*l->key || !text_ok(l->key, NAME_MAX_LEN) ||
            !text_ok(l->value, NAME_MAX_LEN))
            FAIL("hello: label %zu: a key of 1-%d bytes and a value of at most %d", i, NAME_MAX_LEN,
                 NAME_MAX_LEN);
    }
    if (!(r->cpus_usable >= 0 && r->cpus_usable <= 1e6)) FAIL("hello: cpus_usable out of range");
    if (!text_ok(r->gpu_source, NAME_MAX_LEN)) FAIL("hello: gpu_source too long");
    if (r->prefetch > 1024) FAIL("hello: prefetch %u, at most 1024", r->prefetch);
    return 0;
}

static int check_dispatch(const Loom__Dispatch *d, char *why, size_t whylen)
{
    if (d->attempt_id == 0) FAIL("dispatch: attempt_id is 0");
    if (d->n_argv == 0 && (!d->shell || !*d->shell)) FAIL("dispatch: neither argv nor shell");
    if (!task_name_ok(d->task) || !text_ok(d->pipeline, NAME_MAX_LEN))
        FAIL("dispatch: task must be 1-%d bytes with no '/' or control byte", NAME_MAX_LEN);
    if (d->n_argv > 65536) FAIL("dispatch: %zu arguments, at most 65536", d->n_argv);
    if (d->n_env > 65536) FAIL("dispatch: %zu variables, at most 65536", d->n_env);
    for (size_t i = 0; i < d->n_env; i++)
        if (!env_name_ok(d->env[i]->name))
            FAIL("dispatch: env %zu: \"%.64s\" is not a variable name", i,
                 d->env[i]->name ? d->env[i]->name : "");
    if (d->bundle && *d->bundle && !hash_ok(d->bundle))
        FAIL("dispatch: bundle must be 64 lowercase hex");
    if (d->n_files > LOOM_ARTIFACTS_MAX) FAIL("dispatch: too many files");
    for (size_t i = 0; i < d->n_files; i++) {
        const Loom__File *f = d->files[i];
        if (!loom_codec_relpath_ok(f->path)) FAIL("dispatch: file %zu: bad path", i);
        if (f->mode > 07777) FAIL("dispatch: file %zu: mode %o", i, f->mode);
        if (f->env && *f->env && !env_name_ok(f->env))
            FAIL("dispatch: file %zu: env is not a variable name", i);
    }
    if (d->metrics && *d->metrics && !output_ok(d->metrics)) FAIL("dispatch: metrics: bad path");
    if (d->n_outputs > LOOM_ARTIFACTS_MAX) FAIL("dispatch: too many outputs");
    for (size_t i = 0; i < d->n_outputs; i++)
        if (!output_ok(d->outputs[i])) FAIL("dispatch: output %zu: bad path", i);
    if (d->n_inputs > LOOM_ARTIFACTS_MAX) FAIL("dispatch: too many inputs");
    for (size_t i = 0; i < d->n_inputs; i++) {
        const Loom__Input *in = d->inputs[i];
        if (!loom_codec_relpath_ok(in->path)) FAIL("dispatch: input %zu: bad path", i);
        if (!hash_ok(in->hash)) FAIL("dispatch: input %zu: hash must be 64 hex", i);
        if (in->mode > 07777) FAIL("dispatch: input %zu: mode %o", i, in->mode);
    }
    if (d->n_secrets > LOOM_SECRETS_MAX) FAIL("dispatch: too many secrets");
    for (size_t i = 0; i < d->n_secrets; i++) {
        const Loom__Secret *sec = d->secrets[i];
        bool has_env = sec->env && *sec->env, has_file = sec->file && *sec->file;
        if (!has_env && !has_file) FAIL("dispatch: secret %zu: neither env nor file", i);
        if (has_file && !loom_codec_relpath_ok(sec->file))
            FAIL("dispatch: secret %zu: bad file path", i);
        if (has_env && !env_name_ok(sec->env)) FAIL("dispatch: secret %zu: bad env name", i);
        if (sec->value.len > LOOM_SECRET_VALUE_MAX)
            FAIL("dispatch: secret %zu: value over %d bytes", i, LOOM_SECRET_VALUE_MAX);
    }
    if (d->n_gpus > 64) FAIL("dispatch: %zu GPUs, at most 64", d->n_gpus);
    if (!(d->cpus >= 0 && d->cpus <= 1e6)) FAIL("dispatch: cpus out of range");
    return 0;
}

static int check_finished(const Loom__Finished *f, char *why, size_t whylen)
{
    if (f->attempt_id == 0) FAIL("finished: attempt_id is 0");
    if (f->n_artifacts > LOOM_ARTIFACTS_MAX) FAIL("finished: too many artifacts");
    for (size_t i = 0; i < f->n_artifacts; i++) {
        const Loom__Artifact *a = f->artifacts[i];
        if (!loom_codec_relpath_ok(a->path)) FAIL("finished: artifact %zu: bad path", i);
        if (!hash_ok(a->hash)) FAIL("finished: artifact %zu: hash must be 64 hex", i);
        if (a->mode > 07777) FAIL("finished: artifact %zu: mode %o", i, a->mode);
    }
    if (f->signal < 0 || f->signal > 128) FAIL("finished: signal %d out of range", (int)f->signal);
    if (f->metrics_json && strlen(f->metrics_json) > LOOM_METRICS_MAX)
        FAIL("finished: metrics over %d bytes", LOOM_METRICS_MAX);
    if (!text_ok(f->error, TEXT_MAX) || !text_ok(f->metrics_error, TEXT_MAX) ||
        !text_ok(f->outputs_error, TEXT_MAX))
        FAIL("finished: an error message over %d bytes", TEXT_MAX);
    return 0;
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
        if (!text_ok(m->hello->hostname, NAME_MAX_LEN) ||
            !text_ok(m->hello->agent_version, NAME_MAX_LEN))
            FAIL("hello: hostname or agent_version over %d bytes", NAME_MAX_LEN);
        return check_resources(m->hello->resources, why, whylen);
    case LOOM__ENVELOPE__BODY_HEARTBEAT:
        if (m->heartbeat->n_attempts > 100000) FAIL("heartbeat: too many attempts");
        if (m->heartbeat->usage && m->heartbeat->usage->n_gpus > 64)
            FAIL("heartbeat: usage of more than 64 GPUs");
        break;
    case LOOM__ENVELOPE__BODY_DISPATCH:
        return check_dispatch(m->dispatch, why, whylen);
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
        if (!text_ok(m->cancel->reason, TEXT_MAX)) FAIL("cancel: reason over %d bytes", TEXT_MAX);
        break;
    case LOOM__ENVELOPE__BODY_FETCH:
        if (!hash_ok(m->fetch->hash)) FAIL("fetch: hash must be 64 lowercase hex");
        break;
    case LOOM__ENVELOPE__BODY_OBJECT:
        if (!hash_ok(m->object->hash)) FAIL("object: hash must be 64 lowercase hex");
        if (m->object->data.len > LOOM_OBJECT_CHUNK_MAX)
            FAIL("object: chunk over %d bytes", LOOM_OBJECT_CHUNK_MAX);
        if (!m->object->error || !*m->object->error) {
            if (m->object->offset > m->object->size ||
                m->object->data.len > m->object->size - m->object->offset)
                FAIL("object: chunk past the object's size");
        } else if (!text_ok(m->object->error, TEXT_MAX)) {
            FAIL("object: error over %d bytes", TEXT_MAX);
        }
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
        if (!text_ok(m->put_ack->error, TEXT_MAX)) FAIL("put_ack: error over %d bytes", TEXT_MAX);
        break;
    case LOOM__ENVELOPE__BODY_FINISHED:
        return check_finished(m->finished, why, whylen);
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
        if (m->welcome->n_cancel > 100000) FAIL("welcome: too many attempts to cancel");
        break;
    case LOOM__ENVELOPE__BODY_ERROR:
        if (!text_ok(m->error->message, TEXT_MAX)) FAIL("error: message over %d bytes", TEXT_MAX);
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
    int rc = check_tree(&m->base, 0, why, whylen);
    if (rc == 0) rc = check_body(m, why, whylen);
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
