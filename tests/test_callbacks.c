/* Callbacks: ordering, next-iteration rule, other threads, signals, stop. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "ioloop.h"
#include "testutil.h"

static iol_loop *new_loop(void)
{
    iol_loop *loop = NULL;
    ck_assert_int_eq(iol_loop_new(&loop, NULL), 0);
    return loop;
}

static void stop_cb(void *arg) { iol_loop_stop(arg); }

/* ---- order and the next-iteration rule */
static int order[16];
static int norder;
static void record(void *arg) { order[norder++] = (int)(intptr_t)arg; }

START_TEST(test_fifo_order)
{
    iol_loop *loop = new_loop();
    norder = 0;
    for (int i = 0; i < 10; i++)
        ck_assert_int_eq(iol_loop_add_callback(loop, record, (void *)(intptr_t)i), 0);
    ck_assert_int_eq(iol_loop_add_callback(loop, stop_cb, loop), 0);
    ck_assert_int_eq(iol_loop_start(loop), 0);
    ck_assert_int_eq(norder, 10);
    for (int i = 0; i < 10; i++)
        ck_assert_int_eq(order[i], i);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
}
END_TEST

/* A callback that re-adds itself must not starve I/O: a ready fd gets its
 * handler called while the callback keeps re-queuing. */
static int spins;
static int io_seen;
static iol_loop *spin_loop;
static void spin_cb(void *arg)
{
    (void)arg;
    spins++;
    if (io_seen || spins > 100000) {
        iol_loop_stop(spin_loop);
        return;
    }
    iol_loop_add_callback(spin_loop, spin_cb, NULL);
}
static void on_readable(int fd, unsigned events, void *arg)
{
    (void)fd;
    (void)arg;
    if (events & IOL_READ)
        io_seen = spins;
}

START_TEST(test_no_starvation)
{
    iol_loop *loop = spin_loop = new_loop();
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    ck_assert_int_eq(write(sv[1], "x", 1), 1);
    ck_assert_int_eq(iol_loop_add_handler(loop, sv[0], IOL_READ, on_readable, NULL), 0);
    spins = io_seen = 0;
    iol_loop_add_callback(loop, spin_cb, NULL);
    ck_assert_int_eq(iol_loop_start(loop), 0);
    /* The handler ran after at most a couple of iterations. */
    ck_assert_int_gt(io_seen, 0);
    ck_assert_int_le(io_seen, 3);
    iol_loop_close(loop, true);
    close(sv[1]);
}
END_TEST

/* Callbacks queued during a batch run in the next iteration, and stop lets
 * the current batch finish; what the batch queued waits for next start. */
static int batch_a, batch_b, batch_c;
static void cb_c(void *arg) { (void)arg; batch_c++; }
static void cb_a(void *arg)
{
    batch_a++;
    iol_loop_stop(arg);
    iol_loop_add_callback(arg, cb_c, NULL);
}
static void cb_b(void *arg) { (void)arg; batch_b++; }

START_TEST(test_stop_finishes_batch)
{
    iol_loop *loop = new_loop();
    batch_a = batch_b = batch_c = 0;
    iol_loop_add_callback(loop, cb_a, loop);
    iol_loop_add_callback(loop, cb_b, NULL);
    ck_assert_int_eq(iol_loop_start(loop), 0);
    ck_assert_int_eq(batch_a, 1);
    ck_assert_int_eq(batch_b, 1);
    ck_assert_int_eq(batch_c, 0);
    iol_loop_add_callback(loop, stop_cb, loop);
    ck_assert_int_eq(iol_loop_start(loop), 0);
    ck_assert_int_eq(batch_c, 1);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
}
END_TEST

START_TEST(test_stop_before_start)
{
    iol_loop *loop = new_loop();
    batch_b = 0;
    ck_assert_int_eq(iol_loop_stop(loop), 0);
    iol_loop_add_callback(loop, cb_b, NULL);
    ck_assert_int_eq(iol_loop_start(loop), 0);
    ck_assert_int_eq(batch_b, 0); /* returned at once */
    ck_assert(!iol_loop_running(loop));
    iol_loop_add_callback(loop, stop_cb, loop);
    ck_assert_int_eq(iol_loop_start(loop), 0);
    ck_assert_int_eq(batch_b, 1);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
}
END_TEST

static int reentrant_rc;
static void reenter(void *arg)
{
    reentrant_rc = iol_loop_start(arg);
    iol_loop_stop(arg);
}

START_TEST(test_reentrant_start)
{
    iol_loop *loop = new_loop();
    reentrant_rc = 0;
    iol_loop_add_callback(loop, reenter, loop);
    ck_assert_int_eq(iol_loop_start(loop), 0);
    ck_assert_int_eq(reentrant_rc, -EBUSY);
    iol_loop_close(loop, false);
}
END_TEST

/* ---- other threads */
struct producer {
    iol_loop *loop;
    int id;
    int n;
};
static _Atomic int produced_seen;
static int last_seq[4];
static int out_of_order;
static pthread_t loop_thread;
static int wrong_thread;

struct item {
    int producer, seq;
};
static void consume(void *arg)
{
    struct item *it = arg;
    if (!pthread_equal(pthread_self(), loop_thread))
        wrong_thread++;
    if (it->seq != last_seq[it->producer] + 1)
        out_of_order++;
    last_seq[it->producer] = it->seq;
    atomic_fetch_add(&produced_seen, 1);
    free(it);
}

static void *produce(void *arg)
{
    struct producer *p = arg;
    for (int i = 1; i <= p->n; i++) {
        struct item *it = malloc(sizeof *it);
        it->producer = p->id;
        it->seq = i;
        ck_assert_int_eq(iol_loop_add_callback(p->loop, consume, it), 0);
        if (i % 1000 == 0)
            usleep(100);
    }
    return NULL;
}

static void *run_loop(void *arg)
{
    iol_loop_start(arg);
    return NULL;
}

START_TEST(test_from_other_threads)
{
    iol_loop *loop = new_loop();
    int n = (int)iol_test_scaled(50000, 500);
    produced_seen = 0;
    out_of_order = wrong_thread = 0;
    for (int i = 0; i < 4; i++)
        last_seq[i] = 0;
    pthread_t lt, pt[4];
    struct producer ps[4];
    ck_assert_int_eq(pthread_create(&lt, NULL, run_loop, loop), 0);
    loop_thread = lt;
    for (int i = 0; i < 4; i++) {
        ps[i] = (struct producer){ loop, i, n };
        pthread_create(&pt[i], NULL, produce, &ps[i]);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(pt[i], NULL);
    while (atomic_load(&produced_seen) < 4 * n)
        usleep(1000);
    iol_loop_stop(loop);
    pthread_join(lt, NULL);
    ck_assert_int_eq(out_of_order, 0);
    ck_assert_int_eq(wrong_thread, 0);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
}
END_TEST

/* ---- signals */
static iol_loop *signal_loop;
static volatile sig_atomic_t handler_rc = 1;
static int signal_cb_runs;
static void from_signal_cb(void *arg)
{
    (void)arg;
    signal_cb_runs++;
    iol_loop_stop(signal_loop);
}
static void on_sigusr1(int signo)
{
    (void)signo;
    handler_rc = iol_loop_add_callback_from_signal(signal_loop, from_signal_cb, NULL);
}
static void raise_later(void *arg)
{
    (void)arg;
    raise(SIGUSR1);
}

START_TEST(test_from_signal_handler)
{
    signal_loop = new_loop();
    signal(SIGUSR1, on_sigusr1);
    signal_cb_runs = 0;
    iol_loop_call_later(signal_loop, 0.01, raise_later, NULL, NULL);
    ck_assert_int_eq(iol_loop_start(signal_loop), 0);
    ck_assert_int_eq(handler_rc, 0);
    ck_assert_int_eq(signal_cb_runs, 1);
    ck_assert_int_eq(iol_loop_close(signal_loop, false), 0);
}
END_TEST

static void nop(void *arg) { (void)arg; }

START_TEST(test_signal_reserve_exhaustion)
{
    iol_loop *loop;
    iol_loop_config cfg = { .signal_reserve = 4 };
    ck_assert_int_eq(iol_loop_new(&loop, &cfg), 0);
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(iol_loop_add_callback_from_signal(loop, nop, NULL), 0);
    ck_assert_int_eq(iol_loop_add_callback_from_signal(loop, nop, NULL), -EAGAIN);
    iol_loop_add_callback(loop, stop_cb, loop);
    ck_assert_int_eq(iol_loop_start(loop), 0);
    /* Entries are free again once their callbacks ran. */
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(iol_loop_add_callback_from_signal(loop, nop, NULL), 0);
    /* close drops (and counts) the 4 pending signal callbacks. */
    ck_assert_int_eq(iol_loop_close(loop, false), 4);
}
END_TEST

/* A stop from another thread wakes a loop sleeping with no timeouts. */
static void *stop_later(void *arg)
{
    usleep(20000);
    iol_loop_stop(arg);
    return NULL;
}

START_TEST(test_stop_from_other_thread_wakes)
{
    iol_loop *loop = new_loop();
    pthread_t t;
    pthread_create(&t, NULL, stop_later, loop);
    ck_assert_int_eq(iol_loop_start(loop), 0);
    pthread_join(t, NULL);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
}
END_TEST

/* ------------------------------------------------------------ queue_limit */

static _Atomic int limit_ran;

static void count_limit(void *arg)
{
    (void)arg;
    atomic_fetch_add(&limit_ran, 1);
}

/* A callback on the loop's own thread posts 3 × the limit to its loop: a
 * loop never refuses its own work. */
static void post_own_flood(void *arg)
{
    iol_loop *loop = arg;
    for (int i = 0; i < 300; i++)
        ck_assert_int_eq(iol_loop_add_callback(loop, count_limit, NULL), 0);
}

START_TEST(test_queue_limit)
{
    iol_loop *loop;
    ck_assert_int_eq(iol_loop_new(&loop, &(iol_loop_config){.queue_limit = 100}), 0);
    /* Not running: every thread is foreign. 100 get in, then -EAGAIN. */
    int ok = 0, refused = 0;
    for (int i = 0; i < 150; i++) {
        int r = iol_loop_add_callback(loop, count_limit, NULL);
        ck_assert(r == 0 || r == -EAGAIN);
        r == 0 ? ok++ : refused++;
    }
    ck_assert_int_eq(ok, 100);
    ck_assert_int_eq(refused, 50);
    /* One iteration runs them; the room comes back. */
    ck_assert_int_eq(iol_loop_run_once(loop, 0), 0);
    ck_assert_int_eq(atomic_load(&limit_ran), 100);
    for (int i = 0; i < 100; i++)
        ck_assert_int_eq(iol_loop_add_callback(loop, count_limit, NULL), 0);
    ck_assert_int_eq(iol_loop_add_callback(loop, count_limit, NULL), -EAGAIN);
    ck_assert_int_eq(iol_loop_run_once(loop, 0), 0);
    ck_assert_int_eq(atomic_load(&limit_ran), 200);
    /* The loop's own thread, while it runs, is never refused. */
    ck_assert_int_eq(iol_loop_add_callback(loop, post_own_flood, loop), 0);
    for (int i = 0; i < 3 && atomic_load(&limit_ran) < 500; i++)
        ck_assert_int_eq(iol_loop_run_once(loop, 0), 0);
    ck_assert_int_eq(atomic_load(&limit_ran), 500);
    /* Without a limit nothing is refused. */
    iol_loop *free_loop;
    ck_assert_int_eq(iol_loop_new(&free_loop, &(iol_loop_config){.make_current = IOL_CURRENT_NEVER}), 0);
    for (int i = 0; i < 1000; i++)
        ck_assert_int_eq(iol_loop_add_callback(free_loop, count_limit, NULL), 0);
    ck_assert_int_eq(iol_loop_close(free_loop, false), 1000); /* the dropped ones */
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("callbacks");
    TCase *tc = iol_test_tcase("core", 30);
    tcase_add_test(tc, test_fifo_order);
    tcase_add_test(tc, test_no_starvation);
    tcase_add_test(tc, test_stop_finishes_batch);
    tcase_add_test(tc, test_stop_before_start);
    tcase_add_test(tc, test_reentrant_start);
    tcase_add_test(tc, test_queue_limit);
    suite_add_tcase(s, tc);
    TCase *threads = iol_test_tcase("threads", 60);
    tcase_add_test(threads, test_from_other_threads);
    tcase_add_test(threads, test_stop_from_other_thread_wakes);
    suite_add_tcase(s, threads);
    TCase *sig = iol_test_tcase("signals", 30);
    tcase_add_test(sig, test_from_signal_handler);
    tcase_add_test(sig, test_signal_reserve_exhaustion);
    suite_add_tcase(s, sig);
    return iol_test_run(s);
}
