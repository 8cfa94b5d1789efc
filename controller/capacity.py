"""The capacity gate of a scale-in: can the surviving primaries hold the moved data?

Pure arithmetic on ``INFO memory`` facts (:func:`check_scale_in_capacity`) plus the one
read that gathers them (:func:`read_memory_facts`); :func:`controller.scaling.scale_shards`
refuses with gate ``scale_in_capacity`` when the answer is no.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from balancer.slots import as_text
from controller.probe import ClusterNodeEntry
from controller.topology import Connect

__all__ = ["MemoryFacts", "check_scale_in_capacity", "read_memory_facts"]


@dataclass(frozen=True)
class MemoryFacts:
    """One primary's memory as ``INFO memory`` reports it (``maxmemory`` 0 = no limit)."""

    node_id: str
    used_bytes: int
    maxmemory: int
    policy: str


def check_scale_in_capacity(
    keepers: Sequence[MemoryFacts],
    leavers: Sequence[MemoryFacts],
    max_share: float = 0.8,
    capacity_bytes: int | None = None,
) -> list[str]:
    """Why the survivors could not take the leavers' data (empty list: they can).

    The leavers' ``used_memory`` is spread evenly over the keepers (that is what the drain
    does); each keeper must then stay at or below ``max_share`` of ``capacity_bytes``, or
    of its own ``maxmemory`` when no capacity is configured. Without any limit there is
    nothing to exceed, except under an ``allkeys-*`` policy: a cache-like cluster there
    silently evicts instead of refusing writes, so its headroom must be shown."""
    if not keepers:
        return ["no surviving primary"]
    moved = sum(f.used_bytes for f in leavers)
    share = -(-moved // len(keepers))  # ceil
    reasons = []
    for keeper in keepers:
        limit = capacity_bytes or keeper.maxmemory
        evicting = keeper.policy.startswith("allkeys-")
        if not limit:
            if evicting:
                reasons.append(
                    f"{keeper.node_id[:8]}: {keeper.policy} with no memory limit to check "
                    "headroom against (set shards.capacity.memory_bytes)"
                )
            continue
        after = keeper.used_bytes + share
        if after > max_share * limit:
            evicts = f"; {keeper.policy} would evict keys" if evicting else ""
            reasons.append(
                f"{keeper.node_id[:8]} would use {after} bytes > {max_share:g} of {limit}{evicts}"
            )
    return reasons


def read_memory_facts(connect: Connect, entries: Sequence[ClusterNodeEntry]) -> list[MemoryFacts]:
    """``INFO memory`` of each entry (raises on a node that does not answer: no facts, no
    scale-in)."""
    facts = []
    for entry in entries:
        info = connect(entry.address).info("memory")
        facts.append(MemoryFacts(entry.node_id, int(info.get("used_memory", 0)),
                                 int(info.get("maxmemory", 0)),
                                 as_text(info.get("maxmemory_policy", "noeviction"))))  # fmt: skip
    return facts
