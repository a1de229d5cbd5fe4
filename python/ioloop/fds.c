/* CoreLoop's fd watches: add_reader / add_writer and their removal, on
 * one library handler per fd that holds both directions (an fd_record,
 * owned by core->fds, owning its reader and writer Handles). */
#include "core.h"
#include <errno.h>
#include <stdlib.h>

static void fd_fired(int fd, unsigned events, void *arg)
{
    (void)fd;
    fd_record *r = arg;
    core_pending_push(r->core, PENDING_FD, r, events);
}

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
    if (core_check_closed(c) < 0 || core_check_thread(c) < 0)
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
    if (core_check_closed(c) < 0 || core_check_thread(c) < 0)
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
            return core_errno_error(err);
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
            return core_errno_error(err);
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
    if (core_check_thread(c) < 0)
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
            core_errno_error(err);
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

PyObject *core_add_reader(CoreObject *c, PyObject *const *args, Py_ssize_t nargs)
{
    return fd_add(c, args, nargs, 0);
}
PyObject *core_add_writer(CoreObject *c, PyObject *const *args, Py_ssize_t nargs)
{
    return fd_add(c, args, nargs, 1);
}
PyObject *core_remove_reader(CoreObject *c, PyObject *fd)
{
    return fd_remove(c, fd, 0);
}
PyObject *core_remove_writer(CoreObject *c, PyObject *fd)
{
    return fd_remove(c, fd, 1);
}

/* (reader handle or None, writer handle or None) for fd. */
PyObject *core_fd_handles(CoreObject *c, PyObject *arg)
{
    int fd = PyObject_AsFileDescriptor(arg);
    if (fd < 0)
        return NULL;
    fd_record *r = c->loop ? record_of(c, fd) : NULL;
    return Py_BuildValue("(OO)", r && r->reader ? (PyObject *)r->reader : Py_None,
                         r && r->writer ? (PyObject *)r->writer : Py_None);
}


void core_fd_ready(CoreObject *c, fd_record *r, unsigned events)
{
    if ((events & (IOL_READ | IOL_ERROR)) && r->reader && !r->reader->cancelled)
        core_ready_push(c, (HandleObject *)Py_NewRef((PyObject *)r->reader));
    if ((events & (IOL_WRITE | IOL_ERROR)) && r->writer && !r->writer->cancelled)
        core_ready_push(c, (HandleObject *)Py_NewRef((PyObject *)r->writer));
}

void core_fds_shutdown(CoreObject *c, PyObject *garbage)
{
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
}

int core_fds_traverse(CoreObject *c, visitproc visit, void *arg)
{
    for (int fd = 0; fd < c->nfds; fd++) {
        if (c->fds[fd]) {
            Py_VISIT((PyObject *)c->fds[fd]->reader);
            Py_VISIT((PyObject *)c->fds[fd]->writer);
        }
    }
    return 0;
}
