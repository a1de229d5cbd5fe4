/* docs/examples/runtime_listener.c — a runtime of worker loops sharing one
 * listening port.
 *
 *   runtime_listener [reuseport|handoff]
 *
 * Two workers, one loop each. The listener spreads connections over them
 * (SO_REUSEPORT: the kernel picks; handoff: the runtime's acceptor, a
 * thread of its own, accepts and hands each fd to the worker with the
 * fewest connections, passing over a stalled one). on_accept runs on the
 * worker that owns the connection, owns the fd, greets and closes. main()
 * is the client: ten blocking connections, then stop, join, counts. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ioloop.h>

static void on_start(iol_loop *loop, unsigned index, void *arg)
{
    (void)arg;
    /* On the worker thread, before its loop runs: its loop is current. */
    printf("worker %u up (current loop ok: %s)\n", index, iol_loop_current() == loop ? "yes" : "no");
}

static void on_accept(iol_loop *loop, int fd, const struct sockaddr *peer, socklen_t peerlen, void *arg)
{
    (void)loop, (void)peer, (void)peerlen, (void)arg;
    char line[64];
    int n = snprintf(line, sizeof line, "hello from worker %d\n", iol_runtime_worker_index());
    /* A short reply fits the socket buffer. A real server registers a
     * handler on `loop` (or wraps fd in an iol_stream) instead. */
    if (write(fd, line, (size_t)n) != n)
        perror("write");
    close(fd);
}

static int client(int port, char *buf, size_t size)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
    ssize_t n = -1;
    if (connect(fd, (struct sockaddr *)&sin, sizeof sin) == 0)
        n = read(fd, buf, size - 1);
    close(fd);
    buf[n > 0 ? n : 0] = '\0';
    return n > 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
    int shard = argc > 1 && strcmp(argv[1], "handoff") == 0 ? IOL_SHARD_HANDOFF : IOL_SHARD_REUSEPORT;
    iol_runtime_config cfg = { .workers = 2, .on_start = on_start };
    iol_runtime *rt;
    int err = iol_runtime_new(&rt, &cfg);
    if (err < 0) {
        fprintf(stderr, "runtime_new: %s\n", iol_strerror(err));
        return 1;
    }
    iol_listen_config lc = { .host = "127.0.0.1", .port = 0, .shard = shard, .on_accept = on_accept };
    int id = iol_runtime_listen(rt, &lc); /* before or after start */
    if (id < 0 || (err = iol_runtime_start(rt)) < 0) {
        fprintf(stderr, "listen/start: %s\n", iol_strerror(id < 0 ? id : err));
        return 1;
    }
    int port = iol_runtime_listener_port(rt, id);
    printf("listening on 127.0.0.1:%d (%s)\n", port, shard == IOL_SHARD_HANDOFF ? "handoff" : "reuseport");

    char reply[64];
    for (int i = 0; i < 10; i++) {
        if (client(port, reply, sizeof reply) == 0)
            printf("client %d: %s", i, reply);
    }

    iol_runtime_stop(rt); /* any thread; does not wait */
    iol_runtime_join(rt);
    uint64_t counts[2];
    int workers = iol_runtime_listener_counts(rt, id, counts, 2);
    printf("accepted per worker (%d workers): %llu %llu\n", workers, (unsigned long long)counts[0],
           (unsigned long long)counts[1]);
    iol_runtime_free(rt);
    return 0;
}
