"""The command-API pieces both clients share, without I/O.

:class:`SharedCommands` holds what a ``RedisCluster`` user calls on either client and
that never waits (the encoder, reply callbacks, connection settings, the registry of
scripts, ``lock()``); :class:`SlotSplit` is the plan of a multi-key command split per
slot (``MGET``, ``MSET``, ``DEL``, ``EXISTS``, ``TOUCH``, ``UNLINK``): one command per
slot, batched per node by a pipeline (not atomic), and the replies put back together.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from redis.crc import key_slot

from balancer.core.slots import as_text

__all__ = ["SharedCommands", "SlotSplit"]

_EVALSHA = ("EVALSHA", "EVALSHA_RO")


class SlotSplit:
    """One command per slot for a multi-key command; :meth:`commands` to queue on a
    pipeline, :meth:`values` / :meth:`total` to merge its replies."""

    __slots__ = ("command", "groups", "items")

    def __init__(self, encoder: Any, command: str, items: Sequence[Any], key: int = 0) -> None:
        """``items``: the keys, or (key, value) pairs with ``key=0`` naming the key."""
        self.command = command
        self.items = items
        self.groups: dict[int, list[int]] = {}
        encode = encoder.encode
        for index, item in enumerate(items):
            name = item[key] if isinstance(item, tuple) else item
            self.groups.setdefault(key_slot(encode(name)), []).append(index)

    @classmethod
    def of_keys(cls, encoder: Any, command: str, keys: Any, more: Iterable[Any] = ()) -> SlotSplit:
        """``MGET``'s forms: a list of keys, or keys as arguments."""
        names = list(keys) if isinstance(keys, list | tuple) else [keys]
        names.extend(more)
        return cls(encoder, command, names)

    @property
    def single(self) -> bool:
        return len(self.groups) == 1

    def flat(self) -> tuple[Any, ...]:
        """The whole command, unsplit."""
        return (self.command, *self.items)

    def commands(self) -> list[tuple[Any, ...]]:
        items = self.items
        out: list[tuple[Any, ...]] = []
        for indexes in self.groups.values():
            if items and isinstance(items[0], tuple):
                out.append((self.command, *(x for i in indexes for x in items[i])))
            else:
                out.append((self.command, *(items[i] for i in indexes)))
        return out

    def values(self, replies: Sequence[Sequence[Any]]) -> list[Any]:
        """Per-slot lists of values (``MGET``) back in the caller's key order."""
        result: list[Any] = [None] * len(self.items)
        for indexes, values in zip(self.groups.values(), replies, strict=True):
            for i, value in zip(indexes, values, strict=True):
                result[i] = value
        return result

    @staticmethod
    def total(replies: Iterable[Any]) -> int:
        """Per-slot counts (``DEL``, ``EXISTS``, …) summed."""
        return sum(int(x) for x in replies)


class SharedCommands:
    """Mixed into both clients: the methods that are the same with or without an event
    loop. A client sets ``_encoder``, ``_callbacks``, ``_scripts``, ``_options`` (with
    ``connection_kwargs``) and ``_lock_class`` (redis-py's sync or asyncio ``Lock``)."""

    _encoder: Any
    _callbacks: dict[str, Callable[..., Any]]
    _scripts: dict[str, Any]
    _options: Any
    _lock_class: Any

    def get_encoder(self) -> Any:
        """The encoder of keys and values (what redis-py's ``Script`` and ``Lock`` ask
        for)."""
        return self._encoder

    def set_response_callback(self, command: str, callback: Callable[..., Any]) -> None:
        """Parse ``command``'s replies with ``callback`` (as redis-py's clients do)."""
        self._callbacks[command] = callback

    @property
    def cluster_response_callbacks(self) -> dict[str, Callable[..., Any]]:
        """``RedisCluster``'s table of reply parsers, editable as there. Here it is the
        client's one table (every command's parser, keyed by upper-case name), so an
        entry set in it applies as ``set_response_callback()``'s does."""
        return self._callbacks

    def get_connection_kwargs(self) -> dict[str, Any]:
        return dict(self._options.connection_kwargs)

    def _remember_script(self, sha: str, text: Any) -> None:
        """A registered script: a pipeline that meets NOSCRIPT for it loads it and runs
        the call again (it did not run), where RedisCluster refuses scripts in pipelines."""
        self._scripts[sha] = text

    def _script_text(self, args: Sequence[Any]) -> Any | None:
        """The text of the registered script an ``EVALSHA`` names (None: not ours)."""
        if len(args) < 2 or as_text(args[0]).upper() not in _EVALSHA:
            return None
        return self._scripts.get(as_text(args[1]))

    def lock(
        self,
        name: Any,
        timeout: float | None = None,
        sleep: float = 0.1,
        blocking: bool = True,
        blocking_timeout: float | None = None,
        lock_class: Any = None,
        thread_local: bool = True,
        raise_on_release_error: bool = True,
    ) -> Any:
        """redis-py's ``Lock`` on key ``name`` (see ``RedisCluster.lock``): Lua scripts on
        the lock key's node."""
        return (lock_class or self._lock_class)(
            self,
            name,
            timeout=timeout,
            sleep=sleep,
            blocking=blocking,
            blocking_timeout=blocking_timeout,
            thread_local=thread_local,
            raise_on_release_error=raise_on_release_error,
        )
