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

enum { FUTURE_PENDING = 0, FUTURE_DONE = 1 };

struct iol_future {
    _Atomic unsigned refs;
    _Atomic int state;        /* FUTURE_*; release-stored once, after result/err */
    pthread_mutex_t lock;     /* resolution vs. hooks */
    pthread_cond_t fired;     /* broadcast when `firing` goes false */
    void *result;             /* written under lock before state */
    int err;                  /* 0 or < 0, ditto */
    iol__future_hook *hooks;  /* under lock; taken (emptied) on resolution */
    bool firing;              /* under lock: the resolver is running hooks */
};

/* One add_future registration: a hook that moves it to the loop's queue. */
typedef struct future_waiter {
    iol__future_hook hook;
    iol_loop *loop;           /* referenced until queued (or failed) */
    iol_future *future;       /* referenced until fn ran (or failed) */
    void (*fn)(iol_future *f, void *arg);
    void *arg;
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

static int future_resolve(iol_future *f, void *result, int err)
{
    pthread_mutex_lock(&f->lock);
    /* relaxed: state only changes under the lock we hold. */
    if (atomic_load_explicit(&f->state, memory_order_relaxed) != FUTURE_PENDING) {
        pthread_mutex_unlock(&f->lock);
        return -EALREADY;
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
    return future_resolve(f, result, 0);
}

int iol_future_set_error(iol_future *f, int err)
{
    if (!f || err >= 0)
        return -EINVAL;
    return future_resolve(f, NULL, err);
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
    if (atomic_load_explicit(&f->state, memory_order_relaxed) != FUTURE_PENDING) {
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

static void waiter_free(future_waiter *w)
{
    iol_future_unref(w->future);
    free(w);
}

/* On the loop's thread, a later iteration than the registration. */
static void waiter_run(void *arg)
{
    future_waiter *w = arg;
    w->fn(w->future, w->arg);
    waiter_free(w);
}

/* Moves w to its loop's queue; frees it if the loop is gone. Returns the
 * add_callback result. The loop reference is dropped either way: a queued
 * callback needs none (the loop runs it, so it is alive), and holding one
 * in the queue would keep a loop that is closed before running it alive
 * forever. */
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

/* Hook: runs in the resolver (see loop/future.h). The resolver holds its
 * own reference to f, so waiter_free's unref is never the last one here. */
static void waiter_on_resolved(iol_future *f, void *arg)
{
    (void)f;
    future_waiter *w = arg;
    int err = waiter_queue(w);
    if (err == -ENOMEM)
        iol__log(IOL_LOG_ERROR, "future done-callback dropped: out of memory");
    /* -ESHUTDOWN: the loop was closed meanwhile; dropping the callback is
     * what close does to every pending one. */
}

int iol_loop_add_future(iol_loop *loop, iol_future *f, void (*fn)(iol_future *f, void *arg), void *arg)
{
    if (!loop || !f || !fn)
        return -EINVAL;
    /* acquire: as add_callback's own check. A close racing with this call
     * is covered later: queuing then fails with -ESHUTDOWN and the waiter
     * is freed. */
    if (atomic_load_explicit(&loop->closed, memory_order_acquire))
        return -ESHUTDOWN;

    future_waiter *w = malloc(sizeof(*w));
    if (!w)
        return -ENOMEM;
    w->hook.fn = waiter_on_resolved;
    w->hook.arg = w;
    w->hook.next = NULL;
    w->loop = iol_loop_ref(loop);
    w->future = iol_future_ref(f);
    w->fn = fn;
    w->arg = arg;

    if (iol__future_add_hook(f, &w->hook) == 0)
        return 0;
    /* Done already: queue it now; it runs in the loop's next iteration,
     * never inside this call. */
    return waiter_queue(w);
}

bool iol__callback_dropped(iol_callback_fn fn, void *arg)
{
    if (fn == waiter_run) {
        /* Never ran: drop its future reference like waiter_run would. */
        waiter_free(arg);
        return true;
    }
    return iol__run_sync_callback_dropped(fn, arg);
}
