"""Slot math and the cluster's slot map, as plain values.

``key → slot`` is ``redis.crc.key_slot`` (CRC16 with hash tags); ``slot → shard`` is a
16384-entry table built from ``CLUSTER SHARDS``. The parsing accepts both RESP2 (flat
key/value lists) and RESP3 (maps) replies, with bytes or str.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from redis.crc import key_slot

__all__ = [
    "TOTAL_SLOTS",
    "as_text",
    "ShardInfo",
    "ShardNode",
    "SlotMap",
    "key_slot",
    "parse_cluster_shards",
]

TOTAL_SLOTS = 16384


@dataclass(frozen=True)
class ShardNode:
    """One node as ``CLUSTER SHARDS`` reports it."""

    id: str
    address: str
    role: str  # "primary" or "replica"
    health: str  # "online", "failed" or "loading"
    replication_offset: int = 0

    @property
    def online(self) -> bool:
        return self.health == "online"


@dataclass(frozen=True)
class ShardInfo:
    """A primary, its replicas and the slot ranges it serves."""

    primary: ShardNode
    replicas: tuple[ShardNode, ...]
    ranges: tuple[tuple[int, int], ...]

    @property
    def slot_count(self) -> int:
        return sum(end - start + 1 for start, end in self.ranges)


@dataclass(frozen=True)
class SlotMap:
    """The cluster's shards and, for each slot, the index of the shard serving it."""

    shards: tuple[ShardInfo, ...]
    owner: tuple[int, ...]  # slot -> index into shards, -1 when uncovered

    @classmethod
    def from_shards(cls, shards: Iterable[ShardInfo]) -> SlotMap:
        shard_list = tuple(shards)
        owner = [-1] * TOTAL_SLOTS
        for index, shard in enumerate(shard_list):
            for start, end in shard.ranges:
                owner[start : end + 1] = [index] * (end - start + 1)
        return cls(shard_list, tuple(owner))

    def shard_for_slot(self, slot: int) -> ShardInfo | None:
        index = self.owner[slot]
        return self.shards[index] if index >= 0 else None

    @property
    def uncovered(self) -> int:
        return sum(1 for index in self.owner if index < 0)

    def addresses(self) -> set[str]:
        return {n.address for s in self.shards for n in (s.primary, *s.replicas)}


def as_text(value: Any) -> str:
    """A RESP value as text: bytes decoded as UTF-8, anything else through ``str``."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _as_dict(item: Any) -> dict[str, Any]:
    """RESP3 map or RESP2 flat [k1, v1, k2, v2, ...] list -> dict with str keys."""
    if isinstance(item, Mapping):
        return {as_text(k): v for k, v in item.items()}
    if isinstance(item, list | tuple) and len(item) % 2 == 0:
        return {as_text(item[i]): item[i + 1] for i in range(0, len(item), 2)}
    raise ValueError(f"unexpected CLUSTER SHARDS entry: {item!r:.200}")


def _node(raw: Any, tls: bool, default_host: str) -> ShardNode:
    fields = _as_dict(raw)
    host = as_text(fields.get("endpoint") or "")
    if host in ("", "?"):
        host = as_text(fields.get("ip") or "")
    if host in ("", "?"):
        host = as_text(fields.get("hostname") or "")
    if host in ("", "?"):
        host = default_host  # a lone node that never saw a MEET does not know its IP
    if not host:
        raise ValueError(f"node {as_text(fields.get('id'))} has no address in CLUSTER SHARDS")
    port_field = "tls-port" if tls and "tls-port" in fields else "port"
    if port_field not in fields and "tls-port" in fields:
        port_field = "tls-port"
    port = int(fields[port_field])
    role = as_text(fields["role"])
    return ShardNode(
        id=as_text(fields["id"]),
        address=f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        role="primary" if role in ("master", "primary") else "replica",
        health=as_text(fields.get("health", "online")),
        replication_offset=int(fields.get("replication-offset", 0)),
    )


def _slot_ranges(raw: Any) -> tuple[tuple[int, int], ...]:
    """Slots as the server sends them (flat ``[start, end, ...]``) or as redis-py's
    cluster client reshapes them (``[(start, end), ...]``)."""
    try:
        items = list(raw)
        if items and all(isinstance(item, list | tuple) for item in items):
            return tuple((int(start), int(end)) for start, end in items)
        flat = [int(x) for x in items]
    except (TypeError, ValueError):
        raise ValueError(f"malformed slot list in CLUSTER SHARDS: {raw!r:.200}") from None
    if len(flat) % 2:
        raise ValueError(f"odd slot list in CLUSTER SHARDS: {flat}")
    return tuple((flat[i], flat[i + 1]) for i in range(0, len(flat), 2))


def parse_cluster_shards(reply: Any, tls: bool = False, default_host: str = "") -> SlotMap:
    """Build a :class:`SlotMap` from a raw ``CLUSTER SHARDS`` reply.

    A shard whose primary is missing (all nodes failed and none promoted yet) keeps its
    slots pointing at its last known primary, so callers see connection errors there
    rather than a silently uncovered slot. ``default_host`` (the host the reply came
    from) stands in for an empty address. Raises ``ValueError`` on a malformed reply.
    """
    if not isinstance(reply, list | tuple):
        raise ValueError(f"CLUSTER SHARDS reply is not a list: {reply!r:.200}")
    shards: list[ShardInfo] = []
    for entry in reply:
        fields = _as_dict(entry)
        ranges = _slot_ranges(fields.get("slots") or [])
        for start, end in ranges:
            if not 0 <= start <= end < TOTAL_SLOTS:
                raise ValueError(f"slot range {start}-{end} out of bounds")
        try:
            nodes = [_node(n, tls, default_host) for n in fields.get("nodes", [])]
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed node in CLUSTER SHARDS: missing {exc}") from None
        primaries = [n for n in nodes if n.role == "primary"]
        if not primaries:
            continue  # a shard of only failed replicas serves nothing
        primary = max(primaries, key=lambda n: (n.online, n.replication_offset))
        replicas = tuple(n for n in nodes if n is not primary and n.role == "replica")
        shards.append(ShardInfo(primary, replicas, ranges))
    return SlotMap.from_shards(shards)
