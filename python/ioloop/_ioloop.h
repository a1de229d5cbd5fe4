/* The C half of the Python package ioloop: an asyncio event loop core
 * (scheduling, running, fd readiness, signals) on libioloop.
 *
 * GIL rule: the library's callbacks (timeouts, fd handlers, posted
 * callbacks, signal handlers) run inside iol_loop_run_once, which we may
 * call with the GIL released (only when the loop is going to sleep).
 * So those callbacks never touch a Python object: each one appends one
 * entry (a pointer and a kind) to the core's `pending` array, which only
 * the loop's thread reads or writes. Right after run_once returns, with
 * the GIL held, core_drain_pending turns the entries into handles on the
 * ready queue. Everything else in this module runs with the GIL.
 */
#ifndef PY_IOLOOP_H
#define PY_IOLOOP_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <ioloop.h>

typedef struct CoreObject CoreObject;

/* Handle and TimerHandle (asyncio.Handle / asyncio.TimerHandle). */
typedef struct HandleObject {
    PyObject_HEAD
    PyObject *callback;          /* owned; cleared by cancel() */
    PyObject *args;              /* owned tuple; cleared by cancel() */
    PyObject *context;           /* owned contextvars.Context */
    CoreObject *loop;            /* owned (strong) */
    PyObject *source_traceback;  /* owned, debug mode only, else NULL */
    PyObject *weakreflist;
    char cancelled;
    char ctx_shared;             /* context is a shared snapshot (core_context_snapshot): copied before use */
    char scheduled;              /* TimerHandle: registered with the library (holds one ref, see loop.c) */
    /* TimerHandle only: a plain Handle's memory ends here (Handle_Type's basicsize) */
    double when;
    iol_timeout tid;
    struct HandleObject *tprev, *tnext; /* the core's list of scheduled timers */
} HandleObject;

extern PyTypeObject Handle_Type;
extern PyTypeObject TimerHandle_Type;

/* asyncio.format_helpers, imported once by the module. */
extern PyObject *ioloop_format_helpers;

/* New Handle (or TimerHandle with HANDLE_TIMER) for callback(*args) in
 * context (NULL: a copy of the current one). Returns a new reference.
 * HANDLE_QUEUED: a Handle going onto the ready queue or the post queue,
 * created untracked by the GC: the queue's reference keeps it reachable,
 * and the thousands a busy loop queues then cost the collector nothing.
 * Whoever drops a queue's reference calls handle_release(), which hands
 * the handle to the GC if someone else still holds it. Its context copy
 * is made when it is first needed (the run, get_context()) from a
 * snapshot of the caller's context that handles scheduled with the same
 * context contents share (core_context_snapshot). */
enum { HANDLE_TIMER = 1, HANDLE_QUEUED = 2 };
HandleObject *handle_new(CoreObject *loop, PyObject *callback, PyObject *args, PyObject *context, int flags);
/* Drops a queue's reference (steals it); see HANDLE_QUEUED. */
void handle_release(HandleObject *h);
/* Runs the handle. 0, or -1 with SystemExit/KeyboardInterrupt set (other
 * exceptions go to loop.call_exception_handler, as asyncio.Handle._run). */
int handle_run(HandleObject *h);

/* From loop.c: a cancelled TimerHandle tells its loop. */
void core_timer_cancelled(CoreObject *c, HandleObject *h);
int core_is_debug(CoreObject *c);
/* A Context with the current thread's context variables as they are now,
 * never entered nor handed out (callers copy it before use): the same
 * object while this thread's context is unchanged. New reference. */
PyObject *core_context_snapshot(CoreObject *c);
/* For transports (loop thread): watch fd, callback() on readiness; a new
 * reference to the Handle, or NULL. Unwatch: 1 removed, 0 none, -1 error.
 * core_soon: callback(*args) in the next iteration; 0 or -1. */
PyObject *core_watch_fd(CoreObject *c, int fd, int write, PyObject *callback);
int core_unwatch_fd(CoreObject *c, int fd, int write);
int core_soon(CoreObject *c, PyObject *callback, PyObject *args);
int core_is_closed(CoreObject *c);
PyTypeObject *core_type(void);
int ioloop_init_transport_type(PyObject *module);

int ioloop_init_loop_type(PyObject *module);

/* The raised exception, normalized, with its traceback (3.12's
 * PyErr_GetRaisedException). New reference; the error indicator is cleared. */
static inline PyObject *PyErr_GetRaisedException_compat(void)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb && value)
        PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
}

#endif
