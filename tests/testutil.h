/* Shared helpers for the Check suites. */
#ifndef IOL_TESTUTIL_H
#define IOL_TESTUTIL_H

#include <check.h>
#include <stddef.h>

/* $IOL_TEST_SCALE (default 1.0) times n, at least min: stress sizes shrink
 * under sanitizers and valgrind. */
size_t iol_test_scaled(size_t n, size_t min);
/* True when running under valgrind (timing-heavy checks relax). */
int iol_test_under_valgrind(void);
/* Monotonic seconds. */
double iol_test_now(void);
/* Runs the suite with CK_FORK and returns the process exit status. */
int iol_test_run(Suite *s);
/* A TCase with a timeout scaled for slow runs (valgrind: x10). */
TCase *iol_test_tcase(const char *name, double timeout_s);

#endif
