/* A C program on nuwa_c_abi.h, with no Python in its process: the header
 * compiles cleanly, and its declarations match the library. Built and run by
 * test_c_abi_host.py. Exits 0 if every check passed. */
#include <stdio.h>
#include <string.h>

#include "nuwa_c_abi.h"

static int failures = 0;

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "FAIL line %d: %s\n", __LINE__, #cond);            \
            failures++;                                                        \
        }                                                                      \
    } while (0)

int main(void) {
    double data[] = {1.0, 2.0, 3.0};
    double sum = 0.0;
    uint64_t out = 0, releases = 1, reacquires = 1;
    uint8_t flag = 0;
    char text[4096];
    size_t len;

    CHECK(nuwa_sum_of_squares(data, 3, &sum) == NUWA_OK && sum == 14.0);
    CHECK(nuwa_sum_of_squares(NULL, 3, &sum) == NUWA_ERR_NULL);
    CHECK(nuwa_python_found() == 0);
    CHECK(nuwa_can_release() == 0);
    len = nuwa_describe(text, sizeof text);
    CHECK(len < sizeof text && strncmp(text, "no Python found", 15) == 0);
    CHECK(nuwa_describe(NULL, 0) == len);
    CHECK(nuwa_spin_sum(4, &out) == NUWA_OK && out == 14);
    CHECK(nuwa_empty_block(7, &out) == NUWA_OK && out == 7);
    CHECK(nuwa_nested_blocks(4, &out) == NUWA_OK && out == 26);
    CHECK(nuwa_early_return(10, 4, &out) == NUWA_STOPPED_EARLY && out == 6);
    CHECK(nuwa_checked_power(2, 10, &out) == NUWA_OK && out == 1024);
    CHECK(nuwa_checked_power(2, 64, &out) == NUWA_ERR_OVERFLOW);
    CHECK(nuwa_panic_in_block(1, 0) == NUWA_ERR_PANIC);
    CHECK(nuwa_panic_in_block(9, 0) == NUWA_ERR_ARG);
    CHECK(nuwa_blocks_in_rust_thread(4, 0, &out) == NUWA_OK && out == 14 + 4 + 1);
    CHECK(nuwa_blocks_in_rust_thread(4, 1, &out) == NUWA_ERR_PANIC);
    CHECK(nuwa_probe_release() == 0);
    CHECK(nuwa_probe_release_after(0) == 0);
    CHECK(nuwa_probe_release_in_rust_thread() == 0);
    CHECK(nuwa_probe_nested() == 0);
    CHECK(nuwa_wait_for_flag(&flag, 1) == 0);
    CHECK(nuwa_wait_for_flag_holding(&flag, 1) == 0);
    CHECK(nuwa_set_flag(&flag) == NUWA_OK && flag == 1);
    CHECK(nuwa_wait_for_flag(&flag, 1000) == 1);
    CHECK(nuwa_wait_for_flag_holding(&flag, 1000) == 1);
    CHECK(nuwa_waiters() == 0);
    CHECK(nuwa_counters(&releases, &reacquires) == NUWA_OK);
    CHECK(releases == 0 && reacquires == 0);

    if (failures) {
        fprintf(stderr, "%d checks failed\n", failures);
        return 1;
    }
    printf("c_smoke: all checks passed\n");
    return 0;
}
