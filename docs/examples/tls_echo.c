/* docs/examples/tls_echo.c — the line echo of stream_echo.c over TLS: a
 * TLS server on a runtime (one context shared by both workers) and a TLS
 * client on a loop of its own that verifies the server's certificate.
 *
 *   tls_echo CERT.pem KEY.pem CA.pem    (the certificate names localhost)
 *
 * The stream calls are the plain ones: a TLS stream reads and writes
 * plaintext, and its reads and writes wait for the handshake. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <ioloop.h>

static iol_tls_ctx *server_tls; /* made before the workers start, read by them */

/* ---- server: runs on the worker that owns the connection ---- */

static void on_line(iol_stream *s, const char *data, size_t len, int status, void *arg)
{
    if (status < 0)
        return; /* -EPROTO, IOL_ETLS_*, -ETIMEDOUT, -ECONNRESET...: closed already */
    if (iol_stream_write(s, data, len, NULL, NULL) < 0 || iol_stream_read_until(s, "\n", on_line, arg) < 0)
        iol_stream_close(s);
}

static void on_accept(iol_loop *loop, int fd, const struct sockaddr *peer, socklen_t peerlen, void *arg)
{
    (void)peer, (void)peerlen, (void)arg;
    iol_stream *s;
    /* Wraps fd and starts the server handshake; the read waits for it. */
    if (iol_tls_stream_new(&s, loop, fd, server_tls, 64 * 1024) < 0) {
        close(fd);
        return;
    }
    if (iol_stream_read_until(s, "\n", on_line, NULL) < 0)
        iol_stream_close(s);
}

/* ---- client: main()'s loop ---- */

typedef struct client {
    uint16_t port;
    iol_tls_ctx *tls;
    iol_future *done;
    int err;
} client;

static void on_closed(iol_stream *s, void *arg)
{
    client *c = arg;
    int err = c->err ? c->err : iol_stream_error(s);
    if (err < 0)
        iol_future_set_error(c->done, err);
    else
        iol_future_set_result(c->done, NULL);
}

static void on_echo(iol_stream *s, const char *data, size_t len, int status, void *arg)
{
    client *c = arg;
    if (status == 0)
        printf("echo: %.*s", (int)len, data);
    else
        c->err = status;
    iol_stream_close(s); /* sends close_notify; on_closed runs next */
}

/* The TCP connect and the handshake are done: the certificate was
 * verified against the CA and the name "localhost". */
static void on_handshake(iol_stream *s, int status, void *arg)
{
    client *c = arg;
    if (status < 0) {
        c->err = status; /* the stream closes itself after this callback */
        return;
    }
    char alpn[32];
    if (iol_stream_tls_alpn(s, alpn, sizeof(alpn)) > 0)
        printf("client: ALPN %s\n", alpn);
    int err = iol_stream_write(s, "hello over TLS\n", 15, NULL, NULL);
    if (err == 0)
        err = iol_stream_read_until(s, "\n", on_echo, c);
    if (err < 0) {
        c->err = err;
        iol_stream_close(s);
    }
}

static int dial(iol_loop *loop, iol_future *done, void *arg)
{
    client *c = arg;
    c->done = done;
    iol_stream *s;
    int err = iol_tls_connect(&s, loop, "127.0.0.1", c->port, NULL, c->tls, "localhost", on_handshake, c);
    if (err < 0)
        return err;
    return iol_stream_set_close_callback(s, on_closed, c);
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s CERT.pem KEY.pem CA.pem\n", argv[0]);
        return 2;
    }
    iol_tls_config scfg = { .server = true, .cert_file = argv[1], .key_file = argv[2], .alpn = "echo/1" };
    int err = iol_tls_ctx_new(&server_tls, &scfg);
    if (err < 0) {
        fprintf(stderr, "server context: %s\n", iol_strerror(err)); /* -ENOTSUP: built without TLS */
        return 1;
    }
    iol_runtime_config cfg = { .workers = 2 };
    iol_runtime *rt;
    if (iol_runtime_new(&rt, &cfg) < 0)
        return 1;
    iol_listen_config lc = { .host = "127.0.0.1", .shard = IOL_SHARD_HANDOFF, .on_accept = on_accept };
    int id = iol_runtime_listen(rt, &lc);
    if (id < 0 || iol_runtime_start(rt) < 0)
        return 1;

    /* Client: verifies against CA.pem (NULL: the system's trust store),
     * offers ALPN "echo/1", resumes sessions on reconnects (default). */
    iol_tls_config ccfg = { .ca_file = argv[3], .alpn = "echo/1" };
    client c = { .port = (uint16_t)iol_runtime_listener_port(rt, id) };
    if ((err = iol_tls_ctx_new(&c.tls, &ccfg)) < 0)
        return 1;
    iol_loop *loop;
    if (iol_loop_new(&loop, NULL) < 0)
        return 1;
    err = iol_loop_run_sync(loop, dial, &c, 5.0, NULL);
    printf("client: %s\n", err == 0 ? "echoed over TLS" : iol_strerror(err));

    iol_loop_close(loop, false);
    iol_runtime_free(rt);
    iol_tls_ctx_unref(c.tls);     /* streams held their own references */
    iol_tls_ctx_unref(server_tls);
    return err == 0 ? 0 : 1;
}
