"""Change the number of shards of a live cluster, and finish a change a crash interrupted.

:func:`scale_shards` brings the cluster to ``desired`` shards of ``1 + replicas_per_shard``
nodes each, every primary holding its share of the slots, starting from whatever the
cluster says now — not from memory. The call that starts a change is therefore also the
one that resumes it after the controller was killed half-way:

1. **repair** — slots left open by a crash are closed by :func:`~controller.topology.fix`
   (finished toward the side that holds keys, or rolled back), nothing lost.
2. **scale out** — the node source starts the missing nodes (on higher ordinals than any
   existing one); new primaries ``join`` and converge before any slot moves to them,
   new replicas attach to the primary with the fewest replicas.
3. **scale in** — the nodes with the highest ordinals leave (a StatefulSet removes those
   first). :func:`plan_scale_in` decides, as a pure function, which primaries keep slots,
   which surviving replica is promoted (``CLUSTER FAILOVER``) so a leaving primary's
   slots need not move at all, and which primaries drain. The capacity gate
   (:func:`check_scale_in_capacity`, gate ``scale_in_capacity``) refuses first when the
   survivors could not hold the moved data. ``on_draining`` hears the leaving addresses
   before any slot moves (the routing table gives them weight 0, so SDK reads leave
   first); then slots drain, surviving spare nodes become replicas, and each leaving node
   is proven empty (:func:`prove_empty`: no slot, no key) before it is forgotten
   everywhere inside the ban window, reset and shut down (:func:`retire_nodes`).
4. **balance** — every primary gets its weighted share; replicas are spread so each
   primary has ``replicas_per_shard``.

:func:`controller.structure.repair_structure` is the controller's mend-while-holding
step, and :mod:`controller.capacity` holds the capacity gate's arithmetic.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import redis

from balancer.endpoint import parse_address
from balancer.slots import as_text
from controller.capacity import check_scale_in_capacity, read_memory_facts
from controller.migration import (
    MigrationExecutor,
    MigrationInterrupted,
    MigrationReport,
    Progress,
)
from controller.probe import ClusterNodeEntry, myself_entry
from controller.rebalance import plan_rebalance
from controller.topology import (
    ClusterNotStable,
    Connect,
    FixReport,
    Topology,
    check_gates,
    fix,
    join,
    make_joinable,
    read_topology,
    replica_counts,
)

__all__ = [
    "NodeNotEmpty",
    "NodeSource",
    "ScaleInPlan",
    "ScaleInRefused",
    "ScaleReport",
    "choose_leaving",
    "live_entries",
    "plan_scale_in",
    "prove_empty",
    "replicate",
    "retire_nodes",
    "scale_shards",
    "slot_count",
    "wait_converged",
]


class ScaleInRefused(ClusterNotStable):
    """A scale-in gate refused; ``gate`` names it (as the policy's gates are named), the
    reasons say why. Nothing was changed by the refused step."""

    def __init__(self, gate: str, reasons: list[str]) -> None:
        super().__init__([f"{gate}: {r}" for r in reasons])
        self.gate = gate


class NodeNotEmpty(ScaleInRefused):
    """A leaving node still holds keys or slots (or could not be proven empty): it is
    neither reset nor shut down, and the scale-in stops there."""

    def __init__(self, address: str, why: str, keys: int | None = None, slots: int = 0) -> None:
        super().__init__("scale_in_not_empty", [f"{address} {why}; it was left running"])
        self.address, self.keys, self.slots = address, keys, slots


class NodeSource(Protocol):
    """Where new cluster nodes come from and where leaving ones go (a platform's part).

    ``keep_going`` is asked by every wait of the source (new pods Ready, old ones gone):
    once it says False (shutting down, leadership lost) the wait gives up at once with a
    :class:`~controller.platform.PlatformError`. The controller sets it to its own
    ``may_act``."""

    keep_going: Callable[[], bool]

    def add_nodes(self, count: int, existing: Sequence[str]) -> list[str]:
        """Start ``count`` empty cluster-enabled nodes, ordered after ``existing``; return
        their addresses once they answer."""
        ...

    def remove_nodes(self, addresses: Sequence[str]) -> None:
        """Stop nodes that have already been forgotten by the cluster."""
        ...

    def check_leaving(self, addresses: Sequence[str]) -> None:
        """Raise (a :class:`~controller.platform.PlatformError`) when the platform could
        not remove these nodes afterwards; asked before anything moves."""
        ...

    def size(self) -> int | None:
        """How many nodes the platform declares (a StatefulSet's ``spec.replicas``);
        None where nothing declares a size (local processes)."""
        ...

    def pending(self) -> list[str]:
        """Nodes asked for that cannot start (Pending pods), each as ``name (reason)``."""
        ...

    def ordinal(self, address: str) -> Any:
        """Sort key: the highest ordinals leave first on scale-in."""
        ...


# -- pure planning ------------------------------------------------------------------------


def slot_count(entry: ClusterNodeEntry) -> int:
    return sum(hi - lo + 1 for lo, hi in entry.slots)


def live_entries(entries: Sequence[ClusterNodeEntry]) -> list[ClusterNodeEntry]:
    """Nodes that take part: an address, and not flagged fail/noaddr/handshake."""
    gone = {"fail", "noaddr", "handshake"}
    return [e for e in entries if e.address and not e.flags & gone]


def choose_leaving(
    live: Sequence[ClusterNodeEntry], count: int, ordinal: Callable[[str], Any]
) -> list[ClusterNodeEntry]:
    """The ``count`` nodes with the highest ordinals."""
    if count <= 0:
        return []
    return sorted(live, key=lambda e: ordinal(e.address))[-count:]


@dataclass(frozen=True)
class ScaleInPlan:
    """Who keeps slots, who is promoted first, who drains and who leaves (node ids)."""

    keepers: tuple[str, ...]
    promote: tuple[str, ...]  # surviving replicas of leaving primaries: CLUSTER FAILOVER
    drain: tuple[str, ...]  # primaries whose slots move to the keepers
    leave: tuple[str, ...]  # forgotten everywhere, then stopped


def plan_scale_in(
    live: Sequence[ClusterNodeEntry], desired: int, leaving: Sequence[str]
) -> ScaleInPlan:
    """Keep the ``desired`` surviving primaries that hold the most slots (fewest moves);
    if too few primaries survive, promote a surviving replica of a leaving primary (its
    slots then stay where their data already is). Every other primary with slots drains.
    Raises ValueError when fewer than ``desired`` nodes could hold slots."""
    leave = set(leaving)
    survivors = [e for e in live if e.node_id not in leave]
    primaries = [e for e in live if e.is_primary]
    keepers = sorted(
        (e for e in survivors if e.is_primary), key=lambda e: (-slot_count(e), e.address)
    )[:desired]
    promote: list[ClusterNodeEntry] = []
    for primary in sorted(primaries, key=lambda e: (-slot_count(e), e.address)):
        if len(keepers) + len(promote) >= desired:
            break
        if primary.node_id not in leave or not primary.slots:
            continue
        replica = next((e for e in survivors if e.primary_id == primary.node_id), None)
        if replica is not None:
            promote.append(replica)
    if len(keepers) + len(promote) < desired:
        raise ValueError(
            f"cannot keep {desired} shards: only {len(keepers) + len(promote)} surviving "
            "nodes can hold slots"
        )
    keeper_ids = {e.node_id for e in keepers} | {e.node_id for e in promote}
    promoted_from = {e.primary_id for e in promote}
    drain = [
        p.node_id
        for p in primaries
        if p.node_id not in keeper_ids and p.node_id not in promoted_from and p.slots
    ]
    return ScaleInPlan(
        tuple(sorted(keeper_ids)),
        tuple(e.node_id for e in promote),
        tuple(drain),
        tuple(sorted(leave)),
    )


# -- execution ----------------------------------------------------------------------------


@dataclass
class ScaleReport:
    """What :func:`scale_shards` did."""

    desired: int
    before: int = 0  # primaries holding slots when it started
    after: int = 0
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    promoted: list[str] = field(default_factory=list)
    repaired: FixReport | None = None
    migrations: list[MigrationReport] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def slots_moved(self) -> int:
        return sum(m.slots for m in self.migrations)

    @property
    def keys_moved(self) -> int:
        return sum(m.keys for m in self.migrations)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(slots_moved=self.slots_moved, keys_moved=self.keys_moved)
        out["seconds"] = round(self.seconds, 3)
        for m in out["migrations"]:
            m["seconds"] = round(m["seconds"], 3)
        return out


# Progress events after which stopping leaves nothing half-done: before a step starts,
# or after a batch closed its slots. Not after nodes were forgotten (their pods must go
# before anyone stops) or while joins are under way.
_SAFE_STOPS = frozenset({"repair", "add_nodes", "rebalance", "draining", "promoted", "moved"})


def scale_shards(
    connect: Connect,
    seed: str,
    desired: int,
    nodes: NodeSource,
    replicas_per_shard: int = 1,
    engine: str = "auto",
    threshold: float = 0.02,
    progress: Progress | None = None,
    on_draining: Callable[[list[str]], None] | None = None,
    timeout: float = 60.0,
    max_memory_share: float = 0.8,
    capacity_bytes: int | None = None,
    may_continue: Callable[[], bool] | None = None,
) -> ScaleReport:
    """Bring the cluster at ``seed`` to ``desired`` balanced shards (see the module doc).

    Raises :class:`ClusterNotStable` when a gate refuses (a node failing, the cluster not
    ok) — :class:`ScaleInRefused` with gate ``scale_in_capacity`` when the survivors would
    hold more than ``max_memory_share`` of their memory (``capacity_bytes``, else their
    ``maxmemory``), :class:`NodeNotEmpty` when a leaving node cannot be proven empty;
    everything done up to then is consistent, and calling again resumes.
    ``may_continue`` is asked before every step and every migration batch; once it says
    False, :class:`MigrationInterrupted` is raised with nothing left open.
    """
    if desired < 1 or replicas_per_shard < 0:
        raise ValueError("need desired >= 1 and replicas_per_shard >= 0")
    proceed = may_continue or (lambda: True)

    def emit(event: dict[str, Any]) -> None:  # a step reports: a place to stop, if safe
        (progress or (lambda e: None))(event)
        if event.get("event") in _SAFE_STOPS and not proceed():
            raise MigrationInterrupted(f"stopped at {event.get('event')}: may no longer act")

    started = time.monotonic()
    report = ScaleReport(desired)
    topology = read_topology(connect, seed)
    if topology.open_slots():
        emit({"event": "repair", "open_slots": len(topology.open_slots())})
        report.repaired = fix(connect, seed)
        topology = read_topology(connect, seed)
    live = live_entries(topology.entries)
    primaries = [e for e in live if e.is_primary]
    report.before = sum(1 for p in primaries if p.slots)
    per_shard = 1 + replicas_per_shard
    if len(primaries) < desired or len(live) < desired * per_shard:
        seed = _scale_out(connect, seed, topology, desired, per_shard, nodes, report, emit,
                          timeout)  # fmt: skip
    elif len(primaries) > desired or len(live) > desired * per_shard:
        limits = (max_memory_share, capacity_bytes)
        seed = _scale_in(connect, seed, topology, desired, per_shard, nodes, report, emit,
                         engine, on_draining, timeout, limits, proceed)  # fmt: skip
    topology = read_topology(connect, seed)
    check_gates(topology, connect)
    plan = plan_rebalance(topology.ownership(), None, threshold)
    if not plan.is_empty:
        emit({"event": "rebalance", "slots": plan.slot_count, "moves": len(plan.moves)})
        report.migrations.append(_execute(connect, topology, plan, engine, emit, proceed))
    _balance_replicas(connect, seed, replicas_per_shard, emit, timeout)
    final = read_topology(connect, seed, False)
    report.after = sum(1 for p in final.primaries if p.slots)
    report.seconds = time.monotonic() - started
    emit({"event": "done", "shards": report.after, "seconds": round(report.seconds, 3)})
    return report


def _execute(connect: Connect, topology: Topology, plan: Any, engine: str, emit: Progress,
             may_continue: Callable[[], bool]) -> MigrationReport:  # fmt: skip
    executor = MigrationExecutor(topology.addresses(), connect, engine=engine, progress=emit,
                                 may_continue=may_continue)  # fmt: skip
    return executor.execute(plan)


def _scale_out(
    connect: Connect,
    seed: str,
    topology: Topology,
    desired: int,
    per_shard: int,
    nodes: NodeSource,
    report: ScaleReport,
    emit: Progress,
    timeout: float,
) -> str:
    live = live_entries(topology.entries)
    check_gates(topology, connect)
    new_primaries = max(0, desired - sum(1 for e in live if e.is_primary))
    count = max(new_primaries, desired * per_shard - len(live))
    emit({"event": "add_nodes", "count": count, "primaries": new_primaries})
    added = nodes.add_nodes(count, [e.address for e in live])
    report.added = list(added)
    try:
        _join_all(connect, seed, added, new_primaries, emit, timeout)
    except BaseException:
        # Stop what never made it into the cluster: a re-run starts fresh nodes, and
        # an unjoined server would otherwise run on, unseen by anyone.
        with contextlib.suppress(redis.RedisError, OSError):
            topology = read_topology(connect, seed, False)
            known = {e.address for e in live_entries(topology.entries)}
            nodes.remove_nodes([a for a in added if a not in known])
        raise
    wait_converged(connect, seed, timeout)
    return seed


def _join_all(connect: Connect, seed: str, added: Sequence[str], new_primaries: int,
              emit: Progress, timeout: float) -> None:  # fmt: skip
    for address in added:  # MEET them all first: their rejoin delays then overlap
        make_joinable(connect, seed, address)
        host, port = parse_address(address)
        connect(seed).execute_command("CLUSTER", "MEET", host, port)
    for address in added[:new_primaries]:
        join(connect, seed, address, timeout=timeout)
        emit({"event": "joined", "node": address, "role": "primary"})
    # Decide every new replica's primary from one reading: a node that was just told to
    # REPLICATE can still look like an empty primary in gossip for a moment.
    live = live_entries(read_topology(connect, seed, False).entries)
    to_attach = set(added[new_primaries:])
    primaries = [p.node_id for p in live if p.is_primary and p.address not in to_attach]
    counts = replica_counts(live, primaries)
    for address in added[new_primaries:]:
        primary = min(counts, key=lambda n: (counts[n], n))
        counts[primary] += 1
        join(connect, seed, address, replica_of=primary, timeout=timeout)
        emit({"event": "joined", "node": address, "role": "replica", "primary": primary})


def _scale_in(
    connect: Connect,
    seed: str,
    topology: Topology,
    desired: int,
    per_shard: int,
    nodes: NodeSource,
    report: ScaleReport,
    emit: Progress,
    engine: str,
    on_draining: Callable[[list[str]], None] | None,
    timeout: float,
    limits: tuple[float, int | None] = (0.8, None),
    proceed: Callable[[], bool] = lambda: True,
) -> str:
    check_gates(topology, connect)
    live = live_entries(topology.entries)
    leaving = choose_leaving(live, max(0, len(live) - desired * per_shard), nodes.ordinal)
    nodes.check_leaving([e.address for e in leaving])  # before anything moves
    plan = plan_scale_in(live, desired, [e.node_id for e in leaving])
    by_id = {e.node_id: e for e in live}
    refused = check_scale_in_capacity(
        read_memory_facts(connect, [by_id[n] for n in plan.keepers]),
        read_memory_facts(connect, [by_id[n] for n in plan.drain]), *limits,
    )  # fmt: skip
    if refused:
        raise ScaleInRefused("scale_in_capacity", refused)
    seed = next(e.address for e in live if e.node_id not in plan.leave)
    draining = sorted({by_id[n].address for n in (*plan.drain, *plan.leave)})
    emit({"event": "draining", "nodes": draining, "promote": len(plan.promote),
          "drain": len(plan.drain)})  # fmt: skip
    if on_draining is not None:
        on_draining(draining)
    for replica_id in plan.promote:
        _failover(connect, by_id[replica_id].address, timeout)
        report.promoted.append(by_id[replica_id].address)
        emit({"event": "promoted", "node": by_id[replica_id].address})
    if plan.promote:
        wait_converged(connect, seed, timeout)
    topology = read_topology(connect, seed)
    check_gates(topology, connect)
    keepers = set(plan.keepers)
    weights = {e.node_id: 1.0 if e.node_id in keepers else 0.0 for e in topology.primaries}
    drain_plan = plan_rebalance(topology.ownership(), weights, threshold=0.0)
    if not drain_plan.is_empty:
        report.migrations.append(_execute(connect, topology, drain_plan, engine, emit, proceed))
    # Survivors that are neither keepers nor their replicas become replicas of keepers
    # now, so forgetting the leaving nodes cannot take a survivor's primary with it.
    live = live_entries(read_topology(connect, seed, False).entries)
    counts = replica_counts(live, sorted(keepers))
    spares = [e for e in live if e.node_id not in keepers and e.node_id not in plan.leave
              and (e.is_primary or e.primary_id not in keepers)]  # fmt: skip
    for entry in spares:
        primary = min(counts, key=lambda n: (counts[n], n))
        replicate(connect, entry.address, primary)
        counts[primary] += 1
    if spares:
        wait_converged(connect, seed, timeout)
    # exactly the leaving nodes: a survivor may still look like a leaver's replica
    report.removed = retire_nodes(connect, seed, list(plan.leave))
    emit({"event": "forgotten", "nodes": report.removed})
    nodes.remove_nodes(report.removed)
    wait_converged(connect, seed, timeout)
    return seed


def prove_empty(
    connect: Connect, address: str, leaving: Collection[str] = (), settle: float = 5.0
) -> None:
    """Raise :class:`NodeNotEmpty` unless the node at ``address`` owns no slot (in its own
    view) and, as a primary, holds no key (``DBSIZE == 0``). A replica holds a copy of its
    primary's data, so it passes while that primary is not leaving too; a replica of a
    leaving primary gets ``settle`` seconds for the drain's deletions to reach it. A node
    that cannot answer cannot be proven empty."""
    node = connect(address)
    deadline = time.monotonic() + settle
    while True:
        try:
            own = myself_entry(as_text(node.execute_command("CLUSTER", "NODES")))
            keys = int(node.dbsize())
        except (redis.RedisError, OSError) as exc:
            raise NodeNotEmpty(address, f"cannot be proven empty: {exc}") from exc
        slots = slot_count(own) if own is not None else 0
        primary_id = own.primary_id if own is not None and not own.is_primary else None
        replica = primary_id is not None
        if not slots and (not keys or (replica and primary_id not in leaving)):
            return
        if slots or not replica or time.monotonic() > deadline:
            raise NodeNotEmpty(address, f"still holds {keys} keys and {slots} slots", keys, slots)
        time.sleep(0.1)


def retire_nodes(connect: Connect, seed: str, node_ids: Sequence[str]) -> list[str]:
    """Take drained nodes out of the cluster: prove each empty (:func:`prove_empty`,
    before anything changes), ``CLUSTER FORGET`` them on every remaining node (inside the
    60 s ban window), then ``CLUSTER RESET HARD`` each. A reset that fails raises
    (Redis refuses it on a primary holding keys: a safety check, never swallowed).
    Returns their addresses, for the node source to shut down."""
    topology = read_topology(connect, seed, False)
    by_id = {e.node_id: e for e in topology.entries}
    leaving = [by_id[n] for n in node_ids if n in by_id and by_id[n].address]
    for entry in leaving:
        prove_empty(connect, entry.address, set(node_ids))
    for node in topology.entries:
        if node.node_id in node_ids or not node.address or node.flags & {"fail", "noaddr"}:
            continue
        for node_id in sorted(node_ids):
            with contextlib.suppress(redis.ResponseError):  # "Unknown node": already gone
                connect(node.address).execute_command("CLUSTER", "FORGET", node_id)
    for entry in leaving:
        try:
            connect(entry.address).execute_command("CLUSTER", "RESET", "HARD")
        except redis.ResponseError as exc:
            raise NodeNotEmpty(entry.address, f"refused CLUSTER RESET: {exc}") from exc
        except (redis.RedisError, OSError) as exc:
            why = f"{entry.address}: CLUSTER RESET failed: {exc}"
            raise ScaleInRefused("scale_in_reset_failed", [why]) from exc
    return sorted(e.address for e in leaving)


def replicate(connect: Connect, address: str, primary_id: str) -> None:
    connect(address).execute_command("CLUSTER", "REPLICATE", primary_id)


def _balance_replicas(
    connect: Connect, seed: str, per_primary: int, emit: Progress, timeout: float
) -> None:
    """Give every primary with slots ``per_primary`` replicas, taking them from empty
    primaries, replicas of empty primaries and primaries with too many."""
    live = live_entries(read_topology(connect, seed, False).entries)
    owners = {e.node_id for e in live if e.is_primary and e.slots}
    if not owners:
        return
    replicas: dict[str, list[ClusterNodeEntry]] = {n: [] for n in owners}
    spare: list[ClusterNodeEntry] = []
    for entry in live:
        if entry.node_id in owners:
            continue
        if entry.is_primary or entry.primary_id not in owners:
            spare.append(entry)
        else:
            replicas[entry.primary_id].append(entry)
    for extra in replicas.values():
        spare += sorted(extra, key=lambda e: e.address)[per_primary:]
    moved = False
    for owner in sorted(owners, key=lambda n: len(replicas[n])):
        while len(replicas[owner]) < per_primary and spare:
            entry = spare.pop(0)
            replicate(connect, entry.address, owner)
            replicas[owner].append(entry)
            emit({"event": "replica", "node": entry.address, "primary": owner})
            moved = True
    if moved:
        wait_converged(connect, seed, timeout)


def _failover(connect: Connect, address: str, timeout: float) -> None:
    """Promote a replica with a coordinated ``CLUSTER FAILOVER`` (no write is lost)."""
    node = connect(address)
    node.execute_command("CLUSTER", "FAILOVER")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        role = node.execute_command("ROLE")
        if as_text(role[0]) == "master":
            return
        time.sleep(0.05)
    raise ClusterNotStable([f"failover to {address} did not finish in {timeout:.0f}s"])


def wait_converged(connect: Connect, seed: str, timeout: float = 60.0) -> None:
    """Wait until every live node says ``cluster_state:ok`` and all of them agree on the
    nodes, their roles and their slots (a REPLICATE or SETSLOT reaches the others by
    gossip; planning from a stale view would send slots to a node that is a replica)."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError, OSError):
            live = live_entries(read_topology(connect, seed, False).entries)
            views = set()
            for entry in live:
                view = live_entries(read_topology(connect, entry.address, False).entries)
                views.add(frozenset((e.node_id, e.is_primary, e.primary_id, e.slots) for e in view))
                state = as_text(connect(entry.address).cluster("info").get("cluster_state"))
                if state != "ok":
                    last = f"{entry.address}: cluster_state:{state}"
                    break
            else:
                if len(views) == 1:
                    return
                last = f"{len(views)} different views of the cluster"
        time.sleep(0.05)
    raise ClusterNotStable([f"cluster did not converge in {timeout:.0f}s ({last})"])
