"""The asyncio client's constructor: checks and forms, without I/O."""

from __future__ import annotations

import pytest

from balancer.aio import AsyncClusterClient


def test_constructor_checks_without_io() -> None:
    with pytest.raises(ValueError, match="read_from"):
        AsyncClusterClient("127.0.0.1:1", read_from="nearest")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="startup node"):
        AsyncClusterClient([])
    with pytest.raises(ValueError, match=r"strategy|unknown"):
        AsyncClusterClient("127.0.0.1:1", strategy="fastest")
    client = AsyncClusterClient.from_url("rediss://u:p@10.0.0.1:7000", decode_responses=True)
    assert client._seeds == [("10.0.0.1", 7000)] and client._tls


def test_redis_cluster_constructor_forms() -> None:
    from redis.cluster import ClusterNode

    assert AsyncClusterClient(host="10.0.0.2", port=7001)._seeds == [("10.0.0.2", 7001)]
    nodes = [ClusterNode("10.0.0.3", 7002), ClusterNode("10.0.0.4", 7003)]
    client = AsyncClusterClient(startup_nodes=nodes, read_from_replicas=True)
    assert client._seeds == [("10.0.0.3", 7002), ("10.0.0.4", 7003)]
    assert client.read_from == "any"  # RedisCluster's round robin over the whole shard
