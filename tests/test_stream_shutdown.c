/* iol_stream_shutdown: the graceful close. The peer gets every byte
 * queued before it (copied, zero-copy, sendfile, deferred ring writes,
 * most of them queued behind a full socket), then the FIN (TLS:
 * close_notify first), while the stream still reads what the peer sends
 * after it; the callback runs exactly once, also when the stream or the
 * loop closes first; writes after it say -EPIPE; the thread rule. Run on
 * epoll and on uring (`meson test --setup uring`). */
#include "ioloop.h"
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

enum {
    COPY_BYTES = 3u << 20, /* far past a socket buffer: queued behind it */
    REF_BYTES = 1u << 20,
    FILE_BYTES = 1u << 20,
    TAIL_BYTES = 100,
    TOTAL = COPY_BYTES + REF_BYTES + FILE_BYTES + TAIL_BYTES,
};

/* Byte k of the stream: the peer checks each one. */
static unsigned char pattern(size_t k)
{
    return (unsigned char)(k % 251);
}

static void fill(unsigned char *p, size_t from, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = pattern(from + i);
}

typedef struct story {
    iol_loop *loop;
    iol_stream *s;
    int peer;
    size_t got;      /* bytes the peer read, each checked */
    bool bad_byte;
    bool peer_eof;   /* the peer saw our FIN */
    int cb_calls;
    int cb_status;
    bool cb_before_eof_told; /* cb ran no later than the peer's own EOF was delivered to us */
    int reads;
    int read_status;
    char late[16];   /* what the peer sent after our FIN */
    size_t late_len;
    int closes;
    int releases;
    bool in_call;
} story;

static void on_shutdown(iol_stream *s, int status, void *arg)
{
    story *st = arg;
    ck_assert(!st->in_call);
    ck_assert_ptr_eq(s, st->s);
    st->cb_calls++;
    st->cb_status = status;
}

static void on_connected(iol_stream *s, int status, void *arg)
{
    (void)s;
    story *st = arg;
    ck_assert(!st->in_call);
    ck_assert_int_eq(status, 0);
    ck_assert_int_eq(st->cb_calls, 0); /* the FIN only after the connect */
}

static void on_release(void *arg)
{
    ((story *)arg)->releases++;
}

static void on_late(iol_stream *s, const char *data, size_t len, int status, void *arg)
{
    (void)s;
    story *st = arg;
    st->reads++;
    st->read_status = status;
    st->late_len = len;
    if (len <= sizeof(st->late))
        memcpy(st->late, data, len);
    st->cb_before_eof_told = st->cb_calls == 1;
}

static void on_close(iol_stream *s, void *arg)
{
    (void)s;
    story *st = arg;
    st->closes++;
    iol_loop_stop(st->loop);
}

/* The peer: reads and checks everything; at our FIN it answers "late\n"
 * (after the FIN: the stream must still read it) and closes. */
static void peer_readable(int fd, unsigned events, void *arg)
{
    (void)events;
    story *st = arg;
    unsigned char buf[65536];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n < 0) {
            ck_assert_int_eq(errno, EAGAIN);
            return;
        }
        if (n == 0) {
            st->peer_eof = true;
            ck_assert_int_eq(iol_loop_remove_handler(st->loop, fd), 0);
            iol_test_write_all(fd, "late\n", 5);
            close(fd);
            st->peer = -1;
            return;
        }
        for (ssize_t i = 0; i < n; i++)
            if (buf[i] != pattern(st->got + (size_t)i) && !st->bad_byte) {
                st->bad_byte = true;
                fprintf(stderr, "first bad byte at %zu\n", st->got + (size_t)i);
            }
        st->got += (size_t)n;
    }
}

enum { V_UNIX, V_TCP, V_DEFERRED, V_UNIX_DEFERRED, N_VARIANTS };

/* Every kind of write, most of them behind a full socket, then the
 * shutdown; the peer reads only from the loop, so all of it is queued
 * when shutdown is called. */
START_TEST(peer_gets_every_byte_then_fin)
{
    int v = _i;
    story st = {.loop = iol_test_loop_new()};
    st.s = iol_test_stream_pair(st.loop, v == V_TCP || v == V_DEFERRED, &st.peer);
    if (v == V_DEFERRED || v == V_UNIX_DEFERRED)
        ck_assert_int_eq(iol_stream_set_deferred_writes(st.s, true), 0);
    ck_assert_int_eq(fcntl(st.peer, F_SETFL, O_NONBLOCK), 0);
    ck_assert_int_eq(iol_loop_add_handler(st.loop, st.peer, IOL_READ, peer_readable, &st), 0);
    ck_assert_int_eq(iol_stream_set_close_callback(st.s, on_close, &st), 0);

    unsigned char *copy = malloc(COPY_BYTES), *ref = malloc(REF_BYTES), *file = malloc(FILE_BYTES);
    unsigned char tail[TAIL_BYTES];
    fill(copy, 0, COPY_BYTES);
    fill(ref, COPY_BYTES, REF_BYTES);
    fill(file, COPY_BYTES + REF_BYTES, FILE_BYTES);
    fill(tail, COPY_BYTES + REF_BYTES + FILE_BYTES, TAIL_BYTES);
    char path[] = "/tmp/iol-shutdown-XXXXXX";
    int ffd = mkstemp(path);
    ck_assert_int_ge(ffd, 0);
    unlink(path);
    iol_test_write_all(ffd, file, FILE_BYTES);

    st.in_call = true;
    ck_assert_int_eq(iol_stream_write(st.s, copy, COPY_BYTES, NULL, NULL), 0);
    ck_assert_int_eq(iol_stream_write_ref(st.s, ref, REF_BYTES, on_release, &st), 0);
    ck_assert_int_eq(iol_stream_sendfile(st.s, ffd, 0, FILE_BYTES, on_release, &st), 0);
    ck_assert_int_eq(iol_stream_write(st.s, tail, TAIL_BYTES, NULL, NULL), 0);
    ck_assert_uint_gt(iol_stream_write_buffer_size(st.s), 0); /* behind a full socket */
    ck_assert_int_eq(iol_stream_shutdown(st.s, on_shutdown, &st), 0);
    ck_assert_int_eq(iol_stream_shutdown(st.s, on_shutdown, &st), -EALREADY);
    ck_assert_int_eq(iol_stream_write(st.s, "x", 1, NULL, NULL), -EPIPE);
    ck_assert_int_eq(iol_stream_write_ref(st.s, "x", 1, NULL, NULL), -EPIPE);
    ck_assert_int_eq(iol_stream_sendfile(st.s, ffd, 0, 1, NULL, NULL), -EPIPE);
    ck_assert_int_eq(iol_stream_read_until_close(st.s, on_late, &st), 0);
    st.in_call = false;

    iol_test_loop_run(st.loop, 30);
    ck_assert_int_eq(st.cb_calls, 1);
    ck_assert_int_eq(st.cb_status, 0);
    ck_assert(st.peer_eof);
    ck_assert_uint_eq(st.got, TOTAL);
    ck_assert(!st.bad_byte);
    ck_assert_int_eq(st.releases, 2);
    /* The peer's bytes after our FIN were read, then its EOF: status 0. */
    ck_assert_int_eq(st.reads, 1);
    ck_assert_int_eq(st.read_status, 0);
    ck_assert_uint_eq(st.late_len, 5);
    ck_assert(memcmp(st.late, "late\n", 5) == 0);
    ck_assert(st.cb_before_eof_told);
    ck_assert_int_eq(st.closes, 1);
    ck_assert_int_eq(iol_loop_close(st.loop, false), 0);
    close(ffd);
    free(copy), free(ref), free(file);
}
END_TEST

/* Nothing queued: the FIN goes out in the call (the peer sees EOF as it
 * returns), the callback still from the loop. */
START_TEST(fin_at_once_when_nothing_is_queued)
{
    story st = {.loop = iol_test_loop_new()};
    st.s = iol_test_stream_pair(st.loop, false, &st.peer);
    st.in_call = true;
    ck_assert_int_eq(iol_stream_shutdown(st.s, on_shutdown, &st), 0);
    st.in_call = false;
    ck_assert_int_eq(st.cb_calls, 0);
    char c;
    ck_assert_int_eq(read(st.peer, &c, 1), 0); /* EOF, not EAGAIN (blocking fd) */
    ck_assert_int_eq(iol_stream_set_close_callback(st.s, on_close, &st), 0);
    close(st.peer);
    iol_test_loop_run(st.loop, 10);
    ck_assert_int_eq(st.cb_calls, 1);
    ck_assert_int_eq(st.cb_status, 0);
    ck_assert_int_eq(st.closes, 1);
    ck_assert_int_eq(iol_loop_close(st.loop, false), 0);
}
END_TEST

/* Small socket buffers on both ends: most of a big write stays queued
 * while the peer does not read. */
static void shrink_buffers(iol_stream *s, int peer)
{
    int small = 4096;
    ck_assert_int_eq(setsockopt(iol_stream_fd(s), SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
    ck_assert_int_eq(setsockopt(peer, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)), 0);
}

/* Asked while connecting: the write and then the FIN follow the connect. */
START_TEST(shutdown_while_connecting)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sin);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(lfd, 0);
    ck_assert_int_eq(bind(lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    ck_assert_int_eq(listen(lfd, 4), 0);
    ck_assert_int_eq(getsockname(lfd, (struct sockaddr *)&sin, &len), 0);

    story st = {.loop = iol_test_loop_new()};
    ck_assert_int_eq(iol_stream_connect(&st.s, st.loop, "127.0.0.1", ntohs(sin.sin_port), 0, on_connected, &st), 0);
    st.in_call = true;
    ck_assert_int_eq(iol_stream_write(st.s, "hi", 2, NULL, NULL), 0);
    ck_assert_int_eq(iol_stream_shutdown(st.s, on_shutdown, &st), 0);
    st.in_call = false;
    ck_assert_int_eq(iol_stream_set_close_callback(st.s, on_close, &st), 0);
    while (st.cb_calls == 0)
        ck_assert_int_eq(iol_loop_run_once(st.loop, 0.05), 0);
    ck_assert_int_eq(st.cb_status, 0);
    int peer = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    ck_assert_int_ge(peer, 0);
    char buf[4];
    ck_assert_int_eq(read(peer, buf, sizeof(buf)), 2);
    ck_assert_int_eq(read(peer, buf, sizeof(buf)), 0); /* the FIN */
    close(peer);
    iol_test_loop_run(st.loop, 10); /* our stream sees the peer's close */
    ck_assert_int_eq(st.closes, 1);
    ck_assert_int_eq(iol_loop_close(st.loop, false), 0);
    close(lfd);
}
END_TEST

/* Closed before the FIN could go (the peer reads nothing): the callback
 * runs once, with -ECANCELED; the zero-copy release runs too. */
START_TEST(close_while_pending)
{
    int deferred = _i;
    story st = {.loop = iol_test_loop_new()};
    st.s = iol_test_stream_pair(st.loop, true, &st.peer);
    if (deferred)
        ck_assert_int_eq(iol_stream_set_deferred_writes(st.s, true), 0);
    shrink_buffers(st.s, st.peer);
    ck_assert_int_eq(iol_stream_set_close_callback(st.s, on_close, &st), 0);
    char *big = calloc(1, COPY_BYTES);
    ck_assert_int_eq(iol_stream_write(st.s, big, COPY_BYTES, NULL, NULL), 0);
    ck_assert_int_eq(iol_stream_write_ref(st.s, big, 4096, on_release, &st), 0);
    ck_assert_int_eq(iol_stream_shutdown(st.s, on_shutdown, &st), 0);
    /* A few turns: what the socket takes goes, the rest stays queued. */
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(iol_loop_run_once(st.loop, 0.01), 0);
    ck_assert_int_eq(st.cb_calls, 0);
    ck_assert_int_eq(iol_stream_close(st.s), 0);
    iol_test_loop_run(st.loop, 10);
    ck_assert_int_eq(st.cb_calls, 1);
    ck_assert_int_eq(st.cb_status, -ECANCELED);
    ck_assert_int_eq(st.releases, 1);
    ck_assert_int_eq(st.closes, 1);
    ck_assert_int_eq(iol_loop_close(st.loop, false), 0);
    close(st.peer);
    free(big);
}
END_TEST

/* The loop closes while a shutdown waits: -ESHUTDOWN, once, nothing
 * leaks (ASan). */
START_TEST(loop_close_while_pending)
{
    int deferred = _i;
    story st = {.loop = iol_test_loop_new()};
    st.s = iol_test_stream_pair(st.loop, true, &st.peer);
    if (deferred)
        ck_assert_int_eq(iol_stream_set_deferred_writes(st.s, true), 0);
    shrink_buffers(st.s, st.peer);
    char *big = calloc(1, COPY_BYTES);
    ck_assert_int_eq(iol_stream_write(st.s, big, COPY_BYTES, NULL, NULL), 0);
    ck_assert_int_eq(iol_stream_shutdown(st.s, on_shutdown, &st), 0);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(iol_loop_run_once(st.loop, 0.01), 0);
    ck_assert_int_eq(st.cb_calls, 0);
    ck_assert_int_ge(iol_loop_close(st.loop, false), 0);
    ck_assert_int_eq(st.cb_calls, 1);
    ck_assert_int_eq(st.cb_status, -ESHUTDOWN);
    close(st.peer);
    free(big);
}
END_TEST

/* TLS: the peer (a TLS client stream) reads every byte, answers after
 * our close_notify (which we still read), then sees the close_notify as
 * a clean end (status 0, not a truncation). */
typedef struct tls_story {
    story st;
    iol_stream *cli;
    unsigned char *data;
    int cli_status;
    size_t cli_len;
    bool cli_ok;
    int cli_closes;
} tls_story;

static void cli_on_end(iol_stream *s, const char *data, size_t len, int status, void *arg)
{
    (void)s, (void)data;
    tls_story *t = arg;
    t->cli_status = status;
    t->cli_len = len;
}

static void cli_on_all(iol_stream *s, const char *data, size_t len, int status, void *arg)
{
    tls_story *t = arg;
    ck_assert_int_eq(status, 0);
    ck_assert_uint_eq(len, COPY_BYTES);
    t->cli_ok = memcmp(data, t->data, len) == 0;
    ck_assert_int_eq(iol_stream_write(s, "late\n", 5, NULL, NULL), 0);
    ck_assert_int_eq(iol_stream_read_until_close(s, cli_on_end, t), 0);
}

START_TEST(tls_close_notify_then_fin)
{
    iol_tls_ctx *sctx, *cctx;
    if (!iol_test_need_tls_ctxs(&sctx, &cctx))
        return;
    tls_story t = {.st.loop = iol_test_loop_new()};
    iol_test_tls_pair(t.st.loop, sctx, cctx, &t.st.s, &t.cli, NULL, NULL);
    t.data = malloc(COPY_BYTES);
    fill(t.data, 0, COPY_BYTES);
    ck_assert_int_eq(iol_stream_set_close_callback(t.st.s, on_close, &t.st), 0);
    /* Asked during the handshake: everything waits for its end. */
    ck_assert_int_eq(iol_stream_write(t.st.s, t.data, COPY_BYTES, NULL, NULL), 0);
    ck_assert_int_eq(iol_stream_shutdown(t.st.s, on_shutdown, &t.st), 0);
    ck_assert_int_eq(iol_stream_write(t.st.s, "x", 1, NULL, NULL), -EPIPE);
    ck_assert_int_eq(iol_stream_read_until_close(t.st.s, on_late, &t.st), 0);
    ck_assert_int_eq(iol_stream_read_bytes(t.cli, COPY_BYTES, false, cli_on_all, &t), 0);
    iol_test_loop_run(t.st.loop, 30);
    ck_assert_int_eq(t.st.cb_calls, 1);
    ck_assert_int_eq(t.st.cb_status, 0);
    ck_assert(t.cli_ok);
    ck_assert_int_eq(t.cli_status, 0); /* close_notify: a clean end, no truncation */
    ck_assert_uint_eq(t.cli_len, 0);
    ck_assert_int_eq(t.st.reads, 1);
    ck_assert_int_eq(t.st.read_status, 0);
    ck_assert_uint_eq(t.st.late_len, 5);
    ck_assert(memcmp(t.st.late, "late\n", 5) == 0);
    ck_assert_int_eq(iol_loop_close(t.st.loop, false), 0);
    iol_tls_ctx_unref(sctx);
    iol_tls_ctx_unref(cctx);
    free(t.data);
}
END_TEST

/* TLS: a shutdown asked during the handshake, then our close or the
 * loop's close before the handshake ends: the callback once, with
 * -ECANCELED or -ESHUTDOWN; nothing leaks (ASan). */
START_TEST(tls_close_while_pending)
{
    int loop_close = _i;
    iol_tls_ctx *sctx, *cctx;
    if (!iol_test_need_tls_ctxs(&sctx, &cctx))
        return;
    story st = {.loop = iol_test_loop_new()};
    int fds[2];
    iol_test_socket_pair(fds, false);
    ck_assert_int_eq(iol_tls_stream_new(&st.s, st.loop, fds[0], sctx, 0), 0);
    ck_assert_int_eq(iol_stream_write(st.s, "queued", 6, NULL, NULL), 0);
    ck_assert_int_eq(iol_stream_shutdown(st.s, on_shutdown, &st), 0);
    ck_assert_int_eq(iol_loop_run_once(st.loop, 0.01), 0); /* no ClientHello comes */
    ck_assert_int_eq(st.cb_calls, 0);
    if (loop_close) {
        ck_assert_int_ge(iol_loop_close(st.loop, false), 0);
        ck_assert_int_eq(st.cb_status, -ESHUTDOWN);
    } else {
        ck_assert_int_eq(iol_stream_set_close_callback(st.s, on_close, &st), 0);
        ck_assert_int_eq(iol_stream_close(st.s), 0);
        iol_test_loop_run(st.loop, 10);
        ck_assert_int_eq(st.cb_status, -ECANCELED);
        ck_assert_int_eq(iol_loop_close(st.loop, false), 0);
    }
    ck_assert_int_eq(st.cb_calls, 1);
    close(fds[1]);
    iol_tls_ctx_unref(sctx);
    iol_tls_ctx_unref(cctx);
}
END_TEST

/* Thread rule: from another thread while the loop runs, -EPERM and
 * nothing changes (writes still work, a later shutdown works). */
static void *foreign_shutdown(void *arg)
{
    story *st = arg;
    st->read_status = iol_stream_shutdown(st->s, on_shutdown, st);
    return NULL;
}

static void call_from_foreign_thread(void *arg)
{
    story *st = arg;
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, foreign_shutdown, st), 0);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_int_eq(st->read_status, -EPERM);
    ck_assert_int_eq(iol_stream_write(st->s, "ok", 2, NULL, NULL), 0);
    ck_assert_int_eq(iol_stream_shutdown(st->s, on_shutdown, st), 0);
    iol_loop_stop(st->loop);
}

START_TEST(thread_rule)
{
    story st = {.loop = iol_test_loop_new()};
    st.s = iol_test_stream_pair(st.loop, false, &st.peer);
    ck_assert_int_eq(iol_loop_add_callback(st.loop, call_from_foreign_thread, &st), 0);
    iol_test_loop_run(st.loop, 10);
    ck_assert_int_eq(iol_loop_run_once(st.loop, 0), 0);
    ck_assert_int_eq(st.cb_calls, 1);
    ck_assert_int_eq(st.cb_status, 0);
    char buf[4];
    ck_assert_int_eq(read(st.peer, buf, sizeof(buf)), 2);
    ck_assert_int_eq(read(st.peer, buf, sizeof(buf)), 0);
    ck_assert_int_eq(iol_stream_close(st.s), 0);
    ck_assert_int_eq(iol_loop_run_once(st.loop, 0), 0); /* the close finishes */
    ck_assert_int_eq(iol_loop_close(st.loop, false), 0);
    close(st.peer);
}
END_TEST

START_TEST(bad_calls)
{
    story st = {.loop = iol_test_loop_new()};
    ck_assert_int_eq(iol_stream_shutdown(NULL, on_shutdown, &st), -EINVAL);
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    iol_stream *s;
    ck_assert_int_eq(iol_stream_new(&s, st.loop, p[1], 0), 0);
    ck_assert_int_eq(iol_stream_shutdown(s, on_shutdown, &st), -ENOTSOCK);
    ck_assert_int_eq(iol_stream_close(s), 0);
    ck_assert_int_eq(iol_stream_shutdown(s, on_shutdown, &st), -EPIPE);
    ck_assert_int_eq(iol_loop_run_once(st.loop, 0), 0);
    ck_assert_int_eq(st.cb_calls, 0);
    /* A shutdown without a callback. */
    st.s = iol_test_stream_pair(st.loop, false, &st.peer);
    ck_assert_int_eq(iol_stream_shutdown(st.s, NULL, NULL), 0);
    char c;
    ck_assert_int_eq(read(st.peer, &c, 1), 0);
    ck_assert_int_eq(iol_stream_close(st.s), 0);
    ck_assert_int_eq(iol_loop_run_once(st.loop, 0), 0); /* the close finishes */
    ck_assert_int_eq(iol_loop_close(st.loop, false), 0);
    close(st.peer);
    close(p[0]);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("stream_shutdown");
    TCase *tc = iol_test_tcase("shutdown", 120);
    tcase_add_loop_test(tc, peer_gets_every_byte_then_fin, 0, N_VARIANTS);
    tcase_add_test(tc, fin_at_once_when_nothing_is_queued);
    tcase_add_test(tc, shutdown_while_connecting);
    tcase_add_loop_test(tc, close_while_pending, 0, 2);
    tcase_add_loop_test(tc, loop_close_while_pending, 0, 2);
    tcase_add_test(tc, tls_close_notify_then_fin);
    tcase_add_loop_test(tc, tls_close_while_pending, 0, 2);
    tcase_add_test(tc, thread_rule);
    tcase_add_test(tc, bad_calls);
    suite_add_tcase(s, tc);
    return iol_test_run(s);
}
