"""The harness itself: it forms a healthy cluster and leaves no process behind."""

from __future__ import annotations

import os
import signal

import pytest
import redis

from controller.localcluster import LocalCluster, available_servers, find_server_binary


def test_forms_healthy_cluster_with_replicas(cluster: LocalCluster) -> None:
    shards = cluster.shard_map()
    assert len(shards) == 3
    assert all(len(replicas) == 1 for _, replicas in shards)
    for node in cluster.nodes:
        info = node.client().cluster("info")
        assert info["cluster_state"] == "ok"
        assert int(info["cluster_slots_assigned"]) == 16384
    for _, replicas in shards:
        assert replicas[0].client().info("replication")["master_link_status"] == "up"


def test_stop_leaves_no_process(server_flavor: str) -> None:
    cluster = LocalCluster(2, 0, binary=available_servers()[server_flavor]).start()
    pids = [n.process.pid for n in cluster.nodes if n.process]
    cluster.nodes[0].signal(signal.SIGSTOP)  # a hung node must not block teardown
    cluster.stop()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not cluster.workdir.exists()


def test_failed_start_cleans_up(tmp_path: object) -> None:
    bad = LocalCluster(1, 0, binary=find_server_binary(), extra_args=["--no-such-option", "x"])
    with pytest.raises(Exception, match=r"exited|answer"):
        bad.start()
    assert all(not n.running for n in bad.nodes)


def test_env_binary_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLOTPILOT_SERVER_BIN", "/opt/custom/valkey-server")
    assert find_server_binary() == "/opt/custom/valkey-server"


def test_admin_client_reaches_node(cluster: LocalCluster) -> None:
    node = cluster.nodes[0]
    assert node.client().ping() is True
    node.kill()
    with pytest.raises(redis.ConnectionError):
        node.client(timeout=0.2).ping()
