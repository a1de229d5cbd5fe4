/* sync/ — the parts of the callback queue callers need to see: the batch
 * struct (so the loop keeps one on its stack) and test-visible internals.
 * Included at the end of sync/cbqueue.h; include that header, not this. */
#ifndef IOL_CBQUEUE_IMPL_H
#define IOL_CBQUEUE_IMPL_H

#include <stddef.h>
#include <stdint.h>

struct iol__cbnode;  /* private to sync/cbqueue.c */
struct iol__ovchunk; /* private to sync/cbqueue.c */

/* A batch taken from the queue by iol__cbqueue_take. Consumer-private: no
 * producer ever links into it, except that a producer which exchanged the
 * queue's tail before the take may still be storing its predecessor's
 * next pointer (iol__cbbatch_next waits for that store). Initialise with
 * IOL__CBBATCH_INIT or by a take; an empty batch needs no cleanup. */
struct iol__cbbatch {
    struct iol__cbnode *first; /* next node to run, NULL when empty */
    struct iol__cbnode *last;  /* the queue's tail at the take */
    iol__cbqueue *q;           /* the queue (signal-reserve nodes go back there) */
    /* Used nodes of one owner, returned to it in one CAS when the owner
     * changes, the run is long, or the batch is drained. A batch must be
     * drained (next() until false) or passed to drop(), as before. */
    struct iol__cbnode *ret_head, *ret_tail;
    unsigned ret_count;
    /* Used nodes of one overflow chunk, released with one atomic when the
     * chunk changes or the batch is drained (see sync/cbqueue.c). */
    struct iol__ovchunk *ov;
    unsigned ov_count;
    /* Nodes of this batch released so far that came from the signal
     * reserve, and from the consumer's own thread (a loop posting to
     * itself): statistics, counted in branches node_release takes anyway.
     * An overflow node counts as neither (it cannot tell its thread). */
    unsigned from_signal, from_self;
};
#define IOL__CBBATCH_INIT { NULL, NULL, NULL, NULL, NULL, 0, NULL, 0, 0, 0 }

/* Test and benchmark hooks. */

/* Node chunks the calling thread's node cache has malloc'd so far (a
 * thread-local count: it stays flat once the thread's pushes are recycled). */
size_t iol__cbqueue_thread_chunks(void);
/* Nodes per chunk. */
size_t iol__cbqueue_chunk_nodes(void);
/* Signal-reserve entries currently free (racy snapshot; tests only). */
unsigned iol__cbqueue_reserve_free(iol__cbqueue *q);

#endif
