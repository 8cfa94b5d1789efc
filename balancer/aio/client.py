"""AsyncClusterClient: the asyncio twin of :class:`balancer.ClusterClient`.

Same routing (``key → slot → shard route → node``), strategies, per-node breakers,
redirections and the same safety rule: after a lost reply a command is sent again
only if it never left this client or only reads; a write raises
:class:`~balancer.core.errors.OutcomeUnknown`. The pure parts (slot map, strategies,
routers, breaker state machines, key locations, block times, replica freshness) are the
sync client's own; only the I/O is awaited. One event loop owns a client.

The command methods are redis-py's async mixins; they all end in
:meth:`AsyncClusterClient.execute_command`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any, Literal

import redis
from redis.commands import READ_COMMANDS

from balancer.aio.commands import AsyncClusterCommands
from balancer.aio.pubsub import AsyncPubSubNodes
from balancer.aio.topology import AsyncTopology
from balancer.aio.transport import AsyncNodeTransport, AsyncTransportOptions
from balancer.core.attempt import Attempt
from balancer.core.blocking import BLOCKING_COMMANDS, block_seconds
from balancer.core.breaker import BreakerPolicy
from balancer.core.client import ClientCore
from balancer.core.errors import ClusterError, NodeUnavailable
from balancer.core.keys import KeyLocator, NeedsServer
from balancer.core.nodes import ClusterNode
from balancer.core.routes import Route
from balancer.core.settings import ReadFrom
from balancer.core.strategies import StrategySpec
from balancer.core.targets import (
    NODE_COMMANDS,
)

__all__ = ["AsyncClusterClient"]

NETWORK_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)
# Commands that change a connection's state: meaningless over shared connections.
_CONNECTION_STATE = frozenset({"MULTI", "EXEC", "DISCARD", "WATCH", "UNWATCH", "SELECT",
                               "MONITOR", "RESET", "SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE",
                               "UNSUBSCRIBE", "PUNSUBSCRIBE", "SUNSUBSCRIBE", "AUTH", "HELLO",
                               "READONLY", "READWRITE", "CLIENT REPLY"})  # fmt: skip


class AsyncClusterClient(AsyncTopology, ClientCore[AsyncNodeTransport], AsyncClusterCommands):  # type: ignore[misc]
    """Slot-aware asyncio cluster client; see the module docstring and README.

    Connects lazily (the first command, :meth:`initialize` or ``async with``); close with
    :meth:`aclose`."""

    _is_async_client: Literal[True] = True  # selects redis-py's async return types
    _SOCKET_TIMEOUT = False

    def __init__(
        self,
        startup_nodes: str | Sequence[str | ClusterNode] | None = None,
        *,
        host: str | None = None,
        port: int | None = None,
        read_from: ReadFrom = "primary",
        read_from_replicas: bool = False,
        strategy: StrategySpec = "round_robin",
        load_balancing_strategy: Any = None,
        breaker: BreakerPolicy | None = None,
        username: str | None = None,
        password: str | None = None,
        ssl: bool = False,
        socket_timeout: float | None = 0.5,
        socket_connect_timeout: float | None = 0.5,
        decode_responses: bool = False,
        max_connections_per_node: int = 256,
        retry_deadline: float = 5.0,
        max_redirects: int = 16,
        refresh_interval: float = 30.0,
        routing_url: str | None = None,
        routing_interval: float = 5.0,
        max_replica_lag: float | None = 30.0,
        replica_check_interval: float = 1.0,
        **connection_kwargs: Any,
    ) -> None:
        connection_kwargs.update(
            username=username, password=password, decode_responses=decode_responses
        )
        self._configure(
            "AsyncClusterClient", startup_nodes, host, port, read_from=read_from,
            read_from_replicas=read_from_replicas, strategy=strategy,
            load_balancing_strategy=load_balancing_strategy, breaker=breaker, ssl=ssl,
            socket_timeout=socket_timeout, decode_responses=decode_responses,
            retry_deadline=retry_deadline, max_redirects=max_redirects,
            refresh_interval=refresh_interval, connection_kwargs=connection_kwargs,
            connect=self._connect,
        )  # fmt: skip
        self._options = AsyncTransportOptions(
            ssl=ssl,
            readonly=self.read_from != "primary",
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_connect_timeout,
            **connection_kwargs,
        )
        self._max_connections = max_connections_per_node
        self._pubsub_nodes: AsyncPubSubNodes | None = None  # made by the first pubsub()
        self._refreshing = False
        self._use_locator(KeyLocator())  # the table is installed by initialize()
        self._max_replica_lag = max_replica_lag if self.read_from != "primary" else None
        self._replica_check_interval = replica_check_interval
        self._routing_url = routing_url
        self._routing_interval = routing_interval
        self._ready = False
        self._init_lock: asyncio.Lock | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle ----------------------------------------------------------------------

    async def initialize(self) -> AsyncClusterClient:
        """Read the topology and the server's command table; start the background
        tasks (replica freshness, routing table). Idempotent."""
        if self._ready:
            return self
        if self._init_lock is None:
            self._init_lock = asyncio.Lock()
        async with self._init_lock:
            if self._ready:
                return self
            await self.refresh_topology()
            raw, _ = await self._ask_any(("COMMAND",))
            self._locator.install(raw)
            if self._max_replica_lag is not None:
                await self.check_replicas()
                self._spawn(self._replica_loop())
            if self._routing_url is not None:
                self._spawn(self._routing_loop(self._routing_url))
            self._ready = True
        return self

    def _spawn(self, coro: Any) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(coro))

    async def aclose(self) -> None:
        """Stop the background tasks and close every idle connection."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for transport in list(self._table.transports.values()):
            transport.close()
        if self._pubsub_nodes is not None:
            await self._pubsub_nodes.aclose()
        self._ready = False

    close = aclose  # redis.asyncio spells it both ways

    async def __aenter__(self) -> AsyncClusterClient:
        return await self.initialize()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- executing ----------------------------------------------------------------------

    async def _keys(self, args: Sequence[Any]) -> list[Any]:
        try:
            return self._locator.keys(args)
        except NeedsServer as need:  # movable keys: the server says which
            try:
                raw, _ = await self._ask_any(("COMMAND", "GETKEYS", *need.pieces))
            except ClusterError as exc:
                if "no key arguments" in str(exc) or "Invalid arguments" in str(exc):
                    return []
                raise
            return list(raw or [])

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        """Route one command by its keys and return the parsed reply."""
        if not self._ready:
            await self.initialize()
        name = args[0]
        if name in _CONNECTION_STATE or str(name).upper() in _CONNECTION_STATE:
            raise redis.RedisClusterException(
                f"{name} changes a connection's state; AsyncClusterClient shares "
                "connections between tasks and does not support it"
            )
        if name in NODE_COMMANDS or "target_nodes" in options:
            return await self._execute_on_nodes(args, options)
        keys = list(options.pop("keys", None) or ()) or await self._keys(args)
        if self._table.next_refresh <= time.monotonic():
            await self._maybe_refresh()
        if not keys:
            return await self._execute_on_nodes(args, options)
        slot = self._slot_of(name, keys)
        block = block_seconds(args) if name in BLOCKING_COMMANDS else None
        read = name in READ_COMMANDS
        attempt = Attempt(self._table, self._rules, slot, name, read, block)
        raw = await self._drive(attempt, args, options.pop("NEVER_DECODE", False), block, not read)
        return self._parse(name, raw, options)

    async def _execute_slot(
        self,
        slot: int,
        args: Sequence[Any],
        read: bool,
        never_decode: bool = False,
        block: float | None = None,
    ) -> Any:
        """Run one command on the node serving ``slot``. ``block``: the seconds a
        blocking command may wait on the server (its reply may take that long plus the
        socket timeout, and its timeout is not held against the node)."""
        attempt = Attempt(self._table, self._rules, slot, args[0], read, block)
        return await self._drive(attempt, args, never_decode, block, not read)

    async def _drive(
        self,
        attempt: Attempt[AsyncNodeTransport],
        args: Sequence[Any],
        never_decode: bool,
        block: float | None,
        check: bool,
    ) -> Any:
        """The driver loop over :class:`~balancer.core.attempt.Attempt`: send where it
        says, tell it what came back, refresh and sleep when it asks."""
        read_timeout = self._read_timeout(block)
        while True:
            target = attempt.next_target()
            if target is None:
                await self._maybe_refresh(force=True, deadline=attempt.refresh_deadline)
                pause = attempt.pause()
                if pause > 0:
                    await asyncio.sleep(pause)
                continue
            try:
                raw = await target.transport.execute(
                    args, never_decode, target.asking, check, read_timeout
                )
            except (*NETWORK_ERRORS, redis.ResponseError) as exc:
                attempt.on_error(target, exc)
                continue
            except BaseException:
                attempt.abandon(target)  # cancelled: not the node's failure
                raise
            attempt.on_reply(target)
            return raw

    async def _wait_or_raise(self, deadline: float, exc: BaseException, attempt: int = 1) -> float:
        """Back off (exponential, jittered) and refresh the topology; raise ``exc`` once
        the deadline has passed (the transaction's retry loop)."""
        now = time.monotonic()
        if not deadline:
            deadline = now + self.retry_deadline
        elif now >= deadline:
            raise exc
        await self._maybe_refresh(force=True, deadline=deadline)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise exc
        await asyncio.sleep(min(self._rules.backoff.compute(attempt), remaining))
        return deadline

    async def _primary_unavailable(
        self, slot: int, route: Route[AsyncNodeTransport], deadline: float
    ) -> float:
        """The slot's primary has an open breaker (the transaction's check): fail fast
        with :class:`NodeUnavailable` unless a topology refresh names another primary."""
        await self._maybe_refresh(force=True)
        if self._table.slot_route[slot] is not route:
            return deadline or time.monotonic() + self.retry_deadline
        address = route.primary.address
        raise NodeUnavailable(address, "circuit breaker open after repeated failures")

    async def _execute_on_nodes(self, args: Sequence[Any], options: dict[str, Any]) -> Any:
        """A command without keys (or with ``target_nodes=``): on the nodes its flag or
        ``target_nodes`` names, replies combined as ``RedisCluster`` does."""
        if self._table.next_refresh <= time.monotonic():
            await self._maybe_refresh()
        call = self._node_call(args, options)
        replies: dict[str, Any] = {}
        for node in call.nodes:
            transport = self._transport(node.name)
            raw = await self._on_node(transport, args, call.never_decode, call.block)
            replies[node.name] = self._parse(args[0], raw, dict(call.options))
        return call.merge(replies)

    async def _on_node(
        self,
        transport: AsyncNodeTransport,
        args: Sequence[Any],
        never_decode: bool = False,
        block: float | None = None,
    ) -> Any:
        """A command pinned to one node (keyless commands, SCAN cursors): retried on that
        node within ``retry_deadline`` when it never left or only reads; a write whose
        reply was lost raises :class:`OutcomeUnknown`. ``block``: as in
        :meth:`_execute_slot` (``WAIT``)."""
        attempt = Attempt(self._table, self._rules, -1, args[0], False, block, transport)
        return await self._drive(attempt, args, never_decode, block, False)
