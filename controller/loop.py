"""The controller loop: probe → view → decide → act → publish.

:class:`Controller` holds the state between cycles and exposes each step as a method,
so tests drive it cycle by cycle; :meth:`Controller.start` runs the steps as APScheduler
jobs (``max_instances=1`` and coalescing: a slow cycle is never run twice at once, and a
missed one is not replayed in a burst). Every decision, taken or blocked, is logged as
one JSON line with its reason.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler

from balancer import ClusterClient
from controller.backlog import BacklogError, read_backlog
from controller.config import SlotpilotConfig, resolve_password
from controller.health import Capacity, ClusterView, build_view
from controller.platform import Platform, PlatformError
from controller.platform.local import SHARDS
from controller.policy import (
    ConsumerObservation,
    ConsumerPolicyState,
    Decision,
    ShardObservation,
    ShardPolicyState,
    decide_consumers,
    decide_shards,
)
from controller.probe import Probe
from controller.routing import RoutingTable, build_routing_table
from controller.status import build_status

__all__ = ["Controller"]

log = logging.getLogger("slotpilot.controller")
decisions_log = logging.getLogger("slotpilot.decision")


class Controller:
    """One controller: owns the probe, the policy states and the published table."""

    def __init__(
        self,
        cfg: SlotpilotConfig,
        platform: Platform,
        clock: Callable[[], float] = time.monotonic,
        metrics: Any = None,
        act_on_shards: bool = False,
    ) -> None:
        self.cfg = cfg
        self.platform = platform
        self.clock = clock
        self.metrics = metrics
        self.act_on_shards = act_on_shards  # shard changes need slot migration (topology)
        tls = cfg.cluster.tls
        connection: dict[str, Any] = {
            "username": cfg.cluster.username,
            "password": resolve_password(cfg),
        }
        if tls.enabled:
            connection.update(
                ssl=True,
                ssl_ca_certs=tls.ca_file,
                ssl_certfile=tls.cert_file,
                ssl_keyfile=tls.key_file,
                ssl_cert_reqs="required" if tls.verify else "none",
            )
        self._connection = connection
        self.probe = Probe(cfg.cluster.seeds, timeout=cfg.probe.timeout_seconds, **connection)
        self._client: ClusterClient | None = None
        capacity = cfg.shards.capacity
        self.capacity = Capacity(capacity.memory_bytes, capacity.ops_per_second, capacity.cpu_cores)
        self.view: ClusterView | None = None
        self.routing: RoutingTable | None = None
        self.draining: set[str] = set()
        self.shard_state = ShardPolicyState()
        self.consumer_states = {c.name: ConsumerPolicyState() for c in cfg.consumers}
        self.decisions: dict[str, Decision] = {}
        self.backlogs: dict[str, float | None] = {}
        self._lock = threading.Lock()
        self._scheduler: BackgroundScheduler | None = None

    # -- steps ---------------------------------------------------------------------------

    def probe_once(self) -> ClusterView:
        """Probe every node and publish the new view and routing table."""
        result = self.probe.run()
        with self._lock:
            self.view = build_view(
                result, self.view, self.capacity, self.cfg.probe.rise, self.cfg.probe.fall,
                self.clock(), self.cfg.shards.node_timeout_ms,
            )  # fmt: skip
            self.routing = build_routing_table(self.view, self.draining, self.routing)
            view = self.view
        if self.metrics is not None:
            self.metrics.observe_probe(result)
            self.metrics.observe_view(view)
            self.metrics.observe_breakers({a: b.state for a, b in self.probe._breakers.items()})
        return view

    def client(self) -> ClusterClient:
        if self._client is None:
            self._client = ClusterClient(
                self.cfg.cluster.seeds,
                socket_timeout=self.cfg.probe.timeout_seconds,
                **self._connection,
            )
        return self._client

    def _backlog(self, name: str) -> float | None:
        consumer = next(c for c in self.cfg.consumers if c.name == name)
        try:
            value: float | None = read_backlog(self.client(), consumer.backlog_source())
        except (BacklogError, Exception) as exc:  # the source failing means hold, not crash
            log.warning("backlog of %s unreadable: %s", name, exc)
            value = None
        self.backlogs[name] = value
        if self.metrics is not None:
            self.metrics.observe_backlog(name, value)
        return value

    def plan(self) -> list[Decision]:
        """What the controller would do now and why, without acting or changing state."""
        return [d for d, _ in self._decide()]

    def _decide(self) -> list[tuple[Decision, Any]]:
        now = self.clock()
        out: list[tuple[Decision, Any]] = []
        view = self.view
        shards_now = len(view.shard_utilization) if view is not None else 0
        gates = tuple(g.name for g in view.gates) if view is not None else ("no_probe_yet",)
        shard_obs = ShardObservation(shards_now, view.utilization if view else None, gates)
        out.append(decide_shards(self.cfg.shards.policy(), self.shard_state, shard_obs, now))
        for consumer in self.cfg.consumers:
            try:
                current = self.platform.get_replicas(consumer.name)
            except PlatformError as exc:
                log.warning("replicas of %s unreadable: %s", consumer.name, exc)
                continue
            obs = ConsumerObservation(current, self._backlog(consumer.name))
            out.append(
                decide_consumers(consumer.policy(), self.consumer_states[consumer.name], obs, now)
            )
        return out

    def reconcile_once(self) -> list[Decision]:
        """Decide for every target and act on the decisions that can be carried out."""
        decided = self._decide()
        for decision, new_state in decided:
            acted = self._act(decision)
            if decision.target == "shards":
                if acted:
                    self.shard_state = new_state
            elif acted or decision.direction == "none":
                self.consumer_states[decision.target] = new_state
            self.decisions[decision.target] = decision
            self._log(decision, acted)
            if self.metrics is not None:
                self.metrics.observe_decision(decision)
        return [d for d, _ in decided]

    def _act(self, decision: Decision) -> bool:
        if decision.direction == "none":
            return False
        if decision.target == "shards" and not self.act_on_shards:
            return False
        target = SHARDS if decision.target == "shards" else decision.target
        try:
            self.platform.set_replicas(target, decision.desired)
        except PlatformError as exc:
            log.error("scaling %s to %d failed: %s", decision.target, decision.desired, exc)
            return False
        return True

    def _log(self, decision: Decision, acted: bool) -> None:
        record = asdict(decision) | {"direction": decision.direction, "acted": acted}
        decisions_log.info(json.dumps(record, sort_keys=True))

    def status(self) -> dict[str, Any]:
        with self._lock:
            status = build_status(self.view, self.decisions, sorted(self.draining))
        status["backlogs"] = dict(self.backlogs)
        return status

    @property
    def ready(self) -> bool:
        return self.view is not None

    # -- running -------------------------------------------------------------------------

    def start(self) -> None:
        """Probe once now, then run probe and reconcile jobs in the background."""
        self.probe_once()
        scheduler = BackgroundScheduler()
        interval = self.cfg.probe.interval_seconds
        common = {"max_instances": 1, "coalesce": True, "misfire_grace_time": None}
        scheduler.add_job(
            self._safe(self.probe_once), "interval", seconds=interval, id="probe", **common
        )
        scheduler.add_job(
            self._safe(self.reconcile_once), "interval", seconds=interval, id="reconcile", **common
        )
        scheduler.start()
        self._scheduler = scheduler

    def _safe(self, step: Callable[[], Any]) -> Callable[[], None]:
        def run() -> None:
            try:
                step()
            except Exception:  # a step failing must not stop the loop
                log.exception("%s failed", step.__name__)

        return run

    def stop(self) -> None:
        """Stop scheduling and wait for a running step to finish (never mid-step)."""
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
            self._scheduler = None
        self.probe.close()
        if self._client is not None:
            self._client.close()
