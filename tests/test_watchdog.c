/* The blocking watchdog: the signal threshold runs its action on the loop's
 * own thread when an iteration blocks, never while the loop sleeps; the log
 * threshold names the slow function; each loop of each thread has its own. */
#include <dlfcn.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ioloop.h"
#include "testutil.h"

#define THRESHOLD 0.1
#define BLOCK (3 * THRESHOLD)
#define MAX_LOOPS 4

/* ---- what the action saw. Lock-free atomics, not volatile sig_atomic_t:
 * the action runs on one loop thread and reads the tid slots that the
 * other loop threads write as they start, a data race TSan reported (4 of
 * the first 9 TSan runs of test_many_loops_block_at_once under load). They
 * order nothing but their own values: the main thread reads the counts
 * after joining the loop threads, which orders those reads. Lock-free
 * atomics are safe in a signal handler (C11 7.14.1.1). */
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "the signal handler needs lock-free atomic int");
static _Atomic int loop_tids[MAX_LOOPS];
static _Atomic int fired_per_loop[MAX_LOOPS];
static _Atomic int fired_elsewhere;

static void action(int signo)
{
    (void)signo;
    int tid = (int)gettid();
    for (int i = 0; i < MAX_LOOPS; i++)
        if (loop_tids[i] == tid) {
            fired_per_loop[i]++;
            return;
        }
    fired_elsewhere++;
}

static void reset_fired(void)
{
    for (int i = 0; i < MAX_LOOPS; i++) {
        loop_tids[i] = 0;
        fired_per_loop[i] = 0;
    }
    fired_elsewhere = 0;
}

/* ---- warnings captured from the log handler */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static char warnings[8][4096];
static int nwarnings;

static void capture_log(int level, const char *msg, void *ud)
{
    (void)ud;
    if (level != IOL_LOG_WARNING)
        return;
    pthread_mutex_lock(&log_lock);
    if (nwarnings < 8)
        snprintf(warnings[nwarnings], sizeof warnings[0], "%s", msg);
    nwarnings++;
    pthread_mutex_unlock(&log_lock);
}

static void capture_warnings(void)
{
    nwarnings = 0;
    iol_set_log_handler(capture_log, NULL);
}

/* ---- loops and threads */
static iol_loop *new_loop(void)
{
    iol_loop_config cfg = { .make_current = IOL_CURRENT_NEVER };
    iol_loop *loop = NULL;
    ck_assert_int_eq(iol_loop_new(&loop, &cfg), 0);
    return loop;
}

static void stop_cb(void *arg) { iol_loop_stop(arg); }

static void busy_wait(double seconds)
{
    double end = iol_test_now() + seconds;
    while (iol_test_now() < end)
        ;
}

/* Blocks the loop; non-static so dladdr may name it (with -rdynamic). */
void watchdog_test_slow_callback(void *arg);
void watchdog_test_slow_callback(void *arg)
{
    (void)arg;
    busy_wait(BLOCK);
}

typedef struct runner {
    iol_loop *loop;
    int index; /* slot in loop_tids */
    pthread_t thread;
} runner;

static void *run_loop(void *arg)
{
    runner *r = arg;
    loop_tids[r->index] = (int)gettid();
    ck_assert_int_eq(iol_loop_start(r->loop), 0);
    return NULL;
}

static void start_thread(runner *r, iol_loop *loop, int index)
{
    r->loop = loop;
    r->index = index;
    ck_assert_int_eq(pthread_create(&r->thread, NULL, run_loop, r), 0);
}

static void join_thread(runner *r)
{
    ck_assert_int_eq(pthread_join(r->thread, NULL), 0);
}

/* Blocks one iteration for BLOCK seconds, then stops. */
static void queue_block_then_stop(iol_loop *loop)
{
    ck_assert_int_eq(iol_loop_add_callback(loop, watchdog_test_slow_callback, NULL), 0);
    ck_assert_int_eq(iol_loop_add_callback(loop, stop_cb, loop), 0);
}

/* Set on the creating thread, run on another: the action runs once, on the
 * loop's thread; run again on a third thread, it follows the loop there. */
START_TEST(test_signal_fires_on_loop_thread)
{
    reset_fired();
    iol_loop *loop = new_loop();
    ck_assert_int_eq(iol_loop_set_blocking_signal_threshold(loop, THRESHOLD, action), 0);
    for (int round = 0; round < 2; round++) {
        queue_block_then_stop(loop);
        runner r;
        start_thread(&r, loop, round);
        join_thread(&r);
        ck_assert_int_eq(fired_per_loop[round], 1);
    }
    ck_assert_int_eq(fired_elsewhere, 0);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
}
END_TEST

/* The signal threshold is per iteration, as the header says (Tornado arms
 * its itimer per iteration too): calls that are each shorter than the
 * threshold but together longer fire it, once. */
static void short_call(void *arg)
{
    (void)arg;
    busy_wait(0.6 * THRESHOLD);
}

START_TEST(test_signal_threshold_is_per_iteration)
{
    reset_fired();
    iol_loop *loop = new_loop();
    ck_assert_int_eq(iol_loop_set_blocking_signal_threshold(loop, THRESHOLD, action), 0);
    for (int i = 0; i < 4; i++) /* one batch: 2.4 thresholds, 0.6 each */
        ck_assert_int_eq(iol_loop_add_callback(loop, short_call, NULL), 0);
    ck_assert_int_eq(iol_loop_add_callback(loop, stop_cb, loop), 0);
    runner r;
    start_thread(&r, loop, 0);
    join_thread(&r);
    ck_assert_int_eq(fired_per_loop[0], 1);
    ck_assert_int_eq(fired_elsewhere, 0);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
}
END_TEST

/* Enabled from inside a callback of a running loop: the next iteration is watched. */
static void enable_then_block(void *arg)
{
    iol_loop *loop = arg;
    ck_assert_int_eq(iol_loop_set_blocking_signal_threshold(loop, THRESHOLD, action), 0);
    queue_block_then_stop(loop);
}

START_TEST(test_signal_enabled_while_running)
{
    reset_fired();
    iol_loop *loop = new_loop();
    ck_assert_int_eq(iol_loop_add_callback(loop, enable_then_block, loop), 0);
    runner r;
    start_thread(&r, loop, 0);
    join_thread(&r);
    ck_assert_int_eq(fired_per_loop[0], 1);
    ck_assert_int_eq(fired_elsewhere, 0);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
}
END_TEST

/* A loop sleeping in poll for several thresholds triggers nothing. */
START_TEST(test_idle_loop_never_fires)
{
    reset_fired();
    capture_warnings();
    iol_loop *loop = new_loop();
    double threshold = 0.2; /* generous: trivial iterations on a busy machine */
    ck_assert_int_eq(iol_loop_set_blocking_signal_threshold(loop, threshold, action), 0);
    ck_assert_int_eq(iol_loop_set_blocking_log_threshold(loop, threshold), 0);
    ck_assert_int_eq(iol_loop_call_later(loop, 5 * threshold, stop_cb, loop, NULL), 0);
    runner r;
    start_thread(&r, loop, 0);
    join_thread(&r);
    ck_assert_int_eq(fired_per_loop[0], 0);
    ck_assert_int_eq(fired_elsewhere, 0);
    ck_assert_int_eq(nwarnings, 0);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
    iol_set_log_handler(NULL, NULL);
}
END_TEST

/* The warning names the slow function and carries the backtrace taken
 * while it ran. */
START_TEST(test_log_names_slow_function)
{
    capture_warnings();
    iol_loop *loop = new_loop();
    ck_assert_int_eq(iol_loop_set_blocking_log_threshold(loop, THRESHOLD), 0);
    queue_block_then_stop(loop);
    ck_assert_int_eq(iol_loop_start(loop), 0);
    ck_assert_int_eq(nwarnings, 1);

    char expect[256];
    Dl_info info;
    void *fn = (void *)watchdog_test_slow_callback;
    if (dladdr(fn, &info) && info.dli_sname)
        snprintf(expect, sizeof expect, "%s", info.dli_sname);
    else
        snprintf(expect, sizeof expect, "%p", fn);
    ck_assert_msg(strstr(warnings[0], expect), "'%s' not in: %s", expect, warnings[0]);
    ck_assert_msg(strstr(warnings[0], "blocked for"), "%s", warnings[0]);
    ck_assert_msg(strstr(warnings[0], "backtrace"), "%s", warnings[0]);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
    iol_set_log_handler(NULL, NULL);
}
END_TEST

/* Sends stderr to a file; returns the fd to read it back from. */
static int redirect_stderr(void)
{
    FILE *f = tmpfile();
    ck_assert_ptr_nonnull(f);
    int fd = dup(fileno(f));
    fclose(f);
    ck_assert_int_eq(dup2(fd, STDERR_FILENO), STDERR_FILENO);
    return fd;
}

static char *read_back(int fd)
{
    static char text[65536];
    ck_assert_int_eq(lseek(fd, 0, SEEK_SET), 0);
    ssize_t n = read(fd, text, sizeof text - 1);
    ck_assert_int_ge(n, 0);
    text[n] = '\0';
    return text;
}

/* Default handlers: the signal threshold writes its warning and a
 * backtrace itself; the log threshold writes at once while the call still
 * runs, then the duration when it returns (backtrace only once). */
START_TEST(test_default_outputs)
{
    iol_set_log_handler(NULL, NULL);
    int fd = redirect_stderr();
    iol_loop *loop = new_loop();
    ck_assert_int_eq(iol_loop_set_blocking_signal_threshold(loop, THRESHOLD, NULL), 0);
    ck_assert_int_eq(iol_loop_set_blocking_log_threshold(loop, THRESHOLD), 0);
    queue_block_then_stop(loop);
    ck_assert_int_eq(iol_loop_start(loop), 0);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
    const char *text = read_back(fd);
    ck_assert_msg(strstr(text, "ioloop: blocked for > 0.1 s"), "%s", text);
    ck_assert_msg(strstr(text, "ioloop WARNING: a call has blocked the loop for > 0.1 s"), "%s", text);
    ck_assert_msg(strstr(text, "blocked for 0."), "%s", text);
    ck_assert_msg(!strstr(text, "backtrace while it ran"), "%s", text);
    close(fd);
}
END_TEST

/* seconds <= 0 turns each threshold off again. */
START_TEST(test_disabled)
{
    reset_fired();
    capture_warnings();
    iol_loop *loop = new_loop();
    loop_tids[0] = (int)gettid();
    ck_assert_int_eq(iol_loop_set_blocking_signal_threshold(loop, THRESHOLD, action), 0);
    ck_assert_int_eq(iol_loop_set_blocking_log_threshold(loop, THRESHOLD), 0);
    ck_assert_int_eq(iol_loop_set_blocking_signal_threshold(loop, 0, action), 0);
    ck_assert_int_eq(iol_loop_set_blocking_log_threshold(loop, -1), 0);
    queue_block_then_stop(loop);
    ck_assert_int_eq(iol_loop_start(loop), 0);
    ck_assert_int_eq(fired_per_loop[0], 0);
    ck_assert_int_eq(fired_elsewhere, 0);
    ck_assert_int_eq(nwarnings, 0);

    /* Never set at all: nothing either. */
    iol_loop *plain = new_loop();
    queue_block_then_stop(plain);
    ck_assert_int_eq(iol_loop_start(plain), 0);
    ck_assert_int_eq(nwarnings, 0);
    ck_assert_int_eq(iol_loop_close(plain, false), 0);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
    iol_set_log_handler(NULL, NULL);
}
END_TEST

/* Two loops, two threads, both watched: only the one that blocks fires
 * and logs; the other sleeps in poll meanwhile. */
START_TEST(test_two_loops_two_threads)
{
    reset_fired();
    capture_warnings();
    iol_loop *busy = new_loop(), *idle = new_loop();
    iol_loop *loops[2] = { busy, idle };
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(iol_loop_set_blocking_signal_threshold(loops[i], THRESHOLD, action), 0);
        ck_assert_int_eq(iol_loop_set_blocking_log_threshold(loops[i], THRESHOLD), 0);
    }
    queue_block_then_stop(busy);
    ck_assert_int_eq(iol_loop_call_later(idle, 2 * BLOCK, stop_cb, idle, NULL), 0);
    runner r[2];
    for (int i = 0; i < 2; i++)
        start_thread(&r[i], loops[i], i);
    for (int i = 0; i < 2; i++)
        join_thread(&r[i]);
    ck_assert_int_eq(fired_per_loop[0], 1);
    ck_assert_int_eq(fired_per_loop[1], 0);
    ck_assert_int_eq(fired_elsewhere, 0);
    ck_assert_int_eq(nwarnings, 1);
    ck_assert_msg(strstr(warnings[0], "blocked for"), "%s", warnings[0]);
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(iol_loop_close(loops[i], false), 0);
    iol_set_log_handler(NULL, NULL);
}
END_TEST

/* Every loop of many threads blocking at once: each gets exactly its own signal. */
START_TEST(test_many_loops_block_at_once)
{
    reset_fired();
    iol_loop *loops[MAX_LOOPS];
    runner r[MAX_LOOPS];
    for (int i = 0; i < MAX_LOOPS; i++) {
        loops[i] = new_loop();
        ck_assert_int_eq(iol_loop_set_blocking_signal_threshold(loops[i], THRESHOLD, action), 0);
        queue_block_then_stop(loops[i]);
    }
    for (int i = 0; i < MAX_LOOPS; i++)
        start_thread(&r[i], loops[i], i);
    for (int i = 0; i < MAX_LOOPS; i++)
        join_thread(&r[i]);
    for (int i = 0; i < MAX_LOOPS; i++) {
        ck_assert_int_eq(fired_per_loop[i], 1);
        ck_assert_int_eq(iol_loop_close(loops[i], false), 0);
    }
    ck_assert_int_eq(fired_elsewhere, 0);
}
END_TEST

START_TEST(test_bad_arguments)
{
    ck_assert_int_eq(iol_loop_set_blocking_signal_threshold(NULL, 1, action), -EINVAL);
    ck_assert_int_eq(iol_loop_set_blocking_log_threshold(NULL, 1), -EINVAL);
    iol_loop *loop = new_loop();
    ck_assert_int_eq(iol_loop_set_blocking_signal_threshold(loop, NAN, action), -EINVAL);
    ck_assert_int_eq(iol_loop_set_blocking_log_threshold(loop, NAN), -EINVAL);
    ck_assert_int_eq(iol_loop_set_blocking_signal_threshold(loop, INFINITY, action), 0);
    ck_assert_int_eq(iol_loop_set_blocking_log_threshold(loop, 1e300), 0);

    /* From another thread while the loop runs. */
    ck_assert_int_eq(iol_loop_call_later(loop, 30, stop_cb, loop, NULL), 0);
    runner r;
    start_thread(&r, loop, 0);
    while (!iol_loop_running(loop))
        usleep(1000);
    ck_assert_int_eq(iol_loop_set_blocking_signal_threshold(loop, 1, action), -EPERM);
    ck_assert_int_eq(iol_loop_set_blocking_log_threshold(loop, 1), -EPERM);
    ck_assert_int_eq(iol_loop_stop(loop), 0);
    join_thread(&r);

    iol_loop_ref(loop);
    ck_assert_int_ge(iol_loop_close(loop, false), 0);
    ck_assert_int_eq(iol_loop_set_blocking_signal_threshold(loop, 1, action), -ESHUTDOWN);
    ck_assert_int_eq(iol_loop_set_blocking_log_threshold(loop, 1), -ESHUTDOWN);
    iol_loop_unref(loop);
}
END_TEST

static Suite *watchdog_suite(void)
{
    Suite *s = suite_create("watchdog");
    TCase *sig = iol_test_tcase("signal", 60);
    tcase_add_test(sig, test_signal_fires_on_loop_thread);
    tcase_add_test(sig, test_signal_enabled_while_running);
    tcase_add_test(sig, test_signal_threshold_is_per_iteration);
    tcase_add_test(sig, test_idle_loop_never_fires);
    suite_add_tcase(s, sig);
    TCase *log = iol_test_tcase("log", 60);
    tcase_add_test(log, test_log_names_slow_function);
    tcase_add_test(log, test_default_outputs);
    tcase_add_test(log, test_disabled);
    suite_add_tcase(s, log);
    TCase *threads = iol_test_tcase("threads", 60);
    tcase_add_test(threads, test_two_loops_two_threads);
    tcase_add_test(threads, test_many_loops_block_at_once);
    suite_add_tcase(s, threads);
    TCase *bad = iol_test_tcase("bad arguments", 60);
    tcase_add_test(bad, test_bad_arguments);
    suite_add_tcase(s, bad);
    return s;
}

int main(void)
{
    return iol_test_run(watchdog_suite());
}
