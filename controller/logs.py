"""The command line's log handler: one line per message, a repeat counted, not reprinted.

A broken dependency or a dead node can make the same error happen every cycle, or
thousands of times a second in a load loop; printing each hides everything else.
:class:`CollapsingHandler` prints a warning or error once, counts identical ones (same
logger, level and text) that follow, and says how many there were — ``… (x4,801)`` — when
something else is logged, at most once a minute while the repeats go on, and on close.
Info and debug lines are never collapsed: they are events (one per migration batch, one
per decision) that readers count.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["CollapsingHandler"]


class CollapsingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that collapses runs of identical records into one line + count."""

    def __init__(
        self,
        stream: TextIO | None = None,
        every: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(stream)
        self.every = every
        self._clock = clock
        self._last: tuple[str, int, str] | None = None
        self._repeats = 0
        self._told_at = 0.0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            key = (record.name, record.levelno, record.getMessage())
        except Exception:  # an unformattable record: let the base class report it
            super().emit(record)
            return
        now = self._clock()
        if key == self._last and record.levelno >= logging.WARNING:
            self._repeats += 1
            if now - self._told_at >= self.every:
                self._tell(so_far=True)
                self._told_at = now
            return
        self._tell()
        self._last, self._repeats, self._told_at = key, 0, now
        super().emit(record)

    def _tell(self, so_far: bool = False) -> None:
        if self._repeats and self._last is not None:
            text = self._last[2].splitlines()[0] if self._last[2] else ""
            text = text if len(text) <= 120 else text[:117] + "..."
            what = "so far" if so_far else "in all"
            self.stream.write(f"… the line above repeated (x{self._repeats:,} {what}): {text}\n")
            self.flush()
            self._repeats = 0

    def close(self) -> None:
        self._tell()
        super().close()
