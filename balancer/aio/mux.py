"""One connection shared by many concurrent commands to a node (automatic pipelining).

Tasks that send commands to the same node in the same event-loop iteration share one
write; a reader task hands replies back in order. This is what makes the asyncio client
fast: a syscall per batch instead of one per command, on both sides of the socket.

What each command learns is exactly what it would learn on its own connection:

- its reply (an error reply is raised to it alone; the connection carries on);
- :class:`~balancer.core.errors.NotSentError` when the connection failed before the batch
  holding its command was written (safe to retry anything);
- redis-py's ``TimeoutError`` / ``ConnectionError`` when it was written and no reply
  came: the connection is closed and every command in flight on it fails the same way
  (the caller applies the safety rule to each).

A caller that is cancelled just stops waiting: its reply is read and dropped, so the
connection stays in step. Blocking commands, ``ASKING`` pairs and raw (undecoded) replies
take a connection of their own (see :class:`~balancer.aio.transport.AsyncNodeTransport`).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import redis
from redis.asyncio.connection import AbstractConnection

from balancer._redis_compat import streams
from balancer.core.errors import NotSentError, echoed

if TYPE_CHECKING:
    from balancer.aio.transport import AsyncNodeTransport

__all__ = ["Multiplexer", "echoed"]


class Multiplexer:
    """A node's shared connection; ``dead`` once it failed (the transport makes another)."""

    __slots__ = ("_conn", "_connecting", "_flush_at", "_inflight", "_loop", "_reader",
                 "_timer", "_transport", "_unsent", "dead")  # fmt: skip

    def __init__(self, transport: AsyncNodeTransport) -> None:
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self._conn: AbstractConnection | None = None
        self._connecting: asyncio.Task[AbstractConnection] | None = None
        self._unsent: list[tuple[list[bytes], asyncio.Future[Any]]] = []
        self._inflight: deque[tuple[asyncio.Future[Any], float]] = deque()
        self._flush_at: asyncio.Handle | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._reader: asyncio.Task[None] | None = None
        self.dead = False

    async def execute(self, args: Sequence[Any]) -> Any:
        """Queue ``args`` for the next write and wait for its reply."""
        conn = self._conn
        if conn is None:
            if self._connecting is None:
                self._connecting = self._loop.create_task(self._transport.connect())
                self._connecting.add_done_callback(self._connected)
            try:
                conn = await asyncio.shield(self._connecting)
            except NotSentError as exc:  # one instance per waiter, never shared
                reason = f"cannot connect: {exc.__cause__ or exc!r}"
                raise _mark(NotSentError(self._transport.address, reason), exc) from exc
        if self.dead:
            raise NotSentError(self._transport.address, "connection closed before the write")
        future: asyncio.Future[Any] = self._loop.create_future()
        idle = not self._unsent and not self._inflight
        self._unsent.append((conn.pack_command(*args), future))
        if idle:
            self._flush()  # nothing to batch with: write now
        elif self._flush_at is None:
            self._flush_at = self._loop.call_soon(self._flush)
        return await future

    def _connected(self, task: asyncio.Task[AbstractConnection]) -> None:
        if task.cancelled() or task.exception() is not None:
            self.dead = True  # waiters get the NotSentError from the task itself
            return
        if self.dead:  # closed while connecting
            self._transport.discard(task.result())
            return
        self._conn = task.result()
        self._reader = self._loop.create_task(self._read_loop(self._conn))

    def _flush(self) -> None:
        self._flush_at = None
        batch, self._unsent = self._unsent, []
        conn = self._conn
        stream, writer = streams(conn) if conn is not None else (None, None)
        if (
            self.dead or conn is None or writer is None or stream is None
            or stream.at_eof() or writer.transport.is_closing()
        ):  # fmt: skip
            self.close()  # closed by the server (idle timeout, restart): nothing was sent
            self._fail(batch, NotSentError(self._transport.address, "connection closed"))
            return
        writer.writelines([part for packed, _ in batch for part in packed])
        now = time.monotonic()
        self._inflight.extend((future, now) for _, future in batch)
        if self._timer is None:
            self._arm(now)

    def _arm(self, sent_at: float) -> None:
        limit = self._transport.options.socket_timeout
        if limit is not None:
            remaining = limit - (time.monotonic() - sent_at)
            self._timer = self._loop.call_later(remaining, self._check)

    def _check(self) -> None:
        """The oldest command in flight has had its socket timeout: the node is hung."""
        self._timer = None
        if not self._inflight:
            return
        sent_at = self._inflight[0][1]
        limit = self._transport.options.socket_timeout or 0.0
        if time.monotonic() - sent_at >= limit:
            self.close(redis.TimeoutError(f"Timeout reading from {self._transport.address}"))
        else:
            self._arm(sent_at)

    async def _read_loop(self, conn: AbstractConnection) -> None:
        """Always reading, so a connection closed by the server is noticed at once."""
        inflight = self._inflight
        try:
            while True:
                try:
                    reply: Any = await conn.read_response()
                except redis.ResponseError as exc:
                    reply = exc
                if not inflight:
                    raise redis.ConnectionError("a reply nobody asked for")
                future, _ = inflight.popleft()
                if not future.done():  # a cancelled caller's reply is dropped
                    if isinstance(reply, redis.ResponseError):
                        future.set_exception(reply)
                    else:
                        future.set_result(reply)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            failure = exc
            if not isinstance(exc, redis.ConnectionError | redis.TimeoutError):
                failure = redis.ConnectionError(f"{self._transport.address}: {exc!r}")
                failure.__cause__ = exc
            self.close(failure)

    def _fail(self, entries: Sequence[tuple[Any, asyncio.Future[Any]]], exc: BaseException) -> None:
        for _, future in entries:
            if not future.done():
                future.set_exception(_own(exc))

    def close(self, failure: BaseException | None = None) -> None:
        """Close the connection; commands in flight get ``failure`` (sent, no reply),
        queued ones a NotSentError."""
        if self.dead and self._conn is None:
            return
        self.dead = True
        failure = failure or redis.ConnectionError(f"{self._transport.address}: closed")
        inflight, self._inflight = list(self._inflight), deque()
        for future, _ in inflight:
            if not future.done():
                future.set_exception(_own(failure))
        unsent, self._unsent = self._unsent, []
        self._fail(unsent, NotSentError(self._transport.address, "connection closed"))
        if self._timer is not None:
            self._timer.cancel()
        if self._reader is not None and self._reader is not asyncio.current_task():
            self._reader.cancel()
        conn, self._conn = self._conn, None
        if conn is not None:
            self._transport.discard(conn)


def _own(failure: BaseException) -> BaseException:
    """A fresh exception per waiting caller (each raises and chains its own), caused by
    the shared ``failure`` so that what it says (refused, timed out) is still found."""
    if isinstance(failure, NotSentError):
        own: BaseException = NotSentError(failure.address, "connection closed before the write")
    elif isinstance(failure, redis.TimeoutError):
        own = redis.TimeoutError(*failure.args)
    else:
        own = redis.ConnectionError(*failure.args)
    own.__cause__ = failure
    return _mark(own, failure)


def _mark(own: BaseException, failure: BaseException) -> BaseException:
    """The first caller told of ``failure`` reports it; the others' copies are echoes."""
    if getattr(failure, "_slotpilot_told", False):
        own._slotpilot_echo = True  # type: ignore[attr-defined]
    else:
        failure._slotpilot_told = True  # type: ignore[attr-defined]
    return own
