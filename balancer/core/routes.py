"""Where commands go: per-shard routes over the slot map, and what the client counts.

Both clients hold the same picture of the cluster: ``slot → route`` (a shard's primary
and a router over its read nodes), per-node transports and breakers, what the
controller's routing table says, which replicas are stale, and when to re-read the
topology. :class:`RouteTable` is that picture's rules, free of I/O: the drivers read
``CLUSTER SHARDS`` from the nodes :meth:`RouteTable.ask_order` names and hand the replies
to a :class:`SlotMapVote`; the transport objects are made by a factory the driver gives.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from balancer.core.breaker import CLOSED, BreakerPolicy, NodeBreaker
from balancer.core.endpoint import Endpoint, parse_address
from balancer.core.errors import ClusterError, echoed, refused
from balancer.core.nodes import NodeDirectory
from balancer.core.reads import read_endpoints
from balancer.core.router import Router
from balancer.core.settings import ReadFrom
from balancer.core.slots import TOTAL_SLOTS, ShardInfo, SlotMap, parse_cluster_shards
from balancer.core.strategies import Strategy, StrategySpec, make_strategy

__all__ = ["ClientStats", "NodeLink", "Route", "RouteTable", "SlotMapVote", "parse_routing"]

# Topology refreshes: at most one per REFRESH_GAP, doubling while they fail.
REFRESH_GAP = 0.1
REFRESH_GAP_MAX = 2.0


@dataclass
class ClientStats:
    """Counters of what the client absorbed on the caller's behalf (approximate under
    concurrency: plain integer increments)."""

    moved: int = 0
    ask: int = 0
    tryagain: int = 0
    clusterdown: int = 0
    node_errors: int = 0
    failovers: int = 0  # reads moved to another node of the shard after a node error
    refreshes: int = 0
    refresh_attempts: int = 0  # including failed ones
    unknown_outcomes: int = 0  # writes whose reply was lost: raised, never re-sent


class NodeLink(Protocol):
    """What the table needs of a driver's transport to one node."""

    @property
    def address(self) -> str: ...

    @property
    def host(self) -> str: ...


T = TypeVar("T", bound=NodeLink)


class Route(Generic[T]):
    """Where one shard's commands go: its primary, and a router over its read nodes."""

    __slots__ = ("primary", "primary_breaker", "readers", "shard")

    def __init__(self, shard: ShardInfo | None, primary: T, breaker: NodeBreaker) -> None:
        self.shard = shard
        self.primary = primary
        self.primary_breaker = breaker
        self.readers: Router | None = None


def parse_routing(table: Mapping[str, Any]) -> dict[str, tuple[str, float]]:
    """A routing table (``/v1/routing`` JSON) as ``address → (state, weight)``; a node
    that is not ``up`` weighs 0. One bad row never drops the whole table."""
    routing: dict[str, tuple[str, float]] = {}
    nodes = table.get("nodes") if isinstance(table, Mapping) else None
    for entry in nodes if isinstance(nodes, list) else []:
        if not isinstance(entry, Mapping):
            continue
        try:
            weight = float(entry["weight"]) if entry.get("state") == "up" else 0.0
            routing[str(entry["address"])] = (str(entry.get("state", "up")), weight)
        except (KeyError, TypeError, ValueError):
            continue
    return routing


class SlotMapVote:
    """Which ``CLUSTER SHARDS`` reply to believe: the first whose view covers at least as
    many slots as the map in use. A node that has just left the cluster (reset, about to
    stop) still answers, with a view of itself alone and no slots: taking its word would
    route every slot nowhere. When no view is that good, the best one wins."""

    def __init__(self, current: SlotMap, tls: bool) -> None:
        self.wanted = TOTAL_SLOTS - current.uncovered if current.shards else 1
        self.tls = tls
        self.best: SlotMap | None = None
        self.errors: list[str] = []

    def offer(self, reply: Any, host: str) -> bool:
        """Weigh one node's reply; True once it is good enough to stop asking."""
        try:
            slot_map = parse_cluster_shards(reply, tls=self.tls, default_host=host)
        except ValueError as exc:
            self.errors.append(f"{host}: {exc}")
            return False
        if not slot_map.shards:
            self.errors.append(f"{host}: CLUSTER SHARDS lists no shard with a primary")
            return False
        if self.best is None or slot_map.uncovered < self.best.uncovered:
            self.best = slot_map
        return TOTAL_SLOTS - slot_map.uncovered >= self.wanted

    def result(self) -> SlotMap:
        if self.best is None:
            raise ClusterError(f"no node answered 'CLUSTER SHARDS': {'; '.join(self.errors[:5])}")
        return self.best


class RouteTable(Generic[T]):
    """The routes of one client; ``connect(host, port)`` makes a node's transport."""

    def __init__(
        self,
        connect: Callable[[str, int], T],
        seeds: list[tuple[str, int]],
        *,
        read_from: ReadFrom,
        strategy: StrategySpec,
        breaker_policy: BreakerPolicy,
        refresh_interval: float,
        tls: bool,
    ) -> None:
        self.connect = connect
        self.seeds = seeds
        self.read_from: ReadFrom = read_from
        self.strategy = strategy
        self.breaker_policy = breaker_policy
        self.refresh_interval = refresh_interval
        self.tls = tls
        self.transports: dict[str, T] = {}
        self.breakers: dict[str, NodeBreaker] = {}
        self.routes: dict[str, Route[T]] = {}
        self.slot_route: list[Route[T] | None] = [None] * TOTAL_SLOTS
        self.slot_map = SlotMap.from_shards(())
        self.directory = NodeDirectory([f"{h}:{p}" for h, p in seeds])
        self.stats = ClientStats()
        # address -> (state, weight) from the controller's routing table
        self.routing: dict[str, tuple[str, float]] = {}
        self.stale: frozenset[str] = frozenset()  # replicas too far behind to read from
        self.lock = threading.Lock()  # held by a refresh and by table changes
        self.next_refresh = 0.0
        self.refresh_attempted = -math.inf
        self.refresh_failures = 0

    # -- nodes --------------------------------------------------------------------------

    def transport(self, address: str) -> T:
        transport = self.transports.get(address)
        if transport is None:
            host, port = parse_address(address)
            transport = self.transports.setdefault(address, self.connect(host, port))
        return transport

    def breaker(self, address: str) -> NodeBreaker:
        breaker = self.breakers.get(address)
        if breaker is None:
            breaker = self.breakers.setdefault(address, NodeBreaker(address, self.breaker_policy))
        return breaker

    def breaker_for(self, endpoint: Endpoint) -> NodeBreaker:
        return self.breaker(endpoint.id)

    def node_states(self) -> dict[str, str]:
        """Breaker state per node address seen so far."""
        return {address: b.state for address, b in self.breakers.items()}

    def node_failed(self, address: str, exc: BaseException) -> None:
        """A node failed a command outside any attempt (a topology read): a refused
        connection costs nothing (the node is down and says so at once); a timeout or
        a hang counts against its breaker."""
        if not (refused(exc) or echoed(exc)):
            self.breaker(address).record(exc)

    # -- routes -------------------------------------------------------------------------

    def route_for(self, address: str, shard: ShardInfo | None = None) -> Route[T]:
        route = self.routes.get(address)
        if route is None or (shard is not None and route.shard is not shard):
            old = route
            route = Route(shard, self.transport(address), self.breaker(address))
            if old is not None:
                route.readers = old.readers
            if shard is not None:
                self._attach_readers(route, shard)
            self.routes[address] = route
        return route

    def _attach_readers(self, route: Route[T], shard: ShardInfo) -> None:
        if self.read_from == "primary":
            return
        endpoints = read_endpoints(shard, self.read_from, self.stale, self.routing)
        if not endpoints:
            route.readers = None
            return
        if route.readers is None:
            route.readers = Router(
                endpoints,
                strategy=self.new_strategy(),
                breaker=self.breaker_policy,
                breaker_factory=self.breaker_for,
            )
        else:
            route.readers.update(endpoints)

    def new_strategy(self) -> Strategy:
        """Each shard's router gets its own strategy: a shared instance would pick its
        members from whichever shard rebuilt it last (reads sent to another shard)."""
        if isinstance(self.strategy, Strategy):
            return self.strategy.clone()
        return make_strategy(self.strategy)

    def _reattach_all(self) -> None:
        for route in list(self.routes.values()):
            if route.shard is not None:
                self._attach_readers(route, route.shard)

    def apply_routing(self, table: Mapping[str, Any]) -> None:
        """Apply a routing table (``/v1/routing`` JSON): per node ``state`` and ``weight``.
        Reads avoid weight-0 (draining/down) nodes; writes still go to slot owners."""
        routing = parse_routing(table)
        with self.lock:
            self.routing = routing
            self._reattach_all()

    def set_stale(self, stale: frozenset[str]) -> None:
        """Replicas that get no reads from now on (see :mod:`balancer.core.freshness`)."""
        with self.lock:
            if stale != self.stale:
                self.stale = stale
                self._reattach_all()

    def moved(self, slot: int, host: str, port: int | str) -> None:
        """A MOVED reply: the slot's commands go to its new owner from now on, and the
        next call re-reads the whole map."""
        address = f"{host}:{port}"
        self.slot_route[slot] = self.routes.get(address) or self.route_for(address)
        self.next_refresh = 0.0

    def replica_addresses(self) -> list[str]:
        return [r.address for s in self.slot_map.shards for r in s.replicas]

    # -- refreshing ---------------------------------------------------------------------

    def refresh_due(self, now: float, force: bool = False) -> bool:
        """Whether a refresh should start now: due (or ``force``), and at most one per
        ``REFRESH_GAP`` (longer, doubling, while refreshes fail), whatever asked for it:
        an interval, a MOVED, a failing node."""
        if not force and now < self.next_refresh:
            return False
        gap = min(REFRESH_GAP * (1 << min(self.refresh_failures, 6)), REFRESH_GAP_MAX)
        return now - self.refresh_attempted >= gap

    def ask_order(self) -> list[str]:
        """The nodes to ask about the cluster: known ones (shuffled, closed breakers
        first), then the seeds."""
        known = list(self.slot_map.addresses())
        random.shuffle(known)
        known.sort(key=lambda a: self.breaker(a).state != CLOSED)
        seeds = [f"{h}:{p}" for h, p in self.seeds]
        return list(dict.fromkeys(known + seeds))

    def refresh_started(self, now: float) -> SlotMapVote:
        self.refresh_attempted = now
        self.stats.refresh_attempts += 1
        return SlotMapVote(self.slot_map, self.tls)

    def refresh_failed(self) -> None:
        self.refresh_failures += 1

    def install(self, slot_map: SlotMap, now: float) -> bool:
        """Swap in the routes of a new slot map; whether any slot changed owner."""
        self.refresh_failures = 0
        routes = [self.route_for(s.primary.address, s) for s in slot_map.shards]
        live = {s.primary.address for s in slot_map.shards}
        for address in list(self.routes):
            if address not in live:
                del self.routes[address]
        self.slot_route = [routes[i] if i >= 0 else None for i in slot_map.owner]
        old, self.slot_map = self.slot_map, slot_map
        self.directory.update(slot_map)
        self.stats.refreshes += 1
        self.next_refresh = now + self.refresh_interval
        return old.owner != slot_map.owner
