/* Runtime stop with requests in flight: a raw fd handler application,
 * clients that connected and sent a request just before the stop, and
 * what they see: a reply and EOF, never a reset. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
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

/* Per-connection state, indexed by fd (the app is the test process). */
typedef struct app {
    iol_runtime *rt;
    _Atomic int accepted;
    _Atomic int replies;
} app;

/* Reads requests of REQ bytes and answers each with "pong"; keeps the
 * connection until the client closes it. */
static void app_readable(int fd, unsigned events, void *arg)
{
    (void)events;
    app *a = arg;
    char buf[256];
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n > 0) {
        for (ssize_t i = 0; i + REQ <= n; i += REQ) {
            if (write(fd, "pong", 4) == 4)
                atomic_fetch_add(&a->replies, 1);
        }
        return;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    iol_loop_remove_handler(iol_loop_current(), fd);
    close(fd);
}

static void app_accept(iol_loop *loop, int fd, const struct sockaddr *peer, socklen_t peerlen, void *arg)
{
    (void)peer;
    (void)peerlen;
    app *a = arg;
    atomic_fetch_add(&a->accepted, 1);
    if (iol_loop_add_handler(loop, fd, IOL_READ, app_readable, a) < 0)
        close(fd);
}

/* --------------------------------------------------------- the clients */

typedef struct clients {
    uint16_t port;
    int n;
    _Atomic int sent; /* all connected and sent their request */
    int connected, resets, eofs, timeouts, pongs;
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
static void run_round(int shard, const iol_runtime_config *base, clients *out)
{
    app a = {0};
    iol_runtime_config cfg = *base;
    cfg.workers = 2;
    cfg.arg = &a;
    ck_assert_int_eq(iol_runtime_new(&a.rt, &cfg), 0);
    iol_listen_config lc = {.host = "127.0.0.1", .shard = shard, .on_accept = app_accept, .arg = &a};
    int id = iol_runtime_listen(a.rt, &lc);
    ck_assert_int_ge(id, 0);
    ck_assert_int_eq(iol_runtime_start(a.rt), 0);

    clients c = {.port = (uint16_t)iol_runtime_listener_port(a.rt, id), .n = NCLIENTS};
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, clients_main, &c), 0);
    while (!atomic_load(&c.sent))
        usleep(100);
    ck_assert_int_eq(iol_runtime_stop(a.rt), 0);
    ck_assert_int_eq(iol_runtime_join(a.rt), 0);
    pthread_join(t, NULL);
    iol_runtime_free(a.rt);
    out->connected += c.connected;
    out->resets += c.resets;
    out->eofs += c.eofs;
    out->timeouts += c.timeouts;
    out->pongs += c.pongs;
}

static void run_rounds(int shard, const iol_runtime_config *base, int rounds)
{
    clients sum = {0};
    for (int r = 0; r < rounds; r++)
        run_round(shard, base, &sum);
    ck_assert_msg(sum.resets == 0 && sum.timeouts == 0 && sum.eofs == sum.connected,
                  "%d clients connected: %d reset, %d timed out, %d saw EOF (%d with the reply)", sum.connected,
                  sum.resets, sum.timeouts, sum.eofs, sum.pongs);
}

/* ------------------------------------------------------------ the tests */

START_TEST(test_stop_in_flight_reuseport)
{
    run_rounds(IOL_SHARD_REUSEPORT, &(iol_runtime_config){0}, 20);
}
END_TEST

START_TEST(test_stop_in_flight_handoff)
{
    run_rounds(IOL_SHARD_HANDOFF, &(iol_runtime_config){0}, 20);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("drain");
    TCase *tc = iol_test_tcase("in_flight", 120);
    tcase_add_test(tc, test_stop_in_flight_reuseport);
    tcase_add_test(tc, test_stop_in_flight_handoff);
    suite_add_tcase(s, tc);
    return iol_test_run(s);
}
