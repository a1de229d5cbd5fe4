"""Shared fixture: a fresh ioloop.Loop per test, closed afterwards.

Run with Debian's interpreter and the build's package:
    PYTHONPATH=build/python /usr/bin/python3 -m pytest python/tests
"""
import asyncio
import os

import pytest

import ioloop

# The tests must exercise the built extension, not a stray copy.
assert os.path.exists(os.path.join(os.path.dirname(ioloop.__file__), '__init__.py'))
assert hasattr(ioloop, '_ioloop'), ioloop.__file__


@pytest.fixture
def loop():
    lp = ioloop.new_event_loop()
    asyncio.set_event_loop(lp)
    yield lp
    asyncio.set_event_loop(None)
    if not lp.is_closed():
        if not lp.is_running():
            lp.run_until_complete(lp.shutdown_asyncgens())
        lp.close()


def rss_kib():
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    return 0
