"""Leader election as values: what a candidate does next with a Lease it has just read.

The Kubernetes ``coordination.k8s.io/v1`` Lease is the lock (as client-go's
leaderelection uses it): the holder renews it every retry period; anyone may take it
once it has gone unrenewed for ``leaseDurationSeconds``. The I/O (read, create, replace
with the read ``resourceVersion`` so a racing candidate gets 409) lives in
``controller.platform.kubernetes.leader``; this module decides, from values and a
monotonic clock, so every case is tested without an API server.

Time is the candidate's own, never the holder's. A follower does not compare the
holder's ``renewTime`` with its wall clock (two pods' clocks 10 s apart would make one
take a healthy leader's Lease, or wait 10 s too long for a dead one's); it notes the
monotonic time at which it *first saw* the current record (holder, renewTime,
resourceVersion) and takes the Lease once that record has stayed the same for a whole
lease duration (:class:`Observed`). The holder counts its renew deadline from the
*start* of its last successful renewal, so a slow API server that answers late can
never stretch its leadership past the time a follower may take over.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

__all__ = [
    "LeaderTiming",
    "LeaseAction",
    "LeaseView",
    "Observed",
    "lease_action",
    "observe",
    "still_leader",
]

LeaseAction = Literal["create", "renew", "acquire", "follow"]


@dataclass(frozen=True)
class LeaderTiming:
    """client-go's defaults: a Lease lasts 15 s, a leader that could not renew for 10 s
    stops acting, candidates retry every 2 s."""

    lease_seconds: float = 15.0
    renew_deadline_seconds: float = 10.0
    retry_seconds: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_seconds < self.renew_deadline_seconds < self.lease_seconds:
            raise ValueError(
                "leader election needs 0 < retry < renew deadline < lease duration, got "
                f"{self.retry_seconds} / {self.renew_deadline_seconds} / {self.lease_seconds}"
            )


@dataclass(frozen=True)
class LeaseView:
    """The fields of a Lease that matter to the decision. ``renew_time`` is the holder's
    wall clock: it tells a change apart, never how old the Lease is."""

    holder: str | None
    renew_time: datetime | None
    duration_seconds: float
    transitions: int = 0
    resource_version: str | None = None

    @property
    def record(self) -> tuple[str | None, datetime | None, str | None]:
        """What identifies one renewal: a new value means the holder is alive."""
        return (self.holder, self.renew_time, self.resource_version)


@dataclass(frozen=True)
class Observed:
    """A Lease record and the monotonic time this candidate first saw it."""

    record: tuple[str | None, datetime | None, str | None]
    at: float


def observe(previous: Observed | None, view: LeaseView | None, now: float) -> Observed | None:
    """The observation after reading ``view`` at monotonic ``now``: unchanged if the
    record is the one already seen (its age keeps growing), else a new one from ``now``."""
    if view is None:
        return None
    if previous is not None and previous.record == view.record:
        return previous
    return Observed(view.record, now)


def lease_action(
    view: LeaseView | None, me: str, observed: Observed | None, now: float
) -> LeaseAction:
    """``create`` when there is no Lease, ``renew`` when it is ours, ``acquire`` when it
    has no holder (released) or its record has not changed for a lease duration since
    we first saw it (``observed``, monotonic ``now``), else ``follow``."""
    if view is None:
        return "create"
    if view.holder == me:
        return "renew"
    if not view.holder:
        return "acquire"
    if observed is None or observed.record != view.record:
        return "follow"  # a record we have not timed yet: its age starts now
    if now - observed.at >= view.duration_seconds:
        return "acquire"
    return "follow"


def still_leader(renew_started: float | None, now: float, timing: LeaderTiming) -> bool:
    """A leader whose last successful renewal *started* (monotonic seconds) longer ago
    than the renew deadline stops acting at once: a follower may take the Lease one
    lease duration after it saw that renewal, and the renewal was seen no earlier than
    it started."""
    return renew_started is not None and now - renew_started < timing.renew_deadline_seconds
