/* poller/ — the epoll backend (level-triggered; edge-triggered only for
 * the loop's waker, see add_edge in poller.h). */
#include "poller/poller.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "ioloop.h"

#define REGISTERED 0x80u /* in watched[fd]: fd is added (its events may be 0) */
#define INITIAL_EVENTS 64

struct iol__poller {
    int epfd;
    /* Our own view of what is added, indexed by fd: REGISTERED | events.
     * The kernel silently drops an fd when its file closes, so -EEXIST,
     * -ENOENT and event filtering come from here, not from epoll. */
    uint8_t *watched;
    int watched_cap;
    struct epoll_event *events;
    int events_cap;
};

static int epoll_create_poller(iol__poller **out)
{
    int err = -ENOMEM;
    iol__poller *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    if (!(p->events = malloc(INITIAL_EVENTS * sizeof *p->events)))
        goto fail;
    p->events_cap = INITIAL_EVENTS;
    if ((p->epfd = epoll_create1(EPOLL_CLOEXEC)) < 0) {
        err = -errno;
        goto fail;
    }
    *out = p;
    return 0;
fail:
    free(p->events);
    free(p);
    return err;
}

static bool is_added(const iol__poller *p, int fd)
{
    return fd < p->watched_cap && (p->watched[fd] & REGISTERED);
}

static int reserve_fd(iol__poller *p, int fd)
{
    if (fd < p->watched_cap)
        return 0;
    int cap = p->watched_cap ? p->watched_cap : 64;
    while (cap <= fd)
        cap = cap > INT32_MAX / 2 ? INT32_MAX : cap * 2;
    uint8_t *w = realloc(p->watched, (size_t)cap);
    if (!w)
        return -ENOMEM;
    for (int i = p->watched_cap; i < cap; i++)
        w[i] = 0;
    p->watched = w;
    p->watched_cap = cap;
    return 0;
}

static uint32_t to_epoll(unsigned events)
{
    return ((events & IOL_READ) ? EPOLLIN : 0) | ((events & IOL_WRITE) ? EPOLLOUT : 0);
}

/* Adds fd with these epoll events; `events` (IOL_READ|IOL_WRITE) is what
 * wait() reports for it. */
static int add_fd(iol__poller *p, int fd, uint32_t epoll_events, unsigned events)
{
    if (fd < 0)
        return -EBADF;
    if (is_added(p, fd))
        return -EEXIST;
    int err = reserve_fd(p, fd);
    if (err)
        return err;
    struct epoll_event ev = { .events = epoll_events, .data.fd = fd };
    /* EEXIST here means a closed fd's file is still alive through a dup;
     * EPERM means epoll cannot watch this kind of file (regular files). */
    if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
        return -errno;
    p->watched[fd] = (uint8_t)(REGISTERED | (events & (IOL_READ | IOL_WRITE)));
    return 0;
}

static int epoll_add(iol__poller *p, int fd, unsigned events)
{
    return add_fd(p, fd, to_epoll(events), events);
}

/* The waker's eventfd: EPOLLET, so a write raises one event whether or
 * not the counter was read since (eventfd_write wakes its waiters on
 * every write). */
static int epoll_add_edge(iol__poller *p, int fd)
{
    return add_fd(p, fd, EPOLLIN | EPOLLET, IOL_READ);
}

static int epoll_modify(iol__poller *p, int fd, unsigned events)
{
    if (fd < 0 || !is_added(p, fd))
        return -ENOENT;
    struct epoll_event ev = { .events = to_epoll(events), .data.fd = fd };
    if (epoll_ctl(p->epfd, EPOLL_CTL_MOD, fd, &ev) < 0) {
        /* The fd was closed and its number reused: the kernel forgot the
         * old file, so watch the new one as asked. */
        if (errno != ENOENT || epoll_ctl(p->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
            return -errno;
    }
    p->watched[fd] = (uint8_t)(REGISTERED | (events & (IOL_READ | IOL_WRITE)));
    return 0;
}

static int epoll_remove(iol__poller *p, int fd)
{
    if (fd < 0 || !is_added(p, fd))
        return -ENOENT;
    p->watched[fd] = 0;
    /* EBADF/ENOENT: already closed, and epoll dropped it with its file. */
    epoll_ctl(p->epfd, EPOLL_CTL_DEL, fd, NULL);
    return 0;
}

static int epoll_forget(iol__poller *p, int fd)
{
    if (fd < 0 || !is_added(p, fd))
        return -ENOENT;
    /* The close that follows removes fd from the epoll set, unless another
     * descriptor refers to the same file (a dup): the caller's promise. */
    p->watched[fd] = 0;
    return 0;
}

static int epoll_wait_events(iol__poller *p, iol__poller_event *out, int max, int timeout_ms)
{
    if (max <= 0)
        return -EINVAL;
    if (max > p->events_cap) {
        struct epoll_event *bigger = realloc(p->events, (size_t)max * sizeof *bigger);
        /* Without memory we still serve up to the old capacity. */
        if (bigger) {
            p->events = bigger;
            p->events_cap = max;
        }
    }
    int n = epoll_wait(p->epfd, p->events, max < p->events_cap ? max : p->events_cap, timeout_ms < 0 ? -1 : timeout_ms);
    if (n < 0)
        return errno == EINTR ? 0 : -errno;
    int count = 0;
    for (int i = 0; i < n; i++) {
        int fd = p->events[i].data.fd;
        /* A file closed without remove but kept alive by a dup stays in
         * epoll under its old number; report nothing for it. */
        if (!is_added(p, fd))
            continue;
        unsigned want = p->watched[fd] & (IOL_READ | IOL_WRITE);
        uint32_t ev = p->events[i].events;
        unsigned got = 0;
        if (ev & EPOLLIN)
            got |= IOL_READ;
        if (ev & EPOLLOUT)
            got |= IOL_WRITE;
        if (ev & (EPOLLERR | EPOLLHUP))
            got |= IOL_ERROR;
        /* After a hangup a reader must still see EOF (as Tornado does). */
        if (ev & EPOLLHUP)
            got |= IOL_READ;
        got &= want | IOL_ERROR;
        if (got)
            out[count++] = (iol__poller_event){ .fd = fd, .events = got };
    }
    return count;
}

static void epoll_close_poller(iol__poller *p)
{
    if (!p)
        return;
    close(p->epfd);
    free(p->watched);
    free(p->events);
    free(p);
}

static int epoll_backend_fd(const iol__poller *p)
{
    return p->epfd;
}

const iol__poller_ops iol__poller_epoll = {
    .name = "epoll",
    .create = epoll_create_poller,
    .add = epoll_add,
    .add_edge = epoll_add_edge,
    .modify = epoll_modify,
    .remove = epoll_remove,
    .forget = epoll_forget,
    .wait = epoll_wait_events,
    .close = epoll_close_poller,
    .add_checks_fd = true, /* epoll_ctl: EBADF */
    .backend_fd = epoll_backend_fd,
};
