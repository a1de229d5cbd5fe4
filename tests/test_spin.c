/* The pre-sleep spin (loop/spin.c): the policy alone on a bare queue, then
 * on running loops: an idle loop never spins, a loop whose posts come
 * slowly stops spinning, spin_us < 0 never spins, and in every mode each
 * callback runs exactly once with at most one eventfd write per sleep. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ioloop.h"
#include "loop/loop_impl.h"
#include "loop/spin.h"
#include "sync/cbqueue.h"
#include "testutil.h"

static void nop(void *arg) { (void)arg; }

/* ------------------------------------------------------- the policy alone */

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

START_TEST(test_init_validates)
{
    iol__spin s;
    ck_assert_int_eq(iol__spin_init(&s, NAN), -EINVAL);
    ck_assert_int_eq(iol__spin_init(&s, INFINITY), -EINVAL);
    ck_assert_int_eq(iol__spin_init(&s, IOL__SPIN_MAX_US + 1), -EINVAL);
    ck_assert_int_eq(iol__spin_init(&s, IOL__SPIN_MAX_US), 0);
    ck_assert_int_eq(iol__spin_init(&s, -INFINITY), 0);
    ck_assert_int_eq(s.window_ns, 0); /* never */
    ck_assert_int_eq(iol__spin_init(&s, 1e-6), 0);
    ck_assert_int_gt(s.window_ns, 0); /* a tiny fixed spin is still a spin */
    ck_assert(!s.adaptive);
    ck_assert_int_eq(iol__spin_init(&s, 0), 0);
    ck_assert(s.adaptive);
}
END_TEST

START_TEST(test_never_spins)
{
    iol__cbqueue *q;
    ck_assert_int_eq(iol__cbqueue_new(&q, 0), 0);
    iol__spin s;
    ck_assert_int_eq(iol__spin_init(&s, -1), 0);
    ck_assert_int_eq(iol__cbqueue_push(q, nop, NULL), 0);
    /* Not even work already queued turns a disabled spin into a look. */
    for (int i = 0; i < 200; i++) {
        ck_assert(!iol__spin_before_sleep(&s, q, mono_ns(), true));
        iol__spin_after_sleep(&s, true, true, mono_ns());
    }
    ck_assert_uint_eq(s.spins, 0);
    iol__cbqueue_free(q);
}
END_TEST

START_TEST(test_fixed_always_spins)
{
    iol__cbqueue *q;
    ck_assert_int_eq(iol__cbqueue_new(&q, 0), 0);
    iol__spin s;
    ck_assert_int_eq(iol__spin_init(&s, 1), 0);
    for (int i = 0; i < 200; i++) {
        ck_assert(!iol__spin_before_sleep(&s, q, mono_ns(), true)); /* nothing arrives: a miss */
        iol__spin_after_sleep(&s, false, true, mono_ns());
    }
    ck_assert_uint_eq(s.spins, 200);
    ck_assert_int_eq(iol__cbqueue_push(q, nop, NULL), 0);
    ck_assert(iol__spin_before_sleep(&s, q, mono_ns(), true));
    ck_assert_uint_eq(s.spin_hits, 1);
    iol__cbqueue_free(q);
}
END_TEST

/* GATHERING (loop/spin.c): another thread's callback queued when the batch
 * ends is taken only IOL__SPIN_GATHER_NS after the batch ended; the loop's
 * own is taken at once. */
static void *push_from_thread(void *q)
{
    ck_assert_int_eq(iol__cbqueue_push(q, nop, NULL), 0);
    return NULL;
}

/* One post from another thread, queued when this returns. */
static void push_from_other_thread(iol__cbqueue *q)
{
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, push_from_thread, q), 0);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
}

static void drain(iol__cbqueue *q)
{
    iol__cbbatch b;
    iol_callback_fn fn;
    void *arg;
    ck_assert(iol__cbqueue_take(q, &b));
    while (iol__cbbatch_next(&b, &fn, &arg))
        ;
}

START_TEST(test_gathers_only_behind_other_threads)
{
    iol__cbqueue *q;
    ck_assert_int_eq(iol__cbqueue_new(&q, 0), 0);
    iol__spin s;
    ck_assert_int_eq(iol__spin_init(&s, 0), 0);

    ck_assert_int_eq(iol__cbqueue_push(q, nop, NULL), 0);
    ck_assert(iol__spin_before_sleep(&s, q, mono_ns(), true));
    ck_assert_uint_eq(s.gathers, 0);
    drain(q);

    push_from_other_thread(q);
    int64_t batch_end = mono_ns();
    ck_assert(iol__spin_before_sleep(&s, q, batch_end, true));
    ck_assert_uint_eq(s.gathers, 1);
    /* A lower bound only: the wait happened. */
    ck_assert_int_ge(mono_ns() - batch_end, IOL__SPIN_GATHER_NS);
    drain(q);

    /* Not in an iteration that dispatched I/O. */
    push_from_other_thread(q);
    ck_assert(iol__spin_before_sleep(&s, q, mono_ns(), false));
    ck_assert_uint_eq(s.gathers, 1);
    drain(q);

    /* Never without a spin: spin_us < 0 does not gather either. */
    ck_assert_int_eq(iol__spin_init(&s, -1), 0);
    push_from_other_thread(q);
    ck_assert(!iol__spin_before_sleep(&s, q, mono_ns(), true));
    ck_assert_uint_eq(s.gathers, 0);
    iol__cbqueue_free(q);
}
END_TEST

START_TEST(test_adaptive_stops_after_misses_and_probes)
{
    iol__cbqueue *q;
    ck_assert_int_eq(iol__cbqueue_new(&q, 0), 0);
    iol__spin s;
    ck_assert_int_eq(iol__spin_init(&s, 0), 0);
    /* A new loop spins (a flood or a ping-pong gets it from the start). */
    ck_assert_int_eq(iol__cbqueue_push(q, nop, NULL), 0);
    ck_assert(iol__spin_before_sleep(&s, q, mono_ns(), true));
    ck_assert_uint_eq(s.spins, 1);
    drain(q);

    /* Posts that never come within the window: spinning stops... */
    for (int i = 0; i < 100; i++) {
        ck_assert(!iol__spin_before_sleep(&s, q, mono_ns(), true));
        iol__spin_after_sleep(&s, false, true, mono_ns());
    }
    uint64_t spun = s.spins;
    ck_assert_uint_lt(spun, 100);
    /* ...except for rare probes (at most one per 256 waits and per
     * millisecond tick: the waits here take 20 µs or more). */
    for (int i = 0; i < 640; i++) {
        ck_assert(!iol__spin_before_sleep(&s, q, mono_ns(), true));
        usleep(20);
        iol__spin_after_sleep(&s, false, true, mono_ns());
    }
    ck_assert_uint_ge(s.spins - spun, 1);
    ck_assert_uint_le(s.spins - spun, 640 / 32);

    /* Sleeps that a spin would have saved (work there on waking, within
     * the window) bring the spin back once they cover a miss. The wait's
     * start is moved ahead (waits are clamped at 0) so a slow run
     * (valgrind) cannot turn a hit into a miss. */
    int sleeps = 0;
    while (s.credit < s.window_ns) {
        uint64_t before = s.spins;
        ck_assert(!iol__spin_before_sleep(&s, q, mono_ns(), true));
        if (s.spins != before)
            continue; /* that was a probe: judged already */
        s.wait_start_ns += 1000000000;
        iol__spin_after_sleep(&s, true, true, mono_ns());
        ck_assert_int_lt(++sleeps, 10);
    }
    spun = s.spins;
    ck_assert(!iol__spin_before_sleep(&s, q, mono_ns(), true));
    ck_assert_uint_eq(s.spins, spun + 1);
    iol__cbqueue_free(q);
}
END_TEST

/* BREAK-EVEN (loop/spin.c): the adaptive window follows the host's
 * measured wakeup latency and sleep cost, fed here as synthetic samples. */
START_TEST(test_window_follows_measurements)
{
    iol__spin s;
    ck_assert_int_eq(iol__spin_init(&s, 0), 0);
    int64_t w0 = s.window_ns;
    ck_assert_int_ge(w0, IOL__SPIN_INITIAL_NS);

    /* A host whose wakeups take 16 µs: the window grows past them, so a
     * peer's answer after its wakeup still lands in it. */
    for (int i = 0; i < 400; i++)
        iol__spin_learn_wake(&s, 16000);
    ck_assert_int_ge(s.window_ns, 16000);
    ck_assert_int_le(s.window_ns, 16000 * 5 / 4 + 16000 / 8);
    ck_assert_uint_eq(s.wake_samples, 400);

    /* Fast wakeups again, and cheap sleeps: it shrinks back. */
    for (int i = 0; i < 400; i++) {
        iol__spin_learn_wake(&s, 2000);
        iol__spin_learn_cost(&s, 1000);
    }
    ck_assert_int_le(s.window_ns, 2000 * 5 / 4 + 2000 / 4);
    ck_assert_int_ge(s.window_ns, IOL__SPIN_MIN_NS);

    /* Sleeps that cost more than their latency: never shorter than the
     * sleep a spin saves. */
    for (int i = 0; i < 400; i++)
        iol__spin_learn_cost(&s, 20000);
    ck_assert_int_ge(s.window_ns, 20000 - 20000 / 16);

    /* Bounded: a host that takes 10 ms to wake does not spin 10 ms. */
    for (int i = 0; i < 400; i++)
        iol__spin_learn_wake(&s, 10000000);
    ck_assert_int_eq(s.window_ns, IOL__SPIN_ADAPTIVE_MAX_NS);
    /* Nor does a stray sample (a preempted producer) move it by its size. */
    for (int i = 0; i < 400; i++)
        iol__spin_learn_wake(&s, 4000);
    int64_t settled = s.window_ns;
    iol__spin_learn_wake(&s, 10000000);
    ck_assert_int_le(s.window_ns, settled + settled / 8);

    /* The banked credit never exceeds six windows, whatever it was. */
    for (int i = 0; i < 100; i++)
        iol__spin_learn(&s, 0);
    ck_assert_int_le(s.credit, 6 * s.window_ns);

    /* Fixed and disabled spins ignore measurements. */
    ck_assert_int_eq(iol__spin_init(&s, 7), 0);
    for (int i = 0; i < 100; i++)
        iol__spin_learn_wake(&s, 40000);
    ck_assert_int_eq(s.window_ns, 7000);
    ck_assert_int_eq(iol__spin_init(&s, -1), 0);
    iol__spin_learn_wake(&s, 40000);
    iol__spin_learn_cost(&s, 40000);
    ck_assert_int_eq(s.window_ns, 0);
    ck_assert_uint_eq(s.wake_samples + s.cost_samples, 0);
}
END_TEST

/* ESTIMATOR: a hit saves the sleep's cost less the spin. Hits later than
 * the sleep would have cost (a producer every 10 µs where a sleep costs
 * 3) stop the spin; early ones (a ping-pong) keep it; misses stop it. */
START_TEST(test_credit_scores_by_cost)
{
    iol__spin s;
    ck_assert_int_eq(iol__spin_init(&s, 0), 0);
    for (int i = 0; i < 200; i++) {
        iol__spin_learn_cost(&s, 3000);
        iol__spin_learn_wake(&s, 10000);
    }
    ck_assert_int_ge(s.window_ns, 10000); /* a 10 µs gap is within the window */
    ck_assert_int_gt(s.credit, 0);
    int n = 0;
    while (s.credit > 0 && n < 1000) {
        iol__spin_learn(&s, 9000); /* a hit, but 6 µs of spin to save 3 */
        n++;
    }
    ck_assert_int_eq(s.credit, 0);
    ck_assert_int_lt(n, 100);
    n = 0;

    /* The loop then sleeps without spinning (same millisecond: no probe). */
    iol__cbqueue *q;
    ck_assert_int_eq(iol__cbqueue_new(&q, 0), 0);
    int64_t t = mono_ns();
    s.period = t / 1000000;
    ck_assert(!iol__spin_before_sleep(&s, q, t, true));
    ck_assert_uint_eq(s.spins, 0);
    ck_assert(s.learn_after_sleep);

    /* Early hits bring it back once they cover a miss (a spin bets W),
     * and keep it. */
    n = 0;
    while (s.credit < s.window_ns && n < 1000) {
        iol__spin_learn(&s, 300);
        n++;
    }
    ck_assert_int_gt(n, 1); /* one early post does not fund a spin */
    ck_assert_int_le(n, (int)(s.window_ns / (s.cost_ns - 300)) + 1);
    s.period = t / 1000000;
    ck_assert(iol__spin_before_sleep(&s, q, t, true) == false); /* it spun (and missed: empty queue) */
    ck_assert_uint_eq(s.spins, 1);
    for (int i = 0; i < 1000; i++)
        iol__spin_learn(&s, 300);
    ck_assert_int_eq(s.credit, 6 * s.window_ns);
    /* Six misses in a row from full stop it; five do not. */
    for (int i = 0; i < 5; i++)
        iol__spin_learn(&s, -1);
    ck_assert_int_ge(s.credit, s.window_ns);
    iol__spin_learn(&s, -1);
    ck_assert_int_lt(s.credit, s.window_ns);
    iol__cbqueue_free(q);
}
END_TEST

/* OVERLOAD: a spin that looks at the clock long after its window ended
 * was preempted; one such spin stops spinning (here the batch "ended" a
 * second before the spin began, as if the thread had been descheduled). */
START_TEST(test_preempted_spin_stops_spinning)
{
    iol__cbqueue *q;
    ck_assert_int_eq(iol__cbqueue_new(&q, 0), 0);
    iol__spin s;
    ck_assert_int_eq(iol__spin_init(&s, 0), 0);
    ck_assert_int_eq(s.credit, 6 * s.window_ns); /* full */
    ck_assert(!iol__spin_before_sleep(&s, q, mono_ns() - 1000000000, true));
    ck_assert_uint_eq(s.spins, 1);
    ck_assert_int_eq(s.credit, 0);
    /* An ordinary miss only costs its window (unless this thread really
     * was preempted for 50 µs in it: then try again). */
    for (int tries = 0;; tries++) {
        ck_assert_int_lt(tries, 100);
        ck_assert_int_eq(iol__spin_init(&s, 0), 0);
        int64_t t0 = mono_ns();
        ck_assert(!iol__spin_before_sleep(&s, q, t0, true));
        if (mono_ns() - t0 < s.window_ns + 40000) {
            ck_assert_int_eq(s.credit, 5 * s.window_ns);
            break;
        }
    }
    iol__cbqueue_free(q);
}
END_TEST

/* PROBES: a loop without credit probes at its first wait after a tick
 * once PROBE_EVERY waits went by; an answer within the window buys one
 * more spin (to see whether a peer answers early now), a miss nothing. */
START_TEST(test_probe_hit_buys_one_spin)
{
    iol__cbqueue *q;
    ck_assert_int_eq(iol__cbqueue_new(&q, 0), 0);
    iol__spin s;
    ck_assert_int_eq(iol__spin_init(&s, 0), 0);
    s.credit = 0;
    s.skipped = IOL__SPIN_PROBE_EVERY - 1;
    s.period = 0; /* the next wait is in a new millisecond */
    ck_assert_int_eq(iol__cbqueue_push(q, nop, NULL), 0);
    int64_t t = mono_ns();
    ck_assert(iol__spin_before_sleep(&s, q, t, true)); /* the probe, a hit */
    ck_assert_uint_eq(s.spins, 1);
    ck_assert_int_eq(s.credit, s.window_ns);
    drain(q);
    /* Same millisecond, no probe due: it spins on that credit. */
    ck_assert(!iol__spin_before_sleep(&s, q, t, true));
    ck_assert_uint_eq(s.spins, 2);
    ck_assert_int_lt(s.credit, s.window_ns);
    /* Then sleeps without spinning. */
    ck_assert(!iol__spin_before_sleep(&s, q, t, true));
    ck_assert_uint_eq(s.spins, 2);
    iol__cbqueue_free(q);
}
END_TEST

/* MEASURING: the wakeup's winner stamps the clock; the loop learns the
 * latency from a real sleep with work queued, and ignores a stamp older
 * than the wait (an earlier sleep's) or a wait that did not block. */
START_TEST(test_learns_latency_from_stamp)
{
    iol__cbqueue *q;
    ck_assert_int_eq(iol__cbqueue_new(&q, 0), 0);
    iol__spin s;
    ck_assert_int_eq(iol__spin_init(&s, 0), 0);
    s.credit = 0; /* sleep at once (no probe: same millisecond) */
    int64_t t = mono_ns();
    s.period = t / 1000000;
    ck_assert(!iol__spin_before_sleep(&s, q, t, true));
    iol__spin_note_wake(&s);
    int64_t stamp = atomic_load(&s.woken_at_ns);
    ck_assert_int_ge(stamp, t);
    /* Woken 40 µs after the stamp: that is the sample. */
    iol__spin_after_sleep(&s, true, true, stamp + 40000);
    ck_assert_uint_eq(s.wake_samples, 1);
    ck_assert_int_gt(s.wake_ns, IOL__SPIN_INITIAL_NS);

    /* The next wait starts after that stamp: it is stale, not learned. */
    int64_t t2 = stamp + 50000;
    s.credit = 0;
    s.period = t2 / 1000000;
    s.skipped = 0;
    ck_assert(!iol__spin_before_sleep(&s, q, t2, true));
    iol__spin_after_sleep(&s, true, true, t2 + 40000);
    ck_assert_uint_eq(s.wake_samples, 1);

    /* A poll that did not block (timeout 0), or found nothing: no sample. */
    int64_t t3 = mono_ns();
    s.credit = 0;
    s.period = t3 / 1000000;
    s.skipped = 0;
    ck_assert(!iol__spin_before_sleep(&s, q, t3, true));
    iol__spin_note_wake(&s);
    iol__spin_after_sleep(&s, true, false, mono_ns() + 1000);
    iol__spin_after_sleep(&s, false, true, mono_ns() + 1000);
    ck_assert_uint_eq(s.wake_samples, 1);

    /* A judged sleep whose post came early gains half of what a spin
     * that caught it would have (its saving was never made). */
    int64_t t4 = mono_ns();
    s.credit = 0;
    s.period = t4 / 1000000;
    s.skipped = 0;
    ck_assert(!iol__spin_before_sleep(&s, q, t4, true));
    atomic_store(&s.woken_at_ns, t4 + 1000); /* posted 1 µs after the batch */
    iol__spin_after_sleep(&s, true, true, t4 + 30000);
    ck_assert_int_eq(s.credit, (s.cost_ns - 1000) / 2);

    /* The loop's CPU per sleep is sampled once every
     * IOL__SPIN_COST_SAMPLE_EVERY sleeps. */
    uint64_t sampled = s.cost_samples;
    for (int i = 0; i < 8 * IOL__SPIN_COST_SAMPLE_EVERY; i++) {
        int64_t ti = mono_ns();
        s.credit = 0;
        s.period = ti / 1000000;
        s.skipped = 0;
        ck_assert(!iol__spin_before_sleep(&s, q, ti, true));
        iol__spin_after_sleep(&s, true, true, mono_ns());
    }
    ck_assert_uint_ge(s.cost_samples - sampled, 7);
    ck_assert_uint_le(s.cost_samples - sampled, 9);
    ck_assert_uint_eq(s.spins, 0);
    iol__cbqueue_free(q);
}
END_TEST

/* --------------------------------------------------------- running loops */

struct loop_thread {
    iol_loop *loop;
    pthread_t th;
    double cpu_s; /* the loop thread's CPU time during start() */
};

static double thread_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void *loop_main(void *p)
{
    struct loop_thread *t = p;
    double c0 = thread_cpu_s();
    ck_assert_int_eq(iol_loop_start(t->loop), 0);
    t->cpu_s = thread_cpu_s() - c0;
    return NULL;
}

static void start_loop(struct loop_thread *t, double spin_us)
{
    iol_loop_config cfg = { .make_current = IOL_CURRENT_NEVER, .spin_us = spin_us };
    ck_assert_int_eq(iol_loop_new(&t->loop, &cfg), 0);
    ck_assert_int_eq(pthread_create(&t->th, NULL, loop_main, t), 0);
    while (!iol_loop_running(t->loop))
        usleep(100);
}

/* Stops, joins; the statistics are the loop thread's, read after join. */
static void stop_loop(struct loop_thread *t)
{
    ck_assert_int_eq(iol_loop_stop(t->loop), 0);
    pthread_join(t->th, NULL);
}

static void sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

START_TEST(test_idle_loop_never_spins)
{
    static const double modes[] = { 0, 5, -1 };
    for (int m = 0; m < 3; m++) {
        struct loop_thread t;
        start_loop(&t, modes[m]);
        sleep_ms(200);
        stop_loop(&t);
        ck_assert_uint_eq(t.loop->spin.spins, 0);
        ck_assert_uint_eq(t.loop->spin.wake_samples + t.loop->spin.cost_samples, 0);
        /* Generous: an idle loop sleeps in epoll_wait; 20 ms of CPU in
         * 200 ms would mean it woke up (or spun) for nothing. */
        ck_assert_msg(t.cpu_s < 0.020, "idle loop used %.1f ms of CPU", t.cpu_s * 1e3);
        ck_assert_int_eq(iol_loop_close(t.loop, false), 0);
    }
}
END_TEST

struct slow_posts {
    _Atomic int ran;
};

static void count_cb(void *arg)
{
    struct slow_posts *sp = arg;
    /* relaxed: read by the test thread only after the loop thread joined
     * (or as a progress hint); join orders it. */
    atomic_fetch_add_explicit(&sp->ran, 1, memory_order_relaxed);
}

/* Posts every 2 ms (far beyond any spin window) and counts the spins. */
static uint64_t spins_for_slow_posts(double spin_us, int posts, uint64_t *wake_samples)
{
    struct loop_thread t;
    struct slow_posts sp = { 0 };
    start_loop(&t, spin_us);
    for (int i = 0; i < posts; i++) {
        ck_assert_int_eq(iol_loop_add_callback(t.loop, count_cb, &sp), 0);
        sleep_ms(2);
    }
    while (atomic_load(&sp.ran) < posts)
        sleep_ms(1);
    stop_loop(&t);
    ck_assert_int_eq(atomic_load(&sp.ran), posts);
    uint64_t spins = t.loop->spin.spins;
    *wake_samples = t.loop->spin.wake_samples;
    /* At most one eventfd write per sleep. */
    ck_assert_uint_le(iol_test_wakeups(t.loop), t.loop->sleeps);
    ck_assert_int_eq(iol_loop_close(t.loop, false), 0);
    return spins;
}

START_TEST(test_slow_posts_stop_the_spin)
{
    int posts = (int)iol_test_scaled(200, 100);
    uint64_t samples;
    /* Adaptive: a handful of misses, then probes only (1 in 256). Each
     * sleep a post ended taught it the wakeup's latency (MEASURING). */
    ck_assert_uint_le(spins_for_slow_posts(0, posts, &samples), 16 + (uint64_t)posts / 32 + 2);
    ck_assert_uint_ge(samples, (uint64_t)posts / 2);
    /* Fixed: the old behaviour, a spin after every batch; no measuring. */
    ck_assert_uint_ge(spins_for_slow_posts(5, posts, &samples), (uint64_t)posts / 2);
    ck_assert_uint_eq(samples, 0);
    /* Disabled: never. */
    ck_assert_uint_eq(spins_for_slow_posts(-1, posts, &samples), 0);
    ck_assert_uint_eq(samples, 0);
}
END_TEST

/* P producers post numbered callbacks; each must run once, in order per
 * producer, whatever the spin mode. */
#define PRODUCERS 3

struct storm {
    iol_loop *loop;
    uint64_t n;
    _Atomic uint64_t next_seen[PRODUCERS]; /* written by the loop thread only */
    _Atomic uint64_t bad;
    _Atomic int done_producers;
};

struct storm_item {
    struct storm *st;
    int producer;
    uint64_t seq;
};

static struct storm_item *items[PRODUCERS];

static void storm_cb(void *arg)
{
    struct storm_item *it = arg;
    struct storm *st = it->st;
    /* relaxed: only the loop thread writes next_seen; the test reads it
     * after join. */
    uint64_t want = atomic_load_explicit(&st->next_seen[it->producer], memory_order_relaxed);
    if (it->seq != want)
        atomic_fetch_add_explicit(&st->bad, 1, memory_order_relaxed);
    atomic_store_explicit(&st->next_seen[it->producer], want + 1, memory_order_relaxed);
}

struct storm_producer {
    struct storm *st;
    int index;
};

static void *storm_main(void *p)
{
    struct storm_producer *sp = p;
    uint32_t rng = 0x2545f491u * (uint32_t)(sp->index + 1);
    for (uint64_t i = 0; i < sp->st->n; i++) {
        struct storm_item *it = &items[sp->index][i];
        *it = (struct storm_item){ sp->st, sp->index, i };
        HOT_ASSERT(iol_loop_add_callback(sp->st->loop, storm_cb, it) == 0);
        /* Gaps of all sizes: bursts, sub-window pauses, real sleeps. */
        uint32_t r = rng % 64;
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        if (r == 0)
            usleep(50 + rng % 200);
        else if (r < 8)
            iol_test_tiny_delay(&rng);
    }
    return NULL;
}

static void run_storm(double spin_us)
{
    static struct storm st;
    memset(&st, 0, sizeof st);
    st.n = iol_test_scaled(20000, 500);
    for (int p = 0; p < PRODUCERS; p++) {
        items[p] = calloc(st.n, sizeof *items[p]);
        ck_assert_ptr_nonnull(items[p]);
    }
    struct loop_thread t;
    start_loop(&t, spin_us);
    st.loop = t.loop;
    pthread_t th[PRODUCERS];
    struct storm_producer sp[PRODUCERS];
    for (int p = 0; p < PRODUCERS; p++) {
        sp[p] = (struct storm_producer){ &st, p };
        ck_assert_int_eq(pthread_create(&th[p], NULL, storm_main, &sp[p]), 0);
    }
    for (int p = 0; p < PRODUCERS; p++)
        pthread_join(th[p], NULL);
    for (;;) {
        uint64_t total = 0;
        for (int p = 0; p < PRODUCERS; p++)
            total += atomic_load(&st.next_seen[p]);
        if (total >= PRODUCERS * st.n)
            break;
        sleep_ms(1);
    }
    stop_loop(&t);
    for (int p = 0; p < PRODUCERS; p++)
        ck_assert_uint_eq(atomic_load(&st.next_seen[p]), st.n);
    ck_assert_uint_eq(atomic_load(&st.bad), 0);
    ck_assert_uint_le(iol_test_wakeups(t.loop), t.loop->sleeps);
    if (spin_us < 0)
        ck_assert_uint_eq(t.loop->spin.spins, 0);
    ck_assert_int_eq(iol_loop_close(t.loop, false), 0); /* nothing left behind */
    for (int p = 0; p < PRODUCERS; p++)
        free(items[p]);
}

START_TEST(test_exactly_once_adaptive)
{
    run_storm(0);
}
END_TEST

START_TEST(test_exactly_once_fixed)
{
    run_storm(5);
}
END_TEST

START_TEST(test_exactly_once_never)
{
    run_storm(-1);
}
END_TEST

START_TEST(test_runtime_passes_spin_us)
{
    iol_runtime *rt;
    iol_runtime_config cfg = { .workers = 2, .spin_us = -1 };
    ck_assert_int_eq(iol_runtime_new(&rt, &cfg), 0);
    for (unsigned i = 0; i < iol_runtime_size(rt); i++)
        ck_assert_int_eq(iol_runtime_loop(rt, i)->spin.window_ns, 0);
    iol_runtime_free(rt);
    cfg.spin_us = 2;
    ck_assert_int_eq(iol_runtime_new(&rt, &cfg), 0);
    ck_assert_int_eq(iol_runtime_loop(rt, 0)->spin.window_ns, 2000);
    iol_runtime_free(rt);
    cfg.spin_us = NAN;
    ck_assert_int_eq(iol_runtime_new(&rt, &cfg), -EINVAL);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("spin");
    TCase *tc = iol_test_tcase("policy", 10);
    tcase_add_test(tc, test_init_validates);
    tcase_add_test(tc, test_never_spins);
    tcase_add_test(tc, test_fixed_always_spins);
    tcase_add_test(tc, test_gathers_only_behind_other_threads);
    tcase_add_test(tc, test_adaptive_stops_after_misses_and_probes);
    tcase_add_test(tc, test_window_follows_measurements);
    tcase_add_test(tc, test_credit_scores_by_cost);
    tcase_add_test(tc, test_learns_latency_from_stamp);
    tcase_add_test(tc, test_preempted_spin_stops_spinning);
    tcase_add_test(tc, test_probe_hit_buys_one_spin);
    suite_add_tcase(s, tc);

    tc = iol_test_tcase("loop", 120);
    tcase_add_test(tc, test_idle_loop_never_spins);
    tcase_add_test(tc, test_slow_posts_stop_the_spin);
    tcase_add_test(tc, test_exactly_once_adaptive);
    tcase_add_test(tc, test_exactly_once_fixed);
    tcase_add_test(tc, test_exactly_once_never);
    tcase_add_test(tc, test_runtime_passes_spin_us);
    suite_add_tcase(s, tc);
    return iol_test_run(s);
}
