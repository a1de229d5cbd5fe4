/* loop/ — ZeroMQ sockets as handlers (pyzmq's ZMQIOLoop), on any poller.
 *
 * Two modes, chosen by the loop's poller:
 *  - the zmq poller (poller/zmq.c) polls sockets itself with zmq_poll,
 *    which reads ZMQ_EVENTS of every socket on every poll: level-triggered
 *    as it is, so its socket events are dispatched like fd events;
 *  - any other poller (epoll, poll, select) watches each socket's ZMQ_FD
 *    as an ordinary fd handler. That fd is edge-triggered and only says
 *    "look at ZMQ_EVENTS"; the argument that no message is left unseen is
 *    at iol__zmq_recheck below.
 *
 * The handlers live here, not in the loop: a table keyed by socket
 * pointer, released by a close hook when the loop closes (before the loop
 * closes fds with all_fds, so a ZMQ_FD, which libzmq owns, is never
 * closed by us). Owner-thread code throughout, like fd handlers. */
#include "loop/loop_impl.h"

#include <errno.h>
#include <stdlib.h>

#ifndef IOL_HAVE_ZMQ

int iol_loop_add_zmq_handler(iol_loop *loop, void *socket, unsigned events, iol_zmq_handler_fn fn, void *arg)
{
    (void)loop, (void)socket, (void)events, (void)fn, (void)arg;
    return -ENOTSUP;
}

int iol_loop_update_zmq_handler(iol_loop *loop, void *socket, unsigned events)
{
    (void)loop, (void)socket, (void)events;
    return -ENOTSUP;
}

int iol_loop_remove_zmq_handler(iol_loop *loop, void *socket)
{
    (void)loop, (void)socket;
    return -ENOTSUP;
}

/* loop->zmq stays NULL in this build, so the loop never calls these. */
bool iol__zmq_recheck(iol_loop *loop)
{
    (void)loop;
    return false;
}

void iol__zmq_dispatch_socket(iol_loop *loop, void *socket, unsigned events)
{
    (void)loop, (void)socket, (void)events;
}

void iol__zmq_dispatch_ready(iol_loop *loop)
{
    (void)loop;
}

#else

#include <stdint.h>
#include <zmq.h>

#include "loop/close_hook.h"
#include "loop/log.h"

#define KNOWN_EVENTS (IOL_READ | IOL_WRITE | IOL_ERROR)

typedef struct zmq_handler zmq_handler;
struct zmq_handler {
    void *socket;
    iol_zmq_handler_fn fn;
    void *arg;
    unsigned events;     /* as asked: IOL_READ | IOL_WRITE, IOL_ERROR alone pauses */
    int fd;              /* ZMQ_FD mode: the socket's ZMQ_FD; else -1 */
    int index;           /* in list[] */
    bool pending;        /* ZMQ_FD mode: read ZMQ_EVENTS after this poll */
    zmq_handler *next;   /* hash chain */
};

struct iol__zmq_handlers {
    iol__close_hook hook;  /* first: the hook's address is the table's */
    iol_loop *loop;
    bool fd_mode;          /* the poller has no add_socket: use ZMQ_FD */
    bool term_logged;      /* the ETERM exit is logged once per loop */
    zmq_handler **list;    /* dense, for the per-iteration scans */
    int count, list_cap;
    zmq_handler **buckets; /* socket pointer -> handler, chained */
    unsigned nbuckets;     /* a power of two */
};

/* ------------------------------------------------------------ the table */

static unsigned bucket_of(const struct iol__zmq_handlers *z, const void *socket)
{
    uint64_t h = (uint64_t)(uintptr_t)socket * 0x9E3779B97F4A7C15ull;
    return (unsigned)(h >> 32) & (z->nbuckets - 1);
}

static zmq_handler *lookup(const struct iol__zmq_handlers *z, const void *socket)
{
    if (!z)
        return NULL;
    for (zmq_handler *h = z->buckets[bucket_of(z, socket)]; h; h = h->next)
        if (h->socket == socket)
            return h;
    return NULL;
}

static int grow_buckets(struct iol__zmq_handlers *z)
{
    unsigned n = z->nbuckets * 2;
    zmq_handler **b = calloc(n, sizeof *b);
    if (!b)
        return -ENOMEM;
    unsigned old_n = z->nbuckets;
    zmq_handler **old = z->buckets;
    z->buckets = b;
    z->nbuckets = n;
    for (unsigned i = 0; i < old_n; i++) {
        for (zmq_handler *h = old[i], *next; h; h = next) {
            next = h->next;
            unsigned k = bucket_of(z, h->socket);
            h->next = b[k];
            b[k] = h;
        }
    }
    free(old);
    return 0;
}

static int insert(struct iol__zmq_handlers *z, zmq_handler *h)
{
    int err;
    if ((unsigned)z->count >= z->nbuckets && (err = grow_buckets(z)) < 0)
        return err;
    if (z->count == z->list_cap) {
        int cap = z->list_cap ? z->list_cap * 2 : 16;
        zmq_handler **list = realloc(z->list, (size_t)cap * sizeof *list);
        if (!list)
            return -ENOMEM;
        z->list = list;
        z->list_cap = cap;
    }
    unsigned k = bucket_of(z, h->socket);
    h->next = z->buckets[k];
    z->buckets[k] = h;
    h->index = z->count;
    z->list[z->count++] = h;
    return 0;
}

/* Swaps the last handler into h's slot; iol__zmq_dispatch_ready walks the
 * list backwards so that a handler removed while it runs skips nobody. */
static void unlink_handler(struct iol__zmq_handlers *z, zmq_handler *h)
{
    zmq_handler **p = &z->buckets[bucket_of(z, h->socket)];
    while (*p != h)
        p = &(*p)->next;
    *p = h->next;
    zmq_handler *last = z->list[--z->count];
    z->list[h->index] = last;
    last->index = h->index;
}

static void release_all(iol__close_hook *hook);

static int table_new(iol_loop *loop, struct iol__zmq_handlers **out)
{
    struct iol__zmq_handlers *z = calloc(1, sizeof *z);
    if (!z)
        return -ENOMEM;
    z->nbuckets = 16;
    if (!(z->buckets = calloc(z->nbuckets, sizeof *z->buckets))) {
        free(z);
        return -ENOMEM;
    }
    z->loop = loop;
    z->fd_mode = loop->poller_ops->add_socket == NULL;
    z->hook.fn = release_all;
    /* The table holds no loop reference: the hook also runs at the last
     * unref of a loop never closed (loop_shutdown), freeing the table. */
    int err = iol__loop_add_close_hook(loop, &z->hook);
    if (err < 0) {
        free(z->buckets);
        free(z);
        return err;
    }
    *out = z;
    return 0;
}

/* ------------------------------------------------------------ dispatch */

/* Ends the run as after a stop, as pyzmq does: "This happens when the
 * zmq Context is closed; we should just exit." */
static void context_terminated(struct iol__zmq_handlers *z)
{
    if (!z->term_logged) {
        z->term_logged = true;
        iol__log(IOL_LOG_INFO, "zmq: a socket's context was terminated; the loop stops");
    }
    iol_loop_stop(z->loop);
}

/* ZMQ_EVENTS of h's socket as IOL_* bits (h's interest only), 0 on
 * ETERM (after asking the loop to stop) or EINTR (h stays pending). */
static unsigned ready_events(struct iol__zmq_handlers *z, zmq_handler *h)
{
    int zev;
    size_t len = sizeof zev;
    if (zmq_getsockopt(h->socket, ZMQ_EVENTS, &zev, &len) < 0) {
        if (zmq_errno() == ETERM)
            context_terminated(z);
        else if (zmq_errno() == EINTR)
            h->pending = true;
        return 0;
    }
    unsigned got = ((zev & ZMQ_POLLIN) ? IOL_READ : 0) | ((zev & ZMQ_POLLOUT) ? IOL_WRITE : 0);
    return got & h->events;
}

static void run_handler(iol_loop *loop, zmq_handler *h, unsigned events)
{
    bool watched = iol__loop_watched(loop);
    uint64_t began = watched ? iol__loop_call_begin(loop, (const void *)h->fn) : 0;
    /* h may be freed by fn (remove_zmq_handler): not touched afterwards. */
    h->fn(h->socket, events, h->arg);
    if (watched)
        iol__loop_call_end(loop, began);
}

/* The ZMQ_FD handler: only marks the socket; iol__zmq_dispatch_ready
 * reads ZMQ_EVENTS once the fd handlers of this poll have run. */
static void zmq_fd_ready(int fd, unsigned events, void *arg)
{
    (void)fd, (void)events;
    ((zmq_handler *)arg)->pending = true;
}

/* No-stall argument for ZMQ_FD (epoll, poll, select).
 *
 * ZMQ_FD is the socket's mailbox signal: it turns readable when a command
 * (a peer's "pipe became readable", a stop) arrives while the mailbox is
 * passive, and is drained by whatever call on the socket processes
 * commands next: zmq_send, zmq_recv and getsockopt(ZMQ_EVENTS) all do, on
 * this thread, wherever they are called from (a zmq handler, an fd
 * handler, a timeout, a callback). Such a call can swallow the edge that
 * announced a message, and zmq_send/zmq_recv also process commands only
 * now and then (they throttle), leaving the mailbox active, in which state
 * new commands raise no edge at all. getsockopt(ZMQ_EVENTS) processes
 * every command, without throttling, and leaves the mailbox passive, so
 * from then on any change of the socket's state raises the fd again.
 *
 * So: every socket with interest gets a ZMQ_EVENTS read here, after all
 * the code of the iteration ran (handlers, callbacks, timeouts: whatever
 * may have sent or received on it) and before the poll; the read is the
 * last call on the socket before the poll. A socket that is ready keeps
 * the poll from sleeping and is dispatched after it; one that is not has a
 * passive mailbox, so whatever makes it ready later raises ZMQ_FD, which
 * the poll sees. Hence no message (and no writability) is left unseen,
 * whoever sent or received, without wrapping zmq_send. The cost is one
 * ZMQ_EVENTS read per socket per iteration, which zmq_poll pays too. */
bool iol__zmq_recheck(iol_loop *loop)
{
    struct iol__zmq_handlers *z = loop->zmq;
    if (!z->fd_mode)
        return false; /* zmq_poll reads ZMQ_EVENTS itself */
    bool any = false;
    for (int i = 0; i < z->count; i++) {
        zmq_handler *h = z->list[i];
        if (!(h->events & (IOL_READ | IOL_WRITE)))
            continue; /* paused: an ETERM still raises ZMQ_FD */
        if (ready_events(z, h)) {
            h->pending = true;
            any = true;
        }
    }
    /* A stop asked for by ETERM keeps the poll from sleeping by itself. */
    return any;
}

void iol__zmq_dispatch_ready(iol_loop *loop)
{
    struct iol__zmq_handlers *z = loop->zmq;
    /* Backwards: a removal swaps the last handler into the removed slot,
     * and the last one was visited already (or was added during this
     * pass and is pending, so it runs next iteration at the latest). */
    for (int i = z->count - 1; i >= 0; i--) {
        if (i >= z->count)
            continue; /* handlers removed by the previous fn */
        zmq_handler *h = z->list[i];
        if (!h->pending)
            continue;
        h->pending = false;
        /* Read afresh: an fd handler of this poll may have received. */
        unsigned events = ready_events(z, h);
        if (events)
            run_handler(loop, h, events);
        if (!loop->zmq)
            return; /* fn closed the loop: nothing of the table is left */
    }
}

void iol__zmq_dispatch_socket(iol_loop *loop, void *socket, unsigned events)
{
    struct iol__zmq_handlers *z = loop->zmq;
    zmq_handler *h = lookup(z, socket);
    if (!h)
        return;
    if (events & IOL_ERROR) {
        /* The zmq poller reports a terminated context as an error. */
        events = ready_events(z, h);
    }
    events &= h->events & (IOL_READ | IOL_WRITE);
    if (events)
        run_handler(loop, h, events);
}

/* Forgets socket events of this poll not yet dispatched (zmq poller): a
 * removed handler gets nothing more from this iteration. */
static void drop_pending_events(iol_loop *loop, void *socket)
{
    if (!loop->dispatching)
        return;
    for (int i = loop->event_pos + 1; i < loop->nevents; i++)
        if (loop->events[i].fd == IOL__POLLER_SOCKET && loop->events[i].socket == socket)
            loop->events[i].fd = -1;
}

/* ---------------------------------------------------------- public API */

static int check_events(unsigned events)
{
    return events == 0 || (events & ~KNOWN_EVENTS) ? -EINVAL : 0;
}

int iol_loop_add_zmq_handler(iol_loop *loop, void *socket, unsigned events, iol_zmq_handler_fn fn, void *arg)
{
    int err = iol__loop_check(loop);
    if (err)
        return err;
    if (!socket || !fn || check_events(events))
        return -EINVAL;
    if (lookup(loop->zmq, socket))
        return -EEXIST;
    int type;
    size_t len = sizeof type;
    /* -ENOTSOCK for anything but an open zmq socket; -ETERM if its
     * context is terminated. */
    if (zmq_getsockopt(socket, ZMQ_EVENTS, &type, &len) < 0)
        return -zmq_errno();
    if (!loop->zmq && (err = table_new(loop, &loop->zmq)) < 0)
        return err;
    struct iol__zmq_handlers *z = loop->zmq;
    zmq_handler *h = calloc(1, sizeof *h);
    if (!h)
        return -ENOMEM;
    *h = (zmq_handler){ .socket = socket, .fn = fn, .arg = arg, .events = events, .fd = -1, .pending = true };
    if (z->fd_mode) {
        int fd;
        size_t fdlen = sizeof fd;
        if (zmq_getsockopt(socket, ZMQ_FD, &fd, &fdlen) < 0) {
            err = -zmq_errno(); /* EINVAL: a thread-safe socket has no ZMQ_FD */
            goto fail;
        }
        /* Readable whatever the interest: ZMQ_FD signals every change. */
        if ((err = iol_loop_add_handler(loop, fd, IOL_READ, zmq_fd_ready, h)) < 0)
            goto fail;
        h->fd = fd;
    } else {
        if ((err = loop->poller_ops->add_socket(loop->poller, socket, events & (IOL_READ | IOL_WRITE))) < 0)
            goto fail;
        /* relaxed: a statistic for load balancing (ZMQ_FD mode counts its fd). */
        atomic_fetch_add_explicit(&loop->handler_count, 1, memory_order_relaxed);
    }
    if ((err = insert(z, h)) < 0) {
        if (h->fd >= 0) {
            iol_loop_remove_handler(loop, h->fd);
        } else {
            loop->poller_ops->remove_socket(loop->poller, socket);
            atomic_fetch_sub_explicit(&loop->handler_count, 1, memory_order_relaxed);
        }
        goto fail;
    }
    return 0;
fail:
    free(h);
    return err;
}

int iol_loop_update_zmq_handler(iol_loop *loop, void *socket, unsigned events)
{
    int err = iol__loop_check(loop);
    if (err)
        return err;
    if (!socket || check_events(events))
        return -EINVAL;
    zmq_handler *h = lookup(loop->zmq, socket);
    if (!h)
        return -ENOENT;
    if (!loop->zmq->fd_mode &&
        (err = loop->poller_ops->modify_socket(loop->poller, socket, events & (IOL_READ | IOL_WRITE))) < 0)
        return err;
    h->events = events;
    h->pending = true; /* the new interest may hold already */
    return 0;
}

static void remove_handler(iol_loop *loop, zmq_handler *h)
{
    struct iol__zmq_handlers *z = loop->zmq;
    if (h->fd >= 0) {
        /* Before the application's zmq_close: libzmq closes ZMQ_FD then. */
        iol_loop_remove_handler(loop, h->fd);
    } else {
        loop->poller_ops->remove_socket(loop->poller, h->socket);
        atomic_fetch_sub_explicit(&loop->handler_count, 1, memory_order_relaxed);
        drop_pending_events(loop, h->socket);
    }
    unlink_handler(z, h);
    free(h);
}

int iol_loop_remove_zmq_handler(iol_loop *loop, void *socket)
{
    int err = iol__loop_check(loop);
    if (err)
        return err;
    if (!socket)
        return -EINVAL;
    zmq_handler *h = lookup(loop->zmq, socket);
    if (!h)
        return -ENOENT;
    remove_handler(loop, h);
    return 0;
}

/* The close hook: the loop still takes calls, so each ZMQ_FD leaves the
 * fd table before the loop would close it (all_fds). */
static void release_all(iol__close_hook *hook)
{
    struct iol__zmq_handlers *z = (struct iol__zmq_handlers *)hook;
    iol_loop *loop = z->loop;
    while (z->count > 0)
        remove_handler(loop, z->list[z->count - 1]);
    loop->zmq = NULL;
    free(z->list);
    free(z->buckets);
    free(z);
}

#endif /* IOL_HAVE_ZMQ */
