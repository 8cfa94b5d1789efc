"""LocalPlatform: replicas are processes on this machine.

Consumer targets run N copies of a configured command (each gets ``SLOTPILOT_TARGET``
and ``SLOTPILOT_REPLICA`` in its environment); scaling down stops the highest replica
numbers first, like a StatefulSet, with SIGTERM and a grace period. The ``shards``
target reports the server processes of a :class:`~controller.localcluster.LocalCluster`;
it is not changed through :meth:`LocalPlatform.set_replicas`: a shard count changes by
resharding (:func:`controller.scaling.scale_shards`, which the controller runs with a
``LocalCluster`` or :func:`~controller.localcluster.local_node_source` as node source).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence

from controller.localcluster import LocalCluster
from controller.platform.base import Member, PlatformError

__all__ = ["SHARDS", "LocalPlatform"]

SHARDS = "shards"


class LocalPlatform:
    """Processes as replicas; thread-safe; :meth:`close` stops every process it started."""

    def __init__(
        self,
        commands: Mapping[str, Sequence[str]],
        cluster: LocalCluster | None = None,
        grace_seconds: float = 5.0,
    ) -> None:
        self._commands = {name: list(cmd) for name, cmd in commands.items()}
        self._cluster = cluster
        self._grace = grace_seconds
        self._procs: dict[str, list[subprocess.Popen[bytes]]] = {n: [] for n in commands}
        self._lock = threading.Lock()

    def _target(self, target: str) -> list[subprocess.Popen[bytes]]:
        if target not in self._procs:
            raise PlatformError(f"unknown target {target!r}; known: {sorted(self._procs)}")
        procs = self._procs[target]
        procs[:] = [p for p in procs if p.poll() is None]  # forget exited replicas
        return procs

    def get_replicas(self, target: str) -> int:
        if target == SHARDS:
            if self._cluster is None:
                raise PlatformError("no local cluster attached")
            return len(self._cluster.primaries())
        with self._lock:
            return len(self._target(target))

    def members(self, target: str) -> list[Member]:
        if target == SHARDS:
            if self._cluster is None:
                raise PlatformError("no local cluster attached")
            return [Member(f"node-{n.port}", n.address, n.running) for n in self._cluster.nodes]
        with self._lock:
            return [
                Member(f"{target}-{i}", None, p.poll() is None)
                for i, p in enumerate(self._target(target))
            ]

    def set_replicas(self, target: str, replicas: int) -> None:
        if replicas < 0:
            raise PlatformError(f"{target}: replicas must be >= 0, got {replicas}")
        if target == SHARDS:
            raise PlatformError("shard counts change by resharding: controller.scaling")
        with self._lock:
            procs = self._target(target)
            while len(procs) < replicas:
                env = dict(os.environ, SLOTPILOT_TARGET=target, SLOTPILOT_REPLICA=str(len(procs)))
                procs.append(
                    subprocess.Popen(self._commands[target], env=env, stdin=subprocess.DEVNULL)
                )
            stopping = procs[replicas:]
            del procs[replicas:]
        for proc in reversed(stopping):
            self._stop(proc)

    def _stop(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=self._grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def close(self) -> None:
        for target in list(self._procs):
            self.set_replicas(target, 0)
