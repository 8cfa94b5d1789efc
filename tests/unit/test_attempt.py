"""The attempt state machine of one command (balancer.core.attempt), without sockets.

A scripted "driver" plays the loop both clients run: the cases the real-server tests
found (a lost write reply, a refused primary, MOVED during ASK, TRYAGAIN backoff,
blocking-command timeouts) are checked once here, for both clients.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis
from redis.exceptions import AskError, MovedError, TryAgainError

from balancer.core.attempt import Attempt, AttemptRules, Target
from balancer.core.breaker import CLOSED, OPEN, BreakerPolicy
from balancer.core.errors import (
    ClusterError,
    NodeUnavailable,
    NotSentError,
    OutcomeUnknown,
    SlotNotCovered,
)
from balancer.core.routes import RouteTable
from balancer.core.slots import TOTAL_SLOTS, ShardInfo, ShardNode, SlotMap


class FakeLink:
    """A transport stand-in: just an address."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.address = f"{host}:{port}"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def shard(primary: str, *replicas: str, ranges: tuple[tuple[int, int], ...]) -> ShardInfo:
    return ShardInfo(
        ShardNode("p" + primary, primary, "primary", "online"),
        tuple(ShardNode("r" + r, r, "replica", "online") for r in replicas),
        ranges,
    )


def table(read_from: str = "primary", fail_max: int = 2) -> RouteTable[FakeLink]:
    routes: RouteTable[FakeLink] = RouteTable(
        FakeLink,
        [("10.0.0.1", 7000)],
        read_from=read_from,  # type: ignore[arg-type]
        strategy="round_robin",
        breaker_policy=BreakerPolicy(fail_max=fail_max, reset_timeout=30.0),
        refresh_interval=30.0,
        tls=False,
    )
    slot_map = SlotMap.from_shards(
        [
            shard("10.0.0.1:7000", "10.0.0.11:7000", ranges=((0, 8191),)),
            shard("10.0.0.2:7000", "10.0.0.12:7000", ranges=((8192, TOTAL_SLOTS - 1),)),
        ]
    )
    routes.install(slot_map, 0.0)
    return routes


def attempt(
    routes: RouteTable[FakeLink],
    name: str = "SET",
    read: bool = False,
    slot: int = 100,
    block: float | None = None,
    clock: Clock | None = None,
) -> Attempt[FakeLink]:
    rules = AttemptRules(5.0, 16, lambda n: n in ("GET", "BLPOP"), clock or Clock())
    return Attempt(routes, rules, slot, name, read, block)


Reply = Callable[[Target[FakeLink]], Any]


class Log:
    """What a scripted drive sent where, and the pauses it took."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bool]] = []
        self.pauses: list[float] = []


def drive(
    a: Attempt[FakeLink], replies: list[Reply], clock: Clock | None = None, log: Log | None = None
) -> Any:
    """The driver loop, scripted: each try gets the next reply (a value or an
    exception to raise); returns the result and records what was sent where."""
    log = log if log is not None else Log()
    for reply in replies:
        while (target := a.next_target()) is None:
            pause = a.pause()
            log.pauses.append(pause)
            if clock is not None:
                clock.now += pause
        log.sent.append((target.address, target.asking))
        outcome = reply(target)
        if isinstance(outcome, BaseException):
            a.on_error(target, outcome)
            continue
        a.on_reply(target)
        return outcome
    raise AssertionError("ran out of scripted replies")


def ok(target: Target[FakeLink]) -> Any:
    return b"OK"


def fail(exc: BaseException) -> Reply:
    return lambda target: exc


def refused_error() -> redis.ConnectionError:
    error = redis.ConnectionError("Error 111 connecting")
    error.__cause__ = ConnectionRefusedError(111, "Connection refused")
    return error


def test_a_write_goes_to_the_slots_primary() -> None:
    log = Log()
    a = attempt(table())
    assert drive(a, [ok], log=log) == b"OK"
    assert log.sent == [("10.0.0.1:7000", False)]


def test_a_lost_write_reply_is_an_unknown_outcome_never_resent() -> None:
    log = Log()
    routes = table()
    a = attempt(routes)
    with pytest.raises(OutcomeUnknown):
        drive(a, [fail(redis.TimeoutError("Timeout reading")), ok], log=log)
    assert routes.stats.unknown_outcomes == 1
    assert len(log.sent) == 1


def test_a_read_whose_reply_was_lost_is_sent_again() -> None:
    log = Log()
    a = attempt(table(), name="GET", read=True)
    assert drive(a, [fail(redis.TimeoutError("Timeout reading")), ok], log=log) == b"OK"


def test_a_write_that_never_left_is_sent_again() -> None:
    log = Log()
    a = attempt(table())
    assert drive(a, [fail(NotSentError("10.0.0.1:7000", "cannot connect")), ok], log=log) == b"OK"


def test_a_refused_connection_costs_the_primary_nothing_but_a_timeout_counts() -> None:
    routes = table(fail_max=1)
    drive(attempt(routes), [fail(refused_error()), ok])
    assert routes.breaker("10.0.0.1:7000").state == CLOSED
    with pytest.raises(OutcomeUnknown):
        drive(attempt(routes), [fail(redis.TimeoutError("Timeout reading"))])
    assert routes.breaker("10.0.0.1:7000").state == OPEN


def test_an_open_primary_breaker_fails_fast_unless_a_refresh_moves_the_slot() -> None:
    routes = table(fail_max=1)
    routes.breaker("10.0.0.1:7000").record(redis.TimeoutError("hung"))
    a = attempt(routes)
    assert a.next_target() is None  # the driver refreshes; nothing changed:
    with pytest.raises(NodeUnavailable):
        a.pause()
    b = attempt(routes)
    assert b.next_target() is None
    routes.moved(100, "10.0.0.2", 7000)  # what a refresh would have found
    assert b.pause() == 0.0
    target = b.next_target()
    assert target is not None and target.address == "10.0.0.2:7000"


def test_moved_during_ask_follows_the_move_and_drops_asking() -> None:
    log = Log()
    routes = table()
    a = attempt(routes)
    replies = [fail(AskError("100 10.0.0.2:7000")), fail(MovedError("100 10.0.0.2:7000")), ok]
    result = drive(a, replies, log=log)
    assert result == b"OK"
    assert log.sent == [
        ("10.0.0.1:7000", False),
        ("10.0.0.2:7000", True),
        ("10.0.0.2:7000", False),
    ]
    assert routes.slot_route[100] is routes.routes["10.0.0.2:7000"]
    assert routes.next_refresh == 0.0  # the next call re-reads the map
    assert (routes.stats.ask, routes.stats.moved) == (1, 1)


def test_too_many_redirections_raise() -> None:
    log = Log()
    routes = table()
    a = Attempt(routes, AttemptRules(5.0, 2, lambda n: False, Clock()), 100, "SET", False)
    with pytest.raises(ClusterError, match="too many redirections"):
        drive(a, [fail(AskError("100 10.0.0.2:7000"))] * 5, log=log)


def test_tryagain_backs_off_then_gives_up_at_the_deadline() -> None:
    log = Log()
    clock = Clock()
    routes = table()
    a = attempt(routes, clock=clock)
    with pytest.raises(TryAgainError):
        drive(a, [fail(TryAgainError("TRYAGAIN"))] * 10_000, clock, log=log)
    pauses = log.pauses
    assert pauses and all(0 < p <= 0.25 for p in pauses)
    assert pauses[-1] >= pauses[0] / 2  # grows (jittered), capped
    assert clock.now - 1000.0 == pytest.approx(5.0, abs=0.3)  # retry_deadline
    assert routes.stats.tryagain == len(log.sent)


def test_a_blocking_commands_timeout_is_not_the_nodes_failure() -> None:
    log = Log()
    routes = table(fail_max=1)
    a = attempt(routes, name="BLPOP", read=False, block=1.0)
    drive(a, [fail(redis.TimeoutError("Timeout reading")), ok], log=log)  # BLPOP only reads here
    assert routes.breaker("10.0.0.1:7000").state == CLOSED


def test_a_read_fails_over_inside_the_shard_at_once() -> None:
    log = Log()
    routes = table(read_from="replicas")
    a = attempt(routes, name="GET", read=True)
    assert drive(a, [fail(redis.ConnectionError("reset")), ok], log=log) == b"OK"
    sent = [address for address, _ in log.sent]
    assert sent[0] == "10.0.0.11:7000" and sent[1] != sent[0]
    assert log.pauses == []
    assert routes.stats.failovers == 1


def test_an_uncovered_slot_waits_for_a_refresh_then_raises() -> None:
    log = Log()
    clock = Clock()
    routes = table()
    routes.slot_route[100] = None
    a = attempt(routes, clock=clock)
    with pytest.raises(SlotNotCovered):
        drive(a, [ok], clock, log=log)


def test_an_echoed_failure_counts_once() -> None:
    log = Log()
    routes = table(fail_max=2)
    for _ in range(3):
        echo = redis.TimeoutError("Timeout reading")
        echo._slotpilot_echo = True
        a = attempt(routes, name="GET", read=True)
        drive(a, [fail(echo), ok], log=log)
    assert routes.breaker("10.0.0.1:7000").state == CLOSED


def test_an_abandoned_try_returns_the_reader_lease() -> None:
    routes = table(read_from="replicas")
    a = attempt(routes, name="GET", read=True)
    target = a.next_target()
    assert target is not None and target.member is not None
    assert target.member.in_flight == 1
    a.abandon(target)
    assert target.member.in_flight == 0


def test_a_pinned_command_raises_error_replies_as_they_are() -> None:
    log = Log()
    routes = table()
    link = routes.transport("10.0.0.2:7000")
    rules = AttemptRules(5.0, 16, lambda n: False, Clock())
    a = Attempt(routes, rules, -1, "CLUSTER", False, None, link)
    with pytest.raises(MovedError):
        drive(a, [fail(MovedError("100 10.0.0.1:7000"))], log=log)
