"""Key locations for the asyncio client, from the sync :class:`~balancer.keys.KeyLocator`.

``KeyLocator`` asks the server through a synchronous callback, which an event loop
cannot serve. The asyncio client loads the ``COMMAND`` table once (awaited) and hands
``KeyLocator`` a callback that answers ``COMMAND`` from it; for anything else (``COMMAND
GETKEYS`` for commands with movable keys) the callback raises :class:`NeedsServer`, and
the client awaits that question on a node instead. Fixed key positions, the common case,
stay a dictionary lookup.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["NeedsServer", "served_command_table"]


class NeedsServer(Exception):
    """Only a server can answer: ``pieces`` are the arguments to ``COMMAND GETKEYS``."""

    def __init__(self, pieces: tuple[Any, ...]) -> None:
        super().__init__(f"COMMAND GETKEYS {pieces[:2]!r}… must be asked of a node")
        self.pieces = pieces


def served_command_table(table: Callable[[], dict[str, Any] | None]) -> Callable[..., Any]:
    """A ``KeyLocator`` callback that serves ``COMMAND`` from ``table()``."""

    def run(*args: Any) -> Any:
        loaded = table()
        if args == ("COMMAND",) and loaded is not None:
            return loaded
        if args and args[0] == "COMMAND GETKEYS":
            raise NeedsServer(tuple(args[1:]))
        raise NeedsServer(tuple(args))

    return run
