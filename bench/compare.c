/* iol-bench compare http: our http-hello against nginx and h2o, each
 * serving "Hello, World!" with the same worker count, loaded in turn by the
 * same load generator (ours, or wrk with --wrk) with interleaved repeats
 * (ours, nginx, h2o, ours, nginx, h2o, ...) so drifts of this shared
 * machine hit every server alike.
 *
 * Every server runs in its own process group and is stopped by group
 * (SIGTERM, SIGKILL after 2 s, waitpid), from the normal path, from an
 * atexit handler and from SIGINT/SIGTERM/SIGHUP, so no process outlives
 * the bench. nginx's workers are children of its master: a group kill
 * reaches them even when the master dies first. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench.h"
#include "bench/histogram.h"
#include "bench/idle.h"
#include "bench/proctree.h"

#define MAX_SERVERS 8
#define MAX_POLLERS 4
#define STOP_GRACE_NS 2000000000ull
#define READY_TIMEOUT_NS 10000000000ull

struct server {
    const char *impl;       /* JSON "impl" */
    char poller[16];        /* ioloop: $IOL_POLLER for it; "": the default */
    char label[48];         /* table row */
    char note[128];         /* how it serves the body */
    char *argv[16];
    char argbuf[16][PATH_MAX];
    int argc;
    uint16_t port;
    pid_t pid;              /* also the process group id; 0: not running */
    char cgroup[PATH_MAX];  /* --cap: its cgroup's directory; "": none */
    http_load_result *runs;
    double *cpu_ms;         /* server CPU per run (NaN: not measured) */
    double *idle_kib;       /* --idle: RSS growth per idle connection, per round */
    unsigned nruns;
};

/* What the exit paths must clean up; written only by the main thread
 * before the signal handlers could need it. */
static struct server *volatile g_servers;
static volatile int g_nservers;
static char g_tmpdir[PATH_MAX];
/* --tls: every server serves HTTPS with g_tmpdir/cert.pem and key.pem;
 * --tls --churn: with session resumption off, so each connection is a
 * full handshake. */
static bool g_tls, g_tls_full;
/* --cap: the CPU quota of each server's cgroup, in CPUs (0: none). */
static double g_cap;

/* ------------------------------------------------------------ processes */

static void server_arg(struct server *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void server_arg(struct server *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->argbuf[s->argc], sizeof s->argbuf[0], fmt, ap);
    va_end(ap);
    s->argv[s->argc] = s->argbuf[s->argc];
    s->argc++;
    s->argv[s->argc] = NULL;
}

static void kill_all_now(void)
{
    for (int i = 0; i < g_nservers; i++)
        if (g_servers[i].pid > 0)
            kill(-g_servers[i].pid, SIGKILL);
}

static void on_fatal_signal(int signo)
{
    /* Async-signal-safe: kill() only; the atexit path is not run here, so
     * the temp dir of a killed bench stays (it holds only configs). */
    kill_all_now();
    signal(signo, SIG_DFL);
    raise(signo);
}

static uint64_t now_ns(void)
{
    return bench_now_ns();
}

static void cgroup_remove(struct server *s);

static void sleep_ms(unsigned ms)
{
    nanosleep(&(struct timespec){ ms / 1000, (long)(ms % 1000) * 1000000L }, NULL);
}

static void server_stop(struct server *s)
{
    if (s->pid <= 0)
        return;
    kill(-s->pid, SIGTERM);
    uint64_t until = now_ns() + STOP_GRACE_NS;
    bool reaped = false;
    while (!reaped && now_ns() < until) {
        pid_t r = waitpid(s->pid, NULL, WNOHANG);
        if (r == s->pid || (r < 0 && errno == ECHILD))
            reaped = true;
        else
            sleep_ms(20);
    }
    /* The group too: a worker may outlive its master for a moment. */
    kill(-s->pid, SIGKILL);
    if (!reaped)
        waitpid(s->pid, NULL, 0);
    s->pid = 0;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static void cleanup_at_exit(void)
{
    for (int i = 0; i < g_nservers; i++) {
        server_stop(&g_servers[i]);
        cgroup_remove(&g_servers[i]);
    }
    if (g_tmpdir[0]) {
        nftw(g_tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
        g_tmpdir[0] = '\0';
    }
}

static int free_port(uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    close(fd);
    *port = ntohs(a.sin_port);
    return 0;
}

static bool accepts(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    bool ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

/* ------------------------------------------------------------ --cap
 *
 * Each server runs in a cgroup of its own with a CPU quota, so that on a
 * small machine the server, not the load generator beside it, is what
 * req/s measures. cgroup v1's cpu controller (cpu.cfs_quota_us and
 * cpu.cfs_period_us) where it is mounted, else v2's cpu.max (the cpu
 * controller enabled in the parent's cgroup.subtree_control). The child
 * joins its cgroup between fork and exec, so nginx's workers inherit it.
 * $IOL_BENCH_CGROUP_ROOT names another hierarchy to use (tests). */

#define CAP_PERIOD_US 100000

static int write_text(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t len = strlen(text);
    ssize_t n = write(fd, text, len);
    int err = errno;
    close(fd);
    errno = err;
    return n == (ssize_t)len ? 0 : -1;
}

static int cgroup_join(const char *dir)
{
    char path[PATH_MAX + 32], pid[32];
    snprintf(path, sizeof path, "%s/cgroup.procs", dir);
    snprintf(pid, sizeof pid, "%d\n", (int)getpid());
    return write_text(path, pid);
}

static void cgroup_remove(struct server *s)
{
    if (!s->cgroup[0])
        return;
    /* A killed group's last processes may take a moment to leave. */
    for (int i = 0; i < 50 && rmdir(s->cgroup) < 0 && errno == EBUSY; i++)
        sleep_ms(20);
    s->cgroup[0] = '\0';
}

/* Creates s's cgroup with the --cap quota. 0, or -1 with a message that
 * says why (nothing is left behind then). */
static int cgroup_create(struct server *s, int index)
{
    const char *root = getenv("IOL_BENCH_CGROUP_ROOT");
    char v1[PATH_MAX / 2], v2[PATH_MAX / 2], probe[PATH_MAX + 32], quota[64];
    snprintf(v1, sizeof v1, "%s/cpu", root ? root : "/sys/fs/cgroup");
    snprintf(probe, sizeof probe, "%s/cpu.cfs_quota_us", v1);
    bool is_v1 = access(probe, F_OK) == 0;
    if (!is_v1) {
        /* v2: the unified hierarchy at the root, or beside v1 (hybrid). */
        snprintf(v2, sizeof v2, "%s", root ? root : "/sys/fs/cgroup");
        snprintf(probe, sizeof probe, "%s/cgroup.controllers", v2);
        if (access(probe, F_OK) != 0)
            snprintf(v2, sizeof v2, "%s/unified", root ? root : "/sys/fs/cgroup");
    }
    const char *base = is_v1 ? v1 : v2;
    snprintf(s->cgroup, sizeof s->cgroup, "%s/iol-bench-%d-%d", base, (int)getpid(), index);
    if (mkdir(s->cgroup, 0755) < 0) {
        fprintf(stderr, "compare http --cap: cannot create a cgroup under %s (%s): need cgroup v1's cpu controller "
                "or v2's cpu.max, writable (root)\n", base, strerror(errno));
        s->cgroup[0] = '\0';
        return -1;
    }
    long q = lround(g_cap * CAP_PERIOD_US);
    int rc;
    if (is_v1) {
        snprintf(probe, sizeof probe, "%s/cpu.cfs_period_us", s->cgroup);
        snprintf(quota, sizeof quota, "%d", CAP_PERIOD_US);
        rc = write_text(probe, quota);
        snprintf(probe, sizeof probe, "%s/cpu.cfs_quota_us", s->cgroup);
        snprintf(quota, sizeof quota, "%ld", q);
        rc = rc < 0 ? rc : write_text(probe, quota);
    } else {
        /* The parent must hand the cpu controller down (ignored if it
         * already does; fails where it cannot). */
        snprintf(probe, sizeof probe, "%s/cgroup.subtree_control", base);
        write_text(probe, "+cpu");
        snprintf(probe, sizeof probe, "%s/cpu.max", s->cgroup);
        snprintf(quota, sizeof quota, "%ld %d", q, CAP_PERIOD_US);
        rc = write_text(probe, quota);
    }
    if (rc < 0) {
        fprintf(stderr, "compare http --cap: cannot set the CPU quota in %s (%s): need cgroup v1's cpu controller or "
                "v2's cpu.max, writable (root)\n", s->cgroup, strerror(errno));
        cgroup_remove(s);
        return -1;
    }
    return 0;
}

/* Starts the server in its own process group, output to a log in the temp
 * dir, and waits until its port accepts. 0, or -1 with a message. */
static int server_start(struct server *s)
{
    char log[PATH_MAX + 32];
    snprintf(log, sizeof log, "%s/%s.log", g_tmpdir, s->impl);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "compare http: fork: %s\n", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        setpgid(0, 0);
        /* If the bench dies without cleaning up, the server goes too. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd >= 0) {
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
        }
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, STDIN_FILENO);
        signal(SIGPIPE, SIG_DFL);
        if (s->cgroup[0] && cgroup_join(s->cgroup) < 0) {
            fprintf(stderr, "cannot join cgroup %s: %s\n", s->cgroup, strerror(errno));
            _exit(126);
        }
        if (s->poller[0])
            setenv("IOL_POLLER", s->poller, 1);
        execv(s->argv[0], s->argv);
        fprintf(stderr, "exec %s: %s\n", s->argv[0], strerror(errno));
        _exit(127);
    }
    /* Both sides set the group, so a kill right after fork reaches it. */
    setpgid(pid, pid);
    s->pid = pid;
    uint64_t until = now_ns() + READY_TIMEOUT_NS;
    while (now_ns() < until) {
        if (accepts(s->port))
            return 0;
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            s->pid = 0;
            fprintf(stderr, "compare http: %s exited before accepting (status %d); log:\n", s->label, status);
            FILE *f = fopen(log, "r");
            if (f) {
                char line[512];
                for (int n = 0; n < 10 && fgets(line, sizeof line, f); n++)
                    fprintf(stderr, "    %s", line);
                fclose(f);
            }
            return -1;
        }
        sleep_ms(20);
    }
    fprintf(stderr, "compare http: %s does not accept on port %u after 10 s\n", s->label, s->port);
    server_stop(s);
    return -1;
}

/* ------------------------------------------------------------ servers */

static bool executable(const char *path)
{
    return access(path, X_OK) == 0;
}

/* A program on $PATH or in the sbin directories (nginx lives in /usr/sbin,
 * which is not on every user's PATH). */
static bool find_program(const char *name, char *out, size_t size)
{
    const char *path = getenv("PATH");
    char buf[4096];
    snprintf(buf, sizeof buf, "%s:/usr/sbin:/sbin:/usr/local/sbin", path ? path : "/usr/bin:/bin");
    for (char *save, *dir = strtok_r(buf, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
        snprintf(out, size, "%s/%s", dir, name);
        if (executable(out))
            return true;
    }
    return false;
}

static int write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fputs(text, f);
    return fclose(f) == 0 ? 0 : -1;
}

static bool setup_ours(struct server *s, unsigned workers, const char *poller)
{
    char self[PATH_MAX], exe[PATH_MAX + 32];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n < 0)
        return false;
    self[n] = '\0';
    snprintf(exe, sizeof exe, "%s/../examples/http-hello", dirname(self));
    if (!executable(exe)) {
        fprintf(stderr, "compare http: %s not built: ioloop skipped\n", exe);
        return false;
    }
    s->impl = "ioloop";
    snprintf(s->poller, sizeof s->poller, "%s", poller ? poller : "");
    snprintf(s->label, sizeof s->label, poller ? "ioloop-%s" : "ioloop", poller ? poller : "");
    snprintf(s->note, sizeof s->note, "examples/http-hello");
    server_arg(s, "%s", exe);
    server_arg(s, "--host");
    server_arg(s, "127.0.0.1");
    server_arg(s, "--port");
    server_arg(s, "%u", s->port);
    server_arg(s, "--workers");
    server_arg(s, "%u", workers);
    if (g_tls) {
        server_arg(s, "--tls-cert");
        server_arg(s, "%s/cert.pem", g_tmpdir);
        server_arg(s, "--tls-key");
        server_arg(s, "%s/key.pem", g_tmpdir);
        if (g_tls_full)
            server_arg(s, "--tls-no-resumption");
    }
    return true;
}

/* The floor row: bench/floor_http.c, built beside iol-bench. */
static bool setup_floor(struct server *s, unsigned workers)
{
    char self[PATH_MAX], exe[PATH_MAX + 32];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n < 0)
        return false;
    self[n] = '\0';
    snprintf(exe, sizeof exe, "%s/iol-floor-http", dirname(self));
    if (!executable(exe)) {
        fprintf(stderr, "compare http: %s not built: floor skipped\n", exe);
        return false;
    }
    if (g_tls)
        return false; /* the floor is plain TCP: no TLS row */
    s->impl = "floor";
    snprintf(s->label, sizeof s->label, "floor");
    snprintf(s->note, sizeof s->note, "raw epoll: one read, one write per batch");
    server_arg(s, "%s", exe);
    server_arg(s, "--host");
    server_arg(s, "127.0.0.1");
    server_arg(s, "--port");
    server_arg(s, "%u", s->port);
    server_arg(s, "--workers");
    server_arg(s, "%u", workers);
    return true;
}

static bool setup_nginx(struct server *s, unsigned workers)
{
    char exe[PATH_MAX], conf[PATH_MAX + 32], text[6 * PATH_MAX + 512], tls[3 * PATH_MAX + 256] = "";
    if (g_tls)
        snprintf(tls, sizeof tls,
                 /* TLS 1.3 as http-hello and h2o negotiate: Debian 12's
                  * nginx 1.22 defaults to TLSv1 TLSv1.1 TLSv1.2 (1.23.4
                  * added TLSv1.3), so it ran TLS 1.2 against the others'
                  * 1.3, a different record and handshake. */
                 " ssl;\n    ssl_certificate %s/cert.pem;\n    ssl_certificate_key %s/key.pem;\n"
                 "    ssl_protocols TLSv1.2 TLSv1.3;\n"
                 "    ssl_session_tickets %s;\n    ssl_session_cache %s",
                 g_tmpdir, g_tmpdir, g_tls_full ? "off" : "on", g_tls_full ? "off" : "shared:SSL:10m");
    if (!find_program("nginx", exe, sizeof exe)) {
        fputs("compare http: nginx not installed: skipped\n", stderr);
        return false;
    }
    snprintf(conf, sizeof conf, "%s/nginx.conf", g_tmpdir);
    snprintf(text, sizeof text,
             "worker_processes %u;\n"
             "daemon off;\n"
             "master_process on;\n"
             "pid %s/nginx.pid;\n"
             "error_log %s/nginx-error.log;\n"
             /* The defaults (512 connections, 1024 fds) would reset a
              * large --connections before measuring anything. */
             "worker_rlimit_nofile 65536;\n"
             "events { worker_connections 16384; }\n"
             "http {\n"
             "  access_log off;\n"
             /* nginx closes a keep-alive connection after 1000 requests
              * by default (1.19.10+): the load generator's reconnects (a
              * TLS handshake each over HTTPS) would be charged to it
              * alone, as http-hello and h2o set no such limit. */
             "  keepalive_requests 1000000;\n"
             "  server {\n"
             "    listen 127.0.0.1:%u%s;\n"
             "    location / { default_type text/plain; return 200 \"Hello, World!\"; }\n"
             "  }\n"
             "}\n",
             workers, g_tmpdir, g_tmpdir, s->port, tls);
    if (write_file(conf, text) < 0)
        return false;
    s->impl = "nginx";
    snprintf(s->label, sizeof s->label, "nginx");
    snprintf(s->note, sizeof s->note, "return 200 Hello, World!");
    server_arg(s, "%s", exe);
    server_arg(s, "-c");
    server_arg(s, "%s", conf);
    server_arg(s, "-p");
    server_arg(s, "%s", g_tmpdir);
    server_arg(s, "-e");
    server_arg(s, "%s/nginx-error.log", g_tmpdir);
    return true;
}

static bool h2o_has_mruby(const char *exe)
{
    char cmd[PATH_MAX + 32], line[256];
    snprintf(cmd, sizeof cmd, "'%s' --version 2>&1", exe);
    FILE *p = popen(cmd, "r");
    if (!p)
        return false;
    bool yes = false;
    while (fgets(line, sizeof line, p))
        yes |= strncmp(line, "mruby: YES", 10) == 0;
    pclose(p);
    return yes;
}

static bool setup_h2o(struct server *s, unsigned workers)
{
    char exe[PATH_MAX], conf[PATH_MAX + 32], dir[PATH_MAX + 32], text[3 * PATH_MAX + 512], handler[PATH_MAX + 128];
    if (!find_program("h2o", exe, sizeof exe)) {
        fputs("compare http: h2o not installed: skipped\n", stderr);
        return false;
    }
    bool mruby = h2o_has_mruby(exe);
    if (mruby) {
        snprintf(handler, sizeof handler,
                 "        mruby.handler: |\n"
                 "          Proc.new do |env|\n"
                 "            [200, {\"content-type\" => \"text/plain\"}, [\"Hello, World!\"]]\n"
                 "          end\n");
        snprintf(s->note, sizeof s->note, "mruby.handler returning Hello, World!");
    } else {
        /* h2o started as root drops to nobody: the files must be readable. */
        snprintf(dir, sizeof dir, "%s/www", g_tmpdir);
        char index[PATH_MAX + 48];
        snprintf(index, sizeof index, "%s/index.html", dir);
        if (mkdir(dir, 0755) < 0 || write_file(index, "Hello, World!") < 0)
            return false;
        chmod(index, 0644);
        snprintf(handler, sizeof handler, "        file.dir: %s\n", dir);
        snprintf(s->note, sizeof s->note, "static file with body Hello, World! (no mruby)");
    }
    char tls[3 * PATH_MAX + 256] = "";
    if (g_tls)
        snprintf(tls, sizeof tls,
                 "  ssl:\n    certificate-file: %s/cert.pem\n    key-file: %s/key.pem\n"
                 "    minimum-version: TLSv1.2\n",
                 g_tmpdir, g_tmpdir);
    snprintf(conf, sizeof conf, "%s/h2o.conf", g_tmpdir);
    snprintf(text, sizeof text,
             "listen:\n"
             "  host: 127.0.0.1\n"
             "  port: %u\n"
             "%s"
             "%s"
             "num-threads: %u\n"
             "max-connections: 16384\n"
             "error-log: %s/h2o-error.log\n"
             "hosts:\n"
             "  \"default\":\n"
             "    paths:\n"
             "      \"/\":\n"
             "%s",
             s->port, tls, g_tls_full ? "ssl-session-resumption:\n  mode: off\n" : "", workers, g_tmpdir, handler);
    if (write_file(conf, text) < 0)
        return false;
    s->impl = "h2o";
    snprintf(s->label, sizeof s->label, mruby ? "h2o (mruby)" : "h2o (file)");
    server_arg(s, "%s", exe);
    server_arg(s, "-c");
    server_arg(s, "%s", conf);
    return true;
}

/* ------------------------------------------------------------ wrk */

static double wrk_time_us(const char *text)
{
    char *end;
    double v = strtod(text, &end);
    if (end == text)
        return NAN;
    if (!strncmp(end, "us", 2))
        return v;
    if (!strncmp(end, "ms", 2))
        return v * 1e3;
    if (!strncmp(end, "s", 1))
        return v * 1e6;
    return NAN;
}

/* One wrk run; its percentiles (50/90/99; wrk prints no 99.9) go to
 * latency_us, its socket errors to "other"/"timeout"/"bad_status". */
static int wrk_run(const char *url, unsigned conns, unsigned threads, double duration, bool churn,
                   http_load_result *out)
{
    char cmd[1024], line[512];
    snprintf(cmd, sizeof cmd, "wrk -t%u -c%u -d%.0fs --latency %s'%s' 2>&1", threads, conns, ceil(duration),
             churn ? "-H 'Connection: close' " : "", url);
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    memset(out, 0, sizeof *out);
    histogram_init(&out->latency);
    out->external_latency = true;
    for (int i = 0; i < 4; i++)
        out->latency_us[i] = NAN;
    out->seconds = duration;
    bool seen = false;
    while (fgets(line, sizeof line, p)) {
        char *t = line + strspn(line, " \t");
        unsigned long a, b, c, d;
        if (!strncmp(t, "Requests/sec:", 13)) {
            out->requests_per_sec = strtod(t + 13, NULL);
            seen = true;
        } else if (!strncmp(t, "50%", 3)) {
            out->latency_us[0] = wrk_time_us(t + 3 + strspn(t + 3, " \t"));
        } else if (!strncmp(t, "90%", 3)) {
            out->latency_us[1] = wrk_time_us(t + 3 + strspn(t + 3, " \t"));
        } else if (!strncmp(t, "99%", 3)) {
            out->latency_us[2] = wrk_time_us(t + 3 + strspn(t + 3, " \t"));
        } else if (sscanf(t, "Socket errors: connect %lu, read %lu, write %lu, timeout %lu", &a, &b, &c, &d) == 4) {
            out->errors[HTTP_ERR_REFUSED] = a;
            out->errors[HTTP_ERR_OTHER] = b + c;
            out->errors[HTTP_ERR_TIMEOUT] = d;
        } else if (sscanf(t, "Non-2xx or 3xx responses: %lu", &a) == 1) {
            out->errors[HTTP_ERR_BAD_STATUS] = a;
        } else if (sscanf(t, "%lu requests in", &a) == 1) {
            out->requests = a;
        }
    }
    int st = pclose(p);
    if (churn) /* one request per connection */
        out->connections_per_sec = out->requests_per_sec;
    return seen && st == 0 ? 0 : -1;
}

/* ------------------------------------------------------------ compare */

static void compare_usage(FILE *f)
{
    fputs("usage: iol-bench compare http [--workers N] [--connections C] [--load-workers L]\n"
          "                            [--duration S] [--repeat R] [--wrk] [--churn | --idle N] [--tls]\n"
          "                            [--poller P1,P2] [--cap CPU] [--pipeline N] [--json] [--plot F.svg]\n"
          "  Our http-hello, nginx and h2o (those installed), N workers each, on free\n"
          "  ports of 127.0.0.1, loaded in turn (interleaved repeats) by iol-bench's\n"
          "  load generator with L worker loops (default: N), or by wrk with --wrk.\n"
          "  Each run also reads the server process tree's CPU time (/proc): requests\n"
          "  (churn: connections) per server CPU-ms.\n"
          "  --churn: Connection: close, one request per connection (connections/s).\n"
          "  --tls: HTTPS, one certificate made at run time for all servers, loaded by\n"
          "  iol-bench's TLS client streams (no verification, as wrk) or wrk; with\n"
          "  --churn session resumption is off everywhere (full handshakes).\n"
          "  --idle N: no load; N keep-alive connections, one request each, held open:\n"
          "  RSS growth of the server process tree per connection (KiB); every round\n"
          "  starts the servers afresh (a reused process reads low).\n"
          "  --poller epoll,uring: one http-hello per poller ($IOL_POLLER), rows\n"
          "  ioloop-epoll, ioloop-uring; ours/theirs is always the first ioloop row's.\n"
          "  The floor row is bench/floor_http.c (iol-floor-http): one epoll thread per\n"
          "  worker, one read and one write per batch of requests; ioloop's requests\n"
          "  per server CPU-ms over the floor's is printed (JSON floor_ratio).\n"
          "  --cap CPU: each server in a cgroup with that CPU quota (v1 cpu or v2\n"
          "  cpu.max; root), so the server is the bottleneck; fails if not writable.\n"
          "  --pipeline N: N requests per write (keep-alive, our generator).\n",
          f);
    bench_usage_common(f);
}

static int parse_count(const char *s, unsigned *out)
{
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    if (!*s || *end || v == 0 || v > 100000)
        return -1;
    *out = (unsigned)v;
    return 0;
}

/* Median over the runs of (requests, or connections in churn) per ms of
 * server CPU; NaN when the CPU could not be read. */
static double per_cpu_ms(const struct server *s)
{
    double v[BENCH_MAX_REPEAT], lo, med, hi;
    for (unsigned i = 0; i < s->nruns; i++)
        v[i] = s->cpu_ms[i] > 0 ? (double)s->runs[i].requests / s->cpu_ms[i] : NAN;
    http_stats(v, s->nruns, &lo, &med, &hi);
    return med;
}

/* --idle: for each round and server in turn, the RSS growth of the server's
 * process tree while `idle` answered keep-alive connections are held.
 * Every round after the first starts the servers afresh: in one process a
 * later round reuses memory the allocator kept from the first round's
 * connections, and reads low (0.03 KiB where a fresh server takes 0.2). */
static int compare_idle(struct server *servers, int n, unsigned idle, unsigned repeat, int *fds, const bench_opts *o)
{
    FILE *table = o->json ? stderr : stdout;
    for (unsigned r = 0; r < repeat; r++) {
        for (int k = 0; k < n; k++) {
            struct server *s = &servers[k];
            proctree_usage before, after;
            if (r > 0) {
                server_stop(s);
                if (server_start(s) < 0)
                    continue;
            }
            sleep_ms(200); /* the previous round's closes are processed */
            if (proctree_read(s->pid, &before) < 0)
                continue;
            int opened = idle_open(s->port, idle, fds);
            if (opened < (int)idle) {
                fprintf(stderr, "compare http --idle: %s: %d of %u connections answered\n", s->label,
                        opened < 0 ? 0 : opened, idle);
                if (opened > 0)
                    idle_close(fds, (unsigned)opened);
                continue;
            }
            sleep_ms(300); /* lazily touched memory settles */
            int err = proctree_read(s->pid, &after);
            idle_close(fds, idle);
            if (err < 0)
                continue;
            s->idle_kib[s->nruns++] = (after.rss_kib - before.rss_kib) / idle;
            bench_progress(s->label, 0, s->idle_kib[s->nruns - 1], "KiB/conn");
        }
    }
    fprintf(table, "\ncompare http --idle  %u keep-alive connections held, one request each, %u rounds interleaved\n",
            idle, repeat);
    fprintf(table, "  %-14s %12s %10s %10s   %12s\n", "server", "KiB/conn min", "median", "max", "ours/theirs");
    double ours = NAN, lo, med, hi;
    for (int k = 0; k < n; k++)
        if (!strcmp(servers[k].impl, "ioloop") && isnan(ours))
            http_stats(servers[k].idle_kib, servers[k].nruns, &lo, &ours, &hi);
    for (int k = 0; k < n; k++) {
        struct server *s = &servers[k];
        http_stats(s->idle_kib, s->nruns, &lo, &med, &hi);
        char ratio[32] = "-";
        if (isfinite(ours / med) && med > 0)
            snprintf(ratio, sizeof ratio, "%.2fx", ours / med);
        fprintf(table, "  %-14s %12.2f %10.2f %10.2f   %12s\n", s->label, lo, med, hi, ratio);
        if (o->json) {
            char note[256];
            json_escape(note, sizeof note, s->note);
            printf("{\"bench\":\"http\",\"impl\":\"%s\",\"label\":\"%s\",\"params\":{\"mode\":\"compare-idle\","
                   "\"server_note\":\"%s\",\"idle\":%u,\"repeat\":%u},\"results\":{\"kib_per_idle_conn\":%.4g,"
                   "\"kib_per_idle_conn_min\":%.4g,\"kib_per_idle_conn_max\":%.4g}}\n",
                   s->impl, s->label, note, idle, repeat, med, lo, hi);
        }
    }
    fputs("  (ours/theirs: ioloop's KiB per connection over this server's, < 1 is ioloop smaller)\n", table);
    return 0;
}

static int compare_http(int argc, char **argv, const bench_opts *o)
{
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    /* The server and the load generator share the machine: by default
     * each gets half of it. */
    unsigned half = ncpu > 1 ? (unsigned)ncpu / 2 : 1;
    unsigned workers = o->workers > 0 ? (unsigned)o->workers : half;
    unsigned load_workers = 0, conns = 64, idle = 0, pipeline = 1;
    bool use_wrk = false, churn = false;
    const char *pollers_arg = NULL;
    double duration = o->duration > 0 ? o->duration : 3;
    unsigned repeat = o->repeat > 0 ? (unsigned)o->repeat : 1;
    if (repeat > BENCH_MAX_REPEAT)
        repeat = BENCH_MAX_REPEAT;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            compare_usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--connections") && i + 1 < argc) {
            if (parse_count(argv[++i], &conns) < 0)
                goto bad;
        } else if (!strcmp(argv[i], "--load-workers") && i + 1 < argc) {
            if (parse_count(argv[++i], &load_workers) < 0)
                goto bad;
        } else if (!strcmp(argv[i], "--wrk")) {
            use_wrk = true;
        } else if (!strcmp(argv[i], "--poller") && i + 1 < argc) {
            pollers_arg = argv[++i];
        } else if (!strcmp(argv[i], "--churn")) {
            churn = true;
        } else if (!strcmp(argv[i], "--tls")) {
            g_tls = true;
        } else if (!strcmp(argv[i], "--idle") && i + 1 < argc) {
            if (parse_count(argv[++i], &idle) < 0)
                goto bad;
        } else if (!strcmp(argv[i], "--pipeline") && i + 1 < argc) {
            if (parse_count(argv[++i], &pipeline) < 0 || pipeline > HTTP_MAX_PIPELINE)
                goto bad;
        } else if (!strcmp(argv[i], "--cap") && i + 1 < argc) {
            char *end;
            g_cap = strtod(argv[++i], &end);
            if (*end || !(g_cap >= 0.01) || g_cap > (double)(ncpu > 0 ? ncpu : 1))
                goto bad;
        } else {
            fprintf(stderr, "iol-bench compare http: unexpected argument '%s'\n", argv[i]);
            goto bad;
        }
    }
    if (churn && idle) {
        fputs("iol-bench compare http: --churn and --idle are separate measurements\n", stderr);
        goto bad;
    }
    if (pipeline > 1 && (churn || idle || use_wrk)) {
        fputs("iol-bench compare http: --pipeline is for keep-alive load from our generator (not --churn, --idle, "
              "--wrk)\n", stderr);
        goto bad;
    }
    if (!load_workers)
        load_workers = workers;
    int *idle_fds = NULL;
    if (idle) {
        long limit = idle_raise_fd_limit(); /* servers inherit it */
        if (limit < (long)idle + 64) {
            fprintf(stderr, "compare http: --idle %u needs %u fds, the limit is %ld\n", idle, idle + 64, limit);
            return 2;
        }
        idle_fds = calloc(idle, sizeof *idle_fds);
        if (!idle_fds)
            return 1;
    }
    if (g_tls && idle) {
        fputs("iol-bench compare http: --tls measures load, not --idle\n", stderr);
        goto bad;
    }
    g_tls_full = g_tls && churn;
    char wrk_path[PATH_MAX];
    if (use_wrk && !find_program("wrk", wrk_path, sizeof wrk_path)) {
        fputs("compare http: --wrk given but wrk is not installed: skipped\n", stderr);
        return 0;
    }

    static struct server servers[MAX_SERVERS];
    memset(servers, 0, sizeof servers);
    const char *tmp = getenv("TMPDIR");
    snprintf(g_tmpdir, sizeof g_tmpdir, "%s/iol-bench-http-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(g_tmpdir)) {
        fprintf(stderr, "compare http: mkdtemp: %s\n", strerror(errno));
        g_tmpdir[0] = '\0';
        return 1;
    }
    chmod(g_tmpdir, 0755); /* servers that drop root still read their files */
    if (g_tls) {
        /* One certificate for all three (P-256: the handshake cost is
         * OpenSSL's ECDSA either way); made now, removed with the dir. */
        char cmd[3 * PATH_MAX + 256];
        snprintf(cmd, sizeof cmd,
                 "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout '%s/key.pem' "
                 "-out '%s/cert.pem' -subj /CN=localhost -days 1 2>/dev/null && chmod 644 '%s/key.pem'",
                 g_tmpdir, g_tmpdir, g_tmpdir);
        if (system(cmd) != 0) {
            fputs("compare http: --tls needs the openssl CLI to make a certificate: skipped\n", stderr);
            return 0;
        }
    }
    g_servers = servers;
    g_nservers = 0;
    atexit(cleanup_at_exit);
    struct sigaction sa = { .sa_handler = on_fatal_signal };
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    /* A crash must not leave servers running either (nginx's workers
     * outlive a dead master; the death signal reaches only the master). */
    sigaction(SIGSEGV, &sa, NULL);
    sigaction(SIGBUS, &sa, NULL);
    sigaction(SIGABRT, &sa, NULL);
    sigaction(SIGFPE, &sa, NULL);

    /* Ours first (one per poller asked for), then the competitors. */
    char pollers_buf[128];
    const char *pollers[MAX_POLLERS] = { NULL };
    int npollers = 1;
    if (pollers_arg) {
        snprintf(pollers_buf, sizeof pollers_buf, "%s", pollers_arg);
        npollers = 0;
        for (char *save = NULL, *p = strtok_r(pollers_buf, ",", &save); p && npollers < MAX_POLLERS;
             p = strtok_r(NULL, ",", &save))
            pollers[npollers++] = p;
    }
    bool (*const others[])(struct server *, unsigned) = { setup_floor, setup_nginx, setup_h2o };
    int nothers = (int)(sizeof others / sizeof others[0]);
    int n = 0;
    for (int k = 0; k < npollers + nothers; k++) {
        struct server *s = &servers[n];
        memset(s, 0, sizeof *s);
        if (free_port(&s->port) < 0)
            continue;
        if (k < npollers ? !setup_ours(s, workers, pollers[k]) : !others[k - npollers](s, workers))
            continue;
        if (!bench_selected(o, s->impl, s->label))
            continue; /* --impl: e.g. only ioloop's rows, for an A/B of two builds */
        g_nservers = n + 1; /* visible to the exit paths before it runs */
        if (g_cap > 0 && cgroup_create(s, n) < 0) {
            cleanup_at_exit();
            return 1;
        }
        if (server_start(s) < 0) {
            cgroup_remove(s);
            continue;
        }
        s->runs = calloc(repeat, sizeof *s->runs);
        s->cpu_ms = calloc(repeat, sizeof *s->cpu_ms);
        s->idle_kib = calloc(repeat, sizeof *s->idle_kib);
        if (!s->runs || !s->cpu_ms || !s->idle_kib) {
            free(s->runs);
            free(s->cpu_ms);
            free(s->idle_kib);
            server_stop(s);
            continue;
        }
        n++;
    }
    g_nservers = n;
    FILE *table = o->json ? stderr : stdout;
    if (n == 0) {
        fputs("compare http: no server could be started: nothing to compare\n", table);
        cleanup_at_exit();
        return 0;
    }

    int rc = 0;
    if (idle) {
        rc = compare_idle(servers, n, idle, repeat, idle_fds, o);
        free(idle_fds);
        goto out;
    }
    for (unsigned r = 0; r < repeat && rc == 0; r++) {
        for (int k = 0; k < n; k++) {
            struct server *s = &servers[k];
            char url[64];
            snprintf(url, sizeof url, "%s://127.0.0.1:%u/", g_tls ? "https" : "http", s->port);
            http_load_result *res = &s->runs[s->nruns];
            proctree_usage before, after;
            bool cpu_ok = proctree_read(s->pid, &before) == 0;
            int err;
            if (use_wrk) {
                err = wrk_run(url, conns, load_workers, duration, churn, res);
            } else {
                /* TLS: the certificate is ours, made for none of the URLs'
                 * names, and wrk verifies nothing either. */
                http_load_config cfg = { .url = url, .connections = conns, .workers = load_workers,
                                         .duration = duration, .churn = churn, .label = s->label,
                                         .pipeline = pipeline,
                                         .tls_insecure = g_tls, .tls_no_resumption = g_tls_full };
                err = http_load_run(&cfg, res);
            }
            cpu_ok = cpu_ok && proctree_read(s->pid, &after) == 0;
            if (err < 0) {
                fprintf(stderr, "compare http: load run against %s failed\n", s->label);
                continue;
            }
            s->cpu_ms[s->nruns] = cpu_ok ? after.cpu_ms - before.cpu_ms : NAN;
            s->nruns++;
        }
    }

    /* Tables: one block per server, then the summary with ratios. */
    double ours_rps = NAN, ours_p99 = NAN, v[BENCH_MAX_REPEAT], lo, med, hi;
    for (int k = 0; k < n; k++) {
        char title[256];
        snprintf(title, sizeof title, "compare http  %s (%s)  port %u", servers[k].label, servers[k].note,
                 servers[k].port);
        http_table(table, title, servers[k].runs, servers[k].nruns, false);
    }
    fprintf(table,
            "\ncompare http%s  %u server workers, %u connections, load: %s with %u workers, %.3g s x %u interleaved\n",
            g_tls ? (g_tls_full ? " --tls (full handshakes, no resumption)" : " --tls") : "", workers, conns,
            use_wrk ? "wrk" : "iol-bench", load_workers, duration, repeat);
    if (g_cap > 0)
        fprintf(table, "  each server capped at %.3g CPU (cgroup quota)\n", g_cap);
    if (pipeline > 1)
        fprintf(table, "  %u requests per write (pipelined)\n", pipeline);
    const char *unit = churn ? "conn/s" : "req/s";
    char unit_min[24];
    snprintf(unit_min, sizeof unit_min, "%s min", unit);
    fprintf(table, "  %-14s %10s %10s %10s   %9s %9s %9s   %12s %10s   %9s %11s\n", "server", unit_min, "median",
            "max", "p99us min", "median", "max", "ours/theirs", "p99 ratio", "per CPU-ms", "ours/theirs");
    double ours_per_cpu = NAN;
    for (int k = 0; k < n; k++) {
        struct server *s = &servers[k];
        for (unsigned i = 0; i < s->nruns; i++)
            v[i] = s->runs[i].requests_per_sec;
        http_stats(v, s->nruns, &lo, &med, &hi);
        double rps = med, rps_lo = lo, rps_hi = hi;
        for (unsigned i = 0; i < s->nruns; i++)
            v[i] = http_latency_us(&s->runs[i], 2);
        http_stats(v, s->nruns, &lo, &med, &hi);
        double per_cpu = per_cpu_ms(s);
        if (!strcmp(s->impl, "ioloop") && isnan(ours_rps)) {
            ours_rps = rps;
            ours_p99 = med;
            ours_per_cpu = per_cpu;
        }
        char ratio[32] = "-", p99_ratio[32] = "-";
        if (isfinite(ours_rps / rps))
            snprintf(ratio, sizeof ratio, "%.2fx", ours_rps / rps);
        if (isfinite(med / ours_p99))
            snprintf(p99_ratio, sizeof p99_ratio, "%.2fx", med / ours_p99);
        char p99[3][24];
        const double p99v[3] = { lo, med, hi };
        for (int i = 0; i < 3; i++) /* no replies measured: no percentile */
            snprintf(p99[i], sizeof p99[i], isnan(p99v[i]) ? "-" : "%.0f", p99v[i]);
        char cpu_ratio[32] = "-";
        if (isfinite(ours_per_cpu / per_cpu))
            snprintf(cpu_ratio, sizeof cpu_ratio, "%.2fx", ours_per_cpu / per_cpu);
        fprintf(table, "  %-14s %10.0f %10.0f %10.0f   %9s %9s %9s   %12s %10s   %9.1f %11s\n", s->label, rps_lo,
                rps, rps_hi, p99[0], p99[1], p99[2], ratio, p99_ratio, per_cpu, cpu_ratio);
    }
    /* The floor: ours per CPU over the raw server's, each ioloop row. */
    double floor_per_cpu = NAN;
    for (int k = 0; k < n; k++)
        if (!strcmp(servers[k].impl, "floor"))
            floor_per_cpu = per_cpu_ms(&servers[k]);
    for (int k = 0; k < n && isfinite(floor_per_cpu); k++) {
        if (strcmp(servers[k].impl, "ioloop") != 0)
            continue;
        double ratio = per_cpu_ms(&servers[k]) / floor_per_cpu;
        double target = pipeline > 1 ? 0.9 : 0.95;
        fprintf(table, "  %s per server CPU-ms over the floor's: %.2fx  (target >= %.2gx%s)  %s\n", servers[k].label,
                ratio, target, churn ? ", set for keep-alive" : "", ratio >= target ? "met" : "not met");
    }
    fprintf(table,
            "  (ours/theirs: %s of ioloop over this server's, > 1 is ioloop faster; p99 ratio: this server's\n"
            "   p99 over ioloop's, > 1 is ioloop lower; per CPU-ms: %s per ms of server CPU, median\n"
            "   of the runs, > 1 ratio is ioloop cheaper)\n",
            unit, churn ? "connections" : "requests");
    fflush(table);

    if (o->json) {
        for (int k = 0; k < n; k++) {
            struct server *s = &servers[k];
            char params[1024], extra[256], note[256];
            json_escape(note, sizeof note, s->note);
            snprintf(params, sizeof params,
                     "{\"mode\":\"compare\",\"server\":\"%s\",\"server_note\":\"%s\",\"workers\":%u,"
                     "\"connections\":%u,\"load_generator\":\"%s\",\"load_workers\":%u,\"duration\":%g,"
                     "\"repeat\":%u,\"churn\":%s,\"tls\":%s,\"cap\":%g,\"pipeline\":%u}",
                     s->label, note, workers, conns,
                     use_wrk ? "wrk" : "iol-bench", load_workers, duration, repeat, churn ? "true" : "false",
                     g_tls ? "true" : "false", g_cap, pipeline);
            for (unsigned i = 0; i < s->nruns; i++)
                v[i] = s->runs[i].requests_per_sec;
            http_stats(v, s->nruns, &lo, &med, &hi);
            size_t used = 0;
            extra[0] = '\0';
            if (isfinite(ours_rps) && med > 0)
                used += (size_t)snprintf(extra, sizeof extra, "\"ratio_ours_over_this\":%.4g,", ours_rps / med);
            used += (size_t)snprintf(extra + used, sizeof extra - used, "\"%s\":%.4g",
                                     churn ? "connections_per_cpu_ms" : "requests_per_cpu_ms", per_cpu_ms(s));
            if (!strcmp(s->impl, "ioloop") && isfinite(floor_per_cpu) && used < sizeof extra)
                snprintf(extra + used, sizeof extra - used, ",\"floor_ratio\":%.4g", per_cpu_ms(s) / floor_per_cpu);
            http_json_line(stdout, s->impl, s->label, params, s->runs, s->nruns, churn, extra);
        }
    }
    if (o->plot) {
        /* Rate and rate per server CPU-ms side by side, then p99. */
        static const bench_fig_spec figs[2][3] = {
            { { "requests_per_sec", "requests/s", true, false },
              { "requests_per_cpu_ms", "requests per server CPU-ms", true, false },
              { "latency_p99_us", "p99 latency (us)", true, true } },
            { { "connections_per_sec", "connections/s", true, false },
              { "connections_per_cpu_ms", "connections per server CPU-ms", true, false },
              { "latency_p99_us", "p99 latency (us)", true, true } },
        };
        static bench_report report;
        bench_report_init(&report, "http", figs[churn], 3);
        snprintf(report.title, sizeof report.title, "compare http N=%u C=%u%s", workers, conns,
                 g_cap > 0 ? " capped" : "");
        for (int k = 0; k < n; k++) {
            const struct server *s = &servers[k];
            int row = bench_report_impl(&report, s->impl, s->label);
            for (unsigned i = 0; i < s->nruns; i++) {
                bench_report_add(&report, row, 0, s->runs[i].requests_per_sec);
                bench_report_add(&report, row, 1,
                                 s->cpu_ms[i] > 0 ? (double)s->runs[i].requests / s->cpu_ms[i] : NAN);
                bench_report_add(&report, row, 2, http_latency_us(&s->runs[i], 2));
            }
        }
        bench_report *rs[] = { &report };
        if (bench_plot(o, rs, 1) < 0)
            rc = 1;
    }

out:
    cleanup_at_exit();
    for (int k = 0; k < n; k++) {
        free(servers[k].runs);
        free(servers[k].cpu_ms);
        free(servers[k].idle_kib);
    }
    g_nservers = 0;
    return rc;
bad:
    compare_usage(stderr);
    return 2;
}

/* main.c runs `compare handoff|pingpong|timers` itself and hands the rest
 * here; argv[0] is "compare", argv[1] what to compare. */
int bench_compare(int argc, char **argv, const bench_opts *o)
{
    if (argc >= 2 && !strcmp(argv[1], "http"))
        return compare_http(argc, argv, o);
    fprintf(stderr, "iol-bench compare: unknown comparison '%s' (http|handoff|pingpong|timers)\n",
            argc >= 2 ? argv[1] : "");
    return 2;
}
