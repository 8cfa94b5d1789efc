"""Slot rebalance planning: which hash slots move from which primary to which, as a value.

The planner is a pure function of who owns which slots and how much each primary should
carry, so it is tested exhaustively without a cluster; the topology executor only carries
out the moves. It follows ``redis-cli --cluster rebalance``: nothing moves while every
primary is within ``threshold`` of its weighted share (a deadband, so small drift causes no
churn); once one is outside it, every primary is brought to its exact share with the
fewest possible slot moves. Slots no primary owns are not the planner's business: they stay
uncovered here, and the ``fix`` step assigns them.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from itertools import pairwise
from types import MappingProxyType
from typing import Any

from balancer.slots import TOTAL_SLOTS, parse_cluster_shards

__all__ = [
    "RebalancePlan",
    "SlotMove",
    "SlotOwnership",
    "ownership_from_cluster_shards",
    "plan_rebalance",
    "ranges_from_slots",
    "slots_from_ranges",
]

Range = tuple[int, int]  # inclusive (start, end), as CLUSTER SHARDS and ADDSLOTSRANGE use
Ranges = tuple[Range, ...]
OwnershipInput = Mapping[str, Iterable[int | Range]]


# -- slot range math ------------------------------------------------------------------


def _merge(ranges: Iterable[Range]) -> Ranges:
    """Validate, sort and merge overlapping or adjacent ranges."""
    merged: list[list[int]] = []
    for start, end in sorted(ranges):
        if not 0 <= start <= end < TOTAL_SLOTS:
            raise ValueError(f"slot range {start}-{end} is outside 0-{TOTAL_SLOTS - 1}")
        if merged and start <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return tuple((start, end) for start, end in merged)


def _size(ranges: Iterable[Range]) -> int:
    return sum(end - start + 1 for start, end in ranges)


def ranges_from_slots(slots: Iterable[int]) -> Ranges:
    """The sorted, merged inclusive ranges covering ``slots`` (duplicates are harmless).

    Ranges are how slots travel (``CLUSTER SHARDS``, ``ADDSLOTSRANGE``) and how the planner
    counts, so this and :func:`slots_from_ranges` are the only two conversions needed.
    """
    ordered = sorted(set(slots))
    if ordered and not 0 <= ordered[0] <= ordered[-1] < TOTAL_SLOTS:
        bad = ordered[0] if ordered[0] < 0 else ordered[-1]
        raise ValueError(f"slot {bad} is outside 0-{TOTAL_SLOTS - 1}")
    ranges: list[Range] = []
    start = 0
    for i, slot in enumerate(ordered):
        if i == 0 or slot != ordered[i - 1] + 1:
            start = slot
        if i + 1 == len(ordered) or ordered[i + 1] != slot + 1:
            ranges.append((start, slot))
    return tuple(ranges)


def slots_from_ranges(ranges: Iterable[Range]) -> tuple[int, ...]:
    """Every slot in ``ranges``, ascending and once each, e.g. for per-slot SETSLOT calls."""
    return tuple(slot for start, end in _merge(ranges) for slot in range(start, end + 1))


def _top_slots(ranges: Ranges, count: int) -> Ranges:
    """The ``count`` highest slots of ``ranges``: a donor gives from its high end, so what
    it keeps stays one contiguous block in the common case (one range per shard)."""
    taken: list[Range] = []
    for start, end in reversed(ranges):
        if count <= 0:
            break
        take = min(count, end - start + 1)
        taken.append((end - take + 1, end))
        count -= take
    return tuple(reversed(taken))


# -- values ---------------------------------------------------------------------------


def _node_ranges(node: str, items: Iterable[int | Range]) -> Ranges:
    """One primary's slots, given as slots, ranges or a mix, as merged ranges."""
    if isinstance(items, str | bytes):
        raise ValueError(f"slots of {node} must be slots or (start, end) ranges, not text")
    slots: list[int] = []
    pairs: list[Range] = []
    for item in items:
        if isinstance(item, int):
            slots.append(item)
            continue
        try:
            start, end = item
            pairs.append((int(start), int(end)))
        except (TypeError, ValueError):
            raise ValueError(f"{item!r} in the slots of {node} is not a slot or a range") from None
    try:
        return _merge([*pairs, *ranges_from_slots(slots)])
    except ValueError as exc:
        raise ValueError(f"{node}: {exc}") from None


def _normalize(ownership: OwnershipInput) -> Mapping[str, Ranges]:
    """Merged ranges per node, refusing any slot claimed by two primaries."""
    result = {str(node): _node_ranges(str(node), items) for node, items in ownership.items()}
    claims = sorted((start, end, node) for node, ranges in result.items() for start, end in ranges)
    for (_, prev_end, prev_node), (start, _, node) in pairwise(claims):
        if start <= prev_end:
            raise ValueError(f"slot {start} is owned by both {prev_node} and {node}")
    return MappingProxyType(result)


@dataclass(frozen=True)
class SlotOwnership:
    """Which slots each primary serves: node id → sorted, merged, disjoint ranges.

    Ranges rather than sets: a primary usually owns one to a few ranges, so counting and
    taking "the top N slots" cost O(ranges), not O(16384). Primaries with no slots (new
    shards) are listed with ``()``. Construction validates (ranges in bounds, no slot owned
    twice); :meth:`from_mapping` also accepts slots, frozensets or mixed input.
    """

    ranges: Mapping[str, Ranges]

    def __post_init__(self) -> None:
        object.__setattr__(self, "ranges", _normalize(self.ranges))

    @classmethod
    def from_mapping(cls, ownership: SlotOwnership | OwnershipInput) -> SlotOwnership:
        """Validated ownership from slots, ranges or both per primary (as is if already one)."""
        return ownership if isinstance(ownership, SlotOwnership) else cls(_normalize(ownership))

    def counts(self) -> dict[str, int]:
        return {node: _size(ranges) for node, ranges in self.ranges.items()}

    @property
    def assigned(self) -> int:
        """Slots owned by some primary (16384 minus the uncovered ones)."""
        return sum(self.counts().values())


@dataclass(frozen=True)
class SlotMove:
    """Slots one primary hands to another: sorted, merged ranges, one move per pair."""

    slot_ranges: Ranges
    source: str
    target: str

    @property
    def slot_count(self) -> int:
        return _size(self.slot_ranges)

    @property
    def slots(self) -> tuple[int, ...]:
        return slots_from_ranges(self.slot_ranges)


@dataclass(frozen=True)
class RebalancePlan:
    """The moves to make, with slot counts per primary before and after them.

    Moves away from drained (weight 0) primaries come first, so an executor that works in
    order frees the shards being removed as early as it can.
    """

    moves: tuple[SlotMove, ...]
    before: Mapping[str, int]
    after: Mapping[str, int]

    def __post_init__(self) -> None:
        object.__setattr__(self, "before", MappingProxyType(dict(self.before)))
        object.__setattr__(self, "after", MappingProxyType(dict(self.after)))

    @property
    def slot_count(self) -> int:
        """Slots moved in total."""
        return sum(move.slot_count for move in self.moves)

    @property
    def is_empty(self) -> bool:
        return not self.moves


# -- planning -------------------------------------------------------------------------


def _weights(nodes: Iterable[str], weights: Mapping[str, float] | None) -> dict[str, Fraction]:
    """Exact weights per primary (1 when not given), so shares never depend on float noise."""
    nodes = list(nodes)
    given = dict(weights or {})
    unknown = sorted(set(given) - set(nodes))
    if unknown:
        raise ValueError(f"weights given for unknown primaries: {', '.join(unknown)}")
    result: dict[str, Fraction] = {}
    for node in nodes:
        weight = float(given.get(node, 1.0))
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"weight of {node} must be a finite number >= 0, got {weight!r}")
        result[node] = Fraction(weight)
    if not any(result.values()):
        raise ValueError("every weight is 0: no primary would be left to hold the slots")
    return result


def _targets(counts: Mapping[str, int], weights: Mapping[str, Fraction]) -> dict[str, int]:
    """Weighted shares of the assigned slots, rounded by largest remainder.

    Ties go to a primary already above its rounded-down share: that saves a move, and it
    keeps the rounding stable once the plan is applied (so a second plan is empty).
    """
    total = sum(counts.values())
    weight_sum = sum(weights.values())
    quotas = {node: total * weight / weight_sum for node, weight in weights.items()}
    targets = {node: math.floor(quota) for node, quota in quotas.items()}
    short = total - sum(targets.values())
    order = sorted(
        quotas,
        key=lambda node: (targets[node] - quotas[node], counts[node] <= targets[node], node),
    )
    for node in order[:short]:
        targets[node] += 1
    return targets


def _split(total: int, needs: Mapping[str, int]) -> dict[str, int]:
    """``total`` split in proportion to ``needs`` (largest remainder, never above a need)."""
    need_sum = sum(needs.values())
    shares = {node: total * need // need_sum for node, need in needs.items()}
    rest = {node: total * need % need_sum for node, need in needs.items()}
    for node in sorted(needs, key=lambda node: -rest[node])[: total - sum(shares.values())]:
        shares[node] += 1
    return shares


def _hand_out(
    pool: list[tuple[str, int, int]],
    amounts: Mapping[str, int],
    moves: dict[tuple[str, str], list[Range]],
) -> None:
    """Give each receiver, in order, the next ``amount`` slots of the donated pool.

    Consecutive cuts of one pool keep each receiver's slots contiguous and make at most
    donors + receivers - 1 (source, target) pairs: few ranges, few executor round trips.
    """
    segments = deque(pool)
    for receiver, amount in amounts.items():
        while amount > 0:
            donor, start, end = segments.popleft()
            take = min(amount, end - start + 1)
            moves.setdefault((donor, receiver), []).append((start, start + take - 1))
            if start + take <= end:
                segments.appendleft((donor, start + take, end))
            amount -= take


def _first_slot(ranges: Ranges) -> int:
    return ranges[0][0] if ranges else TOTAL_SLOTS


def _moves(
    owned: SlotOwnership, targets: Mapping[str, int], drained: set[str]
) -> tuple[SlotMove, ...]:
    """Surpluses (from each donor's high end) cut into consecutive runs, one per deficit.

    Drained primaries' slots form their own pool, split over every receiver in proportion
    to its deficit; the surplus of primaries that stay then fills what is left.
    """
    counts = owned.counts()
    donated = {
        node: _top_slots(owned.ranges[node], counts[node] - targets[node])
        for node in counts
        if counts[node] > targets[node]
    }
    drained_pool: list[tuple[str, int, int]] = []
    other_pool: list[tuple[str, int, int]] = []
    for donor in sorted(donated, key=lambda node: (donated[node][0][0], node)):
        pool = drained_pool if donor in drained else other_pool
        pool.extend((donor, start, end) for start, end in donated[donor])
    receivers = sorted(
        (node for node in counts if counts[node] < targets[node]),
        key=lambda node: (_first_slot(owned.ranges[node]), node),
    )
    needs = {node: targets[node] - counts[node] for node in receivers}
    from_drained = _split(_size((start, end) for _, start, end in drained_pool), needs)
    moves: dict[tuple[str, str], list[Range]] = {}
    _hand_out(drained_pool, from_drained, moves)
    _hand_out(other_pool, {node: needs[node] - from_drained[node] for node in receivers}, moves)
    return tuple(
        SlotMove(_merge(ranges), source, target) for (source, target), ranges in moves.items()
    )


def plan_rebalance(
    ownership: SlotOwnership | OwnershipInput,
    weights: Mapping[str, float] | None = None,
    threshold: float = 0.02,
) -> RebalancePlan:
    """The fewest slot moves that bring every primary to its weighted share.

    ``ownership`` maps each primary (including empty new ones) to its slots or ranges;
    ``weights`` default to 1, and 0 drains a primary completely. Shares split the slots
    that are owned now (uncovered ones are left for ``fix``) by largest remainder. If every
    primary is within ``threshold * share`` (and drained ones hold nothing) the plan is
    empty. Otherwise each over-share primary gives exactly its surplus from the high end
    of its ranges and each under-share one receives exactly its deficit, so no slot moves
    twice or into a primary that is already over its share, and the slots moved equal
    sum(max(0, count - share)). Drained slots are spread over every receiver in proportion to
    its deficit, never piled on one. Raises ``ValueError`` on invalid input.
    """
    if not math.isfinite(threshold) or threshold < 0:
        raise ValueError(f"threshold must be a finite number >= 0, got {threshold!r}")
    owned = SlotOwnership.from_mapping(ownership)
    if not owned.ranges:
        raise ValueError("no primaries to balance")
    node_weights = _weights(owned.ranges, weights)
    before = owned.counts()
    targets = _targets(before, node_weights)
    if all(abs(before[node] - targets[node]) <= threshold * targets[node] for node in before):
        return RebalancePlan((), before, before)

    drained = {node for node, weight in node_weights.items() if weight == 0}
    return RebalancePlan(_moves(owned, targets, drained), before, targets)


# -- CLUSTER SHARDS -------------------------------------------------------------------


def ownership_from_cluster_shards(reply: Any) -> dict[str, Ranges]:
    """Primary id → slot ranges from a decoded ``CLUSTER SHARDS`` reply.

    Accepts the RESP2 flat lists Redis 7.0 sends, the dicts of RESP3 and of redis-py ≥ 8,
    and the ``(start, end)`` tuples of redis-py's cluster client, with str or bytes keys.
    Empty primaries (new shards) map to ``()``. A shard with no primary is skipped: its
    slots are uncovered as far as planning goes. Raises ``ValueError`` on a malformed reply.
    """
    slot_map = parse_cluster_shards(reply, default_host="unknown")  # only ids matter here
    owned: dict[str, list[Range]] = {}
    for shard in slot_map.shards:
        owned.setdefault(shard.primary.id, []).extend(shard.ranges)
    return {node: _merge(ranges) for node, ranges in owned.items()}
