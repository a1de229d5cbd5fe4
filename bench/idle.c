/* bench/ — idle keep-alive connections (see idle.h). */
#include "bench/idle.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

static const char request[] = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

/* Reads one reply: headers, then Content-Length bytes of body. */
static int read_reply(int fd)
{
    char buf[4096];
    size_t have = 0;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 5000) <= 0)
            return -ETIMEDOUT;
        ssize_t n = read(fd, buf + have, sizeof buf - 1 - have);
        if (n <= 0)
            return n == 0 ? -ECONNRESET : -errno;
        have += (size_t)n;
        buf[have] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        if (!end) {
            if (have == sizeof buf - 1)
                return -EMSGSIZE;
            continue;
        }
        size_t body = 0;
        for (char *line = strstr(buf, "\r\n"); line && line < end; line = strstr(line + 2, "\r\n"))
            if (!strncasecmp(line + 2, "Content-Length:", 15))
                body = strtoul(line + 17, NULL, 10);
        if (have >= (size_t)(end + 4 - buf) + body)
            return 0;
    }
}

int idle_open(uint16_t port, unsigned n, int *fds)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    unsigned opened = 0;
    int err = 0;
    for (unsigned i = 0; i < n; i++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            err = -errno;
            break;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
            write(fd, request, sizeof request - 1) != (ssize_t)(sizeof request - 1)) {
            err = -errno;
            close(fd);
            break;
        }
        if ((err = read_reply(fd)) < 0) {
            close(fd);
            break;
        }
        fds[opened++] = fd;
    }
    return opened > 0 ? (int)opened : (err ? err : -EIO);
}

void idle_close(int *fds, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        close(fds[i]);
}

long idle_raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return -errno;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    return (long)rl.rlim_cur;
}
