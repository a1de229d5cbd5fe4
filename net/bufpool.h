/* net/ — a per-thread pool of I/O buffers, so a stream holds a buffer only
 * while bytes are in flight: it takes one when a read or a queued write
 * needs room and gives it back as soon as the buffer is empty. An idle
 * connection then costs its stream struct, not a 4-64 KiB buffer, and the
 * steady state does no malloc (and no free that the allocator would hand
 * back to the kernel with madvise).
 *
 * Sizes are powers of two; blocks of 4..64 KiB are pooled, at most
 * IOL__BUFPOOL_MAX_BYTES per thread; other sizes go to malloc/free. Any
 * thread; each thread has its own pool, freed when the thread exits. */
#ifndef IOL_BUFPOOL_H
#define IOL_BUFPOOL_H

#include <stddef.h>

#define IOL__BUFPOOL_MIN (4u << 10)
#define IOL__BUFPOOL_MAX (64u << 10)
#define IOL__BUFPOOL_MAX_BYTES (1u << 20) /* pooled per thread, all sizes together */

/* Every block has IOL__BUFPOOL_HEAD bytes in front of its cap (a buffer's
 * offsets live there), so the room behind them is a whole power of two. */
#define IOL__BUFPOOL_HEAD 24

/* A block of exactly IOL__BUFPOOL_HEAD + cap bytes (cap a power of two),
 * or NULL. */
void *iol__bufpool_get(size_t cap);
/* Gives back a block from get. */
void iol__bufpool_put(void *block, size_t cap);

/* For tests: bytes this thread's pool holds for reuse. */
size_t iol__bufpool_thread_bytes(void);

#endif
