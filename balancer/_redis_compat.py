"""The one module that touches redis-py internals, checked when it is imported.

The asyncio client's automatic pipelining writes many commands to one connection
without awaiting each write, and closes a connection synchronously inside a cancelled
task. redis-py's asyncio ``Connection`` offers neither publicly, so this module reaches
for its stream pair (``_reader``/``_writer``) and its synchronous ``_close()``. The sync
client checks an idle connection for a close by the server before every write; redis-py's
``can_read()`` does that with three system calls and an exception, so this module polls
the sync connection's socket (``_sock``) once instead. Nothing else in slotpilot imports
a private redis-py name (an import-linter contract says so).

Importing this module checks that those members exist on the installed redis-py and,
if one is missing, raises :class:`RedisPyIncompatible` naming the installed version and
the supported range — one clear error at import, never an ``AttributeError`` deep inside
a call.
"""

from __future__ import annotations

import asyncio
import select
import ssl
from importlib.metadata import PackageNotFoundError, version

import redis
import redis.connection
from redis.asyncio.connection import AbstractConnection, Connection

__all__ = [
    "SUPPORTED_REDIS_PY",
    "RedisPyIncompatible",
    "close_now",
    "quiet",
    "streams",
    "supports",
]

# Keep in step with pyproject's ``redis`` requirement (a unit test compares them).
SUPPORTED_REDIS_PY = ">=8.0,<9"


class RedisPyIncompatible(ImportError):
    """The installed redis-py lacks what slotpilot's asyncio client drives."""

    def __init__(self, missing: list[str]) -> None:
        try:
            installed = version("redis")
        except PackageNotFoundError:  # pragma: no cover - redis was just imported
            installed = getattr(redis, "__version__", "unknown")
        super().__init__(
            f"redis-py {installed} is not supported by slotpilot (supported: redis"
            f"{SUPPORTED_REDIS_PY}): its asyncio Connection lacks {', '.join(missing)}. "
            f"Install a supported release, e.g. pip install 'redis{SUPPORTED_REDIS_PY}'"
        )
        self.installed = installed
        self.missing = tuple(missing)


def _release(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("."):
        digits = "".join(c for c in piece if c.isdigit()) if piece[:1].isdigit() else ""
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def supports(installed: str) -> bool:
    """Whether redis-py ``installed`` (e.g. ``8.2.0``) lies in :data:`SUPPORTED_REDIS_PY`
    (a ``>=LOW,<HIGH`` range of release numbers)."""
    version = _release(installed)
    for bound in SUPPORTED_REDIS_PY.split(","):
        if bound.startswith(">=") and version < _release(bound[2:]):
            return False
        if bound.startswith("<") and version >= _release(bound[1:]):
            return False
    return bool(version)


def missing_members() -> list[str]:
    """The private members this module uses that the installed redis-py lacks."""
    probe = Connection()  # no I/O until connect()
    missing = [f"Connection.{name}" for name in ("_reader", "_writer") if not hasattr(probe, name)]
    if not callable(getattr(probe, "_close", None)):
        missing.append("Connection._close()")
    if not hasattr(redis.connection.Connection(), "_sock"):
        missing.append("redis.connection.Connection._sock")
    return missing


def streams(
    conn: AbstractConnection,
) -> tuple[asyncio.StreamReader | None, asyncio.StreamWriter | None]:
    """The connection's stream pair (None before it connected or after it closed)."""
    return conn._reader, conn._writer


def quiet(conn: redis.connection.AbstractConnection) -> bool | None:
    """Whether a connected sync connection's socket has nothing to read (no close by the
    server, no stray bytes), asked with one ``poll(2)`` that does not wait; None when it
    cannot be told this way (not connected; TLS, whose own records may be pending)."""
    sock = getattr(conn, "_sock", None)
    if sock is None or isinstance(sock, ssl.SSLSocket):
        return None
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return not poller.poll(0)


def close_now(conn: AbstractConnection) -> None:
    """Close without awaiting (safe inside a cancelled task)."""
    conn._close()


_missing = missing_members()
if _missing:
    raise RedisPyIncompatible(_missing)
