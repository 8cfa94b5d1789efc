"""The routing table the controller publishes and SDK clients follow. Pure.

Each node gets a state (up, down, draining, stale) and a weight. Draining nodes (their
shard is about to be emptied) and down nodes get weight 0, so clients stop reading from
them before their slots move; so does a stale replica — its link to the primary is down,
or it has heard nothing from the primary for longer than ``max_replica_lag_seconds``
(``master_last_io_seconds_ago``: a hung primary, a stalled link) — whose reads would be
old. Busier nodes get proportionally less read traffic. The version
only moves when the content changes, so clients polling with ``If-None-Match`` get
``304 Not Modified`` almost always.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Collection
from dataclasses import asdict, dataclass
from typing import Any

from controller.health import ClusterView, NodeView

__all__ = ["MIN_WEIGHT", "RoutingEntry", "RoutingTable", "build_routing_table", "replica_lag"]

MIN_WEIGHT = 0.1  # a healthy node is never starved entirely by a weight


@dataclass(frozen=True)
class RoutingEntry:
    address: str
    node_id: str | None
    role: str
    shard: str | None
    state: str  # up | down | draining | stale
    weight: float


@dataclass(frozen=True)
class RoutingTable:
    version: int
    nodes: tuple[RoutingEntry, ...]

    @property
    def etag(self) -> str:
        """From the content alone: every controller replica serving the same table (the
        leader's draining nodes included) answers with the same ETag, whatever version
        count its own history reached."""
        return f'"{_digest(self.nodes)}"'

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "nodes": [asdict(n) for n in self.nodes]}


def _digest(nodes: tuple[RoutingEntry, ...]) -> str:
    blob = json.dumps([asdict(n) for n in nodes], sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _weight(utilization: float | None) -> float:
    if utilization is None:
        return 1.0
    return round(max(MIN_WEIGHT, min(1.0, 1.0 - utilization)), 2)


def replica_lag(node: NodeView) -> float | None:
    """Seconds a replica has heard nothing from its primary; inf when its link is down;
    None when unknown (not a replica, or no usable sample this cycle)."""
    sample = node.sample
    if node.role != "replica" or sample is None or not sample.ok:
        return None
    link = sample.info.get("master_link_status")
    if link is None:
        return None  # a malformed or partial INFO: unknown, not stale
    if link != "up":
        return math.inf
    return sample.number("master_last_io_seconds_ago")


def build_routing_table(
    view: ClusterView,
    draining: Collection[str] = (),
    previous: RoutingTable | None = None,
    max_replica_lag_seconds: float = 30.0,
) -> RoutingTable:
    """The table for ``view``; ``draining`` holds addresses or node ids being drained."""
    entries = []
    for address in sorted(view.nodes):
        node = view.nodes[address]
        if address in draining or (node.node_id is not None and node.node_id in draining):
            state, weight = "draining", 0.0
        elif node.health.state == "down":
            state, weight = "down", 0.0
        elif (lag := replica_lag(node)) is not None and lag > max_replica_lag_seconds:
            state, weight = "stale", 0.0
        else:
            state, weight = "up", _weight(node.utilization)
        entries.append(RoutingEntry(address, node.node_id, node.role, node.shard, state, weight))
    nodes = tuple(entries)
    if previous is not None and previous.nodes == nodes:
        return previous
    return RoutingTable((previous.version + 1) if previous else 1, nodes)
