"""Which arguments of a command are keys, from the server's own ``COMMAND`` table.

The table is read once per client (``COMMAND``, RESP2 or RESP3, from Redis ≥ 7.0 or
Valkey) and compiled into one small *plan* per command name, so the common case — keys at
fixed positions — is a dictionary lookup and a slice. The rules are the server's own
(``getKeysUsingKeySpecs`` in Redis's ``db.c``):

- fixed positions: ``first``/``last``/``step`` of a command without ``movablekeys``;
- key specs for ``movablekeys`` commands: ``begin_search`` by index or keyword,
  ``find_keys`` by range (``lastkey``, ``keystep``, ``limit``) or ``numkeys`` (EVAL's
  ``numkeys``, ZUNIONSTORE's, XREAD's ``STREAMS`` keyword);
- sub-commands (``XINFO STREAM key``, ``OBJECT ENCODING key``) by their ``name|sub`` entry;
- pub/sub commands by channel (what cluster routing needs);
- everything the specs cannot say (an ``incomplete`` or ``unknown`` spec, arguments the
  specs reject) is asked of a server with ``COMMAND GETKEYS``.

Nothing here does I/O: the client hands in how to load the table and how to ask a server,
and the asyncio client answers :class:`NeedsServer` with an awaited question instead.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import redis
from redis.commands import READ_COMMANDS

__all__ = ["CommandInfo", "KeyLocator", "NeedsServer", "parse_command_table"]

# One command's key finder: the keys of ``args`` (full argv, name first), or None when only
# a server can say (``COMMAND GETKEYS``).
Plan = Callable[[Sequence[Any]], list[Any] | None]
_RELOAD_GAP = 1.0  # an unknown command re-reads the table at most this often (a module load)


class NeedsServer(Exception):
    """Only a server can answer: ``pieces`` are the arguments to ``COMMAND GETKEYS``."""

    def __init__(self, pieces: tuple[Any, ...]) -> None:
        super().__init__(f"COMMAND GETKEYS {pieces[:2]!r}… must be asked of a node")
        self.pieces = pieces


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes | bytearray) else str(value)


def _pairs(value: Any) -> dict[str, Any]:
    """A RESP3 map or a RESP2 flat list of key/value pairs, with text keys."""
    if isinstance(value, Mapping):
        return {_text(k): v for k, v in value.items()}
    if isinstance(value, list | tuple):
        return {_text(k): v for k, v in zip(value[::2], value[1::2], strict=False)}
    return {}


class CommandInfo:
    """One entry of the ``COMMAND`` reply: what key finding needs of it."""

    __slots__ = ("arity", "first", "flags", "key_specs", "last", "name", "step", "subcommands")

    def __init__(self, entry: Sequence[Any]) -> None:
        self.name = _text(entry[0]).lower()
        self.arity = int(entry[1])
        self.flags = frozenset(_text(f).lower() for f in entry[2])
        self.first, self.last, self.step = int(entry[3]), int(entry[4]), int(entry[5])
        self.key_specs: tuple[dict[str, Any], ...] = ()
        self.subcommands: dict[str, CommandInfo] = {}
        if len(entry) > 8:  # Redis >= 7.0: tips, key specs, sub-commands
            self.key_specs = tuple(_pairs(spec) for spec in entry[8] or ())
        if len(entry) > 9:
            for sub in entry[9] or ():
                info = CommandInfo(sub)
                self.subcommands[info.name] = info

    def readonly(self) -> bool:
        return "readonly" in self.flags and "write" not in self.flags


def parse_command_table(reply: Any) -> dict[str, CommandInfo]:
    """The ``COMMAND`` reply (RESP2 or RESP3, bytes or text) by lower-case name."""
    if not isinstance(reply, list | tuple):
        raise redis.DataError(f"COMMAND reply is not an array: {type(reply).__name__}")
    table: dict[str, CommandInfo] = {}
    for entry in reply:
        try:
            info = CommandInfo(entry)
        except (TypeError, ValueError, IndexError) as exc:
            raise redis.DataError(f"malformed COMMAND entry {entry!r:.80}: {exc}") from exc
        table[info.name] = info
    return table


# -- plans ----------------------------------------------------------------------------------


def _no_keys(args: Sequence[Any]) -> list[Any]:
    return []


def _ask_server(args: Sequence[Any]) -> None:
    return None


def _fixed(first: int, last: int, step: int) -> Plan:
    def keys(args: Sequence[Any]) -> list[Any]:
        if len(args) <= first:
            return []
        end = len(args) + last if last < 0 else last
        return list(args[first : end + 1 : step])

    return keys


def _count(value: Any) -> int | None:
    """A ``numkeys`` argument as the server reads it (digits only, no sign, no leading
    zero), or None when the server would reject it."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str):
        value = value.encode()
    if not isinstance(value, bytes | bytearray) or not value.isdigit() or len(value) > 18:
        return None
    if len(value) > 1 and value.startswith(b"0"):
        return None
    return int(value)


def _matches(arg: Any, keyword: str) -> bool:
    if isinstance(arg, bytes | bytearray):
        try:
            arg = arg.decode()
        except UnicodeDecodeError:
            return False
    return isinstance(arg, str) and arg.upper() == keyword


def _spec_plan(spec: dict[str, Any]) -> Callable[[Sequence[Any]], list[Any] | None] | None:
    """One key spec as a finder, or None when the spec cannot be evaluated here."""
    begin, find = _pairs(spec.get("begin_search")), _pairs(spec.get("find_keys"))
    begin_spec, find_spec = _pairs(begin.get("spec")), _pairs(find.get("spec"))
    begin_type, find_type = _text(begin.get("type", "")), _text(find.get("type", ""))
    if begin_type == "index":
        index = int(begin_spec["index"])

        def start(args: Sequence[Any]) -> int | None:
            return index

    elif begin_type == "keyword":
        keyword = _text(begin_spec["keyword"]).upper()
        startfrom = int(begin_spec["startfrom"])

        def start(args: Sequence[Any]) -> int | None:
            argc = len(args)
            if startfrom > 0:
                positions = range(startfrom, argc - 1)  # a keyword last names no key
            else:
                positions = range(argc + startfrom, 0, -1)
            for i in positions:
                if 1 <= i < argc and _matches(args[i], keyword):
                    return i + 1
            return None  # keyword absent: this spec names no keys

    else:
        return None
    step = int(find_spec.get("keystep", 0))
    if step < 1:
        return None
    if find_type == "range":
        lastkey, limit = int(find_spec["lastkey"]), int(find_spec.get("limit", 0))
        if lastkey < -1 and limit:
            return None

        def last_of(args: Sequence[Any], first: int) -> tuple[int, int] | None:
            if lastkey >= 0:
                return first, first + lastkey
            if not limit:
                return first, len(args) + lastkey
            return first, first + (len(args) - first) // limit + lastkey

    elif find_type == "keynum":
        keynumidx, firstkey = int(find_spec["keynumidx"]), int(find_spec["firstkey"])

        def last_of(args: Sequence[Any], first: int) -> tuple[int, int] | None:
            if first + keynumidx >= len(args):
                return None
            count = _count(args[first + keynumidx])
            if count is None:
                return None
            first += firstkey
            return first, first + (count - 1) * step

    else:
        return None

    def keys(args: Sequence[Any]) -> list[Any] | None:
        first = start(args)
        if first is None:
            return []
        bounds = last_of(args, first)
        if bounds is None:
            return None
        first, last = bounds
        if last < first:
            return []  # numkeys 0
        if last >= len(args):
            return None  # too few arguments: the server will say what is wrong
        return list(args[first : last + 1 : step])

    return keys


def _specs_plan(info: CommandInfo) -> Plan:
    """A ``movablekeys`` command: its key specs evaluated as the server does, or the server
    asked when a spec is incomplete, has variable flags or a form not written here."""
    finders = []
    for spec in info.key_specs:
        flags = {_text(f).lower() for f in spec.get("flags") or ()}
        if flags & {"incomplete", "variable_flags"}:
            return _ask_server
        if "not_key" in flags:
            continue
        try:
            finder = _spec_plan(spec)
        except (KeyError, TypeError, ValueError):
            finder = None
        if finder is None:
            return _ask_server
        finders.append(finder)
    if not finders:
        return _ask_server
    arity = info.arity

    def keys(args: Sequence[Any]) -> list[Any] | None:
        argc = len(args)
        if argc < abs(arity) or (arity > 0 and argc != arity):
            return None
        found: list[Any] = []
        for finder in finders:
            part = finder(args)
            if part is None:
                return None
            found.extend(part)
        return found

    return keys


def _pubsub_keys(args: Sequence[Any]) -> list[Any]:
    """Channels route like keys: ``PUBLISH``/``SPUBLISH`` by their channel, (un)subscribe
    by every channel, ``PUBSUB CHANNELS|NUMSUB|SHARD…`` by their arguments."""
    if len(args) < 2:
        return []
    name = _text(args[0]).upper()
    if name == "PUBSUB":
        sub = _text(args[1]).upper()
        if sub in ("CHANNELS", "NUMSUB", "SHARDCHANNELS", "SHARDNUMSUB"):
            return list(args[2:])
        return []
    if name in ("PUBLISH", "SPUBLISH"):
        return [args[1]]
    if name in ("SUBSCRIBE", "PSUBSCRIBE", "UNSUBSCRIBE", "PUNSUBSCRIBE"):
        return list(args[1:])
    return []


def _plan(info: CommandInfo) -> Plan:
    if "movablekeys" in info.flags:
        return _specs_plan(info)
    if "pubsub" in info.flags or info.name == "pubsub":
        return _pubsub_keys
    if info.first > 0:
        return _fixed(info.first, info.last, info.step)
    if not info.subcommands:
        return _no_keys
    plans = {name.split("|", 1)[1]: _plan(sub) for name, sub in info.subcommands.items()}

    def by_subcommand(args: Sequence[Any]) -> list[Any] | None:
        if len(args) < 2:
            return []
        plan = plans.get(_text(args[1]).lower())
        return [] if plan is None else plan(args)

    return by_subcommand


class KeyLocator:
    """The keys of a command, from a ``COMMAND`` table loaded lazily once.

    ``load()`` returns the raw ``COMMAND`` reply; ``ask(pieces)`` returns the keys a server
    gives for ``COMMAND GETKEYS *pieces`` (``[]`` for a command it says has none). Without
    ``ask``, :class:`NeedsServer` is raised for the caller to ask (the asyncio client);
    without ``load``, :meth:`install` must give the table before the first call.
    """

    def __init__(
        self,
        load: Callable[[], Any] | None = None,
        ask: Callable[[tuple[Any, ...]], list[Any]] | None = None,
    ) -> None:
        self._load = load
        self._ask = ask
        self._table: dict[str, CommandInfo] | None = None
        self._loaded_at = -float("inf")
        self._lock = threading.Lock()
        self._plans: dict[Any, Plan] = {}
        self._readonly: dict[Any, bool] = {}

    def install(self, reply: Any) -> None:
        """Use this ``COMMAND`` reply (parsed here) from now on."""
        table = parse_command_table(reply)
        with self._lock:
            self._table, self._loaded_at = table, time.monotonic()
            self._plans = {}
            self._readonly = {}

    def _info(self, name: str) -> CommandInfo | None:
        """The table's entry for ``name``, loading (or, for a name it lacks, re-loading at
        most every ``_RELOAD_GAP`` seconds) the table when a loader was given."""
        table = self._table
        if table is not None and (name in table or self._load is None):
            return table.get(name)
        if self._load is None:
            raise NeedsServer(("COMMAND",))
        if table is not None and time.monotonic() - self._loaded_at < _RELOAD_GAP:
            return None
        self.install(self._load())
        return self._table.get(name) if self._table is not None else None

    def readonly(self, name: Any) -> bool:
        """Whether a command only reads (so it may be sent again after a lost reply):
        redis-py's list of read commands, else the server's own ``readonly`` flag
        without ``write``. Unknown or unanswerable means no."""
        known = self._readonly.get(name)
        if known is not None:
            return known
        text = _text(name).upper()
        result = text in READ_COMMANDS
        if not result and " " not in text:
            try:
                info = self._info(text.lower())
            except (redis.RedisError, OSError, NeedsServer):
                return False  # not cached: ask again next time
            result = info is not None and info.readonly()
        self._readonly[name] = result
        return result

    def _plan_for(self, name: Any) -> Plan:
        words = _text(name).split()
        if not words:
            return _no_keys
        info = self._info(words[0].lower())
        if info is None:
            raise redis.RedisError(f"{words[0].upper()} is not in the server's COMMAND table")
        plan = _plan(info)
        if len(words) == 1:
            return plan
        rest = tuple(words[1:])  # "XINFO STREAM" sent as one argument, split by redis-py

        def split(args: Sequence[Any]) -> list[Any] | None:
            return plan((words[0], *rest, *args[1:]))

        return split

    def keys(self, args: Sequence[Any]) -> list[Any]:
        """The keys in ``args`` (``args[0]`` is the command name); [] for keyless ones."""
        name = args[0]
        plan = self._plans.get(name)
        if plan is None:
            plan = self._plans[name] = self._plan_for(name)
        found = plan(args)
        if found is not None:
            return found
        pieces = (*_text(name).split(), *args[1:])
        if self._ask is None:
            raise NeedsServer(pieces)
        return list(self._ask(pieces))
