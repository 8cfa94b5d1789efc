"""ClusterPipeline: buffer commands, send them grouped per node, one round trip each.

Commands are sent to the primary serving their slot; read-only commands go to one
reader per shard chosen as ``read_from`` says. A command answered with a
redirection (MOVED/ASK), TRYAGAIN/CLUSTERDOWN, or whose node failed, is re-run on its
own through :meth:`ClusterClient.execute_command`, which handles all of those; so a
pipeline survives a live migration, but it is not atomic (nor is it across nodes).
When a node's connection fails after the batch was sent, the replies that arrived are
kept; unanswered reads are re-run, unanswered writes become
:class:`~balancer.core.errors.OutcomeUnknown` in their place (raised by ``execute()`` unless
``raise_on_error=False``): they may have been applied, so they are never sent twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import redis
from redis.commands import READ_COMMANDS
from redis.commands.core import DataAccessCommands, ScriptCommands
from redis.exceptions import (
    AskError,
    ClusterDownError,
    NoScriptError,
    RedisClusterException,
    TryAgainError,
)
from redis.utils import safe_str, truncate_text

from balancer.core.breaker import CLOSED
from balancer.core.errors import NoHealthyEndpoint, OutcomeUnknown, never_sent
from balancer.core.router import Member, Router

if TYPE_CHECKING:
    from balancer.sync.client import ClusterClient
    from balancer.sync.transport import NodeTransport

__all__ = ["ClusterPipeline", "annotate"]

_RETRY_ON_OWN = (AskError, TryAgainError, ClusterDownError)  # MovedError is an AskError


class ClusterPipeline(DataAccessCommands, ScriptCommands):
    """Returned by :meth:`ClusterClient.pipeline`; use as a context manager or call
    :meth:`execute`."""

    _event_dispatcher: Any = None  # declared by redis-py's command protocol; unused here
    _is_async_client: Literal[False] = False  # selects redis-py's sync return types

    def __init__(self, client: ClusterClient) -> None:
        self._client = client
        self._commands: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def __enter__(self) -> ClusterPipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.reset()

    def __len__(self) -> int:
        return len(self._commands)

    def __bool__(self) -> bool:
        return True  # as redis-py's: an empty pipeline is still a pipeline

    def reset(self) -> None:
        self._commands = []

    def load_scripts(self) -> None:
        """Load the registered scripts that queued ``EVALSHA`` calls name, on every
        primary (``execute()`` also loads one that a node reports missing)."""
        seen: set[Any] = set()
        for args, _ in self._commands:
            if len(args) > 1 and args[1] not in seen and self._client._load_script(args):
                seen.add(args[1])

    def discard(self) -> None:
        """Forget the queued commands (RedisCluster allows this in transactions only)."""
        self.reset()

    def multi(self) -> None:
        raise RedisClusterException(
            "method multi() is not supported outside of transactional context"
        )

    def watch(self, *names: Any) -> None:
        raise RedisClusterException(
            "method watch() is not supported outside of transactional context"
        )

    def unwatch(self, *names: Any) -> None:
        raise RedisClusterException(
            "method unwatch() is not supported outside of transactional context"
        )

    def execute_command(self, *args: Any, **options: Any) -> ClusterPipeline:
        self._commands.append((args, options))
        return self

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        """Send every buffered command; results in order. With ``raise_on_error`` the
        first error reply is raised after all commands ran; otherwise errors are
        returned in place."""
        commands, self._commands = self._commands, []
        client = self._client
        by_node: dict[str, tuple[NodeTransport, list[int]]] = {}
        readers: dict[int, tuple[Router, Member, bool] | None] = {}
        for index, (args, options) in enumerate(commands):
            keys = options.pop("keys", None) or client._locator.keys(args)
            if not keys:
                continue  # keyless: run alone below
            route = client._slot_route[client._slot_of(args[0], keys)]
            if route is None:
                continue
            transport = route.primary
            if args[0] in READ_COMMANDS and route.readers is not None:
                if id(route) not in readers:
                    readers[id(route)] = _checkout(route.readers)
                lease = readers[id(route)]
                if lease is not None:
                    transport = client._transport(lease[1].endpoint.id)
            if transport is route.primary and route.primary_breaker.state != CLOSED:
                continue  # run alone below: a primary with an open breaker fails fast
            by_node.setdefault(transport.address, (transport, []))[1].append(index)

        results: list[Any] = [_PENDING] * len(commands)
        failed: dict[str, BaseException] = {}
        for transport, indexes in by_node.values():
            replies, failure = transport.execute_partial([commands[i][0] for i in indexes])
            if failure is not None:
                failed[transport.address] = failure
                if not any(
                    lease and lease[1].endpoint.id == transport.address
                    for lease in readers.values()
                ):
                    client._breaker(transport.address).record(failure)
                client.stats.node_errors += 1
                # Unanswered commands: re-run on their own below if they never left or
                # only read; a write whose reply was lost is reported, never re-sent.
                sent = not never_sent(failure)
                for i in indexes[len(replies) :]:
                    name = commands[i][0][0]
                    if sent and not client._locator.readonly(name):
                        client.stats.unknown_outcomes += 1
                        results[i] = _unknown(name, transport.address, failure)
            for i, reply in zip(indexes, replies, strict=False):
                if isinstance(reply, _RETRY_ON_OWN):
                    continue
                if isinstance(reply, NoScriptError) and client._load_script(commands[i][0]):
                    continue  # it did not run: loaded now, and re-run on its own below
                if isinstance(reply, Exception):
                    results[i] = reply
                else:
                    name, options = commands[i][0][0], dict(commands[i][1])
                    options.pop("NEVER_DECODE", None)
                    results[i] = client._parse(name, reply, options)
        for lease in readers.values():
            if lease is not None:
                router, member, trial = lease
                router.checkin(member, trial, failed.get(member.endpoint.id), None)

        for i, result in enumerate(results):
            if result is _PENDING:
                args, options = commands[i]
                try:
                    results[i] = client.execute_command(*args, **options)
                except (redis.ResponseError, OutcomeUnknown) as exc:
                    results[i] = exc
        if raise_on_error:
            for i, result in enumerate(results):
                if isinstance(result, Exception):
                    annotate(result, i + 1, commands[i][0])
                    raise result
        return results


_PENDING: Any = object()


def annotate(exception: BaseException, number: int, command: Any) -> None:
    """redis-py's prefix on an error raised from a pipeline: which command failed."""
    text = " ".join(map(safe_str, command))
    first = exception.args[0] if exception.args else ""
    message = f"Command # {number} ({truncate_text(text)}) of pipeline caused error: {first}"
    exception.args = (message, *exception.args[1:])


def _unknown(name: Any, address: str, failure: BaseException) -> OutcomeUnknown:
    error = OutcomeUnknown(str(name), address, failure)
    error.__cause__ = failure
    return error


def _checkout(router: Router) -> tuple[Router, Member, bool] | None:
    try:
        member, trial = router.checkout()
    except NoHealthyEndpoint:
        return None
    return router, member, trial
