/* docs/examples/signals.c — SIGINT/SIGTERM handled on the loop thread.
 *
 * iol_loop_add_signal runs an ordinary callback on the loop's thread (a
 * signalfd underneath): no async-signal-safety rules. Here the program
 * sends itself SIGUSR1 twice and SIGTERM once; the SIGTERM handler stops
 * the loop, and closing it gives the signals their old dispositions back. */
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#include <ioloop.h>

static int usr1_seen;

static void on_usr1(int signo, void *arg)
{
    (void)signo, (void)arg;
    usr1_seen++;
    printf("SIGUSR1 #%d on the loop thread\n", usr1_seen);
    if (usr1_seen == 2)
        kill(getpid(), SIGTERM);
}

static void on_stop_signal(int signo, void *arg)
{
    printf("%s: stopping\n", signo == SIGTERM ? "SIGTERM" : "SIGINT");
    iol_loop_stop(arg);
}

static void send_usr1(void *arg)
{
    (void)arg;
    kill(getpid(), SIGUSR1);
}

int main(void)
{
    iol_loop *loop;
    if (iol_loop_new(&loop, NULL) < 0)
        return 1;
    /* Before creating threads: they inherit the blocked mask. */
    iol_loop_add_signal(loop, SIGINT, on_stop_signal, loop);
    iol_loop_add_signal(loop, SIGTERM, on_stop_signal, loop);
    iol_loop_add_signal(loop, SIGUSR1, on_usr1, NULL);

    iol_loop_call_later(loop, 0.01, send_usr1, NULL, NULL);
    iol_loop_call_later(loop, 0.05, send_usr1, NULL, NULL);
    iol_loop_start(loop);

    iol_loop_remove_signal(loop, SIGUSR1, on_usr1, NULL);   /* by (signo, fn, arg) */
    iol_loop_close(loop, false);                             /* gives SIGINT/SIGTERM back */
    return usr1_seen == 2 ? 0 : 1;
}
