/* The Prometheus exposition writer (scheduler/metrics.c): label escaping,
 * cumulative histogram buckets ending with +Inf, _sum and _count. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

static void test_family_and_plain_samples(void **state)
{
    (void)state;
    loom_buf_t b = {0};
    loom_prom_family(&b, "loom_queue_depth", "gauge", "Tasks waiting\\queued\nnow.");
    loom_prom_sample(&b, "loom_queue_depth", NULL, 0, 7);
    loom_prom_sample(&b, "loom_x", NULL, 0, 0.25);
    assert_string_equal(b.data, "# HELP loom_queue_depth Tasks waiting\\\\queued\\nnow.\n"
                                "# TYPE loom_queue_depth gauge\n"
                                "loom_queue_depth 7\n"
                                "loom_x 0.25\n");
    loom_buf_free(&b);
}

static void test_label_values_are_escaped(void **state)
{
    (void)state;
    loom_buf_t b = {0};
    const char *labels[] = {"agent", "gpu \"01\"\\a\nb", "gpu", "0"};
    loom_prom_sample(&b, "loom_agent_up", labels, 2, 1);
    assert_string_equal(b.data, "loom_agent_up{agent=\"gpu \\\"01\\\"\\\\a\\nb\",gpu=\"0\"} 1\n");
    loom_buf_free(&b);
}

static void test_histogram_is_cumulative_with_inf_sum_and_count(void **state)
{
    (void)state;
    static const double bounds[] = {0.1, 1, 10};
    loom_hist_t h;
    loom_hist_init(&h, bounds, 3);
    loom_hist_observe(&h, 0.05);
    loom_hist_observe(&h, 0.1); /* on a bound: counts in that bucket (le) */
    loom_hist_observe(&h, 5);
    loom_hist_observe(&h, 100);
    loom_buf_t b = {0};
    const char *labels[] = {"kind", "event"};
    loom_prom_histogram(&b, "loom_lat_seconds", labels, 1, &h);
    assert_string_equal(b.data, "loom_lat_seconds_bucket{kind=\"event\",le=\"0.1\"} 2\n"
                                "loom_lat_seconds_bucket{kind=\"event\",le=\"1\"} 2\n"
                                "loom_lat_seconds_bucket{kind=\"event\",le=\"10\"} 3\n"
                                "loom_lat_seconds_bucket{kind=\"event\",le=\"+Inf\"} 4\n"
                                "loom_lat_seconds_sum{kind=\"event\"} 105.15\n"
                                "loom_lat_seconds_count{kind=\"event\"} 4\n");
    loom_buf_free(&b);
    /* Without labels, and empty. */
    loom_hist_init(&h, bounds, 1);
    loom_prom_histogram(&b, "e", NULL, 0, &h);
    assert_string_equal(b.data, "e_bucket{le=\"0.1\"} 0\ne_bucket{le=\"+Inf\"} 0\ne_sum 0\n"
                                "e_count 0\n");
    loom_buf_free(&b);
}

static void test_metrics_hooks_render_without_a_scheduler_state(void **state)
{
    (void)state;
    /* Unknown states and kinds never grow the label set past the known ones. */
    loom_metrics_t *m = loom_metrics_new("/nonexistent");
    loom_metrics_task_ended(m, "succeeded");
    loom_metrics_task_ended(m, "no-such-state");
    loom_metrics_trigger_started(m, "whatever", 1.5);
    loom_metrics_http(m, "BREW", "unmatched", 404, 0.001);
    loom_metrics_http(m, "GET", "runs/*", 200, 0.002);
    loom_metrics_http(m, "GET", "runs/*", 200, 0.003);
    loom_metrics_destroy(&m);
    assert_null(m);
    loom_metrics_destroy(&m); /* NULL is fine */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_family_and_plain_samples),
        cmocka_unit_test(test_label_values_are_escaped),
        cmocka_unit_test(test_histogram_is_cumulative_with_inf_sum_and_count),
        cmocka_unit_test(test_metrics_hooks_render_without_a_scheduler_state),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
