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

import redis
from apscheduler.schedulers.background import BackgroundScheduler

from balancer import ClusterClient
from controller.backlog import BacklogError, read_backlog
from controller.config import SlotpilotConfig, resolve_password
from controller.health import Capacity, ClusterView, build_view
from controller.migration import MigrationError
from controller.platform import Platform, PlatformError
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
from controller.scaling import NodeSource, ScaleReport, scale_shards
from controller.status import build_status
from controller.topology import ClusterNotStable, Connect, connector, fix

__all__ = ["Controller"]

log = logging.getLogger("slotpilot.controller")
decisions_log = logging.getLogger("slotpilot.decision")
migration_log = logging.getLogger("slotpilot.migration")


class Controller:
    """One controller: owns the probe, the policy states and the published table."""

    def __init__(
        self,
        cfg: SlotpilotConfig,
        platform: Platform,
        clock: Callable[[], float] = time.monotonic,
        metrics: Any = None,
        nodes: NodeSource | None = None,
    ) -> None:
        self.cfg = cfg
        self.platform = platform
        self.clock = clock
        self.metrics = metrics
        self.nodes = nodes  # where shard nodes come from; None: shard decisions are advice
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
        self._admin: Connect | None = None
        self.migrating = False
        self.scale_history: list[ScaleReport] = []
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
        shard_obs = ShardObservation(
            shards_now, view.utilization if view else None, gates, self.migrating
        )
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
        """Finish an interrupted shard change, then decide for every target and act on the
        decisions that can be carried out."""
        self._repair_shards()
        decided = self._decide()
        for decision, new_state in decided:
            acted = self._act(decision)
            if decision.target == "shards":
                if acted:
                    self.shard_state = new_state
                else:
                    self._fill_empty_primaries(decision)
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
        if decision.target == "shards":
            return self.nodes is not None and self.scale_shards(decision.desired)
        try:
            self.platform.set_replicas(decision.target, decision.desired)
        except PlatformError as exc:
            log.error("scaling %s to %d failed: %s", decision.target, decision.desired, exc)
            return False
        return True

    # -- shards ----------------------------------------------------------------------------

    def _seed(self) -> str:
        view = self.view
        if view is not None:
            for address, node in sorted(view.nodes.items()):
                if node.health.state == "up" and node.role == "primary":
                    return address
        return self.cfg.cluster.seeds[0]

    def _repair_shards(self) -> None:
        """What the cluster says, not memory: slots left open by a crash mid-migration are
        closed (``fix``: toward the side holding keys, else back) before anything is
        decided; the policy then takes the change up again from the resulting state."""
        view = self.view
        if self.nodes is None or view is None or self.migrating:
            return
        gates = {g.name for g in view.gates}
        if "open_slots" not in gates or gates - {"open_slots", "failover_recent"}:
            return  # nothing to repair, or the cluster is not sound enough to touch
        log.info(json.dumps({"event": "repair", "reason": "open slots"}))
        try:
            report = fix(self._admin_connect(), self._seed())
        except (redis.RedisError, OSError) as exc:
            log.error(json.dumps({"event": "repair_failed", "error": f"{exc}"}))
            return
        log.info(json.dumps({"event": "repaired", **asdict(report)}))
        self.probe_once()

    def _fill_empty_primaries(self, decision: Decision) -> None:
        """A primary without slots (a scale-out cut off between join and rebalance, or a
        node joined by hand) gets its share when the policy wants no change."""
        view = self.view
        if self.nodes is None or view is None or decision.direction != "none":
            return
        primaries = [n for n in view.nodes.values() if n.role == "primary" and n.node_id]
        empty = [n.address for n in primaries if n.node_id not in view.shard_utilization]
        if empty and not view.gates:
            log.info(json.dumps({"event": "repair", "empty_primaries": empty}))
            self.scale_shards(len(primaries))

    def _admin_connect(self) -> Connect:
        if self._admin is None:
            self._admin = connector(**self._connection)
        return self._admin

    def scale_shards(self, desired: int) -> bool:
        """Reshard to ``desired`` shards now (blocking); False if refused or failed, in
        which case the cluster is left consistent and the next cycle resumes."""
        assert self.nodes is not None
        self.migrating = True
        if self.metrics is not None:
            self.metrics.set_migration_in_progress(True)
        started = time.monotonic()
        try:
            report = scale_shards(
                self._admin_connect(), self._seed(), desired, self.nodes,
                replicas_per_shard=self.cfg.shards.replicas_per_shard,
                engine=self.cfg.shards.engine, progress=self._on_progress,
                on_draining=self._mark_draining,
            )  # fmt: skip
        except (ClusterNotStable, MigrationError, redis.RedisError, OSError, ValueError) as exc:
            log.error(json.dumps({"event": "scale_failed", "desired": desired,
                                  "error": f"{type(exc).__name__}: {exc}"}))  # fmt: skip
            return False
        finally:
            self.migrating = False
            with self._lock:
                self.draining = set()
            if self.metrics is not None:
                self.metrics.set_migration_in_progress(False)
                self.metrics.migration_duration.observe(time.monotonic() - started)
        self.scale_history.append(report)
        log.info(json.dumps({"event": "scaled", **report.as_dict()}, default=str))
        self.probe_once()
        return True

    def _mark_draining(self, addresses: list[str]) -> None:
        """Publish the leaving nodes with weight 0 before any of their slots move."""
        with self._lock:
            self.draining = set(addresses)
            if self.view is not None:
                self.routing = build_routing_table(self.view, self.draining, self.routing)

    def _on_progress(self, event: dict[str, Any]) -> None:
        migration_log.info(json.dumps(event))  # one line per batch and per step
        if self.metrics is not None and event.get("event") == "moved":
            self.metrics.migrated_slots.inc(event.get("slots", 0))
            self.metrics.migrated_keys.inc(event.get("keys", 0))

    def _log(self, decision: Decision, acted: bool) -> None:
        record = asdict(decision) | {"direction": decision.direction, "acted": acted}
        decisions_log.info(json.dumps(record, sort_keys=True))

    def status(self) -> dict[str, Any]:
        with self._lock:
            status = build_status(self.view, self.decisions, sorted(self.draining))
        status["backlogs"] = dict(self.backlogs)
        last = self.scale_history[-1].as_dict() if self.scale_history else None
        status["resharding"] = {"in_progress": self.migrating, "last": last}
        return status

    @property
    def ready(self) -> bool:
        return self.view is not None

    # -- running -------------------------------------------------------------------------

    def start(self) -> None:
        """Probe once now, then run probe and reconcile jobs in the background."""
        self.probe_once()
        # A reshard holds the reconcile job for seconds; the skipped runs are expected.
        logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)
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
