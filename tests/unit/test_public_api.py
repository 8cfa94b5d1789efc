"""The public surface is pinned: an accidental export (or a lost one) fails here."""

from __future__ import annotations

import balancer


def test_balancer_exports_exactly_the_public_api() -> None:
    assert sorted(balancer.__all__) == sorted(
        [
            "STRATEGIES",
            "AsyncClusterClient",
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
    assert "plan_rebalance" in controller.__all__ and "ClusterLease" in controller.__all__
    # the test/dev harness is not API, and importing the package does not load it
    assert "LocalCluster" not in controller.__all__


def test_production_modules_never_import_the_harness() -> None:
    import subprocess
    import sys

    code = ("import sys, controller, controller.cli, controller.loop, controller.runner; "
            "print('controller.localcluster' in sys.modules)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
