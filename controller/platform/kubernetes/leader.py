"""Leader election on a ``coordination.k8s.io/v1`` Lease (a small loop we own).

kubernetes' own ``leaderelection`` blocks forever and never releases the Lease on
shutdown, so a rolling update waits a whole lease duration for a new leader. This loop
reads the Lease, lets :func:`controller.leadership.lease_action` decide, and creates or
replaces it with the ``resourceVersion`` it read — two candidates racing for a free
Lease: one wins, the other gets 409 and follows. A leader that has not renewed for the
renew deadline stops acting at once (before the Lease can expire and someone else
takes it); :meth:`LeaderElector.release` hands the Lease back on SIGTERM.

Timing follows client-go (see :mod:`controller.leadership`): a follower judges expiry
from the monotonic time at which it first observed the current record, never from the
holder's ``renewTime`` against its own wall clock, so skewed clocks cannot make two
leaders or a slow takeover. A renewal counts from the moment its request started, and
every Lease request is given only the time left before the renew deadline; a 409 on a
renewal means someone else wrote the Lease: leadership ends at once. The wall clock is
used only to fill in ``renewTime``/``acquireTime`` for people reading the Lease.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubernetes import client

from controller.leadership import (
    LeaderTiming,
    LeaseView,
    Observed,
    lease_action,
    observe,
    still_leader,
)
from controller.platform.kubernetes.api import Conflict, KubeApi, KubeApiError, NotFound

__all__ = ["LeaderElector"]

log = logging.getLogger("slotpilot.leader")


def _view(lease: Any) -> LeaseView:
    spec = lease.spec or client.V1LeaseSpec()
    renew = spec.renew_time
    if isinstance(renew, datetime) and renew.tzinfo is None:
        renew = renew.replace(tzinfo=UTC)
    return LeaseView(
        holder=spec.holder_identity or None,
        renew_time=renew if isinstance(renew, datetime) else None,
        duration_seconds=float(spec.lease_duration_seconds or 0),
        transitions=int(spec.lease_transitions or 0),
        resource_version=lease.metadata.resource_version if lease.metadata else None,
    )


class LeaderElector:
    """One candidate. :meth:`step` is one read-decide-write; :meth:`start` runs it every
    retry period in a daemon thread. ``is_leader`` is what the controller checks before
    every action (and between migration batches)."""

    def __init__(
        self,
        api: KubeApi,
        namespace: str,
        name: str,
        identity: str,
        timing: LeaderTiming | None = None,
        on_change: Callable[[bool], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.timing = timing or LeaderTiming()
        self._on_change = on_change
        self._clock = clock
        self._wall = wall
        # monotonic time at which our last successful renewal (or acquisition) started
        self._renewed: float | None = None
        self._observed: Observed | None = None  # the record we saw last, and since when
        self._leader = False
        self.holder: str | None = None  # who holds the Lease, as last read
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stall_reason: Callable[[], str | None] = lambda: None

    def watch(self, stall_reason: Callable[[], str | None]) -> None:
        """Lead only while ``stall_reason`` names none: a controller whose loop is stuck
        releases the Lease and does not take it again until the loop moves."""
        self._stall_reason = stall_reason

    @property
    def is_leader(self) -> bool:
        """Leader now: we hold the Lease and renewed it within the renew deadline."""
        if self._leader and not still_leader(self._renewed, self._clock(), self.timing):
            self._set_leader(False, "renew deadline passed")
        return self._leader

    def _set_leader(self, leader: bool, why: str) -> None:
        if leader == self._leader:
            return
        self._leader = leader
        log.warning(
            "%s leadership of lease %s/%s (%s)",
            "acquired" if leader else "lost",
            self.namespace,
            self.name,
            why,
        )
        if self._on_change is not None:
            self._on_change(leader)

    def _spec(self, view: LeaseView | None, now: datetime) -> client.V1LeaseSpec:
        taking = view is None or view.holder != self.identity
        transitions = (view.transitions if view else 0) + (1 if taking and view else 0)
        return client.V1LeaseSpec(
            holder_identity=self.identity,
            lease_duration_seconds=int(self.timing.lease_seconds),
            acquire_time=now if taking else None,
            renew_time=now,
            lease_transitions=transitions,
        )

    def _budget(self, started: float) -> float | None:
        """What a Lease request may take: as leader, what is left of the renew deadline
        counted from ``started`` (a late answer is no renewal); else no limit of ours."""
        if not self._leader:
            return None
        return self.timing.renew_deadline_seconds - (self._clock() - started)

    def _read(self, budget: float | None = None) -> Any:
        return self.api.call(
            f"get leases {self.name}",
            self.api.coordination.read_namespaced_lease,
            self.name,
            self.namespace,
            budget=budget,
        )

    def step(self) -> bool:
        """One attempt to acquire or renew; returns :attr:`is_leader`. Never raises."""
        stuck = self._stall_reason()
        if stuck is not None:
            if self._leader:
                log.error("lease %s/%s handed back: %s", self.namespace, self.name, stuck)
                self.release()
            return False
        coordination = self.api.coordination
        started = self._clock()
        now = self._wall()
        action: str = "read"
        try:
            try:
                lease = self._read(self._budget(started))
            except NotFound:
                lease = None
            view = _view(lease) if lease is not None else None
            self.holder = view.holder if view else None
            self._observed = observe(self._observed, view, self._clock())
            action = lease_action(view, self.identity, self._observed, self._clock())
            if action == "follow":
                self._set_leader(False, f"held by {self.holder}")
                return False
            spec = self._spec(view, now)
            if lease is None:
                body = client.V1Lease(
                    metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
                    spec=spec,
                )
                self.api.call(
                    f"create leases {self.name}",
                    coordination.create_namespaced_lease,
                    self.namespace,
                    body,
                    budget=self._budget(started),
                )
            else:
                if action == "renew" and lease.spec is not None:
                    spec.acquire_time = lease.spec.acquire_time
                lease.spec = spec
                self.api.call(
                    f"update leases {self.name}",
                    coordination.replace_namespaced_lease,
                    self.name,
                    self.namespace,
                    lease,
                    budget=self._budget(started),
                )
        except Conflict:
            # someone else wrote the Lease since we read it: if it was ours, it is not now
            self._set_leader(False, f"conflict on {action}: the Lease changed under us")
            return False
        except KubeApiError as exc:
            log.warning("lease %s/%s: %s", self.namespace, self.name, exc)
            return self.is_leader  # keeps leadership only within the renew deadline
        self.holder = self.identity
        if not still_leader(started, self._clock(), self.timing):
            # written, but answered after the deadline: a follower may already be taking it
            self._set_leader(False, f"{action} answered after the renew deadline")
            return False
        self._renewed = started
        self._set_leader(True, action)
        return True

    def release(self) -> None:
        """Give the Lease back (holder cleared, 1 s duration) so a successor takes over at
        once; only if we hold it. Never raises."""
        was_leader = self._leader
        self._set_leader(False, "released")
        if not was_leader:
            return
        coordination = self.api.coordination
        try:
            lease = self._read(self.timing.renew_deadline_seconds)
            if lease.spec is None or lease.spec.holder_identity != self.identity:
                return
            lease.spec.holder_identity = None
            lease.spec.lease_duration_seconds = 1
            lease.spec.renew_time = self._wall()
            self.api.call(
                f"update leases {self.name}",
                coordination.replace_namespaced_lease,
                self.name,
                self.namespace,
                lease,
                budget=self.timing.renew_deadline_seconds,
            )
        except KubeApiError as exc:
            log.warning("releasing lease %s/%s: %s", self.namespace, self.name, exc)

    def start(self) -> LeaderElector:
        self.step()
        self._thread = threading.Thread(target=self._run, name="slotpilot-leader", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.timing.retry_seconds):
            self.step()

    def stop(self, release: bool = True) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timing.retry_seconds + self.api.request_timeout)
        if release:
            self.release()
