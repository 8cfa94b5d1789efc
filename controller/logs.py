"""The command line's log: a timestamp and a level on every line, JSON in a pod (one
object a line: ``ts``, ``level``, ``logger``, the event's fields) or one readable line on
a terminal, and a repeat counted, not reprinted.

A broken dependency or a dead node can make the same error happen every cycle, or
thousands of times a second in a load loop; printing each hides everything else.
:class:`CollapsingHandler` prints a warning or error once, counts identical ones (same
logger, level and text) that follow, and says how many there were — ``… (x4,801)`` — when
something else is logged, at most once a minute while the repeats go on, and on close.
Info and debug lines are never collapsed: they are events (one per migration batch, one
per decision) that readers count.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

__all__ = ["CollapsingHandler", "JsonFormatter", "TextFormatter", "formatter"]


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


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """A record's message as fields: the JSON object our event lines log, else
    ``{"event": text}``; a traceback, when there is one, as ``exc``."""
    text = record.getMessage()
    fields: dict[str, Any] = {}
    if text.startswith("{"):
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            fields = parsed
    if not fields:
        fields = {"event": text}
    return fields


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``ts`` (ISO-8601, UTC), ``level``, ``logger``, then the
    event's own fields (what a log pipeline in a pod indexes)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {"ts": _timestamp(record), "level": record.levelname.lower(),
                                "logger": record.name}  # fmt: skip
        line.update(_fields(record))
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    """One readable line: ``2026-12-06T06:05:01.123Z WARNING event key=value …``."""

    def format(self, record: logging.LogRecord) -> str:
        fields = _fields(record)
        event = fields.pop("event", None)
        head = f"{_timestamp(record)} {record.levelname:<7} "
        if event is None:  # a decision line: its target first
            event = f"decision {fields.pop('target', '')}".rstrip()
        parts = [str(event)] + [f"{k}={json.dumps(v, default=str)}" for k, v in fields.items()]
        text = head + " ".join(parts)
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def formatter(choice: str, stream: TextIO) -> logging.Formatter:
    """``json``, ``text`` or ``auto`` (text on a terminal, JSON otherwise: in a pod)."""
    if choice == "auto":
        choice = "text" if stream.isatty() else "json"
    return TextFormatter() if choice == "text" else JsonFormatter()
