#include "testutil.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
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

/* ----------------------------------------------------------- Log capture */

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static char log_text[16384];

static void capture_log(int level, const char *msg, void *ud)
{
    (void)ud;
    pthread_mutex_lock(&log_lock);
    size_t used = strlen(log_text);
    snprintf(log_text + used, sizeof(log_text) - used, "%d %s\n", level, msg);
    pthread_mutex_unlock(&log_lock);
}

void iol_test_log_capture(void)
{
    iol_set_log_handler(capture_log, NULL);
    pthread_mutex_lock(&log_lock);
    log_text[0] = '\0';
    pthread_mutex_unlock(&log_lock);
}

bool iol_test_log_has(const char *needle)
{
    return iol_test_log_count(needle) > 0;
}

int iol_test_log_count(const char *needle)
{
    pthread_mutex_lock(&log_lock);
    int n = 0;
    for (const char *p = log_text; (p = strstr(p, needle)); p++)
        n++;
    pthread_mutex_unlock(&log_lock);
    return n;
}

int iol_test_log_level_of(const char *needle)
{
    pthread_mutex_lock(&log_lock);
    int level = -1;
    const char *p = strstr(log_text, needle);
    if (p) {
        while (p > log_text && p[-1] != '\n')
            p--;
        level = atoi(p);
    }
    pthread_mutex_unlock(&log_lock);
    return level;
}

const char *iol_test_log_text(void)
{
    return log_text;
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

/* --------------------------------------------------------- Certificates */

bool iol_test_have_program(const char *name)
{
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "command -v %s >/dev/null 2>&1", name);
    return system(cmd) == 0;
}

#define EC "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"

/* Runs body in dir, output discarded; its exit status. */
static int cert_sh(const char *dir, const char *body)
{
    char cmd[4096];
    snprintf(cmd, sizeof(cmd), "cd %s && { %s ; } >/dev/null 2>&1", dir, body);
    return system(cmd);
}

static void remove_dir(const char *dir)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (dir[0] && system(cmd) != 0)
        fprintf(stderr, "testutil: could not remove %s\n", dir);
}

int iol_test_make_cert(char *dir, size_t size)
{
    if (size < 64)
        return -1;
    snprintf(dir, size, "/tmp/iol-cert-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    return cert_sh(dir, "openssl req -x509 " EC " -keyout key.pem -out cert.pem -subj /CN=localhost "
                        "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 -days 2") == 0
               ? 0
               : -1;
}

static char localhost_dir[64];
static pid_t localhost_pid; /* the process that made it removes it */

static void localhost_cleanup(void)
{
    if (getpid() == localhost_pid)
        remove_dir(localhost_dir);
}

static char localhost_cert[96], localhost_key[96];

/* Makes the certificate on first use; false if that failed. */
static bool localhost_made(void)
{
    if (localhost_dir[0])
        return true;
    if (iol_test_make_cert(localhost_dir, sizeof localhost_dir) < 0) {
        remove_dir(localhost_dir);
        localhost_dir[0] = '\0';
        return false;
    }
    if (!localhost_pid)
        atexit(localhost_cleanup);
    localhost_pid = getpid();
    snprintf(localhost_cert, sizeof localhost_cert, "%s/cert.pem", localhost_dir);
    snprintf(localhost_key, sizeof localhost_key, "%s/key.pem", localhost_dir);
    return true;
}

const char *iol_test_localhost_cert(void)
{
    return localhost_made() ? localhost_cert : NULL;
}

const char *iol_test_localhost_key(void)
{
    return localhost_made() ? localhost_key : NULL;
}

static char certs_dir[64];

const char *iol_test_certs_dir(void)
{
    return certs_dir;
}

const char *iol_test_cert_path(const char *name)
{
    static char buf[8][160];
    static int next;
    char *p = buf[next++ % 8];
    snprintf(p, sizeof(buf[0]), "%s/%s", certs_dir, name);
    return p;
}

bool iol_test_certs_make(void)
{
    strcpy(certs_dir, "/tmp/iol-tlsfx-XXXXXX");
    if (!mkdtemp(certs_dir))
        return false;
    static const char *cmds[] = {
        "openssl req -x509 " EC " -keyout ca.key -out ca.pem -subj /CN=iol-test-ca -days 2",
        "openssl req -x509 " EC " -keyout other-ca.key -out other-ca.pem -subj /CN=iol-other-ca -days 2",
        "printf 'subjectAltName=DNS:a.test,DNS:localhost,IP:127.0.0.1\\n' > a.ext && "
        "printf 'subjectAltName=DNS:b.test\\n' > b.ext && "
        "printf 'subjectAltName=email:client-1@a.test\\n' > client.ext && "
        "printf '[ca]\\ndefault_ca=d\\n[d]\\ndatabase=index.txt\\nnew_certs_dir=.\\ndefault_md=sha256\\n"
        "policy=p\\nserial=serial\\ncopy_extensions=copy\\n[p]\\ncommonName=supplied\\n' > ca.cnf && "
        "touch index.txt && echo 01 > serial",
        /* name, CA, days, extensions */
        "for spec in a:ca:2:a b:ca:2:b expired:ca:-1:a client:ca:2:client rogue:other-ca:2:none; do "
        "set -- $(echo $spec | tr : ' '); n=$1 ca=$2 days=$3 ext=$4; "
        "cn=a.test; [ $n = b ] && cn=b.test; [ $n = client ] && cn=client-1; [ $n = rogue ] && cn=rogue; "
        "openssl req " EC " -keyout $n.key -out $n.csr -subj /CN=$cn || exit 1; "
        "x=''; [ $ext != none ] && x=\"-extfile $ext.ext\"; "
        "openssl x509 -req -in $n.csr -CA $ca.pem -CAkey $ca.key -CAcreateserial -days $days $x -out $n.pem || exit 1; "
        "done",
        "openssl req " EC " -keyout future.key -out future.csr -subj /CN=a.test "
        "-addext subjectAltName=DNS:a.test && "
        "openssl ca -batch -config ca.cnf -cert ca.pem -keyfile ca.key -in future.csr -out future.pem "
        "-startdate 20990101000000Z -enddate 20990102000000Z -notext",
        "openssl req -x509 " EC " -keyout self.key -out self.pem -subj /CN=a.test -days 2 "
        "-addext subjectAltName=DNS:a.test",
    };
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
        if (cert_sh(certs_dir, cmds[i]) != 0) {
            fprintf(stderr, "testutil: making certificates failed: %s\n", cmds[i]);
            return false;
        }
    return true;
}

bool iol_test_build_has_tls(void)
{
    iol_tls_ctx *probe = NULL;
    iol_tls_config none = {0};
    if (iol_tls_ctx_new(&probe, &none) == -ENOTSUP)
        return false;
    iol_tls_ctx_unref(probe);
    return true;
}

int iol_test_certs_setup(const char *suite)
{
    if (!iol_test_build_has_tls() || !iol_test_have_program("openssl")) {
        printf("%s: no TLS in the build or no openssl CLI, skipping\n", suite);
        return 77;
    }
    if (!iol_test_certs_make()) {
        fprintf(stderr, "%s: making the test certificates failed\n", suite);
        return 1;
    }
    return 0;
}

char *iol_test_cert_read(const char *name, size_t *len)
{
    FILE *f = fopen(iol_test_cert_path(name), "rb");
    if (!f)
        return NULL;
    char *buf = malloc(65536);
    size_t n = buf ? fread(buf, 1, 65535, f) : 0;
    fclose(f);
    if (buf)
        buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

void iol_test_certs_remove(void)
{
    remove_dir(certs_dir);
}

bool iol_test_tls_ctxs(iol_tls_ctx **server, iol_tls_ctx **client)
{
    const char *cert = iol_test_localhost_cert(), *key = iol_test_localhost_key();
    if (!cert)
        return false;
    iol_tls_config scfg = {.server = true, .cert_file = cert, .key_file = key};
    int r = iol_tls_ctx_new(server, &scfg);
    if (r == -ENOTSUP)
        return false;
    ck_assert_int_eq(r, 0);
    iol_tls_config ccfg = {.insecure_no_verify = true};
    ck_assert_int_eq(iol_tls_ctx_new(client, &ccfg), 0);
    return true;
}

bool iol_test_need_tls_ctxs(iol_tls_ctx **server, iol_tls_ctx **client)
{
    bool have_tls = iol_test_tls_ctxs(server, client);
#ifdef IOL_HAVE_TLS
    ck_assert(have_tls); /* a TLS build must run it */
#endif
    return have_tls;
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
