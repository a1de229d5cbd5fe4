#!/usr/bin/python3
"""Python event loops compared: ioloop, uvloop and asyncio's default loop.

Every row runs each loop in turn, round after round (interleaved, so a
noisy neighbour hurts all three alike), and prints min/median/max.

    PYTHONPATH=build/python /usr/bin/python3 bench/python/bench.py [--rounds R] [--duration S] [--json] [--only ROW]

Rows:
  echo-1k, echo-10k, echo-100k  an echo server on an asyncio.Protocol, in its
                                own process, loaded by the C client
                                (build/bench/python/echo-client): round trips/s
                                and round trips per server CPU ms
  streams-1k                    the same server on asyncio streams
  tornado-hello                 Tornado's "Hello, world" (tornado.web) in its
                                own process, keep-alive load from wrk
                                (-t1 -c10): requests/s and requests per
                                server CPU ms
  threadsafe-1, threadsafe-4    call_soon_threadsafe from 1 and 4 threads:
                                callbacks/s until the last one ran
  churn                         call_soon + call_later + cancel: ops/s
"""
import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time

IMPLS = ('ioloop', 'uvloop', 'asyncio')
HERE = os.path.dirname(os.path.abspath(__file__))


def new_loop(impl):
    if impl == 'ioloop':
        import ioloop
        return ioloop.new_event_loop()
    if impl == 'uvloop':
        import uvloop
        return uvloop.new_event_loop()
    return asyncio.SelectorEventLoop()


# ------------------------------------------------------------ echo server

class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


async def stream_echo(reader, writer):
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


def serve(impl, kind):
    """Child process: serve echo on 127.0.0.1, print the port, run until killed."""
    loop = new_loop(impl)
    asyncio.set_event_loop(loop)
    if kind == 'tornado':
        return serve_tornado(loop)
    if kind == 'protocol':
        srv = loop.run_until_complete(loop.create_server(Echo, '127.0.0.1', 0, backlog=1024))
    else:
        srv = loop.run_until_complete(asyncio.start_server(stream_echo, '127.0.0.1', 0, backlog=1024))
    print(srv.sockets[0].getsockname()[1], flush=True)
    loop.run_forever()


def serve_tornado(loop):
    """Tornado's "Hello, world" (tornado.web) on `loop` (set as current)."""
    import tornado.httpserver
    import tornado.netutil
    import tornado.web

    class MainHandler(tornado.web.RequestHandler):
        def get(self):
            self.write('Hello, world')

    async def start():
        app = tornado.web.Application([(r'/', MainHandler)])
        server = tornado.httpserver.HTTPServer(app)
        socks = tornado.netutil.bind_sockets(0, '127.0.0.1', backlog=1024)
        server.add_sockets(socks)
        return socks[0].getsockname()[1]
    port = loop.run_until_complete(start())
    print(port, flush=True)
    loop.run_forever()


def cpu_seconds(pid):
    with open(f'/proc/{pid}/stat') as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def echo_round(impl, kind, size, conns, duration, client):
    server = subprocess.Popen([sys.executable, __file__, '--serve', impl, '--kind', kind],
                              stdout=subprocess.PIPE, env=os.environ)
    try:
        port = int(server.stdout.readline())
        cpu0 = cpu_seconds(server.pid)
        out = subprocess.run([client, '127.0.0.1', str(port), str(conns), str(size), str(duration)],
                             check=True, capture_output=True, text=True).stdout.split()
        cpu = cpu_seconds(server.pid) - cpu0
    finally:
        server.kill()
        server.wait()
    roundtrips, seconds = int(out[1]), float(out[3])
    return {'requests_per_sec': roundtrips / seconds,
            'requests_per_cpu_ms': roundtrips / max(cpu * 1000, 1e-9)}


def parse_wrk(text):
    """(requests, seconds) from wrk's summary ("N requests in 2.00s, ...")."""
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 4 and words[1] == 'requests' and words[2] == 'in':
            t = words[3].rstrip(',')
            scale = {'ms': 1e-3, 'us': 1e-6, 'm': 60.0}.get(t.lstrip('0123456789.'), 1.0)
            return int(words[0]), float(t.rstrip('smu')) * scale
    raise RuntimeError('wrk: no summary in its output:\n' + text)


def tornado_round(impl, conns, duration):
    server = subprocess.Popen([sys.executable, __file__, '--serve', impl, '--kind', 'tornado'],
                              stdout=subprocess.PIPE, env=os.environ)
    try:
        port = int(server.stdout.readline())
        cpu0 = cpu_seconds(server.pid)
        out = subprocess.run(['wrk', '-t1', f'-c{conns}', f'-d{max(1, round(duration))}s',
                              f'http://127.0.0.1:{port}/'],
                             check=True, capture_output=True, text=True).stdout
        cpu = cpu_seconds(server.pid) - cpu0
    finally:
        server.kill()
        server.wait()
    if 'Non-2xx' in out:  # a server answering errors is not measured
        raise RuntimeError(f'tornado-hello on {impl}: wrk saw error responses:\n{out}')
    requests, seconds = parse_wrk(out)
    return {'requests_per_sec': requests / seconds,
            'requests_per_cpu_ms': requests / max(cpu * 1000, 1e-9)}


# ------------------------------------------------------------ in-process rows

def threadsafe_round(impl, threads, per_thread):
    loop = new_loop(impl)
    done = threading.Event()
    remaining = [threads * per_thread]

    def cb():
        remaining[0] -= 1
        if remaining[0] == 0:
            loop.stop()

    def producer():
        post = loop.call_soon_threadsafe
        for _ in range(per_thread):
            post(cb)
    ts = [threading.Thread(target=producer) for _ in range(threads)]
    t0 = time.perf_counter()
    loop.call_soon(lambda: [t.start() for t in ts])
    loop.run_forever()
    dt = time.perf_counter() - t0
    for t in ts:
        t.join()
    done.set()
    loop.close()
    return {'callbacks_per_sec': threads * per_thread / dt}


def churn_round(impl, n):
    loop = new_loop(impl)

    def nothing():
        pass

    def work():
        call_soon, call_later = loop.call_soon, loop.call_later
        for _ in range(n):
            call_soon(nothing)
            call_later(1.0, nothing).cancel()
        loop.call_soon(loop.stop)
    t0 = time.perf_counter()
    loop.call_soon(work)
    loop.run_forever()
    dt = time.perf_counter() - t0
    loop.close()
    return {'ops_per_sec': 3 * n / dt}  # call_soon, call_later, cancel


# ------------------------------------------------------------ driver

def machine():
    model = ''
    try:
        with open('/proc/cpuinfo') as f:
            model = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    return {'cpu': model, 'cpus': os.cpu_count(), 'kernel': platform.release()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--duration', type=float, default=2.0, help='seconds per echo measurement')
    ap.add_argument('--connections', type=int, default=10)
    ap.add_argument('--count', type=int, default=200000, help='callbacks per threadsafe / churn measurement')
    ap.add_argument('--client', default=None, help='the C echo client (default: found in build/)')
    ap.add_argument('--only', action='append', help='run only these rows')
    ap.add_argument('--json', action='store_true')
    ap.add_argument('--serve', help=argparse.SUPPRESS)
    ap.add_argument('--kind', help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        return serve(args.serve, args.kind)
    client = args.client
    if client is None:
        for build in ('build', 'build-py', 'build-release'):
            cand = os.path.join(HERE, '..', '..', build, 'bench', 'python', 'echo-client')
            if os.path.exists(cand):
                client = cand
                break
    rows = [
        ('echo-1k', 'requests_per_sec', lambda i: echo_round(i, 'protocol', 1024, args.connections, args.duration, client)),
        ('echo-10k', 'requests_per_sec', lambda i: echo_round(i, 'protocol', 10240, args.connections, args.duration, client)),
        ('echo-100k', 'requests_per_sec', lambda i: echo_round(i, 'protocol', 102400, args.connections, args.duration, client)),
        ('streams-1k', 'requests_per_sec', lambda i: echo_round(i, 'streams', 1024, args.connections, args.duration, client)),
        ('tornado-hello', 'requests_per_sec', lambda i: tornado_round(i, args.connections, args.duration)),
        ('threadsafe-1', 'callbacks_per_sec', lambda i: threadsafe_round(i, 1, args.count)),
        ('threadsafe-4', 'callbacks_per_sec', lambda i: threadsafe_round(i, 4, args.count // 4)),
        ('churn', 'ops_per_sec', lambda i: churn_round(i, args.count)),
    ]
    if args.only:
        rows = [r for r in rows if r[0] in args.only]
    if any(r[0] == 'tornado-hello' for r in rows) and not shutil.which('wrk'):
        sys.exit('bench.py: tornado-hello needs wrk (apt-get install wrk)')
    if any(r[0].startswith(('echo', 'streams')) for r in rows) and not client:
        sys.exit('bench.py: no echo-client; build the project (ninja -C build) or pass --client')
    out = sys.stderr if args.json else sys.stdout
    print(f'{"row":<14} {"impl":<8} {"figure":<20} {"min":>12} {"median":>12} {"max":>12}', file=out)
    mach = machine()
    for name, main_key, run in rows:
        results = {impl: [] for impl in IMPLS}
        for r in range(args.rounds):
            for impl in IMPLS:  # interleaved
                print(f'\r{name} round {r + 1}/{args.rounds} {impl}      ', end='', file=sys.stderr, flush=True)
                results[impl].append(run(impl))
        print('\r' + ' ' * 50 + '\r', end='', file=sys.stderr)
        for impl in IMPLS:
            rs = results[impl]
            summary = {}
            for key in rs[0]:
                vals = [x[key] for x in rs]
                summary[key] = statistics.median(vals)
                summary[key + '_min'] = min(vals)
                summary[key + '_max'] = max(vals)
                fmt = '>12.0f' if max(vals) >= 1000 else '>12.2f'
                print(f'{name:<14} {impl:<8} {key:<20} {min(vals):{fmt}} {statistics.median(vals):{fmt}} '
                      f'{max(vals):{fmt}}', file=out)
            if args.json:
                print(json.dumps({'bench': 'python-' + name, 'impl': impl,
                                  'params': {'rounds': args.rounds, 'duration': args.duration,
                                             'connections': args.connections, 'count': args.count},
                                  'machine': mach, 'results': summary}), flush=True)


if __name__ == '__main__':
    main()
