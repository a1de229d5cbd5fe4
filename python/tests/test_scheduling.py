"""Scheduling on ioloop.Loop: call_soon / call_later / call_at, handles,
run/stop/close, tasks and futures, the exception handler, debug mode,
executors and name resolution."""
import asyncio
import concurrent.futures
import contextvars
import logging
import socket
import sys
import threading
import time

import pytest

import ioloop


def test_is_an_asyncio_loop(loop):
    assert isinstance(loop, asyncio.AbstractEventLoop)
    assert isinstance(loop, ioloop.Loop)
    assert type(loop).__mro__[1] is ioloop._ioloop.CoreLoop


def test_policy_install_run():
    old = asyncio.get_event_loop_policy()
    try:
        ioloop.install()
        assert isinstance(asyncio.get_event_loop_policy(), ioloop.EventLoopPolicy)
        assert isinstance(asyncio.get_event_loop_policy(), asyncio.DefaultEventLoopPolicy)
        lp = asyncio.new_event_loop()
        assert isinstance(lp, ioloop.Loop)
        lp.close()

        async def main():
            return type(asyncio.get_running_loop()), asyncio.get_running_loop().get_debug()
        assert asyncio.run(main()) == (ioloop.Loop, sys.flags.dev_mode)
    finally:
        asyncio.set_event_loop_policy(old)
    assert ioloop.run(main(), debug=True) == (ioloop.Loop, True)


def test_call_soon_order_and_args(loop):
    out = []
    for i in range(5):
        loop.call_soon(out.append, i)
    loop.call_soon(lambda *a: out.append(a), 1, 2, 3)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == [0, 1, 2, 3, 4, (1, 2, 3)]


def test_call_soon_during_iteration_runs_next_iteration(loop):
    out = []

    def first():
        out.append('first')
        loop.call_soon(out.append, 'later')
        loop.stop()
    loop.call_soon(first)
    loop.run_forever()
    assert out == ['first']   # stop ends the iteration; 'later' waits
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == ['first', 'later']


def test_stop_before_run_forever_runs_one_iteration(loop):
    out = []
    loop.call_soon(out.append, 1)
    loop.stop()
    loop.run_forever()
    assert out == [1]
    assert not loop.is_running()


def test_context(loop):
    var = contextvars.ContextVar('var', default='default')
    ctx = contextvars.copy_context()
    ctx.run(var.set, 'in ctx')
    out = []
    loop.call_soon(lambda: out.append(var.get()), context=ctx)
    loop.call_later(0, lambda: out.append(var.get()), context=ctx)
    loop.call_soon_threadsafe(lambda: out.append(var.get()), context=ctx)
    loop.call_soon(lambda: out.append(var.get()))
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert sorted(out) == ['default', 'in ctx', 'in ctx', 'in ctx']
    h = loop.call_soon(print, context=ctx)
    assert h.get_context() is ctx
    h.cancel()
    with pytest.raises(TypeError):
        loop.call_soon(print, bogus=1)


def test_timers_order_cancel_and_when(loop):
    out = []
    t0 = loop.time()
    assert abs(t0 - time.monotonic()) < 0.1
    loop.call_later(0.03, out.append, 'c')
    loop.call_at(t0 + 0.01, out.append, 'a')
    h = loop.call_later(0.02, out.append, 'cancelled')
    loop.call_later(0.02, out.append, 'b')
    loop.call_later(-1, out.append, 'negative delay is now')
    assert isinstance(h, ioloop.TimerHandle) and isinstance(h, ioloop.Handle)
    assert h.when() == pytest.approx(t0 + 0.02, abs=0.01)
    h.cancel()
    assert h.cancelled()
    assert 'cancelled' in repr(h)
    h.cancel()  # twice is harmless
    loop.call_later(0.05, loop.stop)
    start = time.monotonic()
    loop.run_forever()
    assert time.monotonic() - start >= 0.045
    assert out == ['negative delay is now', 'a', 'b', 'c']
    assert loop._timer_count == 0


def test_equal_deadlines_keep_order(loop):
    out = []
    when = loop.time() + 0.01
    for i in range(20):
        loop.call_at(when, out.append, i)
    loop.call_at(when + 0.01, loop.stop)
    loop.run_forever()
    assert out == list(range(20))


def test_timer_args_checked(loop):
    with pytest.raises(TypeError):
        loop.call_later(None, print)
    with pytest.raises(TypeError):
        loop.call_later('1', print)
    with pytest.raises(TypeError):
        loop.call_at()


def test_run_until_complete_and_tasks(loop):
    async def child(x):
        await asyncio.sleep(0.001)
        return x * 2

    async def main():
        t = loop.create_task(child(21))
        f = loop.create_future()
        loop.call_later(0.001, f.set_result, 'done')
        return await t, await f, await asyncio.gather(*(child(i) for i in range(10)))
    assert loop.run_until_complete(main()) == (42, 'done', [i * 2 for i in range(10)])
    assert not loop.is_running()


def test_task_factory(loop):
    made = []

    def factory(lp, coro, **kw):
        t = asyncio.Task(coro, loop=lp, **kw)
        made.append(t)
        return t
    loop.set_task_factory(factory)
    assert loop.get_task_factory() is factory

    async def f():
        return 1
    assert loop.run_until_complete(f()) == 1
    assert len(made) == 1


def test_exception_handler(loop):
    seen = []
    loop.set_exception_handler(lambda lp, ctx: seen.append(ctx))
    assert loop.get_exception_handler() is not None

    def boom():
        raise ValueError('boom')
    h = loop.call_soon(boom)
    loop.call_later(0, boom)
    loop.call_soon_threadsafe(boom)
    loop.call_soon(loop.stop)
    loop.run_forever()  # the due timer and the post join the first iteration, as in asyncio
    assert len(seen) == 3
    assert all(isinstance(c['exception'], ValueError) for c in seen)
    assert seen[0]['handle'] is h
    assert seen[0]['message'].startswith('Exception in callback')
    loop.set_exception_handler(None)


def test_default_exception_handler_logs(loop, caplog):
    loop.call_soon(lambda: 1 / 0)
    loop.call_soon(loop.stop)
    with caplog.at_level(logging.ERROR, logger='asyncio'):
        loop.run_forever()
    assert 'ZeroDivisionError' in caplog.text


def test_keyboard_interrupt_and_system_exit_propagate(loop):
    out = []

    def interrupt():
        raise KeyboardInterrupt
    loop.call_soon(interrupt)
    loop.call_soon(out.append, 'after')
    with pytest.raises(KeyboardInterrupt):
        loop.run_forever()
    assert not loop.is_running()
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == ['after']  # the rest of the queue survived

    def exit_():
        raise SystemExit(3)
    loop.call_soon(exit_)
    with pytest.raises(SystemExit):
        loop.run_forever()


def test_debug_slow_callback_warning(loop, caplog):
    loop.set_debug(True)
    assert loop.get_debug()
    loop.slow_callback_duration = 0.01
    loop.call_soon(time.sleep, 0.02)
    loop.call_soon(loop.stop)
    with caplog.at_level(logging.WARNING, logger='asyncio'):
        loop.run_forever()
    assert 'Executing <Handle' in caplog.text and 'took' in caplog.text
    h = loop.call_soon(print)
    assert h._source_traceback
    h.cancel()


def test_debug_checks_thread_and_callback(loop):
    loop.set_debug(True)
    with pytest.raises(TypeError):
        loop.call_soon(asyncio.sleep)
    with pytest.raises(TypeError):
        loop.call_soon(42)
    errors = []

    def other():
        try:
            loop.call_soon(print)
        except RuntimeError as e:
            errors.append(e)
    loop.call_soon(lambda: (threading.Thread(target=other).start(), None))
    loop.call_later(0.1, loop.stop)
    loop.run_forever()
    assert errors and 'Non-thread-safe' in str(errors[0])


def test_timers_refused_from_other_thread_while_running(loop):
    errors = []

    def other():
        try:
            loop.call_later(1, print)
        except RuntimeError as e:
            errors.append(e)
        loop.call_soon_threadsafe(loop.stop)
    loop.call_soon(lambda: threading.Thread(target=other).start())
    loop.run_forever()
    assert len(errors) == 1


def test_closed_loop_refuses(loop):
    loop.close()
    assert loop.is_closed()
    for call in (lambda: loop.call_soon(print), lambda: loop.call_later(1, print),
                 lambda: loop.call_soon_threadsafe(print), lambda: loop.run_forever(),
                 lambda: loop.add_reader(0, print)):
        with pytest.raises(RuntimeError, match='closed'):
            call()
    loop.close()  # twice is harmless
    assert loop.remove_reader(0) is False


def test_close_with_pending_handles_drops_them():
    lp = ioloop.new_event_loop()
    out = []
    a, b = socket.socketpair()
    lp.call_soon(out.append, 'soon')
    t = lp.call_later(10, out.append, 'timer')
    lp.call_soon_threadsafe(out.append, 'threadsafe')
    th = threading.Thread(target=lambda: lp.call_soon_threadsafe(out.append, 'thread'))
    th.start()
    th.join()
    lp.add_reader(a, out.append, 'reader')
    b.send(b'x')
    assert lp._timer_count == 1
    lp.close()
    assert out == []
    assert lp._timer_count == 0 and lp._ready_count == 0
    assert not t.cancelled()  # dropped, as asyncio's close does, not cancelled
    a.close()
    b.close()


def test_close_running_loop_refused(loop):
    err = []

    def close():
        try:
            loop.close()
        except RuntimeError as e:
            err.append(e)
        loop.stop()
    loop.call_soon(close)
    loop.run_forever()
    assert err and 'running' in str(err[0])


def test_run_forever_reentrant_refused(loop):
    err = []

    def again():
        try:
            loop.run_forever()
        except RuntimeError as e:
            err.append(e)
        loop.stop()
    loop.call_soon(again)
    loop.run_forever()
    assert err and 'already running' in str(err[0])


def test_is_running(loop):
    seen = []
    loop.call_soon(lambda: seen.append(loop.is_running()))
    loop.call_soon(lambda: seen.append(asyncio.get_running_loop() is loop))
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == [True, True] and not loop.is_running()


def test_shutdown_asyncgens(loop):
    closed = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            closed.append(True)

    async def main():
        g = agen()
        assert await g.__anext__() == 1
        return g
    g = loop.run_until_complete(main())
    loop.run_until_complete(loop.shutdown_asyncgens())
    assert closed == [True]
    del g


def test_executor(loop):
    async def main():
        r = await loop.run_in_executor(None, lambda x: x + 1, 41)
        tid = await loop.run_in_executor(None, threading.get_ident)
        return r, tid
    r, tid = loop.run_until_complete(main())
    assert r == 42 and tid != threading.get_ident()
    ex = concurrent.futures.ThreadPoolExecutor(1)
    loop.set_default_executor(ex)
    assert loop.run_until_complete(loop.run_in_executor(None, sum, [1, 2])) == 3
    loop.run_until_complete(loop.shutdown_default_executor())
    with pytest.raises(RuntimeError):
        ex.submit(print)


def test_getaddrinfo_getnameinfo(loop):
    infos = loop.run_until_complete(loop.getaddrinfo('127.0.0.1', 80, type=socket.SOCK_STREAM))
    assert infos[0][4] == ('127.0.0.1', 80)
    host, port = loop.run_until_complete(loop.getnameinfo(('127.0.0.1', 80), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV))
    assert (host, port) == ('127.0.0.1', '80')


def test_sleep_wakes_in_time(loop):
    async def main():
        t0 = loop.time()
        await asyncio.sleep(0.05)
        return loop.time() - t0
    dt = loop.run_until_complete(main())
    assert 0.049 <= dt < 2.0


def test_handle_repr_and_attrs(loop):
    h = loop.call_soon(print, 1)
    assert repr(h).startswith('<Handle print(1)')
    assert h._callback is print and h._args == (1,)
    h.cancel()
    assert h._callback is None and h.cancelled()
    t = loop.call_later(5, print)
    assert repr(t).startswith('<TimerHandle when=')
    u = loop.call_later(6, print)
    assert t < u and not t > u and t <= t and t == t and hash(t) == hash(t)
    t.cancel()
    u.cancel()
    with pytest.raises(TypeError):
        ioloop.Handle()


def test_iteration_order_is_asyncios(loop):
    # One iteration: posts, then I/O callbacks, then due timers (asyncio's
    # _run_once order), whatever order the library produced them in.
    import socket as _socket
    a, b = _socket.socketpair()
    out = []
    b.send(b'x')

    def start():
        loop.call_later(0, out.append, 'timer')
        loop.add_reader(a, lambda: (out.append('io'), loop.remove_reader(a)))
        loop.call_soon_threadsafe(out.append, 'post')
        loop.call_later(0.05, loop.stop)
    loop.call_soon(start)
    loop.run_forever()
    assert out == ['post', 'io', 'timer']
    a.close()
    b.close()
