"""What the controller meant to do, written down before it acts.

A controller that is killed in the middle of a scale-in and restarted must finish the
scale-in, not read the half-drained cluster afresh and refill the leaving primary; and a
restarted controller must not forget its cooldown clocks and scale again at once. So
before any shard change the purpose is written down (scale-out to N, or scale-in to N
with the addresses of the nodes that drain), the record is cleared when the change
ends, and the cooldown clocks are kept next to it.

The record is one small JSON object with wall-clock times (a monotonic clock means
nothing to another process), so the same text fits a file on the local platform and a
Kubernetes annotation on the workload. :class:`IntentFile` is the local store: an atomic
replace of a 0600 file, so a crash leaves either the old or the new record.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

__all__ = [
    "INTENT_VERSION",
    "ChangeKind",
    "IntentConflict",
    "IntentError",
    "IntentFile",
    "IntentRecord",
    "IntentStore",
    "PendingChange",
    "intent_path",
    "shift_clock",
]

INTENT_VERSION = 1
ChangeKind = Literal["scale_out", "scale_in", "rebalance"]


class IntentError(ValueError):
    """The stored record cannot be read (not JSON, wrong shape, newer version)."""


class IntentConflict(IntentError):
    """The record changed since this controller read it (another controller wrote it):
    nothing was written; read it again and decide again."""


@dataclass(frozen=True)
class PendingChange:
    """A shard change that was started and has not ended: its purpose, not its steps."""

    kind: ChangeKind
    from_shards: int
    to_shards: int
    started_at: float  # wall clock (time.time())
    draining: tuple[str, ...] = ()  # addresses that give their slots away (scale-in)
    attempts: int = 1  # how many times it was started (resumes included)


@dataclass(frozen=True)
class IntentRecord:
    """Cooldown clocks (wall clock, None: never) and the change in flight, if any."""

    last_up_at: float | None = None
    last_down_at: float | None = None
    change: PendingChange | None = None
    holder: str | None = None  # who wrote it (the lease owner)
    version: int = field(default=INTENT_VERSION)

    def to_json(self) -> str:
        """Compact, key-sorted JSON (fits an annotation value)."""
        data: dict[str, Any] = {
            "version": self.version,
            "holder": self.holder,
            "last_up_at": self.last_up_at,
            "last_down_at": self.last_down_at,
            "change": None,
        }
        if self.change is not None:
            c = self.change
            data["change"] = {
                "kind": c.kind, "from_shards": c.from_shards, "to_shards": c.to_shards,
                "started_at": c.started_at, "draining": list(c.draining), "attempts": c.attempts,
            }  # fmt: skip
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> IntentRecord:
        """Parse a stored record; :class:`IntentError` says what is wrong with it."""
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise IntentError("intent record is not a JSON object")
            version = int(data.get("version", 0))
            if version != INTENT_VERSION:
                raise IntentError(f"intent record version {version}, expected {INTENT_VERSION}")
            raw = data.get("change")
            change = None
            if raw is not None:
                if raw["kind"] not in ("scale_out", "scale_in", "rebalance"):
                    raise IntentError(f"intent change.kind {raw['kind']!r} unknown")
                change = PendingChange(
                    kind=raw["kind"], from_shards=int(raw["from_shards"]),
                    to_shards=int(raw["to_shards"]), started_at=float(raw["started_at"]),
                    draining=tuple(str(a) for a in raw.get("draining", ())),
                    attempts=int(raw.get("attempts", 1)),
                )  # fmt: skip
            return cls(
                last_up_at=_time(data.get("last_up_at")),
                last_down_at=_time(data.get("last_down_at")),
                change=change,
                holder=data.get("holder"),
                version=version,
            )
        except IntentError:
            raise
        except (ValueError, KeyError, TypeError) as exc:
            raise IntentError(f"malformed intent record: {exc!r}") from None


def _time(value: Any) -> float | None:
    return None if value is None else float(value)


def shift_clock(value: float | None, from_now: float, to_now: float) -> float | None:
    """The moment ``value`` of one clock (whose now is ``from_now``) on another clock
    (whose now is ``to_now``): monotonic times to wall-clock times and back."""
    return None if value is None else to_now - (from_now - value)


def intent_path(state_dir: str, seed: str) -> Path:
    """The default file of one cluster's record under ``state_dir``."""
    name = "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in seed)
    return Path(state_dir) / f"intent-{name}.json"


class IntentStore(Protocol):
    """Where the record lives: a file (local platform) or an annotation (Kubernetes)."""

    def load(self) -> IntentRecord: ...

    def save(self, record: IntentRecord) -> None: ...


class IntentFile:
    """The record in a local file; missing file = empty record."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    @classmethod
    def configured(cls, path: str | None, state_dir: str | None, seed: str) -> IntentFile | None:
        """``path`` if given, else the cluster's file under ``state_dir``, else None (the
        record then lives in memory only and a restart forgets it)."""
        if path:
            return cls(path)
        return cls(intent_path(state_dir, seed)) if state_dir else None

    def load(self) -> IntentRecord:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return IntentRecord()
        except (OSError, UnicodeDecodeError) as exc:
            raise IntentError(f"{self.path}: {exc}") from None
        try:
            return IntentRecord.from_json(text)
        except IntentError as exc:
            raise IntentError(f"{self.path}: {exc}") from None

    def save(self, record: IntentRecord) -> None:
        """Write atomically (temp file + fsync + rename), mode 0600."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".intent-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(record.to_json())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
