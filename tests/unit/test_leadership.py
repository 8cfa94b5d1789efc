"""Leader election decisions, from values and a clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controller.leadership import LeaderTiming, LeaseView, lease_action, still_leader

NOW = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)


def view(holder: str | None, age: float, duration: float = 15) -> LeaseView:
    return LeaseView(holder, NOW - timedelta(seconds=age), duration)


@pytest.mark.parametrize(
    ("lease", "action"),
    [
        (None, "create"),
        (view("me", 1), "renew"),
        (view("me", 100), "renew"),  # ours even if late: renewing is still safe
        (view("other", 5), "follow"),
        (view("other", 14.9), "follow"),
        (view("other", 15), "acquire"),  # expired exactly at renew + duration
        (view(None, 0, duration=1), "acquire"),  # released
        (view("", 0), "acquire"),
        (LeaseView("other", None, 15), "acquire"),  # never renewed
    ],
)
def test_lease_action(lease: LeaseView | None, action: str) -> None:
    assert lease_action(lease, "me", NOW) == action


def test_a_leader_stops_acting_at_the_renew_deadline() -> None:
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
