"""One actor per cluster: a lease held in the cluster itself.

Two controllers (or a controller and a person running ``slotpilot scale``) acting on one
cluster at once add nodes twice and move the same slots in parallel. The lease is one
key in the cluster, ``SET key value NX PX ttl``, whose value names the holder and
carries a random token; only the holder of that token can extend (compare-and-extend)
or delete it (compare-and-delete), both as Lua scripts so the check and the write are
one step on the server. A holder that dies stops renewing, and the key expires after
its TTL, so another process takes over without anyone cleaning up. Being a key in the
cluster, it works across hosts and platforms.

The client is anything with redis-py's ``set``/``eval`` (``redis.RedisCluster``, our
:class:`balancer.ClusterClient`, a plain ``redis.Redis`` to the key's primary).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any

__all__ = ["ClusterLease", "LeaseHeld", "LeaseState"]

log = logging.getLogger("slotpilot.lease")

# Extend only a lease that is still ours; 1 when extended, 0 when lost.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
# Delete only a lease that is still ours.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
# Read the value and its remaining time in one step (both or neither).
_READ = "return {redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1])}"


class LeaseHeld(Exception):
    """Another process holds the cluster's lease: who, and for how long at most."""

    def __init__(self, holder: str, expires_in: float) -> None:
        self.holder = holder
        self.expires_in = expires_in
        super().__init__(f"cluster is managed by {holder} (lease expires in {expires_in:.0f} s)")


@dataclass(frozen=True)
class LeaseState:
    """What one attempt to hold the lease found: whether we hold it, and who does."""

    holding: bool = False
    holder: str | None = None
    expires_in: float | None = None  # seconds left of someone else's lease


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _owner_of(value: str) -> str:
    """The holder named by a stored lease value (the raw text if it is not ours)."""
    try:
        record = json.loads(value)
    except ValueError:
        return value
    owner = record.get("owner") if isinstance(record, dict) else None
    return owner if isinstance(owner, str) else value


class ClusterLease:
    """The lease on one cluster for one owner; see the module docstring.

    ``held`` is local knowledge: True while the last successful acquire or renew is
    younger than the TTL (minus a safety margin) and the lease was not found lost.
    Act only while it is True.
    """

    def __init__(
        self,
        client: Any,
        owner: str | None = None,
        ttl_seconds: float = 15.0,
        key: str = "{slotpilot}:lease",
    ) -> None:
        if not ttl_seconds > 0:
            raise ValueError(f"ttl_seconds must be > 0, got {ttl_seconds!r}")
        self.client = client
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}"
        self.ttl_seconds = float(ttl_seconds)
        self.key = key
        self._token = secrets.token_hex(12)
        self._value = json.dumps({"owner": self.owner, "token": self._token}, sort_keys=True)
        self._valid_until = 0.0  # monotonic; 0: not held
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost = False  # set when a renewal found someone else's lease (or none)

    @property
    def _ttl_ms(self) -> int:
        return max(1, int(self.ttl_seconds * 1000))

    @property
    def held(self) -> bool:
        """Whether this process may act: confirmed less than ~90 % of a TTL ago."""
        with self._lock:
            return time.monotonic() < self._valid_until

    def _confirmed(self, at: float) -> None:
        with self._lock:
            self._valid_until = at + self.ttl_seconds * 0.9
            self.lost = False

    def _forget(self) -> None:
        with self._lock:
            self._valid_until = 0.0

    def acquire(self) -> None:
        """Take the lease, or extend it if this instance holds it already.

        Raises :class:`LeaseHeld` naming the holder when another process holds it;
        connection errors propagate (nothing is known then)."""
        started = time.monotonic()
        if self.client.set(self.key, self._value, nx=True, px=self._ttl_ms):
            self._confirmed(started)
            return
        if self.renew():  # ours already (re-entrant, or a SET whose reply was lost)
            return
        value, pttl = self._read()
        if value is None:  # expired between the two steps: try once more
            if self.client.set(self.key, self._value, nx=True, px=self._ttl_ms):
                self._confirmed(started)
                return
            value, pttl = self._read()
        raise LeaseHeld(_owner_of(value or "unknown"), max(0.0, pttl / 1000.0))

    def hold(self) -> LeaseState:
        """Renew the lease if this instance holds it, else try to take it: the one call
        a periodic loop makes. Connection errors propagate (nothing is known then)."""
        try:
            if not (self.held and self.renew()):
                self.acquire()
        except LeaseHeld as exc:
            return LeaseState(False, exc.holder, exc.expires_in)
        return LeaseState(True, self.owner)

    def still_held(self) -> bool:
        """True while the lease is ours, renewing it first when less than half of a TTL
        of confirmed holding is left: the check to make before each step of a long
        change (the periodic renewal may be late, or not running at all)."""
        with self._lock:
            left = self._valid_until - time.monotonic()
        if left > self.ttl_seconds / 2:
            return True
        try:
            return self.renew()
        except Exception as exc:  # unknown: act only while the lease is surely ours
            log.warning("lease %s not renewed: %s", self.key, exc)
            return left > 0

    def renew(self) -> bool:
        """Extend the lease if it is still ours; False when it was lost or taken over."""
        started = time.monotonic()
        extended = self.client.eval(_RENEW, 1, self.key, self._value, self._ttl_ms)
        if int(extended or 0) == 1:
            self._confirmed(started)
            return True
        self._forget()
        return False

    def release(self) -> None:
        """Give the lease up now; never deletes a lease that someone else holds."""
        self._forget()
        self.client.eval(_RELEASE, 1, self.key, self._value)

    def holder(self) -> str | None:
        """Who holds the lease now (the owner text), or None when nobody does."""
        value, _ = self._read()
        return None if value is None else _owner_of(value)

    def _read(self) -> tuple[str | None, float]:
        reply = self.client.eval(_READ, 1, self.key)
        # Lua turns a missing value (nil) into false, and ends the array there.
        value = _text(reply[0]) if reply and reply[0] not in (None, False, 0) else None
        pttl = float(reply[1]) if reply and len(reply) > 1 else 0.0
        return value, pttl

    # -- holding for the length of a command ---------------------------------------------

    def __enter__(self) -> ClusterLease:
        self.acquire()
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._renew_loop, name="slotpilot-lease", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.ttl_seconds)
            self._thread = None
        try:
            self.release()
        except Exception as error:  # the key expires on its own; never mask exc
            log.warning("lease %s not released: %s", self.key, error)

    def _renew_loop(self) -> None:
        """Renew every TTL/3; a failed renewal is logged and tried again next time."""
        while not self._stop.wait(self.ttl_seconds / 3):
            try:
                if not self.renew():
                    self.lost = True
                    log.error("lease %s lost (holder now: %s)", self.key, self._holder_quiet())
            except Exception as error:  # unreachable for a moment: try again
                log.warning("lease %s not renewed: %s", self.key, error)

    def _holder_quiet(self) -> str | None:
        try:
            return self.holder()
        except Exception:
            return None
