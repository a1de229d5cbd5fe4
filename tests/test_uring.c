/* The uring poller's own hazards (the shared backend tests are in
 * test_poller.c): stale completions after remove and fd reuse, a full SQ
 * and an overflowing CQ, polls of a thread that exited, files released on
 * remove and on close, the kernel refusing io_uring. Without liburing:
 * "uring" is an unknown name. */
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "ioloop.h"
#include "poller/poller.h"
#include "testutil.h"

#ifdef IOL_HAVE_URING

static const iol__poller_ops *const ops = &iol__poller_uring;

static iol__poller *open_poller(void)
{
    iol__poller *p = NULL;
    ck_assert_int_eq(ops->create(&p), 0);
    return p;
}

static void make_pair(int sv[2])
{
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
}

/* Events reported for fd by one wait, 0 if none. */
static unsigned events_for(iol__poller *p, int fd, int timeout_ms)
{
    iol__poller_event ev[64];
    int n = ops->wait(p, ev, 64, timeout_ms);
    ck_assert_int_ge(n, 0);
    unsigned got = 0;
    for (int i = 0; i < n; i++)
        if (ev[i].fd == fd)
            got |= ev[i].events;
    return got;
}

/* A wait with max = 1 leaves the second ready fd's CQE in the CQ; that fd
 * is then removed, closed and its number given to a quiet socket in the
 * same iteration. The old CQE must not reach the new registration. */
START_TEST(test_stale_cqe_after_reuse)
{
    iol__poller *p = open_poller();
    int a[2], b[2], quiet[2];
    make_pair(a);
    make_pair(b);
    make_pair(quiet);
    ck_assert_int_eq(ops->add(p, a[0], IOL_READ), 0);
    ck_assert_int_eq(ops->add(p, b[0], IOL_READ), 0);
    ck_assert_int_eq(write(a[1], "x", 1), 1);
    ck_assert_int_eq(write(b[1], "x", 1), 1);
    iol__poller_event ev[1];
    ck_assert_int_eq(ops->wait(p, ev, 1, 1000), 1);
    ck_assert(ev[0].fd == a[0] || ev[0].fd == b[0]);
    int victim = ev[0].fd == a[0] ? b[0] : a[0];
    ck_assert_int_eq(ops->remove(p, victim), 0);
    ck_assert_int_eq(dup2(quiet[0], victim), victim); /* closes the old file */
    ck_assert_int_eq(ops->add(p, victim, IOL_READ), 0);
    ck_assert_uint_eq(events_for(p, victim, 0), 0);
    ck_assert_uint_eq(events_for(p, victim, 50), 0);
    ck_assert_int_eq(write(quiet[1], "y", 1), 1);
    ck_assert_uint_eq(events_for(p, victim, 1000), IOL_READ);

    /* modify: a queued READ CQE of the old mask is not reported after a
     * switch to errors only. */
    int keep = victim == a[0] ? b[0] : a[0];
    ck_assert_int_eq(ops->wait(p, ev, 1, 1000), 1); /* one of keep / victim; the other's CQE waits */
    int waiting = ev[0].fd == keep ? victim : keep;
    ck_assert_int_eq(ops->modify(p, waiting, 0), 0);
    ck_assert_uint_eq(events_for(p, waiting, 0), 0);
    ops->close(p);
    for (int i = 0; i < 2; i++) {
        close(a[i]);
        close(b[i]);
        close(quiet[i]);
    }
}
END_TEST

/* More ready fds than SQ entries (256) and than CQ entries (1024): the
 * arms are submitted in several goes, the overflowing CQEs are kept by
 * the kernel, and every fd is reported, twice in a row (level). */
START_TEST(test_sq_full_cq_overflow)
{
    enum { COUNT = 1500 };
    struct rlimit rl;
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_cur < 2 * COUNT + 64) {
        rl.rlim_cur = rl.rlim_max;
        if (rl.rlim_max < 2 * COUNT + 64 || setrlimit(RLIMIT_NOFILE, &rl) < 0) {
            fprintf(stderr, "test_sq_full_cq_overflow: RLIMIT_NOFILE too low, skipped\n");
            return;
        }
    }
    iol__poller *p = open_poller();
    int(*pairs)[2] = calloc(COUNT, sizeof *pairs);
    iol__poller_event *ev = calloc(4 * COUNT, sizeof *ev);
    char *seen = calloc(4 * COUNT, 1);
    ck_assert(pairs && ev && seen);
    for (int i = 0; i < COUNT; i++) {
        make_pair(pairs[i]);
        ck_assert_int_lt(pairs[i][0], 4 * COUNT);
        ck_assert_int_eq(write(pairs[i][1], "x", 1), 1);
        ck_assert_int_eq(ops->add(p, pairs[i][0], IOL_READ), 0);
    }
    for (int round = 0; round < 2; round++) {
        memset(seen, 0, 4 * COUNT);
        int total = 0;
        for (int tries = 0; total < COUNT && tries < 50; tries++) {
            int n = ops->wait(p, ev, 4 * COUNT, 1000);
            ck_assert_int_ge(n, 0);
            for (int k = 0; k < n; k++) {
                ck_assert_uint_eq(ev[k].events, IOL_READ);
                ck_assert_int_eq(seen[ev[k].fd], 0); /* one poll per fd in flight */
                seen[ev[k].fd] = 1;
            }
            total += n;
        }
        ck_assert_int_eq(total, COUNT);
    }
    ops->close(p);
    for (int i = 0; i < COUNT; i++) {
        close(pairs[i][0]);
        close(pairs[i][1]);
    }
    free(pairs);
    free(ev);
    free(seen);
}
END_TEST

static void *arm_and_exit(void *arg)
{
    iol__poller *p = arg;
    iol__poller_event ev[4];
    ck_assert_int_eq(ops->wait(p, ev, 4, 0), 0); /* submits the polls from this thread */
    return NULL;
}

/* The kernel cancels a thread's requests when it exits; the poller re-arms
 * them from the thread that waits next (a loop run by one thread, then
 * by another). */
START_TEST(test_submitter_thread_exits)
{
    iol__poller *p = open_poller();
    int sv[2];
    make_pair(sv);
    ck_assert_int_eq(ops->add(p, sv[0], IOL_READ), 0);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, arm_and_exit, p), 0);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    usleep(20 * 1000); /* let the exit's cancellation land */
    ck_assert_uint_eq(events_for(p, sv[0], 0), 0);
    ck_assert_int_eq(write(sv[1], "x", 1), 1);
    unsigned got = 0;
    for (int i = 0; i < 5 && !got; i++)
        got = events_for(p, sv[0], 1000);
    ck_assert_uint_eq(got, IOL_READ);
    ops->close(p);
    close(sv[0]);
    close(sv[1]);
}
END_TEST

/* An armed poll holds its file. remove then close: the peer sees EOF once
 * the next wait has handed the POLL_REMOVE over; close without remove:
 * closing the poller releases it. */
START_TEST(test_files_released)
{
    iol__poller *p = open_poller();
    int a[2], b[2];
    make_pair(a);
    make_pair(b);
    ck_assert_int_eq(ops->add(p, a[0], IOL_READ), 0);
    ck_assert_int_eq(ops->add(p, b[0], IOL_READ), 0);
    ck_assert_int_eq(ops->wait(p, (iol__poller_event[4]){ 0 }, 4, 0), 0); /* both armed */
    ck_assert_int_eq(ops->remove(p, a[0]), 0);
    close(a[0]);
    ck_assert_int_eq(ops->wait(p, (iol__poller_event[4]){ 0 }, 4, 0), 0);
    char c;
    ck_assert_int_eq(read(a[1], &c, 1), 0); /* EOF, not EAGAIN */
    close(b[0]);
    ops->close(p);
    ck_assert_int_eq(read(b[1], &c, 1), 0);
    close(a[1]);
    close(b[1]);
}
END_TEST

static void stop_cb(void *arg) { iol_loop_stop(arg); }
static void never(int fd, unsigned events, void *arg)
{
    (void)fd, (void)events, (void)arg;
    ck_abort_msg("handler of a quiet fd called");
}

/* A loop closed with polls in flight: its fds are closed and released. */
START_TEST(test_loop_close_with_polls)
{
    iol_loop *loop = NULL;
    ck_assert_int_eq(iol_loop_new(&loop, &(iol_loop_config){ .poller = "uring", .make_current = IOL_CURRENT_NEVER }),
                     0);
    ck_assert_str_eq(iol_loop_poller(loop), "uring");
    int sv[2];
    make_pair(sv);
    ck_assert_int_eq(iol_loop_add_handler(loop, sv[0], IOL_READ, never, NULL), 0);
    ck_assert_int_eq(iol_loop_call_later(loop, 0.02, stop_cb, loop, NULL), 0);
    ck_assert_int_eq(iol_loop_start(loop), 0); /* the poll is in the kernel */
    ck_assert_int_eq(iol_loop_close(loop, true), 0);
    char c;
    ck_assert_int_eq(read(sv[1], &c, 1), 0);
    close(sv[1]);
}
END_TEST

/* A seccomp filter failing io_uring_setup with errno: the loop's creation
 * returns that error (as kernel.io_uring_disabled=2 gives -EPERM). */
static void refuse_io_uring(int err)
{
    struct sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (unsigned)err),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = { .len = sizeof code / sizeof code[0], .filter = code };
    ck_assert_int_eq(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
    ck_assert_int_eq(prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog), 0);
}

START_TEST(test_kernel_refuses)
{
    int err = _i == 0 ? EPERM : ENOSYS;
    refuse_io_uring(err); /* this test's forked process only */
    iol_loop *loop = NULL;
    ck_assert_int_eq(iol_loop_new(&loop, &(iol_loop_config){ .poller = "uring" }), -err);
    ck_assert_ptr_null(loop);
    ck_assert_int_eq(iol_loop_new(&loop, &(iol_loop_config){ .poller = "epoll" }), 0);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
}
END_TEST

START_TEST(test_named)
{
    ck_assert_ptr_eq(iol__poller_find("uring"), &iol__poller_uring);
    setenv("IOL_POLLER", "uring", 1);
    iol_loop *loop = NULL;
    ck_assert_int_eq(iol_loop_new(&loop, NULL), 0);
    ck_assert_str_eq(iol_loop_poller(loop), "uring");
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
    unsetenv("IOL_POLLER");
}
END_TEST

#else /* !IOL_HAVE_URING */

START_TEST(test_named)
{
    ck_assert_ptr_null(iol__poller_find("uring"));
    iol_loop *loop = NULL;
    ck_assert_int_eq(iol_loop_new(&loop, &(iol_loop_config){ .poller = "uring" }), -EINVAL);
}
END_TEST

#endif

static Suite *uring_suite(void)
{
    Suite *s = suite_create("uring");
    TCase *tc = iol_test_tcase("uring", 60);
    tcase_add_test(tc, test_named);
#ifdef IOL_HAVE_URING
    tcase_add_test(tc, test_stale_cqe_after_reuse);
    tcase_add_test(tc, test_sq_full_cq_overflow);
    tcase_add_test(tc, test_submitter_thread_exits);
    tcase_add_test(tc, test_files_released);
    tcase_add_test(tc, test_loop_close_with_polls);
    tcase_add_loop_test(tc, test_kernel_refuses, 0, 2);
#endif
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return iol_test_run(uring_suite());
}
