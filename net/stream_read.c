/*
 * net/stream_read.c — a stream's reads: read_until, read_bytes,
 * read_until_close. Reads go straight into the tail of the read buffer.
 */
#include "net/stream_impl.h"

#include "loop/status.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---------------------------------------------------------------- Syscall */

ssize_t iol__stream_recv_raw(iol_stream *s, char *dst, size_t room)
{
    ssize_t n;
    do {
        n = s->is_socket ? recv(s->fd, dst, room, 0) : read(s->fd, dst, room);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return (errno == EAGAIN || errno == EWOULDBLOCK) ? -EAGAIN : -errno;
    return n;
}

/* One read into the read buffer, at most `limit` bytes (> 0).
 * >0 bytes read, 0 at EOF, -EAGAIN, or -errno. *drained: a read of > 0
 * bytes found the socket emptied (it returned less than it had room
 * for), so another now would only say EAGAIN. */
static ssize_t stream_recv(iol_stream *s, size_t limit, bool *drained)
{
    if (s->tls)
        return iol__tls_recv(s, limit, drained);
    if (s->read_streaming && s->ext->into && iol__buffer_len(&s->rbuf) == 0)
        return iol__stream_recv_into(s, drained);
    int r = iol__buffer_reserve(&s->rbuf, limit < STREAM_READ_CHUNK ? limit : STREAM_READ_CHUNK);
    if (r < 0)
        return r;
    size_t room = iol__buffer_tail_room(&s->rbuf);
    if (room > limit)
        room = limit;
    ssize_t n = iol__stream_recv_raw(s, iol__buffer_tail(&s->rbuf), room);
    if (n < 0)
        return n;
    iol__buffer_commit(&s->rbuf, (size_t)n);
    *drained = (size_t)n < room;
    return n;
}


/* ------------------------------------------------------------------- Reads */

/* How many buffered bytes complete the pending read; 0: not yet. */
static size_t stream_read_ready(iol_stream *s)
{
    size_t len = iol__buffer_len(&s->rbuf);
    if (s->read_streaming) /* whatever came, up to what is still wanted */
        return s->read_kind == READ_BYTES && len > s->read_n ? s->read_n : len;
    switch (s->read_kind) {
    case READ_BYTES:
        if (len >= s->read_n)
            return s->read_n;
        return s->read_partial ? len : 0;
    case READ_UNTIL: {
        if (s->ext->regex)
            return iol__stream_regex_ready(s);
        size_t dlen = s->ext->delim_len;
        if (len < dlen)
            return 0;
        const char *data = iol__buffer_data(&s->rbuf);
        size_t from = s->ext->scan_pos;
        const char *hit = dlen == 1 ? memchr(data + from, s->ext->delim[0], len - from)
                                    : memmem(data + from, len - from, s->ext->delim, dlen);
        if (hit)
            return (size_t)(hit - data) + dlen;
        /* Next time search only the new bytes, plus the dlen - 1 before
         * them where a split delimiter may start. */
        s->ext->scan_pos = len - (dlen - 1);
        return 0;
    }
    case READ_UNTIL_CLOSE:
    case READ_NONE:
        break;
    }
    return 0;
}

/* Hands the first n buffered bytes to the pending read's callback. */
void iol__stream_deliver(iol_stream *s, size_t n, int status)
{
    iol_read_fn cb = s->read_cb;
    void *arg = s->read_arg;
    const char *data = n ? iol__buffer_data(&s->rbuf) : NULL;
    /* Clear the read and consume first, so the callback can start the next
     * read; data stays valid because only a socket read (never done inside
     * a stream call) writes into the buffer. */
    s->read_kind = READ_NONE;
    s->read_cb = NULL;
    s->read_arg = NULL;
    s->read_streaming = false;
    if (s->ext && s->ext->regex)
        iol__stream_regex_clear(s);
    iol__buffer_consume(&s->rbuf, n);
    cb(s, data, n, iol__loop_status(s->loop, status), arg);
    iol__buffer_trim(&s->rbuf);
}

/* A read_until with max_bytes that can no longer succeed: the delimiter
 * ends past max_bytes, or max_bytes are buffered without it (a delimiter
 * found later would end past them too). */
static bool stream_read_over_max(const iol_stream *s, size_t ready)
{
    if (s->read_kind != READ_UNTIL || s->ext->read_max == 0)
        return false;
    return ready > s->ext->read_max || (ready == 0 && iol__buffer_len(&s->rbuf) >= s->ext->read_max);
}

/* Whether the buffer is past what the pending read may hold: -ENOBUFS.
 * Tornado fails only past max_buffer_size, so read_until_close may fill it
 * exactly: at the limit one more byte is read (see handle_read), and EOF
 * then delivers the max_buffer_size bytes while a byte more fails. The
 * other reads cannot be answered by a full buffer (no delimiter in it, or
 * more bytes asked for than it holds), so for them full is already past. */
static bool stream_buffer_over(const iol_stream *s)
{
    if (s->read_kind == READ_UNTIL_CLOSE)
        return iol__buffer_len(&s->rbuf) > iol__stream_max_buffer(s);
    return iol__buffer_len(&s->rbuf) >= iol__stream_max_buffer(s);
}

/* Completes the pending read from the buffer if it can; a buffer that is
 * full without answering it closes the stream with -ENOBUFS, a read_until
 * past its max_bytes with -EMSGSIZE (the read then fails from the deferred
 * callback). true: the read is no longer pending. */
bool iol__stream_try_complete_read(iol_stream *s)
{
    size_t n = stream_read_ready(s);
    if (stream_read_over_max(s, n)) {
        iol__stream_close_internal(s, -EMSGSIZE); /* Tornado's UnsatisfiableReadError */
        return true;
    }
    if (n > 0) {
        if (s->read_streaming)
            iol__stream_deliver_chunk(s, n);
        else
            iol__stream_deliver(s, n, 0);
        return true;
    }
    if (stream_buffer_over(s)) {
        iol__stream_close_internal(s, -ENOBUFS);
        return true;
    }
    return false;
}

void iol__stream_handle_read(iol_stream *s)
{
    int rounds = 0;
    bool drained = false;
    s->uring_nobufs = false; /* after this, the ring again (stream_uring.c) */
    while (!s->closed && !s->read_paused) { /* a read callback may pause */
        if (s->read_kind != READ_NONE && iol__stream_try_complete_read(s))
            continue; /* the callback may have started another read */
        size_t limit;
        if (s->read_kind != READ_NONE) /* > 0: a buffer past its limit closed above */
            limit = iol__buffer_len(&s->rbuf) < iol__stream_max_buffer(s) ? iol__stream_max_buffer(s) - iol__buffer_len(&s->rbuf) : 1;
        else if (s->close_cb && iol__buffer_len(&s->rbuf) == 0 && !s->parked)
            limit = iol__stream_max_buffer(s) < STREAM_READ_CHUNK ? iol__stream_max_buffer(s) : STREAM_READ_CHUNK;
        else
            break;
        /* The last read emptied the socket: what comes next is reported
         * by the poller (level-triggered), which spares the EAGAIN read
         * a request-response exchange would otherwise pay each time. */
        if (drained || rounds++ == STREAM_IO_ROUNDS)
            break; /* level-triggered: the rest is reported again */
        ssize_t n = stream_recv(s, limit, &drained);
        if (n == -EAGAIN)
            break;
        if (n == 0) {
            s->eof = true;
            iol__stream_close_internal(s, 0);
        } else if (n < 0) {
            iol__stream_close_internal(s, (int)n);
        }
    }
    /* The last recv usually found nothing (EAGAIN): an idle stream keeps
     * no buffer. */
    iol__buffer_trim(&s->rbuf);
}

/* ------------------------------------------------------------- Public API */

/* Whether the buffer alone answers the pending read (or fails it). */
static bool stream_read_decidable(iol_stream *s)
{
    size_t n = stream_read_ready(s);
    return n > 0 || stream_buffer_over(s) || stream_read_over_max(s, n);
}

/* A new read was recorded: answer it from the buffer through the deferred
 * callback, or start watching the socket (neither while paused). On
 * failure the read is undone. */
static int stream_arm_read(iol_stream *s)
{
    int r;
    if (!s->read_paused && stream_read_decidable(s))
        r = iol__stream_schedule(s);
    else
        r = iol__stream_update_events(s);
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

int iol_stream_read_until_max(iol_stream *s, const char *delim, size_t max_bytes, iol_read_fn cb, void *arg)
{
    if (!s)
        return -EINVAL;
    int thread_err = iol__stream_check_thread(s);
    if (thread_err)
        return thread_err;
    if (!delim || !cb || delim[0] == '\0')
        return -EINVAL;
    size_t dlen = strlen(delim);
    if (max_bytes > 0 && max_bytes < dlen)
        return -EINVAL; /* could never be answered */
    int r = stream_check_read(s);
    if (r < 0)
        return r;
    stream_ext *x = iol__stream_ext(s);
    if (!x)
        return -ENOMEM;
    if (dlen > x->delim_cap) {
        char *copy = malloc(dlen);
        if (!copy)
            return -ENOMEM;
        if (x->delim != x->delim_inline)
            free(x->delim);
        x->delim = copy;
        x->delim_cap = dlen;
    }
    memcpy(x->delim, delim, dlen);
    x->delim_len = dlen;
    x->scan_pos = 0;
    x->read_max = max_bytes;
    s->read_kind = READ_UNTIL;
    s->read_cb = cb;
    s->read_arg = arg;
    return stream_arm_read(s);
}

int iol_stream_read_until(iol_stream *s, const char *delim, iol_read_fn cb, void *arg)
{
    return iol_stream_read_until_max(s, delim, 0, cb, arg);
}

int iol_stream_read_bytes(iol_stream *s, size_t n, bool partial, iol_read_fn cb, void *arg)
{
    if (!s)
        return -EINVAL;
    int thread_err = iol__stream_check_thread(s);
    if (thread_err)
        return thread_err;
    if (!cb || n == 0)
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
    if (!s)
        return -EINVAL;
    int thread_err = iol__stream_check_thread(s);
    if (thread_err)
        return thread_err;
    if (!cb)
        return -EINVAL;
    int r = stream_check_read(s);
    if (r < 0)
        return r;
    s->read_kind = READ_UNTIL_CLOSE;
    s->read_cb = cb;
    s->read_arg = arg;
    return stream_arm_read(s);
}


int iol_stream_pause_reading(iol_stream *s)
{
    if (!s)
        return -EINVAL;
    int thread_err = iol__stream_check_thread(s);
    if (thread_err)
        return thread_err;
    if (s->closed)
        return -EPIPE;
    if (s->read_paused)
        return 0;
    s->read_paused = true;
    int r = iol__stream_update_events(s);
    if (r < 0)
        iol__stream_close_internal(s, r); /* it would go on reading */
    return r;
}

int iol_stream_resume_reading(iol_stream *s)
{
    if (!s)
        return -EINVAL;
    int thread_err = iol__stream_check_thread(s);
    if (thread_err)
        return thread_err;
    if (s->closed)
        return -EPIPE;
    if (!s->read_paused)
        return 0;
    s->read_paused = false;
    int r = s->read_kind != READ_NONE && stream_read_decidable(s) ? iol__stream_schedule(s)
                                                                    : iol__stream_update_events(s);
    if (r < 0)
        iol__stream_close_internal(s, r); /* the pending read would never finish */
    return r;
}

/* For the reads of stream_read_more.c. */
int iol__stream_check_read(const iol_stream *s)
{
    return stream_check_read(s);
}

int iol__stream_arm_read(iol_stream *s)
{
    int r = stream_arm_read(s);
    if (r < 0) {
        s->read_streaming = false;
        if (s->ext && s->ext->regex)
            iol__stream_regex_clear(s);
    }
    return r;
}
