"""The asyncio client's command surface beyond one-key routing.

redis-py's async mixins give every command method; here are the ones a cluster changes:
multi-key commands split per slot (one command per slot, batched per node, not atomic),
keyless commands fanned out to every primary (FLUSHALL, DBSIZE, …), and SCAN walking
each primary with its own cursor.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from redis.asyncio.client import PubSub
from redis.asyncio.connection import ConnectionPool
from redis.asyncio.lock import Lock
from redis.commands.core import AsyncDataAccessCommands, AsyncPubSubCommands, AsyncScriptCommands
from redis.crc import key_slot

from balancer.aio.pipeline import AsyncClusterPipeline
from balancer.endpoint import parse_address

if TYPE_CHECKING:
    from balancer.aio.client import AsyncClusterClient
    from balancer.aio.transport import AsyncNodeTransport, AsyncTransportOptions
    from balancer.slots import SlotMap

__all__ = ["AsyncClusterCommands"]

_SCAN_MAX_ROUNDS = 10_000_000  # a bound on one node's SCAN walk, never reached in practice
# Keyless commands that must reach every primary, and how their replies combine
# (the sync client's table).
_ALL_PRIMARIES: dict[str, Callable[[list[Any]], Any]] = {
    "FLUSHALL": lambda r: all(r),
    "FLUSHDB": lambda r: all(r),
    "DBSIZE": sum,
    "KEYS": lambda r: [k for part in r for k in part],
    "SCRIPT LOAD": lambda r: r[0],
    "SCRIPT FLUSH": lambda r: all(r),
    "SCRIPT EXISTS": lambda r: [all(x) for x in zip(*r, strict=True)],
}


class AsyncClusterCommands(AsyncDataAccessCommands, AsyncScriptCommands, AsyncPubSubCommands):
    """Mixed into :class:`~balancer.aio.client.AsyncClusterClient`."""

    _encoder: Any

    if TYPE_CHECKING:

        async def execute_command(self, *args: Any, **options: Any) -> Any: ...
        async def _on_node(self, transport: AsyncNodeTransport, args: Sequence[Any]) -> Any: ...
        def _parse(self, name: str, raw: Any, options: dict[str, Any]) -> Any: ...
        def _primaries(self) -> list[AsyncNodeTransport]: ...
        def _transport(self, address: str) -> AsyncNodeTransport: ...

        _options: AsyncTransportOptions

        async def initialize(self) -> AsyncClusterClient: ...
        @property
        def slot_map(self) -> SlotMap: ...

    def get_encoder(self) -> Any:
        """The encoder redis-py's ``AsyncScript`` and ``Lock`` ask for."""
        return self._encoder

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
        """redis-py's asyncio ``Lock`` (Lua scripts on the lock key's node)."""
        return (lock_class or Lock)(
            self,  # type: ignore[arg-type]
            name,
            timeout=timeout,
            sleep=sleep,
            blocking=blocking,
            blocking_timeout=blocking_timeout,
            thread_local=thread_local,
            raise_on_release_error=raise_on_release_error,
        )

    def pipeline(self, transaction: bool = False, shard_hint: Any = None) -> AsyncClusterPipeline:
        """A pipeline that groups commands per node, one round trip each (not atomic);
        with ``transaction=True``, one ``MULTI``/``EXEC`` whose keys share a slot."""
        return AsyncClusterPipeline(self, transaction)  # type: ignore[arg-type]

    def keyslot(self, key: Any) -> int:
        """The hash slot of ``key``."""
        return key_slot(self._encoder.encode(key))

    async def _execute_keyless(self, args: Sequence[Any], options: dict[str, Any]) -> Any:
        name = args[0].upper() if isinstance(args[0], str) else args[0]
        combine = _ALL_PRIMARIES.get(name)
        primaries = self._primaries()
        if combine is not None:
            replies = [self._parse(name, await self._on_node(p, args), dict(options))
                       for p in primaries]  # fmt: skip
            return combine(replies)
        return self._parse(name, await self._on_node(random.choice(primaries), args), options)

    # -- multi-key commands split per slot ---------------------------------------------

    def _group_by_slot(self, keys: Iterable[Any]) -> dict[int, list[int]]:
        groups: dict[int, list[int]] = {}
        for index, key in enumerate(keys):
            groups.setdefault(key_slot(self._encoder.encode(key)), []).append(index)
        return groups

    async def mget(self, keys: Any, *args: Any) -> list[Any]:  # type: ignore[override]
        """MGET across slots: one MGET per slot, pipelined per node (not atomic)."""
        all_keys = list(keys) if isinstance(keys, list | tuple) else [keys]
        all_keys.extend(args)
        groups = self._group_by_slot(all_keys)
        if len(groups) == 1:
            return list(await self.execute_command("MGET", *all_keys))
        pipe = self.pipeline()
        for indexes in groups.values():
            pipe.execute_command("MGET", *(all_keys[i] for i in indexes))
        result: list[Any] = [None] * len(all_keys)
        for indexes, values in zip(groups.values(), await pipe.execute(), strict=True):
            for i, value in zip(indexes, values, strict=True):
                result[i] = value
        return result

    async def mset(self, mapping: Any) -> bool:  # type: ignore[override]
        """MSET across slots: one MSET per slot, pipelined per node (not atomic)."""
        items = list(mapping.items())
        pipe = self.pipeline()
        for indexes in self._group_by_slot(k for k, _ in items).values():
            pipe.execute_command("MSET", *(x for i in indexes for x in items[i]))
        return all(await pipe.execute())

    async def mget_nonatomic(self, keys: Any, *args: Any) -> list[Any]:
        """redis-py's name for :meth:`mget` across slots."""
        return await self.mget(keys, *args)

    async def mset_nonatomic(self, mapping: Any) -> list[bool]:
        """MSET per slot (not atomic): one result per slot, as redis-py returns."""
        items = list(mapping.items())
        pipe = self.pipeline()
        for indexes in self._group_by_slot(k for k, _ in items).values():
            pipe.execute_command("MSET", *(x for i in indexes for x in items[i]))
        return [bool(r) for r in await pipe.execute()]

    async def _sum_per_slot(self, command: str, names: Sequence[Any]) -> int:
        pipe = self.pipeline()
        for indexes in self._group_by_slot(names).values():
            pipe.execute_command(command, *(names[i] for i in indexes))
        return sum(int(x) for x in await pipe.execute())

    async def delete(self, *names: Any) -> int:  # type: ignore[override]
        """DEL across slots (not atomic): the number of keys removed."""
        return await self._sum_per_slot("DEL", names)

    async def unlink(self, *names: Any) -> int:  # type: ignore[override]
        """UNLINK across slots (not atomic)."""
        return await self._sum_per_slot("UNLINK", names)

    async def exists(self, *names: Any) -> int:  # type: ignore[override]
        """EXISTS across slots (not atomic): how many of the names exist."""
        return await self._sum_per_slot("EXISTS", names)

    async def touch(self, *names: Any) -> int:  # type: ignore[override]
        """TOUCH across slots (not atomic): how many of the names exist."""
        return await self._sum_per_slot("TOUCH", names)

    # -- whole-cluster commands ---------------------------------------------------------

    async def scan(  # type: ignore[override]
        self,
        cursor: Any = 0,
        match: Any = None,
        count: int | None = None,
        _type: str | None = None,
        target_nodes: Any = None,
        **kwargs: Any,
    ) -> tuple[dict[str, int], list[Any]]:
        """``RedisCluster.scan``'s shape: one SCAN per primary (or per ``target_nodes``,
        addresses ``"host:port"``), each with its own cursor. Returns ``({address:
        cursor}, keys)``; pass the dict back as ``cursor`` to go on where each node
        stopped (nodes at 0 are done)."""
        await self.initialize()
        if target_nodes is not None:
            targets = [target_nodes] if isinstance(target_nodes, str) else list(target_nodes)
        elif isinstance(cursor, dict):
            targets = [address for address, at in cursor.items() if int(at) != 0]
        else:
            targets = [shard.primary.address for shard in self.slot_map.shards]
        options = _scan_options(match, count, _type)
        cursors: dict[str, int] = {}
        keys: list[Any] = []
        for address in targets:
            at = cursor.get(address, 0) if isinstance(cursor, dict) else cursor
            raw = await self._on_node(self._transport(address), ("SCAN", at, *options))
            next_at, part = self._parse("SCAN", raw, {})
            cursors[address] = int(next_at)
            keys.extend(part)
        return cursors, keys

    async def scan_iter(  # type: ignore[override]
        self,
        match: Any = None,
        count: int | None = None,
        _type: str | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[Any]:
        """Every key of the cluster: each primary is walked with its own cursor, and a
        cursor is only ever sent back to the node that issued it."""
        await self.initialize()
        args = _scan_options(match, count, _type)
        for address in [shard.primary.address for shard in self.slot_map.shards]:
            transport = self._transport(address)
            cursor = 0
            for _ in range(_SCAN_MAX_ROUNDS):
                raw = await self._on_node(transport, ("SCAN", cursor, *args))
                cursor, keys = self._parse("SCAN", raw, {})
                for key in keys:
                    yield key
                if int(cursor) == 0:
                    break

    async def dbsize(self) -> int:
        """Keys in the whole cluster (sum over primaries)."""
        return int(await self.execute_command("DBSIZE"))

    async def flushall(self, asynchronous: bool = False) -> bool:
        """FLUSHALL on every primary."""
        args = ("FLUSHALL", "ASYNC") if asynchronous else ("FLUSHALL",)
        return bool(await self.execute_command(*args))

    async def flushdb(self, asynchronous: bool = False) -> bool:
        """FLUSHDB on every primary."""
        args = ("FLUSHDB", "ASYNC") if asynchronous else ("FLUSHDB",)
        return bool(await self.execute_command(*args))

    def pubsub(
        self, node: str | None = None, host: str | None = None, port: int | None = None,
        **kwargs: Any,
    ) -> PubSub:  # fmt: skip
        """redis-py's asyncio ``PubSub`` on one node: ``node`` (``"host:port"``) or
        ``host``/``port``, else a random primary. A classic ``PUBLISH`` reaches every
        node of a cluster, so any node serves ``SUBSCRIBE``; sharded channels
        (``SSUBSCRIBE``) are served by the primary of the channel's slot."""
        if node is not None:
            host, port = parse_address(node)
        elif host is None or port is None:
            transport = random.choice(self._primaries())
            host, port = transport.host, transport.port
        options = self._options
        pool = ConnectionPool(
            host=host, port=port, connection_class=options.connection_class,
            **options.connection_kwargs,
        )  # fmt: skip
        return PubSub(pool, **kwargs)

    async def ping(self, **kwargs: Any) -> bool:
        """PING one primary."""
        await self.initialize()
        raw = await self._on_node(random.choice(self._primaries()), ("PING",))
        return bool(self._parse("PING", raw, kwargs))


def _scan_options(match: Any, count: int | None, _type: str | None) -> list[Any]:
    options: list[Any] = []
    if match is not None:
        options += ["MATCH", match]
    if count is not None:
        options += ["COUNT", count]
    if _type is not None:
        options += ["TYPE", _type]
    return options
