"""The rules of one command's way to an answer, as a state machine without I/O.

A driver (:mod:`balancer.sync`, :mod:`balancer.aio`) runs one loop for every command::

    attempt = Attempt(table, rules, slot, name, read)
    while True:
        target = attempt.next_target()
        if target is None:                       # nothing to send yet
            refresh the topology (deadline=attempt.refresh_deadline)
            sleep(attempt.pause())               # raises once the deadline has passed
            continue
        try:
            raw = send(target)                   # target.transport, target.asking
        except network error or error reply as exc:
            attempt.on_error(target, exc)        # raises, or says what comes next
            continue
        except BaseException:
            attempt.abandon(target)              # cancelled: not the node's fault
            raise
        attempt.on_reply(target)
        return raw

Everything else is decided here, once for both clients: which node (the slot's primary,
a reader of the shard as ``read_from`` says, the ASK target), breaker admission and
recording (a refused connection costs a primary nothing; a timeout of a blocking
command is not the node's failure; one broken shared connection counts once), the
write-once rule (a write whose reply was lost raises
:class:`~balancer.core.errors.OutcomeUnknown`, never re-sent), MOVED / ASK / TRYAGAIN /
CLUSTERDOWN, failover inside a shard, backoff and the retry deadline.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Generic

import redis
from redis.backoff import EqualJitterBackoff
from redis.exceptions import AskError, ClusterDownError, MovedError, TryAgainError

from balancer.core.breaker import CLOSED, NodeBreaker
from balancer.core.errors import (
    ClusterError,
    NodeUnavailable,
    NoHealthyEndpoint,
    OutcomeUnknown,
    SlotNotCovered,
    echoed,
    never_sent,
    refused,
)
from balancer.core.router import Member, Router
from balancer.core.routes import Route, RouteTable, T

__all__ = ["Attempt", "AttemptRules", "Target"]

# Retry backoff (redis-py's EqualJitterBackoff): ~base * 2**attempt, half of it jittered.
BACKOFF_BASE = 0.004
BACKOFF_CAP = 0.25


class AttemptRules:
    """A client's retry settings: the deadline of one command's retries (counted from
    its first failure), how many redirections it follows, the backoff between tries,
    which commands only read (``readonly(name)``), and the clock."""

    __slots__ = ("backoff", "clock", "max_redirects", "readonly", "retry_deadline")

    def __init__(
        self,
        retry_deadline: float,
        max_redirects: int,
        readonly: Callable[[Any], bool],
        clock: Callable[[], float] = time.monotonic,
        backoff: EqualJitterBackoff | None = None,
    ) -> None:
        self.retry_deadline = retry_deadline
        self.max_redirects = max_redirects
        self.readonly = readonly
        self.clock = clock
        self.backoff = backoff or EqualJitterBackoff(cap=BACKOFF_CAP, base=BACKOFF_BASE)


class Target(Generic[T]):
    """Where to send one try: the node's transport and breaker, the reader lease when a
    shard's router chose the node, whether it is a trial call of a recovering node, and
    whether ``ASKING`` goes first."""

    __slots__ = ("asking", "breaker", "member", "readers", "started", "transport", "trial")

    def __init__(
        self,
        transport: T,
        breaker: NodeBreaker,
        member: Member | None = None,
        readers: Router | None = None,
        trial: bool = False,
        asking: bool = False,
    ) -> None:
        self.transport = transport
        self.breaker = breaker
        self.member = member
        self.readers = readers
        self.trial = trial
        self.asking = asking
        # the latency a reader's strategy learns from (EWMA); primaries need none
        self.started = time.perf_counter() if member is not None else 0.0

    @property
    def address(self) -> str:
        return self.transport.address


_PRIMARY_DOWN = -1.0  # pending "pause": the primary's breaker refused the call


class Attempt(Generic[T]):
    """One command's tries (see the module docstring). ``pinned``: a command for one
    node (keyless commands, SCAN cursors): no routing, no redirections followed."""

    __slots__ = (
        "_asking",
        "_down",
        "_last",
        "_pending",
        "_raise",
        "_redirects",
        "_tried",
        "_tries",
        "block",
        "deadline",
        "name",
        "pinned",
        "read",
        "rules",
        "slot",
        "table",
    )  # fmt: skip

    def __init__(
        self,
        table: RouteTable[T],
        rules: AttemptRules,
        slot: int,
        name: Any,
        read: bool,
        block: float | None = None,
        pinned: T | None = None,
    ) -> None:
        self.table = table
        self.rules = rules
        self.slot = slot
        self.name = name
        self.read = read
        self.block = block
        self.pinned = pinned
        self.deadline = 0.0  # 0: not started (the budget starts at the first failure)
        self._tries = 0
        self._redirects = 0
        self._tried: frozenset[str] = frozenset()  # readers that failed this command
        self._asking: T | None = None
        self._last: BaseException | None = None
        self._pending: float | None = None  # a pause the driver owes before the next try
        self._raise: BaseException | None = None  # what to raise if the pause has no time
        self._down: Route[T] | None = None

    # -- where to send ------------------------------------------------------------------

    def next_target(self) -> Target[T] | None:
        """Where to send the next try; ``None`` when the driver must first refresh the
        topology and :meth:`pause`. Raises once the retry deadline has passed."""
        if self._pending is not None:
            return None
        if self._tries:
            self._check_deadline()
        self._tries += 1
        table = self.table
        if self.pinned is not None:
            return Target(self.pinned, table.breaker(self.pinned.address))
        if self._asking is not None:
            asking = self._asking
            return Target(asking, table.breaker(asking.address), asking=True)
        route = table.slot_route[self.slot]
        if route is None:
            self._last = SlotNotCovered(self.slot)
            self._wait(self._last)
            return None
        readers = route.readers if self.read else None
        if readers is not None:
            try:
                member, trial = readers.checkout(self._tried)
            except NoHealthyEndpoint:
                pass
            else:
                address = member.endpoint.id
                return Target(table.transport(address), member.breaker, member, readers, trial)
        breaker = route.primary_breaker
        if breaker.state == CLOSED:
            return Target(route.primary, breaker)
        if not breaker.admit(self.rules.clock()):
            self._down = route
            self._pending = _PRIMARY_DOWN
            return None
        return Target(route.primary, breaker, trial=True)

    @property
    def refresh_deadline(self) -> float | None:
        """The deadline a refresh asked for by this attempt should keep (None: none yet)."""
        return self.deadline or None

    def pause(self) -> float:
        """After the refresh :meth:`next_target` asked for: the seconds to wait before
        the next try (0: none). Raises when no time is left, or, for a primary whose
        breaker is open, when the refresh named no other primary for the slot
        (:class:`~balancer.core.errors.NodeUnavailable`: fail fast, nothing was sent)."""
        pending, self._pending = self._pending, None
        if pending is None:
            return 0.0
        now = self.rules.clock()
        if pending == _PRIMARY_DOWN:
            down, self._down = self._down, None
            if down is not None and self.table.slot_route[self.slot] is down:
                address = down.primary.address
                raise NodeUnavailable(address, "circuit breaker open after repeated failures")
            if not self.deadline:
                self.deadline = now + self.rules.retry_deadline
            return 0.0
        remaining = self.deadline - now
        if remaining <= 0:
            assert self._raise is not None
            raise self._raise
        return min(pending, remaining)

    # -- what came back -----------------------------------------------------------------

    def on_reply(self, target: Target[T]) -> None:
        """The try was answered (an error reply the caller should see included)."""
        member = target.member
        if member is not None and target.readers is not None:
            target.readers.checkin(member, target.trial, None, time.perf_counter() - target.started)
        elif target.trial or not target.breaker._clean:
            target.breaker.record(None, target.trial)

    def abandon(self, target: Target[T]) -> None:
        """The caller stopped waiting (cancelled, interrupted): not the node's failure."""
        if target.member is not None and target.readers is not None:
            target.readers.checkin(target.member, target.trial, None, None)
        elif target.trial:
            target.breaker.record(None, target.trial)

    def on_error(self, target: Target[T], exc: BaseException) -> None:
        """A network failure or an error reply. Raises what the caller must see;
        otherwise the next :meth:`next_target` says where to go (or asks for a pause)."""
        if isinstance(exc, redis.ResponseError):
            self._on_error_reply(target, exc)
        else:
            self._on_network_error(target, exc)

    def _on_network_error(self, target: Target[T], exc: BaseException) -> None:
        counted: BaseException | None = exc
        if self.block is not None and isinstance(exc, redis.TimeoutError):
            counted = None  # a blocking command's timeout: not the node's failure
        echo = echoed(exc) and not target.trial
        if echo:
            counted = None  # the same broken shared connection, already counted
        member = target.member
        if member is not None and target.readers is not None:
            if echo:
                member.end(True)
            else:
                target.readers.checkin(member, target.trial, counted, None)
        elif target.trial or (counted is not None and not refused(exc)):
            # A refused connection costs nothing: a dead primary is retried (backoff,
            # refresh) until its replica takes over; only failures that cost time
            # (timeouts, hangs) open a primary's breaker.
            target.breaker.record(counted, target.trial)
        stats = self.table.stats
        stats.node_errors += 1
        self._asking = None
        if not (never_sent(exc) or self.rules.readonly(self.name)):
            stats.unknown_outcomes += 1
            raise OutcomeUnknown(str(self.name), target.address, exc) from exc
        self._last = exc
        if self.read and member is not None:
            stats.failovers += 1
            self._tried = self._tried | {target.address}
            return  # fail over inside the shard at once
        self._wait(exc)

    def _on_error_reply(self, target: Target[T], exc: redis.ResponseError) -> None:
        if target.member is not None and target.readers is not None:
            target.readers.checkin(target.member, target.trial, None, None)
        elif target.trial:
            target.breaker.record(None, target.trial)
        self._asking = None
        if self.pinned is not None:
            raise exc
        stats = self.table.stats
        if isinstance(exc, MovedError):
            self._redirects += 1
            stats.moved += 1
            self.table.moved(self.slot, exc.host, exc.port)
        elif isinstance(exc, AskError):
            self._redirects += 1
            stats.ask += 1
            self._asking = self.table.transport(f"{exc.host}:{exc.port}")
        elif isinstance(exc, TryAgainError | ClusterDownError):
            if isinstance(exc, TryAgainError):
                stats.tryagain += 1
            else:
                stats.clusterdown += 1
            self._last = exc
            self._wait(exc)
        else:
            raise exc
        if self._redirects > self.rules.max_redirects:
            raise ClusterError(
                f"too many redirections ({self._redirects}) for slot {self.slot}"
            ) from exc

    # -- time ---------------------------------------------------------------------------

    def _check_deadline(self) -> None:
        """Start the retry budget at the first failure; past it, stop trying."""
        now = self.rules.clock()
        if not self.deadline:
            self.deadline = now + self.rules.retry_deadline
        elif now >= self.deadline:
            if self._last is not None:
                raise self._last
            raise ClusterError(f"no answer within retry_deadline={self.rules.retry_deadline}s")

    def _wait(self, exc: BaseException) -> None:
        """Ask the driver for a refresh and a backoff; raise ``exc`` once the deadline
        has passed."""
        now = self.rules.clock()
        if not self.deadline:
            self.deadline = now + self.rules.retry_deadline
        elif now >= self.deadline:
            raise exc
        self._raise = exc
        self._pending = self.rules.backoff.compute(self._tries)
