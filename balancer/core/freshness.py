"""Which replicas are too far behind their primary to serve reads.

A replica whose link to its primary is down, or that has heard nothing from it for
longer than a bound (``master_last_io_seconds_ago``: a hung primary, a stalled link),
serves data of unknown age. :func:`replica_is_fresh` decides from one ``INFO
replication`` reply; :class:`ReplicaWatch` asks every replica in the background and
reports the stale set, so choosing a reader stays a table lookup. A replica that does
not answer at all is the breakers' business, not this module's.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["ReplicaWatch", "info_fields", "replica_is_fresh"]

log = logging.getLogger("slotpilot.balancer")


def info_fields(reply: Any) -> dict[str, str]:
    """An ``INFO`` reply's ``field:value`` lines as text (sections and blank lines
    skipped; a value keeps any ``:`` or ``,`` it holds)."""
    text = reply.decode() if isinstance(reply, bytes | bytearray) else str(reply)
    fields: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep and not line.startswith("#"):
            fields[name.strip()] = value.strip()
    return fields


def replica_is_fresh(info: Mapping[str, Any], max_lag_seconds: float) -> bool | None:
    """True/False from a replica's parsed ``INFO replication``; None when the reply
    says nothing usable (not a replica, fields missing): unknown is not stale."""
    if info.get("role") not in ("slave", "replica"):
        return None
    link = info.get("master_link_status")
    if link is None:
        return None
    if link != "up":
        return False
    try:
        last_io = float(info["master_last_io_seconds_ago"])
    except (KeyError, TypeError, ValueError):
        return None
    return last_io <= max_lag_seconds


class ReplicaWatch:
    """Every ``interval`` seconds, ask each address from ``replicas()`` for ``INFO
    replication`` with ``run(address)`` and call ``changed(stale)`` when the set of
    stale replicas changes. Never raises out of its thread."""

    def __init__(
        self,
        replicas: Callable[[], Iterable[str]],
        run: Callable[[str], Any],
        changed: Callable[[frozenset[str]], None],
        max_lag_seconds: float,
        interval: float = 1.0,
    ) -> None:
        if interval <= 0 or max_lag_seconds < 0:
            raise ValueError("replica check interval must be > 0 and max lag >= 0")
        self.max_lag_seconds = max_lag_seconds
        self.interval = interval
        self._replicas = replicas
        self._run = run
        self._changed = changed
        self.stale: frozenset[str] = frozenset()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> frozenset[str]:
        """One round over every replica; returns (and publishes) the stale set."""
        stale: set[str] = set()
        for address in list(self._replicas()):
            try:
                fresh = replica_is_fresh(info_fields(self._run(address)), self.max_lag_seconds)
            except Exception:  # a dead or odd node: the breakers handle it
                continue
            if fresh is False:
                stale.add(address)
        result = frozenset(stale)
        if result != self.stale:
            if result - self.stale:
                log.warning("replicas too far behind, no reads: %s", sorted(result - self.stale))
            self.stale = result
            self._changed(result)
        return result

    def start(self) -> ReplicaWatch:
        self._thread = threading.Thread(target=self._loop, name="slotpilot-replicas", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception:  # never let the watch thread die
                log.exception("replica freshness check failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
