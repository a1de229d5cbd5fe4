/* Cross-loop wakeups by io_uring message (loop/wake.c): a uring loop
 * wakes another uring loop with IORING_OP_MSG_RING, everything else with
 * the eventfd. The waker's counters (writes: eventfd writes; messages:
 * wakes claimed for a ring message) tell which path each test took, so a
 * silent fallback to the eventfd fails the tests that expect messages.
 * Without liburing, on a kernel without MSG_RING, or under valgrind,
 * the suite says so and passes. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "ioloop.h"
#include "loop/loop_impl.h"
#include "testutil.h"

#ifdef IOL_HAVE_URING

static iol_loop *new_loop(const char *poller)
{
    iol_loop *loop = NULL;
    ck_assert_int_eq(iol_loop_new(&loop, &(iol_loop_config){ .poller = poller, .spin_us = -1,
                                                              .make_current = IOL_CURRENT_NEVER }),
                     0);
    return loop;
}

/* Whether this kernel (and this run's IOL_URING_OPS) lets uring loops
 * send ring messages; prints why not. */
static bool messages_work(void)
{
    iol_loop *loop = new_loop("uring");
    /* The kernel's ability, not the loop's choice: with IOL_MSGRING=0
     * the message tests must fail, not skip. */
    bool ok = loop->poller_ops->op_features && (loop->poller_ops->op_features(loop->poller) & IOL__OPS_MSG_RING);
    iol_loop_close(loop, false);
    if (!ok)
        fprintf(stderr, "test_msgring: no IORING_OP_MSG_RING on this kernel, message checks skipped\n");
    return ok;
}

static void stop_cb(void *arg) { iol_loop_stop(arg); }

static void *run_thread(void *arg)
{
    ck_assert_int_eq(iol_loop_start(arg), 0);
    return NULL;
}

static uint64_t writes(iol_loop *l) { return iol__waker_writes(&l->waker); }
static uint64_t messages(iol_loop *l) { return iol__waker_messages(&l->waker); }

/* ------------------------------------------------------- ping-pong */

typedef struct pp {
    iol_loop *loop[2];
    _Atomic long left;  /* hops still to make */
    _Atomic long ran[2];
    uint32_t rng[2];
    bool jitter;
} pp;

typedef struct hop {
    pp *p;
    int side;
} hop;

static hop hops[2][8];

static void hop_cb(void *arg)
{
    hop *h = arg;
    pp *p = h->p;
    atomic_fetch_add(&p->ran[h->side], 1);
    if (p->jitter)
        iol_test_tiny_delay(&p->rng[h->side]);
    if (atomic_fetch_sub(&p->left, 1) <= 1) {
        /* The last hop: both loops stop from their own threads, so no
         * eventfd write comes from stop() while the other sleeps. */
        iol_loop_stop(p->loop[h->side]);
        ck_assert_int_eq(iol_loop_add_callback(p->loop[1 - h->side], stop_cb,
                                               p->loop[1 - h->side]),
                         0);
        return;
    }
    hop *next = &hops[1 - h->side][h - hops[h->side]];
    int err = iol_loop_add_callback(p->loop[1 - h->side], hop_cb, next);
    HOT_ASSERT(err == 0);
}

/* chains hops bouncing between two loops on two threads. */
static void pingpong(pp *p, const char *a, const char *b, long n, int chains)
{
    p->loop[0] = new_loop(a);
    p->loop[1] = new_loop(b);
    atomic_init(&p->left, n);
    p->rng[0] = 12345;
    p->rng[1] = 777;
    for (int s = 0; s < 2; s++)
        for (int c = 0; c < 8; c++)
            hops[s][c] = (hop){ p, s };
    for (int c = 0; c < chains; c++)
        ck_assert_int_eq(iol_loop_add_callback(p->loop[0], hop_cb, &hops[0][c]), 0);
    pthread_t t[2];
    for (int s = 0; s < 2; s++)
        ck_assert_int_eq(pthread_create(&t[s], NULL, run_thread, p->loop[s]), 0);
    for (int s = 0; s < 2; s++)
        pthread_join(t[s], NULL);
}

static void pp_free(pp *p)
{
    for (int s = 0; s < 2; s++) {
        /* wakeups <= sleeps: at most one per sleep, whatever delivered it. */
        ck_assert_uint_le(writes(p->loop[s]) + messages(p->loop[s]), p->loop[s]->sleeps);
        iol_loop_close(p->loop[s], false);
    }
}

/* Two sleeping uring loops bounce a callback: every wakeup is a ring
 * message, none an eventfd write. */
START_TEST(test_message_wakes_uring_loop)
{
    if (!messages_work())
        return;
    pp p = { 0 };
    long n = (long)iol_test_scaled(2000, 50);
    pingpong(&p, "uring", "uring", n, 1);
    ck_assert_int_eq(atomic_load(&p.ran[0]) + atomic_load(&p.ran[1]), n);
    for (int s = 0; s < 2; s++) {
        ck_assert_uint_gt(messages(p.loop[s]), 0);
        ck_assert_uint_eq(writes(p.loop[s]), 0);
        ck_assert_uint_eq(p.loop[s]->waker.owed, 0);
    }
    /* The public statistic counts both deliveries. */
    ck_assert_uint_eq(iol_test_wakeups(p.loop[1]), messages(p.loop[1]));
    pp_free(&p);
}
END_TEST

/* IOL_MSGRING=now submits each message at once: same outcome. */
START_TEST(test_message_now)
{
    if (!messages_work())
        return;
    setenv("IOL_MSGRING", "now", 1);
    pp p = { 0 };
    long n = (long)iol_test_scaled(1000, 50);
    pingpong(&p, "uring", "uring", n, 1);
    ck_assert_int_eq(atomic_load(&p.ran[0]) + atomic_load(&p.ran[1]), n);
    ck_assert_uint_gt(messages(p.loop[1]), 0);
    ck_assert_uint_eq(writes(p.loop[1]), 0);
    pp_free(&p);
}
END_TEST

/* The fallbacks: the eventfd, never a message. */
static void expect_eventfd(const char *a, const char *b)
{
    pp p = { 0 };
    long n = (long)iol_test_scaled(500, 20);
    pingpong(&p, a, b, n, 1);
    ck_assert_int_eq(atomic_load(&p.ran[0]) + atomic_load(&p.ran[1]), n);
    for (int s = 0; s < 2; s++)
        ck_assert_uint_eq(messages(p.loop[s]), 0);
    ck_assert_uint_gt(writes(p.loop[0]) + writes(p.loop[1]), 0);
    pp_free(&p);
}

START_TEST(test_uring_to_epoll) { expect_eventfd("uring", "epoll"); }
END_TEST

START_TEST(test_msgring_off)
{
    setenv("IOL_MSGRING", "0", 1);
    expect_eventfd("uring", "uring");
}
END_TEST

/* A kernel without MSG_RING (the ability masked off). */
START_TEST(test_no_msg_ring_kernel)
{
    setenv("IOL_URING_OPS", "15", 1); /* every IOL__OPS_* but MSG_RING */
    expect_eventfd("uring", "uring");
}
END_TEST

/* A thread that runs no loop posts to a sleeping uring loop: eventfd. */
static void count_cb(void *arg) { atomic_fetch_add((_Atomic long *)arg, 1); }

START_TEST(test_plain_thread_to_uring)
{
    iol_loop *loop = new_loop("uring");
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, run_thread, loop), 0);
    _Atomic long ran = 0;
    long n = 20;
    for (long i = 0; i < n; i++) {
        ck_assert_int_eq(iol_loop_add_callback(loop, count_cb, &ran), 0);
        usleep(2000); /* long enough for the loop to go back to sleep */
    }
    while (atomic_load(&ran) < n)
        usleep(1000);
    ck_assert_int_eq(iol_loop_stop(loop), 0);
    pthread_join(t, NULL);
    ck_assert_uint_gt(writes(loop), 0);
    ck_assert_uint_eq(messages(loop), 0);
    iol_loop_close(loop, false);
}
END_TEST

/* An epoll loop posting to a uring loop: eventfd on both sides. */
START_TEST(test_epoll_to_uring) { expect_eventfd("epoll", "uring"); }
END_TEST

/* ------------------------------------------------------- the hunter */

typedef struct mixer {
    iol_loop *target;
    _Atomic bool done;
    _Atomic long posted;
} mixer;

static void *mixer_thread(void *arg)
{
    mixer *m = arg;
    uint32_t rng = 99;
    while (!atomic_load(&m->done)) {
        iol_loop_add_callback(m->target, count_cb, (void *)&m->posted);
        iol_test_tiny_delay(&rng);
        usleep(50);
    }
    return NULL;
}

/* Many chains bouncing between two sleeping uring loops with random
 * delays, while a plain thread posts to one of them through the eventfd:
 * messages and eventfd writes race for the same sleeps. Every hop runs
 * (no lost wakeup: a lost one hangs the chain and the tcase times out),
 * and the eventfd books stay drained. */
START_TEST(test_lost_wakeup_hunter)
{
    bool msg = messages_work();
    pp p = { .jitter = true };
    long n = (long)iol_test_scaled(40000, 2000);
    mixer m = { 0 };
    pthread_t mt;
    iol_loop *a = new_loop("uring"), *b = new_loop("uring");
    p.loop[0] = a;
    p.loop[1] = b;
    atomic_init(&p.left, n);
    p.rng[0] = 1;
    p.rng[1] = 2;
    for (int s = 0; s < 2; s++)
        for (int c = 0; c < 8; c++)
            hops[s][c] = (hop){ &p, s };
    for (int c = 0; c < 4; c++)
        ck_assert_int_eq(iol_loop_add_callback(a, hop_cb, &hops[0][c]), 0);
    m.target = b;
    ck_assert_int_eq(pthread_create(&mt, NULL, mixer_thread, &m), 0);
    pthread_t t[2];
    for (int s = 0; s < 2; s++)
        ck_assert_int_eq(pthread_create(&t[s], NULL, run_thread, p.loop[s]), 0);
    for (int s = 0; s < 2; s++)
        pthread_join(t[s], NULL);
    atomic_store(&m.done, true);
    pthread_join(mt, NULL);
    /* The mixer's late posts: one more run drains them. */
    ck_assert_int_eq(iol_loop_add_callback(b, stop_cb, b), 0);
    ck_assert_int_eq(iol_loop_start(b), 0);
    /* Each chain ends at the first hop that finds none left: n to n + 3. */
    long ran = atomic_load(&p.ran[0]) + atomic_load(&p.ran[1]);
    ck_assert_int_ge(ran, n);
    ck_assert_int_le(ran, n + 3);
    if (msg)
        ck_assert_uint_gt(messages(a) + messages(b), 0);
    pp_free(&p);
}
END_TEST

/* ------------------------------------------------- closing the target */

typedef struct closer {
    iol_loop *target;   /* a reference the poster drops */
    _Atomic long ran;
    bool got_shutdown;
} closer;

static void post_cb(void *arg)
{
    iol_loop *self = iol_loop_current();
    closer *c = arg;
    int err = iol_loop_add_callback(c->target, count_cb, (void *)&c->ran);
    if (err == -ESHUTDOWN) {
        c->got_shutdown = true;
        iol_loop_unref(c->target);
        c->target = NULL;
        iol_loop_stop(self);
        return;
    }
    ck_assert_int_eq(err, 0);
    ck_assert_int_eq(iol_loop_call_later(self, 0.0002, post_cb, c, NULL), 0);
}

static void *close_target_thread(void *arg)
{
    iol_loop *t = arg;
    ck_assert_int_eq(iol_loop_start(t), 0);
    ck_assert_int_ge(iol_loop_close(t, false), 0);
    return NULL;
}

/* A uring loop keeps posting (ring messages) to another uring loop that
 * stops and closes meanwhile: no use after free (ASan, valgrind), and
 * every fd goes once the last reference does (the ring's dup too). */
START_TEST(test_close_target_while_posting)
{
    bool msg = messages_work();
    int fds_before = iol_test_dir_entries("/proc/self/fd");
    long ran_total = 0;
    for (int round = 0; round < 5; round++) {
        iol_loop *poster = new_loop("uring"), *target = new_loop("uring");
        closer c = { .target = iol_loop_ref(target) };
        ck_assert_int_eq(iol_loop_add_callback(poster, post_cb, &c), 0);
        pthread_t tp, tt;
        /* Ours for the stop below: the closing thread drops the loop's
         * own reference and the poster its own, and the loop may be freed
         * while stop() still counts its eventfd write (TSan saw it). */
        iol_loop *held = iol_loop_ref(target);
        ck_assert_int_eq(pthread_create(&tt, NULL, close_target_thread, target), 0);
        ck_assert_int_eq(pthread_create(&tp, NULL, run_thread, poster), 0);
        usleep(20000 + 5000 * round);
        ck_assert_int_eq(iol_loop_stop(target), 0);
        pthread_join(tt, NULL);
        pthread_join(tp, NULL);
        iol_loop_unref(held);
        ck_assert(c.got_shutdown);
        ran_total += atomic_load(&c.ran);
        iol_loop_close(poster, false);
    }
    if (msg)
        ck_assert_int_gt(ran_total, 0);
    ck_assert_int_eq(iol_test_dir_entries("/proc/self/fd"), fds_before);
}
END_TEST

/* The poster holds the last reference: its message is still in its SQ
 * when the target closes and the target's owner lets go. The message
 * goes to the dead ring (its dup), the poster frees the target. */
typedef struct last_ref {
    iol_loop *target;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int step; /* 1: posted (message queued), 2: target closed and unreffed */
    uint64_t messages;
    long ran;
} last_ref;

static void post_then_wait_cb(void *arg)
{
    last_ref *r = arg;
    ck_assert_int_eq(iol_loop_add_callback(r->target, count_cb, &r->ran), 0);
    r->messages = messages(r->target);
    pthread_mutex_lock(&r->mu);
    r->step = 1;
    pthread_cond_broadcast(&r->cv);
    while (r->step != 2)
        pthread_cond_wait(&r->cv, &r->mu);
    pthread_mutex_unlock(&r->mu);
    iol_loop_stop(iol_loop_current());
}

START_TEST(test_poster_holds_last_reference)
{
    if (!messages_work())
        return;
    int fds_before = iol_test_dir_entries("/proc/self/fd");
    iol_loop *poster = new_loop("uring");
    last_ref r = { .target = new_loop("uring"), .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };
    /* run_once leaves the target's sleep announced: a post must wake it. */
    ck_assert_int_eq(iol_loop_run_once(r.target, 0), 0);
    ck_assert_int_eq(iol_loop_add_callback(poster, post_then_wait_cb, &r), 0);
    pthread_t tp;
    ck_assert_int_eq(pthread_create(&tp, NULL, run_thread, poster), 0);
    pthread_mutex_lock(&r.mu);
    while (r.step != 1)
        pthread_cond_wait(&r.cv, &r.mu);
    pthread_mutex_unlock(&r.mu);
    ck_assert_uint_eq(r.messages, 1);
    ck_assert_uint_eq(poster->msg_queued, 1);
    ck_assert_int_eq(iol_loop_close(r.target, false), 1); /* drops the queued callback */
    pthread_mutex_lock(&r.mu);
    r.step = 2;
    pthread_cond_broadcast(&r.cv);
    pthread_mutex_unlock(&r.mu);
    pthread_join(tp, NULL);
    ck_assert_uint_eq(poster->msg_queued, 0);
    iol_loop_close(poster, false);
    ck_assert_int_eq(r.ran, 0);
    ck_assert_int_eq(iol_test_dir_entries("/proc/self/fd"), fds_before);
}
END_TEST

static Suite *msgring_suite(void)
{
    Suite *s = suite_create("msgring");
    TCase *tc = iol_test_tcase("msgring", 120);
    tcase_add_test(tc, test_message_wakes_uring_loop);
    tcase_add_test(tc, test_message_now);
    tcase_add_test(tc, test_uring_to_epoll);
    tcase_add_test(tc, test_epoll_to_uring);
    tcase_add_test(tc, test_msgring_off);
    tcase_add_test(tc, test_no_msg_ring_kernel);
    tcase_add_test(tc, test_plain_thread_to_uring);
    tcase_add_test(tc, test_lost_wakeup_hunter);
    tcase_add_test(tc, test_close_target_while_posting);
    tcase_add_test(tc, test_poster_holds_last_reference);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    /* Every test here has a uring loop asleep in io_uring_enter while
     * other threads run; valgrind 3.x keeps its one-thread-at-a-time lock
     * through that call, so the others never run (a bare two-ring
     * ping-pong hangs under it too, with the eventfd as with messages). */
    if (iol_test_under_valgrind()) {
        fprintf(stderr, "test_msgring: valgrind blocks every thread while one sleeps in io_uring_enter, skipped\n");
        return 0;
    }
    return iol_test_run(msgring_suite());
}

#else

int main(void)
{
    fprintf(stderr, "test_msgring: built without liburing, skipped\n");
    return 0;
}

#endif
