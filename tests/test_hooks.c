/* Prepare and check hooks: where they run in an iteration, adding and
 * removing while they run, a prepare hook that posts keeps the poll from
 * sleeping, and the thread rule. */
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "ioloop.h"
#include "testutil.h"

static char trace[256];
static size_t trace_len;
static void mark(char c)
{
    if (trace_len < sizeof trace - 1)
        trace[trace_len++] = c;
    trace[trace_len] = '\0';
}

static iol_loop *L;
static void stop_cb(void *arg) { iol_loop_stop(arg); }
static void cb_mark(void *arg) { mark(*(const char *)arg); }
static void on_read(int fd, unsigned events, void *arg)
{
    (void)events, (void)arg;
    char c;
    ck_assert_int_eq(read(fd, &c, 1), 1);
    mark('H');
    iol_loop_add_callback(L, stop_cb, L);
}

static void setup(void)
{
    ck_assert_int_eq(iol_loop_new(&L, NULL), 0);
    trace_len = 0;
    trace[0] = '\0';
}
static void teardown(void) { iol_loop_close(L, false); }

/* callback, prepare, poll, handler, check; then the next iteration. */
START_TEST(test_order)
{
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    ck_assert_int_eq(write(p[1], "x", 1), 1);
    ck_assert_int_eq(iol_loop_add_handler(L, p[0], IOL_READ, on_read, NULL), 0);
    ck_assert_int_eq(iol_loop_add_prepare(L, cb_mark, "P"), 0);
    ck_assert_int_eq(iol_loop_add_check(L, cb_mark, "C"), 0);
    ck_assert_int_eq(iol_loop_add_callback(L, cb_mark, "c"), 0);
    ck_assert_int_eq(iol_loop_start(L), 0);
    /* The stop callback runs at the top of the second iteration. */
    ck_assert_str_eq(trace, "cPHC");
    ck_assert_int_eq(iol_loop_remove_handler(L, p[0]), 0);
    close(p[0]);
    close(p[1]);
}
END_TEST

static void nop(void *arg) { (void)arg; }
/* A prepare hook that keeps the loop from sleeping: a posted callback
 * makes the poll return at once. */
static void keep_awake(void *arg)
{
    (void)arg;
    ck_assert_int_eq(iol_loop_add_callback(L, nop, NULL), 0);
}

static int prepares;
static void counting_prepare(void *arg)
{
    (void)arg;
    keep_awake(NULL);
    if (++prepares == 5)
        iol_loop_stop(L); /* the poll after it does not sleep */
}

/* A prepare hook runs once per iteration; stop from it ends the run
 * without a sleep (no timer, no fd: it would sleep for an hour). */
START_TEST(test_once_per_iteration)
{
    ck_assert_int_eq(iol_loop_add_prepare(L, counting_prepare, NULL), 0);
    ck_assert_int_eq(iol_loop_add_prepare(L, cb_mark, "p"), 0);
    prepares = 0;
    ck_assert_int_eq(iol_loop_start(L), 0);
    ck_assert_int_eq(prepares, 5);
    ck_assert_str_eq(trace, "ppppp");
    iol_loop_stats st;
    ck_assert_int_eq(iol_loop_get_stats(L, &st, sizeof st), 0);
    ck_assert_uint_eq(st.iterations, 5);
}
END_TEST

static void post_from_prepare(void *arg)
{
    (void)arg;
    mark('p');
    ck_assert_int_eq(iol_loop_remove_prepare(L, post_from_prepare, NULL), 0);
    ck_assert_int_eq(iol_loop_add_callback(L, stop_cb, L), 0);
}

/* A callback posted by a prepare hook makes the poll return at once. */
START_TEST(test_prepare_post_does_not_sleep)
{
    ck_assert_int_eq(iol_loop_add_prepare(L, post_from_prepare, NULL), 0);
    double t0 = iol_test_now();
    ck_assert_int_eq(iol_loop_start(L), 0);
    ck_assert_double_lt(iol_test_now() - t0, 5.0);
    ck_assert_str_eq(trace, "p");
}
END_TEST

static void remove_other(void *arg)
{
    (void)arg;
    mark('r');
    /* Removes "b" (after us in the list) and adds "n" (next iteration). */
    ck_assert_int_eq(iol_loop_remove_check(L, cb_mark, "b"), 0);
    ck_assert_int_eq(iol_loop_remove_check(L, remove_other, NULL), 0);
    for (int i = 0; i < 20; i++) /* grows the array under the running list */
        ck_assert_int_eq(iol_loop_add_check(L, cb_mark, "n"), 0);
}

static void stop_on_check(void *arg)
{
    (void)arg;
    mark('s');
    iol_loop_stop(L);
}

START_TEST(test_change_while_running)
{
    ck_assert_int_eq(iol_loop_add_check(L, cb_mark, "a"), 0);
    ck_assert_int_eq(iol_loop_add_check(L, remove_other, NULL), 0);
    ck_assert_int_eq(iol_loop_add_check(L, cb_mark, "b"), 0);
    ck_assert_int_eq(iol_loop_add_check(L, stop_on_check, NULL), 0);
    ck_assert_int_eq(iol_loop_add_prepare(L, keep_awake, NULL), 0);
    ck_assert_int_eq(iol_loop_add_callback(L, cb_mark, "c"), 0);
    ck_assert_int_eq(iol_loop_start(L), 0);
    ck_assert_str_eq(trace, "cars");
    /* Next run: a, s, then the twenty n. */
    ck_assert_int_eq(iol_loop_add_callback(L, cb_mark, "c"), 0);
    ck_assert_int_eq(iol_loop_start(L), 0);
    char want[64] = "carscas";
    memset(want + strlen(want), 'n', 20);
    ck_assert_str_eq(trace, want);
    ck_assert_int_eq(iol_loop_remove_check(L, remove_other, NULL), -ENOENT);
    ck_assert_int_eq(iol_loop_remove_check(L, cb_mark, "b"), -ENOENT);
    for (int i = 0; i < 20; i++)
        ck_assert_int_eq(iol_loop_remove_check(L, cb_mark, "n"), 0);
    ck_assert_int_eq(iol_loop_remove_check(L, cb_mark, "n"), -ENOENT);
    ck_assert_int_eq(iol_loop_remove_prepare(L, cb_mark, "a"), -ENOENT); /* lists are apart */
}
END_TEST

static void *add_from_other_thread(void *arg)
{
    (void)arg;
    intptr_t r = iol_loop_add_prepare(L, cb_mark, "x");
    return (void *)r;
}

static void try_other_thread(void *arg)
{
    (void)arg;
    pthread_t t;
    void *r;
    ck_assert_int_eq(pthread_create(&t, NULL, add_from_other_thread, NULL), 0);
    pthread_join(t, &r);
    ck_assert_int_eq((int)(intptr_t)r, -EPERM);
    iol_loop_stop(L);
}

START_TEST(test_thread_rule)
{
    ck_assert_int_eq(iol_loop_add_callback(L, try_other_thread, NULL), 0);
    ck_assert_int_eq(iol_loop_start(L), 0);
    ck_assert_str_eq(trace, "");
    /* Stopped: any one thread may set it up; a closed loop refuses. */
    iol_loop *l2;
    ck_assert_int_eq(iol_loop_new(&l2, &(iol_loop_config){ .make_current = IOL_CURRENT_NEVER }), 0);
    ck_assert_int_eq(iol_loop_add_check(l2, cb_mark, "x"), 0);
    ck_assert_int_eq(iol_loop_close(l2, false), 0);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("hooks");
    TCase *tc = iol_test_tcase("hooks", 30);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_order);
    tcase_add_test(tc, test_once_per_iteration);
    tcase_add_test(tc, test_prepare_post_does_not_sleep);
    tcase_add_test(tc, test_change_while_running);
    tcase_add_test(tc, test_thread_rule);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return iol_test_run(suite()); }
