"""Pub/sub for :class:`~balancer.sync.client.ClusterClient`: redis-py's own ``ClusterPubSub``.

``pubsub()`` returns redis-py's :class:`redis.cluster.ClusterPubSub`, so ``subscribe``,
``psubscribe``, ``get_message``, ``listen``, ``run_in_thread`` and sharded
``ssubscribe``/``get_sharded_message`` behave exactly as with ``RedisCluster``: a classic
subscription lives on the node serving the first channel's slot (or the node given),
each sharded channel on its slot's primary. :class:`PubSubNodes` answers the few
questions ``ClusterPubSub`` asks its cluster from the client's slot map.

Subscriber connections are plain ``redis.Redis`` pools per node, without the client's
``socket_timeout``: a subscriber waits for messages as long as it is told to (as
``RedisCluster``'s do by default), instead of failing after half a second of silence.
"""

from __future__ import annotations

import random
import threading
from typing import TYPE_CHECKING, Any

import redis
from redis.cluster import ClusterNode, ClusterPubSub
from redis.event import AfterSlotsCacheRefreshEvent, EventDispatcher

if TYPE_CHECKING:
    from balancer.sync.port import SyncClientPort

__all__ = ["ClusterPubSub", "PubSubNodes"]


class PubSubNodes:
    """What ``ClusterPubSub`` needs of a cluster (its ``redis_cluster`` argument), and
    of its ``nodes_manager``: nodes, slots, one ``redis.Redis`` per node."""

    read_from_replicas = False
    load_balancing_strategy = None

    def __init__(self, client: SyncClientPort) -> None:
        self._client = client
        self.encoder = client.encoder
        self.nodes_manager = self
        self._event_dispatcher = EventDispatcher()
        self._redis: dict[str, redis.Redis] = {}
        self._lock = threading.Lock()
        kwargs = dict(client.get_connection_kwargs())
        kwargs["socket_timeout"] = None  # subscribers wait for messages
        kwargs["ssl"] = client._tls
        self._kwargs = kwargs

    def get_node(
        self, host: str | None = None, port: int | None = None, node_name: str | None = None
    ) -> ClusterNode | None:
        return self._client.get_node(host, port, node_name)

    def get_node_from_key(self, key: Any, replica: bool = False) -> ClusterNode | None:
        return self._client.get_node_from_key(key, replica)

    def get_random_node(self) -> ClusterNode:
        return random.choice(self._client.get_nodes())

    def keyslot(self, key: Any) -> int:
        return self._client.keyslot(key)

    def get_node_from_slot(self, slot: int, *args: Any, **kwargs: Any) -> ClusterNode:
        return self._client._directory.slot_primary(slot)

    def get_redis_connection(self, node: ClusterNode) -> redis.Redis:
        with self._lock:
            client = self._redis.get(node.name)
            if client is None:
                client = redis.Redis(host=node.host, port=node.port, **self._kwargs)
                self._redis[node.name] = client
            return client

    def slots_changed(self) -> None:
        """Tell live subscribers that slots moved (sharded channels follow them)."""
        self._event_dispatcher.dispatch(AfterSlotsCacheRefreshEvent())

    def close(self) -> None:
        with self._lock:
            clients, self._redis = list(self._redis.values()), {}
        for client in clients:
            client.close()
