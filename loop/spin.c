/* loop/spin.c — the pre-sleep spin: spin only when spinning pays.
 *
 * After a batch of posted callbacks a producer is often still posting. If
 * the loop watches its queue for a few microseconds before announcing a
 * sleep, a post that arrives meanwhile costs neither an eventfd write nor
 * a wakeup. But a spin the next post misses is pure loss: the loop burns
 * the window, then pays the sleep and the wakeup anyway.
 *
 * COST. Let W be the window (5 µs), C the loop thread's CPU for one sleep
 * and wakeup (epoll_wait blocking, the scheduler switching out and back,
 * the eventfd read: about 5 µs on our VMs, see `iol-bench wakecost
 * --spin-us -1`) and w the time from the end of a batch to the next post.
 * A spin costs w when w <= W (a hit, which also saves the wakeup's
 * latency) and W + C when not (a miss); a sleep costs C. With a hit rate
 * p, spinning burns less CPU than sleeping when
 *     p w + (1 - p)(W + C) < C,  i.e.  p > W / (W + C - w),
 * a little over one half for W ~ C and hits that come early. So: spin
 * while recent waits were mostly early hits, sleep straight away while
 * they were not. A producer posting every 10 to 1000 µs misses every
 * time: the loop stops spinning after a few misses and its cost per post
 * is one sleep and one wakeup, like libuv's. A flood (the queue is not
 * empty when the batch ends) and a ping-pong between two spinning loops
 * (the answer comes ~1 µs after the question) hit every time.
 *
 * ESTIMATOR. A saturating credit, as in a branch predictor, scored in the
 * units of the cost model (quarters of W): a miss loses W (4), a hit gains
 * C - w, about 3 when it came in the first half of the window and 1 when
 * it came late (C ~ W on our VMs: a sleep and a wakeup cost the loop about
 * 5 µs). The loop spins while it has credit. So it keeps spinning only
 * where hits are frequent and early — a flood, whose queue is not empty
 * when the batch ends, or two loops on two CPUs answering each other in
 * ~1 µs — and stops where they are late or rare: a producer that happens
 * to be due just after the batch, or a ping-pong whose two threads share a
 * CPU (there the spinner only keeps the other side from running). From
 * full it takes six misses in a row to stop, so a peer preempted for a few
 * milliseconds (one or two misses) does not switch a ping-pong off. A new
 * loop starts full: it behaves like the old fixed spin until the waits
 * say otherwise.
 *
 * LEARNING WITHOUT SPINNING. A wait that did not spin is still judged: the
 * clock is read when the batch ends and again on waking; work in the queue
 * less than W after the batch is a hit (a spin would have caught it),
 * anything else a miss. That is biased towards misses (the wakeup's own
 * latency adds to w), so it errs on the side of sleeping.
 *
 * PROBES. Some loads pay for spinning only when the other side spins too:
 * two loops in a ping-pong that both sleep answer each other only after a
 * wakeup, later than W, so neither one's waits ever look like hits, and a
 * lone short probe misses for the same reason. So a loop without credit
 * probes, at most once every PROBE_EVERY waits, at its first wait after
 * each millisecond tick of the monotonic clock, with a longer window
 * (PROBE_WINDOW, about a wakeup's latency more than W). The tick lines two
 * such loops up: each probes in the same round trip, the first catches the
 * other's answer (a late hit, worth one credit), and the second then gets
 * an answer at once (an early hit): both spin again. A lone loop pays at
 * most PROBE_WINDOW per millisecond and per PROBE_EVERY waits, ~0.06 µs
 * per wait. PROBE_EVERY was 64 (~0.25 µs a wait): wakecost then showed
 * 4.9 to 6.1 µs of loop CPU per callback at gaps of 60 to 1000 µs with
 * 256 against 6.1 to 9.8 with 64; the price is that two sleeping loops
 * find their ping-pong again after 256 waits rather than 64 (a few ms).
 *
 * GATHERING. A batch that ends with another thread's callback already
 * queued means a producer streams posts faster than we run them. Taking
 * at once keeps the two threads on the same cache lines (the nodes the
 * producer is filling, the queue's head and tail) and each take finds a
 * handful of callbacks; the producer's cost per post then doubles
 * (iol-bench handoff: 10-18 ns against 5-9 when the loop lags). So the
 * spin waits until IOL__SPIN_GATHER_NS (1 µs) after the batch ended
 * before it takes such work: the producer moves on to lines nobody reads,
 * and the next batch holds a microsecond of posts. Handoff P=1, 8
 * alternating rounds: 49-62 M callbacks/s (median 56) without, 59-95 M
 * (median 74) with; 500 and 2000 ns measured lower; ping-pong unchanged
 * (its answers arrive during the spin, not before it). The price is up to
 * IOL__SPIN_GATHER_NS of latency, and only there: never for the loop's own posts (the oldest
 * node is ours: a callback chain runs at once), never in an iteration
 * that dispatched I/O (a server's ready sockets are not kept waiting, nor
 * is a microsecond spun per iteration beside them), never without spin
 * credit, never in run_once, never with spin_us < 0.
 *
 * INVARIANTS KEPT. The spin only follows a non-empty batch (loop_poll), so
 * an idle loop never spins and never probes. The spin only reads the
 * queue; it does not touch the waker, so a sleep still gets at most one
 * eventfd write, and the lost-wakeup argument of sync/waker.c is
 * unchanged: a spin that sees nothing falls through to the full
 * prepare_sleep / recheck protocol. */
#include "loop/spin.h"

#include <errno.h>
#include <math.h>
#include <time.h>

#define SPIN_ADAPTIVE_WINDOW_NS 5000
#define CREDIT_MAX 24
#define CREDIT_MISS 4
#define CREDIT_EARLY_HIT 3
#define CREDIT_LATE_HIT 1
#define PROBE_EVERY 256
#define PROBE_PERIOD_NS 1000000
#define PROBE_WINDOW_NS (3 * SPIN_ADAPTIVE_WINDOW_NS)

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

int iol__spin_init(iol__spin *s, double spin_us)
{
    if (isnan(spin_us) || spin_us > IOL__SPIN_MAX_US)
        return -EINVAL;
    *s = (iol__spin){0};
    if (spin_us < 0)
        return 0; /* never */
    s->adaptive = spin_us == 0;
    s->window_ns = s->adaptive ? SPIN_ADAPTIVE_WINDOW_NS : (int64_t)(spin_us * 1000.0);
    if (s->window_ns == 0)
        s->window_ns = 1; /* a positive spin_us below 1 ns: one look at the queue */
    s->credit = CREDIT_MAX;
    return 0;
}

/* waited_ns: from the end of the batch to the work, or -1 for a miss. */
static void learn(iol__spin *s, int64_t waited_ns)
{
    if (waited_ns < 0 || waited_ns > s->window_ns) {
        s->credit = s->credit > CREDIT_MISS ? s->credit - CREDIT_MISS : 0;
        return;
    }
    s->credit += waited_ns < s->window_ns / 2 ? CREDIT_EARLY_HIT : CREDIT_LATE_HIT;
    if (s->credit > CREDIT_MAX)
        s->credit = CREDIT_MAX;
}

/* GATHERING above: spins until IOL__SPIN_GATHER_NS after the batch ended. */
static void gather(iol__spin *s, int64_t batch_end)
{
    s->gathers++;
    while (now_ns() - batch_end < IOL__SPIN_GATHER_NS) {
        for (int i = 0; i < 4; i++)
            cpu_relax();
    }
}

/* Bounded by time, not by iterations: a PAUSE takes 10 to 140 cycles
 * depending on the CPU. Returns how long it took the work to come (0 if
 * it was there at once), or -1 if it did not come within the window. */
static int64_t spin_for_work(iol__spin *s, iol__cbqueue *q, int64_t start, int64_t window_ns, bool may_gather)
{
    /* peek, not empty(): watching must not pull the tail's line away
     * from the producers (sync/cbqueue.h). */
    switch (iol__cbqueue_peek_origin(q)) {
    case IOL__CBQ_OTHER:
        if (may_gather)
            gather(s, start);
        return 0;
    case IOL__CBQ_OWN:
        return 0;
    case IOL__CBQ_EMPTY:
        break;
    }
    int64_t waited = 0;
    for (;;) {
        for (int i = 0; i < 16; i++) {
            cpu_relax();
            if (iol__cbqueue_peek(q))
                return waited;
        }
        if ((waited = now_ns() - start) >= window_ns)
            return -1;
    }
}

bool iol__spin_before_sleep(iol__spin *s, iol__cbqueue *q, int64_t start, bool io_idle)
{
    s->learn_after_sleep = false;
    if (s->window_ns == 0)
        return false;
    bool probe = false;
    if (s->adaptive) {
        /* PROBES above: without credit, spin only at the first wait after
         * a millisecond tick, and not more often than every PROBE_EVERY
         * waits. */
        int64_t period = start / PROBE_PERIOD_NS;
        bool tick = period != s->period;
        s->period = period;
        if (s->credit == 0) {
            if (++s->skipped < PROBE_EVERY || !tick) {
                s->learn_after_sleep = true;
                s->wait_start_ns = start;
                return false;
            }
            s->skipped = 0;
            probe = true;
        }
    }
    s->spins++;
    int64_t waited = spin_for_work(s, q, start, probe ? PROBE_WINDOW_NS : s->window_ns, io_idle);
    s->spin_hits += waited >= 0;
    if (probe && waited > s->window_ns)
        s->credit = 1; /* a late answer: worth one spin, to see if it was a peer */
    else if (s->adaptive)
        learn(s, waited);
    return waited >= 0;
}

void iol__spin_after_sleep(iol__spin *s, bool arrived, int64_t now)
{
    if (!s->learn_after_sleep)
        return;
    s->learn_after_sleep = false;
    int64_t waited = now - s->wait_start_ns;
    learn(s, !arrived ? -1 : waited > 0 ? waited : 0);
}
