/* ioloop._ioloop.SocketTransport: the TCP and Unix stream transport, in C.
 *
 * asyncio's _SelectorSocketTransport (selector_events.py, 3.11) rewritten
 * on the core's fd watches: the same states (closing, eof, paused,
 * conn_lost), the same order of protocol calls and the same errors; reads
 * go straight from the fd into one bytes object (or the BufferedProtocol's
 * buffer), writes first try the socket and queue the rest in a C buffer.
 * One difference: the first read is not registered when the protocol
 * paused reading in connection_made (asyncio 3.12's fix).
 *
 * Ownership: the transport owns its loop, socket, protocol, extra dict,
 * server and empty waiter, and two bound methods (_read_ready,
 * _write_ready) that the loop's fd Handles hold while the fd is watched;
 * they reference the transport back, a cycle broken when connection_lost
 * has run (and visible to the GC meanwhile).
 */
#include "_ioloop.h"
#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#define MAX_READ (256 * 1024)          /* asyncio's max_size */
#define LOG_THRESHOLD_FOR_CONNLOST_WRITES 5

typedef struct {
    PyObject_HEAD
    CoreObject *loop;      /* owned */
    PyObject *sock;        /* owned socket.socket; NULL after connection_lost */
    int fd;
    PyObject *protocol;    /* owned; NULL after connection_lost */
    PyObject *extra;       /* owned dict */
    PyObject *server;      /* owned asyncio.Server or NULL */
    PyObject *empty_waiter;/* owned Future or NULL */
    PyObject *read_ready;  /* owned bound self._read_ready */
    PyObject *write_ready; /* owned bound self._write_ready */
    char *wbuf;            /* write queue: wbuf[whead, whead + wlen) */
    size_t whead, wlen, wcap;
    size_t high, low;
    int conn_lost;
    char closing, eof, paused, protocol_connected, buffered, protocol_paused;
    PyObject *weakreflist;
} TransportObject;

static PyTypeObject Transport_Type;
static PyObject *buffered_protocol_type; /* asyncio.BufferedProtocol */
static PyObject *asyncio_logger;
static PyObject *str_data_received; /* interned "data_received" */
/* One read buffer for every transport: used only with the GIL held and
 * copied out before the GIL can be released. */
static char read_buffer[MAX_READ];

/* ------------------------------------------------------------ helpers */

static int is_fatal_python_exit(void)
{
    return PyErr_ExceptionMatches(PyExc_SystemExit) || PyErr_ExceptionMatches(PyExc_KeyboardInterrupt);
}

static void report(TransportObject *t, const char *message, PyObject *exc)
{
    PyObject *ctx = Py_BuildValue("{s:s,s:O,s:O,s:O}", "message", message, "exception", exc, "transport",
                                  (PyObject *)t, "protocol", t->protocol ? t->protocol : Py_None);
    PyObject *r = ctx ? PyObject_CallMethod((PyObject *)t->loop, "call_exception_handler", "O", ctx) : NULL;
    Py_XDECREF(ctx);
    if (!r)
        PyErr_WriteUnraisable((PyObject *)t);
    Py_XDECREF(r);
}

static void unwatch(TransportObject *t, int write)
{
    if (core_unwatch_fd(t->loop, t->fd, write) < 0)
        PyErr_WriteUnraisable((PyObject *)t);
}

static int watch(TransportObject *t, int write)
{
    PyObject *cb = write ? t->write_ready : t->read_ready;
    if (!cb)
        return 0;
    PyObject *h = core_watch_fd(t->loop, t->fd, write, cb);
    if (!h)
        return -1;
    Py_DECREF(h);
    return 0;
}

static int soon_connection_lost(TransportObject *t, PyObject *exc)
{
    PyObject *meth = PyObject_GetAttrString((PyObject *)t, "_call_connection_lost");
    PyObject *args = meth ? PyTuple_Pack(1, exc ? exc : Py_None) : NULL;
    int r = args ? core_soon(t->loop, meth, args) : -1;
    Py_XDECREF(meth);
    Py_XDECREF(args);
    return r;
}

static void force_close(TransportObject *t, PyObject *exc)
{
    if (t->conn_lost)
        return;
    if (t->wlen) {
        t->wlen = t->whead = 0;
        unwatch(t, 1);
    }
    if (!t->closing) {
        t->closing = 1;
        unwatch(t, 0);
    }
    t->conn_lost++;
    if (soon_connection_lost(t, exc) < 0)
        PyErr_WriteUnraisable((PyObject *)t);
}

static void fatal_error(TransportObject *t, PyObject *exc, const char *message)
{
    /* OSErrors (resets, broken pipes) are the peer's doing: no report,
     * as asyncio (which logs them only in debug mode). */
    if (!PyObject_IsInstance(exc, PyExc_OSError))
        report(t, message, exc);
    force_close(t, exc);
}

/* After a failed call into Python: SystemExit/KeyboardInterrupt stay set
 * (-1, propagate), anything else becomes a fatal error (0). */
static int fail(TransportObject *t, const char *message)
{
    if (is_fatal_python_exit())
        return -1;
    PyObject *exc = PyErr_GetRaisedException_compat();
    fatal_error(t, exc, message);
    Py_XDECREF(exc);
    return 0;
}

static int socket_error(TransportObject *t, int err, const char *message)
{
    errno = err;
    PyErr_SetFromErrno(PyExc_OSError);
    return fail(t, message);
}

static int call_protocol_flow(TransportObject *t, const char *method, const char *message)
{
    PyObject *r = PyObject_CallMethod(t->protocol, method, NULL);
    if (r) {
        Py_DECREF(r);
        return 0;
    }
    if (is_fatal_python_exit())
        return -1;
    PyObject *exc = PyErr_GetRaisedException_compat();
    report(t, message, exc);
    Py_XDECREF(exc);
    return 0;
}

static int maybe_pause_protocol(TransportObject *t)
{
    if (t->wlen <= t->high || t->protocol_paused || !t->protocol)
        return 0;
    t->protocol_paused = 1;
    return call_protocol_flow(t, "pause_writing", "protocol.pause_writing() failed");
}

static int maybe_resume_protocol(TransportObject *t)
{
    if (!t->protocol_paused || t->wlen > t->low || !t->protocol)
        return 0;
    t->protocol_paused = 0;
    return call_protocol_flow(t, "resume_writing", "protocol.resume_writing() failed");
}

static int buffer_append(TransportObject *t, const char *data, size_t n)
{
    if (t->whead + t->wlen + n > t->wcap) {
        if (t->whead) {
            memmove(t->wbuf, t->wbuf + t->whead, t->wlen);
            t->whead = 0;
        }
        if (t->wlen + n > t->wcap) {
            size_t cap = t->wcap ? t->wcap : 16384;
            while (cap < t->wlen + n)
                cap *= 2;
            char *b = PyMem_Realloc(t->wbuf, cap);
            if (!b) {
                PyErr_NoMemory();
                return -1;
            }
            t->wbuf = b;
            t->wcap = cap;
        }
    }
    memcpy(t->wbuf + t->whead + t->wlen, data, n);
    t->wlen += n;
    return 0;
}

static void buffer_consume(TransportObject *t, size_t n)
{
    t->whead += n;
    t->wlen -= n;
    if (t->wlen == 0) {
        t->whead = 0;
        if (t->wcap > (1u << 20)) { /* do not keep a burst's memory */
            PyMem_Free(t->wbuf);
            t->wbuf = NULL;
            t->wcap = 0;
        }
    }
}

static int would_block(int err)
{
    return err == EAGAIN || err == EWOULDBLOCK || err == EINTR;
}

/* ------------------------------------------------------------ construction */

static int set_protocol_impl(TransportObject *t, PyObject *protocol)
{
    int b = PyObject_IsInstance(protocol, buffered_protocol_type);
    if (b < 0)
        return -1;
    Py_XSETREF(t->protocol, Py_NewRef(protocol));
    t->buffered = (char)b;
    t->protocol_connected = 1;
    return 0;
}

/* SocketTransport(loop, sock, protocol, extra, server): the loop's
 * _make_socket_transport does the rest (connection_made, first read). */
static PyObject *transport_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *loop, *sock, *protocol, *extra, *server;
    if (kwds && PyDict_GET_SIZE(kwds)) {
        PyErr_SetString(PyExc_TypeError, "SocketTransport takes positional arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "OOOO!O", &loop, &sock, &protocol, &PyDict_Type, &extra, &server))
        return NULL;
    if (!PyObject_TypeCheck(loop, core_type())) {
        PyErr_SetString(PyExc_TypeError, "loop must be an ioloop.Loop");
        return NULL;
    }
    int fd = PyObject_AsFileDescriptor(sock);
    if (fd < 0)
        return NULL;
    TransportObject *t = (TransportObject *)type->tp_alloc(type, 0);
    if (!t)
        return NULL;
    t->loop = (CoreObject *)Py_NewRef(loop);
    t->sock = Py_NewRef(sock);
    t->fd = fd;
    t->extra = Py_NewRef(extra);
    t->server = server == Py_None ? NULL : Py_NewRef(server);
    t->high = 64 * 1024;
    t->low = 16 * 1024;
    t->read_ready = PyObject_GetAttrString((PyObject *)t, "_read_ready");
    t->write_ready = PyObject_GetAttrString((PyObject *)t, "_write_ready");
    if (!t->read_ready || !t->write_ready || set_protocol_impl(t, protocol) < 0) {
        Py_DECREF(t);
        return NULL;
    }
    return (PyObject *)t;
}

static int transport_traverse(TransportObject *t, visitproc visit, void *arg)
{
    Py_VISIT((PyObject *)t->loop);
    Py_VISIT(t->sock);
    Py_VISIT(t->protocol);
    Py_VISIT(t->extra);
    Py_VISIT(t->server);
    Py_VISIT(t->empty_waiter);
    Py_VISIT(t->read_ready);
    Py_VISIT(t->write_ready);
    return 0;
}

static int transport_clear(TransportObject *t)
{
    Py_CLEAR(t->loop);
    Py_CLEAR(t->sock);
    Py_CLEAR(t->protocol);
    Py_CLEAR(t->extra);
    Py_CLEAR(t->server);
    Py_CLEAR(t->empty_waiter);
    Py_CLEAR(t->read_ready);
    Py_CLEAR(t->write_ready);
    return 0;
}

/* __del__: an unclosed transport warns and closes its socket (asyncio). */
static void transport_finalize(TransportObject *t)
{
    if (!t->sock)
        return;
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (PyErr_ResourceWarning((PyObject *)t, 1, "unclosed transport %R", (PyObject *)t) < 0)
        PyErr_WriteUnraisable((PyObject *)t);
    PyObject *r = PyObject_CallMethod(t->sock, "close", NULL);
    if (!r)
        PyErr_WriteUnraisable((PyObject *)t);
    Py_XDECREF(r);
    Py_CLEAR(t->sock);
    PyErr_Restore(type, value, tb);
}

static void transport_dealloc(TransportObject *t)
{
    if (PyObject_CallFinalizerFromDealloc((PyObject *)t) < 0)
        return; /* resurrected */
    PyObject_GC_UnTrack(t);
    if (t->weakreflist)
        PyObject_ClearWeakRefs((PyObject *)t);
    transport_clear(t);
    PyMem_Free(t->wbuf);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

/* ------------------------------------------------------------ reading */

static PyObject *on_eof(TransportObject *t)
{
    PyObject *keep = PyObject_CallMethod(t->protocol, "eof_received", NULL);
    if (!keep) {
        if (fail(t, "Fatal error: protocol.eof_received() call failed.") < 0)
            return NULL;
        Py_RETURN_NONE;
    }
    int k = PyObject_IsTrue(keep);
    Py_DECREF(keep);
    if (k < 0)
        return NULL;
    if (k) {
        /* Keeping the connection open to write more: nothing more to read. */
        unwatch(t, 0);
    } else {
        PyObject *r = PyObject_CallMethod((PyObject *)t, "close", NULL);
        if (!r)
            return NULL;
        Py_DECREF(r);
    }
    Py_RETURN_NONE;
}

static PyObject *read_into_protocol_buffer(TransportObject *t)
{
    PyObject *buf = PyObject_CallMethod(t->protocol, "get_buffer", "i", -1);
    Py_buffer view;
    if (buf && PyObject_GetBuffer(buf, &view, PyBUF_WRITABLE) == 0) {
        if (view.len == 0) {
            PyBuffer_Release(&view);
            PyErr_SetString(PyExc_RuntimeError, "get_buffer() returned an empty buffer");
        } else {
            Py_DECREF(buf);
            ssize_t n = recv(t->fd, view.buf, (size_t)view.len, 0);
            int err = errno;
            PyBuffer_Release(&view);
            if (n < 0) {
                if (would_block(err) || socket_error(t, err, "Fatal read error on socket transport") == 0)
                    Py_RETURN_NONE;
                return NULL;
            }
            if (n == 0)
                return on_eof(t);
            PyObject *r = PyObject_CallMethod(t->protocol, "buffer_updated", "n", (Py_ssize_t)n);
            if (r) {
                Py_DECREF(r);
                Py_RETURN_NONE;
            }
            if (fail(t, "Fatal error: protocol.buffer_updated() call failed.") < 0)
                return NULL;
            Py_RETURN_NONE;
        }
    }
    Py_XDECREF(buf);
    if (fail(t, "Fatal error: protocol.get_buffer() call failed.") < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *transport_read_ready(TransportObject *t, PyObject *Py_UNUSED(ignored))
{
    if (t->conn_lost || !t->protocol)
        Py_RETURN_NONE;
    if (t->buffered)
        return read_into_protocol_buffer(t);
    ssize_t n = recv(t->fd, read_buffer, sizeof read_buffer, 0);
    if (n < 0) {
        int err = errno;
        if (would_block(err) || socket_error(t, err, "Fatal read error on socket transport") == 0)
            Py_RETURN_NONE;
        return NULL;
    }
    if (n == 0)
        return on_eof(t);
    PyObject *data = PyBytes_FromStringAndSize(read_buffer, n);
    if (!data)
        return NULL;
    PyObject *r = PyObject_CallMethodOneArg(t->protocol, str_data_received, data);
    Py_DECREF(data);
    if (r) {
        Py_DECREF(r);
        Py_RETURN_NONE;
    }
    if (fail(t, "Fatal error: protocol.data_received() call failed.") < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *transport_start_reading(TransportObject *t, PyObject *Py_UNUSED(ignored))
{
    if (t->paused || t->closing)
        Py_RETURN_NONE;
    if (watch(t, 0) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *transport_is_reading(TransportObject *t, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(!t->paused && !t->closing);
}

static PyObject *transport_pause_reading(TransportObject *t, PyObject *Py_UNUSED(ignored))
{
    if (t->closing || t->paused)
        Py_RETURN_NONE;
    t->paused = 1;
    unwatch(t, 0);
    Py_RETURN_NONE;
}

static PyObject *transport_resume_reading(TransportObject *t, PyObject *Py_UNUSED(ignored))
{
    if (t->closing || !t->paused)
        Py_RETURN_NONE;
    t->paused = 0;
    if (watch(t, 0) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------ writing */

static PyObject *write_bytes(TransportObject *t, const char *data, size_t len)
{
    if (len == 0)
        Py_RETURN_NONE;
    if (t->conn_lost) {
        if (t->conn_lost >= LOG_THRESHOLD_FOR_CONNLOST_WRITES) {
            PyObject *r = PyObject_CallMethod(asyncio_logger, "warning", "s", "socket.send() raised exception.");
            if (!r)
                return NULL;
            Py_DECREF(r);
        }
        t->conn_lost++;
        Py_RETURN_NONE;
    }
    if (t->wlen == 0) {
        /* Try to send now; queue only what the socket does not take. */
        ssize_t n = send(t->fd, data, len, MSG_NOSIGNAL);
        if (n < 0) {
            int err = errno;
            if (!would_block(err)) {
                if (socket_error(t, err, "Fatal write error on socket transport") < 0)
                    return NULL;
                Py_RETURN_NONE;
            }
            n = 0;
        }
        if ((size_t)n == len)
            Py_RETURN_NONE;
        data += n;
        len -= (size_t)n;
        if (watch(t, 1) < 0)
            return NULL;
    }
    if (buffer_append(t, data, len) < 0)
        return NULL;
    if (maybe_pause_protocol(t) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static int check_writable(TransportObject *t, PyObject *data)
{
    if (data && !PyBytes_Check(data) && !PyByteArray_Check(data) && !PyMemoryView_Check(data)) {
        PyErr_Format(PyExc_TypeError, "data argument must be a bytes-like object, not '%.100s'",
                     Py_TYPE(data)->tp_name);
        return -1;
    }
    if (t->eof) {
        PyErr_SetString(PyExc_RuntimeError, "Cannot call write() after write_eof()");
        return -1;
    }
    if (t->empty_waiter) {
        PyErr_SetString(PyExc_RuntimeError, "unable to write; sendfile is in progress");
        return -1;
    }
    return 0;
}

static PyObject *transport_write(TransportObject *t, PyObject *data)
{
    if (check_writable(t, data) < 0)
        return NULL;
    if (PyBytes_CheckExact(data))
        return write_bytes(t, PyBytes_AS_STRING(data), (size_t)PyBytes_GET_SIZE(data));
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *r = write_bytes(t, view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    return r;
}

/* writelines(iterable): write(b''.join(iterable)), as asyncio 3.11. */
static PyObject *transport_writelines(TransportObject *t, PyObject *lines)
{
    if (check_writable(t, NULL) < 0)
        return NULL;
    PyObject *empty = PyBytes_FromStringAndSize(NULL, 0);
    PyObject *joined = empty ? PyObject_CallMethod(empty, "join", "O", lines) : NULL;
    Py_XDECREF(empty);
    if (!joined)
        return NULL;
    PyObject *r = write_bytes(t, PyBytes_AS_STRING(joined), (size_t)PyBytes_GET_SIZE(joined));
    Py_DECREF(joined);
    return r;
}

static PyObject *shutdown_write(TransportObject *t)
{
    if (shutdown(t->fd, SHUT_WR) < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

static PyObject *transport_write_ready(TransportObject *t, PyObject *Py_UNUSED(ignored))
{
    if (t->conn_lost || t->wlen == 0)
        Py_RETURN_NONE;
    ssize_t n = send(t->fd, t->wbuf + t->whead, t->wlen, MSG_NOSIGNAL);
    if (n < 0) {
        int err = errno;
        if (would_block(err))
            Py_RETURN_NONE;
        unwatch(t, 1);
        t->wlen = t->whead = 0;
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        if (is_fatal_python_exit())
            return NULL;
        PyObject *exc = PyErr_GetRaisedException_compat();
        fatal_error(t, exc, "Fatal write error on socket transport");
        if (t->empty_waiter) {
            PyObject *r = PyObject_CallMethod(t->empty_waiter, "set_exception", "O", exc);
            Py_XDECREF(r);
            if (!r) {
                Py_DECREF(exc);
                return NULL;
            }
        }
        Py_DECREF(exc);
        Py_RETURN_NONE;
    }
    buffer_consume(t, (size_t)n);
    if (maybe_resume_protocol(t) < 0) /* may write more */
        return NULL;
    if (t->wlen == 0) {
        unwatch(t, 1);
        if (t->empty_waiter) {
            PyObject *r = PyObject_CallMethod(t->empty_waiter, "set_result", "O", Py_None);
            if (!r)
                return NULL;
            Py_DECREF(r);
        }
        if (t->closing)
            return PyObject_CallMethod((PyObject *)t, "_call_connection_lost", "O", Py_None);
        if (t->eof)
            return shutdown_write(t);
    }
    Py_RETURN_NONE;
}

static PyObject *transport_write_eof(TransportObject *t, PyObject *Py_UNUSED(ignored))
{
    if (t->closing || t->eof)
        Py_RETURN_NONE;
    t->eof = 1;
    if (t->wlen == 0)
        return shutdown_write(t);
    Py_RETURN_NONE;
}

static PyObject *transport_can_write_eof(TransportObject *t, PyObject *Py_UNUSED(ignored))
{
    (void)t;
    Py_RETURN_TRUE;
}

static PyObject *transport_get_write_buffer_size(TransportObject *t, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromSize_t(t->wlen);
}

static PyObject *transport_set_write_buffer_limits(TransportObject *t, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"high", "low", NULL};
    PyObject *high_o = Py_None, *low_o = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|OO", kwlist, &high_o, &low_o))
        return NULL;
    Py_ssize_t high, low;
    if (high_o == Py_None) {
        if (low_o == Py_None) {
            high = 64 * 1024;
        } else {
            Py_ssize_t l = PyNumber_AsSsize_t(low_o, PyExc_OverflowError);
            if (l == -1 && PyErr_Occurred())
                return NULL;
            high = 4 * l;
        }
    } else {
        high = PyNumber_AsSsize_t(high_o, PyExc_OverflowError);
        if (high == -1 && PyErr_Occurred())
            return NULL;
    }
    if (low_o == Py_None) {
        low = high / 4;
    } else {
        low = PyNumber_AsSsize_t(low_o, PyExc_OverflowError);
        if (low == -1 && PyErr_Occurred())
            return NULL;
    }
    if (!(high >= low && low >= 0))
        return PyErr_Format(PyExc_ValueError, "high (%zd) must be >= low (%zd) must be >= 0", high, low);
    t->high = (size_t)high;
    t->low = (size_t)low;
    if (maybe_pause_protocol(t) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *transport_get_write_buffer_limits(TransportObject *t, PyObject *Py_UNUSED(ignored))
{
    return Py_BuildValue("(nn)", (Py_ssize_t)t->low, (Py_ssize_t)t->high);
}

/* ------------------------------------------------------------ closing */

static PyObject *transport_close(TransportObject *t, PyObject *Py_UNUSED(ignored))
{
    if (t->closing)
        Py_RETURN_NONE;
    t->closing = 1;
    unwatch(t, 0);
    if (t->wlen == 0) {
        t->conn_lost++;
        unwatch(t, 1);
        if (soon_connection_lost(t, NULL) < 0)
            return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *transport_abort(TransportObject *t, PyObject *Py_UNUSED(ignored))
{
    force_close(t, NULL);
    Py_RETURN_NONE;
}

static PyObject *transport_force_close(TransportObject *t, PyObject *exc)
{
    force_close(t, exc == Py_None ? NULL : exc);
    Py_RETURN_NONE;
}

static PyObject *transport_fatal_error(TransportObject *t, PyObject *args)
{
    PyObject *exc;
    const char *message = "Fatal error on transport";
    if (!PyArg_ParseTuple(args, "O|s", &exc, &message))
        return NULL;
    fatal_error(t, exc, message);
    Py_RETURN_NONE;
}

static PyObject *transport_call_connection_lost(TransportObject *t, PyObject *exc)
{
    PyObject *r = Py_None;
    Py_INCREF(r);
    if (t->protocol_connected && t->protocol) {
        Py_DECREF(r);
        r = PyObject_CallMethod(t->protocol, "connection_lost", "O", exc);
    }
    /* finally: whatever connection_lost did */
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (t->sock) {
        PyObject *x = PyObject_CallMethod(t->sock, "close", NULL);
        if (!x)
            PyErr_WriteUnraisable((PyObject *)t);
        Py_XDECREF(x);
        Py_CLEAR(t->sock);
    }
    Py_CLEAR(t->protocol);
    if (t->server) {
        PyObject *server = t->server;
        t->server = NULL;
        PyObject *x = PyObject_CallMethod(server, "_detach", NULL);
        if (!x)
            PyErr_WriteUnraisable((PyObject *)t);
        Py_XDECREF(x);
        Py_DECREF(server);
    }
    Py_CLEAR(t->read_ready);  /* the cycle through the fd Handles ends here */
    Py_CLEAR(t->write_ready);
    if (t->empty_waiter) {
        PyObject *x = PyObject_CallMethod(t->empty_waiter, "done", NULL);
        int done = x ? PyObject_IsTrue(x) : 1;
        Py_XDECREF(x);
        if (!done) {
            PyObject *err = PyObject_CallFunction(PyExc_ConnectionError, "s", "Connection is closed by peer");
            PyObject *y = err ? PyObject_CallMethod(t->empty_waiter, "set_exception", "O", err) : NULL;
            Py_XDECREF(err);
            Py_XDECREF(y);
        }
        if (PyErr_Occurred())
            PyErr_WriteUnraisable((PyObject *)t);
    }
    PyErr_Restore(type, value, tb);
    return r;
}

/* ------------------------------------------------------------ the rest */

static PyObject *transport_make_empty_waiter(TransportObject *t, PyObject *Py_UNUSED(ignored))
{
    if (t->empty_waiter) {
        PyErr_SetString(PyExc_RuntimeError, "Empty waiter is already set");
        return NULL;
    }
    PyObject *f = PyObject_CallMethod((PyObject *)t->loop, "create_future", NULL);
    if (!f)
        return NULL;
    if (t->wlen == 0) {
        PyObject *r = PyObject_CallMethod(f, "set_result", "O", Py_None);
        if (!r) {
            Py_DECREF(f);
            return NULL;
        }
        Py_DECREF(r);
    }
    t->empty_waiter = f;
    return Py_NewRef(f);
}

static PyObject *transport_reset_empty_waiter(TransportObject *t, PyObject *Py_UNUSED(ignored))
{
    Py_CLEAR(t->empty_waiter);
    Py_RETURN_NONE;
}

static PyObject *transport_set_protocol(TransportObject *t, PyObject *protocol)
{
    if (set_protocol_impl(t, protocol) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *transport_get_protocol(TransportObject *t, PyObject *Py_UNUSED(ignored))
{
    return Py_NewRef(t->protocol ? t->protocol : Py_None);
}

static PyObject *transport_is_closing(TransportObject *t, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(t->closing);
}

static PyObject *transport_get_extra_info(TransportObject *t, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"name", "default", NULL};
    PyObject *name, *dflt = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|O", kwlist, &name, &dflt))
        return NULL;
    PyObject *v = PyDict_GetItemWithError(t->extra, name);
    if (!v && PyErr_Occurred())
        return NULL;
    return Py_NewRef(v ? v : dflt);
}

static PyObject *transport_repr(TransportObject *t)
{
    const char *state = !t->sock ? " closed" : t->closing ? " closing" : "";
    if (!t->sock || core_is_closed(t->loop))
        return PyUnicode_FromFormat("<%s%s fd=%d>", Py_TYPE(t)->tp_name, state, t->fd);
    return PyUnicode_FromFormat("<%s%s fd=%d read=%s write=<%s, bufsize=%zu>>", Py_TYPE(t)->tp_name, state, t->fd,
                                !t->paused && !t->closing ? "polling" : "idle", t->wlen ? "polling" : "idle",
                                t->wlen);
}

#define GETTER(name, expr)                                  \
    static PyObject *get_##name(TransportObject *t, void *c) \
    {                                                       \
        (void)c;                                            \
        return expr;                                        \
    }
GETTER(sock, Py_NewRef(t->sock ? t->sock : Py_None))
GETTER(sock_fd, PyLong_FromLong(t->fd))
GETTER(loop, Py_NewRef(t->sock ? (PyObject *)t->loop : Py_None))
GETTER(protocol, Py_NewRef(t->protocol ? t->protocol : Py_None))
GETTER(protocol_paused, PyBool_FromLong(t->protocol_paused))
GETTER(closing, PyBool_FromLong(t->closing))
GETTER(conn_lost, PyLong_FromLong(t->conn_lost))
GETTER(extra, Py_NewRef(t->extra))
GETTER(server, Py_NewRef(t->server ? t->server : Py_None))
GETTER(empty_waiter, Py_NewRef(t->empty_waiter ? t->empty_waiter : Py_None))

static PyGetSetDef transport_getset[] = {
    {"_sock", (getter)get_sock, NULL, NULL, NULL},
    {"_sock_fd", (getter)get_sock_fd, NULL, NULL, NULL},
    {"_loop", (getter)get_loop, NULL, NULL, NULL},
    {"_protocol", (getter)get_protocol, NULL, NULL, NULL},
    {"_protocol_paused", (getter)get_protocol_paused, NULL, NULL, NULL},
    {"_closing", (getter)get_closing, NULL, NULL, NULL},
    {"_conn_lost", (getter)get_conn_lost, NULL, NULL, NULL},
    {"_extra", (getter)get_extra, NULL, NULL, NULL},
    {"_server", (getter)get_server, NULL, NULL, NULL},
    {"_empty_waiter", (getter)get_empty_waiter, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef transport_methods[] = {
    {"write", (PyCFunction)transport_write, METH_O, "Queue bytes for sending (sent at once when possible)."},
    {"writelines", (PyCFunction)transport_writelines, METH_O, "write(b''.join(lines))."},
    {"write_eof", (PyCFunction)transport_write_eof, METH_NOARGS, "Half-close once the queue is sent."},
    {"can_write_eof", (PyCFunction)transport_can_write_eof, METH_NOARGS, NULL},
    {"close", (PyCFunction)transport_close, METH_NOARGS, "Close once the queue is sent."},
    {"abort", (PyCFunction)transport_abort, METH_NOARGS, "Close now, dropping the queue."},
    {"is_closing", (PyCFunction)transport_is_closing, METH_NOARGS, NULL},
    {"get_extra_info", (PyCFunction)(void (*)(void))transport_get_extra_info, METH_VARARGS | METH_KEYWORDS, NULL},
    {"set_protocol", (PyCFunction)transport_set_protocol, METH_O, NULL},
    {"get_protocol", (PyCFunction)transport_get_protocol, METH_NOARGS, NULL},
    {"is_reading", (PyCFunction)transport_is_reading, METH_NOARGS, NULL},
    {"pause_reading", (PyCFunction)transport_pause_reading, METH_NOARGS, NULL},
    {"resume_reading", (PyCFunction)transport_resume_reading, METH_NOARGS, NULL},
    {"get_write_buffer_size", (PyCFunction)transport_get_write_buffer_size, METH_NOARGS, NULL},
    {"set_write_buffer_limits", (PyCFunction)(void (*)(void))transport_set_write_buffer_limits,
     METH_VARARGS | METH_KEYWORDS, NULL},
    {"get_write_buffer_limits", (PyCFunction)transport_get_write_buffer_limits, METH_NOARGS, NULL},
    {"_read_ready", (PyCFunction)transport_read_ready, METH_NOARGS, NULL},
    {"_write_ready", (PyCFunction)transport_write_ready, METH_NOARGS, NULL},
    {"_start_reading", (PyCFunction)transport_start_reading, METH_NOARGS, NULL},
    {"_call_connection_lost", (PyCFunction)transport_call_connection_lost, METH_O, NULL},
    {"_force_close", (PyCFunction)transport_force_close, METH_O, NULL},
    {"_fatal_error", (PyCFunction)transport_fatal_error, METH_VARARGS, NULL},
    {"_make_empty_waiter", (PyCFunction)transport_make_empty_waiter, METH_NOARGS, NULL},
    {"_reset_empty_waiter", (PyCFunction)transport_reset_empty_waiter, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject Transport_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ioloop.SocketTransport",
    .tp_basicsize = sizeof(TransportObject),
    .tp_dealloc = (destructor)transport_dealloc,
    .tp_finalize = (destructor)transport_finalize,
    .tp_repr = (reprfunc)transport_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
    .tp_traverse = (traverseproc)transport_traverse,
    .tp_clear = (inquiry)transport_clear,
    .tp_weaklistoffset = offsetof(TransportObject, weakreflist),
    .tp_methods = transport_methods,
    .tp_getset = transport_getset,
    .tp_new = transport_new,
    .tp_doc = "A TCP or Unix stream transport (asyncio.Transport's API) on an ioloop.Loop.",
};

int ioloop_init_transport_type(PyObject *module)
{
    PyObject *protocols = PyImport_ImportModule("asyncio.protocols");
    if (!protocols)
        return -1;
    buffered_protocol_type = PyObject_GetAttrString(protocols, "BufferedProtocol");
    Py_DECREF(protocols);
    PyObject *log = PyImport_ImportModule("asyncio.log");
    if (!log)
        return -1;
    asyncio_logger = PyObject_GetAttrString(log, "logger");
    Py_DECREF(log);
    str_data_received = PyUnicode_InternFromString("data_received");
    if (!buffered_protocol_type || !asyncio_logger || !str_data_received)
        return -1;
    if (PyType_Ready(&Transport_Type) < 0)
        return -1;
    return PyModule_AddObjectRef(module, "SocketTransport", (PyObject *)&Transport_Type);
}
