"""`scale`, `rebalance` and `fix` act only while holding the cluster's lease: with another
live holder they exit 3 naming it, and once it is released they act and leave no lease
behind (real Valkey cluster, the lease set through the ClusterLease API)."""

from __future__ import annotations

import os
import signal
import socket
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


def test_two_processes_one_actor(tmp_path: Path) -> None:
    """A rebalance in progress (stopped mid-migration so the overlap is certain) holds the
    lease: `fix` and `scale` from other processes are refused naming it; it then finishes."""
    with LocalCluster(3, 0, binary=SERVERS["valkey"]) as cluster:
        with ClusterClient(cluster.seed) as data:
            for start in range(0, 20_000, 2_000):
                data.mset({f"k:{i}": i for i in range(start, start + 2_000)})
        cluster.add_node()  # an empty primary: the rebalance gives it a quarter
        first = subprocess.Popen(
            [*CLI, "rebalance", "--seed", cluster.seed, "--engine", "classic"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
        )  # fmt: skip
        try:
            assert first.stderr is not None
            line = first.stderr.readline()  # its first progress line: it is acting
            assert line.startswith("{"), line
            first.send_signal(signal.SIGSTOP)
            try:
                for argv in (["fix", "--seed", cluster.seed],
                             ["scale", "--shards", "3", "--seed", cluster.seed,
                              "--workdir", str(tmp_path)]):  # fmt: skip
                    refused = slotpilot(*argv)
                    assert refused.returncode == 3, refused.stderr
                    assert f"slotpilot rebalance on {socket.gethostname()} pid {first.pid}" in (
                        refused.stderr
                    )
            finally:
                first.send_signal(signal.SIGCONT)
            _, rest = first.communicate(timeout=120)
            assert first.returncode == 0, rest
        finally:
            if first.poll() is None:
                first.kill()
                first.wait(10)
        with ClusterClient(cluster.seed) as data:
            assert ClusterLease(data).holder() is None
            assert data.mget([f"k:{i}" for i in range(20_000)]) == [
                str(i).encode() for i in range(20_000)
            ]


def test_sigterm_mid_rebalance_releases_the_lease_and_a_rerun_finishes(tmp_path: Path) -> None:
    """SIGTERM stops a command like Ctrl-C: it exits 130 through its cleanup, so the lease
    is free at once (not after its TTL) and the next run completes the work, nothing lost."""
    with LocalCluster(3, 0, binary=SERVERS["valkey"]) as cluster:
        with ClusterClient(cluster.seed) as data:
            for start in range(0, 60_000, 2_000):
                data.mset({f"k:{i}": i for i in range(start, start + 2_000)})
        cluster.add_node()  # a quarter of 60 k keys to move: seconds, not milliseconds
        first = subprocess.Popen(
            [*CLI, "rebalance", "--seed", cluster.seed, "--engine", "classic"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
        )  # fmt: skip
        try:
            assert first.stderr is not None
            line = first.stderr.readline()  # acting, holding the lease
            assert line.startswith("{"), line
            first.send_signal(signal.SIGTERM)
            _, rest = first.communicate(timeout=60)
        finally:
            if first.poll() is None:
                first.kill()
                first.wait(10)
        assert first.returncode == 130, rest
        assert "Traceback" not in rest
        with ClusterClient(cluster.seed) as data:
            assert ClusterLease(data).holder() is None  # released, not left to expire
        fixed = slotpilot("fix", "--seed", cluster.seed)  # close a slot the stop left open
        assert fixed.returncode == 0, fixed.stderr
        again = slotpilot("rebalance", "--seed", cluster.seed, "--json")
        assert again.returncode == 0, again.stderr
        cluster.wait_healthy()
        with ClusterClient(cluster.seed) as data:
            assert data.mget([f"k:{i}" for i in range(60_000)]) == [
                str(i).encode() for i in range(60_000)
            ]
