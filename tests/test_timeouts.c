/* Timeouts: ordering, removal, churn, the loop's clock. */
#include <errno.h>
#include <malloc.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "ioloop.h"
#include "testutil.h"

static iol_loop *new_loop(void)
{
    iol_loop *loop = NULL;
    ck_assert_int_eq(iol_loop_new(&loop, NULL), 0);
    return loop;
}

static void stop_cb(void *arg) { iol_loop_stop(arg); }

static int fired[64];
static int nfired;
static void record(void *arg) { fired[nfired++] = (int)(intptr_t)arg; }

START_TEST(test_deadline_order_and_ties)
{
    iol_loop *loop = new_loop();
    double now = iol_loop_time(loop);
    nfired = 0;
    /* Equal deadlines fire in insertion order; earlier deadlines first. */
    iol_loop_call_at(loop, now + 0.02, record, (void *)3, NULL);
    iol_loop_call_at(loop, now + 0.01, record, (void *)1, NULL);
    iol_loop_call_at(loop, now + 0.01, record, (void *)2, NULL);
    iol_loop_add_timeout(loop, now + 0.02, record, (void *)4, NULL);
    iol_loop_call_at(loop, now, record, (void *)0, NULL); /* absolute: slow runs keep the order */
    iol_loop_call_at(loop, now + 0.03, stop_cb, loop, NULL);
    ck_assert_int_eq(iol_loop_start(loop), 0);
    ck_assert_int_eq(nfired, 5);
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(fired[i], i);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
}
END_TEST

START_TEST(test_many_equal_deadlines_fifo)
{
    iol_loop *loop = new_loop();
    double when = iol_loop_time(loop) + 0.005;
    nfired = 0;
    for (int i = 0; i < 64; i++)
        iol_loop_call_at(loop, when, record, (void *)(intptr_t)i, NULL);
    iol_loop_call_at(loop, when, stop_cb, loop, NULL);
    iol_loop_start(loop);
    ck_assert_int_eq(nfired, 64);
    for (int i = 0; i < 64; i++)
        ck_assert_int_eq(fired[i], i);
    iol_loop_close(loop, false);
}
END_TEST

START_TEST(test_sleeps_until_deadline)
{
    iol_loop *loop = new_loop();
    double t0 = iol_test_now();
    iol_loop_call_later(loop, 0.05, stop_cb, loop, NULL);
    iol_loop_start(loop);
    double elapsed = iol_test_now() - t0;
    /* Never early; the upper bound is only a sanity bound. */
    ck_assert(elapsed >= 0.049);
    ck_assert(elapsed < 5.0);
    iol_loop_close(loop, false);
}
END_TEST

static iol_timeout victim;
static int victim_rc, self_rc;
static iol_timeout self_handle;
static iol_loop *cur;
static void remover(void *arg)
{
    (void)arg;
    victim_rc = iol_loop_remove_timeout(cur, victim);
    self_rc = iol_loop_remove_timeout(cur, self_handle);
}

START_TEST(test_remove_inside_callback)
{
    iol_loop *loop = cur = new_loop();
    double now = iol_loop_time(loop);
    nfired = 0;
    ck_assert_int_eq(iol_loop_call_at(loop, now + 0.01, remover, NULL, &self_handle), 0);
    ck_assert_int_eq(iol_loop_call_at(loop, now + 0.01, record, (void *)7, &victim), 0);
    iol_loop_call_at(loop, now + 0.02, stop_cb, loop, NULL);
    iol_loop_start(loop);
    ck_assert_int_eq(victim_rc, 0);
    ck_assert_int_eq(self_rc, -ENOENT); /* already fired */
    ck_assert_int_eq(nfired, 0);
    iol_loop_close(loop, false);
}
END_TEST

START_TEST(test_remove_errors)
{
    iol_loop *loop = new_loop();
    iol_timeout t = 0;
    ck_assert_int_eq(iol_loop_remove_timeout(loop, 0), -ENOENT);
    ck_assert_int_eq(iol_loop_remove_timeout(loop, 12345), -ENOENT);
    ck_assert_int_eq(iol_loop_remove_timeout(loop, UINT64_MAX), -ENOENT);
    ck_assert_int_eq(iol_loop_call_later(loop, 10, record, NULL, &t), 0);
    ck_assert_uint_ne(t, 0);
    ck_assert_int_eq(iol_loop_remove_timeout(loop, t), 0);
    ck_assert_int_eq(iol_loop_remove_timeout(loop, t), -ENOENT);
    /* The slot is reused; the old handle still means nothing. */
    iol_timeout t2 = 0;
    ck_assert_int_eq(iol_loop_call_later(loop, 10, record, NULL, &t2), 0);
    ck_assert_uint_ne(t2, t);
    ck_assert_int_eq(iol_loop_remove_timeout(loop, t), -ENOENT);
    ck_assert_int_eq(iol_loop_remove_timeout(loop, t2), 0);
    ck_assert_int_eq(iol_loop_call_later(loop, -1, record, NULL, NULL), -EINVAL);
    ck_assert_int_eq(iol_loop_call_later(loop, NAN, record, NULL, NULL), -EINVAL);
    ck_assert_int_eq(iol_loop_call_at(loop, NAN, record, NULL, NULL), -EINVAL);
    ck_assert_int_eq(iol_loop_call_at(loop, 1, NULL, NULL, NULL), -EINVAL);
    ck_assert_int_eq(iol_loop_call_later(NULL, 1, record, NULL, NULL), -EINVAL);
    ck_assert_int_eq(iol_loop_remove_timeout(NULL, 1), -EINVAL);
    iol_loop_close(loop, false);
}
END_TEST

static void nop(void *arg) { (void)arg; }

/* Add/remove churn keeps memory bounded: cancelled timeouts leave at once. */
START_TEST(test_churn_bounded_memory)
{
    iol_loop *loop = new_loop();
    size_t n = iol_test_scaled(100000, 2000);
    iol_timeout keep[16];
    for (int i = 0; i < 16; i++)
        iol_loop_call_later(loop, 100 + i, nop, NULL, &keep[i]);
    /* Warm up, then measure. */
    for (size_t i = 0; i < 1000; i++) {
        iol_timeout t;
        iol_loop_call_later(loop, 50, nop, NULL, &t);
        iol_loop_remove_timeout(loop, t);
    }
    size_t before = mallinfo2().uordblks;
    for (size_t i = 0; i < n; i++) {
        iol_timeout t;
        ck_assert_int_eq(iol_loop_call_later(loop, 50 + (double)(i % 100), nop, NULL, &t), 0);
        ck_assert_int_eq(iol_loop_remove_timeout(loop, t), 0);
    }
    size_t after = mallinfo2().uordblks;
    ck_assert_uint_le(after, before + 4096);
    /* 16 still pending: close reports them as dropped. */
    ck_assert_int_eq(iol_loop_close(loop, false), 16);
}
END_TEST

/* A timeout scheduled in the past from a timeout callback runs in the next
 * iteration, so I/O and callbacks get their turn in between. */
static int chain;
static iol_loop *chain_loop;
static void chained(void *arg)
{
    (void)arg;
    if (++chain == 5) {
        iol_loop_stop(chain_loop);
        return;
    }
    iol_loop_call_at(chain_loop, 0, chained, NULL, NULL);
}
/* Re-adds itself: counts iterations. */
static int cb_between;
static void between(void *arg)
{
    (void)arg;
    cb_between++;
    if (chain < 5)
        iol_loop_add_callback(chain_loop, between, NULL);
}

START_TEST(test_timeout_added_in_timeout_waits)
{
    iol_loop *loop = chain_loop = new_loop();
    chain = 0;
    cb_between = 0;
    iol_loop_call_at(loop, 0, chained, NULL, NULL);
    iol_loop_add_callback(loop, between, NULL);
    iol_loop_start(loop);
    ck_assert_int_eq(chain, 5);
    /* One chained timeout per iteration: 5 iterations ran callbacks. */
    ck_assert_int_ge(cb_between, 5);
    iol_loop_close(loop, false);
}
END_TEST

/* The loop's clock comes from time_func when given. */
static double fake_now;
static double fake_clock(void *ud)
{
    (void)ud;
    return fake_now;
}

START_TEST(test_time_func)
{
    iol_loop *loop;
    fake_now = 1000.0;
    iol_loop_config cfg = { .time_func = fake_clock };
    ck_assert_int_eq(iol_loop_new(&loop, &cfg), 0);
    ck_assert(iol_loop_time(loop) == 1000.0);
    nfired = 0;
    iol_loop_call_later(loop, 5, record, (void *)1, NULL); /* at 1005 */
    iol_loop_call_at(loop, 1000, record, (void *)0, NULL);
    iol_loop_call_at(loop, 999, stop_cb, loop, NULL);
    iol_loop_start(loop);
    ck_assert_int_eq(nfired, 1); /* 1005 not due on the fake clock */
    fake_now = 1005.0;
    iol_loop_call_at(loop, 1005, stop_cb, loop, NULL);
    iol_loop_start(loop);
    ck_assert_int_eq(nfired, 2);
    ck_assert(isnan(iol_loop_time(NULL)));
    iol_loop_close(loop, false);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("timeouts");
    TCase *tc = iol_test_tcase("core", 30);
    tcase_add_test(tc, test_deadline_order_and_ties);
    tcase_add_test(tc, test_many_equal_deadlines_fifo);
    tcase_add_test(tc, test_sleeps_until_deadline);
    tcase_add_test(tc, test_remove_inside_callback);
    tcase_add_test(tc, test_remove_errors);
    tcase_add_test(tc, test_timeout_added_in_timeout_waits);
    tcase_add_test(tc, test_time_func);
    suite_add_tcase(s, tc);
    TCase *churn = iol_test_tcase("churn", 60);
    tcase_add_test(churn, test_churn_bounded_memory);
    suite_add_tcase(s, churn);
    return iol_test_run(s);
}
