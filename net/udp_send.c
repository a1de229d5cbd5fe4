/*
 * net/udp_send.c — sending: straight to the kernel while the send queue
 * is empty (sendmsg for one, sendmmsg for a batch, UDP_SEGMENT for a GSO
 * buffer); what the kernel refuses with EAGAIN is copied into the queue,
 * a ring of udp_qent, and goes out in order from the WRITE handler with
 * sendmmsg. The queue's bound counts datagrams (a GSO entry counts its
 * segments); past it a send fails with -ENOBUFS, so nothing is dropped
 * without the caller hearing of it.
 */
#include "net/udp_impl.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

/* ----------------------------------------------------------- Destinations */

/* Checks `to` against the socket; an IPv4 address on a dual-stack IPv6
 * socket is written v4-mapped into *mapped and *to / *tolen point there. */
static int check_dest(const iol_udp *u, const struct sockaddr **to, socklen_t *tolen, struct sockaddr_in6 *mapped)
{
    const struct sockaddr *a = *to;
    if (!a)
        return u->connected ? 0 : -EDESTADDRREQ;
    if (u->connected)
        return -EISCONN;
    if (*tolen < (socklen_t)sizeof(sa_family_t))
        return -EINVAL;
    switch (a->sa_family) {
    case AF_INET:
        if (*tolen < (socklen_t)sizeof(struct sockaddr_in))
            return -EINVAL;
        if (u->family == AF_INET)
            return 0;
        if (u->family != AF_INET6 || u->v6only)
            return -EAFNOSUPPORT;
        memset(mapped, 0, sizeof *mapped);
        mapped->sin6_family = AF_INET6;
        mapped->sin6_port = ((const struct sockaddr_in *)a)->sin_port;
        mapped->sin6_addr.s6_addr[10] = mapped->sin6_addr.s6_addr[11] = 0xff;
        memcpy(&mapped->sin6_addr.s6_addr[12], &((const struct sockaddr_in *)a)->sin_addr, 4);
        *to = (const struct sockaddr *)mapped;
        *tolen = sizeof *mapped;
        return 0;
    case AF_INET6:
        if (*tolen < (socklen_t)sizeof(struct sockaddr_in6))
            return -EINVAL;
        return u->family == AF_INET6 ? 0 : -EAFNOSUPPORT;
    case AF_UNIX:
        if (*tolen <= (socklen_t)offsetof(struct sockaddr_un, sun_path))
            return -EINVAL;
        return u->family == AF_UNIX ? 0 : -EAFNOSUPPORT;
    default:
        return -EAFNOSUPPORT;
    }
}

/* Fills h for one datagram; ctl holds UDP_SEND_CTL bytes for the
 * source-address and GSO ancillary data. */
static void fill_msg(const iol_udp *u, struct msghdr *h, struct iovec *iov, char *ctl, const void *data, size_t len,
                     const struct sockaddr *to, socklen_t tolen, const struct sockaddr *local, int ifindex,
                     uint16_t gso)
{
    memset(h, 0, sizeof *h);
    iov->iov_base = (void *)data;
    iov->iov_len = len;
    h->msg_iov = iov;
    h->msg_iovlen = 1;
    h->msg_name = (void *)to;
    h->msg_namelen = to ? tolen : 0;
    bool pkt = (local || ifindex) && u->family != AF_UNIX;
    if (!pkt && !gso)
        return;
    memset(ctl, 0, UDP_SEND_CTL);
    h->msg_control = ctl;
    h->msg_controllen = UDP_SEND_CTL;
    struct cmsghdr *c = CMSG_FIRSTHDR(h);
    size_t used = 0;
    if (pkt) {
        /* A v4 destination (plain or v4-mapped) takes IP_PKTINFO. */
        bool v4 = u->family == AF_INET ||
                  (to && to->sa_family == AF_INET6 &&
                   IN6_IS_ADDR_V4MAPPED(&((const struct sockaddr_in6 *)to)->sin6_addr)) ||
                  (!to && local && local->sa_family == AF_INET);
        if (v4) {
            struct in_pktinfo pi = { .ipi_ifindex = ifindex };
            if (local && local->sa_family == AF_INET)
                pi.ipi_spec_dst = ((const struct sockaddr_in *)local)->sin_addr;
            else if (local && local->sa_family == AF_INET6)
                memcpy(&pi.ipi_spec_dst, &((const struct sockaddr_in6 *)local)->sin6_addr.s6_addr[12], 4);
            c->cmsg_level = IPPROTO_IP;
            c->cmsg_type = IP_PKTINFO;
            c->cmsg_len = CMSG_LEN(sizeof pi);
            memcpy(CMSG_DATA(c), &pi, sizeof pi);
            used += CMSG_SPACE(sizeof pi);
        } else {
            struct in6_pktinfo pi = { .ipi6_ifindex = (unsigned)ifindex };
            if (local && local->sa_family == AF_INET6)
                pi.ipi6_addr = ((const struct sockaddr_in6 *)local)->sin6_addr;
            c->cmsg_level = IPPROTO_IPV6;
            c->cmsg_type = IPV6_PKTINFO;
            c->cmsg_len = CMSG_LEN(sizeof pi);
            memcpy(CMSG_DATA(c), &pi, sizeof pi);
            used += CMSG_SPACE(sizeof pi);
        }
        c = (struct cmsghdr *)(ctl + used);
    }
    if (gso) {
        c->cmsg_level = SOL_UDP;
        c->cmsg_type = UDP_SEGMENT;
        c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        memcpy(CMSG_DATA(c), &gso, sizeof gso);
        used += CMSG_SPACE(sizeof(uint16_t));
    }
    h->msg_controllen = used;
}

/* ------------------------------------------------------------------ Queue */

static bool queue_grow(iol_udp *u)
{
    if (u->qcount < u->qcap)
        return true;
    size_t cap = u->qcap ? u->qcap * 2 : 16;
    udp_qent *q = malloc(cap * sizeof *q);
    if (!q)
        return false;
    for (size_t i = 0; i < u->qcount; i++)
        q[i] = u->q[(u->qhead + i) % u->qcap];
    free(u->q);
    u->q = q;
    u->qcap = cap;
    u->qhead = 0;
    return true;
}

/* Copies one datagram (or GSO buffer) into the queue. -ENOMEM. */
static int queue_push(iol_udp *u, const void *data, size_t len, const struct sockaddr *to, socklen_t tolen,
                      const struct sockaddr *local, int ifindex, uint16_t gso, unsigned nseg)
{
    if (!queue_grow(u))
        return -ENOMEM;
    char *copy = malloc(len ? len : 1);
    if (!copy)
        return -ENOMEM;
    if (len)
        memcpy(copy, data, len);
    udp_qent *e = &u->q[(u->qhead + u->qcount) % u->qcap];
    memset(e, 0, sizeof *e);
    e->data = copy;
    e->len = len;
    if (to) {
        memcpy(&e->to, to, tolen);
        e->tolen = tolen;
    }
    if (local) {
        socklen_t ll = local->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
        memcpy(&e->local, local, ll);
        e->locallen = ll;
    }
    e->ifindex = ifindex;
    e->gso = gso;
    e->nseg = nseg;
    u->qcount++;
    u->qdgrams += nseg;
    u->st.queued += nseg;
    if (u->qdgrams > u->st.queue_peak)
        u->st.queue_peak = u->qdgrams;
    return 0;
}

static void queue_pop(iol_udp *u)
{
    udp_qent *e = &u->q[u->qhead];
    free(e->data);
    u->qdgrams -= e->nseg;
    u->qhead = (u->qhead + 1) % u->qcap;
    u->qcount--;
}

size_t iol__udp_queue_drop(iol_udp *u)
{
    size_t n = u->qdgrams;
    while (u->qcount)
        queue_pop(u);
    return n;
}

static bool scratch(iol_udp *u)
{
    if (u->smsgs)
        return true;
    u->smsgs = calloc(UDP_SEND_CHUNK, sizeof *u->smsgs);
    u->siov = calloc(UDP_SEND_CHUNK, sizeof *u->siov);
    u->sctl = calloc(UDP_SEND_CHUNK, UDP_SEND_CTL);
    u->smapped = calloc(UDP_SEND_CHUNK, sizeof *u->smapped);
    if (u->smsgs && u->siov && u->sctl && u->smapped)
        return true;
    free(u->smsgs);
    free(u->siov);
    free(u->sctl);
    free(u->smapped);
    u->smsgs = NULL;
    u->siov = NULL;
    u->sctl = NULL;
    u->smapped = NULL;
    return false;
}

void iol__udp_flush(iol_udp *u, bool report)
{
    if (!scratch(u))
        return; /* the queue waits for memory; the WRITE handler stays */
    while (u->qcount && !u->closed) {
        unsigned n = 0;
        for (; n < UDP_SEND_CHUNK && n < u->qcount; n++) {
            udp_qent *e = &u->q[(u->qhead + n) % u->qcap];
            fill_msg(u, &u->smsgs[n].msg_hdr, &u->siov[n], u->sctl + n * UDP_SEND_CTL, e->data, e->len,
                     e->tolen ? (const struct sockaddr *)&e->to : NULL, e->tolen,
                     e->locallen ? (const struct sockaddr *)&e->local : NULL, e->ifindex,
                     u->gso_broken ? 0 : e->gso);
        }
        int r = sendmmsg(u->fd, u->smsgs, n, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (r < 0) {
            int err = errno;
            if (err == EINTR)
                continue;
            if (err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS)
                return; /* the WRITE handler brings us back */
            u->st.send_calls++;
            /* The head datagram is refused (too big, or the socket holds an
             * error such as an ICMP refusal): drop it, say so, go on later. */
            u->st.send_errors += u->q[u->qhead].nseg;
            queue_pop(u);
            if (report)
                iol__udp_report(u, -err);
            return;
        }
        u->st.send_calls++;
        for (int i = 0; i < r; i++) {
            udp_qent *e = &u->q[u->qhead];
            u->st.sent += e->nseg;
            if (e->gso && !u->gso_broken)
                u->st.segmented += e->nseg;
            queue_pop(u);
        }
        if ((unsigned)r < n)
            return;
    }
}

/* ------------------------------------------------------------------- Send */

static int send_prologue(iol_udp *u)
{
    int r = iol__udp_check(u);
    if (r < 0)
        return r;
    if (u->pending_error) {
        r = u->pending_error;
        u->pending_error = 0;
        return r;
    }
    return 0;
}

/* Queues one datagram (the kernel said EAGAIN, or others wait). */
static int enqueue(iol_udp *u, const void *data, size_t len, const struct sockaddr *to, socklen_t tolen,
                   const struct sockaddr *local, int ifindex, uint16_t gso, unsigned nseg)
{
    if (u->qdgrams + nseg > u->qlimit)
        return -ENOBUFS;
    int r = queue_push(u, data, len, to, tolen, local, ifindex, gso, nseg);
    if (r == 0 && u->qcount == 1)
        (void)iol__udp_update_events(u); /* on failure the next send or event retries */
    return r;
}

int iol_udp_send(iol_udp *u, const void *data, size_t len, const struct sockaddr *to, socklen_t tolen)
{
    iol_udp_msg m = { .data = data, .len = len, .to = to, .tolen = tolen };
    int r = iol_udp_send_batch(u, &m, 1);
    return r == 1 ? 0 : r;
}

static int check_msg(const iol_udp *u, const iol_udp_msg *m, const struct sockaddr **to, socklen_t *tolen,
                     struct sockaddr_in6 *mapped)
{
    if (!m->data && m->len)
        return -EINVAL;
    if (m->len > IOL_UDP_MAX_PAYLOAD)
        return -EMSGSIZE;
    if (m->ifindex < 0)
        return -EINVAL;
    *to = m->to;
    *tolen = m->tolen;
    return check_dest(u, to, tolen, mapped);
}

/* Whether m may join the run of datagrams that mmsghdr `h` sends as GSO
 * segments: same destination, no source address of its own, not longer
 * than the run's segment (a shorter one ends the run), within the
 * kernel's bounds on segments and bytes. */
typedef struct udp_run {
    const struct sockaddr *to;
    socklen_t tolen;
    size_t seg, bytes;
    unsigned count, first;
    bool closed;
} udp_run;

static bool run_joins(const udp_run *g, const iol_udp_msg *m, const struct sockaddr *to, socklen_t tolen)
{
    if (g->closed || m->len == 0 || m->local || m->ifindex || m->len > g->seg)
        return false;
    if (g->count >= IOL_UDP_MAX_GSO_SEGMENTS || g->bytes + m->len > IOL_UDP_MAX_PAYLOAD - 28)
        return false;
    if (tolen != g->tolen)
        return false;
    return to == g->to || (to && g->to && memcmp(to, g->to, tolen) == 0);
}

int iol_udp_send_batch(iol_udp *u, const iol_udp_msg *msgs, unsigned n)
{
    int r = send_prologue(u);
    if (r < 0)
        return r;
    if (!msgs && n)
        return -EINVAL;
    /* Runs of equal-size datagrams to one destination go as one GSO send
     * (what QUIC stacks do by hand); off for good when the kernel cannot,
     * off for this call once a run was refused (sent apart instead). */
    bool coalesce = !u->gso_broken && u->family != AF_UNIX && (iol_udp_offload() & IOL_UDP_OFFLOAD_GSO);
    unsigned done = 0;
    while (done < n) {
        if (u->qcount) {
            /* Others wait: this one queues behind them, in order. */
            const struct sockaddr *to;
            socklen_t tolen;
            struct sockaddr_in6 mapped;
            r = check_msg(u, &msgs[done], &to, &tolen, &mapped);
            if (r == 0)
                r = enqueue(u, msgs[done].data, msgs[done].len, to, tolen, msgs[done].local, msgs[done].ifindex, 0, 1);
            if (r < 0)
                return done ? (int)done : r;
            done++;
            continue;
        }
        if (!scratch(u))
            return done ? (int)done : -ENOMEM;
        udp_run runs[UDP_SEND_CHUNK];
        unsigned k = 0, nm = 0;
        for (; k < UDP_SEND_CHUNK && done + k < n; k++) {
            const iol_udp_msg *m = &msgs[done + k];
            const struct sockaddr *to;
            socklen_t tolen;
            r = check_msg(u, m, &to, &tolen, &u->smapped[k]);
            if (r < 0)
                break;
            u->siov[k] = (struct iovec){ (void *)m->data, m->len };
            if (coalesce && nm > 0 && run_joins(&runs[nm - 1], m, to, tolen)) {
                udp_run *g = &runs[nm - 1];
                g->count++;
                g->bytes += m->len;
                g->closed = m->len < g->seg;
                continue;
            }
            fill_msg(u, &u->smsgs[nm].msg_hdr, &u->siov[k], u->sctl + nm * UDP_SEND_CTL, m->data, m->len, to, tolen,
                     m->local, m->ifindex, 0);
            runs[nm++] = (udp_run){ .to = to, .tolen = tolen, .seg = m->len, .bytes = m->len, .count = 1, .first = k,
                                    .closed = m->len == 0 || m->local || m->ifindex };
        }
        if (k == 0)
            return done ? (int)done : r; /* msgs[done] is malformed */
        for (unsigned i = 0; i < nm; i++) {
            udp_run *g = &runs[i];
            if (g->count < 2)
                continue;
            struct msghdr *h = &u->smsgs[i].msg_hdr;
            fill_msg(u, h, &u->siov[g->first], u->sctl + i * UDP_SEND_CTL, u->siov[g->first].iov_base, g->seg, g->to,
                     g->tolen, NULL, 0, (uint16_t)g->seg);
            h->msg_iovlen = g->count; /* the run's datagrams, back to back: one every seg bytes */
        }
        int s;
        if (nm == 1) {
            ssize_t w = sendmsg(u->fd, &u->smsgs[0].msg_hdr, MSG_DONTWAIT | MSG_NOSIGNAL);
            s = w < 0 ? -1 : 1;
        } else {
            s = sendmmsg(u->fd, u->smsgs, nm, MSG_DONTWAIT | MSG_NOSIGNAL);
        }
        if (s < 0) {
            int err = errno;
            if (err == EINTR)
                continue;
            u->st.send_calls++;
            if (err != EAGAIN && err != EWOULDBLOCK) {
                if (runs[0].count > 1) {
                    /* A run the kernel would not segment (a device without
                     * checksum offload: EIO; a segment past the path's MTU):
                     * the same datagrams again, one by one. */
                    if (err == EIO)
                        u->gso_broken = true;
                    coalesce = false;
                    continue;
                }
                return done ? (int)done : -err;
            }
            /* The socket is full: queue the first; the rest follow it above. */
            const iol_udp_msg *m = &msgs[done];
            r = enqueue(u, m->data, m->len, u->smsgs[0].msg_hdr.msg_name, u->smsgs[0].msg_hdr.msg_namelen, m->local,
                        m->ifindex, 0, 1);
            if (r < 0)
                return done ? (int)done : r;
            done++;
            continue;
        }
        u->st.send_calls++;
        unsigned sent = 0;
        for (int i = 0; i < s; i++) {
            sent += runs[i].count;
            if (runs[i].count > 1)
                u->st.segmented += runs[i].count;
        }
        u->st.sent += sent;
        done += sent;
        if ((unsigned)s < nm) {
            /* The kernel stopped inside the batch: the next one goes first
             * and tells why (EAGAIN queues it; an error is returned). */
            continue;
        }
        if (k < UDP_SEND_CHUNK && done < n)
            return (int)done; /* msgs[done] is malformed */
    }
    return (int)done;
}

/* GSO without the kernel's help: the same datagrams in one sendmmsg. */
static int send_segments(iol_udp *u, const char *data, size_t len, size_t seg, const struct sockaddr *to,
                         socklen_t tolen, unsigned nseg)
{
    iol_udp_msg m[IOL_UDP_MAX_GSO_SEGMENTS] = { 0 };
    for (unsigned i = 0; i < nseg; i++) {
        size_t off = (size_t)i * seg;
        m[i] = (iol_udp_msg){ .data = data + off, .len = len - off < seg ? len - off : seg, .to = to, .tolen = tolen };
    }
    int r = iol_udp_send_batch(u, m, nseg);
    if (r >= 0 && (unsigned)r < nseg)
        r = iol_udp_send_batch(u, m + r, 1); /* the error of the one refused */
    return r < 0 ? r : (int)nseg;
}

int iol_udp_send_gso(iol_udp *u, const void *data, size_t len, size_t segment_size, const struct sockaddr *to,
                     socklen_t tolen)
{
    int r = send_prologue(u);
    if (r < 0)
        return r;
    if (!data || len == 0 || segment_size == 0)
        return -EINVAL;
    if (u->family == AF_UNIX)
        return -EOPNOTSUPP;
    size_t nseg = (len + segment_size - 1) / segment_size;
    if (nseg > IOL_UDP_MAX_GSO_SEGMENTS)
        return -EINVAL;
    if (len > IOL_UDP_MAX_PAYLOAD - 28 || segment_size > UINT16_MAX)
        return -EMSGSIZE;
    struct sockaddr_in6 mapped;
    if ((r = check_dest(u, &to, &tolen, &mapped)) < 0)
        return r;
    if (u->qdgrams + nseg > u->qlimit)
        return -ENOBUFS;
    bool gso = !u->gso_broken && (iol_udp_offload() & IOL_UDP_OFFLOAD_GSO) && nseg > 1;
    if (!gso)
        return send_segments(u, data, len, segment_size, to, tolen, (unsigned)nseg);
    if (u->qcount) {
        r = enqueue(u, data, len, to, tolen, NULL, 0, (uint16_t)segment_size, (unsigned)nseg);
        return r < 0 ? r : (int)nseg;
    }
    struct msghdr h;
    struct iovec iov;
    char ctl[UDP_SEND_CTL];
    fill_msg(u, &h, &iov, ctl, data, len, to, tolen, NULL, 0, (uint16_t)segment_size);
    for (;;) {
        ssize_t w = sendmsg(u->fd, &h, MSG_DONTWAIT | MSG_NOSIGNAL);
        u->st.send_calls++;
        if (w >= 0) {
            u->st.sent += nseg;
            u->st.segmented += nseg;
            return (int)nseg;
        }
        int err = errno;
        if (err == EINTR)
            continue;
        if (err == EAGAIN || err == EWOULDBLOCK) {
            r = enqueue(u, data, len, to, tolen, NULL, 0, (uint16_t)segment_size, (unsigned)nseg);
            return r < 0 ? r : (int)nseg;
        }
        if (err == EIO || err == EOPNOTSUPP) {
            /* The route's device cannot checksum segments (the kernel then
             * refuses UDP_SEGMENT): plain datagrams from now on. */
            u->gso_broken = true;
            return send_segments(u, data, len, segment_size, to, tolen, (unsigned)nseg);
        }
        return -err;
    }
}
