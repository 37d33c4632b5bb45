/* The Slurm executor's parsers: what sbatch, squeue and sinfo print is read
 * strictly, and anything else is refused with where and why. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "slurm_parse.h"

#include <stdlib.h>
#include <string.h>

static void sbatch_prints_the_job_id(void **state)
{
    (void)state;
    char id[32];
    assert_int_equal(slurm_parse_sbatch("1234\n", id, sizeof id), 0);
    assert_string_equal(id, "1234");
    assert_int_equal(slurm_parse_sbatch("77;cluster\n", id, sizeof id), 0);
    assert_string_equal(id, "77");
    assert_int_equal(slurm_parse_sbatch("", id, sizeof id), -1);
    assert_int_equal(slurm_parse_sbatch("Submitted batch job 12\n", id, sizeof id), -1);
    assert_int_equal(slurm_parse_sbatch("12\n13\n", id, sizeof id), -1);
}

static void squeue_rows_are_parsed(void **state)
{
    (void)state;
    slurm_row_t *rows;
    char why[256];
    int n = slurm_parse_squeue("1|FAILED|NonZeroExitCode|768|\n2|RUNNING|None|0|\n"
                               "3|CANCELLED|None|15|\n",
                               &rows, why, sizeof why);
    assert_int_equal(n, 3);
    assert_string_equal(rows[0].id, "1");
    assert_string_equal(rows[0].state, "FAILED");
    assert_string_equal(rows[0].reason, "NonZeroExitCode");
    assert_int_equal(rows[0].wait_status, 768); /* exit 3 */
    assert_string_equal(rows[1].state, "RUNNING");
    assert_int_equal(rows[2].wait_status, 15); /* SIGTERM */
    free(rows);
    assert_int_equal(slurm_parse_squeue("", &rows, why, sizeof why), 0);
    free(rows);
}

static void bad_squeue_output_says_which_line(void **state)
{
    (void)state;
    slurm_row_t *rows;
    char why[256];
    assert_int_equal(
        slurm_parse_squeue("1|RUNNING|None|0|\nslurm_load_jobs error\n", &rows, why, sizeof why),
        -1);
    assert_null(rows);
    assert_non_null(strstr(why, "line 2"));
    assert_int_equal(slurm_parse_squeue("x1|RUNNING|None|0|\n", &rows, why, sizeof why), -1);
    assert_int_equal(slurm_parse_squeue("1|RUNNING|None|-1|\n", &rows, why, sizeof why), -1);
    assert_int_equal(slurm_parse_squeue("1|RUNNING|None|0|extra|\n", &rows, why, sizeof why), -1);
    assert_int_equal(slurm_parse_squeue("1||None|0|\n", &rows, why, sizeof why), -1);
}

static void sacct_gives_the_end_of_jobs_squeue_forgot(void **state)
{
    (void)state;
    slurm_row_t *rows;
    char why[256];
    int n = slurm_parse_sacct("12|COMPLETED|0:0\n12.batch|COMPLETED|0:0\n13|FAILED|3:0\n"
                              "14|CANCELLED by 0|0:15\n15|NODE_FAIL|0:0\n",
                              &rows, why, sizeof why);
    assert_int_equal(n, 4);
    assert_string_equal(rows[0].id, "12");
    assert_int_equal(rows[1].wait_status, 3 << 8);
    assert_string_equal(rows[2].state, "CANCELLED");
    assert_int_equal(rows[2].wait_status, 15);
    assert_string_equal(rows[3].state, "NODE_FAIL");
    free(rows);
    assert_int_equal(slurm_parse_sacct("12|COMPLETED|zero\n", &rows, why, sizeof why), -1);
    assert_non_null(strstr(why, "sacct line 1"));
    assert_int_equal(slurm_parse_sacct("12|COMPLETED\n", &rows, why, sizeof why), -1);
}

static void sinfo_sums_the_nodes_that_are_up(void **state)
{
    (void)state;
    slurm_capacity_t c;
    char why[256];
    assert_int_equal(slurm_parse_sinfo("n1|64|512000|gpu:a100:4(S:0-1)|idle\n"
                                       "n2|64|512000|gpu:a100:2,gpu:h100:1|mix\n"
                                       "n3|32|256000|(null)|down*\n"
                                       "n1|64|512000|gpu:a100:4(S:0-1)|idle\n",
                                       &c, why, sizeof why),
                     0);
    assert_int_equal(c.nodes, 2); /* n3 is down; n1 listed twice (two partitions) */
    assert_int_equal(c.cpus, 128);
    assert_int_equal(c.memory_bytes, 1024000ull << 20);
    assert_int_equal(c.n_gpus, 7);
    assert_string_equal(c.gpus[0].model, "a100");
    assert_string_equal(c.gpus[6].model, "h100");
    assert_int_equal(c.gpus[6].index, 6);
    slurm_capacity_free(&c);
    assert_int_equal(slurm_parse_sinfo("n1|8|1000|gpu:2|idle\n", &c, why, sizeof why), 0);
    assert_int_equal(c.n_gpus, 2);
    assert_string_equal(c.gpus[1].model, "");
    slurm_capacity_free(&c);
    assert_int_equal(slurm_parse_sinfo("n1|eight|1000|(null)|idle\n", &c, why, sizeof why), -1);
    assert_non_null(strstr(why, "sinfo line 1"));
    assert_int_equal(slurm_parse_sinfo("n1|8|1000|gpu:a100:x|idle\n", &c, why, sizeof why), -1);
    assert_non_null(strstr(why, "gres"));
}

static void shell_quoting_survives_quotes(void **state)
{
    (void)state;
    char *q = slurm_sh_quote("it's $HOME");
    assert_string_equal(q, "'it'\\''s $HOME'");
    free(q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sbatch_prints_the_job_id),
        cmocka_unit_test(squeue_rows_are_parsed),
        cmocka_unit_test(bad_squeue_output_says_which_line),
        cmocka_unit_test(sacct_gives_the_end_of_jobs_squeue_forgot),
        cmocka_unit_test(sinfo_sums_the_nodes_that_are_up),
        cmocka_unit_test(shell_quoting_survives_quotes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
