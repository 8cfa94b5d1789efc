"""Slot migration engines: execute a :class:`~controller.rebalance.RebalancePlan`.

Two engines, chosen by capability (overridable):

- **atomic** — Valkey ≥ 9 ``CLUSTER MIGRATESLOTS``: one command per source node carries
  every (ranges → target) block; progress from ``CLUSTER GETSLOTMIGRATIONS``. That list
  keeps finished, failed and cancelled jobs of earlier runs too, so only the jobs this
  run created (the names that were not listed before it sent the command) are judged,
  and ``CLUSTER CANCELSLOTMIGRATIONS`` (which cancels every running job of a node) is
  sent only where no job of anybody else is running.
- **classic** — Redis 7: ``SETSLOT IMPORTING`` on the target, ``MIGRATING`` on the source,
  ``GETKEYSINSLOT`` + ``MIGRATE … KEYS``, then ``SETSLOT NODE`` on the target, the source
  and every other primary. redis-cli does this one slot and ten keys per round trip;
  here every per-slot command of a round of many slots goes in one pipeline, keys move
  in large batches, and independent source → target pairs run in parallel. ``MIGRATE``
  carries the credentials of the admin connection (``AUTH2 user pass`` or ``AUTH pass``):
  the source opens its own connection to the target, which would otherwise answer NOAUTH.

Every slot set IMPORTING/MIGRATING is closed with ``SETSLOT NODE`` before the pair
returns. When a pair fails, a slot whose keys are all still on the source is set back
to ``STABLE`` — the source first, so it stops sending clients to the target with ASK,
then the target — and keys that clients wrote to the target through ASK meanwhile are
moved back (:meth:`MigrationExecutor.roll_back_slot`); a slot with keys on both sides
stays open (the error log says so) for ``fix``, which finishes it toward the target
(:meth:`MigrationExecutor.finish_slot`): closing it on either side would hide keys.
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

from balancer.endpoint import parse_address
from balancer.transport import NodeTransport, TransportOptions
from controller.rebalance import RebalancePlan, SlotMove

__all__ = [
    "ENGINES",
    "BusyKeyConflict",
    "MigrationError",
    "MigrationExecutor",
    "MigrationInterrupted",
    "MigrationReport",
    "Progress",
    "detect_engine",
    "migrate_auth",
]

log = logging.getLogger("slotpilot.migration")
ENGINES = ("auto", "atomic", "classic")
_TERMINAL = {"success", "failed", "cancelled"}
_STRAY_ROUNDS = 5  # a client's ASK that was already under way lands once, not forever


class MigrationError(RuntimeError):
    """A slot move failed; ``slots`` were rolled back to their source."""

    def __init__(self, message: str, source: str = "", target: str = "", slots: int = 0) -> None:
        super().__init__(message)
        self.source, self.target, self.slots = source, target, slots


class MigrationInterrupted(MigrationError):
    """The caller may no longer act (leadership lost, shutting down): stopped between
    batches, nothing left open. The next actor resumes from the cluster's state."""


class BusyKeyConflict(MigrationError):
    """The target already holds a key with a different value: a person must decide."""


@dataclass
class MigrationReport:
    """What one :meth:`MigrationExecutor.execute` moved, and how fast."""

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


def migrate_auth(client: redis.Redis) -> list[Any]:
    """The ``AUTH``/``AUTH2`` arguments of ``MIGRATE`` for the credentials ``client``
    logs in with (its connection kwargs or credential provider); [] without a password.
    The result holds the password: pass it to the server, never to a log or an error."""
    kwargs = client.connection_pool.connection_kwargs
    username, password = kwargs.get("username"), kwargs.get("password")
    provider = kwargs.get("credential_provider")
    if provider is not None:
        credentials = tuple(provider.get_credentials())
        username, password = credentials if len(credentials) == 2 else (None, credentials[0])
    if not password:
        return []
    return ["AUTH2", username, password] if username else ["AUTH", password]


def _chunks(items: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class MigrationExecutor:
    """Runs plans against live nodes. ``addresses`` maps node id → "host:port".

    ``slots_per_round`` bounds how many slots one pipeline opens, empties and closes: a
    Redis 7 node handles a pipeline's commands back to back, so that is how long its
    clients wait. Draining 2 of 5 shards (x1 replica, loaded 2-core machine) with 1024
    slots a round stalled a node's PING for up to 0.3-1.0 s (above the SDK's 0.5 s socket
    timeout); with 256 for up to 0.13-0.21 s, in about the same total time.
    """

    def __init__(
        self,
        addresses: Mapping[str, str],
        connect: Callable[[str], redis.Redis],
        engine: str = "auto",
        key_batch: int = 1000,
        slots_per_round: int = 256,
        parallel: int = 8,
        migrate_timeout_ms: int = 10_000,
        deadline_seconds: float = 600.0,
        progress: Progress | None = None,
        may_continue: Callable[[], bool] | None = None,
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
        self._may_continue = may_continue or (lambda: True)
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

    def _check_may_continue(self) -> None:
        if not self._may_continue():
            raise MigrationInterrupted("stopped between batches: this controller may no longer act")

    # -- single slots, for `fix` ------------------------------------------------------

    def count_keys(self, node_id: str, slots: Sequence[int]) -> list[int]:
        """Keys ``node_id`` holds in each of ``slots`` (owned or not), in one round trip."""
        replies = self._batch(node_id, [("CLUSTER", "COUNTKEYSINSLOT", s) for s in slots])
        for reply in replies:
            if isinstance(reply, Exception):
                raise MigrationError(f"COUNTKEYSINSLOT on {node_id}: {reply}")
        return [int(n) for n in replies]

    def finish_slot(self, slot: int, source: str, target: str) -> int:
        """Complete a half-done move of ``slot``: open it on both sides (again), move the
        keys still on ``source``, hand the slot to ``target`` everywhere, then move any
        key that reached ``source`` meanwhile. Returns the keys moved."""
        move = SlotMove(((slot, slot),), source, target)
        # A crash between SETSLOT NODE on the target and on the source leaves the target
        # owning the slot already: it refuses IMPORTING, and the source (no longer the
        # owner) refuses MIGRATING. The keys still on the source move all the same.
        self._setslots(target, [slot], "IMPORTING", source, tolerate="already the owner")
        self._setslots(source, [slot], "MIGRATING", target, tolerate="not the owner")
        moved, _ = self._move_keys(move, [slot])
        self._close_slots(move, [slot])
        return moved + self._return_strays(slot, holder=source, owner=target)

    def roll_back_slot(self, slot: int, source: str, target: str) -> int:
        """Give an open ``slot`` back to ``source``: ``STABLE`` on the source first (it
        stops sending clients to the target with ASK), then on the target, then move
        back every key the target holds in the slot (clients wrote them through ASK
        while it was open). Returns how many keys were moved back."""
        self._setslots(source, [slot], "STABLE")
        self._setslots(target, [slot], "STABLE")
        return self._return_strays(slot, holder=target, owner=source)

    # -- atomic (Valkey 9) --------------------------------------------------------------

    def _atomic(self, moves: Sequence[SlotMove], report: MigrationReport) -> None:
        by_source: dict[str, list[SlotMove]] = {}
        for move in moves:
            by_source.setdefault(move.source, []).append(move)
        keys = [self._count_keys(m) for m in moves]
        report.keys = sum(keys)
        ours: dict[str, set[str]] = {}
        try:
            for source, source_moves in by_source.items():
                ours[source] = self._start_atomic(source, source_moves)
            self._await_atomic(ours)
        except BaseException:
            self._cancel(ours)
            raise
        for move, count in zip(moves, keys, strict=True):
            report.slots += move.slot_count
            self._progress({"event": "moved", "engine": "atomic", "source": move.source,
                            "target": move.target, "slots": move.slot_count,
                            "keys": count})  # fmt: skip

    def _jobs(self, source: str) -> dict[str, dict[str, str]]:
        """``CLUSTER GETSLOTMIGRATIONS`` of ``source``: job name → its text fields."""
        jobs = self.node(source).execute_command("CLUSTER", "GETSLOTMIGRATIONS") or []
        fields = ("operation", "state", "message", "target_node", "slot_ranges")
        return {_field(job, "name"): {f: _field(job, f) for f in fields} for job in jobs}

    def _start_atomic(self, source: str, moves: Sequence[SlotMove]) -> set[str]:
        """Send one ``MIGRATESLOTS`` to ``source``; the names of the jobs it created."""
        before = self._jobs(source)
        running = sorted(n for n, job in before.items() if job["state"] not in _TERMINAL)
        if running:  # not ours: cancelling on failure would cancel it too
            raise MigrationError(
                f"{source} is already migrating slots (job {running[0]}, not started by this "
                "run): wait for it to end", source,
            )  # fmt: skip
        args: list[Any] = ["CLUSTER", "MIGRATESLOTS"]
        for move in moves:
            args.append("SLOTSRANGE")
            for start, end in move.slot_ranges:
                args += [start, end]
            args += ["NODE", move.target]
        self.node(source).execute_command(*args)
        created = {
            name for name, job in self._jobs(source).items()
            if name not in before and job["operation"].upper() == "EXPORT"
        }  # fmt: skip
        if not created:
            raise MigrationError(f"MIGRATESLOTS on {source} listed no new job", source)
        return created

    def _await_atomic(self, ours: Mapping[str, set[str]]) -> None:
        """Wait until every job of ours succeeded; raise on the first that did not."""
        deadline = time.monotonic() + self.deadline_seconds
        pending = set(ours)
        while pending:
            for source in sorted(pending):
                jobs = self._jobs(source)
                states = {name: jobs.get(name, {}).get("state", "missing") for name in ours[source]}
                bad = sorted(
                    n for n, s in states.items() if s in ("failed", "cancelled", "missing")
                )
                if bad:
                    job = jobs.get(bad[0], {})
                    raise MigrationError(
                        f"atomic migration job {bad[0]} from {source} {states[bad[0]]}: "
                        f"{job.get('message') or 'no message'}", source, job.get("target_node", ""),
                    )  # fmt: skip
                if all(state == "success" for state in states.values()):
                    pending.discard(source)
            if pending and time.monotonic() > deadline:
                raise MigrationError(f"atomic migration not done in {self.deadline_seconds}s")
            if pending:  # our jobs are cancelled by the caller: the source keeps its slots
                self._check_may_continue()
            if pending:
                time.sleep(0.01)

    def _cancel(self, ours: Mapping[str, set[str]]) -> None:
        """Cancel our running jobs. The command cancels every running job of a node, so a
        node that also runs a job of somebody else is left alone (logged): an atomic job
        that goes on to finish moves its keys with the slots, losing nothing."""
        for source, names in ours.items():
            try:
                jobs = self._jobs(source)
                running = {n for n, job in jobs.items() if job["state"] not in _TERMINAL}
                if not running & names:
                    continue
                if running - names:
                    log.warning("not cancelling on %s: job %s was not started by this run",
                                source, sorted(running - names)[0])  # fmt: skip
                    continue
                self.node(source).execute_command("CLUSTER", "CANCELSLOTMIGRATIONS")
            except redis.RedisError as exc:
                log.warning("cancel on %s failed: %s", source, exc)

    def _count_keys(self, move: SlotMove) -> int:
        return sum(self.count_keys(move.source, move.slots))

    def _dump(self, node_id: str, key: Any) -> bytes | None:
        """``DUMP key`` on ``node_id`` after ``ASKING`` (so a node importing the slot
        answers too); None when the key is not there, which a node migrating the slot
        says with an ASK redirection."""
        try:
            value = self._transport(node_id).execute(("DUMP", key), never_decode=True, asking=True)
        except redis.exceptions.AskError:
            return None
        return None if value is None else bytes(value)

    def _batch(self, node_id: str, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Many commands to one node in one round trip; error replies come back in place.
        Uses the SDK's transport: redis-py's Pipeline costs more Python per command than
        the server needs to run a SETSLOT, and a rebalance sends tens of thousands."""
        return self._transport(node_id).execute_many(commands) if commands else []

    def _transport(self, node_id: str) -> NodeTransport:
        """The SDK transport to ``node_id``, with the admin connection's settings."""
        transport = self._transports.get(node_id)
        if transport is None:
            kwargs = dict(self.node(node_id).connection_pool.connection_kwargs)
            host, port = kwargs.pop("host"), kwargs.pop("port")
            ssl = self.node(node_id).connection_pool.connection_class is SSLConnection
            options = TransportOptions(ssl=ssl, **kwargs)
            transport = self._transports.setdefault(node_id, NodeTransport(host, port, options, 64))
        return transport

    # -- classic (Redis 7) --------------------------------------------------------------

    def _classic(self, moves: Sequence[SlotMove], report: MigrationReport) -> None:
        with ThreadPoolExecutor(max_workers=max(1, self.parallel)) as pool:
            results = list(pool.map(self._classic_pair, moves))
        for slots, keys, batches in results:
            report.slots += slots
            report.keys += keys
            report.batches += batches

    def _classic_pair(self, move: SlotMove) -> tuple[int, int, int]:
        moved_keys = batches = 0
        for chunk in _chunks(move.slots, self.slots_per_round):
            self._check_may_continue()
            self._setslots(move.target, chunk, "IMPORTING", move.source)
            try:
                self._setslots(move.source, chunk, "MIGRATING", move.target)
                keys, rounds = self._move_keys(move, chunk)
            except BaseException:
                self._rollback(move, chunk)
                raise
            self._close_slots(move, chunk)
            moved_keys += keys
            batches += rounds
            self._progress({"event": "moved", "engine": "classic", "source": move.source,
                            "target": move.target, "slots": len(chunk), "keys": keys})  # fmt: skip
        return move.slot_count, moved_keys, batches

    def _setslots(
        self, node_id: str, slots: Iterable[int], state: str, *peer: str, tolerate: str = ""
    ) -> None:
        """``CLUSTER SETSLOT slot state [peer]`` for every slot, in one round trip; error
        replies containing ``tolerate`` (when given) are expected and ignored."""
        replies = self._batch(node_id, [("CLUSTER", "SETSLOT", s, state, *peer) for s in slots])
        errors = [r for r in replies if isinstance(r, Exception)
                  and not (tolerate and tolerate in str(r))]  # fmt: skip
        if errors:
            raise MigrationError(f"SETSLOT {state} on {node_id}: {errors[0]}")

    def _migrate_args(self, move: SlotMove, keys: Sequence[Any], *options: str) -> list[Any]:
        """``MIGRATE … KEYS`` from the source to the target, with our credentials."""
        host, port = parse_address(self.addresses[move.target])
        auth = migrate_auth(self.node(move.source))
        return [host, port, "", 0, self.migrate_timeout_ms, *options, *auth, "KEYS", *keys]

    def _move_keys(self, move: SlotMove, slots: Sequence[int]) -> tuple[int, int]:
        moved = rounds = 0
        pending = list(slots)
        while pending:
            commands = [("CLUSTER", "GETKEYSINSLOT", s, self.key_batch) for s in pending]
            keys_per_slot = self._batch(move.source, commands)
            batches = [(s, keys) for s, keys in zip(pending, keys_per_slot, strict=True) if keys]
            if not batches:
                break
            migrate = [("MIGRATE", *self._migrate_args(move, keys)) for _, keys in batches]
            for (_, keys), reply in zip(batches, self._batch(move.source, migrate), strict=True):
                if isinstance(reply, Exception):
                    if "BUSYKEY" not in str(reply):
                        raise MigrationError(f"MIGRATE failed: {reply}", move.source, move.target)
                    self._resolve_busy(move, keys)
                moved += len(keys)
            rounds += 1
            pending = [s for s, keys in batches if len(keys) >= self.key_batch]
        return moved, rounds

    def _resolve_busy(self, move: SlotMove, keys: Sequence[Any]) -> None:
        """As redis-cli does: the same value on both sides → REPLACE; different → stop."""
        for key in keys:
            here = self._dump(move.source, key)
            if here is None:
                continue  # moved by the part of the batch that succeeded
            there = self._dump(move.target, key)
            if there is not None and here != there:
                raise BusyKeyConflict(
                    f"key {key!r} differs between {move.source} and {move.target}; "
                    "resolve it by hand", move.source, move.target,
                )  # fmt: skip
            reply = self._batch(
                move.source, [("MIGRATE", *self._migrate_args(move, [key], "REPLACE"))]
            )
            if isinstance(reply[0], Exception):
                raise MigrationError(f"MIGRATE failed: {reply[0]}", move.source, move.target)

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

    def _return_strays(self, slot: int, holder: str, owner: str) -> int:
        """Move the keys ``holder`` keeps in ``slot``, which ``owner`` serves, to ``owner``.

        A node answers ``MIGRATE`` for a slot it does not serve only while the slot is
        open there, so ``holder`` imports it for the moment (from ``owner``, which is
        stable and sends nobody to it) and is set stable again afterwards. Counted again
        until none is left: a write that was already on its way through ASK lands late.
        """
        moved = 0
        for _ in range(_STRAY_ROUNDS):
            if self.count_keys(holder, [slot])[0] == 0:
                return moved
            log.warning("slot %d: %s holds keys of %s's slot, moving them back",
                        slot, holder, owner)  # fmt: skip
            self._setslots(holder, [slot], "IMPORTING", owner)
            try:
                moved += self._move_keys(SlotMove(((slot, slot),), holder, owner), [slot])[0]
            finally:
                self._setslots(holder, [slot], "STABLE")
        if self.count_keys(holder, [slot])[0]:
            raise MigrationError(
                f"slot {slot}: keys keep arriving on {holder}, which does not serve it "
                f"(owner {owner}); run `slotpilot fix` again", holder, owner,
            )  # fmt: skip
        return moved

    def _rollback(self, move: SlotMove, slots: Sequence[int]) -> None:
        """Close slots whose keys are all still on the source (source ``STABLE``, then
        target, then keys written to the target through ASK meanwhile moved back). A slot
        with keys already on the target is left open for ``fix``, which decides its owner
        from where the keys are; closing it here would hide those keys."""
        try:
            counts = self.count_keys(move.target, slots)
            clean = [s for s, n in zip(slots, counts, strict=True) if n == 0]
            if len(clean) < len(slots):
                log.error(
                    "%d slots hold keys on both sides: left open for fix", len(slots) - len(clean)
                )
            self._setslots(move.source, clean, "STABLE")
            self._setslots(move.target, clean, "STABLE")
            for slot, n in zip(clean, self.count_keys(move.target, clean), strict=True):
                if n:
                    self._return_strays(slot, holder=move.target, owner=move.source)
        except (redis.RedisError, OSError, MigrationError) as exc:
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
