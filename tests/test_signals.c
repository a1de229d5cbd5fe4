/* Signal handlers on the loop thread (iol_loop_add_signal): they run with
 * the signal number on the loop's thread, several per signal in order,
 * removal inside a handler, the previous disposition and mask come back,
 * one loop per signal, a delivery to a thread that does not block the
 * signal is forwarded, and the runtime's threads block the usual ones. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "ioloop.h"
#include "testutil.h"

static iol_loop *L;
static char trace[64];
static size_t trace_len;
static pthread_t loop_thread;

static void mark(char c)
{
    if (trace_len < sizeof trace - 1)
        trace[trace_len++] = c;
    trace[trace_len] = '\0';
}

static void setup(void)
{
    ck_assert_int_eq(iol_loop_new(&L, NULL), 0);
    trace_len = 0;
    trace[0] = '\0';
    loop_thread = pthread_self();
}
static void teardown(void) { iol_loop_close(L, false); }

static void raise_usr1(void *arg)
{
    (void)arg;
    kill(getpid(), SIGUSR1); /* process-directed */
}

static void on_signal(int signo, void *arg)
{
    ck_assert(pthread_equal(pthread_self(), loop_thread));
    ck_assert_int_eq(signo, SIGUSR1);
    mark(*(const char *)arg);
}
static void on_signal_stop(int signo, void *arg)
{
    (void)signo, (void)arg;
    mark('s');
    iol_loop_stop(L);
}

START_TEST(test_runs_on_loop_in_order)
{
    ck_assert_int_eq(iol_loop_add_signal(L, SIGUSR1, on_signal, "a"), 0);
    ck_assert_int_eq(iol_loop_add_signal(L, SIGUSR1, on_signal, "b"), 0);
    ck_assert_int_eq(iol_loop_add_signal(L, SIGUSR1, on_signal_stop, NULL), 0);
    ck_assert_int_eq(iol_loop_add_callback(L, raise_usr1, NULL), 0);
    ck_assert_int_eq(iol_loop_start(L), 0);
    ck_assert_str_eq(trace, "abs");
    iol_loop_stats st;
    ck_assert_int_eq(iol_loop_get_stats(L, &st, sizeof st), 0);
    ck_assert_uint_eq(st.signals, 3);
    ck_assert_uint_eq(st.handlers, 0); /* the signalfd is not the application's */
}
END_TEST

static void remove_self_and_next(int signo, void *arg)
{
    (void)arg;
    mark('r');
    ck_assert_int_eq(iol_loop_remove_signal(L, signo, remove_self_and_next, NULL), 0);
    ck_assert_int_eq(iol_loop_remove_signal(L, signo, on_signal, "x"), 0);
    ck_assert_int_eq(iol_loop_add_callback(L, raise_usr1, NULL), 0); /* a second delivery */
}

static void count_then_stop(int signo, void *arg)
{
    (void)signo;
    mark('c');
    if (++*(int *)arg == 2)
        iol_loop_stop(L);
}

START_TEST(test_remove_inside_handler)
{
    int count = 0;
    ck_assert_int_eq(iol_loop_add_signal(L, SIGUSR1, remove_self_and_next, NULL), 0);
    ck_assert_int_eq(iol_loop_add_signal(L, SIGUSR1, on_signal, "x"), 0);
    ck_assert_int_eq(iol_loop_add_signal(L, SIGUSR1, count_then_stop, &count), 0);
    ck_assert_int_eq(iol_loop_add_callback(L, raise_usr1, NULL), 0);
    ck_assert_int_eq(iol_loop_start(L), 0);
    ck_assert_str_eq(trace, "rcc");
    ck_assert_int_eq(iol_loop_remove_signal(L, SIGUSR1, on_signal, "x"), -ENOENT);
    ck_assert_int_eq(iol_loop_remove_signal(L, SIGUSR1, count_then_stop, &count), 0);
}
END_TEST

static _Atomic int old_handler_runs;
static void old_handler(int signo)
{
    (void)signo;
    atomic_fetch_add(&old_handler_runs, 1);
}

static bool blocked_here(int signo)
{
    sigset_t m;
    pthread_sigmask(SIG_BLOCK, NULL, &m);
    return sigismember(&m, signo) == 1;
}

/* The previous disposition and mask come back with the last handler, and
 * at close; pending deliveries are discarded, not handed to the old one. */
START_TEST(test_restores_disposition_and_mask)
{
    struct sigaction sa = { .sa_handler = old_handler };
    sigemptyset(&sa.sa_mask);
    ck_assert_int_eq(sigaction(SIGUSR1, &sa, NULL), 0);
    ck_assert(!blocked_here(SIGUSR1));

    ck_assert_int_eq(iol_loop_add_signal(L, SIGUSR1, on_signal, "a"), 0);
    ck_assert(blocked_here(SIGUSR1));
    struct sigaction now;
    sigaction(SIGUSR1, NULL, &now);
    ck_assert_ptr_ne((void *)now.sa_handler, (void *)old_handler);
    kill(getpid(), SIGUSR1); /* pending: blocked here, never run */
    ck_assert_int_eq(iol_loop_remove_signal(L, SIGUSR1, on_signal, "a"), 0);
    sigaction(SIGUSR1, NULL, &now);
    ck_assert_ptr_eq((void *)now.sa_handler, (void *)old_handler);
    ck_assert(!blocked_here(SIGUSR1));
    ck_assert_int_eq(atomic_load(&old_handler_runs), 0); /* the pending one was discarded */
    ck_assert_str_eq(trace, "");

    /* Blocked already by the application: stays blocked. */
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &one, NULL);
    ck_assert_int_eq(iol_loop_add_signal(L, SIGUSR2, count_then_stop, &(int){ 0 }), 0);
    ck_assert_int_eq(iol_loop_add_signal(L, SIGUSR1, on_signal, "a"), 0);
    /* Close gives both back. */
    ck_assert_int_eq(iol_loop_close(L, false), 0);
    ck_assert_int_eq(iol_loop_new(&L, NULL), 0);
    sigaction(SIGUSR1, NULL, &now);
    ck_assert_ptr_eq((void *)now.sa_handler, (void *)old_handler);
    ck_assert(!blocked_here(SIGUSR1));
    ck_assert(blocked_here(SIGUSR2));
    kill(getpid(), SIGUSR1);
    ck_assert_int_eq(atomic_load(&old_handler_runs), 1); /* the old handler has it again */
}
END_TEST

START_TEST(test_one_loop_per_signal)
{
    iol_loop *other;
    ck_assert_int_eq(iol_loop_new(&other, &(iol_loop_config){ .make_current = IOL_CURRENT_NEVER }), 0);
    ck_assert_int_eq(iol_loop_add_signal(L, SIGUSR1, on_signal, "a"), 0);
    ck_assert_int_eq(iol_loop_add_signal(other, SIGUSR1, on_signal, "a"), -EBUSY);
    ck_assert_int_eq(iol_loop_add_signal(other, SIGUSR2, on_signal, "a"), 0);
    ck_assert_int_eq(iol_loop_remove_signal(L, SIGUSR1, on_signal, "a"), 0);
    ck_assert_int_eq(iol_loop_add_signal(other, SIGUSR1, on_signal, "a"), 0);
    ck_assert_int_eq(iol_loop_remove_signal(other, SIGUSR2, on_signal, "b"), -ENOENT);
    ck_assert_int_eq(iol_loop_remove_signal(L, SIGUSR2, on_signal, "a"), -ENOENT);
    ck_assert_int_eq(iol_loop_close(other, false), 0);
}
END_TEST

/* A thread made before add does not block the signal: a delivery to it
 * is forwarded to the loop's thread. */
static _Atomic bool shot;
static void *shoot_self(void *arg)
{
    (void)arg;
    while (!atomic_load(&shot))
        ;
    return NULL;
}

static void on_usr2(int signo, void *arg)
{
    (void)arg;
    ck_assert(pthread_equal(pthread_self(), loop_thread));
    ck_assert_int_eq(signo, SIGUSR2);
    mark('f');
    iol_loop_stop(L);
}

static pthread_t stray;
static void send_to_stray(void *arg)
{
    (void)arg;
    pthread_kill(stray, SIGUSR2); /* thread-directed at a thread that does not block it */
}

START_TEST(test_forwarded_from_unblocked_thread)
{
    ck_assert_int_eq(pthread_create(&stray, NULL, shoot_self, NULL), 0);
    ck_assert_int_eq(iol_loop_add_signal(L, SIGUSR2, on_usr2, NULL), 0);
    ck_assert_int_eq(iol_loop_add_callback(L, send_to_stray, NULL), 0);
    ck_assert_int_eq(iol_loop_start(L), 0);
    atomic_store(&shot, true);
    pthread_join(stray, NULL);
    ck_assert_str_eq(trace, "f");
}
END_TEST

/* The runtime's workers block the notification signals; a loop on the
 * main thread gets a SIGTERM sent to the process. */
static _Atomic int workers_blocking;
static void worker_start(iol_loop *loop, unsigned index, void *arg)
{
    (void)loop, (void)index, (void)arg;
    if (blocked_here(SIGTERM) && blocked_here(SIGINT) && blocked_here(SIGHUP))
        atomic_fetch_add(&workers_blocking, 1);
}

static void on_term(int signo, void *arg)
{
    ck_assert_int_eq(signo, SIGTERM);
    iol_runtime_stop(arg);
    iol_loop_stop(L);
}

static void send_term(void *arg)
{
    (void)arg;
    kill(getpid(), SIGTERM);
}

START_TEST(test_runtime_threads_block)
{
    iol_runtime *rt;
    ck_assert_int_eq(iol_runtime_new(&rt, &(iol_runtime_config){ .workers = 2, .on_start = worker_start }), 0);
    ck_assert_int_eq(iol_runtime_start(rt), 0);
    ck_assert_int_eq(atomic_load(&workers_blocking), 2);
    ck_assert_int_eq(iol_loop_add_signal(L, SIGTERM, on_term, rt), 0);
    for (int i = 0; i < 2; i++) /* the workers post it: it comes from their threads */
        ck_assert_int_eq(iol_runtime_post(rt, (unsigned)i, send_term, NULL), 0);
    ck_assert_int_eq(iol_loop_start(L), 0);
    ck_assert_int_eq(iol_runtime_join(rt), 0);
    iol_runtime_free(rt);
}
END_TEST

START_TEST(test_bad_signals)
{
    ck_assert_int_eq(iol_loop_add_signal(L, 0, on_signal, NULL), -EINVAL);
    ck_assert_int_eq(iol_loop_add_signal(L, -1, on_signal, NULL), -EINVAL);
    ck_assert_int_eq(iol_loop_add_signal(L, NSIG, on_signal, NULL), -EINVAL);
    ck_assert_int_eq(iol_loop_add_signal(L, SIGKILL, on_signal, NULL), -EINVAL);
    ck_assert_int_eq(iol_loop_add_signal(L, SIGSTOP, on_signal, NULL), -EINVAL);
    ck_assert_int_eq(iol_loop_add_signal(L, SIGSEGV, on_signal, NULL), -EINVAL);
    ck_assert_int_eq(iol_loop_add_signal(L, SIGUSR1, NULL, NULL), -EINVAL);
    ck_assert_int_eq(iol_loop_remove_signal(L, SIGUSR1, on_signal, NULL), -ENOENT);
    ck_assert_int_eq(iol_loop_add_signal(L, SIGRTMIN, on_signal, NULL), 0); /* real-time ones are fine */
    ck_assert_int_eq(iol_loop_remove_signal(L, SIGRTMIN, on_signal, NULL), 0);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("signals");
    TCase *tc = iol_test_tcase("signals", 30);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_runs_on_loop_in_order);
    tcase_add_test(tc, test_remove_inside_handler);
    tcase_add_test(tc, test_restores_disposition_and_mask);
    tcase_add_test(tc, test_one_loop_per_signal);
    tcase_add_test(tc, test_forwarded_from_unblocked_thread);
    tcase_add_test(tc, test_runtime_threads_block);
    tcase_add_test(tc, test_bad_signals);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return iol_test_run(suite()); }
