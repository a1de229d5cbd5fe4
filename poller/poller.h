/* poller/ — the backend interface: fds and events, nothing else.
 * Policy (what runs when) lives in loop/. Each backend is one file that
 * fills an iol__poller_ops and nothing else. Level-triggered; IOL_ERROR is
 * always reported. */
#ifndef IOL_POLLER_H
#define IOL_POLLER_H

#include <stdbool.h>

typedef struct iol__poller iol__poller; /* backend-private state */

typedef struct iol__poller_event {
    int fd;          /* IOL__POLLER_SOCKET: a zmq socket's event, see below */
    unsigned events; /* IOL_READ | IOL_WRITE | IOL_ERROR bits */
    void *socket;    /* read only when fd == IOL__POLLER_SOCKET */
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
