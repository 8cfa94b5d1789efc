"""AsyncClusterClient under load while nodes die, hang, fail over and slots move: what
the sync client promises (tests/integration/test_resilience.py), in one event loop."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import pytest

from balancer import BreakerPolicy, OutcomeUnknown
from balancer.aio import AsyncClusterClient
from controller.localcluster import LocalCluster
from tests.conftest import FLAVORS, SERVERS, _flavor_param
from tests.integration.test_resilience import _tags_for_slots, migrate_slot


@dataclass
class Load:
    """``tasks`` concurrent loops calling ``op(i)`` until stopped; errors and the
    worst single-call stall are recorded."""

    op: Callable[[int], Awaitable[object]]
    tasks: int = 4
    done: int = 0
    errors: list[BaseException] = field(default_factory=list)
    worst: float = 0.0
    running: bool = True

    async def _loop(self, first: int) -> None:
        i = first
        while self.running:
            started = time.monotonic()
            try:
                await self.op(i)
                self.done += 1
            except Exception as exc:  # the test asserts which ones
                self.errors.append(exc)
            self.worst = max(self.worst, time.monotonic() - started)
            i += self.tasks

    async def __aenter__(self) -> Load:
        self._all = [asyncio.create_task(self._loop(n)) for n in range(self.tasks)]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.running = False
        await asyncio.wait_for(asyncio.gather(*self._all), 30)


async def seed_keys(client: AsyncClusterClient, n: int = 300) -> list[str]:
    keys = [f"k:{i}" for i in range(n)]
    await client.mset({k: k for k in keys})
    return keys


def reader(client: AsyncClusterClient, keys: list[str]) -> Callable[[int], Awaitable[None]]:
    async def read(i: int) -> None:
        key = keys[i % len(keys)]
        value = await client.get(key)
        if value != key.encode():
            raise AssertionError(f"{key} read back {value!r}")

    return read


@pytest.fixture(scope="module", params=[_flavor_param(f) for f in FLAVORS])
def replicated(request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    """One 3x1 cluster per flavor for the replica tests: the hung one resumes its
    replica (shard 0), the killed one leaves shard 1 without its replica."""
    with LocalCluster(3, 1, binary=SERVERS[request.param]) as cluster:
        yield cluster


def test_replica_hung_under_read_load(replicated: LocalCluster) -> None:
    cluster = replicated

    async def main() -> None:
        policy = BreakerPolicy(fail_max=2, reset_timeout=30)
        async with AsyncClusterClient(cluster.seed, read_from="replicas", breaker=policy) as c:
            keys = await seed_keys(c)
            victim = cluster.shard_map()[0][1][0]
            async with Load(reader(c, keys)) as load:
                await asyncio.sleep(0.3)
                victim.signal(signal.SIGSTOP)  # accepts connections, never answers
                await asyncio.sleep(3.0)
                done_while_hung = load.done
            victim.signal(signal.SIGCONT)
            assert load.errors == []
            assert c.node_states()[victim.address] == "open"
            assert load.worst < 2.0  # one socket timeout per stalled read, never forever
            assert done_while_hung > 1000

    asyncio.run(main())


def test_replica_killed_under_read_load(replicated: LocalCluster) -> None:
    cluster = replicated

    async def main() -> None:
        async with AsyncClusterClient(cluster.seed, read_from="replicas") as client:
            keys = await seed_keys(client)
            victim = cluster.shard_map()[1][1][0]  # shard 0's replica is the hung test's
            async with Load(reader(client, keys)) as load:
                await asyncio.sleep(0.3)
                victim.kill()
                await asyncio.sleep(1.5)
            assert load.errors == []
            assert client.stats.failovers >= 1  # the dead replica was tried and left at once
            assert client.node_states()[victim.address] == "open"
            assert load.done > 1000

    asyncio.run(main())


def test_primary_killed_under_write_and_read_load(
    make_cluster: Callable[..., LocalCluster],
) -> None:
    cluster = make_cluster(3, 1, node_timeout_ms=1000)
    primary, replicas = cluster.shard_map()[0]
    acked: dict[str, str] = {}

    async def main() -> None:
        client = AsyncClusterClient(cluster.seed, read_from="replicas", retry_deadline=15.0)
        keys = await seed_keys(client)

        async def write(i: int) -> None:
            await client.set(f"w:{i}", str(i))
            acked[f"w:{i}"] = str(i)

        async with Load(write, tasks=1) as writer, Load(reader(client, keys)) as load:
            await asyncio.sleep(0.3)
            primary.kill()
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and cluster.role(replicas[0]) != "master":
                await asyncio.sleep(0.1)
            before = max((int(k[2:]) for k in acked), default=0)
            done = writer.done
            await asyncio.sleep(1.0)
            assert writer.done > done  # writes resumed after the failover
        assert cluster.role(replicas[0]) == "master"
        # The one write in flight when the primary died may or may not have been
        # applied: OutcomeUnknown, never re-sent. Nothing else reaches the caller.
        assert all(isinstance(e, OutcomeUnknown) for e in writer.errors), writer.errors
        assert len(writer.errors) <= 1 and load.errors == []
        assert client.stats.node_errors >= 1
        lost = [k for k, v in acked.items() if await client.get(k) != v.encode()]
        assert len(lost) <= 50, lost[:10]
        assert [k for k in lost if int(k[2:]) > before] == []
        await client.aclose()

    asyncio.run(main())


def test_live_migration_loses_nothing_and_surfaces_no_error(
    make_cluster: Callable[..., LocalCluster],
) -> None:
    cluster = make_cluster(2, 0)
    src, dst = cluster.primaries()[0], cluster.primaries()[1]
    src_ranges = [
        r for r in src.client().execute_command("CLUSTER", "SLOTS") if r[2][1] == src.port
    ]
    start = src_ranges[0][0]
    slots = set(range(start, start + 8))
    tags = [t for ts in _tags_for_slots(slots).values() for t in ts]
    written: dict[str, str] = {}

    async def main() -> None:
        client = AsyncClusterClient(cluster.seed)

        async def write(i: int) -> None:
            key = f"{{{tags[i % len(tags)]}}}:{i}"
            await client.set(key, str(i))
            written[key] = str(i)

        async with Load(write) as load:
            await asyncio.sleep(0.3)
            moved = 0
            for slot in sorted(slots):  # the admin side runs beside the loop, not in it
                moved += await asyncio.to_thread(migrate_slot, cluster, slot, src, dst)
            await asyncio.sleep(0.3)
        assert load.errors == []
        assert moved > 0 and load.done > 100
        assert client.stats.ask > 0 and client.stats.moved > 0  # both redirections seen
        shard = (await client.refresh_topology()).shard_for_slot(start)
        assert shard is not None and shard.primary.address == dst.address
        mismatched = [k for k, v in written.items() if await client.get(k) != v.encode()]
        assert mismatched == []
        await client.aclose()

    asyncio.run(main())
