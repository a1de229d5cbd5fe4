/* A program built against the 0.1 header (tests/compat/0.1/ioloop.h, a
 * copy of the header as 0.1 shipped it) keeps the 0.1 behaviour
 * (include/ioloop.h, "Binary compatibility of the status codes"): its
 * loops hand a clean EOF to a read as -EPIPE, and a certificate that
 * fails verification (here: the wrong host name) to both sides of a TLS
 * handshake as -EKEYREJECTED. Plain C, exit status 0 on
 * success: it cannot use the Check fixture, which is built against the
 * current header. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ioloop.h" /* the 0.1 copy: -I tests/compat/0.1 comes first */

static int got_status = 1;

static void on_read(iol_stream *s, const char *data, size_t len, int status, void *arg)
{
    (void)s, (void)data, (void)len;
    got_status = status;
    iol_loop_stop(arg);
}

static int check(const char *what, int ok)
{
    if (!ok)
        fprintf(stderr, "compat 0.1: %s\n", what);
    return ok ? 0 : 1;
}

/* ------------------------------------------------------------------ TLS */

static iol_tls_ctx *server_ctx;
static int server_error = 1, client_status = 1;
static iol_loop *tls_loop;

static void maybe_stop(void)
{
    if (server_error != 1 && client_status != 1)
        iol_loop_stop(tls_loop);
}

static void on_server_close(iol_stream *s, void *arg)
{
    (void)arg;
    server_error = iol_stream_error(s);
    maybe_stop();
}

static void on_accept(int lfd, unsigned events, void *arg)
{
    (void)events, (void)arg;
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    iol_stream *s;
    if (fd < 0 || iol_tls_stream_new(&s, tls_loop, fd, server_ctx, 0) != 0)
        return;
    iol_stream_set_close_callback(s, on_server_close, NULL);
    iol_stream_read_until_close(s, NULL, NULL);
}

static void on_handshake(iol_stream *s, int status, void *arg)
{
    (void)s, (void)arg;
    client_status = status;
    maybe_stop();
}

static void give_up(void *arg)
{
    (void)arg;
    iol_loop_stop(tls_loop);
}

/* 0: passed or skipped (no TLS, no openssl CLI); else failures. */
static int tls_case(void)
{
    char dir[] = "/tmp/iol-compat-XXXXXX", cmd[512], cert[64], key[64];
    if (!mkdtemp(dir))
        return check("mkdtemp", 0);
    snprintf(cert, sizeof(cert), "%s/a.pem", dir);
    snprintf(key, sizeof(key), "%s/a.key", dir);
    snprintf(cmd, sizeof(cmd),
             "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout %s -out %s "
             "-subj /CN=a.test -days 2 -addext subjectAltName=DNS:a.test >/dev/null 2>&1",
             key, cert);
    iol_tls_config scfg = {.server = true, .cert_file = cert, .key_file = key};
    iol_tls_config ccfg = {.ca_file = cert};
    iol_tls_ctx *client_ctx = NULL;
    int fails = 0;
    if (system(cmd) != 0 || iol_tls_ctx_new(&server_ctx, &scfg) != 0 || iol_tls_ctx_new(&client_ctx, &ccfg) != 0) {
        printf("compat 0.1: no TLS or no openssl CLI, TLS case skipped\n");
        goto out;
    }
    iol_loop_new(&tls_loop, NULL);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sin);
    fails += check("listen", bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) == 0 && listen(lfd, 4) == 0 &&
                                 getsockname(lfd, (struct sockaddr *)&sin, &len) == 0);
    iol_loop_add_handler(tls_loop, lfd, IOL_READ, on_accept, NULL);
    iol_stream *c;
    fails += check("iol_tls_connect", iol_tls_connect(&c, tls_loop, "127.0.0.1", ntohs(sin.sin_port), NULL,
                                                      client_ctx, "wrong.test", on_handshake, NULL) == 0);
    iol_loop_call_later(tls_loop, 20, give_up, NULL, NULL);
    iol_loop_start(tls_loop);
    fails += check("a wrong host name reaches a 0.1 client as -EKEYREJECTED", client_status == -EKEYREJECTED);
    fails += check("the client's alert reaches a 0.1 server as -EKEYREJECTED", server_error == -EKEYREJECTED);
    iol_loop_remove_handler(tls_loop, lfd);
    close(lfd);
    iol_loop_close(tls_loop, true);
out:
    iol_tls_ctx_unref(client_ctx);
    iol_tls_ctx_unref(server_ctx);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "compat 0.1: could not remove %s\n", dir);
    return fails;
}

int main(void)
{
    int fails = 0;
    iol_loop *loop;
    if (iol_loop_new(&loop, NULL) != 0)
        return check("iol_loop_new", 0);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
        return check("socketpair", 0);
    iol_stream *s;
    fails += check("iol_stream_new", iol_stream_new(&s, loop, sv[0], 0) == 0);
    fails += check("read_until", iol_stream_read_until(s, "\n", on_read, loop) == 0);
    (void)!write(sv[1], "no newline", 10);
    close(sv[1]); /* a clean EOF before the delimiter */
    iol_loop_start(loop);
    fails += check("a clean EOF reaches a 0.1 program as -EPIPE", got_status == -EPIPE);
    iol_loop_close(loop, true); /* drops the creator's (our only) reference */
    fails += tls_case();
    return fails;
}
