"""TCP and Unix transports, servers, Protocol / BufferedProtocol, flow
control, asyncio streams on top, peers that reset or stall."""
import asyncio
import os
import socket
import struct
import tempfile

import pytest

import ioloop


class Recorder(asyncio.Protocol):
    def __init__(self):
        self.events = []
        self.data = bytearray()
        self.transport = None
        self.lost = None

    def connection_made(self, transport):
        self.transport = transport
        self.events.append('made')
        self.lost = asyncio.get_running_loop().create_future()

    def data_received(self, data):
        self.data += data

    def eof_received(self):
        self.events.append('eof')

    def pause_writing(self):
        self.events.append('pause')

    def resume_writing(self):
        self.events.append('resume')

    def connection_lost(self, exc):
        self.events.append(('lost', type(exc).__name__ if exc else None))
        self.lost.set_result(exc)


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)

    def eof_received(self):
        self.transport.close()  # flushes what is queued, then closes


async def read_until(proto, n):
    while len(proto.data) < n:
        await asyncio.sleep(0.001)
    return bytes(proto.data)


def test_echo_and_transport_api(loop):
    async def main():
        srv = await loop.create_server(Echo, '127.0.0.1', 0)
        port = srv.sockets[0].getsockname()[1]
        tr, pr = await loop.create_connection(Recorder, '127.0.0.1', port)
        assert type(tr) is ioloop.SocketTransport  # the C transport, not asyncio's
        assert pr.events == ['made']
        assert 'fd=' in repr(tr)
        sock = tr.get_extra_info('socket')
        assert tr.get_extra_info('peername') == ('127.0.0.1', port)
        assert tr.get_extra_info('sockname') == sock.getsockname()
        assert tr.get_extra_info('nonexistent', 'default') == 'default'
        tr.write(b'hello ')
        tr.writelines([b'wor', bytearray(b'ld'), memoryview(b'!')])
        assert await read_until(pr, 12) == b'hello world!'
        assert tr.can_write_eof()
        assert tr.is_reading()
        tr.pause_reading()
        assert not tr.is_reading()
        tr.write(b'more')
        await asyncio.sleep(0.05)
        assert bytes(pr.data) == b'hello world!'  # paused: nothing read
        tr.resume_reading()
        assert await read_until(pr, 16) == b'hello world!more'
        tr.write_eof()
        await pr.lost
        assert 'eof' in pr.events and pr.events[-1] == ('lost', None)
        assert tr.is_closing()
        srv.close()
        await srv.wait_closed()
    loop.run_until_complete(main())


def test_buffered_protocol(loop):
    class Buffered(asyncio.BufferedProtocol):
        def __init__(self):
            self.buf = bytearray(7)
            self.got = bytearray()
            self.done = loop.create_future()

        def connection_made(self, tr):
            self.tr = tr

        def get_buffer(self, hint):
            return self.buf

        def buffer_updated(self, n):
            self.got += self.buf[:n]

        def eof_received(self):
            self.done.set_result(bytes(self.got))

    async def main():
        srv = await loop.create_server(Buffered, '127.0.0.1', 0)
        protos = []
        srv2 = srv
        port = srv.sockets[0].getsockname()[1]
        r, w = await asyncio.open_connection('127.0.0.1', port)
        w.write(b'0123456789' * 100)
        w.write_eof()
        await asyncio.sleep(0.05)
        w.close()
        srv2.close()
        await srv2.wait_closed()
        return protos
    # the server protocol is made by the factory: capture it
    made = []

    def factory():
        p = Buffered()
        made.append(p)
        return p

    async def main2():
        srv = await loop.create_server(factory, '127.0.0.1', 0)
        port = srv.sockets[0].getsockname()[1]
        r, w = await asyncio.open_connection('127.0.0.1', port)
        w.write(b'0123456789' * 100)
        w.write_eof()
        got = await made[0].done
        made[0].tr.close()
        w.close()
        await w.wait_closed()
        srv.close()
        await srv.wait_closed()
        return got
    assert loop.run_until_complete(main2()) == b'0123456789' * 100


def test_streams(loop):
    async def handle(r, w):
        while line := await r.readline():
            w.write(line.upper())
            await w.drain()
        w.close()
        await w.wait_closed()

    async def main():
        srv = await asyncio.start_server(handle, '127.0.0.1', 0)
        port = srv.sockets[0].getsockname()[1]
        r, w = await asyncio.open_connection('127.0.0.1', port)
        out = []
        for i in range(100):
            w.write(b'line %d\n' % i)
            await w.drain()
            out.append(await r.readline())
        w.close()
        await w.wait_closed()
        srv.close()
        await srv.wait_closed()
        return out
    assert loop.run_until_complete(main()) == [b'LINE %d\n' % i for i in range(100)]


def test_flow_control_with_stalled_peer(loop):
    async def main():
        stalled = socket.socket()
        stalled.bind(('127.0.0.1', 0))
        stalled.listen()
        port = stalled.getsockname()[1]
        tr, pr = await loop.create_connection(Recorder, '127.0.0.1', port)
        peer, _ = stalled.accept()  # accepted but never read: the peer stalls
        tr.set_write_buffer_limits(high=64 * 1024, low=16 * 1024)
        assert tr.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
        chunk = b'x' * 65536
        for _ in range(200):
            tr.write(chunk)
            if 'pause' in pr.events:
                break
            await asyncio.sleep(0)
        assert 'pause' in pr.events
        assert tr.get_write_buffer_size() > 64 * 1024
        # Now drain it on the peer side; the transport resumes the protocol.
        peer.setblocking(False)
        total = 0
        while 'resume' not in pr.events:
            try:
                total += len(peer.recv(1 << 20))
            except BlockingIOError:
                await asyncio.sleep(0.001)
        assert tr.get_write_buffer_size() <= 16 * 1024
        tr.abort()
        await pr.lost
        peer.close()
        stalled.close()
    loop.run_until_complete(main())


def test_peer_reset(loop):
    async def main():
        lsock = socket.socket()
        lsock.bind(('127.0.0.1', 0))
        lsock.listen()
        tr, pr = await loop.create_connection(Recorder, *lsock.getsockname())
        peer, _ = lsock.accept()
        # RST instead of FIN: SO_LINGER 0, then close.
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
        peer.close()
        exc = await asyncio.wait_for(pr.lost, 5)
        assert isinstance(exc, ConnectionResetError)
        tr.write(b'after reset')  # ignored (logged after a few), never raises
        lsock.close()
    loop.run_until_complete(main())


def test_write_to_reset_peer(loop):
    async def main():
        lsock = socket.socket()
        lsock.bind(('127.0.0.1', 0))
        lsock.listen()
        tr, pr = await loop.create_connection(Recorder, *lsock.getsockname())
        tr.pause_reading()  # only the write path can notice
        peer, _ = lsock.accept()
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
        peer.close()
        await asyncio.sleep(0.05)
        for _ in range(100):
            tr.write(b'x' * 100000)
            if pr.lost.done():
                break
            await asyncio.sleep(0.005)
        exc = await asyncio.wait_for(pr.lost, 5)
        assert isinstance(exc, (ConnectionResetError, BrokenPipeError))
        lsock.close()
    loop.run_until_complete(main())


def test_close_and_abort(loop):
    async def main():
        srv = await loop.create_server(Echo, '127.0.0.1', 0)
        port = srv.sockets[0].getsockname()[1]
        tr, pr = await loop.create_connection(Recorder, '127.0.0.1', port)
        tr.write(b'bye')
        tr.close()  # flushes then closes
        assert tr.is_closing()
        await pr.lost
        tr2, pr2 = await loop.create_connection(Recorder, '127.0.0.1', port)
        tr2.abort()
        await pr2.lost
        assert pr2.events[-1] == ('lost', None)
        srv.close()
        await srv.wait_closed()
    loop.run_until_complete(main())


def test_server_api_several_hosts_reuse_port(loop):
    async def main():
        srv = await loop.create_server(Echo, ['127.0.0.1', '127.0.0.2'], 0, reuse_port=True, backlog=10,
                                       start_serving=False)
        assert len(srv.sockets) == 2
        assert not srv.is_serving()
        await srv.start_serving()
        assert srv.is_serving()
        assert srv.get_loop() is loop
        for s in srv.sockets:
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
            r, w = await asyncio.open_connection(*s.getsockname())
            w.write(b'ping')
            assert await r.readexactly(4) == b'ping'
            w.write_eof()
            assert await r.read() == b''  # the server echoed our EOF and closed
            w.close()
            await w.wait_closed()
        task = asyncio.ensure_future(srv.serve_forever())
        await asyncio.sleep(0.01)
        srv.close()
        with pytest.raises(asyncio.CancelledError):
            await task
        await srv.wait_closed()
        assert not srv.is_serving()
    loop.run_until_complete(main())


def test_unix(loop):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, 'sock')

        async def main():
            srv = await loop.create_unix_server(Echo, path)
            tr, pr = await loop.create_unix_connection(Recorder, path)
            tr.write(b'unix')
            assert await read_until(pr, 4) == b'unix'
            assert tr.get_extra_info('peername') == path
            tr.close()
            await pr.lost
            r, w = await asyncio.open_unix_connection(path)
            w.write(b'stream')
            assert await r.readexactly(6) == b'stream'
            w.write_eof()
            assert await r.read() == b''
            w.close()
            await w.wait_closed()
            srv.close()
            await srv.wait_closed()
        loop.run_until_complete(main())


def test_connect_accepted_socket(loop):
    async def main():
        a, b = socket.socketpair()
        tr, pr = await loop.connect_accepted_socket(Echo, a)
        b.sendall(b'abc')
        b.setblocking(False)
        got = await loop.sock_recv(b, 10)
        tr.close()
        b.close()
        return got
    assert loop.run_until_complete(main()) == b'abc'


def test_add_reader_on_transport_fd_refused(loop):
    async def main():
        srv = await loop.create_server(Echo, '127.0.0.1', 0)
        tr, pr = await loop.create_connection(Recorder, *srv.sockets[0].getsockname())
        with pytest.raises(RuntimeError, match='used by transport'):
            loop.add_reader(tr.get_extra_info('socket').fileno(), print)
        tr.close()
        await pr.lost
        srv.close()
        await srv.wait_closed()
    loop.run_until_complete(main())


def test_server_protocol_factory_failure_closes_that_connection(loop):
    calls = []

    def factory():
        calls.append(1)
        if len(calls) == 1:
            raise ValueError('no protocol for you')
        return Echo()

    async def main():
        srv = await loop.create_server(factory, '127.0.0.1', 0)
        addr = srv.sockets[0].getsockname()
        r, w = await asyncio.open_connection(*addr)
        assert await r.read() == b''  # the first connection is closed
        w.close()
        r, w = await asyncio.open_connection(*addr)
        w.write(b'ok')
        assert await r.readexactly(2) == b'ok'  # the server still serves
        w.close()
        await w.wait_closed()
        srv.close()
        await srv.wait_closed()
    loop.run_until_complete(main())


def test_many_pending_accepts(loop):
    async def main():
        srv = await loop.create_server(Echo, '127.0.0.1', 0, backlog=200)
        addr = srv.sockets[0].getsockname()
        conns = await asyncio.gather(*(asyncio.open_connection(*addr) for _ in range(150)))
        for i, (r, w) in enumerate(conns):
            w.write(b'%03d' % i)
        for i, (r, w) in enumerate(conns):
            assert await r.readexactly(3) == b'%03d' % i
            w.close()
        srv.close()
        await srv.wait_closed()
    loop.run_until_complete(main())
