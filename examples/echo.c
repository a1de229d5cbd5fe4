/* echo: a TCP echo server on a runtime of N workers, with streams.
 *
 *   echo --port P --workers N [--shard reuseport|handoff] [--host H]
 *
 * Prints "listening on 127.0.0.1:PORT", serves until SIGINT/SIGTERM, then
 * stops gracefully (queued connections are accepted, open ones closed)
 * and exits 0.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ioloop.h"

#define READ_CHUNK 65536

typedef struct conn conn;
struct conn {
    conn *prev, *next; /* the worker's open connections */
    iol_stream *stream;
};

/* Each worker's list (a sentinel head), closed in on_stop. */
static __thread conn open_head;
static iol_runtime *the_runtime; /* for the signal handler */

static void on_read(iol_stream *s, const char *data, size_t len, int status, void *arg);

static void read_more(void *arg)
{
    conn *c = arg;
    if (iol_stream_closed(c->stream))
        return;
    if (iol_stream_read_bytes(c->stream, READ_CHUNK, true, on_read, c) < 0)
        iol_stream_close(c->stream);
}

static void on_read(iol_stream *s, const char *data, size_t len, int status, void *arg)
{
    conn *c = arg;
    if (status < 0 || len == 0) {
        if (!iol_stream_closed(s))
            iol_stream_close(s);
        return;
    }
    /* Read the next chunk once this one is in the kernel: a client that
     * does not read its echo cannot make us buffer without bound. */
    if (iol_stream_write(s, data, len, read_more, c) < 0 && !iol_stream_closed(s))
        iol_stream_close(s);
}

static void on_close(iol_stream *s, void *arg)
{
    (void)s;
    conn *c = arg;
    c->prev->next = c->next;
    c->next->prev = c->prev;
    free(c);
}

static void on_accept(iol_loop *loop, int fd, const struct sockaddr *peer, socklen_t peerlen, void *arg)
{
    (void)peer;
    (void)peerlen;
    (void)arg;
    conn *c = calloc(1, sizeof(*c));
    if (!c) {
        close(fd);
        return;
    }
    int r = iol_stream_new(&c->stream, loop, fd, 0);
    if (r < 0) {
        fprintf(stderr, "echo: stream: %s\n", strerror(-r));
        close(fd);
        free(c);
        return;
    }
    c->next = open_head.next;
    c->prev = &open_head;
    open_head.next->prev = c;
    open_head.next = c;
    iol_stream_set_close_callback(c->stream, on_close, c);
    read_more(c);
}

static void worker_start(iol_loop *loop, unsigned index, void *arg)
{
    (void)loop;
    (void)index;
    (void)arg;
    open_head.next = open_head.prev = &open_head;
}

static void worker_stop(iol_loop *loop, unsigned index, void *arg)
{
    (void)loop;
    (void)index;
    (void)arg;
    /* Close callbacks unlink and free; they run later, in the runtime's
     * drain after on_stop, so the list is stable during this walk. */
    for (conn *c = open_head.next; c != &open_head; c = c->next)
        if (!iol_stream_closed(c->stream))
            iol_stream_close(c->stream);
}

static void stop_runtime(void *arg)
{
    iol_runtime_stop(arg);
}

static void on_signal(int signo)
{
    (void)signo;
    int saved = errno;
    /* Async-signal-safe; the stop itself runs on worker 0. */
    if (iol_loop_add_callback_from_signal(iol_runtime_loop(the_runtime, 0), stop_runtime, the_runtime) < 0)
        iol_runtime_stop(the_runtime); /* a flag and a wakeup: safe here too */
    errno = saved;
}

static void usage(void)
{
    fprintf(stderr, "usage: echo --port P --workers N [--shard reuseport|handoff] [--host H]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"port", required_argument, NULL, 'p'},  {"workers", required_argument, NULL, 'w'},
        {"shard", required_argument, NULL, 's'}, {"host", required_argument, NULL, 'H'},
        {"help", no_argument, NULL, 'h'},        {NULL, 0, NULL, 0},
    };
    long port = 7000, workers = 1;
    int shard = IOL_SHARD_REUSEPORT;
    const char *host = "127.0.0.1";
    int opt;
    while ((opt = getopt_long(argc, argv, "p:w:s:H:h", opts, NULL)) != -1) {
        char *end;
        switch (opt) {
        case 'p':
            port = strtol(optarg, &end, 10);
            if (*end || port < 0 || port > 65535)
                usage();
            break;
        case 'w':
            workers = strtol(optarg, &end, 10);
            if (*end || workers < 0 || workers > 4096)
                usage();
            break;
        case 's':
            if (strcmp(optarg, "reuseport") == 0)
                shard = IOL_SHARD_REUSEPORT;
            else if (strcmp(optarg, "handoff") == 0)
                shard = IOL_SHARD_HANDOFF;
            else
                usage();
            break;
        case 'H':
            host = optarg;
            break;
        default:
            usage();
        }
    }
    if (optind != argc)
        usage();
    signal(SIGPIPE, SIG_IGN);

    iol_runtime_config rc = {.workers = (unsigned)workers, .on_start = worker_start, .on_stop = worker_stop};
    int r = iol_runtime_new(&the_runtime, &rc);
    if (r < 0) {
        fprintf(stderr, "echo: runtime: %s\n", strerror(-r));
        return 1;
    }
    iol_listen_config lc = {.host = host, .port = (uint16_t)port, .shard = shard, .on_accept = on_accept};
    int id = iol_runtime_listen(the_runtime, &lc);
    if (id < 0) {
        fprintf(stderr, "echo: listen on %s:%ld: %s\n", host, port, strerror(-id));
        iol_runtime_free(the_runtime);
        return 1;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    if ((r = iol_runtime_start(the_runtime)) < 0) {
        fprintf(stderr, "echo: start: %s\n", strerror(-r));
        iol_runtime_free(the_runtime);
        return 1;
    }
    bool v6 = strchr(host, ':') != NULL;
    printf("listening on %s%s%s:%d\n", v6 ? "[" : "", host, v6 ? "]" : "", iol_runtime_listener_port(the_runtime, id));
    fflush(stdout);
    iol_runtime_join(the_runtime);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    iol_runtime_free(the_runtime);
    return 0;
}
