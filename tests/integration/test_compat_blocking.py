"""Blocking commands, ClusterClient next to redis-py's RedisCluster on one real cluster:
same replies, each waiting its own block time; and a blocking pop whose client gives
up (its node hung) is never re-sent, so no pushed item is lost to a reply nobody reads."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from balancer import ClusterClient, OutcomeUnknown
from controller.localcluster import LocalCluster
from tests.conftest import FLAVORS, SERVERS, _flavor_param
from tests.integration.test_sdk_safety import owner, settle, stalled

Client = Any


@pytest.fixture(scope="module", params=[_flavor_param(f) for f in FLAVORS])
def cluster(request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    """A node timeout well above the stall: a hung primary is never failed over."""
    cluster = LocalCluster(3, 1, binary=SERVERS[request.param], node_timeout_ms=8000)
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def pair(cluster: LocalCluster) -> Iterator[tuple[ClusterClient, redis.RedisCluster]]:
    ours = ClusterClient(cluster.seed, socket_timeout=0.3)
    theirs = redis.RedisCluster.from_url(cluster.url)
    yield ours, theirs
    ours.close()
    theirs.close()


def later(seconds: float, action: Callable[[], Any]) -> threading.Timer:
    timer = threading.Timer(seconds, action)
    timer.start()
    return timer


def _stream(c: Client) -> None:
    c.xgroup_create("{q}s", "g", id="0", mkstream=True)


B = 0.5  # block time (seconds) of every blocking call below


@pytest.mark.parametrize(
    ("action", "push"),
    [
        (lambda c: c.blpop(["{q}a", "{q}b"], timeout=B), lambda c: c.rpush("{q}b", "x")),
        (lambda c: c.brpop(["{q}a"], timeout=B), lambda c: c.rpush("{q}a", "x", "y")),
        (lambda c: c.blmove("{q}a", "{q}b", B, "LEFT", "RIGHT"), lambda c: c.rpush("{q}a", "x")),
        (lambda c: c.brpoplpush("{q}a", "{q}b", B), lambda c: c.rpush("{q}a", "x")),
        (lambda c: c.bzpopmin(["{q}z"], B), lambda c: c.zadd("{q}z", {"m": 1})),
        (lambda c: c.bzpopmax(["{q}z"], B), lambda c: c.zadd("{q}z", {"m": 2, "n": 3})),
        (lambda c: c.blmpop(B, 2, "{q}a", "{q}b", direction="LEFT"),
         lambda c: c.rpush("{q}b", "x")),
        (lambda c: c.xread({"{q}s": "$"}, block=int(B * 1000)),
         lambda c: c.xadd("{q}s", {"f": "v"}, id="1-1")),
        (lambda c: (_stream(c), c.xreadgroup("g", "me", {"{q}s": ">"}, block=int(B * 1000)))[1],
         lambda c: c.xadd("{q}s", {"f": "v"}, id="1-1")),
    ],
    ids=["blpop", "brpop", "blmove", "brpoplpush", "bzpopmin", "bzpopmax", "blmpop", "xread",
         "xreadgroup"],
)  # fmt: skip
def test_blocking_commands_wait_and_answer_alike(
    pair: Any, action: Callable[[Client], Any], push: Callable[[Client], Any]
) -> None:
    results = []
    for c in (pair[1], pair[0]):
        pair[1].flushall()
        started = time.monotonic()
        idle = action(c)  # nothing comes: the full block time, then an empty reply
        waited = time.monotonic() - started
        assert B - 0.05 <= waited < B + 0.8, waited
        c.delete("{q}s")
        timer = later(0.2, lambda c=c: push(c))
        answered = action(c)
        timer.join()
        results.append((idle, answered))
    assert results[1] == results[0]
    assert results[0][1] not in (None, [], {})


def test_wait_blocks_its_own_timeout(pair: Any) -> None:
    """WAIT for more replicas than there are: the full timeout, then the count."""
    results = []
    for c in (pair[1], pair[0]):
        c.set("{w}k", 1)
        node = c.get_node_from_key("{w}k")
        started = time.monotonic()
        results.append(c.wait(5, int(B * 1000), target_nodes=node))
        assert B - 0.05 <= time.monotonic() - started < B + 0.8
    assert results[1] == results[0] == 1


def test_a_blocking_pop_whose_client_gives_up_loses_nothing(
    cluster: LocalCluster, pair: Any
) -> None:
    """The pop's node hangs past its block time: the client gives up (OutcomeUnknown,
    sent once, never again); an item pushed afterwards goes to the next consumer."""
    ours, _ = pair
    queue = "{lost}jobs"
    node = owner(cluster, queue)
    ours.delete(queue)
    node.client().config_resetstat()
    resume = stalled(node, seconds=2.0)
    try:
        with pytest.raises(OutcomeUnknown):
            ours.blpop([queue], timeout=1)
    finally:
        resume.join()
    settle(node)
    ours.rpush(queue, "job-1", "job-2")
    time.sleep(0.2)
    assert ours.blpop([queue], timeout=1) == (queue.encode(), b"job-1")
    assert ours.lrange(queue, 0, -1) == [b"job-2"]
    # the pop that gave up was sent once and never again (the server may not even
    # have run it: its connection was closed before the node woke up)
    assert node.client().info("commandstats")["cmdstat_blpop"]["calls"] in (1, 2)
    assert ours.node_states().get(node.address, "closed") == "closed"
