"""The scale-in planner, socket-free: who survives (live_entries), who leaves
(choose_leaving) and who keeps, gets promoted or drains (plan_scale_in), as exact worked
examples and as a property over random layouts."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.capacity import MemoryFacts, check_scale_in_capacity
from controller.probe import ClusterNodeEntry
from controller.scaling import (
    ScaleInPlan,
    choose_leaving,
    live_entries,
    plan_scale_in,
)
from controller.structure import plan_replicas

TOTAL_SLOTS = 16384
Slots = tuple[tuple[int, int], ...]
Layout = tuple[list[ClusterNodeEntry], int, list[str]]  # live, desired, leaving ids

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def primary(node_id: str, port: int, slots: Slots = (), host: str = "10.0.0.1") -> ClusterNodeEntry:
    return ClusterNodeEntry(
        node_id, f"{host}:{port}", frozenset({"master"}), None, 1, slots, open_slots=()
    )


def replica(node_id: str, port: int, of: str, host: str = "10.0.0.1") -> ClusterNodeEntry:
    return ClusterNodeEntry(node_id, f"{host}:{port}", frozenset({"slave"}), of, 1, (), ())


def ordinal(address: str) -> tuple[str, int]:
    """A StatefulSet-like ordinal: (host, numeric port)."""
    host, _, port = address.rpartition(":")
    return host, int(port)


def ids(entries: list[ClusterNodeEntry]) -> list[str]:
    return [e.node_id for e in entries]


def count(entry: ClusterNodeEntry) -> int:
    return sum(hi - lo + 1 for lo, hi in entry.slots)


FIVE: list[Slots] = [  # redis-cli style split of 16384 slots over five shards
    ((0, 3276),),
    ((3277, 6553),),
    ((6554, 9830),),
    ((9831, 13107),),
    ((13108, 16383),),
]


# -- live_entries ---------------------------------------------------------------------


def test_live_entries_drops_failed_unaddressed_and_handshaking_nodes() -> None:
    ok = primary("ok", 7000, ((0, 16383),))
    myself = ClusterNodeEntry(
        "me", "10.0.0.1:7001", frozenset({"myself", "slave"}), "ok", 1, (), ()
    )
    suspected = ClusterNodeEntry(
        "pf", "10.0.0.1:7002", frozenset({"slave", "fail?"}), "ok", 1, (), ()
    )
    failed = ClusterNodeEntry("f", "10.0.0.1:7003", frozenset({"master", "fail"}), None, 1, (), ())
    noaddr_flag = ClusterNodeEntry(
        "na", "10.0.0.1:7004", frozenset({"slave", "noaddr"}), "ok", 1, (), ()
    )
    no_address = ClusterNodeEntry("empty", "", frozenset({"slave"}), "ok", 1, (), ())
    handshake = ClusterNodeEntry("hs", "10.0.0.1:7005", frozenset({"handshake"}), None, 0, (), ())
    entries = [failed, ok, noaddr_flag, myself, no_address, suspected, handshake]
    # "fail?" (PFAIL, one node's suspicion) is not a verdict: the node still takes part.
    assert live_entries(entries) == [ok, myself, suspected]
    assert live_entries([]) == []
    assert live_entries([failed, handshake, no_address]) == []


# -- choose_leaving -------------------------------------------------------------------


def test_choose_leaving_takes_nothing_for_a_non_positive_count() -> None:
    live = [primary(f"p{i}", 7000 + i) for i in range(3)]
    assert choose_leaving(live, 0, ordinal) == []
    assert choose_leaving(live, -2, ordinal) == []


def test_choose_leaving_takes_the_highest_ordinals() -> None:
    # 9999 < 10000 numerically, not as text: the ordinal function decides, not the address.
    live = [
        primary("a", 10000),
        replica("b", 9999, "a"),
        primary("c", 7000, host="10.0.0.2"),  # a higher host outranks every port
        replica("d", 10001, "a"),
        primary("e", 8000),
    ]
    assert ids(choose_leaving(live, 1, ordinal)) == ["c"]
    assert ids(choose_leaving(live, 3, ordinal)) == ["a", "d", "c"]  # ascending ordinal
    assert ids(choose_leaving(live, 5, ordinal)) == ["e", "b", "a", "d", "c"]
    assert ids(choose_leaving(live, 9, ordinal)) == ["e", "b", "a", "d", "c"]
    as_text = choose_leaving(live, 2, lambda address: address)  # "…:9999" > "…:10001" as text
    assert ids(as_text) == ["b", "c"]


# -- plan_scale_in: worked examples ---------------------------------------------------


def test_five_interleaved_shards_to_three_drain_the_leaving_primaries() -> None:
    # StatefulSet order: primary i at 7000+2i, its replica right after it.
    live = []
    for i, slots in enumerate(FIVE):
        live += [primary(f"p{i}", 7000 + 2 * i, slots), replica(f"r{i}", 7001 + 2 * i, f"p{i}")]
    leaving = choose_leaving(live, len(live) - 3 * 2, ordinal)
    assert ids(leaving) == ["p3", "r3", "p4", "r4"]
    plan = plan_scale_in(live, 3, ids(leaving))
    assert plan == ScaleInPlan(
        keepers=("p0", "p1", "p2"), promote=(), drain=("p3", "p4"), leave=("p3", "p4", "r3", "r4")
    )


def test_five_shards_to_three_when_only_replicas_leave_keep_the_fullest_primaries() -> None:
    # Primaries on 7000-7004, the replica of primary i on 7005+i: the four highest ports
    # are replicas, every primary survives and the two holding the fewest slots drain.
    slots: list[Slots] = [
        ((0, 999),),  # 1000
        ((1000, 5999),),  # 5000
        ((6000, 8999),),  # 3000
        ((9000, 12999),),  # 4000
        ((13000, 16383),),  # 3384
    ]
    live = [primary(f"p{i}", 7000 + i, s) for i, s in enumerate(slots)]
    live += [replica(f"r{i}", 7005 + i, f"p{i}") for i in range(5)]
    leaving = choose_leaving(live, len(live) - 3 * 2, ordinal)
    assert ids(leaving) == ["r1", "r2", "r3", "r4"]
    plan = plan_scale_in(live, 3, ids(leaving))
    assert plan == ScaleInPlan(
        keepers=("p1", "p3", "p4"), promote=(), drain=("p0", "p2"), leave=("r1", "r2", "r3", "r4")
    )


def test_too_few_surviving_primaries_promote_the_replica_of_the_fullest_leaving_one() -> None:
    # After earlier failovers the high ordinals are primaries: p2, p3 and p4 leave, two
    # primaries survive, so one replica of a leaving primary is promoted — that of p3,
    # which holds the most slots — and the other two leaving primaries drain although
    # their replicas survive too.
    live = [
        primary("p0", 7000, ((0, 3999),)),
        primary("p1", 7001, ((4000, 7999),)),
        replica("r2", 7002, "p2"),
        replica("r3", 7003, "p3"),
        replica("r4", 7004, "p4"),
        replica("r1", 7005, "p1"),
        primary("p2", 7006, ((8000, 9999),)),
        primary("p3", 7007, ((10000, 14999),)),
        primary("p4", 7008, ((15000, 16383),)),
        replica("r0", 7009, "p0"),
    ]
    leaving = choose_leaving(live, len(live) - 3 * 2, ordinal)
    assert ids(leaving) == ["p2", "p3", "p4", "r0"]
    plan = plan_scale_in(live, 3, ids(leaving))
    assert plan == ScaleInPlan(
        keepers=("p0", "p1", "r3"),
        promote=("r3",),
        drain=("p2", "p4"),
        leave=("p2", "p3", "p4", "r0"),
    )


def test_a_needed_surviving_replica_is_promoted_instead_of_draining_its_primary() -> None:
    live = [
        primary("p0", 7000, ((0, 5460),)),
        primary("p1", 7001, ((5461, 10922),)),
        primary("p2", 7002, ((10923, 16383),)),
        replica("r2", 7003, "p2"),
        replica("r0", 7004, "p0"),
    ]
    plan = plan_scale_in(live, 3, ["p2"])
    assert plan.promote == ("r2",)
    assert "p2" not in plan.drain
    assert plan == ScaleInPlan(keepers=("p0", "p1", "r2"), promote=("r2",), drain=(), leave=("p2",))


def test_only_one_of_two_surviving_replicas_is_promoted() -> None:
    live = [
        primary("p0", 7000, ((0, 8191),)),
        primary("p1", 7001, ((8192, 16383),)),
        replica("r1a", 7002, "p1"),
        replica("r1b", 7003, "p1"),
    ]
    plan = plan_scale_in(live, 2, ["p1"])
    assert plan == ScaleInPlan(keepers=("p0", "r1a"), promote=("r1a",), drain=(), leave=("p1",))


def test_a_leaving_primary_drains_when_enough_primaries_survive() -> None:
    live = [
        primary("p0", 7000, ((0, 4095),)),
        primary("p1", 7001, ((4096, 8191),)),
        primary("p2", 7002, ((8192, 12287),)),
        primary("p3", 7003, ((12288, 16383),)),
        replica("r3", 7004, "p3"),  # survives, but is not needed
    ]
    plan = plan_scale_in(live, 3, ["p3"])
    assert plan == ScaleInPlan(keepers=("p0", "p1", "p2"), promote=(), drain=("p3",), leave=("p3",))


def test_an_empty_surviving_primary_is_no_keeper_when_fuller_ones_suffice() -> None:
    live = [
        primary("e", 7000),  # lowest address, but no slots
        primary("p1", 7001, ((0, 9999),)),
        primary("p2", 7002, ((10000, 12999),)),
        primary("p3", 7003, ((13000, 16383),)),
        primary("gone", 7004),  # leaving and empty: nothing to drain
    ]
    plan = plan_scale_in(live, 2, ["gone"])
    # p3 holds 3384 slots, p2 3000: p2 and the empty primary give up their place
    assert plan == ScaleInPlan(keepers=("p1", "p3"), promote=(), drain=("p2",), leave=("gone",))
    assert "e" not in plan.drain  # it holds no slots: nothing to drain from it


def test_an_empty_surviving_primary_is_a_keeper_when_it_is_needed() -> None:
    live = [
        primary("e", 7000),
        primary("p1", 7001, ((0, 9999),)),
        primary("p2", 7002, ((10000, 16383),)),
        replica("r2", 7003, "p2"),
    ]
    plan = plan_scale_in(live, 2, ["p2"])
    # Surviving primaries come first, even empty ones: p2's slots move rather than r2
    # being promoted (promotion only when too few primaries survive).
    assert plan == ScaleInPlan(keepers=("e", "p1"), promote=(), drain=("p2",), leave=("p2",))


def test_too_few_nodes_that_could_hold_slots_raise() -> None:
    live = [
        primary("p0", 7000, ((0, 8191),)),
        replica("r0", 7001, "p0"),
        primary("p1", 7002, ((8192, 16383),)),
        replica("r1", 7003, "p1"),
    ]
    # survivors are one primary and its own replica: a replica of a keeper is no shard
    with pytest.raises(ValueError, match="cannot keep 2 shards: only 1 surviving"):
        plan_scale_in(live, 2, ["p1", "r1"])
    # the same with r1 surviving: r1 is promoted and two shards remain
    assert plan_scale_in(live, 2, ["p1"]).promote == ("r1",)
    # nothing survives at all
    with pytest.raises(ValueError, match="only 0 surviving"):
        plan_scale_in(live, 1, ids(live))
    # the replica of an empty leaving primary is not promoted: it has no data to keep
    empty = [primary("p0", 7000, ((0, 16383),)), primary("p1", 7001), replica("r1", 7002, "p1")]
    with pytest.raises(ValueError, match="only 1 surviving"):
        plan_scale_in(empty, 2, ["p1"])


# -- plan_scale_in: properties --------------------------------------------------------


@st.composite
def layouts(draw: st.DrawFn) -> Layout:
    """1-8 primaries with contiguous runs covering all slots, 0-2 empty primaries, 0-2
    replicas each, distinct random addresses, entries in random order; desired in 1..n
    and the leaving nodes either a random subset or the highest ordinals."""
    n = draw(st.integers(1, 8))
    cuts = draw(
        st.lists(st.integers(1, TOTAL_SLOTS - 1), min_size=n - 1, max_size=n - 1, unique=True)
    )
    bounds = [0, *sorted(cuts), TOTAL_SLOTS]
    slots: list[Slots] = [((lo, hi - 1),) for lo, hi in itertools.pairwise(bounds)]
    slots += [()] * draw(st.integers(0, 2))
    replicas = draw(st.lists(st.integers(0, 2), min_size=len(slots), max_size=len(slots)))
    size = len(slots) + sum(replicas)
    addresses = draw(
        st.lists(
            st.tuples(st.sampled_from(["10.0.0.1", "10.0.0.2"]), st.integers(1024, 65535)),
            min_size=size,
            max_size=size,
            unique=True,
        )
    )
    spots = iter(addresses)
    live: list[ClusterNodeEntry] = []
    for i, owned in enumerate(slots):
        host, port = next(spots)
        live.append(primary(f"p{i}", port, owned, host))
        for j in range(replicas[i]):
            host, port = next(spots)
            live.append(replica(f"r{i}.{j}", port, f"p{i}", host))
    live = draw(st.permutations(live))
    desired = draw(st.integers(1, n))
    if draw(st.booleans()):
        leaving = draw(st.lists(st.sampled_from(ids(live)), unique=True))
    else:
        leaving = ids(choose_leaving(live, draw(st.integers(0, len(live))), ordinal))
    return live, desired, leaving


@FAST
@given(layouts())
def test_every_slot_holder_is_kept_promoted_away_or_drained(layout: Layout) -> None:
    live, desired, leaving = layout
    by_id = {e.node_id: e for e in live}
    leave = set(leaving)
    surviving_primaries = [e for e in live if e.is_primary and e.node_id not in leave]
    promotable = [  # leaving primaries with slots and at least one surviving replica
        p
        for p in live
        if p.is_primary
        and p.node_id in leave
        and p.slots
        and any(r.primary_id == p.node_id and r.node_id not in leave for r in live)
    ]
    if len(surviving_primaries) + len(promotable) < desired:
        with pytest.raises(ValueError, match=f"cannot keep {desired} shards"):
            plan_scale_in(live, desired, leaving)
        return
    plan = plan_scale_in(live, desired, leaving)

    assert len(plan.keepers) == len(set(plan.keepers)) == desired
    assert plan.keepers == tuple(sorted(plan.keepers))
    assert plan.leave == tuple(sorted(leave))
    assert not set(plan.keepers) & set(plan.leave)
    assert set(plan.promote) <= set(plan.keepers)
    promoted_from = [by_id[r].primary_id for r in plan.promote]
    for replica_id in plan.promote:
        entry = by_id[replica_id]
        assert not entry.is_primary
        assert entry.primary_id in leave
    assert len(promoted_from) == len(set(promoted_from))  # one replica per leaving primary
    for node_id in plan.drain:
        entry = by_id[node_id]
        assert entry.is_primary and entry.slots
        assert node_id not in plan.keepers
    assert len(plan.drain) == len(set(plan.drain))
    for entry in live:
        if entry.is_primary and entry.slots:
            roles = (
                entry.node_id in plan.keepers,
                entry.node_id in plan.drain,
                entry.node_id in promoted_from,
            )
            assert sum(roles) == 1, (entry.node_id, roles, plan)

    # Surviving primaries are kept before any promotion, the fullest first; promotion
    # takes the fullest leaving primaries.
    kept = [e for e in surviving_primaries if e.node_id in plan.keepers]
    dropped = [e for e in surviving_primaries if e.node_id not in plan.keepers]
    assert len(kept) == min(desired, len(surviving_primaries))
    if kept and dropped:
        assert min(map(count, kept)) >= max(map(count, dropped))
    assert len(plan.promote) == desired - len(kept)
    passed_over = [p for p in promotable if p.node_id not in promoted_from]
    if plan.promote and passed_over:
        assert min(count(by_id[p]) for p in promoted_from if p) >= max(map(count, passed_over))


# -- check_scale_in_capacity ------------------------------------------------------------

MB = 1 << 20


def mem(node_id: str, used_mb: float, max_mb: float = 0, policy: str = "noeviction") -> MemoryFacts:
    return MemoryFacts(node_id, int(used_mb * MB), int(max_mb * MB), policy)


def test_capacity_allows_a_scale_in_that_fits_under_the_share() -> None:
    keepers = [mem("a", 30, 100), mem("b", 30, 100)]
    assert check_scale_in_capacity(keepers, [mem("c", 60, 100)], 0.8) == []  # 60 each


def test_capacity_refuses_when_the_moved_data_exceeds_the_share_and_names_the_node() -> None:
    keepers = [mem("aaaaaaaa1", 30, 100), mem("bbbbbbbb2", 10, 100)]
    reasons = check_scale_in_capacity(keepers, [mem("c", 100, 100)], 0.75)
    assert len(reasons) == 1 and reasons[0].startswith("aaaaaaaa would use")  # 80 > 75


def test_configured_capacity_wins_over_maxmemory() -> None:
    keepers, leavers = [mem("a", 10, 0), mem("b", 10, 0)], [mem("c", 20)]
    assert check_scale_in_capacity(keepers, leavers, 0.8) == []  # no limit anywhere
    assert len(check_scale_in_capacity(keepers, leavers, 0.8, capacity_bytes=20 * MB)) == 2
    assert check_scale_in_capacity(keepers, leavers, 0.8, capacity_bytes=30 * MB) == []


def test_allkeys_policy_needs_shown_headroom() -> None:
    unlimited = [mem("a", 10, 0, "allkeys-lru"), mem("b", 10, 0)]
    assert len(check_scale_in_capacity(unlimited, [mem("c", 1)], 0.8)) == 1
    assert check_scale_in_capacity(unlimited, [mem("c", 1)], 0.8, capacity_bytes=100 * MB) == []
    full = check_scale_in_capacity([mem("a", 70, 100, "allkeys-lfu")], [mem("c", 20)], 0.8)
    assert full and "allkeys-lfu would evict" in full[0]


def test_no_keeper_is_refused() -> None:
    assert check_scale_in_capacity([], [mem("c", 1)]) == ["no surviving primary"]


# -- plan_replicas ----------------------------------------------------------------------


def test_spares_fill_the_shard_without_replica_first() -> None:
    moves, missing = plan_replicas({"p1": ["r1"], "p2": []}, ["s1", "s2"], 1)
    assert (moves, missing) == ([("s1", "p2")], {})


def test_surplus_replicas_move_to_shards_without_one() -> None:
    moves, missing = plan_replicas({"p1": ["r1", "r2", "r3"], "p2": [], "p3": ["r4"]}, [], 1)
    assert moves == [("r3", "p2")] and missing == {}


def test_missing_replicas_are_counted_when_nothing_can_move() -> None:
    moves, missing = plan_replicas({"p1": ["r1"], "p2": []}, [], 1)
    assert (moves, missing) == ([], {"p2": 1})


def test_replicas_are_evened_out_only_when_no_node_can_be_started() -> None:
    layout = {"p1": ["r1", "r2"], "p2": []}
    assert plan_replicas(layout, [], 2, even_out=True) == ([("r2", "p2")], {"p1": 1, "p2": 1})
    assert plan_replicas(layout, [], 2, even_out=False) == ([], {"p2": 2})


@FAST
@given(
    counts=st.lists(st.integers(0, 4), min_size=1, max_size=6),
    spares=st.integers(0, 6),
    per_shard=st.integers(0, 3),
)
def test_planned_replicas_end_as_even_as_the_nodes_allow(
    counts: list[int], spares: int, per_shard: int
) -> None:
    names = itertools.count()
    layout = {f"p{i}": [f"r{next(names)}" for _ in range(n)] for i, n in enumerate(counts)}
    pool = [f"s{i}" for i in range(spares)]
    moves, missing = plan_replicas(layout, pool, per_shard, even_out=True)
    final = {p: len(r) for p, r in layout.items()}
    for node, target in moves:
        source = next((p for p, r in layout.items() if node in r), None)
        if source is not None:
            final[source] -= 1
        final[target] += 1
    assert sum(missing.values()) == sum(max(0, per_shard - n) for n in final.values())
    total = sum(counts) + spares
    if total >= per_shard * len(counts):  # enough nodes: every shard gets its replicas
        assert missing == {}
    else:  # too few: as even as they allow, no spare left unused
        assert max(final.values()) - min(final.values()) <= 1 or min(final.values()) >= per_shard
        assert len([m for m in moves if m[0].startswith("s")]) == spares
