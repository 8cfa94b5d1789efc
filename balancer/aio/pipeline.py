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
from redis.commands.core import AsyncDataAccessCommands, AsyncScriptCommands
from redis.utils import safe_str, truncate_text

from balancer.aio.transaction import Watch, exec_watched, on_watched, run_transaction, start_watch
from balancer.core.batch import BatchPlan
from balancer.core.errors import OutcomeUnknown

if TYPE_CHECKING:
    from balancer.aio.port import AsyncClientPort

__all__ = ["AsyncClusterPipeline"]


class AsyncClusterPipeline(AsyncDataAccessCommands, AsyncScriptCommands):
    """Returned by :meth:`AsyncClusterClient.pipeline`; queue commands (plain calls),
    then ``await pipe.execute()``; also an ``async with`` block."""

    _event_dispatcher: Any = None  # declared by redis-py's command protocol; unused here
    _is_async_client: Literal[True] = True

    def __init__(self, client: AsyncClientPort, transaction: bool = False) -> None:
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
        keys = [list(options.pop("keys", None) or ()) or await client._keys(args)
                for args, options in commands]  # fmt: skip
        plan = BatchPlan(client._table, commands, keys, client._slot_of)
        batches = list(plan.batches.items())
        answers = await asyncio.gather(
            *(t.execute_partial([commands[i][0] for i in indexes]) for _, (t, indexes) in batches)
        )
        for (address, (_, indexes)), (replies, failure) in zip(batches, answers, strict=True):
            plan.answered(
                address, indexes, replies, failure, client._locator.readonly, client._parse
            )
        for i, error in plan.noscript:
            if not await client._load_script(commands[i][0]):
                plan.not_loaded(i, error)  # else: it did not run; loaded now, re-run below
        plan.finish()
        results: list[Any] = plan.results
        for i in plan.pending():  # one at a time, in order: a later read sees a write
            args, options = commands[i]
            try:
                results[i] = await client.execute_command(*args, **options)
            except (redis.ResponseError, OutcomeUnknown) as exc:
                results[i] = exc
        return results


def _annotate(error: redis.ResponseError, number: int, args: tuple[Any, ...]) -> None:
    """redis-py's wording, so code that parses pipeline errors keeps working."""
    command = " ".join(safe_str(a) for a in args)
    error.args = (
        f"Command # {number} ({truncate_text(command)}) of pipeline caused error: "
        f"{error.args[0] if error.args else ''}",
        *error.args[1:],
    )
