"""The probe against live clusters: a killed node, a hung node, a node answering garbage."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from controller.health import Capacity, ClusterView, build_view
from controller.localcluster import LocalCluster
from controller.probe import Probe


@pytest.fixture
def garbage_server() -> Iterator[str]:
    """A TCP server on 127.0.0.1 that answers anything with bytes that are not RESP."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1)
                try:
                    while conn.recv(4096):
                        conn.sendall(b"\x00\xffnot resp at all\r\n")
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(timeout=5)
    server.close()


def views(probe: Probe, cycles: int, previous: ClusterView | None = None) -> ClusterView:
    view = previous
    for _ in range(cycles):
        view = build_view(probe.run(), view, Capacity(), rise=2, fall=3, now=time.monotonic())
    assert view is not None
    return view


def test_healthy_cluster_all_up_with_roles_and_utilization(cluster: LocalCluster) -> None:
    probe = Probe([cluster.seed], timeout=0.5)
    view = views(probe, 2)
    assert len(view.nodes) == 6
    assert {n.health.state for n in view.nodes.values()} == {"up"}
    assert sorted(n.role for n in view.nodes.values()) == ["primary"] * 3 + ["replica"] * 3
    assert len(view.shard_utilization) == 3
    assert view.utilization is not None and 0 <= view.utilization < 0.5
    assert view.gates == ()
    # every replica's shard is its primary's id
    ids = {n.node_id for n in view.primaries}
    assert all(n.shard in ids for n in view.nodes.values())
    probe.close()


def test_killed_node_goes_down_after_fall_and_blocks_nothing_else(cluster: LocalCluster) -> None:
    probe = Probe([cluster.seed], timeout=0.5)
    view = views(probe, 2)
    victim = cluster.shard_map()[0][1][0]
    victim.kill()
    view = views(probe, 3, view)
    node = view.nodes[victim.address]
    assert node.health.state == "down" and node.health.last_error in ("connection", "breaker_open")
    assert all(n.health.state == "up" for a, n in view.nodes.items() if a != victim.address)
    assert view.utilization is not None  # a replica does not take the shard's signal away
    probe.close()


def test_hung_node_does_not_stall_the_cycle(cluster: LocalCluster) -> None:
    probe = Probe([cluster.seed], timeout=0.5)
    view = views(probe, 2)
    victim = cluster.shard_map()[1][0]  # a primary
    victim.signal(signal.SIGSTOP)
    durations = []
    for _ in range(3):
        result = probe.run()
        durations.append(result.duration_seconds)
        view = build_view(result, view, Capacity(), 2, 3, time.monotonic())
    assert view.nodes[victim.address].health.state == "down"
    assert view.nodes[victim.address].health.last_error in ("timeout", "breaker_open")
    # One timeout for the node (probes run in parallel), never one per command or node.
    assert max(durations) < 3 * probe.timeout
    # its shard has no usable signal: the cluster utilization is unknown (→ hold)
    assert view.utilization is None
    probe.close()


def test_garbage_answering_node_is_a_reason_not_a_crash(
    cluster: LocalCluster, garbage_server: str
) -> None:
    probe = Probe([garbage_server, cluster.seed], timeout=0.5)
    result = probe.run()
    assert result.source == cluster.seed  # the garbage seed was skipped for membership
    sample = probe.sample(garbage_server)
    assert not sample.ok and sample.error in ("malformed", "connection", "error_reply")
    assert len(result.samples) == 6 and all(s.ok for s in result.samples.values())
    probe.close()


def test_no_reachable_seed_is_a_gate(garbage_server: str) -> None:
    probe = Probe([garbage_server], timeout=0.3)
    view = build_view(probe.run(), None, Capacity(), 2, 3, time.monotonic())
    assert [g.name for g in view.gates] == ["unreachable"]
    assert view.utilization is None
    probe.close()
