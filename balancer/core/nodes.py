"""redis-py's node API on :class:`~balancer.sync.client.ClusterClient`: ``get_nodes()``,
``get_primaries()``, ``get_node(host, port)``, ``get_node_from_key()``, the default
node, and ``target_nodes=`` for commands without keys.

Nodes are redis-py's own :class:`redis.cluster.ClusterNode` values (``host``, ``port``,
``name``, ``server_type``), so admin scripts written for ``RedisCluster`` keep working;
their ``redis_connection`` is ``None``: every command still goes through the client.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from redis.cluster import PRIMARY, REPLICA, ClusterNode
from redis.crc import key_slot
from redis.exceptions import RedisClusterException, SlotNotCoveredError

from balancer.core.slots import SlotMap, as_text
from balancer.core.targets import (
    ALL_NODES,
    NODE_FLAGS,
    PRIMARIES,
    RANDOM,
    REPLICAS,
    SLOT_ID,
    command_flag,
)

__all__ = ["ClusterNode", "NodeAPI", "NodeDirectory", "node_of", "startup_seeds"]


class NodeDirectory:
    """The cluster's nodes as :class:`ClusterNode` values, rebuilt from each slot map
    (a node keeps its object while it stays), and the default node."""

    def __init__(self, seeds: Sequence[str]) -> None:
        self._seeds = list(seeds)
        self.nodes: dict[str, ClusterNode] = {}
        self.default: ClusterNode | None = None
        self.slot_map = SlotMap.from_shards(())

    def update(self, slot_map: SlotMap) -> None:
        nodes: dict[str, ClusterNode] = {}
        for shard in slot_map.shards:
            for node, kind in ((shard.primary, PRIMARY), *((r, REPLICA) for r in shard.replicas)):
                old = self.nodes.get(node.address)
                if old is None or old.server_type != kind:
                    host, _, port = node.address.rpartition(":")
                    old = ClusterNode(host.strip("[]"), int(port), kind)
                nodes[old.name] = old
        self.nodes = nodes
        self.slot_map = slot_map
        default = self.default
        if default is None or nodes.get(default.name) is not default:
            primaries = [n for n in nodes.values() if n.server_type == PRIMARY]
            seeded = [n for n in primaries if n.name in self._seeds]
            self.default = seeded[0] if seeded else primaries[0] if primaries else None

    def by_type(self, kind: str) -> list[ClusterNode]:
        return [n for n in self.nodes.values() if n.server_type == kind]

    def slot_primary(self, slot: int) -> ClusterNode:
        shard = self.slot_map.shard_for_slot(slot)
        if shard is None:
            raise SlotNotCoveredError(f'Slot "{slot}" is not covered by the cluster.')
        return self.nodes[shard.primary.address]

    def resolve(self, target: Any, command: str, args: Sequence[Any]) -> list[ClusterNode]:
        """The nodes a keyless command runs on: ``target`` (a node flag, a node, a list
        or dict of nodes) or, without one, the command's own flag (default node if none)."""
        if target is None or isinstance(target, str):
            flag = command_flag(command) if target is None else target
            if flag is not None and flag not in NODE_FLAGS and flag != SLOT_ID:
                raise RedisClusterException(f"unknown target_nodes flag {flag!r}")
            return self._flagged(flag, command, args)
        if isinstance(target, ClusterNode):
            return [target]
        if isinstance(target, dict):
            return list(target.values())
        if isinstance(target, list | tuple):
            return list(target)
        raise TypeError(
            "target_nodes type can be one of the following: node_flag (PRIMARIES, "
            "REPLICAS, RANDOM, ALL_NODES), ClusterNode, list<ClusterNode>, or "
            f"dict<any, ClusterNode>. The passed type is {type(target)}"
        )

    def _flagged(self, flag: str | None, command: str, args: Sequence[Any]) -> list[ClusterNode]:
        if flag == PRIMARIES:
            nodes = self.by_type(PRIMARY)
        elif flag == REPLICAS:
            nodes = self.by_type(REPLICA)
        elif flag == ALL_NODES:
            nodes = list(self.nodes.values())
        elif flag == RANDOM:
            nodes = [random.choice(list(self.nodes.values()))] if self.nodes else []
        elif flag == SLOT_ID:  # the slot follows the command's words
            nodes = [self.slot_primary(int(args[len(command.split()) - words(args[0]) + 1]))]
        else:  # DEFAULT_NODE or no flag
            nodes = [self.default] if self.default is not None else []
        if not nodes:
            raise RedisClusterException(f"No targets were found to execute {args[0]} command on")
        return nodes


def node_of(directory: NodeDirectory, key_bytes: bytes, replica: bool) -> ClusterNode | None:
    """``get_node_from_key``: the slot's primary, or its first replica (``None`` when
    it has none)."""
    slot = key_slot(key_bytes)
    shard = directory.slot_map.shard_for_slot(slot)
    if shard is None:
        raise SlotNotCoveredError(f'Slot "{slot}" is not covered by the cluster.')
    if not replica:
        return directory.nodes[shard.primary.address]
    if not shard.replicas:
        return None
    return directory.nodes[shard.replicas[0].address]


def startup_seeds(
    startup_nodes: str | Sequence[str | ClusterNode] | None, host: str | None, port: int | None
) -> list[str]:
    """``host:port`` seeds from ``"host:port"`` strings, ``ClusterNode`` values (as
    ``RedisCluster(startup_nodes=[...])`` takes them) and ``host``/``port`` keywords."""
    given = [startup_nodes] if isinstance(startup_nodes, str) else list(startup_nodes or [])
    seeds = [n if isinstance(n, str) else f"{n.host}:{n.port}" for n in given]
    if host is not None or port is not None:
        seeds.append(f"{host or '127.0.0.1'}:{port or 6379}")
    return seeds


def words(name: Any) -> int:
    """How many words a command name argument holds (``"CLUSTER SETSLOT"``: 2)."""
    return len(as_text(name).split())


class NodeAPI:
    """redis-py's node methods, answered from the client's :class:`NodeDirectory`."""

    _directory: NodeDirectory
    _encoder: Any

    def get_nodes(self) -> list[ClusterNode]:
        return list(self._directory.nodes.values())

    def get_primaries(self) -> list[ClusterNode]:
        return self._directory.by_type("primary")

    def get_replicas(self) -> list[ClusterNode]:
        return self._directory.by_type("replica")

    def get_random_node(self) -> ClusterNode:
        return random.choice(self.get_nodes())

    def get_node(
        self, host: str | None = None, port: int | None = None, node_name: str | None = None
    ) -> ClusterNode | None:
        """A node by ``host`` and ``port`` or by ``node_name`` (``host:port``)."""
        if node_name is None:
            if host is None or port is None:
                return None
            node_name = f"{host}:{port}"
        return self._directory.nodes.get(node_name)

    def get_node_from_key(self, key: Any, replica: bool = False) -> ClusterNode | None:
        return node_of(self._directory, self._encoder.encode(key), replica)

    def get_default_node(self) -> ClusterNode | None:
        return self._directory.default

    def set_default_node(self, node: ClusterNode | None) -> bool:
        if node is None or self.get_node(node_name=node.name) is None:
            return False
        self._directory.default = node
        return True

    def keyslot(self, key: Any) -> int:
        return key_slot(self._encoder.encode(key))
