"""Which arguments of a command are keys, from the server's own ``COMMAND`` table.

redis-py's ``CommandsParser`` knows the rules (fixed positions, movable keys through
``COMMAND GETKEYS``, sub-commands). It is general and therefore slow per call, so the
common case — a command whose keys sit at fixed positions — is answered from a small
per-command cache of (first, last, step); everything else goes to ``CommandsParser``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import redis
from redis._parsers.commands import CommandsParser
from redis.commands import READ_COMMANDS

__all__ = ["KeyLocator"]

# Commands whose key count is an argument (``numkeys``) right after the script/function.
_NUMKEYS_AT_2 = frozenset({"EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO"})
_Positions = tuple[int, int, int] | None  # (first, last, step) or None = ask the parser
_KEYLESS: tuple[int, int, int] = (0, 0, 0)  # the server says: no keys, whatever the arguments


class _ServerAdapter:
    """The two methods ``CommandsParser`` calls, executed on any node of the cluster."""

    def __init__(self, command: Callable[..., Any]) -> None:
        self._command = command

    def command(self) -> Any:
        return self._command("COMMAND")

    def execute_command(self, *args: Any, **options: Any) -> Any:
        return self._command(*args)


class KeyLocator:
    """Extract the keys of a command (lazily loading the ``COMMAND`` table once)."""

    def __init__(self, run_anywhere: Callable[..., Any]) -> None:
        self._adapter = _ServerAdapter(run_anywhere)
        self._parser: CommandsParser | None = None
        self._fast: dict[str, _Positions] = {}
        self._readonly: dict[Any, bool] = {}

    def readonly(self, name: Any) -> bool:
        """Whether a command only reads (so it may be sent again after a lost reply):
        redis-py's list of read commands, else the server's own ``readonly`` flag
        without ``write``. Unknown or unanswerable means no."""
        known = self._readonly.get(name)
        if known is not None:
            return known
        text = (name.decode() if isinstance(name, bytes) else str(name)).upper()
        result = text in READ_COMMANDS
        if not result and " " not in text:
            try:
                if self._parser is None:
                    self._parser = CommandsParser(self._adapter)
                info = self._parser.commands.get(text.lower())
            except (redis.RedisError, OSError, ValueError):
                return False  # not cached: ask again next time
            flags = set(info["flags"]) if info else set()
            result = "readonly" in flags and "write" not in flags
        self._readonly[name] = result
        return result

    def _positions(self, name: str) -> _Positions:
        if self._parser is None:
            self._parser = CommandsParser(self._adapter)
        info = self._parser.commands.get(name.lower())
        if info is None or "movablekeys" in info["flags"] or "pubsub" in info["flags"]:
            return None
        if info["first_key_pos"] <= 0:
            return None if info.get("subcommands") else _KEYLESS
        return info["first_key_pos"], info["last_key_pos"], info["step_count"]

    def keys(self, args: Sequence[Any]) -> list[Any]:
        """The keys in ``args`` (``args[0]`` is the command name); [] for keyless ones."""
        name = args[0]
        if not isinstance(name, str):
            name = name.decode()
        name = name.upper()
        if name in _NUMKEYS_AT_2:
            if len(args) < 3:
                return []
            return list(args[3 : 3 + int(args[2])])
        try:
            positions = self._fast[name]
        except KeyError:
            positions = self._fast[name] = self._positions(name) if " " not in name else None
        if positions is _KEYLESS:
            return []
        if positions is not None:
            first, last, step = positions
            if len(args) <= first:
                return []
            if last < 0:
                last = len(args) + last
            return list(args[first : last + 1 : step])
        if self._parser is None:
            self._parser = CommandsParser(self._adapter)
        split = name.split() + list(args[1:])
        return list(self._parser.get_keys(self._adapter, *split) or [])
