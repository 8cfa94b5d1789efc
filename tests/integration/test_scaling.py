"""scale_shards against real servers: 3 → 5 → 3 under a writer, nothing lost; resume."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from balancer import ClusterClient
from controller.localcluster import LocalCluster
from controller.scaling import live_entries, scale_shards
from controller.topology import connector, read_topology
from tests.integration.test_resilience import Load


def _shape(connect: Any, seed: str) -> tuple[int, list[int], int]:
    """(primaries holding slots, replicas per such primary, slots covered)."""
    live = live_entries(read_topology(connect, seed).entries)
    owners = [e for e in live if e.is_primary and e.slots]
    replicas = sorted(sum(1 for r in live if r.primary_id == p.node_id) for p in owners)
    covered = sum(hi - lo + 1 for p in owners for lo, hi in p.slots)
    return len(owners), replicas, covered


def test_scale_out_and_in_under_a_writer_loses_nothing(make_cluster: Any) -> None:
    cluster: LocalCluster = make_cluster(3, 1)
    connect = connector()
    client = ClusterClient(cluster.seed, read_from="replicas")
    acked: dict[str, str] = {}
    events: list[dict[str, Any]] = []
    draining: list[list[str]] = []

    def write(i: int) -> None:
        client.set(f"w:{i}", str(i))
        acked[f"w:{i}"] = str(i)

    with Load(write, seconds=180) as load:
        time.sleep(0.3)
        out = scale_shards(connect, cluster.seed, 5, cluster, progress=events.append)
        assert (out.before, out.after, len(out.added)) == (3, 5, 4)
        assert _shape(connect, cluster.seed) == (5, [1, 1, 1, 1, 1], 16384)
        time.sleep(0.3)
        back = scale_shards(
            connect, cluster.seed, 3, cluster, progress=events.append, on_draining=draining.append
        )
        time.sleep(0.3)
    assert (back.before, back.after) == (5, 3)
    # the four newest nodes (highest ports) are the ones that left, announced before moving
    assert sorted(back.removed) == sorted(out.added)
    assert draining and set(out.added) <= set(draining[0])
    seed = next(n.address for n in cluster.nodes if n.running)
    assert _shape(connect, seed) == (3, [1, 1, 1], 16384)
    assert read_topology(connect, seed).open_slots() == []
    assert not any(n.running for n in cluster.nodes if n.address in out.added)
    assert load.errors == [], load.errors[:3]
    assert load.done > 200
    client.refresh_topology()
    lost = [k for k, v in acked.items() if client.get(k) != v.encode()]
    assert lost == []
    moved = [e for e in events if e["event"] == "moved"]
    assert sum(e["slots"] for e in moved) == out.slots_moved + back.slots_moved > 6000
    client.close()


def test_scale_to_the_same_count_is_a_no_op(make_cluster: Any) -> None:
    cluster: LocalCluster = make_cluster(3, 1)
    out = scale_shards(connector(), cluster.seed, 3, cluster)
    assert (out.before, out.after, out.added, out.removed, out.migrations) == (3, 3, [], [], [])


def test_resumes_from_an_empty_primary_and_a_missing_replica(make_cluster: Any) -> None:
    """A scale-out cut off after the new primary joined: the next call fills it."""
    cluster: LocalCluster = make_cluster(3, 1)
    connect = connector()
    cluster.add_node()  # an empty primary, no replica: what a crash after join leaves
    out = scale_shards(connect, cluster.seed, 4, cluster)
    assert out.before == 3 and len(out.added) == 1  # only the missing replica is started
    assert _shape(connect, cluster.seed) == (4, [1, 1, 1, 1], 16384)


def test_scale_in_promotes_a_surviving_replica_instead_of_moving_slots(
    make_cluster: Any,
) -> None:
    """The highest ordinal is a primary whose replica stays: fail over, move no slot."""
    cluster: LocalCluster = make_cluster(2, 0)
    connect = connector()
    a = cluster.nodes[0]
    newest = cluster.node_by_port(int(cluster.add_nodes(1)[0].rpartition(":")[2]))
    a_id = cluster.node_id(a)
    newest.client().execute_command("CLUSTER", "MEET", "127.0.0.1", a.port)
    cluster._wait_known(cluster.nodes)
    newest.client().execute_command("CLUSTER", "REPLICATE", a_id)
    cluster.wait_healthy()
    newest.client().execute_command("CLUSTER", "FAILOVER")  # newest is now a's primary
    deadline = time.monotonic() + 30
    while cluster.role(newest) != "master" and time.monotonic() < deadline:
        time.sleep(0.05)
    cluster.wait_healthy()
    client = ClusterClient(cluster.seed)
    for i in range(300):
        client.set(f"p:{i}", str(i))
    out = scale_shards(connect, a.address, 2, cluster, replicas_per_shard=0)
    assert out.removed == [newest.address] and out.promoted == [a.address]
    assert out.slots_moved == 0
    assert _shape(connect, a.address) == (2, [0, 0], 16384)
    client.refresh_topology()
    assert [client.get(f"p:{i}") for i in range(300)] == [str(i).encode() for i in range(300)]
    client.close()


class NonClusterNodes:
    """A node source whose nodes cannot join (cluster support off): join must fail."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.removed: list[str] = []

    def add_nodes(self, count: int, existing: Any) -> list[str]:
        node = self.cluster.spawn_node(extra_args=["--cluster-enabled", "no"])
        self.cluster._wait_all_answer([node])
        return [node.address]

    def remove_nodes(self, addresses: Any) -> None:
        self.removed += list(addresses)
        self.cluster.remove_nodes(addresses)

    def ordinal(self, address: str) -> Any:
        return self.cluster.ordinal(address)


def test_a_node_that_cannot_join_is_stopped_and_the_error_raised(make_cluster: Any) -> None:
    cluster: LocalCluster = make_cluster(3, 0)
    source = NonClusterNodes(cluster)
    with pytest.raises(redis.ResponseError, match="cluster support disabled"):
        scale_shards(connector(), cluster.seed, 4, source, replicas_per_shard=0, timeout=5)
    stray = cluster.nodes[-1]
    assert source.removed == [stray.address] and not stray.running
    assert _shape(connector(), cluster.seed) == (3, [0, 0, 0], 16384)
