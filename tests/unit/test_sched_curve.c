/* The agents' port as loomd runs it: CURVE with a ZAP handler, keys tied to
 * agents, join tokens, approval and revocation. Fake agents are real
 * ZeroMQ DEALER sockets with their own CURVE key pairs. */
#include "sched_fixture.h"
#include "store_keys.h"

#include "loom/curve.h"
#include "loom/log.h"

#include <sys/stat.h>

typedef struct {
    char pub[41], sec[41];
} keys_t;

static keys_t new_keys(void)
{
    keys_t k;
    assert_int_equal(zmq_curve_keypair(k.pub, k.sec), 0);
    return k;
}

/* A DEALER speaking CURVE to the fixture's loomd with keys k (server_key:
 * NULL for loomd's own). */
static void *curve_dealer(fixture_t *f, const keys_t *k, const char *server_key)
{
    void *d = zmq_socket(f->zctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(d, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(d, ZMQ_CURVE_SERVERKEY, server_key ? server_key : loom_sched_server_key(f->s),
                   40);
    zmq_setsockopt(d, ZMQ_CURVE_PUBLICKEY, k->pub, 40);
    zmq_setsockopt(d, ZMQ_CURVE_SECRETKEY, k->sec, 40);
    assert_int_equal(zmq_connect(d, f->endpoint), 0);
    assert_true(f->n_socks < sizeof f->socks / sizeof f->socks[0]);
    f->socks[f->n_socks++] = d;
    return d;
}

static int setup_curve(void **state)
{
    fixture_t *f = loom_xcalloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/loom-sched-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    uv_loop_init(&f->loop);
    f->zctx = zmq_ctx_new();
    f->curve = true;
    fixture_start(f, NULL, 0, NULL);
    *state = f;
    return 0;
}

static void send_hello(void *d, const char *name)
{
    Loom__Resources res = LOOM__RESOURCES__INIT;
    res.slots = 1;
    Loom__Hello h = LOOM__HELLO__INIT;
    h.name = (char *)name;
    uint8_t session[16] = {7};
    h.session.data = session;
    h.session.len = sizeof session;
    h.resources = &res;
    loom_msg_t m = LOOM__ENVELOPE__INIT;
    m.body_case = LOOM__ENVELOPE__BODY_HELLO;
    m.hello = &h;
    send_msg(d, &m);
}

static void send_heartbeat(void *d)
{
    Loom__Heartbeat hb = LOOM__HEARTBEAT__INIT;
    loom_msg_t m = LOOM__ENVELOPE__INIT;
    m.body_case = LOOM__ENVELOPE__BODY_HEARTBEAT;
    m.heartbeat = &hb;
    send_msg(d, &m);
}

static void send_join(void *d, const char *token, const char *name)
{
    Loom__Join j = LOOM__JOIN__INIT;
    j.token = (char *)token;
    j.name = (char *)name;
    loom_msg_t m = LOOM__ENVELOPE__INIT;
    m.body_case = LOOM__ENVELOPE__BODY_JOIN;
    m.join = &j;
    send_msg(d, &m);
}

static char *new_token(fixture_t *f, const char *name, uint64_t ttl_ms)
{
    json_t *res = NULL;
    assert_int_equal(loom_sched_join_token(f->s, name, ttl_ms, &res), 0);
    char *t = loom_xstrdup(json_string_value(json_object_get(res, "token")));
    json_decref(res);
    return t;
}

/* Joins with a token; returns the Joined error ("" when it worked). */
static char *join(fixture_t *f, void *d, const char *token, const char *name)
{
    send_join(d, token, name);
    loom_msg_t *j = expect(f, d, LOOM__ENVELOPE__BODY_JOINED);
    char *err = loom_xstrdup(j->joined->error ? j->joined->error : "");
    if (!*err) assert_string_equal(j->joined->server_public_key, loom_sched_server_key(f->s));
    loom_codec_free(j);
    return err;
}

static void welcomed(fixture_t *f, void *d, const char *name)
{
    send_hello(d, name);
    loom_codec_free(expect(f, d, LOOM__ENVELOPE__BODY_WELCOME));
}

/* Turns the loop for ms and returns whether d received anything. This test
 * asserts an absence, so it must wait some time; it fails fast on a message. */
static bool got_anything(fixture_t *f, void *d, uint64_t ms)
{
    uint64_t end = loom_mono_ms() + ms;
    while (loom_mono_ms() < end) {
        uv_run(&f->loop, UV_RUN_NOWAIT);
        zmq_pollitem_t it = {d, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 5) > 0) return true;
    }
    return false;
}

static loom_key_state key_state(fixture_t *f, const char *key, char **agent)
{
    loom_key_state st;
    assert_int_equal(loom_store_key_get(loom_sched_store(f->s), key, &st, agent), 0);
    return st;
}

static void test_keys_persist_with_mode_0600(void **state)
{
    fixture_t *f = *state;
    char *path = loom_xasprintf("%s/curve/server.key", f->dir);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    char first[41];
    snprintf(first, sizeof first, "%s", loom_sched_server_key(f->s));
    fixture_stop(f);
    fixture_start(f, NULL, 0, NULL);
    assert_string_equal(loom_sched_server_key(f->s), first);
    free(path);
}

static void test_unknown_key_gets_only_not_enrolled(void **state)
{
    fixture_t *f = *state;
    keys_t k = new_keys();
    void *d = curve_dealer(f, &k, NULL);
    send_hello(d, "stranger");
    loom_msg_t *e = expect(f, d, LOOM__ENVELOPE__BODY_ERROR);
    assert_true(e->error->not_enrolled);
    assert_non_null(strstr(e->error->message, "loom agents approve"));
    assert_non_null(strstr(e->error->message, k.pub));
    loom_codec_free(e);
    /* Recorded as pending, under the name it claimed; no agent exists. */
    char *agent = NULL;
    assert_int_equal(key_state(f, k.pub, &agent), KEY_PENDING);
    assert_string_equal(agent, "stranger");
    free(agent);
    /* Anything else is answered "say hello" and does nothing. */
    send_heartbeat(d);
    e = expect(f, d, LOOM__ENVELOPE__BODY_ERROR);
    assert_true(e->error->hello_required);
    loom_codec_free(e);
    json_t *agents = loom_sched_agents_json(f->s);
    assert_int_equal(json_array_size(json_object_get(agents, "agents")), 0);
    json_decref(agents);
}

static void test_plaintext_and_wrong_server_key_get_nothing(void **state)
{
    fixture_t *f = *state;
    void *plain = dealer(f, "plain");
    send_hello(plain, "plain");
    keys_t k = new_keys(), other = new_keys();
    void *wrong = curve_dealer(f, &k, other.pub);
    send_hello(wrong, "wrong");
    assert_false(got_anything(f, plain, 500));
    assert_false(got_anything(f, wrong, 100));
    loom_sched_stats_t st;
    loom_sched_stats(f->s, &st);
    assert_int_equal(st.agents_connected, 0);
    assert_int_equal(key_state(f, k.pub, NULL), KEY_UNKNOWN);
}

static void test_join_token_works_once(void **state)
{
    fixture_t *f = *state;
    char *token = new_token(f, NULL, 0);
    keys_t k1 = new_keys(), k2 = new_keys();
    void *d1 = curve_dealer(f, &k1, NULL);
    char *err = join(f, d1, token, "a1");
    assert_string_equal(err, "");
    free(err);
    char *agent = NULL;
    assert_int_equal(key_state(f, k1.pub, &agent), KEY_APPROVED);
    assert_string_equal(agent, "a1");
    free(agent);
    welcomed(f, d1, "a1");
    /* A resent Join (its answer lost on the way) gets the same answer. */
    err = join(f, d1, token, "a1");
    assert_string_equal(err, "");
    free(err);

    /* The same token again, from another key: refused, nothing approved. */
    void *d2 = curve_dealer(f, &k2, NULL);
    err = join(f, d2, token, "a2");
    assert_non_null(strstr(err, "already used"));
    free(err);
    assert_int_equal(key_state(f, k2.pub, NULL), KEY_UNKNOWN);

    /* A token for a name is for that name only. */
    char *named = new_token(f, "a3", 0);
    err = join(f, d2, named, "a2");
    assert_non_null(strstr(err, "is for agent \"a3\""));
    free(err);
    /* A name already bound to an approved key is not taken over. */
    char *any = new_token(f, NULL, 0);
    err = join(f, d2, any, "a1");
    assert_non_null(strstr(err, "already has an approved key"));
    free(err);
    /* Garbage, and a token made for another loomd. */
    err = join(f, d2, "loomjoin1.nonsense", "a2");
    assert_non_null(strstr(err, "server key"));
    free(err);
    char other_key[41], sec[41];
    zmq_curve_keypair(other_key, sec);
    unsigned char hash[32];
    char *foreign = loom_join_token_new(other_key, hash);
    err = join(f, d2, foreign, "a2");
    assert_non_null(strstr(err, "another loomd"));
    free(err);
    free(foreign);
    free(named);
    free(any);
    free(token);
}

static void test_expired_token_is_refused(void **state)
{
    fixture_t *f = *state;
    json_t *res = NULL;
    assert_int_equal(loom_sched_join_token(f->s, NULL, 1, &res), 0);
    char *token = loom_xstrdup(json_string_value(json_object_get(res, "token")));
    uint64_t expires = (uint64_t)json_integer_value(json_object_get(res, "expires_unix_ms"));
    json_decref(res);
    while (loom_unix_ms() <= expires) uv_run(&f->loop, UV_RUN_NOWAIT);
    keys_t k = new_keys();
    void *d = curve_dealer(f, &k, NULL);
    char *err = join(f, d, token, "late");
    assert_non_null(strstr(err, "expired"));
    free(err);
    free(token);
    assert_int_equal(key_state(f, k.pub, NULL), KEY_UNKNOWN);
}

static void test_restart_with_stored_key_needs_no_token(void **state)
{
    fixture_t *f = *state;
    char *token = new_token(f, "a1", 0);
    keys_t k = new_keys();
    void *d = curve_dealer(f, &k, NULL);
    char *err = join(f, d, token, "a1");
    assert_string_equal(err, "");
    free(err);
    free(token);
    /* loomd restarts (same state folder, same server key); the agent comes
     * back with the same key on a new connection. */
    fixture_stop(f);
    fixture_start(f, NULL, 0, NULL);
    void *again = curve_dealer(f, &k, NULL);
    welcomed(f, again, "a1");
}

/* loomd's library reopened in one process on one ZeroMQ context, as the
 * test above and an embedding program do: the ZAP endpoint of the closed
 * scheduler is released by ZeroMQ's reaper thread, after zmq_close has
 * returned, and the next open must still get it. */
static void test_reopen_on_the_same_context_again_and_again(void **state)
{
    fixture_t *f = *state;
    keys_t k = new_keys();
    char *token = new_token(f, "a1", 0);
    void *d = curve_dealer(f, &k, NULL);
    char *err = join(f, d, token, "a1");
    assert_string_equal(err, "");
    free(err);
    free(token);
    for (int i = 0; i < 30; i++) {
        fixture_stop(f);
        fixture_start(f, NULL, 0, NULL);
    }
    welcomed(f, curve_dealer(f, &k, NULL), "a1");
}

static void test_approve_flow(void **state)
{
    fixture_t *f = *state;
    keys_t k = new_keys();
    void *d = curve_dealer(f, &k, NULL);
    send_hello(d, "gpu-7");
    loom_msg_t *e = expect(f, d, LOOM__ENVELOPE__BODY_ERROR);
    assert_true(e->error->not_enrolled);
    loom_codec_free(e);
    char why[256];
    assert_int_equal(loom_sched_key_approve(f->s, "not-a-key", NULL, why, sizeof why), LOOM_EINVAL);
    assert_int_equal(loom_sched_key_approve(f->s, k.pub, NULL, why, sizeof why), 0);
    welcomed(f, d, "gpu-7");
    /* A second key for the same name is refused while the first stands. */
    keys_t k2 = new_keys();
    assert_int_equal(loom_sched_key_approve(f->s, k2.pub, "gpu-7", why, sizeof why), LOOM_EEXISTS);
    assert_non_null(strstr(why, "revoke"));
}

static void test_key_cannot_speak_for_another_agent(void **state)
{
    fixture_t *f = *state;
    keys_t ka = new_keys(), kb = new_keys();
    char why[256];
    assert_int_equal(loom_sched_key_approve(f->s, ka.pub, "a", why, sizeof why), 0);
    assert_int_equal(loom_sched_key_approve(f->s, kb.pub, "b", why, sizeof why), 0);
    void *b = curve_dealer(f, &kb, NULL);
    welcomed(f, b, "b");
    void *a = curve_dealer(f, &ka, NULL);
    /* A's key claiming to be B: refused, and B keeps its connection. */
    send_hello(a, "b");
    loom_msg_t *e = expect(f, a, LOOM__ENVELOPE__BODY_ERROR);
    assert_non_null(strstr(e->error->message, "approved for agent \"a\""));
    loom_codec_free(e);
    send_heartbeat(a);
    e = expect(f, a, LOOM__ENVELOPE__BODY_ERROR);
    assert_true(e->error->hello_required);
    loom_codec_free(e);
    send_heartbeat(b);
    loom_codec_free(expect(f, b, LOOM__ENVELOPE__BODY_HEARTBEAT));
    /* And B's Dispatches still reach B (not A). */
    static const char dag[] = "pipeline: p\ntasks:\n  t:\n    run: echo hi\n";
    json_t *res = NULL;
    loom_diags_t diags = {0};
    assert_int_equal(loom_sched_submit(f->s, "p.yaml", dag, strlen(dag), NULL, &res, &diags), 0);
    json_decref(res);
    uint64_t run_id;
    assert_int_equal(
        loom_sched_start_run(f->s, "p", 0, "manual", NULL, false, &run_id, why, sizeof why), 0);
    loom_codec_free(expect(f, b, LOOM__ENVELOPE__BODY_DISPATCH));
}

static void test_revoke_cuts_off_within_a_second(void **state)
{
    fixture_t *f = *state;
    keys_t k1 = new_keys(), k2 = new_keys();
    char why[256];
    assert_int_equal(loom_sched_key_approve(f->s, k1.pub, "one", why, sizeof why), 0);
    void *one = curve_dealer(f, &k1, NULL);
    welcomed(f, one, "one");
    static const char dag[] = "pipeline: p\ntasks:\n  t:\n    run: sleep 60\n";
    json_t *res = NULL;
    loom_diags_t diags = {0};
    assert_int_equal(loom_sched_submit(f->s, "p.yaml", dag, strlen(dag), NULL, &res, &diags), 0);
    json_decref(res);
    uint64_t run_id;
    assert_int_equal(
        loom_sched_start_run(f->s, "p", 0, "manual", NULL, false, &run_id, why, sizeof why), 0);
    loom_msg_t *d = expect(f, one, LOOM__ENVELOPE__BODY_DISPATCH);
    uint64_t first = d->dispatch->attempt_id;
    loom_codec_free(d);
    assert_int_equal(loom_sched_key_approve(f->s, k2.pub, "two", why, sizeof why), 0);
    void *two = curve_dealer(f, &k2, NULL);
    welcomed(f, two, "two");

    uint64_t t0 = loom_mono_ms();
    uint32_t n = 0;
    assert_int_equal(loom_sched_agent_revoke(f->s, "one", &n), 0);
    assert_int_equal(n, 1);
    /* Told, and its task retried on the other agent, within a second. */
    loom_msg_t *e = expect(f, one, LOOM__ENVELOPE__BODY_ERROR);
    assert_true(e->error->revoked);
    loom_codec_free(e);
    d = expect(f, two, LOOM__ENVELOPE__BODY_DISPATCH);
    assert_true(d->dispatch->attempt_id != first);
    loom_codec_free(d);
    assert_true(loom_mono_ms() - t0 < 1000);
    assert_int_equal(key_state(f, k1.pub, NULL), KEY_REVOKED);

    /* Its late result is refused by fencing; its messages do nothing. */
    loom_sched_stats_t before, after;
    loom_sched_stats(f->s, &before);
    send_hello(one, "one");
    e = expect(f, one, LOOM__ENVELOPE__BODY_ERROR);
    assert_true(e->error->revoked);
    loom_codec_free(e);
    loom_sched_stats(f->s, &after);
    assert_int_equal(after.agents_connected, before.agents_connected);
    /* A new connection with the key is refused at the handshake. */
    void *again = curve_dealer(f, &k1, NULL);
    send_hello(again, "one");
    assert_false(got_anything(f, again, 500));
    /* Revoked keys stay revoked. */
    assert_int_equal(loom_sched_key_approve(f->s, k1.pub, "one", why, sizeof why), LOOM_ESTATE);
    assert_int_equal(loom_sched_agent_revoke(f->s, "nobody", &n), LOOM_ENOTFOUND);
}

static void test_selfcheck_refuses_without_zap(void **state)
{
    fixture_t *f = *state;
    fixture_stop(f);
    f->skip_zap = true;
    loom_sched_config_t cfg = {.state_dir = f->dir,
                               .bind = "tcp://127.0.0.1:*",
                               .zmq_ctx = f->zctx,
                               .fault_skip_zap = true};
    char why[512] = "";
    f->s = loom_sched_new(&f->loop, &cfg);
    assert_int_equal(loom_sched_open(f->s, why, sizeof why), 0);
    assert_int_equal(loom_sched_bind(f->s, f->endpoint, sizeof f->endpoint, why, sizeof why),
                     LOOM_ESTATE);
    assert_non_null(strstr(why, "self-check failed"));
    assert_non_null(strstr(why, "ZAP"));
}

int main(void)
{
    loom_log_set_level(LOOM_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_keys_persist_with_mode_0600, setup_curve, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_key_gets_only_not_enrolled, setup_curve,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_plaintext_and_wrong_server_key_get_nothing,
                                        setup_curve, teardown),
        cmocka_unit_test_setup_teardown(test_join_token_works_once, setup_curve, teardown),
        cmocka_unit_test_setup_teardown(test_expired_token_is_refused, setup_curve, teardown),
        cmocka_unit_test_setup_teardown(test_restart_with_stored_key_needs_no_token, setup_curve,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_reopen_on_the_same_context_again_and_again,
                                        setup_curve, teardown),
        cmocka_unit_test_setup_teardown(test_approve_flow, setup_curve, teardown),
        cmocka_unit_test_setup_teardown(test_key_cannot_speak_for_another_agent, setup_curve,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_revoke_cuts_off_within_a_second, setup_curve,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_selfcheck_refuses_without_zap, setup_curve, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
