/*
 * net/stream_uring.c — a plain socket stream on a loop with a completion
 * path (io_uring, loop/completion.h): the data moves by recv and send
 * operations the kernel performs, with no poll re-arm and no read or
 * write system call per request; they reach the kernel in the io_uring_enter
 * that waits.
 *
 * recv takes its memory from the loop's buffer ring only when data
 * arrives, so a connection waiting for a request holds no buffer; the
 * bytes are copied into rbuf and the ring buffer goes straight back. Only
 * a pending read (not paused) keeps a recv in flight, one at a time, and
 * at most the read's room (max_buffer_size) is asked for: the same bytes
 * in the same order as the handler path. An idle stream's watch for the
 * peer closing, a dry ring (-ENOBUFS) and zero-copy segments use the fd
 * handler as before. A recv after one that drained the socket (the
 * kernel says whether data was left) waits for data before it tries
 * (IOL__RECV_POLL_FIRST): a request/response peer sends nothing more
 * before our answer, and the attempt would only fail and arm a poll.
 *
 * Writes try the kernel at once, as on the handler path (Tornado's
 * semantics: a write to a vanished peer fails in the call); what the
 * kernel does not take goes through the ring, not a WRITE poll. With
 * iol_stream_set_deferred_writes every write goes through the ring. One
 * send at a time, of sendbuf: the write buffer is handed over whole (no
 * copy) when the send is submitted, and new writes fill a fresh one. A
 * short send resubmits the rest before anything newer.
 *
 * Lifetime: every operation in flight holds a stream reference, dropped
 * when its result arrives; closing cancels them, so a closed stream is
 * freed at its last result, never before (loop/completion.h). The fd is
 * closed by close(2) at once, as on the handler path (a ring close would
 * wait for the next iteration, and the peer must see the end when the
 * call returns), except with deferred writes, where the close is a ring
 * operation as well; a recv still in flight keeps the socket open until
 * its cancel reaches the kernel, at the next wait, as an armed poll does.
 */
#include "net/stream_impl.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { OP_RECV, OP_SEND, OP_CLOSE };

static void uring_done(iol__completion *c, const iol__completion_result *r);

void iol__stream_uring_init(iol_stream *s)
{
    s->op.fn = uring_done;
    int features = s->is_socket ? iol__loop_completion_features(s->loop) : -ENOTSUP;
    s->uring = features >= 0 && (features & IOL__COMPLETION_BUFFER_RING);
}

static void submit_recv(iol_stream *s)
{
    /* As the handler path: never past max_buffer_size (read_until_close
     * reads one byte more at the limit, to tell EOF from too much). */
    size_t limit = iol__buffer_len(&s->rbuf) < iol__stream_max_buffer(s) ? iol__stream_max_buffer(s) - iol__buffer_len(&s->rbuf) : 1;
    int r = iol__loop_recv(s->loop, &s->op, OP_RECV, s->fd, limit, s->recv_drained ? IOL__RECV_POLL_FIRST : 0);
    if (r == 0) {
        s->recv_inflight = true;
        s->refs++;
    } else {
        s->uring_nobufs = true; /* -EBUSY, -ENOMEM...: the handler reads this time */
    }
}

/* sendbuf (or, when empty, the write buffer handed over) goes out. */
static void submit_send(iol_stream *s)
{
    if (iol__buffer_len(&s->sendbuf) == 0) {
        iol__buffer_free(&s->sendbuf);
        s->sendbuf = s->wbuf;
        s->wbuf = (iol__buffer){ 0 };
    }
    if (iol__buffer_len(&s->sendbuf) == 0)
        return;
    int r = iol__loop_send(s->loop, &s->op, OP_SEND, s->fd, iol__buffer_data(&s->sendbuf), iol__buffer_len(&s->sendbuf));
    if (r == 0) {
        s->send_inflight = true;
        s->refs++;
        return;
    }
    /* Not taken: the bytes go back in front of the newer ones, for the
     * handler path; behind queued segments' backs, as a COPY segment of
     * their own at the head. */
    r = 0;
    if (iol__stream_has_segments(s) && (r = iol__stream_segs_reserve(s, 1)) == 0) {
        stream_ext *x = s->ext;
        memmove(x->segs + x->seg_head + 1, x->segs + x->seg_head, (x->seg_count - x->seg_head) * sizeof(*x->segs));
        x->segs[x->seg_head] = (stream_seg){.kind = SEG_COPY, .len = iol__buffer_len(&s->sendbuf)};
        x->seg_count++;
    }
    if (r == 0 && iol__buffer_len(&s->wbuf) > 0)
        r = iol__buffer_append(&s->sendbuf, iol__buffer_data(&s->wbuf), iol__buffer_len(&s->wbuf));
    if (r < 0) {
        iol__stream_close_internal(s, r);
        return;
    }
    iol__buffer_free(&s->wbuf);
    s->wbuf = s->sendbuf;
    s->sendbuf = (iol__buffer){ 0 };
}

unsigned iol__stream_uring_update(iol_stream *s, unsigned want)
{
    if (!s->uring)
        return want;
    /* The idle watch for the peer closing (close callback, no read) is a
     * recv too on a stream with deferred writes (a server's): no handler
     * per request; on others the fd handler, so start_tls finds nothing
     * in flight. */
    bool want_recv = (want & IOL_READ) && (s->read_kind != READ_NONE || s->defer_writes) && !s->uring_nobufs;
    if (want_recv && !s->recv_inflight) {
        submit_recv(s);
    } else if (!want_recv && s->recv_inflight && !s->recv_cancelling) {
        if (iol__loop_cancel(s->loop, &s->op, OP_RECV) == 0)
            s->recv_cancelling = true;
    }
    if (s->recv_inflight)
        want &= ~IOL_READ;
    /* A short send's rest goes before anything newer, segments included
     * (the handler path writes those, but only after it). */
    bool rest = iol__buffer_len(&s->sendbuf) > 0;
    if ((want & IOL_WRITE) && !s->send_inflight && (rest || !iol__stream_has_segments(s)))
        submit_send(s);
    if (s->send_inflight || (!iol__stream_has_segments(s) && iol__buffer_len(&s->wbuf) == 0))
        want &= ~IOL_WRITE;
    return want;
}

void iol__stream_uring_count(iol_stream *s)
{
    bool count = s->uring && s->fd >= 0 && !s->closed && !s->registered;
    if (count != s->counted) {
        iol__loop_count_fd(s->loop, count ? 1 : -1);
        s->counted = count;
    }
}

bool iol__stream_uring_drop(iol_stream *s)
{
    if (!s->uring)
        return false;
    if (s->recv_inflight && !s->recv_cancelling && iol__loop_cancel(s->loop, &s->op, OP_RECV) == 0)
        s->recv_cancelling = true;
    if (s->send_inflight)
        (void)iol__loop_cancel(s->loop, &s->op, OP_SEND); /* the rest is dropped, as close drops wbuf */
    /* A server's stream (deferred writes) closes through the ring too:
     * the fd goes at the next wait, with no system call of its own. */
    if (!s->defer_writes || iol__loop_close_op(s->loop, &s->op, OP_CLOSE, s->fd) < 0)
        return false;
    s->refs++;
    return true;
}

static void on_recv(iol_stream *s, const iol__completion_result *r)
{
    s->recv_inflight = s->recv_cancelling = false;
    /* A request/response peer sends nothing more until it has our answer:
     * the next recv would only fail and arm a poll. */
    s->recv_drained = r->res > 0 && !r->nonempty;
    if (r->buf) {
        int err = s->closed ? 0 : iol__buffer_append(&s->rbuf, r->buf, (size_t)r->res);
        iol__loop_buffer_recycle(s->loop, r->bid);
        if (err < 0)
            iol__stream_close_internal(s, err);
    }
    if (s->closed)
        return;
    if (r->res == 0) {
        s->eof = true;
        iol__stream_close_internal(s, 0);
        return;
    }
    if (r->res == -ENOBUFS)
        s->uring_nobufs = true;
    else if (r->res < 0 && r->res != -ECANCELED)
        iol__stream_close_internal(s, r->res);
    while (!s->closed && !s->read_paused && s->read_kind != READ_NONE && iol__stream_try_complete_read(s))
        ; /* the callback may have started another read, answered by the buffer */
}

static void on_send(iol_stream *s, const iol__completion_result *r)
{
    s->send_inflight = false;
    if (s->closed) {
        iol__buffer_free(&s->sendbuf);
        return;
    }
    if (r->res == -ECANCELED)
        return; /* not by us (the submitting thread exited): update_events sends sendbuf again */
    if (r->res < 0) {
        iol__buffer_free(&s->sendbuf);
        iol__stream_close_internal(s, r->res);
        return;
    }
    iol__buffer_consume(&s->sendbuf, (size_t)r->res);
    iol__stream_wrote_bytes(s, (size_t)r->res);
    if (iol__buffer_len(&s->sendbuf) == 0)
        iol__buffer_free(&s->sendbuf);
    iol__stream_wrote(s);
}

static void uring_done(iol__completion *c, const iol__completion_result *r)
{
    iol_stream *s = (iol_stream *)((char *)c - offsetof(iol_stream, op));
    /* The operation's reference is this frame's now. */
    s->in_completion = true;
    if (r->kind == OP_RECV)
        on_recv(s, r);
    else if (r->kind == OP_SEND)
        on_send(s, r);
    s->in_completion = false;
    if (!s->closed) {
        int err = iol__stream_update_events(s);
        if (err < 0)
            iol__stream_close_internal(s, err);
    }
    iol__stream_release(s);
}
