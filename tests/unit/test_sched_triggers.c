/* The trigger engine in a real scheduler (real SQLite file, real loop) with
 * an injected wall clock: schedules fire once per fire time, across
 * restarts and downtime as `catchup` says; events pass their filter and
 * idempotency keys; admission (max_active_runs, on_overlap, debounce,
 * cooldown, pause) decides; data folders start runs for new files only. */
#include "sched_fixture.h"

#include <fcntl.h>
#include <sys/stat.h>

static uint64_t fake_now;

static uint64_t fake_wall(void *ud)
{
    (void)ud;
    return fake_now;
}

static const loom_clock_t wall = {fake_wall, NULL};

/* 2026-03-08 06:58:00 UTC */
#define T0 1772953080000ull

static int setup_fake(void **state)
{
    fake_now = T0;
    fixture_t *f = loom_xcalloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/loom-trig-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    uv_loop_init(&f->loop);
    f->zctx = zmq_ctx_new();
    fixture_start(f, NULL, 0, &wall);
    *state = f;
    return 0;
}

static void restart(fixture_t *f)
{
    fixture_stop(f);
    fixture_start(f, NULL, 0, &wall);
}

static void submit(fixture_t *f, const char *dag)
{
    json_t *res = NULL;
    loom_diags_t diags = {0};
    int rc = loom_sched_submit(f->s, "p.yaml", dag, strlen(dag), NULL, &res, &diags);
    if (rc != 0) {
        char *text = loom_diags_format(&diags);
        fail_msg("submit failed: %s", text);
    }
    json_decref(res);
    loom_diags_free(&diags);
}

/* The pipeline's runs, newest first. */
static json_t *runs_of(fixture_t *f, const char *pipeline)
{
    json_t *out = NULL;
    assert_int_equal(loom_store_json_runs(loom_sched_store(f->s), pipeline, 1000, &out), 0);
    json_t *runs = json_incref(json_object_get(out, "runs"));
    json_decref(out);
    return runs;
}

static size_t n_runs(fixture_t *f, const char *pipeline)
{
    json_t *runs = runs_of(f, pipeline);
    size_t n = json_array_size(runs);
    json_decref(runs);
    return n;
}

static void tick_at(fixture_t *f, uint64_t now)
{
    fake_now = now;
    loom_sched_triggers_tick(f->s);
    uv_run(&f->loop, UV_RUN_NOWAIT); /* the flush commits */
}

/* The latest decision's text for a pipeline. */
static json_t *decisions(fixture_t *f, const char *pipeline)
{
    json_t *out = NULL;
    assert_int_equal(loom_store_json_decisions(loom_sched_store(f->s), pipeline, 100, &out), 0);
    json_t *d = json_incref(json_object_get(out, "decisions"));
    json_decref(out);
    return d;
}

static bool has_decision(fixture_t *f, const char *pipeline, const char *decision,
                         const char *reason_part)
{
    json_t *d = decisions(f, pipeline);
    size_t i;
    json_t *x;
    bool found = false;
    json_array_foreach(d, i, x)
    {
        const char *dec = json_string_value(json_object_get(x, "decision"));
        const char *why = json_string_value(json_object_get(x, "reason"));
        if (strcmp(dec, decision) == 0 && (!reason_part || (why && strstr(why, reason_part))))
            found = true;
    }
    json_decref(d);
    return found;
}

static void test_schedule_fires_once_and_survives_restarts(void **state)
{
    fixture_t *f = *state;
    submit(f, "pipeline: nightly\n"
              "triggers: [{schedule: '*/5 * * * *'}]\n"
              "tasks: {a: {run: 'true'}}\n");
    tick_at(f, T0 + 60000); /* 06:59: nothing due */
    assert_int_equal(n_runs(f, "nightly"), 0);
    tick_at(f, T0 + 120000); /* 07:00 */
    assert_int_equal(n_runs(f, "nightly"), 1);
    json_t *runs = runs_of(f, "nightly");
    json_t *origin = json_object_get(json_array_get(runs, 0), "origin");
    assert_string_equal(json_string_value(json_object_get(origin, "kind")), "schedule");
    assert_string_equal(json_string_value(json_object_get(origin, "scheduled_for")),
                        "2026-03-08T07:00:00Z");
    assert_string_equal(json_string_value(json_object_get(json_array_get(runs, 0), "trigger")),
                        "schedule");
    json_decref(runs);
    tick_at(f, T0 + 150000); /* 07:00:30, again: no second run */
    assert_int_equal(n_runs(f, "nightly"), 1);

    /* A restart a minute later neither fires again nor misses. */
    fake_now = T0 + 180000;
    restart(f);
    tick_at(f, T0 + 180000);
    assert_int_equal(n_runs(f, "nightly"), 1);
    tick_at(f, T0 + 420000); /* 07:05 */
    assert_int_equal(n_runs(f, "nightly"), 2);

    /* Down from 07:06 to 07:20:30: 07:10 and 07:15 are missed (catchup:
     * none), 07:20 is within the grace and fires. */
    fixture_stop(f);
    fake_now = T0 + (22 * 60 + 30) * 1000ull;
    fixture_start(f, NULL, 0, &wall);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(n_runs(f, "nightly"), 3);
    assert_true(has_decision(f, "nightly", "missed", "2 fire times passed while loomd"));
}

/* The wall clock stepped an hour back, then forward again, mid-run: the
 * schedule fires each fire time once, never twice; what the jump forward
 * skipped is recorded as missed (catchup: none), not fired late. */
static void test_stepped_wall_clock_fires_each_time_once(void **state)
{
    fixture_t *f = *state;
    submit(f, "pipeline: steady\n"
              "triggers: [{schedule: '*/10 * * * *'}]\n"
              "tasks: {a: {run: 'true'}}\n");
    tick_at(f, T0 + 120000); /* 07:00 */
    assert_int_equal(n_runs(f, "steady"), 1);
    tick_at(f, T0 + 120000 - 3600000);          /* stepped back to 06:00 */
    tick_at(f, T0 + 120000 - 3600000 + 600000); /* 06:10 again */
    assert_int_equal(n_runs(f, "steady"), 1);
    tick_at(f, T0 + 120000 + 30000); /* back at 07:00:30 */
    assert_int_equal(n_runs(f, "steady"), 1);
    tick_at(f, T0 + 720000); /* 07:10 */
    assert_int_equal(n_runs(f, "steady"), 2);
    tick_at(f, T0 + 720000 + 3600000);        /* stepped forward to 08:10 */
    assert_int_equal(n_runs(f, "steady"), 3); /* 08:10 on time, once */
    assert_true(has_decision(f, "steady", "missed", "5 fire times"));
    tick_at(f, T0 + 720000 + 3600000 + 1000);
    assert_int_equal(n_runs(f, "steady"), 3);
}

static void test_catchup_latest_and_all(void **state)
{
    fixture_t *f = *state;
    submit(f, "pipeline: latest\n"
              "triggers: [{schedule: '0 * * * *', catchup: latest}]\n"
              "tasks: {a: {run: 'true'}}\n");
    submit(f, "pipeline: every\n"
              "triggers: [{schedule: '0 * * * *', catchup: all}]\n"
              "tasks: {a: {run: 'true'}}\n");
    /* Down for five hours: 07:00 .. 11:00 passed. */
    fixture_stop(f);
    fake_now = T0 + 5 * 3600000ull;
    fixture_start(f, NULL, 0, &wall);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(n_runs(f, "latest"), 1);
    json_t *runs = runs_of(f, "latest");
    json_t *origin = json_object_get(json_array_get(runs, 0), "origin");
    assert_string_equal(json_string_value(json_object_get(origin, "scheduled_for")),
                        "2026-03-08T11:00:00Z");
    json_decref(runs);
    assert_true(has_decision(f, "latest", "missed", "4 fire times"));
    assert_int_equal(n_runs(f, "every"), 5);
}

static const char *event_dag = "pipeline: retrain\n"
                               "params: {threshold: {type: float, default: 0.2}}\n"
                               "triggers:\n"
                               "  - event: drift\n"
                               "    when: event.psi > params.threshold and event.model == 'churn'\n"
                               "tasks: {train: {run: 'echo $LOOM_EVENT_PSI'}}\n";

static json_t *send_event(fixture_t *f, const char *name, const char *payload, const char *key)
{
    json_t *p = json_loads(payload, 0, NULL);
    assert_non_null(p);
    json_t *res = NULL;
    assert_int_equal(loom_sched_event(f->s, name, "api", p, key, &res), 0);
    json_decref(p);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    return res;
}

static const char *first_decision(json_t *res)
{
    json_t *o = json_array_get(json_object_get(res, "outcome"), 0);
    return o ? json_string_value(json_object_get(o, "decision")) : "none";
}

static void test_events_filter_and_idempotency(void **state)
{
    fixture_t *f = *state;
    submit(f, event_dag);
    json_t *res = send_event(f, "drift", "{\"psi\": 0.1, \"model\": \"churn\"}", NULL);
    assert_string_equal(first_decision(res), "filtered");
    json_decref(res);
    res = send_event(f, "other", "{\"psi\": 0.9, \"model\": \"churn\"}", NULL);
    assert_int_equal(json_array_size(json_object_get(res, "outcome")), 0);
    json_decref(res);
    assert_int_equal(n_runs(f, "retrain"), 0);

    res = send_event(f, "drift", "{\"psi\": 0.3, \"model\": \"churn\"}", "delivery-1");
    assert_string_equal(first_decision(res), "started");
    assert_false(json_is_true(json_object_get(res, "duplicate")));
    json_decref(res);
    assert_int_equal(n_runs(f, "retrain"), 1);
    json_t *runs = runs_of(f, "retrain");
    json_t *origin = json_object_get(json_array_get(runs, 0), "origin");
    assert_string_equal(json_string_value(json_object_get(origin, "event")), "drift");
    json_decref(runs);

    /* The same delivery again, even after a restart: nothing new. */
    restart(f);
    res = send_event(f, "drift", "{\"psi\": 0.3, \"model\": \"churn\"}", "delivery-1");
    assert_true(json_is_true(json_object_get(res, "duplicate")));
    assert_string_equal(first_decision(res), "started"); /* what it did the first time */
    json_decref(res);
    assert_int_equal(n_runs(f, "retrain"), 1);
}

static void test_consecutive_events_before_firing(void **state)
{
    fixture_t *f = *state;
    submit(f, "pipeline: steady\n"
              "triggers: [{event: check, when: 'event.drift', consecutive: 3}]\n"
              "tasks: {a: {run: 'true'}}\n");
    const char *yes = "{\"drift\": true}", *no = "{\"drift\": false}";
    json_t *res = send_event(f, "check", yes, NULL);
    assert_string_equal(first_decision(res), "skipped");
    json_decref(res);
    json_decref(send_event(f, "check", yes, NULL));
    json_decref(send_event(f, "check", no, NULL)); /* breaks the streak */
    json_decref(send_event(f, "check", yes, NULL));
    restart(f); /* the streak is kept */
    json_decref(send_event(f, "check", yes, NULL));
    assert_int_equal(n_runs(f, "steady"), 0);
    assert_true(has_decision(f, "steady", "skipped", "2 of 3 events in a row"));
    res = send_event(f, "check", yes, NULL);
    assert_string_equal(first_decision(res), "started");
    json_decref(res);
    json_decref(send_event(f, "check", yes, NULL)); /* counting starts again */
    assert_int_equal(n_runs(f, "steady"), 1);
}

/* Cancels the newest active run of a pipeline (no agent runs its tasks,
 * so it ends at once). */
static void end_newest_run(fixture_t *f, const char *pipeline)
{
    json_t *runs = runs_of(f, pipeline);
    size_t i;
    json_t *r;
    json_array_foreach(runs, i, r)
    {
        const char *st = json_string_value(json_object_get(r, "state"));
        if (strcmp(st, "queued") == 0 || strcmp(st, "running") == 0) {
            assert_int_equal(
                loom_sched_cancel_run(f->s, (uint64_t)json_integer_value(json_object_get(r, "id")),
                                      "test"),
                0);
            break;
        }
    }
    json_decref(runs);
    uv_run(&f->loop, UV_RUN_NOWAIT);
}

static size_t n_active(fixture_t *f, const char *pipeline)
{
    json_t *runs = runs_of(f, pipeline);
    size_t i, n = 0;
    json_t *r;
    json_array_foreach(runs, i, r)
    {
        const char *st = json_string_value(json_object_get(r, "state"));
        if (strcmp(st, "queued") == 0 || strcmp(st, "running") == 0) n++;
    }
    json_decref(runs);
    return n;
}

static void test_overlap_skip_queue_cancel(void **state)
{
    fixture_t *f = *state;
    submit(f, "pipeline: skipper\n"
              "concurrency: {max_active_runs: 1, on_overlap: skip}\n"
              "triggers: [{event: go}]\n"
              "tasks: {a: {run: 'true'}}\n");
    submit(f, "pipeline: queuer\n"
              "concurrency: {max_active_runs: 1, on_overlap: queue}\n"
              "triggers: [{event: go}]\n"
              "tasks: {a: {run: 'true'}}\n");
    submit(f, "pipeline: canceller\n"
              "concurrency: {max_active_runs: 1, on_overlap: cancel_running}\n"
              "triggers: [{event: go}]\n"
              "tasks: {a: {run: 'true'}}\n");
    json_decref(send_event(f, "go", "{\"n\": 1}", NULL));
    json_decref(send_event(f, "go", "{\"n\": 2}", NULL));
    json_decref(send_event(f, "go", "{\"n\": 3}", NULL));
    assert_int_equal(n_runs(f, "skipper"), 1);
    assert_true(has_decision(f, "skipper", "skipped", "on_overlap: skip"));
    assert_int_equal(n_runs(f, "queuer"), 1);
    assert_true(has_decision(f, "queuer", "queued", "waits as number 2"));
    assert_int_equal(n_runs(f, "canceller"), 3);
    assert_int_equal(n_active(f, "canceller"), 1);

    /* The queue survives a restart, and starts in order as runs end. */
    restart(f);
    assert_int_equal(n_runs(f, "queuer"), 1);
    end_newest_run(f, "queuer");
    assert_int_equal(n_runs(f, "queuer"), 2);
    json_t *runs = runs_of(f, "queuer");
    json_t *params = json_object_get(json_array_get(runs, 0), "origin");
    assert_non_null(params);
    json_decref(runs);
    end_newest_run(f, "queuer");
    assert_int_equal(n_runs(f, "queuer"), 3);
    end_newest_run(f, "queuer");
    assert_int_equal(n_runs(f, "queuer"), 3);
    assert_int_equal(n_active(f, "queuer"), 0);
}

static void test_debounce_and_cooldown(void **state)
{
    fixture_t *f = *state;
    submit(f, "pipeline: calm\n"
              "concurrency: {max_active_runs: 5, debounce: 30s}\n"
              "triggers: [{event: ping}]\n"
              "tasks: {a: {run: 'true'}}\n");
    submit(f, "pipeline: cool\n"
              "concurrency: {max_active_runs: 5, cooldown: 10m}\n"
              "triggers: [{event: ping}]\n"
              "tasks: {a: {run: 'true'}}\n");
    json_decref(send_event(f, "ping", "{\"n\": 1}", NULL));
    fake_now += 10000;
    json_decref(send_event(f, "ping", "{\"n\": 2}", NULL));
    fake_now += 10000;
    json_decref(send_event(f, "ping", "{\"n\": 3}", NULL));
    assert_int_equal(n_runs(f, "calm"), 0);
    assert_int_equal(n_runs(f, "cool"), 1);
    assert_true(has_decision(f, "cool", "skipped", "cooldown"));

    /* The window, opened by the first, survives a restart and closes 30 s
     * after it: one run with the latest event, knowing there were 3. */
    restart(f);
    tick_at(f, T0 + 29000);
    assert_int_equal(n_runs(f, "calm"), 0);
    tick_at(f, T0 + 30000);
    assert_int_equal(n_runs(f, "calm"), 1);
    json_t *runs = runs_of(f, "calm");
    json_t *origin = json_object_get(json_array_get(runs, 0), "origin");
    assert_int_equal(json_integer_value(json_object_get(origin, "debounced")), 3);
    json_decref(runs);

    /* Past the cooldown, the next event starts a run. */
    fake_now = T0 + 11 * 60000;
    json_decref(send_event(f, "ping", "{\"n\": 4}", NULL));
    assert_int_equal(n_runs(f, "cool"), 2);
}

static void test_pause_and_resume(void **state)
{
    fixture_t *f = *state;
    submit(f, "pipeline: hourly\n"
              "triggers: [{schedule: '0 * * * *'}, {event: go}]\n"
              "tasks: {a: {run: 'true'}}\n");
    assert_int_equal(loom_sched_pipeline_pause(f->s, "hourly", true), 0);
    assert_int_equal(loom_sched_pipeline_pause(f->s, "nope", true), LOOM_ENOTFOUND);
    json_t *res = send_event(f, "go", "{}", NULL);
    assert_string_equal(first_decision(res), "skipped");
    json_decref(res);
    tick_at(f, T0 + 3 * 60000); /* 07:01: 07:00 passed while paused */
    assert_int_equal(n_runs(f, "hourly"), 0);
    assert_true(has_decision(f, "hourly", "skipped", "paused"));
    restart(f); /* paused is kept */
    json_decref(send_event(f, "go", "{}", NULL));
    assert_int_equal(n_runs(f, "hourly"), 0);
    assert_int_equal(loom_sched_pipeline_pause(f->s, "hourly", false), 0);
    json_decref(send_event(f, "go", "{}", NULL));
    assert_int_equal(n_runs(f, "hourly"), 1);
    tick_at(f, T0 + 62 * 60000); /* 08:00 fires; the paused 07:00 is not caught up */
    assert_int_equal(n_runs(f, "hourly"), 2);
}

/* Turns the loop until the pipeline has n runs (or 5 s pass). */
static void wait_runs(fixture_t *f, const char *pipeline, size_t n)
{
    uint64_t end = loom_mono_ms() + 5000;
    while (n_runs(f, pipeline) < n && loom_mono_ms() < end) uv_run(&f->loop, UV_RUN_ONCE);
    assert_int_equal(n_runs(f, pipeline), n);
}

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

static void test_data_folder_new_files_only(void **state)
{
    fixture_t *f = *state;
    char data[128], dag[512];
    snprintf(data, sizeof data, "%s/incoming", f->dir);
    assert_int_equal(mkdir(data, 0755), 0);
    write_file(data, "old.csv", "a\n");
    snprintf(dag, sizeof dag,
             "pipeline: ingest\n"
             "triggers: [{data: {path: %s, glob: '*.csv', settle: 0s}}]\n"
             "tasks: {a: {run: 'cat $LOOM_DATA_FILES'}}\n",
             data);
    submit(f, dag);
    wait_runs(f, "ingest", 1); /* the file already there is new to loom */
    write_file(data, "notes.txt", "x\n");
    write_file(data, "new.csv", "b\n");
    wait_runs(f, "ingest", 2);
    json_t *runs = runs_of(f, "ingest");
    json_t *origin = json_object_get(json_array_get(runs, 0), "origin");
    assert_string_equal(json_string_value(json_object_get(origin, "kind")), "data");
    assert_int_equal(json_integer_value(json_object_get(origin, "files")), 1);
    json_decref(runs);

    /* loomd down: a file arrives; on restart it (and only it) starts a run. */
    fixture_stop(f);
    write_file(data, "while-down.csv", "c\n");
    fixture_start(f, NULL, 0, &wall);
    wait_runs(f, "ingest", 3);
    for (int i = 0; i < 20; i++) uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(n_runs(f, "ingest"), 3);
}

static void test_data_batch_waits_for_max_wait(void **state)
{
    fixture_t *f = *state;
    char data[128], dag[512];
    snprintf(data, sizeof data, "%s/batch", f->dir);
    assert_int_equal(mkdir(data, 0755), 0);
    snprintf(dag, sizeof dag,
             "pipeline: batcher\n"
             "triggers: [{data: {path: %s, settle: 0s, batch: {max_files: 3, max_wait: 1m}}}]\n"
             "tasks: {a: {run: 'true'}}\n",
             data);
    submit(f, dag);
    write_file(data, "1", "1");
    write_file(data, "2", "2");
    for (int i = 0; i < 50; i++) uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(n_runs(f, "batcher"), 0);
    tick_at(f, T0 + 61000);
    assert_int_equal(n_runs(f, "batcher"), 1);
    json_t *runs = runs_of(f, "batcher");
    json_t *origin = json_object_get(json_array_get(runs, 0), "origin");
    assert_int_equal(json_integer_value(json_object_get(origin, "files")), 2);
    json_decref(runs);
    write_file(data, "3", "3");
    write_file(data, "4", "4");
    write_file(data, "5", "5");
    wait_runs(f, "batcher", 2); /* full: at once */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_schedule_fires_once_and_survives_restarts, setup_fake,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_catchup_latest_and_all, setup_fake, teardown),
        cmocka_unit_test_setup_teardown(test_stepped_wall_clock_fires_each_time_once, setup_fake,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_events_filter_and_idempotency, setup_fake, teardown),
        cmocka_unit_test_setup_teardown(test_consecutive_events_before_firing, setup_fake,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_overlap_skip_queue_cancel, setup_fake, teardown),
        cmocka_unit_test_setup_teardown(test_debounce_and_cooldown, setup_fake, teardown),
        cmocka_unit_test_setup_teardown(test_pause_and_resume, setup_fake, teardown),
        cmocka_unit_test_setup_teardown(test_data_folder_new_files_only, setup_fake, teardown),
        cmocka_unit_test_setup_teardown(test_data_batch_waits_for_max_wait, setup_fake, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
