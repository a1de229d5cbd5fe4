"""fd readiness (add_reader / add_writer on one library handler per fd)
and the sock_* coroutines."""
import asyncio
import os
import socket
import tempfile

import pytest


def test_reader_and_writer_on_one_fd(loop):
    a, b = socket.socketpair()
    a.setblocking(False)
    out = []
    loop.add_writer(a, lambda: (out.append('w'), loop.remove_writer(a)))
    loop.add_reader(a.fileno(), lambda: (out.append(a.recv(10)), loop.stop()))
    b.send(b'hi')
    loop.run_forever()
    assert 'w' in out and b'hi' in out
    assert loop.remove_reader(a) is True
    assert loop.remove_reader(a) is False
    assert loop.remove_writer(a) is False
    a.close()
    b.close()


def test_replacing_a_reader_cancels_the_old_handle(loop):
    a, b = socket.socketpair()
    out = []
    loop.add_reader(a, out.append, 'old')
    old = loop._fd_handles(a)[0]
    loop.add_reader(a, lambda: (out.append('new'), loop.remove_reader(a), loop.stop()))
    assert old.cancelled()
    b.send(b'x')
    loop.run_forever()
    assert out == ['new']
    a.close()
    b.close()


def test_remove_reader_inside_its_callback_and_fd_reuse(loop):
    for _ in range(3):
        a, b = socket.socketpair()
        out = []
        b.send(b'x')

        def cb():
            out.append(1)
            loop.remove_reader(a)
            loop.call_soon(loop.stop)
        loop.add_reader(a, cb)
        loop.run_forever()
        assert out == [1]
        a.close()
        b.close()


def test_fd_closed_without_remove_then_number_reused(loop):
    a, b = socket.socketpair()
    fd = a.fileno()
    loop.add_reader(fd, print)
    a.close()
    b.close()
    c, d = socket.socketpair()
    # The number may well be reused; a writer added now must still work.
    out = []
    loop.add_writer(c, lambda: (out.append(1), loop.remove_writer(c), loop.stop()))
    loop.run_forever()
    assert out == [1]
    loop.remove_reader(fd)
    c.close()
    d.close()


def test_bad_fds(loop):
    with pytest.raises(ValueError):
        loop.add_reader(-1, print)
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(OSError):
        loop.add_reader(r, print)
    if loop._poller == 'epoll':
        with tempfile.TemporaryFile() as f:
            with pytest.raises(PermissionError):  # as epoll says for regular files
                loop.add_reader(f, print)


def test_error_event_reaches_the_reader(loop):
    a, b = socket.socketpair()
    out = []
    loop.add_reader(a, lambda: (out.append(a.recv(10)), loop.remove_reader(a), loop.stop()))
    b.close()
    loop.run_forever()
    assert out == [b'']
    a.close()


def test_sock_methods(loop):
    async def main():
        srv = socket.socket()
        srv.bind(('127.0.0.1', 0))
        srv.listen()
        srv.setblocking(False)
        cli = socket.socket()
        cli.setblocking(False)
        accept = asyncio.ensure_future(loop.sock_accept(srv))
        await loop.sock_connect(cli, srv.getsockname())
        conn, addr = await accept
        conn.setblocking(False)
        await loop.sock_sendall(cli, b'x' * 1000000)
        got = bytearray()
        while len(got) < 1000000:
            got += await loop.sock_recv(conn, 65536)
        buf = bytearray(10)
        await loop.sock_sendall(conn, b'hello')
        n = await loop.sock_recv_into(cli, buf)
        # sock_sendfile
        with tempfile.TemporaryFile() as f:
            f.write(b'f' * 100000)
            f.flush()
            f.seek(0)
            sent = await loop.sock_sendfile(cli, f)
        got2 = bytearray()
        while len(got2) < 100000:
            got2 += await loop.sock_recv(conn, 65536)
        for s in (srv, cli, conn):
            s.close()
        return len(got), bytes(buf[:n]), sent, len(got2)
    assert loop.run_until_complete(main()) == (1000000, b'hello', 100000, 100000)


def test_sock_recv_cancel_removes_reader(loop):
    a, b = socket.socketpair()
    a.setblocking(False)

    async def main():
        t = asyncio.ensure_future(loop.sock_recv(a, 10))
        await asyncio.sleep(0.01)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        await asyncio.sleep(0)
    loop.run_until_complete(main())
    assert loop._fd_handles(a) == (None, None)
    a.close()
    b.close()


def test_sock_connect_refused(loop):
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    addr = s.getsockname()
    s.close()
    c = socket.socket()
    c.setblocking(False)
    with pytest.raises(ConnectionRefusedError):
        loop.run_until_complete(loop.sock_connect(c, addr))
    c.close()


def test_pipes(loop):
    async def main():
        r, w = os.pipe()
        reader = asyncio.StreamReader()
        rt, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(r, 'rb'))
        wt, wp = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(w, 'wb'))
        wt.write(b'through the pipe')
        wt.close()
        got = await reader.read()
        rt.close()
        return got
    assert loop.run_until_complete(main()) == b'through the pipe'
