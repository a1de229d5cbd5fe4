/* runtime/ — statistics of a runtime: each worker's loop statistics (the
 * public loop call) and its accepted connections (the listeners' counts),
 * or their sum over the workers. */
#include "runtime/runtime_impl.h"

#include <errno.h>
#include <stdlib.h>
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

/* accepted[i] += on_accept calls of every listener on worker i. */
static int add_accepted(iol_runtime *rt, unsigned nlisteners, uint64_t *accepted)
{
    uint64_t *counts = calloc(rt->n, sizeof *counts);
    if (!counts)
        return -ENOMEM;
    for (unsigned id = 0; id < nlisteners; id++) {
        if (iol_runtime_listener_counts(rt, (int)id, counts, rt->n) < 0)
            continue;
        for (unsigned i = 0; i < rt->n; i++)
            accepted[i] += counts[i];
    }
    free(counts);
    return 0;
}

int iol_runtime_get_stats(iol_runtime *rt, unsigned index, iol_runtime_stats *out, size_t size)
{
    if (!rt || !out || size == 0 || (index >= rt->n && index != IOL_RUNTIME_ALL))
        return -EINVAL;
    pthread_mutex_lock(&rt->mu);
    unsigned nlisteners = rt->nlisteners; /* ids are 0..n-1 and never reused */
    pthread_mutex_unlock(&rt->mu);

    uint64_t *accepted = calloc(rt->n, sizeof *accepted);
    if (!accepted)
        return -ENOMEM;
    int err = add_accepted(rt, nlisteners, accepted);
    if (err < 0) {
        free(accepted);
        return err;
    }
    iol_runtime_stats s = { .workers = rt->n, .listeners = nlisteners };
    iol_listener_stats over = {0};
    for (unsigned id = 0; id < nlisteners; id++)
        (void)iol__listener_overload(rt, (int)id, index, &over);
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
        s.accepted += accepted[i];
    }
    free(accepted);
    if (size > sizeof s) {
        memset((char *)out + sizeof s, 0, size - sizeof s);
        size = sizeof s;
    }
    memcpy(out, &s, size);
    return 0;
}
