/* The native loop's state, shared by loop.c (scheduling, running,
 * lifecycle), fds.c (fd watches) and signals.c. Ownership rules: the top
 * of loop.c. */
#ifndef PY_IOLOOP_CORE_H
#define PY_IOLOOP_CORE_H

#include "_ioloop.h"

enum { PENDING_POST, PENDING_TIMER, PENDING_FD, PENDING_SIGNAL }; /* POST, TIMER: a HandleObject */

typedef struct {
    int kind;
    unsigned events;
    void *ptr; /* HandleObject * (a reference moved in), fd_record *, or the signal number */
} pending_entry;

typedef struct fd_record {
    CoreObject *core; /* borrowed: records die before the core */
    int fd;
    unsigned events;  /* IOL_READ / IOL_WRITE as registered with the library */
    HandleObject *reader, *writer; /* owned */
} fd_record;

struct CoreObject {
    PyObject_HEAD
    iol_loop *loop; /* NULL once closed */
    /* Ready queue: a ring of owned Handle references. GIL. */
    HandleObject **ready;
    size_t ready_head, ready_len, ready_cap;
    /* Filled by library callbacks on the loop's thread (maybe without
     * the GIL), emptied right after run_once by that same thread. */
    pending_entry *pending;
    size_t pending_len, pending_cap;
    size_t pending_lost; /* entries dropped for want of memory */
    int pending_mixed;   /* pending holds more than posts (drain_pending's fast path) */
    fd_record **fds;
    int nfds;
    PyObject *signals;      /* dict: signal number -> Handle */
    HandleObject *timers;   /* scheduled TimerHandles (each holds the registration's ref) */
    int closed, stopping, debug, running;
    unsigned long thread_ident;
    double slow_callback_duration;
    PyObject *weakreflist;
    PyObject *dict;
    /* core_context_snapshot's cache, one entry per producer thread slot
     * (GIL): a Context's variables live in an immutable mapping that a
     * ContextVar set replaces; while a thread's current Context holds
     * the same mapping as a snapshot taken earlier, one snapshot serves
     * every handle it schedules. Emptied after each iteration, so it pins
     * no variable's value for long. */
    struct ctx_cache {
        uint64_t ts_id;   /* PyThreadState.id of the thread that took it */
        PyObject *snap;   /* owned: a copy of its context, never entered nor handed out */
    } ctx_cache[4];
    int ctx_cache_used;
};


/* loop.c: shared helpers (GIL held unless said otherwise). */
int core_check_closed(CoreObject *c);            /* -1 with RuntimeError when closed */
int core_check_thread(CoreObject *c);            /* -1 with RuntimeError from a foreign thread while running */
PyObject *core_errno_error(int err);             /* OSError for -errno; returns NULL */
int core_ready_push(CoreObject *c, HandleObject *h); /* steals h */
/* Library callbacks, loop thread, maybe without the GIL. */
void core_pending_push(CoreObject *c, int kind, void *ptr, unsigned events);

/* fds.c */
PyObject *core_add_reader(CoreObject *c, PyObject *const *args, Py_ssize_t nargs);
PyObject *core_add_writer(CoreObject *c, PyObject *const *args, Py_ssize_t nargs);
PyObject *core_remove_reader(CoreObject *c, PyObject *fd);
PyObject *core_remove_writer(CoreObject *c, PyObject *fd);
PyObject *core_fd_handles(CoreObject *c, PyObject *fd);
void core_fd_ready(CoreObject *c, fd_record *r, unsigned events); /* a pending fd event joins ready */
void core_fds_shutdown(CoreObject *c, PyObject *garbage);        /* close: every watch removed */
int core_fds_traverse(CoreObject *c, visitproc visit, void *arg);

/* signals.c */
PyObject *core_add_signal(CoreObject *c, PyObject *args);
PyObject *core_remove_signal(CoreObject *c, PyObject *signo);
void core_signal_ready(CoreObject *c, int signo);               /* a pending delivery joins ready */
void core_signals_shutdown(CoreObject *c);                       /* close: every handler removed */

#endif
