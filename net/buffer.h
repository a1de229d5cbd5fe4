/*
 * net/buffer.h — the byte queue under a stream: one contiguous block, data
 * at [start, start+len). Consuming only moves start; the bytes slide to the
 * front when more than half of the capacity is dead space (so every byte
 * is moved at most once per time it is consumed past), the block doubles
 * when it must grow, and shrinks back to IOL__BUFFER_SMALL once mostly
 * empty. A buffer exists only while bytes are in it: blocks come from the
 * thread's pool (net/bufpool.h) and go back to it when the buffer empties,
 * so an idle stream holds none and the steady state does no malloc.
 */
#ifndef IOL_NET_BUFFER_H
#define IOL_NET_BUFFER_H

#include <stddef.h>

enum {
    IOL__BUFFER_MIN = 4u << 10,    /* first allocation */
    IOL__BUFFER_SMALL = 64u << 10, /* what a large, mostly empty buffer shrinks to */
};

typedef struct iol__buffer {
    char *base;
    size_t start; /* offset of the first live byte */
    size_t len;   /* live bytes */
    size_t cap;
} iol__buffer;

static inline char *iol__buffer_data(const iol__buffer *b)
{
    return b->base + b->start;
}

static inline size_t iol__buffer_tail_room(const iol__buffer *b)
{
    return b->cap - b->start - b->len;
}

/* Only moves offsets: the consumed bytes stay readable until the next
 * reserve or release, which is what lets a read callback get a pointer
 * into the buffer after the read state was already cleared. */
static inline void iol__buffer_consume(iol__buffer *b, size_t n)
{
    b->start += n;
    b->len -= n;
    if (b->len == 0)
        b->start = 0;
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
