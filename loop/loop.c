/* loop/ — the IOLoop: lifetime, the iteration, callbacks and timeouts.
 * This file is the only place that decides what runs when. */
#include "loop/loop_impl.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "loop/future.h"
#include "loop/log.h"

#define MAX_EVENTS IOL__MAX_EVENTS
#define MAX_POLL_SECONDS 3600.0 /* Tornado's _POLL_TIMEOUT */

/* ---------------------------------------------------------------- time */

uint64_t iol__clock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double monotonic_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double iol_loop_time(const iol_loop *loop)
{
    if (!loop)
        return NAN;
    return loop->time_func ? loop->time_func(loop->time_ud) : monotonic_now();
}

/* ------------------------------------------------------------ lifetime */

int iol_loop_new(iol_loop **out, const iol_loop_config *cfg)
{
    static const iol_loop_config defaults = { 0 };
    if (!out)
        return -EINVAL;
    if (!cfg)
        cfg = &defaults;
    if (cfg->make_current < IOL_CURRENT_IF_NONE || cfg->make_current > IOL_CURRENT_NEVER)
        return -EINVAL;
    const iol__poller_ops *ops = iol__poller_find(cfg->poller);
    if (!ops)
        return -EINVAL;
    iol__spin spin;
    if (iol__spin_init(&spin, cfg->spin_us) < 0)
        return -EINVAL;
    if (cfg->make_current == IOL_CURRENT_ALWAYS && iol_loop_current())
        return -EEXIST;

    int err = -ENOMEM;
    /* Aligned: the statistics and the queue count have cache lines of
     * their own (_Alignas in loop_impl.h), which calloc does not honour. */
    void *mem = NULL;
    if (posix_memalign(&mem, _Alignof(iol_loop), sizeof(iol_loop)) != 0)
        return -ENOMEM;
    iol_loop *loop = memset(mem, 0, sizeof(iol_loop));
    pthread_mutex_init(&loop->waiters_lock, NULL); /* default attributes: cannot fail on Linux */
    loop->queue_limit = cfg->queue_limit;
    loop->waker.fd = -1;
    loop->msg_fd = -1;
    loop->events = malloc(MAX_EVENTS * sizeof *loop->events);
    if (!loop->events)
        goto fail;
    if ((err = iol__cbqueue_new(&loop->queue, cfg->signal_reserve)) < 0)
        goto fail;
    if ((err = iol__waker_init(&loop->waker)) < 0)
        goto fail;
    if ((err = iol__watchdog_new(&loop->watchdog)) < 0)
        goto fail;
    loop->poller_ops = ops;
    if ((err = ops->create(&loop->poller)) < 0)
        goto fail;
    /* Edge-triggered where the backend can (epoll): the waker then reads
     * its eventfd only now and then, not after every wakeup. */
    if (ops->add_edge) {
        if ((err = ops->add_edge(loop->poller, iol__waker_fd(&loop->waker))) < 0)
            goto fail;
        iol__waker_set_edge(&loop->waker);
    } else if ((err = ops->add(loop->poller, iol__waker_fd(&loop->waker), IOL_READ)) < 0) {
        goto fail;
    }
    iol__timer_heap_init(&loop->timers);
    loop->time_func = cfg->time_func;
    loop->time_ud = cfg->time_ud;
    loop->spin = spin;
    iol__loop_msg_init(loop); /* uring loops wake each other by ring message */
    loop->owner_ref = true;
    atomic_init(&loop->refs, 1);

    if (cfg->make_current == IOL_CURRENT_ALWAYS ||
        (cfg->make_current == IOL_CURRENT_IF_NONE && !iol_loop_current()))
        iol_loop_make_current(loop);
    *out = loop;
    return 0;

fail:
    if (loop->poller)
        ops->close(loop->poller);
    iol__watchdog_free(loop->watchdog);
    if (loop->waker.fd >= 0)
        iol__waker_destroy(&loop->waker);
    iol__cbqueue_free(loop->queue);
    free(loop->events);
    pthread_mutex_destroy(&loop->waiters_lock);
    free(loop);
    return err;
}

/* Discards queued callbacks without running them. Callbacks that own
 * resources (a future waiter, run_sync's state) release them through
 * iol__callback_dropped. Returns how many were dropped. */
static size_t drop_callbacks(iol_loop *loop)
{
    return iol__cbqueue_drop(loop->queue, NULL, iol__callback_dropped);
}

/* Shuts down and returns how many pending callbacks and timeouts it
 * dropped. Owner thread, loop not running. */
static int loop_shutdown(iol_loop *loop, bool all_fds)
{
    /* First, while the loop still takes calls: the layers above release
     * what they own on it (streams remove their handlers and close their
     * own fds), so all_fds below never closes an fd number a stream
     * still holds. */
    iol__loop_run_close_hooks(loop);
    iol__loop_completions_drain(loop);
    /* seq_cst: a producer that reads closed == false after this store
     * pushes a node that iol__cbqueue_free reclaims at the last unref;
     * one that reads true returns -ESHUTDOWN. Either way no crash. */
    atomic_store(&loop->closed, true);
    iol__loop_release_waiters(loop); /* not counted: they were never queued */
    size_t dropped = drop_callbacks(loop);
    dropped += iol__timer_heap_len(&loop->timers);
    iol__timer_heap_destroy(&loop->timers);
    iol__loop_free_hooks(loop);
    iol__loop_signals_release(loop);
    iol__loop_handlers_release(loop, all_fds);
    loop->poller_ops->close(loop->poller);
    loop->poller = NULL;
    iol__loop_msg_abandon(loop);
    return dropped > INT32_MAX ? INT32_MAX : (int)dropped;
}

int iol_loop_close(iol_loop *loop, bool all_fds)
{
    int err = iol__loop_check(loop);
    if (err)
        return err;
    if (atomic_load(&loop->running))
        return -EBUSY;
    int dropped = loop_shutdown(loop, all_fds);
    /* Hold a reference while current/instance and the creator let go. */
    iol_loop_ref(loop);
    iol__loop_forget(loop);
    if (loop->owner_ref) {
        loop->owner_ref = false;
        iol_loop_unref(loop);
    }
    iol_loop_unref(loop);
    return dropped;
}

iol_loop *iol_loop_ref(iol_loop *loop)
{
    /* relaxed: taking a reference needs no ordering; the caller already
     * holds one, so the count cannot reach zero meanwhile. */
    if (loop)
        atomic_fetch_add_explicit(&loop->refs, 1, memory_order_relaxed);
    return loop;
}

void iol_loop_unref(iol_loop *loop)
{
    if (!loop)
        return;
    /* acq_rel: the release publishes this thread's last uses of the loop;
     * the acquire on the final decrement sees every other thread's before
     * the memory is freed. */
    if (atomic_fetch_sub_explicit(&loop->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (!atomic_load(&loop->closed)) {
        loop_shutdown(loop, false);
        iol__loop_forget(loop);
    }
    if (loop->default_executor_owned)
        iol__executor_free_owned(loop->default_executor);
    /* Producers that raced with close may have pushed after its drop. */
    drop_callbacks(loop);
    iol__cbqueue_free(loop->queue);
    iol__waker_destroy(&loop->waker);
    /* Only now: a sender holding no reference may still have a message
     * naming it in flight only while it holds one (loop/wake.c). */
    if (loop->msg_fd >= 0)
        close(loop->msg_fd);
    iol__watchdog_free(loop->watchdog);
    free(loop->events);
    pthread_mutex_destroy(&loop->waiters_lock);
    free(loop);
}

const char *iol_loop_poller(const iol_loop *loop)
{
    return loop ? loop->poller_ops->name : NULL;
}


int iol_loop_handler_count(const iol_loop *loop)
{
    if (!loop)
        return -EINVAL;
    /* relaxed: a load-balancing hint, stale values are fine. */
    return atomic_load_explicit(&loop->handler_count, memory_order_relaxed);
}

/* ----------------------------------------------------------- callbacks */

static inline int check_producer(const iol_loop *loop, iol_callback_fn fn)
{
    if (!loop || !fn)
        return -EINVAL;
    /* relaxed would do for the crash-freedom argument (see loop_shutdown);
     * acquire keeps a post made after observing close from racing ahead. */
    if (atomic_load_explicit(&loop->closed, memory_order_acquire))
        return -ESHUTDOWN;
    return 0;
}

/* bounded: refused with -EAGAIN past queue_limit, unless posted by the
 * thread running the loop (a loop never refuses its own work). The count
 * is kept for every post but the signal ones, so that the loop can take
 * off what each batch ran (run_callbacks); the library's own posts
 * (iol__loop_post: a future's waiters, the runtime's handoffs) count
 * but are never refused. */
static int add_callback(iol_loop *loop, iol_callback_fn fn, void *arg, bool bounded)
{
    int err = check_producer(loop, fn);
    if (err)
        return err;
    if (loop->queue_limit) {
        /* relaxed: a bound, not a hand-over; it orders nothing (the queue's
         * own atomics publish the callback). fetch_add returns each post its
         * own count, so at most queue_limit bounded posts get in while the
         * loop has taken none of them. */
        size_t n = atomic_fetch_add_explicit(&loop->queued, 1, memory_order_relaxed);
        if (bounded && n >= loop->queue_limit &&
            atomic_load_explicit(&loop->owner, memory_order_relaxed) != iol__thread_id()) {
            atomic_fetch_sub_explicit(&loop->queued, 1, memory_order_relaxed);
            return -EAGAIN;
        }
    }
    if ((err = iol__cbqueue_push(loop->queue, fn, arg)) < 0) {
        if (loop->queue_limit)
            atomic_fetch_sub_explicit(&loop->queued, 1, memory_order_relaxed); /* relaxed: as above */
        return err;
    }
    /* The push's tail exchange is seq_cst, which orders it before the
     * waker's read of the sleep state: no extra fence (sync/waker.c).
     * Delivered by ring message or eventfd (loop/wake.c). */
    iol__loop_wake_after_push(loop);
    return 0;
}

int iol_loop_add_callback(iol_loop *loop, iol_callback_fn fn, void *arg)
{
    return add_callback(loop, fn, arg, true);
}

int iol__loop_post(iol_loop *loop, iol_callback_fn fn, void *arg)
{
    return add_callback(loop, fn, arg, false);
}

int iol_loop_spawn_callback(iol_loop *loop, iol_callback_fn fn, void *arg)
{
    return iol_loop_add_callback(loop, fn, arg);
}

int iol_loop_add_callback_from_signal(iol_loop *loop, iol_callback_fn fn, void *arg)
{
    int err = check_producer(loop, fn);
    if (err)
        return err;
    if ((err = iol__cbqueue_push_signal(loop->queue, fn, arg)) < 0)
        return err;
    iol__waker_wake_after_push(&loop->waker);
    return 0;
}

/* ------------------------------------------------------------ timeouts */

int iol_loop_call_at(iol_loop *loop, double when, iol_callback_fn fn, void *arg, iol_timeout *out)
{
    int err = iol__loop_check(loop);
    if (err)
        return err;
    if (!fn || isnan(when))
        return -EINVAL;
    return iol__timer_heap_add(&loop->timers, when, fn, arg, out);
}

int iol_loop_add_timeout(iol_loop *loop, double deadline, iol_callback_fn fn, void *arg, iol_timeout *out)
{
    return iol_loop_call_at(loop, deadline, fn, arg, out);
}

int iol_loop_call_later(iol_loop *loop, double delay, iol_callback_fn fn, void *arg, iol_timeout *out)
{
    int err = iol__loop_check(loop);
    if (err)
        return err;
    if (!fn || isnan(delay) || delay < 0)
        return -EINVAL;
    return iol__timer_heap_add(&loop->timers, iol_loop_time(loop) + delay, fn, arg, out);
}

int iol_loop_remove_timeout(iol_loop *loop, iol_timeout t)
{
    int err = iol__loop_check(loop);
    if (err)
        return err;
    return iol__timer_heap_remove(&loop->timers, t);
}

/* ------------------------------------------------------------ watchdog */

int iol_loop_set_blocking_signal_threshold(iol_loop *loop, double seconds, void (*action)(int signo))
{
    int err = iol__loop_check(loop);
    if (err)
        return err;
    if (isnan(seconds))
        return -EINVAL;
    return iol__watchdog_set_signal(loop->watchdog, seconds, action);
}

int iol_loop_set_blocking_log_threshold(iol_loop *loop, double seconds)
{
    int err = iol__loop_check(loop);
    if (err)
        return err;
    if (isnan(seconds))
        return -EINVAL;
    return iol__watchdog_set_log(loop->watchdog, seconds);
}

/* ----------------------------------------------------------- iteration */

/* Statistics are counted per batch: a local count, three adds after it. */
static void run_callbacks(iol_loop *loop, bool watched)
{
    iol__cbbatch batch;
    loop->ran_batch = iol__cbqueue_take(loop->queue, &batch);
    if (!loop->ran_batch)
        return;
    iol_callback_fn fn;
    void *arg;
    uint64_t ran = 0;
    while (iol__cbbatch_next(&batch, &fn, &arg)) {
        ran++;
        iol__loop_call(loop, watched, fn, arg);
    }
    iol__stats_add(&loop->stats.callbacks_self, batch.from_self);
    iol__stats_add(&loop->stats.callbacks_signal, batch.from_signal);
    iol__stats_add(&loop->stats.callbacks_remote, ran - batch.from_self - batch.from_signal);
    atomic_store_explicit(&loop->stats.last_batch, ran, memory_order_relaxed); /* relaxed: a statistic */
    if (loop->queue_limit) /* relaxed: see add_callback */
        atomic_fetch_sub_explicit(&loop->queued, ran - batch.from_signal, memory_order_relaxed);
}

static void run_due_timeouts(iol_loop *loop, bool watched)
{
    if (iol__timer_heap_len(&loop->timers) == 0)
        return;
    double now = iol_loop_time(loop);
    /* Timeouts added by these callbacks wait for the next iteration. */
    iol__timer_heap_begin_pass(&loop->timers);
    iol_callback_fn fn;
    void *arg;
    uint64_t fired = 0;
    while (iol__timer_heap_pop_due(&loop->timers, now, &fn, &arg)) {
        fired++;
        iol__loop_call(loop, watched, fn, arg);
    }
    iol__stats_add(&loop->stats.timeouts, fired);
}

/* Milliseconds to sleep: 0 if work is pending, else until the next
 * deadline (rounded up so we never wake early and spin), at most 3600 s;
 * -1 (no timeout) when no deadline is pending. */
static int poll_timeout_ms(iol_loop *loop)
{
    /* seq_cst load after prepare_sleep's fence: see sync/waker.c. */
    if (!iol__cbqueue_empty(loop->queue) || atomic_load(&loop->stop_requested))
        return 0;
    /* No timeout pending: wait for an event with no timeout at all (-1),
     * not Tornado's 3600 s. The kernel then arms no timer for the sleep:
     * on our VMs arming and cancelling one cost 0.3-0.6 µs of the loop's
     * CPU per wakeup (iol-bench wakecost, gaps 10-200 µs: 5-14 % less). */
    if (iol__timer_heap_len(&loop->timers) == 0)
        return -1;
    double wait = iol__timer_heap_next(&loop->timers) - iol_loop_time(loop);
    if (wait <= 0)
        return 0;
    if (wait > MAX_POLL_SECONDS)
        wait = MAX_POLL_SECONDS;
    return (int)ceil(wait * 1000.0);
}

/* cap_ms >= 0 (run_once): the poll waits at most that long, and never
 * spins first (an embedding program owns the CPU between iterations). */
static int loop_poll(iol_loop *loop, int cap_ms, uint64_t asleep)
{
    /* Lost-wakeup argument (details in sync/waker.c): we announce the
     * sleep with a full fence BEFORE looking at the queue and the stop
     * flag; a producer publishes its work BEFORE looking at our state with
     * a full fence. So either we see the work (timeout 0) or the producer
     * sees us asleep and writes the eventfd. The pre-sleep spin (only after
     * a batch, so an idle loop never spins; loop/spin.c decides whether it
     * pays) merely reads the queue first: if it sees nothing, the protocol
     * runs in full. */
    bool zmq_ready = iol__loop_zmq_recheck(loop); /* ZMQ_FD is edge-triggered: loop/zmq_handlers.c */
    bool after_batch = loop->ran_batch && cap_ms < 0;
    if (after_batch && iol__spin_before_sleep(&loop->spin, loop->queue, (int64_t)asleep, loop->io_events == 0)) {
        /* Skip the sleep protocol entirely: poll without blocking. */
        int n = loop->poller_ops->wait(loop->poller, loop->events, MAX_EVENTS, 0);
        loop->awake_ns = iol__clock_ns();
        if (loop->msg_queued)
            iol__loop_msg_after_wait(loop, n);
        loop->nevents = n > 0 ? n : 0;
        return n < 0 ? n : 0;
    }
    loop->sleeps++;
    iol__waker_prepare_sleep(&loop->waker);
    int timeout = zmq_ready ? 0 : poll_timeout_ms(loop);
    if (cap_ms >= 0 && (timeout < 0 || timeout > cap_ms))
        timeout = cap_ms;
    loop->last_poll_timeout_ms = timeout;
    int n = loop->poller_ops->wait(loop->poller, loop->events, MAX_EVENTS, timeout);
    loop->awake_ns = iol__clock_ns();
    iol__waker_finish_sleep(&loop->waker);
    if (loop->msg_queued)
        iol__loop_msg_after_wait(loop, n);
    if (after_batch)
        iol__spin_after_sleep(&loop->spin, !iol__cbqueue_empty(loop->queue), timeout != 0, (int64_t)loop->awake_ns);
    if (n < 0) {
        iol__log(IOL_LOG_ERROR, "poll failed: %s", strerror(-n));
        return n;
    }
    loop->nevents = n;
    return 0;
}

/* Claims the loop for this thread: the running flag, the owner and a
 * reference held for the whole run, so a loop whose other references are
 * dropped while it runs (the instance cleared, "stop, then unref" from
 * another thread) is freed by the runner when the run ends, never under
 * it. run_sync claims first and sets up afterwards, so it cannot lose the
 * loop to another thread's start half-way. */
int iol__loop_claim(iol_loop *loop)
{
    if (!loop)
        return -EINVAL;
    if (atomic_load(&loop->closed))
        return -ESHUTDOWN;
    bool expected = false;
    /* acq_rel: pairs with the release store at the end of a previous run
     * (possibly on another thread), so its writes are visible here. */
    if (!atomic_compare_exchange_strong_explicit(&loop->running, &expected, true, memory_order_acq_rel,
                                                 memory_order_relaxed))
        return -EBUSY;
    atomic_store_explicit(&loop->owner, iol__thread_id(), memory_order_relaxed);
    iol_loop_ref(loop);
    return 0;
}

/* Ends a claim; may free the loop (the run's reference was the last). */
void iol__loop_release(iol_loop *loop)
{
    atomic_store_explicit(&loop->owner, NULL, memory_order_relaxed);
    /* release: this run's writes happen-before the next claim's acquire
     * and before iol_loop_running()'s acquire in a thread that waits for
     * the loop to stop and then uses it. */
    atomic_store_explicit(&loop->running, false, memory_order_release);
    iol_loop_unref(loop);
}

/* One iteration: callbacks, due timeouts, prepare hooks, the poll (at
 * most cap_ms when >= 0), handlers, check hooks. 1 when a stop request
 * ended it before the poll, 0, or the poll's -errno.
 * Busy and waiting time: two clock reads per iteration, around the poll
 * (vDSO, tens of ns each; an iteration that polls costs a syscall
 * anyway); the pre-sleep spin judges its waits by the same two reads.
 * loop->awake_ns is when the last poll returned. */
static void add_busy(iol_loop *loop, uint64_t now)
{
    iol__stats_add(&loop->stats.busy_ns, now - loop->awake_ns);
    iol__stats_max(&loop->stats.longest_iteration_ns, now - loop->awake_ns);
}

static int iterate(iol_loop *loop, int cap_ms)
{
    bool watched = iol__loop_watched(loop);
    run_callbacks(loop, watched);
    run_due_timeouts(loop, watched);
    /* seq_cst: pairs with stop()'s store (see iol_loop_stop). Load
     * first, exchange only a set flag: the flag shares its cache line with
     * `closed` and the waker's state, which every post reads, and an
     * exchange per iteration would dirty that line under the producers. A
     * stop() after our load is seen by the poll's recheck, as before. */
    if (atomic_load(&loop->stop_requested) && atomic_exchange(&loop->stop_requested, false))
        return 1;
    if (loop->prepare_hooks.live)
        iol__loop_run_hooks(loop, &loop->prepare_hooks);
    iol__watchdog_iteration_end(loop->watchdog);
    uint64_t asleep = iol__clock_ns();
    add_busy(loop, asleep);
    /* relaxed: a statistic, read alone (current_poll_ns). */
    atomic_store_explicit(&loop->stats.polling_since, asleep, memory_order_relaxed);
    int err = loop_poll(loop, cap_ms, asleep); /* sets loop->awake_ns */
    atomic_store_explicit(&loop->stats.polling_since, 0, memory_order_relaxed);
    iol__stats_add(&loop->stats.wait_ns, loop->awake_ns - asleep);
    iol__stats_add(&loop->stats.iterations, 1);
    iol__watchdog_iteration_begin(loop->watchdog);
    if (err < 0)
        return err;
    iol__loop_dispatch_events(loop);
    if (loop->msg_sent)
        iol__loop_msg_release(loop);
    if (loop->check_hooks.live)
        iol__loop_run_hooks(loop, &loop->check_hooks);
    return 0;
}

/* Around iterations on this thread: current loop, signal mask, watchdog
 * (it covers the work between two polls: armed after a poll returns,
 * disarmed before the next one, so a sleeping loop never triggers it;
 * cheap no-ops while it is disabled). An embedding program's wait for
 * the backend fd announced a sleep to the waker: it ends here. */
static iol_loop *iterations_enter(iol_loop *loop)
{
    iol_loop *previous = iol_loop_current();
    iol_loop_make_current(loop);
    /* A nested run (run_sync from a callback) must not hold the outer
     * loop's messages for its whole length: submit them now. */
    iol_loop *outer = iol__loop_set_iterating(loop);
    if (outer && outer != loop)
        iol__loop_msg_flush(outer);
    loop->outer_iterating = outer;
    iol__loop_signals_thread_enter(loop);
    iol__watchdog_thread_enter(loop->watchdog);
    iol__watchdog_iteration_begin(loop->watchdog);
    if (loop->outer_sleep) {
        iol__waker_finish_sleep(&loop->waker);
        loop->outer_sleep = false;
    }
    loop->awake_ns = iol__clock_ns();
    return previous;
}

static void iterations_exit(iol_loop *loop, iol_loop *previous)
{
    add_busy(loop, iol__clock_ns());
    iol__watchdog_iteration_end(loop->watchdog);
    iol__watchdog_thread_exit(loop->watchdog);
    iol__loop_msg_flush(loop); /* nobody submits them while the loop does not run */
    iol__loop_set_iterating(loop->outer_iterating);
    iol_loop_make_current(previous);
}

int iol__loop_run(iol_loop *loop)
{
    /* seq_cst exchange: a stop() made before this start is consumed here
     * and the start returns at once, as in Tornado. */
    if (atomic_exchange(&loop->stop_requested, false))
        return 0;
    iol_loop *previous = iterations_enter(loop);
    int r;
    while ((r = iterate(loop, -1)) == 0)
        ;
    iterations_exit(loop, previous);
    return r < 0 ? r : 0;
}

/* Announces the outer program's wait on the backend fd as the loop's
 * sleep (the same protocol as loop_poll: a full fence, then the caller
 * looks at the queue), so producers write the eventfd from now on and the
 * backend fd becomes readable. Idempotent until the next iteration. */
static void announce_outer_sleep(iol_loop *loop)
{
    if (loop->outer_sleep)
        return;
    loop->sleeps++;
    iol__waker_prepare_sleep(&loop->waker);
    loop->outer_sleep = true;
}

int iol_loop_run_once(iol_loop *loop, double timeout)
{
    if (loop && isnan(timeout))
        return -EINVAL;
    int err = iol__loop_claim(loop);
    if (err)
        return err;
    /* timeout < 0: as long as the loop would wait, without the spin. */
    int cap_ms = timeout < 0 || timeout * 1000.0 >= (double)INT32_MAX ? INT32_MAX : (int)ceil(timeout * 1000.0);
    iol_loop *previous = iterations_enter(loop);
    int r = iterate(loop, cap_ms);
    iterations_exit(loop, previous);
    announce_outer_sleep(loop);
    iol__loop_release(loop);
    return r < 0 ? r : 0;
}

int iol_loop_backend_fd(const iol_loop *loop)
{
    if (!loop)
        return -EINVAL;
    /* relaxed: closing happens on the owner thread; a stale read is the
     * caller's race with its own close. */
    if (atomic_load_explicit(&loop->closed, memory_order_relaxed))
        return -ESHUTDOWN;
    if (!loop->poller_ops->backend_fd)
        return -ENOTSUP;
    return loop->poller_ops->backend_fd(loop->poller);
}

int iol_loop_backend_timeout(iol_loop *loop, double *seconds)
{
    int err = iol__loop_check(loop);
    if (err)
        return err;
    if (!seconds)
        return -EINVAL;
    if (atomic_load_explicit(&loop->running, memory_order_relaxed)) /* relaxed: only our own start sets it here */
        return -EBUSY;
    announce_outer_sleep(loop);
    /* After the announcement's fence: work seen now is work a producer
     * will not wake us for (sync/waker.c). */
    int ms = iol__loop_zmq_recheck(loop) ? 0 : poll_timeout_ms(loop);
    if (ms == 0)
        *seconds = 0;
    else if (iol__timer_heap_len(&loop->timers) == 0)
        *seconds = -1;
    else
        *seconds = (double)ms / 1000.0;
    return 0;
}

int iol_loop_start(iol_loop *loop)
{
    int err = iol__loop_claim(loop);
    if (err)
        return err;
    err = iol__loop_run(loop);
    iol__loop_release(loop);
    return err;
}

int iol_loop_stop(iol_loop *loop)
{
    if (!loop)
        return -EINVAL;
    if (atomic_load(&loop->closed))
        return -ESHUTDOWN;
    /* seq_cst store, then the waker's full fence before it reads the sleep
     * state: the loop either sees the flag after announcing its sleep or
     * gets the eventfd write. */
    atomic_store(&loop->stop_requested, true);
    iol__waker_wake(&loop->waker);
    return 0;
}

bool iol_loop_running(const iol_loop *loop)
{
    /* acquire: a thread that waits for false and then drives the loop
     * sees everything the run did (pairs with iol__loop_release). */
    return loop && atomic_load_explicit(&loop->running, memory_order_acquire);
}
