/* runtime/ — statistics of a runtime: each worker's loop statistics (the
 * public loop call) and its accepted connections (the listeners' counts),
 * or their sum over the workers. */
#include "runtime/runtime_impl.h"

#include <errno.h>
#include <string.h>

static void add_loop_stats(iol_loop_stats *sum, const iol_loop_stats *w)
{
    sum->iterations += w->iterations;
    sum->callbacks_self += w->callbacks_self;
    sum->callbacks_remote += w->callbacks_remote;
    sum->callbacks_signal += w->callbacks_signal;
    sum->wakeups += w->wakeups;
    sum->timeouts += w->timeouts;
    sum->handlers += w->handlers;
    sum->busy_ns += w->busy_ns;
    sum->wait_ns += w->wait_ns;
    if (w->longest_callback_ns > sum->longest_callback_ns)
        sum->longest_callback_ns = w->longest_callback_ns;
    if (w->longest_iteration_ns > sum->longest_iteration_ns)
        sum->longest_iteration_ns = w->longest_iteration_ns;
    sum->queue_depth += w->queue_depth;
    sum->current_poll_ns += w->current_poll_ns;
    sum->signals += w->signals;
}

int iol_runtime_get_stats(iol_runtime *rt, unsigned index, iol_runtime_stats *out, size_t size)
{
    if (!rt || !out || size == 0 || (index >= rt->n && index != IOL_RUNTIME_ALL))
        return -EINVAL;
    pthread_mutex_lock(&rt->mu);
    unsigned nlisteners = rt->nlisteners; /* ids are 0..n-1 and never reused */
    pthread_mutex_unlock(&rt->mu);

    iol_runtime_stats s = { .workers = rt->n, .listeners = nlisteners };
    /* One pass over the listeners: their accepted counts (the worker's,
     * or every worker's) and their overload figures. */
    iol_listener_stats over = {0};
    for (unsigned id = 0; id < nlisteners; id++)
        (void)iol__listener_overload(rt, (int)id, index, &over);
    s.accepted = over.accepted;
    s.holds_connections = over.holds_connections;
    s.holds_rate = over.holds_rate;
    s.held = over.held;
    for (unsigned i = 0; i < rt->n; i++) {
        if (index != IOL_RUNTIME_ALL && i != index)
            continue;
        iol_loop_stats w;
        if (iol_loop_get_stats(rt->workers[i].loop, &w, sizeof w) < 0)
            continue;
        /* The runtime's own listening sockets are not the application's. */
        int own = atomic_load_explicit(&rt->workers[i].own_handlers, memory_order_relaxed); /* relaxed: a statistic */
        w.handlers = w.handlers > (uint64_t)own ? w.handlers - (uint64_t)own : 0;
        add_loop_stats(&s.loop, &w);
    }
    if (size > sizeof s) {
        memset((char *)out + sizeof s, 0, size - sizeof s);
        size = sizeof s;
    }
    memcpy(out, &s, size);
    return 0;
}
