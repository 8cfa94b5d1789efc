"""Probe every cluster node, concurrently, into plain values.

One probe cycle: read ``CLUSTER NODES`` from any reachable node (seeds first time,
then any known node) to learn who is in the cluster, then on every node at once:
``PING`` (latency), ``INFO`` (memory, clients, CPU, ops, replication) and
``CLUSTER INFO``. Each node's probe goes through its breaker — a dead node costs at most
one timeout per reset window — and every failure becomes a reason on the sample, never
an exception: a malformed reply, a refused connection or a hung node must not stop the
loop. This module is I/O; what the samples mean is decided in ``health.py``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from balancer.breaker import BreakerPolicy, NodeBreaker

__all__ = [
    "ClusterNodeEntry",
    "NodeSample",
    "Probe",
    "ProbeResult",
    "myself_entry",
    "parse_node_entries",
]


@dataclass(frozen=True)
class ClusterNodeEntry:
    """One line of ``CLUSTER NODES`` as the answering node sees it."""

    node_id: str
    address: str  # "host:port", "" for noaddr
    flags: frozenset[str]
    primary_id: str | None
    config_epoch: int
    slots: tuple[tuple[int, int], ...]
    open_slots: tuple[tuple[int, str, str], ...]  # (slot, "migrating"|"importing", peer id)

    @property
    def is_primary(self) -> bool:
        return "master" in self.flags


@dataclass(frozen=True)
class NodeSample:
    """What one node said in one cycle. ``error`` names why it said nothing useful."""

    address: str
    taken_at: float
    error: str | None = None
    latency_seconds: float | None = None
    info: Mapping[str, Any] = field(default_factory=dict)
    cluster_info: Mapping[str, Any] = field(default_factory=dict)
    open_slots: tuple[tuple[int, str, str], ...] = ()  # the node's own migrating/importing

    @property
    def ok(self) -> bool:
        return self.error is None

    def number(self, key: str) -> float | None:
        """A numeric INFO field, or None when absent or not a number."""
        value = self.info.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return float(value)


@dataclass(frozen=True)
class ProbeResult:
    """One cycle: the membership as seen by ``source`` and one sample per node."""

    started_at: float
    duration_seconds: float
    source: str | None  # node whose CLUSTER NODES was used; None: no node answered
    entries: tuple[ClusterNodeEntry, ...]
    samples: Mapping[str, NodeSample]
    membership_error: str | None = None


def _node_line(line: str) -> tuple[str, ClusterNodeEntry]:
    """One ``CLUSTER NODES`` line: ``id ip:port@cport[,hostname] flags primary ping pong
    epoch link slot…``, a slot being ``N``, ``N-M``, ``[N->-id]`` or ``[N-<-id]``."""
    fields = line.split(" ")
    node_id, address, flag_text, primary = fields[0], fields[1], fields[2], fields[3]
    epoch = int(fields[6])
    if fields[7] not in ("connected", "disconnected"):
        raise ValueError(f"link state {fields[7]!r}")
    flags = frozenset(flag_text.split(","))
    host_port = address.split("@")[0]
    slots: list[tuple[int, int]] = []
    open_slots: list[tuple[int, str, str]] = []
    for item in fields[8:]:
        if not item:
            continue
        if item.startswith("["):
            body = item.strip("[]")
            if "->-" in body:
                slot, peer = body.split("->-", 1)
                open_slots.append((int(slot), "migrating", peer))
            elif "-<-" in body:
                slot, peer = body.split("-<-", 1)
                open_slots.append((int(slot), "importing", peer))
            else:
                raise ValueError(f"slot {item!r}")
            continue
        low, _, high = item.partition("-")
        slots.append((int(low), int(high or low)))
    entry = ClusterNodeEntry(
        node_id=node_id,
        address="" if host_port.startswith(":") or "noaddr" in flags else host_port,
        flags=flags,
        primary_id=None if primary == "-" else primary,
        config_epoch=epoch,
        slots=tuple(slots),
        open_slots=tuple(open_slots),
    )
    return host_port, entry


def parse_node_entries(raw: Any) -> tuple[ClusterNodeEntry, ...]:
    """``CLUSTER NODES`` text → entries, one per address (a later line for the same
    address wins, as the server lists a node once). ValueError if malformed."""
    text = raw.decode() if isinstance(raw, bytes | bytearray) else raw
    if not isinstance(text, str):
        raise ValueError(f"malformed CLUSTER NODES reply: not text but {type(raw).__name__}")
    by_address: dict[str, ClusterNodeEntry] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            address, entry = _node_line(line.strip())
        except (IndexError, ValueError) as exc:
            raise ValueError(f"malformed CLUSTER NODES reply: {exc!r} in {line!r:.120}") from None
        by_address[address] = entry
    return tuple(by_address.values())


def _error_reason(exc: BaseException) -> str:
    if isinstance(exc, redis.TimeoutError | TimeoutError):
        return "timeout"
    if isinstance(exc, redis.AuthenticationError):
        return "auth"
    if isinstance(exc, redis.ConnectionError | OSError):
        return "connection"
    if isinstance(exc, redis.ResponseError):
        return "error_reply"
    return "malformed"


def myself_entry(raw: Any) -> ClusterNodeEntry | None:
    """The answering node's own line of ``CLUSTER NODES`` (the only line that lists its
    migrating/importing slots), parsing only that line."""
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    mine = next((line for line in text.splitlines() if "myself" in line), None)
    return parse_node_entries(mine)[0] if mine is not None else None


class Probe:
    """Probes a cluster from its seeds; keep one instance across cycles (it holds the
    per-node connections and breakers)."""

    def __init__(
        self,
        seeds: Sequence[str],
        timeout: float = 0.5,
        breaker: BreakerPolicy | None = None,
        max_workers: int = 32,
        **connection_kwargs: Any,
    ) -> None:
        if not seeds:
            raise ValueError("Probe needs at least one seed 'host:port'")
        self.seeds = tuple(seeds)
        self.timeout = timeout
        self.breaker_policy = breaker or BreakerPolicy(fail_max=3, reset_timeout=10)
        self._kwargs = connection_kwargs
        self._clients: dict[str, redis.Redis] = {}
        self._breakers: dict[str, NodeBreaker] = {}
        self._known: tuple[str, ...] = ()
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="probe")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        for client in self._clients.values():
            client.close()

    def client(self, address: str) -> redis.Redis:
        client = self._clients.get(address)
        if client is None:
            host, _, port = address.rpartition(":")
            client = redis.Redis(
                host=host.strip("[]"),
                port=int(port),
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
                decode_responses=True,
                retry=Retry(NoBackoff(), 0),  # one try: the breaker decides about retries
                **self._kwargs,
            )
            self._clients[address] = client
        return client

    def breaker(self, address: str) -> NodeBreaker:
        breaker = self._breakers.get(address)
        if breaker is None:
            breaker = self._breakers[address] = NodeBreaker(address, self.breaker_policy)
        return breaker

    def _membership(self) -> tuple[str | None, tuple[ClusterNodeEntry, ...], str | None]:
        errors = []
        for address in dict.fromkeys(self._known + self.seeds):
            if not self.breaker(address).available(time.monotonic()):
                continue
            try:
                raw = self.client(address).execute_command("CLUSTER", "NODES")
                entries = parse_node_entries(raw if isinstance(raw, str) else str(raw))
            except (redis.RedisError, OSError, ValueError) as exc:
                errors.append(f"{address}: {_error_reason(exc)}")
                continue
            return address, entries, None
        return None, (), "; ".join(errors) or "no reachable node"

    def sample(self, address: str) -> NodeSample:
        """Probe one node (called on the pool; never raises)."""
        started = time.monotonic()
        breaker = self.breaker(address)
        if not breaker.admit(started):
            return NodeSample(address, started, error="breaker_open")
        trial = breaker.state != "closed"
        try:
            client = self.client(address)
            t0 = time.perf_counter()
            client.ping()
            latency = time.perf_counter() - t0
            info = client.info()
            cluster_info = client.cluster("info")
            if not isinstance(info, Mapping) or not isinstance(cluster_info, Mapping):
                raise ValueError("INFO reply is not a mapping")
            # A node lists only its own migrating/importing slots: ask every primary.
            own: tuple[tuple[int, str, str], ...] = ()
            if info.get("role") == "master":
                mine = myself_entry(client.execute_command("CLUSTER", "NODES"))
                own = mine.open_slots if mine is not None else ()
        except Exception as exc:  # any failure is a reason on the sample
            breaker.record(exc, trial)
            return NodeSample(address, started, error=_error_reason(exc))
        breaker.record(None, trial)
        return NodeSample(
            address,
            started,
            latency_seconds=latency,
            info=dict(info),
            cluster_info=dict(cluster_info),
            open_slots=own,
        )

    def run(self) -> ProbeResult:
        """One probe cycle; bounded by about two timeouts per node, in parallel."""
        started = time.monotonic()
        source, entries, membership_error = self._membership()
        addresses = [e.address for e in entries if e.address] or list(self.seeds)
        self._known = tuple(addresses)
        futures = {a: self._pool.submit(self.sample, a) for a in addresses}
        wait(futures.values(), timeout=self.timeout * 4 + 1)
        samples = {
            a: f.result() if f.done() else NodeSample(a, started, error="timeout")
            for a, f in futures.items()
        }
        return ProbeResult(
            started_at=started,
            duration_seconds=time.monotonic() - started,
            source=source,
            entries=entries,
            samples=samples,
            membership_error=membership_error,
        )
