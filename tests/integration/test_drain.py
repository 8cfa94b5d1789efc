"""Scale-in at the topology level: drain shards under a writer, forget them, lose nothing."""

from __future__ import annotations

import time

import pytest

from balancer import ClusterClient
from controller.localcluster import LocalCluster
from controller.scaling import NodeNotEmpty, retire_nodes
from controller.topology import connector, read_topology, rebalance
from tests.integration.test_resilience import Load


def test_drain_two_of_five_shards_then_forget(make_cluster: object) -> None:
    cluster: LocalCluster = make_cluster(5, 1)  # type: ignore[operator]
    connect = connector()
    client = ClusterClient(cluster.seed)
    client.mset({f"seed:{i}": str(i) for i in range(5000)})
    shards = cluster.shard_map()
    leaving = [cluster.node_id(p) for p, _ in shards[3:]]
    leaving_nodes = [n for p, rs in shards[3:] for n in (p, *rs)]
    leaving_ids = [cluster.node_id(n) for n in leaving_nodes]
    owned = {e.node_id: e.slots for e in read_topology(connect, cluster.seed).primaries}
    draining_slots = sum(hi - lo + 1 for node_id in leaving for lo, hi in owned[node_id])
    written: dict[str, str] = {}

    def write(i: int) -> None:
        client.set(f"live:{i}", str(i))
        written[f"live:{i}"] = str(i)

    with pytest.raises(NodeNotEmpty):
        retire_nodes(connect, cluster.seed, leaving[:1])  # still owns slots: refused

    with Load(write, seconds=60) as load:
        time.sleep(0.2)
        # draining is rebalancing with weight 0 for the leaving primaries
        weights = {node_id: 0.0 if node_id in leaving else 1.0 for node_id in owned}
        _, report = rebalance(connect, cluster.seed, weights=weights, threshold=0.0)
        # drained primaries' replicas migrate to the remaining primaries on their own
        # (cluster-allow-replica-migration); the whole shard leaves, so name them all
        removed = retire_nodes(connect, cluster.seed, leaving_ids)
        time.sleep(0.3)
    assert report is not None and report.slots == draining_slots > 6000
    assert load.errors == [] and load.done > 50
    assert sorted(removed) == sorted(n.address for n in leaving_nodes)
    for node in leaving_nodes:
        node.kill()
    remaining = read_topology(connect, cluster.seed)
    assert len(remaining.entries) == 6 and all(
        not e.flags & {"fail", "fail?"} for e in remaining.entries
    )
    assert sum(hi - lo + 1 for e in remaining.primaries for lo, hi in e.slots) == 16384
    cluster.wait_healthy()
    client.refresh_topology()
    assert client.mget([f"seed:{i}" for i in range(5000)]) == [str(i).encode() for i in range(5000)]
    assert [k for k, v in written.items() if client.get(k) != v.encode()] == []
    client.close()
