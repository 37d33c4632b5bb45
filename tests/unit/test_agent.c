/* The agent against a fake loomd: a real ZeroMQ ROUTER on 127.0.0.1 (port
 * picked by the OS) driven from the same libuv loop. Each wait ends on a
 * message or fails at a deadline. */
#include "test_agent_fx.h"

/* --- tests --- */

static void test_hello_contents_and_resend(void **state)
{
    fx_t *f = *state;
    start_agent(f);
    const loom_msg_t *m = wait_msg(f, LOOM__ENVELOPE__BODY_HELLO, NULL, 0);
    const Loom__Hello *h = m->hello;
    assert_string_equal(h->name, AGENT_NAME);
    assert_string_equal(h->agent_version, LOOM_VERSION);
    assert_int_equal(h->session.len, LOOM_AGENT_SESSION_LEN);
    assert_memory_equal(h->session.data, loom_agent_session(f->agent), LOOM_AGENT_SESSION_LEN);
    assert_non_null(h->resources);
    assert_true(h->resources->cpus >= 1);
    assert_true(h->resources->memory_bytes > 0);
    assert_int_equal(h->resources->slots, 2);
    assert_int_equal(h->resources->n_labels, 2);
    assert_string_equal(h->resources->labels[0]->key, "zone");
    assert_string_equal(h->resources->labels[0]->value, "eu");
    assert_string_equal(h->resources->labels[1]->key, "gpu");
    assert_string_equal(h->resources->labels[1]->value, "none");
    assert_int_equal(h->n_attempts, 0);
    assert_true(h->hostname[0] != '\0');
    assert_false(loom_agent_welcomed(f->agent));
    /* Unanswered, it is sent again, from the same session. */
    const loom_msg_t *again = wait_msg(f, LOOM__ENVELOPE__BODY_HELLO, NULL, 0);
    assert_memory_equal(again->hello->session.data, h->session.data, LOOM_AGENT_SESSION_LEN);
}

static void send_error(fx_t *f, bool not_enrolled, bool revoked)
{
    Loom__Error e = LOOM__ERROR__INIT;
    e.message = "from the test";
    e.not_enrolled = not_enrolled;
    e.revoked = revoked;
    loom_msg_t m = LOOM__ENVELOPE__INIT;
    m.body_case = LOOM__ENVELOPE__BODY_ERROR;
    m.error = &e;
    send_msg(f, &m);
}

static void on_refused(void *ud)
{
    *(int *)ud += 1;
}

/* With a join token: Join first (the token and name), then, once Joined,
 * loomd's key is pinned and Hello follows; a restart needs no token. */
static void test_join_pins_the_server_key(void **state)
{
    fx_t *f = *state;
    char *token = loom_xasprintf("loomjoin1.%s.%s", f->server_pub,
                                 "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    f->cfg.join_token = token;
    f->cfg.server_key = NULL;
    start_agent(f);
    char *keyfile = loom_xasprintf("%s/curve/agent.key", f->tmp);
    struct stat st;
    assert_int_equal(stat(keyfile, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    const loom_msg_t *j = wait_msg(f, LOOM__ENVELOPE__BODY_JOIN, NULL, 0);
    assert_string_equal(j->join->token, token);
    assert_string_equal(j->join->name, AGENT_NAME);
    Loom__Joined ok = LOOM__JOINED__INIT;
    ok.server_public_key = f->server_pub;
    loom_msg_t m = LOOM__ENVELOPE__INIT;
    m.body_case = LOOM__ENVELOPE__BODY_JOINED;
    m.joined = &ok;
    send_msg(f, &m);
    wait_msg(f, LOOM__ENVELOPE__BODY_HELLO, NULL, 0);
    char *pinned = loom_xasprintf("%s/curve/server.pub", f->tmp);
    char text[64] = "";
    FILE *fp = fopen(pinned, "r");
    assert_non_null(fp);
    assert_non_null(fgets(text, sizeof text, fp));
    fclose(fp);
    text[strcspn(text, "\n")] = '\0';
    assert_string_equal(text, f->server_pub);
    free(pinned);
    free(keyfile);
    free(token);
}

/* Not enrolled: it keeps asking; revoked: it stops and says so once. */
static void test_not_enrolled_waits_revoked_stops(void **state)
{
    fx_t *f = *state;
    int refused = 0;
    f->cfg.on_refused = on_refused;
    f->cfg.refused_ud = &refused;
    start_agent(f);
    wait_msg(f, LOOM__ENVELOPE__BODY_HELLO, NULL, 0);
    send_error(f, true, false);
    wait_msg(f, LOOM__ENVELOPE__BODY_HELLO, NULL, 0);
    assert_false(loom_agent_refused(f->agent));
    send_error(f, false, true);
    uint64_t end = loom_mono_ms() + WAIT_MS;
    while (!loom_agent_refused(f->agent) && loom_mono_ms() < end) run_once(f, 20);
    assert_true(loom_agent_refused(f->agent));
    assert_int_equal(refused, 1);
    assert_int_equal(strlen(loom_agent_public_key(f->agent)), 40);
}

static void test_heartbeats_echo_dispatch_seq_and_held(void **state)
{
    fx_t *f = *state;
    start_welcomed(f, 10000);
    const loom_msg_t *hb = wait_msg(f, LOOM__ENVELOPE__BODY_HEARTBEAT, NULL, 0);
    assert_int_equal(hb->heartbeat->dispatch_seq, 0);
    assert_int_equal(hb->heartbeat->n_attempts, 0);
    dispatch_shell(f, 101, 7, "exec sleep 60", 0);
    const loom_msg_t *st = wait_msg(f, LOOM__ENVELOPE__BODY_STARTED, NULL, 0);
    assert_int_equal(st->started->attempt_id, 101);
    assert_true(st->started->pid > 0);
    hb = wait_msg(f, LOOM__ENVELOPE__BODY_HEARTBEAT, heartbeat_seq_is, 7);
    assert_int_equal(hb->heartbeat->running, 1);
    assert_int_equal(hb->heartbeat->n_attempts, 1);
    assert_int_equal(hb->heartbeat->attempts[0], 101);
    assert_true(hb->heartbeat->sent_unix_ms > 0);
    /* A new Welcome starts the echo again from 0. */
    send_welcome(f, 10000, NULL, 0);
    hb = wait_msg(f, LOOM__ENVELOPE__BODY_HEARTBEAT, heartbeat_seq_is, 0);
    assert_true(holds(hb->heartbeat->attempts, hb->heartbeat->n_attempts, 101));
}

static void test_dispatch_streams_output_then_finished(void **state)
{
    fx_t *f = *state;
    start_welcomed(f, 10000);
    size_t from = f->n_msgs;
    dispatch_shell(f, 5, 1, "seq 1 30000; echo done >&2; exit 3", 0);
    const loom_msg_t *fin = wait_msg(f, LOOM__ENVELOPE__BODY_FINISHED, for_attempt, 5);
    assert_int_equal(fin->finished->exit_code, 3);
    assert_int_equal(fin->finished->signal, 0);
    assert_string_equal(fin->finished->error, "");
    assert_true(fin->finished->ended_unix_ms >= fin->finished->started_unix_ms);
    assert_true(fin->finished->max_rss_bytes > 0);

    loom_buf_t want = {0}, out = {0}, err = {0};
    for (int i = 1; i <= 30000; i++) loom_buf_printf(&want, "%d\n", i);
    uint64_t seq = 0;
    bool started = false;
    for (size_t i = from; f->msgs[i] != fin; i++) {
        const loom_msg_t *m = f->msgs[i];
        if (m->body_case == LOOM__ENVELOPE__BODY_STARTED) started = true;
        if (m->body_case != LOOM__ENVELOPE__BODY_LOG) continue;
        assert_true(started); /* Started comes first */
        assert_int_equal(m->log->attempt_id, 5);
        assert_int_equal(m->log->seq, ++seq); /* consecutive over both streams */
        assert_true(m->log->data.len > 0 && m->log->data.len <= LOOM_LOG_CHUNK_MAX);
        loom_buf_append(m->log->stream == LOOM__STREAM__STREAM_STDERR ? &err : &out,
                        m->log->data.data, m->log->data.len);
    }
    assert_true(seq >= 2);
    assert_int_equal(fin->finished->log_seq, seq);
    assert_int_equal(out.len, want.len);
    assert_string_equal(out.data, want.data);
    assert_string_equal(err.data, "done\n");
    /* Acked, the attempt is no longer held. */
    send_log_ack(f, 5, seq);
    send_finished_ack(f, 5);
    send_welcome(f, 10000, NULL, 0);
    const loom_msg_t *hb = wait_msg(f, LOOM__ENVELOPE__BODY_HEARTBEAT, heartbeat_seq_is, 0);
    assert_int_equal(hb->heartbeat->n_attempts, 0);
    assert_int_equal(loom_agent_unacked_bytes(f->agent), 0);
    loom_buf_free(&want);
    loom_buf_free(&out);
    loom_buf_free(&err);
}

static void test_task_environment_and_folder(void **state)
{
    fx_t *f = *state;
    start_welcomed(f, 10000);
    Loom__EnvVar foo = LOOM__ENV_VAR__INIT, evil = LOOM__ENV_VAR__INIT;
    foo.name = "FOO";
    foo.value = "bar baz";
    evil.name = "LOOM_TASK";
    evil.value = "not-mine";
    Loom__EnvVar *env[] = {&foo, &evil};
    static const char script[] =
        "env | grep -E '^(FOO|LOOM_(ATTEMPT|ATTEMPT_ID|RUN_ID|TASK|PIPELINE|WORK_DIR))=' "
        "| sort; pwd -P";
    char *argv[] = {"sh", "-c", (char *)script};
    Loom__Dispatch d = LOOM__DISPATCH__INIT;
    d.attempt_id = 9;
    d.run_id = 77;
    d.pipeline = "nightly";
    d.task = "train";
    d.argv = argv;
    d.n_argv = 3;
    d.env = env;
    d.n_env = 2;
    d.seq = 1;
    d.attempt_number = 3;
    send_dispatch(f, &d);
    wait_msg(f, LOOM__ENVELOPE__BODY_FINISHED, for_attempt, 9);
    loom_buf_t out = {0};
    for (size_t i = 0; i < f->n_msgs; i++)
        if (f->msgs[i]->body_case == LOOM__ENVELOPE__BODY_LOG)
            loom_buf_append(&out, f->msgs[i]->log->data.data, f->msgs[i]->log->data.len);
    char *real = realpath(f->tmp, NULL);
    char *want = loom_xasprintf("FOO=bar baz\nLOOM_ATTEMPT=3\nLOOM_ATTEMPT_ID=9\n"
                                "LOOM_PIPELINE=nightly\nLOOM_RUN_ID=77\nLOOM_TASK=train\n"
                                "LOOM_WORK_DIR=%s/attempts/9\n%s/attempts/9\n",
                                real, real);
    assert_string_equal(out.data, want);
    free(want);
    free(real);
    loom_buf_free(&out);
}

static void test_finished_resent_until_acked(void **state)
{
    fx_t *f = *state;
    start_welcomed(f, 10000);
    dispatch_shell(f, 12, 1, "exit 4", 0);
    const loom_msg_t *fin = wait_msg(f, LOOM__ENVELOPE__BODY_FINISHED, for_attempt, 12);
    assert_int_equal(fin->finished->exit_code, 4);
    const loom_msg_t *hello;
    size_t from = rewelcome(f, &hello);
    assert_true(holds(hello->hello->attempts, hello->hello->n_attempts, 12));
    assert_int_equal(count_since(f, from, LOOM__ENVELOPE__BODY_FINISHED, 12), 1);
    fin = find_since(f, from, LOOM__ENVELOPE__BODY_FINISHED, 12);
    assert_int_equal(fin->finished->exit_code, 4);

    send_finished_ack(f, 12);
    from = rewelcome(f, &hello);
    assert_int_equal(hello->hello->n_attempts, 0);
    assert_int_equal(count_since(f, from, LOOM__ENVELOPE__BODY_FINISHED, 12), 0);
}

static void test_unacked_chunks_resent_after_welcome(void **state)
{
    fx_t *f = *state;
    start_welcomed(f, 10000);
    size_t from = f->n_msgs;
    dispatch_shell(f, 21, 1, "printf abc; printf def >&2; printf ghi", 0);
    wait_msg(f, LOOM__ENVELOPE__BODY_FINISHED, for_attempt, 21);
    send_finished_ack(f, 21);
    size_t first = count_since(f, from, LOOM__ENVELOPE__BODY_LOG, 21);
    assert_true(first >= 2);
    const loom_msg_t *orig[16];
    size_t n = 0;
    for (size_t i = from; i < f->n_msgs && n < 16; i++)
        if (f->msgs[i]->body_case == LOOM__ENVELOPE__BODY_LOG) orig[n++] = f->msgs[i];

    size_t again = rewelcome(f, NULL);
    size_t k = 0;
    for (size_t i = again; i < f->n_msgs; i++) {
        const loom_msg_t *m = f->msgs[i];
        if (m->body_case != LOOM__ENVELOPE__BODY_LOG) continue;
        assert_true(k < n);
        assert_int_equal(m->log->seq, orig[k]->log->seq);
        assert_int_equal(m->log->stream, orig[k]->log->stream);
        assert_int_equal(m->log->data.len, orig[k]->log->data.len);
        assert_memory_equal(m->log->data.data, orig[k]->log->data.data, m->log->data.len);
        k++;
    }
    assert_int_equal(k, n);

    /* Acking up to a seq drops those chunks only. */
    send_log_ack(f, 21, orig[0]->log->seq);
    again = rewelcome(f, NULL);
    assert_int_equal(count_since(f, again, LOOM__ENVELOPE__BODY_LOG, 21), n - 1);
    send_log_ack(f, 21, orig[n - 1]->log->seq);
    again = rewelcome(f, NULL);
    assert_int_equal(count_since(f, again, LOOM__ENVELOPE__BODY_LOG, 21), 0);
    assert_int_equal(loom_agent_unacked_bytes(f->agent), 0);
}

static void test_hello_required_keeps_session(void **state)
{
    fx_t *f = *state;
    const loom_msg_t *first = start_welcomed(f, 10000);
    send_hello_required(f);
    const loom_msg_t *again = wait_msg(f, LOOM__ENVELOPE__BODY_HELLO, NULL, 0);
    assert_false(loom_agent_welcomed(f->agent));
    assert_int_equal(again->hello->session.len, LOOM_AGENT_SESSION_LEN);
    assert_memory_equal(again->hello->session.data, first->hello->session.data,
                        LOOM_AGENT_SESSION_LEN);
}

/* After loomd restarts, each heartbeat and result that reaches it before
 * the agent's Hello is answered "send hello": one Hello answers them all
 * (loomd would reconcile each one anew), and the timer repeats it. */
static void test_a_burst_of_hello_required_gets_one_hello(void **state)
{
    fx_t *f = *state;
    f->cfg.hello_interval_ms = 60000;
    start_welcomed(f, 10000);
    size_t from = f->n_msgs;
    for (int i = 0; i < 4; i++) send_hello_required(f);
    wait_msg(f, LOOM__ENVELOPE__BODY_HELLO, NULL, 0);
    send_welcome(f, 10000, NULL, 0);
    /* Heartbeats resume after the Welcome, so after any Hello the four
     * answers could have caused. */
    wait_msg(f, LOOM__ENVELOPE__BODY_HEARTBEAT, NULL, 0);
    size_t hellos = 0;
    for (size_t i = from; i < f->n_msgs; i++)
        hellos += f->msgs[i]->body_case == LOOM__ENVELOPE__BODY_HELLO;
    assert_int_equal(hellos, 1);
    assert_true(loom_agent_welcomed(f->agent));
}

static void test_cancel_kills_promptly(void **state)
{
    fx_t *f = *state;
    start_welcomed(f, 10000);
    dispatch_shell(f, 31, 1, "exec sleep 60", 0);
    wait_msg(f, LOOM__ENVELOPE__BODY_STARTED, for_attempt, 31);
    uint64_t t0 = loom_mono_ms();
    send_cancel(f, 31, "user asked");
    /* Well inside the 2 s grace: SIGTERM did it. */
    const loom_msg_t *fin = wait_msg_for(f, LOOM__ENVELOPE__BODY_FINISHED, for_attempt, 31, 1500);
    assert_true(loom_mono_ms() - t0 < 1500);
    assert_true(fin->finished->cancelled);
    assert_false(fin->finished->timed_out);
    assert_int_equal(fin->finished->signal, SIGTERM);
    assert_string_equal(fin->finished->error, "cancelled: user asked");
    assert_int_equal(loom_agent_running(f->agent), 0);
}

static void test_cancel_after_finish_drops_result(void **state)
{
    fx_t *f = *state;
    start_welcomed(f, 10000);
    dispatch_shell(f, 32, 1, "true", 0);
    wait_msg(f, LOOM__ENVELOPE__BODY_FINISHED, for_attempt, 32);
    send_cancel(f, 32, "too late");
    const loom_msg_t *hello;
    size_t from = rewelcome(f, &hello);
    assert_int_equal(hello->hello->n_attempts, 0);
    assert_int_equal(count_since(f, from, LOOM__ENVELOPE__BODY_FINISHED, 32), 0);
}

static void test_timeout_reports_timed_out(void **state)
{
    fx_t *f = *state;
    start_welcomed(f, 10000);
    dispatch_shell(f, 41, 1, "exec sleep 60", 200);
    const loom_msg_t *fin = wait_msg(f, LOOM__ENVELOPE__BODY_FINISHED, for_attempt, 41);
    assert_true(fin->finished->timed_out);
    assert_false(fin->finished->cancelled);
    assert_int_equal(fin->finished->signal, SIGTERM);
    assert_string_equal(fin->finished->error, "timed out after 0.200s");
}

static void test_no_free_slot_and_duplicates(void **state)
{
    fx_t *f = *state;
    start_welcomed(f, 10000);
    dispatch_shell(f, 51, 1, "exec sleep 60", 0);
    dispatch_shell(f, 51, 2, "exec sleep 60", 0); /* duplicate: ignored */
    dispatch_shell(f, 52, 3, "exec sleep 60", 0);
    dispatch_shell(f, 53, 4, "exec sleep 60", 0); /* slots = 2 */
    const loom_msg_t *fin = wait_msg(f, LOOM__ENVELOPE__BODY_FINISHED, for_attempt, 53);
    assert_int_equal(fin->finished->exit_code, -1);
    assert_string_equal(fin->finished->error, "agent " AGENT_NAME " has no free slot");
    const loom_msg_t *hb = wait_msg(f, LOOM__ENVELOPE__BODY_HEARTBEAT, heartbeat_seq_is, 4);
    assert_int_equal(hb->heartbeat->running, 2);
    assert_int_equal(count_since(f, 0, LOOM__ENVELOPE__BODY_STARTED, 51), 1);
    assert_int_equal(count_since(f, 0, LOOM__ENVELOPE__BODY_STARTED, 52), 1);
    assert_int_equal(count_since(f, 0, LOOM__ENVELOPE__BODY_STARTED, 53), 0);
    assert_int_equal(count_since(f, 0, LOOM__ENVELOPE__BODY_FINISHED, 51), 0);
}

/* --prefetch 1 on one slot: a second Dispatch is held, not refused, and
 * starts when the slot frees; a conditional Cancel hands back only a held
 * attempt and leaves a running one alone. */
static void test_prefetch_holds_and_hands_back(void **state)
{
    fx_t *f = *state;
    f->cfg.slots = 1;
    f->cfg.prefetch = 1;
    start_welcomed(f, 10000);
    dispatch_shell(f, 61, 1, "exec sleep 60", 0);
    dispatch_shell(f, 62, 2, "echo second", 0);
    wait_msg(f, LOOM__ENVELOPE__BODY_STARTED, for_attempt, 61);
    const loom_msg_t *hb = wait_msg(f, LOOM__ENVELOPE__BODY_HEARTBEAT, heartbeat_seq_is, 2);
    assert_int_equal(hb->heartbeat->running, 1);
    assert_int_equal(hb->heartbeat->n_attempts, 2); /* both held */
    send_cancel_if(f, 61, "elsewhere", true);       /* running: left alone */
    send_cancel_if(f, 62, "elsewhere", true);
    const loom_msg_t *fin = wait_msg(f, LOOM__ENVELOPE__BODY_FINISHED, for_attempt, 62);
    assert_true(fin->finished->refused);
    assert_string_equal(fin->finished->error, "withdrawn before it started: elsewhere");
    assert_int_equal(count_since(f, 0, LOOM__ENVELOPE__BODY_STARTED, 62), 0);
    /* Another held one starts the moment the slot frees. */
    dispatch_shell(f, 63, 3, "echo third", 0);
    wait_msg(f, LOOM__ENVELOPE__BODY_HEARTBEAT, heartbeat_seq_is, 3);
    assert_int_equal(count_since(f, 0, LOOM__ENVELOPE__BODY_STARTED, 63), 0);
    send_cancel(f, 61, "user asked");
    fin = wait_msg(f, LOOM__ENVELOPE__BODY_FINISHED, for_attempt, 61);
    assert_string_equal(fin->finished->error, "cancelled: user asked");
    fin = wait_msg(f, LOOM__ENVELOPE__BODY_FINISHED, for_attempt, 63);
    assert_int_equal(fin->finished->exit_code, 0);
    assert_int_equal(count_since(f, 0, LOOM__ENVELOPE__BODY_FINISHED, 61), 1);
    assert_int_equal(loom_agent_running(f->agent), 0);
}

static bool heartbeat_idle(const loom_msg_t *m, uint64_t arg)
{
    (void)arg;
    return m->heartbeat->running == 0 && m->heartbeat->n_attempts == 0;
}

static void test_welcome_cancel_forgets(void **state)
{
    fx_t *f = *state;
    start_welcomed(f, 10000);
    dispatch_shell(f, 61, 1, "echo out; exec sleep 60", 0);
    wait_msg(f, LOOM__ENVELOPE__BODY_LOG, for_attempt, 61);
    send_hello_required(f);
    const loom_msg_t *hello = wait_msg(f, LOOM__ENVELOPE__BODY_HELLO, NULL, 0);
    assert_true(holds(hello->hello->attempts, hello->hello->n_attempts, 61));
    size_t from = f->n_msgs;
    uint64_t cancel[] = {61};
    send_welcome(f, 10000, cancel, 1);
    wait_msg(f, LOOM__ENVELOPE__BODY_HEARTBEAT, heartbeat_idle, 0);
    /* Killed and forgotten: no result, and its chunks are not resent. */
    assert_int_equal(count_since(f, from, LOOM__ENVELOPE__BODY_FINISHED, 61), 0);
    assert_int_equal(count_since(f, from, LOOM__ENVELOPE__BODY_LOG, 61), 0);
    assert_int_equal(loom_agent_unacked_bytes(f->agent), 0);
}

static void test_garbage_does_not_crash(void **state)
{
    fx_t *f = *state;
    start_welcomed(f, 10000);
    send_raw(f, "\xff\x00garbage\x01", 10);
    /* version 1 and a body field (99) no version of loom knows */
    static const uint8_t unknown[] = {0x08, 0x01, 0x9a, 0x06, 0x02, 0x08, 0x01};
    send_raw(f, unknown, sizeof unknown);
    static const uint8_t wrong_version[] = {0x08, 0x63};
    send_raw(f, wrong_version, sizeof wrong_version);
    send_raw(f, "", 0);
    const void *parts[3] = {f->rid, "a", "b"};
    size_t lens[3] = {f->rid_len, 1, 1};
    assert_int_equal(loom_zsock_send(f->router, parts, lens, 3), 0);
    /* A kind the agent never receives */
    Loom__Started st = LOOM__STARTED__INIT;
    st.attempt_id = 1;
    loom_msg_t m = LOOM__ENVELOPE__INIT;
    m.body_case = LOOM__ENVELOPE__BODY_STARTED;
    m.started = &st;
    send_msg(f, &m);
    dispatch_shell(f, 71, 1, "echo alive", 0);
    const loom_msg_t *log = wait_msg(f, LOOM__ENVELOPE__BODY_LOG, for_attempt, 71);
    assert_int_equal(log->log->data.len, 6);
    assert_memory_equal(log->log->data.data, "alive\n", 6);
    const loom_msg_t *fin = wait_msg(f, LOOM__ENVELOPE__BODY_FINISHED, for_attempt, 71);
    assert_int_equal(fin->finished->exit_code, 0);
    assert_true(loom_agent_welcomed(f->agent));
}

static void test_silent_loomd_means_hello_again(void **state)
{
    fx_t *f = *state;
    start_welcomed(f, 150);
    uint64_t t0 = loom_mono_ms();
    wait_msg(f, LOOM__ENVELOPE__BODY_HELLO, NULL, 0);
    assert_true(loom_mono_ms() - t0 >= 100);
    assert_false(loom_agent_welcomed(f->agent));
}

static void test_backpressure_pauses_without_loss(void **state)
{
    fx_t *f = *state;
    enum { TOTAL = 600000, LIMIT = 16384 };
    f->cfg.max_unacked_bytes = LIMIT;
    start_welcomed(f, 10000);
    dispatch_shell(f, 81, 1, "yes 0123456789abcdef | head -c 600000", 0);
    loom_buf_t got = {0};
    uint64_t last = 0;
    while (got.len <= LIMIT) {
        const loom_msg_t *m = wait_msg(f, LOOM__ENVELOPE__BODY_LOG, for_attempt, 81);
        loom_buf_append(&got, m->log->data.data, m->log->data.len);
        last = m->log->seq;
    }
    /* Unacked, the agent stops reading: a few heartbeats later little more
     * has come, and the task has not been able to finish. */
    for (int i = 0; i < 5; i++) wait_msg(f, LOOM__ENVELOPE__BODY_HEARTBEAT, NULL, 0);
    assert_true(loom_agent_output_paused(f->agent));
    size_t held = 0;
    for (size_t i = 0; i < f->n_msgs; i++)
        if (f->msgs[i]->body_case == LOOM__ENVELOPE__BODY_LOG) held += f->msgs[i]->log->data.len;
    assert_true(held < LIMIT + 2 * 65536);
    assert_int_equal(count_since(f, 0, LOOM__ENVELOPE__BODY_FINISHED, 81), 0);
    /* Ack as we go and everything arrives, in order. */
    send_log_ack(f, 81, last);
    const loom_msg_t *fin = NULL;
    while (!fin) {
        const loom_msg_t *m = next_msg(f);
        if (m->body_case == LOOM__ENVELOPE__BODY_FINISHED) fin = m;
        if (m->body_case != LOOM__ENVELOPE__BODY_LOG) continue;
        assert_int_equal(m->log->seq, ++last);
        loom_buf_append(&got, m->log->data.data, m->log->data.len);
        send_log_ack(f, 81, m->log->seq);
    }
    assert_int_equal(fin->finished->exit_code, 0);
    assert_int_equal(got.len, TOTAL);
    for (size_t i = 0; i < got.len; i++)
        assert_int_equal(got.data[i], "0123456789abcdef\n"[i % 17]);
    loom_buf_free(&got);
}

static void test_stop_kills_running_tasks(void **state)
{
    fx_t *f = *state;
    start_welcomed(f, 10000);
    dispatch_shell(f, 91, 1, "exec sleep 60", 0);
    const loom_msg_t *st = wait_msg(f, LOOM__ENVELOPE__BODY_STARTED, for_attempt, 91);
    uint64_t t0 = loom_mono_ms();
    stop_agent(f);
    assert_true(loom_mono_ms() - t0 < 1500); /* SIGTERM, not the grace period */
    char path[64];
    snprintf(path, sizeof path, "/proc/%u", st->started->pid);
    assert_int_equal(access(path, F_OK), -1); /* killed and reaped */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_hello_contents_and_resend, setup, teardown),
        cmocka_unit_test_setup_teardown(test_join_pins_the_server_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_enrolled_waits_revoked_stops, setup, teardown),
        cmocka_unit_test_setup_teardown(test_heartbeats_echo_dispatch_seq_and_held, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_dispatch_streams_output_then_finished, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_task_environment_and_folder, setup, teardown),
        cmocka_unit_test_setup_teardown(test_finished_resent_until_acked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unacked_chunks_resent_after_welcome, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hello_required_keeps_session, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_burst_of_hello_required_gets_one_hello, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_cancel_kills_promptly, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_after_finish_drops_result, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout_reports_timed_out, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prefetch_holds_and_hands_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_free_slot_and_duplicates, setup, teardown),
        cmocka_unit_test_setup_teardown(test_welcome_cancel_forgets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_garbage_does_not_crash, setup, teardown),
        cmocka_unit_test_setup_teardown(test_silent_loomd_means_hello_again, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backpressure_pauses_without_loss, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_kills_running_tasks, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
