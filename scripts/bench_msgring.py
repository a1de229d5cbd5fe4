#!/usr/bin/env python3
"""A/B of the cross-loop wakeup (loop/wake.c): ring message vs eventfd.

usage: scripts/bench_msgring.py BASE_BENCH NEW_BENCH ROUNDS BENCH SPIN [IOL-BENCH FLAGS...]

BASE_BENCH: iol-bench built from the commit before (eventfd only); NEW_BENCH:
this tree's. Each round runs, interleaved, one repetition of each config
below, each under the shared bench lock (flock /tmp/iol-bench.lock). For
each run: the ioloop row's median (pingpong: us per round trip; handoff:
callbacks/s) and the process's CPU time (user + system, from rusage) per
operation in us (--count operations: pingpong round trips, handoff
callbacks). Prints every run, then min / median / max per config.
"""
import os, re, resource, statistics, subprocess, sys

CONFIGS = [  # label, binary (0 base, 1 new), poller, IOL_MSGRING
    ("base-uring", 0, "uring", "0"),
    ("eventfd-uring", 1, "uring", "0"),
    ("msg-uring", 1, "uring", "1"),
    ("msgnow-uring", 1, "uring", "now"),
    ("new-epoll", 1, "epoll", "1"),
    ("base-epoll", 0, "epoll", "0"),
]


def main():
    base, new, rounds, bench, spin = sys.argv[1:6]
    extra = sys.argv[6:] or ["--count=20000"]
    count = next((int(a.split("=")[1]) for a in extra if a.startswith("--count=")), None)
    only = os.environ.get("CONFIGS")
    configs = [c for c in CONFIGS if not only or c[0] in only.split(",")]
    res = {c[0]: ([], []) for c in configs}
    for r in range(int(rounds)):
        for label, which, poller, mode in configs:
            env = dict(os.environ, IOL_MSGRING=mode)
            cmd = ["flock", "/tmp/iol-bench.lock", (base, new)[which], bench, "--impl", "ioloop", "--repeat", "1",
                   "--spin-us", spin, "--poller", poller] + extra
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            p = subprocess.run(cmd, env=env, capture_output=True, text=True)
            out = p.stdout + p.stderr
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            m = re.search(r"ioloop\S*\s+(\S+)\s*/\s*(\S+)\s*/", out)
            if not m:
                print(label, "no result:", out[-300:], flush=True)
                continue
            v = float(m.group(2).rstrip("M"))
            cpu_op = cpu / count * 1e6 if count else float("nan")
            res[label][0].append(v)
            res[label][1].append(cpu_op)
            print(f"{r} {label} {v:.4g} cpu/op {cpu_op:.3g}us", flush=True)
    print()
    for label, (vs, cs) in res.items():
        if vs:
            vs, cs = sorted(vs), sorted(cs)
            print(f"{label:14s} n={len(vs):2d} value min/med/max {vs[0]:.4g} / {statistics.median(vs):.4g} / {vs[-1]:.4g}"
                  f"   cpu us/op {cs[0]:.3g} / {statistics.median(cs):.3g} / {cs[-1]:.3g}")


main()
