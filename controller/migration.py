"""Slot migration engines: execute a :class:`~controller.rebalance.RebalancePlan`.

Two engines, chosen by capability (overridable):

- **atomic** — Valkey ≥ 9 ``CLUSTER MIGRATESLOTS``: one command per source node carries
  every (ranges → target) block; progress from ``CLUSTER GETSLOTMIGRATIONS``; cancelled
  with ``CLUSTER CANCELSLOTMIGRATIONS`` if we give up.
- **classic** — Redis 7: ``SETSLOT IMPORTING`` on the target, ``MIGRATING`` on the source,
  ``GETKEYSINSLOT`` + ``MIGRATE … KEYS``, then ``SETSLOT NODE`` on the target, the source
  and every other primary. redis-cli does this one slot and ten keys per round trip;
  here every per-slot command of a round of many slots goes in one pipeline, keys move
  in large batches, and independent source → target pairs run in parallel.

A slot is never left open: every slot set IMPORTING/MIGRATING is closed with
``SETSLOT NODE`` before the pair returns, or, when a pair fails, set back to
``STABLE`` on both sides (its keys stay where they are, so nothing is lost either way).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.connection import SSLConnection

from balancer.transport import NodeTransport, TransportOptions
from controller.rebalance import RebalancePlan, SlotMove

__all__ = [
    "ENGINES",
    "Progress",
    "BusyKeyConflict",
    "MigrationError",
    "MigrationExecutor",
    "MigrationReport",
    "detect_engine",
]

log = logging.getLogger("slotpilot.migration")
ENGINES = ("auto", "atomic", "classic")
_TERMINAL = {"success", "failed", "cancelled"}


class MigrationError(RuntimeError):
    """A slot move failed; ``slots`` were rolled back to their source."""

    def __init__(self, message: str, source: str = "", target: str = "", slots: int = 0) -> None:
        super().__init__(message)
        self.source, self.target, self.slots = source, target, slots


class BusyKeyConflict(MigrationError):
    """The target already holds a key with a different value: a person must decide."""


@dataclass
class MigrationReport:
    engine: str
    slots: int = 0
    keys: int = 0
    seconds: float = 0.0
    pairs: int = 0
    batches: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def keys_per_second(self) -> float:
        return self.keys / self.seconds if self.seconds > 0 else 0.0


Progress = Callable[[dict[str, Any]], None]


def detect_engine(client: redis.Redis) -> str:
    """ "atomic" when the server has ``CLUSTER MIGRATESLOTS`` (Valkey ≥ 9), else "classic".

    Redis ≥ 8.4 has an atomic migration of its own (``CLUSTER MIGRATION IMPORT``); no
    such server was at hand to test against, so Redis of every version gets "classic"
    here. Supporting it means: detect ``redis_version`` ≥ 8.4 here, return a third engine
    name, and give :class:`MigrationExecutor` a method for it beside ``_atomic``.
    """
    info = client.info("server")
    version = str(info.get("valkey_version") or "")
    if version and int(version.split(".")[0]) >= 9:
        return "atomic"
    return "classic"


def _slots(move: SlotMove) -> list[int]:
    return [s for start, end in move.slot_ranges for s in range(start, end + 1)]


def _chunks(items: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class MigrationExecutor:
    """Runs plans against live nodes. ``addresses`` maps node id → "host:port"."""

    def __init__(
        self,
        addresses: Mapping[str, str],
        connect: Callable[[str], redis.Redis],
        engine: str = "auto",
        key_batch: int = 1000,
        slots_per_round: int = 1024,
        parallel: int = 8,
        migrate_timeout_ms: int = 10_000,
        deadline_seconds: float = 600.0,
        progress: Progress | None = None,
    ) -> None:
        if engine not in ENGINES:
            raise ValueError(f"engine {engine!r}; valid: {', '.join(ENGINES)}")
        self.addresses = dict(addresses)
        self._connect = connect
        self.engine = engine
        self.key_batch = key_batch
        self.slots_per_round = slots_per_round
        self.parallel = parallel
        self.migrate_timeout_ms = migrate_timeout_ms
        self.deadline_seconds = deadline_seconds
        self._progress = progress or (lambda event: None)
        self._transports: dict[str, NodeTransport] = {}

    def node(self, node_id: str) -> redis.Redis:
        return self._connect(self.addresses[node_id])

    def resolve_engine(self) -> str:
        if self.engine != "auto":
            return self.engine
        engines = {detect_engine(self.node(node_id)) for node_id in self.addresses}
        return "atomic" if engines == {"atomic"} else "classic"

    def execute(self, plan: RebalancePlan) -> MigrationReport:
        engine = self.resolve_engine()
        report = MigrationReport(engine=engine, pairs=len(plan.moves))
        started = time.monotonic()
        if plan.moves:
            if engine == "atomic":
                self._atomic(plan.moves, report)
            else:
                self._classic(plan.moves, report)
        report.seconds = time.monotonic() - started
        return report

    # -- atomic (Valkey 9) --------------------------------------------------------------

    def _atomic(self, moves: Sequence[SlotMove], report: MigrationReport) -> None:
        by_source: dict[str, list[SlotMove]] = {}
        for move in moves:
            by_source.setdefault(move.source, []).append(move)
        keys = [self._count_keys(m) for m in moves]
        report.keys = sum(keys)
        for source, source_moves in by_source.items():
            args: list[Any] = ["CLUSTER", "MIGRATESLOTS"]
            for move in source_moves:
                args.append("SLOTSRANGE")
                for start, end in move.slot_ranges:
                    args += [start, end]
                args += ["NODE", move.target]
            self.node(source).execute_command(*args)
        deadline = time.monotonic() + self.deadline_seconds
        pending = set(by_source)
        while pending:
            for source in list(pending):
                jobs = self.node(source).execute_command("CLUSTER", "GETSLOTMIGRATIONS")
                states = [_field(job, "state") for job in jobs or []]
                failed = [
                    job for job in jobs or [] if _field(job, "state") in ("failed", "cancelled")
                ]
                if failed:
                    message = _field(failed[0], "message")
                    self._cancel(by_source)
                    raise MigrationError(
                        f"atomic migration from {source} failed: {message}", source
                    )
                if all(state in _TERMINAL for state in states):
                    pending.discard(source)
            if pending and time.monotonic() > deadline:
                self._cancel(by_source)
                raise MigrationError(f"atomic migration not done in {self.deadline_seconds}s")
            time.sleep(0.01)
        for move, count in zip(moves, keys, strict=True):
            report.slots += move.slot_count
            self._progress({"event": "moved", "engine": "atomic", "source": move.source,
                            "target": move.target, "slots": move.slot_count,
                            "keys": count})  # fmt: skip

    def _cancel(self, by_source: Mapping[str, Any]) -> None:
        for source in by_source:
            try:
                self.node(source).execute_command("CLUSTER", "CANCELSLOTMIGRATIONS")
            except redis.RedisError as exc:
                log.warning("cancel on %s failed: %s", source, exc)

    def _count_keys(self, move: SlotMove) -> int:
        replies = self._batch(
            move.source, [("CLUSTER", "COUNTKEYSINSLOT", s) for s in _slots(move)]
        )
        return sum(int(n) for n in replies if not isinstance(n, Exception))

    def _batch(self, node_id: str, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Many commands to one node in one round trip; error replies come back in place.
        Uses the SDK's transport: redis-py's Pipeline costs more Python per command than
        the server needs to run a SETSLOT, and a rebalance sends tens of thousands."""
        transport = self._transports.get(node_id)
        if transport is None:
            kwargs = dict(self.node(node_id).connection_pool.connection_kwargs)
            host, port = kwargs.pop("host"), kwargs.pop("port")
            ssl = self.node(node_id).connection_pool.connection_class is SSLConnection
            options = TransportOptions(ssl=ssl, **kwargs)
            transport = self._transports.setdefault(node_id, NodeTransport(host, port, options, 64))
        return transport.execute_many(commands) if commands else []

    # -- classic (Redis 7) --------------------------------------------------------------

    def _classic(self, moves: Sequence[SlotMove], report: MigrationReport) -> None:
        with ThreadPoolExecutor(max_workers=max(1, self.parallel)) as pool:
            results = list(pool.map(self._classic_pair, moves))
        for slots, keys, batches in results:
            report.slots += slots
            report.keys += keys
            report.batches += batches

    def _classic_pair(self, move: SlotMove) -> tuple[int, int, int]:
        host, _, port = self.addresses[move.target].rpartition(":")
        moved_keys = batches = 0
        for chunk in _chunks(_slots(move), self.slots_per_round):
            self._setslots(move.target, chunk, "IMPORTING", move.source)
            try:
                self._setslots(move.source, chunk, "MIGRATING", move.target)
                keys, rounds = self._move_keys(move, chunk, host.strip("[]"), int(port))
            except BaseException:
                self._rollback(move, chunk)
                raise
            self._close_slots(move, chunk)
            moved_keys += keys
            batches += rounds
            self._progress({"event": "moved", "engine": "classic", "source": move.source,
                            "target": move.target, "slots": len(chunk), "keys": keys})  # fmt: skip
        return move.slot_count, moved_keys, batches

    def _setslots(self, node_id: str, slots: Iterable[int], state: str, peer: str) -> None:
        replies = self._batch(node_id, [("CLUSTER", "SETSLOT", s, state, peer) for s in slots])
        errors = [r for r in replies if isinstance(r, Exception)]
        if errors:
            raise MigrationError(f"SETSLOT {state} on {node_id}: {errors[0]}")

    def _move_keys(
        self, move: SlotMove, slots: Sequence[int], host: str, port: int
    ) -> tuple[int, int]:
        moved = rounds = 0
        pending = list(slots)
        while pending:
            commands = [("CLUSTER", "GETKEYSINSLOT", s, self.key_batch) for s in pending]
            keys_per_slot = self._batch(move.source, commands)
            batches = [(s, keys) for s, keys in zip(pending, keys_per_slot, strict=True) if keys]
            if not batches:
                break
            migrate = [("MIGRATE", host, port, "", 0, self.migrate_timeout_ms, "KEYS", *keys)
                       for _, keys in batches]  # fmt: skip
            for (_, keys), reply in zip(batches, self._batch(move.source, migrate), strict=True):
                if isinstance(reply, Exception):
                    if "BUSYKEY" not in str(reply):
                        raise MigrationError(f"MIGRATE failed: {reply}", move.source, move.target)
                    self._resolve_busy(move, keys, host, port)
                moved += len(keys)
            rounds += 1
            pending = [s for s, keys in batches if len(keys) >= self.key_batch]
        return moved, rounds

    def _resolve_busy(self, move: SlotMove, keys: Sequence[Any], host: str, port: int) -> None:
        """As redis-cli does: the same value on both sides → REPLACE; different → stop."""
        source, target = self.node(move.source), self.node(move.target)
        for key in keys:
            if not source.exists(key):
                continue  # moved by the part of the batch that succeeded
            if target.exists(key) and source.dump(key) != target.dump(key):
                raise BusyKeyConflict(
                    f"key {key!r} differs between source and target; resolve it by hand",
                    move.source, move.target,
                )  # fmt: skip
            source.execute_command(
                "MIGRATE", host, port, "", 0, self.migrate_timeout_ms, "REPLACE", "KEYS", key
            )

    def _close_slots(self, move: SlotMove, slots: Sequence[int]) -> None:
        """SETSLOT NODE on the target first, then the source, then every other primary
        (those at once: each SETSLOT NODE costs a server a config save, and the others'
        copies only speed up what gossip would tell them anyway)."""
        others = [n for n in self.addresses if n not in (move.target, move.source)]
        commands = [("CLUSTER", "SETSLOT", s, "NODE", move.target) for s in slots]
        for node_id in (move.target, move.source):
            errors = [r for r in self._batch(node_id, commands) if isinstance(r, Exception)]
            if node_id == move.source:
                # A source that just gave away its last slot may already have turned into
                # a replica of the target (cluster-allow-replica-migration): that is fine.
                errors = [e for e in errors if "only with masters" not in str(e)]
            if errors:
                raise MigrationError(
                    f"SETSLOT NODE on {node_id}: {errors[0]}", move.source, move.target
                )
        if others:
            with ThreadPoolExecutor(max_workers=len(others)) as pool:
                list(pool.map(lambda node_id: self._batch(node_id, commands), others))

    def _rollback(self, move: SlotMove, slots: Sequence[int]) -> None:
        """Close slots whose keys are all still on the source (``STABLE`` both sides).
        A slot with keys already on the target is left open for ``fix``, which decides
        its owner from where the keys are; closing it here would hide those keys."""
        try:
            counts = self._batch(move.target, [("CLUSTER", "COUNTKEYSINSLOT", s) for s in slots])
            clean = [s for s, n in zip(slots, counts, strict=True) if n == 0]
            if len(clean) < len(slots):
                log.error(
                    "%d slots hold keys on both sides: left open for fix", len(slots) - len(clean)
                )
            for node_id in (move.target, move.source):
                self._batch(node_id, [("CLUSTER", "SETSLOT", s, "STABLE") for s in clean])
        except (redis.RedisError, OSError) as exc:
            log.error("rollback of %d slots failed: %s (run `slotpilot fix`)", len(slots), exc)


def _field(job: Any, name: str) -> str:
    if isinstance(job, Mapping):
        value = job.get(name, job.get(name.encode(), ""))
    else:  # RESP2 flat list
        items = list(job)
        value = next(
            (items[i + 1] for i in range(0, len(items) - 1, 2) if _s(items[i]) == name), ""
        )
    return _s(value)


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
