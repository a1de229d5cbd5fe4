"""Tornado's own test suite on ioloop.Loop.

    PYTHONPATH=build/python /usr/bin/python3 python/tornado_tests.py [runtests args]

Installs ioloop's event loop policy, then runs tornado.test.runtests
exactly as `python3 -m tornado.test.runtests` would (same arguments).
"""
import asyncio
import os
import sys

# This folder holds the package's sources, not the built package: import
# the one PYTHONPATH names.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or '.') != _here]

import ioloop  # noqa: E402

ioloop.install()
_probe = asyncio.new_event_loop()
assert isinstance(_probe, ioloop.Loop)
_probe.close()

from tornado.ioloop import IOLoop  # noqa: E402

_probe = IOLoop(make_current=False)
assert isinstance(_probe.asyncio_loop, ioloop.Loop), _probe.asyncio_loop  # Tornado runs on ours
_probe.close()

import runpy  # noqa: E402

if __name__ == '__main__':
    # Exactly `python3 -m tornado.test.runtests ARGS`, after install().
    runpy.run_module('tornado.test.runtests', run_name='__main__', alter_sys=True)
