/* ioloop._ioloop.CoreLoop: the native half of ioloop.Loop. This file:
 * scheduling, the run loop and the lifecycle; fd watches are in fds.c,
 * signals in signals.c, the shared state in core.h.
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
 *  - GC: a Handle made for the ready or post queue (call_soon,
 *    call_soon_threadsafe, transports' core_soon) is untracked while
 *    queued (it holds a shared context snapshot then, not a copy of its
 *    own: core_context_snapshot); the queue's reference is released with
 *    handle_release(), which tracks it if anyone else still holds the
 *    handle (handle.c). So a flood of queued handles costs the collector
 *    nothing. The price: an unclosed loop dropped with kept handles
 *    still queued is not collected (close it, as asyncio asks).
 */
#include "core.h"
#include <errno.h>
#include <math.h>
#include <pythread.h>
#include <stdlib.h>
#include <structmember.h>
#include <time.h>

static PyTypeObject Core_Type;

int core_is_debug(CoreObject *c)
{
    return c->debug;
}

/* ------------------------------------------------------------ helpers */

int core_check_closed(CoreObject *c)
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
int core_check_thread(CoreObject *c)
{
    if (c->running && PyThread_get_thread_ident() != c->thread_ident) {
        PyErr_SetString(PyExc_RuntimeError,
                        "Non-thread-safe operation invoked on an event loop other than the current one");
        return -1;
    }
    return 0;
}

PyObject *core_errno_error(int err)
{
    errno = -err;
    return PyErr_SetFromErrno(PyExc_OSError);
}

int core_ready_push(CoreObject *c, HandleObject *h) /* steals h */
{
    if (c->ready_len == c->ready_cap) {
        size_t cap = c->ready_cap ? c->ready_cap * 2 : 64;
        HandleObject **n = PyMem_Malloc(cap * sizeof *n);
        if (!n) {
            handle_release(h);
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
void core_pending_push(CoreObject *c, int kind, void *ptr, unsigned events)
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
    if (kind != PENDING_POST)
        c->pending_mixed = 1;
}

/* The core whose iol_loop_run_once runs on this thread (set around every
 * call): a posted callback finds its core without touching its Handle,
 * which a producer thread wrote last (one cache miss less per post). */
static _Thread_local CoreObject *running_core;

static int run_once(CoreObject *c, int timeout_ms)
{
    CoreObject *outer = running_core;
    running_core = c;
    int r = iol_loop_run_once(c->loop, timeout_ms);
    running_core = outer;
    return r;
}

static void timer_fired(void *arg)
{
    HandleObject *h = arg;
    core_pending_push(h->loop, PENDING_TIMER, h, 0);
}

static void post_fired(void *arg) /* call_soon_threadsafe's callback */
{
    CoreObject *c = running_core;
    core_pending_push(c ? c : ((HandleObject *)arg)->loop, PENDING_POST, arg, 0);
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
    int passes = c->pending_mixed ? 3 : 1; /* only posts: one pass */
    for (int pass = 0; pass < passes; pass++) {
        for (size_t i = 0; i < c->pending_len; i++) {
            pending_entry *e = &c->pending[i];
            switch (e->kind) {
            case PENDING_POST:
                if (pass == 0)
                    core_ready_push(c, e->ptr); /* the node's reference moves to ready */
                break;
            case PENDING_TIMER:
                if (pass == 2) {
                    HandleObject *h = e->ptr;
                    if (h->scheduled)
                        timer_unlink(c, h);
                    core_ready_push(c, h); /* the registration's reference moves to ready */
                }
                break;
            case PENDING_FD:
                if (pass == 1)
                    core_fd_ready(c, e->ptr, e->events);
                break;
            default:
                if (pass == 1)
                    core_signal_ready(c, (int)(intptr_t)e->ptr);
                break;
            }
        }
    }
    c->pending_len = 0;
    c->pending_mixed = 0;
    if (PyErr_Occurred())
        PyErr_WriteUnraisable((PyObject *)c);
}

/* ------------------------------------------------------------ contexts */

/* The layout of a Context (CPython's internal pycore_context.h, the same
 * from 3.7 to 3.13): only ctx_vars is read, to compare two contexts'
 * variable mappings (immutable; a ContextVar set replaces the pointer). */
#if PY_VERSION_HEX >= 0x03070000 && PY_VERSION_HEX < 0x030E0000
#define HAVE_CONTEXT_LAYOUT 1
typedef struct {
    PyObject_HEAD
    PyObject *ctx_prev;
    PyObject *ctx_vars;
    PyObject *ctx_weakreflist;
    int ctx_entered;
} context_layout;
#define CONTEXT_VARS(ctx) (((context_layout *)(ctx))->ctx_vars)
#endif

PyObject *core_context_snapshot(CoreObject *c)
{
#ifdef HAVE_CONTEXT_LAYOUT
    PyThreadState *ts = PyThreadState_Get();
    struct ctx_cache *e = &c->ctx_cache[ts->id & 3];
    /* snap's reference keeps its mapping alive: the pointer cannot be reused */
    if (e->snap && e->ts_id == ts->id && ts->context && CONTEXT_VARS(ts->context) == CONTEXT_VARS(e->snap))
        return Py_NewRef(e->snap);
    PyObject *snap = PyContext_CopyCurrent(); /* creates the thread's context if it had none */
    if (!snap)
        return NULL;
    PyObject *old = e->snap;
    e->ts_id = ts->id;
    e->snap = Py_NewRef(snap);
    c->ctx_cache_used = 1;
    Py_XDECREF(old); /* last: may run arbitrary code */
    return snap;
#else
    (void)c;
    return PyContext_CopyCurrent();
#endif
}

static void context_cache_clear(CoreObject *c)
{
    if (!c->ctx_cache_used)
        return;
    c->ctx_cache_used = 0;
    for (int i = 0; i < 4; i++) {
        PyObject *snap = c->ctx_cache[i].snap;
        c->ctx_cache[i].snap = NULL;
        Py_XDECREF(snap);
    }
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
        return core_errno_error(err);
    }
    if ((err = iol_loop_add_prepare(c->loop, before_poll, c)) < 0) {
        Py_DECREF(c);
        return core_errno_error(err);
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
    core_fds_shutdown(c, garbage);
    core_signals_shutdown(c);
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
    run_once(c, 0);
    for (size_t i = 0; i < c->pending_len; i++) {
        if (c->pending[i].kind == PENDING_POST || c->pending[i].kind == PENDING_TIMER) {
            HandleObject *h = c->pending[i].ptr;
            if (garbage)
                PyList_Append(garbage, (PyObject *)h);
            handle_release(h);
        }
    }
    c->pending_len = 0;
    c->pending_mixed = 0;
    iol_loop_close(c->loop, false);
    c->loop = NULL;
    while (c->ready_len) {
        HandleObject *h = ready_pop(c);
        if (garbage)
            PyList_Append(garbage, (PyObject *)h);
        handle_release(h);
    }
    PyDict_Clear(c->signals);
    context_cache_clear(c);
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
    int r = core_fds_traverse(c, visit, arg);
    if (r)
        return r;
    for (HandleObject *h = c->timers; h; h = h->tnext)
        Py_VISIT((PyObject *)h);
    for (int i = 0; i < 4; i++)
        Py_VISIT(c->ctx_cache[i].snap);
    return 0;
}

static int core_clear(CoreObject *c)
{
    if (!c->running)
        core_shutdown(c);
    context_cache_clear(c);
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
    context_cache_clear(c);
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

/* The handle of call_soon / call_at / call_soon_threadsafe: parses
 * (callback, *args, context=), makes debug mode's checks (thread: whether
 * the method belongs to the loop's thread), and builds the handle (a new
 * reference, or NULL with an exception set). */
static HandleObject *handle_from_args(CoreObject *c, const char *name, PyObject *const *args, Py_ssize_t nargs,
                                      PyObject *kwnames, int thread, int kind)
{
    PyObject *callback, *cbargs, *context;
    if (parse_callback(name, args, nargs, kwnames, &callback, &cbargs, &context) < 0)
        return NULL;
    if (debug_checks(c, callback, name, thread) < 0) {
        Py_DECREF(cbargs);
        return NULL;
    }
    HandleObject *h = handle_new(c, callback, cbargs, context, kind);
    Py_DECREF(cbargs);
    return h;
}

static PyObject *core_call_soon(CoreObject *c, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (core_check_closed(c) < 0)
        return NULL;
    HandleObject *h = handle_from_args(c, "call_soon", args, nargs, kwnames, 1, HANDLE_QUEUED);
    if (!h)
        return NULL;
    if (core_ready_push(c, (HandleObject *)Py_NewRef((PyObject *)h)) < 0) { /* the ready queue's reference */
        Py_DECREF(h);
        return NULL;
    }
    return (PyObject *)h;
}

int core_soon(CoreObject *c, PyObject *callback, PyObject *args)
{
    if (core_check_closed(c) < 0)
        return -1;
    HandleObject *h = handle_new(c, callback, args, NULL, HANDLE_QUEUED);
    if (!h)
        return -1;
    return core_ready_push(c, h); /* the ready queue's reference */
}

static PyObject *schedule_at(CoreObject *c, double when, const char *name, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames)
{
    if (core_check_closed(c) < 0 || core_check_thread(c) < 0)
        return NULL;
    HandleObject *h = handle_from_args(c, name, args, nargs, kwnames, 1, HANDLE_TIMER);
    if (!h)
        return NULL;
    h->when = when;
    int err = iol_loop_call_at(c->loop, when, timer_fired, h, &h->tid);
    if (err < 0) {
        Py_DECREF(h);
        return core_errno_error(err);
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
    if (core_check_closed(c) < 0)
        return NULL;
    HandleObject *h = handle_from_args(c, "call_soon_threadsafe", args, nargs, kwnames, 0, HANDLE_QUEUED);
    if (!h)
        return NULL;
    Py_INCREF(h); /* the queue node's reference (see the top of this file) */
    int err = iol_loop_add_callback(c->loop, post_fired, h);
    if (err < 0) {
        Py_DECREF(h);
        Py_DECREF(h);
        if (err == -ESHUTDOWN) {
            PyErr_SetString(PyExc_RuntimeError, "Event loop is closed");
            return NULL;
        }
        return core_errno_error(err);
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
            handle_release(h);
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
        handle_release(h);
        if (r < 0)
            return -1;
    }
    return 0;
}

static PyObject *core_run_forever_native(CoreObject *c, PyObject *Py_UNUSED(ignored))
{
    if (core_check_closed(c) < 0)
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
            r = run_once(c, 0);
        } else {
            /* The only place the GIL is released: the loop is about to
             * sleep (run_once's callbacks take no Python object). */
            Py_BEGIN_ALLOW_THREADS
            r = run_once(c, -1);
            Py_END_ALLOW_THREADS
        }
        drain_pending(c);
        if (r < 0) {
            core_errno_error(r);
            break;
        }
        /* A signal that interrupted the poll: Python's handlers run now
         * (KeyboardInterrupt ends the run, as in asyncio). */
        if (PyErr_CheckSignals() < 0)
            break;
        int rr = run_ready(c);
        context_cache_clear(c);
        if (rr < 0)
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

/* ------------------------------------------------------------ handles */

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

/* _stats(): the library loop's counters (iol_loop_get_stats), for tests
 * and benches: iterations, wakeups, callbacks_remote, timeouts... */
static PyObject *core_stats(CoreObject *c, PyObject *Py_UNUSED(ignored))
{
    if (core_check_closed(c) < 0)
        return NULL;
    iol_loop_stats st;
    int err = iol_loop_get_stats(c->loop, &st, sizeof st);
    if (err < 0)
        return core_errno_error(err);
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
