"""The controller loop: probe → view → decide → act → publish.

:class:`Controller` holds the state between cycles and exposes each step as a method,
so tests drive it cycle by cycle; :meth:`Controller.start` runs the steps as APScheduler
jobs (``max_instances=1`` and coalescing: a slow cycle is never run twice at once, and a
missed one is not replayed in a burst).

One actor per cluster: every controller probes and publishes, but only the holder of
the cluster's lease (:mod:`controller.lease`) acts; the others say who holds it and
take over when it expires. Before a shard change its purpose is written down
(:mod:`controller.intent`), so a restarted controller finishes an interrupted change
instead of guessing from a half-moved cluster. A failing step is logged and counted
(``slotpilot_errors_total{stage}``) and never stops the other targets; a shard change
that keeps failing backs off. A decision line is logged when the decision or its reason
changes, not every cycle.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any

import redis
from apscheduler.schedulers.background import BackgroundScheduler

from balancer import ClusterClient
from controller.backlog import BacklogError, read_backlog
from controller.config import SlotpilotConfig, resolve_password
from controller.health import Capacity, ClusterView, build_view, shards_short_of_replicas
from controller.intent import (
    ChangeKind,
    IntentError,
    IntentFile,
    IntentRecord,
    IntentStore,
    PendingChange,
    shift_clock,
)
from controller.lease import ClusterLease, LeaseState
from controller.migration import MigrationError, MigrationInterrupted
from controller.platform import Platform, PlatformError
from controller.policy import (
    ConsumerObservation,
    ConsumerPolicyState,
    Decision,
    ShardObservation,
    ShardPolicyState,
    decide_consumers,
    decide_shards,
    record_shard_outcome,
    resume_decision,
    retry_backoff,
)
from controller.probe import Probe
from controller.routing import RoutingTable, build_routing_table, replica_lag
from controller.scaling import NodeSource, ScaleReport, scale_shards
from controller.status import build_status
from controller.structure import repair_structure
from controller.topology import ClusterNotStable, Connect, ForeignNode, connector, fix, join
from controller.watchdog import RESHARD_STEP_SECONDS, stall_limit, stalled

__all__ = ["Controller", "EventSink"]

# (target: "shards" or a consumer name, reason, message, warning)
EventSink = Callable[[str, str, str, bool], None]

log = logging.getLogger("slotpilot.controller")
decisions_log = logging.getLogger("slotpilot.decision")
migration_log = logging.getLogger("slotpilot.migration")
# PlatformError: pods that never became Ready, a StatefulSet that cannot remove the
# leaving ordinals, claims it may not delete — a failed change, said so as any other.
SCALE_ERRORS = (
    ClusterNotStable,
    MigrationError,
    PlatformError,
    redis.RedisError,
    OSError,
    ValueError,
)
# Lines of ``repair_structure``'s report, by the repair they stand for (metrics).
_REPAIR_KINDS = (("forgot failed node", "node_forgotten"),
                 (" as a replica of shard ", "node_started"),
                 (" now replicates shard ", "replica_attached"))  # fmt: skip
_NUMBER = re.compile(r"\d+(\.\d+)?")
# Slot shares further than this from the even share are rebalanced while holding (the
# rebalance itself aims within 2 %, so a balanced cluster never churns).
_BALANCE_TOLERANCE = 0.05


def _keys_in(info: Any) -> int:
    """Keys of every database, from a parsed ``INFO`` (its keyspace section)."""
    return sum(int(db.get("keys", 0)) for name, db in info.items()
               if name.startswith("db") and isinstance(db, dict))  # fmt: skip


def slot_skew(view: ClusterView) -> float:
    """The largest distance of a slot-owning primary's slot count from the even share,
    as a fraction of that share (0: perfectly even; pure, from the probe's entries)."""
    probe = view.probe
    if probe is None:
        return 0.0
    counts = [sum(hi - lo + 1 for lo, hi in e.slots) for e in probe.entries
              if e.is_primary and e.slots and not e.flags & {"fail", "fail?"}]  # fmt: skip
    if len(counts) < 2:
        return 0.0
    even = sum(counts) / len(counts)
    return max(abs(c - even) for c in counts) / even


class Controller:
    """One controller: owns the probe, the policy states and the published table."""

    def __init__(
        self,
        cfg: SlotpilotConfig,
        platform: Platform,
        clock: Callable[[], float] = time.monotonic,
        metrics: Any = None,
        nodes: NodeSource | None = None,
        lease: ClusterLease | None = None,
        intent: IntentStore | None = None,
        wall: Callable[[], float] = time.time,
        leader: Callable[[], bool] | None = None,
        leader_name: Callable[[], str | None] | None = None,
        events: EventSink | None = None,
    ) -> None:
        self.cfg = cfg
        self.platform = platform
        self.clock, self.wall = clock, wall
        self.metrics = metrics
        self.nodes = nodes  # where shard nodes come from; None: shard decisions are advice
        if nodes is not None:
            nodes.keep_going = self.may_act  # its waits give up once we may no longer act
        tls = cfg.cluster.tls
        connection: dict[str, Any] = {
            "username": cfg.cluster.username,
            "password": resolve_password(cfg),
        }
        connection.update(tls.redis_options())  # hostname checking explicit, warned when off
        self._connection = connection
        self._admin: Connect | None = None
        self.migrating = False
        self._stopping = False
        self.scale_history: list[ScaleReport] = []
        self.last_scale_error: dict[str, Any] | None = None  # the refusing gate, if any
        self.probe = Probe(cfg.cluster.seeds, timeout=cfg.probe.timeout_seconds, **connection)
        self._client: ClusterClient | None = None
        self._client_lock = threading.Lock()
        capacity = cfg.shards.capacity
        self.capacity = Capacity(capacity.memory_bytes, capacity.ops_per_second, capacity.cpu_cores)
        self.view: ClusterView | None = None
        self.probed_at = datetime.now(UTC)  # wall-clock time of the view, for people
        self.routing: RoutingTable | None = None
        self.draining: set[str] = set()
        self.shard_state = ShardPolicyState()
        self.consumer_states = {c.name: ConsumerPolicyState() for c in cfg.consumers}
        self.decisions: dict[str, Decision] = {}
        self.backlogs: dict[str, float | None] = {}
        self._lock = threading.Lock()
        self._probe_lock = threading.Lock()  # two probe jobs never run at once
        self._scheduler: BackgroundScheduler | None = None
        self._own_change = False  # our reshard ran since the last view: epoch bumps are ours
        # ... and for a while after a MEET or REPLICATE of ours: the epoch bump it causes
        # can reach the probe a cycle later (gossip), and must not read as a failover
        self._own_change_until = -math.inf
        self._own_change_ended_at: float | None = None
        self._logged: dict[str, tuple[Any, ...]] = {}
        self._structure_failures, self._structure_failed_at = 0, 0.0
        self.lease = lease
        self.lease_state = LeaseState()
        # On Kubernetes, the Lease election comes first: only its leader takes the
        # cluster's own lease (None: every controller may try for it).
        self.leader, self._leader_name = leader, leader_name
        self.events = events  # Kubernetes Events (None: the log is the record)
        # the watchdog's: per running stage (shards, consumers), its last progress
        self._stage_progress: dict[str, float] = {}
        shards = cfg.shards
        self.intent_store = intent or IntentFile.configured(
            shards.intent_file, shards.state_dir, cfg.cluster.seeds[0]
        )
        self.intent = IntentRecord()
        self._intent_error: str | None = None
        self._outside_change: str | None = None  # the workload below the cluster: hold
        self.pending_pods: list[str] = []  # shard pods that cannot start, as last seen
        self._keys_seen: dict[str, int] = {}  # node id -> keys, last seen while it answered
        self._away: dict[str, int] = {}  # node id -> keys, of the nodes an episode took away
        self._load_intent()

    # -- intent --------------------------------------------------------------------------

    def _load_intent(self) -> bool:
        """Read the intent record (the change in flight, the cooldown clocks): at start,
        and before every shard decision while acting — another controller may have
        written it since. False (and the ``intent_unreadable`` gate) while it cannot be
        read: no shard change starts without knowing what is in flight."""
        if self.intent_store is None:
            return True
        try:
            record = self.intent_store.load()
        except IntentError as exc:
            if self._intent_error is None:
                log.error(json.dumps({"event": "intent_unreadable", "error": str(exc)}))
            self._intent_error = str(exc)
            self._count_error("intent")
            return False
        self._intent_error = None
        changed = record.change != self.intent.change
        self.intent = record
        wall, clock = self.wall(), self.clock()
        up = shift_clock(record.last_up_at, wall, clock)
        down = shift_clock(record.last_down_at, wall, clock)
        self.shard_state = replace(self.shard_state, last_up_at=up, last_down_at=down)
        if record.change is not None and changed:
            log.info(json.dumps({"event": "intent_loaded", "change": asdict(record.change)}))
        return True

    def _save_intent(self, change: PendingChange | None) -> None:
        """Write the change in flight (None: none) and the cooldown clocks, before acting."""
        state, wall, clock = self.shard_state, self.wall(), self.clock()
        self.intent = IntentRecord(shift_clock(state.last_up_at, clock, wall),
                                   shift_clock(state.last_down_at, clock, wall), change,
                                   self.lease.owner if self.lease else None)  # fmt: skip
        if self.intent_store is not None:
            self.intent_store.save(self.intent)  # an error here stops the change: no record

    # -- lease ---------------------------------------------------------------------------

    def hold_lease(self) -> bool:
        """Renew or take the cluster's lease; True while this controller may act."""
        before = self.lease_state
        if (self.leader is not None and not self.leader()) or self.stall_reason():
            return self._follow(before)  # stalled: let a live replica act meanwhile
        try:
            if self.lease is None:
                ttl = self.cfg.shards.lease_ttl_seconds
                self.lease = ClusterLease(self.client(), ttl_seconds=ttl)
            state = self.lease.hold()
        except Exception as exc:  # unreachable: act only while the lease is surely ours
            self._count_error("lease")
            elected = self.leader is not None  # on Kubernetes the Lease election decides
            log.warning(json.dumps({"event": "lease_unknown", "error": f"{exc}",
                                    "acting_as_elected_leader": elected}))  # fmt: skip
            # The in-cluster lock keeps two processes off one cluster where nothing else
            # does; under a Lease election it is a second guard, and a cluster that is down
            # (the case that needs the operator most) must not silence the elected leader.
            held = self.lease is not None and self.lease.held
            state = replace(before, holding=held or elected)
        if state.holding != before.holding:
            event = "lease_acquired" if state.holding else "lease_not_held"
            log.info(json.dumps({"event": event, **asdict(state)}))
        self.lease_state = state
        if self.metrics is not None:
            self.metrics.set_leader(state.holding)
        return state.holding

    def _follow(self, before: LeaseState) -> bool:
        """Not the elected leader: hand the cluster's lease back if we hold it, act on
        nothing, and name the leader."""
        if self.lease is not None and before.holding:
            try:
                self.lease.release()
            except Exception as exc:  # it expires by itself within its TTL
                log.warning(json.dumps({"event": "lease_not_released", "error": f"{exc}"}))
        holder = self._leader_name() if self._leader_name is not None else None
        state = LeaseState(holding=False, holder=holder or "another slotpilot replica")
        if before.holding:
            log.info(json.dumps({"event": "leadership_lost", **asdict(state)}))
        self.lease_state = state
        if self.metrics is not None:
            self.metrics.set_leader(False)
        return False

    # -- steps ---------------------------------------------------------------------------

    def probe_once(self) -> ClusterView:
        """Probe every node and publish the new view and routing table (one at a time)."""
        with self._probe_lock:
            own = self.migrating or self._own_change or self.clock() < self._own_change_until
            result = self.probe.run()
            with self._lock:
                previous = self.view
                self.view = build_view(
                    result, self.view, self.capacity, self.cfg.probe.rise, self.cfg.probe.fall,
                    self.clock(), self.cfg.shards.node_timeout_ms, own_change=own,
                )  # fmt: skip
                lag = self.cfg.routing.max_replica_lag_seconds
                self.routing = build_routing_table(self.view, self.draining, self.routing, lag)
                view = self.view
                self.probed_at = datetime.now(UTC)
            if not self.migrating:
                self._own_change = False
        if previous is not None and self.lease_state.holding:  # one voice: the leader's
            self._health_events(previous, view)
        if self.metrics is not None:
            self.metrics.observe_probe(result)
            self.metrics.observe_view(view)
            states = {e.address: e.state for e in self.routing.nodes}
            self.metrics.observe_replicas({
                address: (node.shard or "", replica_lag(node), states.get(address) == "stale")
                for address, node in view.nodes.items() if node.role == "replica"
            })  # fmt: skip
            self.metrics.observe_breakers({a: b.state for a, b in self.probe._breakers.items()})
        return view

    def _health_events(self, previous: ClusterView, view: ClusterView) -> None:
        """NodeDown / NodeRecovered Events when a node's rise/fall state flips."""
        for address, node in view.nodes.items():
            old = previous.nodes.get(address)
            if old is None or old.health.state == node.health.state:
                continue
            what = f"{address} ({node.role}{f' of shard {node.shard[:8]}' if node.shard else ''})"
            if node.health.state == "down":
                why = node.health.last_error or "not answering"
                self._event("shards", "NodeDown", f"{what} is down: {why}", warning=True)
            elif old.health.state == "down" and node.health.state == "up":
                self._event("shards", "NodeRecovered", f"{what} answers again")

    def client(self) -> ClusterClient:
        with self._client_lock:  # the shard and consumer jobs share one client
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
        return [d for d, _ in (self._decide_shards(), *self._decide_consumers())]

    def _decide_shards(self) -> tuple[Decision, ShardPolicyState]:
        now = self.clock()
        view = self.view
        shards_now = len(view.shard_utilization) if view is not None else 0
        gates = tuple(g.name for g in view.gates) if view is not None else ("no_probe_yet",)
        gates += ("migration_in_progress",) if self.migrating else ()
        gates += ("intent_unreadable",) if self._intent_error is not None else ()
        gates += ("statefulset_below_cluster",) if self._outside_change is not None else ()
        change = self.intent.change
        policy = self.cfg.shards.policy()
        if change is not None and self.nodes is not None:
            retry = (policy.retry_base_seconds, policy.retry_max_seconds)
            bounds = (policy.min_shards, policy.max_shards)
            resumed = resume_decision(change, shards_now, gates, self.shard_state, retry, now,
                                      bounds)  # fmt: skip
            return resumed, self.shard_state
        obs = ShardObservation(
            shards_now, view.utilization if view else None, gates, False,
            view.missing_signals if view else (), self._own_change_ended_at,
        )  # fmt: skip
        return decide_shards(policy, self.shard_state, obs, now)

    def _decide_consumers(self) -> list[tuple[Decision, ConsumerPolicyState]]:
        now = self.clock()
        out = []
        for consumer in self.cfg.consumers:
            try:
                current = self.platform.get_replicas(consumer.name)
            except PlatformError as exc:
                log.warning("replicas of %s unreadable: %s", consumer.name, exc)
                continue
            obs = ConsumerObservation(current, self._backlog(consumer.name))
            state = self.consumer_states[consumer.name]
            out.append(decide_consumers(consumer.policy(), state, obs, now))
        return out

    def reconcile_once(self) -> list[Decision]:
        """Hold the lease, mend what a crash or a dead node left, then decide for every
        target and act on what can be carried out. Shards and consumers are separate
        stages: an error in one is logged, counted and does not stop the other (and when
        the controller runs, separate jobs: a reshard never delays consumer scaling)."""
        shard = self.reconcile_shards_once()
        return ([shard] if shard is not None else []) + self.reconcile_consumers_once()

    def reconcile_shards_once(self) -> Decision | None:
        """The shard stage: hold the lease, mend, decide and reshard (which may take long).
        The watchdog times this stage, the one that can wedge."""
        self._stage_progress["shards"] = self.clock()  # the watchdog times it from here
        try:
            return self._reconcile_shard_cycle()
        finally:
            self._stage_progress.pop("shards", None)

    def _reconcile_shard_cycle(self) -> Decision | None:
        holding = self.hold_lease()
        if holding:
            self._guard("workload", self._check_workload)
        if holding and self._outside_change is None:
            self._guard("repair", self._repair_shards)
            self._guard("structure", self._rejoin_strays)
            self._guard("structure", self._repair_structure)
        decision: Decision | None = self._guard("shards", lambda: self._reconcile_shards(holding))
        return decision

    def reconcile_consumers_once(self) -> list[Decision]:
        """The consumer stage, on its own schedule: acts while this controller is the
        leader and holds the cluster's lease (as last renewed by the lease job), even
        while the shard stage is busy with a reshard."""
        holding = self.lease_state.holding and (self.leader is None or bool(self.leader()))
        self._stage_progress["consumers"] = self.clock()  # watched as the shard stage is
        try:
            consumers = self._guard("consumers", lambda: self._reconcile_consumers(holding))
        finally:
            self._stage_progress.pop("consumers", None)
        return list(consumers or [])

    def _progressed(self) -> None:
        """A reshard step or batch done: the shard stage is moving."""
        if "shards" in self._stage_progress:
            self._stage_progress["shards"] = self.clock()

    def stall_reason(self) -> str | None:
        """Why the reconcile loop counts as stuck (``/healthz`` fails, leadership is
        handed back): a stage (shards, consumers) has run without progress for too long.
        None otherwise (:mod:`controller.watchdog`)."""
        probe = self.cfg.probe
        now = self.clock()
        for stage, at in list(self._stage_progress.items()):
            reshard_wait = 0.0
            if stage == "shards" and self.migrating:
                step = float(getattr(self.nodes, "ready_timeout", 0.0))
                reshard_wait = max(step, RESHARD_STEP_SECONDS)
            limit = stall_limit(probe.interval_seconds, probe.stall_cycles, reshard_wait)
            reason = stalled(at, now, limit)
            if reason is not None:
                return f"{reason} ({stage} stage)"
        return None

    def _reconcile_shards(self, holding: bool) -> Decision:
        if holding and self.nodes is not None:
            self._load_intent()  # what another controller wrote since: never act on a stale one
        elif not holding and self.intent_store is not None and self._load_intent():
            self._follow_draining()
        decision, new_state = self._decide_shards()
        old, now = self.shard_state, self.clock()
        kept_clocks = replace(new_state, last_up_at=old.last_up_at, last_down_at=old.last_down_at)
        # an interrupted change is finished even when the slot owners already match its
        # target (leaving nodes drained but not yet forgotten)
        change = self.intent.change if self.nodes is not None else None
        wants = decision.direction != "none" or (change is not None and not decision.blocked_by)
        acted = False
        if not wants or self.nodes is None:
            self.shard_state = new_state if decision.direction == "none" else kept_clocks
        elif not holding:
            self.shard_state = kept_clocks
            decision = self._not_holding(decision)
        else:
            acted = self._guard("shards", lambda: self.scale_shards(decision.desired)) is True
            if acted and change is not None and change.to_shards < change.from_shards:
                new_state = replace(new_state, last_down_at=now)
            elif acted and change is not None and change.to_shards > change.from_shards:
                new_state = replace(new_state, last_up_at=now)
            self.shard_state = record_shard_outcome(new_state if acted else kept_clocks, acted, now)
            if acted:
                self._guard("intent", lambda: self._save_intent(None))
        if not wants and holding and self.intent.change is None:
            self._guard("repair", lambda: self._fill_empty_primaries(decision))
        self._publish(decision, acted)
        return decision

    def _reconcile_consumers(self, holding: bool) -> list[Decision]:
        out = []
        for decision, new_state in self._decide_consumers():
            acted = False
            if decision.direction != "none" and not holding:
                decision = self._not_holding(decision)
            elif decision.direction != "none":
                outcome = self._guard("consumers", partial(self._set_replicas, decision))
                acted = outcome is True
                if isinstance(outcome, str):  # refused: the status and an Event say why
                    why = f"{decision.reason}; not applied: {outcome}"
                    decision = replace(decision, reason=why,
                                       blocked_by=(*decision.blocked_by, "platform"))  # fmt: skip
            if acted or decision.direction == "none":
                self.consumer_states[decision.target] = new_state
            self._publish(decision, acted)
            out.append(decision)
        return out

    def _not_holding(self, decision: Decision) -> Decision:
        left, holder = self.lease_state.expires_in, self.lease_state.holder
        expires = "" if left is None else f" (lease expires in {left:.0f} s)"
        why = f"{decision.reason}; not acting: cluster is managed by {holder}{expires}"
        return replace(decision, reason=why, blocked_by=(*decision.blocked_by, "lease"))

    def _set_replicas(self, decision: Decision) -> bool | str:
        """Carry a consumer decision out: True when done, else why the platform refused."""
        try:
            self.platform.set_replicas(decision.target, decision.desired)
        except PlatformError as exc:
            log.error("scaling %s to %d failed: %s", decision.target, decision.desired, exc)
            return str(exc)
        return True

    def _guard(self, stage: str, step: Callable[[], Any]) -> Any:
        """Run one stage; an exception is logged with its stage and counted, never raised."""
        try:
            return step()
        except Exception as exc:
            self._count_error(stage)
            log.exception(json.dumps({"event": "stage_failed", "stage": stage, "error": f"{exc}"}))
            return None

    def _count_repairs(self, kind: str, count: int) -> None:
        if self.metrics is not None:
            self.metrics.count_repair(kind, count)

    def _count_error(self, stage: str) -> None:
        if self.metrics is not None:
            self.metrics.count_error(stage)

    def _publish(self, decision: Decision, acted: bool) -> None:
        self.decisions[decision.target] = decision
        self._log(decision, acted)
        if self.metrics is not None:
            self.metrics.observe_decision(decision)

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
        self._own_change = True
        try:
            report = fix(self._admin_connect(), self._seed())
        except (redis.RedisError, OSError) as exc:
            self._count_error("repair")
            log.error(json.dumps({"event": "repair_failed", "error": f"{exc}"}))
            return
        log.info(json.dumps({"event": "repaired", **asdict(report)}))
        self._count_repairs("open_slots", 1 if report.finished or report.rolled_back else 0)
        self.probe_once()

    def _repair_structure(self) -> None:
        """Forget failed nodes that own no slots once their grace period is over, and give
        shards short of replicas new ones (``structure.repair_structure``). Every attempt
        that does not leave the structure sound widens the wait before the next one."""
        view = self.view
        if self.nodes is None or view is None or self.migrating or view.gates:
            return
        if self.intent.change is not None:
            return  # an interrupted change comes first
        policy, now = self.cfg.shards, self.clock()
        failed = view.failed_nodes
        short = shards_short_of_replicas(view, policy.replicas_per_shard)
        grace = policy.forget_failed_after_seconds
        expired = tuple(sorted(n for n, since in failed.items() if now - since >= grace))
        if not expired and not short:
            self._structure_failures = 0  # sound, or only nodes within their grace period
            return
        # A node within its grace period may come back: meanwhile its shard may take a
        # spare (a rescheduled pod that rejoined, say), but no new node is started for it.
        waiting = len(expired) < len(failed)
        wait = retry_backoff(self._structure_failures, policy.retry_base_seconds,
                             policy.retry_max_seconds)  # fmt: skip
        if now - self._structure_failed_at < wait:
            return
        self._structure_failures += 1  # cleared once a later view finds nothing to mend
        self._structure_failed_at = now
        log.info(json.dumps({"event": "repair_structure", "forget": list(expired),
                             "short_of_replicas": short}))  # fmt: skip
        self._mark_own_change()
        done = repair_structure(self._admin_connect(), self._seed(),
                                None if waiting else self.nodes, policy.replicas_per_shard,
                                forget=expired, progress=self._on_progress)  # fmt: skip
        log.info(json.dumps({"event": "repaired_structure", "actions": done}))
        for marker, kind in _REPAIR_KINDS:
            self._count_repairs(kind, sum(1 for line in done if marker in line))
        if done:
            self._event("shards", "StructureRepaired", "; ".join(done))
        self.probe_once()

    def _check_workload(self) -> None:
        """Hold everything that changes the cluster while the platform declares fewer
        nodes than the cluster has — its live nodes plus failed ones still owning slots
        that no live replica can take over (someone scaled the StatefulSet down from
        outside: ``kubectl scale``, a GitOps sync). Forgetting or replacing those nodes
        would make the loss final. A Warning Event says so once; the shard decision is
        blocked by ``statefulset_below_cluster`` until the size is back."""
        view = self.view
        if self.nodes is None or view is None or view.probe is None:
            return
        declared = self.nodes.size()
        if declared is None:
            return
        pending = self.nodes.pending()
        if pending != self.pending_pods:
            log.warning(json.dumps({"event": "pods_pending", "pods": pending}))
        self.pending_pods = pending
        if self.metrics is not None:
            self.metrics.set_pending_pods(len(pending))
        entries = [e for e in view.probe.entries if not e.flags & {"noaddr", "handshake"}]
        live = [e for e in entries if "fail" not in e.flags]
        served = {e.primary_id for e in live if not e.is_primary}
        # a failed node still owning slots with no live replica to take them over: its
        # pod is gone for good (a crashed pod is back, or failed over, within a timeout)
        stranded = [e for e in entries if "fail" in e.flags and e.slots
                    and e.node_id not in served]  # fmt: skip
        need = len(live) + len(stranded)
        before = self._outside_change
        if declared >= need:
            self._outside_change = None
            if before is not None:
                log.info(json.dumps({"event": "workload_restored", "declared": declared}))
                self._event("shards", "WorkloadRestored", f"{declared} nodes declared again")
            if self._away:
                self._report_back_empty(view)
            self._remember_keys(view)
            return
        self._away.update({e.node_id: self._keys_seen.get(e.node_id, 0)
                           for e in entries if "fail" in e.flags})  # fmt: skip
        lost = ", ".join(sorted(e.address or e.node_id[:8] for e in stranded)) or "none"
        self._outside_change = (
            f"the StatefulSet declares {declared} nodes but the cluster has {need} "
            f"(slots on nodes whose pods are gone: {lost}): scaled down from outside? "
            f"Holding (no repair, no scaling) until it declares {need} again"
        )
        if before is None:  # one Warning an episode; the status keeps the latest wording
            log.error(json.dumps({"event": "workload_below_cluster", "declared": declared,
                                  "cluster_nodes": need, "stranded": lost}))  # fmt: skip
            self._event("shards", "WorkloadBelowCluster", self._outside_change, warning=True)

    def _remember_keys(self, view: ClusterView) -> None:
        """Each answering node's key count, by node id (INFO keyspace)."""
        for node in view.nodes.values():
            sample = node.sample
            if node.node_id is None or sample is None or not sample.ok:
                continue
            self._keys_seen[node.node_id] = _keys_in(sample.info)

    def _report_back_empty(self, view: ClusterView) -> None:
        """After an outside scale-down ends: a node back under its old id (its nodes.conf
        came back with its volume) but without the keys it had (no persistence) lost its
        data silently — the cluster calls it ok. Say so, loudly."""
        for node in view.nodes.values():
            sample = node.sample
            if node.node_id not in self._away or sample is None or not sample.ok:
                continue  # not back yet (or under a new id: a new node, met as one)
            had = self._away.pop(node.node_id)
            now = _keys_in(sample.info)
            if had and now == 0 and node.role == "primary":
                message = (f"{node.address} is back under its old id {node.node_id} but "
                           f"empty: it held {had} keys before its pod was removed from "
                           "outside; they are lost")  # fmt: skip
                log.error(json.dumps({"event": "node_back_empty", "node": node.address,
                                      "keys_before": had}))  # fmt: skip
                self._event("shards", "NodeBackEmpty", message, warning=True)

    def _mark_own_change(self) -> None:
        """Epoch changes seen within one failover window from now are ours."""
        self._own_change = True
        window = 2 * self.cfg.shards.node_timeout_ms / 1000
        self._own_change_until = self.clock() + window

    def _rejoin_strays(self) -> None:
        """A platform node that is ready but not a live member of the cluster — a pod
        rescheduled with a new IP, or back with an empty ``nodes.conf`` — is met again;
        it is then an empty primary, a spare that structure repair makes a replica."""
        ready = getattr(self.nodes, "ready_addresses", None)
        view = self.view
        if ready is None or view is None or self.migrating or self.intent.change is not None:
            return
        probe = view.probe
        if probe is None:
            return
        bad = {"fail", "fail?", "noaddr", "handshake"}
        live = {e.address for e in probe.entries if e.address and not e.flags & bad}
        strays = [address for address in ready() if address not in live]
        for address in list(strays):
            log.info(json.dumps({"event": "rejoin", "node": address}))
            self._mark_own_change()
            try:
                join(self._admin_connect(), self._seed(), address, timeout=30.0)
            except ForeignNode as exc:
                strays.remove(address)
                log.warning(json.dumps({"event": "rejoin_refused", "node": address,
                                        "reason": "; ".join(exc.reasons)}))  # fmt: skip
                self._event("shards", "NodeNotJoined", "; ".join(exc.reasons), warning=True)
                continue
            self._count_repairs("rejoin", 1)
            self._event("shards", "NodeRejoined", f"{address} met again (a rescheduled pod)")
        if strays:
            # a new spare: structure repair tries at once, not after the backoff its
            # earlier attempts (no spare yet, while the pod was away) have built up
            self._structure_failures, self._structure_failed_at = 0, -math.inf
            self.probe_once()

    def _fill_empty_primaries(self, decision: Decision) -> None:
        """When the policy wants no change, every primary gets its share of the slots: a
        primary without slots (a scale-out cut off between join and rebalance, a node
        joined by hand), or shares that drifted beyond ``_BALANCE_TOLERANCE`` of the
        even share (two actors once rebalanced the same slots: 3842/4350/4096/4096).
        Not while a shard lacks a replica: the empty primary is then a spare for it."""
        view = self.view
        if self.nodes is None or view is None or decision.direction != "none":
            return
        primaries = [n for n in view.nodes.values() if n.role == "primary" and n.node_id]
        empty = [n.address for n in primaries if n.node_id not in view.shard_utilization]
        if empty and (
            shards_short_of_replicas(view, self.cfg.shards.replicas_per_shard)
            or len(primaries) > self.cfg.shards.max_shards
        ):
            # an empty primary is a spare: structure repair makes it the replica a shard
            # lacks (a rescheduled pod that rejoined); never a shard beyond max_shards
            return
        skew = slot_skew(view)
        if (empty or skew > _BALANCE_TOLERANCE) and not view.gates:
            log.info(json.dumps({"event": "repair", "empty_primaries": empty,
                                 "slot_skew": round(skew, 3)}))  # fmt: skip
            if self.scale_shards(len(primaries)):
                self._save_intent(None)

    def _admin_connect(self) -> Connect:
        if self._admin is None:
            self._admin = connector(**self._connection)
        return self._admin

    def scale_shards(self, desired: int) -> bool:
        """Reshard to ``desired`` shards now (blocking); False if refused or failed, in
        which case the cluster is left consistent and the next cycle resumes. The purpose
        is written down first and stays written until the caller clears it."""
        assert self.nodes is not None
        view = self.view
        current = len(view.shard_utilization) if view is not None else 0
        pending = self.intent.change
        kind: ChangeKind = "rebalance"
        if desired != current:
            kind = "scale_out" if desired > current else "scale_in"
        if pending is not None and pending.to_shards == desired:
            change = replace(pending, attempts=pending.attempts + 1)
        else:
            change = PendingChange(kind, current, desired, self.wall())
        self._save_intent(change)
        self._event("shards", "MigrationStarted", f"{change.kind}: {current} -> {desired} shards")
        self.migrating = self._own_change = True
        if self.metrics is not None:
            self.metrics.set_migration_in_progress(True)
        started = time.monotonic()
        try:
            report = scale_shards(
                self._admin_connect(), self._seed(), desired, self.nodes,
                replicas_per_shard=self.cfg.shards.replicas_per_shard,
                engine=self.cfg.shards.engine, progress=self._on_progress,
                on_draining=self._mark_draining,
                max_memory_share=self.cfg.shards.scale_in_max_memory_share,
                capacity_bytes=self.cfg.shards.capacity.memory_bytes,
                may_continue=self.may_act,
            )  # fmt: skip
        except MigrationInterrupted as exc:  # not a failure: the intent record stays
            log.warning(json.dumps({"event": "scale_interrupted", "desired": desired,
                                    "reason": f"{exc}"}))  # fmt: skip
            self._event("shards", "MigrationInterrupted", f"to {desired} shards: {exc}")
            return False
        except SCALE_ERRORS as exc:
            self._count_error("shards")
            self.last_scale_error = {"gate": getattr(exc, "gate", None), "desired": desired,
                                     "error": f"{type(exc).__name__}: {exc}"}  # fmt: skip
            log.error(json.dumps({"event": "scale_failed", "desired": desired,
                                  "error": f"{type(exc).__name__}: {exc}"}))  # fmt: skip
            self._event("shards", "MigrationFailed", f"to {desired} shards: {exc}", warning=True)
            return False
        finally:
            self.migrating = False
            self._own_change_ended_at = self.clock()
            with self._lock:
                self.draining = set()
            if self.metrics is not None:
                self.metrics.set_migration_in_progress(False)
                self.metrics.migration_duration.observe(time.monotonic() - started)
        self.scale_history.append(report)
        self.last_scale_error = None
        log.info(json.dumps({"event": "scaled", **report.as_dict()}, default=str))
        self._event(
            "shards",
            "MigrationFinished",
            f"{current} -> {desired} shards: "
            f"{report.slots_moved} slots, {report.keys_moved} keys moved",
        )
        self.probe_once()
        return True

    def may_act(self) -> bool:
        """Asked between migration batches: still the leader, still holding the
        cluster's lease, and not shutting down."""
        self._progressed()  # asked between batches: the reshard is moving
        if self._stopping or (self.leader is not None and not self.leader()):
            return False
        return self.lease is None or self.lease.still_held()

    def _follow_draining(self) -> None:
        """A follower publishes the leader's draining nodes, from the shared intent record,
        so every replica behind the Service serves the same routing table."""
        change = self.intent.change
        draining = set(change.draining) if change is not None else set()
        if draining == self.draining:
            return
        with self._lock:
            self.draining = draining
            if self.view is not None:
                lag = self.cfg.routing.max_replica_lag_seconds
                self.routing = build_routing_table(self.view, self.draining, self.routing, lag)

    def _mark_draining(self, addresses: list[str]) -> None:
        """Publish the leaving nodes with weight 0 before any of their slots move, and
        write them into the intent record (a restart finishes their scale-in)."""
        with self._lock:
            self.draining = set(addresses)
            if self.view is not None:
                lag = self.cfg.routing.max_replica_lag_seconds
                self.routing = build_routing_table(self.view, self.draining, self.routing, lag)
        if self.intent.change is not None:
            self._save_intent(replace(self.intent.change, draining=tuple(sorted(addresses))))

    def _on_progress(self, event: dict[str, Any]) -> None:
        migration_log.info(json.dumps(event))  # one line per batch and per step
        self._progressed()
        if self.metrics is not None and event.get("event") == "moved":
            self.metrics.observe_batch(event.get("slots", 0), event.get("keys", 0))

    def _log(self, decision: Decision, acted: bool) -> None:
        """One line when the decision or its reason changes (numbers in the reason, such
        as a utilization or a cooldown countdown, are not a change)."""
        key = (decision.current, decision.desired, decision.blocked_by, acted,
               _NUMBER.sub("#", decision.reason))  # fmt: skip
        if not acted and self._logged.get(decision.target) == key:
            return
        self._logged[decision.target] = key
        record = asdict(decision) | {"direction": decision.direction, "acted": acted}
        decisions_log.info(json.dumps(record, sort_keys=True))
        if acted:
            reason = "ScaledUp" if decision.desired > decision.current else "ScaledDown"
            self._event(
                decision.target,
                reason,
                f"{decision.current} -> {decision.desired}: {decision.reason}",
            )
        elif decision.blocked_by and decision.direction != "none":
            self._event(
                decision.target,
                "ScaleBlocked",
                f"wants {decision.current} -> {decision.desired}, blocked by "
                f"{', '.join(decision.blocked_by)}: {decision.reason}",
                warning=True,
            )

    def _event(self, target: str, reason: str, message: str, warning: bool = False) -> None:
        """An Event about ``target`` (``shards`` or a consumer); never raises."""
        if self.events is not None:
            try:
                self.events(target, reason, message, warning)
            except Exception as exc:  # events are a courtesy, never the loop's end
                log.warning(json.dumps({"event": "event_not_posted", "error": f"{exc}"}))

    def status(self) -> dict[str, Any]:
        lease = asdict(self.lease_state) | {"owner": self.lease.owner if self.lease else None}
        with self._lock:
            status = build_status(self.view, self.decisions, sorted(self.draining), lease,
                                  self.intent.change, self.clock())  # fmt: skip
        if status.get("ready"):  # the view's time for people: wall clock, ISO-8601
            status["taken_at"] = self.probed_at.isoformat(timespec="milliseconds")
        status["backlogs"] = dict(self.backlogs)
        last = self.scale_history[-1].as_dict() if self.scale_history else None
        status["resharding"] = {"in_progress": self.migrating, "last": last,
                                "last_error": self.last_scale_error,
                                "held": self._outside_change,
                                "pending_pods": list(self.pending_pods)}  # fmt: skip
        return status

    @property
    def ready(self) -> bool:
        """A probe cycle has reached at least one node (not merely completed)."""
        view = self.view
        return view is not None and any(
            n.sample is not None and n.sample.ok for n in view.nodes.values()
        )

    # -- running -------------------------------------------------------------------------

    def start(self) -> None:
        """Probe once now, then run probe, lease and reconcile jobs in the background."""
        self._guard("probe", self.probe_once)
        self._guard("lease", self.hold_lease)
        # A reshard holds the reconcile job for seconds; the skipped runs are expected.
        logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)
        logging.getLogger("apscheduler.executors.default").setLevel(logging.WARNING)
        scheduler = BackgroundScheduler()
        interval = self.cfg.probe.interval_seconds
        renew = self.cfg.shards.lease_ttl_seconds / 3
        common = {"max_instances": 1, "coalesce": True, "misfire_grace_time": None}
        jobs = (("probe", self.probe_once, interval), ("lease", self.hold_lease, renew),
                ("reconcile", self.reconcile_shards_once, interval),
                ("consumers", self.reconcile_consumers_once, interval))  # fmt: skip
        for name, step, every in jobs:
            scheduler.add_job(
                lambda n=name, s=step: self._guard(n, s), "interval", seconds=every, id=name,
                **common,
            )  # fmt: skip
        scheduler.start()
        self._scheduler = scheduler

    def stop(self) -> None:
        """Stop scheduling, wait for a running step to finish (never mid-step), and give
        the lease up so another controller can act at once."""
        self._stopping = True  # a running reshard stops after its current batch
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
            self._scheduler = None
        if self.lease is not None and self.lease_state.holding:
            try:
                self.lease.release()
            except Exception as exc:  # it expires on its own
                log.warning(json.dumps({"event": "lease_not_released", "error": f"{exc}"}))
            self.lease_state = replace(self.lease_state, holding=False)
        self.probe.close()
        if self._client is not None:
            self._client.close()
