/* Timeouts: ordering, removal, churn, the loop's clock. */
#include <errno.h>
#include <malloc.h>
#include <math.h>
#include <stdbool.h>
#include <sys/types.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "ioloop.h"
#include "loop/loop_impl.h"
#include "loop/timer_heap.h"
#include "testutil.h"

static iol_loop *new_loop(void)
{
    iol_loop *loop = NULL;
    ck_assert_int_eq(iol_loop_new(&loop, NULL), 0);
    return loop;
}

static void stop_cb(void *arg) { iol_loop_stop(arg); }

static int fired[64];
static int nfired;
static void record(void *arg) { fired[nfired++] = (int)(intptr_t)arg; }

/* With no timeout pending the loop sleeps with no timeout at all (-1: the
 * kernel arms no timer per sleep), with one pending until it (at most
 * 3600 s), and run_once's cap bounds both. */
static void on_readable(int fd, unsigned events, void *arg)
{
    iol_loop *loop = arg;
    (void)fd;
    (void)events;
    /* Woken by the fd, not a deadline: the poll had no timeout. */
    ck_assert_int_eq(loop->last_poll_timeout_ms, -1);
    iol_loop_stop(loop);
}

static void on_readable_nop(int fd, unsigned events, void *arg)
{
    (void)fd;
    (void)events;
    (void)arg;
}

START_TEST(test_poll_timeout_without_deadlines)
{
    iol_loop *loop = new_loop();
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    ck_assert_int_eq(write(p[1], "x", 1), 1);
    ck_assert_int_eq(iol_loop_add_handler(loop, p[0], IOL_READ, on_readable, loop), 0);
    ck_assert_int_eq(iol_loop_start(loop), 0);
    ck_assert_int_eq(iol_loop_remove_handler(loop, p[0]), 0);

    /* run_once caps the endless wait. */
    ck_assert_int_eq(iol_loop_run_once(loop, 0.02), 0);
    ck_assert_int_eq(loop->last_poll_timeout_ms, 20);

    /* A deadline 10 s away: the poll waits until it, no longer. */
    ck_assert_int_eq(iol_loop_call_later(loop, 10.0, record, NULL, NULL), 0);
    ck_assert_int_eq(iol_loop_run_once(loop, 0), 0);
    ck_assert_int_eq(loop->last_poll_timeout_ms, 0);
    ck_assert_int_eq(iol_loop_run_once(loop, 0.03), 0);
    ck_assert_int_eq(loop->last_poll_timeout_ms, 30);
    /* Uncapped, the poll's timeout is the deadline's (the pipe, still
     * readable, ends the wait at once). */
    ck_assert_int_eq(iol_loop_add_handler(loop, p[0], IOL_READ, on_readable_nop, NULL), 0);
    ck_assert_int_eq(iol_loop_run_once(loop, 20.0), 0);
    ck_assert_int_gt(loop->last_poll_timeout_ms, 0);
    ck_assert_int_le(loop->last_poll_timeout_ms, 10000);
    ck_assert_int_eq(iol_loop_remove_handler(loop, p[0]), 0);
    close(p[0]);
    close(p[1]);
    iol_loop_close(loop, false);
}
END_TEST

START_TEST(test_deadline_order_and_ties)
{
    iol_loop *loop = new_loop();
    double now = iol_loop_time(loop);
    nfired = 0;
    /* Equal deadlines fire in insertion order; earlier deadlines first. */
    iol_loop_call_at(loop, now + 0.02, record, (void *)3, NULL);
    iol_loop_call_at(loop, now + 0.01, record, (void *)1, NULL);
    iol_loop_call_at(loop, now + 0.01, record, (void *)2, NULL);
    iol_loop_add_timeout(loop, now + 0.02, record, (void *)4, NULL);
    iol_loop_call_at(loop, now, record, (void *)0, NULL); /* absolute: slow runs keep the order */
    iol_loop_call_at(loop, now + 0.03, stop_cb, loop, NULL);
    ck_assert_int_eq(iol_loop_start(loop), 0);
    ck_assert_int_eq(nfired, 5);
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(fired[i], i);
    ck_assert_int_eq(iol_loop_close(loop, false), 0);
}
END_TEST

START_TEST(test_many_equal_deadlines_fifo)
{
    iol_loop *loop = new_loop();
    double when = iol_loop_time(loop) + 0.005;
    nfired = 0;
    for (int i = 0; i < 64; i++)
        iol_loop_call_at(loop, when, record, (void *)(intptr_t)i, NULL);
    iol_loop_call_at(loop, when, stop_cb, loop, NULL);
    iol_loop_start(loop);
    ck_assert_int_eq(nfired, 64);
    for (int i = 0; i < 64; i++)
        ck_assert_int_eq(fired[i], i);
    iol_loop_close(loop, false);
}
END_TEST

START_TEST(test_sleeps_until_deadline)
{
    iol_loop *loop = new_loop();
    double t0 = iol_test_now();
    iol_loop_call_later(loop, 0.05, stop_cb, loop, NULL);
    iol_loop_start(loop);
    double elapsed = iol_test_now() - t0;
    /* Never early; the upper bound is only a sanity bound. */
    ck_assert(elapsed >= 0.049);
    ck_assert(elapsed < 5.0);
    iol_loop_close(loop, false);
}
END_TEST

static iol_timeout victim;
static int victim_rc, self_rc;
static iol_timeout self_handle;
static iol_loop *cur;
static void remover(void *arg)
{
    (void)arg;
    victim_rc = iol_loop_remove_timeout(cur, victim);
    self_rc = iol_loop_remove_timeout(cur, self_handle);
}

START_TEST(test_remove_inside_callback)
{
    iol_loop *loop = cur = new_loop();
    double now = iol_loop_time(loop);
    nfired = 0;
    ck_assert_int_eq(iol_loop_call_at(loop, now + 0.01, remover, NULL, &self_handle), 0);
    ck_assert_int_eq(iol_loop_call_at(loop, now + 0.01, record, (void *)7, &victim), 0);
    iol_loop_call_at(loop, now + 0.02, stop_cb, loop, NULL);
    iol_loop_start(loop);
    ck_assert_int_eq(victim_rc, 0);
    ck_assert_int_eq(self_rc, -ENOENT); /* already fired */
    ck_assert_int_eq(nfired, 0);
    iol_loop_close(loop, false);
}
END_TEST

START_TEST(test_remove_errors)
{
    iol_loop *loop = new_loop();
    iol_timeout t = 0;
    ck_assert_int_eq(iol_loop_remove_timeout(loop, 0), -ENOENT);
    ck_assert_int_eq(iol_loop_remove_timeout(loop, 12345), -ENOENT);
    ck_assert_int_eq(iol_loop_remove_timeout(loop, UINT64_MAX), -ENOENT);
    ck_assert_int_eq(iol_loop_call_later(loop, 10, record, NULL, &t), 0);
    ck_assert_uint_ne(t, 0);
    ck_assert_int_eq(iol_loop_remove_timeout(loop, t), 0);
    ck_assert_int_eq(iol_loop_remove_timeout(loop, t), -ENOENT);
    /* The slot is reused; the old handle still means nothing. */
    iol_timeout t2 = 0;
    ck_assert_int_eq(iol_loop_call_later(loop, 10, record, NULL, &t2), 0);
    ck_assert_uint_ne(t2, t);
    ck_assert_int_eq(iol_loop_remove_timeout(loop, t), -ENOENT);
    ck_assert_int_eq(iol_loop_remove_timeout(loop, t2), 0);
    ck_assert_int_eq(iol_loop_call_later(loop, -1, record, NULL, NULL), -EINVAL);
    ck_assert_int_eq(iol_loop_call_later(loop, NAN, record, NULL, NULL), -EINVAL);
    ck_assert_int_eq(iol_loop_call_at(loop, NAN, record, NULL, NULL), -EINVAL);
    ck_assert_int_eq(iol_loop_call_at(loop, 1, NULL, NULL, NULL), -EINVAL);
    ck_assert_int_eq(iol_loop_call_later(NULL, 1, record, NULL, NULL), -EINVAL);
    ck_assert_int_eq(iol_loop_remove_timeout(NULL, 1), -EINVAL);
    iol_loop_close(loop, false);
}
END_TEST

static void nop(void *arg) { (void)arg; }

/* Add/remove churn keeps memory bounded: cancelled timeouts leave at once. */
START_TEST(test_churn_bounded_memory)
{
    iol_loop *loop = new_loop();
    size_t n = iol_test_scaled(100000, 2000);
    iol_timeout keep[16];
    for (int i = 0; i < 16; i++)
        iol_loop_call_later(loop, 100 + i, nop, NULL, &keep[i]);
    /* Warm up, then measure. */
    for (size_t i = 0; i < 1000; i++) {
        iol_timeout t;
        iol_loop_call_later(loop, 50, nop, NULL, &t);
        iol_loop_remove_timeout(loop, t);
    }
    size_t before = mallinfo2().uordblks;
    for (size_t i = 0; i < n; i++) {
        iol_timeout t;
        ck_assert_int_eq(iol_loop_call_later(loop, 50 + (double)(i % 100), nop, NULL, &t), 0);
        ck_assert_int_eq(iol_loop_remove_timeout(loop, t), 0);
    }
    size_t after = mallinfo2().uordblks;
    ck_assert_uint_le(after, before + 4096);
    /* 16 still pending: close reports them as dropped. */
    ck_assert_int_eq(iol_loop_close(loop, false), 16);
}
END_TEST

/* ------------------------------------------------ the heap on its own */

/* A reference model: every timeout ever added, in insertion order. */
typedef struct ref_timeout {
    double when;
    iol_timeout handle;
    bool live;
    bool before_mark; /* added before the current pass began */
} ref_timeout;

enum { MODEL_MAX = 20000 };
static ref_timeout refs[MODEL_MAX];
static size_t nrefs;
static uint64_t rng = 0x2545F4914F6CDD1Dull;

static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void model_add(iol__timer_heap *h, double when)
{
    ck_assert_uint_lt(nrefs, MODEL_MAX);
    ref_timeout *r = &refs[nrefs];
    ck_assert_int_eq(iol__timer_heap_add(h, when, nop, (void *)(uintptr_t)nrefs, &r->handle), 0);
    ck_assert_uint_ne(r->handle, 0);
    r->when = when;
    r->live = true;
    r->before_mark = false;
    nrefs++;
}

/* The first (earliest, then oldest) live timeout; in a pass, -1 unless it
 * is due at now and was added before the pass (one added during the pass
 * with an earlier deadline holds the rest back to the next pass). */
static ssize_t model_first(bool in_pass, double now)
{
    ssize_t best = -1;
    for (size_t i = 0; i < nrefs; i++)
        if (refs[i].live && (best < 0 || refs[i].when < refs[best].when))
            best = (ssize_t)i;
    if (in_pass && best >= 0 && (!refs[best].before_mark || refs[best].when > now))
        return -1;
    return best;
}

static void model_check(iol__timer_heap *h)
{
    size_t live = 0;
    for (size_t i = 0; i < nrefs; i++)
        live += refs[i].live;
    ck_assert_uint_eq(iol__timer_heap_len(h), live);
    /* Lazy cancel stays bounded: dead keys never outnumber live ones by
     * more than the rebuild threshold. */
    ck_assert_uint_le(h->len, 2 * live + 32);
    if (live > 0) {
        ssize_t first = model_first(false, 0);
        ck_assert(iol__timer_heap_next(h) == refs[first].when);
    }
}

/* One pass: pops every due timeout added before it began, checking the
 * order, while adding due timeouts that must wait for the next pass. */
static void model_pass(iol__timer_heap *h, double now, bool adds, bool jump_seq)
{
    iol__timer_heap_begin_pass(h);
    for (size_t i = 0; i < nrefs; i++)
        refs[i].before_mark = refs[i].live;
    iol_callback_fn fn;
    void *arg;
    for (;;) {
        if (jump_seq && next_rand() % 4 == 0 && h->next_seq < UINT32_MAX - 64)
            h->next_seq = UINT32_MAX - (uint32_t)(next_rand() % 8); /* wrap soon, mid-pass */
        if (adds && next_rand() % 3 == 0)
            model_add(h, now - (double)(next_rand() % 3)); /* due, but added during the pass */
        ssize_t want = model_first(true, now);
        int got = iol__timer_heap_pop_due(h, now, &fn, &arg);
        if (want < 0) {
            ck_assert_int_eq(got, 0);
            break;
        }
        ck_assert_int_eq(got, 1);
        ck_assert_ptr_eq(fn, nop);
        ck_assert_uint_eq((uintptr_t)arg, (uintptr_t)want);
        refs[want].live = false;
        ck_assert_int_eq(iol__timer_heap_remove(h, refs[want].handle), -ENOENT);
    }
}

static void model_run(bool jump_seq)
{
    iol__timer_heap h;
    iol__timer_heap_init(&h);
    nrefs = 0;
    size_t steps = iol_test_scaled(6000, 600);
    for (size_t step = 0; step < steps && nrefs < MODEL_MAX - 64; step++) {
        unsigned op = (unsigned)(next_rand() % 16);
        if (jump_seq && step % 97 == 0 && h.next_seq < UINT32_MAX - 64)
            h.next_seq = UINT32_MAX - (uint32_t)(next_rand() % 64);
        if (op < 7) {
            model_add(&h, (double)(next_rand() % 40)); /* few distinct deadlines: many ties */
        } else if (op < 14 && nrefs > 0) {
            size_t i = (size_t)(next_rand() % nrefs);
            ck_assert_int_eq(iol__timer_heap_remove(&h, refs[i].handle), refs[i].live ? 0 : -ENOENT);
            refs[i].live = false;
        } else if (op == 14) {
            model_pass(&h, (double)(next_rand() % 40), true, jump_seq);
        } else {
            iol_timeout bogus = next_rand();
            bool known = false;
            for (size_t i = 0; i < nrefs; i++)
                known |= refs[i].live && refs[i].handle == bogus;
            if (!known)
                ck_assert_int_eq(iol__timer_heap_remove(&h, bogus), -ENOENT);
        }
        model_check(&h);
    }
    model_pass(&h, 1e9, true, jump_seq);
    model_pass(&h, 1e9, false, false); /* drains: nothing added meanwhile */
    ck_assert_uint_eq(iol__timer_heap_len(&h), 0);
    iol__timer_heap_destroy(&h);
}

/* Many slot chunks: handles, removes and the order hold across chunk
 * boundaries. Cancelled slots stay taken while their keys are dead (here
 * below the rebuild threshold), so the refill takes new slots. */
START_TEST(test_heap_chunks)
{
    enum { N = 3 * 4096 + 5 };
    static iol_timeout hs[N];
    iol__timer_heap h;
    iol__timer_heap_init(&h);
    for (uintptr_t i = 0; i < N; i++) /* latest first: every add sifts to the top */
        ck_assert_int_eq(iol__timer_heap_add(&h, (double)(N - i), nop, (void *)i, &hs[i]), 0);
    for (size_t i = 0; i < N; i += 3)
        ck_assert_int_eq(iol__timer_heap_remove(&h, hs[i]), 0);
    for (uintptr_t i = 0; i < N; i += 3) /* re-add, same deadlines */
        ck_assert_int_eq(iol__timer_heap_add(&h, (double)(N - i), nop, (void *)i, &hs[i]), 0);
    ck_assert_uint_eq(h.nslots, N + (N + 2) / 3);
    ck_assert_uint_eq(iol__timer_heap_len(&h), N);
    iol__timer_heap_begin_pass(&h);
    iol_callback_fn fn;
    void *arg;
    for (uintptr_t i = N; i-- > 0;) {
        ck_assert_int_eq(iol__timer_heap_pop_due(&h, (double)N, &fn, &arg), 1);
        ck_assert_uint_eq((uintptr_t)arg, i);
        ck_assert_int_eq(iol__timer_heap_remove(&h, hs[i]), -ENOENT);
    }
    ck_assert_uint_eq(iol__timer_heap_len(&h), 0);
    iol__timer_heap_destroy(&h);
}
END_TEST

/* Random adds, removes (live, dead and bogus handles) and passes against
 * the model: FIFO among equal deadlines, the pass mark, -ENOENT for every
 * handle that is not pending, bounded dead keys, a live top. */
START_TEST(test_heap_model)
{
    model_run(false);
}
END_TEST

/* The same with seq pushed to the edge of its 32 bits again and again,
 * also in the middle of a pass: the renumbering keeps FIFO and the mark. */
START_TEST(test_heap_seq_wrap)
{
    model_run(true);
}
END_TEST

/* Equal deadlines on both sides of a seq wrap still fire in order. */
START_TEST(test_heap_seq_wrap_fifo)
{
    iol__timer_heap h;
    iol__timer_heap_init(&h);
    h.next_seq = UINT32_MAX - 3;
    for (uintptr_t i = 0; i < 10; i++)
        ck_assert_int_eq(iol__timer_heap_add(&h, 5.0, nop, (void *)i, NULL), 0);
    iol__timer_heap_begin_pass(&h);
    iol_callback_fn fn;
    void *arg;
    for (uintptr_t i = 0; i < 10; i++) {
        ck_assert_int_eq(iol__timer_heap_pop_due(&h, 5.0, &fn, &arg), 1);
        ck_assert_uint_eq((uintptr_t)arg, i);
    }
    ck_assert_int_eq(iol__timer_heap_pop_due(&h, 5.0, &fn, &arg), 0);
    iol__timer_heap_destroy(&h);
}
END_TEST

/* -0.0 and +0.0 are one deadline (a key compare on the bits would split
 * them): FIFO between them too. */
START_TEST(test_heap_signed_zero_tie)
{
    iol__timer_heap h;
    iol__timer_heap_init(&h);
    ck_assert_int_eq(iol__timer_heap_add(&h, 0.0, nop, (void *)0, NULL), 0);
    ck_assert_int_eq(iol__timer_heap_add(&h, -0.0, nop, (void *)1, NULL), 0);
    iol__timer_heap_begin_pass(&h);
    iol_callback_fn fn;
    void *arg;
    for (uintptr_t i = 0; i < 2; i++) {
        ck_assert_int_eq(iol__timer_heap_pop_due(&h, 0.0, &fn, &arg), 1);
        ck_assert_uint_eq((uintptr_t)arg, i);
    }
    iol__timer_heap_destroy(&h);
}
END_TEST

/* Cancelling the earliest timeouts one after another (libuv's
 * million_timers order) pops nothing: each is O(1), and the top read
 * next (the loop's timeout, a pass) skips the dead ones. */
START_TEST(test_heap_cancel_top_is_deferred)
{
    iol__timer_heap h;
    iol__timer_heap_init(&h);
    iol_timeout t[100];
    for (int i = 0; i < 100; i++)
        ck_assert_int_eq(iol__timer_heap_add(&h, 1.0 + i, nop, (void *)(uintptr_t)i, &t[i]), 0);
    for (int i = 0; i < 10; i++)
        ck_assert_int_eq(iol__timer_heap_remove(&h, t[i]), 0);
    ck_assert_uint_eq(h.len, 100); /* nothing popped yet */
    ck_assert_uint_eq(iol__timer_heap_len(&h), 90);
    ck_assert(iol__timer_heap_next(&h) == 11.0);
    ck_assert_uint_eq(h.len, 90); /* dropped on that read */
    ck_assert_uint_eq(h.dead, 0);
    /* A pass never hands out a dead top either. */
    ck_assert_int_eq(iol__timer_heap_remove(&h, t[10]), 0);
    ck_assert_int_eq(iol__timer_heap_remove(&h, t[11]), 0);
    iol__timer_heap_begin_pass(&h);
    iol_callback_fn fn;
    void *arg;
    ck_assert_int_eq(iol__timer_heap_pop_due(&h, 13.0, &fn, &arg), 1);
    ck_assert_ptr_eq(fn, nop);
    ck_assert_uint_eq((uintptr_t)arg, 12);
    ck_assert_int_eq(iol__timer_heap_pop_due(&h, 13.0, &fn, &arg), 0);
    /* Cancelled handles stay cancelled. */
    ck_assert_int_eq(iol__timer_heap_remove(&h, t[0]), -ENOENT);
    ck_assert_int_eq(iol__timer_heap_remove(&h, t[10]), -ENOENT);
    /* Cancelling all but one in deadline order: bounded, never empty-topped. */
    for (int i = 13; i < 99; i++) {
        ck_assert_int_eq(iol__timer_heap_remove(&h, t[i]), 0);
        ck_assert_uint_le(h.len, 2 * iol__timer_heap_len(&h) + 32);
    }
    ck_assert_uint_eq(iol__timer_heap_len(&h), 1);
    ck_assert(iol__timer_heap_next(&h) == 100.0);
    iol__timer_heap_destroy(&h);
}
END_TEST

/* Cancels that leave dead keys inside the heap (not at its top) stay
 * bounded too, and the loop reports only live timeouts as dropped. */
START_TEST(test_churn_dead_keys_bounded)
{
    iol_loop *loop = new_loop();
    size_t n = iol_test_scaled(100000, 2000);
    iol_timeout keep[16];
    for (int i = 0; i < 16; i++)
        ck_assert_int_eq(iol_loop_call_later(loop, 10 + i, nop, NULL, &keep[i]), 0);
    /* Warm up with the same pattern (dead keys pile up to the rebuild
     * threshold once), then measure. */
    size_t before = 0;
    for (size_t round = 0; round < 2; round++) {
        for (size_t i = 0; i < n; i++) {
            iol_timeout t;
            ck_assert_int_eq(iol_loop_call_later(loop, 50 + (double)(i % 100), nop, NULL, &t), 0);
            ck_assert_int_eq(iol_loop_remove_timeout(loop, t), 0);
            ck_assert_int_eq(iol_loop_remove_timeout(loop, t), -ENOENT);
        }
        if (round == 0)
            before = mallinfo2().uordblks;
    }
    ck_assert_uint_le(mallinfo2().uordblks, before + 4096);
    ck_assert_int_eq(iol_loop_remove_timeout(loop, keep[3]), 0);
    ck_assert_int_eq(iol_loop_close(loop, false), 15);
}
END_TEST

/* A timeout scheduled in the past from a timeout callback runs in the next
 * iteration, so I/O and callbacks get their turn in between. */
static int chain;
static iol_loop *chain_loop;
static void chained(void *arg)
{
    (void)arg;
    if (++chain == 5) {
        iol_loop_stop(chain_loop);
        return;
    }
    iol_loop_call_at(chain_loop, 0, chained, NULL, NULL);
}
/* Re-adds itself: counts iterations. */
static int cb_between;
static void between(void *arg)
{
    (void)arg;
    cb_between++;
    if (chain < 5)
        iol_loop_add_callback(chain_loop, between, NULL);
}

START_TEST(test_timeout_added_in_timeout_waits)
{
    iol_loop *loop = chain_loop = new_loop();
    chain = 0;
    cb_between = 0;
    iol_loop_call_at(loop, 0, chained, NULL, NULL);
    iol_loop_add_callback(loop, between, NULL);
    iol_loop_start(loop);
    ck_assert_int_eq(chain, 5);
    /* One chained timeout per iteration: 5 iterations ran callbacks. */
    ck_assert_int_ge(cb_between, 5);
    iol_loop_close(loop, false);
}
END_TEST

/* The loop's clock comes from time_func when given. */
static double fake_now;
static double fake_clock(void *ud)
{
    (void)ud;
    return fake_now;
}

START_TEST(test_time_func)
{
    iol_loop *loop;
    fake_now = 1000.0;
    iol_loop_config cfg = { .time_func = fake_clock };
    ck_assert_int_eq(iol_loop_new(&loop, &cfg), 0);
    ck_assert(iol_loop_time(loop) == 1000.0);
    nfired = 0;
    iol_loop_call_later(loop, 5, record, (void *)1, NULL); /* at 1005 */
    iol_loop_call_at(loop, 1000, record, (void *)0, NULL);
    iol_loop_call_at(loop, 999, stop_cb, loop, NULL);
    iol_loop_start(loop);
    ck_assert_int_eq(nfired, 1); /* 1005 not due on the fake clock */
    fake_now = 1005.0;
    iol_loop_call_at(loop, 1005, stop_cb, loop, NULL);
    iol_loop_start(loop);
    ck_assert_int_eq(nfired, 2);
    ck_assert(isnan(iol_loop_time(NULL)));
    iol_loop_close(loop, false);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("timeouts");
    TCase *tc = iol_test_tcase("core", 30);
    tcase_add_test(tc, test_deadline_order_and_ties);
    tcase_add_test(tc, test_poll_timeout_without_deadlines);
    tcase_add_test(tc, test_many_equal_deadlines_fifo);
    tcase_add_test(tc, test_sleeps_until_deadline);
    tcase_add_test(tc, test_remove_inside_callback);
    tcase_add_test(tc, test_remove_errors);
    tcase_add_test(tc, test_timeout_added_in_timeout_waits);
    tcase_add_test(tc, test_time_func);
    suite_add_tcase(s, tc);
    TCase *churn = iol_test_tcase("churn", 60);
    tcase_add_test(churn, test_churn_bounded_memory);
    tcase_add_test(churn, test_churn_dead_keys_bounded);
    tcase_add_test(churn, test_heap_cancel_top_is_deferred);
    suite_add_tcase(s, churn);
    TCase *heap = iol_test_tcase("heap", 60);
    tcase_add_test(heap, test_heap_model);
    tcase_add_test(heap, test_heap_chunks);
    tcase_add_test(heap, test_heap_seq_wrap);
    tcase_add_test(heap, test_heap_seq_wrap_fifo);
    tcase_add_test(heap, test_heap_signed_zero_tie);
    suite_add_tcase(s, heap);
    return iol_test_run(s);
}
