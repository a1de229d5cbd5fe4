/* iol-bench udp — datagrams.
 *
 * Echo (one datagram in, one out): each server is a process of its own,
 * on one thread, serving a socket on 127.0.0.1 that the bench bound for
 * it: ioloop (iol_udp: recvmmsg batches, or the ring's multishot recvmsg
 * with IOL_POLLER=uring, each batch answered with one
 * iol_udp_send_batch: one sendmmsg, in which the replies to one peer of
 * one size leave as one UDP_SEGMENT message), libuv (uv_udp with UV_UDP_RECVMMSG, answered with
 * uv_udp_try_send per datagram, libuv's way; libuv 1.44 has no batched
 * send) and the floor (epoll_wait, recvmmsg, sendmmsg, nothing else: the
 * raw mechanism without segmentation offload, which ioloop's coalescing
 * can beat). The
 * client is the same C program for all, in the bench process: it keeps two
 * windows of --batch datagrams in flight, sending with sendmmsg and
 * receiving with recvmmsg. Figures: datagrams echoed per second and per
 * millisecond of the server's CPU (user + system from /proc, the whole
 * process); floor_ratio is ioloop's per-CPU figure over the floor's in the
 * same repetition.
 *
 * With --gso, bulk send: a sender process (ioloop) sends 64 KiB buffers
 * as 1,452-byte datagrams to a receiver in the bench process, once with
 * iol_udp_send_gso (UDP_SEGMENT: one system call per buffer) and once as
 * separate datagrams with one plain sendmmsg per buffer on the same
 * socket (not iol_udp_send_batch, which would coalesce them into GSO
 * itself): bytes handed to the kernel per millisecond of the sender's CPU.
 *
 * Implementations are interleaved per repetition (A B C A B C ...). */
#include "bench/bench.h"
#include "bench/proctree.h"

#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "ioloop.h"

#define MAX_BATCH 1024
#define GSO_SEGMENT 1452
#define GSO_SEGMENTS 45 /* 45 x 1452 = 65,340 bytes: 64 KiB of payload, as big as one UDP send goes */

enum { IMPL_IOLOOP, IMPL_LIBUV, IMPL_FLOOR, NIMPLS };
static const char *const impl_json[NIMPLS] = { "ioloop", "libuv", "floor" };
static const char *const impl_label[NIMPLS] = { "ioloop", "libuv-uv_udp", "floor" };

typedef struct udp_params {
    size_t size;
    unsigned batch;
    double duration;
} udp_params;

/* ------------------------------------------------------------ servers */

static void ioloop_echo(iol_udp *u, const iol_udp_datagram *d, unsigned n, int status, void *arg)
{
    static iol_udp_msg m[MAX_BATCH];
    (void)arg;
    if (status < 0)
        return;
    for (unsigned i = 0; i < n; i++)
        m[i] = (iol_udp_msg){ .data = d[i].data, .len = d[i].len, .to = d[i].peer, .tolen = d[i].peerlen };
    unsigned done = 0;
    while (done < n) {
        int r = iol_udp_send_batch(u, m + done, n - done);
        done += r > 0 ? (unsigned)r : 1; /* a refused answer is skipped */
    }
}

static int serve_ioloop(int fd, const udp_params *p)
{
    iol_loop *loop;
    if (iol_loop_new(&loop, NULL) < 0)
        return 1;
    iol_udp_config cfg = { .batch = p->batch, .max_datagram = p->size > 2048 ? p->size : 0,
                           .send_queue_limit = 65536 };
    iol_udp *u;
    if (iol_udp_open(&u, loop, fd, &cfg) < 0 || iol_udp_recv_start(u, ioloop_echo, NULL) < 0)
        return 1;
    iol_loop_start(loop);
    return 0;
}

static char uv_buffer[20 * 65536]; /* libuv reads UV__MMSG_MAXWIDTH (20) chunks of 64 KiB per recvmmsg */

static void uv_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h, (void)suggested;
    *buf = uv_buf_init(uv_buffer, sizeof uv_buffer);
}

static void uv_echo(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf, const struct sockaddr *addr, unsigned flags)
{
    (void)flags;
    if (nread < 0 || !addr)
        return; /* an error, or the end of a recvmmsg batch (nread 0, addr NULL) */
    uv_buf_t b = uv_buf_init(buf->base, (unsigned)nread);
    (void)uv_udp_try_send(h, &b, 1, addr);
}

static int serve_libuv(int fd, const udp_params *p)
{
    (void)p;
    uv_loop_t loop;
    uv_udp_t h;
    if (uv_loop_init(&loop) < 0 || uv_udp_init_ex(&loop, &h, AF_UNSPEC | UV_UDP_RECVMMSG) < 0 ||
        uv_udp_open(&h, fd) < 0 || uv_udp_recv_start(&h, uv_alloc, uv_echo) < 0)
        return 1;
    uv_run(&loop, UV_RUN_DEFAULT);
    return 0;
}

static int serve_floor(int fd, const udp_params *p)
{
    unsigned b = p->batch;
    size_t slot = p->size > 2048 ? p->size : 2048;
    struct mmsghdr *m = calloc(b, sizeof *m);
    struct iovec *iov = calloc(b, sizeof *iov);
    struct sockaddr_storage *addr = calloc(b, sizeof *addr);
    char *buf = malloc(b * slot);
    int ep = epoll_create1(0);
    struct epoll_event ev = { .events = EPOLLIN };
    if (!m || !iov || !addr || !buf || ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
        return 1;
    for (;;) {
        if (epoll_wait(ep, &ev, 1, -1) < 0)
            continue;
        int n;
        do {
            for (unsigned i = 0; i < b; i++) {
                iov[i] = (struct iovec){ buf + i * slot, slot };
                m[i].msg_hdr = (struct msghdr){ .msg_name = &addr[i], .msg_namelen = sizeof addr[i],
                                                .msg_iov = &iov[i], .msg_iovlen = 1 };
            }
            n = recvmmsg(fd, m, b, MSG_DONTWAIT, NULL);
            if (n <= 0)
                break;
            for (int i = 0; i < n; i++)
                iov[i].iov_len = m[i].msg_len;
            for (int sent = 0; sent < n;) {
                int r = sendmmsg(fd, m + sent, (unsigned)(n - sent), 0);
                sent += r > 0 ? r : 1;
            }
        } while ((unsigned)n == b);
    }
}

/* ------------------------------------------------------------ processes */

static pid_t g_child = -1;

static void kill_child(void)
{
    if (g_child > 0) {
        kill(-g_child, SIGKILL);
        waitpid(g_child, NULL, 0);
        g_child = -1;
    }
}

/* Forks fn(fd, p) into a process group of its own. */
static pid_t spawn(int (*fn)(int, const udp_params *), int fd, const udp_params *p)
{
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        signal(SIGPIPE, SIG_IGN);
        _exit(fn(fd, p));
    }
    if (pid > 0) {
        setpgid(pid, pid);
        g_child = pid;
    }
    return pid;
}

static int bound_socket(uint16_t *port, int bufsize)
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof a;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bufsize, sizeof bufsize);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bufsize, sizeof bufsize);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || getsockname(fd, (struct sockaddr *)&a, &len) < 0)
        return -1;
    *port = ntohs(a.sin_port);
    return fd;
}

/* ------------------------------------------------------------ echo client */

typedef struct echo_result {
    double per_sec, per_cpu_ms;
} echo_result;

/* Sends k datagrams of the payload with sendmmsg; returns how many went. */
static unsigned client_send(int fd, struct mmsghdr *m, unsigned k)
{
    unsigned sent = 0;
    while (sent < k) {
        int r = sendmmsg(fd, m + sent, k - sent, 0);
        if (r <= 0)
            break;
        sent += (unsigned)r;
    }
    return sent;
}

static echo_result run_echo(int impl, const udp_params *p)
{
    echo_result res = { NAN, NAN };
    uint16_t port;
    int sfd = bound_socket(&port, 4 << 20);
    if (sfd < 0)
        return res;
    static int (*const servers[NIMPLS])(int, const udp_params *) = { serve_ioloop, serve_libuv, serve_floor };
    pid_t pid = spawn(servers[impl], sfd, p);
    close(sfd);
    if (pid < 0)
        return res;
    uint16_t cport;
    int cfd = bound_socket(&cport, 4 << 20);
    struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    connect(cfd, (struct sockaddr *)&to, sizeof to);
    unsigned w = p->batch, cap = 2 * w;
    char *payload = calloc(1, p->size ? p->size : 1);
    char *rbuf = malloc((size_t)cap * (p->size + 1));
    struct mmsghdr *sm = calloc(cap, sizeof *sm), *rm = calloc(cap, sizeof *rm);
    struct iovec *siov = calloc(cap, sizeof *siov), *riov = calloc(cap, sizeof *riov);
    for (unsigned i = 0; i < cap; i++) {
        siov[i] = (struct iovec){ payload, p->size };
        sm[i].msg_hdr = (struct msghdr){ .msg_iov = &siov[i], .msg_iovlen = 1 };
        riov[i] = (struct iovec){ rbuf + (size_t)i * (p->size + 1), p->size + 1 };
        rm[i].msg_hdr = (struct msghdr){ .msg_iov = &riov[i], .msg_iovlen = 1 };
    }
    uint64_t got = 0, counted = 0;
    unsigned outstanding = client_send(cfd, sm, cap);
    uint64_t start = bench_now_ns(), warm = start + 200000000ull, end = 0;
    proctree_usage before = { 0 }, after = { 0 };
    bool measuring = false;
    for (;;) {
        uint64_t now = bench_now_ns();
        if (!measuring && now >= warm) {
            if (proctree_read(pid, &before) < 0)
                break;
            measuring = true;
            counted = got;
            start = now;
            end = now + (uint64_t)(p->duration * 1e9);
        }
        if (measuring && now >= end)
            break;
        struct pollfd pfd = { .fd = cfd, .events = POLLIN };
        if (poll(&pfd, 1, 50) <= 0) {
            outstanding = client_send(cfd, sm, cap); /* lost in a full buffer: start a fresh window */
            continue;
        }
        int n = recvmmsg(cfd, rm, cap, MSG_DONTWAIT, NULL);
        if (n <= 0)
            continue;
        got += (unsigned)n;
        outstanding = outstanding > (unsigned)n ? outstanding - (unsigned)n : 0;
        if (outstanding <= w)
            outstanding += client_send(cfd, sm, cap - outstanding);
    }
    uint64_t stop = bench_now_ns();
    if (measuring && proctree_read(pid, &after) == 0) {
        double n = (double)(got - counted);
        res.per_sec = n / ((double)(stop - start) / 1e9);
        double cpu = after.cpu_ms - before.cpu_ms;
        res.per_cpu_ms = cpu > 0 ? n / cpu : NAN;
    }
    kill_child();
    close(cfd);
    free(payload);
    free(rbuf);
    free(sm);
    free(rm);
    free(siov);
    free(riov);
    return res;
}

/* ------------------------------------------------------------ bulk send */

typedef struct bulk_shared {
    _Atomic uint64_t bytes; /* handed to the kernel; written by the sender, read by the bench */
} bulk_shared;

static bulk_shared *g_bulk;
static int g_bulk_gso;
static uint16_t g_sink_port;

static int bulk_sender(int fd, const udp_params *p)
{
    (void)fd, (void)p;
    iol_loop *loop;
    iol_udp *u;
    iol_udp_config cfg = { .host = "127.0.0.1", .sndbuf = 4 << 20, .send_queue_limit = 4096 };
    if (iol_loop_new(&loop, NULL) < 0 || iol_udp_new(&u, loop, &cfg) < 0)
        return 1;
    struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(g_sink_port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    static char buf[GSO_SEGMENT * GSO_SEGMENTS];
    struct mmsghdr m[GSO_SEGMENTS];
    struct iovec iov[GSO_SEGMENTS];
    for (int i = 0; i < GSO_SEGMENTS; i++) {
        iov[i] = (struct iovec){ buf + i * GSO_SEGMENT, GSO_SEGMENT };
        m[i].msg_hdr = (struct msghdr){ .msg_name = &to, .msg_namelen = sizeof to, .msg_iov = &iov[i], .msg_iovlen = 1 };
    }
    int ufd = iol_udp_fd(u);
    for (;;) {
        int r;
        if (g_bulk_gso) {
            r = iol_udp_send_gso(u, buf, sizeof buf, GSO_SEGMENT, (struct sockaddr *)&to, sizeof to);
        } else {
            r = 0;
            while (r < GSO_SEGMENTS) {
                int k = sendmmsg(ufd, m + r, (unsigned)(GSO_SEGMENTS - r), MSG_DONTWAIT);
                if (k <= 0)
                    break;
                r += k;
            }
        }
        if (r > 0) /* relaxed: a progress counter read from another process, orders nothing */
            atomic_fetch_add_explicit(&g_bulk->bytes, (uint64_t)r * GSO_SEGMENT, memory_order_relaxed);
        else
            iol_loop_run_once(loop, 0.001); /* the queue (or the socket) is full: let it drain */
        if (iol_udp_send_queue_size(u) > 0)
            iol_loop_run_once(loop, 0);
    }
}

static double run_bulk(bool gso, const udp_params *p)
{
    uint16_t port;
    int sink = bound_socket(&port, 8 << 20);
    if (sink < 0)
        return NAN;
    g_sink_port = port;
    g_bulk_gso = gso;
    atomic_store(&g_bulk->bytes, 0);
    pid_t pid = spawn(bulk_sender, -1, p);
    if (pid < 0) {
        close(sink);
        return NAN;
    }
    /* The receiver drains the sink so the run looks like a real transfer
     * (what it cannot keep up with, the kernel drops: not our cost). */
    enum { R = 64 };
    static char rbuf[R][2048];
    struct mmsghdr rm[R];
    struct iovec riov[R];
    for (int i = 0; i < R; i++) {
        riov[i] = (struct iovec){ rbuf[i], sizeof rbuf[i] };
        rm[i].msg_hdr = (struct msghdr){ .msg_iov = &riov[i], .msg_iovlen = 1 };
    }
    uint64_t warm = bench_now_ns() + 200000000ull;
    while (bench_now_ns() < warm)
        recvmmsg(sink, rm, R, MSG_DONTWAIT, NULL) > 0 ? 0 : usleep(100);
    proctree_usage before, after;
    if (proctree_read(pid, &before) < 0) {
        kill_child();
        close(sink);
        return NAN;
    }
    uint64_t b0 = atomic_load(&g_bulk->bytes);
    uint64_t end = bench_now_ns() + (uint64_t)(p->duration * 1e9);
    while (bench_now_ns() < end) {
        struct pollfd pfd = { .fd = sink, .events = POLLIN };
        if (poll(&pfd, 1, 20) > 0)
            while (recvmmsg(sink, rm, R, MSG_DONTWAIT, NULL) == R)
                ;
    }
    uint64_t b1 = atomic_load(&g_bulk->bytes);
    int ok = proctree_read(pid, &after);
    kill_child();
    close(sink);
    double cpu = after.cpu_ms - before.cpu_ms;
    return ok == 0 && cpu > 0 ? (double)(b1 - b0) / cpu : NAN;
}

/* ------------------------------------------------------------ the bench */

static const bench_fig_spec echo_figs[] = {
    { "datagrams_per_cpu_ms", "datagrams/CPU-ms", true, false },
    { "datagrams_per_sec", "datagrams/s", false, false },
    { "floor_ratio", "vs floor/CPU", false, false },
};
static const bench_fig_spec bulk_figs[] = { { "bytes_per_cpu_ms", "bytes/CPU-ms", true, false } };

static void usage(FILE *f)
{
    fprintf(f, "usage: iol-bench udp [--size B] [--batch N] [--gso] [--duration S] [--repeat R] [--impl A,B] [--json]\n"
               "  echo of B-byte datagrams (default 64) from a C client keeping 2 x N in flight\n"
               "  (default N 32, also the servers' receive batch): ioloop, libuv's uv_udp with\n"
               "  UV_UDP_RECVMMSG, and the floor (epoll + recvmmsg/sendmmsg); datagrams per\n"
               "  server CPU-ms. --gso adds bulk send of 64 KiB in %d-byte datagrams: UDP_SEGMENT\n"
               "  (iol_udp_send_gso) against a plain sendmmsg of separate datagrams, bytes per\n"
               "  sender CPU-ms.\n",
            GSO_SEGMENT);
    bench_usage_common(f);
}

int bench_udp(int argc, char **argv, const bench_opts *o)
{
    udp_params p = { .size = 64, .batch = 32, .duration = o->duration > 0 ? o->duration : 3 };
    bool gso = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--gso") == 0) {
            gso = true;
        } else if ((strcmp(argv[i], "--size") == 0 || strcmp(argv[i], "--batch") == 0) && i + 1 < argc) {
            char *e;
            long v = strtol(argv[i + 1], &e, 10);
            bool size = argv[i][2] == 's';
            if (*e || v < (size ? 0 : 1) || v > (size ? 65507 : MAX_BATCH)) {
                fprintf(stderr, "iol-bench udp: bad %s %s\n", argv[i], argv[i + 1]);
                return 2;
            }
            if (size)
                p.size = (size_t)v;
            else
                p.batch = (unsigned)v;
            i++;
        } else {
            fprintf(stderr, "iol-bench udp: unknown flag %s\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    g_bulk = mmap(NULL, sizeof *g_bulk, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (g_bulk == MAP_FAILED)
        return 1;
    atexit(kill_child);
    bench_report echo, bulk;
    bench_report_init(&echo, "udp", echo_figs, 3);
    snprintf(echo.title, sizeof echo.title, "udp echo %zuB", p.size);
    snprintf(echo.params_json, sizeof echo.params_json,
             "{\"mode\":\"echo\",\"size\":%zu,\"batch\":%u,\"duration\":%g,\"offload\":%u}", p.size, p.batch,
             p.duration, iol_udp_offload());
    bench_report_init(&bulk, "udp", bulk_figs, 1);
    snprintf(bulk.title, sizeof bulk.title, "udp bulk 64KiB");
    snprintf(bulk.params_json, sizeof bulk.params_json,
             "{\"mode\":\"bulk-send\",\"segment\":%d,\"segments\":%d,\"duration\":%g,\"offload\":%u}", GSO_SEGMENT,
             GSO_SEGMENTS, p.duration, iol_udp_offload());
    for (int rep = 0; rep < o->repeat; rep++) {
        double per_cpu[NIMPLS];
        for (int impl = 0; impl < NIMPLS; impl++) {
            per_cpu[impl] = NAN;
            if (!bench_selected(o, impl_json[impl], impl_label[impl]))
                continue;
            echo_result r = run_echo(impl, &p);
            int row = bench_report_impl(&echo, impl_json[impl], impl_label[impl]);
            bench_report_add(&echo, row, 0, r.per_cpu_ms);
            bench_report_add(&echo, row, 1, r.per_sec);
            per_cpu[impl] = r.per_cpu_ms;
            bench_progress(impl_label[impl], (double)rep, r.per_sec, "dgram/s");
        }
        if (!isnan(per_cpu[IMPL_IOLOOP]) && !isnan(per_cpu[IMPL_FLOOR]))
            bench_report_add(&echo, bench_report_impl(&echo, "ioloop", "ioloop"), 2,
                             per_cpu[IMPL_IOLOOP] / per_cpu[IMPL_FLOOR]);
        if (gso) {
            bench_report_add(&bulk, bench_report_impl(&bulk, "ioloop", "ioloop-gso"), 0, run_bulk(true, &p));
            bench_report_add(&bulk, bench_report_impl(&bulk, "sendmmsg", "sendmmsg"), 0, run_bulk(false, &p));
        }
    }
    bench_progress_done();
    bench_report_print(&echo, o);
    bench_report_target(&echo, o, 0, "libuv-uv_udp", 1.5);
    bench_report_target(&echo, o, 0, "floor", 0.9);
    if (gso) {
        bench_report_print(&bulk, o);
        bench_report_target(&bulk, o, 0, "sendmmsg", 3.0);
    }
    bench_report *all[] = { &echo, &bulk };
    return bench_plot(o, all, gso ? 2 : 1) < 0 ? 1 : 0;
}
