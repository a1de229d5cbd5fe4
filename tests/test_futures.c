/* Futures, add_future, the executor and run_sync. */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "ioloop.h"
#include "testutil.h"

static iol_loop *new_loop(void)
{
    iol_loop *loop = NULL;
    ck_assert_int_eq(iol_loop_new(&loop, NULL), 0);
    return loop;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int thread_count(void)
{
    int n = iol_test_dir_entries("/proc/self/task");
    ck_assert_int_gt(n, 0);
    return n;
}

static void *no_op_thread(void *arg) { return arg; }

/* Sanitizer runtimes start a helper thread at the first pthread_create:
 * let that happen before counting threads. */
static void warm_up_threads(void)
{
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, no_op_thread, NULL), 0);
    pthread_join(t, NULL);
}

static void stop_loop(void *arg)
{
    iol_loop_stop(arg);
}

/* ------------------------------------------------------------- futures */

START_TEST(test_future_result)
{
    iol_future *f;
    ck_assert_int_eq(iol_future_new(&f), 0);
    void *r = (void *)1;
    ck_assert(!iol_future_done(f));
    ck_assert_int_eq(iol_future_result(f, &r), -EAGAIN);
    ck_assert_ptr_eq(r, (void *)1);
    ck_assert_int_eq(iol_future_set_result(f, (void *)42), 0);
    ck_assert(iol_future_done(f));
    ck_assert_int_eq(iol_future_result(f, &r), 0);
    ck_assert_ptr_eq(r, (void *)42);
    ck_assert_int_eq(iol_future_result(f, NULL), 0);
    ck_assert_int_eq(iol_future_set_result(f, (void *)43), -EALREADY);
    ck_assert_int_eq(iol_future_set_error(f, -EIO), -EALREADY);
    ck_assert_int_eq(iol_future_result(f, &r), 0);
    ck_assert_ptr_eq(r, (void *)42);
    iol_future_unref(f);

    /* A NULL result is a result. */
    ck_assert_int_eq(iol_future_new(&f), 0);
    ck_assert_int_eq(iol_future_set_result(f, NULL), 0);
    r = (void *)1;
    ck_assert_int_eq(iol_future_result(f, &r), 0);
    ck_assert_ptr_null(r);
    iol_future_unref(f);
}
END_TEST

START_TEST(test_future_error)
{
    iol_future *f;
    ck_assert_int_eq(iol_future_new(&f), 0);
    ck_assert_int_eq(iol_future_set_error(f, 0), -EINVAL);
    ck_assert_int_eq(iol_future_set_error(f, 5), -EINVAL);
    ck_assert(!iol_future_done(f));
    ck_assert_int_eq(iol_future_set_error(f, -EIO), 0);
    ck_assert(iol_future_done(f));
    void *r = (void *)1;
    ck_assert_int_eq(iol_future_result(f, &r), -EIO);
    ck_assert_ptr_eq(r, (void *)1); /* untouched on error */
    ck_assert_int_eq(iol_future_set_error(f, -EPIPE), -EALREADY);
    ck_assert_int_eq(iol_future_set_result(f, NULL), -EALREADY);
    ck_assert_int_eq(iol_future_result(f, NULL), -EIO);
    iol_future_unref(f);
}
END_TEST

START_TEST(test_future_refs_and_bad_args)
{
    iol_future *f;
    ck_assert_int_eq(iol_future_new(&f), 0);
    ck_assert_ptr_eq(iol_future_ref(f), f);
    ck_assert_ptr_eq(iol_future_ref(f), f);
    iol_future_unref(f);
    iol_future_unref(f);
    ck_assert_int_eq(iol_future_set_result(f, NULL), 0); /* still alive */
    iol_future_unref(f);                                 /* freed: valgrind checks */

    ck_assert_int_eq(iol_future_new(NULL), -EINVAL);
    ck_assert_int_eq(iol_future_set_result(NULL, NULL), -EINVAL);
    ck_assert_int_eq(iol_future_set_error(NULL, -EIO), -EINVAL);
    ck_assert(!iol_future_done(NULL));
    ck_assert_int_eq(iol_future_result(NULL, NULL), -EINVAL);
    ck_assert_ptr_null(iol_future_ref(NULL));
    iol_future_unref(NULL);
}
END_TEST

/* ----------------------------------------------------------- add_future */

typedef struct done_record {
    iol_loop *loop;
    pthread_t thread;
    int calls;
    int rc;
    void *value;
    int order[8];
    bool stop;
} done_record;

static void on_done(iol_future *f, void *arg)
{
    done_record *d = arg;
    d->thread = pthread_self();
    d->rc = iol_future_result(f, &d->value);
    d->calls++;
    if (d->stop)
        iol_loop_stop(d->loop);
}

static void *resolve_later(void *arg)
{
    iol_future *f = arg;
    sleep_ms(20);
    ck_assert_int_eq(iol_future_set_result(f, (void *)99), 0);
    iol_future_unref(f);
    return NULL;
}

START_TEST(test_add_future_other_thread)
{
    iol_loop *loop = new_loop();
    iol_future *f;
    ck_assert_int_eq(iol_future_new(&f), 0);
    done_record d = {.loop = loop, .stop = true};
    ck_assert_int_eq(iol_loop_add_future(loop, f, on_done, &d), 0);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, resolve_later, iol_future_ref(f)), 0);
    ck_assert_int_eq(iol_loop_start(loop), 0);
    pthread_join(t, NULL);
    ck_assert_int_eq(d.calls, 1);
    ck_assert(pthread_equal(d.thread, pthread_self())); /* on the loop's thread */
    ck_assert_int_eq(d.rc, 0);
    ck_assert_ptr_eq(d.value, (void *)99);
    iol_future_unref(f);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
}
END_TEST

static void check_not_yet(void *arg)
{
    done_record *d = arg;
    /* The callback queued before add_future's one runs first. */
    ck_assert_int_eq(d->calls, 0);
}

typedef struct same_batch {
    iol_future *f;
    done_record d;
    int calls_after_add;
} same_batch;

static void add_inside_callback(void *arg)
{
    same_batch *b = arg;
    ck_assert_int_eq(iol_loop_add_future(b->d.loop, b->f, on_done, &b->d), 0);
    b->calls_after_add = b->d.calls;
}

START_TEST(test_add_future_already_done)
{
    iol_loop *loop = new_loop();
    iol_future *f;
    ck_assert_int_eq(iol_future_new(&f), 0);
    ck_assert_int_eq(iol_future_set_error(f, -ECANCELED), 0);
    done_record d = {.loop = loop, .stop = true};
    iol_loop_add_callback(loop, check_not_yet, &d);
    ck_assert_int_eq(iol_loop_add_future(loop, f, on_done, &d), 0);
    ck_assert_int_eq(d.calls, 0); /* never synchronously */
    ck_assert_int_eq(iol_loop_start(loop), 0);
    ck_assert_int_eq(d.calls, 1);
    ck_assert_int_eq(d.rc, -ECANCELED);

    /* From inside a running callback too: not within that callback. */
    same_batch b = {.f = f, .d = {.loop = loop, .stop = true}, .calls_after_add = -1};
    iol_loop_add_callback(loop, add_inside_callback, &b);
    ck_assert_int_eq(iol_loop_start(loop), 0);
    ck_assert_int_eq(b.calls_after_add, 0);
    ck_assert_int_eq(b.d.calls, 1);
    iol_future_unref(f);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
}
END_TEST

static int order_seen[8];
static int norder;
static void record_order(iol_future *f, void *arg)
{
    (void)f;
    order_seen[norder++] = (int)(intptr_t)arg;
}

START_TEST(test_add_future_order_and_refs)
{
    iol_loop *loop = new_loop();
    iol_future *f;
    ck_assert_int_eq(iol_future_new(&f), 0);
    norder = 0;
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(iol_loop_add_future(loop, f, record_order, (void *)(intptr_t)i), 0);
    /* The registrations hold their own references. */
    iol_future_unref(f);
    ck_assert_int_eq(iol_future_set_result(f, NULL), 0);
    iol_loop_call_later(loop, 0.01, stop_loop, loop, NULL);
    iol_loop_start(loop);
    ck_assert_int_eq(norder, 4);
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(order_seen[i], i);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
}
END_TEST

START_TEST(test_add_future_closed_loop)
{
    iol_loop *loop = new_loop();
    iol_future *f, *g;
    ck_assert_int_eq(iol_future_new(&f), 0);
    ck_assert_int_eq(iol_future_new(&g), 0);
    done_record d = {.loop = loop};
    ck_assert_int_eq(iol_loop_add_future(loop, f, on_done, &d), 0);
    iol_loop_ref(loop);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
    ck_assert_int_eq(iol_loop_add_future(loop, g, on_done, &d), -ESHUTDOWN);
    iol_loop_unref(loop);
    /* Resolving after close: the waiter finds the loop shut and lets go
     * of everything (valgrind: nothing leaks, nothing is touched late). */
    ck_assert_int_eq(iol_future_set_result(f, NULL), 0);
    ck_assert_int_eq(d.calls, 0);
    iol_future_unref(f);
    iol_future_unref(g);
}
END_TEST

static void never(iol_future *f, void *arg)
{
    (void)f;
    (void)arg;
    ck_abort_msg("must not run");
}

START_TEST(test_add_future_bad_args)
{
    iol_loop *loop = new_loop();
    iol_future *f;
    ck_assert_int_eq(iol_future_new(&f), 0);
    ck_assert_int_eq(iol_loop_add_future(NULL, f, never, NULL), -EINVAL);
    ck_assert_int_eq(iol_loop_add_future(loop, NULL, never, NULL), -EINVAL);
    ck_assert_int_eq(iol_loop_add_future(loop, f, NULL, NULL), -EINVAL);
    iol_future_unref(f);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
}
END_TEST

/* Many futures resolved on pool threads while the loop waits (TSan food). */
typedef struct fan_in {
    iol_loop *loop;
    int expected, got, sum;
} fan_in;

static int return_arg(void *arg, void **result)
{
    *result = arg;
    return 0;
}

static void fan_in_done(iol_future *f, void *arg)
{
    fan_in *fi = arg;
    void *v;
    ck_assert_int_eq(iol_future_result(f, &v), 0);
    fi->sum += (int)(intptr_t)v;
    if (++fi->got == fi->expected)
        iol_loop_stop(fi->loop);
}

START_TEST(test_many_futures_from_pool)
{
    iol_loop *loop = new_loop();
    iol_executor *ex;
    ck_assert_int_eq(iol_executor_new(&ex, 2), 0);
    fan_in fi = {.loop = loop, .expected = (int)iol_test_scaled(2000, 20)};
    int want = 0;
    for (int i = 0; i < fi.expected; i++) {
        iol_future *f;
        ck_assert_int_eq(iol_loop_run_in_executor(loop, ex, return_arg, (void *)(intptr_t)i, &f), 0);
        ck_assert_int_eq(iol_loop_add_future(loop, f, fan_in_done, &fi), 0);
        iol_future_unref(f);
        want += i;
    }
    ck_assert_int_eq(iol_loop_start(loop), 0);
    ck_assert_int_eq(fi.got, fi.expected);
    ck_assert_int_eq(fi.sum, want);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
    iol_executor_free(ex);
}
END_TEST

/* ------------------------------------------------------------ executor */

static _Atomic pthread_t worker_seen;

static int work_ok(void *arg, void **result)
{
    atomic_store(&worker_seen, pthread_self());
    *result = arg;
    return 0;
}

static int work_fail(void *arg, void **result)
{
    (void)arg;
    *result = (void *)1; /* ignored on failure */
    return -EIO;
}

typedef struct pair_wait {
    iol_loop *loop;
    int left;
} pair_wait;

static void pair_done(iol_future *f, void *arg)
{
    (void)f;
    pair_wait *p = arg;
    if (--p->left == 0)
        iol_loop_stop(p->loop);
}

START_TEST(test_run_in_executor_default)
{
    iol_loop *loop = new_loop();
    warm_up_threads();
    int before = thread_count();
    iol_future *ok, *bad;
    ck_assert_int_eq(iol_loop_run_in_executor(loop, NULL, work_ok, (void *)7, &ok), 0);
    ck_assert_int_gt(thread_count(), before); /* created on first use */
    ck_assert_int_eq(iol_loop_run_in_executor(loop, NULL, work_fail, NULL, &bad), 0);
    pair_wait p = {.loop = loop, .left = 2};
    iol_loop_add_future(loop, ok, pair_done, &p);
    iol_loop_add_future(loop, bad, pair_done, &p);
    ck_assert_int_eq(iol_loop_start(loop), 0);
    void *v = NULL;
    ck_assert_int_eq(iol_future_result(ok, &v), 0);
    ck_assert_ptr_eq(v, (void *)7);
    ck_assert_int_eq(iol_future_result(bad, &v), -EIO);
    ck_assert(!pthread_equal(atomic_load(&worker_seen), pthread_self()));
    iol_future_unref(ok);
    iol_future_unref(bad);
    /* The loop owns its default executor: closing frees it and joins its
     * threads (valgrind would see the leak otherwise). */
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
    /* A joined thread may linger in /proc for a moment after its exit. */
    for (int i = 0; i < 200 && thread_count() > before; i++)
        sleep_ms(10);
    ck_assert_int_le(thread_count(), before);
}
END_TEST

START_TEST(test_set_default_executor)
{
    iol_loop *loop = new_loop();
    iol_executor *ex;
    ck_assert_int_eq(iol_executor_new(&ex, 1), 0);
    ck_assert_int_eq(iol_loop_set_default_executor(loop, ex), 0);
    iol_future *a, *b;
    ck_assert_int_eq(iol_loop_run_in_executor(loop, ex, work_ok, NULL, &a), 0);
    pair_wait p = {.loop = loop, .left = 1};
    iol_loop_add_future(loop, a, pair_done, &p);
    iol_loop_start(loop);
    int before = thread_count(); /* with the user's pool's one thread */
    pthread_t explicit_thread = atomic_load(&worker_seen);
    ck_assert_int_eq(iol_loop_run_in_executor(loop, NULL, work_ok, NULL, &b), 0);
    ck_assert_int_eq(thread_count(), before); /* no default pool was made */
    p.left = 1;
    iol_loop_add_future(loop, b, pair_done, &p);
    iol_loop_start(loop);
    /* One-thread pool: both ran on the same thread, the user's pool. */
    ck_assert(pthread_equal(atomic_load(&worker_seen), explicit_thread));
    iol_future_unref(a);
    iol_future_unref(b);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
    iol_executor_free(ex); /* not owned by the loop */
}
END_TEST

/* Threads start on demand: none at creation, one per item that finds no
 * idle worker, never more than the pool's size, and an idle one is
 * reused rather than a new one started. */
static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static bool gate_open;
static _Atomic int gate_waiting;

static int gated(void *arg, void **result)
{
    (void)arg;
    (void)result;
    pthread_mutex_lock(&gate_lock);
    atomic_fetch_add(&gate_waiting, 1);
    while (!gate_open)
        pthread_cond_wait(&gate_cond, &gate_lock);
    pthread_mutex_unlock(&gate_lock);
    return 0;
}

static void wait_future(iol_loop *loop, iol_future *f)
{
    pair_wait p = {.loop = loop, .left = 1};
    ck_assert_int_eq(iol_loop_add_future(loop, f, pair_done, &p), 0);
    iol_loop_start(loop);
    ck_assert(iol_future_done(f));
    iol_future_unref(f);
}

START_TEST(test_executor_threads_on_demand)
{
    iol_loop *loop = new_loop();
    warm_up_threads();
    int base = thread_count();
    iol_executor *ex;
    ck_assert_int_eq(iol_executor_new(&ex, 3), 0);
    ck_assert_int_eq(thread_count(), base);
    /* The loop's own default pool, too, costs nothing until used. */
    iol_future *f;
    for (int i = 0; i < 5; i++) { /* one at a time: the idle one is reused */
        ck_assert_int_eq(iol_loop_run_in_executor(loop, ex, work_ok, NULL, &f), 0);
        wait_future(loop, f);
    }
    ck_assert_int_eq(thread_count(), base + 1);

    /* Five blocking items at once: two more threads, then the size caps. */
    gate_open = false;
    atomic_store(&gate_waiting, 0);
    iol_future *fs[5];
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(iol_loop_run_in_executor(loop, ex, gated, NULL, &fs[i]), 0);
    while (atomic_load(&gate_waiting) < 3)
        sleep_ms(1);
    ck_assert_int_eq(thread_count(), base + 3);
    pthread_mutex_lock(&gate_lock);
    gate_open = true;
    pthread_cond_broadcast(&gate_cond);
    pthread_mutex_unlock(&gate_lock);
    for (int i = 0; i < 5; i++)
        wait_future(loop, fs[i]);
    ck_assert_int_eq(atomic_load(&gate_waiting), 5);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
    iol_executor_free(ex);
    /* A joined thread may linger in /proc for a moment after its exit. */
    for (int i = 0; i < 200 && thread_count() > base; i++)
        sleep_ms(10);
    ck_assert_int_eq(thread_count(), base);
}
END_TEST

START_TEST(test_replace_owned_default_executor)
{
    iol_loop *loop = new_loop();
    iol_future *a;
    ck_assert_int_eq(iol_loop_run_in_executor(loop, NULL, work_ok, NULL, &a), 0);
    iol_executor *ex;
    ck_assert_int_eq(iol_executor_new(&ex, 1), 0);
    /* The owned default pool finishes its work and goes away. */
    ck_assert_int_eq(iol_loop_set_default_executor(loop, ex), 0);
    ck_assert(iol_future_done(a));
    iol_future_unref(a);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
    iol_executor_free(ex);
}
END_TEST

static _Atomic int finished;

static int slow_count(void *arg, void **result)
{
    (void)result;
    if (arg)
        sleep_ms(20);
    /* relaxed: a plain counter, read after the pool's threads are joined. */
    atomic_fetch_add_explicit(&finished, 1, memory_order_relaxed);
    return 0;
}

START_TEST(test_executor_free_finishes_queue)
{
    iol_loop *loop = new_loop();
    iol_executor *ex;
    ck_assert_int_eq(iol_executor_new(&ex, 1), 0);
    int n = (int)iol_test_scaled(100, 10);
    iol_future **fs = calloc((size_t)n, sizeof(*fs));
    atomic_store(&finished, 0);
    for (int i = 0; i < n; i++)
        ck_assert_int_eq(iol_loop_run_in_executor(loop, ex, slow_count, i == 0 ? (void *)1 : NULL, &fs[i]), 0);
    iol_executor_free(ex);
    ck_assert_int_eq(atomic_load(&finished), n);
    for (int i = 0; i < n; i++) {
        ck_assert(iol_future_done(fs[i]));
        iol_future_unref(fs[i]);
    }
    free(fs);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
}
END_TEST

typedef struct wrong_thread {
    iol_loop *loop;
    int run_rc, set_rc;
} wrong_thread;

static void *call_from_other_thread(void *arg)
{
    wrong_thread *w = arg;
    iol_future *f = NULL;
    w->run_rc = iol_loop_run_in_executor(w->loop, NULL, work_ok, NULL, &f);
    w->set_rc = iol_loop_set_default_executor(w->loop, (iol_executor *)w);
    return NULL;
}

static void spawn_wrong_thread(void *arg)
{
    wrong_thread *w = arg;
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, call_from_other_thread, w), 0);
    pthread_join(t, NULL);
    iol_loop_stop(w->loop);
}

START_TEST(test_executor_bad_args)
{
    iol_executor *ex = (iol_executor *)(uintptr_t)1;
    ck_assert_int_eq(iol_executor_new(NULL, 1), -EINVAL);
    ck_assert_int_eq(iol_executor_new(&ex, 1025), -EINVAL);
    ck_assert_ptr_eq(ex, (iol_executor *)(uintptr_t)1);
    ck_assert_int_eq(iol_executor_new(&ex, 0), 0); /* one per CPU */
    iol_executor_free(ex);
    iol_executor_free(NULL);

    iol_loop *loop = new_loop();
    iol_future *f = (iol_future *)(uintptr_t)1;
    ck_assert_int_eq(iol_loop_run_in_executor(NULL, NULL, work_ok, NULL, &f), -EINVAL);
    ck_assert_int_eq(iol_loop_run_in_executor(loop, NULL, NULL, NULL, &f), -EINVAL);
    ck_assert_int_eq(iol_loop_run_in_executor(loop, NULL, work_ok, NULL, NULL), -EINVAL);
    ck_assert_ptr_eq(f, (iol_future *)(uintptr_t)1);
    ck_assert_int_eq(iol_loop_set_default_executor(NULL, NULL), -EINVAL);
    ck_assert_int_eq(iol_loop_set_default_executor(loop, NULL), -EINVAL);

    /* Loop-thread calls from another thread while it runs. */
    wrong_thread w = {.loop = loop};
    iol_loop_add_callback(loop, spawn_wrong_thread, &w);
    iol_loop_start(loop);
    ck_assert_int_eq(w.run_rc, -EPERM);
    ck_assert_int_eq(w.set_rc, -EPERM);

    iol_loop_ref(loop);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
    ck_assert_int_eq(iol_loop_run_in_executor(loop, NULL, work_ok, NULL, &f), -ESHUTDOWN);
    ck_assert_int_eq(iol_executor_new(&ex, 1), 0);
    ck_assert_int_eq(iol_loop_set_default_executor(loop, ex), -ESHUTDOWN);
    iol_executor_free(ex);
    iol_loop_unref(loop);
}
END_TEST

/* ------------------------------------------------------------ run_sync */

static int sync_result(iol_loop *loop, iol_future *done, void *arg)
{
    ck_assert_ptr_eq(iol_loop_current(), loop);
    ck_assert(iol_loop_running(loop));
    return iol_future_set_result(done, arg);
}

static void resolve_done(void *arg)
{
    iol_future *done = arg;
    iol_future_set_result(done, (void *)11);
    iol_future_unref(done);
}

static int sync_later(iol_loop *loop, iol_future *done, void *arg)
{
    (void)arg;
    return iol_loop_call_later(loop, 0.01, resolve_done, iol_future_ref(done), NULL);
}

static int sync_fn_error(iol_loop *loop, iol_future *done, void *arg)
{
    (void)loop;
    (void)done;
    (void)arg;
    return -EIO;
}

static int sync_future_error(iol_loop *loop, iol_future *done, void *arg)
{
    (void)loop;
    (void)arg;
    return iol_future_set_error(done, -ENOENT);
}

static int sync_never(iol_loop *loop, iol_future *done, void *arg)
{
    (void)loop;
    (void)done;
    (void)arg;
    return 0;
}

static void chain_to_done(iol_future *f, void *arg)
{
    void *v = NULL;
    int rc = iol_future_result(f, &v);
    if (rc < 0)
        iol_future_set_error(arg, rc);
    else
        iol_future_set_result(arg, v);
    iol_future_unref(arg);
}

static int sync_executor(iol_loop *loop, iol_future *done, void *arg)
{
    iol_future *f;
    int rc = iol_loop_run_in_executor(loop, NULL, return_arg, arg, &f);
    if (rc < 0)
        return rc;
    rc = iol_loop_add_future(loop, f, chain_to_done, iol_future_ref(done));
    iol_future_unref(f);
    return rc;
}

START_TEST(test_run_sync_results)
{
    iol_loop *loop = new_loop();
    void *r = NULL;
    ck_assert_int_eq(iol_loop_run_sync(loop, sync_result, (void *)5, 0, &r), 0);
    ck_assert_ptr_eq(r, (void *)5);
    ck_assert_int_eq(iol_loop_run_sync(loop, sync_result, (void *)6, 5.0, NULL), 0);
    ck_assert_int_eq(iol_loop_run_sync(loop, sync_later, NULL, 5.0, &r), 0);
    ck_assert_ptr_eq(r, (void *)11);
    ck_assert_int_eq(iol_loop_run_sync(loop, sync_executor, (void *)12, 5.0, &r), 0);
    ck_assert_ptr_eq(r, (void *)12);
    r = (void *)1;
    ck_assert_int_eq(iol_loop_run_sync(loop, sync_fn_error, NULL, 5.0, &r), -EIO);
    ck_assert_int_eq(iol_loop_run_sync(loop, sync_future_error, NULL, 0, &r), -ENOENT);
    ck_assert_ptr_eq(r, (void *)1); /* untouched on errors */
    ck_assert(!iol_loop_running(loop));
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
}
END_TEST

START_TEST(test_run_sync_timeout_then_usable)
{
    iol_loop *loop = new_loop();
    double t0 = iol_test_now();
    ck_assert_int_eq(iol_loop_run_sync(loop, sync_never, NULL, 0.05, NULL), -ETIMEDOUT);
    double elapsed = iol_test_now() - t0;
    ck_assert(elapsed >= 0.045);
    ck_assert(elapsed < 10.0);

    /* Usable afterwards: another run_sync, and a plain run that is not cut
     * short by anything left over. */
    void *r = NULL;
    ck_assert_int_eq(iol_loop_run_sync(loop, sync_result, (void *)3, 1.0, &r), 0);
    ck_assert_ptr_eq(r, (void *)3);
    t0 = iol_test_now();
    iol_loop_call_later(loop, 0.03, stop_loop, loop, NULL);
    ck_assert_int_eq(iol_loop_start(loop), 0);
    ck_assert(iol_test_now() - t0 >= 0.025);
    /* Nothing of the runs stays queued: close drops nothing. */
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
}
END_TEST

static void *resolve_after_100ms(void *arg)
{
    iol_future *done = arg;
    sleep_ms(100);
    iol_future_set_result(done, NULL);
    iol_future_unref(done);
    return NULL;
}

static pthread_t late_thread;
static int sync_late_thread(iol_loop *loop, iol_future *done, void *arg)
{
    (void)loop;
    (void)arg;
    return -pthread_create(&late_thread, NULL, resolve_after_100ms, iol_future_ref(done));
}

START_TEST(test_run_sync_late_resolution)
{
    /* done resolves on another thread after run_sync timed out: that must
     * not stop a later run of the loop. */
    iol_loop *loop = new_loop();
    ck_assert_int_eq(iol_loop_run_sync(loop, sync_late_thread, NULL, 0.02, NULL), -ETIMEDOUT);
    pthread_join(late_thread, NULL);
    double t0 = iol_test_now();
    iol_loop_call_later(loop, 0.03, stop_loop, loop, NULL);
    ck_assert_int_eq(iol_loop_start(loop), 0);
    ck_assert(iol_test_now() - t0 >= 0.025);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
}
END_TEST

typedef struct race_arg {
    iol_future *done;
    int delay_us;
} race_arg;

static void *resolve_after_delay(void *arg)
{
    race_arg *r = arg;
    struct timespec ts = {0, (long)r->delay_us * 1000L};
    nanosleep(&ts, NULL);
    iol_future_set_result(r->done, (void *)1);
    iol_future_unref(r->done);
    return NULL;
}

static pthread_t race_thread;
static race_arg race;
static int sync_race(iol_loop *loop, iol_future *done, void *arg)
{
    (void)loop;
    race.done = iol_future_ref(done);
    race.delay_us = (int)(intptr_t)arg;
    return -pthread_create(&race_thread, NULL, resolve_after_delay, &race);
}

START_TEST(test_run_sync_resolution_races_timeout)
{
    /* Resolution on another thread around the moment of the timeout:
     * either outcome is fine, but no run may leave a stop behind for the
     * next one. */
    iol_loop *loop = new_loop();
    int n = (int)iol_test_scaled(40, 4);
    for (int i = 0; i < n; i++) {
        void *r = NULL;
        int rc = iol_loop_run_sync(loop, sync_race, (void *)(intptr_t)(3000 + (i % 5) * 500), 0.004, &r);
        ck_assert_msg(rc == 0 || rc == -ETIMEDOUT, "rc %d", rc);
        if (rc == 0)
            ck_assert_ptr_eq(r, (void *)1);
        pthread_join(race_thread, NULL);
        double t0 = iol_test_now();
        iol_loop_call_later(loop, 0.005, stop_loop, loop, NULL);
        ck_assert_int_eq(iol_loop_start(loop), 0);
        ck_assert_msg(iol_test_now() - t0 >= 0.004, "run %d: start returned at once", i);
    }
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
}
END_TEST

static int nested_rc;
static int sync_nested(iol_loop *loop, iol_future *done, void *arg)
{
    (void)arg;
    nested_rc = iol_loop_run_sync(loop, sync_result, NULL, 0, NULL);
    return iol_future_set_result(done, NULL);
}

static void run_sync_in_callback(void *arg)
{
    nested_rc = iol_loop_run_sync(arg, sync_result, NULL, 0, NULL);
    iol_loop_stop(arg);
}

START_TEST(test_run_sync_busy_and_bad_args)
{
    iol_loop *loop = new_loop();
    nested_rc = 0;
    ck_assert_int_eq(iol_loop_run_sync(loop, sync_nested, NULL, 1.0, NULL), 0);
    ck_assert_int_eq(nested_rc, -EBUSY);
    nested_rc = 0;
    iol_loop_add_callback(loop, run_sync_in_callback, loop);
    iol_loop_start(loop);
    ck_assert_int_eq(nested_rc, -EBUSY);

    ck_assert_int_eq(iol_loop_run_sync(NULL, sync_result, NULL, 0, NULL), -EINVAL);
    ck_assert_int_eq(iol_loop_run_sync(loop, NULL, NULL, 0, NULL), -EINVAL);
    iol_loop_ref(loop);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
    ck_assert_int_eq(iol_loop_run_sync(loop, sync_result, NULL, 0, NULL), -ESHUTDOWN);
    iol_loop_unref(loop);
}
END_TEST

START_TEST(test_run_sync_current)
{
    iol_loop *other = new_loop(); /* current (IF_NONE) */
    ck_assert_ptr_eq(iol_loop_current(), other);
    iol_loop_config cfg = {.make_current = IOL_CURRENT_NEVER};
    iol_loop *loop;
    ck_assert_int_eq(iol_loop_new(&loop, &cfg), 0);
    /* sync_result checks that loop is current while fn runs. */
    ck_assert_int_eq(iol_loop_run_sync(loop, sync_result, NULL, 0, NULL), 0);
    ck_assert_ptr_eq(iol_loop_current(), other);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
    ck_assert_int_eq(iol_loop_close(other, false), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("futures");
    TCase *tc = iol_test_tcase("future", 10);
    tcase_add_test(tc, test_future_result);
    tcase_add_test(tc, test_future_error);
    tcase_add_test(tc, test_future_refs_and_bad_args);
    suite_add_tcase(s, tc);

    tc = iol_test_tcase("add_future", 30);
    tcase_add_test(tc, test_add_future_other_thread);
    tcase_add_test(tc, test_add_future_already_done);
    tcase_add_test(tc, test_add_future_order_and_refs);
    tcase_add_test(tc, test_add_future_closed_loop);
    tcase_add_test(tc, test_add_future_bad_args);
    tcase_add_test(tc, test_many_futures_from_pool);
    suite_add_tcase(s, tc);

    tc = iol_test_tcase("executor", 30);
    tcase_add_test(tc, test_run_in_executor_default);
    tcase_add_test(tc, test_set_default_executor);
    tcase_add_test(tc, test_executor_threads_on_demand);
    tcase_add_test(tc, test_replace_owned_default_executor);
    tcase_add_test(tc, test_executor_free_finishes_queue);
    tcase_add_test(tc, test_executor_bad_args);
    suite_add_tcase(s, tc);

    tc = iol_test_tcase("run_sync", 30);
    tcase_add_test(tc, test_run_sync_results);
    tcase_add_test(tc, test_run_sync_timeout_then_usable);
    tcase_add_test(tc, test_run_sync_late_resolution);
    tcase_add_test(tc, test_run_sync_resolution_races_timeout);
    tcase_add_test(tc, test_run_sync_busy_and_bad_args);
    tcase_add_test(tc, test_run_sync_current);
    suite_add_tcase(s, tc);
    return iol_test_run(s);
}
