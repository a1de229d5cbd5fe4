/* loop/ — signal handlers that run on the loop thread (asyncio's
 * add_signal_handler, libuv's uv_signal): a signalfd per loop, read like
 * any fd, so handlers are ordinary code, not async-signal-safe code.
 *
 * Blocking. A signalfd only sees a signal that is blocked: otherwise the
 * kernel delivers it to some thread that does not block it, by its
 * disposition. So the signal is blocked in the thread that adds it and in
 * each thread that runs the loop (at start); the runtime's threads block
 * the usual notification signals from birth (runtime/runtime.c). For the
 * threads the application made before and does not block it in, a
 * forwarding handler is installed as the signal's disposition while any
 * loop handles it: it re-sends the signal to the loop's thread (tgkill),
 * where it is blocked and the signalfd sees it (a signalfd reads the
 * signals pending for the process and for the reading thread).
 *
 * One loop per signal: a process-directed signal is consumed by one
 * reader, so a second loop asking for the same signal gets -EBUSY.
 *
 * Restoring. When the last handler of a signal goes (or its loop closes),
 * the signal's previous disposition is put back, signals of it still
 * pending are discarded (sigtimedwait), and the signal is unblocked again
 * in the calling thread if this loop blocked it there.
 *
 * The registry (owner loop, saved disposition, forward target) is
 * process-wide under a mutex; the forwarding handler reads only the
 * target, an atomic. */
#include "loop/loop_impl.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MAX_SIGNAL NSIG

typedef struct sig_entry {
    int signo;
    iol_signal_fn fn; /* NULL: removed during dispatch */
    void *arg;
} sig_entry;

struct iol__signals {
    int fd;              /* signalfd of `set`, registered with the poller */
    sigset_t set;        /* signals with a handler on this loop */
    sigset_t blocked;    /* of those, the ones this loop blocked in blocker_tid */
    pid_t blocker_tid;
    sig_entry *entries;
    unsigned len, cap;
    bool dispatching;
};

static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
    iol_loop *owner;
    struct sigaction previous;
} registry[MAX_SIGNAL];
/* The thread to forward a stray delivery to; 0: none. Read in the
 * forwarding handler: relaxed, it orders nothing (a stale tid sends the
 * signal to a thread that blocks it or is gone: tgkill fails harmlessly). */
static _Atomic pid_t forward_tid[MAX_SIGNAL];

static pid_t current_tid(void)
{
    return (pid_t)syscall(SYS_gettid);
}

static void forward(int signo)
{
    int saved = errno;
    pid_t tid = atomic_load_explicit(&forward_tid[signo], memory_order_relaxed);
    /* Never to ourselves: the signal is unblocked here, it would come back. */
    if (tid > 0 && tid != current_tid())
        syscall(SYS_tgkill, getpid(), tid, signo);
    errno = saved;
}

static bool valid_signal(int signo)
{
    if (signo <= 0 || signo >= MAX_SIGNAL || signo > SIGRTMAX)
        return false;
    switch (signo) {
    case SIGKILL: case SIGSTOP:                          /* cannot be caught */
    case SIGSEGV: case SIGBUS: case SIGFPE: case SIGILL: /* blocking faults is undefined */
        return false;
    default:
        return true;
    }
}

/* Blocks the loop's signals in the calling thread; remembers which were
 * not blocked before, to unblock them at the end. */
static void block_here(iol__signals *s, const sigset_t *which)
{
    sigset_t old;
    pthread_sigmask(SIG_BLOCK, which, &old);
    pid_t tid = current_tid();
    if (s->blocker_tid != tid) {
        sigemptyset(&s->blocked);
        s->blocker_tid = tid;
    }
    for (int signo = 1; signo < MAX_SIGNAL; signo++)
        if (sigismember(which, signo) == 1 && sigismember(&old, signo) == 0)
            sigaddset(&s->blocked, signo);
}

static void dispatch(iol_loop *loop)
{
    iol__signals *s = loop->signals;
    struct signalfd_siginfo info[16];
    for (int rounds = 0; rounds < 4; rounds++) { /* bounded: other work waits */
        ssize_t n = read(s->fd, info, sizeof info);
        if (n <= 0)
            return;
        for (size_t k = 0; k < (size_t)n / sizeof info[0]; k++) {
            int signo = (int)info[k].ssi_signo;
            s->dispatching = true;
            unsigned len = s->len; /* added meanwhile: from the next signal on */
            for (unsigned i = 0; i < len; i++) {
                sig_entry e = s->entries[i];
                if (!e.fn || e.signo != signo)
                    continue;
                iol__stats_add(&loop->stats.signals, 1);
                bool watched = iol__loop_watched(loop);
                uint64_t began = watched ? iol__loop_call_begin(loop, (const void *)e.fn) : 0;
                e.fn(signo, e.arg);
                if (watched)
                    iol__loop_call_end(loop, began);
                if (loop->signals != s) /* the loop's last handler went meanwhile (s is freed) */
                    return;
            }
            s->dispatching = false;
            unsigned j = 0;
            for (unsigned i = 0; i < s->len; i++)
                if (s->entries[i].fn)
                    s->entries[j++] = s->entries[i];
            s->len = j;
        }
        if ((size_t)n < sizeof info)
            return;
    }
}

bool iol__loop_signal_fd_event(iol_loop *loop, int fd)
{
    if (!loop->signals || fd != loop->signals->fd)
        return false;
    dispatch(loop);
    return true;
}

int iol__loop_signal_fd(const iol_loop *loop)
{
    return loop->signals ? loop->signals->fd : -1;
}

static bool loop_has(const iol__signals *s, int signo)
{
    for (unsigned i = 0; i < s->len; i++)
        if (s->entries[i].fn && s->entries[i].signo == signo)
            return true;
    return false;
}

/* The loop's last handler of signo went: give the signal back. Caller
 * holds registry_mu. */
static void release_signal(iol_loop *loop, int signo)
{
    iol__signals *s = loop->signals;
    sigdelset(&s->set, signo);
    signalfd(s->fd, &s->set, SFD_NONBLOCK | SFD_CLOEXEC);
    registry[signo].owner = NULL;
    atomic_store_explicit(&forward_tid[signo], 0, memory_order_relaxed); /* relaxed: see forward_tid */
    sigaction(signo, &registry[signo].previous, NULL);
    /* Pending ones would reach the old disposition once unblocked. */
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, signo);
    struct timespec zero = { 0, 0 };
    while (sigtimedwait(&one, NULL, &zero) == signo)
        ;
    if (s->blocker_tid == current_tid() && sigismember(&s->blocked, signo) == 1) {
        pthread_sigmask(SIG_UNBLOCK, &one, NULL);
        sigdelset(&s->blocked, signo);
    }
}

static void free_signals(iol_loop *loop)
{
    iol__signals *s = loop->signals;
    loop->poller_ops->remove(loop->poller, s->fd);
    close(s->fd);
    free(s->entries);
    free(s);
    loop->signals = NULL;
}

static int signals_create(iol_loop *loop)
{
    iol__signals *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    sigemptyset(&s->set);
    sigemptyset(&s->blocked);
    s->fd = signalfd(-1, &s->set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (s->fd < 0) {
        int err = -errno;
        free(s);
        return err;
    }
    int err = loop->poller_ops->add(loop->poller, s->fd, IOL_READ);
    if (err < 0) {
        close(s->fd);
        free(s);
        return err;
    }
    loop->signals = s;
    return 0;
}

int iol_loop_add_signal(iol_loop *loop, int signo, iol_signal_fn fn, void *arg)
{
    int err = iol__loop_check(loop);
    if (err)
        return err;
    if (!fn || !valid_signal(signo))
        return -EINVAL;
    pthread_mutex_lock(&registry_mu);
    if (registry[signo].owner && registry[signo].owner != loop) {
        pthread_mutex_unlock(&registry_mu);
        return -EBUSY;
    }
    if (!loop->signals && (err = signals_create(loop)) < 0)
        goto out;
    iol__signals *s = loop->signals;
    if (s->len == s->cap) {
        unsigned cap = s->cap ? s->cap * 2 : 4;
        sig_entry *e = realloc(s->entries, cap * sizeof *e);
        if (!e) {
            err = -ENOMEM;
            goto out_maybe_free;
        }
        s->entries = e;
        s->cap = cap;
    }
    if (!registry[signo].owner) {
        sigset_t one;
        sigemptyset(&one);
        sigaddset(&one, signo);
        block_here(s, &one); /* before the disposition changes: no stray delivery here */
        sigset_t set = s->set;
        sigaddset(&set, signo);
        if (signalfd(s->fd, &set, SFD_NONBLOCK | SFD_CLOEXEC) < 0) {
            err = -errno;
            goto out_maybe_free;
        }
        s->set = set;
        struct sigaction sa = { .sa_handler = forward, .sa_flags = SA_RESTART };
        sigfillset(&sa.sa_mask);
        atomic_store_explicit(&forward_tid[signo], current_tid(), memory_order_relaxed); /* relaxed: see forward_tid */
        sigaction(signo, &sa, &registry[signo].previous);
        registry[signo].owner = loop;
    }
    s->entries[s->len++] = (sig_entry){ signo, fn, arg };
    err = 0;
    goto out;
out_maybe_free:
    if (s->len == 0 && !s->dispatching)
        free_signals(loop);
out:
    pthread_mutex_unlock(&registry_mu);
    return err;
}

int iol_loop_remove_signal(iol_loop *loop, int signo, iol_signal_fn fn, void *arg)
{
    int err = iol__loop_check(loop);
    if (err)
        return err;
    if (!fn || !valid_signal(signo))
        return -EINVAL;
    iol__signals *s = loop->signals;
    if (!s)
        return -ENOENT;
    pthread_mutex_lock(&registry_mu);
    err = -ENOENT;
    for (unsigned i = 0; i < s->len; i++) {
        sig_entry *e = &s->entries[i];
        if (e->fn != fn || e->arg != arg || e->signo != signo)
            continue;
        e->fn = NULL;
        if (!s->dispatching) {
            memmove(e, e + 1, (s->len - i - 1) * sizeof *e);
            s->len--;
        }
        if (!loop_has(s, signo))
            release_signal(loop, signo);
        err = 0;
        break;
    }
    bool empty = true;
    for (unsigned i = 0; i < s->len; i++)
        empty = empty && !s->entries[i].fn;
    if (empty)
        free_signals(loop); /* dispatch sees loop->signals NULL and returns */
    pthread_mutex_unlock(&registry_mu);
    return err;
}

void iol__loop_signals_thread_enter(iol_loop *loop)
{
    iol__signals *s = loop->signals;
    if (!s)
        return;
    pthread_mutex_lock(&registry_mu);
    block_here(s, &s->set);
    pid_t tid = current_tid();
    for (int signo = 1; signo < MAX_SIGNAL; signo++)
        if (sigismember(&s->set, signo) == 1)
            atomic_store_explicit(&forward_tid[signo], tid, memory_order_relaxed); /* relaxed: see forward_tid */
    pthread_mutex_unlock(&registry_mu);
}

void iol__loop_signals_release(iol_loop *loop)
{
    iol__signals *s = loop->signals;
    if (!s)
        return;
    pthread_mutex_lock(&registry_mu);
    for (int signo = 1; signo < MAX_SIGNAL; signo++)
        if (sigismember(&s->set, signo) == 1)
            release_signal(loop, signo);
    free_signals(loop);
    pthread_mutex_unlock(&registry_mu);
}
