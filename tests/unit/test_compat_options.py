"""RedisCluster's constructor and callback options both clients take (no server needed:
the asyncio client connects on first use)."""

from __future__ import annotations

import pytest
from redis.cluster import LoadBalancingStrategy

from balancer import AsyncClusterClient
from balancer.core.settings import load_balancing


@pytest.mark.parametrize(
    ("strategy", "read_from", "pick"),
    [
        (LoadBalancingStrategy.ROUND_ROBIN, "any", "round_robin"),
        (LoadBalancingStrategy.ROUND_ROBIN_REPLICAS, "replicas", "round_robin"),
        (LoadBalancingStrategy.RANDOM, "any", "random"),
        (LoadBalancingStrategy.RANDOM_REPLICA, "replicas", "random"),
    ],
)
def test_load_balancing_strategy_means_read_from_and_strategy(
    strategy: LoadBalancingStrategy, read_from: str, pick: str
) -> None:
    assert load_balancing(strategy, "primary", "round_robin") == (read_from, pick)
    assert load_balancing(strategy.value, "primary", "weighted") == (read_from, pick)
    client = AsyncClusterClient("10.0.0.1:7000", load_balancing_strategy=strategy)
    assert client.read_from == read_from


def test_load_balancing_strategy_none_changes_nothing() -> None:
    assert load_balancing(None, "replicas", "weighted") == ("replicas", "weighted")


def test_load_balancing_strategy_with_read_from_is_ambiguous() -> None:
    with pytest.raises(ValueError, match="not both"):
        AsyncClusterClient(
            "10.0.0.1:7000",
            read_from="replicas",
            load_balancing_strategy=LoadBalancingStrategy.ROUND_ROBIN,
        )
    with pytest.raises(ValueError, match="load_balancing_strategy must be one of"):
        load_balancing("fastest", "primary", "round_robin")


def test_cluster_response_callbacks_is_the_clients_table() -> None:
    client = AsyncClusterClient("10.0.0.1:7000")
    assert "CLUSTER SLOTS" in client.cluster_response_callbacks
    client.cluster_response_callbacks["CLUSTER MYID"] = str.upper
    assert client._callbacks["CLUSTER MYID"] is str.upper
    client.set_response_callback("GET", len)
    assert client.cluster_response_callbacks["GET"] is len
