/* Shared helpers for the Check suites. */
#ifndef IOL_TESTUTIL_H
#define IOL_TESTUTIL_H

#include <check.h>
#include <stddef.h>
#include <stdint.h>

#include "ioloop.h"

/* $IOL_TEST_SCALE (default 1.0) times n, at least min: stress sizes shrink
 * under sanitizers and valgrind. */
size_t iol_test_scaled(size_t n, size_t min);
/* True when running under valgrind (timing-heavy checks relax). */
int iol_test_under_valgrind(void);
/* Monotonic seconds. */
double iol_test_now(void);
/* Entries of a directory, "." and ".." left out (/proc/self/fd,
 * /proc/self/task); -1 if it cannot be opened. */
int iol_test_dir_entries(const char *path);
/* Runs the suite with CK_FORK and returns the process exit status. */
int iol_test_run(Suite *s);
/* A TCase with a timeout scaled for slow runs (valgrind: x10). */
TCase *iol_test_tcase(const char *name, double timeout_s);

/* For hot loops: Check's ck_assert writes a mark point to a pipe on every
 * pass in fork mode, which would dominate the run time. */
#define HOT_ASSERT(e)                                                 \
    do {                                                              \
        if (__builtin_expect(!(e), 0))                                \
            ck_abort_msg("%s:%d: %s", __FILE__, __LINE__, #e);        \
    } while (0)

/* A self-signed server certificate for 127.0.0.1 / localhost, made with
 * the openssl CLI into a new temporary directory: dir (size >= 64) gets
 * its path, holding cert.pem and key.pem. 0, or -1 when the CLI is
 * missing or fails. */
int iol_test_make_cert(char *dir, size_t size);

/* eventfd writes made to wake loop (iol_loop_get_stats). */
uint64_t iol_test_wakeups(const iol_loop *loop);

/* A random pause of 0..63 compiler-barrier spins, or a sched_yield one
 * time in 16: shakes up interleavings in lost-wakeup hunters. *rng is a
 * nonzero xorshift32 state. */
void iol_test_tiny_delay(uint32_t *rng);

#endif
