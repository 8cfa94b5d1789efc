"""Load-balancing strategies: which eligible member gets the next call.

A strategy sees only the members that are currently eligible (the router rebuilds it
when breakers open or close, or the endpoint list changes) and picks one in O(1) or
O(log n). Each is thread-safe: counters are ``itertools.count`` (atomic under the GIL),
the EDF heap is locked, and the power-of-two-choices strategies read counters that may
be a call stale, which only blurs a choice that is random anyway.
"""

from __future__ import annotations

import copy
import heapq
import itertools
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from balancer.core.router import Member

__all__ = [
    "STRATEGIES",
    "EwmaLatency",
    "LeastConnections",
    "RandomChoice",
    "RoundRobin",
    "Strategy",
    "StrategySpec",
    "Weighted",
    "make_strategy",
]

_random = random.random
# Largest precomputed weighted schedule (entries); beyond it the EDF heap runs live.
_SCHEDULE_LIMIT = 1 << 17


class Strategy:
    """Base class: ``rebuild`` on membership change, ``pick`` per call, ``observe`` after."""

    name: ClassVar[str] = ""

    def __init__(self) -> None:
        self.members: Sequence[Member] = ()

    def rebuild(self, members: Sequence[Member]) -> None:
        self.members = tuple(members)

    def pick(self) -> Member:
        raise NotImplementedError

    def observe(self, member: Member, latency: float) -> None:
        """Called with each successful call's latency (seconds); most strategies ignore it."""

    def clone(self) -> Strategy:
        """A new strategy with this one's settings and none of its state, for another
        router (a strategy's members belong to exactly one router). Subclasses that
        keep state beyond ``members`` override :meth:`_reset`."""
        twin = copy.copy(self)
        twin.members = ()
        twin._reset()
        return twin

    def _reset(self) -> None:
        """Give a clone fresh private state (counters, locks, heaps)."""


class RoundRobin(Strategy):
    """Each eligible member in turn."""

    name = "round_robin"

    def __init__(self) -> None:
        super().__init__()
        self._counter = itertools.count()

    def _reset(self) -> None:
        self._counter = itertools.count()

    def pick(self) -> Member:
        members = self.members
        return members[next(self._counter) % len(members)]


class RandomChoice(Strategy):
    """Uniformly random; weights are ignored (use ``weighted`` for that)."""

    name = "random"

    def pick(self) -> Member:
        members = self.members
        return members[int(_random() * len(members))]


class Weighted(Strategy):
    """Earliest-deadline-first weighted round-robin (Envoy's EDF scheduler).

    Each member's next deadline advances by 1/weight when it is picked, so over any
    window member i gets weight_i / sum(weights) of the picks, interleaved smoothly.
    When the weights are small rationals, one whole EDF cycle is computed at rebuild
    and a pick is an index into it (O(1)); otherwise the heap runs live (O(log n)).
    Each instance starts at a random point of the cycle so many clients do not move in
    lockstep.
    """

    name = "weighted"

    def __init__(self) -> None:
        super().__init__()
        self._reset()

    def _reset(self) -> None:
        self._heap: list[tuple[float, int, Member]] = []
        self._schedule: tuple[Member, ...] = ()
        self._counter = itertools.count()
        self._lock = threading.Lock()

    def rebuild(self, members: Sequence[Member]) -> None:
        super().rebuild(members)
        # Staggered first deadlines spread light members through the cycle instead of
        # letting them bunch up (which would leave long runs of the heavy one).
        n = len(self.members)
        heap = [(i / n / m.weight, i, m) for i, m in enumerate(self.members)]
        heapq.heapify(heap)
        cycle = self._cycle_length()
        schedule: list[Member] = []
        if cycle is not None:
            for _ in range(cycle):
                deadline, order, member = heap[0]
                heapq.heapreplace(heap, (deadline + 1.0 / member.weight, order, member))
                schedule.append(member)
        with self._lock:
            self._heap = heap
            self._schedule = tuple(schedule)
            self._counter = itertools.count(int(_random() * max(1, len(schedule))))

    def _cycle_length(self) -> int | None:
        """Picks in one full period if the weights are small rationals, else None."""
        try:
            ratios = [Fraction(m.weight).limit_denominator(1000) for m in self.members]
        except (ValueError, OverflowError):
            return None
        if any(float(r) != m.weight for r, m in zip(ratios, self.members, strict=True)):
            return None
        denominator = math.lcm(*(r.denominator for r in ratios))
        numerators = [int(r * denominator) for r in ratios]
        divisor = math.gcd(*numerators)
        total = sum(numerators) // divisor
        return total if total <= _SCHEDULE_LIMIT else None

    def pick(self) -> Member:
        schedule = self._schedule
        if schedule:
            return schedule[next(self._counter) % len(schedule)]
        with self._lock:
            deadline, order, member = self._heap[0]
            heapq.heapreplace(self._heap, (deadline + 1.0 / member.weight, order, member))
        return member


class LeastConnections(Strategy):
    """Fewest in-flight calls per unit of weight.

    By default power of two choices: sample two members, take the one with the higher
    ``weight / (in_flight + 1)``; O(1), and it avoids the herd that an exact minimum
    causes when many clients see the same counts. ``exact=True`` scans every member
    (O(n)), for small pools where the exact minimum matters.
    """

    name = "least_connections"

    def __init__(self, exact: bool = False) -> None:
        super().__init__()
        self.exact = exact

    def pick(self) -> Member:
        members = self.members
        n = len(members)
        if n == 1:
            return members[0]
        if self.exact:
            return max(members, key=lambda m: m.weight / (m.in_flight + 1))
        i = int(_random() * n)
        j = int(_random() * (n - 1))
        a, b = members[i], members[j + 1 if j >= i else j]
        return a if a.weight / (a.in_flight + 1) >= b.weight / (b.in_flight + 1) else b


class EwmaLatency(Strategy):
    """Lowest peak-EWMA latency x load, by power of two choices (Finagle / Linkerd).

    Each member's cost is its latency EWMA times (in_flight + 1). A slower sample than the
    average replaces it at once (the "peak"), faster ones decay it with time constant
    ``decay_seconds``, so a node that turns slow is avoided immediately and trusted again
    gradually. Members with no sample yet cost 0, so new nodes get probed.
    """

    name = "ewma_latency"

    def __init__(self, decay_seconds: float = 10.0) -> None:
        super().__init__()
        if decay_seconds <= 0:
            raise ValueError("decay_seconds must be > 0")
        self.decay_seconds = decay_seconds

    @staticmethod
    def cost(member: Member) -> float:
        return member.ewma * (member.in_flight + 1) / member.weight

    def pick(self) -> Member:
        members = self.members
        n = len(members)
        if n == 1:
            return members[0]
        i = int(_random() * n)
        j = int(_random() * (n - 1))
        a, b = members[i], members[j + 1 if j >= i else j]
        cost_a = a.ewma * (a.in_flight + 1) / a.weight
        cost_b = b.ewma * (b.in_flight + 1) / b.weight
        return a if cost_a <= cost_b else b

    def observe(self, member: Member, latency: float) -> None:
        now = time.monotonic()
        if latency > member.ewma:
            member.ewma = latency
        else:
            w = math.exp(-(now - member.ewma_at) / self.decay_seconds)
            member.ewma = member.ewma * w + latency * (1.0 - w)
        member.ewma_at = now


STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (RoundRobin, Weighted, LeastConnections, RandomChoice, EwmaLatency)
}


StrategySpec = str | Strategy | Callable[[], Strategy]


def make_strategy(strategy: StrategySpec) -> Strategy:
    """A strategy for a name, a factory (a ``Strategy`` subclass or any callable
    returning one), or the given instance as is."""
    if isinstance(strategy, Strategy):
        return strategy
    if callable(strategy):
        made = strategy()
        if not isinstance(made, Strategy):
            raise ValueError(f"strategy factory returned {type(made).__name__}, not a Strategy")
        return made
    try:
        return STRATEGIES[strategy]()
    except (KeyError, TypeError):
        valid = ", ".join(sorted(STRATEGIES))
        raise ValueError(f"unknown strategy {strategy!r}; valid: {valid}") from None
