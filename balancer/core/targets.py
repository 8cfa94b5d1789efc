"""Which nodes a command without keys goes to, and how their replies combine.

These are redis-py's ``RedisCluster`` rules (``COMMAND_FLAGS``, ``RESULT_CALLBACKS``), so
``info()``, ``config_get()``, ``flushdb()``, ``scan()`` or ``cluster_nodes()`` answer as
they do there: one node's reply as is, several nodes' replies as a dict keyed by node
name (``host:port``) unless a callback merges them. slotpilot's deliberate differences
are listed in ``_OURS`` (pure values, no I/O).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from redis.cluster import (
    SLOT_ID,
    AbstractRedisCluster,
    parse_cluster_shards_unified,
    parse_cluster_shards_with_str_keys,
)

from balancer.core.slots import as_text

__all__ = [
    "ALL_NODES",
    "DEFAULT_NODE",
    "NODE_FLAGS",
    "PRIMARIES",
    "RANDOM",
    "REPLICAS",
    "SLOT_ID",
    "cluster_callbacks",
    "combine",
    "command_flag",
    "command_name",
]

PRIMARIES: str = AbstractRedisCluster.PRIMARIES
REPLICAS: str = AbstractRedisCluster.REPLICAS
ALL_NODES: str = AbstractRedisCluster.ALL_NODES
RANDOM: str = AbstractRedisCluster.RANDOM
DEFAULT_NODE: str = AbstractRedisCluster.DEFAULT_NODE
NODE_FLAGS = frozenset({PRIMARIES, REPLICAS, ALL_NODES, RANDOM, DEFAULT_NODE})


def _any_key(command: str, replies: Mapping[str, Any], **options: Any) -> Any:
    """RANDOMKEY over every primary: a key from a shard that has one, None only when
    every shard is empty (one shard's reply cannot tell)."""
    keys = [key for key in replies.values() if key is not None]
    return random.choice(keys) if keys else None


# Deliberately different from RedisCluster before 8.2, which asks one node only: the
# size, the key list and a random key of the whole cluster (8.2 asks every shard for
# RANDOMKEY too).
_OURS: dict[str, str] = {"DBSIZE": PRIMARIES, "KEYS": PRIMARIES, "RANDOMKEY": PRIMARIES}
_FLAGS: dict[str, str] = {**AbstractRedisCluster.COMMAND_FLAGS, **_OURS}
_CALLBACKS: Mapping[str, Callable[..., Any]] = {
    **{k.upper(): v for k, v in AbstractRedisCluster.RESULT_CALLBACKS.items()},
    "RANDOMKEY": _any_key,
}
# Names that always go through node selection, never through key extraction.
NODE_COMMANDS = frozenset(_FLAGS)


def command_name(args: Sequence[Any]) -> str:
    """The command as the flag tables spell it: ``"CONFIG GET"`` for both
    ``("CONFIG GET", …)`` and ``("config", "get", …)``, else the first word."""
    name = as_text(args[0]).upper()
    if " " not in name and len(args) > 1 and isinstance(args[1], str | bytes):
        pair = f"{name} {as_text(args[1]).upper()}"
        if pair in _FLAGS or pair in _CALLBACKS:
            return pair
    return name


def command_flag(command: str) -> str | None:
    """Where ``command`` goes when the caller names no ``target_nodes``: a node flag,
    :data:`SLOT_ID` (the slot is the first argument), or ``None`` (the default node)."""
    return _FLAGS.get(command)


def combine(command: str, replies: dict[str, Any], **options: Any) -> Any:
    """Replies per node name -> the caller's result, as ``RedisCluster`` returns it."""
    callback = _CALLBACKS.get(command)
    if callback is not None:
        return callback(command, replies, **options)
    if len(replies) == 1:
        return next(iter(replies.values()))
    return replies


def cluster_callbacks(connection_kwargs: Mapping[str, Any]) -> dict[str, Callable[..., Any]]:
    """The reply parsers ``RedisCluster`` adds for CLUSTER SLOTS/SHARDS/MYSHARDID, chosen
    from the same connection settings (``protocol``, ``legacy_responses``)."""
    callbacks = dict(AbstractRedisCluster.CLUSTER_COMMANDS_RESPONSE_CALLBACKS)
    if not connection_kwargs.get("legacy_responses", True):
        callbacks["CLUSTER SHARDS"] = parse_cluster_shards_unified
    elif connection_kwargs.get("protocol") is None:
        callbacks["CLUSTER SHARDS"] = parse_cluster_shards_with_str_keys
    return callbacks
