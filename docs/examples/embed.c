/* docs/examples/embed.c — an ioloop driven by someone else's event loop.
 *
 * A plain poll() loop stands for GLib, libuv or a game loop: it waits on
 * the loop's backend fd with the timeout the loop asks for, then lets the
 * loop run one iteration. Timeouts, an fd handler and posts from another
 * thread all run; the last one ends the outer loop. */
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

#include <ioloop.h>

static int timeouts, reads, posts;
static int pipe_fds[2];

static void on_timeout(void *arg) { (void)arg; timeouts++; }
static void on_post(void *arg) { (void)arg; posts++; }
static void on_readable(int fd, unsigned events, void *arg)
{
    (void)events, (void)arg;
    char c;
    if (read(fd, &c, 1) == 1)
        reads++;
}

static void *producer(void *arg)
{
    for (int i = 0; i < 100; i++) {
        if (i % 25 == 0)
            usleep(5000);                 /* the outer loop falls asleep meanwhile */
        iol_loop_add_callback(arg, on_post, NULL);
    }
    if (write(pipe_fds[1], "x", 1) != 1)
        return NULL;
    return NULL;
}

int main(void)
{
    iol_loop *loop;
    if (iol_loop_new(&loop, &(iol_loop_config){ .poller = "epoll" }) < 0 || pipe(pipe_fds) < 0)
        return 1;
    iol_loop_add_handler(loop, pipe_fds[0], IOL_READ, on_readable, NULL);
    iol_loop_call_later(loop, 0.01, on_timeout, NULL, NULL);
    iol_loop_call_later(loop, 0.02, on_timeout, NULL, NULL);
    pthread_t t;
    pthread_create(&t, NULL, producer, loop);

    int fd = iol_loop_backend_fd(loop);   /* epoll: its own fd; poll/select: -ENOTSUP */
    while (timeouts < 2 || reads < 1 || posts < 100) {
        double wait;
        iol_loop_backend_timeout(loop, &wait);    /* 0: work queued; -1: none due */
        struct pollfd p = { .fd = fd, .events = POLLIN };
        poll(&p, 1, wait < 0 ? -1 : (int)(wait * 1000 + 0.999));   /* rounded up */
        iol_loop_run_once(loop, 0);               /* one iteration, no waiting */
    }
    pthread_join(t, NULL);
    printf("%d timeouts, %d read, %d posts ran\n", timeouts, reads, posts);
    iol_loop_remove_handler(loop, pipe_fds[0]);
    iol_loop_close(loop, false);
    return 0;
}
