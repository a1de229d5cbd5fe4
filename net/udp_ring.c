/*
 * net/udp_ring.c — receiving on a loop with a completion path (io_uring):
 * one multishot recvmsg stays armed on the socket and the kernel fills a
 * buffer of the loop's shared ring with each datagram (header, peer
 * address, ancillary data, payload: no system call per batch, no copy
 * into the object's memory). Results gather in `pend` and reach the
 * callback as one batch, from a check hook (after the loop's events of
 * that wait), or as soon as `batch` of them are there; the buffers go
 * back to the ring once the callback returned.
 *
 * The ring path needs a datagram, its name and its control data to fit a
 * ring buffer (16 KiB), so objects with a bigger max_datagram or with
 * UDP_GRO (64 KiB coalesced) read through the handler path as on every
 * other poller. A multishot recvmsg ends on an error (reported, as on the
 * handler path) or an empty buffer ring (-ENOBUFS: the batch is delivered,
 * its buffers come back, and it is armed again); if it cannot be armed
 * again, the object goes back to the handler path.
 *
 * Lifetime: the operation holds the object (op.inflight); closing cancels
 * it, and the object is freed at its last result (iol__udp_maybe_free).
 */
#include "net/udp_impl.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

enum { OP_RECVMSG = 0 };

#ifdef IOL_HAVE_URING
#include <liburing.h>

static void recycle_pending(iol_udp *u)
{
    for (size_t i = 0; i < u->npend; i++)
        iol__loop_buffer_recycle(u->loop, u->pend[i].bid);
    u->npend = 0;
}

/* Delivers what gathered as one batch, then gives the buffers back. */
static void deliver(iol_udp *u)
{
    if (u->npend == 0 || !u->recv_cb || u->closed)
        return;
    if (u->dgram_cap < u->npend) {
        iol_udp_datagram *d = realloc(u->dgrams, u->npend * sizeof *d);
        if (!d)
            return; /* kept for the next try; the ring holds the buffers */
        u->dgrams = d;
        u->dgram_cap = u->npend;
    }
    size_t n = u->npend;
    for (size_t i = 0; i < n; i++) {
        u->dgrams[i] = u->pend[i].d;
        if (u->dgrams[i].local)
            u->dgrams[i].local = (const struct sockaddr *)&u->pend[i].local;
    }
    u->st.recv_calls++;
    u->st.received += n;
    /* The batch leaves pend before the callback, so that a close inside it
     * (which gives back what is pending) does not give these back too;
     * no result can arrive meanwhile (results come only from the loop's
     * wait), so pend[0..n) stays as it is until they are given back here. */
    u->npend = 0;
    u->depth++;
    u->recv_cb(u, u->dgrams, (unsigned)n, 0, u->recv_arg);
    for (size_t i = 0; i < n; i++)
        iol__loop_buffer_recycle(u->loop, u->pend[i].bid);
    u->depth--;
}

static void ring_flush(void *arg)
{
    iol_udp *u = arg;
    deliver(u);
    iol__udp_maybe_free(u);
}

/* Armed means an operation in flight (u->op.inflight): one cancelled by
 * recv_stop still counts until its last result, which re-arms if a new
 * recv_start came meanwhile, so there is never more than one. */
static int arm(iol_udp *u)
{
    return iol__loop_recvmsg_multishot(u->loop, &u->op, OP_RECVMSG, u->fd, &u->rtmpl);
}

/* One datagram into pend. */
static void take(iol_udp *u, const iol__completion_result *r)
{
    struct io_uring_recvmsg_out *out = io_uring_recvmsg_validate(r->buf, r->res, &u->rtmpl);
    if (!out) {
        iol__loop_buffer_recycle(u->loop, r->bid);
        return;
    }
    if (u->npend == u->pend_cap) {
        size_t cap = u->pend_cap ? u->pend_cap * 2 : u->batch;
        udp_ring_dgram *p = realloc(u->pend, cap * sizeof *p);
        if (!p) {
            iol__loop_buffer_recycle(u->loop, r->bid); /* no memory: lost, as in a full socket, and counted */
            u->st.kernel_drops++;
            return;
        }
        u->pend = p;
        u->pend_cap = cap;
    }
    udp_ring_dgram *e = &u->pend[u->npend++];
    memset(e, 0, sizeof *e);
    e->bid = r->bid;
    e->d.data = io_uring_recvmsg_payload(out, &u->rtmpl);
    size_t len = io_uring_recvmsg_payload_length(out, r->res, &u->rtmpl);
    e->d.peer = io_uring_recvmsg_name(out);
    e->d.peerlen = out->namelen < u->rtmpl.msg_namelen ? out->namelen : u->rtmpl.msg_namelen;
    if ((out->flags & MSG_TRUNC) || len > u->slot) {
        e->d.flags |= IOL_UDP_TRUNCATED;
        u->st.truncated++;
        if (len > u->slot)
            len = u->slot;
    }
    e->d.len = len;
    if (out->controllen) {
        struct msghdr h = { .msg_control = (char *)(out + 1) + u->rtmpl.msg_namelen,
                            .msg_controllen = out->controllen };
        size_t gso = 0;
        iol__udp_parse_cmsgs(u, &h, &e->local, &e->d, &gso);
    }
}

static void ring_done(iol__completion *c, const iol__completion_result *r)
{
    iol_udp *u = (iol_udp *)((char *)c - offsetof(iol_udp, op));
    if (r->res >= 0 && r->buf) {
        if (u->closed)
            iol__loop_buffer_recycle(u->loop, r->bid);
        else
            take(u, r);
        if (u->npend >= u->batch && !u->closed)
            deliver(u);
    } else if (r->buf) {
        iol__loop_buffer_recycle(u->loop, r->bid);
    }
    if (!u->closed && u->op.inflight == 0 && u->ring && u->recv_cb) {
        if (r->res < 0 && r->res != -ENOBUFS && r->res != -ECANCELED) {
            deliver(u); /* what came before the error first */
            if (u->recv_cb && !u->closed) {
                u->depth++;
                u->recv_cb(u, NULL, 0, r->res, u->recv_arg);
                u->depth--;
            }
        } else if (r->res == -ENOBUFS) {
            deliver(u); /* gives buffers back before the next try */
        }
        if (!u->closed && u->recv_cb && u->op.inflight == 0 && arm(u) < 0) {
            /* Back to the handler path for good. */
            iol__udp_ring_close(u);
            (void)iol__udp_update_events(u);
        }
    }
    iol__udp_maybe_free(u);
}

int iol__udp_ring_start(iol_udp *u)
{
    if (u->ring && u->op.inflight > 0)
        return 0; /* armed, or cancelled and re-armed by its last result */
    if (!u->ring) {
        int f = iol__loop_completion_features(u->loop);
        if (f < 0)
            return f;
        unsigned want = IOL__COMPLETION_MULTISHOT_RECV | IOL__COMPLETION_BUFFER_RING;
        size_t room = sizeof(struct io_uring_recvmsg_out) + sizeof(struct sockaddr_storage) + UDP_CTL_SPACE + u->slot;
        if (((unsigned)f & want) != want || u->gro || room > IOL__RING_BUFFER_SIZE)
            return -ENOTSUP;
        u->op.fn = ring_done;
        u->rtmpl = (struct msghdr){ .msg_namelen = sizeof(struct sockaddr_storage), .msg_controllen = UDP_CTL_SPACE };
        u->ring = true;
    }
    if (!u->check_hook) {
        int r = iol_loop_add_check(u->loop, ring_flush, u);
        if (r < 0)
            return r;
        u->check_hook = true;
    }
    int r = arm(u);
    if (r < 0)
        iol__udp_ring_close(u); /* the handler path reads instead */
    return r;
}

void iol__udp_ring_stop(iol_udp *u)
{
    if (u->op.inflight > 0)
        (void)iol__loop_cancel(u->loop, &u->op, OP_RECVMSG); /* its results still come, to ring_done */
}

void iol__udp_ring_close(iol_udp *u)
{
    iol__udp_ring_stop(u);
    recycle_pending(u);
    if (u->check_hook)
        (void)iol_loop_remove_check(u->loop, ring_flush, u); /* fails only on a loop past its close */
    u->check_hook = false;
    u->ring = false;
}

#else /* no liburing: never the ring path */

int iol__udp_ring_start(iol_udp *u)
{
    (void)u;
    return -ENOTSUP;
}

void iol__udp_ring_stop(iol_udp *u)
{
    (void)u;
}

void iol__udp_ring_close(iol_udp *u)
{
    (void)u;
}

#endif
