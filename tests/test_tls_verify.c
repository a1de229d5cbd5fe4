/* TLS certificate checks and what a handshake settled: each verification
 * failure with its own status (expired, not yet valid, self-signed,
 * untrusted, wrong host name), the result and the peer's certificate
 * readable per stream, version and cipher, mutual TLS (required,
 * requested, missing, untrusted client certificates), certificates and
 * keys from PEM in memory, protocol versions and cipher settings, the
 * log level of each failure, and the thread rule of the new calls.
 * Certificates come from the testutil fixture (iol_test_certs_make). */
#include "ioloop.h"
#include "testutil.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define P(name) iol_test_cert_path(name)

/* ------------------------------------------------------------ What we saw */

/* What one side of a connection learnt of the handshake. */
typedef struct side {
    int status;        /* client: the handshake callback's; server: iol_stream_error at close */
    int verify;        /* iol_stream_tls_verify_result */
    char verify_text[128];
    int subject_r;     /* iol_stream_tls_peer_subject's return */
    char subject[128];
    char sans[256];
    char pem[4096];
    int version;
    char cipher[64];
    int read_status;   /* client: read_until_close's; server: its line's */
    char got[64];
    bool done;
} side;

static void record(iol_stream *s, side *d)
{
    d->verify = iol_stream_tls_verify_result(s, d->verify_text, sizeof(d->verify_text));
    d->subject_r = iol_stream_tls_peer_subject(s, d->subject, sizeof(d->subject));
    (void)iol_stream_tls_peer_sans(s, d->sans, sizeof(d->sans));
    (void)iol_stream_tls_peer_cert_pem(s, d->pem, sizeof(d->pem));
    d->version = iol_stream_tls_version(s);
    (void)iol_stream_tls_cipher(s, d->cipher, sizeof(d->cipher));
}

/* ------------------------------------------------------------------ Server */

typedef struct pair {
    iol_loop *loop;
    iol_tls_ctx *sctx;
    int lfd;
    uint16_t port;
    side server, client;
    iol_stream *client_stream;
} pair;

static void maybe_stop(pair *p)
{
    if (p->server.done && p->client.done)
        iol_loop_stop(p->loop);
}

static void srv_on_close(iol_stream *s, void *arg)
{
    pair *p = arg;
    p->server.status = iol_stream_error(s);
    if (!p->server.got[0])
        record(s, &p->server); /* failed: what the check said */
    p->server.done = true;
    maybe_stop(p);
}

static void srv_close(void *arg)
{
    iol_stream_close(arg);
}

static void srv_on_line(iol_stream *s, const char *data, size_t len, int status, void *arg)
{
    pair *p = arg;
    p->server.read_status = status;
    if (status < 0)
        return;
    snprintf(p->server.got, sizeof(p->server.got), "%.*s", (int)len, data);
    record(s, &p->server);
    ck_assert_int_eq(iol_stream_write(s, data, len, srv_close, s), 0);
}

static void srv_on_accept(int lfd, unsigned events, void *arg)
{
    (void)events;
    pair *p = arg;
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0)
        return;
    iol_stream *s;
    ck_assert_int_eq(iol_tls_stream_new(&s, p->loop, fd, p->sctx, 0), 0);
    ck_assert_int_eq(iol_stream_set_close_callback(s, srv_on_close, p), 0);
    ck_assert_int_eq(iol_stream_read_until(s, "\n", srv_on_line, p), 0);
}

/* ------------------------------------------------------------------ Client */

static void cl_on_read(iol_stream *s, const char *data, size_t len, int status, void *arg)
{
    pair *p = arg;
    p->client.read_status = status;
    snprintf(p->client.got, sizeof(p->client.got), "%.*s", (int)len, data);
    if (status < 0 && !p->client.verify)
        p->client.verify = iol_stream_tls_verify_result(s, p->client.verify_text, sizeof(p->client.verify_text));
    p->client.done = true;
    maybe_stop(p);
}

static void cl_on_handshake(iol_stream *s, int status, void *arg)
{
    pair *p = arg;
    p->client.status = status;
    record(s, &p->client);
    if (status < 0) {
        p->client.done = true;
        maybe_stop(p);
        return;
    }
    ck_assert_int_eq(iol_stream_write(s, "hello\n", 6, NULL, NULL), 0);
    ck_assert_int_eq(iol_stream_read_until_close(s, cl_on_read, p), 0);
}

static void on_safety_timeout(void *arg)
{
    ck_abort_msg("loop did not stop in time");
    iol_loop_stop(arg);
}

static void run_loop(iol_loop *loop)
{
    iol_timeout t = 0;
    ck_assert_int_eq(iol_loop_call_later(loop, iol_test_under_valgrind() ? 100 : 20, on_safety_timeout, loop, &t), 0);
    ck_assert_int_eq(iol_loop_start(loop), 0);
    iol_loop_remove_timeout(loop, t);
}

static iol_tls_ctx *new_ctx(const iol_tls_config *cfg)
{
    iol_tls_ctx *ctx = NULL;
    ck_assert_int_eq(iol_tls_ctx_new(&ctx, cfg), 0);
    return ctx;
}

/* A server with scfg on a fresh loop. */
static void pair_open(pair *p, const iol_tls_config *scfg)
{
    memset(p, 0, sizeof(*p));
    ck_assert_int_eq(iol_loop_new(&p->loop, NULL), 0);
    iol_test_log_capture();
    p->sctx = new_ctx(scfg);
    p->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(bind(p->lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    ck_assert_int_eq(listen(p->lfd, 8), 0);
    socklen_t len = sizeof(sin);
    ck_assert_int_eq(getsockname(p->lfd, (struct sockaddr *)&sin, &len), 0);
    p->port = ntohs(sin.sin_port);
    ck_assert_int_eq(iol_loop_add_handler(p->loop, p->lfd, IOL_READ, srv_on_accept, p), 0);
}

/* One client with ccfg, verifying name, run until both sides are done. */
static void pair_dial(pair *p, const iol_tls_config *ccfg, const char *name)
{
    memset(&p->server, 0, sizeof(p->server));
    memset(&p->client, 0, sizeof(p->client));
    iol_tls_ctx *cctx = new_ctx(ccfg);
    ck_assert_int_eq(iol_tls_connect(&p->client_stream, p->loop, "127.0.0.1", p->port, NULL, cctx, name,
                                     cl_on_handshake, p),
                     0);
    /* Nothing settled yet. */
    char buf[16];
    ck_assert_int_eq(iol_stream_tls_verify_result(p->client_stream, buf, sizeof(buf)), -ENOTCONN);
    ck_assert_int_eq(iol_stream_tls_peer_subject(p->client_stream, buf, sizeof(buf)), -ENOTCONN);
    ck_assert_int_eq(iol_stream_tls_version(p->client_stream), -ENOTCONN);
    ck_assert_int_eq(iol_stream_tls_cipher(p->client_stream, buf, sizeof(buf)), -ENOTCONN);
    iol_tls_ctx_unref(cctx);
    run_loop(p->loop);
}

static void pair_close(pair *p)
{
    iol_loop_remove_handler(p->loop, p->lfd);
    close(p->lfd);
    iol_tls_ctx_unref(p->sctx);
    ck_assert_int_ge(iol_loop_close(p->loop, true), 0);
    iol_set_log_handler(NULL, NULL);
}

static const iol_tls_config *server_cfg(const char *cert)
{
    static iol_tls_config cfg;
    static char c[200], k[200];
    snprintf(c, sizeof(c), "%s/%s.pem", P(""), cert);
    snprintf(k, sizeof(k), "%s/%s.key", P(""), cert);
    cfg = (iol_tls_config){.server = true, .cert_file = c, .key_file = k};
    return &cfg;
}

/* ------------------------------------------------------------------- Tests */

START_TEST(verified_handshake_reports_what_it_settled)
{
    pair p;
    pair_open(&p, server_cfg("a"));
    iol_tls_config ccfg = {.ca_file = P("ca.pem")};
    pair_dial(&p, &ccfg, "a.test");
    ck_assert_int_eq(p.client.status, 0);
    ck_assert_int_eq(p.client.read_status, 0);
    ck_assert_str_eq(p.client.got, "hello\n");
    ck_assert_int_eq(p.client.verify, 0);
    ck_assert_str_eq(p.client.verify_text, "ok");
    ck_assert_str_eq(p.client.subject, "CN=a.test");
    ck_assert_str_eq(p.client.sans, "DNS:a.test,DNS:localhost,IP:127.0.0.1");
    ck_assert_msg(strncmp(p.client.pem, "-----BEGIN CERTIFICATE-----\n", 28) == 0, "%s", p.client.pem);
    size_t len;
    char *file = iol_test_cert_read("a.pem", &len);
    ck_assert_str_eq(p.client.pem, file); /* the PEM is the file's */
    free(file);
    ck_assert_int_eq(p.client.version, IOL_TLS_1_3);
    ck_assert_msg(strncmp(p.client.cipher, "TLS_", 4) == 0, "%s", p.client.cipher);
    /* The server asked for no client certificate: nothing to read, a check passed by default. */
    ck_assert_str_eq(p.server.got, "hello\n");
    ck_assert_int_eq(p.server.verify, 0);
    ck_assert_str_eq(p.server.verify_text, "not verified");
    ck_assert_int_eq(p.server.subject_r, -ENOENT);
    ck_assert_int_eq(p.server.version, IOL_TLS_1_3);
    ck_assert_str_eq(p.server.cipher, p.client.cipher);
    ck_assert_int_eq(p.server.status, 0);
    ck_assert_int_eq(iol_test_log_level_of("tls:"), -1);
    /* A client that verifies nothing: 0, and says so, whatever the
     * certificate (this one is for another CA). */
    iol_tls_config insecure = {.ca_file = P("other-ca.pem"), .insecure_no_verify = true};
    pair_dial(&p, &insecure, "a.test");
    ck_assert_int_eq(p.client.status, 0);
    ck_assert_int_eq(p.client.verify, 0);
    ck_assert_str_eq(p.client.verify_text, "not verified");
    ck_assert_str_eq(p.client.subject, "CN=a.test");
    pair_close(&p);
}
END_TEST

START_TEST(bad_arguments)
{
    char buf[8];
    ck_assert_int_eq(iol_stream_tls_verify_result(NULL, buf, sizeof(buf)), -EINVAL);
    ck_assert_int_eq(iol_stream_tls_peer_subject(NULL, buf, sizeof(buf)), -EINVAL);
    ck_assert_int_eq(iol_stream_tls_peer_sans(NULL, buf, sizeof(buf)), -EINVAL);
    ck_assert_int_eq(iol_stream_tls_peer_cert_pem(NULL, buf, sizeof(buf)), -EINVAL);
    ck_assert_int_eq(iol_stream_tls_version(NULL), -EINVAL);
    ck_assert_int_eq(iol_stream_tls_cipher(NULL, buf, sizeof(buf)), -EINVAL);
    /* A plain stream has nothing of TLS to tell. */
    iol_loop *loop;
    ck_assert_int_eq(iol_loop_new(&loop, NULL), 0);
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    iol_stream *plain;
    ck_assert_int_eq(iol_stream_new(&plain, loop, sv[0], 0), 0);
    ck_assert_int_eq(iol_stream_tls_verify_result(plain, buf, sizeof(buf)), -ENOTCONN);
    ck_assert_int_eq(iol_stream_tls_peer_subject(plain, buf, sizeof(buf)), -ENOTCONN);
    ck_assert_int_eq(iol_stream_tls_peer_sans(plain, buf, sizeof(buf)), -ENOTCONN);
    ck_assert_int_eq(iol_stream_tls_peer_cert_pem(plain, buf, sizeof(buf)), -ENOTCONN);
    ck_assert_int_eq(iol_stream_tls_version(plain), -ENOTCONN);
    ck_assert_int_eq(iol_stream_tls_cipher(plain, buf, sizeof(buf)), -ENOTCONN);
    ck_assert_int_eq(iol_stream_tls_peer_subject(plain, NULL, 4), -EINVAL);
    ck_assert_int_eq(iol_stream_tls_verify_result(plain, NULL, 4), -EINVAL);
    ck_assert_int_eq(iol_stream_tls_verify_result(plain, NULL, 0), -ENOTCONN);
    ck_assert_int_ge(iol_loop_close(loop, true), 0);
    close(sv[1]);
}
END_TEST

/* Short buffers, inside the handshake callback of a verified client. */
static void short_on_handshake(iol_stream *s, int status, void *arg)
{
    pair *p = arg;
    ck_assert_int_eq(status, 0);
    char buf[10], tiny[3];
    strcpy(buf, "untouched");
    ck_assert_int_eq(iol_stream_tls_peer_subject(s, buf, 9), -ENOSPC); /* "CN=a.test" and its NUL: 10 */
    ck_assert_str_eq(buf, "untouched");
    ck_assert_int_eq(iol_stream_tls_peer_subject(s, buf, 10), 9);
    ck_assert_str_eq(buf, "CN=a.test");
    ck_assert_int_eq(iol_stream_tls_peer_sans(s, buf, sizeof(buf)), -ENOSPC);
    ck_assert_int_eq(iol_stream_tls_peer_cert_pem(s, buf, sizeof(buf)), -ENOSPC);
    ck_assert_int_eq(iol_stream_tls_cipher(s, buf, 4), -ENOSPC);
    ck_assert_int_eq(iol_stream_tls_cipher(s, NULL, 0), -ENOSPC);
    /* The status comes back whatever the room for its text. */
    ck_assert_int_eq(iol_stream_tls_verify_result(s, tiny, sizeof(tiny)), 0);
    ck_assert_str_eq(tiny, "ok");
    ck_assert_int_eq(iol_stream_tls_verify_result(s, NULL, 0), 0);
    p->client.done = true;
    iol_stream_close(s);
    maybe_stop(p);
}

START_TEST(short_buffers)
{
    pair p;
    pair_open(&p, server_cfg("a"));
    iol_tls_config ccfg = {.ca_file = P("ca.pem")};
    iol_tls_ctx *cctx = new_ctx(&ccfg);
    iol_stream *s;
    ck_assert_int_eq(iol_tls_connect(&s, p.loop, "127.0.0.1", p.port, NULL, cctx, "a.test", short_on_handshake, &p), 0);
    iol_tls_ctx_unref(cctx);
    run_loop(p.loop);
    ck_assert(p.server.done);
    pair_close(&p);
}
END_TEST

/* Thread rule: from a thread other than the one running the loop every
 * call says -EPERM; on the loop's thread the same calls work. */
typedef struct {
    pair *p;
    iol_stream *s;
    bool as_current; /* the foreign thread makes the loop its current one first */
    int results[6];
} foreign_job;

static void *foreign_calls(void *arg)
{
    foreign_job *j = arg;
    char buf[256];
    if (j->as_current)
        iol_loop_make_current(j->p->loop); /* as the thread that created it has */
    j->results[0] = iol_stream_tls_verify_result(j->s, buf, sizeof(buf));
    j->results[1] = iol_stream_tls_peer_subject(j->s, buf, sizeof(buf));
    j->results[2] = iol_stream_tls_peer_sans(j->s, buf, sizeof(buf));
    j->results[3] = iol_stream_tls_peer_cert_pem(j->s, buf, sizeof(buf));
    j->results[4] = iol_stream_tls_version(j->s);
    j->results[5] = iol_stream_tls_cipher(j->s, buf, sizeof(buf));
    return NULL;
}

/* Runs on the loop (so the loop is running): the calls from a thread. */
static void call_from_thread(void *arg)
{
    foreign_job *j = arg;
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, foreign_calls, j), 0);
    pthread_join(th, NULL);
    char buf[64];
    ck_assert_int_eq(iol_stream_tls_peer_subject(j->s, buf, sizeof(buf)), 9); /* here: fine */
    ck_assert_int_eq(iol_stream_tls_version(j->s), IOL_TLS_1_3);
    iol_stream_close(j->s);
    j->p->client.done = true;
    maybe_stop(j->p);
}

static void thread_on_handshake(iol_stream *s, int status, void *arg)
{
    foreign_job *j = arg;
    ck_assert_int_eq(status, 0);
    j->s = s;
    ck_assert_int_eq(iol_loop_add_callback(j->p->loop, call_from_thread, j), 0);
}

static void check_other_thread_gets_eperm(bool as_current)
{
    pair p;
    pair_open(&p, server_cfg("a"));
    iol_tls_config ccfg = {.ca_file = P("ca.pem")};
    iol_tls_ctx *cctx = new_ctx(&ccfg);
    foreign_job j = {.p = &p, .as_current = as_current};
    iol_stream *s;
    ck_assert_int_eq(iol_tls_connect(&s, p.loop, "127.0.0.1", p.port, NULL, cctx, "a.test", thread_on_handshake, &j), 0);
    iol_tls_ctx_unref(cctx);
    run_loop(p.loop);
    for (int i = 0; i < 6; i++)
        ck_assert_msg(j.results[i] == -EPERM, "call %d: %d", i, j.results[i]);
    pair_close(&p);
}

START_TEST(other_thread_gets_eperm)
{
    check_other_thread_gets_eperm(false);
}
END_TEST

/* The thread rule is about who runs the loop, not whose current loop it
 * is: the thread that created a loop (IOL_CURRENT_IF_NONE makes it
 * current there) must not read a stream while another thread runs it. */
START_TEST(current_but_not_running_thread_gets_eperm)
{
    check_other_thread_gets_eperm(true);
}
END_TEST

/* Each way our client's check fails: its own status, OpenSSL's words,
 * the certificate still readable, a WARNING log line (shown by default);
 * the server hears the client's alert at INFO. */
static void check_rejection(const char *cert, const char *ca, const char *name, int want, const char *text)
{
    pair p;
    pair_open(&p, server_cfg(cert));
    iol_tls_config ccfg = {.ca_file = P(ca)};
    pair_dial(&p, &ccfg, name);
    ck_assert_msg(p.client.status == want, "%s: %d (%s)", cert, p.client.status, iol_strerror(p.client.status));
    ck_assert_int_eq(p.client.verify, want);
    ck_assert_str_eq(p.client.verify_text, text);
    ck_assert_str_eq(p.client.subject, "CN=a.test"); /* the rejected certificate */
    ck_assert_int_eq(p.client.version, -ENOTCONN);
    ck_assert_int_eq(iol_test_log_level_of("tls: handshake failed on fd"), IOL_LOG_WARNING);
    ck_assert_msg(iol_test_log_level_of(iol_strerror(want)) == IOL_LOG_WARNING, "%s", iol_test_log_text());
    /* The server: the client's alert, at INFO. */
    ck_assert_msg(p.server.status == IOL_ETLS_PEER_REJECTED, "%s: server %d (%s)", cert, p.server.status,
                  iol_strerror(p.server.status));
    ck_assert_int_eq(iol_test_log_level_of("(server, closing with"), IOL_LOG_INFO);
    pair_close(&p);
}

START_TEST(expired)
{
    check_rejection("expired", "ca.pem", "a.test", IOL_ETLS_EXPIRED, "certificate has expired");
}
END_TEST

START_TEST(not_yet_valid)
{
    check_rejection("future", "ca.pem", "a.test", IOL_ETLS_NOT_YET_VALID, "certificate is not yet valid");
}
END_TEST

START_TEST(self_signed)
{
    check_rejection("self", "ca.pem", "a.test", IOL_ETLS_SELF_SIGNED, "self-signed certificate");
}
END_TEST

START_TEST(untrusted)
{
    check_rejection("a", "other-ca.pem", "a.test", IOL_ETLS_UNTRUSTED, "unable to get local issuer certificate");
}
END_TEST

START_TEST(wrong_host_name)
{
    check_rejection("a", "ca.pem", "wrong.test", IOL_ETLS_HOSTNAME, "hostname mismatch");
}
END_TEST

/* ---------------------------------------------------------------- Mutual TLS */

static iol_tls_config mtls_server(int mode)
{
    iol_tls_config cfg = *server_cfg("a");
    cfg.client_cert = mode;
    cfg.ca_file = P("ca.pem");
    return cfg;
}

START_TEST(mtls_required_and_valid)
{
    iol_tls_config scfg = mtls_server(IOL_TLS_CLIENT_CERT_REQUIRE);
    pair p;
    pair_open(&p, &scfg);
    iol_tls_config ccfg = {.ca_file = P("ca.pem"), .cert_file = P("client.pem"), .key_file = P("client.key")};
    pair_dial(&p, &ccfg, "a.test");
    ck_assert_int_eq(p.client.status, 0);
    ck_assert_str_eq(p.client.got, "hello\n");
    ck_assert_str_eq(p.server.got, "hello\n");
    ck_assert_int_eq(p.server.verify, 0);
    ck_assert_str_eq(p.server.subject, "CN=client-1");
    ck_assert_str_eq(p.server.sans, "email:client-1@a.test");
    ck_assert_int_eq(p.server.status, 0);
    pair_close(&p);
}
END_TEST

/* TLS 1.3: the client's handshake is over before the server looks at its
 * certificate; the rejection reaches the client's read. */
START_TEST(mtls_required_without_cert)
{
    iol_tls_config scfg = mtls_server(IOL_TLS_CLIENT_CERT_REQUIRE);
    pair p;
    pair_open(&p, &scfg);
    iol_tls_config ccfg = {.ca_file = P("ca.pem")};
    pair_dial(&p, &ccfg, "a.test");
    ck_assert_int_eq(p.server.status, IOL_ETLS_NO_PEER_CERT);
    ck_assert_int_eq(p.server.verify, IOL_ETLS_NO_PEER_CERT);
    ck_assert_str_eq(p.server.verify_text, "peer did not return a certificate");
    ck_assert_int_eq(p.server.subject_r, -ENOENT);
    ck_assert_int_eq(p.client.status, 0);
    ck_assert_msg(p.client.read_status == IOL_ETLS_PEER_REJECTED, "%d %s", p.client.read_status, iol_test_log_text());
    ck_assert_int_eq(p.client.verify, IOL_ETLS_PEER_REJECTED);
    ck_assert_str_eq(p.client.verify_text, "tlsv13 alert certificate required");
    ck_assert_int_eq(iol_test_log_level_of("(server, closing with"), IOL_LOG_INFO); /* the peer's fault, both sides */
    ck_assert_int_eq(iol_test_log_level_of("(client of a.test, closing with"), IOL_LOG_INFO);
    /* TLS 1.2: the server checks before the client's handshake ends, and
     * says so with a handshake_failure alert, which names no certificate:
     * -EPROTO for the client. */
    iol_tls_config v12 = {.ca_file = P("ca.pem"), .max_version = IOL_TLS_1_2};
    pair_dial(&p, &v12, "a.test");
    ck_assert_int_eq(p.server.status, IOL_ETLS_NO_PEER_CERT);
    ck_assert_int_eq(p.client.status, -EPROTO);
    pair_close(&p);
}
END_TEST

START_TEST(mtls_untrusted_client_cert)
{
    iol_tls_config scfg = mtls_server(IOL_TLS_CLIENT_CERT_REQUIRE);
    pair p;
    pair_open(&p, &scfg);
    iol_tls_config ccfg = {.ca_file = P("ca.pem"), .cert_file = P("rogue.pem"), .key_file = P("rogue.key")};
    pair_dial(&p, &ccfg, "a.test");
    ck_assert_int_eq(p.server.status, IOL_ETLS_UNTRUSTED);
    ck_assert_int_eq(p.server.verify, IOL_ETLS_UNTRUSTED);
    ck_assert_int_eq(iol_test_log_level_of("(server, closing with"), IOL_LOG_INFO);
    ck_assert_int_eq(p.client.status, 0);
    ck_assert_int_eq(p.client.read_status, IOL_ETLS_PEER_REJECTED);
    pair_close(&p);
}
END_TEST

START_TEST(mtls_requested)
{
    iol_tls_config scfg = mtls_server(IOL_TLS_CLIENT_CERT_REQUEST);
    pair p;
    pair_open(&p, &scfg);
    iol_tls_config none = {.ca_file = P("ca.pem")};
    pair_dial(&p, &none, "a.test"); /* no certificate: welcome all the same */
    ck_assert_str_eq(p.client.got, "hello\n");
    ck_assert_int_eq(p.server.verify, 0);
    ck_assert_str_eq(p.server.verify_text, "not verified");
    ck_assert_int_eq(p.server.subject_r, -ENOENT);
    iol_tls_config with = {.ca_file = P("ca.pem"), .cert_file = P("client.pem"), .key_file = P("client.key")};
    pair_dial(&p, &with, "a.test");
    ck_assert_str_eq(p.client.got, "hello\n");
    ck_assert_str_eq(p.server.subject, "CN=client-1");
    ck_assert_int_eq(p.server.verify, 0);
    ck_assert_str_eq(p.server.verify_text, "ok");
    iol_tls_config rogue = {.ca_file = P("ca.pem"), .cert_file = P("rogue.pem"), .key_file = P("rogue.key")};
    pair_dial(&p, &rogue, "a.test"); /* sent, so checked */
    ck_assert_int_eq(p.server.status, IOL_ETLS_UNTRUSTED);
    pair_close(&p);
}
END_TEST

/* ----------------------------------------------------------- PEM in memory */

START_TEST(pem_from_memory)
{
    size_t cert_len, key_len, ca_len, ccert_len, ckey_len;
    char *cert = iol_test_cert_read("a.pem", &cert_len);
    char *key = iol_test_cert_read("a.key", &key_len);
    char *ca = iol_test_cert_read("ca.pem", &ca_len);
    char *ccert = iol_test_cert_read("client.pem", &ccert_len);
    char *ckey = iol_test_cert_read("client.key", &ckey_len);
    iol_tls_config scfg = {.server = true, .cert_pem = cert, .cert_pem_len = cert_len, .key_pem = key,
                           .client_cert = IOL_TLS_CLIENT_CERT_REQUIRE, .ca_pem = ca}; /* lengths 0: up to the NUL */
    pair p;
    pair_open(&p, &scfg);
    iol_tls_config ccfg = {.ca_pem = ca, .ca_pem_len = ca_len, .cert_pem = ccert, .key_pem = ckey, .key_pem_len = ckey_len};
    pair_dial(&p, &ccfg, "a.test");
    ck_assert_int_eq(p.client.status, 0);
    ck_assert_str_eq(p.client.got, "hello\n");
    ck_assert_str_eq(p.server.subject, "CN=client-1");
    pair_close(&p);

    /* Bad PEM: -EBADMSG. A file and a buffer for one role: -EINVAL. */
    iol_tls_ctx *ctx = NULL;
    iol_tls_config bad = scfg;
    bad.cert_pem = "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n";
    bad.cert_pem_len = 0;
    ck_assert_int_eq(iol_tls_ctx_new(&ctx, &bad), -EBADMSG);
    bad = scfg;
    bad.key_pem = ckey; /* the client's key: does not match */
    ck_assert_int_eq(iol_tls_ctx_new(&ctx, &bad), -EBADMSG);
    bad = scfg;
    bad.cert_pem_len = 40; /* cut short */
    ck_assert_int_eq(iol_tls_ctx_new(&ctx, &bad), -EBADMSG);
    iol_tls_config badca = {.ca_pem = "no certificate here"};
    ck_assert_int_eq(iol_tls_ctx_new(&ctx, &badca), -EBADMSG);
    bad = scfg;
    bad.cert_file = P("a.pem");
    ck_assert_int_eq(iol_tls_ctx_new(&ctx, &bad), -EINVAL);
    iol_tls_config half = {.cert_pem = ccert}; /* a client certificate without its key */
    ck_assert_int_eq(iol_tls_ctx_new(&ctx, &half), -EINVAL);
    ck_assert_ptr_null(ctx);
    free(cert);
    free(key);
    free(ca);
    free(ccert);
    free(ckey);
}
END_TEST

/* ------------------------------------------------------ Versions, ciphers */

START_TEST(versions_and_ciphers)
{
    iol_tls_config scfg = *server_cfg("a");
    scfg.min_version = IOL_TLS_1_3;
    pair p;
    pair_open(&p, &scfg);
    /* A client of TLS 1.2 at most against a server of 1.3 at least. */
    iol_tls_config old = {.ca_file = P("ca.pem"), .max_version = IOL_TLS_1_2};
    pair_dial(&p, &old, "a.test");
    ck_assert_int_eq(p.client.status, -EPROTO);
    ck_assert_int_eq(p.server.status, -EPROTO);
    ck_assert_int_eq(p.client.verify, -ENOTCONN); /* failed before any certificate */
    pair_close(&p);

    /* TLS 1.2 with the cipher the client insists on. */
    pair_open(&p, server_cfg("a"));
    iol_tls_config v12 = {.ca_file = P("ca.pem"), .max_version = IOL_TLS_1_2,
                          .ciphers = "ECDHE-ECDSA-CHACHA20-POLY1305"};
    pair_dial(&p, &v12, "a.test");
    ck_assert_int_eq(p.client.status, 0);
    ck_assert_int_eq(p.client.version, IOL_TLS_1_2);
    ck_assert_int_eq(p.server.version, IOL_TLS_1_2);
    ck_assert_str_eq(p.client.cipher, "ECDHE-ECDSA-CHACHA20-POLY1305");
    pair_close(&p);

    /* A TLS 1.3 suite the server insists on. */
    scfg = *server_cfg("a");
    scfg.ciphersuites = "TLS_CHACHA20_POLY1305_SHA256";
    pair_open(&p, &scfg);
    iol_tls_config v13 = {.ca_file = P("ca.pem")};
    pair_dial(&p, &v13, "a.test");
    ck_assert_int_eq(p.client.status, 0);
    ck_assert_str_eq(p.client.cipher, "TLS_CHACHA20_POLY1305_SHA256");
    pair_close(&p);

    /* Nothing in common: -EPROTO on both sides. */
    scfg = *server_cfg("a");
    scfg.ciphersuites = "TLS_AES_128_GCM_SHA256";
    pair_open(&p, &scfg);
    iol_tls_config other = {.ca_file = P("ca.pem"), .ciphersuites = "TLS_CHACHA20_POLY1305_SHA256"};
    pair_dial(&p, &other, "a.test");
    ck_assert_int_eq(p.client.status, -EPROTO);
    pair_close(&p);
}
END_TEST

START_TEST(bad_settings)
{
    iol_tls_ctx *ctx = NULL;
    iol_tls_config c;
    const iol_tls_config base = {.ca_file = P("ca.pem")};
    c = base, c.min_version = 0x0302; /* TLS 1.1 */
    ck_assert_int_eq(iol_tls_ctx_new(&ctx, &c), -EINVAL);
    c = base, c.max_version = 13;
    ck_assert_int_eq(iol_tls_ctx_new(&ctx, &c), -EINVAL);
    c = base, c.min_version = IOL_TLS_1_3, c.max_version = IOL_TLS_1_2;
    ck_assert_int_eq(iol_tls_ctx_new(&ctx, &c), -EINVAL);
    c = base, c.ciphers = "NO-SUCH-CIPHER";
    ck_assert_int_eq(iol_tls_ctx_new(&ctx, &c), -EINVAL);
    c = base, c.ciphers = "";
    ck_assert_int_eq(iol_tls_ctx_new(&ctx, &c), -EINVAL);
    c = base, c.ciphersuites = "TLS_NO_SUCH_SUITE";
    ck_assert_int_eq(iol_tls_ctx_new(&ctx, &c), -EINVAL);
    c = base, c.client_cert = IOL_TLS_CLIENT_CERT_REQUIRE; /* on a client */
    ck_assert_int_eq(iol_tls_ctx_new(&ctx, &c), -EINVAL);
    c = *server_cfg("a"), c.client_cert = 3;
    ck_assert_int_eq(iol_tls_ctx_new(&ctx, &c), -EINVAL);
    c = *server_cfg("a"), c.client_cert = -1;
    ck_assert_int_eq(iol_tls_ctx_new(&ctx, &c), -EINVAL);
    c = base, c.ca_pem = "x", c.ca_pem_len = (size_t)1 << 40;
    ck_assert_int_eq(iol_tls_ctx_new(&ctx, &c), -EINVAL);
    ck_assert_ptr_null(ctx);
    /* Each good value works. */
    c = base, c.min_version = IOL_TLS_1_2, c.max_version = IOL_TLS_1_3, c.ciphers = "ECDHE+AESGCM";
    ck_assert_int_eq(iol_tls_ctx_new(&ctx, &c), 0);
    iol_tls_ctx_unref(ctx);
}
END_TEST

int main(void)
{
    int setup = iol_test_certs_setup("tls_verify");
    if (setup != 0)
        return setup;
    Suite *s = suite_create("tls_verify");
    struct {
        const char *name;
        const TTest *test;
    } cases[] = {
        {"verified_handshake_reports_what_it_settled", verified_handshake_reports_what_it_settled},
        {"bad_arguments", bad_arguments},
        {"short_buffers", short_buffers},
        {"other_thread_gets_eperm", other_thread_gets_eperm},
        {"current_but_not_running_thread_gets_eperm", current_but_not_running_thread_gets_eperm},
        {"expired", expired},
        {"not_yet_valid", not_yet_valid},
        {"self_signed", self_signed},
        {"untrusted", untrusted},
        {"wrong_host_name", wrong_host_name},
        {"mtls_required_and_valid", mtls_required_and_valid},
        {"mtls_required_without_cert", mtls_required_without_cert},
        {"mtls_untrusted_client_cert", mtls_untrusted_client_cert},
        {"mtls_requested", mtls_requested},
        {"pem_from_memory", pem_from_memory},
        {"versions_and_ciphers", versions_and_ciphers},
        {"bad_settings", bad_settings},
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
