#include "testutil.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <sched.h>
#include <stdlib.h>
#include <time.h>

size_t iol_test_scaled(size_t n, size_t min)
{
    const char *env = getenv("IOL_TEST_SCALE");
    double scale = env ? atof(env) : 1.0;
    if (scale <= 0)
        scale = 1.0;
    size_t r = (size_t)((double)n * scale);
    return r < min ? min : r;
}

int iol_test_under_valgrind(void)
{
    return getenv("IOL_UNDER_VALGRIND") != NULL;
}

double iol_test_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int iol_test_run(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

TCase *iol_test_tcase(const char *name, double timeout_s)
{
    TCase *tc = tcase_create(name);
    double mult = iol_test_under_valgrind() ? 10.0 : 1.0;
    tcase_set_timeout(tc, timeout_s * mult);
    return tc;
}

void iol_test_tiny_delay(uint32_t *rng)
{
    uint32_t x = *rng;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *rng = x;
    if ((x & 15) == 0) {
        sched_yield();
        return;
    }
    for (uint32_t i = (x >> 4) & 63; i > 0; i--)
        __asm__ __volatile__("" ::: "memory");
}

int iol_test_dir_entries(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

uint64_t iol_test_wakeups(const iol_loop *loop)
{
    iol_loop_stats st;
    ck_assert_int_eq(iol_loop_get_stats(loop, &st, sizeof st), 0);
    return st.wakeups;
}

/* ------------------------------------------------------- Stream fixture */

iol_loop *iol_test_loop_new(void)
{
    iol_loop *loop = NULL;
    ck_assert_int_eq(iol_loop_new(&loop, NULL), 0);
    return loop;
}

static void fixture_timed_out(void *arg)
{
    iol_loop_stop(arg);
    ck_abort_msg("loop did not stop in time");
}

void iol_test_loop_run(iol_loop *loop, double limit)
{
    iol_timeout t = 0;
    ck_assert_int_eq(iol_loop_call_later(loop, iol_test_under_valgrind() ? limit * 10 : limit, fixture_timed_out,
                                         loop, &t), 0);
    ck_assert_int_eq(iol_loop_start(loop), 0);
    iol_loop_remove_timeout(loop, t);
}

void iol_test_socket_pair(int fds[2], bool tcp)
{
    if (!tcp) {
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
        return;
    }
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(lfd, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sin);
    ck_assert_int_eq(bind(lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    ck_assert_int_eq(listen(lfd, 1), 0);
    ck_assert_int_eq(getsockname(lfd, (struct sockaddr *)&sin, &len), 0);
    fds[0] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fds[0], 0);
    ck_assert_int_eq(connect(fds[0], (struct sockaddr *)&sin, sizeof(sin)), 0);
    fds[1] = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    ck_assert_int_ge(fds[1], 0);
    close(lfd);
}

iol_stream *iol_test_stream_pair(iol_loop *loop, bool tcp, int *peer)
{
    int fds[2];
    iol_test_socket_pair(fds, tcp);
    iol_stream *s = NULL;
    ck_assert_int_eq(iol_stream_new(&s, loop, fds[0], 0), 0);
    *peer = fds[1];
    return s;
}

void iol_test_write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        ck_assert_int_gt(n, 0);
        p += n;
        len -= (size_t)n;
    }
}

int iol_test_make_cert(char *dir, size_t size)
{
    if (size < 64)
        return -1;
    snprintf(dir, size, "/tmp/iol-cert-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             "cd %s && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
             "-keyout key.pem -out cert.pem -subj /CN=localhost "
             "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 -days 2 >/dev/null 2>&1",
             dir);
    return system(cmd) == 0 ? 0 : -1;
}

static char fixture_tls_dir[64];

static void fixture_tls_cleanup(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", fixture_tls_dir);
    (void)!system(cmd);
}

bool iol_test_tls_ctxs(iol_tls_ctx **server, iol_tls_ctx **client)
{
    if (!fixture_tls_dir[0]) {
        if (iol_test_make_cert(fixture_tls_dir, sizeof fixture_tls_dir) < 0) {
            fixture_tls_dir[0] = '\0';
            return false;
        }
        atexit(fixture_tls_cleanup);
    }
    char cert[96], key[96];
    snprintf(cert, sizeof(cert), "%s/cert.pem", fixture_tls_dir);
    snprintf(key, sizeof(key), "%s/key.pem", fixture_tls_dir);
    iol_tls_config scfg = {.server = true, .cert_file = cert, .key_file = key};
    int r = iol_tls_ctx_new(server, &scfg);
    if (r == -ENOTSUP)
        return false;
    ck_assert_int_eq(r, 0);
    iol_tls_config ccfg = {.insecure_no_verify = true};
    ck_assert_int_eq(iol_tls_ctx_new(client, &ccfg), 0);
    return true;
}

void iol_test_tls_pair(iol_loop *loop, iol_tls_ctx *server, iol_tls_ctx *client, iol_stream **srv, iol_stream **cli,
                       iol_connect_fn cb, void *arg)
{
    int fds[2];
    iol_test_socket_pair(fds, false);
    ck_assert_int_eq(iol_tls_stream_new(srv, loop, fds[0], server, 0), 0);
    ck_assert_int_eq(iol_stream_new(cli, loop, fds[1], 0), 0);
    ck_assert_int_eq(iol_stream_start_tls(*cli, client, NULL, cb, arg), 0);
}
