/* CoreLoop's signal handlers on the library's signalfd
 * (iol_loop_add_signal): core->signals (a dict) owns the Handles; the
 * library's arg is the core itself, borrowed (the registration ends
 * before the core dies). */
#include "core.h"
#include <errno.h>

static void signal_fired(int signo, void *arg)
{
    core_pending_push((CoreObject *)arg, PENDING_SIGNAL, (void *)(intptr_t)signo, 0);
}

/* _add_signal(signo, handle): handle runs on the loop for each delivery.
 * The checks asyncio makes (main thread, valid number) are in Python. */
PyObject *core_add_signal(CoreObject *c, PyObject *args)
{
    int signo;
    PyObject *h;
    if (!PyArg_ParseTuple(args, "iO!", &signo, &Handle_Type, &h))
        return NULL;
    if (core_check_closed(c) < 0 || core_check_thread(c) < 0)
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
            return core_errno_error(err);
        }
    }
    int r = had < 0 ? -1 : PyDict_SetItem(c->signals, key, h);
    Py_DECREF(key);
    if (r < 0)
        return NULL;
    Py_RETURN_NONE;
}

PyObject *core_remove_signal(CoreObject *c, PyObject *arg)
{
    int signo = PyLong_AsLong(arg);
    if (signo == -1 && PyErr_Occurred())
        return NULL;
    if (!c->loop)
        Py_RETURN_FALSE;
    if (core_check_thread(c) < 0)
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


void core_signal_ready(CoreObject *c, int signo)
{
    PyObject *key = PyLong_FromLong(signo);
    PyObject *h = key ? PyDict_GetItemWithError(c->signals, key) : NULL; /* borrowed */
    Py_XDECREF(key);
    if (h)
        core_ready_push(c, (HandleObject *)Py_NewRef(h));
}

void core_signals_shutdown(CoreObject *c)
{
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(c->signals, &pos, &key, &value))
        iol_loop_remove_signal(c->loop, (int)PyLong_AsLong(key), signal_fired, c);
}
