/* loop/ — the pre-sleep spin: whether a loop that just ran a batch of
 * posted callbacks watches its queue for a few microseconds before it
 * announces a sleep (loop/spin.c has the policy and its argument). */
#ifndef IOL_LOOP_SPIN_H
#define IOL_LOOP_SPIN_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "sync/cbqueue.h"

/* iol_loop_config.spin_us above this is -EINVAL: a spin that long costs
 * more than any sleep it could save. */
#define IOL__SPIN_MAX_US 1000.0
/* A spin that finds another thread's callbacks queued when the batch ends
 * takes them this long after the batch ended (GATHERING in spin.c). */
#define IOL__SPIN_GATHER_NS 1000
/* The adaptive policy's measurements start here and stay within these
 * bounds (BREAK-EVEN in spin.c). */
#define IOL__SPIN_INITIAL_NS 5000
#define IOL__SPIN_MIN_NS 500
#define IOL__SPIN_ADAPTIVE_MAX_NS 25000
/* A loop without credit probes at most once in this many waits. */
#define IOL__SPIN_PROBE_EVERY 256
/* One sleep in this many measures the loop's CPU for it. */
#define IOL__SPIN_COST_SAMPLE_EVERY 32

typedef struct iol__spin {
    int64_t window_ns;      /* spin length; 0: never spin */
    bool adaptive;          /* spin only while spinning pays (spin.c) */
    int64_t credit;         /* adaptive: ns of CPU spinning saved lately; spin while > 0 */
    int64_t wake_ns;        /* adaptive: post-to-running latency after a sleep (upper quartile) */
    int64_t cost_ns;        /* adaptive: loop thread CPU per sleep and wakeup (lower quartile) */
    unsigned skipped;       /* adaptive, no credit: waits since the last probe */
    unsigned waits;         /* adaptive: sleeps so far (samples every IOL__SPIN_COST_SAMPLE_EVERY) */
    int64_t period;         /* adaptive: the millisecond tick of the last wait */
    bool learn_after_sleep; /* this wait did not spin: judge it after the sleep */
    bool sample_cost;       /* this sleep's CPU is measured (cpu0_ns) */
    int64_t wait_start_ns;  /* when this wait began (CLOCK_MONOTONIC) */
    int64_t cpu0_ns;        /* the thread's CPU clock before this sleep */
    /* Written by the producer that won this sleep's wakeup, read by the
     * loop on waking (iol__spin_note_wake; MEASURING in spin.c). */
    _Atomic int64_t woken_at_ns;
    /* Statistics for tests and benches (owner thread; read them once the
     * loop stopped). */
    uint64_t spins;         /* spins started */
    uint64_t spin_hits;     /* spins that saw work arrive */
    uint64_t gathers;       /* spins that waited for another thread's stream */
    uint64_t wake_samples;  /* latencies learned (iol__spin_learn_wake) */
    uint64_t cost_samples;  /* sleep costs learned (iol__spin_learn_cost) */
} iol__spin;

/* 0, or -EINVAL for spin_us NaN or > IOL__SPIN_MAX_US (see
 * iol_loop_config.spin_us: 0 adaptive, < 0 never, > 0 fixed). */
int iol__spin_init(iol__spin *s, double spin_us);

/* The loop just ran a batch of posted callbacks and has nothing else to
 * do: spins on q if the policy says so. true: work arrived, poll without
 * sleeping; false: sleep (and call iol__spin_after_sleep on waking).
 * now: CLOCK_MONOTONIC in ns, read by the caller anyway (its statistics).
 * io_idle: the iteration dispatched no I/O event, so gathering another
 * thread's stream delays nothing else (GATHERING in spin.c). */
bool iol__spin_before_sleep(iol__spin *s, iol__cbqueue *q, int64_t now, bool io_idle);

/* The sleep that followed iol__spin_before_sleep's false ended; arrived:
 * the queue holds work now; slept: the poll was allowed to block (a
 * timeout other than 0); now: the clock on waking, as above. Learns
 * whether a spin would have caught it, and what the sleep cost. */
void iol__spin_after_sleep(iol__spin *s, bool arrived, bool slept, int64_t now);

/* Any thread, after winning the claim to wake the loop that owns s (one
 * per sleep), before delivering the wakeup: stamps the time, so the loop
 * learns how long a wakeup takes to reach it. A vDSO clock read and a
 * relaxed store, on a path that makes a system call anyway. */
static inline void iol__spin_note_wake(iol__spin *s)
{
    if (!s->adaptive) /* set at creation, read-only after */
        return;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    /* relaxed: the loop reads this after waking with no happens-before
     * edge (the eventfd is not a C11 synchronisation); a stale value is
     * one from an earlier sleep, older than this sleep's start, and
     * after_sleep discards it (MEASURING in spin.c). */
    atomic_store_explicit(&s->woken_at_ns, (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec, memory_order_relaxed);
}

/* The two measurements, one sample each (after_sleep feeds them; tests
 * feed synthetic ones): the post-to-running latency of a wakeup, and the
 * loop thread's CPU for one sleep and wakeup. Both move the adaptive
 * window (BREAK-EVEN in spin.c). */
void iol__spin_learn_wake(iol__spin *s, int64_t ns);
void iol__spin_learn_cost(iol__spin *s, int64_t ns);
/* Scores one wait that spun: waited_ns from the end of the batch to the
 * work, or -1 when none came within the window (ESTIMATOR in spin.c; a
 * sleep judged on waking scores its gains at half). */
void iol__spin_learn(iol__spin *s, int64_t waited_ns);

#endif
