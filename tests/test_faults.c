/* Fault injection: the k-th allocation fails, for k = 1..K, over the
 * constructors and the add_callback / add_timeout / add_handler paths.
 * Every call must return -ENOMEM cleanly (or succeed once k passes its last
 * allocation), leak nothing, and leave the loop usable.
 *
 * The test binary interposes malloc & co. (the library is linked
 * statically into it); counting live blocks detects leaks exactly. Under
 * ASan/TSan the sanitizer owns malloc, so the suite skips itself there;
 * valgrind runs it (its own leak check doubles the net). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ioloop.h"
#include "testutil.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define FAULTS_SKIP 1
#else
#define FAULTS_SKIP 0

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

/* countdown > 0: that many allocations succeed, the next one fails, then
 * allocations succeed again. 0: off. */
static _Atomic long countdown;
static _Atomic long live_blocks;
static _Atomic long injected;

static bool fail_now(void)
{
    long c = atomic_load_explicit(&countdown, memory_order_relaxed);
    if (c <= 0)
        return false;
    /* relaxed: the tests drive one thread at a time through a fault. */
    if (atomic_fetch_sub_explicit(&countdown, 1, memory_order_relaxed) == 1) {
        atomic_fetch_add_explicit(&injected, 1, memory_order_relaxed);
        return true;
    }
    return false;
}

static void *counted(void *p)
{
    if (p)
        atomic_fetch_add_explicit(&live_blocks, 1, memory_order_relaxed);
    return p;
}

void *malloc(size_t n)
{
    if (fail_now()) {
        errno = ENOMEM;
        return NULL;
    }
    return counted(__libc_malloc(n));
}

void *calloc(size_t a, size_t b)
{
    if (fail_now()) {
        errno = ENOMEM;
        return NULL;
    }
    return counted(__libc_calloc(a, b));
}

void *realloc(void *p, size_t n)
{
    if (fail_now()) {
        errno = ENOMEM;
        return NULL;
    }
    void *q = __libc_realloc(p, n);
    if (!p)
        counted(q);
    else if (q == NULL && n == 0)
        atomic_fetch_sub_explicit(&live_blocks, 1, memory_order_relaxed);
    return q;
}

void *aligned_alloc(size_t align, size_t n)
{
    if (fail_now()) {
        errno = ENOMEM;
        return NULL;
    }
    return counted(__libc_memalign(align, n));
}

int posix_memalign(void **out, size_t align, size_t n)
{
    if (fail_now())
        return ENOMEM;
    void *p = counted(__libc_memalign(align, n));
    if (!p)
        return ENOMEM;
    *out = p;
    return 0;
}

void free(void *p)
{
    if (p)
        atomic_fetch_sub_explicit(&live_blocks, 1, memory_order_relaxed);
    __libc_free(p);
}
#endif

#if !FAULTS_SKIP
static void arm(long k)
{
    atomic_store(&injected, 0);
    atomic_store(&countdown, k);
}
static bool disarm(void)
{
    atomic_store(&countdown, 0);
    return atomic_load(&injected) > 0;
}

static void nop(void *arg) { (void)arg; }
static void stop_cb(void *arg) { iol_loop_stop(arg); }
static void on_io(int fd, unsigned ev, void *arg) { (void)fd; (void)ev; (void)arg; }

static int ran;
static void count_cb(void *arg) { (void)arg; ran++; }

/* The loop still runs callbacks and timeouts after the faults. */
static void assert_usable(iol_loop *loop)
{
    ran = 0;
    ck_assert_int_eq(iol_loop_add_callback(loop, count_cb, NULL), 0);
    ck_assert_int_eq(iol_loop_call_later(loop, 0.001, count_cb, NULL, NULL), 0);
    ck_assert_int_eq(iol_loop_call_later(loop, 0.002, stop_cb, loop, NULL), 0);
    ck_assert_int_eq(iol_loop_start(loop), 0);
    ck_assert_int_eq(ran, 2);
}

/* Tries ctor with the k-th allocation failing for k = 1, 2, ... until it
 * succeeds; every failure must be -ENOMEM and leak nothing. Returns how
 * many failure points were exercised. */
typedef int (*ctor_fn)(void **obj);
typedef void (*dtor_fn)(void *obj);
static int sweep(ctor_fn ctor, dtor_fn dtor)
{
    /* One clean round first, so caches that legitimately stay (node
     * chunks, glibc's) are in place before blocks are counted. */
    void *warm = NULL;
    ck_assert_int_eq(ctor(&warm), 0);
    dtor(warm);
    for (long k = 1; k < 10000; k++) {
        long before = atomic_load(&live_blocks);
        void *obj = NULL;
        arm(k);
        int rc = ctor(&obj);
        bool hit = disarm();
        if (!hit) {
            ck_assert_int_eq(rc, 0);
            dtor(obj);
            ck_assert_msg(atomic_load(&live_blocks) == before, "clean run after %ld points leaked %ld blocks",
                          k - 1, atomic_load(&live_blocks) - before);
            return (int)k - 1;
        }
        if (rc == 0) {
            /* The failed allocation was optional (e.g. a cache). */
            dtor(obj);
        } else {
            /* pthread_create reports its own allocation failures as EAGAIN. */
            ck_assert_msg(rc == -ENOMEM || rc == -EAGAIN, "k=%ld: rc=%d", k, rc);
        }
        ck_assert_msg(atomic_load(&live_blocks) == before, "k=%ld rc=%d leaked %ld blocks", k, rc,
                      atomic_load(&live_blocks) - before);
    }
    ck_abort_msg("constructor never succeeded");
    return 0;
}

static int make_loop(void **obj)
{
    static iol_loop_config cfg = { .make_current = IOL_CURRENT_NEVER };
    return iol_loop_new((iol_loop **)obj, &cfg);
}
static void close_loop(void *obj) { iol_loop_close(obj, false); }

static const char *pollers[] = { "epoll", "poll", "select",
#ifdef IOL_HAVE_ZMQ
                                 "zmq",
#endif
#ifdef IOL_HAVE_URING
                                 "uring",
#endif
};
#define NPOLLERS (int)(sizeof pollers / sizeof pollers[0])
static int make_loop_with_poller(void **obj)
{
    static iol_loop_config cfg = { .make_current = IOL_CURRENT_NEVER };
    return iol_loop_new((iol_loop **)obj, &cfg);
}

START_TEST(test_loop_new)
{
    setenv("IOL_POLLER", pollers[_i], 1);
    int points = sweep(make_loop_with_poller, close_loop);
    ck_assert_int_ge(points, 3);
    unsetenv("IOL_POLLER");
}
END_TEST

static int make_future(void **obj) { return iol_future_new((iol_future **)obj); }
static void drop_future(void *obj) { iol_future_unref(obj); }
static int make_executor(void **obj) { return iol_executor_new((iol_executor **)obj, 2); }
static void drop_executor(void *obj) { iol_executor_free(obj); }
static int make_runtime(void **obj)
{
    static iol_runtime_config cfg = { .workers = 2 };
    return iol_runtime_new((iol_runtime **)obj, &cfg);
}
static void drop_runtime(void *obj) { iol_runtime_free(obj); }

static void *idle_thread(void *arg) { return arg; }

/* glibc keeps the stacks (and TLS blocks) of joined threads for reuse;
 * fill that cache first so thread creation inside a sweep allocates the
 * same way every time. */
static void warm_thread_cache(void)
{
    pthread_t t[8];
    for (int i = 0; i < 8; i++)
        pthread_create(&t[i], NULL, idle_thread, NULL);
    for (int i = 0; i < 8; i++)
        pthread_join(t[i], NULL);
}

START_TEST(test_other_constructors)
{
    warm_thread_cache();
    ck_assert_int_ge(sweep(make_future, drop_future), 1);
    ck_assert_int_ge(sweep(make_executor, drop_executor), 1);
    ck_assert_int_ge(sweep(make_runtime, drop_runtime), 1);
}
END_TEST

static iol_loop *shared_loop;
static int make_periodic(void **obj)
{
    return iol_periodic_new((iol_periodic **)obj, shared_loop, 10, nop, NULL);
}
static void drop_periodic(void *obj) { iol_periodic_free(obj); }
static int sv[2];
static int make_stream(void **obj)
{
    int fd = dup(sv[0]);
    int rc = iol_stream_new((iol_stream **)obj, shared_loop, fd, 0);
    if (rc < 0)
        close(fd);
    return rc;
}
static void drop_stream(void *obj)
{
    iol_stream_close(obj);
    /* The stream finishes closing in a loop callback. */
    iol_loop_add_callback(shared_loop, stop_cb, shared_loop);
    iol_loop_start(shared_loop);
}

START_TEST(test_loop_bound_constructors)
{
    ck_assert_int_eq(make_loop((void **)&shared_loop), 0);
    assert_usable(shared_loop); /* warm this thread's caches first */
    ck_assert_int_ge(sweep(make_periodic, drop_periodic), 1);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    ck_assert_int_ge(sweep(make_stream, drop_stream), 1);
    close(sv[0]);
    close(sv[1]);
    assert_usable(shared_loop);
    iol_loop_close(shared_loop, false);
}
END_TEST

/* add_callback from a fresh thread must allocate its node cache: fail it. */
struct post_result {
    iol_loop *loop;
    int first, second;
};
static void *post_from_new_thread(void *arg)
{
    struct post_result *r = arg;
    arm(1);
    r->first = iol_loop_add_callback(r->loop, count_cb, NULL);
    disarm();
    r->second = iol_loop_add_callback(r->loop, count_cb, NULL);
    return NULL;
}

START_TEST(test_add_callback_enomem)
{
    iol_loop *loop;
    ck_assert_int_eq(make_loop((void **)&loop), 0);
    struct post_result r = { .loop = loop };
    pthread_t t;
    pthread_create(&t, NULL, post_from_new_thread, &r);
    pthread_join(t, NULL);
    ck_assert_int_eq(r.first, -ENOMEM);
    ck_assert_int_eq(r.second, 0);
    ran = 0;
    iol_loop_add_callback(loop, stop_cb, loop);
    iol_loop_start(loop);
    ck_assert_int_eq(ran, 1);
    assert_usable(loop);
    iol_loop_close(loop, false);
}
END_TEST

START_TEST(test_add_timeout_enomem)
{
    iol_loop *loop;
    ck_assert_int_eq(make_loop((void **)&loop), 0);
    /* Fill to a capacity boundary, so the next add must grow. */
    int n = 0, rc = 0;
    for (n = 0; n < 4096; n++) {
        arm(1);
        rc = iol_loop_call_later(loop, 100, nop, NULL, NULL);
        bool hit = disarm();
        if (hit) {
            ck_assert_int_eq(rc, -ENOMEM);
            break;
        }
        ck_assert_int_eq(rc, 0);
    }
    ck_assert_int_eq(rc, -ENOMEM);
    /* Nothing was half-added: close drops exactly the n that succeeded. */
    ck_assert_int_eq(iol_loop_call_later(loop, 100, nop, NULL, NULL), 0);
    assert_usable(loop);
    ck_assert_int_eq(iol_loop_close(loop, false), n + 1);
}
END_TEST

/* Each allocation an add can make (the heap array, the slot-chunk table,
 * a slot chunk) fails once in turn, across several 4096-slot chunk
 * boundaries: -ENOMEM with nothing half-added, and the retry works. */
START_TEST(test_add_timeout_enomem_each_growth)
{
    iol_loop *loop;
    ck_assert_int_eq(make_loop((void **)&loop), 0);
    int added = 0, faults = 0;
    for (int i = 0; i < 5 * 4096 + 2; i++) {
        for (long k = 1;; k++) {
            arm(k);
            int rc = iol_loop_call_later(loop, 100 + i % 7, nop, NULL, NULL);
            if (!disarm()) {
                ck_assert_int_eq(rc, 0);
                added++;
                break;
            }
            ck_assert_int_eq(rc, -ENOMEM);
            faults++;
        }
    }
    ck_assert_int_ge(faults, 6); /* at least one per slot chunk */
    assert_usable(loop);
    ck_assert_int_eq(iol_loop_close(loop, false), added);
}
END_TEST

START_TEST(test_add_handler_enomem)
{
    iol_loop *loop;
    iol_loop_config cfg = { .poller = pollers[_i], .make_current = IOL_CURRENT_NEVER };
    ck_assert_int_eq(iol_loop_new(&loop, &cfg), 0);
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    /* Register a low fd once so the tables exist; then a high fd forces
     * them to grow (a grown table that stays is not a leak). */
    ck_assert_int_eq(iol_loop_add_handler(loop, p[1], IOL_WRITE, on_io, NULL), 0);
    ck_assert_int_eq(iol_loop_remove_handler(loop, p[1]), 0);
    int high = dup2(p[0], 900);
    ck_assert_int_eq(high, 900);
    int failures = 0;
    for (long k = 1; k < 100; k++) {
        long before = atomic_load(&live_blocks);
        arm(k);
        int rc = iol_loop_add_handler(loop, high, IOL_READ, on_io, NULL);
        bool hit = disarm();
        if (!hit || rc == 0) {
            ck_assert_int_eq(rc, 0);
            break;
        }
        ck_assert_int_eq(rc, -ENOMEM);
        ck_assert_int_eq(atomic_load(&live_blocks), before);
        failures++;
    }
    ck_assert_int_ge(failures, 1);
    ck_assert_int_eq(iol_loop_remove_handler(loop, high), 0);
    ck_assert_int_eq(iol_loop_add_handler(loop, high, IOL_READ, on_io, NULL), 0);
    assert_usable(loop);
    iol_loop_close(loop, true);
    close(p[0]);
    close(p[1]);
}
END_TEST

#ifdef IOL_HAVE_TLS
/* iol_tls_stream_new with the k-th allocation failing (SSL_new's among
 * them), for k = 1, 2, ... until it succeeds, on a runtime worker: each
 * failure leaves nothing behind. The fd stays open and free (the next
 * stream on it is not refused with -EEXIST: on a uring loop no claim is
 * left), the handler count is back where it was, and the runtime's drain
 * does not wait for a connection that does not exist. */
static const char *tls_pollers[] = { "epoll",
#ifdef IOL_HAVE_URING
                                     "uring",
#endif
};
static char cert_dir[64];

typedef struct tls_sweep {
    iol_tls_ctx *ctx;
    int failures;
    sem_t done;
} tls_sweep;

static void tls_sweep_on_worker(void *arg)
{
    tls_sweep *t = arg;
    iol_loop *loop = iol_loop_current();
    int baseline = iol_loop_handler_count(loop);
    for (long k = 1; k < 100000; k++) {
        int pair[2];
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
        iol_stream *s = NULL;
        arm(k);
        int rc = iol_tls_stream_new(&s, loop, pair[0], t->ctx, 0);
        bool hit = disarm();
        if (rc == 0) {
            ck_assert_int_eq(iol_stream_close(s), 0); /* closes pair[0] */
            close(pair[1]);
            if (!hit)
                break; /* past the last allocation */
            continue;  /* the failed allocation was optional */
        }
        ck_assert_msg(rc == -ENOMEM, "k=%ld: rc=%d", k, rc);
        t->failures++;
        ck_assert_msg(iol_loop_handler_count(loop) == baseline, "k=%ld: handler count %d, was %d", k,
                      iol_loop_handler_count(loop), baseline);
        ck_assert_int_ge(fcntl(pair[0], F_GETFD), 0); /* not owned: left open */
        iol_stream *again;
        ck_assert_msg((rc = iol_stream_new(&again, loop, pair[0], 0)) == 0, "k=%ld: the fd is not free: %d", k, rc);
        ck_assert_int_eq(iol_stream_close(again), 0);
        close(pair[1]);
    }
    sem_post(&t->done);
}

START_TEST(test_tls_stream_new_enomem_leaves_nothing)
{
    iol_runtime *rt;
    iol_runtime_config cfg = { .workers = 1, .poller = tls_pollers[_i], .drain_timeout = 5 };
    ck_assert_int_eq(iol_runtime_new(&rt, &cfg), 0);
    char cert[128], key[128];
    snprintf(cert, sizeof cert, "%s/cert.pem", cert_dir);
    snprintf(key, sizeof key, "%s/key.pem", cert_dir);
    tls_sweep t = { 0 };
    ck_assert_int_eq(iol_tls_ctx_new(&t.ctx, &(iol_tls_config){ .server = true, .cert_file = cert, .key_file = key }), 0);
    ck_assert_int_eq(sem_init(&t.done, 0, 0), 0);
    ck_assert_int_eq(iol_runtime_start(rt), 0);
    ck_assert_int_eq(iol_runtime_post(rt, 0, tls_sweep_on_worker, &t), 0);
    ck_assert_int_eq(sem_wait(&t.done), 0);
    ck_assert_int_gt(t.failures, 3);
    double t0 = iol_test_now();
    ck_assert_int_eq(iol_runtime_stop(rt), 0);
    ck_assert_int_eq(iol_runtime_join(rt), 0);
    /* Nothing is registered: the 5 s drain ends at once. */
    ck_assert_msg(iol_test_now() - t0 < 3.0, "the drain waited %.2f s", iol_test_now() - t0);
    iol_runtime_free(rt);
    iol_tls_ctx_unref(t.ctx);
    sem_destroy(&t.done);
}
END_TEST
#endif
#endif

START_TEST(test_skipped_without_interposition)
{
    /* The sanitizer's or valgrind's allocator cannot be interposed; see the
     * top. valgrind's own leak check still covers the other suites. */
}
END_TEST

/* Whether our malloc is the one in use (valgrind replaces it). */
static bool malloc_interposed(void)
{
#if FAULTS_SKIP
    return false;
#else
    arm(1);
    void *volatile p = malloc(16);
    disarm();
    free(p);
    return p == NULL;
#endif
}

int main(void)
{
    Suite *s = suite_create("faults");
    TCase *tc = iol_test_tcase("enomem", 120);
    if (!malloc_interposed()) {
        tcase_add_test(tc, test_skipped_without_interposition);
    } else {
#if !FAULTS_SKIP
        tcase_add_loop_test(tc, test_loop_new, 0, NPOLLERS);
        tcase_add_test(tc, test_other_constructors);
        tcase_add_test(tc, test_loop_bound_constructors);
        tcase_add_test(tc, test_add_callback_enomem);
        tcase_add_test(tc, test_add_timeout_enomem);
        tcase_add_test(tc, test_add_timeout_enomem_each_growth);
        tcase_add_loop_test(tc, test_add_handler_enomem, 0, NPOLLERS);
#ifdef IOL_HAVE_TLS
        if (iol_test_make_cert(cert_dir, sizeof cert_dir) == 0)
            tcase_add_loop_test(tc, test_tls_stream_new_enomem_leaves_nothing, 0,
                                (int)(sizeof tls_pollers / sizeof tls_pollers[0]));
        else
            printf("faults: no openssl CLI: the TLS sweep is skipped\n");
#endif
#endif
    }
    suite_add_tcase(s, tc);
    return iol_test_run(s);
}
