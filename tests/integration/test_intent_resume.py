"""A controller that dies between draining a leaving primary and forgetting it: the
restarted controller finishes the scale-in from its intent record. From the cluster alone
it could not tell: the drained primary is an empty primary (Redis 7.0: "fill it") or has
turned itself into a spare replica (Valkey: "2 shards, too many replicas")."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from balancer import ClusterClient
from controller.config import SlotpilotConfig
from controller.intent import IntentFile
from controller.localcluster import LocalCluster
from controller.loop import Controller
from controller.platform import LocalPlatform
from controller.topology import connector, read_topology


class Crash(BaseException):
    """Stands for kill -9: nothing in the controller catches it."""


def _config(cluster: LocalCluster, state_dir: Path) -> SlotpilotConfig:
    return SlotpilotConfig.model_validate({
        "cluster": {"seeds": [cluster.seed]},
        "probe": {"interval_seconds": 1.0, "timeout_seconds": 0.5, "rise": 1},
        "shards": {
            "min_shards": 2, "max_shards": 3, "replicas_per_shard": 1, "autoscale": True,
            "node_timeout_ms": cluster.node_timeout_ms, "state_dir": str(state_dir),
            "lease_ttl_seconds": 1,
            "capacity": {"ops_per_second": 1_000_000, "cpu_cores": None},  # idle: scale in
        },
    })  # fmt: skip


class DiesAfterDrain(Controller):
    """Dies once the leaving nodes own no slot any more (drained, or their primary role
    handed to a surviving replica by failover), before they are forgotten and stopped."""

    leaving: tuple[str, ...] = ()

    def _mark_draining(self, addresses: list[str]) -> None:
        super()._mark_draining(addresses)
        self.leaving = tuple(addresses)

    def _on_progress(self, event: dict[str, Any]) -> None:
        super()._on_progress(event)
        if event.get("event") == "moved":
            topology = read_topology(connector(), self._seed())
            owned = sum(hi - lo + 1 for p in topology.primaries if p.address in self.leaving
                        for lo, hi in p.slots)  # fmt: skip
            if owned == 0:
                raise Crash


def _shape(seed: str) -> tuple[list[int], set[str]]:
    """Slots per primary, and the addresses of every node the cluster lists."""
    topology = read_topology(connector(), seed)
    slots = sorted(sum(hi - lo + 1 for lo, hi in p.slots) for p in topology.primaries)
    return slots, {e.address for e in topology.entries}


def test_restart_after_drain_finishes_the_scale_in(make_cluster: Any, tmp_path: Path) -> None:
    cluster: LocalCluster = make_cluster(3, 1)
    with ClusterClient(cluster.seed) as client:
        client.mset({f"k:{i}": i for i in range(3000)})
    cfg = _config(cluster, tmp_path)
    first = DiesAfterDrain(cfg, LocalPlatform({}), nodes=cluster)
    first.probe_once()
    with pytest.raises(Crash):
        first.reconcile_once()
    first.probe.close()  # a dead process: no stop(), no lease release
    record = IntentFile(tmp_path / f"intent-{cluster.seed.replace(':', '_')}.json").load()
    assert record.change is not None and record.change.kind == "scale_in"
    assert (record.change.from_shards, record.change.to_shards) == (3, 2)
    draining = set(record.change.draining)
    slots, members = _shape(cluster.seed)
    # drained, not forgotten: on Valkey the drained primary has made itself a replica, on
    # Redis 7.0 it is an empty primary (which a restart without intent would refill)
    assert [n for n in slots if n] == [8192, 8192] and draining and draining < members
    assert len(members) == 6

    second = Controller(cfg, LocalPlatform({}), nodes=cluster)
    try:
        second.probe_once()
        assert second.intent.change == record.change  # read back on start
        for _ in range(40):  # bounded: the dead holder's lease expires after 1 s
            decisions = {d.target: d for d in second.reconcile_once()}
            if second.scale_history:
                break
            second.probe_once()
            time.sleep(0.1)
        report = second.scale_history[-1]
        assert "resuming interrupted scale_in 3 -> 2" in decisions["shards"].reason
        removed = set(report.removed)
        assert report.after == 2 and len(removed) == 2 and removed <= draining
        seed = second._seed()
        slots, members = _shape(seed)
        assert slots == [8192, 8192] and len(members) == 4 and not removed & members
        assert second.intent.change is None
        assert second.intent_store is not None
        stored = second.intent_store.load()
        assert stored.change is None and stored.last_down_at is not None  # cooldown kept
        with ClusterClient(seed) as client:
            assert client.mget([f"k:{i}" for i in range(3000)]) == [
                str(i).encode() for i in range(3000)
            ]
    finally:
        second.stop()
