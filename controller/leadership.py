"""Leader election as values: what a candidate does next with a Lease it has just read.

The Kubernetes ``coordination.k8s.io/v1`` Lease is the lock (as client-go's
leaderelection uses it): the holder renews ``renewTime`` every retry period; anyone may
take the Lease once ``renewTime + leaseDurationSeconds`` has passed. The I/O (read,
create, replace with the read ``resourceVersion`` so a racing candidate gets 409) lives
in ``controller.platform.kubernetes.leader``; this module decides, from values and a
clock, so every case is tested without an API server.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

__all__ = ["LeaseView", "LeaseAction", "LeaderTiming", "lease_action", "still_leader"]

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
    """The fields of a Lease that matter to the decision."""

    holder: str | None
    renew_time: datetime | None
    duration_seconds: float
    transitions: int = 0

    def expires_at(self) -> datetime | None:
        if self.renew_time is None:
            return None
        return self.renew_time + timedelta(seconds=self.duration_seconds)


def lease_action(view: LeaseView | None, me: str, now: datetime) -> LeaseAction:
    """``create`` when there is no Lease, ``renew`` when it is ours, ``acquire`` when it
    is free or expired (a released Lease has no holder), else ``follow``."""
    if view is None:
        return "create"
    if view.holder == me:
        return "renew"
    expires = view.expires_at()
    if not view.holder or expires is None or now >= expires:
        return "acquire"
    return "follow"


def still_leader(last_renewed: float | None, now: float, timing: LeaderTiming) -> bool:
    """A leader whose last successful renewal (monotonic seconds) is older than the renew
    deadline stops acting at once: another candidate may take the Lease soon after."""
    return last_renewed is not None and now - last_renewed < timing.renew_deadline_seconds
