/* The load for bench/python/bench.py: C connections to an echo server,
 * each sending one message of S bytes, waiting for all S bytes to come
 * back, then sending the next (a closed loop per connection), for D
 * seconds, on one epoll thread, so the client is not the limit.
 * Prints "roundtrips N seconds T".
 * Usage: echo-client HOST PORT CONNECTIONS SIZE SECONDS */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    int fd;
    size_t sent, received; /* bytes of the current message */
} conn;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Sends what the socket takes of the current message: 0, or -1. */
static int pump_send(conn *c, const char *msg, size_t size)
{
    while (c->sent < size) {
        ssize_t n = send(c->fd, msg + c->sent, size - c->sent, MSG_NOSIGNAL);
        if (n < 0)
            return errno == EAGAIN ? 0 : -1;
        c->sent += (size_t)n;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: %s HOST PORT CONNECTIONS SIZE SECONDS\n", argv[0]);
        return 2;
    }
    int nconn = atoi(argv[3]);
    size_t size = (size_t)atol(argv[4]);
    double seconds = atof(argv[5]);
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2])) };
    if (nconn <= 0 || size == 0 || seconds <= 0 || inet_pton(AF_INET, argv[1], &addr.sin_addr) != 1) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    char *msg = malloc(size), *buf = malloc(1 << 20);
    conn *conns = calloc((size_t)nconn, sizeof *conns);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (!msg || !buf || !conns || ep < 0)
        return 1;
    memset(msg, 'x', size);
    for (int i = 0; i < nconn; i++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
        if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
            perror("echo-client: connect");
            return 1;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        conns[i].fd = fd;
        struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = &conns[i] };
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0 || pump_send(&conns[i], msg, size) < 0)
            return 1;
    }
    unsigned long long roundtrips = 0;
    double start = now(), end = start + seconds, t;
    struct epoll_event evs[256];
    while ((t = now()) < end) {
        int n = epoll_wait(ep, evs, 256, (int)((end - t) * 1000) + 1);
        for (int i = 0; i < n; i++) {
            conn *c = evs[i].data.ptr;
            if (pump_send(c, msg, size) < 0) {
                perror("echo-client: send");
                return 1;
            }
            for (;;) {
                ssize_t r = recv(c->fd, buf, 1 << 20, 0);
                if (r == 0 || (r < 0 && errno != EAGAIN)) {
                    fprintf(stderr, "echo-client: the server closed or failed\n");
                    return 1;
                }
                if (r < 0)
                    break;
                c->received += (size_t)r;
                if (c->received >= size) { /* one round trip; next message */
                    roundtrips++;
                    c->received -= size;
                    c->sent = 0;
                    if (pump_send(c, msg, size) < 0)
                        return 1;
                }
            }
        }
    }
    printf("roundtrips %llu seconds %.6f\n", roundtrips, now() - start);
    for (int i = 0; i < nconn; i++)
        close(conns[i].fd);
    return 0;
}
