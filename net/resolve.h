/*
 * net/resolve.h — host names to socket addresses for stream connects,
 * without blocking the loop: numeric addresses are parsed at once, names
 * go to getaddrinfo on the loop's executor (iol_loop_run_in_executor), and
 * the answer comes back as a loop callback through the future.
 */
#ifndef IOL_NET_RESOLVE_H
#define IOL_NET_RESOLVE_H

#include "ioloop.h"

#include <stdint.h>
#include <sys/socket.h>

typedef struct iol__address {
    struct sockaddr_storage addr;
    socklen_t len;
} iol__address;

/* One lookup on the executor. Shared by the executor's thread (which fills
 * it) and the loop side (which reads it after the future resolved); freed
 * by whichever lets go last. */
typedef struct iol__resolve_job iol__resolve_job;

/* A numeric host (IPv4 or IPv6 literal): *out gets a malloc'ed array of
 * one address. -EAGAIN: not numeric, resolve it. -ENOMEM. */
int iol__resolve_numeric(const char *host, uint16_t port, iol__address **out, size_t *count);
/* Starts getaddrinfo(host, port) on loop's default executor; done(f, arg)
 * runs on the loop thread once it finished (not if the loop is closed
 * first: then the loop side lets go with iol__resolve_job_release alone).
 * Loop thread. -ENOMEM, -ESHUTDOWN, -EPERM (iol_loop_run_in_executor). */
int iol__resolve_start(iol_loop *loop, const char *host, uint16_t port, void (*done)(iol_future *f, void *arg),
                       void *arg, iol__resolve_job **out);
/* After done ran: the lookup's status (0 or -errno, see the header's
 * iol_stream_connect) and its addresses, which the caller now owns. */
int iol__resolve_take(iol__resolve_job *job, iol__address **out, size_t *count);
/* The loop side lets go of the job (any time after start). */
void iol__resolve_job_release(iol__resolve_job *job);

#endif /* IOL_NET_RESOLVE_H */
