/* TLS streams: our client against our server (handshake, echo, SNI,
 * ALPN, resumption, STARTTLS, close_notify both ways), the failures each
 * closing that stream with its -errno and one log line (wrong CA, wrong
 * host name, garbage, plain HTTP, a truncated record, the handshake
 * deadline) while the server keeps serving, and `openssl s_client` and
 * `curl` against our server. The CA and certificates are made at run
 * time with the openssl CLI in a temporary directory (no key is
 * committed). Without TLS in the build every call says -ENOTSUP. */
#include "ioloop.h"
#include "testutil.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* The certificates: testutil's CA set, made once in main. */
#define path(name) iol_test_cert_path(name)

/* ------------------------------------------------------------------ Server */

enum { MODE_ECHO, MODE_ONE_LINE, MODE_HTTP, MODE_STARTTLS, MODE_ZEROCOPY };

typedef struct server {
    iol_loop *loop;
    iol_tls_ctx *ctx;
    int mode;
    int lfd;
    uint16_t port;
    int accepted;
    int closed;
    int last_error;   /* of the last stream closed */
    int stop_after;   /* stop the loop after this many closes; 0: never */
    int file_fd;      /* MODE_ZEROCOPY: holds "file\n" */
    int lines;        /* MODE_ECHO: lines echoed */
    bool count_eagain; /* MODE_ECHO: from the second line on, count its stream's EAGAIN recvs */
} server;

/* recv() calls that found nothing (EAGAIN) on one fd, counted: the
 * library is linked into this test statically, so its BIO's recv calls
 * land here (then in libc's, or in a sanitizer's interceptor). The fd is
 * set and read on the test's thread only; the pointer is resolved before
 * main, before any thread. */
static int eagain_fd = -1;
static int eagain_count;
static ssize_t (*real_recv)(int, void *, size_t, int);

__attribute__((constructor)) static void resolve_recv(void)
{
    real_recv = (ssize_t (*)(int, void *, size_t, int))dlsym(RTLD_NEXT, "recv");
}

ssize_t recv(int fd, void *buf, size_t len, int flags)
{
    ssize_t n = real_recv(fd, buf, len, flags);
    if (n < 0 && errno == EAGAIN && fd == eagain_fd)
        eagain_count++;
    return n;
}

static void srv_on_line(iol_stream *s, const char *data, size_t len, int status, void *arg);

static void srv_on_close(iol_stream *s, void *arg)
{
    server *sv = arg;
    sv->closed++;
    sv->last_error = iol_stream_error(s);
    if (sv->stop_after && sv->closed == sv->stop_after)
        iol_loop_stop(sv->loop);
}

static void srv_close_after_write(void *arg)
{
    iol_stream_close(arg);
}

static void srv_on_starttls(iol_stream *s, const char *data, size_t len, int status, void *arg)
{
    server *sv = arg;
    if (status < 0)
        return;
    ck_assert_int_eq(len, 9);
    ck_assert(memcmp(data, "STARTTLS\n", 9) == 0);
    ck_assert_int_eq(iol_stream_write(s, "OK\n", 3, NULL, NULL), 0);
    /* The reply goes out in plaintext first: our plain write went
     * straight to the kernel (the buffer is empty again) */
    ck_assert_int_eq(iol_stream_write_buffer_size(s), 0);
    ck_assert_int_eq(iol_stream_start_tls(s, sv->ctx, NULL, NULL, NULL), 0);
    ck_assert(iol_stream_is_tls(s));
    ck_assert_int_eq(iol_stream_read_until(s, "\n", srv_on_line, sv), 0);
}

static void srv_on_line(iol_stream *s, const char *data, size_t len, int status, void *arg)
{
    server *sv = arg;
    if (status < 0)
        return;
    if (sv->mode == MODE_HTTP) {
        static const char resp[] = "HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhello\n";
        ck_assert_int_eq(iol_stream_write(s, resp, sizeof(resp) - 1, srv_close_after_write, s), 0);
        return;
    }
    if (sv->mode == MODE_ZEROCOPY) {
        /* Caller-owned memory and a file region, then a copy: all of it
         * must go through TLS, in order. */
        static const char ref[] = "ref:";
        ck_assert_int_eq(iol_stream_write_ref(s, ref, 4, NULL, NULL), 0);
        ck_assert_int_eq(iol_stream_sendfile(s, sv->file_fd, 0, 5, NULL, NULL), 0);
        ck_assert_int_eq(iol_stream_write(s, data, len, srv_close_after_write, s), 0);
        return;
    }
    if (sv->mode == MODE_ONE_LINE) {
        ck_assert_int_eq(iol_stream_write(s, data, len, srv_close_after_write, s), 0);
        return;
    }
    if (sv->count_eagain && ++sv->lines == 2) {
        /* The first line may have come with the handshake's last flight,
         * read by the handshake; from here on each arrives on its own. */
        eagain_fd = iol_stream_fd(s);
        eagain_count = 0;
    }
    ck_assert_int_eq(iol_stream_write(s, data, len, NULL, NULL), 0);
    ck_assert_int_eq(iol_stream_read_until(s, "\n", srv_on_line, sv), 0);
}

static void srv_on_accept(int lfd, unsigned events, void *arg)
{
    server *sv = arg;
    (void)events;
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0)
        return;
    iol_stream *s;
    sv->accepted++;
    if (sv->mode == MODE_STARTTLS) {
        ck_assert_int_eq(iol_stream_new(&s, sv->loop, fd, 0), 0);
        ck_assert_int_eq(iol_stream_set_close_callback(s, srv_on_close, sv), 0);
        ck_assert_int_eq(iol_stream_read_until(s, "\n", srv_on_starttls, sv), 0);
        return;
    }
    ck_assert_int_eq(iol_tls_stream_new(&s, sv->loop, fd, sv->ctx, 0), 0);
    ck_assert(iol_stream_is_tls(s));
    ck_assert_int_eq(iol_stream_set_close_callback(s, srv_on_close, sv), 0);
    ck_assert_int_eq(iol_stream_read_until(s, sv->mode == MODE_HTTP ? "\r\n\r\n" : "\n", srv_on_line, sv), 0);
}

static iol_tls_ctx *server_ctx(double handshake_timeout)
{
    const char *extra_cert[] = {path("b.pem")};
    const char *extra_key[] = {path("b.key")};
    iol_tls_config cfg = {
        .server = true,
        .cert_file = path("a.pem"),
        .key_file = path("a.key"),
        .extra_cert_files = extra_cert,
        .extra_key_files = extra_key,
        .n_extra = 1,
        .alpn = "h2,http/1.1",
        .handshake_timeout = handshake_timeout,
    };
    iol_tls_ctx *ctx = NULL;
    ck_assert_int_eq(iol_tls_ctx_new(&ctx, &cfg), 0);
    return ctx;
}

static iol_tls_ctx *client_ctx(const char *ca, const char *alpn)
{
    iol_tls_config cfg = {.ca_file = path(ca), .alpn = alpn};
    iol_tls_ctx *ctx = NULL;
    ck_assert_int_eq(iol_tls_ctx_new(&ctx, &cfg), 0);
    return ctx;
}

static void server_start(server *sv, iol_loop *loop, int mode, double handshake_timeout)
{
    memset(sv, 0, sizeof(*sv));
    sv->loop = loop;
    sv->mode = mode;
    sv->ctx = server_ctx(handshake_timeout);
    sv->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(sv->lfd, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(bind(sv->lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    ck_assert_int_eq(listen(sv->lfd, 64), 0);
    socklen_t len = sizeof(sin);
    ck_assert_int_eq(getsockname(sv->lfd, (struct sockaddr *)&sin, &len), 0);
    sv->port = ntohs(sin.sin_port);
    ck_assert_int_eq(iol_loop_add_handler(loop, sv->lfd, IOL_READ, srv_on_accept, sv), 0);
}

static void server_stop(server *sv)
{
    iol_loop_remove_handler(sv->loop, sv->lfd);
    close(sv->lfd);
    iol_tls_ctx_unref(sv->ctx);
}

/* ------------------------------------------------------------------ Client */

typedef struct client {
    iol_loop *loop;
    const char *line;
    size_t line_len; /* 0: strlen(line) */
    int status;     /* of the handshake */
    int calls;
    char reply[128];
    size_t reply_len;
    int read_status;
    bool close_first; /* close after the reply (sends close_notify) */
    bool stop;        /* stop the loop when done */
    char alpn[32];
    bool resumed;
} client;

static void cl_on_reply(iol_stream *s, const char *data, size_t len, int status, void *arg)
{
    client *c = arg;
    c->read_status = status;
    c->reply_len = len;
    if (len >= sizeof(c->reply))
        len = sizeof(c->reply) - 1;
    memcpy(c->reply, data, len);
    c->reply[len] = '\0';
    if (c->close_first && !iol_stream_closed(s))
        iol_stream_close(s);
    if (c->stop)
        iol_loop_stop(c->loop);
}

static void cl_on_handshake(iol_stream *s, int status, void *arg)
{
    client *c = arg;
    c->calls++;
    c->status = status;
    if (status < 0) {
        if (c->stop)
            iol_loop_stop(c->loop);
        return;
    }
    ck_assert_int_ge(iol_stream_tls_alpn(s, c->alpn, sizeof(c->alpn)), 0);
    c->resumed = iol_stream_tls_resumed(s);
    ck_assert_int_eq(iol_stream_write(s, c->line, c->line_len ? c->line_len : strlen(c->line), NULL, NULL), 0);
    if (c->close_first)
        ck_assert_int_eq(iol_stream_read_until(s, "\n", cl_on_reply, c), 0);
    else
        ck_assert_int_eq(iol_stream_read_until_close(s, cl_on_reply, c), 0);
}

static void on_safety_timeout(void *arg)
{
    ck_abort_msg("loop did not stop in time");
    iol_loop_stop(arg);
}

static void run_loop(iol_loop *loop)
{
    iol_timeout t = 0;
    double limit = iol_test_under_valgrind() ? 100 : 20;
    ck_assert_int_eq(iol_loop_call_later(loop, limit, on_safety_timeout, loop, &t), 0);
    ck_assert_int_eq(iol_loop_start(loop), 0);
    iol_loop_remove_timeout(loop, t);
}

static iol_loop *new_loop(void)
{
    iol_loop *loop = NULL;
    ck_assert_int_eq(iol_loop_new(&loop, NULL), 0);
    iol_test_log_capture();
    return loop;
}

/* One TLS client run to its end against sv; returns its handshake status. */
static int dial(server *sv, iol_tls_ctx *cctx, const char *name, client *c)
{
    c->loop = sv->loop;
    c->stop = true;
    if (!c->line)
        c->line = "hello\n";
    iol_stream *s;
    ck_assert_int_eq(iol_tls_connect(&s, sv->loop, "127.0.0.1", sv->port, NULL, cctx, name, cl_on_handshake, c), 0);
    run_loop(sv->loop);
    ck_assert_int_eq(c->calls, 1);
    return c->status;
}

/* Until the server closed n streams (the log line comes with the close). */
static void wait_server_closes(server *sv, int n)
{
    if (sv->closed >= n)
        return;
    sv->stop_after = n;
    run_loop(sv->loop);
    sv->stop_after = 0;
    ck_assert_int_ge(sv->closed, n);
}

static void finish(iol_loop *loop, server *sv)
{
    server_stop(sv);
    ck_assert_int_ge(iol_loop_close(loop, true), 0); /* drops our reference */
    iol_set_log_handler(NULL, NULL);
}

/* A plain TCP socket connected to the server. */
static int raw_connect(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    return fd;
}

/* ------------------------------------------------------------------- Tests */

START_TEST(handshake_echo_alpn)
{
    iol_loop *loop = new_loop();
    server sv;
    server_start(&sv, loop, MODE_ONE_LINE, 0);
    iol_tls_ctx *cctx = client_ctx("ca.pem", "http/1.1");
    client c = {.line = "hello over tls\n"};
    ck_assert_int_eq(dial(&sv, cctx, "a.test", &c), 0);
    ck_assert_int_eq(c.read_status, 0); /* read_until_close ended by close_notify */
    ck_assert_str_eq(c.reply, "hello over tls\n");
    ck_assert_str_eq(c.alpn, "http/1.1");
    ck_assert(!c.resumed);
    wait_server_closes(&sv, 1);
    ck_assert_int_eq(sv.last_error, 0);

    /* Same client context again: the session is resumed (a ticket). */
    client c2 = {0};
    ck_assert_int_eq(dial(&sv, cctx, "a.test", &c2), 0);
    ck_assert_str_eq(c2.reply, "hello\n");
    ck_assert(c2.resumed);
    iol_tls_ctx_unref(cctx);

    /* No ALPN overlap: the handshake goes on without it. */
    cctx = client_ctx("ca.pem", "spdy/1");
    client c3 = {0};
    ck_assert_int_eq(dial(&sv, cctx, "a.test", &c3), 0);
    ck_assert_str_eq(c3.alpn, "");
    iol_tls_ctx_unref(cctx);
    wait_server_closes(&sv, 3);
    ck_assert_int_eq(iol_test_log_count("tls:"), 0);
    finish(loop, &sv);
}
END_TEST

/* write_ref and sendfile on a TLS stream are encrypted like any write
 * (before the fix they went to the socket as plaintext, and the client
 * failed with -EPROTO). */
START_TEST(zero_copy_writes_go_through_tls)
{
    iol_loop *loop = new_loop();
    server sv;
    server_start(&sv, loop, MODE_ZEROCOPY, 0);
    const char *file = path("zc.txt");
    sv.file_fd = open(file, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    ck_assert_int_ge(sv.file_fd, 0);
    ck_assert_int_eq(write(sv.file_fd, "file\n", 5), 5);
    iol_tls_ctx *cctx = client_ctx("ca.pem", NULL);
    client c = {.line = "hello\n"};
    ck_assert_int_eq(dial(&sv, cctx, "a.test", &c), 0);
    ck_assert_int_eq(c.read_status, 0);
    ck_assert_str_eq(c.reply, "ref:file\nhello\n");
    iol_tls_ctx_unref(cctx);
    wait_server_closes(&sv, 1);
    ck_assert_int_eq(sv.last_error, 0);
    close(sv.file_fd);
    unlink(file);
    finish(loop, &sv);
}
END_TEST

START_TEST(sni_picks_the_certificate)
{
    iol_loop *loop = new_loop();
    server sv;
    server_start(&sv, loop, MODE_ONE_LINE, 0);
    iol_tls_ctx *cctx = client_ctx("ca.pem", NULL);
    /* b.test is only on the extra certificate: verification passes only
     * if SNI chose it; a.test only on the default one. */
    client c = {0};
    ck_assert_int_eq(dial(&sv, cctx, "b.test", &c), 0);
    ck_assert_str_eq(c.reply, "hello\n");
    client c2 = {0};
    ck_assert_int_eq(dial(&sv, cctx, "a.test", &c2), 0);
    ck_assert_str_eq(c2.reply, "hello\n");
    /* A name neither has gets the default, which the client rejects. */
    client c3 = {0};
    ck_assert_int_eq(dial(&sv, cctx, "c.test", &c3), IOL_ETLS_HOSTNAME);
    iol_tls_ctx_unref(cctx);
    wait_server_closes(&sv, 3);
    finish(loop, &sv);
}
END_TEST

START_TEST(wrong_ca_is_rejected)
{
    iol_loop *loop = new_loop();
    server sv;
    server_start(&sv, loop, MODE_ECHO, 0);
    iol_tls_ctx *cctx = client_ctx("other-ca.pem", NULL);
    client c = {0};
    ck_assert_int_eq(dial(&sv, cctx, "a.test", &c), IOL_ETLS_UNTRUSTED);
    wait_server_closes(&sv, 1);
    ck_assert_int_eq(sv.last_error, IOL_ETLS_PEER_REJECTED); /* the client's alert (unknown_ca) */
    ck_assert(iol_test_log_has("certificate verify failed"));
    ck_assert(iol_test_log_has("unknown ca"));
    ck_assert_int_eq(iol_test_log_count("tls:"), 2); /* one per side */
    iol_tls_ctx_unref(cctx);
    finish(loop, &sv);
}
END_TEST

START_TEST(wrong_host_name_is_rejected)
{
    iol_loop *loop = new_loop();
    server sv;
    server_start(&sv, loop, MODE_ECHO, 0);
    iol_tls_ctx *cctx = client_ctx("ca.pem", NULL);
    client c = {0};
    ck_assert_int_eq(dial(&sv, cctx, "wrong.test", &c), IOL_ETLS_HOSTNAME);
    ck_assert(iol_test_log_has("hostname mismatch"));
    wait_server_closes(&sv, 1);
    iol_tls_ctx_unref(cctx);
    finish(loop, &sv);
}
END_TEST

/* A raw client sends bytes and closes; the server's stream must close
 * with want_err and its reason logged, and a TLS client still works. */
static void raw_bytes_then_tls(const char *bytes, size_t len, int want_err, const char *reason)
{
    iol_loop *loop = new_loop();
    server sv;
    server_start(&sv, loop, MODE_ONE_LINE, 0);
    int fd = raw_connect(sv.port);
    ck_assert_int_eq(write(fd, bytes, len), (ssize_t)len);
    wait_server_closes(&sv, 1);
    close(fd);
    ck_assert_int_eq(sv.last_error, want_err);
    ck_assert_msg(iol_test_log_has(reason), "log: %s", iol_test_log_text());
    ck_assert_int_eq(iol_test_log_count("tls:"), 1);
    iol_tls_ctx *cctx = client_ctx("ca.pem", NULL);
    client c = {0};
    ck_assert_int_eq(dial(&sv, cctx, "a.test", &c), 0);
    ck_assert_str_eq(c.reply, "hello\n");
    iol_tls_ctx_unref(cctx);
    wait_server_closes(&sv, 2);
    finish(loop, &sv);
}

START_TEST(garbage_client_hello)
{
    char junk[300];
    for (size_t i = 0; i < sizeof(junk); i++)
        junk[i] = (char)(i * 37 + 11);
    junk[0] = 0x16; /* looks like a handshake record, then is not */
    raw_bytes_then_tls(junk, sizeof(junk), -EPROTO, "SSL routines");
}
END_TEST

START_TEST(plain_http_to_tls_port)
{
    static const char req[] = "GET / HTTP/1.1\r\nHost: a.test\r\n\r\n";
    raw_bytes_then_tls(req, sizeof(req) - 1, -EPROTO, "http request");
}
END_TEST

/* Read-ahead: one recv takes every record the kernel holds. Two echoed
 * records reach the client before it reads at all; its first read takes
 * the first, and the second, which OpenSSL pulled in with it, must still
 * answer a read made later, when the socket has nothing more to say. */
typedef struct late_reader {
    iol_loop *loop;
    iol_stream *s;
    char got[8];
    size_t len;
    int reads;
} late_reader;

static void late_on_read(iol_stream *s, const char *data, size_t len, int status, void *arg);

static void late_read(void *arg)
{
    late_reader *r = arg;
    ck_assert_int_eq(iol_stream_read_bytes(r->s, 2, false, late_on_read, r), 0);
}

static void late_on_read(iol_stream *s, const char *data, size_t len, int status, void *arg)
{
    late_reader *r = arg;
    (void)s;
    ck_assert_int_eq(status, 0);
    ck_assert_uint_eq(len, 2);
    memcpy(r->got + r->len, data, len);
    r->len += len;
    if (++r->reads == 2) {
        iol_loop_stop(r->loop);
        return;
    }
    /* Not from inside the callback: the stream's read loop ends first. */
    ck_assert_int_eq(iol_loop_call_later(r->loop, 0.02, late_read, r, NULL), 0);
}

static void late_on_handshake(iol_stream *s, int status, void *arg)
{
    late_reader *r = arg;
    ck_assert_int_eq(status, 0);
    ck_assert_int_eq(iol_stream_write(s, "a\nb\n", 4, NULL, NULL), 0); /* echoed as two records */
    ck_assert_int_eq(iol_loop_call_later(r->loop, 0.2, late_read, r, NULL), 0);
}

static void late_too_late(void *arg)
{
    (void)arg;
    ck_abort_msg("the second record never reached the read (stuck in OpenSSL's read-ahead)");
}

START_TEST(records_read_ahead_reach_later_reads)
{
    iol_loop *loop = new_loop();
    server sv;
    server_start(&sv, loop, MODE_ECHO, 0);
    iol_tls_ctx *cctx = client_ctx("ca.pem", NULL);
    late_reader r = {.loop = loop};
    ck_assert_int_eq(iol_tls_connect(&r.s, loop, "127.0.0.1", sv.port, NULL, cctx, "a.test", late_on_handshake, &r), 0);
    iol_timeout t;
    ck_assert_int_eq(iol_loop_call_later(loop, iol_test_under_valgrind() ? 30 : 3, late_too_late, NULL, &t), 0);
    run_loop(loop);
    iol_loop_remove_timeout(loop, t);
    ck_assert_int_eq(r.reads, 2);
    ck_assert(memcmp(r.got, "a\nb\n", 4) == 0);
    iol_stream_close(r.s);
    iol_tls_ctx_unref(cctx);
    finish(loop, &sv);
}
END_TEST

/* After the handshake the client's socket gets half a record and a FIN
 * behind the TLS stream's back: the server sees a truncated record. */
static void trunc_on_handshake(iol_stream *s, int status, void *arg)
{
    client *c = arg;
    c->status = status;
    c->calls++;
    ck_assert_int_eq(status, 0);
    static const char half[] = "\x17\x03\x03\x00\x40" "0123456789";
    int fd = iol_stream_fd(s);
    ck_assert_int_eq(send(fd, half, sizeof(half) - 1, MSG_NOSIGNAL), (ssize_t)sizeof(half) - 1);
    ck_assert_int_eq(shutdown(fd, SHUT_WR), 0);
    iol_loop_stop(c->loop);
}

START_TEST(truncated_record)
{
    iol_loop *loop = new_loop();
    server sv;
    server_start(&sv, loop, MODE_ECHO, 0);
    iol_tls_ctx *cctx = client_ctx("ca.pem", NULL);
    client c = {.loop = loop};
    iol_stream *s;
    ck_assert_int_eq(iol_tls_connect(&s, loop, "127.0.0.1", sv.port, NULL, cctx, "a.test", trunc_on_handshake, &c), 0);
    run_loop(loop);
    ck_assert_int_eq(c.calls, 1);
    wait_server_closes(&sv, 1);
    ck_assert_int_eq(sv.last_error, -ECONNRESET);
    ck_assert_msg(iol_test_log_has("unexpected eof"), "log: %s", iol_test_log_text());
    iol_stream_close(s);
    iol_tls_ctx_unref(cctx);
    finish(loop, &sv);
}
END_TEST

START_TEST(handshake_deadline)
{
    iol_loop *loop = new_loop();
    server sv;
    server_start(&sv, loop, MODE_ECHO, 0.3);
    int fd = raw_connect(sv.port); /* connects and says nothing */
    double t0 = iol_test_now();
    wait_server_closes(&sv, 1);
    double took = iol_test_now() - t0;
    ck_assert_int_eq(sv.last_error, -ETIMEDOUT);
    ck_assert(took >= 0.25 && took < 15);
    ck_assert(iol_test_log_has("timed out"));
    /* The server closed its end: the silent client reads EOF. */
    char b;
    ck_assert_int_eq(read(fd, &b, 1), 0);
    close(fd);
    finish(loop, &sv);
}
END_TEST

START_TEST(close_notify_both_ways)
{
    iol_loop *loop = new_loop();
    server sv;
    server_start(&sv, loop, MODE_ECHO, 0);
    iol_tls_ctx *cctx = client_ctx("ca.pem", NULL);
    /* The client closes first: the server reads close_notify (a clean
     * end, error 0, no log), and answers with its own. */
    client c = {.close_first = true};
    ck_assert_int_eq(dial(&sv, cctx, "a.test", &c), 0);
    ck_assert_str_eq(c.reply, "hello\n");
    wait_server_closes(&sv, 1);
    ck_assert_int_eq(sv.last_error, 0);
    ck_assert_int_eq(iol_test_log_count("tls:"), 0);
    iol_tls_ctx_unref(cctx);
    finish(loop, &sv);
    /* The server closing first is handshake_echo_alpn: the client's
     * read_until_close ends with status 0 only on a close_notify. */
}
END_TEST

static void plain_on_ok(iol_stream *s, const char *data, size_t len, int status, void *arg)
{
    client *c = arg;
    ck_assert_int_eq(status, 0);
    ck_assert_int_eq(len, 3);
    ck_assert(memcmp(data, "OK\n", 3) == 0);
    iol_tls_ctx *cctx = client_ctx("ca.pem", NULL);
    ck_assert_int_eq(iol_stream_start_tls(s, cctx, "a.test", cl_on_handshake, c), 0);
    ck_assert_int_eq(iol_stream_start_tls(s, cctx, "a.test", cl_on_handshake, c), -EALREADY);
    iol_tls_ctx_unref(cctx); /* the stream holds its own reference */
}

static void plain_on_connect(iol_stream *s, int status, void *arg)
{
    ck_assert_int_eq(status, 0);
    ck_assert_int_eq(iol_stream_write(s, "STARTTLS\n", 9, NULL, NULL), 0);
    ck_assert_int_eq(iol_stream_read_until(s, "\n", plain_on_ok, arg), 0);
}

START_TEST(starttls)
{
    iol_loop *loop = new_loop();
    server sv;
    server_start(&sv, loop, MODE_STARTTLS, 0);
    client c = {.loop = loop, .stop = true, .close_first = true, .line = "after starttls\n"};
    iol_stream *s;
    ck_assert_int_eq(iol_stream_connect(&s, loop, "127.0.0.1", sv.port, 0, plain_on_connect, &c), 0);
    run_loop(loop);
    ck_assert_int_eq(c.calls, 1);
    ck_assert_int_eq(c.status, 0);
    ck_assert_str_eq(c.reply, "after starttls\n");
    wait_server_closes(&sv, 1);
    ck_assert_int_eq(sv.last_error, 0);
    finish(loop, &sv);
}
END_TEST

/* A client that sends a line, waits for its echo, and so on. */
typedef struct lines_client {
    iol_loop *loop;
    int replies;
} lines_client;

static void lc_on_reply(iol_stream *s, const char *data, size_t len, int status, void *arg)
{
    lines_client *c = arg;
    ck_assert_int_eq(status, 0);
    ck_assert_uint_eq(len, 5);
    ck_assert(memcmp(data, "line\n", 5) == 0);
    if (++c->replies == 4) {
        iol_stream_close(s);
        iol_loop_stop(c->loop);
        return;
    }
    ck_assert_int_eq(iol_stream_write(s, "line\n", 5, NULL, NULL), 0);
    ck_assert_int_eq(iol_stream_read_until(s, "\n", lc_on_reply, c), 0);
}

static void lc_on_handshake(iol_stream *s, int status, void *arg)
{
    ck_assert_int_eq(status, 0);
    ck_assert_int_eq(iol_stream_write(s, "line\n", 5, NULL, NULL), 0);
    ck_assert_int_eq(iol_stream_read_until(s, "\n", lc_on_reply, arg), 0);
}

/* A record read whole with room to spare emptied the socket: the server's
 * next read waits for the poller instead of asking the kernel at once
 * (each echoed line cost an SSL_read that ended in a recv saying EAGAIN). */
START_TEST(short_read_waits_for_poller)
{
    iol_loop *loop = NULL;
    ck_assert_int_eq(iol_loop_new(&loop, &(iol_loop_config){.poller = "epoll"}), 0);
    iol_test_log_capture();
    server sv;
    server_start(&sv, loop, MODE_ECHO, 0);
    sv.count_eagain = true;
    iol_tls_ctx *cctx = client_ctx("ca.pem", NULL);
    lines_client c = {.loop = loop};
    iol_stream *s;
    ck_assert_int_eq(iol_tls_connect(&s, loop, "127.0.0.1", sv.port, NULL, cctx, "a.test", lc_on_handshake, &c), 0);
    run_loop(loop);
    int eagains = eagain_count;
    eagain_fd = -1;
    ck_assert_int_eq(c.replies, 4);
    ck_assert_int_eq(sv.lines, 4);
    ck_assert_int_eq(eagains, 0);
    wait_server_closes(&sv, 1);
    iol_tls_ctx_unref(cctx);
    finish(loop, &sv);
}
END_TEST

START_TEST(bad_arguments)
{
    iol_tls_ctx *ctx = NULL;
    iol_tls_config cfg = {.server = true};
    ck_assert_int_eq(iol_tls_ctx_new(NULL, &cfg), -EINVAL);
    ck_assert_int_eq(iol_tls_ctx_new(&ctx, NULL), -EINVAL);
    ck_assert_int_eq(iol_tls_ctx_new(&ctx, &cfg), -EINVAL); /* no certificate */
    cfg.cert_file = path("missing.pem");
    cfg.key_file = path("a.key");
    ck_assert_int_eq(iol_tls_ctx_new(&ctx, &cfg), -ENOENT);
    cfg.cert_file = path("a.pem");
    cfg.key_file = path("b.key"); /* not a's key */
    iol_test_log_capture();
    ck_assert_int_eq(iol_tls_ctx_new(&ctx, &cfg), -EBADMSG);
    cfg.key_file = path("a.pem"); /* not a key at all */
    ck_assert_int_eq(iol_tls_ctx_new(&ctx, &cfg), -EBADMSG);
    iol_set_log_handler(NULL, NULL);
    cfg.key_file = path("a.key");
    cfg.alpn = "h2,,x";
    ck_assert_int_eq(iol_tls_ctx_new(&ctx, &cfg), -EINVAL);
    cfg.alpn = NULL;
    cfg.n_extra = 1;
    ck_assert_int_eq(iol_tls_ctx_new(&ctx, &cfg), -EINVAL);
    ck_assert(ctx == NULL);

    iol_loop *loop = new_loop();
    iol_tls_ctx *sctx = server_ctx(0), *cctx = client_ctx("ca.pem", NULL);
    iol_stream *s;
    ck_assert_int_eq(iol_tls_stream_new(&s, loop, 0, cctx, 0), -EINVAL); /* a client context */
    ck_assert_int_eq(iol_tls_connect(&s, loop, "127.0.0.1", 1, NULL, sctx, NULL, cl_on_handshake, NULL), -EINVAL);
    ck_assert_int_eq(iol_tls_connect(&s, loop, "127.0.0.1", 1, NULL, cctx, NULL, NULL, NULL), -EINVAL);
    ck_assert_int_eq(iol_stream_start_tls(NULL, cctx, "a", NULL, NULL), -EINVAL);
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    ck_assert_int_eq(iol_stream_new(&s, loop, sv[0], 0), 0);
    ck_assert_int_eq(iol_stream_start_tls(s, cctx, NULL, NULL, NULL), -EINVAL); /* verifying, no name */
    char buf[8];
    ck_assert_int_eq(iol_stream_tls_alpn(s, buf, sizeof(buf)), -ENOTCONN);
    ck_assert(!iol_stream_is_tls(s));
    iol_stream_close(s);
    /* A pipe is not a socket. */
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    ck_assert_int_eq(iol_stream_new(&s, loop, p[0], 0), 0);
    ck_assert_int_eq(iol_stream_start_tls(s, sctx, NULL, NULL, NULL), -ENOTSOCK);
    iol_stream_close(s);
    close(p[1]);
    close(sv[1]);
    iol_tls_ctx_unref(sctx);
    iol_tls_ctx_unref(cctx);
    ck_assert_int_ge(iol_loop_close(loop, true), 0); /* drops our reference */
    iol_set_log_handler(NULL, NULL);
}
END_TEST


/* Megabytes each way: SSL_write's partial writes and WANT_WRITE, the
 * read buffer filling record by record. */
START_TEST(big_echo)
{
    iol_loop *loop = new_loop();
    server sv;
    server_start(&sv, loop, MODE_ECHO, 0);
    iol_tls_ctx *cctx = client_ctx("ca.pem", NULL);
    size_t n = iol_test_scaled(8u << 20, 256u << 10);
    char *big = malloc(n);
    ck_assert_ptr_nonnull(big);
    for (size_t i = 0; i < n; i++)
        big[i] = (char)('a' + i % 26);
    big[n - 1] = '\n';
    client c = {.line = big, .line_len = n, .close_first = true};
    ck_assert_int_eq(dial(&sv, cctx, "a.test", &c), 0);
    ck_assert_int_eq(c.read_status, 0);
    ck_assert_uint_eq(c.reply_len, n);
    ck_assert(memcmp(c.reply, big, sizeof(c.reply) - 1) == 0);
    wait_server_closes(&sv, 1);
    ck_assert_int_eq(sv.last_error, 0);
    free(big);
    iol_tls_ctx_unref(cctx);
    finish(loop, &sv);
}
END_TEST

/* One context shared by every worker of a runtime (and by the client
 * loop's streams): concurrent handshakes on several threads. */
static iol_tls_ctx *shared_ctx;

static void rt_on_line(iol_stream *s, const char *data, size_t len, int status, void *arg)
{
    (void)arg;
    if (status == 0)
        iol_stream_write(s, data, len, srv_close_after_write, s);
}

static void rt_on_accept(iol_loop *loop, int fd, const struct sockaddr *peer, socklen_t peerlen, void *arg)
{
    (void)peer;
    (void)peerlen;
    (void)arg;
    iol_stream *s;
    if (iol_tls_stream_new(&s, loop, fd, shared_ctx, 0) < 0) {
        close(fd);
        return;
    }
    iol_stream_read_until(s, "\n", rt_on_line, NULL);
}

typedef struct fleet {
    iol_loop *loop;
    int left;
    int ok;
    int resumed;
} fleet;

static void fleet_on_reply(iol_stream *s, const char *data, size_t len, int status, void *arg)
{
    fleet *f = arg;
    (void)s;
    if (status == 0 && len == 6 && memcmp(data, "hello\n", 6) == 0)
        f->ok++;
    if (--f->left == 0)
        iol_loop_stop(f->loop);
}

static void fleet_on_handshake(iol_stream *s, int status, void *arg)
{
    fleet *f = arg;
    if (status < 0) {
        if (--f->left == 0)
            iol_loop_stop(f->loop);
        return;
    }
    f->resumed += iol_stream_tls_resumed(s);
    iol_stream_write(s, "hello\n", 6, NULL, NULL);
    iol_stream_read_until_close(s, fleet_on_reply, f);
}

START_TEST(shared_by_workers)
{
    shared_ctx = server_ctx(0);
    iol_runtime *rt;
    iol_runtime_config rcfg = {.workers = 3, .drain_timeout = -1};
    ck_assert_int_eq(iol_runtime_new(&rt, &rcfg), 0);
    iol_listen_config lcfg = {.host = "127.0.0.1", .shard = IOL_SHARD_HANDOFF, .on_accept = rt_on_accept};
    int id = iol_runtime_listen(rt, &lcfg);
    ck_assert_int_ge(id, 0);
    ck_assert_int_eq(iol_runtime_start(rt), 0);
    int port = iol_runtime_listener_port(rt, id);
    ck_assert_int_gt(port, 0);

    iol_loop *loop = new_loop();
    iol_tls_ctx *cctx = client_ctx("ca.pem", NULL);
    for (int round = 0; round < 2; round++) {
        int n = (int)iol_test_scaled(24, 6);
        fleet f = {.loop = loop, .left = n};
        for (int i = 0; i < n; i++) {
            iol_stream *s;
            ck_assert_int_eq(iol_tls_connect(&s, loop, "127.0.0.1", (uint16_t)port, NULL, cctx, "a.test",
                                             fleet_on_handshake, &f), 0);
        }
        run_loop(loop);
        ck_assert_int_eq(f.ok, n);
        if (round == 1)
            ck_assert_int_gt(f.resumed, 0); /* tickets from any worker resume on any other */
    }
    iol_tls_ctx_unref(cctx);
    ck_assert_int_ge(iol_loop_close(loop, true), 0);
    iol_runtime_free(rt);
    iol_tls_ctx_unref(shared_ctx);
    iol_set_log_handler(NULL, NULL);
}
END_TEST


/* The loop closes while a client waits for the ServerHello (the listener
 * never accepts): the handshake callback hears -ESHUTDOWN inside
 * iol_loop_close, the timer and the SSL go with the stream (leak checks). */
static void stop_soon(void *arg)
{
    iol_loop_stop(arg);
}

START_TEST(loop_closes_mid_handshake)
{
    iol_loop *loop = new_loop();
    server sv;
    server_start(&sv, loop, MODE_ECHO, 0);
    iol_loop_remove_handler(loop, sv.lfd); /* connects complete in the backlog, nobody answers */
    iol_tls_ctx *cctx = client_ctx("ca.pem", NULL);
    client c = {.loop = loop};
    iol_stream *s;
    ck_assert_int_eq(iol_tls_connect(&s, loop, "127.0.0.1", sv.port, NULL, cctx, "a.test", cl_on_handshake, &c), 0);
    iol_tls_ctx_unref(cctx); /* the stream keeps the context alive */
    ck_assert_int_eq(iol_loop_call_later(loop, 0.2, stop_soon, loop, NULL), 0);
    run_loop(loop);
    ck_assert_int_eq(c.calls, 0);
    close(sv.lfd);
    iol_tls_ctx_unref(sv.ctx);
    ck_assert_int_ge(iol_loop_close(loop, true), 0);
    ck_assert_int_eq(c.calls, 1);
    ck_assert_int_eq(c.status, -ESHUTDOWN);
    iol_set_log_handler(NULL, NULL);
}
END_TEST

/* ------------------------------------------------- openssl s_client, curl */

static void *serve_thread(void *arg)
{
    server *sv = arg;
    ck_assert_int_eq(iol_loop_make_current(sv->loop), 0);
    iol_loop_start(sv->loop);
    return NULL;
}

static bool have_tool(const char *name)
{
    if (iol_test_have_program(name))
        return true;
    printf("tls: %s not found, skipping its test\n", name);
    return false;
}

/* Runs cmd with the server on its own thread; returns its output. */
static char *run_against(server *sv, const char *fmt)
{
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, serve_thread, sv), 0);
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), fmt, iol_test_certs_dir(), sv->port, iol_test_certs_dir(), sv->port);
    FILE *f = popen(cmd, "r");
    ck_assert_ptr_nonnull(f);
    static char out[16384];
    size_t n = fread(out, 1, sizeof(out) - 1, f);
    out[n] = '\0';
    pclose(f);
    iol_loop_stop(sv->loop);
    pthread_join(th, NULL);
    return out;
}

START_TEST(openssl_s_client)
{
    if (!have_tool("openssl"))
        return;
    iol_loop *loop = new_loop();
    server sv;
    server_start(&sv, loop, MODE_ONE_LINE, 0);
    char *out = run_against(&sv,
                            "echo ping-from-s_client | timeout 20 openssl s_client -connect 127.0.0.1:%2$d "
                            "-servername b.test -verify_hostname b.test -CAfile %1$s/ca.pem -verify_return_error "
                            "-alpn http/1.1 -ign_eof 2>&1");
    ck_assert_msg(strstr(out, "ping-from-s_client"), "%s", out);
    ck_assert_msg(strstr(out, "Verify return code: 0 (ok)"), "%s", out);
    ck_assert_msg(strstr(out, "ALPN protocol: http/1.1"), "%s", out);
    ck_assert_msg(strstr(out, "subject=CN = b.test"), "%s", out);
    ck_assert_int_eq(sv.last_error, 0);
    finish(loop, &sv);
}
END_TEST

START_TEST(curl_https)
{
    if (!have_tool("curl"))
        return;
    iol_loop *loop = new_loop();
    server sv;
    server_start(&sv, loop, MODE_HTTP, 0);
    char *out = run_against(&sv,
                            "timeout 20 curl -sS --http1.1 --cacert %1$s/ca.pem --resolve a.test:%2$d:127.0.0.1 "
                            "https://a.test:%2$d/ 2>&1");
    ck_assert_str_eq(out, "hello\n");
    ck_assert_int_eq(sv.accepted, 1);
    finish(loop, &sv);
}
END_TEST

START_TEST(without_tls_says_enotsup)
{
    iol_tls_ctx *ctx = NULL;
    iol_tls_config cfg = {0};
    ck_assert_int_eq(iol_tls_ctx_new(&ctx, &cfg), -ENOTSUP);
    ck_assert_int_eq(iol_stream_start_tls(NULL, NULL, NULL, NULL, NULL), -ENOTSUP);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tls");
    if (!iol_test_build_has_tls()) {
        TCase *tc = iol_test_tcase("without_tls_says_enotsup", 30);
        tcase_add_test(tc, without_tls_says_enotsup);
        suite_add_tcase(s, tc);
        return iol_test_run(s);
    }
    int setup = iol_test_certs_setup("tls");
    if (setup != 0)
        return setup;
    struct {
        const char *name;
        const TTest *test;
    } cases[] = {
        {"handshake_echo_alpn", handshake_echo_alpn},
        {"zero_copy_writes_go_through_tls", zero_copy_writes_go_through_tls},
        {"sni_picks_the_certificate", sni_picks_the_certificate},
        {"wrong_ca_is_rejected", wrong_ca_is_rejected},
        {"wrong_host_name_is_rejected", wrong_host_name_is_rejected},
        {"garbage_client_hello", garbage_client_hello},
        {"plain_http_to_tls_port", plain_http_to_tls_port},
        {"truncated_record", truncated_record},
        {"records_read_ahead_reach_later_reads", records_read_ahead_reach_later_reads},
        {"handshake_deadline", handshake_deadline},
        {"close_notify_both_ways", close_notify_both_ways},
        {"starttls", starttls},
        {"bad_arguments", bad_arguments},
        {"short_read_waits_for_poller", short_read_waits_for_poller},
        {"big_echo", big_echo},
        {"shared_by_workers", shared_by_workers},
        {"loop_closes_mid_handshake", loop_closes_mid_handshake},
        {"openssl_s_client", openssl_s_client},
        {"curl_https", curl_https},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        TCase *tc = iol_test_tcase(cases[i].name, 60);
        tcase_add_test(tc, cases[i].test);
        suite_add_tcase(s, tc);
    }
    int rc = iol_test_run(s);
    iol_test_certs_remove();
    return rc;
}
