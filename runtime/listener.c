/* runtime/ — listening sockets shared by the workers.
 *
 * REUSEPORT: one SO_REUSEPORT socket per worker, each registered on its
 * worker's loop; the kernel spreads connections.
 *
 * HANDOFF: one socket, watched by the acceptor, a thread of the runtime's
 * own with a loop of its own (runtime.c, acceptor_main). It accepts and
 * hands each fd to a worker through that worker's callback queue (see
 * pick_worker: under the connection cap, not a stalled worker, then the
 * fewest connections). Why a
 * thread and not worker 0, as before: a long callback on the coordinating
 * worker stalled every accept; now a busy worker only stops receiving
 * (its oldest handoff ages), the others keep being served. The cost: the
 * connections of worker 0 are handed off too (one queue hop), where the
 * coordinator kept its own. The acceptor mostly sleeps in its poll,
 * so it costs the pinned workers little CPU; it is created with the
 * first HANDOFF listener and takes part in the stop sequence as one more
 * thread: final accepts before the same barrier as the workers'.
 *
 * Out of fds (EMFILE/ENFILE): each socket keeps a reserve fd (/dev/null).
 * On EMFILE it closes the reserve, accepts and closes what is queued (the
 * clients see a close at once instead of hanging: libuv's trick), reopens
 * the reserve, removes its handler and retries after a back-off of
 * 100 ms doubling to 500 ms (nginx pauses 500 ms). One warning per
 * episode; the episode ends with the next successful accept. Level-
 * triggered polling never spins because the handler is gone while paused.
 *
 * RING ACCEPTS. On a loop with a completion path (the uring poller), a
 * socket without admission limits is watched by RING_ACCEPTS single-shot
 * accept operations instead of a handler, each with its own buffer for
 * the peer's address and re-armed as it completes: a connection then
 * costs no accept4 and no readiness event, only a completion. Single-shot
 * rather than multishot because on_accept gets the peer's address, which
 * a multishot accept cannot give (its completions share one buffer), and
 * a getpeername per connection would cost the system call saved. The
 * kernel wakes one waiting accept per connection (an exclusive wait),
 * and several in flight take a burst without one loop turn each. With
 * max_connections or max_accept_rate the handler path stays: there each
 * accept is decided before it happens, and a ring accept has happened by
 * the time we hear of it. Stopping cancels the operations and waits for
 * their results (ring_settle): a connection one of them took is handed
 * on like any other, never reset.
 *
 * Every lsock field is touched only by its worker's thread once the
 * runtime runs (before start: by the one thread calling listen, under
 * rt->mu, which start also takes).
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "loop/completion.h"
#include "loop/log.h"
#include "loop/post.h"
#include "runtime/admission.h"
#include "runtime/runtime_impl.h"

#define ACCEPT_BATCH 64
/* Out of fds, accepting pauses for a short, fixed-ish back-off: each retry
 * costs a few syscalls (≈ nothing at 20 per second), and a short pause
 * means serving resumes within ~50 ms of fds coming back. nginx pauses
 * 500 ms; the contract allows at most that. */
#define BACKOFF_MIN 0.025
#define BACKOFF_MAX 0.05

/* Ring accepts armed per socket: a few cover a burst between two loop
 * turns; each holds a peer address (about 150 bytes). */
#define RING_ACCEPTS 4

struct iol__lsock;
/* One ring accept: the completion first (its address is the op's tag,
 * aligned to 8), then where the kernel writes the peer. */
typedef struct accept_slot {
    iol__completion op;
    struct iol__lsock *s;
    socklen_t peerlen;
    struct sockaddr_storage peer;
} accept_slot;

typedef struct iol__lsock {
    struct iol__listener *l;
    unsigned worker; /* the worker whose loop watches it */
    int fd;          /* -1 once closed */
    int reserve_fd;  /* /dev/null, given up on EMFILE; -1 if not held */
    bool registered; /* a handler is on the worker's loop */
    bool ring_on;    /* watched by ring accepts (re-armed as they end) */
    bool discard;    /* the runtime is freed unstarted: close what they take */
    bool shed_owed;  /* out of fds: shed once the ring accepts have ended */
    accept_slot *ring; /* RING_ACCEPTS slots once the ring path was taken */
    /* Connections taken by ring accepts; relaxed: a statistic for tests
     * and benchmarks, written by the socket's thread. */
    _Atomic uint64_t ring_accepted;
    bool episode;    /* inside an out-of-fds episode (warned once) */
    double backoff;
    iol_timeout resume_timer; /* 0: none */
    iol__admission adm;       /* max_connections, max_accept_rate */
    /* Holds for the cap and for the rate, and whether one lasts now;
     * relaxed: statistics written by the socket's thread, read by anyone. */
    _Atomic uint64_t holds_conns, holds_rate;
    _Atomic bool held;
} iol__lsock;

typedef struct iol__count {
    /* relaxed: a statistic; incremented by its worker, read by anyone. */
    _Alignas(IOL__CACHE_LINE) _Atomic uint64_t v;
} iol__count;

typedef struct iol__listener {
    iol_runtime *rt;
    int id;
    int shard;
    iol_accept_fn on_accept;
    void *arg;
    uint16_t port;
    unsigned nsocks;
    iol__lsock *socks;
    iol__count *counts; /* one per worker */
    unsigned rr;        /* HANDOFF round-robin start; acceptor only */
    char *path;         /* a Unix socket path listener; NULL for TCP */
    dev_t path_dev;     /* the socket file we made, removed at stop only */
    ino_t path_ino;     /* if it is still that file */
} iol__listener;

typedef struct handoff_item {
    iol__listener *l;
    unsigned worker;
    int fd;
    socklen_t peerlen;
    struct sockaddr_storage peer;
} handoff_item;

static void lsock_ready(int fd, unsigned events, void *arg);

/* ----------------------------------------------------------- delivering */

static void deliver(iol__listener *l, unsigned worker, int fd, const struct sockaddr *peer, socklen_t peerlen)
{
    atomic_fetch_add_explicit(&l->counts[worker].v, 1, memory_order_relaxed);
    l->on_accept(l->rt->workers[worker].loop, fd, peer, peerlen, l->arg);
}

static void handoff_cb(void *arg)
{
    handoff_item *it = arg;
    iol__rt_worker *w = &it->l->rt->workers[it->worker];
    /* relaxed: the acceptor's "has it come to its queue" snapshot. */
    atomic_fetch_add_explicit(&w->taken, 1, memory_order_relaxed);
    deliver(it->l, it->worker, it->fd, (const struct sockaddr *)&it->peer, it->peerlen);
    /* relaxed, after on_accept: its handler is already counted when the
     * pending count drops, so the acceptor never sees a dip. */
    atomic_fetch_sub_explicit(&w->pending, 1, memory_order_relaxed);
    free(it);
}

/* A worker's load: registered handlers minus the runtime's own, plus
 * handoffs on their way. The three are read separately (relaxed: a
 * snapshot for balancing, ordering nothing), so the sum can be off by one
 * for an instant (a listener unwatched between the two handler reads
 * gives -1); clamped so a torn read cannot look like "less than nothing".
 * pending first: handoff_cb adds the handler before it drops pending, so
 * this order over-counts a delivery in progress rather than missing it. */
static long worker_load(iol__rt_worker *w)
{
    long pending = atomic_load_explicit(&w->pending, memory_order_relaxed);
    long load = (long)iol_loop_handler_count(w->loop) -
                atomic_load_explicit(&w->own_handlers, memory_order_relaxed) + pending;
    return load < 0 ? 0 : load;
}

/* A worker whose oldest handoff has waited this long for it to come to
 * its queue is stalled (a long callback): it gets no more connections
 * while another worker is not. Well above a loop iteration under load,
 * well below what a client notices. */
#define STALL_SECONDS 0.010

/* Whether w has handoffs it has not begun (backlog > 0) and has made no
 * progress on them for STALL_SECONDS. Acceptor only. */
static bool stalled(iol__rt_worker *w, double now, unsigned long *backlog)
{
    /* relaxed: a snapshot, as in worker_load. */
    unsigned long taken = atomic_load_explicit(&w->taken, memory_order_relaxed);
    *backlog = w->handed - taken;
    if (taken != w->seen_taken) {
        w->seen_taken = taken;
        w->progress_at = now;
    }
    return *backlog > 0 && now - w->progress_at > STALL_SECONDS;
}

/* The worker to hand the next connection to: one under the listener's
 * connection cap if any is (admission control made sure one is); then
 * not a stalled one if any is not; then the fewest connections; then the
 * shorter backlog (a worker that has come to its queue before one that
 * has not); then the first from rr on. Acceptor only. */
static unsigned pick_worker(iol__listener *l)
{
    iol_runtime *rt = l->rt;
    double now = iol_loop_time(rt->acceptor_loop);
    const iol__admission *adm = &l->socks[0].adm;
    unsigned best = l->rr % rt->n;
    long best_load = 0;
    unsigned long best_backlog = 0;
    bool have_best = false, best_stalled = false, best_full = false;
    for (unsigned k = 0; k < rt->n; k++) {
        unsigned i = (l->rr + k) % rt->n;
        iol__rt_worker *w = &rt->workers[i];
        unsigned long backlog;
        bool st = stalled(w, now, &backlog);
        long load = worker_load(w);
        bool full = !iol__admission_room(adm, load);
        bool better;
        if (!have_best)
            better = true;
        else if (full != best_full)
            better = !full;
        else if (st != best_stalled)
            better = !st;
        else
            better = load < best_load || (load == best_load && backlog < best_backlog);
        if (better) {
            best = i;
            best_load = load;
            best_backlog = backlog;
            best_stalled = st;
            best_full = full;
            have_best = true;
        }
    }
    l->rr = best + 1;
    return best;
}

static void dispatch(iol__lsock *s, int fd, const struct sockaddr *peer, socklen_t peerlen)
{
    iol__listener *l = s->l;
    if (l->shard == IOL_SHARD_REUSEPORT) {
        deliver(l, s->worker, fd, peer, peerlen);
        return;
    }
    unsigned target = pick_worker(l);
    handoff_item *it = malloc(sizeof(*it));
    if (!it) {
        iol__log(IOL_LOG_ERROR, "listener %d: out of memory, dropping a connection", l->id);
        close(fd);
        return;
    }
    it->l = l;
    it->worker = target;
    it->fd = fd;
    it->peerlen = peerlen <= sizeof(it->peer) ? peerlen : sizeof(it->peer);
    memcpy(&it->peer, peer, it->peerlen);
    iol__rt_worker *w = &l->rt->workers[target];
    atomic_fetch_add_explicit(&w->pending, 1, memory_order_relaxed);
    /* Its backlog was empty: the wait for progress starts now. */
    if (w->handed == w->seen_taken)
        w->progress_at = iol_loop_time(l->rt->acceptor_loop);
    w->handed++;
    /* Straight to the loop, not iol_runtime_post: handoffs made before
     * the final-accept barrier must go through even after stop (see
     * worker_shutdown in runtime.c). */
    int r = iol__loop_post(w->loop, handoff_cb, it);
    if (r < 0) {
        atomic_fetch_sub_explicit(&w->pending, 1, memory_order_relaxed);
        w->handed--;
        iol__log(IOL_LOG_ERROR, "listener %d: handoff to worker %u failed: %s", l->id, target, strerror(-r));
        close(fd);
        free(it);
    }
}

/* accept's errors after which the next accept may well succeed: a
 * connection gone before we took it, a signal, a firewall rule's refusal
 * (EPERM: the next connection may pass). */
static bool accept_retryable(int err)
{
    return err == EINTR || err == ECONNABORTED || err == EPROTO || err == EPERM;
}

/* A connection accepted, by accept4 or by the ring: an out-of-fds
 * episode is over, and it is handed on. */
static void lsock_took(iol__lsock *s, int fd, const struct sockaddr *peer, socklen_t peerlen)
{
    if (s->episode) {
        s->episode = false;
        s->backoff = 0;
        iol__log(IOL_LOG_INFO, "listener %d (port %u): accepting again", s->l->id, (unsigned)s->l->port);
    }
    iol__admission_took(&s->adm);
    dispatch(s, fd, peer, peerlen);
}

/* ------------------------------------------------------------ watching */

static bool on_acceptor(const iol__lsock *s)
{
    return s->worker == IOL__ACCEPTOR(s->l->rt);
}

static iol_loop *lsock_loop(const iol__lsock *s)
{
    iol_runtime *rt = s->l->rt;
    return on_acceptor(s) ? rt->acceptor_loop : rt->workers[s->worker].loop;
}

/* ---------------------------------------------------------- ring accepts */

static void lsock_pause(iol__lsock *s, int err);
static int handler_watch(iol__lsock *s);
static void lsock_shed(iol__lsock *s);

static bool ring_inflight(const iol__lsock *s)
{
    for (unsigned i = 0; s->ring && i < RING_ACCEPTS; i++)
        if (s->ring[i].op.inflight)
            return true;
    return false;
}

static int ring_arm(iol__lsock *s, accept_slot *slot)
{
    slot->peerlen = sizeof(slot->peer);
    return iol__loop_accept_peer(lsock_loop(s), &slot->op, 0, s->fd, (struct sockaddr *)&slot->peer,
                                 &slot->peerlen);
}

static void ring_result(iol__lsock *s, accept_slot *slot, int res)
{
    if (res >= 0) {
        /* relaxed: see ring_accepted. */
        atomic_fetch_add_explicit(&s->ring_accepted, 1, memory_order_relaxed);
        if (s->fd < 0 || s->discard) {
            close(res); /* a runtime freed without running: as its close of the socket would */
            return;
        }
        lsock_took(s, res, (const struct sockaddr *)&slot->peer, slot->peerlen);
    } else if (res != -ECANCELED /* unwatched */ && res != -EAGAIN && !accept_retryable(-res)) {
        if (s->ring_on) /* out of fds or memory: as on the handler path */
            lsock_pause(s, -res);
        return;
    }
    if (s->ring_on && s->fd >= 0 && slot->op.inflight == 0 && ring_arm(s, slot) < 0 && !ring_inflight(s)) {
        /* The ring takes no more (its CQ overflowing): the handler path
         * takes over until the next unwatch. */
        s->ring_on = false;
        if (handler_watch(s) < 0)
            lsock_pause(s, ENOMEM); /* retried by the resume timer */
    }
}

/* A ring accept's result: a connection is handed on as accept4's would
 * be, then the slot is re-armed while the socket is watched. */
static void ring_done(iol__completion *c, const iol__completion_result *r)
{
    accept_slot *slot = (accept_slot *)c;
    iol__lsock *s = slot->s;
    ring_result(s, slot, r->res);
    if (s->shed_owed && !s->ring_on && !ring_inflight(s)) {
        s->shed_owed = false;
        if (s->fd >= 0)
            lsock_shed(s);
    }
}

/* Watches s by ring accepts. 0, or -errno and nothing armed (the caller
 * takes the handler path): -ENOTSUP no completion path, or limits set. */
static int ring_watch(iol__lsock *s)
{
    if (s->adm.max_conns != 0 || s->adm.rate != 0)
        return -ENOTSUP;
    int err = iol__loop_completion_features(lsock_loop(s));
    if (err < 0)
        return err;
    if (!s->ring) {
        s->ring = calloc(RING_ACCEPTS, sizeof(*s->ring));
        if (!s->ring)
            return -ENOMEM;
        for (unsigned i = 0; i < RING_ACCEPTS; i++) {
            s->ring[i].op.fn = ring_done;
            s->ring[i].s = s;
        }
    }
    unsigned armed = 0;
    for (unsigned i = 0; i < RING_ACCEPTS; i++) {
        /* One still ending after an unwatch is re-armed by its result. */
        if (s->ring[i].op.inflight || (err = ring_arm(s, &s->ring[i])) == 0)
            armed++;
        else
            break;
    }
    if (armed == 0)
        return err;
    s->ring_on = true;
    return 0;
}

static void ring_unwatch(iol__lsock *s)
{
    if (!s->ring_on)
        return;
    s->ring_on = false;
    for (unsigned i = 0; i < RING_ACCEPTS; i++)
        (void)iol__loop_cancel(lsock_loop(s), &s->ring[i].op, 0);
}

/* Ends the ring accepts and waits for their last results, so that no
 * result comes after the socket closes and a connection one of them took
 * is handed on (or, with discard, closed) first. Owner thread, the loop
 * not running: turns of it (run_once) deliver the results, and what else
 * is due runs in them, as in the drain that follows. A cancelled accept
 * ends within a turn; the bound is for a kernel that does not. */
#define SETTLE_TURNS 100
static void ring_settle(iol__lsock *s)
{
    s->shed_owed = false; /* stopping: hand on, never shed */
    ring_unwatch(s);
    iol_loop *loop = lsock_loop(s);
    for (int turn = 0; turn < SETTLE_TURNS && ring_inflight(s); turn++)
        if (iol_loop_run_once(loop, 0.01) < 0)
            break;
}

/* Ends ring accepts still armed on a loop that will not run them to the
 * end (a listen that failed before start, a runtime freed unstarted),
 * closing what they took, before their slots are freed. A closed loop
 * has delivered every result already. */
static void ring_discard(iol__lsock *s)
{
    if (!ring_inflight(s) || iol__loop_completion_features(lsock_loop(s)) == -ESHUTDOWN)
        return;
    s->discard = true;
    ring_settle(s);
}

static int lsock_watch(iol__lsock *s)
{
    if (ring_watch(s) == 0)
        return 0;
    return handler_watch(s);
}

static int handler_watch(iol__lsock *s)
{
    int r = iol_loop_add_handler(lsock_loop(s), s->fd, IOL_READ, lsock_ready, s);
    if (r < 0)
        return r;
    s->registered = true;
    /* relaxed: see own_handlers in runtime_impl.h. */
    if (!on_acceptor(s))
        atomic_fetch_add_explicit(&s->l->rt->workers[s->worker].own_handlers, 1, memory_order_relaxed);
    return 0;
}

static void lsock_unwatch(iol__lsock *s)
{
    ring_unwatch(s);
    if (!s->registered)
        return;
    iol_loop_remove_handler(lsock_loop(s), s->fd);
    s->registered = false;
    if (!on_acceptor(s))
        atomic_fetch_sub_explicit(&s->l->rt->workers[s->worker].own_handlers, 1, memory_order_relaxed);
}

static void lsock_resume(void *arg)
{
    iol__lsock *s = arg;
    s->resume_timer = 0;
    atomic_store_explicit(&s->held, false, memory_order_relaxed); /* relaxed: see holds_conns */
    s->shed_owed = false; /* not done by now: accepting again is what it was for */
    if (s->fd < 0)
        return;
    if (s->reserve_fd < 0)
        s->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    int r = lsock_watch(s);
    if (r < 0)
        iol__log(IOL_LOG_ERROR, "listener %d: cannot resume accepting: %s", s->l->id, strerror(-r));
}

/* Accepts and closes what is queued, using the reserve fd's slot. */
static void lsock_shed(iol__lsock *s)
{
    if (s->reserve_fd < 0)
        return;
    close(s->reserve_fd);
    s->reserve_fd = -1;
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        int c = accept4(s->fd, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            break;
        }
        close(c);
    }
    s->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

/* Out of fds or memory (or an unexpected error): shed, pause, retry
 * later. Never spins: the handler is removed until the timer fires. */
static void lsock_pause(iol__lsock *s, int err)
{
    if (!s->episode) {
        s->episode = true;
        iol__log(IOL_LOG_WARNING, "listener %d (port %u): accept: %s; shedding connections and pausing accepts",
                 s->l->id, (unsigned)s->l->port, strerror(err));
    }
    lsock_unwatch(s);
    if (err == EMFILE || err == ENFILE) {
        /* Ring accepts still armed would take the reserve's slot the
         * moment it is closed (their accept runs as task work when any
         * system call returns): shed once their cancels have ended. */
        if (ring_inflight(s))
            s->shed_owed = true;
        else
            lsock_shed(s);
    }
    if (s->backoff < BACKOFF_MIN)
        s->backoff = BACKOFF_MIN;
    int r = iol_loop_call_later(lsock_loop(s), s->backoff, lsock_resume, s, &s->resume_timer);
    if (r < 0) {
        iol__log(IOL_LOG_ERROR, "listener %d: cannot schedule resume: %s", s->l->id, strerror(-r));
        s->resume_timer = 0;
    }
    s->backoff *= 2;
    if (s->backoff > BACKOFF_MAX)
        s->backoff = BACKOFF_MAX;
}

/* The load admission control looks at: the socket's own worker's
 * (REUSEPORT), or the lowest of the workers a handoff may go to. */
static long admission_load(iol__lsock *s)
{
    iol_runtime *rt = s->l->rt;
    if (!on_acceptor(s))
        return worker_load(&rt->workers[s->worker]);
    long low = -1;
    for (unsigned i = 0; i < rt->n; i++) {
        long load = worker_load(&rt->workers[i]);
        if (low < 0 || load < low)
            low = load;
    }
    return low;
}

/* The cap or the rate says no: the handler goes until the timer brings
 * it back, and the next readiness asks again (admission.c). */
static void lsock_hold(iol__lsock *s, iol__admit_verdict v, double wait)
{
    /* relaxed: see holds_conns. */
    atomic_fetch_add_explicit(v == IOL__HOLD_CONNS ? &s->holds_conns : &s->holds_rate, 1, memory_order_relaxed);
    atomic_store_explicit(&s->held, true, memory_order_relaxed);
    lsock_unwatch(s);
    int r = iol_loop_call_later(lsock_loop(s), wait, lsock_resume, s, &s->resume_timer);
    if (r < 0) {
        iol__log(IOL_LOG_ERROR, "listener %d: cannot schedule resume: %s", s->l->id, strerror(-r));
        s->resume_timer = 0;
    }
}

/* Whether admission control lets one more connection in; holds the
 * socket when not. */
static bool lsock_admit(iol__lsock *s)
{
    iol__admission *a = &s->adm;
    if (a->max_conns == 0 && a->rate == 0)
        return true;
    double wait = 0;
    double now = a->rate > 0 ? iol_loop_time(lsock_loop(s)) : 0;
    iol__admit_verdict v = iol__admission_check(a, a->max_conns ? admission_load(s) : 0, now, &wait);
    if (v == IOL__ADMIT)
        return true;
    lsock_hold(s, v, wait);
    return false;
}

/* Accepts up to `limit` connections (0: until EAGAIN). Returns false when
 * it paused or held the socket. admit: ask admission control first (not
 * for the final accepts at stop: what the kernel queued is handed on, as
 * stop promises). */
static bool lsock_accept(iol__lsock *s, int limit, bool admit)
{
    for (int n = 0; limit == 0 || n < limit; n++) {
        if (admit && !lsock_admit(s))
            return false;
        struct sockaddr_storage peer;
        socklen_t peerlen = sizeof(peer);
        int c = accept4(s->fd, (struct sockaddr *)&peer, &peerlen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c < 0) {
            int err = errno;
            if (accept_retryable(err))
                continue;
            if (err == EAGAIN)
                return true;
            lsock_pause(s, err);
            return false;
        }
        lsock_took(s, c, (const struct sockaddr *)&peer, peerlen);
    }
    return true;
}

static void lsock_ready(int fd, unsigned events, void *arg)
{
    (void)fd;
    (void)events;
    lsock_accept(arg, ACCEPT_BATCH, true);
}

/* Removes a path listener's socket file, once, and only if it is still
 * the file this listener made (not one a successor put there since). */
static void listener_remove_path(iol__listener *l)
{
    if (!l->path)
        return;
    struct stat st;
    if (lstat(l->path, &st) == 0 && st.st_dev == l->path_dev && st.st_ino == l->path_ino)
        (void)unlink(l->path);
    free(l->path);
    l->path = NULL;
}

static void lsock_close(iol__lsock *s)
{
    if (s->fd < 0)
        return;
    lsock_unwatch(s);
    if (s->resume_timer) {
        iol_loop_remove_timeout(lsock_loop(s), s->resume_timer);
        s->resume_timer = 0;
    }
    close(s->fd);
    s->fd = -1;
    if (s->reserve_fd >= 0) {
        close(s->reserve_fd);
        s->reserve_fd = -1;
    }
}

/* Posted to the worker when listen runs after start. */
static void lsock_register_cb(void *arg)
{
    iol__lsock *s = arg;
    if (s->fd < 0 || s->registered || s->ring_on)
        return; /* closed by the final accepts already */
    int r = lsock_watch(s);
    if (r < 0)
        iol__log(IOL_LOG_ERROR, "listener %d: cannot watch its socket on worker %u: %s", s->l->id, s->worker,
                 strerror(-r));
}

/* --------------------------------------------------------------- sockets */

typedef struct bind_addr {
    struct sockaddr_storage ss;
    socklen_t len;
    bool dual; /* "::" for all addresses: clear IPV6_V6ONLY */
} bind_addr;

static void set_port(bind_addr *a, uint16_t port)
{
    if (a->ss.ss_family == AF_INET6)
        ((struct sockaddr_in6 *)&a->ss)->sin6_port = htons(port);
    else
        ((struct sockaddr_in *)&a->ss)->sin_port = htons(port);
}

static int open_socket(const bind_addr *a, bool reuseport, int backlog, bool do_listen, int *out)
{
    int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1, zero = 0, err;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
        goto fail_errno;
    if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
        goto fail_errno;
    if (a->dual && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero)) < 0)
        goto fail_errno;
    if (bind(fd, (const struct sockaddr *)&a->ss, a->len) < 0)
        goto fail_errno;
    if (do_listen && listen(fd, backlog) < 0)
        goto fail_errno;
    *out = fd;
    return 0;
fail_errno:
    err = -errno;
    close(fd);
    return err;
}

/* SO_REUSEPORT lets a second socket of the same user join a port another
 * program listens on. To report a taken port honestly, bind a plain
 * (SO_REUSEADDR only) probe first: it fails with EADDRINUSE if anyone
 * listens there. Skipped when the caller asks to join (reuseport_join):
 * then only the kernel's own rule applies (same user, SO_REUSEPORT). */
static int probe_port(const bind_addr *a)
{
    int fd = -1; /* open_socket sets it on success; -O3 cannot see that */
    int r = open_socket(a, false, 0, false, &fd);
    if (r < 0)
        return r;
    close(fd);
    return 0;
}

static int resolve(const char *host, uint16_t port, bind_addr *a)
{
    memset(a, 0, sizeof(*a));
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *res = NULL;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res)
        return -EINVAL;
    if (res->ai_addrlen > sizeof(a->ss) || (res->ai_family != AF_INET && res->ai_family != AF_INET6)) {
        freeaddrinfo(res);
        return -EINVAL;
    }
    memcpy(&a->ss, res->ai_addr, res->ai_addrlen);
    a->len = res->ai_addrlen;
    freeaddrinfo(res);
    set_port(a, port);
    return 0;
}

static void any_addr(bind_addr *a, int family, uint16_t port)
{
    memset(a, 0, sizeof(*a));
    if (family == AF_INET6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&a->ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_addr = in6addr_any;
        a->len = sizeof(*s6);
        a->dual = true;
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&a->ss;
        s4->sin_family = AF_INET;
        s4->sin_addr.s_addr = htonl(INADDR_ANY);
        a->len = sizeof(*s4);
    }
    set_port(a, port);
}

/* Opens nsocks listening sockets into fds; the first decides the port.
 * join: the port may be another process's REUSEPORT group; no probe. */
static int open_sockets(bind_addr *a, unsigned nsocks, bool reuseport, bool join, int backlog, int *fds,
                        uint16_t *port)
{
    int r;
    if (*port != 0 && reuseport && !join && (r = probe_port(a)) < 0)
        return r;
    unsigned made = 0;
    for (; made < nsocks; made++) {
        if ((r = open_socket(a, reuseport, backlog, true, &fds[made])) < 0)
            goto fail;
        if (made == 0 && *port == 0) {
            struct sockaddr_storage ss;
            socklen_t len = sizeof(ss);
            if (getsockname(fds[0], (struct sockaddr *)&ss, &len) < 0) {
                r = -errno;
                made++;
                goto fail;
            }
            *port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                   : ((struct sockaddr_in *)&ss)->sin_port);
            set_port(a, *port);
        }
    }
    return 0;
fail:
    while (made-- > 0)
        close(fds[made]);
    return r;
}

/* Options the accepted sockets inherit or that shape accepting, set once
 * on each listening socket. */
static int set_accepted_options(const iol_listen_config *cfg, const int *fds, unsigned n)
{
    int one = 1;
    for (unsigned i = 0; i < n; i++) {
        if (cfg->nodelay && setsockopt(fds[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
            return -errno;
        if (cfg->defer_accept > 0 &&
            setsockopt(fds[i], IPPROTO_TCP, TCP_DEFER_ACCEPT, &cfg->defer_accept, sizeof(cfg->defer_accept)) < 0)
            return -errno;
    }
    return 0;
}

/* ----------------------------------------------------------- public API */

static void listener_free(iol__listener *l)
{
    if (!l)
        return;
    free(l->path);
    for (unsigned i = 0; l->socks && i < l->nsocks; i++)
        free(l->socks[i].ring);
    free(l->socks);
    free(l->counts);
    free(l);
}

static iol__listener *find(iol_runtime *rt, int id)
{
    if (id < 0 || (unsigned)id >= rt->nlisteners)
        return NULL;
    return rt->listeners[id];
}

int iol_runtime_listen(iol_runtime *rt, const iol_listen_config *cfg)
{
    if (!rt || !cfg || !cfg->on_accept)
        return -EINVAL;
    if (cfg->shard != IOL_SHARD_REUSEPORT && cfg->shard != IOL_SHARD_HANDOFF)
        return -EINVAL;
    if (cfg->backlog < 0)
        return -EINVAL;
    if (cfg->reuseport_join && (cfg->shard != IOL_SHARD_REUSEPORT || cfg->port == 0))
        return -EINVAL;
    if (cfg->defer_accept < 0)
        return -EINVAL;
    if (!(cfg->max_accept_rate >= 0) || (cfg->connections_low && cfg->connections_low >= cfg->max_connections))
        return -EINVAL;
    /* A path: one socket handed off; ports and TCP options do not apply. */
    if (cfg->path && (cfg->shard != IOL_SHARD_HANDOFF || cfg->host || cfg->port || cfg->reuseport_join ||
                      cfg->nodelay || cfg->defer_accept))
        return -EINVAL;
    /* relaxed: a fast path; the authoritative check is under rt->mu. */
    if (atomic_load_explicit(&rt->stopped, memory_order_relaxed))
        return -ESHUTDOWN;

    bool reuseport = cfg->shard == IOL_SHARD_REUSEPORT;
    unsigned nsocks = reuseport ? rt->n : 1;
    int backlog = cfg->backlog ? cfg->backlog : SOMAXCONN;
    int err = -ENOMEM;

    iol__listener *l = calloc(1, sizeof(*l));
    if (!l)
        return -ENOMEM;
    l->socks = calloc(nsocks, sizeof(*l->socks));
    void *mem = NULL;
    if (!l->socks || posix_memalign(&mem, IOL__CACHE_LINE, rt->n * sizeof(iol__count)) != 0)
        goto fail_listener;
    l->counts = mem;
    for (unsigned i = 0; i < rt->n; i++)
        atomic_init(&l->counts[i].v, 0);
    l->rt = rt;
    l->shard = cfg->shard;
    l->on_accept = cfg->on_accept;
    l->arg = cfg->arg;
    l->nsocks = nsocks;

    int *fds = calloc(nsocks, sizeof(int));
    if (!fds)
        goto fail_listener;
    uint16_t port = cfg->port;
    bind_addr a;
    if (cfg->path) {
        struct stat st;
        l->path = strdup(cfg->path);
        if (!l->path)
            goto fail_fds;
        if ((err = iol__unix_listen(cfg->path, backlog, &fds[0])) < 0) {
            free(l->path);
            l->path = NULL; /* not ours to remove */
            goto fail_fds;
        }
        if (lstat(cfg->path, &st) < 0) {
            err = -errno;
            close(fds[0]);
            unlink(cfg->path);
            goto fail_fds;
        }
        l->path_dev = st.st_dev;
        l->path_ino = st.st_ino;
    } else if (cfg->host) {
        if ((err = resolve(cfg->host, port, &a)) < 0)
            goto fail_fds;
        err = open_sockets(&a, nsocks, reuseport, cfg->reuseport_join, backlog, fds, &port);
    } else {
        any_addr(&a, AF_INET6, port);
        err = open_sockets(&a, nsocks, reuseport, cfg->reuseport_join, backlog, fds, &port);
        if (err == -EAFNOSUPPORT || err == -EADDRNOTAVAIL) {
            port = cfg->port;
            any_addr(&a, AF_INET, port);
            err = open_sockets(&a, nsocks, reuseport, cfg->reuseport_join, backlog, fds, &port);
        }
    }
    if (err < 0)
        goto fail_fds;
    if ((err = set_accepted_options(cfg, fds, nsocks)) < 0) {
        for (unsigned i = 0; i < nsocks; i++)
            close(fds[i]);
        goto fail_fds;
    }
    l->port = port;
    for (unsigned i = 0; i < nsocks; i++) {
        iol__lsock *s = &l->socks[i];
        s->l = l;
        s->worker = reuseport ? i : IOL__ACCEPTOR(rt);
        s->fd = fds[i];
        s->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        /* REUSEPORT: each socket gets its share of the rate (the kernel
         * spreads connections evenly); HANDOFF: the one socket all of it. */
        iol__admission_init(&s->adm, cfg->max_connections, cfg->connections_low,
                            cfg->max_accept_rate / (double)nsocks, NAN);
    }
    free(fds);
    fds = NULL;

    pthread_mutex_lock(&rt->mu);
    if (atomic_load_explicit(&rt->stopped, memory_order_relaxed) || rt->listeners_closed) {
        err = -ESHUTDOWN;
        goto fail_locked;
    }
    if (rt->nlisteners == rt->listeners_cap) {
        unsigned cap = rt->listeners_cap ? rt->listeners_cap * 2 : 4;
        iol__listener **grown = realloc(rt->listeners, cap * sizeof(*grown));
        if (!grown) {
            err = -ENOMEM;
            goto fail_locked;
        }
        rt->listeners = grown;
        rt->listeners_cap = cap;
    }
    if (rt->state == IOL__RT_NEW) {
        /* Loops not running: register from here (start takes rt->mu, so
         * the workers see it). */
        for (unsigned i = 0; i < nsocks; i++) {
            if ((err = lsock_watch(&l->socks[i])) < 0) {
                while (i-- > 0)
                    lsock_unwatch(&l->socks[i]);
                goto fail_locked;
            }
        }
    }
    l->id = (int)rt->nlisteners;
    rt->listeners[rt->nlisteners++] = l;
    if (!reuseport) {
        /* Starts the acceptor if the runtime runs. On failure the
         * listener stays in the list (closed at stop) and never accepts. */
        err = iol__runtime_want_acceptor(rt);
    }
    if (rt->state != IOL__RT_NEW) {
        /* Each worker (or the acceptor) registers its own socket. If stop
         * wins the race the post is refused or finds the socket closed;
         * the listener is in the list, so the final accepts still drain
         * and close its socket. The acceptor's loop is reached directly:
         * it closes only after its final accepts, which come after this
         * (listeners_closed is false under rt->mu). */
        for (unsigned i = 0; i < nsocks && err >= 0; i++) {
            iol__lsock *s = &l->socks[i];
            int r = on_acceptor(s) ? iol__loop_post(rt->acceptor_loop, lsock_register_cb, s)
                                   : iol__runtime_post(rt, s->worker, lsock_register_cb, s);
            if (r < 0)
                err = r;
        }
        if (err < 0) {
            pthread_mutex_unlock(&rt->mu);
            return err;
        }
    }
    pthread_mutex_unlock(&rt->mu);
    return l->id;

fail_locked:
    pthread_mutex_unlock(&rt->mu);
    for (unsigned i = 0; i < nsocks; i++) {
        ring_discard(&l->socks[i]); /* armed on a loop not yet running */
        close(l->socks[i].fd);
        if (l->socks[i].reserve_fd >= 0)
            close(l->socks[i].reserve_fd);
    }
    listener_remove_path(l);
fail_fds:
    free(fds);
fail_listener:
    listener_free(l);
    return err;
}

int iol_runtime_listener_port(iol_runtime *rt, int id)
{
    if (!rt)
        return -EINVAL;
    pthread_mutex_lock(&rt->mu);
    iol__listener *l = find(rt, id);
    int r = l ? l->port : -ENOENT;
    pthread_mutex_unlock(&rt->mu);
    return r;
}

int iol_runtime_listener_counts(iol_runtime *rt, int id, uint64_t *counts, unsigned n)
{
    if (!rt || (!counts && n > 0))
        return -EINVAL;
    pthread_mutex_lock(&rt->mu);
    iol__listener *l = find(rt, id);
    if (!l) {
        pthread_mutex_unlock(&rt->mu);
        return -ENOENT;
    }
    for (unsigned i = 0; i < n && i < rt->n; i++)
        counts[i] = atomic_load_explicit(&l->counts[i].v, memory_order_relaxed);
    pthread_mutex_unlock(&rt->mu);
    return (int)rt->n;
}

/* Overload figures of listener id's sockets; worker: only the socket its
 * loop watches (REUSEPORT), IOL_RUNTIME_ALL: every socket, the HANDOFF
 * acceptor's included. Adds to *out. -ENOENT: unknown id. */
int iol__listener_overload(iol_runtime *rt, int id, unsigned worker, iol_listener_stats *out)
{
    pthread_mutex_lock(&rt->mu);
    iol__listener *l = find(rt, id);
    if (!l) {
        pthread_mutex_unlock(&rt->mu);
        return -ENOENT;
    }
    for (unsigned i = 0; i < l->nsocks; i++) {
        iol__lsock *s = &l->socks[i];
        if (worker != IOL_RUNTIME_ALL && s->worker != worker)
            continue;
        /* relaxed: see holds_conns. */
        out->holds_connections += atomic_load_explicit(&s->holds_conns, memory_order_relaxed);
        out->holds_rate += atomic_load_explicit(&s->holds_rate, memory_order_relaxed);
        out->held += atomic_load_explicit(&s->held, memory_order_relaxed) ? 1u : 0u;
    }
    if (worker == IOL_RUNTIME_ALL)
        for (unsigned i = 0; i < rt->n; i++)
            out->accepted += atomic_load_explicit(&l->counts[i].v, memory_order_relaxed);
    else if (worker < rt->n)
        out->accepted += atomic_load_explicit(&l->counts[worker].v, memory_order_relaxed);
    pthread_mutex_unlock(&rt->mu);
    return 0;
}

long long iol__listener_ring_accepts(iol_runtime *rt, int id)
{
    pthread_mutex_lock(&rt->mu);
    iol__listener *l = find(rt, id);
    long long n = l ? 0 : -ENOENT;
    for (unsigned i = 0; l && i < l->nsocks; i++)
        n += (long long)atomic_load_explicit(&l->socks[i].ring_accepted, memory_order_relaxed); /* see ring_accepted */
    pthread_mutex_unlock(&rt->mu);
    return n;
}

int iol_runtime_listener_stats(iol_runtime *rt, int id, iol_listener_stats *out, size_t size)
{
    if (!rt || !out || size == 0)
        return -EINVAL;
    iol_listener_stats st = {0};
    int r = iol__listener_overload(rt, id, IOL_RUNTIME_ALL, &st);
    if (r < 0)
        return r;
    if (size > sizeof st) {
        memset((char *)out + sizeof st, 0, size - sizeof st);
        size = sizeof st;
    }
    memcpy(out, &st, size);
    return 0;
}

/* ------------------------------------------------------------ shutdown */

/* Graceful stop has a window: a handshake that completes after the last
 * accept() saw EAGAIN but before close() is reset by the close, and its
 * client had already seen connect() succeed. So first make the socket
 * drop new SYNs (a classic BPF filter: the filter of a TCP socket sees the
 * TCP header at offset 0; flags are byte 13; SYN without ACK is dropped).
 * A dropped SYN is retransmitted and then refused once the socket is
 * gone, which a client handles as "not accepted". Handshakes already past
 * their SYN still complete; we wait briefly for them below. */
static void refuse_new_handshakes(int fd)
{
    static struct sock_filter drop_syn[] = {
        BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 13),
        BPF_STMT(BPF_ALU | BPF_AND | BPF_K, 0x12),           /* SYN | ACK */
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0x02, 0, 1),     /* SYN alone? */
        BPF_STMT(BPF_RET | BPF_K, 0),                         /* drop */
        BPF_STMT(BPF_RET | BPF_K, 0xffffffffu),               /* keep */
    };
    struct sock_fprog prog = {.len = sizeof drop_syn / sizeof drop_syn[0], .filter = drop_syn};
    if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog) < 0)
        iol__log(IOL_LOG_DEBUG, "listener: cannot refuse new handshakes at stop: %s", strerror(errno));
}

/* Handshakes that were past their SYN when the filter went on finish
 * within a round trip: once the socket was quiet this long, ask the
 * kernel whether any are still half-open (half_open.c) and keep
 * accepting while there are, for at most HALF_OPEN_MAX_SECONDS (or the
 * drain_timeout if shorter; without a drain, or where the kernel cannot
 * tell, the quiet wait alone). A half-open handshake that outlives the
 * bound (a client gone silent) is reset by the close. */
#define FINAL_HANDSHAKE_WAIT_MS 5
#define HALF_OPEN_MAX_SECONDS 1.0

static double monotonic_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Accepts until EAGAIN, then again while late handshakes land; a pause
 * (out of fds) ends it: the rest is shed or reset, nothing more can be
 * done without fds. */
static void final_accepts(iol__lsock *s)
{
    if (s->l->path) {
        /* A Unix connect is queued whole or refused: nothing is half-open. */
        lsock_accept(s, 0, false);
        return;
    }
    double bound = s->l->rt->cfg.drain_timeout < 0 ? 0 : s->l->rt->cfg.drain_timeout;
    if (bound > HALF_OPEN_MAX_SECONDS)
        bound = HALF_OPEN_MAX_SECONDS;
    double give_up = monotonic_now() + bound;
    struct pollfd pfd = {.fd = s->fd, .events = POLLIN};
    for (;;) {
        if (!lsock_accept(s, 0, false))
            return;
        if (poll(&pfd, 1, FINAL_HANDSHAKE_WAIT_MS) > 0)
            continue;
        if (monotonic_now() >= give_up)
            return;
        if (iol__half_open_count(s->l->port) <= 0) {
            /* A handshake that completed between the last accept and the
             * count is queued, no longer half-open: take it too. Nothing
             * can land after this pass (new SYNs are dropped). */
            lsock_accept(s, 0, false);
            return;
        }
    }
}

void iol__listeners_final_accept(iol_runtime *rt, unsigned index)
{
    /* Snapshot under the lock; listen fails once listeners_closed is set,
     * so no listener appears after the first worker got here. Listeners
     * are only freed by iol_runtime_free, after join. */
    pthread_mutex_lock(&rt->mu);
    rt->listeners_closed = true;
    unsigned n = rt->nlisteners;
    iol__listener **list = rt->listeners;
    pthread_mutex_unlock(&rt->mu);

    for (unsigned k = 0; k < n; k++) {
        iol__listener *l = list[k];
        for (unsigned i = 0; i < l->nsocks; i++) {
            iol__lsock *s = &l->socks[i];
            if (s->worker != index || s->fd < 0)
                continue;
            ring_settle(s); /* what the ring took is handed on first */
            lsock_unwatch(s);
            if (!l->path)
                refuse_new_handshakes(s->fd);
            final_accepts(s);
            lsock_close(s);
            listener_remove_path(l); /* new connects are refused from here */
        }
    }
}

void iol__listeners_free(iol_runtime *rt)
{
    for (unsigned k = 0; k < rt->nlisteners; k++) {
        iol__listener *l = rt->listeners[k];
        for (unsigned i = 0; i < l->nsocks; i++) {
            iol__lsock *s = &l->socks[i];
            ring_discard(s);
            lsock_close(s);
        }
        listener_remove_path(l);
        listener_free(l);
    }
    free(rt->listeners);
    rt->listeners = NULL;
    rt->nlisteners = 0;
}
