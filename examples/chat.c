/* chat: a line chat server on a runtime of N workers.
 *
 *   chat --port P --workers N [--shard reuseport|handoff] [--host H]
 *        [--tls-cert FILE --tls-key FILE]
 *
 * Every line a client sends (up to MAX_LINE bytes, ending in "\n") goes
 * to every client connected at that moment, on every worker, the sender
 * included, unchanged. Lines of one sender arrive in the order it sent
 * them (each connection lives on one worker, which reads its lines in
 * order and broadcasts them in order; a runtime keeps one thread's
 * broadcasts in order on every worker). Lines of different senders
 * interleave as they come.
 *
 * Fan-out: the worker that read a line copies it once and broadcasts it
 * (iol_runtime_broadcast_ex); each worker appends it to its own clients'
 * outgoing bytes, and the broadcast's done frees the copy after the last
 * worker did. A worker writes what piled up for a client once per turn of
 * its loop (one callback after a batch of lines), so a burst of lines
 * costs one send per client, not one per line.
 *
 * A client that does not read is cut off once MAX_BACKLOG bytes wait for
 * it, so that it cannot make the server buffer without bound.
 *
 * SIGINT/SIGTERM: a graceful stop. A line is accepted when its broadcast
 * was (before the stop); every accepted line reaches every client still
 * connected, lines read after it are dropped. Then each client gets a
 * clean end of stream once its lines are written: FIN (TLS: close_notify
 * first), and its input is discarded until it closes, so none is reset.
 * Exits 0.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ioloop.h"
#include "server.h"

#define MAX_LINE 4096               /* longer lines end the connection */
#define MAX_BACKLOG (8u << 20)      /* bytes queued for one slow client */
#define DRAIN_TIMEOUT 30.0          /* seconds for clients to take their last lines */

typedef struct conn conn;
struct conn {
    conn *prev, *next; /* the worker's clients */
    iol_stream *stream;
    bool finishing;    /* stopping: the end of stream is on its way */
    char *out;         /* lines not yet handed to the stream */
    size_t out_len, out_cap;
};

/* One line on its way to every worker; freed by the broadcast's done. */
typedef struct line {
    size_t len;
    char data[];
} line;

/* Each worker's clients (a sentinel head). */
static __thread conn clients;
static __thread bool stopping;
static __thread iol_loop *worker_loop;
static __thread bool flush_queued; /* flush_all is queued on worker_loop */

static void read_line(conn *c);

/* ------------------------------------------------------------ writing */

/* What piled up for c, to its stream; a client past MAX_BACKLOG is cut off. */
static void flush_conn(conn *c)
{
    if (c->out_len == 0 || iol_stream_closed(c->stream))
        return;
    int r = iol_stream_write(c->stream, c->out, c->out_len, NULL, NULL);
    c->out_len = 0;
    if (r < 0 && !iol_stream_closed(c->stream))
        iol_stream_close(c->stream); /* -ENOBUFS: a client that does not read */
}

static void flush_all(void *arg)
{
    (void)arg;
    flush_queued = false;
    for (conn *c = clients.next; c != &clients; c = c->next)
        flush_conn(c);
}

static void append(conn *c, const char *data, size_t len)
{
    if (c->out_len + len > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 4096;
        while (cap < c->out_len + len)
            cap *= 2;
        char *grown = cap <= MAX_BACKLOG ? realloc(c->out, cap) : NULL;
        if (!grown) {
            iol_stream_close(c->stream); /* past the backlog, or out of memory */
            return;
        }
        c->out = grown;
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, data, len);
    c->out_len += len;
    if (!flush_queued && iol_loop_add_callback(worker_loop, flush_all, NULL) == 0)
        flush_queued = true;
}

/* ------------------------------------------------------- graceful close */

/* A shutdown that could not finish (the client reset, the loop closed):
 * nothing more to do than make sure the stream is gone. */
static void on_shutdown(iol_stream *s, int status, void *arg)
{
    (void)arg;
    if (status < 0 && !iol_stream_closed(s))
        iol_stream_close(s);
}

/* Ends c's stream cleanly once every line queued for it is written:
 * iol_stream_shutdown sends the FIN (TLS: close_notify first) after the
 * last byte, while the pending line read goes on dropping input until the
 * client closes (then the stream closes), so closing never sends a reset. */
static void finish_conn(conn *c)
{
    if (c->finishing || iol_stream_closed(c->stream))
        return;
    c->finishing = true;
    flush_conn(c);
    if (!iol_stream_closed(c->stream) && iol_stream_shutdown(c->stream, on_shutdown, c) < 0 &&
        !iol_stream_closed(c->stream))
        iol_stream_close(c->stream);
}

/* ------------------------------------------------------------- fan-out */

/* On every worker: the line to each of its clients. */
static void deliver(void *arg)
{
    line *l = arg;
    for (conn *c = clients.next; c != &clients; c = c->next)
        if (!c->finishing && !iol_stream_closed(c->stream))
            append(c, l->data, l->len);
}

static void line_free(void *arg)
{
    free(arg);
}

static void on_line(iol_stream *s, const char *data, size_t len, int status, void *arg)
{
    conn *c = arg;
    if (status < 0 || len == 0) {
        /* The client closed (or sent a line too long): done with it. */
        if (!iol_stream_closed(s))
            iol_stream_close(s);
        return;
    }
    if (!stopping) {
        line *l = malloc(sizeof(*l) + len);
        if (!l) {
            iol_stream_close(s);
            return;
        }
        l->len = len;
        memcpy(l->data, data, len);
        iol_runtime *rt = example_server_runtime();
        int r = iol_runtime_broadcast_ex(rt, deliver, l, line_free, l);
        if (r == -ESHUTDOWN)
            free(l); /* stopping: not accepted, reaches no one */
        else if (r < 0)
            fprintf(stderr, "chat: broadcast: %s\n", iol_strerror(r)); /* -ENOMEM: done still frees it */
    }
    read_line(c); /* stopping: read and drop until the client closes */
}

static void read_line(conn *c)
{
    if (iol_stream_closed(c->stream))
        return;
    if (iol_stream_read_until_max(c->stream, "\n", MAX_LINE, on_line, c) < 0)
        iol_stream_close(c->stream);
}

/* --------------------------------------------------------- connections */

static void on_close(iol_stream *s, void *arg)
{
    (void)s;
    conn *c = arg;
    c->prev->next = c->next;
    c->next->prev = c->prev;
    free(c->out);
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
        fprintf(stderr, "chat: stream: %s\n", iol_strerror(r));
        close(fd);
        free(c);
        return;
    }
    iol_stream_set_max_write_buffer(c->stream, MAX_BACKLOG);
    c->next = clients.next;
    c->prev = &clients;
    clients.next->prev = c;
    clients.next = c;
    iol_stream_set_close_callback(c->stream, on_close, c);
    if (stopping)
        finish_conn(c); /* accepted by the stop's final accepts: no lines for it */
    read_line(c);
}

/* ------------------------------------------------------------- workers */

static void worker_start(iol_loop *loop, unsigned index, void *arg)
{
    (void)index;
    (void)arg;
    clients.next = clients.prev = &clients;
    worker_loop = loop;
}

/* Every broadcast accepted before the stop has run on this worker by now
 * (the runtime runs posts queued before the stop first): what each client
 * has queued is all it will get. End every stream after it. The runtime
 * keeps the loop running until the last client closed, or DRAIN_TIMEOUT. */
static void worker_drain(iol_loop *loop, unsigned index, void *arg)
{
    (void)loop;
    (void)index;
    (void)arg;
    stopping = true;
    for (conn *c = clients.next; c != &clients; c = c->next)
        finish_conn(c);
}

/* After the drain: the runtime shut down what is left and discarded its
 * input, so closing it now sends no reset. */
static void worker_stop(iol_loop *loop, unsigned index, void *arg)
{
    (void)loop;
    (void)index;
    (void)arg;
    for (conn *c = clients.next; c != &clients; c = c->next)
        if (!iol_stream_closed(c->stream))
            iol_stream_close(c->stream);
}

int main(int argc, char **argv)
{
    static const example_server srv = {
        .name = "chat",
        .default_port = 7001,
        .on_start = worker_start,
        .on_drain = worker_drain,
        .on_stop = worker_stop,
        .drain_timeout = DRAIN_TIMEOUT,
        .on_accept = on_accept,
    };
    return example_server_main(&srv, argc, argv);
}
