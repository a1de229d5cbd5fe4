/*
 * net/buffer.h — the byte queue under a stream: one contiguous block, data
 * at [start, start+len). Consuming only moves start; the bytes slide to the
 * front when more than half of the capacity is dead space (so every byte
 * is moved at most once per time it is consumed past), the block doubles
 * when it must grow, and shrinks back to IOL__BUFFER_SMALL once mostly
 * empty. A buffer exists only while bytes are in it: blocks come from the
 * thread's pool (net/bufpool.h) and go back to it when the buffer empties,
 * so an idle stream holds none and the steady state does no malloc.
 *
 * The offsets live in the block's head (the pool's IOL__BUFPOOL_HEAD
 * bytes in front of a power-of-two room), not in the stream: an empty
 * buffer is one NULL pointer, 8 bytes of an idle stream instead of 32
 * (a stream has three).
 */
#ifndef IOL_NET_BUFFER_H
#define IOL_NET_BUFFER_H

#include <stddef.h>

enum {
    IOL__BUFFER_MIN = 4u << 10,    /* first allocation */
    IOL__BUFFER_SMALL = 64u << 10, /* what a large, mostly empty buffer shrinks to */
};

typedef struct iol__buffer_block {
    size_t size;  /* room for data (a power of two) */
    size_t start; /* offset of the first live byte in data */
    size_t len;   /* live bytes */
    char data[];
} iol__buffer_block;

typedef struct iol__buffer {
    iol__buffer_block *blk; /* NULL while empty */
} iol__buffer;

static inline size_t iol__buffer_len(const iol__buffer *b)
{
    return b->blk ? b->blk->len : 0;
}

/* The first live byte; only for a buffer that holds a block. */
static inline char *iol__buffer_data(const iol__buffer *b)
{
    return b->blk->data + b->blk->start;
}

/* Past the last live byte, where a reserve made room. */
static inline char *iol__buffer_tail(const iol__buffer *b)
{
    return b->blk->data + b->blk->start + b->blk->len;
}

static inline size_t iol__buffer_tail_room(const iol__buffer *b)
{
    return b->blk ? b->blk->size - b->blk->start - b->blk->len : 0;
}

/* n bytes were written at the tail (within the reserved room). */
static inline void iol__buffer_commit(iol__buffer *b, size_t n)
{
    if (n)
        b->blk->len += n;
}

/* Only moves offsets: the consumed bytes stay readable until the next
 * reserve, trim or release, which is what lets a read callback get a
 * pointer into the buffer after the read state was already cleared. */
static inline void iol__buffer_consume(iol__buffer *b, size_t n)
{
    if (n == 0)
        return;
    b->blk->start += n;
    b->blk->len -= n;
    if (b->blk->len == 0)
        b->blk->start = 0;
}

/* Drops the live bytes, keeping the block (a trim gives it back). */
static inline void iol__buffer_clear(iol__buffer *b)
{
    if (b->blk)
        b->blk->start = b->blk->len = 0;
}

/* Makes at least `need` bytes of tail room. -ENOMEM. */
int iol__buffer_reserve(iol__buffer *b, size_t need);
/* Copies len bytes to the tail. -ENOMEM. */
int iol__buffer_append(iol__buffer *b, const void *data, size_t len);
/* Gives the block back to the pool and empties b. */
void iol__buffer_free(iol__buffer *b);
/* An empty buffer goes back to the pool; a large, mostly empty one shrinks. */
void iol__buffer_trim(iol__buffer *b);

#endif /* IOL_NET_BUFFER_H */
