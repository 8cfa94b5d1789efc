"""`slotpilot scale` as scripts call it, and SIGKILL of it mid-migration, then resume.

New nodes are detached server processes under ``--workdir`` (they must outlive the
command); the fixture stops them from their pidfiles whatever happens.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from balancer import ClusterClient
from controller.localcluster import LocalCluster
from controller.scaling import live_entries
from controller.topology import connector, read_topology

CLI = [sys.executable, "-m", "controller.cli"]
ENV = dict(os.environ, PYTHONUNBUFFERED="1")


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    for pidfile in tmp_path.glob("*/server.pid"):
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pidfile.read_text().strip()), signal.SIGKILL)


def _shape(seed: str) -> tuple[int, list[int], int, int]:
    topology = read_topology(connector(), seed)
    live = live_entries(topology.entries)
    owners = [e for e in live if e.is_primary and e.slots]
    replicas = sorted(sum(1 for r in live if r.primary_id == p.node_id) for p in owners)
    covered = sum(hi - lo + 1 for p in owners for lo, hi in p.slots)
    return len(owners), replicas, covered, len(topology.open_slots())


def _scale(seed: str, shards: int, workdir: Path, *extra: str) -> Any:
    cmd = [*CLI, "scale", "--shards", str(shards), "--seed", seed, "--workdir", str(workdir)]
    return subprocess.run([*cmd, *extra, "--json"], capture_output=True, text=True,
                          timeout=300, env=ENV)  # fmt: skip


def test_scale_out_then_in_adopting_a_cluster(cluster: LocalCluster, workdir: Path) -> None:
    with ClusterClient(cluster.seed) as client:
        client.mset({f"k:{i}": i for i in range(2000)})
    out = _scale(cluster.seed, 4, workdir)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert (summary["before"], summary["after"], len(summary["added"])) == (3, 4, 2)
    assert summary["slots_moved"] == 4096 and summary["keys_moved"] > 300
    assert _shape(cluster.seed) == (4, [1, 1, 1, 1], 16384, 0)
    batches = [json.loads(line) for line in out.stderr.splitlines() if line.startswith("{")]
    assert sum(e["slots"] for e in batches if e["event"] == "moved") == 4096
    # the added nodes are detached processes with pidfiles: they outlived the command
    assert len(list(workdir.glob("*/server.pid"))) == 2

    config = workdir / "slotpilot.yaml"  # the same cluster through a config file
    config.write_text(
        f'cluster: {{seeds: ["{cluster.seed}"]}}\nshards: {{replicas_per_shard: 1}}\n'
    )
    back = subprocess.run([*CLI, "scale", "--shards", "3", "--config", str(config),
                           "--workdir", str(workdir), "--json"],
                          capture_output=True, text=True, timeout=300, env=ENV)  # fmt: skip
    assert back.returncode == 0, back.stderr
    summary = json.loads(back.stdout)
    assert sorted(summary["removed"]) == sorted(json.loads(out.stdout)["added"])
    assert _shape(cluster.seed) == (3, [1, 1, 1], 16384, 0)
    assert list(workdir.iterdir()) == [config]  # the removed nodes' directories are gone
    with ClusterClient(cluster.seed) as client:
        assert client.mget([f"k:{i}" for i in range(2000)]) == [
            str(i).encode() for i in range(2000)
        ]


def test_scale_rejects_bad_input(cluster: LocalCluster, workdir: Path) -> None:
    zero = _scale(cluster.seed, 0, workdir)
    assert zero.returncode == 2 and "--shards: must be >= 1" in zero.stderr
    bad = workdir / "bad.yaml"
    bad.write_text("cluster: {seeds: []}\n")
    result = subprocess.run([*CLI, "scale", "--shards", "3", "--config", str(bad)],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 2 and "cluster.seeds" in result.stderr
    garbled = subprocess.run([*CLI, "scale", "--shards", "3", "--seed", "nonsense"],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert garbled.returncode == 2 and "--seed: endpoint address 'nonsense'" in garbled.stderr
    negative = _scale(cluster.seed, 3, workdir, "--replicas", "-1")
    assert negative.returncode == 2 and "--replicas: must be >= 0" in negative.stderr


def test_scale_refuses_while_a_node_is_failing(make_cluster: Any, workdir: Path) -> None:
    # a failed node that still owns slots (no replica to take over); a failed slot-less
    # node would not block (it is forgotten after its grace period)
    cluster: LocalCluster = make_cluster(3, 0)
    victim, alive = cluster.primaries()[0], cluster.primaries()[1]
    victim.kill()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        flags = [e.flags for e in read_topology(connector(), alive.address).entries]
        if any("fail" in f for f in flags):
            break
        time.sleep(0.1)
    result = _scale(alive.address, 4, workdir)
    assert result.returncode == 3
    assert "refused" in result.stderr and "fail" in result.stderr
    assert list(workdir.glob("*/server.pid")) == []  # refused before starting anything


def _loaded_redis_cluster(make_cluster: Any, flavor: str) -> tuple[LocalCluster, dict[str, str]]:
    if flavor != "redis":
        pytest.skip("the classic engine is Redis 7's (Valkey moves slots atomically)")
    cluster: LocalCluster = make_cluster(3, 1)
    values = {f"key:{i}": f"v{i}" * 8 for i in range(40_000)}
    with ClusterClient(cluster.seed) as client:
        items = list(values.items())
        for i in range(0, len(items), 2000):
            client.mset(dict(items[i : i + 2000]))
    return cluster, values


def _assert_all_keys_back(seed: str, values: dict[str, str]) -> None:
    with ClusterClient(seed) as client:
        keys = list(values)
        for i in range(0, len(keys), 2000):
            chunk = keys[i : i + 2000]
            assert client.mget(chunk) == [values[k].encode() for k in chunk]
        assert client.dbsize() == len(values)


def _sigkill_inside_a_batch(cmd: list[str]) -> None:
    """Run ``cmd``; 50 ms after its first migration batch lands (the next one likely
    half-way, slots open), SIGKILL it."""
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env=ENV)  # fmt: skip
    assert proc.stderr is not None
    deadline = time.monotonic() + 120
    try:
        for line in proc.stderr:
            if '"event": "moved"' in line:
                time.sleep(0.05)
                proc.send_signal(signal.SIGKILL)
                break
            assert time.monotonic() < deadline, "no batch was moved in time"
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_sigkill_mid_migration_then_rerun_resumes(
    make_cluster: Any, server_flavor: str, workdir: Path
) -> None:
    """The classic engine is killed between batches with slots open; the same command run
    again closes them, finishes the move, and every key is where the cluster says."""
    cluster, values = _loaded_redis_cluster(make_cluster, server_flavor)
    cmd = [*CLI, "scale", "--shards", "5", "--seed", cluster.seed, "--workdir", str(workdir),
           "--engine", "classic"]  # fmt: skip
    _sigkill_inside_a_batch(cmd)
    assert _shape(cluster.seed)[2] == 16384
    partial = read_topology(connector(), cluster.seed)
    shares = sorted(sum(hi - lo + 1 for lo, hi in p.slots) for p in partial.primaries)
    assert partial.open_slots() or shares[0] < 3200, "killed too late: migration had finished"

    # The killed command's lease on the cluster stays until its TTL runs out: the re-run
    # is refused (exit 3, naming the holder) until then, and then resumes.
    deadline = time.monotonic() + 60
    again = _scale(cluster.seed, 5, workdir, "--engine", "classic")
    while again.returncode == 3 and "lease expires" in again.stderr:
        assert time.monotonic() < deadline, again.stderr
        time.sleep(1)
        again = _scale(cluster.seed, 5, workdir, "--engine", "classic")
    assert again.returncode == 0, again.stderr
    assert _shape(cluster.seed) == (5, [1, 1, 1, 1, 1], 16384, 0)
    _assert_all_keys_back(cluster.seed, values)


def test_controller_sigkilled_mid_migration_resumes_after_restart(
    make_cluster: Any, server_flavor: str, workdir: Path
) -> None:
    """`slotpilot run` (autoscale, classic engine) is killed while draining a shard; the
    restarted controller closes what was left open and reaches the target: 2 shards."""
    cluster, values = _loaded_redis_cluster(make_cluster, server_flavor)
    config = workdir / "slotpilot.yaml"
    config.write_text(
        f'cluster: {{seeds: ["{cluster.seed}"]}}\n'
        "probe: {interval_seconds: 0.5, timeout_seconds: 0.3, rise: 1, fall: 2}\n"
        "shards: {min_shards: 2, max_shards: 3, autoscale: true, engine: classic,\n"
        f"         node_timeout_ms: 2000, state_dir: '{workdir}',\n"
        "         capacity: {ops_per_second: 1000000, cpu_cores: null}}\n"
    )
    run = [*CLI, "run", "--config", str(config), "--port", "0"]
    _sigkill_inside_a_batch(run)
    partial = read_topology(connector(), cluster.seed)
    owners = [p for p in partial.primaries if p.slots]
    assert partial.open_slots() or len(owners) == 3, "killed too late: the drain had finished"

    second = subprocess.Popen(run, stderr=subprocess.PIPE, text=True, env=ENV)
    assert second.stderr is not None
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 120
        for line in second.stderr:
            lines.append(line)
            if '"event": "scaled"' in line:
                break
            assert time.monotonic() < deadline, (
                "the restarted controller never finished",
                lines[-25:],
            )
        scaled = json.loads(lines[-1])
        assert scaled["after"] == 2
        if partial.open_slots():  # the kill left slots open: closed before anything else
            assert any('"event": "repaired"' in line for line in lines)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)
    seed = next(n.address for n in cluster.nodes if n.running)
    assert _shape(seed) == (2, [1, 1], 16384, 0)
    _assert_all_keys_back(seed, values)


def _refuses(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=0.5).close()
    except OSError:
        return True
    return False


def test_sigterm_of_local_cluster_stops_the_nodes_scale_added(workdir: Path) -> None:
    """`slotpilot local-cluster` is a dev cluster: stopping it stops the nodes a later
    `scale` (or a controller's autoscale) added to it, and deletes their directories."""
    dev = subprocess.Popen([*CLI, "local-cluster", "--shards", "2", "--replicas", "0"],
                           stdout=subprocess.PIPE, text=True, env=ENV)  # fmt: skip
    try:
        assert dev.stdout is not None
        started = json.loads(dev.stdout.readline())
        out = _scale(started["seed"], 3, workdir)
        assert out.returncode == 0, out.stderr
        added = json.loads(out.stdout)["added"]
        assert len(added) == 1 and not _refuses(added[0])
        dev.send_signal(signal.SIGTERM)
        assert dev.wait(timeout=60) == 0
    finally:
        if dev.poll() is None:
            dev.kill()
            dev.wait(timeout=10)
    assert all(_refuses(a) for a in [*started["nodes"], *added])
    assert list(workdir.glob("*/slotpilot-node.conf")) == []  # directories deleted


def test_scale_in_without_memory_for_the_moved_data_exits_3(
    make_cluster: Any, workdir: Path
) -> None:
    cluster: LocalCluster = make_cluster(3, 0)
    with ClusterClient(cluster.seed) as client:
        client.mset({f"big:{i}": "x" * 512 for i in range(3000)})
    used = max(int(n.client().info("memory")["used_memory"]) for n in cluster.nodes)
    for node in cluster.nodes:  # room for what each holds, not for half of another's
        node.client().config_set("maxmemory", int(used * 1.3))
    result = _scale(cluster.seed, 2, workdir)
    assert result.returncode == 3, result.stderr
    assert "scale_in_capacity" in result.stderr and "would use" in result.stderr
    assert _shape(cluster.seed) == (3, [0, 0, 0], 16384, 0)  # nothing moved
    assert all(n.running for n in cluster.nodes)


def test_scale_in_stops_at_a_leaving_node_that_holds_a_key(
    make_cluster: Any, workdir: Path
) -> None:
    """A key stranded on a slot-less node (an ASK write of an interrupted migration): the
    scale-in that would remove that node exits 3 and leaves it running with the key."""
    from tests.integration.test_scale_in_safety import _add_spare, _owner_of, _strand_key

    cluster: LocalCluster = make_cluster(2, 0)
    spare = _add_spare(cluster)
    _strand_key(spare, _owner_of(cluster, "stranded"), "stranded")
    result = _scale(cluster.seed, 2, workdir, "--replicas", "0")
    assert result.returncode == 3, result.stderr
    assert "scale_in_not_empty" in result.stderr and spare.address in result.stderr
    assert spare.running and list(spare.client().scan_iter()) == ["stranded"]
