"""Same-slot transactions: ``MULTI`` … ``EXEC`` on the slot's primary, one round trip.

Redis Cluster can only run a transaction on one node, so every key of it must hash to
one slot (hash tags: ``{user1}:a``, ``{user1}:b``); otherwise redis-py's
``CrossSlotTransactionError`` is raised before anything is sent. A transaction that the
server aborted before running it (``EXECABORT`` after a MOVED/ASK while the slot moves,
TRYAGAIN, CLUSTERDOWN) ran nothing and is sent again, within ``retry_deadline``. One
whose reply was lost may have run: unless every command in it only reads, it raises
:class:`~balancer.core.errors.OutcomeUnknown`, as a single write would.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import redis
from redis.exceptions import (
    AskError,
    ClusterDownError,
    CrossSlotTransactionError,
    MovedError,
    TryAgainError,
)

from balancer.core.breaker import CLOSED
from balancer.core.errors import (
    ClusterError,
    OutcomeUnknown,
    SlotNotCovered,
    never_sent,
    refused,
)

if TYPE_CHECKING:
    from redis.asyncio.connection import AbstractConnection

    from balancer.aio.port import AsyncClientPort
    from balancer.aio.transport import AsyncNodeTransport

__all__ = ["Watch", "exec_watched", "on_watched", "run_transaction", "start_watch"]

Command = tuple[tuple[Any, ...], dict[str, Any]]
_RETRY = (AskError, TryAgainError, ClusterDownError)  # MovedError is an AskError


async def _slots(client: AsyncClientPort, commands: Sequence[Command]) -> set[int]:
    slots: set[int] = set()
    for args, options in commands:
        keys = list(options.get("keys") or ()) or await client._keys(args)
        slots.update(client._slot_of(args[0], [k]) for k in keys)
    return slots


async def _slot(client: AsyncClientPort, commands: Sequence[Command]) -> int:
    slots = await _slots(client, commands)
    if len(slots) != 1:
        raise CrossSlotTransactionError(
            "all keys of a transaction must hash to one slot "
            f"(found {len(slots)}); use hash tags like {{user1}}:a"
        )
    return slots.pop()


async def run_transaction(client: AsyncClientPort, commands: Sequence[Command]) -> list[Any]:
    """Replies of ``commands`` run as one ``MULTI``/``EXEC``; error replies in place."""
    slot = await _slot(client, commands)
    readonly = all(client._locator.readonly(args[0]) for args, _ in commands)
    batch = [("MULTI",), *(args for args, _ in commands), ("EXEC",)]
    deadline = 0.0
    attempt = 0
    while True:
        attempt += 1
        route = client._slot_route[slot]
        if route is None:
            deadline = await client._wait_or_raise(deadline, SlotNotCovered(slot), attempt)
            continue
        breaker = route.primary_breaker
        if breaker.state != CLOSED and not breaker.available(time.monotonic()):
            # fails fast unless a refresh names another primary (a failover)
            deadline = await client._primary_unavailable(slot, route, deadline)
            continue
        transport = route.primary
        replies, failure = await transport.execute_partial(batch)
        if failure is not None:
            if not refused(failure):
                route.primary_breaker.record(failure)
            client.stats.node_errors += 1
            if not (never_sent(failure) or readonly):
                client.stats.unknown_outcomes += 1
                raise OutcomeUnknown("EXEC", transport.address, failure) from failure
            deadline = await client._wait_or_raise(deadline, failure, attempt)
            continue
        exec_reply = replies[-1]
        if not isinstance(exec_reply, redis.ResponseError):
            if exec_reply is None:
                raise redis.WatchError("transaction aborted")
            return [_parse(client, command, reply) for command, reply in
                    zip(commands, exec_reply, strict=True)]  # fmt: skip
        # EXECABORT: nothing ran. Why: a command refused while queueing.
        queued = [r for r in replies[1:-1] if isinstance(r, redis.ResponseError)]
        retry = next((r for r in queued if isinstance(r, _RETRY)), None)
        if retry is None:
            raise queued[0] if queued else exec_reply
        if isinstance(retry, MovedError):
            client._moved(slot, retry)
            client.stats.moved += 1
        deadline = await client._wait_or_raise(deadline, retry, attempt)


def _parse(client: AsyncClientPort, command: Command, reply: Any) -> Any:
    if isinstance(reply, Exception):
        return reply
    args, options = command
    options = {k: v for k, v in options.items() if k not in ("keys", "NEVER_DECODE")}
    return client._parse(args[0], reply, options)


class Watch:
    """A connection to one slot's primary held from the first ``WATCH`` to ``EXEC``
    (the server forgets the watched keys when the connection goes)."""

    __slots__ = ("conn", "slot", "transport")

    def __init__(self, transport: AsyncNodeTransport, conn: AbstractConnection, slot: int) -> None:
        self.transport = transport
        self.conn = conn
        self.slot = slot

    def drop(self) -> None:
        """Give the connection up without ``UNWATCH``: closing it unwatches everything
        (a connection that failed was closed already)."""
        if self.conn.is_connected:
            self.transport.discard(self.conn)


async def start_watch(client: AsyncClientPort, names: Sequence[Any]) -> Watch:
    """``WATCH names`` on a connection of their slot's primary. A MOVED answer means
    nothing was watched yet: the watch follows the slot (as RedisCluster's does)."""
    slot = await _slot(client, [(("WATCH", *names), {})])
    for _ in range(client.max_redirects + 1):
        route = client._slot_route[slot]
        if route is None:
            raise SlotNotCovered(slot)
        breaker = route.primary_breaker
        if breaker.state != CLOSED and not breaker.available(time.monotonic()):
            await client._primary_unavailable(slot, route, 0.0)
            continue
        transport = route.primary
        conn = await transport.acquire(check=True)
        replies, failure = await transport.exchange(conn, [("WATCH", *names)])
        if failure is not None:
            raise failure  # nothing was watched, nothing written: the caller may retry
        if isinstance(replies[0], MovedError):
            transport.release(conn)
            client._moved(slot, replies[0])
            client.stats.moved += 1
            continue
        if isinstance(replies[0], redis.ResponseError):
            transport.release(conn)
            raise replies[0]
        return Watch(transport, conn, slot)
    raise ClusterError(f"too many redirections watching slot {slot}")


async def on_watched(
    client: AsyncClientPort, watch: Watch, commands: Sequence[Command]
) -> list[Any]:
    """Commands sent on the watched connection (more ``WATCH``, reads between ``WATCH``
    and ``MULTI``); a redirection now means the slot moved under the watch:
    ``WatchError``. The caller drops the watch when this raises."""
    if await _slots(client, commands) - {watch.slot}:
        raise CrossSlotTransactionError("a watched transaction must stay in one slot")
    replies, failure = await watch.transport.exchange(watch.conn, [a for a, _ in commands])
    if failure is not None:
        _lost(client, watch, commands, failure)
    results = []
    for command, reply in zip(commands, replies, strict=True):
        if isinstance(reply, AskError):  # MOVED too
            raise redis.WatchError(f"slot {watch.slot} moved while watched ({reply})")
        if isinstance(reply, redis.ResponseError):
            raise reply
        results.append(_parse(client, command, reply))
    return results


async def exec_watched(
    client: AsyncClientPort, watch: Watch, commands: Sequence[Command]
) -> list[Any]:
    """``MULTI`` … ``EXEC`` on the watched connection: ``WatchError`` when a watched key
    changed (or the slot moved) and nothing ran. Releases the connection."""
    try:
        if await _slots(client, commands) - {watch.slot}:
            raise CrossSlotTransactionError("a watched transaction must stay in one slot")
    except BaseException:
        watch.drop()
        raise
    batch = [("MULTI",), *(args for args, _ in commands), ("EXEC",)]
    replies, failure = await watch.transport.exchange(watch.conn, batch)
    if failure is not None:
        _lost(client, watch, commands, failure)
    watch.transport.release(watch.conn)  # EXEC unwatched everything
    exec_reply = replies[-1]
    if exec_reply is None:
        raise redis.WatchError("Watched variable changed.")
    if isinstance(exec_reply, redis.ResponseError):
        queued = [r for r in replies[1:-1] if isinstance(r, redis.ResponseError)]
        if any(isinstance(r, AskError) for r in queued):
            raise redis.WatchError(f"slot {watch.slot} moved while watched")
        raise queued[0] if queued else exec_reply
    return [_parse(client, command, reply) for command, reply in
            zip(commands, exec_reply, strict=True)]  # fmt: skip


def _lost(
    client: AsyncClientPort, watch: Watch, commands: Sequence[Command], failure: BaseException
) -> None:
    """The held connection failed (already discarded): the safety rule, as everywhere."""
    client.stats.node_errors += 1
    if not refused(failure):
        client._breaker(watch.transport.address).record(failure)
    if never_sent(failure) or all(client._locator.readonly(a[0]) for a, _ in commands):
        raise failure
    client.stats.unknown_outcomes += 1
    raise OutcomeUnknown("EXEC", watch.transport.address, failure) from failure
