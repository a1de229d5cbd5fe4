"""ioloop: an asyncio event loop on libioloop, with uvloop's API.

    import ioloop
    ioloop.install()            # asyncio.run() and friends now use ioloop.Loop
    ioloop.run(main())          # or run one coroutine on a fresh ioloop.Loop

What runs natively (ioloop._ioloop, C on libioloop): the ready queue,
call_soon / call_later / call_at / call_soon_threadsafe, Handle and
TimerHandle, the run loop, fd readiness (add_reader / add_writer and what
is built on it), signals. asyncio.BaseEventLoop's orchestration (tasks,
futures, the exception handler, executors, address resolution, servers)
sits on top and reaches the loop only through those calls. See
docs/python.md for what is native and what is not yet.
"""

import asyncio
import errno
import sys
import threading
import weakref

from asyncio import base_events, constants, coroutines, events, futures, selector_events, trsock, unix_events
from asyncio.log import logger

from . import _ioloop
from ._ioloop import Handle, SocketTransport, TimerHandle

__all__ = ('Loop', 'new_event_loop', 'EventLoopPolicy', 'install', 'run', 'Handle', 'TimerHandle')
__version__ = '0.1.0'

_selector = selector_events.BaseSelectorEventLoop
_unix = unix_events._UnixSelectorEventLoop


def _not_yet(what):
    return NotImplementedError(f'ioloop.Loop: {what} is not supported yet (a later release); '
                               'use the default asyncio loop for it')


def _borrow(cls, *names):
    """asyncio's socket plumbing, written against _add_reader/_add_writer
    and friends, which Loop provides natively."""
    return {name: cls.__dict__[name] for name in names}


class Loop(_ioloop.CoreLoop, base_events.BaseEventLoop):
    """An asyncio event loop whose core is libioloop (C)."""

    def __init__(self):
        base_events.BaseEventLoop.__init__(self)
        # fd -> transport, as the selector loop keeps it (add_reader refuses
        # an fd a live transport owns).
        self._transports = weakref.WeakValueDictionary()

    # ---------------------------------------------------------- running

    def run_forever(self):
        """Run until stop() is called."""
        self._check_closed()
        self._check_running()
        self._set_coroutine_origin_tracking(self._debug)
        old_agen_hooks = sys.get_asyncgen_hooks()
        try:
            self._thread_id = threading.get_ident()
            sys.set_asyncgen_hooks(firstiter=self._asyncgen_firstiter_hook,
                                   finalizer=self._asyncgen_finalizer_hook)
            events._set_running_loop(self)
            self._run_forever_native()
        finally:
            self._stopping = False
            self._thread_id = None
            events._set_running_loop(None)
            self._set_coroutine_origin_tracking(False)
            sys.set_asyncgen_hooks(*old_agen_hooks)

    def close(self):
        """Close the loop: pending callbacks, timers, fd watches and signal
        handlers are dropped (fds are not closed); the default executor is
        shut down without waiting."""
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self._closed:
            return
        if self._debug:
            logger.debug("Close %r", self)
        self._close_native()
        self._executor_shutdown_called = True
        executor = self._default_executor
        if executor is not None:
            self._default_executor = None
            executor.shutdown(wait=False)

    def _log_slow_callback(self, handle, dt):
        logger.warning('Executing %s took %.3f seconds', base_events._format_handle(handle), dt)

    def _write_to_self(self):
        # asyncio's own helpers (Future callbacks from other threads go
        # through call_soon_threadsafe) wake the loop; nothing to do here.
        pass

    # ---------------------------------------------------------- fds

    def add_reader(self, fd, callback, *args):
        """Call callback(*args) whenever fd is readable."""
        self._ensure_fd_no_transport(fd)
        self._add_reader(fd, callback, *args)

    def remove_reader(self, fd):
        """Stop watching fd for reading; True if it was watched."""
        self._ensure_fd_no_transport(fd)
        return self._remove_reader(fd)

    def add_writer(self, fd, callback, *args):
        """Call callback(*args) whenever fd is writable."""
        self._ensure_fd_no_transport(fd)
        self._add_writer(fd, callback, *args)

    def remove_writer(self, fd):
        """Stop watching fd for writing; True if it was watched."""
        self._ensure_fd_no_transport(fd)
        return self._remove_writer(fd)

    def _make_socket_transport(self, sock, protocol, waiter=None, *, extra=None, server=None):
        """A C SocketTransport (ioloop/transport.c) for a connected TCP or
        Unix stream socket, set up as asyncio's selector transport is."""
        extra = dict(extra) if extra else {}
        extra['socket'] = trsock.TransportSocket(sock)
        try:
            extra['sockname'] = sock.getsockname()
        except OSError:
            extra['sockname'] = None
        if 'peername' not in extra:
            try:
                extra['peername'] = sock.getpeername()
            except OSError:
                extra['peername'] = None
        transport = _ioloop.SocketTransport(self, sock, protocol, extra, server)
        if server is not None:
            server._attach()
        self._transports[sock.fileno()] = transport
        base_events._set_nodelay(sock)
        self.call_soon(protocol.connection_made, transport)
        # Reading starts once connection_made has run.
        self.call_soon(transport._start_reading)
        if waiter is not None:
            self.call_soon(futures._set_result_unless_cancelled, waiter, None)
        return transport

    def _accept_connection(self, protocol_factory, sock, sslcontext=None, server=None, backlog=100,
                           ssl_handshake_timeout=None, ssl_shutdown_timeout=None):
        """Accepts up to backlog connections of a readable listening socket.
        As asyncio's selector loop, except that each connection gets its
        protocol and transport right here, as uvloop does, instead of in a
        Task of its own (a Task and a Future less per connection); servers
        never have an sslcontext here (create_server refuses ssl=)."""
        for _ in range(backlog):
            try:
                conn, addr = sock.accept()
                if self._debug:
                    logger.debug("%r got a new connection from %r: %r", server, addr, conn)
                conn.setblocking(False)
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return None  # the accept queue is empty
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # The fd stays readable: stop watching it for a while.
                    self.call_exception_handler({
                        'message': 'socket.accept() out of system resource',
                        'exception': exc,
                        'socket': trsock.TransportSocket(sock),
                    })
                    self._remove_reader(sock.fileno())
                    self.call_later(constants.ACCEPT_RETRY_DELAY, self._start_serving,
                                    protocol_factory, sock, sslcontext, server, backlog,
                                    ssl_handshake_timeout, ssl_shutdown_timeout)
                else:
                    raise  # the loop's exception handler logs it
            else:
                protocol = transport = None
                try:
                    protocol = protocol_factory()
                    transport = self._make_socket_transport(conn, protocol, extra={'peername': addr},
                                                            server=server)
                except (SystemExit, KeyboardInterrupt):
                    raise
                except BaseException as exc:
                    if transport is None:
                        conn.close()
                    if self._debug:  # asyncio reports these in debug mode only
                        context = {'message': 'Error on transport creation for incoming connection',
                                   'exception': exc}
                        if protocol is not None:
                            context['protocol'] = protocol
                        self.call_exception_handler(context)

    locals().update(_borrow(
        _selector, '_start_serving', '_ensure_fd_no_transport', '_stop_serving',
        'sock_recv', '_sock_read_done', '_sock_recv', 'sock_recv_into', '_sock_recv_into',
        'sock_sendall', '_sock_sendall', 'sock_connect', '_sock_connect', '_sock_write_done',
        '_sock_connect_cb', 'sock_accept', '_sock_accept', '_sendfile_native',
        'sock_recvfrom', '_sock_recvfrom', 'sock_recvfrom_into', '_sock_recvfrom_into',
        'sock_sendto', '_sock_sendto'))
    locals().update(_borrow(
        _unix, '_make_read_pipe_transport', '_make_write_pipe_transport',
        'create_unix_connection', 'create_unix_server', '_sock_sendfile_native',
        '_sock_sendfile_native_impl', '_sock_sendfile_update_filepos',
        '_sock_add_cancellation_callback', '_check_signal'))

    # ---------------------------------------------------------- signals

    def add_signal_handler(self, sig, callback, *args):
        """Run callback(*args) on the loop when signal sig arrives (main
        thread only, as asyncio). Underneath: the library's signalfd."""
        if coroutines.iscoroutine(callback) or coroutines.iscoroutinefunction(callback):
            raise TypeError("coroutines cannot be used with add_signal_handler()")
        self._check_signal(sig)
        self._check_closed()
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError('set_wakeup_fd only works in main thread of the main interpreter')
        self._add_signal(sig, self._new_handle(callback, *args))

    def remove_signal_handler(self, sig):
        """Remove the handler of sig; True if there was one."""
        self._check_signal(sig)
        return self._remove_signal(sig)

    # ---------------------------------------------------------- not yet

    def _make_ssl_transport(self, *args, **kwargs):
        raise _not_yet('TLS (ssl=)')

    def _make_datagram_transport(self, *args, **kwargs):
        raise _not_yet('datagram endpoints')

    async def create_connection(self, protocol_factory, host=None, port=None, *, ssl=None, **kwargs):
        if ssl:
            raise _not_yet('TLS (ssl=)')
        return await super().create_connection(protocol_factory, host, port, **kwargs)

    async def create_server(self, protocol_factory, host=None, port=None, *, ssl=None, **kwargs):
        if ssl:
            raise _not_yet('TLS (ssl=)')
        return await super().create_server(protocol_factory, host, port, **kwargs)

    async def connect_accepted_socket(self, protocol_factory, sock, *, ssl=None, **kwargs):
        if ssl:
            raise _not_yet('TLS (ssl=)')
        return await super().connect_accepted_socket(protocol_factory, sock, **kwargs)

    async def start_tls(self, *args, **kwargs):
        raise _not_yet('TLS (start_tls)')

    async def create_datagram_endpoint(self, *args, **kwargs):
        raise _not_yet('datagram endpoints')

    async def subprocess_exec(self, *args, **kwargs):
        raise _not_yet('subprocesses')

    async def subprocess_shell(self, *args, **kwargs):
        raise _not_yet('subprocesses')


_create_unix_connection = Loop.create_unix_connection
_create_unix_server = Loop.create_unix_server


async def _unix_connection(self, protocol_factory, path=None, *, ssl=None, **kwargs):
    if ssl:
        raise _not_yet('TLS (ssl=)')
    return await _create_unix_connection(self, protocol_factory, path, **kwargs)


async def _unix_server(self, protocol_factory, path=None, *, ssl=None, **kwargs):
    if ssl:
        raise _not_yet('TLS (ssl=)')
    return await _create_unix_server(self, protocol_factory, path, **kwargs)


Loop.create_unix_connection = _unix_connection
Loop.create_unix_server = _unix_server


def new_event_loop():
    """A new ioloop.Loop."""
    return Loop()


class EventLoopPolicy(asyncio.DefaultEventLoopPolicy):
    """asyncio's default policy, with ioloop.Loop as its loops."""
    _loop_factory = Loop

    def __repr__(self):
        return f'<{type(self).__name__}>'


def install():
    """Make ioloop.Loop asyncio's loop: sets an EventLoopPolicy."""
    asyncio.set_event_loop_policy(EventLoopPolicy())


def run(main, *, debug=False, **kwargs):
    """Like asyncio.run(main, debug=debug), on a new ioloop.Loop."""
    with asyncio.Runner(debug=debug, loop_factory=new_event_loop, **kwargs) as runner:
        return runner.run(main)
