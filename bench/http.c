/* iol-bench http: an HTTP/1.1 load generator on our own runtime.
 *
 * N worker loops (iol_runtime), C connections spread over them. Each
 * connection is a non-blocking socket driven by a raw fd handler rather
 * than an iol_stream: a load generator must cost the server's side as
 * little as possible and the same on every run, and a handler that writes
 * one fixed request and parses the reply in place does one send and one
 * recv per request and nothing else (no buffers to grow, no callbacks to
 * queue).
 *
 * Keep-alive mode sends the next request as soon as a reply is complete
 * (one request in flight per connection, like wrk). --churn sends
 * "Connection: close" and opens a new connection per request; latency then
 * includes the connect. The measuring window is the same for every worker:
 * the main thread fixes the deadline before the workers begin and each
 * worker's timer closes its connections at that deadline, so only replies
 * completed inside the window count.
 *
 * https:// URLs go through our own TLS streams (iol_tls_connect) instead
 * of raw handlers: the point is to load a server with the library's TLS
 * client, and OpenSSL needs a stream around it anyway. The parser and the
 * accounting are the same; only how bytes come and go differs.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "bench/histogram.h"
#include "ioloop.h"

/* ---------------------------------------------------------------- load */

const char *const http_error_names[HTTP_ERR_KINDS] = {
    [HTTP_ERR_REFUSED] = "connect_refused", [HTTP_ERR_RESET] = "reset",   [HTTP_ERR_TIMEOUT] = "timeout",
    [HTTP_ERR_BAD_STATUS] = "bad_status",   [HTTP_ERR_OTHER] = "other",
};

#define READ_BUF 8192         /* headers must fit; bodies are skipped, not kept */
#define SWEEP_PERIOD_S 0.25   /* how often a worker looks for stuck connections */
#define RETRY_DELAY_S 0.01    /* back-off after a refused connect, so it never spins */

enum conn_state { C_IDLE, C_CONNECTING, C_WRITING, C_READING, C_DRAINING };
enum parse_state { P_HEADERS, P_BODY_LENGTH, P_CHUNK_SIZE, P_CHUNK_DATA, P_CHUNK_TRAILER, P_UNTIL_CLOSE, P_DONE };
enum parse_result { PARSE_MORE, PARSE_DONE, PARSE_ERROR };

struct worker;

struct conn {
    struct worker *w;
    int fd;
    iol_stream *s;          /* TLS only: the connection's stream (fd is then -1) */
    enum conn_state state;
    unsigned events;        /* what the handler is registered for */
    size_t sent;
    uint64_t start_ns;      /* of this request (churn: of the connect) */
    unsigned outstanding;   /* replies still due for the last write (--pipeline) */
    iol_timeout retry;      /* pending reconnect after a refused connect */
    /* Reply parser. */
    enum parse_state ps;
    int status;
    bool server_closes;     /* "Connection: close" in the reply */
    uint64_t remaining;     /* body or chunk bytes still to skip */
    size_t len;
    char buf[READ_BUF];
};

struct load {
    http_load_config cfg;
    struct sockaddr_in addr;
    char ip[INET_ADDRSTRLEN]; /* addr, for iol_tls_connect */
    char host[256];           /* the URL's host: SNI and the name verified */
    uint16_t port;
    iol_tls_ctx *tls;         /* https:// only */
    atomic_bool tls_failure_told; /* the first handshake failure is printed, once */
    char *request;
    size_t request_len;
    double deadline;           /* loop time (CLOCK_MONOTONIC seconds) */
    uint64_t deadline_ns;
    struct worker *workers;
    iol_runtime *rt;
    atomic_uint finished;      /* workers whose window closed */
};

struct worker {
    struct load *ld;
    iol_loop *loop;
    struct conn *conns;
    unsigned nconns;
    bool stopping;
    iol_timeout sweep;
    iol_timeout stop_timer;
    uint64_t requests;
    uint64_t connections;
    uint64_t errors[HTTP_ERR_KINDS];
    /* Read once a second by the main thread for the progress line; one
     * writer, so a relaxed store of the plain counter is enough. */
    _Atomic uint64_t progress;
    histogram hist;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void conn_open(struct conn *c);
static void on_conn_io(int fd, unsigned events, void *arg);
static void tls_conn_open(struct conn *c);
static void tls_send(struct conn *c);
static void tls_read_more(struct conn *c);

static void conn_close(struct conn *c, bool reset)
{
    /* An abortive close leaves no TIME_WAIT behind on our side, which
     * churn would otherwise fill the ephemeral port range with. */
    struct linger lg = { .l_onoff = 1, .l_linger = 0 };
    if (c->s) {
        if (reset)
            setsockopt(iol_stream_fd(c->s), SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        /* Its pending read fails later with c->s no longer it: ignored. */
        (void)iol_stream_close(c->s); /* -EALREADY when it closed itself */
        c->s = NULL;
        c->state = C_IDLE;
        return;
    }
    if (c->fd < 0)
        return;
    iol_loop_remove_handler(c->w->loop, c->fd);
    if (reset)
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(c->fd);
    c->fd = -1;
    c->state = C_IDLE;
    c->events = 0;
}

static void on_retry(void *arg)
{
    struct conn *c = arg;
    c->retry = 0;
    conn_open(c);
}

static void conn_fail(struct conn *c, int kind)
{
    struct worker *w = c->w;
    w->errors[kind]++;
    conn_close(c, kind != HTTP_ERR_RESET);
    if (w->stopping)
        return;
    if (kind == HTTP_ERR_REFUSED || kind == HTTP_ERR_OTHER)
        iol_loop_call_later(w->loop, RETRY_DELAY_S, on_retry, c, &c->retry);
    else
        conn_open(c);
}

static int error_kind(int err)
{
    switch (err) {
    case ECONNREFUSED:
        return HTTP_ERR_REFUSED;
    case ECONNRESET:
    case EPIPE:
        return HTTP_ERR_RESET;
    case ETIMEDOUT:
        return HTTP_ERR_TIMEOUT;
    /* TLS: IOL_ETLS_* (verification), EPROTO (not TLS, no common
     * cipher...) are "other", with the first one printed. */
    default:
        return HTTP_ERR_OTHER;
    }
}

static void conn_set_events(struct conn *c, unsigned events)
{
    if (c->s) {
        if (events & IOL_READ)
            tls_read_more(c);
        return;
    }
    if (c->events == events)
        return;
    iol_loop_update_handler(c->w->loop, c->fd, events);
    c->events = events;
}

static void conn_send(struct conn *c)
{
    const struct load *ld = c->w->ld;
    if (c->s) {
        tls_send(c);
        return;
    }
    while (c->sent < ld->request_len) {
        ssize_t n = send(c->fd, ld->request + c->sent, ld->request_len - c->sent, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                c->state = C_WRITING;
                conn_set_events(c, IOL_WRITE);
                return;
            }
            if (errno == EINTR)
                continue;
            conn_fail(c, error_kind(errno));
            return;
        }
        c->sent += (size_t)n;
    }
    c->state = C_READING;
    conn_set_events(c, IOL_READ);
}

static void request_start(struct conn *c, uint64_t start)
{
    c->start_ns = start;
    c->sent = 0;
    c->outstanding = c->w->ld->cfg.pipeline > 1 ? c->w->ld->cfg.pipeline : 1;
    c->ps = P_HEADERS;
    c->status = 0;
    c->server_closes = false;
    c->remaining = 0;
    conn_send(c);
}

static void conn_open(struct conn *c)
{
    struct worker *w = c->w;
    if (w->stopping)
        return;
    if (w->ld->tls) {
        tls_conn_open(c);
        return;
    }
    uint64_t start = now_ns();
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        w->errors[HTTP_ERR_OTHER]++;
        iol_loop_call_later(w->loop, RETRY_DELAY_S, on_retry, c, &c->retry);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    c->len = 0;
    c->start_ns = start;
    int rc = connect(fd, (const struct sockaddr *)&w->ld->addr, sizeof w->ld->addr);
    if (rc < 0 && errno != EINPROGRESS) {
        int kind = error_kind(errno);
        close(fd);
        c->fd = -1;
        w->errors[kind]++;
        iol_loop_call_later(w->loop, RETRY_DELAY_S, on_retry, c, &c->retry);
        return;
    }
    c->state = C_CONNECTING;
    c->events = IOL_WRITE;
    if (iol_loop_add_handler(w->loop, fd, IOL_WRITE, on_conn_io, c) < 0) {
        close(fd);
        c->fd = -1;
        c->state = C_IDLE;
        w->errors[HTTP_ERR_OTHER]++;
        iol_loop_call_later(w->loop, RETRY_DELAY_S, on_retry, c, &c->retry);
    }
}

/* Case-insensitive "name:" match at the start of a header line. */
static const char *header_value(const char *line, const char *end, const char *name)
{
    size_t n = strlen(name);
    if ((size_t)(end - line) <= n || strncasecmp(line, name, n) != 0 || line[n] != ':')
        return NULL;
    const char *v = line + n + 1;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    return v;
}

static bool value_has_token(const char *v, const char *end, const char *token)
{
    size_t n = strlen(token);
    for (; v + n <= end; v++)
        if (strncasecmp(v, token, n) == 0)
            return true;
    return false;
}

/* Parses the status line and headers in buf[0..hdr_len) and chooses how the
 * body ends. */
static enum parse_result parse_headers(struct conn *c, size_t hdr_len)
{
    const char *p = c->buf, *end = c->buf + hdr_len;
    if (hdr_len < 12 || strncmp(p, "HTTP/1.", 7) != 0 || !isdigit((unsigned char)p[9]))
        return PARSE_ERROR;
    c->status = atoi(p + 9);
    bool have_length = false, chunked = false;
    uint64_t length = 0;
    const char *line = memchr(p, '\n', hdr_len);
    while (line && ++line < end) {
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        if (!eol)
            break;
        const char *v;
        if ((v = header_value(line, eol, "Content-Length"))) {
            have_length = true;
            length = strtoull(v, NULL, 10);
        } else if ((v = header_value(line, eol, "Transfer-Encoding"))) {
            chunked = value_has_token(v, eol, "chunked");
        } else if ((v = header_value(line, eol, "Connection"))) {
            c->server_closes = value_has_token(v, eol, "close");
        }
        line = eol;
    }
    if (c->status == 204 || c->status == 304 || (c->status >= 100 && c->status < 200)) {
        c->ps = P_DONE;
    } else if (chunked) {
        c->ps = P_CHUNK_SIZE;
    } else if (have_length) {
        c->remaining = length;
        c->ps = length ? P_BODY_LENGTH : P_DONE;
    } else {
        c->ps = P_UNTIL_CLOSE;
        c->server_closes = true;
    }
    return PARSE_MORE;
}

static void consume(struct conn *c, size_t n)
{
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

/* Advances the reply parser over buf; bodies are skipped as they arrive. */
static enum parse_result parse(struct conn *c)
{
    for (;;) {
        switch (c->ps) {
        case P_HEADERS: {
            char *eoh = memmem(c->buf, c->len, "\r\n\r\n", 4);
            if (!eoh)
                return c->len == sizeof c->buf ? PARSE_ERROR : PARSE_MORE;
            size_t hdr_len = (size_t)(eoh - c->buf) + 4;
            if (parse_headers(c, hdr_len) == PARSE_ERROR)
                return PARSE_ERROR;
            consume(c, hdr_len);
            break;
        }
        case P_BODY_LENGTH:
        case P_CHUNK_DATA: {
            size_t n = c->len < c->remaining ? c->len : (size_t)c->remaining;
            consume(c, n);
            c->remaining -= n;
            if (c->remaining)
                return PARSE_MORE;
            c->ps = c->ps == P_BODY_LENGTH ? P_DONE : P_CHUNK_SIZE;
            break;
        }
        case P_CHUNK_SIZE: {
            char *eol = memmem(c->buf, c->len, "\r\n", 2);
            if (!eol)
                return c->len == sizeof c->buf ? PARSE_ERROR : PARSE_MORE;
            char *hex_end;
            uint64_t size = strtoull(c->buf, &hex_end, 16);
            if (hex_end == c->buf)
                return PARSE_ERROR;
            consume(c, (size_t)(eol - c->buf) + 2);
            if (size == 0) {
                c->ps = P_CHUNK_TRAILER;
            } else {
                c->remaining = size + 2; /* the data and its CRLF */
                c->ps = P_CHUNK_DATA;
            }
            break;
        }
        case P_CHUNK_TRAILER: {
            char *eol = memmem(c->buf, c->len, "\r\n", 2);
            if (!eol)
                return c->len == sizeof c->buf ? PARSE_ERROR : PARSE_MORE;
            bool last = eol == c->buf;
            consume(c, (size_t)(eol - c->buf) + 2);
            if (last)
                c->ps = P_DONE;
            break;
        }
        case P_UNTIL_CLOSE:
            c->len = 0;
            return PARSE_MORE;
        case P_DONE:
            return PARSE_DONE;
        }
    }
}

static void request_done(struct conn *c)
{
    struct worker *w = c->w;
    uint64_t end = now_ns();
    if (end > w->ld->deadline_ns) /* outside the window: not counted */
        return;
    histogram_record(&w->hist, end - c->start_ns);
    w->requests++;
    atomic_store_explicit(&w->progress, w->requests, memory_order_relaxed);
    if (c->status < 200 || c->status > 299)
        w->errors[HTTP_ERR_BAD_STATUS]++;
}

static void reply_complete(struct conn *c, bool eof)
{
    struct worker *w = c->w;
    request_done(c);
    if (!w->ld->cfg.churn && !c->server_closes && !eof) {
        request_start(c, now_ns());
        return;
    }
    if (w->ld->cfg.churn)
        w->connections++;
    if (c->server_closes && !eof) {
        /* Let the server close first, so TIME_WAIT lands on its side. */
        c->state = C_DRAINING;
        c->len = 0;
        conn_set_events(c, IOL_READ);
        return;
    }
    conn_close(c, !eof);
    conn_open(c);
}

/* n new bytes sit at the end of buf: true once the reply ended (or the
 * connection failed) and the connection moved on. */
static bool conn_take(struct conn *c, size_t n)
{
    if (c->state == C_DRAINING) { /* bytes after the reply: ignore */
        c->len = 0;
        return false;
    }
    c->len += n;
    enum parse_result r = parse(c);
    /* --pipeline: the replies of one write arrive back to back; each one
     * counts (its latency from the write), the next write goes once the
     * last one is in. */
    while (r == PARSE_DONE && c->outstanding > 1 && !c->server_closes) {
        c->outstanding--;
        request_done(c);
        c->ps = P_HEADERS;
        c->status = 0;
        c->remaining = 0;
        r = parse(c);
    }
    if (r == PARSE_DONE) {
        reply_complete(c, false);
        return true;
    }
    if (r == PARSE_ERROR) {
        conn_fail(c, HTTP_ERR_OTHER);
        return true;
    }
    return false;
}

/* The server closed: the end of a drain, of a reply without a length, or
 * a reset in the middle of one. */
static void conn_eof(struct conn *c)
{
    if (c->state == C_DRAINING) {
        conn_close(c, false);
        conn_open(c);
    } else if (c->ps == P_UNTIL_CLOSE) {
        reply_complete(c, true);
    } else {
        conn_fail(c, HTTP_ERR_RESET);
    }
}

static void conn_read(struct conn *c)
{
    for (;;) {
        size_t space = sizeof c->buf - c->len;
        ssize_t n = recv(c->fd, c->buf + c->len, space, 0);
        if (n > 0) {
            if (conn_take(c, (size_t)n))
                return;
            /* A short read emptied the socket: wait for the next event
             * rather than pay a recv that says EAGAIN. The parser left
             * room (bodies are consumed, full headers are an error). */
            if ((size_t)n < space)
                return;
            continue;
        }
        if (n == 0) {
            conn_eof(c);
            return;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            conn_fail(c, error_kind(errno));
        return;
    }
}

static void on_conn_io(int fd, unsigned events, void *arg)
{
    (void)fd;
    struct conn *c = arg;
    switch (c->state) {
    case C_CONNECTING: {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err) {
            conn_fail(c, error_kind(err));
            return;
        }
        if (!(events & IOL_WRITE))
            return;
        request_start(c, c->w->ld->cfg.churn ? c->start_ns : now_ns());
        break;
    }
    case C_WRITING:
        conn_send(c);
        break;
    case C_READING:
    case C_DRAINING:
        conn_read(c);
        break;
    case C_IDLE:
        break;
    }
}

/* ---------------------------------------------------------------- TLS */

static void tls_tell_failure(struct conn *c, int err)
{
    struct load *ld = c->w->ld;
    if (ld->cfg.quiet || atomic_exchange_explicit(&ld->tls_failure_told, true, memory_order_relaxed))
        return;
    bool own_check = err >= IOL_ETLS_VERIFY && err <= IOL_ETLS_NOT_YET_VALID; /* we rejected the server's */
    fprintf(stderr, "iol-bench http: TLS handshake with %s failed: %s%s\n", ld->host, iol_strerror(err),
            own_check ? " (--ca FILE or --insecure)" : "");
}

static void tls_on_read(iol_stream *s, const char *data, size_t len, int status, void *arg)
{
    struct conn *c = arg;
    if (s != c->s) /* a closed connection's read, failing late */
        return;
    if (len > 0) {
        memcpy(c->buf + c->len, data, len); /* at most the room asked for */
        if (conn_take(c, len))
            return;
    }
    if (status < 0) {
        conn_eof(c); /* closed: close_notify, FIN or reset alike */
        return;
    }
    tls_read_more(c);
}

static void tls_read_more(struct conn *c)
{
    int r = iol_stream_read_bytes(c->s, sizeof c->buf - c->len, true, tls_on_read, c);
    if (r < 0 && r != -EBUSY) /* EBUSY: the read is already waiting */
        conn_fail(c, error_kind(-r));
}

static void tls_send(struct conn *c)
{
    const struct load *ld = c->w->ld;
    int r = iol_stream_write(c->s, ld->request, ld->request_len, NULL, NULL);
    if (r < 0) {
        conn_fail(c, error_kind(-r));
        return;
    }
    c->state = C_READING;
    tls_read_more(c);
}

static void tls_on_connected(iol_stream *s, int status, void *arg)
{
    struct conn *c = arg;
    if (s != c->s)
        return;
    if (status < 0) {
        c->s = NULL; /* the stream closes itself after this callback */
        c->state = C_IDLE;
        if (status != -ECONNREFUSED && status != -ETIMEDOUT)
            tls_tell_failure(c, status);
        conn_fail(c, error_kind(-status));
        return;
    }
    request_start(c, c->w->ld->cfg.churn ? c->start_ns : now_ns());
}

static void tls_conn_open(struct conn *c)
{
    struct worker *w = c->w;
    struct load *ld = w->ld;
    c->start_ns = now_ns();
    c->len = 0;
    c->s = NULL;
    c->state = C_CONNECTING;
    int r = iol_tls_connect(&c->s, w->loop, ld->ip, ld->port, NULL, ld->tls, ld->host, tls_on_connected, c);
    if (r < 0) {
        c->s = NULL;
        c->state = C_IDLE;
        w->errors[HTTP_ERR_OTHER]++;
        iol_loop_call_later(w->loop, RETRY_DELAY_S, on_retry, c, &c->retry);
        return;
    }
    /* TCP_NODELAY, as the plain connections (the request is one write). */
    int one = 1;
    setsockopt(iol_stream_fd(c->s), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static void worker_close_all(struct worker *w)
{
    w->stopping = true;
    for (unsigned i = 0; i < w->nconns; i++) {
        struct conn *c = &w->conns[i];
        if (c->retry) {
            iol_loop_remove_timeout(w->loop, c->retry);
            c->retry = 0;
        }
        conn_close(c, true);
    }
    if (w->sweep) {
        iol_loop_remove_timeout(w->loop, w->sweep);
        w->sweep = 0;
    }
    if (w->stop_timer) {
        iol_loop_remove_timeout(w->loop, w->stop_timer);
        w->stop_timer = 0;
    }
}

/* Stuck requests are found by a sweep rather than a timer per request:
 * arming and cancelling a timeout per request would cost more than the
 * request itself. */
static void on_sweep(void *arg)
{
    struct worker *w = arg;
    uint64_t now = now_ns();
    uint64_t limit = (uint64_t)(w->ld->cfg.timeout * 1e9);
    for (unsigned i = 0; i < w->nconns; i++) {
        struct conn *c = &w->conns[i];
        if (c->state == C_IDLE || now - c->start_ns < limit)
            continue;
        if (c->state == C_DRAINING) { /* the reply counted; the server kept it open */
            conn_close(c, true);
            conn_open(c);
        } else {
            conn_fail(c, HTTP_ERR_TIMEOUT);
        }
    }
    iol_loop_call_later(w->loop, SWEEP_PERIOD_S, on_sweep, w, &w->sweep);
}

static void on_window_closed(void *arg)
{
    struct worker *w = arg;
    w->stop_timer = 0;
    worker_close_all(w);
    atomic_fetch_add_explicit(&w->ld->finished, 1, memory_order_release);
}

static void worker_begin(void *arg)
{
    struct load *ld = arg;
    int index = iol_runtime_worker_index();
    if (index < 0)
        return;
    struct worker *w = &ld->workers[index];
    w->loop = iol_loop_current();
    iol_loop_call_at(w->loop, ld->deadline, on_window_closed, w, &w->stop_timer);
    iol_loop_call_later(w->loop, SWEEP_PERIOD_S, on_sweep, w, &w->sweep);
    for (unsigned i = 0; i < w->nconns; i++)
        conn_open(&w->conns[i]);
}

/* Safety net when the runtime stops early: the worker closes its loop with
 * all fds, so our sockets must be gone from it first. */
static void worker_on_stop(iol_loop *loop, unsigned index, void *arg)
{
    (void)loop;
    struct load *ld = arg;
    if (ld->workers[index].loop)
        worker_close_all(&ld->workers[index]);
}

int http_parse_url(const char *url, char *host, size_t host_size, uint16_t *port, char *path, size_t path_size,
                   bool *tls)
{
    const char *h;
    if (strncmp(url, "http://", 7) == 0) {
        h = url + 7;
        *tls = false;
    } else if (strncmp(url, "https://", 8) == 0) {
        h = url + 8;
        *tls = true;
    } else {
        return -EINVAL;
    }
    const char *slash = strchr(h, '/');
    const char *hend = slash ? slash : h + strlen(h);
    const char *colon = memchr(h, ':', (size_t)(hend - h));
    const char *name_end = colon ? colon : hend;
    if (name_end == h || (size_t)(name_end - h) >= host_size)
        return -EINVAL;
    memcpy(host, h, (size_t)(name_end - h));
    host[name_end - h] = '\0';
    *port = *tls ? 443 : 80;
    if (colon) {
        char *e;
        long p = strtol(colon + 1, &e, 10);
        if (e != hend || p <= 0 || p > 65535)
            return -EINVAL;
        *port = (uint16_t)p;
    }
    int n = snprintf(path, path_size, "%s", slash ? slash : "/");
    if (n < 0 || (size_t)n >= path_size)
        return -EINVAL;
    return 0;
}

static int load_prepare(struct load *ld, const http_load_config *cfg)
{
    char *host = ld->host, path[2048];
    uint16_t port;
    bool tls;
    if (http_parse_url(cfg->url, host, sizeof ld->host, &port, path, sizeof path, &tls) < 0)
        return -EINVAL;
    struct addrinfo hints = { .ai_family = AF_INET, .ai_socktype = SOCK_STREAM }, *res;
    char port_text[8];
    snprintf(port_text, sizeof port_text, "%u", port);
    if (getaddrinfo(host, port_text, &hints, &res) != 0)
        return -EHOSTUNREACH;
    memcpy(&ld->addr, res->ai_addr, sizeof ld->addr);
    freeaddrinfo(res);
    /* Connections go to the address found once, not to a lookup each. */
    inet_ntop(AF_INET, &ld->addr.sin_addr, ld->ip, sizeof ld->ip);
    ld->port = port;
    if (tls) {
        iol_tls_config tc = { .insecure_no_verify = cfg->tls_insecure, .ca_file = cfg->tls_ca,
                              .no_resumption = cfg->tls_no_resumption };
        int r = iol_tls_ctx_new(&ld->tls, &tc);
        if (r < 0)
            return r;
    }

    size_t cap = strlen(path) + strlen(host) + 128;
    ld->request = malloc(cap);
    if (!ld->request)
        return -ENOMEM;
    int n = snprintf(ld->request, cap, "GET %s HTTP/1.1\r\nHost: %s:%u\r\n%s\r\n", path, host, port,
                     cfg->churn ? "Connection: close\r\n" : "");
    ld->request_len = (size_t)n;
    if (cfg->pipeline > 1 && !cfg->churn) {
        /* --pipeline N: N copies, sent with one write. */
        char *all = malloc(ld->request_len * cfg->pipeline);
        if (!all)
            return -ENOMEM;
        for (unsigned i = 0; i < cfg->pipeline; i++)
            memcpy(all + i * ld->request_len, ld->request, ld->request_len);
        free(ld->request);
        ld->request = all;
        ld->request_len *= cfg->pipeline;
    }
    return 0;
}

/* The framework's progress line (a terminal only): rate over the last second. */
static void print_progress(const struct load *ld, double elapsed, uint64_t delta, double dt)
{
    if (ld->cfg.quiet)
        return;
    char what[64];
    snprintf(what, sizeof what, "%s %s", ld->cfg.label ? ld->cfg.label : "http", ld->cfg.churn ? "churn" : "keep-alive");
    bench_progress(what, elapsed, (double)delta / dt, ld->cfg.churn ? "conn/s" : "req/s");
}

static void sleep_until_ns(uint64_t t)
{
    struct timespec ts = { .tv_sec = (time_t)(t / 1000000000ull), .tv_nsec = (long)(t % 1000000000ull) };
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

static uint64_t progress_total(const struct load *ld)
{
    uint64_t total = 0;
    for (unsigned i = 0; i < ld->cfg.workers; i++)
        total += atomic_load_explicit(&ld->workers[i].progress, memory_order_relaxed);
    return total;
}

/* Thousands of connections need more fds than the usual soft limit of
 * 1024; the hard limit is ours to take. */
static void raise_fd_limit(unsigned connections)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)connections + 64 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int http_load_run(const http_load_config *cfg, http_load_result *out)
{
    if (!cfg || !out || !cfg->url || cfg->workers == 0 || cfg->connections == 0 || !(cfg->duration > 0))
        return -EINVAL;
    raise_fd_limit(cfg->connections);
    struct load *ld = calloc(1, sizeof *ld);
    if (!ld)
        return -ENOMEM;
    ld->cfg = *cfg;
    if (!(ld->cfg.timeout > 0))
        ld->cfg.timeout = 2.0; /* wrk's default */
    if (ld->cfg.workers > ld->cfg.connections)
        ld->cfg.workers = ld->cfg.connections;
    int rc = load_prepare(ld, cfg);
    if (rc < 0)
        goto out;
    unsigned nw = ld->cfg.workers;
    ld->workers = calloc(nw, sizeof *ld->workers);
    struct conn *conns = calloc(ld->cfg.connections, sizeof *conns);
    if (!ld->workers || !conns) {
        free(conns);
        rc = -ENOMEM;
        goto out;
    }
    unsigned next = 0;
    for (unsigned i = 0; i < nw; i++) {
        struct worker *w = &ld->workers[i];
        w->ld = ld;
        w->conns = conns + next;
        w->nconns = ld->cfg.connections / nw + (i < ld->cfg.connections % nw);
        next += w->nconns;
        histogram_init(&w->hist);
        for (unsigned k = 0; k < w->nconns; k++) {
            w->conns[k].w = w;
            w->conns[k].fd = -1;
        }
    }
    iol_runtime_config rcfg = { .workers = nw, .on_stop = worker_on_stop, .arg = ld };
    rc = iol_runtime_new(&ld->rt, &rcfg);
    if (rc < 0)
        goto out_conns;
    rc = iol_runtime_start(ld->rt);
    if (rc < 0)
        goto out_rt;

    uint64_t t0 = now_ns();
    ld->deadline_ns = t0 + (uint64_t)(cfg->duration * 1e9);
    ld->deadline = (double)ld->deadline_ns * 1e-9;
    rc = iol_runtime_broadcast(ld->rt, worker_begin, ld);
    if (rc < 0)
        goto out_rt;

    /* Progress once a second until the deadline, then short naps until
     * every worker closed its window; the grace period covers a worker
     * that is late to see its timer. */
    uint64_t last = 0, last_t = t0, next_tick = t0 + 1000000000ull;
    while (atomic_load_explicit(&ld->finished, memory_order_acquire) < nw) {
        uint64_t now = now_ns();
        if (now > ld->deadline_ns + 5000000000ull)
            break;
        bool tick = next_tick < ld->deadline_ns;
        uint64_t wake = tick ? next_tick : (now > ld->deadline_ns ? now : ld->deadline_ns) + 10000000ull;
        sleep_until_ns(wake);
        if (tick) {
            uint64_t total = progress_total(ld), t = now_ns();
            print_progress(ld, (double)(t - t0) * 1e-9, total - last, (double)(t - last_t) * 1e-9);
            last = total;
            last_t = t;
            next_tick += 1000000000ull;
        }
    }
    if (!ld->cfg.quiet)
        bench_progress_done();
    iol_runtime_stop(ld->rt);
    iol_runtime_join(ld->rt);

    memset(out, 0, sizeof *out);
    histogram_init(&out->latency);
    out->seconds = cfg->duration;
    for (unsigned i = 0; i < nw; i++) {
        struct worker *w = &ld->workers[i];
        out->requests += w->requests;
        out->connections += w->connections;
        for (int k = 0; k < HTTP_ERR_KINDS; k++)
            out->errors[k] += w->errors[k];
        histogram_merge(&out->latency, &w->hist);
    }
    out->requests_per_sec = (double)out->requests / out->seconds;
    out->connections_per_sec = (double)out->connections / out->seconds;
    rc = 0;
out_rt:
    iol_runtime_free(ld->rt);
out_conns:
    free(conns);
out:
    free(ld->workers);
    free(ld->request);
    iol_tls_ctx_unref(ld->tls); /* the streams went with the runtime */
    free(ld);
    return rc;
}

/* ---------------------------------------------------------------- report */

static const double reported_percentiles[] = { 50, 90, 99, 99.9 };
static const char *const percentile_names[] = { "p50", "p90", "p99", "p999" };
#define NPCT (sizeof reported_percentiles / sizeof reported_percentiles[0])

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

void http_stats(const double *v, unsigned n, double *min, double *median, double *max)
{
    /* NaN is "not measured" (a run without replies, wrk's p99.9): left
     * out, as the framework's report leaves it out. */
    double s[BENCH_MAX_REPEAT];
    unsigned k = 0;
    for (unsigned i = 0; i < n && k < BENCH_MAX_REPEAT; i++)
        if (!isnan(v[i]))
            s[k++] = v[i];
    n = k;
    if (n == 0) {
        *min = *median = *max = NAN;
        return;
    }
    qsort(s, n, sizeof *s, cmp_double);
    *min = s[0];
    *max = s[n - 1];
    *median = n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

double http_latency_us(const http_load_result *r, unsigned which)
{
    if (r->external_latency)
        return r->latency_us[which];
    if (histogram_count(&r->latency) == 0) /* nothing measured: null, not 0 */
        return NAN;
    return (double)histogram_percentile(&r->latency, reported_percentiles[which]) / 1000.0;
}

static void json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

/* s as the inside of a JSON string, cut to fit. */
void json_escape(char *dst, size_t size, const char *s)
{
    size_t n = 0;
    for (; *s && n + 7 < size; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            dst[n++] = '\\';
            dst[n++] = (char)ch;
        } else if (ch < 0x20) {
            n += (size_t)snprintf(dst + n, size - n, "\\u%04x", ch);
        } else {
            dst[n++] = (char)ch;
        }
    }
    dst[n] = '\0';
}

/* Numbers as JSON: NaN/inf have no JSON spelling, they become null. */
static void json_number(FILE *f, double v)
{
    if (isfinite(v))
        fprintf(f, "%.6g", v);
    else
        fputs("null", f);
}

static void json_figure(FILE *f, const char *name, const double *v, unsigned n)
{
    double min, med, max;
    http_stats(v, n, &min, &med, &max);
    fprintf(f, "\"%s\":", name);
    json_number(f, med);
    fprintf(f, ",\"%s_min\":", name);
    json_number(f, min);
    fprintf(f, ",\"%s_max\":", name);
    json_number(f, max);
}

void http_json_line(FILE *f, const char *impl, const char *label, const char *params_json,
                    const http_load_result *runs, unsigned n, bool churn, const char *extra_results)
{
    bench_machine m;
    bench_machine_read(&m);
    double v[BENCH_MAX_REPEAT] = { 0 };
    if (n > BENCH_MAX_REPEAT)
        n = BENCH_MAX_REPEAT;

    /* The same members, in the same order, as the framework's report. */
    fputs("{\"bench\":\"http\",\"impl\":", f);
    json_string(f, impl);
    fputs(",\"label\":", f);
    json_string(f, label);
    fprintf(f, ",\"params\":%s,\"machine\":{\"cpu\":", params_json);
    json_string(f, m.cpu);
    fprintf(f, ",\"cpus\":%d,\"kernel\":", m.cpus);
    json_string(f, m.kernel);
    fputs("},\"tool_version\":", f);
    json_string(f, "iol-bench " IOL_BENCH_VERSION);
    fputs(",\"results\":{", f);
    for (unsigned i = 0; i < n; i++)
        v[i] = runs[i].requests_per_sec;
    json_figure(f, "requests_per_sec", v, n);
    if (churn) {
        for (unsigned i = 0; i < n; i++)
            v[i] = runs[i].connections_per_sec;
        fputc(',', f);
        json_figure(f, "connections_per_sec", v, n);
    }
    /* latency_us and its _min/_max siblings are objects of percentiles,
     * each the median (min, max) of that percentile over the repeats. */
    static const char *const suffix[] = { "", "_min", "_max" };
    for (int s = 0; s < 3; s++) {
        fprintf(f, ",\"latency_us%s\":{", suffix[s]);
        for (unsigned p = 0; p < NPCT; p++) {
            double st[3];
            for (unsigned i = 0; i < n; i++)
                v[i] = http_latency_us(&runs[i], p);
            http_stats(v, n, &st[1], &st[0], &st[2]);
            fprintf(f, "%s\"%s\":", p ? "," : "", percentile_names[p]);
            json_number(f, st[s]);
        }
        fputc('}', f);
    }
    /* Errors are counts, so they add up over the repeats. */
    fputs(",\"errors\":{", f);
    uint64_t requests = 0;
    for (int k = 0; k < HTTP_ERR_KINDS; k++) {
        uint64_t total = 0;
        for (unsigned i = 0; i < n; i++)
            total += runs[i].errors[k];
        fprintf(f, "%s\"%s\":%llu", k ? "," : "", http_error_names[k], (unsigned long long)total);
    }
    for (unsigned i = 0; i < n; i++)
        requests += runs[i].requests;
    fprintf(f, "},\"requests\":%llu", (unsigned long long)requests);
    if (extra_results && *extra_results)
        fprintf(f, ",%s", extra_results);
    fprintf(f, "},\"repeats\":%u}\n", n);
    fflush(f);
}

/* One table block: the figures of one impl with min / median / max. */
void http_table(FILE *f, const char *title, const http_load_result *runs, unsigned n, bool churn)
{
    double v[BENCH_MAX_REPEAT] = { 0 }, min, med, max;
    if (n > BENCH_MAX_REPEAT)
        n = BENCH_MAX_REPEAT;
    fprintf(f, "%s\n  %-16s %12s %12s %12s\n", title, "", "min", "median", "max");
    for (unsigned i = 0; i < n; i++)
        v[i] = runs[i].requests_per_sec;
    http_stats(v, n, &min, &med, &max);
    fprintf(f, "  %-16s %12.0f %12.0f %12.0f\n", "requests/s", min, med, max);
    if (churn) {
        for (unsigned i = 0; i < n; i++)
            v[i] = runs[i].connections_per_sec;
        http_stats(v, n, &min, &med, &max);
        fprintf(f, "  %-16s %12.0f %12.0f %12.0f\n", "connections/s", min, med, max);
    }
    for (unsigned p = 0; p < NPCT; p++) {
        char label[32];
        snprintf(label, sizeof label, "latency %s us", percentile_names[p]);
        for (unsigned i = 0; i < n; i++)
            v[i] = http_latency_us(&runs[i], p);
        http_stats(v, n, &min, &med, &max);
        if (isnan(med))
            fprintf(f, "  %-16s %12s %12s %12s\n", label, "-", "-", "-");
        else
            fprintf(f, "  %-16s %12.1f %12.1f %12.1f\n", label, min, med, max);
    }
    fputs("  errors          ", f);
    for (int k = 0; k < HTTP_ERR_KINDS; k++) {
        uint64_t total = 0;
        for (unsigned i = 0; i < n; i++)
            total += runs[i].errors[k];
        fprintf(f, " %s=%llu", http_error_names[k], (unsigned long long)total);
    }
    fputc('\n', f);
}

/* Fills a framework report (for bench_plot) with one impl's repeats: the
 * rate, then the latency percentiles, in the order of http_plot_figs. */
const bench_fig_spec http_plot_figs[HTTP_PLOT_FIGS] = {
    { "requests_per_sec", "requests/s", true, false },
    { "latency_p50_us", "p50 latency (us)", true, true },
    { "latency_p90_us", "p90 latency (us)", true, true },
    { "latency_p99_us", "p99 latency (us)", true, true },
    { "latency_p999_us", "p99.9 latency (us)", true, true },
};

void http_report_add(bench_report *r, const char *impl, const char *label, const http_load_result *runs, unsigned n)
{
    int row = bench_report_impl(r, impl, label);
    for (unsigned i = 0; i < n; i++) {
        bench_report_add(r, row, 0, runs[i].requests_per_sec);
        for (unsigned p = 0; p < NPCT; p++)
            bench_report_add(r, row, 1 + (int)p, http_latency_us(&runs[i], p));
    }
}

/* ---------------------------------------------------------------- CLI */

static void http_usage(FILE *f)
{
    fputs("usage: iol-bench http [--connections C] [--workers N] [--duration S] [--churn | --pipeline N]\n"
          "                      [--timeout S] [--repeat R] [--json] [--plot F.svg]\n"
          "                      [--insecure | --ca FILE] [--tls-no-resumption] URL\n"
          "  URL is http://host[:port]/path or https://... (IPv4 or a host name).\n"
          "  Keep-alive: one request in flight per connection, requests/s.\n"
          "  --churn: one request per connection (Connection: close), connections/s;\n"
          "           latency then includes the connect (and the TLS handshake).\n"
          "  --pipeline N: keep-alive, N requests per write (at most 64), the next\n"
          "           write once all N replies are in; each reply counts.\n"
          "  https:// loads through ioloop's own TLS client streams, verifying the\n"
          "  server's certificate against the system's trust store and the URL's host:\n"
          "  --insecure (-k): verify nothing (self-signed test certificates).\n"
          "  --ca FILE: trust the CA certificates in FILE (PEM) instead.\n"
          "  --tls-no-resumption: never resume a session, so with --churn every\n"
          "           connection is a full handshake (the default resumes).\n",
          f);
    bench_usage_common(f);
}

static int parse_uint(const char *s, unsigned *out)
{
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    if (!*s || *end || v == 0 || v > 1000000)
        return -1;
    *out = (unsigned)v;
    return 0;
}

int bench_http(int argc, char **argv, const bench_opts *o)
{
    http_load_config cfg = { .connections = 64, .duration = o->duration > 0 ? o->duration : 5 };
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    cfg.workers = o->workers > 0 ? (unsigned)o->workers : (ncpu > 0 ? (unsigned)ncpu : 1);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            http_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--connections") && i + 1 < argc) {
            if (parse_uint(argv[++i], &cfg.connections) < 0)
                goto bad;
        } else if (!strcmp(a, "--churn")) {
            cfg.churn = true;
        } else if (!strcmp(a, "--pipeline") && i + 1 < argc) {
            if (parse_uint(argv[++i], &cfg.pipeline) < 0 || cfg.pipeline > HTTP_MAX_PIPELINE)
                goto bad;
        } else if (!strcmp(a, "--timeout") && i + 1 < argc) {
            cfg.timeout = atof(argv[++i]);
            if (!(cfg.timeout > 0))
                goto bad;
        } else if (!strcmp(a, "--insecure") || !strcmp(a, "-k")) {
            cfg.tls_insecure = true;
        } else if (!strcmp(a, "--ca") && i + 1 < argc) {
            cfg.tls_ca = argv[++i];
        } else if (!strcmp(a, "--tls-no-resumption")) {
            cfg.tls_no_resumption = true;
        } else if ((!strncmp(a, "http://", 7) || !strncmp(a, "https://", 8)) && !cfg.url) {
            cfg.url = a;
        } else {
            fprintf(stderr, "iol-bench http: unexpected argument '%s'\n", a);
            goto bad;
        }
    }
    if (!cfg.url) {
        fputs("iol-bench http: a URL is required\n", stderr);
        goto bad;
    }
    if (cfg.churn && cfg.pipeline > 1) {
        fputs("iol-bench http: --pipeline is for keep-alive, not --churn\n", stderr);
        goto bad;
    }
    char host[256], path[2048];
    uint16_t port;
    bool tls;
    if (http_parse_url(cfg.url, host, sizeof host, &port, path, sizeof path, &tls) < 0) {
        fprintf(stderr, "iol-bench http: bad URL '%s' (want http[s]://host[:port]/path)\n", cfg.url);
        return 2;
    }
    if (!tls && (cfg.tls_insecure || cfg.tls_ca || cfg.tls_no_resumption)) {
        fputs("iol-bench http: --insecure, --ca and --tls-no-resumption need an https:// URL\n", stderr);
        goto bad;
    }
    if (cfg.tls_insecure && cfg.tls_ca) {
        fputs("iol-bench http: --insecure verifies nothing, --ca verifies with FILE: pick one\n", stderr);
        goto bad;
    }
    unsigned repeat = o->repeat > 0 ? (unsigned)o->repeat : 1;
    if (repeat > BENCH_MAX_REPEAT)
        repeat = BENCH_MAX_REPEAT;
    http_load_result *runs = calloc(repeat, sizeof *runs);
    if (!runs)
        return 1;
    int rc = 0;
    for (unsigned i = 0; i < repeat; i++) {
        rc = http_load_run(&cfg, &runs[i]);
        if (rc < 0) {
            fprintf(stderr, "iol-bench http: %s: %s%s%s\n", cfg.url,
                    iol_strerror(rc), cfg.tls_ca ? " (--ca " : "",
                    cfg.tls_ca ? "FILE?)" : "");
            free(runs);
            return 1;
        }
    }
    if (cfg.workers > cfg.connections)
        cfg.workers = cfg.connections;

    FILE *table = o->json ? stderr : stdout;
    char title[512];
    snprintf(title, sizeof title, "http  %s  C=%u N=%u %s  %.3g s x %u", cfg.url, cfg.connections, cfg.workers,
             cfg.churn ? "churn" : "keep-alive", cfg.duration, repeat);
    http_table(table, title, runs, repeat, cfg.churn);
    if (o->json) {
        char params[1024], url[600];
        json_escape(url, sizeof url, cfg.url);
        snprintf(params, sizeof params,
                 "{\"url\":\"%s\",\"connections\":%u,\"workers\":%u,\"duration\":%g,\"churn\":%s,\"repeat\":%u,"
                 "\"timeout\":%g,\"tls\":%s,\"tls_verify\":%s,\"tls_resumption\":%s}",
                 url, cfg.connections, cfg.workers, cfg.duration, cfg.churn ? "true" : "false", repeat,
                 cfg.timeout > 0 ? cfg.timeout : 2.0, tls ? "true" : "false",
                 tls && !cfg.tls_insecure ? "true" : "false", tls && !cfg.tls_no_resumption ? "true" : "false");
        http_json_line(stdout, "ioloop", "iol-bench", params, runs, repeat, cfg.churn, NULL);
    }
    if (o->plot) {
        static bench_report r;
        bench_report_init(&r, "http", http_plot_figs, HTTP_PLOT_FIGS);
        snprintf(r.title, sizeof r.title, "http C=%u N=%u %s", cfg.connections, cfg.workers,
                 cfg.churn ? "churn" : "keep-alive");
        http_report_add(&r, "ioloop", "iol-bench", runs, repeat);
        bench_report *rs[] = { &r };
        if (bench_plot(o, rs, 1) < 0)
            rc = 1;
    }
    free(runs);
    return rc < 0 ? 1 : rc;
bad:
    http_usage(stderr);
    return 2;
}
