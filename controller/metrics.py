"""Prometheus metrics of the controller, in base units with bounded labels.

Labels are node addresses, shard ids, targets and reason names — never a slot or a key.
Each :class:`ControllerMetrics` owns its registry (tests create many). Series of nodes
that left the cluster are removed, so a resharded cluster does not accumulate stale ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from controller.health import ClusterView
from controller.probe import ProbeResult

__all__ = ["ControllerMetrics", "DecisionLike"]

_BREAKER = {"closed": 0, "half-open": 1, "open": 2}


class DecisionLike(Protocol):
    target: str
    current: int
    desired: int
    blocked_by: tuple[str, ...]

    @property
    def direction(self) -> str: ...


class ControllerMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.node_up = Gauge(
            "slotpilot_node_up",
            "1 when the node's health is up",
            ["node", "role", "shard"],
            registry=r,
        )
        self.node_util = Gauge(
            "slotpilot_node_utilization_ratio", "max of the node's signals", ["node"], registry=r
        )
        self.cluster_util = Gauge(
            "slotpilot_cluster_utilization_ratio", "mean utilization over shards", registry=r
        )
        self.cluster_util_max = Gauge(
            "slotpilot_cluster_utilization_max_ratio", "busiest shard", registry=r
        )
        self.cluster_ok = Gauge(
            "slotpilot_cluster_state_ok", "1 when every node says cluster_state:ok", registry=r
        )
        self.gate = Gauge(
            "slotpilot_cluster_gate", "1 while the named gate is closed", ["gate"], registry=r
        )
        self.probe_duration = Histogram(
            "slotpilot_probe_duration_seconds", "probe cycle duration", registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )  # fmt: skip
        self.probe_errors = Counter(
            "slotpilot_probe_errors_total", "failed node probes", ["node", "reason"], registry=r
        )
        self.breaker = Gauge(
            "slotpilot_breaker_state", "0 closed, 1 half-open, 2 open", ["node"], registry=r
        )
        self.replicas = Gauge(
            "slotpilot_replicas", "replica counts per target", ["target", "kind"], registry=r
        )
        self.decisions = Counter(
            "slotpilot_scaling_decisions_total",
            "scaling decisions",
            ["target", "direction"],
            registry=r,
        )
        self.blocked = Gauge(
            "slotpilot_scaling_blocked",
            "1 while the reason blocks scaling",
            ["target", "reason"],
            registry=r,
        )
        self.backlog = Gauge(
            "slotpilot_consumer_backlog",
            "queue backlog per consumer target",
            ["target"],
            registry=r,
        )
        self.leader = Gauge("slotpilot_leader", "1 on the active controller", registry=r)
        self.migration_in_progress = Gauge(
            "slotpilot_migration_in_progress", "1 while slots move", registry=r
        )
        self.migrated_slots = Counter("slotpilot_migrated_slots", "slots moved", registry=r)
        self.migrated_keys = Counter("slotpilot_migrated_keys", "keys moved", registry=r)
        self.migration_duration = Histogram(
            "slotpilot_migration_duration_seconds", "one rebalance", registry=r
        )
        self._nodes: dict[str, tuple[str, str]] = {}
        self._gates: set[str] = set()
        self._blocked: dict[str, set[str]] = {}

    def observe_view(self, view: ClusterView) -> None:
        seen: dict[str, tuple[str, str]] = {}
        for address, node in view.nodes.items():
            labels = (node.role, node.shard or "")
            old = self._nodes.get(address)
            if old is not None and old != labels:
                self.node_up.remove(address, *old)
            self.node_up.labels(address, *labels).set(1 if node.health.state == "up" else 0)
            self.node_util.labels(address).set(
                node.utilization if node.utilization is not None else float("nan")
            )
            seen[address] = labels
        for address, labels in self._nodes.items():
            if address not in seen:
                self.node_up.remove(address, *labels)
                self.node_util.remove(address)
        self._nodes = seen
        self.cluster_util.set(view.utilization if view.utilization is not None else float("nan"))
        self.cluster_util_max.set(
            view.max_utilization if view.max_utilization is not None else float("nan")
        )
        closed = {g.name for g in view.gates}
        self.cluster_ok.set(0 if closed & {"cluster_state", "unreachable"} else 1)
        for name in closed | self._gates:
            self.gate.labels(name).set(1 if name in closed else 0)
        self._gates |= closed

    def observe_probe(self, result: ProbeResult) -> None:
        self.probe_duration.observe(result.duration_seconds)
        for address, sample in result.samples.items():
            if sample.error is not None:
                self.probe_errors.labels(address, sample.error).inc()

    def observe_breakers(self, states: Mapping[str, str]) -> None:
        for address, state in states.items():
            self.breaker.labels(address).set(_BREAKER.get(state, 2))

    def observe_decision(self, decision: DecisionLike) -> None:
        self.replicas.labels(decision.target, "current").set(decision.current)
        self.replicas.labels(decision.target, "desired").set(decision.desired)
        if decision.direction != "none":
            self.decisions.labels(decision.target, decision.direction).inc()
        now = set(decision.blocked_by)
        for reason in now | self._blocked.get(decision.target, set()):
            self.blocked.labels(decision.target, reason).set(1 if reason in now else 0)
        self._blocked.setdefault(decision.target, set()).update(now)

    def observe_backlog(self, target: str, value: float | None) -> None:
        self.backlog.labels(target).set(value if value is not None else float("nan"))

    def set_leader(self, leader: bool) -> None:
        self.leader.set(1 if leader else 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
