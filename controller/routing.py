"""The routing table the controller publishes and SDK clients follow. Pure.

Each node gets a state (up, down, draining) and a weight. Draining nodes (their shard
is about to be emptied) and down nodes get weight 0, so clients stop reading from them
before their slots move; busier nodes get proportionally less read traffic. The version
only moves when the content changes, so clients polling with ``If-None-Match`` get
``304 Not Modified`` almost always.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from dataclasses import asdict, dataclass
from typing import Any

from controller.health import ClusterView

__all__ = ["MIN_WEIGHT", "RoutingEntry", "RoutingTable", "build_routing_table"]

MIN_WEIGHT = 0.1  # a healthy node is never starved entirely by a weight


@dataclass(frozen=True)
class RoutingEntry:
    address: str
    node_id: str | None
    role: str
    shard: str | None
    state: str  # up | down | draining
    weight: float


@dataclass(frozen=True)
class RoutingTable:
    version: int
    nodes: tuple[RoutingEntry, ...]

    @property
    def etag(self) -> str:
        return f'"{self.version}-{_digest(self.nodes)}"'

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "nodes": [asdict(n) for n in self.nodes]}


def _digest(nodes: tuple[RoutingEntry, ...]) -> str:
    blob = json.dumps([asdict(n) for n in nodes], sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _weight(utilization: float | None) -> float:
    if utilization is None:
        return 1.0
    return round(max(MIN_WEIGHT, min(1.0, 1.0 - utilization)), 2)


def build_routing_table(
    view: ClusterView, draining: Collection[str] = (), previous: RoutingTable | None = None
) -> RoutingTable:
    """The table for ``view``; ``draining`` holds addresses or node ids being drained."""
    entries = []
    for address in sorted(view.nodes):
        node = view.nodes[address]
        if address in draining or (node.node_id is not None and node.node_id in draining):
            state, weight = "draining", 0.0
        elif node.health.state == "down":
            state, weight = "down", 0.0
        else:
            state, weight = "up", _weight(node.utilization)
        entries.append(RoutingEntry(address, node.node_id, node.role, node.shard, state, weight))
    nodes = tuple(entries)
    if previous is not None and previous.nodes == nodes:
        return previous
    return RoutingTable((previous.version + 1) if previous else 1, nodes)
