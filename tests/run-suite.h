/* The end of every Check suite's main(): run it, free the runner, turn the failures into the
 * process's exit status. Header-only, shared by the suites under tests/. */
#ifndef SMK_TESTS_RUN_SUITE_H
#define SMK_TESTS_RUN_SUITE_H

#include <check.h>
#include <stdlib.h>

/* Runs every test of s, printing as mode says (CK_ENV: as CK_VERBOSITY says). Returns
 * EXIT_SUCCESS if all passed, else EXIT_FAILURE. */
static inline int run_suite(Suite *s, enum print_output mode)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, mode);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

#endif
