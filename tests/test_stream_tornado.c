/* Tornado's IOStream parity: read_until_regex, read_into, streaming
 * reads and wait_for_handshake, with test cases ported from Tornado's own
 * tornado/test/iostream_test.py (6.2: TestReadWriteMixin's regex and
 * read_into tests, test_many_mixed_reads, WaitForHandshakeTest; 4.x:
 * the streaming_callback tests), each run over a Unix socketpair, TCP
 * and TLS, on epoll and on uring (`meson test --setup uring`). The
 * Tornado tests await futures in sequence; here a test runs the loop
 * until a callback has run (wait_for). */
#include "ioloop.h"
#include "testutil.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum { KIND_UNIX, KIND_TCP, KIND_TLS, N_KINDS };

/* rs: the stream under test; ws: its peer, a stream too (TLS: the client). */
typedef struct pair {
    iol_loop *loop;
    iol_stream *rs, *ws;
    iol_tls_ctx *sctx, *cctx;
    int closes;
    int close_error;
    bool ws_closed; /* pointers of closed streams must not be used: they free themselves */
    bool in_call; /* set around calls: no callback may see it */
} pair;

static void nop_read(iol_stream *s, const char *data, size_t len, int status, void *arg)
{
    (void)s, (void)data, (void)len, (void)status, (void)arg;
}

/* The close callback: the last moment s may be used. Every new read says
 * -EPIPE on a closed stream. */
static void on_rs_close(iol_stream *s, void *arg)
{
    pair *p = arg;
    char buf[1];
    ck_assert_int_eq(iol_stream_read_until_regex(s, "x", 0, nop_read, NULL), -EPIPE);
    ck_assert_int_eq(iol_stream_read_into(s, buf, 1, false, nop_read, NULL), -EPIPE);
    ck_assert_int_eq(iol_stream_read_bytes_streaming(s, 1, nop_read, nop_read, NULL), -EPIPE);
    ck_assert_int_eq(iol_stream_read_until_close_streaming(s, nop_read, nop_read, NULL), -EPIPE);
    p->closes++;
    p->close_error = iol_stream_error(s);
}

/* false: TLS asked for in a build without it (the test skips). */
static bool pair_open(pair *p, int kind, size_t max_buffer)
{
    *p = (pair){.loop = iol_test_loop_new()};
    if (kind == KIND_TLS) {
        if (!iol_test_need_tls_ctxs(&p->sctx, &p->cctx)) {
            ck_assert_int_eq(iol_loop_close(p->loop, false), 0);
            return false;
        }
        int fds[2];
        iol_test_socket_pair(fds, false);
        ck_assert_int_eq(iol_tls_stream_new(&p->rs, p->loop, fds[0], p->sctx, max_buffer), 0);
        ck_assert_int_eq(iol_stream_new(&p->ws, p->loop, fds[1], 0), 0);
        ck_assert_int_eq(iol_stream_start_tls(p->ws, p->cctx, NULL, NULL, NULL), 0);
    } else {
        int fds[2];
        iol_test_socket_pair(fds, kind == KIND_TCP);
        ck_assert_int_eq(iol_stream_new(&p->rs, p->loop, fds[0], max_buffer), 0);
        ck_assert_int_eq(iol_stream_new(&p->ws, p->loop, fds[1], 0), 0);
    }
    ck_assert_int_eq(iol_stream_set_close_callback(p->rs, on_rs_close, p), 0);
    return true;
}

static void pair_write(pair *p, const char *text)
{
    ck_assert_int_eq(iol_stream_write(p->ws, text, strlen(text), NULL, NULL), 0);
}

/* The peer ends: every byte it wrote, then EOF (TLS: close_notify), even
 * with writes still queued behind the handshake. */
static void pair_peer_ends(pair *p)
{
    ck_assert_int_eq(iol_stream_shutdown(p->ws, NULL, NULL), 0);
}

static void stop_soon(void *arg)
{
    iol_loop_stop(arg);
}

/* Runs the loop until *counter reaches n (10 s at most). */
static void wait_for(pair *p, const int *counter, int n)
{
    double deadline = iol_test_now() + (iol_test_under_valgrind() ? 100 : 10);
    while (*counter < n) {
        ck_assert_msg(iol_test_now() < deadline, "waited too long");
        ck_assert_int_eq(iol_loop_run_once(p->loop, 0.05), 0);
    }
}

/* Runs the loop for a while (Tornado's gen.sleep(0.05)). */
static void run_for(pair *p, double seconds)
{
    ck_assert_int_eq(iol_loop_call_later(p->loop, seconds, stop_soon, p->loop, NULL), 0);
    ck_assert_int_eq(iol_loop_start(p->loop), 0);
}

/* Closes both streams, lets them finish, and closes the loop: nothing of
 * theirs may be left on it. */
static void pair_close(pair *p)
{
    if (p->closes == 0)
        ck_assert_int_eq(iol_stream_close(p->rs), 0);
    if (!p->ws_closed)
        ck_assert_int_eq(iol_stream_close(p->ws), 0);
    wait_for(p, &p->closes, 1);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(iol_loop_run_once(p->loop, 0.01), 0);
    ck_assert_int_eq(iol_loop_close(p->loop, false), 0);
    if (p->sctx) {
        iol_tls_ctx_unref(p->sctx);
        iol_tls_ctx_unref(p->cctx);
    }
}

/* What a read's callbacks saw. */
typedef struct result {
    pair *p;
    int calls;
    int status;
    size_t len;
    const char *data; /* read_into: must be the caller's buffer */
    char text[4096];
    int chunks;
    size_t streamed;
    char streamed_text[4096];
} result;

static void on_result(iol_stream *s, const char *data, size_t len, int status, void *arg)
{
    result *r = arg;
    ck_assert(!r->p->in_call);
    ck_assert_ptr_eq(s, r->p->rs);
    r->calls++;
    r->status = status;
    r->len = len;
    r->data = data;
    if (len < sizeof(r->text)) {
        if (len > 0) /* data may be NULL with len 0 (memcpy wants neither NULL) */
            memcpy(r->text, data, len);
        r->text[len] = '\0';
    }
}

static void on_chunk(iol_stream *s, const char *data, size_t len, int status, void *arg)
{
    result *r = arg;
    (void)s;
    ck_assert(!r->p->in_call);
    ck_assert_int_eq(status, 0);
    ck_assert_uint_gt(len, 0);
    ck_assert_int_eq(r->calls, 0); /* never after done */
    r->chunks++;
    if (r->streamed + len < sizeof(r->streamed_text))
        memcpy(r->streamed_text + r->streamed, data, len);
    r->streamed += len;
    r->streamed_text[r->streamed < sizeof(r->streamed_text) ? r->streamed : 0] = '\0';
}

/* ----------------------------------------------------- read_until_regex */

/* test_read_until_regex_max_bytes */
START_TEST(regex_max_bytes)
{
    pair p;
    if (!pair_open(&p, _i, 0))
        return;
    result r = {.p = &p};
    /* Extra room under the limit */
    p.in_call = true;
    ck_assert_int_eq(iol_stream_read_until_regex(p.rs, "def", 50, on_result, &r), 0);
    pair_write(&p, "abcdef");
    p.in_call = false;
    wait_for(&p, &r.calls, 1);
    ck_assert_int_eq(r.status, 0);
    ck_assert_str_eq(r.text, "abcdef");
    /* Just enough space */
    ck_assert_int_eq(iol_stream_read_until_regex(p.rs, "def", 6, on_result, &r), 0);
    pair_write(&p, "abcdef");
    wait_for(&p, &r.calls, 2);
    ck_assert_int_eq(r.status, 0);
    ck_assert_str_eq(r.text, "abcdef");
    /* Not enough space: the read fails and the stream closes */
    ck_assert_int_eq(iol_stream_read_until_regex(p.rs, "def", 5, on_result, &r), 0);
    pair_write(&p, "123456");
    wait_for(&p, &p.closes, 1);
    ck_assert_int_eq(r.calls, 3);
    ck_assert_int_eq(r.status, -EMSGSIZE);
    ck_assert_int_eq(p.close_error, -EMSGSIZE);
    pair_close(&p);
}
END_TEST

/* test_read_until_regex_max_bytes_inline: the bytes are buffered before
 * the call; the failure still comes from the loop, not the call. */
START_TEST(regex_max_bytes_inline)
{
    pair p;
    if (!pair_open(&p, _i, 0))
        return;
    result r = {.p = &p};
    ck_assert_int_eq(iol_stream_read_bytes(p.rs, 1, false, on_result, &r), 0);
    pair_write(&p, "x123456");
    wait_for(&p, &r.calls, 1);
    run_for(&p, 0.05); /* "123456" is in rs's buffer or the socket */
    p.in_call = true;
    ck_assert_int_eq(iol_stream_read_until_regex(p.rs, "def", 5, on_result, &r), 0);
    p.in_call = false;
    wait_for(&p, &p.closes, 1);
    ck_assert_int_eq(r.calls, 2);
    ck_assert_int_eq(r.status, -EMSGSIZE);
    pair_close(&p);
}
END_TEST

/* test_read_until_regex_max_bytes_ignores_extra: a match that arrives
 * with the bytes that pass the limit does not count. */
START_TEST(regex_max_bytes_ignores_extra)
{
    pair p;
    if (!pair_open(&p, _i, 0))
        return;
    result r = {.p = &p};
    pair_write(&p, "abcdef");
    ck_assert_int_eq(iol_stream_read_until_regex(p.rs, "def", 5, on_result, &r), 0);
    wait_for(&p, &p.closes, 1);
    ck_assert_int_eq(r.calls, 1);
    ck_assert_int_eq(r.status, -EMSGSIZE);
    pair_close(&p);
}
END_TEST

/* Real patterns: an HTTP header's end (CRLF or LF), a match split over
 * two writes, bytes after the match left for the next read; refused
 * patterns; a clean EOF before a match. */
START_TEST(regex_patterns)
{
    pair p;
    if (!pair_open(&p, _i, 0))
        return;
    result r = {.p = &p};
    ck_assert_int_eq(iol_stream_read_until_regex(p.rs, "\r?\n\r?\n", 0, on_result, &r), 0);
    pair_write(&p, "HTTP/1.1 200 OK\r\nA: b\r\n");
    run_for(&p, 0.05);
    ck_assert_int_eq(r.calls, 0);
    pair_write(&p, "\r\nbody");
    wait_for(&p, &r.calls, 1);
    ck_assert_int_eq(r.status, 0);
    ck_assert_str_eq(r.text, "HTTP/1.1 200 OK\r\nA: b\r\n\r\n");
    ck_assert_int_eq(iol_stream_read_until_regex(p.rs, "[0-9]+;", 0, on_result, &r), 0);
    pair_write(&p, "x12");
    run_for(&p, 0.05);
    ck_assert_int_eq(r.calls, 1);
    pair_write(&p, "3;tail");
    wait_for(&p, &r.calls, 2);
    ck_assert_str_eq(r.text, "bodyx123;");
    /* refused: bad syntax, a match of nothing, NULL/empty */
    ck_assert_int_eq(iol_stream_read_until_regex(p.rs, "(", 0, on_result, &r), -EINVAL);
    ck_assert_int_eq(iol_stream_read_until_regex(p.rs, "a*", 0, on_result, &r), -EINVAL);
    ck_assert_int_eq(iol_stream_read_until_regex(p.rs, "", 0, on_result, &r), -EINVAL);
    ck_assert_int_eq(iol_stream_read_until_regex(p.rs, NULL, 0, on_result, &r), -EINVAL);
    ck_assert_int_eq(iol_stream_read_until_regex(p.rs, "x", 0, NULL, &r), -EINVAL);
    ck_assert_int_eq(iol_stream_read_until_regex(NULL, "x", 0, on_result, &r), -EINVAL);
    /* one read at a time */
    ck_assert_int_eq(iol_stream_read_until_regex(p.rs, "zzz", 0, on_result, &r), 0);
    ck_assert_int_eq(iol_stream_read_until_regex(p.rs, "zzz", 0, on_result, &r), -EBUSY);
    /* a clean EOF before the match: IOL_EOF */
    pair_peer_ends(&p);
    wait_for(&p, &r.calls, 3);
    ck_assert_int_eq(r.status, IOL_EOF);
    pair_close(&p);
}
END_TEST

/* ------------------------------------------------------------ read_into */

/* test_read_into */
START_TEST(read_into)
{
    pair p;
    if (!pair_open(&p, _i, 0))
        return;
    result r = {.p = &p};
    char buf[10];
    p.in_call = true;
    ck_assert_int_eq(iol_stream_read_into(p.rs, buf, sizeof(buf), false, on_result, &r), 0);
    p.in_call = false;
    pair_write(&p, "hello");
    run_for(&p, 0.05);
    ck_assert_int_eq(r.calls, 0); /* still reading */
    pair_write(&p, "world!!");
    wait_for(&p, &r.calls, 1);
    ck_assert_int_eq(r.status, 0);
    ck_assert_uint_eq(r.len, 10);
    ck_assert_ptr_eq(r.data, buf);
    ck_assert(memcmp(buf, "helloworld", 10) == 0);
    /* Existing buffer is fed into user buffer */
    ck_assert_int_eq(iol_stream_read_into(p.rs, buf, sizeof(buf), false, on_result, &r), 0);
    run_for(&p, 0.05);
    ck_assert_int_eq(r.calls, 1);
    pair_write(&p, "1234567890");
    wait_for(&p, &r.calls, 2);
    ck_assert_uint_eq(r.len, 10);
    ck_assert(memcmp(buf, "!!12345678", 10) == 0);
    /* Existing buffer can satisfy read immediately */
    char buf4[4];
    pair_write(&p, "abcdefghi");
    run_for(&p, 0.05);
    ck_assert_int_eq(iol_stream_read_into(p.rs, buf4, sizeof(buf4), false, on_result, &r), 0);
    wait_for(&p, &r.calls, 3);
    ck_assert_uint_eq(r.len, 4);
    ck_assert(memcmp(buf4, "90ab", 4) == 0);
    ck_assert_int_eq(iol_stream_read_bytes(p.rs, 7, false, on_result, &r), 0);
    wait_for(&p, &r.calls, 4);
    ck_assert_str_eq(r.text, "cdefghi");
    pair_close(&p);
}
END_TEST

/* test_read_into_partial */
START_TEST(read_into_partial)
{
    pair p;
    if (!pair_open(&p, _i, 0))
        return;
    result r = {.p = &p};
    char buf[10] = {0};
    /* Partial read */
    ck_assert_int_eq(iol_stream_read_into(p.rs, buf, sizeof(buf), true, on_result, &r), 0);
    pair_write(&p, "hello");
    wait_for(&p, &r.calls, 1);
    ck_assert_uint_eq(r.len, 5);
    ck_assert(memcmp(buf, "hello\0\0\0\0\0", 10) == 0);
    /* Full read despite partial=True */
    pair_write(&p, "world!1234567890");
    run_for(&p, 0.05);
    ck_assert_int_eq(iol_stream_read_into(p.rs, buf, sizeof(buf), true, on_result, &r), 0);
    wait_for(&p, &r.calls, 2);
    ck_assert_uint_eq(r.len, 10);
    ck_assert(memcmp(buf, "world!1234", 10) == 0);
    /* Existing buffer can satisfy read immediately */
    ck_assert_int_eq(iol_stream_read_into(p.rs, buf, sizeof(buf), true, on_result, &r), 0);
    wait_for(&p, &r.calls, 3);
    ck_assert_uint_eq(r.len, 6);
    ck_assert(memcmp(buf, "5678901234", 10) == 0);
    pair_close(&p);
}
END_TEST

/* test_read_into_zero_bytes answers 0 at once; a C read of nothing is
 * refused instead, as read_bytes(0) is. EOF: what landed, and IOL_EOF. */
START_TEST(read_into_edges)
{
    pair p;
    if (!pair_open(&p, _i, 0))
        return;
    result r = {.p = &p};
    char buf[10];
    ck_assert_int_eq(iol_stream_read_into(p.rs, buf, 0, false, on_result, &r), -EINVAL);
    ck_assert_int_eq(iol_stream_read_into(p.rs, NULL, 1, false, on_result, &r), -EINVAL);
    ck_assert_int_eq(iol_stream_read_into(p.rs, buf, 1, false, NULL, &r), -EINVAL);
    ck_assert_int_eq(iol_stream_read_into(NULL, buf, 1, false, on_result, &r), -EINVAL);
    ck_assert_int_eq(iol_stream_read_into(p.rs, buf, sizeof(buf), false, on_result, &r), 0);
    ck_assert_int_eq(iol_stream_read_into(p.rs, buf, sizeof(buf), false, on_result, &r), -EBUSY);
    pair_write(&p, "abc");
    pair_peer_ends(&p);
    wait_for(&p, &r.calls, 1);
    ck_assert_int_eq(r.status, IOL_EOF);
    ck_assert_uint_eq(r.len, 3);
    ck_assert_ptr_eq(r.data, buf);
    ck_assert(memcmp(buf, "abc", 3) == 0);
    pair_close(&p);
}
END_TEST

/* read_into past max_buffer_size: the bytes go to the caller's buffer
 * as they come, so a 4 KiB stream fills a 1 MiB buffer. */
enum { BIG = 1u << 20 };

START_TEST(read_into_past_max_buffer)
{
    pair p;
    if (!pair_open(&p, _i, 4096))
        return;
    result r = {.p = &p};
    char *out = malloc(BIG), *in = malloc(BIG);
    for (size_t i = 0; i < BIG; i++)
        out[i] = (char)(i * 7 + (i >> 12));
    ck_assert_int_eq(iol_stream_read_into(p.rs, in, BIG, false, on_result, &r), 0);
    ck_assert_int_eq(iol_stream_write(p.ws, out, BIG, NULL, NULL), 0);
    wait_for(&p, &r.calls, 1);
    ck_assert_int_eq(r.status, 0);
    ck_assert_uint_eq(r.len, BIG);
    ck_assert(memcmp(in, out, BIG) == 0);
    pair_close(&p);
    free(out);
    free(in);
}
END_TEST

/* test_many_mixed_reads: read_bytes and read_into of random sizes over
 * the same bytes, which must arrive whole and in order. */
typedef struct mixed {
    pair *p;
    result r;
    size_t total, consumed;
    unsigned rng;
    char buf[1000];
    const char *expect;
    bool bad;
    int done;
} mixed;

static unsigned next_rand(unsigned *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 17;
    *x ^= *x << 5;
    return *x;
}

static void mixed_next(mixed *m);

static void mixed_got(iol_stream *s, const char *data, size_t len, int status, void *arg)
{
    (void)s;
    mixed *m = arg;
    ck_assert_int_eq(status, 0);
    if (memcmp(data, m->expect + m->consumed, len) != 0)
        m->bad = true;
    m->consumed += len;
    mixed_next(m);
}

static void mixed_next(mixed *m)
{
    size_t left = m->total - m->consumed;
    if (left == 0) {
        m->done = 1;
        return;
    }
    size_t size = 1 + next_rand(&m->rng) % (left < 1000 ? left : 1000);
    if (next_rand(&m->rng) & 1)
        ck_assert_int_eq(iol_stream_read_bytes(m->p->rs, size, false, mixed_got, m), 0);
    else
        ck_assert_int_eq(iol_stream_read_into(m->p->rs, m->buf, size, false, mixed_got, m), 0);
}

START_TEST(many_mixed_reads)
{
    pair p;
    if (!pair_open(&p, _i, 0))
        return;
    mixed m = {.p = &p, .total = iol_test_scaled(1000000, 20000), .rng = 42};
    char *data = malloc(m.total);
    for (size_t i = 0; i < m.total; i++)
        data[i] = (char)next_rand(&m.rng);
    m.expect = data;
    /* The producer writes in random pieces of up to 1000 bytes too. */
    for (size_t off = 0; off < m.total;) {
        size_t size = 1 + next_rand(&m.rng) % 1000;
        if (size > m.total - off)
            size = m.total - off;
        ck_assert_int_eq(iol_stream_write(p.ws, data + off, size, NULL, NULL), 0);
        off += size;
    }
    mixed_next(&m);
    wait_for(&p, &m.done, 1);
    ck_assert(!m.bad);
    ck_assert_uint_eq(m.consumed, m.total);
    pair_close(&p);
    free(data);
}
END_TEST

/* ------------------------------------------------------ Streaming reads */

/* Tornado 4's test_streaming_callback: the bytes as they come, then the
 * final callback; what is past n stays for the next read. */
START_TEST(streaming_read_bytes)
{
    pair p;
    if (!pair_open(&p, _i, 0))
        return;
    result r = {.p = &p};
    p.in_call = true;
    ck_assert_int_eq(iol_stream_read_bytes_streaming(p.rs, 10, on_chunk, on_result, &r), 0);
    p.in_call = false;
    pair_write(&p, "1234");
    while (r.streamed < 4) /* as they come: before the read is done */
        wait_for(&p, &r.chunks, r.chunks + 1);
    ck_assert_str_eq(r.streamed_text, "1234");
    ck_assert_int_eq(r.calls, 0);
    pair_write(&p, "56789abcdef");
    wait_for(&p, &r.calls, 1);
    ck_assert_int_eq(r.status, 0);
    ck_assert_uint_eq(r.len, 0);
    ck_assert_str_eq(r.streamed_text, "123456789a");
    result r2 = {.p = &p};
    ck_assert_int_eq(iol_stream_read_bytes(p.rs, 5, false, on_result, &r2), 0);
    wait_for(&p, &r2.calls, 1);
    ck_assert_str_eq(r2.text, "bcdef");
    pair_close(&p);
}
END_TEST

/* test_streaming_callback_with_data_in_buffer: bytes already buffered go
 * to the chunk callback first, from the loop. */
START_TEST(streaming_with_data_in_buffer)
{
    pair p;
    if (!pair_open(&p, _i, 0))
        return;
    result r = {.p = &p}, first = {.p = &p};
    ck_assert_int_eq(iol_stream_read_bytes(p.rs, 2, false, on_result, &first), 0);
    pair_write(&p, "abcd");
    wait_for(&p, &first.calls, 1);
    run_for(&p, 0.05);
    p.in_call = true;
    ck_assert_int_eq(iol_stream_read_bytes_streaming(p.rs, 4, on_chunk, on_result, &r), 0);
    p.in_call = false;
    ck_assert_int_eq(r.chunks, 0);
    pair_write(&p, "ef");
    wait_for(&p, &r.calls, 1);
    ck_assert_str_eq(r.streamed_text, "cdef");
    ck_assert_int_eq(r.status, 0);
    pair_close(&p);
}
END_TEST

/* test_streaming_until_close: everything to the chunk callback, then
 * status 0 at the peer's clean close; past max_buffer_size too. */
START_TEST(streaming_until_close)
{
    pair p;
    if (!pair_open(&p, _i, 4096))
        return;
    result r = {.p = &p};
    ck_assert_int_eq(iol_stream_read_until_close_streaming(p.rs, on_chunk, on_result, &r), 0);
    char *big = malloc(BIG);
    memset(big, 'z', BIG);
    pair_write(&p, "1234");
    ck_assert_int_eq(iol_stream_write(p.ws, big, BIG, NULL, NULL), 0);
    pair_write(&p, "5678");
    ck_assert_int_eq(iol_stream_shutdown(p.ws, NULL, NULL), 0); /* every byte, then EOF */
    wait_for(&p, &r.calls, 1);
    ck_assert_int_eq(r.status, 0);
    ck_assert_uint_eq(r.len, 0);
    ck_assert_uint_eq(r.streamed, BIG + 8);
    ck_assert_int_ge(r.chunks, 2);
    wait_for(&p, &p.closes, 1);
    ck_assert_int_eq(p.close_error, 0);
    pair_close(&p);
    free(big);
}
END_TEST

/* The peer closes before n bytes: the chunks came, then IOL_EOF. Bad
 * calls. */
START_TEST(streaming_edges)
{
    pair p;
    if (!pair_open(&p, _i, 0))
        return;
    result r = {.p = &p};
    ck_assert_int_eq(iol_stream_read_bytes_streaming(p.rs, 0, on_chunk, on_result, &r), -EINVAL);
    ck_assert_int_eq(iol_stream_read_bytes_streaming(p.rs, 1, NULL, on_result, &r), -EINVAL);
    ck_assert_int_eq(iol_stream_read_bytes_streaming(p.rs, 1, on_chunk, NULL, &r), -EINVAL);
    ck_assert_int_eq(iol_stream_read_until_close_streaming(p.rs, NULL, on_result, &r), -EINVAL);
    ck_assert_int_eq(iol_stream_read_until_close_streaming(NULL, on_chunk, on_result, &r), -EINVAL);
    ck_assert_int_eq(iol_stream_read_bytes_streaming(p.rs, 100, on_chunk, on_result, &r), 0);
    ck_assert_int_eq(iol_stream_read_until_close_streaming(p.rs, on_chunk, on_result, &r), -EBUSY);
    pair_write(&p, "abc");
    pair_peer_ends(&p);
    wait_for(&p, &r.calls, 1);
    ck_assert_str_eq(r.streamed_text, "abc");
    ck_assert_int_eq(r.status, IOL_EOF);
    pair_close(&p);
}
END_TEST

/* chunk may pause reading (the rest waits for resume) or close the
 * stream (done then hears -EPIPE). */
static void resume_later(void *arg)
{
    ck_assert_int_eq(iol_stream_resume_reading(arg), 0);
}

static void chunk_pauses(iol_stream *s, const char *data, size_t len, int status, void *arg)
{
    result *r = arg;
    on_chunk(s, data, len, status, arg);
    ck_assert_int_eq(iol_stream_pause_reading(s), 0);
    ck_assert_int_eq(iol_loop_call_later(r->p->loop, 0.01, resume_later, s, NULL), 0);
}

static void chunk_closes(iol_stream *s, const char *data, size_t len, int status, void *arg)
{
    on_chunk(s, data, len, status, arg);
    ck_assert_int_eq(iol_stream_close(s), 0);
}

START_TEST(streaming_chunk_pauses_or_closes)
{
    pair p;
    if (!pair_open(&p, _i, 0))
        return;
    result r = {.p = &p};
    ck_assert_int_eq(iol_stream_read_bytes_streaming(p.rs, 9, chunk_pauses, on_result, &r), 0);
    pair_write(&p, "abc");
    run_for(&p, 0.05);
    pair_write(&p, "def");
    run_for(&p, 0.05);
    pair_write(&p, "ghi");
    wait_for(&p, &r.calls, 1);
    ck_assert_int_eq(r.status, 0);
    ck_assert_str_eq(r.streamed_text, "abcdefghi");
    ck_assert_int_ge(r.chunks, 1); /* 3 unless writes merged on a slow machine */
    run_for(&p, 0.05); /* the last resume */
    result c = {.p = &p};
    ck_assert_int_eq(iol_stream_read_until_close_streaming(p.rs, chunk_closes, on_result, &c), 0);
    pair_write(&p, "xyz");
    wait_for(&p, &c.calls, 1);
    ck_assert_int_eq(c.chunks, 1);
    ck_assert_int_eq(c.status, -EPIPE);
    pair_close(&p);
}
END_TEST

/* ------------------------------------------------------------ Threads */

static iol_stream *foreign_target;
static int foreign_results[6];

static void nop_connect(iol_stream *s, int status, void *arg)
{
    (void)s, (void)status, (void)arg;
}

static void *foreign_calls(void *arg)
{
    (void)arg;
    static char buf[4];
    iol_stream *s = foreign_target;
    foreign_results[0] = iol_stream_read_until_regex(s, "x", 0, nop_read, NULL);
    foreign_results[1] = iol_stream_read_into(s, buf, sizeof(buf), false, nop_read, NULL);
    foreign_results[2] = iol_stream_read_bytes_streaming(s, 1, nop_read, nop_read, NULL);
    foreign_results[3] = iol_stream_read_until_close_streaming(s, nop_read, nop_read, NULL);
    foreign_results[4] = iol_stream_wait_for_handshake(s, nop_connect, NULL);
    return NULL;
}

static void from_foreign_thread(void *arg)
{
    pair *p = arg;
    pthread_t th;
    foreign_target = p->rs;
    ck_assert_int_eq(pthread_create(&th, NULL, foreign_calls, NULL), 0);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    iol_loop_stop(p->loop);
}

/* From another thread while the loop runs: -EPERM and nothing changes
 * (the stream then reads normally, with each of the calls). */
START_TEST(thread_rule)
{
    pair p;
    if (!pair_open(&p, _i, 0))
        return;
    ck_assert_int_eq(iol_loop_add_callback(p.loop, from_foreign_thread, &p), 0);
    iol_test_loop_run(p.loop, 10);
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(foreign_results[i], -EPERM);
    result r = {.p = &p};
    char buf[3];
    ck_assert_int_eq(iol_stream_read_until_regex(p.rs, "b+", 0, on_result, &r), 0);
    pair_write(&p, "abbxyzw");
    wait_for(&p, &r.calls, 1);
    ck_assert_str_eq(r.text, "abb");
    ck_assert_int_eq(iol_stream_read_into(p.rs, buf, 3, false, on_result, &r), 0);
    wait_for(&p, &r.calls, 2);
    ck_assert(memcmp(buf, "xyz", 3) == 0);
    result r3 = {.p = &p};
    ck_assert_int_eq(iol_stream_read_bytes_streaming(p.rs, 1, on_chunk, on_result, &r3), 0);
    wait_for(&p, &r3.calls, 1);
    ck_assert_str_eq(r3.streamed_text, "w");
    if (_i == KIND_TLS) {
        int calls = 0;
        ck_assert_int_eq(iol_stream_wait_for_handshake(p.rs, nop_connect, &calls), 0);
    } else {
        ck_assert_int_eq(iol_stream_wait_for_handshake(p.rs, nop_connect, NULL), -EINVAL); /* not TLS */
    }
    pair_close(&p);
}
END_TEST

/* ------------------------------------------------- wait_for_handshake */

typedef struct waiter {
    pair *p;
    int calls;
    int status;
    int closes_then; /* p->closes when cb ran */
} waiter;

static void on_handshake(iol_stream *s, int status, void *arg)
{
    waiter *w = arg;
    ck_assert(!w->p->in_call);
    ck_assert_ptr_eq(s, w->p->rs);
    w->calls++;
    w->status = status;
    w->closes_then = w->p->closes;
}

/* test_wait_for_handshake_future, _already_waiting_error and
 * _already_connected in one story: a server stream hears of its
 * handshake; a second wait meanwhile is -EBUSY; a wait after it finished
 * is answered from the loop. */
START_TEST(wait_for_handshake)
{
    pair p;
    if (!pair_open(&p, KIND_TLS, 0))
        return;
    waiter w = {.p = &p}, again = {.p = &p};
    p.in_call = true;
    ck_assert_int_eq(iol_stream_wait_for_handshake(p.rs, on_handshake, &w), 0);
    ck_assert_int_eq(iol_stream_wait_for_handshake(p.rs, on_handshake, &again), -EBUSY);
    p.in_call = false;
    wait_for(&p, &w.calls, 1);
    ck_assert_int_eq(w.status, 0);
    char alpn[16];
    ck_assert_int_eq(iol_stream_tls_alpn(p.rs, alpn, sizeof(alpn)), 0); /* done: not -ENOTCONN */
    p.in_call = true;
    ck_assert_int_eq(iol_stream_wait_for_handshake(p.rs, on_handshake, &again), 0);
    p.in_call = false;
    ck_assert_int_eq(again.calls, 0);
    wait_for(&p, &again.calls, 1);
    ck_assert_int_eq(again.status, 0);
    ck_assert_int_eq(w.calls, 1);
    pair_close(&p);
}
END_TEST

/* A failed handshake (plain bytes instead of a ClientHello): the error,
 * before the close callback; a close or the loop's close while waiting. */
START_TEST(wait_for_handshake_failures)
{
    iol_tls_ctx *sctx, *cctx;
    if (!iol_test_need_tls_ctxs(&sctx, &cctx))
        return;
    for (int round = 0; round < 3; round++) {
        pair p = {.loop = iol_test_loop_new()};
        int fds[2];
        iol_test_socket_pair(fds, false);
        ck_assert_int_eq(iol_tls_stream_new(&p.rs, p.loop, fds[0], sctx, 0), 0);
        ck_assert_int_eq(iol_stream_set_close_callback(p.rs, on_rs_close, &p), 0);
        waiter w = {.p = &p};
        ck_assert_int_eq(iol_stream_wait_for_handshake(p.rs, on_handshake, &w), 0);
        if (round == 0) {
            iol_test_write_all(fds[1], "GET / HTTP/1.0\r\n\r\n", 18);
            wait_for(&p, &p.closes, 1);
            ck_assert_int_eq(w.calls, 1);
            ck_assert_int_lt(w.status, 0);
            ck_assert_int_eq(w.closes_then, 0); /* before the close callback */
        } else if (round == 1) {
            ck_assert_int_eq(iol_stream_close(p.rs), 0);
            /* closed, not yet freed (that is the loop's) */
            ck_assert_int_eq(iol_stream_wait_for_handshake(p.rs, on_handshake, &w), -EPIPE);
            wait_for(&p, &p.closes, 1);
            ck_assert_int_eq(w.calls, 1);
            ck_assert_int_eq(w.status, -EPIPE);
        } else {
            ck_assert_int_eq(iol_loop_run_once(p.loop, 0), 0);
            ck_assert_int_ge(iol_loop_close(p.loop, false), 0);
            ck_assert_int_eq(w.calls, 1);
            ck_assert_int_eq(w.status, -ESHUTDOWN);
            close(fds[1]);
            continue;
        }
        for (int i = 0; i < 3; i++)
            ck_assert_int_eq(iol_loop_run_once(p.loop, 0.01), 0);
        ck_assert_int_eq(iol_loop_close(p.loop, false), 0);
        close(fds[1]);
    }
    iol_tls_ctx_unref(sctx);
    iol_tls_ctx_unref(cctx);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("stream_tornado");
    TCase *tc = iol_test_tcase("tornado", 120);
    tcase_add_loop_test(tc, regex_max_bytes, 0, N_KINDS);
    tcase_add_loop_test(tc, regex_max_bytes_inline, 0, N_KINDS);
    tcase_add_loop_test(tc, regex_max_bytes_ignores_extra, 0, N_KINDS);
    tcase_add_loop_test(tc, regex_patterns, 0, N_KINDS);
    tcase_add_loop_test(tc, read_into, 0, N_KINDS);
    tcase_add_loop_test(tc, read_into_partial, 0, N_KINDS);
    tcase_add_loop_test(tc, read_into_edges, 0, N_KINDS);
    tcase_add_loop_test(tc, read_into_past_max_buffer, 0, N_KINDS);
    tcase_add_loop_test(tc, many_mixed_reads, 0, N_KINDS);
    tcase_add_loop_test(tc, streaming_read_bytes, 0, N_KINDS);
    tcase_add_loop_test(tc, streaming_with_data_in_buffer, 0, N_KINDS);
    tcase_add_loop_test(tc, streaming_until_close, 0, N_KINDS);
    tcase_add_loop_test(tc, streaming_edges, 0, N_KINDS);
    tcase_add_loop_test(tc, streaming_chunk_pauses_or_closes, 0, N_KINDS);
    tcase_add_loop_test(tc, thread_rule, 0, N_KINDS);
    tcase_add_test(tc, wait_for_handshake);
    tcase_add_test(tc, wait_for_handshake_failures);
    suite_add_tcase(s, tc);
    return iol_test_run(s);
}
