/*
 * net/stream_shutdown.c — the graceful close (libuv's uv_shutdown): the
 * write side ends once every queued write is out (copied, zero-copy and
 * sendfile segments, a ring send in flight), TLS with close_notify before
 * the FIN; reading goes on until the peer's EOF, which then closes the
 * stream as ever.
 *
 * Nothing waits in a queue of its own: the stream already knows when
 * its writes drained (iol__stream_wrote), a connect or a handshake ended
 * (the fd handler, the deferred callback), and those call
 * iol__stream_shutdown_step, which sends the FIN once nothing is pending.
 * The callback runs from the deferred callback after the FIN, or from the
 * close if the stream closed first, exactly once either way.
 */
#include "net/stream_impl.h"

#include <errno.h>
#include <sys/socket.h>

#include "loop/status.h"

void iol__stream_shutdown_step(iol_stream *s)
{
    if (!s->wr_shut || s->fin_sent || s->closed || s->connecting || s->fd < 0)
        return;
    if (iol__stream_pending(s) > 0 || s->send_inflight)
        return; /* the last write's completion calls again */
    int r = s->tls ? iol__tls_shutdown(s) : 0;
    if (r == -EAGAIN)
        return; /* WRITE is watched meanwhile (stream_wanted_events) */
    if (r == 0 && shutdown(s->fd, SHUT_WR) < 0)
        r = -errno;
    if (r < 0) {
        iol__stream_close_internal(s, r); /* the close tells the callback */
        return;
    }
    s->fin_sent = true;
    /* The callback from the loop, never inside iol_stream_shutdown; a
     * failure to queue leaves it for the close. */
    (void)iol__stream_schedule(s);
}

void iol__stream_shutdown_report(iol_stream *s)
{
    stream_ext *x = s->ext;
    if (!x || !x->shutdown_cb || !(s->fin_sent || s->closed))
        return;
    int status = 0;
    if (!s->fin_sent) /* closed first: why */
        status = s->error ? s->error : s->eof ? IOL_EOF : -ECANCELED;
    void (*cb)(iol_stream *, int, void *) = x->shutdown_cb;
    x->shutdown_cb = NULL;
    cb(s, iol__loop_status(s->loop, status), x->shutdown_arg);
}

/* ------------------------------------------------------------- Public API */

int iol_stream_shutdown(iol_stream *s, void (*cb)(iol_stream *s, int status, void *arg), void *arg)
{
    if (!s)
        return -EINVAL;
    int r = iol__stream_check_thread(s);
    if (r)
        return r;
    if (s->closed)
        return -EPIPE;
    if (s->wr_shut)
        return -EALREADY;
    if (!s->is_socket && !s->connecting)
        return -ENOTSOCK;
    if (!iol__stream_ext(s))
        return -ENOMEM;
    s->ext->shutdown_cb = cb;
    s->ext->shutdown_arg = arg;
    s->wr_shut = true;
    iol__stream_hold(s);
    iol__stream_shutdown_step(s);
    if (!s->closed && !s->fin_sent) {
        r = iol__stream_update_events(s);
        if (r < 0) /* the FIN would never leave */
            iol__stream_close_internal(s, r);
    }
    iol__stream_release(s);
    return 0;
}
