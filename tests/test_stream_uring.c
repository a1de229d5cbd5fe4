/* Streams on a loop with a completion path (net/stream_uring.c): reads
 * through recv operations and the shared buffer ring, the rest of a write
 * and deferred writes through send operations, the ring running dry, a
 * paused read, a stream closed and a loop closed with operations in
 * flight (the stream outlives them, ASan/valgrind see no use after free
 * and no leak). On other pollers: deferred writes change nothing. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ioloop.h"
#include "loop/loop_impl.h"
#include "net/stream_impl.h"
#include "testutil.h"

static iol_loop *new_loop(const char *poller)
{
    iol_loop *loop = NULL;
    ck_assert_int_eq(iol_loop_new(&loop, &(iol_loop_config){ .poller = poller, .make_current = IOL_CURRENT_NEVER }),
                     0);
    return loop;
}

static void make_pair(int sv[2])
{
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
}

typedef struct story {
    iol_loop *loop;
    int reads, closes, dones;
    int status;
    char data[256];
    size_t len;
    bool stop_on_read;
} story;

__attribute__((unused)) static void on_read(iol_stream *s, const char *data, size_t len, int status, void *arg)
{
    (void)s;
    story *st = arg;
    st->reads++;
    st->status = status;
    if (len > sizeof st->data)
        len = sizeof st->data;
    if (len > 0) /* data is NULL with 0 bytes */
        memcpy(st->data, data, len);
    st->len = len;
    if (st->stop_on_read)
        iol_loop_stop(st->loop);
}

__attribute__((unused)) static void on_close(iol_stream *s, void *arg)
{
    (void)s;
    story *st = arg;
    st->closes++;
}

__attribute__((unused)) static void on_done(void *arg)
{
    story *st = arg;
    st->dones++;
}

__attribute__((unused)) static void run_until(iol_loop *loop, const int *counter, int target)
{
    double end = iol_test_now() + 10;
    while (*counter < target && iol_test_now() < end)
        ck_assert_int_ge(iol_loop_run_once(loop, 0.05), 0);
    ck_assert_int_ge(*counter, target);
}

START_TEST(test_deferred_writes_elsewhere)
{
    iol_loop *loop = new_loop("epoll");
    int sv[2];
    make_pair(sv);
    iol_stream *s;
    ck_assert_int_eq(iol_stream_new(&s, loop, sv[0], 0), 0);
    ck_assert_int_eq(iol_stream_set_deferred_writes(NULL, true), -EINVAL);
    ck_assert_int_eq(iol_stream_set_deferred_writes(s, true), 0);
    ck_assert_int_eq(iol_stream_write(s, "now", 3, NULL, NULL), 0);
    ck_assert_uint_eq(iol_stream_write_buffer_size(s), 0); /* went at once */
    char buf[4];
    ck_assert_int_eq(read(sv[1], buf, sizeof buf), 3);
    ck_assert_int_eq(iol_stream_close(s), 0);
    ck_assert_int_eq(iol_stream_set_deferred_writes(s, true), -EPIPE);
    close(sv[1]);
    ck_assert_int_ge(iol_loop_close(loop, false), 0);
}
END_TEST

/* What an idle keep-alive connection costs (http-hello's stream path: a
 * request read, a deferred response written, the next read pending): the
 * stream struct and nothing else. No rare parts (stream_ext), no byte
 * buffer, no send buffer; on uring the pending recv holds no ring buffer
 * (one is picked only when data arrives, and given back at once). The
 * struct was 544 bytes, with every rare part inline, then 256 with the
 * buffers' offsets inline; 168 (a 176-byte malloc chunk) with an empty
 * buffer a NULL pointer and the byte counters one `pending`. */
static void idle_footprint(const char *poller)
{
    ck_assert_uint_le(sizeof(iol_stream), 168);
    iol_loop *loop = new_loop(poller);
    int sv[2];
    make_pair(sv);
    story st = { .loop = loop };
    iol_stream *s;
    ck_assert_int_eq(iol_stream_new(&s, loop, sv[0], 0), 0);
    ck_assert_int_eq(iol_stream_set_deferred_writes(s, true), 0);
    ck_assert_int_eq(iol_stream_set_close_callback(s, on_close, &st), 0);
    ck_assert_int_eq(iol_stream_read_bytes(s, 16384, true, on_read, &st), 0);
    for (int round = 1; round <= 3; round++) {
        ck_assert_int_eq(write(sv[1], "GET / HTTP/1.1\r\n\r\n", 18), 18);
        run_until(loop, &st.reads, round);
        ck_assert_int_eq(st.status, 0);
        ck_assert_int_eq(iol_stream_write(s, "HTTP/1.1 200 OK\r\n\r\n", 19, NULL, NULL), 0);
        ck_assert_int_eq(iol_stream_read_bytes(s, 16384, true, on_read, &st), 0);
        for (double end = iol_test_now() + 10; iol_stream_write_buffer_size(s) > 0 && iol_test_now() < end;)
            ck_assert_int_ge(iol_loop_run_once(loop, 0.05), 0);
        char buf[64];
        ck_assert_int_eq(read(sv[1], buf, sizeof buf), 19);
        ck_assert_int_ge(iol_loop_run_once(loop, 0), 0);
        /* Idle, waiting for the next request. */
        ck_assert_ptr_null(s->ext);
        ck_assert_ptr_null(s->rbuf.blk);
        ck_assert_ptr_null(s->wbuf.blk);
        ck_assert_ptr_null(s->sendbuf.blk);
        ck_assert(!s->send_inflight);
        if (s->uring) /* ...waiting for data before it tries: this one drained the socket */
            ck_assert(s->recv_inflight && s->recv_drained);
    }
    ck_assert_int_eq(st.closes, 0);
    close(sv[1]);
    run_until(loop, &st.closes, 1);
    ck_assert_int_ge(iol_loop_close(loop, false), 0);
}

/* A max_buffer_size past the stream's 32 bits lives in the rare part,
 * and reads honour it as any other. */
START_TEST(test_huge_max_buffer)
{
    if (sizeof(size_t) < 8)
        return;
    iol_loop *loop = new_loop("epoll");
    int sv[2];
    make_pair(sv);
    story st = { .loop = loop };
    iol_stream *s;
    size_t huge = (size_t)5 << 30;
    ck_assert_int_eq(iol_stream_new(&s, loop, sv[0], huge), 0);
    ck_assert_uint_eq(s->max_buffer, 0);
    ck_assert_ptr_nonnull(s->ext);
    ck_assert_uint_eq(iol__stream_max_buffer(s), huge);
    ck_assert_int_eq(iol_stream_set_close_callback(s, on_close, &st), 0);
    ck_assert_int_eq(iol_stream_read_bytes(s, 16384, true, on_read, &st), 0);
    ck_assert_int_eq(write(sv[1], "ping", 4), 4);
    run_until(loop, &st.reads, 1);
    ck_assert_int_eq(st.status, 0);
    iol_stream *t;
    ck_assert_int_eq(iol_stream_new(&t, loop, sv[1], 0), 0);
    ck_assert_uint_eq(iol__stream_max_buffer(t), 100u << 20);
    ck_assert_ptr_null(t->ext);
    iol_stream_close(t);
    run_until(loop, &st.closes, 1);
    ck_assert_int_ge(iol_loop_close(loop, false), 0);
}
END_TEST

START_TEST(test_idle_footprint_epoll)
{
    idle_footprint("epoll");
}
END_TEST

#ifdef IOL_HAVE_URING

static bool has_path(iol_loop *loop)
{
    return iol__loop_completion_features(loop) & IOL__COMPLETION_BUFFER_RING;
}

START_TEST(test_idle_footprint_uring)
{
    idle_footprint("uring");
}
END_TEST

static void no_events(int fd, unsigned events, void *arg)
{
    (void)fd, (void)events, (void)arg;
}

/* A stream on the completion path claims its fd instead of registering a
 * handler: another handler or stream on that fd still gets -EEXIST, but
 * the loop's fd tables do not grow to it (32 bytes a slot, up to the
 * highest fd: what an idle connection paid for the handler the ring path
 * removed again); it counts as a handler; its close gives the fd back. */
START_TEST(test_claims_instead_of_handler)
{
    iol_loop *loop = new_loop("uring");
    if (!has_path(loop))
        goto out;
    enum { HIGH = 3000 };
    int sv[2];
    make_pair(sv);
    ck_assert_int_eq(dup2(sv[0], HIGH), HIGH);
    close(sv[0]);
    iol_stream *s, *t;
    ck_assert_int_eq(iol_stream_new(&s, loop, HIGH, 0), 0);
    ck_assert(s->claimed && !s->registered);
    ck_assert_int_lt(loop->handlers_cap, HIGH);
    ck_assert_int_eq(iol_loop_handler_count(loop), 1);
    ck_assert_int_eq(iol_loop_add_handler(loop, HIGH, IOL_READ, no_events, NULL), -EEXIST);
    ck_assert_int_eq(iol_stream_new(&t, loop, HIGH, 0), -EEXIST);
    /* The ring serves it as before (a server's stream: deferred writes,
     * so the idle watch for the peer closing is a recv too). */
    story st = { .loop = loop };
    ck_assert_int_eq(iol_stream_set_deferred_writes(s, true), 0);
    ck_assert_int_eq(iol_stream_set_close_callback(s, on_close, &st), 0);
    ck_assert_int_eq(iol_stream_read_bytes(s, 64, true, on_read, &st), 0);
    ck_assert_int_eq(write(sv[1], "ping", 4), 4);
    run_until(loop, &st.reads, 1);
    ck_assert_uint_eq(st.len, 4);
    ck_assert_int_lt(loop->handlers_cap, HIGH);
    ck_assert_int_eq(iol_stream_close(s), 0);
    run_until(loop, &st.closes, 1);
    ck_assert_int_eq(iol_loop_handler_count(loop), 0);
    /* Given back: a new fd with that number takes a handler. */
    int p[2];
    make_pair(p);
    ck_assert_int_eq(dup2(p[0], HIGH), HIGH);
    ck_assert_int_eq(iol_loop_add_handler(loop, HIGH, IOL_READ, no_events, NULL), 0);
    ck_assert_int_eq(iol_loop_remove_handler(loop, HIGH), 0);
    close(HIGH), close(p[0]), close(p[1]), close(sv[1]);
out:
    ck_assert_int_ge(iol_loop_close(loop, false), 0);
}
END_TEST

/* A stream that needs the handler path (here: the idle watch for the
 * peer closing, without deferred writes) trades its claim for a handler,
 * and back once the ring watches alone; the fd stays ours throughout. */
START_TEST(test_claim_traded_for_handler)
{
    iol_loop *loop = new_loop("uring");
    if (!has_path(loop))
        goto out;
    int sv[2];
    make_pair(sv);
    iol_stream *s;
    story st = { .loop = loop };
    ck_assert_int_eq(iol_stream_new(&s, loop, sv[0], 0), 0);
    ck_assert(s->claimed && !s->registered);
    ck_assert_int_eq(iol_stream_set_close_callback(s, on_close, &st), 0);
    ck_assert(s->registered && !s->claimed);
    ck_assert_int_eq(iol_loop_add_handler(loop, sv[0], IOL_READ, no_events, NULL), -EEXIST);
    /* A pending read goes through the ring: the handler goes, the claim comes back. */
    ck_assert_int_eq(iol_stream_read_bytes(s, 64, true, on_read, &st), 0);
    ck_assert(!s->registered && s->claimed);
    ck_assert_int_eq(iol_loop_add_handler(loop, sv[0], IOL_READ, no_events, NULL), -EEXIST);
    ck_assert_int_eq(iol_loop_handler_count(loop), 1);
    ck_assert_int_eq(write(sv[1], "pong", 4), 4);
    run_until(loop, &st.reads, 1);
    ck_assert_uint_eq(st.len, 4);
    close(sv[1]);
    run_until(loop, &st.closes, 1);
    ck_assert_int_eq(iol_loop_handler_count(loop), 0);
out:
    ck_assert_int_ge(iol_loop_close(loop, false), 0);
}
END_TEST

/* The claim itself: one owner per fd, handler or claim. */
START_TEST(test_claim_calls)
{
    iol_loop *loop = new_loop("uring");
    int sv[2];
    make_pair(sv);
    ck_assert_int_eq(iol__loop_fd_claim(loop, -1), -EBADF);
    ck_assert_int_eq(iol__loop_fd_claim(loop, sv[0]), 0);
    ck_assert_int_eq(iol__loop_fd_claim(loop, sv[0]), -EEXIST);
    ck_assert_int_eq(iol_loop_add_handler(loop, sv[0], IOL_READ, no_events, NULL), -EEXIST);
    iol__loop_fd_unclaim(loop, sv[0]);
    iol__loop_fd_unclaim(loop, sv[0]); /* harmless */
    ck_assert_int_eq(iol_loop_add_handler(loop, sv[0], IOL_READ, no_events, NULL), 0);
    ck_assert_int_eq(iol__loop_fd_claim(loop, sv[0]), -EEXIST);
    ck_assert_int_eq(iol_loop_remove_handler(loop, sv[0]), 0);
    ck_assert_int_eq(iol__loop_fd_claim(loop, 100000), 0); /* the bitmap grows (no fd check: the owner has it) */
    iol__loop_fd_unclaim(loop, 100000);
    close(sv[0]), close(sv[1]);
    ck_assert_int_ge(iol_loop_close(loop, false), 0);
}
END_TEST

/* A read through a recv operation: no fd handler meanwhile; the echo's
 * deferred write leaves through a send operation. */
START_TEST(test_read_and_deferred_write)
{
    iol_loop *loop = new_loop("uring");
    if (!has_path(loop))
        goto out;
    int sv[2];
    make_pair(sv);
    story st = { .loop = loop };
    iol_stream *s;
    ck_assert_int_eq(iol_stream_new(&s, loop, sv[0], 0), 0);
    ck_assert(s->uring);
    ck_assert_int_eq(iol_stream_set_deferred_writes(s, true), 0);
    ck_assert_int_eq(iol_stream_read_until(s, "\r\n\r\n", on_read, &st), 0);
    ck_assert(s->recv_inflight);
    ck_assert(!s->registered);
    /* No handler, yet a connection the runtime must count (load, drain). */
    ck_assert_int_eq(iol_loop_handler_count(loop), 1);
    ck_assert_int_eq(write(sv[1], "GET / HTTP/1.1\r\n", 16), 16);
    ck_assert_int_eq(iol_loop_run_once(loop, 0.05), 0);
    ck_assert_int_eq(write(sv[1], "\r\nextra", 7), 7);
    run_until(loop, &st.reads, 1);
    ck_assert_int_eq(st.status, 0);
    ck_assert_uint_eq(st.len, 18);
    ck_assert(memcmp(st.data, "GET / HTTP/1.1\r\n\r\n", 18) == 0);
    ck_assert_int_eq(iol_stream_write(s, "HTTP/1.1 200 OK\r\n", 17, on_done, &st), 0);
    ck_assert_int_eq(iol_stream_write(s, "\r\n", 2, on_done, &st), 0);
    ck_assert_uint_eq(iol_stream_write_buffer_size(s), 19); /* deferred */
    run_until(loop, &st.dones, 2);
    ck_assert_uint_eq(iol_stream_write_buffer_size(s), 0);
    char buf[64];
    ck_assert_int_eq(read(sv[1], buf, sizeof buf), 19);
    /* "extra" was buffered: the next read is answered from it. */
    ck_assert_int_eq(iol_stream_read_bytes(s, 5, false, on_read, &st), 0);
    run_until(loop, &st.reads, 2);
    ck_assert(memcmp(st.data, "extra", 5) == 0);
    st.reads = 0;
    ck_assert_int_eq(iol_stream_set_close_callback(s, on_close, &st), 0);
    ck_assert_int_eq(iol_stream_read_until_close(s, on_read, &st), 0);
    close(sv[1]);
    run_until(loop, &st.closes, 1);
    ck_assert_int_eq(st.reads, 1);
    ck_assert_int_eq(st.status, 0); /* EOF */
    ck_assert_int_eq(iol_loop_handler_count(loop), 0);
out:
    ck_assert_int_ge(iol_loop_close(loop, false), 0);
}
END_TEST

/* A deferred write of 4 MiB to a socket that takes ~200 KiB at a time:
 * short sends resubmit the rest first; every byte arrives in order, with
 * newer writes behind. */
START_TEST(test_short_sends_in_order)
{
    iol_loop *loop = new_loop("uring");
    if (!has_path(loop))
        goto out;
    int sv[2];
    make_pair(sv);
    story st = { .loop = loop };
    iol_stream *s;
    ck_assert_int_eq(iol_stream_new(&s, loop, sv[0], 0), 0);
    ck_assert_int_eq(iol_stream_set_deferred_writes(s, true), 0);
    size_t n = 4u << 20;
    char *big = malloc(n), *got = malloc(n + 3);
    for (size_t i = 0; i < n; i++)
        big[i] = (char)(i * 7 + i / 4096);
    ck_assert_int_eq(iol_stream_write(s, big, n, on_done, &st), 0);
    ck_assert_int_eq(iol_loop_run_once(loop, 0), 0);
    ck_assert_int_eq(iol_stream_write(s, "end", 3, on_done, &st), 0);
    size_t have = 0;
    double end = iol_test_now() + 20;
    while (have < n + 3 && iol_test_now() < end) {
        ck_assert_int_ge(iol_loop_run_once(loop, 0.001), 0);
        ssize_t r = recv(sv[1], got + have, n + 3 - have, MSG_DONTWAIT);
        if (r > 0)
            have += (size_t)r;
    }
    ck_assert_uint_eq(have, n + 3);
    ck_assert(memcmp(got, big, n) == 0);
    ck_assert(memcmp(got + n, "end", 3) == 0);
    run_until(loop, &st.dones, 2);
    free(big);
    free(got);
    ck_assert_int_eq(iol_stream_close(s), 0);
    close(sv[1]);
out:
    ck_assert_int_ge(iol_loop_close(loop, false), 0);
}
END_TEST

/* Closed with a recv in flight: the stream lives until the cancelled
 * recv's result, the close callback runs once, the peer sees EOF. */
START_TEST(test_close_with_recv_in_flight)
{
    iol_loop *loop = new_loop("uring");
    if (!has_path(loop))
        goto out;
    int sv[2];
    make_pair(sv);
    story st = { .loop = loop };
    iol_stream *s;
    ck_assert_int_eq(iol_stream_new(&s, loop, sv[0], 0), 0);
    ck_assert_int_eq(iol_stream_set_close_callback(s, on_close, &st), 0);
    ck_assert_int_eq(iol_stream_read_bytes(s, 10, false, on_read, &st), 0);
    ck_assert_int_eq(iol_loop_run_once(loop, 0), 0); /* the recv is in the kernel */
    ck_assert(s->recv_inflight);
    ck_assert_int_eq(iol_stream_close(s), 0);
    run_until(loop, &st.closes, 1);
    ck_assert_int_eq(st.reads, 1);
    ck_assert_int_eq(st.status, -EPIPE);
    for (int i = 0; i < 5; i++)
        ck_assert_int_ge(iol_loop_run_once(loop, 0.01), 0);
    char c;
    ck_assert_int_eq(read(sv[1], &c, 1), 0);
    close(sv[1]);
out:
    ck_assert_int_ge(iol_loop_close(loop, false), 0);
}
END_TEST

/* The loop closes with a recv and a send in flight on its streams: each
 * stream's close callback runs, the results are delivered during close
 * and the streams are freed after them (ASan: no leak, no use after free). */
START_TEST(test_loop_close_in_flight)
{
    iol_loop *loop = new_loop("uring");
    if (!has_path(loop))
        goto out;
    int a[2], b[2];
    make_pair(a);
    make_pair(b);
    story st = { .loop = loop };
    iol_stream *r, *w;
    ck_assert_int_eq(iol_stream_new(&r, loop, a[0], 0), 0);
    ck_assert_int_eq(iol_stream_new(&w, loop, b[0], 0), 0);
    ck_assert_int_eq(iol_stream_set_close_callback(r, on_close, &st), 0);
    ck_assert_int_eq(iol_stream_set_close_callback(w, on_close, &st), 0);
    ck_assert_int_eq(iol_stream_read_bytes(r, 10, false, on_read, &st), 0);
    ck_assert_int_eq(iol_stream_set_deferred_writes(w, true), 0);
    static char big[4 << 20];
    ck_assert_int_eq(iol_stream_write(w, big, sizeof big, on_done, &st), 0);
    for (int i = 0; i < 3; i++)
        ck_assert_int_ge(iol_loop_run_once(loop, 0.01), 0);
    ck_assert(r->recv_inflight);
    ck_assert(w->send_inflight);
    ck_assert_int_ge(iol_loop_close(loop, false), 0);
    ck_assert_int_eq(st.closes, 2);
    ck_assert_int_eq(st.reads, 1);
    ck_assert_int_eq(st.status, -ESHUTDOWN);
    close(a[0]), close(a[1]), close(b[0]), close(b[1]); /* closed by the streams: EBADF, harmless */
    return;
out:
    ck_assert_int_ge(iol_loop_close(loop, false), 0);
}
END_TEST

/* A paused read cancels its recv: data arriving meanwhile is not read
 * (nor lost): resuming delivers it. */
START_TEST(test_pause_cancels_recv)
{
    iol_loop *loop = new_loop("uring");
    if (!has_path(loop))
        goto out;
    int sv[2];
    make_pair(sv);
    story st = { .loop = loop };
    iol_stream *s;
    ck_assert_int_eq(iol_stream_new(&s, loop, sv[0], 0), 0);
    ck_assert_int_eq(iol_stream_read_bytes(s, 4, false, on_read, &st), 0);
    ck_assert_int_eq(iol_loop_run_once(loop, 0), 0);
    ck_assert_int_eq(iol_stream_pause_reading(s), 0);
    for (int i = 0; i < 3; i++)
        ck_assert_int_ge(iol_loop_run_once(loop, 0.01), 0);
    ck_assert(!s->recv_inflight);
    ck_assert_int_eq(write(sv[1], "data", 4), 4);
    for (int i = 0; i < 3; i++)
        ck_assert_int_ge(iol_loop_run_once(loop, 0.01), 0);
    ck_assert_int_eq(st.reads, 0);
    ck_assert_int_eq(iol_stream_resume_reading(s), 0);
    run_until(loop, &st.reads, 1);
    ck_assert(memcmp(st.data, "data", 4) == 0);
    ck_assert_int_eq(iol_stream_close(s), 0);
    close(sv[1]);
out:
    ck_assert_int_ge(iol_loop_close(loop, false), 0);
}
END_TEST

/* More streams with data at once than the ring has buffers: the ones
 * that find it dry read through the handler; every stream gets its own
 * bytes. */
typedef struct many {
    int done;
    char want[8];
    char got[8];
} many;

static void many_read(iol_stream *s, const char *data, size_t len, int status, void *arg)
{
    (void)s;
    many *m = arg;
    ck_assert_int_eq(status, 0);
    ck_assert_uint_eq(len, 6);
    memcpy(m->got, data, len);
    m->done = 1;
}

START_TEST(test_ring_runs_dry)
{
    iol_loop *loop = new_loop("uring");
    if (!has_path(loop))
        goto out;
    enum { N = 400 };
    int (*pairs)[2] = calloc(N, sizeof *pairs);
    many *ms = calloc(N, sizeof *ms);
    iol_stream **ss = calloc(N, sizeof *ss);
    for (int i = 0; i < N; i++) {
        make_pair(pairs[i]);
        snprintf(ms[i].want, sizeof ms[i].want, "%06d", i);
        ck_assert_int_eq(iol_stream_new(&ss[i], loop, pairs[i][0], 0), 0);
        ck_assert_int_eq(iol_stream_read_bytes(ss[i], 6, false, many_read, &ms[i]), 0);
    }
    ck_assert_int_eq(iol_loop_run_once(loop, 0), 0);
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(write(pairs[i][1], ms[i].want, 6), 6);
    double end = iol_test_now() + 20;
    int done = 0;
    while (done < N && iol_test_now() < end) {
        ck_assert_int_ge(iol_loop_run_once(loop, 0.05), 0);
        done = 0;
        for (int i = 0; i < N; i++)
            done += ms[i].done;
    }
    ck_assert_int_eq(done, N);
    for (int i = 0; i < N; i++) {
        ck_assert(memcmp(ms[i].got, ms[i].want, 6) == 0);
        iol_stream_close(ss[i]);
        close(pairs[i][1]);
    }
    for (int i = 0; i < 3; i++)
        ck_assert_int_ge(iol_loop_run_once(loop, 0.01), 0);
    free(pairs);
    free(ms);
    free(ss);
out:
    ck_assert_int_ge(iol_loop_close(loop, false), 0);
}
END_TEST

static void *run_once_thread(void *arg)
{
    ck_assert_int_ge(iol_loop_run_once(arg, 0), 0);
    return NULL;
}

/* The recv and the send were submitted by a thread that exited: the
 * kernel cancels them (-ECANCELED, not asked for by the stream), and the
 * stream submits them again from the thread that runs the loop now: the
 * read is answered and every byte of the write arrives. */
START_TEST(test_submitter_exits)
{
    iol_loop *loop = new_loop("uring");
    if (!has_path(loop))
        goto out;
    int rx[2], tx[2];
    make_pair(rx);
    make_pair(tx);
    story st = { .loop = loop };
    iol_stream *r, *w;
    ck_assert_int_eq(iol_stream_new(&r, loop, rx[0], 0), 0);
    ck_assert_int_eq(iol_stream_new(&w, loop, tx[0], 0), 0);
    ck_assert_int_eq(iol_stream_read_bytes(r, 4, false, on_read, &st), 0);
    ck_assert_int_eq(iol_stream_set_deferred_writes(w, true), 0);
    size_t n = 2u << 20;
    char *big = malloc(n), *got = malloc(n);
    for (size_t i = 0; i < n; i++)
        big[i] = (char)(i % 251);
    /* A full socket: the send waits in the kernel when the thread exits. */
    size_t pre = 0;
    static char fill[65536];
    for (;;) {
        ssize_t k = send(tx[0], fill, sizeof fill, MSG_DONTWAIT);
        if (k <= 0)
            break;
        pre += (size_t)k;
    }
    ck_assert_int_eq(iol_stream_write(w, big, n, on_done, &st), 0);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, run_once_thread, loop), 0);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    ck_assert_int_eq(write(rx[1], "ping", 4), 4);
    ck_assert(w->send_inflight);
    while (pre > 0) { /* the prefill, read out */
        ssize_t k = recv(tx[1], fill, pre < sizeof fill ? pre : sizeof fill, 0);
        ck_assert_int_gt(k, 0);
        pre -= (size_t)k;
    }
    size_t have = 0;
    double end = iol_test_now() + 20;
    while ((have < n || st.reads < 1) && iol_test_now() < end) {
        ck_assert_int_ge(iol_loop_run_once(loop, 0.001), 0);
        ssize_t k = recv(tx[1], got + have, n - have, MSG_DONTWAIT);
        if (k > 0)
            have += (size_t)k;
    }
    ck_assert_int_eq(st.reads, 1);
    ck_assert_int_eq(st.status, 0);
    ck_assert(memcmp(st.data, "ping", 4) == 0);
    ck_assert_uint_eq(have, n);
    ck_assert(memcmp(got, big, n) == 0);
    run_until(loop, &st.dones, 1);
    free(big);
    free(got);
    iol_stream_close(r);
    iol_stream_close(w);
    close(rx[1]);
    close(tx[1]);
out:
    ck_assert_int_ge(iol_loop_close(loop, false), 0);
}
END_TEST

#endif

static Suite *stream_uring_suite(void)
{
    Suite *s = suite_create("stream_uring");
    TCase *tc = iol_test_tcase("core", 60);
    tcase_add_test(tc, test_deferred_writes_elsewhere);
    tcase_add_test(tc, test_idle_footprint_epoll);
    tcase_add_test(tc, test_huge_max_buffer);
#ifdef IOL_HAVE_URING
    tcase_add_test(tc, test_idle_footprint_uring);
    tcase_add_test(tc, test_claims_instead_of_handler);
    tcase_add_test(tc, test_claim_calls);
    tcase_add_test(tc, test_claim_traded_for_handler);
    tcase_add_test(tc, test_read_and_deferred_write);
    tcase_add_test(tc, test_short_sends_in_order);
    tcase_add_test(tc, test_close_with_recv_in_flight);
    tcase_add_test(tc, test_loop_close_in_flight);
    tcase_add_test(tc, test_pause_cancels_recv);
    tcase_add_test(tc, test_ring_runs_dry);
    tcase_add_test(tc, test_submitter_exits);
#endif
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return iol_test_run(stream_uring_suite());
}
