/* Overload control of the runtime's listeners (iol_listen_config
 * .max_connections, .connections_low, .max_accept_rate): a connection
 * storm against a per-worker cap, on both shardings, and the accept-rate
 * bound. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ioloop.h"
#include "testutil.h"

#define MAX_W 2

static int connect_blocking(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    return fd;
}

/* ------------------------------------------------------------ the server */

typedef struct server {
    iol_runtime *rt;
    _Atomic int open[MAX_W];     /* connections a worker holds now */
    _Atomic int max_open[MAX_W]; /* the most it ever held */
    _Atomic int accepted;
    _Atomic double accept_at[256]; /* iol_test_now() of the first 256 accepts */
} server;

static server *the_server;
static _Atomic int shed_warnings; /* the listener ran out of fds */

static void log_sink(int level, const char *msg, void *ud)
{
    (void)ud;
    if (level <= IOL_LOG_WARNING && strstr(msg, "shedding"))
        atomic_fetch_add(&shed_warnings, 1);
}

typedef struct conn {
    int fd;
    int worker;
} conn;

/* Echoes what comes; closes at EOF or on an error. */
static void conn_ready(int fd, unsigned events, void *arg)
{
    (void)events;
    conn *c = arg;
    char buf[512];
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n > 0) {
        ck_assert_int_eq(write(fd, buf, (size_t)n), n);
        return;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    ck_assert_int_eq(iol_loop_remove_handler(iol_loop_current(), fd), 0);
    close(fd);
    atomic_fetch_sub(&the_server->open[c->worker], 1);
    free(c);
}

static void on_accept(iol_loop *loop, int fd, const struct sockaddr *peer, socklen_t peerlen, void *arg)
{
    (void)peer;
    (void)peerlen;
    server *sv = arg;
    int w = iol_runtime_worker_index();
    ck_assert(w >= 0 && w < MAX_W);
    int k = atomic_fetch_add(&sv->accepted, 1);
    if (k < 256)
        atomic_store(&sv->accept_at[k], iol_test_now());
    int now = atomic_fetch_add(&sv->open[w], 1) + 1;
    int seen = atomic_load(&sv->max_open[w]);
    while (now > seen && !atomic_compare_exchange_weak(&sv->max_open[w], &seen, now))
        ;
    conn *c = malloc(sizeof(*c));
    ck_assert_ptr_nonnull(c);
    c->fd = fd;
    c->worker = w;
    ck_assert_int_eq(iol_loop_add_handler(loop, fd, IOL_READ, conn_ready, c), 0);
}

static int sum_open(server *sv)
{
    return atomic_load(&sv->open[0]) + atomic_load(&sv->open[1]);
}

/* A round trip on an established connection; returns its seconds. */
static double ping(int fd)
{
    double t0 = iol_test_now();
    ck_assert_int_eq(write(fd, "ping", 4), 4);
    char buf[4];
    size_t got = 0;
    while (got < 4) {
        ssize_t n = read(fd, buf + got, 4 - got);
        ck_assert_int_gt(n, 0);
        got += (size_t)n;
    }
    ck_assert(memcmp(buf, "ping", 4) == 0);
    return iol_test_now() - t0;
}

/* ------------------------------------------------------------- the storm */

/* A child process, forked before the runtime's threads exist, that reads
 * the port from `go`, opens n non-blocking connections to it (most never
 * complete: the listener holds them off), writes one byte to `issued`
 * once all were issued, and closes everything and exits when `go`
 * reaches EOF. Returns the pid. */
static pid_t storm(int n, int go, int go_w, int issued)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid > 0)
        return pid;
    close(go_w); /* or the EOF never comes */
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    uint16_t port;
    if (read(go, &port, sizeof(port)) != sizeof(port))
        _exit(3);
    int *fds = calloc((size_t)n, sizeof(int));
    int made = 0, last_err = 0;
    for (int i = 0; i < n; i++) {
        /* Over 8 loopback addresses: each (source port, destination)
         * pair is one connection, so the local port range (28k ports here,
         * some in TIME_WAIT from an earlier storm) is not the limit. */
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK + (uint32_t)(i % 8));
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            last_err = errno;
            break;
        }
        if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0 && errno != EINPROGRESS && errno != EAGAIN) {
            last_err = errno;
            close(fd);
            continue;
        }
        fds[made++] = fd;
    }
    int report[2] = {made, last_err};
    if (write(issued, report, sizeof report) != (ssize_t)sizeof report)
        _exit(2);
    char c;
    while (read(go, &c, 1) > 0)
        ;
    for (int i = 0; i < made; i++)
        close(fds[i]);
    free(fds);
    _exit(0);
}

/* The storm's size: the fds this process may open (its hard limit), less
 * a margin; the issue asks for 20,000 against a cap of 1,000. */
static int storm_size(int want)
{
    struct rlimit rl;
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_max != RLIM_INFINITY && (rlim_t)want + 64 > rl.rlim_max) {
        int n = (int)rl.rlim_max - 64;
        fprintf(stderr, "storm: %d connections, not %d (fd hard limit %llu)\n", n, want,
                (unsigned long long)rl.rlim_max);
        return n;
    }
    return want;
}

/* A storm of 20 × cap connections per... see the issue: 20,000 connects
 * against 1,000 per worker. The server's process has an fd limit of twice
 * the cap plus 300, so without the cap it would run out of fds (and
 * shed). Asserts: no worker ever holds more than the cap; both reach it;
 * an established connection keeps being answered (generous bound); the
 * server is under its fd limit (it never shed); after the storm
 * everything closes and a new client is served. */
static void storm_against_cap(int shard)
{
    int cap = (int)iol_test_scaled(1000, 20);
    int n = storm_size(cap * 20);
    int issued[2], go[2];
    ck_assert_int_eq(pipe2(issued, O_CLOEXEC), 0);
    ck_assert_int_eq(pipe2(go, O_CLOEXEC), 0);
    pid_t pid = storm(n, go[0], go[1], issued[1]);
    close(issued[1]);
    close(go[0]);

    /* The server's own fd limit. */
    struct rlimit rl;
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    rl.rlim_cur = (rlim_t)(2 * cap + 300);
    ck_assert_uint_le(rl.rlim_cur, rl.rlim_max);
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);

    server *sv = calloc(1, sizeof(*sv));
    the_server = sv;
    iol_set_log_handler(log_sink, NULL);
    ck_assert_int_eq(iol_runtime_new(&sv->rt, &(iol_runtime_config){.workers = MAX_W}), 0);
    /* All of 127/8 (the storm comes from 8 addresses of it). */
    iol_listen_config lc = {.host = "0.0.0.0", .shard = shard, .on_accept = on_accept, .arg = sv,
                            .max_connections = (unsigned)cap};
    int id = iol_runtime_listen(sv->rt, &lc);
    ck_assert_int_ge(id, 0);
    uint16_t port = (uint16_t)iol_runtime_listener_port(sv->rt, id);
    ck_assert_int_eq(iol_runtime_start(sv->rt), 0);

    int steady = connect_blocking(port);
    ck_assert_int_ge(steady, 0);
    ping(steady);
    ck_assert_int_eq(write(go[1], &port, sizeof(port)), sizeof(port));

    /* Both workers fill up to the cap while the storm lasts; the steady
     * connection keeps its answers coming. */
    double worst = 0;
    double deadline = iol_test_now() + 60;
    int report[2] = {0, 0}; /* connects issued, the last error */
    bool storm_issued = false;
    while (iol_test_now() < deadline) {
        double rtt = ping(steady);
        worst = rtt > worst ? rtt : worst;
        if (!storm_issued) {
            struct pollfd p = {.fd = issued[0], .events = POLLIN};
            if (poll(&p, 1, 0) == 1) {
                ck_assert_int_eq(read(issued[0], report, sizeof report), sizeof report);
                storm_issued = true;
            }
        }
        if (storm_issued && atomic_load(&sv->open[0]) >= cap && atomic_load(&sv->open[1]) >= cap)
            break;
        usleep(20000);
    }
    /* A storm is many times what the workers may hold; the one asked for
     * is 20 ×, ten times it will do if the machine runs short of ports. */
    ck_assert_msg(storm_issued && report[0] >= (n < 10 * MAX_W * cap ? n : 10 * MAX_W * cap),
                  "the storm issued %d of its %d connects (last error: %s)", report[0], n, strerror(report[1]));
    ck_assert_msg(atomic_load(&sv->open[0]) >= cap && atomic_load(&sv->open[1]) >= cap,
                  "workers hold %d and %d, cap %d", atomic_load(&sv->open[0]), atomic_load(&sv->open[1]), cap);
    /* Held off for a while longer: the cap still holds. */
    for (int i = 0; i < 10; i++) {
        double rtt = ping(steady);
        worst = rtt > worst ? rtt : worst;
        usleep(20000);
    }
    fprintf(stderr, "storm of %d against a cap of %d (shard %d): held %d + %d, worst round trip %.1f ms\n", n, cap,
            shard, atomic_load(&sv->max_open[0]), atomic_load(&sv->max_open[1]), worst * 1e3);
    /* The steady connection counts for one of the workers: at most the cap. */
    ck_assert_int_le(atomic_load(&sv->max_open[0]), cap);
    ck_assert_int_le(atomic_load(&sv->max_open[1]), cap);
    ck_assert_msg(worst < 5.0, "an established connection waited %.2f s for its answer", worst);
    ck_assert_int_eq(atomic_load(&shed_warnings), 0);
    /* Visible in the statistics: holds at the cap, none for a rate. */
    iol_runtime_stats rs;
    ck_assert_int_eq(iol_runtime_get_stats(sv->rt, IOL_RUNTIME_ALL, &rs, sizeof rs), 0);
    ck_assert_uint_gt(rs.holds_connections, 0);
    ck_assert_uint_eq(rs.holds_rate, 0);
    iol_listener_stats ls;
    ck_assert_int_eq(iol_runtime_listener_stats(sv->rt, id, &ls, sizeof ls), 0);
    /* Read later, while the holds go on (one per 10 ms recheck). */
    ck_assert_uint_ge(ls.holds_connections, rs.holds_connections);
    ck_assert_uint_ge(ls.accepted, (uint64_t)(2 * cap)); /* both workers filled (and the steady one) */

    /* The storm ends: every connection closes, queued ones included. */
    close(go[1]);
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    deadline = iol_test_now() + 60;
    while (sum_open(sv) > 1 && iol_test_now() < deadline)
        usleep(10000);
    ck_assert_msg(sum_open(sv) <= 1, "%d connections still open after the storm", sum_open(sv));
    ck_assert_int_eq(atomic_load(&shed_warnings), 0);

    /* Recovered: a new client is served, and nothing is held. */
    int late = connect_blocking(port);
    ck_assert_int_ge(late, 0);
    ping(late);
    close(late);
    deadline = iol_test_now() + 10;
    while (iol_runtime_listener_stats(sv->rt, id, &ls, sizeof ls) == 0 && ls.held > 0 && iol_test_now() < deadline)
        usleep(10000);
    ck_assert_uint_eq(ls.held, 0);
    close(steady);
    close(issued[0]);
    iol_runtime_free(sv->rt);
    iol_set_log_handler(NULL, NULL);
    free(sv);
}

START_TEST(test_storm_cap_reuseport)
{
    storm_against_cap(IOL_SHARD_REUSEPORT);
}
END_TEST

START_TEST(test_storm_cap_handoff)
{
    storm_against_cap(IOL_SHARD_HANDOFF);
}
END_TEST

/* ------------------------------------------------------------- the rate */

/* 60 clients at once against 100 accepts a second: the bucket (a tenth of
 * a second's worth, 10) lets the first ten in at once, the rest at the
 * rate. Asserted in the direction noise cannot break: the k-th accept
 * comes no sooner after start than the bucket allows (a slow machine
 * only makes it later), and all of them come. */
static void rate_bound(int shard)
{
    const double rate = 100, burst = 10;
    const int n = 60;
    server *sv = calloc(1, sizeof(*sv));
    the_server = sv;
    ck_assert_int_eq(iol_runtime_new(&sv->rt, &(iol_runtime_config){.workers = MAX_W}), 0);
    iol_listen_config lc = {.host = "127.0.0.1", .shard = shard, .on_accept = on_accept, .arg = sv,
                            .max_accept_rate = rate};
    int id = iol_runtime_listen(sv->rt, &lc);
    ck_assert_int_ge(id, 0);
    uint16_t port = (uint16_t)iol_runtime_listener_port(sv->rt, id);
    int fds[60];
    /* Queued in the backlog before the workers run: one burst. */
    for (int i = 0; i < n; i++)
        ck_assert_int_ge(fds[i] = connect_blocking(port), 0);
    /* The bucket starts full at its first look, which is after this. */
    double t0 = iol_test_now();
    ck_assert_int_eq(iol_runtime_start(sv->rt), 0);
    double deadline = iol_test_now() + 30;
    while (atomic_load(&sv->accepted) < n && iol_test_now() < deadline)
        usleep(5000);
    ck_assert_int_eq(atomic_load(&sv->accepted), n);
    /* on_accept times, sorted (each worker records its own). An
     * on_accept comes after its accept (HANDOFF: later still), so the
     * bound below holds for them too. */
    double at[60];
    for (int k = 0; k < n; k++)
        at[k] = atomic_load(&sv->accept_at[k]) - t0;
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && at[j] < at[j - 1]; j--) {
            double x = at[j];
            at[j] = at[j - 1];
            at[j - 1] = x;
        }
    for (int k = 0; k < n; k++) {
        /* k+1 accepts by at[k] need k+1 tokens: burst + rate * elapsed. */
        double earliest = ((double)(k + 1) - burst) / rate - 0.001;
        ck_assert_msg(at[k] >= earliest, "accept %d after %.3f s, the bucket allows it at %.3f s", k + 1, at[k],
                      earliest + 0.001);
    }
    iol_listener_stats ls;
    ck_assert_int_eq(iol_runtime_listener_stats(sv->rt, id, &ls, sizeof ls), 0);
    ck_assert_uint_eq(ls.accepted, (uint64_t)n);
    ck_assert_uint_gt(ls.holds_rate, 0);
    ck_assert_uint_eq(ls.holds_connections, 0);
    fprintf(stderr, "rate %.0f/s (shard %d): %d accepts over %.3f s\n", rate, shard, n, at[n - 1]);
    for (int i = 0; i < n; i++)
        close(fds[i]);
    iol_runtime_free(sv->rt);
    free(sv);
}

START_TEST(test_rate_reuseport)
{
    rate_bound(IOL_SHARD_REUSEPORT);
}
END_TEST

START_TEST(test_rate_handoff)
{
    rate_bound(IOL_SHARD_HANDOFF);
}
END_TEST

START_TEST(test_bad_config)
{
    iol_runtime *rt = NULL;
    ck_assert_int_eq(iol_runtime_new(&rt, &(iol_runtime_config){.workers = 1}), 0);
    iol_listen_config lc = {.host = "127.0.0.1", .on_accept = on_accept, .max_accept_rate = -1};
    ck_assert_int_eq(iol_runtime_listen(rt, &lc), -EINVAL);
    lc.max_accept_rate = __builtin_nan("");
    ck_assert_int_eq(iol_runtime_listen(rt, &lc), -EINVAL);
    lc.max_accept_rate = 0;
    lc.connections_low = 10; /* without a cap */
    ck_assert_int_eq(iol_runtime_listen(rt, &lc), -EINVAL);
    lc.max_connections = 10; /* not below it */
    ck_assert_int_eq(iol_runtime_listen(rt, &lc), -EINVAL);
    lc.connections_low = 9;
    int id = iol_runtime_listen(rt, &lc);
    ck_assert_int_ge(id, 0);
    iol_listener_stats ls;
    ck_assert_int_eq(iol_runtime_listener_stats(NULL, id, &ls, sizeof ls), -EINVAL);
    ck_assert_int_eq(iol_runtime_listener_stats(rt, id, NULL, sizeof ls), -EINVAL);
    ck_assert_int_eq(iol_runtime_listener_stats(rt, id, &ls, 0), -EINVAL);
    ck_assert_int_eq(iol_runtime_listener_stats(rt, id + 1, &ls, sizeof ls), -ENOENT);
    ck_assert_int_eq(iol_runtime_listener_stats(rt, -1, &ls, sizeof ls), -ENOENT);
    ck_assert_int_eq(iol_runtime_listener_stats(rt, id, &ls, sizeof ls), 0);
    ck_assert_uint_eq(ls.accepted + ls.holds_connections + ls.holds_rate + ls.held, 0);
    iol_runtime_free(rt);
}
END_TEST

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    Suite *s = suite_create("overload");
    TCase *tc = iol_test_tcase("storm", 240);
    tcase_add_test(tc, test_storm_cap_reuseport);
    tcase_add_test(tc, test_storm_cap_handoff);
    suite_add_tcase(s, tc);
    tc = iol_test_tcase("rate", 120);
    tcase_add_test(tc, test_rate_reuseport);
    tcase_add_test(tc, test_rate_handoff);
    tcase_add_test(tc, test_bad_config);
    suite_add_tcase(s, tc);
    return iol_test_run(s);
}
