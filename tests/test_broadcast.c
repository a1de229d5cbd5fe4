/* iol_runtime_broadcast_ex: fn on every worker, then done exactly once. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "ioloop.h"
#include "testutil.h"

enum { WORKERS = 4, MAX_WORKERS = 8 };

static atomic_int dones;    /* done callbacks run, all broadcasts */
static atomic_int fn_calls; /* fn calls, all broadcasts */

/* What one broadcast carries: freed by its done (LeakSanitizer checks
 * that every done ran). */
typedef struct message {
    unsigned workers;                /* the runtime's size */
    atomic_int ran[MAX_WORKERS];     /* fn calls per worker */
    atomic_int outside;              /* fn calls not on a worker */
    bool expect_all;                 /* done must come after every worker's fn */
} message;

static message *message_new(unsigned workers, bool expect_all)
{
    message *m = calloc(1, sizeof(*m));
    ck_assert_ptr_nonnull(m);
    m->workers = workers;
    m->expect_all = expect_all;
    return m;
}

static void deliver(void *arg)
{
    message *m = arg;
    int w = iol_runtime_worker_index();
    atomic_fetch_add(&fn_calls, 1);
    if (w < 0 || w >= MAX_WORKERS)
        atomic_fetch_add(&m->outside, 1);
    else
        atomic_fetch_add(&m->ran[w], 1);
}

static void message_done(void *arg)
{
    message *m = arg;
    /* Each fn happens-before done: plain loads would do; HOT_ASSERT keeps
     * Check's pipe out of the hot path. */
    for (unsigned w = 0; w < m->workers; w++) {
        int ran = atomic_load(&m->ran[w]);
        HOT_ASSERT(m->expect_all ? ran == 1 : ran <= 1);
    }
    HOT_ASSERT(atomic_load(&m->outside) == 0);
    atomic_fetch_add(&dones, 1);
    free(m);
}

static iol_runtime *new_runtime(void)
{
    iol_runtime *rt = NULL;
    ck_assert_int_eq(iol_runtime_new(&rt, &(iol_runtime_config){.workers = WORKERS}), 0);
    return rt;
}

/* Several threads broadcasting at once (TSan food): every done runs once,
 * after every worker ran fn. */
typedef struct sender {
    iol_runtime *rt;
    int count;
} sender;

static void *send_many(void *arg)
{
    sender *s = arg;
    for (int i = 0; i < s->count; i++) {
        message *m = message_new(WORKERS, true);
        HOT_ASSERT(iol_runtime_broadcast_ex(s->rt, deliver, m, message_done, m) == 0);
    }
    return NULL;
}

START_TEST(test_done_after_every_worker)
{
    atomic_store(&dones, 0);
    atomic_store(&fn_calls, 0);
    iol_runtime *rt = new_runtime();
    ck_assert_int_eq(iol_runtime_start(rt), 0);
    enum { SENDERS = 4 };
    int per = (int)iol_test_scaled(2000, 50);
    sender s = {.rt = rt, .count = per};
    pthread_t t[SENDERS];
    for (int i = 0; i < SENDERS; i++)
        ck_assert_int_eq(pthread_create(&t[i], NULL, send_many, &s), 0);
    for (int i = 0; i < SENDERS; i++)
        pthread_join(t[i], NULL);
    double deadline = iol_test_now() + 30;
    while (atomic_load(&dones) < SENDERS * per && iol_test_now() < deadline)
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    ck_assert_int_eq(atomic_load(&dones), SENDERS * per);
    ck_assert_int_eq(atomic_load(&fn_calls), SENDERS * per * WORKERS);
    iol_runtime_free(rt);
    ck_assert_int_eq(atomic_load(&dones), SENDERS * per);
}
END_TEST

/* From a worker, to every worker (itself included), and per-sender order:
 * a sender's broadcasts run in order on every worker. */
typedef struct ordered {
    int seq;
    atomic_int *last_seen; /* [WORKERS] */
    atomic_int *disorder;
} ordered;

static void check_order(void *arg)
{
    ordered *o = arg;
    int w = iol_runtime_worker_index();
    HOT_ASSERT(w >= 0 && w < WORKERS);
    if (atomic_load(&o->last_seen[w]) != o->seq - 1)
        atomic_fetch_add(o->disorder, 1);
    atomic_store(&o->last_seen[w], o->seq);
}

static void ordered_done(void *arg)
{
    atomic_fetch_add(&dones, 1);
    free(arg);
}

typedef struct from_worker {
    iol_runtime *rt;
    int count;
    atomic_int last_seen[WORKERS];
    atomic_int disorder;
} from_worker;

static void send_from_worker(void *arg)
{
    from_worker *fw = arg;
    for (int i = 0; i < fw->count; i++) {
        ordered *o = malloc(sizeof(*o));
        HOT_ASSERT(o);
        *o = (ordered){.seq = i, .last_seen = fw->last_seen, .disorder = &fw->disorder};
        HOT_ASSERT(iol_runtime_broadcast_ex(fw->rt, check_order, o, ordered_done, o) == 0);
    }
}

START_TEST(test_order_from_a_worker)
{
    atomic_store(&dones, 0);
    iol_runtime *rt = new_runtime();
    from_worker fw = {.rt = rt, .count = (int)iol_test_scaled(5000, 100)};
    for (int w = 0; w < WORKERS; w++)
        atomic_init(&fw.last_seen[w], -1);
    ck_assert_int_eq(iol_runtime_start(rt), 0);
    ck_assert_int_eq(iol_runtime_post(rt, 1, send_from_worker, &fw), 0);
    double deadline = iol_test_now() + 30;
    while (atomic_load(&dones) < fw.count && iol_test_now() < deadline)
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    iol_runtime_free(rt);
    ck_assert_int_eq(atomic_load(&dones), fw.count);
    ck_assert_int_eq(atomic_load(&fw.disorder), 0);
    for (int w = 0; w < WORKERS; w++)
        ck_assert_int_eq(atomic_load(&fw.last_seen[w]), fw.count - 1);
}
END_TEST

/* Broadcasts still queued when stop comes (the workers are held in a
 * callback): each runs on every worker during the stop, done once, all
 * before join returns; after stop, -ESHUTDOWN and nothing runs. */
static atomic_bool gate_open;

static void hold_worker(void *arg)
{
    (void)arg;
    while (!atomic_load(&gate_open))
        nanosleep(&(struct timespec){0, 1000000}, NULL);
}

static void *stop_then_open(void *arg)
{
    iol_runtime_stop(arg);
    atomic_store(&gate_open, true);
    return NULL;
}

static void never(void *arg)
{
    (void)arg;
    ck_abort_msg("must not run");
}

/* A started runtime whose workers wait at the (closed) gate, with n
 * broadcasts queued behind; dones starts at 0. */
static iol_runtime *runtime_with_queued(int n)
{
    atomic_store(&dones, 0);
    atomic_store(&gate_open, false);
    iol_runtime *rt = new_runtime();
    ck_assert_int_eq(iol_runtime_start(rt), 0);
    ck_assert_int_eq(iol_runtime_broadcast(rt, hold_worker, NULL), 0);
    for (int i = 0; i < n; i++) {
        message *m = message_new(WORKERS, true);
        ck_assert_int_eq(iol_runtime_broadcast_ex(rt, deliver, m, message_done, m), 0);
    }
    return rt;
}

START_TEST(test_queued_across_stop)
{
    int n = (int)iol_test_scaled(500, 20);
    iol_runtime *rt = runtime_with_queued(n);
    ck_assert_int_eq(atomic_load(&dones), 0);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, stop_then_open, rt), 0);
    pthread_join(t, NULL);
    ck_assert_int_eq(iol_runtime_broadcast_ex(rt, never, NULL, never, NULL), -ESHUTDOWN);
    ck_assert_int_eq(iol_runtime_join(rt), 0);
    ck_assert_int_eq(atomic_load(&dones), n);
    iol_runtime_free(rt);
    ck_assert_int_eq(atomic_load(&dones), n);
}
END_TEST

/* iol_runtime_free (stop, join, free in one) with broadcasts queued
 * behind held workers: each still runs everywhere and done runs once. */
static void *open_gate_later(void *arg)
{
    (void)arg;
    nanosleep(&(struct timespec){0, 50 * 1000000}, NULL);
    atomic_store(&gate_open, true);
    return NULL;
}

START_TEST(test_queued_across_free)
{
    int n = (int)iol_test_scaled(500, 20);
    iol_runtime *rt = runtime_with_queued(n);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, open_gate_later, NULL), 0);
    iol_runtime_free(rt);
    pthread_join(t, NULL);
    ck_assert_int_eq(atomic_load(&dones), n);
}
END_TEST

/* Freed without being started: fn ran nowhere, done runs once in free
 * (and the messages are not leaked). */
START_TEST(test_free_without_start)
{
    atomic_store(&dones, 0);
    atomic_store(&fn_calls, 0);
    iol_runtime *rt = new_runtime();
    int n = 10;
    for (int i = 0; i < n; i++) {
        message *m = message_new(WORKERS, false);
        ck_assert_int_eq(iol_runtime_broadcast_ex(rt, deliver, m, message_done, m), 0);
    }
    /* done NULL is allowed: nothing runs after the fns. */
    static message unowned;
    ck_assert_int_eq(iol_runtime_broadcast_ex(rt, deliver, &unowned, NULL, NULL), 0);
    ck_assert_int_eq(atomic_load(&dones), 0);
    iol_runtime_free(rt);
    ck_assert_int_eq(atomic_load(&dones), n);
    ck_assert_int_eq(atomic_load(&fn_calls), 0);
}
END_TEST

START_TEST(test_bad_args)
{
    ck_assert_int_eq(iol_runtime_broadcast_ex(NULL, never, NULL, never, NULL), -EINVAL);
    iol_runtime *rt = new_runtime();
    ck_assert_int_eq(iol_runtime_broadcast_ex(rt, NULL, NULL, never, NULL), -EINVAL);
    ck_assert_int_eq(iol_runtime_stop(rt), 0);
    ck_assert_int_eq(iol_runtime_broadcast_ex(rt, never, NULL, never, NULL), -ESHUTDOWN);
    iol_runtime_free(rt);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("broadcast");
    TCase *tc = iol_test_tcase("broadcast", 60);
    tcase_add_test(tc, test_done_after_every_worker);
    tcase_add_test(tc, test_order_from_a_worker);
    tcase_add_test(tc, test_queued_across_stop);
    tcase_add_test(tc, test_queued_across_free);
    tcase_add_test(tc, test_free_without_start);
    tcase_add_test(tc, test_bad_args);
    suite_add_tcase(s, tc);
    return iol_test_run(s);
}
