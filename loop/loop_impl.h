/* loop/ — the loop's private state, shared by the files of loop/. Nothing
 * outside loop/ includes this except tests that look at its insides
 * (sleeps, the spin policy); statistics are public (iol_loop_get_stats). */
#ifndef IOL_LOOP_IMPL_H
#define IOL_LOOP_IMPL_H

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "ioloop.h"
#include "loop/spin.h"
#include "loop/timer_heap.h"
#include "loop/watchdog.h"
#include "poller/poller.h"
#include "sync/cbqueue.h"
#include "sync/waker.h"

/* Ring messages a loop keeps in flight at most; beyond, the eventfd. */
#define IOL__MSG_PENDING 32

struct iol_executor;
struct iol__close_hook;
struct iol__zmq_handlers;
typedef struct iol__signals iol__signals;

/* The counters behind iol_loop_get_stats. Written by the loop thread only
 * (stats_add/stats_max: a relaxed load and a relaxed store, no locked
 * instruction, so a plain add on x86), read by any thread with relaxed
 * loads. Relaxed suffices: each counter is one word read whole, and a
 * snapshot promises no consistency between counters (nothing else is
 * published through them). Their own cache line, at the end of the loop,
 * so writing them never invalidates the line producers read on each post
 * (closed, the queue, the waker). The maxima are also stored by
 * iol_loop_reset_stats from any thread: a reset racing with the loop's
 * update may keep the value of the call that ended during the reset. */
typedef struct iol__loop_counters {
    _Alignas(64) _Atomic uint64_t iterations;
    _Atomic uint64_t callbacks_self, callbacks_remote, callbacks_signal;
    _Atomic uint64_t timeouts;
    _Atomic uint64_t busy_ns, wait_ns;
    _Atomic uint64_t longest_callback_ns, longest_iteration_ns;
    _Atomic uint64_t last_batch;
    _Atomic uint64_t polling_since; /* clock_ns when the current poll began; 0: not polling */
    _Atomic uint64_t signals;
} iol__loop_counters;

static inline void iol__stats_add(_Atomic uint64_t *c, uint64_t n)
{
    /* relaxed load + store: the loop thread is the only writer (see above). */
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n, memory_order_relaxed);
}

static inline void iol__stats_max(_Atomic uint64_t *c, uint64_t v)
{
    /* relaxed: as iol__stats_add; a racing reset is documented above. */
    if (v > atomic_load_explicit(c, memory_order_relaxed))
        atomic_store_explicit(c, v, memory_order_relaxed);
}

/* Prepare/check hooks (loop/hooks.c). live: entries with fn != NULL. */
typedef struct iol__hook {
    iol_callback_fn fn; /* NULL: removed while the list ran */
    void *arg;
} iol__hook;
typedef struct iol__hook_list {
    iol__hook *hooks;
    unsigned len, cap, live;
    bool running;
} iol__hook_list;
enum { IOL__HOOK_PREPARE, IOL__HOOK_CHECK };

typedef struct iol__handler {
    iol_handler_fn fn; /* NULL: no handler for this fd */
    void *arg;
    unsigned events;   /* as asked, IOL_ERROR included */
} iol__handler;

struct iol_loop {
    /* Cross-thread state. */
    _Atomic unsigned refs;
    _Atomic bool closed;         /* producers read it before pushing */
    _Atomic bool running;        /* set by start, read by any thread */
    _Atomic bool stop_requested; /* stop() from any thread */
    _Atomic int handler_count;   /* read by runtime/ for load balancing */
    _Atomic(const void *) owner; /* iol__thread_id() of the thread in start() */

    iol__cbqueue *queue;
    size_t queue_limit;          /* iol_loop_config.queue_limit; 0: none; set at creation */
    iol__waker waker;

    /* Owner-thread state. */
    const iol__poller_ops *poller_ops;
    iol__poller *poller;
    iol__handler *handlers;      /* indexed by fd */
    int handlers_cap;
    uint64_t *claimed;           /* bit per fd: watched by ring operations
                                    alone (iol__loop_fd_claim) */
    int claimed_cap;             /* fds the bitmap covers */
    iol__poller_event *events;   /* the current poll's results */
    int nevents, event_pos;
    int io_events;               /* the last dispatch's events for handlers,
                                    completions and zmq sockets (not the waker) */
    bool dispatching;
    bool ran_batch;              /* the last iteration ran queued callbacks */

    iol__timer_heap timers;
    double (*time_func)(void *ud);
    void *time_ud;
    iol__watchdog *watchdog;
    bool owner_ref;              /* the creator's reference not yet dropped */
    bool legacy_status;          /* 0.1 status codes (loop/status.c); set at creation */

    struct iol_executor *default_executor;
    bool default_executor_owned;

    struct iol__close_hook *close_hooks; /* loop/close_hook.h */

    /* add_future registrations whose future has not resolved yet
     * (loop/future.c): any thread links them, the loop's close releases
     * them. waiters_closed: set by that close; no link after it. */
    pthread_mutex_t waiters_lock;
    struct iol__future_waiter *waiters; /* under waiters_lock */
    bool waiters_closed;                /* under waiters_lock */

    iol__spin spin;              /* the pre-sleep spin policy (loop/spin.c) */
    uint64_t sleeps;             /* sleeps announced to the waker (a statistic
                                    for tests: wakeups <= sleeps) */
    int last_poll_timeout_ms;    /* the last sleep's timeout, -1: none (tests) */
    struct iol__zmq_handlers *zmq;       /* loop/zmq_handlers.c; NULL until the first zmq handler */
    bool time_calls;             /* iol_loop_set_call_timing */
    iol__hook_list prepare_hooks, check_hooks; /* loop/hooks.c */
    iol__signals *signals;       /* loop/signals.c; NULL until the first signal handler */
    uint64_t awake_ns;           /* clock_ns when the last poll returned (statistics) */
    uint64_t ops_inflight;       /* completion operations not ended (loop/completion.c) */
    bool draining;               /* closing: no new completion operations */
    bool ring_ready;             /* the recv buffer ring is set up */
    bool outer_sleep;            /* an embedding program waits on the backend fd: the
                                    waker has a sleep announced (iol_loop_run_once) */

    /* Ring messages (loop/wake.c). msg_fd: where other uring loops send
     * this loop's wakeups (a dup of its ring, closed when the memory goes);
     * -1: they write the eventfd. msg_send: this loop may send them. The
     * loops woken by a message still queued, or submitted with its failure
     * CQE perhaps not yet reaped, each held by a reference:
     * msg_pending[0, msg_sent) went to the kernel in a wait whose CQEs
     * were all reaped; [msg_sent, msg_queued) may not have. */
    int msg_fd;
    bool msg_send;
    bool msg_now;                /* IOL_MSGRING=now: submit each message at once */
    unsigned msg_queued, msg_sent;
    struct iol_loop *outer_iterating; /* iterating before this run (nested runs) */
    struct iol_loop *msg_pending[IOL__MSG_PENDING];

    /* The callbacks posted and not yet run (loop.c, add_callback), counted
     * when queue_limit is set; on a line of its own, since every producer
     * writes it. */
    _Alignas(64) _Atomic size_t queued;

    iol__loop_counters stats;    /* last: its own cache line */
};

#include "loop/post.h"

/* Whether fd has a handler on loop / is claimed by ring operations
 * (iol__loop_fd_claim). Owner-thread state. */
static inline bool iol__loop_has_handler(const iol_loop *loop, int fd)
{
    return fd < loop->handlers_cap && loop->handlers[fd].fn;
}

static inline bool iol__loop_fd_claimed(const iol_loop *loop, int fd)
{
    return fd < loop->claimed_cap && (loop->claimed[fd / 64] >> (fd % 64) & 1);
}

/* A unique id of the calling thread: the address of a thread-local. */
const void *iol__thread_id(void);

/* -EPERM when the loop runs on another thread (loop-thread-only calls).
 * The running thread stores `owner` before it runs anything, so for it the
 * check always passes; any other thread sees either not running (allowed:
 * one thread may drive a stopped loop) or an owner that is not itself. */
static inline int iol__loop_check_owner(const iol_loop *loop)
{
    /* running, acquire: when it reads false, the last run's writes to the
     * owner-thread state (release in iol__loop_release) are visible to
     * this caller, which is about to use that state. owner, relaxed: only
     * compared with this thread's own id, which no other thread stores. */
    if (atomic_load_explicit(&loop->running, memory_order_acquire) &&
        atomic_load_explicit(&loop->owner, memory_order_relaxed) != iol__thread_id())
        return -EPERM;
    return 0;
}

/* Common prologue of owner-thread calls: NULL, closed, wrong thread. */
static inline int iol__loop_check(const iol_loop *loop)
{
    if (!loop)
        return -EINVAL;
    /* relaxed: closing happens on the owner thread, the one that may call. */
    if (atomic_load_explicit(&loop->closed, memory_order_relaxed))
        return -ESHUTDOWN;
    return iol__loop_check_owner(loop);
}

/* A run split in three for run_sync (loop/loop.c): claim the loop for
 * this thread (-EINVAL, -ESHUTDOWN, -EBUSY; takes a reference), run it
 * until stopped, release it (drops the reference, which may free it). */
int iol__loop_claim(iol_loop *loop);
int iol__loop_run(iol_loop *loop);
void iol__loop_release(iol_loop *loop);

/* Unlinks and runs every close hook (loop/close_hooks.c). */
void iol__loop_run_close_hooks(iol_loop *loop);
/* Drops the fds' handlers; with close_fds, closes them too (loop/handlers.c). */
void iol__loop_handlers_release(iol_loop *loop, bool close_fds);
/* Runs the handlers for the events of the last poll (loop/handlers.c). */
void iol__loop_dispatch_events(iol_loop *loop);
/* current/instance bookkeeping when a loop closes (loop/current.c). */
void iol__loop_forget(iol_loop *loop);
/* Frees an executor the loop created itself (loop/executor.c). */
void iol__executor_free_owned(struct iol_executor *ex);

/* ZeroMQ sockets (loop/zmq_handlers.c); no-ops on a loop without any.
 * Before each poll: re-reads ZMQ_EVENTS of the sockets watched through
 * ZMQ_FD, which is edge-triggered; true when one is ready, so the poll
 * must not sleep. */
bool iol__zmq_recheck(iol_loop *loop);
/* Runs the handler of a socket event reported by the zmq poller. */
void iol__zmq_dispatch_socket(iol_loop *loop, void *socket, unsigned events);
/* After the fd handlers: runs the handlers of sockets found ready. */
void iol__zmq_dispatch_ready(iol_loop *loop);
static inline bool iol__loop_zmq_recheck(iol_loop *loop)
{
    return loop->zmq && iol__zmq_recheck(loop);
}

/* Cross-loop wakeups (loop/wake.c). wake_after_push: wakes loop after a
 * post (its seq_cst push), through a ring message when this thread is
 * running a uring loop and loop is one too, else through loop's eventfd.
 * The rest is the sender's bookkeeping, on its own thread: msg_init at
 * creation; msg_after_wait after each poll (n: its result); msg_failed for
 * an IOL__POLLER_MSG_FAILED event; msg_release after dispatching that
 * poll's events; msg_flush when the thread stops iterating the loop (the
 * run ends, a nested run starts); msg_abandon at shutdown, after the
 * poller closed; set_iterating: the loop this thread iterates now
 * (iol__iterating; loop.c, around iterations). */
extern _Thread_local iol_loop *iol__iterating __attribute__((tls_model("initial-exec")));
void iol__loop_wake_by_message(iol_loop *self, iol_loop *loop);
static inline void iol__loop_wake_after_push(iol_loop *loop)
{
    /* Inline: a thread that runs no loop pays a thread-local load. */
    iol_loop *self = iol__iterating;
    if (self && self != loop && self->msg_send && loop->msg_fd >= 0) {
        iol__loop_wake_by_message(self, loop);
        return;
    }
    /* wake_after_push in its two halves, so the winner stamps the time
     * for the spin policy (loop/spin.c, MEASURING) before delivering. */
    if (iol__waker_claim_after_push(&loop->waker, false)) {
        iol__spin_note_wake(&loop->spin);
        iol__waker_deliver(&loop->waker);
    }
}
void iol__loop_msg_init(iol_loop *loop);
void iol__loop_msg_after_wait(iol_loop *loop, int n);
void iol__loop_msg_failed(iol_loop *loop);
void iol__loop_msg_release(iol_loop *loop);
void iol__loop_msg_flush(iol_loop *loop);
void iol__loop_msg_abandon(iol_loop *loop);
iol_loop *iol__loop_set_iterating(iol_loop *loop); /* returns the previous one */

/* The most events one poll returns (the size of loop->events). */
#define IOL__MAX_EVENTS 1024
/* Routes a completion to its owner (loop/completion.c). */
void iol__loop_complete(iol_loop *loop, const iol__poller_event *ev);
/* At close, after the hooks: cancels the operations still in flight and
 * delivers their last results (bounded wait). */
void iol__loop_completions_drain(iol_loop *loop);

/* Runs a hook list (loop/hooks.c); the loop calls it only when l->live. */
void iol__loop_run_hooks(iol_loop *loop, iol__hook_list *l);
void iol__loop_free_hooks(iol_loop *loop);

/* Signal handlers (loop/signals.c). fd_event: true (and handlers ran)
 * when fd is the loop's signalfd. signal_fd: it, or -1. thread_enter: at
 * start, blocks the loop's signals in the running thread. release: at
 * close, gives every signal back. */
bool iol__loop_signal_fd_event(iol_loop *loop, int fd);
int iol__loop_signal_fd(const iol_loop *loop);
void iol__loop_signals_thread_enter(iol_loop *loop);
void iol__loop_signals_release(iol_loop *loop);

/* CLOCK_MONOTONIC in ns (statistics; the loop's own clock may be fake). */
uint64_t iol__clock_ns(void);

/* Around each callback, timeout and handler. The hooks run only when
 * `watched` (iol__loop_watched, read once per batch) is true, so a loop
 * with neither the watchdog nor call timing pays one predictable branch. */
static inline bool iol__loop_watched(const iol_loop *loop)
{
    return loop->time_calls || iol__watchdog_enabled(loop->watchdog);
}

static inline uint64_t iol__loop_call_begin(iol_loop *loop, const void *fn)
{
    iol__watchdog_call_begin(loop->watchdog, fn);
    return loop->time_calls ? iol__clock_ns() : 0;
}

static inline void iol__loop_call_end(iol_loop *loop, uint64_t began)
{
    if (loop->time_calls)
        iol__stats_max(&loop->stats.longest_callback_ns, iol__clock_ns() - began);
    iol__watchdog_call_end(loop->watchdog);
}

/* Runs one callback of the iol_callback_fn kind (posted callbacks,
 * timeouts, hooks) inside the begin/end pair when `watched`. */
static inline void iol__loop_call(iol_loop *loop, bool watched, iol_callback_fn fn, void *arg)
{
    if (!watched) {
        fn(arg);
        return;
    }
    uint64_t began = iol__loop_call_begin(loop, (const void *)fn);
    fn(arg);
    iol__loop_call_end(loop, began);
}

#endif
