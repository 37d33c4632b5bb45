/* Hash maps: lookups survive growth and deletion (tombstones). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>

#include "loom/map.h"

static void test_u64_put_get_delete_many(void **state)
{
    (void)state;
    loom_map_t m = {0};
    enum { N = 20000 };
    for (uint64_t i = 1; i <= N; i++) loom_map_put(&m, i * 7919, (void *)(uintptr_t)i);
    assert_int_equal(m.count, N);
    for (uint64_t i = 1; i <= N; i += 2)
        assert_ptr_equal(loom_map_del(&m, i * 7919), (void *)(uintptr_t)i);
    assert_int_equal(m.count, N / 2);
    for (uint64_t i = 1; i <= N; i++) {
        void *v = loom_map_get(&m, i * 7919);
        if (i % 2)
            assert_null(v);
        else
            assert_ptr_equal(v, (void *)(uintptr_t)i);
    }
    /* Churn: insert and delete repeatedly; tombstones must not fill the table. */
    for (uint64_t round = 0; round < 50; round++) {
        for (uint64_t i = 0; i < 1000; i++) loom_map_put(&m, (1ull << 40) + round * 1000 + i, &m);
        for (uint64_t i = 0; i < 1000; i++)
            assert_non_null(loom_map_del(&m, (1ull << 40) + round * 1000 + i));
    }
    assert_int_equal(m.count, N / 2);
    size_t seen = 0;
    void *v;
    for (size_t it = 0; loom_map_next(&m, &it, &v);) seen++;
    assert_int_equal(seen, N / 2);
    loom_map_put(&m, 2 * 7919, (void *)(uintptr_t)99);
    assert_ptr_equal(loom_map_get(&m, 2 * 7919), (void *)(uintptr_t)99);
    assert_int_equal(m.count, N / 2);
    loom_map_free(&m);
    assert_null(loom_map_get(&m, 1));
}

static void test_string_keys(void **state)
{
    (void)state;
    loom_map_t m = {0};
    char keys[500][16];
    for (int i = 0; i < 500; i++) {
        snprintf(keys[i], sizeof keys[i], "agent-%d", i);
        loom_smap_put(&m, keys[i], keys[i]);
    }
    assert_ptr_equal(loom_smap_get(&m, "agent-123"), keys[123]);
    assert_null(loom_smap_get(&m, "agent-500"));
    assert_ptr_equal(loom_smap_del(&m, "agent-7"), keys[7]);
    assert_null(loom_smap_get(&m, "agent-7"));
    assert_int_equal(m.count, 499);
    loom_map_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_u64_put_get_delete_many),
        cmocka_unit_test(test_string_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
