/* loop/ — PeriodicCallback (Tornado 5.1): a callback run every period on
 * one loop, on the schedule of iol_periodic_next_deadline.
 *
 * Owner-thread object: every call but next_deadline is made by the thread
 * running the loop (or by one thread while it is stopped), so no field
 * needs atomics. The object holds a reference on its loop, so stop/free
 * stay safe after the loop was closed (the calls then get -ESHUTDOWN). */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ioloop.h"
#include "loop/log.h"
#include "loop/loop_impl.h"

struct iol_periodic {
    iol_loop *loop;        /* referenced */
    iol_callback_fn fn;
    void *arg;
    double period_s;
    double jitter;         /* [0, 1] */
    double deadline;       /* of the pending or running call */
    iol_timeout timeout;   /* pending call, 0 when none */
    uint64_t rng;          /* xorshift64* state, never 0 */
    bool running;
    bool in_callback;      /* fn is on the stack */
    bool free_pending;     /* free() called from fn: free once fn returns */
};

double iol_periodic_next_deadline(double deadline, double now, double period_s, double jitter, double random01)
{
    double p = period_s * (1.0 + jitter * (random01 - 0.5));
    if (deadline <= now)
        /* Skip the runs missed while a call overran, so the schedule
         * stays on multiples of the period instead of bunching up. */
        return deadline + (floor((now - deadline) / p) + 1.0) * p;
    /* The clock went backwards: still advance, or we would run again at
     * the deadline we just served. */
    return deadline + p;
}

/* splitmix64: spreads a weak seed (address, clock) over all 64 bits. */
static uint64_t periodic_mix_seed(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* xorshift64*: uniform in [0, 1) with 53 random bits. */
static double periodic_random01(iol_periodic *pc)
{
    uint64_t x = pc->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    pc->rng = x;
    return (double)((x * 0x2545f4914f6cdd1dull) >> 11) * 0x1.0p-53;
}

static double periodic_next(iol_periodic *pc, double now)
{
    double random01 = pc->jitter > 0 ? periodic_random01(pc) : 0.5;
    return iol_periodic_next_deadline(pc->deadline, now, pc->period_s, pc->jitter, random01);
}

static void periodic_run(void *arg);

/* Moves the deadline on from now and arms the timeout for it. */
static int periodic_schedule_next(iol_periodic *pc)
{
    double deadline = periodic_next(pc, iol_loop_time(pc->loop));
    iol_timeout t;
    int err = iol_loop_call_at(pc->loop, deadline, periodic_run, pc, &t);
    if (err < 0)
        return err;
    pc->deadline = deadline;
    pc->timeout = t;
    return 0;
}

static void periodic_destroy(iol_periodic *pc)
{
    iol_loop_unref(pc->loop);
    free(pc);
}

static void periodic_run(void *arg)
{
    iol_periodic *pc = arg;
    pc->timeout = 0; /* fired: the handle is dead */
    if (!pc->running)
        return;
    pc->in_callback = true;
    pc->fn(pc->arg);
    pc->in_callback = false;
    if (pc->free_pending) {
        periodic_destroy(pc);
        return;
    }
    /* Stopped inside fn: stay stopped. Restarted inside fn (stop + start):
     * start armed a new timeout already, do not arm a second one. */
    if (!pc->running || pc->timeout != 0)
        return;
    int err = periodic_schedule_next(pc);
    if (err < 0) {
        pc->running = false;
        iol__log(IOL_LOG_ERROR, "periodic callback stopped: cannot reschedule: %s", strerror(-err));
    }
}

int iol_periodic_new(iol_periodic **out, iol_loop *loop, double period_ms, iol_callback_fn fn, void *arg)
{
    if (!out || !loop || !fn)
        return -EINVAL;
    if (!isfinite(period_ms) || period_ms <= 0)
        return -EINVAL;

    iol_periodic *pc = calloc(1, sizeof(*pc));
    if (!pc)
        return -ENOMEM;
    pc->loop = iol_loop_ref(loop);
    pc->fn = fn;
    pc->arg = arg;
    pc->period_s = period_ms / 1000.0;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    pc->rng = periodic_mix_seed((uint64_t)(uintptr_t)pc ^ ((uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec));
    if (pc->rng == 0)
        pc->rng = 0x9e3779b97f4a7c15ull; /* xorshift's one forbidden state */
    *out = pc;
    return 0;
}

int iol_periodic_set_jitter(iol_periodic *pc, double jitter)
{
    if (!pc)
        return -EINVAL;
    int err = iol__loop_check_owner(pc->loop); /* the loop's runs read jitter */
    if (err)
        return err;
    if (!(jitter >= 0 && jitter <= 1)) /* NaN fails too */
        return -EINVAL;
    pc->jitter = jitter;
    return 0;
}

int iol_periodic_start(iol_periodic *pc)
{
    if (!pc)
        return -EINVAL;
    /* Before running and deadline are read or written: the loop's runs
     * use them. */
    int err = iol__loop_check_owner(pc->loop);
    if (err)
        return err;
    if (pc->running)
        return -EALREADY;

    /* As Tornado: the schedule starts now, the first run one period later. */
    double saved = pc->deadline;
    pc->deadline = iol_loop_time(pc->loop);
    err = periodic_schedule_next(pc);
    if (err < 0) {
        pc->deadline = saved;
        return err;
    }
    pc->running = true;
    return 0;
}

int iol_periodic_stop(iol_periodic *pc)
{
    if (!pc)
        return -EINVAL;
    /* From another thread while the loop runs: touch nothing, whether a
     * timeout is pending or the callback itself is running right now (its
     * timeout is then already gone, and periodic_run reads the fields). */
    int err = iol__loop_check_owner(pc->loop);
    if (err)
        return err;
    if (pc->timeout != 0) {
        /* -ENOENT/-ESHUTDOWN: already gone with a closed loop; nothing to undo. */
        (void)iol_loop_remove_timeout(pc->loop, pc->timeout);
        pc->timeout = 0;
    }
    pc->running = false;
    return 0;
}

bool iol_periodic_is_running(const iol_periodic *pc)
{
    /* Loop-thread state: false from another thread, without reading it. */
    return pc && !iol__loop_check_owner(pc->loop) && pc->running;
}

void iol_periodic_free(iol_periodic *pc)
{
    if (!pc)
        return;
    if (iol_periodic_stop(pc) == -EPERM) {
        /* Its timeout may be armed or its callback running on a running
         * loop: freeing now would leave either a dangling pointer. Refuse
         * loudly instead. */
        iol__log(IOL_LOG_ERROR, "iol_periodic_free from a thread that does not run its loop: not freed");
        return;
    }
    if (pc->in_callback) {
        /* Documented as not allowed; still, never free under fn's feet. */
        pc->free_pending = true;
        return;
    }
    periodic_destroy(pc);
}
