/* runtime/ — how many handshakes on a port the kernel holds half-open
 * (SYN_RECV request sockets), for the final accepts at stop (listener.c).
 *
 * A listening socket closed while one of its handshakes is half-open
 * resets that connection when the handshake completes, and its client may
 * already have seen connect() succeed (it sent the final ACK, which is
 * still on its way, was dropped, or is held by TCP_DEFER_ACCEPT). Only the
 * kernel's socket table knows about these: ask it with one sock_diag dump
 * of the TCP sockets in SYN_RECV, both families (an IPv4 client of a
 * dual-stack socket is an IPv4 request), and count those on the port. */
#include <errno.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "runtime/runtime_impl.h"

static int count_family(int nl, int family, uint16_t port)
{
    struct {
        struct nlmsghdr nlh;
        struct inet_diag_req_v2 req;
    } msg;
    memset(&msg, 0, sizeof(msg));
    msg.nlh.nlmsg_len = sizeof(msg);
    msg.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
    msg.nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    msg.req.sdiag_family = (uint8_t)family;
    msg.req.sdiag_protocol = IPPROTO_TCP;
    msg.req.idiag_states = 1u << TCP_SYN_RECV;
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    if (sendto(nl, &msg, sizeof(msg), 0, (struct sockaddr *)&kernel, sizeof(kernel)) < 0)
        return -errno;

    int count = 0;
    /* Aligned for struct nlmsghdr. */
    static __thread long buf[8192 / sizeof(long)];
    for (;;) {
        ssize_t n = recv(nl, buf, sizeof(buf), 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            return -EIO;
        for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (unsigned)n); h = NLMSG_NEXT(h, n)) {
            if (h->nlmsg_type == NLMSG_DONE)
                return count;
            if (h->nlmsg_type == NLMSG_ERROR) {
                struct nlmsgerr *e = NLMSG_DATA(h);
                return e->error < 0 ? e->error : -EIO;
            }
            if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY || h->nlmsg_len < NLMSG_LENGTH(sizeof(struct inet_diag_msg)))
                continue;
            struct inet_diag_msg *d = NLMSG_DATA(h);
            if (d->idiag_state == TCP_SYN_RECV && ntohs(d->id.idiag_sport) == port)
                count++;
        }
    }
}

int iol__half_open_count(uint16_t port)
{
    int nl = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (nl < 0)
        return -errno;
    int v4 = count_family(nl, AF_INET, port);
    int v6 = v4 < 0 ? v4 : count_family(nl, AF_INET6, port);
    close(nl);
    if (v4 < 0)
        return v4;
    if (v6 < 0)
        return v6 == -EAFNOSUPPORT || v6 == -ENOENT ? v4 : v6;
    return v4 + v6;
}
