"""Scaling policy tables with a fake clock: nothing sleeps."""
# ruff: noqa: E501

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.policy import (
    ConsumerObservation,
    ConsumerPolicy,
    ConsumerPolicyState,
    ShardObservation,
    ShardPolicy,
    ShardPolicyState,
    decide_consumers,
    decide_shards,
)

SEED = ShardPolicy()  # min 2, max 10, 0.8 / 0.3, 300 s / 600 s


@pytest.mark.parametrize(
    ("current", "util", "gates", "desired", "blocked"),
    [
        (3, 0.85, (), 4, ()),
        (3, 0.50, (), 3, ()),
        (3, 0.20, (), 2, ()),
        (10, 0.95, (), 10, ("at_max",)),
        (2, 0.10, (), 2, ("at_min",)),
        (3, None, (), 3, ("missing_data",)),
        (3, 0.95, ("open_slots",), 3, ("open_slots",)),
        (3, 0.10, ("cluster_state", "failover_recent"), 3, ("cluster_state", "failover_recent")),
        (1, 0.50, (), 2, ()),  # below min: raise to min whatever the load
        (12, 0.50, (), 11, ()),  # above max: one step toward max (item 5)
    ],
)
def test_shard_table(current: int, util: float | None, gates: tuple[str, ...], desired: int,
                     blocked: tuple[str, ...]) -> None:  # fmt: skip
    decision, _ = decide_shards(
        SEED, ShardPolicyState(), ShardObservation(current, util, gates), 1000.0
    )
    assert (decision.desired, decision.blocked_by) == (desired, blocked)


def test_shard_reason_has_the_numbers() -> None:
    decision, _ = decide_shards(SEED, ShardPolicyState(), ShardObservation(3, 0.86), 0.0)
    assert decision.reason == "cluster utilization 86.0 % > 80.0 % scale-up threshold"
    assert decision.direction == "up"


def test_shard_cooldowns_per_direction() -> None:
    state = ShardPolicyState()
    d, state = decide_shards(SEED, state, ShardObservation(3, 0.9), 0.0)
    assert d.desired == 4 and state.last_up_at == 0.0
    d, state = decide_shards(SEED, state, ShardObservation(4, 0.9), 299.0)
    assert d.desired == 4 and d.blocked_by == ("cooldown",)
    d, state = decide_shards(SEED, state, ShardObservation(4, 0.9), 300.0)
    assert d.desired == 5
    # a scale-down waits 600 s after the last scaling of either direction
    d, state = decide_shards(SEED, state, ShardObservation(5, 0.1), 899.0)
    assert d.desired == 5 and d.blocked_by == ("cooldown",) and "1s left" in d.reason
    d, state = decide_shards(SEED, state, ShardObservation(5, 0.1), 900.0)
    assert d.desired == 4 and state.last_down_at == 900.0


def test_shard_migration_in_progress_blocks() -> None:
    d, _ = decide_shards(SEED, ShardPolicyState(), ShardObservation(3, 0.95, (), True), 0.0)
    assert d.desired == 3 and d.blocked_by == ("migration_in_progress",)


def test_shard_proportional_step() -> None:
    policy = ShardPolicy(max_step=3)
    d, _ = decide_shards(policy, ShardPolicyState(), ShardObservation(4, 1.2), 0.0)
    assert d.desired == 6  # ceil(4 x 1.2 / 0.8) = 6
    d, _ = decide_shards(policy, ShardPolicyState(), ShardObservation(4, 4.0), 0.0)
    assert d.desired == 7  # bounded by max_step


def test_shard_policy_validation() -> None:
    with pytest.raises(ValueError, match="min_shards"):
        ShardPolicy(min_shards=5, max_shards=3)
    with pytest.raises(ValueError, match="threshold"):
        ShardPolicy(scale_down_threshold=0.9)


# -- consumers ---------------------------------------------------------------------------

EMAIL = ConsumerPolicy(name="email", target_backlog_per_replica=100)


def run(policy: ConsumerPolicy, steps: Sequence[tuple[float, int, float | None]]) -> list[int]:
    state = ConsumerPolicyState()
    out = []
    for now, current, backlog in steps:
        decision, state = decide_consumers(
            policy, state, ConsumerObservation(current, backlog), now
        )
        out.append(decision.desired)
    return out


def test_hpa_formula_and_tolerance() -> None:
    assert run(EMAIL, [(0, 2, 450)]) == [5]  # ceil(450 / 100)
    assert run(EMAIL, [(0, 4, 430)]) == [4]  # 430 / (4 x 100) = 1.075 within 10 %
    assert run(EMAIL, [(0, 4, 460)]) == [5]  # 1.15 outside the band


def test_rate_limit_max_of_4_pods_and_100_percent_per_15s() -> None:
    assert run(EMAIL, [(0, 1, 10_000), (5, 5, 10_000), (15, 5, 10_000), (30, 10, 10_000)]) == [
        5,
        5,
        10,
        20,
    ]


def test_down_stabilization_holds_the_highest_of_300s() -> None:
    steps = [(0, 5, 500), (10, 5, 100), (200, 5, 100), (299, 5, 100), (301, 5, 100)]
    assert run(EMAIL, steps) == [5, 5, 5, 5, 1]


def test_activation_zero_to_one_and_back() -> None:
    policy = ConsumerPolicy(name="q", target_backlog_per_replica=100, activation_backlog=5,
                            scale_down_stabilization_seconds=60)  # fmt: skip
    assert run(policy, [(0, 0, 3)]) == [0]  # below activation: stays at zero
    assert run(policy, [(0, 0, 6)]) == [1]  # activated
    assert run(policy, [(0, 1, 6), (30, 1, 0), (61, 1, 0)]) == [1, 1, 0]  # idle → 0 after window


def test_min_and_max_clamp() -> None:
    policy = ConsumerPolicy(
        name="q", min_replicas=2, max_replicas=6, scale_down_stabilization_seconds=0
    )
    assert run(policy, [(0, 3, 0)]) == [2]
    assert run(policy, [(0, 4, 100_000)]) == [6]


def test_failed_source_holds_then_falls_back_and_recovers() -> None:
    policy = ConsumerPolicy(name="q", fallback_replicas=4, fallback_after_failures=3)
    state = ConsumerPolicyState()
    seen = []
    for now, backlog in [(0, None), (1, None), (2, None), (3, 200.0)]:
        d, state = decide_consumers(policy, state, ConsumerObservation(2, backlog), now)
        seen.append((d.desired, d.blocked_by, state.failures))
    assert seen == [(2, ("source_failed",), 1), (2, ("source_failed",), 2), (4, ("source_failed",), 3),
                    (2, (), 0)]  # fmt: skip


def test_failed_source_never_scales_down() -> None:
    policy = ConsumerPolicy(name="q", fallback_replicas=1, fallback_after_failures=1)
    assert run(policy, [(0, 8, None), (1, 8, None)]) == [8, 8]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 25), st.one_of(st.none(), st.floats(0, 5000))),
        min_size=1,
        max_size=30,
    )
)
def test_consumer_properties(steps: list[tuple[int, float | None]]) -> None:
    policy = ConsumerPolicy(name="q", min_replicas=1, max_replicas=12, fallback_replicas=3)
    state = ConsumerPolicyState()
    for i, (current, backlog) in enumerate(steps):
        d, state = decide_consumers(policy, state, ConsumerObservation(current, backlog), i * 7.0)
        if 1 <= current <= 12:
            assert 1 <= d.desired <= 12
        if backlog is None:
            assert d.desired >= current
        if backlog is not None and 1 <= current <= 12 and backlog > current * 100 * 1.1:
            assert d.desired >= current  # more work than replicas: never fewer replicas


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(2, 10), st.one_of(st.none(), st.floats(0, 2))),
        min_size=1,
        max_size=30,
    )
)
def test_shard_properties(steps: list[tuple[int, float | None]]) -> None:
    state = ShardPolicyState()
    for i, (current, util) in enumerate(steps):
        d, state = decide_shards(SEED, state, ShardObservation(current, util), i * 100.0)
        assert 2 <= d.desired <= 10 and abs(d.desired - current) <= 1
        if util is None:
            assert d.desired == current


@pytest.mark.parametrize(
    ("util", "shown"),
    [(0.0099, "0.99 % < 1.00 %"), (0.00999, "0.999 % < 1.000 %"), (0.004, "0.4 % < 1.0 %")],
)
def test_a_reason_shows_enough_digits_for_its_comparison(util: float, shown: str) -> None:
    """Never "utilization 0.01 < 0.01 scale-down threshold": the numbers read as compared."""
    policy = ShardPolicy(min_shards=1, scale_down_threshold=0.01, scale_up_threshold=0.8)
    decision, _ = decide_shards(policy, ShardPolicyState(), ShardObservation(3, util), 1000.0)
    assert f"cluster utilization {shown} scale-down threshold" in decision.reason
