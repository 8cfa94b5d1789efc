"""Scale-in on real servers: a leaving node must be proven empty before it is reset or shut
down, survivors must have the memory for the moved data, and repair_structure mends a
cluster whose primary died (forget it, give its shard a replica again)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from controller.capacity import check_scale_in_capacity, read_memory_facts
from controller.localcluster import LocalCluster
from controller.scaling import (
    NodeNotEmpty,
    ScaleInRefused,
    live_entries,
    retire_nodes,
    scale_shards,
)
from controller.structure import repair_structure
from controller.topology import ClusterNotStable, check_gates, connector, join, read_topology


def _add_spare(cluster: LocalCluster) -> Any:
    """A new empty primary on the highest port: the first node a scale-in removes."""
    address = cluster.add_nodes(1, [n.address for n in cluster.nodes])[0]
    join(connector(), cluster.seed, address, timeout=30)
    cluster.wait_healthy()
    return cluster.node_by_port(int(address.rpartition(":")[2]))


def _strand_key(node: Any, owner: Any, key: str) -> None:
    """Write ``key`` onto ``node`` although it owns none of its slot (what an ASK-redirected
    write during an interrupted migration leaves behind)."""
    client = node.client()
    slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
    owner_id = str(owner.client().execute_command("CLUSTER", "MYID"))
    client.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", owner_id)
    pipe = client.pipeline(transaction=False)
    pipe.execute_command("ASKING")
    pipe.set(key, "precious")
    pipe.execute()
    client.execute_command("CLUSTER", "SETSLOT", slot, "STABLE")


def _owner_of(cluster: LocalCluster, key: str) -> Any:
    slot = int(cluster.nodes[0].client().execute_command("CLUSTER", "KEYSLOT", key))
    for node in cluster.primaries():
        entries = read_topology(connector(), node.address, False).entries
        own = next(e for e in entries if "myself" in e.flags)
        if any(lo <= slot <= hi for lo, hi in own.slots):
            return node
    raise AssertionError(f"no owner of slot {slot}")


def test_a_leaving_node_that_holds_a_key_stops_the_scale_in(make_cluster: Any) -> None:
    cluster: LocalCluster = make_cluster(2, 0)
    spare = _add_spare(cluster)
    _strand_key(spare, _owner_of(cluster, "stranded"), "stranded")
    with pytest.raises(NodeNotEmpty, match="still holds 1 keys") as refused:
        scale_shards(connector(), cluster.seed, 2, cluster, replicas_per_shard=0, timeout=10)
    assert refused.value.gate == "scale_in_not_empty" and refused.value.address == spare.address
    assert isinstance(refused.value, ClusterNotStable)  # the CLI's exit 3, the loop's log
    # left running, still a member, the key still there
    assert spare.running and spare.client().dbsize() == 1
    assert list(spare.client().scan_iter()) == ["stranded"]
    members = {e.address for e in live_entries(read_topology(connector(), cluster.seed).entries)}
    assert spare.address in members


def test_retiring_a_node_that_owns_slots_is_refused(make_cluster: Any) -> None:
    cluster: LocalCluster = make_cluster(2, 0)
    victim = cluster.nodes[1]
    victim_id = cluster.node_id(victim)
    with pytest.raises(NodeNotEmpty, match="8192 slots"):
        retire_nodes(connector(), cluster.seed, [victim_id])
    assert victim.running
    known = {e.node_id for e in read_topology(connector(), cluster.seed).entries}
    assert victim_id in known  # nothing forgotten
    cluster.wait_healthy(timeout=10)


def _fill(cluster: LocalCluster, keys: int) -> None:
    client = redis.RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port)
    try:
        pipe = client.pipeline()
        for i in range(keys):
            pipe.set(f"fill:{i}", "x" * 512)
        pipe.execute()
    finally:
        client.close()


def test_scale_in_is_refused_when_survivors_lack_memory(make_cluster: Any) -> None:
    cluster: LocalCluster = make_cluster(3, 0)
    _fill(cluster, 3000)
    connect = connector()
    entries = live_entries(read_topology(connect, cluster.seed).entries)
    highest = max(f.used_bytes for f in read_memory_facts(connect, entries))
    # Room for the data each holds now, not for a third more on two of them.
    for node in cluster.nodes:
        node.client().config_set("maxmemory", int(highest * 1.3))
    before = sorted((e.node_id, e.slots) for e in entries)
    with pytest.raises(ScaleInRefused, match="scale_in_capacity") as refused:
        scale_shards(connect, cluster.seed, 2, cluster, replicas_per_shard=0)
    assert refused.value.gate == "scale_in_capacity"
    after = live_entries(read_topology(connect, cluster.seed).entries)
    assert sorted((e.node_id, e.slots) for e in after) == before  # nothing moved
    # An allkeys-* policy is named: it would evict instead of refusing writes.
    for node in cluster.nodes:
        node.client().config_set("maxmemory-policy", "allkeys-lru")
    with pytest.raises(ScaleInRefused, match="allkeys-lru would evict"):
        scale_shards(connect, cluster.seed, 2, cluster, replicas_per_shard=0)
    # With a configured capacity that has the room, the gate opens (not executed here).

    facts = read_memory_facts(connect, after)
    assert check_scale_in_capacity(facts[:2], facts[2:], 0.8, capacity_bytes=highest * 4) == []


def _wait(check: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out: {what}")


def test_repair_structure_forgets_a_dead_primary_and_replaces_its_replica(
    make_cluster: Any,
) -> None:
    cluster: LocalCluster = make_cluster(3, 1)
    connect = connector()
    victim = cluster.primaries()[0]
    victim_id = cluster.node_id(victim)
    survivors = [n for n in cluster.nodes if n is not victim]
    victim.kill()

    def taken_over() -> bool:
        topology = read_topology(connect, survivors[0].address, False)
        dead = next(e for e in topology.entries if e.node_id == victim_id)
        owners = [e for e in topology.entries if e.is_primary and e.slots and e.address]
        covered = sum(hi - lo + 1 for e in owners for lo, hi in e.slots)
        return "fail" in dead.flags and not dead.slots and covered == 16384

    _wait(taken_over, "the replica took over")
    seed = survivors[0].address
    nodes_before = len(cluster.nodes)
    done = repair_structure(connect, seed, cluster, 1, forget=[victim_id])
    assert any(line.startswith(f"forgot failed node {victim_id[:8]}") for line in done)
    assert any("as a replica of shard" in line for line in done), done
    assert len(cluster.nodes) == nodes_before + 1  # one new node started
    for node in cluster.nodes:
        if node.running:
            ids = {e.node_id for e in read_topology(connect, node.address, False).entries}
            assert victim_id not in ids, node.address
    live = live_entries(read_topology(connect, seed, False).entries)
    owners = [e for e in live if e.is_primary and e.slots]
    assert sorted(sum(1 for r in live if r.primary_id == p.node_id) for p in owners) == [1, 1, 1]
    assert repair_structure(connect, seed, cluster, 1) == []  # nothing left to do


def test_repair_structure_takes_a_spare_and_reports_what_it_cannot_fix(
    make_cluster: Any,
) -> None:
    cluster: LocalCluster = make_cluster(2, 0)
    connect = connector()
    spare = _add_spare(cluster)
    done = repair_structure(connect, cluster.seed, None, 1)
    assert done[0] == f"{spare.address} now replicates shard " + done[0].split()[-1]
    assert len(done) == 2 and "is short of 1 replicas: no spare node" in done[1]
    assert cluster.role(spare) == "slave"


def test_a_failed_slotless_node_does_not_close_the_gates(
    make_cluster: Callable[..., LocalCluster],
) -> None:
    cluster = make_cluster(3, 1, node_timeout_ms=500)
    connect = connector()
    _, (replica,) = cluster.shard_map()[0]
    replica.kill()

    def flagged() -> bool:
        entries = read_topology(connect, cluster.seed, False).entries
        return any("fail" in e.flags and e.address == replica.address for e in entries)

    deadline = time.monotonic() + 20
    while not flagged():
        assert time.monotonic() < deadline, "the dead replica was never flagged fail"
        time.sleep(0.1)
    check_gates(read_topology(connect, cluster.seed, False), connect)  # does not raise


class _Unremovable:
    """The harness as a node source whose platform refuses the leaving set (a StatefulSet
    whose highest ordinals are not the ones leaving, or not Ready)."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster

    def add_nodes(self, count: int, existing: Any) -> list[str]:
        return self.cluster.add_nodes(count, existing)

    def remove_nodes(self, addresses: Any) -> None:
        self.cluster.remove_nodes(addresses)

    def ordinal(self, address: str) -> Any:
        return self.cluster.ordinal(address)

    def check_leaving(self, addresses: Any) -> None:
        from controller.platform import PlatformError

        raise PlatformError(f"cannot remove {sorted(addresses)}")

    def size(self) -> int | None:
        return None

    def pending(self) -> list[str]:
        return []


def test_a_leaving_set_the_platform_cannot_remove_is_refused_before_any_slot_moves(
    make_cluster: Any,
) -> None:
    from controller.platform import PlatformError

    cluster: LocalCluster = make_cluster(3, 0)
    connect = connector()
    before = sorted((e.node_id, e.slots) for e in read_topology(connect, cluster.seed).entries)
    source = _Unremovable(cluster)
    draining: list[list[str]] = []
    with pytest.raises(PlatformError, match="cannot remove"):
        scale_shards(connect, cluster.seed, 2, source, replicas_per_shard=0,  # type: ignore[arg-type]
                     on_draining=draining.append)  # fmt: skip
    assert draining == []  # not even announced to clients
    after = sorted((e.node_id, e.slots) for e in read_topology(connect, cluster.seed).entries)
    assert after == before


def test_a_node_with_keys_is_never_met_and_an_empty_stranger_is_reset_first(
    make_cluster: Any,
) -> None:
    from controller.topology import ForeignNode

    ours: LocalCluster = make_cluster(2, 0)
    theirs: LocalCluster = make_cluster(2, 0)
    connect = connector()
    # another cluster's primary, with data: refused, untouched
    slot_owner = _owner_of(theirs, "k")
    slot_owner.client().set("k", "theirs")
    with pytest.raises(ForeignNode, match=r"holds 1 keys"):
        join(connect, ours.seed, slot_owner.address, timeout=10)
    members = {e.address for e in read_topology(connect, ours.seed).entries}
    assert slot_owner.address not in members
    assert slot_owner.client().get("k") == "theirs"
    # an empty node that still knows the other cluster: reset, then met
    spare = theirs.spawn_node()
    join(connect, theirs.seed, spare.address, timeout=30)
    assert len(read_topology(connect, spare.address).entries) == 3
    join(connect, ours.seed, spare.address, timeout=30)
    known = {e.address for e in read_topology(connect, spare.address).entries}
    assert known == {n.address for n in ours.nodes} | {spare.address}
