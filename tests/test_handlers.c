/* fd handlers through the public loop API, the same stories on each
 * backend (epoll, poll, select): readiness, level triggering, updates,
 * removal during dispatch, errors, and choosing the backend. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ioloop.h"
#include "testutil.h"

/* The optional backends pass the same suite. */
static const char *const names[] = { "epoll", "poll", "select",
#ifdef IOL_HAVE_ZMQ
                                     "zmq",
#endif
#ifdef IOL_HAVE_URING
                                     "uring",
#endif
};
#define NBACKENDS (int)(sizeof names / sizeof names[0])

static iol_loop *new_loop(const char *poller)
{
    iol_loop_config cfg = { .poller = poller, .make_current = IOL_CURRENT_NEVER };
    iol_loop *loop = NULL;
    ck_assert_int_eq(iol_loop_new(&loop, &cfg), 0);
    ck_assert_str_eq(iol_loop_poller(loop), poller);
    return loop;
}

static void make_pair(int sv[2])
{
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
}

static void stop_cb(void *arg) { iol_loop_stop(arg); }

/* Runs the loop, bounded: a stuck test ends after `limit` seconds. */
static void run_bounded(iol_loop *loop, double limit)
{
    iol_timeout guard;
    ck_assert_int_eq(iol_loop_call_later(loop, limit, stop_cb, loop, &guard), 0);
    ck_assert_int_eq(iol_loop_start(loop), 0);
    iol_loop_remove_timeout(loop, guard);
}

/* What a handler saw. */
typedef struct seen {
    iol_loop *loop;
    int calls;
    unsigned events[16];
    int stop_after;   /* stop the loop after this many calls (0: never) */
    bool drain;       /* read what is readable */
} seen;

static void record(int fd, unsigned events, void *arg)
{
    seen *s = arg;
    if (s->calls < 16)
        s->events[s->calls] = events;
    s->calls++;
    if (s->drain && (events & IOL_READ)) {
        char buf[64];
        while (read(fd, buf, sizeof buf) > 0)
            ;
    }
    if (s->stop_after && s->calls == s->stop_after)
        iol_loop_stop(s->loop);
}

START_TEST(test_read_and_write_readiness)
{
    iol_loop *loop = new_loop(names[_i]);
    int sv[2];
    make_pair(sv);
    seen r = { .loop = loop, .stop_after = 1, .drain = true };
    ck_assert_int_eq(iol_loop_add_handler(loop, sv[0], IOL_READ, record, &r), 0);
    ck_assert_int_eq(write(sv[1], "ping", 4), 4);
    run_bounded(loop, 10);
    ck_assert_int_eq(r.calls, 1);
    ck_assert_uint_eq(r.events[0], IOL_READ); /* writable too, but never asked */
    ck_assert_int_eq(iol_loop_remove_handler(loop, sv[0]), 0);

    seen w = { .loop = loop, .stop_after = 1 };
    ck_assert_int_eq(iol_loop_add_handler(loop, sv[1], IOL_WRITE, record, &w), 0);
    run_bounded(loop, 10);
    ck_assert_int_eq(w.calls, 1);
    ck_assert_uint_eq(w.events[0], IOL_WRITE);
    ck_assert_int_eq(iol_loop_close(loop, true), 0);
    close(sv[0]);
}
END_TEST

/* Data left unread is reported again on every iteration. */
START_TEST(test_level_triggered)
{
    iol_loop *loop = new_loop(names[_i]);
    int sv[2];
    make_pair(sv);
    seen r = { .loop = loop, .stop_after = 3 };
    ck_assert_int_eq(iol_loop_add_handler(loop, sv[0], IOL_READ, record, &r), 0);
    ck_assert_int_eq(write(sv[1], "x", 1), 1);
    run_bounded(loop, 10);
    ck_assert_int_eq(r.calls, 3);
    for (int i = 0; i < 3; i++)
        ck_assert_uint_eq(r.events[i], IOL_READ);
    ck_assert_int_eq(iol_loop_close(loop, true), 0);
    close(sv[1]);
}
END_TEST

/* update_handler switches what is reported: WRITE first, then READ only
 * (the still-writable socket is no longer reported), then errors only. */
typedef struct switcher {
    iol_loop *loop;
    int fd, peer;
    int writes, reads;
} switcher;

static void switch_events(int fd, unsigned events, void *arg)
{
    switcher *s = arg;
    if (events & IOL_WRITE) {
        ck_assert_uint_eq(events, IOL_WRITE);
        s->writes++;
        ck_assert_int_eq(iol_loop_update_handler(s->loop, fd, IOL_READ), 0);
        ck_assert_int_eq(write(s->peer, "x", 1), 1);
        return;
    }
    ck_assert_uint_eq(events, IOL_READ);
    s->reads++;
    /* Errors only: the unread byte must not be reported any more. */
    ck_assert_int_eq(iol_loop_update_handler(s->loop, fd, IOL_ERROR), 0);
}

START_TEST(test_update_handler)
{
    iol_loop *loop = new_loop(names[_i]);
    int sv[2];
    make_pair(sv);
    switcher s = { .loop = loop, .fd = sv[0], .peer = sv[1] };
    ck_assert_int_eq(iol_loop_add_handler(loop, sv[0], IOL_READ, switch_events, &s), 0);
    ck_assert_int_eq(iol_loop_update_handler(loop, sv[0], IOL_WRITE), 0);
    run_bounded(loop, 0.3);
    ck_assert_int_eq(s.writes, 1);
    ck_assert_int_eq(s.reads, 1);
    ck_assert_int_eq(iol_loop_close(loop, true), 0);
    close(sv[1]);
}
END_TEST

/* Two fds ready in the same poll; whichever handler runs first removes the
 * other (and stops the loop): the other's polled event is dropped. */
typedef struct remover {
    iol_loop *loop;
    int other_fd;
    int *calls;
} remover;

static void remove_other(int fd, unsigned events, void *arg)
{
    (void)fd;
    (void)events;
    remover *r = arg;
    (*r->calls)++;
    ck_assert_int_eq(iol_loop_remove_handler(r->loop, r->other_fd), 0);
    iol_loop_stop(r->loop);
}

START_TEST(test_remove_inside_handler)
{
    iol_loop *loop = new_loop(names[_i]);
    int a[2], b[2];
    make_pair(a);
    make_pair(b);
    int calls = 0;
    remover ra = { loop, b[0], &calls }, rb = { loop, a[0], &calls };
    ck_assert_int_eq(iol_loop_add_handler(loop, a[0], IOL_READ, remove_other, &ra), 0);
    ck_assert_int_eq(iol_loop_add_handler(loop, b[0], IOL_READ, remove_other, &rb), 0);
    ck_assert_int_eq(write(a[1], "x", 1), 1);
    ck_assert_int_eq(write(b[1], "x", 1), 1);
    run_bounded(loop, 10);
    ck_assert_int_eq(calls, 1);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
    for (int i = 0; i < 2; i++) {
        close(a[i]);
        close(b[i]);
    }
}
END_TEST

/* A handler closes its fd before removing it, then a new socket takes the
 * same number and is watched again (the backend forgot the closed one). */
typedef struct reuser {
    iol_loop *loop;
    int fd;
    int spare[2];
    seen second;
} reuser;

static void close_then_reuse(int fd, unsigned events, void *arg)
{
    (void)events;
    reuser *r = arg;
    close(fd);
    ck_assert_int_eq(iol_loop_remove_handler(r->loop, fd), 0);
    ck_assert_int_eq(dup2(r->spare[0], fd), fd);
    ck_assert_int_eq(iol_loop_add_handler(r->loop, fd, IOL_READ, record, &r->second), 0);
    ck_assert_int_eq(write(r->spare[1], "y", 1), 1);
}

START_TEST(test_closed_fd_number_reused)
{
    iol_loop *loop = new_loop(names[_i]);
    int sv[2];
    make_pair(sv);
    reuser r = { .loop = loop, .fd = sv[0], .second = { .loop = loop, .stop_after = 1, .drain = true } };
    make_pair(r.spare);
    ck_assert_int_eq(iol_loop_add_handler(loop, sv[0], IOL_READ, close_then_reuse, &r), 0);
    ck_assert_int_eq(write(sv[1], "x", 1), 1);
    run_bounded(loop, 10);
    ck_assert_int_eq(r.second.calls, 1);
    ck_assert_uint_eq(r.second.events[0], IOL_READ);
    ck_assert_int_eq(iol_loop_close(loop, true), 0);
    close(sv[1]);
    close(r.spare[0]);
    close(r.spare[1]);
}
END_TEST

/* close_fd: removes the handler and closes the fd in one call; the number
 * is free for a new file at once, events of the closed fd polled in the
 * same iteration are dropped, and a closed fd inside the table is still
 * refused by add_handler (epoll: by the kernel, without an fcntl). */
static void never_ok(int fd, unsigned events, void *arg)
{
    (void)fd;
    (void)events;
    (void)arg;
    ck_abort_msg("handler should not run");
}

typedef struct closer {
    iol_loop *loop;
    int other_fd;
    int calls;
} closer;

static void close_other(int fd, unsigned events, void *arg)
{
    (void)fd;
    (void)events;
    closer *c = arg;
    c->calls++;
    ck_assert_int_eq(iol_loop_close_fd(c->loop, c->other_fd), 0);
    iol_loop_stop(c->loop);
}

START_TEST(test_close_fd)
{
    iol_loop *loop = new_loop(names[_i]);
    int a[2], b[2];
    make_pair(a);
    make_pair(b);
    closer ca = { loop, b[0], 0 }, cb = { loop, a[0], 0 };
    ck_assert_int_eq(iol_loop_add_handler(loop, a[0], IOL_READ, close_other, &ca), 0);
    ck_assert_int_eq(iol_loop_add_handler(loop, b[0], IOL_READ, close_other, &cb), 0);
    ck_assert_int_eq(iol_loop_handler_count(loop), 2);
    ck_assert_int_eq(write(a[1], "x", 1), 1);
    ck_assert_int_eq(write(b[1], "x", 1), 1);
    run_bounded(loop, 10);
    ck_assert_int_eq(ca.calls + cb.calls, 1); /* the closed one's event was dropped */
    ck_assert_int_eq(iol_loop_handler_count(loop), 1);
    int closed = ca.calls ? b[0] : a[0], open_fd = ca.calls ? a[0] : b[0];
    ck_assert_int_eq(fcntl(closed, F_GETFD), -1);
    /* Below the table's size, a closed fd is refused, not watched. */
    ck_assert_int_eq(iol_loop_add_handler(loop, closed, IOL_READ, never_ok, NULL), -EBADF);
    ck_assert_int_eq(iol_loop_close_fd(loop, closed), -EBADF);
    /* Its number reused by a new socket: watched normally. */
    int c[2];
    make_pair(c);
    if (c[0] != closed) { /* socketpair may have taken the lowest number itself */
        ck_assert_int_eq(dup2(c[0], closed), closed);
        close(c[0]);
    }
    seen got = { .loop = loop, .stop_after = 1, .drain = true };
    ck_assert_int_eq(iol_loop_add_handler(loop, closed, IOL_READ, record, &got), 0);
    ck_assert_int_eq(write(c[1], "y", 1), 1);
    ck_assert_int_eq(iol_loop_remove_handler(loop, open_fd), 0);
    run_bounded(loop, 10);
    ck_assert_int_eq(got.calls, 1);
    /* An fd without a handler is just closed. */
    int d[2];
    make_pair(d);
    ck_assert_int_eq(iol_loop_close_fd(loop, d[0]), 0);
    ck_assert_int_eq(fcntl(d[0], F_GETFD), -1);
    ck_assert_int_eq(iol_loop_close_fd(loop, closed), 0);
    ck_assert_int_eq(iol_loop_handler_count(loop), 0);
    /* Churn: many connections ended with close_fd leave nothing behind. */
    for (int i = 0; i < 500; i++) {
        int e[2];
        make_pair(e);
        ck_assert_int_eq(iol_loop_add_handler(loop, e[0], IOL_READ, never_ok, NULL), 0);
        ck_assert_int_eq(write(e[1], "z", 1), 1);
        ck_assert_int_eq(iol_loop_close_fd(loop, e[0]), 0);
        close(e[1]);
    }
    ck_assert_int_eq(iol_loop_handler_count(loop), 0);
    ck_assert_int_eq(iol_loop_add_callback(loop, stop_cb, loop), 0);
    run_bounded(loop, 10); /* polls once: no event for a closed fd */
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
    close(open_fd);
    close(a[1]);
    close(b[1]);
    close(c[1]);
    close(d[1]);
}
END_TEST

static void never(int fd, unsigned events, void *arg)
{
    (void)fd;
    (void)events;
    (void)arg;
    ck_abort_msg("handler should not run");
}

START_TEST(test_bad_arguments)
{
    iol_loop *loop = new_loop(names[_i]);
    int sv[2];
    make_pair(sv);
    int closed[2];
    ck_assert_int_eq(pipe(closed), 0);
    close(closed[0]);
    close(closed[1]);

    ck_assert_int_eq(iol_loop_add_handler(NULL, sv[0], IOL_READ, never, NULL), -EINVAL);
    ck_assert_int_eq(iol_loop_add_handler(loop, sv[0], IOL_READ, NULL, NULL), -EINVAL);
    ck_assert_int_eq(iol_loop_add_handler(loop, sv[0], 0, never, NULL), -EINVAL);
    ck_assert_int_eq(iol_loop_add_handler(loop, sv[0], 0x100, never, NULL), -EINVAL);
    ck_assert_int_eq(iol_loop_add_handler(loop, sv[0], IOL_READ | 0x2, never, NULL), -EINVAL);
    ck_assert_int_eq(iol_loop_add_handler(loop, -1, IOL_READ, never, NULL), -EBADF);
    ck_assert_int_eq(iol_loop_add_handler(loop, closed[0], IOL_READ, never, NULL), -EBADF);
    ck_assert_int_eq(iol_loop_update_handler(loop, sv[0], IOL_READ), -ENOENT);
    ck_assert_int_eq(iol_loop_remove_handler(loop, sv[0]), -ENOENT);
    ck_assert_int_eq(iol_loop_update_handler(loop, -1, IOL_READ), -EBADF);
    ck_assert_int_eq(iol_loop_remove_handler(loop, -1), -EBADF);

    ck_assert_int_eq(iol_loop_add_handler(loop, sv[0], IOL_ERROR, never, NULL), 0);
    ck_assert_int_eq(iol_loop_add_handler(loop, sv[0], IOL_READ, never, NULL), -EEXIST);
    ck_assert_int_eq(iol_loop_update_handler(loop, sv[0], 0), -EINVAL);
    ck_assert_int_eq(iol_loop_update_handler(loop, sv[0], 0x40), -EINVAL);
    ck_assert_int_eq(iol_loop_update_handler(loop, sv[0], IOL_READ | IOL_WRITE | IOL_ERROR), 0);
    ck_assert_int_eq(iol_loop_update_handler(loop, sv[0], IOL_ERROR), 0);
    ck_assert_int_eq(iol_loop_remove_handler(loop, sv[0]), 0);
    ck_assert_int_eq(iol_loop_remove_handler(loop, sv[0]), -ENOENT);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
    close(sv[0]);
    close(sv[1]);
}
END_TEST

/* Peer closed: errors are reported though only READ (or nothing) was
 * asked; select cannot see errors, the reader still gets READ for EOF. */
START_TEST(test_error_on_peer_close)
{
    bool is_select = strcmp(names[_i], "select") == 0;
    iol_loop *loop = new_loop(names[_i]);
    int reader[2], quiet[2];
    make_pair(reader);
    make_pair(quiet);
    seen r = { .loop = loop, .stop_after = 1 };
    seen q = { .loop = loop };
    ck_assert_int_eq(iol_loop_add_handler(loop, reader[0], IOL_READ, record, &r), 0);
    ck_assert_int_eq(iol_loop_add_handler(loop, quiet[0], IOL_ERROR, record, &q), 0);
    close(reader[1]);
    close(quiet[1]);
    run_bounded(loop, 10);
    ck_assert_int_ge(r.calls, 1);
    if (is_select) {
        ck_assert_uint_eq(r.events[0], IOL_READ);
        ck_assert_int_eq(q.calls, 0);
    } else {
        ck_assert_uint_eq(r.events[0], IOL_READ | IOL_ERROR);
        ck_assert_int_ge(q.calls, 1);
        ck_assert_uint_eq(q.events[0], IOL_ERROR);
    }
    ck_assert_int_eq(iol_loop_close(loop, true), 0);
}
END_TEST

/* Raises RLIMIT_NOFILE so fd `high` can exist; false if not allowed. */
static bool allow_fd(int high)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return false;
    if (rl.rlim_cur > (rlim_t)high)
        return true;
    if (rl.rlim_max <= (rlim_t)high)
        return false;
    rl.rlim_cur = (rlim_t)high + 1;
    return setrlimit(RLIMIT_NOFILE, &rl) == 0;
}

/* Backend limits seen through the API: select refuses fds >= FD_SETSIZE,
 * epoll refuses regular files. */
START_TEST(test_backend_limits)
{
    const char *name = names[_i];
    iol_loop *loop = new_loop(name);
    FILE *f = tmpfile();
    ck_assert_ptr_nonnull(f);
    int err = iol_loop_add_handler(loop, fileno(f), IOL_READ, never, NULL);
    ck_assert_int_eq(err, strcmp(name, "epoll") == 0 ? -EPERM : 0);
    if (err == 0)
        ck_assert_int_eq(iol_loop_remove_handler(loop, fileno(f)), 0);
    fclose(f);

    int high = FD_SETSIZE + 76;
    if (allow_fd(high)) {
        int sv[2];
        make_pair(sv);
        ck_assert_int_eq(dup2(sv[0], high), high);
        seen r = { .loop = loop, .stop_after = 1, .drain = true };
        err = iol_loop_add_handler(loop, high, IOL_READ, record, &r);
        if (strcmp(name, "select") == 0) {
            ck_assert_int_eq(err, -EINVAL);
            ck_assert_int_eq(iol_loop_remove_handler(loop, high), -ENOENT);
        } else {
            ck_assert_int_eq(err, 0);
            ck_assert_int_eq(write(sv[1], "x", 1), 1);
            run_bounded(loop, 10);
            ck_assert_int_eq(r.calls, 1);
            ck_assert_int_eq(iol_loop_remove_handler(loop, high), 0);
        }
        close(high);
        close(sv[0]);
        close(sv[1]);
    } else {
        fprintf(stderr, "test_backend_limits: cannot raise RLIMIT_NOFILE, FD_SETSIZE part skipped\n");
    }
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
}
END_TEST

START_TEST(test_choose_backend)
{
    unsetenv("IOL_POLLER");
    iol_loop *loop = NULL;
    ck_assert_int_eq(iol_loop_new(&loop, NULL), 0);
    ck_assert_str_eq(iol_loop_poller(loop), "epoll");
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
    ck_assert_ptr_null(iol_loop_poller(NULL));

    for (int i = 0; i < NBACKENDS; i++) {
        setenv("IOL_POLLER", names[i], 1);
        loop = NULL;
        ck_assert_int_eq(iol_loop_new(&loop, NULL), 0);
        ck_assert_str_eq(iol_loop_poller(loop), names[i]);
        ck_assert_int_eq(iol_loop_close(loop, false), 0);
        /* An explicit name wins over the environment. */
        const char *other = names[(i + 1) % NBACKENDS];
        iol_loop_config cfg = { .poller = other };
        ck_assert_int_eq(iol_loop_new(&loop, &cfg), 0);
        ck_assert_str_eq(iol_loop_poller(loop), other);
        ck_assert_int_eq(iol_loop_close(loop, false), 0);
    }
    setenv("IOL_POLLER", "", 1);
    ck_assert_int_eq(iol_loop_new(&loop, NULL), 0);
    ck_assert_str_eq(iol_loop_poller(loop), "epoll");
    ck_assert_int_eq(iol_loop_close(loop, false), 0);

    iol_loop *untouched = (iol_loop *)&untouched;
    iol_loop_config bad = { .poller = "kqueue" };
    ck_assert_int_eq(iol_loop_new(&untouched, &bad), -EINVAL);
    ck_assert_ptr_eq(untouched, (iol_loop *)&untouched);
    setenv("IOL_POLLER", "kqueue", 1);
    ck_assert_int_eq(iol_loop_new(&untouched, NULL), -EINVAL);
    ck_assert_ptr_eq(untouched, (iol_loop *)&untouched);
    unsetenv("IOL_POLLER");
}
END_TEST

static Suite *handlers_suite(void)
{
    Suite *s = suite_create("handlers");
    TCase *tc = iol_test_tcase("each backend", 60);
    tcase_add_loop_test(tc, test_read_and_write_readiness, 0, NBACKENDS);
    tcase_add_loop_test(tc, test_level_triggered, 0, NBACKENDS);
    tcase_add_loop_test(tc, test_update_handler, 0, NBACKENDS);
    tcase_add_loop_test(tc, test_remove_inside_handler, 0, NBACKENDS);
    tcase_add_loop_test(tc, test_closed_fd_number_reused, 0, NBACKENDS);
    tcase_add_loop_test(tc, test_close_fd, 0, NBACKENDS);
    tcase_add_loop_test(tc, test_bad_arguments, 0, NBACKENDS);
    tcase_add_loop_test(tc, test_error_on_peer_close, 0, NBACKENDS);
    tcase_add_loop_test(tc, test_backend_limits, 0, NBACKENDS);
    suite_add_tcase(s, tc);
    TCase *choose = iol_test_tcase("choosing", 30);
    tcase_add_test(choose, test_choose_backend);
    suite_add_tcase(s, choose);
    return s;
}

int main(void)
{
    return iol_test_run(handlers_suite());
}
