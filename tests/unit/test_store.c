/* The state database: migrations, versions, and what survives a reopen. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "loom/err.h"
#include "store.h"

static char dir[64];
static char path[128];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/loom-store-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/loom.db", dir);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char p[160];
    static const char *const files[] = {"loom.db", "loom.db-wal", "loom.db-shm"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        unlink(p);
    }
    rmdir(dir);
    return 0;
}

static loom_store_t *open_store(void)
{
    loom_store_t *s = NULL;
    char why[256] = "";
    assert_int_equal(loom_store_open(path, LOOM_SYNC_NORMAL, &s, why, sizeof why), 0);
    return s;
}

static void test_versions_and_reopen(void **state)
{
    (void)state;
    loom_store_t *s = open_store();
    assert_int_equal(loom_store_schema_version(s), loom_store_schema_latest());
    loom_submit_result_t r;
    assert_int_equal(loom_store_pipeline_submit(s, "p", "p.yaml", "a", 1, "h1", 1, 10, &r), 0);
    assert_true(r.created);
    assert_int_equal(r.version, 1);
    assert_int_equal(loom_store_pipeline_submit(s, "p", "p.yaml", "a", 1, "h1", 1, 11, &r), 0);
    assert_false(r.created);
    assert_int_equal(r.version, 1);
    assert_int_equal(loom_store_pipeline_submit(s, "p", "p.yaml", "bb", 2, "h2", 1, 12, &r), 0);
    assert_int_equal(r.version, 2);
    assert_int_equal(loom_store_version_origin(s, r.pipeline_id, 2, "ab12", "c0ffee", 1), 0);
    loom_run_row_t run = {.pipeline_id = r.pipeline_id,
                          .version = 2,
                          .state = "running",
                          .trigger = "manual",
                          .created_ms = 12};
    assert_int_equal(loom_store_run_insert(s, &run), 0);
    assert_int_equal(loom_store_commit(s), 0);
    loom_store_destroy(&s);
    assert_null(s);

    /* Reopened: migrations are not re-run, data is all there. */
    s = open_store();
    assert_int_equal(loom_store_schema_version(s), loom_store_schema_latest());
    uint64_t pid;
    uint32_t version;
    char *src = NULL;
    size_t len;
    assert_int_equal(loom_store_pipeline_source(s, "p", 0, &pid, &version, &src, &len), 0);
    assert_int_equal(version, 2);
    assert_string_equal(src, "bb");
    free(src);
    char *bundle = loom_store_version_bundle(s, pid, 2);
    assert_string_equal(bundle, "ab12");
    free(bundle);
    assert_null(loom_store_version_bundle(s, pid, 1));
    assert_int_equal(loom_store_pipeline_source(s, "p", 1, &pid, &version, &src, &len), 0);
    assert_string_equal(src, "a");
    free(src);
    assert_int_equal(loom_store_pipeline_source(s, "p", 3, &pid, &version, &src, &len),
                     LOOM_ENOTFOUND);
    json_t *j = NULL;
    assert_int_equal(loom_store_json_run(s, run.id, &j), 0);
    assert_string_equal(json_string_value(json_object_get(j, "state")), "running");
    json_decref(j);
    loom_store_destroy(&s);
}

static void test_uncommitted_writes_vanish_with_a_crash(void **state)
{
    (void)state;
    loom_store_t *s = open_store();
    loom_submit_result_t r;
    assert_int_equal(loom_store_pipeline_submit(s, "p", "p.yaml", "a", 1, "h1", 1, 10, &r), 0);
    assert_true(loom_store_in_txn(s));
    /* A second connection (as after a crash) does not see the open write. */
    sqlite3 *other;
    assert_int_equal(sqlite3_open(path, &other), SQLITE_OK);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(other, "SELECT count(*) FROM pipelines", -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 0);
    sqlite3_finalize(st);
    assert_int_equal(loom_store_commit(s), 0);
    assert_int_equal(sqlite3_prepare_v2(other, "SELECT count(*) FROM pipelines", -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 1);
    sqlite3_finalize(st);
    sqlite3_close(other);
    loom_store_destroy(&s);
}

/* PRAGMA wal_checkpoint(PASSIVE) from another connection: frames in the
 * WAL and frames it could copy into the database. */
static void checkpoint(int *log, int *done)
{
    sqlite3 *other;
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_open(path, &other), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(other, "PRAGMA wal_checkpoint(PASSIVE)", -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    *log = sqlite3_column_int(st, 1);
    *done = sqlite3_column_int(st, 2);
    sqlite3_finalize(st);
    sqlite3_close(other);
}

/* A row read lends its strings from a statement left stepping; that must
 * not hold a read transaction past the next commit, or no checkpoint can
 * copy the WAL back and it grows for ever (found by bench/soak.py). */
static void test_a_borrowed_row_does_not_pin_the_wal(void **state)
{
    (void)state;
    loom_store_t *s = open_store();
    loom_submit_result_t r;
    assert_int_equal(loom_store_pipeline_submit(s, "p", "p.yaml", "a", 1, "h1", 1, 10, &r), 0);
    loom_run_row_t run = {.pipeline_id = r.pipeline_id,
                          .pipeline = "p",
                          .version = 1,
                          .state = "running",
                          .trigger = "manual",
                          .created_ms = 1};
    assert_int_equal(loom_store_run_insert(s, &run), 0);
    loom_task_row_t task = {.run_id = run.id, .name = "t", .needs_json = "[]", .state = "running"};
    assert_int_equal(loom_store_task_insert(s, &task), 0);
    loom_attempt_row_t at = {.task_id = task.id,
                             .run_id = run.id,
                             .number = 1,
                             .agent = "a1",
                             .state = "running",
                             .dispatched_ms = 1};
    assert_int_equal(loom_store_attempt_insert(s, &at), 0);
    assert_int_equal(loom_store_commit(s), 0);

    loom_attempt_row_t got;
    assert_int_equal(loom_store_attempt_get(s, at.id, &got), 0);
    assert_string_equal(got.agent, "a1");
    /* A later turn writes and commits. */
    assert_int_equal(loom_store_pipeline_submit(s, "q", "q.yaml", "b", 1, "h2", 1, 20, &r), 0);
    assert_int_equal(loom_store_commit(s), 0);
    int log = 0, done = 0;
    checkpoint(&log, &done);
    assert_true(log > 0);
    assert_int_equal(done, log);
    loom_store_destroy(&s);
}

static void test_newer_schema_is_refused(void **state)
{
    (void)state;
    loom_store_t *s = open_store();
    loom_store_destroy(&s);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    char why[256] = "";
    assert_int_equal(loom_store_open(path, LOOM_SYNC_NORMAL, &s, why, sizeof why), LOOM_EDB);
    assert_null(s);
    assert_non_null(strstr(why, "schema 99 is newer"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_versions_and_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_uncommitted_writes_vanish_with_a_crash, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_newer_schema_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_borrowed_row_does_not_pin_the_wal, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
