#include "loop/timer_heap.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

#define NO_SLOT UINT32_MAX

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

static inline void heap_place(iol__timer_heap *h, size_t i, iol__heap_entry e)
{
    h->heap[i] = e;
    h->slots[e.slot].heap_index = (uint32_t)i;
}

static void sift_up(iol__timer_heap *h, size_t i)
{
    iol__heap_entry e = h->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!entry_less(&e, &h->heap[parent]))
            break;
        heap_place(h, i, h->heap[parent]);
        i = parent;
    }
    heap_place(h, i, e);
}

static void sift_down(iol__timer_heap *h, size_t i)
{
    iol__heap_entry e = h->heap[i];
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= h->len)
            break;
        if (child + 1 < h->len && entry_less(&h->heap[child + 1], &h->heap[child]))
            child++;
        if (!entry_less(&h->heap[child], &e))
            break;
        heap_place(h, i, h->heap[child]);
        i = child;
    }
    heap_place(h, i, e);
}

/* Takes entry i out of the heap, keeping the heap property. */
static void heap_delete(iol__timer_heap *h, size_t i)
{
    h->len--;
    if (i == h->len)
        return;
    iol__heap_entry last = h->heap[h->len];
    heap_place(h, i, last);
    if (i > 0 && entry_less(&last, &h->heap[(i - 1) / 2]))
        sift_up(h, i);
    else
        sift_down(h, i);
}

static void slot_release(iol__timer_heap *h, uint32_t slot)
{
    iol__timer_slot *s = &h->slots[slot];
    s->fn = NULL;
    s->arg = NULL;
    s->gen++;
    s->heap_index = h->free_head;
    h->free_head = slot;
}

void iol__timer_heap_init(iol__timer_heap *h)
{
    *h = (iol__timer_heap){ .free_head = NO_SLOT, .next_seq = 1 };
}

void iol__timer_heap_destroy(iol__timer_heap *h)
{
    free(h->heap);
    free(h->slots);
    iol__timer_heap_init(h);
}

static int grow(iol__timer_heap *h)
{
    if (h->len == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 64;
        iol__heap_entry *heap = realloc(h->heap, cap * sizeof *heap);
        if (!heap)
            return -ENOMEM;
        h->heap = heap;
        h->cap = cap;
    }
    if (h->free_head == NO_SLOT && h->nslots == h->slots_cap) {
        if (h->slots_cap >= NO_SLOT / 2)
            return -ENOMEM;
        uint32_t cap = h->slots_cap ? h->slots_cap * 2 : 64;
        iol__timer_slot *slots = realloc(h->slots, cap * sizeof *slots);
        if (!slots)
            return -ENOMEM;
        h->slots = slots;
        h->slots_cap = cap;
    }
    return 0;
}

int iol__timer_heap_add(iol__timer_heap *h, double when, iol_callback_fn fn, void *arg, iol_timeout *out)
{
    int err = grow(h);
    if (err)
        return err;
    uint32_t slot;
    if (h->free_head != NO_SLOT) {
        slot = h->free_head;
        h->free_head = h->slots[slot].heap_index;
    } else {
        slot = h->nslots++;
        h->slots[slot].gen = 1;
    }
    iol__timer_slot *s = &h->slots[slot];
    s->fn = fn;
    s->arg = arg;
    size_t i = h->len++;
    h->heap[i] = (iol__heap_entry){ .when = when, .seq = h->next_seq++, .slot = slot };
    sift_up(h, i);
    if (out)
        *out = make_handle(slot, s->gen);
    return 0;
}

int iol__timer_heap_remove(iol__timer_heap *h, iol_timeout t)
{
    uint64_t low = t & 0xffffffffu;
    if (low == 0 || low > h->nslots)
        return -ENOENT;
    uint32_t slot = (uint32_t)(low - 1);
    iol__timer_slot *s = &h->slots[slot];
    if (!s->fn || s->gen != (uint32_t)(t >> 32))
        return -ENOENT;
    heap_delete(h, s->heap_index);
    slot_release(h, slot);
    return 0;
}

int iol__timer_heap_pop_due(iol__timer_heap *h, double now, uint64_t mark, iol_callback_fn *fn, void **arg)
{
    if (h->len == 0 || h->heap[0].when > now || h->heap[0].seq >= mark)
        return 0;
    uint32_t slot = h->heap[0].slot;
    *fn = h->slots[slot].fn;
    *arg = h->slots[slot].arg;
    heap_delete(h, 0);
    slot_release(h, slot);
    return 1;
}
