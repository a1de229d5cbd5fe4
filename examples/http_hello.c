/* http-hello: HTTP/1.1 "Hello, World!" on a runtime of N workers.
 *
 *   http-hello --port P --workers N [--shard reuseport|handoff] [--host H] [--stats S]
 *              [--tls-cert FILE --tls-key FILE]
 *
 * --stats S: every S seconds, one line per worker: requests/s, open and
 * accepted connections, busy % of its loop, wakeups/s.
 *
 * With a certificate and key it serves HTTPS (ALPN http/1.1) through TLS
 * streams (http_tls.c), with the same request path and limits. A worker
 * whose loop runs on the uring poller serves plain HTTP through the same
 * stream path (plain streams, deferred writes): there a request's recv
 * and its response's send are io_uring operations, with no poll re-arm
 * and no system call of their own, which the fd-handler path below
 * cannot have. Otherwise the plain fast path below is all there is.
 *
 * Keep-alive per HTTP/1.1 (and HTTP/1.0 "Connection: keep-alive"),
 * pipelining (answered in order), parsing with http-parser. GET and HEAD
 * get 200; other methods 405. A malformed request gets 400, headers over
 * 8 KiB get 431; both close that connection only. A connection idle for
 * 10 s, or still sending its headers 10 s after they began, is closed.
 *
 * The fast path: one small allocation per connection (its state, about
 * 150 bytes: an idle connection holds no buffer), one read per readiness
 * into the worker's read buffer, parsing in place (the parser keeps no
 * pointer into it between reads), the
 * responses of one read gathered in a per-thread buffer and written with
 * one write(2); only what the kernel does not take is copied aside (and
 * reading pauses until it is flushed). Raw fd handlers, no streams.
 * The request path itself (parsing, limits, responses) is http_conn.c,
 * which has no sockets, so tests/fuzz can drive it.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "http_conn.h"
#include "http_tls.h"
#include "ioloop.h"
#include "server.h"

#define READ_BUF 16384
#define OUT_BUF 65536
#define LINGER_TIMEOUT 2     /* seconds to drain input after a final response */

typedef struct conn conn;
struct conn {
    conn *prev, *next; /* the worker's list, swept once a second */
    iol_loop *loop;
    int fd;
    bool registered;   /* has a handler on the loop */
    unsigned events;   /* what the handler watches */
    bool lingering;    /* output done, SHUT_WR sent, discarding input */
    char *pending;     /* output the kernel did not take yet */
    size_t pending_len, pending_off;
    http_conn hc;      /* request state; hc.deadline is on the worker's coarse clock */
};

/* Per worker (each worker thread has its own). */
typedef struct worker_state {
    conn head; /* list sentinel */
    iol_periodic *sweep;
    long now;  /* coarse monotonic seconds, updated by the sweep */
    http_dates dates;
    char rbuf[READ_BUF]; /* every connection of the worker reads here */
    char out[OUT_BUF];
    size_t out_len;
    conn *out_conn; /* whose responses out holds */
    bool streams;   /* plain connections on streams (a uring loop) */
} worker_state;

static __thread worker_state *ws;

/* Requests answered per worker, for --stats: written by that worker only
 * (a relaxed load and store), read by the main thread (relaxed: a
 * statistic, it orders nothing). One cache line each. */
#define MAX_WORKERS 4096
static struct {
    _Alignas(64) _Atomic uint64_t n;
} requests_served[MAX_WORKERS];
static __thread _Atomic uint64_t *my_requests;

static uint64_t requests_of(unsigned index)
{
    return index < MAX_WORKERS ? atomic_load_explicit(&requests_served[index].n, memory_order_relaxed) : 0;
}

/* ---------------------------------------------------------------- output */

static void conn_close(conn *c);
static bool conn_update_events(conn *c);

/* Hands out[] to the kernel; what it does not take goes to c->pending. */
static int flush_out(conn *c)
{
    size_t len = ws->out_len;
    ws->out_len = 0;
    ws->out_conn = NULL;
    if (len == 0)
        return 0;
    size_t off = 0;
    if (!c->pending) {
        while (off < len) {
            ssize_t n = write(c->fd, ws->out + off, len - off);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                if (errno == EAGAIN)
                    break;
                return -errno;
            }
            off += (size_t)n;
        }
        if (off == len)
            return 0;
    }
    /* Keep the rest, after anything already pending (order matters). */
    size_t rest = len - off, have = c->pending_len - c->pending_off;
    char *buf = malloc(have + rest);
    if (!buf)
        return -ENOMEM;
    if (have)
        memcpy(buf, c->pending + c->pending_off, have);
    memcpy(buf + have, ws->out + off, rest);
    free(c->pending);
    c->pending = buf;
    c->pending_len = have + rest;
    c->pending_off = 0;
    return 0;
}

/* http_conn's emit: gathers the responses of one read in out[]. */
static void out_append(void *arg, const char *data, size_t len)
{
    conn *c = arg;
    if (ws->out_len + len > OUT_BUF) {
        if (flush_out(c) < 0) {
            c->hc.closing = true; /* the write error closes it after parsing */
            return;
        }
    }
    ws->out_conn = c;
    memcpy(ws->out + ws->out_len, data, len);
    ws->out_len += len;
}

/* ------------------------------------------------------------ connection */

static void conn_unlink(conn *c)
{
    c->prev->next = c->next;
    c->next->prev = c->prev;
}

static void conn_close(conn *c)
{
    /* close_fd: the close alone takes the socket out of epoll (accepted
     * with CLOEXEC and never duplicated), no EPOLL_CTL_DEL. */
    if (c->registered)
        iol_loop_close_fd(c->loop, c->fd);
    else
        close(c->fd);
    conn_unlink(c);
    free(c->pending);
    free(c);
}

/* Output done on a closing connection: half-close and discard input for a
 * while, so a client still sending does not get our response destroyed
 * by a reset (lingering close). */
static bool conn_linger(conn *c)
{
    shutdown(c->fd, SHUT_WR);
    c->lingering = true;
    c->hc.deadline = ws->now + LINGER_TIMEOUT;
    return conn_update_events(c);
}

static void conn_io(int fd, unsigned events, void *arg);

/* Watches what the connection waits for; registers it the first time
 * (a connection answered at accept never is). false: closed and freed. */
static bool conn_update_events(conn *c)
{
    unsigned want = c->pending ? IOL_WRITE : IOL_READ;
    if (!c->registered) {
        if (iol_loop_add_handler(c->loop, c->fd, want, conn_io, c) < 0) {
            conn_close(c);
            return false;
        }
        c->registered = true;
        c->events = want;
    } else if (want != c->events) {
        c->events = want;
        iol_loop_update_handler(c->loop, c->fd, want);
    }
    return true;
}

/* Returns false when the connection was closed (and freed). */
static bool conn_read(conn *c)
{
    ssize_t n = read(c->fd, ws->rbuf, sizeof(ws->rbuf));
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return conn_update_events(c); /* at accept: not registered yet */
        conn_close(c); /* EOF or error */
        return false;
    }
    if (c->lingering)
        return true; /* discarding */
    http_dates_refresh(&ws->dates, time(NULL));
    unsigned long answered = c->hc.requests;
    http_conn_feed(&c->hc, ws->rbuf, (size_t)n, ws->now);
    if (my_requests)
        atomic_store_explicit(my_requests, atomic_load_explicit(my_requests, memory_order_relaxed) + (c->hc.requests - answered),
                              memory_order_relaxed); /* relaxed: the only writer; see requests_served */
    if (flush_out(c) < 0) {
        conn_close(c);
        return false;
    }
    if (c->hc.closing && !c->pending) {
        /* A clean end with nothing unread (the request was all the read
         * got, and it did not fill the buffer): close now, which sends
         * FIN. Otherwise close lingering, so unread input cannot make the
         * kernel reset the response away. */
        if (c->hc.clean_end && c->hc.unparsed == 0 && (size_t)n < sizeof(ws->rbuf)) {
            conn_close(c);
            return false;
        }
        return conn_linger(c);
    }
    return conn_update_events(c);
}

static void conn_write(conn *c)
{
    while (c->pending_off < c->pending_len) {
        ssize_t n = write(c->fd, c->pending + c->pending_off, c->pending_len - c->pending_off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                return;
            conn_close(c);
            return;
        }
        c->pending_off += (size_t)n;
    }
    free(c->pending);
    c->pending = NULL;
    c->pending_len = c->pending_off = 0;
    if (c->hc.closing) {
        conn_linger(c);
        return;
    }
    c->hc.deadline = ws->now + HTTP_IDLE_TIMEOUT;
    conn_update_events(c);
}

static void conn_io(int fd, unsigned events, void *arg)
{
    (void)fd;
    conn *c = arg;
    if (c->pending) {
        if (events & (IOL_WRITE | IOL_ERROR))
            conn_write(c);
        return;
    }
    conn_read(c);
}

/* Graceful end of a connection: answer the requests that have arrived,
 * then send FIN and discard input until the client closes. Closing with
 * unread input would make the kernel reset the connection. */
static void conn_finish(conn *c)
{
    c->hc.closing = true;
    if (c->lingering || c->pending)
        return; /* conn_write lingers once the output is out */
    if (!conn_read(c))
        return;
    if (!c->lingering && !c->pending)
        conn_linger(c);
}

static void on_accept(iol_loop *loop, int fd, const struct sockaddr *peer, socklen_t peerlen, void *arg)
{
    (void)peer;
    (void)peerlen;
    (void)arg;
    iol_tls_ctx *tls = example_server_tls();
    if (tls || ws->streams) {
        http_tls_accept(loop, fd, tls, &ws->dates, ws->now, my_requests);
        return;
    }
    conn *c = malloc(sizeof(*c));
    if (!c) {
        close(fd);
        return;
    }
    c->loop = loop;
    c->fd = fd;
    c->registered = false;
    c->events = 0;
    c->lingering = false;
    c->pending = NULL;
    c->pending_len = c->pending_off = 0;
    http_conn_init(&c->hc, &ws->dates, out_append, c, ws->now);
    c->next = ws->head.next;
    c->prev = &ws->head;
    ws->head.next->prev = c;
    ws->head.next = c;
    /* The listener defers accepting until the request's first bytes are
     * in (TCP_DEFER_ACCEPT): read now. A one-request connection is then
     * answered and closed without ever being registered. */
    conn_read(c);
}

/* ----------------------------------------------------------------- workers */

static long coarse_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (long)ts.tv_sec;
}

/* Once a second: idle, slowloris and lingering connections go. */
static void sweep(void *arg)
{
    (void)arg;
    ws->now = coarse_now();
    for (conn *c = ws->head.next, *next; c != &ws->head; c = next) {
        next = c->next;
        if (c->hc.deadline < ws->now)
            conn_close(c);
    }
    http_tls_sweep(ws->now);
}

static void worker_start(iol_loop *loop, unsigned index, void *arg)
{
    (void)arg;
    my_requests = index < MAX_WORKERS ? &requests_served[index].n : NULL;
    ws = calloc(1, sizeof(*ws));
    if (!ws) {
        fprintf(stderr, "http-hello: out of memory\n");
        exit(1);
    }
    ws->head.next = ws->head.prev = &ws->head;
    /* IOL_HTTP_STREAMS=0 keeps a uring worker on the fd handlers (for
     * comparing the two). */
    const char *streams = getenv("IOL_HTTP_STREAMS");
    ws->streams = strcmp(iol_loop_poller(loop), "uring") == 0 && !(streams && strcmp(streams, "0") == 0);
    ws->now = coarse_now();
    http_dates_init(&ws->dates);
    if (iol_periodic_new(&ws->sweep, loop, 1000, sweep, NULL) < 0 || iol_periodic_start(ws->sweep) < 0) {
        fprintf(stderr, "http-hello: cannot start the idle sweep\n");
        exit(1);
    }
}

/* The runtime has stopped taking work and handed us every connection the
 * kernel had queued: finish each one gracefully (answer what has arrived,
 * FIN, discard input until the client closes). The runtime keeps running
 * the loop while connections remain, for at most LINGER_TIMEOUT. No
 * client of an accepted connection sees a reset. */
static void worker_drain(iol_loop *loop, unsigned index, void *arg)
{
    (void)loop;
    (void)index;
    (void)arg;
    for (conn *c = ws->head.next, *next; c != &ws->head; c = next) {
        next = c->next;
        conn_finish(c);
    }
    http_tls_drain();
}

/* After the drain: what is left was shut down and its input discarded by
 * the runtime, so closing sends FIN. */
static void worker_stop(iol_loop *loop, unsigned index, void *arg)
{
    (void)loop;
    (void)index;
    (void)arg;
    while (ws->head.next != &ws->head)
        conn_close(ws->head.next);
    http_tls_stop();
    iol_periodic_free(ws->sweep);
    free(ws);
    ws = NULL;
}

/* ------------------------------------------------------------------ main */

/* "accepted per worker: N0 N1 ..." on exit, for the demo and for users
 * checking how the listener spread connections. */
static void print_accept_counts(iol_runtime *rt, int id)
{
    unsigned n = iol_runtime_size(rt);
    uint64_t *counts = calloc(n ? n : 1, sizeof *counts);
    if (!counts || iol_runtime_listener_counts(rt, id, counts, n) < 0) {
        free(counts);
        return;
    }
    printf("accepted per worker:");
    for (unsigned i = 0; i < n; i++)
        printf(" %llu", (unsigned long long)counts[i]);
    printf("\n");
    fflush(stdout);
    free(counts);
}

int main(int argc, char **argv)
{
    http_conn_global_init();
    static const example_server srv = {
        .name = "http-hello",
        .default_port = 8080,
        .on_start = worker_start,
        .on_drain = worker_drain,
        .on_stop = worker_stop,
        .drain_timeout = LINGER_TIMEOUT,
        .on_accept = on_accept,
        /* nodelay on the listener (inherited), deferred accept for as
         * long as a request may take to begin. */
        .listen = {.nodelay = true, .defer_accept = HTTP_HEADER_TIMEOUT},
        .on_exit = print_accept_counts,
        .requests = requests_of,
        .alpn = "http/1.1",
    };
    return example_server_main(&srv, argc, argv);
}
