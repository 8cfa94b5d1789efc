"""``slotpilot scale`` grows a local cluster wherever its ports are: on 30001+ (Redis's
``create-cluster``) and on 7000+ (the Redis tutorial), not only in the harness's random
range. New nodes take the lowest free ports above the old ones, so they sort after them
and are the ones to leave on scale-in. Also: ``SLOTPILOT_LOCAL_PORTS`` picks the range of
new local clusters, in this process and in the processes it starts.
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
import redis

from balancer import ClusterClient
from balancer.endpoint import parse_address
from controller.errors import BadInput
from controller.localcluster import LocalCluster
from controller.platform.local_nodes import (
    BUS_PORT_OFFSET,
    LOCAL_PORTS_ENV,
    ClusterStartError,
    free_port,
    local_port_range,
    port_ordinal,
)
from controller.scaling import live_entries
from controller.topology import connector, read_topology

CLI = [sys.executable, "-m", "controller.cli"]
SHARDS, REPLICAS = 2, 1
# Each flavor gets its own block, so parallel workers never start both on one port.
FLAVOR_OFFSET = {"valkey": 0, "redis": 100}


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    """Where ``scale`` starts its detached nodes; they are killed from their pidfiles."""
    yield tmp_path
    for pidfile in tmp_path.glob("*/server.pid"):
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pidfile.read_text().strip()), signal.SIGKILL)


def _listening(port: int) -> bool:
    """Whether something holds ``port`` on 127.0.0.1 (a TIME_WAIT leftover does not:
    servers bind with SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _start_on(make_cluster: Any, first: int) -> LocalCluster:
    """A cluster on consecutive ports of the first free block at or above ``first`` (in
    steps of 200, at most 20 tries: ports above 30000 share the range the kernel hands
    out to outgoing connections), or a skip when none is free."""
    size = SHARDS * (REPLICAS + 1)
    for base in range(first, first + 20 * 200, 200):
        ports = range(base, base + size)
        busy = [p for p in ports for q in (p, p + BUS_PORT_OFFSET) if _listening(q)]
        if not busy:
            break
    else:
        pytest.skip(f"no free block of {size} ports (and bus ports) from {first} on")
    try:
        cluster: LocalCluster = make_cluster(SHARDS, REPLICAS, base_port=base)
    except ClusterStartError as exc:
        if "in use" not in str(exc):  # lost a race for a port to another process
            raise
        pytest.skip(f"a port of {base}-{ports[-1]} was taken while starting: {exc}")
    return cluster


def _scale(seed: str, shards: int, workdir: Path) -> dict[str, Any]:
    cmd = [*CLI, "scale", "--shards", str(shards), "--seed", seed, "--workdir", str(workdir)]
    out = subprocess.run([*cmd, "--json"], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PYTHONUNBUFFERED="1"))  # fmt: skip
    assert out.returncode == 0, out.stderr
    summary: dict[str, Any] = json.loads(out.stdout)
    return summary


def _wait_all_ok(seed: str, timeout: float = 15.0) -> list[str]:
    """Every live node says ``cluster_state:ok``; their addresses."""
    deadline = time.monotonic() + timeout
    while True:
        live = [e.address for e in live_entries(read_topology(connector(), seed).entries)]
        states = {}
        for address in live:
            host, port = parse_address(address)
            with contextlib.suppress(redis.RedisError):
                info = redis.Redis(host, port, socket_timeout=2, decode_responses=True)
                states[address] = info.cluster("info")["cluster_state"]
        if all(states.get(a) == "ok" for a in live):
            return live
        assert time.monotonic() < deadline, f"cluster not ok on every node: {states}"
        time.sleep(0.1)


def _shape(seed: str) -> tuple[int, list[int], int, int]:
    """(slot-owning primaries, replicas of each, slots covered, open slots)."""
    topology = read_topology(connector(), seed)
    live = live_entries(topology.entries)
    owners = [e for e in live if e.is_primary and e.slots]
    replicas = sorted(sum(1 for r in live if r.primary_id == p.node_id) for p in owners)
    covered = sum(hi - lo + 1 for p in owners for lo, hi in p.slots)
    return len(owners), replicas, covered, len(topology.open_slots())


# Above 30000 like create-cluster's 30001+ (the old search stopped at 29999), placed at
# 36001 so that no test worker's bus ports (its client ports +10000: 30000-35999) meet it.
@pytest.mark.parametrize("base", [36001, 7000], ids=["above-30000", "tutorial-7000"])
def test_scale_out_a_cluster_on_fixed_ports_then_back(
    make_cluster: Any, server_flavor: str, base: int, workdir: Path
) -> None:
    cluster = _start_on(make_cluster, base + FLAVOR_OFFSET[server_flavor])
    old = sorted(n.address for n in cluster.nodes)
    values = {f"k:{i}": f"v{i}" for i in range(2000)}
    with ClusterClient(cluster.seed) as client:
        client.mset(values)

    summary = _scale(cluster.seed, SHARDS + 1, workdir)
    assert (summary["before"], summary["after"]) == (SHARDS, SHARDS + 1)
    added = summary["added"]
    assert len(added) == REPLICAS + 1
    highest_old = max(port_ordinal(a)[1] for a in old)
    assert all(port_ordinal(a)[1] > highest_old for a in added), (old, added)
    # by the scaler's own ordering the new nodes are the newest: the first to leave
    everyone = sorted(_wait_all_ok(cluster.seed), key=port_ordinal)
    assert sorted(everyone[-len(added) :]) == sorted(added)
    assert _shape(cluster.seed) == (SHARDS + 1, [REPLICAS] * (SHARDS + 1), 16384, 0)
    with ClusterClient(cluster.seed) as client:
        assert client.mget(list(values)) == [v.encode() for v in values.values()]

    back = _scale(cluster.seed, SHARDS, workdir)
    assert sorted(back["removed"]) == sorted(added)
    assert sorted(_wait_all_ok(cluster.seed)) == old
    assert _shape(cluster.seed) == (SHARDS, [REPLICAS] * SHARDS, 16384, 0)
    with ClusterClient(cluster.seed) as client:
        assert client.mget(list(values)) == [v.encode() for v in values.values()]


def test_new_local_clusters_take_ports_from_the_environment_range(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    low, high = local_port_range()  # this worker's range: stay inside it
    high = min(high, low + 99)
    monkeypatch.setenv(LOCAL_PORTS_ENV, f"{low}-{high}")
    ports = [free_port() for _ in range(3)]
    assert all(low <= p <= high for p in ports) and len(set(ports)) == 3
    child = subprocess.run(
        [sys.executable, "-c", "from controller.localcluster import free_port; print(free_port())"],
        capture_output=True, text=True, timeout=60, env=dict(os.environ),
    )  # fmt: skip
    assert child.returncode == 0, child.stderr
    assert low <= int(child.stdout) <= high  # a process the suite starts inherits it

    monkeypatch.setenv(LOCAL_PORTS_ENV, "7000-6000")
    with pytest.raises(BadInput, match=LOCAL_PORTS_ENV):
        free_port()
