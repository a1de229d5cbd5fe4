/* Embedding: a plain poll() loop drives an ioloop through its backend fd,
 * run_once and backend_timeout, and sees timeouts, fd handlers, posts
 * from other threads (to a loop whose driver sleeps in poll), callbacks'
 * own posts and signals all run; run_once's own timeout; the pollers that
 * cannot be embedded say so. */
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

#include "ioloop.h"
#include "testutil.h"

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

typedef struct world {
    iol_loop *loop;
    int pipe[2];
    int timeouts, handler_reads, self_posts, signals;
    _Atomic int remote;
    int remote_want;
    int outer_timeouts_without_deadline; /* a poll that slept its full cap with no deadline: a lost wakeup */
} world;

static void on_timeout(void *arg) { ((world *)arg)->timeouts++; }
static void on_remote(void *arg) { atomic_fetch_add(&((world *)arg)->remote, 1); }

static void self_post_chain(void *arg)
{
    world *w = arg;
    /* Posted from a callback: only backend_timeout's answer (0) keeps
     * the driver from sleeping on it. */
    if (++w->self_posts < 10)
        ck_assert_int_eq(iol_loop_add_callback(w->loop, self_post_chain, w), 0);
}

static void on_pipe(int fd, unsigned events, void *arg)
{
    (void)events;
    world *w = arg;
    char c;
    ck_assert_int_eq(read(fd, &c, 1), 1);
    w->handler_reads++;
}

static void on_usr1(int signo, void *arg)
{
    (void)signo;
    ((world *)arg)->signals++;
}

/* The fd and the signal first; then posts alone, with gaps in which the
 * driver falls asleep in poll(): nothing but the post's wakeup can end
 * that sleep, so a lost one shows as a poll that timed out without a
 * deadline. */
static void *producer(void *arg)
{
    world *w = arg;
    ck_assert_int_eq(write(w->pipe[1], "x", 1), 1);
    sleep_ms(5);
    ck_assert_int_eq(write(w->pipe[1], "y", 1), 1);
    kill(getpid(), SIGUSR1);
    for (int i = 0; i < w->remote_want; i++) {
        if (i % 10 == 0)
            sleep_ms(2);
        ck_assert_int_eq(iol_loop_add_callback(w->loop, on_remote, w), 0);
    }
    return NULL;
}

static bool all_done(const world *w)
{
    return w->timeouts == 3 && w->handler_reads == 2 && w->self_posts == 10 && w->signals >= 1 &&
           atomic_load(&w->remote) == w->remote_want;
}

START_TEST(test_poll_drives_loop)
{
    world w = { .remote_want = (int)iol_test_scaled(300, 30) };
    ck_assert_int_eq(iol_loop_new(&w.loop, &(iol_loop_config){ .poller = "epoll" }), 0);
    ck_assert_int_eq(pipe(w.pipe), 0);
    ck_assert_int_eq(iol_loop_add_handler(w.loop, w.pipe[0], IOL_READ, on_pipe, &w), 0);
    ck_assert_int_eq(iol_loop_add_signal(w.loop, SIGUSR1, on_usr1, &w), 0);
    for (int i = 1; i <= 3; i++)
        ck_assert_int_eq(iol_loop_call_later(w.loop, 0.01 * i, on_timeout, &w, NULL), 0);
    ck_assert_int_eq(iol_loop_add_callback(w.loop, self_post_chain, &w), 0);
    int fd = iol_loop_backend_fd(w.loop);
    ck_assert_int_ge(fd, 0);

    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, producer, &w), 0);
    double deadline = iol_test_now() + 20;
    while (!all_done(&w) && iol_test_now() < deadline) {
        double wait;
        ck_assert_int_eq(iol_loop_backend_timeout(w.loop, &wait), 0);
        struct pollfd p = { .fd = fd, .events = POLLIN };
        int cap_ms = iol_test_under_valgrind() ? 10000 : 2000; /* far beyond any gap of the producer */
        int ms = wait < 0 ? cap_ms : (int)ceil(wait * 1000);
        int n = poll(&p, 1, ms);
        ck_assert_int_ge(n, 0);
        if (n == 0 && wait < 0)
            w.outer_timeouts_without_deadline++;
        ck_assert_int_eq(iol_loop_run_once(w.loop, 0), 0);
    }
    pthread_join(t, NULL);
    ck_assert_msg(all_done(&w), "timeouts %d reads %d self %d signals %d remote %d/%d", w.timeouts,
                  w.handler_reads, w.self_posts, w.signals, atomic_load(&w.remote), w.remote_want);
    ck_assert_int_eq(w.outer_timeouts_without_deadline, 0);
    iol_loop_stats st;
    ck_assert_int_eq(iol_loop_get_stats(w.loop, &st, sizeof st), 0);
    ck_assert_uint_ge(st.wakeups, 1);
    ck_assert_int_eq(iol_loop_remove_handler(w.loop, w.pipe[0]), 0);
    close(w.pipe[0]);
    close(w.pipe[1]);
    ck_assert_int_eq(iol_loop_close(w.loop, false), 0);
}
END_TEST

static void *post_later(void *arg)
{
    sleep_ms(30);
    ck_assert_int_eq(iol_loop_add_callback(arg, on_remote, &(world){ 0 }), 0);
    return NULL;
}

static void stop_self(void *arg) { iol_loop_stop(arg); }
static void try_nested(void *arg) { ck_assert_int_eq(iol_loop_run_once(arg, 0), -EBUSY); }

/* run_once's timeout bounds its poll; a post ends the wait early; a stop
 * request ends an iteration before its poll. */
START_TEST(test_run_once_timeout)
{
    iol_loop *loop;
    ck_assert_int_eq(iol_loop_new(&loop, NULL), 0);
    double t0 = iol_test_now();
    ck_assert_int_eq(iol_loop_run_once(loop, 0.05), 0);
    ck_assert_double_ge(iol_test_now() - t0, 0.04);

    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, post_later, loop), 0);
    t0 = iol_test_now();
    ck_assert_int_eq(iol_loop_run_once(loop, 30), 0); /* woken by the post */
    pthread_join(t, NULL);
    ck_assert_double_lt(iol_test_now() - t0, 20);

    ck_assert_int_eq(iol_loop_add_callback(loop, try_nested, loop), 0);
    ck_assert_int_eq(iol_loop_add_callback(loop, stop_self, loop), 0);
    t0 = iol_test_now();
    ck_assert_int_eq(iol_loop_run_once(loop, 30), 0); /* stopped before the poll */
    ck_assert_double_lt(iol_test_now() - t0, 20);
    double wait;
    ck_assert_int_eq(iol_loop_backend_timeout(loop, &wait), 0);
    ck_assert(wait == -1);
    ck_assert_int_eq(iol_loop_call_later(loop, 5, stop_self, loop, NULL), 0);
    ck_assert_int_eq(iol_loop_backend_timeout(loop, &wait), 0);
    ck_assert(wait > 4 && wait <= 5.01);
    ck_assert_int_eq(iol_loop_add_callback(loop, stop_self, loop), 0);
    ck_assert_int_eq(iol_loop_backend_timeout(loop, &wait), 0);
    ck_assert(wait == 0);
    /* And start still works after being embedded. */
    ck_assert_int_eq(iol_loop_start(loop), 0);
    ck_assert_int_eq(iol_loop_close(loop, false), 1); /* the 5 s timeout */
}
END_TEST

static void try_backend_timeout(void *arg)
{
    double w;
    ck_assert_int_eq(iol_loop_backend_timeout(arg, &w), -EBUSY);
    iol_loop_stop(arg);
}

START_TEST(test_pollers_and_errors)
{
    static const char *const no_fd[] = { "poll", "select" };
    for (size_t i = 0; i < 2; i++) {
        iol_loop *l;
        ck_assert_int_eq(iol_loop_new(&l, &(iol_loop_config){ .poller = no_fd[i] }), 0);
        ck_assert_int_eq(iol_loop_backend_fd(l), -ENOTSUP);
        ck_assert_int_eq(iol_loop_run_once(l, 0), 0); /* run_once itself works everywhere */
        ck_assert_int_eq(iol_loop_close(l, false), 0);
    }
    iol_loop *l;
    ck_assert_int_eq(iol_loop_new(&l, &(iol_loop_config){ .poller = "epoll" }), 0);
    ck_assert_int_eq(iol_loop_run_once(l, NAN), -EINVAL);
    ck_assert_int_eq(iol_loop_backend_timeout(l, NULL), -EINVAL);
    ck_assert_int_eq(iol_loop_add_callback(l, try_backend_timeout, l), 0);
    ck_assert_int_eq(iol_loop_start(l), 0);
    iol_loop_ref(l); /* keep the memory: a closed loop answers -ESHUTDOWN */
    ck_assert_int_eq(iol_loop_close(l, false), 0);
    ck_assert_int_eq(iol_loop_backend_fd(l), -ESHUTDOWN);
    ck_assert_int_eq(iol_loop_run_once(l, 0), -ESHUTDOWN);
    double w;
    ck_assert_int_eq(iol_loop_backend_timeout(l, &w), -ESHUTDOWN);
    iol_loop_unref(l);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("embed");
    TCase *tc = iol_test_tcase("embed", 60);
    tcase_add_test(tc, test_poll_drives_loop);
    tcase_add_test(tc, test_run_once_timeout);
    tcase_add_test(tc, test_pollers_and_errors);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return iol_test_run(suite()); }
