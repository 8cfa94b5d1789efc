"""What the sync and the asyncio cluster clients make of their constructor arguments.

Both clients take the same options (and ``RedisCluster``'s constructor forms); checking
them, choosing the seeds, and building the reply encoder and callbacks happen here once,
so the two clients cannot drift apart on what an argument means.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol
from urllib.parse import unquote, urlparse

import redis

from balancer.core.endpoint import parse_address
from balancer.core.nodes import ClusterNode, startup_seeds
from balancer.core.strategies import StrategySpec, make_strategy
from balancer.core.targets import cluster_callbacks

__all__ = [
    "READ_FROM",
    "Encoding",
    "ReadFrom",
    "load_balancing",
    "reply_handling",
    "startup",
    "url_arguments",
]

ReadFrom = Literal["primary", "replicas", "any"]
READ_FROM = ("primary", "replicas", "any")


class Encoding(Protocol):
    """What redis-py's encoder offers (``get_encoder()`` of its clients and pools)."""

    def encode(self, value: Any) -> Any: ...

    def decode(self, value: Any, force: bool = False) -> Any: ...


def startup(
    client: str,
    startup_nodes: str | Sequence[str | ClusterNode] | None,
    host: str | None,
    port: int | None,
    read_from: ReadFrom,
    read_from_replicas: bool,
    strategy: StrategySpec,
) -> tuple[list[tuple[str, int]], ReadFrom]:
    """The seeds as (host, port) and the effective ``read_from``; ValueError on bad input
    (a bad strategy name fails here, not at the first read)."""
    if read_from not in READ_FROM:
        raise ValueError(f"read_from must be one of {', '.join(READ_FROM)}, got {read_from!r}")
    seeds = startup_seeds(startup_nodes, host, port)
    if not seeds:
        raise ValueError(f"{client} needs at least one startup node 'host:port'")
    if read_from_replicas and read_from == "primary":
        read_from = "any"  # RedisCluster's round robin over a shard's primary and replicas
    make_strategy(strategy)
    return [parse_address(s) for s in seeds], read_from


# redis-py's LoadBalancingStrategy values as (read_from, strategy): ROUND_ROBIN and RANDOM
# take the shard's primary and replicas, the *_REPLICA(S) ones its replicas (the primary
# when no replica can serve, as RedisCluster falls back).
_LOAD_BALANCING: dict[str, tuple[ReadFrom, str]] = {
    "round_robin": ("any", "round_robin"),
    "round_robin_replicas": ("replicas", "round_robin"),
    "random": ("any", "random"),
    "random_replica": ("replicas", "random"),
}


def load_balancing(
    load_balancing_strategy: Any, read_from: ReadFrom, strategy: StrategySpec
) -> tuple[ReadFrom, StrategySpec]:
    """``RedisCluster``'s ``load_balancing_strategy=`` (a ``LoadBalancingStrategy`` or its
    value) as ``read_from`` and ``strategy``; None leaves both as given. Naming it with a
    ``read_from`` other than ``"primary"`` is ambiguous: ValueError."""
    if load_balancing_strategy is None:
        return read_from, strategy
    value = getattr(load_balancing_strategy, "value", load_balancing_strategy)
    if value not in _LOAD_BALANCING:
        raise ValueError(
            f"load_balancing_strategy must be one of {', '.join(_LOAD_BALANCING)}, "
            f"got {load_balancing_strategy!r}"
        )
    if read_from != "primary":
        raise ValueError("pass read_from= or load_balancing_strategy=, not both")
    return _LOAD_BALANCING[value]


def reply_handling(
    connection_kwargs: Mapping[str, Any], decode_responses: bool
) -> tuple[Encoding, dict[str, Any]]:
    """The encoder and the reply callbacks redis-py's clients would use with these
    connection settings (plus RedisCluster's own callbacks), taken from a client object
    that never connects: its public ``get_encoder()`` and ``response_callbacks``."""
    model = redis.Redis(
        encoding=connection_kwargs.get("encoding", "utf-8"),
        encoding_errors=connection_kwargs.get("encoding_errors", "strict"),
        decode_responses=decode_responses,
        protocol=connection_kwargs.get("protocol"),
    )
    encoder: Encoding = model.get_encoder()
    callbacks: dict[str, Any] = {str(k).upper(): v for k, v in model.response_callbacks.items()}
    callbacks.update(cluster_callbacks(connection_kwargs))
    model.close()
    return encoder, callbacks


def url_arguments(url: str, kwargs: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """``redis://[user:password@]host:port`` (``rediss://`` for TLS) as a seed and
    constructor options; ``kwargs`` override what the URL says."""
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(
            "Redis URL must specify one of the following schemes (redis://, rediss://, unix://)"
        )
    parsed = urlparse(url)  # read as redis-py's parse_url reads these four parts
    options: dict[str, Any] = {}
    if parsed.username:
        options["username"] = unquote(parsed.username)
    if parsed.password:
        options["password"] = unquote(parsed.password)
    if url.startswith("rediss://"):
        options["ssl"] = True
    options.update(kwargs)
    host = unquote(parsed.hostname) if parsed.scheme != "unix" and parsed.hostname else None
    port = parsed.port if parsed.scheme != "unix" and parsed.port else None
    return f"{host or 'localhost'}:{port or 6379}", options
