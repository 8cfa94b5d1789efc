"""Same-slot transactions: ``MULTI`` … ``EXEC`` on the slot's primary, one round trip.

Redis Cluster can only run a transaction on one node, so every key of it must hash to
one slot (hash tags: ``{user1}:a``, ``{user1}:b``); otherwise redis-py's
``CrossSlotTransactionError`` is raised before anything is sent. A transaction that the
server aborted before running it (``EXECABORT`` after a MOVED/ASK while the slot moves,
TRYAGAIN, CLUSTERDOWN) ran nothing and is sent again, within ``retry_deadline``. One
whose reply was lost may have run: unless every command in it only reads, it raises
:class:`~balancer.errors.OutcomeUnknown`, as a single write would.
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

from balancer.breaker import CLOSED
from balancer.errors import NodeUnavailable, OutcomeUnknown, SlotNotCovered, never_sent, refused

if TYPE_CHECKING:
    from balancer.aio.client import AsyncClusterClient

__all__ = ["run_transaction"]

Command = tuple[tuple[Any, ...], dict[str, Any]]
_RETRY = (AskError, TryAgainError, ClusterDownError)  # MovedError is an AskError


async def _slot(client: AsyncClusterClient, commands: Sequence[Command]) -> int:
    slots: set[int] = set()
    for args, options in commands:
        keys = list(options.get("keys") or ()) or await client._keys(args)
        slots.update(client._slot_of(args[0], [k]) for k in keys)
    if len(slots) != 1:
        raise CrossSlotTransactionError(
            "all keys of a transaction must hash to one slot "
            f"(found {len(slots)}); use hash tags like {{user1}}:a"
        )
    return slots.pop()


async def run_transaction(client: AsyncClusterClient, commands: Sequence[Command]) -> list[Any]:
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
            raise NodeUnavailable(route.primary.address, "circuit breaker open")
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


def _parse(client: AsyncClusterClient, command: Command, reply: Any) -> Any:
    if isinstance(reply, Exception):
        return reply
    args, options = command
    options = {k: v for k, v in options.items() if k not in ("keys", "NEVER_DECODE")}
    return client._parse(args[0], reply, options)
