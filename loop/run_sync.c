/* loop/ — iol_loop_run_sync: start the loop, run fn as a callback, stop
 * when its `done` future resolves (or fn fails, or the timeout fires).
 *
 * The stop on resolution is a future hook (loop/future.h) calling
 * iol_loop_stop from the resolving thread, rather than an add_future
 * callback: a hook can be unlinked for sure, so once run_sync returns
 * nothing of it is left on the loop or on `done` (except in one rare case
 * below) and a late resolution cannot stop a later run of the loop.
 *
 * The state lives on the heap because fn's callback may outlive the call:
 * if a stop was pending before run_sync, start returns at once and the
 * callback stays queued for the next start, where it sees `active` false
 * and only drops its reference (or the loop's teardown drops it through
 * iol__callback_dropped). */
#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "ioloop.h"
#include "loop/future.h"
#include "loop/loop_impl.h"

typedef struct run_sync_state {
    /* Two references: run_sync's frame and the queued fn callback, which
     * may run in a later start on another thread. */
    _Atomic unsigned refs;
    iol_loop *loop;
    int (*fn)(iol_loop *loop, iol_future *done, void *arg);
    void *arg;
    iol_future *done;          /* the frame's reference */
    iol__future_hook hook;     /* done resolved -> stop */
    /* Loop-thread fields; the loop's running flag (release at the end of
     * start, acquire at the next) orders them for a later run elsewhere. */
    bool active;               /* run_sync is still inside start */
    int fn_rc;                 /* fn's return when < 0, else 0 */
    bool timed_out;
} run_sync_state;

static void run_sync_state_unref(run_sync_state *st)
{
    /* acq_rel: the last owner sees the other's writes before freeing. */
    if (atomic_fetch_sub_explicit(&st->refs, 1, memory_order_acq_rel) == 1)
        free(st);
}

/* Hook: in the resolving thread, under done's lock. stop is any-thread. */
static void run_sync_on_done(iol_future *f, void *arg)
{
    (void)f;
    run_sync_state *st = arg;
    iol_loop_stop(st->loop);
}

/* Ends the run for a reason other than `done`. Unlinking the hook first
 * means a resolution racing with us cannot stop the loop after this run
 * has returned (that stop would make the next start return at once). */
static void run_sync_finish(run_sync_state *st)
{
    iol__future_remove_hook(st->done, &st->hook);
    iol_loop_stop(st->loop);
}

static void run_sync_call_fn(void *arg)
{
    run_sync_state *st = arg;
    if (st->active) {
        int rc = st->fn(st->loop, st->done, st->arg);
        if (rc < 0) {
            st->fn_rc = rc;
            run_sync_finish(st);
        }
    }
    run_sync_state_unref(st);
}

bool iol__run_sync_callback_dropped(iol_callback_fn fn, void *arg)
{
    if (fn != run_sync_call_fn)
        return false;
    run_sync_state_unref(arg);
    return true;
}

static void run_sync_on_timeout(void *arg)
{
    run_sync_state *st = arg;
    st->timed_out = true;
    run_sync_finish(st);
}

int iol_loop_run_sync(iol_loop *loop, int (*fn)(iol_loop *loop, iol_future *done, void *arg), void *arg,
                      double timeout, void **result)
{
    if (!loop || !fn || isnan(timeout))
        return -EINVAL;
    /* Claim the loop before putting anything on it: once claimed, no other
     * thread can start it, so the timer and the callback below can only
     * run in our own run (or be dropped with the loop). */
    int err = iol__loop_claim(loop);
    if (err)
        return err;

    run_sync_state *st = calloc(1, sizeof(*st));
    if (!st) {
        iol__loop_release(loop);
        return -ENOMEM;
    }
    if ((err = iol_future_new(&st->done)) < 0) {
        free(st);
        iol__loop_release(loop);
        return err;
    }
    atomic_init(&st->refs, 1);
    st->loop = loop;
    st->fn = fn;
    st->arg = arg;
    st->active = true;
    st->hook.fn = run_sync_on_done;
    st->hook.arg = st;
    /* Cannot fail: done is ours and still pending. */
    iol__future_add_hook(st->done, &st->hook);

    iol_timeout timer = 0;
    if (timeout > 0 && isfinite(timeout) &&
        (err = iol_loop_call_later(loop, timeout, run_sync_on_timeout, st, &timer)) < 0)
        goto fail;
    /* relaxed: the queue push publishes st to the loop thread. */
    atomic_fetch_add_explicit(&st->refs, 1, memory_order_relaxed);
    if ((err = iol__loop_post(loop, run_sync_call_fn, st)) < 0) {
        atomic_fetch_sub_explicit(&st->refs, 1, memory_order_relaxed);
        goto fail;
    }

    /* The run makes the loop current and restores the previous one. */
    err = iol__loop_run(loop);
    st->active = false;
    if (timer && !st->timed_out)
        (void)iol_loop_remove_timeout(loop, timer);
    iol__future_remove_hook(st->done, &st->hook);

    if (err < 0) {
        /* the poller failed */
    } else if (st->fn_rc < 0) {
        err = st->fn_rc;
    } else {
        void *value = NULL;
        err = iol_future_result(st->done, &value);
        if (err == -EAGAIN)
            err = -ETIMEDOUT; /* timed out, or stopped by someone else (as Tornado) */
        else if (err == 0 && result)
            *result = value;
    }
    iol_future_unref(st->done);
    run_sync_state_unref(st);
    iol__loop_release(loop);
    return err;

fail:
    if (timer)
        (void)iol_loop_remove_timeout(loop, timer);
    iol__future_remove_hook(st->done, &st->hook);
    iol_future_unref(st->done);
    run_sync_state_unref(st);
    iol__loop_release(loop);
    return err;
}
