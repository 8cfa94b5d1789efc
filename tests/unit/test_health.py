"""Health model, gates and utilization as pure functions of samples and a clock."""
# ruff: noqa: E501  (CLUSTER NODES lines are long by nature)

from __future__ import annotations

import pytest

from controller.health import (
    Capacity,
    NodeHealth,
    build_view,
    next_health,
    node_utilization,
    shards_short_of_replicas,
)
from controller.probe import NodeSample, ProbeResult, parse_node_entries

NODES = """\
aaaa000000000000000000000000000000000000 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-8191
bbbb000000000000000000000000000000000000 127.0.0.1:7001@17001 master - 0 0 2 connected 8192-16383
cccc000000000000000000000000000000000000 127.0.0.1:7002@17002 slave aaaa000000000000000000000000000000000000 0 0 1 connected
"""


def sample(address: str, t: float = 100.0, **info: object) -> NodeSample:
    base: dict[str, object] = {
        "used_memory": 100,
        "maxmemory": 1000,
        "connected_clients": 10,
        "maxclients": 10000,
        "instantaneous_ops_per_sec": 5000,
        "used_cpu_sys": 1.0,
        "used_cpu_user": 1.0,
    }
    base.update(info)
    cluster = {"cluster_state": "ok", "cluster_current_epoch": "2", "cluster_slots_pfail": "0",
               "cluster_slots_fail": "0"}  # fmt: skip
    return NodeSample(address, t, latency_seconds=0.001, info=base, cluster_info=cluster)


def result(nodes: str = NODES) -> ProbeResult:
    entries = parse_node_entries(nodes)
    samples = {e.address: sample(e.address) for e in entries}
    return ProbeResult(0.0, 0.01, "127.0.0.1:7000", entries, samples)


@pytest.mark.parametrize(
    ("outcomes", "states"),
    [
        ("++", ["unknown", "up"]),
        ("+-+", ["unknown", "unknown", "unknown"]),
        ("++---", ["unknown", "up", "up", "up", "down"]),
        ("++--+---", ["unknown", "up", "up", "up", "up", "up", "up", "down"]),
        ("++---+", ["unknown", "up", "up", "up", "down", "down"]),
        ("++---++", ["unknown", "up", "up", "up", "down", "down", "up"]),
        ("---", ["unknown", "unknown", "down"]),
    ],
)
def test_rise_and_fall(outcomes: str, states: list[str]) -> None:
    health = NodeHealth()
    seen = []
    for t, outcome in enumerate(outcomes):
        health = next_health(health, outcome == "+", None if outcome == "+" else "timeout", 2, 3, t)
        seen.append(health.state)
    assert seen == states


def test_utilization_is_the_max_signal() -> None:
    before = sample("a", t=100.0, used_cpu_sys=1.0, used_cpu_user=1.0)
    now = sample("a", t=110.0, used_cpu_sys=3.0, used_cpu_user=4.0)  # 5 cpu-s in 10 s
    util, signals = node_utilization(now, before, Capacity(ops_per_second=50_000, cpu_cores=1))
    assert signals == pytest.approx({"memory": 0.1, "ops": 0.1, "clients": 0.001, "cpu": 0.5})
    assert util == pytest.approx(0.5)
    util, signals = node_utilization(now, before, Capacity(memory_bytes=200, cpu_cores=None))
    assert util == pytest.approx(0.5) and "cpu" not in signals


def test_malformed_info_gives_unknown_not_a_crash() -> None:
    bad = sample("a", used_memory="lots", maxmemory=0, instantaneous_ops_per_sec=None,
                 connected_clients="x", used_cpu_sys="?")  # fmt: skip
    assert node_utilization(bad, None, Capacity()) == (None, {})
    assert node_utilization(NodeSample("a", 1.0, error="timeout"), None, Capacity()) == (None, {})


def test_view_roles_shards_and_cluster_utilization() -> None:
    view = build_view(result(), None, Capacity(), rise=1, fall=3, now=10.0)
    assert view.nodes["127.0.0.1:7002"].role == "replica"
    assert view.nodes["127.0.0.1:7002"].shard == "aaaa" + "0" * 36
    assert set(view.shard_utilization) == {"aaaa" + "0" * 36, "bbbb" + "0" * 36}
    assert view.utilization == pytest.approx(0.1) and view.gates == ()


def test_down_primary_makes_cluster_utilization_unknown() -> None:
    r = result()
    dead = dict(r.samples)
    dead["127.0.0.1:7001"] = NodeSample("127.0.0.1:7001", 1.0, error="connection")
    view = None
    for t in range(3):
        view = build_view(ProbeResult(0, 0, r.source, r.entries, dead), view, Capacity(), 1, 1, t)
    assert view is not None and view.utilization is None
    assert view.max_utilization == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("nodes", "gate"),
    [
        (NODES.replace("0-8191", "0-8191 [100->-bbbb000000000000000000000000000000000000]"), "open_slots"),
        (NODES.replace("master - 0 0 2", "master,fail? - 0 0 2"), "node_failing"),
        (NODES.replace("master - 0 0 2", "master,fail - 0 0 2"), "node_failing"),
        (NODES + "dddd000000000000000000000000000000000000 127.0.0.1:7003@17003 handshake - 0 0 0 connected\n",
         "handshake"),
    ],
)  # fmt: skip
def test_gates_from_cluster_nodes(nodes: str, gate: str) -> None:
    view = build_view(result(nodes), None, Capacity(), 1, 3, now=10.0)
    assert gate in [g.name for g in view.gates]


def test_cluster_state_and_failover_gates() -> None:
    r = result()
    first = build_view(r, None, Capacity(), 1, 3, now=10.0)
    samples = dict(r.samples)
    s = samples["127.0.0.1:7001"]
    samples["127.0.0.1:7001"] = NodeSample(
        s.address, s.taken_at, None, 0.001, s.info,
        {**s.cluster_info, "cluster_state": "fail", "cluster_current_epoch": "3"},
    )  # fmt: skip
    second = build_view(ProbeResult(0, 0, r.source, r.entries, samples), first, Capacity(), 1, 3,
                        now=20.0, node_timeout_ms=15_000)  # fmt: skip
    assert {g.name for g in second.gates} == {"cluster_state", "failover_recent"}
    settled = {a: NodeSample(x.address, x.taken_at, None, 0.001, x.info,
                             {**x.cluster_info, "cluster_current_epoch": "3"})
               for a, x in r.samples.items()}  # fmt: skip
    later = build_view(ProbeResult(0, 0, r.source, r.entries, settled), second, Capacity(), 1, 3,
                       now=20.0 + 31.0, node_timeout_ms=15_000)  # fmt: skip
    assert later.gates == ()  # epoch settled for > 2 x node timeout


# -- issue 9: unknown signals, slotless failed nodes, our own epoch bumps -------------------

AAAA, BBBB, CCCC = ("aaaa" + "0" * 36, "bbbb" + "0" * 36, "cccc" + "0" * 36)


def test_first_cpu_sample_is_a_missing_signal() -> None:
    first = build_view(result(), None, Capacity(cpu_cores=1), 1, 3, now=10.0)
    assert first.utilization is not None  # the other signals give a number ...
    assert first.missing_signals == ("cpu@127.0.0.1:7000", "cpu@127.0.0.1:7001")  # ... but not all
    second = build_view(result(), first, Capacity(cpu_cores=1), 1, 3, now=20.0)
    assert second.missing_signals == ()
    no_cpu = build_view(result(), None, Capacity(cpu_cores=None), 1, 3, now=10.0)
    assert no_cpu.missing_signals == ()  # not configured, so not missing


def test_missing_signal_from_a_primary_that_stops_answering() -> None:
    r = result()
    first = build_view(r, None, Capacity(cpu_cores=1), 1, 3, now=10.0)
    samples = dict(r.samples)
    samples["127.0.0.1:7001"] = NodeSample("127.0.0.1:7001", 20.0, error="timeout")
    second = build_view(ProbeResult(0, 0, r.source, r.entries, samples), first,
                        Capacity(cpu_cores=1), 1, 3, now=20.0)  # fmt: skip
    assert "ops@127.0.0.1:7001" in second.missing_signals
    assert second.missing_signals == tuple(sorted(second.missing_signals))


def test_failed_node_without_slots_does_not_gate_and_is_timed() -> None:
    dead_replica = NODES.replace("slave aaaa", "slave,fail aaaa")
    first = build_view(result(dead_replica), None, Capacity(), 1, 3, now=10.0)
    assert "node_failing" not in [g.name for g in first.gates]
    assert first.failed_nodes == {CCCC: 10.0}
    later = build_view(result(dead_replica), first, Capacity(), 1, 3, now=70.0)
    assert later.failed_nodes == {CCCC: 10.0}  # first seen, not last seen
    healed = build_view(result(), later, Capacity(), 1, 3, now=80.0)
    assert healed.failed_nodes == {}


def test_shard_without_replica() -> None:
    view = build_view(result(), None, Capacity(), 1, 3, now=10.0)
    assert shards_short_of_replicas(view) == ["127.0.0.1:7001"]  # bbbb never had one
    dead = build_view(result(NODES.replace("slave aaaa", "slave,fail aaaa")), None, Capacity(),
                      1, 3, now=10.0)  # fmt: skip
    assert shards_short_of_replicas(dead) == ["127.0.0.1:7000", "127.0.0.1:7001"]
    assert shards_short_of_replicas(view, want=2) == ["127.0.0.1:7000", "127.0.0.1:7001"]
    assert shards_short_of_replicas(view, want=0) == []


def test_own_epoch_bump_is_not_a_failover() -> None:
    r = result()
    first = build_view(r, None, Capacity(), 1, 3, now=10.0)
    bumped = {a: NodeSample(x.address, x.taken_at, None, 0.001, x.info,
                            {**x.cluster_info, "cluster_current_epoch": "9"})
              for a, x in r.samples.items()}  # fmt: skip
    ours = build_view(ProbeResult(0, 0, r.source, r.entries, bumped), first, Capacity(), 1, 3,
                      now=20.0, own_change=True)  # fmt: skip
    assert ours.epoch == 9 and ours.gates == ()
    theirs = build_view(ProbeResult(0, 0, r.source, r.entries, bumped), first, Capacity(), 1, 3,
                        now=20.0)  # fmt: skip
    assert [g.name for g in theirs.gates] == ["failover_recent"]
