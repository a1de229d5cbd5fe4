/* loop/ — fd handlers: the table indexed by fd and event dispatch. */
#include "loop/loop_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "loop/completion.h"

#define KNOWN_EVENTS (IOL_READ | IOL_WRITE | IOL_ERROR)

static int check_fd_open(int fd)
{
    if (fd < 0)
        return -EBADF;
    if (fcntl(fd, F_GETFD) < 0 && errno == EBADF)
        return -EBADF;
    return 0;
}

/* Whether fd already has an owner on this loop: the loop's own fds, a
 * handler, or a claim. */
static bool fd_taken(const iol_loop *loop, int fd)
{
    return fd == iol__waker_fd(&loop->waker) || fd == iol__loop_signal_fd(loop) || iol__loop_has_handler(loop, fd) ||
           iol__loop_fd_claimed(loop, fd);
}

/* A table's new capacity to cover fd: doubled from cap (first when 0). */
static int grown_cap(int cap, int first, int fd)
{
    if (cap == 0)
        cap = first;
    while (cap <= fd)
        cap = cap > INT32_MAX / 2 ? INT32_MAX : cap * 2;
    return cap;
}

int iol__loop_fd_claim(iol_loop *loop, int fd)
{
    int err = iol__loop_check(loop);
    if (err)
        return err;
    if (fd < 0)
        return -EBADF;
    if (fd_taken(loop, fd))
        return -EEXIST;
    if (fd >= loop->claimed_cap) {
        int cap = grown_cap(loop->claimed_cap, 1024, fd);
        size_t old_words = ((size_t)loop->claimed_cap + 63) / 64, words = ((size_t)cap + 63) / 64;
        uint64_t *bits = realloc(loop->claimed, words * sizeof *bits);
        if (!bits)
            return -ENOMEM;
        memset(bits + old_words, 0, (words - old_words) * sizeof *bits);
        loop->claimed = bits;
        loop->claimed_cap = cap;
    }
    loop->claimed[fd / 64] |= (uint64_t)1 << (fd % 64);
    return 0;
}

void iol__loop_fd_unclaim(iol_loop *loop, int fd)
{
    if (loop && fd >= 0 && fd < loop->claimed_cap)
        loop->claimed[fd / 64] &= ~((uint64_t)1 << (fd % 64));
}

static int reserve_table(iol_loop *loop, int fd)
{
    if (fd < loop->handlers_cap)
        return 0;
    int cap = grown_cap(loop->handlers_cap, 64, fd);
    iol__handler *table = realloc(loop->handlers, (size_t)cap * sizeof *table);
    if (!table)
        return -ENOMEM;
    for (int i = loop->handlers_cap; i < cap; i++)
        table[i] = (iol__handler){ 0 };
    loop->handlers = table;
    loop->handlers_cap = cap;
    return 0;
}

int iol_loop_add_handler(iol_loop *loop, int fd, unsigned events, iol_handler_fn fn, void *arg)
{
    int err = iol__loop_check(loop);
    if (err)
        return err;
    if (!fn || events == 0 || (events & ~KNOWN_EVENTS))
        return -EINVAL;
    if (fd < 0)
        return -EBADF;
    /* A backend that cannot tell a closed fd (poll, select) gets one
     * checked here; epoll's own add says EBADF, sparing a syscall, except
     * when the tables must grow: never grow them for an fd that is not
     * open (a bogus 10^9 would allocate gigabytes). */
    if ((!loop->poller_ops->add_checks_fd || fd >= loop->handlers_cap) && (err = check_fd_open(fd)) < 0)
        return err;
    if (fd_taken(loop, fd))
        return -EEXIST;
    if ((err = reserve_table(loop, fd)) < 0)
        return err;
    if ((err = loop->poller_ops->add(loop->poller, fd, events & (IOL_READ | IOL_WRITE))) < 0)
        return err;
    loop->handlers[fd] = (iol__handler){ .fn = fn, .arg = arg, .events = events | IOL_ERROR };
    /* relaxed: a statistic for load balancing, read without ordering. */
    atomic_fetch_add_explicit(&loop->handler_count, 1, memory_order_relaxed);
    return 0;
}

int iol_loop_update_handler(iol_loop *loop, int fd, unsigned events)
{
    int err = iol__loop_check(loop);
    if (err)
        return err;
    if (fd < 0)
        return -EBADF;
    if (events == 0 || (events & ~KNOWN_EVENTS))
        return -EINVAL;
    if (!iol__loop_has_handler(loop, fd))
        return -ENOENT;
    if ((err = loop->poller_ops->modify(loop->poller, fd, events & (IOL_READ | IOL_WRITE))) < 0)
        return err;
    loop->handlers[fd].events = events | IOL_ERROR;
    return 0;
}

/* Forgets polled-but-not-dispatched events of fd: a handler removed during
 * an iteration gets nothing more from that iteration's poll. */
static void drop_pending_events(iol_loop *loop, int fd)
{
    if (!loop->dispatching)
        return;
    for (int i = loop->event_pos + 1; i < loop->nevents; i++)
        if (loop->events[i].fd == fd)
            loop->events[i].fd = -1;
}

static void forget_handler(iol_loop *loop, int fd)
{
    loop->handlers[fd] = (iol__handler){ 0 };
    /* relaxed: a statistic for load balancing, read without ordering. */
    atomic_fetch_sub_explicit(&loop->handler_count, 1, memory_order_relaxed);
    drop_pending_events(loop, fd);
}

int iol_loop_remove_handler(iol_loop *loop, int fd)
{
    int err = iol__loop_check(loop);
    if (err)
        return err;
    if (fd < 0)
        return -EBADF;
    if (!iol__loop_has_handler(loop, fd))
        return -ENOENT;
    /* The fd may be closed already; the poller forgets it either way. */
    loop->poller_ops->remove(loop->poller, fd);
    forget_handler(loop, fd);
    return 0;
}

int iol_loop_close_fd(iol_loop *loop, int fd)
{
    int err = iol__loop_check(loop);
    if (err)
        return err;
    if (fd < 0)
        return -EBADF;
    if (iol__loop_has_handler(loop, fd)) {
        if (loop->poller_ops->forget)
            loop->poller_ops->forget(loop->poller, fd);
        else
            loop->poller_ops->remove(loop->poller, fd);
        forget_handler(loop, fd);
    }
    return close(fd) < 0 && errno == EBADF ? -EBADF : 0;
}

void iol__loop_dispatch_events(iol_loop *loop)
{
    int waker_fd = iol__waker_fd(&loop->waker);
    bool watched = iol__loop_watched(loop);
    loop->dispatching = true;
    /* Everything but the waker (its eventfd or a ring message, and the
     * signalfd) is I/O the spin must not
     * delay (GATHERING in loop/spin.c). */
    loop->io_events = loop->nevents;
    for (loop->event_pos = 0; loop->event_pos < loop->nevents; loop->event_pos++) {
        iol__poller_event ev = loop->events[loop->event_pos];
        if (ev.fd == IOL__POLLER_SOCKET) {
            iol__zmq_dispatch_socket(loop, ev.socket, ev.events);
            continue;
        }
        if (ev.fd == IOL__POLLER_COMPLETION) {
            iol__loop_complete(loop, &loop->events[loop->event_pos]);
            continue;
        }
        if (ev.fd == IOL__POLLER_MSG_FAILED)
            iol__loop_msg_failed(loop);
        if (ev.fd < 0 || ev.fd == waker_fd || !iol__loop_has_handler(loop, ev.fd)) {
            loop->io_events--;
            if (ev.fd >= 0 && loop->signals)
                iol__loop_signal_fd_event(loop, ev.fd);
            continue;
        }
        iol__handler h = loop->handlers[ev.fd];
        unsigned events = ev.events & h.events;
        if (!events)
            continue;
        if (!watched) {
            h.fn(ev.fd, events, h.arg);
            continue;
        }
        uint64_t began = iol__loop_call_begin(loop, (const void *)h.fn);
        h.fn(ev.fd, events, h.arg);
        iol__loop_call_end(loop, began);
    }
    loop->dispatching = false;
    loop->nevents = 0;
    if (loop->zmq)
        iol__zmq_dispatch_ready(loop);
}

void iol__loop_handlers_release(iol_loop *loop, bool close_fds)
{
    for (int fd = 0; fd < loop->handlers_cap; fd++) {
        if (!loop->handlers[fd].fn)
            continue;
        if (loop->poller)
            loop->poller_ops->remove(loop->poller, fd);
        if (close_fds)
            close(fd);
    }
    free(loop->handlers);
    free(loop->claimed);
    loop->claimed = NULL;
    loop->claimed_cap = 0;
    loop->handlers = NULL;
    loop->handlers_cap = 0;
    atomic_store_explicit(&loop->handler_count, 0, memory_order_relaxed);
}
