"""AsyncClusterClient against real servers: the same answers as redis-py's asyncio
RedisCluster, and the sync client's safety rules (no write applied twice, blocking
commands waited for and never re-sent, reads retried through a stall)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from redis.crc import key_slot
from redis.exceptions import CrossSlotTransactionError

from balancer import BreakerPolicy, CrossSlotError, NodeUnavailable, OutcomeUnknown
from balancer.aio import AsyncClusterClient
from balancer.aio.transport import AsyncNodeTransport, AsyncTransportOptions
from controller.localcluster import LocalCluster
from tests.conftest import FLAVORS, SERVERS, _flavor_param
from tests.integration.test_compat_pubsub import move_empty_slot
from tests.integration.test_sdk_safety import owner, settle, stalled


@pytest.fixture(scope="module", params=[_flavor_param(f) for f in FLAVORS])
def shared(request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    """One 3x1 cluster per flavor; a node timeout well above any stall here."""
    cluster = LocalCluster(3, 1, binary=SERVERS[request.param], node_timeout_ms=8000)
    cluster.start()
    yield cluster
    cluster.stop()


def run(shared: LocalCluster, test: Callable[[AsyncClusterClient], Awaitable[None]],
        **options: Any) -> None:  # fmt: skip
    """``test(client)`` in a fresh event loop, the client closed afterwards."""

    async def main() -> None:
        async with AsyncClusterClient(shared.seed, **options) as client:
            await test(client)

    asyncio.run(main())


async def scenario(c: Any, p: str) -> list[Any]:
    """Commands whose keys share a slot (``{p}``), so RedisCluster runs them too."""
    k = f"{{{p}}}"
    return [
        await c.set(f"{k}s", "v"),
        await c.get(f"{k}s"),
        await c.get(f"{k}missing"),
        await c.incr(f"{k}n"),
        await c.incrby(f"{k}n", 5),
        await c.set(f"{k}s", "w", nx=True),
        await c.getdel(f"{k}s"),
        await c.hset(f"{k}h", mapping={"a": "1", "b": "2"}),
        await c.hgetall(f"{k}h"),
        await c.hincrby(f"{k}h", "a", 3),
        await c.rpush(f"{k}l", "x", "y", "z"),
        await c.lrange(f"{k}l", 0, -1),
        await c.lpop(f"{k}l"),
        await c.sadd(f"{k}set", "a", "b"),
        await c.smembers(f"{k}set"),
        await c.zadd(f"{k}z1", {"a": 1, "b": 2}),
        await c.zadd(f"{k}z2", {"a": 5}),
        await c.zrange(f"{k}z1", 0, -1, withscores=True),
        await c.zunionstore(f"{k}z3", {f"{k}z1": 1, f"{k}z2": 2}),
        await c.zrange(f"{k}z3", 0, -1, withscores=True),
        await c.expire(f"{k}h", 100),
        await c.ttl(f"{k}h"),
        await c.type(f"{k}l"),
        await c.mset({f"{k}m1": "1", f"{k}m2": "2"}),
        await c.mget([f"{k}m1", f"{k}m2", f"{k}nope"]),
        await c.exists(f"{k}m1", f"{k}m2", f"{k}nope"),
        await c.eval("return redis.call('incr', KEYS[1])", 1, f"{k}ev"),
        await c.delete(f"{k}m1", f"{k}m2", f"{k}nope"),
        await c.strlen(f"{k}n"),
    ]


def test_answers_equal_redis_asyncio_cluster(shared: LocalCluster) -> None:
    async def main() -> None:
        first = shared.primaries()[0]
        theirs = aioredis.RedisCluster(host="127.0.0.1", port=first.port)
        async with AsyncClusterClient(shared.seed) as ours:
            assert await scenario(ours, "ours") == await scenario(theirs, "theirs")
            assert await ours.dbsize() == sum(n.client().dbsize() for n in shared.primaries())
        await theirs.aclose()

    asyncio.run(main())


def test_cross_slot_multi_key_commands_are_split(shared: LocalCluster) -> None:
    async def test(c: AsyncClusterClient) -> None:
        keys = [f"split:{i}" for i in range(40)]
        assert await c.mset({k: k.upper() for k in keys}) is True
        assert await c.mget(keys) == [k.upper().encode() for k in keys]
        assert await c.exists(*keys, "split:none") == 40
        assert await c.touch(*keys[:10]) == 10
        assert await c.delete(*keys[:20]) == 20
        assert await c.unlink(*keys) == 20
        with pytest.raises(CrossSlotError):
            await c.rename("split:a", "split:b")

    run(shared, test)


def test_pipeline_keeps_order_and_scan_walks_every_primary(shared: LocalCluster) -> None:
    async def test(c: AsyncClusterClient) -> None:
        await c.delete(*[f"walk:{i}" for i in range(200)])
        async with c.pipeline() as pipe:
            for i in range(200):
                pipe.set(f"walk:{i}", i)
            pipe.incr("walk:0")
            pipe.get("walk:0")
            pipe.hget("walk:1", "f")  # WRONGTYPE, returned in place
            results = await pipe.execute(raise_on_error=False)
        assert results[:200] == [True] * 200
        assert results[200:202] == [1, b"1"]
        assert isinstance(results[202], redis.ResponseError)
        seen = [k async for k in c.scan_iter(match="walk:*", count=50)]
        assert sorted(seen) == sorted(f"walk:{i}".encode() for i in range(200))

    run(shared, test)


def test_decode_responses_and_from_url(shared: LocalCluster) -> None:
    async def main() -> None:
        c = AsyncClusterClient.from_url(f"redis://{shared.seed}", decode_responses=True)
        await c.set("text", "é")
        assert await c.get("text") == "é"
        assert await c.ping() is True
        await c.aclose()

    asyncio.run(main())


def test_incr_on_a_stalled_primary_is_applied_once(shared: LocalCluster) -> None:
    key = "async:incr"
    node = owner(shared, key)

    async def test(c: AsyncClusterClient) -> None:
        await c.delete(key)
        assert await c.get(key) is None  # connected: the INCR will certainly be sent
        resume = stalled(node)
        try:
            with pytest.raises(OutcomeUnknown) as info:
                await c.incr(key)
        finally:
            await asyncio.to_thread(resume.join)
        await asyncio.to_thread(settle, node)
        assert isinstance(info.value, redis.TimeoutError) and node.address in str(info.value)
        assert await c.get(key) == b"1"  # the server ran it once, after SIGCONT
        assert c.stats.unknown_outcomes == 1

    run(shared, test, socket_timeout=0.3)


def test_a_read_on_a_stalled_primary_is_retried_and_succeeds(shared: LocalCluster) -> None:
    key = "async:read"
    node = owner(shared, key)

    async def test(c: AsyncClusterClient) -> None:
        await c.set(key, "v")
        resume = stalled(node)
        started = time.monotonic()
        try:
            assert await c.get(key) == b"v"
        finally:
            await asyncio.to_thread(resume.join)
        assert time.monotonic() - started >= 1.5 * 0.9  # it waited for the node
        await asyncio.to_thread(settle, node)

    run(shared, test, socket_timeout=0.3)


def test_pipelined_writes_on_a_stalled_primary_are_not_resent(shared: LocalCluster) -> None:
    counter, queue = "{apipe}:n", "{apipe}:q"
    node = owner(shared, counter)
    other = next(f"o:{i}" for i in range(1000) if owner(shared, f"o:{i}") is not node)

    async def test(c: AsyncClusterClient) -> None:
        await c.delete(counter, queue, other)
        pipe = c.pipeline()
        pipe.incr(counter)
        pipe.lpush(queue, "job")
        pipe.set(other, "x")
        pipe.get(counter)
        resume = stalled(node)
        try:
            results = await pipe.execute(raise_on_error=False)
        finally:
            await asyncio.to_thread(resume.join)
        await asyncio.to_thread(settle, node)
        assert isinstance(results[0], OutcomeUnknown) and isinstance(results[1], OutcomeUnknown)
        assert results[2] is True  # another node's command is unaffected
        assert results[3] == b"1"  # a read is re-run once the node answers again
        assert await c.get(counter) == b"1" and await c.llen(queue) == 1

    run(shared, test, socket_timeout=0.3)


def test_writes_to_a_primary_with_an_open_breaker_fail_fast(shared: LocalCluster) -> None:
    key = "async:fast"
    node = owner(shared, key)

    async def test(c: AsyncClusterClient) -> None:
        await c.set(key, "v")
        resume = stalled(node, seconds=2.5)
        try:
            with pytest.raises(OutcomeUnknown):
                await c.set(key, "w")  # sent, then waits out one socket timeout
            with pytest.raises(NodeUnavailable):
                await c.set(key, "w2")  # the reconnect's handshake hangs: breaker opens
            started = time.monotonic()
            with pytest.raises(NodeUnavailable, match="not sent"):
                await c.set(key, "x")
            tx = c.pipeline(transaction=True)
            tx.set(key, "y")
            with pytest.raises(NodeUnavailable):  # transactions too: nothing sent
                await tx.execute()
            assert time.monotonic() - started < 0.5
        finally:
            await asyncio.to_thread(resume.join)
        await asyncio.to_thread(settle, node)
        assert node.client().get(key) == "w"  # the unknown outcome landed; nothing else

    run(shared, test, socket_timeout=0.3, breaker=BreakerPolicy(fail_max=2, reset_timeout=30))


def test_a_blocking_pop_waits_its_own_timeout_and_is_sent_once(shared: LocalCluster) -> None:
    queue = "async:queue"
    node = owner(shared, queue)

    async def test(c: AsyncClusterClient) -> None:
        await c.delete(queue)
        node.client().config_resetstat()
        started = time.monotonic()
        assert await c.blpop([queue], timeout=1) is None  # an idle queue is not a hung node
        assert 0.9 <= time.monotonic() - started < 2.0
        pusher = threading.Timer(0.6, lambda: node.client().rpush(queue, "job"))
        pusher.start()
        assert await c.blpop([queue], timeout=2) == (queue.encode(), b"job")
        pusher.join()
        assert node.client().info("commandstats")["cmdstat_blpop"]["calls"] == 2
        started = time.monotonic()
        assert not await c.xread({"async:stream": "$"}, block=700)  # BLOCK in milliseconds
        assert 0.6 <= time.monotonic() - started < 1.5
        assert all(state == "closed" for state in c.node_states().values())
        assert c.stats.node_errors == 0

    run(shared, test, socket_timeout=0.3)


def test_a_blocking_pop_on_a_hung_primary_is_never_resent(shared: LocalCluster) -> None:
    queue = "async:hung-queue"
    node = owner(shared, queue)

    async def test(c: AsyncClusterClient) -> None:
        await c.delete(queue)
        resume = stalled(node, seconds=2.5)
        try:
            started = time.monotonic()
            with pytest.raises(OutcomeUnknown):
                await c.blpop([queue], timeout=1)
            assert time.monotonic() - started < 1.0 + 0.3 + 0.5
            assert c.node_states().get(node.address, "closed") == "closed"
        finally:
            await asyncio.to_thread(resume.join)
        await asyncio.to_thread(settle, node)
        node.client().rpush(queue, "job")
        await asyncio.sleep(0.2)
        assert await c.lrange(queue, 0, -1) == [b"job"]  # the abandoned pop took nothing

    run(shared, test, socket_timeout=0.3)


def test_a_cancelled_call_leaves_no_reply_behind(shared: LocalCluster) -> None:
    key = "async:cancel"
    node = owner(shared, key)

    async def test(c: AsyncClusterClient) -> None:
        await c.set(key, "mine")
        resume = stalled(node, seconds=0.5)
        try:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(c.get(key), 0.1)
        finally:
            await asyncio.to_thread(resume.join)
        await asyncio.to_thread(settle, node)
        await c.set("async:other", "theirs")
        assert await c.get(key) == b"mine" and await c.get("async:other") == b"theirs"

    run(shared, test, socket_timeout=2.0)


def test_scripts_and_locks(shared: LocalCluster) -> None:
    async def test(c: AsyncClusterClient) -> None:
        incr = c.register_script("return redis.call('incrby', KEYS[1], ARGV[1])")
        await c.delete("script:n")
        assert await incr(keys=["script:n"], args=[5]) == 5
        assert await incr(keys=["script:n"], args=[2]) == 7
        lock = c.lock("lock:job", timeout=5)
        assert await lock.acquire(blocking=False) is True
        assert await c.lock("lock:job").acquire(blocking=False) is False
        await lock.release()
        async with c.lock("lock:job", timeout=5, blocking_timeout=1):
            assert await c.exists("lock:job") == 1
        with pytest.raises(redis.RedisClusterException, match="MULTI"):
            await c.execute_command("MULTI")

    run(shared, test)


def test_concurrent_tasks_each_get_their_own_reply(shared: LocalCluster) -> None:
    async def test(c: AsyncClusterClient) -> None:
        keys = [f"many:{i}" for i in range(500)]
        assert all(await asyncio.gather(*(c.set(k, k) for k in keys)))
        tasks = [asyncio.ensure_future(c.get(k)) for k in keys]
        for task in tasks[::7]:
            task.cancel()  # cancelled callers: their replies are read and dropped
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for i, (key, result) in enumerate(zip(keys, results, strict=True)):
            if i % 7:
                assert result == key.encode()
            else:
                assert isinstance(result, asyncio.CancelledError)
        assert await asyncio.gather(*(c.get(k) for k in keys)) == [k.encode() for k in keys]

    run(shared, test)


def test_same_slot_transactions_and_pipeline_errors(shared: LocalCluster) -> None:
    async def test(c: AsyncClusterClient) -> None:
        await c.delete("{tx}a", "{tx}b")
        async with c.pipeline(transaction=True) as pipe:
            pipe.set("{tx}a", 1).incr("{tx}a").get("{tx}a").lpush("{tx}a", "x")
            results = await pipe.execute(raise_on_error=False)
        assert results[:3] == [True, 2, b"2"]
        assert isinstance(results[3], redis.ResponseError)  # WRONGTYPE, at EXEC
        pipe = c.pipeline(transaction=True)
        pipe.set("{tx}a", 1).set("{other}b", 2)
        with pytest.raises(CrossSlotTransactionError):
            await pipe.execute()
        assert await c.get("{tx}a") == b"2"  # nothing was sent
        pipe = c.pipeline()
        pipe.set("{tx}b", 1).lpush("{tx}b", 1)
        with pytest.raises(
            redis.ResponseError, match=r"Command # 2 \(LPUSH \{tx\}b 1\) of pipeline"
        ):
            await pipe.execute()
        assert c.keyslot("{tx}a") == key_slot(b"{tx}a")
        assert await c.mset_nonatomic({f"nx:{i}": i for i in range(10)}) == [True] * len(
            {key_slot(f"nx:{i}".encode()) for i in range(10)}
        )
        assert await c.mget_nonatomic([f"nx:{i}" for i in range(10)]) == [
            str(i).encode() for i in range(10)
        ]

    run(shared, test)


def test_a_transaction_on_a_stalled_primary_is_not_resent(shared: LocalCluster) -> None:
    key = "{atx}:n"
    node = owner(shared, key)

    async def test(c: AsyncClusterClient) -> None:
        await c.delete(key)
        resume = stalled(node)
        try:
            pipe = c.pipeline(transaction=True)
            pipe.incr(key).incr(key)
            with pytest.raises(OutcomeUnknown):
                await pipe.execute()
        finally:
            await asyncio.to_thread(resume.join)
        await asyncio.to_thread(settle, node)
        assert await c.get(key) == b"2"  # ran once, whole

    run(shared, test, socket_timeout=0.3)


def test_pubsub_and_sharded_publish(shared: LocalCluster) -> None:
    async def test(c: AsyncClusterClient) -> None:
        async with c.pubsub() as pubsub:
            await pubsub.subscribe("news")
            assert (await pubsub.get_message(timeout=2))["type"] == "subscribe"
            assert await c.publish("news", "hello") >= 0  # reaches every node
            message = None
            for _ in range(20):
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
                if message:
                    break
            assert message is not None and message["data"] == b"hello"
        async with c.pubsub() as sharded:
            await sharded.ssubscribe("orders")  # on the primary of the channel's slot
            assert await c.spublish("orders", "o1") == 1  # routed by the channel's slot
            assert await sharded_data(sharded) == [b"o1"]

    run(shared, test)


def test_a_read_gives_up_at_the_deadline_while_its_node_hangs(shared: LocalCluster) -> None:
    key = "async:deadline"
    node = owner(shared, key)

    async def test(c: AsyncClusterClient) -> None:
        await c.set(key, "v")
        resume = stalled(node, seconds=3.0)
        try:
            started = time.monotonic()
            with pytest.raises((redis.TimeoutError, redis.ConnectionError)):
                await c.get(key)  # the last failure: a read timeout or a hung handshake
            elapsed = time.monotonic() - started
        finally:
            await asyncio.to_thread(resume.join)
        await asyncio.to_thread(settle, node)
        # one attempt may be in flight when the deadline passes: at most one socket timeout
        assert 1.0 <= elapsed < 1.0 + 0.3 + 0.4, elapsed

    policy = BreakerPolicy(fail_max=100)  # the breaker stays out of it here
    run(shared, test, socket_timeout=0.3, retry_deadline=1.0, breaker=policy)


def test_failing_refreshes_are_rate_limited_across_tasks(server_flavor: str) -> None:
    async def main(cluster: LocalCluster) -> None:
        async with AsyncClusterClient(
            cluster.seed, retry_deadline=1.5, socket_connect_timeout=0.2
        ) as c:
            await c.set("k", "v")
            before = c.stats.refresh_attempts
            for node in cluster.nodes:
                node.kill()  # every node refuses: each call retries, asking for refreshes
            started = time.monotonic()
            results = await asyncio.gather(*(c.get("k") for _ in range(8)), return_exceptions=True)
            elapsed = time.monotonic() - started
            assert all(isinstance(r, redis.RedisError) for r in results), results
            assert elapsed < 1.5 + 1.0
            # at most one refresh per 0.1 s, doubling while they fail: a handful
            assert 1 <= c.stats.refresh_attempts - before <= 8, c.stats.refresh_attempts - before

    with LocalCluster(3, 0, binary=SERVERS[server_flavor]) as cluster:
        asyncio.run(main(cluster))


def test_asking_error_reply_leaves_no_reply_behind(shared: LocalCluster) -> None:
    primary = shared.primaries()[0]
    admin = primary.client()
    admin.acl_setuser(
        "noask", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all", "-asking"]
    )
    key = next(f"a:{i}" for i in range(1000) if owner(shared, f"a:{i}") is primary)
    admin.set(key, "value")

    async def main() -> None:
        options = AsyncTransportOptions(username="noask", password="pw", socket_timeout=2)
        transport = AsyncNodeTransport("127.0.0.1", primary.port, options, max_connections=1)
        with pytest.raises(redis.ResponseError, match=r"NOPERM|permission"):
            await transport.execute(("GET", key), asking=True)
        # the one connection is reused, and answers its own command
        assert await transport.execute(("PING",), never_decode=True) == b"PONG"
        assert await transport.execute(("GET", key), never_decode=True) == b"value"
        transport.close()

    try:
        asyncio.run(main())
    finally:
        admin.acl_deluser("noask")


def test_scan_has_redis_cluster_shape(shared: LocalCluster) -> None:
    async def main() -> None:
        first = shared.primaries()[0]
        theirs = aioredis.RedisCluster(host="127.0.0.1", port=first.port)
        async with AsyncClusterClient(shared.seed) as ours:
            await ours.mset({f"shape:{i}": i for i in range(60)})
            cursors, keys = await ours.scan(0, match="shape:*", count=10)
            their_cursors, _ = await theirs.scan(0, match="shape:*", count=10)
            assert set(cursors) == set(their_cursors)  # one cursor per primary, by name
            for name, cursor in cursors.items():  # each node goes on with its own cursor
                node = ours.get_node(node_name=name)
                while cursor:
                    more, part = await ours.scan(cursor, "shape:*", 10, target_nodes=node)
                    cursor = more[name]
                    keys += part
            assert sorted(set(keys)) == sorted(f"shape:{i}".encode() for i in range(60))
            mine = [k async for k in ours.scan_iter(match="shape:*")]
            assert sorted(mine) == sorted([k async for k in theirs.scan_iter(match="shape:*")])
        await theirs.aclose()

    asyncio.run(main())


def test_admin_commands_and_nodes_answer_as_redis_cluster(shared: LocalCluster) -> None:
    async def main() -> None:
        first = shared.primaries()[0]
        theirs = aioredis.RedisCluster(host="127.0.0.1", port=first.port)
        await theirs.initialize()
        async with AsyncClusterClient(shared.seed) as ours:
            assert sorted(n.name for n in ours.get_nodes()) == sorted(
                n.name for n in theirs.get_nodes()
            )
            assert len(ours.get_primaries()) == 3 and len(ours.get_replicas()) == 3
            mine = ours.get_node_from_key("user:1")
            assert mine is not None and mine.name == theirs.get_node_from_key("user:1").name
            assert await ours.echo("hi") == b"hi"  # RedisCluster wants target_nodes here
            assert len(await ours.time()) == 2
            assert await ours.ping() is True
            assert (await ours.info("server"))["redis_version"]
            assert set(await ours.config_get("maxmemory")) == set(
                await theirs.config_get("maxmemory")
            )
            assert (await ours.cluster_info())["cluster_state"] == "ok"
            per_node = await ours.ping(target_nodes=AsyncClusterClient.PRIMARIES)
            assert per_node is True
            sizes = await ours.dbsize(target_nodes=ours.get_primaries()[0])
            assert isinstance(sizes, int)
        await theirs.aclose()

    asyncio.run(main())


def test_watch_transactions(shared: LocalCluster) -> None:
    async def test(c: AsyncClusterClient) -> None:
        await c.set("{w}n", 10)

        async def double(pipe: Any) -> None:
            value = int(await pipe.get("{w}n"))  # runs at once on the watched connection
            pipe.multi()
            pipe.set("{w}n", value * 2)
            pipe.get("{w}n")

        assert await c.transaction(double, "{w}n") == [True, b"20"]
        # a watched key changed by someone else: WatchError, nothing ran
        async with c.pipeline(transaction=True) as pipe:
            await pipe.watch("{w}n")
            assert await pipe.get("{w}n") == b"20"
            await c.set("{w}n", 99)  # another client's write
            pipe.multi()
            pipe.set("{w}n", 0)
            with pytest.raises(redis.WatchError):
                await pipe.execute()
        assert await c.get("{w}n") == b"99"
        # transaction() retries until its watch holds
        attempts = 0

        async def racy(pipe: Any) -> None:
            nonlocal attempts
            attempts += 1
            value = int(await pipe.get("{w}n"))
            if attempts == 1:
                await c.incr("{w}n")  # changes under the first attempt's watch
            pipe.multi()
            pipe.set("{w}n", value + 1)

        await c.transaction(racy, "{w}n")
        assert attempts == 2 and await c.get("{w}n") == b"101"
        pipe = c.pipeline(transaction=True)
        await pipe.watch("{w}n")
        pipe.multi()
        pipe.set("{other}x", 1)
        with pytest.raises(CrossSlotTransactionError):
            await pipe.execute()

    run(shared, test)


def test_scripts_in_pipelines_are_loaded_where_missing(shared: LocalCluster) -> None:
    async def test(c: AsyncClusterClient) -> None:
        await c.script_flush()
        incr = c.register_script("return redis.call('incrby', KEYS[1], ARGV[1])")
        await c.delete("sp:a", "sp:b")
        pipe = c.pipeline()
        await incr(keys=["sp:a"], args=[2], client=pipe)  # queued, as on redis-py's pipelines
        await incr(keys=["sp:b"], args=[3], client=pipe)
        assert await pipe.execute() == [2, 3]  # NOSCRIPT: loaded, then run (once)
        assert await c.mget(["sp:a", "sp:b"]) == [b"2", b"3"]
        pipe.evalsha(incr.sha, 1, "sp:a", 1)
        await pipe.load_scripts()
        assert await pipe.execute() == [3]

    run(shared, test)


async def sharded_data(pubsub: Any, seconds: float = 1.0) -> list[Any]:
    """The data of the sharded messages that arrive within ``seconds``."""
    data: list[Any] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        message = await pubsub.get_sharded_message(ignore_subscribe_messages=True, timeout=0.1)
        if message and message["type"] == "smessage":
            data.append(message["data"])
    return data


def test_a_sharded_subscription_follows_its_slot(shared: LocalCluster) -> None:
    channel = "moving"

    async def test(c: AsyncClusterClient) -> None:
        slot = c.keyslot(channel)
        source = owner(shared, channel)
        target = next(p for p in shared.primaries() if p is not source)
        pubsub = c.pubsub()
        try:
            await pubsub.ssubscribe(channel)
            assert await sharded_data(pubsub, 0.2) == []
            move_empty_slot(shared, slot, source, target)
            try:
                await c.refresh_topology()  # the client sees the move: subscribers follow
                deadline = time.monotonic() + 5
                node = c.get_node_from_key(channel)
                while await c.pubsub_shardnumsub(channel, target_nodes=node) != [
                    (channel.encode(), 1)
                ]:
                    assert time.monotonic() < deadline, "the subscription stayed behind"
                    await pubsub.get_sharded_message(timeout=0.05)
                assert await c.spublish(channel, "after") == 1
                assert await sharded_data(pubsub) == [b"after"]
            finally:
                move_empty_slot(shared, slot, target, source)
                await c.refresh_topology()
        finally:
            await pubsub.aclose()

    run(shared, test)
