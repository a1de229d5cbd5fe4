/* Smoke test of iol-bench: every subcommand with tiny sizes and --json
 * exits 0 and prints only BENCH.md JSON lines; --plot writes an SVG; and
 * our load generator agrees with wrk on the same server. Benchmarks never
 * fail the suite on speed: only the wrk agreement compares figures, with a
 * tolerance wide enough for a shared 2-vCPU machine. Subcommands whose
 * competitors are missing skip themselves inside the tool. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

static char bench_path[PATH_MAX + 32];
static char build_dir[PATH_MAX];

/* The binaries sit next to ours in the build tree: tests/../bench. */
static void find_binaries(void)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    ck_assert_int_gt(n, 0);
    self[n] = '\0';
    snprintf(build_dir, sizeof build_dir, "%s/..", dirname(self));
    snprintf(bench_path, sizeof bench_path, "%s/bench/iol-bench", build_dir);
}

static bool have_program(const char *name)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "PATH=\"$PATH:/usr/sbin:/sbin\" command -v %s >/dev/null 2>&1", name);
    return system(cmd) == 0;
}

/* Runs iol-bench with args; stdout goes to out_path. Returns the exit
 * status (or -1). stderr (table, progress) is kept in a log for failures. */
static char tmpdir[PATH_MAX];

static int run_bench(const char *args, const char *out_path)
{
    char cmd[4 * PATH_MAX];
    int n = snprintf(cmd, sizeof cmd, "TMPDIR='%s' '%s' %s >'%s' 2>'%s.err'", tmpdir, bench_path, args, out_path,
                     out_path);
    ck_assert(n > 0 && (size_t)n < sizeof cmd); /* -O3 proves no bound on args: check it */
    int st = system(cmd);
    if (st == -1 || !WIFEXITED(st))
        return -1;
    return WEXITSTATUS(st);
}

static void dump_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    char line[1024];
    while (fgets(line, sizeof line, f))
        fprintf(stderr, "    %s", line);
    fclose(f);
}

/* Every line parses as JSON and carries the BENCH.md fields. Returns the
 * number of lines, -1 if any is wrong. */
static int check_json_lines(const char *path)
{
    char cmd[PATH_MAX + 512];
    snprintf(cmd, sizeof cmd,
             "python3 -c '\n"
             "import json, sys\n"
             "n = 0\n"
             "for line in open(sys.argv[1]):\n"
             "    o = json.loads(line)\n"
             "    for k in (\"bench\", \"impl\", \"params\", \"machine\", \"results\"):\n"
             "        assert k in o, (k, line)\n"
             "    assert isinstance(o[\"params\"], dict) and isinstance(o[\"results\"], dict)\n"
             "    n += 1\n"
             "print(n)\n"
             "' '%s'",
             path);
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    int n = -1;
    if (fscanf(p, "%d", &n) != 1)
        n = -1;
    int st = pclose(p);
    return st == 0 ? n : -1;
}

static bool file_has(const char *path, const char *text);

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}


static void make_tmpdir(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/iol-test-bench-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void remove_tmpdir(void)
{
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
}

/* Runs one smoke command and checks exit 0 and the JSON lines. */
static int smoke(const char *args)
{
    char out[PATH_MAX + 16], err[PATH_MAX + 32];
    snprintf(out, sizeof out, "%s/out.json", tmpdir);
    int rc = run_bench(args, out);
    if (rc != 0) {
        fprintf(stderr, "iol-bench %s: exit %d; stderr:\n", args, rc);
        snprintf(err, sizeof err, "%s.err", out);
        dump_file(err);
    }
    ck_assert_msg(rc == 0, "iol-bench %s exited %d", args, rc);
    int n = check_json_lines(out);
    if (n < 0)
        dump_file(out);
    ck_assert_msg(n >= 0, "iol-bench %s: stdout is not BENCH.md JSON lines", args);
    return n;
}

/* ------------------------------------------------ a tiny HTTP server */

/* A thread per connection answering every request with "Hello, World!":
 * enough for the smoke runs of `http` without depending on other
 * programs. Connection: close in a request closes after the reply. */
static void *serve_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[4096];
    size_t len = 0;
    static const char reply[] = "HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n\r\n"
                                "Hello, World!";
    static const char reply_close[] = "HTTP/1.1 200 OK\r\nContent-Length: 13\r\nConnection: close\r\n\r\n"
                                      "Hello, World!";
    for (;;) {
        ssize_t n = read(fd, buf + len, sizeof buf - len - 1);
        if (n <= 0)
            break;
        len += (size_t)n;
        buf[len] = '\0';
        char *end;
        bool closing = false;
        while ((end = strstr(buf, "\r\n\r\n"))) {
            closing = strcasestr(buf, "Connection: close") && strcasestr(buf, "Connection: close") < end;
            const char *r = closing ? reply_close : reply;
            if (write(fd, r, strlen(r)) < 0)
                closing = true;
            size_t used = (size_t)(end + 4 - buf);
            memmove(buf, buf + used, len - used + 1);
            len -= used;
            if (closing)
                break;
        }
        if (closing || len == sizeof buf - 1)
            break;
    }
    close(fd);
    return NULL;
}

static void *accept_loop(void *arg)
{
    int lfd = (int)(intptr_t)arg;
    for (;;) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE)
                continue;
            return NULL;
        }
        pthread_t t;
        if (pthread_create(&t, NULL, serve_conn, (void *)(intptr_t)fd) != 0)
            close(fd);
        else
            pthread_detach(t);
    }
}

/* Starts the server; returns its port. Lives until the test process ends
 * (each test runs in its own forked process). */
static unsigned start_tiny_server(void)
{
    signal(SIGPIPE, SIG_IGN);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(lfd, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t alen = sizeof a;
    ck_assert_int_eq(bind(lfd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(listen(lfd, 1024), 0);
    ck_assert_int_eq(getsockname(lfd, (struct sockaddr *)&a, &alen), 0);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, accept_loop, (void *)(intptr_t)lfd), 0);
    pthread_detach(t);
    return ntohs(a.sin_port);
}

/* ------------------------------------------------ tests */

static void setup(void)
{
    find_binaries();
    make_tmpdir();
}

static void teardown(void)
{
    remove_tmpdir();
}

#define REQUIRE_BENCH()                                                                                      \
    do {                                                                                                     \
        if (access(bench_path, X_OK) != 0) {                                                                 \
            fprintf(stderr, "skip: %s not built\n", bench_path);                                             \
            return;                                                                                          \
        }                                                                                                    \
    } while (0)

START_TEST(handoff_smoke)
{
    REQUIRE_BENCH();
    ck_assert_int_gt(smoke("handoff --producers 1 --count 20000 --duration 1 --repeat 1 --json"), 0);
}
END_TEST

START_TEST(pingpong_smoke)
{
    REQUIRE_BENCH();
    ck_assert_int_gt(smoke("pingpong --count 2000 --duration 1 --repeat 1 --json"), 0);
}
END_TEST

#ifdef IOL_HAVE_URING
/* --poller: one ioloop row per poller, interleaved with the others. */
START_TEST(poller_rows_smoke)
{
    REQUIRE_BENCH();
    ck_assert_int_eq(smoke("pingpong --count 500 --repeat 1 --poller epoll,uring --impl ioloop-epoll,ioloop-uring "
                           "--json"),
                     2);
    ck_assert_int_eq(smoke("handoff --producers 1 --count 2000 --repeat 1 --poller epoll,uring --spin-us 0,-1 "
                           "--impl ioloop --json"),
                     4);
}
END_TEST
#endif

START_TEST(wakecost_smoke)
{
    REQUIRE_BENCH();
    /* Two gaps x (two ioloop settings, libuv, libevent). */
    ck_assert_int_eq(smoke("wakecost --count 300 --gaps 0,100 --spin-us 0,-1 --repeat 1 --json"), 8);
}
END_TEST

START_TEST(timers_smoke)
{
    REQUIRE_BENCH();
    ck_assert_int_gt(smoke("timers --count 20000 --duration 1 --repeat 1 --json"), 0);
    /* Both shapes (issue 26), named in the params. */
    ck_assert_int_eq(smoke("timers --shape ascending --count 20000 --duration 1 --repeat 1 --json"), 3);
    char out[PATH_MAX + 16];
    snprintf(out, sizeof out, "%s/out.json", tmpdir);
    ck_assert(file_has(out, "\"shape\":\"ascending\""));
    ck_assert_int_eq(smoke("timers --shape random --count 20000 --duration 1 --repeat 1 --json"), 3);
    ck_assert(file_has(out, "\"shape\":\"random\""));
    ck_assert_int_eq(run_bench("timers --shape sideways --count 2000 --repeat 1", out), 2);
}
END_TEST

/* iol-bench-shared: the same bench linked against libioloop.so. */
START_TEST(shared_build_smoke)
{
    REQUIRE_BENCH();
    char shared[sizeof bench_path + 16], cmd[4 * PATH_MAX];
    snprintf(shared, sizeof shared, "%s-shared", bench_path);
    ck_assert_msg(access(shared, X_OK) == 0, "%s not built", shared);
    snprintf(cmd, sizeof cmd, "ldd '%s' | grep -q libioloop.so", shared);
    ck_assert_int_eq(system(cmd), 0);
    int n = snprintf(cmd, sizeof cmd, "'%s' timers --shape ascending --count 20000 --repeat 1 --json >'%s/shared.json' 2>/dev/null",
                     shared, tmpdir);
    ck_assert(n > 0 && (size_t)n < sizeof cmd);
    ck_assert_int_eq(system(cmd), 0);
    char out[PATH_MAX + 16];
    snprintf(out, sizeof out, "%s/shared.json", tmpdir);
    ck_assert_int_eq(check_json_lines(out), 3);
}
END_TEST

START_TEST(udp_smoke)
{
    REQUIRE_BENCH();
    /* Echo: ioloop, libuv, floor; bulk: GSO and sendmmsg. */
    ck_assert_int_eq(smoke("udp --duration 1 --repeat 1 --gso --json"), 5);
    ck_assert_int_eq(smoke("udp --size 0 --batch 1 --duration 1 --repeat 1 --impl ioloop --json"), 1);
}
END_TEST

START_TEST(compare_smoke)
{
    REQUIRE_BENCH();
    smoke("compare handoff --producers 1 --count 20000 --duration 1 --repeat 1 --json");
    smoke("compare pingpong --count 2000 --duration 1 --repeat 1 --json");
    smoke("compare timers --count 20000 --duration 1 --repeat 1 --json");
}
END_TEST

START_TEST(http_keepalive_and_churn)
{
    REQUIRE_BENCH();
    unsigned port = start_tiny_server();
    char args[256];
    snprintf(args, sizeof args, "http --connections 4 --workers 2 --duration 1 --repeat 1 --json http://127.0.0.1:%u/",
             port);
    ck_assert_int_eq(smoke(args), 1);
    snprintf(args, sizeof args,
             "http --connections 4 --workers 1 --duration 1 --repeat 1 --churn --json http://127.0.0.1:%u/hello", port);
    ck_assert_int_eq(smoke(args), 1);

    /* The figures are there and say requests were made without errors. */
    char out[PATH_MAX + 16], cmd[PATH_MAX + 512];
    snprintf(out, sizeof out, "%s/out.json", tmpdir);
    snprintf(cmd, sizeof cmd,
             "python3 -c 'import json,sys; r=json.loads(open(sys.argv[1]).readline())[\"results\"]; "
             "assert r[\"requests_per_sec\"] > 0 and r[\"connections_per_sec\"] > 0, r; "
             "assert set(r[\"latency_us\"]) == {\"p50\",\"p90\",\"p99\",\"p999\"}, r; "
             "assert r[\"requests_per_sec_min\"] <= r[\"requests_per_sec\"] <= r[\"requests_per_sec_max\"]; "
             "assert sum(r[\"errors\"].values()) == 0, r[\"errors\"]' '%s'",
             out);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

START_TEST(http_refused_is_an_error_kind)
{
    REQUIRE_BENCH();
    /* A port nobody listens on: the run still completes, exit 0, and the
     * refusals are counted. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t alen = sizeof a;
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
    char args[256], out[PATH_MAX + 16], cmd[PATH_MAX + 256];
    snprintf(args, sizeof args, "http --connections 2 --workers 1 --duration 1 --repeat 1 --json http://127.0.0.1:%u/",
             ntohs(a.sin_port));
    ck_assert_int_eq(smoke(args), 1);
    close(fd);
    snprintf(out, sizeof out, "%s/out.json", tmpdir);
    snprintf(cmd, sizeof cmd,
             "python3 -c 'import json,sys; r=json.loads(open(sys.argv[1]).readline())[\"results\"]; "
             "assert r[\"errors\"][\"connect_refused\"] > 0 and r[\"requests_per_sec\"] == 0, r' '%s'",
             out);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

START_TEST(http_bad_arguments)
{
    REQUIRE_BENCH();
    char out[PATH_MAX + 16];
    snprintf(out, sizeof out, "%s/out.txt", tmpdir);
    ck_assert_int_eq(run_bench("http --duration 1 --repeat 1", out), 2);              /* no URL */
    ck_assert_int_eq(run_bench("http --duration 1 ftp://x/", out), 2);                /* not http */
    ck_assert_int_eq(run_bench("http --connections 0 http://127.0.0.1:1/", out), 2); /* no connections */
    ck_assert_int_eq(run_bench("http --help", out), 0);
    ck_assert_int_eq(run_bench("compare http --help", out), 0);
}
END_TEST

START_TEST(plot_writes_svg)
{
    REQUIRE_BENCH();
    if (!have_program("gnuplot")) {
        fprintf(stderr, "skip: gnuplot not installed\n");
        return;
    }
    unsigned port = start_tiny_server();
    char args[PATH_MAX + 256], svg[PATH_MAX + 16];
    snprintf(svg, sizeof svg, "%s/http.svg", tmpdir);
    snprintf(args, sizeof args,
             "http --connections 2 --workers 1 --duration 1 --repeat 1 --json --plot '%s' http://127.0.0.1:%u/", svg,
             port);
    smoke(args);
    ck_assert_int_gt(file_size(svg), 100);
    snprintf(svg, sizeof svg, "%s/timers.svg", tmpdir);
    snprintf(args, sizeof args, "timers --count 20000 --repeat 1 --json --plot '%s'", svg);
    smoke(args);
    ck_assert_int_gt(file_size(svg), 100);
}
END_TEST

/* Counts processes whose command line mentions our temp config dirs. */
/* Servers whose command line names a compare temp dir under ours: the
 * runs below set TMPDIR to tmpdir, so another bench running on the same
 * machine (a demo, a second test run) is not counted. */
static int leftover_servers(void)
{
    char cmd[PATH_MAX + 64];
    /* The bracket keeps the pattern from matching the shell running pgrep. */
    snprintf(cmd, sizeof cmd, "pgrep -f -c '%s/iol-bench-htt[p]-' 2>/dev/null", tmpdir);
    FILE *p = popen(cmd, "r");
    if (!p)
        return 0;
    int n = 0;
    if (fscanf(p, "%d", &n) != 1)
        n = 0;
    pclose(p);
    return n;
}

START_TEST(compare_http_smoke)
{
    REQUIRE_BENCH();
    char args[PATH_MAX + 256], svg[PATH_MAX + 16];
    snprintf(svg, sizeof svg, "%s/compare.svg", tmpdir);
    snprintf(args, sizeof args, "compare http --workers 1 --connections 8 --duration 1 --repeat 1 --json --plot '%s'",
             svg);
    int n = smoke(args);
    /* Servers that are not installed are skipped by the tool; those that
     * ran each gave a line and the plot. */
    if (n > 0 && have_program("gnuplot"))
        ck_assert_int_gt(file_size(svg), 100);
    ck_assert_int_eq(leftover_servers(), 0);
}
END_TEST

/* The floor row, --pipeline and --cap (issue 26). The cap needs a
 * writable cgroup hierarchy: where there is one the run succeeds, where
 * there is none it fails with a message and leaves nothing running; a
 * hierarchy that is not one ($IOL_BENCH_CGROUP_ROOT) always fails so. */
static bool file_has(const char *path, const char *text)
{
    char cmd[PATH_MAX + 256];
    snprintf(cmd, sizeof cmd, "grep -q -F -- '%s' '%s'", text, path);
    return system(cmd) == 0;
}

START_TEST(compare_http_floor_pipeline_cap)
{
    REQUIRE_BENCH();
    char out[PATH_MAX + 16], err[PATH_MAX + 32], args[PATH_MAX + 256];
    snprintf(out, sizeof out, "%s/floor.json", tmpdir);
    snprintf(err, sizeof err, "%s.err", out);

    /* The floor row and ioloop's ratio to it, pipelined. */
    smoke("compare http --impl ioloop,floor --workers 1 --connections 4 --pipeline 4 --duration 1 --repeat 1 --json");
    snprintf(out, sizeof out, "%s/out.json", tmpdir);
    ck_assert(file_has(out, "\"impl\":\"floor\""));
    ck_assert(file_has(out, "\"pipeline\":4"));
    ck_assert(file_has(out, "\"floor_ratio\":"));
    ck_assert_int_eq(leftover_servers(), 0);

    /* --cap where this machine allows it, or a clean failure. */
    snprintf(out, sizeof out, "%s/cap.json", tmpdir);
    snprintf(err, sizeof err, "%s.err", out);
    int rc = run_bench("compare http --impl ioloop,floor --workers 1 --connections 4 --cap 0.5 --duration 1 "
                       "--repeat 1 --json", out);
    if (rc == 0) {
        ck_assert(file_has(out, "\"cap\":0.5"));
    } else {
        ck_assert_int_eq(rc, 1);
        ck_assert(file_has(err, "--cap: cannot"));
    }
    ck_assert_int_eq(leftover_servers(), 0);

    /* A hierarchy that is not a cgroup one: a clean failure, always. */
    snprintf(args, sizeof args,
             "compare http --impl ioloop,floor --workers 1 --connections 4 --cap 0.5 --duration 1 --repeat 1");
    char cmd[4 * PATH_MAX];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/fakecg/cpu' && touch '%s/fakecg/cpu/cpu.cfs_quota_us'", tmpdir, tmpdir);
    ck_assert_int_eq(system(cmd), 0);
    int n = snprintf(cmd, sizeof cmd, "IOL_BENCH_CGROUP_ROOT='%s/fakecg' TMPDIR='%s' '%s' %s >'%s' 2>'%s'", tmpdir,
                     tmpdir, bench_path, args, out, err);
    ck_assert(n > 0 && (size_t)n < sizeof cmd);
    int st = system(cmd);
    ck_assert(WIFEXITED(st));
    ck_assert_int_eq(WEXITSTATUS(st), 1);
    ck_assert(file_has(err, "--cap: cannot set the CPU quota"));
    ck_assert_int_eq(leftover_servers(), 0);
    snprintf(cmd, sizeof cmd, "ls '%s/fakecg/cpu' | grep -q iol-bench", tmpdir);
    ck_assert_int_ne(system(cmd), 0); /* its cgroup directory was removed */

    /* Bad combinations. */
    ck_assert_int_eq(run_bench("compare http --churn --pipeline 4 --duration 1 --repeat 1", out), 2);
    ck_assert_int_eq(run_bench("compare http --cap 0 --duration 1 --repeat 1", out), 2);
    ck_assert_int_eq(run_bench("compare http --pipeline 65 --duration 1 --repeat 1", out), 2);
    ck_assert_int_eq(run_bench("http --churn --pipeline 2 http://127.0.0.1:1/", out), 2);
}
END_TEST

/* --------------------------------------------- agreement with wrk */

/* http-hello on port; with cert and key it serves HTTPS. */
static pid_t start_server_tls(const char *exe, unsigned port, const char *cert, const char *key, char *url,
                              size_t url_size)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        char p[16];
        snprintf(p, sizeof p, "%u", port);
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0) {
            dup2(devnull, STDOUT_FILENO);
            dup2(devnull, STDERR_FILENO);
        }
        if (cert)
            execl(exe, exe, "--host", "127.0.0.1", "--port", p, "--workers", "1", "--tls-cert", cert, "--tls-key", key,
                  (char *)NULL);
        else
            execl(exe, exe, "--host", "127.0.0.1", "--port", p, "--workers", "1", (char *)NULL);
        _exit(127);
    }
    snprintf(url, url_size, "%s://127.0.0.1:%u/", cert ? "https" : "http", port);
    /* Wait until it accepts. */
    for (int i = 0; i < 500; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        int ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
        close(fd);
        if (ok)
            return pid;
        if (waitpid(pid, NULL, WNOHANG) == pid)
            return -1;
        usleep(20000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

static pid_t start_server(const char *exe, unsigned port, char *url, size_t url_size)
{
    return start_server_tls(exe, port, NULL, NULL, url, url_size);
}

static unsigned pick_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t alen = sizeof a;
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static double wrk_rps(const char *url)
{
    char cmd[512], line[256];
    snprintf(cmd, sizeof cmd, "wrk -t1 -c1 -d2s '%s' 2>&1", url);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    double rps = -1;
    while (fgets(line, sizeof line, p))
        if (sscanf(line, "Requests/sec: %lf", &rps) == 1)
            break;
    while (fgets(line, sizeof line, p)) {
    }
    pclose(p);
    return rps;
}

static double ours_rps(const char *url)
{
    char args[512], out[PATH_MAX + 16], cmd[PATH_MAX + 256];
    snprintf(out, sizeof out, "%s/agree.json", tmpdir);
    snprintf(args, sizeof args, "http --connections 1 --workers 1 --duration 2 --repeat 1 --json '%s'", url);
    ck_assert_int_eq(run_bench(args, out), 0);
    snprintf(cmd, sizeof cmd,
             "python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())"
             "[\"results\"][\"requests_per_sec\"])' '%s'",
             out);
    FILE *p = popen(cmd, "r");
    double rps = -1;
    if (fscanf(p, "%lf", &rps) != 1)
        rps = -1;
    pclose(p);
    return rps;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(const double *v, int n)
{
    double s[16];
    memcpy(s, v, (size_t)n * sizeof *v);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

START_TEST(agrees_with_wrk)
{
    REQUIRE_BENCH();
    char hello[PATH_MAX + 32], url[64];
    snprintf(hello, sizeof hello, "%s/examples/http-hello", build_dir);
    if (!have_program("wrk") || access(hello, X_OK) != 0) {
        fprintf(stderr, "skip: wrk or %s missing\n", hello);
        return;
    }
    pid_t server = start_server(hello, pick_port(), url, sizeof url);
    ck_assert_msg(server > 0, "http-hello did not start");
    /* Interleaved pairs (wrk, then ours), compared by the median of the
     * pairs' ratios: the two runs of a pair see the same machine, while
     * the machine drifts by half between pairs. Both tools count right
     * (checked against a server's access log), but with 2 vCPUs the client
     * shares the machine with the server, so with many connections a
     * client that costs less per request leaves the server more CPU (ours
     * reads up to 35 % above wrk there). One connection makes the run
     * latency-bound, where the tools agree within ~10 % (docs/benchmarks.md);
     * the tolerance stays wide for sanitizer builds, whose client is
     * slower than wrk. A round that disagrees earns more pairs (up to 8),
     * and a load generator that really miscounts disagrees every time. */
    double w[8], o[8], r[8], ratio = 0;
    int n = 0;
    while (n < 8) {
        for (int k = 0; k < 2; k++, n++) {
            w[n] = wrk_rps(url);
            o[n] = ours_rps(url);
            ck_assert(w[n] > 0 && o[n] > 0);
            r[n] = o[n] / w[n];
        }
        ratio = median(r, n);
        fprintf(stderr, "wrk agreement after %d pairs: medians wrk %.0f, iol-bench %.0f req/s; median ratio %.3f\n", n,
                median(w, n), median(o, n), ratio);
        if (ratio > 0.65 && ratio < 1.35)
            break;
    }
    kill(server, SIGTERM);
    waitpid(server, NULL, 0);
    ck_assert_msg(ratio > 0.65 && ratio < 1.35, "iol-bench vs wrk req/s: median ratio %.2f outside +-35%%", ratio);
}
END_TEST

#ifdef IOL_HAVE_TLS
/* ------------------------------------------------------- https:// */

/* results of the first JSON line of out.json satisfy the Python
 * expression cond (r: results, p: params). */
static void check_results(const char *cond)
{
    char out[PATH_MAX + 16], cmd[PATH_MAX + 1024];
    snprintf(out, sizeof out, "%s/out.json", tmpdir);
    snprintf(cmd, sizeof cmd,
             "python3 -c 'import json,sys; o=json.loads(open(sys.argv[1]).readline()); r=o[\"results\"]; "
             "p=o[\"params\"]; assert %s, (r, p)' '%s'",
             cond, out);
    ck_assert_msg(system(cmd) == 0, "results fail %s", cond);
}

/* iol-bench http loads https:// through our TLS client streams, against
 * http-hello serving HTTPS with testutil's localhost certificate (removed
 * at the test's exit): verified with --ca (by IP and by name), not verified with
 * --insecure, full handshakes on churn with --tls-no-resumption; an
 * untrusted certificate is an error kind, not a crash or a hang. */
START_TEST(https_through_our_tls_client)
{
    REQUIRE_BENCH();
    char hello[PATH_MAX + 32];
    snprintf(hello, sizeof hello, "%s/examples/http-hello", build_dir);
    if (!have_program("openssl") || access(hello, X_OK) != 0) {
        fprintf(stderr, "skip: openssl or %s missing\n", hello);
        return;
    }
    const char *cert = iol_test_localhost_cert(), *key = iol_test_localhost_key();
    ck_assert_ptr_nonnull(cert);
    char url[64], args[PATH_MAX + 256];
    unsigned port = pick_port();
    pid_t server = start_server_tls(hello, port, cert, key, url, sizeof url);
    ck_assert_msg(server > 0, "http-hello --tls-cert did not start");

    snprintf(args, sizeof args, "http --connections 4 --workers 2 --duration 1 --repeat 1 --json --ca '%s' %s", cert,
             url);
    ck_assert_int_eq(smoke(args), 1);
    check_results("r[\"requests\"] > 0 and sum(r[\"errors\"].values()) == 0 and p[\"tls\"] and p[\"tls_verify\"]");

    snprintf(args, sizeof args,
             "http --connections 4 --workers 1 --duration 1 --repeat 1 --churn --tls-no-resumption --json --ca '%s' "
             "https://localhost:%u/",
             cert, port);
    ck_assert_int_eq(smoke(args), 1);
    check_results("r[\"connections_per_sec\"] > 0 and sum(r[\"errors\"].values()) == 0 and "
                  "not p[\"tls_resumption\"]");

    snprintf(args, sizeof args, "http --connections 2 --workers 1 --duration 1 --repeat 1 --churn --insecure --json %s",
             url);
    ck_assert_int_eq(smoke(args), 1);
    check_results("r[\"connections_per_sec\"] > 0 and sum(r[\"errors\"].values()) == 0 and not p[\"tls_verify\"]");

    /* The system's trust store does not know our certificate. */
    snprintf(args, sizeof args, "http --connections 2 --workers 1 --duration 1 --repeat 1 --json %s", url);
    ck_assert_int_eq(smoke(args), 1);
    check_results("r[\"requests\"] == 0 and r[\"errors\"][\"other\"] > 0");

    char out[PATH_MAX + 16];
    snprintf(out, sizeof out, "%s/bad.json", tmpdir);
    snprintf(args, sizeof args, "http --duration 1 --insecure http://127.0.0.1:%u/", port); /* not https */
    ck_assert_int_eq(run_bench(args, out), 2);
    snprintf(args, sizeof args, "http --duration 1 --insecure --ca '%s' %s", cert, url); /* both */
    ck_assert_int_eq(run_bench(args, out), 2);
    snprintf(args, sizeof args, "http --duration 1 --repeat 1 --ca '%s/missing.pem' %s", tmpdir, url);
    ck_assert_int_eq(run_bench(args, out), 1);
    kill(server, SIGTERM);
    waitpid(server, NULL, 0);
}
END_TEST

/* compare http --tls loads the servers with our TLS client (no --wrk). */
START_TEST(compare_https_smoke)
{
    REQUIRE_BENCH();
    if (!have_program("openssl")) {
        fprintf(stderr, "skip: openssl missing\n");
        return;
    }
    int n = smoke("compare http --tls --churn --workers 1 --connections 4 --duration 1 --repeat 1 --json");
    ck_assert_int_ge(n, 1);
    check_results("o[\"impl\"] == \"ioloop\" and r[\"connections_per_sec\"] > 0 and p[\"load_generator\"] == \"iol-bench\"");
    ck_assert_int_eq(leftover_servers(), 0);
}
END_TEST
#endif

static Suite *bench_suite(void)
{
    Suite *s = suite_create("bench");
    TCase *tc = iol_test_tcase("subcommands", 300);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, handoff_smoke);
    tcase_add_test(tc, pingpong_smoke);
#ifdef IOL_HAVE_URING
    tcase_add_test(tc, poller_rows_smoke);
#endif
    tcase_add_test(tc, wakecost_smoke);
    tcase_add_test(tc, timers_smoke);
    tcase_add_test(tc, compare_smoke);
    tcase_add_test(tc, udp_smoke);
    tcase_add_test(tc, shared_build_smoke);
    suite_add_tcase(s, tc);

    tc = iol_test_tcase("http", 300);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, http_keepalive_and_churn);
    tcase_add_test(tc, http_refused_is_an_error_kind);
    tcase_add_test(tc, http_bad_arguments);
    tcase_add_test(tc, plot_writes_svg);
    tcase_add_test(tc, compare_http_smoke);
    tcase_add_test(tc, compare_http_floor_pipeline_cap);
    tcase_add_test(tc, agrees_with_wrk);
#ifdef IOL_HAVE_TLS
    tcase_add_test(tc, https_through_our_tls_client);
    tcase_add_test(tc, compare_https_smoke);
#endif
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    /* Timing-bound and slow under valgrind; sanitizer builds run it. */
    if (iol_test_under_valgrind()) {
        fprintf(stderr, "test_bench: skipped under valgrind\n");
        return 0;
    }
    return iol_test_run(bench_suite());
}
