"""add_signal_handler / remove_signal_handler on the library's signalfd."""
import asyncio
import os
import signal
import threading

import pytest


def test_signal_handler_runs_on_the_loop(loop):
    out = []
    loop.add_signal_handler(signal.SIGUSR1, lambda *a: (out.append(a), loop.stop()), 'arg')
    loop.call_soon(os.kill, os.getpid(), signal.SIGUSR1)
    loop.run_forever()
    assert out == [('arg',)]
    assert loop.remove_signal_handler(signal.SIGUSR1) is True
    assert loop.remove_signal_handler(signal.SIGUSR1) is False


def test_replace_and_remove_restores_python_handler(loop):
    got = []
    old = signal.signal(signal.SIGUSR2, lambda s, f: got.append('python'))
    try:
        out = []
        loop.add_signal_handler(signal.SIGUSR2, out.append, 1)
        loop.add_signal_handler(signal.SIGUSR2, lambda: (out.append(2), loop.stop()))
        loop.call_soon(os.kill, os.getpid(), signal.SIGUSR2)
        loop.run_forever()
        assert out == [2]
        assert loop.remove_signal_handler(signal.SIGUSR2)
        os.kill(os.getpid(), signal.SIGUSR2)
        assert got == ['python']
    finally:
        signal.signal(signal.SIGUSR2, old)


def test_close_removes_signal_handlers():
    import ioloop
    lp = ioloop.new_event_loop()
    lp.add_signal_handler(signal.SIGUSR1, print)
    lp.close()
    lp2 = ioloop.new_event_loop()  # another loop may take the signal now
    lp2.add_signal_handler(signal.SIGUSR1, print)
    lp2.close()


def test_asyncio_errors(loop):
    with pytest.raises(TypeError):
        loop.add_signal_handler('x', print)
    with pytest.raises(ValueError):
        loop.add_signal_handler(100000, print)
    with pytest.raises(RuntimeError, match='cannot be caught'):
        loop.add_signal_handler(signal.SIGKILL, print)

    async def coro():
        pass
    with pytest.raises(TypeError):
        loop.add_signal_handler(signal.SIGUSR1, coro)
    errs = []

    def off_main():
        try:
            loop.add_signal_handler(signal.SIGUSR1, print)
        except RuntimeError as e:
            errs.append(e)
    t = threading.Thread(target=off_main)
    t.start()
    t.join()
    assert errs and 'main thread' in str(errs[0])


def test_keyboard_interrupt_from_python_handler(loop):
    # SIGINT with Python's default handler interrupts a sleeping loop.
    loop.call_later(0.05, os.kill, os.getpid(), signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        loop.run_forever()
    assert not loop.is_running()
