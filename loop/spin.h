/* loop/ — the pre-sleep spin: whether a loop that just ran a batch of
 * posted callbacks watches its queue for a few microseconds before it
 * announces a sleep (loop/spin.c has the policy and its argument). */
#ifndef IOL_LOOP_SPIN_H
#define IOL_LOOP_SPIN_H

#include <stdbool.h>
#include <stdint.h>

#include "sync/cbqueue.h"

/* iol_loop_config.spin_us above this is -EINVAL: a spin that long costs
 * more than any sleep it could save. */
#define IOL__SPIN_MAX_US 1000.0
/* A spin that finds another thread's callbacks queued when the batch ends
 * takes them this long after the batch ended (GATHERING in spin.c). */
#define IOL__SPIN_GATHER_NS 1000

typedef struct iol__spin {
    int64_t window_ns;      /* spin length; 0: never spin */
    bool adaptive;          /* spin only while spinning pays (spin.c) */
    int credit;             /* adaptive: spin while > 0 */
    unsigned skipped;       /* adaptive, credit 0: waits since the last probe */
    int64_t period;         /* adaptive: the millisecond tick of the last wait */
    bool learn_after_sleep; /* this wait did not spin: judge it after the sleep */
    int64_t wait_start_ns;  /* when this wait began (CLOCK_MONOTONIC) */
    /* Statistics for tests and benches (owner thread; read them once the
     * loop stopped). */
    uint64_t spins;         /* spins started */
    uint64_t spin_hits;     /* spins that saw work arrive */
    uint64_t gathers;       /* spins that waited for another thread's stream */
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
 * the queue holds work now; now: the clock on waking, as above. Learns
 * whether a spin would have caught it. */
void iol__spin_after_sleep(iol__spin *s, bool arrived, int64_t now);

#endif
