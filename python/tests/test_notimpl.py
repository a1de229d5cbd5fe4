"""What belongs to a later release raises NotImplementedError clearly."""
import asyncio
import ssl

import pytest


def test_not_yet(loop):
    ctx = ssl.create_default_context()
    calls = [
        loop.create_connection(asyncio.Protocol, '127.0.0.1', 1, ssl=ctx),
        loop.create_server(asyncio.Protocol, '127.0.0.1', 0, ssl=ctx),
        loop.create_unix_connection(asyncio.Protocol, '/nonexistent', ssl=ctx),
        loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=('127.0.0.1', 0)),
        loop.subprocess_exec(asyncio.SubprocessProtocol, 'true'),
        loop.subprocess_shell(asyncio.SubprocessProtocol, 'true'),
    ]
    for c in calls:
        with pytest.raises(NotImplementedError, match='not supported yet'):
            loop.run_until_complete(c)
