/* Runtime stop with requests in flight: a raw fd handler application,
 * clients that connected and sent a request just before the stop, and
 * what they see: a reply and EOF, never a reset. */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ioloop.h"
#include "testutil.h"

enum { NCLIENTS = 16, REQ = 4 };

/* ------------------------------------------------------------ the app */

enum { MAX_FD = 1024, WORKERS = 2 };

/* Per-connection state, per worker (only that worker's thread touches its
 * row), indexed by fd. */
typedef struct app {
    iol_runtime *rt;
    bool use_hook;           /* finish connections once told to drain */
    bool close_in_stop;      /* on_stop closes the connections left */
    _Atomic int accepted;
    _Atomic int replies;
    _Atomic int drain_calls;
    bool open[WORKERS][MAX_FD];
    bool draining[WORKERS];
} app;

static unsigned me(void)
{
    return (unsigned)iol_runtime_worker_index();
}

static void app_close(int fd, app *a)
{
    a->open[me()][fd] = false;
    iol_loop_remove_handler(iol_loop_current(), fd);
    close(fd);
}

/* Reads requests of REQ bytes and answers each with "pong"; keeps the
 * connection until the client closes it. Draining, a connection gets FIN
 * after its answer. */
static void app_readable(int fd, unsigned events, void *arg)
{
    (void)events;
    app *a = arg;
    char buf[256];
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n > 0) {
        for (ssize_t i = 0; i + REQ <= n; i += REQ) {
            if (send(fd, "pong", 4, MSG_NOSIGNAL) == 4)
                atomic_fetch_add(&a->replies, 1);
        }
        if (a->draining[me()])
            shutdown(fd, SHUT_WR);
        return;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    app_close(fd, a);
}

static void app_accept(iol_loop *loop, int fd, const struct sockaddr *peer, socklen_t peerlen, void *arg)
{
    (void)peer;
    (void)peerlen;
    app *a = arg;
    ck_assert_int_lt(fd, MAX_FD);
    atomic_fetch_add(&a->accepted, 1);
    if (iol_loop_add_handler(loop, fd, IOL_READ, app_readable, a) < 0) {
        close(fd);
        return;
    }
    a->open[me()][fd] = true;
}

/* on_stop: closes what the app still holds (after the drain's deadline
 * the runtime has shut those down and discarded their input). */
static void app_stop(iol_loop *loop, unsigned index, void *arg)
{
    (void)loop;
    app *a = arg;
    if (!a->close_in_stop)
        return;
    for (int fd = 0; fd < MAX_FD; fd++)
        if (a->open[index][fd])
            app_close(fd, a);
}

/* The runtime is stopping. Idle connections (nothing unread) get FIN now;
 * the ones with a request pending get it after their answer. */
static void app_drain(iol_loop *loop, unsigned index, void *arg)
{
    app *a = arg;
    ck_assert_ptr_eq(loop, iol_loop_current());
    ck_assert_uint_eq(index, me());
    ck_assert(iol_runtime_stopping(a->rt));
    atomic_fetch_add(&a->drain_calls, 1);
    if (!a->use_hook)
        return;
    a->draining[index] = true;
    for (int fd = 0; fd < MAX_FD; fd++) {
        char c;
        if (a->open[index][fd] && recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) < 0 && errno == EAGAIN)
            shutdown(fd, SHUT_WR);
    }
}

/* --------------------------------------------------------- the clients */

typedef struct clients {
    uint16_t port;
    int n;
    _Atomic int sent; /* all connected and sent their request */
    int connected, resets, eofs, timeouts, pongs;
    double join_seconds_max; /* sums: the longest join */
} clients;

static int connect_v4(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    return fd;
}

/* Connects n clients, each sends one request; then reads every one of
 * them until EOF, reset or 15 s, and counts the outcomes. */
static void *clients_main(void *arg)
{
    clients *c = arg;
    int fds[NCLIENTS];
    size_t got[NCLIENTS] = {0};
    for (int i = 0; i < c->n; i++) {
        fds[i] = connect_v4(c->port);
        if (fds[i] < 0)
            continue;
        c->connected++;
        if (write(fds[i], "ping", REQ) != REQ) {
            close(fds[i]);
            fds[i] = -1;
            c->resets++;
        }
    }
    atomic_store(&c->sent, 1);
    double deadline = iol_test_now() + 15;
    int open = 0;
    for (int i = 0; i < c->n; i++)
        open += fds[i] >= 0;
    while (open > 0) {
        struct pollfd p[NCLIENTS];
        int map[NCLIENTS], np = 0;
        for (int i = 0; i < c->n; i++) {
            if (fds[i] >= 0) {
                p[np] = (struct pollfd){.fd = fds[i], .events = POLLIN};
                map[np++] = i;
            }
        }
        int left = (int)((deadline - iol_test_now()) * 1000);
        if (left <= 0 || poll(p, (nfds_t)np, left) <= 0) {
            c->timeouts += open;
            break;
        }
        for (int k = 0; k < np; k++) {
            if (!p[k].revents)
                continue;
            int i = map[k];
            char buf[64];
            ssize_t r = recv(fds[i], buf, sizeof(buf), 0);
            if (r > 0) {
                got[i] += (size_t)r;
                continue;
            }
            if (r < 0 && errno == EINTR)
                continue;
            if (r == 0) {
                c->eofs++;
                c->pongs += got[i] == 4;
            } else {
                c->resets += errno == ECONNRESET;
            }
            close(fds[i]);
            fds[i] = -1;
            open--;
        }
    }
    for (int i = 0; i < c->n; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    return NULL;
}

/* One round: a fresh runtime, n clients connect and send, stop at once,
 * join; the clients read until EOF. */
static void run_round(int shard, const iol_runtime_config *base, bool use_hook, clients *out)
{
    app *a = calloc(1, sizeof(*a));
    a->use_hook = use_hook;
    a->close_in_stop = base->on_stop != NULL;
    iol_runtime_config cfg = *base;
    cfg.workers = WORKERS;
    cfg.on_drain = app_drain;
    cfg.on_stop = app_stop;
    cfg.arg = a;
    ck_assert_int_eq(iol_runtime_new(&a->rt, &cfg), 0);
    iol_listen_config lc = {.host = "127.0.0.1", .shard = shard, .on_accept = app_accept, .arg = a};
    int id = iol_runtime_listen(a->rt, &lc);
    ck_assert_int_ge(id, 0);
    ck_assert_int_eq(iol_runtime_start(a->rt), 0);

    clients c = {.port = (uint16_t)iol_runtime_listener_port(a->rt, id), .n = NCLIENTS};
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, clients_main, &c), 0);
    while (!atomic_load(&c.sent))
        usleep(100);
    ck_assert_int_eq(iol_runtime_stop(a->rt), 0);
    double t0 = iol_test_now();
    ck_assert_int_eq(iol_runtime_join(a->rt), 0);
    out->join_seconds_max = fmax(out->join_seconds_max, iol_test_now() - t0);
    pthread_join(t, NULL);
    ck_assert_int_eq(atomic_load(&a->drain_calls), base->drain_timeout < 0 ? 0 : WORKERS);
    iol_runtime_free(a->rt);
    free(a);
    out->connected += c.connected;
    out->resets += c.resets;
    out->eofs += c.eofs;
    out->timeouts += c.timeouts;
    out->pongs += c.pongs;
}

static clients run_rounds(int shard, const iol_runtime_config *base, bool use_hook, int rounds)
{
    clients sum = {0};
    for (int r = 0; r < rounds; r++)
        run_round(shard, base, use_hook, &sum);
    return sum;
}

static void assert_no_reset(const clients *sum)
{
    ck_assert_msg(sum->resets == 0 && sum->timeouts == 0 && sum->eofs == sum->connected,
                  "%d clients connected: %d reset, %d timed out, %d saw EOF (%d with the reply)", sum->connected,
                  sum->resets, sum->timeouts, sum->eofs, sum->pongs);
}

/* ------------------------------------------------------------ the tests */

/* The scenario: the application finishes its connections when
 * told to drain; nobody is reset and nobody waits for the deadline. */
START_TEST(test_stop_in_flight_reuseport)
{
    clients sum = run_rounds(IOL_SHARD_REUSEPORT, &(iol_runtime_config){0}, true, 20);
    assert_no_reset(&sum);
    ck_assert_int_eq(sum.pongs, sum.connected); /* every request answered */
    ck_assert_double_lt(sum.join_seconds_max, 5); /* not the 10 s deadline */
}
END_TEST

START_TEST(test_stop_in_flight_handoff)
{
    clients sum = run_rounds(IOL_SHARD_HANDOFF, &(iol_runtime_config){0}, true, 20);
    assert_no_reset(&sum);
    ck_assert_int_eq(sum.pongs, sum.connected);
    ck_assert_double_lt(sum.join_seconds_max, 5);
}
END_TEST

/* The application ignores the drain: its connections stay open until the
 * deadline, then the runtime closes them with FIN, not RST. */
START_TEST(test_deadline_closes_without_reset)
{
    iol_runtime_config cfg = {.drain_timeout = 0.3};
    clients sum = run_rounds(IOL_SHARD_REUSEPORT, &cfg, false, 3);
    assert_no_reset(&sum);
    ck_assert_int_eq(sum.pongs, sum.connected);
    ck_assert_double_ge(sum.join_seconds_max, 0.29); /* it waited for the deadline */
    ck_assert_double_lt(sum.join_seconds_max, 5);
}
END_TEST

/* Same, but the application closes its connections itself in on_stop,
 * after the deadline: still FIN, not RST. */
START_TEST(test_deadline_app_closes_in_on_stop)
{
    iol_runtime_config cfg = {.drain_timeout = 0.3, .on_stop = app_stop};
    clients sum = run_rounds(IOL_SHARD_HANDOFF, &cfg, false, 3);
    assert_no_reset(&sum);
    ck_assert_int_eq(sum.pongs, sum.connected);
    ck_assert_double_ge(sum.join_seconds_max, 0.29);
}
END_TEST

/* drain_timeout < 0: no drain, no on_drain; join returns without waiting
 * for connections the application keeps. */
START_TEST(test_negative_timeout_no_drain)
{
    iol_runtime_config cfg = {.drain_timeout = -1};
    clients sum = run_rounds(IOL_SHARD_REUSEPORT, &cfg, false, 3);
    ck_assert_int_eq(sum.timeouts, 0);
    ck_assert_int_eq(sum.eofs + sum.resets, sum.connected);
    ck_assert_double_lt(sum.join_seconds_max, 5);
}
END_TEST

/* ------------------------------------------- handshakes in flight at stop */

/* Clients that keep connecting (non-blocking, BATCH at a time) while the
 * runtime stops: some handshakes are in flight during the final accepts.
 * Every client whose connect succeeded sends a request and must see EOF
 * (with or without the answer), never a reset. */
enum { STORM_THREADS = 3, BATCH = 16 };

typedef struct storm {
    uint16_t port;
    _Atomic int stopping;  /* the runtime was stopped: finish this batch */
    _Atomic int connected, refused, resets, eofs, answered, timeouts, rounds;
} storm;

static void storm_batch(storm *st)
{
    int fds[BATCH];
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(st->port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (int i = 0; i < BATCH; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(fds[i], 0);
        if (connect(fds[i], (struct sockaddr *)&a, sizeof(a)) < 0 && errno != EINPROGRESS) {
            atomic_fetch_add(&st->refused, 1);
            close(fds[i]);
            fds[i] = -1;
        }
    }
    /* Connected (writable, no error): send the request; then read to EOF.
     * A dropped SYN is retried by the kernel and refused once the
     * listener is gone: about 1 s. */
    bool sent[BATCH] = {0};
    size_t got[BATCH] = {0};
    double deadline = iol_test_now() + 15;
    int open = 0;
    for (int i = 0; i < BATCH; i++)
        open += fds[i] >= 0;
    while (open > 0) {
        struct pollfd p[BATCH];
        int map[BATCH], np = 0;
        for (int i = 0; i < BATCH; i++) {
            if (fds[i] >= 0) {
                p[np] = (struct pollfd){.fd = fds[i], .events = sent[i] ? POLLIN : POLLOUT};
                map[np++] = i;
            }
        }
        int left = (int)((deadline - iol_test_now()) * 1000);
        if (left <= 0 || poll(p, (nfds_t)np, left) <= 0) {
            atomic_fetch_add(&st->timeouts, open);
            break;
        }
        for (int k = 0; k < np; k++) {
            if (!p[k].revents)
                continue;
            int i = map[k];
            bool done = false;
            if (!sent[i]) {
                int err = 0;
                socklen_t len = sizeof(err);
                getsockopt(fds[i], SOL_SOCKET, SO_ERROR, &err, &len);
                if (err) {
                    atomic_fetch_add(&st->refused, 1);
                    done = true;
                } else {
                    atomic_fetch_add(&st->connected, 1);
                    sent[i] = true;
                    if (send(fds[i], "ping", REQ, MSG_NOSIGNAL) != REQ) {
                        atomic_fetch_add(&st->resets, errno == ECONNRESET || errno == EPIPE);
                        done = true;
                    }
                }
            } else {
                char buf[64];
                ssize_t r = recv(fds[i], buf, sizeof(buf), 0);
                if (r > 0)
                    got[i] += (size_t)r;
                if (got[i] >= 4) {
                    atomic_fetch_add(&st->answered, 1); /* a client closes once answered */
                    done = true;
                } else if (r == 0) {
                    atomic_fetch_add(&st->eofs, 1);
                    done = true;
                } else if (r < 0 && errno != EAGAIN && errno != EINTR) {
                    atomic_fetch_add(&st->resets, errno == ECONNRESET);
                    done = true;
                }
            }
            if (done) {
                close(fds[i]);
                fds[i] = -1;
                open--;
            }
        }
    }
    for (int i = 0; i < BATCH; i++)
        if (fds[i] >= 0)
            close(fds[i]);
}

static void *storm_main(void *arg)
{
    storm *st = arg;
    while (!atomic_load(&st->stopping)) {
        storm_batch(st);
        atomic_fetch_add(&st->rounds, 1);
    }
    storm_batch(st); /* one batch that surely overlaps the final accepts */
    return NULL;
}

static void run_storm(int shard)
{
    app *a = calloc(1, sizeof(*a));
    a->use_hook = true;
    iol_runtime_config cfg = {.workers = WORKERS, .on_drain = app_drain, .arg = a};
    ck_assert_int_eq(iol_runtime_new(&a->rt, &cfg), 0);
    iol_listen_config lc = {.host = "127.0.0.1", .shard = shard, .on_accept = app_accept, .arg = a};
    int id = iol_runtime_listen(a->rt, &lc);
    ck_assert_int_ge(id, 0);
    ck_assert_int_eq(iol_runtime_start(a->rt), 0);
    storm st = {.port = (uint16_t)iol_runtime_listener_port(a->rt, id)};
    pthread_t t[STORM_THREADS];
    for (int i = 0; i < STORM_THREADS; i++)
        ck_assert_int_eq(pthread_create(&t[i], NULL, storm_main, &st), 0);
    while (atomic_load(&st.rounds) < 20 * STORM_THREADS)
        usleep(500);
    atomic_store(&st.stopping, 1);
    ck_assert_int_eq(iol_runtime_stop(a->rt), 0);
    ck_assert_int_eq(iol_runtime_join(a->rt), 0);
    for (int i = 0; i < STORM_THREADS; i++)
        pthread_join(t[i], NULL);
    iol_runtime_free(a->rt);
    free(a);
    ck_assert_msg(st.resets == 0 && st.timeouts == 0 && st.eofs + st.answered == st.connected,
                  "%d connected (%d refused): %d reset, %d timed out, %d answered, %d saw EOF", st.connected,
                  st.refused, st.resets, st.timeouts, st.answered, st.eofs);
}

START_TEST(test_handshakes_in_flight_reuseport)
{
    run_storm(IOL_SHARD_REUSEPORT);
}
END_TEST

START_TEST(test_handshakes_in_flight_handoff)
{
    run_storm(IOL_SHARD_HANDOFF);
}
END_TEST

/* Handshakes the server has not finished when the listener stops: the
 * clients' connect() succeeded, but the server holds each connection as a
 * half-open request until the first data arrives (TCP_DEFER_ACCEPT, set
 * here on the runtime's listening sockets: the same state as a final ACK
 * still on its way over a slow path). The data comes 30 ms after stop,
 * well after a fixed 5 ms final-accept window. Those clients must be
 * served, not reset. */

/* Sets TCP_DEFER_ACCEPT on this process's listening sockets on port. */
static int defer_accept_on_port(uint16_t port)
{
    int found = 0;
    for (int fd = 0; fd < MAX_FD; fd++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        int listening = 0;
        socklen_t ilen = sizeof(listening);
        if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0 || ss.ss_family != AF_INET)
            continue;
        if (ntohs(((struct sockaddr_in *)&ss)->sin_port) != port)
            continue;
        if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &ilen) < 0 || !listening)
            continue;
        int secs = 5;
        ck_assert_int_eq(setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &secs, sizeof(secs)), 0);
        found++;
    }
    return found;
}

static void run_half_open(int shard)
{
    enum { N = 8 };
    app *a = calloc(1, sizeof(*a));
    a->use_hook = true;
    iol_runtime_config cfg = {.workers = WORKERS, .on_drain = app_drain, .arg = a};
    ck_assert_int_eq(iol_runtime_new(&a->rt, &cfg), 0);
    iol_listen_config lc = {.host = "127.0.0.1", .shard = shard, .on_accept = app_accept, .arg = a};
    int id = iol_runtime_listen(a->rt, &lc);
    ck_assert_int_ge(id, 0);
    uint16_t port = (uint16_t)iol_runtime_listener_port(a->rt, id);
    ck_assert_int_eq(defer_accept_on_port(port), shard == IOL_SHARD_REUSEPORT ? WORKERS : 1);
    ck_assert_int_eq(iol_runtime_start(a->rt), 0);

    int fds[N];
    for (int i = 0; i < N; i++)
        ck_assert_int_ge(fds[i] = connect_v4(port), 0); /* connected, as far as the client knows */
    usleep(10 * 1000);
    ck_assert_int_eq(atomic_load(&a->accepted), 0); /* the server has not got them yet */
    ck_assert_int_eq(iol_runtime_stop(a->rt), 0);
    usleep(30 * 1000);
    int resets = 0, eofs = 0, answered = 0;
    for (int i = 0; i < N; i++) {
        if (send(fds[i], "ping", REQ, MSG_NOSIGNAL) != REQ)
            resets++;
    }
    for (int i = 0; i < N; i++) {
        char buf[16];
        size_t got = 0;
        for (;;) {
            struct pollfd p = {.fd = fds[i], .events = POLLIN};
            if (poll(&p, 1, 5000) <= 0)
                break;
            ssize_t r = recv(fds[i], buf + got, sizeof(buf) - got, 0);
            if (r > 0) {
                got += (size_t)r;
                continue;
            }
            if (r == 0)
                eofs++;
            else
                resets += errno == ECONNRESET;
            break;
        }
        answered += got == 4;
        close(fds[i]);
    }
    ck_assert_int_eq(iol_runtime_join(a->rt), 0);
    iol_runtime_free(a->rt);
    free(a);
    ck_assert_msg(resets == 0 && eofs == N && answered == N, "%d clients: %d reset, %d EOF, %d answered", N, resets,
                  eofs, answered);
}

START_TEST(test_half_open_at_stop_reuseport)
{
    run_half_open(IOL_SHARD_REUSEPORT);
}
END_TEST

START_TEST(test_half_open_at_stop_handoff)
{
    run_half_open(IOL_SHARD_HANDOFF);
}
END_TEST

START_TEST(test_drain_timeout_nan)
{
    iol_runtime *rt = NULL;
    ck_assert_int_eq(iol_runtime_new(&rt, &(iol_runtime_config){.drain_timeout = NAN}), -EINVAL);
    ck_assert(!iol_runtime_stopping(NULL));
    ck_assert_int_eq(iol_runtime_new(&rt, &(iol_runtime_config){.workers = 1}), 0);
    ck_assert(!iol_runtime_stopping(rt));
    ck_assert_int_eq(iol_runtime_stop(rt), 0);
    ck_assert(iol_runtime_stopping(rt));
    iol_runtime_free(rt);
}
END_TEST

/* ------------------------------------------- streams left open at stop */

/* A server of streams with deferred writes (on a uring loop they are
 * watched by ring operations alone: a claimed fd, no handler) answers
 * "hi\n" to each line and keeps the connection. Left open at stop, each
 * stream must get FIN at the drain deadline and have its input discarded,
 * as a raw handler's fd does: a client whose request crosses that FIN
 * reads EOF, never a reset. */
enum { LATE_CLIENTS = 3 };

static void late_on_line(iol_stream *s, const char *data, size_t len, int status, void *arg);

static void late_read_next(iol_stream *s)
{
    if (iol_stream_read_until(s, "\n", late_on_line, NULL) < 0)
        iol_stream_close(s);
}

static void late_on_line(iol_stream *s, const char *data, size_t len, int status, void *arg)
{
    (void)data, (void)len, (void)arg;
    if (status < 0) {
        iol_stream_close(s);
        return;
    }
    if (iol_stream_write(s, "hi\n", 3, NULL, NULL) == 0)
        late_read_next(s);
}

static void late_accept(iol_loop *loop, int fd, const struct sockaddr *peer, socklen_t peerlen, void *arg)
{
    (void)peer, (void)peerlen, (void)arg;
    iol_stream *s;
    ck_assert_int_eq(iol_stream_new(&s, loop, fd, 0), 0);
    ck_assert_int_eq(iol_stream_set_deferred_writes(s, true), 0);
    late_read_next(s);
}

START_TEST(test_late_request_to_open_stream_gets_eof)
{
    iol_runtime *rt;
    ck_assert_int_eq(iol_runtime_new(&rt, &(iol_runtime_config){.workers = 1, .drain_timeout = 0.5}), 0);
    int id = iol_runtime_listen(rt, &(iol_listen_config){.host = "127.0.0.1", .on_accept = late_accept});
    ck_assert_int_ge(id, 0);
    ck_assert_int_eq(iol_runtime_start(rt), 0);
    int port = iol_runtime_listener_port(rt, id);
    int fds[LATE_CLIENTS];
    for (int i = 0; i < LATE_CLIENTS; i++) {
        fds[i] = connect_v4((uint16_t)port);
        ck_assert_int_ge(fds[i], 0);
        char buf[8];
        ck_assert_int_eq(send(fds[i], "hello\n", 6, MSG_NOSIGNAL), 6);
        ck_assert_int_eq(recv(fds[i], buf, 3, MSG_WAITALL), 3); /* "hi\n": the server serves */
    }
    ck_assert_int_eq(iol_runtime_stop(rt), 0);
    /* The server's FIN (at the drain deadline), then a late request. */
    int resets = 0, eofs = 0;
    for (int i = 0; i < LATE_CLIENTS; i++) {
        struct pollfd p = {fds[i], POLLIN, 0};
        ck_assert_int_eq(poll(&p, 1, 15000), 1);
        if (send(fds[i], "late\n", 5, MSG_NOSIGNAL) < 0)
            resets += errno == ECONNRESET || errno == EPIPE;
    }
    usleep(100 * 1000); /* time for a reset to come back */
    for (int i = 0; i < LATE_CLIENTS; i++) {
        /* A reset after the FIN does not show in recv (EOF came first):
         * the socket's pending error does (EPIPE in CLOSE_WAIT). */
        int err = 0;
        socklen_t len = sizeof err;
        ck_assert_int_eq(getsockopt(fds[i], SOL_SOCKET, SO_ERROR, &err, &len), 0);
        char buf[8];
        ssize_t n = recv(fds[i], buf, sizeof buf, MSG_DONTWAIT);
        if (err == ECONNRESET || err == EPIPE || (n < 0 && errno == ECONNRESET))
            resets++;
        else if (n == 0)
            eofs++;
        close(fds[i]);
    }
    ck_assert_int_eq(iol_runtime_join(rt), 0);
    iol_runtime_free(rt);
    ck_assert_msg(resets == 0, "%d of %d late requests got a reset", resets, LATE_CLIENTS);
    ck_assert_int_eq(eofs, LATE_CLIENTS);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("drain");
    TCase *tc = iol_test_tcase("in_flight", 120);
    tcase_add_test(tc, test_stop_in_flight_reuseport);
    tcase_add_test(tc, test_stop_in_flight_handoff);
    tcase_add_test(tc, test_deadline_closes_without_reset);
    tcase_add_test(tc, test_deadline_app_closes_in_on_stop);
    tcase_add_test(tc, test_negative_timeout_no_drain);
    tcase_add_test(tc, test_drain_timeout_nan);
    tcase_add_test(tc, test_late_request_to_open_stream_gets_eof);
    suite_add_tcase(s, tc);

    tc = iol_test_tcase("handshakes", 120);
    tcase_add_loop_test(tc, test_handshakes_in_flight_reuseport, 0, 5);
    tcase_add_loop_test(tc, test_handshakes_in_flight_handoff, 0, 5);
    tcase_add_test(tc, test_half_open_at_stop_reuseport);
    tcase_add_test(tc, test_half_open_at_stop_handoff);
    suite_add_tcase(s, tc);
    return iol_test_run(s);
}
