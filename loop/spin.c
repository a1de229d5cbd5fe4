/* loop/spin.c — the pre-sleep spin: spin only when spinning pays, by the
 * costs of the machine it runs on.
 *
 * After a batch of posted callbacks a producer is often still posting. If
 * the loop watches its queue for a few microseconds before announcing a
 * sleep, a post that arrives meanwhile costs neither an eventfd write nor
 * a wakeup. But a spin the next post misses is pure loss: the loop burns
 * the window, then pays the sleep and the wakeup anyway.
 *
 * COST. Let W be the window, C the loop thread's CPU for one sleep and
 * wakeup (epoll_wait blocking, the scheduler switching out and back, the
 * waker's books), L the time from a wakeup's post to the loop running
 * after a real sleep, and w the time from the end of a batch to the next
 * post. A spin costs w when w <= W (a hit, which also saves L of
 * latency) and W + C when not (a miss); a sleep costs C. So a hit saves
 * C - w of CPU (it loses some when w > C: it bought latency with CPU) and
 * a miss wastes W. C and L are properties of the host, not constants:
 * the fixed 5 µs window was tuned where a wakeup took a few µs; on the
 * 2-vCPU KVM guest of issue 26 the loop measures C at 3-5 µs but L at
 * 10-14 µs (a halted vCPU the host must wake), and a window shorter
 * than L cannot hold a ping-pong whose peer slept
 * once: its answer comes L later, after the window, so both sides miss and
 * fall asleep for good (iol-bench pingpong: 20 µs per round trip with a 5
 * µs window on a host where 20 µs of fixed spin gave 0.8).
 *
 * BREAK-EVEN: MEASURED BY THE LOOP. Both costs are measured on the host,
 * continuously, by the loop itself:
 *   - L: the producer that wins a sleep's one wakeup stamps the clock
 *     (iol__spin_note_wake) before it writes the eventfd or sends the ring
 *     message; the loop, on waking from a real sleep with work queued,
 *     learns now - stamp. Tracked at its upper quartile (a stochastic
 *     quantile, steps of 1/64 of the estimate: an outlier such as a
 *     preempted producer moves it by one step, not by its size).
 *   - C: one sleep in COST_SAMPLE_EVERY (32) reads the thread's CPU
 *     clock before and after (two system calls, ~0.5 µs on a KVM guest,
 *     under 0.02 µs per sleep spread over 32); tracked at its lower quartile the same way. Not the median:
 *     on the loaded KVM guest half the samples read 14-33 µs while a
 *     sleeping loop's whole CPU per callback was 4-5 µs (iol-bench
 *     wakecost), and an inflated C makes late hits look like savings
 *     (wakecost at a 10 µs gap: 9.6 µs of loop CPU per callback against
 *     libuv's 7.9); the lower quartile (3.3 µs there) errs towards
 *     sleeping.
 * The window is then W = max(C, 5/4 L), within IOL__SPIN_MIN_NS and
 * IOL__SPIN_ADAPTIVE_MAX_NS (25 µs: 20 µs of fixed spin held the
 * ping-pong on the host; beyond that only an overloaded host's
 * wakeups are slower, and there spinning loses anyway): long enough for a peer's answer to arrive
 * after a wakeup (so a ping-pong that slept once is caught by the side
 * still spinning), never shorter than the sleep it would save. Both start
 * at IOL__SPIN_INITIAL_NS (5 µs) until the first samples come.
 *
 * ESTIMATOR. A saturating credit in ns of CPU saved, scored by the cost
 * model: a hit at w adds C - w, a miss takes W, at most CREDIT_WINDOWS
 * windows are banked, and the loop spins while the credit covers a miss
 * (>= W): a spin is a bet of W, and a few early posts after sleeps, each
 * worth C, must not fund a 50 µs spin apiece (they did, at "credit > 0":
 * wakecost at a 10 µs gap spent 4 µs a callback on spins that missed).
 * So it keeps spinning only where hits are frequent and earlier than C —
 * a flood, whose queue is not empty when the batch ends, or two loops on
 * two CPUs answering each other in ~1 µs — and stops where they are late
 * or rare: a producer posting every 10 µs on a host where a sleep costs
 * the loop 5 µs (each hit spins 10: sleeping is cheaper), every 30 to
 * 1000 µs (every spin misses), or a ping-pong whose two threads share a
 * CPU (there the spinner only keeps the other side from running). From
 * full, six misses in a row stop it, so a peer preempted for a few
 * milliseconds (one or two misses) does not switch a ping-pong off. A new
 * loop starts full: it behaves like a fixed spin until the waits say
 * otherwise.
 *
 * LEARNING WITHOUT SPINNING. A wait that did not spin is still judged:
 * would a spin of W have caught the post? When a post woke it, the
 * winner's stamp (MEASURING) says when the post came: w = stamp - end of
 * the batch, exactly what a spin would have waited. Otherwise (woken by
 * I/O or a timer, with work queued meanwhile) the clock on waking stands
 * in for it, which errs on the side of sleeping. (Subtracting the
 * estimated L from the wait instead made every sleep of an overloaded
 * host look like an early hit, each worth a 50 µs gamble: a ping-pong
 * there went from 15 to 55 µs per round trip.) So a ping-pong whose peer
 * kept spinning, answering at once, pulls the sleeper back. A judged hit
 * gains half its C - w: its saving was never made, and a periodic
 * producer on a loaded host posts early after every late wakeup, so
 * judged early hits funded a spin of W every few posts that the next
 * post, a full period later, missed (wakecost at a 10 µs gap).
 *
 * MEASURING. The stamp is an atomic the loop reads with no happens-before
 * edge to the producer's store (relaxed both: the eventfd is no C11
 * synchronisation, and the value needs none: any value the loop reads is
 * some winner's stamp). A stamp older than the wait's start is an earlier
 * sleep's and is ignored, as is one later than the wakeup (the winner was
 * preempted between its claim and its clock read). Nothing else in the
 * waker changes: the claim still elects one writer per sleep, and the
 * stamp is taken only by that writer, so the lost-wakeup argument of
 * sync/waker.c and "at most one wakeup per sleep" are untouched.
 *
 * PROBES. Some loads pay for spinning only when the other side spins too,
 * and a loop's estimate of L may lag (a host whose wakeups just got
 * slower): then neither side's waits look like hits. So a loop without credit
 * probes, at most once every PROBE_EVERY waits, at its first wait after
 * each millisecond tick of the monotonic clock, with a window of
 * PROBE_WINDOWS times W (1: W >= 5/4 L already holds a sleeping peer's
 * answer; the fixed 5 µs window needed 3). The tick lines two
 * such loops up: each probes in the same round trip, the first catches the
 * other's answer (a hit, late or not, worth one spin), and the second then gets
 * an answer at once (an early hit): both spin again. A lone loop pays at
 * most PROBE_WINDOWS W per millisecond and per PROBE_EVERY waits, under
 * 0.1 µs per wait. PROBE_EVERY was 64 (~0.25 µs a wait): wakecost then showed
 * 4.9 to 6.1 µs of loop CPU per callback at gaps of 60 to 1000 µs with
 * 256 against 6.1 to 9.8 with 64; the price is that two sleeping loops
 * find their ping-pong again after 256 waits rather than 64 (a few ms).
 *
 * OVERLOAD. On a host with more runnable threads than CPUs a spinner
 * uses up its share and is preempted, often mid-spin, while a sleeper is
 * woken with priority (the scheduler favours tasks that slept): there
 * spinning loses even where every post comes early (measured with ten
 * compilers on two vCPUs: a fixed 20 µs spin took 80-100 µs per
 * ping-pong round trip, sleeping 12). A spin that finds, when it looks at
 * the clock again, that its window ended more than PREEMPT_SLACK_NS ago
 * was preempted: the credit drops to nothing at once, and only probes or
 * early posts judged after sleeps bring the spin back.
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
 * prepare_sleep / recheck protocol. The measurements add one clock read
 * to the wakeup's winner only (MEASURING) and two CPU-clock reads to one
 * sleep in 32 after a batch: an idle loop reads nothing. */
#include "loop/spin.h"

#include <errno.h>
#include <math.h>
#include <time.h>

#define CREDIT_WINDOWS 6
#define PROBE_EVERY IOL__SPIN_PROBE_EVERY
#define PROBE_PERIOD_NS 1000000
#define PROBE_WINDOWS 1
#define COST_SAMPLE_EVERY IOL__SPIN_COST_SAMPLE_EVERY
#define PREEMPT_SLACK_NS 50000
#define PREEMPTED (-2)

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

static int64_t thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* BREAK-EVEN above: W = max(C, 5/4 L) within the bounds; the bank of
 * credit follows W. */
static void set_window(iol__spin *s)
{
    int64_t w = s->wake_ns + s->wake_ns / 4;
    if (w < s->cost_ns)
        w = s->cost_ns;
    if (w < IOL__SPIN_MIN_NS)
        w = IOL__SPIN_MIN_NS;
    if (w > IOL__SPIN_ADAPTIVE_MAX_NS)
        w = IOL__SPIN_ADAPTIVE_MAX_NS;
    s->window_ns = w;
    if (s->credit > CREDIT_WINDOWS * w)
        s->credit = CREDIT_WINDOWS * w;
}

/* A stochastic quantile: up by up/64 of the estimate for a sample above
 * it, down by down/64 below; settles where P(sample > est) = down / (up +
 * down). Bounded by IOL__SPIN_MIN_NS .. IOL__SPIN_ADAPTIVE_MAX_NS. */
static int64_t track(int64_t est, int64_t sample, int64_t up, int64_t down)
{
    int64_t step = est / 64 > 0 ? est / 64 : 1;
    est += sample > est ? up * step : sample < est ? -down * step : 0;
    if (est < IOL__SPIN_MIN_NS)
        est = IOL__SPIN_MIN_NS;
    if (est > IOL__SPIN_ADAPTIVE_MAX_NS)
        est = IOL__SPIN_ADAPTIVE_MAX_NS;
    return est;
}

void iol__spin_learn_wake(iol__spin *s, int64_t ns)
{
    if (!s->adaptive || ns < 0)
        return;
    s->wake_samples++;
    s->wake_ns = track(s->wake_ns, ns, 3, 1); /* upper quartile */
    set_window(s);
}

void iol__spin_learn_cost(iol__spin *s, int64_t ns)
{
    if (!s->adaptive || ns < 0)
        return;
    s->cost_samples++;
    s->cost_ns = track(s->cost_ns, ns, 1, 3); /* lower quartile */
    set_window(s);
}

int iol__spin_init(iol__spin *s, double spin_us)
{
    if (isnan(spin_us) || spin_us > IOL__SPIN_MAX_US)
        return -EINVAL;
    *s = (iol__spin){0};
    if (spin_us < 0)
        return 0; /* never */
    s->adaptive = spin_us == 0;
    atomic_init(&s->woken_at_ns, 0);
    if (s->adaptive) {
        s->wake_ns = s->cost_ns = IOL__SPIN_INITIAL_NS;
        set_window(s);
        s->credit = CREDIT_WINDOWS * s->window_ns; /* a new loop starts full */
        return 0;
    }
    s->window_ns = (int64_t)(spin_us * 1000.0);
    if (s->window_ns == 0)
        s->window_ns = 1; /* a positive spin_us below 1 ns: one look at the queue */
    return 0;
}

/* half: a judged sleep, whose saving is hypothetical (LEARNING WITHOUT
 * SPINNING): its gain counts half. */
static void score(iol__spin *s, int64_t waited_ns, bool half)
{
    if (!s->adaptive)
        return;
    if (waited_ns < 0 || waited_ns > s->window_ns) {
        s->credit -= s->window_ns; /* a miss wastes the window */
    } else {
        int64_t gain = s->cost_ns - waited_ns; /* a hit saves a sleep, less the spin */
        s->credit += half && gain > 0 ? gain / 2 : gain;
    }
    if (s->credit < 0)
        s->credit = 0;
    if (s->credit > CREDIT_WINDOWS * s->window_ns)
        s->credit = CREDIT_WINDOWS * s->window_ns;
}

void iol__spin_learn(iol__spin *s, int64_t waited_ns)
{
    score(s, waited_ns, false);
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
 * it was there at once), -1 if it did not come within the window, or
 * PREEMPTED if the window ended long before we looked again (OVERLOAD). */
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
            return waited >= window_ns + PREEMPT_SLACK_NS ? PREEMPTED : -1;
    }
}

/* The wait will sleep: arms this sleep's measurements (BREAK-EVEN). */
static bool will_sleep(iol__spin *s, int64_t start, bool judge)
{
    s->learn_after_sleep = judge;
    s->wait_start_ns = start;
    s->sample_cost = ++s->waits % COST_SAMPLE_EVERY == 0;
    if (s->sample_cost)
        s->cpu0_ns = thread_cpu_ns(); /* last: as close to the sleep as we can */
    return false;
}

bool iol__spin_before_sleep(iol__spin *s, iol__cbqueue *q, int64_t start, bool io_idle)
{
    s->learn_after_sleep = false;
    s->sample_cost = false;
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
        if (s->credit < s->window_ns) { /* ESTIMATOR: a spin bets W */
            if (++s->skipped < PROBE_EVERY || !tick)
                return will_sleep(s, start, true);
            s->skipped = 0;
            probe = true;
        }
    }
    s->spins++;
    int64_t waited = spin_for_work(s, q, start, probe ? PROBE_WINDOWS * s->window_ns : s->window_ns, io_idle);
    s->spin_hits += waited >= 0;
    if (waited == PREEMPTED)
        s->credit = 0; /* OVERLOAD above */
    else if (probe && waited >= 0)
        s->credit = s->window_ns; /* an answer: worth one spin, to see if it was a peer */
    else
        iol__spin_learn(s, waited);
    if (waited >= 0)
        return true;
    return s->adaptive ? will_sleep(s, start, false) : false;
}

void iol__spin_after_sleep(iol__spin *s, bool arrived, bool slept, int64_t now)
{
    if (!s->adaptive)
        return;
    if (s->sample_cost) {
        s->sample_cost = false;
        int64_t cpu = thread_cpu_ns() - s->cpu0_ns;
        if (slept && arrived)
            iol__spin_learn_cost(s, cpu);
    }
    /* relaxed: see iol__spin_note_wake; MEASURING above says which values
     * count. */
    int64_t stamp = atomic_load_explicit(&s->woken_at_ns, memory_order_relaxed);
    bool stamped = slept && arrived && stamp >= s->wait_start_ns && stamp <= now;
    if (stamped)
        iol__spin_learn_wake(s, now - stamp);
    if (!s->learn_after_sleep)
        return;
    s->learn_after_sleep = false;
    /* LEARNING WITHOUT SPINNING: when the post came, else when we woke. */
    int64_t waited = (stamped ? stamp : now) - s->wait_start_ns;
    score(s, !arrived ? -1 : waited > 0 ? waited : 0, true);
}
