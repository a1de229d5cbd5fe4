/* loop/ — the completion path: operations the backend performs itself
 * (io_uring's recv, send, accept, close), their results routed to their
 * owner's callback.
 *
 * WHY AN INTERNAL CALL. net/ and runtime/ use only the public loop API,
 * so that a stream works on any loop. This header is the one documented
 * exception: on a loop whose poller can do the work (uring), a request
 * costs no poll re-arm and no read/write system call, which the public
 * handler API cannot express. Every call here returns -ENOTSUP on the
 * other backends (and whenever the completion path is turned off), and
 * the caller then uses the public handler path: every stream and listener
 * still works on every loop, and the public API is unchanged.
 *
 * OWNERS. An iol__completion is embedded in its owner (a stream, a
 * listener), at an address aligned to 8 (the kind rides in the low bits
 * of the tag). Each operation has a kind (0..3) chosen by the owner, so
 * it can tell its results apart and cancel one kind. `inflight` counts
 * the owner's operations not yet ended; the loop lowers it before it
 * calls fn with an operation's last result. An owner that wants to go
 * away cancels its operations and frees itself only when inflight is 0,
 * from fn: the kernel may still complete an operation after the cancel
 * (with its real result, or -ECANCELED), and that result is delivered to
 * the owner, never to freed memory.
 *
 * BUFFERS. recv takes its buffer from a ring the loop shares among its
 * owners (set up at the first recv), so a connection waiting for data
 * holds no buffer. A result with buf != NULL owns the buffer until
 * iol__loop_buffer_recycle; every such result must be recycled, also on
 * close. -ENOBUFS from a recv: the ring was empty; resubmit once buffers
 * were recycled (or read through the handler path).
 *
 * LOOP CLOSE. After the close hooks ran (owners cancel and close there),
 * the loop cancels whatever is still in flight and waits for the last
 * results (bounded), delivering them to their owners, which free
 * themselves; submissions then fail with -ESHUTDOWN.
 *
 * Loop-thread calls, as for handlers; 0 or -errno: -ENOTSUP no completion
 * path (or that kind of operation) on this loop, -ESHUTDOWN loop closing,
 * -EPERM another thread runs the loop, -EBUSY the kernel takes no more
 * submissions now (its CQ is overflowing: try later or fall back),
 * -ENOMEM, -EBADF fd < 0. */
#ifndef IOL_COMPLETION_H
#define IOL_COMPLETION_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "ioloop.h"

typedef struct iol__completion_result {
    unsigned kind;  /* as submitted */
    int res;        /* the system call's result or -errno */
    bool more;      /* a multishot operation stays armed; false: it ended */
    bool nonempty;  /* recv: more data was waiting after it (false also where the kernel cannot tell) */
    void *buf;      /* recv: the data (res bytes), else NULL */
    unsigned bid;   /* with buf: give it back with iol__loop_buffer_recycle */
} iol__completion_result;

typedef struct iol__completion iol__completion;
struct iol__completion {
    void (*fn)(iol__completion *c, const iol__completion_result *r);
    unsigned inflight;
};

enum { /* iol__loop_completion_features bits (poller.h IOL__OPS_*) */
    IOL__COMPLETION_MULTISHOT_ACCEPT = 1u,
    IOL__COMPLETION_MULTISHOT_RECV = 2u,
    IOL__COMPLETION_BUFFER_RING = 4u,
};

/* >= 0: the loop has a completion path, with these bits; -ENOTSUP none. */
int iol__loop_completion_features(iol_loop *loop);
enum { /* iol__loop_recv flags */
    IOL__RECV_MULTISHOT = 1u,  /* max ignored; -ENOTSUP if the kernel lacks it (then single-shot) */
    IOL__RECV_POLL_FIRST = 2u, /* a hint: the last recv drained the socket, wait for data before trying */
};
/* recv from the shared buffer ring, at most max bytes (0 or more than a
 * buffer: a buffer's worth); flags IOL__RECV_*. */
int iol__loop_recv(iol_loop *loop, iol__completion *c, unsigned kind, int fd, size_t max, unsigned flags);
/* The size of each buffer of the shared ring (what one recv or one
 * recvmsg result can hold). */
#define IOL__RING_BUFFER_SIZE (16 * 1024)
/* A multishot recvmsg from the shared buffer ring (datagram sockets): one
 * result per datagram, its buffer holding a struct io_uring_recvmsg_out,
 * then tmpl->msg_namelen bytes of name, tmpl->msg_controllen of control
 * data, then the payload (liburing's io_uring_recvmsg_* helpers read it);
 * a datagram longer than the room left is cut (MSG_TRUNC in its flags).
 * tmpl stays alive and unchanged while the operation is armed. It ends
 * (more false) on an error, -ENOBUFS when the ring ran dry included.
 * -ENOTSUP: no multishot receive on this kernel (then read otherwise). */
int iol__loop_recvmsg_multishot(iol_loop *loop, iol__completion *c, unsigned kind, int fd, struct msghdr *tmpl);
/* send len bytes of buf (kept alive by the caller until the result). */
int iol__loop_send(iol_loop *loop, iol__completion *c, unsigned kind, int fd, const void *buf, size_t len);
/* accept: results are new fds (nonblocking, close-on-exec). */
int iol__loop_accept(iol_loop *loop, iol__completion *c, unsigned kind, int fd, bool multishot);
/* A single-shot accept that also gives the peer's address: *peerlen is
 * the size of peer when submitted, and both (kept alive by the caller
 * until the result) hold the peer's address with a result >= 0.
 * -EINVAL: peer or peerlen NULL. */
int iol__loop_accept_peer(iol_loop *loop, iol__completion *c, unsigned kind, int fd, struct sockaddr *peer,
                          socklen_t *peerlen);
/* close fd in the kernel (no handler may be registered for it). */
int iol__loop_close_op(iol_loop *loop, iol__completion *c, unsigned kind, int fd);
/* Cancels c's operations of kind (their results still come, -ECANCELED
 * or real). Harmless when none is in flight. */
int iol__loop_cancel(iol_loop *loop, iol__completion *c, unsigned kind);
/* Gives a recv's buffer back to the ring. */
void iol__loop_buffer_recycle(iol_loop *loop, unsigned bid);
/* An fd watched by ring operations instead of a handler (a stream's
 * socket) still counts in iol_loop_handler_count: the runtime balances
 * load and waits out its drain by that count. delta: +1 or -1. */
void iol__loop_count_fd(iol_loop *loop, int delta);
/* An owner that watches fd by ring operations alone claims it, so that
 * iol_loop_add_handler and another claim say -EEXIST for it as for an fd
 * with a handler, without a handler: no poll armed and removed again, and
 * no slot in the loop's and the poller's fd-indexed tables (32 bytes a
 * slot, the tables sized to the highest fd); a bit instead. 0, -EEXIST
 * (a handler or a claim already), -EBADF, -ENOMEM, and the loop-thread
 * checks. unclaim: before the owner registers a handler or lets go of
 * the fd (harmless when not claimed). */
int iol__loop_fd_claim(iol_loop *loop, int fd);
void iol__loop_fd_unclaim(iol_loop *loop, int fd);

#endif
