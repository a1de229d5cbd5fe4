/* TLS streams left open when their loop goes away end cleanly: a
 * runtime's drain and iol_loop_close send close_notify before the FIN, so
 * a peer that treats a FIN without close_notify as a truncation (Python's
 * ssl with suppress_ragged_eofs=False, OpenSSL 3's "unexpected eof while
 * reading") sees a clean close. The peer is Python's ssl module
 * (/usr/bin/python3), an implementation other than ours. */
#include "ioloop.h"
#include "testutil.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Connects, sends a line, prints READY once the echo came back, then
 * waits: a clean end (close_notify, then the FIN) prints CLEAN, anything
 * else the exception. */
static const char client_py[] =
    "import os, select, socket, ssl, sys\n"
    "ctx = ssl.create_default_context(cafile=sys.argv[1])\n"
    "ctx.options &= ~getattr(ssl, 'OP_IGNORE_UNEXPECTED_EOF', 0)\n"
    "raw = socket.create_connection(('127.0.0.1', int(sys.argv[2])), timeout=20)\n"
    "s = ctx.wrap_socket(raw, server_hostname='a.test', suppress_ragged_eofs=False)\n"
    "s.sendall(b'hi\\n')\n"
    "got = b''\n"
    "while not got.endswith(b'\\n'):\n"
    "    got += s.recv(100)\n"
    "print('READY', flush=True)\n"
    "try:\n"
    "    data = s.recv(100)\n"
    "    select.select([s.fileno()], [], [], 20)\n"
    "    fin = os.read(s.fileno(), 1)\n"
    "    print('CLEAN' if data == b'' and fin == b'' else 'DATA %r %r' % (data, fin), flush=True)\n"
    "except Exception as e:\n"
    "    print('ERROR %s' % e, flush=True)\n";

static iol_tls_ctx *server_ctx;
static bool have_python;

static FILE *start_client(uint16_t port)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "timeout 30 /usr/bin/python3 %s %s %u 2>&1", iol_test_cert_path("client.py"),
             iol_test_cert_path("ca.pem"), port);
    FILE *f = popen(cmd, "r");
    ck_assert_ptr_nonnull(f);
    return f;
}

/* The client's next line, newline stripped. */
static void client_line(FILE *f, char *buf, size_t size)
{
    if (!fgets(buf, (int)size, f))
        snprintf(buf, size, "(no output)");
    buf[strcspn(buf, "\n")] = '\0';
}

/* ------------------------------------------------------------ Echo server */

typedef struct {
    iol_loop *loop;
    int echoed;
    bool stop_on_echo;
} echo_state;

static void on_echo_written(void *arg)
{
    echo_state *st = arg;
    st->echoed++;
    if (st->stop_on_echo)
        iol_loop_stop(st->loop);
}

static void on_line(iol_stream *s, const char *data, size_t len, int status, void *arg)
{
    if (status < 0)
        return;
    ck_assert_int_eq(iol_stream_write(s, data, len, on_echo_written, arg), 0);
    ck_assert_int_eq(iol_stream_read_until(s, "\n", on_line, arg), 0);
}

static void serve(iol_loop *loop, int fd, echo_state *st)
{
    iol_stream *s;
    ck_assert_int_eq(iol_tls_stream_new(&s, loop, fd, server_ctx, 0), 0);
    ck_assert_int_eq(iol_stream_read_until(s, "\n", on_line, st), 0);
}

/* ---------------------------------------------------------- Runtime drain */

static echo_state rt_state;

static void rt_on_accept(iol_loop *loop, int fd, const struct sockaddr *peer, socklen_t peerlen, void *arg)
{
    (void)peer, (void)peerlen, (void)arg;
    serve(loop, fd, &rt_state);
}

/* A started one-worker runtime (drain_timeout 0.2 s) listening on
 * 127.0.0.1 with on_accept: the listener's id. */
static int start_runtime(iol_runtime **rt, iol_accept_fn on_accept)
{
    iol_runtime_config cfg = {.workers = 1, .drain_timeout = 0.2};
    ck_assert_int_eq(iol_runtime_new(rt, &cfg), 0);
    iol_listen_config lc = {.host = "127.0.0.1", .on_accept = on_accept};
    int id = iol_runtime_listen(*rt, &lc);
    ck_assert_int_ge(id, 0);
    ck_assert_int_eq(iol_runtime_start(*rt), 0);
    return id;
}

START_TEST(runtime_drain_sends_close_notify)
{
    if (!have_python)
        return;
    memset(&rt_state, 0, sizeof(rt_state));
    iol_runtime *rt;
    int id = start_runtime(&rt, rt_on_accept);
    FILE *f = start_client((uint16_t)iol_runtime_listener_port(rt, id));
    char line[256];
    client_line(f, line, sizeof(line));
    ck_assert_str_eq(line, "READY");
    /* The client idles on an open TLS stream: the drain waits it out,
     * then shuts the socket for writing. */
    ck_assert_int_eq(iol_runtime_stop(rt), 0);
    ck_assert_int_eq(iol_runtime_join(rt), 0);
    client_line(f, line, sizeof(line));
    ck_assert_str_eq(line, "CLEAN");
    pclose(f);
    iol_runtime_free(rt);
}
END_TEST

/* The same with `openssl s_client` as the peer: it reports a FIN without
 * close_notify as "unexpected eof while reading" and exits with 1. */
START_TEST(runtime_drain_clean_for_s_client)
{
    memset(&rt_state, 0, sizeof(rt_state));
    iol_runtime *rt;
    int id = start_runtime(&rt, rt_on_accept);
    char cmd[512];
    /* -quiet: stdin's end is ignored, s_client reads until the server ends. */
    snprintf(cmd, sizeof(cmd),
             "echo from-s_client | timeout 30 openssl s_client -connect 127.0.0.1:%d -servername a.test "
             "-verify_hostname a.test -CAfile %s -verify_return_error -quiet 2>&1",
             iol_runtime_listener_port(rt, id), iol_test_cert_path("ca.pem"));
    FILE *f = popen(cmd, "r");
    ck_assert_ptr_nonnull(f);
    char out[4096] = "";
    size_t used = 0;
    /* Until the echo came back: the connection is up and idle. */
    while (!strstr(out, "from-s_client") && used < sizeof(out) - 1 && fgets(out + used, (int)(sizeof(out) - used), f))
        used = strlen(out);
    ck_assert_msg(strstr(out, "from-s_client"), "%s", out);
    ck_assert_int_eq(iol_runtime_stop(rt), 0);
    ck_assert_int_eq(iol_runtime_join(rt), 0);
    used += fread(out + used, 1, sizeof(out) - 1 - used, f);
    out[used] = '\0';
    int status = pclose(f);
    ck_assert_msg(!strstr(out, "unexpected eof"), "%s", out);
    ck_assert_msg(status == 0, "s_client exit %d: %s", status, out);
    iol_runtime_free(rt);
}
END_TEST

/* Writes still queued when the drain gives up are lost: then no
 * close_notify, whose promise (everything was sent) would be false; the
 * peer sees the truncation it is owed. The client asks for 32 MiB and
 * reads none of it until the runtime is gone (the flag file). */
static const char big_client_py[] =
    "import os, socket, ssl, sys, time\n"
    "ctx = ssl.create_default_context(cafile=sys.argv[1])\n"
    "ctx.options &= ~getattr(ssl, 'OP_IGNORE_UNEXPECTED_EOF', 0)\n"
    "raw = socket.create_connection(('127.0.0.1', int(sys.argv[2])), timeout=20)\n"
    "s = ctx.wrap_socket(raw, server_hostname='a.test', suppress_ragged_eofs=False)\n"
    "s.sendall(b'big\\n')\n"
    "total = len(s.recv(1))\n"
    "print('READY', flush=True)\n"
    "while not os.path.exists(sys.argv[3]):\n"
    "    time.sleep(0.01)\n"
    "try:\n"
    "    while True:\n"
    "        d = s.recv(1 << 16)\n"
    "        if not d:\n"
    "            print('CLEAN %d' % total, flush=True)\n"
    "            break\n"
    "        total += len(d)\n"
    "except Exception as e:\n"
    "    print('ERROR %d %s' % (total, e), flush=True)\n";

enum { BIG = 32 << 20 };

static void big_on_line(iol_stream *s, const char *data, size_t len, int status, void *arg)
{
    (void)data, (void)len, (void)arg;
    if (status < 0)
        return;
    char *chunk = malloc(1 << 20);
    ck_assert_ptr_nonnull(chunk);
    memset(chunk, 'x', 1 << 20);
    for (int i = 0; i < BIG >> 20; i++)
        ck_assert_int_eq(iol_stream_write(s, chunk, 1 << 20, NULL, NULL), 0);
    free(chunk);
}

static void big_on_accept(iol_loop *loop, int fd, const struct sockaddr *peer, socklen_t peerlen, void *arg)
{
    (void)peer, (void)peerlen, (void)arg;
    iol_stream *s;
    ck_assert_int_eq(iol_tls_stream_new(&s, loop, fd, server_ctx, 0), 0);
    ck_assert_int_eq(iol_stream_read_until(s, "\n", big_on_line, NULL), 0);
}

START_TEST(runtime_drain_no_close_notify_over_lost_writes)
{
    if (!have_python)
        return;
    iol_runtime *rt;
    int id = start_runtime(&rt, big_on_accept);
    const char *flag = iol_test_cert_path("go");
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "timeout 30 /usr/bin/python3 %s %s %u %s 2>&1", iol_test_cert_path("big_client.py"),
             iol_test_cert_path("ca.pem"), iol_runtime_listener_port(rt, id), flag);
    FILE *f = popen(cmd, "r");
    ck_assert_ptr_nonnull(f);
    char line[256];
    client_line(f, line, sizeof(line));
    ck_assert_str_eq(line, "READY");
    ck_assert_int_eq(iol_runtime_stop(rt), 0);
    ck_assert_int_eq(iol_runtime_join(rt), 0);
    iol_runtime_free(rt);
    FILE *go = fopen(flag, "w");
    ck_assert_ptr_nonnull(go);
    fclose(go);
    client_line(f, line, sizeof(line));
    pclose(f);
    unlink(flag);
    long total = -1;
    ck_assert_msg(sscanf(line, "ERROR %ld", &total) == 1, "%s", line); /* not CLEAN */
    ck_assert_msg(total < BIG, "%s", line);
}
END_TEST

/* ------------------------------------------------------------- Loop close */

static void loop_on_accept(int lfd, unsigned events, void *arg)
{
    (void)events;
    echo_state *st = arg;
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0)
        serve(st->loop, fd, st);
}

START_TEST(loop_close_sends_close_notify)
{
    if (!have_python)
        return;
    iol_loop *loop;
    ck_assert_int_eq(iol_loop_new(&loop, NULL), 0);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(bind(lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    ck_assert_int_eq(listen(lfd, 8), 0);
    socklen_t len = sizeof(sin);
    ck_assert_int_eq(getsockname(lfd, (struct sockaddr *)&sin, &len), 0);
    echo_state st = {.loop = loop, .stop_on_echo = true};
    ck_assert_int_eq(iol_loop_add_handler(loop, lfd, IOL_READ, loop_on_accept, &st), 0);
    FILE *f = start_client(ntohs(sin.sin_port));
    ck_assert_int_eq(iol_loop_start(loop), 0); /* until the echo went out */
    ck_assert_int_eq(st.echoed, 1);
    char line[256];
    client_line(f, line, sizeof(line));
    ck_assert_str_eq(line, "READY");
    ck_assert_int_eq(iol_loop_remove_handler(loop, lfd), 0);
    close(lfd);
    ck_assert_int_ge(iol_loop_close(loop, true), 0); /* the TLS stream still open */
    client_line(f, line, sizeof(line));
    ck_assert_str_eq(line, "CLEAN");
    pclose(f);
}
END_TEST

int main(void)
{
    int setup = iol_test_certs_setup("tls_drain");
    if (setup != 0)
        return setup;
    have_python = system("/usr/bin/python3 -c 'import ssl' >/dev/null 2>&1") == 0;
    if (!have_python)
        printf("tls_drain: no /usr/bin/python3 with ssl, its tests pass without running\n");
    FILE *py = fopen(iol_test_cert_path("client.py"), "w");
    if (!py || fputs(client_py, py) < 0 || fclose(py) != 0)
        return 1;
    py = fopen(iol_test_cert_path("big_client.py"), "w");
    if (!py || fputs(big_client_py, py) < 0 || fclose(py) != 0)
        return 1;
    iol_tls_config cfg = {.server = true, .cert_file = iol_test_cert_path("a.pem"), .key_file = iol_test_cert_path("a.key")};
    if (iol_tls_ctx_new(&server_ctx, &cfg) != 0)
        return 1;
    Suite *s = suite_create("tls_drain");
    TCase *tc = iol_test_tcase("close_notify", 60);
    tcase_add_test(tc, runtime_drain_sends_close_notify);
    tcase_add_test(tc, runtime_drain_clean_for_s_client);
    tcase_add_test(tc, runtime_drain_no_close_notify_over_lost_writes);
    tcase_add_test(tc, loop_close_sends_close_notify);
    suite_add_tcase(s, tc);
    int rc = iol_test_run(s);
    iol_tls_ctx_unref(server_ctx);
    iol_test_certs_remove();
    return rc;
}
