"""Pipelines and same-slot transactions, ClusterClient next to redis-py's RedisCluster
on one real cluster: same results, same errors."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from redis.exceptions import CrossSlotTransactionError, RedisClusterException, WatchError

from balancer import ClusterClient
from controller.localcluster import LocalCluster
from tests.conftest import FLAVORS, SERVERS, _flavor_param

Client = Any


@pytest.fixture(scope="module", params=[_flavor_param(f) for f in FLAVORS])
def pair(request: pytest.FixtureRequest) -> Iterator[tuple[ClusterClient, redis.RedisCluster]]:
    cluster = LocalCluster(3, 1, binary=SERVERS[request.param])
    cluster.start()
    ours = ClusterClient(cluster.seed)
    theirs = redis.RedisCluster.from_url(cluster.url)
    yield ours, theirs
    ours.close()
    theirs.close()
    cluster.stop()


def same(pair: Any, action: Callable[[Client], Any]) -> Any:
    results = []
    for client in (pair[1], pair[0]):
        pair[1].flushall()
        results.append(action(client))
    assert results[1] == results[0]
    return results[0]


def error_of(action: Callable[[], Any]) -> tuple[type[BaseException], str]:
    try:
        action()
    except Exception as exc:
        return type(exc), str(exc)
    raise AssertionError("no error raised")


def test_pipeline_results_and_truthiness(pair: Any) -> None:
    def run(c: Client) -> Any:
        pipe = c.pipeline()
        empty = (bool(pipe), len(pipe), pipe.execute())
        pipe.set("a", 1).incr("a").get("a").hset("h", "f", "v").hgetall("h")
        return empty, len(pipe), pipe.execute(), len(pipe)

    assert same(pair, run)[0] == (True, 0, [])


def test_pipeline_error_names_the_command(pair: Any) -> None:
    def run(c: Client) -> Any:
        c.set("s", "x")
        pipe = c.pipeline()
        pipe.get("s").lpush("s", 1).set("t", 2)
        kind, message = error_of(pipe.execute)
        pipe.get("s").lpush("s", 1).get("t")
        kept = pipe.execute(raise_on_error=False)
        return kind, message, [type(r) if isinstance(r, Exception) else r for r in kept]

    kind, message, _ = same(pair, run)
    assert issubclass(kind, redis.ResponseError)
    assert message.startswith("Command # 2 (LPUSH s 1) of pipeline caused error: WRONGTYPE")


def test_pipeline_with_a_registered_script(pair: Any) -> None:
    """A registered script runs in a pipeline (RedisCluster refused EVALSHA there before
    redis-py 8.2), and is loaded first where the node lacks it."""
    ours, _ = pair
    script = ours.register_script("return redis.call('incrby', KEYS[1], ARGV[1])")
    ours.script_flush()
    pipe = ours.pipeline()
    for i in range(1, 4):
        script(keys=[f"{{p}}n{i}"], args=[i], client=pipe)
        script(keys=[f"{{p}}n{i}"], args=[i], client=pipe)
    assert pipe.execute() == [1, 2, 2, 4, 3, 6]
    ours.script_flush()
    script(keys=["{p}n1"], args=[10], client=pipe)
    pipe.load_scripts()
    assert ours.script_exists(script.sha) == [True]
    assert pipe.execute() == [12]


def test_discard_and_reset(pair: Any) -> None:
    ours, _ = pair
    for pipe in (ours.pipeline(), ours.pipeline(transaction=True)):
        pipe.set("{d}a", 1).set("{d}b", 2)
        pipe.discard()
        assert len(pipe) == 0 and pipe.execute() == []
    with pytest.raises(RedisClusterException):
        ours.pipeline().multi()


def test_same_slot_transaction(pair: Any) -> None:
    def run(c: Client) -> Any:
        with c.pipeline(transaction=True) as pipe:
            pipe.incr("{t}a").incr("{t}a").lpush("{t}l", "x", "y").lrange("{t}l", 0, -1)
            return pipe.execute()

    assert same(pair, run) == [1, 2, 2, [b"y", b"x"]]


def test_transaction_replies_are_parsed_as_outside_it(pair: Any) -> None:
    """Deliberately different: RedisCluster 8.1 returns raw replies from a transaction
    (b'OK' for SET); here they are parsed as everywhere else."""
    ours, theirs = pair
    for c in (theirs, ours):
        c.flushall()
        with c.pipeline(transaction=True) as pipe:
            replies = pipe.set("{t}a", 1).hset("{t}h", "f", "v").hgetall("{t}h").execute()
        parsed = c is ours
        assert replies == [True if parsed else b"OK", 1, {b"f": b"v"}]


def test_transaction_error_inside_exec_and_before(pair: Any) -> None:
    def run(c: Client) -> Any:
        c.set("{t}s", "x")
        pipe = c.pipeline(transaction=True)
        pipe.incr("{t}n").lpush("{t}s", 1).incr("{t}n")
        raised = error_of(pipe.execute)
        pipe = c.pipeline(transaction=True)
        pipe.incr("{t}n").lpush("{t}s", 1)
        kept = pipe.execute(raise_on_error=False)
        return raised, [type(r) if isinstance(r, Exception) else r for r in kept], c.get("{t}n")

    (kind, message), _, counter = same(pair, run)
    assert issubclass(kind, redis.ResponseError) and message.startswith("Command # 2 (LPUSH")
    assert counter == b"3"


def test_cross_slot_transaction_is_refused(pair: Any) -> None:
    def run(c: Client) -> Any:
        pipe = c.pipeline(transaction=True)
        pipe.set("{a}x", 1).set("{b}x", 1)
        with pytest.raises(CrossSlotTransactionError):
            pipe.execute()
        return c.exists("{a}x", "{b}x")

    assert same(pair, run) == 0


def test_watch_and_retry_on_change(pair: Any) -> None:
    def run(c: Client) -> Any:
        c.set("{w}n", 1)
        outcomes = []
        with c.pipeline(transaction=True) as pipe:
            pipe.watch("{w}n")
            value = int(pipe.get("{w}n"))
            c.set("{w}n", 10)  # someone else writes: EXEC must fail
            pipe.multi()
            pipe.incrby("{w}n", value)
            outcomes.append(error_of(pipe.execute)[0])
        with c.pipeline(transaction=True) as pipe:
            pipe.watch("{w}n")
            value = int(pipe.get("{w}n"))
            pipe.multi()
            pipe.incrby("{w}n", value + 1)
            outcomes.append(pipe.execute())
        return outcomes, c.get("{w}n")

    assert same(pair, run) == ([WatchError, [21]], b"21")


def test_transaction_helper_retries_until_it_wins(pair: Any) -> None:
    def run(c: Client) -> Any:
        c.set("{h}n", 0)

        def bump(pipe: Any) -> None:
            value = int(pipe.get("{h}n"))
            pipe.multi()
            pipe.set("{h}n", value + 1)

        def worker() -> None:
            for _ in range(20):
                c.transaction(bump, "{h}n")

        threads = [threading.Thread(target=worker) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return c.get("{h}n")

    assert same(pair, run) == b"60"


def test_transaction_survives_a_stale_slot_map(pair: Any) -> None:
    """MOVED inside MULTI aborts the whole transaction (EXECABORT: nothing ran), so it is
    sent again to the slot's real owner, once."""
    ours, theirs = pair
    theirs.flushall()
    slot = ours.keyslot("{stale}n")
    right = ours._slot_route[slot]
    wrong = next(r for r in ours._routes.values() if r is not right)
    ours._slot_route[slot] = wrong  # as if the slot had just moved away
    with ours.pipeline(transaction=True) as pipe:
        assert pipe.incr("{stale}n").incr("{stale}n").execute() == [1, 2]
    route = ours._slot_route[slot]
    assert route is not None and route.primary.address == right.primary.address
    assert ours.stats.moved >= 1
    assert theirs.get("{stale}n") == b"2"


def test_watch_follows_a_slot_that_moved_before_it(pair: Any) -> None:
    """The first WATCH redirected (stale slot map): nothing was watched yet, so it is
    sent to the slot's owner and the transaction goes through."""
    ours, theirs = pair
    theirs.flushall()
    slot = ours.keyslot("{stale}w")
    right = ours._slot_route[slot]
    ours._slot_route[slot] = next(r for r in ours._routes.values() if r is not right)
    with ours.pipeline(transaction=True) as pipe:
        pipe.watch("{stale}w")
        assert pipe.get("{stale}w") is None
        pipe.multi()
        pipe.set("{stale}w", 1)
        assert pipe.execute() == [True]
    assert theirs.get("{stale}w") == b"1"


def test_same_slot_multi_key_commands_in_a_pipeline(pair: Any) -> None:
    """Deliberately different: RedisCluster refuses DEL of several keys in a pipeline;
    here same-slot keys go through and keys of different slots raise CrossSlotError (a
    RedisClusterException) before anything is sent."""
    ours, theirs = pair
    theirs.flushall()
    with pytest.raises(RedisClusterException):
        theirs.pipeline().delete("{u}a", "{u}b")
    ours.mset({"{u}a": 1, "{u}b": 2, "a": 1, "b": 2})
    assert ours.pipeline().delete("{u}a", "{u}b").execute() == [2]
    pipe = ours.pipeline().incr("n").delete("a", "b")
    with pytest.raises(RedisClusterException):
        pipe.execute()
    assert ours.exists("a", "b", "n") == 2  # nothing was sent
