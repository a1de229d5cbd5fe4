/*
 * net/ — Tornado's IOStream over a non-blocking socket.
 *
 * Uses only the public loop API, so a stream works on any loop.
 *
 * Buffers: one contiguous byte buffer each way, data at [start, start+len).
 * Consuming only moves start; the bytes slide to the front when more than
 * half of the capacity is dead space (so every byte is moved at most once
 * per time it is consumed past), the buffer doubles when it must grow, and
 * it shrinks back to STREAM_BUFFER_SMALL once mostly empty. A buffer exists
 * only while bytes are in it: blocks come from the thread's pool
 * (net/bufpool.h) and go back to it when the buffer empties, so an idle
 * stream holds none and the steady state does no malloc. Reads go straight
 * into the tail of the read buffer.
 *
 * Callbacks: a read's callback runs from the fd handler or from the
 * stream's one deferred callback (iol_loop_add_callback), never inside the
 * call that asked for it. Write `done`s run the same way, in order.
 *
 * Lifetime: the stream frees itself once it is closed (by either side)
 * and no callback of it is on the stack or queued: `refs` counts handler
 * and deferred frames plus the queued deferred callback. Closing only
 * marks the stream, closes the fd and queues the deferred callback, which
 * completes the pending read with its error, runs the close callback, and
 * drops the last reference. So close is safe from inside any callback, and
 * after the close callback returns the stream must not be used again.
 */
#include "ioloop.h"

#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include "loop/close_hook.h"
#include "net/bufpool.h"

enum {
    STREAM_DEFAULT_MAX_BUFFER = 100u << 20, /* Tornado's default max_buffer_size */
    STREAM_READ_CHUNK = 64u << 10,          /* least tail room offered to one read() */
    STREAM_BUFFER_MIN = 4u << 10,           /* first allocation */
    STREAM_BUFFER_SMALL = 64u << 10,        /* what a large, mostly empty buffer shrinks to */
    STREAM_IO_ROUNDS = 16,                  /* syscalls per event before other fds get a turn */
    STREAM_DELIM_INLINE = 32,               /* delimiters up to this length need no malloc */
};

typedef enum { READ_NONE, READ_UNTIL, READ_BYTES, READ_UNTIL_CLOSE } stream_read_kind;

typedef struct stream_buffer {
    char *base;
    size_t start; /* offset of the first live byte */
    size_t len;   /* live bytes */
    size_t cap;
} stream_buffer;

/* A write's `done`, due once bytes_written reaches `end`. */
typedef struct stream_write_done {
    uint64_t end;
    iol_callback_fn fn;
    void *arg;
} stream_write_done;

typedef struct stream_address {
    struct sockaddr_storage addr;
    socklen_t len;
} stream_address;

struct iol_stream {
    iol_loop *loop; /* referenced for the stream's lifetime */
    iol__close_hook close_hook; /* the loop's close releases the stream */
    int fd;         /* -1 once closed (or between connect attempts) */
    bool is_socket; /* send(MSG_NOSIGNAL) rather than write() */

    bool registered;  /* fd has our handler on the loop */
    unsigned watched; /* events the handler currently watches */
    bool parked;      /* peer hung up while nothing was asked: no idle watching */

    bool closed;
    bool eof;      /* closed because the peer finished sending */
    bool finished; /* close completed: read failed, close callback run */
    bool deferred_queued;
    bool in_deferred; /* the deferred callback is running and re-checks at its end */
    bool deferred_again;
    bool loop_closing; /* released by the loop's close: queue nothing more */
    int error;     /* -errno that closed the stream, 0 if none */
    unsigned refs; /* frames on the stack + the queued deferred callback */

    size_t max_buffer_size;
    size_t max_write_buffer; /* 0: unlimited */
    stream_buffer rbuf;
    stream_buffer wbuf;

    /* the pending read */
    stream_read_kind read_kind;
    iol_read_fn read_cb;
    void *read_arg;
    size_t read_n;
    bool read_partial;
    char *delim; /* delim_inline or heap */
    size_t delim_len;
    size_t delim_cap;
    size_t scan_pos; /* the delimiter does not start before this offset in rbuf */
    char delim_inline[STREAM_DELIM_INLINE];

    /* dones of queued writes, FIFO: live entries are [done_head, done_count) */
    stream_write_done *dones;
    size_t done_head;
    size_t done_count;
    size_t done_cap;
    uint64_t bytes_queued;  /* every byte ever accepted by iol_stream_write */
    uint64_t bytes_written; /* every byte ever handed to the kernel */

    iol_close_fn close_cb;
    void *close_arg;

    /* connect */
    bool connecting;
    bool connect_report; /* the result is known and waits for the deferred callback */
    int connect_status;
    iol_connect_fn connect_cb;
    void *connect_arg;
    stream_address *addrs;
    size_t naddrs;
    size_t next_addr;
};

static void stream_on_events(int fd, unsigned events, void *arg);
static void stream_deferred(void *arg);

/* ---------------------------------------------------------------- Buffers */

static inline char *buffer_data(const stream_buffer *b)
{
    return b->base + b->start;
}

static inline size_t buffer_tail_room(const stream_buffer *b)
{
    return b->cap - b->start - b->len;
}

static void buffer_slide_to_front(stream_buffer *b)
{
    if (b->start == 0)
        return;
    if (b->len > 0)
        memmove(b->base, b->base + b->start, b->len);
    b->start = 0;
}

/* Moves the live bytes into a new block of cap bytes (from the pool). */
static int buffer_move_to(stream_buffer *b, size_t cap)
{
    char *base = iol__bufpool_get(cap);
    if (!base)
        return -ENOMEM;
    if (b->len > 0)
        memcpy(base, b->base + b->start, b->len);
    iol__bufpool_put(b->base, b->cap);
    b->base = base;
    b->start = 0;
    b->cap = cap;
    return 0;
}

/* Makes at least `need` bytes of tail room. */
static int buffer_reserve(stream_buffer *b, size_t need)
{
    if (buffer_tail_room(b) >= need)
        return 0;
    if (need > SIZE_MAX / 4 - b->len)
        return -ENOMEM;
    size_t want = b->len + need;
    /* Sliding is cheap only when the dead space outweighs the live bytes:
     * each live byte then moves at most once per cap/2 bytes consumed. */
    if (b->start >= b->cap / 2 && want <= b->cap) {
        buffer_slide_to_front(b);
        return 0;
    }
    size_t cap = b->cap ? b->cap * 2 : STREAM_BUFFER_MIN;
    while (cap < want)
        cap *= 2;
    return buffer_move_to(b, cap);
}

static int buffer_append(stream_buffer *b, const void *data, size_t len)
{
    if (len == 0)
        return 0;
    int r = buffer_reserve(b, len);
    if (r < 0)
        return r;
    memcpy(b->base + b->start + b->len, data, len);
    b->len += len;
    return 0;
}

/* Only moves offsets: the consumed bytes stay readable until the next
 * reserve or release, which is what lets a read callback get a pointer
 * into the buffer after the read state was already cleared. */
static void buffer_consume(stream_buffer *b, size_t n)
{
    b->start += n;
    b->len -= n;
    if (b->len == 0)
        b->start = 0;
}

static void buffer_free(stream_buffer *b)
{
    iol__bufpool_put(b->base, b->cap);
    *b = (stream_buffer){0};
}

/* A buffer exists only while bytes are in it: an empty one goes back to
 * the thread's pool; a large, mostly empty one shrinks to twice its live
 * bytes, not below STREAM_BUFFER_SMALL. */
static void buffer_trim(stream_buffer *b)
{
    if (!b->base)
        return;
    if (b->len == 0) {
        buffer_free(b);
        return;
    }
    if (b->cap <= STREAM_BUFFER_SMALL || b->len > b->cap / 4)
        return;
    size_t cap = STREAM_BUFFER_SMALL;
    while (cap < b->len * 2)
        cap *= 2;
    if (cap < b->cap)
        (void)buffer_move_to(b, cap); /* a failed shrink just keeps the larger block */
}

/* --------------------------------------------------------------- Lifetime */

static void stream_free(iol_stream *s)
{
    iol__loop_remove_close_hook(s->loop, &s->close_hook);
    buffer_free(&s->rbuf);
    buffer_free(&s->wbuf);
    free(s->dones);
    if (s->delim != s->delim_inline)
        free(s->delim);
    free(s->addrs);
    iol_loop_unref(s->loop);
    free(s);
}

static void stream_finish_close(iol_stream *s);

static inline void stream_hold(iol_stream *s)
{
    s->refs++;
}

static void stream_release(iol_stream *s)
{
    if (--s->refs > 0 || !s->closed)
        return;
    if (!s->finished) {
        /* Only reached when the deferred callback could not be queued
         * (loop shut down, no memory): finish here instead, now that no
         * frame of the stream is on the stack. */
        s->refs++;
        stream_finish_close(s);
        if (--s->refs > 0 || s->deferred_queued)
            return;
    }
    stream_free(s);
}

/* Queues the one deferred callback (which then holds a reference). From
 * inside that callback, asks it to look again before it returns instead:
 * a second queued callback could be stranded by a loop that stops (and is
 * closed) right after the close callback ran. */
static int stream_schedule(iol_stream *s)
{
    if (s->deferred_queued)
        return 0;
    if (s->loop_closing)
        return -ESHUTDOWN;
    if (s->in_deferred) {
        s->deferred_again = true;
        return 0;
    }
    int r = iol_loop_add_callback(s->loop, stream_deferred, s);
    if (r < 0)
        return r;
    s->deferred_queued = true;
    s->refs++;
    return 0;
}

static void stream_drop_fd(iol_stream *s)
{
    if (s->fd < 0)
        return;
    if (s->registered)
        (void)iol_loop_remove_handler(s->loop, s->fd); /* nothing to undo if the loop is gone */
    close(s->fd);
    s->fd = -1;
    s->registered = false;
    s->watched = 0;
}

/* Marks the stream closed; the deferred callback finishes the job. Never
 * frees and never calls back, so callers may keep using s. */
static void stream_close_internal(iol_stream *s, int err)
{
    if (s->closed)
        return;
    s->closed = true;
    s->error = err;
    stream_drop_fd(s);
    /* Unwritten data is dropped, as Tornado's close does. */
    s->wbuf.len = 0;
    s->wbuf.start = 0;
    /* On failure stream_release finishes once the stack unwinds. */
    (void)stream_schedule(s);
}

/* ------------------------------------------------------------------ Events */

static unsigned stream_wanted_events(const iol_stream *s)
{
    if (s->connecting)
        return s->connect_report ? 0 : IOL_WRITE;
    unsigned events = 0;
    if (s->read_kind != READ_NONE)
        events |= IOL_READ;
    else if (s->close_cb && s->rbuf.len == 0 && !s->parked)
        events |= IOL_READ; /* idle: notice the peer closing (Tornado's error listener) */
    if (s->wbuf.len > 0)
        events |= IOL_WRITE;
    return events;
}

/* Brings the handler in line with what the stream waits for; a syscall
 * only when that changed. A stream that waits for nothing is not
 * registered at all (rather than with events 0): that works on any loop,
 * and an idle stream then costs the poller nothing. */
static int stream_update_events(iol_stream *s)
{
    if (s->closed || s->fd < 0)
        return 0;
    unsigned want = stream_wanted_events(s);
    int r = 0;
    if (want == 0) {
        if (s->registered) {
            r = iol_loop_remove_handler(s->loop, s->fd);
            if (r == -ENOENT)
                r = 0;
            if (r == 0)
                s->registered = false;
        }
    } else if (!s->registered) {
        r = iol_loop_add_handler(s->loop, s->fd, want, stream_on_events, s);
        if (r == 0)
            s->registered = true;
    } else if (want != s->watched) {
        r = iol_loop_update_handler(s->loop, s->fd, want);
    }
    if (r == 0)
        s->watched = want;
    return r;
}

/* ---------------------------------------------------------------- Syscalls */

static ssize_t stream_send(iol_stream *s, const void *data, size_t len)
{
    ssize_t n;
    do {
        /* MSG_NOSIGNAL: a vanished peer is -EPIPE here, not a SIGPIPE. */
        n = s->is_socket ? send(s->fd, data, len, MSG_NOSIGNAL) : write(s->fd, data, len);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return (errno == EAGAIN || errno == EWOULDBLOCK) ? -EAGAIN : -errno;
    return n;
}

/* One read into the read buffer, at most `limit` bytes (> 0).
 * >0 bytes read, 0 at EOF, -EAGAIN, or -errno. */
static ssize_t stream_recv(iol_stream *s, size_t limit)
{
    int r = buffer_reserve(&s->rbuf, limit < STREAM_READ_CHUNK ? limit : STREAM_READ_CHUNK);
    if (r < 0)
        return r;
    size_t room = buffer_tail_room(&s->rbuf);
    if (room > limit)
        room = limit;
    char *tail = buffer_data(&s->rbuf) + s->rbuf.len;
    ssize_t n;
    do {
        n = s->is_socket ? recv(s->fd, tail, room, 0) : read(s->fd, tail, room);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return (errno == EAGAIN || errno == EWOULDBLOCK) ? -EAGAIN : -errno;
    s->rbuf.len += (size_t)n;
    return n;
}

/* The pending error of a socket (SO_ERROR clears it), 0 if none. */
static int stream_socket_error(const iol_stream *s)
{
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        return errno == ENOTSOCK ? 0 : errno;
    return err;
}

/* ------------------------------------------------------------------- Reads */

/* How many buffered bytes complete the pending read; 0: not yet. */
static size_t stream_read_ready(iol_stream *s)
{
    size_t len = s->rbuf.len;
    switch (s->read_kind) {
    case READ_BYTES:
        if (len >= s->read_n)
            return s->read_n;
        return s->read_partial ? len : 0;
    case READ_UNTIL: {
        size_t dlen = s->delim_len;
        if (len < dlen)
            return 0;
        const char *data = buffer_data(&s->rbuf);
        size_t from = s->scan_pos;
        const char *hit = dlen == 1 ? memchr(data + from, s->delim[0], len - from)
                                    : memmem(data + from, len - from, s->delim, dlen);
        if (hit)
            return (size_t)(hit - data) + dlen;
        /* Next time search only the new bytes, plus the dlen - 1 before
         * them where a split delimiter may start. */
        s->scan_pos = len - (dlen - 1);
        return 0;
    }
    case READ_UNTIL_CLOSE:
    case READ_NONE:
        break;
    }
    return 0;
}

/* Hands the first n buffered bytes to the pending read's callback. */
static void stream_deliver(iol_stream *s, size_t n, int status)
{
    iol_read_fn cb = s->read_cb;
    void *arg = s->read_arg;
    const char *data = n ? buffer_data(&s->rbuf) : NULL;
    /* Clear the read and consume first, so the callback can start the next
     * read; data stays valid because only a socket read (never done inside
     * a stream call) writes into the buffer. */
    s->read_kind = READ_NONE;
    s->read_cb = NULL;
    s->read_arg = NULL;
    buffer_consume(&s->rbuf, n);
    cb(s, data, n, status, arg);
    buffer_trim(&s->rbuf);
}

/* Completes the pending read from the buffer if it can; a buffer that is
 * full without answering it closes the stream with -ENOBUFS (the read then
 * fails from the deferred callback). true: the read is no longer pending. */
static bool stream_try_complete_read(iol_stream *s)
{
    size_t n = stream_read_ready(s);
    if (n > 0) {
        stream_deliver(s, n, 0);
        return true;
    }
    if (s->rbuf.len >= s->max_buffer_size) {
        stream_close_internal(s, -ENOBUFS);
        return true;
    }
    return false;
}

static void stream_handle_read(iol_stream *s)
{
    int rounds = 0;
    while (!s->closed) {
        if (s->read_kind != READ_NONE && stream_try_complete_read(s))
            continue; /* the callback may have started another read */
        size_t limit;
        if (s->read_kind != READ_NONE)
            limit = s->max_buffer_size - s->rbuf.len; /* > 0: a full buffer closed above */
        else if (s->close_cb && s->rbuf.len == 0 && !s->parked)
            limit = s->max_buffer_size < STREAM_READ_CHUNK ? s->max_buffer_size : STREAM_READ_CHUNK;
        else
            break;
        if (rounds++ == STREAM_IO_ROUNDS)
            break; /* level-triggered: the rest is reported again */
        ssize_t n = stream_recv(s, limit);
        if (n == -EAGAIN)
            break;
        if (n == 0) {
            s->eof = true;
            stream_close_internal(s, 0);
        } else if (n < 0) {
            stream_close_internal(s, (int)n);
        }
    }
    /* The last recv usually found nothing (EAGAIN): an idle stream keeps
     * no buffer. */
    buffer_trim(&s->rbuf);
}

/* ------------------------------------------------------------------ Writes */

/* Runs the dones whose bytes reached the kernel, in write order. */
static void stream_fire_dones(iol_stream *s)
{
    while (s->done_head < s->done_count && s->dones[s->done_head].end <= s->bytes_written) {
        stream_write_done d = s->dones[s->done_head++];
        if (s->done_head == s->done_count) {
            /* Empty: an idle stream keeps no array (d.fn may write again
             * and make a new one; the loop then reads that). */
            free(s->dones);
            s->dones = NULL;
            s->done_cap = 0;
            s->done_head = s->done_count = 0;
        }
        d.fn(d.arg);
    }
}

/* Room for one more done entry (so a write never fails half-done). */
static int stream_dones_reserve(iol_stream *s)
{
    if (s->done_count < s->done_cap)
        return 0;
    if (s->done_head > 0) {
        memmove(s->dones, s->dones + s->done_head, (s->done_count - s->done_head) * sizeof(*s->dones));
        s->done_count -= s->done_head;
        s->done_head = 0;
        return 0;
    }
    size_t cap = s->done_cap ? s->done_cap * 2 : 8;
    stream_write_done *dones = realloc(s->dones, cap * sizeof(*dones));
    if (!dones)
        return -ENOMEM;
    s->dones = dones;
    s->done_cap = cap;
    return 0;
}

static void stream_handle_write(iol_stream *s)
{
    for (int rounds = 0; s->wbuf.len > 0 && rounds < STREAM_IO_ROUNDS; rounds++) {
        ssize_t n = stream_send(s, buffer_data(&s->wbuf), s->wbuf.len);
        if (n == -EAGAIN)
            break;
        if (n < 0) {
            stream_close_internal(s, (int)n);
            return;
        }
        buffer_consume(&s->wbuf, (size_t)n);
        s->bytes_written += (uint64_t)n;
    }
    buffer_trim(&s->wbuf);
    stream_fire_dones(s);
}

/* ----------------------------------------------------------------- Connect */

/* Runs the connect callback; a failure closes the stream after it. */
static void stream_connect_done(iol_stream *s, int status)
{
    s->connecting = false;
    s->connect_report = false;
    iol_connect_fn cb = s->connect_cb;
    s->connect_cb = NULL;
    if (cb)
        cb(s, status, s->connect_arg);
    if (status < 0)
        stream_close_internal(s, status);
}

/* Starts connecting to the next address. 0: in progress, or done at once
 * (connect_report set); < 0: every remaining address failed (last error). */
static int stream_connect_next(iol_stream *s, int last_err)
{
    while (s->next_addr < s->naddrs) {
        const stream_address *a = &s->addrs[s->next_addr++];
        stream_drop_fd(s);
        int fd = socket(a->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            last_err = -errno;
            continue;
        }
        int r = iol_loop_add_handler(s->loop, fd, IOL_WRITE, stream_on_events, s);
        if (r < 0) {
            close(fd);
            last_err = r;
            continue;
        }
        s->fd = fd;
        s->registered = true;
        s->watched = IOL_WRITE;
        s->is_socket = true;
        if (connect(fd, (const struct sockaddr *)&a->addr, a->len) == 0) {
            s->connect_report = true;
            s->connect_status = 0;
            return 0;
        }
        if (errno == EINPROGRESS || errno == EINTR) /* EINTR: it goes on asynchronously */
            return 0;
        last_err = -errno;
    }
    stream_drop_fd(s);
    return last_err;
}

static void stream_handle_connect(iol_stream *s)
{
    if (s->connect_report)
        return; /* the result is already queued for the deferred callback */
    int err = stream_socket_error(s);
    if (err == 0) {
        stream_connect_done(s, 0);
        return;
    }
    int r = stream_connect_next(s, -err);
    if (r < 0)
        stream_connect_done(s, r);
    else if (s->connect_report)
        stream_connect_done(s, s->connect_status);
}

/* getaddrinfo's errors as -errno. */
static int stream_gai_error(int gai)
{
    switch (gai) {
    case EAI_MEMORY:
        return -ENOMEM;
    case EAI_AGAIN:
        return -EAGAIN;
    case EAI_SYSTEM:
        return errno ? -errno : -EIO;
    case EAI_NONAME:
    case EAI_FAIL:
#ifdef EAI_NODATA
    case EAI_NODATA:
#endif
#ifdef EAI_ADDRFAMILY
    case EAI_ADDRFAMILY:
#endif
        return -EHOSTUNREACH;
    default:
        return -EINVAL;
    }
}

/* Numeric addresses need no lookup; names go through getaddrinfo (which
 * may block). Every address found is tried in order. */
static int stream_resolve(const char *host, uint16_t port, stream_address **out, size_t *count)
{
    char service[8];
    snprintf(service, sizeof(service), "%u", (unsigned)port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(host, service, &hints, &res);
    if (gai == EAI_NONAME) {
        hints.ai_flags = AI_NUMERICSERV;
        gai = getaddrinfo(host, service, &hints, &res);
    }
    if (gai != 0)
        return stream_gai_error(gai);
    size_t n = 0;
    for (const struct addrinfo *ai = res; ai; ai = ai->ai_next)
        n++;
    stream_address *addrs = calloc(n ? n : 1, sizeof(*addrs));
    if (!addrs) {
        freeaddrinfo(res);
        return -ENOMEM;
    }
    size_t i = 0;
    for (const struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        if (ai->ai_addrlen > sizeof(addrs[i].addr))
            continue;
        memcpy(&addrs[i].addr, ai->ai_addr, ai->ai_addrlen);
        addrs[i].len = ai->ai_addrlen;
        i++;
    }
    freeaddrinfo(res);
    if (i == 0) {
        free(addrs);
        return -EHOSTUNREACH;
    }
    *out = addrs;
    *count = i;
    return 0;
}

/* ------------------------------------------------------- Loop entry points */

/* Completes a close: the dones already earned, a pending connect, the
 * pending read (with the error, or read_until_close's data at EOF), then
 * the close callback, each once. */
static void stream_finish_close(iol_stream *s)
{
    if (s->finished)
        return;
    s->finished = true;
    stream_fire_dones(s);
    if (s->connecting)
        stream_connect_done(s, s->error ? s->error : -EPIPE);
    if (s->read_kind != READ_NONE) {
        int status = s->error ? s->error : -EPIPE;
        size_t n = 0;
        if (s->read_kind == READ_UNTIL_CLOSE) {
            n = s->rbuf.len;
            if (s->eof)
                status = 0;
        }
        stream_deliver(s, n, status);
    }
    iol_close_fn fn = s->close_cb;
    s->close_cb = NULL;
    if (fn)
        fn(s, s->close_arg);
}

static void stream_deferred(void *arg)
{
    iol_stream *s = arg;
    s->deferred_queued = false; /* its reference now belongs to this frame */
    s->in_deferred = true;
    s->deferred_again = false;
    if (s->connect_report && !s->closed)
        stream_connect_done(s, s->connect_status);
    stream_fire_dones(s);
    if (!s->closed && s->read_kind != READ_NONE)
        (void)stream_try_complete_read(s);
    s->in_deferred = false;
    if (s->closed) {
        /* Closed before or during this callback: finish here, after the
         * callbacks above, so nothing of the stream stays queued. */
        stream_finish_close(s);
    } else {
        /* Work asked for meanwhile (a read answered by the buffer, a done
         * due) waits for the next iteration, as from outside. */
        if (s->deferred_again)
            (void)stream_schedule(s);
        int r = stream_update_events(s);
        if (r < 0)
            stream_close_internal(s, r);
    }
    stream_release(s);
}

/* The loop is closing (iol_loop_close, on its thread, loop stopped): no
 * frame of the stream is on the stack, and its queued deferred callback,
 * if any, will be dropped with the loop's queue and never run. Close the
 * stream with -ESHUTDOWN (its own path removes the handler and closes the
 * fd), run what a close runs (pending read, connect, close callback) here,
 * and free it. */
static void stream_loop_closing(iol__close_hook *hook)
{
    iol_stream *s = (iol_stream *)((char *)hook - offsetof(iol_stream, close_hook));
    if (s->deferred_queued) {
        s->deferred_queued = false; /* dropped with the queue */
        s->refs--;
    }
    if (s->refs > 0) {
        /* A frame of the stream is on the stack: impossible while the loop
         * is stopped; leak rather than free under it. */
        return;
    }
    s->loop_closing = true;
    stream_close_internal(s, -ESHUTDOWN); /* no-op if closed already */
    stream_finish_close(s);
    stream_free(s);
}

static void stream_on_events(int fd, unsigned events, void *arg)
{
    iol_stream *s = arg;
    (void)fd;
    stream_hold(s);
    if (s->connecting) {
        stream_handle_connect(s);
    } else {
        int err = (events & IOL_ERROR) ? stream_socket_error(s) : 0;
        bool acted = false;
        if (err) {
            stream_close_internal(s, -err);
        } else {
            if ((events & (IOL_READ | IOL_ERROR)) && (s->watched & IOL_READ)) {
                stream_handle_read(s);
                acted = true;
            }
            if (!s->closed && (events & (IOL_WRITE | IOL_ERROR)) && s->wbuf.len > 0) {
                stream_handle_write(s);
                acted = true;
            }
            if (!s->closed && (events & IOL_ERROR) && !acted)
                s->parked = true; /* hung up, nothing asked of it: wait for a request */
        }
    }
    if (!s->closed) {
        int r = stream_update_events(s);
        if (r < 0)
            stream_close_internal(s, r);
    }
    stream_release(s);
}

/* ------------------------------------------------------------- Public API */

static int stream_alloc(iol_stream **out, iol_loop *loop, size_t max_buffer_size)
{
    iol_stream *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->close_hook.fn = stream_loop_closing;
    int r = iol__loop_add_close_hook(loop, &s->close_hook);
    if (r < 0) {
        free(s);
        return r;
    }
    s->loop = iol_loop_ref(loop);
    s->fd = -1;
    s->max_buffer_size = max_buffer_size ? max_buffer_size : STREAM_DEFAULT_MAX_BUFFER;
    s->delim = s->delim_inline;
    s->delim_cap = sizeof(s->delim_inline);
    *out = s;
    return 0;
}

int iol_stream_new(iol_stream **out, iol_loop *loop, int fd, size_t max_buffer_size)
{
    if (!out || !loop)
        return -EINVAL;
    if (fd < 0)
        return -EBADF;
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0)
        return -EBADF;

    iol_stream *s;
    int r = stream_alloc(&s, loop, max_buffer_size);
    if (r < 0)
        return r;
    /* Registered now so -EEXIST surfaces here. READ is a placeholder: the
     * first request or event narrows it, sparing a syscall meanwhile. */
    r = iol_loop_add_handler(loop, fd, IOL_READ, stream_on_events, s);
    if (r < 0)
        goto fail;
    if (!(flags & O_NONBLOCK) && fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
        r = -errno;
        (void)iol_loop_remove_handler(loop, fd);
        goto fail;
    }
    int type;
    socklen_t len = sizeof(type);
    s->is_socket = getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0;
    s->fd = fd;
    s->registered = true;
    s->watched = IOL_READ;
    *out = s;
    return 0;
fail:
    stream_free(s);
    return r;
}

int iol_stream_connect(iol_stream **out, iol_loop *loop, const char *host, uint16_t port, size_t max_buffer_size,
                       iol_connect_fn cb, void *arg)
{
    if (!out || !loop || !host || !cb)
        return -EINVAL;

    stream_address *addrs = NULL;
    size_t naddrs = 0;
    int r = stream_resolve(host, port, &addrs, &naddrs);
    if (r < 0)
        return r;
    iol_stream *s;
    r = stream_alloc(&s, loop, max_buffer_size);
    if (r < 0) {
        free(addrs);
        return r;
    }
    s->addrs = addrs;
    s->naddrs = naddrs;
    s->connecting = true;
    s->connect_cb = cb;
    s->connect_arg = arg;

    /* Failures past resolution (socket, connect) reach cb, like a refused
     * connection, so the caller has one place to handle them. */
    r = stream_connect_next(s, -EHOSTUNREACH);
    if (r < 0) {
        s->connect_report = true;
        s->connect_status = r;
    }
    if (s->connect_report) {
        r = stream_schedule(s);
        if (r < 0)
            goto fail;
        r = stream_update_events(s); /* the handler must not spin on WRITE meanwhile */
        if (r < 0)
            goto fail;
    }
    *out = s;
    return 0;
fail:
    if (s->deferred_queued) {
        /* The queued callback owns s now; closing it there is all we can do. */
        s->connect_cb = NULL;
        stream_close_internal(s, r);
        return r;
    }
    stream_drop_fd(s);
    stream_free(s);
    return r;
}

/* A new read was recorded: answer it from the buffer through the deferred
 * callback, or start watching the socket. On failure the read is undone. */
static int stream_arm_read(iol_stream *s)
{
    int r;
    if (stream_read_ready(s) > 0 || s->rbuf.len >= s->max_buffer_size)
        r = stream_schedule(s);
    else
        r = stream_update_events(s);
    if (r < 0) {
        s->read_kind = READ_NONE;
        s->read_cb = NULL;
        s->read_arg = NULL;
    }
    return r;
}

static int stream_check_read(const iol_stream *s)
{
    if (s->closed)
        return -EPIPE;
    if (s->read_kind != READ_NONE)
        return -EBUSY;
    return 0;
}

int iol_stream_read_until(iol_stream *s, const char *delim, iol_read_fn cb, void *arg)
{
    if (!s || !delim || !cb || delim[0] == '\0')
        return -EINVAL;
    int r = stream_check_read(s);
    if (r < 0)
        return r;
    size_t dlen = strlen(delim);
    if (dlen > s->delim_cap) {
        char *copy = malloc(dlen);
        if (!copy)
            return -ENOMEM;
        if (s->delim != s->delim_inline)
            free(s->delim);
        s->delim = copy;
        s->delim_cap = dlen;
    }
    memcpy(s->delim, delim, dlen);
    s->delim_len = dlen;
    s->scan_pos = 0;
    s->read_kind = READ_UNTIL;
    s->read_cb = cb;
    s->read_arg = arg;
    return stream_arm_read(s);
}

int iol_stream_read_bytes(iol_stream *s, size_t n, bool partial, iol_read_fn cb, void *arg)
{
    if (!s || !cb || n == 0)
        return -EINVAL;
    int r = stream_check_read(s);
    if (r < 0)
        return r;
    s->read_kind = READ_BYTES;
    s->read_n = n;
    s->read_partial = partial;
    s->read_cb = cb;
    s->read_arg = arg;
    return stream_arm_read(s);
}

int iol_stream_read_until_close(iol_stream *s, iol_read_fn cb, void *arg)
{
    if (!s || !cb)
        return -EINVAL;
    int r = stream_check_read(s);
    if (r < 0)
        return r;
    s->read_kind = READ_UNTIL_CLOSE;
    s->read_cb = cb;
    s->read_arg = arg;
    return stream_arm_read(s);
}

int iol_stream_write(iol_stream *s, const void *data, size_t len, iol_callback_fn done, void *arg)
{
    if (!s || (!data && len > 0))
        return -EINVAL;
    if (s->closed)
        return -EPIPE;
    /* Tornado checks the whole write against the limit, even one that
     * could go straight to the kernel: the limit is predictable. */
    if (s->max_write_buffer && (len > s->max_write_buffer || s->wbuf.len > s->max_write_buffer - len))
        return -ENOBUFS;
    int r = done ? stream_dones_reserve(s) : 0;
    if (r < 0)
        return r;

    stream_hold(s);
    size_t sent = 0;
    if (s->wbuf.len == 0 && !s->connecting && len > 0) {
        ssize_t n = stream_send(s, data, len);
        if (n >= 0) {
            sent = (size_t)n;
        } else if (n != -EAGAIN) {
            r = (int)n; /* EPIPE, ECONNRESET...: the stream is over */
            stream_close_internal(s, r);
            goto out;
        }
    }
    if (sent < len)
        r = buffer_append(&s->wbuf, (const char *)data + sent, len - sent);
    if (r < 0) {
        if (sent > 0) /* part of it is gone already: the byte stream is torn */
            stream_close_internal(s, r);
        goto out;
    }
    s->bytes_queued += len;
    s->bytes_written += sent;
    if (done) {
        s->dones[s->done_count++] = (stream_write_done){.end = s->bytes_queued, .fn = done, .arg = arg};
        /* Even when written at once, done runs later from the loop, never
         * inside this call; a failure to queue leaves it for the next
         * write event or the close. */
        if (s->bytes_written >= s->bytes_queued)
            (void)stream_schedule(s);
    }
    if (s->wbuf.len > 0 && !(s->watched & IOL_WRITE)) {
        r = stream_update_events(s);
        if (r < 0) /* the queued bytes would never leave */
            stream_close_internal(s, r);
    }
out:
    stream_release(s);
    return r;
}

size_t iol_stream_write_buffer_size(const iol_stream *s)
{
    return s ? s->wbuf.len : 0;
}

int iol_stream_set_max_write_buffer(iol_stream *s, size_t max)
{
    if (!s)
        return -EINVAL;
    s->max_write_buffer = max;
    return 0;
}

int iol_stream_set_close_callback(iol_stream *s, iol_close_fn fn, void *arg)
{
    if (!s)
        return -EINVAL;
    if (s->finished)
        return -EPIPE;
    s->close_cb = fn;
    s->close_arg = arg;
    /* With a close callback, an idle stream watches for the peer closing. */
    return stream_update_events(s);
}

int iol_stream_close(iol_stream *s)
{
    if (!s)
        return -EINVAL;
    if (s->closed)
        return -EALREADY;
    stream_hold(s);
    stream_close_internal(s, 0);
    stream_release(s);
    return 0;
}

bool iol_stream_closed(const iol_stream *s)
{
    return !s || s->closed;
}

int iol_stream_fd(const iol_stream *s)
{
    if (!s)
        return -EINVAL;
    return s->closed || s->fd < 0 ? -EBADF : s->fd;
}

int iol_stream_error(const iol_stream *s)
{
    return s ? s->error : -EINVAL;
}

iol_loop *iol_stream_loop(const iol_stream *s)
{
    return s ? s->loop : NULL;
}
