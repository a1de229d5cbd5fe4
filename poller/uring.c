/* poller/ — the io_uring backend: readiness through IORING_OP_POLL_ADD.
 *
 * LEVEL-TRIGGERED. A multishot poll (IORING_POLL_ADD_MULTI) posts a CQE
 * per wakeup of the file's wait queue, that is per new arrival: data left
 * unread by a handler raises no new CQE, so multishot is edge-triggered.
 * We arm one-shot polls instead and re-arm every fd that fired at the
 * start of the next wait, after its handler ran. Arming checks readiness
 * at once (vfs_poll) and completes inline when the fd is still ready: a
 * handler that read half of the data is called again, as on epoll.
 *
 * BATCHED. add, modify and remove only write our books and, for a poll in
 * flight, a POLL_REMOVE SQE; nothing enters the kernel until wait, which
 * queues the re-arms and hands everything over in the same io_uring_enter
 * that waits. One system call per iteration in the steady state; more only
 * when the SQ fills (submit, then take a fresh SQE: never dropped) or the
 * CQ overflowed (IORING_FEAT_NODROP keeps the extra CQEs in the kernel;
 * reaping flushes them with io_uring_get_events).
 *
 * STALE COMPLETIONS. A poll's user_data is (generation << 32 | fd << 1). Every new
 * registration and every cancel bumps fd's generation, so a CQE of a poll
 * removed, modified or armed on a closed file whose number was reused is
 * recognised and dropped, never reported to the new registration. A CQE
 * with generation 0 is one of our POLL_REMOVEs.
 *
 * CLOSED FILES. An armed poll holds a reference to its file: an fd closed
 * with its poll in flight keeps the file (and a socket's connection) open
 * until the POLL_REMOVE queued by remove reaches the kernel, at the next
 * wait or at close. Requests belong to the thread that submitted them: if
 * it exits, the kernel cancels them (-ECANCELED with a live generation)
 * and we re-arm from the thread that waits now.
 *
 * COMPLETIONS (poller.h). An operation's user_data is its tag | 1, so bit
 * 0 tells its CQEs from the polls'. Each CQE without IORING_CQE_F_MORE
 * ends an operation; ops_inflight counts those not ended, so close can
 * cancel them all and wait for the last CQE before it frees the buffer
 * ring the kernel may still write to. The kernel's abilities come from
 * the opcode probe: IORING_OP_SOCKET arrived with multishot accept,
 * buffer rings and IORING_ASYNC_CANCEL_ALL (5.19), IORING_OP_SEND_ZC
 * with multishot recv (6.0). IOL_URING_OPS (a number, a mask of
 * IOL__OPS_* bits) takes abilities away, for testing the fallbacks.
 *
 * RING MESSAGES (poller.h). A message's CQE on the target carries
 * MSG_DATA; the sender's SQE carries MSG_SENT and IOSQE_CQE_SKIP_SUCCESS,
 * so only a failure posts a CQE back to the sender. Both are poll tags of
 * generation 0 (never a live poll's) with an fd no slot has. The kernel
 * issues a data message inline, in the io_uring_enter that submits it
 * (no io-wq for a target without IOPOLL or DEFER_TASKRUN, which we never
 * set): it resolves the target fd then, and a failure's CQE is posted
 * before that enter returns. With the target fd a dup that its loop keeps
 * until freed (msg_fd), a message fails only with -EOVERFLOW: the target's
 * CQ is full and the kernel cannot allocate an overflow entry. */
#include "poller/poller.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ioloop.h"

/* Memcheck cannot see the kernel write a recv's data into a ring buffer:
 * we tell it (no cost outside valgrind; nothing without its header). */
#if defined(__has_include)
#if __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#endif
#endif
#ifndef VALGRIND_MAKE_MEM_DEFINED
#define VALGRIND_MAKE_MEM_DEFINED(addr, len) ((void)(addr), (void)(len))
#endif

#define SQ_ENTRIES 256
#define CQ_ENTRIES 1024 /* CQEs come only from ready fds; beyond this NODROP */

enum {
    ADDED = 1u,    /* fd is registered (its events may be 0) */
    ARMED = 2u,    /* a poll is in the SQ or in the kernel, not yet reaped */
    QUEUED = 4u,   /* fd is in the arm list */
};

typedef struct slot {
    uint32_t gen;  /* generation of the current registration or poll */
    uint8_t flags;
    uint8_t want;  /* IOL_READ | IOL_WRITE */
} slot;

struct iol__poller {
    struct io_uring ring;
    slot *slots;   /* indexed by fd */
    int slots_cap;
    int *arm;      /* fds to (re-)arm at the next wait, each once (QUEUED) */
    int arm_len, arm_cap;
    unsigned features;      /* IOL__OPS_* */
    uint64_t ops_inflight;  /* operations submitted whose last CQE is not reaped */
    struct io_uring_buf_ring *br; /* the provided buffers, group 0; NULL: none */
    char *buffers;
    unsigned buf_count, buf_size;
    unsigned buf_provided; /* buffers given to the ring so far (grows on -ENOBUFS) */
};

/* Buffers given to the ring at first, and added each time a recv finds
 * it dry: the ring recycles in FIFO order, so every buffer it holds gets
 * touched (made resident) in turn; holding only what the peak of
 * simultaneous arrivals needs keeps an idle server's memory small. */
#define BUF_STEP 32u

#define MSG_DATA ((uint64_t)0x7fffffffu << 1) /* generation 0, fd INT32_MAX */
#define MSG_SENT ((uint64_t)0x7ffffffeu << 1)

static uint64_t tag(int fd, uint32_t gen)
{
    return (uint64_t)gen << 32 | (uint32_t)fd << 1;
}

static void next_gen(slot *s)
{
    if (++s->gen == 0) /* 0 marks our own POLL_REMOVEs */
        s->gen = 1;
}

static int uring_create_poller(iol__poller **out)
{
    iol__poller *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    /* COOP_TASKRUN: completions are finished when we enter the kernel
     * anyway (we wait in io_uring_enter) instead of interrupting the
     * thread; TASKRUN_FLAG tells a wait that does not block to enter to
     * run them (reap). Both 5.19. */
    struct io_uring_params params = {
        .flags = IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
        .cq_entries = CQ_ENTRIES,
    };
    int err = io_uring_queue_init_params(SQ_ENTRIES, &p->ring, &params);
    if (err == -EINVAL) {
        params = (struct io_uring_params){ .flags = IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL, .cq_entries = CQ_ENTRIES };
        err = io_uring_queue_init_params(SQ_ENTRIES, &p->ring, &params);
    }
    if (err == -EINVAL) { /* kernels before 5.18 lack SUBMIT_ALL */
        params = (struct io_uring_params){ .flags = IORING_SETUP_CQSIZE, .cq_entries = CQ_ENTRIES };
        err = io_uring_queue_init_params(SQ_ENTRIES, &p->ring, &params);
    }
    if (err < 0) { /* -EPERM, -ENOSYS: io_uring disabled or filtered */
        free(p);
        return err;
    }
    /* Without NODROP a CQ overflow loses completions: an fd would never
     * be reported again. */
    if (!(params.features & IORING_FEAT_NODROP)) {
        io_uring_queue_exit(&p->ring);
        free(p);
        return -ENOSYS;
    }
    struct io_uring_probe *probe = io_uring_get_probe_ring(&p->ring);
    if (probe) {
        if (io_uring_opcode_supported(probe, IORING_OP_SOCKET))
            p->features |= IOL__OPS_MULTISHOT_ACCEPT | IOL__OPS_BUFFER_RING;
        if (io_uring_opcode_supported(probe, IORING_OP_SEND_ZC))
            p->features |= IOL__OPS_MULTISHOT_RECV;
        /* MSG_RING (5.18) postdates CQE_SKIP_SUCCESS (5.17). */
        if (io_uring_opcode_supported(probe, IORING_OP_MSG_RING))
            p->features |= IOL__OPS_MSG_RING;
        io_uring_free_probe(probe);
    }
    p->features |= IOL__OPS_COMPLETIONS;
    const char *mask = getenv("IOL_URING_OPS");
    if (mask)
        p->features &= (unsigned)strtoul(mask, NULL, 0);
    *out = p;
    return 0;
}

static bool is_added(const iol__poller *p, int fd)
{
    return fd >= 0 && fd < p->slots_cap && (p->slots[fd].flags & ADDED);
}

static int reserve_fd(iol__poller *p, int fd)
{
    if (fd < p->slots_cap)
        return 0;
    int cap = p->slots_cap ? p->slots_cap : 64;
    while (cap <= fd)
        cap = cap > INT32_MAX / 2 ? INT32_MAX : cap * 2;
    slot *s = realloc(p->slots, (size_t)cap * sizeof *s);
    if (!s)
        return -ENOMEM;
    for (int i = p->slots_cap; i < cap; i++)
        s[i] = (slot){ .gen = 1 };
    p->slots = s;
    p->slots_cap = cap;
    return 0;
}

/* An SQE, submitting the full SQ first if need be. NULL only if the
 * kernel takes none of it (then the caller keeps its work for later). */
static struct io_uring_sqe *get_sqe(iol__poller *p)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&p->ring);
    if (!sqe && io_uring_submit(&p->ring) >= 0)
        sqe = io_uring_get_sqe(&p->ring);
    return sqe;
}

/* Queues fd for arming at the next wait. */
static int queue_arm(iol__poller *p, int fd)
{
    slot *s = &p->slots[fd];
    if (s->flags & QUEUED)
        return 0;
    if (p->arm_len == p->arm_cap) {
        int cap = p->arm_cap ? p->arm_cap * 2 : 64;
        int *a = realloc(p->arm, (size_t)cap * sizeof *a);
        if (!a)
            return -ENOMEM;
        p->arm = a;
        p->arm_cap = cap;
    }
    p->arm[p->arm_len++] = fd;
    s->flags |= QUEUED;
    return 0;
}

/* Takes fd's poll out of the kernel (if it is there) and makes any CQE
 * it posted stale. -ENOMEM/-EBUSY only if no SQE could be had: the
 * generation still moves on, so nothing stale is ever reported, but the
 * file stays referenced until the poll fires or the ring closes. */
static int disarm(iol__poller *p, int fd)
{
    slot *s = &p->slots[fd];
    uint64_t old = tag(fd, s->gen);
    next_gen(s);
    if (!(s->flags & ARMED))
        return 0;
    s->flags &= (uint8_t)~ARMED;
    struct io_uring_sqe *sqe = get_sqe(p);
    if (!sqe)
        return -EBUSY;
    io_uring_prep_poll_remove(sqe, old);
    io_uring_sqe_set_data64(sqe, 0);
    return 0;
}

static unsigned to_poll(unsigned events)
{
    return ((events & IOL_READ) ? POLLIN : 0) | ((events & IOL_WRITE) ? POLLOUT : 0);
}

static int uring_add(iol__poller *p, int fd, unsigned events)
{
    if (fd < 0)
        return -EBADF;
    if (is_added(p, fd))
        return -EEXIST;
    int err = reserve_fd(p, fd);
    if (err)
        return err;
    slot *s = &p->slots[fd];
    if ((err = queue_arm(p, fd)) < 0)
        return err;
    next_gen(s);
    s->flags |= ADDED;
    s->want = (uint8_t)(events & (IOL_READ | IOL_WRITE));
    return 0;
}

static int uring_modify(iol__poller *p, int fd, unsigned events)
{
    if (!is_added(p, fd))
        return -ENOENT;
    slot *s = &p->slots[fd];
    uint8_t want = (uint8_t)(events & (IOL_READ | IOL_WRITE));
    if (want == s->want)
        return 0;
    int err = queue_arm(p, fd);
    if (err)
        return err;
    s->want = want;
    disarm(p, fd); /* on failure the old poll's CQE is stale: we still re-arm */
    return 0;
}

static int uring_remove(iol__poller *p, int fd)
{
    if (!is_added(p, fd))
        return -ENOENT;
    disarm(p, fd);
    p->slots[fd].flags &= (uint8_t)~ADDED; /* QUEUED stays until the arm list is walked */
    return 0;
}

/* Arms every queued fd that is added and has no poll in flight. Returns
 * false if the SQ could not take them all (the rest stay queued). */
static bool arm_queued(iol__poller *p)
{
    int i = 0;
    for (; i < p->arm_len; i++) {
        int fd = p->arm[i];
        slot *s = &p->slots[fd];
        if ((s->flags & (ADDED | ARMED)) == ADDED) {
            struct io_uring_sqe *sqe = get_sqe(p);
            if (!sqe)
                break;
            io_uring_prep_poll_add(sqe, fd, to_poll(s->want));
            io_uring_sqe_set_data64(sqe, tag(fd, s->gen));
            s->flags |= ARMED;
        }
        s->flags &= (uint8_t)~QUEUED;
    }
    if (i == p->arm_len) {
        p->arm_len = 0;
        return true;
    }
    for (int j = i; j < p->arm_len; j++)
        p->arm[j - i] = p->arm[j];
    p->arm_len -= i;
    return false;
}

static unsigned from_poll(int res, unsigned want)
{
    if (res < 0) /* -EBADF: closed without remove, as poll's POLLNVAL */
        return IOL_ERROR;
    unsigned got = 0;
    if (res & POLLIN)
        got |= IOL_READ;
    if (res & POLLOUT)
        got |= IOL_WRITE;
    if (res & (POLLERR | POLLHUP | POLLNVAL))
        got |= IOL_ERROR;
    /* After a hangup a reader must still see EOF (as Tornado does). */
    if (res & POLLHUP)
        got |= IOL_READ;
    return got & (want | IOL_ERROR);
}

static void provide_buffers(iol__poller *p);

static iol__poller_event completion(iol__poller *p, uint64_t data, int res, unsigned cflags)
{
    iol__poller_event ev = { .fd = IOL__POLLER_COMPLETION, .done = { .tag = data & ~(uint64_t)1, .res = res } };
    if (cflags & IORING_CQE_F_MORE)
        ev.done.flags |= IOL__DONE_MORE;
    else
        p->ops_inflight--;
    if (cflags & IORING_CQE_F_SOCK_NONEMPTY)
        ev.done.flags |= IOL__DONE_NONEMPTY;
    if (cflags & IORING_CQE_F_BUFFER) {
        ev.done.flags |= IOL__DONE_BUFFER;
        ev.done.bid = cflags >> IORING_CQE_BUFFER_SHIFT;
        if (res > 0 && ev.done.bid < p->buf_count)
            VALGRIND_MAKE_MEM_DEFINED(p->buffers + (size_t)ev.done.bid * p->buf_size, (size_t)res);
    }
    if (res == -ENOBUFS && p->br && p->buf_provided < p->buf_count)
        provide_buffers(p);
    return ev;
}

/* Turns up to max CQEs into events. */
static int reap(iol__poller *p, iol__poller_event *out, int max)
{
    int count = 0;
    bool flushed = false;
    while (count < max) {
        struct io_uring_cqe *cqe;
        if (io_uring_peek_cqe(&p->ring, &cqe) < 0 || !cqe) {
            /* peek flushes an overflow only when it can find nothing, and
             * runs no task work (COOP_TASKRUN): enter once per wait when
             * the kernel says either waits. */
            unsigned kflags = IO_URING_READ_ONCE(*p->ring.sq.kflags);
            if (flushed || !(kflags & (IORING_SQ_CQ_OVERFLOW | IORING_SQ_TASKRUN)))
                break;
            io_uring_get_events(&p->ring);
            flushed = true;
            continue;
        }
        uint64_t data = io_uring_cqe_get_data64(cqe);
        int res = cqe->res;
        unsigned cflags = cqe->flags;
        io_uring_cqe_seen(&p->ring, cqe);
        if (data & 1) {
            out[count++] = completion(p, data, res, cflags);
            continue;
        }
        if (data == MSG_DATA) {
            out[count++] = (iol__poller_event){ .fd = IOL__POLLER_WAKE };
            continue;
        }
        if (data == MSG_SENT) {
            out[count++] = (iol__poller_event){ .fd = IOL__POLLER_MSG_FAILED };
            continue;
        }
        int fd = (int)((uint32_t)data >> 1);
        uint32_t gen = (uint32_t)(data >> 32);
        if (gen == 0 || fd < 0 || fd >= p->slots_cap)
            continue;
        slot *s = &p->slots[fd];
        if (s->gen != gen || !(s->flags & ARMED))
            continue; /* stale: removed, modified or re-added since */
        s->flags &= (uint8_t)~ARMED;
        if (!(s->flags & ADDED))
            continue;
        if (queue_arm(p, fd) < 0) {
            /* Without memory for the arm list: re-arm at once. */
            struct io_uring_sqe *sqe = get_sqe(p);
            if (sqe) {
                io_uring_prep_poll_add(sqe, fd, to_poll(s->want));
                io_uring_sqe_set_data64(sqe, tag(fd, s->gen));
                s->flags |= ARMED;
            }
        }
        if (res == -ECANCELED)
            continue; /* the submitting thread exited: re-armed, nothing to say */
        unsigned got = from_poll(res, s->want);
        if (got)
            out[count++] = (iol__poller_event){ .fd = fd, .events = got };
    }
    return count;
}

static int uring_wait_events(iol__poller *p, iol__poller_event *out, int max, int timeout_ms)
{
    if (max <= 0)
        return -EINVAL;
    /* Arms that did not fit (the kernel refused SQEs) must not wait on a
     * sleep: poll without blocking, and try again next time. */
    if (!arm_queued(p))
        timeout_ms = 0;
    int err;
    if (timeout_ms == 0 || io_uring_cq_ready(&p->ring) > 0) {
        err = io_uring_submit(&p->ring); /* no system call if nothing is queued */
    } else {
        struct io_uring_cqe *cqe;
        struct __kernel_timespec ts = { .tv_sec = timeout_ms / 1000, .tv_nsec = (long long)(timeout_ms % 1000) * 1000000 };
        /* One io_uring_enter: submit, then wait for a CQE or the timeout. */
        err = io_uring_submit_and_wait_timeout(&p->ring, &cqe, 1, timeout_ms < 0 ? NULL : &ts, NULL);
    }
    /* -ETIME: timed out. -EINTR: a signal; the caller looks at its state.
     * -EBUSY/-EAGAIN: the kernel wants CQEs reaped before it takes more. */
    if (err < 0 && err != -ETIME && err != -EINTR && err != -EBUSY && err != -EAGAIN)
        return err;
    return reap(p, out, max);
}

static unsigned uring_op_features(iol__poller *p)
{
    return p->features;
}

static int uring_op_submit(iol__poller *p, const iol__poller_op *op)
{
    if (!(p->features & IOL__OPS_COMPLETIONS))
        return -ENOTSUP;
    if (op->tag & 1)
        return -EINVAL;
    bool multishot = op->multishot;
    switch (op->code) {
    case IOL__OP_RECV:
        if (!op->buf && !p->br)
            return -ENOTSUP;
        if (multishot && (op->buf || !(p->features & IOL__OPS_MULTISHOT_RECV)))
            return -ENOTSUP;
        break;
    case IOL__OP_RECVMSG:
        if (!multishot || !op->buf)
            return -EINVAL;
        if (!p->br || !(p->features & IOL__OPS_MULTISHOT_RECV))
            return -ENOTSUP;
        break;
    case IOL__OP_ACCEPT:
        if (multishot && !(p->features & IOL__OPS_MULTISHOT_ACCEPT))
            return -ENOTSUP;
        if (multishot && (op->buf || op->addrlen)) /* its CQEs would share one address */
            return -EINVAL;
        break;
    case IOL__OP_SEND:
    case IOL__OP_CLOSE:
    case IOL__OP_CANCEL:
    case IOL__OP_CANCEL_ALL:
        if (multishot)
            return -EINVAL;
        break;
    default:
        return -EINVAL;
    }
    if (op->code != IOL__OP_CANCEL && op->code != IOL__OP_CANCEL_ALL && op->fd < 0)
        return -EBADF;
    struct io_uring_sqe *sqe = get_sqe(p);
    if (!sqe)
        return -EBUSY;
    uint64_t data = op->tag | 1;
    switch (op->code) {
    case IOL__OP_RECV:
        if (multishot) {
            io_uring_prep_recv_multishot(sqe, op->fd, NULL, 0, 0);
        } else {
            io_uring_prep_recv(sqe, op->fd, op->buf, op->len, 0);
        }
        /* The socket was drained just before: trying at once would fail
         * and arm a poll anyway (5.19, as the OP_SOCKET probe). */
        if (op->poll_first && (p->features & IOL__OPS_MULTISHOT_ACCEPT))
            sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
        if (!op->buf) {
            sqe->flags |= IOSQE_BUFFER_SELECT;
            sqe->buf_group = 0;
        }
        break;
    case IOL__OP_RECVMSG:
        io_uring_prep_recvmsg_multishot(sqe, op->fd, op->buf, 0);
        sqe->flags |= IOSQE_BUFFER_SELECT;
        sqe->buf_group = 0;
        break;
    case IOL__OP_SEND:
        io_uring_prep_send(sqe, op->fd, op->buf, op->len, MSG_NOSIGNAL);
        break;
    case IOL__OP_ACCEPT:
        if (multishot)
            io_uring_prep_multishot_accept(sqe, op->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        else
            io_uring_prep_accept(sqe, op->fd, op->buf, op->addrlen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        break;
    case IOL__OP_CLOSE:
        io_uring_prep_close(sqe, op->fd);
        break;
    case IOL__OP_CANCEL:
        /* Without CANCEL_ALL (before 5.19) one match goes per cancel. */
        io_uring_prep_cancel64(sqe, data, (p->features & IOL__OPS_BUFFER_RING) ? IORING_ASYNC_CANCEL_ALL : 0);
        io_uring_sqe_set_data64(sqe, 0);
        return 0;
    case IOL__OP_CANCEL_ALL:
        io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY | IORING_ASYNC_CANCEL_ALL);
        io_uring_sqe_set_data64(sqe, 0);
        return 0;
    }
    io_uring_sqe_set_data64(sqe, data);
    p->ops_inflight++;
    return 0;
}

static int uring_msg_fd(iol__poller *p)
{
    if (!(p->features & IOL__OPS_MSG_RING))
        return -ENOTSUP;
    int fd = fcntl(p->ring.ring_fd, F_DUPFD_CLOEXEC, 0);
    return fd < 0 ? -errno : fd;
}

static int uring_msg_send(iol__poller *p, int fd)
{
    if (!(p->features & IOL__OPS_MSG_RING))
        return -ENOTSUP;
    struct io_uring_sqe *sqe = get_sqe(p);
    if (!sqe)
        return -EBUSY;
    io_uring_prep_msg_ring(sqe, fd, 0, MSG_DATA, 0);
    io_uring_sqe_set_data64(sqe, MSG_SENT);
    io_uring_sqe_set_flags(sqe, IOSQE_CQE_SKIP_SUCCESS);
    return 0;
}

static unsigned uring_submit(iol__poller *p)
{
    if (io_uring_sq_ready(&p->ring) == 0)
        return 0;
    io_uring_submit(&p->ring);
    return io_uring_sq_ready(&p->ring);
}

/* Gives the ring BUF_STEP more of its buffers, while it has any left. */
static void provide_buffers(iol__poller *p)
{
    unsigned n = p->buf_count - p->buf_provided < BUF_STEP ? p->buf_count - p->buf_provided : BUF_STEP;
    for (unsigned i = 0; i < n; i++) {
        unsigned bid = p->buf_provided + i;
        io_uring_buf_ring_add(p->br, p->buffers + (size_t)bid * p->buf_size, p->buf_size, (unsigned short)bid,
                              io_uring_buf_ring_mask(p->buf_count), (int)i);
    }
    io_uring_buf_ring_advance(p->br, (int)n);
    p->buf_provided += n;
}

static int uring_op_buffers(iol__poller *p, unsigned count, unsigned size)
{
    if (!(p->features & IOL__OPS_BUFFER_RING))
        return -ENOTSUP;
    if (p->br)
        return -EEXIST;
    if (count == 0 || count > 32768 || (count & (count - 1)) || size == 0)
        return -EINVAL;
    long page = sysconf(_SC_PAGESIZE);
    void *ring = NULL;
    if (posix_memalign(&ring, page > 0 ? (size_t)page : 4096, count * sizeof(struct io_uring_buf)) != 0)
        return -ENOMEM;
    /* malloc maps a block this large on its own: pages untouched by the
     * kernel cost no memory, so a quiet loop pays little for it. */
    char *buffers = malloc((size_t)count * size);
    if (!buffers) {
        free(ring);
        return -ENOMEM;
    }
    struct io_uring_buf_reg reg = { .ring_addr = (uintptr_t)ring, .ring_entries = count, .bgid = 0 };
    int err = io_uring_register_buf_ring(&p->ring, &reg, 0);
    if (err < 0) {
        free(buffers);
        free(ring);
        return err == -EINVAL ? -ENOTSUP : err;
    }
    p->br = ring;
    p->buffers = buffers;
    p->buf_count = count;
    p->buf_size = size;
    io_uring_buf_ring_init(p->br);
    provide_buffers(p);
    return 0;
}

static void *uring_buffer(iol__poller *p, unsigned bid)
{
    return bid < p->buf_count ? p->buffers + (size_t)bid * p->buf_size : NULL;
}

static void uring_buffer_recycle(iol__poller *p, unsigned bid)
{
    if (bid >= p->buf_count)
        return;
    io_uring_buf_ring_add(p->br, uring_buffer(p, bid), p->buf_size, (unsigned short)bid,
                          io_uring_buf_ring_mask(p->buf_count), 0);
    io_uring_buf_ring_advance(p->br, 1);
}

/* Cancels every operation still in flight and reaps until the last has
 * ended, so the kernel writes into no buffer after close frees it. The
 * loop normally drained them already; this covers a poller closed with
 * operations in flight. Bounded: an operation that will not end is left
 * to the ring's teardown (and its buffers leak rather than be reused). */
static bool drain_ops(iol__poller *p)
{
    if (p->ops_inflight == 0)
        return true;
    uring_op_submit(p, &(iol__poller_op){ .code = IOL__OP_CANCEL_ALL, .fd = -1 });
    for (int tries = 0; tries < 50 && p->ops_inflight > 0; tries++) {
        struct io_uring_cqe *cqe;
        struct __kernel_timespec ts = { .tv_nsec = 100 * 1000000 };
        io_uring_submit_and_wait_timeout(&p->ring, &cqe, 1, &ts, NULL);
        while (io_uring_peek_cqe(&p->ring, &cqe) == 0 && cqe) {
            if ((cqe->user_data & 1) && !(cqe->flags & IORING_CQE_F_MORE))
                p->ops_inflight--;
            io_uring_cqe_seen(&p->ring, cqe);
        }
        if (io_uring_cq_has_overflow(&p->ring))
            io_uring_get_events(&p->ring);
    }
    return p->ops_inflight == 0;
}

static void uring_close_poller(iol__poller *p)
{
    if (!p)
        return;
    bool drained = drain_ops(p);
    /* Cancel every poll still in flight (fds closed without remove too)
     * and hand the POLL_REMOVEs over: their files are released now, not
     * whenever the ring's asynchronous teardown gets to them. */
    for (int fd = 0; fd < p->slots_cap; fd++)
        if (p->slots[fd].flags & ARMED)
            disarm(p, fd);
    io_uring_submit(&p->ring);
    io_uring_queue_exit(&p->ring);
    if (drained) {
        free(p->buffers);
        free(p->br);
    }
    free(p->slots);
    free(p->arm);
    free(p);
}

const iol__poller_ops iol__poller_uring = {
    .name = "uring",
    .create = uring_create_poller,
    .add = uring_add,
    .modify = uring_modify,
    .remove = uring_remove,
    .wait = uring_wait_events,
    .close = uring_close_poller,
    .add_checks_fd = false, /* a POLL_ADD on a closed fd fails only when submitted */
    .op_features = uring_op_features,
    .op_submit = uring_op_submit,
    .op_buffers = uring_op_buffers,
    .buffer = uring_buffer,
    .buffer_recycle = uring_buffer_recycle,
    .msg_fd = uring_msg_fd,
    .msg_send = uring_msg_send,
    .submit = uring_submit,
};
