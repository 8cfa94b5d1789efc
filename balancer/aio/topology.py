"""The asyncio client's picture of the cluster: nodes, routes, the slot map and what
decides where reads go (``read_from``, the controller's routing table, stale replicas).

The sync client's rules, awaited: ``CLUSTER SHARDS`` is re-read from the first node whose
view covers at least as many slots as the map in use; one refresh is in flight at a time
and at most one starts per ``_REFRESH_GAP`` (doubling while they fail), whatever asks
for it. Mixed into :class:`~balancer.aio.client.AsyncClusterClient`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import redis

from balancer.aio.mux import echoed
from balancer.aio.pubsub import AsyncPubSubNodes
from balancer.aio.transport import AsyncNodeTransport, AsyncTransportOptions
from balancer.core.breaker import CLOSED, BreakerPolicy, NodeBreaker
from balancer.core.endpoint import Endpoint, parse_address
from balancer.core.errors import ClusterError, refused
from balancer.core.freshness import info_fields, replica_is_fresh
from balancer.core.nodes import NodeDirectory
from balancer.core.reads import read_endpoints
from balancer.core.router import Router
from balancer.core.routes import ClientStats
from balancer.core.settings import ReadFrom
from balancer.core.slots import TOTAL_SLOTS, ShardInfo, SlotMap, parse_cluster_shards
from balancer.core.strategies import Strategy, StrategySpec, make_strategy
from balancer.follow import RoutingFollower

__all__ = ["AsyncTopology", "Route"]

NETWORK_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)
_REFRESH_GAP = 0.1
_REFRESH_GAP_MAX = 2.0


class Route:
    """Where one shard's commands go: its primary, and a router over its read nodes."""

    __slots__ = ("primary", "primary_breaker", "readers", "shard")

    def __init__(
        self, shard: ShardInfo | None, primary: AsyncNodeTransport, breaker: NodeBreaker
    ) -> None:
        self.shard = shard
        self.primary = primary
        self.primary_breaker = breaker
        self.readers: Router | None = None


class AsyncTopology:
    """Nodes, routes and the slot map of an :class:`AsyncClusterClient`."""

    read_from: ReadFrom
    breaker_policy: BreakerPolicy
    refresh_interval: float
    stats: ClientStats
    _strategy: StrategySpec
    _seeds: list[tuple[str, int]]
    _tls: bool
    _options: AsyncTransportOptions
    _max_connections: int
    _transports: dict[str, AsyncNodeTransport]
    _breakers: dict[str, NodeBreaker]
    _routes: dict[str, Route]
    _slot_route: list[Route | None]
    _slot_map: SlotMap
    _routing: dict[str, tuple[str, float]]
    _stale: frozenset[str]
    _max_replica_lag: float | None
    _replica_check_interval: float
    _routing_interval: float
    _refreshing: bool
    _next_refresh: float
    _refresh_attempted: float
    _refresh_failures: int
    _directory: NodeDirectory
    _pubsub_nodes: AsyncPubSubNodes | None

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

    def _route_for(self, address: str, shard: ShardInfo | None = None) -> Route:
        route = self._routes.get(address)
        if route is None or (shard is not None and route.shard is not shard):
            old = route
            route = Route(shard, self._transport(address), self._breaker(address))
            if old is not None:
                route.readers = old.readers
            if shard is not None:
                self._attach_readers(route, shard)
            self._routes[address] = route
        return route

    def _attach_readers(self, route: Route, shard: ShardInfo) -> None:
        if self.read_from == "primary":
            return
        endpoints = read_endpoints(shard, self.read_from, self._stale, self._routing)
        if not endpoints:
            route.readers = None
            return
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
        :func:`balancer.core.freshness.replica_is_fresh`); returns the stale set."""
        assert self._max_replica_lag is not None
        stale: set[str] = set()
        for shard in self._slot_map.shards:
            for replica in shard.replicas:
                try:
                    raw = await self._transport(replica.address).execute(("INFO", "replication"))
                    fresh = replica_is_fresh(info_fields(raw), self._max_replica_lag)
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
        old, self._slot_map = self._slot_map, slot_map
        self._directory.update(slot_map)
        if self._pubsub_nodes is not None and old.owner != slot_map.owner:
            await self._pubsub_nodes.slots_changed()  # sharded subscribers follow
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
                if not (refused(exc) or echoed(exc)):  # a dead node costs nothing
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
