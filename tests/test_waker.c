/* The eventfd waker alone (sync/waker.h), plus the lost-wakeup hunter with
 * the callback queue, without a loop. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "ioloop.h"
#include "loop/loop_impl.h"
#include "sync/cbqueue.h"
#include "sync/waker.h"
#include "testutil.h"

static bool readable(const iol__waker *w)
{
    struct pollfd p = { .fd = iol__waker_fd(w), .events = POLLIN };
    return poll(&p, 1, 0) == 1;
}

START_TEST(test_no_write_when_awake)
{
    iol__waker w;
    ck_assert_int_eq(iol__waker_init(&w), 0);
    ck_assert_int_ge(iol__waker_fd(&w), 0);
    for (int i = 0; i < 100; i++)
        iol__waker_wake(&w);
    ck_assert_uint_eq(iol__waker_writes(&w), 0);
    ck_assert(!readable(&w));

    /* A finished sleep is awake again. */
    iol__waker_prepare_sleep(&w);
    iol__waker_finish_sleep(&w);
    iol__waker_wake(&w);
    ck_assert_uint_eq(iol__waker_writes(&w), 0);
    ck_assert(!readable(&w));
    iol__waker_destroy(&w);
}
END_TEST

struct waker_storm {
    iol__waker *w;
    int n;
};

static void *wake_many(void *p)
{
    struct waker_storm *s = p;
    for (int i = 0; i < s->n; i++) {
        if (i & 1)
            iol__waker_wake_after_push(s->w);
        else
            iol__waker_wake(s->w);
    }
    return NULL;
}

START_TEST(test_one_write_per_sleep)
{
    iol__waker w;
    ck_assert_int_eq(iol__waker_init(&w), 0);
    for (unsigned sleep_no = 1; sleep_no <= 3; sleep_no++) {
        iol__waker_prepare_sleep(&w);
        struct waker_storm s = { &w, 2000 };
        pthread_t th[4];
        for (int i = 0; i < 4; i++)
            ck_assert_int_eq(pthread_create(&th[i], NULL, wake_many, &s), 0);
        wake_many(&s);
        for (int i = 0; i < 4; i++)
            pthread_join(th[i], NULL);
        ck_assert_uint_eq(iol__waker_writes(&w), sleep_no);
        ck_assert(readable(&w));
        iol__waker_finish_sleep(&w);
        ck_assert(!readable(&w)); /* drained */
        iol__waker_wake(&w);      /* awake: no write */
        ck_assert_uint_eq(iol__waker_writes(&w), sleep_no);
    }
    iol__waker_destroy(&w);
}
END_TEST

START_TEST(test_late_write_is_drained)
{
    /* A producer wins the CAS, then finish_sleep runs before its write
     * lands: the write must be drained at the next finish_sleep, not left
     * to make every later poll return at once. */
    iol__waker w;
    ck_assert_int_eq(iol__waker_init(&w), 0);
    iol__waker_prepare_sleep(&w);
    atomic_store(&w.state, 3u); /* SLEEPING|WOKEN: the CAS was won */
    iol__waker_finish_sleep(&w);
    ck_assert(!readable(&w));
    uint64_t one = 1;
    ck_assert_int_eq(write(iol__waker_fd(&w), &one, sizeof one), sizeof one); /* the late write */
    iol__waker_prepare_sleep(&w);
    ck_assert(readable(&w)); /* the next poll returns at once... */
    iol__waker_finish_sleep(&w);
    ck_assert(!readable(&w)); /* ...and it is drained there */
    ck_assert_uint_eq(w.owed, 0);
    iol__waker_destroy(&w);
}
END_TEST

/* The eventfd's counter, as the kernel shows it in fdinfo. */
static uint64_t eventfd_count(int fd)
{
    char path[64], line[128];
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
    FILE *f = fopen(path, "r");
    HOT_ASSERT(f != NULL);
    unsigned long long v = ~0ull;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "eventfd-count: %llx", &v) == 1)
            break;
    fclose(f);
    HOT_ASSERT(v != ~0ull);
    return v;
}

static _Atomic unsigned edge_ran;
static void edge_count(void *arg) { (void)arg; atomic_fetch_add(&edge_ran, 1); }
static void *edge_run(void *loop)
{
    HOT_ASSERT(iol_loop_start(loop) == 0);
    return NULL;
}

/* On epoll the waker's eventfd is polled edge-triggered: a wakeup costs
 * no read (the counter keeps what was written), the loop still sleeps
 * with an unread counter (no poll returns for it), every post still wakes
 * it, and the counter is drained once IOL__WAKER_DRAIN_AT writes are owed. */
START_TEST(test_edge_triggered_on_epoll)
{
    /* spin_us -1: every post below meets a sleeping loop. */
    iol_loop_config cfg = { .poller = "epoll", .spin_us = -1, .make_current = IOL_CURRENT_NEVER };
    iol_loop *loop;
    ck_assert_int_eq(iol_loop_new(&loop, &cfg), 0);
    ck_assert(loop->waker.edge);
    int fd = iol__waker_fd(&loop->waker);
    atomic_store(&edge_ran, 0);
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, edge_run, loop), 0);
    unsigned rounds = IOL__WAKER_DRAIN_AT + 100;
    uint64_t early = 0;
    for (unsigned i = 0; i < rounds; i++) {
        /* Post only to a sleeping loop, so each post makes one write. */
        while (atomic_load(&loop->waker.state) != 1u)
            sched_yield();
        ck_assert_int_eq(iol_loop_add_callback(loop, edge_count, NULL), 0);
        while (atomic_load(&edge_ran) != i + 1)
            sched_yield();
        if (i == 9)
            early = eventfd_count(fd);
    }
    /* Ten writes, not read (a level-triggered waker would have read each). */
    ck_assert_uint_ge(early, 5);
    /* Asleep with the counter unread: it makes no poll return. */
    while (atomic_load(&loop->waker.state) != 1u)
        sched_yield();
    ck_assert_uint_gt(eventfd_count(fd), 0);
    iol_loop_stats a, b;
    ck_assert_int_eq(iol_loop_get_stats(loop, &a, sizeof a), 0);
    usleep(50000);
    ck_assert_int_eq(iol_loop_get_stats(loop, &b, sizeof b), 0);
    ck_assert_uint_le(b.iterations - a.iterations, 1);
    /* Drained on the way: the counter never reached the drain mark twice. */
    ck_assert_uint_ge(iol__waker_writes(&loop->waker), rounds - 10);
    ck_assert_uint_lt(eventfd_count(fd), IOL__WAKER_DRAIN_AT);
    ck_assert_int_eq(iol_loop_stop(loop), 0);
    pthread_join(th, NULL);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
}
END_TEST

static iol__waker *sig_w;
static volatile sig_atomic_t sig_errno_kept;

static void on_sigusr2(int signo)
{
    (void)signo;
    int saved = errno;
    errno = 77;
    iol__waker_wake(sig_w);
    sig_errno_kept = errno == 77;
    errno = saved;
}

START_TEST(test_wake_from_signal_handler)
{
    iol__waker w;
    ck_assert_int_eq(iol__waker_init(&w), 0);
    sig_w = &w;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigusr2;
    sigemptyset(&sa.sa_mask);
    ck_assert_int_eq(sigaction(SIGUSR2, &sa, NULL), 0);

    raise(SIGUSR2); /* awake: no write */
    ck_assert_uint_eq(iol__waker_writes(&w), 0);
    iol__waker_prepare_sleep(&w);
    raise(SIGUSR2);
    raise(SIGUSR2);
    ck_assert_uint_eq(iol__waker_writes(&w), 1);
    ck_assert(sig_errno_kept);
    struct pollfd p = { .fd = iol__waker_fd(&w), .events = POLLIN };
    ck_assert_int_eq(poll(&p, 1, -1), 1);
    iol__waker_finish_sleep(&w);
    ck_assert(!readable(&w));
    iol__waker_destroy(&w);
}
END_TEST

/* ---- the lost-wakeup hunter ------------------------------------------ */

/* One item at a time: the producer posts, wakes, and waits for the ack; the
 * consumer checks, announces its sleep, re-checks and polls with no timeout.
 * A lost wakeup leaves the consumer in poll(-1) for good: the tcase times
 * out. Random tiny delays on both sides move the race windows around. */

struct hunt {
    iol__waker w;
    iol__cbqueue *q;      /* NULL: the "queue" is the counter `posted` */
    _Atomic uint64_t posted;
    _Atomic uint64_t acked;
    uint64_t n;
    uint64_t sleeps, polls;
};

static void item_cb(void *arg)
{
    struct hunt *h = arg;
    /* relaxed: only the consumer thread writes posted's mirror here. */
    uint64_t a = atomic_load_explicit(&h->acked, memory_order_relaxed);
    /* release: the producer's acquire wait sees the ack. */
    atomic_store_explicit(&h->acked, a + 1, memory_order_release);
}

/* Consumer: true if there was work (and it was done). */
static bool hunt_consume(struct hunt *h, uint64_t *seen)
{
    if (h->q) {
        iol__cbbatch b;
        if (!iol__cbqueue_take(h->q, &b))
            return false;
        iol_callback_fn fn;
        void *arg;
        while (iol__cbbatch_next(&b, &fn, &arg))
            fn(arg);
        return true;
    }
    /* acquire: pairs with the producer's release store of posted. */
    uint64_t p = atomic_load_explicit(&h->posted, memory_order_acquire);
    if (p == *seen)
        return false;
    HOT_ASSERT(p == *seen + 1);
    *seen = p;
    item_cb(h);
    return true;
}

static bool hunt_has_work(struct hunt *h, uint64_t seen)
{
    if (h->q)
        return !iol__cbqueue_empty(h->q);
    /* relaxed: ordered after prepare_sleep's seq_cst fence. */
    return atomic_load_explicit(&h->posted, memory_order_relaxed) != seen;
}

static void *hunt_consumer(void *p)
{
    struct hunt *h = p;
    uint32_t rng = 0x9e3779b9u;
    uint64_t seen = 0;
    /* relaxed: the consumer itself is the only writer of acked. */
    while (atomic_load_explicit(&h->acked, memory_order_relaxed) < h->n) {
        if (hunt_consume(h, &seen))
            continue;
        iol_test_tiny_delay(&rng);
        iol__waker_prepare_sleep(&h->w);
        iol_test_tiny_delay(&rng);
        struct pollfd pfd = { .fd = iol__waker_fd(&h->w), .events = POLLIN };
        int timeout = hunt_has_work(h, seen) ? 0 : -1;
        if (timeout < 0)
            h->sleeps++;
        int r = poll(&pfd, 1, timeout);
        HOT_ASSERT(r >= 0 || errno == EINTR);
        h->polls++;
        iol__waker_finish_sleep(&h->w);
    }
    return NULL;
}

static void run_hunt(bool with_queue)
{
    static struct hunt h; /* big enough to keep off the stack; one per fork */
    memset(&h, 0, sizeof h);
    ck_assert_int_eq(iol__waker_init(&h.w), 0);
    if (with_queue)
        ck_assert_int_eq(iol__cbqueue_new(&h.q, 0), 0);
    h.n = iol_test_scaled(100000, 2000);
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, hunt_consumer, &h), 0);
    uint32_t rng = 0x12345678u;
    for (uint64_t i = 1; i <= h.n; i++) {
        iol_test_tiny_delay(&rng);
        if (with_queue) {
            /* The push's seq_cst tail exchange lets us skip wake's fence. */
            HOT_ASSERT(iol__cbqueue_push(h.q, item_cb, &h) == 0);
            iol__waker_wake_after_push(&h.w);
        } else {
            /* release only (not seq_cst): wake's own fence must order it. */
            atomic_store_explicit(&h.posted, i, memory_order_release);
            iol__waker_wake(&h.w);
        }
        /* acquire: pairs with the consumer's release ack. */
        while (atomic_load_explicit(&h.acked, memory_order_acquire) < i)
            sched_yield();
    }
    pthread_join(th, NULL);
    /* At most one write per sleep (polls include the timeout-0 ones). */
    ck_assert_uint_le(iol__waker_writes(&h.w), h.polls);
    ck_assert_uint_gt(h.polls, 0);
    if (h.q)
        iol__cbqueue_free(h.q);
    iol__waker_destroy(&h.w);
}

START_TEST(test_lost_wakeup_hunter_flag)
{
    run_hunt(false);
}
END_TEST

START_TEST(test_lost_wakeup_hunter_queue)
{
    run_hunt(true);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("waker");
    TCase *tc = iol_test_tcase("basic", 10);
    tcase_add_test(tc, test_no_write_when_awake);
    tcase_add_test(tc, test_one_write_per_sleep);
    tcase_add_test(tc, test_late_write_is_drained);
    tcase_add_test(tc, test_wake_from_signal_handler);
    suite_add_tcase(s, tc);

    tc = iol_test_tcase("loop", 120);
    tcase_add_test(tc, test_edge_triggered_on_epoll);
    suite_add_tcase(s, tc);

    tc = iol_test_tcase("hunter", 120);
    tcase_add_test(tc, test_lost_wakeup_hunter_flag);
    tcase_add_test(tc, test_lost_wakeup_hunter_queue);
    suite_add_tcase(s, tc);
    return iol_test_run(s);
}
