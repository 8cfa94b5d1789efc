"""Follow the controller's routing table (``GET /v1/routing``) in the background.

A daemon thread polls with ``If-None-Match``, so an unchanged table costs one 304. A
failed poll keeps the last good table (the controller being away must not change how
clients route) and is retried at the next interval.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["RoutingFollower"]

log = logging.getLogger("slotpilot.balancer")


class RoutingFollower:
    """Polls ``url`` every ``interval`` seconds and calls ``apply(table)`` on changes."""

    def __init__(
        self,
        url: str,
        apply: Callable[[Mapping[str, Any]], None],
        interval: float = 5.0,
        timeout: float = 2.0,
    ) -> None:
        if interval <= 0:
            raise ValueError("routing interval must be > 0")
        self.url = url
        self.interval = interval
        self.timeout = timeout
        self._apply = apply
        self._etag: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.polls = 0
        self.not_modified = 0
        self.errors = 0
        self.version: int | None = None

    def poll(self) -> bool:
        """One conditional GET; True when a new table was applied. Never raises."""
        self.polls += 1
        request = urllib.request.Request(self.url, headers={"Accept": "application/json"})
        if self._etag:
            request.add_header("If-None-Match", self._etag)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                table = json.loads(response.read())
                etag = response.headers.get("ETag")
            if not isinstance(table, dict) or not isinstance(table.get("nodes"), list):
                raise ValueError("routing table has no 'nodes' list")
            self._apply(table)
        except urllib.error.HTTPError as exc:
            if exc.code == 304:
                self.not_modified += 1
                return False
            self.errors += 1
            log.warning("routing table %s: HTTP %s", self.url, exc.code)
            return False
        except Exception as exc:  # a malformed table or a failing apply: keep the last one
            self.errors += 1
            log.warning("routing table %s: %s", self.url, exc)
            return False
        self._etag = etag
        self.version = table.get("version")
        return True

    def start(self) -> RoutingFollower:
        self.poll()
        self._thread = threading.Thread(target=self._run, name="slotpilot-routing", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll()
            except Exception:  # poll() never raises; this thread must not die if it does
                log.exception("routing table poll failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout + 1)
