"""Router: pick an endpoint with a strategy, skipping those whose breaker is open.

The router keeps one :class:`Member` (mutable per-endpoint state: in-flight count,
breaker, counters) per endpoint id. The strategy only ever sees the *eligible* members;
that list is rebuilt when a breaker changes state, when an open breaker's reset timeout
comes due, or on :meth:`Router.update` — never per pick.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import redis

from balancer.core.breaker import CLOSED, OPEN, BreakerPolicy, NodeBreaker
from balancer.core.endpoint import Endpoint
from balancer.core.errors import NoHealthyEndpoint, never_sent
from balancer.core.strategies import StrategySpec, make_strategy

__all__ = ["EndpointStats", "Member", "RetryPolicy", "Router"]

T = TypeVar("T")
StateChange = Callable[[Endpoint, str, str], None]


# Endpoint failures: the builtins and redis-py's own, which do not subclass them.
NETWORK_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,
    OSError,
    redis.ConnectionError,
    redis.TimeoutError,
)


@dataclass(frozen=True)
class RetryPolicy:
    """How :meth:`Router.call` fails over.

    Exceptions of the ``retry_on`` types are the endpoint's failures: they count against
    its breaker (other exceptions are the caller's business). Such a failure is retried
    on another endpoint, up to ``attempts`` endpoints in total, only when it proves the
    call never reached the endpoint (a refused connection,
    :class:`~balancer.core.errors.NotSentError`) — or always, with ``idempotent=True``, for
    calls that are safe to repeat. A timed-out write may have been applied: sending it
    again could apply it twice, so that is never the default.
    """

    attempts: int = 3
    retry_on: tuple[type[BaseException], ...] = NETWORK_ERRORS
    idempotent: bool = False

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts must be >= 1, got {self.attempts}")


@dataclass(frozen=True)
class EndpointStats:
    """One row of :meth:`Router.snapshot`."""

    id: str
    address: str
    weight: float
    in_flight: int
    state: str
    picks: int
    failures: int
    latency_ewma: float


class Member:
    """Mutable routing state of one endpoint; survives :meth:`Router.update` by id."""

    __slots__ = ("_lock", "breaker", "endpoint", "ewma", "ewma_at", "failures", "in_flight",
                 "picks", "weight")  # fmt: skip

    def __init__(self, endpoint: Endpoint, breaker: NodeBreaker) -> None:
        self.endpoint = endpoint
        self.weight = float(endpoint.weight)
        self.breaker = breaker
        self.in_flight = 0
        self.picks = 0
        self.failures = 0
        self.ewma = 0.0
        self.ewma_at = 0.0
        self._lock = threading.Lock()

    def begin(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.picks += 1

    def end(self, failed: bool) -> None:
        with self._lock:
            self.in_flight -= 1
            if failed:
                self.failures += 1


class Router:
    """Routes calls over a set of endpoints with a strategy and per-endpoint breakers."""

    def __init__(
        self,
        endpoints: Iterable[Endpoint],
        strategy: StrategySpec = "round_robin",
        breaker: BreakerPolicy | None = None,
        retry: RetryPolicy | None = None,
        on_state_change: StateChange | None = None,
        breaker_factory: Callable[[Endpoint], NodeBreaker] | None = None,
    ) -> None:
        self._strategy = make_strategy(strategy)
        self.breaker_policy = breaker or BreakerPolicy()
        self.retry = retry or RetryPolicy()
        self._on_state_change = on_state_change
        self._breaker_factory = breaker_factory
        self._lock = threading.Lock()
        self._members: dict[str, Member] = {}
        self._eligible: tuple[Member, ...] = ()
        self._panic = False
        self._fast = False  # nothing ejected, nothing due: pick() may skip every check
        self._dirty = True
        self._wake = math.inf
        self.update(endpoints)

    @property
    def strategy(self) -> str:
        return self._strategy.name

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        return tuple(m.endpoint for m in self._members.values())

    # -- membership ------------------------------------------------------------------

    def update(self, endpoints: Iterable[Endpoint]) -> None:
        """Swap the endpoint list atomically, keeping the state of ids that survive."""
        new_list = list(endpoints)
        if not new_list:
            raise ValueError("a router needs at least one endpoint")
        for ep in new_list:
            if not isinstance(ep, Endpoint):
                raise ValueError(f"expected Endpoint, got {type(ep).__name__}")
        with self._lock:
            old = self._members
            members: dict[str, Member] = {}
            for ep in new_list:
                if ep.id in members:
                    raise ValueError(f"duplicate endpoint id {ep.id!r}")
                member = old.get(ep.id)
                if member is None:
                    member = Member(ep, self._new_breaker(ep))
                else:
                    member.endpoint = ep
                    member.weight = float(ep.weight)
                members[ep.id] = member
            self._members = members
            self._rebuild_locked(time.monotonic())

    def _new_breaker(self, endpoint: Endpoint) -> NodeBreaker:
        if self._breaker_factory is not None:
            nb = self._breaker_factory(endpoint)
        else:
            nb = NodeBreaker(endpoint.id, self.breaker_policy)
        nb.add_listener(self._breaker_changed)
        return nb

    def _breaker_changed(self, name: str, old: str, new: str) -> None:
        self._fast = False
        self._dirty = True
        member = self._members.get(name)
        if self._on_state_change is not None and member is not None:
            self._on_state_change(member.endpoint, old, new)

    def _rebuild_locked(self, now: float) -> None:
        members = tuple(self._members.values())
        eligible = tuple(m for m in members if m.breaker.available(now))
        ejected = len(members) - len(eligible)
        cap = math.floor(len(members) * self.breaker_policy.max_ejection_percent / 100)
        self._panic = bool(eligible) and ejected > cap
        if self._panic:
            eligible = members
        self._wake = min(
            (m.breaker.retry_at() for m in members if m.breaker.state == OPEN), default=math.inf
        )
        self._dirty = False
        self._eligible = eligible
        self._strategy.rebuild(eligible)
        self._fast = (
            not self._panic
            and self._wake == math.inf
            and all(m.breaker.state == CLOSED for m in eligible)
        )

    def _refresh(self) -> None:
        with self._lock:
            self._rebuild_locked(time.monotonic())

    # -- picking -----------------------------------------------------------------------

    def _choose(self, exclude: frozenset[str] = frozenset()) -> Member:
        if self._fast and not exclude:
            return self._strategy.pick()
        if self._dirty or time.monotonic() >= self._wake:
            self._refresh()
        eligible = self._eligible
        if not eligible:
            raise NoHealthyEndpoint(
                "every endpoint's circuit breaker is open",
                tuple(m.endpoint.address for m in self._members.values()),
            )
        strategy = self._strategy
        for _ in range(4):
            member = strategy.pick()
            if member.breaker.state == CLOSED and member.endpoint.id not in exclude:
                return member
            if member.endpoint.id not in exclude and (
                self._panic or member.breaker.available(time.monotonic())
            ):
                return member
        # Unlucky draws: scan once for anything usable before giving up.
        now = time.monotonic()
        for member in eligible:
            if member.endpoint.id not in exclude and (self._panic or member.breaker.available(now)):
                return member
        raise NoHealthyEndpoint(
            "no eligible endpoint left to try", tuple(m.endpoint.address for m in eligible)
        )

    def pick(self) -> Endpoint:
        """The endpoint the strategy chooses now; raises :class:`NoHealthyEndpoint`."""
        member = self._strategy.pick() if self._fast else self._choose()
        member.picks += 1
        return member.endpoint

    def checkout(self, exclude: Iterable[str] = ()) -> tuple[Member, bool]:
        """Reserve an endpoint for one call: (member, is_trial). Pair every checkout with
        :meth:`checkin`. :meth:`lease` is the context-manager form of the two."""
        excluded = exclude if isinstance(exclude, frozenset) else frozenset(exclude)
        for _ in range(8):
            member = self._choose(excluded)
            trial = member.breaker.state != CLOSED and not self._panic
            if not trial or member.breaker.admit(time.monotonic()):
                member.begin()
                return member, trial
        raise NoHealthyEndpoint("no endpoint admitted a trial call")

    def checkin(
        self, member: Member, trial: bool, exc: BaseException | None, latency: float | None
    ) -> None:
        """Finish a :meth:`checkout`: ``exc`` is the failure to count (None = success)."""
        member.end(exc is not None)
        member.breaker.record(exc, trial)
        if exc is None and latency is not None:
            self._strategy.observe(member, latency)

    @contextlib.contextmanager
    def lease(self, exclude: Iterable[str] = ()) -> Iterator[Endpoint]:
        """Pick an endpoint and hold it for one call: counts it in flight, and records
        success (normal exit) or failure (an exception of the retry policy's types)."""
        member, trial = self.checkout(exclude)
        started = time.perf_counter()
        try:
            yield member.endpoint
        except BaseException as exc:
            self.checkin(member, trial, exc if isinstance(exc, self.retry.retry_on) else None, None)
            raise
        self.checkin(member, trial, None, time.perf_counter() - started)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(endpoint, *args, **kwargs)`` on a picked endpoint, failing over to other
        endpoints per the retry policy (by default only failures that prove ``fn``'s
        call never reached the endpoint). The last failure propagates."""
        tried: set[str] = set()
        last: BaseException | None = None
        for _ in range(self.retry.attempts):
            current: Endpoint | None = None
            try:
                with self.lease(exclude=tried) as current:
                    return fn(current, *args, **kwargs)
            except self.retry.retry_on as exc:
                if not (self.retry.idempotent or never_sent(exc)):
                    raise
                last = exc
                if current is not None:
                    tried.add(current.id)
            except NoHealthyEndpoint:
                if last is not None:
                    raise last from None
                raise
        assert last is not None
        raise last

    # -- observing ---------------------------------------------------------------------

    def record(self, endpoint: Endpoint | str, exc: BaseException | None) -> None:
        """Record an outcome observed outside :meth:`lease` (e.g. by a probe)."""
        member = self._members.get(endpoint if isinstance(endpoint, str) else endpoint.id)
        if member is not None:
            if exc is not None:
                member.failures += 1
            member.breaker.record(exc)

    def state_of(self, endpoint: Endpoint | str) -> str:
        member = self._members[endpoint if isinstance(endpoint, str) else endpoint.id]
        return member.breaker.state

    def snapshot(self) -> list[EndpointStats]:
        """Per endpoint: in-flight calls, breaker state, picks, failures, latency EWMA."""
        return [
            EndpointStats(
                id=m.endpoint.id,
                address=m.endpoint.address,
                weight=m.weight,
                in_flight=m.in_flight,
                state=m.breaker.state,
                picks=m.picks,
                failures=m.failures,
                latency_ewma=m.ewma,
            )
            for m in self._members.values()
        ]
