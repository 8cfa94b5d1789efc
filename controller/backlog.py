"""How much work waits in a queue, per source type (KEDA's Redis scalers' semantics).

I/O edge for consumer scaling: one small read per source per cycle. Any failure is
raised as :class:`BacklogError`; the policy turns repeated failures into hold or a
configured fallback, never into a scale-down.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

__all__ = ["SOURCE_TYPES", "BacklogError", "BacklogSource", "read_backlog"]

SOURCE_TYPES = ("redis_list", "redis_stream", "sorted_set", "bullmq", "rq", "celery")


class BacklogError(RuntimeError):
    """The source could not be read this cycle."""


@dataclass(frozen=True)
class BacklogSource:
    """``key`` is the list/stream/sorted set, or the queue name for the presets."""

    type: str
    key: str
    group: str | None = None  # redis_stream consumer group (lag / pending modes)
    mode: str = "lag"  # redis_stream: lag | pending | length
    prefix: str = "bull"  # bullmq key prefix

    def __post_init__(self) -> None:
        if self.type not in SOURCE_TYPES:
            raise ValueError(f"source type {self.type!r}; valid: {', '.join(SOURCE_TYPES)}")
        if self.type == "redis_stream" and self.mode not in ("lag", "pending", "length"):
            raise ValueError(f"redis_stream mode {self.mode!r}; valid: lag, pending, length")
        if self.type == "redis_stream" and self.mode != "length" and not self.group:
            raise ValueError(f"redis_stream mode {self.mode} needs a consumer group")


def _stream_backlog(client: Any, source: BacklogSource) -> float:
    if source.mode == "length":
        return float(client.xlen(source.key))
    if source.mode == "pending":
        summary = client.xpending(source.key, source.group)
        return float(summary["pending"])
    for group in client.xinfo_groups(source.key):
        name = group.get("name")
        name = name.decode() if isinstance(name, bytes) else name
        if name == source.group:
            lag = group.get("lag")
            if lag is None:  # lag unknown (entries deleted): KEDA falls back to length
                return float(client.xlen(source.key))
            return float(lag)
    raise BacklogError(f"stream {source.key!r} has no group {source.group!r}")


def read_backlog(client: Any, source: BacklogSource) -> float:
    """Backlog of ``source`` through a redis-py-compatible ``client``
    (:class:`balancer.ClusterClient` in the controller)."""
    try:
        if source.type in ("redis_list", "celery"):
            return float(client.llen(source.key))
        if source.type == "rq":
            return float(client.llen(f"rq:queue:{source.key}"))
        if source.type == "sorted_set":
            return float(client.zcard(source.key))
        if source.type == "bullmq":
            base = f"{source.prefix}:{source.key}"
            return float(client.llen(f"{base}:wait") + client.zcard(f"{base}:prioritized"))
        return _stream_backlog(client, source)
    except redis.ResponseError as exc:
        if "no such key" in str(exc).lower():
            return 0.0  # a stream that does not exist yet holds no work
        raise BacklogError(f"{source.type} {source.key}: {exc}") from exc
    except (redis.RedisError, OSError, KeyError, TypeError, ValueError) as exc:
        raise BacklogError(f"{source.type} {source.key}: {exc}") from exc
