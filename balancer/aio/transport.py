"""The asyncio client's one I/O seam: send a command to one node and read its reply.

Same contract as :mod:`balancer.sync.transport`, over ``redis.asyncio`` connections: a small
LIFO of idle connections per node; redis-py does the protocol, AUTH, TLS and RESP
parsing. Connections are made without a socket timeout of their own: one
``asyncio.timeout`` covers each whole exchange (write and read), which is cheaper than
redis-py's per-write ``wait_for`` and lets a blocking command wait its block time.
A connection that raised anything but a Redis error reply (a timeout, a cancellation)
is discarded, never reused, so a half-read reply can't poison the next call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import redis
from redis.asyncio.connection import AbstractConnection, Connection, SSLConnection

from balancer._redis_compat import close_now
from balancer.aio.mux import Multiplexer
from balancer.core.errors import NotSentError

__all__ = ["AsyncNodeTransport", "AsyncTransportOptions"]

# A connection used this recently is taken from the idle list without a liveness check.
_FRESH_SECONDS = 1.0
_NETWORK = (redis.ConnectionError, redis.TimeoutError, OSError, TimeoutError)


class AsyncTransportOptions:
    """Connection settings shared by every node of a client (auth, TLS, timeouts).
    ``socket_timeout`` bounds each reply, ``socket_connect_timeout`` each connect (the
    handshake after it gets ``socket_timeout`` too); ``None`` waits forever."""

    def __init__(
        self,
        ssl: bool = False,
        readonly: bool = False,
        socket_timeout: float | None = 0.5,
        socket_connect_timeout: float | None = 0.5,
        **connection_kwargs: Any,
    ) -> None:
        self.connection_class: type[Connection] = SSLConnection if ssl else Connection
        self.readonly = readonly
        self.socket_timeout = socket_timeout
        self.connect_timeout: float | None = None
        if socket_connect_timeout is not None:
            self.connect_timeout = socket_connect_timeout + (socket_timeout or 0.0)
        # Our own deadlines apply; the connection's timeouts would only add a wait_for.
        connection_kwargs.update(socket_timeout=None, socket_connect_timeout=socket_connect_timeout)
        self.connection_kwargs = connection_kwargs

    def connect_hook(self) -> Callable[[AbstractConnection], Awaitable[None]] | None:
        if not self.readonly:
            return None

        async def on_connect(conn: AbstractConnection) -> None:
            await conn.on_connect()
            # READONLY lets a replica serve reads for its primary's slots.
            await conn.send_command("READONLY")
            if await conn.read_response() not in (b"OK", "OK"):
                raise redis.ConnectionError("READONLY failed")

        return on_connect


class AsyncNodeTransport:
    """Connections to one node and the send/read primitive over them.

    A failure before anything was written (no connection could be made, every
    connection is in use) raises :class:`~balancer.core.errors.NotSentError`; a failure
    after the write raises redis-py's ``TimeoutError`` / ``ConnectionError``.
    """

    __slots__ = ("_idle", "_mux", "_open", "address", "host", "max_connections", "options",
                 "port")  # fmt: skip

    def __init__(
        self, host: str, port: int, options: AsyncTransportOptions, max_connections: int
    ) -> None:
        self.host = host
        self.port = port
        self.address = f"{host}:{port}"
        self.options = options
        self.max_connections = max_connections
        self._idle: list[tuple[AbstractConnection, float]] = []
        self._open = 0
        self._mux: Multiplexer | None = None

    async def connect(self) -> AbstractConnection:
        """A new, connected connection (counted against ``max_connections``)."""
        if self._open >= self.max_connections:
            raise NotSentError(self.address, f"all {self.max_connections} connections in use")
        self._open += 1
        kwargs = dict(self.options.connection_kwargs)
        hook = self.options.connect_hook()
        if hook is not None:
            kwargs["redis_connect_func"] = hook
        try:  # a connection that cannot even be made must not keep its slot
            conn = self.options.connection_class(host=self.host, port=self.port, **kwargs)
        except BaseException:
            self._open -= 1
            raise
        # The handshake (HELLO, AUTH, READONLY) waits one socket timeout per reply, as
        # the sync client's; afterwards our own deadlines apply.
        conn.socket_timeout = self.options.socket_timeout
        try:
            async with asyncio.timeout(self.options.connect_timeout):
                await conn.connect()
            conn.socket_timeout = None
        except BaseException as exc:
            self.discard(conn)
            if isinstance(exc, _NETWORK):
                raise NotSentError(self.address, f"cannot connect: {exc!r}") from exc
            raise
        return conn

    async def acquire(self, check: bool = False) -> AbstractConnection:
        """An idle connection (most recently used first) or a new one. One idle for a
        while, or any when ``check`` is set (writes), is first checked for a close by
        the server, so a restarted node is a clean reconnect, not an unknown outcome."""
        idle = self._idle
        while idle:
            conn, used = idle.pop()
            if not check and time.monotonic() - used < _FRESH_SECONDS:
                return conn
            try:
                stale = await conn.can_read()
            except _NETWORK:
                stale = True
            if not stale:
                return conn
            self.discard(conn)
        return await self.connect()

    def release(self, conn: AbstractConnection) -> None:
        self._idle.append((conn, time.monotonic()))

    def discard(self, conn: AbstractConnection) -> None:
        """Close without waiting (safe inside a cancelled task) and forget it."""
        close_now(conn)
        self._open -= 1

    def _timeout(self, read_timeout: float | bool | None) -> float | None:
        if read_timeout is False:
            return self.options.socket_timeout
        return read_timeout

    async def execute(
        self,
        args: Sequence[Any],
        never_decode: bool = False,
        asking: bool = False,
        check: bool = False,
        read_timeout: float | bool | None = False,
    ) -> Any:
        """Send one command and return its raw reply; error replies raise and keep the
        connection, any other failure drops it. With ``asking`` the command follows an
        ``ASKING`` in the same write and both replies are read. ``read_timeout``
        replaces the socket timeout for this exchange (``None``: wait forever; ``False``:
        the socket timeout), for blocking commands. Plain commands share the node's
        multiplexed connection; the others take one of their own."""
        if not (asking or never_decode) and read_timeout is False:
            mux = self._mux
            if mux is None or mux.dead:
                mux = self._mux = Multiplexer(self)
            return await mux.execute(args)
        conn = await self.acquire(check)
        asking_error: redis.ResponseError | None = None
        try:
            async with asyncio.timeout(self._timeout(read_timeout)):
                if asking:
                    packed = conn.pack_commands([("ASKING",), tuple(args)])
                    await conn.send_packed_command(packed, check_health=False)
                    try:
                        await conn.read_response()
                    except redis.ResponseError as exc:
                        asking_error = exc
                else:
                    await conn.send_packed_command(conn.pack_command(*args), check_health=False)
                response = await conn.read_response(disable_decoding=never_decode)
        except redis.ResponseError:
            self.release(conn)
            if asking_error is not None:
                raise asking_error from None
            raise
        except TimeoutError:
            self.discard(conn)
            raise redis.TimeoutError(f"Timeout reading from {self.address}") from None
        except BaseException:
            self.discard(conn)
            raise
        self.release(conn)
        if asking_error is not None:
            raise asking_error
        return response

    async def execute_partial(
        self, commands: Sequence[Sequence[Any]]
    ) -> tuple[list[Any], BaseException | None]:
        """Pipeline: send every command in one write, read every reply in order. Error
        replies come back as exception objects in the list. On a network failure,
        returns the replies read so far and the failure (a NotSentError: none left)."""
        try:
            conn = await self.acquire(check=True)
        except _NETWORK as exc:
            return [], exc
        replies, failure = await self.exchange(conn, commands)
        if failure is None:
            self.release(conn)
        return replies, failure

    async def exchange(
        self, conn: AbstractConnection, commands: Sequence[Sequence[Any]]
    ) -> tuple[list[Any], BaseException | None]:
        """:meth:`execute_partial` on a connection the caller holds (``WATCH``); a
        connection that failed is discarded here, one that did not stays the caller's."""
        replies: list[Any] = []
        limit = self.options.socket_timeout
        try:
            async with asyncio.timeout(limit):
                packed = conn.pack_commands([tuple(c) for c in commands])
                await conn.send_packed_command(packed, check_health=False)
            for _ in commands:
                try:
                    async with asyncio.timeout(limit):  # per reply, as a socket timeout
                        replies.append(await conn.read_response())
                except redis.ResponseError as exc:
                    replies.append(exc)
        except TimeoutError:
            self.discard(conn)
            return replies, redis.TimeoutError(f"Timeout reading from {self.address}")
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            self.discard(conn)
            return replies, exc
        except BaseException:
            self.discard(conn)
            raise
        return replies, None

    def close(self) -> None:
        if self._mux is not None:
            self._mux.close()
            self._mux = None
        idle, self._idle = self._idle, []
        for conn, _ in idle:
            self.discard(conn)
