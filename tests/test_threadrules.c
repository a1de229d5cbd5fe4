/* The thread rule (include/ioloop.h, top comment): a call on an object
 * bound to a loop (stream, TLS stream, handler, timeout, periodic, signal
 * handler, hook, zmq handler, udp socket), made from another thread while the loop
 * runs, returns -EPERM and changes nothing. The calls the header names as
 * any-thread are the exceptions; the stream getters answer with a fixed
 * value from another thread (see each row).
 *
 * One table: a row per call. Each row runs as its own forked test: the
 * fixture sets up what the row needs (on the test thread, the loop not
 * running yet: allowed), a loop thread starts the loop, the test thread
 * (now a foreign thread) makes the call and compares the answer, then
 * checks on the loop thread that nothing changed and that every object
 * still works (a stream reads and writes, a handler runs, a timeout fires,
 * a hook runs, a signal arrives, a periodic ticks, a udp socket answers
 * a datagram). At the end nothing the
 * foreign thread passed in (callbacks) has ever run.
 *
 * To add a call: write a `call_*` function that makes it from the foreign
 * thread and returns its answer as an int, and a row with what it needs
 * (NEED_*), the answer expected, and optionally a `check_*` run on the
 * loop thread for what only that call could have changed. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ioloop.h"
#include "testutil.h"

enum {
    NEED_STREAM = 1u << 0,   /* fx.s on fx.s_fd, its peer fx.peer */
    NEED_SPARE = 1u << 1,    /* fx.spare[0..1]: a connected pair no loop knows */
    NEED_HANDLER = 1u << 2,  /* fx.efd: an eventfd with a READ handler */
    NEED_TIMER = 1u << 3,    /* fx.timer: a timeout 0.2 s ahead */
    NEED_HOOKS = 1u << 4,    /* a prepare and a check hook */
    NEED_SIGNAL = 1u << 5,   /* a SIGUSR2 handler */
    NEED_PERIODIC = 1u << 6, /* fx.pc ticking every 5 ms */
    NEED_PERIODIC_IDLE = 1u << 7, /* fx.pc created, not started */
    NEED_PREFILL = 1u << 8,  /* with NEED_STREAM: bytes waiting in the write buffer */
    NEED_TLS = 1u << 9,      /* fx.s a TLS server stream, fx.c its TLS client on the
                                same loop, handshake done (ALPN "x") */
    NEED_UDP = 1u << 10,     /* fx.u: a udp socket on 127.0.0.1 answering "ping" with
                                "pong" (on_udp); fx.udp_peer: a plain udp socket */
    NEED_UDP_FULL = 1u << 11, /* fx.u over one end of an AF_UNIX datagram pair whose
                                 other end (fx.udp_peer) reads nothing: datagrams wait
                                 in fx.u's send queue */
    /* Not a need: the foreign thread makes the call with the loop as its
     * current loop (iol_loop_make_current, which any thread may do): being
     * current is not running the loop, the rule still says -EPERM. */
    FOREIGN_CURRENT = 1u << 12,
};

enum { PREFILL_BYTES = 1 << 20 };

typedef struct row {
    const char *name;
    unsigned needs;
    int (*call)(void);  /* on the foreign thread; the answer as an int */
    int expect;
    void (*check)(void); /* on the loop thread afterwards; NULL: the generic checks only */
} row;

static struct {
    iol_loop *loop;
    pthread_t thread;
    unsigned needs;
    iol_stream *s;
    iol_stream *c; /* NEED_TLS: the client end */
    iol_tls_ctx *sctx, *cctx;
    sem_t handshake;
    int s_fd, peer;
    int spare[2];
    int efd;
    int handlers_before; /* iol_loop_handler_count right before the call */
    iol_timeout timer;
    iol_periodic *pc;
    iol_periodic *made; /* by periodic_new from the foreign thread */
    int file_fd;
    iol_udp *u;
    int udp_peer;
    struct sockaddr_storage u_addr, peer_addr;
    socklen_t u_len, peer_len;
    int expect_waited; /* wait_for_handshake callbacks the loop thread asked for */
    iol_future *future;  /* any-thread future rows */
    int expect_future;   /* its callback's iol_future_result, once it must have run; 0: none */
    int future_status;   /* what the callback saw (loop thread; read after wait_above) */
    /* Written on the loop thread, read by the test thread after a sem_wait
     * on `done` (which orders them) or polled: atomics, relaxed, as each is
     * one counter read whole and ordered by nothing else. */
    _Atomic int handler_calls, handler_bad, timer_fired, prepare_calls, check_calls, signal_calls, ticks;
    _Atomic int udp_pings, udp_closed, waited, future_calls;
    sem_t done;
} fx;

/* Anything handed in by the foreign thread that runs: must stay 0. */
static _Atomic int foreign_calls;
static bool have_tls, have_zmq;
static char cert_dir[64]; /* "": no certificate (no openssl CLI): NEED_TLS rows are skipped */

/* ------------------------------------------------------------ callbacks */

static void foreign_cb(void *arg)
{
    (void)arg;
    atomic_fetch_add(&foreign_calls, 1);
}
static void foreign_read(iol_stream *s, const char *d, size_t n, int st, void *arg)
{
    (void)s, (void)d, (void)n, (void)st, (void)arg;
    atomic_fetch_add(&foreign_calls, 1);
}
static void foreign_connect(iol_stream *s, int st, void *arg)
{
    (void)s, (void)st, (void)arg;
    atomic_fetch_add(&foreign_calls, 1);
}
static void foreign_close(iol_stream *s, void *arg)
{
    (void)s, (void)arg;
    atomic_fetch_add(&foreign_calls, 1);
}
static void foreign_wm(iol_stream *s, bool above, void *arg)
{
    (void)s, (void)above, (void)arg;
    atomic_fetch_add(&foreign_calls, 1);
}
static void foreign_handler(int fd, unsigned ev, void *arg)
{
    (void)fd, (void)ev, (void)arg;
    atomic_fetch_add(&foreign_calls, 1);
}
static void foreign_signal(int signo, void *arg)
{
    (void)signo, (void)arg;
    atomic_fetch_add(&foreign_calls, 1);
}
static void foreign_zmq(void *socket, unsigned ev, void *arg)
{
    (void)socket, (void)ev, (void)arg;
    atomic_fetch_add(&foreign_calls, 1);
}
static void foreign_udp_recv(iol_udp *u, const iol_udp_datagram *d, unsigned n, int st, void *arg)
{
    (void)u, (void)d, (void)n, (void)st, (void)arg;
    atomic_fetch_add(&foreign_calls, 1);
}
static void foreign_udp_close(iol_udp *u, void *arg)
{
    (void)u, (void)arg;
    atomic_fetch_add(&foreign_calls, 1);
}
static int foreign_work(void *arg, void **result)
{
    (void)arg, (void)result;
    atomic_fetch_add(&foreign_calls, 1);
    return 0;
}

static void on_efd(int fd, unsigned ev, void *arg)
{
    (void)arg;
    uint64_t v;
    if (ev != IOL_READ)
        atomic_fetch_add(&fx.handler_bad, 1);
    if (read(fd, &v, sizeof v) == (ssize_t)sizeof v)
        atomic_fetch_add(&fx.handler_calls, 1);
}
static void on_timer(void *arg)
{
    (void)arg;
    atomic_fetch_add(&fx.timer_fired, 1);
}
static void on_prepare(void *arg)
{
    (void)arg;
    atomic_fetch_add(&fx.prepare_calls, 1);
}
static void on_check(void *arg)
{
    (void)arg;
    atomic_fetch_add(&fx.check_calls, 1);
}
static void on_signal(int signo, void *arg)
{
    (void)signo, (void)arg;
    atomic_fetch_add(&fx.signal_calls, 1);
}
static void on_tick(void *arg)
{
    (void)arg;
    atomic_fetch_add(&fx.ticks, 1);
}

/* Answers each "ping" with a "pong" to its sender. */
static void on_udp(iol_udp *u, const iol_udp_datagram *d, unsigned n, int status, void *arg)
{
    (void)arg;
    ck_assert_int_eq(status, 0);
    for (unsigned i = 0; i < n; i++) {
        ck_assert_uint_eq(d[i].len, 4);
        ck_assert(memcmp(d[i].data, "ping", 4) == 0);
        ck_assert_int_eq(iol_udp_send(u, "pong", 4, d[i].peer, d[i].peerlen), 0);
        atomic_fetch_add(&fx.udp_pings, 1);
    }
}
static void on_udp_close(iol_udp *u, void *arg)
{
    (void)u, (void)arg;
    atomic_fetch_add(&fx.udp_closed, 1);
}
static void on_waited(iol_stream *s, int status, void *arg)
{
    (void)s, (void)arg;
    ck_assert_int_eq(status, 0);
    atomic_fetch_add(&fx.waited, 1);
}

static void stream_works(void);

static void on_handshake(iol_stream *s, int status, void *arg)
{
    (void)s, (void)arg;
    ck_assert_int_eq(status, 0);
    sem_post(&fx.handshake);
}

/* ------------------------------------------------------ the loop thread */

static void *loop_main(void *arg)
{
    (void)arg;
    ck_assert_int_eq(iol_loop_start(fx.loop), 0);
    return NULL;
}

static void (*on_loop_fn)(void);
static void on_loop_trampoline(void *arg)
{
    (void)arg;
    on_loop_fn();
    sem_post(&fx.done);
}

/* Runs fn on the loop thread and waits for it. */
static void on_loop(void (*fn)(void))
{
    on_loop_fn = fn;
    ck_assert_int_eq(iol_loop_add_callback(fx.loop, on_loop_trampoline, NULL), 0);
    ck_assert_int_eq(sem_wait(&fx.done), 0);
}

static void nothing(void) {}

/* Waits (generously) until *counter exceeds before, the loop woken by a
 * callback round each time so hooks get iterations. */
static void wait_above(_Atomic int *counter, int before)
{
    double deadline = iol_test_now() + 10;
    while (atomic_load(counter) <= before) {
        ck_assert_msg(iol_test_now() < deadline, "timed out");
        on_loop(nothing);
        usleep(1000);
    }
}

/* ------------------------------------------------------------ fixture */

static void setup(unsigned needs)
{
    memset(&fx, 0, sizeof fx);
    fx.needs = needs;
    fx.efd = fx.s_fd = fx.peer = fx.file_fd = fx.udp_peer = -1;
    fx.spare[0] = fx.spare[1] = -1;
    ck_assert_int_eq(sem_init(&fx.done, 0, 0), 0);
    /* The poller comes from $IOL_POLLER (`meson test --setup uring`). */
    ck_assert_int_eq(iol_loop_new(&fx.loop, &(iol_loop_config){ .make_current = IOL_CURRENT_NEVER }), 0);
    /* Everything below is done before the loop runs: any one thread may. */
    if (needs & NEED_STREAM) {
        int sv[2];
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        fx.s_fd = sv[0];
        fx.peer = sv[1];
        ck_assert_int_eq(iol_stream_new(&fx.s, fx.loop, fx.s_fd, 0), 0);
        if (needs & NEED_PREFILL) {
            int small = 4096;
            ck_assert_int_eq(setsockopt(fx.s_fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
            char *junk = malloc(PREFILL_BYTES);
            memset(junk, 'a', PREFILL_BYTES);
            ck_assert_int_eq(iol_stream_write(fx.s, junk, PREFILL_BYTES, NULL, NULL), 0);
            free(junk);
            ck_assert_uint_gt(iol_stream_write_buffer_size(fx.s), 0);
        }
    }
    if (needs & NEED_TLS) {
        char cert[128], key[128];
        snprintf(cert, sizeof cert, "%s/cert.pem", cert_dir);
        snprintf(key, sizeof key, "%s/key.pem", cert_dir);
        ck_assert_int_eq(iol_tls_ctx_new(&fx.sctx, &(iol_tls_config){ .server = true, .cert_file = cert,
                                                                       .key_file = key, .alpn = "x" }), 0);
        ck_assert_int_eq(iol_tls_ctx_new(&fx.cctx, &(iol_tls_config){ .insecure_no_verify = true, .alpn = "x" }), 0);
        int sv[2];
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        fx.s_fd = sv[0];
        ck_assert_int_eq(iol_tls_stream_new(&fx.s, fx.loop, sv[0], fx.sctx, 0), 0);
        ck_assert_int_eq(iol_stream_new(&fx.c, fx.loop, sv[1], 0), 0);
        ck_assert_int_eq(sem_init(&fx.handshake, 0, 0), 0);
        ck_assert_int_eq(iol_stream_start_tls(fx.c, fx.cctx, "localhost", on_handshake, NULL), 0);
    }
    if (needs & NEED_SPARE)
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fx.spare), 0);
    if (needs & NEED_HANDLER) {
        fx.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        ck_assert_int_ge(fx.efd, 0);
        ck_assert_int_eq(iol_loop_add_handler(fx.loop, fx.efd, IOL_READ, on_efd, NULL), 0);
    }
    if (needs & NEED_TIMER)
        ck_assert_int_eq(iol_loop_call_later(fx.loop, 0.2, on_timer, NULL, &fx.timer), 0);
    if (needs & NEED_HOOKS) {
        ck_assert_int_eq(iol_loop_add_prepare(fx.loop, on_prepare, NULL), 0);
        ck_assert_int_eq(iol_loop_add_check(fx.loop, on_check, NULL), 0);
    }
    if (needs & NEED_SIGNAL)
        ck_assert_int_eq(iol_loop_add_signal(fx.loop, SIGUSR2, on_signal, NULL), 0);
    if (needs & (NEED_PERIODIC | NEED_PERIODIC_IDLE)) {
        ck_assert_int_eq(iol_periodic_new(&fx.pc, fx.loop, 5, on_tick, NULL), 0);
        if (needs & NEED_PERIODIC)
            ck_assert_int_eq(iol_periodic_start(fx.pc), 0);
    }
    if (needs & NEED_UDP) {
        ck_assert_int_eq(iol_udp_new(&fx.u, fx.loop, &(iol_udp_config){ .host = "127.0.0.1" }), 0);
        fx.u_len = sizeof fx.u_addr;
        ck_assert_int_eq(iol_udp_local_address(fx.u, (struct sockaddr *)&fx.u_addr, &fx.u_len), 0);
        ck_assert_int_eq(iol_udp_recv_start(fx.u, on_udp, NULL), 0);
        fx.udp_peer = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(fx.udp_peer, 0);
        fx.peer_len = sizeof fx.peer_addr;
        ck_assert_int_eq(iol_udp_address("127.0.0.1", 0, &fx.peer_addr, &fx.peer_len), 0);
        ck_assert_int_eq(bind(fx.udp_peer, (struct sockaddr *)&fx.peer_addr, fx.peer_len), 0);
        ck_assert_int_eq(getsockname(fx.udp_peer, (struct sockaddr *)&fx.peer_addr, &fx.peer_len), 0);
    }
    if (needs & NEED_UDP_FULL) {
        int sv[2];
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv), 0);
        ck_assert_int_eq(iol_udp_open(&fx.u, fx.loop, sv[0], NULL), 0);
        fx.udp_peer = sv[1];
        static const char d[1024];
        for (int i = 0; i < 100000 && iol_udp_send_queue_size(fx.u) == 0; i++)
            ck_assert_int_eq(iol_udp_send(fx.u, d, sizeof d, NULL, 0), 0);
        ck_assert_uint_gt(iol_udp_send_queue_size(fx.u), 0);
    }
    if (fx.u)
        ck_assert_int_eq(iol_udp_set_close_callback(fx.u, on_udp_close, NULL), 0);
    fx.handlers_before = iol_loop_handler_count(fx.loop);
    ck_assert_int_eq(pthread_create(&fx.thread, NULL, loop_main, NULL), 0);
    double deadline = iol_test_now() + 10;
    while (!iol_loop_running(fx.loop)) {
        ck_assert(iol_test_now() < deadline);
        usleep(100);
    }
    on_loop(nothing); /* the loop has run an iteration */
    if (needs & NEED_TLS) {
        ck_assert_int_eq(sem_wait(&fx.handshake), 0);
        stream_works(); /* the server's end of the handshake too */
        on_loop(nothing);
    }
}

/* ----------------------------------------------------- generic checks */

static void stream_unchanged(void)
{
    ck_assert(!iol_stream_closed(fx.s));
    ck_assert_int_eq(iol_stream_fd(fx.s), fx.s_fd);
    ck_assert_int_eq(iol_stream_error(fx.s), 0);
    ck_assert(iol_stream_is_tls(fx.s) == !!(fx.needs & NEED_TLS));
    if (!(fx.needs & NEED_PREFILL))
        ck_assert_uint_eq(iol_stream_write_buffer_size(fx.s), 0);
}

static void on_ping(iol_stream *s, const char *data, size_t len, int status, void *arg)
{
    (void)arg;
    ck_assert_int_eq(status, 0);
    ck_assert_uint_eq(len, 5);
    ck_assert(memcmp(data, "ping\n", 5) == 0);
    ck_assert_int_eq(iol_stream_write(s, "pong\n", 5, NULL, NULL), 0);
    /* Written at once: no write limit, no deferred writes were set. */
    if (!(fx.needs & (NEED_PREFILL | NEED_TLS)))
        ck_assert_uint_eq(iol_stream_write_buffer_size(s), 0);
    sem_post(&fx.done);
}

static void start_ping_read(void)
{
    ck_assert_int_eq(iol_stream_read_until(fx.s, "\n", on_ping, NULL), 0);
}

/* TLS: the client stream is the peer; it must get exactly "pong\n". */
static void on_pong(iol_stream *s, const char *data, size_t len, int status, void *arg)
{
    (void)s, (void)arg;
    ck_assert_int_eq(status, 0);
    ck_assert_uint_eq(len, 5);
    ck_assert(memcmp(data, "pong\n", 5) == 0);
    sem_post(&fx.done);
}

static void start_tls_ping(void)
{
    ck_assert_int_eq(iol_stream_read_until(fx.s, "\n", on_ping, NULL), 0);
    ck_assert_int_eq(iol_stream_read_until(fx.c, "\n", on_pong, NULL), 0);
    ck_assert_int_eq(iol_stream_write(fx.c, "ping\n", 5, NULL, NULL), 0);
}

/* The stream still reads and writes: a line each way, and the peer gets
 * exactly what the loop thread wrote (nothing from the foreign call). */
static void stream_works(void)
{
    if (fx.needs & NEED_TLS) {
        on_loop(start_tls_ping);
        ck_assert_int_eq(sem_wait(&fx.done), 0); /* on_ping */
        ck_assert_int_eq(sem_wait(&fx.done), 0); /* on_pong */
        return;
    }
    on_loop(start_ping_read);
    ck_assert_int_eq(write(fx.peer, "ping\n", 5), 5);
    ck_assert_int_eq(sem_wait(&fx.done), 0);
    size_t want = ((fx.needs & NEED_PREFILL) ? PREFILL_BYTES : 0) + 5, got = 0;
    char *buf = malloc(want + 64);
    double deadline = iol_test_now() + 10;
    while (got < want) {
        struct pollfd p = { fx.peer, POLLIN, 0 };
        ck_assert_msg(iol_test_now() < deadline, "peer timed out after %zu of %zu bytes", got, want);
        if (poll(&p, 1, 100) <= 0)
            continue;
        ssize_t n = read(fx.peer, buf + got, want + 64 - got);
        ck_assert_int_gt(n, 0);
        got += (size_t)n;
    }
    ck_assert_uint_eq(got, want);
    ck_assert(memcmp(buf + want - 5, "pong\n", 5) == 0);
    for (size_t i = 0; i + 5 < want; i++)
        ck_assert(buf[i] == 'a');
    free(buf);
}

static void udp_unchanged(void)
{
    ck_assert_int_ge(iol_udp_fd(fx.u), 0);
    ck_assert_uint_eq(iol_udp_send_queue_size(fx.u), 0);
    iol_udp_stats st;
    ck_assert_int_eq(iol_udp_get_stats(fx.u, &st, sizeof st), 0);
    ck_assert_uint_eq(st.sent, (uint64_t)atomic_load(&fx.udp_pings)); /* pongs only */
    ck_assert_uint_eq(st.queued, 0);
}

/* The udp socket still receives and sends: a "ping" from the peer comes
 * back as a "pong", the first datagram the peer gets (nothing of the
 * foreign call went out before it). */
static void udp_works(void)
{
    int before = atomic_load(&fx.udp_pings);
    ck_assert_int_eq(sendto(fx.udp_peer, "ping", 4, 0, (struct sockaddr *)&fx.u_addr, fx.u_len), 4);
    wait_above(&fx.udp_pings, before);
    char buf[64];
    struct pollfd p = { fx.udp_peer, POLLIN, 0 };
    ck_assert_int_eq(poll(&p, 1, 10000), 1);
    ck_assert_int_eq(recv(fx.udp_peer, buf, sizeof buf, 0), 4);
    ck_assert(memcmp(buf, "pong", 4) == 0);
}

static void check_handler_count(void)
{
    ck_assert_int_eq(iol_loop_handler_count(fx.loop), fx.handlers_before);
}

static void generic_checks(void)
{
    on_loop(check_handler_count);
    if (fx.needs & (NEED_STREAM | NEED_TLS)) {
        on_loop(stream_unchanged);
        stream_works();
    }
    if (fx.needs & NEED_HANDLER) {
        int before = atomic_load(&fx.handler_calls);
        uint64_t one = 1;
        ck_assert_int_eq(write(fx.efd, &one, sizeof one), (ssize_t)sizeof one);
        wait_above(&fx.handler_calls, before);
        ck_assert_int_eq(atomic_load(&fx.handler_bad), 0);
    }
    if (fx.needs & NEED_TIMER)
        wait_above(&fx.timer_fired, 0);
    if (fx.needs & NEED_HOOKS) {
        wait_above(&fx.prepare_calls, atomic_load(&fx.prepare_calls));
        wait_above(&fx.check_calls, atomic_load(&fx.check_calls));
    }
    if (fx.needs & NEED_SIGNAL) {
        ck_assert_int_eq(kill(getpid(), SIGUSR2), 0);
        wait_above(&fx.signal_calls, 0);
    }
    if (fx.needs & NEED_PERIODIC)
        wait_above(&fx.ticks, atomic_load(&fx.ticks) + 1);
    if (fx.expect_future) {
        wait_above(&fx.future_calls, 0);
        ck_assert_int_eq(fx.future_status, fx.expect_future);
    }
    if (fx.needs & NEED_UDP) {
        on_loop(udp_unchanged);
        udp_works();
        on_loop(udp_unchanged);
    }
}

static void close_all(void)
{
    if (fx.s)
        ck_assert_int_eq(iol_stream_close(fx.s), 0);
    if (fx.c)
        ck_assert_int_eq(iol_stream_close(fx.c), 0);
    if (fx.pc)
        iol_periodic_free(fx.pc);
    if (fx.made)
        iol_periodic_free(fx.made);
    if (fx.needs & NEED_HANDLER)
        ck_assert_int_eq(iol_loop_close_fd(fx.loop, fx.efd), 0);
    if (fx.needs & NEED_SIGNAL)
        ck_assert_int_eq(iol_loop_remove_signal(fx.loop, SIGUSR2, on_signal, NULL), 0);
    iol_loop_stop(fx.loop);
}

static void teardown(void)
{
    on_loop(close_all); /* which stops the loop */
    ck_assert_int_eq(pthread_join(fx.thread, NULL), 0);
    ck_assert_int_ge(iol_loop_close(fx.loop, true), 0);
    /* fx.u was left to the loop's close, which runs its close callback:
     * ours, not one a foreign thread tried to set. */
    ck_assert_int_eq(atomic_load(&fx.udp_closed), fx.u ? 1 : 0);
    ck_assert_int_eq(atomic_load(&fx.waited), fx.expect_waited);
    ck_assert_int_eq(atomic_load(&fx.future_calls), fx.expect_future ? 1 : 0);
    iol_future_unref(fx.future);
    if (fx.udp_peer >= 0)
        close(fx.udp_peer);
    if (fx.peer >= 0)
        close(fx.peer);
    for (int i = 0; i < 2; i++)
        if (fx.spare[i] >= 0)
            close(fx.spare[i]);
    if (fx.file_fd >= 0)
        close(fx.file_fd);
    iol_tls_ctx_unref(fx.sctx);
    iol_tls_ctx_unref(fx.cctx);
    ck_assert_int_eq(atomic_load(&foreign_calls), 0);
    sem_destroy(&fx.done);
}

/* ------------------------------------------------------------- streams */

static int call_read_until(void) { return iol_stream_read_until(fx.s, "\n", foreign_read, NULL); }
static int call_read_until_max(void) { return iol_stream_read_until_max(fx.s, "\n", 100, foreign_read, NULL); }
static int call_read_bytes(void) { return iol_stream_read_bytes(fx.s, 1, false, foreign_read, NULL); }
static int call_read_until_close(void) { return iol_stream_read_until_close(fx.s, foreign_read, NULL); }
static int call_pause_reading(void) { return iol_stream_pause_reading(fx.s); }
static int call_resume_reading(void) { return iol_stream_resume_reading(fx.s); }
static int call_write(void) { return iol_stream_write(fx.s, "X", 1, foreign_cb, NULL); }
static int call_write_ref(void) { return iol_stream_write_ref(fx.s, "X", 1, foreign_cb, NULL); }
static int call_sendfile(void)
{
    char path[] = "/tmp/iol-threadrules-XXXXXX";
    fx.file_fd = mkstemp(path);
    ck_assert_int_ge(fx.file_fd, 0);
    unlink(path);
    ck_assert_int_eq(write(fx.file_fd, "X", 1), 1);
    return iol_stream_sendfile(fx.s, fx.file_fd, 0, 1, foreign_cb, NULL);
}
static int call_set_max_write_buffer(void) { return iol_stream_set_max_write_buffer(fx.s, 1); }
static int call_set_deferred_writes(void) { return iol_stream_set_deferred_writes(fx.s, true); }
static int call_set_write_watermarks(void) { return iol_stream_set_write_watermarks(fx.s, 1, 0, foreign_wm, NULL); }
static int call_set_close_callback(void) { return iol_stream_set_close_callback(fx.s, foreign_close, NULL); }
static int call_close(void) { return iol_stream_close(fx.s); }
static int call_start_tls(void) { return iol_stream_start_tls(fx.s, NULL, NULL, foreign_connect, NULL); }
static int call_tls_alpn(void)
{
    char buf[16];
    return iol_stream_tls_alpn(fx.s, buf, sizeof buf);
}
/* Getters that cannot say -EPERM answer a fixed value from another thread. */
static int call_closed(void) { return iol_stream_closed(fx.s); }
static int call_fd(void) { return iol_stream_fd(fx.s); }
static int call_error(void) { return iol_stream_error(fx.s); }
static int call_write_buffer_size(void) { return (int)iol_stream_write_buffer_size(fx.s); }
static int call_is_tls(void) { return iol_stream_is_tls(fx.s); }
static int call_tls_resumed(void) { return iol_stream_tls_resumed(fx.s); }
static int call_stream_loop(void) { return iol_stream_loop(fx.s) == fx.loop; } /* any thread */

/* The later reads and the graceful close: a read armed or a shutdown
 * begun by the foreign call would make the generic checks fail (the
 * loop's read_until says -EBUSY, its write -EPIPE). */
static int call_shutdown(void) { return iol_stream_shutdown(fx.s, foreign_connect, NULL); }
static int call_read_until_regex(void) { return iol_stream_read_until_regex(fx.s, "\n", 0, foreign_read, NULL); }
static char into_buf[8];
static int call_read_into(void) { return iol_stream_read_into(fx.s, into_buf, sizeof into_buf, true, foreign_read, NULL); }
static int call_read_bytes_streaming(void)
{
    return iol_stream_read_bytes_streaming(fx.s, 1, foreign_read, foreign_read, NULL);
}
static int call_read_until_close_streaming(void)
{
    return iol_stream_read_until_close_streaming(fx.s, foreign_read, foreign_read, NULL);
}
static int call_wait_for_handshake(void) { return iol_stream_wait_for_handshake(fx.s, foreign_connect, NULL); }
/* The foreign call took no waiter's place: one for the loop thread is
 * accepted (not -EBUSY) and answered (teardown counts it). */
static void check_wait_free(void)
{
    ck_assert_int_eq(iol_stream_wait_for_handshake(fx.s, on_waited, NULL), 0);
    fx.expect_waited = 1;
}

/* What the handshake settled, read on the client end (fx.c), which has
 * the server's certificate: the buffer the foreign thread passes in stays
 * as it was (nothing is read). */
static char info_buf[4096];
static int tls_info_call(int (*fn)(const iol_stream *, char *, size_t))
{
    memset(info_buf, 'Z', sizeof info_buf);
    int r = fn(fx.c, info_buf, sizeof info_buf);
    for (size_t i = 0; i < sizeof info_buf; i++)
        ck_assert_msg(info_buf[i] == 'Z', "byte %zu written", i);
    return r;
}
static int call_tls_verify_result(void) { return tls_info_call(iol_stream_tls_verify_result); }
static int call_tls_peer_subject(void) { return tls_info_call(iol_stream_tls_peer_subject); }
static int call_tls_peer_sans(void) { return tls_info_call(iol_stream_tls_peer_sans); }
static int call_tls_peer_cert_pem(void) { return tls_info_call(iol_stream_tls_peer_cert_pem); }
static int call_tls_cipher(void) { return tls_info_call(iol_stream_tls_cipher); }
static int call_tls_version(void) { return iol_stream_tls_version(fx.c); }
/* The loop thread reads them all (insecure_no_verify: no check made). */
static void check_tls_info(void)
{
    ck_assert_int_eq(iol_stream_tls_verify_result(fx.c, info_buf, sizeof info_buf), 0);
    ck_assert_int_gt(iol_stream_tls_peer_subject(fx.c, info_buf, sizeof info_buf), 0);
    ck_assert_int_ge(iol_stream_tls_peer_sans(fx.c, info_buf, sizeof info_buf), 0);
    ck_assert_int_gt(iol_stream_tls_peer_cert_pem(fx.c, info_buf, sizeof info_buf), 0);
    ck_assert_int_gt(iol_stream_tls_cipher(fx.c, info_buf, sizeof info_buf), 0);
    int v = iol_stream_tls_version(fx.c);
    ck_assert(v == IOL_TLS_1_2 || v == IOL_TLS_1_3);
}

static void check_resume_on_loop(void)
{
    ck_assert_int_eq(iol_stream_resume_reading(fx.s), 0); /* still paused until now */
}
static void pause_before(void)
{
    ck_assert_int_eq(iol_stream_pause_reading(fx.s), 0);
}
static void check_is_tls(void)
{
    ck_assert(iol_stream_is_tls(fx.s));
}
static void check_alpn(void)
{
    char buf[8];
    ck_assert_int_eq(iol_stream_tls_alpn(fx.s, buf, sizeof buf), 1);
    ck_assert_str_eq(buf, "x");
}
static void check_write_buffer_size(void)
{
    ck_assert_uint_gt(iol_stream_write_buffer_size(fx.s), 0);
}

/* Constructors: the fd stays free (no handler, no claim, not owned). */
static iol_stream *const untouched = (iol_stream *)(uintptr_t)0x1;
static iol_stream *made_stream;
static int call_stream_new(void)
{
    made_stream = untouched;
    return iol_stream_new(&made_stream, fx.loop, fx.spare[0], 0);
}
static int call_tls_stream_new(void)
{
    made_stream = untouched;
    return iol_tls_stream_new(&made_stream, fx.loop, fx.spare[0], NULL, 0);
}
static int call_connect(void)
{
    made_stream = untouched;
    return iol_stream_connect(&made_stream, fx.loop, "127.0.0.1", 9, 0, foreign_connect, NULL);
}
static int call_connect_ex(void)
{
    made_stream = untouched;
    return iol_stream_connect_ex(&made_stream, fx.loop, "127.0.0.1", 9, NULL, foreign_connect, NULL);
}
static int call_connect_unix(void)
{
    made_stream = untouched;
    return iol_stream_connect_unix(&made_stream, fx.loop, "/nonexistent/iol", NULL, foreign_connect, NULL);
}
static int call_tls_connect(void)
{
    made_stream = untouched;
    return iol_tls_connect(&made_stream, fx.loop, "127.0.0.1", 9, NULL, NULL, NULL, foreign_connect, NULL);
}
static void check_fd_free(void)
{
    ck_assert_ptr_eq(made_stream, untouched);
    iol_stream *s;
    ck_assert_int_eq(iol_stream_new(&s, fx.loop, fx.spare[0], 0), 0); /* not -EEXIST */
    ck_assert_int_eq(iol_stream_close(s), 0); /* closes spare[0] */
    fx.spare[0] = -1;
}
static void check_nothing_made(void)
{
    ck_assert_ptr_eq(made_stream, untouched);
}

/* ------------------------------------------------------------ handlers */

static int spare_efd = -1;
static int call_add_handler(void)
{
    spare_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    return iol_loop_add_handler(fx.loop, spare_efd, IOL_READ, foreign_handler, NULL);
}
static void check_add_handler(void)
{
    ck_assert_int_eq(iol_loop_add_handler(fx.loop, spare_efd, IOL_READ, on_efd, NULL), 0); /* not -EEXIST */
    ck_assert_int_eq(iol_loop_close_fd(fx.loop, spare_efd), 0);
}
static int call_update_handler(void) { return iol_loop_update_handler(fx.loop, fx.efd, IOL_READ | IOL_WRITE); }
static int call_remove_handler(void) { return iol_loop_remove_handler(fx.loop, fx.efd); }
static int call_close_fd(void) { return iol_loop_close_fd(fx.loop, fx.efd); }
static void check_efd_open(void)
{
    ck_assert_int_ge(fcntl(fx.efd, F_GETFD), 0);
}

/* ------------------------------------------------------------ timeouts */

static iol_timeout foreign_timeout;
static int call_call_at(void)
{
    foreign_timeout = 77;
    return iol_loop_call_at(fx.loop, 0, foreign_cb, NULL, &foreign_timeout);
}
static int call_call_later(void)
{
    foreign_timeout = 77;
    return iol_loop_call_later(fx.loop, 0, foreign_cb, NULL, &foreign_timeout);
}
static int call_add_timeout(void)
{
    foreign_timeout = 77;
    return iol_loop_add_timeout(fx.loop, 0, foreign_cb, NULL, &foreign_timeout);
}
static void check_no_timeout_made(void)
{
    ck_assert_uint_eq(foreign_timeout, 77);
}
static int call_remove_timeout(void) { return iol_loop_remove_timeout(fx.loop, fx.timer); }

/* --------------------------------------------------- hooks and signals */

static int call_add_prepare(void) { return iol_loop_add_prepare(fx.loop, foreign_cb, NULL); }
static int call_add_check(void) { return iol_loop_add_check(fx.loop, foreign_cb, NULL); }
static int call_remove_prepare(void) { return iol_loop_remove_prepare(fx.loop, on_prepare, NULL); }
static int call_remove_check(void) { return iol_loop_remove_check(fx.loop, on_check, NULL); }
static int call_add_signal(void) { return iol_loop_add_signal(fx.loop, SIGUSR1, foreign_signal, NULL); }
static int call_remove_signal(void) { return iol_loop_remove_signal(fx.loop, SIGUSR2, on_signal, NULL); }
static void check_sigusr1_free(void)
{
    ck_assert_int_eq(iol_loop_add_signal(fx.loop, SIGUSR1, on_signal, NULL), 0);
    ck_assert_int_eq(iol_loop_remove_signal(fx.loop, SIGUSR1, on_signal, NULL), 0);
}

/* ------------------------------------------------------ loop settings */

static int call_set_blocking_signal_threshold(void)
{
    return iol_loop_set_blocking_signal_threshold(fx.loop, 0, NULL);
}
static int call_set_blocking_log_threshold(void) { return iol_loop_set_blocking_log_threshold(fx.loop, 0); }
static int call_set_call_timing(void) { return iol_loop_set_call_timing(fx.loop, true); }
static void check_no_call_timing(void)
{
    iol_loop_stats st;
    ck_assert_int_eq(iol_loop_get_stats(fx.loop, &st, sizeof st), 0);
    ck_assert_uint_eq(st.longest_callback_ns, 0); /* timing stayed off */
}
static int call_backend_timeout(void)
{
    double t = 0;
    return iol_loop_backend_timeout(fx.loop, &t);
}
static int call_loop_close(void) { return iol_loop_close(fx.loop, false); }
/* Running the loop: any one thread at a time, so -EBUSY (not -EPERM). */
static int call_loop_start(void) { return iol_loop_start(fx.loop); }
static int call_run_once(void) { return iol_loop_run_once(fx.loop, 0); }
static int foreign_sync(iol_loop *loop, iol_future *done, void *arg)
{
    (void)loop, (void)done, (void)arg;
    atomic_fetch_add(&foreign_calls, 1);
    return 0;
}
static int call_run_sync(void) { return iol_loop_run_sync(fx.loop, foreign_sync, NULL, 1, NULL); }
static int call_set_default_executor(void)
{
    iol_executor *ex;
    ck_assert_int_eq(iol_executor_new(&ex, 1), 0);
    int r = iol_loop_set_default_executor(fx.loop, ex);
    iol_executor_free(ex); /* refused: the loop does not hold it */
    return r;
}
static iol_future *const no_future = (iol_future *)(uintptr_t)0x1;
static iol_future *foreign_future;
static int call_run_in_executor(void)
{
    foreign_future = no_future;
    return iol_loop_run_in_executor(fx.loop, NULL, foreign_work, NULL, &foreign_future);
}
static void check_no_future(void)
{
    ck_assert_ptr_eq(foreign_future, no_future);
}

/* Any thread: a future's callback registered from the foreign thread runs
 * on the loop thread, once; release (only for a loop closed first) never. */
static void on_future(iol_future *f, void *arg)
{
    (void)arg;
    ck_assert(pthread_equal(pthread_self(), fx.thread));
    void *res;
    fx.future_status = iol_future_result(f, &res);
    if (fx.future_status == 0)
        fx.future_status = (int)(intptr_t)res;
    atomic_fetch_add(&fx.future_calls, 1);
}
static void foreign_release(void *arg)
{
    foreign_cb(arg);
}
static int call_add_future_ex(void)
{
    ck_assert_int_eq(iol_future_new(&fx.future), 0);
    return iol_loop_add_future_ex(fx.loop, fx.future, on_future, NULL, foreign_release);
}
static void check_future_resolve(void)
{
    ck_assert_int_eq(iol_future_set_result(fx.future, (void *)(intptr_t)7), 0);
    fx.expect_future = 7;
}
static int call_future_cancel(void)
{
    ck_assert_int_eq(iol_future_new(&fx.future), 0);
    ck_assert_int_eq(iol_loop_add_future(fx.loop, fx.future, on_future, NULL), 0);
    return iol_future_cancel(fx.future);
}
static void check_future_cancelled(void)
{
    fx.expect_future = -ECANCELED;
}

/* A pointer that is no zmq socket: the thread check must answer before
 * anything dereferences it. Without libzmq: -ENOTSUP (expected then). */
static int zmq_dummy;
static int call_add_zmq_handler(void) { return iol_loop_add_zmq_handler(fx.loop, &zmq_dummy, IOL_READ, foreign_zmq, NULL); }
static int call_update_zmq_handler(void) { return iol_loop_update_zmq_handler(fx.loop, &zmq_dummy, IOL_READ); }
static int call_remove_zmq_handler(void) { return iol_loop_remove_zmq_handler(fx.loop, &zmq_dummy); }

/* ------------------------------------------------------------ periodic */

static int call_periodic_start(void) { return iol_periodic_start(fx.pc); }
static int call_periodic_stop(void) { return iol_periodic_stop(fx.pc); }
static int call_periodic_set_jitter(void) { return iol_periodic_set_jitter(fx.pc, 0.5); }
static int call_periodic_is_running(void) { return iol_periodic_is_running(fx.pc); }
static int call_periodic_free(void)
{
    iol_periodic_free(fx.pc); /* refused (logged): the loop may hold it */
    return 0;
}
static int call_periodic_new(void) /* any thread: the object is inert until started */
{
    return iol_periodic_new(&fx.made, fx.loop, 5, foreign_cb, NULL);
}
static void check_periodic_idle(void)
{
    ck_assert(!iol_periodic_is_running(fx.pc));
    ck_assert_int_eq(atomic_load(&fx.ticks), 0);
}
static void check_periodic_running(void)
{
    ck_assert(iol_periodic_is_running(fx.pc));
}

/* ------------------------------------------------------------ datagrams */

static iol_udp *const no_udp = (iol_udp *)(uintptr_t)0x1;
static iol_udp *made_udp;
static int call_udp_new(void)
{
    made_udp = no_udp;
    return iol_udp_new(&made_udp, fx.loop, &(iol_udp_config){ .host = "127.0.0.1" });
}
static int call_udp_open(void)
{
    made_udp = no_udp;
    fx.file_fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fx.file_fd, 0);
    return iol_udp_open(&made_udp, fx.loop, fx.file_fd, NULL);
}
static void check_no_udp_made(void)
{
    ck_assert_ptr_eq(made_udp, no_udp);
}
/* The fd stays the caller's, untouched (open makes it non-blocking). */
static void check_udp_fd_untouched(void)
{
    check_no_udp_made();
    int fl = fcntl(fx.file_fd, F_GETFL);
    ck_assert_int_ge(fl, 0);
    ck_assert(!(fl & O_NONBLOCK));
}
static int call_udp_connect(void)
{
    return iol_udp_connect(fx.u, (struct sockaddr *)&fx.peer_addr, fx.peer_len);
}
static void check_udp_unconnected(void)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    ck_assert_int_eq(getpeername(iol_udp_fd(fx.u), (struct sockaddr *)&ss, &len), -1);
    ck_assert_int_eq(errno, ENOTCONN);
}
static int call_udp_local_address(void)
{
    struct sockaddr_storage ss;
    memset(&ss, 0xab, sizeof ss);
    socklen_t len = sizeof ss;
    int r = iol_udp_local_address(fx.u, (struct sockaddr *)&ss, &len);
    ck_assert_uint_eq(len, sizeof ss);
    for (size_t i = 0; i < sizeof ss; i++)
        ck_assert(((unsigned char *)&ss)[i] == 0xab);
    return r;
}
static int call_udp_recv_start(void) { return iol_udp_recv_start(fx.u, foreign_udp_recv, NULL); }
static int call_udp_recv_stop(void) { return iol_udp_recv_stop(fx.u); }
static int call_udp_send(void)
{
    return iol_udp_send(fx.u, "X", 1, (struct sockaddr *)&fx.peer_addr, fx.peer_len);
}
static int call_udp_send_batch(void)
{
    iol_udp_msg m = { .data = "X", .len = 1, .to = (struct sockaddr *)&fx.peer_addr, .tolen = fx.peer_len };
    return iol_udp_send_batch(fx.u, &m, 1);
}
static int call_udp_send_gso(void)
{
    return iol_udp_send_gso(fx.u, "XX", 2, 1, (struct sockaddr *)&fx.peer_addr, fx.peer_len);
}
static int call_udp_send_queue_size(void) { return (int)iol_udp_send_queue_size(fx.u); }
static void check_udp_queue_full(void)
{
    ck_assert_uint_gt(iol_udp_send_queue_size(fx.u), 0);
}
static int call_udp_set_close_callback(void) { return iol_udp_set_close_callback(fx.u, foreign_udp_close, NULL); }
static int call_udp_close(void) { return iol_udp_close(fx.u); }
static int call_udp_fd(void) { return iol_udp_fd(fx.u); }
static int call_udp_loop(void) { return iol_udp_loop(fx.u) == fx.loop; } /* any thread */
static int call_udp_get_stats(void)
{
    iol_udp_stats st;
    memset(&st, 0xab, sizeof st);
    int r = iol_udp_get_stats(fx.u, &st, sizeof st);
    for (size_t i = 0; i < sizeof st; i++)
        ck_assert(((unsigned char *)&st)[i] == 0xab);
    return r;
}

/* --------------------------------------------------------------- table */

#define S NEED_STREAM
#define RULE(name, needs, expect, check) { #name, needs, call_##name, expect, check }
/* TLS calls answer -ENOTSUP before anything in a build without TLS, zmq
 * calls without libzmq; main() fixes these two up. */
#define TLS_EPERM 1000
#define ZMQ_EPERM 1001

static const row rows[] = {
    /* streams */
    RULE(read_until, S, -EPERM, NULL),
    RULE(read_until_max, S, -EPERM, NULL),
    RULE(read_bytes, S, -EPERM, NULL),
    RULE(read_until_close, S, -EPERM, NULL),
    RULE(pause_reading, S, -EPERM, NULL),
    RULE(write, S, -EPERM, NULL),
    RULE(write_ref, S, -EPERM, NULL),
    RULE(sendfile, S, -EPERM, NULL),
    RULE(set_max_write_buffer, S, -EPERM, NULL),
    RULE(set_deferred_writes, S, -EPERM, NULL),
    RULE(set_write_watermarks, S, -EPERM, NULL),
    RULE(set_close_callback, S, -EPERM, NULL),
    RULE(close, S, -EPERM, NULL),
    RULE(start_tls, S, TLS_EPERM, NULL),
    RULE(tls_alpn, S, TLS_EPERM, NULL),
    RULE(closed, S, 1, NULL),
    RULE(fd, S, -EPERM, NULL),
    RULE(error, S, -EPERM, NULL),
    RULE(write_buffer_size, S | NEED_PREFILL, 0, check_write_buffer_size),
    RULE(is_tls, S, 0, NULL),
    RULE(tls_resumed, S, 0, NULL),
    /* TLS streams: the same rule; the getters' answers differ from the
     * loop thread's (check_*). */
    { "is_tls on a TLS stream", NEED_TLS, call_is_tls, 0, check_is_tls },
    { "tls_alpn on a TLS stream", NEED_TLS, call_tls_alpn, TLS_EPERM, check_alpn },
    { "write on a TLS stream", NEED_TLS, call_write, -EPERM, NULL },
    { "pause_reading on a TLS stream", NEED_TLS, call_pause_reading, -EPERM, NULL },
    { "close on a TLS stream", NEED_TLS, call_close, -EPERM, NULL },
    RULE(stream_loop, S, 1, NULL),
    /* later stream calls */
    RULE(shutdown, S, -EPERM, NULL),
    RULE(read_until_regex, S, -EPERM, NULL),
    RULE(read_into, S, -EPERM, NULL),
    RULE(read_bytes_streaming, S, -EPERM, NULL),
    RULE(read_until_close_streaming, S, -EPERM, NULL),
    RULE(wait_for_handshake, S, TLS_EPERM, NULL),
    { "shutdown on a TLS stream", NEED_TLS, call_shutdown, -EPERM, NULL },
    { "read_until_regex on a TLS stream", NEED_TLS, call_read_until_regex, -EPERM, NULL },
    { "wait_for_handshake on a TLS stream", NEED_TLS, call_wait_for_handshake, TLS_EPERM, check_wait_free },
    /* what the handshake settled */
    RULE(tls_verify_result, NEED_TLS, TLS_EPERM, check_tls_info),
    RULE(tls_peer_subject, NEED_TLS, TLS_EPERM, check_tls_info),
    RULE(tls_peer_sans, NEED_TLS, TLS_EPERM, check_tls_info),
    RULE(tls_peer_cert_pem, NEED_TLS, TLS_EPERM, check_tls_info),
    RULE(tls_version, NEED_TLS, TLS_EPERM, check_tls_info),
    RULE(tls_cipher, NEED_TLS, TLS_EPERM, check_tls_info),
    /* the same with the loop current on the foreign thread */
    { "tls_verify_result, loop current", NEED_TLS | FOREIGN_CURRENT, call_tls_verify_result, TLS_EPERM, check_tls_info },
    { "tls_peer_subject, loop current", NEED_TLS | FOREIGN_CURRENT, call_tls_peer_subject, TLS_EPERM, check_tls_info },
    { "tls_peer_sans, loop current", NEED_TLS | FOREIGN_CURRENT, call_tls_peer_sans, TLS_EPERM, check_tls_info },
    { "tls_peer_cert_pem, loop current", NEED_TLS | FOREIGN_CURRENT, call_tls_peer_cert_pem, TLS_EPERM, check_tls_info },
    { "tls_version, loop current", NEED_TLS | FOREIGN_CURRENT, call_tls_version, TLS_EPERM, check_tls_info },
    { "tls_cipher, loop current", NEED_TLS | FOREIGN_CURRENT, call_tls_cipher, TLS_EPERM, check_tls_info },
    { "tls_alpn, loop current", NEED_TLS | FOREIGN_CURRENT, call_tls_alpn, TLS_EPERM, check_alpn },
    { "write, loop current", S | FOREIGN_CURRENT, call_write, -EPERM, NULL },
    { "shutdown, loop current", S | FOREIGN_CURRENT, call_shutdown, -EPERM, NULL },
    /* stream constructors */
    RULE(stream_new, NEED_SPARE, -EPERM, check_fd_free),
    RULE(tls_stream_new, NEED_SPARE, TLS_EPERM, check_fd_free),
    RULE(connect, 0, -EPERM, check_nothing_made),
    RULE(connect_ex, 0, -EPERM, check_nothing_made),
    RULE(connect_unix, 0, -EPERM, check_nothing_made),
    RULE(tls_connect, 0, TLS_EPERM, check_nothing_made),
    /* fd handlers */
    RULE(add_handler, NEED_HANDLER, -EPERM, check_add_handler),
    RULE(update_handler, NEED_HANDLER, -EPERM, NULL),
    RULE(remove_handler, NEED_HANDLER, -EPERM, NULL),
    RULE(close_fd, NEED_HANDLER, -EPERM, check_efd_open),
    /* timeouts */
    RULE(call_at, NEED_TIMER, -EPERM, check_no_timeout_made),
    RULE(call_later, NEED_TIMER, -EPERM, check_no_timeout_made),
    RULE(add_timeout, NEED_TIMER, -EPERM, check_no_timeout_made),
    RULE(remove_timeout, NEED_TIMER, -EPERM, NULL),
    /* hooks, signals */
    RULE(add_prepare, NEED_HOOKS, -EPERM, NULL),
    RULE(add_check, NEED_HOOKS, -EPERM, NULL),
    RULE(remove_prepare, NEED_HOOKS, -EPERM, NULL),
    RULE(remove_check, NEED_HOOKS, -EPERM, NULL),
    RULE(add_signal, NEED_SIGNAL, -EPERM, check_sigusr1_free),
    RULE(remove_signal, NEED_SIGNAL, -EPERM, NULL),
    /* loop settings */
    RULE(set_blocking_signal_threshold, 0, -EPERM, NULL),
    RULE(set_blocking_log_threshold, 0, -EPERM, NULL),
    RULE(set_call_timing, 0, -EPERM, check_no_call_timing),
    RULE(backend_timeout, 0, -EPERM, NULL),
    RULE(loop_close, 0, -EPERM, NULL),
    RULE(loop_start, 0, -EBUSY, NULL),
    RULE(run_once, 0, -EBUSY, NULL),
    RULE(run_sync, 0, -EBUSY, NULL),
    RULE(set_default_executor, 0, -EPERM, NULL),
    RULE(run_in_executor, 0, -EPERM, check_no_future),
    RULE(add_future_ex, 0, 0, check_future_resolve),  /* any thread */
    RULE(future_cancel, 0, 0, check_future_cancelled), /* any thread */
    RULE(add_zmq_handler, 0, ZMQ_EPERM, NULL),
    RULE(update_zmq_handler, 0, ZMQ_EPERM, NULL),
    RULE(remove_zmq_handler, 0, ZMQ_EPERM, NULL),
    /* periodic */
    RULE(periodic_start, NEED_PERIODIC_IDLE, -EPERM, check_periodic_idle),
    RULE(periodic_stop, NEED_PERIODIC, -EPERM, check_periodic_running),
    RULE(periodic_set_jitter, NEED_PERIODIC, -EPERM, NULL),
    RULE(periodic_is_running, NEED_PERIODIC, 0, check_periodic_running),
    RULE(periodic_free, NEED_PERIODIC, 0, check_periodic_running),
    RULE(periodic_new, 0, 0, NULL),
    /* datagrams */
    RULE(udp_new, 0, -EPERM, check_no_udp_made),
    RULE(udp_open, 0, -EPERM, check_udp_fd_untouched),
    RULE(udp_connect, NEED_UDP, -EPERM, check_udp_unconnected),
    RULE(udp_local_address, NEED_UDP, -EPERM, NULL),
    RULE(udp_recv_start, NEED_UDP, -EPERM, NULL),
    RULE(udp_recv_stop, NEED_UDP, -EPERM, NULL),
    RULE(udp_send, NEED_UDP, -EPERM, NULL),
    RULE(udp_send_batch, NEED_UDP, -EPERM, NULL),
    RULE(udp_send_gso, NEED_UDP, -EPERM, NULL),
    RULE(udp_send_queue_size, NEED_UDP_FULL, 0, check_udp_queue_full),
    RULE(udp_set_close_callback, NEED_UDP, -EPERM, NULL),
    RULE(udp_close, NEED_UDP, -EPERM, NULL),
    RULE(udp_fd, NEED_UDP, -EPERM, NULL),
    RULE(udp_get_stats, NEED_UDP, -EPERM, NULL),
    RULE(udp_loop, NEED_UDP, 1, NULL),
    { "udp_send, loop current", NEED_UDP | FOREIGN_CURRENT, call_udp_send, -EPERM, NULL },
};

/* resume_reading needs the stream paused first (by the loop thread). */
static int call_resume_after_pause(void)
{
    return call_resume_reading();
}

static void run_row(const row *r, void (*before)(void))
{
    if ((r->needs & NEED_TLS) && (!have_tls || !cert_dir[0]))
        return; /* no TLS build, or no certificate */
    setup(r->needs);
    if (before)
        on_loop(before);
    fx.handlers_before = iol_loop_handler_count(fx.loop);
    int expect = r->expect;
    if (expect == TLS_EPERM)
        expect = have_tls ? -EPERM : -ENOTSUP;
    if (expect == ZMQ_EPERM)
        expect = have_zmq ? -EPERM : -ENOTSUP;
    if (r->needs & FOREIGN_CURRENT)
        ck_assert_int_eq(iol_loop_make_current(fx.loop), 0);
    int got = r->call();
    if (r->needs & FOREIGN_CURRENT)
        iol_loop_clear_current();
    ck_assert_msg(got == expect, "%s from a foreign thread: %d, want %d", r->name, got, expect);
    if (r->check)
        on_loop(r->check);
    generic_checks();
    teardown();
}

START_TEST(foreign_call)
{
    run_row(&rows[_i], NULL);
}
END_TEST

START_TEST(foreign_resume_reading)
{
    static const row r = { "resume_reading", S, call_resume_after_pause, -EPERM, check_resume_on_loop };
    run_row(&r, pause_before);
}
END_TEST

/* ------------------------------------------ the chat server's mistake */

/* Worker 1 writes to a stream of worker 0 (a chat server relaying a line
 * to every client): refused with -EPERM, and the stream, its connection
 * and worker 0's loop are as before; worker 0 then writes fine, and the
 * runtime's drain does not wait for anything left behind. */
static struct {
    iol_runtime *rt;
    iol_stream *s;
    int fd, peer;
    int rc_write, rc_max, rc_pause, rc_resume, rc_close;
    sem_t done;
} chat;

static void chat_make_stream(void *arg)
{
    (void)arg;
    ck_assert_int_eq(iol_stream_new(&chat.s, iol_runtime_loop(chat.rt, 0), chat.fd, 0), 0);
    ck_assert_int_eq(iol_stream_set_close_callback(chat.s, foreign_close, NULL), 0);
    sem_post(&chat.done);
}

static void chat_relay_from_worker1(void *arg)
{
    (void)arg;
    ck_assert_int_eq(iol_runtime_worker_index(), 1);
    chat.rc_write = iol_stream_write(chat.s, "relayed\n", 8, NULL, NULL);
    chat.rc_max = iol_stream_set_max_write_buffer(chat.s, 1);
    chat.rc_pause = iol_stream_pause_reading(chat.s);
    chat.rc_resume = iol_stream_resume_reading(chat.s);
    chat.rc_close = iol_stream_close(chat.s);
    sem_post(&chat.done);
}

static void chat_write_from_worker0(void *arg)
{
    (void)arg;
    ck_assert(!iol_stream_closed(chat.s));
    ck_assert_int_eq(iol_stream_error(chat.s), 0);
    ck_assert_int_eq(iol_stream_write(chat.s, "hello\n", 6, NULL, NULL), 0);
    ck_assert_uint_eq(iol_stream_write_buffer_size(chat.s), 0); /* no write limit was set */
    sem_post(&chat.done);
}

static void chat_close_on_worker0(void *arg)
{
    (void)arg;
    ck_assert_int_eq(iol_stream_set_close_callback(chat.s, NULL, NULL), 0);
    ck_assert_int_eq(iol_stream_close(chat.s), 0);
    sem_post(&chat.done);
}

START_TEST(worker_writes_to_another_workers_stream)
{
    memset(&chat, 0, sizeof chat);
    ck_assert_int_eq(sem_init(&chat.done, 0, 0), 0);
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    chat.fd = sv[0];
    chat.peer = sv[1];
    iol_runtime_config cfg = { .workers = 2, .drain_timeout = 5 };
    ck_assert_int_eq(iol_runtime_new(&chat.rt, &cfg), 0);
    ck_assert_int_eq(iol_runtime_start(chat.rt), 0);
    ck_assert_int_eq(iol_runtime_post(chat.rt, 0, chat_make_stream, NULL), 0);
    ck_assert_int_eq(sem_wait(&chat.done), 0);
    ck_assert_int_eq(iol_runtime_post(chat.rt, 1, chat_relay_from_worker1, NULL), 0);
    ck_assert_int_eq(sem_wait(&chat.done), 0);
    ck_assert_int_eq(chat.rc_write, -EPERM);
    ck_assert_int_eq(chat.rc_max, -EPERM);
    ck_assert_int_eq(chat.rc_pause, -EPERM);
    ck_assert_int_eq(chat.rc_resume, -EPERM);
    ck_assert_int_eq(chat.rc_close, -EPERM);
    ck_assert_int_eq(iol_runtime_post(chat.rt, 0, chat_write_from_worker0, NULL), 0);
    ck_assert_int_eq(sem_wait(&chat.done), 0);
    char buf[32];
    struct pollfd p = { chat.peer, POLLIN, 0 };
    ck_assert_int_eq(poll(&p, 1, 10000), 1);
    ck_assert_int_eq(read(chat.peer, buf, sizeof buf), 6); /* "relayed\n" never went out */
    ck_assert(memcmp(buf, "hello\n", 6) == 0);
    ck_assert_int_eq(iol_runtime_post(chat.rt, 0, chat_close_on_worker0, NULL), 0);
    ck_assert_int_eq(sem_wait(&chat.done), 0);
    double t0 = iol_test_now();
    ck_assert_int_eq(iol_runtime_stop(chat.rt), 0);
    ck_assert_int_eq(iol_runtime_join(chat.rt), 0);
    /* Nothing was left registered: the drain (5 s) ends at once. */
    ck_assert_msg(iol_test_now() - t0 < 4.0, "the drain waited %.2f s", iol_test_now() - t0);
    iol_runtime_free(chat.rt);
    close(chat.peer);
    ck_assert_int_eq(atomic_load(&foreign_calls), 0);
    sem_destroy(&chat.done);
}
END_TEST

/* ----------------------------------- a sharded udp socket of a worker */

/* iol_runtime_udp_socket hands out worker w's socket on worker w only:
 * from the test thread and from another worker, NULL (the slot is that
 * worker's, read unlocked); worker w gets it and it works. */
static struct {
    iol_runtime *rt;
    int id;
    iol_udp *own[2], *other[2];
    int fd[2];
    sem_t done;
} shard;

static void shard_recv(iol_udp *u, const iol_udp_datagram *d, unsigned n, int status, void *arg)
{
    (void)u, (void)d, (void)n, (void)status, (void)arg;
}

static void shard_ask(void *arg)
{
    unsigned w = (unsigned)(uintptr_t)arg;
    ck_assert_int_eq(iol_runtime_worker_index(), (int)w);
    shard.own[w] = iol_runtime_udp_socket(shard.rt, shard.id, w);
    shard.other[w] = iol_runtime_udp_socket(shard.rt, shard.id, 1 - w);
    shard.fd[w] = shard.own[w] ? iol_udp_fd(shard.own[w]) : -1;
    sem_post(&shard.done);
}

START_TEST(runtime_udp_socket_of_another_worker)
{
    memset(&shard, 0, sizeof shard);
    ck_assert_int_eq(sem_init(&shard.done, 0, 0), 0);
    ck_assert_int_eq(iol_runtime_new(&shard.rt, &(iol_runtime_config){ .workers = 2 }), 0);
    iol_udp_config ucfg = { .host = "127.0.0.1" };
    shard.id = iol_runtime_udp_bind(shard.rt, &(iol_udp_shard_config){ .udp = &ucfg, .on_recv = shard_recv });
    ck_assert_int_ge(shard.id, 0);
    ck_assert_int_eq(iol_runtime_start(shard.rt), 0);
    /* Posted after the bind's own posts from this thread: each worker has
     * wrapped its socket by then. */
    for (unsigned w = 0; w < 2; w++) {
        ck_assert_int_eq(iol_runtime_post(shard.rt, w, shard_ask, (void *)(uintptr_t)w), 0);
        ck_assert_int_eq(sem_wait(&shard.done), 0);
    }
    for (unsigned w = 0; w < 2; w++) {
        ck_assert_ptr_nonnull(shard.own[w]);
        ck_assert_ptr_null(shard.other[w]);
        ck_assert_int_ge(shard.fd[w], 0);
        ck_assert_ptr_null(iol_runtime_udp_socket(shard.rt, shard.id, w)); /* the test thread */
    }
    ck_assert_ptr_ne(shard.own[0], shard.own[1]);
    ck_assert_int_eq(iol_runtime_stop(shard.rt), 0);
    ck_assert_int_eq(iol_runtime_join(shard.rt), 0);
    iol_runtime_free(shard.rt);
    sem_destroy(&shard.done);
}
END_TEST

int main(void)
{
    iol_tls_ctx *probe = NULL;
    have_tls = iol_tls_ctx_new(&probe, &(iol_tls_config){ 0 }) != -ENOTSUP;
    iol_tls_ctx_unref(probe);
    if (have_tls && iol_test_make_cert(cert_dir, sizeof cert_dir) < 0)
        cert_dir[0] = '\0';
    iol_loop *l;
    if (iol_loop_new(&l, &(iol_loop_config){ .make_current = IOL_CURRENT_NEVER }) == 0) {
        have_zmq = iol_loop_remove_zmq_handler(l, &zmq_dummy) != -ENOTSUP;
        iol_loop_close(l, false);
    }
    Suite *s = suite_create("threadrules");
    TCase *tc = iol_test_tcase("foreign_thread", 60);
    tcase_add_loop_test(tc, foreign_call, 0, (int)(sizeof rows / sizeof rows[0]));
    tcase_add_test(tc, foreign_resume_reading);
    tcase_add_test(tc, worker_writes_to_another_workers_stream);
    tcase_add_test(tc, runtime_udp_socket_of_another_worker);
    suite_add_tcase(s, tc);
    return iol_test_run(s);
}
