"""The slot rebalance planner: properties over random ownerships, exact worked examples,
input validation and CLUSTER SHARDS parsing (shapes as Redis 7.0 and Valkey 9 send them)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from balancer.slots import TOTAL_SLOTS
from controller.rebalance import (
    RebalancePlan,
    SlotMove,
    SlotOwnership,
    ownership_from_cluster_shards,
    plan_rebalance,
    ranges_from_slots,
    slots_from_ranges,
)

Ranges = tuple[tuple[int, int], ...]
Ownership = dict[str, Ranges]
Case = tuple[Ownership, dict[str, float], float]

FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def cases(draw: st.DrawFn) -> Case:
    """1-12 primaries owning random runs of the slot space; some empty, some uncovered
    runs, some weight 0 (never all)."""
    nodes = [f"node-{i:02d}" for i in range(draw(st.integers(1, 12)))]
    cuts = draw(st.lists(st.integers(1, TOTAL_SLOTS - 1), max_size=40, unique=True))
    bounds = [0, *sorted(cuts), TOTAL_SLOTS]
    holders = draw(st.lists(st.sampled_from(nodes), min_size=1, max_size=len(nodes), unique=True))
    uncovered = draw(st.booleans())
    owned: dict[str, list[tuple[int, int]]] = {node: [] for node in nodes}
    for start, stop in itertools.pairwise(bounds):
        owner = draw(st.sampled_from([*holders, None] if uncovered else holders))
        if owner is not None:
            owned[owner].append((start, stop - 1))
    weights = {node: draw(st.sampled_from([0.0, 0.5, 1.0, 1.0, 1.0, 2.0, 3.0])) for node in nodes}
    if not any(weights.values()):
        weights[nodes[0]] = 1.0
    threshold = draw(st.sampled_from([0.0, 0.01, 0.02, 0.1, 0.5]))
    ownership = {node: tuple(ranges) for node, ranges in owned.items()}  # sorted, unmerged
    return ownership, weights, threshold


def _quotas(counts: Mapping[str, int], weights: Mapping[str, float]) -> dict[str, Fraction]:
    """Each primary's exact (unrounded) weighted share of the owned slots."""
    total = sum(counts.values())
    weight_sum = sum(Fraction(w) for w in weights.values())
    return {node: total * Fraction(weights[node]) / weight_sum for node in counts}


def _replay(ownership: Mapping[str, Ranges], plan: RebalancePlan) -> list[str | None]:
    """Apply the plan slot by slot: the owner of every slot afterwards (None: uncovered)."""
    owner: list[str | None] = [None] * TOTAL_SLOTS
    for node, ranges in ownership.items():
        for start, end in ranges:
            owner[start : end + 1] = [node] * (end - start + 1)
    for move in plan.moves:
        for start, end in move.slot_ranges:
            assert set(owner[start : end + 1]) == {move.source}, "moved from a non-owner"
            owner[start : end + 1] = [move.target] * (end - start + 1)
    return owner


def _after(ownership: Mapping[str, Ranges], plan: RebalancePlan) -> dict[str, list[int]]:
    """The ownership ``plan`` leaves behind, every primary listed (empty ones too)."""
    result: dict[str, list[int]] = {node: [] for node in ownership}
    for slot, node in enumerate(_replay(ownership, plan)):
        if node is not None:
            result[node].append(slot)
    return result


# -- properties -----------------------------------------------------------------------


@FAST
@given(cases())
def test_every_slot_stays_owned_exactly_once(case: Case) -> None:
    ownership, weights, threshold = case
    plan = plan_rebalance(ownership, weights, threshold)
    owner = _replay(ownership, plan)
    moved = [slot for move in plan.moves for slot in move.slots]
    assert len(moved) == len(set(moved)) == plan.slot_count  # no slot moves twice
    after = _after(ownership, plan)
    assigned = sum(1 for node in owner if node is not None)
    assert assigned == SlotOwnership(ownership).assigned  # uncovered stay uncovered
    assert {node: len(slots) for node, slots in after.items()} == dict(plan.after)


@FAST
@given(cases())
def test_moves_are_minimal_and_reach_the_weighted_shares(case: Case) -> None:
    ownership, weights, threshold = case
    plan = plan_rebalance(ownership, weights, threshold)
    before = SlotOwnership(ownership).counts()
    assert dict(plan.before) == before
    quotas = _quotas(before, weights)
    if plan.is_empty:
        assert dict(plan.after) == before
        for node, quota in quotas.items():  # within threshold of a share that is within 1 of quota
            assert abs(before[node] - quota) <= threshold * (quota + 1) + 1
            if weights[node] == 0:
                assert before[node] == 0
        return
    assert sum(plan.after.values()) == sum(before.values())
    for node, quota in quotas.items():  # exact shares, rounded one way or the other
        assert plan.after[node] in (math.floor(quota), math.ceil(quota))
        if weights[node] == 0:
            assert plan.after[node] == 0
    lower_bound = sum(max(0, before[node] - plan.after[node]) for node in before)
    assert plan.slot_count == lower_bound
    assert any(abs(before[n] - plan.after[n]) > threshold * plan.after[n] for n in before)


@FAST
@given(cases())
def test_moves_only_flow_from_surplus_to_deficit(case: Case) -> None:
    ownership, weights, threshold = case
    plan = plan_rebalance(ownership, weights, threshold)
    seen: set[tuple[str, str]] = set()
    for move in plan.moves:
        assert move.source != move.target
        assert plan.before[move.source] > plan.after[move.source]
        assert plan.before[move.target] < plan.after[move.target]  # never into a surplus node
        assert (move.source, move.target) not in seen  # one move per pair
        seen.add((move.source, move.target))
        assert move.slot_ranges == ranges_from_slots(move.slots)  # sorted and merged
    received = {node: 0 for node in plan.before}
    for move in plan.moves:
        received[move.target] += move.slot_count
    for node, count in received.items():
        assert count == max(0, plan.after[node] - plan.before[node])


@FAST
@given(cases())
def test_drained_slots_are_spread_in_proportion_to_deficits(case: Case) -> None:
    ownership, weights, threshold = case
    plan = plan_rebalance(ownership, weights, threshold)
    drained = {node for node, weight in weights.items() if weight == 0}
    from_drained: dict[str, int] = {}
    for move in plan.moves:
        if move.source in drained:
            from_drained[move.target] = from_drained.get(move.target, 0) + move.slot_count
    total = sum(from_drained.values())
    deficits = {
        n: plan.after[n] - plan.before[n] for n in plan.before if plan.after[n] > plan.before[n]
    }
    for node, deficit in deficits.items():
        share = Fraction(total * deficit, sum(deficits.values()))
        assert math.floor(share) <= from_drained.get(node, 0) <= math.ceil(share)


@FAST
@given(cases())
def test_applying_the_plan_twice_is_a_no_op(case: Case) -> None:
    ownership, weights, threshold = case
    plan = plan_rebalance(ownership, weights, threshold)
    again = plan_rebalance(_after(ownership, plan), weights, threshold)
    assert again.is_empty
    assert again.slot_count == 0
    assert dict(again.after) == dict(plan.after)


@FAST
@given(st.lists(st.integers(0, TOTAL_SLOTS - 1), max_size=300))
def test_ranges_and_slots_round_trip(slots: list[int]) -> None:
    ranges = ranges_from_slots(slots)
    assert slots_from_ranges(ranges) == tuple(sorted(set(slots)))
    assert all(a_end + 1 < b_start for (_, a_end), (b_start, _) in itertools.pairwise(ranges))


# -- worked examples ------------------------------------------------------------------

THREE = {"A": ((0, 5460),), "B": ((5461, 10922),), "C": ((10923, 16383),)}  # redis-cli create
FIVE = {
    "A": ((0, 3276),),
    "B": ((3277, 6553),),
    "C": ((6554, 9830),),
    "D": ((9831, 13107),),
    "E": ((13108, 16383),),
}


def test_two_empty_shards_join_three_even_ones() -> None:
    plan = plan_rebalance({**THREE, "D": (), "E": ()})
    assert dict(plan.before) == {"A": 5461, "B": 5462, "C": 5461, "D": 0, "E": 0}
    # 16384 / 5 = 3276.8: four primaries get 3277, a new one 3276 (that saves a move)
    assert dict(plan.after) == {"A": 3277, "B": 3277, "C": 3277, "D": 3277, "E": 3276}
    assert plan.slot_count == 2184 + 2185 + 2184 == 6553
    assert plan.moves == (
        SlotMove(((3277, 5460),), "A", "D"),  # each donor gives its top slots
        SlotMove(((8738, 9830),), "B", "D"),
        SlotMove(((9831, 10922),), "B", "E"),
        SlotMove(((14200, 16383),), "C", "E"),
    )


def test_five_to_three_spreads_both_drained_shards_over_all_three() -> None:
    plan = plan_rebalance(FIVE, {"D": 0, "E": 0})
    assert dict(plan.after) == {"A": 5462, "B": 5461, "C": 5461, "D": 0, "E": 0}
    assert plan.slot_count == 3277 + 3276 == 6553
    received = {n: sum(m.slot_count for m in plan.moves if m.target == n) for n in "ABC"}
    assert received == {"A": 2185, "B": 2184, "C": 2184}  # each exactly its deficit
    assert plan.moves == (
        SlotMove(((9831, 12015),), "D", "A"),
        SlotMove(((12016, 13107),), "D", "B"),
        SlotMove(((13108, 14199),), "E", "B"),
        SlotMove(((14200, 16383),), "E", "C"),
    )


def test_drained_slots_spread_even_when_another_donor_could_fill_one_receiver() -> None:
    ownership = {
        "A": ((0, 9999),),
        "B": ((10000, 10099),),
        "C": ((10100, 10199),),
        "D": ((10200, 16383),),
    }
    plan = plan_rebalance(ownership, {"D": 0})
    assert dict(plan.after) == {"A": 5462, "B": 5461, "C": 5461, "D": 0}
    assert plan.slot_count == 4538 + 6184
    assert plan.moves == (  # drained moves first, half of D's 6184 to each receiver
        SlotMove(((10200, 13291),), "D", "B"),
        SlotMove(((13292, 16383),), "D", "C"),
        SlotMove(((5462, 7730),), "A", "B"),
        SlotMove(((7731, 9999),), "A", "C"),
    )


def test_within_threshold_is_left_alone() -> None:
    ownership = {"A": ((0, 5499),), "B": ((5500, 10922),), "C": ((10923, 16383),)}
    assert plan_rebalance(THREE).is_empty
    plan = plan_rebalance(ownership)  # A +38 and B -38 of 5461: inside 2 %
    assert plan.is_empty and plan.slot_count == 0 and plan.moves == ()
    assert dict(plan.after) == dict(plan.before) == {"A": 5500, "B": 5423, "C": 5461}
    tight = plan_rebalance(ownership, threshold=0.005)  # 0.5 % of 5461 is 27 slots
    assert tight.moves == (SlotMove(((5462, 5499),), "A", "B"),)
    assert dict(tight.after) == {"A": 5462, "B": 5461, "C": 5461}


def test_weighted_three_to_one() -> None:
    plan = plan_rebalance({"A": ((0, 8191),), "B": ((8192, 16383),)}, {"A": 3, "B": 1})
    assert dict(plan.after) == {"A": 12288, "B": 4096}
    assert plan.moves == (SlotMove(((12288, 16383),), "B", "A"),)
    assert plan.slot_count == 4096


def test_uncovered_slots_are_left_for_fix() -> None:
    ownership = {"A": ((0, 999),), "B": ((5000, 5099),)}  # 15284 slots uncovered
    plan = plan_rebalance(ownership)
    assert dict(plan.after) == {"A": 550, "B": 550}
    assert plan.moves == (SlotMove(((550, 999),), "A", "B"),)
    assert sum(len(slots) for slots in _after(ownership, plan).values()) == 1100


def test_ownership_accepts_slots_sets_and_ranges() -> None:
    as_ranges = plan_rebalance({"A": [(0, 9999)], "B": [(10000, 16383)], "C": []})
    as_sets = plan_rebalance({"A": frozenset(range(10000)), "B": range(10000, 16384), "C": set()})
    mixed = plan_rebalance({"A": [0, (1, 9998), 9999], "B": [(10000, 16383)], "C": ()})
    assert as_ranges == as_sets == mixed
    assert SlotOwnership.from_mapping({"A": [5, 3, 4, (6, 9)]}).ranges == {"A": ((3, 9),)}


def test_no_slots_at_all_is_an_empty_plan() -> None:
    assert plan_rebalance({"A": (), "B": ()}, {"B": 0}).is_empty


@pytest.mark.parametrize(
    ("ownership", "weights", "threshold", "message"),
    [
        (THREE, {"A": -1}, 0.02, "weight of A"),
        (THREE, {"A": math.nan}, 0.02, "weight of A"),
        (THREE, {"A": 0, "B": 0, "C": 0}, 0.02, "every weight is 0"),
        (THREE, {"Z": 1}, 0.02, "Z"),
        ({"A": ((0, 100),), "B": ((100, 200),)}, None, 0.02, "slot 100 is owned by both A and B"),
        ({"A": [16384]}, None, 0.02, "outside 0-16383"),
        ({"A": [(-1, 5)]}, None, 0.02, "outside 0-16383"),
        ({"A": [(9, 5)]}, None, 0.02, "9-5"),
        ({"A": ["x"]}, None, 0.02, "not a slot or a range"),
        ({}, None, 0.02, "no primaries"),
        (THREE, None, -0.1, "threshold"),
    ],
)
def test_invalid_input_is_refused(
    ownership: Mapping[str, object],
    weights: dict[str, float] | None,
    threshold: float,
    message: str,
) -> None:
    with pytest.raises(ValueError, match=message):
        plan_rebalance(ownership, weights, threshold)  # type: ignore[arg-type]


# -- CLUSTER SHARDS -------------------------------------------------------------------

# Redis 7.0, RESP2 as it arrives on the wire (flat key/value lists), decode_responses=True;
# the second shard is a fresh primary that owns nothing yet.
REDIS_7_0_RESP2 = [
    ["slots", [0, 5460, 10923, 11000], "nodes", [
        ["id", "a" * 40, "port", 7000, "ip", "127.0.0.1", "endpoint", "127.0.0.1",
         "role", "master", "replication-offset", 560, "health", "online"],
        ["id", "b" * 40, "port", 7003, "ip", "127.0.0.1", "endpoint", "127.0.0.1",
         "role", "replica", "replication-offset", 560, "health", "online"],
    ]],
    ["slots", [], "nodes", [
        ["id", "c" * 40, "port", 7006, "ip", "127.0.0.1", "endpoint", "127.0.0.1",
         "role", "master", "replication-offset", 0, "health", "online"],
    ]],
    ["slots", [5461, 10922, 11001, 16383], "nodes", [
        ["id", "d" * 40, "port", 7001, "ip", "127.0.0.1", "endpoint", "127.0.0.1",
         "role", "master", "replication-offset", 560, "health", "online"],
    ]],
]  # fmt: skip

# Valkey 9 through redis-py 8 (RESP2 or RESP3): already dicts, with a shard-level "id" that
# is not a node id. The third shard lost its primary: a failed "master" and a replica that
# has not been promoted, plus a shard with only a failed replica.
VALKEY_9_DICTS = [
    {"id": "1" * 40, "slots": [0, 8191], "nodes": [
        {"id": "e" * 40, "port": 30001, "ip": "127.0.0.1", "endpoint": "127.0.0.1",
         "role": "master", "replication-offset": 42, "health": "online"},
        {"id": "f" * 40, "port": 30004, "ip": "127.0.0.1", "endpoint": "127.0.0.1",
         "role": "replica", "replication-offset": 28, "health": "online"},
    ]},
    {"id": "2" * 40, "slots": [], "nodes": [
        {"id": "9" * 40, "port": 30007, "ip": "127.0.0.1", "endpoint": "127.0.0.1",
         "role": "master", "replication-offset": 0, "health": "online"},
    ]},
    {"id": "3" * 40, "slots": [8192, 12000], "nodes": [
        {"id": "0" * 40, "port": 30002, "ip": "127.0.0.1", "endpoint": "127.0.0.1",
         "role": "master", "replication-offset": 90, "health": "failed"},
        {"id": "8" * 40, "port": 30005, "ip": "127.0.0.1", "endpoint": "127.0.0.1",
         "role": "master", "replication-offset": 80, "health": "online"},
    ]},
    {"id": "4" * 40, "slots": [12001, 16383], "nodes": [
        {"id": "7" * 40, "port": 30003, "ip": "127.0.0.1", "endpoint": "127.0.0.1",
         "role": "replica", "replication-offset": 80, "health": "failed"},
    ]},
]  # fmt: skip


def test_cluster_shards_redis_7_0_flat_lists() -> None:
    assert ownership_from_cluster_shards(REDIS_7_0_RESP2) == {
        "a" * 40: ((0, 5460), (10923, 11000)),
        "c" * 40: (),
        "d" * 40: ((5461, 10922), (11001, 16383)),
    }


def test_cluster_shards_valkey_9_dicts() -> None:
    ownership = ownership_from_cluster_shards(VALKEY_9_DICTS)
    assert ownership == {
        "e" * 40: ((0, 8191),),
        "9" * 40: (),
        "8" * 40: ((8192, 12000),),  # the online one of two claimed primaries
    }  # the shard with no primary is uncovered for planning
    plan = plan_rebalance(ownership)
    assert dict(plan.after) == {"e" * 40: 4001, "9" * 40: 4000, "8" * 40: 4000}


def test_cluster_shards_bytes_and_cluster_client_pairs() -> None:
    reply = [
        {b"slots": [(0, 100), [200, 300]], b"nodes": [
            {b"id": b"a" * 40, b"port": 7000, b"ip": b"10.0.0.1", b"role": b"master",
             b"health": b"online"}]},
    ]  # fmt: skip
    assert ownership_from_cluster_shards(reply) == {"a" * 40: ((0, 100), (200, 300))}


@pytest.mark.parametrize(
    "reply",
    [
        {"slots": []},
        ["not a shard"],
        [["slots", [0, 5, 7], "nodes", []]],
        [{"slots": [0, 5], "nodes": [{"role": "master"}]}],
        [{"slots": [0, 16384], "nodes": [{"id": "a", "role": "master"}]}],
    ],
)
def test_cluster_shards_malformed(reply: object) -> None:
    with pytest.raises(ValueError):
        ownership_from_cluster_shards(reply)
