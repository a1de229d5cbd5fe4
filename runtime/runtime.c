/* runtime/ — one loop per worker thread.
 *
 * Each worker owns one loop, created by iol_runtime_new (IOL_CURRENT_NEVER)
 * and run on the worker thread. A worker's life:
 *
 *   make the loop current, set the watchdog, on_start, queue "running"
 *   run the loop until the runtime is stopped           (worker_run)
 *   wait until no post to this worker is in flight      (worker_shutdown)
 *   final accepts on its listening sockets, then a barrier with the others
 *   run the loop's queued callbacks (no polling): posts, handoffs
 *   on_drain, then run the loop (polling) while the application has fds
 *   registered, up to drain_timeout                     (serve_drain)
 *   shut down the fds still registered and discard their input until
 *   their peers close (briefly), so closing them sends no reset (linger)
 *   on_stop (the application may close them now), queued callbacks again
 *   discard input once more, close the loop (all fds)
 *
 * The exactly-once argument for posts is next to iol_runtime_post.
 */
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "loop/close_hook.h"
#include "loop/log.h"
#include "loop/status.h"
#include "loop/post.h"
#include "runtime/runtime_impl.h"

#define MAX_WORKERS 4096
/* Drain passes around on_stop: the first one runs everything the runtime
 * guarantees (posts, handoffs); later ones pick up callbacks that those
 * callbacks queued. Bounded so a callback that re-queues itself forever
 * cannot keep a stopping worker alive. */
#define DRAIN_PASSES 4
/* drain_timeout 0: serve the application's connections for up to this. */
#define DEFAULT_DRAIN_TIMEOUT 10.0
/* While draining, how often a worker checks whether the application's fds
 * are gone: the latency a join pays, against wakeups of a draining loop. */
#define DRAIN_CHECK_PERIOD 0.005
/* At the end of the drain, input is discarded from the fds still
 * registered for at most this long (in all), so closing them sends FIN
 * rather than RST; a peer that answers our FIN with its own ends it. */
#define LINGER_DISCARD_SECONDS 0.2

/* The documented thread-locals: which runtime and worker this thread is. */
static __thread int tl_worker_index = -1;
static __thread iol_runtime *tl_worker_runtime;

int iol_runtime_worker_index(void)
{
    return tl_worker_index;
}

iol_runtime *iol__runtime_of_thread(void)
{
    return tl_worker_runtime;
}

static unsigned online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

static int runtime_new(iol_runtime **out, const iol_runtime_config *cfg, bool legacy_status)
{
    static const iol_runtime_config defaults;
    if (!out)
        return -EINVAL;
    if (!cfg)
        cfg = &defaults;
    if (cfg->workers > MAX_WORKERS)
        return -EINVAL;
    if (isnan(cfg->blocking_log_threshold) || isnan(cfg->drain_timeout))
        return -EINVAL;

    unsigned n = cfg->workers ? cfg->workers : online_cpus();
    if (n > MAX_WORKERS)
        n = MAX_WORKERS;
    iol_runtime *rt = calloc(1, sizeof(*rt));
    if (!rt)
        return -ENOMEM;
    int err = -ENOMEM;
    void *mem = NULL;
    if (posix_memalign(&mem, IOL__CACHE_LINE, (size_t)n * sizeof(iol__rt_worker)) != 0)
        goto fail_rt;
    rt->workers = mem;
    memset(rt->workers, 0, (size_t)n * sizeof(iol__rt_worker));
    rt->n = n;
    rt->cfg = *cfg;
    rt->cfg.workers = n;
    if (rt->cfg.drain_timeout == 0)
        rt->cfg.drain_timeout = DEFAULT_DRAIN_TIMEOUT;
    atomic_init(&rt->stopped, false);
    if ((err = -pthread_mutex_init(&rt->mu, NULL)) < 0)
        goto fail_workers;
    if ((err = -pthread_cond_init(&rt->cv, NULL)) < 0)
        goto fail_mutex;
    pthread_mutex_init(&rt->broadcasts_mu, NULL); /* default attributes: cannot fail on Linux */

    iol_loop_config lcfg = {.poller = cfg->poller, .make_current = IOL_CURRENT_NEVER, .spin_us = cfg->spin_us,
                            .queue_limit = cfg->queue_limit};
    unsigned made = 0;
    for (; made < n; made++) {
        iol__rt_worker *w = &rt->workers[made];
        atomic_init(&w->inflight, 0);
        atomic_init(&w->pending, 0);
        atomic_init(&w->own_handlers, 0);
        atomic_init(&w->taken, 0);
        w->rt = rt;
        w->index = made;
        if ((err = iol_loop_new(&w->loop, &lcfg)) < 0)
            goto fail_loops;
        iol__loop_set_legacy_status(w->loop, legacy_status);
        /* The runtime's own reference: iol_runtime_loop stays valid until
         * free even after the worker closed its loop. */
        iol_loop_ref(w->loop);
    }
    if ((err = iol_loop_new(&rt->acceptor_loop, &lcfg)) < 0)
        goto fail_loops;
    iol_loop_ref(rt->acceptor_loop);
    rt->cfg.poller = NULL; /* the caller's string need not outlive new */
    *out = rt;
    return 0;

fail_loops:
    while (made-- > 0) {
        iol_loop_close(rt->workers[made].loop, true);
        iol_loop_unref(rt->workers[made].loop);
    }
    pthread_cond_destroy(&rt->cv);
    pthread_mutex_destroy(&rt->broadcasts_mu);
fail_mutex:
    pthread_mutex_destroy(&rt->mu);
fail_workers:
    free(rt->workers);
fail_rt:
    free(rt);
    return err;
}

int iol_runtime_new(iol_runtime **out, const iol_runtime_config *cfg)
{
    return runtime_new(out, cfg, false);
}

int iol__runtime_new_0_1(iol_runtime **out, const iol_runtime_config *cfg)
{
    return runtime_new(out, cfg, true);
}

unsigned iol_runtime_size(const iol_runtime *rt)
{
    return rt ? rt->n : 0;
}

iol_loop *iol_runtime_loop(iol_runtime *rt, unsigned index)
{
    if (!rt || index >= rt->n)
        return NULL;
    return rt->workers[index].loop;
}

/* -------------------------------------------------------------- posting */

/* The stop race. A post checks "not stopped" and then pushes; stop may
 * land in between, and the worker may then be leaving its loop. The
 * callback must still run. Protocol (all seq_cst, so they are in one total
 * order S):
 *
 *   post:    inflight += 1;  if (stopped) {inflight -= 1; -ESHUTDOWN}
 *            push;  inflight -= 1
 *   stop:    stopped = true; stop the loops
 *   worker:  after its loop returned, reads stopped == true, then waits
 *            until inflight == 0, then pushes a sentinel and drains.
 *
 * If a post read stopped == false, its read precedes stop's store in S,
 * its increment precedes its read, and stop's store precedes the worker's
 * read of stopped (which saw it), which precedes the worker's read of
 * inflight. So the worker's reads of inflight come after the increment in
 * S and cannot return a value that misses it: it waits until the matching
 * decrement, which is a release after the push; the worker's load that
 * reads 0 acquires it, so the push happens-before the sentinel push. The
 * MPSC queue is FIFO for pushes ordered by happens-before, so the drain
 * runs the callback before the sentinel stops it. A post that read
 * stopped == true pushes nothing. Hence: accepted (returned 0) => runs
 * exactly once (the loop runs each queued callback once); rejected =>
 * never runs.
 *
 * inflight is per worker so producers that post to different workers do
 * not bounce one cache line. */
static inline bool post_enter(iol__rt_worker *w)
{
    /* seq_cst RMW: must precede the load of stopped in S (see above). */
    atomic_fetch_add_explicit(&w->inflight, 1, memory_order_seq_cst);
    /* seq_cst load: the Dekker half that pairs with stop's store. */
    if (atomic_load_explicit(&w->rt->stopped, memory_order_seq_cst)) {
        atomic_fetch_sub_explicit(&w->inflight, 1, memory_order_relaxed);
        return false;
    }
    return true;
}

static inline void post_leave(iol__rt_worker *w)
{
    /* release: the push above happens-before the worker's acquire load
     * that reads 0 in wait_posts_done. */
    atomic_fetch_sub_explicit(&w->inflight, 1, memory_order_release);
}

/* bounded: the application's posts meet the workers' queue_limit
 * (-EAGAIN); the runtime's own (iol__runtime_post) never do. */
static int runtime_post(iol_runtime *rt, unsigned index, iol_callback_fn fn, void *arg, bool bounded)
{
    if (!rt || !fn || index >= rt->n)
        return -EINVAL;
    iol__rt_worker *w = &rt->workers[index];
    if (!post_enter(w))
        return -ESHUTDOWN;
    int r = bounded ? iol_loop_add_callback(w->loop, fn, arg) : iol__loop_post(w->loop, fn, arg);
    post_leave(w);
    return r < 0 ? r : 0;
}

int iol_runtime_post(iol_runtime *rt, unsigned index, iol_callback_fn fn, void *arg)
{
    return runtime_post(rt, index, fn, arg, true);
}

int iol__runtime_post(iol_runtime *rt, unsigned index, iol_callback_fn fn, void *arg)
{
    return runtime_post(rt, index, fn, arg, false);
}

/* Posts fn(arg) to every worker, all or nothing with respect to stop.
 * *missed: workers it could not be queued on (-ENOMEM, reported). */
static int broadcast_all(iol_runtime *rt, iol_callback_fn fn, void *arg, unsigned *missed)
{
    *missed = 0;
    /* Enter every worker before checking the flag once more, so a
     * broadcast is all-or-nothing with respect to stop: post_enter on
     * worker 0 may pass while a later one sees the flag; then undo all. */
    unsigned entered = 0;
    for (; entered < rt->n; entered++) {
        if (!post_enter(&rt->workers[entered]))
            break;
    }
    if (entered < rt->n) {
        for (unsigned i = 0; i < entered; i++)
            post_leave(&rt->workers[i]);
        return -ESHUTDOWN;
    }
    int err = 0;
    for (unsigned i = 0; i < rt->n; i++) {
        /* Never refused for a full queue: a broadcast (a reload, a
         * shutdown of the application's own) must reach every worker. */
        int r = iol__loop_post(rt->workers[i].loop, fn, arg);
        if (r < 0) {
            (*missed)++;
            if (err == 0)
                err = r; /* -ENOMEM: the others were queued; reported */
        }
        post_leave(&rt->workers[i]);
    }
    return err;
}

int iol_runtime_broadcast(iol_runtime *rt, iol_callback_fn fn, void *arg)
{
    if (!rt || !fn)
        return -EINVAL;
    unsigned missed;
    return broadcast_all(rt, fn, arg, &missed);
}

/* One broadcast_ex: on rt->broadcasts until done ran. */
typedef struct iol__rt_broadcast {
    iol_callback_fn fn, done;
    void *arg, *done_arg;
    /* Workers that have yet to run fn. acq_rel decrements: each worker's
     * fn happens-before the last decrement, so done sees them all. */
    _Atomic unsigned remaining;
    iol_runtime *rt;
    struct iol__rt_broadcast *prev, *next; /* under rt->broadcasts_mu */
} rt_broadcast;

static void broadcast_finish(rt_broadcast *b)
{
    iol_runtime *rt = b->rt;
    pthread_mutex_lock(&rt->broadcasts_mu);
    if (b->prev)
        b->prev->next = b->next;
    else
        rt->broadcasts = b->next;
    if (b->next)
        b->next->prev = b->prev;
    pthread_mutex_unlock(&rt->broadcasts_mu);
    if (b->done)
        b->done(b->done_arg);
    free(b);
}

static void broadcast_run(void *arg)
{
    rt_broadcast *b = arg;
    b->fn(b->arg);
    if (atomic_fetch_sub_explicit(&b->remaining, 1, memory_order_acq_rel) == 1)
        broadcast_finish(b);
}

int iol_runtime_broadcast_ex(iol_runtime *rt, iol_callback_fn fn, void *arg, iol_callback_fn done, void *done_arg)
{
    if (!rt || !fn)
        return -EINVAL;
    rt_broadcast *b = calloc(1, sizeof(*b));
    if (!b)
        return -ENOMEM;
    *b = (rt_broadcast){.fn = fn, .done = done, .arg = arg, .done_arg = done_arg, .rt = rt};
    atomic_init(&b->remaining, rt->n);
    pthread_mutex_lock(&rt->broadcasts_mu);
    b->next = rt->broadcasts;
    if (b->next)
        b->next->prev = b;
    rt->broadcasts = b;
    pthread_mutex_unlock(&rt->broadcasts_mu);

    unsigned missed;
    int err = broadcast_all(rt, broadcast_run, b, &missed);
    if (err == -ESHUTDOWN || missed == rt->n) {
        b->done = NULL; /* refused, or queued nowhere: nothing runs */
        broadcast_finish(b);
        return err;
    }
    /* Workers it missed count as done. Those it reached cannot take the
     * count below `missed` before this, so the last one is ours or theirs,
     * never both. */
    if (missed && atomic_fetch_sub_explicit(&b->remaining, missed, memory_order_acq_rel) == missed)
        broadcast_finish(b);
    return err;
}

/* At free, the loops closed: broadcasts some worker never ran (dropped
 * with a loop that never started) end here, done exactly once. */
static void broadcasts_release(iol_runtime *rt)
{
    pthread_mutex_lock(&rt->broadcasts_mu);
    rt_broadcast *b = rt->broadcasts;
    rt->broadcasts = NULL;
    pthread_mutex_unlock(&rt->broadcasts_mu);
    while (b) {
        rt_broadcast *next = b->next;
        if (b->done)
            b->done(b->done_arg);
        free(b);
        b = next;
    }
}

/* --------------------------------------------------------------- workers */

/* Tells start that this worker's loop runs (or will never run); once. */
static void signal_running(iol__rt_worker *w)
{
    if (w->signaled_running)
        return;
    w->signaled_running = true;
    iol_runtime *rt = w->rt;
    pthread_mutex_lock(&rt->mu);
    rt->running++;
    pthread_cond_broadcast(&rt->cv);
    pthread_mutex_unlock(&rt->mu);
}

static void running_cb(void *arg)
{
    signal_running(arg);
}

static void pin_to_cpu(unsigned index)
{
    cpu_set_t allowed;
    CPU_ZERO(&allowed);
    if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0)
        return;
    int count = CPU_COUNT(&allowed);
    if (count <= 0)
        return;
    /* The (index % count)-th CPU this process may use. */
    int want = (int)(index % (unsigned)count);
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
        if (!CPU_ISSET(cpu, &allowed))
            continue;
        if (want-- == 0) {
            cpu_set_t one;
            CPU_ZERO(&one);
            CPU_SET(cpu, &one);
            int r = pthread_setaffinity_np(pthread_self(), sizeof(one), &one);
            if (r != 0)
                iol__log(IOL_LOG_WARNING, "runtime: worker %u: cannot pin to CPU %d: %s", index, cpu, strerror(r));
            return;
        }
    }
}

static void drain_sentinel(void *arg)
{
    iol__rt_worker *w = arg;
    /* Only the last one queued stops the loop: one left queued by a drain
     * that gave up runs harmlessly in a later one. */
    if (++w->sentinels_run == w->sentinels_queued)
        iol_loop_stop(w->loop);
}

/* Runs the callbacks queued on the (stopped) loop, without polling: a
 * sentinel queued last stops the loop once everything queued before it
 * ran. A start may return at once when a stale stop was pending, hence the
 * inner retry. The sentinel's state is the worker's, not this frame's: a
 * drain that gives up leaves its sentinel queued. */
static void drain(iol__rt_worker *w, int passes)
{
    for (int pass = 0; pass < passes; pass++) {
        if (iol__loop_post(w->loop, drain_sentinel, w) < 0)
            return;
        w->sentinels_queued++;
        for (int tries = 0; w->sentinels_run != w->sentinels_queued && tries < 3; tries++) {
            if (iol_loop_start(w->loop) < 0)
                break;
        }
        if (w->sentinels_run != w->sentinels_queued) {
            iol__log(IOL_LOG_ERROR, "runtime: worker %u: could not drain its loop", w->index);
            return;
        }
    }
}

/* fds the application has registered on the worker's loop: all of them
 * but the runtime's own listening sockets. */
static long app_fds(iol__rt_worker *w)
{
    /* relaxed: own_handlers is only written on this thread by now. */
    return (long)iol_loop_handler_count(w->loop) - atomic_load_explicit(&w->own_handlers, memory_order_relaxed);
}

static bool drain_over(iol__rt_worker *w)
{
    return app_fds(w) <= 0 || iol_loop_time(w->loop) >= w->drain_deadline;
}

static void drain_check(void *arg)
{
    iol__rt_worker *w = arg;
    w->drain_timer = 0;
    if (drain_over(w)) {
        iol_loop_stop(w->loop);
        return;
    }
    double left = w->drain_deadline - iol_loop_time(w->loop);
    if (iol_loop_call_later(w->loop, left < DRAIN_CHECK_PERIOD ? left : DRAIN_CHECK_PERIOD, drain_check, w,
                            &w->drain_timer) < 0)
        iol_loop_stop(w->loop); /* out of memory: end the drain */
}

/* Tells the application the runtime is stopping and serves its fds until
 * they are gone or the deadline passed. The loop runs as usual (timeouts,
 * callbacks, handlers); a stop of the loop by the application only ends
 * one start, not the drain. */
static void serve_drain(iol__rt_worker *w)
{
    iol_runtime *rt = w->rt;
    if (rt->cfg.drain_timeout < 0)
        return;
    if (rt->cfg.on_drain)
        rt->cfg.on_drain(w->loop, w->index, rt->cfg.arg);
    w->drain_deadline = iol_loop_time(w->loop) + rt->cfg.drain_timeout;
    while (!drain_over(w)) {
        if (iol_loop_call_later(w->loop, 0, drain_check, w, &w->drain_timer) < 0)
            break;
        int r = iol_loop_start(w->loop);
        if (w->drain_timer) {
            iol_loop_remove_timeout(w->loop, w->drain_timer);
            w->drain_timer = 0;
        }
        if (r < 0)
            break;
    }
}

/* The fds still registered at the end of the drain get closed: by the
 * application in on_stop, or with the loop. Closing a socket with unread
 * input sends RST, so first send FIN and discard input until the peer
 * closes too, bounded in all by `seconds` (0: one pass, no wait). Not
 * sockets (ENOTSOCK) and listening sockets are left as they are. Before
 * the FIN, the streams end their protocol (TLS: close_notify). */
static void linger(iol__rt_worker *w, double seconds)
{
    iol__loop_wind_down(w->loop);
    int n = iol__loop_handler_fds(w->loop, NULL, 0);
    if (n <= 0)
        return;
    int *fds = malloc((size_t)n * sizeof(*fds));
    struct pollfd *p = malloc((size_t)n * sizeof(*p));
    if (!fds || !p)
        goto out;
    n = iol__loop_handler_fds(w->loop, fds, n);
    int open = 0;
    for (int i = 0; i < n; i++) {
        p[i] = (struct pollfd){.fd = -1, .events = POLLIN};
        if (shutdown(fds[i], SHUT_WR) == 0) {
            p[i].fd = fds[i];
            open++;
        }
    }
    double deadline = iol_loop_time(w->loop) + seconds;
    for (bool first = true; open > 0; first = false) {
        double left = deadline - iol_loop_time(w->loop);
        if (left <= 0 && !first)
            break;
        int r = poll(p, (nfds_t)n, left > 0 ? (int)(left * 1000) + 1 : 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        for (int i = 0; i < n; i++) {
            if (p[i].fd < 0 || !p[i].revents)
                continue;
            char buf[4096];
            ssize_t got;
            while ((got = recv(p[i].fd, buf, sizeof(buf), MSG_DONTWAIT)) > 0)
                ;
            if (got == 0 || (errno != EAGAIN && errno != EINTR)) {
                p[i].fd = -1; /* EOF or error: nothing more can arrive */
                open--;
            }
        }
    }
out:
    free(fds);
    free(p);
}

/* Waits until no post to this worker is between its check and its push
 * (see iol_runtime_post). Posts that find the flag set leave at once, so
 * this is a short wait. */
static void wait_posts_done(iol__rt_worker *w)
{
    /* seq_cst (so acquire): pairs with post_leave's release, and is after
     * our seq_cst read of stopped in S. */
    while (atomic_load_explicit(&w->inflight, memory_order_seq_cst) != 0)
        sched_yield();
}

static void worker_shutdown(iol__rt_worker *w)
{
    iol_runtime *rt = w->rt;
    wait_posts_done(w);

    /* Accept what the kernel queued on our listening sockets; handoffs go
     * to other workers' queues. The barrier makes every handoff push
     * happen-before every worker's drain sentinel, so no handed-off fd is
     * left behind in a queue. */
    iol__listeners_final_accept(rt, w->index);
    iol__udp_shards_stop(rt, w->index);
    pthread_mutex_lock(&rt->mu);
    rt->accepted_final++;
    pthread_cond_broadcast(&rt->cv);
    while (rt->creating || rt->accepted_final < rt->nthreads + rt->acceptor_started)
        pthread_cond_wait(&rt->cv, &rt->mu);
    pthread_mutex_unlock(&rt->mu);

    drain(w, DRAIN_PASSES);
    bool draining = rt->cfg.drain_timeout >= 0;
    if (draining) {
        serve_drain(w);
        linger(w, LINGER_DISCARD_SECONDS);
    }
    if (rt->cfg.on_stop)
        rt->cfg.on_stop(w->loop, w->index, rt->cfg.arg);
    drain(w, DRAIN_PASSES);
    if (draining)
        linger(w, 0); /* input that came during on_stop */
}

static void *worker_main(void *p)
{
    iol__rt_worker *w = p;
    iol_runtime *rt = w->rt;
    tl_worker_index = (int)w->index;
    tl_worker_runtime = rt;

    if (rt->cfg.pin_threads)
        pin_to_cpu(w->index);
    iol_loop_make_current(w->loop);
    if (rt->cfg.blocking_log_threshold > 0) {
        /* On the worker thread: the watchdog's timer targets this thread. */
        int r = iol_loop_set_blocking_log_threshold(w->loop, rt->cfg.blocking_log_threshold);
        if (r < 0)
            iol__log(IOL_LOG_WARNING, "runtime: worker %u: blocking log threshold: %s", w->index, strerror(-r));
    }
    if (rt->cfg.on_start)
        rt->cfg.on_start(w->loop, w->index, rt->cfg.arg);
    /* Runs once the loop is running; start() waits for it. */
    if (iol__loop_post(w->loop, running_cb, w) < 0)
        signal_running(w);

    for (;;) {
        int r = iol_loop_start(w->loop);
        /* In case stop came before the loop ever ran its first batch. */
        signal_running(w);
        /* seq_cst: the worker's read of the flag in the post protocol. */
        if (atomic_load_explicit(&rt->stopped, memory_order_seq_cst))
            break;
        if (r < 0) {
            iol__log(IOL_LOG_ERROR, "runtime: worker %u: loop failed: %s; stopping the runtime", w->index,
                     strerror(-r));
            iol_runtime_stop(rt);
            continue; /* re-read the flag (now set) */
        }
        /* Someone stopped this worker's loop directly: the runtime owns
         * its lifetime, so it keeps running until the runtime stops. */
    }

    worker_shutdown(w);
    int dropped = iol_loop_close(w->loop, true);
    if (dropped > 0)
        iol__log(IOL_LOG_DEBUG, "runtime: worker %u: dropped %d callbacks at close", w->index, dropped);
    w->loop_closed = true;
    tl_worker_index = -1;
    tl_worker_runtime = NULL;
    return NULL;
}

/* The acceptor: runs its loop (the HANDOFF sockets, lsock timers) until
 * the runtime stops, then makes its final accepts — handing the fds to
 * the workers' queues — and counts itself in the barrier so that every
 * handoff is queued before any worker drains. It need not wait at the
 * barrier: nothing it does afterwards touches the workers. */
static void *acceptor_main(void *p)
{
    iol_runtime *rt = p;
    iol_loop_make_current(rt->acceptor_loop);
    for (;;) {
        int r = iol_loop_start(rt->acceptor_loop);
        /* seq_cst: as the workers' read; pairs with stop's exchange. */
        if (atomic_load_explicit(&rt->stopped, memory_order_seq_cst))
            break;
        if (r < 0) {
            iol__log(IOL_LOG_ERROR, "runtime: acceptor loop failed: %s; stopping the runtime", strerror(-r));
            iol_runtime_stop(rt);
        }
    }
    iol__listeners_final_accept(rt, IOL__ACCEPTOR(rt));
    pthread_mutex_lock(&rt->mu);
    rt->accepted_final++;
    pthread_cond_broadcast(&rt->cv);
    pthread_mutex_unlock(&rt->mu);
    /* Registrations queued by a listen that raced with stop: they find
     * their socket closed and do nothing. */
    iol_loop_close(rt->acceptor_loop, true);
    rt->acceptor_closed = true;
    return NULL;
}

/* The runtime's threads start with the usual notification signals
 * blocked, so that a loop's signal handlers (iol_loop_add_signal reads a
 * signalfd, which sees only blocked signals) get them instead of a worker
 * that would take them by the default disposition. */
static int create_thread(pthread_t *thread, void *(*fn)(void *), void *arg)
{
    static const int notifications[] = { SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGCHLD, SIGWINCH };
    sigset_t block, saved;
    sigemptyset(&block);
    for (size_t i = 0; i < sizeof notifications / sizeof notifications[0]; i++)
        sigaddset(&block, notifications[i]);
    pthread_sigmask(SIG_BLOCK, &block, &saved);
    int r = pthread_create(thread, NULL, fn, arg);
    pthread_sigmask(SIG_SETMASK, &saved, NULL);
    return r;
}

int iol__runtime_want_acceptor(iol_runtime *rt)
{
    rt->acceptor_wanted = true;
    if (rt->state != IOL__RT_STARTED || rt->acceptor_started)
        return 0;
    int r = create_thread(&rt->acceptor_thread, acceptor_main, rt);
    if (r != 0)
        return -r;
    rt->acceptor_started = true;
    return 0;
}

int iol_runtime_start(iol_runtime *rt)
{
    if (!rt)
        return -EINVAL;
    pthread_mutex_lock(&rt->mu);
    if (rt->state != IOL__RT_NEW) {
        pthread_mutex_unlock(&rt->mu);
        return -EALREADY;
    }
    /* relaxed: stop before start is a caller-side ordering; either way
     * workers re-check the flag with seq_cst. */
    if (atomic_load_explicit(&rt->stopped, memory_order_relaxed)) {
        pthread_mutex_unlock(&rt->mu);
        return -ESHUTDOWN;
    }
    rt->state = IOL__RT_STARTED;
    rt->creating = true;
    int err = 0;
    for (unsigned i = 0; i < rt->n; i++) {
        int r = create_thread(&rt->workers[i].thread, worker_main, &rt->workers[i]);
        if (r != 0) {
            err = -r;
            break;
        }
        rt->nthreads++;
    }
    if (err == 0 && rt->acceptor_wanted)
        err = iol__runtime_want_acceptor(rt);
    rt->creating = false;
    pthread_cond_broadcast(&rt->cv);
    if (err < 0) {
        pthread_mutex_unlock(&rt->mu);
        iol__log(IOL_LOG_ERROR, "runtime: cannot create worker thread: %s", strerror(-err));
        iol_runtime_stop(rt);
        iol_runtime_join(rt);
        return err;
    }
    while (rt->running < rt->nthreads)
        pthread_cond_wait(&rt->cv, &rt->mu);
    pthread_mutex_unlock(&rt->mu);
    return 0;
}

int iol_runtime_stop(iol_runtime *rt)
{
    if (!rt)
        return -EINVAL;
    /* seq_cst: the store of the post protocol (see iol_runtime_post). The
     * exchange makes stop idempotent: only the first one stops loops. */
    if (atomic_exchange_explicit(&rt->stopped, true, memory_order_seq_cst))
        return 0;
    for (unsigned i = 0; i < rt->n; i++)
        iol_loop_stop(rt->workers[i].loop);
    iol_loop_stop(rt->acceptor_loop);
    return 0;
}

bool iol_runtime_stopping(const iol_runtime *rt)
{
    /* acquire: pairs with stop's seq_cst exchange; a caller that sees true
     * may rely on what the stopping thread did before stop. */
    return rt && atomic_load_explicit(&rt->stopped, memory_order_acquire);
}

int iol_runtime_join(iol_runtime *rt)
{
    if (!rt)
        return -EINVAL;
    if (tl_worker_runtime == rt)
        return -EDEADLK;
    pthread_mutex_lock(&rt->mu);
    if (rt->state == IOL__RT_NEW || rt->joined) {
        pthread_mutex_unlock(&rt->mu);
        return 0;
    }
    if (rt->joining) {
        /* Another thread joins: wait for it to finish. */
        while (!rt->joined)
            pthread_cond_wait(&rt->cv, &rt->mu);
        pthread_mutex_unlock(&rt->mu);
        return 0;
    }
    rt->joining = true;
    unsigned nthreads = rt->nthreads;
    pthread_mutex_unlock(&rt->mu);

    for (unsigned i = 0; i < nthreads; i++)
        pthread_join(rt->workers[i].thread, NULL);
    /* The workers passed the barrier, which counts a started acceptor,
     * and listen refuses once the final accepts began: acceptor_started
     * is final now. */
    pthread_mutex_lock(&rt->mu);
    bool acceptor = rt->acceptor_started;
    pthread_mutex_unlock(&rt->mu);
    if (acceptor)
        pthread_join(rt->acceptor_thread, NULL);

    pthread_mutex_lock(&rt->mu);
    rt->joined = true;
    pthread_cond_broadcast(&rt->cv);
    pthread_mutex_unlock(&rt->mu);
    return 0;
}

void iol_runtime_free(iol_runtime *rt)
{
    if (!rt)
        return;
    if (tl_worker_runtime == rt) {
        iol__log(IOL_LOG_ERROR, "runtime: iol_runtime_free called from a worker; ignored (leaks)");
        return;
    }
    iol_runtime_stop(rt);
    iol_runtime_join(rt);
    /* Listening sockets first: they may still be registered on loops that
     * never ran, and closing those loops with all_fds would close them. */
    iol__listeners_free(rt);
    for (unsigned i = 0; i < rt->n; i++) {
        iol__rt_worker *w = &rt->workers[i];
        if (!w->loop_closed)
            iol_loop_close(w->loop, true);
        iol_loop_unref(w->loop);
    }
    if (!rt->acceptor_closed)
        iol_loop_close(rt->acceptor_loop, true);
    iol_loop_unref(rt->acceptor_loop);
    broadcasts_release(rt);
    pthread_mutex_destroy(&rt->broadcasts_mu);
    iol__udp_shards_free(rt);
    pthread_cond_destroy(&rt->cv);
    pthread_mutex_destroy(&rt->mu);
    free(rt->workers);
    free(rt);
}
