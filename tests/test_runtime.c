/* Runtime: worker threads, one loop each; post, broadcast, stop, join. */
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ioloop.h"
#include "testutil.h"

/* Under ASan: catch writes into finished stack frames (drain sentinels). */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "detect_stack_use_after_return=1";
}

/* ------------------------------------------------------------ lifecycle */

START_TEST(test_lifecycle)
{
    iol_runtime *rt = NULL;
    iol_runtime_config cfg = {.workers = 2};
    ck_assert_int_eq(iol_runtime_new(&rt, &cfg), 0);
    ck_assert_uint_eq(iol_runtime_size(rt), 2);
    ck_assert_ptr_nonnull(iol_runtime_loop(rt, 0));
    ck_assert_ptr_nonnull(iol_runtime_loop(rt, 1));
    ck_assert_ptr_ne(iol_runtime_loop(rt, 0), iol_runtime_loop(rt, 1));
    ck_assert_ptr_null(iol_runtime_loop(rt, 2));
    /* The loops are not current anywhere: created with IOL_CURRENT_NEVER. */
    ck_assert_ptr_null(iol_loop_current());

    ck_assert_int_eq(iol_runtime_start(rt), 0);
    /* start returns once every loop runs. */
    ck_assert(iol_loop_running(iol_runtime_loop(rt, 0)));
    ck_assert(iol_loop_running(iol_runtime_loop(rt, 1)));
    ck_assert_int_eq(iol_runtime_start(rt), -EALREADY);
    ck_assert_int_eq(iol_runtime_worker_index(), -1);

    ck_assert_int_eq(iol_runtime_stop(rt), 0);
    ck_assert_int_eq(iol_runtime_stop(rt), 0); /* idempotent */
    ck_assert_int_eq(iol_runtime_join(rt), 0);
    ck_assert_int_eq(iol_runtime_join(rt), 0); /* twice is fine */
    ck_assert(!iol_loop_running(iol_runtime_loop(rt, 0)));
    iol_runtime_free(rt);
}
END_TEST

START_TEST(test_free_without_start)
{
    iol_runtime *rt = NULL;
    ck_assert_int_eq(iol_runtime_new(&rt, &(iol_runtime_config){.workers = 3}), 0);
    iol_runtime_free(rt);

    /* Defaults: one worker per online CPU. */
    ck_assert_int_eq(iol_runtime_new(&rt, NULL), 0);
    ck_assert_uint_eq(iol_runtime_size(rt), (unsigned)sysconf(_SC_NPROCESSORS_ONLN));
    ck_assert_int_eq(iol_runtime_join(rt), 0); /* nothing to join */
    iol_runtime_free(rt);

    /* stop before start: start refuses. */
    ck_assert_int_eq(iol_runtime_new(&rt, &(iol_runtime_config){.workers = 1}), 0);
    ck_assert_int_eq(iol_runtime_stop(rt), 0);
    ck_assert_int_eq(iol_runtime_start(rt), -ESHUTDOWN);
    iol_runtime_free(rt);
}
END_TEST

START_TEST(test_free_running)
{
    /* free stops and joins a running runtime. */
    iol_runtime *rt = NULL;
    ck_assert_int_eq(iol_runtime_new(&rt, &(iol_runtime_config){.workers = 2}), 0);
    ck_assert_int_eq(iol_runtime_start(rt), 0);
    iol_runtime_free(rt);
}
END_TEST

/* -------------------------------------------------- thread identity */

typedef struct identity {
    iol_runtime *rt;
    pthread_t main_thread;
    _Atomic int started, stopped;
    pthread_t start_thread[4], stop_thread[4];
    iol_loop *start_current[4], *stop_current[4];
    int start_index[4], stop_index[4];
} identity;

static void id_on_start(iol_loop *loop, unsigned index, void *arg)
{
    identity *id = arg;
    ck_assert_uint_lt(index, 4);
    id->start_thread[index] = pthread_self();
    id->start_current[index] = iol_loop_current();
    id->start_index[index] = iol_runtime_worker_index();
    ck_assert_ptr_eq(loop, iol_loop_current());
    atomic_fetch_add(&id->started, 1);
}

static void id_on_stop(iol_loop *loop, unsigned index, void *arg)
{
    identity *id = arg;
    id->stop_thread[index] = pthread_self();
    id->stop_current[index] = iol_loop_current();
    id->stop_index[index] = iol_runtime_worker_index();
    ck_assert_ptr_eq(loop, iol_loop_current());
    atomic_fetch_add(&id->stopped, 1);
}

START_TEST(test_start_stop_identity)
{
    identity id = {.main_thread = pthread_self()};
    iol_runtime_config cfg = {.workers = 4, .on_start = id_on_start, .on_stop = id_on_stop, .arg = &id};
    ck_assert_int_eq(iol_runtime_new(&id.rt, &cfg), 0);
    ck_assert_int_eq(iol_runtime_start(id.rt), 0);
    ck_assert_int_eq(atomic_load(&id.started), 4); /* before start returned */
    ck_assert_int_eq(atomic_load(&id.stopped), 0);
    ck_assert_int_eq(iol_runtime_stop(id.rt), 0);
    ck_assert_int_eq(iol_runtime_join(id.rt), 0);
    ck_assert_int_eq(atomic_load(&id.stopped), 4);
    for (int i = 0; i < 4; i++) {
        iol_loop *loop = iol_runtime_loop(id.rt, (unsigned)i);
        ck_assert(!pthread_equal(id.start_thread[i], id.main_thread));
        ck_assert(pthread_equal(id.start_thread[i], id.stop_thread[i]));
        for (int j = 0; j < i; j++)
            ck_assert(!pthread_equal(id.start_thread[i], id.start_thread[j]));
        ck_assert_ptr_eq(id.start_current[i], loop);
        ck_assert_ptr_eq(id.stop_current[i], loop);
        ck_assert_int_eq(id.start_index[i], i);
        ck_assert_int_eq(id.stop_index[i], i);
    }
    iol_runtime_free(id.rt);
}
END_TEST

typedef struct where {
    iol_runtime *rt;
    _Atomic int index[8];
    iol_loop *current[8];
    _Atomic int ran;
} where;

typedef struct where_arg {
    where *w;
    int slot;
} where_arg;

static void record_where(void *arg)
{
    where_arg *a = arg;
    a->w->current[a->slot] = iol_loop_current();
    atomic_store(&a->w->index[a->slot], iol_runtime_worker_index());
    atomic_fetch_add(&a->w->ran, 1);
}

START_TEST(test_post_runs_on_worker)
{
    where w = {0};
    ck_assert_int_eq(iol_runtime_new(&w.rt, &(iol_runtime_config){.workers = 3}), 0);
    where_arg args[3];
    /* Posted before start: runs once the workers run. */
    for (int i = 0; i < 3; i++) {
        args[i] = (where_arg){&w, i};
        ck_assert_int_eq(iol_runtime_post(w.rt, (unsigned)i, record_where, &args[i]), 0);
    }
    ck_assert_int_eq(iol_runtime_start(w.rt), 0);
    double deadline = iol_test_now() + 10;
    while (atomic_load(&w.ran) < 3 && iol_test_now() < deadline)
        usleep(1000);
    ck_assert_int_eq(atomic_load(&w.ran), 3);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(atomic_load(&w.index[i]), i);
        ck_assert_ptr_eq(w.current[i], iol_runtime_loop(w.rt, (unsigned)i));
    }
    iol_runtime_free(w.rt);
}
END_TEST

/* ------------------------------------------------ exactly once, in order */

#define PRODUCERS 4
#define WORKERS 3

typedef struct stress {
    iol_runtime *rt;
    size_t per_producer;
    _Atomic unsigned char *accepted; /* [producer * per + k] */
    _Atomic unsigned char *ran;
    /* last sequence seen per (worker, producer): FIFO per producer */
    long last[WORKERS][PRODUCERS];
    _Atomic int order_violations;
    _Atomic long accepted_total, rejected_total;
    _Atomic int go;
} stress;

typedef struct stress_item {
    stress *s;
    int producer;
    long seq;
} stress_item;

static void stress_cb(void *arg)
{
    stress_item *it = arg;
    stress *s = it->s;
    int w = iol_runtime_worker_index();
    size_t k = (size_t)it->producer * s->per_producer + (size_t)it->seq;
    atomic_fetch_add(&s->ran[k], 1);
    if (w >= 0 && w < WORKERS) {
        if (it->seq <= s->last[w][it->producer])
            atomic_fetch_add(&s->order_violations, 1);
        s->last[w][it->producer] = it->seq;
    }
}

typedef struct producer_arg {
    stress *s;
    int producer;
    stress_item *items;
} producer_arg;

static void *producer_main(void *p)
{
    producer_arg *pa = p;
    stress *s = pa->s;
    while (!atomic_load(&s->go))
        sched_yield();
    for (size_t k = 0; k < s->per_producer; k++) {
        stress_item *it = &pa->items[k];
        *it = (stress_item){s, pa->producer, (long)k};
        int r = iol_runtime_post(s->rt, (unsigned)(k % WORKERS), stress_cb, it);
        if (r == 0) {
            atomic_store(&s->accepted[(size_t)pa->producer * s->per_producer + k], 1);
            atomic_fetch_add(&s->accepted_total, 1);
        } else {
            ck_assert_int_eq(r, -ESHUTDOWN);
            atomic_fetch_add(&s->rejected_total, 1);
        }
    }
    return NULL;
}

START_TEST(test_post_exactly_once_concurrent_stop)
{
    stress s = {0};
    s.per_producer = iol_test_scaled(20000, 500);
    size_t total = s.per_producer * PRODUCERS;
    s.accepted = calloc(total, 1);
    s.ran = calloc(total, 1);
    for (int w = 0; w < WORKERS; w++)
        for (int p = 0; p < PRODUCERS; p++)
            s.last[w][p] = -1;
    ck_assert_int_eq(iol_runtime_new(&s.rt, &(iol_runtime_config){.workers = WORKERS}), 0);
    ck_assert_int_eq(iol_runtime_start(s.rt), 0);

    pthread_t th[PRODUCERS];
    producer_arg pa[PRODUCERS];
    for (int p = 0; p < PRODUCERS; p++) {
        pa[p] = (producer_arg){&s, p, calloc(s.per_producer, sizeof(stress_item))};
        ck_assert_int_eq(pthread_create(&th[p], NULL, producer_main, &pa[p]), 0);
    }
    atomic_store(&s.go, 1);
    /* Stop while the producers are still posting. */
    while (atomic_load(&s.accepted_total) < (long)(total / 3))
        sched_yield();
    ck_assert_int_eq(iol_runtime_stop(s.rt), 0);
    for (int p = 0; p < PRODUCERS; p++)
        pthread_join(th[p], NULL);
    ck_assert_int_eq(iol_runtime_join(s.rt), 0);

    long mismatches = 0;
    for (size_t k = 0; k < total; k++)
        if (atomic_load(&s.ran[k]) != atomic_load(&s.accepted[k]))
            mismatches++;
    ck_assert_int_eq(mismatches, 0);
    ck_assert_int_eq(atomic_load(&s.order_violations), 0);
    ck_assert_int_eq(atomic_load(&s.accepted_total) + atomic_load(&s.rejected_total), (long)total);
    ck_assert_int_ge(atomic_load(&s.accepted_total), (long)(total / 3));

    iol_runtime_free(s.rt);
    for (int p = 0; p < PRODUCERS; p++)
        free(pa[p].items);
    free(s.accepted);
    free(s.ran);
}
END_TEST

START_TEST(test_post_exactly_once_all)
{
    /* No stop race: everything accepted runs before join returns. */
    stress s = {0};
    s.per_producer = iol_test_scaled(10000, 300);
    size_t total = s.per_producer * PRODUCERS;
    s.accepted = calloc(total, 1);
    s.ran = calloc(total, 1);
    for (int w = 0; w < WORKERS; w++)
        for (int p = 0; p < PRODUCERS; p++)
            s.last[w][p] = -1;
    ck_assert_int_eq(iol_runtime_new(&s.rt, &(iol_runtime_config){.workers = WORKERS}), 0);
    ck_assert_int_eq(iol_runtime_start(s.rt), 0);
    pthread_t th[PRODUCERS];
    producer_arg pa[PRODUCERS];
    for (int p = 0; p < PRODUCERS; p++) {
        pa[p] = (producer_arg){&s, p, calloc(s.per_producer, sizeof(stress_item))};
        ck_assert_int_eq(pthread_create(&th[p], NULL, producer_main, &pa[p]), 0);
    }
    atomic_store(&s.go, 1);
    for (int p = 0; p < PRODUCERS; p++)
        pthread_join(th[p], NULL);
    ck_assert_int_eq(atomic_load(&s.accepted_total), (long)total);
    ck_assert_int_eq(iol_runtime_stop(s.rt), 0);
    ck_assert_int_eq(iol_runtime_join(s.rt), 0);
    for (size_t k = 0; k < total; k++)
        ck_assert_int_eq(atomic_load(&s.ran[k]), 1);
    ck_assert_int_eq(atomic_load(&s.order_violations), 0);
    iol_runtime_free(s.rt);
    for (int p = 0; p < PRODUCERS; p++)
        free(pa[p].items);
    free(s.accepted);
    free(s.ran);
}
END_TEST

typedef struct bcast {
    _Atomic int per_worker[8];
    _Atomic int outside;
} bcast;

static void bcast_cb(void *arg)
{
    bcast *b = arg;
    int w = iol_runtime_worker_index();
    if (w < 0 || w >= 8)
        atomic_fetch_add(&b->outside, 1);
    else
        atomic_fetch_add(&b->per_worker[w], 1);
}

START_TEST(test_broadcast)
{
    bcast b = {0};
    iol_runtime *rt = NULL;
    ck_assert_int_eq(iol_runtime_new(&rt, &(iol_runtime_config){.workers = 4}), 0);
    ck_assert_int_eq(iol_runtime_start(rt), 0);
    int n = 50;
    for (int i = 0; i < n; i++)
        ck_assert_int_eq(iol_runtime_broadcast(rt, bcast_cb, &b), 0);
    ck_assert_int_eq(iol_runtime_stop(rt), 0);
    ck_assert_int_eq(iol_runtime_broadcast(rt, bcast_cb, &b), -ESHUTDOWN);
    ck_assert_int_eq(iol_runtime_join(rt), 0);
    for (int w = 0; w < 4; w++)
        ck_assert_int_eq(atomic_load(&b.per_worker[w]), n);
    ck_assert_int_eq(atomic_load(&b.outside), 0);
    iol_runtime_free(rt);
}
END_TEST

/* --------------------------------------------------- stop, join, posts */

typedef struct from_worker {
    iol_runtime *rt;
    _Atomic int join_result;
    _Atomic int stop_result;
    _Atomic int post_after_stop;
    _Atomic int late_ran;
} from_worker;

static void late_cb(void *arg)
{
    from_worker *f = arg;
    atomic_fetch_add(&f->late_ran, 1);
}

static void join_and_stop_cb(void *arg)
{
    from_worker *f = arg;
    atomic_store(&f->join_result, iol_runtime_join(f->rt));
    atomic_store(&f->stop_result, iol_runtime_stop(f->rt));
    /* A second stop from the worker is still fine. */
    ck_assert_int_eq(iol_runtime_stop(f->rt), 0);
    atomic_store(&f->post_after_stop, iol_runtime_post(f->rt, 0, late_cb, f));
}

START_TEST(test_stop_and_join_from_worker)
{
    from_worker f = {.join_result = 1, .stop_result = 1, .post_after_stop = 1};
    ck_assert_int_eq(iol_runtime_new(&f.rt, &(iol_runtime_config){.workers = 2}), 0);
    ck_assert_int_eq(iol_runtime_start(f.rt), 0);
    ck_assert_int_eq(iol_runtime_post(f.rt, 1, join_and_stop_cb, &f), 0);
    /* join returns because the worker stopped the runtime. */
    ck_assert_int_eq(iol_runtime_join(f.rt), 0);
    ck_assert_int_eq(atomic_load(&f.join_result), -EDEADLK);
    ck_assert_int_eq(atomic_load(&f.stop_result), 0);
    ck_assert_int_eq(atomic_load(&f.post_after_stop), -ESHUTDOWN);
    ck_assert_int_eq(atomic_load(&f.late_ran), 0);
    ck_assert_int_eq(iol_runtime_post(f.rt, 0, late_cb, &f), -ESHUTDOWN);
    ck_assert_int_eq(iol_runtime_stop(f.rt), 0);
    iol_runtime_free(f.rt);
}
END_TEST

typedef struct self_stop {
    iol_runtime *rt;
} self_stop;

static void self_stop_on_start(iol_loop *loop, unsigned index, void *arg)
{
    (void)loop;
    self_stop *s = arg;
    if (index == 1)
        iol_runtime_stop(s->rt);
}

START_TEST(test_stop_from_on_start)
{
    self_stop s = {0};
    iol_runtime_config cfg = {.workers = 2, .on_start = self_stop_on_start, .arg = &s};
    ck_assert_int_eq(iol_runtime_new(&s.rt, &cfg), 0);
    int r = iol_runtime_start(s.rt);
    ck_assert_int_eq(r, 0);
    ck_assert_int_eq(iol_runtime_join(s.rt), 0);
    ck_assert_int_eq(iol_runtime_post(s.rt, 0, late_cb, NULL), -ESHUTDOWN);
    iol_runtime_free(s.rt);
}
END_TEST

typedef struct slow_gate {
    _Atomic int started, released, done;
} slow_gate;

static void slow_cb(void *arg)
{
    slow_gate *g = arg;
    atomic_store(&g->started, 1);
    while (!atomic_load(&g->released))
        usleep(1000);
    atomic_store(&g->done, 1);
}

START_TEST(test_stop_does_not_wait)
{
    /* A busy worker: stop returns at once (were it to wait, the callback
     * would never be released and the tcase would time out), join waits
     * for the callback. No timing involved. */
    iol_runtime *rt = NULL;
    slow_gate g = {0};
    ck_assert_int_eq(iol_runtime_new(&rt, &(iol_runtime_config){.workers = 1}), 0);
    ck_assert_int_eq(iol_runtime_start(rt), 0);
    ck_assert_int_eq(iol_runtime_post(rt, 0, slow_cb, &g), 0);
    while (!atomic_load(&g.started))
        usleep(1000);
    ck_assert_int_eq(iol_runtime_stop(rt), 0);
    ck_assert_int_eq(atomic_load(&g.done), 0);
    atomic_store(&g.released, 1);
    ck_assert_int_eq(iol_runtime_join(rt), 0);
    ck_assert_int_eq(atomic_load(&g.done), 1);
    iol_runtime_free(rt);
}
END_TEST

/* ---------------------------------------------- pinning, watchdog log */

typedef struct pin_check {
    _Atomic int single_cpu[4];
    _Atomic int ran;
} pin_check;

static void pin_cb(void *arg)
{
    pin_check *p = arg;
    cpu_set_t set;
    CPU_ZERO(&set);
    int w = iol_runtime_worker_index();
    if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) == 1)
        atomic_store(&p->single_cpu[w], 1);
    atomic_fetch_add(&p->ran, 1);
}

/* Stale stops: another thread keeps stopping a worker's loop while the
 * worker shuts down, so its drains see start return at once, give up and
 * leave their sentinel queued. That sentinel runs in a later start and
 * must not write into the finished drain's stack frame (under ASan, with
 * detect_stack_use_after_return, it did). */
typedef struct hammer {
    iol_loop *loop;
    _Atomic int done;
} hammer;

static void *hammer_main(void *arg)
{
    hammer *h = arg;
    while (!atomic_load(&h->done))
        iol_loop_stop(h->loop);
    return NULL;
}

static void quiet_log(int level, const char *msg, void *ud)
{
    (void)level;
    (void)msg;
    (void)ud;
}

START_TEST(test_drain_with_stale_stops)
{
    iol_set_log_handler(quiet_log, NULL); /* "could not drain" is expected */
    for (int round = 0; round < 100; round++) {
        iol_runtime *rt = NULL;
        ck_assert_int_eq(iol_runtime_new(&rt, &(iol_runtime_config){.workers = 1}), 0);
        ck_assert_int_eq(iol_runtime_start(rt), 0);
        hammer h = {.loop = iol_runtime_loop(rt, 0)};
        pthread_t t;
        ck_assert_int_eq(pthread_create(&t, NULL, hammer_main, &h), 0);
        usleep(1000);
        ck_assert_int_eq(iol_runtime_stop(rt), 0);
        ck_assert_int_eq(iol_runtime_join(rt), 0);
        atomic_store(&h.done, 1);
        pthread_join(t, NULL);
        iol_runtime_free(rt);
    }
    iol_set_log_handler(NULL, NULL);
}
END_TEST

START_TEST(test_pin_threads)
{
    pin_check p = {0};
    iol_runtime *rt = NULL;
    ck_assert_int_eq(iol_runtime_new(&rt, &(iol_runtime_config){.workers = 2, .pin_threads = true}), 0);
    ck_assert_int_eq(iol_runtime_start(rt), 0);
    ck_assert_int_eq(iol_runtime_broadcast(rt, pin_cb, &p), 0);
    ck_assert_int_eq(iol_runtime_stop(rt), 0);
    ck_assert_int_eq(iol_runtime_join(rt), 0);
    ck_assert_int_eq(atomic_load(&p.ran), 2);
    ck_assert_int_eq(atomic_load(&p.single_cpu[0]), 1);
    ck_assert_int_eq(atomic_load(&p.single_cpu[1]), 1);
    iol_runtime_free(rt);
}
END_TEST

static _Atomic int warnings_logged;

static void count_warnings(int level, const char *msg, void *ud)
{
    (void)msg;
    (void)ud;
    if (level >= IOL_LOG_WARNING)
        atomic_fetch_add(&warnings_logged, 1);
}

/* Blocks its worker for 300 ms, sleeping again after each EINTR: the
 * watchdog's own SIGALRM cuts a sleep short (ioloop.h says so), and when
 * it came before the call had lasted the threshold (the timer is armed
 * at the iteration's start, the call begins a little later), one usleep
 * returned under 50 ms and nothing was logged. */
static void busy_cb(void *arg)
{
    (void)arg;
    double end = iol_test_now() + 0.3;
    for (double left; (left = end - iol_test_now()) > 0;)
        usleep((useconds_t)(left * 1e6) + 1);
}

START_TEST(test_blocking_log_threshold)
{
    iol_set_log_handler(count_warnings, NULL);
    iol_runtime *rt = NULL;
    ck_assert_int_eq(iol_runtime_new(&rt, &(iol_runtime_config){.workers = 2, .blocking_log_threshold = 0.05}), 0);
    ck_assert_int_eq(iol_runtime_start(rt), 0);
    ck_assert_int_eq(iol_runtime_post(rt, 1, busy_cb, NULL), 0);
    ck_assert_int_eq(iol_runtime_stop(rt), 0);
    ck_assert_int_eq(iol_runtime_join(rt), 0);
    iol_runtime_free(rt);
    iol_set_log_handler(NULL, NULL);
    ck_assert_int_ge(atomic_load(&warnings_logged), 1);
}
END_TEST

/* ----------------------------------------------------------- bad args */

/* queue_limit on the workers: the application's posts to a busy worker
 * are refused past it, a broadcast and the runtime's own handoffs are
 * not. */
static _Atomic int gate_open, gate_started, gate_ran, limit_accepts;

static void gate_cb(void *arg)
{
    (void)arg;
    atomic_store(&gate_started, 1);
    while (!atomic_load(&gate_open))
        usleep(1000);
}

static void gate_count(void *arg)
{
    (void)arg;
    atomic_fetch_add(&gate_ran, 1);
}

static void limit_accept(iol_loop *loop, int fd, const struct sockaddr *peer, socklen_t peerlen, void *arg)
{
    (void)loop;
    (void)peer;
    (void)peerlen;
    (void)arg;
    close(fd);
    atomic_fetch_add(&limit_accepts, 1);
}

START_TEST(test_queue_limit)
{
    iol_runtime *rt;
    ck_assert_int_eq(iol_runtime_new(&rt, &(iol_runtime_config){.workers = 1, .queue_limit = 10}), 0);
    iol_listen_config lc = {.host = "127.0.0.1", .shard = IOL_SHARD_HANDOFF, .on_accept = limit_accept};
    int id = iol_runtime_listen(rt, &lc);
    ck_assert_int_ge(id, 0);
    ck_assert_int_eq(iol_runtime_start(rt), 0);
    ck_assert_int_eq(iol_runtime_post(rt, 0, gate_cb, NULL), 0);
    /* Once the gate runs, the batches before it (start's own post) are
     * done and the gate's batch counts until it ends: 9 more fit. */
    double until = iol_test_now() + 20;
    while (!atomic_load(&gate_started) && iol_test_now() < until)
        usleep(1000);
    ck_assert(atomic_load(&gate_started));
    int ok = 0;
    for (int i = 0; i < 20; i++) {
        int r = iol_runtime_post(rt, 0, gate_count, NULL);
        ck_assert(r == 0 || r == -EAGAIN);
        ok += r == 0;
    }
    ck_assert_int_eq(ok, 9);
    ck_assert_int_eq(iol_runtime_post(rt, 0, gate_count, NULL), -EAGAIN);
    /* Not refused: a broadcast, and a connection handed off to the worker. */
    ck_assert_int_eq(iol_runtime_broadcast(rt, gate_count, NULL), 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)iol_runtime_listener_port(rt, id))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_eq(connect(c, (struct sockaddr *)&a, sizeof a), 0);
    /* The acceptor hands it off at once, to the full queue; 200 ms makes
     * that all but certain before the gate opens (if it were refused, the
     * acceptor would close it and on_accept would never run). */
    usleep(200000);
    atomic_store(&gate_open, 1);
    double deadline = iol_test_now() + 20;
    while ((atomic_load(&gate_ran) < ok + 1 || atomic_load(&limit_accepts) < 1) && iol_test_now() < deadline)
        usleep(2000);
    ck_assert_int_eq(atomic_load(&gate_ran), ok + 1);
    ck_assert_int_eq(atomic_load(&limit_accepts), 1);
    /* Room again. */
    ck_assert_int_eq(iol_runtime_post(rt, 0, gate_count, NULL), 0);
    close(c);
    iol_runtime_free(rt);
}
END_TEST

static void nop_cb(void *arg)
{
    (void)arg;
}

START_TEST(test_bad_args)
{
    iol_runtime *rt = (iol_runtime *)0x1;
    ck_assert_int_eq(iol_runtime_new(NULL, NULL), -EINVAL);
    ck_assert_int_eq(iol_runtime_new(&rt, &(iol_runtime_config){.workers = 5000}), -EINVAL);
    ck_assert_ptr_eq(rt, (iol_runtime *)0x1); /* untouched on failure */
    ck_assert_int_eq(iol_runtime_new(&rt, &(iol_runtime_config){.workers = 1, .poller = "nope"}), -EINVAL);
    ck_assert_ptr_eq(rt, (iol_runtime *)0x1);

    ck_assert_int_eq(iol_runtime_start(NULL), -EINVAL);
    ck_assert_int_eq(iol_runtime_stop(NULL), -EINVAL);
    ck_assert_int_eq(iol_runtime_join(NULL), -EINVAL);
    iol_runtime_free(NULL);
    ck_assert_uint_eq(iol_runtime_size(NULL), 0);
    ck_assert_ptr_null(iol_runtime_loop(NULL, 0));
    ck_assert_int_eq(iol_runtime_post(NULL, 0, nop_cb, NULL), -EINVAL);
    ck_assert_int_eq(iol_runtime_broadcast(NULL, nop_cb, NULL), -EINVAL);

    ck_assert_int_eq(iol_runtime_new(&rt, &(iol_runtime_config){.workers = 2, .poller = "poll"}), 0);
    ck_assert_str_eq(iol_loop_poller(iol_runtime_loop(rt, 1)), "poll");
    ck_assert_int_eq(iol_runtime_post(rt, 2, nop_cb, NULL), -EINVAL);
    ck_assert_int_eq(iol_runtime_post(rt, 0, NULL, NULL), -EINVAL);
    ck_assert_int_eq(iol_runtime_broadcast(rt, NULL, NULL), -EINVAL);
    ck_assert_ptr_null(iol_runtime_loop(rt, 2));
    ck_assert_int_eq(iol_runtime_listen(rt, NULL), -EINVAL);
    ck_assert_int_eq(iol_runtime_listener_port(rt, 0), -ENOENT);
    ck_assert_int_eq(iol_runtime_listener_port(NULL, 0), -EINVAL);
    ck_assert_int_eq(iol_runtime_listener_counts(rt, 0, NULL, 0), -ENOENT);
    ck_assert_int_eq(iol_runtime_listener_counts(rt, 0, NULL, 2), -EINVAL);
    ck_assert_int_eq(iol_runtime_listener_counts(NULL, 0, NULL, 0), -EINVAL);
    ck_assert_int_eq(iol_runtime_worker_index(), -1);
    iol_runtime_free(rt);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("runtime");
    TCase *tc = iol_test_tcase("lifecycle", 30);
    tcase_add_test(tc, test_lifecycle);
    tcase_add_test(tc, test_free_without_start);
    tcase_add_test(tc, test_free_running);
    tcase_add_test(tc, test_start_stop_identity);
    tcase_add_test(tc, test_post_runs_on_worker);
    suite_add_tcase(s, tc);

    tc = iol_test_tcase("exactly_once", 120);
    tcase_add_test(tc, test_post_exactly_once_concurrent_stop);
    tcase_add_test(tc, test_post_exactly_once_all);
    tcase_add_test(tc, test_broadcast);
    suite_add_tcase(s, tc);

    tc = iol_test_tcase("stop", 30);
    tcase_add_test(tc, test_stop_and_join_from_worker);
    tcase_add_test(tc, test_stop_from_on_start);
    tcase_add_test(tc, test_stop_does_not_wait);
    tcase_add_test(tc, test_drain_with_stale_stops);
    suite_add_tcase(s, tc);

    tc = iol_test_tcase("config", 30);
    tcase_add_test(tc, test_pin_threads);
    tcase_add_test(tc, test_blocking_log_threshold);
    tcase_add_test(tc, test_bad_args);
    tcase_add_test(tc, test_queue_limit);
    suite_add_tcase(s, tc);
    return iol_test_run(s);
}
