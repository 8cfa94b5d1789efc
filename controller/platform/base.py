"""The Platform protocol: what the controller needs from whatever runs the replicas."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["Member", "Platform", "PlatformError"]


class PlatformError(RuntimeError):
    """The platform could not read or change a target; the controller holds and retries."""


@dataclass(frozen=True)
class Member:
    """One replica of a target: a process or a pod."""

    name: str
    address: str | None
    ready: bool


class Platform(Protocol):
    def get_replicas(self, target: str) -> int: ...

    def set_replicas(self, target: str, replicas: int) -> None: ...

    def members(self, target: str) -> list[Member]: ...
