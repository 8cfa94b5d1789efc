"""AsyncClusterClient: the asyncio twin of :class:`balancer.ClusterClient`.

Same routing (``key → slot → shard route → node``), strategies, per-node breakers,
redirections and the same safety rule: after a lost reply a command is sent again
only if it never left this client or only reads; a write raises
:class:`~balancer.errors.OutcomeUnknown`. The pure parts (slot map, strategies,
routers, breaker state machines, key locations, block times, replica freshness) are the
sync client's own; only the I/O is awaited. One event loop owns a client.

The command methods are redis-py's async mixins; they all end in
:meth:`AsyncClusterClient.execute_command`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Literal

import redis
from redis._parsers.encoders import Encoder
from redis._parsers.helpers import parse_info
from redis._parsers.response_callbacks import get_response_callbacks
from redis.backoff import EqualJitterBackoff
from redis.commands import READ_COMMANDS
from redis.connection import parse_url
from redis.crc import key_slot
from redis.exceptions import AskError, ClusterDownError, MovedError, TryAgainError

from balancer.aio.commands import AsyncClusterCommands
from balancer.aio.keys import NeedsServer, served_command_table
from balancer.aio.transport import AsyncNodeTransport, AsyncTransportOptions
from balancer.blocking import BLOCKING_COMMANDS, block_seconds
from balancer.breaker import CLOSED, BreakerPolicy, NodeBreaker
from balancer.cluster import ClientStats, ReadFrom
from balancer.endpoint import Endpoint, parse_address
from balancer.errors import (
    ClusterError,
    CrossSlotError,
    NodeUnavailable,
    NoHealthyEndpoint,
    OutcomeUnknown,
    SlotNotCovered,
    never_sent,
    refused,
)
from balancer.follow import RoutingFollower
from balancer.freshness import replica_is_fresh
from balancer.keys import KeyLocator
from balancer.router import Router
from balancer.slots import TOTAL_SLOTS, ShardInfo, SlotMap, parse_cluster_shards
from balancer.strategies import Strategy, StrategySpec, make_strategy

__all__ = ["AsyncClusterClient"]

_READ_FROM = ("primary", "replicas", "any")
NETWORK_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)
# The sync client's numbers: refreshes at most one per _REFRESH_GAP, doubling while they
# fail; retry backoff ~base * 2**attempt, half of it jittered.
# Commands that change a connection's state: meaningless over shared connections.
_CONNECTION_STATE = frozenset({"MULTI", "EXEC", "DISCARD", "WATCH", "UNWATCH", "SELECT",
                               "MONITOR", "RESET", "SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE",
                               "UNSUBSCRIBE", "PUNSUBSCRIBE", "SUNSUBSCRIBE"})  # fmt: skip
_REFRESH_GAP = 0.1
_REFRESH_GAP_MAX = 2.0
_BACKOFF_BASE = 0.004
_BACKOFF_CAP = 0.25


class _Route:
    """Where one shard's commands go: its primary, and a router over its read nodes."""

    __slots__ = ("primary", "primary_breaker", "readers", "shard")

    def __init__(
        self, shard: ShardInfo | None, primary: AsyncNodeTransport, breaker: NodeBreaker
    ) -> None:
        self.shard = shard
        self.primary = primary
        self.primary_breaker = breaker
        self.readers: Router | None = None


class AsyncClusterClient(AsyncClusterCommands):
    """Slot-aware asyncio cluster client; see the module docstring and README.

    Connects lazily (the first command, :meth:`initialize` or ``async with``); close with
    :meth:`aclose`."""

    _event_dispatcher: Any = None  # declared by redis-py's command protocol; unused here
    _is_async_client: Literal[True] = True  # selects redis-py's async return types

    def __init__(
        self,
        startup_nodes: str | Sequence[str],
        *,
        read_from: ReadFrom = "primary",
        strategy: StrategySpec = "round_robin",
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
        if read_from not in _READ_FROM:
            raise ValueError(f"read_from must be one of {', '.join(_READ_FROM)}, got {read_from!r}")
        seeds = [startup_nodes] if isinstance(startup_nodes, str) else list(startup_nodes)
        if not seeds:
            raise ValueError("AsyncClusterClient needs at least one startup node 'host:port'")
        self._seeds = [parse_address(s) for s in seeds]
        self.read_from: ReadFrom = read_from
        make_strategy(strategy)  # a bad name fails here, not at the first read
        self._strategy = strategy
        self.breaker_policy = breaker or BreakerPolicy()
        self.retry_deadline = retry_deadline
        self.max_redirects = max_redirects
        self.refresh_interval = refresh_interval
        self._tls = ssl
        self._socket_timeout = socket_timeout
        connection_kwargs.update(
            username=username, password=password, decode_responses=decode_responses
        )
        self._options = AsyncTransportOptions(
            ssl=ssl,
            readonly=read_from != "primary",
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_connect_timeout,
            **connection_kwargs,
        )
        self._max_connections = max_connections_per_node
        self._encoder: Any = Encoder(
            connection_kwargs.get("encoding", "utf-8"),
            connection_kwargs.get("encoding_errors", "strict"),
            decode_responses,
        )
        self._callbacks = get_response_callbacks(connection_kwargs.get("protocol"), True)
        self._transports: dict[str, AsyncNodeTransport] = {}
        self._breakers: dict[str, NodeBreaker] = {}
        self._routes: dict[str, _Route] = {}
        self._slot_route: list[_Route | None] = [None] * TOTAL_SLOTS
        self._slot_map = SlotMap.from_shards(())
        self.stats = ClientStats()
        self._refreshing = False
        self._next_refresh = 0.0
        self._refresh_attempted = -math.inf
        self._refresh_failures = 0
        self._backoff = EqualJitterBackoff(cap=_BACKOFF_CAP, base=_BACKOFF_BASE)
        self._command_table: dict[str, Any] | None = None
        self._locator = KeyLocator(served_command_table(lambda: self._command_table))
        self._routing: dict[str, tuple[str, float]] = {}
        self._stale: frozenset[str] = frozenset()
        self._max_replica_lag = max_replica_lag if read_from != "primary" else None
        self._replica_check_interval = replica_check_interval
        self._routing_url = routing_url
        self._routing_interval = routing_interval
        self._ready = False
        self._init_lock: asyncio.Lock | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> AsyncClusterClient:
        """``redis://[user:password@]host:port`` or ``rediss://`` for TLS; keyword
        arguments override what the URL says."""
        parsed = parse_url(url)
        options: dict[str, Any] = {
            k: v for k, v in parsed.items() if k in ("username", "password") and v is not None
        }
        if url.startswith("rediss://"):
            options["ssl"] = True
        options.update(kwargs)
        host = parsed.get("host", "localhost")
        return cls(f"{host}:{parsed.get('port', 6379)}", **options)

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
            self._command_table = self._callbacks["COMMAND"](raw)
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
        for transport in list(self._transports.values()):
            transport.close()
        self._ready = False

    close = aclose  # redis.asyncio spells it both ways

    async def __aenter__(self) -> AsyncClusterClient:
        return await self.initialize()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def node_states(self) -> dict[str, str]:
        """Breaker state per node address seen so far."""
        return {address: b.state for address, b in self._breakers.items()}

    # -- nodes, routes, topology ------------------------------------------------------

    def _transport(self, address: str) -> AsyncNodeTransport:
        transport = self._transports.get(address)
        if transport is None:
            host, port = parse_address(address)
            transport = AsyncNodeTransport(host, port, self._options, self._max_connections)
            self._transports[address] = transport
        return transport

    def _breaker(self, address: str) -> NodeBreaker:
        breaker = self._breakers.get(address)
        if breaker is None:
            breaker = self._breakers[address] = NodeBreaker(address, self.breaker_policy)
        return breaker

    def _breaker_for(self, endpoint: Endpoint) -> NodeBreaker:
        return self._breaker(endpoint.id)

    def _route_for(self, address: str, shard: ShardInfo | None = None) -> _Route:
        route = self._routes.get(address)
        if route is None or (shard is not None and route.shard is not shard):
            old = route
            route = _Route(shard, self._transport(address), self._breaker(address))
            if old is not None:
                route.readers = old.readers
            if shard is not None:
                self._attach_readers(route, shard)
            self._routes[address] = route
        return route

    def _attach_readers(self, route: _Route, shard: ShardInfo) -> None:
        if self.read_from == "primary":
            return
        nodes = [n for n in shard.replicas if n.online and n.address not in self._stale]
        if self.read_from == "any":
            nodes.insert(0, shard.primary)
        # The controller's table: draining and down nodes (weight 0) get no reads.
        weights = {n.address: self._routing.get(n.address, ("up", 1.0))[1] for n in nodes}
        nodes = [n for n in nodes if weights[n.address] > 0]
        if not nodes:
            route.readers = None
            return
        endpoints = [Endpoint(n.address, weight=weights[n.address]) for n in nodes]
        if route.readers is None:
            route.readers = Router(
                endpoints,
                strategy=self._new_strategy(),
                breaker=self.breaker_policy,
                breaker_factory=self._breaker_for,
            )
        else:
            route.readers.update(endpoints)

    def _new_strategy(self) -> Strategy:
        """Each shard's router gets its own strategy (a shared instance would pick from
        whichever shard rebuilt it last)."""
        if isinstance(self._strategy, Strategy):
            return self._strategy.clone()
        return make_strategy(self._strategy)

    def _reattach_all(self) -> None:
        for route in list(self._routes.values()):
            if route.shard is not None:
                self._attach_readers(route, route.shard)

    def apply_routing(self, table: Mapping[str, Any]) -> None:
        """Apply a routing table (``/v1/routing`` JSON): per node ``state`` and ``weight``.
        Reads avoid weight-0 (draining/down) nodes; writes still go to slot owners."""
        routing: dict[str, tuple[str, float]] = {}
        nodes = table.get("nodes") if isinstance(table, Mapping) else None
        for entry in nodes if isinstance(nodes, list) else []:
            if not isinstance(entry, Mapping):
                continue  # one bad row must not drop the whole table
            try:
                weight = float(entry["weight"]) if entry.get("state") == "up" else 0.0
                routing[str(entry["address"])] = (str(entry.get("state", "up")), weight)
            except (KeyError, TypeError, ValueError):
                continue
        self._routing = routing
        self._reattach_all()

    async def _routing_loop(self, url: str) -> None:
        """The sync client's follower, its blocking poll run in a worker thread; tables
        are applied on this loop."""
        loop = asyncio.get_running_loop()

        def apply(table: Mapping[str, Any]) -> None:
            loop.call_soon_threadsafe(self.apply_routing, table)

        follower = RoutingFollower(url, apply, self._routing_interval)
        while True:
            await asyncio.to_thread(follower.poll)
            await asyncio.sleep(self._routing_interval)

    @property
    def stale_replicas(self) -> frozenset[str]:
        """Replicas getting no reads now: link to the primary down, or silent for longer
        than ``max_replica_lag`` seconds."""
        return self._stale

    async def check_replicas(self) -> frozenset[str]:
        """One round of ``INFO replication`` over every replica (see
        :func:`balancer.freshness.replica_is_fresh`); returns the stale set."""
        assert self._max_replica_lag is not None
        stale: set[str] = set()
        for shard in self._slot_map.shards:
            for replica in shard.replicas:
                try:
                    raw = await self._transport(replica.address).execute(("INFO", "replication"))
                    text = raw.decode() if isinstance(raw, bytes) else str(raw)
                    fresh = replica_is_fresh(parse_info(text), self._max_replica_lag)
                except (redis.RedisError, OSError, ValueError):
                    continue  # a dead or odd node: the breakers handle it
                if fresh is False:
                    stale.add(replica.address)
        result = frozenset(stale)
        if result != self._stale:
            self._stale = result
            self._reattach_all()
        return result

    async def _replica_loop(self) -> None:
        while True:
            await asyncio.sleep(self._replica_check_interval)
            await self.check_replicas()

    @property
    def slot_map(self) -> SlotMap:
        return self._slot_map

    async def refresh_topology(self) -> SlotMap:
        """Re-read ``CLUSTER SHARDS`` from a reachable node and swap in the new routes."""
        while self._refreshing:
            await asyncio.sleep(0.005)
        return await self._refresh(None)

    async def _refresh(self, deadline: float | None) -> SlotMap:
        self._refreshing = True
        self._refresh_attempted = time.monotonic()
        self.stats.refresh_attempts += 1
        try:
            slot_map = await self._read_slot_map(deadline)
        except (ClusterError, ValueError):
            self._refresh_failures += 1
            raise
        finally:
            self._refreshing = False
        self._refresh_failures = 0
        routes = [self._route_for(s.primary.address, s) for s in slot_map.shards]
        live = {s.primary.address for s in slot_map.shards}
        for address in list(self._routes):
            if address not in live:
                del self._routes[address]
        self._slot_route = [routes[i] if i >= 0 else None for i in slot_map.owner]
        self._slot_map = slot_map
        self.stats.refreshes += 1
        self._next_refresh = time.monotonic() + self.refresh_interval
        return slot_map

    async def _read_slot_map(self, deadline: float | None) -> SlotMap:
        """``CLUSTER SHARDS`` from the first node whose view covers at least as many
        slots as the map in use (a node that just left the cluster still answers, with
        no slots); when none does, the best view wins."""
        best: SlotMap | None = None
        wanted = TOTAL_SLOTS - self._slot_map.uncovered if self._slot_map.shards else 1
        errors: list[str] = []
        async for reply, host in self._answers(("CLUSTER", "SHARDS"), deadline, errors):
            try:
                slot_map = parse_cluster_shards(reply, tls=self._tls, default_host=host)
            except ValueError as exc:
                errors.append(f"{host}: {exc}")
                continue
            if not slot_map.shards:
                errors.append(f"{host}: CLUSTER SHARDS lists no shard with a primary")
                continue
            if best is None or slot_map.uncovered < best.uncovered:
                best = slot_map
            if TOTAL_SLOTS - slot_map.uncovered >= wanted:
                break
        if best is None:
            raise ClusterError(f"no node answered 'CLUSTER SHARDS': {'; '.join(errors[:5])}")
        return best

    async def _answers(
        self, args: Sequence[Any], deadline: float | None, errors: list[str]
    ) -> AsyncIterator[tuple[Any, str]]:
        """Replies to ``args`` node by node (healthy known nodes first, then the seeds)
        while the caller asks for more and ``deadline`` allows."""
        known = list(self._slot_map.addresses())
        random.shuffle(known)
        known.sort(key=lambda a: self._breaker(a).state != CLOSED)
        seeds = [f"{h}:{p}" for h, p in self._seeds]
        for address in dict.fromkeys(known + seeds):
            if deadline is not None and errors and time.monotonic() >= deadline:
                return
            transport = self._transport(address)
            try:
                reply = await transport.execute(args)
            except NETWORK_ERRORS as exc:
                if not refused(exc):  # a dead node costs nothing; a hung one does
                    self._breaker(address).record(exc)
                errors.append(f"{address}: {exc}")
                continue
            except redis.ResponseError as exc:
                errors.append(f"{address}: {exc}")
                continue
            yield reply, transport.host

    async def _ask_any(self, args: Sequence[Any], deadline: float | None = None) -> tuple[Any, str]:
        """(reply, host) from the first node that answers ``args``."""
        errors: list[str] = []
        async for reply, host in self._answers(args, deadline, errors):
            return reply, host
        raise ClusterError(f"no node answered {args[0]!r}: {'; '.join(errors[:5])}")

    async def _maybe_refresh(self, force: bool = False, deadline: float | None = None) -> None:
        """Refresh if due (or ``force``), never raising; one refresh in flight, at most
        one per ``_REFRESH_GAP`` (doubling while refreshes fail)."""
        now = time.monotonic()
        if not force and now < self._next_refresh:
            return
        gap = min(_REFRESH_GAP * (1 << min(self._refresh_failures, 6)), _REFRESH_GAP_MAX)
        if now - self._refresh_attempted < gap or self._refreshing:
            return  # another task is refreshing; its result serves this call too
        with contextlib.suppress(ClusterError, ValueError):
            await self._refresh(deadline)

    # -- executing ----------------------------------------------------------------------

    def _slot_of(self, name: str, keys: Sequence[Any]) -> int:
        encode = self._encoder.encode
        slot = key_slot(encode(keys[0]))
        for key in keys[1:]:
            if key_slot(encode(key)) != slot:
                slots = tuple(sorted({key_slot(encode(k)) for k in keys}))
                raise CrossSlotError(name, slots)
        return slot

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
        if name in _CONNECTION_STATE:
            raise redis.RedisClusterException(
                f"{name} changes a connection's state; AsyncClusterClient shares "
                "connections between tasks and does not support it"
            )
        keys = list(options.pop("keys", None) or ()) or await self._keys(args)
        if self._next_refresh <= time.monotonic():
            await self._maybe_refresh()
        if not keys:
            return await self._execute_keyless(args, options)
        slot = self._slot_of(name, keys)
        block = block_seconds(args) if name in BLOCKING_COMMANDS else None
        raw = await self._execute_slot(
            slot, args, name in READ_COMMANDS, options.pop("NEVER_DECODE", False), block
        )
        return self._parse(name, raw, options)

    def _parse(self, name: str, raw: Any, options: dict[str, Any]) -> Any:
        options.pop("EMPTY_RESPONSE", None)
        callback = self._callbacks.get(name)
        return callback(raw, **options) if callback is not None else raw

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
        read_timeout: float | bool | None = False
        if block is not None:
            limit = self._socket_timeout
            read_timeout = None if math.isinf(block) or limit is None else block + limit
        tried: set[str] = set()
        asking: AsyncNodeTransport | None = None
        redirects = attempt = 0
        deadline = 0.0
        last: BaseException | None = None
        while True:
            if attempt:
                deadline = self._check_deadline(deadline, last)
            attempt += 1
            route = self._slot_route[slot]
            if route is None:
                last = SlotNotCovered(slot)
                deadline = await self._wait_or_raise(deadline, last, attempt)
                continue
            member = None
            readers: Router | None = None
            trial = False
            if asking is not None:
                transport, breaker = asking, self._breaker(asking.address)
            else:
                readers = route.readers if read else None
                if readers is not None:
                    try:
                        member, trial = readers.checkout(tried)
                    except NoHealthyEndpoint:
                        member = None
                if member is not None:
                    transport, breaker = self._transport(member.endpoint.id), member.breaker
                else:
                    transport, breaker = route.primary, route.primary_breaker
                    if breaker.state != CLOSED:
                        if not breaker.admit(time.monotonic()):
                            deadline = await self._primary_unavailable(slot, route, deadline)
                            continue
                        trial = True
            started = time.perf_counter()
            try:
                raw = await transport.execute(
                    args, never_decode, asking is not None, not read, read_timeout
                )
            except NETWORK_ERRORS as exc:
                counted: BaseException | None = exc
                if block is not None and isinstance(exc, redis.TimeoutError):
                    counted = None  # a blocking command's timeout: not the node's failure
                if member is not None and readers is not None:
                    readers.checkin(member, trial, counted, None)
                elif trial or (counted is not None and not refused(exc)):
                    # A refused connection costs nothing (a dead primary is retried
                    # until its replica takes over); timeouts and hangs count.
                    breaker.record(counted, trial)
                self.stats.node_errors += 1
                asking = None
                if not (never_sent(exc) or self._locator.readonly(args[0])):
                    self.stats.unknown_outcomes += 1
                    raise OutcomeUnknown(str(args[0]), transport.address, exc) from exc
                last = exc
                tried.add(transport.address)
                if read and member is not None:
                    self.stats.failovers += 1
                    continue  # fail over inside the shard at once
                deadline = await self._wait_or_raise(deadline, exc, attempt)
                tried.discard(transport.address)
                continue
            except redis.ResponseError as exc:
                if member is not None and readers is not None:
                    readers.checkin(member, trial, None, None)
                elif trial:
                    breaker.record(None, trial)
                asking = None
                if isinstance(exc, MovedError):
                    redirects += 1
                    self.stats.moved += 1
                    self._moved(slot, exc)
                elif isinstance(exc, AskError):
                    redirects += 1
                    self.stats.ask += 1
                    asking = self._transport(f"{exc.host}:{exc.port}")
                elif isinstance(exc, TryAgainError | ClusterDownError):
                    if isinstance(exc, TryAgainError):
                        self.stats.tryagain += 1
                    else:
                        self.stats.clusterdown += 1
                    last = exc
                    deadline = await self._wait_or_raise(deadline, exc, attempt)
                else:
                    raise
                if redirects > self.max_redirects:
                    raise ClusterError(
                        f"too many redirections ({redirects}) for slot {slot}"
                    ) from exc
                continue
            except BaseException:
                if member is not None and readers is not None:
                    readers.checkin(member, trial, None, None)  # cancelled: not the node's
                elif trial:
                    breaker.record(None, trial)
                raise
            if member is not None and readers is not None:
                readers.checkin(member, trial, None, time.perf_counter() - started)
            elif trial or not breaker._clean:
                breaker.record(None, trial)
            return raw

    async def _primary_unavailable(self, slot: int, route: _Route, deadline: float) -> float:
        """The slot's primary has an open breaker: nothing is sent. Fail fast with
        :class:`NodeUnavailable` unless a topology refresh names another primary."""
        await self._maybe_refresh(force=True)
        if self._slot_route[slot] is not route:
            return deadline or time.monotonic() + self.retry_deadline
        address = route.primary.address
        raise NodeUnavailable(address, "circuit breaker open after repeated failures")

    def _check_deadline(self, deadline: float, last: BaseException | None) -> float:
        """Start the retry budget at the first failure; past it, stop trying."""
        now = time.monotonic()
        if not deadline:
            return now + self.retry_deadline
        if now >= deadline:
            if last is not None:
                raise last
            raise ClusterError(f"no answer within retry_deadline={self.retry_deadline}s")
        return deadline

    async def _wait_or_raise(self, deadline: float, exc: BaseException, attempt: int = 1) -> float:
        """Back off (exponential, jittered) and refresh the topology; raise ``exc`` once
        the deadline has passed."""
        now = time.monotonic()
        if not deadline:
            deadline = now + self.retry_deadline
        elif now >= deadline:
            raise exc
        await self._maybe_refresh(force=True, deadline=deadline)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise exc
        await asyncio.sleep(min(self._backoff.compute(attempt), remaining))
        return deadline

    def _moved(self, slot: int, exc: MovedError) -> None:
        address = f"{exc.host}:{exc.port}"
        self._slot_route[slot] = self._routes.get(address) or self._route_for(address)
        self._next_refresh = 0.0  # the next call re-reads the whole map

    async def _on_node(self, transport: AsyncNodeTransport, args: Sequence[Any]) -> Any:
        """A command pinned to one node (keyless commands, SCAN cursors): retried on that
        node within ``retry_deadline`` when it never left or only reads; a write whose
        reply was lost raises :class:`OutcomeUnknown`."""
        deadline = 0.0
        attempt = 0
        while True:
            attempt += 1
            try:
                return await transport.execute(args)
            except NETWORK_ERRORS as exc:
                if not refused(exc):
                    self._breaker(transport.address).record(exc)
                self.stats.node_errors += 1
                if not (never_sent(exc) or self._locator.readonly(args[0])):
                    self.stats.unknown_outcomes += 1
                    raise OutcomeUnknown(str(args[0]), transport.address, exc) from exc
                deadline = await self._wait_or_raise(deadline, exc, attempt)

    def _primaries(self) -> list[AsyncNodeTransport]:
        routes = {id(r): r for r in self._slot_route if r is not None}.values()
        return [r.primary for r in routes]
