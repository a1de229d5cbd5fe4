"""Reference and memory leaks: loops with a server and a connection
created and closed many times, and a million call_soon, with RSS flat."""
import asyncio
import gc
import os
import socket

from conftest import rss_kib

import ioloop

CYCLES = int(os.environ.get('IOLOOP_LEAK_CYCLES', '3000'))


def one_cycle():
    lp = ioloop.new_event_loop()

    accepted = lp.create_future()

    class Server(asyncio.Protocol):
        def connection_made(self, transport):
            accepted.set_result(transport)

    async def main():
        srv = await lp.create_server(Server, '127.0.0.1', 0)
        tr, _ = await lp.create_connection(asyncio.Protocol, *srv.sockets[0].getsockname())
        (await accepted).close()
        lp.call_later(10, print)          # a timer left pending at close
        lp.call_soon_threadsafe(print)     # a post left pending at close
        tr.close()
        srv.close()
        await srv.wait_closed()
        await asyncio.sleep(0)             # connection_lost runs
    lp.run_until_complete(main())
    lp.call_soon(print)
    lp.close()


def test_loop_server_connection_cycles_rss_flat():
    for _ in range(200):  # warm up caches and allocator pools
        one_cycle()
    gc.collect()
    before = rss_kib()
    objs_before = len(gc.get_objects())
    for _ in range(CYCLES):
        one_cycle()
    gc.collect()
    grown = rss_kib() - before
    assert grown < 4096, f'RSS grew {grown} KiB over {CYCLES} cycles'
    assert len(gc.get_objects()) - objs_before < 500


def test_million_call_soon_rss_flat(loop):
    n = 1000000
    count = [0]

    def cb(x):
        count[0] += 1

    def batch(k):
        for _ in range(k):
            loop.call_soon(cb, None)
    # warm up: the ready queue grows to its size once
    batch(100000)
    loop.call_soon(loop.stop)
    loop.run_forever()
    gc.collect()
    before = rss_kib()
    for _ in range(n // 100000):
        batch(100000)
        loop.call_soon(loop.stop)
        loop.run_forever()
    gc.collect()
    assert count[0] == n + 100000
    assert rss_kib() - before < 2048


def test_handles_are_freed(loop):
    import weakref

    class Cb:
        def __call__(self):
            pass
    cb = Cb()
    ref = weakref.ref(cb)
    loop.call_soon(cb)
    loop.call_later(0, cb)
    loop.call_soon_threadsafe(cb)
    h = loop.call_later(100, cb)
    a, b = socket.socketpair()
    loop.add_reader(a, cb)
    loop.call_soon(loop.stop)
    loop.run_forever()
    h.cancel()
    loop.remove_reader(a)
    del cb, h
    gc.collect()
    assert ref() is None
    a.close()
    b.close()
