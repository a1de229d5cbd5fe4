/*
 * net/stream_connect.c — iol_stream_connect: name resolution and a
 * non-blocking connect that tries every address in turn.
 */
#include "net/stream_impl.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Runs the connect callback; a failure closes the stream after it. */
void iol__stream_connect_done(iol_stream *s, int status)
{
    s->connecting = false;
    s->connect_report = false;
    iol_connect_fn cb = s->connect_cb;
    s->connect_cb = NULL;
    if (cb)
        cb(s, status, s->connect_arg);
    if (status < 0)
        iol__stream_close_internal(s, status);
}

/* Starts connecting to the next address. 0: in progress, or done at once
 * (connect_report set); < 0: every remaining address failed (last error). */
int iol__stream_connect_next(iol_stream *s, int last_err)
{
    while (s->next_addr < s->naddrs) {
        const stream_address *a = &s->addrs[s->next_addr++];
        iol__stream_drop_fd(s);
        int fd = socket(a->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            last_err = -errno;
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
            s->connect_status = 0;
            return 0;
        }
        if (errno == EINPROGRESS || errno == EINTR) /* EINTR: it goes on asynchronously */
            return 0;
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
    int r = iol__stream_connect_next(s, -err);
    if (r < 0)
        iol__stream_connect_done(s, r);
    else if (s->connect_report)
        iol__stream_connect_done(s, s->connect_status);
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

/* ------------------------------------------------------------- Public API */

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
    r = iol__stream_alloc(&s, loop, max_buffer_size);
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
    r = iol__stream_connect_next(s, -EHOSTUNREACH);
    if (r < 0) {
        s->connect_report = true;
        s->connect_status = r;
    }
    if (s->connect_report) {
        r = iol__stream_schedule(s);
        if (r < 0)
            goto fail;
        r = iol__stream_update_events(s); /* the handler must not spin on WRITE meanwhile */
        if (r < 0)
            goto fail;
    }
    *out = s;
    return 0;
fail:
    if (s->deferred_queued) {
        /* The queued callback owns s now; closing it there is all we can do. */
        s->connect_cb = NULL;
        iol__stream_close_internal(s, r);
        return r;
    }
    iol__stream_drop_fd(s);
    iol__stream_free(s);
    return r;
}

