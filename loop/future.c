/* loop/ — thread-safe, refcounted futures and iol_loop_add_future.
 *
 * A future is resolved once, from any thread. The mutex serializes
 * resolution against hook registration, so a done-callback is never lost
 * (registered after the result: scheduled at once; before: run by the
 * resolver, after it released the lock). Readers do not take the mutex: `state` is stored with release
 * after the result fields, and loaded with acquire before reading them;
 * the fields never change after that store. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "ioloop.h"
#include "loop/future.h"
#include "loop/log.h"
#include "loop/loop_impl.h"

/* RUNNING: an executor's worker took the job (iol__future_start_running);
 * still not done, but no longer cancellable. */
enum { FUTURE_PENDING = 0, FUTURE_DONE = 1, FUTURE_RUNNING = 2 };

struct iol_future {
    _Atomic unsigned refs;
    _Atomic int state;        /* FUTURE_*; DONE release-stored once, after result/err */
    pthread_mutex_t lock;     /* resolution vs. hooks */
    pthread_cond_t fired;     /* broadcast when `firing` goes false */
    void *result;             /* written under lock before state */
    int err;                  /* 0 or < 0, ditto */
    iol__future_hook *hooks;  /* under lock; taken (emptied) on resolution */
    bool firing;              /* under lock: the resolver is running hooks */
};

/* One add_future registration: a hook that moves it to the loop's queue.
 * While its future is pending it is also on the loop's waiters list, so
 * the loop's close can release it (a future may never resolve). Exactly
 * one of fn and release runs: fn in waiter_run, release in waiter_free
 * when fn has not run. */
typedef struct iol__future_waiter {
    iol__future_hook hook;
    iol_loop *loop;           /* referenced until queued (or released) */
    iol_future *future;       /* referenced until fn ran (or released) */
    void (*fn)(iol_future *f, void *arg);
    void *arg;
    void (*release)(void *arg); /* NULL: nothing to release */
    bool ran;                 /* fn ran: release must not */
    /* The loop's waiters list, under loop->waiters_lock. closing: the
     * loop's close took it off the list and owns it (the hook, if it
     * fires meanwhile, leaves it alone). */
    struct iol__future_waiter *prev, *next;
    bool closing;
} future_waiter;

int iol_future_new(iol_future **out)
{
    if (!out)
        return -EINVAL;
    iol_future *f = calloc(1, sizeof(*f));
    if (!f)
        return -ENOMEM;
    int err = pthread_mutex_init(&f->lock, NULL);
    if (err) {
        free(f);
        return -err;
    }
    if ((err = pthread_cond_init(&f->fired, NULL))) {
        pthread_mutex_destroy(&f->lock);
        free(f);
        return -err;
    }
    atomic_init(&f->refs, 1);
    atomic_init(&f->state, FUTURE_PENDING);
    *out = f;
    return 0;
}

iol_future *iol_future_ref(iol_future *f)
{
    /* relaxed: the caller holds a reference, so the count cannot reach
     * zero meanwhile, and taking one publishes nothing. */
    if (f)
        atomic_fetch_add_explicit(&f->refs, 1, memory_order_relaxed);
    return f;
}

void iol_future_unref(iol_future *f)
{
    if (!f)
        return;
    /* acq_rel: the release publishes this thread's uses of f; the acquire
     * on the last decrement makes every other thread's uses visible
     * before the memory goes. */
    if (atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel) != 1)
        return;
    /* No hook can be linked here: each linked hook belongs to someone
     * holding a reference (add_future's waiter, run_sync's frame). */
    pthread_cond_destroy(&f->fired);
    pthread_mutex_destroy(&f->lock);
    free(f);
}

/* cancel: only a pending future (not one whose job runs: -EBUSY). */
static int future_resolve(iol_future *f, void *result, int err, bool cancel)
{
    pthread_mutex_lock(&f->lock);
    /* relaxed: state only changes under the lock we hold. */
    int state = atomic_load_explicit(&f->state, memory_order_relaxed);
    if (state == FUTURE_DONE || (cancel && state == FUTURE_RUNNING)) {
        pthread_mutex_unlock(&f->lock);
        return state == FUTURE_DONE ? -EALREADY : -EBUSY;
    }
    f->result = result;
    f->err = err;
    /* release: result/err happen-before any acquire load that sees DONE
     * (iol_future_done/result on other threads, lock-free). */
    atomic_store_explicit(&f->state, FUTURE_DONE, memory_order_release);
    iol__future_hook *h = f->hooks;
    f->hooks = NULL;
    f->firing = h != NULL;
    pthread_mutex_unlock(&f->lock);
    if (!h)
        return 0;

    /* Hooks run outside the lock (one may drop the last reference of a
     * loop, whose teardown joins threads); remove_hook waits on `fired`
     * for them, so it still either unlinks a hook before it runs or
     * returns after it ran. Read next first: a hook may free itself. */
    while (h) {
        iol__future_hook *next = h->next;
        h->next = NULL;
        h->fn(f, h->arg);
        h = next;
    }
    pthread_mutex_lock(&f->lock);
    f->firing = false;
    pthread_cond_broadcast(&f->fired);
    pthread_mutex_unlock(&f->lock);
    return 0;
}

int iol_future_set_result(iol_future *f, void *result)
{
    if (!f)
        return -EINVAL;
    return future_resolve(f, result, 0, false);
}

int iol_future_set_error(iol_future *f, int err)
{
    if (!f || err >= 0)
        return -EINVAL;
    return future_resolve(f, NULL, err, false);
}

int iol_future_cancel(iol_future *f)
{
    if (!f)
        return -EINVAL;
    return future_resolve(f, NULL, -ECANCELED, true);
}

bool iol__future_start_running(iol_future *f)
{
    pthread_mutex_lock(&f->lock);
    /* relaxed: state only changes under the lock we hold; nothing is
     * published with RUNNING (readers only test for DONE). */
    bool start = atomic_load_explicit(&f->state, memory_order_relaxed) == FUTURE_PENDING;
    if (start)
        atomic_store_explicit(&f->state, FUTURE_RUNNING, memory_order_relaxed);
    pthread_mutex_unlock(&f->lock);
    return start;
}

bool iol_future_done(const iol_future *f)
{
    /* acquire: pairs with the release in future_resolve. */
    return f && atomic_load_explicit(&f->state, memory_order_acquire) == FUTURE_DONE;
}

int iol_future_result(const iol_future *f, void **result)
{
    if (!f)
        return -EINVAL;
    /* acquire: pairs with the release in future_resolve, so result/err
     * are the resolver's values. */
    if (atomic_load_explicit(&f->state, memory_order_acquire) != FUTURE_DONE)
        return -EAGAIN;
    if (f->err < 0)
        return f->err;
    if (result)
        *result = f->result;
    return 0;
}

int iol__future_add_hook(iol_future *f, iol__future_hook *h)
{
    pthread_mutex_lock(&f->lock);
    /* relaxed: state only changes under the lock we hold. */
    if (atomic_load_explicit(&f->state, memory_order_relaxed) == FUTURE_DONE) {
        pthread_mutex_unlock(&f->lock);
        return -EALREADY;
    }
    /* Append: done-callbacks run in the order they were added. */
    h->next = NULL;
    iol__future_hook **tail = &f->hooks;
    while (*tail)
        tail = &(*tail)->next;
    *tail = h;
    pthread_mutex_unlock(&f->lock);
    return 0;
}

bool iol__future_remove_hook(iol_future *f, iol__future_hook *h)
{
    bool removed = false;
    pthread_mutex_lock(&f->lock);
    for (iol__future_hook **p = &f->hooks; *p; p = &(*p)->next) {
        if (*p == h) {
            *p = h->next;
            h->next = NULL;
            removed = true;
            break;
        }
    }
    /* Not linked: either it ran, or the resolver took it and may be
     * running it right now; wait for the latter to finish. */
    while (!removed && f->firing)
        pthread_cond_wait(&f->fired, &f->lock);
    pthread_mutex_unlock(&f->lock);
    return removed;
}

/* ----------------------------------------------------------- add_future */

/* Drops w's future reference, runs release if fn never ran, frees w. The
 * loop reference is gone already (waiter_queue or the close dropped it). */
static void waiter_free(future_waiter *w)
{
    if (!w->ran && w->release)
        w->release(w->arg);
    iol_future_unref(w->future);
    free(w);
}

/* On the loop's thread, a later iteration than the registration. */
static void waiter_run(void *arg)
{
    future_waiter *w = arg;
    w->ran = true;
    w->fn(w->future, w->arg);
    waiter_free(w);
}

/* Moves w to its loop's queue; frees it (release runs) if the loop is
 * gone. Returns the add_callback result. The loop reference is dropped
 * either way: a queued callback needs none (the loop runs it, so it is
 * alive), and holding one in the queue would keep a loop that is closed
 * before running it alive forever. */
static int waiter_queue(future_waiter *w)
{
    iol_loop *loop = w->loop;
    /* After a successful push w may run (and be freed) at once on the
     * loop's thread: touch only the local copy afterwards. */
    int err = iol__loop_post(loop, waiter_run, w);
    if (err < 0)
        waiter_free(w);
    iol_loop_unref(loop);
    return err;
}

/* Under loop->waiters_lock. */
static void waiter_unlink_locked(iol_loop *loop, future_waiter *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        loop->waiters = w->next;
    if (w->next)
        w->next->prev = w->prev;
    w->prev = w->next = NULL;
}

/* Hook: runs in the resolver (see loop/future.h), no future lock held.
 * The resolver holds its own reference to f, so waiter_free's unref is
 * never the last one here. */
static void waiter_on_resolved(iol_future *f, void *arg)
{
    (void)f;
    future_waiter *w = arg;
    iol_loop *loop = w->loop;
    pthread_mutex_lock(&loop->waiters_lock);
    if (w->closing) {
        /* The loop's close owns w now; it waits for this hook to return
         * (remove_hook) before it releases w. */
        pthread_mutex_unlock(&loop->waiters_lock);
        return;
    }
    waiter_unlink_locked(loop, w);
    pthread_mutex_unlock(&loop->waiters_lock);
    int err = waiter_queue(w);
    if (err == -ENOMEM)
        iol__log(IOL_LOG_ERROR, "future done-callback dropped: out of memory");
    /* -ESHUTDOWN: the loop was closed meanwhile; dropping the callback is
     * what close does to every pending one (release ran). */
}

void iol__loop_release_waiters(iol_loop *loop)
{
    pthread_mutex_lock(&loop->waiters_lock);
    loop->waiters_closed = true;
    future_waiter *list = loop->waiters;
    loop->waiters = NULL;
    for (future_waiter *w = list; w; w = w->next)
        w->closing = true;
    pthread_mutex_unlock(&loop->waiters_lock);

    while (list) {
        future_waiter *w = list;
        list = w->next;
        /* Unlinked: the hook never runs. Not linked: the resolver took it
         * and remove_hook returned after it ran, and it saw `closing`.
         * Either way w is ours. */
        iol__future_remove_hook(w->future, &w->hook);
        /* Not the last reference: whoever closes the loop holds one. */
        iol_loop_unref(w->loop);
        waiter_free(w);
    }
}

static int add_future(iol_loop *loop, iol_future *f, void (*fn)(iol_future *f, void *arg), void *arg,
                      void (*release)(void *arg))
{
    if (!loop || !f || !fn)
        return -EINVAL;
    /* acquire: as add_callback's own check; the decisive one is
     * waiters_closed below, or the queue's for a future done already. */
    if (atomic_load_explicit(&loop->closed, memory_order_acquire))
        return -ESHUTDOWN;

    future_waiter *w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    w->hook.fn = waiter_on_resolved;
    w->hook.arg = w;
    w->loop = iol_loop_ref(loop);
    w->future = iol_future_ref(f);
    w->fn = fn;
    w->arg = arg;

    /* The hook is linked under waiters_lock (lock order: waiters_lock,
     * then the future's), so a close either finds w on the list with its
     * hook linked, or came first and we refuse. A hook firing at once
     * waits for the lock and finds w on the list. */
    pthread_mutex_lock(&loop->waiters_lock);
    if (loop->waiters_closed) {
        pthread_mutex_unlock(&loop->waiters_lock);
        iol_loop_unref(loop);
        waiter_free(w); /* release is not set yet: the caller keeps arg */
        return -ESHUTDOWN;
    }
    if (iol__future_add_hook(f, &w->hook) == 0) {
        w->next = loop->waiters;
        if (w->next)
            w->next->prev = w;
        loop->waiters = w;
        w->release = release;
        pthread_mutex_unlock(&loop->waiters_lock);
        return 0;
    }
    pthread_mutex_unlock(&loop->waiters_lock);
    /* Done already: queue it now; it runs in the loop's next iteration,
     * never inside this call. release is set before the push: a queued
     * waiter may run, or be dropped by a close, at once. */
    w->release = release;
    iol_loop *keep = w->loop;
    int err = iol__loop_post(keep, waiter_run, w);
    if (err < 0) {
        w->release = NULL; /* refused: the caller keeps arg */
        waiter_free(w);
    }
    iol_loop_unref(keep);
    return err < 0 ? err : 0;
}

int iol_loop_add_future(iol_loop *loop, iol_future *f, void (*fn)(iol_future *f, void *arg), void *arg)
{
    return add_future(loop, f, fn, arg, NULL);
}

int iol_loop_add_future_ex(iol_loop *loop, iol_future *f, void (*fn)(iol_future *f, void *arg), void *arg,
                           void (*release)(void *arg))
{
    return add_future(loop, f, fn, arg, release);
}

bool iol__callback_dropped(iol_callback_fn fn, void *arg)
{
    if (fn == waiter_run) {
        /* Never ran: release its argument, drop its future reference. */
        waiter_free(arg);
        return true;
    }
    return iol__run_sync_callback_dropped(fn, arg);
}
