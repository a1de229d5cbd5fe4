/*
 * net/stream_connect.c — iol_stream_connect: a non-blocking connect that
 * tries every address of the host in turn, under one optional deadline
 * that covers the name lookup too. Names are looked up off the loop
 * thread (net/resolve.c); the connect callback runs on the loop, never
 * inside the call.
 */
#include "net/stream_impl.h"

#include "loop/status.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The size promise of ioloop.h's config structs (see loop/version.c). */
_Static_assert(sizeof(iol_connect_options) == 128, "iol_connect_options outgrew its reserve");

/* Runs the connect callback; a failure closes the stream after it. */
void iol__stream_connect_done(iol_stream *s, int status)
{
    s->connecting = false;
    s->connect_report = false;
    if (s->ext->connect_timer) {
        (void)iol_loop_remove_timeout(s->loop, s->ext->connect_timer);
        s->ext->connect_timer = 0;
    }
    iol_connect_fn cb = s->ext->connect_cb;
    s->ext->connect_cb = NULL;
    if (cb)
        cb(s, iol__loop_status(s->loop, status), s->ext->connect_arg);
    if (status < 0)
        iol__stream_close_internal(s, status);
}

/* A socket for address a, bound to the source address if one was asked
 * for. -errno: this address cannot be tried. */
static int stream_socket_for(const iol_stream *s, const iol__address *a)
{
    if (s->ext->source && s->ext->source->addr.ss_family != a->addr.ss_family)
        return -EAFNOSUPPORT; /* an IPv4 source cannot reach an IPv6 peer */
    int fd = socket(a->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (s->ext->source && bind(fd, (const struct sockaddr *)&s->ext->source->addr, s->ext->source->len) < 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    return fd;
}

/* Starts connecting to the next address. 0: in progress, or done at once
 * (connect_report set); < 0: every remaining address failed (last error). */
static int stream_connect_next(iol_stream *s, int last_err)
{
    while (s->ext->next_addr < s->ext->naddrs) {
        const iol__address *a = &s->ext->addrs[s->ext->next_addr++];
        iol__stream_drop_fd(s);
        int fd = stream_socket_for(s, a);
        if (fd < 0) {
            /* A family the source cannot reach says -EAFNOSUPPORT only if
             * no address was really tried (callers pass IOL_ENONAME
             * then): a real connect error is the better answer. */
            if (fd != -EAFNOSUPPORT || last_err == IOL_ENONAME || last_err == -EAFNOSUPPORT)
                last_err = fd;
            continue;
        }
        int r = iol_loop_add_handler(s->loop, fd, IOL_WRITE, iol__stream_on_events, s);
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
            s->ext->connect_status = 0;
            return 0;
        }
        if (errno == EINPROGRESS || errno == EINTR) /* EINTR: it goes on asynchronously */
            return 0;
        /* A Unix socket whose listener's backlog is full says EAGAIN and
         * never completes later: that address failed. */
        last_err = -errno;
    }
    iol__stream_drop_fd(s);
    return last_err;
}

void iol__stream_handle_connect(iol_stream *s)
{
    if (s->connect_report)
        return; /* the result is already queued for the deferred callback */
    int err = iol__stream_socket_error(s);
    if (err == 0) {
        iol__stream_connect_done(s, 0);
        return;
    }
    int r = stream_connect_next(s, -err);
    if (r < 0)
        iol__stream_connect_done(s, r);
    else if (s->connect_report)
        iol__stream_connect_done(s, s->ext->connect_status);
}

/* Starts on the first address. Failures (socket, connect, immediate
 * results) reach the callback from the deferred callback, so the caller
 * has one place to handle them. <0 only if that could not be queued. */
static int stream_connect_first(iol_stream *s)
{
    int r = stream_connect_next(s, IOL_ENONAME);
    if (r < 0) {
        s->connect_report = true;
        s->ext->connect_status = r;
    }
    if (!s->connect_report)
        return 0;
    r = iol__stream_schedule(s);
    if (r < 0)
        return r;
    return iol__stream_update_events(s); /* the handler must not spin on WRITE meanwhile */
}

static void stream_on_resolved(iol_future *f, void *arg)
{
    (void)f;
    iol_stream *s = arg; /* the lookup's reference is now this frame's */
    iol__resolve_job *job = s->ext->resolving;
    s->ext->resolving = NULL;
    if (!s->closed && s->connecting) {
        int r = iol__resolve_take(job, &s->ext->addrs, &s->ext->naddrs);
        if (r == 0)
            r = stream_connect_next(s, IOL_ENONAME);
        if (r < 0)
            iol__stream_connect_done(s, r);
        else if (s->connect_report)
            iol__stream_connect_done(s, s->ext->connect_status);
        if (!s->closed) {
            r = iol__stream_update_events(s);
            if (r < 0)
                iol__stream_close_internal(s, r);
        }
    }
    iol__resolve_job_release(job);
    iol__stream_release(s);
}

static void stream_on_connect_deadline(void *arg)
{
    iol_stream *s = arg;
    s->ext->connect_timer = 0;
    if (s->closed || !s->connecting)
        return;
    iol__stream_hold(s);
    iol__stream_connect_done(s, -ETIMEDOUT); /* closes the socket of the attempt under way */
    iol__stream_release(s);
}

/* The connect call's checks: -EINVAL for bad options. */
static int stream_check_options(const iol_connect_options *o)
{
    if (!o)
        return 0;
    if (isnan(o->timeout))
        return -EINVAL;
    if (!o->source && o->source_port)
        return -EINVAL;
    return 0;
}

/* Parks a new connecting stream; addrs (owned) may be NULL while a name
 * is looked up. */
static int stream_connect_setup(iol_stream **out, iol_loop *loop, const iol_connect_options *o, iol_connect_fn cb,
                                void *arg)
{
    iol__address *source = NULL;
    if (o && o->source) {
        size_t n;
        int r = iol__resolve_numeric(o->source, o->source_port, &source, &n);
        if (r < 0)
            return r == -EAGAIN ? -EINVAL : r; /* the source must be numeric: no lookup */
    }
    iol_stream *s;
    int r = iol__stream_alloc(&s, loop, o ? o->max_buffer_size : 0);
    if (r < 0) {
        free(source);
        return r;
    }
    if (!iol__stream_ext(s)) {
        free(source);
        iol__stream_free(s);
        return -ENOMEM;
    }
    s->connecting = true;
    s->ext->connect_cb = cb;
    s->ext->connect_arg = arg;
    s->ext->source = source; /* the first address of the parsed literal */
    if (o && o->timeout > 0) {
        r = iol_loop_call_later(loop, o->timeout, stream_on_connect_deadline, s, &s->ext->connect_timer);
        if (r < 0) {
            iol__stream_free(s);
            return r;
        }
    }
    *out = s;
    return 0;
}

/* Undoes a connect call that failed before returning. */
static int stream_connect_abort(iol_stream *s, int r)
{
    if (s->deferred_queued) {
        /* The queued callback owns s now; closing it there is all we can do. */
        s->ext->connect_cb = NULL;
        iol__stream_close_internal(s, r);
        return r;
    }
    iol__stream_drop_fd(s);
    iol__stream_free(s);
    return r;
}

/* ------------------------------------------------------------- Public API */

int iol_stream_connect_ex(iol_stream **out, iol_loop *loop, const char *host, uint16_t port,
                          const iol_connect_options *opts, iol_connect_fn cb, void *arg)
{
    if (!loop)
        return -EINVAL;
    int thread_err = iol__loop_owner_check(loop);
    if (thread_err)
        return thread_err;
    if (!out || !host || !cb || host[0] == '\0')
        return -EINVAL;
    int r = stream_check_options(opts);
    if (r < 0)
        return r;

    iol__address *addrs = NULL;
    size_t naddrs = 0;
    int numeric = iol__resolve_numeric(host, port, &addrs, &naddrs);
    if (numeric < 0 && numeric != -EAGAIN)
        return numeric;
    iol_stream *s;
    r = stream_connect_setup(&s, loop, opts, cb, arg);
    if (r < 0) {
        free(addrs);
        return r;
    }
    if (numeric == 0) {
        s->ext->addrs = addrs;
        s->ext->naddrs = naddrs;
        r = stream_connect_first(s);
    } else {
        /* A name: the loop thread never calls getaddrinfo. The lookup's
         * callback holds a reference until it ran. */
        r = iol__resolve_start(loop, host, port, stream_on_resolved, s, &s->ext->resolving);
        if (r == 0)
            iol__stream_hold(s);
    }
    if (r < 0)
        return stream_connect_abort(s, r);
    *out = s;
    return 0;
}

int iol_stream_connect_unix(iol_stream **out, iol_loop *loop, const char *path, const iol_connect_options *opts,
                            iol_connect_fn cb, void *arg)
{
    if (!loop)
        return -EINVAL;
    int thread_err = iol__loop_owner_check(loop);
    if (thread_err)
        return thread_err;
    if (!out || !path || !cb)
        return -EINVAL;
    int r = stream_check_options(opts);
    if (r < 0)
        return r;
    if (opts && opts->source)
        return -EINVAL; /* binding a client to a path is not offered */
    iol__address *addrs;
    size_t naddrs;
    r = iol__resolve_unix(path, &addrs, &naddrs);
    if (r < 0)
        return r;
    iol_stream *s;
    r = stream_connect_setup(&s, loop, opts, cb, arg);
    if (r < 0) {
        free(addrs);
        return r;
    }
    s->ext->addrs = addrs;
    s->ext->naddrs = naddrs;
    r = stream_connect_first(s);
    if (r < 0)
        return stream_connect_abort(s, r);
    *out = s;
    return 0;
}

int iol_stream_connect(iol_stream **out, iol_loop *loop, const char *host, uint16_t port, size_t max_buffer_size,
                       iol_connect_fn cb, void *arg)
{
    iol_connect_options o = {.max_buffer_size = max_buffer_size};
    return iol_stream_connect_ex(out, loop, host, port, &o, cb, arg);
}
