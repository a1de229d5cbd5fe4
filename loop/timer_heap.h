/* loop/ — the timeout heap: a binary min-heap of (deadline, insertion seq)
 * over a slab of slots. Handles carry the slot's generation, so a fired,
 * removed or unknown handle is recognised without touching freed memory.
 * Cancelled timeouts leave the heap at once (O(log n)), so memory stays
 * bounded under add/remove churn. Single-threaded: the loop's owner. */
#ifndef IOL_TIMER_HEAP_H
#define IOL_TIMER_HEAP_H

#include <stddef.h>
#include <stdint.h>

#include "ioloop.h"

typedef struct iol__heap_entry {
    double when;
    uint64_t seq;  /* insertion order: equal deadlines fire FIFO */
    uint32_t slot;
} iol__heap_entry;

typedef struct iol__timer_slot {
    iol_callback_fn fn; /* NULL: the slot is free */
    void *arg;
    uint32_t heap_index; /* position in heap, or next free slot when free */
    uint32_t gen;        /* bumped each time the slot is released */
} iol__timer_slot;

typedef struct iol__timer_heap {
    iol__heap_entry *heap;
    size_t len, cap;
    iol__timer_slot *slots;
    uint32_t nslots, slots_cap;
    uint32_t free_head; /* UINT32_MAX: no free slot */
    uint64_t next_seq;
} iol__timer_heap;

void iol__timer_heap_init(iol__timer_heap *h);
void iol__timer_heap_destroy(iol__timer_heap *h);
/* 0 with *out set, or -ENOMEM. */
int iol__timer_heap_add(iol__timer_heap *h, double when, iol_callback_fn fn, void *arg, iol_timeout *out);
/* 0 or -ENOENT. */
int iol__timer_heap_remove(iol__timer_heap *h, iol_timeout t);
static inline size_t iol__timer_heap_len(const iol__timer_heap *h) { return h->len; }
/* Earliest deadline; only when len > 0. */
static inline double iol__timer_heap_next(const iol__timer_heap *h) { return h->heap[0].when; }
/* Pops the earliest timeout if it is due at now and was added before the
 * seq mark (timeouts added while running wait for the next iteration). */
int iol__timer_heap_pop_due(iol__timer_heap *h, double now, uint64_t mark, iol_callback_fn *fn, void **arg);
/* The next insertion's seq: the mark for this iteration. */
static inline uint64_t iol__timer_heap_mark(const iol__timer_heap *h) { return h->next_seq; }

#endif
