"""`fix` repairs what a crash mid-migration leaves behind, losing no key."""

from __future__ import annotations

from redis.crc import key_slot

from balancer import ClusterClient
from controller.localcluster import LocalCluster, ServerNode
from controller.topology import connector, fix, read_topology


def keys_for_slot(slot: int, n: int) -> list[str]:
    tag = next(f"t{i}" for i in range(1_000_000) if key_slot(f"t{i}".encode()) == slot)
    return [f"{{{tag}}}:{i}" for i in range(n)]


def first_slot(node: ServerNode) -> int:
    return int(
        next(
            r[0] for r in node.client().execute_command("CLUSTER", "SLOTS") if r[2][1] == node.port
        )
    )


def open_slot(
    cluster: LocalCluster, src: ServerNode, dst: ServerNode, slot: int, move: int
) -> list[str]:
    """Simulate a crash mid-migration: slot open on both sides, ``move`` keys moved."""
    keys = keys_for_slot(slot, 20)
    with ClusterClient(cluster.seed) as client:
        client.mset({k: k for k in keys})
    dst.client().execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", cluster.node_id(src))
    src.client().execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", cluster.node_id(dst))
    if move:
        src.client().execute_command(
            "MIGRATE", "127.0.0.1", dst.port, "", 0, 5000, "KEYS", *keys[:move]
        )
    return keys


def assert_sound(cluster: LocalCluster, keys: list[str]) -> None:
    topology = read_topology(connector(), cluster.seed)
    assert topology.open_slots() == []
    cluster.wait_healthy()
    with ClusterClient(cluster.seed) as client:
        assert client.mget(keys) == [k.encode() for k in keys]


def test_half_moved_slot_is_finished(cluster: LocalCluster) -> None:
    src, dst = cluster.primaries()[:2]
    slot = first_slot(src)
    keys = open_slot(cluster, src, dst, slot, move=7)
    report = fix(connector(), cluster.seed)
    assert report.finished == [slot] and report.rolled_back == []
    assert_sound(cluster, keys)
    assert int(dst.client().execute_command("CLUSTER", "COUNTKEYSINSLOT", slot)) == 20


def test_unstarted_migration_is_rolled_back(cluster: LocalCluster) -> None:
    src, dst = cluster.primaries()[:2]
    slot = first_slot(src)
    keys = open_slot(cluster, src, dst, slot, move=0)
    report = fix(connector(), cluster.seed)
    assert report.rolled_back == [slot] and report.finished == []
    assert_sound(cluster, keys)
    assert int(src.client().execute_command("CLUSTER", "COUNTKEYSINSLOT", slot)) == 20


def test_uncovered_slot_is_assigned(cluster: LocalCluster) -> None:
    owner = cluster.primaries()[0]
    slot = first_slot(owner)
    owner.client().execute_command("CLUSTER", "DELSLOTS", slot)
    report = fix(connector(), cluster.seed)
    assert report.assigned == [slot]
    assert_sound(cluster, [])


def test_sound_cluster_is_left_alone(cluster: LocalCluster) -> None:
    report = fix(connector(), cluster.seed)
    assert (report.finished, report.rolled_back, report.assigned, report.forgotten) == (
        [],
        [],
        [],
        [],
    )
