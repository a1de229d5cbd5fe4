/* iol-floor-http — the raw floor of an HTTP keep-alive server, for
 * `iol-bench compare http` (its `floor` row): what no event loop and no
 * HTTP library can spend less than.
 *
 * One thread per worker (--workers N, each with its own SO_REUSEPORT
 * listener and epoll set; default 1), level-triggered epoll, accept4 of
 * non-blocking sockets, and per readable connection one read and one
 * write of the canned response repeated once per complete request found
 * in what was read. "Parsing" is finding each request's end (CRLF CRLF),
 * across reads too; nothing else is looked at (no method, no headers, no
 * Connection: close, no bodies). A write that would block is dropped
 * (loads of 64 connections with one request or one pipelined batch in
 * flight never fill a socket buffer); EOF or an error closes.
 *
 *   iol-floor-http --port P [--host 127.0.0.1] [--workers N]
 *
 * Runs until SIGTERM or SIGINT. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_WORKERS 64
#define MAX_EVENTS 256
#define MAX_FDS 65536
#define READ_SIZE 16384
#define MAX_BATCH 256

/* The bytes http-hello sends (its Date changes once a second; this one is
 * canned), so the socket work is the same. */
static const char response[] = "HTTP/1.1 200 OK\r\nServer: ioloop\r\nDate: Thu, 01 Jan 1970 00:00:00 GMT\r\n"
                               "Content-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!";
#define RESPONSE_LEN (sizeof response - 1)

static struct sockaddr_in g_addr;
/* Per fd: how much of "\r\n\r\n" the previous read ended with (0..3).
 * Each fd belongs to one worker's epoll set, so one writer per entry. */
static unsigned char g_matched[MAX_FDS];
static char *g_batch; /* RESPONSE_LEN * MAX_BATCH, read-only after main */

static int listener(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&g_addr, sizeof g_addr) < 0 || listen(fd, 4096) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Counts request ends in buf[0..n), continuing a match across reads. */
static unsigned count_requests(int fd, const char *buf, size_t n)
{
    static const char end[4] = { '\r', '\n', '\r', '\n' };
    unsigned m = g_matched[fd], found = 0;
    for (size_t i = 0; i < n; i++) {
        if (buf[i] == end[m]) {
            if (++m == 4) {
                found++;
                m = 0;
            }
        } else {
            m = buf[i] == '\r' ? 1 : 0;
        }
    }
    g_matched[fd] = (unsigned char)m;
    return found;
}

static void serve(int fd, char *buf)
{
    ssize_t n = read(fd, buf, READ_SIZE);
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        close(fd); /* also leaves the epoll set */
        return;
    }
    unsigned reqs = count_requests(fd, buf, (size_t)n);
    while (reqs > 0) {
        unsigned k = reqs < MAX_BATCH ? reqs : MAX_BATCH;
        if (write(fd, g_batch, k * RESPONSE_LEN) < 0 && errno != EAGAIN) {
            close(fd);
            return;
        }
        reqs -= k;
    }
}

static void *worker(void *arg)
{
    (void)arg;
    int lfd = listener(), ep = epoll_create1(EPOLL_CLOEXEC);
    if (lfd < 0 || ep < 0) {
        perror("iol-floor-http: listener");
        exit(1);
    }
    struct epoll_event ev = { .events = EPOLLIN, .data.fd = lfd };
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    static _Thread_local char buf[READ_SIZE];
    struct epoll_event events[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(ep, events, MAX_EVENTS, -1);
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd != lfd) {
                serve(fd, buf);
                continue;
            }
            int c;
            while ((c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                if (c >= MAX_FDS) {
                    close(c);
                    continue;
                }
                int one = 1;
                setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                g_matched[c] = 0;
                struct epoll_event cev = { .events = EPOLLIN | EPOLLRDHUP, .data.fd = c };
                if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev) < 0)
                    close(c);
            }
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    int port = 0, workers = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--port") && i + 1 < argc)
            port = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--host") && i + 1 < argc)
            host = argv[++i];
        else if (!strcmp(argv[i], "--workers") && i + 1 < argc)
            workers = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: iol-floor-http --port P [--host ADDR] [--workers N]\n");
            return 2;
        }
    }
    if (port <= 0 || port > 65535 || workers < 1 || workers > MAX_WORKERS) {
        fprintf(stderr, "iol-floor-http: need --port 1..65535 and --workers 1..%d\n", MAX_WORKERS);
        return 2;
    }
    g_addr.sin_family = AF_INET;
    g_addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &g_addr.sin_addr) != 1) {
        fprintf(stderr, "iol-floor-http: --host wants an IPv4 address\n");
        return 2;
    }
    g_batch = malloc(RESPONSE_LEN * MAX_BATCH);
    if (!g_batch)
        return 1;
    for (int i = 0; i < MAX_BATCH; i++)
        memcpy(g_batch + (size_t)i * RESPONSE_LEN, response, RESPONSE_LEN);
    signal(SIGPIPE, SIG_IGN);
    /* The workers run detached; main waits for SIGTERM or SIGINT. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    for (int i = 0; i < workers; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, worker, NULL) != 0) {
            fprintf(stderr, "iol-floor-http: cannot start worker %d\n", i);
            return 1;
        }
        pthread_detach(t);
    }
    int sig;
    sigwait(&set, &sig);
    return 0;
}
