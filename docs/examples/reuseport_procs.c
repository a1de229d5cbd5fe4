/* docs/examples/reuseport_procs.c — several processes sharing one port
 * with SO_REUSEPORT (docs/scaling.md).
 *
 *   reuseport_procs PORT [WORKERS] &   # start it two or more times
 *
 * iol_runtime_listen refuses a port another process already listens on
 * (-EADDRINUSE, even with IOL_SHARD_REUSEPORT), so each worker opens its
 * own SO_REUSEPORT socket in on_start and accepts from an fd handler on
 * its loop. The kernel spreads connections over every socket of every
 * process. Each connection gets "pid P worker W\n". SIGINT/SIGTERM stop
 * the process; it prints how many connections each worker took. */
#define _GNU_SOURCE /* accept4 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ioloop.h>

#define MAX_WORKERS 64

typedef struct worker {
    int fd;
    unsigned long accepted;
} worker;

static uint16_t port;
static worker workers[MAX_WORKERS];

static int open_reuseport(uint16_t p)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(p), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0 ||
        bind(fd, (struct sockaddr *)&sin, sizeof sin) < 0 || listen(fd, SOMAXCONN) < 0) {
        perror("reuseport socket");
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

static void on_listen_ready(int fd, unsigned events, void *arg)
{
    (void)events;
    worker *w = arg;
    for (;;) { /* level-triggered: accepting everything now saves wakeups */
        int c = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c < 0)
            return; /* EAGAIN: done; others (EMFILE...) need a policy of their own */
        w->accepted++;
        char line[64];
        int n = snprintf(line, sizeof line, "pid %d worker %d\n", (int)getpid(), iol_runtime_worker_index());
        if (write(c, line, (size_t)n) != n)
            perror("write");
        close(c);
    }
}

static void on_start(iol_loop *loop, unsigned index, void *arg)
{
    (void)arg;
    worker *w = &workers[index];
    w->fd = open_reuseport(port);
    if (w->fd >= 0 && iol_loop_add_handler(loop, w->fd, IOL_READ, on_listen_ready, w) < 0) {
        close(w->fd);
        w->fd = -1;
    }
}

static void on_stop(iol_loop *loop, unsigned index, void *arg)
{
    (void)arg;
    worker *w = &workers[index];
    if (w->fd >= 0) {
        /* Leaving the group: connections still in this socket's queue are
         * reset by the kernel (see docs/scaling.md). */
        iol_loop_remove_handler(loop, w->fd);
        close(w->fd);
    }
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s PORT [WORKERS]\n", argv[0]);
        return 2;
    }
    port = (uint16_t)atoi(argv[1]);
    unsigned n = argc > 2 ? (unsigned)atoi(argv[2]) : 2;
    if (n == 0 || n > MAX_WORKERS)
        return 2;

    /* Block the stop signals in every thread (workers inherit the mask);
     * main waits for them with sigwait. */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);

    iol_runtime_config cfg = { .workers = n, .on_start = on_start, .on_stop = on_stop };
    iol_runtime *rt;
    if (iol_runtime_new(&rt, &cfg) < 0 || iol_runtime_start(rt) < 0)
        return 1;
    printf("pid %d: %u workers on 127.0.0.1:%u\n", (int)getpid(), n, port);
    fflush(stdout);

    int sig;
    sigwait(&stop_signals, &sig);
    iol_runtime_stop(rt);
    iol_runtime_join(rt);
    printf("pid %d accepted:", (int)getpid());
    for (unsigned i = 0; i < n; i++)
        printf(" %lu", workers[i].accepted);
    printf("\n");
    iol_runtime_free(rt);
    return 0;
}
