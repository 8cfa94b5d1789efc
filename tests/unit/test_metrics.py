"""Controller metrics: exact exposed values and labels, parsed back from render()."""
# ruff: noqa: E501  (CLUSTER NODES lines are long by nature)

from __future__ import annotations

import math
from dataclasses import dataclass

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from controller.health import Capacity, ClusterView, build_view
from controller.metrics import ControllerMetrics
from controller.policy import Decision
from controller.probe import NodeSample, ProbeResult, parse_node_entries
from controller.routing import build_routing_table, replica_lag
from tests.unit.test_health import NODES, sample

A, B, C = "127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002"
SHARD_A, SHARD_B, SHARD_C = ("aaaa" + "0" * 36), ("bbbb" + "0" * 36), ("cccc" + "0" * 36)
Labels = tuple[tuple[str, str], ...]


def probe(
    nodes: str = NODES,
    errors: dict[str, str] | None = None,
    duration: float = 0.02,
    **info: dict[str, object],
) -> ProbeResult:
    """A probe cycle over ``nodes``; ``errors`` fail nodes, ``info`` overrides INFO fields."""
    entries = parse_node_entries(nodes)
    samples = {}
    for entry in entries:
        address = entry.address
        if errors and address in errors:
            samples[address] = NodeSample(address, 1.0, error=errors[address])
        else:
            samples[address] = sample(
                address, 100.0, **info.get(f"p{address.rsplit(':', 1)[1]}", {})
            )
    return ProbeResult(0.0, duration, A, entries, samples)


def view(result: ProbeResult, previous: ClusterView | None = None) -> ClusterView:
    """rise=1 fall=1: one good probe is up, one bad one is down (health is tested elsewhere)."""
    return build_view(result, previous, Capacity(cpu_cores=None), rise=1, fall=1, now=10.0)


def series(metrics: ControllerMetrics, name: str) -> dict[Labels, float]:
    """Every sample called exactly ``name``, keyed by its sorted labels."""
    out: dict[Labels, float] = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


def value(metrics: ControllerMetrics, name: str, **labels: str) -> float:
    return series(metrics, name)[tuple(sorted(labels.items()))]


def node_up(node: str, role: str, shard: str) -> Labels:
    return (("node", node), ("role", role), ("shard", shard))


def test_node_and_cluster_gauges() -> None:
    metrics = ControllerMetrics()
    metrics.observe_view(view(probe(p7001={"used_memory": 300})))
    assert series(metrics, "slotpilot_node_up") == {
        node_up(A, "primary", SHARD_A): 1,
        node_up(B, "primary", SHARD_B): 1,
        node_up(C, "replica", SHARD_A): 1,
    }
    assert series(metrics, "slotpilot_node_utilization_ratio") == pytest.approx(
        {(("node", A),): 0.1, (("node", B),): 0.3, (("node", C),): 0.1}
    )
    assert value(metrics, "slotpilot_cluster_utilization_ratio") == pytest.approx(0.2)
    assert value(metrics, "slotpilot_cluster_utilization_max_ratio") == pytest.approx(0.3)
    assert value(metrics, "slotpilot_cluster_state_ok") == 1
    assert series(metrics, "slotpilot_cluster_gate") == {}


def test_down_node_reads_zero_and_unknown_utilization_is_absent_or_nan() -> None:
    metrics = ControllerMetrics()
    metrics.observe_view(view(probe(errors={B: "timeout"})))
    assert value(metrics, "slotpilot_node_up", node=B, role="primary", shard=SHARD_B) == 0
    assert (("node", B),) not in series(metrics, "slotpilot_node_utilization_ratio")
    assert math.isnan(value(metrics, "slotpilot_cluster_utilization_ratio"))  # a shard is unknown
    assert value(metrics, "slotpilot_cluster_utilization_max_ratio") == pytest.approx(0.1)


def test_vanished_node_loses_every_series() -> None:
    metrics = ControllerMetrics()
    first = probe(errors={C: "connection"})
    metrics.observe_probe(first)
    metrics.observe_view(view(first))
    metrics.observe_breakers({A: "closed", B: "closed", C: "open"})
    assert C in metrics.render().decode()

    without_c = NODES.splitlines(keepends=True)[:2]
    second = probe("".join(without_c))
    metrics.observe_probe(second)
    metrics.observe_view(view(second))
    metrics.observe_breakers({A: "closed", B: "closed", C: "open"})  # probes keep old breakers
    assert C not in metrics.render().decode()
    assert set(series(metrics, "slotpilot_node_up")) == {
        node_up(A, "primary", SHARD_A),
        node_up(B, "primary", SHARD_B),
    }
    assert series(metrics, "slotpilot_breaker_state") == {(("node", A),): 0, (("node", B),): 0}


def test_failover_moves_role_and_shard_labels_without_leaving_the_old_series() -> None:
    metrics = ControllerMetrics()
    metrics.observe_view(view(probe()))
    failed_over = """\
aaaa000000000000000000000000000000000000 127.0.0.1:7000@17000 slave cccc000000000000000000000000000000000000 0 0 3 connected
bbbb000000000000000000000000000000000000 127.0.0.1:7001@17001 master - 0 0 2 connected 8192-16383
cccc000000000000000000000000000000000000 127.0.0.1:7002@17002 myself,master - 0 0 3 connected 0-8191
"""
    metrics.observe_view(view(probe(failed_over)))
    assert series(metrics, "slotpilot_node_up") == {
        node_up(A, "replica", SHARD_C): 1,
        node_up(B, "primary", SHARD_B): 1,
        node_up(C, "primary", SHARD_C): 1,
    }


def test_gates_close_and_open_again() -> None:
    metrics = ControllerMetrics()
    healthy = probe()
    failing = probe(NODES.replace("master - 0 0 2", "master,fail? - 0 0 2"))
    s = failing.samples[B]
    broken = dict(failing.samples)
    broken[B] = NodeSample(B, s.taken_at, None, 0.001, s.info, {**s.cluster_info, "cluster_state": "fail"})  # fmt: skip
    metrics.observe_view(view(ProbeResult(0, 0.01, A, failing.entries, broken)))
    assert value(metrics, "slotpilot_cluster_state_ok") == 0
    assert series(metrics, "slotpilot_cluster_gate") == {
        (("gate", "cluster_state"),): 1,
        (("gate", "node_failing"),): 1,
    }
    metrics.observe_view(view(healthy))
    assert value(metrics, "slotpilot_cluster_state_ok") == 1
    assert series(metrics, "slotpilot_cluster_gate") == {
        (("gate", "cluster_state"),): 0,
        (("gate", "node_failing"),): 0,
    }

    nobody = ProbeResult(0, 0.5, None, (), {A: NodeSample(A, 1.0, error="connection")},
                         membership_error="127.0.0.1:7000: connection")  # fmt: skip
    metrics.observe_view(view(nobody))
    assert value(metrics, "slotpilot_cluster_state_ok") == 0
    assert value(metrics, "slotpilot_cluster_gate", gate="unreachable") == 1


def test_probe_duration_and_error_reasons() -> None:
    metrics = ControllerMetrics()
    metrics.observe_probe(probe(errors={A: "timeout", B: "connection"}, duration=0.02))
    metrics.observe_probe(probe(errors={A: "timeout"}, duration=0.3))
    metrics.observe_probe(probe(duration=0.01))
    assert series(metrics, "slotpilot_probe_errors_total") == {
        (("node", A), ("reason", "timeout")): 2,
        (("node", B), ("reason", "connection")): 1,
    }
    assert value(metrics, "slotpilot_probe_duration_seconds_count") == 3
    assert value(metrics, "slotpilot_probe_duration_seconds_sum") == pytest.approx(0.33)
    buckets = series(metrics, "slotpilot_probe_duration_seconds_bucket")
    assert buckets[(("le", "0.025"),)] == 2 and buckets[(("le", "0.5"),)] == 3


def test_breaker_states_and_removal() -> None:
    metrics = ControllerMetrics()
    metrics.observe_breakers({A: "closed", B: "half-open", C: "open", "d:1": "???"})
    assert series(metrics, "slotpilot_breaker_state") == {
        (("node", A),): 0,
        (("node", B),): 1,
        (("node", C),): 2,
        (("node", "d:1"),): 2,  # an unreadable state reads as open
    }
    metrics.observe_breakers({A: "open"})
    assert series(metrics, "slotpilot_breaker_state") == {(("node", A),): 2}


@dataclass(frozen=True)
class Step:
    target: str
    current: int
    desired: int
    direction: str
    blocked_by: tuple[str, ...] = ()


def test_decisions_count_moves_and_blocked_reasons_go_back_to_zero() -> None:
    metrics = ControllerMetrics()
    metrics.observe_decision(Step("jobs", 1, 3, "up"))
    metrics.observe_decision(Step("jobs", 3, 2, "down"))
    metrics.observe_decision(Step("jobs", 2, 2, "none", ("cooldown", "gate:cluster_state")))
    assert series(metrics, "slotpilot_scaling_blocked") == {
        (("reason", "cooldown"), ("target", "jobs")): 1,
        (("reason", "gate:cluster_state"), ("target", "jobs")): 1,
    }
    metrics.observe_decision(Step("jobs", 2, 2, "none", ("cooldown",)))
    assert (
        value(metrics, "slotpilot_scaling_blocked", target="jobs", reason="gate:cluster_state") == 0
    )
    assert value(metrics, "slotpilot_scaling_blocked", target="jobs", reason="cooldown") == 1
    metrics.observe_decision(Step("jobs", 2, 2, "none"))
    assert set(series(metrics, "slotpilot_scaling_blocked").values()) == {0}
    assert series(metrics, "slotpilot_scaling_decisions_total") == {
        (("direction", "up"), ("target", "jobs")): 1,
        (("direction", "down"), ("target", "jobs")): 1,
    }

    metrics.observe_decision(Decision("shards", 3, 4, "above threshold"))  # the real type fits
    assert series(metrics, "slotpilot_replicas") == {
        (("kind", "current"), ("target", "jobs")): 2,
        (("kind", "desired"), ("target", "jobs")): 2,
        (("kind", "current"), ("target", "shards")): 3,
        (("kind", "desired"), ("target", "shards")): 4,
    }
    assert value(metrics, "slotpilot_scaling_decisions_total", target="shards", direction="up") == 1


def test_backlog_leader_and_migration() -> None:
    metrics = ControllerMetrics()
    metrics.observe_backlog("jobs", 42)
    assert value(metrics, "slotpilot_consumer_backlog", target="jobs") == 42
    metrics.observe_backlog("jobs", None)  # the source failed: unknown, not the last value
    assert math.isnan(value(metrics, "slotpilot_consumer_backlog", target="jobs"))
    assert value(metrics, "slotpilot_leader") == 0
    metrics.set_leader(True)
    assert value(metrics, "slotpilot_leader") == 1

    metrics.set_migration_in_progress(True)
    assert value(metrics, "slotpilot_migration_in_progress") == 1
    metrics.observe_batch(slots=100, keys=4000)
    metrics.observe_batch(slots=28, keys=1000)
    metrics.migration_duration.observe(0.2)
    metrics.migration_duration.observe(12.0)
    metrics.set_migration_in_progress(False)
    assert value(metrics, "slotpilot_migration_in_progress") == 0
    assert value(metrics, "slotpilot_migrated_slots_total") == 128
    assert value(metrics, "slotpilot_migrated_keys_total") == 5000
    assert value(metrics, "slotpilot_migration_duration_seconds_count") == 2


def test_each_instance_owns_its_registry() -> None:
    first, second = ControllerMetrics(), ControllerMetrics()  # no duplicate-name error
    first.set_leader(True)
    assert value(second, "slotpilot_leader") == 0
    global_names = {f.name for f in prometheus_client.REGISTRY.collect()}
    assert not any(name.startswith("slotpilot_") for name in global_names)


def test_errors_by_stage_and_decisions_every_cycle() -> None:
    m = ControllerMetrics()
    m.count_error("shards")
    m.count_error("shards")
    m.count_error("lease")
    for _ in range(3):
        m.observe_decision(Decision("shards", 3, 3, "within band"))
    m.observe_decision(Decision("shards", 3, 4, "busy"))
    text = m.render().decode()
    assert 'slotpilot_errors_total{stage="shards"} 2.0' in text
    assert 'slotpilot_errors_total{stage="lease"} 1.0' in text
    assert 'slotpilot_decisions_total{direction="none",target="shards"} 3.0' in text
    assert 'slotpilot_decisions_total{direction="up",target="shards"} 1.0' in text
    assert 'slotpilot_scaling_decisions_total{direction="up",target="shards"} 1.0' in text


def replica(node: str, shard: str) -> Labels:
    return (("node", node), ("shard", shard))


def test_replica_lag_and_stale_follow_the_replicas() -> None:
    metrics = ControllerMetrics()
    metrics.observe_replicas({C: (SHARD_A, 1.5, False), "d:1": (SHARD_B, math.inf, True)})
    assert series(metrics, "slotpilot_replica_lag_seconds") == {
        replica(C, SHARD_A): 1.5,
        replica("d:1", SHARD_B): math.inf,  # the link is down
    }
    assert series(metrics, "slotpilot_replica_stale") == {
        replica(C, SHARD_A): 0,
        replica("d:1", SHARD_B): 1,
    }

    # C fails over (a primary now: no longer a replica), d:1 replicates another shard
    metrics.observe_replicas({"d:1": (SHARD_C, 3.0, False)})
    assert series(metrics, "slotpilot_replica_lag_seconds") == {replica("d:1", SHARD_C): 3.0}
    assert series(metrics, "slotpilot_replica_stale") == {replica("d:1", SHARD_C): 0}

    metrics.observe_replicas({})  # no replica left: no series left
    assert series(metrics, "slotpilot_replica_lag_seconds") == {}
    assert series(metrics, "slotpilot_replica_stale") == {}


def test_unknown_replica_lag_has_no_series() -> None:
    metrics = ControllerMetrics()
    metrics.observe_replicas({C: (SHARD_A, None, False)})  # no usable INFO yet
    assert series(metrics, "slotpilot_replica_lag_seconds") == {}
    assert series(metrics, "slotpilot_replica_stale") == {replica(C, SHARD_A): 0}

    metrics.observe_replicas({C: (SHARD_A, 45.0, True)})
    assert value(metrics, "slotpilot_replica_lag_seconds", node=C, shard=SHARD_A) == 45
    metrics.observe_replicas({C: (SHARD_A, None, False)})  # known, then unknown again
    assert series(metrics, "slotpilot_replica_lag_seconds") == {}
    assert value(metrics, "slotpilot_replica_stale", node=C, shard=SHARD_A) == 0

    metrics.observe_replicas({C: (SHARD_B, None, True)})  # shard changed while unknown
    assert series(metrics, "slotpilot_replica_stale") == {replica(C, SHARD_B): 1}
    assert series(metrics, "slotpilot_replica_lag_seconds") == {}


def test_replica_series_of_a_real_view() -> None:
    """What the control loop feeds it: a view's replicas, their lag from INFO."""
    seen = view(probe(p7002={"master_link_status": "down", "master_last_io_seconds_ago": -1}))
    states = {e.address: e.state for e in build_routing_table(seen).nodes}
    metrics = ControllerMetrics()
    metrics.observe_replicas({
        address: (node.shard or "", replica_lag(node), states[address] == "stale")
        for address, node in seen.nodes.items() if node.role == "replica"
    })  # fmt: skip
    assert series(metrics, "slotpilot_replica_lag_seconds") == {replica(C, SHARD_A): math.inf}
    assert series(metrics, "slotpilot_replica_stale") == {replica(C, SHARD_A): 1}


def test_repairs_by_kind_and_zero_counts_are_ignored() -> None:
    metrics = ControllerMetrics()
    metrics.count_repair("rejoin")
    metrics.count_repair("node_started", 2)
    metrics.count_repair("open_slots", 12)
    metrics.count_repair("node_forgotten", 0)  # a repair run that found nothing of the kind
    metrics.count_repair("replica_attached", -1)
    assert series(metrics, "slotpilot_repairs_total") == {
        (("kind", "rejoin"),): 1,
        (("kind", "node_started"),): 2,
        (("kind", "open_slots"),): 12,
    }
    metrics.count_repair("rejoin", 0)
    metrics.count_repair("rejoin")
    assert value(metrics, "slotpilot_repairs_total", kind="rejoin") == 2
