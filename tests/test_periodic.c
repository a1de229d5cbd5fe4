/* PeriodicCallback: Tornado 5.1's schedule math (ported from
 * tornado/test/ioloop_test.py, TestPeriodicCallbackMath), the same
 * sequences driven through a real loop on a fake clock, and the object's
 * life cycle (stop/restart inside its own callback, free, bad arguments). */
#include <errno.h>
#include <pthread.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "ioloop.h"
#include "testutil.h"

/* ------------------------------------------------------------ the math */

/* As Tornado's simulate_calls: the clock starts at 1000 with the deadline
 * there; each call happens at its deadline and lasts durations[i] (negative:
 * the clock went backwards). Returns the deadlines in calls[]. */
static void simulate_calls(double period_s, double jitter, const double *random01, const double *durations, int n,
                           double *calls)
{
    double now = 1000, deadline = 1000;
    for (int i = 0; i < n; i++) {
        deadline = iol_periodic_next_deadline(deadline, now, period_s, jitter, random01 ? random01[i] : 0.5);
        calls[i] = deadline;
        now = deadline + durations[i];
    }
}

static void check_calls(const double *got, const double *expected, int n)
{
    for (int i = 0; i < n; i++)
        ck_assert_msg(fabs(got[i] - expected[i]) < 1e-9, "call %d: got %.6f, expected %.6f", i, got[i],
                      expected[i]);
}

START_TEST(test_math_basic)
{
    const double durations[] = {0, 0, 0, 0, 0};
    const double expected[] = {1010, 1020, 1030, 1040, 1050};
    double got[5];
    simulate_calls(10, 0, NULL, durations, 5, got);
    check_calls(got, expected, 5);
}
END_TEST

START_TEST(test_math_overrun)
{
    /* A call that runs too long skips whole cycles to get back on the
     * schedule; a call that lasts exactly one period skips the deadline it
     * lands on (deadline <= now). */
    const double durations[] = {9, 9, 10, 11, 20, 20, 35, 35, 0, 0, 0};
    const double expected[] = {1010, 1020, 1030, 1050, 1070, 1100, 1130, 1170, 1210, 1220, 1230};
    double got[11];
    simulate_calls(10, 0, NULL, durations, 11, got);
    check_calls(got, expected, 11);
}
END_TEST

START_TEST(test_math_clock_backwards)
{
    const double small[] = {-2, -1, -3, -2, 0};
    const double expected_small[] = {1010, 1020, 1030, 1040, 1050};
    double got[5];
    simulate_calls(10, 0, NULL, small, 5, got);
    check_calls(got, expected_small, 5);

    /* A large jump back only delays: the deadline still advances by one
     * period, never runs twice for the same deadline. */
    const double big[] = {-100, 0, 0};
    const double expected_big[] = {1010, 1020, 1030};
    simulate_calls(10, 0, NULL, big, 3, got);
    check_calls(got, expected_big, 3);
}
END_TEST

START_TEST(test_math_jitter)
{
    const double random01[] = {0.5, 1, 0, 0.75};
    const double durations[] = {0, 0, 0, 0};
    const double expected[] = {1010, 1022.5, 1030, 1041.25};
    double got[4];
    simulate_calls(10, 0.5, random01, durations, 4, got);
    check_calls(got, expected, 4);
}
END_TEST

START_TEST(test_math_direct)
{
    /* Start: deadline == now gives one period later. */
    ck_assert_double_eq_tol(iol_periodic_next_deadline(5, 5, 0.25, 0, 0.5), 5.25, 1e-12);
    /* Landing exactly on a multiple skips it. */
    ck_assert_double_eq_tol(iol_periodic_next_deadline(1000, 1030, 10, 0, 0.5), 1040, 1e-9);
    ck_assert_double_eq_tol(iol_periodic_next_deadline(1000, 1029.999, 10, 0, 0.5), 1030, 1e-9);
    /* Backwards by any amount: deadline + p. */
    ck_assert_double_eq_tol(iol_periodic_next_deadline(1000, 1, 10, 0, 0.5), 1010, 1e-9);
    /* Jitter bounds: p in [period * (1 - j/2), period * (1 + j/2)]. */
    ck_assert_double_eq_tol(iol_periodic_next_deadline(0, 0, 10, 1, 0), 5, 1e-12);
    ck_assert_double_eq_tol(iol_periodic_next_deadline(0, 0, 10, 1, 1), 15, 1e-12);
    /* random01 is ignored without jitter. */
    ck_assert_double_eq_tol(iol_periodic_next_deadline(0, 0, 10, 0, 0.9), 10, 1e-12);
}
END_TEST

/* ------------------------------------------------- fake-clock loop runs */

/* Drives a real loop on a fake clock. A "warp" callback re-queues itself
 * every iteration (so the loop never sleeps) and moves the clock forward
 * one second per iteration, never past the next expected call: if the
 * object schedules the call where Tornado would, it runs with the clock
 * exactly there; too early and it runs before; too late and the warp
 * stalls until the spin limit ends the run. */
typedef struct sim {
    double now;
    const double *durations;
    const double *expected;
    int n;
    double got[32];
    int ncalls;
    long spins;
    iol_loop *loop;
    iol_periodic *pc;
    int restart_at;        /* call index that stops and restarts; -1: none */
    double restart_after;  /* clock advance inside that call before restarting */
    int restart_rc;
} sim;

static double sim_time(void *ud)
{
    return ((sim *)ud)->now;
}

static void sim_warp(void *arg)
{
    sim *s = arg;
    if (s->ncalls >= s->n || ++s->spins > 20000) {
        iol_loop_stop(s->loop);
        return;
    }
    double cap = s->expected[s->ncalls];
    if (s->now + 1 <= cap)
        s->now += 1;
    else if (s->now < cap)
        s->now = cap;
    ck_assert_int_eq(iol_loop_add_callback(s->loop, sim_warp, s), 0);
}

static void sim_tick(void *arg)
{
    sim *s = arg;
    ck_assert_int_lt(s->ncalls, 32);
    int i = s->ncalls++;
    s->got[i] = s->now;
    if (i == s->restart_at) {
        s->now += s->restart_after;
        ck_assert_int_eq(iol_periodic_stop(s->pc), 0);
        ck_assert(!iol_periodic_is_running(s->pc));
        s->restart_rc = iol_periodic_start(s->pc);
        return;
    }
    if (s->durations)
        s->now += s->durations[i];
}

static void sim_run(sim *s, double jitter)
{
    iol_loop_config cfg = {.time_func = sim_time, .time_ud = s};
    ck_assert_int_eq(iol_loop_new(&s->loop, &cfg), 0);
    ck_assert_int_eq(iol_periodic_new(&s->pc, s->loop, 10000, sim_tick, s), 0);
    ck_assert_int_eq(iol_periodic_set_jitter(s->pc, jitter), 0);
    s->now = 1000;
    ck_assert_int_eq(iol_periodic_start(s->pc), 0);
    ck_assert_int_eq(iol_loop_add_callback(s->loop, sim_warp, s), 0);
    ck_assert_int_eq(iol_loop_start(s->loop), 0);
    iol_periodic_free(s->pc);
    ck_assert_int_ge(iol_loop_close(s->loop, false), 0);
}

START_TEST(test_loop_overrun_fake_clock)
{
    const double durations[] = {9, 9, 10, 11, 20, 20, 35, 35, 0, 0, 0};
    const double expected[] = {1010, 1020, 1030, 1050, 1070, 1100, 1130, 1170, 1210, 1220, 1230};
    sim s = {.durations = durations, .expected = expected, .n = 11, .restart_at = -1};
    sim_run(&s, 0);
    ck_assert_int_eq(s.ncalls, 11);
    check_calls(s.got, expected, 11);
}
END_TEST

START_TEST(test_loop_clock_backwards_fake_clock)
{
    const double durations[] = {-2, -1, -3, -2, 0, -100, 0, 0};
    const double expected[] = {1010, 1020, 1030, 1040, 1050, 1060, 1070, 1080};
    sim s = {.durations = durations, .expected = expected, .n = 8, .restart_at = -1};
    sim_run(&s, 0);
    ck_assert_int_eq(s.ncalls, 8);
    check_calls(s.got, expected, 8);
}
END_TEST

START_TEST(test_restart_inside_callback)
{
    /* The second call (at 1020) lasts 5 s, then stops and restarts: the
     * schedule starts over from 1025. A restart must not leave a second
     * timeout behind (that would show as a repeated time). */
    const double durations[] = {0, 0, 0, 0, 0};
    const double expected[] = {1010, 1020, 1035, 1045, 1055};
    sim s = {.durations = durations, .expected = expected, .n = 5, .restart_at = 1, .restart_after = 5};
    sim_run(&s, 0);
    ck_assert_int_eq(s.restart_rc, 0);
    ck_assert_int_eq(s.ncalls, 5);
    check_calls(s.got, expected, 5);
}
END_TEST

/* Jitter through the object: on a fake clock that moves in small steps,
 * every gap stays within period * (1 +- jitter/2) (plus one step), and the
 * gaps are not all the same (the generator is used). */
typedef struct jitter_sim {
    double now;
    double got[64];
    int ncalls, n;
    long spins;
    iol_loop *loop;
} jitter_sim;

static double jitter_time(void *ud)
{
    return ((jitter_sim *)ud)->now;
}

static void jitter_warp(void *arg)
{
    jitter_sim *s = arg;
    if (s->ncalls >= s->n || ++s->spins > 100000) {
        iol_loop_stop(s->loop);
        return;
    }
    s->now += 0.125;
    iol_loop_add_callback(s->loop, jitter_warp, s);
}

static void jitter_tick(void *arg)
{
    jitter_sim *s = arg;
    if (s->ncalls < 64)
        s->got[s->ncalls++] = s->now;
}

START_TEST(test_jitter_through_loop)
{
    jitter_sim s = {.now = 0, .n = (int)iol_test_scaled(24, 8)};
    if (s.n > 64)
        s.n = 64;
    iol_loop_config cfg = {.time_func = jitter_time, .time_ud = &s};
    ck_assert_int_eq(iol_loop_new(&s.loop, &cfg), 0);
    iol_periodic *pc;
    ck_assert_int_eq(iol_periodic_new(&pc, s.loop, 10000, jitter_tick, &s), 0);
    ck_assert_int_eq(iol_periodic_set_jitter(pc, 0.5), 0);
    ck_assert_int_eq(iol_periodic_start(pc), 0);
    iol_loop_add_callback(s.loop, jitter_warp, &s);
    ck_assert_int_eq(iol_loop_start(s.loop), 0);
    ck_assert_int_eq(s.ncalls, s.n);
    double prev = 0, min_gap = 1e9, max_gap = 0;
    for (int i = 0; i < s.n; i++) {
        double gap = s.got[i] - prev;
        prev = s.got[i];
        min_gap = fmin(min_gap, gap);
        max_gap = fmax(max_gap, gap);
        ck_assert_msg(gap >= 7.5 - 0.125 - 1e-9 && gap <= 12.5 + 0.125 + 1e-9, "gap %d: %f", i, gap);
    }
    ck_assert_msg(max_gap - min_gap > 0.2, "jitter had no effect: gaps %f..%f", min_gap, max_gap);
    iol_periodic_free(pc);
    iol_loop_close(s.loop, false);
}
END_TEST

/* ------------------------------------------------------ real-time runs */

static void stop_loop(void *arg)
{
    iol_loop_stop(arg);
}

static int count;
static void count_tick(void *arg)
{
    (void)arg;
    count++;
}

START_TEST(test_real_time_rate)
{
    iol_loop *loop;
    ck_assert_int_eq(iol_loop_new(&loop, NULL), 0);
    iol_periodic *pc;
    ck_assert_int_eq(iol_periodic_new(&pc, loop, 10, count_tick, NULL), 0);
    count = 0;
    ck_assert_int_eq(iol_periodic_start(pc), 0);
    ck_assert(iol_periodic_is_running(pc));
    ck_assert_int_eq(iol_loop_call_later(loop, 0.2, stop_loop, loop, NULL), 0);
    ck_assert_int_eq(iol_loop_start(loop), 0);
    /* ~20 expected; bounds only catch "never" and "spinning". */
    ck_assert_int_ge(count, iol_test_under_valgrind() ? 1 : 5);
    ck_assert_int_le(count, 40);
    iol_periodic_free(pc);
    ck_assert_int_ge(iol_loop_close(loop, false), 0);
}
END_TEST

START_TEST(test_real_time_jitter)
{
    iol_loop *loop;
    ck_assert_int_eq(iol_loop_new(&loop, NULL), 0);
    iol_periodic *pc;
    ck_assert_int_eq(iol_periodic_new(&pc, loop, 10, count_tick, NULL), 0);
    ck_assert_int_eq(iol_periodic_set_jitter(pc, 1.0), 0);
    count = 0;
    ck_assert_int_eq(iol_periodic_start(pc), 0);
    iol_loop_call_later(loop, 0.2, stop_loop, loop, NULL);
    iol_loop_start(loop);
    ck_assert_int_ge(count, iol_test_under_valgrind() ? 1 : 5);
    ck_assert_int_le(count, 60); /* shortest period is 5 ms */
    iol_periodic_free(pc);
    iol_loop_close(loop, false);
}
END_TEST

static iol_periodic *self_pc;
static void stop_self_at_3(void *arg)
{
    (void)arg;
    if (++count == 3) {
        ck_assert_int_eq(iol_periodic_stop(self_pc), 0);
        ck_assert(!iol_periodic_is_running(self_pc));
    }
}

START_TEST(test_stop_inside_callback)
{
    iol_loop *loop;
    ck_assert_int_eq(iol_loop_new(&loop, NULL), 0);
    ck_assert_int_eq(iol_periodic_new(&self_pc, loop, 2, stop_self_at_3, NULL), 0);
    count = 0;
    ck_assert_int_eq(iol_periodic_start(self_pc), 0);
    /* Long enough for many more periods after the stop. */
    iol_loop_call_later(loop, 0.1, stop_loop, loop, NULL);
    iol_loop_start(loop);
    ck_assert_int_eq(count, 3);
    ck_assert(!iol_periodic_is_running(self_pc));
    /* It can be started again afterwards. */
    ck_assert_int_eq(iol_periodic_start(self_pc), 0);
    ck_assert(iol_periodic_is_running(self_pc));
    iol_periodic_free(self_pc);
    ck_assert_int_ge(iol_loop_close(loop, false), 0);
}
END_TEST

static void free_self(void *arg)
{
    (void)arg;
    count++;
    iol_periodic_free(self_pc); /* not supported by the contract; must not crash */
}

START_TEST(test_free_inside_callback_defers)
{
    iol_loop *loop;
    ck_assert_int_eq(iol_loop_new(&loop, NULL), 0);
    ck_assert_int_eq(iol_periodic_new(&self_pc, loop, 2, free_self, NULL), 0);
    count = 0;
    ck_assert_int_eq(iol_periodic_start(self_pc), 0);
    iol_loop_call_later(loop, 0.05, stop_loop, loop, NULL);
    iol_loop_start(loop);
    ck_assert_int_eq(count, 1);
    ck_assert_int_ge(iol_loop_close(loop, false), 0);
}
END_TEST

START_TEST(test_start_stop_free)
{
    iol_loop *loop;
    ck_assert_int_eq(iol_loop_new(&loop, NULL), 0);
    iol_periodic *pc;
    ck_assert_int_eq(iol_periodic_new(&pc, loop, 5, count_tick, NULL), 0);
    ck_assert(!iol_periodic_is_running(pc));
    ck_assert_int_eq(iol_periodic_stop(pc), 0); /* stopping a stopped one is fine */
    ck_assert_int_eq(iol_periodic_start(pc), 0);
    ck_assert(iol_periodic_is_running(pc));
    ck_assert_int_eq(iol_periodic_start(pc), -EALREADY);
    ck_assert_int_eq(iol_periodic_stop(pc), 0);
    ck_assert(!iol_periodic_is_running(pc));
    ck_assert_int_eq(iol_periodic_stop(pc), 0);

    /* free while running cancels the pending call. */
    count = 0;
    ck_assert_int_eq(iol_periodic_start(pc), 0);
    iol_periodic_free(pc);
    iol_loop_call_later(loop, 0.03, stop_loop, loop, NULL);
    iol_loop_start(loop);
    ck_assert_int_eq(count, 0);
    /* Nothing of the periodic is left on the loop. */
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
}
END_TEST

START_TEST(test_closed_loop)
{
    iol_loop *loop;
    ck_assert_int_eq(iol_loop_new(&loop, NULL), 0);
    iol_periodic *pc, *pc2;
    ck_assert_int_eq(iol_periodic_new(&pc, loop, 5, count_tick, NULL), 0);
    ck_assert_int_eq(iol_periodic_new(&pc2, loop, 5, count_tick, NULL), 0);
    ck_assert_int_eq(iol_periodic_start(pc2), 0);
    /* close drops pc2's pending call (the count says 1); the periodics keep
     * the loop's memory until they are freed. */
    ck_assert_int_eq(iol_loop_close(loop, false), 1);
    ck_assert_int_eq(iol_periodic_start(pc), -ESHUTDOWN);
    ck_assert(!iol_periodic_is_running(pc));
    ck_assert_int_eq(iol_periodic_stop(pc2), 0);
    iol_periodic_free(pc);
    iol_periodic_free(pc2);
}
END_TEST

/* stop from a thread that does not run the loop: -EPERM, and the periodic
 * keeps running (its timeout is untouched). */
static void nop_cb(void *arg) { (void)arg; }
static int foreign_stop_rc;
static bool foreign_still_running;
static bool foreign_saw_running;
static void *stop_from_foreign(void *arg)
{
    foreign_stop_rc = iol_periodic_stop(arg);
    /* is_running is loop-thread state: false from here, whatever it is. */
    foreign_saw_running = iol_periodic_is_running(arg);
    return NULL;
}
static void run_foreign(void *arg)
{
    iol_periodic *pc = arg;
    pthread_t t;
    pthread_create(&t, NULL, stop_from_foreign, pc);
    pthread_join(t, NULL);
    foreign_still_running = iol_periodic_is_running(pc);
    iol_loop_stop(iol_loop_current());
}

START_TEST(test_stop_from_other_thread)
{
    iol_loop *loop;
    ck_assert_int_eq(iol_loop_new(&loop, NULL), 0);
    iol_periodic *pc;
    ck_assert_int_eq(iol_periodic_new(&pc, loop, 1000, nop_cb, NULL), 0);
    ck_assert_int_eq(iol_periodic_start(pc), 0);
    iol_loop_add_callback(loop, run_foreign, pc);
    iol_loop_start(loop);
    ck_assert_int_eq(foreign_stop_rc, -EPERM);
    ck_assert(foreign_still_running);
    ck_assert(!foreign_saw_running);
    ck_assert_int_eq(iol_periodic_stop(pc), 0);
    ck_assert(!iol_periodic_is_running(pc));
    iol_periodic_free(pc);
    iol_loop_close(loop, false);
}
END_TEST

START_TEST(test_bad_args)
{
    iol_loop *loop;
    ck_assert_int_eq(iol_loop_new(&loop, NULL), 0);
    iol_periodic *pc = (iol_periodic *)(uintptr_t)1;
    ck_assert_int_eq(iol_periodic_new(NULL, loop, 10, count_tick, NULL), -EINVAL);
    ck_assert_int_eq(iol_periodic_new(&pc, NULL, 10, count_tick, NULL), -EINVAL);
    ck_assert_int_eq(iol_periodic_new(&pc, loop, 10, NULL, NULL), -EINVAL);
    ck_assert_int_eq(iol_periodic_new(&pc, loop, 0, count_tick, NULL), -EINVAL);
    ck_assert_int_eq(iol_periodic_new(&pc, loop, -1, count_tick, NULL), -EINVAL);
    ck_assert_int_eq(iol_periodic_new(&pc, loop, NAN, count_tick, NULL), -EINVAL);
    ck_assert_int_eq(iol_periodic_new(&pc, loop, INFINITY, count_tick, NULL), -EINVAL);
    ck_assert_ptr_eq(pc, (iol_periodic *)(uintptr_t)1); /* untouched on failure */

    ck_assert_int_eq(iol_periodic_new(&pc, loop, 10, count_tick, NULL), 0);
    ck_assert_int_eq(iol_periodic_set_jitter(pc, -0.01), -EINVAL);
    ck_assert_int_eq(iol_periodic_set_jitter(pc, 1.01), -EINVAL);
    ck_assert_int_eq(iol_periodic_set_jitter(pc, NAN), -EINVAL);
    ck_assert_int_eq(iol_periodic_set_jitter(pc, 0), 0);
    ck_assert_int_eq(iol_periodic_set_jitter(pc, 1), 0);
    ck_assert_int_eq(iol_periodic_set_jitter(NULL, 0.5), -EINVAL);
    ck_assert_int_eq(iol_periodic_start(NULL), -EINVAL);
    ck_assert_int_eq(iol_periodic_stop(NULL), -EINVAL);
    ck_assert(!iol_periodic_is_running(NULL));
    iol_periodic_free(NULL);
    iol_periodic_free(pc);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("periodic");
    TCase *tc = iol_test_tcase("math", 10);
    tcase_add_test(tc, test_math_basic);
    tcase_add_test(tc, test_math_overrun);
    tcase_add_test(tc, test_math_clock_backwards);
    tcase_add_test(tc, test_math_jitter);
    tcase_add_test(tc, test_math_direct);
    suite_add_tcase(s, tc);

    tc = iol_test_tcase("fake_clock", 30);
    tcase_add_test(tc, test_loop_overrun_fake_clock);
    tcase_add_test(tc, test_loop_clock_backwards_fake_clock);
    tcase_add_test(tc, test_restart_inside_callback);
    tcase_add_test(tc, test_jitter_through_loop);
    suite_add_tcase(s, tc);

    tc = iol_test_tcase("object", 30);
    tcase_add_test(tc, test_real_time_rate);
    tcase_add_test(tc, test_real_time_jitter);
    tcase_add_test(tc, test_stop_inside_callback);
    tcase_add_test(tc, test_free_inside_callback_defers);
    tcase_add_test(tc, test_start_stop_free);
    tcase_add_test(tc, test_closed_loop);
    tcase_add_test(tc, test_stop_from_other_thread);
    tcase_add_test(tc, test_bad_args);
    suite_add_tcase(s, tc);
    return iol_test_run(s);
}
