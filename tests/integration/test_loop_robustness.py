"""The controller loop on real servers (issue 9): a shard action that blows up is counted
and never stops consumer scaling; probes never overlap; our own reshard is not a
failover; a replica whose link is down is routed around; a failed replica that owns no
slots does not block scaling, is forgotten after its grace period, and its shard gets a
new replica."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from controller.config import SlotpilotConfig
from controller.localcluster import LocalCluster
from controller.loop import Controller
from controller.metrics import ControllerMetrics
from controller.platform import LocalPlatform
from controller.probe import ProbeResult

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def _config(cluster: LocalCluster, consumers: bool = False, **shards: Any) -> SlotpilotConfig:
    data: dict[str, Any] = {
        "cluster": {"seeds": [cluster.seed]},
        "probe": {"interval_seconds": 1.0, "timeout_seconds": 0.5, "rise": 1, "fall": 1},
        "shards": {"node_timeout_ms": cluster.node_timeout_ms, "autoscale": True,
                   "capacity": {"ops_per_second": 1_000_000, "cpu_cores": None}, **shards},
    }  # fmt: skip
    if consumers:
        data["consumers"] = [{"name": "jobs", "source": {"type": "redis_list", "key": "q"},
                              "target_backlog_per_replica": 10, "max_replicas": 3}]  # fmt: skip
    return SlotpilotConfig.model_validate(data)


class BrokenNodes:
    """A node source whose every call fails with an error nobody planned for."""

    def add_nodes(self, count: int, existing: Sequence[str]) -> list[str]:
        raise RuntimeError("node source exploded")

    def check_leaving(self, addresses: Sequence[str]) -> None:
        pass

    def size(self) -> int | None:
        return None

    def pending(self) -> list[str]:
        return []

    def remove_nodes(self, addresses: Sequence[str]) -> None:
        raise RuntimeError("node source exploded")

    def ordinal(self, address: str) -> Any:
        return address


def _wait(check: Any, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.2)


def test_shard_error_is_counted_and_consumers_still_scale(make_cluster: Any) -> None:
    cluster: LocalCluster = make_cluster(3, 0)
    metrics = ControllerMetrics()
    platform = LocalPlatform({"jobs": SLEEPER}, grace_seconds=1)
    cfg = _config(cluster, consumers=True, min_shards=4, max_shards=5, replicas_per_shard=0)
    controller = Controller(cfg, platform, metrics=metrics, nodes=BrokenNodes())
    try:
        controller.client().rpush("q", *range(25))
        controller.probe_once()
        decisions = {d.target: d for d in controller.reconcile_once()}
        assert decisions["shards"].desired == 4  # below min: one step up, which blows up
        assert 'slotpilot_errors_total{stage="shards"} 1.0' in metrics.render().decode()
        assert platform.get_replicas("jobs") == 3  # consumers scaled in the same cycle
        again = {d.target: d for d in controller.reconcile_once()}
        assert again["shards"].blocked_by == ("backoff",)  # not retried every interval
        assert controller.shard_state.failures == 1
    finally:
        controller.stop()
        platform.close()


def test_probes_never_overlap(cluster: LocalCluster) -> None:
    controller = Controller(_config(cluster), LocalPlatform({}))
    running, most = [0], [0]
    guard = threading.Lock()
    real = controller.probe.run

    def counted() -> ProbeResult:
        with guard:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            time.sleep(0.05)
            return real()
        finally:
            with guard:
                running[0] -= 1

    controller.probe.run = counted  # type: ignore[method-assign]
    try:
        threads = [threading.Thread(target=controller.probe_once) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert most[0] == 1 and controller.view is not None
    finally:
        controller.stop()


def test_own_reshard_is_not_a_failover(make_cluster: Any) -> None:
    cluster: LocalCluster = make_cluster(3, 1)
    controller = Controller(_config(cluster, min_shards=2, max_shards=3), LocalPlatform({}),
                            nodes=cluster)  # fmt: skip
    try:
        controller.probe_once()
        epoch = controller.view.epoch  # type: ignore[union-attr]
        assert controller.scale_shards(2)  # bumps epochs: SETSLOT, FAILOVER, FORGET
        view = controller.probe_once()
        assert view.epoch > epoch
        assert "failover_recent" not in {g.name for g in view.gates}
    finally:
        controller.stop()


def test_replica_with_link_down_is_routed_around(cluster: LocalCluster) -> None:
    metrics = ControllerMetrics()
    controller = Controller(_config(cluster), LocalPlatform({}), metrics=metrics)
    replica = next(n for n in cluster.nodes if cluster.role(n) == "slave")
    try:
        controller.probe_once()

        def state() -> str:
            table = controller.routing
            assert table is not None
            return next(n.state for n in table.nodes if n.address == replica.address)

        assert state() == "up"
        client = replica.client()
        # the primary has no password: the replica's AUTH fails and its link stays down
        client.config_set("masterauth", "wrong-on-purpose")
        client.client_kill_filter(_type="master")
        _wait(lambda: controller.probe_once() is not None and state() == "stale")
        entry = next(n for n in controller.routing.nodes if n.address == replica.address)  # type: ignore[union-attr]
        assert entry.weight == 0.0
        labels = {"node": replica.address, "shard": entry.shard or ""}
        assert metrics.registry.get_sample_value("slotpilot_replica_stale", labels) == 1
        assert metrics.registry.get_sample_value("slotpilot_replica_lag_seconds", labels) == float(
            "inf"
        )
        client.config_set("masterauth", "")
        client.client_kill_filter(_type="master")
        _wait(lambda: controller.probe_once() is not None and state() == "up")
        assert metrics.registry.get_sample_value("slotpilot_replica_stale", labels) == 0
        lag = metrics.registry.get_sample_value("slotpilot_replica_lag_seconds", labels)
        assert lag is not None and lag < 30
    finally:
        controller.stop()


def test_failed_replica_is_forgotten_and_replaced(make_cluster: Any) -> None:
    cluster: LocalCluster = make_cluster(2, 1)
    cfg = _config(cluster, min_shards=2, max_shards=3, replicas_per_shard=1,
                  forget_failed_after_seconds=1)  # fmt: skip
    metrics = ControllerMetrics()
    controller = Controller(cfg, LocalPlatform({}), nodes=cluster, metrics=metrics)
    victim = next(n for n in cluster.nodes if cluster.role(n) == "slave")
    try:
        victim.kill()

        def failed() -> bool:
            view = controller.probe_once()
            return bool(view.failed_nodes)

        _wait(failed)
        view = controller.view
        assert view is not None and "node_failing" not in {g.name for g in view.gates}
        status = controller.status()
        assert len(status["shards_without_replica"]) == 1
        _wait(lambda: controller.reconcile_once() is not None and controller.probe_once()
              and not controller.status()["shards_without_replica"], seconds=60)  # fmt: skip
        members = {n.address for n in controller.view.nodes.values()}  # type: ignore[union-attr]
        assert victim.address not in members and len(members) == 4
        assert not controller.view.failed_nodes  # type: ignore[union-attr]
        repairs = metrics.registry.get_sample_value
        assert repairs("slotpilot_repairs_total", {"kind": "node_forgotten"}) == 1
        assert repairs("slotpilot_repairs_total", {"kind": "node_started"}) == 1
    finally:
        controller.stop()


def _burst(cluster: LocalCluster, seconds: float) -> None:
    """About ``seconds`` of pipelined PINGs to every primary (bounded in time): each node
    counts them in instantaneous_ops_per_sec like any read."""
    clients = [n.client() for n in cluster.primaries()]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for client in clients:
            pipe = client.pipeline(transaction=False)
            for _ in range(500):
                pipe.ping()
            pipe.execute()


def test_one_second_burst_adds_no_shard(cluster: LocalCluster) -> None:
    """A ~1 s read burst reads as far above the threshold; with the stabilization window
    the decision holds, without it (window 0) the same probe would add a shard."""
    clock = [1000.0]
    patient = Controller(_config(cluster, min_shards=3, max_shards=5, autoscale=False,
                                 scale_up_stabilization_seconds=60),
                         LocalPlatform({}), clock=lambda: clock[0])  # fmt: skip
    eager = Controller(_config(cluster, min_shards=3, max_shards=5, autoscale=False,
                               scale_up_stabilization_seconds=0, scale_up_stabilization_probes=1,
                               capacity={"ops_per_second": 1000, "cpu_cores": None}),
                       LocalPlatform({}), clock=lambda: clock[0])  # fmt: skip
    patient.capacity = eager.capacity  # 1000 ops/s = 100 %: the burst is far above
    try:
        for c in (patient, eager):
            c.probe_once()
        _burst(cluster, 1.0)
        for c in (patient, eager):
            c.probe_once()
        hot = patient.view
        assert hot is not None and hot.utilization is not None and hot.utilization > 0.8
        assert eager.plan()[0].desired == 4  # what the burst alone would have done
        seen = []
        for _ in range(8):  # then quiet probes, 5 s apart on the controller's clock
            decision = patient.reconcile_once()[0]
            seen.append((decision.desired, decision.blocked_by))
            clock[0] += 5.0
            time.sleep(0.3)
            patient.probe_once()
        assert seen[0] == (3, ("stabilization",))
        assert all(desired == 3 for desired, _ in seen)
    finally:
        patient.stop()
        eager.stop()


def test_drifted_slot_shares_are_rebalanced_while_holding(make_cluster: Any) -> None:
    """Two actors once left 3842/4350/4096/4096-like shares that neither corrected: the
    holder now brings every primary back within the tolerance of the even share."""
    from controller.loop import slot_skew
    from controller.topology import connector, rebalance

    cluster: LocalCluster = make_cluster(3, 0)
    ids = [cluster.node_id(n) for n in cluster.primaries()]
    rebalance(connector(), cluster.seed, weights={ids[0]: 0.7, ids[1]: 1.3, ids[2]: 1.0})
    controller = Controller(_config(cluster, min_shards=3, max_shards=3), LocalPlatform({}),
                            nodes=cluster)  # fmt: skip
    try:
        assert slot_skew(controller.probe_once()) > 0.2
        controller.reconcile_once()
        assert slot_skew(controller.probe_once()) < 0.05
    finally:
        controller.stop()


def test_the_leader_posts_node_down_and_recovered_events(make_cluster: Any) -> None:
    """A replica that stops answering (SIGSTOP) and comes back (SIGCONT) gives one
    NodeDown and one NodeRecovered Event, from the lease holder only."""
    cluster: LocalCluster = make_cluster(2, 1)
    posted: list[tuple[str, str, str, bool]] = []
    controller = Controller(_config(cluster), LocalPlatform({}),
                            events=lambda *event: posted.append(event))  # fmt: skip
    follower_posted: list[Any] = []
    follower = Controller(_config(cluster), LocalPlatform({}),
                          events=lambda *event: follower_posted.append(event))  # fmt: skip
    replica = next(n for n in cluster.nodes if cluster.role(n) == "slave")
    assert replica.process is not None
    try:
        assert controller.hold_lease() and not follower.hold_lease()
        controller.probe_once()
        follower.probe_once()
        replica.process.send_signal(signal.SIGSTOP)
        try:
            _wait(lambda: controller.probe_once() is not None and follower.probe_once()
                  and any(e[1] == "NodeDown" for e in posted))  # fmt: skip
        finally:
            replica.process.send_signal(signal.SIGCONT)
        _wait(lambda: controller.probe_once() is not None
              and any(e[1] == "NodeRecovered" for e in posted))  # fmt: skip
        reasons = [e[1] for e in posted]
        assert reasons.count("NodeDown") == 1 and reasons.count("NodeRecovered") == 1
        down = next(e for e in posted if e[1] == "NodeDown")
        assert down[0] == "shards" and replica.address in down[2] and down[3] is True
        assert follower_posted == []
    finally:
        follower.stop()
        controller.stop()


class StuckNodes(BrokenNodes):
    """New nodes that never come (pods Pending): ``add_nodes`` waits until released or
    until ``keep_going`` (the controller's ``may_act``) says stop, as platform waits do."""

    def __init__(self) -> None:
        self.waiting = threading.Event()
        self.released = threading.Event()
        self.keep_going: Any = lambda: True

    def add_nodes(self, count: int, existing: Sequence[str]) -> list[str]:
        from controller.platform import PlatformError

        self.waiting.set()
        while not self.released.wait(0.05):
            if not self.keep_going():
                raise PlatformError("stopped waiting for new pods: shutting down")
        raise PlatformError("released without nodes")


def test_consumers_scale_while_a_reshard_waits_and_stop_interrupts_the_wait(
    make_cluster: Any,
) -> None:
    cluster: LocalCluster = make_cluster(1, 0)
    platform = LocalPlatform({"jobs": SLEEPER}, grace_seconds=1)
    cfg = _config(cluster, consumers=True, min_shards=2, max_shards=3, replicas_per_shard=0)
    nodes = StuckNodes()
    controller = Controller(cfg, platform, nodes=nodes)
    stopped = False
    try:
        controller.client().rpush("q", *range(25))
        controller.start()
        assert nodes.waiting.wait(30), "the shard stage never asked for nodes"
        _wait(lambda: platform.get_replicas("jobs") == 3)  # while the reshard waits
        assert controller.migrating and not nodes.released.is_set()
        began = time.monotonic()
        controller.stop()  # SIGTERM: the wait gives up, the Lease can be released
        stopped = True
        assert time.monotonic() - began < 15, "stop waited for the node wait to time out"
        assert not controller.migrating
    finally:
        nodes.released.set()
        if not stopped:
            controller.stop()
        platform.close()
