"""Replica freshness is a pure function of one INFO replication reply; strategies clone."""

from __future__ import annotations

from typing import Any

import pytest

from balancer.endpoint import Endpoint
from balancer.freshness import ReplicaWatch, replica_is_fresh
from balancer.router import Router
from balancer.strategies import EwmaLatency, LeastConnections, RoundRobin, Weighted


@pytest.mark.parametrize(
    ("info", "fresh"),
    [
        ({"role": "slave", "master_link_status": "up", "master_last_io_seconds_ago": 1}, True),
        ({"role": "slave", "master_link_status": "up", "master_last_io_seconds_ago": 31}, False),
        ({"role": "slave", "master_link_status": "down", "master_last_io_seconds_ago": -1}, False),
        ({"role": "master"}, None),  # promoted meanwhile: not a replica any more
        ({"role": "slave"}, None),  # fields missing: unknown, not stale
        ({"role": "slave", "master_link_status": "up", "master_last_io_seconds_ago": "x"}, None),
    ],
)
def test_replica_is_fresh(info: dict[str, Any], fresh: bool | None) -> None:
    assert replica_is_fresh(info, 30.0) is fresh


def test_watch_reports_changes_only_and_survives_bad_replies() -> None:
    replies = {
        "a:1": b"# Replication\r\nrole:slave\r\nmaster_link_status:down\r\n",
        "b:1": b"role:slave\r\nmaster_link_status:up\r\nmaster_last_io_seconds_ago:0\r\n",
        "c:1": b"\x00garbage",
    }
    seen: list[frozenset[str]] = []

    def run(address: str) -> Any:
        if address == "d:1":
            raise ConnectionError("down")
        return replies[address]

    watch = ReplicaWatch(lambda: [*replies, "d:1"], run, seen.append, max_lag_seconds=5)
    assert watch.check() == {"a:1"}
    assert watch.check() == {"a:1"}
    assert seen == [frozenset({"a:1"})]


@pytest.mark.parametrize(
    "strategy",
    [RoundRobin(), Weighted(), LeastConnections(exact=True), EwmaLatency(decay_seconds=3)],
)
def test_a_strategy_instance_is_cloned_per_router(strategy: Any) -> None:
    a = Router([Endpoint("10.0.0.1:1"), Endpoint("10.0.0.2:1")], strategy=strategy.clone())
    b = Router([Endpoint("10.0.1.1:1")], strategy=strategy.clone())
    assert {a.pick().address for _ in range(20)} <= {"10.0.0.1:1", "10.0.0.2:1"}
    assert {b.pick().address for _ in range(20)} == {"10.0.1.1:1"}
    twin = strategy.clone()
    assert type(twin) is type(strategy) and twin.members == ()
    assert vars(twin).get("exact") == vars(strategy).get("exact")
    assert vars(twin).get("decay_seconds") == vars(strategy).get("decay_seconds")
