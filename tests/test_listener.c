/* Listeners: REUSEPORT and HANDOFF sharding, addresses, counts, balance,
 * graceful stop. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ioloop.h"
#include "testutil.h"

#define MAX_WORKERS 4

/* ---------------------------------------------------------- client side */

static int connect_to(int family, uint16_t port)
{
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int r;
    if (family == AF_INET6) {
        struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons(port), .sin6_addr = in6addr_loopback};
        r = connect(fd, (struct sockaddr *)&a, sizeof(a));
    } else {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        r = connect(fd, (struct sockaddr *)&a, sizeof(a));
    }
    if (r < 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    return fd;
}

static bool have_ipv6(void)
{
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    if (fd < 0)
        return false;
    struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_addr = in6addr_loopback};
    bool ok = bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(fd);
    return ok;
}

/* Reads until EOF (or 5 s). Returns bytes read, or -errno (-ECONNRESET). */
static ssize_t read_to_eof(int fd, char *buf, size_t cap)
{
    size_t got = 0;
    double deadline = iol_test_now() + 5;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int left = (int)((deadline - iol_test_now()) * 1000);
        if (left <= 0 || poll(&p, 1, left) <= 0)
            return -ETIMEDOUT;
        ssize_t n = recv(fd, buf + got, cap - got, 0);
        if (n < 0)
            return -errno;
        if (n == 0)
            return (ssize_t)got;
        got += (size_t)n;
        if (got == cap)
            return (ssize_t)got;
    }
}

static uint64_t sum_counts(iol_runtime *rt, int id, uint64_t *counts)
{
    int n = iol_runtime_listener_counts(rt, id, counts, MAX_WORKERS);
    ck_assert_int_gt(n, 0);
    uint64_t sum = 0;
    for (int i = 0; i < n && i < MAX_WORKERS; i++)
        sum += counts[i];
    return sum;
}

static void wait_accepted(iol_runtime *rt, int id, uint64_t want)
{
    uint64_t counts[MAX_WORKERS];
    double deadline = iol_test_now() + 20;
    while (sum_counts(rt, id, counts) < want && iol_test_now() < deadline)
        usleep(2000);
    ck_assert_uint_eq(sum_counts(rt, id, counts), want);
}

/* ---------------------------------------------------------- server side */

typedef struct server {
    iol_runtime *rt;
    _Atomic int wrong_thread;  /* on_accept not on the owning worker */
    _Atomic int bad_flags;     /* accepted fd blocking or not cloexec */
    _Atomic int accepted;
    _Atomic int peer_family[2]; /* [0] AF_INET, [1] AF_INET6 */
    _Atomic int bad_peer;      /* peer is not what getpeername says */
} server;

static void check_accept(server *sv, iol_loop *loop, int fd, const struct sockaddr *peer, socklen_t peerlen)
{
    int w = iol_runtime_worker_index();
    if (w < 0 || iol_loop_current() != loop || iol_runtime_loop(sv->rt, (unsigned)w) != loop)
        atomic_fetch_add(&sv->wrong_thread, 1);
    int fl = fcntl(fd, F_GETFL), fdfl = fcntl(fd, F_GETFD);
    if (!(fl & O_NONBLOCK) || !(fdfl & FD_CLOEXEC))
        atomic_fetch_add(&sv->bad_flags, 1);
    if (peer && peerlen >= sizeof(sa_family_t))
        atomic_fetch_add(&sv->peer_family[peer->sa_family == AF_INET6], 1);
    /* The address on_accept gets is the connection's own (a ring accept
     * writes it into a buffer of its slot). */
    struct sockaddr_storage real;
    socklen_t reallen = sizeof(real);
    if (!peer || getpeername(fd, (struct sockaddr *)&real, &reallen) < 0 || reallen != peerlen ||
        memcmp(&real, peer, reallen) != 0)
        atomic_fetch_add(&sv->bad_peer, 1);
    atomic_fetch_add(&sv->accepted, 1);
}

/* Says "ok" and closes. */
static void accept_greet(iol_loop *loop, int fd, const struct sockaddr *peer, socklen_t peerlen, void *arg)
{
    check_accept(arg, loop, fd, peer, peerlen);
    ck_assert_int_eq(write(fd, "ok", 2), 2);
    close(fd);
}

static void hold_readable(int fd, unsigned events, void *arg)
{
    (void)events;
    (void)arg;
    char buf[256];
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n == 0 || (n < 0 && errno != EAGAIN)) {
        iol_loop_remove_handler(iol_loop_current(), fd);
        close(fd);
    }
}

/* Keeps the connection: a registered handler, closed by the peer or by
 * the loop's close. */
static void accept_hold(iol_loop *loop, int fd, const struct sockaddr *peer, socklen_t peerlen, void *arg)
{
    check_accept(arg, loop, fd, peer, peerlen);
    ck_assert_int_eq(iol_loop_add_handler(loop, fd, IOL_READ, hold_readable, NULL), 0);
}

/* Says "hi" and keeps the connection until the loop closes. */
static void accept_greet_hold(iol_loop *loop, int fd, const struct sockaddr *peer, socklen_t peerlen, void *arg)
{
    check_accept(arg, loop, fd, peer, peerlen);
    ck_assert_int_eq(write(fd, "hi", 2), 2);
    ck_assert_int_eq(iol_loop_add_handler(loop, fd, IOL_READ, hold_readable, NULL), 0);
}

static void assert_clean(server *sv)
{
    ck_assert_int_eq(atomic_load(&sv->wrong_thread), 0);
    ck_assert_int_eq(atomic_load(&sv->bad_flags), 0);
    ck_assert_int_eq(atomic_load(&sv->bad_peer), 0);
}

/* Connects n clients (family), expects "ok" then EOF from each. */
static void greet_clients(int family, uint16_t port, int n)
{
    for (int i = 0; i < n; i++) {
        int fd = connect_to(family, port);
        ck_assert_int_ge(fd, 0);
        char buf[8];
        ck_assert_int_eq(read_to_eof(fd, buf, sizeof(buf)), 2);
        ck_assert(memcmp(buf, "ok", 2) == 0);
        close(fd);
    }
}

/* Connects n clients to 127.0.0.1:port, each expects one byte. */
static void greet_clients_any(uint16_t port, int n)
{
    for (int i = 0; i < n; i++) {
        int fd = connect_to(AF_INET, port);
        ck_assert_int_ge(fd, 0);
        char c;
        ck_assert_int_eq(read_to_eof(fd, &c, 1), 1);
        close(fd);
    }
}

/* Connections listener id took through ring accepts (runtime/listener.c). */
long long iol__listener_ring_accepts(iol_runtime *rt, int id);

typedef struct greet_opts {
    const char *poller;        /* NULL: the default */
    unsigned max_connections;  /* 0: none */
    long long ring_accepts;    /* expected, -1: not checked */
} greet_opts;

static void run_greet_with(int shard, const char *host, int family, bool listen_before_start, greet_opts o)
{
    server sv = {0};
    ck_assert_int_eq(iol_runtime_new(&sv.rt, &(iol_runtime_config){.workers = 2, .poller = o.poller}), 0);
    iol_listen_config lc = {.host = host, .shard = shard, .on_accept = accept_greet, .arg = &sv,
                            .max_connections = o.max_connections};
    int id = -1;
    if (listen_before_start)
        ck_assert_int_ge(id = iol_runtime_listen(sv.rt, &lc), 0);
    ck_assert_int_eq(iol_runtime_start(sv.rt), 0);
    if (!listen_before_start)
        ck_assert_int_ge(id = iol_runtime_listen(sv.rt, &lc), 0);
    int port = iol_runtime_listener_port(sv.rt, id);
    ck_assert_int_gt(port, 0);
    greet_clients(family, (uint16_t)port, 20);
    wait_accepted(sv.rt, id, 20);
    uint64_t counts[MAX_WORKERS] = {0};
    ck_assert_int_eq(iol_runtime_listener_counts(sv.rt, id, counts, MAX_WORKERS), 2);
    ck_assert_int_eq(iol_runtime_listener_counts(sv.rt, id, NULL, 0), 2);
    ck_assert_int_eq(iol_runtime_stop(sv.rt), 0);
    ck_assert_int_eq(iol_runtime_join(sv.rt), 0);
    assert_clean(&sv);
    ck_assert_int_eq(atomic_load(&sv.peer_family[family == AF_INET6]), 20);
    if (o.ring_accepts >= 0)
        ck_assert_int_eq(iol__listener_ring_accepts(sv.rt, id), o.ring_accepts);
    iol_runtime_free(sv.rt);
}

static void run_greet(int shard, const char *host, int family, bool listen_before_start)
{
    run_greet_with(shard, host, family, listen_before_start, (greet_opts){.ring_accepts = -1});
}

START_TEST(test_reuseport_ipv4)
{
    run_greet(IOL_SHARD_REUSEPORT, "127.0.0.1", AF_INET, false);
    run_greet(IOL_SHARD_REUSEPORT, "127.0.0.1", AF_INET, true);
}
END_TEST

START_TEST(test_handoff_ipv4)
{
    run_greet(IOL_SHARD_HANDOFF, "127.0.0.1", AF_INET, false);
    run_greet(IOL_SHARD_HANDOFF, "127.0.0.1", AF_INET, true);
}
END_TEST

START_TEST(test_ipv6)
{
    if (!have_ipv6())
        return;
    run_greet(IOL_SHARD_REUSEPORT, "::1", AF_INET6, false);
    run_greet(IOL_SHARD_HANDOFF, "::1", AF_INET6, true);
}
END_TEST

START_TEST(test_host_null_all_addresses)
{
    server sv = {0};
    ck_assert_int_eq(iol_runtime_new(&sv.rt, &(iol_runtime_config){.workers = 2}), 0);
    ck_assert_int_eq(iol_runtime_start(sv.rt), 0);
    for (int shard = 0; shard < 2; shard++) {
        iol_listen_config lc = {.host = NULL, .shard = shard, .on_accept = accept_greet, .arg = &sv};
        int id = iol_runtime_listen(sv.rt, &lc);
        ck_assert_int_ge(id, 0);
        int port = iol_runtime_listener_port(sv.rt, id);
        ck_assert_int_gt(port, 0);
        greet_clients(AF_INET, (uint16_t)port, 5);
        int expect = 5;
        if (have_ipv6()) {
            greet_clients(AF_INET6, (uint16_t)port, 5);
            expect += 5;
        }
        wait_accepted(sv.rt, id, (uint64_t)expect);
    }
    iol_runtime_free(sv.rt);
    assert_clean(&sv);
}
END_TEST

START_TEST(test_port0_shared_and_spread)
{
    /* REUSEPORT with port 0: one ephemeral port for every worker's socket;
     * the kernel spreads connections over them (200 connections all on
     * one of two sockets has probability 2^-199). */
    server sv = {0};
    ck_assert_int_eq(iol_runtime_new(&sv.rt, &(iol_runtime_config){.workers = 2}), 0);
    ck_assert_int_eq(iol_runtime_start(sv.rt), 0);
    iol_listen_config lc = {.host = "127.0.0.1", .on_accept = accept_greet, .arg = &sv};
    int id = iol_runtime_listen(sv.rt, &lc);
    ck_assert_int_ge(id, 0);
    int port = iol_runtime_listener_port(sv.rt, id);
    int n = (int)iol_test_scaled(200, 40);
    greet_clients(AF_INET, (uint16_t)port, n);
    wait_accepted(sv.rt, id, (uint64_t)n);
    uint64_t counts[MAX_WORKERS] = {0};
    sum_counts(sv.rt, id, counts);
    ck_assert_uint_gt(counts[0], 0);
    ck_assert_uint_gt(counts[1], 0);
    iol_runtime_free(sv.rt);
    assert_clean(&sv);
}
END_TEST

START_TEST(test_addrinuse)
{
    /* A plain listener holds a port. */
    int busy = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(busy, (struct sockaddr *)&a, sizeof(a)), 0);
    ck_assert_int_eq(listen(busy, 4), 0);
    socklen_t len = sizeof(a);
    getsockname(busy, (struct sockaddr *)&a, &len);
    uint16_t port = ntohs(a.sin_port);

    server sv = {0};
    ck_assert_int_eq(iol_runtime_new(&sv.rt, &(iol_runtime_config){.workers = 2}), 0);
    for (int shard = 0; shard < 2; shard++) {
        iol_listen_config lc = {.host = "127.0.0.1", .port = port, .shard = shard, .on_accept = accept_greet};
        ck_assert_int_eq(iol_runtime_listen(sv.rt, &lc), -EADDRINUSE);
    }
    close(busy);

    /* Another runtime's REUSEPORT group holds a port: still taken. */
    iol_listen_config lc = {.host = "127.0.0.1", .on_accept = accept_greet, .arg = &sv};
    int id = iol_runtime_listen(sv.rt, &lc);
    ck_assert_int_eq(id, 0); /* failed listens take no id */
    iol_runtime *other = NULL;
    ck_assert_int_eq(iol_runtime_new(&other, &(iol_runtime_config){.workers = 2}), 0);
    lc.port = (uint16_t)iol_runtime_listener_port(sv.rt, id);
    ck_assert_int_eq(iol_runtime_listen(other, &lc), -EADDRINUSE);
    lc.shard = IOL_SHARD_HANDOFF;
    ck_assert_int_eq(iol_runtime_listen(other, &lc), -EADDRINUSE);
    iol_runtime_free(other);
    iol_runtime_free(sv.rt);
}
END_TEST

/* nodelay: accepted sockets inherit TCP_NODELAY from the listener.
 * defer_accept: a connection that sent nothing does not reach on_accept;
 * once its first bytes arrive it does, and they are readable at once. */
typedef struct accept_opts {
    _Atomic int accepted, nodelay, readable;
} accept_opts;

static accept_opts the_opts;

static void accept_check_opts(iol_loop *loop, int fd, const struct sockaddr *peer, socklen_t peerlen, void *arg)
{
    (void)loop, (void)peer, (void)peerlen, (void)arg;
    int v = 0;
    socklen_t len = sizeof v;
    if (getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, &len) == 0 && v)
        atomic_fetch_add(&the_opts.nodelay, 1);
    char c;
    if (recv(fd, &c, 1, MSG_DONTWAIT | MSG_PEEK) == 1)
        atomic_fetch_add(&the_opts.readable, 1);
    close(fd);
    atomic_fetch_add(&the_opts.accepted, 1);
}

static void run_accept_opts(bool nodelay, int defer, int shard)
{
    the_opts = (accept_opts){0};
    iol_runtime *rt = NULL;
    ck_assert_int_eq(iol_runtime_new(&rt, &(iol_runtime_config){.workers = 2, .drain_timeout = -1}), 0);
    ck_assert_int_eq(iol_runtime_start(rt), 0);
    iol_listen_config lc = {.host = "127.0.0.1", .shard = shard, .on_accept = accept_check_opts,
                            .nodelay = nodelay, .defer_accept = defer};
    int id = iol_runtime_listen(rt, &lc);
    ck_assert_int_ge(id, 0);
    int port = iol_runtime_listener_port(rt, id);
    int fd = connect_to(AF_INET, (uint16_t)port);
    ck_assert_int_ge(fd, 0);
    if (defer) {
        usleep(200000);
        ck_assert_int_eq(atomic_load(&the_opts.accepted), 0); /* nothing sent yet */
        ck_assert_int_eq(send(fd, "x", 1, 0), 1);
    }
    double deadline = iol_test_now() + 20;
    while (atomic_load(&the_opts.accepted) < 1 && iol_test_now() < deadline)
        usleep(2000);
    ck_assert_int_eq(atomic_load(&the_opts.accepted), 1);
    ck_assert_int_eq(atomic_load(&the_opts.nodelay), nodelay ? 1 : 0);
    if (defer)
        ck_assert_int_eq(atomic_load(&the_opts.readable), 1);
    close(fd);
    iol_runtime_free(rt);
}

START_TEST(test_listen_nodelay_and_defer_accept)
{
    for (int shard = IOL_SHARD_REUSEPORT; shard <= IOL_SHARD_HANDOFF; shard++) {
        run_accept_opts(false, 0, shard);
        run_accept_opts(true, 0, shard);
        run_accept_opts(true, 5, shard);
    }
}
END_TEST

START_TEST(test_listen_bad_args)
{
    iol_runtime *rt = NULL;
    ck_assert_int_eq(iol_runtime_new(&rt, &(iol_runtime_config){.workers = 2}), 0);
    iol_listen_config lc = {.host = "127.0.0.1", .on_accept = accept_greet};
    ck_assert_int_eq(iol_runtime_listen(NULL, &lc), -EINVAL);
    ck_assert_int_eq(iol_runtime_listen(rt, NULL), -EINVAL);
    lc.on_accept = NULL;
    ck_assert_int_eq(iol_runtime_listen(rt, &lc), -EINVAL);
    lc.on_accept = accept_greet;
    lc.shard = 7;
    ck_assert_int_eq(iol_runtime_listen(rt, &lc), -EINVAL);
    lc.shard = -1;
    ck_assert_int_eq(iol_runtime_listen(rt, &lc), -EINVAL);
    lc.shard = IOL_SHARD_REUSEPORT;
    lc.host = "not a host name!";
    ck_assert_int_eq(iol_runtime_listen(rt, &lc), -EINVAL);
    lc.host = "127.0.0.1";
    lc.backlog = -3;
    ck_assert_int_eq(iol_runtime_listen(rt, &lc), -EINVAL);
    lc.backlog = 0;
    lc.defer_accept = -1;
    ck_assert_int_eq(iol_runtime_listen(rt, &lc), -EINVAL);
    lc.defer_accept = 0;
    ck_assert_int_eq(iol_runtime_listener_port(rt, 0), -ENOENT);
    ck_assert_int_eq(iol_runtime_listener_port(rt, -1), -ENOENT);
    uint64_t counts[2];
    ck_assert_int_eq(iol_runtime_listener_counts(rt, 3, counts, 2), -ENOENT);
    int id = iol_runtime_listen(rt, &lc);
    ck_assert_int_eq(id, 0);
    ck_assert_int_eq(iol_runtime_listener_counts(rt, id, NULL, 1), -EINVAL);
    ck_assert_int_eq(iol_runtime_listener_counts(rt, id, counts, 2), 2);
    ck_assert_uint_eq(counts[0] + counts[1], 0);
    ck_assert_int_eq(iol_runtime_stop(rt), 0);
    ck_assert_int_eq(iol_runtime_listen(rt, &lc), -ESHUTDOWN);
    iol_runtime_free(rt);
}
END_TEST

/* Two processes, one REUSEPORT group. */

/* Says "A" or "B" (arg) and closes. */
static void accept_tag(iol_loop *loop, int fd, const struct sockaddr *peer, socklen_t peerlen, void *arg)
{
    (void)loop;
    (void)peer;
    (void)peerlen;
    if (write(fd, arg, 1) != 1)
        abort();
    close(fd);
}

/* The second process: reads the port from cmd, checks that a plain
 * listen is refused, joins with reuseport_join, reports 'r' (or an error
 * letter) on ready, serves until cmd closes. Exit 0 when all went well. */
static int joiner_main(int cmd, int ready)
{
    uint16_t port;
    if (read(cmd, &port, sizeof(port)) != sizeof(port))
        return 1;
    iol_runtime *rt = NULL;
    if (iol_runtime_new(&rt, &(iol_runtime_config){.workers = 2}) < 0)
        return 2;
    iol_listen_config lc = {.host = "127.0.0.1", .port = port, .on_accept = accept_tag, .arg = "B"};
    char status = 'r';
    if (iol_runtime_listen(rt, &lc) != -EADDRINUSE)
        status = 'u'; /* the port must look taken without the flag */
    lc.reuseport_join = true;
    if (status == 'r' && (iol_runtime_listen(rt, &lc) < 0 || iol_runtime_start(rt) < 0))
        status = 'j';
    if (write(ready, &status, 1) != 1)
        return 3;
    char c;
    while (read(cmd, &c, 1) > 0)
        ;
    iol_runtime_free(rt);
    return status == 'r' ? 0 : 4;
}

START_TEST(test_reuseport_join_two_processes)
{
    int cmd[2], ready[2];
    ck_assert_int_eq(pipe(cmd), 0);
    ck_assert_int_eq(pipe(ready), 0);
    /* Fork before any thread exists in this process. */
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(cmd[1]);
        close(ready[0]);
        _exit(joiner_main(cmd[0], ready[1]));
    }
    close(cmd[0]);
    close(ready[1]);

    iol_runtime *rt = NULL;
    ck_assert_int_eq(iol_runtime_new(&rt, &(iol_runtime_config){.workers = 2}), 0);
    iol_listen_config lc = {.host = "127.0.0.1", .on_accept = accept_tag, .arg = "A"};
    int id = iol_runtime_listen(rt, &lc);
    ck_assert_int_ge(id, 0);
    ck_assert_int_eq(iol_runtime_start(rt), 0);
    uint16_t port = (uint16_t)iol_runtime_listener_port(rt, id);
    ck_assert_int_eq(write(cmd[1], &port, sizeof(port)), sizeof(port));
    char status = 0;
    ck_assert_int_eq(read(ready[0], &status, 1), 1);
    ck_assert_msg(status == 'r', "second process: %c", status);

    /* The kernel hashes each connection to one socket of the four. */
    int seen[2] = {0, 0};
    for (int i = 0; i < 400 && !(seen[0] > 4 && seen[1] > 4); i++) {
        int fd = connect_to(AF_INET, port);
        ck_assert_int_ge(fd, 0);
        char tag = 0;
        ck_assert_int_eq(read_to_eof(fd, &tag, 1), 1);
        ck_assert(tag == 'A' || tag == 'B');
        seen[tag == 'B']++;
        close(fd);
    }
    ck_assert_msg(seen[0] > 0 && seen[1] > 0, "A accepted %d, B accepted %d", seen[0], seen[1]);
    close(cmd[1]);
    int wstatus = 0;
    ck_assert_int_eq(waitpid(pid, &wstatus, 0), pid);
    ck_assert(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0);
    close(ready[0]);
    iol_runtime_free(rt);

    /* Bad uses of the flag. */
    ck_assert_int_eq(iol_runtime_new(&rt, &(iol_runtime_config){.workers = 1}), 0);
    iol_listen_config bad = {.host = "127.0.0.1", .port = 0, .on_accept = accept_tag, .reuseport_join = true};
    ck_assert_int_eq(iol_runtime_listen(rt, &bad), -EINVAL);
    bad.port = port;
    bad.shard = IOL_SHARD_HANDOFF;
    ck_assert_int_eq(iol_runtime_listen(rt, &bad), -EINVAL);
    iol_runtime_free(rt);
}
END_TEST

/* --------------------------------------------------------- handoff balance */

START_TEST(test_handoff_balance)
{
    server sv = {0};
    /* No drain: the clients close only after join. */
    ck_assert_int_eq(iol_runtime_new(&sv.rt, &(iol_runtime_config){.workers = 2, .drain_timeout = -1}), 0);
    ck_assert_int_eq(iol_runtime_start(sv.rt), 0);
    iol_listen_config lc = {.host = "127.0.0.1", .shard = IOL_SHARD_HANDOFF, .on_accept = accept_hold, .arg = &sv};
    int id = iol_runtime_listen(sv.rt, &lc);
    ck_assert_int_ge(id, 0);
    uint16_t port = (uint16_t)iol_runtime_listener_port(sv.rt, id);
    /* Clients arrive in pairs, back to back, each pair after the one
     * before was accepted: the second of a pair lands while the first is
     * on its way to its worker (counted as pending, or not yet taken),
     * and must go to the other worker. One burst of all n is not
     * deterministic: a worker that does not come to its queue for 10 ms
     * (valgrind runs one thread at a time; a loaded machine) rightly gets
     * none of the rest of the burst by the stall rule (valgrind with a
     * CPU hog: 5 of 20 runs, 1 vs 39 to 19 vs 21). Within a pair it cannot
     * matter: a pair starts with both backlogs empty (all accepted), so
     * the first goes by load, and the second to the other worker, stalled
     * or not the first. */
    int n = (int)iol_test_scaled(1000, 40) & ~1;
    int *clients = calloc((size_t)n, sizeof(int));
    for (int i = 0; i < n; i += 2) {
        ck_assert_int_ge(clients[i] = connect_to(AF_INET, port), 0);
        ck_assert_int_ge(clients[i + 1] = connect_to(AF_INET, port), 0);
        wait_accepted(sv.rt, id, (uint64_t)i + 2);
        uint64_t counts[MAX_WORKERS] = {0};
        sum_counts(sv.rt, id, counts);
        ck_assert_msg(counts[0] == counts[1], "after %d clients: %llu vs %llu", i + 2, (unsigned long long)counts[0],
                      (unsigned long long)counts[1]);
    }

    ck_assert_int_eq(iol_runtime_stop(sv.rt), 0);
    ck_assert_int_eq(iol_runtime_join(sv.rt), 0);
    for (int i = 0; i < n; i++)
        close(clients[i]);
    free(clients);
    assert_clean(&sv);
    iol_runtime_free(sv.rt);
}
END_TEST

START_TEST(test_handoff_follows_load)
{
    /* Handoffs alternate while loads are equal, and count only live
     * connections (registered handlers), not past ones. The clients
     * connect one at a time, each after the previous one was accepted:
     * a burst could leave a worker's first handoff untaken for 10 ms on a
     * loaded machine, and the stall rule would then rightly send the
     * next ones elsewhere (test_handoff_not_stalled_by_worker0). */
    server sv = {0};
    ck_assert_int_eq(iol_runtime_new(&sv.rt, &(iol_runtime_config){.workers = 2}), 0);
    ck_assert_int_eq(iol_runtime_start(sv.rt), 0);
    iol_listen_config lc = {.host = "127.0.0.1", .shard = IOL_SHARD_HANDOFF, .on_accept = accept_hold, .arg = &sv};
    int id = iol_runtime_listen(sv.rt, &lc);
    uint16_t port = (uint16_t)iol_runtime_listener_port(sv.rt, id);
    int c[30];
    for (int i = 0; i < 10; i++) {
        ck_assert_int_ge(c[i] = connect_to(AF_INET, port), 0);
        wait_accepted(sv.rt, id, (uint64_t)i + 1);
    }
    uint64_t counts[MAX_WORKERS];
    sum_counts(sv.rt, id, counts);
    ck_assert_uint_eq(counts[0], 5);
    ck_assert_uint_eq(counts[1], 5);
    /* Close all ten; once the workers saw EOF only the listening
     * socket's handler is left. */
    for (int i = 0; i < 10; i++)
        close(c[i]);
    double deadline = iol_test_now() + 10;
    while (iol_loop_handler_count(iol_runtime_loop(sv.rt, 0)) + iol_loop_handler_count(iol_runtime_loop(sv.rt, 1)) > 1 &&
           iol_test_now() < deadline)
        usleep(1000);
    for (int i = 10; i < 30; i++) {
        ck_assert_int_ge(c[i] = connect_to(AF_INET, port), 0);
        wait_accepted(sv.rt, id, (uint64_t)i + 1);
    }
    sum_counts(sv.rt, id, counts);
    ck_assert_uint_eq(counts[0], 15);
    ck_assert_uint_eq(counts[1], 15);
    for (int i = 10; i < 30; i++)
        close(c[i]);
    iol_runtime_free(sv.rt);
    assert_clean(&sv);
}
END_TEST

/* Says which worker it runs on (one byte) and closes. */
static void accept_tell_worker(iol_loop *loop, int fd, const struct sockaddr *peer, socklen_t peerlen, void *arg)
{
    check_accept(arg, loop, fd, peer, peerlen);
    char w = (char)iol_runtime_worker_index();
    ck_assert_int_eq(write(fd, &w, 1), 1);
    close(fd);
}

/* Says which worker it runs on and keeps the connection (load). */
static void accept_tell_hold(iol_loop *loop, int fd, const struct sockaddr *peer, socklen_t peerlen, void *arg)
{
    check_accept(arg, loop, fd, peer, peerlen);
    char w = (char)iol_runtime_worker_index();
    ck_assert_int_eq(write(fd, &w, 1), 1);
    ck_assert_int_eq(iol_loop_add_handler(loop, fd, IOL_READ, hold_readable, NULL), 0);
}

typedef struct stall {
    _Atomic int blocked, release, done;
} stall;

/* Blocks its worker until the test releases it (60 s at most: a failed
 * test's child exits and never releases). */
static void stall_until_released(void *arg)
{
    stall *st = arg;
    atomic_store(&st->blocked, 1);
    double deadline = iol_test_now() + 60;
    while (!atomic_load(&st->release) && iol_test_now() < deadline)
        usleep(1000);
    atomic_store(&st->done, 1);
}

/* Worker 0 runs a long callback, until all the clients below are done: a
 * fixed 500 ms was not enough under valgrind, where worker 0 then came back
 * mid-run and rightly took its share of the rest (5 and 7 of 20 "not
 * handed to worker 1"). Connections keep being accepted and
 * handed to worker 1 meanwhile. A few may go to worker 0 before it looks
 * stalled and wait. hold: worker 1's connections stay open, so by load
 * alone worker 0 (idle but blocked) would win again and again. */
static void run_not_stalled(bool hold)
{
    server sv = {0};
    stall st = {0};
    ck_assert_int_eq(iol_runtime_new(&sv.rt, &(iol_runtime_config){.workers = 2, .drain_timeout = -1}), 0);
    iol_listen_config lc = {.host = "127.0.0.1", .shard = IOL_SHARD_HANDOFF,
                            .on_accept = hold ? accept_tell_hold : accept_tell_worker, .arg = &sv};
    int id = iol_runtime_listen(sv.rt, &lc);
    ck_assert_int_ge(id, 0);
    ck_assert_int_eq(iol_runtime_start(sv.rt), 0);
    uint16_t port = (uint16_t)iol_runtime_listener_port(sv.rt, id);
    greet_clients_any(port, 4); /* warm up */

    ck_assert_int_eq(iol_runtime_post(sv.rt, 0, stall_until_released, &st), 0);
    while (!atomic_load(&st.blocked))
        usleep(100);
    enum { N = 20 };
    int waiting[N], nwaiting = 0, served = 0, held[N], nheld = 0;
    double lat[N], worst = 0;
    for (int i = 0; i < N; i++) {
        usleep(2000); /* clients arrive over ~50 ms, not in one burst */
        double t0 = iol_test_now();
        int fd = connect_to(AF_INET, port);
        ck_assert_int_ge(fd, 0);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        char w = -1;
        if (poll(&p, 1, 250) == 1 && recv(fd, &w, 1, 0) == 1 && w == 1) {
            lat[served++] = iol_test_now() - t0;
            worst = lat[served - 1] > worst ? lat[served - 1] : worst;
            if (hold)
                held[nheld++] = fd;
            else
                close(fd);
        } else {
            waiting[nwaiting++] = fd;
        }
    }
    bool still_blocked = !atomic_load(&st.done);
    atomic_store(&st.release, 1);
    for (int i = 0; i < nwaiting; i++)
        close(waiting[i]);
    for (int i = 0; i < nheld; i++)
        close(held[i]);
    /* Sort for the median. */
    for (int i = 1; i < served; i++)
        for (int j = i; j > 0 && lat[j] < lat[j - 1]; j--) {
            double t = lat[j];
            lat[j] = lat[j - 1];
            lat[j - 1] = t;
        }
    ck_assert_msg(nwaiting <= 3, "%d of %d connections not handed to worker 1 within 250 ms", nwaiting, N);
    ck_assert(still_blocked);
    /* A sanity bound, not a speed figure (that is iol-bench's): worker 0
     * stays blocked for the whole run, so a handoff that waited for it
     * would not come back within the poll's 250 ms at all. */
    ck_assert_msg(lat[served / 2] < 0.100, "median handoff latency %.1f ms", lat[served / 2] * 1e3);
    fprintf(stderr, "handoff while worker 0 is blocked%s: %d of %d to worker 1, median %.2f ms, worst %.2f ms\n",
            hold ? " (held)" : "", served, N, lat[served / 2] * 1e3, worst * 1e3);
    iol_runtime_free(sv.rt);
    assert_clean(&sv);
}

START_TEST(test_handoff_not_stalled_by_worker0)
{
    run_not_stalled(false);
}
END_TEST

START_TEST(test_handoff_not_stalled_by_worker0_held)
{
    run_not_stalled(true);
}
END_TEST

/* ---------------------------------------------------------- graceful stop */

typedef struct gate {
    _Atomic int open;
    _Atomic int blocked;
} gate;

static void block_until_open(void *arg)
{
    gate *g = arg;
    atomic_fetch_add(&g->blocked, 1);
    while (!atomic_load(&g->open))
        usleep(1000);
}

static void run_graceful_stop_on(int shard, const char *poller)
{
    server sv = {0};
    gate g = {0};
    /* The app holds its connections: the drain ends at the deadline and
     * the runtime closes them. */
    ck_assert_int_eq(
        iol_runtime_new(&sv.rt, &(iol_runtime_config){.workers = 2, .drain_timeout = 0.2, .poller = poller}), 0);
    ck_assert_int_eq(iol_runtime_start(sv.rt), 0);
    iol_listen_config lc = {.host = "127.0.0.1", .shard = shard, .on_accept = accept_greet_hold, .arg = &sv};
    int id = iol_runtime_listen(sv.rt, &lc);
    ck_assert_int_ge(id, 0);
    uint16_t port = (uint16_t)iol_runtime_listener_port(sv.rt, id);
    /* Let the listen registrations run, then make both workers busy so
     * connections stay in the kernel's accept queues. */
    usleep(50 * 1000);
    ck_assert_int_eq(iol_runtime_broadcast(sv.rt, block_until_open, &g), 0);
    while (atomic_load(&g.blocked) < 2)
        usleep(1000);
    enum { N = 50 };
    int c[N];
    for (int i = 0; i < N; i++)
        ck_assert_int_ge(c[i] = connect_to(AF_INET, port), 0);
    ck_assert_int_eq(atomic_load(&sv.accepted), 0);
    ck_assert_int_eq(iol_runtime_stop(sv.rt), 0);
    atomic_store(&g.open, 1);
    ck_assert_int_eq(iol_runtime_join(sv.rt), 0);
    ck_assert_int_eq(atomic_load(&sv.accepted), N);
    uint64_t counts[MAX_WORKERS] = {0};
    ck_assert_uint_eq(sum_counts(sv.rt, id, counts), N);
    for (int i = 0; i < N; i++) {
        char buf[8];
        ssize_t r = read_to_eof(c[i], buf, sizeof(buf));
        ck_assert_msg(r == 2, "client %d: %zd (%s)", i, r, r < 0 ? strerror((int)-r) : "short");
        close(c[i]);
    }
    assert_clean(&sv);
    if (poller && strcmp(poller, "uring") == 0) {
        /* Accepts armed in the ring took connections while the workers
         * were blocked (their task work runs at any system call's
         * return); stopping handed those on too, none was reset. */
        ck_assert_int_ge(iol__listener_ring_accepts(sv.rt, id), 1);
    }
    iol_runtime_free(sv.rt);
}

static void run_graceful_stop(int shard)
{
    run_graceful_stop_on(shard, NULL);
}

START_TEST(test_graceful_stop_reuseport)
{
    run_graceful_stop(IOL_SHARD_REUSEPORT);
}
END_TEST

START_TEST(test_graceful_stop_handoff)
{
    run_graceful_stop(IOL_SHARD_HANDOFF);
}
END_TEST

/* ------------------------------------------------------------ ring accepts */

#ifdef IOL_HAVE_URING
/* Whether this kernel lets us have a uring loop (a sysctl or seccomp may
 * refuse io_uring: the skip says so). */
static bool uring_usable(void)
{
    if (iol_test_under_valgrind()) {
        /* Seen with valgrind 3.19: a thread asleep in io_uring_enter keeps
         * valgrind's big lock (its wrapper is not a blocking one), so the
         * runtime's other threads never run again. */
        printf("listener: valgrind holds its lock across io_uring_enter: ring accept tests skipped\n");
        return false;
    }
    iol_loop *loop = NULL;
    int r = iol_loop_new(&loop, &(iol_loop_config){.poller = "uring", .make_current = IOL_CURRENT_NEVER});
    if (r < 0) {
        printf("listener: uring loops refused here (%s), ring accept tests skipped\n", strerror(-r));
        return false;
    }
    iol_loop_close(loop, true);
    return true;
}

/* _i: bit 0 HANDOFF, bit 1 listen after start. Every connection comes
 * through a ring accept, with its peer's address. */
START_TEST(test_ring_accepts)
{
    if (!uring_usable())
        return;
    run_greet_with(_i & 1 ? IOL_SHARD_HANDOFF : IOL_SHARD_REUSEPORT, "127.0.0.1", AF_INET, !(_i & 2),
                   (greet_opts){.poller = "uring", .ring_accepts = 20});
}
END_TEST

/* With admission limits each accept is decided before it happens: the
 * handler path, no ring accept. */
START_TEST(test_ring_accepts_not_with_limits)
{
    if (!uring_usable())
        return;
    run_greet_with(IOL_SHARD_REUSEPORT, "127.0.0.1", AF_INET, true,
                   (greet_opts){.poller = "uring", .max_connections = 1000, .ring_accepts = 0});
}
END_TEST

START_TEST(test_ring_accepts_graceful_stop)
{
    if (!uring_usable())
        return;
    run_graceful_stop_on(_i ? IOL_SHARD_HANDOFF : IOL_SHARD_REUSEPORT, "uring");
}
END_TEST

/* A runtime freed without ever running, with ring accepts armed (in the
 * submission queue of loops that never ran) and a client connected: the
 * accepts end before their slots are freed (ASan/valgrind would see a
 * completion written into freed memory), and the client sees its
 * connection closed, as with the handler path. */
START_TEST(test_ring_accepts_freed_unstarted)
{
    if (!uring_usable())
        return;
    server sv = {0};
    ck_assert_int_eq(iol_runtime_new(&sv.rt, &(iol_runtime_config){.workers = 2, .poller = "uring"}), 0);
    iol_listen_config lc = {.host = "127.0.0.1", .on_accept = accept_greet, .arg = &sv};
    int id = iol_runtime_listen(sv.rt, &lc);
    ck_assert_int_ge(id, 0);
    int c = connect_to(AF_INET, (uint16_t)iol_runtime_listener_port(sv.rt, id));
    ck_assert_int_ge(c, 0);
    iol_runtime_free(sv.rt);
    char buf[8];
    ssize_t r = read_to_eof(c, buf, sizeof(buf));
    ck_assert_msg(r == 0 || r == -ECONNRESET, "client: %zd", r);
    ck_assert_int_eq(atomic_load(&sv.accepted), 0);
    close(c);
}
END_TEST
#endif

int main(void)
{
    Suite *s = suite_create("listener");
    TCase *tc = iol_test_tcase("addresses", 60);
    tcase_add_test(tc, test_reuseport_ipv4);
    tcase_add_test(tc, test_handoff_ipv4);
    tcase_add_test(tc, test_ipv6);
    tcase_add_test(tc, test_host_null_all_addresses);
    tcase_add_test(tc, test_port0_shared_and_spread);
    tcase_add_test(tc, test_addrinuse);
    tcase_add_test(tc, test_listen_bad_args);
    tcase_add_test(tc, test_listen_nodelay_and_defer_accept);
    tcase_add_test(tc, test_reuseport_join_two_processes);
    suite_add_tcase(s, tc);

    tc = iol_test_tcase("handoff", 120);
    tcase_add_test(tc, test_handoff_balance);
    tcase_add_test(tc, test_handoff_follows_load);
    tcase_add_test(tc, test_handoff_not_stalled_by_worker0);
    tcase_add_test(tc, test_handoff_not_stalled_by_worker0_held);
    suite_add_tcase(s, tc);

    tc = iol_test_tcase("graceful_stop", 60);
    tcase_add_test(tc, test_graceful_stop_reuseport);
    tcase_add_test(tc, test_graceful_stop_handoff);
    suite_add_tcase(s, tc);

#ifdef IOL_HAVE_URING
    tc = iol_test_tcase("ring_accepts", 60);
    tcase_add_loop_test(tc, test_ring_accepts, 0, 4);
    tcase_add_test(tc, test_ring_accepts_not_with_limits);
    tcase_add_loop_test(tc, test_ring_accepts_graceful_stop, 0, 2);
    tcase_add_test(tc, test_ring_accepts_freed_unstarted);
    suite_add_tcase(s, tc);
#endif
    return iol_test_run(s);
}
