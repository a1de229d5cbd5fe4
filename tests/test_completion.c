/* The loop's completion path (loop/completion.h) on the uring poller:
 * send, recv from the buffer ring (single-shot and multishot), multishot
 * accept, close, cancel with the owner freed at its last result, a loop
 * closed with operations in flight, more operations than the SQ and the
 * CQ hold, and every other backend saying -ENOTSUP. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ioloop.h"
#include "loop/completion.h"
#include "testutil.h"

static iol_loop *new_loop(const char *poller)
{
    iol_loop *loop = NULL;
    ck_assert_int_eq(iol_loop_new(&loop, &(iol_loop_config){ .poller = poller, .make_current = IOL_CURRENT_NEVER }),
                     0);
    return loop;
}

__attribute__((unused)) static void make_pair(int sv[2])
{
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
}

/* An owner that records its results; freed at its last one once `dying`. */
typedef struct owner {
    iol__completion c;
    iol_loop *loop;
    int results, ended, cancelled;
    int last_res;
    bool nonempty; /* the last result's */
    char data[4096];
    size_t got;
    int fds[8];
    int nfds;
    bool dying;
    int id;
} owner;

static int owners_freed;
static unsigned freed_mask; /* bit `id` of each owner freed */

static void on_done(iol__completion *c, const iol__completion_result *r)
{
    owner *o = (owner *)c;
    o->results++;
    o->last_res = r->res;
    o->nonempty = r->nonempty;
    if (!r->more)
        o->ended++;
    if (r->res == -ECANCELED)
        o->cancelled++;
    if (r->buf) {
        ck_assert_int_gt(r->res, 0);
        ck_assert_uint_le(o->got + (size_t)r->res, sizeof o->data);
        memcpy(o->data + o->got, r->buf, (size_t)r->res);
        o->got += (size_t)r->res;
        iol__loop_buffer_recycle(o->loop, r->bid);
    } else if (r->kind == 2 && r->res >= 0 && o->nfds < 8) {
        o->fds[o->nfds++] = r->res;
    }
    if (o->dying && c->inflight == 0) {
        for (int i = 0; i < o->nfds; i++)
            close(o->fds[i]);
        freed_mask |= 1u << o->id;
        free(o);
        owners_freed++;
    }
}

static owner *new_owner(iol_loop *loop)
{
    owner *o = calloc(1, sizeof *o);
    ck_assert_ptr_nonnull(o);
    o->c.fn = on_done;
    o->loop = loop;
    return o;
}

/* Runs the loop until *done (bounded). */
__attribute__((unused)) static void run_until(iol_loop *loop, const int *counter, int target)
{
    double end = iol_test_now() + 10;
    while (*counter < target && iol_test_now() < end)
        ck_assert_int_ge(iol_loop_run_once(loop, 0.1), 0);
    ck_assert_int_ge(*counter, target);
}

START_TEST(test_other_backends)
{
    const char *names[] = { "epoll", "poll", "select" };
    for (int i = 0; i < 3; i++) {
        iol_loop *loop = new_loop(names[i]);
        owner *o = new_owner(loop);
        ck_assert_int_eq(iol__loop_completion_features(loop), -ENOTSUP);
        ck_assert_int_eq(iol__loop_send(loop, &o->c, 0, 0, "x", 1), -ENOTSUP);
        ck_assert_int_eq(iol__loop_recv(loop, &o->c, 0, 0, 0, false), -ENOTSUP);
        ck_assert_int_eq(iol__loop_accept(loop, &o->c, 0, 0, false), -ENOTSUP);
        ck_assert_int_eq(iol__loop_close_op(loop, &o->c, 0, 0), -ENOTSUP);
        ck_assert_uint_eq(o->c.inflight, 0);
        free(o);
        ck_assert_int_eq(iol_loop_close(loop, false), 0);
    }
}
END_TEST

#ifdef IOL_HAVE_URING

START_TEST(test_switched_off)
{
    setenv("IOL_URING_OPS", "0", 1);
    iol_loop *loop = new_loop("uring");
    owner *o = new_owner(loop);
    ck_assert_int_eq(iol__loop_completion_features(loop), -ENOTSUP);
    ck_assert_int_eq(iol__loop_send(loop, &o->c, 0, 0, "x", 1), -ENOTSUP);
    free(o);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
}
END_TEST

/* send on one end, recv from the ring on the other; _i: multishot. With
 * multishot taken away (IOL_URING_OPS), a multishot recv says -ENOTSUP
 * and a single-shot one works. */
START_TEST(test_send_recv)
{
    bool multishot = _i == 1;
    if (_i == 2)
        setenv("IOL_URING_OPS", "12", 1); /* completions and buffer ring only */
    iol_loop *loop = new_loop("uring");
    int features = iol__loop_completion_features(loop);
    ck_assert_int_ge(features, 0);
    if (!(features & IOL__COMPLETION_BUFFER_RING))
        goto out; /* a kernel before 5.19: streams use the handler path */
    int sv[2];
    make_pair(sv);
    owner *rx = new_owner(loop), *tx = new_owner(loop);
    if (_i == 2)
        ck_assert_int_eq(iol__loop_recv(loop, &rx->c, 0, sv[0], 0, true), -ENOTSUP);
    if (multishot && !(features & IOL__COMPLETION_MULTISHOT_RECV))
        multishot = false;
    ck_assert_int_eq(iol__loop_recv(loop, &rx->c, 0, sv[0], 0, multishot), 0);
    ck_assert_int_eq(iol__loop_send(loop, &tx->c, 1, sv[1], "hello", 5), 0);
    ck_assert_uint_eq(rx->c.inflight, 1);
    run_until(loop, &tx->ended, 1);
    ck_assert_int_eq(tx->last_res, 5);
    run_until(loop, &rx->results, 1);
    ck_assert_uint_eq(rx->got, 5);
    ck_assert(memcmp(rx->data, "hello", 5) == 0);
    if (multishot) {
        ck_assert_int_eq(rx->ended, 0); /* still armed */
        ck_assert_int_eq(iol__loop_send(loop, &tx->c, 1, sv[1], " world", 6), 0);
        run_until(loop, &rx->results, 2);
        ck_assert(memcmp(rx->data, "hello world", 11) == 0);
        close(sv[1]); /* EOF ends it: res 0, no more */
        run_until(loop, &rx->ended, 1);
        ck_assert_int_eq(rx->last_res, 0);
    } else {
        ck_assert_int_eq(rx->ended, 1);
        close(sv[1]);
    }
    ck_assert_uint_eq(rx->c.inflight, 0);
    free(rx);
    free(tx);
    close(sv[0]);
out:
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
}
END_TEST

static int listen_tcp(struct sockaddr_in *addr)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    *addr = (struct sockaddr_in){ .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    ck_assert_int_eq(bind(fd, (struct sockaddr *)addr, sizeof *addr), 0);
    socklen_t len = sizeof *addr;
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)addr, &len), 0);
    ck_assert_int_eq(listen(fd, 16), 0);
    return fd;
}

static int connect_tcp(const struct sockaddr_in *addr)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(connect(fd, (const struct sockaddr *)addr, sizeof *addr), 0);
    return fd;
}

/* A recv says whether it left data in the socket (TCP tells from 6.0
 * on); IOL__RECV_POLL_FIRST is only a hint: such a recv still gets data
 * that is there already, and data that comes later. */
START_TEST(test_recv_nonempty_poll_first)
{
    iol_loop *loop = new_loop("uring");
    struct sockaddr_in addr;
    int lfd = listen_tcp(&addr);
    int client = connect_tcp(&addr);
    int server = accept(lfd, NULL, NULL);
    ck_assert_int_ge(server, 0);
    owner *o = new_owner(loop);
    static const char msg[100] = "0123456789";
    ck_assert_int_eq(write(client, msg, sizeof msg), (ssize_t)sizeof msg);
    bool tells = iol__loop_completion_features(loop) & IOL__COMPLETION_MULTISHOT_RECV; /* 6.0 */
    ck_assert_int_eq(iol__loop_recv(loop, &o->c, 0, server, 10, 0), 0);
    run_until(loop, &o->ended, 1);
    ck_assert_int_eq(o->last_res, 10);
    if (tells)
        ck_assert(o->nonempty);
    ck_assert_int_eq(iol__loop_recv(loop, &o->c, 0, server, 0, IOL__RECV_POLL_FIRST), 0);
    run_until(loop, &o->ended, 2);
    ck_assert_int_eq(o->last_res, 90);
    ck_assert(!o->nonempty);
    ck_assert_int_eq(iol__loop_recv(loop, &o->c, 0, server, 0, IOL__RECV_POLL_FIRST), 0);
    ck_assert_int_ge(iol_loop_run_once(loop, 0.05), 0);
    ck_assert_int_eq(o->ended, 2); /* nothing there yet */
    ck_assert_int_eq(write(client, "late", 4), 4);
    run_until(loop, &o->ended, 3);
    ck_assert_int_eq(o->last_res, 4);
    ck_assert_uint_eq(o->got, 104);
    ck_assert(memcmp(o->data + 100, "late", 4) == 0);
    ck_assert_int_ge(iol_loop_close(loop, false), 0);
    free(o);
    close(client), close(server), close(lfd);
}
END_TEST

/* Multishot accept takes three connections and stays armed; a cancel
 * ends it with -ECANCELED, after which the owner is freed in its own
 * callback. _i == 1: single-shot accepts. */
START_TEST(test_accept_then_cancel)
{
    iol_loop *loop = new_loop("uring");
    int features = iol__loop_completion_features(loop);
    ck_assert_int_ge(features, 0);
    bool multishot = _i == 0 && (features & IOL__COMPLETION_MULTISHOT_ACCEPT);
    struct sockaddr_in addr;
    int lfd = listen_tcp(&addr);
    owner *o = new_owner(loop);
    ck_assert_int_eq(iol__loop_accept(loop, &o->c, 2, lfd, multishot), 0);
    int clients[3];
    for (int i = 0; i < 3; i++) {
        clients[i] = connect_tcp(&addr);
        run_until(loop, &o->nfds, i + 1);
        if (!multishot && i < 2)
            ck_assert_int_eq(iol__loop_accept(loop, &o->c, 2, lfd, false), 0);
    }
    for (int i = 0; i < 3; i++) {
        ck_assert_int_ge(o->fds[i], 0);
        ck_assert(fcntl(o->fds[i], F_GETFL) & O_NONBLOCK);
    }
    if (!multishot) /* one more accept in flight to cancel */
        ck_assert_int_eq(iol__loop_accept(loop, &o->c, 2, lfd, false), 0);
    ck_assert_uint_eq(o->c.inflight, 1);
    o->dying = true;
    ck_assert_int_eq(iol__loop_cancel(loop, &o->c, 2), 0);
    owners_freed = 0;
    run_until(loop, &owners_freed, 1);
    for (int i = 0; i < 3; i++)
        close(clients[i]);
    close(lfd);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
}
END_TEST

/* A single-shot accept with the peer's address: the one getpeername
 * gives, its length too; NULL buffers are refused. */
START_TEST(test_accept_peer)
{
    iol_loop *loop = new_loop("uring");
    struct sockaddr_in addr;
    int lfd = listen_tcp(&addr);
    owner *o = new_owner(loop);
    struct sockaddr_storage peer;
    socklen_t peerlen = sizeof(peer);
    ck_assert_int_eq(iol__loop_accept_peer(loop, &o->c, 2, lfd, NULL, &peerlen), -EINVAL);
    ck_assert_int_eq(iol__loop_accept_peer(loop, &o->c, 2, lfd, (struct sockaddr *)&peer, NULL), -EINVAL);
    memset(&peer, 0xab, sizeof(peer));
    ck_assert_int_eq(iol__loop_accept_peer(loop, &o->c, 2, lfd, (struct sockaddr *)&peer, &peerlen), 0);
    int client = connect_tcp(&addr);
    run_until(loop, &o->nfds, 1);
    struct sockaddr_in local;
    socklen_t locallen = sizeof(local);
    ck_assert_int_eq(getsockname(client, (struct sockaddr *)&local, &locallen), 0);
    ck_assert_uint_eq(peerlen, sizeof(struct sockaddr_in));
    ck_assert(memcmp(&peer, &local, sizeof(local)) == 0);
    ck_assert_uint_eq(o->c.inflight, 0);
    close(o->fds[0]);
    free(o);
    close(client), close(lfd);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
}
END_TEST

/* A cancel of one kind leaves the owner's other kinds alone. */
START_TEST(test_cancel_one_kind)
{
    iol_loop *loop = new_loop("uring");
    int sv[2], sw[2];
    make_pair(sv);
    make_pair(sw);
    owner *o = new_owner(loop);
    ck_assert_int_eq(iol__loop_recv(loop, &o->c, 0, sv[0], 0, false), 0);
    ck_assert_int_eq(iol__loop_recv(loop, &o->c, 1, sw[0], 0, false), 0);
    ck_assert_int_eq(iol_loop_run_once(loop, 0), 0);
    ck_assert_int_eq(iol__loop_cancel(loop, &o->c, 0), 0);
    run_until(loop, &o->ended, 1);
    ck_assert_int_eq(o->cancelled, 1);
    ck_assert_uint_eq(o->c.inflight, 1);
    ck_assert_int_eq(write(sw[1], "k", 1), 1);
    run_until(loop, &o->ended, 2);
    ck_assert_int_eq(o->last_res, 1);
    ck_assert_int_eq(o->data[0], 'k');
    free(o);
    close(sv[0]), close(sv[1]), close(sw[0]), close(sw[1]);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
}
END_TEST

START_TEST(test_close_op)
{
    iol_loop *loop = new_loop("uring");
    int sv[2];
    make_pair(sv);
    owner *o = new_owner(loop);
    ck_assert_int_eq(iol__loop_close_op(loop, &o->c, 3, sv[0]), 0);
    run_until(loop, &o->ended, 1);
    ck_assert_int_eq(o->last_res, 0);
    ck_assert_int_eq(fcntl(sv[0], F_GETFD), -1);
    char c;
    ck_assert_int_eq(read(sv[1], &c, 1), 0); /* the peer sees EOF */
    close(sv[1]);
    free(o);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
}
END_TEST

/* A loop closed with a recv, a multishot accept and a send blocked on a
 * full socket in flight: every owner gets its last result during close
 * and frees itself there (ASan/valgrind see no leak and no use after
 * free); submissions after close fail. */
START_TEST(test_loop_close_in_flight)
{
    iol_loop *loop = new_loop("uring");
    int sv[2], full[2];
    make_pair(sv);
    make_pair(full);
    static char big[1 << 20];
    struct sockaddr_in addr;
    int lfd = listen_tcp(&addr);
    owner *a = new_owner(loop), *b = new_owner(loop), *c = new_owner(loop);
    a->dying = b->dying = c->dying = true;
    a->id = 0, b->id = 1, c->id = 2;
    ck_assert_int_eq(iol__loop_recv(loop, &a->c, 0, sv[0], 0, false), 0);
    ck_assert_int_eq(iol__loop_accept(loop, &b->c, 2, lfd, true), 0);
    ck_assert_int_eq(iol__loop_send(loop, &c->c, 1, full[0], big, sizeof big), 0);
    owners_freed = 0;
    freed_mask = 0;
    /* Into the kernel; the send may end now with a short count. */
    ck_assert_int_eq(iol_loop_run_once(loop, 0), 0);
    ck_assert_int_eq(iol_loop_ref(loop) == loop, 1); /* to try a submission after close */
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
    ck_assert_msg(owners_freed == 3, "freed %d: mask %x", owners_freed, freed_mask);
    owner *d = new_owner(loop);
    ck_assert_int_eq(iol__loop_send(loop, &d->c, 1, full[0], "x", 1), -ESHUTDOWN);
    free(d);
    iol_loop_unref(loop);
    close(sv[0]), close(sv[1]), close(full[0]), close(full[1]), close(lfd);
}
END_TEST

/* More sends than the SQ (256) and the CQ (1024) hold, submitted without
 * running the loop: the SQ is handed over when full, the CQ overflow is
 * kept by the kernel, and every result arrives (sends in flight together
 * on one socket may go out of order: a stream keeps one at a time). */
START_TEST(test_sq_full_cq_overflow)
{
    iol_loop *loop = new_loop("uring");
    int sv[2];
    make_pair(sv);
    int n = 1500;
    owner *tx = new_owner(loop);
    static char bytes[1500];
    for (int i = 0; i < n; i++) {
        bytes[i] = 'z';
        ck_assert_int_eq(iol__loop_send(loop, &tx->c, 0, sv[1], &bytes[i], 1), 0);
    }
    /* A unix socket takes some 300 one-byte skbs: the rest wait for the
     * reader, in the kernel. */
    char got[1500];
    ssize_t have = 0;
    double end = iol_test_now() + 10;
    while ((tx->ended < n || have < n) && iol_test_now() < end) {
        ck_assert_int_ge(iol_loop_run_once(loop, 0.01), 0);
        ssize_t r = read(sv[0], got + have, sizeof got - (size_t)have);
        if (r > 0)
            have += r;
    }
    ck_assert_int_eq(tx->ended, n);
    ck_assert_int_eq(tx->last_res, 1);
    ck_assert_uint_eq(tx->c.inflight, 0);
    ck_assert_int_eq(have, n);
    ck_assert(memcmp(got, bytes, (size_t)n) == 0);
    free(tx);
    close(sv[0]), close(sv[1]);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
}
END_TEST

/* More recvs with data than the ring has buffers: some say -ENOBUFS,
 * none is given wrong data, and after recycling a retry succeeds. */
START_TEST(test_ring_exhausted)
{
    iol_loop *loop = new_loop("uring");
    if (!(iol__loop_completion_features(loop) & IOL__COMPLETION_BUFFER_RING))
        goto out;
    enum { N = 300 };
    int (*pairs)[2] = calloc(N, sizeof *pairs);
    owner **os = calloc(N, sizeof *os);
    for (int i = 0; i < N; i++) {
        make_pair(pairs[i]);
        os[i] = new_owner(loop);
        ck_assert_int_eq(write(pairs[i][1], &(char){ (char)i }, 1), 1);
    }
    /* Hold every buffer: recycle none until all have answered. */
    int nobufs = 0, ok = 0;
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(iol__loop_recv(loop, &os[i]->c, 0, pairs[i][0], 0, false), 0);
    double end = iol_test_now() + 10;
    while (nobufs + ok < N && iol_test_now() < end) {
        iol_loop_run_once(loop, 0.1);
        nobufs = ok = 0;
        for (int i = 0; i < N; i++) {
            if (os[i]->ended && os[i]->last_res == -ENOBUFS)
                nobufs++;
            else if (os[i]->ended) {
                ck_assert_int_eq(os[i]->last_res, 1);
                ck_assert_int_eq(os[i]->data[0], (char)i);
                ok++;
            }
        }
    }
    ck_assert_int_eq(nobufs + ok, N);
    ck_assert_int_gt(nobufs, 0); /* 256 buffers, 300 connections... */
    ck_assert_int_ge(ok, 1);     /* ...but recycled as they arrive */
    for (int i = 0; i < N; i++) {
        if (os[i]->last_res != -ENOBUFS)
            continue;
        os[i]->ended = 0;
        ck_assert_int_eq(iol__loop_recv(loop, &os[i]->c, 0, pairs[i][0], 0, false), 0);
        run_until(loop, &os[i]->ended, 1);
        ck_assert_int_eq(os[i]->last_res, 1);
        ck_assert_int_eq(os[i]->data[0], (char)i);
    }
    for (int i = 0; i < N; i++) {
        free(os[i]);
        close(pairs[i][0]), close(pairs[i][1]);
    }
    free(os);
    free(pairs);
out:
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
}
END_TEST

#endif

static Suite *completion_suite(void)
{
    Suite *s = suite_create("completion");
    TCase *tc = iol_test_tcase("core", 60);
    tcase_add_test(tc, test_other_backends);
#ifdef IOL_HAVE_URING
    tcase_add_test(tc, test_switched_off);
    tcase_add_loop_test(tc, test_send_recv, 0, 3);
    tcase_add_loop_test(tc, test_accept_then_cancel, 0, 2);
    tcase_add_test(tc, test_accept_peer);
    tcase_add_test(tc, test_cancel_one_kind);
    tcase_add_test(tc, test_close_op);
    tcase_add_test(tc, test_recv_nonempty_poll_first);
    tcase_add_test(tc, test_loop_close_in_flight);
    tcase_add_test(tc, test_sq_full_cq_overflow);
    tcase_add_test(tc, test_ring_exhausted);
#endif
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return iol_test_run(completion_suite());
}
