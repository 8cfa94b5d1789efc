"""kill -9 of `slotpilot run` in the middle of a scale-in, then a restart: the restarted
controller reads its intent record (shards.state_dir), waits out the dead holder's lease,
and finishes the scale-in; the record is cleared afterwards and every key is still there."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from balancer import ClusterClient
from controller.intent import IntentFile, intent_path
from controller.localcluster import LocalCluster
from controller.topology import connector, read_topology

CLI = [sys.executable, "-m", "controller.cli"]
ENV = dict(os.environ, PYTHONUNBUFFERED="1")


def _kill_after_drain(cmd: list[str], share: int) -> list[str]:
    """Run ``cmd``; SIGKILL it once its batches have moved a whole primary's share (the
    drain is done, the leaving nodes are not forgotten yet). The lines it printed."""
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env=ENV)  # fmt: skip
    assert proc.stderr is not None
    lines, moved = [], 0
    deadline = time.monotonic() + 120
    try:
        for line in proc.stderr:
            lines.append(line)
            if '"event": "moved"' in line:
                moved += json.loads(line)["slots"]
                if moved >= share:
                    proc.send_signal(signal.SIGKILL)
                    break
            assert time.monotonic() < deadline, "the controller never drained a shard"
    finally:
        proc.kill()
        proc.wait(timeout=10)
    return lines


def test_kill_9_mid_scale_in_then_restart_finishes(cluster: LocalCluster, tmp_path: Path) -> None:
    values = {f"k:{i}": str(i) for i in range(5000)}
    with ClusterClient(cluster.seed) as client:
        client.mset(values)
    config = tmp_path / "slotpilot.yaml"
    config.write_text(
        f'cluster: {{seeds: ["{cluster.seed}"]}}\n'
        "probe: {interval_seconds: 0.5, timeout_seconds: 0.3, rise: 1, fall: 2}\n"
        "shards: {min_shards: 2, max_shards: 3, autoscale: true, node_timeout_ms: 2000,\n"
        f"         state_dir: '{tmp_path / 'nodes'}', lease_ttl_seconds: 2,\n"
        "         capacity: {ops_per_second: 1000000, cpu_cores: null}}\n"
    )
    run = [*CLI, "run", "--config", str(config), "--port", "0"]
    try:
        _kill_after_drain(run, 5461)
        store = IntentFile(intent_path(str(tmp_path / "nodes"), cluster.seed))
        pending = store.load().change
        assert pending is not None and (pending.kind, pending.to_shards) == ("scale_in", 2)

        second = subprocess.Popen(run, stderr=subprocess.PIPE, text=True, env=ENV)
        assert second.stderr is not None
        lines: list[str] = []
        try:
            deadline = time.monotonic() + 120
            scaled: dict[str, object] = {}
            for line in second.stderr:
                lines.append(line)
                if '"event": "scaled"' in line:
                    scaled = json.loads(line)
                # the decision is logged once it was carried out: after "scaled"
                if scaled and '"acted": true' in line and '"target": "shards"' in line:
                    break
                assert time.monotonic() < deadline, "the restarted controller never finished"
            assert any('"event": "intent_loaded"' in line for line in lines)
            decisions = [d for d in (json.loads(x) for x in lines if x.startswith("{"))
                         if "acted" in d]  # fmt: skip
            shard = [d for d in decisions if d["target"] == "shards"]
            assert any("resuming interrupted scale_in 3 -> 2" in d["reason"] for d in shard), (
                shard,
                lines[-20:],
            )
            assert scaled["after"] == 2
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(timeout=30) == 0
        assert store.load().change is None
        seed = next(n.address for n in cluster.nodes if n.running)
        topology = read_topology(connector(), seed)
        owners = [p for p in topology.primaries if p.slots]
        assert len(owners) == 2 and len(topology.entries) == 4 and not topology.open_slots()
        with ClusterClient(seed) as client:
            keys = list(values)
            assert client.mget(keys) == [values[k].encode() for k in keys]
    finally:
        for pidfile in tmp_path.glob("nodes/*/server.pid"):
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pidfile.read_text().strip()), signal.SIGKILL)
