"""How long a blocking command may wait on the server before it answers.

A blocking pop waits up to its own timeout before replying, so the socket must wait that
long plus the usual ``socket_timeout``; otherwise a healthy, idle queue looks like a
hung node, the pop is abandoned while the server still holds it — and the item it later
takes is lost to a reply nobody reads. :func:`block_seconds` reads the block time from
the command's arguments (pure, no I/O).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from balancer.core.slots import as_text

__all__ = ["BLOCKING_COMMANDS", "block_seconds"]

# Block time (seconds) is the last argument.
_LAST_SECONDS = frozenset({"BLPOP", "BRPOP", "BZPOPMIN", "BZPOPMAX", "BLMOVE", "BRPOPLPUSH"})
# Block time (seconds) is the first argument.
_FIRST_SECONDS = frozenset({"BLMPOP", "BZMPOP"})
# ``BLOCK milliseconds`` option.
_BLOCK_OPTION = frozenset({"XREAD", "XREADGROUP"})
# Block time (milliseconds) is the last argument: waiting for replicas (or the AOF).
_LAST_MILLISECONDS = frozenset({"WAIT", "WAITAOF"})
BLOCKING_COMMANDS = _LAST_SECONDS | _FIRST_SECONDS | _BLOCK_OPTION | _LAST_MILLISECONDS


def block_seconds(args: Sequence[Any]) -> float | None:
    """Seconds the server may block before answering ``args``: ``None`` when the command
    does not block, ``math.inf`` for "block forever" (0), else the block time."""
    name = as_text(args[0]).upper()
    try:
        if name in _LAST_SECONDS:
            value = float(as_text(args[-1]))
        elif name in _FIRST_SECONDS:
            value = float(as_text(args[1]))
        elif name in _LAST_MILLISECONDS:
            value = float(as_text(args[-1])) / 1000.0
        elif name in _BLOCK_OPTION:
            upper = [as_text(a).upper() for a in args[1:]]
            if "BLOCK" not in upper:
                return None
            value = float(as_text(args[upper.index("BLOCK") + 2])) / 1000.0
        else:
            return None
    except (IndexError, ValueError):
        return None  # malformed: the server will say so
    return math.inf if value == 0 else max(0.0, value)
