/* poller/ — the select(2) backend, for fds below FD_SETSIZE only.
 * select cannot tell errors apart: an fd in error or hung up shows as
 * readable/writable, and an fd watched for no events sees nothing. */
#include "poller/poller.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/select.h>

#include "ioloop.h"

#define REGISTERED 0x80u /* in watched[fd]: fd is added (its events may be 0) */

struct iol__poller {
    fd_set readers, writers;
    uint8_t watched[FD_SETSIZE]; /* REGISTERED | events */
    int max_fd;                  /* highest added fd, -1 if none */
    int next_start;              /* where the next scan starts, so max < ready never starves the tail */
};

static int select_create_poller(iol__poller **out)
{
    iol__poller *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    FD_ZERO(&p->readers);
    FD_ZERO(&p->writers);
    p->max_fd = -1;
    *out = p;
    return 0;
}

static bool is_added(const iol__poller *p, int fd)
{
    return fd >= 0 && fd < FD_SETSIZE && (p->watched[fd] & REGISTERED);
}

static void set_events(iol__poller *p, int fd, unsigned events)
{
    p->watched[fd] = (uint8_t)(REGISTERED | (events & (IOL_READ | IOL_WRITE)));
    if (events & IOL_READ)
        FD_SET(fd, &p->readers);
    else
        FD_CLR(fd, &p->readers);
    if (events & IOL_WRITE)
        FD_SET(fd, &p->writers);
    else
        FD_CLR(fd, &p->writers);
}

static int select_add(iol__poller *p, int fd, unsigned events)
{
    if (fd < 0)
        return -EBADF;
    /* FD_SET beyond the set is out-of-bounds memory: refuse up front. */
    if (fd >= FD_SETSIZE)
        return -EINVAL;
    if (is_added(p, fd))
        return -EEXIST;
    set_events(p, fd, events);
    if (fd > p->max_fd)
        p->max_fd = fd;
    return 0;
}

static int select_modify(iol__poller *p, int fd, unsigned events)
{
    if (!is_added(p, fd))
        return -ENOENT;
    set_events(p, fd, events);
    return 0;
}

static int select_remove(iol__poller *p, int fd)
{
    if (!is_added(p, fd))
        return -ENOENT;
    set_events(p, fd, 0);
    p->watched[fd] = 0;
    while (p->max_fd >= 0 && !(p->watched[p->max_fd] & REGISTERED))
        p->max_fd--;
    return 0;
}

/* select failed with EBADF: some added fd was closed without remove.
 * Report those as errors (like poll's POLLNVAL) instead of failing every
 * wait, so their handlers get a chance to remove them. */
static int report_bad_fds(iol__poller *p, iol__poller_event *out, int max)
{
    int n = 0;
    for (int fd = 0; fd <= p->max_fd && n < max; fd++)
        if ((p->watched[fd] & REGISTERED) && fcntl(fd, F_GETFD) < 0 && errno == EBADF)
            out[n++] = (iol__poller_event){ .fd = fd, .events = IOL_ERROR };
    return n ? n : -EBADF;
}

static int select_wait_events(iol__poller *p, iol__poller_event *out, int max, int timeout_ms)
{
    if (max <= 0)
        return -EINVAL;
    fd_set readable = p->readers, writable = p->writers;
    struct timeval tv = { .tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000 };
    int ready = select(p->max_fd + 1, &readable, &writable, NULL, timeout_ms < 0 ? NULL : &tv);
    if (ready < 0) {
        if (errno == EINTR)
            return 0;
        return errno == EBADF ? report_bad_fds(p, out, max) : -errno;
    }
    int n = 0, span = p->max_fd + 1;
    int start = p->next_start < span ? p->next_start : 0;
    for (int k = 0; k < span && ready > 0 && n < max; k++) {
        int fd = (start + k) % span;
        unsigned got = 0;
        if (FD_ISSET(fd, &readable))
            got |= IOL_READ;
        if (FD_ISSET(fd, &writable))
            got |= IOL_WRITE;
        if (!got)
            continue;
        out[n++] = (iol__poller_event){ .fd = fd, .events = got };
        ready -= (got & IOL_READ ? 1 : 0) + (got & IOL_WRITE ? 1 : 0);
        p->next_start = fd + 1;
    }
    return n;
}

static void select_close_poller(iol__poller *p)
{
    free(p);
}

const iol__poller_ops iol__poller_select = {
    .name = "select",
    .create = select_create_poller,
    .add = select_add,
    .modify = select_modify,
    .remove = select_remove,
    .wait = select_wait_events,
    .close = select_close_poller,
};
