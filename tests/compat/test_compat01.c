/* A program built against the 0.1 header (tests/compat/0.1/ioloop.h, a
 * copy of the header as 0.1 shipped it) keeps the 0.1 behaviour
 * (include/ioloop.h, "Binary compatibility of the status codes"): its
 * loops hand a clean EOF to a read as -EPIPE, and a name that does not
 * resolve to a connect as -EHOSTUNREACH (iol_stream_error too). Plain C, exit status 0 on
 * success: it cannot use the Check fixture, which is built against the
 * current header. */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ioloop.h" /* the 0.1 copy: -I tests/compat/0.1 comes first */

static int got_status = 1;

static void on_read(iol_stream *s, const char *data, size_t len, int status, void *arg)
{
    (void)s, (void)data, (void)len;
    got_status = status;
    iol_loop_stop(arg);
}

static int dial_status = 1, dial_error = 1;

static void on_dial(iol_stream *s, int status, void *arg)
{
    (void)s, (void)arg;
    dial_status = status;
}

static void on_dial_close(iol_stream *s, void *arg)
{
    dial_error = iol_stream_error(s);
    iol_loop_stop(arg);
}

static int check(const char *what, int ok)
{
    if (!ok)
        fprintf(stderr, "compat 0.1: %s\n", what);
    return ok ? 0 : 1;
}

int main(void)
{
    int fails = 0;
    iol_loop *loop;
    if (iol_loop_new(&loop, NULL) != 0)
        return check("iol_loop_new", 0);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
        return check("socketpair", 0);
    iol_stream *s;
    fails += check("iol_stream_new", iol_stream_new(&s, loop, sv[0], 0) == 0);
    fails += check("read_until", iol_stream_read_until(s, "\n", on_read, loop) == 0);
    (void)!write(sv[1], "no newline", 10);
    close(sv[1]); /* a clean EOF before the delimiter */
    iol_loop_start(loop);
    fails += check("a clean EOF reaches a 0.1 program as -EPIPE", got_status == -EPIPE);

    /* .invalid never resolves (RFC 6761). Without a DNS server that
     * answers, the lookup is EAI_AGAIN (-EAGAIN) instead: asked first. */
    struct addrinfo *res = NULL;
    int gai = getaddrinfo("no-such-host.invalid", "80", NULL, &res);
    fails += check("no-such-host.invalid does not resolve", gai != 0);
    fails += check("iol_stream_connect", iol_stream_connect(&s, loop, "no-such-host.invalid", 80, 0, on_dial, loop) == 0);
    fails += check("set_close_callback", iol_stream_set_close_callback(s, on_dial_close, loop) == 0);
    iol_loop_start(loop);
    if (gai == EAI_AGAIN) {
        fprintf(stderr, "compat 0.1: no DNS here (EAI_AGAIN): -EAGAIN checked instead\n");
        fails += check("a failed lookup is -EAGAIN", dial_status == -EAGAIN);
    } else {
        fails += check("a name that does not resolve reaches a 0.1 program as -EHOSTUNREACH",
                       dial_status == -EHOSTUNREACH && dial_error == -EHOSTUNREACH);
    }
    iol_loop_close(loop, true);
    return fails;
}
