/* net/buffer.c — the byte queue under a stream (see buffer.h). */
#include "net/buffer.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "net/bufpool.h"

_Static_assert(offsetof(iol__buffer_block, data) == IOL__BUFPOOL_HEAD, "a block's head is the pool's");

static void buffer_slide_to_front(iol__buffer_block *k)
{
    if (k->start == 0)
        return;
    if (k->len > 0)
        memmove(k->data, k->data + k->start, k->len);
    k->start = 0;
}

/* Moves the live bytes into a new block of `size` bytes' room (from the pool). */
static int buffer_move_to(iol__buffer *b, size_t size)
{
    iol__buffer_block *k = iol__bufpool_get(size);
    if (!k)
        return -ENOMEM;
    k->size = size;
    k->start = 0;
    k->len = 0;
    iol__buffer_block *old = b->blk;
    if (old) {
        if (old->len > 0)
            memcpy(k->data, old->data + old->start, old->len);
        k->len = old->len;
        iol__bufpool_put(old, old->size);
    }
    b->blk = k;
    return 0;
}

int iol__buffer_reserve(iol__buffer *b, size_t need)
{
    if (iol__buffer_tail_room(b) >= need)
        return 0;
    size_t len = iol__buffer_len(b);
    if (need > SIZE_MAX / 4 - len)
        return -ENOMEM;
    size_t want = len + need;
    iol__buffer_block *k = b->blk;
    /* Sliding is cheap only when the dead space outweighs the live bytes:
     * each live byte then moves at most once per room/2 bytes consumed. */
    if (k && k->start >= k->size / 2 && want <= k->size) {
        buffer_slide_to_front(k);
        return 0;
    }
    size_t size = k ? k->size * 2 : IOL__BUFFER_MIN;
    while (size < want)
        size *= 2;
    return buffer_move_to(b, size);
}

int iol__buffer_append(iol__buffer *b, const void *data, size_t len)
{
    if (len == 0)
        return 0;
    int r = iol__buffer_reserve(b, len);
    if (r < 0)
        return r;
    memcpy(iol__buffer_tail(b), data, len);
    b->blk->len += len;
    return 0;
}

void iol__buffer_free(iol__buffer *b)
{
    if (b->blk)
        iol__bufpool_put(b->blk, b->blk->size);
    b->blk = NULL;
}

/* A buffer exists only while bytes are in it: an empty one goes back to
 * the thread's pool; a large, mostly empty one shrinks to twice its live
 * bytes, not below IOL__BUFFER_SMALL. */
void iol__buffer_trim(iol__buffer *b)
{
    iol__buffer_block *k = b->blk;
    if (!k)
        return;
    if (k->len == 0) {
        iol__buffer_free(b);
        return;
    }
    if (k->size <= IOL__BUFFER_SMALL || k->len > k->size / 4)
        return;
    size_t size = IOL__BUFFER_SMALL;
    while (size < k->len * 2)
        size *= 2;
    if (size < k->size)
        (void)buffer_move_to(b, size); /* a failed shrink just keeps the larger block */
}
