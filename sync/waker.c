/* sync/waker.c — eventfd waker with wakeup coalescing.
 *
 * STATE is 0 (awake), SLEEPING (the consumer announced it is about to poll)
 * or SLEEPING|WOKEN (a producer won the right to write the eventfd for this
 * sleep).
 *
 *   consumer                               producer
 *   prepare_sleep: state = SLEEPING        push: tail = node  (the work)
 *                  FENCE (seq_cst)         wake: FENCE (seq_cst)
 *   loop: recheck queue tail, stop flag          if state == SLEEPING and
 *         poll(timeout or 0)                        CAS SLEEPING -> |WOKEN:
 *   finish_sleep: state = 0                           write(eventfd, 1)
 *                 read(eventfd) if owed
 *
 * NO LOST WAKEUP. This is Dekker's pattern: each side stores its own flag
 * then loads the other's. With a seq_cst fence between the store and the
 * load on both sides, the two fences are ordered in the single total order
 * S of seq_cst operations. If the consumer's fence comes first, the
 * producer's load of the state (after its fence) sees SLEEPING (or a later
 * value of the same sleep: SLEEPING|WOKEN, meaning somebody else writes);
 * if the producer's fence comes first, the consumer's recheck (after its
 * fence) sees the pushed node (or the stop flag) and polls with timeout 0.
 * Either the consumer does not sleep, or a write happens after it
 * announced the sleep; that write makes the eventfd readable, so a poll
 * that started before or after it returns. Without the fences, store
 * buffering (x86 allows a load to pass an earlier store to another
 * address) lets both sides read the stale value: the consumer sleeps on an
 * empty-looking queue while the producer sees "awake" and skips the write.
 * On the producer side the queue push is already a seq_cst exchange (a
 * full barrier on x86, where the fence costs an extra mfence); wake() still
 * issues its own fence so that callers that made work visible with any
 * store are covered too.
 *
 * wake_after_push() drops that fence and loads the state with seq_cst
 * instead. It is correct when the caller's publication P was itself a
 * seq_cst store or RMW (the push's tail exchange, a seq_cst stop store).
 * C11 fence rules, with X the consumer's fence and L the producer's seq_cst
 * load of the state: if X precedes L in S, L sees SLEEPING (or later), since
 * the consumer's store is sequenced before X. Otherwise L precedes X in S,
 * and so does P (sequenced before L, both seq_cst); the consumer's recheck
 * load is sequenced after X, so it sees P or a later value: the work.
 * On x86 that load is a plain mov; this saves ~1.4 ns per post (measured
 * single-threaded), more when the store buffer holds contended lines.
 *
 * AT MOST ONE WRITE PER SLEEP. Only prepare_sleep sets SLEEPING; a write
 * requires winning the CAS SLEEPING -> SLEEPING|WOKEN, which can succeed
 * once until the next prepare_sleep. A producer that loaded SLEEPING for an
 * earlier sleep and CASes later may win for a later sleep: that is one
 * (possibly early) wakeup for that sleep, still at most one.
 *
 * DRAINING. The CAS winner writes after winning, so finish_sleep may run
 * between the CAS and the write and find the eventfd still empty. We count
 * the writes owed to us (one per WOKEN sleep) and read whenever something is
 * owed; a read returns the sum of all writes landed so far (eventfd counter
 * semantics), which we subtract. A late write makes the next poll return at
 * once; that finish_sleep drains it. The eventfd never stays readable for
 * nothing, so the loop never spins on it.
 *
 * EDGE-TRIGGERED (iol__waker_set_edge, on epoll). The read above costs a
 * system call per wakeup, and a level-triggered poll needs it: an unread
 * counter keeps the fd readable and every later poll would return at
 * once. Polled with EPOLLET, the fd raises one event per write instead
 * (eventfd_write wakes its waiters on every write, whatever the counter
 * holds), so a counter left unread makes no poll return: the next write
 * still wakes the next sleep, and a late write costs one early return, as
 * above. We read only once IOL__WAKER_DRAIN_AT writes are owed, to keep
 * the counter far from its limit (2^64 - 2, where writes would fail with
 * EAGAIN). The lost-wakeup argument does not change: it never relied on
 * the read, only on the write happening after the sleep was announced.
 *
 * ANOTHER DELIVERY (claim_after_push with by_message). The loop may
 * deliver a won wakeup itself, as an io_uring message to the consumer's
 * ring (loop/loop.c). The claim is the same CAS, to SLEEPING|WOKEN|MESSAGE,
 * so both arguments above hold unchanged whatever the delivery: the
 * delivery only has to happen after the claim and make the consumer's
 * poll return (a CQE posted to its ring does, as an eventfd write does).
 * MESSAGE keeps the eventfd books right: finish_sleep owes a read only for
 * WOKEN without MESSAGE. A claimer whose message may not arrive writes
 * the eventfd instead (deliver_stray) and counts that write in `stray`
 * before writing, so the consumer adds it to `owed` and drains it; a
 * consumer that misses the count (it increments after our exchange) finds
 * the fd readable at its next poll and takes the count then.
 *
 * wake() is async-signal-safe: lock-free atomics and write(2), and it
 * preserves errno.
 */
#include "sync/waker.h"

#include <errno.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

enum { SLEEPING = 1u, WOKEN = 2u, MESSAGE = 4u };

static bool claim(iol__waker *w, unsigned s, bool by_message);
static void write_one(iol__waker *w);

int iol__waker_init(iol__waker *w)
{
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd < 0)
        return -errno;
    w->fd = fd;
    atomic_init(&w->state, 0);
    atomic_init(&w->writes, 0);
    atomic_init(&w->messages, 0);
    atomic_init(&w->stray, 0);
    w->owed = 0;
    w->edge = false;
    return 0;
}

void iol__waker_destroy(iol__waker *w)
{
    if (w->fd >= 0)
        close(w->fd);
    w->fd = -1;
}

void iol__waker_set_edge(iol__waker *w)
{
    w->edge = true;
}

void iol__waker_prepare_sleep(iol__waker *w)
{
    /* relaxed store + seq_cst fence: the consumer half of the Dekker pair.
     * The fence orders this store before the caller's recheck loads (queue
     * tail, stop flag) against the producer's fence in wake(). */
    atomic_store_explicit(&w->state, SLEEPING, memory_order_relaxed);
    atomic_thread_fence(memory_order_seq_cst);
}

void iol__waker_finish_sleep(iol__waker *w)
{
    /* acquire: if a producer won the CAS (WOKEN), its win happens before our
     * read accounting below. No release is needed: the producers publish
     * work through the queue, not through this word. */
    unsigned old = atomic_exchange_explicit(&w->state, 0, memory_order_acquire);
    if ((old & (WOKEN | MESSAGE)) == WOKEN)
        w->owed++;
    /* relaxed load: a hint (nearly always 0, and then no locked
     * instruction). acquire exchange: pairs with deliver_stray's release
     * increment, made before its write. A count we miss is taken at the
     * next finish_sleep, after the fd it left readable ends that poll. */
    if (atomic_load_explicit(&w->stray, memory_order_relaxed))
        w->owed += atomic_exchange_explicit(&w->stray, 0, memory_order_acquire);
    if (w->owed == 0 || (w->edge && w->owed < IOL__WAKER_DRAIN_AT))
        return;
    uint64_t v;
    ssize_t r;
    do {
        r = read(w->fd, &v, sizeof v);
    } while (r < 0 && errno == EINTR);
    /* EAGAIN: the winner has not written yet; the write will make the next
     * poll return and that finish_sleep reads it. */
    if (r == (ssize_t)sizeof v)
        w->owed = v >= w->owed ? 0 : w->owed - v;
}

void iol__waker_wake(iol__waker *w)
{
    /* seq_cst fence: the producer half of the Dekker pair; orders the
     * caller's publication of work before the state load below. */
    atomic_thread_fence(memory_order_seq_cst);
    /* relaxed: ordered by the fence above; a stale 0 is impossible for a
     * sleep announced before our fence (see the top of the file). */
    unsigned s = atomic_load_explicit(&w->state, memory_order_relaxed);
    if (s != SLEEPING)
        return; /* awake (it will recheck) or somebody already writes */
    if (claim(w, s, false))
        write_one(w);
}

/* Producer that saw SLEEPING: true for the CAS winner, who must deliver. */
static bool claim(iol__waker *w, unsigned s, bool by_message)
{
    /* relaxed: the CAS only elects the single deliverer; the work itself
     * was published by the caller and ordered before the state load. */
    if (!atomic_compare_exchange_strong_explicit(&w->state, &s, SLEEPING | WOKEN | (by_message ? MESSAGE : 0u),
                                                 memory_order_relaxed, memory_order_relaxed))
        return false;
    if (by_message) /* relaxed: a statistic, one winner per sleep */
        atomic_fetch_add_explicit(&w->messages, 1, memory_order_relaxed);
    return true;
}

void iol__waker_deliver(iol__waker *w)
{
    write_one(w);
}

void iol__waker_deliver_stray(iol__waker *w)
{
    /* release: orders the count before the write below, for the consumer
     * that sees the fd readable and then exchanges the count (acquire). */
    atomic_fetch_add_explicit(&w->stray, 1, memory_order_release);
    write_one(w);
}

/* The eventfd write of a claim's winner. */
static void write_one(iol__waker *w)
{
    int saved = errno;
    uint64_t one = 1;
    ssize_t r;
    /* The raw syscall, not write(3): write is a cancellation point, and a
     * winner cancelled there would never write, leaving the loop asleep
     * until its next timer or fd event. syscall(2) is no cancellation
     * point and stays async-signal-safe (pthread_setcancelstate is not).
     * What remains is preemption between the CAS and the write: the wakeup
     * is then late by as long as the scheduler keeps this thread off a CPU
     * (a time slice, milliseconds), or as long as it is stopped (SIGSTOP,
     * a debugger): the documented cost of electing one writer per sleep. */
    do {
        r = syscall(SYS_write, w->fd, &one, sizeof one);
    } while (r < 0 && errno == EINTR);
    /* A write of 1 cannot fail otherwise (EAGAIN needs a counter near 2^64,
     * and the consumer drains every write). */
    errno = saved;
    /* relaxed: a statistic; no reader derives ordering from it, and the
     * single CAS winner per sleep makes it uncontended. */
    atomic_fetch_add_explicit(&w->writes, 1, memory_order_relaxed);
}

bool iol__waker_claim_after_push(iol__waker *w, bool by_message)
{
    /* seq_cst: see "wake_after_push" at the top of the file. */
    unsigned s = atomic_load_explicit(&w->state, memory_order_seq_cst);
    return s == SLEEPING && claim(w, s, by_message);
}

void iol__waker_wake_after_push(iol__waker *w)
{
    if (iol__waker_claim_after_push(w, false))
        write_one(w);
}

uint64_t iol__waker_writes(const iol__waker *w)
{
    /* relaxed: a statistic (see wake). */
    return atomic_load_explicit(&w->writes, memory_order_relaxed);
}

uint64_t iol__waker_messages(const iol__waker *w)
{
    /* relaxed: a statistic (see claim). */
    return atomic_load_explicit(&w->messages, memory_order_relaxed);
}
