"""Read the cluster's topology as values, check the gates, and rebalance.

The executor of topology changes: it reads ``CLUSTER NODES`` into a :class:`Topology`,
refuses to move anything while the cluster is not stable (:class:`ClusterNotStable`
names every reason), and runs a :func:`~controller.rebalance.plan_rebalance` plan with a
:class:`~controller.migration.MigrationExecutor`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import redis

from controller.migration import MigrationExecutor, MigrationReport, Progress
from controller.probe import ClusterNodeEntry, parse_node_entries
from controller.rebalance import RebalancePlan, plan_rebalance

__all__ = ["ClusterNotStable", "Topology", "check_gates", "read_topology", "rebalance"]

Connect = Callable[[str], redis.Redis]


class ClusterNotStable(RuntimeError):
    """A topology change was refused; ``reasons`` says why, one fact each."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("cluster not stable: " + "; ".join(reasons))
        self.reasons = reasons


@dataclass(frozen=True)
class Topology:
    """The cluster as one node sees it."""

    source: str
    entries: tuple[ClusterNodeEntry, ...]

    @property
    def primaries(self) -> list[ClusterNodeEntry]:
        return [e for e in self.entries if e.is_primary and "fail" not in e.flags]

    def addresses(self) -> dict[str, str]:
        """Primary id → address."""
        return {e.node_id: e.address for e in self.primaries if e.address}

    def ownership(self) -> dict[str, tuple[tuple[int, int], ...]]:
        return {e.node_id: e.slots for e in self.primaries}

    def open_slots(self) -> list[tuple[int, str, str]]:
        return [slot for e in self.entries for slot in e.open_slots]


def read_topology(connect: Connect, seed: str) -> Topology:
    raw = connect(seed).execute_command("CLUSTER", "NODES")
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    return Topology(seed, parse_node_entries(text))


def check_gates(topology: Topology, connect: Connect) -> None:
    """Raise :class:`ClusterNotStable` unless every primary says ``cluster_state:ok``, no
    node is flagged pfail/fail/handshake/noaddr, and no slot is migrating or importing."""
    reasons = []
    for entry in topology.entries:
        bad = entry.flags & {"fail", "fail?", "handshake", "noaddr"}
        if bad:
            reasons.append(f"node {entry.address or entry.node_id[:8]} is {','.join(sorted(bad))}")
    opened = topology.open_slots()
    if opened:
        reasons.append(f"{len(opened)} slots are migrating/importing (run `slotpilot fix`)")
    for node_id, address in topology.addresses().items():
        try:
            info = connect(address).cluster("info")
            state = info.get("cluster_state")
            state = state.decode() if isinstance(state, bytes) else state
        except redis.RedisError as exc:
            reasons.append(f"primary {address} ({node_id[:8]}) unreachable: {exc}")
            continue
        if state != "ok":
            reasons.append(f"primary {address} says cluster_state:{state}")
    if reasons:
        raise ClusterNotStable(reasons)


def rebalance(
    connect: Connect,
    seed: str,
    engine: str = "auto",
    weights: Mapping[str, float] | None = None,
    threshold: float = 0.02,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> tuple[RebalancePlan, MigrationReport | None]:
    """Give every primary, empty ones included, its weighted share of the slots."""
    topology = read_topology(connect, seed)
    check_gates(topology, connect)
    plan = plan_rebalance(topology.ownership(), weights, threshold)
    if dry_run or plan.is_empty:
        return plan, None
    executor = MigrationExecutor(topology.addresses(), connect, engine=engine, progress=progress)
    return plan, executor.execute(plan)
