/* Handle and TimerHandle: asyncio's callback handles, in C.
 * Behaviour follows asyncio/events.py (cancel clears callback and args,
 * _run sends exceptions to the loop's exception handler and lets only
 * SystemExit and KeyboardInterrupt through). */
#include "_ioloop.h"
#include <structmember.h>

PyObject *ioloop_format_helpers;

HandleObject *handle_new(CoreObject *loop, PyObject *callback, PyObject *args, PyObject *context, int flags)
{
    HandleObject *h = PyObject_GC_New(HandleObject, (flags & HANDLE_TIMER) ? &TimerHandle_Type : &Handle_Type);
    if (!h)
        return NULL;
    h->callback = Py_NewRef(callback);
    h->args = Py_NewRef(args);
    h->ctx_shared = 0;
    if (context && context != Py_None) {
        h->context = Py_NewRef(context);
    } else if (flags & HANDLE_QUEUED) {
        h->context = core_context_snapshot(loop);
        h->ctx_shared = 1;
    } else {
        h->context = PyContext_CopyCurrent();
    }
    h->loop = (CoreObject *)Py_NewRef((PyObject *)loop);
    h->source_traceback = NULL;
    h->weakreflist = NULL;
    h->cancelled = 0;
    h->scheduled = 0;
    if (flags & HANDLE_TIMER) { /* a plain Handle ends before `when` (Handle_Type's basicsize) */
        h->when = 0;
        h->tid = 0;
        h->tprev = h->tnext = NULL;
    }
    if (!h->context) {
        Py_DECREF(h);
        return NULL;
    }
    if (core_is_debug(loop)) {
        h->source_traceback = PyObject_CallMethod(ioloop_format_helpers, "extract_stack", NULL);
        if (!h->source_traceback)
            PyErr_Clear();
    }
    if (!(flags & HANDLE_QUEUED))
        PyObject_GC_Track(h);
    return h;
}

/* A handle's own copy of its shared snapshot, made when first needed:
 * before the callback runs in it or get_context() hands it out (asyncio:
 * one copy per handle, taken when it was scheduled). 0 or -1. */
static int handle_own_context(HandleObject *h)
{
    if (!h->ctx_shared || !h->context)
        return 0;
    PyObject *own = PyContext_Copy(h->context);
    if (!own)
        return -1;
    PyObject *snapshot = h->context;
    h->context = own;
    h->ctx_shared = 0;
    Py_DECREF(snapshot);
    return 0;
}

void handle_release(HandleObject *h)
{
    /* Someone else holds it (the Handle call_soon returned, kept): from
     * now on it may be part of a cycle the GC must see. */
    if (Py_REFCNT(h) > 1 && !PyObject_GC_IsTracked((PyObject *)h))
        PyObject_GC_Track(h);
    Py_DECREF(h);
}

static int handle_traverse(HandleObject *h, visitproc visit, void *arg)
{
    Py_VISIT(h->callback);
    Py_VISIT(h->args);
    Py_VISIT(h->context);
    Py_VISIT((PyObject *)h->loop);
    Py_VISIT(h->source_traceback);
    return 0;
}

static int handle_clear(HandleObject *h)
{
    Py_CLEAR(h->callback);
    Py_CLEAR(h->args);
    Py_CLEAR(h->context);
    Py_CLEAR(h->loop);
    Py_CLEAR(h->source_traceback);
    return 0;
}

static void handle_dealloc(HandleObject *h)
{
    PyObject_GC_UnTrack(h);
    if (h->weakreflist)
        PyObject_ClearWeakRefs((PyObject *)h);
    handle_clear(h);
    Py_TYPE(h)->tp_free((PyObject *)h);
}

static PyObject *format_callback_source(HandleObject *h)
{
    return PyObject_CallMethod(ioloop_format_helpers, "_format_callback_source", "OO",
                               h->callback ? h->callback : Py_None, h->args ? h->args : Py_None);
}

static void report_exception(HandleObject *h, PyObject *exc)
{
    PyObject *src = format_callback_source(h);
    PyObject *msg = src ? PyUnicode_FromFormat("Exception in callback %U", src) : NULL;
    Py_XDECREF(src);
    PyObject *ctx = msg ? PyDict_New() : NULL;
    if (ctx && PyDict_SetItemString(ctx, "message", msg) == 0 && PyDict_SetItemString(ctx, "exception", exc) == 0 &&
        PyDict_SetItemString(ctx, "handle", (PyObject *)h) == 0 &&
        (!h->source_traceback || PyDict_SetItemString(ctx, "source_traceback", h->source_traceback) == 0)) {
        PyObject *r = PyObject_CallMethod((PyObject *)h->loop, "call_exception_handler", "O", ctx);
        Py_XDECREF(r);
    }
    Py_XDECREF(msg);
    Py_XDECREF(ctx);
    if (PyErr_Occurred())
        PyErr_WriteUnraisable((PyObject *)h);
}

static int run_failed(HandleObject *h);

int handle_run(HandleObject *h)
{
    if (h->cancelled || !h->callback)
        return 0;
    /* The handle is kept alive by the caller (the ready queue's reference). */
    if (handle_own_context(h) < 0)
        return run_failed(h);
    PyObject *callback = Py_NewRef(h->callback);
    PyObject *args = Py_NewRef(h->args);
    PyObject *ctx = Py_NewRef(h->context);
    PyObject *res = NULL;
    if (PyContext_Enter(ctx) == 0) {
        res = PyObject_Vectorcall(callback, &PyTuple_GET_ITEM(args, 0), (size_t)PyTuple_GET_SIZE(args), NULL);
        if (PyContext_Exit(ctx) < 0 && res) {
            Py_CLEAR(res);
        }
    }
    Py_DECREF(callback);
    Py_DECREF(args);
    Py_DECREF(ctx);
    if (res) {
        Py_DECREF(res);
        return 0;
    }
    return run_failed(h);
}

static int run_failed(HandleObject *h)
{
    if (PyErr_ExceptionMatches(PyExc_SystemExit) || PyErr_ExceptionMatches(PyExc_KeyboardInterrupt))
        return -1;
    PyObject *exc = PyErr_GetRaisedException_compat();
    report_exception(h, exc);
    Py_XDECREF(exc);
    return 0;
}

static PyObject *handle_cancel(HandleObject *h, PyObject *Py_UNUSED(ignored))
{
    if (!h->cancelled) {
        h->cancelled = 1;
        if (Py_IS_TYPE(h, &TimerHandle_Type) && h->loop)
            core_timer_cancelled(h->loop, h);
        Py_CLEAR(h->callback);
        Py_CLEAR(h->args);
    }
    Py_RETURN_NONE;
}

static PyObject *handle_cancelled(HandleObject *h, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(h->cancelled);
}

static PyObject *handle_get_context(HandleObject *h, PyObject *Py_UNUSED(ignored))
{
    if (handle_own_context(h) < 0)
        return NULL;
    return Py_NewRef(h->context ? h->context : Py_None);
}

static PyObject *handle_run_method(HandleObject *h, PyObject *Py_UNUSED(ignored))
{
    if (handle_run(h) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *handle_when(HandleObject *h, PyObject *Py_UNUSED(ignored))
{
    return PyFloat_FromDouble(h->when);
}

static PyObject *handle_repr(HandleObject *h)
{
    PyObject *src = h->callback ? format_callback_source(h) : NULL;
    if (h->callback && !src)
        return NULL;
    const char *name = Py_TYPE(h)->tp_name;
    const char *dot = strrchr(name, '.');
    name = dot ? dot + 1 : name;
    PyObject *r;
    int timer = Py_IS_TYPE(h, &TimerHandle_Type);
    PyObject *when = timer ? PyFloat_FromDouble(h->when) : NULL;
    if (timer && !when) {
        Py_XDECREF(src);
        return NULL;
    }
    if (timer)
        r = PyUnicode_FromFormat("<%s%s when=%R%s%U>", name, h->cancelled ? " cancelled" : "", when, src ? " " : "",
                                 src ? src : Py_None);
    else
        r = PyUnicode_FromFormat("<%s%s%s%U>", name, h->cancelled ? " cancelled" : "", src ? " " : "",
                                 src ? src : Py_None);
    if (!src) {
        Py_XDECREF(r);
        r = timer ? PyUnicode_FromFormat("<%s%s when=%R>", name, h->cancelled ? " cancelled" : "", when)
                  : PyUnicode_FromFormat("<%s%s>", name, h->cancelled ? " cancelled" : "");
    }
    Py_XDECREF(when);
    Py_XDECREF(src);
    return r;
}

static PyObject *timer_richcompare(PyObject *a, PyObject *b, int op)
{
    if (!PyObject_TypeCheck(a, &TimerHandle_Type) || !PyObject_TypeCheck(b, &TimerHandle_Type))
        Py_RETURN_NOTIMPLEMENTED;
    HandleObject *x = (HandleObject *)a, *y = (HandleObject *)b;
    int r;
    switch (op) {
    case Py_LT: r = x->when < y->when; break;
    case Py_LE: r = x->when < y->when || a == b; break;
    case Py_GT: r = x->when > y->when; break;
    case Py_GE: r = x->when > y->when || a == b; break;
    case Py_EQ: r = a == b; break;
    case Py_NE: r = a != b; break;
    default: Py_RETURN_NOTIMPLEMENTED;
    }
    return PyBool_FromLong(r);
}

static PyObject *get_callback(HandleObject *h, void *c)
{
    (void)c;
    return Py_NewRef(h->callback ? h->callback : Py_None);
}
static PyObject *get_args(HandleObject *h, void *c)
{
    (void)c;
    return Py_NewRef(h->args ? h->args : Py_None);
}
static PyObject *get_loop(HandleObject *h, void *c)
{
    (void)c;
    return Py_NewRef(h->loop ? (PyObject *)h->loop : Py_None);
}
static PyObject *get_cancelled_attr(HandleObject *h, void *c)
{
    (void)c;
    return PyBool_FromLong(h->cancelled);
}
static PyObject *get_source_traceback(HandleObject *h, void *c)
{
    (void)c;
    return Py_NewRef(h->source_traceback ? h->source_traceback : Py_None);
}
static PyObject *get_scheduled(HandleObject *h, void *c)
{
    (void)c;
    return PyBool_FromLong(h->scheduled);
}

static PyGetSetDef handle_getset[] = {
    {"_callback", (getter)get_callback, NULL, NULL, NULL},
    {"_args", (getter)get_args, NULL, NULL, NULL},
    {"_loop", (getter)get_loop, NULL, NULL, NULL},
    {"_cancelled", (getter)get_cancelled_attr, NULL, NULL, NULL},
    {"_source_traceback", (getter)get_source_traceback, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyGetSetDef timer_getset[] = {
    {"_scheduled", (getter)get_scheduled, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef handle_methods[] = {
    {"cancel", (PyCFunction)handle_cancel, METH_NOARGS, "Cancel the callback (no-op if it already ran)."},
    {"cancelled", (PyCFunction)handle_cancelled, METH_NOARGS, "Whether cancel() was called."},
    {"get_context", (PyCFunction)handle_get_context, METH_NOARGS, "The contextvars.Context the callback runs in."},
    {"_run", (PyCFunction)handle_run_method, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyMethodDef timer_methods[] = {
    {"when", (PyCFunction)handle_when, METH_NOARGS, "The scheduled time, on the loop's clock."},
    {NULL, NULL, 0, NULL},
};

static PyObject *handle_no_new(PyTypeObject *t, PyObject *a, PyObject *k)
{
    (void)a;
    (void)k;
    PyErr_Format(PyExc_TypeError, "cannot create '%s' instances", t->tp_name);
    return NULL;
}

static Py_hash_t timer_hash(PyObject *o)
{
    return _Py_HashPointer(o);
}

PyTypeObject Handle_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ioloop.Handle",
    .tp_basicsize = offsetof(HandleObject, when), /* without the timer part: 96 bytes a handle, not 128 */
    .tp_dealloc = (destructor)handle_dealloc,
    .tp_repr = (reprfunc)handle_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
    .tp_traverse = (traverseproc)handle_traverse,
    .tp_clear = (inquiry)handle_clear,
    .tp_weaklistoffset = offsetof(HandleObject, weakreflist),
    .tp_methods = handle_methods,
    .tp_getset = handle_getset,
    .tp_new = handle_no_new,
    .tp_doc = "A callback scheduled on an ioloop.Loop (asyncio.Handle's API).",
};

PyTypeObject TimerHandle_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ioloop.TimerHandle",
    .tp_basicsize = sizeof(HandleObject),
    .tp_dealloc = (destructor)handle_dealloc,
    .tp_repr = (reprfunc)handle_repr,
    .tp_hash = timer_hash,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)handle_traverse,
    .tp_clear = (inquiry)handle_clear,
    .tp_richcompare = timer_richcompare,
    .tp_weaklistoffset = offsetof(HandleObject, weakreflist),
    .tp_methods = timer_methods,
    .tp_getset = timer_getset,
    .tp_base = &Handle_Type,
    .tp_new = handle_no_new,
    .tp_doc = "A timed callback on an ioloop.Loop (asyncio.TimerHandle's API).",
};
