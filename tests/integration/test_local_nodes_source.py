"""The production node source against real servers: new nodes are configured like the
adopted cluster (persistence, protected mode, ACL users, node timeout), credentials stay
off argv, a node with keys is not shut down, a removed node's directory is deleted, and a
cluster with nodes on another host is refused."""

from __future__ import annotations

import stat
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import trustme
from redis.crc import key_slot

from controller.localcluster import LocalCluster, ServerNode, TLSFiles
from controller.platform.local_nodes import (
    CONFIG_FILE,
    ClusterAuth,
    ClusterStartError,
    LocalNodeSource,
    NodeSettings,
    NotOnThisHost,
    free_port,
    local_node_source,
    require_local,
)
from controller.scaling import NodeNotEmpty, retire_nodes
from controller.topology import connector, join
from tests.conftest import SERVERS

PASSWORD = "s3cret-Pw-for-tests"
AUTH = ClusterAuth(PASSWORD)


def _wait(check: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out: {what}")


def _acl(client: redis.Redis) -> list[str]:
    """ACL LIST without ``sanitize-payload`` (Redis 7.0 shows it for users loaded from a
    config file, not for the default user of ``requirepass``: same users, same rights)."""
    lines = client.execute_command("ACL", "LIST")
    return sorted(" ".join(t for t in line.split() if t != "sanitize-payload") for line in lines)


def test_new_nodes_inherit_the_cluster_and_keep_secrets_off_argv(
    make_cluster: Any, tmp_path: Path
) -> None:
    cluster: LocalCluster = make_cluster(2, 0, auth=AUTH)
    for node in cluster.nodes:  # an adopted production cluster, not test settings
        client = node.client()
        client.config_set("appendonly", "yes")
        client.config_set("save", "900 1")
        client.config_set("protected-mode", "yes")
        client.config_set("cluster-node-timeout", 3100)
        client.execute_command("ACL", "SETUSER", "app", "on", ">app-Pw-1", "~app:*", "+@all")
    source = local_node_source(cluster.nodes[0].client(), tmp_path / "nodes", AUTH)
    address = source.add_nodes(1, [n.address for n in cluster.nodes])[0]
    port = int(address.rpartition(":")[2])
    new = ServerNode(port, tmp_path, cluster.binary, auth=AUTH)
    try:
        client = new.client()
        expected = {"appendonly": "yes", "save": "900 1", "protected-mode": "yes",
                    "cluster-node-timeout": "3100"}  # fmt: skip
        assert {k: client.config_get(k)[k] for k in expected} == expected
        old_acl = _acl(cluster.nodes[0].client())
        assert _acl(client) == old_acl and len(old_acl) == 2
        app = new.client(username="app", password="app-Pw-1")
        assert app.execute_command("ACL", "WHOAMI") == "app"
        # credentials: in a 0600 file, never on the command line
        pid = int(client.info("server")["process_id"])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert not any(PASSWORD.encode() in arg for arg in cmdline), cmdline
        conf = tmp_path / "nodes" / str(port) / CONFIG_FILE
        # the server retitles itself, so check what it was started with too
        assert source._procs[port].args == [cluster.binary, str(conf)]
        assert stat.S_IMODE(conf.stat().st_mode) == 0o600
        assert PASSWORD in conf.read_text()  # masterauth: replication needs it
        # it joins as a replica (masterauth works) and then holds a copy of the data
        connect = connector(password=PASSWORD)
        primary_id = cluster.node_id(cluster.nodes[0])
        join(connect, cluster.seed, address, replica_of=primary_id, timeout=30)
        key = next(f"k{i}" for i in range(100) if key_slot(f"k{i}".encode()) < 8192)
        cluster.nodes[0].client().set(key, "v")  # node 0 owns slots 0-8191
        _wait(lambda: client.info("replication")["master_link_status"] == "up", "sync")
        _wait(lambda: client.dbsize() == 1, "the copy reached the replica")
        with pytest.raises(NodeNotEmpty, match="still holds 1 keys"):
            source.remove_nodes([address])  # never SHUTDOWN a node holding keys
        assert client.ping()
        node_id = str(client.execute_command("CLUSTER", "MYID"))
        assert retire_nodes(connect, cluster.seed, [node_id]) == [address]
        source.remove_nodes([address])
        assert not (tmp_path / "nodes" / str(port)).exists()  # its directory is gone
        with pytest.raises(redis.ConnectionError):
            new.client(timeout=0.5).ping()
    finally:
        source._kill(port)


def test_a_cluster_with_nodes_on_another_host_is_refused(
    server_flavor: str, tmp_path: Path
) -> None:
    port = free_port()
    node = ServerNode(port, tmp_path / "remote", SERVERS[server_flavor],
                      extra_args=["--cluster-announce-ip", "192.0.2.10"])  # fmt: skip
    node.start()
    try:
        _wait(lambda: node.client(timeout=0.5).ping(), "node answers")
        node.client().execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        with pytest.raises(NotOnThisHost, match=r"192\.0\.2\.10") as refused:
            local_node_source(node.client(), tmp_path / "nodes")
        assert refused.value.code == 2 and refused.value.field == "--seed/cluster.seeds"
        assert not (tmp_path / "nodes").exists()  # nothing was started
    finally:
        node.kill()


def test_addresses_of_this_host_pass_and_others_are_named() -> None:
    require_local(["127.0.0.1:7000", "localhost:7001", "[::1]:7002"])
    with pytest.raises(NotOnThisHost) as refused:
        require_local(["127.0.0.1:7000", "192.0.2.10:7000", "198.51.100.7:7001"])
    assert refused.value.addresses == ["192.0.2.10:7000", "198.51.100.7:7001"]


def test_a_node_that_cannot_start_is_reported_and_its_directory_removed(
    server_flavor: str, tmp_path: Path
) -> None:
    settings = NodeSettings(SERVERS[server_flavor], "127.0.0.1", (("no-such-directive", "1"),))
    source = LocalNodeSource(settings, tmp_path, start_timeout=10)
    with pytest.raises(ClusterStartError, match="exited"):
        source.add_nodes(1, ["127.0.0.1:20000"])
    assert list(tmp_path.iterdir()) == [] and source._procs == {}


@pytest.mark.skipif("redis" not in SERVERS, reason="TLS needs Debian's redis-server")
def test_a_tls_cluster_s_leaving_node_is_stopped_over_tls(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    files = TLSFiles(
        str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"), str(tmp_path / "ca.pem")
    )
    with LocalCluster(2, 0, binary=SERVERS["redis"], tls=files, auth=AUTH) as cluster:
        spare = cluster.add_node()  # an empty primary: the leaving node
        connect = connector(password=PASSWORD, ssl=True, ssl_ca_certs=files.ca_file,
                            ssl_certfile=files.cert_file, ssl_keyfile=files.key_file)  # fmt: skip
        retire_nodes(connect, cluster.seed, [cluster.node_id(spare)])
        source = local_node_source(cluster.nodes[0].client(), tmp_path / "nodes", AUTH)
        assert source.tls is not None and source.tls["ssl_ca_certs"] == files.ca_file
        source.remove_nodes([spare.address])
        assert spare.process is not None and spare.process.wait(timeout=10) == 0
