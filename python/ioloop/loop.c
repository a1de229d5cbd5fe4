/* ioloop._ioloop.CoreLoop: the native half of ioloop.Loop.
 *
 * What is native: the ready queue, call_soon / call_later / call_at /
 * call_soon_threadsafe, the run loop (iol_loop_run_once), fd readiness
 * (add_reader / add_writer on iol_loop_add_handler), signals
 * (iol_loop_add_signal) and close. ioloop.Loop (ioloop/__init__.py) puts
 * asyncio.BaseEventLoop's orchestration (servers, connections, executor,
 * exception handler, tasks) on top; it reaches the loop only through the
 * methods defined here.
 *
 * Ownership (every PyObject a library callback can see):
 *  - a TimerHandle registered with iol_loop_call_at: one reference owned
 *    by the registration (h->scheduled == 1, on the core's timer list);
 *    it moves to the pending array when the timeout fires, then to the
 *    ready queue; iol_loop_remove_timeout (cancel, close) drops it.
 *  - a Handle posted with iol_loop_add_callback (call_soon_threadsafe):
 *    one reference owned by the queue node; it moves to pending when the
 *    node runs, then to ready. Close runs the loop once without waiting
 *    first, so every node posted before close is taken back.
 *  - fd handlers: the library's arg is an fd_record (plain C, owned by
 *    core->fds); the record owns one reference to each of its reader and
 *    writer Handles.
 *  - signals: the library's arg is the core itself (borrowed: the
 *    registration ends before the core dies); core->signals (a dict)
 *    owns the Handles.
 *  - the ready queue owns one reference per entry.
 */
#include "_ioloop.h"
#include <errno.h>
#include <math.h>
#include <pythread.h>
#include <stdlib.h>
#include <structmember.h>
#include <time.h>

enum { PENDING_HANDLE, PENDING_FD, PENDING_SIGNAL };

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
    fd_record **fds;
    int nfds;
    PyObject *signals;      /* dict: signal number -> Handle */
    HandleObject *timers;   /* scheduled TimerHandles (each holds the registration's ref) */
    int closed, stopping, debug, running;
    unsigned long thread_ident;
    double slow_callback_duration;
    PyObject *weakreflist;
    PyObject *dict;
};

static PyTypeObject Core_Type;

int core_is_debug(CoreObject *c)
{
    return c->debug;
}

/* ------------------------------------------------------------ helpers */

static int check_closed(CoreObject *c)
{
    if (c->closed || !c->loop) {
        PyErr_SetString(PyExc_RuntimeError, "Event loop is closed");
        return -1;
    }
    return 0;
}

/* Calls that touch the library's loop state (timers, fd handlers,
 * signals) come from the loop's thread while it runs: the library runs
 * parts of an iteration without the GIL, so another thread's call would
 * race with it (asyncio only checks this in debug mode; for us it is
 * memory safety). */
static int check_thread(CoreObject *c)
{
    if (c->running && PyThread_get_thread_ident() != c->thread_ident) {
        PyErr_SetString(PyExc_RuntimeError,
                        "Non-thread-safe operation invoked on an event loop other than the current one");
        return -1;
    }
    return 0;
}

static PyObject *set_errno_error(int err)
{
    errno = -err;
    return PyErr_SetFromErrno(PyExc_OSError);
}

static int ready_push(CoreObject *c, HandleObject *h) /* steals h */
{
    if (c->ready_len == c->ready_cap) {
        size_t cap = c->ready_cap ? c->ready_cap * 2 : 64;
        HandleObject **n = PyMem_Malloc(cap * sizeof *n);
        if (!n) {
            Py_DECREF(h);
            PyErr_NoMemory();
            return -1;
        }
        for (size_t i = 0; i < c->ready_len; i++)
            n[i] = c->ready[(c->ready_head + i) & (c->ready_cap - 1)];
        PyMem_Free(c->ready);
        c->ready = n;
        c->ready_head = 0;
        c->ready_cap = cap;
    }
    c->ready[(c->ready_head + c->ready_len) & (c->ready_cap - 1)] = h;
    c->ready_len++;
    return 0;
}

static HandleObject *ready_pop(CoreObject *c) /* new ref to caller */
{
    HandleObject *h = c->ready[c->ready_head];
    c->ready_head = (c->ready_head + 1) & (c->ready_cap - 1);
    c->ready_len--;
    return h;
}

/* Library callbacks: no Python here (see _ioloop.h). malloc, not
 * PyMem_*, since the GIL may not be held. */
static void pending_push(CoreObject *c, int kind, void *ptr, unsigned events)
{
    if (c->pending_len == c->pending_cap) {
        size_t cap = c->pending_cap ? c->pending_cap * 2 : 64;
        pending_entry *n = realloc(c->pending, cap * sizeof *n);
        if (!n) {
            c->pending_lost++;
            return;
        }
        c->pending = n;
        c->pending_cap = cap;
    }
    c->pending[c->pending_len++] = (pending_entry){ .kind = kind, .events = events, .ptr = ptr };
}

static void handle_fired(void *arg) /* a timeout or a posted callback */
{
    HandleObject *h = arg;
    pending_push(h->loop, PENDING_HANDLE, h, 0);
}

static void fd_fired(int fd, unsigned events, void *arg)
{
    (void)fd;
    fd_record *r = arg;
    pending_push(r->core, PENDING_FD, r, events);
}

static void signal_fired(int signo, void *arg)
{
    pending_push((CoreObject *)arg, PENDING_SIGNAL, (void *)(intptr_t)signo, 0);
}

static void nothing(void *arg)
{
    (void)arg;
}

/* Prepare hook (before the poll of every run_once, loop thread, maybe
 * without the GIL): timeouts and posted callbacks taken earlier in this
 * iteration wait in `pending`; the poll must not sleep on them. A queued
 * no-op callback makes it not wait (the hook documented way). */
static void before_poll(void *arg)
{
    CoreObject *c = arg;
    if (c->pending_len)
        iol_loop_add_callback(c->loop, nothing, NULL);
}

static void timer_unlink(CoreObject *c, HandleObject *h)
{
    if (h->tprev)
        h->tprev->tnext = h->tnext;
    else
        c->timers = h->tnext;
    if (h->tnext)
        h->tnext->tprev = h->tprev;
    h->tprev = h->tnext = NULL;
    h->scheduled = 0;
}

/* With the GIL, right after run_once: pending entries become ready
 * handles in asyncio's order (posts were on the ready queue already, then
 * I/O, then due timers), whatever order the library's phases produced
 * them in (posts, timers, I/O). */
static void drain_pending(CoreObject *c)
{
    for (int pass = 0; pass < 3; pass++) {
        for (size_t i = 0; i < c->pending_len; i++) {
            pending_entry *e = &c->pending[i];
            if (e->kind == PENDING_HANDLE) {
                HandleObject *h = e->ptr;
                int timer = Py_IS_TYPE(h, &TimerHandle_Type);
                if (pass != (timer ? 2 : 0))
                    continue;
                if (h->scheduled)
                    timer_unlink(c, h);
                ready_push(c, h); /* the registration's / node's reference moves to ready */
            } else if (pass != 1) {
                continue;
            } else if (e->kind == PENDING_FD) {
                fd_record *r = e->ptr;
                if ((e->events & (IOL_READ | IOL_ERROR)) && r->reader && !r->reader->cancelled)
                    ready_push(c, (HandleObject *)Py_NewRef((PyObject *)r->reader));
                if ((e->events & (IOL_WRITE | IOL_ERROR)) && r->writer && !r->writer->cancelled)
                    ready_push(c, (HandleObject *)Py_NewRef((PyObject *)r->writer));
            } else {
                PyObject *key = PyLong_FromLong((long)(intptr_t)e->ptr);
                PyObject *h = key ? PyDict_GetItemWithError(c->signals, key) : NULL; /* borrowed */
                Py_XDECREF(key);
                if (h)
                    ready_push(c, (HandleObject *)Py_NewRef(h));
            }
        }
    }
    c->pending_len = 0;
    if (PyErr_Occurred())
        PyErr_WriteUnraisable((PyObject *)c);
}

/* ------------------------------------------------------------ lifecycle */

static PyObject *core_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    (void)args;
    (void)kwds;
    CoreObject *c = (CoreObject *)type->tp_alloc(type, 0);
    if (!c)
        return NULL;
    c->slow_callback_duration = 0.1;
    c->signals = PyDict_New();
    if (!c->signals) {
        Py_DECREF(c);
        return NULL;
    }
    iol_loop_config cfg = { .make_current = IOL_CURRENT_NEVER };
    int err = iol_loop_new(&c->loop, &cfg);
    if (err < 0) {
        c->loop = NULL;
        Py_DECREF(c);
        return set_errno_error(err);
    }
    if ((err = iol_loop_add_prepare(c->loop, before_poll, c)) < 0) {
        Py_DECREF(c);
        return set_errno_error(err);
    }
    return (PyObject *)c;
}

/* Drops every reference the core holds for the library and closes the
 * library loop. Safe to call twice. */
static void core_shutdown(CoreObject *c)
{
    if (!c->loop)
        return;
    /* Take back what the library holds, then close it: nothing it drops
     * can then hold a reference. Collected first, released last, since a
     * DECREF can run arbitrary code (which finds the loop closed). */
    PyObject *garbage = PyList_New(0);
    for (int fd = 0; fd < c->nfds; fd++) {
        fd_record *r = c->fds[fd];
        if (!r)
            continue;
        iol_loop_remove_handler(c->loop, fd);
        if (r->reader && garbage)
            PyList_Append(garbage, (PyObject *)r->reader);
        if (r->writer && garbage)
            PyList_Append(garbage, (PyObject *)r->writer);
        Py_XDECREF(r->reader);
        Py_XDECREF(r->writer);
        free(r);
        c->fds[fd] = NULL;
    }
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(c->signals, &pos, &key, &value))
        iol_loop_remove_signal(c->loop, (int)PyLong_AsLong(key), signal_fired, c);
    while (c->timers) {
        HandleObject *h = c->timers;
        iol_loop_remove_timeout(c->loop, h->tid);
        timer_unlink(c, h);
        if (garbage)
            PyList_Append(garbage, (PyObject *)h);
        Py_DECREF(h); /* the registration's */
    }
    /* Posted callbacks (call_soon_threadsafe) still queued: one iteration
     * that does not wait hands them to pending; drop them from there. */
    iol_loop_run_once(c->loop, 0);
    for (size_t i = 0; i < c->pending_len; i++) {
        if (c->pending[i].kind == PENDING_HANDLE) {
            HandleObject *h = c->pending[i].ptr;
            if (garbage)
                PyList_Append(garbage, (PyObject *)h);
            Py_DECREF(h);
        }
    }
    c->pending_len = 0;
    iol_loop_close(c->loop, false);
    c->loop = NULL;
    while (c->ready_len) {
        HandleObject *h = ready_pop(c);
        if (garbage)
            PyList_Append(garbage, (PyObject *)h);
        Py_DECREF(h);
    }
    PyDict_Clear(c->signals);
    if (PyErr_Occurred())
        PyErr_WriteUnraisable((PyObject *)c);
    Py_XDECREF(garbage);
}

static int core_traverse(CoreObject *c, visitproc visit, void *arg)
{
    Py_VISIT(c->signals);
    Py_VISIT(c->dict);
    for (size_t i = 0; i < c->ready_len; i++)
        Py_VISIT((PyObject *)c->ready[(c->ready_head + i) & (c->ready_cap - 1)]);
    for (int fd = 0; fd < c->nfds; fd++) {
        if (c->fds[fd]) {
            Py_VISIT((PyObject *)c->fds[fd]->reader);
            Py_VISIT((PyObject *)c->fds[fd]->writer);
        }
    }
    for (HandleObject *h = c->timers; h; h = h->tnext)
        Py_VISIT((PyObject *)h);
    return 0;
}

static int core_clear(CoreObject *c)
{
    if (!c->running)
        core_shutdown(c);
    Py_CLEAR(c->dict);
    return 0;
}

static void core_dealloc(CoreObject *c)
{
    PyTypeObject *tp = Py_TYPE(c);
    PyObject_GC_UnTrack(c);
    if (c->weakreflist)
        PyObject_ClearWeakRefs((PyObject *)c);
    core_shutdown(c);
    Py_CLEAR(c->signals);
    Py_CLEAR(c->dict);
    PyMem_Free(c->ready);
    free(c->pending);
    free(c->fds);
    tp->tp_free((PyObject *)c); /* a heap subtype's reference is subtype_dealloc's to drop */
}

/* ------------------------------------------------------------ scheduling */

static PyObject *core_time(CoreObject *c, PyObject *Py_UNUSED(ignored))
{
    (void)c;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* the library's clock, and time.monotonic()'s */
    return PyFloat_FromDouble((double)ts.tv_sec + (double)ts.tv_nsec * 1e-9);
}

/* Parses (callback, *args, context=None) from a fastcall vector. */
static int parse_callback(const char *name, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                          PyObject **callback, PyObject **cbargs, PyObject **context)
{
    *context = NULL;
    if (kwnames) {
        Py_ssize_t nk = PyTuple_GET_SIZE(kwnames);
        for (Py_ssize_t i = 0; i < nk; i++) {
            PyObject *k = PyTuple_GET_ITEM(kwnames, i);
            if (!PyUnicode_Check(k) || PyUnicode_CompareWithASCIIString(k, "context") != 0) {
                PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument %R", name, k);
                return -1;
            }
            *context = args[nargs + i];
        }
    }
    if (nargs < 1) {
        PyErr_Format(PyExc_TypeError, "%s() missing required argument 'callback'", name);
        return -1;
    }
    *callback = args[0];
    *cbargs = PyTuple_New(nargs - 1);
    if (!*cbargs)
        return -1;
    for (Py_ssize_t i = 1; i < nargs; i++)
        PyTuple_SET_ITEM(*cbargs, i - 1, Py_NewRef(args[i]));
    return 0;
}

static int debug_checks(CoreObject *c, PyObject *callback, const char *method, int thread)
{
    if (!c->debug)
        return 0;
    if (thread) {
        PyObject *r = PyObject_CallMethod((PyObject *)c, "_check_thread", NULL);
        if (!r)
            return -1;
        Py_DECREF(r);
    }
    PyObject *r = PyObject_CallMethod((PyObject *)c, "_check_callback", "Os", callback, method);
    if (!r)
        return -1;
    Py_DECREF(r);
    return 0;
}

static PyObject *core_call_soon(CoreObject *c, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *callback, *cbargs, *context;
    if (check_closed(c) < 0)
        return NULL;
    if (parse_callback("call_soon", args, nargs, kwnames, &callback, &cbargs, &context) < 0)
        return NULL;
    if (debug_checks(c, callback, "call_soon", 1) < 0) {
        Py_DECREF(cbargs);
        return NULL;
    }
    HandleObject *h = handle_new(c, callback, cbargs, context, 0);
    Py_DECREF(cbargs);
    if (!h)
        return NULL;
    if (ready_push(c, (HandleObject *)Py_NewRef((PyObject *)h)) < 0) { /* the ready queue's reference */
        Py_DECREF(h);
        return NULL;
    }
    return (PyObject *)h;
}

int core_soon(CoreObject *c, PyObject *callback, PyObject *args)
{
    if (check_closed(c) < 0)
        return -1;
    HandleObject *h = handle_new(c, callback, args, NULL, 0);
    if (!h)
        return -1;
    return ready_push(c, h); /* the ready queue's reference */
}

static PyObject *schedule_at(CoreObject *c, double when, const char *name, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames)
{
    PyObject *callback, *cbargs, *context;
    if (check_closed(c) < 0 || check_thread(c) < 0)
        return NULL;
    if (parse_callback(name, args, nargs, kwnames, &callback, &cbargs, &context) < 0)
        return NULL;
    if (debug_checks(c, callback, name, 1) < 0) {
        Py_DECREF(cbargs);
        return NULL;
    }
    HandleObject *h = handle_new(c, callback, cbargs, context, 1);
    Py_DECREF(cbargs);
    if (!h)
        return NULL;
    h->when = when;
    int err = iol_loop_call_at(c->loop, when, handle_fired, h, &h->tid);
    if (err < 0) {
        Py_DECREF(h);
        return set_errno_error(err);
    }
    Py_INCREF(h); /* the registration's reference */
    h->scheduled = 1;
    h->tprev = NULL;
    h->tnext = c->timers;
    if (c->timers)
        c->timers->tprev = h;
    c->timers = h;
    return (PyObject *)h;
}

static int as_time(PyObject *o, double *out, const char *what)
{
    if (!PyNumber_Check(o) || PyComplex_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s must be a number, not %.100s", what, Py_TYPE(o)->tp_name);
        return -1;
    }
    *out = PyFloat_AsDouble(o);
    if (*out == -1.0 && PyErr_Occurred())
        return -1;
    if (isnan(*out)) {
        PyErr_Format(PyExc_ValueError, "%s is NaN", what);
        return -1;
    }
    return 0;
}

static PyObject *core_call_at(CoreObject *c, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    double when;
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError, "call_at() missing required argument 'when'");
        return NULL;
    }
    if (as_time(args[0], &when, "when") < 0)
        return NULL;
    return schedule_at(c, when, "call_at", args + 1, nargs - 1, kwnames);
}

static PyObject *core_call_later(CoreObject *c, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    double delay;
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError, "call_later() missing required argument 'delay'");
        return NULL;
    }
    if (args[0] == Py_None) {
        PyErr_SetString(PyExc_TypeError, "delay must not be None");
        return NULL;
    }
    if (as_time(args[0], &delay, "delay") < 0)
        return NULL;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    double now = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
    /* A negative delay is "now" in asyncio; the library refuses one. */
    return schedule_at(c, now + (delay > 0 ? delay : 0), "call_later", args + 1, nargs - 1, kwnames);
}

/* Any thread: the library's lock-free post and waker; no lock here and
 * no wakeup unless the loop sleeps (or is about to). */
static PyObject *core_call_soon_threadsafe(CoreObject *c, PyObject *const *args, Py_ssize_t nargs,
                                           PyObject *kwnames)
{
    PyObject *callback, *cbargs, *context;
    if (check_closed(c) < 0)
        return NULL;
    if (parse_callback("call_soon_threadsafe", args, nargs, kwnames, &callback, &cbargs, &context) < 0)
        return NULL;
    if (debug_checks(c, callback, "call_soon_threadsafe", 0) < 0) {
        Py_DECREF(cbargs);
        return NULL;
    }
    HandleObject *h = handle_new(c, callback, cbargs, context, 0);
    Py_DECREF(cbargs);
    if (!h)
        return NULL;
    Py_INCREF(h); /* the queue node's reference (see the top of this file) */
    int err = iol_loop_add_callback(c->loop, handle_fired, h);
    if (err < 0) {
        Py_DECREF(h);
        Py_DECREF(h);
        if (err == -ESHUTDOWN) {
            PyErr_SetString(PyExc_RuntimeError, "Event loop is closed");
            return NULL;
        }
        return set_errno_error(err);
    }
    return (PyObject *)h;
}

void core_timer_cancelled(CoreObject *c, HandleObject *h)
{
    if (!h->scheduled || !c->loop)
        return;
    /* From another thread while the loop runs, the library refuses
     * (-EPERM): the timeout then fires and the cancelled handle is
     * skipped. */
    if (c->running && PyThread_get_thread_ident() != c->thread_ident)
        return;
    if (iol_loop_remove_timeout(c->loop, h->tid) == 0) {
        timer_unlink(c, h);
        Py_DECREF(h); /* the registration's; the caller holds its own */
    }
}

/* ------------------------------------------------------------ running */

static double now_monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Runs the handles that were ready when it started (asyncio's _run_once).
 * -1 with SystemExit/KeyboardInterrupt set. */
static int run_ready(CoreObject *c)
{
    size_t ntodo = c->ready_len;
    for (size_t i = 0; i < ntodo && c->ready_len; i++) {
        HandleObject *h = ready_pop(c); /* the queue's reference, now ours */
        if (h->cancelled) {
            Py_DECREF(h);
            continue;
        }
        int r;
        if (c->debug) {
            PyObject_SetAttrString((PyObject *)c, "_current_handle", (PyObject *)h);
            double t0 = now_monotonic();
            r = handle_run(h);
            double dt = now_monotonic() - t0;
            if (r == 0 && dt >= c->slow_callback_duration) {
                PyObject *x = PyObject_CallMethod((PyObject *)c, "_log_slow_callback", "Od", (PyObject *)h, dt);
                if (!x)
                    PyErr_WriteUnraisable((PyObject *)c);
                Py_XDECREF(x);
            }
            if (r == 0)
                PyObject_SetAttrString((PyObject *)c, "_current_handle", Py_None);
        } else {
            r = handle_run(h);
        }
        Py_DECREF(h);
        if (r < 0)
            return -1;
    }
    return 0;
}

static PyObject *core_run_forever_native(CoreObject *c, PyObject *Py_UNUSED(ignored))
{
    if (check_closed(c) < 0)
        return NULL;
    if (c->running) {
        PyErr_SetString(PyExc_RuntimeError, "This event loop is already running");
        return NULL;
    }
    c->running = 1;
    c->thread_ident = PyThread_get_thread_ident();
    PyObject *ret = NULL;
    for (;;) {
        int r;
        if (c->ready_len || c->stopping) {
            r = iol_loop_run_once(c->loop, 0);
        } else {
            /* The only place the GIL is released: the loop is about to
             * sleep (run_once's callbacks take no Python object). */
            Py_BEGIN_ALLOW_THREADS
            r = iol_loop_run_once(c->loop, -1);
            Py_END_ALLOW_THREADS
        }
        drain_pending(c);
        if (r < 0) {
            set_errno_error(r);
            break;
        }
        /* A signal that interrupted the poll: Python's handlers run now
         * (KeyboardInterrupt ends the run, as in asyncio). */
        if (PyErr_CheckSignals() < 0)
            break;
        if (run_ready(c) < 0)
            break;
        if (c->stopping) {
            ret = Py_NewRef(Py_None);
            break;
        }
    }
    c->stopping = 0;
    c->running = 0;
    return ret;
}

static PyObject *core_close_native(CoreObject *c, PyObject *Py_UNUSED(ignored))
{
    if (c->running) {
        PyErr_SetString(PyExc_RuntimeError, "Cannot close a running event loop");
        return NULL;
    }
    c->closed = 1;
    core_shutdown(c);
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------ fds */

static fd_record *record_of(CoreObject *c, int fd)
{
    return fd < c->nfds ? c->fds[fd] : NULL;
}

static PyObject *fd_add_impl(CoreObject *c, int fd, HandleObject *h, int write);

static PyObject *fd_add(CoreObject *c, PyObject *const *args, Py_ssize_t nargs, int write)
{
    if (nargs < 2) {
        PyErr_SetString(PyExc_TypeError, "expected fd and callback");
        return NULL;
    }
    if (check_closed(c) < 0 || check_thread(c) < 0)
        return NULL;
    int fd = PyObject_AsFileDescriptor(args[0]);
    if (fd < 0)
        return NULL;
    PyObject *cbargs = PyTuple_New(nargs - 2);
    if (!cbargs)
        return NULL;
    for (Py_ssize_t i = 2; i < nargs; i++)
        PyTuple_SET_ITEM(cbargs, i - 2, Py_NewRef(args[i]));
    HandleObject *h = handle_new(c, args[1], cbargs, NULL, 0);
    Py_DECREF(cbargs);
    if (!h)
        return NULL;
    return fd_add_impl(c, fd, h, write);
}

PyObject *core_watch_fd(CoreObject *c, int fd, int write, PyObject *callback)
{
    if (check_closed(c) < 0 || check_thread(c) < 0)
        return NULL;
    PyObject *noargs = PyTuple_New(0);
    if (!noargs)
        return NULL;
    HandleObject *h = handle_new(c, callback, noargs, NULL, 0);
    Py_DECREF(noargs);
    if (!h)
        return NULL;
    return fd_add_impl(c, fd, h, write);
}

/* Steals h; returns it (a new reference) or NULL. */
static PyObject *fd_add_impl(CoreObject *c, int fd, HandleObject *h, int write)
{
    unsigned bit = write ? IOL_WRITE : IOL_READ;
    fd_record *r = record_of(c, fd);
    int err;
    if (!r) {
        if (fd >= c->nfds) {
            int n = c->nfds ? c->nfds : 64;
            while (n <= fd)
                n *= 2;
            fd_record **t = realloc(c->fds, (size_t)n * sizeof *t);
            if (!t) {
                Py_DECREF(h);
                return PyErr_NoMemory();
            }
            for (int i = c->nfds; i < n; i++)
                t[i] = NULL;
            c->fds = t;
            c->nfds = n;
        }
        r = calloc(1, sizeof *r);
        if (!r) {
            Py_DECREF(h);
            return PyErr_NoMemory();
        }
        r->core = c;
        r->fd = fd;
        if ((err = iol_loop_add_handler(c->loop, fd, bit, fd_fired, r)) < 0) {
            free(r);
            Py_DECREF(h);
            return set_errno_error(err);
        }
        r->events = bit;
        c->fds[fd] = r;
    } else if (!(r->events & bit)) {
        err = iol_loop_update_handler(c->loop, fd, r->events | bit);
        if (err == -ENOENT || err == -EBADF) {
            /* The fd was closed and its number reused without a remove:
             * the poller forgot it; register the new file afresh. */
            iol_loop_remove_handler(c->loop, fd);
            err = iol_loop_add_handler(c->loop, fd, r->events | bit, fd_fired, r);
        }
        if (err < 0) {
            Py_DECREF(h);
            return set_errno_error(err);
        }
        r->events |= bit;
    }
    HandleObject **slot = write ? &r->writer : &r->reader;
    HandleObject *old = *slot;
    *slot = (HandleObject *)Py_NewRef((PyObject *)h); /* the record's reference */
    if (old) {
        PyObject *x = PyObject_CallMethod((PyObject *)old, "cancel", NULL);
        Py_XDECREF(x);
        Py_DECREF(old);
        if (!x) {
            Py_DECREF(h);
            return NULL;
        }
    }
    return (PyObject *)h;
}

/* 1 removed, 0 nothing to remove, -1 error. */
int core_unwatch_fd(CoreObject *c, int fd, int write)
{
    if (c->closed || !c->loop)
        return 0;
    if (check_thread(c) < 0)
        return -1;
    fd_record *r = record_of(c, fd);
    HandleObject **slot = r ? (write ? &r->writer : &r->reader) : NULL;
    if (!slot || !*slot)
        return 0;
    unsigned bit = write ? IOL_WRITE : IOL_READ;
    unsigned events = r->events & ~bit;
    if (events == 0) {
        iol_loop_remove_handler(c->loop, fd); /* an fd closed meanwhile is gone already */
        c->fds[fd] = NULL;
    } else {
        int err = iol_loop_update_handler(c->loop, fd, events);
        if (err < 0 && err != -ENOENT && err != -EBADF) {
            set_errno_error(err);
            return -1;
        }
        r->events = events;
    }
    HandleObject *h = *slot;
    *slot = NULL;
    if (events == 0)
        free(r);
    PyObject *x = PyObject_CallMethod((PyObject *)h, "cancel", NULL);
    Py_DECREF(h); /* the record's reference */
    if (!x)
        return -1;
    Py_DECREF(x);
    return 1;
}

static PyObject *fd_remove(CoreObject *c, PyObject *arg, int write)
{
    if (c->closed || !c->loop)
        Py_RETURN_FALSE;
    int fd = PyObject_AsFileDescriptor(arg);
    if (fd < 0)
        return NULL;
    int r = core_unwatch_fd(c, fd, write);
    if (r < 0)
        return NULL;
    return PyBool_FromLong(r);
}

static PyObject *core_add_reader(CoreObject *c, PyObject *const *args, Py_ssize_t nargs)
{
    return fd_add(c, args, nargs, 0);
}
static PyObject *core_add_writer(CoreObject *c, PyObject *const *args, Py_ssize_t nargs)
{
    return fd_add(c, args, nargs, 1);
}
static PyObject *core_remove_reader(CoreObject *c, PyObject *fd)
{
    return fd_remove(c, fd, 0);
}
static PyObject *core_remove_writer(CoreObject *c, PyObject *fd)
{
    return fd_remove(c, fd, 1);
}

/* (reader handle or None, writer handle or None) for fd. */
static PyObject *core_fd_handles(CoreObject *c, PyObject *arg)
{
    int fd = PyObject_AsFileDescriptor(arg);
    if (fd < 0)
        return NULL;
    fd_record *r = c->loop ? record_of(c, fd) : NULL;
    return Py_BuildValue("(OO)", r && r->reader ? (PyObject *)r->reader : Py_None,
                         r && r->writer ? (PyObject *)r->writer : Py_None);
}

/* _new_handle(callback, *args): a Handle that is not scheduled (signals). */
static PyObject *core_new_handle(CoreObject *c, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *callback, *cbargs, *context;
    if (parse_callback("_new_handle", args, nargs, kwnames, &callback, &cbargs, &context) < 0)
        return NULL;
    HandleObject *h = handle_new(c, callback, cbargs, context, 0);
    Py_DECREF(cbargs);
    return (PyObject *)h;
}

/* ------------------------------------------------------------ signals */

/* _add_signal(signo, handle): handle runs on the loop for each delivery.
 * The checks asyncio makes (main thread, valid number) are in Python. */
static PyObject *core_add_signal(CoreObject *c, PyObject *args)
{
    int signo;
    PyObject *h;
    if (!PyArg_ParseTuple(args, "iO!", &signo, &Handle_Type, &h))
        return NULL;
    if (check_closed(c) < 0 || check_thread(c) < 0)
        return NULL;
    PyObject *key = PyLong_FromLong(signo);
    if (!key)
        return NULL;
    int had = PyDict_Contains(c->signals, key);
    if (had == 0) {
        int err = iol_loop_add_signal(c->loop, signo, signal_fired, c);
        if (err < 0) {
            Py_DECREF(key);
            if (err == -EINVAL)
                return PyErr_Format(PyExc_RuntimeError, "sig %d cannot be caught", signo);
            if (err == -EBUSY)
                return PyErr_Format(PyExc_RuntimeError, "sig %d is handled by another ioloop.Loop", signo);
            return set_errno_error(err);
        }
    }
    int r = had < 0 ? -1 : PyDict_SetItem(c->signals, key, h);
    Py_DECREF(key);
    if (r < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *core_remove_signal(CoreObject *c, PyObject *arg)
{
    int signo = PyLong_AsLong(arg);
    if (signo == -1 && PyErr_Occurred())
        return NULL;
    if (!c->loop)
        Py_RETURN_FALSE;
    if (check_thread(c) < 0)
        return NULL;
    PyObject *h = PyDict_GetItemWithError(c->signals, arg);
    if (!h) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_FALSE;
    }
    iol_loop_remove_signal(c->loop, signo, signal_fired, c);
    Py_INCREF(h);
    if (PyDict_DelItem(c->signals, arg) < 0) {
        Py_DECREF(h);
        return NULL;
    }
    PyObject *x = PyObject_CallMethod(h, "cancel", NULL);
    Py_DECREF(h);
    if (!x)
        return NULL;
    Py_DECREF(x);
    Py_RETURN_TRUE;
}

/* _stats(): the library loop's counters (iol_loop_get_stats), for tests
 * and benches: iterations, wakeups, callbacks_remote, timeouts... */
static PyObject *core_stats(CoreObject *c, PyObject *Py_UNUSED(ignored))
{
    if (check_closed(c) < 0)
        return NULL;
    iol_loop_stats st;
    int err = iol_loop_get_stats(c->loop, &st, sizeof st);
    if (err < 0)
        return set_errno_error(err);
    return Py_BuildValue("{s:K,s:K,s:K,s:K,s:K,s:K,s:K}", "iterations", (unsigned long long)st.iterations,
                         "wakeups", (unsigned long long)st.wakeups, "callbacks_self",
                         (unsigned long long)st.callbacks_self, "callbacks_remote",
                         (unsigned long long)st.callbacks_remote, "timeouts", (unsigned long long)st.timeouts,
                         "handlers", (unsigned long long)st.handlers, "signals", (unsigned long long)st.signals);
}

/* ------------------------------------------------------------ attributes */

static PyObject *get_flag(CoreObject *c, void *which)
{
    int *f = (int *)((char *)c + (size_t)which);
    return PyBool_FromLong(*f);
}

static int set_flag(CoreObject *c, PyObject *v, void *which)
{
    if (!v) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete");
        return -1;
    }
    int t = PyObject_IsTrue(v);
    if (t < 0)
        return -1;
    *(int *)((char *)c + (size_t)which) = t;
    return 0;
}

static PyObject *get_ready_count(CoreObject *c, void *x)
{
    (void)x;
    return PyLong_FromSize_t(c->ready_len);
}

static PyObject *get_poller(CoreObject *c, void *x)
{
    (void)x;
    const char *p = c->loop ? iol_loop_poller(c->loop) : NULL;
    if (!p)
        Py_RETURN_NONE;
    return PyUnicode_FromString(p);
}

static PyObject *get_timer_count(CoreObject *c, void *x)
{
    (void)x;
    size_t n = 0;
    for (HandleObject *h = c->timers; h; h = h->tnext)
        n++;
    return PyLong_FromSize_t(n);
}

static PyGetSetDef core_getset[] = {
    {"_closed", (getter)get_flag, (setter)set_flag, NULL, (void *)offsetof(CoreObject, closed)},
    {"_stopping", (getter)get_flag, (setter)set_flag, NULL, (void *)offsetof(CoreObject, stopping)},
    {"_debug", (getter)get_flag, (setter)set_flag, NULL, (void *)offsetof(CoreObject, debug)},
    {"_ready_count", (getter)get_ready_count, NULL, "handles waiting in the ready queue", NULL},
    {"_timer_count", (getter)get_timer_count, NULL, "timers registered with the library", NULL},
    {"_poller", (getter)get_poller, NULL, "the library's poller backend", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef core_members[] = {
    {"slow_callback_duration", T_DOUBLE, offsetof(CoreObject, slow_callback_duration), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyMethodDef core_methods[] = {
    {"time", (PyCFunction)core_time, METH_NOARGS, "The loop's clock (time.monotonic())."},
    {"call_soon", (PyCFunction)(void (*)(void))core_call_soon, METH_FASTCALL | METH_KEYWORDS, NULL},
    {"call_later", (PyCFunction)(void (*)(void))core_call_later, METH_FASTCALL | METH_KEYWORDS, NULL},
    {"call_at", (PyCFunction)(void (*)(void))core_call_at, METH_FASTCALL | METH_KEYWORDS, NULL},
    {"call_soon_threadsafe", (PyCFunction)(void (*)(void))core_call_soon_threadsafe, METH_FASTCALL | METH_KEYWORDS,
     NULL},
    {"_run_forever_native", (PyCFunction)core_run_forever_native, METH_NOARGS, NULL},
    {"_close_native", (PyCFunction)core_close_native, METH_NOARGS, NULL},
    {"_add_reader", (PyCFunction)(void (*)(void))core_add_reader, METH_FASTCALL, NULL},
    {"_add_writer", (PyCFunction)(void (*)(void))core_add_writer, METH_FASTCALL, NULL},
    {"_remove_reader", (PyCFunction)core_remove_reader, METH_O, NULL},
    {"_remove_writer", (PyCFunction)core_remove_writer, METH_O, NULL},
    {"_fd_handles", (PyCFunction)core_fd_handles, METH_O, NULL},
    {"_stats", (PyCFunction)core_stats, METH_NOARGS, NULL},
    {"_new_handle", (PyCFunction)(void (*)(void))core_new_handle, METH_FASTCALL | METH_KEYWORDS, NULL},
    {"_add_signal", (PyCFunction)core_add_signal, METH_VARARGS, NULL},
    {"_remove_signal", (PyCFunction)core_remove_signal, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject Core_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ioloop._ioloop.CoreLoop",
    .tp_basicsize = sizeof(CoreObject),
    .tp_dealloc = (destructor)core_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)core_traverse,
    .tp_clear = (inquiry)core_clear,
    .tp_weaklistoffset = offsetof(CoreObject, weakreflist),
    .tp_dictoffset = offsetof(CoreObject, dict),
    .tp_methods = core_methods,
    .tp_members = core_members,
    .tp_getset = core_getset,
    .tp_new = core_new,
    .tp_doc = "The native core of ioloop.Loop.",
};

int ioloop_init_loop_type(PyObject *module)
{
    if (PyType_Ready(&Core_Type) < 0)
        return -1;
    return PyModule_AddObjectRef(module, "CoreLoop", (PyObject *)&Core_Type);
}

int core_is_closed(CoreObject *c)
{
    return c->closed || !c->loop;
}

PyTypeObject *core_type(void)
{
    return &Core_Type;
}
