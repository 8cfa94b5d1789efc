"""Backlog per source type, read through ClusterClient from a real cluster."""

from __future__ import annotations

import pytest

from balancer import ClusterClient
from controller.backlog import BacklogError, BacklogSource, read_backlog
from controller.localcluster import LocalCluster


@pytest.fixture
def client(cluster: LocalCluster) -> ClusterClient:
    return ClusterClient(cluster.seed)


def test_lists_sets_and_presets(client: ClusterClient) -> None:
    client.rpush("queue:email", *range(7))
    client.rpush("celery", *range(3))
    client.rpush("rq:queue:default", *range(4))
    client.zadd("delayed", {f"j{i}": i for i in range(5)})
    client.rpush("{bull}:mail:wait", *range(2))
    client.zadd("{bull}:mail:prioritized", {"a": 1, "b": 2, "c": 3})
    assert read_backlog(client, BacklogSource("redis_list", "queue:email")) == 7
    assert read_backlog(client, BacklogSource("celery", "celery")) == 3
    assert read_backlog(client, BacklogSource("rq", "default")) == 4
    assert read_backlog(client, BacklogSource("sorted_set", "delayed")) == 5
    assert read_backlog(client, BacklogSource("bullmq", "mail", prefix="{bull}")) == 5
    assert read_backlog(client, BacklogSource("redis_list", "missing")) == 0


def test_stream_modes(client: ClusterClient) -> None:
    for i in range(10):
        client.xadd("events", {"n": i})
    client.xgroup_create("events", "workers", id="0")
    client.xreadgroup("workers", "w1", {"events": ">"}, count=4)  # 4 delivered, unacked
    lag = BacklogSource("redis_stream", "events", group="workers", mode="lag")
    pending = BacklogSource("redis_stream", "events", group="workers", mode="pending")
    length = BacklogSource("redis_stream", "events", mode="length")
    assert read_backlog(client, lag) == 6
    assert read_backlog(client, pending) == 4
    assert read_backlog(client, length) == 10
    with pytest.raises(BacklogError, match="no group"):
        read_backlog(client, BacklogSource("redis_stream", "events", group="nobody"))


def test_wrong_type_is_a_backlog_error(client: ClusterClient) -> None:
    client.set("plain", "x")
    with pytest.raises(BacklogError, match="WRONGTYPE"):
        read_backlog(client, BacklogSource("redis_list", "plain"))


@pytest.mark.parametrize(
    "kwargs",
    [{"type": "kafka", "key": "k"}, {"type": "redis_stream", "key": "s"},
     {"type": "redis_stream", "key": "s", "group": "g", "mode": "oldest"}],
)  # fmt: skip
def test_invalid_sources(kwargs: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        BacklogSource(**kwargs)
