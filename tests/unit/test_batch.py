"""The batch plan of a pipeline (balancer.core.batch), without sockets: grouping per
node, reader leases, what a failed node's unanswered commands become, NOSCRIPT."""

from __future__ import annotations

from typing import Any

import redis
from redis.crc import key_slot
from redis.exceptions import MovedError, NoScriptError

from balancer.core.batch import PENDING, BatchPlan
from balancer.core.breaker import CLOSED, OPEN
from balancer.core.errors import OutcomeUnknown
from tests.unit.test_attempt import FakeLink, refused_error, table

LEFT = "{a}"  # slot 15495: the second shard (10.0.0.2)
RIGHT = "{b}"  # slot 3300: the first shard (10.0.0.1)


def slot_of(name: Any, keys: Any) -> int:
    return key_slot(str(keys[0]).encode())


def plan_of(routes: Any, *commands: tuple[Any, ...]) -> BatchPlan[FakeLink]:
    queued = [(args, {}) for args in commands]
    keys = [[args[1]] if len(args) > 1 and args[0] != "PING" else [] for args in commands]
    return BatchPlan(routes, queued, keys, slot_of)


def parse(name: Any, raw: Any, options: dict[str, Any]) -> Any:
    return ("parsed", raw)


def readonly(name: Any) -> bool:
    return name == "GET"


def test_commands_are_grouped_per_node_and_keyless_ones_run_alone() -> None:
    plan = plan_of(table(), ("SET", LEFT, 1), ("SET", RIGHT, 2), ("GET", LEFT), ("PING",))
    assert {a: i for a, (_, i) in plan.batches.items()} == {
        "10.0.0.2:7000": [0, 2],
        "10.0.0.1:7000": [1],
    }
    plan.answered("10.0.0.2:7000", [0, 2], [b"OK", b"1"], None, readonly, parse)
    plan.answered("10.0.0.1:7000", [1], [b"OK"], None, readonly, parse)
    plan.finish()
    assert plan.results[:3] == [("parsed", b"OK"), ("parsed", b"OK"), ("parsed", b"1")]
    assert plan.pending() == [3]


def test_reads_take_one_reader_lease_per_shard() -> None:
    routes = table(read_from="replicas")
    plan = plan_of(routes, ("GET", LEFT), ("GET", LEFT + "x"), ("SET", LEFT, 1))
    assert {a: i for a, (_, i) in plan.batches.items()} == {
        "10.0.0.12:7000": [0, 1],
        "10.0.0.2:7000": [2],
    }
    reader = routes.routes["10.0.0.2:7000"].readers
    assert reader is not None
    assert sum(m.in_flight for m in reader._members.values()) == 1
    plan.finish()
    assert sum(m.in_flight for m in reader._members.values()) == 0


def test_a_lost_batch_makes_writes_unknown_and_reads_pending() -> None:
    routes = table()
    plan = plan_of(routes, ("SET", LEFT, 1), ("INCR", LEFT), ("GET", LEFT))
    timeout = redis.TimeoutError("Timeout reading")
    plan.answered("10.0.0.2:7000", [0, 1, 2], [b"OK"], timeout, readonly, parse)
    plan.finish()
    assert plan.results[0] == ("parsed", b"OK")
    assert isinstance(plan.results[1], OutcomeUnknown)
    assert plan.results[2] is PENDING and plan.pending() == [2]
    assert routes.stats.unknown_outcomes == 1


def test_a_batch_that_never_left_is_run_again_and_refused_costs_nothing() -> None:
    routes = table(fail_max=1)
    plan = plan_of(routes, ("SET", LEFT, 1), ("INCR", LEFT))
    plan.answered("10.0.0.2:7000", [0, 1], [], refused_error(), readonly, parse)
    assert plan.pending() == [0, 1]
    assert routes.breaker("10.0.0.2:7000").state == CLOSED  # as single commands: no count
    plan = plan_of(routes, ("GET", LEFT))
    plan.answered("10.0.0.2:7000", [0], [], redis.TimeoutError("hung"), readonly, parse)
    assert routes.breaker("10.0.0.2:7000").state == OPEN


def test_an_open_primary_breaker_keeps_its_commands_out_of_the_batch() -> None:
    routes = table(fail_max=1)
    routes.breaker("10.0.0.2:7000").record(redis.TimeoutError("hung"))
    plan = plan_of(routes, ("SET", LEFT, 1), ("SET", RIGHT, 1))
    assert list(plan.batches) == ["10.0.0.1:7000"]
    assert 0 in plan.pending()


def test_redirections_run_alone_and_noscript_goes_to_the_driver() -> None:
    plan = plan_of(table(), ("SET", LEFT, 1), ("EVALSHA", LEFT), ("LPUSH", LEFT, 1))
    moved = MovedError("15495 10.0.0.1:7000")
    noscript = NoScriptError("No matching script")
    wrong = redis.ResponseError("WRONGTYPE")
    plan.answered("10.0.0.2:7000", [0, 1, 2], [moved, noscript, wrong], None, readonly, parse)
    assert plan.results[0] is PENDING
    assert plan.noscript == [(1, noscript)]
    assert plan.results[2] is wrong
    plan.not_loaded(1, noscript)
    assert plan.pending() == [0]
