"""The SDK's one I/O seam: send a command to one node and read its reply.

Each node gets a small LIFO of idle redis-py ``Connection`` objects. redis-py still does
the protocol, AUTH, TLS and RESP parsing; what we skip is ``ConnectionPool``'s per-checkout
bookkeeping and ``Redis.execute_command``'s retry wrapper, which cost more than the
routing itself. A connection that raised anything but a Redis error reply is discarded,
never reused, so a half-read reply can't poison the next call.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import redis
from redis.connection import AbstractConnection, Connection, SSLConnection

__all__ = ["NodeTransport", "TransportOptions"]

NEVER_DECODE = "NEVER_DECODE"


class TransportOptions:
    """Connection settings shared by every node of a client (auth, TLS, timeouts)."""

    def __init__(self, ssl: bool = False, readonly: bool = False, **connection_kwargs: Any) -> None:
        self.connection_class: Callable[..., AbstractConnection] = (
            SSLConnection if ssl else Connection
        )
        self.readonly = readonly
        self.connection_kwargs = connection_kwargs

    def connect_hook(self) -> Callable[[AbstractConnection], None] | None:
        if not self.readonly:
            return None

        def on_connect(conn: AbstractConnection) -> None:
            conn.on_connect()
            # READONLY lets a replica serve reads for its primary's slots.
            conn.send_command("READONLY")
            if conn.read_response() not in (b"OK", "OK"):
                raise redis.ConnectionError("READONLY failed")

        return on_connect


class NodeTransport:
    """Connections to one node and the send/read primitive over them."""

    __slots__ = ("_idle", "_lock", "_open", "address", "host", "max_connections", "options",
                 "port")  # fmt: skip

    def __init__(
        self, host: str, port: int, options: TransportOptions, max_connections: int
    ) -> None:
        self.host = host
        self.port = port
        self.address = f"{host}:{port}"
        self.options = options
        self.max_connections = max_connections
        self._idle: list[AbstractConnection] = []
        self._open = 0
        self._lock = threading.Lock()

    def _new_connection(self) -> AbstractConnection:
        with self._lock:
            if self._open >= self.max_connections:
                raise redis.ConnectionError(
                    f"{self.address}: all {self.max_connections} connections are in use"
                )
            self._open += 1
        kwargs = dict(self.options.connection_kwargs)
        hook = self.options.connect_hook()
        if hook is not None:
            kwargs["redis_connect_func"] = hook
        return self.options.connection_class(host=self.host, port=self.port, **kwargs)

    def acquire(self) -> AbstractConnection:
        try:
            return self._idle.pop()
        except IndexError:
            return self._new_connection()

    def release(self, conn: AbstractConnection) -> None:
        self._idle.append(conn)

    def discard(self, conn: AbstractConnection) -> None:
        conn.disconnect()
        with self._lock:
            self._open -= 1

    def execute(self, args: Sequence[Any], never_decode: bool = False, asking: bool = False) -> Any:
        """Send one command and return its raw reply; error replies raise and keep the
        connection, any other failure drops it."""
        conn = self.acquire()
        try:
            if asking:
                conn.send_packed_command(conn.pack_commands([("ASKING",), tuple(args)]))
                conn.read_response()
            else:
                conn.send_command(*args)
            response = conn.read_response(disable_decoding=never_decode)
        except redis.ResponseError:
            self.release(conn)
            raise
        except BaseException:
            self.discard(conn)
            raise
        self.release(conn)
        return response

    def execute_many(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Pipeline: send every command in one write, read every reply in order. Error
        replies come back as exception objects in the list, not raised."""
        conn = self.acquire()
        try:
            conn.send_packed_command(conn.pack_commands([tuple(c) for c in commands]))
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(conn.read_response())
                except redis.ResponseError as exc:
                    replies.append(exc)
        except BaseException:
            self.discard(conn)
            raise
        self.release(conn)
        return replies

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            self.discard(conn)
