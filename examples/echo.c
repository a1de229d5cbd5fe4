/* echo: a TCP echo server on a runtime of N workers, with streams.
 *
 *   echo --port P --workers N [--shard reuseport|handoff] [--host H]
 *        [--tls-cert FILE --tls-key FILE]
 *
 * With a certificate and key it echoes over TLS (the same code: a TLS
 * stream reads and writes plaintext); its graceful stop then ends each
 * connection with close_notify instead of a bare FIN.
 *
 * Prints "listening on 127.0.0.1:PORT", serves until SIGINT/SIGTERM, then
 * stops gracefully: queued connections are accepted, and every open one
 * gets its pending echo, then FIN; input is discarded until the client
 * closes (at most DRAIN_TIMEOUT), so no client is reset. Exits 0.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ioloop.h"
#include "server.h"

#define READ_CHUNK 65536
#define DRAIN_TIMEOUT 2.0 /* seconds */

typedef struct conn conn;
struct conn {
    conn *prev, *next; /* the worker's open connections */
    iol_stream *stream;
    bool fin_sent;     /* draining: our side is shut down for writing */
};

/* Each worker's list (a sentinel head), finished in on_stop. */
static __thread conn open_head;
/* Graceful stop: no more echoes, FIN sent, input discarded until EOF. */
static __thread bool draining;
static __thread iol_loop *worker_loop;

static void on_read(iol_stream *s, const char *data, size_t len, int status, void *arg);

static void read_more(void *arg)
{
    conn *c = arg;
    if (iol_stream_closed(c->stream))
        return;
    if (draining && !c->fin_sent) {
        /* FIN once everything echoed so far is out (TLS: close_notify
         * first); reading goes on, discarding, until the client's EOF. */
        iol_stream_shutdown(c->stream, NULL, NULL);
        c->fin_sent = true;
    }
    if (iol_stream_read_bytes(c->stream, READ_CHUNK, true, on_read, c) < 0)
        iol_stream_close(c->stream);
}

static void on_read(iol_stream *s, const char *data, size_t len, int status, void *arg)
{
    conn *c = arg;
    if (status < 0 || len == 0) {
        if (!iol_stream_closed(s))
            iol_stream_close(s);
        return;
    }
    if (draining) {
        read_more(c); /* discard until the client closes */
        return;
    }
    /* Read the next chunk once this one is in the kernel: a client that
     * does not read its echo cannot make us buffer without bound. */
    if (iol_stream_write(s, data, len, read_more, c) < 0 && !iol_stream_closed(s))
        iol_stream_close(s);
}

static void on_close(iol_stream *s, void *arg)
{
    (void)s;
    conn *c = arg;
    c->prev->next = c->next;
    c->next->prev = c->prev;
    free(c);
}

static void on_accept(iol_loop *loop, int fd, const struct sockaddr *peer, socklen_t peerlen, void *arg)
{
    (void)peer;
    (void)peerlen;
    (void)arg;
    conn *c = calloc(1, sizeof(*c));
    if (!c) {
        close(fd);
        return;
    }
    iol_tls_ctx *tls = example_server_tls();
    int r = tls ? iol_tls_stream_new(&c->stream, loop, fd, tls, 0) : iol_stream_new(&c->stream, loop, fd, 0);
    if (r < 0) {
        fprintf(stderr, "echo: stream: %s\n", iol_strerror(r));
        close(fd);
        free(c);
        return;
    }
    c->next = open_head.next;
    c->prev = &open_head;
    open_head.next->prev = c;
    open_head.next = c;
    iol_stream_set_close_callback(c->stream, on_close, c);
    read_more(c);
}

static void worker_start(iol_loop *loop, unsigned index, void *arg)
{
    (void)index;
    (void)arg;
    open_head.next = open_head.prev = &open_head;
    worker_loop = loop;
}

/* The runtime stopped taking work and handed us what the kernel had
 * queued: FIN every connection once its echo is out, discard input until
 * the client closes. The runtime keeps the loop running until the last
 * stream closed (or DRAIN_TIMEOUT), then closes what is left without a
 * reset. */
static void worker_drain(iol_loop *loop, unsigned index, void *arg)
{
    (void)loop;
    (void)index;
    (void)arg;
    draining = true;
    for (conn *c = open_head.next; c != &open_head; c = c->next) {
        if (iol_stream_closed(c->stream) || c->fin_sent)
            continue;
        /* The FIN waits for an echo still queued: nothing is dropped. */
        iol_stream_shutdown(c->stream, NULL, NULL);
        c->fin_sent = true;
    }
}

/* After the drain: what is left was shut down and its input discarded by
 * the runtime; closing it now sends FIN. */
static void worker_stop(iol_loop *loop, unsigned index, void *arg)
{
    (void)loop;
    (void)index;
    (void)arg;
    for (conn *c = open_head.next; c != &open_head; c = c->next)
        if (!iol_stream_closed(c->stream))
            iol_stream_close(c->stream);
}

int main(int argc, char **argv)
{
    static const example_server srv = {
        .name = "echo",
        .default_port = 7000,
        .on_start = worker_start,
        .on_drain = worker_drain,
        .on_stop = worker_stop,
        .drain_timeout = DRAIN_TIMEOUT,
        .on_accept = on_accept,
    };
    return example_server_main(&srv, argc, argv);
}
