/* loop/ — internal completion hooks of iol_future (loop/future.c).
 *
 * A hook runs once, on the thread that resolves the future, right after
 * the result is published and outside the future's lock. It must not
 * remove itself (remove_hook waits for running hooks) and should be short:
 * a remove_hook on another thread waits for it. A successful remove
 * guarantees the hook will not run; a failed one that it has run and
 * returned.
 */
#ifndef IOL_FUTURE_H
#define IOL_FUTURE_H

#include <stdbool.h>

#include "ioloop.h"

typedef struct iol__future_hook {
    void (*fn)(iol_future *f, void *arg);
    void *arg;
    struct iol__future_hook *next; /* owned by the future while linked */
} iol__future_hook;

/* Links h (caller-owned memory, must outlive it being linked) so that
 * h->fn runs once f resolves. 0, or -EALREADY if f is done already (h is
 * not linked and will not run). */
int iol__future_add_hook(iol_future *f, iol__future_hook *h);
/* Unlinks h. true if it was linked (it will not run); false if it has run
 * already (it is not running any more). */
bool iol__future_remove_hook(iol_future *f, iol__future_hook *h);

/* For the loop's teardown: (fn, arg) was queued with add_callback and is
 * being dropped without running (close, or the last unref). Releases what
 * add_future and run_sync put in the queue (a waiter holding a future
 * reference, run_sync's state); ignores every other callback. true if it
 * was one of those. Any thread; touches no loop. */
bool iol__callback_dropped(iol_callback_fn fn, void *arg);
/* run_sync's part of the above (loop/run_sync.c). */
bool iol__run_sync_callback_dropped(iol_callback_fn fn, void *arg);
/* For the loop's close (after `closed` is set): every add_future
 * registration whose future has not resolved gives up: its callback never
 * runs, its release function (if any) runs now, on this thread; later
 * registrations get -ESHUTDOWN. */
void iol__loop_release_waiters(iol_loop *loop);

/* For the executor, when a worker takes the job of f: moves f from
 * pending to running, after which iol_future_cancel refuses (-EBUSY).
 * false if f is done already (cancelled): the job must not run. */
bool iol__future_start_running(iol_future *f);

#endif
