"""What both clients are before any I/O: their settings, their route table and attempt
rules, and the rules a driver asks before sending (a command's slot, the nodes a keyless
command goes to, how a reply is parsed).

:class:`ClientCore` is the common base of :class:`~balancer.sync.client.ClusterClient`
and :class:`~balancer.aio.client.AsyncClusterClient`; each adds its transport, its driver
loop (send, wait) and its lifecycle.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, Self

from redis.crc import key_slot

from balancer.core.attempt import AttemptRules
from balancer.core.blocking import BLOCKING_COMMANDS, block_seconds
from balancer.core.breaker import BreakerPolicy, NodeBreaker
from balancer.core.commands import SharedCommands
from balancer.core.errors import CrossSlotError
from balancer.core.keys import KeyLocator
from balancer.core.nodes import ClusterNode, NodeAPI
from balancer.core.routes import Route, RouteTable, T
from balancer.core.settings import (
    ReadFrom,
    load_balancing,
    reply_handling,
    startup,
    url_arguments,
)
from balancer.core.slots import SlotMap
from balancer.core.strategies import StrategySpec
from balancer.core.targets import (
    ALL_NODES,
    DEFAULT_NODE,
    PRIMARIES,
    RANDOM,
    REPLICAS,
    combine,
    command_name,
)

__all__ = ["ClientCore", "NodeCall"]

# Keys whose slot a client remembers (see ClientCore._key_slot).
_SLOT_CACHE_SIZE = 16384
# Scripts and functions called with no keys may run on any primary (as in RedisCluster).
_ANY_PRIMARY = frozenset({"EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO"})


class NodeCall:
    """A keyless command (or one with ``target_nodes=``) planned: the nodes it goes to,
    and how to send it and merge the replies (as ``RedisCluster`` does)."""

    __slots__ = ("args", "block", "command", "never_decode", "nodes", "options")

    def __init__(
        self,
        args: Sequence[Any],
        nodes: list[ClusterNode],
        command: str,
        never_decode: bool,
        block: float | None,
        options: dict[str, Any],
    ) -> None:
        self.args = args
        self.nodes = nodes
        self.command = command
        self.never_decode = never_decode
        self.block = block
        self.options = options

    def merge(self, replies: dict[str, Any]) -> Any:
        return combine(self.command, replies, **self.options)


class ClientCore(SharedCommands, NodeAPI, Generic[T]):
    """Settings, route table and attempt rules of a client; no I/O."""

    _event_dispatcher: Any = None  # declared by redis-py's command protocol; unused here
    # ``target_nodes=`` flags, spelled as in RedisCluster.
    PRIMARIES = PRIMARIES
    REPLICAS = REPLICAS
    ALL_NODES = ALL_NODES
    RANDOM = RANDOM
    DEFAULT_NODE = DEFAULT_NODE
    # What a driver's transport takes as "the socket timeout" for one reply.
    _SOCKET_TIMEOUT: Any = None

    read_from: ReadFrom
    _table: RouteTable[T]
    _locator: KeyLocator
    _rules: AttemptRules
    _socket_timeout: float | None
    _slot_cache: dict[Any, int]

    def _configure(
        self,
        client: str,
        startup_nodes: str | Sequence[str | ClusterNode] | None,
        host: str | None,
        port: int | None,
        *,
        read_from: ReadFrom,
        read_from_replicas: bool,
        strategy: StrategySpec,
        load_balancing_strategy: Any,
        breaker: BreakerPolicy | None,
        ssl: bool,
        socket_timeout: float | None,
        decode_responses: bool,
        retry_deadline: float,
        max_redirects: int,
        refresh_interval: float,
        connection_kwargs: Mapping[str, Any],
        connect: Callable[[str, int], T],
    ) -> None:
        """The constructor both clients share (ValueError on bad arguments)."""
        read_from, strategy = load_balancing(load_balancing_strategy, read_from, strategy)
        self._seeds, read_from = startup(
            client, startup_nodes, host, port, read_from, read_from_replicas, strategy
        )
        self.read_from = read_from
        self._strategy = strategy
        self.breaker_policy = breaker or BreakerPolicy()
        self.retry_deadline = retry_deadline
        self.max_redirects = max_redirects
        self.refresh_interval = refresh_interval
        self._tls = ssl
        self._socket_timeout = socket_timeout
        self._encoder, self._callbacks = reply_handling(connection_kwargs, decode_responses)
        self._slot_cache: dict[Any, int] = {}
        self.encoder = self._encoder  # redis-py types it as its private Encoder
        self._scripts: dict[str, Any] = {}  # sha -> text of register_script()'s scripts
        self._table = RouteTable(
            connect,
            self._seeds,
            read_from=read_from,
            strategy=strategy,
            breaker_policy=self.breaker_policy,
            refresh_interval=refresh_interval,
            tls=ssl,
        )
        self._directory = self._table.directory
        self.stats = self._table.stats

    def _use_locator(self, locator: KeyLocator) -> None:
        self._locator = locator
        self._rules = AttemptRules(self.retry_deadline, self.max_redirects, locator.readonly)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> Self:
        """``redis://[user:password@]host:port`` or ``rediss://`` for TLS; keyword
        arguments override what the URL says."""
        seed, options = url_arguments(url, kwargs)
        return cls(seed, **options)  # type: ignore[call-arg]  # each client's constructor

    # -- the route table ----------------------------------------------------------------

    def _transport(self, address: str) -> T:
        return self._table.transport(address)

    def _breaker(self, address: str) -> NodeBreaker:
        return self._table.breaker(address)

    @property
    def _slot_route(self) -> list[Route[T] | None]:
        return self._table.slot_route

    @property
    def _routes(self) -> dict[str, Route[T]]:
        return self._table.routes

    @property
    def _routing(self) -> dict[str, tuple[str, float]]:
        return self._table.routing

    @property
    def _slot_map(self) -> SlotMap:
        return self._table.slot_map

    @property
    def slot_map(self) -> SlotMap:
        return self._table.slot_map

    def apply_routing(self, table: Mapping[str, Any]) -> None:
        """Apply a routing table (``/v1/routing`` JSON): per node ``state`` and ``weight``.
        Reads avoid weight-0 (draining/down) nodes; writes still go to slot owners."""
        self._table.apply_routing(table)

    @property
    def stale_replicas(self) -> frozenset[str]:
        """Replicas getting no reads now: link to the primary down, or silent for longer
        than ``max_replica_lag`` seconds."""
        return self._table.stale

    def node_states(self) -> dict[str, str]:
        """Breaker state per node address seen so far."""
        return self._table.node_states()

    def _moved(self, slot: int, exc: Any) -> None:
        self._table.moved(slot, exc.host, exc.port)

    # -- before sending -----------------------------------------------------------------

    def _key_slot(self, key: Any) -> int:
        """A key's slot, remembered for str and bytes keys (hot keys repeat; encoding
        and CRC16 cost about a microsecond). The memory is bounded: it starts over
        once it holds ``_SLOT_CACHE_SIZE`` keys."""
        cache = self._slot_cache
        try:
            return cache[key]
        except (KeyError, TypeError):  # TypeError: unhashable (a memoryview)
            pass
        slot = key_slot(self._encoder.encode(key))
        if type(key) is str or type(key) is bytes:
            if len(cache) >= _SLOT_CACHE_SIZE:
                cache.clear()
            cache[key] = slot
        return slot

    def _slot_of(self, name: str, keys: Sequence[Any]) -> int:
        try:
            first = keys[0]
        except TypeError:  # a view or iterator (``zunion({key: weight})`` passes dict_keys)
            keys = list(keys)
            first = keys[0]
        try:
            slot = self._slot_cache[first]
        except (KeyError, TypeError):
            slot = self._key_slot(first)
        for key in keys[1:]:
            if self._key_slot(key) != slot:
                slots = tuple(sorted({self._key_slot(k) for k in keys}))
                raise CrossSlotError(name, slots)
        return slot

    def _block(self, name: Any, args: Sequence[Any]) -> float | None:
        return block_seconds(args) if name in BLOCKING_COMMANDS else None

    def _read_timeout(self, block: float | None) -> Any:
        """The reply timeout of a command that may block ``block`` seconds on the server
        (``_SOCKET_TIMEOUT``: the socket timeout; ``None``: wait forever)."""
        if block is None:
            return self._SOCKET_TIMEOUT
        limit = self._socket_timeout
        return None if math.isinf(block) or limit is None else block + limit

    def _parse(self, name: str, raw: Any, options: dict[str, Any]) -> Any:
        options.pop("EMPTY_RESPONSE", None)
        callback = self._callbacks.get(name)
        return callback(raw, **options) if callback is not None else raw

    def _node_call(self, args: Sequence[Any], options: dict[str, Any]) -> NodeCall:
        """Plan a command without keys (or with ``target_nodes=``): on the nodes its flag
        or ``target_nodes`` names, replies combined as ``RedisCluster`` does."""
        target = options.pop("target_nodes", None)
        options.pop("keys", None)
        never_decode = options.pop("NEVER_DECODE", False)
        command = command_name(args)
        if target is None and command in _ANY_PRIMARY:
            nodes = [random.choice(self.get_primaries())]
        else:
            nodes = self._directory.resolve(target, command, args)
        block = self._block(command, args)
        return NodeCall(args, nodes, command, never_decode, block, options)
