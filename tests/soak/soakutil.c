#include "soakutil.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

double soak_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void soak_sleep(double seconds)
{
    if (seconds <= 0)
        return;
    struct timespec ts = {.tv_sec = (time_t)seconds,
                          .tv_nsec = (long)((seconds - (double)(time_t)seconds) * 1e9)};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

int soak_example_path(const char *name, char *buf, size_t len)
{
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n < 0)
        return -errno;
    self[n] = '\0';
    /* build/tests/soak/soak-x -> build/examples/NAME */
    int w = snprintf(buf, len, "%s/../../examples/%s", dirname(self), name);
    if (w < 0 || (size_t)w >= len)
        return -ENAMETOOLONG;
    return access(buf, X_OK) == 0 ? 0 : -errno;
}

/* Finds "listening on ...:PORT" in text; 0 if not there yet. */
static uint16_t parse_listening(const char *text)
{
    const char *p = strstr(text, "listening on ");
    if (!p)
        return 0;
    const char *eol = strchr(p, '\n');
    if (!eol)
        return 0;
    const char *colon = NULL;
    for (const char *q = p; q < eol; q++)
        if (*q == ':')
            colon = q;
    if (!colon)
        return 0;
    long port = strtol(colon + 1, NULL, 10);
    return port > 0 && port < 65536 ? (uint16_t)port : 0;
}

int soak_server_start(soak_server *s, const char *path, char *const argv[], unsigned nofile, double timeout)
{
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) < 0)
        return -errno;
    /* The fd limit is set by us on the child (prlimit) while it waits on
     * `go`, not by the child itself: under valgrind the child's own
     * setrlimit(RLIMIT_NOFILE) is emulated and would not survive exec. */
    int go[2];
    if (pipe2(go, O_CLOEXEC) < 0) {
        int err = errno;
        close(pipefd[0]);
        close(pipefd[1]);
        return -err;
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        int err = errno;
        close(pipefd[0]);
        close(pipefd[1]);
        close(go[0]);
        close(go[1]);
        return -err;
    }
    if (pid == 0) {
        /* Dies with the soak program so no server outlives a crash. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        close(go[1]);
        char c;
        if (read(go[0], &c, 1) != 1)
            _exit(126);
        dup2(pipefd[1], STDOUT_FILENO);
        execv(path, argv);
        _exit(127);
    }
    close(go[0]);
    int limit_err = 0;
    if (nofile) {
        struct rlimit rl = {.rlim_cur = nofile, .rlim_max = nofile};
        if (prlimit(pid, RLIMIT_NOFILE, &rl, NULL) < 0)
            limit_err = errno;
    }
    if (limit_err || write(go[1], "g", 1) != 1) {
        close(go[1]);
        close(pipefd[0]);
        close(pipefd[1]);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return -(limit_err ? limit_err : EPIPE);
    }
    close(go[1]);
    close(pipefd[1]);
    s->pid = pid;
    s->port = 0;
    s->out_fd = pipefd[0];
    char text[4096];
    size_t used = 0;
    double deadline = soak_now() + timeout;
    while (!s->port) {
        int left = (int)((deadline - soak_now()) * 1000);
        if (left <= 0)
            break;
        struct pollfd pfd = {.fd = s->out_fd, .events = POLLIN};
        if (poll(&pfd, 1, left) <= 0)
            continue;
        ssize_t n = read(s->out_fd, text + used, sizeof(text) - 1 - used);
        if (n <= 0)
            break; /* the child exited */
        used += (size_t)n;
        text[used] = '\0';
        s->port = parse_listening(text);
        if (used == sizeof(text) - 1)
            used = 0;
    }
    fcntl(s->out_fd, F_SETFL, O_NONBLOCK);
    if (!s->port) {
        fprintf(stderr, "soak: %s printed no \"listening on\" line\n", path);
        soak_server_stop(s, SIGKILL, 2);
        return -ETIMEDOUT;
    }
    return 0;
}

void soak_server_drain(soak_server *s)
{
    char buf[4096];
    while (s->out_fd >= 0 && read(s->out_fd, buf, sizeof(buf)) > 0)
        ;
}

int soak_server_stop(soak_server *s, int sig, double timeout)
{
    if (s->pid <= 0)
        return -ECHILD;
    kill(s->pid, sig);
    double deadline = soak_now() + timeout;
    int status = 0;
    for (;;) {
        pid_t r = waitpid(s->pid, &status, WNOHANG);
        if (r == s->pid)
            break;
        if (soak_now() > deadline) {
            kill(s->pid, SIGKILL);
            waitpid(s->pid, &status, 0);
            status = -ETIMEDOUT;
            break;
        }
        soak_sleep(0.005);
    }
    s->pid = -1;
    if (s->out_fd >= 0) {
        close(s->out_fd);
        s->out_fd = -1;
    }
    return status;
}

double soak_proc_cpu(pid_t pid)
{
    char path[64], buf[2048];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    /* The command name may hold spaces: fields count from the last ')'. */
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    unsigned long utime = 0, stime = 0;
    /* After ')': state(3) ... utime is field 14, stime 15. */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) != 2)
        return -1;
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

uint64_t soak_rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "re");
    if (!f)
        return 0;
    unsigned long size = 0, resident = 0;
    int n = fscanf(f, "%lu %lu", &size, &resident);
    fclose(f);
    return n == 2 ? (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE) : 0;
}

int soak_proc_fds(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return -errno;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

int soak_connect(uint16_t port, double timeout)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        if (errno != EINPROGRESS) {
            int err = errno;
            close(fd);
            return -err;
        }
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        int r = poll(&pfd, 1, (int)(timeout * 1000));
        int err = 0;
        socklen_t len = sizeof(err);
        if (r <= 0)
            err = ETIMEDOUT;
        else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err) {
            close(fd);
            return -err;
        }
    }
    int flags = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    struct timeval tv = {.tv_sec = (time_t)timeout,
                         .tv_usec = (suseconds_t)((timeout - (double)(time_t)timeout) * 1e6)};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

int soak_write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int soak_http_get(uint16_t port, double timeout)
{
    int fd = soak_connect(port, timeout);
    if (fd < 0)
        return fd;
    static const char req[] = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    int r = soak_write_all(fd, req, sizeof(req) - 1);
    if (r < 0) {
        close(fd);
        return r;
    }
    char buf[512];
    size_t used = 0;
    while (used < 12) {
        ssize_t n = recv(fd, buf + used, sizeof(buf) - 1 - used, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int err = n < 0 ? errno : ECONNRESET;
            close(fd);
            return -(err == EAGAIN ? ETIMEDOUT : err);
        }
        used += (size_t)n;
    }
    close(fd);
    buf[used] = '\0';
    int status = 0;
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1)
        return -EPROTO;
    return status;
}
