/* close(all_fds), the dropped count, references and late producers. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include "ioloop.h"
#include "testutil.h"

static void nop(void *arg) { (void)arg; }
static void on_io(int fd, unsigned ev, void *arg)
{
    (void)fd;
    (void)ev;
    (void)arg;
}

static bool fd_open(int fd) { return fcntl(fd, F_GETFD) >= 0; }

START_TEST(test_close_all_fds)
{
    iol_loop *loop;
    ck_assert_int_eq(iol_loop_new(&loop, NULL), 0);
    int a[2], b[2];
    ck_assert_int_eq(pipe(a), 0);
    ck_assert_int_eq(pipe(b), 0);
    ck_assert_int_eq(iol_loop_add_handler(loop, a[0], IOL_READ, on_io, NULL), 0);
    ck_assert_int_eq(iol_loop_add_handler(loop, b[0], IOL_READ, on_io, NULL), 0);
    ck_assert_int_eq(iol_loop_handler_count(loop), 2);
    ck_assert_int_eq(iol_loop_close(loop, true), 0);
    ck_assert(!fd_open(a[0]));
    ck_assert(!fd_open(b[0]));
    ck_assert(fd_open(a[1]));
    close(a[1]);
    close(b[1]);
}
END_TEST

START_TEST(test_close_keeps_fds)
{
    iol_loop *loop;
    ck_assert_int_eq(iol_loop_new(&loop, NULL), 0);
    int a[2];
    ck_assert_int_eq(pipe(a), 0);
    ck_assert_int_eq(iol_loop_add_handler(loop, a[0], IOL_READ, on_io, NULL), 0);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
    ck_assert(fd_open(a[0]));
    close(a[0]);
    close(a[1]);
}
END_TEST

START_TEST(test_close_counts_dropped)
{
    iol_loop *loop;
    ck_assert_int_eq(iol_loop_new(&loop, NULL), 0);
    for (int i = 0; i < 3; i++)
        iol_loop_add_callback(loop, nop, NULL);
    iol_loop_add_callback_from_signal(loop, nop, NULL);
    iol_timeout t;
    iol_loop_call_later(loop, 10, nop, NULL, NULL);
    iol_loop_call_later(loop, 10, nop, NULL, &t);
    iol_loop_remove_timeout(loop, t); /* cancelled: not counted */
    ck_assert_int_eq(iol_loop_close(loop, false), 5);
}
END_TEST

static int busy_rc;
static void close_inside(void *arg)
{
    busy_rc = iol_loop_close(arg, false);
    iol_loop_stop(arg);
}

START_TEST(test_close_while_running_is_ebusy)
{
    iol_loop *loop;
    ck_assert_int_eq(iol_loop_new(&loop, NULL), 0);
    iol_loop_add_callback(loop, close_inside, loop);
    iol_loop_start(loop);
    ck_assert_int_eq(busy_rc, -EBUSY);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
}
END_TEST

START_TEST(test_calls_after_close)
{
    iol_loop *loop;
    ck_assert_int_eq(iol_loop_new(&loop, NULL), 0);
    iol_loop_ref(loop);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
    ck_assert_int_eq(iol_loop_close(loop, false), -ESHUTDOWN);
    ck_assert_int_eq(iol_loop_add_callback(loop, nop, NULL), -ESHUTDOWN);
    ck_assert_int_eq(iol_loop_add_callback_from_signal(loop, nop, NULL), -ESHUTDOWN);
    ck_assert_int_eq(iol_loop_call_later(loop, 1, nop, NULL, NULL), -ESHUTDOWN);
    ck_assert_int_eq(iol_loop_add_handler(loop, 0, IOL_READ, on_io, NULL), -ESHUTDOWN);
    ck_assert_int_eq(iol_loop_start(loop), -ESHUTDOWN);
    ck_assert_int_eq(iol_loop_stop(loop), -ESHUTDOWN);
    ck_assert(!iol_loop_running(loop));
    iol_loop_unref(loop);
}
END_TEST

/* Producers holding refs keep posting while the loop runs, stops and
 * closes: every post returns 0 or -ESHUTDOWN and nothing crashes. */
static _Atomic int run_count;
static _Atomic bool producers_go;
static void count(void *arg)
{
    (void)arg;
    atomic_fetch_add(&run_count, 1);
}
struct late {
    iol_loop *loop;
    int ok, shut, other;
};
static void *late_producer(void *arg)
{
    struct late *p = arg;
    while (!atomic_load(&producers_go))
        ;
    for (;;) {
        int rc = iol_loop_add_callback(p->loop, count, NULL);
        if (rc == 0) {
            /* Pace past a cap: under valgrind the loop gets few slices. */
            if (++p->ok > 20000)
                usleep(50);
        }
        else if (rc == -ESHUTDOWN) {
            if (++p->shut > 100)
                break;
        } else
            p->other++;
    }
    iol_loop_unref(p->loop);
    return NULL;
}

static void stop_cb(void *arg) { iol_loop_stop(arg); }

START_TEST(test_close_with_live_producers)
{
    iol_loop *loop;
    ck_assert_int_eq(iol_loop_new(&loop, NULL), 0);
    pthread_t t[3];
    struct late ps[3];
    atomic_store(&producers_go, false);
    for (int i = 0; i < 3; i++) {
        ps[i] = (struct late){ .loop = iol_loop_ref(loop) };
        pthread_create(&t[i], NULL, late_producer, &ps[i]);
    }
    atomic_store(&producers_go, true);
    iol_loop_call_later(loop, 0.05, stop_cb, loop, NULL);
    iol_loop_start(loop);
    int dropped = iol_loop_close(loop, false);
    ck_assert_int_ge(dropped, 0);
    for (int i = 0; i < 3; i++) {
        pthread_join(t[i], NULL);
        ck_assert_int_eq(ps[i].other, 0);
        ck_assert_int_gt(ps[i].shut, 100);
    }
    ck_assert_int_gt(atomic_load(&run_count), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("close");
    TCase *tc = iol_test_tcase("close", 30);
    tcase_add_test(tc, test_close_all_fds);
    tcase_add_test(tc, test_close_keeps_fds);
    tcase_add_test(tc, test_close_counts_dropped);
    tcase_add_test(tc, test_close_while_running_is_ebusy);
    tcase_add_test(tc, test_calls_after_close);
    tcase_add_test(tc, test_close_with_live_producers);
    suite_add_tcase(s, tc);
    return iol_test_run(s);
}
