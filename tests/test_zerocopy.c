/* Zero-copy writes: caller-owned buffers (iol_stream_write_ref) and file
 * regions (iol_stream_sendfile), in order with copied writes, each
 * release run exactly once, from the loop, written or dropped at close.
 * Every stream is closed and the loop closed at the end, so leak checks
 * are exact. */
#include "ioloop.h"
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* ----------------------------------------------------------------- Helpers */

static void on_safety_timeout(void *arg)
{
    ck_abort_msg("loop did not stop in time");
    iol_loop_stop(arg);
}

static void run_loop(iol_loop *loop)
{
    iol_timeout t = 0;
    ck_assert_int_eq(iol_loop_call_later(loop, iol_test_under_valgrind() ? 100 : 10, on_safety_timeout, loop, &t), 0);
    ck_assert_int_eq(iol_loop_start(loop), 0);
    iol_loop_remove_timeout(loop, t);
}

static void make_pair(int fds[2])
{
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
}

/* Reads exactly len bytes from a blocking fd (or fails after 10 s). */
static void read_exact(int fd, char *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        ck_assert_int_gt(poll(&p, 1, 10000), 0);
        ssize_t n = read(fd, buf + got, len - got);
        ck_assert_int_gt(n, 0);
        got += (size_t)n;
    }
}

typedef struct story {
    iol_loop *loop;
    iol_stream *s;
    int peer;
    bool in_call;
    int released[8]; /* how many times release i ran */
    int order[8];    /* release order */
    int nreleased;
    int closes;
    int close_error;
} story;

typedef struct tag {
    story *st;
    int i;
} tag;

static void on_release(void *arg)
{
    tag *t = arg;
    ck_assert(!t->st->in_call); /* never inside the call */
    t->st->released[t->i]++;
    t->st->order[t->st->nreleased++] = t->i;
}

static void on_close(iol_stream *s, void *arg)
{
    story *st = arg;
    st->closes++;
    st->close_error = iol_stream_error(s);
    iol_loop_stop(st->loop);
}

static void new_story(story *st)
{
    memset(st, 0, sizeof(*st));
    ck_assert_int_eq(iol_loop_new(&st->loop, NULL), 0);
    int fds[2];
    make_pair(fds);
    st->peer = fds[1];
    ck_assert_int_eq(iol_stream_new(&st->s, st->loop, fds[0], 0), 0);
    ck_assert_int_eq(iol_stream_set_close_callback(st->s, on_close, st), 0);
}

static void end_story(story *st)
{
    close(st->peer);
    ck_assert_int_eq(iol_loop_close(st->loop, false), 0);
}

static void close_when_done(void *arg)
{
    story *st = arg;
    ck_assert_int_eq(iol_stream_close(st->s), 0);
}

/* ------------------------------------------------------------------ Tests */

START_TEST(refs_in_order_with_copies)
{
    story st;
    new_story(&st);
    static const char b[] = "bbbb", d[] = "ddd";
    tag t0 = {&st, 0}, t1 = {&st, 1};
    st.in_call = true;
    ck_assert_int_eq(iol_stream_write(st.s, "a", 1, NULL, NULL), 0);
    ck_assert_int_eq(iol_stream_write_ref(st.s, b, 4, on_release, &t0), 0);
    ck_assert_int_eq(iol_stream_write(st.s, "cc", 2, NULL, NULL), 0);
    ck_assert_int_eq(iol_stream_write_ref(st.s, d, 3, on_release, &t1), 0);
    ck_assert_int_eq(iol_stream_write(st.s, "e", 1, close_when_done, &st), 0);
    st.in_call = false;
    run_loop(st.loop);
    char got[11];
    read_exact(st.peer, got, 11);
    ck_assert(memcmp(got, "abbbbccddde", 11) == 0);
    ck_assert_int_eq(st.released[0], 1);
    ck_assert_int_eq(st.released[1], 1);
    ck_assert_int_eq(st.order[0], 0);
    ck_assert_int_eq(st.order[1], 1);
    ck_assert_int_eq(st.close_error, 0);
    end_story(&st);
}
END_TEST

/* The stream takes no copy: bytes changed after queueing, before the
 * kernel took them, arrive changed. The peer reads nothing until then,
 * so most of 4 MiB waits in the queue. */
static char big[4 << 20];

static void change_tail(void *arg)
{
    story *st = arg;
    ck_assert_uint_gt(iol_stream_write_buffer_size(st->s), 1 << 20); /* still queued */
    big[sizeof(big) - 1] = 'Z';
    /* A thread reads it all now: the loop keeps writing meanwhile. */
    iol_loop_stop(st->loop);
}

static void on_big_release(void *arg)
{
    story *st = arg;
    st->released[0]++;
    ck_assert_int_eq(iol_stream_close(st->s), 0);
}

START_TEST(ref_is_not_copied)
{
    story st;
    new_story(&st);
    memset(big, 'x', sizeof(big));
    ck_assert_int_eq(iol_stream_write_ref(st.s, big, sizeof(big), on_big_release, &st), 0);
    ck_assert_uint_eq(iol_stream_write_buffer_size(st.s), sizeof(big));
    ck_assert_int_eq(iol_loop_call_later(st.loop, 0.05, change_tail, &st, NULL), 0);
    run_loop(st.loop);
    ck_assert_int_eq(st.released[0], 0);

    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        /* The reader: checks every byte and the changed last one. */
        static char buf[sizeof(big)];
        size_t got = 0;
        while (got < sizeof(buf)) {
            ssize_t n = read(st.peer, buf + got, sizeof(buf) - got);
            if (n <= 0)
                _exit(2);
            got += (size_t)n;
        }
        for (size_t i = 0; i + 1 < sizeof(buf); i++)
            if (buf[i] != 'x')
                _exit(3);
        _exit(buf[sizeof(buf) - 1] == 'Z' ? 0 : 4);
    }
    run_loop(st.loop); /* until the release closes the stream */
    ck_assert_int_eq(st.released[0], 1);
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "reader status %d", status);
    end_story(&st);
}
END_TEST

/* A file region between two copied writes. */
START_TEST(sendfile_region)
{
    story st;
    new_story(&st);
    char path[] = "/tmp/iol-zc-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    unlink(path);
    size_t flen = iol_test_scaled(3u << 20, 64u << 10);
    char *pattern = malloc(flen);
    ck_assert_ptr_nonnull(pattern);
    for (size_t i = 0; i < flen; i++)
        pattern[i] = (char)('a' + i % 26);
    ck_assert_int_eq(write(fd, pattern, flen), (ssize_t)flen);
    size_t off = 1000, len = flen - 2000;
    tag t0 = {&st, 0};
    st.in_call = true;
    ck_assert_int_eq(iol_stream_write(st.s, "<", 1, NULL, NULL), 0);
    ck_assert_int_eq(iol_stream_sendfile(st.s, fd, (off_t)off, len, on_release, &t0), 0);
    ck_assert_int_eq(iol_stream_write(st.s, ">", 1, close_when_done, &st), 0);
    st.in_call = false;
    ck_assert_uint_eq(iol_stream_write_buffer_size(st.s), len + 1); /* "<" went at once */

    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        char *buf = malloc(len + 2);
        size_t got = 0;
        while (got < len + 2) {
            ssize_t n = read(st.peer, buf + got, len + 2 - got);
            if (n <= 0) {
                free(buf);
                _exit(2);
            }
            got += (size_t)n;
        }
        int ok = buf[0] == '<' && buf[len + 1] == '>' && memcmp(buf + 1, pattern + off, len) == 0;
        free(buf);
        _exit(ok ? 0 : 3);
    }
    run_loop(st.loop);
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "reader status %d", status);
    ck_assert_int_eq(st.released[0], 1);
    ck_assert_int_eq(st.close_error, 0);
    close(fd);
    free(pattern);
    end_story(&st);
}
END_TEST

/* A region past the end of the file: the stream closes with -EIO and the
 * release still runs once. */
START_TEST(sendfile_past_eof_closes)
{
    story st;
    new_story(&st);
    char path[] = "/tmp/iol-zc-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    unlink(path);
    ck_assert_int_eq(write(fd, "short", 5), 5);
    tag t0 = {&st, 0};
    ck_assert_int_eq(iol_stream_sendfile(st.s, fd, 0, 100, on_release, &t0), 0);
    run_loop(st.loop);
    ck_assert_int_eq(st.close_error, -EIO);
    ck_assert_int_eq(st.released[0], 1);
    char got[5];
    read_exact(st.peer, got, 5);
    ck_assert(memcmp(got, "short", 5) == 0);
    close(fd);
    end_story(&st);
}
END_TEST

/* Closed with buffers queued (the peer never reads): each release runs
 * once, after the close, in order; a peer gone makes -EPIPE (no SIGPIPE:
 * the test would die of it). */
START_TEST(close_releases_queued)
{
    story st;
    new_story(&st);
    tag t0 = {&st, 0}, t1 = {&st, 1}, t2 = {&st, 2};
    ck_assert_int_eq(iol_stream_write_ref(st.s, big, sizeof(big), on_release, &t0), 0);
    ck_assert_int_eq(iol_stream_write(st.s, "x", 1, NULL, NULL), 0);
    ck_assert_int_eq(iol_stream_write_ref(st.s, big, 10, on_release, &t1), 0);
    ck_assert_int_eq(iol_stream_sendfile(st.s, st.peer, 0, 10, on_release, &t2), 0);
    ck_assert_int_eq(iol_stream_close(st.s), 0);
    ck_assert_int_eq(st.nreleased, 0); /* not inside close either */
    run_loop(st.loop);
    ck_assert_int_eq(st.nreleased, 3);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(st.released[i], 1);
        ck_assert_int_eq(st.order[i], i);
    }
    end_story(&st);

    /* The peer stops reading (SHUT_RD; a close would be seen as EOF
     * first): sendfile meets EPIPE. */
    new_story(&st);
    char path[] = "/tmp/iol-zc-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    unlink(path);
    ck_assert_int_eq(write(fd, big, 1 << 20), 1 << 20);
    ck_assert_int_eq(shutdown(st.peer, SHUT_RD), 0);
    ck_assert_int_eq(iol_stream_sendfile(st.s, fd, 0, 1 << 20, on_release, &t0), 0);
    run_loop(st.loop);
    ck_assert_int_eq(st.close_error, -EPIPE);
    ck_assert_int_eq(st.released[0], 1);
    close(fd);
    end_story(&st);
}
END_TEST

/* The loop closed with buffers still queued (the peer never reads), and
 * again with the stream's own close still pending: every release runs
 * exactly once, in order, by the time iol_loop_close returns, since the
 * caller may free its memory right after. */
START_TEST(loop_close_releases_queued)
{
    for (int closed_first = 0; closed_first < 2; closed_first++) {
        story st;
        new_story(&st);
        tag t0 = {&st, 0}, t1 = {&st, 1}, t2 = {&st, 2};
        ck_assert_int_eq(iol_stream_write_ref(st.s, big, sizeof(big), on_release, &t0), 0);
        ck_assert_int_eq(iol_stream_write_ref(st.s, big, 10, on_release, &t1), 0);
        ck_assert_int_eq(iol_stream_sendfile(st.s, st.peer, 0, 10, on_release, &t2), 0);
        if (closed_first)
            ck_assert_int_eq(iol_stream_close(st.s), 0);
        ck_assert_int_eq(st.nreleased, 0);
        ck_assert_int_ge(iol_loop_close(st.loop, false), 0);
        ck_assert_int_eq(st.nreleased, 3);
        for (int i = 0; i < 3; i++) {
            ck_assert_int_eq(st.released[i], 1);
            ck_assert_int_eq(st.order[i], i);
        }
        ck_assert_int_eq(st.closes, 1);
        close(st.peer);
    }
}
END_TEST

START_TEST(bad_args)
{
    story st;
    new_story(&st);
    ck_assert_int_eq(iol_stream_write_ref(NULL, "x", 1, NULL, NULL), -EINVAL);
    ck_assert_int_eq(iol_stream_write_ref(st.s, NULL, 1, NULL, NULL), -EINVAL);
    ck_assert_int_eq(iol_stream_write_ref(st.s, "x", 0, NULL, NULL), -EINVAL);
    ck_assert_int_eq(iol_stream_sendfile(NULL, 0, 0, 1, NULL, NULL), -EINVAL);
    ck_assert_int_eq(iol_stream_sendfile(st.s, -1, 0, 1, NULL, NULL), -EBADF);
    ck_assert_int_eq(iol_stream_sendfile(st.s, 0, -1, 1, NULL, NULL), -EINVAL);
    ck_assert_int_eq(iol_stream_sendfile(st.s, 0, 0, 0, NULL, NULL), -EINVAL);
    ck_assert_int_eq(iol_stream_sendfile(st.s, 0, INT64_MAX - 10, 11, NULL, NULL), -EINVAL); /* past off_t */
    ck_assert_int_eq(iol_stream_sendfile(st.s, 0, 1, SIZE_MAX, NULL, NULL), -EINVAL);
    ck_assert_int_eq(iol_stream_set_max_write_buffer(st.s, 100), 0);
    ck_assert_int_eq(iol_stream_write_ref(st.s, big, 101, NULL, NULL), -ENOBUFS);
    ck_assert_int_eq(iol_stream_sendfile(st.s, 0, 0, 101, NULL, NULL), -ENOBUFS);
    ck_assert_int_eq(iol_stream_close(st.s), 0);
    ck_assert_int_eq(iol_stream_write_ref(st.s, "x", 1, NULL, NULL), -EPIPE);
    ck_assert_int_eq(iol_stream_sendfile(st.s, 0, 0, 1, NULL, NULL), -EPIPE);
    run_loop(st.loop);
    end_story(&st);
}
END_TEST

/* A big copied write, then a zero-copy one, on a Unix pair: on a uring
 * loop the copy goes out by a ring send that the kernel cuts short, and
 * its rest must go before the zero-copy bytes queued behind it (they
 * went first, reordering the stream). The peer, read from the loop,
 * checks every byte's place. */
enum { ORDER_COPY = 2u << 20, ORDER_REF = 1u << 20 };

typedef struct order_story {
    iol_loop *loop;
    size_t got;
    long first_bad; /* -1: none */
} order_story;

static unsigned char order_byte(size_t k)
{
    return (unsigned char)(k % 253);
}

static void order_peer(int fd, unsigned events, void *arg)
{
    (void)events;
    order_story *o = arg;
    unsigned char buf[65536];
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0) {
        for (ssize_t i = 0; i < n; i++)
            if (o->first_bad < 0 && buf[i] != order_byte(o->got + (size_t)i))
                o->first_bad = (long)(o->got + (size_t)i);
        o->got += (size_t)n;
    }
    if (o->got == ORDER_COPY + ORDER_REF)
        iol_loop_stop(o->loop);
}

START_TEST(ref_behind_a_short_ring_send)
{
    order_story o = {.loop = iol_test_loop_new(), .first_bad = -1};
    int peer;
    iol_stream *s = iol_test_stream_pair(o.loop, false, &peer);
    ck_assert_int_eq(fcntl(peer, F_SETFL, O_NONBLOCK), 0);
    unsigned char *copy = malloc(ORDER_COPY), *ref = malloc(ORDER_REF);
    for (size_t i = 0; i < ORDER_COPY; i++)
        copy[i] = order_byte(i);
    for (size_t i = 0; i < ORDER_REF; i++)
        ref[i] = order_byte(ORDER_COPY + i);
    ck_assert_int_eq(iol_stream_write(s, copy, ORDER_COPY, NULL, NULL), 0);
    ck_assert_int_eq(iol_stream_write_ref(s, ref, ORDER_REF, NULL, NULL), 0);
    ck_assert_int_eq(iol_loop_add_handler(o.loop, peer, IOL_READ, order_peer, &o), 0);
    iol_test_loop_run(o.loop, 10);
    ck_assert_msg(o.first_bad < 0, "byte %ld out of place", o.first_bad);
    ck_assert_int_eq(iol_loop_remove_handler(o.loop, peer), 0);
    ck_assert_int_eq(iol_stream_close(s), 0);
    ck_assert_int_eq(iol_loop_run_once(o.loop, 0), 0);
    ck_assert_int_eq(iol_loop_close(o.loop, false), 0);
    close(peer);
    free(copy);
    free(ref);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("zerocopy");
    struct {
        const char *name;
        const TTest *test;
    } cases[] = {
        {"refs_in_order_with_copies", refs_in_order_with_copies},
        {"ref_is_not_copied", ref_is_not_copied},
        {"sendfile_region", sendfile_region},
        {"sendfile_past_eof_closes", sendfile_past_eof_closes},
        {"close_releases_queued", close_releases_queued},
        {"loop_close_releases_queued", loop_close_releases_queued},
        {"bad_args", bad_args},
        {"ref_behind_a_short_ring_send", ref_behind_a_short_ring_send},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        TCase *tc = iol_test_tcase(cases[i].name, 60);
        tcase_add_test(tc, cases[i].test);
        suite_add_tcase(s, tc);
    }
    return iol_test_run(s);
}
