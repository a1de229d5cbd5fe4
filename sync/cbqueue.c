/* sync/cbqueue.c — the cross-thread callback queue.
 *
 * THE QUEUE is liburcu's wait-free concurrent queue (urcu/wfcqueue.h), the
 * "__cds_wfcq" single-consumer, non-blocking variant, transcribed to C11
 * atomics. Same algorithm, same linearisation points:
 *   - enqueue: node->next = NULL; prev = xchg(tail, node); prev->next = node.
 *   - splice (our take): first = xchg(head.next, NULL); last = xchg(tail,
 *     &head). The chain first..last now belongs to the consumer.
 * Why not call liburcu directly: liburcu 0.13 implements uatomic_xchg with
 * inline asm and CMM_LOAD_SHARED with volatile, which ThreadSanitizer
 * cannot see; every payload handed through the queue (even the user's arg,
 * read in the user's callback) then shows as a data race, which no
 * suppression file can filter without hiding real races. The C11 forms
 * compile to the same instructions on x86-64 (xchg, plain mov) and TSan
 * understands them.
 *
 * The one non-wait-free spot of the algorithm: between a producer's xchg of
 * the tail and its store to prev->next, the chain is broken at prev. The
 * consumer then sees prev->next == NULL although prev is not the last node
 * (liburcu returns CDS_WFCQ_WOULDBLOCK there). We never sleep on it: we
 * spin with a cpu relax, and after a while sched_yield() so a preempted
 * producer on a busy 2-CPU box gets the CPU back. The window is two
 * instructions long, so the wait is short unless the producer is preempted
 * (or is a signal handler's interrupted code on another thread).
 * A producer never waits for anybody: push is one xchg and one store.
 *
 * THE NODES come from a per-producer-thread cache, so steady state does no
 * malloc and no shared free list is contended:
 *   - Each thread that pushes owns a cache (thread-local) with a private
 *     list `local` and a lock-free "remote" Treiber stack. Nodes are
 *     allocated in chunks of CHUNK_NODES; every node remembers its cache.
 *   - The consumer, after copying fn/arg out of a node, pushes it on its
 *     owner's remote stack (CAS loop; push-only plus take-all is ABA-free
 *     because a pusher never dereferences the head it compares against).
 *     If the owner is the consumer's own thread (a callback posting to its
 *     own loop), the node goes straight on the private list: no atomics.
 *   - The owner allocates from `local`; when empty it takes the whole remote
 *     stack with one xchg; only when both are empty does it malloc a chunk.
 *   Why this and not one shared free list: a shared lock-free stack would
 *   need ABA protection (tagged pointers or hazard pointers) and make all
 *   producers contend on one cache line; here each producer only touches its
 *   own cache line plus the queue tail, and the consumer's push rarely
 *   contends (only with the owner's take-all).
 *   A cache keeps at most MAX_CACHED_CHUNKS chunks (1 MiB). Past that
 *   (a burst, a flood the consumer cannot keep up with), the owner hands
 *   out the nodes of an OVERFLOW CHUNK (2048 nodes) one after the other (a
 *   bump index) and never takes them back: each overflow chunk counts its
 *   nodes not yet released (`live`, starting at OV_CHUNK_NODES); consumers
 *   decrement it once per run of nodes of that chunk in a batch, and
 *   whoever brings it to 0 puts the chunk in a process-wide pool (at most
 *   OV_POOL_MAX chunks, 16 MiB; beyond, free). The owner holds at most one
 *   chunk it has not handed out entirely; its thread's exit releases the
 *   unused rest. So memory held for reuse stays bounded (1 MiB per thread,
 *   plus one 64 KiB chunk, plus the 16 MiB pool per process), and a flood
 *   costs one pool operation and one atomic per 2048 nodes.
 *
 * THREAD EXIT: a pthread key destructor orphans the cache. It takes the
 * remote stack by exchanging it with the ORPHANED marker, counts the nodes
 * at home (private list + taken stack), and adds the number still in flight
 * (chunks * CHUNK_NODES - at home) to the cache's signed `orphan_left`
 * counter. A consumer returning a node to a cache whose remote head is
 * ORPHANED decrements `orphan_left` instead. Whoever brings the counter to
 * exactly 0 frees the chunks and the cache: consumers' decrements may come
 * first and drive it negative, but it can only reach 0 after the destructor
 * added its count, and then only when the last in-flight node is back.
 * The main thread's cache (key destructors do not run at exit()) stays
 * reachable through its thread-local pointer (valgrind: still reachable).
 *
 * THE SIGNAL RESERVE is a preallocated node array per queue with a
 * lock-free free stack of indices. The stack head is one 64-bit word:
 * low 32 bits index+1 (0 = empty), high 32 bits a tag bumped by every
 * successful CAS, so an index popped and pushed back between a popper's
 * load and its CAS fails that CAS (no ABA). It never mallocs and takes no
 * lock, so it is async-signal-safe, and re-entrant on one thread: a
 * handler interrupting a pop or an enqueue on the same thread only makes
 * the interrupted CAS fail and retry (pop), or links its own node after the
 * interrupted one (enqueue).
 */
#include "sync/cbqueue.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <urcu/arch.h> /* caa_cpu_relax */

#define CACHE_LINE 64
#define CHUNK_NODES 128
/* The most chunks a thread's cache keeps: 256 x 128 nodes x 32 bytes = 1 MiB.
 * Past that, nodes come from overflow chunks that the consumers free as
 * soon as all their nodes ran, so a burst cannot pin its peak in the cache
 * for the thread's life. */
#define MAX_CACHED_CHUNKS 256
#define DEFAULT_SIGNAL_RESERVE 256
#define SPINS_BEFORE_YIELD 64

struct iol__nodecache;

/* 32 bytes, aligned to 32 (chunks and the reserve are 64-aligned), so a node
 * never straddles two cache lines: a handoff moves one line, not two. */
struct iol__cbnode {
    /* Queue link while queued; free-stack link while on a remote stack. */
    alignas(32) _Atomic(struct iol__cbnode *) next;
    iol_callback_fn fn;
    void *arg;
    /* Owning thread cache; NULL for a signal-reserve node. */
    struct iol__nodecache *cache;
};

struct iol__chunk {
    struct iol__cbnode nodes[CHUNK_NODES];
    struct iol__chunk *next;
};

_Static_assert(sizeof(struct iol__cbnode) == 32, "two nodes per cache line");
/* The reserve stack word must be lock-free to be async-signal-safe. */
_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "64-bit atomics must be lock-free");
_Static_assert(ATOMIC_POINTER_LOCK_FREE == 2, "pointer atomics must be lock-free");

/* aligned_alloc wants a size that is a multiple of the alignment. */
static void *alloc_lines(size_t size)
{
    return aligned_alloc(CACHE_LINE, (size + CACHE_LINE - 1) / CACHE_LINE * CACHE_LINE);
}

/* Marker stored in a cache's remote head once its thread has exited. */
#define ORPHANED ((struct iol__cbnode *)(uintptr_t)1)
/* A node of an overflow chunk has `cache` = the chunk's address | 1
 * (chunks are 64-byte aligned, so the bit is free). */
#define OV_CHUNK_NODES 2048 /* 64 KiB: one malloc (or pool pop) per 2048 posts */
#define OV_POOL_MAX 256     /* free overflow chunks kept process-wide: 16 MiB */

struct iol__ovchunk {
    struct iol__cbnode nodes[OV_CHUNK_NODES];
    _Atomic unsigned live; /* nodes not yet released by a consumer (or unused) */
    struct iol__ovchunk *pool_next;
};

/* Freed overflow chunks, reused by any producer: a flood that keeps
 * overflowing runs on warm memory instead of malloc and page faults. A
 * mutex, not a lock-free stack: one operation per 2048 nodes, and no ABA
 * to argue. Bounded by OV_POOL_MAX; the rest goes back to malloc. */
static pthread_mutex_t ov_pool_lock = PTHREAD_MUTEX_INITIALIZER;
static struct iol__ovchunk *ov_pool;
static unsigned ov_pool_len;

static struct iol__ovchunk *ov_pool_get(void)
{
    pthread_mutex_lock(&ov_pool_lock);
    struct iol__ovchunk *ov = ov_pool;
    if (ov) {
        ov_pool = ov->pool_next;
        ov_pool_len--;
    }
    pthread_mutex_unlock(&ov_pool_lock);
    return ov ? ov : alloc_lines(sizeof *ov);
}

static void ov_pool_put(struct iol__ovchunk *ov)
{
    pthread_mutex_lock(&ov_pool_lock);
    if (ov_pool_len < OV_POOL_MAX) {
        ov->pool_next = ov_pool;
        ov_pool = ov;
        ov_pool_len++;
        ov = NULL;
    }
    pthread_mutex_unlock(&ov_pool_lock);
    free(ov);
}

static inline bool is_overflow(const struct iol__nodecache *c)
{
    return ((uintptr_t)c & 1u) != 0;
}

static inline struct iol__ovchunk *overflow_chunk(const struct iol__nodecache *c)
{
    return (struct iol__ovchunk *)((uintptr_t)c & ~(uintptr_t)1);
}

/* Releases n nodes of ov; the last release frees it. */
static void overflow_release(struct iol__ovchunk *ov, unsigned n)
{
    /* acq_rel: release orders this thread's reads of the released nodes
     * (fn/arg) before the free; acquire, for the thread that reaches 0,
     * orders every other releaser's reads before its free. */
    if (atomic_fetch_sub_explicit(&ov->live, n, memory_order_acq_rel) == n)
        ov_pool_put(ov);
}

struct iol__nodecache {
    /* Written by consumers (push) and the owner (take-all): own line. */
    alignas(CACHE_LINE) _Atomic(struct iol__cbnode *) remote;
    _Atomic long orphan_left;
    /* Owner-only from here. */
    alignas(CACHE_LINE) struct iol__cbnode *local;
    struct iol__chunk *chunks;
    size_t nchunks;
    struct iol__ovchunk *ov; /* the overflow chunk being handed out, or NULL */
    unsigned ov_next;        /* its next unused node */
};

struct iol__cbqueue {
    /* Consumer side: the stub head node (only .next is used). */
    alignas(CACHE_LINE) struct iol__cbnode head;
    /* Producer side: every push exchanges this. */
    alignas(CACHE_LINE) _Atomic(struct iol__cbnode *) tail;
    /* Signal reserve: popped by producers/handlers, pushed by the consumer. */
    alignas(CACHE_LINE) _Atomic uint64_t reserve_top;
    _Atomic uint32_t *reserve_next; /* per entry: index+1 of the next free */
    struct iol__cbnode *reserve;
    unsigned reserve_size;
};

/* initial-exec: one %fs-relative load instead of a __tls_get_addr call in
 * the shared library; costs 8 bytes of static TLS, which glibc reserves
 * even for a dlopen'ed library. */
static _Thread_local struct iol__nodecache *tls_cache __attribute__((tls_model("initial-exec")));
static pthread_key_t cache_key;
static pthread_once_t cache_key_once = PTHREAD_ONCE_INIT;
static int cache_key_err;

static inline void spin_wait(unsigned *spins)
{
    if (++*spins < SPINS_BEFORE_YIELD) {
        caa_cpu_relax();
    } else {
        *spins = 0;
        sched_yield();
    }
}

/* ---- per-thread node caches ------------------------------------------ */

static void cache_free_all(struct iol__nodecache *c)
{
    struct iol__chunk *ch = c->chunks;
    while (ch) {
        struct iol__chunk *next = ch->next;
        free(ch);
        ch = next;
    }
    free(c);
}

static void cache_thread_exit(void *p)
{
    struct iol__nodecache *c = p;
    if (tls_cache == c)
        tls_cache = NULL;
    if (c->ov) { /* its unused nodes will never be handed out */
        overflow_release(c->ov, OV_CHUNK_NODES - c->ov_next);
        c->ov = NULL;
    }

    /* acquire: pairs with the consumers' release CAS in chain_return, so their
     * last reads of these nodes happen before we free the chunks. Exchanging
     * in ORPHANED makes every later chain_return take the counter path. */
    struct iol__cbnode *n = atomic_exchange_explicit(&c->remote, ORPHANED, memory_order_acquire);
    long home = 0;
    while (n) {
        home++;
        /* relaxed: the links were published by the acquire exchange above. */
        n = atomic_load_explicit(&n->next, memory_order_relaxed);
    }
    for (n = c->local; n; n = atomic_load_explicit(&n->next, memory_order_relaxed)) /* relaxed: owner-private list */
        home++;

    long in_flight = (long)(c->nchunks * CHUNK_NODES) - home;
    /* acq_rel: release makes our reads of the cache above happen before the
     * free by a consumer that brings the count to 0; acquire makes the
     * consumers' earlier decrements (and their reads of nodes) happen before
     * our free if we are the one reaching 0. */
    long left = atomic_fetch_add_explicit(&c->orphan_left, in_flight, memory_order_acq_rel) + in_flight;
    if (left == 0)
        cache_free_all(c);
}

static void cache_key_create(void)
{
    cache_key_err = pthread_key_create(&cache_key, cache_thread_exit);
}

static struct iol__nodecache *cache_get(void)
{
    struct iol__nodecache *c = tls_cache;
    if (__builtin_expect(c != NULL, 1))
        return c;
    pthread_once(&cache_key_once, cache_key_create);
    if (cache_key_err)
        return NULL;
    c = alloc_lines(sizeof *c);
    if (!c)
        return NULL;
    memset(c, 0, sizeof *c);
    atomic_init(&c->remote, NULL);
    atomic_init(&c->orphan_left, 0);
    if (pthread_setspecific(cache_key, c) != 0) {
        free(c);
        return NULL;
    }
    tls_cache = c;
    return c;
}

static int cache_add_chunk(struct iol__nodecache *c)
{
    struct iol__chunk *ch = alloc_lines(sizeof *ch);
    if (!ch)
        return -ENOMEM;
    for (size_t i = 0; i < CHUNK_NODES; i++) {
        struct iol__cbnode *n = &ch->nodes[i];
        n->cache = c;
        /* relaxed: the chunk is private until its nodes are pushed. */
        atomic_init(&n->next, i + 1 < CHUNK_NODES ? &ch->nodes[i + 1] : c->local);
    }
    c->local = &ch->nodes[0];
    ch->next = c->chunks;
    c->chunks = ch;
    c->nchunks++;
    return 0;
}

/* Owner: the next node of the current overflow chunk, a new chunk when
 * that one is used up. */
static struct iol__cbnode *overflow_alloc(struct iol__nodecache *c)
{
    if (!c->ov) {
        struct iol__ovchunk *ov = ov_pool_get();
        if (!ov)
            return NULL;
        /* relaxed: published with the nodes through the queue (a pooled
         * chunk's previous life ended with an acq_rel decrement to 0 and
         * the pool's mutex). */
        atomic_store_explicit(&ov->live, OV_CHUNK_NODES, memory_order_relaxed);
        c->ov = ov;
        c->ov_next = 0;
    }
    struct iol__cbnode *n = &c->ov->nodes[c->ov_next++];
    n->cache = (struct iol__nodecache *)((uintptr_t)c->ov | 1u);
    if (c->ov_next == OV_CHUNK_NODES)
        c->ov = NULL; /* all handed out: the consumers release it */
    return n;
}

static struct iol__cbnode *node_alloc(void)
{
    struct iol__nodecache *c = cache_get();
    if (!c)
        return NULL;
    struct iol__cbnode *n = c->local;
    if (__builtin_expect(n == NULL, 0)) {
        /* acquire: pairs with the consumers' release CAS in chain_return, so
         * their reads of fn/arg happen before we overwrite them. */
        n = atomic_exchange_explicit(&c->remote, NULL, memory_order_acquire);
        if (!n) {
            if (c->nchunks >= MAX_CACHED_CHUNKS)
                return overflow_alloc(c);
            if (cache_add_chunk(c) < 0)
                return NULL;
            n = c->local;
        }
    }
    /* relaxed: the list is private to this thread now. */
    c->local = atomic_load_explicit(&n->next, memory_order_relaxed);
    return n;
}

/* Consumer: gives a chain of `count` nodes of cache c (linked through
 * next, head..tail), all off every queue, back to their owner. */
static void chain_return(struct iol__nodecache *c, struct iol__cbnode *head_n, struct iol__cbnode *tail_n,
                         unsigned count)
{
    /* relaxed: a failed CAS reloads; the successful CAS below publishes. */
    struct iol__cbnode *top = atomic_load_explicit(&c->remote, memory_order_relaxed);
    for (;;) {
        if (top == ORPHANED) {
            /* acq_rel: release orders our reads of these nodes (fn/arg)
             * before the free by whoever reaches 0; acquire, if we reach
             * 0, orders the destructor's count and the other returns
             * before our free. */
            if (atomic_fetch_sub_explicit(&c->orphan_left, (long)count, memory_order_acq_rel) == (long)count)
                cache_free_all(c);
            return;
        }
        /* relaxed: published by the release CAS that follows. */
        atomic_store_explicit(&tail_n->next, top, memory_order_relaxed);
        /* release on success: our reads of the nodes and their link stores
         * happen before the owner's acquire take-all. relaxed on failure:
         * we just retry. */
        if (atomic_compare_exchange_weak_explicit(&c->remote, &top, head_n, memory_order_release,
                                                  memory_order_relaxed))
            return;
    }
}

size_t iol__cbqueue_thread_chunks(void)
{
    return tls_cache ? tls_cache->nchunks : 0;
}

size_t iol__cbqueue_chunk_nodes(void)
{
    return CHUNK_NODES;
}

/* ---- signal reserve -------------------------------------------------- */

static inline uint64_t reserve_word(uint32_t idx1, uint32_t tag)
{
    return ((uint64_t)tag << 32) | idx1;
}

/* Any thread, signal handlers: pops a free entry, or NULL. */
static struct iol__cbnode *reserve_pop(iol__cbqueue *q)
{
    /* acquire: pairs with the release CAS in reserve_push so the entry's
     * reserve_next and the consumer's last reads of the node happen before
     * we reuse it. */
    uint64_t top = atomic_load_explicit(&q->reserve_top, memory_order_acquire);
    for (;;) {
        uint32_t idx1 = (uint32_t)top;
        if (idx1 == 0)
            return NULL;
        /* relaxed: may be stale if the entry was popped meanwhile; then the
         * tag has changed and the CAS below fails. */
        uint32_t next1 = atomic_load_explicit(&q->reserve_next[idx1 - 1], memory_order_relaxed);
        /* acquire on success and failure: as the load above (success also
         * needs it: the entry's previous owner pushed it with release). */
        if (atomic_compare_exchange_weak_explicit(&q->reserve_top, &top,
                                                  reserve_word(next1, (uint32_t)(top >> 32) + 1),
                                                  memory_order_acquire, memory_order_acquire))
            return &q->reserve[idx1 - 1];
    }
}

/* Consumer: gives an entry back once its callback was taken. */
static void reserve_push(iol__cbqueue *q, struct iol__cbnode *n)
{
    uint32_t idx1 = (uint32_t)(n - q->reserve) + 1;
    /* relaxed: a failed CAS reloads; the successful CAS publishes. */
    uint64_t top = atomic_load_explicit(&q->reserve_top, memory_order_relaxed);
    for (;;) {
        /* relaxed: published by the release CAS below. */
        atomic_store_explicit(&q->reserve_next[idx1 - 1], (uint32_t)top, memory_order_relaxed);
        /* release: our reads of n and the reserve_next store happen before a
         * popper's acquire. relaxed on failure: we retry. */
        if (atomic_compare_exchange_weak_explicit(&q->reserve_top, &top,
                                                  reserve_word(idx1, (uint32_t)(top >> 32) + 1),
                                                  memory_order_release, memory_order_relaxed))
            return;
    }
}

unsigned iol__cbqueue_reserve_free(iol__cbqueue *q)
{
    unsigned n = 0;
    /* acquire: see reserve_pop; a racy snapshot is fine for tests. */
    uint32_t idx1 = (uint32_t)atomic_load_explicit(&q->reserve_top, memory_order_acquire);
    while (idx1 && n <= q->reserve_size) {
        n++;
        /* relaxed: tests call this while nobody pops. */
        idx1 = atomic_load_explicit(&q->reserve_next[idx1 - 1], memory_order_relaxed);
    }
    return n;
}

/* ---- the queue ------------------------------------------------------- */

int iol__cbqueue_new(iol__cbqueue **out, unsigned signal_reserve)
{
    if (signal_reserve == 0)
        signal_reserve = DEFAULT_SIGNAL_RESERVE;
    iol__cbqueue *q = alloc_lines(sizeof *q);
    if (!q)
        return -ENOMEM;
    memset(q, 0, sizeof *q);
    q->reserve_size = signal_reserve;
    q->reserve = alloc_lines((size_t)signal_reserve * sizeof *q->reserve);
    q->reserve_next = calloc(signal_reserve, sizeof *q->reserve_next);
    if (!q->reserve || !q->reserve_next)
        goto fail;
    memset(q->reserve, 0, (size_t)signal_reserve * sizeof *q->reserve);
    atomic_init(&q->head.next, NULL);
    atomic_init(&q->tail, &q->head);
    for (unsigned i = 0; i < signal_reserve; i++) {
        q->reserve[i].cache = NULL;
        atomic_init(&q->reserve_next[i], i + 1 < signal_reserve ? i + 2 : 0);
    }
    atomic_init(&q->reserve_top, reserve_word(1, 0));
    *out = q;
    return 0;
fail:
    free(q->reserve);
    free(q->reserve_next);
    free(q);
    return -ENOMEM;
}

/* Any thread: links a filled node at the tail. */
static inline void enqueue(iol__cbqueue *q, struct iol__cbnode *n)
{
    /* relaxed: published by the exchange below. */
    atomic_store_explicit(&n->next, NULL, memory_order_relaxed);
    /* seq_cst: release publishes n's fields to whoever acquires the chain;
     * being a seq_cst RMW (a full barrier, lock xchg on x86) it also orders
     * this store of the tail before the waker's state load that follows
     * (the Dekker pair with iol__waker_prepare_sleep; see waker.c). */
    struct iol__cbnode *prev = atomic_exchange_explicit(&q->tail, n, memory_order_seq_cst);
    /* release: pairs with the consumer's acquire load of prev->next, making
     * n's fields visible to it. Until this store the chain is broken at
     * prev; the consumer waits for it (see the top of the file). */
    atomic_store_explicit(&prev->next, n, memory_order_release);
}

int iol__cbqueue_push(iol__cbqueue *q, iol_callback_fn fn, void *arg)
{
    struct iol__cbnode *n = node_alloc();
    if (!n)
        return -ENOMEM;
    n->fn = fn;
    n->arg = arg;
    enqueue(q, n);
    return 0;
}

int iol__cbqueue_push_signal(iol__cbqueue *q, iol_callback_fn fn, void *arg)
{
    struct iol__cbnode *n = reserve_pop(q);
    if (!n)
        return -EAGAIN;
    n->fn = fn;
    n->arg = arg;
    enqueue(q, n);
    return 0;
}

bool iol__cbqueue_empty(iol__cbqueue *q)
{
    /* relaxed: only a hint for the common case; the tail decides. */
    if (atomic_load_explicit(&q->head.next, memory_order_relaxed) != NULL)
        return false;
    /* seq_cst: the tail is the producers' linearisation point; as a seq_cst
     * load after the waker's seq_cst fence it is the consumer half of the
     * Dekker pair (see waker.c). */
    return atomic_load_explicit(&q->tail, memory_order_seq_cst) == &q->head;
}

bool iol__cbqueue_peek(iol__cbqueue *q)
{
    /* relaxed: a hint; whoever acts on it takes the queue, and take's
     * acquire exchange of the same link is what orders the nodes. */
    return atomic_load_explicit(&q->head.next, memory_order_relaxed) != NULL;
}

enum iol__cbqueue_origin iol__cbqueue_peek_origin(iol__cbqueue *q)
{
    /* acquire: pairs with the producer's release store of head.next, so
     * the node's `cache` is visible. Only the consumer unlinks nodes, so
     * the node stays queued while we read it. */
    struct iol__cbnode *first = atomic_load_explicit(&q->head.next, memory_order_acquire);
    if (!first)
        return IOL__CBQ_EMPTY;
    /* A signal-reserve node (NULL) counts as ours; an overflow node
     * (tagged chunk) cannot name its thread, and only floods use them. */
    struct iol__nodecache *c = first->cache;
    return c == NULL || c == tls_cache ? IOL__CBQ_OWN : IOL__CBQ_OTHER;
}

bool iol__cbqueue_take(iol__cbqueue *q, iol__cbbatch *b)
{
    b->q = q;
    b->first = b->last = NULL;
    b->ret_head = b->ret_tail = NULL;
    b->ret_count = 0;
    b->ov = NULL;
    b->ov_count = 0;
    b->from_signal = b->from_self = 0;
    if (iol__cbqueue_empty(q))
        return false;
    unsigned spins = 0;
    struct iol__cbnode *first;
    for (;;) {
        /* acquire: pairs with the producer's release store of head.next, so
         * the first node's fields are visible. Clearing head.next before
         * resetting the tail matters: a producer that gets &head from the
         * tail exchange below must find head.next ours to overwrite. */
        first = atomic_exchange_explicit(&q->head.next, NULL, memory_order_acquire);
        if (first)
            break;
        /* seq_cst: as in iol__cbqueue_empty. */
        if (atomic_load_explicit(&q->tail, memory_order_seq_cst) == &q->head)
            return false;
        /* The first producer exchanged the tail but has not linked head.next
         * yet (CDS_WFCQ_RET_WOULDBLOCK): wait for its next store. */
        spin_wait(&spins);
    }
    /* acq_rel: acquire synchronises with every producer's exchange of the
     * tail up to `last` (the exchanges form one release sequence of RMWs),
     * so every node of first..last is fully written; the next links carry
     * the same guarantee node by node. release orders our clearing of
     * head.next before any producer that now gets &head from its exchange
     * and stores head.next (else its store could be overwritten by ours). */
    struct iol__cbnode *last = atomic_exchange_explicit(&q->tail, &q->head, memory_order_acq_rel);
    b->first = first;
    b->last = last;
    return true;
}

/* Consumer: unlinks the batch's first node; NULL when empty. */
static inline struct iol__cbnode *batch_pop(iol__cbbatch *b)
{
    struct iol__cbnode *n = b->first;
    if (!n)
        return NULL;
    if (n == b->last) {
        b->first = b->last = NULL;
        return n;
    }
    /* acquire: pairs with the producer's release store of n->next, making
     * the next node's fields visible. NULL means that producer exchanged the
     * tail before our take but has not linked yet: liburcu's
     * CDS_WFCQ_WOULDBLOCK. It is at most two instructions from the store,
     * so we spin (relax, then yield if it got preempted); never sleep. */
    struct iol__cbnode *next = atomic_load_explicit(&n->next, memory_order_acquire);
    if (__builtin_expect(next == NULL, 0)) {
        unsigned spins = 0;
        do {
            spin_wait(&spins);
            /* acquire: as above. */
            next = atomic_load_explicit(&n->next, memory_order_acquire);
        } while (next == NULL);
    }
    b->first = next;
    return n;
}

#define RETURN_RUN_MAX 64

static void batch_flush_returns(iol__cbbatch *b)
{
    if (b->ov_count) {
        overflow_release(b->ov, b->ov_count);
        b->ov = NULL;
        b->ov_count = 0;
    }
    if (b->ret_count == 0)
        return;
    chain_return(b->ret_head->cache, b->ret_head, b->ret_tail, b->ret_count);
    b->ret_head = b->ret_tail = NULL;
    b->ret_count = 0;
}

/* Consumer: recycles a node whose fn/arg were read. Runs of nodes from one
 * producer (the common shape of a batch) go back to their owner with one
 * CAS instead of one per node. */
static inline void node_release(iol__cbbatch *b, struct iol__cbnode *n)
{
    struct iol__nodecache *c = n->cache;
    if (!c) {
        reserve_push(b->q, n);
        b->from_signal++;
    } else if (is_overflow(c)) {
        struct iol__ovchunk *ov = overflow_chunk(c);
        if (b->ov != ov) {
            if (b->ov_count)
                overflow_release(b->ov, b->ov_count);
            b->ov = ov;
            b->ov_count = 0;
        }
        b->ov_count++;
    } else if (c == tls_cache) {
        /* relaxed: our own private list; no other thread reads it. */
        atomic_store_explicit(&n->next, c->local, memory_order_relaxed);
        c->local = n;
        b->from_self++;
    } else {
        if (b->ret_count && (b->ret_head->cache != c || b->ret_count >= RETURN_RUN_MAX))
            batch_flush_returns(b);
        /* relaxed: the run is private until chain_return publishes it. */
        atomic_store_explicit(&n->next, b->ret_head, memory_order_relaxed);
        if (!b->ret_count)
            b->ret_tail = n;
        b->ret_head = n;
        b->ret_count++;
    }
    if (!b->first)
        batch_flush_returns(b); /* drained: hand the last run back now */
}

bool iol__cbbatch_next(iol__cbbatch *b, iol_callback_fn *fn, void **arg)
{
    struct iol__cbnode *n = batch_pop(b);
    if (!n)
        return false;
    *fn = n->fn;
    *arg = n->arg;
    node_release(b, n);
    return true;
}

/* Empties one batch without running it. */
static size_t batch_drop(iol__cbbatch *b, bool (*on_drop)(iol_callback_fn fn, void *arg))
{
    size_t dropped = 0;
    struct iol__cbnode *n;
    while ((n = batch_pop(b))) {
        iol_callback_fn fn = n->fn;
        void *arg = n->arg;
        node_release(b, n);
        if (on_drop)
            on_drop(fn, arg);
        dropped++;
    }
    return dropped;
}

size_t iol__cbqueue_drop(iol__cbqueue *q, iol__cbbatch *b, bool (*on_drop)(iol_callback_fn fn, void *arg))
{
    size_t dropped = 0;
    if (b && b->q) {
        dropped += batch_drop(b, on_drop);
        batch_flush_returns(b);
    }
    iol__cbbatch tmp;
    while (iol__cbqueue_take(q, &tmp))
        dropped += batch_drop(&tmp, on_drop);
    return dropped;
}

void iol__cbqueue_free(iol__cbqueue *q)
{
    if (!q)
        return;
    iol__cbqueue_drop(q, NULL, NULL);
    free(q->reserve);
    free(q->reserve_next);
    free(q);
}
