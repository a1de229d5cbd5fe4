/*
 * net/udp.c — datagram sockets on a loop (include/ioloop.h, "Datagrams"):
 * creation and binding, options and the receive memory, the fd handler,
 * lifetime (close, the loop's close hook) and the small calls. Receiving
 * is in udp_recv.c, sending in udp_send.c; see udp_impl.h.
 */
#include "net/udp_impl.h"
#include "net/udp_bind.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/sock_diag.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "loop/owner.h"

#define UDP_KNOWN_FLAGS (IOL_UDP_GRO | IOL_UDP_PKTINFO | IOL_UDP_RECV_TIMESTAMP | IOL_UDP_RECV_ECN | IOL_UDP_REUSEPORT)

/* ------------------------------------------------------------ Offload probe */

/* Bits + 1 once probed, 0 before. relaxed: every thread that probes
 * computes the same answer from the kernel, so a race only repeats the
 * probe; the value carries no other memory with it. */
static _Atomic unsigned offload_probed;

unsigned iol_udp_offload(void)
{
    unsigned v = atomic_load_explicit(&offload_probed, memory_order_relaxed);
    if (v)
        return v - 1;
    unsigned bits = 0;
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd >= 0) {
        int seg = 1400, on = 1;
        if (setsockopt(fd, SOL_UDP, UDP_SEGMENT, &seg, sizeof seg) == 0)
            bits |= IOL_UDP_OFFLOAD_GSO;
        if (setsockopt(fd, SOL_UDP, UDP_GRO, &on, sizeof on) == 0)
            bits |= IOL_UDP_OFFLOAD_GRO;
        close(fd);
    }
    atomic_store_explicit(&offload_probed, bits + 1, memory_order_relaxed);
    return bits;
}

/* --------------------------------------------------------------- Addresses */

int iol_udp_address(const char *host, uint16_t port, struct sockaddr_storage *out, socklen_t *len)
{
    if (!host || !out || !len)
        return -EINVAL;
    memset(out, 0, sizeof *out);
    struct sockaddr_in *a4 = (struct sockaddr_in *)out;
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons(port);
        *len = sizeof *a4;
        return 0;
    }
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)out;
    char buf[INET6_ADDRSTRLEN + IF_NAMESIZE + 2];
    size_t n = strlen(host);
    if (n >= sizeof buf)
        return -EINVAL;
    memcpy(buf, host, n + 1);
    char *scope = strchr(buf, '%');
    if (scope)
        *scope++ = '\0';
    if (inet_pton(AF_INET6, buf, &a6->sin6_addr) != 1)
        return -EINVAL;
    if (scope) {
        unsigned idx = if_nametoindex(scope);
        if (!idx) {
            char *end;
            unsigned long v = strtoul(scope, &end, 10);
            if (*scope == '\0' || *end != '\0' || v == 0 || v > UINT32_MAX)
                return -EINVAL;
            idx = (unsigned)v;
        }
        a6->sin6_scope_id = idx;
    }
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons(port);
    *len = sizeof *a6;
    return 0;
}

/* ------------------------------------------------------------------ Events */

void iol__udp_report(iol_udp *u, int err)
{
    if (u->recv_cb)
        u->recv_cb(u, NULL, 0, err, u->recv_arg);
    else
        u->pending_error = err;
}

static void udp_on_events(int fd, unsigned events, void *arg);

int iol__udp_update_events(iol_udp *u)
{
    if (u->closed)
        return 0;
    unsigned want = (u->recv_cb && !u->ring ? IOL_READ : 0) | (u->qcount ? IOL_WRITE : 0);
    int r = 0;
    if (want == 0) {
        if (u->registered) {
            r = iol_loop_remove_handler(u->loop, u->fd);
            if (r == 0 || r == -ENOENT) {
                u->registered = false;
                r = 0;
            }
        }
    } else if (!u->registered) {
        r = iol_loop_add_handler(u->loop, u->fd, want, udp_on_events, u);
        if (r == 0)
            u->registered = true;
    } else if (want != u->watched) {
        r = iol_loop_update_handler(u->loop, u->fd, want);
    }
    if (r == 0)
        u->watched = want;
    return r;
}

static void udp_free(iol_udp *u);

static void udp_on_events(int fd, unsigned events, void *arg)
{
    iol_udp *u = arg;
    (void)fd;
    u->depth++;
    if ((events & (IOL_WRITE | IOL_ERROR)) && u->qcount)
        iol__udp_flush(u, true);
    if (!u->closed && (events & (IOL_READ | IOL_ERROR)) && u->recv_cb && !u->ring) {
        iol__udp_handle_read(u);
    } else if (!u->closed && (events & IOL_ERROR) && !u->qcount && !u->ring) {
        /* Nothing reads or writes to consume the socket's error, and an
         * unconsumed one would keep the handler firing: keep it for the
         * next send call. */
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(u->fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err)
            iol__udp_report(u, -err);
    }
    if (!u->closed)
        (void)iol__udp_update_events(u); /* a failure leaves the old registration: still correct, only wider */
    u->depth--;
    iol__udp_maybe_free(u);
}

/* --------------------------------------------------------------- Lifetime */

static void udp_free(iol_udp *u)
{
    iol__loop_remove_close_hook(u->loop, &u->close_hook);
    (void)iol__udp_queue_drop(u);
    free(u->q);
    free(u->rbuf);
    free(u->rmsgs);
    free(u->riov);
    free(u->raddr);
    free(u->rlocal);
    free(u->rctl);
    free(u->dgrams);
    free(u->smsgs);
    free(u->siov);
    free(u->sctl);
    free(u->smapped);
    free(u->pend);
    free(u->path);
    iol_loop_unref(u->loop);
    free(u);
}

/* Closes the fd; the queue's datagrams are dropped and counted. */
static size_t udp_shut(iol_udp *u)
{
    u->closed = true;
    iol__udp_ring_close(u);
    size_t dropped = iol__udp_queue_drop(u);
    u->st.dropped_at_close += dropped;
    if (u->fd >= 0) {
        if (u->registered)
            (void)iol_loop_remove_handler(u->loop, u->fd); /* nothing to undo on a loop going away */
        u->registered = false;
        close(u->fd);
        u->fd = -1;
    }
    if (u->path)
        unlink(u->path);
    u->recv_cb = NULL;
    return dropped;
}

/* The loop is closing (stopped, on its thread): no frame of u is on the
 * stack. Close, tell the application, free. */
static void udp_loop_closing(iol__close_hook *hook)
{
    iol_udp *u = (iol_udp *)((char *)hook - offsetof(iol_udp, close_hook));
    if (u->depth)
        return; /* impossible while the loop is stopped; leak rather than free under a frame */
    (void)udp_shut(u);
    iol_udp_close_fn fn = u->close_cb;
    u->close_cb = NULL;
    if (fn)
        fn(u, u->close_arg);
    /* A ring operation still in flight ends in the loop's close, which
     * delivers its last result: freed then. */
    iol__udp_maybe_free(u);
}

void iol__udp_maybe_free(iol_udp *u)
{
    if (u->closed && u->depth == 0 && u->op.inflight == 0)
        udp_free(u);
}

int iol_udp_close(iol_udp *u)
{
    if (!u)
        return -EINVAL;
    int r = iol__loop_owner_check(u->loop);
    if (r < 0)
        return r;
    if (u->closed)
        return -EBADF; /* only reachable from inside its own callback */
    if (u->qcount)
        iol__udp_flush(u, false);
    size_t dropped = udp_shut(u);
    iol__udp_maybe_free(u);
    return dropped > INT32_MAX ? INT32_MAX : (int)dropped;
}

/* ----------------------------------------------------------------- Set-up */

int iol__udp_check_config(const iol_udp_config *cfg)
{
    if (cfg->batch > IOL_UDP_MAX_BATCH || cfg->max_datagram > IOL_UDP_MAX_PAYLOAD)
        return -EINVAL;
    if (cfg->flags & ~(unsigned)UDP_KNOWN_FLAGS)
        return -EINVAL;
    if (cfg->rcvbuf < 0 || cfg->sndbuf < 0)
        return -EINVAL;
    return 0;
}

static int setopt(int fd, int level, int name, int v)
{
    return setsockopt(fd, level, name, &v, sizeof v) < 0 ? -errno : 0;
}

/* Options and memory; fd is not u's until this succeeds. */
static int udp_setup(iol_udp *u, int fd, const iol_udp_config *cfg)
{
    u->flags = cfg->flags;
    if (cfg->rcvbuf > 0)
        (void)setopt(fd, SOL_SOCKET, SO_RCVBUF, cfg->rcvbuf); /* a hint: the kernel bounds it */
    if (cfg->sndbuf > 0)
        (void)setopt(fd, SOL_SOCKET, SO_SNDBUF, cfg->sndbuf);
    bool ip = u->family == AF_INET || u->family == AF_INET6;
    bool v4 = u->family == AF_INET || (u->family == AF_INET6 && !u->v6only); /* v4 traffic possible */
    bool v6 = u->family == AF_INET6;
    if (ip)
        (void)setopt(fd, SOL_SOCKET, SO_RXQ_OVFL, 1); /* the kernel's drop count with every batch */
    int r;
    if (ip && (cfg->flags & IOL_UDP_PKTINFO)) {
        if ((v4 && (r = setopt(fd, IPPROTO_IP, IP_PKTINFO, 1)) < 0) ||
            (v6 && (r = setopt(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)) < 0))
            return r;
    }
    if (ip && (cfg->flags & IOL_UDP_RECV_ECN)) {
        if ((v4 && (r = setopt(fd, IPPROTO_IP, IP_RECVTOS, 1)) < 0) ||
            (v6 && (r = setopt(fd, IPPROTO_IPV6, IPV6_RECVTCLASS, 1)) < 0))
            return r;
    }
    if ((cfg->flags & IOL_UDP_RECV_TIMESTAMP) && (r = setopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, 1)) < 0)
        return r;
    if (ip && (cfg->flags & IOL_UDP_GRO) && (iol_udp_offload() & IOL_UDP_OFFLOAD_GRO))
        u->gro = setopt(fd, SOL_UDP, UDP_GRO, 1) == 0;

    u->batch = cfg->batch ? cfg->batch : UDP_DEFAULT_BATCH;
    u->slot = cfg->max_datagram ? cfg->max_datagram : UDP_DEFAULT_SLOT;
    if (u->gro)
        u->slot = IOL_UDP_MAX_PAYLOAD;
    u->qlimit = cfg->send_queue_limit ? cfg->send_queue_limit : UDP_DEFAULT_QUEUE;
    size_t b = u->batch;
    u->rbuf = malloc(b * u->slot);
    u->rmsgs = calloc(b, sizeof *u->rmsgs);
    u->riov = calloc(b, sizeof *u->riov);
    u->raddr = calloc(b, sizeof *u->raddr);
    u->rlocal = calloc(b, sizeof *u->rlocal);
    u->rctl = calloc(b, UDP_CTL_SPACE);
    u->dgram_cap = b;
    u->dgrams = calloc(b, sizeof *u->dgrams);
    if (!u->rbuf || !u->rmsgs || !u->riov || !u->raddr || !u->rlocal || !u->rctl || !u->dgrams)
        return -ENOMEM;
    for (size_t i = 0; i < b; i++) {
        u->riov[i].iov_base = u->rbuf + i * u->slot;
        u->riov[i].iov_len = u->slot;
        struct msghdr *h = &u->rmsgs[i].msg_hdr;
        h->msg_name = &u->raddr[i];
        h->msg_iov = &u->riov[i];
        h->msg_iovlen = 1;
        h->msg_control = u->rctl + i * UDP_CTL_SPACE;
    }
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (ip && getsockname(fd, (struct sockaddr *)&ss, &len) == 0)
        u->local_port = iol__udp_port_of(&ss);
    return 0;
}

/* The object around fd (not yet owned: on failure the caller keeps it). */
static int udp_make(iol_udp **out, iol_loop *loop, int fd, int family, bool v6only, const iol_udp_config *cfg)
{
    iol_udp *u = calloc(1, sizeof *u);
    if (!u)
        return -ENOMEM;
    u->close_hook.fn = udp_loop_closing;
    int r = iol__loop_add_close_hook(loop, &u->close_hook);
    if (r < 0) {
        free(u);
        return r;
    }
    u->loop = iol_loop_ref(loop);
    u->fd = -1;
    u->family = family;
    u->v6only = v6only;
    r = udp_setup(u, fd, cfg);
    if (r < 0) {
        udp_free(u);
        return r;
    }
    u->fd = fd;
    *out = u;
    return 0;
}

static int socket_family(int fd, int *family, bool *v6only)
{
    int type, dom;
    socklen_t len = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0)
        return errno == ENOTSOCK ? -ENOTSOCK : -EBADF;
    if (type != SOCK_DGRAM)
        return -EPROTOTYPE;
    len = sizeof dom;
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &dom, &len) < 0)
        return -errno;
    if (dom != AF_INET && dom != AF_INET6 && dom != AF_UNIX)
        return -EAFNOSUPPORT;
    *family = dom;
    *v6only = false;
    if (dom == AF_INET6) {
        int v = 0;
        len = sizeof v;
        if (getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v, &len) == 0)
            *v6only = v != 0;
    }
    return 0;
}

int iol_udp_open(iol_udp **out, iol_loop *loop, int fd, const iol_udp_config *cfg)
{
    static const iol_udp_config defaults;
    if (!out || !loop)
        return -EINVAL;
    if (!cfg)
        cfg = &defaults;
    int r = iol__udp_check_config(cfg);
    if (r < 0)
        return r;
    if ((r = iol__loop_owner_check(loop)) < 0)
        return r;
    if (fd < 0)
        return -EBADF;
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0)
        return -EBADF;
    int family = AF_UNSPEC;
    bool v6only = false;
    if ((r = socket_family(fd, &family, &v6only)) < 0)
        return r;
    if (!(flags & O_NONBLOCK) && fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
        return -errno;
    struct sockaddr_storage peer;
    socklen_t plen = sizeof peer;
    iol_udp *u;
    if ((r = udp_make(&u, loop, fd, family, v6only, cfg)) < 0)
        return r;
    u->connected = getpeername(fd, (struct sockaddr *)&peer, &plen) == 0;
    *out = u;
    return 0;
}

static int bind_unix(const char *path, int *fdp)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    size_t n = strlen(path);
    if (n == 0)
        return -EINVAL;
    if (n >= sizeof sun.sun_path)
        return -ENAMETOOLONG;
    memcpy(sun.sun_path, path, n + 1);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (bind(fd, (struct sockaddr *)&sun, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1)) < 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    *fdp = fd;
    return 0;
}

int iol__udp_bind_address(const iol_udp_config *cfg, struct sockaddr_storage *ss, socklen_t *len)
{
    int r = iol_udp_address(cfg->host ? cfg->host : "0.0.0.0", cfg->port, ss, len);
    if (r < 0)
        return r;
    if (cfg->v6only && ss->ss_family != AF_INET6)
        return -EINVAL;
    return 0;
}

int iol__udp_bind(const struct sockaddr_storage *ss, socklen_t len, bool v6only, bool reuseport, int *fdp)
{
    int r;
    int fd = socket(ss->ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if ((ss->ss_family == AF_INET6 && (r = setopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, v6only)) < 0) ||
        (reuseport && (r = setopt(fd, SOL_SOCKET, SO_REUSEPORT, 1)) < 0))
        goto fail;
    if (bind(fd, (const struct sockaddr *)ss, len) < 0) {
        r = -errno;
        goto fail;
    }
    *fdp = fd;
    return 0;
fail:
    close(fd);
    return r;
}

uint16_t iol__udp_port_of(const struct sockaddr_storage *ss)
{
    return ntohs(ss->ss_family == AF_INET ? ((const struct sockaddr_in *)ss)->sin_port
                                          : ((const struct sockaddr_in6 *)ss)->sin6_port);
}

static int bind_ip(const iol_udp_config *cfg, int *fdp, int *family)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int r = iol__udp_bind_address(cfg, &ss, &len);
    if (r < 0)
        return r;
    if ((r = iol__udp_bind(&ss, len, cfg->v6only, cfg->flags & IOL_UDP_REUSEPORT, fdp)) < 0)
        return r;
    *family = ss.ss_family;
    return 0;
}

int iol_udp_new(iol_udp **out, iol_loop *loop, const iol_udp_config *cfg)
{
    static const iol_udp_config defaults;
    if (!out || !loop)
        return -EINVAL;
    if (!cfg)
        cfg = &defaults;
    int r = iol__udp_check_config(cfg);
    if (r < 0)
        return r;
    if (cfg->path && (cfg->host || cfg->port || cfg->v6only))
        return -EINVAL;
    if ((r = iol__loop_owner_check(loop)) < 0)
        return r;
    int fd = -1, family = AF_UNIX;
    char *path = NULL;
    if (cfg->path) {
        if (!(path = strdup(cfg->path)))
            return -ENOMEM;
        r = bind_unix(cfg->path, &fd);
    } else {
        r = bind_ip(cfg, &fd, &family);
    }
    if (r < 0) {
        free(path);
        return r;
    }
    iol_udp *u;
    if ((r = udp_make(&u, loop, fd, family, cfg->v6only, cfg)) < 0) {
        close(fd);
        if (path)
            unlink(path);
        free(path);
        return r;
    }
    u->path = path;
    *out = u;
    return 0;
}

/* ------------------------------------------------------------ Small calls */

int iol__udp_check(const iol_udp *u)
{
    if (!u)
        return -EINVAL;
    int r = iol__loop_owner_check(u->loop);
    if (r < 0)
        return r;
    return u->closed ? -EBADF : 0;
}

int iol_udp_connect(iol_udp *u, const struct sockaddr *addr, socklen_t len)
{
    int r = iol__udp_check(u);
    if (r < 0)
        return r;
    if (!addr || len < (socklen_t)sizeof(sa_family_t))
        return -EINVAL;
    struct sockaddr_in6 mapped;
    if (addr->sa_family == AF_INET && u->family == AF_INET6) {
        if (u->v6only)
            return -EAFNOSUPPORT;
        if (len < (socklen_t)sizeof(struct sockaddr_in))
            return -EINVAL;
        const struct sockaddr_in *a4 = (const struct sockaddr_in *)addr;
        memset(&mapped, 0, sizeof mapped);
        mapped.sin6_family = AF_INET6;
        mapped.sin6_port = a4->sin_port;
        mapped.sin6_addr.s6_addr[10] = mapped.sin6_addr.s6_addr[11] = 0xff;
        memcpy(&mapped.sin6_addr.s6_addr[12], &a4->sin_addr, 4);
        addr = (const struct sockaddr *)&mapped;
        len = sizeof mapped;
    } else if (addr->sa_family != u->family) {
        return -EAFNOSUPPORT;
    } else if ((u->family == AF_INET && len < (socklen_t)sizeof(struct sockaddr_in)) ||
               (u->family == AF_INET6 && len < (socklen_t)sizeof(struct sockaddr_in6))) {
        return -EINVAL;
    }
    if (connect(u->fd, addr, len) < 0)
        return -errno;
    u->connected = true;
    return 0;
}

int iol_udp_local_address(const iol_udp *u, struct sockaddr *addr, socklen_t *len)
{
    int r = iol__udp_check(u);
    if (r < 0)
        return r;
    if (!addr || !len)
        return -EINVAL;
    socklen_t cap = *len;
    if (getsockname(u->fd, addr, len) < 0)
        return -errno;
    return *len > cap ? -ENOSPC : 0;
}

int iol_udp_recv_start(iol_udp *u, iol_udp_recv_fn cb, void *arg)
{
    int r = iol__udp_check(u);
    if (r < 0)
        return r;
    if (!cb)
        return -EINVAL;
    iol_udp_recv_fn old_cb = u->recv_cb;
    void *old_arg = u->recv_arg;
    u->recv_cb = cb;
    u->recv_arg = arg;
    if (iol__udp_ring_start(u) < 0 && u->ring) {
        /* The ring path was in use and cannot go on: the handler's. */
        iol__udp_ring_close(u);
    }
    r = iol__udp_update_events(u);
    if (r < 0) {
        u->recv_cb = old_cb;
        u->recv_arg = old_arg;
    }
    return r;
}

int iol_udp_recv_stop(iol_udp *u)
{
    int r = iol__udp_check(u);
    if (r < 0)
        return r;
    u->recv_cb = NULL;
    u->recv_arg = NULL;
    iol__udp_ring_stop(u);
    (void)iol__udp_update_events(u); /* removing or narrowing a handler fails only on a closing loop */
    return 0;
}

int iol_udp_set_close_callback(iol_udp *u, iol_udp_close_fn fn, void *arg)
{
    int r = iol__udp_check(u);
    if (r < 0)
        return r;
    u->close_cb = fn;
    u->close_arg = arg;
    return 0;
}

int iol_udp_fd(const iol_udp *u)
{
    if (!u)
        return -EINVAL;
    int r = iol__loop_owner_check(u->loop);
    if (r < 0)
        return r;
    return u->closed ? -EBADF : u->fd;
}

iol_loop *iol_udp_loop(const iol_udp *u)
{
    return u ? u->loop : NULL;
}

size_t iol_udp_send_queue_size(const iol_udp *u)
{
    return u && iol__loop_owner_check(u->loop) == 0 ? u->qdgrams : 0; /* the loop's count, read unlocked */
}

int iol_udp_get_stats(const iol_udp *u, iol_udp_stats *out, size_t size)
{
    if (!u || !out || size == 0)
        return -EINVAL;
    int r = iol__loop_owner_check(u->loop);
    if (r < 0)
        return r;
    iol_udp_stats st = u->st;
    st.queue_len = u->qdgrams;
    st.ring = u->ring;
    /* SO_RXQ_OVFL rides only on datagrams queued after a drop; the
     * socket's own count (SO_MEMINFO) is current even when none came since. */
    uint32_t mem[SK_MEMINFO_VARS];
    socklen_t mlen = sizeof mem;
    if (!u->closed && u->family != AF_UNIX && getsockopt(u->fd, SOL_SOCKET, SO_MEMINFO, mem, &mlen) == 0 &&
        mlen > SK_MEMINFO_DROPS * sizeof mem[0] && mem[SK_MEMINFO_DROPS] > st.kernel_drops)
        st.kernel_drops = mem[SK_MEMINFO_DROPS];
    if (size > sizeof st) {
        memset((char *)out + sizeof st, 0, size - sizeof st);
        size = sizeof st;
    }
    memcpy(out, &st, size);
    return 0;
}
