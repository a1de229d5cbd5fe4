/*
 * net/stream_write.c — a stream's writes: the write buffer and the
 * `done`s that run once their bytes reached the kernel.
 */
#include "net/stream_impl.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static ssize_t stream_send(iol_stream *s, const void *data, size_t len)
{
    if (s->tls)
        return iol__tls_send(s, data, len);
    ssize_t n;
    do {
        /* MSG_NOSIGNAL: a vanished peer is -EPIPE here, not a SIGPIPE. */
        n = s->is_socket ? send(s->fd, data, len, MSG_NOSIGNAL) : write(s->fd, data, len);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return (errno == EAGAIN || errno == EWOULDBLOCK) ? -EAGAIN : -errno;
    return n;
}


/* ------------------------------------------------------------------ Writes */

/* Runs the dones whose bytes reached the kernel, in write order. */
void iol__stream_fire_dones(iol_stream *s)
{
    stream_ext *x = s->ext; /* never freed before the stream */
    while (x && x->done_head < x->done_count && x->dones[x->done_head].end <= x->written) {
        stream_write_done d = x->dones[x->done_head++];
        if (x->done_head == x->done_count) {
            /* Empty: an idle stream keeps no array (d.fn may write again
             * and make a new one; the loop then reads that). */
            free(x->dones);
            x->dones = NULL;
            x->done_cap = 0;
            x->done_head = x->done_count = 0;
        }
        d.fn(d.arg);
    }
}

/* Room for one more done entry (so a write never fails half-done). */
int iol__stream_dones_reserve(iol_stream *s)
{
    stream_ext *x = iol__stream_ext(s);
    if (!x)
        return -ENOMEM;
    if (x->done_count < x->done_cap)
        return 0;
    if (x->done_head > 0) {
        memmove(x->dones, x->dones + x->done_head, (x->done_count - x->done_head) * sizeof(*x->dones));
        x->done_count -= x->done_head;
        x->done_head = 0;
        return 0;
    }
    size_t cap = x->done_cap ? x->done_cap * 2 : 8;
    stream_write_done *dones = realloc(x->dones, cap * sizeof(*dones));
    if (!dones)
        return -ENOMEM;
    x->dones = dones;
    x->done_cap = cap;
    return 0;
}

void iol__stream_handle_write(iol_stream *s)
{
    if (s->send_inflight || iol__buffer_len(&s->sendbuf) > 0)
        return; /* it (or a short send's rest) comes first: the bytes stay in order */
    if (iol__stream_has_segments(s))
        iol__stream_segs_flush(s);
    for (int rounds = 0; !iol__stream_has_segments(s) && iol__buffer_len(&s->wbuf) > 0 && rounds < STREAM_IO_ROUNDS; rounds++) {
        ssize_t n = stream_send(s, iol__buffer_data(&s->wbuf), iol__buffer_len(&s->wbuf));
        if (n == -EAGAIN)
            break;
        if (n < 0) {
            iol__stream_close_internal(s, (int)n);
            break;
        }
        iol__buffer_consume(&s->wbuf, (size_t)n);
        iol__stream_wrote_bytes(s, (size_t)n);
    }
    if (s->closed)
        return;
    iol__buffer_trim(&s->wbuf);
    iol__stream_wrote(s);
}

void iol__stream_wrote(iol_stream *s)
{
    if (s->ext && s->ext->wm_above && iol__stream_pending(s) <= s->ext->wm_low)
        s->ext->wm_above = false;
    iol__stream_fire_dones(s);
    if (!s->closed)
        iol__stream_fire_watermark(s);
    iol__stream_shutdown_step(s);
}

void iol__stream_fire_watermark(iol_stream *s)
{
    if (!s->ext || !s->ext->wm_fn || s->ext->wm_told == s->ext->wm_above)
        return;
    s->ext->wm_told = s->ext->wm_above;
    s->ext->wm_fn(s, s->ext->wm_told, s->ext->wm_arg);
}

/* The buffer grew: past the high mark, tell the producer from the loop
 * (never inside iol_stream_write, like every other callback). */
static void stream_check_high_watermark(iol_stream *s)
{
    if (s->ext && s->ext->wm_fn && !s->ext->wm_above && iol__stream_pending(s) > s->ext->wm_high) {
        s->ext->wm_above = true;
        /* A failure to queue leaves it for the next write event. */
        (void)iol__stream_schedule(s);
    }
}

int iol__stream_queued(iol_stream *s)
{
    stream_check_high_watermark(s);
    if (iol__stream_pending(s) == 0 || (s->watched & IOL_WRITE))
        return 0;
    int r = iol__stream_update_events(s);
    if (r < 0) /* the queued bytes would never leave */
        iol__stream_close_internal(s, r);
    return r;
}

/* ------------------------------------------------------------- Public API */

int iol_stream_write(iol_stream *s, const void *data, size_t len, iol_callback_fn done, void *arg)
{
    if (!s)
        return -EINVAL;
    int thread_err = iol__stream_check_thread(s);
    if (thread_err)
        return thread_err;
    if (!data && len > 0)
        return -EINVAL;
    if (s->closed)
        return -EPIPE;
    if (s->wr_shut)
        return -EPIPE; /* iol_stream_shutdown closed the write side */
    /* Tornado checks the whole write against the limit, even one that
     * could go straight to the kernel: the limit is predictable. */
    if (s->ext && s->ext->max_write_buffer && (len > s->ext->max_write_buffer || iol__stream_pending(s) > s->ext->max_write_buffer - len))
        return -ENOBUFS;
    int r = done ? iol__stream_dones_reserve(s) : 0;
    if (r == 0 && iol__stream_has_segments(s))
        r = iol__stream_segs_reserve(s, 1);
    if (r < 0)
        return r;

    iol__stream_hold(s);
    size_t sent = 0;
    if (iol__stream_pending(s) == 0 && !s->connecting && len > 0 && !(s->uring && s->defer_writes)) {
        ssize_t n = stream_send(s, data, len);
        if (n >= 0) {
            sent = (size_t)n;
        } else if (n != -EAGAIN) {
            r = (int)n; /* EPIPE, ECONNRESET...: the stream is over */
            iol__stream_close_internal(s, r);
            goto out;
        }
    }
    if (sent < len)
        r = iol__buffer_append(&s->wbuf, (const char *)data + sent, len - sent);
    if (r < 0) {
        if (sent > 0) /* part of it is gone already: the byte stream is torn */
            iol__stream_close_internal(s, r);
        goto out;
    }
    if (iol__stream_has_segments(s) && sent < len)
        iol__stream_segs_note_copy(s, len - sent);
    s->pending += len - sent;
    if (s->ext)
        s->ext->written += sent;
    if (done) {
        s->ext->dones[s->ext->done_count++] =
            (stream_write_done){.end = s->ext->written + s->pending, .fn = done, .arg = arg};
        /* Even when written at once, done runs later from the loop, never
         * inside this call; a failure to queue leaves it for the next
         * write event or the close. */
        if (s->pending == 0)
            (void)iol__stream_schedule(s);
    }
    r = iol__stream_queued(s);
out:
    iol__stream_release(s);
    return r;
}

size_t iol_stream_write_buffer_size(const iol_stream *s)
{
    /* Loop-thread state: 0 from another thread, without reading it. */
    return s && !iol__stream_check_thread(s) ? iol__stream_pending(s) : 0;
}

int iol_stream_set_max_write_buffer(iol_stream *s, size_t max)
{
    if (!s)
        return -EINVAL;
    int thread_err = iol__stream_check_thread(s);
    if (thread_err)
        return thread_err;
    if (max == 0 && !s->ext)
        return 0;
    if (!iol__stream_ext(s))
        return -ENOMEM;
    s->ext->max_write_buffer = max;
    return 0;
}


int iol_stream_set_deferred_writes(iol_stream *s, bool on)
{
    if (!s)
        return -EINVAL;
    int thread_err = iol__stream_check_thread(s);
    if (thread_err)
        return thread_err;
    if (s->closed)
        return -EPIPE;
    s->defer_writes = on;
    return 0;
}

int iol_stream_set_write_watermarks(iol_stream *s, size_t high, size_t low, iol_watermark_fn fn, void *arg)
{
    if (!s)
        return -EINVAL;
    int thread_err = iol__stream_check_thread(s);
    if (thread_err)
        return thread_err;
    if (fn && (high == 0 || low > high))
        return -EINVAL;
    if (s->closed)
        return -EPIPE;
    if (!fn && !s->ext)
        return 0;
    if (!iol__stream_ext(s))
        return -ENOMEM;
    s->ext->wm_fn = fn;
    s->ext->wm_arg = arg;
    s->ext->wm_high = fn ? high : 0;
    s->ext->wm_low = fn ? low : 0;
    /* The new producer starts from "below" and hears of a buffer that is
     * already past the new high mark from the loop. */
    s->ext->wm_above = false;
    s->ext->wm_told = false;
    stream_check_high_watermark(s);
    return 0;
}
