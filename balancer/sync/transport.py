"""The SDK's one I/O seam: send a command to one node and read its reply.

Each node gets a small LIFO of idle redis-py ``Connection`` objects. redis-py still does
the protocol, AUTH, TLS and RESP parsing; what we skip is ``ConnectionPool``'s per-checkout
bookkeeping and ``Redis.execute_command``'s retry wrapper, which cost more than the
routing itself. A connection that raised anything but a Redis error reply is discarded,
never reused, so a half-read reply can't poison the next call.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis
from redis.connection import AbstractConnection, Connection, SSLConnection
from redis.utils import SENTINEL

from balancer._redis_compat import quiet
from balancer.core.errors import NotSentError

__all__ = ["NodeTransport", "TransportOptions"]

NEVER_DECODE = "NEVER_DECODE"
# A connection used this recently is taken from the idle list without a liveness check.
_FRESH_SECONDS = 1.0


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
    """Connections to one node and the send/read primitive over them.

    What failed matters to the caller: a failure before anything was written (no
    connection could be made, every connection is in use) raises
    :class:`~balancer.core.errors.NotSentError`, safe to retry for any command; a failure
    after the write (timeout, connection lost while reading) raises redis-py's own
    error, and only the caller knows whether its command may be sent again.
    """

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
        self._idle: list[tuple[AbstractConnection, float]] = []
        self._open = 0
        self._lock = threading.Lock()

    def _new_connection(self) -> AbstractConnection:
        with self._lock:
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
            with self._lock:
                self._open -= 1
            raise
        try:
            conn.connect()
        except BaseException as exc:
            self.discard(conn)
            if isinstance(exc, (redis.ConnectionError, redis.TimeoutError, OSError)):
                raise NotSentError(self.address, f"cannot connect: {exc}") from exc
            raise
        return conn

    def acquire(self, check: bool = False) -> AbstractConnection:
        """An idle connection (most recently used first) or a new, connected one. A
        connection idle for a while, or any connection when ``check`` is set (writes:
        ~2 µs), is first checked for a close by the server, so a node that died or
        restarted, or an idle timeout, is a clean reconnect, not an unknown outcome."""
        while True:
            try:
                conn, used = self._idle.pop()
            except IndexError:
                return self._new_connection()
            if not check and time.monotonic() - used < _FRESH_SECONDS:
                return conn
            nothing_to_read = quiet(conn)  # one poll(2); None: ask redis-py (TLS)
            if nothing_to_read is None:
                try:
                    nothing_to_read = not conn.can_read()
                except (redis.ConnectionError, redis.TimeoutError, OSError):
                    nothing_to_read = False
            if nothing_to_read:
                return conn
            self.discard(conn)

    def release(self, conn: AbstractConnection) -> None:
        self._idle.append((conn, time.monotonic()))

    def discard(self, conn: AbstractConnection) -> None:
        conn.disconnect()
        with self._lock:
            self._open -= 1

    def execute(
        self,
        args: Sequence[Any],
        never_decode: bool = False,
        asking: bool = False,
        check: bool = False,
        read_timeout: float | object | None = SENTINEL,
    ) -> Any:
        """Send one command and return its raw reply; error replies raise and keep the
        connection, any other failure drops it. With ``asking`` the command is preceded
        by ``ASKING`` in the same write, and both replies are always read, so an error
        reply to ``ASKING`` never leaves the command's reply behind for the next caller.
        ``check``: see :meth:`acquire`. ``read_timeout`` replaces the socket timeout for
        this reply (``None``: wait forever), for blocking commands."""
        conn = self.acquire(check)
        asking_error: redis.ResponseError | None = None
        try:
            if asking:
                conn.send_packed_command(conn.pack_commands([("ASKING",), tuple(args)]))
                try:
                    conn.read_response()
                except redis.ResponseError as exc:
                    asking_error = exc
            else:
                conn.send_command(*args)
            response = conn.read_response(disable_decoding=never_decode, timeout=read_timeout)
        except redis.ResponseError:
            self.release(conn)
            if asking_error is not None:
                raise asking_error from None
            raise
        except BaseException:
            self.discard(conn)
            raise
        self.release(conn)
        if asking_error is not None:
            raise asking_error
        return response

    def execute_many(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Pipeline: every reply in order, error replies as exception objects in the
        list; a network failure raises (see :meth:`execute_partial` to keep the replies
        that did arrive)."""
        replies, failure = self.execute_partial(commands)
        if failure is not None:
            raise failure
        return replies

    def execute_partial(
        self, commands: Sequence[Sequence[Any]]
    ) -> tuple[list[Any], BaseException | None]:
        """Pipeline: send every command in one write, read every reply in order. Error
        replies come back as exception objects in the list, not raised. On a network
        failure, returns the replies read so far and the failure: the commands after
        them may or may not have run (or certainly did not, for a NotSentError)."""
        replies: list[Any] = []
        try:
            conn = self.acquire(check=True)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            return replies, exc  # a NotSentError: none of them left
        try:
            conn.send_packed_command(conn.pack_commands([tuple(c) for c in commands]))
            for _ in commands:
                try:
                    replies.append(conn.read_response())
                except redis.ResponseError as exc:
                    replies.append(exc)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            self.discard(conn)
            return replies, exc
        except BaseException:
            self.discard(conn)
            raise
        self.release(conn)
        return replies, None

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn, _ in idle:
            self.discard(conn)
