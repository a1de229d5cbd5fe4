/* net/buffer.c — the byte queue under a stream (see buffer.h). */
#include "net/buffer.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "net/bufpool.h"

static void buffer_slide_to_front(iol__buffer *b)
{
    if (b->start == 0)
        return;
    if (b->len > 0)
        memmove(b->base, b->base + b->start, b->len);
    b->start = 0;
}

/* Moves the live bytes into a new block of cap bytes (from the pool). */
static int buffer_move_to(iol__buffer *b, size_t cap)
{
    char *base = iol__bufpool_get(cap);
    if (!base)
        return -ENOMEM;
    if (b->len > 0)
        memcpy(base, b->base + b->start, b->len);
    iol__bufpool_put(b->base, b->cap);
    b->base = base;
    b->start = 0;
    b->cap = cap;
    return 0;
}

int iol__buffer_reserve(iol__buffer *b, size_t need)
{
    if (iol__buffer_tail_room(b) >= need)
        return 0;
    if (need > SIZE_MAX / 4 - b->len)
        return -ENOMEM;
    size_t want = b->len + need;
    /* Sliding is cheap only when the dead space outweighs the live bytes:
     * each live byte then moves at most once per cap/2 bytes consumed. */
    if (b->start >= b->cap / 2 && want <= b->cap) {
        buffer_slide_to_front(b);
        return 0;
    }
    size_t cap = b->cap ? b->cap * 2 : IOL__BUFFER_MIN;
    while (cap < want)
        cap *= 2;
    return buffer_move_to(b, cap);
}

int iol__buffer_append(iol__buffer *b, const void *data, size_t len)
{
    if (len == 0)
        return 0;
    int r = iol__buffer_reserve(b, len);
    if (r < 0)
        return r;
    memcpy(b->base + b->start + b->len, data, len);
    b->len += len;
    return 0;
}


void iol__buffer_free(iol__buffer *b)
{
    iol__bufpool_put(b->base, b->cap);
    *b = (iol__buffer){0};
}

/* A buffer exists only while bytes are in it: an empty one goes back to
 * the thread's pool; a large, mostly empty one shrinks to twice its live
 * bytes, not below IOL__BUFFER_SMALL. */
void iol__buffer_trim(iol__buffer *b)
{
    if (!b->base)
        return;
    if (b->len == 0) {
        iol__buffer_free(b);
        return;
    }
    if (b->cap <= IOL__BUFFER_SMALL || b->len > b->cap / 4)
        return;
    size_t cap = IOL__BUFFER_SMALL;
    while (cap < b->len * 2)
        cap *= 2;
    if (cap < b->cap)
        (void)buffer_move_to(b, cap); /* a failed shrink just keeps the larger block */
}

