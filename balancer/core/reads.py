"""Which nodes of a shard serve its reads, and with what weight: one pure rule for the
sync and the asyncio client."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from balancer.core.endpoint import Endpoint
from balancer.core.slots import ShardInfo

__all__ = ["read_endpoints"]


def read_endpoints(
    shard: ShardInfo,
    read_from: str,
    stale: Collection[str],
    routing: Mapping[str, tuple[str, float]],
) -> list[Endpoint]:
    """The shard's readers for ``read_from`` ``replicas`` or ``any`` (none for
    ``primary``): online replicas that are not stale, the primary too for ``any``,
    weighted by the controller's routing table; draining and down nodes (weight 0) get
    no reads."""
    if read_from == "primary":
        return []
    nodes = [n for n in shard.replicas if n.online and n.address not in stale]
    if read_from == "any":
        nodes.insert(0, shard.primary)
    weights = {n.address: routing.get(n.address, ("up", 1.0))[1] for n in nodes}
    return [Endpoint(n.address, weight=weights[n.address]) for n in nodes if weights[n.address] > 0]
