/* docs/examples/periodic.c — PeriodicCallback: every 100 ms, five times.
 *
 * The first run comes one period after start; the callback stops itself
 * on the fifth run (stop is safe inside its own callback), and a timeout
 * then stops the loop. The object is freed outside its callback. */
#include <stdio.h>

#include <ioloop.h>

typedef struct ticker {
    iol_loop *loop;
    iol_periodic *pc;
    double started;
    int runs;
} ticker;

static void stop_loop(void *arg)
{
    iol_loop_stop(arg);
}

static void tick(void *arg)
{
    ticker *t = arg;
    t->runs++;
    printf("tick %d at +%.0f ms\n", t->runs, (iol_loop_time(t->loop) - t->started) * 1000);
    if (t->runs == 5) {
        iol_periodic_stop(t->pc);
        /* Give a sixth run the chance to show up if stop did not work. */
        iol_loop_call_later(t->loop, 0.250, stop_loop, t->loop, NULL);
    }
}

int main(void)
{
    ticker t = { 0 };
    if (iol_loop_new(&t.loop, NULL) < 0)
        return 1;
    if (iol_periodic_new(&t.pc, t.loop, 100.0 /* ms */, tick, &t) < 0)
        return 1;
    /* Optional: spread each period by +-5 % (jitter 0.1) so many periodic
     * tasks started together do not fire in lockstep. */
    iol_periodic_set_jitter(t.pc, 0.1);
    t.started = iol_loop_time(t.loop);
    iol_periodic_start(t.pc);
    iol_loop_start(t.loop);
    printf("runs: %d, still running: %s\n", t.runs, iol_periodic_is_running(t.pc) ? "yes" : "no");
    iol_periodic_free(t.pc);
    iol_loop_close(t.loop, false);
    return t.runs == 5 ? 0 : 1;
}
