/* Loop statistics (iol_loop_get_stats): each counter counts what it says,
 * the maxima restart at reset, the struct size handshake, and reads from
 * another thread while the loop runs (TSan). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ioloop.h"
#include "testutil.h"

static iol_loop_stats stats_of(const iol_loop *loop)
{
    iol_loop_stats st;
    ck_assert_int_eq(iol_loop_get_stats(loop, &st, sizeof st), 0);
    return st;
}

static void nop(void *arg) { (void)arg; }
static void stop_cb(void *arg) { iol_loop_stop(arg); }

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

typedef struct post_arg {
    iol_loop *loop;
    int n;
} post_arg;

static void *post_n(void *p)
{
    post_arg *a = p;
    for (int i = 0; i < a->n; i++)
        ck_assert_int_eq(iol_loop_add_callback(a->loop, nop, NULL), 0);
    return NULL;
}

static int handler_runs;
static void on_pipe(int fd, unsigned events, void *arg)
{
    (void)events;
    char c;
    ck_assert_int_eq(read(fd, &c, 1), 1);
    handler_runs++;
    iol_loop_add_callback(arg, stop_cb, arg); /* self: one more */
}

/* Posts of each kind are counted by kind; timeouts, handlers, polls too. */
START_TEST(test_counts_by_kind)
{
    iol_loop *loop;
    ck_assert_int_eq(iol_loop_new(&loop, NULL), 0);
    iol_loop_stats st = stats_of(loop);
    ck_assert_uint_eq(st.iterations + st.callbacks_self + st.callbacks_remote + st.callbacks_signal + st.timeouts, 0);

    for (int i = 0; i < 7; i++)
        ck_assert_int_eq(iol_loop_add_callback(loop, nop, NULL), 0);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(iol_loop_add_callback_from_signal(loop, nop, NULL), 0);
    post_arg pa = { loop, 11 };
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, post_n, &pa), 0);
    pthread_join(t, NULL);
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(iol_loop_call_later(loop, 0, nop, NULL, NULL), 0);
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    ck_assert_int_eq(iol_loop_add_handler(loop, p[0], IOL_READ, on_pipe, loop), 0);
    ck_assert_int_eq(write(p[1], "x", 1), 1);
    ck_assert_uint_eq(stats_of(loop).handlers, 1);

    handler_runs = 0;
    ck_assert_int_eq(iol_loop_start(loop), 0);
    ck_assert_int_eq(handler_runs, 1);
    st = stats_of(loop);
    ck_assert_uint_eq(st.callbacks_self, 7 + 1);
    ck_assert_uint_eq(st.callbacks_signal, 3);
    ck_assert_uint_eq(st.callbacks_remote, 11);
    ck_assert_uint_eq(st.timeouts, 5);
    ck_assert_uint_eq(st.handlers, 1);
    ck_assert_uint_ge(st.iterations, 1);
    ck_assert_uint_eq(st.queue_depth, 1); /* the last batch: stop_cb alone */
    ck_assert_uint_eq(st.longest_callback_ns, 0); /* call timing is off */
    ck_assert_uint_gt(st.busy_ns, 0);
    ck_assert_uint_ge(st.longest_iteration_ns, 1);

    ck_assert_int_eq(iol_loop_remove_handler(loop, p[0]), 0);
    ck_assert_uint_eq(stats_of(loop).handlers, 0);
    close(p[0]);
    close(p[1]);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
}
END_TEST

/* queue_depth: the batch the loop last took, here 100 posted at once. */
START_TEST(test_queue_depth)
{
    iol_loop *loop;
    ck_assert_int_eq(iol_loop_new(&loop, NULL), 0);
    for (int i = 0; i < 99; i++)
        ck_assert_int_eq(iol_loop_add_callback(loop, nop, NULL), 0);
    ck_assert_int_eq(iol_loop_add_callback(loop, stop_cb, loop), 0);
    ck_assert_int_eq(iol_loop_start(loop), 0);
    ck_assert_uint_eq(stats_of(loop).queue_depth, 100);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
}
END_TEST

static void sleep_20ms(void *arg)
{
    (void)arg;
    sleep_ms(20);
}

/* Time waiting in the poller and busy running; the longest call only
 * with call timing; reset restarts both maxima. */
START_TEST(test_times_and_reset)
{
    iol_loop *loop;
    ck_assert_int_eq(iol_loop_new(&loop, NULL), 0);
    ck_assert_int_eq(iol_loop_call_later(loop, 0.05, stop_cb, loop, NULL), 0);
    ck_assert_int_eq(iol_loop_start(loop), 0);
    iol_loop_stats st = stats_of(loop);
    ck_assert_uint_ge(st.wait_ns, 30 * 1000000u); /* slept about 50 ms */
    ck_assert_uint_eq(st.longest_callback_ns, 0);

    ck_assert_int_eq(iol_loop_set_call_timing(loop, true), 0);
    ck_assert_int_eq(iol_loop_add_callback(loop, sleep_20ms, NULL), 0);
    ck_assert_int_eq(iol_loop_add_callback(loop, stop_cb, loop), 0);
    ck_assert_int_eq(iol_loop_start(loop), 0);
    st = stats_of(loop);
    ck_assert_uint_ge(st.longest_callback_ns, 15 * 1000000u);
    ck_assert_uint_ge(st.longest_iteration_ns, st.longest_callback_ns);
    ck_assert_uint_ge(st.busy_ns, 15 * 1000000u);

    ck_assert_int_eq(iol_loop_reset_stats(loop), 0);
    st = stats_of(loop);
    ck_assert_uint_eq(st.longest_callback_ns, 0);
    ck_assert_uint_eq(st.longest_iteration_ns, 0);
    ck_assert_uint_ge(st.busy_ns, 15 * 1000000u); /* counters do not reset */

    /* Timed handlers and timeouts too. */
    ck_assert_int_eq(iol_loop_call_later(loop, 0, sleep_20ms, NULL, NULL), 0);
    ck_assert_int_eq(iol_loop_call_later(loop, 0.001, stop_cb, loop, NULL), 0);
    ck_assert_int_eq(iol_loop_start(loop), 0);
    ck_assert_uint_ge(stats_of(loop).longest_callback_ns, 15 * 1000000u);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
}
END_TEST

/* Older and newer callers: the size decides what is written. */
START_TEST(test_size_handshake)
{
    iol_loop *loop;
    ck_assert_int_eq(iol_loop_new(&loop, NULL), 0);
    ck_assert_int_eq(iol_loop_add_callback(loop, stop_cb, loop), 0);
    ck_assert_int_eq(iol_loop_start(loop), 0);

    iol_loop_stats st;
    memset(&st, 0xab, sizeof st);
    size_t older = offsetof(iol_loop_stats, callbacks_remote);
    ck_assert_int_eq(iol_loop_get_stats(loop, &st, older), 0);
    ck_assert_uint_eq(st.callbacks_self, 1);
    ck_assert_uint_eq(st.callbacks_remote, 0xababababababababull); /* untouched */

    struct {
        iol_loop_stats known;
        uint64_t newer[4];
    } big;
    memset(&big, 0xab, sizeof big);
    ck_assert_int_eq(iol_loop_get_stats(loop, &big.known, sizeof big), 0);
    ck_assert_uint_eq(big.known.callbacks_self, 1);
    for (int i = 0; i < 4; i++)
        ck_assert_uint_eq(big.newer[i], 0);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
}
END_TEST

/* Another thread reads while the loop runs a flood: counters never go
 * back, and the wakeups of a sleeping loop show. */
typedef struct reader {
    iol_loop *loop;
    _Atomic bool done;
    int reads;
} reader;

static void *read_stats(void *p)
{
    reader *r = p;
    iol_loop_stats prev = { 0 };
    while (!atomic_load(&r->done)) {
        iol_loop_stats st = stats_of(r->loop);
        HOT_ASSERT(st.iterations >= prev.iterations);
        HOT_ASSERT(st.callbacks_remote >= prev.callbacks_remote);
        HOT_ASSERT(st.busy_ns >= prev.busy_ns && st.wait_ns >= prev.wait_ns);
        prev = st;
        r->reads++;
        if ((r->reads & 63) == 0)
            iol_loop_reset_stats(r->loop);
    }
    return NULL;
}

static void *run_loop(void *p)
{
    iol_loop_start(p);
    return NULL;
}

START_TEST(test_read_from_other_thread)
{
    iol_loop *loop;
    ck_assert_int_eq(iol_loop_new(&loop, &(iol_loop_config){ .make_current = IOL_CURRENT_NEVER }), 0);
    pthread_t lt, rt;
    ck_assert_int_eq(pthread_create(&lt, NULL, run_loop, loop), 0);
    while (!iol_loop_running(loop))
        sched_yield();
    reader r = { .loop = loop };
    ck_assert_int_eq(pthread_create(&rt, NULL, read_stats, &r), 0);
    int n = (int)iol_test_scaled(200000, 2000);
    post_arg pa = { loop, n };
    post_n(&pa);
    /* A post to a loop that has gone to sleep writes its eventfd. */
    while (stats_of(loop).callbacks_remote < (uint64_t)n)
        sleep_ms(1);
    sleep_ms(20);
    uint64_t before = stats_of(loop).wakeups;
    ck_assert_int_eq(iol_loop_add_callback(loop, nop, NULL), 0);
    while (stats_of(loop).callbacks_remote < (uint64_t)n + 1)
        sleep_ms(1);
    ck_assert_uint_gt(stats_of(loop).wakeups, before);
    atomic_store(&r.done, true);
    pthread_join(rt, NULL);
    ck_assert_int_eq(iol_loop_stop(loop), 0);
    pthread_join(lt, NULL);
    ck_assert_int_gt(r.reads, 0);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
}
END_TEST


/* ------------------------------------------------------------- runtime */

static _Atomic int accepted_total;
static void on_accept(iol_loop *loop, int fd, const struct sockaddr *peer, socklen_t len, void *arg)
{
    (void)loop, (void)peer, (void)len, (void)arg;
    close(fd);
    atomic_fetch_add(&accepted_total, 1);
}

static int connect_local(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

static iol_runtime_stats rt_stats(iol_runtime *rt, unsigned index)
{
    iol_runtime_stats st;
    ck_assert_int_eq(iol_runtime_get_stats(rt, index, &st, sizeof st), 0);
    return st;
}

/* Per worker: its accepts (equal to the listeners' counts) and its loop;
 * the aggregate sums them. */
START_TEST(test_runtime_breakdown)
{
    iol_runtime *rt;
    ck_assert_int_eq(iol_runtime_new(&rt, &(iol_runtime_config){ .workers = 2 }), 0);
    ck_assert_int_eq(iol_runtime_start(rt), 0);
    int ids[2];
    for (int k = 0; k < 2; k++) {
        ids[k] = iol_runtime_listen(rt, &(iol_listen_config){ .host = "127.0.0.1", .on_accept = on_accept,
                                                              .shard = k ? IOL_SHARD_HANDOFF : IOL_SHARD_REUSEPORT });
        ck_assert_int_ge(ids[k], 0);
    }
    iol_runtime_stats all;
    ck_assert_int_eq(iol_runtime_get_stats(rt, 2, &all, sizeof all), -EINVAL);
    ck_assert_int_eq(iol_runtime_get_stats(rt, 0, NULL, sizeof all), -EINVAL);
    ck_assert_int_eq(iol_runtime_get_stats(rt, 0, &all, 0), -EINVAL);
    all = rt_stats(rt, IOL_RUNTIME_ALL);
    ck_assert_uint_eq(all.workers, 2);
    ck_assert_uint_eq(all.listeners, 2);
    ck_assert_uint_eq(all.loop.handlers, 0); /* listening sockets are not counted */

    atomic_store(&accepted_total, 0);
    int n = 20;
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < n; i++)
            close(connect_local((uint16_t)iol_runtime_listener_port(rt, ids[k])));
    for (int i = 0; i < 5000 && atomic_load(&accepted_total) < 2 * n; i++)
        sleep_ms(1);
    ck_assert_int_eq(atomic_load(&accepted_total), 2 * n);
    for (int i = 0; i < 10; i++)
        ck_assert_int_eq(iol_runtime_post(rt, (unsigned)i % 2, nop, NULL), 0);
    while (rt_stats(rt, IOL_RUNTIME_ALL).loop.callbacks_remote < 10)
        sleep_ms(1);

    uint64_t per_listener[2][2];
    for (int k = 0; k < 2; k++)
        ck_assert_int_eq(iol_runtime_listener_counts(rt, ids[k], per_listener[k], 2), 2);
    iol_runtime_stats w[2];
    uint64_t sum_accepted = 0, sum_iter = 0;
    for (unsigned i = 0; i < 2; i++) {
        w[i] = rt_stats(rt, i);
        ck_assert_uint_eq(w[i].accepted, per_listener[0][i] + per_listener[1][i]);
        sum_accepted += w[i].accepted;
        sum_iter += w[i].loop.iterations;
    }
    all = rt_stats(rt, IOL_RUNTIME_ALL);
    ck_assert_uint_eq(sum_accepted, 2 * n);
    ck_assert_uint_eq(all.accepted, 2 * n);
    ck_assert_uint_ge(all.loop.iterations, sum_iter); /* read later: not fewer */
    ck_assert_uint_ge(all.loop.callbacks_remote, 10);
    iol_runtime_free(rt);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("stats");
    TCase *tc = iol_test_tcase("loop", 30);
    tcase_add_test(tc, test_counts_by_kind);
    tcase_add_test(tc, test_queue_depth);
    tcase_add_test(tc, test_times_and_reset);
    tcase_add_test(tc, test_size_handshake);
    tcase_add_test(tc, test_read_from_other_thread);
    suite_add_tcase(s, tc);
    tc = iol_test_tcase("runtime", 30);
    tcase_add_test(tc, test_runtime_breakdown);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return iol_test_run(suite()); }
