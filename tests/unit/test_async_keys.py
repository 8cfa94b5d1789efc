"""The asyncio client's key locations: the sync KeyLocator fed from a loaded COMMAND
table, and the questions only a server can answer handed back (no sockets)."""

from __future__ import annotations

from typing import Any

import pytest

from balancer.aio import AsyncClusterClient
from balancer.aio.keys import NeedsServer, served_command_table
from balancer.keys import KeyLocator

TABLE: dict[str, Any] = {
    "get": {"name": "get", "flags": ["readonly", "fast"], "first_key_pos": 1,
            "last_key_pos": 1, "step_count": 1},
    "mset": {"name": "mset", "flags": ["write"], "first_key_pos": 1, "last_key_pos": -1,
             "step_count": 2},
    "zunionstore": {"name": "zunionstore", "flags": ["write", "movablekeys"],
                    "first_key_pos": 1, "last_key_pos": 1, "step_count": 1},
}  # fmt: skip


def test_fixed_positions_come_from_the_loaded_table() -> None:
    locator = KeyLocator(served_command_table(lambda: TABLE))
    assert locator.keys(("GET", "a")) == ["a"]
    assert locator.keys(("MSET", "a", "1", "b", "2")) == ["a", "b"]
    assert locator.keys(("EVAL", "return 1", 2, "x", "y", "arg")) == ["x", "y"]
    assert locator.readonly("GET") and not locator.readonly("MSET")


def test_movable_keys_are_handed_back_for_the_server() -> None:
    locator = KeyLocator(served_command_table(lambda: TABLE))
    with pytest.raises(NeedsServer) as info:
        locator.keys(("ZUNIONSTORE", "dst", 2, "a", "b"))
    assert info.value.pieces == ("ZUNIONSTORE", "dst", 2, "a", "b")


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
