"""Pub/sub and sharded pub/sub, ClusterClient next to redis-py's RedisCluster on one
real cluster: the same subscriptions receive the same messages."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from balancer import ClusterClient
from controller.localcluster import LocalCluster, ServerNode
from tests.conftest import FLAVORS, SERVERS, _flavor_param

Client = Any


@pytest.fixture(scope="module", params=[_flavor_param(f) for f in FLAVORS])
def cluster(request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    cluster = LocalCluster(3, 1, binary=SERVERS[request.param])
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def pair(cluster: LocalCluster) -> Iterator[tuple[ClusterClient, redis.RedisCluster]]:
    ours = ClusterClient(cluster.seed)
    theirs = redis.RedisCluster.from_url(cluster.url)
    yield ours, theirs
    ours.close()
    theirs.close()


def same(pair: Any, action: Callable[[Client], Any]) -> Any:
    results = [action(pair[1]), action(pair[0])]
    assert results[1] == results[0]
    return results[0]


def collect(get: Callable[[], Any], count: int, seconds: float = 3.0) -> list[Any]:
    """``count`` messages (subscribe confirmations skipped) or what came in ``seconds``."""
    found: list[Any] = []
    deadline = time.monotonic() + seconds
    while len(found) < count and time.monotonic() < deadline:
        message = get()
        if message is not None and message["type"] not in ("subscribe", "ssubscribe",
                                                             "psubscribe"):  # fmt: skip
            found.append({k: message[k] for k in ("type", "channel", "data", "pattern")})
    return found


def test_subscribe_and_publish(pair: Any) -> None:
    def run(c: Client) -> Any:
        with c.pubsub() as p:
            p.subscribe("news", "sport")
            p.psubscribe("w*")
            time.sleep(0.05)
            counts = [c.publish("news", "a"), c.publish("sport", "b"), c.publish("weather", "c")]
            got = collect(lambda: p.get_message(timeout=0.1), 3)
            return counts, got, c.pubsub_channels(), c.pubsub_numpat()

    counts, got, _, _ = same(pair, run)
    assert len(got) == 3 and counts[0] >= 0


def test_pubsub_on_a_given_node(pair: Any) -> None:
    theirs = pair[1]
    node_name = sorted(n.name for n in theirs.get_primaries())[1]

    def run(c: Client) -> Any:
        node = c.get_node(node_name=node_name)
        with c.pubsub(node=node) as p:
            p.subscribe("local")
            time.sleep(0.05)
            publisher = c.get_node(node_name=node_name)
            receivers = c.publish("local", "x", target_nodes=publisher)
            got = collect(lambda: p.get_message(timeout=0.1), 1)
            return p.get_pubsub_node().name, receivers, got, c.pubsub_numsub("local")

    assert same(pair, run)[0] == node_name


def test_sharded_pubsub_follows_channel_slots(pair: Any) -> None:
    channels = ["orders", "users", "carts", "audit"]  # slots on different primaries

    def run(c: Client) -> Any:
        p = c.pubsub()
        try:
            p.ssubscribe(*channels)
            time.sleep(0.05)
            counts = [c.spublish(ch, f"m-{ch}") for ch in channels]
            got = collect(lambda: p.get_sharded_message(timeout=0.1), len(channels))
            shard = sorted(c.pubsub_shardchannels(target_nodes=c.PRIMARIES))
            numsub = c.pubsub_shardnumsub("orders", target_nodes=c.PRIMARIES)
            p.sunsubscribe()
            return counts, sorted(got, key=str), shard, numsub
        finally:
            p.close()

    counts, got, shard, _ = same(pair, run)
    assert counts == [1, 1, 1, 1] and len(got) == 4
    assert shard == sorted(ch.encode() for ch in channels)


def test_listen_waits_longer_than_the_socket_timeout(pair: Any) -> None:
    """A subscriber blocks in listen() for as long as messages take (ClusterClient's
    0.5 s socket_timeout applies to commands, not to waiting subscribers)."""

    def run(c: Client) -> Any:
        with c.pubsub(ignore_subscribe_messages=True) as p:
            p.subscribe("slow")
            time.sleep(0.05)
            timer = threading.Timer(0.8, lambda: c.publish("slow", "late"))
            timer.start()
            message = next(m for m in p.listen() if m is not None)
            timer.join()
            return message["channel"], message["data"]

    assert same(pair, run) == (b"slow", b"late")


def move_empty_slot(
    cluster: LocalCluster, slot: int, source: ServerNode, target: ServerNode
) -> None:
    """Give an empty slot to ``target`` (IMPORTING/MIGRATING, then NODE everywhere)."""
    source_id, target_id = cluster.node_id(source), cluster.node_id(target)
    target.client().execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
    source.client().execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
    for node in (target, source, *(p for p in cluster.primaries() if p not in (source, target))):
        node.client().execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)


def test_sharded_subscription_follows_its_slot(cluster: LocalCluster, pair: Any) -> None:
    """A shard channel's slot moves to another primary: once the client sees the move,
    the subscription is re-made on the new owner and messages keep coming."""
    ours, _ = pair
    channel = "moving"
    slot = ours.keyslot(channel)
    source = cluster.node_by_port(ours.get_node_from_key(channel).port)
    target = next(p for p in cluster.primaries() if p is not source)
    p = ours.pubsub()
    try:
        p.ssubscribe(channel)
        assert collect(lambda: p.get_sharded_message(timeout=0.1), 0) == []
        move_empty_slot(cluster, slot, source, target)
        try:
            ours.refresh_topology()  # the client sees the move: subscribers follow it
            deadline = time.monotonic() + 5
            while ours.pubsub_shardnumsub(channel, target_nodes=ours.get_node_from_key(channel)) \
                    != [(channel.encode(), 1)]:  # fmt: skip
                assert time.monotonic() < deadline, "the subscription did not follow its slot"
                p.get_sharded_message(timeout=0.05)
            assert ours.spublish(channel, "after") == 1
            got = collect(lambda: p.get_sharded_message(timeout=0.1), 2, seconds=1.0)
            assert [m["data"] for m in got if m["type"] == "smessage"] == [b"after"]
        finally:
            move_empty_slot(cluster, slot, target, source)
            ours.refresh_topology()
    finally:
        p.close()
