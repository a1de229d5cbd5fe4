/* soak-emfile: http-hello out of file descriptors.
 *
 * Starts examples/http-hello under a low RLIMIT_NOFILE (set in the child
 * before exec), then for each shard mode and cycle:
 *  1. fill: opens keep-alive connections, each proven held by a 200
 *     response, until new ones stop being served (the server is out of fds);
 *  2. out of fds: keeps trying new connections (several at a time) for
 *     --out-seconds and measures the server's CPU use from /proc/PID/stat
 *     (utime + stime over wall time): a listener that spins on EMFILE
 *     shows up here;
 *  3. resume: closes the held connections and measures the time from that
 *     close until a new request gets a 200.
 * Bounds: CPU < --max-cpu % (5), resume < --max-resume-ms (100). --smoke
 * uses short phases and generous bounds (CPU 30 %, resume 1500 ms).
 *
 * Usage: soak-emfile [--server PATH] [--nofile N] [--shard reuseport|handoff|both]
 *                    [--cycles C] [--out-seconds S] [--max-cpu P] [--max-resume-ms M] [--smoke]
 * Exit 0 ok, 1 failed, 77 http-hello not built (meson: skipped). */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "soakutil.h"

#define MAX_HELD 4096
#define PROBES 8
#define PROBE_TIMEOUT 2.0

static const char GET_KEEPALIVE[] = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

/* Sends a GET on fd and waits for the start of a response: 1 for a 200,
 * 0 for EOF/reset/timeout/other status. */
static int request_ok(int fd, double timeout)
{
    if (soak_write_all(fd, GET_KEEPALIVE, sizeof(GET_KEEPALIVE) - 1) < 0)
        return 0;
    char buf[1024];
    size_t used = 0;
    double deadline = soak_now() + timeout;
    /* Read the whole response (headers + 13-byte body) so the connection
     * stays clean for later; http-hello answers with Content-Length. */
    while (soak_now() < deadline) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, 50) <= 0)
            continue;
        ssize_t n = recv(fd, buf + used, sizeof(buf) - 1 - used, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (n <= 0)
            return 0;
        used += (size_t)n;
        buf[used] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        if (end) {
            if (strncmp(buf, "HTTP/1.1 200", 12) != 0)
                return 0;
            char *cl = strcasestr(buf, "content-length:");
            size_t body = cl ? (size_t)strtoul(cl + 15, NULL, 10) : 0;
            if (used >= (size_t)(end + 4 - buf) + body)
                return 1;
        }
        if (used == sizeof(buf) - 1)
            return 0;
    }
    return 0;
}

typedef struct probe {
    int fd;        /* -1: free slot */
    double since;
} probe;

/* A shed connection (accepted and closed at once while out of fds) reads
 * EOF, or a reset when our request was still unread: both are the
 * listener working as designed, not failures. */
typedef struct outcomes {
    unsigned long served, shed, timeouts, refused, resets, unfinished;
} outcomes;

static void probe_finish(probe *p, outcomes *o, int kind)
{
    switch (kind) {
    case 0: o->served++; break;
    case 1: o->shed++; break;
    case 2: o->timeouts++; break;
    case 3: o->resets++; break;
    case 4: o->unfinished++; break;
    }
    close(p->fd);
    p->fd = -1;
}

/* Keeps PROBES connections trying for `seconds`: each connects, sends a
 * GET and waits for an answer (a shed connection reads EOF). */
static void probe_for(uint16_t port, double seconds, outcomes *o)
{
    probe probes[PROBES];
    for (int i = 0; i < PROBES; i++)
        probes[i].fd = -1;
    double end = soak_now() + seconds;
    while (soak_now() < end) {
        for (int i = 0; i < PROBES; i++) {
            if (probes[i].fd >= 0)
                continue;
            int fd = soak_connect(port, 0.5);
            if (fd < 0) {
                if (fd == -ECONNREFUSED)
                    o->refused++;
                else
                    o->timeouts++;
                continue;
            }
            if (soak_write_all(fd, GET_KEEPALIVE, sizeof(GET_KEEPALIVE) - 1) < 0) {
                o->resets++;
                close(fd);
                continue;
            }
            probes[i].fd = fd;
            probes[i].since = soak_now();
        }
        struct pollfd pfds[PROBES];
        for (int i = 0; i < PROBES; i++)
            pfds[i] = (struct pollfd){.fd = probes[i].fd, .events = POLLIN};
        poll(pfds, PROBES, 20);
        for (int i = 0; i < PROBES; i++) {
            if (probes[i].fd < 0)
                continue;
            if (pfds[i].revents) {
                char buf[256];
                ssize_t n = recv(probes[i].fd, buf, sizeof(buf), MSG_DONTWAIT);
                if (n > 0)
                    probe_finish(&probes[i], o, 0);
                else if (n == 0)
                    probe_finish(&probes[i], o, 1);
                else if (errno != EAGAIN && errno != EINTR)
                    probe_finish(&probes[i], o, 3);
            } else if (soak_now() - probes[i].since > PROBE_TIMEOUT) {
                probe_finish(&probes[i], o, 2);
            }
        }
        /* Pace: a new attempt every few ms is plenty of pressure. */
        soak_sleep(0.005);
    }
    for (int i = 0; i < PROBES; i++)
        if (probes[i].fd >= 0)
            probe_finish(&probes[i], o, 4); /* still waiting in the accept queue */
}

typedef struct cycle_result {
    int held;
    int server_fds;
    double cpu_pct;
    double resume_ms;
    outcomes o;
} cycle_result;

static int run_cycle(const soak_server *srv, double out_seconds, cycle_result *res)
{
    static int held[MAX_HELD];
    int nheld = 0, misses = 0;
    memset(res, 0, sizeof(*res));
    /* 1. Fill until two new connections in a row are not served. */
    while (nheld < MAX_HELD && misses < 2) {
        int fd = soak_connect(srv->port, 1.0);
        if (fd < 0) {
            misses++;
            continue;
        }
        if (request_ok(fd, 1.5)) {
            held[nheld++] = fd;
            misses = 0;
        } else {
            close(fd);
            misses++;
        }
    }
    res->held = nheld;
    if (nheld == MAX_HELD) {
        fprintf(stderr, "soak-emfile: %d connections held and the server still serves: no fd limit?\n", nheld);
        goto fail;
    }

    /* 2. Out of fds: keep knocking, measure the server's CPU. */
    res->server_fds = soak_proc_fds(srv->pid);
    double cpu0 = soak_proc_cpu(srv->pid), t0 = soak_now();
    probe_for(srv->port, out_seconds, &res->o);
    double cpu1 = soak_proc_cpu(srv->pid), t1 = soak_now();
    if (cpu0 < 0 || cpu1 < 0) {
        fprintf(stderr, "soak-emfile: cannot read /proc/%d/stat\n", (int)srv->pid);
        goto fail;
    }
    res->cpu_pct = (cpu1 - cpu0) / (t1 - t0) * 100.0;
    /* The held connections must still be served (the server did not drop them). */
    if (!request_ok(held[0], 2.0)) {
        fprintf(stderr, "soak-emfile: a held connection stopped being served while out of fds\n");
        goto fail;
    }

    /* 3. Free the fds; time until a new request gets a 200. */
    for (int i = 0; i < nheld; i++)
        close(held[i]);
    nheld = 0;
    double freed = soak_now();
    res->resume_ms = -1;
    while (soak_now() - freed < 5.0) {
        if (soak_http_get(srv->port, 2.0) == 200) {
            res->resume_ms = (soak_now() - freed) * 1000.0;
            break;
        }
    }
    if (res->resume_ms < 0) {
        fprintf(stderr, "soak-emfile: no 200 within 5 s of freeing fds\n");
        return -1;
    }
    return 0;
fail:
    for (int i = 0; i < nheld; i++)
        close(held[i]);
    return -1;
}

static void usage(void)
{
    fprintf(stderr, "usage: soak-emfile [--server PATH] [--nofile N] [--shard reuseport|handoff|both] "
                    "[--cycles C] [--out-seconds S] [--max-cpu P] [--max-resume-ms M] [--smoke]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    char server[4096] = "";
    unsigned nofile = 64, cycles = 3;
    double out_seconds = 3, max_cpu = 5, max_resume_ms = 100;
    const char *shard = "both";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--smoke")) {
            cycles = 1;
            out_seconds = 1.5;
            max_cpu = 30;
            max_resume_ms = 1500;
            continue;
        }
        if (i + 1 >= argc)
            usage();
        if (!strcmp(argv[i], "--server"))
            snprintf(server, sizeof(server), "%s", argv[++i]);
        else if (!strcmp(argv[i], "--nofile"))
            nofile = (unsigned)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--shard"))
            shard = argv[++i];
        else if (!strcmp(argv[i], "--cycles"))
            cycles = (unsigned)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--out-seconds"))
            out_seconds = atof(argv[++i]);
        else if (!strcmp(argv[i], "--max-cpu"))
            max_cpu = atof(argv[++i]);
        else if (!strcmp(argv[i], "--max-resume-ms"))
            max_resume_ms = atof(argv[++i]);
        else
            usage();
    }
    if (nofile < 16 || cycles == 0 || out_seconds <= 0)
        usage();
    if (!server[0] && soak_example_path("http-hello", server, sizeof(server)) < 0) {
        printf("soak-emfile: examples/http-hello not built: skipped\n");
        return 77;
    }
    /* We hold the server's worth of connections plus probes. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);

    const char *modes[2];
    int nmodes = 0;
    if (!strcmp(shard, "both") || !strcmp(shard, "reuseport"))
        modes[nmodes++] = "reuseport";
    if (!strcmp(shard, "both") || !strcmp(shard, "handoff"))
        modes[nmodes++] = "handoff";
    if (nmodes == 0)
        usage();

    bool ok = true;
    double worst_cpu = 0, worst_resume = 0;
    for (int m = 0; m < nmodes; m++) {
        char nofile_s[16];
        snprintf(nofile_s, sizeof(nofile_s), "%u", nofile);
        char *sargv[] = {server, "--host", "127.0.0.1", "--port", "0", "--workers", "2", "--shard",
                         (char *)modes[m], NULL};
        soak_server srv;
        int r = soak_server_start(&srv, server, sargv, nofile, 10);
        if (r < 0) {
            fprintf(stderr, "soak-emfile: cannot start %s: %s\n", server, strerror(-r));
            return 1;
        }
        for (unsigned c = 0; c < cycles; c++) {
            cycle_result res;
            r = run_cycle(&srv, out_seconds, &res);
            soak_server_drain(&srv);
            printf("%s cycle %u: nofile %u, held %d connections (server fds %d); out of fds %.1f s: "
                   "server CPU %.2f %%, attempts served %lu, shed by EOF %lu or reset %lu, timed out %lu, refused %lu, waiting at the end %lu; "
                   "resume %.1f ms after freeing\n",
                   modes[m], c + 1, nofile, res.held, res.server_fds, out_seconds, res.cpu_pct, res.o.served,
                   res.o.shed, res.o.resets, res.o.timeouts, res.o.refused, res.o.unfinished,
                   res.resume_ms);
            fflush(stdout);
            if (r < 0) {
                ok = false;
                break;
            }
            worst_cpu = res.cpu_pct > worst_cpu ? res.cpu_pct : worst_cpu;
            worst_resume = res.resume_ms > worst_resume ? res.resume_ms : worst_resume;
            if (res.cpu_pct >= max_cpu || res.resume_ms >= max_resume_ms)
                ok = false;
        }
        int status = soak_server_stop(&srv, SIGTERM, 10);
        if (status < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "soak-emfile: %s server did not exit 0 on SIGTERM (status %d)\n", modes[m], status);
            ok = false;
        }
    }
    printf("worst: server CPU %.2f %% (bound %.0f %%), resume %.1f ms (bound %.0f ms): %s\n", worst_cpu, max_cpu,
           worst_resume, max_resume_ms, ok ? "OK" : "FAILED");
    return ok ? 0 : 1;
}
