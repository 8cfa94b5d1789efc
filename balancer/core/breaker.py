"""Per-node circuit breakers: pybreaker as a state machine, never around the I/O.

``pybreaker.CircuitBreaker.call()`` holds the breaker's lock for the whole guarded call,
which would serialise all traffic to a node. So admission is decided from the breaker's
state (open and ``reset_timeout`` not yet elapsed → skip the node), the I/O runs outside,
and its outcome is *replayed* through ``breaker.call(replay, exc)``. pybreaker keeps
doing the counting, open → half-open → closed, ``success_threshold`` and listeners.
A success on a closed breaker with no failures counted changes nothing, so it is not
replayed: the hot path pays for a breaker only when something went wrong.
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pybreaker

__all__ = ["CLOSED", "HALF_OPEN", "OPEN", "BreakerPolicy", "NodeBreaker"]

CLOSED = pybreaker.STATE_CLOSED
OPEN = pybreaker.STATE_OPEN
HALF_OPEN = pybreaker.STATE_HALF_OPEN

StateListener = Callable[[str, str, str], None]  # (breaker name, old state, new state)


@dataclass(frozen=True)
class BreakerPolicy:
    """How endpoints are ejected and let back in.

    ``fail_max`` consecutive failures open a breaker; after ``reset_timeout`` seconds it
    admits at most ``half_open_max_calls`` trial calls at once; ``success_threshold``
    trial successes close it. ``max_ejection_percent`` caps the share of a router's
    endpoints that may be ejected at once (Envoy's panic threshold): past it the router
    routes over every endpoint rather than pile all traffic on a few. ``storage``, given
    a breaker name, returns a pybreaker storage (e.g. ``CircuitRedisStorage``) to share
    breaker state between processes.
    """

    fail_max: int = 5
    reset_timeout: float = 30.0
    success_threshold: int = 1
    half_open_max_calls: int = 1
    max_ejection_percent: float = 50.0
    storage: Callable[[str], pybreaker.CircuitBreakerStorage] | None = None

    def __post_init__(self) -> None:
        if self.fail_max < 1:
            raise ValueError(f"BreakerPolicy.fail_max must be >= 1, got {self.fail_max}")
        if self.reset_timeout <= 0:
            raise ValueError(f"BreakerPolicy.reset_timeout must be > 0, got {self.reset_timeout}")
        if self.success_threshold < 1:
            raise ValueError("BreakerPolicy.success_threshold must be >= 1")
        if self.half_open_max_calls < 1:
            raise ValueError("BreakerPolicy.half_open_max_calls must be >= 1")
        if not 0 <= self.max_ejection_percent <= 100:
            raise ValueError("BreakerPolicy.max_ejection_percent must be within 0..100")


def _replay(exc: BaseException | None) -> None:
    if exc is not None:
        raise exc


class _Listener(pybreaker.CircuitBreakerListener):
    def __init__(self, owner: NodeBreaker) -> None:
        self.owner = owner

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        self.owner._on_state_change(old_state.name if old_state else CLOSED, new_state.name)


class NodeBreaker:
    """One endpoint's breaker: cheap admission checks, outcome replay, trial bounding."""

    __slots__ = ("_clean", "_listeners", "_lock", "breaker", "name", "opened_at", "policy",
                 "state", "trials")  # fmt: skip

    def __init__(self, name: str, policy: BreakerPolicy) -> None:
        self.name = name
        self.policy = policy
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], StateListener | None]] = []
        self.trials = 0
        self.opened_at = 0.0  # time.monotonic() of the last opening
        self._clean = True  # closed with no failures counted (as far as we know)
        storage = policy.storage(name) if policy.storage else None
        self.breaker = pybreaker.CircuitBreaker(
            fail_max=policy.fail_max,
            reset_timeout=policy.reset_timeout,
            success_threshold=policy.success_threshold,
            listeners=[_Listener(self)],
            state_storage=storage,
            name=name,
            throw_new_error_on_trip=False,
        )
        self.state: str = CLOSED
        self.sync()

    def add_listener(self, listener: StateListener) -> None:
        """Call ``listener(name, old, new)`` on state changes. Bound methods are held
        weakly, so a router that is dropped stops listening without unsubscribing."""
        if hasattr(listener, "__self__"):
            self._listeners.append(weakref.WeakMethod(listener))
        else:
            self._listeners.append(lambda: listener)

    def sync(self) -> None:
        """Re-read the state from pybreaker's storage (shared storage may have changed)."""
        state = self.breaker.current_state
        if state == OPEN:
            opened = self.breaker._state_storage.opened_at
            if isinstance(opened, datetime):
                age = (datetime.now(UTC) - opened).total_seconds()
                self.opened_at = time.monotonic() - max(0.0, age)
        if state != self.state:
            self.breaker.state  # noqa: B018  (pybreaker notices and notifies listeners)
            self.state = state

    def _on_state_change(self, old: str, new: str) -> None:
        if new == OPEN:
            self.opened_at = time.monotonic()
        if new != HALF_OPEN:
            self.trials = 0
        self._clean = new == CLOSED and self.breaker.fail_counter == 0
        self.state = new
        for ref in list(self._listeners):
            listener = ref()
            if listener is None:
                self._listeners.remove(ref)
            else:
                listener(self.name, old, new)

    @property
    def clean(self) -> bool:
        """Closed with no failure counted (as far as this process knows): a success
        needs no recording."""
        return self._clean

    def retry_at(self) -> float:
        """When an open breaker starts admitting trial calls (monotonic seconds)."""
        return self.opened_at + self.policy.reset_timeout

    def available(self, now: float) -> bool:
        """Whether the endpoint may be routed to: closed, or due for / in its trial phase."""
        state = self.state
        if state == CLOSED:
            return True
        if state == OPEN:
            return now >= self.retry_at()
        return self.trials < self.policy.half_open_max_calls

    def admit(self, now: float) -> bool:
        """Reserve a call: always for a closed breaker, a bounded trial slot otherwise."""
        if self.state == CLOSED:
            return True
        with self._lock:
            if self.state == OPEN:
                if now < self.retry_at():
                    return False
                self.breaker.half_open()
            if self.state == CLOSED:
                return True
            if self.trials >= self.policy.half_open_max_calls:
                return False
            self.trials += 1
            return True

    def record(self, exc: BaseException | None, trial: bool = False) -> None:
        """Feed one call's outcome to the state machine (``exc`` None means success)."""
        if trial:
            with self._lock:
                self.trials = max(0, self.trials - 1)
        elif exc is None and self._clean and self.state == CLOSED:
            return
        # Raises the replayed failure, or CircuitBreakerError while open: both expected.
        with contextlib.suppress(BaseException):
            self.breaker.call(_replay, exc)
        self._clean = self.state == CLOSED and self.breaker.fail_counter == 0
