/*
 * net/udp_impl.h — the datagram object shared by udp.c (lifetime, set-up,
 * small calls), udp_recv.c (recvmmsg batches) and udp_send.c (sendmsg,
 * sendmmsg, GSO, the send queue).
 *
 * Like a stream it uses only the public loop API (one fd handler, watched
 * for READ while a receive callback is set and for WRITE while datagrams
 * are queued, not registered at all otherwise), plus the close hook and
 * the owner-thread check. So it works on every poller, io_uring's
 * included (through its poll operations).
 *
 * Lifetime: `depth` counts frames of the object on the stack (its
 * handler). iol_udp_close inside one marks it closed and closes the fd;
 * the outermost frame frees it on the way out.
 */
#ifndef IOL_NET_UDP_IMPL_H
#define IOL_NET_UDP_IMPL_H

#include "ioloop.h"

#include <stdint.h>
#include <sys/socket.h>

#include "loop/close_hook.h"
#include "loop/completion.h"

enum {
    UDP_DEFAULT_BATCH = 32,
    UDP_DEFAULT_SLOT = 2048,
    UDP_DEFAULT_QUEUE = 1024,
    UDP_CTL_SPACE = 256,  /* ancillary bytes per received datagram (every kind asked for fits) */
    UDP_SEND_CHUNK = 64,  /* datagrams per sendmmsg from the queue and from a batch */
    UDP_SEND_CTL = 64,    /* ancillary bytes per sent datagram: pktinfo (v6: 32) + UDP_SEGMENT (24) */
    UDP_RECV_ROUNDS = 8,  /* full batches per event before other fds get a turn */
};

/* A datagram received through the ring, waiting in its ring buffer for
 * the batch to be delivered (udp_ring.c). */
typedef struct udp_ring_dgram {
    unsigned bid;
    iol_udp_datagram d;
    struct sockaddr_storage local; /* pktinfo's address (d.local points here once delivered) */
} udp_ring_dgram;

/* A datagram (or a GSO buffer of nseg segments) waiting for the socket. */
typedef struct udp_qent {
    char *data;
    size_t len;
    struct sockaddr_storage to;
    socklen_t tolen;    /* 0: the connected peer */
    struct sockaddr_storage local;
    socklen_t locallen; /* 0: the kernel chooses */
    int ifindex;
    uint16_t gso;       /* segment size of a GSO buffer; 0: one datagram */
    unsigned nseg;      /* datagrams it stands for (the queue limit counts these) */
} udp_qent;

struct iol_udp {
    iol_loop *loop;
    iol__close_hook close_hook;
    int fd;
    int family;          /* AF_INET, AF_INET6, AF_UNIX */
    unsigned flags;      /* IOL_UDP_* of the config */
    bool v6only;
    bool connected;
    bool closed;
    bool registered;
    bool gro;            /* UDP_GRO is on */
    bool gso_broken;     /* the kernel refused UDP_SEGMENT on this socket: sendmmsg instead */
    unsigned watched;
    unsigned depth;
    uint16_t local_port; /* for pktinfo's local address */
    int pending_error;   /* -errno for the next send call (no receive callback heard it) */

    iol_udp_recv_fn recv_cb;
    void *recv_arg;
    iol_udp_close_fn close_cb;
    void *close_arg;
    char *path;          /* Unix: the bound file, removed at close */

    /* receiving: batch slots of slot bytes, with their headers */
    unsigned batch;
    size_t slot;
    char *rbuf;
    struct mmsghdr *rmsgs;
    struct iovec *riov;
    struct sockaddr_storage *raddr;
    struct sockaddr_storage *rlocal;
    char *rctl;
    iol_udp_datagram *dgrams;
    size_t dgram_cap;

    /* sending: the queue (a ring) and the sendmmsg scratch */
    udp_qent *q;
    size_t qhead, qcount, qcap; /* entries */
    size_t qdgrams;             /* datagrams in them */
    size_t qlimit;
    struct mmsghdr *smsgs;      /* UDP_SEND_CHUNK each, made at the first batch */
    struct iovec *siov;
    char *sctl;
    struct sockaddr_in6 *smapped;

    /* receiving through the ring (udp_ring.c): a multishot recvmsg whose
     * results gather in pend and go to the callback as one batch, from a
     * check hook after the loop's events (or when batch are there) */
    iol__completion op;
    bool ring;          /* this object receives through the ring */
    bool check_hook;    /* udp_ring_flush is a check hook of the loop */
    struct msghdr rtmpl;
    udp_ring_dgram *pend;
    size_t npend, pend_cap;

    iol_udp_stats st;
};

/* udp.c: brings the fd handler in line with what the object waits for. */
int iol__udp_update_events(iol_udp *u);
/* udp.c: an error with nobody to hear it now: the receive callback, else
 * the next send call. */
void iol__udp_report(iol_udp *u, int err);
/* udp_recv.c: reads batches until the socket is dry, the callback
 * stopped receiving, or UDP_RECV_ROUNDS batches. */
void iol__udp_handle_read(iol_udp *u);
/* udp_recv.c: the ancillary data of one datagram into d (GRO segment size
 * into *gso), pktinfo's address into *local. */
void iol__udp_parse_cmsgs(iol_udp *u, struct msghdr *h, struct sockaddr_storage *local, iol_udp_datagram *d,
                          size_t *gso);
/* udp_ring.c: whether receiving can go through the ring on this loop and
 * socket; arms it (0) or says why not (-errno: the handler path then). */
int iol__udp_ring_start(iol_udp *u);
/* udp_ring.c: stops the ring's receive (results still in flight are kept
 * for the next start, or dropped at close). */
void iol__udp_ring_stop(iol_udp *u);
/* udp_ring.c: at close: cancels, gives every buffer back. */
void iol__udp_ring_close(iol_udp *u);
/* udp.c: frees u once it is closed and nothing of it is on the stack or
 * in flight. */
void iol__udp_maybe_free(iol_udp *u);
/* udp.c: the prologue of every loop-thread call on an open object:
 * -EINVAL (NULL), -EPERM (another thread runs the loop), -EBADF (closed)
 * or 0. */
int iol__udp_check(const iol_udp *u);
/* udp_send.c: sends what the queue holds while the kernel takes it. */
void iol__udp_flush(iol_udp *u, bool report);
/* udp_send.c: frees every queued datagram; returns how many there were. */
size_t iol__udp_queue_drop(iol_udp *u);

#endif
