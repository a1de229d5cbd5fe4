/* loop/ — cross-loop wakeups: an io_uring message between uring loops,
 * the eventfd otherwise.
 *
 * WHY. A uring loop sleeps in io_uring_enter. Woken through its eventfd,
 * it pays for a poll CQE, a re-arm and a read(2) of the eventfd (its poll
 * is level-triggered) per wakeup, and the sender pays a write(2). A
 * sender that is itself a uring loop can instead post a CQE straight to
 * the sleeper's ring with IORING_OP_MSG_RING: one SQE on the sender's own
 * ring (IOSQE_CQE_SKIP_SUCCESS: nothing comes back), no system call of its
 * own when it rides on the sender's next io_uring_enter, and nothing to
 * re-arm or read on the sleeper's side.
 *
 * WHEN. Only when this thread is iterating a uring loop that can send
 * (iol__iterating, set around iterations in loop.c: being current is not
 * enough, nobody would submit) and the target has a msg_fd (uring, with
 * MSG_RING). Everything else keeps the eventfd: other threads, signal
 * handlers (add_callback_from_signal and stop() call the waker directly),
 * other backends, kernels before 5.18, a sender whose pending list is
 * full, an SQE the kernel refuses.
 *
 * NO LOST WAKEUP, AT MOST ONE PER SLEEP. The decision is the waker's
 * claim (sync/waker.c), the same CAS for both deliveries: the argument
 * there holds as long as the claim's winner delivers something that
 * makes the sleeper's wait return. A CQE posted to its ring does: the
 * sleeper waits in io_uring_enter for one CQE, and one already posted
 * makes its next wait not block (the poller submits without waiting when
 * the CQ holds one). The claim marks the sleep MESSAGE, so the eventfd
 * books (owed, the drain threshold) never count a message as a write.
 *
 * DELIVERED WHEN. On a loop that never spins (spin_us < 0), a message
 * is queued on the sender's SQ and handed over by the sender's next
 * io_uring_enter, which it makes anyway: its poll at the end of the
 * iteration, whether it sleeps or not (a full SQ submits earlier). So a
 * wakeup waits at most for the rest of the sender's current iteration
 * (the callbacks, timeouts and handlers after the post), never for a
 * sleep. Where the thread stops iterating the loop — the run stops or
 * closes, run_once returns, a callback runs another loop nested
 * (run_sync) — msg_flush submits first. What remains is a callback that
 * blocks after posting (it should not, on any loop): the wakeup waits
 * for it to return.
 *   On a loop that may spin before sleeping (loop/spin.c), the post
 * submits its message at once, a system call as the eventfd's write:
 * deferred, the target would start only when the spin ends or at the
 * sleep, so its answer would never come within a spin, and the adaptive
 * spin would learn that spinning never pays (measured: pingpong with the
 * default spin took 12-30 us per round trip deferred, 1-3 at once).
 * IOL_MSGRING=now or =defer overrides the choice, =0 keeps the eventfd
 * (benchmarks, tests).
 *
 * THE TARGET'S RING FD. The SQE names the target's ring by fd, and the
 * kernel looks the fd up only when it is submitted, in the sender's
 * thread, possibly after the post returned and the target was closed. So
 * the fd is a dup (msg_fd) that lives until the target's memory is freed,
 * and the sender holds a reference on the target from the claim until
 * the message was submitted: the fd cannot be closed, and its number
 * cannot be reused, while a message may still name it. A message to a
 * closed loop lands in its dead ring (kept by the dup) and is freed with
 * it. The reference is kept until a poll reaped every CQE of the enter
 * that submitted it (fewer than the maximum events), because a refused
 * message's CQE comes back to the sender during that enter: it then
 * writes the eventfd of every target it still holds (deliver_stray,
 * counted so the eventfd is drained; a spurious wakeup for the others).
 * With the target's ring alive, the kernel refuses a message only when
 * it cannot allocate an overflow CQE for a full CQ (-EOVERFLOW).
 *
 * The last reference may thus be dropped here, on the sender's thread,
 * as any holder's can: the target is then shut down here (loop.c). */
#include "loop/loop_impl.h"

#include <stdlib.h>
#include <string.h>

#include "loop/log.h"

_Thread_local iol_loop *iol__iterating __attribute__((tls_model("initial-exec")));

iol_loop *iol__loop_set_iterating(iol_loop *loop)
{
    iol_loop *previous = iol__iterating;
    iol__iterating = loop;
    return previous;
}

void iol__loop_msg_init(iol_loop *loop)
{
    loop->msg_fd = -1;
    const iol__poller_ops *ops = loop->poller_ops;
    if (!ops->msg_fd || !(ops->op_features(loop->poller) & IOL__OPS_MSG_RING))
        return;
    /* IOL_MSGRING: 0 (the eventfd always), now (submit each message at
     * once), defer (ride on the next io_uring_enter); unset or anything
     * else: defer on a loop that never spins, now on one that may (see
     * DELIVERED WHEN). */
    const char *mode = getenv("IOL_MSGRING");
    if (mode && strcmp(mode, "0") == 0)
        return;
    int fd = ops->msg_fd(loop->poller);
    if (fd < 0)
        return; /* -EMFILE and the like: the eventfd does the job */
    loop->msg_fd = fd;
    loop->msg_send = true;
    if (mode && strcmp(mode, "now") == 0)
        loop->msg_now = true;
    else if (!mode || strcmp(mode, "defer") != 0)
        loop->msg_now = loop->spin.window_ns != 0;
}

void iol__loop_wake_by_message(iol_loop *self, iol_loop *loop)
{
    bool room = self->msg_queued < IOL__MSG_PENDING;
    if (!iol__waker_claim_after_push(&loop->waker, room))
        return;
    iol__spin_note_wake(&loop->spin); /* the winner stamps (loop/spin.c, MEASURING) */
    if (!room) {
        iol__waker_deliver(&loop->waker);
        return;
    }
    if (self->poller_ops->msg_send(self->poller, loop->msg_fd) < 0) {
        iol__waker_deliver_stray(&loop->waker);
        return;
    }
    /* The caller's own reference keeps loop alive until we take ours. */
    self->msg_pending[self->msg_queued++] = iol_loop_ref(loop);
    if (self->msg_now)
        self->poller_ops->submit(self->poller);
}

/* Drops the references of the first n pending messages. */
static void release(iol_loop *loop, unsigned n)
{
    iol_loop *done[IOL__MSG_PENDING];
    memcpy(done, loop->msg_pending, n * sizeof done[0]);
    memmove(loop->msg_pending, loop->msg_pending + n, (loop->msg_queued - n) * sizeof done[0]);
    loop->msg_queued -= n;
    loop->msg_sent = loop->msg_sent > n ? loop->msg_sent - n : 0;
    /* After the books are straight: a last unref shuts that loop down,
     * which may post (and so reach wake_by_message) again. */
    for (unsigned i = 0; i < n; i++)
        iol_loop_unref(done[i]);
}

void iol__loop_msg_after_wait(iol_loop *loop, int n)
{
    /* The wait submitted every queued SQE (submit finds none left) and
     * reaped every CQE (fewer than the maximum): a refusal of any of them
     * is among these events. */
    if (loop->msg_queued && n >= 0 && n < IOL__MAX_EVENTS && loop->poller_ops->submit(loop->poller) == 0)
        loop->msg_sent = loop->msg_queued;
}

void iol__loop_msg_failed(iol_loop *loop)
{
    /* Which message failed the CQE does not say: wake every target held. */
    iol__log(IOL_LOG_WARNING, "ring message refused; waking through the eventfd");
    for (unsigned i = 0; i < loop->msg_queued; i++)
        iol__waker_deliver_stray(&loop->msg_pending[i]->waker);
}

void iol__loop_msg_release(iol_loop *loop)
{
    if (loop->msg_sent)
        release(loop, loop->msg_sent);
}

void iol__loop_msg_flush(iol_loop *loop)
{
    if (!loop->msg_queued)
        return;
    /* Submitted: the fds were resolved, the references may go. A refusal
     * comes back to a later poll with nobody left to wake: it is logged. */
    if (loop->poller_ops->submit(loop->poller) == 0)
        release(loop, loop->msg_queued);
}

void iol__loop_msg_abandon(iol_loop *loop)
{
    /* The poller is closed (its close submitted what it could): wake
     * through the eventfd every target whose message may not have gone,
     * at worst a spurious wakeup more. */
    while (loop->msg_queued) {
        unsigned sent = loop->msg_sent;
        for (unsigned i = sent; i < loop->msg_queued; i++)
            iol__waker_deliver_stray(&loop->msg_pending[i]->waker);
        release(loop, loop->msg_queued);
    }
}
