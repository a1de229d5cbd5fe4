/* sync/ — the eventfd waker with wakeup coalescing: at most one eventfd
 * write per sleep of the consumer. The memory-ordering argument is in
 * waker.c. */
#ifndef IOL_WAKER_H
#define IOL_WAKER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct iol__waker {
    int fd;                   /* eventfd, EFD_NONBLOCK|EFD_CLOEXEC */
    _Atomic unsigned state;   /* see waker.c */
    _Atomic uint64_t writes;  /* eventfd writes made, for benchmarks */
    _Atomic uint64_t messages; /* wakes claimed for another delivery (statistics) */
    _Atomic uint64_t stray;   /* eventfd writes made for a claim by_message */
    uint64_t owed;            /* consumer-private: writes won but not yet drained */
    bool edge;                /* the fd is polled edge-triggered: drain rarely */
} iol__waker;

/* 0 or -errno of eventfd. */
int iol__waker_init(iol__waker *w);
/* Closes the eventfd (only when no producer can wake any more). */
void iol__waker_destroy(iol__waker *w);
static inline int iol__waker_fd(const iol__waker *w) { return w->fd; }

/* The consumer polls the eventfd edge-triggered (a write raises one event
 * whatever the counter holds): finish_sleep then reads it only once
 * IOL__WAKER_DRAIN_AT writes are owed, not after every wakeup. Call
 * before the first sleep. */
#define IOL__WAKER_DRAIN_AT 4096u
void iol__waker_set_edge(iol__waker *w);
/* Consumer, before polling: announces the sleep with a full fence. The
 * caller MUST re-check its queue and stop flag after this and poll with
 * timeout 0 if there is work. */
void iol__waker_prepare_sleep(iol__waker *w);
/* Consumer, after polling: ends the sleep; drains the eventfd if a
 * producer wrote it. */
void iol__waker_finish_sleep(iol__waker *w);
/* Producer, after making work visible (a queue push, a stop flag store):
 * writes the eventfd only if the consumer announced a sleep and nobody has
 * written since. Async-signal-safe. */
void iol__waker_wake(iol__waker *w);
/* Same as wake, without its leading full fence, for a caller whose
 * publication was a seq_cst atomic store or read-modify-write, such as
 * iol__cbqueue_push and iol__cbqueue_push_signal (their tail exchange is
 * seq_cst). Saves an mfence per post on x86. Async-signal-safe. */
void iol__waker_wake_after_push(iol__waker *w);
/* The two halves of wake_after_push, for a producer that can deliver the
 * wakeup another way than the eventfd (an io_uring message, the loop's
 * choice: sync/ knows only that it is not the eventfd). claim: the state
 * transition alone; true when this call won this sleep's one wakeup, which
 * the caller MUST then deliver. by_message: the caller delivers it itself
 * (the consumer's eventfd books do not count it); false: deliver with
 * iol__waker_deliver. Same preconditions as wake_after_push. */
bool iol__waker_claim_after_push(iol__waker *w, bool by_message);
/* The eventfd write owed for a claim made with by_message false. */
void iol__waker_deliver(iol__waker *w);
/* The eventfd write for a claim made with by_message true whose own
 * delivery failed (or might have): counted so the consumer drains it. */
void iol__waker_deliver_stray(iol__waker *w);
/* eventfd writes so far. */
uint64_t iol__waker_writes(const iol__waker *w);
/* Wakes claimed by_message so far. */
uint64_t iol__waker_messages(const iol__waker *w);

#endif
