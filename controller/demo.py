"""``slotpilot demo``: the SDK against a real local cluster, with a failure in the middle.

Until the controller drives scaling (it will take this command over), the demo shows
what the client side guarantees: a 3-shard cluster with one replica each is started on
127.0.0.1, a writer and a replica reader run through :class:`balancer.ClusterClient`,
one replica is killed and another hung (SIGSTOP), and every acknowledged key is read
back at the end. The summary is one JSON object on stdout.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import TextIO

from balancer import ClusterClient
from controller.localcluster import LocalCluster

__all__ = ["DemoResult", "run_demo"]


@dataclass
class DemoResult:
    server: str
    shards: int
    seconds: float
    writes: int = 0
    reads: int = 0
    errors: list[str] = field(default_factory=list)
    keys_written: int = 0
    keys_read_back: int = 0
    worst_read_stall_seconds: float = 0.0
    events: list[str] = field(default_factory=list)
    client: dict[str, int] = field(default_factory=dict)


def _loop(stop: threading.Event, work: object, result: DemoResult, kind: str) -> None:
    i = 0
    while not stop.is_set():
        started = time.monotonic()
        try:
            work(i)  # type: ignore[operator]
            if kind == "read":
                result.reads += 1
            else:
                result.writes += 1
        except Exception as exc:
            result.errors.append(f"{kind}: {type(exc).__name__}: {exc}")
            if len(result.errors) > 100:
                return
        if kind == "read":
            stall = time.monotonic() - started
            result.worst_read_stall_seconds = max(result.worst_read_stall_seconds, stall)
        i += 1


def run_demo(seconds: float = 6.0, out: TextIO = sys.stderr) -> DemoResult:
    """Run the demo for about ``seconds`` and return its summary."""

    def say(message: str) -> None:
        print(f"[demo] {message}", file=out, flush=True)

    with LocalCluster(3, 1) as cluster:
        result = DemoResult(server=cluster.binary, shards=3, seconds=seconds)
        say(f"cluster up: {len(cluster.nodes)} nodes of {cluster.binary} on 127.0.0.1")
        client = ClusterClient(cluster.seed, read_from="replicas", strategy="least_connections")
        acked: dict[str, str] = {}
        seed_keys = [f"seed:{i}" for i in range(1000)]
        client.mset({k: k for k in seed_keys})

        def write(i: int) -> None:
            client.set(f"demo:{i}", str(i))
            acked[f"demo:{i}"] = str(i)

        def read(i: int) -> None:
            key = seed_keys[i % len(seed_keys)]
            if client.get(key) != key.encode():
                raise AssertionError(f"{key} read back wrong")

        stop = threading.Event()
        threads = [
            threading.Thread(target=_loop, args=(stop, write, result, "write"), daemon=True),
            threading.Thread(target=_loop, args=(stop, read, result, "read"), daemon=True),
        ]
        for t in threads:
            t.start()
        shards = cluster.shard_map()
        step = seconds / 3
        time.sleep(step)
        killed = shards[0][1][0]
        killed.kill()
        result.events.append(f"t={step:.1f}s killed replica {killed.address}")
        say(result.events[-1])
        time.sleep(step)
        hung = shards[1][1][0]
        hung.signal(signal.SIGSTOP)
        result.events.append(f"t={2 * step:.1f}s hung replica {hung.address} (SIGSTOP)")
        say(result.events[-1])
        time.sleep(step)
        stop.set()
        for t in threads:
            t.join(timeout=10)
        result.keys_written = len(acked)
        result.keys_read_back = sum(
            1
            for k, v in zip(acked, client.mget(list(acked)), strict=True)
            if v == acked[k].encode()
        )
        result.client = asdict(client.stats)
        client.close()
    say(
        f"{result.writes} writes, {result.reads} reads, {len(result.errors)} errors, "
        f"{result.keys_read_back}/{result.keys_written} keys read back, "
        f"worst read stall {result.worst_read_stall_seconds * 1000:.0f} ms"
    )
    return result


def print_result(result: DemoResult, out: TextIO = sys.stdout) -> None:
    out.write(json.dumps(asdict(result), indent=2) + "\n")
