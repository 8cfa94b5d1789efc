"""The controller end to end on the local platform: a growing list scales a consumer
target of real processes up, and the controller brings it back down after the window."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest

from balancer import ClusterClient
from controller.config import load_config
from controller.localcluster import LocalCluster
from controller.loop import Controller
from controller.metrics import ControllerMetrics
from controller.platform import LocalPlatform

SLEEPER = [sys.executable, "-c", "import time; time.sleep(300)"]


def _config(tmp_path: Path, cluster: LocalCluster) -> Path:
    path = tmp_path / "slotpilot.yaml"
    path.write_text(
        f"""
cluster: {{seeds: ["{cluster.seed}"]}}
probe: {{interval_seconds: 1, timeout_seconds: 0.5, rise: 1, fall: 2}}
shards: {{min_shards: 2, max_shards: 4}}
consumers:
  - name: jobs
    source: {{type: redis_list, key: "queue:jobs"}}
    target_backlog_per_replica: 10
    min_replicas: 0
    max_replicas: 5
    command: {json.dumps(SLEEPER)}
    behavior:
      scale_down_stabilization_seconds: 30
      scale_up: {{pods: 4, percent: 100, period_seconds: 15}}
"""
    )
    return path


def test_consumer_scales_with_the_list_and_back(
    tmp_path: Path, cluster: LocalCluster, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = load_config(_config(tmp_path, cluster))
    platform = LocalPlatform({"jobs": SLEEPER}, grace_seconds=2)
    clock = [1000.0]
    metrics = ControllerMetrics()
    controller = Controller(cfg, platform, clock=lambda: clock[0], metrics=metrics)
    client = ClusterClient(cluster.seed)
    caplog.set_level(logging.INFO, logger="slotpilot.decision")
    try:
        controller.probe_once()
        assert controller.ready and controller.view is not None
        assert len(controller.view.nodes) == 6
        first = controller.plan()[0]  # one CPU sample is no rate: hold, never lower
        assert first.desired == 3 and first.blocked_by == ("missing_data",)
        assert "utilization signal unknown this cycle (cpu@" in first.reason
        controller.probe_once()

        def step(at: float, backlog: int) -> int:
            clock[0] = at
            client.delete("queue:jobs")
            if backlog:
                client.rpush("queue:jobs", *range(backlog))
            controller.reconcile_once()
            return platform.get_replicas("jobs")

        assert step(1000, 0) == 0  # idle, nothing running
        assert step(1001, 35) == 4  # ceil(35 / 10)
        assert step(1005, 80) == 4  # rate limit: +4 pods or +100 % per 15 s
        assert step(1020, 80) == 5  # next period, clamped to max_replicas
        assert step(1025, 0) == 5  # empty, but the 30 s down-window remembers 5
        assert step(1051, 0) == 0  # window passed: back to zero
        shard = controller.decisions["shards"]
        # an idle cluster wants fewer shards; without slot migration it is only reported
        assert (shard.current, shard.desired) == (3, 2) and "< 30.0 %" in shard.reason
        lines = [
            json.loads(r.getMessage()) for r in caplog.records if r.name == "slotpilot.decision"
        ]
        jobs = [line for line in lines if line["target"] == "jobs"]
        assert [line["desired"] for line in jobs] == [0, 4, 4, 5, 5, 0]
        assert any("rate-limited" in line["reason"] for line in jobs)
        assert all({"reason", "blocked_by", "direction", "acted"} <= line.keys() for line in lines)
        assert not any(line["acted"] for line in lines if line["target"] == "shards")
        # quiet log: the same shard decision six cycles running is one line; the metric
        # still counts every cycle
        assert len([line for line in lines if line["target"] == "shards"]) == 1
        text = metrics.render().decode()
        assert 'slotpilot_decisions_total{direction="down",target="shards"} 6.0' in text
    finally:
        controller.stop()
        platform.close()
        client.close()


def test_plan_is_a_dry_run(tmp_path: Path, cluster: LocalCluster) -> None:
    cfg = load_config(_config(tmp_path, cluster))
    platform = LocalPlatform({"jobs": SLEEPER})
    controller = Controller(cfg, platform)
    client = ClusterClient(cluster.seed)
    try:
        client.rpush("queue:jobs", *range(50))
        controller.probe_once()
        planned = {d.target: d for d in controller.plan()}
        assert planned["jobs"].desired == 4 and planned["jobs"].current == 0
        assert platform.get_replicas("jobs") == 0  # nothing was started
        assert controller.consumer_states["jobs"].recommendations == ()  # nor remembered
    finally:
        controller.stop()
        platform.close()
        client.close()


def test_source_failure_holds(tmp_path: Path, cluster: LocalCluster) -> None:
    cfg = load_config(_config(tmp_path, cluster))
    platform = LocalPlatform({"jobs": SLEEPER})
    controller = Controller(cfg, platform)
    client = ClusterClient(cluster.seed)
    try:
        platform.set_replicas("jobs", 2)
        client.set("queue:jobs", "not a list")  # WRONGTYPE: the source fails
        controller.probe_once()
        decisions = {d.target: d for d in controller.reconcile_once()}
        assert decisions["jobs"].desired == 2 and decisions["jobs"].blocked_by == ("source_failed",)
        assert platform.get_replicas("jobs") == 2
    finally:
        controller.stop()
        platform.close()
        client.close()
