/*
 * net/udp_recv.c — receiving: one recvmmsg fills up to `batch` slots of the
 * object's own memory, and the callback gets them as one array. A batch
 * shorter than asked for means the socket is dry, so no further call is
 * made to hear EAGAIN (the level-triggered handler says when more comes).
 * With UDP_GRO a slot may hold several datagrams of one flow coalesced by
 * the kernel; they are split back into entries of the array here.
 */
#include "net/udp_impl.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Reads the ancillary data of one received datagram into d (and its GRO
 * segment size into *gso). */
void iol__udp_parse_cmsgs(iol_udp *u, struct msghdr *h, struct sockaddr_storage *local, iol_udp_datagram *d,
                          size_t *gso)
{
    for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c; c = CMSG_NXTHDR(h, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_RXQ_OVFL) {
            uint32_t drops;
            memcpy(&drops, CMSG_DATA(c), sizeof drops);
            u->st.kernel_drops = drops;
        } else if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
            struct timespec ts;
            memcpy(&ts, CMSG_DATA(c), sizeof ts);
            d->timestamp_ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
        } else if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
            int seg;
            memcpy(&seg, CMSG_DATA(c), sizeof seg);
            if (seg > 0)
                *gso = (size_t)seg;
        } else if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
            struct in_pktinfo pi;
            memcpy(&pi, CMSG_DATA(c), sizeof pi);
            d->ifindex = pi.ipi_ifindex;
            memset(local, 0, sizeof *local);
            if (u->family == AF_INET6) { /* a v4 datagram on a dual-stack socket: v4-mapped, as its peer */
                struct sockaddr_in6 *a = (struct sockaddr_in6 *)local;
                a->sin6_family = AF_INET6;
                a->sin6_port = htons(u->local_port);
                a->sin6_addr.s6_addr[10] = a->sin6_addr.s6_addr[11] = 0xff;
                memcpy(&a->sin6_addr.s6_addr[12], &pi.ipi_addr, 4);
                d->locallen = sizeof *a;
            } else {
                struct sockaddr_in *a = (struct sockaddr_in *)local;
                a->sin_family = AF_INET;
                a->sin_port = htons(u->local_port);
                a->sin_addr = pi.ipi_addr;
                d->locallen = sizeof *a;
            }
            d->local = (const struct sockaddr *)local;
        } else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO) {
            struct in6_pktinfo pi;
            memcpy(&pi, CMSG_DATA(c), sizeof pi);
            d->ifindex = (int)pi.ipi6_ifindex;
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)local;
            memset(local, 0, sizeof *local);
            a->sin6_family = AF_INET6;
            a->sin6_port = htons(u->local_port);
            a->sin6_addr = pi.ipi6_addr;
            d->local = (const struct sockaddr *)local;
            d->locallen = sizeof *a;
        } else if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_TOS) {
            d->ecn = *(const unsigned char *)CMSG_DATA(c) & 3;
        } else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_TCLASS) {
            int tc;
            memcpy(&tc, CMSG_DATA(c), sizeof tc);
            d->ecn = (uint8_t)(tc & 3);
        }
    }
}

/* Room for at least n entries in the callback's array (GRO may need more
 * than one per slot). */
static bool dgrams_reserve(iol_udp *u, size_t n)
{
    if (n <= u->dgram_cap)
        return true;
    size_t cap = u->dgram_cap * 2;
    while (cap < n)
        cap *= 2;
    iol_udp_datagram *d = realloc(u->dgrams, cap * sizeof *d);
    if (!d)
        return false;
    u->dgrams = d;
    u->dgram_cap = cap;
    return true;
}

/* Turns n filled slots into the callback's array; returns its length. */
static size_t collect(iol_udp *u, unsigned n)
{
    size_t k = 0;
    for (unsigned i = 0; i < n; i++) {
        struct msghdr *h = &u->rmsgs[i].msg_hdr;
        size_t len = u->rmsgs[i].msg_len;
        iol_udp_datagram d = {
            .data = u->riov[i].iov_base,
            .peer = (const struct sockaddr *)&u->raddr[i],
            .peerlen = h->msg_namelen,
        };
        size_t gso = 0;
        if (h->msg_controllen)
            iol__udp_parse_cmsgs(u, h, &u->rlocal[i], &d, &gso);
        if (h->msg_flags & MSG_TRUNC) {
            d.flags |= IOL_UDP_TRUNCATED;
            u->st.truncated++;
            if (len > u->slot)
                len = u->slot;
        }
        size_t segs = gso && len > gso ? (len + gso - 1) / gso : 1;
        if (!dgrams_reserve(u, k + segs + (n - i - 1))) {
            segs = 1; /* no memory to split: hand the coalesced bytes over whole */
            gso = 0;
        }
        for (size_t s = 0; s < segs; s++) {
            iol_udp_datagram *e = &u->dgrams[k++];
            *e = d;
            if (segs > 1) {
                e->data = d.data + s * gso;
                e->len = s + 1 < segs ? gso : len - s * gso;
            } else {
                e->len = len;
            }
        }
    }
    return k;
}

void iol__udp_handle_read(iol_udp *u)
{
    bool ctl = u->family != AF_UNIX || (u->flags & IOL_UDP_RECV_TIMESTAMP);
    for (int round = 0; round < UDP_RECV_ROUNDS && u->recv_cb && !u->closed; round++) {
        for (unsigned i = 0; i < u->batch; i++) {
            struct msghdr *h = &u->rmsgs[i].msg_hdr;
            h->msg_namelen = sizeof u->raddr[i];
            h->msg_controllen = ctl ? UDP_CTL_SPACE : 0;
            h->msg_flags = 0;
        }
        int n = recvmmsg(u->fd, u->rmsgs, u->batch, MSG_DONTWAIT, NULL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                u->recv_cb(u, NULL, 0, -errno, u->recv_arg);
            return;
        }
        if (n == 0)
            return;
        u->st.recv_calls++;
        size_t k = collect(u, (unsigned)n);
        u->st.received += k;
        u->recv_cb(u, u->dgrams, (unsigned)k, 0, u->recv_arg);
        if ((unsigned)n < u->batch)
            return; /* dry */
    }
}
