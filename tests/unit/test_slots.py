"""CLUSTER SHARDS parsing (RESP2 and RESP3 shapes, as Redis 7.0 and Valkey 9 send them)."""

from __future__ import annotations

import pytest

from balancer.slots import TOTAL_SLOTS, parse_cluster_shards

RESP3 = [
    {
        b"slots": [0, 5460, 10923, 11000],
        b"nodes": [
            {b"id": b"a" * 40, b"port": 7000, b"ip": b"127.0.0.1", b"endpoint": b"127.0.0.1",
             b"role": b"master", b"replication-offset": 10, b"health": b"online"},
            {b"id": b"b" * 40, b"port": 7003, b"ip": b"127.0.0.1", b"endpoint": b"127.0.0.1",
             b"role": b"replica", b"replication-offset": 10, b"health": b"online"},
        ],
    },
    {
        b"slots": [5461, 10922],
        b"nodes": [
            {b"id": b"c" * 40, b"port": 7001, b"ip": b"10.1.1.1", b"endpoint": b"?",
             b"role": b"master", b"replication-offset": 3, b"health": b"online"},
            {b"id": b"d" * 40, b"port": 7004, b"ip": b"10.1.1.2", b"endpoint": b"redis-1.svc",
             b"role": b"replica", b"replication-offset": 0, b"health": b"loading"},
        ],
    },
]  # fmt: skip

RESP2 = [
    ["slots", [11001, 16383], "nodes", [
        ["id", "e" * 40, "port", 7002, "tls-port", 8002, "ip", "127.0.0.1",
         "endpoint", "127.0.0.1", "role", "master", "replication-offset", 5, "health", "online"],
        ["id", "f" * 40, "port", 7005, "ip", "127.0.0.1", "endpoint", "127.0.0.1",
         "role", "replica", "replication-offset", 5, "health", "failed"],
    ]],
]  # fmt: skip


def test_resp3_reply() -> None:
    slot_map = parse_cluster_shards(RESP3)
    first, second = slot_map.shards
    assert first.primary.address == "127.0.0.1:7000" and first.ranges == ((0, 5460), (10923, 11000))
    assert [r.address for r in first.replicas] == ["127.0.0.1:7003"]
    assert second.primary.address == "10.1.1.1:7001"  # endpoint "?" falls back to ip
    assert second.replicas[0].address == "redis-1.svc:7004"
    assert not second.replicas[0].online
    assert slot_map.shard_for_slot(10923) is first and slot_map.shard_for_slot(6000) is second
    assert slot_map.uncovered == TOTAL_SLOTS - 11001


def test_resp2_reply_and_tls_port() -> None:
    plain = parse_cluster_shards(RESP2)
    assert plain.shards[0].primary.address == "127.0.0.1:7002"
    assert plain.shards[0].replicas[0].health == "failed"
    tls = parse_cluster_shards(RESP2, tls=True)
    assert tls.shards[0].primary.address == "127.0.0.1:8002"
    assert plain.shard_for_slot(16383) is plain.shards[0] and plain.shard_for_slot(0) is None


def test_empty_address_takes_the_answering_host() -> None:
    lone = [{"slots": [0, 16383], "nodes": [{"id": "x" * 40, "port": 7000, "ip": "",
             "endpoint": "", "role": "master", "health": "online"}]}]  # fmt: skip
    assert parse_cluster_shards(lone, default_host="10.9.9.9").shards[0].primary.address == (
        "10.9.9.9:7000"
    )
    with pytest.raises(ValueError, match="no address"):
        parse_cluster_shards(lone)


@pytest.mark.parametrize(
    "reply",
    [
        "ERR",
        [["slots", [0], "nodes", []]],
        [["slots", [0, 20000], "nodes", []]],
        [["slots", [0, 1], "nodes", [["id", "x"]]]],
        [42],
    ],
)
def test_malformed_replies_raise_value_error(reply: object) -> None:
    with pytest.raises(ValueError):
        parse_cluster_shards(reply)
