"""Mend the cluster's shape while holding: forget dead nodes, refill replicas.

:func:`repair_structure` is the controller's step between changes: ``CLUSTER FORGET``
the failed, slot-less nodes it is given (their grace period is over), and give every
shard its replicas back — from spare nodes, surplus replicas, or new nodes of the node
source. It never moves a slot (slot balance is the rebalance path's job) and never
raises for a dead node: it reports what it did and what it could not.
:func:`plan_replicas` is the pure part.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Sequence
from typing import Any

import redis

from controller.probe import ClusterNodeEntry
from controller.scaling import NodeSource, live_entries, replicate, slot_count, wait_converged
from controller.topology import ClusterNotStable, Connect, Topology, join, read_topology

__all__ = ["plan_replicas", "repair_structure"]


def repair_structure(
    connect: Connect,
    seed: str,
    nodes: NodeSource | None,
    replicas_per_shard: int,
    forget: Collection[str] = (),
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> list[str]:
    """Mend the cluster's shape without moving a slot (slot balance is the rebalance
    path's job): ``CLUSTER FORGET`` on every node the failed, slot-less nodes in
    ``forget``; give every shard ``replicas_per_shard`` replicas — from spare nodes (empty
    slot-less primaries, replicas of slot-less primaries), surplus replicas, or new nodes
    of ``nodes`` — and even out the replicas when there are too few. Returns one line per
    thing done or skipped (empty: the structure was fine). Never raises for a dead node."""
    done: list[str] = []

    def note(line: str) -> None:
        done.append(line)
        if progress is not None:
            progress({"event": "repair_structure", "action": line})

    try:
        topology = read_topology(connect, seed, False)
        if forget:
            _forget_failed(connect, topology, forget, note)
            topology = read_topology(connect, seed, False)
    except (redis.RedisError, OSError) as exc:
        note(f"skipped: {seed} did not answer ({exc})")
        return done
    changed = _fill_replicas(connect, seed, topology, nodes, replicas_per_shard, note)
    if changed:
        try:
            wait_converged(connect, seed, 30.0)
        except ClusterNotStable as exc:
            note(f"not converged yet: {exc}")
    return done


def _forget_failed(
    connect: Connect, topology: Topology, forget: Collection[str], note: Callable[[str], None]
) -> None:
    by_id = {e.node_id: e for e in topology.entries}
    alive = [e for e in topology.entries if e.address and not e.flags & {"fail", "noaddr"}]
    for node_id in sorted(forget):
        entry = by_id.get(node_id)
        name = f"{node_id[:8]} ({entry.address if entry else 'unknown'})"
        if entry is not None and entry.slots:
            note(f"kept {name}: it still owns {slot_count(entry)} slots")
            continue
        if entry is not None and not entry.flags & {"fail", "fail?", "noaddr"}:
            note(f"kept {name}: it is not failing")
            continue
        unreached = []
        for node in alive:
            if node.node_id == node_id:
                continue
            try:
                connect(node.address).execute_command("CLUSTER", "FORGET", node_id)
            except redis.ResponseError:
                pass  # unknown there already, or that node's own primary
            except (redis.RedisError, OSError):
                unreached.append(node.address)
        missed = f" (not reached: {', '.join(unreached)})" if unreached else ""
        note(f"forgot failed node {name}{missed}")


def plan_replicas(
    replicas: dict[str, list[str]], spares: Sequence[str], per_shard: int, even_out: bool = True
) -> tuple[list[tuple[str, str]], dict[str, int]]:
    """Which node should replicate which shard: ``(address, primary id)`` moves, and how
    many replicas each shard still lacks. Spares fill the shards with the fewest first,
    then replicas above ``per_shard`` move; with ``even_out`` (no new nodes can be
    started), while a shard lacks one, a shard with two more gives one up."""
    have = {o: list(r) for o, r in replicas.items()}
    pool = list(spares)
    moves: list[tuple[str, str]] = []
    for _ in range(len(pool) + sum(map(len, have.values()))):
        if not have:
            break
        short = min(have, key=lambda o: (len(have[o]), o))
        if len(have[short]) >= per_shard:
            break
        fullest = max(have, key=lambda o: (len(have[o]), o))
        if pool:
            node = pool.pop(0)
        elif len(have[fullest]) > per_shard or (
            even_out and len(have[fullest]) > len(have[short]) + 1
        ):
            node = have[fullest].pop()
        else:
            break
        have[short].append(node)
        moves.append((node, short))
    missing = {o: per_shard - len(r) for o, r in have.items() if len(r) < per_shard}
    return moves, missing


def _fill_replicas(
    connect: Connect,
    seed: str,
    topology: Topology,
    nodes: NodeSource | None,
    per_shard: int,
    note: Callable[[str], None],
) -> bool:
    """Attach spares, surplus replicas, then new nodes to the shards short of replicas."""
    live = live_entries(topology.entries)
    owning = {e.node_id for e in topology.entries if e.is_primary and e.slots}
    replicas: dict[str, list[str]] = {e.node_id: [] for e in live if e.node_id in owning}
    for entry in sorted(live, key=lambda e: e.address):
        if entry.primary_id in replicas:
            replicas[entry.primary_id].append(entry.address)
    spares = [e.address for e in live if not e.is_primary and e.primary_id not in owning]
    spares += [
        e.address for e in live if e.is_primary and not e.slots and _holds_no_key(connect, e)
    ]
    moves, missing = plan_replicas(replicas, spares, per_shard, even_out=nodes is None)
    changed = False
    for address, owner in moves:
        try:
            replicate(connect, address, owner)
        except (redis.RedisError, OSError) as exc:
            note(f"skipped {address}: CLUSTER REPLICATE failed ({exc})")
            missing[owner] = missing.get(owner, 0) + 1
            continue
        changed = True
        note(f"{address} now replicates shard {owner[:8]}")
    if missing and nodes is not None:
        changed |= _start_replicas(connect, seed, topology, nodes, missing, note)
    else:
        for owner, count in sorted(missing.items()):
            note(f"shard {owner[:8]} is short of {count} replicas: no spare node")
    return changed


def _holds_no_key(connect: Connect, entry: ClusterNodeEntry) -> bool:
    try:
        return int(connect(entry.address).dbsize()) == 0
    except (redis.RedisError, OSError):
        return False


def _start_replicas(
    connect: Connect,
    seed: str,
    topology: Topology,
    nodes: NodeSource,
    missing: dict[str, int],
    note: Callable[[str], None],
) -> bool:
    existing = [e.address for e in topology.entries if e.address]
    try:
        added = nodes.add_nodes(sum(missing.values()), existing)
    except (OSError, RuntimeError) as exc:
        note(f"could not start {sum(missing.values())} nodes: {exc}")
        return False
    wanted = [owner for owner, count in sorted(missing.items()) for _ in range(count)]
    for address, owner in zip(added, wanted, strict=False):
        try:
            join(connect, seed, address, replica_of=owner, timeout=30.0)
        except (redis.RedisError, OSError, ClusterNotStable) as exc:
            note(f"new node {address} did not join: {exc}; stopped")
            with contextlib.suppress(redis.RedisError, OSError, RuntimeError):
                nodes.remove_nodes([address])
            continue
        note(f"started {address} as a replica of shard {owner[:8]}")
    return bool(added)
