"""The public surface is pinned: an accidental export (or a lost one) fails here."""

from __future__ import annotations

import balancer


def test_balancer_exports_exactly_the_public_api() -> None:
    assert sorted(balancer.__all__) == sorted(
        [
            "STRATEGIES",
            "BreakerPolicy",
            "ClusterClient",
            "ClusterError",
            "CrossSlotError",
            "Endpoint",
            "EndpointStats",
            "NoHealthyEndpoint",
            "NodeUnavailable",
            "NotSentError",
            "OutcomeUnknown",
            "RetryPolicy",
            "Router",
            "SlotNotCovered",
            "Strategy",
        ]
    )
    for name in balancer.__all__:
        assert getattr(balancer, name) is not None


def test_strategy_names() -> None:
    assert sorted(balancer.STRATEGIES) == [
        "ewma_latency",
        "least_connections",
        "random",
        "round_robin",
        "weighted",
    ]


def test_controller_exports_resolve() -> None:
    import controller

    assert len(controller.__all__) == len(set(controller.__all__))
    for name in controller.__all__:
        assert getattr(controller, name) is not None, name
    assert "LocalCluster" in controller.__all__ and "plan_rebalance" in controller.__all__
