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

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import redis
from redis.client import Monitor
from redis.commands import READ_COMMANDS
from redis.commands.cluster import RedisClusterCommands
from redis.commands.core import Script
from redis.exceptions import RedisClusterException, WatchError
from redis.lock import Lock
from redis.utils import SENTINEL

from balancer.core.attempt import Attempt
from balancer.core.blocking import BLOCKING_COMMANDS, block_seconds
from balancer.core.breaker import BreakerPolicy
from balancer.core.client import ClientCore
from balancer.core.commands import SlotSplit
from balancer.core.errors import ClusterError
from balancer.core.freshness import ReplicaWatch
from balancer.core.keys import KeyLocator
from balancer.core.nodes import ClusterNode
from balancer.core.settings import ReadFrom
from balancer.core.slots import SlotMap
from balancer.core.strategies import StrategySpec
from balancer.core.targets import (
    NODE_COMMANDS,
)
from balancer.follow import RoutingFollower
from balancer.sync.pubsub import ClusterPubSub, PubSubNodes
from balancer.sync.transport import NodeTransport, TransportOptions

__all__ = ["ClusterClient"]

NETWORK_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)


class ClusterClient(ClientCore[NodeTransport], RedisClusterCommands):
    """Slot-aware cluster client; see the module docstring and README for behaviour."""

    _is_async_client: Literal[False] = False  # selects redis-py's sync return types
    _lock_class = Lock
    _SOCKET_TIMEOUT = SENTINEL

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
        connection_kwargs.update(
            username=username,
            password=password,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_connect_timeout,
            decode_responses=decode_responses,
        )
        self._configure(
            "ClusterClient", startup_nodes, host, port, read_from=read_from,
            read_from_replicas=read_from_replicas, strategy=strategy,
            load_balancing_strategy=load_balancing_strategy, breaker=breaker, ssl=ssl,
            socket_timeout=socket_timeout, decode_responses=decode_responses,
            retry_deadline=retry_deadline, max_redirects=max_redirects,
            refresh_interval=refresh_interval, connection_kwargs=connection_kwargs,
            connect=self._connect,
        )  # fmt: skip
        self._options = TransportOptions(
            ssl=ssl, readonly=self.read_from != "primary", **connection_kwargs
        )
        self._max_connections = max_connections_per_node
        self._pubsub_nodes: PubSubNodes | None = None  # made by the first pubsub()
        self._direct: dict[str, redis.Redis] = {}  # get_redis_connection's, per node
        self._direct_lock = threading.Lock()
        self._use_locator(KeyLocator(lambda: self._ask_any(("COMMAND",))[0], self._getkeys))
        self.refresh_topology()
        self._watch: ReplicaWatch | None = None
        if self.read_from != "primary" and max_replica_lag is not None:
            self._watch = ReplicaWatch(
                self._table.replica_addresses,
                lambda address: self._transport(address).execute(("INFO", "replication")),
                self._table.set_stale,
                max_replica_lag,
                replica_check_interval,
            )
            self._watch.check()
            self._watch.start()
        self._follower: RoutingFollower | None = None
        if routing_url is not None:
            self._follower = RoutingFollower(routing_url, self.apply_routing, routing_interval)
            self._follower.start()

    # -- nodes, routes, topology ------------------------------------------------------

    def _connect(self, host: str, port: int) -> NodeTransport:
        return NodeTransport(host, port, self._options, self._max_connections)

    def refresh_topology(self) -> SlotMap:
        """Re-read ``CLUSTER SHARDS`` from a reachable node and swap in the new routes."""
        with self._table.lock:
            return self._refresh_locked(None)

    def _refresh_locked(self, deadline: float | None) -> SlotMap:
        table = self._table
        vote = table.refresh_started(time.monotonic())
        try:
            for reply, host in self._answers(("CLUSTER", "SHARDS"), deadline, vote.errors):
                if vote.offer(reply, host):
                    break
            slot_map = vote.result()
        except (ClusterError, ValueError):
            table.refresh_failed()
            raise
        if table.install(slot_map, time.monotonic()) and self._pubsub_nodes is not None:
            self._pubsub_nodes.slots_changed()
        return slot_map

    def _answers(
        self, args: Sequence[Any], deadline: float | None, errors: list[str]
    ) -> Iterator[tuple[Any, str]]:
        """Replies to ``args`` node by node (:meth:`RouteTable.ask_order`), as long as
        the caller asks for more and ``deadline`` allows; failures go to ``errors``."""
        for address in self._table.ask_order():
            if deadline is not None and errors and time.monotonic() >= deadline:
                return
            transport = self._transport(address)
            try:
                reply = transport.execute(args)
            except NETWORK_ERRORS as exc:
                self._table.node_failed(address, exc)
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
        client (see :meth:`RouteTable.refresh_due`)."""
        table = self._table
        if not table.refresh_due(time.monotonic(), force):
            return
        if not table.lock.acquire(blocking=False):
            return  # another thread is refreshing; its result serves this call too
        try:
            self._refresh_locked(deadline)
        except (ClusterError, ValueError):
            pass
        finally:
            table.lock.release()

    # -- executing ----------------------------------------------------------------------

    def execute_command(self, *args: Any, **options: Any) -> Any:
        """Route one command by its keys and return the parsed reply."""
        name = args[0]
        if name in NODE_COMMANDS or "target_nodes" in options:
            return self._execute_on_nodes(args, options)
        keys = options.pop("keys", None) or self._locator.keys(args)
        if self._table.next_refresh <= time.monotonic():
            self._maybe_refresh()
        if not keys:
            return self._execute_on_nodes(args, options)
        slot = self._slot_of(name, keys)
        block = block_seconds(args) if name in BLOCKING_COMMANDS else None
        read = name in READ_COMMANDS
        attempt = Attempt(self._table, self._rules, slot, name, read, block)
        raw = self._drive(attempt, args, options.pop("NEVER_DECODE", False), block, not read)
        return self._parse(name, raw, options)

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
        attempt = Attempt(self._table, self._rules, slot, args[0], read, block)
        return self._drive(attempt, args, never_decode, block, not read)

    def _drive(
        self,
        attempt: Attempt[NodeTransport],
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
                self._maybe_refresh(force=True, deadline=attempt.refresh_deadline)
                pause = attempt.pause()
                if pause > 0:
                    time.sleep(pause)
                continue
            try:
                raw = target.transport.execute(
                    args, never_decode, target.asking, check, read_timeout
                )
            except (*NETWORK_ERRORS, redis.ResponseError) as exc:
                attempt.on_error(target, exc)
                continue
            except BaseException:
                attempt.abandon(target)
                raise
            attempt.on_reply(target)
            return raw

    def _wait_or_raise(self, deadline: float, exc: BaseException, attempt: int = 1) -> float:
        """Back off (exponential, jittered) and refresh the topology; raise ``exc`` once
        the deadline has passed (the transaction's retry loop)."""
        now = time.monotonic()
        if not deadline:
            deadline = now + self.retry_deadline
        elif now >= deadline:
            raise exc
        self._maybe_refresh(force=True, deadline=deadline)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise exc
        time.sleep(min(self._rules.backoff.compute(attempt), remaining))
        return deadline

    def _execute_on_nodes(self, args: Sequence[Any], options: dict[str, Any]) -> Any:
        """A command without keys (or with ``target_nodes=``): on the nodes its flag or
        ``target_nodes`` names, replies combined as ``RedisCluster`` does."""
        if self._table.next_refresh <= time.monotonic():
            self._maybe_refresh()
        call = self._node_call(args, options)
        replies: dict[str, Any] = {}
        for node in call.nodes:
            transport = self._transport(node.name)
            raw = self._on_node(transport, args, call.never_decode, call.block)
            replies[node.name] = self._parse(args[0], raw, dict(call.options))
        return call.merge(replies)

    # -- multi-key commands split per slot ---------------------------------------------

    def _per_slot(self, split: SlotSplit) -> list[Any]:
        pipe = self.pipeline()
        for command in split.commands():
            pipe.execute_command(*command)
        return pipe.execute()

    def mget(self, keys: Any, *args: Any) -> list[Any]:
        """MGET across slots: one MGET per slot, pipelined per node (not atomic;
        RedisCluster refuses keys of different slots)."""
        split = SlotSplit.of_keys(self._encoder, "MGET", keys, args)
        if split.single:
            return list(self.execute_command(*split.flat()))
        return split.values(self._per_slot(split))

    def mget_nonatomic(self, keys: Any, *args: Any) -> list[Any]:
        """MGET split per slot (as RedisCluster's); the same as :meth:`mget` here."""
        return self.mget(keys, *args)

    def mset(self, mapping: Any) -> bool:
        """MSET across slots: one MSET per slot, pipelined per node (not atomic;
        RedisCluster refuses keys of different slots)."""
        return all(self.mset_nonatomic(mapping))

    def mset_nonatomic(self, mapping: Any) -> list[bool]:
        """One MSET per slot, pipelined per node: each MSET's reply, as RedisCluster."""
        return self._per_slot(SlotSplit(self._encoder, "MSET", list(mapping.items())))

    def _sum_per_slot(self, command: str, names: Sequence[Any]) -> int:
        return SlotSplit.total(self._per_slot(SlotSplit(self._encoder, command, names)))

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
        attempt = Attempt(self._table, self._rules, -1, args[0], False, block, transport)
        return self._drive(attempt, args, never_decode, block, False)

    # -- redis-py's helpers (its node API: NodeAPI) ------------------------------------

    def register_script(self, script: Any) -> Script:
        """redis-py's :class:`~redis.commands.core.Script`; the client remembers it, so
        a pipeline that meets NOSCRIPT for it loads it and runs the call again (it did
        not run), where RedisCluster refuses scripts in pipelines."""
        registered = Script(self, script)  # type: ignore[arg-type]
        self._remember_script(registered.sha, registered.script)
        return registered

    def _load_script(self, args: Sequence[Any]) -> bool:
        """Load the script an ``EVALSHA`` names, if registered here: whether it was."""
        text = self._script_text(args)
        if text is None:
            return False
        self.script_load(text)
        return True

    def pubsub(
        self, node: ClusterNode | None = None, host: str | None = None, port: int | None = None,
        **kwargs: Any,
    ) -> ClusterPubSub:  # fmt: skip
        """redis-py's ``ClusterPubSub`` (see :mod:`balancer.sync.pubsub`): on ``node`` (or
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

    # -- lifecycle --------------------------------------------------------------------

    def close(self) -> None:
        if self._follower is not None:
            self._follower.stop()
        if self._watch is not None:
            self._watch.stop()
        for transport in list(self._table.transports.values()):
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


from balancer.sync.pipeline import ClusterPipeline  # noqa: E402  (circular by design)
from balancer.sync.transaction import ClusterTransaction  # noqa: E402
