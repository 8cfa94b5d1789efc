"""Scaling decisions as pure functions: ``decide(policy, state, observation, now)``.

Nothing here reads a clock or a socket: the time is an argument and the state is a
frozen value returned anew (urllib3's ``Retry`` style), so every rule is a table test.

Shards follow the seed's thresholds and per-direction cooldowns and never move while a
cluster gate is closed or data is missing. A scale-up needs sustained evidence: the
median utilization over a stabilization window must exceed the threshold, so a one-second
burst (one sample) does not add a shard, and samples taken during or just after our own migrations
(which make idle nodes look busy) do not count. Out-of-range shard counts move one
configured step at a time with cooldowns; a change that keeps failing backs off
exponentially (:func:`retry_backoff`). Consumers follow the Kubernetes HPA
algorithm (``ceil(backlog / target per replica)``, tolerance, stabilization windows,
rate policies) with KEDA's activation (0 ↔ 1) and fallback on a failing source.
A failing or missing metric holds; it never scales anything down.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field, replace
from typing import Literal

from controller.intent import PendingChange

__all__ = [
    "ConsumerObservation",
    "ConsumerPolicy",
    "ConsumerPolicyState",
    "Decision",
    "ShardObservation",
    "ShardPolicy",
    "ShardPolicyState",
    "decide_consumers",
    "decide_shards",
    "record_shard_outcome",
    "resume_decision",
    "retry_backoff",
]

Direction = Literal["up", "down", "none"]


@dataclass(frozen=True)
class Decision:
    """What the controller wants for one target now, and why (or why not)."""

    target: str
    current: int
    desired: int
    reason: str
    blocked_by: tuple[str, ...] = ()

    @property
    def direction(self) -> Direction:
        if self.desired > self.current:
            return "up"
        if self.desired < self.current:
            return "down"
        return "none"


# -- shards ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardPolicy:
    min_shards: int = 2
    max_shards: int = 10
    scale_up_threshold: float = 0.8
    scale_down_threshold: float = 0.3
    scale_up_cooldown_seconds: float = 300.0
    scale_down_cooldown_seconds: float = 600.0
    max_step: int = 1  # > 1: add ceil(current * util / threshold) - current, at most this
    scale_up_stabilization_seconds: float = 0.0  # median util over this window must be > up
    scale_up_stabilization_probes: int = 1  # ... and over at least this many samples
    settle_seconds: float = 0.0  # after our own change ends, samples don't count
    retry_base_seconds: float = 10.0  # first wait after a failed change, doubled each time
    retry_max_seconds: float = 600.0

    def __post_init__(self) -> None:
        if not 1 <= self.min_shards <= self.max_shards:
            raise ValueError("ShardPolicy: need 1 <= min_shards <= max_shards")
        if not 0 < self.scale_down_threshold < self.scale_up_threshold:
            raise ValueError("ShardPolicy: need 0 < scale_down_threshold < scale_up_threshold")
        if self.max_step < 1:
            raise ValueError("ShardPolicy: max_step must be >= 1")
        if self.scale_up_stabilization_seconds < 0 or self.scale_up_stabilization_probes < 1:
            raise ValueError("ShardPolicy: stabilization needs seconds >= 0 and probes >= 1")
        if not 0 < self.retry_base_seconds <= self.retry_max_seconds:
            raise ValueError("ShardPolicy: need 0 < retry_base_seconds <= retry_max_seconds")


@dataclass(frozen=True)
class ShardObservation:
    current: int
    utilization: float | None  # cluster mean; None = missing or failed data
    gates: tuple[str, ...] = ()  # names of closed cluster gates
    migration_in_progress: bool = False
    missing: tuple[str, ...] = ()  # signals unknown this cycle, e.g. "cpu@host:port"
    own_change_ended_at: float | None = None  # when our last reshard finished


@dataclass(frozen=True)
class ShardPolicyState:
    """Cooldown clocks, the scale-up evidence window and the failure backoff."""

    last_up_at: float | None = None
    last_down_at: float | None = None
    samples: tuple[tuple[float, float], ...] = ()  # (time, utilization) counted so far
    failures: int = 0  # consecutive failed changes
    last_failure_at: float | None = None


def retry_backoff(failures: int, base: float, cap: float) -> float:
    """Seconds to wait after ``failures`` consecutive failures: base·2^(n-1), capped."""
    if failures <= 0:
        return 0.0
    return min(cap, base * 2.0 ** min(failures - 1, 62))


def record_shard_outcome(state: ShardPolicyState, ok: bool, now: float) -> ShardPolicyState:
    """The state after a shard change was tried: success clears the backoff, a failure
    extends it (the cooldown clocks are those of the decision that was tried)."""
    if ok:
        return replace(state, failures=0, last_failure_at=None, samples=())
    return replace(state, failures=state.failures + 1, last_failure_at=now)


def _since(then: float | None, now: float) -> float:
    return math.inf if then is None else now - then


def _last_change(state: ShardPolicyState) -> float | None:
    """The later of the two cooldown clocks (0.0 is a time, not "never")."""
    times = [t for t in (state.last_up_at, state.last_down_at) if t is not None]
    return max(times) if times else None


def decide_shards(
    policy: ShardPolicy, state: ShardPolicyState, obs: ShardObservation, now: float
) -> tuple[Decision, ShardPolicyState]:
    """+1 shard above the up threshold (more with ``max_step``), -1 below the down
    threshold, within min/max and cooldowns; hold on gates, migrations, missing data."""
    current = obs.current

    def hold(reason: str, *blocked: str) -> tuple[Decision, ShardPolicyState]:
        return Decision("shards", current, current, reason, blocked), state

    blockers = tuple(obs.gates) + (("migration_in_progress",) if obs.migration_in_progress else ())
    if blockers:
        return hold(f"cluster not stable: {', '.join(blockers)}", *blockers)
    backoff = retry_backoff(state.failures, policy.retry_base_seconds, policy.retry_max_seconds)
    wait = backoff - _since(state.last_failure_at, now)
    if wait > 0:
        why = f"last {state.failures} shard change(s) failed: retry in {wait:.0f}s"
        return hold(why, "backoff")
    if current < policy.min_shards or current > policy.max_shards:
        return _out_of_range(policy, state, current, now)
    util = obs.utilization
    if util is None or math.isnan(util):
        return hold("utilization unknown: holding", "missing_data")
    if obs.missing:
        shown = ", ".join(obs.missing[:5]) + (", ..." if len(obs.missing) > 5 else "")
        why = f"utilization signal unknown this cycle ({shown}): holding, never lower"
        return hold(why, "missing_data")
    up, down = policy.scale_up_threshold, policy.scale_down_threshold
    shown_up, shown_down = _percents(util, up), _percents(util, down)
    settling = obs.own_change_ended_at is not None and (
        now - obs.own_change_ended_at < policy.settle_seconds
    )
    window = policy.scale_up_stabilization_seconds
    # the samples of the window, plus the last one before it: it shows the window is covered
    older = [s for s in state.samples if now - s[0] > window][-1:] if window > 0 else []
    recent = (*older, *(s for s in state.samples if now - s[0] <= window))
    state = replace(state, samples=recent if settling else (*recent, (now, util)))
    if util > up:
        why = f"cluster utilization {shown_up[0]} > {shown_up[1]} scale-up threshold"
        if current >= policy.max_shards:
            return hold(f"{why}, already at max {policy.max_shards}", "at_max")
        if settling:
            why += " right after our own migration: sample discounted"
            return hold(why, "settling")
        samples = state.samples
        smoothed = statistics.median(u for _, u in samples)
        span = now - samples[0][0]
        if span < window or len(samples) < policy.scale_up_stabilization_probes:
            why += f", not yet sustained ({span:.0f}/{window:.0f}s, {len(samples)} samples)"
            return hold(why, "stabilization")
        if smoothed <= up:
            why += f", median over {window:.0f}s {_percents(smoothed, up)[0]}: not sustained"
            return hold(why, "stabilization")
        if window > 0:
            why += f", median {_percents(smoothed, up)[0]} over {span:.0f}s"
        wait = policy.scale_up_cooldown_seconds - _since(state.last_up_at, now)
        if wait > 0:
            return hold(f"{why}, scale-up cooldown {wait:.0f}s left", "cooldown")
        step = min(policy.max_step, max(1, math.ceil(current * smoothed / up) - current))
        return _move(state, current, min(policy.max_shards, current + step), why, now)
    if util < down:
        why = f"cluster utilization {shown_down[0]} < {shown_down[1]} scale-down threshold"
        if current <= policy.min_shards:
            return hold(f"{why}, already at min {policy.min_shards}", "at_min")
        wait = policy.scale_down_cooldown_seconds - _since(_last_change(state), now)
        if wait > 0:
            return hold(f"{why}, scale-down cooldown {wait:.0f}s left", "cooldown")
        return _move(state, current, current - 1, why, now)
    low, high = _percents(down, util), _percents(util, up)
    return hold(f"cluster utilization {high[0]} within {low[0]}..{high[1]}")


def _percents(a: float, b: float) -> tuple[str, str]:
    """``a`` and ``b`` as percentages with one decimal, or with as many more as it takes
    for two different numbers to read differently: the comparison shown is the one made
    (never "1.0 % < 1.0 %")."""
    for digits in range(1, 7):
        shown = f"{a * 100:.{digits}f} %", f"{b * 100:.{digits}f} %"
        if shown[0] != shown[1] or a == b:
            return shown
    return shown


def _out_of_range(
    policy: ShardPolicy, state: ShardPolicyState, current: int, now: float
) -> tuple[Decision, ShardPolicyState]:
    """Back into min..max one configured step at a time, each step after its cooldown."""
    why = f"{current} shards outside {policy.min_shards}..{policy.max_shards}"
    if current < policy.min_shards:
        wait = policy.scale_up_cooldown_seconds - _since(state.last_up_at, now)
        desired = min(policy.min_shards, current + policy.max_step)
    else:
        wait = policy.scale_down_cooldown_seconds - _since(_last_change(state), now)
        desired = max(policy.max_shards, current - policy.max_step)
    if wait > 0:
        return Decision("shards", current, current, f"{why}, cooldown {wait:.0f}s left",
                        ("cooldown",)), state  # fmt: skip
    return _move(state, current, desired, f"{why}: step to {desired}", now)


def _move(
    state: ShardPolicyState, current: int, desired: int, reason: str, now: float
) -> tuple[Decision, ShardPolicyState]:
    decision = Decision("shards", current, desired, reason)
    if decision.direction == "up":
        state = replace(state, last_up_at=now)
    elif decision.direction == "down":
        state = replace(state, last_down_at=now)
    return decision, state


def resume_decision(
    change: PendingChange, current: int, gates: tuple[str, ...], state: ShardPolicyState,
    retry: tuple[float, float], now: float, bounds: tuple[int, int] | None = None,
) -> Decision:  # fmt: skip
    """The shard decision while an interrupted change is pending: finish it, unless a
    gate is closed or the last attempt failed recently. The policy's cooldowns were
    checked when the change started (the record is written after that check, and read
    afresh before every decision); its bounds are checked again: a target the policy no
    longer allows (``bounds`` = min, max shards) is finished at the nearest allowed
    count, which the resharding reaches from whatever state the change left."""
    target = change.to_shards
    why = f"resuming interrupted {change.kind} {change.from_shards} -> {target}"
    if bounds is not None and not bounds[0] <= target <= bounds[1]:
        target = min(max(target, bounds[0]), bounds[1])
        why += f" (now {target}: the policy allows {bounds[0]}-{bounds[1]} shards)"
    if change.draining:
        why += f" (draining: {', '.join(change.draining)})"
    if gates:
        return Decision("shards", current, current, f"{why}; waiting: {', '.join(gates)}", gates)
    wait = retry_backoff(state.failures, *retry) - _since(state.last_failure_at, now)
    if wait > 0:
        return Decision("shards", current, current, f"{why}; retry in {wait:.0f}s", ("backoff",))
    return Decision("shards", current, target, why)


# -- consumers (HPA + KEDA) ------------------------------------------------------------


@dataclass(frozen=True)
class ConsumerPolicy:
    name: str = "consumer"
    target_backlog_per_replica: float = 100.0
    activation_backlog: float = 0.0
    min_replicas: int = 0
    max_replicas: int = 20
    fallback_replicas: int | None = None
    fallback_after_failures: int = 3
    tolerance: float = 0.1
    scale_up_stabilization_seconds: float = 0.0
    scale_down_stabilization_seconds: float = 300.0
    scale_up_pods: int | None = 4
    scale_up_percent: float | None = 100.0
    scale_up_period_seconds: float = 15.0
    scale_down_pods: int | None = None
    scale_down_percent: float | None = 100.0
    scale_down_period_seconds: float = 15.0

    def __post_init__(self) -> None:
        if self.target_backlog_per_replica <= 0:
            raise ValueError(f"{self.name}: target_backlog_per_replica must be > 0")
        if not 0 <= self.min_replicas <= self.max_replicas:
            raise ValueError(f"{self.name}: need 0 <= min_replicas <= max_replicas")
        if self.scale_up_pods is None and self.scale_up_percent is None:
            raise ValueError(f"{self.name}: scale-up needs a pods or percent policy")
        if self.fallback_after_failures < 1:
            raise ValueError(f"{self.name}: fallback_after_failures must be >= 1")


@dataclass(frozen=True)
class ConsumerObservation:
    current: int
    backlog: float | None  # None: the source failed this cycle


@dataclass(frozen=True)
class ConsumerPolicyState:
    failures: int = 0
    recommendations: tuple[tuple[float, int], ...] = ()  # (time, raw desired)
    events: tuple[tuple[float, int], ...] = field(
        default=()
    )  # (time, replicas added (+) / removed (-))


def _raw_recommendation(policy: ConsumerPolicy, current: int, backlog: float) -> tuple[int, str]:
    target = policy.target_backlog_per_replica
    if backlog <= policy.activation_backlog:
        if policy.min_replicas == 0:
            return 0, f"backlog {backlog:g} <= activation {policy.activation_backlog:g}: inactive"
        return policy.min_replicas, f"backlog {backlog:g} <= activation: at min"
    wanted = max(1, math.ceil(backlog / target))
    if current > 0:
        ratio = backlog / (current * target)
        if abs(ratio - 1.0) <= policy.tolerance:
            return (
                current,
                f"backlog {backlog:g} per {current} replicas within tolerance of {target:g}",
            )
    return wanted, f"backlog {backlog:g} / {target:g} per replica → {wanted}"


def _period_change(
    events: tuple[tuple[float, int], ...], now: float, period: float, up: bool
) -> int:
    return sum(d for t, d in events if now - t < period and (d > 0) == up)


def decide_consumers(
    policy: ConsumerPolicy, state: ConsumerPolicyState, obs: ConsumerObservation, now: float
) -> tuple[Decision, ConsumerPolicyState]:
    current = obs.current
    if obs.backlog is None or math.isnan(obs.backlog):
        failures = state.failures + 1
        new_state = replace(state, failures=failures)
        if policy.fallback_replicas is not None and failures >= policy.fallback_after_failures:
            desired = max(current, min(policy.fallback_replicas, policy.max_replicas))
            why = f"source failed {failures}x: fallback to {policy.fallback_replicas}"
            decision = Decision(policy.name, current, desired, why, ("source_failed",))
            return decision, _record(new_state, decision, now)
        reason = f"source failed {failures}x: holding {current}"
        return Decision(policy.name, current, current, reason, ("source_failed",)), new_state

    raw, reason = _raw_recommendation(policy, current, obs.backlog)
    raw = min(raw, policy.max_replicas)
    if raw != 0 or policy.min_replicas > 0:
        raw = max(raw, policy.min_replicas)
    window = max(policy.scale_up_stabilization_seconds, policy.scale_down_stabilization_seconds)
    recs = (*((t, r) for t, r in state.recommendations if now - t < window), (now, raw))
    up_recs = [r for t, r in recs if now - t <= policy.scale_up_stabilization_seconds]
    down_recs = [r for t, r in recs if now - t <= policy.scale_down_stabilization_seconds]
    desired = current
    desired = max(desired, min(up_recs))  # scale up only to what the up-window agrees on
    desired = min(desired, max(down_recs))  # scale down only to the window's highest
    blocked: tuple[str, ...] = ()
    if desired < raw and raw > current:
        blocked = ("stabilization",)
    elif desired > raw and raw < current:
        blocked = ("stabilization",)
        reason += f"; held at {desired} by the {policy.scale_down_stabilization_seconds:g}s window"
    limited = _rate_limit(policy, state.events, current, desired, now)
    if limited != desired:
        blocked += ("rate_limit",)
        reason += f"; rate-limited to {limited}"
    decision = Decision(policy.name, current, limited, reason, blocked)
    new_state = replace(state, failures=0, recommendations=recs)
    return decision, _record(new_state, decision, now)


def _rate_limit(
    policy: ConsumerPolicy,
    events: tuple[tuple[float, int], ...],
    current: int,
    desired: int,
    now: float,
) -> int:
    if desired > current:
        # replicas at the period's start; never negative if someone else scaled meanwhile
        start = max(
            0, current - _period_change(events, now, policy.scale_up_period_seconds, up=True)
        )
        limits = []
        if policy.scale_up_pods is not None:
            limits.append(start + policy.scale_up_pods)
        if policy.scale_up_percent is not None:
            limits.append(math.ceil(start * (1 + policy.scale_up_percent / 100)))
        # a scale-up is limited, never turned into a scale-down
        return min(desired, max(max(limits), current + (1 if current == 0 else 0)))
    if desired < current:
        start = current - _period_change(events, now, policy.scale_down_period_seconds, up=False)
        limits = []
        if policy.scale_down_pods is not None:
            limits.append(start - policy.scale_down_pods)
        if policy.scale_down_percent is not None:
            limits.append(math.floor(start * (1 - policy.scale_down_percent / 100)))
        return min(current, max(desired, min(limits))) if limits else desired
    return desired


def _record(state: ConsumerPolicyState, decision: Decision, now: float) -> ConsumerPolicyState:
    if decision.desired == decision.current:
        return state
    horizon = 3600.0  # longer than any period we honour
    events = tuple(e for e in state.events if now - e[0] < horizon)
    return replace(state, events=(*events, (now, decision.desired - decision.current)))
