/* Unix domain sockets: the runtime's HANDOFF listeners on a path (served
 * with streams on the workers), iol_stream_connect_unix, a stale socket
 * file replaced, the file removed at stop and at free, and the bad
 * arguments. Each test works in a directory of its own under /tmp. */
#include "ioloop.h"
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* ----------------------------------------------------------------- Helpers */

static char dir[64];

static void make_dir(void)
{
    snprintf(dir, sizeof(dir), "/tmp/iol-unix-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

/* A path in dir; up to four at a time stay valid. */
static const char *path_in_dir(const char *name)
{
    static char paths[4][128];
    static unsigned next;
    char *path = paths[next++ % 4];
    snprintf(path, sizeof(paths[0]), "%s/%s", dir, name);
    return path;
}

static bool exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

static void on_safety_timeout(void *arg)
{
    ck_abort_msg("loop did not stop in time");
    iol_loop_stop(arg);
}

static void run_loop(iol_loop *loop)
{
    iol_timeout t = 0;
    ck_assert_int_eq(iol_loop_call_later(loop, iol_test_under_valgrind() ? 100 : 10, on_safety_timeout, loop, &t), 0);
    ck_assert_int_eq(iol_loop_start(loop), 0);
    iol_loop_remove_timeout(loop, t);
}

/* A bound Unix socket at path: listening (live) or not (a stale file
 * once closed). Returns the fd. */
static int bind_path(const char *path, bool do_listen)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    ck_assert_uint_lt(strlen(path), sizeof(sun.sun_path));
    memcpy(sun.sun_path, path, strlen(path) + 1);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
    if (do_listen)
        ck_assert_int_eq(listen(fd, 4), 0);
    return fd;
}

/* ------------------------------------------------------------ Echo server */

typedef struct server {
    iol_runtime *rt;
    _Atomic int accepted;
    _Atomic int unix_peers;
} server;

static void on_server_line(iol_stream *s, const char *data, size_t len, int status, void *arg)
{
    if (status < 0)
        return; /* the client went away: the stream closes itself */
    if (iol_stream_write(s, data, len, NULL, NULL) < 0 || iol_stream_read_until(s, "\n", on_server_line, arg) < 0)
        iol_stream_close(s);
}

static void on_accept(iol_loop *loop, int fd, const struct sockaddr *peer, socklen_t peerlen, void *arg)
{
    server *sv = arg;
    atomic_fetch_add(&sv->accepted, 1);
    if (peer && peerlen >= sizeof(sa_family_t) && peer->sa_family == AF_UNIX)
        atomic_fetch_add(&sv->unix_peers, 1);
    iol_stream *s;
    if (iol_stream_new(&s, loop, fd, 4096) < 0) {
        close(fd);
        return;
    }
    if (iol_stream_read_until(s, "\n", on_server_line, sv) < 0)
        iol_stream_close(s);
}

/* ------------------------------------------------------------ Stream client */

typedef struct client {
    iol_loop *loop;
    int round, rounds;
    int status;
    bool echoed;
    const char *path;
} client;

static void client_dial(client *c);

static void on_client_line(iol_stream *s, const char *data, size_t len, int status, void *arg)
{
    client *c = arg;
    ck_assert_int_eq(status, 0);
    char want[32];
    snprintf(want, sizeof(want), "line %d\n", c->round);
    ck_assert_uint_eq(len, strlen(want));
    ck_assert(memcmp(data, want, len) == 0);
    ck_assert_int_eq(iol_stream_close(s), 0);
}

static void on_client_close(iol_stream *s, void *arg)
{
    (void)s;
    client *c = arg;
    if (++c->round == c->rounds)
        iol_loop_stop(c->loop);
    else
        client_dial(c);
}

static void on_client_connect(iol_stream *s, int status, void *arg)
{
    client *c = arg;
    c->status = status;
    if (status < 0)
        return; /* the stream closes after this; the close callback goes on */
    char line[32];
    int n = snprintf(line, sizeof(line), "line %d\n", c->round);
    ck_assert_int_eq(iol_stream_write(s, line, (size_t)n, NULL, NULL), 0);
    ck_assert_int_eq(iol_stream_read_until(s, "\n", on_client_line, c), 0);
}

static void client_dial(client *c)
{
    iol_stream *s;
    iol_connect_options o = {.timeout = 5};
    ck_assert_int_eq(iol_stream_connect_unix(&s, c->loop, c->path, &o, on_client_connect, c), 0);
    ck_assert_int_eq(iol_stream_set_close_callback(s, on_client_close, c), 0);
}

/* ---------------------------------------------------------------- Tests */

START_TEST(handoff_listener_on_a_path)
{
    make_dir();
    const char *path = path_in_dir("echo.sock");
    server sv = {0};
    ck_assert_int_eq(iol_runtime_new(&sv.rt, &(iol_runtime_config){.workers = 2}), 0);
    iol_listen_config lc = {.path = path, .shard = IOL_SHARD_HANDOFF, .on_accept = on_accept, .arg = &sv};
    int id = iol_runtime_listen(sv.rt, &lc);
    ck_assert_int_ge(id, 0);
    ck_assert_int_eq(iol_runtime_listener_port(sv.rt, id), 0);
    ck_assert(exists(path));
    /* Ours, live: -EADDRINUSE. Finding that out connects once (a socket
     * file nobody answers is replaced), so the listener sees one more
     * connection, closed at once. */
    ck_assert_int_eq(iol_runtime_listen(sv.rt, &lc), -EADDRINUSE);
    ck_assert_int_eq(iol_runtime_start(sv.rt), 0);

    client c = {.rounds = (int)iol_test_scaled(20, 4), .path = path};
    ck_assert_int_eq(iol_loop_new(&c.loop, NULL), 0);
    client_dial(&c);
    run_loop(c.loop);
    ck_assert_int_eq(c.round, c.rounds);
    ck_assert_int_eq(c.status, 0);

    uint64_t counts[2] = {0};
    ck_assert_int_eq(iol_runtime_listener_counts(sv.rt, id, counts, 2), 2);
    ck_assert_uint_eq(counts[0] + counts[1], (uint64_t)c.rounds + 1); /* + the probe */
    ck_assert_int_eq(atomic_load(&sv.unix_peers), c.rounds + 1);

    ck_assert_int_eq(iol_runtime_stop(sv.rt), 0);
    ck_assert_int_eq(iol_runtime_join(sv.rt), 0);
    ck_assert(!exists(path)); /* removed at stop */
    iol_runtime_free(sv.rt);

    /* Nobody there any more: the connect fails in its callback. */
    c.round = 0;
    c.rounds = 1;
    client_dial(&c);
    run_loop(c.loop);
    ck_assert_int_eq(c.status, -ENOENT);
    ck_assert_int_eq(iol_loop_close(c.loop, false), 0);
    rmdir(dir);
}
END_TEST

static void never_accept(iol_loop *loop, int fd, const struct sockaddr *peer, socklen_t peerlen, void *arg)
{
    (void)loop, (void)peer, (void)peerlen, (void)arg;
    close(fd);
}

START_TEST(stale_file_replaced_live_one_kept)
{
    make_dir();
    iol_runtime *rt;
    ck_assert_int_eq(iol_runtime_new(&rt, &(iol_runtime_config){.workers = 1}), 0);
    iol_listen_config lc = {.shard = IOL_SHARD_HANDOFF, .on_accept = never_accept};

    /* A live listener of someone else: -EADDRINUSE, its file untouched. */
    const char *live = path_in_dir("live.sock");
    int lfd = bind_path(live, true);
    lc.path = live;
    ck_assert_int_eq(iol_runtime_listen(rt, &lc), -EADDRINUSE);
    ck_assert(exists(live));

    /* A regular file: -EADDRINUSE, kept. */
    const char *plain = path_in_dir("plain");
    int pfd = open(plain, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    ck_assert_int_ge(pfd, 0);
    close(pfd);
    lc.path = plain;
    ck_assert_int_eq(iol_runtime_listen(rt, &lc), -EADDRINUSE);
    ck_assert(exists(plain));

    /* A socket file whose listener is gone: replaced. */
    const char *stale = path_in_dir("stale.sock");
    close(bind_path(stale, false));
    ck_assert(exists(stale));
    lc.path = stale;
    ck_assert_int_ge(iol_runtime_listen(rt, &lc), 0);

    /* Never started: free closes the listener and removes its file. */
    iol_runtime_free(rt);
    ck_assert(!exists(stale));
    ck_assert(exists(live));
    close(lfd);
    unlink(live);
    unlink(plain);
    rmdir(dir);
}
END_TEST

/* A file that replaced ours while we listened is not removed at stop. */
START_TEST(file_replaced_meanwhile_is_kept)
{
    make_dir();
    const char *path = path_in_dir("moved.sock");
    iol_runtime *rt;
    ck_assert_int_eq(iol_runtime_new(&rt, &(iol_runtime_config){.workers = 1}), 0);
    iol_listen_config lc = {.path = path, .shard = IOL_SHARD_HANDOFF, .on_accept = never_accept};
    ck_assert_int_ge(iol_runtime_listen(rt, &lc), 0);
    ck_assert_int_eq(iol_runtime_start(rt), 0);
    ck_assert_int_eq(unlink(path), 0);
    int fd = bind_path(path, false); /* a successor's socket */
    ck_assert_int_eq(iol_runtime_stop(rt), 0);
    ck_assert_int_eq(iol_runtime_join(rt), 0);
    ck_assert(exists(path));
    iol_runtime_free(rt);
    close(fd);
    unlink(path);
    rmdir(dir);
}
END_TEST

static void never_connect(iol_stream *s, int status, void *arg)
{
    (void)s, (void)status, (void)arg;
    ck_abort_msg("a rejected connect called back");
}

typedef struct refused {
    iol_loop *loop;
    int status;
} refused;

static void on_refused(iol_stream *s, int status, void *arg)
{
    (void)s;
    refused *r = arg;
    r->status = status;
    iol_loop_stop(r->loop);
}

START_TEST(connect_unix_failures)
{
    make_dir();
    refused r = {0};
    ck_assert_int_eq(iol_loop_new(&r.loop, NULL), 0);
    iol_stream *s = NULL;
    /* A socket file nobody listens on. */
    const char *stale = path_in_dir("stale.sock");
    close(bind_path(stale, false));
    ck_assert_int_eq(iol_stream_connect_unix(&s, r.loop, stale, NULL, on_refused, &r), 0);
    run_loop(r.loop);
    ck_assert_int_eq(r.status, -ECONNREFUSED);
    unlink(stale);

    s = NULL;
    char longpath[200];
    memset(longpath, 'a', sizeof(longpath) - 1);
    longpath[sizeof(longpath) - 1] = '\0';
    ck_assert_int_eq(iol_stream_connect_unix(NULL, r.loop, stale, NULL, never_connect, NULL), -EINVAL);
    ck_assert_int_eq(iol_stream_connect_unix(&s, NULL, stale, NULL, never_connect, NULL), -EINVAL);
    ck_assert_int_eq(iol_stream_connect_unix(&s, r.loop, NULL, NULL, never_connect, NULL), -EINVAL);
    ck_assert_int_eq(iol_stream_connect_unix(&s, r.loop, stale, NULL, NULL, NULL), -EINVAL);
    ck_assert_int_eq(iol_stream_connect_unix(&s, r.loop, "", NULL, never_connect, NULL), -EINVAL);
    ck_assert_int_eq(iol_stream_connect_unix(&s, r.loop, longpath, NULL, never_connect, NULL), -ENAMETOOLONG);
    iol_connect_options o = {.source = "127.0.0.1"};
    ck_assert_int_eq(iol_stream_connect_unix(&s, r.loop, stale, &o, never_connect, NULL), -EINVAL);
    ck_assert_ptr_null(s);
    ck_assert_int_eq(iol_loop_close(r.loop, false), 0);
    rmdir(dir);
}
END_TEST

START_TEST(listen_path_bad_args)
{
    make_dir();
    const char *path = path_in_dir("bad.sock");
    iol_runtime *rt;
    ck_assert_int_eq(iol_runtime_new(&rt, &(iol_runtime_config){.workers = 1}), 0);
    iol_listen_config lc = {.path = path, .shard = IOL_SHARD_REUSEPORT, .on_accept = never_accept};
    ck_assert_int_eq(iol_runtime_listen(rt, &lc), -EINVAL); /* REUSEPORT does not apply */
    lc.shard = IOL_SHARD_HANDOFF;
    lc.host = "127.0.0.1";
    ck_assert_int_eq(iol_runtime_listen(rt, &lc), -EINVAL);
    lc.host = NULL;
    lc.port = 80;
    ck_assert_int_eq(iol_runtime_listen(rt, &lc), -EINVAL);
    lc.port = 0;
    lc.nodelay = true;
    ck_assert_int_eq(iol_runtime_listen(rt, &lc), -EINVAL);
    lc.nodelay = false;
    lc.defer_accept = 1;
    ck_assert_int_eq(iol_runtime_listen(rt, &lc), -EINVAL);
    lc.defer_accept = 0;
    lc.path = "";
    ck_assert_int_eq(iol_runtime_listen(rt, &lc), -EINVAL);
    char longpath[200];
    memset(longpath, 'a', sizeof(longpath) - 1);
    longpath[sizeof(longpath) - 1] = '\0';
    lc.path = longpath;
    ck_assert_int_eq(iol_runtime_listen(rt, &lc), -ENAMETOOLONG);
    lc.path = "/nonexistent-dir-iol/x.sock";
    ck_assert_int_eq(iol_runtime_listen(rt, &lc), -ENOENT);
    ck_assert(!exists(path));
    iol_runtime_free(rt);
    rmdir(dir);
}
END_TEST

/* A live listener that is busy (its backlog full, nobody accepting):
 * still live, so -EADDRINUSE at once; listen must not block on its probe. */
START_TEST(live_listener_with_full_backlog)
{
    make_dir();
    iol_runtime *rt;
    ck_assert_int_eq(iol_runtime_new(&rt, &(iol_runtime_config){.workers = 1}), 0);
    const char *busy = path_in_dir("busy.sock");
    int lfd = bind_path(busy, false);
    ck_assert_int_eq(listen(lfd, 0), 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    memcpy(sun.sun_path, busy, strlen(busy) + 1);
    int fillers[8], n = 0;
    for (; n < 8; n++) { /* until the backlog refuses (EAGAIN) */
        fillers[n] = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (connect(fillers[n], (struct sockaddr *)&sun, sizeof(sun)) < 0) {
            ck_assert_int_eq(errno, EAGAIN);
            close(fillers[n]);
            break;
        }
    }
    iol_listen_config lc = {.shard = IOL_SHARD_HANDOFF, .on_accept = never_accept, .path = busy};
    double t0 = iol_test_now();
    ck_assert_int_eq(iol_runtime_listen(rt, &lc), -EADDRINUSE); /* hangs here today */
    ck_assert(iol_test_now() - t0 < 5);
    for (int i = 0; i < n; i++)
        close(fillers[i]);
    iol_runtime_free(rt);
    close(lfd);
    unlink(busy);
    rmdir(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("unix");
    struct {
        const char *name;
        const TTest *test;
    } cases[] = {
        {"handoff_listener_on_a_path", handoff_listener_on_a_path},
        {"stale_file_replaced_live_one_kept", stale_file_replaced_live_one_kept},
        {"file_replaced_meanwhile_is_kept", file_replaced_meanwhile_is_kept},
        {"connect_unix_failures", connect_unix_failures},
        {"listen_path_bad_args", listen_path_bad_args},
        {"live_listener_with_full_backlog", live_listener_with_full_backlog},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        TCase *tc = iol_test_tcase(cases[i].name, 60);
        tcase_add_test(tc, cases[i].test);
        suite_add_tcase(s, tc);
    }
    return iol_test_run(s);
}
