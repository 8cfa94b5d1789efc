"""LocalPlatform: replicas are processes on this machine.

Consumer targets run N copies of a configured command; scaling down stops the highest
replica numbers first, like a StatefulSet, with SIGTERM and a grace period. A replica
gets only the environment the config names (``consumers[].env``: ``NAME`` copied from
the controller, ``NAME=value`` set) plus the basics a process needs to run
(:data:`BASE_ENV`) and ``SLOTPILOT_TARGET`` / ``SLOTPILOT_REPLICA`` — never the
controller's own secrets. A replica that exits 0 has finished and is not counted any
more; one that exits non-zero is reported (a log line, the ``on_crash`` hook for a
metric, :meth:`LocalPlatform.crash_status` for ``status``) and restarted after
:func:`restart_delay` (exponential, capped), by a supervisor thread. :meth:`close` stops
every process the platform started.

The ``shards`` target only reports server processes: a shard count changes by resharding
(:func:`controller.scaling.scale_shards` with a node source such as
:class:`~controller.platform.local_nodes.LocalNodeSource`).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from controller.platform.base import Member, PlatformError

__all__ = ["BASE_ENV", "SHARDS", "LocalPlatform", "ShardProcesses", "replica_env", "restart_delay"]

SHARDS = "shards"
BASE_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")
log = logging.getLogger("slotpilot.platform")


class ShardProcesses(Protocol):
    """What the ``shards`` target reports: running server processes (a dev cluster)."""

    def primaries(self) -> Sequence[Any]: ...

    @property
    def nodes(self) -> Sequence[Any]: ...


def restart_delay(failures: int, base: float = 1.0, cap: float = 60.0) -> float:
    """Seconds before restarting a replica after ``failures`` non-zero exits in a row:
    ``base``, then doubling, at most ``cap`` (0 before any failure)."""
    if failures <= 0:
        return 0.0
    return float(min(cap, base * 2.0 ** min(failures - 1, 62)))


def replica_env(
    target: str, replica: int, names: Sequence[str], environ: Mapping[str, str]
) -> dict[str, str]:
    """The whole environment of one replica: :data:`BASE_ENV` and each ``NAME`` of
    ``names`` copied from ``environ`` when set, each ``NAME=value`` as given, and the
    replica's identity."""
    env = {name: environ[name] for name in BASE_ENV if name in environ}
    for item in names:
        name, eq, value = item.partition("=")
        if eq:
            env[name] = value
        elif name in environ:
            env[name] = environ[name]
    env.update(SLOTPILOT_TARGET=target, SLOTPILOT_REPLICA=str(replica))
    return env


@dataclass
class _Replica:
    """One replica slot: its process (None while waiting to restart) and its failures."""

    proc: subprocess.Popen[bytes] | None
    started: float
    failures: int = 0
    restart_at: float = 0.0


@dataclass
class _Crashes:
    """Per target: how often replicas exited non-zero, and the last exit code."""

    count: int = 0
    last_exit_code: int | None = None
    log: list[str] = field(default_factory=list)


class LocalPlatform:
    """Processes as replicas; thread-safe; :meth:`close` stops every process it started."""

    def __init__(
        self,
        commands: Mapping[str, Sequence[str]],
        cluster: ShardProcesses | None = None,
        grace_seconds: float = 5.0,
        env: Mapping[str, Sequence[str]] | None = None,
        on_crash: Callable[[str, int], None] | None = None,
        backoff: tuple[float, float] = (1.0, 60.0),
        stable_seconds: float = 30.0,
    ) -> None:
        self._commands = {name: list(cmd) for name, cmd in commands.items()}
        self._env = {name: list((env or {}).get(name, ())) for name in commands}
        self._cluster = cluster
        self._grace = grace_seconds
        self._on_crash = on_crash
        self._backoff = backoff
        self._stable = stable_seconds  # a run this long resets the failure count
        self._replicas: dict[str, list[_Replica]] = {n: [] for n in commands}
        self._crashes = {n: _Crashes() for n in commands}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._supervisor: threading.Thread | None = None

    def _target(self, target: str) -> list[_Replica]:
        if target not in self._replicas:
            raise PlatformError(f"unknown target {target!r}; known: {sorted(self._replicas)}")
        return self._replicas[target]

    def _spawn(self, target: str, index: int) -> subprocess.Popen[bytes]:
        env = replica_env(target, index, self._env[target], os.environ)
        return subprocess.Popen(self._commands[target], env=env, stdin=subprocess.DEVNULL)

    def supervise(self, now: float | None = None) -> list[tuple[str, int]]:
        """One supervision pass: forget replicas that finished (exit 0), record and
        schedule the restart of those that failed, restart those that are due. Returns the
        ``(target, exit code)`` failures seen in this pass."""
        now = time.monotonic() if now is None else now
        failed: list[tuple[str, int]] = []
        closed = self._closed.is_set()
        with self._lock:
            for target, replicas in self._replicas.items():
                for index, replica in enumerate(list(replicas)):
                    code = replica.proc.poll() if replica.proc is not None else None
                    if replica.proc is not None and code == 0:
                        replicas.remove(replica)
                    elif replica.proc is not None and code is not None:
                        ran = now - replica.started
                        replica.failures = 1 if ran >= self._stable else replica.failures + 1
                        delay = restart_delay(replica.failures, *self._backoff)
                        replica.proc, replica.restart_at = None, now + delay
                        failed.append((target, code))
                        self._record(target, index, code, replica.failures, delay)
                    elif replica.proc is None and now >= replica.restart_at and not closed:
                        replica.proc, replica.started = self._spawn(target, index), now
        for target, code in failed:
            if self._on_crash is not None:
                self._on_crash(target, code)
        return failed

    def _record(self, target: str, index: int, code: int, failures: int, delay: float) -> None:
        crashes = self._crashes[target]
        crashes.count += 1
        crashes.last_exit_code = code
        line = (f"{target}-{index} exited with {code} ({failures} in a row); "
                f"restarting in {delay:.1f}s")  # fmt: skip
        crashes.log = [*crashes.log[-9:], line]
        log.warning("consumer %s", line)

    def crash_status(self) -> dict[str, dict[str, Any]]:
        """Per target: failed exits so far, the last exit code, replicas waiting to be
        restarted and the latest messages (for ``status`` and metrics)."""
        with self._lock:
            out = {}
            for target, crashes in self._crashes.items():
                replicas = self._replicas[target]
                waiting = [f"{target}-{i}" for i, r in enumerate(replicas) if r.proc is None]
                out[target] = {"failed_exits": crashes.count, "restarting": waiting,
                               "last_exit_code": crashes.last_exit_code,
                               "recent": list(crashes.log)}  # fmt: skip
            return out

    def get_replicas(self, target: str) -> int:
        if target == SHARDS:
            if self._cluster is None:
                raise PlatformError("no local cluster attached")
            return len(self._cluster.primaries())
        self._target(target)
        self.supervise()
        with self._lock:
            return len(self._target(target))

    def members(self, target: str) -> list[Member]:
        if target == SHARDS:
            if self._cluster is None:
                raise PlatformError("no local cluster attached")
            return [Member(f"node-{n.port}", n.address, n.running) for n in self._cluster.nodes]
        self._target(target)
        self.supervise()
        with self._lock:
            return [
                Member(f"{target}-{i}", None, r.proc is not None and r.proc.poll() is None)
                for i, r in enumerate(self._target(target))
            ]

    def pids(self, target: str) -> list[int | None]:
        """Process ids of the target's replicas (None: waiting to be restarted)."""
        with self._lock:
            return [r.proc.pid if r.proc else None for r in self._target(target)]

    def set_replicas(self, target: str, replicas: int) -> None:
        if replicas < 0:
            raise PlatformError(f"{target}: replicas must be >= 0, got {replicas}")
        if target == SHARDS:
            raise PlatformError("shard counts change by resharding: controller.scaling")
        self._target(target)
        self.supervise()
        with self._lock:
            current = self._target(target)
            if self._closed.is_set() and replicas:
                raise PlatformError("the platform is closed")
            while len(current) < replicas:
                current.append(_Replica(self._spawn(target, len(current)), time.monotonic()))
            stopping = current[replicas:]
            del current[replicas:]
        for replica in reversed(stopping):
            if replica.proc is not None:
                self._stop(replica.proc)
        if replicas and self._supervisor is None:
            self._start_supervisor()

    def _start_supervisor(self) -> None:
        def run() -> None:
            while not self._closed.wait(0.2):
                try:
                    self.supervise()
                except Exception:  # supervision must outlive one bad pass
                    log.exception("consumer supervision failed")

        self._supervisor = threading.Thread(target=run, name="slotpilot-supervisor", daemon=True)
        self._supervisor.start()

    def _stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=self._grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def close(self) -> None:
        """Stop supervising (no more restarts) and stop every replica."""
        self._closed.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout=5)
        for target in list(self._replicas):
            self.set_replicas(target, 0)
