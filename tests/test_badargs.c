/* Bad input never crashes: every public call with NULL, negative,
 * out-of-range and closed-fd arguments returns the documented -errno.
 * Table-driven: each row is one call and the errno the header promises. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <unistd.h>

#include "ioloop.h"
#include "testutil.h"

static void nop(void *arg) { (void)arg; }
static void on_signal(int signo, void *arg) { (void)signo; (void)arg; }
static void on_io(int fd, unsigned ev, void *arg) { (void)fd; (void)ev; (void)arg; }
static void on_future(iol_future *f, void *arg) { (void)f; (void)arg; }
static int exec_fn(void *arg, void **res) { (void)arg; (void)res; return 0; }
static int sync_fn(iol_loop *l, iol_future *d, void *arg) { (void)l; (void)d; (void)arg; return 0; }
static void on_read(iol_stream *s, const char *d, size_t n, int st, void *a) { (void)s; (void)d; (void)n; (void)st; (void)a; }
static void on_connect(iol_stream *s, int st, void *a) { (void)s; (void)st; (void)a; }
static void on_watermark(iol_stream *s, bool above, void *a) { (void)s; (void)above; (void)a; }
static void on_accept(iol_loop *l, int fd, const struct sockaddr *p, socklen_t n, void *a) { (void)l; (void)fd; (void)p; (void)n; (void)a; }

static iol_loop *L;      /* a live loop */
static int closed_fd;    /* a number that is not an open fd */
static iol_future *F;    /* a pending future */

/* One case per call: ROW(expected errno, the call). __COUNTER__ numbers
 * the cases, so adding a row is one line. */
enum { ROWS_BASE = __COUNTER__ };
#define ROW(want_, expr)                                                                                     \
    case __COUNTER__ - ROWS_BASE - 1:                                                                        \
        *text = #expr;                                                                                       \
        *want = (want_);                                                                                     \
        return (expr);

static int run_row(int i, const char **text, int *want)
{
    switch (i) {
        ROW(-EINVAL, iol_loop_new(NULL, NULL))
        ROW(-EINVAL, iol_loop_handler_count(NULL))
        ROW(-EINVAL, iol_loop_new(&(iol_loop *){ 0 }, &(iol_loop_config){ .poller = "kqueue" }))
        ROW(-EINVAL, iol_loop_new(&(iol_loop *){ 0 }, &(iol_loop_config){ .make_current = -1 }))
        ROW(-EINVAL, iol_loop_new(&(iol_loop *){ 0 }, &(iol_loop_config){ .spin_us = NAN }))
        ROW(-EINVAL, iol_loop_new(&(iol_loop *){ 0 }, &(iol_loop_config){ .spin_us = 1001 }))
        ROW(-EINVAL, iol_loop_new(&(iol_loop *){ 0 }, &(iol_loop_config){ .spin_us = INFINITY }))
        ROW(-EINVAL, iol_loop_close(NULL, true))
        ROW(-EINVAL, iol_loop_start(NULL))
        ROW(-EINVAL, iol_loop_stop(NULL))
        ROW(-EINVAL, iol_loop_install(NULL))
        ROW(-EINVAL, iol_loop_add_handler(NULL, 0, IOL_READ, on_io, NULL))
        ROW(-EBADF, iol_loop_add_handler(L, -1, IOL_READ, on_io, NULL))
        ROW(-EBADF, iol_loop_add_handler(L, closed_fd, IOL_READ, on_io, NULL))
        ROW(-EINVAL, iol_loop_add_handler(L, 0, IOL_READ, NULL, NULL))
        ROW(-EINVAL, iol_loop_add_handler(L, 0, 0, on_io, NULL))
        ROW(-EINVAL, iol_loop_add_handler(L, 0, 0x100, on_io, NULL))
        ROW(-EBADF, iol_loop_update_handler(L, -5, IOL_READ))
        ROW(-ENOENT, iol_loop_update_handler(L, 0, IOL_READ))
        ROW(-EINVAL, iol_loop_update_handler(NULL, 0, IOL_READ))
        ROW(-EBADF, iol_loop_remove_handler(L, -1))
        ROW(-ENOENT, iol_loop_remove_handler(L, closed_fd))
        ROW(-EINVAL, iol_loop_remove_handler(NULL, 0))
        ROW(-EINVAL, iol_loop_close_fd(NULL, 0))
        ROW(-EBADF, iol_loop_close_fd(L, -1))
        ROW(-EBADF, iol_loop_close_fd(L, closed_fd))
        ROW(-EINVAL, iol_loop_add_callback(NULL, nop, NULL))
        ROW(-EINVAL, iol_loop_add_callback(L, NULL, NULL))
        ROW(-EINVAL, iol_loop_spawn_callback(L, NULL, NULL))
        ROW(-EINVAL, iol_loop_add_callback_from_signal(L, NULL, NULL))
        ROW(-EINVAL, iol_loop_add_callback_from_signal(NULL, nop, NULL))
        ROW(-EINVAL, iol_loop_call_at(NULL, 1, nop, NULL, NULL))
        ROW(-EINVAL, iol_loop_call_at(L, NAN, nop, NULL, NULL))
        ROW(-EINVAL, iol_loop_call_later(L, -0.5, nop, NULL, NULL))
        ROW(-EINVAL, iol_loop_add_timeout(L, 1, NULL, NULL, NULL))
        ROW(-ENOENT, iol_loop_remove_timeout(L, 0))
        ROW(-ENOENT, iol_loop_remove_timeout(L, 0xdeadbeefcafeULL))
        ROW(-EINVAL, iol_loop_set_blocking_signal_threshold(NULL, 1, NULL))
        ROW(-EINVAL, iol_loop_set_blocking_log_threshold(NULL, 1))
        ROW(-EINVAL, iol_loop_set_blocking_log_threshold(L, NAN))
        ROW(-EINVAL, iol_periodic_new(NULL, L, 10, nop, NULL))
        ROW(-EINVAL, iol_periodic_new(&(iol_periodic *){ 0 }, NULL, 10, nop, NULL))
        ROW(-EINVAL, iol_periodic_new(&(iol_periodic *){ 0 }, L, 0, nop, NULL))
        ROW(-EINVAL, iol_periodic_new(&(iol_periodic *){ 0 }, L, -3, nop, NULL))
        ROW(-EINVAL, iol_periodic_new(&(iol_periodic *){ 0 }, L, 10, NULL, NULL))
        ROW(-EINVAL, iol_periodic_set_jitter(NULL, 0.1))
        ROW(-EINVAL, iol_periodic_start(NULL))
        ROW(-EINVAL, iol_periodic_stop(NULL))
        ROW(-EINVAL, iol_future_new(NULL))
        ROW(-EINVAL, iol_future_set_result(NULL, NULL))
        ROW(-EINVAL, iol_future_set_error(NULL, -EIO))
        ROW(-EINVAL, iol_future_set_error(F, 0))
        ROW(-EINVAL, iol_future_set_error(F, 5))
        ROW(-EINVAL, iol_future_result(NULL, NULL))
        ROW(-EAGAIN, iol_future_result(F, NULL))
        ROW(-EINVAL, iol_loop_add_future(NULL, F, on_future, NULL))
        ROW(-EINVAL, iol_loop_add_future(L, NULL, on_future, NULL))
        ROW(-EINVAL, iol_loop_add_future(L, F, NULL, NULL))
        ROW(-EINVAL, iol_executor_new(NULL, 1))
        ROW(-EINVAL, iol_loop_set_default_executor(NULL, NULL))
        ROW(-EINVAL, iol_loop_set_default_executor(L, NULL))
        ROW(-EINVAL, iol_loop_run_in_executor(NULL, NULL, exec_fn, NULL, &(iol_future *){ 0 }))
        ROW(-EINVAL, iol_loop_run_in_executor(L, NULL, NULL, NULL, &(iol_future *){ 0 }))
        ROW(-EINVAL, iol_loop_run_in_executor(L, NULL, exec_fn, NULL, NULL))
        ROW(-EINVAL, iol_loop_run_sync(NULL, sync_fn, NULL, 0, NULL))
        ROW(-EINVAL, iol_loop_run_sync(L, NULL, NULL, 0, NULL))
        ROW(-EINVAL, iol_runtime_new(NULL, NULL))
        ROW(-EINVAL, iol_runtime_new(&(iol_runtime *){ 0 }, &(iol_runtime_config){ .poller = "bogus" }))
        ROW(-EINVAL, iol_runtime_new(&(iol_runtime *){ 0 }, &(iol_runtime_config){ .spin_us = NAN }))
        ROW(-EINVAL, iol_runtime_new(&(iol_runtime *){ 0 }, &(iol_runtime_config){ .spin_us = 1e9 }))
        ROW(-EINVAL, iol_runtime_start(NULL))
        ROW(-EINVAL, iol_runtime_stop(NULL))
        ROW(-EINVAL, iol_runtime_join(NULL))
        ROW(-EINVAL, iol_runtime_post(NULL, 0, nop, NULL))
        ROW(-EINVAL, iol_runtime_broadcast(NULL, nop, NULL))
        ROW(-EINVAL, iol_runtime_listen(NULL, &(iol_listen_config){ .on_accept = on_accept }))
        ROW(-EINVAL, iol_runtime_listener_port(NULL, 0))
        ROW(-EINVAL, iol_runtime_listener_counts(NULL, 0, NULL, 0))
        ROW(-EINVAL, iol_stream_new(NULL, L, 0, 0))
        ROW(-EINVAL, iol_stream_new(&(iol_stream *){ 0 }, NULL, 0, 0))
        ROW(-EBADF, iol_stream_new(&(iol_stream *){ 0 }, L, -1, 0))
        ROW(-EBADF, iol_stream_new(&(iol_stream *){ 0 }, L, closed_fd, 0))
        ROW(-EINVAL, iol_stream_connect(NULL, L, "127.0.0.1", 1, 0, on_connect, NULL))
        ROW(-EINVAL, iol_stream_connect(&(iol_stream *){ 0 }, L, NULL, 1, 0, on_connect, NULL))
        ROW(-EINVAL, iol_stream_connect(&(iol_stream *){ 0 }, L, "127.0.0.1", 1, 0, NULL, NULL))
        ROW(-EINVAL, iol_stream_read_until(NULL, "\n", on_read, NULL))
        ROW(-EINVAL, iol_stream_read_bytes(NULL, 1, false, on_read, NULL))
        ROW(-EINVAL, iol_stream_read_until_close(NULL, on_read, NULL))
        ROW(-EINVAL, iol_stream_write(NULL, "x", 1, NULL, NULL))
        ROW(-EINVAL, iol_stream_set_close_callback(NULL, NULL, NULL))
        ROW(-EINVAL, iol_stream_close(NULL))
        ROW(-EINVAL, iol_stream_fd(NULL))
        ROW(-EINVAL, iol_stream_set_max_write_buffer(NULL, 1))
        ROW(-EINVAL, iol_stream_read_until_max(NULL, "\n", 10, on_read, NULL))
        ROW(-EINVAL, iol_stream_write_ref(NULL, "x", 1, NULL, NULL))
        ROW(-EINVAL, iol_stream_sendfile(NULL, 0, 0, 1, NULL, NULL))
        /* Issue 22: graceful close, Tornado's other reads. */
        ROW(-EINVAL, iol_stream_shutdown(NULL, NULL, NULL))
        ROW(-EINVAL, iol_stream_read_until_regex(NULL, "x", 0, on_read, NULL))
        ROW(-EINVAL, iol_stream_read_into(NULL, (char[1]){ 0 }, 1, false, on_read, NULL))
        ROW(-EINVAL, iol_stream_read_bytes_streaming(NULL, 1, on_read, on_read, NULL))
        ROW(-EINVAL, iol_stream_read_until_close_streaming(NULL, on_read, on_read, NULL))
        ROW(-EINVAL, iol_stream_connect_unix(NULL, L, "/tmp/x.sock", NULL, on_connect, NULL))
        ROW(-EINVAL, iol_stream_connect_unix(&(iol_stream *){ 0 }, L, "", NULL, on_connect, NULL))
        ROW(-EINVAL, iol_stream_connect_unix(&(iol_stream *){ 0 }, L, NULL, NULL, on_connect, NULL))
        ROW(-EINVAL, iol_runtime_listen(NULL, &(iol_listen_config){ .path = "/tmp/x.sock", .shard = IOL_SHARD_HANDOFF, .on_accept = on_accept }))
        ROW(-EINVAL, iol_stream_connect_ex(NULL, L, "127.0.0.1", 1, NULL, on_connect, NULL))
        ROW(-EINVAL, iol_stream_connect_ex(&(iol_stream *){ 0 }, L, "", 1, NULL, on_connect, NULL))
        ROW(-EINVAL, iol_stream_connect_ex(&(iol_stream *){ 0 }, L, "127.0.0.1", 1, &(iol_connect_options){ .timeout = NAN }, on_connect, NULL))
        ROW(-EINVAL, iol_stream_connect_ex(&(iol_stream *){ 0 }, L, "127.0.0.1", 1, &(iol_connect_options){ .source = "a.name" }, on_connect, NULL))
        ROW(-EINVAL, iol_stream_connect_ex(&(iol_stream *){ 0 }, L, "127.0.0.1", 1, &(iol_connect_options){ .source_port = 1 }, on_connect, NULL))
        ROW(-EINVAL, iol_stream_pause_reading(NULL))
        ROW(-EINVAL, iol_stream_resume_reading(NULL))
        ROW(-EINVAL, iol_stream_set_write_watermarks(NULL, 2, 1, on_watermark, NULL))
        /* Operability (issue 15): statistics. */
        ROW(-EINVAL, iol_loop_get_stats(NULL, &(iol_loop_stats){ 0 }, sizeof(iol_loop_stats)))
        ROW(-EINVAL, iol_loop_get_stats(L, NULL, sizeof(iol_loop_stats)))
        ROW(-EINVAL, iol_loop_get_stats(L, &(iol_loop_stats){ 0 }, 0))
        ROW(-EINVAL, iol_loop_reset_stats(NULL))
        ROW(-EINVAL, iol_loop_set_call_timing(NULL, true))
        ROW(-EINVAL, iol_loop_add_prepare(NULL, nop, NULL))
        ROW(-EINVAL, iol_loop_add_prepare(L, NULL, NULL))
        ROW(-EINVAL, iol_loop_remove_prepare(NULL, nop, NULL))
        ROW(-EINVAL, iol_loop_remove_prepare(L, NULL, NULL))
        ROW(-ENOENT, iol_loop_remove_prepare(L, nop, NULL))
        ROW(-EINVAL, iol_loop_add_check(NULL, nop, NULL))
        ROW(-EINVAL, iol_loop_add_check(L, NULL, NULL))
        ROW(-EINVAL, iol_loop_remove_check(NULL, nop, NULL))
        ROW(-EINVAL, iol_loop_remove_check(L, NULL, NULL))
        ROW(-ENOENT, iol_loop_remove_check(L, nop, NULL))
        ROW(-EINVAL, iol_loop_add_signal(NULL, SIGUSR1, on_signal, NULL))
        ROW(-EINVAL, iol_loop_add_signal(L, SIGUSR1, NULL, NULL))
        ROW(-EINVAL, iol_loop_add_signal(L, 0, on_signal, NULL))
        ROW(-EINVAL, iol_loop_add_signal(L, SIGKILL, on_signal, NULL))
        ROW(-EINVAL, iol_loop_add_signal(L, 1000, on_signal, NULL))
        ROW(-EINVAL, iol_loop_remove_signal(NULL, SIGUSR1, on_signal, NULL))
        ROW(-EINVAL, iol_loop_remove_signal(L, -3, on_signal, NULL))
        ROW(-ENOENT, iol_loop_remove_signal(L, SIGUSR1, on_signal, NULL))
        ROW(-EINVAL, iol_loop_run_once(NULL, 0))
        ROW(-EINVAL, iol_loop_run_once(L, NAN))
        ROW(-EINVAL, iol_loop_backend_fd(NULL))
        ROW(-EINVAL, iol_loop_backend_timeout(NULL, &(double){ 0 }))
        ROW(-EINVAL, iol_loop_backend_timeout(L, NULL))
        ROW(-EINVAL, iol_runtime_get_stats(NULL, 0, &(iol_runtime_stats){ 0 }, sizeof(iol_runtime_stats)))
    default:
        *text = "no such row";
        *want = 0;
        return -1;
    }
}
enum { ROWS_END = __COUNTER__, NROWS = ROWS_END - ROWS_BASE - 1 };
#undef ROW

static void setup(void)
{
    ck_assert_int_eq(iol_loop_new(&L, NULL), 0);
    ck_assert_int_eq(iol_future_new(&F), 0);
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    close(p[0]);
    close(p[1]);
    closed_fd = p[0];
}

static void teardown(void)
{
    iol_future_unref(F);
    iol_loop_close(L, false);
}

START_TEST(test_table)
{
    const char *text;
    int want;
    int got = run_row(_i, &text, &want);
    ck_assert_msg(got == want, "%s: got %d, want %d", text, got, want);
}
END_TEST

/* The calls that return no int must survive NULL too. */
START_TEST(test_void_and_pointer_calls)
{
    iol_loop_unref(NULL);
    ck_assert_ptr_null(iol_loop_ref(NULL));
    ck_assert_ptr_null(iol_loop_poller(NULL));
    ck_assert(!iol_loop_running(NULL));
    ck_assert(isnan(iol_loop_time(NULL)));
    iol_periodic_free(NULL);
    ck_assert(!iol_periodic_is_running(NULL));
    iol_future_unref(NULL);
    ck_assert_ptr_null(iol_future_ref(NULL));
    ck_assert(!iol_future_done(NULL));
    iol_executor_free(NULL);
    iol_runtime_free(NULL);
    ck_assert_uint_eq(iol_runtime_size(NULL), 0);
    ck_assert_ptr_null(iol_runtime_loop(NULL, 0));
    ck_assert_int_eq(iol_runtime_worker_index(), -1);
    ck_assert_uint_eq(iol_stream_write_buffer_size(NULL), 0);
    ck_assert(iol_stream_closed(NULL));
    ck_assert_ptr_null(iol_stream_loop(NULL));
    ck_assert_int_eq(iol_stream_error(NULL), -EINVAL);
}
END_TEST

/* Loop-thread calls from another thread while the loop runs are -EPERM. */
static int perm_rc[4];
static void *foreign(void *arg)
{
    iol_loop *loop = arg;
    perm_rc[0] = iol_loop_call_later(loop, 1, nop, NULL, NULL);
    perm_rc[1] = iol_loop_add_handler(loop, 0, IOL_READ, on_io, NULL);
    perm_rc[2] = iol_loop_remove_timeout(loop, 1);
    perm_rc[3] = iol_loop_add_callback(loop, nop, NULL); /* any thread */
    iol_loop_stop(loop);
    return NULL;
}
static pthread_t foreign_thread;
static void spawn_foreign(void *arg)
{
    pthread_create(&foreign_thread, NULL, foreign, arg);
}

START_TEST(test_wrong_thread_eperm)
{
    iol_loop_add_callback(L, spawn_foreign, L);
    ck_assert_int_eq(iol_loop_start(L), 0);
    /* Joined before teardown frees the loop it still touches in stop(). */
    pthread_join(foreign_thread, NULL);
    ck_assert_int_eq(perm_rc[0], -EPERM);
    ck_assert_int_eq(perm_rc[1], -EPERM);
    ck_assert_int_eq(perm_rc[2], -EPERM);
    ck_assert_int_eq(perm_rc[3], 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("badargs");
    TCase *tc = iol_test_tcase("table", 30);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, test_table, 0, NROWS);
    tcase_add_test(tc, test_void_and_pointer_calls);
    tcase_add_test(tc, test_wrong_thread_eperm);
    suite_add_tcase(s, tc);
    return iol_test_run(s);
}
