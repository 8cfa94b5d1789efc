"""Slot migration engines on live clusters: rebalance onto new primaries under a writer."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from balancer import ClusterClient
from controller.localcluster import LocalCluster
from controller.migration import MigrationExecutor, MigrationInterrupted, detect_engine
from controller.rebalance import ownership_from_cluster_shards, plan_rebalance
from controller.topology import connector
from tests.integration.test_resilience import Load


def _addresses(cluster: LocalCluster) -> dict[str, str]:
    return {cluster.node_id(n): n.address for n in cluster.primaries()}


def _open_slots(cluster: LocalCluster) -> list[str]:
    lines = str(cluster.nodes[0].client().execute_command("CLUSTER", "NODES")).splitlines()
    return [line for line in lines if "->-" in line or "-<-" in line]


@pytest.mark.parametrize("engine", ["classic", "auto"])
def test_rebalance_onto_new_primaries_loses_nothing(
    make_cluster: Callable[..., LocalCluster], server_flavor: str, engine: str
) -> None:
    cluster = make_cluster(3, 0)
    client = ClusterClient(cluster.seed)
    client.mset({f"seed:{i}": str(i) for i in range(20_000)})
    cluster.add_node()
    cluster.add_node()
    reply = cluster.nodes[0].client().execute_command("CLUSTER", "SHARDS")
    plan = plan_rebalance(ownership_from_cluster_shards(reply))
    assert plan.slot_count > 6000 and len(plan.after) == 5
    written: dict[str, str] = {}

    def write(i: int) -> None:
        client.set(f"live:{i}", str(i))
        written[f"live:{i}"] = str(i)

    executor = MigrationExecutor(_addresses(cluster), connector(), engine=engine)
    with Load(write, seconds=60) as load:
        time.sleep(0.2)
        report = executor.execute(plan)
        time.sleep(0.2)
    expected = "atomic" if engine == "auto" and server_flavor == "valkey" else "classic"
    assert report.engine == expected
    assert report.slots == plan.slot_count and report.keys > 5000
    assert load.errors == [] and load.done > 50
    assert _open_slots(cluster) == []
    cluster.wait_healthy()
    after = plan_rebalance(
        ownership_from_cluster_shards(
            cluster.nodes[0].client().execute_command("CLUSTER", "SHARDS")
        )
    )
    assert after.is_empty  # balanced within the threshold
    client.refresh_topology()
    seeds = client.mget([f"seed:{i}" for i in range(20_000)])
    assert seeds == [str(i).encode() for i in range(20_000)]
    assert [k for k, v in written.items() if client.get(k) != v.encode()] == []
    assert sum(n.client().dbsize() for n in cluster.primaries()) == 20_000 + len(written)
    client.close()


def test_detect_engine(make_cluster: Callable[..., LocalCluster], server_flavor: str) -> None:
    cluster = make_cluster(1, 0)
    assert detect_engine(cluster.nodes[0].client()) == (
        "atomic" if server_flavor == "valkey" else "classic"
    )


def test_unknown_engine_rejected() -> None:
    with pytest.raises(ValueError, match="atomic, classic"):
        MigrationExecutor({}, connector(), engine="fast")


@pytest.mark.parametrize("engine", ["classic", "auto"])
def test_a_migration_told_to_stop_stops_between_batches_with_nothing_open(
    make_cluster: Callable[..., LocalCluster], server_flavor: str, engine: str
) -> None:
    """Leadership lost (or SIGTERM) mid-migration: the executor stops before its next
    batch (classic) or cancels its own jobs (atomic), leaves no slot open and loses no
    key; every slot is owned by its source or its target."""
    cluster = make_cluster(2, 0)
    client = ClusterClient(cluster.seed)
    client.mset({f"seed:{i}": str(i) for i in range(20_000)})
    cluster.add_node()
    reply = cluster.nodes[0].client().execute_command("CLUSTER", "SHARDS")
    plan = plan_rebalance(ownership_from_cluster_shards(reply))
    asked: list[bool] = []
    atomic = engine == "auto" and server_flavor == "valkey"

    def may_continue() -> bool:
        asked.append(True)  # classic: yes once (the first batch starts), then no;
        return len(asked) < (1 if atomic else 2)  # atomic: no while the jobs run

    executor = MigrationExecutor(_addresses(cluster), connector(), engine=engine,
                                 slots_per_round=64, may_continue=may_continue)  # fmt: skip
    with pytest.raises(MigrationInterrupted):
        executor.execute(plan)
    assert _open_slots(cluster) == []
    cluster.wait_healthy()
    moved = plan_rebalance(ownership_from_cluster_shards(
        cluster.nodes[0].client().execute_command("CLUSTER", "SHARDS")))  # fmt: skip
    if atomic:  # our jobs were cancelled: every slot stayed with its source
        assert moved.slot_count == plan.slot_count
    else:  # the first batch landed, the rest was not started
        assert 0 < moved.slot_count < plan.slot_count
    client.refresh_topology()
    assert client.mget([f"seed:{i}" for i in range(20_000)]) == [
        str(i).encode() for i in range(20_000)
    ]
    client.close()
