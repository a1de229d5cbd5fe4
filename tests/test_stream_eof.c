/* A clean close by the peer reaches a pending read as IOL_EOF, told from
 * an error by the status alone (include/ioloop.h, "Status codes"): each
 * read kind, plain and TLS (close_notify), while a reset is still
 * -ECONNRESET, our own close -EPIPE, and read_until_close 0. A name that
 * does not resolve is IOL_ENONAME. Run on epoll and on uring (`meson test
 * --setup uring`); every stream is closed and its loop closed with none
 * left. */
#include "ioloop.h"
#include "testutil.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct story {
    iol_loop *loop;
    int reads;
    int status;
    size_t len;
    char data[64];
    int closes;
    int close_error; /* iol_stream_error in the close callback */
} story;

static void on_read(iol_stream *s, const char *data, size_t len, int status, void *arg)
{
    (void)s;
    story *st = arg;
    st->reads++;
    st->status = status;
    st->len = len;
    if (len && len < sizeof(st->data))
        memcpy(st->data, data, len);
}

static void on_close(iol_stream *s, void *arg)
{
    story *st = arg;
    st->closes++;
    st->close_error = iol_stream_error(s);
    iol_loop_stop(st->loop);
}

enum { READ_UNTIL, READ_UNTIL_MAX, READ_BYTES, READ_BYTES_PARTIAL, READ_UNTIL_CLOSE, N_KINDS };

static void start_read(iol_stream *s, int kind, story *st)
{
    switch (kind) {
    case READ_UNTIL:
        ck_assert_int_eq(iol_stream_read_until(s, "\n", on_read, st), 0);
        break;
    case READ_UNTIL_MAX:
        ck_assert_int_eq(iol_stream_read_until_max(s, "\n", 1000, on_read, st), 0);
        break;
    case READ_BYTES:
        ck_assert_int_eq(iol_stream_read_bytes(s, 100, false, on_read, st), 0);
        break;
    case READ_BYTES_PARTIAL:
        ck_assert_int_eq(iol_stream_read_bytes(s, 100, true, on_read, st), 0);
        break;
    case READ_UNTIL_CLOSE:
        ck_assert_int_eq(iol_stream_read_until_close(s, on_read, st), 0);
        break;
    }
}

/* Each read kind, pending when the peer sends a few bytes short of it
 * (none for the partial read, which they would answer) and closes. */
START_TEST(clean_eof_is_iol_eof)
{
    int kind = _i;
    for (int tcp = 0; tcp < 2; tcp++) {
        story st = {.loop = iol_test_loop_new()};
        int peer;
        iol_stream *s = iol_test_stream_pair(st.loop, tcp, &peer);
        ck_assert_int_eq(iol_stream_set_close_callback(s, on_close, &st), 0);
        start_read(s, kind, &st);
        if (kind != READ_BYTES_PARTIAL)
            iol_test_write_all(peer, "short", 5);
        close(peer);
        iol_test_loop_run(st.loop, 10);
        ck_assert_int_eq(st.reads, 1);
        ck_assert_int_eq(st.closes, 1);
        if (kind == READ_UNTIL_CLOSE) {
            ck_assert_int_eq(st.status, 0);
            ck_assert_uint_eq(st.len, 5);
        } else {
            ck_assert_int_eq(st.status, IOL_EOF);
            ck_assert_uint_eq(st.len, 0);
            ck_assert_str_eq(iol_strerror(st.status), "connection closed by peer");
        }
        ck_assert_int_eq(st.close_error, 0); /* a clean close is no error of the stream */
        ck_assert_int_eq(iol_loop_close(st.loop, false), 0);
    }
}
END_TEST

/* A reset (SO_LINGER 0) is not a clean close: -ECONNRESET, and the
 * stream's error says so too. */
START_TEST(reset_is_econnreset)
{
    story st = {.loop = iol_test_loop_new()};
    int peer;
    iol_stream *s = iol_test_stream_pair(st.loop, true, &peer);
    ck_assert_int_eq(iol_stream_set_close_callback(s, on_close, &st), 0);
    ck_assert_int_eq(iol_stream_read_until(s, "\n", on_read, &st), 0);
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    ck_assert_int_eq(setsockopt(peer, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
    close(peer);
    iol_test_loop_run(st.loop, 10);
    ck_assert_int_eq(st.reads, 1);
    ck_assert_int_eq(st.status, -ECONNRESET);
    ck_assert_int_eq(st.close_error, -ECONNRESET);
    ck_assert_int_eq(iol_loop_close(st.loop, false), 0);
}
END_TEST

/* Our own close fails a pending read with -EPIPE, not IOL_EOF. */
START_TEST(our_close_is_epipe)
{
    story st = {.loop = iol_test_loop_new()};
    int peer;
    iol_stream *s = iol_test_stream_pair(st.loop, false, &peer);
    ck_assert_int_eq(iol_stream_set_close_callback(s, on_close, &st), 0);
    ck_assert_int_eq(iol_stream_read_bytes(s, 10, false, on_read, &st), 0);
    ck_assert_int_eq(iol_stream_close(s), 0);
    iol_test_loop_run(st.loop, 10);
    ck_assert_int_eq(st.reads, 1);
    ck_assert_int_eq(st.status, -EPIPE);
    ck_assert_int_eq(st.close_error, 0);
    close(peer);
    ck_assert_int_eq(iol_loop_close(st.loop, false), 0);
}
END_TEST

/* TLS: the peer's close_notify then FIN is a clean close too. */
typedef struct tls_story {
    story st;
    iol_stream *cli;
} tls_story;

static void tls_close_client(iol_stream *s, int status, void *arg)
{
    (void)s;
    ck_assert_int_eq(status, 0);
    tls_story *t = arg;
    ck_assert_int_eq(iol_stream_close(t->cli), 0); /* close_notify, then FIN */
}

static void tls_client_wrote(void *arg)
{
    tls_story *t = arg;
    ck_assert_int_eq(iol_stream_close(t->cli), 0); /* close_notify, then FIN */
}

START_TEST(tls_close_notify_is_iol_eof)
{
    int kind = _i;
    iol_tls_ctx *sctx, *cctx;
    if (!iol_test_need_tls_ctxs(&sctx, &cctx))
        return;
    tls_story t = {.st.loop = iol_test_loop_new()};
    iol_stream *srv;
    iol_test_tls_pair(t.st.loop, sctx, cctx, &srv, &t.cli, kind == READ_BYTES_PARTIAL ? tls_close_client : NULL, &t);
    ck_assert_int_eq(iol_stream_set_close_callback(srv, on_close, &t.st), 0);
    start_read(srv, kind, &t.st);
    if (kind != READ_BYTES_PARTIAL) /* the partial read would take them */
        ck_assert_int_eq(iol_stream_write(t.cli, "short", 5, tls_client_wrote, &t), 0);
    iol_test_loop_run(t.st.loop, 10);
    ck_assert_int_eq(t.st.reads, 1);
    if (kind == READ_UNTIL_CLOSE) {
        ck_assert_int_eq(t.st.status, 0);
        ck_assert_uint_eq(t.st.len, 5);
        ck_assert(memcmp(t.st.data, "short", 5) == 0);
    } else {
        ck_assert_int_eq(t.st.status, IOL_EOF);
    }
    ck_assert_int_eq(t.st.close_error, 0);
    ck_assert_int_eq(iol_loop_close(t.st.loop, false), 0);
    iol_tls_ctx_unref(sctx);
    iol_tls_ctx_unref(cctx);
}
END_TEST

/* A name under .invalid (RFC 6761) does not resolve: IOL_ENONAME in the
 * connect callback and as the stream's error. Without a DNS server that
 * answers, getaddrinfo says EAI_AGAIN instead (-EAGAIN): checked first,
 * so that the test says which it proved. */
typedef struct dial {
    iol_loop *loop;
    int status;
    int calls;
    int close_error;
} dial;

static void on_dial(iol_stream *s, int status, void *arg)
{
    (void)s;
    dial *d = arg;
    d->calls++;
    d->status = status;
}

static void on_dial_close(iol_stream *s, void *arg)
{
    dial *d = arg;
    d->close_error = iol_stream_error(s);
    iol_loop_stop(d->loop);
}

START_TEST(unresolvable_name_is_iol_enoname)
{
    const char *name = "no-such-host.invalid";
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(name, "80", NULL, &res);
    ck_assert_int_ne(gai, 0);
    dial d = {.loop = iol_test_loop_new()};
    iol_stream *s;
    ck_assert_int_eq(iol_stream_connect_ex(&s, d.loop, name, 80, NULL, on_dial, &d), 0);
    ck_assert_int_eq(iol_stream_set_close_callback(s, on_dial_close, &d), 0);
    iol_test_loop_run(d.loop, 30);
    ck_assert_int_eq(d.calls, 1);
    if (gai == EAI_AGAIN) {
        fprintf(stderr, "unresolvable_name_is_iol_enoname: no DNS here (EAI_AGAIN): -EAGAIN checked instead\n");
        ck_assert_int_eq(d.status, -EAGAIN);
    } else {
        ck_assert_int_eq(gai, EAI_NONAME);
        ck_assert_int_eq(d.status, IOL_ENONAME);
        ck_assert_int_eq(d.close_error, IOL_ENONAME);
        ck_assert_str_eq(iol_strerror(d.status), "host name not found");
    }
    ck_assert_int_eq(iol_loop_close(d.loop, false), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("stream_eof");
    TCase *tc = iol_test_tcase("eof", 60);
    tcase_add_loop_test(tc, clean_eof_is_iol_eof, 0, N_KINDS);
    tcase_add_test(tc, reset_is_econnreset);
    tcase_add_test(tc, our_close_is_epipe);
    tcase_add_loop_test(tc, tls_close_notify_is_iol_eof, 0, N_KINDS);
    tcase_add_test(tc, unresolvable_name_is_iol_enoname);
    suite_add_tcase(s, tc);
    return iol_test_run(s);
}
