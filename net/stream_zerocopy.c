/*
 * net/stream_zerocopy.c — writes that take no copy: the caller's memory
 * (iol_stream_write_ref) and regions of the caller's files
 * (iol_stream_sendfile), queued as segments in order with the copied
 * writes (see stream_seg in stream_impl.h). Consecutive memory segments
 * go out in one writev (sendmsg for sockets, for MSG_NOSIGNAL); a file
 * region goes out with sendfile. Each REF/FILE segment's release runs
 * exactly once, from the loop: when its last byte reached the kernel, or
 * when the stream closed first.
 */
#include "net/stream_impl.h"

#include <errno.h>
#include <stdint.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

enum {
    STREAM_IOV_MAX = 64,              /* segments per writev */
    STREAM_SENDFILE_CHUNK = 1u << 30, /* per sendfile call (Linux takes < 2 GiB) */
};

int iol__stream_segs_reserve(iol_stream *s, size_t n)
{
    if (!iol__stream_ext(s))
        return -ENOMEM;
    if (s->ext->seg_count + n <= s->ext->seg_cap)
        return 0;
    if (s->ext->seg_head > 0) {
        stream_ext *x = s->ext;
        memmove(x->segs, x->segs + x->seg_head, (x->seg_count - x->seg_head) * sizeof(*x->segs));
        s->ext->seg_count -= s->ext->seg_head;
        s->ext->seg_head = 0;
        if (s->ext->seg_count + n <= s->ext->seg_cap)
            return 0;
    }
    size_t cap = s->ext->seg_cap ? s->ext->seg_cap * 2 : 8;
    while (cap < s->ext->seg_count + n)
        cap *= 2;
    stream_seg *segs = realloc(s->ext->segs, cap * sizeof(*segs));
    if (!segs)
        return -ENOMEM;
    s->ext->segs = segs;
    s->ext->seg_cap = cap;
    return 0;
}

void iol__stream_segs_note_copy(iol_stream *s, size_t n)
{
    stream_seg *last = &s->ext->segs[s->ext->seg_count - 1];
    if (last->kind == SEG_COPY)
        last->len += n;
    else
        s->ext->segs[s->ext->seg_count++] = (stream_seg){.kind = SEG_COPY, .len = n};
}

/* An idle stream keeps no segment array. */
static void segs_trim(iol_stream *s)
{
    if (!s->ext || iol__stream_has_segments(s))
        return;
    free(s->ext->segs);
    s->ext->segs = NULL;
    s->ext->seg_head = s->ext->seg_count = s->ext->seg_cap = 0;
}

/* Pops the head segment, running its release. The release may write to
 * the stream again (queueing new segments behind): nothing of the head is
 * used after it. */
static void segs_pop(iol_stream *s)
{
    stream_seg seg = s->ext->segs[s->ext->seg_head++];
    if (!iol__stream_has_segments(s))
        segs_trim(s);
    if (seg.release)
        seg.release(seg.arg);
}

/* The bytes of the segments from the head, up to a FILE one, as iovecs. */
static int segs_gather(iol_stream *s, struct iovec *iov)
{
    int n = 0;
    size_t copy_off = 0; /* COPY segments take wbuf's bytes in turn */
    for (size_t i = s->ext->seg_head; i < s->ext->seg_count && n < STREAM_IOV_MAX; i++) {
        const stream_seg *seg = &s->ext->segs[i];
        if (seg->kind == SEG_FILE)
            break;
        if (seg->kind == SEG_COPY) {
            iov[n].iov_base = iol__buffer_data(&s->wbuf) + copy_off;
            copy_off += seg->len;
        } else {
            iov[n].iov_base = (void *)seg->data;
        }
        iov[n].iov_len = seg->len;
        n++;
    }
    return n;
}

static ssize_t segs_writev(iol_stream *s, struct iovec *iov, int n)
{
    /* TLS: SSL_write takes one buffer, the first segment (its retry
     * after -EAGAIN passes the same bytes again, as OpenSSL wants: a
     * segment advances only by what was written). */
    if (s->tls)
        return n > 0 ? iol__tls_send(s, iov[0].iov_base, iov[0].iov_len) : 0;
    ssize_t r;
    do {
        if (s->is_socket) {
            struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)n};
            r = sendmsg(s->fd, &msg, MSG_NOSIGNAL); /* -EPIPE, not SIGPIPE */
        } else {
            r = writev(s->fd, iov, n);
        }
    } while (r < 0 && errno == EINTR);
    if (r < 0)
        return (errno == EAGAIN || errno == EWOULDBLOCK) ? -EAGAIN : -errno;
    return r;
}

/* sendfile has no MSG_NOSIGNAL: a peer that went away would raise
 * SIGPIPE. Block it on this thread for the call, and take back the one
 * the call raised (EPIPE) before unblocking, so the process never sees
 * it; a SIGPIPE already pending for the thread is lost with it (there is
 * no way to tell the two apart). */
/* TLS: the kernel cannot encrypt, so the region is read (pread: the
 * same bytes again on a retry) and written through SSL_write. */
static ssize_t segs_sendfile_tls(iol_stream *s, stream_seg *seg)
{
    char buf[16384]; /* one TLS record */
    size_t want = seg->len < sizeof buf ? seg->len : sizeof buf;
    ssize_t k;
    do {
        k = pread(seg->fd, buf, want, seg->offset);
    } while (k < 0 && errno == EINTR);
    if (k < 0)
        return -errno;
    if (k == 0)
        return -EIO; /* the file ended before the region did */
    ssize_t n = iol__tls_send(s, buf, (size_t)k);
    if (n > 0)
        seg->offset += n; /* what sendfile does itself */
    return n;
}

static ssize_t segs_sendfile(iol_stream *s, stream_seg *seg)
{
    if (s->tls)
        return segs_sendfile_tls(s, seg);
    size_t want = seg->len < STREAM_SENDFILE_CHUNK ? seg->len : STREAM_SENDFILE_CHUNK;
    sigset_t pipe_set, old;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
    ssize_t r;
    do {
        r = sendfile(s->fd, seg->fd, &seg->offset, want);
    } while (r < 0 && errno == EINTR);
    int err = errno;
    if (r < 0 && err == EPIPE) {
        struct timespec zero = {0, 0};
        (void)sigtimedwait(&pipe_set, NULL, &zero);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r < 0)
        return (err == EAGAIN || err == EWOULDBLOCK) ? -EAGAIN : -err;
    if (r == 0)
        return -EIO; /* the file ended before the region did */
    return r;
}

/* Accounts n written bytes from the head: COPY bytes leave wbuf, REF and
 * FILE segments advance (sendfile moved the offset itself), and every
 * finished segment is popped. */
static void segs_consume(iol_stream *s, size_t n)
{
    iol__stream_wrote_bytes(s, n);
    while (iol__stream_has_segments(s)) {
        stream_seg *seg = &s->ext->segs[s->ext->seg_head];
        size_t k = n < seg->len ? n : seg->len;
        if (seg->kind == SEG_COPY)
            iol__buffer_consume(&s->wbuf, k);
        else if (seg->kind == SEG_REF)
            seg->data += k;
        seg->len -= k;
        n -= k;
        if (seg->len > 0)
            break;
        segs_pop(s);
        if (s->closed)
            return;
    }
}

void iol__stream_segs_flush(iol_stream *s)
{
    for (int rounds = 0; iol__stream_has_segments(s) && rounds < STREAM_IO_ROUNDS; rounds++) {
        stream_seg *head = &s->ext->segs[s->ext->seg_head];
        ssize_t n;
        if (head->kind == SEG_FILE) {
            n = segs_sendfile(s, head);
        } else {
            struct iovec iov[STREAM_IOV_MAX];
            n = segs_writev(s, iov, segs_gather(s, iov));
        }
        if (n == -EAGAIN)
            break;
        if (n < 0) {
            iol__stream_close_internal(s, (int)n);
            return;
        }
        segs_consume(s, (size_t)n);
        if (s->closed)
            return;
    }
}

void iol__stream_segs_drop(iol_stream *s)
{
    while (iol__stream_has_segments(s))
        segs_pop(s);
    segs_trim(s);
}

/* Queues one REF or FILE segment behind what is pending. */
static int stream_queue_segment(iol_stream *s, stream_seg seg)
{
    if (s->closed || s->wr_shut)
        return -EPIPE;
    if (s->ext && s->ext->max_write_buffer && (seg.len > s->ext->max_write_buffer ||
                                iol__stream_pending(s) > s->ext->max_write_buffer - seg.len))
        return -ENOBUFS;
    /* The bytes copied before (wbuf) become a COPY segment ahead of it. */
    bool wrap = !iol__stream_has_segments(s) && iol__buffer_len(&s->wbuf) > 0;
    int r = iol__stream_segs_reserve(s, wrap ? 2 : 1);
    if (r < 0)
        return r;
    if (wrap)
        s->ext->segs[s->ext->seg_count++] = (stream_seg){.kind = SEG_COPY, .len = iol__buffer_len(&s->wbuf)};
    s->ext->segs[s->ext->seg_count++] = seg;
    s->pending += seg.len;
    /* Queued: even if watching for WRITE fails now and closes the
     * stream, the release runs (from the close), so the call says 0. */
    iol__stream_hold(s);
    (void)iol__stream_queued(s);
    iol__stream_release(s);
    return 0;
}

/* ------------------------------------------------------------- Public API */

int iol_stream_write_ref(iol_stream *s, const void *data, size_t len, iol_callback_fn release, void *arg)
{
    if (!s)
        return -EINVAL;
    int thread_err = iol__stream_check_thread(s);
    if (thread_err)
        return thread_err;
    if (!data || len == 0)
        return -EINVAL;
    return stream_queue_segment(s, (stream_seg){.kind = SEG_REF, .len = len, .data = data, .release = release,
                                                .arg = arg});
}

int iol_stream_sendfile(iol_stream *s, int fd, off_t offset, size_t len, iol_callback_fn release, void *arg)
{
    /* off_t is 64-bit (_FILE_OFFSET_BITS=64 or LP64): the region must end
     * where an off_t can point. */
    const uint64_t off_max = INT64_MAX;
    if (!s)
        return -EINVAL;
    int thread_err = iol__stream_check_thread(s);
    if (thread_err)
        return thread_err;
    if (offset < 0 || len == 0 || (uint64_t)len > off_max - (uint64_t)offset)
        return -EINVAL;
    if (fd < 0)
        return -EBADF;
    return stream_queue_segment(s, (stream_seg){.kind = SEG_FILE, .len = len, .fd = fd, .offset = offset,
                                                .release = release, .arg = arg});
}
