"""Read the cluster's topology as values, check the gates, and rebalance.

The executor of topology changes: it reads ``CLUSTER NODES`` into a :class:`Topology`,
refuses to move anything while the cluster is not stable (:class:`ClusterNotStable`
names every reason), and runs a :func:`~controller.rebalance.plan_rebalance` plan with a
:class:`~controller.migration.MigrationExecutor`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace

import redis

from balancer.endpoint import parse_address
from balancer.slots import TOTAL_SLOTS
from controller.migration import MigrationExecutor, MigrationReport, Progress
from controller.probe import ClusterNodeEntry, myself_entry, parse_node_entries
from controller.rebalance import RebalancePlan, plan_rebalance

__all__ = [
    "ClusterNotStable",
    "ForeignNode",
    "FixReport",
    "Topology",
    "check_gates",
    "connector",
    "fix",
    "join",
    "make_joinable",
    "read_topology",
    "rebalance",
    "replica_counts",
]

Connect = Callable[[str], redis.Redis]


class ClusterNotStable(RuntimeError):
    """A topology change was refused; ``reasons`` says why, one fact each."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("cluster not stable: " + "; ".join(reasons))
        self.reasons = reasons


class ForeignNode(ClusterNotStable):
    """A node that must not be met into the cluster: it holds keys or slots (data that
    may be another cluster's, or an old incarnation's), so it is left as it is."""

    gate = "join_foreign_node"


@dataclass(frozen=True)
class Topology:
    """The cluster as one node sees it."""

    source: str
    entries: tuple[ClusterNodeEntry, ...]

    @property
    def primaries(self) -> list[ClusterNodeEntry]:
        return [e for e in self.entries if e.is_primary and "fail" not in e.flags]

    def addresses(self) -> dict[str, str]:
        """Primary id → address."""
        return {e.node_id: e.address for e in self.primaries if e.address}

    def ownership(self) -> dict[str, tuple[tuple[int, int], ...]]:
        return {e.node_id: e.slots for e in self.primaries}

    def open_slots(self) -> list[tuple[int, str, str]]:
        return [slot for e in self.entries for slot in e.open_slots]


def _nodes_text(connect: Connect, address: str) -> str:
    raw = connect(address).execute_command("CLUSTER", "NODES")
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def replica_counts(entries: Iterable[ClusterNodeEntry], primaries: Iterable[str]) -> dict[str, int]:
    """Primary id → how many of ``entries`` replicate it (0 for those with none)."""
    counts = dict.fromkeys(primaries, 0)
    for entry in entries:
        if entry.primary_id in counts:
            counts[entry.primary_id] += 1
    return counts


def read_topology(connect: Connect, seed: str, own_open_slots: bool = True) -> Topology:
    """The cluster as ``seed`` sees it. A node lists only its *own* migrating/importing
    slots, so with ``own_open_slots`` every other reachable primary is asked for its own
    (a gate that trusted one node's view would miss a slot left open elsewhere)."""
    entries = list(parse_node_entries(_nodes_text(connect, seed)))
    if own_open_slots:
        for i, entry in enumerate(entries):
            if not entry.is_primary or not entry.address or "myself" in entry.flags:
                continue
            if entry.flags & {"fail", "fail?", "noaddr", "handshake"}:
                continue
            try:
                own = myself_entry(_nodes_text(connect, entry.address))
            except (redis.RedisError, OSError):
                continue  # unreachable: the gates report it
            if own is not None and own.node_id == entry.node_id:
                entries[i] = replace(entry, open_slots=own.open_slots)
    return Topology(seed, tuple(entries))


def check_gates(topology: Topology, connect: Connect) -> None:
    """Raise :class:`ClusterNotStable` unless every primary says ``cluster_state:ok``, no
    node is in a handshake or without an address, no node that owns slots is flagged
    pfail/fail, and no slot is migrating or importing. A failed node that owns no slot (a
    dead replica, a primary whose replica took over) blocks nothing: the controller
    forgets it after a grace period and gives its shard a new replica."""
    reasons = []
    for entry in topology.entries:
        bad = entry.flags & {"fail", "fail?", "handshake", "noaddr"}
        if bad & {"handshake", "noaddr"} or (bad and entry.slots):
            reasons.append(f"node {entry.address or entry.node_id[:8]} is {','.join(sorted(bad))}")
    opened = topology.open_slots()
    if opened:
        reasons.append(f"{len(opened)} slots are migrating/importing (run `slotpilot fix`)")
    for node_id, address in topology.addresses().items():
        try:
            info = connect(address).cluster("info")
            state = info.get("cluster_state")
            state = state.decode() if isinstance(state, bytes) else state
        except redis.RedisError as exc:
            reasons.append(f"primary {address} ({node_id[:8]}) unreachable: {exc}")
            continue
        if state != "ok":
            reasons.append(f"primary {address} says cluster_state:{state}")
    if reasons:
        raise ClusterNotStable(reasons)


def rebalance(
    connect: Connect,
    seed: str,
    engine: str = "auto",
    weights: Mapping[str, float] | None = None,
    threshold: float = 0.02,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> tuple[RebalancePlan, MigrationReport | None]:
    """Give every primary, empty ones included, its weighted share of the slots."""
    topology = read_topology(connect, seed)
    check_gates(topology, connect)
    plan = plan_rebalance(topology.ownership(), weights, threshold)
    if dry_run or plan.is_empty:
        return plan, None
    executor = MigrationExecutor(topology.addresses(), connect, engine=engine, progress=progress)
    return plan, executor.execute(plan)


@dataclass
class FixReport:
    """What :func:`fix` changed; empty lists mean the cluster was already sound."""

    finished: list[int]  # open slots whose migration was completed
    rolled_back: list[int]  # open slots returned to their owner
    assigned: list[int]  # uncovered slots given an owner
    forgotten: list[str]  # ghost node ids forgotten everywhere


def _keys_in(connect: Connect, address: str, slot: int) -> int:
    return int(connect(address).execute_command("CLUSTER", "COUNTKEYSINSLOT", slot))


def fix(connect: Connect, seed: str) -> FixReport:
    """Close open slots left by a crash, cover uncovered slots, forget ghost nodes.

    An open slot is finished toward its importing node when that node already holds keys
    of it (the migration was under way), and rolled back to its owner otherwise; either
    way no key is left behind: a finished slot's remaining keys move first, and a rolled
    back slot is closed on its owner first (no more ASK redirections to the importing
    node), then on the importing node, whose keys in it (written through ASK meanwhile)
    then move back. Like ``redis-cli --cluster fix``.
    """
    topology = read_topology(connect, seed)
    addresses = {e.node_id: e.address for e in topology.entries if e.address}
    report = FixReport([], [], [], [])
    owner_of = {
        s: e.node_id for e in topology.primaries for lo, hi in e.slots for s in range(lo, hi + 1)
    }
    opened: dict[int, dict[str, str]] = {}
    for entry in topology.entries:
        for slot, state, peer in entry.open_slots:
            side = opened.setdefault(slot, {})
            if state == "migrating":
                side["migrating"], side["importing"] = entry.node_id, side.get("importing", peer)
            else:
                side["importing"], side["migrating"] = entry.node_id, side.get("migrating", peer)
    executor = MigrationExecutor(addresses, connect, engine="classic")
    for slot, side in sorted(opened.items()):
        src, dst = side.get("migrating") or owner_of.get(slot), side.get("importing")
        if src is None or dst is None or src not in addresses or dst not in addresses:
            continue
        if executor.count_keys(dst, [slot])[0] > 0:
            executor.finish_slot(slot, src, dst)
            report.finished.append(slot)
        else:
            executor.roll_back_slot(slot, src, dst)
            report.rolled_back.append(slot)
    report.assigned = _cover_uncovered(connect, read_topology(connect, seed))
    report.forgotten = _forget_ghosts(connect, read_topology(connect, seed))
    return report


def _cover_uncovered(connect: Connect, topology: Topology) -> list[int]:
    owned = {s for e in topology.primaries for lo, hi in e.slots for s in range(lo, hi + 1)}
    missing = [s for s in range(TOTAL_SLOTS) if s not in owned]
    primaries = {e.node_id: e for e in topology.primaries if e.address}
    if not missing or not primaries:
        return []
    counts = {nid: sum(hi - lo + 1 for lo, hi in e.slots) for nid, e in primaries.items()}
    for slot in missing:
        holders = [nid for nid, e in primaries.items() if _keys_in(connect, e.address, slot) > 0]
        target = holders[0] if holders else min(counts, key=lambda n: counts[n])
        connect(primaries[target].address).execute_command("CLUSTER", "ADDSLOTS", slot)
        counts[target] += 1
    return missing


def _forget_ghosts(connect: Connect, topology: Topology) -> list[str]:
    """Nodes flagged fail or noaddr that own no slot and have no live replica of theirs."""
    ghosts = [
        e for e in topology.entries
        if e.flags & {"fail", "noaddr"} and not e.slots
        and not any(r.primary_id == e.node_id and "fail" not in r.flags for r in topology.entries)
    ]  # fmt: skip
    live = [e for e in topology.entries if e.address and not e.flags & {"fail", "noaddr"}]
    for ghost in ghosts:
        for node in live:
            if node.node_id != ghost.node_id:
                # already forgotten, or its own replica: that one learns from gossip
                with contextlib.suppress(redis.ResponseError):
                    connect(node.address).execute_command("CLUSTER", "FORGET", ghost.node_id)
    return [g.node_id for g in ghosts]


def make_joinable(connect: Connect, seed: str, address: str) -> None:
    """Check ``address`` before it is met: a node with keys or slots is never met
    (:class:`ForeignNode`); an empty one that remembers nodes this cluster does not know
    (an old ``nodes.conf`` on a reused volume, another cluster's) is ``CLUSTER RESET
    HARD`` first — it was just proven to hold nothing we need. A node the cluster already
    knows by its id passes as it is."""
    node = connect(address)
    keys = int(node.dbsize())
    text = node.execute_command("CLUSTER", "NODES")
    text = text.decode() if isinstance(text, bytes) else str(text)
    me = myself_entry(text)
    if keys:
        raise ForeignNode([f"{address} holds {keys} keys: not met into the cluster"])
    if me is not None and me.slots:
        raise ForeignNode([f"{address} owns slots of another cluster: not met"])
    ours = {e.node_id for e in read_topology(connect, seed, False).entries}
    if me is not None and me.node_id in ours:
        return
    mine = me.node_id if me is not None else None
    strangers = [e for e in parse_node_entries(text) if e.node_id not in ours | {mine}]
    if strangers:
        node.execute_command("CLUSTER", "RESET", "HARD")


def join(
    connect: Connect,
    seed: str,
    address: str,
    replica_of: str | None = None,
    timeout: float = 30.0,
) -> str:
    """MEET ``address`` into the cluster and wait until it reports ``cluster_state:ok``
    (no slot may move to a node that has not converged: redis#3774). As a replica it
    attaches to ``replica_of`` (a primary id), or to the primary with the fewest replicas
    (empty primaries included) when ``replica_of`` is "auto". Returns the new node's id.
    A node with keys or slots is refused first (:func:`make_joinable`)."""
    make_joinable(connect, seed, address)
    host, port = parse_address(address)
    connect(seed).execute_command("CLUSTER", "MEET", host, port)
    node = connect(address)
    node_id = node.execute_command("CLUSTER", "MYID")
    node_id = node_id.decode() if isinstance(node_id, bytes) else str(node_id)
    deadline = time.monotonic() + timeout
    while True:
        info = node.cluster("info")
        state = info.get("cluster_state")
        state = state.decode() if isinstance(state, bytes) else state
        known = read_topology(connect, seed, False).entries
        if state == "ok" and any(e.node_id == node_id for e in known):
            break
        if time.monotonic() > deadline:
            raise ClusterNotStable([f"{address} did not converge (cluster_state:{state})"])
        time.sleep(0.05)
    if replica_of is not None:
        topology = read_topology(connect, seed)
        if replica_of == "auto":
            # every primary counts, empty ones too: a new shard gets its replica first
            counts = replica_counts(
                topology.entries, [p.node_id for p in topology.primaries if p.node_id != node_id]
            )
            replica_of = min(counts, key=lambda n: (counts[n], n))
        node.execute_command("CLUSTER", "REPLICATE", replica_of)
    return node_id


def connector(
    username: str | None = None,
    password: str | None = None,
    timeout: float = 30.0,
    **kwargs: object,
) -> Connect:
    """A ``connect(address)`` that keeps one admin connection per node (binary-safe:
    no response decoding, since keys moved by MIGRATE are bytes)."""
    cache: dict[str, redis.Redis] = {}

    def connect(address: str) -> redis.Redis:
        if address not in cache:
            host, port = parse_address(address)
            cache[address] = redis.Redis(
                host=host, port=port, username=username, password=password,
                socket_timeout=timeout, **kwargs,  # type: ignore[arg-type]
            )  # fmt: skip
        return cache[address]

    return connect
