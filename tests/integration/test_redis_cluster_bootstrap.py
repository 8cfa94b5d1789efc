"""The example cluster's bootstrap Job script, run for real against local server processes.

The script is taken verbatim from ``deploy/examples/redis-cluster/bootstrap-job.yaml`` and
run with ``sh`` on 127.0.0.1 nodes (``NODE_ADDRESSES`` replaces the pods' DNS names, and
``redis-cli`` stands in for ``valkey-cli`` when that is not installed). It must form a
3 x 1 cluster from empty password-protected nodes, do nothing on a second run, refuse to
create anything over a partly formed cluster, and give up on a silent node within its
bounded wait.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from controller.localcluster import ClusterAuth, ServerNode, available_servers, free_port

__all__: list[str] = []

ROOT = Path(__file__).resolve().parents[2]
JOB = ROOT / "deploy" / "examples" / "redis-cluster" / "bootstrap-job.yaml"
CLI = shutil.which("valkey-cli") or shutil.which("redis-cli")
SERVERS = available_servers()
PASSWORD = "bootstrap-test-secret"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(CLI is None, reason="no valkey-cli or redis-cli on PATH (redis-tools)"),
    pytest.mark.skipif(shutil.which("getent") is None, reason="no getent (glibc) on PATH"),
    pytest.mark.skipif(not SERVERS, reason="no valkey-server or redis-server binary"),
]


def _script() -> str:
    job = yaml.safe_load(JOB.read_text(encoding="utf-8"))
    script: str = job["spec"]["template"]["spec"]["containers"][0]["args"][0]
    return script


def run_bootstrap(addresses: list[str], tries: int = 40) -> subprocess.CompletedProcess[str]:
    """The Job's script with the Job's environment, pointed at local nodes."""
    assert CLI is not None
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "CLI": CLI,
        "NODE_ADDRESSES": " ".join(addresses),
        "REPLICAS_PER_SHARD": "1",
        "WAIT_TRIES": str(tries),
        "WAIT_SECONDS": "0.25",
        "REDISCLI_AUTH": PASSWORD,
        "VALKEYCLI_AUTH": PASSWORD,
    }
    return subprocess.run(
        ["sh", "-c", _script()], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[list[ServerNode]]:
    """Six empty, cluster-enabled, password-protected nodes (the StatefulSet's pods)."""
    binary = SERVERS.get("valkey") or next(iter(SERVERS.values()))
    started: list[ServerNode] = []
    try:
        for _ in range(6):
            port = free_port()
            node = ServerNode(port, tmp_path / str(port), binary, auth=ClusterAuth(PASSWORD))
            node.start()
            started.append(node)
        yield started
    finally:
        for node in started:
            node.stop()


def _shards(node: ServerNode) -> list[tuple[str, int]]:
    """(role, slot count) of every node, as one node sees the cluster."""
    text = node.client().execute_command("CLUSTER", "NODES")
    assert isinstance(text, str), type(text)
    result = []
    for line in text.strip().splitlines():
        fields = line.split()
        role = "primary" if "master" in fields[2] else "replica"
        slots = 0
        for item in fields[8:]:
            if item.startswith("["):
                continue
            low, _, high = item.partition("-")
            slots += int(high or low) - int(low) + 1
        result.append((role, slots))
    return sorted(result)


def test_forms_the_cluster_then_does_nothing_on_a_second_run(nodes: list[ServerNode]) -> None:
    addresses = [n.address for n in nodes]
    first = run_bootstrap(addresses)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    assert "bootstrap: formed:" in first.stdout
    for node in nodes:
        info = node.client().cluster("info")
        assert info["cluster_state"] == "ok"
        assert int(info["cluster_known_nodes"]) == 6
    shards = _shards(nodes[0])
    assert [r for r, _ in shards].count("primary") == 3
    assert sum(s for _, s in shards) == 16384
    ids_before = sorted(node.client().execute_command("CLUSTER", "MYID") for node in nodes)
    epoch_before = nodes[0].client().cluster("info")["cluster_current_epoch"]

    second = run_bootstrap(addresses)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "already formed" in second.stdout and "nothing to do" in second.stdout
    assert "formed:" not in second.stdout.replace("already formed", "")
    assert sorted(node.client().execute_command("CLUSTER", "MYID") for node in nodes) == ids_before
    assert nodes[0].client().cluster("info")["cluster_current_epoch"] == epoch_before
    assert _shards(nodes[0]) == shards


def test_a_partly_formed_cluster_is_left_alone(nodes: list[ServerNode]) -> None:
    """Two nodes that met but own no slots: not ok, so exit 1 and create nothing."""
    nodes[0].client().execute_command("CLUSTER", "MEET", "127.0.0.1", nodes[1].port)
    result = run_bootstrap([n.address for n in nodes])
    assert result.returncode == 1, result.stdout + result.stderr
    assert "do not re-create it" in result.stderr
    for node in nodes:
        assert int(node.client().cluster("info")["cluster_slots_assigned"]) == 0


def test_a_silent_node_ends_the_wait(nodes: list[ServerNode]) -> None:
    """A node that never answers: the bounded wait gives up and nothing is created."""
    silent = f"127.0.0.1:{free_port()}"
    result = run_bootstrap([n.address for n in nodes[:5]] + [silent], tries=3)
    assert result.returncode == 1
    assert f"{silent} did not answer PING after 3 tries" in result.stderr
    for node in nodes:
        assert int(node.client().cluster("info")["cluster_known_nodes"]) == 1
