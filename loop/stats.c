/* loop/ — the public statistics snapshot. The counters are kept by the
 * loop thread in loop.c and handlers.c (see iol__loop_counters in
 * loop/loop_impl.h for why relaxed loads are enough here). */
#include "loop/loop_impl.h"

#include <string.h>

#define LOAD(field) atomic_load_explicit(&(field), memory_order_relaxed)

int iol_loop_get_stats(const iol_loop *loop, iol_loop_stats *out, size_t size)
{
    if (!loop || !out || size == 0)
        return -EINVAL;
    const iol__loop_counters *c = &loop->stats;
    uint64_t since = LOAD(c->polling_since), now = since ? iol__clock_ns() : 0;
    iol_loop_stats s = {
        .iterations = LOAD(c->iterations),
        .callbacks_self = LOAD(c->callbacks_self),
        .callbacks_remote = LOAD(c->callbacks_remote),
        .callbacks_signal = LOAD(c->callbacks_signal),
        .wakeups = iol__waker_writes(&loop->waker) + iol__waker_messages(&loop->waker),
        .timeouts = LOAD(c->timeouts),
        /* relaxed: a statistic (as iol_loop_handler_count). */
        .handlers = (uint64_t)atomic_load_explicit(&loop->handler_count, memory_order_relaxed),
        .busy_ns = LOAD(c->busy_ns),
        .wait_ns = LOAD(c->wait_ns),
        .longest_callback_ns = LOAD(c->longest_callback_ns),
        .longest_iteration_ns = LOAD(c->longest_iteration_ns),
        .queue_depth = LOAD(c->last_batch),
        .current_poll_ns = now > since ? now - since : 0,
        .signals = LOAD(c->signals),
    };
    /* A caller built against an older, shorter struct gets its prefix; a
     * newer, longer one gets zeros past what this library knows. */
    if (size > sizeof s) {
        memset((char *)out + sizeof s, 0, size - sizeof s);
        size = sizeof s;
    }
    memcpy(out, &s, size);
    return 0;
}

int iol_loop_reset_stats(iol_loop *loop)
{
    if (!loop)
        return -EINVAL;
    /* relaxed: see iol__loop_counters for the race with the loop's update. */
    atomic_store_explicit(&loop->stats.longest_callback_ns, 0, memory_order_relaxed);
    atomic_store_explicit(&loop->stats.longest_iteration_ns, 0, memory_order_relaxed);
    return 0;
}

int iol_loop_set_call_timing(iol_loop *loop, bool on)
{
    int err = iol__loop_check(loop);
    if (err)
        return err;
    loop->time_calls = on;
    return 0;
}
