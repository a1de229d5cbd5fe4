/* The callback queue alone (sync/cbqueue.h), without a loop. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sync/cbqueue.h"
#include "testutil.h"

static void cb_a(void *arg) { (void)arg; }
static void cb_b(void *arg) { (void)arg; }

#define TAG(p, s) ((void *)(uintptr_t)(((uint64_t)(p) << 40) | (uint64_t)(s)))
#define TAG_P(a) ((unsigned)((uintptr_t)(a) >> 40))
#define TAG_S(a) ((uint64_t)((uintptr_t)(a) & ((1ull << 40) - 1)))

/* Drains one batch, returns how many it held. */
static size_t drain_batch(iol__cbbatch *b)
{
    size_t n = 0;
    iol_callback_fn fn;
    void *arg;
    while (iol__cbbatch_next(b, &fn, &arg))
        n++;
    return n;
}

START_TEST(test_batch_semantics)
{
    iol__cbqueue *q;
    ck_assert_int_eq(iol__cbqueue_new(&q, 0), 0);
    iol__cbbatch b = IOL__CBBATCH_INIT;

    ck_assert(iol__cbqueue_empty(q));
    ck_assert(!iol__cbqueue_take(q, &b));
    iol_callback_fn fn;
    void *arg;
    ck_assert(!iol__cbbatch_next(&b, &fn, &arg));

    for (uintptr_t i = 0; i < 3; i++)
        ck_assert_int_eq(iol__cbqueue_push(q, cb_a, (void *)i), 0);
    ck_assert(!iol__cbqueue_empty(q));
    ck_assert(iol__cbqueue_take(q, &b));
    ck_assert(iol__cbqueue_empty(q));

    /* Pushes made while draining stay for the next take. */
    for (uintptr_t i = 0; i < 3; i++) {
        ck_assert(iol__cbbatch_next(&b, &fn, &arg));
        ck_assert_ptr_eq((void *)fn, (void *)cb_a);
        ck_assert_uint_eq((uintptr_t)arg, i);
        ck_assert_int_eq(iol__cbqueue_push(q, cb_b, (void *)(100 + i)), 0);
    }
    ck_assert(!iol__cbbatch_next(&b, &fn, &arg));
    ck_assert(!iol__cbqueue_empty(q));

    ck_assert(iol__cbqueue_take(q, &b));
    for (uintptr_t i = 0; i < 3; i++) {
        ck_assert(iol__cbbatch_next(&b, &fn, &arg));
        ck_assert_ptr_eq((void *)fn, (void *)cb_b);
        ck_assert_uint_eq((uintptr_t)arg, 100 + i);
    }
    ck_assert(!iol__cbbatch_next(&b, &fn, &arg));
    ck_assert(iol__cbqueue_empty(q));
    ck_assert(!iol__cbqueue_take(q, &b));
    iol__cbqueue_free(q);
}
END_TEST

/* peek and peek_origin see what a take would find, and name where the
 * oldest callback came from: the loop's spin gathers only behind another
 * thread's posts (loop/spin.c). */
static void *push_one_thread(void *q)
{
    ck_assert_int_eq(iol__cbqueue_push(q, cb_b, NULL), 0);
    return NULL;
}

START_TEST(test_peek_origin)
{
    iol__cbqueue *q;
    ck_assert_int_eq(iol__cbqueue_new(&q, 0), 0);
    iol__cbbatch b = IOL__CBBATCH_INIT;
    ck_assert(!iol__cbqueue_peek(q));
    ck_assert_int_eq(iol__cbqueue_peek_origin(q), IOL__CBQ_EMPTY);

    ck_assert_int_eq(iol__cbqueue_push(q, cb_a, NULL), 0);
    ck_assert(iol__cbqueue_peek(q));
    ck_assert_int_eq(iol__cbqueue_peek_origin(q), IOL__CBQ_OWN);
    ck_assert(iol__cbqueue_take(q, &b));
    ck_assert_uint_eq(drain_batch(&b), 1);
    ck_assert(!iol__cbqueue_peek(q));
    ck_assert_int_eq(iol__cbqueue_peek_origin(q), IOL__CBQ_EMPTY);

    /* Another thread's post, then ours: the oldest decides. */
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, push_one_thread, q), 0);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    ck_assert_int_eq(iol__cbqueue_push(q, cb_a, NULL), 0);
    ck_assert_int_eq(iol__cbqueue_peek_origin(q), IOL__CBQ_OTHER);
    ck_assert(iol__cbqueue_take(q, &b));
    ck_assert_uint_eq(drain_batch(&b), 2);

    /* A signal-reserve post counts as the consumer's own. */
    ck_assert_int_eq(iol__cbqueue_push_signal(q, cb_a, NULL), 0);
    ck_assert_int_eq(iol__cbqueue_peek_origin(q), IOL__CBQ_OWN);
    ck_assert(iol__cbqueue_take(q, &b));
    ck_assert_uint_eq(drain_batch(&b), 1);
    ck_assert_int_eq(iol__cbqueue_peek_origin(q), IOL__CBQ_EMPTY);
    iol__cbqueue_free(q);
}
END_TEST

/* ---- exactly once, per-producer FIFO ---------------------------------- */

#define NPROD 4

struct mpsc {
    iol__cbqueue *q;
    unsigned id;
    size_t n;
    bool use_signal; /* alternate push and push_signal */
    size_t eagain;
};

static void *mpsc_producer(void *p)
{
    struct mpsc *m = p;
    for (size_t s = 0; s < m->n; s++) {
        if (m->use_signal && (s & 7) == 0) {
            int r;
            while ((r = iol__cbqueue_push_signal(m->q, cb_b, TAG(m->id, s))) == -EAGAIN) {
                m->eagain++;
                sched_yield();
            }
            HOT_ASSERT(r == 0);
        } else {
            HOT_ASSERT(iol__cbqueue_push(m->q, cb_a, TAG(m->id, s)) == 0);
        }
    }
    return NULL;
}

static void run_mpsc(bool use_signal)
{
    size_t n = iol_test_scaled(1000000, 10000);
    iol__cbqueue *q;
    HOT_ASSERT(iol__cbqueue_new(&q, 64) == 0);
    struct mpsc m[NPROD];
    pthread_t th[NPROD];
    for (unsigned i = 0; i < NPROD; i++) {
        m[i] = (struct mpsc){ .q = q, .id = i, .n = n, .use_signal = use_signal };
        HOT_ASSERT(pthread_create(&th[i], NULL, mpsc_producer, &m[i]) == 0);
    }
    uint64_t next[NPROD] = { 0 };
    size_t total = 0, batches = 0;
    iol__cbbatch b;
    while (total < NPROD * n) {
        if (!iol__cbqueue_take(q, &b)) {
            sched_yield();
            continue;
        }
        batches++;
        iol_callback_fn fn;
        void *arg;
        while (iol__cbbatch_next(&b, &fn, &arg)) {
            unsigned p = TAG_P(arg);
            uint64_t s = TAG_S(arg);
            HOT_ASSERT(p < NPROD);
            HOT_ASSERT(s == next[p]); /* once, and in order */
            HOT_ASSERT((void *)fn == (use_signal && (s & 7) == 0 ? (void *)cb_b : (void *)cb_a));
            next[p]++;
            total++;
        }
    }
    for (unsigned i = 0; i < NPROD; i++) {
        pthread_join(th[i], NULL);
        ck_assert_uint_eq(next[i], n);
    }
    ck_assert(!iol__cbqueue_take(q, &b));
    ck_assert_uint_eq(iol__cbqueue_reserve_free(q), 64);
    ck_assert_uint_gt(batches, 0);
    iol__cbqueue_free(q);
}

START_TEST(test_mpsc_exactly_once_fifo)
{
    run_mpsc(false);
}
END_TEST

START_TEST(test_mpsc_mixed_signal_reserve)
{
    run_mpsc(true);
}
END_TEST

/* ---- node recycling --------------------------------------------------- */

START_TEST(test_recycling_same_thread)
{
    iol__cbqueue *q;
    HOT_ASSERT(iol__cbqueue_new(&q, 0) == 0);
    iol__cbbatch b;
    size_t per_round = 3 * iol__cbqueue_chunk_nodes() + 5;
    size_t after_warmup = 0;
    for (int round = 0; round < 50; round++) {
        for (size_t i = 0; i < per_round; i++)
            HOT_ASSERT(iol__cbqueue_push(q, cb_a, NULL) == 0);
        ck_assert(iol__cbqueue_take(q, &b));
        ck_assert_uint_eq(drain_batch(&b), per_round);
        if (round == 0)
            after_warmup = iol__cbqueue_thread_chunks();
    }
    ck_assert_uint_eq(iol__cbqueue_thread_chunks(), after_warmup);
    ck_assert_uint_le(after_warmup, 4);
    iol__cbqueue_free(q);
}
END_TEST

/* A burst beyond the cache bound: the cache stops growing at 1 MiB of
 * nodes (the header's promise), every callback still runs once in order,
 * and the nodes past the bound are freed by the consumer (exact leak
 * checks under ASan and valgrind). */
static uintptr_t burst_next;

static void cb_burst(void *arg)
{
    HOT_ASSERT((uintptr_t)arg == burst_next);
    burst_next++;
}

static void *burst_producer(void *p)
{
    iol__cbqueue *q = p;
    for (uintptr_t i = 0; i < 40000; i++)
        HOT_ASSERT(iol__cbqueue_push(q, cb_burst, (void *)i) == 0);
    HOT_ASSERT(iol__cbqueue_thread_chunks() * iol__cbqueue_chunk_nodes() <= 32768);
    return NULL; /* exits with every node in flight */
}

/* Takes one batch and runs all of it. */
static void run_one_batch(iol__cbqueue *q)
{
    iol__cbbatch b;
    ck_assert(iol__cbqueue_take(q, &b));
    iol_callback_fn fn;
    void *arg;
    while (iol__cbbatch_next(&b, &fn, &arg))
        fn(arg);
}

START_TEST(test_cache_bound_after_burst)
{
    iol__cbqueue *q;
    HOT_ASSERT(iol__cbqueue_new(&q, 0) == 0);
    /* Same thread: push past the bound, drain, again. */
    for (int round = 0; round < 2; round++) {
        burst_next = 0;
        for (uintptr_t i = 0; i < 40000; i++)
            HOT_ASSERT(iol__cbqueue_push(q, cb_burst, (void *)i) == 0);
        ck_assert_uint_le(iol__cbqueue_thread_chunks() * iol__cbqueue_chunk_nodes(), 32768);
        run_one_batch(q);
        ck_assert_uint_eq(burst_next, 40000);
    }
    /* Another thread bursts and exits with its nodes in flight. */
    burst_next = 0;
    pthread_t th;
    HOT_ASSERT(pthread_create(&th, NULL, burst_producer, q) == 0);
    pthread_join(th, NULL);
    run_one_batch(q);
    ck_assert_uint_eq(burst_next, 40000);
    iol__cbqueue_free(q);
}
END_TEST

struct recycle {
    iol__cbqueue *q;
    size_t rounds, per_round;
    _Atomic size_t consumed;
    size_t chunks_after_warmup, chunks_end;
};

static void *recycle_producer(void *p)
{
    struct recycle *r = p;
    for (size_t round = 0; round < r->rounds; round++) {
        for (size_t i = 0; i < r->per_round; i++)
            HOT_ASSERT(iol__cbqueue_push(r->q, cb_a, NULL) == 0);
        /* acquire: pairs with the consumer's release add, so its node
         * returns (remote pushes) happen before our next allocations. */
        while (atomic_load_explicit(&r->consumed, memory_order_acquire) < (round + 1) * r->per_round)
            sched_yield();
        if (round == 1)
            r->chunks_after_warmup = iol__cbqueue_thread_chunks();
    }
    r->chunks_end = iol__cbqueue_thread_chunks();
    return NULL;
}

START_TEST(test_recycling_cross_thread)
{
    struct recycle r = { .rounds = iol_test_scaled(2000, 50), .per_round = 1000 };
    HOT_ASSERT(iol__cbqueue_new(&r.q, 0) == 0);
    pthread_t th;
    HOT_ASSERT(pthread_create(&th, NULL, recycle_producer, &r) == 0);
    size_t total = 0;
    iol__cbbatch b;
    while (total < r.rounds * r.per_round) {
        if (!iol__cbqueue_take(r.q, &b)) {
            sched_yield();
            continue;
        }
        total += drain_batch(&b);
        /* release: see recycle_producer. */
        atomic_store_explicit(&r.consumed, total, memory_order_release);
    }
    pthread_join(th, NULL);
    /* Every round starts with all nodes back home, so the producer mallocs
     * a chunk only while it owns fewer nodes than one round needs: never
     * more than ceil(per_round / chunk) chunks for all rounds together
     * (how many it needs depends on how far the consumer lags). */
    size_t bound = (r.per_round + iol__cbqueue_chunk_nodes() - 1) / iol__cbqueue_chunk_nodes();
    ck_assert_uint_gt(r.chunks_after_warmup, 0);
    ck_assert_uint_le(r.chunks_end, bound);
    iol__cbqueue_free(r.q);
}
END_TEST

/* One batch holding, in this order, nodes of another thread, of the
 * consumer's own thread, and signal-reserve nodes, again and again: the
 * consumer hands runs of the other thread's nodes back through the queue's
 * own links, so a node of another kind between two of them must end the
 * run. Otherwise the own and reserve nodes would land in the other
 * thread's cache: nodes handed out twice, lost callbacks, growing caches. */
struct lockstep {
    iol__cbqueue *q;
    _Atomic unsigned turn; /* odd: the producer pushes one node */
    unsigned rounds;
    size_t chunks_end;
};

static void *lockstep_producer(void *p)
{
    struct lockstep *l = p;
    for (unsigned i = 0; i < l->rounds; i++) {
        /* acquire/release: our push and the consumer's pushes alternate,
         * so the batch interleaves owners in a known order. */
        while (atomic_load_explicit(&l->turn, memory_order_acquire) != 2 * i + 1)
            sched_yield();
        HOT_ASSERT(iol__cbqueue_push(l->q, cb_a, TAG(1, 2 * i)) == 0);
        HOT_ASSERT(iol__cbqueue_push(l->q, cb_a, TAG(1, 2 * i + 1)) == 0);
        atomic_store_explicit(&l->turn, 2 * i + 2, memory_order_release);
    }
    l->chunks_end = iol__cbqueue_thread_chunks();
    return NULL;
}

START_TEST(test_interleaved_owners_recycle)
{
    struct lockstep l = { .rounds = 300 };
    HOT_ASSERT(iol__cbqueue_new(&l.q, 0) == 0);
    atomic_init(&l.turn, 0);
    size_t own_chunks = 0;
    for (unsigned rep = 0; rep < 50; rep++) {
        pthread_t th;
        HOT_ASSERT(pthread_create(&th, NULL, lockstep_producer, &l) == 0);
        for (unsigned i = 0; i < l.rounds; i++) {
            /* Two own nodes, every third round a reserve node, then two of
             * the producer's: runs of 2 broken by other kinds. */
            HOT_ASSERT(iol__cbqueue_push(l.q, cb_b, TAG(0, 2 * i)) == 0);
            if (i % 3 == 0)
                HOT_ASSERT(iol__cbqueue_push_signal(l.q, cb_b, TAG(2, i)) == 0);
            atomic_store_explicit(&l.turn, 2 * i + 1, memory_order_release);
            while (atomic_load_explicit(&l.turn, memory_order_acquire) != 2 * i + 2)
                sched_yield();
        }
        pthread_join(th, NULL);
        atomic_store_explicit(&l.turn, 0, memory_order_relaxed);
        uint64_t next[3] = { 0, 0, 0 };
        iol__cbbatch b;
        HOT_ASSERT(iol__cbqueue_take(l.q, &b));
        iol_callback_fn fn;
        void *arg;
        while (iol__cbbatch_next(&b, &fn, &arg)) {
            unsigned who = TAG_P(arg);
            HOT_ASSERT(who < 3);
            HOT_ASSERT(TAG_S(arg) == next[who]);
            next[who] += who == 0 ? 2 : who == 1 ? 1 : 3;
        }
        ck_assert_uint_eq(next[0], 2 * l.rounds);
        ck_assert_uint_eq(next[1], 2 * l.rounds);
        ck_assert(!iol__cbqueue_take(l.q, &b));
        ck_assert_uint_eq(iol__cbqueue_reserve_free(l.q), 256);
        if (rep == 0)
            own_chunks = iol__cbqueue_thread_chunks();
        ck_assert_uint_eq(iol__cbqueue_thread_chunks(), own_chunks);
        /* Each producer thread is new: it needs ceil(rounds / chunk). */
        ck_assert_uint_le(l.chunks_end, (2 * l.rounds + iol__cbqueue_chunk_nodes() - 1) / iol__cbqueue_chunk_nodes());
    }
    iol__cbqueue_free(l.q);
}
END_TEST

/* ---- signal reserve --------------------------------------------------- */

START_TEST(test_signal_reserve_exhaustion)
{
    iol__cbqueue *q;
    ck_assert_int_eq(iol__cbqueue_new(&q, 4), 0);
    ck_assert_uint_eq(iol__cbqueue_reserve_free(q), 4);
    for (uintptr_t i = 0; i < 4; i++)
        ck_assert_int_eq(iol__cbqueue_push_signal(q, cb_b, (void *)i), 0);
    ck_assert_int_eq(iol__cbqueue_push_signal(q, cb_b, NULL), -EAGAIN);
    ck_assert_uint_eq(iol__cbqueue_reserve_free(q), 0);
    /* Ordinary pushes are not limited by the reserve. */
    ck_assert_int_eq(iol__cbqueue_push(q, cb_a, (void *)4), 0);

    iol__cbbatch b;
    ck_assert(iol__cbqueue_take(q, &b));
    iol_callback_fn fn;
    void *arg;
    ck_assert(iol__cbbatch_next(&b, &fn, &arg));
    ck_assert_uint_eq((uintptr_t)arg, 0);
    /* The entry is free again once its callback was taken. */
    ck_assert_uint_eq(iol__cbqueue_reserve_free(q), 1);
    ck_assert_int_eq(iol__cbqueue_push_signal(q, cb_b, (void *)5), 0);
    ck_assert_int_eq(iol__cbqueue_push_signal(q, cb_b, NULL), -EAGAIN);
    for (uintptr_t i = 1; i <= 4; i++) {
        ck_assert(iol__cbbatch_next(&b, &fn, &arg));
        ck_assert_uint_eq((uintptr_t)arg, i);
    }
    ck_assert(!iol__cbbatch_next(&b, &fn, &arg));
    ck_assert(iol__cbqueue_take(q, &b));
    ck_assert(iol__cbbatch_next(&b, &fn, &arg));
    ck_assert_uint_eq((uintptr_t)arg, 5);
    ck_assert(!iol__cbbatch_next(&b, &fn, &arg));
    ck_assert_uint_eq(iol__cbqueue_reserve_free(q), 4);
    iol__cbqueue_free(q);
}
END_TEST

static iol__cbqueue *sig_q;
static _Atomic size_t sig_ok, sig_eagain;

static void on_sigusr1(int signo)
{
    (void)signo;
    int saved = errno;
    /* relaxed: counters read after the threads are joined. */
    if (iol__cbqueue_push_signal(sig_q, cb_b, NULL) == 0)
        atomic_fetch_add_explicit(&sig_ok, 1, memory_order_relaxed);
    else
        atomic_fetch_add_explicit(&sig_eagain, 1, memory_order_relaxed);
    errno = saved;
}

static void install_handler(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigusr1;
    sigemptyset(&sa.sa_mask);
    ck_assert_int_eq(sigaction(SIGUSR1, &sa, NULL), 0);
}

START_TEST(test_signal_handler_raise)
{
    ck_assert_int_eq(iol__cbqueue_new(&sig_q, 16), 0);
    install_handler();
    size_t n = iol_test_scaled(100000, 2000), consumed = 0;
    iol__cbbatch b;
    for (size_t i = 0; i < n; i++) {
        raise(SIGUSR1);
        if (i % 10 == 9 && iol__cbqueue_take(sig_q, &b))
            consumed += drain_batch(&b);
    }
    if (iol__cbqueue_take(sig_q, &b))
        consumed += drain_batch(&b);
    ck_assert_uint_eq(consumed, atomic_load(&sig_ok));
    ck_assert_uint_eq(atomic_load(&sig_ok) + atomic_load(&sig_eagain), n);
    ck_assert_uint_eq(iol__cbqueue_reserve_free(sig_q), 16);
    iol__cbqueue_free(sig_q);
}
END_TEST

/* A thread pushing (both kinds) in a loop while another thread signals it,
 * so handlers interrupt its push_signal and push half-way. Bounded by the
 * pusher's work, not the number of signals (valgrind delivers them slowly). */
struct sigstorm {
    size_t iterations;
    _Atomic bool done;
    size_t pushed_ok;
};

static void *sigstorm_pusher(void *p)
{
    struct sigstorm *s = p;
    /* At least a few handlers should have interrupted us (relaxed:
     * counters), but not at any price: valgrind runs one thread at a time
     * and was seen to starve the signalling thread for two minutes. Past
     * the iterations we yield while waiting and give up after 10 s; the
     * exactly-once check below holds for whatever was pushed. */
    double give_up = 0;
    for (size_t i = 0; i < s->iterations || atomic_load_explicit(&sig_ok, memory_order_relaxed) +
                                                     atomic_load_explicit(&sig_eagain, memory_order_relaxed) < 10;
         i++) {
        if (i >= s->iterations && (i & 1023) == 0) {
            /* Waiting for signals: let the signalling thread run (valgrind
             * runs one thread at a time and may otherwise starve it). */
            sched_yield();
            if (give_up == 0)
                give_up = iol_test_now() + 10;
            else if (iol_test_now() > give_up)
                break;
        }
        if (iol__cbqueue_push_signal(sig_q, cb_b, NULL) == 0)
            s->pushed_ok++;
        HOT_ASSERT(iol__cbqueue_push(sig_q, cb_a, NULL) == 0);
        s->pushed_ok++;
    }
    /* relaxed: a stop flag; the counters travel through pthread_join. */
    atomic_store_explicit(&s->done, true, memory_order_relaxed);
    return NULL;
}

START_TEST(test_signal_reentrancy)
{
    ck_assert_int_eq(iol__cbqueue_new(&sig_q, 8), 0);
    install_handler();
    struct sigstorm s = { .iterations = iol_test_scaled(200000, 2000) };
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, sigstorm_pusher, &s), 0);
    size_t signals = 0, consumed = 0;
    iol__cbbatch b;
    /* relaxed: see sigstorm_pusher. */
    while (!atomic_load_explicit(&s.done, memory_order_relaxed)) {
        pthread_kill(th, SIGUSR1);
        signals++;
        if (iol__cbqueue_take(sig_q, &b))
            consumed += drain_batch(&b);
        else
            sched_yield();
    }
    pthread_join(th, NULL);
    while (iol__cbqueue_take(sig_q, &b))
        consumed += drain_batch(&b);
    ck_assert_uint_ge(signals, 10);
    ck_assert_uint_eq(consumed, s.pushed_ok + atomic_load(&sig_ok));
    ck_assert_uint_eq(iol__cbqueue_reserve_free(sig_q), 8);
    iol__cbqueue_free(sig_q);
}
END_TEST

/* ---- producers exiting with nodes in flight --------------------------- */

struct exiter {
    iol__cbqueue *q;
    size_t n;
};

static void *exiting_producer(void *p)
{
    struct exiter *e = p;
    for (size_t i = 0; i < e->n; i++)
        HOT_ASSERT(iol__cbqueue_push(e->q, cb_a, NULL) == 0);
    return NULL; /* the thread exits with its nodes still queued */
}

START_TEST(test_producer_exit_in_flight)
{
    iol__cbqueue *q;
    ck_assert_int_eq(iol__cbqueue_new(&q, 0), 0);
    size_t rounds = iol_test_scaled(50, 5), consumed = 0, expected = 0;
    iol__cbbatch b;
    for (size_t r = 0; r < rounds; r++) {
        struct exiter e[4];
        pthread_t th[4];
        for (int i = 0; i < 4; i++) {
            e[i] = (struct exiter){ q, 300 + 97 * (size_t)i };
            expected += e[i].n;
            ck_assert_int_eq(pthread_create(&th[i], NULL, exiting_producer, &e[i]), 0);
        }
        /* Consume part of it while they run and exit... */
        if (iol__cbqueue_take(q, &b))
            consumed += drain_batch(&b);
        for (int i = 0; i < 4; i++)
            pthread_join(th[i], NULL);
        /* ...and keep some across rounds, returned after their owner died. */
        if (r % 2 == 1) {
            while (iol__cbqueue_take(q, &b))
                consumed += drain_batch(&b);
        }
    }
    while (iol__cbqueue_take(q, &b))
        consumed += drain_batch(&b);
    ck_assert_uint_eq(consumed, expected);
    iol__cbqueue_free(q);
}
END_TEST

START_TEST(test_producer_exit_then_free)
{
    /* Nodes of dead producers left in the queue are freed by free(). */
    iol__cbqueue *q;
    ck_assert_int_eq(iol__cbqueue_new(&q, 0), 0);
    struct exiter e = { q, 1000 };
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, exiting_producer, &e), 0);
    pthread_join(th, NULL);
    iol__cbqueue_free(q);
}
END_TEST

/* ---- drop and free ---------------------------------------------------- */

START_TEST(test_drop_counts)
{
    iol__cbqueue *q;
    ck_assert_int_eq(iol__cbqueue_new(&q, 8), 0);
    ck_assert_uint_eq(iol__cbqueue_drop(q, NULL, NULL), 0);
    for (int i = 0; i < 10; i++)
        ck_assert_int_eq(iol__cbqueue_push(q, cb_a, NULL), 0);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(iol__cbqueue_push_signal(q, cb_b, NULL), 0);
    iol__cbbatch b;
    ck_assert(iol__cbqueue_take(q, &b));
    iol_callback_fn fn;
    void *arg;
    ck_assert(iol__cbbatch_next(&b, &fn, &arg));
    ck_assert(iol__cbbatch_next(&b, &fn, &arg));
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(iol__cbqueue_push(q, cb_a, NULL), 0);
    ck_assert_int_eq(iol__cbqueue_push_signal(q, cb_b, NULL), 0);
    /* 11 left in the batch, 6 in the queue. */
    ck_assert_uint_eq(iol__cbqueue_drop(q, &b, NULL), 17);
    ck_assert(!iol__cbbatch_next(&b, &fn, &arg));
    ck_assert(iol__cbqueue_empty(q));
    ck_assert_uint_eq(iol__cbqueue_reserve_free(q), 8);
    ck_assert_uint_eq(iol__cbqueue_drop(q, &b, NULL), 0);

    /* Pushes after drop are freed by free(). */
    for (int i = 0; i < 7; i++)
        ck_assert_int_eq(iol__cbqueue_push(q, cb_a, NULL), 0);
    ck_assert_int_eq(iol__cbqueue_push_signal(q, cb_b, NULL), 0);
    iol__cbqueue_free(q);
    iol__cbqueue_free(NULL);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cbqueue");
    TCase *tc = iol_test_tcase("basic", 10);
    tcase_add_test(tc, test_batch_semantics);
    tcase_add_test(tc, test_peek_origin);
    tcase_add_test(tc, test_drop_counts);
    tcase_add_test(tc, test_signal_reserve_exhaustion);
    tcase_add_test(tc, test_recycling_same_thread);
    tcase_add_test(tc, test_cache_bound_after_burst);
    suite_add_tcase(s, tc);

    tc = iol_test_tcase("mpsc", 120);
    tcase_add_test(tc, test_mpsc_exactly_once_fifo);
    tcase_add_test(tc, test_mpsc_mixed_signal_reserve);
    suite_add_tcase(s, tc);

    tc = iol_test_tcase("recycle", 60);
    tcase_add_test(tc, test_recycling_cross_thread);
    tcase_add_test(tc, test_interleaved_owners_recycle);
    suite_add_tcase(s, tc);

    tc = iol_test_tcase("exit", 60);
    tcase_add_test(tc, test_producer_exit_in_flight);
    tcase_add_test(tc, test_producer_exit_then_free);
    suite_add_tcase(s, tc);

    tc = iol_test_tcase("signals", 60);
    tcase_add_test(tc, test_signal_handler_raise);
    tcase_add_test(tc, test_signal_reentrancy);
    suite_add_tcase(s, tc);
    return iol_test_run(s);
}
