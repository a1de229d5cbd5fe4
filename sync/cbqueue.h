/* sync/ — the cross-thread callback queue (MPSC, lock-free for producers).
 * Knows queues and nodes, never the loop's state or users' fds. */
#ifndef IOL_CBQUEUE_H
#define IOL_CBQUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ioloop.h"

typedef struct iol__cbqueue iol__cbqueue;
typedef struct iol__cbbatch iol__cbbatch;

/* Creates a queue with signal_reserve preallocated entries for
 * push_signal (0 means 256). 0 or -ENOMEM. */
int iol__cbqueue_new(iol__cbqueue **out, unsigned signal_reserve);
/* Frees the queue and any node still in it, without running them.
 * Only when no producer can push any more (last reference gone). */
void iol__cbqueue_free(iol__cbqueue *q);

/* Any thread. Appends fn(arg). 0 or -ENOMEM. Per-producer FIFO. */
int iol__cbqueue_push(iol__cbqueue *q, iol_callback_fn fn, void *arg);
/* Any thread and signal handlers: no malloc, no lock. 0 or -EAGAIN when
 * the reserve is exhausted. */
int iol__cbqueue_push_signal(iol__cbqueue *q, iol_callback_fn fn, void *arg);

/* Consumer only: true if nothing is queued (a racing push may be missed;
 * the waker protocol covers that). */
bool iol__cbqueue_empty(iol__cbqueue *q);
/* Consumer only: true if a take would find work. Cheaper than !empty()
 * for a spinning consumer: it reads only the consumer's line, never the
 * tail that every push exchanges, so watching an empty queue does not
 * pull that line away from the producers. It misses a push still inside
 * its two-instruction window, and it is no half of the waker's Dekker
 * pair: a spin may use it, the sleep decision must use empty(). */
bool iol__cbqueue_peek(iol__cbqueue *q);
/* Consumer only: whether a take would find work, and whether the oldest
 * callback queued was pushed by another thread (a producer streaming
 * posts) or by the calling thread itself (or a signal handler). */
enum iol__cbqueue_origin { IOL__CBQ_EMPTY, IOL__CBQ_OWN, IOL__CBQ_OTHER };
enum iol__cbqueue_origin iol__cbqueue_peek_origin(iol__cbqueue *q);

/* Consumer only. Takes every callback queued so far into a batch that the
 * consumer then drains with next(); pushes made meanwhile stay in the
 * queue for the next take. Returns false if nothing was queued. A batch
 * must be drained (next() until it returns false) or passed to drop():
 * used nodes go back to their producers when the batch runs dry. Take and
 * next never sleep; they may spin for the two-instruction window of a
 * producer that is mid-push (see sync/cbqueue.c). */
bool iol__cbqueue_take(iol__cbqueue *q, iol__cbbatch *b);
/* Consumer only. Pops the next callback of the batch (recycling its node);
 * false when the batch is empty. */
bool iol__cbbatch_next(iol__cbbatch *b, iol_callback_fn *fn, void **arg);

/* Consumer only: discards every queued callback (and any in a batch not yet
 * drained, if b is non-NULL) without running it; returns how many. If
 * on_drop is non-NULL it is told of each one, so callbacks that own
 * resources can release them (its return value is ignored). */
size_t iol__cbqueue_drop(iol__cbqueue *q, iol__cbbatch *b, bool (*on_drop)(iol_callback_fn fn, void *arg));

#include "sync/cbqueue_impl.h" /* struct iol__cbbatch, so callers can put it on the stack */

#endif
