/* loop/ — a thread pool (Tornado's run_in_executor) and the loop's
 * default executor.
 *
 * One mutex + condvar guards a FIFO of work items; workers sleep on the
 * condvar. Shutdown drains the queue before the workers exit, so free
 * finishes queued work, except jobs whose future was cancelled before a
 * worker took them (skipped: fn never runs) and, with free_cancel, every
 * job still queued (cancelled there).
 * Threads start on demand, up to the pool's size: a submission starts one
 * when the queue would hold more items than there are workers not busy
 * with one (a worker signalled but not yet awake is not busy, and its
 * item still queued, so a burst of N submissions starts N threads, never
 * more). So a pool never used costs no thread: every loop has a default
 * executor sized to the CPUs, and a runtime of N workers that each look
 * up a name once holds N threads, not N times the CPUs. Results travel through iol_future, which is itself
 * thread-safe; the loop only sees them through add_future. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ioloop.h"
#include "loop/future.h"
#include "loop/log.h"
#include "loop/loop_impl.h"

#define EXECUTOR_MAX_THREADS 1024

typedef struct executor_work {
    int (*fn)(void *arg, void **result);
    void *arg;
    iol_future *future;           /* the work's own reference */
    struct executor_work *next;
} executor_work;

struct iol_executor {
    pthread_mutex_t lock;
    pthread_cond_t cond;          /* work queued or shutdown */
    executor_work *head, *tail;   /* under lock */
    bool shutdown;                /* under lock: no new work, exit when drained */
    bool detached;                /* under lock: freed from a worker; the last one out frees */
    unsigned live;                /* under lock: workers not yet out of their loop */
    unsigned queued;              /* under lock: items in head..tail */
    unsigned busy;                /* under lock: workers running an item */
    unsigned max;                 /* the pool's size */
    unsigned nthreads;            /* under lock: started (threads[0..nthreads)) */
    pthread_t threads[];
};

static void executor_destroy(iol_executor *ex)
{
    pthread_cond_destroy(&ex->cond);
    pthread_mutex_destroy(&ex->lock);
    free(ex);
}

/* Runs w outside the lock. The worker counts as free again before the
 * future resolves: whoever waits for it (a loop) may submit the next item
 * at once, and that item must find this worker, not start another. */
static void executor_run_work(iol_executor *ex, executor_work *w)
{
    void *result = NULL;
    /* The future decides between this worker and iol_future_cancel: once
     * running, cancel refuses; once cancelled, fn never runs. */
    bool run = iol__future_start_running(w->future);
    int rc = run ? w->fn(w->arg, &result) : 0;
    pthread_mutex_lock(&ex->lock);
    ex->busy--;
    pthread_mutex_unlock(&ex->lock);
    if (!run)
        ; /* cancelled: resolved already */
    else if (rc < 0)
        iol_future_set_error(w->future, rc);
    else
        iol_future_set_result(w->future, result);
    iol_future_unref(w->future);
    free(w);
}

static void *executor_worker(void *arg)
{
    iol_executor *ex = arg;
    pthread_mutex_lock(&ex->lock);
    for (;;) {
        while (!ex->head && !ex->shutdown)
            pthread_cond_wait(&ex->cond, &ex->lock);
        executor_work *w = ex->head;
        if (!w)
            break; /* shutdown and drained */
        ex->queued--;
        ex->busy++;
        ex->head = w->next;
        if (!ex->head)
            ex->tail = NULL;
        pthread_mutex_unlock(&ex->lock);
        executor_run_work(ex, w);
        pthread_mutex_lock(&ex->lock);
    }
    ex->live--;
    bool free_it = ex->detached && ex->live == 0;
    pthread_mutex_unlock(&ex->lock);
    if (free_it)
        executor_destroy(ex);
    return NULL;
}

/* Sets shutdown and wakes every worker; they drain the queue and exit. */
static void executor_shutdown_locked(iol_executor *ex)
{
    ex->shutdown = true;
    pthread_cond_broadcast(&ex->cond);
}

/* After shutdown, when no thread starts any more. */
static void executor_join_all(iol_executor *ex)
{
    pthread_mutex_lock(&ex->lock);
    unsigned n = ex->nthreads;
    pthread_mutex_unlock(&ex->lock);
    for (unsigned i = 0; i < n; i++)
        pthread_join(ex->threads[i], NULL);
}

int iol_executor_new(iol_executor **out, unsigned threads)
{
    if (!out || threads > EXECUTOR_MAX_THREADS)
        return -EINVAL;

    if (threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n < 1 ? 1 : n > EXECUTOR_MAX_THREADS ? EXECUTOR_MAX_THREADS : (unsigned)n;
    }
    iol_executor *ex = calloc(1, sizeof(*ex) + threads * sizeof(pthread_t));
    if (!ex)
        return -ENOMEM;
    int err = pthread_mutex_init(&ex->lock, NULL);
    if (err) {
        free(ex);
        return -err;
    }
    if ((err = pthread_cond_init(&ex->cond, NULL))) {
        pthread_mutex_destroy(&ex->lock);
        free(ex);
        return -err;
    }
    ex->max = threads;
    *out = ex;
    return 0;
}

/* Under lock: one more worker. Workers start with every signal blocked,
 * so process-directed signals go to the application's threads, never into
 * a pool thread that is running someone else's blocking work. 0 or the
 * -errno of pthread_create. */
static int executor_start_thread_locked(iol_executor *ex)
{
    sigset_t all, saved;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &saved);
    int err = pthread_create(&ex->threads[ex->nthreads], NULL, executor_worker, ex);
    pthread_sigmask(SIG_SETMASK, &saved, NULL);
    if (err)
        return -err;
    ex->nthreads++;
    ex->live++;
    return 0;
}

static bool executor_is_own_thread(const iol_executor *ex)
{
    pthread_t self = pthread_self();
    for (unsigned i = 0; i < ex->nthreads; i++)
        if (pthread_equal(ex->threads[i], self))
            return true;
    return false;
}

/* Cancels the jobs of list (taken off the queue): their futures resolve
 * with -ECANCELED, fn never runs. Outside the pool's lock: resolving runs
 * the futures' hooks (add_future queues on loops). */
static void executor_cancel_queued(executor_work *list)
{
    while (list) {
        executor_work *w = list;
        list = w->next;
        iol_future_cancel(w->future); /* -EALREADY if the caller resolved it: fine */
        iol_future_unref(w->future);
        free(w);
    }
}

static void executor_free(iol_executor *ex, bool cancel)
{
    if (!ex)
        return;
    pthread_mutex_lock(&ex->lock);
    executor_shutdown_locked(ex);
    executor_work *cancelled = NULL;
    if (cancel) {
        cancelled = ex->head;
        ex->head = ex->tail = NULL;
        ex->queued = 0;
    }
    pthread_mutex_unlock(&ex->lock);
    executor_cancel_queued(cancelled);
    pthread_mutex_lock(&ex->lock);
    if (executor_is_own_thread(ex)) {
        /* Documented as not allowed, but a loop's last unref can land on
         * a pool thread. Joining ourselves would deadlock: detach instead
         * and let the last worker out free the pool. The lock keeps every
         * worker (this one included) from getting there before the loop
         * below is done. */
        ex->detached = true;
        for (unsigned i = 0; i < ex->nthreads; i++)
            pthread_detach(ex->threads[i]);
        pthread_mutex_unlock(&ex->lock);
        return;
    }
    pthread_mutex_unlock(&ex->lock);
    executor_join_all(ex);
    executor_destroy(ex);
}

void iol_executor_free(iol_executor *ex)
{
    executor_free(ex, false);
}

void iol_executor_free_cancel(iol_executor *ex)
{
    executor_free(ex, true);
}

void iol__executor_free_owned(struct iol_executor *ex)
{
    iol_executor_free(ex);
}

int iol_loop_set_default_executor(iol_loop *loop, iol_executor *ex)
{
    if (!loop || !ex)
        return -EINVAL;
    int err = iol__loop_check(loop);
    if (err)
        return err;

    if (loop->default_executor_owned && loop->default_executor != ex)
        iol_executor_free(loop->default_executor); /* the loop's own: nobody else holds it */
    loop->default_executor = ex;
    loop->default_executor_owned = false;
    return 0;
}

/* The loop's default executor, created on first use. Owner thread. */
static int executor_default(iol_loop *loop, iol_executor **out)
{
    if (!loop->default_executor) {
        iol_executor *ex;
        int err = iol_executor_new(&ex, 0);
        if (err < 0)
            return err;
        loop->default_executor = ex;
        loop->default_executor_owned = true;
    }
    *out = loop->default_executor;
    return 0;
}

int iol_loop_run_in_executor(iol_loop *loop, iol_executor *ex, int (*fn)(void *arg, void **result), void *arg,
                             iol_future **out)
{
    if (!loop || !fn || !out)
        return -EINVAL;
    int err = iol__loop_check(loop);
    if (err)
        return err;

    if (!ex && (err = executor_default(loop, &ex)) < 0)
        return err;
    iol_future *f;
    if ((err = iol_future_new(&f)) < 0)
        return err;
    executor_work *w = malloc(sizeof(*w));
    if (!w) {
        iol_future_unref(f);
        return -ENOMEM;
    }
    w->fn = fn;
    w->arg = arg;
    w->future = iol_future_ref(f);
    w->next = NULL;

    pthread_mutex_lock(&ex->lock);
    if (ex->shutdown) {
        /* Being freed (e.g. work queued from a worker during free). */
        pthread_mutex_unlock(&ex->lock);
        iol_future_unref(w->future);
        free(w);
        iol_future_unref(f);
        return -ESHUTDOWN;
    }
    if (ex->queued >= ex->nthreads - ex->busy && ex->nthreads < ex->max) {
        /* More items than free workers once this one is in: start one. If
         * none can start and none runs, nothing would ever take it. */
        err = executor_start_thread_locked(ex);
        if (err < 0 && ex->nthreads == 0) {
            pthread_mutex_unlock(&ex->lock);
            iol_future_unref(w->future);
            free(w);
            iol_future_unref(f);
            return err;
        }
    }
    if (ex->tail)
        ex->tail->next = w;
    else
        ex->head = w;
    ex->tail = w;
    ex->queued++;
    pthread_cond_signal(&ex->cond);
    pthread_mutex_unlock(&ex->lock);
    *out = f;
    return 0;
}
