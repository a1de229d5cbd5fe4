#!/usr/bin/env python3
"""Keep-alive HTTPS, interleaved: several builds of http-hello (and nginx)
loaded in turn, round after round, by one iol-bench http -k -c64 (1 load
worker, 1 server worker), with each server's CPU (utime + stime of its
process tree, /proc) over the load. For A/B of two builds of ours, which
`iol-bench compare http --tls` cannot do (it runs its own build only).

    scripts/https_ab.py [--rounds R] [--duration S] [--loader IOL_BENCH]
                        LABEL=BUILD_DIR|nginx|nginx12 ...

BUILD_DIR: a release build dir holding examples/http-hello. nginx: as
bench/compare.c configures it (TLS 1.2 and 1.3, keepalive_requests
1000000); nginx12: the same with nginx 1.22's default protocols (TLS 1.2
here). Run it under `flock /tmp/iol-bench.lock`. Prints min / median / max
of req/s and requests per server CPU-ms, and per round the ratio of each
row's CPU figure to the first row's (the median of those ratios is the
figure to read on a noisy machine).
"""
import argparse, json, os, signal, statistics, subprocess, sys, tempfile, time

TCK = os.sysconf('SC_CLK_TCK')


def tree(pid):
    out = [pid]
    for t in os.listdir('/proc'):
        if t.isdigit():
            try:
                with open(f'/proc/{t}/stat') as f:
                    if int(f.read().rsplit(')', 1)[1].split()[1]) == pid:
                        out += tree(int(t))
            except (OSError, ValueError, IndexError):
                pass
    return out


def cpu_seconds(pids):
    total = 0
    for p in pids:
        try:
            with open(f'/proc/{p}/stat') as f:
                s = f.read().rsplit(')', 1)[1].split()
            total += int(s[11]) + int(s[12])
        except (OSError, ValueError, IndexError):
            pass
    return total / TCK


NGINX = """worker_processes 1;
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log;
worker_rlimit_nofile 65536;
events {{ worker_connections 16384; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {d}/cert.pem;
    ssl_certificate_key {d}/key.pem;
    {protocols}
    location / {{ default_type text/plain; return 200 "Hello, World!"; }}
  }}
}}
"""


def start(kind, port, d):
    if kind in ('nginx', 'nginx12'):
        protocols = 'ssl_protocols TLSv1.2 TLSv1.3;' if kind == 'nginx' else ''
        conf = f'{d}/nginx.conf'
        with open(conf, 'w') as f:
            f.write(NGINX.format(d=d, port=port, protocols=protocols))
        return subprocess.Popen(['nginx', '-c', conf, '-p', d, '-e', f'{d}/nginx-error.log'],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return subprocess.Popen([f'{kind}/examples/http-hello', '--host', '127.0.0.1', '--port', str(port),
                             '--workers', '1', '--tls-cert', f'{d}/cert.pem', '--tls-key', f'{d}/key.pem'],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser(usage=__doc__)
    ap.add_argument('--rounds', type=int, default=7)
    ap.add_argument('--duration', type=float, default=3)
    ap.add_argument('--loader', default=os.path.join(os.path.dirname(__file__), '../build-release/bench/iol-bench'))
    ap.add_argument('rows', nargs='+')
    a = ap.parse_args()
    rows = [r.split('=', 1) for r in a.rows]
    os.environ['PATH'] += ':/usr/sbin:/sbin'
    d = tempfile.mkdtemp(prefix='https_ab.')
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
                    '-keyout', f'{d}/key.pem', '-out', f'{d}/cert.pem', '-days', '1', '-subj', '/CN=localhost'],
                   check=True, capture_output=True)
    res = {label: [] for label, _ in rows}
    port = 20000 + os.getpid() % 20000
    for r in range(a.rounds):
        for label, kind in rows:
            port += 1
            p = start(kind, port, d)
            time.sleep(0.4)
            pids = tree(p.pid)
            c0 = cpu_seconds(pids)
            out = subprocess.run([a.loader, 'http', '--insecure', '--workers', '1', '--connections', '64',
                                  '--duration', str(a.duration), '--repeat', '1', '--json',
                                  f'https://127.0.0.1:{port}/'], capture_output=True, text=True).stdout
            c1 = cpu_seconds(pids)
            p.send_signal(signal.SIGTERM)
            p.wait()
            rps = json.loads(out.strip().splitlines()[-1])['results']['requests_per_sec']
            per_ms = rps * a.duration / max((c1 - c0) * 1000, 1e-9)
            res[label].append((rps, per_ms))
            print(f'round {r} {label:12s} req/s {rps:9.0f}  req/CPU-ms {per_ms:7.2f}', file=sys.stderr, flush=True)
    subprocess.run(['rm', '-rf', d])
    print(f'{"":12s} {"req/s min":>10s} {"median":>8s} {"max":>8s} | {"req/CPU-ms min":>14s} {"median":>7s} {"max":>7s}')
    for label, _ in rows:
        x = [v[0] for v in res[label]]
        y = [v[1] for v in res[label]]
        print(f'{label:12s} {min(x):10.0f} {statistics.median(x):8.0f} {max(x):8.0f} | '
              f'{min(y):14.2f} {statistics.median(y):7.2f} {max(y):7.2f}')
    first = rows[0][0]
    print(f'per round, {first} req/CPU-ms over this row\'s: median [min .. max]')
    for label, _ in rows[1:]:
        q = [f[1] / o[1] for f, o in zip(res[first], res[label])]
        print(f'  {label:12s} {statistics.median(q):.3f} [{min(q):.3f} .. {max(q):.3f}]')


if __name__ == '__main__':
    main()
