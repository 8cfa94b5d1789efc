"""The ``/v1/status`` document and its terminal rendering (``slotpilot status``). Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, is_dataclass
from typing import Any

from controller.health import ClusterView, shards_short_of_replicas

__all__ = ["build_status", "render_status"]


def _ratio(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    return value


def build_status(
    view: ClusterView | None,
    decisions: Mapping[str, Any],
    draining: Sequence[str] = (),
    lease: Mapping[str, Any] | None = None,
    intent: Any = None,
    now: float | None = None,
) -> dict[str, Any]:
    """Nodes, shards, utilization, gates and the last decision per target; who holds the
    cluster's lease, the interrupted change being finished, shards without a replica and
    failed slot-less nodes (with how long they have been failing, given ``now``)."""
    common = {"lease": dict(lease) if lease is not None else None, "intent": _plain(intent)}
    if view is None:
        return {"ready": False, "nodes": [], "shards": [], "gates": [], "decisions": {},
                **common}  # fmt: skip
    at = view.taken_at if now is None else now
    nodes = [
        {
            "address": n.address,
            "node_id": n.node_id,
            "role": n.role,
            "shard": n.shard,
            "health": n.health.state,
            "last_error": n.health.last_error,
            "utilization": _ratio(n.utilization),
            "signals": {k: round(v, 4) for k, v in n.signals.items()},
            "latency_ms": None
            if n.sample is None or n.sample.latency_seconds is None
            else round(n.sample.latency_seconds * 1000, 3),
            "draining": n.address in draining,
        }
        for n in sorted(view.nodes.values(), key=lambda n: (n.shard or "", n.role != "primary"))
    ]
    shards = [
        {
            "primary": p.address,
            "node_id": p.node_id,
            "utilization": _ratio(view.shard_utilization.get(p.node_id or "")),
            "replicas": [
                n.address
                for n in view.nodes.values()
                if n.role == "replica" and n.shard == p.node_id
            ],
        }
        for p in sorted(view.primaries, key=lambda p: p.address)
        if p.node_id in view.shard_utilization
    ]
    return {
        "ready": True,
        "taken_at": view.taken_at,
        "utilization": _ratio(view.utilization),
        "max_utilization": _ratio(view.max_utilization),
        "epoch": view.epoch,
        "gates": [{"name": g.name, "detail": g.detail} for g in view.gates],
        "shards": shards,
        "nodes": nodes,
        "decisions": {k: _plain(v) for k, v in decisions.items()},
        "shards_without_replica": shards_short_of_replicas(view),
        "failed_nodes": {n: round(at - t, 1) for n, t in view.failed_nodes.items()},
        **common,
    }


def _pct(value: float | None) -> str:
    return "   ?" if value is None else f"{value * 100:3.0f}%"


def _lease_lines(status: Mapping[str, Any]) -> list[str]:
    """Who acts on the cluster, and the structural problems waiting for it."""
    lines = []
    lease = status.get("lease") or {}
    if lease.get("holding"):
        lines.append("lease: held by this controller")
    elif lease.get("holder"):
        left = lease.get("expires_in") or 0
        lines.append(f"lease: held by {lease['holder']} (expires in {left:.0f} s); "
                     "this controller only observes")  # fmt: skip
    if status.get("intent"):
        i = status["intent"]
        lines.append(f"finishing interrupted {i['kind']} {i['from_shards']} -> {i['to_shards']}")
    if status.get("shards_without_replica"):
        lines.append("shard without replica: " + ", ".join(status["shards_without_replica"]))
    for node_id, seconds in sorted((status.get("failed_nodes") or {}).items()):
        lines.append(f"failed node {node_id[:8]} (owns no slots) for {seconds:.0f}s")
    return lines


def render_status(status: Mapping[str, Any]) -> str:
    """A readable table of shards, nodes, utilization, health, gates and decisions."""
    if not status.get("ready"):
        return "controller not ready: no probe cycle completed yet\n"
    lines = [
        f"cluster utilization {_pct(status['utilization'])} (max {_pct(status['max_utilization'])})"
        f", {len(status['shards'])} shards, {len(status['nodes'])} nodes, epoch {status['epoch']}",
        "gates: " + (", ".join(f"{g['name']} ({g['detail']})" for g in status["gates"]) or "none"),
        *_lease_lines(status),
        "",
        f"{'NODE':<22} {'ROLE':<8} {'SHARD':<9} {'HEALTH':<8} {'UTIL':>5} {'LATENCY':>9}  NOTE",
    ]
    for node in status["nodes"]:
        latency = "-" if node["latency_ms"] is None else f"{node['latency_ms']:.2f}ms"
        note = "draining" if node["draining"] else (node["last_error"] or "")
        lines.append(
            f"{node['address']:<22} {node['role']:<8} {(node['shard'] or '-')[:8]:<9} "
            f"{node['health']:<8} {_pct(node['utilization']):>5} {latency:>9}  {note}"
        )
    if status["decisions"]:
        lines += ["", f"{'TARGET':<16} {'CURRENT':>7} {'DESIRED':>7}  REASON"]
        for target, d in sorted(status["decisions"].items()):
            blocked = (
                f" [blocked: {', '.join(d.get('blocked_by') or ())}]" if d.get("blocked_by") else ""
            )
            counts = f"{d.get('current', '?'):>7} {d.get('desired', '?'):>7}"
            lines.append(f"{target:<16} {counts}  {d.get('reason', '')}{blocked}")
    resharding = status.get("resharding") or {}
    if resharding.get("in_progress"):
        lines += ["", "resharding: in progress"]
    elif resharding.get("last"):
        last = resharding["last"]
        lines += ["", f"last reshard: {last['before']} -> {last['after']} shards in "
                      f"{last['seconds']:.1f}s, {last['slots_moved']} slots, "
                      f"{last['keys_moved']} keys moved"]  # fmt: skip
    return "\n".join(lines) + "\n"
