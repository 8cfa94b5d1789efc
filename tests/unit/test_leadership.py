"""Leader election decisions, from values and a monotonic clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controller.leadership import (
    LeaderTiming,
    LeaseView,
    Observed,
    lease_action,
    observe,
    still_leader,
)

NOW = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)


def view(
    holder: str | None, renewed: float = 0, version: str = "1", duration: float = 15
) -> LeaseView:
    return LeaseView(holder, NOW + timedelta(seconds=renewed), duration, resource_version=version)


def seen(lease: LeaseView, at: float) -> Observed:
    return Observed(lease.record, at)


@pytest.mark.parametrize(
    ("lease", "observed_at", "action"),
    [
        (None, None, "create"),
        (view("me"), 0.0, "renew"),
        (view("me"), -100.0, "renew"),  # ours even if late: renewing is still safe
        (view("other"), 95.0, "follow"),
        (view("other"), 85.1, "follow"),
        (view("other"), 85.0, "acquire"),  # unchanged for a whole lease duration
        (view(None, duration=1), 100.0, "acquire"),  # released
        (view(""), 100.0, "acquire"),
        (LeaseView("other", None, 15), 85.0, "acquire"),  # never renewed, seen long ago
        (LeaseView("other", None, 15), 99.0, "follow"),  # ... or seen only just now
    ],
)
def test_lease_action(lease: LeaseView | None, observed_at: float | None, action: str) -> None:
    observed = None if lease is None or observed_at is None else seen(lease, observed_at)
    assert lease_action(lease, "me", observed, 100.0) == action


def test_a_record_never_timed_is_followed() -> None:
    lease = view("other", renewed=-3600)  # an hour old by the holder's clock: not ours to judge
    assert lease_action(lease, "me", None, 100.0) == "follow"
    assert lease_action(lease, "me", seen(view("other", version="0"), 0.0), 100.0) == "follow"


@pytest.mark.parametrize("skew", [-10.0, 10.0, -3600.0, 3600.0])
def test_the_holders_clock_skew_changes_nothing(skew: float) -> None:
    """The holder's renewTime is only a change marker: ahead or behind, a live holder
    is followed and a dead one is taken over one lease duration after its last change."""
    observed = None
    for tick in range(20):  # a live holder renews every 2 s, its clock `skew` off
        lease = view("other", renewed=skew + 2 * tick, version=str(tick))
        observed = observe(observed, lease, 2.0 * tick)
        assert lease_action(lease, "me", observed, 2.0 * tick) == "follow"
    dead = lease
    assert lease_action(dead, "me", observe(observed, dead, 52.9), 52.9) == "follow"
    assert lease_action(dead, "me", observe(observed, dead, 53.0), 53.0) == "acquire"


def test_observe_keeps_the_first_sighting_of_a_record() -> None:
    first = observe(None, view("a"), 10.0)
    assert first == Observed(view("a").record, 10.0)
    assert observe(first, view("a"), 20.0) is first
    assert observe(first, view("a", version="2"), 20.0) == Observed(
        view("a", version="2").record, 20.0
    )
    assert observe(first, view("b"), 20.0) == Observed(view("b").record, 20.0)
    assert observe(first, None, 20.0) is None


def test_a_leader_stops_acting_at_the_renew_deadline_counted_from_the_request_start() -> None:
    timing = LeaderTiming(lease_seconds=15, renew_deadline_seconds=10, retry_seconds=2)
    assert still_leader(100.0, 109.9, timing)
    assert not still_leader(100.0, 110.0, timing)
    assert not still_leader(None, 0.0, timing)


@pytest.mark.parametrize(
    ("lease", "deadline", "retry"), [(15, 15, 2), (15, 10, 10), (15, 10, 0), (5, 10, 2)]
)
def test_timing_must_be_ordered(lease: float, deadline: float, retry: float) -> None:
    with pytest.raises(ValueError, match="retry < renew deadline < lease"):
        LeaderTiming(lease, deadline, retry)
