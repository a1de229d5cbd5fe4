"""call_soon_threadsafe: the library's lock-free post and waker."""
import threading
import time

import ioloop


def test_several_threads_exactly_once_in_order(loop):
    threads, per_thread = 4, 20000
    seen = {t: [] for t in range(threads)}
    done = []

    def record(t, i):
        seen[t].append(i)

    def producer(t):
        for i in range(per_thread):
            loop.call_soon_threadsafe(record, t, i)
        loop.call_soon_threadsafe(done.append, t)

    def check_done():
        if len(done) == threads:
            loop.stop()
        else:
            loop.call_later(0.005, check_done)
    ts = [threading.Thread(target=producer, args=(t,)) for t in range(threads)]
    loop.call_soon(lambda: [t.start() for t in ts])
    loop.call_soon(check_done)
    loop.run_forever()
    for t in ts:
        t.join()
    for t in range(threads):
        assert seen[t] == list(range(per_thread)), t  # exactly once, per-thread order


def test_at_most_one_wakeup_per_sleep(loop):
    # A flood of posts from two threads: the waker writes the eventfd at
    # most once per sleep of the loop, never once per post.
    n = 50000
    done = []

    def producer():
        for i in range(n):
            loop.call_soon_threadsafe(int)
        loop.call_soon_threadsafe(done.append, 1)

    def check():
        if len(done) == 2:
            loop.stop()
        else:
            loop.call_later(0.002, check)
    ts = [threading.Thread(target=producer) for _ in range(2)]
    before = loop._stats()
    loop.call_soon(lambda: [t.start() for t in ts])
    loop.call_soon(check)
    loop.run_forever()
    for t in ts:
        t.join()
    st = loop._stats()
    posts = st['callbacks_remote'] - before['callbacks_remote']
    wakeups = st['wakeups'] - before['wakeups']
    iterations = st['iterations'] - before['iterations']
    assert posts >= 2 * n
    assert wakeups <= iterations + 1
    assert wakeups < posts / 10


def test_wakes_a_sleeping_loop_promptly(loop):
    got = []

    def later():
        time.sleep(0.05)
        t0 = time.monotonic()
        loop.call_soon_threadsafe(lambda: (got.append(time.monotonic() - t0), loop.stop()))
    threading.Thread(target=later).start()
    loop.run_forever()  # nothing else scheduled: the loop sleeps without a timeout
    assert got and got[0] < 1.0


def test_gil_released_while_sleeping(loop):
    # While the loop sleeps, another Python thread makes progress.
    counter = [0]
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            counter[0] += 1
    t = threading.Thread(target=spin)
    t.start()
    loop.call_later(0.2, loop.stop)
    loop.run_forever()
    before = counter[0]
    time.sleep(0.05)
    stop.set()
    t.join()
    assert before > 1000


def test_returns_a_cancellable_handle(loop):
    out = []
    h = loop.call_soon_threadsafe(out.append, 1)
    assert isinstance(h, ioloop.Handle)
    h.cancel()
    loop.call_soon_threadsafe(loop.stop)
    loop.run_forever()
    assert out == []


def test_post_from_thread_after_close_raises():
    lp = ioloop.new_event_loop()
    lp.close()
    errs = []

    def post():
        try:
            lp.call_soon_threadsafe(print)
        except RuntimeError as e:
            errs.append(e)
    t = threading.Thread(target=post)
    t.start()
    t.join()
    assert errs


def test_loop_state_calls_refused_from_other_thread_while_running(loop):
    import socket
    a, b = socket.socketpair()
    errors = []

    def other():
        for call in (lambda: loop.add_reader(a, print), lambda: loop.remove_reader(a),
                     lambda: loop.call_at(loop.time() + 1, print)):
            try:
                call()
            except RuntimeError as e:
                errors.append(str(e))
        loop.call_soon_threadsafe(loop.stop)
    loop.call_soon(lambda: threading.Thread(target=other).start())
    loop.run_forever()
    assert len(errors) == 3 and all('Non-thread-safe' in e for e in errors)
    assert loop._fd_handles(a) == (None, None)
    a.close()
    b.close()


def test_timer_cancelled_from_other_thread_never_runs(loop):
    out = []
    h = loop.call_later(0.05, out.append, 'ran')
    t = threading.Thread(target=h.cancel)
    loop.call_soon(t.start)
    loop.call_later(0.1, loop.stop)
    loop.run_forever()
    t.join()
    assert h.cancelled() and out == []
    assert loop._timer_count == 0  # the library's timer fired and was dropped
