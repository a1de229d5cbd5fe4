/* loop/ — the completion path (see loop/completion.h). */
#include "loop/completion.h"

#include <stdint.h>
#include <stdlib.h>

#include "loop/loop_impl.h"

/* The shared recv buffers: enough for a burst on many connections at
 * once; -ENOBUFS beyond that, never a wrong result. */
#define RING_BUFFERS 256
#define RING_BUFFER_SIZE IOL__RING_BUFFER_SIZE

/* The completion path is off when the backend has none, or when
 * IOL_URING_OPS lacks bit 8 (a switch for benchmarks and tests). */
static bool path_on(iol_loop *loop)
{
    return loop->poller_ops->op_submit &&
           (loop->poller_ops->op_features(loop->poller) & IOL__OPS_COMPLETIONS);
}

/* The checks every call makes first: NULL, closed, wrong thread, no path. */
static int check_path(iol_loop *loop)
{
    int err = iol__loop_check(loop);
    if (err)
        return err;
    return path_on(loop) ? 0 : -ENOTSUP;
}

int iol__loop_completion_features(iol_loop *loop)
{
    int err = check_path(loop);
    if (err)
        return err;
    return (int)loop->poller_ops->op_features(loop->poller);
}

/* After check_path. */
static int submit_checked(iol_loop *loop, iol__completion *c, unsigned kind, iol__poller_op op)
{
    int err;
    if (loop->draining && op.code != IOL__OP_CANCEL) /* a cancel still goes */
        return -ESHUTDOWN;
    if (!c || kind > 3 || ((uintptr_t)c & 7))
        return -EINVAL;
    op.tag = (uint64_t)(uintptr_t)c | (uint64_t)kind << 1;
    if ((err = loop->poller_ops->op_submit(loop->poller, &op)) < 0)
        return err;
    if (op.code != IOL__OP_CANCEL) {
        c->inflight++;
        loop->ops_inflight++;
    }
    return 0;
}

static int submit(iol_loop *loop, iol__completion *c, unsigned kind, iol__poller_op op)
{
    int err = check_path(loop);
    return err ? err : submit_checked(loop, c, kind, op);
}

/* The shared buffer ring, set up at the first operation that reads from it. */
static int ring_setup(iol_loop *loop)
{
    if (!loop->ring_ready) {
        int err = loop->poller_ops->op_buffers(loop->poller, RING_BUFFERS, RING_BUFFER_SIZE);
        if (err < 0 && err != -EEXIST)
            return err;
        loop->ring_ready = true;
    }
    return 0;
}

int iol__loop_recvmsg_multishot(iol_loop *loop, iol__completion *c, unsigned kind, int fd, struct msghdr *tmpl)
{
    int err = check_path(loop);
    if (err)
        return err;
    if (!tmpl)
        return -EINVAL;
    if (!(loop->poller_ops->op_features(loop->poller) & IOL__OPS_MULTISHOT_RECV))
        return -ENOTSUP;
    if ((err = ring_setup(loop)) < 0)
        return err;
    return submit_checked(loop, c, kind,
                          (iol__poller_op){ .code = IOL__OP_RECVMSG, .fd = fd, .buf = tmpl, .multishot = true });
}

int iol__loop_recv(iol_loop *loop, iol__completion *c, unsigned kind, int fd, size_t max, unsigned flags)
{
    bool multishot = flags & IOL__RECV_MULTISHOT;
    int err = check_path(loop);
    if (err)
        return err;
    if ((err = ring_setup(loop)) < 0)
        return err;
    if (max >= RING_BUFFER_SIZE || multishot)
        max = 0;
    return submit_checked(loop, c, kind,
                          (iol__poller_op){ .code = IOL__OP_RECV, .fd = fd, .len = max, .multishot = multishot,
                                            .poll_first = flags & IOL__RECV_POLL_FIRST });
}

int iol__loop_send(iol_loop *loop, iol__completion *c, unsigned kind, int fd, const void *buf, size_t len)
{
    return submit(loop, c, kind, (iol__poller_op){ .code = IOL__OP_SEND, .fd = fd, .buf = (void *)buf, .len = len });
}

int iol__loop_accept(iol_loop *loop, iol__completion *c, unsigned kind, int fd, bool multishot)
{
    return submit(loop, c, kind, (iol__poller_op){ .code = IOL__OP_ACCEPT, .fd = fd, .multishot = multishot });
}

int iol__loop_accept_peer(iol_loop *loop, iol__completion *c, unsigned kind, int fd, struct sockaddr *peer,
                          socklen_t *peerlen)
{
    if (!peer || !peerlen)
        return -EINVAL;
    return submit(loop, c, kind,
                  (iol__poller_op){ .code = IOL__OP_ACCEPT, .fd = fd, .buf = peer, .addrlen = peerlen });
}

int iol__loop_close_op(iol_loop *loop, iol__completion *c, unsigned kind, int fd)
{
    return submit(loop, c, kind, (iol__poller_op){ .code = IOL__OP_CLOSE, .fd = fd });
}

int iol__loop_cancel(iol_loop *loop, iol__completion *c, unsigned kind)
{
    if (c && c->inflight == 0)
        return 0;
    return submit(loop, c, kind, (iol__poller_op){ .code = IOL__OP_CANCEL, .fd = -1 });
}

void iol__loop_buffer_recycle(iol_loop *loop, unsigned bid)
{
    if (loop && loop->poller && loop->poller_ops->buffer_recycle)
        loop->poller_ops->buffer_recycle(loop->poller, bid);
}

void iol__loop_count_fd(iol_loop *loop, int delta)
{
    /* relaxed: a statistic for load balancing, as in handlers.c. */
    atomic_fetch_add_explicit(&loop->handler_count, delta, memory_order_relaxed);
}

void iol__loop_complete(iol_loop *loop, const iol__poller_event *ev)
{
    iol__completion *c = (iol__completion *)(uintptr_t)(ev->done.tag & ~(uint64_t)7);
    iol__completion_result r = {
        .kind = (unsigned)(ev->done.tag >> 1) & 3,
        .res = ev->done.res,
        .more = ev->done.flags & IOL__DONE_MORE,
        .nonempty = ev->done.flags & IOL__DONE_NONEMPTY,
    };
    if (ev->done.flags & IOL__DONE_BUFFER) {
        r.buf = loop->poller_ops->buffer(loop->poller, ev->done.bid);
        r.bid = ev->done.bid;
    }
    if (!r.more) {
        c->inflight--;
        loop->ops_inflight--;
    }
    if (!iol__loop_watched(loop)) {
        c->fn(c, &r);
        return;
    }
    uint64_t began = iol__loop_call_begin(loop, (const void *)c->fn);
    c->fn(c, &r);
    iol__loop_call_end(loop, began);
}

void iol__loop_completions_drain(iol_loop *loop)
{
    loop->draining = true;
    if (loop->ops_inflight == 0)
        return;
    iol__poller_op all = { .code = IOL__OP_CANCEL_ALL, .fd = -1 };
    loop->poller_ops->op_submit(loop->poller, &all);
    /* Bounded: a cancelled socket operation ends at once; one that does
     * not end in 5 s is left to the poller's close (its owner leaks). */
    for (int tries = 0; tries < 50 && loop->ops_inflight > 0; tries++) {
        int n = loop->poller_ops->wait(loop->poller, loop->events, IOL__MAX_EVENTS, 100);
        for (int i = 0; i < n; i++)
            if (loop->events[i].fd == IOL__POLLER_COMPLETION)
                iol__loop_complete(loop, &loop->events[i]);
    }
}
