/* soak-posts: cross-thread posts into a 2-worker runtime, checked for
 * exactly-once and per-producer order.
 *
 * P producer threads each post a share of --posts callbacks, round-robin
 * over the workers. A post's arg encodes (producer, per-(producer, worker)
 * sequence number) so nothing is allocated per post. On the worker, the
 * callback checks the sequence against an expected-next table owned by
 * that worker (only the worker touches its row: no atomics there) and
 * marks it in a bitmap (also per (producer, worker)) so that lost and
 * duplicated posts are told apart exactly, not just "out of order".
 *
 * Producers keep at most WINDOW posts in flight per worker: the loop's
 * queue is unbounded, and 4 producers on 2 CPUs would otherwise outrun the
 * workers and queue gigabytes of nodes.
 *
 * Usage: soak-posts [--posts N] [--producers P] [--workers W]
 * Prints "posted X, ran X, lost 0, duplicated 0, out-of-order 0, M posts/s";
 * exits 1 on any mismatch. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <ioloop.h>

#define MAX_PRODUCERS 64
#define MAX_WORKERS 16
#define SEQ_BITS 48 /* arg = producer << SEQ_BITS | seq */
#define WINDOW 65536

typedef struct pair_state {
    /* Written by the worker only. */
    uint64_t expected;   /* next in-order sequence */
    uint64_t arrived;    /* callbacks that ran */
    uint64_t duplicated;
    uint64_t out_of_order;
    uint64_t *seen;      /* bitmap over sequence numbers */
    uint64_t seen_words;
    uint64_t sent;       /* written by the producer when done (read after join) */
    /* Flow control: the worker publishes how many ran; the producer only
     * uses it to decide whether to wait, so relaxed is enough (it orders
     * nothing; a stale value only makes the producer wait a little more). */
    _Atomic uint64_t done;
    char pad[64];
} pair_state;

static iol_runtime *g_rt;
static unsigned g_producers = 4, g_workers = 2;
static uint64_t g_posts = 100000000ull;
static pair_state g_pairs[MAX_PRODUCERS][MAX_WORKERS];
/* Failed posts (post returned < 0) across producers; relaxed: a total read
 * after the producers were joined (join orders it). */
static _Atomic uint64_t g_post_failures;
static _Atomic uint64_t g_posted;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void on_post(void *arg)
{
    uintptr_t v = (uintptr_t)arg;
    unsigned p = (unsigned)(v >> SEQ_BITS);
    uint64_t seq = v & ((1ull << SEQ_BITS) - 1);
    int w = iol_runtime_worker_index();
    if (w < 0 || p >= g_producers) {
        fprintf(stderr, "soak-posts: callback with a bad arg or off a worker\n");
        abort();
    }
    pair_state *ps = &g_pairs[p][w];
    ps->arrived++;
    uint64_t word = seq / 64, bit = 1ull << (seq % 64);
    if (word >= ps->seen_words || (ps->seen[word] & bit)) {
        ps->duplicated++; /* also catches a sequence never posted here */
    } else {
        ps->seen[word] |= bit;
        if (seq != ps->expected)
            ps->out_of_order++;
        if (seq >= ps->expected)
            ps->expected = seq + 1;
    }
    atomic_store_explicit(&ps->done, ps->arrived, memory_order_relaxed);
}

typedef struct producer {
    pthread_t thread;
    unsigned index;
    uint64_t count;
} producer;

static void *producer_main(void *arg)
{
    producer *pr = arg;
    uint64_t sent[MAX_WORKERS] = {0};
    for (uint64_t i = 0; i < pr->count; i++) {
        unsigned w = (unsigned)(i % g_workers);
        pair_state *ps = &g_pairs[pr->index][w];
        if ((sent[w] & 1023) == 0) {
            while (sent[w] - atomic_load_explicit(&ps->done, memory_order_relaxed) > WINDOW)
                sched_yield();
        }
        uintptr_t v = ((uintptr_t)pr->index << SEQ_BITS) | sent[w];
        int r;
        while ((r = iol_runtime_post(g_rt, w, on_post, (void *)v)) == -ENOMEM)
            sched_yield();
        if (r < 0) {
            atomic_fetch_add_explicit(&g_post_failures, 1, memory_order_relaxed);
            continue;
        }
        sent[w]++;
        if ((i & 4095) == 4095) /* progress only; relaxed, orders nothing */
            atomic_fetch_add_explicit(&g_posted, 4096, memory_order_relaxed);
    }
    atomic_fetch_add_explicit(&g_posted, pr->count & 4095, memory_order_relaxed);
    for (unsigned w = 0; w < g_workers; w++)
        g_pairs[pr->index][w].sent = sent[w];
    return NULL;
}

static uint64_t total_done(void)
{
    uint64_t n = 0;
    for (unsigned p = 0; p < g_producers; p++)
        for (unsigned w = 0; w < g_workers; w++)
            n += atomic_load_explicit(&g_pairs[p][w].done, memory_order_relaxed);
    return n;
}

static void usage(void)
{
    fprintf(stderr, "usage: soak-posts [--posts N] [--producers P] [--workers W]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc)
            usage();
        if (!strcmp(argv[i], "--posts"))
            g_posts = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--producers"))
            g_producers = (unsigned)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--workers"))
            g_workers = (unsigned)atoi(argv[++i]);
        else
            usage();
    }
    if (g_posts == 0 || g_producers == 0 || g_producers > MAX_PRODUCERS || g_workers == 0 ||
        g_workers > MAX_WORKERS)
        usage();

    producer prods[MAX_PRODUCERS];
    for (unsigned p = 0; p < g_producers; p++) {
        prods[p].index = p;
        prods[p].count = g_posts / g_producers + (p < g_posts % g_producers ? 1 : 0);
        uint64_t per_worker = prods[p].count / g_workers + 1;
        for (unsigned w = 0; w < g_workers; w++) {
            g_pairs[p][w].seen_words = per_worker / 64 + 1;
            g_pairs[p][w].seen = calloc(g_pairs[p][w].seen_words, sizeof(uint64_t));
            if (!g_pairs[p][w].seen) {
                fprintf(stderr, "soak-posts: out of memory\n");
                return 1;
            }
        }
    }

    iol_runtime_config cfg = {.workers = g_workers};
    int r = iol_runtime_new(&g_rt, &cfg);
    if (r < 0 || (r = iol_runtime_start(g_rt)) < 0) {
        fprintf(stderr, "soak-posts: runtime: %s\n", strerror(-r));
        return 1;
    }

    double t0 = now_s();
    for (unsigned p = 0; p < g_producers; p++)
        if (pthread_create(&prods[p].thread, NULL, producer_main, &prods[p]) != 0) {
            fprintf(stderr, "soak-posts: pthread_create failed\n");
            return 1;
        }
    /* Progress on stderr while the producers run. */
    double last = t0;
    for (;;) {
        uint64_t done = total_done();
        if (done >= g_posts)
            break;
        double t = now_s();
        if (t - last >= 2.0) {
            fprintf(stderr, "  %.0f s: posted %llu, ran %llu\n", t - t0,
                    (unsigned long long)atomic_load_explicit(&g_posted, memory_order_relaxed),
                    (unsigned long long)done);
            last = t;
        }
        /* Producers gave up on some posts: those never arrive. */
        if (atomic_load_explicit(&g_post_failures, memory_order_relaxed) > 0)
            break;
        usleep(10000);
    }
    for (unsigned p = 0; p < g_producers; p++)
        pthread_join(prods[p].thread, NULL);
    /* stop runs every callback posted before it; join makes the workers'
     * plain counters visible to this thread. */
    iol_runtime_stop(g_rt);
    iol_runtime_join(g_rt);
    double elapsed = now_s() - t0;
    iol_runtime_free(g_rt);

    uint64_t posted = 0, ran = 0, lost = 0, dup = 0, ooo = 0;
    for (unsigned p = 0; p < g_producers; p++) {
        for (unsigned w = 0; w < g_workers; w++) {
            pair_state *ps = &g_pairs[p][w];
            uint64_t sent = ps->sent;
            posted += sent;
            uint64_t distinct = 0;
            for (uint64_t k = 0; k < ps->seen_words; k++)
                distinct += (uint64_t)__builtin_popcountll(ps->seen[k]);
            ran += ps->arrived;
            dup += ps->duplicated;
            ooo += ps->out_of_order;
            lost += sent > distinct ? sent - distinct : 0;
            free(ps->seen);
        }
    }
    uint64_t failures = atomic_load_explicit(&g_post_failures, memory_order_relaxed);
    printf("posted %llu, ran %llu, lost %llu, duplicated %llu, out-of-order %llu, %.2f M posts/s "
           "(%u producers, %u workers, %.2f s)\n",
           (unsigned long long)posted, (unsigned long long)ran, (unsigned long long)lost,
           (unsigned long long)dup, (unsigned long long)ooo, (double)ran / elapsed / 1e6, g_producers,
           g_workers, elapsed);
    if (failures)
        printf("post failures: %llu\n", (unsigned long long)failures);
    bool ok = failures == 0 && posted == ran && lost == 0 && dup == 0 && ooo == 0 && posted == g_posts;
    return ok ? 0 : 1;
}
