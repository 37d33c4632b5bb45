/* The agent's artifacts against the fake loomd of test_agent_fx.h with its
 * object store: outputs collected (files, folders, globs), hashed, uploaded
 * once per content within a window, and listed in Finished; bad patterns
 * and loomd's errors failing the attempt; uploads surviving a reconnect;
 * inputs fetched and placed before the process starts; and the object
 * cache kept under its bound. Every wait ends on a condition or fails at a
 * deadline. */
#include "test_agent_fx.h"

#include "outputs.h"
#include "upload.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>

/* ASan keeps freed memory aside (256 MiB by default) to catch late uses;
 * that would show as resident memory in the test that checks the agent
 * does not hold a large output in memory. A few MiB still catch them. */
const char *__asan_default_options(void);
__attribute__((used)) const char *__asan_default_options(void)
{
    return "quarantine_size_mb=4";
}

#define MIB (1024u * 1024u)

static int setup_art(void **state)
{
    if (setup(state)) return -1;
    fx_t *f = *state;
    fx_store_enable(f);
    f->cfg.work_dir = loom_xasprintf("%s/work", f->tmp);
    loom_log_set_level(LOOM_LOG_ERROR);
    return 0;
}

static int teardown_art(void **state)
{
    fx_t *f = *state;
    char *work = (char *)f->cfg.work_dir;
    int rc = teardown(state);
    free(work);
    return rc;
}

static char *work_path(fx_t *f, const char *rel)
{
    char *real = realpath(f->cfg.work_dir, NULL);
    char *p = loom_xasprintf("%s/%s", real, rel);
    free(real);
    return p;
}

static void dispatch_outputs(fx_t *f, uint64_t id, const char *shell, const char *const *outs,
                             size_t n)
{
    Loom__Dispatch d = shell_dispatch(id, id, shell);
    d.outputs = (char **)outs;
    d.n_outputs = n;
    send_dispatch(f, &d);
}

static const Loom__Finished *wait_finished(fx_t *f, uint64_t id)
{
    f->cursor = 0;
    return wait_msg(f, LOOM__ENVELOPE__BODY_FINISHED, for_attempt, id)->finished;
}

static const Loom__Artifact *artifact(const Loom__Finished *fin, const char *path)
{
    for (size_t i = 0; i < fin->n_artifacts; i++)
        if (strcmp(fin->artifacts[i]->path, path) == 0) return fin->artifacts[i];
    fail_msg("no artifact \"%s\" among %zu", path, fin->n_artifacts);
    return NULL;
}

/* The artifact is the content, and loomd holds exactly that. */
static void expect_artifact(fx_t *f, const Loom__Finished *fin, const char *path,
                            const char *content)
{
    const Loom__Artifact *a = artifact(fin, path);
    char want[65];
    fx_hash_hex(content, strlen(content), want);
    assert_string_equal(a->hash, want);
    assert_int_equal(a->size, strlen(content));
    const fx_object_t *o = fx_find_object(f, want);
    assert_non_null(o);
    assert_int_equal(o->len, strlen(content));
    assert_memory_equal(o->data, content, o->len);
}

static void expect_outputs_error(const Loom__Finished *fin, const char *part)
{
    if (!strstr(fin->outputs_error, part))
        fail_msg("outputs_error \"%s\" does not say \"%s\"", fin->outputs_error, part);
    assert_int_equal(fin->n_artifacts, 0);
}

/* BLAKE2b-256 of a file, streamed. */
static void file_hash(const char *path, char hex[65], uint64_t *size)
{
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, crypto_generichash_BYTES);
    uint8_t *buf = loom_xmalloc(MIB);
    *size = 0;
    for (ssize_t n; (n = read(fd, buf, MIB)) > 0;) {
        crypto_generichash_update(&st, buf, (size_t)n);
        *size += (uint64_t)n;
    }
    free(buf);
    close(fd);
    unsigned char h[crypto_generichash_BYTES];
    crypto_generichash_final(&st, h, sizeof h);
    sodium_bin2hex(hex, 65, h, sizeof h);
}

/* `yes LINE | head -c SIZE`, as the test sees it (the caller frees). */
static char *repeated(const char *line, size_t size)
{
    char *s = loom_xmalloc(size + 1);
    size_t n = strlen(line);
    for (size_t i = 0; i < size; i++) s[i] = line[i % n];
    s[size] = '\0';
    return s;
}

static bool window_full(fx_t *f, uint64_t id)
{
    return fx_unacked(f, id) >= PUT_WINDOW;
}

static bool got_finished(fx_t *f, uint64_t id)
{
    return find_since(f, 0, LOOM__ENVELOPE__BODY_FINISHED, id) != NULL;
}

/* n heartbeats from now on; returns the last. */
static const loom_msg_t *heartbeats(fx_t *f, int n)
{
    const loom_msg_t *hb = NULL;
    f->cursor = f->n_msgs;
    for (int i = 0; i < n; i++) hb = wait_msg(f, LOOM__ENVELOPE__BODY_HEARTBEAT, NULL, 0);
    return hb;
}

/* Peak resident memory in KiB, reset first when asked (Linux 4.0+). */
static uint64_t vm_hwm_kib(bool reset)
{
    if (reset) {
        int fd = open("/proc/self/clear_refs", O_WRONLY);
        if (fd >= 0) {
            assert_int_equal(write(fd, "5", 1), 1);
            close(fd);
        }
    }
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(loom_read_file("/proc/self/status", 1 << 16, &text, &len), 0);
    const char *p = strstr(text, "VmHWM:");
    assert_non_null(p);
    uint64_t kib = strtoull(p + 6, NULL, 10);
    free(text);
    return kib;
}

/* --- outputs --- */

static void test_outputs_file_folder_glob(void **state)
{
    fx_t *f = *state;
    start_welcomed(f, 10000);
    const char *outs[] = {"model.pkl", "plots/", "./metrics/*.csv"};
    dispatch_outputs(f, 1,
                     "mkdir -p plots/sub metrics && printf weights > model.pkl && "
                     "printf A > plots/a.png && printf BB > plots/sub/b.png && "
                     "printf 'x,1\\n' > metrics/x.csv && printf 'y,2\\n' > metrics/y.csv && "
                     "printf no > metrics/z.txt && printf h > metrics/.hidden.csv && "
                     "printf '#!/bin/sh\\n' > plots/run.sh && chmod 755 plots/run.sh && "
                     "chmod 600 model.pkl",
                     outs, 3);
    const Loom__Finished *fin = wait_finished(f, 1);
    assert_int_equal(fin->exit_code, 0);
    assert_string_equal(fin->error, "");
    assert_string_equal(fin->outputs_error, "");
    const char *paths[] = {"metrics/x.csv", "metrics/y.csv", "model.pkl",
                           "plots/a.png",   "plots/run.sh",  "plots/sub/b.png"};
    assert_int_equal(fin->n_artifacts, 6);
    for (size_t i = 0; i < 6; i++) assert_string_equal(fin->artifacts[i]->path, paths[i]);
    expect_artifact(f, fin, "model.pkl", "weights");
    expect_artifact(f, fin, "plots/a.png", "A");
    expect_artifact(f, fin, "plots/sub/b.png", "BB");
    expect_artifact(f, fin, "metrics/x.csv", "x,1\n");
    expect_artifact(f, fin, "metrics/y.csv", "y,2\n");
    expect_artifact(f, fin, "plots/run.sh", "#!/bin/sh\n");
    assert_int_equal(artifact(fin, "plots/run.sh")->mode, 0755);
    assert_int_equal(artifact(fin, "model.pkl")->mode, 0600);
    /* Each content asked about once, sent once. */
    fx_attempt_stat_t *st = fx_stat(f, 1);
    assert_int_equal(st->queries, 6);
    assert_int_equal(st->data_bytes, 7 + 1 + 2 + 4 + 4 + 10);
    /* Resent after a new Welcome, artifacts and all. */
    size_t from = rewelcome(f, NULL);
    const loom_msg_t *again = find_since(f, from, LOOM__ENVELOPE__BODY_FINISHED, 1);
    assert_non_null(again);
    assert_int_equal(again->finished->n_artifacts, 6);
    assert_string_equal(again->finished->artifacts[2]->hash, artifact(fin, "model.pkl")->hash);
}

static void test_duplicates_cost_no_bytes(void **state)
{
    fx_t *f = *state;
    start_welcomed(f, 10000);
    char known[65];
    fx_add_object(f, "known content\n", 14, known);
    const char *outs[] = {"known.txt", "twin1", "twin2", "empty"};
    dispatch_outputs(f, 2,
                     "printf 'known content\\n' > known.txt; printf 'twin\\n' > twin1; "
                     "printf 'twin\\n' > twin2; : > empty",
                     outs, 4);
    const Loom__Finished *fin = wait_finished(f, 2);
    assert_string_equal(fin->outputs_error, "");
    assert_int_equal(fin->n_artifacts, 4);
    expect_artifact(f, fin, "empty", ""); /* stored at the question: nothing to send */
    assert_string_equal(artifact(fin, "known.txt")->hash, known);
    assert_string_equal(artifact(fin, "twin1")->hash, artifact(fin, "twin2")->hash);
    expect_artifact(f, fin, "twin2", "twin\n");
    /* One query per content; loomd had known.txt's: only "twin\n" travels,
     * once. */
    fx_attempt_stat_t *st = fx_stat(f, 2);
    assert_int_equal(st->queries, 3);
    assert_int_equal(st->data_bytes, 5);
    assert_int_equal(st->puts, 4);
}

static void test_large_output_window_and_memory(void **state)
{
    fx_t *f = *state;
    start_welcomed(f, 10000);
    uint64_t before = vm_hwm_kib(true);
    f->store->hold_acks = true;
    const char *outs[] = {"big.bin"};
    dispatch_outputs(f, 3, "head -c 67108864 /dev/urandom > big.bin", outs, 1);
    /* The agent fills its window, and sends no more while nothing is
     * acknowledged; meanwhile it still reports the attempt as held. */
    run_until(f, window_full, 3, "the window filled");
    const loom_msg_t *hb = heartbeats(f, 3);
    assert_int_equal(fx_unacked(f, 3), PUT_WINDOW);
    assert_true(holds(hb->heartbeat->attempts, hb->heartbeat->n_attempts, 3));
    assert_null(find_since(f, 0, LOOM__ENVELOPE__BODY_FINISHED, 3));
    f->store->hold_acks = false;
    const Loom__Finished *fin = wait_finished(f, 3);
    assert_string_equal(fin->outputs_error, "");
    assert_int_equal(fin->n_artifacts, 1);
    fx_attempt_stat_t *st = fx_stat(f, 3);
    assert_true(st->unacked_max <= PUT_WINDOW);
    assert_int_equal(st->data_bytes, 64 * MIB);
    char *path = work_path(f, "attempts/3/big.bin");
    char want[65];
    uint64_t size;
    file_hash(path, want, &size);
    free(path);
    assert_int_equal(size, 64 * MIB);
    assert_string_equal(fin->artifacts[0]->hash, want);
    assert_int_equal(fin->artifacts[0]->size, 64 * MIB);
    const fx_object_t *o = fx_find_object(f, want); /* verified by the fake loomd */
    assert_non_null(o);
    assert_int_equal(o->len, 64 * MIB);
    /* Neither the agent nor the fake loomd held the file: the peak grew
     * by far less than its 64 MiB. */
    uint64_t grown = vm_hwm_kib(false) - before;
    if (grown > 24 * 1024) fail_msg("peak memory grew by %llu KiB", (unsigned long long)grown);
}

static void expect_refused(fx_t *f, uint64_t id, const char *shell, const char *pattern,
                           const char *part)
{
    const char *outs[] = {pattern};
    dispatch_outputs(f, id, shell, outs, 1);
    const Loom__Finished *fin = wait_finished(f, id);
    assert_int_equal(fin->exit_code, 0);
    assert_string_equal(fin->error, "");
    expect_outputs_error(fin, part);
    assert_int_equal(fx_stat(f, id)->puts, 0);
}

/* A pattern that leaves the folder is refused by the codec: the Dispatch
 * never reaches the attempt code, nothing runs; the next one (probe) does. */
static void expect_dropped(fx_t *f, uint64_t id, const char *pattern, uint64_t probe)
{
    const char *outs[] = {pattern};
    dispatch_outputs(f, id, "echo x > ../escape.txt", outs, 1);
    dispatch_outputs(f, probe, "true", NULL, 0);
    assert_int_equal(wait_finished(f, probe)->exit_code, 0);
    assert_int_equal(count_since(f, 0, LOOM__ENVELOPE__BODY_STARTED, id), 0);
    assert_int_equal(count_since(f, 0, LOOM__ENVELOPE__BODY_FINISHED, id), 0);
}

static void test_bad_patterns_fail_and_upload_nothing(void **state)
{
    fx_t *f = *state;
    start_welcomed(f, 10000);
    expect_dropped(f, 11, "../escape.txt", 21);
    expect_dropped(f, 12, "a/../../b", 22);
    expect_dropped(f, 13, "/etc/hostname", 23);
    /* The agent's own check stays, for whatever reaches it. */
    char *bad = outputs_check_pattern("a/../../b");
    assert_non_null(strstr(bad, "leaves the working folder"));
    free(bad);
    bad = outputs_check_pattern("/etc/hostname");
    assert_non_null(strstr(bad, "is an absolute path"));
    free(bad);
    expect_refused(f, 14, "ln -s /etc/hostname link.txt", "link.txt",
                   "output \"link.txt\": \"link.txt\" is a symbolic link");
    expect_refused(f, 15, "ln -s /etc out", "out/*.conf", "\"out\" is a symbolic link");
    expect_refused(f, 16, "mkdir res; echo x > res/a; ln -s /etc/passwd res/p", "res",
                   "\"res/p\" is a symbolic link");
    expect_refused(f, 17, "echo x > model.pt", "model.pkl", "output \"model.pkl\" matched no file");
    expect_refused(f, 18, "mkdir empty", "empty/*.csv", "output \"empty/*.csv\" matched no file");
    expect_refused(f, 19, "mkfifo pipe", "pipe", "\"pipe\" is not a regular file");
    /* A good pattern beside a bad one: nothing is uploaded either. */
    const char *outs[] = {"good.txt", "missing.txt"};
    dispatch_outputs(f, 20, "echo ok > good.txt", outs, 2);
    expect_outputs_error(wait_finished(f, 20), "output \"missing.txt\" matched no file");
    assert_int_equal(fx_stat(f, 20)->puts, 0);
    char *outside = work_path(f, "attempts/escape.txt");
    assert_int_equal(access(outside, F_OK), -1); /* never run */
    free(outside);
}

static void test_failed_task_uploads_nothing(void **state)
{
    fx_t *f = *state;
    start_welcomed(f, 10000);
    const char *outs[] = {"out.bin"};
    dispatch_outputs(f, 21, "printf data > out.bin; exit 1", outs, 1);
    const Loom__Finished *fin = wait_finished(f, 21);
    assert_int_equal(fin->exit_code, 1);
    assert_string_equal(fin->outputs_error, "");
    assert_int_equal(fin->n_artifacts, 0);
    assert_int_equal(fx_stat(f, 21)->puts, 0);
}

static void test_loomd_error_stops_the_upload(void **state)
{
    fx_t *f = *state;
    start_welcomed(f, 10000);
    char *content = repeated("abcdefg\n", 4 * MIB);
    fx_hash_hex(content, 4 * MIB, f->store->fail_hash);
    free(content);
    f->store->fail_at = 2 * PUT_CHUNK;
    f->store->fail_error = "no space left on device";
    const char *outs[] = {"data.bin", "small.txt"};
    dispatch_outputs(f, 31, "yes abcdefg | head -c 4194304 > data.bin; echo hi > small.txt", outs,
                     2);
    const Loom__Finished *fin = wait_finished(f, 31);
    assert_int_equal(fin->exit_code, 0);
    expect_outputs_error(fin, "output \"data.bin\": loomd refused the upload: no space left");
    assert_null(fx_find_object(f, f->store->fail_hash));
    /* What was in flight when loomd said so, at most; nothing after. */
    size_t after = f->store->puts_after_error;
    assert_true(after <= PUT_WINDOW / PUT_CHUNK);
    heartbeats(f, 3);
    assert_int_equal(f->store->puts_after_error, after);
    assert_true(fx_stat(f, 31)->data_bytes < 4 * MIB);

    /* Refused at the question: no byte of it is sent. */
    fx_hash_hex("refused\n", 8, f->store->fail_hash);
    f->store->fail_at = 0;
    f->store->error_sent = false;
    f->store->puts_after_error = 0;
    f->store->fail_error = "content hash is 0123, not 4567";
    const char *one[] = {"r.txt"};
    dispatch_outputs(f, 32, "echo refused > r.txt", one, 1);
    expect_outputs_error(wait_finished(f, 32), "output \"r.txt\": loomd refused the upload: "
                                               "content hash is 0123, not 4567");
    assert_int_equal(fx_stat(f, 32)->data_bytes, 0);
    assert_int_equal(f->store->puts_after_error, 0);
}

/* Holds the acknowledgements of attempt id's upload until its window is
 * full, then loses them and has the agent say hello again. */
static void lose_connection_mid_upload(fx_t *f, uint64_t id, bool loomd_restarted)
{
    f->store->hold_acks = true;
    run_until(f, window_full, id, "the window filled");
    fx_drop_acks(f);
    if (loomd_restarted) fx_forget_uploads(f);
    rewelcome(f, NULL);
    f->store->hold_acks = false;
}

static void test_reconnect_restarts_the_upload(void **state)
{
    fx_t *f = *state;
    start_welcomed(f, 10000);
    /* loomd kept what it had: the agent goes on from there. */
    f->store->resume = true;
    const char *outs[] = {"data.bin"};
    dispatch_outputs(f, 41, "yes 0123456789 | head -c 6291456 > data.bin", outs, 1);
    lose_connection_mid_upload(f, 41, false);
    const Loom__Finished *fin = wait_finished(f, 41);
    assert_string_equal(fin->outputs_error, "");
    char *content = repeated("0123456789\n", 6 * MIB);
    expect_artifact(f, fin, "data.bin", content);
    free(content);
    fx_attempt_stat_t *st = fx_stat(f, 41);
    assert_int_equal(st->queries, 2);
    assert_int_equal(st->data_bytes, 6 * MIB);

    /* loomd restarted and lost it (or, like loomd, starts a new question
     * from 0): the agent sends it all again. */
    f->store->resume = false;
    dispatch_outputs(f, 42, "yes 9876543210 | head -c 6291456 > data.bin", outs, 1);
    lose_connection_mid_upload(f, 42, true);
    fin = wait_finished(f, 42);
    assert_string_equal(fin->outputs_error, "");
    content = repeated("9876543210\n", 6 * MIB);
    expect_artifact(f, fin, "data.bin", content);
    free(content);
    st = fx_stat(f, 42);
    assert_int_equal(st->queries, 2);
    assert_int_equal(st->data_bytes, 6 * MIB + PUT_WINDOW);
    assert_true(st->unacked_max <= PUT_WINDOW);
}

static void test_cancel_while_uploading(void **state)
{
    fx_t *f = *state;
    start_welcomed(f, 10000);
    f->store->hold_acks = true;
    const char *outs[] = {"data.bin"};
    dispatch_outputs(f, 51, "head -c 8388608 /dev/urandom > data.bin", outs, 1);
    run_until(f, window_full, 51, "the window filled");
    send_cancel(f, 51, "user asked");
    const Loom__Finished *fin = wait_finished(f, 51);
    assert_true(fin->cancelled);
    assert_int_equal(fin->exit_code, 0);
    assert_string_equal(fin->error, "cancelled: user asked");
    expect_outputs_error(fin, "cancelled before the outputs were uploaded");
    size_t puts = fx_stat(f, 51)->puts;
    f->store->hold_acks = false;
    heartbeats(f, 3);
    assert_int_equal(fx_stat(f, 51)->puts, puts);
}

static bool both_finished(fx_t *f, uint64_t id)
{
    return got_finished(f, id) && got_finished(f, id + 1);
}

static bool either_window_full(fx_t *f, uint64_t id)
{
    return window_full(f, id) || window_full(f, id + 1);
}

static void test_same_content_from_two_attempts_goes_once(void **state)
{
    fx_t *f = *state;
    start_welcomed(f, 10000);
    f->store->hold_acks = true;
    const char *outs[] = {"same.bin"};
    const char *shell = "yes same | head -c 8388608 > same.bin"; /* 4 windows */
    dispatch_outputs(f, 61, shell, outs, 1);
    dispatch_outputs(f, 62, shell, outs, 1);
    run_until(f, either_window_full, 61, "a window filled");
    uint64_t first = window_full(f, 61) ? 61 : 62, second = first == 61 ? 62 : 61;
    /* loomd keeps one upload per agent and object: the other attempt
     * waits rather than restart it. */
    heartbeats(f, 3);
    assert_int_equal(fx_stat(f, second)->puts, 0);
    f->store->hold_acks = false;
    run_until(f, both_finished, 61, "both finished");
    assert_string_equal(wait_finished(f, 61)->outputs_error, "");
    assert_string_equal(wait_finished(f, 62)->outputs_error, "");
    assert_int_equal(fx_stat(f, first)->data_bytes, 8 * MIB);
    assert_int_equal(fx_stat(f, second)->data_bytes, 0);
    assert_int_equal(fx_stat(f, second)->queries, 1);
}

/* --- inputs --- */

static Loom__Input input(const char *path, const char *hash, uint64_t size, uint32_t mode)
{
    Loom__Input in = LOOM__INPUT__INIT;
    in.path = (char *)path;
    in.hash = (char *)hash;
    in.size = size;
    in.mode = mode;
    return in;
}

static void dispatch_inputs(fx_t *f, uint64_t id, const char *shell, Loom__Input *inputs, size_t n)
{
    Loom__Dispatch d = shell_dispatch(id, id, shell);
    Loom__Input *ptrs[8];
    assert_true(n <= 8);
    for (size_t i = 0; i < n; i++) ptrs[i] = &inputs[i];
    d.inputs = ptrs;
    d.n_inputs = n;
    send_dispatch(f, &d);
}

static void expect_output(fx_t *f, uint64_t id, const char *want)
{
    const Loom__Finished *fin = wait_finished(f, id);
    assert_string_equal(fin->error, "");
    assert_int_equal(fin->exit_code, 0);
    char *out = attempt_output(f, id);
    assert_string_equal(out, want);
    free(out);
}

static void test_inputs_placed_before_start(void **state)
{
    fx_t *f = *state;
    start_welcomed(f, 10000);
    char csv[65], pkl[65];
    fx_object_t *a = fx_add_object(f, "a,b\n1,2\n", 8, csv);
    fx_object_t *b = fx_add_object(f, "PICKLE", 6, pkl);
    Loom__Input in[] = {input("data/train.csv", csv, 8, 0640), input("model.pkl", pkl, 6, 0)};
    const char *shell = "cat data/train.csv model.pkl; echo; stat -c '%a %n' data/train.csv "
                        "model.pkl";
    dispatch_inputs(f, 71, shell, in, 2);
    expect_output(f, 71, "a,b\n1,2\nPICKLE\n640 data/train.csv\n644 model.pkl\n");
    assert_int_equal(a->fetches, 1);
    assert_int_equal(b->fetches, 1);
    /* A copy, not a link: what the task writes leaves the cache alone. */
    dispatch_inputs(f, 72, "echo changed > model.pkl; cat model.pkl", &in[1], 1);
    expect_output(f, 72, "changed\n");
    dispatch_inputs(f, 73, "cat model.pkl", &in[1], 1);
    expect_output(f, 73, "PICKLE");
    assert_int_equal(b->fetches, 1); /* cached */

    /* loomd lacks it: the process never starts. */
    char lost[65];
    fx_hash_hex("nobody has this", 15, lost);
    Loom__Input missing = input("lost.bin", lost, 15, 0);
    dispatch_inputs(f, 74, "echo must not run", &missing, 1);
    const Loom__Finished *fin = wait_finished(f, 74);
    assert_int_equal(fin->exit_code, -1);
    char want[160];
    snprintf(want, sizeof want, "input \"lost.bin\": object %.12s… not found on loomd", lost);
    if (!strstr(fin->error, want)) fail_msg("error \"%s\" does not say \"%s\"", fin->error, want);
    assert_null(find_since(f, 0, LOOM__ENVELOPE__BODY_STARTED, 74));

    /* A size that is not the object's. */
    Loom__Input wrong = input("model.pkl", pkl, 99, 0);
    dispatch_inputs(f, 75, "echo must not run", &wrong, 1);
    fin = wait_finished(f, 75);
    assert_non_null(strstr(fin->error, "input \"model.pkl\": object"));
    assert_non_null(strstr(fin->error, "holds 6 bytes, the dispatch says 99"));
    assert_null(find_since(f, 0, LOOM__ENVELOPE__BODY_STARTED, 75));
}

/* --- the cache bound --- */

static char *object_file(fx_t *f, const char *hash)
{
    char rel[160];
    snprintf(rel, sizeof rel, "cache/objects/%.2s/%.62s", hash, hash + 2);
    return work_path(f, rel);
}

static bool cached(fx_t *f, const char *hash)
{
    char *p = object_file(f, hash);
    bool there = access(p, F_OK) == 0;
    free(p);
    return there;
}

static bool evicted_file(fx_t *f, uint64_t arg)
{
    return !cached(f, (const char *)(uintptr_t)arg);
}

static void wait_evicted(fx_t *f, const char *hash)
{
    run_until(f, evicted_file, (uint64_t)(uintptr_t)hash, "the object evicted");
}

static void test_cache_evicts_least_recently_used(void **state)
{
    fx_t *f = *state;
    f->cfg.cache_size_bytes = 3000;
    start_welcomed(f, 10000);
    char h[5][65];
    fx_object_t *o[5];
    Loom__Input in[5];
    static const char names[5][2] = {"A", "B", "C", "D", "E"};
    for (int i = 0; i < 5; i++) {
        char *content = repeated(names[i], 1000);
        o[i] = fx_add_object(f, content, 1000, h[i]);
        free(content);
        in[i] = input(names[i], h[i], 1000, 0);
    }
    dispatch_inputs(f, 81, "cat A B | wc -c", &in[0], 2); /* A, B */
    expect_output(f, 81, "2000\n");
    dispatch_inputs(f, 82, "wc -c < C", &in[2], 1); /* A, B, C: at the bound */
    expect_output(f, 82, "1000\n");
    assert_int_equal(loom_agent_cache_evicted(f->agent), 0);
    dispatch_inputs(f, 83, "wc -c < A", &in[0], 1); /* A used again: B is the oldest */
    expect_output(f, 83, "1000\n");
    dispatch_inputs(f, 84, "wc -c < D", &in[3], 1); /* D pushes B out */
    expect_output(f, 84, "1000\n");
    wait_evicted(f, h[1]);
    assert_true(cached(f, h[0]) && cached(f, h[2]) && cached(f, h[3]));
    assert_int_equal(loom_agent_cache_bytes(f->agent), 3000);
    assert_int_equal(loom_agent_cache_evicted(f->agent), 1);

    /* Four at once, over the bound: none is evicted while they are being
     * placed; afterwards the least recently used goes. */
    Loom__Input four[] = {in[0], in[2], in[3], in[4]};
    dispatch_inputs(f, 85, "cat A C D E | wc -c", four, 4);
    expect_output(f, 85, "4000\n");
    wait_evicted(f, h[0]);
    assert_true(cached(f, h[2]) && cached(f, h[3]) && cached(f, h[4]));
    assert_int_equal(loom_agent_cache_bytes(f->agent), 3000);
    assert_int_equal(o[0]->fetches, 1);

    /* An evicted object is fetched again when needed. */
    dispatch_inputs(f, 86, "wc -c < B", &in[1], 1);
    expect_output(f, 86, "1000\n");
    assert_int_equal(o[1]->fetches, 2);
}

static void test_cache_order_survives_a_restart(void **state)
{
    fx_t *f = *state;
    f->cfg.cache_size_bytes = 2000;
    start_welcomed(f, 10000);
    char h[3][65];
    Loom__Input in[3];
    static const char names[3][2] = {"P", "Q", "R"};
    for (int i = 0; i < 3; i++) {
        char *content = repeated(names[i], 1000);
        fx_add_object(f, content, 1000, h[i]);
        free(content);
        in[i] = input(names[i], h[i], 1000, 0);
    }
    dispatch_inputs(f, 91, "true", &in[0], 1);
    expect_output(f, 91, "");
    dispatch_inputs(f, 92, "true", &in[1], 1);
    expect_output(f, 92, "");
    /* P used last: Q is the oldest, on disk too (mtime). */
    struct timespec old[2] = {{.tv_sec = 1000}, {.tv_sec = 1000}};
    char *q = object_file(f, h[1]);
    assert_int_equal(utimensat(AT_FDCWD, q, old, 0), 0);
    free(q);
    stop_agent(f);
    loom_agent_destroy(&f->agent);
    f->stopped = false;
    f->cfg.cache_size_bytes = 1000; /* a smaller bound at the next start */
    start_agent(f);
    wait_evicted(f, h[1]);
    assert_true(cached(f, h[0]));
    assert_int_equal(loom_agent_cache_bytes(f->agent), 1000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        /* First, so that no earlier test has raised the memory peak. */
        cmocka_unit_test_setup_teardown(test_large_output_window_and_memory, setup_art,
                                        teardown_art),
        cmocka_unit_test_setup_teardown(test_outputs_file_folder_glob, setup_art, teardown_art),
        cmocka_unit_test_setup_teardown(test_duplicates_cost_no_bytes, setup_art, teardown_art),
        cmocka_unit_test_setup_teardown(test_bad_patterns_fail_and_upload_nothing, setup_art,
                                        teardown_art),
        cmocka_unit_test_setup_teardown(test_failed_task_uploads_nothing, setup_art, teardown_art),
        cmocka_unit_test_setup_teardown(test_loomd_error_stops_the_upload, setup_art, teardown_art),
        cmocka_unit_test_setup_teardown(test_reconnect_restarts_the_upload, setup_art,
                                        teardown_art),
        cmocka_unit_test_setup_teardown(test_cancel_while_uploading, setup_art, teardown_art),
        cmocka_unit_test_setup_teardown(test_same_content_from_two_attempts_goes_once, setup_art,
                                        teardown_art),
        cmocka_unit_test_setup_teardown(test_inputs_placed_before_start, setup_art, teardown_art),
        cmocka_unit_test_setup_teardown(test_cache_evicts_least_recently_used, setup_art,
                                        teardown_art),
        cmocka_unit_test_setup_teardown(test_cache_order_survives_a_restart, setup_art,
                                        teardown_art),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
