"""Pub/sub for :class:`~balancer.aio.client.AsyncClusterClient`: redis-py's own asyncio
``ClusterPubSub``, as the sync client's :mod:`balancer.sync.pubsub` uses the sync one.

``pubsub()`` returns :class:`redis.asyncio.cluster.ClusterPubSub`, so ``subscribe``,
``psubscribe``, ``get_message``, ``listen`` and sharded ``ssubscribe`` /
``get_sharded_message`` behave as with ``redis.asyncio.RedisCluster``: a classic
subscription lives on the node serving the first channel's slot (or the node given),
each sharded channel on its slot's primary, and sharded subscriptions follow their slot
when the client's slot map changes. :class:`AsyncPubSubNodes` answers what
``ClusterPubSub`` asks its cluster, from the client's node directory.

Subscriber connections belong to redis-py's asyncio ``ClusterNode`` objects made here
(one per node), without the client's socket timeout: a subscriber waits for messages as
long as it is told to.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.cluster import ClusterPubSub
from redis.cluster import ClusterNode
from redis.event import AsyncAfterSlotsCacheRefreshEvent, EventDispatcher

if TYPE_CHECKING:
    from balancer.aio.port import AsyncClientPort

__all__ = ["AsyncPubSubNodes", "ClusterPubSub"]


class AsyncPubSubNodes:
    """What ``ClusterPubSub`` needs of a cluster (its ``redis_cluster`` argument) and of
    its ``nodes_manager``: nodes, slots, and redis-py's asyncio node objects."""

    read_from_replicas = False
    load_balancing_strategy = None
    _initialize = False  # redis-py >= 8.2 asks: the client's own map is already loaded

    def __init__(self, client: AsyncClientPort) -> None:
        self._client = client
        self.encoder = client.encoder
        self.nodes_manager = self
        self._event_dispatcher = EventDispatcher()
        self._nodes: dict[str, AsyncClusterNode] = {}
        kwargs = dict(client.get_connection_kwargs())
        kwargs["socket_timeout"] = None  # subscribers wait for messages
        kwargs["connection_class"] = client._options.connection_class
        self._kwargs = kwargs

    def node(self, node: ClusterNode | AsyncClusterNode | None) -> AsyncClusterNode | None:
        """redis-py's asyncio node for one of the directory's nodes."""
        if node is None:
            return None
        found = self._nodes.get(node.name)
        if found is None:
            found = AsyncClusterNode(node.host, node.port, node.server_type, **self._kwargs)
            self._nodes[node.name] = found
        return found

    def get_node(
        self, host: str | None = None, port: int | None = None, node_name: str | None = None
    ) -> AsyncClusterNode | None:
        return self.node(self._client.get_node(host, port, node_name))

    def get_node_from_key(self, key: Any, replica: bool = False) -> AsyncClusterNode | None:
        return self.node(self._client.get_node_from_key(key, replica))

    def get_random_node(self) -> AsyncClusterNode | None:
        return self.node(random.choice(self._client.get_nodes()))

    def keyslot(self, key: Any) -> int:
        return self._client.keyslot(key)

    def get_node_from_slot(self, slot: int, *args: Any, **kwargs: Any) -> AsyncClusterNode | None:
        return self.node(self._client._directory.slot_primary(slot))

    async def initialize(self) -> None:
        """Nothing to load: the directory is the client's, kept current by the client."""

    async def slots_changed(self) -> None:
        """Tell live subscribers that slots moved (sharded channels follow them)."""
        await self._event_dispatcher.dispatch_async(AsyncAfterSlotsCacheRefreshEvent())

    async def aclose(self) -> None:
        nodes, self._nodes = list(self._nodes.values()), {}
        for node in nodes:
            await node.disconnect()
