/* test_error.c: the error channel keeps messages, adds context and maps exit codes. */
#include "testlib.h"
#include <string.h>

static void test_fail_and_context(void) {
    drdc_status st = drdc_fail(DRDC_ERR_IO, "%s: cannot open", "a.png");
    CHECK(st == DRDC_ERR_IO);
    CHECK(strcmp(drdc_last_error(), "a.png: cannot open") == 0);
    st = drdc_error_context(st, "loading dataset %s", "demo");
    CHECK(strcmp(drdc_last_error(), "loading dataset demo: a.png: cannot open") == 0);
}

static void test_hint(void) {
    drdc_fail(DRDC_ERR_NOMEM, "dt_conv2d: out of memory");
    CHECK(drdc_error_hint(DRDC_ERR_NOMEM, "lower %s", "base.batch") == DRDC_ERR_NOMEM);
    CHECK(strcmp(drdc_last_error(), "dt_conv2d: out of memory (lower base.batch)") == 0);
}

static void test_exit_codes(void) {
    CHECK(drdc_exit_code(DRDC_OK) == 0);
    CHECK(drdc_exit_code(DRDC_ERR_USAGE) == 2);
    CHECK(drdc_exit_code(DRDC_ERR_CONFIG) == 2);
    CHECK(drdc_exit_code(DRDC_ERR_INPUT) == 2);
    CHECK(drdc_exit_code(DRDC_ERR_IO) == 1);
    CHECK(drdc_exit_code(DRDC_ERR_TORCH) == 1);
}

int main(void) {
    RUN(test_fail_and_context);
    RUN(test_hint);
    RUN(test_exit_codes);
    return test_summary();
}
