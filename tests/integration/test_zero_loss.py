"""The capability slotpilot exists for: 3 → 5 → 3 shards under a writer, nothing lost.

New shards are new server processes joined with ``topology.join``; scale-in drains and
forgets the two newest shards (a StatefulSet's highest ordinals) and stops them. The
writer goes through ClusterClient the whole time; every acknowledged key must read back.
"""

from __future__ import annotations

import time

from balancer import ClusterClient
from controller.localcluster import LocalCluster
from controller.topology import connector, drain, forget, join, read_topology, rebalance
from tests.integration.test_resilience import Load


def test_three_five_three_loses_nothing(make_cluster: object) -> None:
    cluster: LocalCluster = make_cluster(3, 1)  # type: ignore[operator]
    connect = connector()
    client = ClusterClient(cluster.seed, read_from="replicas")
    acked: dict[str, str] = {}

    def write(i: int) -> None:
        client.set(f"w:{i}", str(i))
        acked[f"w:{i}"] = str(i)

    with Load(write, seconds=120) as load:
        time.sleep(0.3)
        added = []
        for _ in range(2):  # scale out: 1 primary + 1 replica per new shard
            primary = cluster.spawn_node()
            replica = cluster.spawn_node()
            cluster._wait_all_answer([primary, replica])
            primary_id = join(connect, cluster.seed, primary.address)
            join(connect, cluster.seed, replica.address, replica_of=primary_id)
            added += [primary, replica]
        cluster.wait_healthy()
        _, report = rebalance(connect, cluster.seed)
        assert report is not None and report.slots > 6000
        five = read_topology(connect, cluster.seed)
        assert len([p for p in five.primaries if p.slots]) == 5
        time.sleep(0.3)
        # scale in: the newest shards leave
        leaving = [cluster.node_id(n) for n in added]
        drain(connect, cluster.seed, [cluster.node_id(added[0]), cluster.node_id(added[2])])
        forget(connect, cluster.seed, leaving)
        for node in added:
            node.kill()
        time.sleep(0.3)
    assert load.errors == [], load.errors[:3]
    assert load.done > 200
    three = read_topology(connect, cluster.seed)
    assert len(three.primaries) == 3 and three.open_slots() == []
    assert sum(hi - lo + 1 for p in three.primaries for lo, hi in p.slots) == 16384
    client.refresh_topology()
    lost = [k for k, v in acked.items() if client.get(k) != v.encode()]
    assert lost == []
    client.close()
