/*
 * net/tls_wait.c — iol_stream_wait_for_handshake (Tornado's
 * SSLIOStream.wait_for_handshake): a callback once the handshake of a
 * TLS stream ended, for the server side and STARTTLS, whose calls take
 * no handshake callback of their own. One waiter at a time; a handshake
 * that finished already is reported from the loop, never inside the call.
 */
#include "net/stream_impl.h"
#include "net/tls_impl.h"

#include <errno.h>

#include "loop/status.h"

void iol__tls_wait_report(iol_stream *s, int status)
{
    iol__tls *t = s->tls;
    iol_connect_fn cb = t->wait_cb;
    if (!cb)
        return;
    t->wait_cb = NULL;
    cb(s, iol__loop_status(s->loop, status), t->wait_arg);
}

void iol__tls_deferred(iol_stream *s)
{
    if (s->tls->phase == TLS_OPEN)
        iol__tls_wait_report(s, 0);
}

int iol_stream_wait_for_handshake(iol_stream *s, iol_connect_fn cb, void *arg)
{
    if (!s)
        return -EINVAL;
    int r = iol__stream_check_thread(s);
    if (r)
        return r;
    if (!cb || !s->tls)
        return -EINVAL;
    if (s->closed)
        return -EPIPE;
    iol__tls *t = s->tls;
    if (t->wait_cb)
        return -EBUSY;
    if (t->phase == TLS_OPEN) {
        r = iol__stream_schedule(s); /* the deferred callback tells it */
        if (r < 0)
            return r;
    }
    t->wait_cb = cb;
    t->wait_arg = arg;
    return 0;
}
