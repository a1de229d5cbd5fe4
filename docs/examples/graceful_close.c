/* docs/examples/graceful_close.c — a server's answer, then a graceful
 * close (iol_stream_shutdown), over a socketpair on one loop.
 *
 * The server queues a 1 MiB answer (more than the socket takes at once)
 * and shuts down at once: the FIN leaves only after the last byte, and
 * the server goes on reading. The client reads the answer, says "bye",
 * half-closes in turn and reads until the server's FIN (status 0); the
 * server reads the "bye" after its own FIN, then the client's EOF, and
 * its close callback ends the demo. iol_stream_close in place of
 * shutdown would have dropped most of the answer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <ioloop.h>

enum { ANSWER = 1 << 20 };

typedef struct demo {
    iol_loop *loop;
    size_t client_got;
    char server_heard[16];
} demo;

/* ---- server ---- */

static void on_fin_sent(iol_stream *s, int status, void *arg)
{
    (void)s, (void)arg;
    /* 0: every byte and then the FIN went to the kernel. Otherwise the
     * stream closed first: -ECANCELED (our close), IOL_EOF (the peer's),
     * -ECONNRESET... */
    printf("server: shutdown done: %s\n", iol_strerror(status));
}

static void on_server_read(iol_stream *s, const char *data, size_t len, int status, void *arg)
{
    (void)s;
    demo *d = arg;
    /* read_until_close: status 0 at the peer's EOF, with what came. */
    snprintf(d->server_heard, sizeof d->server_heard, "%.*s", (int)len, data);
    printf("server: heard \"%s\" after its FIN, then EOF (%s)\n", d->server_heard, iol_strerror(status));
}

static void on_server_closed(iol_stream *s, void *arg)
{
    (void)s;
    iol_loop_stop(((demo *)arg)->loop);
}

/* ---- client ---- */

static void on_client_end(iol_stream *s, const char *data, size_t len, int status, void *arg)
{
    (void)s, (void)data, (void)len, (void)arg;
    printf("client: then the server's FIN (%s)\n", iol_strerror(status)); /* status 0 */
}

static void on_answer(iol_stream *s, const char *data, size_t len, int status, void *arg)
{
    (void)data;
    demo *d = arg;
    if (status < 0) { /* IOL_EOF: the server ended before the whole answer */
        printf("client: %s\n", iol_strerror(status));
        return;
    }
    d->client_got = len;
    printf("client: %zu bytes\n", len);
    /* The client half-closes too, after its last words, and reads on
     * until the server's FIN: the stream then closes itself. */
    iol_stream_write(s, "bye", 3, NULL, NULL);
    iol_stream_shutdown(s, NULL, NULL);
    iol_stream_read_until_close(s, on_client_end, d);
}

int main(void)
{
    demo d = {0};
    if (iol_loop_new(&d.loop, NULL) < 0)
        return 1;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return 1;
    iol_stream *server, *client;
    if (iol_stream_new(&server, d.loop, sv[0], 0) < 0 || iol_stream_new(&client, d.loop, sv[1], 0) < 0)
        return 1;

    char *answer = malloc(ANSWER);
    memset(answer, 'a', ANSWER);
    iol_stream_write(server, answer, ANSWER, NULL, NULL); /* copied */
    free(answer);
    iol_stream_shutdown(server, on_fin_sent, &d);        /* FIN after the answer */
    iol_stream_set_close_callback(server, on_server_closed, &d);
    iol_stream_read_until_close(server, on_server_read, &d); /* reading goes on */
    iol_stream_read_bytes(client, ANSWER, false, on_answer, &d);
    iol_loop_start(d.loop); /* until the server's close callback */

    iol_loop_close(d.loop, false);
    int ok = d.client_got == ANSWER && strcmp(d.server_heard, "bye") == 0;
    printf("%s\n", ok ? "graceful close: every byte delivered" : "graceful close: FAILED");
    return ok ? 0 : 1;
}
