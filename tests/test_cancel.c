/* Cancelling executor work and releasing add_future arguments:
 * iol_future_cancel, iol_loop_add_future_ex, iol_executor_free_cancel. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "ioloop.h"
#include "testutil.h"

static iol_loop *new_loop(void)
{
    iol_loop *loop = NULL;
    ck_assert_int_eq(iol_loop_new(&loop, &(iol_loop_config){.make_current = IOL_CURRENT_NEVER}), 0);
    return loop;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* A job that holds its pool thread until the gate opens. */
typedef struct gate {
    atomic_bool started, open;
} gate;

static int wait_at_gate(void *arg, void **result)
{
    gate *g = arg;
    atomic_store(&g->started, true);
    while (!atomic_load(&g->open))
        sleep_ms(1);
    *result = (void *)7;
    return 0;
}

static atomic_int ran; /* jobs whose fn was called */

static int count_run(void *arg, void **result)
{
    atomic_fetch_add(&ran, 1);
    *result = arg;
    return 0;
}

static int sleep_job(void *arg, void **result)
{
    atomic_fetch_add(&ran, 1);
    sleep_ms((int)(intptr_t)arg);
    *result = NULL;
    return 0;
}

typedef struct seen {
    iol_loop *loop;
    int calls, status, stop_after;
} seen;

static void record(iol_future *f, void *arg)
{
    seen *s = arg;
    s->status = iol_future_result(f, NULL);
    if (++s->calls == s->stop_after)
        iol_loop_stop(s->loop);
}

/* Cancel before a pool thread took the job: fn never runs, the future
 * and its add_future callback see -ECANCELED. The running job cannot be
 * cancelled (-EBUSY) and delivers its own result. */
START_TEST(test_cancel_before_start)
{
    iol_loop *loop = new_loop();
    iol_executor *ex;
    ck_assert_int_eq(iol_executor_new(&ex, 1), 0);
    gate g = {0};
    atomic_store(&ran, 0);
    iol_future *busy, *queued;
    ck_assert_int_eq(iol_loop_run_in_executor(loop, ex, wait_at_gate, &g, &busy), 0);
    ck_assert_int_eq(iol_loop_run_in_executor(loop, ex, count_run, NULL, &queued), 0);
    while (!atomic_load(&g.started))
        sleep_ms(1);

    seen s_busy = {.loop = loop, .stop_after = -1}, s_queued = {.loop = loop, .stop_after = 1};
    ck_assert_int_eq(iol_loop_add_future(loop, busy, record, &s_busy), 0);
    ck_assert_int_eq(iol_loop_add_future(loop, queued, record, &s_queued), 0);
    ck_assert_int_eq(iol_future_cancel(busy), -EBUSY);
    ck_assert(!iol_future_done(busy));
    ck_assert_int_eq(iol_future_cancel(queued), 0);
    ck_assert(iol_future_done(queued));
    ck_assert_int_eq(iol_future_result(queued, NULL), -ECANCELED);
    ck_assert_int_eq(iol_future_cancel(queued), -EALREADY);
    ck_assert_int_eq(iol_future_set_result(queued, NULL), -EALREADY);

    ck_assert_int_eq(iol_loop_start(loop), 0); /* until queued's callback */
    ck_assert_int_eq(s_queued.calls, 1);
    ck_assert_int_eq(s_queued.status, -ECANCELED);
    ck_assert_int_eq(s_busy.calls, 0);

    atomic_store(&g.open, true);
    s_busy.stop_after = 1;
    ck_assert_int_eq(iol_loop_start(loop), 0);
    ck_assert_int_eq(s_busy.calls, 1);
    ck_assert_int_eq(s_busy.status, 0);
    void *r = NULL;
    ck_assert_int_eq(iol_future_result(busy, &r), 0);
    ck_assert_ptr_eq(r, (void *)7);

    iol_executor_free(ex); /* the cancelled job is skipped, not run */
    ck_assert_int_eq(atomic_load(&ran), 0);
    iol_future_unref(busy);
    iol_future_unref(queued);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
}
END_TEST

START_TEST(test_cancel_plain_future_and_bad_args)
{
    iol_future *f;
    ck_assert_int_eq(iol_future_new(&f), 0);
    ck_assert_int_eq(iol_future_cancel(f), 0);
    ck_assert_int_eq(iol_future_result(f, NULL), -ECANCELED);
    ck_assert_int_eq(iol_future_cancel(f), -EALREADY);
    iol_future_unref(f);
    ck_assert_int_eq(iol_future_cancel(NULL), -EINVAL);
    iol_executor_free_cancel(NULL);

    iol_loop *loop = new_loop();
    ck_assert_int_eq(iol_future_new(&f), 0);
    ck_assert_int_eq(iol_loop_add_future_ex(NULL, f, record, NULL, free), -EINVAL);
    ck_assert_int_eq(iol_loop_add_future_ex(loop, NULL, record, NULL, free), -EINVAL);
    ck_assert_int_eq(iol_loop_add_future_ex(loop, f, NULL, NULL, free), -EINVAL);
    iol_future_unref(f);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
}
END_TEST

/* Cancel racing with a pool thread taking the job, from another thread:
 * exactly one outcome each time. cancel 0 <=> fn never ran and the future
 * holds -ECANCELED; cancel -EBUSY/-EALREADY <=> fn ran and its result is
 * the future's. One canceller thread for all rounds; the pool thread is
 * held in a job of its own until the canceller took the round's future,
 * then goes on to the round's job while the canceller pauses a random
 * while and cancels: both outcomes come up (the counts are printed). */
typedef struct racer {
    iol_future *_Atomic f; /* this round's job; NULL between rounds */
    atomic_int rc;         /* cancel's return, INT32_MIN until it ran */
    atomic_bool quit;
    uint32_t rng;
} racer;

static atomic_int round_ran;

static int mark_round(void *arg, void **result)
{
    atomic_fetch_add(&round_ran, 1);
    *result = arg;
    return 0;
}

/* Holds the pool thread until the canceller has taken the round's
 * future: the worker's start and the cancel then set off together,
 * whatever the scheduler did before. */
static atomic_bool cancel_taken;

static int hold_job(void *arg, void **result)
{
    (void)arg;
    for (unsigned spins = 0; !atomic_load(&cancel_taken); spins++)
        if (spins > 100000) /* the canceller is not running: let it */
            sched_yield();
    *result = NULL;
    return 0;
}

static void *canceller(void *arg)
{
    racer *r = arg;
    while (!atomic_load(&r->quit)) {
        iol_future *f = atomic_exchange(&r->f, NULL);
        if (!f) {
            sched_yield();
            continue;
        }
        atomic_store(&cancel_taken, true);
        r->rng ^= r->rng << 13, r->rng ^= r->rng >> 17, r->rng ^= r->rng << 5; /* xorshift32 */
        for (volatile uint32_t n = r->rng % 16384; n > 0; n--)
            ;
        atomic_store(&r->rc, iol_future_cancel(f));
    }
    return NULL;
}

START_TEST(test_cancel_races_start)
{
    iol_loop *loop = new_loop();
    iol_executor *ex;
    ck_assert_int_eq(iol_executor_new(&ex, 1), 0);
    int rounds = (int)iol_test_scaled(2000, 100);
    int cancelled = 0, completed = 0;
    racer r = {.rng = 2654435761u};
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, canceller, &r), 0);
    for (int i = 0; i < rounds; i++) {
        atomic_store(&round_ran, 0);
        atomic_store(&r.rc, INT32_MIN);
        iol_future *busy, *f;
        atomic_store(&cancel_taken, false);
        ck_assert_int_eq(iol_loop_run_in_executor(loop, ex, hold_job, NULL, &busy), 0);
        iol_future_unref(busy);
        ck_assert_int_eq(iol_loop_run_in_executor(loop, ex, mark_round, (void *)(intptr_t)i, &f), 0);
        atomic_store(&r.f, iol_future_ref(f)); /* the canceller's reference: it does not unref, we do */
        while (atomic_load(&r.rc) == INT32_MIN || !iol_future_done(f))
            sched_yield();
        iol_future_unref(f); /* the canceller's */
        int rc = atomic_load(&r.rc);
        void *v = NULL;
        int res = iol_future_result(f, &v);
        if (rc == 0) {
            ck_assert_int_eq(res, -ECANCELED);
            cancelled++;
        } else {
            ck_assert_msg(rc == -EBUSY || rc == -EALREADY, "cancel returned %d", rc);
            ck_assert_int_eq(res, 0);
            ck_assert_ptr_eq(v, (void *)(intptr_t)i);
            completed++;
        }
        /* One pool thread: a job queued now runs after this round's job
         * was taken (run or skipped), so once it ran, round_ran tells
         * whether this round's fn ran. */
        iol_future *after;
        ck_assert_int_eq(iol_loop_run_in_executor(loop, ex, mark_round, (void *)(intptr_t)-1, &after), 0);
        while (!iol_future_done(after))
            sched_yield();
        iol_future_unref(after);
        ck_assert_int_eq(atomic_load(&round_ran), rc == 0 ? 1 : 2);
        iol_future_unref(f);
    }
    atomic_store(&r.quit, true);
    pthread_join(t, NULL);
    fprintf(stderr, "cancel race: %d cancelled, %d completed\n", cancelled, completed);
    ck_assert_int_eq(cancelled + completed, rounds);
    iol_executor_free(ex);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
}
END_TEST

/* ---------------------------------------------------- add_future_ex */

static atomic_int released, called;

static void release_box(void *arg)
{
    atomic_fetch_add(&released, 1);
    free(arg); /* LeakSanitizer: the argument must reach here */
}

static void use_box(iol_future *f, void *arg)
{
    (void)f;
    atomic_fetch_add(&called, 1);
    free(arg);
}

static void stop_cb(void *arg)
{
    iol_loop_stop(arg);
}

START_TEST(test_release_at_close)
{
    atomic_store(&released, 0);
    atomic_store(&called, 0);
    iol_loop *loop = new_loop();
    iol_future *pending, *done, *normal;
    ck_assert_int_eq(iol_future_new(&pending), 0);
    ck_assert_int_eq(iol_future_new(&done), 0);
    ck_assert_int_eq(iol_future_new(&normal), 0);

    /* Runs normally: fn, never release. */
    ck_assert_int_eq(iol_loop_add_future_ex(loop, normal, use_box, malloc(16), release_box), 0);
    ck_assert_int_eq(iol_future_set_result(normal, NULL), 0);
    ck_assert_int_eq(iol_loop_add_callback(loop, stop_cb, loop), 0);
    ck_assert_int_eq(iol_loop_start(loop), 0);
    ck_assert_int_eq(atomic_load(&called), 1);

    /* Pending at close, and resolved with its callback queued but not
     * run: both released by the close, once. A plain add_future on a
     * pending future lets go of everything too (no leak). */
    ck_assert_int_eq(iol_loop_add_future_ex(loop, pending, use_box, malloc(16), release_box), 0);
    ck_assert_int_eq(iol_loop_add_future_ex(loop, pending, use_box, malloc(16), release_box), 0);
    ck_assert_int_eq(iol_loop_add_future(loop, pending, record, NULL), 0);
    ck_assert_int_eq(iol_loop_add_future_ex(loop, done, use_box, malloc(16), release_box), 0);
    ck_assert_int_eq(iol_future_set_result(done, NULL), 0);
    iol_loop_ref(loop);
    ck_assert_int_eq(iol_loop_close(loop, false), 1); /* done's queued callback */
    ck_assert_int_eq(atomic_load(&released), 3);
    ck_assert_int_eq(atomic_load(&called), 1);

    /* Late resolution and late registration change nothing. */
    ck_assert_int_eq(iol_future_cancel(pending), 0);
    void *box = malloc(16);
    ck_assert_int_eq(iol_loop_add_future_ex(loop, pending, use_box, box, release_box), -ESHUTDOWN);
    free(box); /* refused: still ours */
    ck_assert_int_eq(atomic_load(&released), 3);
    ck_assert_int_eq(atomic_load(&called), 1);
    iol_loop_unref(loop);
    iol_future_unref(pending);
    iol_future_unref(done);
    iol_future_unref(normal);
}
END_TEST

/* A future resolved on another thread while the loop closes: exactly one
 * release per registration (fn cannot run: the loop never runs again). */
typedef struct resolver {
    iol_future *f;
    uint32_t rng;
} resolver;

static void *resolve_soon(void *arg)
{
    resolver *r = arg;
    iol_test_tiny_delay(&r->rng);
    iol_future_set_result(r->f, NULL);
    return NULL;
}

START_TEST(test_release_races_close)
{
    atomic_store(&released, 0);
    atomic_store(&called, 0);
    int rounds = (int)iol_test_scaled(2000, 100);
    for (int i = 0; i < rounds; i++) {
        iol_loop *loop = new_loop();
        resolver r = {.rng = (uint32_t)i * 40503u + 7};
        ck_assert_int_eq(iol_future_new(&r.f), 0);
        ck_assert_int_eq(iol_loop_add_future_ex(loop, r.f, use_box, malloc(8), release_box), 0);
        ck_assert_int_eq(iol_loop_add_future_ex(loop, r.f, use_box, malloc(8), release_box), 0);
        pthread_t t;
        ck_assert_int_eq(pthread_create(&t, NULL, resolve_soon, &r), 0);
        iol_loop_close(loop, false);
        pthread_join(t, NULL);
        iol_future_unref(r.f);
        ck_assert_int_eq(atomic_load(&released), 2 * (i + 1));
    }
    ck_assert_int_eq(atomic_load(&called), 0);
}
END_TEST

/* ----------------------------------------------------- executor free */

START_TEST(test_free_cancel_does_not_wait_for_queue)
{
    iol_loop *loop = new_loop();
    iol_executor *ex;
    ck_assert_int_eq(iol_executor_new(&ex, 1), 0);
    atomic_store(&ran, 0);
    atomic_store(&released, 0);
    enum { QUEUED = 20 };
    iol_future *first, *fs[QUEUED];
    ck_assert_int_eq(iol_loop_run_in_executor(loop, ex, sleep_job, (void *)(intptr_t)200, &first), 0);
    while (atomic_load(&ran) == 0)
        sleep_ms(1);
    /* 20 jobs of 2 s each behind it: free would wait 40 s for them. */
    for (int i = 0; i < QUEUED; i++) {
        ck_assert_int_eq(iol_loop_run_in_executor(loop, ex, sleep_job, (void *)(intptr_t)2000, &fs[i]), 0);
        ck_assert_int_eq(iol_loop_add_future_ex(loop, fs[i], use_box, malloc(8), release_box), 0);
    }
    double t0 = iol_test_now();
    iol_executor_free_cancel(ex);
    double took = iol_test_now() - t0;
    ck_assert_msg(took < 10.0, "free_cancel took %.1f s", took); /* sanity bound: one 2 s job at most */
    ck_assert_int_eq(atomic_load(&ran), 1);
    ck_assert_int_eq(iol_future_result(first, NULL), 0);
    for (int i = 0; i < QUEUED; i++) {
        ck_assert_int_eq(iol_future_result(fs[i], NULL), -ECANCELED);
        iol_future_unref(fs[i]);
    }
    iol_future_unref(first);
    /* Their callbacks were queued; the close drops them: released. */
    ck_assert_int_eq(iol_loop_close(loop, false), QUEUED);
    ck_assert_int_eq(atomic_load(&released), QUEUED);
}
END_TEST

START_TEST(test_free_skips_cancelled)
{
    iol_loop *loop = new_loop();
    iol_executor *ex;
    ck_assert_int_eq(iol_executor_new(&ex, 1), 0);
    atomic_store(&ran, 0);
    enum { QUEUED = 20 };
    iol_future *first, *fs[QUEUED];
    ck_assert_int_eq(iol_loop_run_in_executor(loop, ex, sleep_job, (void *)(intptr_t)200, &first), 0);
    for (int i = 0; i < QUEUED; i++)
        ck_assert_int_eq(iol_loop_run_in_executor(loop, ex, sleep_job, (void *)(intptr_t)2000, &fs[i]), 0);
    for (int i = 0; i < QUEUED; i++)
        ck_assert_int_eq(iol_future_cancel(fs[i]), 0);
    double t0 = iol_test_now();
    iol_executor_free(ex);
    double took = iol_test_now() - t0;
    ck_assert_msg(took < 10.0, "free took %.1f s", took);
    ck_assert_int_eq(atomic_load(&ran), 1);
    for (int i = 0; i < QUEUED; i++)
        iol_future_unref(fs[i]);
    iol_future_unref(first);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
}
END_TEST

/* ------------------------------------------------------ thread rules */

/* run_in_executor is loop-bound: from a foreign thread while the loop
 * runs, -EPERM and nothing is queued. The new calls are any-thread. */
typedef struct foreign {
    iol_loop *loop;
    iol_future *f;
    int run_rc, cancel_rc, add_rc;
    seen s;
} foreign;

static void *from_foreign(void *arg)
{
    foreign *fo = arg;
    iol_future *f = NULL;
    fo->run_rc = iol_loop_run_in_executor(fo->loop, NULL, count_run, NULL, &f);
    fo->add_rc = iol_loop_add_future_ex(fo->loop, fo->f, record, &fo->s, release_box);
    fo->cancel_rc = iol_future_cancel(fo->f);
    return NULL;
}

static void spawn_foreign(void *arg)
{
    foreign *fo = arg;
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, from_foreign, fo), 0);
    pthread_join(t, NULL);
}

START_TEST(test_thread_rules)
{
    atomic_store(&ran, 0);
    atomic_store(&released, 0);
    foreign fo = {.loop = new_loop()};
    fo.s = (seen){.loop = fo.loop, .stop_after = 1};
    ck_assert_int_eq(iol_future_new(&fo.f), 0);
    ck_assert_int_eq(iol_loop_add_callback(fo.loop, spawn_foreign, &fo), 0);
    ck_assert_int_eq(iol_loop_start(fo.loop), 0); /* until record */
    ck_assert_int_eq(fo.run_rc, -EPERM);
    ck_assert_int_eq(fo.add_rc, 0);
    ck_assert_int_eq(fo.cancel_rc, 0);
    ck_assert_int_eq(fo.s.calls, 1);
    ck_assert_int_eq(fo.s.status, -ECANCELED);
    ck_assert_int_eq(atomic_load(&released), 0);
    /* The loop's own thread may still submit, and the refused call left
     * no job behind (the default pool runs exactly this one). */
    iol_future *f;
    ck_assert_int_eq(iol_loop_run_in_executor(fo.loop, NULL, count_run, NULL, &f), 0);
    seen s = {.loop = fo.loop, .stop_after = 1};
    ck_assert_int_eq(iol_loop_add_future(fo.loop, f, record, &s), 0);
    ck_assert_int_eq(iol_loop_start(fo.loop), 0);
    ck_assert_int_eq(s.status, 0);
    ck_assert_int_eq(atomic_load(&ran), 1);
    iol_future_unref(f);
    iol_future_unref(fo.f);
    ck_assert_int_eq(iol_loop_close(fo.loop, false), 0);
    ck_assert_int_eq(atomic_load(&ran), 1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cancel");
    TCase *tc = iol_test_tcase("cancel", 60);
    tcase_add_test(tc, test_cancel_before_start);
    tcase_add_test(tc, test_cancel_plain_future_and_bad_args);
    tcase_add_test(tc, test_cancel_races_start);
    tcase_add_test(tc, test_release_at_close);
    tcase_add_test(tc, test_release_races_close);
    tcase_add_test(tc, test_free_cancel_does_not_wait_for_queue);
    tcase_add_test(tc, test_free_skips_cancelled);
    tcase_add_test(tc, test_thread_rules);
    suite_add_tcase(s, tc);
    return iol_test_run(s);
}
