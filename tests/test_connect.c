/* Connecting streams: a deadline proven against a blackhole (a listener
 * whose accept queue is full, so the kernel drops further SYNs), names
 * looked up off the loop thread, every address tried in turn, a source
 * address, and the failures each reaching the callback with a -errno.
 * Every stream is closed and the loop closed at the end, so leak checks
 * are exact. */
#include "ioloop.h"
#include "testutil.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <netdb.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <unistd.h>

/* ----------------------------------------------------------------- Helpers */

static void on_safety_timeout(void *arg)
{
    ck_abort_msg("loop did not stop in time");
    iol_loop_stop(arg);
}

static void run_loop(iol_loop *loop)
{
    iol_timeout t = 0;
    double limit = iol_test_under_valgrind() ? 100 : 20;
    ck_assert_int_eq(iol_loop_call_later(loop, limit, on_safety_timeout, loop, &t), 0);
    ck_assert_int_eq(iol_loop_start(loop), 0);
    iol_loop_remove_timeout(loop, t);
}

static iol_loop *new_loop(void)
{
    iol_loop *loop = NULL;
    ck_assert_int_eq(iol_loop_new(&loop, NULL), 0);
    return loop;
}

/* A listening TCP socket on 127.0.0.1 with an ephemeral port. */
static int tcp_listen(uint16_t *port, int backlog)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    ck_assert_int_eq(listen(fd, backlog), 0);
    socklen_t len = sizeof(sin);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    *port = ntohs(sin.sin_port);
    return fd;
}

/* A port nothing listens on (bound, then closed). */
static uint16_t free_port(void)
{
    uint16_t port;
    int fd = tcp_listen(&port, 1);
    close(fd);
    return port;
}

typedef struct dial {
    iol_loop *loop;
    bool in_call;
    int calls;
    int status;
    int closes;
    double started, finished;
} dial;

static void on_dial(iol_stream *s, int status, void *arg)
{
    dial *d = arg;
    ck_assert(!d->in_call); /* never inside the connect call */
    d->calls++;
    d->status = status;
    d->finished = iol_test_now();
    if (status == 0)
        ck_assert_int_eq(iol_stream_close(s), 0);
}

static void on_dial_close(iol_stream *s, void *arg)
{
    (void)s;
    dial *d = arg;
    d->closes++;
    iol_loop_stop(d->loop);
}

/* Connects with opts and runs the loop until the stream closed. */
static void dial_and_wait(dial *d, const char *host, uint16_t port, const iol_connect_options *opts)
{
    iol_stream *s = NULL;
    d->started = iol_test_now();
    d->in_call = true;
    int r = iol_stream_connect_ex(&s, d->loop, host, port, opts, on_dial, d);
    d->in_call = false;
    ck_assert_int_eq(r, 0);
    ck_assert_int_eq(iol_stream_set_close_callback(s, on_dial_close, d), 0);
    run_loop(d->loop);
    ck_assert_int_eq(d->calls, 1);
    ck_assert_int_eq(d->closes, 1);
}

/* ---------------------------------------------------------------- Deadline */

static void stop_later(void *arg)
{
    iol_loop_stop(arg);
}

/* Fills lfd's accept queue (listen backlog 0 holds one connection): the
 * returned sockets sit in it; further SYNs are dropped, so a connect to
 * lfd hangs in SYN_SENT (the kernel retries for minutes). */
static int fill_backlog(uint16_t port, int fds[], int max)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int n = 0;
    for (; n < max; n++) {
        fds[n] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        ck_assert_int_ge(fds[n], 0);
        int r = connect(fds[n], (struct sockaddr *)&sin, sizeof(sin));
        ck_assert(r == 0 || errno == EINPROGRESS);
    }
    usleep(100 * 1000); /* the handshakes that can complete do */
    return n;
}

START_TEST(deadline_against_blackhole)
{
    uint16_t port;
    int lfd = tcp_listen(&port, 0);
    int queued[4];
    int n = fill_backlog(port, queued, 4);

    dial d = {.loop = new_loop()};
    /* The blackhole is real: without a deadline, a connect is still
     * pending after a second. */
    dial hang = {.loop = d.loop};
    iol_stream *hs = NULL;
    ck_assert_int_eq(iol_stream_connect_ex(&hs, d.loop, "127.0.0.1", port, NULL, on_dial, &hang), 0);
    ck_assert_int_eq(iol_loop_call_later(d.loop, 1.0, stop_later, d.loop, NULL), 0);
    run_loop(d.loop);
    ck_assert_int_eq(hang.calls, 0);

    iol_connect_options o = {.timeout = 0.3};
    dial_and_wait(&d, "127.0.0.1", port, &o);
    ck_assert_int_eq(d.status, -ETIMEDOUT);
    double took = d.finished - d.started;
    ck_assert_msg(took >= 0.25 && took < 10, "deadline of 0.3 s fired after %.3f s", took);
    ck_assert_int_eq(hang.calls, 0);
    ck_assert_int_eq(iol_stream_close(hs), 0); /* cb: -EPIPE */
    ck_assert_int_eq(iol_loop_call_later(d.loop, 0.05, stop_later, d.loop, NULL), 0);
    run_loop(d.loop);
    ck_assert_int_eq(iol_loop_close(d.loop, false), 0);
    ck_assert_int_eq(hang.calls, 1);
    ck_assert_int_eq(hang.status, -EPIPE);
    for (int i = 0; i < n; i++)
        close(queued[i]);
    close(lfd);
}
END_TEST

START_TEST(deadline_cancelled_by_success)
{
    uint16_t port;
    int lfd = tcp_listen(&port, 8);
    dial d = {.loop = new_loop()};
    iol_connect_options o = {.timeout = 0.2};
    dial_and_wait(&d, "127.0.0.1", port, &o);
    ck_assert_int_eq(d.status, 0);
    /* Past the deadline nothing fires for the freed stream (ASan would
     * see it; valgrind too). */
    ck_assert_int_eq(iol_loop_call_later(d.loop, 0.4, stop_later, d.loop, NULL), 0);
    run_loop(d.loop);
    ck_assert_int_eq(d.calls, 1);
    ck_assert_int_eq(iol_loop_close(d.loop, false), 0);
    close(lfd);
}
END_TEST

/* ------------------------------------------------------------- Resolution */

START_TEST(resolves_localhost_off_the_loop)
{
    uint16_t port;
    int lfd = tcp_listen(&port, 8);
    dial d = {.loop = new_loop()};
    iol_connect_options o = {.timeout = 10};
    dial_and_wait(&d, "localhost", port, &o);
    ck_assert_int_eq(d.status, 0);
    ck_assert_int_eq(iol_loop_close(d.loop, false), 0);
    close(lfd);
}
END_TEST

START_TEST(unresolvable_name_fails_in_callback)
{
    dial d = {.loop = new_loop()};
    /* .invalid never resolves (RFC 6761); without a reachable DNS server
     * the lookup is a temporary failure instead. */
    dial_and_wait(&d, "no-such-host.invalid", 80, NULL);
    ck_assert_msg(d.status == IOL_ENONAME || d.status == -EAGAIN, "status %d", d.status);
    ck_assert_int_eq(iol_loop_close(d.loop, false), 0);
}
END_TEST

/* Gives this process (the test's CK_FORK child, still single-threaded)
 * a private mount namespace. false where that is not allowed (no
 * CAP_SYS_ADMIN). */
static bool private_mounts(void)
{
    return unshare(CLONE_NEWNS) == 0 && mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL) == 0;
}

/* Replaces the file at target (/etc/hosts...) with content, for this
 * process's mount namespace only. */
static bool private_file(const char *target, const char *content)
{
    char path[] = "/tmp/iol-etc-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        return false;
    bool ok = write(fd, content, strlen(content)) == (ssize_t)strlen(content);
    close(fd);
    ok = ok && mount(path, target, "none", MS_BIND, NULL) == 0;
    unlink(path); /* the bind mount keeps the file */
    return ok;
}

/* A name with two addresses, a listener on the second only: the first is
 * refused and the next one connects. */
START_TEST(tries_every_address)
{
    if (!private_mounts() || !private_file("/etc/hosts", "127.0.0.2 multi.iol.test\n127.0.0.3 multi.iol.test\n")) {
        fprintf(stderr, "tries_every_address: no private /etc/hosts here: skipped\n");
        return;
    }
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res = NULL;
    ck_assert_int_eq(getaddrinfo("multi.iol.test", NULL, &hints, &res), 0);
    ck_assert_ptr_nonnull(res->ai_next); /* two addresses */
    struct sockaddr_in second = *(struct sockaddr_in *)res->ai_next->ai_addr;
    freeaddrinfo(res);

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(lfd, 0);
    second.sin_port = 0;
    ck_assert_int_eq(bind(lfd, (struct sockaddr *)&second, sizeof(second)), 0);
    ck_assert_int_eq(listen(lfd, 8), 0);
    socklen_t len = sizeof(second);
    ck_assert_int_eq(getsockname(lfd, (struct sockaddr *)&second, &len), 0);

    dial d = {.loop = new_loop()};
    dial_and_wait(&d, "multi.iol.test", ntohs(second.sin_port), NULL);
    ck_assert_int_eq(d.status, 0);
    /* Refused everywhere: the last address's error. */
    d.calls = d.closes = 0;
    dial_and_wait(&d, "multi.iol.test", free_port(), NULL);
    ck_assert_int_eq(d.status, -ECONNREFUSED);
    ck_assert_int_eq(iol_loop_close(d.loop, false), 0);
    close(lfd);
}
END_TEST

/* A source address skips the addresses of the other family; a real
 * connect error on the others is the answer, not that skip (review:
 * [127.0.0.2 refused, ::1] with an IPv4 source said -EAFNOSUPPORT). */
START_TEST(family_skip_keeps_the_real_error)
{
    if (!private_mounts() || !private_file("/etc/hosts", "127.0.0.2 mixed.iol.test\n::1 mixed.iol.test\n") ||
        !private_file("/etc/gai.conf", "precedence ::ffff:0:0/96 100\n")) {
        fprintf(stderr, "family_skip_keeps_the_real_error: no private /etc/hosts here: skipped\n");
        return;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    ck_assert_int_eq(getaddrinfo("mixed.iol.test", NULL, &hints, &res), 0);
    ck_assert_ptr_nonnull(res->ai_next);
    ck_assert_int_eq(res->ai_family, AF_INET); /* gai.conf: IPv4 first */
    ck_assert_int_eq(res->ai_next->ai_family, AF_INET6);
    freeaddrinfo(res);
    dial d = {.loop = new_loop()};
    iol_connect_options o = {.source = "127.0.0.1"};
    dial_and_wait(&d, "mixed.iol.test", free_port(), &o);
    ck_assert_int_eq(d.status, -ECONNREFUSED);
    ck_assert_int_eq(iol_loop_close(d.loop, false), 0);
}
END_TEST

/* A DNS server that never answers (a UDP socket nobody reads, named in a
 * private resolv.conf): getaddrinfo blocks for its 3 s timeout on the
 * executor while the loop goes on ticking, and the deadline (which covers
 * the lookup) ends the connect at 0.3 s. */
static void count_tick(void *arg)
{
    (*(int *)arg)++;
}

START_TEST(deadline_covers_a_hung_lookup)
{
    int dns = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(dns, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(53), .sin_addr.s_addr = htonl(0x7f000063)};
    if (!private_mounts() || bind(dns, (struct sockaddr *)&sin, sizeof(sin)) < 0 ||
        !private_file("/etc/hosts", "127.0.0.1 localhost\n") ||
        !private_file("/etc/resolv.conf", "nameserver 127.0.0.99\noptions timeout:3 attempts:1\n")) {
        fprintf(stderr, "deadline_covers_a_hung_lookup: no private resolv.conf here: skipped\n");
        close(dns);
        return;
    }
    dial d = {.loop = new_loop()};
    int ticks = 0;
    iol_periodic *tick;
    ck_assert_int_eq(iol_periodic_new(&tick, d.loop, 10, count_tick, &ticks), 0);
    ck_assert_int_eq(iol_periodic_start(tick), 0);
    iol_connect_options o = {.timeout = 0.3};
    dial_and_wait(&d, "hung.iol.test", 80, &o);
    ck_assert_int_eq(d.status, -ETIMEDOUT);
    double took = d.finished - d.started;
    ck_assert_msg(took >= 0.25 && took < 2.5, "deadline of 0.3 s fired after %.3f s", took);
    ck_assert_int_ge(ticks, 5); /* the loop thread was not stuck in getaddrinfo */
    iol_periodic_free(tick);
    /* The lookup is still blocked on its executor thread, which holds the
     * loop until it returns; the process may exit before that. */
    ck_assert_int_eq(iol_loop_close(d.loop, false), 0);
    close(dns);
}
END_TEST

/* A close during the lookup: cb gets -EPIPE at once, the stream is freed
 * when the lookup's answer comes back. A loop closed during it: cb gets
 * -ESHUTDOWN and nothing leaks. */
START_TEST(close_during_lookup)
{
    dial d = {.loop = new_loop()};
    iol_stream *s = NULL;
    ck_assert_int_eq(iol_stream_connect_ex(&s, d.loop, "localhost", 1, NULL, on_dial, &d), 0);
    ck_assert_int_eq(iol_stream_set_close_callback(s, on_dial_close, &d), 0);
    ck_assert_int_eq(iol_stream_close(s), 0);
    run_loop(d.loop);
    ck_assert_int_eq(d.calls, 1);
    ck_assert_int_eq(d.status, -EPIPE);
    /* Let the lookup come back and free the stream. */
    ck_assert_int_eq(iol_loop_call_later(d.loop, 0.3, stop_later, d.loop, NULL), 0);
    run_loop(d.loop);

    d.calls = d.closes = 0;
    ck_assert_int_eq(iol_stream_connect_ex(&s, d.loop, "localhost", 1, NULL, on_dial, &d), 0);
    /* The lookup's answer is dropped with the queue if it came back in
     * time to be queued (1), or finds the loop closed (0). */
    ck_assert_int_le(iol_loop_close(d.loop, false), 1);
    ck_assert_int_eq(d.calls, 1);
    ck_assert_int_eq(d.status, -ESHUTDOWN);
}
END_TEST

/* ---------------------------------------------------------------- Source */

typedef struct source_story {
    dial d;
    int lfd;
    uint16_t peer_port;
} source_story;

START_TEST(source_address_is_bound)
{
    source_story st = {.d = {.loop = new_loop()}};
    uint16_t port;
    st.lfd = tcp_listen(&port, 8);
    uint16_t src = free_port();
    iol_connect_options o = {.source = "127.0.0.1", .source_port = src};
    dial_and_wait(&st.d, "127.0.0.1", port, &o);
    ck_assert_int_eq(st.d.status, 0);
    int a = accept(st.lfd, NULL, NULL);
    ck_assert_int_ge(a, 0);
    struct sockaddr_in peer;
    socklen_t len = sizeof(peer);
    ck_assert_int_eq(getpeername(a, (struct sockaddr *)&peer, &len), 0);
    ck_assert_uint_eq(ntohs(peer.sin_port), src);
    close(a);

    /* An IPv6 source cannot reach an IPv4 peer. */
    st.d.calls = st.d.closes = 0;
    iol_connect_options o6 = {.source = "::1"};
    dial_and_wait(&st.d, "127.0.0.1", port, &o6);
    ck_assert_int_eq(st.d.status, -EAFNOSUPPORT);
    ck_assert_int_eq(iol_loop_close(st.d.loop, false), 0);
    close(st.lfd);
}
END_TEST

static void never_connect(iol_stream *s, int status, void *arg)
{
    (void)s, (void)status, (void)arg;
    ck_abort_msg("a rejected connect called back");
}

START_TEST(bad_options)
{
    iol_loop *loop = new_loop();
    iol_stream *s = NULL;
    ck_assert_int_eq(iol_stream_connect_ex(NULL, loop, "127.0.0.1", 1, NULL, never_connect, NULL), -EINVAL);
    ck_assert_int_eq(iol_stream_connect_ex(&s, NULL, "127.0.0.1", 1, NULL, never_connect, NULL), -EINVAL);
    ck_assert_int_eq(iol_stream_connect_ex(&s, loop, NULL, 1, NULL, never_connect, NULL), -EINVAL);
    ck_assert_int_eq(iol_stream_connect_ex(&s, loop, "", 1, NULL, never_connect, NULL), -EINVAL);
    ck_assert_int_eq(iol_stream_connect_ex(&s, loop, "127.0.0.1", 1, NULL, NULL, NULL), -EINVAL);
    iol_connect_options o = {.timeout = NAN};
    ck_assert_int_eq(iol_stream_connect_ex(&s, loop, "127.0.0.1", 1, &o, never_connect, NULL), -EINVAL);
    o = (iol_connect_options){.source_port = 5};
    ck_assert_int_eq(iol_stream_connect_ex(&s, loop, "127.0.0.1", 1, &o, never_connect, NULL), -EINVAL);
    o = (iol_connect_options){.source = "localhost"}; /* names are not looked up for the source */
    ck_assert_int_eq(iol_stream_connect_ex(&s, loop, "127.0.0.1", 1, &o, never_connect, NULL), -EINVAL);
    ck_assert_ptr_null(s);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("connect");
    struct {
        const char *name;
        const TTest *test;
    } cases[] = {
        {"deadline_against_blackhole", deadline_against_blackhole},
        {"deadline_cancelled_by_success", deadline_cancelled_by_success},
        {"resolves_localhost_off_the_loop", resolves_localhost_off_the_loop},
        {"unresolvable_name_fails_in_callback", unresolvable_name_fails_in_callback},
        {"tries_every_address", tries_every_address},
        {"family_skip_keeps_the_real_error", family_skip_keeps_the_real_error},
        {"deadline_covers_a_hung_lookup", deadline_covers_a_hung_lookup},
        {"close_during_lookup", close_during_lookup},
        {"source_address_is_bound", source_address_is_bound},
        {"bad_options", bad_options},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        TCase *tc = iol_test_tcase(cases[i].name, 60);
        tcase_add_test(tc, cases[i].test);
        suite_add_tcase(s, tc);
    }
    return iol_test_run(s);
}
