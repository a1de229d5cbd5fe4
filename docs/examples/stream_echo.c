/* docs/examples/stream_echo.c — a line echo server on a runtime, with
 * streams, and a stream client on a loop of its own.
 *
 * Server: two workers; each accepted fd becomes an iol_stream on the
 * worker's loop that reads a line and writes it back, until the peer
 * closes. Client: main() drives its own loop with run_sync; it connects,
 * sends three lines one at a time, checks each echo, then closes. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <ioloop.h>

/* ---- server: runs on the worker that owns the connection ---- */

static void on_line(iol_stream *s, const char *data, size_t len, int status, void *arg)
{
    if (status < 0) {
        /* IOL_EOF: the peer closed cleanly; -ECONNRESET...: it is gone
         * (iol_strerror(status) says which). The stream closes itself and
         * frees itself once its callbacks are done. */
        return;
    }
    /* data includes the "\n"; write copies it. */
    if (iol_stream_write(s, data, len, NULL, NULL) < 0 || iol_stream_read_until(s, "\n", on_line, arg) < 0)
        iol_stream_close(s);
}

static void on_accept(iol_loop *loop, int fd, const struct sockaddr *peer, socklen_t peerlen, void *arg)
{
    (void)peer, (void)peerlen, (void)arg;
    iol_stream *s;
    if (iol_stream_new(&s, loop, fd, 64 * 1024) < 0) { /* lines over 64 KiB: -ENOBUFS */
        close(fd); /* on_accept owns fd until a stream does */
        return;
    }
    if (iol_stream_read_until(s, "\n", on_line, NULL) < 0)
        iol_stream_close(s);
}

/* ---- client: main()'s loop ---- */

typedef struct client {
    uint16_t port;
    iol_future *done; /* run_sync's, resolved by the close callback */
    int line;
    int err;
} client;

static const char *lines[] = { "one\n", "two\n", "three\n" };

static void finish(client *c, iol_stream *s, int err)
{
    c->err = err;
    iol_stream_close(s); /* on_closed runs next, from the loop */
}

/* The stream's last callback: it frees itself when this returns. Resolving
 * run_sync's future here (not in finish) lets run_sync return only once
 * the stream is gone, so nothing of it is left queued on the loop. */
static void on_closed(iol_stream *s, void *arg)
{
    client *c = arg;
    int err = c->err ? c->err : iol_stream_error(s);
    if (err < 0)
        iol_future_set_error(c->done, err);
    else
        iol_future_set_result(c->done, NULL);
}

static void on_echo(iol_stream *s, const char *data, size_t len, int status, void *arg);

static void send_line(client *c, iol_stream *s)
{
    const char *l = lines[c->line];
    int err = iol_stream_write(s, l, strlen(l), NULL, NULL);
    if (err == 0)
        err = iol_stream_read_until(s, "\n", on_echo, c);
    if (err < 0)
        finish(c, s, err);
}

static void on_echo(iol_stream *s, const char *data, size_t len, int status, void *arg)
{
    client *c = arg;
    if (status < 0) {
        finish(c, s, status);
        return;
    }
    printf("echo: %.*s", (int)len, data);
    if (len != strlen(lines[c->line]) || memcmp(data, lines[c->line], len) != 0) {
        finish(c, s, -EPROTO);
        return;
    }
    if (++c->line == 3)
        finish(c, s, 0);
    else
        send_line(c, s);
}

static void on_connect(iol_stream *s, int status, void *arg)
{
    client *c = arg;
    if (status < 0) {
        c->err = status; /* the stream closes itself after this callback */
        return;
    }
    send_line(c, s);
}

static int dial(iol_loop *loop, iol_future *done, void *arg)
{
    client *c = arg;
    c->done = done; /* run_sync keeps its reference until it returns */
    iol_stream *s;
    int err = iol_stream_connect(&s, loop, "127.0.0.1", c->port, 0, on_connect, c);
    if (err < 0)
        return err;
    /* Set before the loop runs on: on_connect cannot have run yet. */
    return iol_stream_set_close_callback(s, on_closed, c);
}

int main(void)
{
    iol_runtime_config cfg = { .workers = 2 };
    iol_runtime *rt;
    if (iol_runtime_new(&rt, &cfg) < 0)
        return 1;
    iol_listen_config lc = { .host = "127.0.0.1", .shard = IOL_SHARD_HANDOFF, .on_accept = on_accept };
    int id = iol_runtime_listen(rt, &lc);
    if (id < 0 || iol_runtime_start(rt) < 0)
        return 1;

    iol_loop *loop;
    if (iol_loop_new(&loop, NULL) < 0)
        return 1;
    client c = { .port = (uint16_t)iol_runtime_listener_port(rt, id) };
    int err = iol_loop_run_sync(loop, dial, &c, 5.0, NULL);
    printf("client: %s\n", err == 0 ? "all three lines echoed" : iol_strerror(err));

    iol_loop_close(loop, false);
    iol_runtime_free(rt); /* stop + join + free; open server streams close with their loops */
    return err == 0 ? 0 : 1;
}
