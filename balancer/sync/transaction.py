"""ClusterTransaction: ``pipeline(transaction=True)`` as MULTI/EXEC on one slot's primary.

A transaction is atomic only on one node, so every key of it must map to one slot; keys
of a second slot raise redis-py's ``CrossSlotTransactionError``, as ``RedisCluster``
does. ``watch()`` pins a connection to the slot's primary, and until ``multi()`` (or
``execute()``) commands run at once on it, so WATCH/GET/MULTI/EXEC see one connection.

Safety as everywhere in the SDK: a transaction whose batch never left (no connection,
open breaker) or that the server refused as a whole (MOVED/ASK before EXEC, so
EXECABORT: nothing ran) is sent again, after a topology refresh, unless keys are
watched (then ``WatchError``, as in redis-py); a batch whose EXEC reply was lost raises
:class:`~balancer.core.errors.OutcomeUnknown` and is never re-sent.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Literal

import redis
from redis.commands.core import DataAccessCommands, ScriptCommands
from redis.connection import AbstractConnection
from redis.exceptions import (
    AskError,
    ClusterDownError,
    CrossSlotTransactionError,
    ExecAbortError,
    MovedError,
    RedisClusterException,
    TryAgainError,
    WatchError,
)

from balancer.core.errors import (
    NodeUnavailable,
    OutcomeUnknown,
    SlotNotCovered,
    never_sent,
    refused,
)
from balancer.sync.pipeline import annotate

if TYPE_CHECKING:
    from balancer.sync.port import SyncClientPort
    from balancer.sync.transport import NodeTransport

__all__ = ["ClusterTransaction"]

_NETWORK = (redis.ConnectionError, redis.TimeoutError, OSError)
_AGAIN = (AskError, TryAgainError, ClusterDownError)  # MovedError is an AskError
_NO_SLOT = frozenset({"UNWATCH", "MULTI", "EXEC", "DISCARD"})


class ClusterTransaction(DataAccessCommands, ScriptCommands):
    """Returned by ``ClusterClient.pipeline(transaction=True)``."""

    _event_dispatcher: Any = None  # declared by redis-py's command protocol; unused here
    _is_async_client: Literal[False] = False  # selects redis-py's sync return types

    def __init__(self, client: SyncClientPort) -> None:
        self._client = client
        self._commands: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        self._slot: int | None = None
        self._cross_slot = False
        self._watching = False
        self._explicit = False
        self._conn: tuple[NodeTransport, AbstractConnection] | None = None

    def __enter__(self) -> ClusterTransaction:
        return self

    def __exit__(self, *exc: object) -> None:
        self.reset()

    def __len__(self) -> int:
        return len(self._commands)

    def __bool__(self) -> bool:
        return True

    # -- building -------------------------------------------------------------------------

    def _note_slot(self, args: tuple[Any, ...], options: dict[str, Any], now: bool) -> None:
        """Remember the command's slot; a second slot is refused at once for a command
        run now (watching), at ``execute()`` for a queued one (as redis-py does)."""
        name = str(args[0]).upper()
        if name in _NO_SLOT:
            return
        client = self._client
        keys = options.pop("keys", None) or client._locator.keys(args)
        if not keys:
            raise RedisClusterException(
                f"Cannot identify slot number for command: {args[0]}, "
                "it cannot be triggered in a transaction"
            )
        slot = client._slot_of(args[0], keys)
        if self._slot is not None and slot != self._slot:
            if now:
                raise CrossSlotTransactionError("Cannot watch or send commands on different slots")
            self._cross_slot = True
        elif self._slot is None:
            self._slot = slot

    def execute_command(self, *args: Any, **options: Any) -> Any:
        now = (self._watching or args[0] in ("WATCH", "UNWATCH")) and not self._explicit
        self._note_slot(args, options, now)
        if now:
            first_watch = args[0] == "WATCH" and not self._watching
            if args[0] == "WATCH":
                self._watching = True
            return self._immediate(args, options, first_watch)
        self._commands.append((args, options))
        return self

    def multi(self) -> None:
        if self._explicit:
            raise redis.RedisError("Cannot issue nested calls to MULTI")
        if self._commands:
            raise redis.RedisError("Commands without an initial WATCH have already been issued")
        self._explicit = True

    def watch(self, *names: Any) -> Any:
        if self._explicit:
            raise redis.RedisError("Cannot issue a WATCH after a MULTI")
        return self.execute_command("WATCH", *names)

    def unwatch(self) -> Any:
        return self.execute_command("UNWATCH") if self._watching else True

    def discard(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget queued commands; un-watch and give back a pinned connection."""
        pinned, self._conn = self._conn, None
        if pinned is not None:
            transport, conn = pinned
            try:
                if self._watching:
                    conn.send_command("UNWATCH")
                    conn.read_response()
            except _NETWORK:
                transport.discard(conn)  # a closed connection watches nothing
            else:
                transport.release(conn)
        self._commands = []
        self._slot = None
        self._cross_slot = False
        self._watching = False
        self._explicit = False

    # -- running --------------------------------------------------------------------------

    def _connection(self) -> tuple[NodeTransport, AbstractConnection]:
        if self._conn is None:
            if self._slot is None:
                raise RedisClusterException(
                    "At least a command with a key is needed to identify a node"
                )
            client = self._client
            route = client._slot_route[self._slot]
            if route is None:
                client._maybe_refresh(force=True)
                route = client._slot_route[self._slot]
            if route is None:
                raise SlotNotCovered(self._slot)
            if not route.primary_breaker.available(time.monotonic()):
                raise NodeUnavailable(route.primary.address, "circuit breaker open")
            self._conn = (route.primary, route.primary.acquire(check=True))
        return self._conn

    def _unpin(self) -> None:
        pinned, self._conn = self._conn, None
        if pinned is not None:
            pinned[0].release(pinned[1])

    def _lost(self, name: Any, exc: BaseException) -> BaseException:
        """A network failure on the pinned connection: drop it; the error to raise."""
        pinned, self._conn = self._conn, None
        if pinned is None:
            return exc
        transport, conn = pinned
        transport.discard(conn)
        if not refused(exc):
            self._client._breaker(transport.address).record(exc)
        self._client.stats.node_errors += 1
        if never_sent(exc):
            return exc
        self._client.stats.unknown_outcomes += 1
        error = OutcomeUnknown(str(name), transport.address, exc)
        error.__cause__ = exc
        return error

    def _immediate(self, args: tuple[Any, ...], options: dict[str, Any], first: bool) -> Any:
        """WATCH, and commands between WATCH and MULTI: run now on the pinned node. The
        first WATCH, redirected (the slot moved), follows the slot: nothing was watched
        yet; a later redirection means the watched keys moved: ``WatchError``."""
        client = self._client
        for _ in range(client.max_redirects + 1):
            _, conn = self._connection()
            try:
                conn.send_command(*args)
                raw = conn.read_response()
                break
            except redis.ResponseError as exc:
                if not isinstance(exc, AskError):
                    raise
                if not first or not isinstance(exc, MovedError) or self._slot is None:
                    self.reset()
                    client._maybe_refresh(force=True)
                    raise WatchError("Slot rebalancing occurred while watching keys") from exc
                self._unpin()
                client.stats.moved += 1
                client._moved(self._slot, exc)
            except _NETWORK as exc:
                self._watching = False
                raise self._lost(args[0], exc) from exc
        else:
            raise WatchError(f"too many redirections watching slot {self._slot}")
        if args[0] == "UNWATCH":
            self._watching = False
        return self._client._parse(args[0], raw, dict(options))

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        """MULTI, the queued commands, EXEC, on the slot's primary; results in order."""
        commands = self._commands
        if not commands and not self._watching:
            self.reset()
            return []
        client = self._client
        deadline = 0.0
        attempt = 0
        try:
            if self._cross_slot:
                raise CrossSlotTransactionError(
                    "All keys involved in a cluster transaction must map to the same slot"
                )
            while True:
                attempt += 1
                try:
                    return self._exec_once(commands, raise_on_error)
                except _AGAIN as exc:  # refused before EXEC: nothing ran
                    if self._watching:
                        raise WatchError("Slot rebalancing occurred while watching keys") from exc
                    self._unpin()
                    if isinstance(exc, MovedError) and self._slot is not None:
                        client.stats.moved += 1
                        client._moved(self._slot, exc)
                    elif isinstance(exc, AskError):
                        client.stats.ask += 1
                    deadline = client._wait_or_raise(deadline, exc, attempt)
                except _NETWORK as exc:
                    if self._watching or not never_sent(exc) or isinstance(exc, NodeUnavailable):
                        raise
                    deadline = client._wait_or_raise(deadline, exc, attempt)
        finally:
            self.reset()

    def _exec_once(
        self, commands: list[tuple[tuple[Any, ...], dict[str, Any]]], raise_on_error: bool
    ) -> list[Any]:
        client = self._client
        try:
            _, conn = self._connection()
        except _NETWORK as exc:
            raise self._lost("MULTI", exc) from exc
        batch = [("MULTI",), *(args for args, _ in commands), ("EXEC",)]
        errors: list[tuple[int, redis.ResponseError]] = []
        try:
            conn.send_packed_command(conn.pack_commands(batch))
            try:
                conn.read_response()
            except redis.ResponseError as exc:
                errors.append((-1, exc))
            for i in range(len(commands)):
                try:
                    conn.read_response()  # QUEUED
                except redis.ResponseError as exc:
                    errors.append((i, exc))
            try:
                replies = conn.read_response()
            except ExecAbortError:
                redirect = next((e for _, e in errors if isinstance(e, _AGAIN)), None)
                if redirect is not None:
                    raise redirect from None
                i, first = errors[0]
                annotate(first, i + 1, commands[i][0] if i >= 0 else ("MULTI",))
                raise first from None
        except _NETWORK as exc:
            raise self._lost("EXEC", exc) from exc
        if replies is None:
            raise WatchError("Watched variable changed.")
        results: list[Any] = []
        for (args, options), reply in zip(commands, replies, strict=True):
            if isinstance(reply, Exception):
                results.append(reply)
            else:
                results.append(client._parse(args[0], reply, dict(options)))
        if raise_on_error:
            for i, result in enumerate(results):
                if isinstance(result, Exception):
                    annotate(result, i + 1, commands[i][0])
                    raise result
        return results
