/* loop/ — the timeout heap: a 4-ary min-heap of 16-byte keys (deadline,
 * 32-bit insertion seq, slot) over slots (fn, arg, generation) kept in
 * fixed chunks of 4096. 36 bytes per timeout: 16 of key (the heap array
 * doubles) and 20 of slot (chunks: at most one partly unused).
 *
 * The heap keys hold everything a sift compares and moves, so sifts touch
 * only the heap array (no back-pointers to keep up to date). The price is
 * lazy cancel: remove clears the slot's fn and leaves its key in the heap
 * as dead; dead keys are dropped when they reach the top, and all at once
 * (O(n) rebuild) when they outnumber the live ones, so memory stays bounded
 * under add/remove churn (at most 2 x live + 32 keys) and each remove costs
 * O(1) amortized. A dead key at the top is dropped when the top is next
 * read (iol__timer_heap_next, pop_due), not by the remove: cancelling the
 * earliest timeouts one after another (libuv's million_timers cancels in
 * deadline order) then costs O(1) each instead of a pop each, and the
 * loop, which reads the top once per iteration, still never sees a dead
 * one.
 *
 * Handles carry the slot's generation (bumped when a slot is reused), so a
 * fired, removed or unknown handle is recognised without touching freed
 * memory. seq wraps at 2^32: the heap then renumbers its keys by rank, which
 * keeps every comparison and the pass mark. Single-threaded: the loop's
 * owner. */
#ifndef IOL_TIMER_HEAP_H
#define IOL_TIMER_HEAP_H

#include <stddef.h>
#include <stdint.h>

#include "ioloop.h"

typedef struct iol__heap_entry {
    double when;
    uint32_t seq; /* insertion order: equal deadlines fire FIFO */
    uint32_t slot;
} iol__heap_entry;

typedef struct iol__timer_slot {
    iol_callback_fn fn; /* NULL: cancelled (key still in the heap) or free */
    void *arg;          /* free slots: the next free slot */
} iol__timer_slot;

/* Slots come in fixed chunks: they never move, so growth copies nothing. */
#define IOL__SLOT_CHUNK 4096u
typedef struct iol__timer_chunk {
    iol__timer_slot slots[IOL__SLOT_CHUNK];
    uint32_t gens[IOL__SLOT_CHUNK]; /* bumped when a slot is reused */
} iol__timer_chunk;

typedef struct iol__timer_heap {
    iol__heap_entry *heap;
    uint32_t len, cap; /* keys in the heap, live and dead */
    uint32_t dead;     /* cancelled keys still in the heap */
    iol__timer_chunk **chunks;
    uint32_t chunks_cap;
    uint32_t nslots;    /* slots ever handed out: chunks [0, ceil(nslots / CHUNK)) */
    uint32_t free_head; /* UINT32_MAX: no free slot */
    uint32_t next_seq;
    uint32_t mark;      /* pass mark: keys with seq >= mark wait */
} iol__timer_heap;

void iol__timer_heap_init(iol__timer_heap *h);
void iol__timer_heap_destroy(iol__timer_heap *h);
/* 0 with *out set, or -ENOMEM. */
int iol__timer_heap_add(iol__timer_heap *h, double when, iol_callback_fn fn, void *arg, iol_timeout *out);
/* 0 or -ENOENT. */
int iol__timer_heap_remove(iol__timer_heap *h, iol_timeout t);
/* Pending (live) timeouts. */
static inline size_t iol__timer_heap_len(const iol__timer_heap *h) { return h->len - h->dead; }
/* Earliest live deadline; only when len > 0. Drops dead keys that
 * reached the top first. */
double iol__timer_heap_next(iol__timer_heap *h);
/* Starts a pass over the due timeouts: those added from now on wait for
 * the next pass. */
static inline void iol__timer_heap_begin_pass(iol__timer_heap *h) { h->mark = h->next_seq; }
/* Pops the earliest timeout if it is due at now and was added before the
 * pass began. */
int iol__timer_heap_pop_due(iol__timer_heap *h, double now, iol_callback_fn *fn, void **arg);

#endif
