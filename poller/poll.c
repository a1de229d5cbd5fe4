/* poller/ — the poll(2) backend: a dense pollfd array plus an fd -> slot
 * map, so add, modify and remove are O(1) (remove swaps in the last slot). */
#include "poller/poller.h"

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>

#include "ioloop.h"

struct iol__poller {
    struct pollfd *fds; /* dense: fds[0..count) */
    int count, fds_cap;
    int *slot;          /* slot[fd]: index in fds, -1 if not added */
    int slot_cap;
    int next_start;     /* where the next scan starts, so max < ready never starves the tail */
};

static int poll_create_poller(iol__poller **out)
{
    iol__poller *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    *out = p;
    return 0;
}

static bool is_added(const iol__poller *p, int fd)
{
    return fd < p->slot_cap && p->slot[fd] >= 0;
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

static short to_poll(unsigned events)
{
    return (short)(((events & IOL_READ) ? POLLIN : 0) | ((events & IOL_WRITE) ? POLLOUT : 0));
}

static int poll_add(iol__poller *p, int fd, unsigned events)
{
    if (fd < 0)
        return -EBADF;
    if (is_added(p, fd))
        return -EEXIST;
    int old_cap = p->slot_cap;
    int *slot = grow(p->slot, &p->slot_cap, fd, sizeof *slot);
    if (!slot)
        return -ENOMEM;
    p->slot = slot;
    for (int i = old_cap; i < p->slot_cap; i++)
        slot[i] = -1;
    struct pollfd *fds = grow(p->fds, &p->fds_cap, p->count, sizeof *fds);
    if (!fds)
        return -ENOMEM;
    p->fds = fds;
    p->fds[p->count] = (struct pollfd){ .fd = fd, .events = to_poll(events) };
    p->slot[fd] = p->count++;
    return 0;
}

static int poll_modify(iol__poller *p, int fd, unsigned events)
{
    if (fd < 0 || !is_added(p, fd))
        return -ENOENT;
    p->fds[p->slot[fd]].events = to_poll(events);
    return 0;
}

static int poll_remove(iol__poller *p, int fd)
{
    if (fd < 0 || !is_added(p, fd))
        return -ENOENT;
    int i = p->slot[fd];
    struct pollfd last = p->fds[--p->count];
    if (i != p->count) {
        p->fds[i] = last;
        p->slot[last.fd] = i;
    }
    p->slot[fd] = -1;
    return 0;
}

static unsigned from_poll(const struct pollfd *pfd)
{
    unsigned got = 0;
    if (pfd->revents & POLLIN)
        got |= IOL_READ;
    if (pfd->revents & POLLOUT)
        got |= IOL_WRITE;
    /* POLLNVAL: closed without remove; the handler hears of it as an error. */
    if (pfd->revents & (POLLERR | POLLHUP | POLLNVAL))
        got |= IOL_ERROR;
    /* After a hangup a reader must still see EOF (as Tornado does). */
    if (pfd->revents & POLLHUP)
        got |= IOL_READ;
    unsigned want = ((pfd->events & POLLIN) ? IOL_READ : 0) | ((pfd->events & POLLOUT) ? IOL_WRITE : 0);
    return got & (want | IOL_ERROR);
}

static int poll_wait_events(iol__poller *p, iol__poller_event *out, int max, int timeout_ms)
{
    if (max <= 0)
        return -EINVAL;
    int ready = poll(p->fds, (nfds_t)p->count, timeout_ms < 0 ? -1 : timeout_ms);
    if (ready < 0)
        return errno == EINTR ? 0 : -errno;
    int n = 0;
    int start = p->next_start < p->count ? p->next_start : 0;
    for (int k = 0; k < p->count && ready > 0 && n < max; k++) {
        int i = (start + k) % p->count;
        if (!p->fds[i].revents)
            continue;
        ready--;
        unsigned got = from_poll(&p->fds[i]);
        if (got)
            out[n++] = (iol__poller_event){ .fd = p->fds[i].fd, .events = got };
        p->next_start = i + 1;
    }
    return n;
}

static void poll_close_poller(iol__poller *p)
{
    if (!p)
        return;
    free(p->fds);
    free(p->slot);
    free(p);
}

const iol__poller_ops iol__poller_poll = {
    .name = "poll",
    .create = poll_create_poller,
    .add = poll_add,
    .modify = poll_modify,
    .remove = poll_remove,
    .wait = poll_wait_events,
    .close = poll_close_poller,
};
