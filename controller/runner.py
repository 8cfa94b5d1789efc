"""What ``slotpilot run`` and ``plan`` are made of, per platform, built in one place.

A :class:`Assembly` is the platform-specific part of a controller: where consumer
replicas change (``platform``), where shard nodes come from (``nodes``), where the
intent record lives (``intent``), who may act (``leader``) and where Events go
(``events``). The local platform uses server and worker processes, a state file and the
cluster's own lease; Kubernetes uses the scale subresource, an annotation on the
StatefulSet, a Lease election in front of the cluster's lease, and core/v1 Events.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from controller.config import SlotpilotConfig
from controller.intent import IntentFile, IntentStore, intent_path

__all__ = ["Assembly", "assemble", "state_dir"]


def state_dir() -> str:
    """Where the local platform keeps node directories and the intent record:
    ``$SLOTPILOT_STATE_DIR``, else ``$XDG_STATE_HOME/slotpilot/nodes`` (by default
    ``~/.local/state/slotpilot/nodes``)."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                             "state")  # fmt: skip
    return os.environ.get("SLOTPILOT_STATE_DIR") or os.path.join(base, "slotpilot", "nodes")


@dataclass
class Assembly:
    platform: Any
    nodes: Any = None  # a NodeSource, or None: shard decisions are advice only
    intent: IntentStore | None = None
    leader: Callable[[], bool] | None = None
    leader_name: Callable[[], str | None] | None = None
    events: Callable[[str, str, str, bool], None] | None = None
    api_up: Callable[[], bool] | None = None  # Kubernetes: the API answered last time
    crash_status: Callable[[], dict[str, Any]] | None = None
    _start: list[Callable[[], Any]] = field(default_factory=list)
    _stop: list[Callable[[], Any]] = field(default_factory=list)
    _watchers: list[Callable[[Callable[[], str | None]], None]] = field(default_factory=list)

    def watch(self, stall_reason: Callable[[], str | None]) -> None:
        """Who elects stops leading while ``stall_reason`` names one (the watchdog)."""
        for watcher in self._watchers:
            watcher(stall_reason)

    def start(self) -> None:
        for step in self._start:
            step()

    def close(self) -> None:
        for step in reversed(self._stop):
            step()


def assemble(
    cfg: SlotpilotConfig,
    shard_nodes: Callable[[], Any],
    metrics: Any = None,
    acting: bool = True,
    api_host: str | None = None,
) -> Assembly:
    """The parts for ``cfg.shards.platform``. ``shard_nodes`` builds the local node source
    (called only for local autoscale); ``acting=False`` (``plan``) builds nothing that
    acts or elects; ``api_host`` points the Kubernetes client at an API URL (tests)."""
    if cfg.shards.platform == "kubernetes":
        return _kubernetes(cfg, metrics, acting, api_host)
    return _local(cfg, shard_nodes, metrics, acting)


def _local(
    cfg: SlotpilotConfig, shard_nodes: Callable[[], Any], metrics: Any, acting: bool
) -> Assembly:
    from controller.platform import LocalPlatform

    def crashed(target: str, code: int) -> None:
        if metrics is not None:
            metrics.consumer_failed_exits.labels(target=target).inc()

    platform = LocalPlatform(
        {c.name: c.command or ["true"] for c in cfg.consumers},
        env={c.name: c.env for c in cfg.consumers},
        on_crash=crashed,
    )
    parts = Assembly(platform, crash_status=platform.crash_status)
    parts._stop.append(platform.close)
    if acting and cfg.shards.autoscale:
        parts.nodes = shard_nodes()
        if cfg.shards.intent_file is None:  # survives restarts even without state_dir
            folder = cfg.shards.state_dir or state_dir()
            parts.intent = IntentFile(intent_path(folder, cfg.cluster.seeds[0]))
    return parts


def _kubernetes(cfg: SlotpilotConfig, metrics: Any, acting: bool, api_host: str | None) -> Assembly:
    from controller.platform.kubernetes.runtime import build_runtime

    runtime = build_runtime(cfg, host=api_host)
    statefulset = cfg.kubernetes.statefulset

    def post(target: str, reason: str, message: str, warning: bool) -> None:
        if not runtime.elector.is_leader:  # one voice: a follower's view is the leader's
            return
        if target == "shards":
            if statefulset:
                runtime.events.record("StatefulSet", statefulset, reason, message, warning)
        else:
            runtime.events.record("Deployment", target, reason, message, warning)

    def api_up() -> bool:
        up = runtime.api.reachable
        if metrics is not None:
            metrics.kubernetes_api_up.labels(namespace=runtime.namespace).set(1 if up else 0)
        return up

    elector = runtime.elector
    parts = Assembly(
        runtime.platform,
        nodes=runtime.nodes if cfg.shards.autoscale else None,
        intent=runtime.intent,
        leader=lambda: elector.is_leader,
        leader_name=lambda: elector.holder,
        events=post,
        api_up=api_up,
    )
    parts._watchers.append(elector.watch)
    if acting:
        parts._start.append(elector.start)
        parts._stop.append(runtime.close)  # releases the Lease: a successor acts at once
    else:
        parts._stop.append(lambda: runtime.api.client.close())  # type: ignore[no-untyped-call]
    return parts
