"""Where keyless commands go and how replies combine (RedisCluster's rules), and the
node directory built from a slot map: pure values, no sockets."""

from __future__ import annotations

from typing import Any

import pytest
from redis.cluster import ClusterNode
from redis.exceptions import RedisClusterException, SlotNotCoveredError

from balancer.nodes import NodeDirectory, node_of
from balancer.slots import ShardInfo, ShardNode, SlotMap
from balancer.targets import (
    ALL_NODES,
    DEFAULT_NODE,
    PRIMARIES,
    RANDOM,
    REPLICAS,
    SLOT_ID,
    combine,
    command_flag,
    command_name,
)


def shard(primary: str, replica: str, start: int, end: int) -> ShardInfo:
    return ShardInfo(
        ShardNode(primary, primary, "primary", "online"),
        (ShardNode(replica, replica, "replica", "online"),),
        ((start, end),),
    )


SLOTS = SlotMap.from_shards([shard("10.0.0.1:7000", "10.0.0.2:7000", 0, 8191),
                             shard("10.0.0.3:7000", "10.0.0.4:7000", 8192, 16383)])  # fmt: skip


@pytest.mark.parametrize(
    ("args", "name", "flag"),
    [
        (("CONFIG GET", "x"), "CONFIG GET", DEFAULT_NODE),
        (("config", "set", "x", "y"), "CONFIG SET", DEFAULT_NODE),
        (("FLUSHALL",), "FLUSHALL", PRIMARIES),
        (("SCAN", 0), "SCAN", PRIMARIES),
        (("DBSIZE",), "DBSIZE", PRIMARIES),  # ours: the whole cluster
        (("KEYS", "*"), "KEYS", PRIMARIES),
        (("FUNCTION DUMP",), "FUNCTION DUMP", RANDOM),
        (("CLUSTER COUNTKEYSINSLOT", 5), "CLUSTER COUNTKEYSINSLOT", SLOT_ID),
        (("ECHO", "x"), "ECHO", None),  # no flag: the default node too
    ],
)
def test_command_names_and_flags(args: tuple[Any, ...], name: str, flag: str | None) -> None:
    assert command_name(args) == name
    assert command_flag(name) == flag


def test_replies_combine_as_redis_cluster_does() -> None:
    assert combine("DBSIZE", {"a": 2, "b": 3}) == 5
    assert combine("INFO", {"a": {"x": 1}}) == {"x": 1}  # one node: its reply
    assert combine("INFO", {"a": 1, "b": 2}) == {"a": 1, "b": 2}  # several: by node name
    assert combine("SCAN", {"a": (0, [b"k"]), "b": (7, [b"j"])}) == ({"a": 0, "b": 7}, [b"k", b"j"])
    assert combine("SCRIPT EXISTS", {"a": [True, False], "b": [True, True]}) == [True, False]
    assert sorted(combine("KEYS", {"a": [b"x"], "b": [b"y"]})) == [b"x", b"y"]
    assert combine("PING", {"a": True, "b": True}) is True


def test_directory_nodes_and_default() -> None:
    directory = NodeDirectory(["10.0.0.3:7000"])
    directory.update(SLOTS)
    assert sorted(directory.nodes) == ["10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.3:7000",
                                       "10.0.0.4:7000"]  # fmt: skip
    assert directory.default is not None and directory.default.name == "10.0.0.3:7000"
    kept = directory.nodes["10.0.0.1:7000"]
    directory.update(SLOTS)
    assert directory.nodes["10.0.0.1:7000"] is kept  # the same object while it stays
    assert [n.name for n in directory.by_type("replica")] == ["10.0.0.2:7000", "10.0.0.4:7000"]
    assert directory.slot_primary(9000).name == "10.0.0.3:7000"
    assert node_of(directory, b"foo", replica=True).name == "10.0.0.4:7000"  # slot 12182
    # the default node left: another primary takes its place
    directory.update(SlotMap.from_shards([shard("10.0.0.1:7000", "10.0.0.2:7000", 0, 16383)]))
    assert directory.default is not None and directory.default.name == "10.0.0.1:7000"


def test_directory_resolves_targets() -> None:
    directory = NodeDirectory(["10.0.0.1:7000"])
    directory.update(SLOTS)
    names = lambda nodes: sorted(n.name for n in nodes)  # noqa: E731
    assert names(directory.resolve(PRIMARIES, "PING", ("PING",))) == ["10.0.0.1:7000",
                                                                       "10.0.0.3:7000"]  # fmt: skip
    assert len(directory.resolve(REPLICAS, "PING", ("PING",))) == 2
    assert len(directory.resolve(ALL_NODES, "PING", ("PING",))) == 4
    assert len(directory.resolve(RANDOM, "PING", ("PING",))) == 1
    assert names(directory.resolve(None, "INFO", ("INFO",))) == ["10.0.0.1:7000"]
    flushed = directory.resolve(None, "FLUSHALL", ("FLUSHALL",))
    assert names(flushed) == ["10.0.0.1:7000", "10.0.0.3:7000"]
    slot_cmd = ("CLUSTER COUNTKEYSINSLOT", 9000)
    assert names(directory.resolve(None, "CLUSTER COUNTKEYSINSLOT", slot_cmd)) == ["10.0.0.3:7000"]
    node = ClusterNode("10.0.0.4", 7000, "replica")
    assert directory.resolve(node, "X", ("X",)) == [node]
    assert directory.resolve([node], "X", ("X",)) == [node]
    assert directory.resolve({"n": node}, "X", ("X",)) == [node]
    with pytest.raises(RedisClusterException):
        directory.resolve("somewhere", "X", ("X",))
    with pytest.raises(TypeError):
        directory.resolve(3, "X", ("X",))
    with pytest.raises(SlotNotCoveredError):
        NodeDirectory([]).slot_primary(5)
