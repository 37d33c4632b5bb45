/* Placement against fake agents: which agent gets which task, on which GPUs,
 * in which order, and why a task waits. */
#include "sched_fixture.h"

static Loom__Gpu gpu_storage[16];
static Loom__Gpu *gpu_ptrs[16];

/* Resources of a fake agent: cpus, memory in GiB, n GPUs of a model. */
static Loom__Resources resources(double cpus, uint64_t mem_gib, uint32_t n_gpus, const char *model,
                                 uint64_t gpu_gib, size_t first)
{
    Loom__Resources r = LOOM__RESOURCES__INIT;
    r.cpus = (uint32_t)cpus;
    r.cpus_usable = cpus;
    r.memory_bytes = mem_gib << 30;
    for (uint32_t i = 0; i < n_gpus; i++) {
        Loom__Gpu *g = &gpu_storage[first + i];
        loom__gpu__init(g);
        g->index = i;
        g->model = (char *)model;
        g->memory_bytes = gpu_gib << 30;
        gpu_ptrs[first + i] = g;
    }
    r.gpus = &gpu_ptrs[first];
    r.n_gpus = n_gpus;
    return r;
}

static uint64_t start(fixture_t *f, const char *dag)
{
    json_t *res = NULL;
    loom_diags_t diags = {0};
    int rc = loom_sched_submit(f->s, "p.yaml", dag, strlen(dag), NULL, &res, &diags);
    if (rc) {
        char *text = loom_diags_format(&diags);
        fail_msg("submit: %s", text);
    }
    json_decref(res);
    uint64_t run_id = 0;
    char why[128];
    const char *name = strstr(dag, "pipeline: ") + 10;
    char pipeline[32];
    snprintf(pipeline, sizeof pipeline, "%.*s", (int)strcspn(name, "\n"), name);
    assert_int_equal(
        loom_sched_start_run(f->s, pipeline, 0, "manual", NULL, false, &run_id, why, sizeof why),
        0);
    return run_id;
}

static void finish(void *d, uint64_t attempt)
{
    Loom__Finished fin = LOOM__FINISHED__INIT;
    fin.attempt_id = attempt;
    loom_msg_t m = LOOM__ENVELOPE__INIT;
    m.body_case = LOOM__ENVELOPE__BODY_FINISHED;
    m.finished = &fin;
    send_msg(d, &m);
}

/* Nothing more arrives for this agent while the loop turns a while. */
static void expect_nothing(fixture_t *f, void *d)
{
    uint64_t end = loom_mono_ms() + 200;
    while (loom_mono_ms() < end) {
        uv_run(&f->loop, UV_RUN_NOWAIT);
        zmq_pollitem_t it = {d, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 5) <= 0) continue;
        zmq_msg_t m;
        zmq_msg_init(&m);
        zmq_msg_recv(&m, d, 0);
        loom_msg_t *msg = NULL;
        char why[128];
        loom_codec_decode(zmq_msg_data(&m), zmq_msg_size(&m), &msg, why, sizeof why);
        zmq_msg_close(&m);
        if (msg && msg->body_case == LOOM__ENVELOPE__BODY_DISPATCH)
            fail_msg("unexpected dispatch of %s", msg->dispatch->task);
        loom_codec_free(msg);
    }
}

static void test_gpu_work_goes_to_gpu_machines_and_cpu_work_elsewhere(void **state)
{
    fixture_t *f = *state;
    void *cpu = dealer(f, "cpu");
    void *gpu = dealer(f, "gpu");
    Loom__Resources rc = resources(16, 64, 0, NULL, 0, 0);
    Loom__Resources rg = resources(16, 64, 2, "NVIDIA A100-SXM4-40GB", 40, 0);
    hello_with(f, gpu, "gpu", 4, &rg);
    hello_with(f, cpu, "cpu", 4, &rc);
    start(f, "pipeline: mixed\n"
             "tasks:\n"
             "  etl:\n    run: x\n    resources: {cpus: 2}\n"
             "  train:\n    run: x\n    resources: {gpus: 1, gpu_model: a100}\n");
    loom_msg_t *d1 = expect(f, cpu, LOOM__ENVELOPE__BODY_DISPATCH);
    loom_msg_t *d2 = expect(f, gpu, LOOM__ENVELOPE__BODY_DISPATCH);
    assert_string_equal(d1->dispatch->task, "etl");
    assert_int_equal(d1->dispatch->n_gpus, 0);
    assert_true(d1->dispatch->cpus == 2.0);
    assert_string_equal(d2->dispatch->task, "train");
    assert_int_equal(d2->dispatch->n_gpus, 1);
    loom_codec_free(d1);
    loom_codec_free(d2);
}

static void test_best_fit_keeps_the_big_machine_free_and_gpus_never_overlap(void **state)
{
    fixture_t *f = *state;
    void *small = dealer(f, "small");
    void *big = dealer(f, "big");
    Loom__Resources rs = resources(8, 32, 2, "A100", 40, 0);
    Loom__Resources rb = resources(32, 256, 4, "A100", 40, 2);
    hello_with(f, big, "big", 8, &rb);
    hello_with(f, small, "small", 8, &rs);
    /* Two 1-GPU tasks fill the small machine; the 4-GPU task still fits on
     * the big one because nothing went there. */
    start(f, "pipeline: frag\n"
             "tasks:\n"
             "  a:\n    run: x\n    resources: {gpus: 1}\n"
             "  b:\n    run: x\n    resources: {gpus: 1}\n"
             "  wide:\n    run: x\n    resources: {gpus: 4}\n");
    loom_msg_t *a = expect(f, small, LOOM__ENVELOPE__BODY_DISPATCH);
    loom_msg_t *b = expect(f, small, LOOM__ENVELOPE__BODY_DISPATCH);
    loom_msg_t *w = expect(f, big, LOOM__ENVELOPE__BODY_DISPATCH);
    assert_int_equal(a->dispatch->n_gpus, 1);
    assert_int_equal(b->dispatch->n_gpus, 1);
    assert_int_not_equal(a->dispatch->gpus[0], b->dispatch->gpus[0]);
    assert_string_equal(w->dispatch->task, "wide");
    assert_int_equal(w->dispatch->n_gpus, 4);
    loom_codec_free(a);
    loom_codec_free(b);
    loom_codec_free(w);
}

static void test_priority_then_fifo(void **state)
{
    fixture_t *f = *state;
    void *ag = dealer(f, "one");
    hello(f, ag, "one", 1);
    start(f, "pipeline: prio\n"
             "tasks:\n"
             "  first:\n    run: x\n"
             "  low:\n    run: x\n    needs: [first]\n"
             "  high:\n    run: x\n    needs: [first]\n    priority: 10\n"
             "  low2:\n    run: x\n    needs: [first]\n");
    loom_msg_t *d = expect(f, ag, LOOM__ENVELOPE__BODY_DISPATCH);
    assert_string_equal(d->dispatch->task, "first");
    finish(ag, d->dispatch->attempt_id);
    loom_codec_free(d);
    const char *want[] = {"high", "low", "low2"};
    for (size_t i = 0; i < 3; i++) {
        d = expect(f, ag, LOOM__ENVELOPE__BODY_DISPATCH);
        assert_string_equal(d->dispatch->task, want[i]);
        finish(ag, d->dispatch->attempt_id);
        loom_codec_free(d);
    }
}

static void test_fair_share_between_pipelines(void **state)
{
    fixture_t *f = *state;
    void *ag = dealer(f, "one");
    hello(f, ag, "one", 2);
    /* A wide pipeline queues 6 tasks first; a small one queues 1 later. */
    start(f, "pipeline: wide\nparams:\n  xs: [1, 2, 3, 4, 5, 6]\n"
             "tasks:\n  t:\n    foreach: params.xs\n    run: x\n");
    start(f, "pipeline: small\ntasks:\n  retrain:\n    run: x\n");
    loom_msg_t *d1 = expect(f, ag, LOOM__ENVELOPE__BODY_DISPATCH);
    loom_msg_t *d2 = expect(f, ag, LOOM__ENVELOPE__BODY_DISPATCH);
    assert_string_equal(d1->dispatch->pipeline, "wide");
    assert_string_equal(d2->dispatch->pipeline, "wide");
    /* A slot frees: the pipeline with nothing running goes next. */
    finish(ag, d1->dispatch->attempt_id);
    loom_msg_t *d3 = expect(f, ag, LOOM__ENVELOPE__BODY_DISPATCH);
    assert_string_equal(d3->dispatch->pipeline, "small");
    loom_codec_free(d1);
    loom_codec_free(d2);
    loom_codec_free(d3);
}

static void test_pool_caps_concurrency_and_says_so(void **state)
{
    static const char *const pools[] = {"a100=1"};
    fixture_t *f = fixture_open(pools, 1);
    *state = f;
    void *ag = dealer(f, "one");
    hello(f, ag, "one", 4);
    uint64_t run_id = start(f, "pipeline: pooled\nparams:\n  xs: [1, 2]\n"
                               "tasks:\n  t:\n    foreach: params.xs\n    run: x\n"
                               "    resources: {pool: a100}\n");
    loom_msg_t *d = expect(f, ag, LOOM__ENVELOPE__BODY_DISPATCH);
    expect_nothing(f, ag); /* three slots free, but the pool is full */
    json_t *run = NULL;
    assert_int_equal(loom_store_json_run(loom_sched_store(f->s), run_id, &run), 0);
    loom_sched_annotate_run(f->s, run);
    const char *why = json_string_value(
        json_object_get(json_array_get(json_object_get(run, "tasks"), 1), "waiting"));
    assert_non_null(why);
    assert_string_equal(why, "waiting: pool a100 is full (1/1)");
    json_decref(run);
    finish(ag, d->dispatch->attempt_id);
    loom_codec_free(d);
    d = expect(f, ag, LOOM__ENVELOPE__BODY_DISPATCH);
    assert_string_equal(d->dispatch->task, "t[1]");
    loom_codec_free(d);
}

static void test_unplaceable_task_waits_and_is_flagged(void **state)
{
    fixture_t *f = *state;
    void *ag = dealer(f, "gpu");
    Loom__Resources r = resources(16, 64, 1, "A100", 40, 0);
    hello_with(f, ag, "gpu", 4, &r);
    static const char dag[] = "pipeline: big\n"
                              "tasks:\n  t:\n    run: x\n"
                              "    resources: {gpus: 2, gpu_memory: 40G}\n";
    json_t *res = NULL;
    loom_diags_t diags = {0};
    assert_int_equal(loom_sched_submit(f->s, "p.yaml", dag, strlen(dag), NULL, &res, &diags), 0);
    const char *warning = json_string_value(json_array_get(json_object_get(res, "warnings"), 0));
    assert_non_null(warning);
    assert_non_null(strstr(warning, "task \"t\" needs 2 GPUs with ≥ 40 GiB; no known agent"));
    json_decref(res);
    uint64_t run_id = 0;
    char why[128];
    assert_int_equal(
        loom_sched_start_run(f->s, "big", 0, "manual", NULL, false, &run_id, why, sizeof why), 0);
    expect_nothing(f, ag);
    json_t *run = NULL;
    assert_int_equal(loom_store_json_run(loom_sched_store(f->s), run_id, &run), 0);
    loom_sched_annotate_run(f->s, run);
    const char *waiting = json_string_value(
        json_object_get(json_array_get(json_object_get(run, "tasks"), 0), "waiting"));
    assert_non_null(waiting);
    assert_non_null(strstr(waiting, "needs 2 GPUs with ≥ 40 GiB"));
    json_decref(run);
}

static void test_shared_gpu_packs_by_memory(void **state)
{
    fixture_t *f = *state;
    void *ag = dealer(f, "gpu");
    Loom__Resources r = resources(16, 64, 1, "A100", 40, 0);
    hello_with(f, ag, "gpu", 8, &r);
    /* Two 16 GiB shared tasks fit one 40 GiB GPU together; the third waits,
     * and so does a task that wants the GPU to itself. */
    start(f, "pipeline: shared\nparams:\n  xs: [1, 2, 3]\ntasks:\n"
             "  infer:\n    foreach: params.xs\n    run: x\n"
             "    resources: {gpus: 1, gpu_memory: 16G, gpu_shared: true}\n"
             "  whole:\n    run: x\n    resources: {gpus: 1}\n");
    loom_msg_t *a = expect(f, ag, LOOM__ENVELOPE__BODY_DISPATCH);
    loom_msg_t *b = expect(f, ag, LOOM__ENVELOPE__BODY_DISPATCH);
    assert_string_equal(a->dispatch->task, "infer[0]");
    assert_string_equal(b->dispatch->task, "infer[1]");
    assert_int_equal(a->dispatch->gpus[0], 0);
    assert_int_equal(b->dispatch->gpus[0], 0);
    expect_nothing(f, ag);
    finish(ag, a->dispatch->attempt_id);
    loom_msg_t *c = expect(f, ag, LOOM__ENVELOPE__BODY_DISPATCH);
    assert_string_equal(c->dispatch->task, "infer[2]");
    finish(ag, b->dispatch->attempt_id);
    expect_nothing(f, ag); /* infer[2] still shares the GPU */
    finish(ag, c->dispatch->attempt_id);
    loom_msg_t *w = expect(f, ag, LOOM__ENVELOPE__BODY_DISPATCH);
    assert_string_equal(w->dispatch->task, "whole");
    loom_codec_free(a);
    loom_codec_free(b);
    loom_codec_free(c);
    loom_codec_free(w);
}

static void test_cordoned_agent_gets_no_work(void **state)
{
    fixture_t *f = *state;
    void *a = dealer(f, "a");
    void *b = dealer(f, "b");
    hello(f, a, "a", 4);
    hello(f, b, "b", 1);
    assert_int_equal(loom_sched_agent_cordon(f->s, "a", true, true), 0);
    start(f,
          "pipeline: c\nparams:\n  xs: [1, 2]\ntasks:\n  t:\n    foreach: params.xs\n    run: x\n");
    loom_msg_t *d = expect(f, b, LOOM__ENVELOPE__BODY_DISPATCH);
    expect_nothing(f, a);
    assert_int_equal(loom_sched_agent_cordon(f->s, "a", false, false), 0);
    loom_msg_t *d2 = expect(f, a, LOOM__ENVELOPE__BODY_DISPATCH);
    loom_codec_free(d);
    loom_codec_free(d2);
    assert_int_equal(loom_sched_agent_cordon(f->s, "nobody", true, false), LOOM_ENOTFOUND);
}

/* A prefetching agent is sent CPU tasks beyond its slots, oldest first into
 * each freed slot; never a GPU task, which waits for a real free slot. */
static void test_prefetch_holds_cpu_tasks_only(void **state)
{
    fixture_t *f = *state;
    void *p = dealer(f, "p");
    Loom__Resources r = resources(16, 64, 1, "A100", 40, 0);
    r.prefetch = 2;
    hello_with(f, p, "p", 1, &r);
    start(f, "pipeline: pf\n"
             "tasks:\n"
             "  a:\n    run: x\n"
             "  b:\n    run: x\n"
             "  c:\n    run: x\n"
             "  g:\n    run: x\n    resources: {gpus: 1}\n");
    loom_msg_t *a = expect(f, p, LOOM__ENVELOPE__BODY_DISPATCH);
    loom_msg_t *b = expect(f, p, LOOM__ENVELOPE__BODY_DISPATCH);
    loom_msg_t *c = expect(f, p, LOOM__ENVELOPE__BODY_DISPATCH);
    assert_string_equal(a->dispatch->task, "a");
    assert_string_equal(b->dispatch->task, "b");
    assert_string_equal(c->dispatch->task, "c");
    expect_nothing(f, p); /* g needs the GPU: not held */
    finish(p, a->dispatch->attempt_id);
    expect_nothing(f, p); /* b takes the slot; g may not queue */
    finish(p, b->dispatch->attempt_id);
    finish(p, c->dispatch->attempt_id);
    loom_msg_t *g = expect(f, p, LOOM__ENVELOPE__BODY_DISPATCH);
    assert_string_equal(g->dispatch->task, "g");
    assert_int_equal(g->dispatch->n_gpus, 1);
    loom_codec_free(a);
    loom_codec_free(b);
    loom_codec_free(c);
    loom_codec_free(g);
}

/* A slot frees on an agent that does not prefetch while a task waits in
 * another's backlog: loomd asks for it back (only if not started) and runs
 * it on the free slot. */
static void test_a_backlog_moves_to_a_free_slot(void **state)
{
    fixture_t *f = *state;
    void *p = dealer(f, "p");
    void *q = dealer(f, "q");
    Loom__Resources rp = resources(4, 8, 0, NULL, 0, 0);
    rp.prefetch = 1;
    hello_with(f, p, "p", 1, &rp);
    Loom__Resources rq = resources(4, 8, 0, NULL, 0, 0);
    hello_with(f, q, "q", 1, &rq);
    start(f, "pipeline: st\ntasks:\n  a:\n    run: x\n  b:\n    run: x\n  c:\n    run: x\n");
    loom_msg_t *on_q = expect(f, q, LOOM__ENVELOPE__BODY_DISPATCH);
    loom_msg_t *on_p = expect(f, p, LOOM__ENVELOPE__BODY_DISPATCH);
    loom_msg_t *held = expect(f, p, LOOM__ENVELOPE__BODY_DISPATCH); /* beyond p's slot */
    finish(q, on_q->dispatch->attempt_id);
    loom_msg_t *c = expect(f, p, LOOM__ENVELOPE__BODY_CANCEL);
    assert_int_equal(c->cancel->attempt_id, held->dispatch->attempt_id);
    assert_true(c->cancel->if_queued);
    expect_nothing(f, q); /* not before p hands it back */
    Loom__Finished fin = LOOM__FINISHED__INIT;
    fin.attempt_id = held->dispatch->attempt_id;
    fin.exit_code = -1;
    fin.refused = true;
    fin.error = "withdrawn before it started: agent q has a free slot";
    loom_msg_t m = LOOM__ENVELOPE__INIT;
    m.body_case = LOOM__ENVELOPE__BODY_FINISHED;
    m.finished = &fin;
    send_msg(p, &m);
    loom_msg_t *moved = expect(f, q, LOOM__ENVELOPE__BODY_DISPATCH);
    assert_string_equal(moved->dispatch->task, held->dispatch->task);
    assert_int_not_equal(moved->dispatch->attempt_id, held->dispatch->attempt_id);
    loom_codec_free(on_q);
    loom_codec_free(on_p);
    loom_codec_free(held);
    loom_codec_free(c);
    loom_codec_free(moved);
}

/* An agent refuses a Dispatch for want of room that loomd thought it had
 * (attempts loomd gave up on still end there): loomd sends it nothing more
 * until it reports again, rather than bouncing the retry off it at once,
 * again and again, until the task's attempts are used up. */
static void test_a_refusing_agent_is_left_alone_until_it_reports(void **state)
{
    fixture_t *f = *state;
    void *p = dealer(f, "p");
    Loom__Resources r = resources(4, 8, 0, NULL, 0, 0);
    hello_with(f, p, "p", 1, &r);
    start(f, "pipeline: rf\ntasks:\n  a:\n    run: x\n");
    loom_msg_t *a = expect(f, p, LOOM__ENVELOPE__BODY_DISPATCH);
    Loom__Finished fin = LOOM__FINISHED__INIT;
    fin.attempt_id = a->dispatch->attempt_id;
    fin.exit_code = -1;
    fin.refused = true;
    fin.error = "agent p has no free slot";
    loom_msg_t m = LOOM__ENVELOPE__INIT;
    m.body_case = LOOM__ENVELOPE__BODY_FINISHED;
    m.finished = &fin;
    send_msg(p, &m);
    /* loomd answers the refusal; a retry placed at once would come first. */
    loom_msg_t *ack = next_msg(f, p);
    assert_int_equal(ack->body_case, LOOM__ENVELOPE__BODY_FINISHED_ACK);
    /* Its next heartbeat says what it holds (nothing): the retry comes. */
    Loom__Heartbeat hb = LOOM__HEARTBEAT__INIT;
    hb.dispatch_seq = a->dispatch->seq;
    m.body_case = LOOM__ENVELOPE__BODY_HEARTBEAT;
    m.heartbeat = &hb;
    send_msg(p, &m);
    loom_msg_t *again = expect(f, p, LOOM__ENVELOPE__BODY_DISPATCH);
    assert_string_equal(again->dispatch->task, "a");
    assert_int_equal(again->dispatch->attempt_number, 2);
    loom_codec_free(a);
    loom_codec_free(ack);
    loom_codec_free(again);
}

/* loomd restarts while an agent holds tasks beyond its slot: the store
 * brings them back as running, one slot each. The agent's Hello puts the
 * newest unstarted ones back in its backlog, so loomd neither sends it
 * more than it can hold (it would refuse) nor holds back what it can. */
static void test_a_backlog_is_rebuilt_after_a_restart(void **state)
{
    fixture_t *f = *state;
    void *p = dealer(f, "p");
    Loom__Resources r = resources(4, 8, 0, NULL, 0, 0);
    r.prefetch = 2;
    hello_with(f, p, "p", 1, &r);
    start(f, "pipeline: rb\ntasks:\n  a:\n    run: x\n  b:\n    run: x\n"
             "  c:\n    run: x\n  d:\n    run: x\n");
    uint64_t held[3];
    for (int i = 0; i < 3; i++) {
        loom_msg_t *d = expect(f, p, LOOM__ENVELOPE__BODY_DISPATCH);
        held[i] = d->dispatch->attempt_id;
        loom_codec_free(d);
    }
    expect_nothing(f, p); /* one in the slot, two held: d waits */

    fixture_stop(f);
    fixture_start(f, NULL, 0, NULL);
    void *again = dealer(f, "p");
    send_hello_holding(again, "p", &r, held, 3);
    loom_codec_free(expect(f, again, LOOM__ENVELOPE__BODY_WELCOME));
    expect_nothing(f, again); /* still full: d waits */
    /* a ends; b takes the slot there, and the backlog has room for d. */
    finish(again, held[0]);
    loom_msg_t *d = expect(f, again, LOOM__ENVELOPE__BODY_DISPATCH);
    assert_string_equal(d->dispatch->task, "d");
    loom_codec_free(d);
    expect_nothing(f, again);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_gpu_work_goes_to_gpu_machines_and_cpu_work_elsewhere,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_best_fit_keeps_the_big_machine_free_and_gpus_never_overlap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_priority_then_fifo, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fair_share_between_pipelines, setup, teardown),
        cmocka_unit_test_teardown(test_pool_caps_concurrency_and_says_so, teardown),
        cmocka_unit_test_setup_teardown(test_unplaceable_task_waits_and_is_flagged, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_cordoned_agent_gets_no_work, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shared_gpu_packs_by_memory, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prefetch_holds_cpu_tasks_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_backlog_moves_to_a_free_slot, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_refusing_agent_is_left_alone_until_it_reports, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_backlog_is_rebuilt_after_a_restart, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
