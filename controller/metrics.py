"""Prometheus metrics of the controller, in base units with bounded labels.

Labels are node addresses, shard ids, targets, gate and reason names — never a slot or a
key, so the number of series stays proportional to the cluster, not to its data. Each
:class:`ControllerMetrics` owns its registry: the global one would make a second instance
(every test, an embedded controller) fail on duplicate names. Series of nodes that left
the cluster are removed, so a resharded cluster does not accumulate stale ones, and a
gauge that stood for a condition (a closed gate, a blocking reason) is set back to 0 when
the condition ends instead of keeping its last value.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from controller.health import ClusterView
from controller.probe import ProbeResult

__all__ = ["BREAKER_STATES", "ControllerMetrics", "DecisionLike"]

BREAKER_STATES: Mapping[str, int] = {"closed": 0, "half-open": 1, "open": 2}
_UNREADABLE_BREAKER = 2  # a state we cannot name is not one to trust: report it as open
_CLUSTER_DOWN_GATES = frozenset({"cluster_state", "unreachable"})
_PROBE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_MIGRATION_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0)


class DecisionLike(Protocol):
    """What :meth:`ControllerMetrics.observe_decision` reads; ``policy.Decision`` fits.

    Read-only members, so frozen dataclasses and computed properties both satisfy it.
    """

    @property
    def target(self) -> str: ...

    @property
    def current(self) -> int: ...

    @property
    def desired(self) -> int: ...

    @property
    def direction(self) -> str: ...  # "up" | "down" | "none"

    @property
    def blocked_by(self) -> tuple[str, ...]: ...


def _or_nan(value: float | None) -> float:
    """Label-less gauges cannot be removed; NaN is how they say "unknown"."""
    return math.nan if value is None else value


class ControllerMetrics:
    """Every metric the controller exports, fed from plain values (views, results).

    Methods may be called from different threads (probe job, reconcile job, HTTP);
    the bookkeeping of which label sets exist is guarded by one lock.
    """

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.node_up = Gauge(
            "slotpilot_node_up", "1 when the node's health is up (rise/fall), else 0",
            ["node", "role", "shard"], registry=r,
        )  # fmt: skip
        self.node_utilization = Gauge(
            "slotpilot_node_utilization_ratio",
            "Max of the node's utilization signals; absent while unknown", ["node"], registry=r,
        )  # fmt: skip
        self.cluster_utilization = Gauge(
            "slotpilot_cluster_utilization_ratio", "Mean utilization over shards (NaN: unknown)",
            registry=r,
        )  # fmt: skip
        self.cluster_utilization_max = Gauge(
            "slotpilot_cluster_utilization_max_ratio", "Utilization of the busiest shard",
            registry=r,
        )  # fmt: skip
        self.cluster_state_ok = Gauge(
            "slotpilot_cluster_state_ok", "1 unless a node reports cluster_state not ok "
            "or no node answers", registry=r,
        )  # fmt: skip
        self.cluster_gate = Gauge(
            "slotpilot_cluster_gate", "1 while the named gate blocks topology changes",
            ["gate"], registry=r,
        )  # fmt: skip
        self.probe_duration = Histogram(
            "slotpilot_probe_duration_seconds", "Duration of one probe cycle",
            registry=r, buckets=_PROBE_BUCKETS,
        )  # fmt: skip
        self.probe_errors = Counter(
            "slotpilot_probe_errors_total", "Node probes that failed, by reason",
            ["node", "reason"], registry=r,
        )  # fmt: skip
        self.breaker_state = Gauge(
            "slotpilot_breaker_state", "Probe breaker per node: 0 closed, 1 half-open, 2 open",
            ["node"], registry=r,
        )  # fmt: skip
        self.replicas = Gauge(
            "slotpilot_replicas", "Replica count per target, current and desired",
            ["target", "kind"], registry=r,
        )  # fmt: skip
        self.scaling_decisions = Counter(
            "slotpilot_scaling_decisions_total", "Decisions to scale a target up or down",
            ["target", "direction"], registry=r,
        )  # fmt: skip
        self.decision_cycles = Counter(
            "slotpilot_decisions_total", "Decisions taken per target, every cycle (moves or not)",
            ["target", "direction"], registry=r,
        )  # fmt: skip
        self.errors = Counter(
            "slotpilot_errors_total", "Controller steps that failed with an error, by stage",
            ["stage"], registry=r,
        )  # fmt: skip
        self.scaling_blocked = Gauge(
            "slotpilot_scaling_blocked", "1 while the reason keeps the target from scaling",
            ["target", "reason"], registry=r,
        )  # fmt: skip
        self.consumer_backlog = Gauge(
            "slotpilot_consumer_backlog", "Last backlog read per consumer (NaN: source failed)",
            ["target"], registry=r,
        )  # fmt: skip
        self.leader = Gauge("slotpilot_leader", "1 on the active controller", registry=r)
        self.consumer_failed_exits = Counter(
            "slotpilot_consumer_failed_exits_total",
            "Consumer replicas that exited non-zero (local platform; restarted with backoff)",
            ["target"], registry=r,
        )  # fmt: skip
        self.kubernetes_api_up = Gauge(  # a child per namespace: nothing on the local platform
            "slotpilot_kubernetes_api_up",
            "1 when the last Kubernetes API call was answered", ["namespace"], registry=r,
        )  # fmt: skip
        self.shard_pods_pending = Gauge(
            "slotpilot_shard_pods_pending",
            "Shard nodes the platform was asked for that cannot start (Pending pods)",
            registry=r,
        )
        self.migration_in_progress = Gauge(
            "slotpilot_migration_in_progress", "1 while slots are being moved", registry=r
        )
        self.migrated_slots = Counter(
            "slotpilot_migrated_slots_total", "Hash slots moved between shards", registry=r
        )
        self.migrated_keys = Counter(
            "slotpilot_migrated_keys_total", "Keys moved between shards", registry=r
        )
        self.migration_duration = Histogram(
            "slotpilot_migration_duration_seconds", "Duration of one slot migration run",
            registry=r, buckets=_MIGRATION_BUCKETS,
        )  # fmt: skip
        self.replica_lag = Gauge(
            "slotpilot_replica_lag_seconds",
            "Seconds since a replica last heard from its primary (+Inf: link down)",
            ["node", "shard"], registry=r,
        )  # fmt: skip
        self.replica_stale = Gauge(
            "slotpilot_replica_stale",
            "1 while a replica gets no reads: link down or lag beyond "
            "routing.max_replica_lag_seconds", ["node", "shard"], registry=r,
        )  # fmt: skip
        self.repairs = Counter(
            "slotpilot_repairs_total",
            "Repairs of the cluster: rejoin, replica_attached, node_started, node_forgotten, "
            "open_slots (one per run that closed open slots)", ["kind"], registry=r,
        )  # fmt: skip
        self._lock = threading.Lock()
        self._replicas: dict[str, str] = {}  # address -> shard of the replica series
        self._nodes: dict[str, tuple[str, str]] = {}  # address -> (role, shard) published
        self._seen_view = False
        self._error_reasons: dict[str, set[str]] = {}  # address -> reasons counted
        self._breakers: set[str] = set()
        self._gates: set[str] = set()
        self._blocked: dict[str, set[str]] = {}  # target -> reasons ever published

    # -- cluster -------------------------------------------------------------------------

    def observe_view(self, view: ClusterView) -> None:
        """Node and cluster gauges from one view; nodes no longer in it lose their series."""
        with self._lock:
            published: dict[str, tuple[str, str]] = {}
            for address, node in view.nodes.items():
                labels = (node.role, node.shard or "")
                old = self._nodes.get(address)
                if old is not None and old != labels:  # failover: role/shard moved
                    self.node_up.remove(address, *old)
                self.node_up.labels(address, *labels).set(1 if node.health.state == "up" else 0)
                if node.utilization is None:
                    self.node_utilization.remove(address)
                else:
                    self.node_utilization.labels(address).set(node.utilization)
                published[address] = labels
            for address in self._nodes.keys() - published.keys():
                self._forget_node(address, self._nodes[address])
            self._nodes = published
            self._seen_view = True
            self.cluster_utilization.set(_or_nan(view.utilization))
            self.cluster_utilization_max.set(_or_nan(view.max_utilization))
            closed = {gate.name for gate in view.gates}
            self.cluster_state_ok.set(0 if closed & _CLUSTER_DOWN_GATES else 1)
            for name in closed | self._gates:
                self.cluster_gate.labels(name).set(1 if name in closed else 0)
            self._gates |= closed

    def _forget_node(self, address: str, labels: tuple[str, str]) -> None:
        self.node_up.remove(address, *labels)
        self.node_utilization.remove(address)
        for reason in self._error_reasons.pop(address, ()):
            self.probe_errors.remove(address, reason)
        if address in self._breakers:
            self._breakers.discard(address)
            self.breaker_state.remove(address)

    def observe_probe(self, result: ProbeResult) -> None:
        """Cycle duration, and one error count per node whose sample names a reason."""
        self.probe_duration.observe(result.duration_seconds)
        with self._lock:
            for address, sample in result.samples.items():
                if sample.error is not None:
                    self.probe_errors.labels(address, sample.error).inc()
                    self._error_reasons.setdefault(address, set()).add(sample.error)

    def observe_breakers(self, states: Mapping[str, str]) -> None:
        """Breaker state per node (``closed``/``half-open``/``open``).

        ``states`` is authoritative: nodes missing from it lose their series. Once a view
        has been observed, breakers of nodes the cluster no longer lists are left out too —
        a probe keeps the breakers of forgotten nodes, and an "open" that never clears
        would page someone about a node that is gone on purpose.
        """
        with self._lock:
            wanted = {a: s for a, s in states.items() if not self._seen_view or a in self._nodes}
            for address in self._breakers - wanted.keys():
                self.breaker_state.remove(address)
            for address, state in wanted.items():
                self.breaker_state.labels(address).set(
                    BREAKER_STATES.get(state, _UNREADABLE_BREAKER)
                )
            self._breakers = set(wanted)

    def observe_replicas(self, lags: Mapping[str, tuple[str, float | None, bool]]) -> None:
        """Per replica address: (shard, lag in seconds or None when unknown, stale).
        Addresses no longer replicas lose their series; an unknown lag has none."""
        with self._lock:
            for address, shard in list(self._replicas.items()):
                if lags.get(address, (None,))[0] != shard:
                    self.replica_stale.remove(address, shard)
                    with contextlib.suppress(KeyError):
                        self.replica_lag.remove(address, shard)
                    del self._replicas[address]
            for address, (shard, lag, stale) in lags.items():
                self._replicas[address] = shard
                self.replica_stale.labels(address, shard).set(1 if stale else 0)
                if lag is None:
                    with contextlib.suppress(KeyError):
                        self.replica_lag.remove(address, shard)
                else:
                    self.replica_lag.labels(address, shard).set(lag)

    def count_repair(self, kind: str, count: int = 1) -> None:
        """Repairs made: ``rejoin``, ``replica_attached``, ``node_started``,
        ``node_forgotten`` or ``open_slots``."""
        if count > 0:
            self.repairs.labels(kind).inc(count)

    # -- scaling -------------------------------------------------------------------------

    def observe_decision(self, decision: DecisionLike) -> None:
        """Replica counts, a count per decision that moves, and what blocks the target."""
        target = decision.target
        self.replicas.labels(target, "current").set(decision.current)
        self.replicas.labels(target, "desired").set(decision.desired)
        self.decision_cycles.labels(target, decision.direction).inc()
        if decision.direction != "none":
            self.scaling_decisions.labels(target, decision.direction).inc()
        with self._lock:
            blocking = set(decision.blocked_by)
            known = self._blocked.setdefault(target, set())
            for reason in blocking | known:
                self.scaling_blocked.labels(target, reason).set(1 if reason in blocking else 0)
            known |= blocking

    def observe_backlog(self, target: str, value: float | None) -> None:
        """Last backlog read; None (the source failed) publishes NaN, not a stale value."""
        self.consumer_backlog.labels(target).set(_or_nan(value))

    def count_error(self, stage: str) -> None:
        """One failed step of the loop (probe, lease, repair, structure, shards, ...)."""
        self.errors.labels(stage).inc()

    def set_leader(self, leader: bool) -> None:
        self.leader.set(1 if leader else 0)

    # -- slot migration ------------------------------------------------------------------

    def set_pending_pods(self, count: int) -> None:
        self.shard_pods_pending.set(count)

    def set_migration_in_progress(self, in_progress: bool) -> None:
        self.migration_in_progress.set(1 if in_progress else 0)

    def observe_batch(self, slots: int, keys: int) -> None:
        """One migration batch as it lands (a ``moved`` progress event)."""
        self.migrated_slots.inc(slots)
        self.migrated_keys.inc(keys)

    # -- exposition ----------------------------------------------------------------------

    def render(self) -> bytes:
        """The text exposition of this instance's registry (never the global one)."""
        return generate_latest(self.registry)
