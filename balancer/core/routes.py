"""Where commands go: per-shard routes over the slot map, and what the client counts.

Both clients hold the same picture of the cluster; this module is that picture's rules,
free of I/O (the drivers read ``CLUSTER SHARDS`` and hand the reply over).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ClientStats"]


@dataclass
class ClientStats:
    """Counters of what the client absorbed on the caller's behalf (approximate under
    concurrency: plain integer increments)."""

    moved: int = 0
    ask: int = 0
    tryagain: int = 0
    clusterdown: int = 0
    node_errors: int = 0
    failovers: int = 0  # reads moved to another node of the shard after a node error
    refreshes: int = 0
    refresh_attempts: int = 0  # including failed ones
    unknown_outcomes: int = 0  # writes whose reply was lost: raised, never re-sent
