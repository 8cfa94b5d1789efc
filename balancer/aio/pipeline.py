"""AsyncClusterPipeline: buffer commands, send them grouped per node, one round trip each.

The asyncio twin of :class:`balancer.sync.pipeline.ClusterPipeline`, with the same rules:
commands go to their slot's primary, read-only ones to one reader per shard as
``read_from`` says; every node's batch is sent at once (concurrently). A command
answered with a redirection, TRYAGAIN/CLUSTERDOWN, or whose node failed before it was
sent, is re-run alone through :meth:`AsyncClusterClient.execute_command`; an unanswered
read is re-run; an unanswered write becomes :class:`~balancer.core.errors.OutcomeUnknown` in
its place (raised by ``execute()`` unless ``raise_on_error=False``), never re-sent.
Not atomic, within a node or across nodes — unless ``transaction=True``: then one
``MULTI``/``EXEC`` on the slot's primary, with ``watch()`` if asked
(:mod:`balancer.aio.transaction`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from typing import TYPE_CHECKING, Any, Literal

import redis
from redis.commands import READ_COMMANDS
from redis.commands.core import AsyncDataAccessCommands, AsyncScriptCommands
from redis.exceptions import AskError, ClusterDownError, NoScriptError, TryAgainError
from redis.utils import safe_str, truncate_text

from balancer.aio.transaction import Watch, exec_watched, on_watched, run_transaction, start_watch
from balancer.core.breaker import CLOSED
from balancer.core.errors import NoHealthyEndpoint, OutcomeUnknown, never_sent, refused
from balancer.core.router import Member, Router

if TYPE_CHECKING:
    from balancer.aio.client import AsyncClusterClient
    from balancer.aio.transport import AsyncNodeTransport

__all__ = ["AsyncClusterPipeline"]

_RETRY_ON_OWN = (AskError, TryAgainError, ClusterDownError)  # MovedError is an AskError
_Lease = tuple[Router, Member, bool]


class AsyncClusterPipeline(AsyncDataAccessCommands, AsyncScriptCommands):
    """Returned by :meth:`AsyncClusterClient.pipeline`; queue commands (plain calls),
    then ``await pipe.execute()``; also an ``async with`` block."""

    _event_dispatcher: Any = None  # declared by redis-py's command protocol; unused here
    _is_async_client: Literal[True] = True

    def __init__(self, client: AsyncClusterClient, transaction: bool = False) -> None:
        self._client = client
        self.transaction = transaction
        self._commands: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        self._watch: Watch | None = None
        self._explicit = False  # multi() called: commands are queued, not run

    async def __aenter__(self) -> AsyncClusterPipeline:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.reset()

    def __await__(self) -> Generator[Any, None, AsyncClusterPipeline]:
        """``await pipe.get(k)`` queues and gives the pipeline back, as redis-py's
        asyncio pipelines do (what ``AsyncScript`` relies on in a pipeline)."""
        return self._itself().__await__()

    async def _itself(self) -> AsyncClusterPipeline:
        return self

    async def load_scripts(self) -> None:
        """Load the registered scripts that queued ``EVALSHA`` calls name, on every
        primary (``execute()`` also loads one that a node reports missing)."""
        seen: set[Any] = set()
        for args, _ in self._commands:
            if len(args) > 1 and args[1] not in seen and await self._client._load_script(args):
                seen.add(args[1])

    def __len__(self) -> int:
        return len(self._commands)

    def __bool__(self) -> bool:
        return True  # an empty pipeline is still a pipeline (redis-py's behaviour)

    def reset(self) -> None:
        self._commands = []
        self._explicit = False
        if self._watch is not None:
            self._watch.drop()  # closing the connection unwatches its keys
            self._watch = None

    discard = reset  # redis-py's name for dropping the queued commands

    @property
    def watching(self) -> bool:
        return self._watch is not None

    async def watch(self, *names: Any) -> bool:  # type: ignore[override]
        """``WATCH`` keys (one slot) on a connection held until :meth:`execute`; until
        :meth:`multi`, commands run at once on it (read what the transaction needs)."""
        if self._explicit:
            raise redis.RedisError("Cannot issue a WATCH after a MULTI")
        client = self._client
        if not client._ready:
            await client.initialize()
        try:
            if self._watch is None:
                self._watch = await start_watch(client, names)
            else:
                await on_watched(client, self._watch, [(("WATCH", *names), {})])
        except BaseException:
            self.reset()
            raise
        return True

    async def unwatch(self) -> bool:  # type: ignore[override]
        self.reset()
        return True

    def multi(self) -> None:
        """Start queueing the transaction's commands (after :meth:`watch`)."""
        if self._explicit:
            raise redis.RedisError("Cannot issue nested calls to MULTI")
        if self._commands:
            raise redis.RedisError("Commands without an initial WATCH have already been issued")
        self._explicit = True

    def execute_command(self, *args: Any, **options: Any) -> Any:
        """Queue a command (returns the pipeline); while watching and before
        :meth:`multi`, run it at once instead (returns an awaitable of its reply)."""
        if self._watch is not None and not self._explicit:
            return self._immediate(args, options)
        self._commands.append((args, options))
        return self

    async def _immediate(self, args: tuple[Any, ...], options: dict[str, Any]) -> Any:
        assert self._watch is not None
        try:
            (result,) = await on_watched(self._client, self._watch, [(args, options)])
        except BaseException:
            self.reset()
            raise
        return result

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        """Send every buffered command; results in order. With ``raise_on_error`` the
        first error is raised after all commands ran; otherwise errors are returned in
        place."""
        commands, self._commands = self._commands, []
        client = self._client
        if not client._ready:
            await client.initialize()
        if self._watch is not None:  # the held connection is given back either way
            watch, self._watch = self._watch, None
            self._explicit = False
            results = await exec_watched(client, watch, commands)
        elif not commands:
            return []
        elif self.transaction:
            results = await run_transaction(client, commands)
        else:
            results = await self._execute(commands)
        if raise_on_error:
            for number, result in enumerate(results, 1):
                if isinstance(result, redis.ResponseError):
                    _annotate(result, number, commands[number - 1][0])
                if isinstance(result, Exception):
                    raise result
        return results

    async def _execute(self, commands: list[tuple[tuple[Any, ...], dict[str, Any]]]) -> list[Any]:
        client = self._client
        by_node: dict[str, tuple[AsyncNodeTransport, list[int]]] = {}
        leases: dict[int, _Lease | None] = {}
        for index, (args, options) in enumerate(commands):
            keys = list(options.pop("keys", None) or ()) or await client._keys(args)
            if not keys:
                continue  # keyless: run alone below
            route = client._slot_route[client._slot_of(args[0], keys)]
            if route is None:
                continue
            transport = route.primary
            if args[0] in READ_COMMANDS and route.readers is not None:
                if id(route) not in leases:
                    leases[id(route)] = _checkout(route.readers)
                lease = leases[id(route)]
                if lease is not None:
                    transport = client._transport(lease[1].endpoint.id)
            if transport is route.primary and route.primary_breaker.state != CLOSED:
                continue  # run alone below: a primary with an open breaker fails fast
            by_node.setdefault(transport.address, (transport, []))[1].append(index)

        results: list[Any] = [_PENDING] * len(commands)
        batches = list(by_node.values())
        answers = await asyncio.gather(
            *(t.execute_partial([commands[i][0] for i in indexes]) for t, indexes in batches)
        )
        failed: dict[str, BaseException] = {}
        for (transport, indexes), (replies, failure) in zip(batches, answers, strict=True):
            if failure is not None:
                failed[transport.address] = failure
                self._node_failed(transport.address, failure, leases)
                sent = not never_sent(failure)
                for i in indexes[len(replies) :]:
                    name = commands[i][0][0]
                    if sent and not client._locator.readonly(name):
                        client.stats.unknown_outcomes += 1
                        results[i] = _unknown(name, transport.address, failure)
            for i, reply in zip(indexes, replies, strict=False):
                if isinstance(reply, _RETRY_ON_OWN):
                    continue
                if isinstance(reply, NoScriptError) and await client._load_script(commands[i][0]):
                    continue  # it did not run: loaded now, and re-run on its own below
                if isinstance(reply, Exception):
                    results[i] = reply
                else:
                    name, options = commands[i][0][0], dict(commands[i][1])
                    options.pop("NEVER_DECODE", None)
                    results[i] = client._parse(name, reply, options)
        for lease in leases.values():
            if lease is not None:
                router, member, trial = lease
                router.checkin(member, trial, failed.get(member.endpoint.id), None)

        for i, result in enumerate(results):
            if result is _PENDING:  # one at a time, in order: a later read sees a write
                args, options = commands[i]
                try:
                    results[i] = await client.execute_command(*args, **options)
                except (redis.ResponseError, OutcomeUnknown) as exc:
                    results[i] = exc
        return results

    def _node_failed(
        self, address: str, failure: BaseException, leases: dict[int, _Lease | None]
    ) -> None:
        client = self._client
        leased = any(lease and lease[1].endpoint.id == address for lease in leases.values())
        if not leased and not refused(failure):  # a refused connect costs nothing
            client._breaker(address).record(failure)
        client.stats.node_errors += 1


_PENDING: Any = object()


def _annotate(error: redis.ResponseError, number: int, args: tuple[Any, ...]) -> None:
    """redis-py's wording, so code that parses pipeline errors keeps working."""
    command = " ".join(safe_str(a) for a in args)
    error.args = (
        f"Command # {number} ({truncate_text(command)}) of pipeline caused error: "
        f"{error.args[0] if error.args else ''}",
        *error.args[1:],
    )


def _unknown(name: Any, address: str, failure: BaseException) -> OutcomeUnknown:
    error = OutcomeUnknown(str(name), address, failure)
    error.__cause__ = failure
    return error


def _checkout(router: Router) -> _Lease | None:
    try:
        member, trial = router.checkout()
    except NoHealthyEndpoint:
        return None
    return router, member, trial
