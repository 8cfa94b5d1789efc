"""Routing table: states, weights, stable versions and ETags."""

from __future__ import annotations

from controller.health import Capacity, ClusterView, build_view
from controller.probe import NodeSample, ProbeResult
from controller.routing import MIN_WEIGHT, build_routing_table
from tests.unit.test_health import result


def view_with(down: str | None = None, busy: str | None = None) -> ClusterView:
    r = result()
    samples = dict(r.samples)
    if down:
        samples[down] = NodeSample(down, 1.0, error="timeout")
    if busy:
        s = samples[busy]
        samples[busy] = NodeSample(busy, s.taken_at, None, 0.001,
                                   {**s.info, "used_memory": 950}, s.cluster_info)  # fmt: skip
    return build_view(ProbeResult(0, 0, r.source, r.entries, samples), None, Capacity(), 1, 1, 5.0)


def test_states_and_weights() -> None:
    table = build_routing_table(view_with(down="127.0.0.1:7001", busy="127.0.0.1:7002"),
                                draining={"127.0.0.1:7000"})  # fmt: skip
    by = {n.address: n for n in table.nodes}
    assert (by["127.0.0.1:7000"].state, by["127.0.0.1:7000"].weight) == ("draining", 0.0)
    assert (by["127.0.0.1:7001"].state, by["127.0.0.1:7001"].weight) == ("down", 0.0)
    assert by["127.0.0.1:7002"].state == "up" and by["127.0.0.1:7002"].weight == MIN_WEIGHT
    assert (
        by["127.0.0.1:7002"].role == "replica" and by["127.0.0.1:7002"].shard == "aaaa" + "0" * 36
    )


def test_version_and_etag_move_only_on_change() -> None:
    first = build_routing_table(view_with())
    same = build_routing_table(view_with(), previous=first)
    assert same is first and same.etag == first.etag and first.version == 1
    changed = build_routing_table(view_with(down="127.0.0.1:7001"), previous=first)
    assert changed.version == 2 and changed.etag != first.etag
    assert changed.to_json()["nodes"][1]["state"] == "down"


def test_draining_by_node_id() -> None:
    table = build_routing_table(view_with(), draining={"bbbb" + "0" * 36})
    assert [n.address for n in table.nodes if n.state == "draining"] == ["127.0.0.1:7001"]


def test_status_document_and_table() -> None:
    from controller.status import build_status, render_status

    status = build_status(
        view_with(down="127.0.0.1:7001"),
        {"shards": {"current": 2, "desired": 2, "reason": "within band", "blocked_by": ["at_min"]}},
        draining=["127.0.0.1:7002"],
    )
    assert status["ready"] and len(status["nodes"]) == 3 and len(status["shards"]) == 2
    assert status["shards"][0]["replicas"] == ["127.0.0.1:7002"]
    text = render_status(status)
    assert "127.0.0.1:7001" in text and "timeout" in text and "draining" in text
    assert "blocked: at_min" in text and "max" in text
    assert render_status(build_status(None, {})).startswith("controller not ready")


def test_status_table_shows_resharding() -> None:
    from controller.status import build_status, render_status

    status = build_status(view_with(), {})
    assert "reshard" not in render_status(status)
    status["resharding"] = {"in_progress": True, "last": None}
    assert "resharding: in progress" in render_status(status)
    last = {"before": 3, "after": 4, "seconds": 2.46, "slots_moved": 4096, "keys_moved": 2812}
    status["resharding"] = {"in_progress": False, "last": last}
    assert "last reshard: 3 -> 4 shards in 2.5s, 4096 slots, 2812 keys moved" in render_status(
        status
    )


def _replica_with(**info: object) -> ClusterView:
    r = result()
    samples = dict(r.samples)
    s = samples["127.0.0.1:7002"]
    samples["127.0.0.1:7002"] = NodeSample(s.address, s.taken_at, None, 0.001,
                                           {**s.info, **info}, s.cluster_info)  # fmt: skip
    return build_view(ProbeResult(0, 0, r.source, r.entries, samples), None, Capacity(), 1, 1, 5.0)


def test_stale_replica_gets_weight_zero() -> None:
    def replica(view: ClusterView, lag: float = 30.0) -> tuple[str, float]:
        table = build_routing_table(view, max_replica_lag_seconds=lag)
        entry = next(n for n in table.nodes if n.address == "127.0.0.1:7002")
        return entry.state, entry.weight

    fresh = _replica_with(master_link_status="up", master_last_io_seconds_ago=1)
    assert replica(fresh)[0] == "up" and replica(fresh)[1] > 0
    assert replica(_replica_with(master_link_status="down")) == ("stale", 0.0)
    silent = _replica_with(master_link_status="up", master_last_io_seconds_ago=12)
    assert replica(silent, lag=10) == ("stale", 0.0)
    assert replica(silent, lag=15)[0] == "up"
    assert replica(view_with())[0] == "up"  # no replication fields: unknown, not stale


def test_status_names_the_lease_holder_and_structure_problems() -> None:
    from controller.intent import PendingChange
    from controller.status import build_status, render_status

    lease = {"holding": False, "holder": "other-host:4242", "expires_in": 11.6, "owner": "me:1"}
    change = PendingChange("scale_in", 4, 3, 1.0, ("127.0.0.1:7001",))
    status = build_status(view_with(), {}, (), lease, change, now=5.0)
    assert status["lease"]["holder"] == "other-host:4242"
    assert status["intent"]["draining"] == ("127.0.0.1:7001",)
    assert status["shards_without_replica"] == ["127.0.0.1:7001"]  # bbbb has no replica
    text = render_status(status)
    assert "lease: held by other-host:4242 (expires in 12 s); this controller only observes" in text
    assert "finishing interrupted scale_in 4 -> 3" in text
    assert "shard without replica: 127.0.0.1:7001" in text
    mine = render_status(build_status(view_with(), {}, (), {"holding": True}))
    assert "lease: held by this controller" in mine
