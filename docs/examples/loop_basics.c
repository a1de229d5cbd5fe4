/* docs/examples/loop_basics.c — one loop: an fd handler, timeouts, stop.
 *
 * A timeout writes to a pipe 50 ms after start; the read handler prints
 * what arrives and removes itself. A second timeout is cancelled before it
 * fires; a third stops the loop. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <ioloop.h>

typedef struct app {
    iol_loop *loop;
    int pipe_fds[2];
} app;

static void on_readable(int fd, unsigned events, void *arg)
{
    app *a = arg;
    char buf[64];
    ssize_t n = read(fd, buf, sizeof buf);
    printf("handler: events=%#x read %zd bytes: %.*s\n", events, n, (int)(n > 0 ? n : 0), buf);
    /* Level-triggered: without this the handler runs again while data is
     * left; here we are done with the fd. */
    iol_loop_remove_handler(a->loop, fd);
}

static void write_pipe(void *arg)
{
    app *a = arg;
    printf("timeout: writing at t=%.3f\n", iol_loop_time(a->loop));
    if (write(a->pipe_fds[1], "ping", 4) != 4)
        perror("write");
}

static void never(void *arg)
{
    (void)arg;
    printf("this timeout was cancelled and never runs\n");
}

static void stop_loop(void *arg)
{
    app *a = arg;
    printf("timeout: stopping\n");
    iol_loop_stop(a->loop);
}

int main(void)
{
    app a;
    if (pipe(a.pipe_fds) < 0)
        return 1;
    int err = iol_loop_new(&a.loop, NULL);
    if (err < 0) {
        fprintf(stderr, "iol_loop_new: %s\n", iol_strerror(err));
        return 1;
    }
    printf("poller: %s\n", iol_loop_poller(a.loop));

    err = iol_loop_add_handler(a.loop, a.pipe_fds[0], IOL_READ, on_readable, &a);
    if (err < 0) {
        fprintf(stderr, "add_handler: %s\n", iol_strerror(err));
        return 1;
    }
    iol_timeout cancelled;
    iol_loop_call_later(a.loop, 0.050, write_pipe, &a, NULL);
    iol_loop_call_later(a.loop, 0.100, never, &a, &cancelled);
    /* call_at takes an absolute time on the loop's clock. */
    iol_loop_call_at(a.loop, iol_loop_time(a.loop) + 0.150, stop_loop, &a, NULL);
    printf("remove_timeout: %d\n", iol_loop_remove_timeout(a.loop, cancelled));
    printf("remove_timeout again: %d (-ENOENT is %d)\n", iol_loop_remove_timeout(a.loop, cancelled), -ENOENT);

    iol_loop_start(a.loop); /* returns after stop_loop */

    /* Nothing is pending any more, so close drops nothing. */
    printf("close dropped %d\n", iol_loop_close(a.loop, false));
    close(a.pipe_fds[0]);
    close(a.pipe_fds[1]);
    return 0;
}
