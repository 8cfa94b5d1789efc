"""Exceptions the SDK raises, each carrying what a caller needs to act on it."""

from __future__ import annotations

import redis
from redis.exceptions import RedisClusterException, SlotNotCoveredError

__all__ = [
    "ClusterError",
    "CrossSlotError",
    "NoHealthyEndpoint",
    "NodeUnavailable",
    "NotSentError",
    "OutcomeUnknown",
    "SlotNotCovered",
    "echoed",
    "never_sent",
    "refused",
]


class NoHealthyEndpoint(RuntimeError):
    """Every candidate endpoint is ejected (breaker open) or the candidate list is empty."""

    def __init__(self, message: str, endpoints: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.endpoints = endpoints


class ClusterError(redis.exceptions.ClusterError):
    """The cluster could not serve a command within the client's retry budget (a
    ``redis.exceptions.ClusterError``, as RedisCluster raises when its retries run out)."""


class CrossSlotError(ClusterError, RedisClusterException):
    """A multi-key command whose keys hash to different slots and that cannot be split
    (also a ``redis.exceptions.RedisClusterException``, as RedisCluster raises)."""

    def __init__(self, command: str, slots: tuple[int, ...]) -> None:
        super().__init__(
            f"{command} keys hash to {len(slots)} different slots {list(slots[:5])}; "
            "use a hash tag like {user1}:a / {user1}:b to keep them in one slot"
        )
        self.command = command
        self.slots = slots


class SlotNotCovered(ClusterError, SlotNotCoveredError):
    """No node serves the slot (the cluster is down or still being formed); also
    redis-py's ``SlotNotCoveredError``."""

    def __init__(self, slot: int) -> None:
        super().__init__(f"slot {slot} is not served by any known node")
        self.slot = slot


class NotSentError(redis.ConnectionError):
    """The command certainly never left this process: the connection could not be made,
    every connection to the node is in use, or the node's breaker is open. Safe to retry
    anything, writes included."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"{address}: {reason} (command not sent)")
        self.address = address


class NodeUnavailable(NotSentError):
    """The node's circuit breaker is open: the command was refused here, not sent."""


class OutcomeUnknown(redis.ConnectionError, redis.TimeoutError):
    """A write may or may not have been applied: it was sent (or partly sent) and its
    reply never came (timeout, connection lost). It is not re-sent, because a second
    ``INCR`` or ``LPUSH`` would apply twice and a second ``SET`` could overwrite a newer
    value. Subclasses both ``redis.ConnectionError`` and ``redis.TimeoutError`` so
    existing handlers of either still catch it; ``__cause__`` is the network error."""

    def __init__(self, command: str, address: str, cause: BaseException) -> None:
        super().__init__(
            f"{command} to {address}: outcome unknown, the command may have been applied "
            f"({type(cause).__name__}: {cause}); not retried"
        )
        self.command = command
        self.address = address


def refused(exc: BaseException) -> bool:
    """Whether ``exc`` is (or was caused by) a refused connection: the node is down, and
    trying costs nothing."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 8:
        if isinstance(current, ConnectionRefusedError):
            return True
        seen += 1
        current = current.__cause__ or current.__context__
    return False


def never_sent(exc: BaseException) -> bool:
    """Whether ``exc`` proves its command never reached a server: our own
    :class:`NotSentError`, or a refused / failed connect (redis-py raises those from
    inside ``connect()``, so the ``OSError`` is in the exception's context)."""
    if isinstance(exc, NotSentError):
        return True
    if isinstance(exc, OutcomeUnknown):
        return False
    return refused(exc)


def echoed(exc: BaseException) -> bool:
    """Whether ``exc`` repeats a failure of a shared connection already reported to
    another caller (the asyncio client's multiplexed connections mark the copies): one
    broken connection is one failure of its node, however many commands rode on it."""
    return bool(getattr(exc, "_slotpilot_echo", False))
