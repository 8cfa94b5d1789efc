"""ClusterClient: a slot-aware Redis Cluster client with strategies and breakers.

Routing is a table lookup: ``key → slot`` (``redis.crc.key_slot``) → shard route → node.
Writes go to the shard's primary; reads go where ``read_from`` says, chosen among the
shard's healthy nodes by a :class:`~balancer.core.router.Router`. Redirections (MOVED, ASK),
TRYAGAIN / CLUSTERDOWN and node failures are handled here, inside a deadline, so
callers see an error only when the cluster really cannot answer.

The command methods (``get``, ``hset``, ``xadd``, …) are redis-py's own mixins; they
all end in :meth:`ClusterClient.execute_command`.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal

import redis
from redis.backoff import EqualJitterBackoff
from redis.client import Monitor
from redis.commands import READ_COMMANDS
from redis.commands.cluster import RedisClusterCommands
from redis.commands.core import Script
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    RedisClusterException,
    TryAgainError,
    WatchError,
)
from redis.lock import Lock
from redis.utils import SENTINEL

from balancer.core.blocking import BLOCKING_COMMANDS, block_seconds
from balancer.core.breaker import CLOSED, BreakerPolicy, NodeBreaker
from balancer.core.endpoint import Endpoint, parse_address
from balancer.core.errors import (
    ClusterError,
    CrossSlotError,
    NodeUnavailable,
    NoHealthyEndpoint,
    OutcomeUnknown,
    SlotNotCovered,
    never_sent,
    refused,
)
from balancer.core.freshness import ReplicaWatch
from balancer.core.keys import KeyLocator
from balancer.core.nodes import ClusterNode, NodeAPI, NodeDirectory
from balancer.core.reads import read_endpoints
from balancer.core.router import Router
from balancer.core.routes import ClientStats
from balancer.core.settings import Encoding, ReadFrom, reply_handling, startup, url_arguments
from balancer.core.slots import TOTAL_SLOTS, ShardInfo, SlotMap, as_text, parse_cluster_shards
from balancer.core.strategies import Strategy, StrategySpec, make_strategy
from balancer.core.targets import (
    ALL_NODES,
    DEFAULT_NODE,
    NODE_COMMANDS,
    PRIMARIES,
    RANDOM,
    REPLICAS,
    combine,
    command_name,
)
from balancer.follow import RoutingFollower
from balancer.pubsub import ClusterPubSub, PubSubNodes
from balancer.transport import NodeTransport, TransportOptions

__all__ = ["ClientStats", "ClusterClient", "ReadFrom"]

NETWORK_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)
# Topology refreshes: at most one per _REFRESH_GAP, doubling while they fail.
_REFRESH_GAP = 0.1
_REFRESH_GAP_MAX = 2.0
# Retry backoff (redis-py's EqualJitterBackoff): ~base * 2**attempt, half of it jittered.
_BACKOFF_BASE = 0.004
_BACKOFF_CAP = 0.25
# Scripts and functions called with no keys may run on any primary (as in RedisCluster).
_ANY_PRIMARY = frozenset({"EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO"})


class _Route:
    """Where one shard's commands go: its primary, and a router over its read nodes."""

    __slots__ = ("primary", "primary_breaker", "readers", "shard")

    def __init__(
        self, shard: ShardInfo | None, primary: NodeTransport, breaker: NodeBreaker
    ) -> None:
        self.shard = shard
        self.primary = primary
        self.primary_breaker = breaker
        self.readers: Router | None = None


class ClusterClient(NodeAPI, RedisClusterCommands):
    """Slot-aware cluster client; see the module docstring and README for behaviour."""

    _event_dispatcher: Any = None  # declared by redis-py's command protocol; unused here
    _is_async_client: Literal[False] = False  # selects redis-py's sync return types
    # ``target_nodes=`` flags, spelled as in RedisCluster.
    PRIMARIES = PRIMARIES
    REPLICAS = REPLICAS
    ALL_NODES = ALL_NODES
    RANDOM = RANDOM
    DEFAULT_NODE = DEFAULT_NODE

    def __init__(
        self,
        startup_nodes: str | Sequence[str | ClusterNode] | None = None,
        *,
        host: str | None = None,
        port: int | None = None,
        read_from: ReadFrom = "primary",
        read_from_replicas: bool = False,
        strategy: StrategySpec = "round_robin",
        breaker: BreakerPolicy | None = None,
        username: str | None = None,
        password: str | None = None,
        ssl: bool = False,
        socket_timeout: float = 0.5,
        socket_connect_timeout: float = 0.5,
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
        self._seeds, read_from = startup(
            "ClusterClient", startup_nodes, host, port, read_from, read_from_replicas, strategy
        )
        self.read_from: ReadFrom = read_from
        self._strategy = strategy
        self.breaker_policy = breaker or BreakerPolicy()
        self.retry_deadline = retry_deadline
        self.max_redirects = max_redirects
        self.refresh_interval = refresh_interval
        self._tls = ssl
        self._socket_timeout = socket_timeout
        connection_kwargs.update(
            username=username,
            password=password,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_connect_timeout,
            decode_responses=decode_responses,
        )
        self._options = TransportOptions(
            ssl=ssl, readonly=read_from != "primary", **connection_kwargs
        )
        self._max_connections = max_connections_per_node
        self._encoder: Any
        self._encoder, self._callbacks = reply_handling(connection_kwargs, decode_responses)
        self.encoder = self._encoder  # redis-py types it as its private Encoder
        self._pubsub_nodes: PubSubNodes | None = None  # made by the first pubsub()
        self._direct: dict[str, redis.Redis] = {}  # get_redis_connection's, per node
        self._direct_lock = threading.Lock()
        self._scripts: dict[str, Any] = {}  # sha -> text of register_script()'s scripts
        self._directory = NodeDirectory([f"{h}:{p}" for h, p in self._seeds])
        self._transports: dict[str, NodeTransport] = {}
        self._breakers: dict[str, NodeBreaker] = {}
        self._routes: dict[str, _Route] = {}
        self._slot_route: list[_Route | None] = [None] * TOTAL_SLOTS
        self._slot_map = SlotMap.from_shards(())
        self.stats = ClientStats()
        self._refresh_lock = threading.Lock()
        self._next_refresh = 0.0
        self._refresh_attempted = -math.inf
        self._refresh_failures = 0
        self._backoff = EqualJitterBackoff(cap=_BACKOFF_CAP, base=_BACKOFF_BASE)
        self._locator = KeyLocator(lambda: self._ask_any(("COMMAND",))[0], self._getkeys)
        # address -> (state, weight) from the controller's routing table
        self._routing: dict[str, tuple[str, float]] = {}
        self._stale: frozenset[str] = frozenset()  # replicas too far behind to read from
        self.refresh_topology()
        self._watch: ReplicaWatch | None = None
        if read_from != "primary" and max_replica_lag is not None:
            self._watch = ReplicaWatch(
                lambda: [r.address for s in self._slot_map.shards for r in s.replicas],
                lambda address: self._transport(address).execute(("INFO", "replication")),
                self._apply_stale,
                max_replica_lag,
                replica_check_interval,
            )
            self._watch.check()
            self._watch.start()
        self._follower: RoutingFollower | None = None
        if routing_url is not None:
            self._follower = RoutingFollower(routing_url, self.apply_routing, routing_interval)
            self._follower.start()

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> ClusterClient:
        """``redis://[user:password@]host:port`` or ``rediss://`` for TLS; keyword
        arguments override what the URL says."""
        seed, options = url_arguments(url, kwargs)
        return cls(seed, **options)

    # -- nodes, routes, topology ------------------------------------------------------

    def _transport(self, address: str) -> NodeTransport:
        transport = self._transports.get(address)
        if transport is None:
            host, port = parse_address(address)
            transport = NodeTransport(host, port, self._options, self._max_connections)
            transport = self._transports.setdefault(address, transport)
        return transport

    def _breaker(self, address: str) -> NodeBreaker:
        breaker = self._breakers.get(address)
        if breaker is None:
            breaker = self._breakers.setdefault(address, NodeBreaker(address, self.breaker_policy))
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
        """Each shard's router gets its own strategy: a shared instance would pick its
        members from whichever shard rebuilt it last (reads sent to another shard)."""
        if isinstance(self._strategy, Strategy):
            return self._strategy.clone()
        return make_strategy(self._strategy)

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
                continue  # one bad row must not drop the whole table
        with self._refresh_lock:
            self._routing = routing
            for route in list(self._routes.values()):
                if route.shard is not None:
                    self._attach_readers(route, route.shard)

    def _apply_stale(self, stale: frozenset[str]) -> None:
        with self._refresh_lock:
            self._stale = stale
            for route in list(self._routes.values()):
                if route.shard is not None:
                    self._attach_readers(route, route.shard)

    @property
    def stale_replicas(self) -> frozenset[str]:
        """Replicas getting no reads now: link to the primary down, or silent for longer
        than ``max_replica_lag`` seconds."""
        return self._stale

    def refresh_topology(self) -> SlotMap:
        """Re-read ``CLUSTER SHARDS`` from a reachable node and swap in the new routes."""
        with self._refresh_lock:
            return self._refresh_locked(None)

    def _refresh_locked(self, deadline: float | None) -> SlotMap:
        self._refresh_attempted = time.monotonic()
        self.stats.refresh_attempts += 1
        try:
            slot_map = self._read_slot_map(deadline)
        except (ClusterError, ValueError):
            self._refresh_failures += 1
            raise
        self._refresh_failures = 0
        routes = [self._route_for(s.primary.address, s) for s in slot_map.shards]
        live = {s.primary.address for s in slot_map.shards}
        for address in list(self._routes):
            if address not in live:
                del self._routes[address]
        slot_route: list[_Route | None] = [routes[i] if i >= 0 else None for i in slot_map.owner]
        self._slot_route = slot_route
        old, self._slot_map = self._slot_map, slot_map
        self._directory.update(slot_map)
        if self._pubsub_nodes is not None and old.owner != slot_map.owner:
            self._pubsub_nodes.slots_changed()
        self.stats.refreshes += 1
        now = time.monotonic()
        self._next_refresh = now + self.refresh_interval
        return slot_map

    def _read_slot_map(self, deadline: float | None) -> SlotMap:
        """``CLUSTER SHARDS`` from the first node whose view covers at least as many
        slots as the map in use. A node that has just left the cluster (reset, about to
        stop) still answers, with a view of itself alone and no slots: taking its word
        would route every slot nowhere. When no node's view is that good (slots really
        went uncovered), the best one wins."""
        best: SlotMap | None = None
        wanted = TOTAL_SLOTS - self._slot_map.uncovered if self._slot_map.shards else 1
        errors: list[str] = []
        for reply, host in self._answers(("CLUSTER", "SHARDS"), deadline, errors):
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

    def _answers(
        self, args: Sequence[Any], deadline: float | None, errors: list[str]
    ) -> Iterator[tuple[Any, str]]:
        """Replies to ``args`` node by node (healthy known nodes first, then the seeds),
        as long as the caller asks for more and ``deadline`` allows; failures go to
        ``errors``."""
        known = list(self._slot_map.addresses())
        random.shuffle(known)
        known.sort(key=lambda a: self._breaker(a).state != "closed")
        seeds = [f"{h}:{p}" for h, p in self._seeds]
        for address in dict.fromkeys(known + seeds):
            if deadline is not None and errors and time.monotonic() >= deadline:
                return
            transport = self._transport(address)
            try:
                reply = transport.execute(args)
            except NETWORK_ERRORS as exc:
                if not refused(exc):  # a dead node costs nothing; a hung one does
                    self._breaker(address).record(exc)
                errors.append(f"{address}: {exc}")
                continue
            except redis.ResponseError as exc:
                errors.append(f"{address}: {exc}")
                continue
            yield reply, transport.host

    def _ask_any(self, args: Sequence[Any], deadline: float | None = None) -> tuple[Any, str]:
        """Run a command on the first node that answers, healthy known nodes first:
        (reply, host of the node that answered). Stops trying at ``deadline``."""
        errors: list[str] = []
        for reply, host in self._answers(args, deadline, errors):
            return reply, host
        raise ClusterError(f"no node answered {args[0]!r}: {'; '.join(errors[:5])}")

    def _getkeys(self, pieces: tuple[Any, ...]) -> list[Any]:
        """The keys a node names for ``pieces`` (``COMMAND GETKEYS``); [] for a command it
        says has none or whose arguments it rejects (the command itself will say why)."""
        try:
            raw, _ = self._ask_any(("COMMAND", "GETKEYS", *pieces))
        except ClusterError as exc:
            if "no key arguments" in str(exc) or "Invalid arguments" in str(exc):
                return []
            raise
        return list(raw or [])

    def _maybe_refresh(self, force: bool = False, deadline: float | None = None) -> None:
        """Refresh if due (or ``force``), never raising, with one refresh in flight per
        client and at most one per ``_REFRESH_GAP`` (longer, doubling, while refreshes
        fail), whatever asked for it: an interval, a MOVED, a failing node."""
        now = time.monotonic()
        if not force and now < self._next_refresh:
            return
        gap = min(_REFRESH_GAP * (1 << min(self._refresh_failures, 6)), _REFRESH_GAP_MAX)
        if now - self._refresh_attempted < gap:
            return
        if not self._refresh_lock.acquire(blocking=False):
            return  # another thread is refreshing; its result serves this call too
        try:
            self._refresh_locked(deadline)
        except (ClusterError, ValueError):
            pass
        finally:
            self._refresh_lock.release()

    @property
    def slot_map(self) -> SlotMap:
        return self._slot_map

    # -- executing ----------------------------------------------------------------------

    def _slot_of(self, name: str, keys: Sequence[Any]) -> int:
        encode = self._encoder.encode
        try:
            first = keys[0]
        except TypeError:  # a view or iterator (``zunion({key: weight})`` passes dict_keys)
            keys = list(keys)
            first = keys[0]
        slot = key_slot(encode(first))
        for key in keys[1:]:
            other = key_slot(encode(key))
            if other != slot:
                slots = tuple(sorted({key_slot(encode(k)) for k in keys}))
                raise CrossSlotError(name, slots)
        return slot

    def execute_command(self, *args: Any, **options: Any) -> Any:
        """Route one command by its keys and return the parsed reply."""
        name = args[0]
        if name in NODE_COMMANDS or "target_nodes" in options:
            return self._execute_on_nodes(args, options)
        keys = options.pop("keys", None) or self._locator.keys(args)
        if self._next_refresh <= time.monotonic():
            self._maybe_refresh()
        if not keys:
            return self._execute_on_nodes(args, options)
        slot = self._slot_of(name, keys)
        block = block_seconds(args) if name in BLOCKING_COMMANDS else None
        raw = self._execute_slot(
            slot, args, name in READ_COMMANDS, options.pop("NEVER_DECODE", False), block
        )
        return self._parse(name, raw, options)

    def _parse(self, name: str, raw: Any, options: dict[str, Any]) -> Any:
        options.pop("EMPTY_RESPONSE", None)
        callback = self._callbacks.get(name)
        return callback(raw, **options) if callback is not None else raw

    def _execute_slot(
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
        read_timeout = self._read_timeout(block)
        tried: set[str] = set()
        asking: NodeTransport | None = None
        redirects = 0
        attempt = 0
        deadline = 0.0
        last: BaseException | None = None
        while True:
            if attempt:
                deadline = self._check_deadline(deadline, last)
            attempt += 1
            route = self._slot_route[slot]
            if route is None:
                last = SlotNotCovered(slot)
                deadline = self._wait_or_raise(deadline, last, attempt)
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
                    address = member.endpoint.id
                    transport, breaker = self._transport(address), member.breaker
                else:
                    transport, breaker = route.primary, route.primary_breaker
                    if breaker.state != CLOSED:
                        if not breaker.admit(time.monotonic()):
                            deadline = self._primary_unavailable(slot, route, deadline)
                            continue
                        trial = True
            started = time.perf_counter()
            try:
                raw = transport.execute(
                    args, never_decode, asking is not None, not read, read_timeout
                )
            except NETWORK_ERRORS as exc:
                counted: BaseException | None = exc
                if block is not None and isinstance(exc, redis.TimeoutError):
                    counted = None  # a blocking command's timeout: not the node's failure
                if member is not None and readers is not None:
                    readers.checkin(member, trial, counted, None)
                elif trial or (counted is not None and not refused(exc)):
                    # A refused connection costs nothing: a dead primary is retried
                    # (backoff, refresh) until its replica takes over; only failures
                    # that cost time (timeouts, hangs) open a primary's breaker.
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
                deadline = self._wait_or_raise(deadline, exc, attempt)
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
                elif isinstance(exc, TryAgainError):
                    self.stats.tryagain += 1
                    last = exc
                    deadline = self._wait_or_raise(deadline, exc, attempt)
                elif isinstance(exc, ClusterDownError):
                    self.stats.clusterdown += 1
                    last = exc
                    deadline = self._wait_or_raise(deadline, exc, attempt)
                else:
                    raise
                if redirects > self.max_redirects:
                    raise ClusterError(
                        f"too many redirections ({redirects}) for slot {slot}"
                    ) from exc
                continue
            if member is not None and readers is not None:
                readers.checkin(member, trial, None, time.perf_counter() - started)
            elif trial or not breaker._clean:
                breaker.record(None, trial)
            return raw

    def _read_timeout(self, block: float | None) -> float | object | None:
        """The reply timeout of a command that may block ``block`` seconds on the server
        (``SENTINEL``: the socket timeout; ``None``: wait forever)."""
        if block is None:
            return SENTINEL
        limit = self._socket_timeout
        return None if math.isinf(block) or limit is None else block + limit

    def _primary_unavailable(self, slot: int, route: _Route, deadline: float) -> float:
        """The slot's primary has an open breaker: nothing is sent. Fail fast with
        :class:`NodeUnavailable` unless a topology refresh names another primary."""
        self._maybe_refresh(force=True)
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

    def _wait_or_raise(self, deadline: float, exc: BaseException, attempt: int = 1) -> float:
        """Back off (exponential, jittered) and refresh the topology; raise ``exc`` once
        the deadline has passed."""
        now = time.monotonic()
        if not deadline:
            deadline = now + self.retry_deadline
        elif now >= deadline:
            raise exc
        self._maybe_refresh(force=True, deadline=deadline)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise exc
        time.sleep(min(self._backoff.compute(attempt), remaining))
        return deadline

    def _moved(self, slot: int, exc: MovedError) -> None:
        address = f"{exc.host}:{exc.port}"
        route = self._routes.get(address) or self._route_for(address)
        self._slot_route[slot] = route
        self._next_refresh = 0.0  # the next call re-reads the whole map

    def _execute_on_nodes(self, args: Sequence[Any], options: dict[str, Any]) -> Any:
        """A command without keys (or with ``target_nodes=``): on the nodes its flag or
        ``target_nodes`` names, replies combined as ``RedisCluster`` does."""
        if self._next_refresh <= time.monotonic():
            self._maybe_refresh()
        target = options.pop("target_nodes", None)
        options.pop("keys", None)
        never_decode = options.pop("NEVER_DECODE", False)
        command = command_name(args)
        if target is None and command in _ANY_PRIMARY:
            nodes = [random.choice(self.get_primaries())]
        else:
            nodes = self._directory.resolve(target, command, args)
        block = block_seconds(args) if command in BLOCKING_COMMANDS else None
        replies: dict[str, Any] = {}
        for node in nodes:
            raw = self._on_node(self._transport(node.name), args, never_decode, block)
            replies[node.name] = self._parse(args[0], raw, dict(options))
        return combine(command, replies, **options)

    # -- multi-key commands split per slot ---------------------------------------------

    def _group_by_slot(self, keys: Iterable[Any]) -> dict[int, list[int]]:
        groups: dict[int, list[int]] = {}
        for index, key in enumerate(keys):
            groups.setdefault(key_slot(self._encoder.encode(key)), []).append(index)
        return groups

    def mget(self, keys: Any, *args: Any) -> list[Any]:
        """MGET across slots: one MGET per slot, pipelined per node (not atomic;
        RedisCluster refuses keys of different slots)."""
        all_keys = list(keys) if isinstance(keys, list | tuple) else [keys]
        all_keys.extend(args)
        groups = self._group_by_slot(all_keys)
        if len(groups) == 1:
            return list(self.execute_command("MGET", *all_keys))
        pipe = self.pipeline()
        for indexes in groups.values():
            pipe.execute_command("MGET", *(all_keys[i] for i in indexes))
        result: list[Any] = [None] * len(all_keys)
        for indexes, values in zip(groups.values(), pipe.execute(), strict=True):
            for i, value in zip(indexes, values, strict=True):
                result[i] = value
        return result

    def mget_nonatomic(self, keys: Any, *args: Any) -> list[Any]:
        """MGET split per slot (as RedisCluster's); the same as :meth:`mget` here."""
        return self.mget(keys, *args)

    def mset(self, mapping: Any) -> bool:
        """MSET across slots: one MSET per slot, pipelined per node (not atomic;
        RedisCluster refuses keys of different slots)."""
        return all(self.mset_nonatomic(mapping))

    def mset_nonatomic(self, mapping: Any) -> list[bool]:
        """One MSET per slot, pipelined per node: each MSET's reply, as RedisCluster."""
        items = list(mapping.items())
        groups = self._group_by_slot(k for k, _ in items)
        pipe = self.pipeline()
        for indexes in groups.values():
            pipe.execute_command("MSET", *(x for i in indexes for x in items[i]))
        return pipe.execute()

    def _sum_per_slot(self, command: str, names: Sequence[Any]) -> int:
        groups = self._group_by_slot(names)
        pipe = self.pipeline()
        for indexes in groups.values():
            pipe.execute_command(command, *(names[i] for i in indexes))
        return sum(int(x) for x in pipe.execute())

    def delete(self, *names: Any) -> int:
        """DEL across slots (not atomic): the number of keys removed."""
        return self._sum_per_slot("DEL", names)

    def unlink(self, *names: Any) -> int:
        """UNLINK across slots (not atomic)."""
        return self._sum_per_slot("UNLINK", names)

    def exists(self, *names: Any) -> int:
        """EXISTS across slots (not atomic): how many of the names exist."""
        return self._sum_per_slot("EXISTS", names)

    def touch(self, *names: Any) -> int:
        """TOUCH across slots (not atomic): how many of the names exist."""
        return self._sum_per_slot("TOUCH", names)

    def _split_command_across_slots(self, command: str, *keys: Any) -> int:
        return self._sum_per_slot(command, keys)

    def pipeline(
        self, transaction: bool | None = None, shard_hint: Any = None
    ) -> ClusterPipeline | ClusterTransaction:
        """A pipeline that groups commands per node (not atomic), or with ``transaction``
        a MULTI/EXEC block on one slot's primary (every key in one slot)."""
        if shard_hint:
            raise RedisClusterException("shard_hint is deprecated in cluster mode")
        if transaction:
            return ClusterTransaction(self)
        return ClusterPipeline(self)

    def transaction(self, func: Callable[[Any], Any], *watches: Any, **kwargs: Any) -> Any:
        """Run ``func(pipe)`` in a transaction watching ``watches``, again while the
        watched keys change (redis-py's ``transaction()``)."""
        value_from_callable = kwargs.pop("value_from_callable", False)
        watch_delay = kwargs.pop("watch_delay", None)
        with self.pipeline(True) as pipe:
            while True:
                try:
                    if watches:
                        pipe.watch(*watches)
                    func_value = func(pipe)
                    exec_value = pipe.execute()
                    return func_value if value_from_callable else exec_value
                except WatchError:
                    if watch_delay is not None and watch_delay > 0:
                        time.sleep(watch_delay)

    def _on_node(
        self,
        transport: NodeTransport,
        args: Sequence[Any],
        never_decode: bool = False,
        block: float | None = None,
    ) -> Any:
        """A command pinned to one node (keyless commands, SCAN cursors): retried on that
        node within ``retry_deadline`` when it never left or only reads; a write whose
        reply was lost raises :class:`OutcomeUnknown`, as everywhere. ``block``: as in
        :meth:`_execute_slot` (``WAIT``)."""
        read_timeout = self._read_timeout(block)
        deadline = 0.0
        attempt = 0
        while True:
            attempt += 1
            try:
                return transport.execute(args, never_decode, False, False, read_timeout)
            except NETWORK_ERRORS as exc:
                blocked_out = block is not None and isinstance(exc, redis.TimeoutError)
                if not (refused(exc) or blocked_out):
                    self._breaker(transport.address).record(exc)
                self.stats.node_errors += 1
                if not (never_sent(exc) or self._locator.readonly(args[0])):
                    self.stats.unknown_outcomes += 1
                    raise OutcomeUnknown(str(args[0]), transport.address, exc) from exc
                deadline = self._wait_or_raise(deadline, exc, attempt)

    # -- redis-py's helpers (its node API: NodeAPI) ------------------------------------

    def get_encoder(self) -> Encoding:
        """The encoder of keys and values (what ``Script`` and ``Lock`` ask for)."""
        return self.encoder

    def register_script(self, script: Any) -> Script:
        """redis-py's :class:`~redis.commands.core.Script`; the client remembers it, so
        a pipeline that meets NOSCRIPT for it loads it and runs the call again (it did
        not run), where RedisCluster refuses scripts in pipelines."""
        registered = Script(self, script)  # type: ignore[arg-type]
        self._scripts[registered.sha] = registered.script
        return registered

    def _load_script(self, args: Sequence[Any]) -> bool:
        """Load the script an ``EVALSHA`` names, if registered here: whether it was."""
        if as_text(args[0]).upper() not in ("EVALSHA", "EVALSHA_RO") or len(args) < 2:
            return False
        text = self._scripts.get(as_text(args[1]))
        if text is None:
            return False
        self.script_load(text)
        return True

    def pubsub(
        self, node: ClusterNode | None = None, host: str | None = None, port: int | None = None,
        **kwargs: Any,
    ) -> ClusterPubSub:  # fmt: skip
        """redis-py's ``ClusterPubSub`` (see :mod:`balancer.pubsub`): on ``node`` (or
        ``host``/``port``) if given, else on the node of the first channel's slot."""
        if self._pubsub_nodes is None:
            self._pubsub_nodes = PubSubNodes(self)
        return ClusterPubSub(self._pubsub_nodes, node=node, host=host, port=port, **kwargs)

    def get_redis_connection(self, node: ClusterNode) -> redis.Redis:
        """A plain ``redis.Redis`` to ``node``, as ``RedisCluster`` gives, for what must
        talk to one node itself (``MONITOR``, a library that wants a client). It goes
        around this client's routing, breakers and retry rules; closed by :meth:`close`."""
        with self._direct_lock:
            direct = self._direct.get(node.name)
            if direct is None:
                kwargs = self.get_connection_kwargs()
                kwargs["ssl"] = self._tls
                direct = redis.Redis(host=node.host, port=node.port, **kwargs)
                self._direct[node.name] = direct
            return direct

    def monitor(self, target_node: ClusterNode | None = None) -> Monitor:
        """redis-py's ``Monitor`` on ``target_node`` (default: the default node)."""
        node = target_node or self.get_default_node()
        if node is None:
            raise RedisClusterException("no node to monitor: the cluster has no node known")
        monitor: Monitor = self.get_redis_connection(node).monitor()
        return monitor

    def set_response_callback(self, command: str, callback: Callable[..., Any]) -> None:
        """Parse ``command``'s replies with ``callback`` (as redis-py's clients do)."""
        self._callbacks[command] = callback

    def get_connection_kwargs(self) -> dict[str, Any]:
        return dict(self._options.connection_kwargs)

    def lock(
        self,
        name: Any,
        timeout: float | None = None,
        sleep: float = 0.1,
        blocking: bool = True,
        blocking_timeout: float | None = None,
        lock_class: type[Lock] | None = None,
        thread_local: bool = True,
        raise_on_release_error: bool = True,
    ) -> Lock:
        """redis-py's :class:`~redis.lock.Lock` on key ``name`` (see ``RedisCluster.lock``)."""
        cls = lock_class or Lock
        return cls(
            self,
            name,
            timeout=timeout,
            sleep=sleep,
            blocking=blocking,
            blocking_timeout=blocking_timeout,
            thread_local=thread_local,
            raise_on_release_error=raise_on_release_error,
        )

    # -- lifecycle --------------------------------------------------------------------

    def close(self) -> None:
        if self._follower is not None:
            self._follower.stop()
        if self._watch is not None:
            self._watch.stop()
        for transport in list(self._transports.values()):
            transport.close()
        if self._pubsub_nodes is not None:
            self._pubsub_nodes.close()
        with self._direct_lock:
            direct, self._direct = list(self._direct.values()), {}
        for client in direct:
            client.close()

    def __enter__(self) -> ClusterClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def node_states(self) -> dict[str, str]:
        """Breaker state per node address seen so far."""
        return {address: b.state for address, b in self._breakers.items()}


from balancer.pipeline import ClusterPipeline  # noqa: E402  (circular by design)
from balancer.transaction import ClusterTransaction  # noqa: E402
