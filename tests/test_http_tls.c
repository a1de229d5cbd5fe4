/* http-hello's stream path (examples/http_tls.c) on socket pairs: a
 * connection between requests holds no parser; one with a request in
 * progress (headers or body half-received) does; the idle sweep reaches
 * every connection. On epoll (the fd handler path) and on uring (the
 * completion path, where there is one). */
#include <check.h>
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "examples/http_tls.h"
#include "ioloop.h"
#include "testutil.h"

typedef struct peer {
    iol_loop *loop;
    int fd;
    char got[4096];
    size_t len;
} peer;

static iol_loop *new_loop(const char *poller)
{
    iol_loop *loop = NULL;
    if (iol_loop_new(&loop, &(iol_loop_config){ .poller = poller, .make_current = IOL_CURRENT_NEVER }) < 0)
        return NULL;
    return loop;
}

static void send_str(peer *p, const char *s)
{
    ck_assert_int_eq(write(p->fd, s, strlen(s)), (ssize_t)strlen(s));
}

/* Runs the loop until `count` responses arrived (counted by status lines). */
static void run_until_responses(peer *p, int count)
{
    for (double end = iol_test_now() + 10; iol_test_now() < end;) {
        ck_assert_int_ge(iol_loop_run_once(p->loop, 0.02), 0);
        ssize_t n = recv(p->fd, p->got + p->len, sizeof p->got - 1 - p->len, MSG_DONTWAIT);
        if (n > 0)
            p->len += (size_t)n;
        p->got[p->len] = 0;
        int seen = 0;
        for (const char *at = p->got; (at = strstr(at, "HTTP/1.1 ")) != NULL; at++)
            seen++;
        if (seen >= count) {
            ck_assert_int_ge(iol_loop_run_once(p->loop, 0), 0);
            return;
        }
    }
    ck_abort_msg("no response: %s", p->got);
}

/* A few turns, so whatever was sent has been read. */
static void settle(peer *p)
{
    for (int i = 0; i < 5; i++)
        ck_assert_int_ge(iol_loop_run_once(p->loop, 0.01), 0);
}

static void parsers_between_requests(const char *poller)
{
    iol_loop *loop = new_loop(poller);
    if (!loop)
        return; /* no such poller here */
    http_conn_global_init();
    http_dates dates;
    http_dates_init(&dates);
    http_dates_refresh(&dates, time(NULL));
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    peer p = { .loop = loop, .fd = sv[1] };
    http_tls_accept(loop, sv[0], NULL, &dates, 1000, NULL);
    ck_assert_uint_eq(http_tls_parsers(), 0); /* accepted, nothing sent yet */

    send_str(&p, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    run_until_responses(&p, 1);
    ck_assert_uint_eq(http_tls_parsers(), 0); /* answered: idle again */

    send_str(&p, "GET / HTTP/1.1\r\nHo"); /* headers half-received */
    settle(&p);
    ck_assert_uint_eq(http_tls_parsers(), 1);
    send_str(&p, "st: x\r\n\r\n");
    run_until_responses(&p, 2);
    ck_assert_uint_eq(http_tls_parsers(), 0);

    /* Headers complete, body still arriving: the request is in progress. */
    send_str(&p, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nab");
    settle(&p);
    ck_assert_uint_eq(http_tls_parsers(), 1);
    send_str(&p, "cde");
    run_until_responses(&p, 3);
    ck_assert_uint_eq(http_tls_parsers(), 0);
    ck_assert_ptr_nonnull(strstr(p.got, "405 Method Not Allowed"));

    /* Pipelined: two answered, the third half-sent. */
    send_str(&p, "GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\nGET /");
    run_until_responses(&p, 5);
    settle(&p);
    ck_assert_uint_eq(http_tls_parsers(), 1);
    send_str(&p, " HTTP/1.1\r\n\r\n");
    run_until_responses(&p, 6);
    ck_assert_uint_eq(http_tls_parsers(), 0);

    /* A connection closed mid-request gives its parser back. */
    send_str(&p, "GET / HT");
    settle(&p);
    ck_assert_uint_eq(http_tls_parsers(), 1);
    http_tls_stop();
    settle(&p);
    ck_assert_uint_eq(http_tls_parsers(), 0);
    close(sv[1]);
    ck_assert_int_ge(iol_loop_close(loop, false), 0);
}

/* The sweep reaches every connection of the worker (their state spans
 * more than one slab) and closes those past their idle deadline; the
 * slots are taken again by the next connections. */
static void sweep_many(const char *poller)
{
    enum { N = 400 }; /* more than two slabs (168 slots each) */
    iol_loop *loop = new_loop(poller);
    if (!loop)
        return;
    http_conn_global_init();
    http_dates dates;
    http_dates_init(&dates);
    http_dates_refresh(&dates, time(NULL));
    static int peers[N];
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < N; i++) {
            int sv[2];
            ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
            peers[i] = sv[1];
            http_tls_accept(loop, sv[0], NULL, &dates, 1000, NULL);
        }
        peer p = { .loop = loop };
        settle(&p);
        http_tls_sweep(1000 + HTTP_IDLE_TIMEOUT - 1); /* none due yet */
        settle(&p);
        char c;
        for (int i = 0; i < N; i++)
            ck_assert_int_eq(recv(peers[i], &c, 1, MSG_DONTWAIT), -1);
        http_tls_sweep(1000 + HTTP_IDLE_TIMEOUT + 1);
        int ended = 0;
        for (double end = iol_test_now() + 10; ended < N && iol_test_now() < end;) {
            ck_assert_int_ge(iol_loop_run_once(loop, 0.01), 0);
            for (int i = 0; i < N; i++)
                if (peers[i] >= 0 && recv(peers[i], &c, 1, MSG_DONTWAIT) == 0) {
                    close(peers[i]);
                    peers[i] = -1;
                    ended++;
                }
        }
        ck_assert_int_eq(ended, N);
    }
    http_tls_stop();
    ck_assert_int_ge(iol_loop_close(loop, false), 0);
}

START_TEST(sweep_epoll)
{
    sweep_many("epoll");
}
END_TEST

START_TEST(sweep_uring)
{
    sweep_many("uring");
}
END_TEST

START_TEST(parsers_epoll)
{
    parsers_between_requests("epoll");
}
END_TEST

START_TEST(parsers_uring)
{
    parsers_between_requests("uring");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("http_tls");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, parsers_epoll);
    tcase_add_test(tc, parsers_uring);
    tcase_add_test(tc, sweep_epoll);
    tcase_add_test(tc, sweep_uring);
    suite_add_tcase(s, tc);
    return iol_test_run(s);
}
