"""The controller acting on shard decisions: reshard, draining first, metrics, repair."""

from __future__ import annotations

from typing import Any

from balancer import ClusterClient
from controller.config import SlotpilotConfig
from controller.localcluster import LocalCluster
from controller.loop import Controller
from controller.metrics import ControllerMetrics
from controller.platform import LocalPlatform
from controller.topology import connector, read_topology


def _config(cluster: LocalCluster, **shards: Any) -> SlotpilotConfig:
    return SlotpilotConfig.model_validate({
        "cluster": {"seeds": [cluster.seed]},
        "probe": {"interval_seconds": 1.0, "timeout_seconds": 0.5, "rise": 1},
        "shards": {
            "min_shards": 2, "max_shards": 3, "replicas_per_shard": 1, "autoscale": True,
            "node_timeout_ms": cluster.node_timeout_ms,
            # an idle cluster: far below the scale-down threshold
            "capacity": {"ops_per_second": 1_000_000, "cpu_cores": None},
            **shards,
        },
    })  # fmt: skip


class Watching(Controller):
    """Records the published routing table whenever a migration batch lands."""

    tables: list[dict[str, tuple[str, float]]]

    def _on_progress(self, event: dict[str, Any]) -> None:
        if event.get("event") == "moved" and self.routing is not None:
            self.tables.append({n.address: (n.state, n.weight) for n in self.routing.nodes})
        super()._on_progress(event)


def test_scale_in_marks_leaving_nodes_draining_before_slots_move(make_cluster: Any) -> None:
    cluster: LocalCluster = make_cluster(3, 1)
    metrics = ControllerMetrics()
    controller = Watching(_config(cluster), LocalPlatform({}), metrics=metrics, nodes=cluster)
    controller.tables = []
    with ClusterClient(cluster.seed) as client:
        client.mset({f"k:{i}": i for i in range(2000)})
    try:
        controller.probe_once()
        decisions = {d.target: d for d in controller.reconcile_once()}
        assert (decisions["shards"].current, decisions["shards"].desired) == (3, 2)
        report = controller.scale_history[-1]
        assert (report.before, report.after, len(report.removed)) == (3, 2, 2)
        assert controller.tables, "no migration batch was reported"
        final = read_topology(connector(), controller._seed())
        owners = {p.address for p in final.primaries if p.slots}
        for table in controller.tables:
            for address in report.removed:
                assert table[address] == ("draining", 0.0)
            # draining = leaving, or a primary giving its slots away (it stays as a replica)
            zero = {a for a, (_, w) in table.items() if w == 0}
            assert zero >= set(report.removed) and not zero & owners, (zero, owners)
        # after the change: nothing draining, the view has two shards
        assert controller.draining == set()
        assert controller.view is not None and len(controller.view.shard_utilization) == 2
        text = metrics.render().decode()
        assert f"slotpilot_migrated_slots_total {report.slots_moved:.1f}" in text
        assert report.keys_moved > 300  # counted by both engines, batch by batch
        assert f"slotpilot_migrated_keys_total {report.keys_moved:.1f}" in text
        assert "slotpilot_migration_in_progress 0.0" in text
        status = controller.status()["resharding"]
        assert status["in_progress"] is False and status["last"]["after"] == 2
        assert "slotpilot_migration_duration_seconds_count 1.0" in text
        # at min_shards now (and in the cooldown): the next cycle holds
        again = {d.target: d for d in controller.reconcile_once()}
        assert (again["shards"].current, again["shards"].direction) == (2, "none")
        assert len(controller.scale_history) == 1
    finally:
        controller.stop()


def test_restart_repairs_an_open_slot_and_fills_an_empty_primary(make_cluster: Any) -> None:
    """A controller that starts on a half-done change finishes it from what the cluster says:
    the open slot is closed first, then the idle policy (at min) holds and the primary that
    joined but never got slots receives its share and a replica."""
    cluster: LocalCluster = make_cluster(3, 1)
    connect = connector()
    cluster.add_node()  # joined, never given slots: a crash between join and rebalance
    topology = read_topology(connect, cluster.seed)
    owner = next(p for p in topology.primaries if p.slots)
    other = next(p for p in topology.primaries if p.slots and p is not owner)
    slot = owner.slots[0][0]
    connect(other.address).execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", owner.node_id)
    connect(owner.address).execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", other.node_id)
    controller = Controller(_config(cluster, min_shards=3, max_shards=4), LocalPlatform({}),
                            nodes=cluster)  # fmt: skip
    try:
        controller.probe_once()
        assert {g.name for g in controller.view.gates} >= {"open_slots"}  # type: ignore[union-attr]
        decisions = {d.target: d for d in controller.reconcile_once()}
        assert decisions["shards"].direction == "none"  # at min: the policy holds
        after = read_topology(connect, cluster.seed)
        assert after.open_slots() == []
        shares = sorted(sum(hi - lo + 1 for lo, hi in p.slots) for p in after.primaries)
        assert shares == [4096, 4096, 4096, 4096]
        filled = controller.scale_history[-1]
        assert (filled.before, filled.after, len(filled.added)) == (3, 4, 1)  # + its replica
    finally:
        controller.stop()


class LosesLeadership(Controller):
    """Stops being the elected leader as its first migration batch lands."""

    leading = True

    def _on_progress(self, event: dict[str, Any]) -> None:
        super()._on_progress(event)
        if event.get("event") == "moved":
            self.leading = False


def test_a_leader_that_loses_leadership_mid_migration_stops_before_its_next_batch(
    make_cluster: Any,
) -> None:
    cluster: LocalCluster = make_cluster(2, 1)
    with ClusterClient(cluster.seed) as client:
        client.mset({f"k:{i}": str(i) for i in range(5_000)})
    cfg = _config(cluster, min_shards=3, max_shards=3, engine="classic")
    before = {n.address for n in cluster.nodes}
    controller = LosesLeadership(cfg, LocalPlatform({}), nodes=cluster,
                                 leader=lambda: controller.leading)  # fmt: skip
    try:
        controller.probe_once()
        assert controller.hold_lease()
        assert controller.scale_shards(3) is False  # interrupted, not failed
        topology = read_topology(connector(), cluster.seed)
        assert not topology.open_slots()
        owners = [p for p in topology.primaries if p.slots]
        assert len(owners) == 3  # the new shard got its first batch, and no more
        new = next(p for p in owners if p.address not in before)
        # one 256-slot batch from each of the two sources (they move in parallel), of 5461
        assert sum(hi - lo + 1 for lo, hi in new.slots) <= 2 * 256
        change = controller.intent.change
        assert change is not None and change.to_shards == 3  # the successor resumes it
        assert controller.last_scale_error is None
        with ClusterClient(cluster.seed) as client:
            assert client.mget([f"k:{i}" for i in range(5_000)]) == [
                str(i).encode() for i in range(5_000)
            ]
    finally:
        controller.stop()
