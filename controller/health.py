"""From probe samples to a cluster view: node health, gates and utilization. Pure.

Everything here is a function of values (samples, the previous view, the time), so it is
tested without servers. Node health uses rise/fall thresholds like HAProxy: a node is up
after ``rise`` good probes in a row and down after ``fall`` bad ones, so one lost probe
neither ejects a node nor does one good reply trust it again. Cluster gates name the
reasons no topology change may start now; utilization is the max of the configured
signals per node, a shard's is its primary's, the cluster's the mean over shards.
A configured signal that is unknown this cycle (the first CPU sample has no rate yet) is
named in ``missing_signals`` so the policy holds rather than reads a low number. A failed
node that owns no slots (a dead replica, a primary whose replica took over) does not
close the ``node_failing`` gate: it is listed in ``failed_nodes`` with the time it was
first seen failing, so the controller can forget it after a grace period.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from controller.probe import ClusterNodeEntry, NodeSample, ProbeResult

__all__ = [
    "Capacity",
    "ClusterView",
    "Gate",
    "NodeHealth",
    "NodeView",
    "build_view",
    "cluster_gates",
    "missing_signals",
    "next_health",
    "node_utilization",
    "shards_short_of_replicas",
]


@dataclass(frozen=True)
class Capacity:
    """What 100 % means per signal; ``memory_bytes`` None → the node's maxmemory."""

    memory_bytes: int | None = None
    ops_per_second: float | None = 50_000
    cpu_cores: float | None = 1.0
    clients: bool = True  # connected_clients / maxclients


@dataclass(frozen=True)
class NodeHealth:
    """Rise/fall state of one node. ``state`` is up, down or unknown (never probed ok)."""

    state: str = "unknown"
    successes: int = 0
    failures: int = 0
    last_error: str | None = None
    changed_at: float = 0.0


def next_health(
    prev: NodeHealth, ok: bool, error: str | None, rise: int, fall: int, now: float
) -> NodeHealth:
    """One probe outcome applied to a node's rise/fall counters."""
    if ok:
        successes, failures = prev.successes + 1, 0
        state = "up" if prev.state == "up" or successes >= rise else prev.state
    else:
        successes, failures = 0, prev.failures + 1
        state = "down" if prev.state == "down" or failures >= fall else prev.state
    changed_at = now if state != prev.state else prev.changed_at
    return NodeHealth(state, successes, failures, None if ok else error, changed_at)


@dataclass(frozen=True)
class Gate:
    """A named reason why no topology change may start now."""

    name: str
    detail: str


@dataclass(frozen=True)
class NodeView:
    address: str
    node_id: str | None
    role: str  # primary | replica | unknown
    shard: str | None  # the primary's node id
    health: NodeHealth
    utilization: float | None  # None: no usable signal (missing or malformed data)
    signals: Mapping[str, float] = field(default_factory=dict)
    sample: NodeSample | None = None


@dataclass(frozen=True)
class ClusterView:
    """Everything the policy, routing table, metrics and status need from one cycle."""

    taken_at: float
    nodes: Mapping[str, NodeView]
    shard_utilization: Mapping[str, float | None]  # primary id -> utilization
    utilization: float | None  # mean over shards; None if any shard is unknown
    max_utilization: float | None
    gates: tuple[Gate, ...]
    epoch: int
    last_epoch_change: float
    probe: ProbeResult | None = None
    missing_signals: tuple[str, ...] = ()  # "cpu@host:port": unknown this cycle
    failed_nodes: Mapping[str, float] = field(default_factory=dict)  # slotless id -> since

    @property
    def primaries(self) -> list[NodeView]:
        return [n for n in self.nodes.values() if n.role == "primary"]


def node_utilization(
    sample: NodeSample, previous: NodeSample | None, capacity: Capacity
) -> tuple[float | None, dict[str, float]]:
    """Max of the configured signals in [0, ∞); (None, {}) when no signal is usable."""
    if not sample.ok:
        return None, {}
    signals: dict[str, float] = {}
    memory = sample.number("used_memory")
    limit = capacity.memory_bytes or sample.number("maxmemory")
    if memory is not None and limit:
        signals["memory"] = memory / limit
    ops = sample.number("instantaneous_ops_per_sec")
    if ops is not None and capacity.ops_per_second:
        signals["ops"] = ops / capacity.ops_per_second
    clients, maxclients = sample.number("connected_clients"), sample.number("maxclients")
    if capacity.clients and clients is not None and maxclients:
        signals["clients"] = clients / maxclients
    if capacity.cpu_cores and previous is not None and previous.ok:
        cpu_now = _cpu_seconds(sample)
        cpu_before = _cpu_seconds(previous)
        elapsed = sample.taken_at - previous.taken_at
        if cpu_now is not None and cpu_before is not None and elapsed > 0 and cpu_now >= cpu_before:
            signals["cpu"] = (cpu_now - cpu_before) / elapsed / capacity.cpu_cores
    if not signals:
        return None, {}
    return max(signals.values()), signals


def missing_signals(
    sample: NodeSample, previous: NodeSample | None, capacity: Capacity
) -> tuple[str, ...]:
    """Configured signals that have no value this cycle (a failed sample: all of them)."""
    wanted = {
        "ops": ("instantaneous_ops_per_sec",) if capacity.ops_per_second else (),
        "cpu": ("used_cpu_sys", "used_cpu_user") if capacity.cpu_cores else (),
        "memory": ("used_memory",),
    }
    if not sample.ok:
        return tuple(name for name, fields in wanted.items() if fields)
    missing = [
        name for name, fields in wanted.items() if any(sample.number(f) is None for f in fields)
    ]
    no_rate = previous is None or not previous.ok or _cpu_seconds(previous) is None
    if capacity.cpu_cores and "cpu" not in missing and no_rate:
        missing.append("cpu")  # a rate needs two samples: the first one says nothing
    return tuple(missing)


def shards_short_of_replicas(view: ClusterView, want: int = 1) -> list[str]:
    """Addresses of primaries owning slots with fewer than ``want`` replicas that are
    not failing (``want=1``: the shards without a replica)."""
    probe = view.probe
    if probe is None or want <= 0:
        return []
    bad = {"fail", "fail?", "noaddr", "handshake"}
    counts = {e.node_id: 0 for e in probe.entries if e.is_primary and e.slots}
    for e in probe.entries:
        if e.primary_id in counts and not e.flags & bad:
            counts[e.primary_id] += 1
    by_id = {e.node_id: e.address for e in probe.entries}
    return sorted(by_id[n] for n, c in counts.items() if c < want)


def _int(value: object) -> int:
    """An INFO integer field; 0 when absent or malformed (gates must not crash on it)."""
    try:
        return int(str(value))
    except ValueError:
        return 0


def _cpu_seconds(sample: NodeSample) -> float | None:
    sys_cpu, user_cpu = sample.number("used_cpu_sys"), sample.number("used_cpu_user")
    if sys_cpu is None or user_cpu is None:
        return None
    return sys_cpu + user_cpu


def cluster_gates(
    result: ProbeResult, node_timeout_ms: float, epoch: int, last_epoch_change: float, now: float
) -> tuple[Gate, ...]:
    """Every reason a topology change must wait, each with its facts."""
    gates: list[Gate] = []
    if result.source is None:
        return (Gate("unreachable", result.membership_error or "no node answered"),)
    states = {a: s.cluster_info.get("cluster_state") for a, s in result.samples.items() if s.ok}
    bad = sorted(a for a, state in states.items() if state != "ok")
    if bad:
        gates.append(Gate("cluster_state", f"cluster_state not ok on {', '.join(bad)}"))
    # A failing node that owns no slots holds no data: it must not stop scaling.
    failing = [e for e in result.entries if e.flags & {"fail", "fail?"} and e.slots]
    if failing:
        names = ", ".join(
            f"{e.address or e.node_id[:8]} ({','.join(sorted(e.flags))})" for e in failing
        )
        gates.append(Gate("node_failing", f"nodes flagged pfail/fail: {names}"))
    slots_bad = sum(
        _int(s.cluster_info.get("cluster_slots_pfail"))
        + _int(s.cluster_info.get("cluster_slots_fail"))
        for s in result.samples.values()
        if s.ok
    )
    if slots_bad:
        gates.append(Gate("slots_failing", f"{slots_bad} slot reports in pfail/fail"))
    open_slots = sorted(
        {slot for e in result.entries for slot, _, _ in e.open_slots}
        | {slot for s in result.samples.values() for slot, _, _ in s.open_slots}
    )
    if open_slots:
        gates.append(
            Gate("open_slots", f"{len(open_slots)} slots migrating/importing: {open_slots[:10]}")
        )
    handshake = [e for e in result.entries if e.flags & {"handshake", "noaddr"}]
    if handshake:
        gates.append(Gate("handshake", f"{len(handshake)} nodes in handshake/noaddr"))
    window = 2 * node_timeout_ms / 1000
    if last_epoch_change and now - last_epoch_change < window:
        gates.append(
            Gate(
                "failover_recent",
                f"epoch changed to {epoch} {now - last_epoch_change:.1f}s ago (< {window:.0f}s)",
            )
        )
    return tuple(gates)


def build_view(
    result: ProbeResult,
    previous: ClusterView | None,
    capacity: Capacity,
    rise: int,
    fall: int,
    now: float,
    node_timeout_ms: float = 15_000,
    own_change: bool = False,
) -> ClusterView:
    """The next :class:`ClusterView` from this cycle's probe and the previous view.

    ``own_change``: our own reshard ran since the previous view, so an epoch change is
    from our SETSLOT/MEET/FAILOVER, not a failover (``failover_recent`` stays open)."""
    by_address: dict[str, ClusterNodeEntry] = {e.address: e for e in result.entries if e.address}
    old_nodes = previous.nodes if previous else {}
    nodes: dict[str, NodeView] = {}
    missing: list[str] = []
    for address, sample in result.samples.items():
        entry = by_address.get(address)
        old = old_nodes.get(address)
        if entry is not None and entry.is_primary and entry.slots:
            previous_sample = old.sample if old else None
            gaps = missing_signals(sample, previous_sample, capacity)
            missing.extend(f"{name}@{address}" for name in gaps)
        health = next_health(
            old.health if old else NodeHealth(), sample.ok, sample.error, rise, fall, now
        )
        util, signals = node_utilization(sample, old.sample if old else None, capacity)
        if entry is None:
            role, shard, node_id = "unknown", None, None
        elif entry.is_primary:
            role, shard, node_id = "primary", entry.node_id, entry.node_id
        else:
            role, shard, node_id = "replica", entry.primary_id, entry.node_id
        nodes[address] = NodeView(address, node_id, role, shard, health, util, signals, sample)

    shard_util: dict[str, float | None] = {}
    for view in nodes.values():
        if view.role == "primary" and view.node_id and by_address[view.address].slots:
            usable = view.health.state != "down" and view.utilization is not None
            shard_util[view.node_id] = view.utilization if usable else None
    known = [u for u in shard_util.values() if u is not None]
    complete = bool(shard_util) and len(known) == len(shard_util)
    utilization = sum(known) / len(known) if complete else None
    max_util = max(known) if known else None

    epoch = max(
        (
            _int(s.cluster_info.get("cluster_current_epoch"))
            for s in result.samples.values()
            if s.ok
        ),
        default=0,
    )
    last_change = previous.last_epoch_change if previous else 0.0
    if previous is not None and epoch != previous.epoch and not own_change:
        last_change = now
    failed_before = previous.failed_nodes if previous else {}
    failed = {
        e.node_id: failed_before.get(e.node_id, now)
        for e in result.entries
        if "fail" in e.flags and not e.slots
    }
    gates = cluster_gates(result, node_timeout_ms, epoch, last_change, now)
    return ClusterView(
        now, nodes, shard_util, utilization, max_util, gates, epoch, last_change, result,
        tuple(sorted(missing)), failed,
    )  # fmt: skip
