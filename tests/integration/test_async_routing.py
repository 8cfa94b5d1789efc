"""Where AsyncClusterClient sends reads: ``read_from``, the controller's routing table
and replica freshness, on real servers (the sync client's rules, shared code)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from balancer import ClusterError
from balancer.aio import AsyncClusterClient
from controller.localcluster import ClusterAuth, LocalCluster, free_port
from tests.conftest import FLAVORS, SERVERS, _flavor_param
from tests.integration.test_routing_follow import TableServer
from tests.integration.test_sdk_safety import get_calls, wait_synced


@pytest.fixture(scope="module", params=[_flavor_param(f) for f in FLAVORS])
def shard(request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    """One primary and one replica (with a password), per flavor."""
    auth = ClusterAuth(password="pw")
    with LocalCluster(1, 1, binary=SERVERS[request.param], auth=auth) as cluster:
        primary, (replica,) = cluster.shard_map()[0]
        primary.client().set("k", "v")
        wait_synced(primary, replica)
        yield cluster


async def until(check: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition never met"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("read_from", ["primary", "replicas", "any"])
def test_read_from_decides_which_nodes_serve_reads(shard: LocalCluster, read_from: str) -> None:
    primary, (replica,) = shard.shard_map()[0]
    primary.client().config_resetstat()
    replica.client().config_resetstat()

    async def main() -> None:
        async with AsyncClusterClient(shard.seed, password="pw", read_from=read_from) as c:  # type: ignore[arg-type]
            assert await asyncio.gather(*(c.get("k") for _ in range(100))) == [b"v"] * 100

    asyncio.run(main())
    on_primary, on_replica = get_calls(primary), get_calls(replica)
    assert on_primary + on_replica == 100
    if read_from == "primary":
        assert on_replica == 0
    elif read_from == "replicas":
        assert on_primary == 0
    else:
        assert on_primary > 10 and on_replica > 10


def test_a_draining_replica_gets_no_reads(shard: LocalCluster) -> None:
    _, (replica,) = shard.shard_map()[0]

    async def main() -> None:
        async with AsyncClusterClient(shard.seed, password="pw", read_from="replicas") as c:
            c.apply_routing({"nodes": [{"address": replica.address, "state": "draining",
                                        "weight": 0}]})  # fmt: skip
            replica.client().config_resetstat()
            assert [await c.get("k") for _ in range(30)] == [b"v"] * 30
            assert get_calls(replica) == 0  # served by the primary
            c.apply_routing({"nodes": [{"address": replica.address, "state": "up",
                                        "weight": 1}]})  # fmt: skip
            assert [await c.get("k") for _ in range(30)] == [b"v"] * 30
            assert get_calls(replica) == 30

    asyncio.run(main())


def test_a_replica_whose_link_is_down_gets_no_reads(shard: LocalCluster) -> None:
    _, (replica,) = shard.shard_map()[0]
    admin = replica.client()

    async def main() -> None:
        async with AsyncClusterClient(
            shard.seed, password="pw", read_from="replicas", replica_check_interval=0.2
        ) as c:
            assert c.stale_replicas == frozenset()
            # the replica can no longer authenticate to its primary: its link goes down
            admin.config_set("masterauth", "wrong")
            admin.client_kill_filter(_type="master")
            await until(lambda: replica.address in c.stale_replicas)
            admin.config_resetstat()
            assert [await c.get("k") for _ in range(20)] == [b"v"] * 20
            assert get_calls(replica) == 0
            admin.config_set("masterauth", "pw")
            await until(lambda: c.stale_replicas == frozenset())
            assert [await c.get("k") for _ in range(20)] == [b"v"] * 20
            assert get_calls(replica) == 20

    try:
        asyncio.run(main())
    finally:
        admin.config_set("masterauth", "pw")


def test_unreachable_seeds_give_clear_error() -> None:
    async def main() -> None:
        c = AsyncClusterClient(f"127.0.0.1:{free_port()}")
        with pytest.raises(ClusterError, match="no node answered"):
            await c.get("k")
        await c.aclose()

    asyncio.run(main())


def test_the_routing_table_is_followed_over_http(shard: LocalCluster) -> None:
    primary, (replica,) = shard.shard_map()[0]
    tables = TableServer()

    async def main() -> None:
        async with AsyncClusterClient(
            shard.seed, password="pw", read_from="replicas", routing_url=tables.url,
            routing_interval=0.1,
        ) as c:  # fmt: skip
            replica.client().config_resetstat()
            assert [await c.get("k") for _ in range(10)] == [b"v"] * 10
            assert get_calls(replica) == 10
            tables.publish([
                {"address": replica.address, "state": "draining", "weight": 0},
                {"address": primary.address, "state": "up", "weight": 1},
            ])  # fmt: skip
            await until(lambda: c._routing.get(replica.address, ("up",))[0] == "draining")
            assert [await c.get("k") for _ in range(10)] == [b"v"] * 10
            assert get_calls(replica) == 10  # none more: the primary served them
            await asyncio.sleep(0.5)
            assert tables.not_modified >= 2  # unchanged table: conditional GETs, 304s

    try:
        asyncio.run(main())
    finally:
        tables.server.shutdown()
        tables.server.server_close()
