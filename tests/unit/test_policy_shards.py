"""Shard policy rules of issue 9 with a fake clock: sustained evidence before a scale-up,
samples after our own migrations discounted, unknown signals hold, out-of-range counts
step with cooldowns, failing changes back off."""

from __future__ import annotations

from dataclasses import replace

import pytest

from controller.policy import (
    ShardObservation,
    ShardPolicy,
    ShardPolicyState,
    decide_shards,
    record_shard_outcome,
    retry_backoff,
)

STABLE = ShardPolicy(scale_up_stabilization_seconds=60, scale_up_stabilization_probes=3,
                     settle_seconds=30)  # fmt: skip


def drive(policy: ShardPolicy, samples: list[tuple[float, float]], current: int = 3) -> list[int]:
    """Feed (time, utilization) samples every cycle; the desired count of each cycle."""
    state = ShardPolicyState()
    out = []
    for now, util in samples:
        decision, state = decide_shards(policy, state, ShardObservation(current, util), now)
        out.append(decision.desired)
    return out


def test_one_second_burst_does_not_add_a_shard() -> None:
    # probes every 5 s; one burst read as 669 % utilization, the rest idle
    samples = [(t * 5.0, 0.5) for t in range(30)]
    samples[10] = (50.0, 6.69)
    assert drive(STABLE, samples) == [3] * 30
    assert drive(ShardPolicy(), samples)[10] == 4  # without the window it would have


def test_sustained_load_adds_a_shard_after_the_window() -> None:
    out = drive(STABLE, [(t * 5.0, 0.9) for t in range(20)])
    first_up = out.index(4)
    assert first_up == 12  # 60 s of samples (0 .. 60), median above 0.8
    assert out[:12] == [3] * 12


def test_one_dip_does_not_restart_the_window_but_a_quiet_majority_holds() -> None:
    samples = [(t * 5.0, 0.9) for t in range(30)]
    samples[8] = (40.0, 0.5)  # one quiet probe: the median is still above
    assert drive(STABLE, samples).index(4) == 12
    noisy = [(t * 5.0, 0.9 if t % 3 == 0 else 0.5) for t in range(30)]  # busy 1 in 3
    assert drive(STABLE, noisy) == [3] * 30


def test_window_is_covered_with_probe_jitter() -> None:
    # probes every 0.5 s that never land exactly on the window's edge
    out = drive(ShardPolicy(scale_up_stabilization_seconds=3, scale_up_stabilization_probes=3),
                [(0.13 + t * 0.5, 0.9) for t in range(12)])  # fmt: skip
    assert out.index(4) == 6  # the first probe 3 s after the first sample


def test_reason_says_not_yet_sustained() -> None:
    d, state = decide_shards(STABLE, ShardPolicyState(), ShardObservation(3, 0.9), 0.0)
    assert d.blocked_by == ("stabilization",) and "not yet sustained" in d.reason
    assert state.samples == ((0.0, 0.9),)


def test_samples_right_after_our_migration_are_discounted() -> None:
    state = ShardPolicyState(samples=((0.0, 0.95), (30.0, 0.95)))
    obs = ShardObservation(3, 0.95, own_change_ended_at=55.0)
    d, new = decide_shards(STABLE, state, obs, 70.0)
    assert d.desired == 3 and d.blocked_by == ("settling",)
    assert new.samples == state.samples  # the discounted sample is not evidence
    d, _ = decide_shards(STABLE, state, obs, 86.0)  # settled: counts again
    assert d.desired == 4  # 0, 30 and 86 all busy: the window 26..86 is covered


@pytest.mark.parametrize("util", [0.1, 0.5, 0.95])
def test_unknown_signal_holds_and_plan_says_so(util: float) -> None:
    obs = ShardObservation(4, util, missing=("cpu@127.0.0.1:7000",))
    d, _ = decide_shards(ShardPolicy(), ShardPolicyState(), obs, 1000.0)
    assert d.desired == 4 and d.blocked_by == ("missing_data",)
    assert "cpu@127.0.0.1:7000" in d.reason and "never lower" in d.reason


def test_above_max_steps_down_with_cooldowns() -> None:
    policy = ShardPolicy(max_shards=4)
    state = ShardPolicyState()
    seen: list[int] = []
    for now in range(0, 2000, 100):
        current = seen[-1] if seen else 7
        d, state = decide_shards(policy, state, ShardObservation(current, 0.5), float(now))
        seen.append(d.desired)
    assert seen[:8] == [6, 6, 6, 6, 6, 6, 5, 5]  # one step, then 600 s cooldown
    assert seen[-1] == 4 and min(seen) == 4
    wide = ShardPolicy(max_shards=4, max_step=2)
    d, _ = decide_shards(wide, ShardPolicyState(), ShardObservation(7, 0.5), 0.0)
    assert d.desired == 5  # the configured step


def test_below_min_steps_up() -> None:
    policy = ShardPolicy(min_shards=5, max_step=2)
    d, state = decide_shards(policy, ShardPolicyState(), ShardObservation(1, 0.1), 0.0)
    assert d.desired == 3
    d, _ = decide_shards(policy, state, ShardObservation(3, 0.1), 10.0)
    assert d.desired == 3 and d.blocked_by == ("cooldown",)


def test_backoff_is_exponential_and_capped() -> None:
    assert [retry_backoff(n, 10, 100) for n in range(6)] == [0, 10, 20, 40, 80, 100]
    assert retry_backoff(10_000, 10, 100) == 100


def test_failing_change_backs_off() -> None:
    policy = ShardPolicy(retry_base_seconds=10, retry_max_seconds=40)
    state = ShardPolicyState()
    tried = []
    for now in range(0, 200, 5):  # a probe every 5 s; every attempt fails
        d, new = decide_shards(policy, state, ShardObservation(3, 0.95), float(now))
        if d.direction == "up":
            tried.append(now)
            state = record_shard_outcome(replace(new, last_up_at=None), False, float(now))
    assert tried == [0, 10, 30, 70, 110, 150, 190]  # waits 10, 20, 40, 40, ...
    d, _ = decide_shards(policy, state, ShardObservation(3, 0.95), 191.0)
    assert d.blocked_by == ("backoff",) and "retry in" in d.reason
    ok = record_shard_outcome(state, True, 200.0)
    assert ok.failures == 0 and ok.last_failure_at is None
