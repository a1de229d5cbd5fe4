"""Handles on the ready / post queue are not tracked by the GC (nor their
context copy) while only the queue holds them; they go back to the GC when
the queue lets go and someone else still holds them, so cycles through a
kept Handle are still collected, and contexts behave as asyncio's."""
import contextvars
import gc
import threading
import weakref

var = contextvars.ContextVar('var', default='unset')


def _cycle_collected_after_run(loop, post):
    ran = []

    class X:
        def cb(self):
            ran.append(1)
    x = X()
    x.handle = post(x.cb)          # x -> handle -> x.cb -> x
    ref = weakref.ref(x)
    del x
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert ran == [1]
    gc.collect()
    assert ref() is None, 'a cycle through a kept Handle was not collected'


def test_cycle_through_kept_call_soon_handle_collected(loop):
    _cycle_collected_after_run(loop, loop.call_soon)


def test_cycle_through_kept_threadsafe_handle_collected(loop):
    _cycle_collected_after_run(loop, loop.call_soon_threadsafe)


def test_cycle_through_cancelled_handle_collected(loop):
    class X:
        def cb(self):
            raise AssertionError('cancelled callback ran')
    x = X()
    x.handle = loop.call_soon_threadsafe(x.cb)
    x.handle.cancel()
    ref = weakref.ref(x)
    del x
    loop.call_soon(loop.stop)
    loop.run_forever()
    gc.collect()
    assert ref() is None


def test_queued_handle_untracked_then_tracked_when_kept(loop):
    h = loop.call_soon(lambda: None)
    assert not gc.is_tracked(h)     # only the queue (and we) hold it
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert gc.is_tracked(h)         # the queue let go; we still hold it


def test_close_with_queued_kept_handles_collects_cycles(loop):
    class X:
        def cb(self):
            pass
    x, y = X(), X()
    x.handle = loop.call_soon(x.cb)
    y.handle = loop.call_soon_threadsafe(y.cb)
    refs = [weakref.ref(x), weakref.ref(y)]
    del x, y
    loop.close()
    gc.collect()
    assert [r() for r in refs] == [None, None]


def test_context_copied_per_handle_and_isolated(loop):
    seen = []

    def setter(tag):
        seen.append((tag, var.get()))
        var.set(tag)

    var.set('outer')
    a = loop.call_soon_threadsafe(setter, 'a')
    b = loop.call_soon(setter, 'b')
    var.set('later')                 # after scheduling: not seen by a or b
    ctx_a = a.get_context()
    assert ctx_a is a.get_context()
    assert ctx_a is not b.get_context()
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert sorted(seen) == [('a', 'outer'), ('b', 'outer')]
    assert ctx_a[var] == 'a' and b.get_context()[var] == 'b'
    assert var.get() == 'later'
    gc.collect()                     # the copies are tracked and sound
    assert gc.is_tracked(ctx_a)


def test_context_cycle_set_in_callback_collected(loop):
    # A callback stores, in its own context (the handle's copy), an object
    # that refers to that context: the cycle goes through the copy.
    refs = []

    class Box:
        pass

    def cb(me):
        box = Box()
        box.ctx = me[0].get_context()
        var.set(box)
        refs.append(weakref.ref(box))
    for post in (loop.call_soon, loop.call_soon_threadsafe):
        me = []
        me.append(post(cb, me))
        del me
    loop.call_soon(loop.stop)
    loop.run_forever()
    gc.collect()
    assert [r() for r in refs] == [None, None]


def test_threadsafe_from_threads_then_get_context(loop):
    handles = []

    def producer():
        for _ in range(1000):
            handles.append(loop.call_soon_threadsafe(lambda: None))
    ts = [threading.Thread(target=producer) for _ in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    gc.collect()                     # while queued and untracked
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert all(gc.is_tracked(h) and h.get_context() is not None for h in handles)
    gc.collect()


def test_context_snapshot_follows_every_change(loop):
    # Handles scheduled from the same unchanged context share a snapshot;
    # any change in between (set, reset, another context entered, another
    # thread) must show in the handles scheduled after it.
    seen = []

    def record(tag):
        seen.append((tag, var.get()))
        var.set(f'changed by {tag}')   # in the handle's own copy only

    var.set('v1')
    loop.call_soon(record, 1)
    loop.call_soon_threadsafe(record, 2)
    tok = var.set('v2')
    loop.call_soon(record, 3)
    var.reset(tok)
    loop.call_soon(record, 4)
    ctx = contextvars.copy_context()
    ctx.run(var.set, 'in ctx')
    ctx.run(loop.call_soon, record, 5)
    loop.call_soon(record, 6)

    def other_thread():
        var.set('thread')
        loop.call_soon_threadsafe(record, 7)
    t = threading.Thread(target=other_thread)
    t.start()
    t.join()
    loop.call_soon(record, 8)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert sorted(seen) == [(1, 'v1'), (2, 'v1'), (3, 'v2'), (4, 'v1'), (5, 'in ctx'),
                            (6, 'v1'), (7, 'thread'), (8, 'v1')]
    assert var.get() == 'v1'
