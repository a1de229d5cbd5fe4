/* Datagrams (include/ioloop.h, "Datagrams"): batches of every size,
 * zero-length and maximum-size datagrams, truncation, IPv6 and v4-mapped
 * peers, ancillary data, a full send queue, ICMP errors, GSO and GRO, a
 * flood, Unix datagram sockets, close with sends queued, the loop closing
 * with a udp object open, the thread rule and bad arguments. Each test
 * drives a loop on this thread with run_once (or on a thread of its own
 * for the thread rule); the peers are raw sockets. Runs on every poller
 * ($IOL_POLLER: `meson test --setup uring`). */
#include "ioloop.h"
#include "testutil.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <libgen.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

/* ----------------------------------------------------------------- Helpers */

typedef struct rx {
    unsigned calls;          /* callbacks with datagrams */
    unsigned last_n;
    unsigned max_n;
    size_t total;            /* datagrams */
    size_t bytes;
    int last_status;         /* last status < 0 */
    unsigned errors;
    iol_udp_datagram last;   /* the last datagram (data copied below) */
    char data[70000];
    struct sockaddr_storage peer;
    struct sockaddr_storage local;
    size_t lens[4096];       /* lengths of the first datagrams, in order */
    unsigned truncated;
    bool close_in_cb;
    bool echo;               /* send every datagram back to its sender */
    unsigned coalesced;      /* datagrams that start where the one before ended (GRO split) */
    int echo_err;
} rx;

static void on_recv(iol_udp *u, const iol_udp_datagram *d, unsigned n, int status, void *arg)
{
    rx *r = arg;
    if (status < 0) {
        ck_assert_uint_eq(n, 0);
        r->last_status = status;
        r->errors++;
        return;
    }
    ck_assert_uint_gt(n, 0);
    r->calls++;
    r->last_n = n;
    if (n > r->max_n)
        r->max_n = n;
    for (unsigned i = 0; i < n; i++) {
        if (r->total < sizeof r->lens / sizeof r->lens[0])
            r->lens[r->total] = d[i].len;
        r->total++;
        r->bytes += d[i].len;
        if (d[i].flags & IOL_UDP_TRUNCATED)
            r->truncated++;
        if (i > 0 && d[i].data == d[i - 1].data + d[i - 1].len)
            r->coalesced++;
        if (r->echo) {
            int e = iol_udp_send(u, d[i].data, d[i].len, d[i].peer, d[i].peerlen);
            if (e < 0)
                r->echo_err = e;
        }
    }
    const iol_udp_datagram *l = &d[n - 1];
    r->last = *l;
    memcpy(r->data, l->data, l->len);
    memcpy(&r->peer, l->peer, l->peerlen);
    if (l->local)
        memcpy(&r->local, l->local, l->locallen);
    if (r->close_in_cb)
        ck_assert_int_ge(iol_udp_close(u), 0);
}

/* Runs the loop until *flag passes want (or 5 s). */
static void pump_until(iol_loop *loop, const size_t *count, size_t want)
{
    double end = iol_test_now() + (iol_test_under_valgrind() ? 50 : 5);
    while (*count < want && iol_test_now() < end)
        ck_assert_int_eq(iol_loop_run_once(loop, 0.02), 0);
}

static void pump_for(iol_loop *loop, double seconds)
{
    double end = iol_test_now() + seconds;
    while (iol_test_now() < end)
        ck_assert_int_eq(iol_loop_run_once(loop, 0.01), 0);
}

static iol_loop *new_loop(void)
{
    iol_loop *loop;
    iol_loop_config cfg = { .make_current = IOL_CURRENT_NEVER };
    ck_assert_int_eq(iol_loop_new(&loop, &cfg), 0);
    return loop;
}

/* A udp object on 127.0.0.1 (or host) at an ephemeral port; *addr its address. */
static iol_udp *new_udp(iol_loop *loop, const char *host, iol_udp_config *cfg, struct sockaddr_storage *addr,
                        socklen_t *len)
{
    iol_udp_config c = cfg ? *cfg : (iol_udp_config){ 0 };
    c.host = host ? host : "127.0.0.1";
    iol_udp *u;
    ck_assert_int_eq(iol_udp_new(&u, loop, &c), 0);
    if (addr) {
        *len = sizeof *addr;
        ck_assert_int_eq(iol_udp_local_address(u, (struct sockaddr *)addr, len), 0);
    }
    return u;
}

/* A datagram socketpair (CLOEXEC), sv[0] wrapped with cfg (may be NULL). */
static iol_udp *open_unix_pair(iol_loop *loop, int sv[2], const iol_udp_config *cfg)
{
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv), 0);
    iol_udp *u;
    ck_assert_int_eq(iol_udp_open(&u, loop, sv[0], cfg), 0);
    return u;
}

static int raw_socket(int family, struct sockaddr_storage *bound, socklen_t *len)
{
    int fd = socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_storage ss;
    socklen_t l;
    ck_assert_int_eq(iol_udp_address(family == AF_INET ? "127.0.0.1" : "::1", 0, &ss, &l), 0);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&ss, l), 0);
    if (bound) {
        *len = sizeof *bound;
        ck_assert_int_eq(getsockname(fd, (struct sockaddr *)bound, len), 0);
    }
    struct timeval tv = { .tv_sec = 5 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

static uint16_t port_of(const struct sockaddr_storage *ss)
{
    return ntohs(ss->ss_family == AF_INET ? ((const struct sockaddr_in *)ss)->sin_port
                                          : ((const struct sockaddr_in6 *)ss)->sin6_port);
}

/* --------------------------------------------------------------- Receiving */

/* Every batch size 1..limit arrives as one callback of exactly that many
 * datagrams, in order, with the right lengths (the first one empty). */
START_TEST(batches_of_every_size)
{
    iol_loop *loop = new_loop();
    const unsigned limit = 64;
    iol_udp_config cfg = { .batch = limit, .rcvbuf = 4 << 20 };
    struct sockaddr_storage addr;
    socklen_t alen;
    iol_udp *u = new_udp(loop, NULL, &cfg, &addr, &alen);
    rx r = { 0 };
    ck_assert_int_eq(iol_udp_recv_start(u, on_recv, &r), 0);
    int c = raw_socket(AF_INET, NULL, NULL);
    char buf[256];
    memset(buf, 'x', sizeof buf);
    unsigned ring_calls = 0;
    for (unsigned k = 1; k <= limit; k++) {
        r.calls = 0;
        r.total = 0;
        for (unsigned i = 0; i < k; i++)
            ck_assert_int_eq(sendto(c, buf, i, 0, (struct sockaddr *)&addr, alen), (ssize_t)i);
        pump_until(loop, &r.total, k);
        ck_assert_uint_eq(r.total, k);
        iol_udp_stats st;
        ck_assert_int_eq(iol_udp_get_stats(u, &st, sizeof st), 0);
        if (!st.ring) {
            ck_assert_uint_eq(r.calls, 1); /* all of them in one batch */
            ck_assert_uint_eq(r.last_n, k);
        } else {
            /* io_uring posts a burst over a few waits (the wait returns
             * at the first result while the kernel's task work posts the
             * rest): a batch is what one wait brought */
            ck_assert_uint_le(r.calls, k);
            ring_calls += r.calls;
        }
        ck_assert_uint_le(r.max_n, limit);
        for (unsigned i = 0; i < k; i++)
            ck_assert_uint_eq(r.lens[i], i); /* i = 0: a zero-length datagram */
    }
    iol_udp_stats st;
    ck_assert_int_eq(iol_udp_get_stats(u, &st, sizeof st), 0);
    ck_assert_uint_eq(st.received, (size_t)limit * (limit + 1) / 2);
    if (!st.ring)
        ck_assert_uint_eq(st.recv_calls, limit);
    else /* batching happens: far fewer batches than datagrams */
        ck_assert_msg(ring_calls < st.received / 4, "%u batches for %llu datagrams", ring_calls,
                      (unsigned long long)st.received);
    if (getenv("IOL_TEST_VERBOSE"))
        fprintf(stderr, "batches_of_every_size: ring %d, %u batches for %llu datagrams\n", st.ring, ring_calls,
                (unsigned long long)st.received);
    /* The ring path where the poller and the kernel have it, else none. */
    const char *poller = iol_loop_poller(loop);
    if (strcmp(poller, "uring") != 0)
        ck_assert(!st.ring);
    close(c);
    ck_assert_int_eq(iol_udp_close(u), 0);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
}
END_TEST

/* More than a batch waiting: delivered in full batches, nothing lost. */
START_TEST(more_than_a_batch)
{
    iol_loop *loop = new_loop();
    iol_udp_config cfg = { .batch = 8, .rcvbuf = 1 << 20 };
    struct sockaddr_storage addr;
    socklen_t alen;
    iol_udp *u = new_udp(loop, NULL, &cfg, &addr, &alen);
    rx r = { 0 };
    ck_assert_int_eq(iol_udp_recv_start(u, on_recv, &r), 0);
    int c = raw_socket(AF_INET, NULL, NULL);
    for (int i = 0; i < 100; i++)
        ck_assert_int_eq(sendto(c, "abc", 3, 0, (struct sockaddr *)&addr, alen), 3);
    pump_until(loop, &r.total, 100);
    ck_assert_uint_eq(r.total, 100);
    ck_assert_uint_eq(r.max_n, 8);
    close(c);
    iol_udp_close(u);
    iol_loop_close(loop, false);
}
END_TEST

/* The largest IPv4 datagram (65507 bytes) arrives whole with max_datagram
 * 65535; 65508 is refused by the kernel, more than 65535 by us. */
START_TEST(maximum_datagram_size)
{
    iol_loop *loop = new_loop();
    iol_udp_config cfg = { .batch = 4, .max_datagram = IOL_UDP_MAX_PAYLOAD };
    struct sockaddr_storage addr;
    socklen_t alen;
    iol_udp *u = new_udp(loop, NULL, &cfg, &addr, &alen);
    iol_udp *s = new_udp(loop, NULL, NULL, NULL, NULL);
    rx *r = calloc(1, sizeof *r);
    ck_assert_int_eq(iol_udp_recv_start(u, on_recv, r), 0);
    char *big = malloc(70000);
    for (int i = 0; i < 70000; i++)
        big[i] = (char)(i * 7);
    ck_assert_int_eq(iol_udp_send(s, big, 65507, (struct sockaddr *)&addr, alen), 0);
    pump_until(loop, &r->total, 1);
    ck_assert_uint_eq(r->total, 1);
    ck_assert_uint_eq(r->last.len, 65507);
    ck_assert_uint_eq(r->truncated, 0);
    ck_assert(memcmp(r->data, big, 65507) == 0);
    ck_assert_int_eq(iol_udp_send(s, big, 65508, (struct sockaddr *)&addr, alen), -EMSGSIZE);
    ck_assert_int_eq(iol_udp_send(s, big, 65536, (struct sockaddr *)&addr, alen), -EMSGSIZE);
    iol_udp_msg m[2] = { { .data = "ok", .len = 2, .to = (struct sockaddr *)&addr, .tolen = alen },
                         { .data = big, .len = 65508, .to = (struct sockaddr *)&addr, .tolen = alen } };
    ck_assert_int_eq(iol_udp_send_batch(s, m, 2), 1); /* the second one refused: sent alone, it says why */
    ck_assert_int_eq(iol_udp_send_batch(s, m + 1, 1), -EMSGSIZE);
    pump_until(loop, &r->total, 2);
    ck_assert_uint_eq(r->last.len, 2);
    free(big);
    free(r);
    iol_udp_close(s);
    iol_udp_close(u);
    iol_loop_close(loop, false);
}
END_TEST

/* More datagrams in one go than the loop's ring has buffers (256): on the
 * ring path the multishot receive runs dry (-ENOBUFS), the batch goes to
 * the callback, the buffers come back and it is armed again; nothing is
 * lost on any path. */
START_TEST(ring_runs_dry)
{
    iol_loop *loop = new_loop();
    iol_udp_config cfg = { .batch = IOL_UDP_MAX_BATCH, .rcvbuf = 8 << 20 };
    struct sockaddr_storage addr;
    socklen_t alen;
    iol_udp *u = new_udp(loop, NULL, &cfg, &addr, &alen);
    rx *r = calloc(1, sizeof *r);
    ck_assert_int_eq(iol_udp_recv_start(u, on_recv, r), 0);
    iol_loop_run_once(loop, 0); /* arms the ring's receive, where there is one */
    int c = raw_socket(AF_INET, NULL, NULL);
    for (int round = 0; round < 3; round++) {
        size_t want = r->total + 1000;
        for (int i = 0; i < 1000; i++)
            ck_assert_int_eq(sendto(c, &i, sizeof i, 0, (struct sockaddr *)&addr, alen), (ssize_t)sizeof i);
        pump_until(loop, &r->total, want);
        ck_assert_uint_eq(r->total, want);
    }
    iol_udp_stats st;
    ck_assert_int_eq(iol_udp_get_stats(u, &st, sizeof st), 0);
    ck_assert_uint_eq(st.kernel_drops, 0);
    ck_assert_uint_eq(st.received, 3000);
    close(c);
    iol_udp_close(u);
    free(r);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
}
END_TEST

/* A datagram longer than max_datagram is cut and flagged, and counted. */
START_TEST(truncation_is_flagged)
{
    iol_loop *loop = new_loop();
    iol_udp_config cfg = { .max_datagram = 100 };
    struct sockaddr_storage addr;
    socklen_t alen;
    iol_udp *u = new_udp(loop, NULL, &cfg, &addr, &alen);
    rx r = { 0 };
    ck_assert_int_eq(iol_udp_recv_start(u, on_recv, &r), 0);
    int c = raw_socket(AF_INET, NULL, NULL);
    char buf[300];
    memset(buf, 'q', sizeof buf);
    ck_assert_int_eq(sendto(c, buf, 100, 0, (struct sockaddr *)&addr, alen), 100);
    ck_assert_int_eq(sendto(c, buf, 300, 0, (struct sockaddr *)&addr, alen), 300);
    pump_until(loop, &r.total, 2);
    ck_assert_uint_eq(r.lens[0], 100);
    ck_assert_uint_eq(r.lens[1], 100);
    ck_assert_uint_eq(r.truncated, 1);
    ck_assert(r.last.flags & IOL_UDP_TRUNCATED);
    iol_udp_stats st;
    ck_assert_int_eq(iol_udp_get_stats(u, &st, sizeof st), 0);
    ck_assert_uint_eq(st.truncated, 1);
    close(c);
    iol_udp_close(u);
    iol_loop_close(loop, false);
}
END_TEST

/* A dual-stack socket on "::" hears IPv4 peers v4-mapped and answers
 * them, at the mapped address or at their plain IPv4 one; an IPv6 peer
 * too. v6only refuses IPv4. */
START_TEST(ipv6_and_v4_mapped_peers)
{
    iol_loop *loop = new_loop();
    struct sockaddr_storage addr;
    socklen_t alen;
    iol_udp *u = new_udp(loop, "::", NULL, &addr, &alen);
    ck_assert_int_eq(addr.ss_family, AF_INET6);
    rx r = { .echo = true };
    ck_assert_int_eq(iol_udp_recv_start(u, on_recv, &r), 0);

    struct sockaddr_storage to4, me4;
    socklen_t to4len, me4len;
    ck_assert_int_eq(iol_udp_address("127.0.0.1", port_of(&addr), &to4, &to4len), 0);
    int c4 = raw_socket(AF_INET, &me4, &me4len);
    ck_assert_int_eq(sendto(c4, "v4", 2, 0, (struct sockaddr *)&to4, to4len), 2);
    pump_until(loop, &r.total, 1);
    ck_assert_int_eq(r.peer.ss_family, AF_INET6);
    ck_assert(IN6_IS_ADDR_V4MAPPED(&((struct sockaddr_in6 *)&r.peer)->sin6_addr));
    ck_assert_uint_eq(port_of(&r.peer), port_of(&me4));
    char buf[16];
    ck_assert_int_eq(recv(c4, buf, sizeof buf, 0), 2); /* the echo, to the mapped address */
    ck_assert_int_eq(iol_udp_send(u, "plain", 5, (struct sockaddr *)&me4, me4len), 0); /* a sockaddr_in */
    ck_assert_int_eq(recv(c4, buf, sizeof buf, 0), 5);

    struct sockaddr_storage to6;
    socklen_t to6len;
    ck_assert_int_eq(iol_udp_address("::1", port_of(&addr), &to6, &to6len), 0);
    int c6 = raw_socket(AF_INET6, NULL, NULL);
    ck_assert_int_eq(sendto(c6, "v6!", 3, 0, (struct sockaddr *)&to6, to6len), 3);
    pump_until(loop, &r.total, 2);
    ck_assert(!IN6_IS_ADDR_V4MAPPED(&((struct sockaddr_in6 *)&r.peer)->sin6_addr));
    ck_assert_int_eq(recv(c6, buf, sizeof buf, 0), 3);
    ck_assert_int_eq(r.echo_err, 0);

    iol_udp_config v6o = { .v6only = true };
    iol_udp *o = new_udp(loop, "::1", &v6o, NULL, NULL);
    ck_assert_int_eq(iol_udp_send(o, "x", 1, (struct sockaddr *)&me4, me4len), -EAFNOSUPPORT);
    iol_udp_config bad = { .host = "127.0.0.1", .v6only = true };
    iol_udp *b;
    ck_assert_int_eq(iol_udp_new(&b, loop, &bad), -EINVAL);
    close(c4);
    close(c6);
    iol_udp_close(o);
    iol_udp_close(u);
    iol_loop_close(loop, false);
}
END_TEST

/* IOL_UDP_PKTINFO, IOL_UDP_RECV_ECN, IOL_UDP_RECV_TIMESTAMP: the local
 * address and interface, the ECN bits and a receive time per datagram;
 * an answer can be sent from the local address it came to. */
START_TEST(ancillary_data)
{
    iol_loop *loop = new_loop();
    iol_udp_config cfg = { .flags = IOL_UDP_PKTINFO | IOL_UDP_RECV_ECN | IOL_UDP_RECV_TIMESTAMP };
    struct sockaddr_storage addr;
    socklen_t alen;
    iol_udp *u = new_udp(loop, "0.0.0.0", &cfg, &addr, &alen);
    rx r = { 0 };
    ck_assert_int_eq(iol_udp_recv_start(u, on_recv, &r), 0);
    struct sockaddr_storage to, me;
    socklen_t tolen, melen;
    ck_assert_int_eq(iol_udp_address("127.0.0.1", port_of(&addr), &to, &tolen), 0);
    int c = raw_socket(AF_INET, &me, &melen);
    int tos = 0x02; /* ECT(0) */
    ck_assert_int_eq(setsockopt(c, IPPROTO_IP, IP_TOS, &tos, sizeof tos), 0);
    ck_assert_int_eq(sendto(c, "hi", 2, 0, (struct sockaddr *)&to, tolen), 2);
    pump_until(loop, &r.total, 1);
    ck_assert_uint_eq(r.last.ecn, 2);
    ck_assert_int_eq(r.last.ifindex, (int)if_nametoindex("lo"));
    ck_assert_ptr_nonnull(r.last.local);
    ck_assert_int_eq(r.local.ss_family, AF_INET);
    ck_assert_uint_eq(ntohl(((struct sockaddr_in *)&r.local)->sin_addr.s_addr), INADDR_LOOPBACK);
    ck_assert_uint_eq(port_of(&r.local), port_of(&addr));
    ck_assert(r.last.timestamp_ns > 1000000000LL); /* after 1970 + 1 s: a real clock reading */
    iol_udp_msg m = { .data = "re", .len = 2, .to = (struct sockaddr *)&r.peer, .tolen = sizeof(struct sockaddr_in),
                      .local = (struct sockaddr *)&r.local, .ifindex = r.last.ifindex };
    ck_assert_int_eq(iol_udp_send_batch(u, &m, 1), 1);
    struct sockaddr_storage from;
    socklen_t fromlen = sizeof from;
    char buf[8];
    ck_assert_int_eq(recvfrom(c, buf, sizeof buf, 0, (struct sockaddr *)&from, &fromlen), 2);
    ck_assert_uint_eq(ntohl(((struct sockaddr_in *)&from)->sin_addr.s_addr), INADDR_LOOPBACK);
    close(c);
    iol_udp_close(u);
    iol_loop_close(loop, false);
}
END_TEST

/* A flood into a small receive buffer while nobody reads: the kernel
 * drops, the loop stays responsive, and the drops show in the stats. */
START_TEST(flood_drops_are_counted)
{
    iol_loop *loop = new_loop();
    iol_udp_config cfg = { .rcvbuf = 4096 };
    struct sockaddr_storage addr;
    socklen_t alen;
    iol_udp *u = new_udp(loop, NULL, &cfg, &addr, &alen);
    int c = raw_socket(AF_INET, NULL, NULL);
    char buf[1000] = { 0 };
    for (int i = 0; i < 2000; i++)
        ck_assert_int_eq(sendto(c, buf, sizeof buf, 0, (struct sockaddr *)&addr, alen), (ssize_t)sizeof buf);
    rx r = { 0 };
    ck_assert_int_eq(iol_udp_recv_start(u, on_recv, &r), 0);
    pump_until(loop, &r.total, 1);
    pump_for(loop, 0.05);
    ck_assert_uint_gt(r.total, 0);
    ck_assert_uint_lt(r.total, 2000);
    iol_udp_stats st;
    ck_assert_int_eq(iol_udp_get_stats(u, &st, sizeof st), 0);
    ck_assert_uint_gt(st.kernel_drops, 0);
    ck_assert_uint_eq(st.kernel_drops + r.total, 2000);
    close(c);
    iol_udp_close(u);
    iol_loop_close(loop, false);
}
END_TEST

/* ----------------------------------------------------------------- Sending */

/* A Unix datagram pair whose peer does not read: the kernel stops taking
 * (EAGAIN), the send queue takes up to its limit, then -ENOBUFS; once
 * the peer reads, everything queued arrives, in order. */
START_TEST(full_send_queue)
{
    iol_loop *loop = new_loop();
    int sv[2];
    iol_udp_config cfg = { .send_queue_limit = 50 };
    iol_udp *u = open_unix_pair(loop, sv, &cfg);
    int sent = 0, r;
    while ((r = iol_udp_send(u, &sent, sizeof sent, NULL, 0)) == 0)
        sent++;
    ck_assert_int_eq(r, -ENOBUFS);
    ck_assert_uint_eq(iol_udp_send_queue_size(u), 50);
    iol_udp_stats st;
    ck_assert_int_eq(iol_udp_get_stats(u, &st, sizeof st), 0);
    ck_assert_uint_eq(st.queue_len, 50);
    ck_assert_uint_eq(st.queued, 50);
    ck_assert_uint_eq(st.sent + 50, (unsigned)sent);
    iol_udp_msg m = { .data = "x", .len = 1 };
    ck_assert_int_eq(iol_udp_send_batch(u, &m, 1), -ENOBUFS);
    ck_assert_int_eq(iol_udp_send_gso(u, "abcd", 4, 2, NULL, 0), -EOPNOTSUPP);
    /* The peer reads: the queue drains in order. */
    fcntl(sv[1], F_SETFL, O_NONBLOCK);
    int got = 0;
    double end = iol_test_now() + 5;
    while (got < sent && iol_test_now() < end) {
        int v;
        while (recv(sv[1], &v, sizeof v, 0) == (ssize_t)sizeof v) {
            ck_assert_int_eq(v, got);
            got++;
        }
        iol_loop_run_once(loop, 0.01);
    }
    ck_assert_int_eq(got, sent);
    ck_assert_uint_eq(iol_udp_send_queue_size(u), 0);
    ck_assert_int_eq(iol_udp_close(u), 0);
    close(sv[1]);
    iol_loop_close(loop, false);
}
END_TEST

/* Close with sends queued: what the kernel takes is sent, the rest is
 * dropped and the count returned. */
START_TEST(close_with_sends_queued)
{
    iol_loop *loop = new_loop();
    int sv[2];
    iol_udp *u = open_unix_pair(loop, sv, NULL);
    int i = 0;
    while (iol_udp_send_queue_size(u) < 20) {
        ck_assert_int_eq(iol_udp_send(u, &i, sizeof i, NULL, 0), 0);
        i++;
    }
    ck_assert_int_eq(iol_udp_close(u), 20);
    ck_assert_int_eq(fcntl(sv[0], F_GETFD), -1); /* the fd is closed */
    close(sv[1]);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
}
END_TEST

/* Connected to a port nobody listens on: ICMP port unreachable comes
 * back as -ECONNREFUSED, to the receive callback while receiving, else to
 * the next send. */
START_TEST(icmp_port_unreachable)
{
    iol_loop *loop = new_loop();
    struct sockaddr_storage dead;
    socklen_t deadlen;
    int tmp = raw_socket(AF_INET, &dead, &deadlen);
    close(tmp); /* its port is now closed */
    iol_udp *u = new_udp(loop, NULL, NULL, NULL, NULL);
    ck_assert_int_eq(iol_udp_connect(u, (struct sockaddr *)&dead, deadlen), 0);
    ck_assert_int_eq(iol_udp_send(u, "a", 1, NULL, 0), 0);
    ck_assert_int_eq(iol_udp_send(u, "a", 1, (struct sockaddr *)&dead, deadlen), -EISCONN);
    usleep(20000);
    ck_assert_int_eq(iol_udp_send(u, "b", 1, NULL, 0), -ECONNREFUSED); /* not receiving: the next send */
    ck_assert_int_eq(iol_udp_send(u, "c", 1, NULL, 0), 0);             /* said once */
    rx r = { 0 };
    ck_assert_int_eq(iol_udp_recv_start(u, on_recv, &r), 0);
    size_t errs = 0;
    double end = iol_test_now() + 5;
    while (r.errors == 0 && iol_test_now() < end)
        iol_loop_run_once(loop, 0.01);
    errs = r.errors;
    ck_assert_uint_eq(errs, 1);
    ck_assert_int_eq(r.last_status, -ECONNREFUSED);
    pump_for(loop, 0.05);
    ck_assert_uint_eq(r.errors, 1); /* the error does not repeat */
    /* An IPv6 udp object connects to an IPv4 peer v4-mapped. */
    iol_udp *v6 = new_udp(loop, "::", NULL, NULL, NULL);
    ck_assert_int_eq(iol_udp_connect(v6, (struct sockaddr *)&dead, deadlen), 0);
    iol_udp_close(v6);
    iol_udp_close(u);
    iol_loop_close(loop, false);
}
END_TEST

/* Batches from the sender side: sendmmsg in chunks, every datagram in
 * order; bad entries stop the batch there. */
START_TEST(send_batch)
{
    iol_loop *loop = new_loop();
    iol_udp_config cfg = { .batch = 256, .rcvbuf = 4 << 20 };
    struct sockaddr_storage addr;
    socklen_t alen;
    iol_udp *u = new_udp(loop, NULL, &cfg, &addr, &alen);
    iol_udp *s = new_udp(loop, NULL, NULL, NULL, NULL);
    rx *r = calloc(1, sizeof *r);
    ck_assert_int_eq(iol_udp_recv_start(u, on_recv, r), 0);
    enum { N = 200 };
    iol_udp_msg m[N];
    unsigned vals[N];
    for (unsigned i = 0; i < N; i++) {
        vals[i] = i;
        m[i] = (iol_udp_msg){ .data = &vals[i], .len = i % 5, .to = (struct sockaddr *)&addr, .tolen = alen };
    }
    ck_assert_int_eq(iol_udp_send_batch(s, m, N), N);
    pump_until(loop, &r->total, N);
    ck_assert_uint_eq(r->total, N);
    for (unsigned i = 0; i < N; i++)
        ck_assert_uint_eq(r->lens[i], i % 5);
    iol_udp_stats st;
    ck_assert_int_eq(iol_udp_get_stats(s, &st, sizeof st), 0);
    ck_assert_uint_eq(st.sent, N);
    ck_assert_uint_le(st.send_calls, 4); /* 64 per sendmmsg */
    m[3].to = NULL;
    ck_assert_int_eq(iol_udp_send_batch(s, m, 5), 3);
    ck_assert_int_eq(iol_udp_send_batch(s, m + 3, 1), -EDESTADDRREQ);
    ck_assert_int_eq(iol_udp_send_batch(s, m, 0), 0);
    free(r);
    iol_udp_close(s);
    iol_udp_close(u);
    iol_loop_close(loop, false);
}
END_TEST

typedef struct seq_rx {
    int ids[512];
    size_t lens[512];
    size_t total;
} seq_rx;

static void on_seq(iol_udp *u, const iol_udp_datagram *d, unsigned n, int status, void *arg)
{
    (void)u;
    seq_rx *r = arg;
    ck_assert_int_eq(status, 0);
    for (unsigned i = 0; i < n && r->total < 512; i++) {
        ck_assert_uint_ge(d[i].len, sizeof(int));
        memcpy(&r->ids[r->total], d[i].data, sizeof(int));
        for (size_t b = sizeof(int); b < d[i].len; b++) /* the rest: the id's low byte */
            ck_assert_int_eq((unsigned char)d[i].data[b], (unsigned char)r->ids[r->total]);
        r->lens[r->total++] = d[i].len;
    }
}

/* A batch with runs of equal-size datagrams to one peer: where the kernel
 * has GSO each run leaves as one UDP_SEGMENT send (all of it in one
 * sendmmsg); the peers get exactly the datagrams, in order. */
START_TEST(send_batch_coalesces)
{
    iol_loop *loop = new_loop();
    iol_udp_config cfg = { .batch = 256, .rcvbuf = 4 << 20 };
    struct sockaddr_storage aa, ab;
    socklen_t al, bl;
    iol_udp *a = new_udp(loop, NULL, &cfg, &aa, &al);
    iol_udp *b = new_udp(loop, NULL, &cfg, &ab, &bl);
    iol_udp *s = new_udp(loop, NULL, NULL, NULL, NULL);
    seq_rx *ra = calloc(1, sizeof *ra), *rb = calloc(1, sizeof *rb);
    ck_assert_int_eq(iol_udp_recv_start(a, on_seq, ra), 0);
    ck_assert_int_eq(iol_udp_recv_start(b, on_seq, rb), 0);
    enum { N = 116 };
    static char bufs[N][100];
    iol_udp_msg m[N];
    for (int i = 0; i < N; i++) {
        size_t len = i < 100 ? 100 : i == 100 ? 37 : 60;
        bool to_b = i > 100 && i <= 110;
        memset(bufs[i], i & 0xff, sizeof bufs[i]);
        memcpy(bufs[i], &i, sizeof i);
        m[i] = (iol_udp_msg){ .data = bufs[i], .len = len, .to = (struct sockaddr *)(to_b ? &ab : &aa),
                              .tolen = to_b ? bl : al };
    }
    ck_assert_int_eq(iol_udp_send_batch(s, m, N), N);
    size_t want_a = N - 10;
    double end = iol_test_now() + 5;
    while ((ra->total < want_a || rb->total < 10) && iol_test_now() < end)
        iol_loop_run_once(loop, 0.01);
    ck_assert_uint_eq(ra->total, want_a);
    ck_assert_uint_eq(rb->total, 10);
    size_t ka = 0, kb = 0;
    for (int i = 0; i < N; i++) {
        bool to_b = i > 100 && i <= 110;
        seq_rx *r = to_b ? rb : ra;
        size_t k = to_b ? kb++ : ka++;
        ck_assert_int_eq(r->ids[k], i);
        ck_assert_uint_eq(r->lens[k], m[i].len);
    }
    iol_udp_stats st;
    ck_assert_int_eq(iol_udp_get_stats(s, &st, sizeof st), 0);
    ck_assert_uint_eq(st.sent, N);
    ck_assert_uint_le(st.send_calls, 2); /* 64 datagrams per sendmmsg */
    if (iol_udp_offload() & IOL_UDP_OFFLOAD_GSO)
        ck_assert_uint_eq(st.segmented, N); /* runs: 64 | 37 to a, 10 to b, 5 to a */
    else
        ck_assert_uint_eq(st.segmented, 0);
    free(ra);
    free(rb);
    iol_udp_close(s);
    iol_udp_close(b);
    iol_udp_close(a);
    iol_loop_close(loop, false);
}
END_TEST

/* GSO: 64 KiB in 1452-byte segments is 46 datagrams at the receiver, the
 * last one shorter; with GRO on the receiving side too (the callback
 * still sees one entry per datagram). */
static void gso_case(unsigned recv_flags)
{
    iol_loop *loop = new_loop();
    iol_udp_config cfg = { .batch = 64, .rcvbuf = 4 << 20, .flags = recv_flags };
    struct sockaddr_storage addr;
    socklen_t alen;
    iol_udp *u = new_udp(loop, NULL, &cfg, &addr, &alen);
    iol_udp *s = new_udp(loop, NULL, NULL, NULL, NULL);
    rx *r = calloc(1, sizeof *r);
    ck_assert_int_eq(iol_udp_recv_start(u, on_recv, r), 0);
    size_t len = 65000;
    char *buf = malloc(len);
    for (size_t i = 0; i < len; i++)
        buf[i] = (char)(i / 1452);
    ck_assert_int_eq(iol_udp_send_gso(s, buf, len, 1452, (struct sockaddr *)&addr, alen), 45);
    pump_until(loop, &r->total, 45);
    ck_assert_uint_eq(r->total, 45);
    for (unsigned i = 0; i < 44; i++)
        ck_assert_uint_eq(r->lens[i], 1452);
    ck_assert_uint_eq(r->lens[44], len - 44 * 1452);
    ck_assert_int_eq(r->data[0], (char)44);
    ck_assert_uint_eq(r->bytes, len);
    iol_udp_stats st;
    ck_assert_int_eq(iol_udp_get_stats(s, &st, sizeof st), 0);
    ck_assert_uint_eq(st.sent, 45);
    if (iol_udp_offload() & IOL_UDP_OFFLOAD_GSO) {
        ck_assert_uint_eq(st.send_calls, 1);
        ck_assert_uint_eq(st.segmented, 45);
    }
    unsigned want_gro = IOL_UDP_OFFLOAD_GSO | IOL_UDP_OFFLOAD_GRO;
    if ((recv_flags & IOL_UDP_GRO) && (iol_udp_offload() & want_gro) == want_gro)
        ck_assert_uint_eq(r->coalesced, 44); /* one coalesced buffer, split back into 45 */
    else
        ck_assert_uint_eq(r->coalesced, 0);
    ck_assert_int_eq(iol_udp_send_gso(s, buf, 1452 * 65, 1452, (struct sockaddr *)&addr, alen), -EINVAL);
    ck_assert_int_eq(iol_udp_send_gso(s, buf, 65508, 65508, (struct sockaddr *)&addr, alen), -EMSGSIZE);
    ck_assert_int_eq(iol_udp_send_gso(s, buf, 0, 100, (struct sockaddr *)&addr, alen), -EINVAL);
    ck_assert_int_eq(iol_udp_send_gso(s, buf, 10, 100, (struct sockaddr *)&addr, alen), 1);
    free(buf);
    free(r);
    iol_udp_close(s);
    iol_udp_close(u);
    iol_loop_close(loop, false);
}

START_TEST(gso_send)
{
    gso_case(0);
}
END_TEST

START_TEST(gso_send_gro_receive)
{
    gso_case(IOL_UDP_GRO);
}
END_TEST

/* Unix datagram sockets bound at paths: the peer's path comes with each
 * datagram and can be answered; the file goes at close. */
START_TEST(unix_datagrams)
{
    char dir[] = "/tmp/iol-udp-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char p1[64], p2[64];
    snprintf(p1, sizeof p1, "%s/a", dir);
    snprintf(p2, sizeof p2, "%s/b", dir);
    iol_loop *loop = new_loop();
    iol_udp *a, *b, *x;
    iol_udp_config ca = { .path = p1 }, cb = { .path = p2 };
    ck_assert_int_eq(iol_udp_new(&a, loop, &ca), 0);
    ck_assert_int_eq(iol_udp_new(&x, loop, &ca), -EADDRINUSE);
    ck_assert_int_eq(iol_udp_new(&b, loop, &cb), 0);
    rx ra = { .echo = true }, rb = { 0 };
    ck_assert_int_eq(iol_udp_recv_start(a, on_recv, &ra), 0);
    ck_assert_int_eq(iol_udp_recv_start(b, on_recv, &rb), 0);
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    strcpy(sun.sun_path, p1);
    ck_assert_int_eq(iol_udp_send(b, "unix", 4, (struct sockaddr *)&sun, sizeof sun), 0);
    pump_until(loop, &rb.total, 1);
    ck_assert_uint_eq(ra.total, 1);
    ck_assert_str_eq(((struct sockaddr_un *)&ra.peer)->sun_path, p2);
    ck_assert_int_eq(memcmp(rb.data, "unix", 4), 0);
    ck_assert_int_eq(iol_udp_close(a), 0);
    ck_assert_int_eq(access(p1, F_OK), -1);
    iol_udp_close(b);
    iol_loop_close(loop, false);
    rmdir(dir);
}
END_TEST

/* ---------------------------------------------------------------- Lifetime */

/* iol_udp_close from inside the receive callback: no further callback,
 * the memory goes when the callback returns (ASan checks). */
START_TEST(close_inside_callback)
{
    iol_loop *loop = new_loop();
    iol_udp_config cfg = { .batch = 2 };
    struct sockaddr_storage addr;
    socklen_t alen;
    iol_udp *u = new_udp(loop, NULL, &cfg, &addr, &alen);
    rx r = { .close_in_cb = true };
    ck_assert_int_eq(iol_udp_recv_start(u, on_recv, &r), 0);
    int c = raw_socket(AF_INET, NULL, NULL);
    for (int i = 0; i < 6; i++)
        sendto(c, "z", 1, 0, (struct sockaddr *)&addr, alen);
    pump_until(loop, &r.total, 1);
    pump_for(loop, 0.03);
    ck_assert_uint_eq(r.calls, 1);
    close(c);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
}
END_TEST

static void count_close(iol_udp *u, void *arg)
{
    ck_assert_ptr_nonnull(u);
    ck_assert_int_eq(iol_udp_fd(u), -EBADF);
    (*(int *)arg)++;
}

/* The loop closes with udp objects still open (one receiving, one with
 * sends queued): each is released, its fd closed, its close callback run
 * once. */
START_TEST(loop_close_releases_udp)
{
    iol_loop *loop = new_loop();
    struct sockaddr_storage addr;
    socklen_t alen;
    iol_udp *u = new_udp(loop, NULL, NULL, &addr, &alen);
    rx r = { 0 };
    ck_assert_int_eq(iol_udp_recv_start(u, on_recv, &r), 0);
    int closed = 0;
    ck_assert_int_eq(iol_udp_set_close_callback(u, count_close, &closed), 0);
    int ufd = iol_udp_fd(u);
    int sv[2];
    iol_udp *q = open_unix_pair(loop, sv, NULL);
    ck_assert_int_eq(iol_udp_set_close_callback(q, count_close, &closed), 0);
    int i = 0;
    while (iol_udp_send_queue_size(q) < 5)
        ck_assert_int_eq(iol_udp_send(q, &i, sizeof i, NULL, 0), 0);
    iol_udp *plain = new_udp(loop, NULL, NULL, NULL, NULL); /* no callback at all */
    (void)plain;
    ck_assert_int_ge(iol_loop_close(loop, false), 0);
    ck_assert_int_eq(closed, 2);
    ck_assert_int_eq(fcntl(ufd, F_GETFD), -1);
    ck_assert_int_eq(fcntl(sv[0], F_GETFD), -1);
    close(sv[1]);
}
END_TEST

/* --------------------------------------------------------------- Threads */

typedef struct thread_loop {
    iol_loop *loop;
    pthread_t th;
} thread_loop;

static void *run_thread(void *arg)
{
    thread_loop *t = arg;
    iol_loop_start(t->loop);
    return NULL;
}

/* While another thread runs the loop, every loop-thread call returns
 * -EPERM and changes nothing; afterwards the object works as before. */
START_TEST(thread_rule)
{
    iol_loop *loop = new_loop();
    struct sockaddr_storage addr;
    socklen_t alen;
    iol_udp *u = new_udp(loop, NULL, NULL, &addr, &alen);
    int c = raw_socket(AF_INET, NULL, NULL);
    thread_loop t = { .loop = loop };
    ck_assert_int_eq(pthread_create(&t.th, NULL, run_thread, &t), 0);
    while (!iol_loop_running(loop))
        usleep(1000);
    rx r = { 0 };
    ck_assert_int_eq(iol_udp_send(u, "no", 2, (struct sockaddr *)&addr, alen), -EPERM);
    iol_udp_msg m = { .data = "no", .len = 2, .to = (struct sockaddr *)&addr, .tolen = alen };
    ck_assert_int_eq(iol_udp_send_batch(u, &m, 1), -EPERM);
    ck_assert_int_eq(iol_udp_send_gso(u, "no", 2, 1, (struct sockaddr *)&addr, alen), -EPERM);
    ck_assert_int_eq(iol_udp_recv_start(u, on_recv, &r), -EPERM);
    ck_assert_int_eq(iol_udp_recv_stop(u), -EPERM);
    ck_assert_int_eq(iol_udp_connect(u, (struct sockaddr *)&addr, alen), -EPERM);
    ck_assert_int_eq(iol_udp_set_close_callback(u, count_close, NULL), -EPERM);
    struct sockaddr_storage la;
    socklen_t lalen = sizeof la;
    ck_assert_int_eq(iol_udp_local_address(u, (struct sockaddr *)&la, &lalen), -EPERM);
    iol_udp_stats st;
    ck_assert_int_eq(iol_udp_get_stats(u, &st, sizeof st), -EPERM);
    ck_assert_int_eq(iol_udp_close(u), -EPERM);
    iol_udp *v;
    ck_assert_int_eq(iol_udp_new(&v, loop, NULL), -EPERM);
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    ck_assert_int_eq(iol_udp_open(&v, loop, fd, NULL), -EPERM);
    close(fd);
    ck_assert(iol_udp_offload() == iol_udp_offload()); /* any thread */
    iol_loop_stop(loop);
    pthread_join(t.th, NULL);
    /* Nothing changed: nothing was sent, no callback set, still open. */
    char buf[4];
    ck_assert_int_eq(recv(u ? iol_udp_fd(u) : -1, buf, sizeof buf, MSG_DONTWAIT), -1);
    ck_assert_int_eq(iol_udp_get_stats(u, &st, sizeof st), 0);
    ck_assert_uint_eq(st.sent, 0);
    ck_assert_uint_eq(st.send_calls, 0);
    ck_assert_int_eq(iol_udp_send(u, "yes", 3, (struct sockaddr *)&addr, alen), 0);
    ck_assert_int_eq(iol_udp_recv_start(u, on_recv, &r), 0);
    pump_until(loop, &r.total, 1);
    ck_assert_uint_eq(r.total, 1);
    close(c);
    ck_assert_int_eq(iol_udp_close(u), 0);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
}
END_TEST

/* ---------------------------------------------------------------- Sharded */

enum { SHARD_PEERS = 32, SHARD_PER_PEER = 5 };

typedef struct shard_seen {
    _Atomic int worker_of[SHARD_PEERS]; /* -1 unseen; the worker a peer's datagrams reached */
    _Atomic int mixed;                  /* a peer seen on two workers */
    _Atomic int total;
    _Atomic int bad_thread;
    _Atomic int echo_err;
    uint16_t base_port[SHARD_PEERS];
} shard_seen;

static void shard_on_recv(iol_udp *u, const iol_udp_datagram *d, unsigned n, int status, void *arg)
{
    shard_seen *s = arg;
    ck_assert_int_ge(status, 0);
    int me = iol_runtime_worker_index();
    if (me < 0 || iol_udp_loop(u) != iol_loop_current())
        atomic_fetch_add(&s->bad_thread, 1);
    for (unsigned i = 0; i < n; i++) {
        int peer;
        ck_assert_uint_eq(d[i].len, sizeof peer);
        memcpy(&peer, d[i].data, sizeof peer);
        ck_assert(peer >= 0 && peer < SHARD_PEERS);
        int expect = -1;
        if (!atomic_compare_exchange_strong(&s->worker_of[peer], &expect, me) && expect != me)
            atomic_fetch_add(&s->mixed, 1);
        if (iol_udp_send(u, d[i].data, d[i].len, d[i].peer, d[i].peerlen) < 0)
            atomic_fetch_add(&s->echo_err, 1);
        atomic_fetch_add(&s->total, 1);
    }
}

/* FNV-1a of the peer's address and port, as the header documents. */
static unsigned fnv_worker(const struct sockaddr_in *a, unsigned n)
{
    const unsigned char *p = (const unsigned char *)&a->sin_addr;
    uint32_t h = 2166136261u;
    for (int i = 0; i < 4; i++)
        h = (h ^ p[i]) * 16777619u;
    h = (h ^ (a->sin_port & 0xff)) * 16777619u;
    h = (h ^ (a->sin_port >> 8)) * 16777619u;
    return h % n;
}

static void sharded_case(int mode)
{
    enum { W = 3 };
    iol_runtime *rt;
    iol_runtime_config rcfg = { .workers = W, .drain_timeout = 1 };
    ck_assert_int_eq(iol_runtime_new(&rt, &rcfg), 0);
    shard_seen *s = calloc(1, sizeof *s);
    for (int i = 0; i < SHARD_PEERS; i++)
        s->worker_of[i] = -1;
    iol_udp_config ucfg = { .host = "127.0.0.1", .rcvbuf = 1 << 20 };
    iol_udp_shard_config cfg = { .udp = &ucfg, .mode = mode, .on_recv = shard_on_recv, .arg = s };
    int id = iol_runtime_udp_bind(rt, &cfg); /* before start: wrapped at start */
    ck_assert_int_ge(id, 0);
    ck_assert_int_eq(iol_runtime_start(rt), 0);
    int port = iol_runtime_udp_port(rt, id);
    ck_assert_int_gt(port, 0);
    struct sockaddr_storage to;
    socklen_t tolen;
    ck_assert_int_eq(iol_udp_address("127.0.0.1", (uint16_t)port, &to, &tolen), 0);
    int fds[SHARD_PEERS];
    struct sockaddr_storage me[SHARD_PEERS];
    for (int p = 0; p < SHARD_PEERS; p++) {
        socklen_t ml;
        fds[p] = raw_socket(AF_INET, &me[p], &ml);
    }
    for (int k = 0; k < SHARD_PER_PEER; k++)
        for (int p = 0; p < SHARD_PEERS; p++)
            ck_assert_int_eq(sendto(fds[p], &p, sizeof p, 0, (struct sockaddr *)&to, tolen), (ssize_t)sizeof p);
    double end = iol_test_now() + 10;
    while (atomic_load(&s->total) < SHARD_PEERS * SHARD_PER_PEER && iol_test_now() < end)
        usleep(2000);
    ck_assert_int_eq(atomic_load(&s->total), SHARD_PEERS * SHARD_PER_PEER);
    for (int p = 0; p < SHARD_PEERS; p++) { /* every echo came back */
        for (int k = 0; k < SHARD_PER_PEER; k++) {
            int v = -1;
            ck_assert_int_eq(recv(fds[p], &v, sizeof v, 0), (ssize_t)sizeof v);
            ck_assert_int_eq(v, p);
        }
    }
    uint64_t counts[W], dropped = 99;
    ck_assert_int_eq(iol_runtime_udp_counts(rt, id, counts, W, &dropped), W);
    ck_assert_uint_eq(dropped, 0);
    uint64_t sum = 0;
    for (int i = 0; i < W; i++) {
        ck_assert_uint_gt(counts[i], 0); /* every worker received its share */
        sum += counts[i];
    }
    ck_assert_uint_eq(sum, SHARD_PEERS * SHARD_PER_PEER);
    ck_assert_int_eq(atomic_load(&s->mixed), 0); /* a peer stays on one worker */
    ck_assert_int_eq(atomic_load(&s->bad_thread), 0);
    ck_assert_int_eq(atomic_load(&s->echo_err), 0);
    if (mode == IOL_UDP_SHARD_PEER)
        for (int p = 0; p < SHARD_PEERS; p++)
            ck_assert_int_eq(atomic_load(&s->worker_of[p]), (int)fnv_worker((struct sockaddr_in *)&me[p], W));
    ck_assert_int_eq(iol_runtime_udp_port(rt, id + 1), -ENOENT);
    ck_assert_ptr_null(iol_runtime_udp_socket(rt, id, W));
    double t0 = iol_test_now();
    iol_runtime_free(rt); /* the sockets close before the drain: it does not wait them out */
    ck_assert(iol_test_now() - t0 < 0.9);
    for (int p = 0; p < SHARD_PEERS; p++)
        close(fds[p]);
    free(s);
}

START_TEST(sharded_kernel)
{
    sharded_case(IOL_UDP_SHARD_KERNEL);
}
END_TEST

START_TEST(sharded_peer_affinity)
{
    sharded_case(IOL_UDP_SHARD_PEER);
}
END_TEST

START_TEST(sharded_bad_arguments)
{
    iol_runtime *rt;
    iol_runtime_config rcfg = { .workers = 2 };
    ck_assert_int_eq(iol_runtime_new(&rt, &rcfg), 0);
    iol_udp_shard_config cfg = { .on_recv = shard_on_recv };
    ck_assert_int_eq(iol_runtime_udp_bind(NULL, &cfg), -EINVAL);
    ck_assert_int_eq(iol_runtime_udp_bind(rt, NULL), -EINVAL);
    iol_udp_shard_config c2 = { 0 };
    ck_assert_int_eq(iol_runtime_udp_bind(rt, &c2), -EINVAL);
    c2 = cfg;
    c2.mode = 7;
    ck_assert_int_eq(iol_runtime_udp_bind(rt, &c2), -EINVAL);
    iol_udp_config u = { .path = "/tmp/x" };
    c2 = cfg;
    c2.udp = &u;
    ck_assert_int_eq(iol_runtime_udp_bind(rt, &c2), -EINVAL);
    u = (iol_udp_config){ .host = "nonsense" };
    ck_assert_int_eq(iol_runtime_udp_bind(rt, &c2), -EINVAL);
    ck_assert_int_eq(iol_runtime_udp_port(NULL, 0), -EINVAL);
    ck_assert_int_eq(iol_runtime_udp_port(rt, 0), -ENOENT);
    ck_assert_int_eq(iol_runtime_udp_counts(rt, 0, NULL, 0, NULL), -ENOENT);
    ck_assert_int_eq(iol_runtime_udp_counts(rt, 0, NULL, 1, NULL), -EINVAL);
    /* A port taken by a socket outside any REUSEPORT group. */
    struct sockaddr_storage taken;
    socklen_t tl;
    int fd = raw_socket(AF_INET, &taken, &tl);
    u = (iol_udp_config){ .host = "127.0.0.1", .port = port_of(&taken) };
    ck_assert_int_eq(iol_runtime_udp_bind(rt, &c2), -EADDRINUSE);
    close(fd);
    /* Bound but never started: the sockets are closed at free. */
    u = (iol_udp_config){ .host = "127.0.0.1" };
    int before = iol_test_dir_entries("/proc/self/fd");
    ck_assert_int_ge(iol_runtime_udp_bind(rt, &c2), 0);
    ck_assert_int_eq(iol_test_dir_entries("/proc/self/fd"), before + 2);
    iol_runtime_free(rt);
    ck_assert_int_le(iol_test_dir_entries("/proc/self/fd"), before - 2); /* the loops' fds too */
    iol_runtime_new(&rt, &rcfg);
    iol_runtime_stop(rt);
    ck_assert_int_eq(iol_runtime_udp_bind(rt, &cfg), -ESHUTDOWN);
    iol_runtime_free(rt);
}
END_TEST

/* ---------------------------------------------------------------- Example */

/* examples/udp-echo --port 0 --workers 2: every datagram of 16 peers comes
 * back to its sender; SIGTERM ends it with status 0. */
START_TEST(udp_echo_example)
{
    char self[PATH_MAX], path[PATH_MAX + 32];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    ck_assert_int_gt(n, 0);
    self[n] = '\0';
    snprintf(path, sizeof path, "%s/../examples/udp-echo", dirname(self));
    int out[2];
    ck_assert_int_eq(pipe2(out, O_CLOEXEC), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        dup2(out[1], STDOUT_FILENO);
        execl(path, "udp-echo", "--port", "0", "--workers", "2", (char *)NULL);
        _exit(127);
    }
    close(out[1]);
    char text[256] = { 0 };
    size_t used = 0;
    int port = 0;
    double end = iol_test_now() + 10;
    while (!port && iol_test_now() < end) {
        struct pollfd p = { .fd = out[0], .events = POLLIN };
        if (poll(&p, 1, 100) <= 0)
            continue;
        ssize_t k = read(out[0], text + used, sizeof text - 1 - used);
        if (k <= 0)
            break;
        used += (size_t)k;
        char *line = strstr(text, "listening on ");
        char *colon = line ? strrchr(line, ':') : NULL;
        if (colon && strchr(colon, '\n'))
            port = atoi(colon + 1);
    }
    ck_assert_int_gt(port, 0);
    struct sockaddr_storage to;
    socklen_t tolen;
    ck_assert_int_eq(iol_udp_address("127.0.0.1", (uint16_t)port, &to, &tolen), 0);
    enum { PEERS = 16 };
    int fds[PEERS];
    for (int p = 0; p < PEERS; p++) {
        fds[p] = raw_socket(AF_INET, NULL, NULL);
        char msg[32];
        int len = snprintf(msg, sizeof msg, "peer %d", p);
        ck_assert_int_eq(sendto(fds[p], msg, (size_t)len, 0, (struct sockaddr *)&to, tolen), len);
        ck_assert_int_eq(sendto(fds[p], "", 0, 0, (struct sockaddr *)&to, tolen), 0);
    }
    for (int p = 0; p < PEERS; p++) {
        char msg[32], want[32];
        int len = snprintf(want, sizeof want, "peer %d", p);
        ck_assert_int_eq(recv(fds[p], msg, sizeof msg, 0), len);
        ck_assert(memcmp(msg, want, (size_t)len) == 0);
        ck_assert_int_eq(recv(fds[p], msg, sizeof msg, 0), 0);
        close(fds[p]);
    }
    kill(pid, SIGTERM);
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status));
    ck_assert_int_eq(WEXITSTATUS(status), 0);
    close(out[0]);
}
END_TEST

/* ------------------------------------------------------------- Bad input */

START_TEST(bad_arguments)
{
    iol_loop *loop = new_loop();
    iol_udp *u = NULL;
    iol_udp_config cfg = { 0 };
    ck_assert_int_eq(iol_udp_new(NULL, loop, NULL), -EINVAL);
    ck_assert_int_eq(iol_udp_new(&u, NULL, NULL), -EINVAL);
    cfg.host = "not an address";
    ck_assert_int_eq(iol_udp_new(&u, loop, &cfg), -EINVAL);
    cfg = (iol_udp_config){ .batch = IOL_UDP_MAX_BATCH + 1 };
    ck_assert_int_eq(iol_udp_new(&u, loop, &cfg), -EINVAL);
    cfg = (iol_udp_config){ .max_datagram = IOL_UDP_MAX_PAYLOAD + 1 };
    ck_assert_int_eq(iol_udp_new(&u, loop, &cfg), -EINVAL);
    cfg = (iol_udp_config){ .flags = 1u << 30 };
    ck_assert_int_eq(iol_udp_new(&u, loop, &cfg), -EINVAL);
    cfg = (iol_udp_config){ .path = "" };
    ck_assert_int_eq(iol_udp_new(&u, loop, &cfg), -EINVAL);
    cfg = (iol_udp_config){ .path = "/tmp/x", .port = 5 };
    ck_assert_int_eq(iol_udp_new(&u, loop, &cfg), -EINVAL);
    char longpath[200];
    memset(longpath, 'a', sizeof longpath - 1);
    longpath[sizeof longpath - 1] = '\0';
    cfg = (iol_udp_config){ .path = longpath };
    ck_assert_int_eq(iol_udp_new(&u, loop, &cfg), -ENAMETOOLONG);
    cfg = (iol_udp_config){ .host = "192.0.2.1" };
    ck_assert_int_eq(iol_udp_new(&u, loop, &cfg), -EADDRNOTAVAIL);
    ck_assert_int_eq(iol_udp_open(&u, loop, -1, NULL), -EBADF);
    int tcp = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_eq(iol_udp_open(&u, loop, tcp, NULL), -EPROTOTYPE);
    close(tcp);
    int pfd[2];
    ck_assert_int_eq(pipe(pfd), 0);
    ck_assert_int_eq(iol_udp_open(&u, loop, pfd[0], NULL), -ENOTSOCK);
    close(pfd[0]);
    close(pfd[1]);
    struct sockaddr_storage ss;
    socklen_t len;
    ck_assert_int_eq(iol_udp_address(NULL, 1, &ss, &len), -EINVAL);
    ck_assert_int_eq(iol_udp_address("1.2.3", 1, &ss, &len), -EINVAL);
    ck_assert_int_eq(iol_udp_address("fe80::1%lo", 1, &ss, &len), 0);
    ck_assert_int_eq(iol_udp_address("fe80::1%nosuchif", 1, &ss, &len), -EINVAL);

    u = new_udp(loop, NULL, NULL, &ss, &len);
    ck_assert_int_eq(iol_udp_send(NULL, "a", 1, NULL, 0), -EINVAL);
    ck_assert_int_eq(iol_udp_send(u, NULL, 1, (struct sockaddr *)&ss, len), -EINVAL);
    ck_assert_int_eq(iol_udp_send(u, "a", 1, NULL, 0), -EDESTADDRREQ);
    ck_assert_int_eq(iol_udp_send(u, "a", 1, (struct sockaddr *)&ss, 3), -EINVAL);
    ck_assert_int_eq(iol_udp_send_batch(u, NULL, 2), -EINVAL);
    ck_assert_int_eq(iol_udp_send_gso(u, NULL, 10, 2, (struct sockaddr *)&ss, len), -EINVAL);
    ck_assert_int_eq(iol_udp_send_gso(u, "a", 1, 0, (struct sockaddr *)&ss, len), -EINVAL);
    ck_assert_int_eq(iol_udp_recv_start(u, NULL, NULL), -EINVAL);
    ck_assert_int_eq(iol_udp_recv_start(NULL, on_recv, NULL), -EINVAL);
    ck_assert_int_eq(iol_udp_recv_stop(NULL), -EINVAL);
    ck_assert_int_eq(iol_udp_connect(u, NULL, 0), -EINVAL);
    ck_assert_int_eq(iol_udp_local_address(u, NULL, NULL), -EINVAL);
    socklen_t tiny = 2;
    ck_assert_int_eq(iol_udp_local_address(u, (struct sockaddr *)&ss, &tiny), -ENOSPC);
    ck_assert_int_eq(iol_udp_get_stats(u, NULL, 0), -EINVAL);
    ck_assert_int_eq(iol_udp_close(NULL), -EINVAL);
    ck_assert_int_eq(iol_udp_fd(NULL), -EINVAL);
    ck_assert_ptr_null(iol_udp_loop(NULL));
    ck_assert_ptr_eq(iol_udp_loop(u), loop);
    ck_assert_uint_eq(iol_udp_send_queue_size(NULL), 0);
    /* a bigger stats struct: the tail is zeroed */
    unsigned char big[sizeof(iol_udp_stats) + 16];
    memset(big, 0xab, sizeof big);
    ck_assert_int_eq(iol_udp_get_stats(u, (iol_udp_stats *)big, sizeof big), 0);
    for (size_t i = sizeof(iol_udp_stats); i < sizeof big; i++)
        ck_assert_uint_eq(big[i], 0);
    iol_udp_close(u);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("udp");
    struct {
        const char *name;
        const TTest *test;
    } cases[] = {
        {"batches_of_every_size", batches_of_every_size},
        {"more_than_a_batch", more_than_a_batch},
        {"maximum_datagram_size", maximum_datagram_size},
        {"ring_runs_dry", ring_runs_dry},
        {"truncation_is_flagged", truncation_is_flagged},
        {"ipv6_and_v4_mapped_peers", ipv6_and_v4_mapped_peers},
        {"ancillary_data", ancillary_data},
        {"flood_drops_are_counted", flood_drops_are_counted},
        {"full_send_queue", full_send_queue},
        {"close_with_sends_queued", close_with_sends_queued},
        {"icmp_port_unreachable", icmp_port_unreachable},
        {"send_batch", send_batch},
        {"send_batch_coalesces", send_batch_coalesces},
        {"gso_send", gso_send},
        {"gso_send_gro_receive", gso_send_gro_receive},
        {"unix_datagrams", unix_datagrams},
        {"close_inside_callback", close_inside_callback},
        {"loop_close_releases_udp", loop_close_releases_udp},
        {"thread_rule", thread_rule},
        {"bad_arguments", bad_arguments},
        {"sharded_kernel", sharded_kernel},
        {"sharded_peer_affinity", sharded_peer_affinity},
        {"sharded_bad_arguments", sharded_bad_arguments},
        {"udp_echo_example", udp_echo_example},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        TCase *tc = iol_test_tcase(cases[i].name, 60);
        tcase_add_test(tc, cases[i].test);
        suite_add_tcase(s, tc);
    }
    return iol_test_run(s);
}
