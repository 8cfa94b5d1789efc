"""Exceptions the SDK raises, each carrying what a caller needs to act on it."""

from __future__ import annotations

import redis

__all__ = ["ClusterError", "CrossSlotError", "NoHealthyEndpoint", "SlotNotCovered"]


class NoHealthyEndpoint(RuntimeError):
    """Every candidate endpoint is ejected (breaker open) or the candidate list is empty."""

    def __init__(self, message: str, endpoints: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.endpoints = endpoints


class ClusterError(redis.RedisError):
    """The cluster could not serve a command within the client's retry budget."""


class CrossSlotError(ClusterError):
    """A multi-key command whose keys hash to different slots and that cannot be split."""

    def __init__(self, command: str, slots: tuple[int, ...]) -> None:
        super().__init__(
            f"{command} keys hash to {len(slots)} different slots {list(slots[:5])}; "
            "use a hash tag like {user1}:a / {user1}:b to keep them in one slot"
        )
        self.command = command
        self.slots = slots


class SlotNotCovered(ClusterError):
    """No node serves the slot (the cluster is down or still being formed)."""

    def __init__(self, slot: int) -> None:
        super().__init__(f"slot {slot} is not served by any known node")
        self.slot = slot
