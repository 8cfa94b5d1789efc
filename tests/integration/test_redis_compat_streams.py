"""The private members of redis-py's asyncio connection that the automatic pipelining
drives, exercised on a real server: the stream pair writes and reads, the synchronous
close closes."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio.connection import Connection

from balancer._redis_compat import close_now, streams

pytestmark = pytest.mark.integration


def test_streams_and_close_now_on_a_real_connection(standalone_port: int) -> None:
    async def scenario() -> None:
        conn = Connection(host="127.0.0.1", port=standalone_port)
        assert streams(conn) == (None, None)  # not connected yet
        await conn.connect()
        reader, writer = streams(conn)
        assert isinstance(reader, asyncio.StreamReader)
        assert isinstance(writer, asyncio.StreamWriter)
        writer.writelines(conn.pack_command("ECHO", "one") + conn.pack_command("ECHO", "two"))
        assert await conn.read_response() == b"one"
        assert await conn.read_response() == b"two"
        close_now(conn)
        assert writer.transport.is_closing()

    asyncio.run(scenario())
