/* poller/ — the backend interface: fds and events, nothing else.
 * Policy (what runs when) lives in loop/. Each backend is one file that
 * fills an iol__poller_ops and nothing else. Level-triggered; IOL_ERROR is
 * always reported. */
#ifndef IOL_POLLER_H
#define IOL_POLLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

typedef struct iol__poller iol__poller; /* backend-private state */

typedef struct iol__poller_event {
    int fd;          /* IOL__POLLER_SOCKET: a zmq socket's event, see below;
                        IOL__POLLER_COMPLETION: an operation's result */
    unsigned events; /* IOL_READ | IOL_WRITE | IOL_ERROR bits */
    union {
        void *socket;    /* read only when fd == IOL__POLLER_SOCKET */
        struct {         /* read only when fd == IOL__POLLER_COMPLETION */
            uint64_t tag;    /* as submitted */
            int res;         /* the system call's result or -errno */
            unsigned flags;  /* IOL__DONE_* */
            unsigned bid;    /* with IOL__DONE_BUFFER: the buffer's id */
        } done;
    };
} iol__poller_event;

/* ZeroMQ sockets are not fds: a socket's readiness is ZMQ_EVENTS, which
 * only zmq_poll can tell (or ZMQ_FD, an edge-triggered hint, plus a
 * ZMQ_EVENTS re-check before every poll: loop/zmq_handlers.c does that on
 * the other backends). So the zmq backend takes sockets
 * through three optional ops, and reports their events with fd ==
 * IOL__POLLER_SOCKET and the socket in `socket`. Backends without these
 * ops leave them NULL and never report such an event; nothing else in the
 * interface changes for them. */
#define IOL__POLLER_SOCKET (-2)

/* COMPLETIONS. io_uring can do the work itself (recv, send, accept,
 * close) instead of saying when it may be done; a readiness interface
 * cannot express that, and poll-per-request costs a re-arm and a system
 * call for every request. So the uring backend takes operations through
 * the optional ops below and reports each result as an event with fd ==
 * IOL__POLLER_COMPLETION and `done` filled. Other backends leave the ops
 * NULL and never report such an event; the loop then says -ENOTSUP and
 * its users stay on the handler path. The poller knows no owners: a tag
 * is an opaque number the loop gives and gets back (bit 0 is the
 * poller's: it must be 0).
 *
 * An operation is submitted at the next wait (or at once when the SQ is
 * full: never dropped). One CQE per operation, except a multishot one,
 * which reports IOL__DONE_MORE on every CQE but its last. recv with buf
 * NULL takes a buffer from the provided-buffer ring (op_buffers), so a
 * connection waiting for data holds none: its CQE says IOL__DONE_BUFFER
 * and bid, and the buffer is the caller's until buffer_recycle. */
#define IOL__POLLER_COMPLETION (-3)

/* RING MESSAGES. One uring loop wakes another by posting a CQE straight
 * to the other's ring (IORING_OP_MSG_RING) instead of writing its eventfd
 * (loop/loop.c, sync/waker.c). msg_fd gives the fd others send to; the
 * target's wait reports each message as an event with fd ==
 * IOL__POLLER_WAKE (nothing else in it). A sender's message that the
 * kernel refused comes back to the sender as IOL__POLLER_MSG_FAILED (a
 * success posts nothing to the sender). */
#define IOL__POLLER_WAKE (-4)
#define IOL__POLLER_MSG_FAILED (-5)
enum {
    IOL__DONE_MORE = 1u,   /* a multishot operation stays armed */
    IOL__DONE_BUFFER = 2u, /* done.bid names a ring buffer holding the data */
    IOL__DONE_NONEMPTY = 4u, /* recv: the socket had more data (where the kernel tells) */
};
typedef enum iol__op_code {
    IOL__OP_RECV,   /* fd, buf/len (buf NULL: the buffer ring, at most len
                       bytes, 0: a buffer), multishot (then len 0),
                       poll_first (a hint: wait for data before trying) */
    IOL__OP_SEND,   /* fd, buf/len; MSG_NOSIGNAL */
    IOL__OP_ACCEPT, /* fd, multishot; res: the new fd (nonblocking, cloexec);
                       single-shot: buf/addrlen (may be NULL) get the peer */
    IOL__OP_CLOSE,  /* fd */
    IOL__OP_CANCEL, /* every operation with tag (IORING_OP_ASYNC_CANCEL);
                       its own result is not reported */
    IOL__OP_CANCEL_ALL, /* every operation in flight (the loop closes) */
    IOL__OP_RECVMSG, /* fd, buf: a struct msghdr template (msg_namelen,
                        msg_controllen; alive while armed), multishot: each
                        CQE's ring buffer holds an io_uring_recvmsg_out, the
                        name, the control data and the payload (datagram
                        sockets; IOL__OPS_MULTISHOT_RECV and a buffer ring) */
} iol__op_code;
typedef struct iol__poller_op {
    iol__op_code code;
    int fd;
    void *buf;
    size_t len;
    socklen_t *addrlen; /* ACCEPT: in buf's size, out the peer's length */
    uint64_t tag;
    bool multishot;
    bool poll_first;
} iol__poller_op;
enum { /* op_features bits: what the running kernel can do */
    IOL__OPS_MULTISHOT_ACCEPT = 1u,
    IOL__OPS_MULTISHOT_RECV = 2u,
    IOL__OPS_BUFFER_RING = 4u,
    IOL__OPS_COMPLETIONS = 8u, /* any at all (IOL_URING_OPS=0 turns them off) */
    IOL__OPS_MSG_RING = 16u,   /* msg_fd/msg_send work (IORING_OP_MSG_RING, 5.18) */
};

typedef struct iol__poller_ops {
    const char *name;
    /* 0 or -errno. */
    int (*create)(iol__poller **out);
    /* events: IOL_READ|IOL_WRITE (0 allowed: errors only). 0 or -errno;
     * -EEXIST already added, -EINVAL fd out of range (select: >= FD_SETSIZE). */
    int (*add)(iol__poller *p, int fd, unsigned events);
    /* -ENOENT if fd was not added. */
    int (*modify)(iol__poller *p, int fd, unsigned events);
    /* -ENOENT if fd was not added. Works on an fd already closed. */
    int (*remove)(iol__poller *p, int fd);
    /* Optional (NULL: the backend is level-triggered only). Adds fd for
     * READ, edge-triggered: wait() reports IOL_READ once after each time
     * the file signals readiness (every write to an eventfd), however much
     * is left unread. For the loop's waker alone, which then need not read
     * its eventfd after every wakeup (sync/waker.c): a system call saved
     * per sleep. Same errors as add. */
    int (*add_edge)(iol__poller *p, int fd);
    /* Optional (NULL: remove). fd is about to be closed: drop it from the
     * backend's own books without telling the kernel, where closing the
     * file unregisters it anyway (epoll). Saves a system call per closed
     * connection. -ENOENT if fd was not added. */
    int (*forget)(iol__poller *p, int fd);
    /* Waits up to timeout_ms (-1: forever, 0: not at all) and fills at most
     * max events. Returns the count, 0 on EINTR, or -errno. */
    int (*wait)(iol__poller *p, iol__poller_event *events, int max, int timeout_ms);
    void (*close)(iol__poller *p);
    /* Optional (NULL: the backend cannot poll zmq sockets; the loop then
     * uses ZMQ_FD). Same contract as add/modify/remove, keyed by the socket
     * pointer; add: -ENOTSOCK if it is not a zmq socket, -ETERM if its
     * context is terminated. A socket whose context
     * was terminated is reported as IOL_ERROR until it is removed. */
    int (*add_socket)(iol__poller *p, void *socket, unsigned events);
    int (*modify_socket)(iol__poller *p, void *socket, unsigned events);
    int (*remove_socket)(iol__poller *p, void *socket);
    /* add itself returns -EBADF for an fd that is not open (the kernel
     * checks, as epoll_ctl does); else the loop checks first. */
    bool add_checks_fd;
    /* Optional (NULL: iol_loop_backend_fd says -ENOTSUP). An fd that polls
     * readable whenever wait() would report an event, for a program that
     * drives the loop from its own event loop: epoll's own fd. */
    int (*backend_fd)(const iol__poller *p);
    /* Optional, all or none (NULL: no completion path; see COMPLETIONS).
     * op_features: IOL__OPS_* bits. op_submit: 0, -EINVAL bad op,
     * -ENOTSUP an op the kernel lacks (a multishot one, or a recv from a
     * buffer ring not set up), -EBUSY the kernel takes no SQE (the caller
     * tries again later). op_buffers: sets up the buffer ring, count
     * buffers (a power of 2) of size bytes; 0, -EEXIST, -ENOMEM, -ENOTSUP.
     * buffer: the memory of bid. buffer_recycle: gives bid back. */
    unsigned (*op_features)(iol__poller *p);
    int (*op_submit)(iol__poller *p, const iol__poller_op *op);
    int (*op_buffers)(iol__poller *p, unsigned count, unsigned size);
    void *(*buffer)(iol__poller *p, unsigned bid);
    void (*buffer_recycle)(iol__poller *p, unsigned bid);
    /* Optional, all or none (NULL: no ring messages; see RING MESSAGES;
     * they work only with IOL__OPS_MSG_RING in op_features, which needs
     * no op_submit). msg_fd: a new fd (close-on-exec) naming p's ring, for
     * other pollers of this backend to send to; the caller closes it;
     * -ENOTSUP, or -errno of dup. It keeps the kernel's ring alive after
     * close(p), so a message sent to it never lands elsewhere.
     * msg_send: queues one message to the ring behind fd (another
     * poller's msg_fd, kept open until the message was submitted), handed
     * to the kernel at the next wait or submit; 0, -ENOTSUP, -EBUSY (the
     * kernel takes no SQE). submit: hands every queued SQE over now,
     * without waiting or reaping; returns how many are still queued (0:
     * everything queued so far reached the kernel). */
    int (*msg_fd)(iol__poller *p);
    int (*msg_send)(iol__poller *p, int fd);
    unsigned (*submit)(iol__poller *p);
} iol__poller_ops;

extern const iol__poller_ops iol__poller_epoll;
extern const iol__poller_ops iol__poller_poll;
extern const iol__poller_ops iol__poller_select;
#ifdef IOL_HAVE_ZMQ
extern const iol__poller_ops iol__poller_zmq; /* zmq_poll over sockets and fds */
#endif
#ifdef IOL_HAVE_URING
extern const iol__poller_ops iol__poller_uring; /* IORING_OP_POLL_ADD, batched */
#endif

/* The backend called name; NULL name: $IOL_POLLER if set, else the best
 * (epoll). NULL for an unknown name (the loop returns -EINVAL). */
const iol__poller_ops *iol__poller_find(const char *name);

#endif
