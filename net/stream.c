/*
 * net/stream.c — Tornado's IOStream over a non-blocking socket: the stream's
 * lifetime, its fd handler and deferred callback, and the small calls.
 * Reading, writing and connecting live in their own files; the byte
 * buffers in buffer.c. Uses only the public loop API, so a stream works on
 * any loop. See stream_impl.h for the callback and lifetime rules.
 */
#include "net/stream_impl.h"

#include "loop/status.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdlib.h>
#include <unistd.h>

static void stream_deferred(void *arg);
static void stream_finish_close(iol_stream *s);

/* --------------------------------------------------------------- Lifetime */

void iol__stream_free(iol_stream *s)
{
    iol__loop_remove_close_hook(s->loop, &s->close_hook);
    if (s->tls)
        iol__tls_free(s);
    iol__buffer_free(&s->rbuf);
    iol__buffer_free(&s->wbuf);
    iol__buffer_free(&s->sendbuf);
    stream_ext *x = s->ext;
    if (x) {
        free(x->dones);
        free(x->segs);
        if (x->delim != x->delim_inline)
            free(x->delim);
        if (x->regex)
            iol__stream_regex_clear(s);
        free(x->addrs);
        free(x->source);
        if (x->connect_timer)
            (void)iol_loop_remove_timeout(s->loop, x->connect_timer); /* nothing to undo once the loop is gone */
        free(x);
    }
    iol_loop_unref(s->loop);
    free(s);
}

stream_ext *iol__stream_ext(iol_stream *s)
{
    if (s->ext)
        return s->ext;
    stream_ext *x = calloc(1, sizeof(*x));
    if (!x)
        return NULL;
    x->delim = x->delim_inline;
    x->delim_cap = sizeof(x->delim_inline);
    s->ext = x;
    return x;
}


void iol__stream_release(iol_stream *s)
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
    iol__stream_free(s);
}

/* Queues the one deferred callback (which then holds a reference). From
 * inside that callback, asks it to look again before it returns instead:
 * a second queued callback could be stranded by a loop that stops (and is
 * closed) right after the close callback ran. */
int iol__stream_schedule(iol_stream *s)
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

/* A stream on the completion path holds its fd by a claim while it has
 * no handler (iol__loop_fd_claim): these keep s->claimed in step. A
 * claim fails only for memory, and the fd then simply stays unclaimed. */
static void stream_claim(iol_stream *s, int fd)
{
    s->claimed = iol__loop_fd_claim(s->loop, fd) == 0;
}

static void stream_unclaim(iol_stream *s, int fd)
{
    if (s->claimed)
        iol__loop_fd_unclaim(s->loop, fd);
    s->claimed = false;
}

void iol__stream_drop_fd(iol_stream *s)
{
    if (s->fd < 0)
        return;
    if (s->registered)
        (void)iol_loop_remove_handler(s->loop, s->fd); /* nothing to undo if the loop is gone */
    stream_unclaim(s, s->fd);
    if (!iol__stream_uring_drop(s))
        close(s->fd);
    s->fd = -1;
    s->registered = false;
    s->watched = 0;
    iol__stream_uring_count(s);
}

/* Lets go of the fd without closing it: no handler, no claim, not in the
 * loop's handler count. For a constructor that fails after iol_stream_new
 * (iol_tls_stream_new): the caller keeps its fd, as after any failed
 * iol_stream_new, and the loop keeps nothing of it. */
void iol__stream_disown_fd(iol_stream *s)
{
    if (s->fd < 0)
        return;
    if (s->registered)
        (void)iol_loop_remove_handler(s->loop, s->fd); /* nothing to undo if the loop is gone */
    stream_unclaim(s, s->fd);
    s->fd = -1;
    s->registered = false;
    s->watched = 0;
    iol__stream_uring_count(s);
}

/* Marks the stream closed; the deferred callback finishes the job. Never
 * frees and never calls back, so callers may keep using s. */
void iol__stream_close_internal(iol_stream *s, int err)
{
    if (s->closed)
        return;
    s->closed = true;
    s->error = err;
    if (s->tls)
        iol__tls_on_close(s, err);
    iol__stream_drop_fd(s);
    /* Unwritten data is dropped, as Tornado's close does. */
    iol__buffer_clear(&s->wbuf);
    s->pending = 0; /* zero-copy segments are released by finish_close */
    /* On failure stream_release finishes once the stack unwinds. */
    (void)iol__stream_schedule(s);
}

/* ------------------------------------------------------------------ Events */

static unsigned stream_wanted_events(const iol_stream *s)
{
    if (s->connecting)
        return s->connect_report ? 0 : IOL_WRITE;
    unsigned events = 0;
    if (s->read_paused)
        ; /* the kernel's buffer fills and the peer's window closes: that is the point */
    else if (s->read_kind != READ_NONE)
        events |= IOL_READ;
    else if (s->close_cb && iol__buffer_len(&s->rbuf) == 0 && !s->parked)
        events |= IOL_READ; /* idle: notice the peer closing (Tornado's error listener) */
    if (iol__stream_pending(s) > 0 || (s->wr_shut && !s->fin_sent))
        events |= IOL_WRITE; /* the FIN waits for room too (TLS: close_notify) */
    if (s->tls)
        events = iol__tls_events(s, events);
    return events;
}

/* Brings the handler in line with what the stream waits for; a syscall
 * only when that changed. A stream that waits for nothing is not
 * registered at all (rather than with events 0): that works on any loop,
 * and an idle stream then costs the poller nothing. */
int iol__stream_update_events(iol_stream *s)
{
    if (s->closed || s->fd < 0)
        return 0;
    /* Inside a result's callbacks the state passes through "no read
     * pending" (idle: watch the fd) on its way to the next read: decide
     * once, when they returned (stream_uring.c), not a handler per request. */
    if (s->in_completion)
        return 0;
    unsigned want = iol__stream_uring_update(s, stream_wanted_events(s));
    int r = 0;
    if (s->closed)
        return 0; /* a failed submission closed it */
    if (want == 0) {
        if (s->registered) {
            r = iol_loop_remove_handler(s->loop, s->fd);
            if (r == -ENOENT)
                r = 0;
            if (r == 0)
                s->registered = false;
        }
        if (!s->registered && s->uring && !s->claimed)
            stream_claim(s, s->fd); /* the ring watches it alone again */
    } else if (!s->registered) {
        bool was_claimed = s->claimed;
        stream_unclaim(s, s->fd);
        r = iol_loop_add_handler(s->loop, s->fd, want, iol__stream_on_events, s);
        if (r == 0)
            s->registered = true;
        else if (was_claimed)
            stream_claim(s, s->fd); /* the fd stays ours */
    } else if (want != s->watched) {
        r = iol_loop_update_handler(s->loop, s->fd, want);
    }
    if (r == 0)
        s->watched = want;
    iol__stream_uring_count(s);
    return r;
}

/* The pending error of a socket (SO_ERROR clears it), 0 if none. */
int iol__stream_socket_error(const iol_stream *s)
{
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        return errno == ENOTSOCK ? 0 : errno;
    return err;
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
    iol__stream_fire_dones(s);
    iol__stream_segs_drop(s);
    iol__stream_shutdown_report(s);
    if (s->connecting)
        iol__stream_connect_done(s, s->error ? s->error : -EPIPE);
    if (s->tls)
        iol__tls_finish_close(s);
    if (s->read_kind != READ_NONE) {
        /* A clean close by the peer is IOL_EOF, our own close -EPIPE. */
        int status = s->error ? s->error : s->eof ? IOL_EOF : -EPIPE;
        size_t n = 0;
        if (s->read_streaming)
            iol__stream_streaming_close(s, status);
        else if (s->read_kind == READ_UNTIL_CLOSE) {
            n = iol__buffer_len(&s->rbuf);
            if (s->eof)
                status = 0;
        }
        if (s->read_kind != READ_NONE && !s->read_streaming)
            iol__stream_deliver(s, n, status);
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
        iol__stream_connect_done(s, s->ext->connect_status);
    iol__stream_fire_dones(s);
    if (!s->closed) {
        iol__stream_shutdown_step(s);
        iol__stream_shutdown_report(s);
    }
    if (!s->closed && s->tls)
        iol__tls_deferred(s);
    if (!s->closed)
        iol__stream_fire_watermark(s);
    if (!s->closed && s->read_kind != READ_NONE && !s->read_paused)
        (void)iol__stream_try_complete_read(s);
    s->in_deferred = false;
    if (s->closed) {
        /* Closed before or during this callback: finish here, after the
         * callbacks above, so nothing of the stream stays queued. */
        stream_finish_close(s);
    } else {
        /* Work asked for meanwhile (a read answered by the buffer, a done
         * due) waits for the next iteration, as from outside. */
        if (s->deferred_again)
            (void)iol__stream_schedule(s);
        int r = iol__stream_update_events(s);
        if (r < 0)
            iol__stream_close_internal(s, r);
    }
    iol__stream_release(s);
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
    if (s->ext && s->ext->resolving) {
        /* The lookup's callback will not run on a closed loop (the
         * executor's answer finds it closed): drop its reference too. */
        iol__resolve_job_release(s->ext->resolving);
        s->ext->resolving = NULL;
        s->refs--;
    }
    if (s->refs > s->op.inflight) {
        /* A frame of the stream is on the stack: impossible while the loop
         * is stopped; leak rather than free under it. */
        return;
    }
    s->loop_closing = true;
    iol__stream_close_internal(s, -ESHUTDOWN); /* no-op if closed already */
    stream_finish_close(s);
    /* Operations in flight (cancelled by the close) hold references: the
     * loop delivers their results before it closes, and the last frees. */
    if (s->refs == 0)
        iol__stream_free(s);
}

void iol__stream_on_events(int fd, unsigned events, void *arg)
{
    iol_stream *s = arg;
    (void)fd;
    iol__stream_hold(s);
    if (s->connecting) {
        iol__stream_handle_connect(s);
    } else if (s->tls && iol__tls_on_events(s, &events)) {
        ; /* the handshake took them */
    } else {
        int err = (events & IOL_ERROR) ? iol__stream_socket_error(s) : 0;
        bool acted = false;
        if (err) {
            iol__stream_close_internal(s, -err);
        } else {
            if ((events & (IOL_READ | IOL_ERROR)) && (s->watched & IOL_READ)) {
                iol__stream_handle_read(s);
                acted = true;
            }
            if (!s->closed && (events & (IOL_WRITE | IOL_ERROR)) && iol__stream_pending(s) > 0) {
                iol__stream_handle_write(s);
                acted = true;
            }
            if (!s->closed && (events & IOL_ERROR) && !acted)
                s->parked = true; /* hung up, nothing asked of it: wait for a request */
        }
    }
    iol__stream_shutdown_step(s); /* a connect or handshake may have ended */
    if (!s->closed) {
        int r = iol__stream_update_events(s);
        if (r < 0)
            iol__stream_close_internal(s, r);
    }
    iol__stream_release(s);
}

/* A runtime's drain is over and shuts the socket for writing next: a TLS
 * stream sends close_notify first (loop/close_hook.h). */
static void stream_loop_winding_down(iol__close_hook *hook)
{
    iol_stream *s = (iol_stream *)((char *)hook - offsetof(iol_stream, close_hook));
    if (s->tls && !s->closed)
        iol__tls_wind_down(s);
}

/* ------------------------------------------------------------- Public API */

int iol__stream_alloc(iol_stream **out, iol_loop *loop, size_t max_buffer_size)
{
    iol_stream *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->close_hook.fn = stream_loop_closing;
    s->close_hook.wind_down = stream_loop_winding_down;
    int r = iol__loop_add_close_hook(loop, &s->close_hook);
    if (r < 0) {
        free(s);
        return r;
    }
    s->loop = iol_loop_ref(loop);
    s->fd = -1;
    if (!max_buffer_size)
        max_buffer_size = STREAM_DEFAULT_MAX_BUFFER;
    if (max_buffer_size <= UINT32_MAX) {
        s->max_buffer = (uint32_t)max_buffer_size;
    } else {
        stream_ext *x = iol__stream_ext(s);
        if (!x) {
            iol__stream_free(s);
            return -ENOMEM;
        }
        x->max_buffer_size = max_buffer_size;
    }
    *out = s;
    return 0;
}

int iol_stream_new(iol_stream **out, iol_loop *loop, int fd, size_t max_buffer_size)
{
    if (!out || !loop)
        return -EINVAL;
    int r = iol__loop_owner_check(loop);
    if (r)
        return r;
    if (fd < 0)
        return -EBADF;
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0)
        return -EBADF;

    iol_stream *s;
    r = iol__stream_alloc(&s, loop, max_buffer_size);
    if (r < 0)
        return r;
    int type;
    socklen_t len = sizeof(type);
    s->is_socket = getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0;
    iol__stream_uring_init(s);
    /* Registered now so -EEXIST surfaces here. READ is a placeholder: the
     * first request or event narrows it, sparing a syscall meanwhile. A
     * stream on the completion path has the ring watch its fd: it only
     * claims the fd (the same -EEXIST), and a handler comes when one is
     * needed (update_events). That spares a poll armed and removed per
     * connection and the fd tables' slots (32 bytes each). */
    if (s->uring) {
        r = iol__loop_fd_claim(loop, fd);
        s->claimed = r == 0; /* not stream_claim: a failure here is the caller's answer */
    } else {
        r = iol_loop_add_handler(loop, fd, IOL_READ, iol__stream_on_events, s);
        s->registered = r == 0;
    }
    if (r < 0)
        goto fail;
    if (!(flags & O_NONBLOCK) && fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
        r = -errno;
        if (s->registered)
            (void)iol_loop_remove_handler(loop, fd);
        stream_unclaim(s, fd);
        goto fail;
    }
    s->fd = fd;
    s->watched = s->registered ? IOL_READ : 0;
    iol__stream_uring_count(s); /* in the loop's handler count without a handler */
    *out = s;
    return 0;
fail:
    iol__stream_free(s);
    return r;
}


int iol_stream_set_close_callback(iol_stream *s, iol_close_fn fn, void *arg)
{
    if (!s)
        return -EINVAL;
    int thread_err = iol__stream_check_thread(s);
    if (thread_err)
        return thread_err;
    if (s->finished)
        return -EPIPE;
    s->close_cb = fn;
    s->close_arg = arg;
    /* With a close callback, an idle stream watches for the peer closing. */
    return iol__stream_update_events(s);
}

int iol_stream_close(iol_stream *s)
{
    if (!s)
        return -EINVAL;
    int thread_err = iol__stream_check_thread(s);
    if (thread_err)
        return thread_err;
    if (s->closed)
        return -EALREADY;
    iol__stream_hold(s);
    iol__stream_close_internal(s, 0);
    iol__stream_release(s);
    return 0;
}

/* The getters read loop-thread state (bit-fields the loop writes), so
 * from another thread they answer without reading it: closed says true
 * (nothing may be done with the stream from there), fd and error -EPERM. */
bool iol_stream_closed(const iol_stream *s)
{
    return !s || iol__stream_check_thread(s) || s->closed;
}

int iol_stream_fd(const iol_stream *s)
{
    if (!s)
        return -EINVAL;
    int thread_err = iol__stream_check_thread(s);
    if (thread_err)
        return thread_err;
    return s->closed || s->fd < 0 ? -EBADF : s->fd;
}

int iol_stream_error(const iol_stream *s)
{
    if (!s)
        return -EINVAL;
    int thread_err = iol__stream_check_thread(s);
    if (thread_err)
        return thread_err;
    return iol__loop_status(s->loop, s->error);
}

iol_loop *iol_stream_loop(const iol_stream *s)
{
    return s ? s->loop : NULL;
}
