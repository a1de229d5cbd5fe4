/* Lifecycle: what closing, stopping and freeing do with work still on the
 * loop — streams at loop close, a loop that loses its references while it
 * runs, PeriodicCallback against a foreign thread during its callback,
 * run_sync racing a start elsewhere, a waker cancelled mid-wakeup. */
#include "ioloop.h"
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char *const pollers[] = {"epoll", "poll", "select",
#ifdef IOL_HAVE_ZMQ
                                      "zmq",
#endif
#ifdef IOL_HAVE_URING
                                      "uring",
#endif
};

static int count_open_fds(void)
{
    int n = iol_test_dir_entries("/proc/self/fd");
    ck_assert_int_gt(n, 0);
    return n - 1; /* the DIR's own fd */
}

static bool fd_open(int fd)
{
    return fcntl(fd, F_GETFD) >= 0;
}

static void make_pair(int fds[2])
{
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
}

/* The peer of a closed stream reads EOF (not EAGAIN: the fd was closed). */
static void assert_peer_sees_eof(int peer)
{
    char c;
    ck_assert_int_eq(fcntl(peer, F_SETFL, O_NONBLOCK), 0);
    ssize_t n = read(peer, &c, 1);
    ck_assert_msg(n == 0, "peer read %zd (errno %d), want EOF", n, n < 0 ? errno : 0);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void stop_cb(void *arg)
{
    iol_loop_stop(arg);
}

/* Runs loop for one iteration's worth of callbacks. */
static void run_once(iol_loop *loop)
{
    ck_assert_int_eq(iol_loop_add_callback(loop, stop_cb, loop), 0);
    ck_assert_int_eq(iol_loop_start(loop), 0);
}

/* ------------------------------------------------ streams at loop close */

typedef struct stream_record {
    int read_calls, read_status;
    int close_calls;
    iol_stream *closed_stream;
    pthread_t close_thread;
    int pipe_in_close[2]; /* opened by the close callback, may reuse a number */
    bool open_pipe;
} stream_record;

static void rec_read(iol_stream *s, const char *data, size_t len, int status, void *arg)
{
    (void)s, (void)data, (void)len;
    stream_record *r = arg;
    r->read_calls++;
    r->read_status = status;
}

static void rec_close(iol_stream *s, void *arg)
{
    stream_record *r = arg;
    r->close_calls++;
    r->closed_stream = s;
    r->close_thread = pthread_self();
    /* The stream is gone from the caller's point of view after this: any
     * stream call on it now must be refused, not crash. */
    ck_assert_int_eq(iol_stream_write(s, "x", 1, NULL, NULL), -EPIPE);
    ck_assert_int_eq(iol_stream_close(s), -EALREADY);
    if (r->open_pipe)
        ck_assert_int_eq(pipe2(r->pipe_in_close, O_CLOEXEC), 0);
}

/* Three streams (a read pending, idle and unregistered, closed but not yet
 * finished) on a loop closed with all_fds: every stream is released — its
 * fd closed by itself, its callbacks run, its loop reference dropped (the
 * waker's eventfd closes with the loop) — and an fd the close callback
 * opens, which may reuse a stream's number, survives the all_fds close. */
START_TEST(test_loop_close_releases_streams)
{
    const char *poller = pollers[_i];
    int baseline = count_open_fds();
    iol_loop *loop;
    iol_loop_config cfg = {.poller = poller, .make_current = IOL_CURRENT_NEVER};
    ck_assert_int_eq(iol_loop_new(&loop, &cfg), 0);

    int p1[2], p2[2], p3[2];
    make_pair(p1);
    make_pair(p2);
    make_pair(p3);
    stream_record r1 = {.open_pipe = true}, r3 = {0};
    iol_stream *s1, *s2, *s3;
    ck_assert_int_eq(iol_stream_new(&s1, loop, p1[0], 0), 0);
    ck_assert_int_eq(iol_stream_new(&s2, loop, p2[0], 0), 0);
    ck_assert_int_eq(iol_stream_new(&s3, loop, p3[0], 0), 0);
    ck_assert_int_eq(iol_stream_read_until(s1, "\n", rec_read, &r1), 0);
    ck_assert_int_eq(iol_stream_set_close_callback(s1, rec_close, &r1), 0);
    ck_assert_int_eq(iol_stream_set_close_callback(s3, rec_close, &r3), 0);
    run_once(loop); /* s2 asks for nothing: it unregisters */
    ck_assert_int_eq(iol_stream_close(s3), 0); /* finishes in a callback never run */

    int dropped = iol_loop_close(loop, true);
    ck_assert_int_ge(dropped, 0);

    ck_assert_int_eq(r1.read_calls, 1);
    ck_assert_int_eq(r1.read_status, -ESHUTDOWN);
    ck_assert_int_eq(r1.close_calls, 1);
    ck_assert_ptr_eq(r1.closed_stream, s1);
    ck_assert_int_eq(r3.close_calls, 1);
    ck_assert_int_eq(r3.read_calls, 0);
    /* The pipe made in the close callback was not closed as a "handler fd". */
    ck_assert(fd_open(r1.pipe_in_close[0]));
    ck_assert(fd_open(r1.pipe_in_close[1]));
    close(r1.pipe_in_close[0]);
    close(r1.pipe_in_close[1]);

    assert_peer_sees_eof(p1[1]);
    assert_peer_sees_eof(p2[1]);
    assert_peer_sees_eof(p3[1]);
    close(p1[1]);
    close(p2[1]);
    close(p3[1]);
    /* Nothing left: no stream fd, no eventfd kept by a stream's reference. */
    ck_assert_int_eq(count_open_fds(), baseline);
}
END_TEST

/* close(false): streams are released the same way (their fds are theirs). */
START_TEST(test_loop_close_without_all_fds_releases_streams)
{
    int baseline = count_open_fds();
    iol_loop *loop;
    ck_assert_int_eq(iol_loop_new(&loop, NULL), 0);
    int p[2];
    make_pair(p);
    iol_stream *s;
    stream_record r = {0};
    ck_assert_int_eq(iol_stream_new(&s, loop, p[0], 0), 0);
    ck_assert_int_eq(iol_stream_set_close_callback(s, rec_close, &r), 0);
    ck_assert_int_eq(iol_stream_write(s, "hello", 5, NULL, NULL), 0);
    iol_loop_ref(loop); /* to try a stream on the closed loop below */
    ck_assert_int_ge(iol_loop_close(loop, false), 0);
    ck_assert_int_eq(r.close_calls, 1);
    char buf[8];
    ck_assert_int_eq(read(p[1], buf, sizeof buf), 5); /* written before the close */
    assert_peer_sees_eof(p[1]);
    close(p[1]);
    /* A stream cannot be made on a closed loop. */
    make_pair(p);
    ck_assert_int_eq(iol_stream_new(&s, loop, p[0], 0), -ESHUTDOWN);
    close(p[0]);
    close(p[1]);
    iol_loop_unref(loop);
    ck_assert_int_eq(count_open_fds(), baseline);
}
END_TEST

/* iol_runtime_free closes the worker loops (on their threads): streams the
 * application left on them are released there, close callbacks included. */
static stream_record rt_rec;
static int rt_peer = -1;

static void rt_on_start(iol_loop *loop, unsigned index, void *arg)
{
    (void)index, (void)arg;
    int p[2];
    make_pair(p);
    rt_peer = p[1];
    iol_stream *s;
    ck_assert_int_eq(iol_stream_new(&s, loop, p[0], 0), 0);
    ck_assert_int_eq(iol_stream_read_bytes(s, 4, false, rec_read, &rt_rec), 0);
    ck_assert_int_eq(iol_stream_set_close_callback(s, rec_close, &rt_rec), 0);
}

START_TEST(test_runtime_free_releases_streams)
{
    int baseline = count_open_fds();
    iol_runtime *rt;
    /* No drain: the stream is left on the loop on purpose. */
    iol_runtime_config cfg = {.workers = 1, .on_start = rt_on_start, .drain_timeout = -1};
    ck_assert_int_eq(iol_runtime_new(&rt, &cfg), 0);
    ck_assert_int_eq(iol_runtime_start(rt), 0);
    iol_runtime_free(rt);
    ck_assert_int_eq(rt_rec.close_calls, 1);
    ck_assert_int_eq(rt_rec.read_calls, 1);
    ck_assert_int_eq(rt_rec.read_status, -ESHUTDOWN);
    ck_assert(!pthread_equal(rt_rec.close_thread, pthread_self())); /* on the worker */
    assert_peer_sees_eof(rt_peer);
    close(rt_peer);
    ck_assert_int_eq(count_open_fds(), baseline);
}
END_TEST

/* ------------------------------------------ a loop freed while it runs */

static void *run_thread(void *arg)
{
    iol_loop *loop = arg;
    return (void *)(intptr_t)iol_loop_start(loop);
}

static void slow_then_stop(void *arg)
{
    sleep_ms(50); /* the other thread drops its references meanwhile */
    iol_loop_stop(arg);
}

static void wait_running(iol_loop *loop)
{
    double deadline = iol_test_now() + 30;
    while (!iol_loop_running(loop)) {
        ck_assert(iol_test_now() < deadline);
        sleep_ms(1);
    }
}

/* The instance runs on another thread; this thread clears the instance
 * (its only reference). The run holds a reference of its own, so the loop
 * lives until the run ends, and is then freed by the runner. */
START_TEST(test_clear_instance_while_running)
{
    int baseline = count_open_fds();
    iol_loop *loop = iol_loop_instance();
    ck_assert_ptr_nonnull(loop);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, run_thread, loop), 0);
    wait_running(loop);
    ck_assert_int_eq(iol_loop_add_callback(loop, slow_then_stop, loop), 0);
    iol_loop_clear_instance();
    ck_assert(!iol_loop_initialized());
    void *rc;
    ck_assert_int_eq(pthread_join(t, &rc), 0);
    ck_assert_int_eq((int)(intptr_t)rc, 0);
    ck_assert_int_eq(count_open_fds(), baseline); /* freed by the runner */
}
END_TEST

/* "stop, then unref" from another thread, over many rounds so the unref
 * lands anywhere in the runner's last iteration. */
START_TEST(test_stop_then_unref_from_another_thread)
{
    int rounds = (int)iol_test_scaled(200, 20);
    int baseline = count_open_fds();
    for (int i = 0; i < rounds; i++) {
        iol_loop *loop;
        iol_loop_config cfg = {.make_current = IOL_CURRENT_NEVER};
        ck_assert_int_eq(iol_loop_new(&loop, &cfg), 0);
        pthread_t t;
        ck_assert_int_eq(pthread_create(&t, NULL, run_thread, loop), 0);
        wait_running(loop);
        ck_assert_int_eq(iol_loop_stop(loop), 0);
        iol_loop_unref(loop); /* the creator's reference, the last but the run's */
        void *rc;
        ck_assert_int_eq(pthread_join(t, &rc), 0);
        ck_assert_int_eq((int)(intptr_t)rc, 0);
    }
    ck_assert_int_eq(count_open_fds(), baseline);
}
END_TEST

static void noop_handler(int fd, unsigned events, void *arg)
{
    (void)fd, (void)events, (void)arg;
}

/* A thread that waited for !running may then drive the loop: it must see
 * everything the run wrote (TSan proves the ordering). */
static atomic_int touched;
static int run_pair[2]; /* closed after the join: TSan orders fd reuse */

static void touch_handlers(void *arg)
{
    iol_loop *loop = arg;
    make_pair(run_pair);
    ck_assert_int_eq(iol_loop_add_handler(loop, run_pair[0], IOL_READ, noop_handler, NULL), 0);
    ck_assert_int_eq(iol_loop_remove_handler(loop, run_pair[0]), 0);
    /* relaxed: only tells the test the run began; it must order nothing. */
    atomic_store_explicit(&touched, 1, memory_order_relaxed);
    iol_loop_stop(loop);
}

START_TEST(test_running_false_publishes_the_run)
{
    iol_loop *loop;
    iol_loop_config cfg = {.make_current = IOL_CURRENT_NEVER};
    ck_assert_int_eq(iol_loop_new(&loop, &cfg), 0);
    ck_assert_int_eq(iol_loop_add_callback(loop, touch_handlers, loop), 0);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, run_thread, loop), 0);
    /* Wait for the run to start and end without joining (a join would
     * order everything by itself). */
    while (!atomic_load_explicit(&touched, memory_order_relaxed))
        sched_yield();
    while (iol_loop_running(loop))
        sched_yield();
    /* The same fd: the same handler slot the run wrote. */
    ck_assert_int_eq(iol_loop_add_handler(loop, run_pair[0], IOL_READ, noop_handler, NULL), 0);
    ck_assert_int_eq(iol_loop_remove_handler(loop, run_pair[0]), 0);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    close(run_pair[0]);
    close(run_pair[1]);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
}
END_TEST

/* -------------------------- PeriodicCallback against a foreign thread */

typedef struct periodic_story {
    iol_periodic *pc;
    iol_loop *loop;
    atomic_int in_callback;
    atomic_int release;
    int stop_rc;
    int runs;
} periodic_story;

static void periodic_slow(void *arg)
{
    periodic_story *st = arg;
    st->runs++;
    atomic_store(&st->in_callback, 1);
    double deadline = iol_test_now() + 30;
    while (!atomic_load(&st->release) && iol_test_now() < deadline)
        sleep_ms(1);
    atomic_store(&st->in_callback, 0);
    iol_loop_stop(st->loop);
}

static void *periodic_foreign(void *arg)
{
    periodic_story *st = arg;
    double deadline = iol_test_now() + 30;
    while (!atomic_load(&st->in_callback) && iol_test_now() < deadline)
        sleep_ms(1);
    st->stop_rc = iol_periodic_stop(st->pc);
    iol_periodic_free(st->pc); /* refused (logged), never frees under fn */
    atomic_store(&st->release, 1);
    return NULL;
}

static void quiet_log(int level, const char *msg, void *ud)
{
    (void)level, (void)msg, (void)ud;
}

START_TEST(test_periodic_foreign_stop_free_during_callback)
{
    iol_set_log_handler(quiet_log, NULL);
    periodic_story st = {0};
    ck_assert_int_eq(iol_loop_new(&st.loop, NULL), 0);
    ck_assert_int_eq(iol_periodic_new(&st.pc, st.loop, 5, periodic_slow, &st), 0);
    ck_assert_int_eq(iol_periodic_start(st.pc), 0);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, periodic_foreign, &st), 0);
    ck_assert_int_eq(iol_loop_start(st.loop), 0);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    ck_assert_int_eq(st.stop_rc, -EPERM);
    /* Still alive and still scheduled: the refused stop changed nothing. */
    ck_assert(iol_periodic_is_running(st.pc));
    ck_assert_int_eq(iol_periodic_stop(st.pc), 0);
    iol_periodic_free(st.pc);
    ck_assert_int_eq(st.runs, 1);
    ck_assert_int_eq(iol_loop_close(st.loop, false), 0);
    iol_set_log_handler(NULL, NULL);
}
END_TEST

/* ---------------------------------------------- run_sync vs a start elsewhere */

static int resolve_now(iol_loop *loop, iol_future *done, void *arg)
{
    (void)loop, (void)arg;
    return iol_future_set_result(done, NULL);
}

typedef struct race_story {
    iol_loop *loop;
    int rounds;
    pthread_barrier_t go;
} race_story;

static void *starter(void *arg)
{
    race_story *st = arg;
    pthread_barrier_wait(&st->go);
    for (int i = 0; i < st->rounds; i++) {
        if (iol_loop_add_callback(st->loop, stop_cb, st->loop) < 0)
            break;
        int r = iol_loop_start(st->loop);
        ck_assert(r == 0 || r == -EBUSY);
    }
    return NULL;
}

/* run_sync on one thread, start on another: whoever loses gets -EBUSY and
 * leaves nothing on the loop (before, run_sync could lose after queueing
 * its callback and timer, and free their state under the other run). */
START_TEST(test_run_sync_races_start)
{
    race_story st = {.rounds = (int)iol_test_scaled(3000, 100)};
    iol_loop_config cfg = {.make_current = IOL_CURRENT_NEVER};
    ck_assert_int_eq(iol_loop_new(&st.loop, &cfg), 0);
    ck_assert_int_eq(pthread_barrier_init(&st.go, NULL, 2), 0);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, starter, &st), 0);
    int ok = 0, busy = 0, other = 0;
    pthread_barrier_wait(&st.go);
    for (int i = 0; i < st.rounds; i++) {
        int r = iol_loop_run_sync(st.loop, resolve_now, NULL, 5.0, NULL);
        if (r == 0)
            ok++;
        else if (r == -EBUSY)
            busy++;
        else if (r == -ETIMEDOUT) /* the starter's stop ended our run first */
            other++;
        else
            ck_abort_msg("run_sync returned %d", r);
    }
    /* The starter's stop can be taken by one of our runs just before its
     * own start claims the loop: that start then has no stop left and
     * would wait forever. Once our rounds are over, stop whatever it runs
     * until it is done (a stop made between its runs only makes its next
     * start return at once). */
    while (pthread_tryjoin_np(t, NULL) == EBUSY) {
        iol_loop_stop(st.loop);
        sleep_ms(1);
    }
    pthread_barrier_destroy(&st.go);
    ck_assert_int_eq(ok + busy + other, st.rounds);
    ck_assert_int_ge(iol_loop_close(st.loop, false), 0);
}
END_TEST

/* ------------------------------------------- waker cancelled mid-wakeup */

static atomic_int cancelled_cb_ran;

static void mark_ran(void *arg)
{
    atomic_store(&cancelled_cb_ran, 1);
    iol_loop_stop(arg);
}

static void *cancelled_poster(void *arg)
{
    iol_loop *loop = arg;
    /* Deferred cancellation is now pending: the first cancellation point
     * this thread reaches ends it. add_callback must not contain one
     * between winning the wakeup and writing the eventfd. */
    pthread_cancel(pthread_self());
    iol_loop_add_callback(loop, mark_ran, loop);
    pthread_testcancel();
    return NULL;
}

static void on_give_up(void *arg)
{
    iol_loop_stop(arg);
}

START_TEST(test_waker_survives_cancelled_producer)
{
    iol_loop *loop;
    ck_assert_int_eq(iol_loop_new(&loop, NULL), 0);
    /* The loop must be asleep (no timer due soon) when the post comes. */
    iol_timeout give_up;
    ck_assert_int_eq(iol_loop_call_later(loop, 20.0, on_give_up, loop, &give_up), 0);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, run_thread, loop), 0);
    wait_running(loop);
    sleep_ms(50); /* into poll */
    pthread_t p;
    ck_assert_int_eq(pthread_create(&p, NULL, cancelled_poster, loop), 0);
    void *res;
    ck_assert_int_eq(pthread_join(p, &res), 0);
    ck_assert_ptr_eq(res, PTHREAD_CANCELED);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    ck_assert_msg(atomic_load(&cancelled_cb_ran), "the loop slept through the post (no eventfd write)");
    ck_assert_int_eq(iol_loop_remove_timeout(loop, give_up), 0);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
}
END_TEST

static Suite *lifecycle_suite(void)
{
    Suite *s = suite_create("lifecycle");
    TCase *tc = iol_test_tcase("streams_at_close", 30);
    tcase_add_loop_test(tc, test_loop_close_releases_streams, 0, (int)(sizeof pollers / sizeof pollers[0]));
    tcase_add_test(tc, test_loop_close_without_all_fds_releases_streams);
    tcase_add_test(tc, test_runtime_free_releases_streams);
    suite_add_tcase(s, tc);
    tc = iol_test_tcase("freed_while_running", 60);
    tcase_add_test(tc, test_clear_instance_while_running);
    tcase_add_test(tc, test_stop_then_unref_from_another_thread);
    tcase_add_test(tc, test_running_false_publishes_the_run);
    suite_add_tcase(s, tc);
    tc = iol_test_tcase("foreign_threads", 60);
    tcase_add_test(tc, test_periodic_foreign_stop_free_during_callback);
    tcase_add_test(tc, test_run_sync_races_start);
    tcase_add_test(tc, test_waker_survives_cancelled_producer);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return iol_test_run(lifecycle_suite());
}
