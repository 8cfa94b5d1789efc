"""`scale`, `rebalance` and `fix` act only while holding the cluster's lease: with another
live holder they exit 3 naming it, and once it is released they act and leave no lease
behind (real Valkey cluster, the lease set through the ClusterLease API)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from balancer import ClusterClient
from controller.lease import ClusterLease
from controller.localcluster import LocalCluster
from tests.conftest import SERVERS

pytestmark = pytest.mark.skipif("valkey" not in SERVERS, reason="no valkey-server")

CLI = [sys.executable, "-m", "controller.cli"]
ENV = {k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"}


@pytest.fixture(scope="module")
def lease_cluster() -> Iterator[LocalCluster]:
    with LocalCluster(3, 0, binary=SERVERS["valkey"]) as cluster:
        yield cluster


@pytest.fixture
def client(lease_cluster: LocalCluster) -> Iterator[ClusterClient]:
    with ClusterClient(lease_cluster.seed, socket_timeout=2.0) as c:
        yield c


def slotpilot(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120, env=ENV)


def commands(seed: str, workdir: Path) -> dict[str, list[str]]:
    return {
        "rebalance": ["rebalance", "--seed", seed],
        "fix": ["fix", "--seed", seed],
        "scale": ["scale", "--shards", "3", "--seed", seed, "--workdir", str(workdir)],
    }


@pytest.mark.parametrize("command", ["rebalance", "fix", "scale"])
def test_refused_while_another_holder_is_alive_then_acts(
    command: str, lease_cluster: LocalCluster, client: ClusterClient, tmp_path: Path
) -> None:
    argv = commands(lease_cluster.seed, tmp_path)[command]
    other = ClusterLease(client, owner="controller-on-host-b", ttl_seconds=30)
    other.acquire()
    try:
        refused = slotpilot(*argv)
        assert refused.returncode == 3, refused.stderr
        assert "refused: cluster is managed by controller-on-host-b" in refused.stderr
        assert "Traceback" not in refused.stderr
        assert other.holder() == "controller-on-host-b"  # untouched by the refused command
    finally:
        other.release()
    done = slotpilot(*argv)
    assert done.returncode == 0, done.stderr
    assert other.holder() is None  # the command released its lease on exit


def test_dry_run_needs_no_lease(lease_cluster: LocalCluster, client: ClusterClient) -> None:
    other = ClusterLease(client, owner="someone-else", ttl_seconds=30)
    other.acquire()
    try:
        dry = slotpilot("rebalance", "--seed", lease_cluster.seed, "--dry-run")
        assert dry.returncode == 0 and "balanced" in dry.stdout, dry.stderr
    finally:
        other.release()
