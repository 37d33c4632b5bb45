/* Writes one message of every kind into a folder, in both of fuzz_codec's
 * input forms (see fuzz_codec.c): NAME.bin, 0x80 then the envelope, and
 * NAME.body, the kind's index then the body alone. The seed corpus of
 * fuzz_codec (fuzz/corpus/codec). Usage: fuzz_seed_codec DIR */
#include "loom/codec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *dir;
static char H[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

static void write_file(const char *name, const char *ext, uint8_t first, const uint8_t *buf,
                       size_t len)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.%s", dir, name, ext);
    FILE *f = fopen(path, "wb");
    if (!f || fputc(first, f) == EOF || fwrite(buf, 1, len, f) != len || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}

static void emit(const char *name, loom_msg_t *m)
{
    uint8_t *buf;
    size_t len;
    if (loom_codec_encode(m, &buf, &len) != 0) abort();
    write_file(name, "bin", 0x80, buf, len);
    free(buf);
    /* Every body is a pointer in the same union. */
    const ProtobufCMessage *body = (const ProtobufCMessage *)m->hello;
    len = protobuf_c_message_get_packed_size(body);
    buf = malloc(len + 1);
    protobuf_c_message_pack(body, buf);
    write_file(name, "body", (uint8_t)(m->body_case - LOOM__ENVELOPE__BODY_HELLO), buf, len);
    free(buf);
}

#define EMIT(kind, field, value)                                                                   \
    do {                                                                                           \
        loom_msg_t m = LOOM__ENVELOPE__INIT;                                                       \
        m.body_case = LOOM__ENVELOPE__BODY_##kind;                                                 \
        m.field = value;                                                                           \
        emit(#field, &m);                                                                          \
    } while (0)

int main(int argc, char **argv)
{
    if (argc != 2) return 2;
    dir = argv[1];
    uint64_t ids[] = {7, 8};
    uint32_t gpu_ids[] = {0, 1};

    Loom__Gpu gpu = LOOM__GPU__INIT, *gpus[] = {&gpu};
    gpu.uuid = "GPU-1";
    gpu.model = "NVIDIA H100";
    gpu.memory_bytes = 80ull << 30;
    Loom__Resources__LabelsEntry lab = LOOM__RESOURCES__LABELS_ENTRY__INIT, *labs[] = {&lab};
    lab.key = "zone";
    lab.value = "a";
    Loom__Resources res = LOOM__RESOURCES__INIT;
    res.cpus = 8;
    res.memory_bytes = 1ull << 34;
    res.gpus = gpus;
    res.n_gpus = 1;
    res.labels = labs;
    res.n_labels = 1;
    res.slots = 4;
    res.gpu_source = "nvml";
    Loom__Hello hello = LOOM__HELLO__INIT;
    hello.name = "gpu-01";
    hello.agent_version = "0.1.0";
    hello.session = (ProtobufCBinaryData){16, (uint8_t *)"0123456789abcdef"};
    hello.resources = &res;
    hello.attempts = ids;
    hello.n_attempts = 2;
    hello.hostname = "host";
    EMIT(HELLO, hello, &hello);

    Loom__Welcome welcome = LOOM__WELCOME__INIT;
    welcome.heartbeat_ms = 1000;
    welcome.timeout_ms = 10000;
    welcome.cancel = ids;
    welcome.n_cancel = 2;
    EMIT(WELCOME, welcome, &welcome);

    Loom__GpuUsage gu = LOOM__GPU_USAGE__INIT, *gus[] = {&gu};
    gu.utilization_percent = 50;
    Loom__Usage usage = LOOM__USAGE__INIT;
    usage.load1 = 0.5;
    usage.gpus = gus;
    usage.n_gpus = 1;
    Loom__Heartbeat hb = LOOM__HEARTBEAT__INIT;
    hb.sent_unix_ms = 1700000000000;
    hb.attempts = ids;
    hb.n_attempts = 2;
    hb.dispatch_seq = 3;
    hb.usage = &usage;
    EMIT(HEARTBEAT, heartbeat, &hb);

    char *argv_[] = {"python3", "train.py"}, *outs[] = {"model.pkl", "out/*.csv"};
    Loom__EnvVar env = LOOM__ENV_VAR__INIT, *envs[] = {&env};
    env.name = "LR";
    env.value = "0.1";
    Loom__File file = LOOM__FILE__INIT, *files[] = {&file};
    file.path = "params.json";
    file.content = (ProtobufCBinaryData){2, (uint8_t *)"{}"};
    file.env = "LOOM_PARAMS";
    Loom__Input in = LOOM__INPUT__INIT, *ins[] = {&in};
    in.path = "data/train.csv";
    in.hash = H;
    in.size = 10;
    Loom__Dispatch d = LOOM__DISPATCH__INIT;
    d.attempt_id = 7;
    d.run_id = 1;
    d.pipeline = "p";
    d.task = "train";
    d.argv = argv_;
    d.n_argv = 2;
    d.env = envs;
    d.n_env = 1;
    d.seq = 1;
    d.attempt_number = 1;
    d.bundle = H;
    d.files = files;
    d.n_files = 1;
    d.metrics = "metrics.json";
    d.gpus = gpu_ids;
    d.n_gpus = 2;
    d.outputs = outs;
    d.n_outputs = 2;
    d.inputs = ins;
    d.n_inputs = 1;
    EMIT(DISPATCH, dispatch, &d);
    d.n_argv = 0;
    d.shell = "echo hi > out.txt";
    {
        loom_msg_t m = LOOM__ENVELOPE__INIT;
        m.body_case = LOOM__ENVELOPE__BODY_DISPATCH;
        m.dispatch = &d;
        emit("dispatch_shell", &m);
    }

    Loom__Started st = LOOM__STARTED__INIT;
    st.attempt_id = 7;
    st.pid = 1234;
    EMIT(STARTED, started, &st);

    Loom__LogChunk lc = LOOM__LOG_CHUNK__INIT;
    lc.attempt_id = 7;
    lc.seq = 1;
    lc.stream = LOOM__STREAM__STREAM_STDERR;
    lc.data = (ProtobufCBinaryData){6, (uint8_t *)"hello\n"};
    EMIT(LOG, log, &lc);

    Loom__LogAck la = LOOM__LOG_ACK__INIT;
    la.attempt_id = 7;
    la.seq = 1;
    EMIT(LOG_ACK, log_ack, &la);

    Loom__Artifact art = LOOM__ARTIFACT__INIT, *arts[] = {&art};
    art.path = "model.pkl";
    art.hash = H;
    art.size = 3;
    art.mode = 0644;
    Loom__Finished fin = LOOM__FINISHED__INIT;
    fin.attempt_id = 7;
    fin.exit_code = 1;
    fin.log_seq = 1;
    fin.error = "exit 1";
    fin.metrics_json = "{\"auc\":0.9}";
    fin.artifacts = arts;
    fin.n_artifacts = 1;
    EMIT(FINISHED, finished, &fin);

    Loom__FinishedAck fa = LOOM__FINISHED_ACK__INIT;
    fa.attempt_id = 7;
    EMIT(FINISHED_ACK, finished_ack, &fa);

    Loom__Cancel c = LOOM__CANCEL__INIT;
    c.attempt_id = 7;
    c.reason = "cancelled";
    EMIT(CANCEL, cancel, &c);

    Loom__Error e = LOOM__ERROR__INIT;
    e.code = -5;
    e.message = "who are you";
    e.hello_required = 1;
    EMIT(ERROR, error, &e);

    Loom__FetchObject fo = LOOM__FETCH_OBJECT__INIT;
    fo.hash = H;
    fo.max = 65536;
    EMIT(FETCH, fetch, &fo);

    Loom__ObjectChunk oc = LOOM__OBJECT_CHUNK__INIT;
    oc.hash = H;
    oc.data = (ProtobufCBinaryData){4, (uint8_t *)"data"};
    oc.size = 4;
    EMIT(OBJECT, object, &oc);

    Loom__PutObject po = LOOM__PUT_OBJECT__INIT;
    po.attempt_id = 7;
    po.hash = H;
    po.data = (ProtobufCBinaryData){4, (uint8_t *)"data"};
    po.size = 4;
    EMIT(PUT, put, &po);

    Loom__PutAck pa = LOOM__PUT_ACK__INIT;
    pa.attempt_id = 7;
    pa.hash = H;
    pa.offset = 4;
    pa.stored = 1;
    EMIT(PUT_ACK, put_ack, &pa);
    return 0;
}
