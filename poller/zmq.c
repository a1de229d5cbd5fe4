/* poller/ — the zmq backend: one zmq_poll(3) over ZeroMQ sockets and plain
 * fds together (pyzmq's ZMQPoller). Like poll.c: a dense item array plus an
 * fd -> slot map; sockets are found by a linear scan, which costs no more
 * than the zmq_poll that visits every item anyway. */
#include "poller/poller.h"

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <zmq.h>

#include "ioloop.h"

struct iol__poller {
    zmq_pollitem_t *items; /* dense: items[0..count) */
    int count, items_cap;
    int *slot;             /* slot[fd]: index in items, -1 if not added */
    int slot_cap;
    int next_start;        /* where the next scan starts, so max < ready never starves the tail */
};

static int zmq_create_poller(iol__poller **out)
{
    iol__poller *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    *out = p;
    return 0;
}

/* Returns array grown to hold index need (updating *cap), or NULL. */
static void *grow(void *array, int *cap, int need, size_t elem)
{
    if (need < *cap)
        return array;
    int n = *cap ? *cap : 64;
    while (n <= need)
        n = n > INT32_MAX / 2 ? INT32_MAX : n * 2;
    void *bigger = realloc(array, (size_t)n * elem);
    if (bigger)
        *cap = n;
    return bigger;
}

static short to_zmq(unsigned events)
{
    return (short)(((events & IOL_READ) ? ZMQ_POLLIN : 0) | ((events & IOL_WRITE) ? ZMQ_POLLOUT : 0));
}

static bool fd_added(const iol__poller *p, int fd)
{
    return fd >= 0 && fd < p->slot_cap && p->slot[fd] >= 0;
}

static int find_socket(const iol__poller *p, void *socket)
{
    for (int i = 0; i < p->count; i++)
        if (p->items[i].socket == socket)
            return i;
    return -1;
}

static int append_item(iol__poller *p, zmq_pollitem_t item)
{
    zmq_pollitem_t *items = grow(p->items, &p->items_cap, p->count, sizeof *items);
    if (!items)
        return -ENOMEM;
    p->items = items;
    p->items[p->count] = item;
    return p->count++;
}

static void remove_item(iol__poller *p, int i)
{
    zmq_pollitem_t last = p->items[--p->count];
    if (i != p->count) {
        p->items[i] = last;
        if (!last.socket)
            p->slot[last.fd] = i;
    }
}

static int zmq_add(iol__poller *p, int fd, unsigned events)
{
    if (fd < 0)
        return -EBADF;
    if (fd_added(p, fd))
        return -EEXIST;
    int old_cap = p->slot_cap;
    int *slot = grow(p->slot, &p->slot_cap, fd, sizeof *slot);
    if (!slot)
        return -ENOMEM;
    p->slot = slot;
    for (int i = old_cap; i < p->slot_cap; i++)
        slot[i] = -1;
    int i = append_item(p, (zmq_pollitem_t){ .socket = NULL, .fd = fd, .events = to_zmq(events) });
    if (i < 0)
        return i;
    p->slot[fd] = i;
    return 0;
}

static int zmq_modify(iol__poller *p, int fd, unsigned events)
{
    if (!fd_added(p, fd))
        return -ENOENT;
    p->items[p->slot[fd]].events = to_zmq(events);
    return 0;
}

static int zmq_remove(iol__poller *p, int fd)
{
    if (!fd_added(p, fd))
        return -ENOENT;
    remove_item(p, p->slot[fd]);
    p->slot[fd] = -1;
    return 0;
}

static int zmq_add_socket(iol__poller *p, void *socket, unsigned events)
{
    int type;
    size_t len = sizeof type;
    if (!socket)
        return -EINVAL;
    /* ETERM for a socket of a terminated context, ENOTSOCK for a closed one. */
    if (zmq_getsockopt(socket, ZMQ_EVENTS, &type, &len) < 0)
        return -zmq_errno();
    if (find_socket(p, socket) >= 0)
        return -EEXIST;
    int i = append_item(p, (zmq_pollitem_t){ .socket = socket, .fd = -1, .events = to_zmq(events) });
    return i < 0 ? i : 0;
}

static int zmq_modify_socket(iol__poller *p, void *socket, unsigned events)
{
    int i = socket ? find_socket(p, socket) : -1;
    if (i < 0)
        return -ENOENT;
    p->items[i].events = to_zmq(events);
    return 0;
}

static int zmq_remove_socket(iol__poller *p, void *socket)
{
    int i = socket ? find_socket(p, socket) : -1;
    if (i < 0)
        return -ENOENT;
    remove_item(p, i);
    return 0;
}

static unsigned from_zmq(const zmq_pollitem_t *item)
{
    unsigned got = 0;
    if (item->revents & ZMQ_POLLIN)
        got |= IOL_READ;
    if (item->revents & ZMQ_POLLOUT)
        got |= IOL_WRITE;
    if (item->revents & ZMQ_POLLERR) {
        got |= IOL_ERROR;
        /* zmq_poll folds POLLERR, POLLHUP and POLLNVAL of an fd into
         * ZMQ_POLLERR; ask poll(2) which (a rare path). After a hangup a
         * reader must still see EOF (as Tornado does). */
        struct pollfd pfd = { .fd = item->fd, .events = 0 };
        if (!item->socket && poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLHUP))
            got |= IOL_READ;
    }
    unsigned want = ((item->events & ZMQ_POLLIN) ? IOL_READ : 0) | ((item->events & ZMQ_POLLOUT) ? IOL_WRITE : 0);
    return got & (want | IOL_ERROR);
}

static iol__poller_event event_of(const zmq_pollitem_t *item, unsigned events)
{
    if (item->socket)
        return (iol__poller_event){ .fd = IOL__POLLER_SOCKET, .events = events, .socket = item->socket };
    return (iol__poller_event){ .fd = item->fd, .events = events };
}

/* zmq_poll fails as a whole with ETERM once one socket's context is shut
 * down or terminated, without saying which: find those sockets and report
 * them as IOL_ERROR (loop/zmq_handlers.c then ends the run). */
static int report_terminated(iol__poller *p, iol__poller_event *out, int max)
{
    int n = 0;
    for (int i = 0; i < p->count && n < max; i++) {
        int ev;
        size_t len = sizeof ev;
        if (p->items[i].socket && zmq_getsockopt(p->items[i].socket, ZMQ_EVENTS, &ev, &len) < 0 &&
            zmq_errno() == ETERM)
            out[n++] = event_of(&p->items[i], IOL_ERROR);
    }
    return n > 0 ? n : -ETERM;
}

static int zmq_wait_events(iol__poller *p, iol__poller_event *out, int max, int timeout_ms)
{
    if (max <= 0)
        return -EINVAL;
    int ready = zmq_poll(p->items, p->count, timeout_ms < 0 ? -1 : timeout_ms);
    if (ready < 0) {
        int err = zmq_errno();
        if (err == EINTR)
            return 0;
        return err == ETERM ? report_terminated(p, out, max) : -err;
    }
    int n = 0;
    int start = p->next_start < p->count ? p->next_start : 0;
    for (int k = 0; k < p->count && ready > 0 && n < max; k++) {
        int i = (start + k) % p->count;
        if (!p->items[i].revents)
            continue;
        ready--;
        unsigned got = from_zmq(&p->items[i]);
        if (got)
            out[n++] = event_of(&p->items[i], got);
        p->next_start = i + 1;
    }
    return n;
}

static void zmq_close_poller(iol__poller *p)
{
    if (!p)
        return;
    free(p->items);
    free(p->slot);
    free(p);
}

const iol__poller_ops iol__poller_zmq = {
    .name = "zmq",
    .create = zmq_create_poller,
    .add = zmq_add,
    .modify = zmq_modify,
    .remove = zmq_remove,
    .wait = zmq_wait_events,
    .close = zmq_close_poller,
    .add_socket = zmq_add_socket,
    .modify_socket = zmq_modify_socket,
    .remove_socket = zmq_remove_socket,
};
