/* soak-graceful: SIGTERM to http-hello under load; no accepted connection
 * may be reset.
 *
 * Each round starts examples/http-hello (2 workers, shard modes alternate),
 * loads it with client threads of two kinds, both blocking sockets:
 *  - keep-alive: one connection, request after request; reconnects on EOF;
 *  - churn: connect, one request, close, again (connections are being
 *    opened all the time, so some sit in the kernel's accept queue when
 *    the signal arrives);
 * and sends SIGTERM after --load-seconds. Clients run on until a connect is
 * refused (the listener is gone) or the server has exited.
 * A reset is ECONNRESET/EPIPE on a read or write of a connection whose
 * connect() succeeded: that is a connection the kernel accepted, and a
 * graceful stop must answer or close it, not reset it. Refused connects
 * after the signal are fine. The server must exit 0 within 5 s.
 * Each round binds its clients to its own 127.0.0.x source address so
 * TIME_WAIT from earlier rounds cannot exhaust the ephemeral ports.
 *
 * Usage: soak-graceful [--server PATH] [--rounds R] [--load-seconds S]
 *                      [--keepalive K] [--churn C] [--smoke]
 * Exit 0 ok, 1 failed, 77 http-hello not built. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "soakutil.h"

#define MAX_THREADS 256
#define IO_TIMEOUT_S 5

static const char REQUEST[] = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

/* Outcome counters, summed by all client threads; relaxed: totals read
 * after the threads are joined. */
typedef struct tallies {
    _Atomic unsigned long requests_ok, connects_ok, refused, refused_early, resets, closed_early, timeouts,
        other_errors;
    /* Where resets happened: [churn][on write, on read before any response
     * byte, on read mid-response]. */
    _Atomic unsigned long reset_at[2][3];
    _Atomic int last_error; /* errno of the last "other" error, for the report */
} tallies;

static tallies g_t;
static uint16_t g_port;
static in_addr_t g_source; /* this round's client address */
/* Set once SIGTERM was sent (refusals before that are failures) and once
 * the round is over; relaxed: flags read in loops, nothing else depends on
 * their ordering. */
static _Atomic bool g_signalled, g_done;

#define ADD(field) atomic_fetch_add_explicit(&g_t.field, 1, memory_order_relaxed)

static bool signalled(void)
{
    return atomic_load_explicit(&g_signalled, memory_order_relaxed);
}

static bool done(void)
{
    return atomic_load_explicit(&g_done, memory_order_relaxed);
}

/* Connects from this round's source address. fd, or -1 with the outcome
 * counted; *stop set when the listener is gone. */
static int client_connect(bool *stop)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        ADD(other_errors);
        return -1;
    }
    struct sockaddr_in src = {.sin_family = AF_INET, .sin_addr.s_addr = g_source};
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(g_port)};
    dst.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {.tv_sec = IO_TIMEOUT_S};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&src, sizeof(src)) < 0 || connect(fd, (struct sockaddr *)&dst, sizeof(dst)) < 0) {
        int err = errno;
        close(fd);
        if (err == ECONNREFUSED) {
            if (signalled())
                ADD(refused);
            else
                ADD(refused_early);
            *stop = true;
        } else if (err == ETIMEDOUT || err == EINPROGRESS) {
            ADD(timeouts);
        } else {
            ADD(other_errors);
            atomic_store_explicit(&g_t.last_error, err, memory_order_relaxed);
            if (err == EADDRNOTAVAIL) {
                fprintf(stderr, "soak-graceful: out of ephemeral ports\n");
                *stop = true;
            }
        }
        return -1;
    }
    ADD(connects_ok);
    return fd;
}

static void count_io_error(int err, bool churn, int where)
{
    if (err == ECONNRESET || err == EPIPE) {
        ADD(resets);
        atomic_fetch_add_explicit(&g_t.reset_at[churn][where], 1, memory_order_relaxed);
    } else if (err == EAGAIN || err == EWOULDBLOCK) {
        ADD(timeouts);
    } else {
        ADD(other_errors);
        atomic_store_explicit(&g_t.last_error, err, memory_order_relaxed);
    }
}

/* One request/response on fd: 1 ok, 0 closed (EOF before a full
 * response), -1 error (counted). */
static int exchange(int fd, bool churn)
{
    int w = soak_write_all(fd, REQUEST, sizeof(REQUEST) - 1);
    if (w < 0) {
        count_io_error(-w, churn, 0);
        return -1;
    }
    char buf[1024];
    size_t used = 0;
    for (;;) {
        ssize_t n = recv(fd, buf + used, sizeof(buf) - 1 - used, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            count_io_error(errno, churn, used ? 2 : 1);
            return -1;
        }
        if (n == 0) {
            ADD(closed_early);
            return 0;
        }
        used += (size_t)n;
        buf[used] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        if (end) {
            char *cl = strcasestr(buf, "content-length:");
            size_t body = cl ? (size_t)strtoul(cl + 15, NULL, 10) : 0;
            if (used >= (size_t)(end + 4 - buf) + body) {
                if (strncmp(buf, "HTTP/1.1 200", 12) != 0) {
                    ADD(other_errors);
                    return -1;
                }
                ADD(requests_ok);
                return 1;
            }
        }
        if (used == sizeof(buf) - 1) {
            ADD(other_errors);
            return -1;
        }
    }
}

static void *keepalive_main(void *arg)
{
    (void)arg;
    bool stop = false;
    while (!stop && !done()) {
        int fd = client_connect(&stop);
        if (fd < 0)
            continue;
        while (!done() && exchange(fd, false) == 1)
            ;
        close(fd);
    }
    return NULL;
}

static void *churn_main(void *arg)
{
    (void)arg;
    bool stop = false;
    while (!stop && !done()) {
        int fd = client_connect(&stop);
        if (fd < 0)
            continue;
        exchange(fd, true);
        close(fd);
    }
    return NULL;
}

static void usage(void)
{
    fprintf(stderr, "usage: soak-graceful [--server PATH] [--rounds R] [--load-seconds S] [--keepalive K] "
                    "[--churn C] [--smoke]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    char server[4096] = "";
    unsigned rounds = 6, keepalive = 16, churn = 16;
    double load_seconds = 2;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--smoke")) {
            rounds = 2;
            load_seconds = 0.5;
            keepalive = churn = 4;
            continue;
        }
        if (i + 1 >= argc)
            usage();
        if (!strcmp(argv[i], "--server"))
            snprintf(server, sizeof(server), "%s", argv[++i]);
        else if (!strcmp(argv[i], "--rounds"))
            rounds = (unsigned)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--load-seconds"))
            load_seconds = atof(argv[++i]);
        else if (!strcmp(argv[i], "--keepalive"))
            keepalive = (unsigned)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--churn"))
            churn = (unsigned)atoi(argv[++i]);
        else
            usage();
    }
    if (rounds == 0 || rounds > 250 || keepalive + churn == 0 || keepalive + churn > MAX_THREADS)
        usage();
    if (!server[0] && soak_example_path("http-hello", server, sizeof(server)) < 0) {
        printf("soak-graceful: examples/http-hello not built: skipped\n");
        return 77;
    }
    signal(SIGPIPE, SIG_IGN);

    bool ok = true;
    unsigned long total_resets = 0;
    for (unsigned r = 0; r < rounds; r++) {
        const char *mode = r % 2 ? "handoff" : "reuseport";
        char *sargv[] = {server, "--host", "127.0.0.1", "--port", "0", "--workers", "2", "--shard", (char *)mode,
                         NULL};
        soak_server srv;
        int err = soak_server_start(&srv, server, sargv, 0, 10);
        if (err < 0) {
            fprintf(stderr, "soak-graceful: cannot start %s: %s\n", server, strerror(-err));
            return 1;
        }
        memset(&g_t, 0, sizeof(g_t));
        g_port = srv.port;
        g_source = htonl(INADDR_LOOPBACK + 1 + r); /* 127.0.0.2, .3, ... */
        atomic_store_explicit(&g_signalled, false, memory_order_relaxed);
        atomic_store_explicit(&g_done, false, memory_order_relaxed);

        pthread_t threads[MAX_THREADS];
        unsigned n = 0;
        for (unsigned i = 0; i < keepalive; i++)
            pthread_create(&threads[n++], NULL, keepalive_main, NULL);
        for (unsigned i = 0; i < churn; i++)
            pthread_create(&threads[n++], NULL, churn_main, NULL);
        soak_sleep(load_seconds);
        unsigned long before = atomic_load_explicit(&g_t.requests_ok, memory_order_relaxed);
        atomic_store_explicit(&g_signalled, true, memory_order_relaxed);
        double t_sig = soak_now();
        kill(srv.pid, SIGTERM);
        int status = 0;
        bool exited = false;
        while (soak_now() - t_sig < 5.0) {
            if (waitpid(srv.pid, &status, WNOHANG) == srv.pid) {
                exited = true;
                break;
            }
            soak_sleep(0.002);
        }
        double stop_ms = (soak_now() - t_sig) * 1000.0;
        if (exited)
            srv.pid = -1; /* reaped */
        else
            status = soak_server_stop(&srv, SIGKILL, 2);
        if (srv.out_fd >= 0) {
            close(srv.out_fd);
            srv.out_fd = -1;
        }
        atomic_store_explicit(&g_done, true, memory_order_relaxed);
        for (unsigned i = 0; i < n; i++)
            pthread_join(threads[i], NULL);

#define T(f) atomic_load_explicit(&g_t.f, memory_order_relaxed)
        bool round_ok = exited && WIFEXITED(status) && WEXITSTATUS(status) == 0 && T(resets) == 0 &&
                        T(refused_early) == 0 && before > 0;
        printf("round %u (%s): requests ok %lu (%lu before SIGTERM), connects ok %lu, refused %lu, resets %lu, "
               "closed before a response %lu, timeouts %lu, other errors %lu, refused before SIGTERM %lu; "
               "server %s %d after %.0f ms: %s\n",
               r + 1, mode, T(requests_ok), before, T(connects_ok), T(refused), T(resets), T(closed_early),
               T(timeouts), T(other_errors), T(refused_early), exited ? "exited" : "killed",
               exited && WIFEXITED(status) ? WEXITSTATUS(status) : -1, stop_ms, round_ok ? "ok" : "FAILED");
        if (T(resets))
            printf("  resets: keep-alive %lu on write, %lu on read before the response, %lu mid-response; "
                   "churn %lu on write, %lu on read before the response, %lu mid-response\n",
                   T(reset_at[0][0]), T(reset_at[0][1]), T(reset_at[0][2]), T(reset_at[1][0]), T(reset_at[1][1]),
                   T(reset_at[1][2]));
        if (T(other_errors))
            printf("  last other error: %s\n", strerror(T(last_error)));
        fflush(stdout);
        total_resets += T(resets);
        ok = ok && round_ok;
    }
    printf("graceful stop: %u rounds, resets %lu: %s\n", rounds, total_resets, ok ? "OK" : "FAILED");
    return ok ? 0 : 1;
}
