/* loop/ — the blocking watchdog of one loop: a one-shot POSIX timer aimed
 * at the loop's own thread (SIGEV_THREAD_ID, SIGALRM), armed while an
 * iteration does its work.
 *
 * Signal safety. The handler only ever runs on the loop thread (the timer
 * names that thread), so it is an interrupt of the code that owns the
 * watchdog, never a concurrent thread. Every field it touches is a
 * lock-free _Atomic read or written whole; relaxed order suffices between
 * a thread and its own handler once atomic_signal_fence stops the compiler
 * from moving the stores that publish state (call_start before in_call,
 * frames before log_fired). The handler calls only clock_gettime,
 * timer_settime and write (async-signal-safe), backtrace (safe once
 * libgcc_s is loaded, which install_handler makes sure of by calling it
 * once) and backtrace_symbols_fd (no malloc). Messages are formatted when a
 * threshold is set, never in the handler.
 *
 * Arming. iteration_begin arms the timer for the earliest deadline:
 * iteration start + signal threshold, and for the log threshold the
 * earliest moment a call could become slow (now + log threshold). When the
 * timer fires early for the log threshold (the call in progress began
 * later), the handler re-arms for that call's own deadline, so calls are
 * timed exactly with no syscall per call. iteration_end clears `active`
 * before disarming: a signal arriving in between sees an inactive
 * watchdog and neither acts nor re-arms; one already handled is harmless.
 *
 * Lifetime. thread_exit disarms on the loop thread; a signal generated
 * before that is delivered on return from that very timer_settime (SIGALRM
 * is not blocked), so once the loop stopped no signal carrying this
 * watchdog's address is in flight and free (timer_delete) is safe from any
 * thread. A loop thread that blocks SIGALRM gets no watchdog. */
#include "loop/watchdog.h"

#include <dlfcn.h>
#include <errno.h>
#include <execinfo.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "loop/log.h"

#define WATCHDOG_SIGNAL SIGALRM
#define WATCHDOG_MAGIC 0x10f0dd09u
#define MAX_FRAMES 64
#define NO_DEADLINE LLONG_MAX
#define MAX_THRESHOLD_NS (LLONG_MAX / 4) /* far enough; start + threshold never overflows */

_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "the signal handler needs lock-free 64-bit atomics");
_Static_assert(ATOMIC_POINTER_LOCK_FREE == 2, "the signal handler needs lock-free pointer atomics");

typedef void (*signal_action)(int signo);

struct iol__watchdog {
    unsigned magic;              /* checked by the handler before trusting si_value */
    bool enabled;                /* a threshold is set; owner thread only */

    /* Shared with the handler (see the top comment). Times in ns. */
    _Atomic long long signal_ns, log_ns; /* 0: off */
    _Atomic(signal_action) action;       /* NULL: default warning */
    _Atomic long long iteration_start, call_start;
    _Atomic bool active;         /* an iteration is running: the handler may act */
    _Atomic bool in_call;
    _Atomic bool signal_fired;   /* in this iteration */
    _Atomic bool log_fired;      /* in this call: frames hold its backtrace */
    _Atomic bool log_written;    /* ... and were written to stderr at once */
    _Atomic bool log_idle;       /* the handler stopped re-arming for the log */
    _Atomic bool log_to_stderr;  /* default log handler in effect */
    _Atomic int nframes;
    void *frames[MAX_FRAMES];
    void *signal_frames[MAX_FRAMES];
    char signal_msg[96], log_msg[128];
    size_t signal_msg_len, log_msg_len;

    /* Owner thread only. */
    const void *call_fn;
    timer_t timer;
    bool has_timer;
    pid_t timer_tid;             /* the thread the timer signals */
};

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static long long seconds_to_ns(double seconds)
{
    if (seconds * 1e9 >= (double)MAX_THRESHOLD_NS)
        return MAX_THRESHOLD_NS;
    long long ns = (long long)(seconds * 1e9);
    return ns > 0 ? ns : 1;
}

#define LOAD(field) atomic_load_explicit(&(field), memory_order_relaxed)
#define STORE(field, v) atomic_store_explicit(&(field), (v), memory_order_relaxed)

/* One-shot, relative (a deadline already past fires at once). Async-signal-safe. */
static void arm_in(iol__watchdog *w, long long ns)
{
    if (ns < 1)
        ns = 1;
    struct itimerspec its = { .it_value = { .tv_sec = ns / 1000000000LL, .tv_nsec = ns % 1000000000LL } };
    timer_settime(w->timer, 0, &its, NULL);
}

static void disarm(iol__watchdog *w)
{
    struct itimerspec its = { 0 };
    timer_settime(w->timer, 0, &its, NULL);
}

/* The earliest moment the handler has something to check. Async-signal-safe. */
static long long next_deadline(iol__watchdog *w, long long now)
{
    long long next = NO_DEADLINE;
    long long sig = LOAD(w->signal_ns), log = LOAD(w->log_ns);
    if (sig > 0 && !LOAD(w->signal_fired))
        next = LOAD(w->iteration_start) + sig;
    if (log > 0) {
        long long due = NO_DEADLINE;
        if (!LOAD(w->in_call))
            due = now + log;
        else if (!LOAD(w->log_fired))
            due = LOAD(w->call_start) + log;
        else
            STORE(w->log_idle, true); /* this call is caught; call_begin re-arms */
        if (due < next)
            next = due;
    }
    return next;
}

static void rearm(iol__watchdog *w, long long now)
{
    long long next = next_deadline(w, now);
    if (next != NO_DEADLINE)
        arm_in(w, next - now);
}

static void write_all(const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(STDERR_FILENO, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        buf += n;
        len -= (size_t)n;
    }
}

/* The process's SIGALRM handler before ours, for signals that are not ours. */
static struct sigaction previous_action;

static void chain_previous(int signo, siginfo_t *info, void *uctx)
{
    if (previous_action.sa_flags & SA_SIGINFO) {
        if (previous_action.sa_sigaction)
            previous_action.sa_sigaction(signo, info, uctx);
    } else if (previous_action.sa_handler != SIG_DFL && previous_action.sa_handler != SIG_IGN) {
        previous_action.sa_handler(signo);
    }
    /* SIG_DFL would kill the process: while we own SIGALRM, stray ones are dropped. */
}

static void fire_signal_threshold(iol__watchdog *w, int signo)
{
    signal_action action = LOAD(w->action);
    if (action) {
        action(signo);
        return;
    }
    write_all(w->signal_msg, w->signal_msg_len);
    int n = backtrace(w->signal_frames, MAX_FRAMES);
    backtrace_symbols_fd(w->signal_frames, n, STDERR_FILENO);
}

static void catch_slow_call(iol__watchdog *w)
{
    int n = backtrace(w->frames, MAX_FRAMES);
    STORE(w->nframes, n);
    bool to_stderr = LOAD(w->log_to_stderr);
    if (to_stderr) {
        write_all(w->log_msg, w->log_msg_len);
        backtrace_symbols_fd(w->frames, n, STDERR_FILENO);
    }
    STORE(w->log_written, to_stderr);
    atomic_signal_fence(memory_order_release); /* frames before log_fired */
    STORE(w->log_fired, true);
}

static void on_timer_signal(int signo, siginfo_t *info, void *uctx)
{
    int saved_errno = errno;
    iol__watchdog *w = info->si_code == SI_TIMER ? info->si_value.sival_ptr : NULL;
    if (!w || w->magic != WATCHDOG_MAGIC) {
        chain_previous(signo, info, uctx);
        goto out;
    }
    if (!LOAD(w->active))
        goto out;
    atomic_signal_fence(memory_order_acquire); /* state published before active/in_call */
    long long now = now_ns();
    long long sig = LOAD(w->signal_ns), log = LOAD(w->log_ns);
    if (sig > 0 && !LOAD(w->signal_fired) && now >= LOAD(w->iteration_start) + sig) {
        STORE(w->signal_fired, true);
        fire_signal_threshold(w, signo);
    }
    if (log > 0 && LOAD(w->in_call) && !LOAD(w->log_fired) && now >= LOAD(w->call_start) + log)
        catch_slow_call(w);
    rearm(w, now);
out:
    errno = saved_errno;
}

/* Installs the process-wide handler once; it stays (a loop's timer signal
 * may still be on its way when the last threshold goes away, and SIG_DFL
 * would kill the process). */
static int install_handler(void)
{
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    static bool installed;
    int err = 0;
    pthread_mutex_lock(&lock);
    if (!installed) {
        /* Loads libgcc_s now: backtrace's first call is not signal-safe. */
        void *frame[1];
        backtrace(frame, 1);
        struct sigaction sa = { .sa_sigaction = on_timer_signal, .sa_flags = SA_RESTART | SA_SIGINFO };
        sigemptyset(&sa.sa_mask);
        if (sigaction(WATCHDOG_SIGNAL, &sa, &previous_action) < 0)
            err = -errno;
        else
            installed = true;
    }
    pthread_mutex_unlock(&lock);
    return err;
}

/* A timer that signals the calling thread (kept if it already does). */
static int bind_timer(iol__watchdog *w)
{
    pid_t tid = gettid();
    if (w->has_timer && w->timer_tid == tid)
        return 0;
    struct sigevent sev = { .sigev_notify = SIGEV_THREAD_ID, .sigev_signo = WATCHDOG_SIGNAL };
    sev.sigev_value.sival_ptr = w;
    sev._sigev_un._tid = tid;
    timer_t timer;
    if (timer_create(CLOCK_MONOTONIC, &sev, &timer) < 0)
        return -errno;
    if (w->has_timer)
        timer_delete(w->timer);
    w->timer = timer;
    w->has_timer = true;
    w->timer_tid = tid;
    return 0;
}

static void update_enabled(iol__watchdog *w)
{
    w->enabled = LOAD(w->signal_ns) > 0 || LOAD(w->log_ns) > 0;
}

int iol__watchdog_new(iol__watchdog **out)
{
    iol__watchdog *w = calloc(1, sizeof *w);
    if (!w)
        return -ENOMEM;
    w->magic = WATCHDOG_MAGIC;
    *out = w;
    return 0;
}

void iol__watchdog_free(iol__watchdog *w)
{
    if (!w)
        return;
    if (w->has_timer)
        timer_delete(w->timer);
    w->magic = 0;
    free(w);
}

/* Swaps in a preformatted message: its threshold reads 0 meanwhile, so a
 * handler interrupting the copy never writes half a message. */
static void replace_message(_Atomic long long *threshold, char *dst, size_t size, size_t *dst_len, const char *msg,
                            int len)
{
    STORE(*threshold, 0);
    atomic_signal_fence(memory_order_seq_cst);
    size_t n = len < 0 ? 0 : (size_t)len < size ? (size_t)len : size - 1;
    memcpy(dst, msg, n);
    dst[n] = '\0';
    *dst_len = n;
    atomic_signal_fence(memory_order_seq_cst);
}

/* Both setters: the handler and a timer first, then the values; a handler
 * running meanwhile reads either the old or the new threshold, whole. */
int iol__watchdog_set_signal(iol__watchdog *w, double seconds, void (*action)(int signo))
{
    if (!w || isnan(seconds))
        return -EINVAL;
    if (seconds <= 0) {
        STORE(w->signal_ns, 0);
        update_enabled(w);
        return 0;
    }
    int err = install_handler();
    if (err || (err = bind_timer(w)) < 0)
        return err;
    char msg[sizeof w->signal_msg];
    int len = snprintf(msg, sizeof msg, "ioloop: blocked for > %g s\n", seconds);
    replace_message(&w->signal_ns, w->signal_msg, sizeof w->signal_msg, &w->signal_msg_len, msg, len);
    STORE(w->action, action);
    atomic_signal_fence(memory_order_seq_cst);
    STORE(w->signal_ns, seconds_to_ns(seconds));
    update_enabled(w);
    return 0;
}

int iol__watchdog_set_log(iol__watchdog *w, double seconds)
{
    if (!w || isnan(seconds))
        return -EINVAL;
    if (seconds <= 0) {
        STORE(w->log_ns, 0);
        update_enabled(w);
        return 0;
    }
    int err = install_handler();
    if (err || (err = bind_timer(w)) < 0)
        return err;
    char msg[sizeof w->log_msg];
    int len = snprintf(msg, sizeof msg, "ioloop WARNING: a call has blocked the loop for > %g s; backtrace:\n", seconds);
    replace_message(&w->log_ns, w->log_msg, sizeof w->log_msg, &w->log_msg_len, msg, len);
    /* Asked here, not in the handler: iol__log_is_default takes a lock. */
    STORE(w->log_to_stderr, iol__log_is_default());
    atomic_signal_fence(memory_order_seq_cst);
    STORE(w->log_ns, seconds_to_ns(seconds));
    update_enabled(w);
    return 0;
}

bool iol__watchdog_enabled(const iol__watchdog *w)
{
    return w && w->enabled;
}

void iol__watchdog_thread_enter(iol__watchdog *w)
{
    if (!iol__watchdog_enabled(w))
        return;
    STORE(w->log_to_stderr, iol__log_is_default());
    int err = bind_timer(w);
    if (err < 0) {
        /* A timer aimed at another thread would run the handler there. */
        if (w->has_timer)
            timer_delete(w->timer);
        w->has_timer = false;
        iol__log(IOL_LOG_ERROR, "watchdog disabled: timer_create failed: %s", strerror(-err));
    }
}

void iol__watchdog_thread_exit(iol__watchdog *w)
{
    iol__watchdog_iteration_end(w);
}

void iol__watchdog_iteration_begin(iol__watchdog *w)
{
    /* has_timer implies it signals this thread: thread_enter or a setter
     * called on the running loop's thread bound it. */
    if (!iol__watchdog_enabled(w) || !w->has_timer)
        return;
    long long now = now_ns();
    STORE(w->iteration_start, now);
    STORE(w->signal_fired, false);
    STORE(w->in_call, false);
    STORE(w->log_idle, false);
    atomic_signal_fence(memory_order_release); /* the iteration's state before active */
    STORE(w->active, true);
    rearm(w, now);
}

void iol__watchdog_iteration_end(iol__watchdog *w)
{
    if (!w || !LOAD(w->active))
        return;
    STORE(w->active, false);
    atomic_signal_fence(memory_order_seq_cst); /* a handler after this point does nothing */
    disarm(w);
}

void iol__watchdog_call_begin(iol__watchdog *w, const void *fn)
{
    if (!LOAD(w->active) || LOAD(w->log_ns) <= 0)
        return;
    long long now = now_ns();
    w->call_fn = fn;
    STORE(w->call_start, now);
    STORE(w->log_fired, false);
    STORE(w->log_written, false);
    STORE(w->nframes, 0);
    atomic_signal_fence(memory_order_release); /* call_start before in_call */
    STORE(w->in_call, true);
    /* A previous call of this iteration was caught and the timer left
     * unarmed for the log: arm it again (a rare syscall, only after a
     * slow call). */
    if (LOAD(w->log_idle)) {
        STORE(w->log_idle, false);
        rearm(w, now);
    }
}

/* "name (0x...)" from the dynamic symbol table, or the object and address. */
static void describe_function(const void *fn, char *buf, size_t size)
{
    Dl_info info;
    if (!dladdr(fn, &info))
        snprintf(buf, size, "%p", fn);
    else if (info.dli_sname)
        snprintf(buf, size, "%s (%p)", info.dli_sname, fn);
    else if (info.dli_fname)
        snprintf(buf, size, "%p in %s", fn, info.dli_fname);
    else
        snprintf(buf, size, "%p", fn);
}

/* The frames caught by the handler, one per line, or NULL. */
static char *format_frames(void *const *frames, int n)
{
    char **symbols = backtrace_symbols(frames, n);
    if (!symbols)
        return NULL;
    size_t len = 1;
    for (int i = 0; i < n; i++)
        len += strlen(symbols[i]) + 3;
    char *text = malloc(len);
    if (text) {
        char *p = text;
        for (int i = 0; i < n; i++)
            p += sprintf(p, "\n  %s", symbols[i]);
        *p = '\0';
    }
    free(symbols);
    return text;
}

void iol__watchdog_call_end(iol__watchdog *w)
{
    if (!LOAD(w->in_call))
        return;
    STORE(w->in_call, false);
    atomic_signal_fence(memory_order_acquire); /* the handler no longer writes frames */
    long long elapsed = now_ns() - LOAD(w->call_start);
    long long log = LOAD(w->log_ns);
    if (log <= 0 || elapsed < log)
        return;
    char name[512];
    describe_function(w->call_fn, name, sizeof name);
    char *trace = NULL;
    if (LOAD(w->log_fired) && !LOAD(w->log_written))
        trace = format_frames(w->frames, LOAD(w->nframes));
    iol__log(IOL_LOG_WARNING, "blocked for %.3f s in %s%s%s", (double)elapsed * 1e-9, name,
             trace ? "; backtrace while it ran:" : "", trace ? trace : "");
    free(trace);
}
