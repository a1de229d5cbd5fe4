/* examples/http-hello and examples/echo as a client sees them: started as
 * processes (../examples/NAME next to this test binary) on a free port,
 * 2 workers, in both shard modes (loop tests: _i 0 reuseport, 1 handoff). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ioloop.h"
#include "testutil.h"

static const char *const SHARDS[] = {"reuseport", "handoff"};

typedef struct server {
    pid_t pid;
    uint16_t port;
} server;

/* Set by start_server: the server every test talks to (one per forked
 * test), killed by the teardown if a test failed halfway. */
static server srv = {.pid = -1};
/* --tls-cert FILE --tls-key FILE for the next start_server, or NULLs. */
static const char *tls_args[4];

static void example_path(const char *name, char *buf, size_t len)
{
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    ck_assert_int_gt(n, 0);
    self[n] = '\0';
    snprintf(buf, len, "%s/../examples/%s", dirname(self), name);
}

/* Starts examples/NAME --port 0 --workers 2 --shard S and reads its
 * "listening on HOST:PORT" line. Skips (passes) when the example is not
 * built (http-hello needs libhttp-parser). */
static bool start_server_with(const char *name, const char *shard, const char *stats, int *stdout_fd);
static bool start_server(const char *name, const char *shard)
{
    return start_server_with(name, shard, NULL, NULL);
}

/* As start_server; with stats, passes --stats STATS, and with stdout_fd
 * keeps the read end of the server's stdout there. */
static bool start_server_with(const char *name, const char *shard, const char *stats, int *stdout_fd)
{
    char path[4200];
    example_path(name, path, sizeof(path));
    if (access(path, X_OK) != 0) {
        fprintf(stderr, "test_examples: %s not built: skipped\n", path);
        return false;
    }
    /* Anything the example forks stays ours to reap, so the SIGTERM test
     * can tell that no child was left behind. */
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    int out[2];
    ck_assert_int_eq(pipe2(out, O_CLOEXEC), 0);
    pid_t parent = getpid();
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the test */
        if (getppid() != parent)
            _exit(127);
        dup2(out[1], STDOUT_FILENO);
        /* --stats S, then the TLS pair (NULLs without TLS end the list). */
        const char *argv[16] = {name, "--host", "127.0.0.1", "--port", "0", "--workers", "2", "--shard", shard};
        int argc = 9;
        if (stats) {
            argv[argc++] = "--stats";
            argv[argc++] = stats;
        }
        for (int i = 0; i < 4; i++)
            argv[argc++] = tls_args[i];
        argv[argc] = NULL;
        execv(path, (char *const *)argv);
        _exit(127);
    }
    close(out[1]);
    srv.pid = pid;
    char text[1024];
    size_t used = 0;
    double deadline = iol_test_now() + (iol_test_under_valgrind() ? 60 : 10);
    while (!srv.port && iol_test_now() < deadline) {
        struct pollfd pfd = {.fd = out[0], .events = POLLIN};
        if (poll(&pfd, 1, 100) <= 0)
            continue;
        ssize_t n = read(out[0], text + used, sizeof(text) - 1 - used);
        if (n <= 0)
            break;
        used += (size_t)n;
        text[used] = '\0';
        const char *line = strstr(text, "listening on ");
        const char *eol = line ? strchr(line, '\n') : NULL;
        if (eol) {
            const char *colon = memrchr(line, ':', (size_t)(eol - line));
            if (colon)
                srv.port = (uint16_t)atoi(colon + 1);
        }
    }
    if (stdout_fd)
        *stdout_fd = out[0];
    else
        close(out[0]); /* later output goes to a closed pipe: the examples ignore SIGPIPE */
    ck_assert_msg(srv.port > 0, "%s printed no \"listening on HOST:PORT\" line", name);
    return true;
}

static void teardown(void)
{
    if (srv.pid > 0) {
        kill(srv.pid, SIGKILL);
        waitpid(srv.pid, NULL, 0);
        srv.pid = -1;
    }
}

static double io_timeout(void)
{
    return iol_test_under_valgrind() ? 20 : 5;
}

static int connect_to(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_msg(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0, "connect: %s", strerror(errno));
    double t = io_timeout();
    struct timeval tv = {.tv_sec = (time_t)t};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

static void send_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        ck_assert_msg(n > 0, "send: %s", strerror(errno));
        p += n;
        len -= (size_t)n;
    }
}

/* A buffered reader over a socket, to take responses apart one by one. */
typedef struct reader {
    int fd;
    char buf[65536];
    size_t len;
    bool eof;
    int err;
} reader;

/* Reads more; false on EOF or error (recorded). */
static bool reader_fill(reader *r)
{
    if (r->len == sizeof(r->buf) - 1)
        return false;
    for (;;) {
        ssize_t n = recv(r->fd, r->buf + r->len, sizeof(r->buf) - 1 - r->len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            r->err = errno;
            return false;
        }
        if (n == 0) {
            r->eof = true;
            return false;
        }
        r->len += (size_t)n;
        r->buf[r->len] = '\0';
        return true;
    }
}

static void reader_consume(reader *r, size_t n)
{
    memmove(r->buf, r->buf + n, r->len - n);
    r->len -= n;
    r->buf[r->len] = '\0';
}

typedef struct response {
    int status;
    char headers[2048];
    char body[256];
    size_t body_len;
} response;

/* Reads one response; body read by Content-Length unless `head` (a HEAD
 * request's response has none). false if the connection ended first. */
static bool read_response(reader *r, response *out, bool head)
{
    char *end;
    while (!(end = strstr(r->buf, "\r\n\r\n")))
        if (!reader_fill(r))
            return false;
    size_t hlen = (size_t)(end + 4 - r->buf);
    ck_assert_uint_lt(hlen, sizeof(out->headers));
    memcpy(out->headers, r->buf, hlen);
    out->headers[hlen] = '\0';
    ck_assert_msg(sscanf(out->headers, "HTTP/1.%*d %d", &out->status) == 1, "not a status line: %.40s",
                  out->headers);
    const char *cl = strcasestr(out->headers, "\r\ncontent-length:");
    size_t body = cl && !head ? (size_t)strtoul(cl + 17, NULL, 10) : 0;
    ck_assert_uint_lt(body, sizeof(out->body));
    while (r->len < hlen + body)
        if (!reader_fill(r))
            return false;
    memcpy(out->body, r->buf + hlen, body);
    out->body[body] = '\0';
    out->body_len = body;
    reader_consume(r, hlen + body);
    return true;
}

/* After a response: the server closes (EOF, or a reset after it lingered). */
static void assert_closed(reader *r)
{
    while (reader_fill(r))
        ;
    ck_assert_msg(r->eof || r->err == ECONNRESET, "connection not closed (%s)", r->err ? strerror(r->err) : "data");
    ck_assert_msg(r->err != EAGAIN, "connection still open after %g s", io_timeout());
}

static void assert_hello(const response *resp)
{
    ck_assert_int_eq(resp->status, 200);
    ck_assert_str_eq(resp->body, "Hello, World!");
}

/* A fresh connection still gets its 200: the server keeps serving. */
static void assert_serving(void)
{
    reader *r = calloc(1, sizeof(*r));
    r->fd = connect_to(srv.port);
    static const char req[] = "GET / HTTP/1.1\r\nHost: t\r\n\r\n";
    send_all(r->fd, req, sizeof(req) - 1);
    response resp;
    ck_assert_msg(read_response(r, &resp, false), "no response on a fresh connection");
    assert_hello(&resp);
    close(r->fd);
    free(r);
}

/* ------------------------------------------------------------ http-hello */

START_TEST(http_get)
{
    if (!start_server("http-hello", SHARDS[_i]))
        return;
    reader *r = calloc(1, sizeof(*r));
    r->fd = connect_to(srv.port);
    /* Two requests on one connection: keep-alive holds. */
    for (int k = 0; k < 2; k++) {
        static const char req[] = "GET / HTTP/1.1\r\nHost: t\r\n\r\n";
        send_all(r->fd, req, sizeof(req) - 1);
        response resp;
        ck_assert(read_response(r, &resp, false));
        assert_hello(&resp);
        ck_assert_ptr_nonnull(strcasestr(resp.headers, "\r\ncontent-length: 13\r\n"));
    }
    close(r->fd);
    free(r);
}
END_TEST

/* --stats 0.1: one line per worker, and the requests show in them. */
START_TEST(http_stats)
{
    int out;
    if (!start_server_with("http-hello", SHARDS[_i], "0.1", &out))
        return;
    reader *r = calloc(1, sizeof(*r));
    r->fd = connect_to(srv.port);
    static const char req[] = "GET / HTTP/1.1\r\nHost: t\r\n\r\n";
    for (int k = 0; k < 3; k++) {
        send_all(r->fd, req, sizeof(req) - 1);
        response resp;
        ck_assert(read_response(r, &resp, false));
        assert_hello(&resp);
    }
    close(r->fd);
    free(r);
    /* Wait for a line that counted them (a worker's requests/s > 0). */
    static char text[65536];
    size_t used = 0;
    bool seen_w0 = false, seen_w1 = false, seen_requests = false;
    double deadline = iol_test_now() + io_timeout();
    while (!(seen_w0 && seen_w1 && seen_requests) && iol_test_now() < deadline && used < sizeof(text) - 1) {
        struct pollfd pfd = {.fd = out, .events = POLLIN};
        if (poll(&pfd, 1, 100) <= 0)
            continue;
        ssize_t n = read(out, text + used, sizeof(text) - 1 - used);
        if (n <= 0)
            break;
        used += (size_t)n;
        text[used] = '\0';
        seen_w0 = strstr(text, "stats worker 0: requests ") != NULL;
        seen_w1 = strstr(text, "stats worker 1: requests ") != NULL;
        for (const char *p = text; (p = strstr(p, ": requests ")); p++)
            if (atoi(p + strlen(": requests ")) > 0)
                seen_requests = true;
    }
    close(out);
    ck_assert_msg(seen_w0 && seen_w1 && seen_requests, "stats output: %s", text);
    ck_assert_ptr_nonnull(strstr(text, "busy "));
    ck_assert_ptr_nonnull(strstr(text, "wakeups "));
}
END_TEST

START_TEST(http_pipelined)
{
    if (!start_server("http-hello", SHARDS[_i]))
        return;
    reader *r = calloc(1, sizeof(*r));
    r->fd = connect_to(srv.port);
    static const char three[] = "GET / HTTP/1.1\r\nHost: t\r\n\r\n"
                                "GET /a HTTP/1.1\r\nHost: t\r\n\r\n"
                                "GET /b HTTP/1.1\r\nHost: t\r\n\r\n";
    send_all(r->fd, three, sizeof(three) - 1);
    for (int k = 0; k < 3; k++) {
        response resp;
        ck_assert_msg(read_response(r, &resp, false), "response %d missing", k + 1);
        assert_hello(&resp);
    }
    /* Order: a HEAD between two GETs; its response carries no body, so a
     * reordering would misparse a body as a status line. */
    static const char mixed[] = "GET / HTTP/1.1\r\nHost: t\r\n\r\n"
                                "HEAD / HTTP/1.1\r\nHost: t\r\n\r\n"
                                "GET / HTTP/1.1\r\nHost: t\r\n\r\n";
    send_all(r->fd, mixed, sizeof(mixed) - 1);
    response resp;
    ck_assert(read_response(r, &resp, false));
    assert_hello(&resp);
    ck_assert(read_response(r, &resp, true));
    ck_assert_int_eq(resp.status, 200);
    ck_assert(read_response(r, &resp, false));
    assert_hello(&resp);
    ck_assert_uint_eq(r->len, 0);
    close(r->fd);
    free(r);
}
END_TEST

START_TEST(http_byte_at_a_time)
{
    if (!start_server("http-hello", SHARDS[_i]))
        return;
    reader *r = calloc(1, sizeof(*r));
    r->fd = connect_to(srv.port);
    static const char req[] = "GET /slow HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: one-byte\r\n\r\n";
    for (size_t k = 0; k < sizeof(req) - 1; k++) {
        send_all(r->fd, req + k, 1);
        usleep(1000); /* separate segments, separate reads on the server */
    }
    response resp;
    ck_assert(read_response(r, &resp, false));
    assert_hello(&resp);
    close(r->fd);
    free(r);
}
END_TEST

START_TEST(http_malformed)
{
    if (!start_server("http-hello", SHARDS[_i]))
        return;
    static const char *const bad[] = {
        "GARBAGE\r\n\r\n",
        "GET / HTTP/9.Z\r\nHost: t\r\n\r\n",
        "GET\x01 / HTTP/1.1\r\n\r\n",
    };
    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
        reader *r = calloc(1, sizeof(*r));
        r->fd = connect_to(srv.port);
        send_all(r->fd, bad[k], strlen(bad[k]));
        response resp;
        ck_assert_msg(read_response(r, &resp, false), "no response to malformed request %zu", k);
        ck_assert_int_eq(resp.status, 400);
        assert_closed(r);
        close(r->fd);
        free(r);
        assert_serving();
    }
}
END_TEST

START_TEST(http_headers_too_large)
{
    if (!start_server("http-hello", SHARDS[_i]))
        return;
    reader *r = calloc(1, sizeof(*r));
    r->fd = connect_to(srv.port);
    size_t big = 9000;
    char *req = malloc(big + 256);
    int n = snprintf(req, 256, "GET / HTTP/1.1\r\nHost: t\r\nX-Big: ");
    memset(req + n, 'a', big);
    memcpy(req + n + big, "\r\n\r\n", 4);
    send_all(r->fd, req, (size_t)n + big + 4);
    free(req);
    response resp;
    ck_assert_msg(read_response(r, &resp, false), "no response to 9 KB of headers (%s)",
                  r->err ? strerror(r->err) : "EOF");
    ck_assert_int_eq(resp.status, 431);
    assert_closed(r);
    close(r->fd);
    free(r);
    assert_serving();
}
END_TEST

/* close() with SO_LINGER 0 sends a reset instead of a FIN. */
static void reset_close(int fd)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(fd);
}

START_TEST(http_resets)
{
    if (!start_server("http-hello", SHARDS[_i]))
        return;
    static const char *const partial[] = {
        "",                                 /* reset right after connect */
        "GET / HT",                         /* mid request line */
        "GET / HTTP/1.1\r\nHost: t\r\nX-A", /* mid headers */
        "GET / HTTP/1.1\r\nHost: t\r\n\r\n", /* whole request, response unread */
    };
    for (int round = 0; round < 5; round++) {
        for (size_t k = 0; k < sizeof(partial) / sizeof(partial[0]); k++) {
            int fd = connect_to(srv.port);
            if (partial[k][0])
                send_all(fd, partial[k], strlen(partial[k]));
            if (round % 2)
                usleep(2000); /* let the server read it first, sometimes */
            reset_close(fd);
        }
    }
    /* Many pipelined requests then a reset while the server writes. */
    int fd = connect_to(srv.port);
    char burst[64 * 28];
    size_t len = 0;
    for (int k = 0; k < 64; k++)
        len += (size_t)snprintf(burst + len, sizeof(burst) - len, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    send_all(fd, burst, len);
    reset_close(fd);
    usleep(20000);
    assert_serving();
}
END_TEST

START_TEST(http_10_closes)
{
    if (!start_server("http-hello", SHARDS[_i]))
        return;
    reader *r = calloc(1, sizeof(*r));
    r->fd = connect_to(srv.port);
    static const char req[] = "GET / HTTP/1.0\r\n\r\n";
    send_all(r->fd, req, sizeof(req) - 1);
    response resp;
    ck_assert(read_response(r, &resp, false));
    assert_hello(&resp);
    assert_closed(r);
    ck_assert_msg(r->eof, "HTTP/1.0 connection ended by %s, not a close", strerror(r->err));
    close(r->fd);
    free(r);
    /* HTTP/1.0 with keep-alive stays open. */
    r = calloc(1, sizeof(*r));
    r->fd = connect_to(srv.port);
    static const char ka[] = "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
    for (int k = 0; k < 2; k++) {
        send_all(r->fd, ka, sizeof(ka) - 1);
        ck_assert(read_response(r, &resp, false));
        assert_hello(&resp);
    }
    close(r->fd);
    free(r);
}
END_TEST

/* SIGTERM with an idle keep-alive connection and one mid-request open:
 * exits 0 within a few seconds, and no process it started is left. */
static void sigterm_exits(const char *name, const char *shard)
{
    if (!start_server(name, shard))
        return;
    int idle = connect_to(srv.port);
    int partial = connect_to(srv.port);
    if (!strcmp(name, "http-hello")) {
        static const char req[] = "GET / HTTP/1.1\r\nHost: t\r\n\r\n";
        send_all(idle, req, sizeof(req) - 1);
        reader *r = calloc(1, sizeof(*r));
        r->fd = idle;
        response resp;
        ck_assert(read_response(r, &resp, false));
        free(r);
        send_all(partial, "GET / HTTP/1.1\r\nHo", 18);
    } else {
        send_all(idle, "ping\n", 5);
        char buf[8];
        ck_assert_int_eq(recv(idle, buf, sizeof(buf), 0), 5);
        send_all(partial, "no newline yet", 14);
    }
    usleep(50000);
    double t0 = iol_test_now();
    ck_assert_int_eq(kill(srv.pid, SIGTERM), 0);
    double limit = iol_test_under_valgrind() ? 20 : 5;
    int status = 0;
    pid_t got = 0;
    while (iol_test_now() - t0 < limit && (got = waitpid(srv.pid, &status, WNOHANG)) == 0)
        usleep(5000);
    ck_assert_msg(got == srv.pid, "%s did not exit within %g s of SIGTERM", name, limit);
    srv.pid = -1;
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s exit status %#x", name, status);
    /* We are a subreaper: an orphaned grandchild would be ours now. */
    ck_assert_int_eq(waitpid(-1, NULL, WNOHANG), -1);
    ck_assert_int_eq(errno, ECHILD);
    close(idle);
    close(partial);
}

START_TEST(http_sigterm)
{
    sigterm_exits("http-hello", SHARDS[_i]);
}
END_TEST

/* ------------------------------------------------------------------ echo */

START_TEST(echo_lines)
{
    if (!start_server("echo", SHARDS[_i]))
        return;
    int fd = connect_to(srv.port);
    static const char *const lines[] = {"hello\n", "a somewhat longer line of text\n", "\n", "last\n"};
    for (size_t k = 0; k < sizeof(lines) / sizeof(lines[0]); k++) {
        size_t len = strlen(lines[k]);
        send_all(fd, lines[k], len);
        char buf[128];
        size_t got = 0;
        while (got < len) {
            ssize_t n = recv(fd, buf + got, sizeof(buf) - got, 0);
            ck_assert_msg(n > 0, "echo: %s", n < 0 ? strerror(errno) : "EOF");
            got += (size_t)n;
        }
        ck_assert_uint_eq(got, len);
        ck_assert(memcmp(buf, lines[k], len) == 0);
    }
    /* Several lines in one write come back whole and in order. */
    static const char many[] = "one\ntwo\nthree\n";
    send_all(fd, many, sizeof(many) - 1);
    char buf[64];
    size_t got = 0;
    while (got < sizeof(many) - 1) {
        ssize_t n = recv(fd, buf + got, sizeof(buf) - got, 0);
        ck_assert_int_gt(n, 0);
        got += (size_t)n;
    }
    ck_assert(memcmp(buf, many, sizeof(many) - 1) == 0);
    close(fd);
}
END_TEST

START_TEST(echo_many_clients)
{
    if (!start_server("echo", SHARDS[_i]))
        return;
    enum { CLIENTS = 64, LINES = 20 };
    int fds[CLIENTS];
    for (int c = 0; c < CLIENTS; c++)
        fds[c] = connect_to(srv.port);
    /* Every client sends its lines interleaved with the others, then each
     * reads back exactly its own bytes. */
    size_t sent[CLIENTS] = {0};
    char expect[CLIENTS][LINES * 32];
    for (int l = 0; l < LINES; l++)
        for (int c = 0; c < CLIENTS; c++) {
            char line[32];
            int n = snprintf(line, sizeof(line), "client %d line %d\n", c, l);
            send_all(fds[c], line, (size_t)n);
            memcpy(expect[c] + sent[c], line, (size_t)n);
            sent[c] += (size_t)n;
        }
    for (int c = 0; c < CLIENTS; c++) {
        char buf[LINES * 32];
        size_t got = 0;
        while (got < sent[c]) {
            ssize_t n = recv(fds[c], buf + got, sizeof(buf) - got, 0);
            ck_assert_msg(n > 0, "client %d: %s", c, n < 0 ? strerror(errno) : "EOF");
            got += (size_t)n;
        }
        ck_assert_uint_eq(got, sent[c]);
        ck_assert_msg(memcmp(buf, expect[c], got) == 0, "client %d got someone else's bytes", c);
        close(fds[c]);
    }
}
END_TEST

START_TEST(echo_sigterm)
{
    sigterm_exits("echo", SHARDS[_i]);
}
END_TEST

/* ------------------------------------------------------------------- TLS */

/* A self-signed certificate for localhost (testutil's, made once per
 * test process; no key is committed); false (and the test skips) without
 * TLS or the openssl CLI. */
static bool make_tls_args(void)
{
    if (!iol_test_build_has_tls()) {
        printf("test_examples: built without TLS: skipped\n");
        return false;
    }
    if (!iol_test_have_program("openssl") || !iol_test_have_program("curl")) {
        printf("test_examples: openssl or curl missing: TLS tests skipped\n");
        return false;
    }
    tls_args[0] = "--tls-cert";
    tls_args[1] = iol_test_localhost_cert();
    tls_args[2] = "--tls-key";
    tls_args[3] = iol_test_localhost_key();
    ck_assert_ptr_nonnull(tls_args[1]);
    return true;
}

static void tls_teardown(void)
{
    teardown();
}

/* Runs a shell command (%1$s: the certificate, %2$d: the port); its output. */
static char *shell(const char *fmt)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), fmt, tls_args[1] ? tls_args[1] : "", (int)srv.port);
    FILE *f = popen(cmd, "r");
    ck_assert_ptr_nonnull(f);
    static char out[8192];
    size_t n = fread(out, 1, sizeof(out) - 1, f);
    out[n] = '\0';
    pclose(f);
    return out;
}

/* SIGTERM: the server drains and exits 0 (an ASan build exits non-zero
 * on a leak). */
static void stop_cleanly(void)
{
    ck_assert_int_eq(kill(srv.pid, SIGTERM), 0);
    double t0 = iol_test_now(), limit = iol_test_under_valgrind() ? 20 : 10;
    int status = 0;
    pid_t got = 0;
    while (iol_test_now() - t0 < limit && (got = waitpid(srv.pid, &status, WNOHANG)) == 0)
        usleep(5000);
    ck_assert_int_eq(got, srv.pid);
    srv.pid = -1;
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "exit status %#x", status);
}

static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p++)
        n++;
    return n;
}

START_TEST(https_curl)
{
    if (!make_tls_args() || !start_server("http-hello", SHARDS[_i]))
        return;
    /* Three requests on one kept-alive connection, verified against the
     * certificate, over ALPN http/1.1. */
    char *out = shell("timeout 20 curl -sS -v --cacert %1$s https://localhost:%2$d/ "
                      "https://localhost:%2$d/a https://localhost:%2$d/b 2>&1");
    ck_assert_msg(count(out, "Hello, World!") == 3, "%s", out);
    ck_assert_msg(strstr(out, "ALPN: server accepted http/1.1") || strstr(out, "ALPN, server accepted to use http/1.1"),
                  "%s", out);
    ck_assert_msg(count(out, "Re-using existing connection") + count(out, "Reusing existing connection") >= 2, "%s",
                  out);
    /* Pipelined: both answered, in order, then the close. */
    out = shell("printf 'GET / HTTP/1.1\\r\\nHost: a\\r\\n\\r\\nHEAD / HTTP/1.1\\r\\nHost: a\\r\\n"
                "Connection: close\\r\\n\\r\\n' | timeout 20 openssl s_client -quiet -connect 127.0.0.1:%2$d "
                "-CAfile %1$s -verify_hostname localhost -verify_return_error 2>/dev/null");
    ck_assert_msg(count(out, "HTTP/1.1 200 OK") == 2 && count(out, "Hello, World!") == 1, "%s", out);
    /* Plain HTTP to the TLS port: that connection fails, the next works. */
    out = shell("timeout 20 curl -sS http://localhost:%2$d/ 2>&1; "
                "timeout 20 curl -sS --cacert %1$s https://localhost:%2$d/ 2>&1");
    ck_assert_msg(count(out, "Hello, World!") == 1, "%s", out);
    /* A malformed request still gets its 400 over TLS. */
    out = shell("printf 'BLAH\\r\\n\\r\\n' | timeout 20 openssl s_client -quiet -connect 127.0.0.1:%2$d "
                "-CAfile %1$s 2>/dev/null");
    ck_assert_msg(strstr(out, "HTTP/1.1 400"), "%s", out);
    stop_cleanly();
}
END_TEST

START_TEST(echo_tls)
{
    if (!make_tls_args() || !start_server("echo", SHARDS[_i]))
        return;
    /* -no_ign_eof: s_client closes (close_notify) once stdin ends, after
     * the echo had a second to come back. */
    char *out = shell("(printf 'hello over tls\\nsecond line\\n'; sleep 1) | timeout 20 openssl s_client -quiet -no_ign_eof "
                      "-connect 127.0.0.1:%2$d -CAfile %1$s -verify_hostname localhost "
                      "-verify_return_error 2>/dev/null");
    ck_assert_str_eq(out, "hello over tls\nsecond line\n");
    stop_cleanly();
}
END_TEST

static Suite *examples_suite(void)
{
    Suite *s = suite_create("examples");
    struct {
        const char *name;
        const TTest *test;
    } cases[] = {
        {"http_get", http_get},
        {"http_stats", http_stats},
        {"http_pipelined", http_pipelined},
        {"http_byte_at_a_time", http_byte_at_a_time},
        {"http_malformed", http_malformed},
        {"http_headers_too_large", http_headers_too_large},
        {"http_resets", http_resets},
        {"http_10_closes", http_10_closes},
        {"http_sigterm", http_sigterm},
        {"echo_lines", echo_lines},
        {"echo_many_clients", echo_many_clients},
        {"echo_sigterm", echo_sigterm},
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        TCase *tc = iol_test_tcase(cases[k].name, 30);
        tcase_add_checked_fixture(tc, NULL, teardown);
        tcase_add_loop_test(tc, cases[k].test, 0, 2);
        suite_add_tcase(s, tc);
    }
    TCase *tc = iol_test_tcase("https_curl", 60);
    tcase_add_checked_fixture(tc, NULL, tls_teardown);
    tcase_add_loop_test(tc, https_curl, 0, 2);
    suite_add_tcase(s, tc);
    tc = iol_test_tcase("echo_tls", 60);
    tcase_add_checked_fixture(tc, NULL, tls_teardown);
    tcase_add_loop_test(tc, echo_tls, 0, 2);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    return iol_test_run(examples_suite());
}
