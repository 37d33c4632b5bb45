/* The scheduler in-process against fake agents: real ZeroMQ DEALER sockets
 * speaking the wire protocol by hand, so the test can send what a real agent
 * never would (garbage, unknown kinds, stale attempts). */
#include "sched_fixture.h"

static void test_bad_messages_are_answered_and_dropped(void **state)
{
    fixture_t *f = *state;
    void *bad = dealer(f, "bad");
    void *good = dealer(f, "good");
    hello(f, good, "good", 1);

    send_raw(bad, "\xff\xff\xff garbage", 12);
    loom_msg_t *e = expect(f, bad, LOOM__ENVELOPE__BODY_ERROR);
    assert_false(e->error->hello_required);
    assert_non_null(strstr(e->error->message, "not a valid envelope"));
    loom_codec_free(e);

    /* version 1, then field 99 (a kind from the future): no known body. */
    static const uint8_t future[] = {0x08, 0x01, 0x9a, 0x06, 0x00};
    send_raw(bad, future, sizeof future);
    e = expect(f, bad, LOOM__ENVELOPE__BODY_ERROR);
    assert_string_equal(e->error->message, "unknown message kind");
    loom_codec_free(e);

    static const uint8_t v9[] = {0x08, 0x09};
    send_raw(bad, v9, sizeof v9);
    e = expect(f, bad, LOOM__ENVELOPE__BODY_ERROR);
    assert_non_null(strstr(e->error->message, "version 9"));
    loom_codec_free(e);

    /* Anything but hello from an agent loomd does not know. */
    Loom__Heartbeat hb = LOOM__HEARTBEAT__INIT;
    loom_msg_t m = LOOM__ENVELOPE__INIT;
    m.body_case = LOOM__ENVELOPE__BODY_HEARTBEAT;
    m.heartbeat = &hb;
    send_msg(bad, &m);
    e = expect(f, bad, LOOM__ENVELOPE__BODY_ERROR);
    assert_true(e->error->hello_required);
    loom_codec_free(e);

    /* Over ZMQ_MAXMSGSIZE: ZeroMQ drops the connection before loomd reads a
     * byte of it. */
    size_t huge_len = LOOM_MSG_MAX + 1024;
    char *huge = loom_xcalloc(1, huge_len);
    send_raw(bad, huge, huge_len);
    free(huge);

    /* The well-behaved agent is unaffected. */
    send_msg(good, &m);
    loom_msg_t *back = expect(f, good, LOOM__ENVELOPE__BODY_HEARTBEAT);
    loom_codec_free(back);
    loom_sched_stats_t st;
    loom_sched_stats(f->s, &st);
    assert_int_equal(st.bad_messages, 3);
}

static const char dag[] = "pipeline: p\n"
                          "tasks:\n"
                          "  a:\n"
                          "    run: echo a\n"
                          "  b:\n"
                          "    needs: [a]\n"
                          "    run: [echo, b]\n";

static uint64_t start_run(fixture_t *f)
{
    json_t *res = NULL;
    loom_diags_t diags = {0};
    assert_int_equal(loom_sched_submit(f->s, "p.yaml", dag, strlen(dag), NULL, &res, &diags), 0);
    json_decref(res);
    uint64_t run_id = 0;
    char why[128];
    assert_int_equal(
        loom_sched_start_run(f->s, "p", 0, "manual", NULL, false, &run_id, why, sizeof why), 0);
    return run_id;
}

static void send_log(void *d, uint64_t attempt, uint64_t seq, const char *text)
{
    Loom__LogChunk c = LOOM__LOG_CHUNK__INIT;
    c.attempt_id = attempt;
    c.seq = seq;
    c.data.data = (uint8_t *)text;
    c.data.len = strlen(text);
    loom_msg_t m = LOOM__ENVELOPE__INIT;
    m.body_case = LOOM__ENVELOPE__BODY_LOG;
    m.log = &c;
    send_msg(d, &m);
}

static void send_finished(void *d, uint64_t attempt, int exit_code)
{
    Loom__Finished fin = LOOM__FINISHED__INIT;
    fin.attempt_id = attempt;
    fin.exit_code = exit_code;
    fin.log_seq = 2;
    loom_msg_t m = LOOM__ENVELOPE__INIT;
    m.body_case = LOOM__ENVELOPE__BODY_FINISHED;
    m.finished = &fin;
    send_msg(d, &m);
}

static const char *task_state(fixture_t *f, uint64_t run_id, size_t idx, json_t **keep)
{
    json_t *run = NULL;
    assert_int_equal(loom_store_json_run(loom_sched_store(f->s), run_id, &run), 0);
    *keep = run;
    return json_string_value(
        json_object_get(json_array_get(json_object_get(run, "tasks"), idx), "state"));
}

static void test_results_logs_and_fencing(void **state)
{
    fixture_t *f = *state;
    void *ag = dealer(f, "ag");
    void *other = dealer(f, "other");
    hello(f, ag, "ag", 1);
    uint64_t run_id = start_run(f);

    loom_msg_t *d = expect(f, ag, LOOM__ENVELOPE__BODY_DISPATCH);
    uint64_t attempt = d->dispatch->attempt_id;
    assert_string_equal(d->dispatch->task, "a");
    assert_string_equal(d->dispatch->shell, "echo a");
    assert_int_equal(d->dispatch->seq, 1);
    loom_codec_free(d);

    /* Chunks are stored once and in order: a resend is acked, not stored
     * again; a chunk after a gap is not acked. */
    send_log(ag, attempt, 1, "one\n");
    loom_msg_t *ack = expect(f, ag, LOOM__ENVELOPE__BODY_LOG_ACK);
    assert_int_equal(ack->log_ack->seq, 1);
    loom_codec_free(ack);
    send_log(ag, attempt, 1, "one\n");
    ack = expect(f, ag, LOOM__ENVELOPE__BODY_LOG_ACK);
    assert_int_equal(ack->log_ack->seq, 1);
    loom_codec_free(ack);
    send_log(ag, attempt, 3, "three\n");
    send_log(ag, attempt, 2, "two\n");
    ack = expect(f, ag, LOOM__ENVELOPE__BODY_LOG_ACK);
    assert_int_equal(ack->log_ack->seq, 2);
    loom_codec_free(ack);

    /* Another agent cannot report this attempt. */
    hello(f, other, "other", 1);
    send_finished(other, attempt, 0);
    loom_codec_free(expect(f, other, LOOM__ENVELOPE__BODY_FINISHED_ACK));
    loom_sched_stats_t st;
    loom_sched_stats(f->s, &st);
    assert_int_equal(st.refused, 1);
    assert_int_equal(st.finished, 0);

    send_finished(ag, attempt, 0);
    loom_codec_free(expect(f, ag, LOOM__ENVELOPE__BODY_FINISHED_ACK));
    /* b is dispatched right away, to whichever agent has the free slot. */
    json_t *keep;
    assert_string_equal(task_state(f, run_id, 0, &keep), "succeeded");
    json_decref(keep);
    assert_string_equal(task_state(f, run_id, 1, &keep), "running");
    json_decref(keep);

    /* The same result again is acknowledged and not recorded twice. */
    send_finished(ag, attempt, 1);
    loom_codec_free(expect(f, ag, LOOM__ENVELOPE__BODY_FINISHED_ACK));
    loom_sched_stats(f->s, &st);
    assert_int_equal(st.finished, 1);
    assert_int_equal(st.refused, 1);
    assert_string_equal(task_state(f, run_id, 0, &keep), "succeeded");
    json_decref(keep);

    char *path = loom_sched_log_path(f->s, run_id, attempt);
    char *text = NULL;
    assert_int_equal(loom_read_file(path, 1024, &text, NULL), 0);
    assert_string_equal(text, "one\ntwo\n");
    free(text);
    free(path);
}

static void test_restarted_agent_loses_its_attempts(void **state)
{
    fixture_t *f = *state;
    void *ag = dealer(f, "ag");
    hello(f, ag, "ag", 1);
    uint64_t run_id = start_run(f);
    loom_msg_t *d = expect(f, ag, LOOM__ENVELOPE__BODY_DISPATCH);
    uint64_t first = d->dispatch->attempt_id;
    loom_codec_free(d);

    /* Same name, new session, holding nothing: the attempt is lost and the
     * task is dispatched again under a new attempt id. */
    Loom__Resources res = LOOM__RESOURCES__INIT;
    res.slots = 1;
    Loom__Hello h = LOOM__HELLO__INIT;
    h.name = "ag";
    uint8_t session[16] = {9};
    h.session.data = session;
    h.session.len = sizeof session;
    h.resources = &res;
    loom_msg_t m = LOOM__ENVELOPE__INIT;
    m.body_case = LOOM__ENVELOPE__BODY_HELLO;
    m.hello = &h;
    send_msg(ag, &m);
    d = expect(f, ag, LOOM__ENVELOPE__BODY_DISPATCH);
    assert_int_not_equal(d->dispatch->attempt_id, first);
    assert_int_equal(d->dispatch->attempt_number, 2);
    loom_codec_free(d);

    /* The old attempt's late result is refused. */
    send_finished(ag, first, 0);
    loom_codec_free(expect(f, ag, LOOM__ENVELOPE__BODY_FINISHED_ACK));
    loom_sched_stats_t st;
    loom_sched_stats(f->s, &st);
    assert_int_equal(st.refused, 1);
    json_t *keep;
    assert_string_equal(task_state(f, run_id, 0, &keep), "running");
    json_decref(keep);
}

static void send_heartbeat(void *d, uint64_t dispatch_seq, uint64_t *held, size_t n_held)
{
    Loom__Heartbeat hb = LOOM__HEARTBEAT__INIT;
    hb.dispatch_seq = dispatch_seq;
    hb.attempts = held;
    hb.n_attempts = n_held;
    loom_msg_t m = LOOM__ENVELOPE__INIT;
    m.body_case = LOOM__ENVELOPE__BODY_HEARTBEAT;
    m.heartbeat = &hb;
    send_msg(d, &m);
}

/* An agent that sends a second Hello before the first is answered (it got
 * several "send hello" answers after loomd restarted) has it answered after
 * loomd welcomed the first and dispatched to it: that Hello cannot list the
 * attempt, and must not make loomd give it up. */
static void test_a_second_hello_does_not_lose_what_followed_the_first(void **state)
{
    fixture_t *f = *state;
    void *ag = dealer(f, "ag");
    hello(f, ag, "ag", 1);
    uint64_t run_id = start_run(f);
    loom_msg_t *d = expect(f, ag, LOOM__ENVELOPE__BODY_DISPATCH);
    uint64_t attempt = d->dispatch->attempt_id;
    loom_codec_free(d);
    hello(f, ag, "ag", 1); /* same session, holding nothing */
    /* Its heartbeats judge it: one that has not seen the Dispatch yet
     * (sequence 0 since the new Welcome) leaves it be... */
    send_heartbeat(ag, 0, NULL, 0);
    loom_codec_free(expect(f, ag, LOOM__ENVELOPE__BODY_HEARTBEAT));
    send_finished(ag, attempt, 0);
    d = expect(f, ag, LOOM__ENVELOPE__BODY_DISPATCH); /* b, which needs a */
    loom_codec_free(expect(f, ag, LOOM__ENVELOPE__BODY_FINISHED_ACK));
    loom_sched_stats_t st;
    loom_sched_stats(f->s, &st);
    assert_int_equal(st.refused, 0);
    assert_int_equal(st.finished, 1);
    json_t *keep;
    assert_string_equal(task_state(f, run_id, 0, &keep), "succeeded");
    json_decref(keep);

    /* ...and one that has seen a Dispatch and does not hold it loses it. */
    assert_string_equal(d->dispatch->task, "b");
    uint64_t b = d->dispatch->attempt_id;
    send_heartbeat(ag, d->dispatch->seq, NULL, 0);
    loom_codec_free(d);
    d = expect(f, ag, LOOM__ENVELOPE__BODY_DISPATCH);
    assert_string_equal(d->dispatch->task, "b");
    assert_int_not_equal(d->dispatch->attempt_id, b);
    assert_int_equal(d->dispatch->attempt_number, 2);
    loom_codec_free(d);
}

static void test_retry_backoff_grows_and_is_capped(void **state)
{
    (void)state;
    loom_dag_task_t dt = {.retry_delay_ms = 1000, .max_retry_delay_ms = 5000, .retry_jitter = 0};
    assert_int_equal(retry_delay_ms(&dt, 1, 0), 1000);
    assert_int_equal(retry_delay_ms(&dt, 2, 0), 2000);
    assert_int_equal(retry_delay_ms(&dt, 3, 0), 4000);
    assert_int_equal(retry_delay_ms(&dt, 4, 0), 5000);
    assert_int_equal(retry_delay_ms(&dt, 60, 0), 5000); /* no overflow after many */
    dt.retry_jitter = 1;
    uint64_t lo = UINT64_MAX, hi = 0;
    for (uint32_t r = 0; r < 3000; r++) {
        uint64_t d = retry_delay_ms(&dt, 2, r);
        lo = d < lo ? d : lo;
        hi = d > hi ? d : hi;
    }
    assert_int_equal(lo, 1500); /* 2000 -25% */
    assert_int_equal(hi, 2500); /* 2000 +25% */
    dt.retry_delay_ms = 0;
    assert_int_equal(retry_delay_ms(&dt, 3, 12345), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_bad_messages_are_answered_and_dropped, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_results_logs_and_fencing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restarted_agent_loses_its_attempts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_second_hello_does_not_lose_what_followed_the_first,
                                        setup, teardown),
        cmocka_unit_test(test_retry_backoff_grows_and_is_capped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
