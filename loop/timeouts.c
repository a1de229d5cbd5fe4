#include "loop/timer_heap.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

#define NO_SLOT UINT32_MAX
#define ARITY 4 /* 4 keys = one 64-byte line; half the levels of a binary heap */
/* Rebuild when dead keys reach this many and outnumber the live ones. */
#define COMPACT_MIN 32
#define PREFETCH_AHEAD 16

static inline iol__timer_slot *slot_at(const iol__timer_heap *h, uint32_t slot)
{
    return &h->chunks[slot / IOL__SLOT_CHUNK]->slots[slot % IOL__SLOT_CHUNK];
}

static inline uint32_t *gen_at(const iol__timer_heap *h, uint32_t slot)
{
    return &h->chunks[slot / IOL__SLOT_CHUNK]->gens[slot % IOL__SLOT_CHUNK];
}

/* Handle layout: generation in the high 32 bits, slot + 1 in the low 32,
 * so 0 is never valid. */
static inline iol_timeout make_handle(uint32_t slot, uint32_t gen)
{
    return ((uint64_t)gen << 32) | ((uint64_t)slot + 1);
}

static inline bool entry_less(const iol__heap_entry *a, const iol__heap_entry *b)
{
    return a->when < b->when || (a->when == b->when && a->seq < b->seq);
}

static void sift_up(iol__heap_entry *heap, uint32_t i, iol__heap_entry e)
{
    while (i > 0) {
        uint32_t parent = (i - 1) / ARITY;
        if (!entry_less(&e, &heap[parent]))
            break;
        heap[i] = heap[parent];
        i = parent;
    }
    heap[i] = e;
}

/* Places e at hole i or below. */
static void sift_down(iol__heap_entry *heap, uint32_t len, uint32_t i, iol__heap_entry e)
{
    for (;;) {
        size_t first = (size_t)ARITY * i + 1;
        if (first >= len)
            break;
        size_t end = first + ARITY < len ? first + ARITY : len;
        size_t min = first;
        for (size_t c = first + 1; c < end; c++)
            if (entry_less(&heap[c], &heap[min]))
                min = c;
        if (!entry_less(&heap[min], &e))
            break;
        heap[i] = heap[min];
        i = (uint32_t)min;
    }
    heap[i] = e;
}

static void heapify(iol__timer_heap *h)
{
    if (h->len < 2)
        return;
    for (uint32_t i = (h->len - 2) / ARITY + 1; i-- > 0;)
        sift_down(h->heap, h->len, i, h->heap[i]);
}

static void slot_free(iol__timer_heap *h, uint32_t slot)
{
    iol__timer_slot *s = slot_at(h, slot);
    s->fn = NULL;
    s->arg = (void *)(uintptr_t)h->free_head;
    h->free_head = slot;
}

/* Pops the top. The last key is usually among the largest, so the hole
 * goes down to a leaf along the smaller children without comparing it,
 * and the key then rises from there (fewer compares than sift_down). */
static void pop_top(iol__timer_heap *h)
{
    uint32_t len = --h->len;
    if (len == 0)
        return;
    iol__heap_entry *heap = h->heap;
    uint32_t i = 0;
    for (;;) {
        size_t first = (size_t)ARITY * i + 1;
        if (first >= len)
            break;
        size_t end = first + ARITY < len ? first + ARITY : len;
        /* The next level is a miss in big heaps: ask for every candidate
         * group while these compares run. */
        for (size_t c = first; c < end && ARITY * c + 1 < len; c++)
            __builtin_prefetch(&heap[ARITY * c + 1]);
        size_t min = first;
        for (size_t c = first + 1; c < end; c++)
            if (entry_less(&heap[c], &heap[min]))
                min = c;
        heap[i] = heap[min];
        i = (uint32_t)min;
    }
    sift_up(heap, i, heap[len]);
}

/* Drops dead keys that reached the top (before the top is read). */
static void purge_top(iol__timer_heap *h)
{
    while (h->len > 0 && !slot_at(h, h->heap[0].slot)->fn) {
        slot_free(h, h->heap[0].slot);
        h->dead--;
        pop_top(h);
    }
}

/* Drops every dead key and rebuilds the heap: O(len). */
static void compact(iol__timer_heap *h)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < h->len; i++) {
        /* The slots are read in random order: ask for them early. */
        if (i + PREFETCH_AHEAD < h->len)
            __builtin_prefetch(slot_at(h, h->heap[i + PREFETCH_AHEAD].slot));
        iol__heap_entry e = h->heap[i];
        if (slot_at(h, e.slot)->fn)
            h->heap[n++] = e;
        else
            slot_free(h, e.slot);
    }
    h->len = n;
    h->dead = 0;
    heapify(h);
}

static int cmp_seq(const void *a, const void *b)
{
    uint32_t x = ((const iol__heap_entry *)a)->seq, y = ((const iol__heap_entry *)b)->seq;
    return (x > y) - (x < y);
}

/* seq is about to wrap: replace each key's seq by its rank among the keys'
 * seqs. A monotone renumbering keeps every (when, seq) comparison, so the
 * FIFO order of equal deadlines; the mark moves to the first rank at or
 * past it. Sorting breaks the heap order, so it is rebuilt. Once per ~2^32
 * adds; needs no memory of its own, so it cannot fail. */
static void renumber(iol__timer_heap *h)
{
    qsort(h->heap, h->len, sizeof *h->heap, cmp_seq);
    uint32_t mark = 0;
    for (uint32_t i = 0; i < h->len; i++) {
        if (h->heap[i].seq < h->mark)
            mark = i + 1;
        h->heap[i].seq = i;
    }
    h->mark = mark;
    h->next_seq = h->len;
    heapify(h);
}

void iol__timer_heap_init(iol__timer_heap *h)
{
    *h = (iol__timer_heap){ .free_head = NO_SLOT };
}

void iol__timer_heap_destroy(iol__timer_heap *h)
{
    free(h->heap);
    for (uint32_t i = 0; i < h->nslots / IOL__SLOT_CHUNK + (h->nslots % IOL__SLOT_CHUNK != 0); i++)
        free(h->chunks[i]);
    free(h->chunks);
    iol__timer_heap_init(h);
}

/* Room for one more key and one more slot; on failure nothing changes
 * but capacity. Slots live in fixed chunks, so they never move or get
 * copied as the heap grows, and at most one chunk is partly unused. */
static int grow(iol__timer_heap *h)
{
    if (h->len == h->cap) {
        if (h->cap >= NO_SLOT / 2)
            return -ENOMEM;
        uint32_t cap = h->cap ? h->cap * 2 : 64;
        iol__heap_entry *heap = realloc(h->heap, (size_t)cap * sizeof *heap);
        if (!heap)
            return -ENOMEM;
        h->heap = heap;
        h->cap = cap;
    }
    if (h->free_head == NO_SLOT && h->nslots % IOL__SLOT_CHUNK == 0) {
        uint32_t n = h->nslots / IOL__SLOT_CHUNK; /* chunks in use, all full */
        if (h->nslots >= NO_SLOT / 2)
            return -ENOMEM;
        if (n == h->chunks_cap) {
            uint32_t cap = h->chunks_cap ? h->chunks_cap * 2 : 4;
            iol__timer_chunk **chunks = realloc(h->chunks, (size_t)cap * sizeof *chunks);
            if (!chunks)
                return -ENOMEM;
            h->chunks = chunks;
            h->chunks_cap = cap;
        }
        if (!(h->chunks[n] = malloc(sizeof *h->chunks[n])))
            return -ENOMEM;
    }
    return 0;
}

int iol__timer_heap_add(iol__timer_heap *h, double when, iol_callback_fn fn, void *arg, iol_timeout *out)
{
    int err = grow(h);
    if (err)
        return err;
    if (h->next_seq == UINT32_MAX)
        renumber(h);
    uint32_t slot = h->free_head, gen;
    if (slot != NO_SLOT) {
        h->free_head = (uint32_t)(uintptr_t)slot_at(h, slot)->arg;
        gen = ++*gen_at(h, slot); /* handles to the slot's last timeout die */
    } else {
        slot = h->nslots++;
        gen = *gen_at(h, slot) = 0;
    }
    *slot_at(h, slot) = (iol__timer_slot){ .fn = fn, .arg = arg };
    iol__heap_entry e = { .when = when, .seq = h->next_seq++, .slot = slot };
    sift_up(h->heap, h->len++, e);
    if (out)
        *out = make_handle(slot, gen);
    return 0;
}

int iol__timer_heap_remove(iol__timer_heap *h, iol_timeout t)
{
    uint64_t low = t & 0xffffffffu;
    if (low == 0 || low > h->nslots)
        return -ENOENT;
    uint32_t slot = (uint32_t)(low - 1);
    iol__timer_slot *s = slot_at(h, slot);
    if (!s->fn || *gen_at(h, slot) != (uint32_t)(t >> 32))
        return -ENOENT;
    s->fn = NULL;
    h->dead++;
    /* At the top too: dropped when the top is next read (timer_heap.h). */
    if (h->dead >= COMPACT_MIN && h->dead > h->len - h->dead)
        compact(h);
    return 0;
}

double iol__timer_heap_next(iol__timer_heap *h)
{
    purge_top(h);
    return h->heap[0].when;
}

int iol__timer_heap_pop_due(iol__timer_heap *h, double now, iol_callback_fn *fn, void **arg)
{
    purge_top(h);
    if (h->len == 0 || h->heap[0].when > now || h->heap[0].seq >= h->mark)
        return 0;
    uint32_t slot = h->heap[0].slot;
    iol__timer_slot *s = slot_at(h, slot);
    *fn = s->fn;
    *arg = s->arg;
    slot_free(h, slot);
    pop_top(h);
    purge_top(h);
    return 1;
}
