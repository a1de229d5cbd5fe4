/* net/ — the per-thread buffer pool (see net/bufpool.h). */
#include "net/bufpool.h"

#include <pthread.h>
#include <stdlib.h>

#define CLASSES 5 /* 4, 8, 16, 32, 64 KiB */

typedef struct free_block {
    struct free_block *next;
} free_block;

typedef struct pool {
    free_block *head[CLASSES];
    size_t bytes; /* pooled, at most IOL__BUFPOOL_MAX_BYTES */
} pool;

static __thread pool *tl_pool;
static pthread_key_t pool_key;
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;
static int pool_key_err;

static void pool_free(void *p)
{
    pool *pl = p;
    for (int c = 0; c < CLASSES; c++) {
        while (pl->head[c]) {
            free_block *b = pl->head[c];
            pl->head[c] = b->next;
            free(b);
        }
    }
    if (tl_pool == pl)
        tl_pool = NULL;
    free(pl);
}

static void pool_key_create(void)
{
    pool_key_err = pthread_key_create(&pool_key, pool_free);
}

/* This thread's pool, created on first use; NULL if that fails (the
 * caller then uses malloc/free directly). */
static pool *pool_get(void)
{
    if (tl_pool)
        return tl_pool;
    pthread_once(&pool_once, pool_key_create);
    if (pool_key_err)
        return NULL;
    pool *pl = calloc(1, sizeof(*pl));
    if (!pl)
        return NULL;
    if (pthread_setspecific(pool_key, pl) != 0) {
        free(pl);
        return NULL;
    }
    tl_pool = pl;
    return pl;
}

/* The class of cap, or -1 if not pooled. */
static int class_of(size_t cap)
{
    int c = 0;
    for (size_t size = IOL__BUFPOOL_MIN; size <= IOL__BUFPOOL_MAX; size <<= 1, c++)
        if (size == cap)
            return c;
    return -1;
}

void *iol__bufpool_get(size_t cap)
{
    int c = class_of(cap);
    pool *pl = c >= 0 ? pool_get() : NULL;
    if (pl && pl->head[c]) {
        free_block *b = pl->head[c];
        pl->head[c] = b->next;
        pl->bytes -= IOL__BUFPOOL_HEAD + cap;
        return b;
    }
    return malloc(IOL__BUFPOOL_HEAD + cap);
}

void iol__bufpool_put(void *block, size_t cap)
{
    if (!block)
        return;
    int c = class_of(cap);
    pool *pl = c >= 0 ? pool_get() : NULL;
    if (!pl || pl->bytes + IOL__BUFPOOL_HEAD + cap > IOL__BUFPOOL_MAX_BYTES) {
        free(block);
        return;
    }
    free_block *b = block;
    b->next = pl->head[c];
    pl->head[c] = b;
    pl->bytes += IOL__BUFPOOL_HEAD + cap;
}

size_t iol__bufpool_thread_bytes(void)
{
    return tl_pool ? tl_pool->bytes : 0;
}
