"""The ``/v1/status`` document and its terminal rendering (``slotpilot status``). Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, is_dataclass
from typing import Any

from controller.health import ClusterView

__all__ = ["build_status", "render_status"]


def _ratio(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    return value


def build_status(
    view: ClusterView | None, decisions: Mapping[str, Any], draining: Sequence[str] = ()
) -> dict[str, Any]:
    """Nodes, shards, utilization, gates and the last decision per target."""
    if view is None:
        return {"ready": False, "nodes": [], "shards": [], "gates": [], "decisions": {}}
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
    }


def _pct(value: float | None) -> str:
    return "   ?" if value is None else f"{value * 100:3.0f}%"


def render_status(status: Mapping[str, Any]) -> str:
    """A readable table of shards, nodes, utilization, health, gates and decisions."""
    if not status.get("ready"):
        return "controller not ready: no probe cycle completed yet\n"
    lines = [
        f"cluster utilization {_pct(status['utilization'])} (max {_pct(status['max_utilization'])})"
        f", {len(status['shards'])} shards, {len(status['nodes'])} nodes, epoch {status['epoch']}",
        "gates: " + (", ".join(f"{g['name']} ({g['detail']})" for g in status["gates"]) or "none"),
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
