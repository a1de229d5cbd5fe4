/* docs/examples/backpressure.c — a fast producer and a slow consumer on
 * one loop, joined by a socketpair, with memory bounded on both sides.
 *
 * Producer: writes 64 MiB in 64 KiB chunks but stops while its write
 * buffer is over the high watermark (1 MiB) and goes on when the stream
 * tells it the buffer drained under the low one (256 KiB).
 * Consumer: reads a header line with read_until_max (a line longer than
 * 64 bytes would fail with -EMSGSIZE), then the body; every 4 MiB it
 * pauses reading for 10 ms, so the kernel's buffers fill and the
 * producer stalls instead of buffering. */
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include <ioloop.h>

enum { TOTAL = 64 << 20, CHUNK = 64 << 10, HIGH = 1 << 20, LOW = 256 << 10, PAUSE_EVERY = 4 << 20 };

typedef struct demo {
    iol_loop *loop;
    iol_stream *producer, *consumer;
    size_t sent, received, next_pause;
    int stalls, pauses;
    size_t max_buffered;
    char chunk[CHUNK];
} demo;

/* ---- producer ---- */

static void on_all_written(void *arg)
{
    demo *d = arg;
    iol_stream_close(d->producer); /* all handed to the kernel: FIN after it */
}

static void produce(demo *d)
{
    /* Watermark calls never run inside iol_stream_write, so a producer
     * writing in a loop checks the buffer itself. */
    while (d->sent < TOTAL && iol_stream_write_buffer_size(d->producer) <= HIGH) {
        d->sent += CHUNK;
        if (iol_stream_write(d->producer, d->chunk, CHUNK, d->sent == TOTAL ? on_all_written : NULL, d) < 0)
            return;
    }
    size_t buffered = iol_stream_write_buffer_size(d->producer);
    if (buffered > d->max_buffered)
        d->max_buffered = buffered;
}

static void on_watermark(iol_stream *s, bool above, void *arg)
{
    (void)s;
    demo *d = arg;
    if (above)
        d->stalls++;   /* over HIGH: produce() already stopped */
    else
        produce(d);    /* drained to LOW: go on */
}

/* ---- consumer ---- */

static void on_body(iol_stream *s, const char *data, size_t len, int status, void *arg);

static void resume(void *arg)
{
    demo *d = arg;
    iol_stream_resume_reading(d->consumer);
}

static void on_body(iol_stream *s, const char *data, size_t len, int status, void *arg)
{
    (void)data;
    demo *d = arg;
    if (status < 0) {               /* IOL_EOF: the producer closed, all read */
        iol_loop_stop(d->loop);
        return;
    }
    d->received += len;
    if (d->received >= d->next_pause) {
        d->next_pause += PAUSE_EVERY;
        d->pauses++;
        iol_stream_pause_reading(s); /* the read below waits for resume */
        iol_loop_call_later(d->loop, 0.01, resume, d, NULL);
    }
    if (iol_stream_read_bytes(s, CHUNK, true, on_body, d) < 0)
        iol_loop_stop(d->loop);
}

static void on_header(iol_stream *s, const char *data, size_t len, int status, void *arg)
{
    demo *d = arg;
    if (status < 0) {               /* -EMSGSIZE: no "\n" within 64 bytes */
        fprintf(stderr, "header: %s\n", iol_strerror(status));
        iol_loop_stop(d->loop);
        return;
    }
    printf("header: %.*s", (int)len, data);
    if (iol_stream_read_bytes(s, CHUNK, true, on_body, d) < 0)
        iol_loop_stop(d->loop);
}

int main(void)
{
    static demo d;
    int fds[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0 || iol_loop_new(&d.loop, NULL) < 0)
        return 1;
    memset(d.chunk, 'x', sizeof(d.chunk));
    d.next_pause = PAUSE_EVERY;
    if (iol_stream_new(&d.producer, d.loop, fds[0], 0) < 0 || iol_stream_new(&d.consumer, d.loop, fds[1], 0) < 0)
        return 1;
    iol_stream_set_write_watermarks(d.producer, HIGH, LOW, on_watermark, &d);
    iol_stream_write(d.producer, "body: 64 MiB\n", 13, NULL, NULL);
    iol_stream_read_until_max(d.consumer, "\n", 64, on_header, &d);
    produce(&d);

    iol_loop_start(d.loop);
    printf("received %zu MiB, %d stalls, %d pauses, write buffer peaked at %zu KiB\n", d.received >> 20,
           d.stalls, d.pauses, d.max_buffered >> 10);
    int ok = d.received == TOTAL && d.max_buffered <= HIGH + CHUNK;
    iol_loop_close(d.loop, false); /* releases the consumer stream */
    return ok ? 0 : 1;
}
