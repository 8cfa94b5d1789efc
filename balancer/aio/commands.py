"""The asyncio client's command surface beyond one-key routing.

redis-py's async cluster mixins (``AsyncRedisClusterCommands``) give every command method,
as on ``redis.asyncio.RedisCluster``; commands without keys reach the nodes RedisCluster
would send them to (:mod:`balancer.core.targets`, ``target_nodes=``). Here are the ones
slotpilot does differently: multi-key commands split per slot (one command per slot,
batched per node, not atomic), pipelines, scripts, locks and pub/sub.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from redis.asyncio.lock import Lock
from redis.cluster import ClusterNode
from redis.commands.cluster import AsyncRedisClusterCommands
from redis.commands.core import AsyncScript
from redis.exceptions import WatchError

from balancer.aio.pipeline import AsyncClusterPipeline
from balancer.aio.pubsub import AsyncPubSubNodes, ClusterPubSub
from balancer.core.commands import SharedCommands, SlotSplit

if TYPE_CHECKING:
    from balancer.aio.transport import AsyncTransportOptions

__all__ = ["AsyncClusterCommands"]


class AsyncClusterCommands(SharedCommands, AsyncRedisClusterCommands):  # type: ignore[misc]
    """Mixed into :class:`~balancer.aio.client.AsyncClusterClient`."""

    _lock_class = Lock

    _encoder: Any

    if TYPE_CHECKING:

        async def execute_command(self, *args: Any, **options: Any) -> Any: ...

        _options: AsyncTransportOptions
        _callbacks: dict[str, Callable[..., Any]]
        _scripts: dict[str, Any]
        _pubsub_nodes: AsyncPubSubNodes | None

    def register_script(self, script: Any) -> AsyncScript:  # type: ignore[override]
        """redis-py's :class:`~redis.commands.core.AsyncScript`; the client remembers
        it, so a pipeline that meets NOSCRIPT for it loads it and runs the call again
        (it did not run)."""
        registered = AsyncScript(self, script)  # type: ignore[arg-type]
        self._remember_script(registered.sha, registered.script)
        return registered

    async def _load_script(self, args: Sequence[Any]) -> bool:
        """Load the script an ``EVALSHA`` names, if registered here: whether it was."""
        text = self._script_text(args)
        if text is None:
            return False
        await self.execute_command("SCRIPT LOAD", text)
        return True

    def pipeline(self, transaction: bool = False, shard_hint: Any = None) -> AsyncClusterPipeline:
        """A pipeline that groups commands per node, one round trip each (not atomic);
        with ``transaction=True``, one ``MULTI``/``EXEC`` whose keys share a slot."""
        return AsyncClusterPipeline(self, transaction)  # type: ignore[arg-type]

    async def transaction(
        self,
        func: Callable[[AsyncClusterPipeline], Any],
        *watches: Any,
        shard_hint: Any = None,
        value_from_callable: bool = False,
        watch_delay: float | None = None,
    ) -> Any:
        """redis-py's helper: ``WATCH watches``, call ``func(pipe)`` (which reads, then
        ``pipe.multi()`` and queues), ``EXEC``; start again when a watched key changed."""
        async with self.pipeline(True, shard_hint) as pipe:
            while True:
                try:
                    if watches:
                        await pipe.watch(*watches)
                    value = func(pipe)
                    if inspect.isawaitable(value):
                        value = await value
                    results = await pipe.execute()
                    return value if value_from_callable else results
                except WatchError:
                    pipe.reset()
                    if watch_delay:
                        await asyncio.sleep(watch_delay)

    # -- multi-key commands split per slot ---------------------------------------------

    async def _per_slot(self, split: SlotSplit) -> list[Any]:
        pipe = self.pipeline()
        for command in split.commands():
            pipe.execute_command(*command)
        return await pipe.execute()

    async def mget(self, keys: Any, *args: Any) -> list[Any]:  # type: ignore[override]
        """MGET across slots: one MGET per slot, pipelined per node (not atomic)."""
        split = SlotSplit.of_keys(self._encoder, "MGET", keys, args)
        if split.single:
            return list(await self.execute_command(*split.flat()))
        return split.values(await self._per_slot(split))

    async def mset(self, mapping: Any) -> bool:  # type: ignore[override]
        """MSET across slots: one MSET per slot, pipelined per node (not atomic)."""
        return all(await self._per_slot(SlotSplit(self._encoder, "MSET", list(mapping.items()))))

    async def mget_nonatomic(self, keys: Any, *args: Any) -> list[Any]:  # type: ignore[override]
        """redis-py's name for :meth:`mget` across slots."""
        return await self.mget(keys, *args)

    async def mset_nonatomic(self, mapping: Any) -> list[bool]:  # type: ignore[override]
        """MSET per slot (not atomic): one result per slot, as redis-py returns."""
        split = SlotSplit(self._encoder, "MSET", list(mapping.items()))
        return [bool(r) for r in await self._per_slot(split)]

    async def _sum_per_slot(self, command: str, names: Sequence[Any]) -> int:
        return SlotSplit.total(await self._per_slot(SlotSplit(self._encoder, command, names)))

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

    # -- pub/sub ------------------------------------------------------------------------

    def pubsub(
        self, node: ClusterNode | None = None, host: str | None = None, port: int | None = None,
        **kwargs: Any,
    ) -> ClusterPubSub:  # fmt: skip
        """redis-py's asyncio ``ClusterPubSub`` (see :mod:`balancer.aio.pubsub`): on
        ``node`` (or ``host``/``port``), else on the node of the first channel's slot;
        sharded channels on their slot's primary, following it when it moves."""
        if self._pubsub_nodes is None:
            self._pubsub_nodes = AsyncPubSubNodes(self)  # type: ignore[arg-type]
        nodes = self._pubsub_nodes
        return ClusterPubSub(nodes, node=nodes.node(node), host=host, port=port, **kwargs)  # type: ignore[arg-type]
