"""``slotpilot demo``: the whole loop on a real local cluster, and the SDK under faults.

:func:`run_reshard_demo` (``slotpilot demo``) starts a 3-shard cluster (one replica each)
on 127.0.0.1 and the controller with the local platform and low cooldowns, drives load
through :class:`balancer.ClusterClient` until the controller scales out (new server
processes join, slots move live), drops the load until it scales back in (the newest
shards drain, are forgotten and stop), and reads every acknowledged key back.

:func:`run_demo` (``slotpilot demo --faults``) shows the client side alone: a writer and a
replica reader while one replica is killed and another hung (SIGSTOP).

Both print progress on stderr and one JSON summary on stdout.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

from balancer import ClusterClient
from controller.localcluster import LocalCluster

__all__ = ["DemoResult", "ReshardResult", "print_result", "run_demo", "run_reshard_demo"]


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
        say(f"cluster up: {len(cluster.nodes)} nodes of {_shown(cluster.binary)} on 127.0.0.1")
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


@dataclass
class ReshardResult:
    server: str
    seconds: float = 0.0
    operations: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # each distinct error, counted
    keys_written: int = 0
    keys_read_back: int = 0
    shards_over_time: list[tuple[float, int]] = field(default_factory=list)
    migrations: list[dict[str, Any]] = field(default_factory=list)
    reached: list[int] = field(default_factory=list)  # shard counts the controller reached

    @property
    def ok(self) -> bool:
        return (
            not self.errors
            and self.keys_read_back == self.keys_written > 0
            and self.reached[:1] == [3]
            and max(self.reached) > 3
            and self.reached[-1] == 3
        )


def run_reshard_demo(
    high_ops: float = 3000.0,
    low_ops: float = 100.0,
    capacity_ops: float = 1000.0,
    max_shards: int = 4,
    phase_timeout: float = 90.0,
    out: TextIO = sys.stderr,
) -> ReshardResult:
    """Scale 3 → ``max_shards`` → 3 under SDK load; ``capacity_ops`` is 100 % of a shard."""
    from controller.config import SlotpilotConfig
    from controller.loop import Controller
    from controller.platform import LocalPlatform

    def say(message: str) -> None:
        print(f"[demo +{time.monotonic() - t0:5.1f}s] {message}", file=out, flush=True)

    t0 = time.monotonic()
    with LocalCluster(3, 1) as cluster:
        result = ReshardResult(server=cluster.binary)
        say(f"cluster up: 3 shards x 2 nodes of {_shown(cluster.binary)}")
        cfg = SlotpilotConfig.model_validate({
            "cluster": {"seeds": [cluster.seed]},
            "probe": {"interval_seconds": 0.5, "timeout_seconds": 0.4, "rise": 1, "fall": 3},
            "shards": {
                "min_shards": 3, "max_shards": max_shards, "replicas_per_shard": 1,
                "scale_up_threshold": 0.6, "scale_down_threshold": 0.25,
                "scale_up_cooldown_seconds": 3, "scale_down_cooldown_seconds": 6,
                # sustained evidence, scaled to a demo: 2 s and 3 probes above the threshold,
                # samples of the 3 s after our own reshard discounted
                "scale_up_stabilization_seconds": 2, "scale_up_stabilization_probes": 3,
                "settle_seconds": 3,
                "node_timeout_ms": cluster.node_timeout_ms, "autoscale": True,
                "capacity": {"ops_per_second": capacity_ops, "cpu_cores": None},
            },
        })  # fmt: skip
        platform = LocalPlatform({})
        controller = Controller(cfg, platform, nodes=cluster)
        client = ClusterClient(cluster.seed, strategy="least_connections")
        acked: dict[str, str] = {}
        rate = [high_ops]
        stop = threading.Event()

        def writer(worker: int, workers: int) -> None:
            i, next_at = 0, time.monotonic()
            while not stop.is_set():
                key = f"demo:{worker}:{i}"
                try:
                    client.set(key, key)
                    acked[key] = key
                    result.operations += 1
                except Exception as exc:  # reported in the summary; the goal is none
                    error = f"{type(exc).__name__}: {exc}"
                    result.errors[error] = result.errors.get(error, 0) + 1
                i += 1
                next_at += workers / rate[0]
                time.sleep(max(0.0, next_at - time.monotonic()))
                next_at = max(next_at, time.monotonic())  # no catching up after a stall

        def shards_now() -> int:
            view = controller.view
            return len(view.shard_utilization) if view is not None else 0

        def wait_for(done: Any, what: str) -> bool:
            deadline = time.monotonic() + phase_timeout
            last, said = -1, 0.0
            while time.monotonic() < deadline:
                count = shards_now()
                if count != last:
                    result.shards_over_time.append((round(time.monotonic() - t0, 1), count))
                if count != last or time.monotonic() - said >= 1.0:
                    moving = ", resharding" if controller.migrating else ""
                    say(f"{count} shards, cluster utilization {_pct(controller)}{moving}")
                    last, said = count, time.monotonic()
                if done(count) and not controller.migrating:
                    return True
                time.sleep(0.2)
            say(f"gave up waiting for {what} after {phase_timeout:.0f}s")
            return False

        threads = [threading.Thread(target=writer, args=(w, 4), daemon=True) for w in range(4)]
        controller.start()
        try:
            for t in threads:
                t.start()
            say(f"load: {high_ops:.0f} SET/s through the SDK (100 % = {capacity_ops:.0f}/shard)")
            result.reached.append(shards_now())
            if wait_for(lambda n: n >= max_shards, "scale-out"):
                result.reached.append(shards_now())
                time.sleep(1.0)
                rate[0] = low_ops
                say(f"load dropped to {low_ops:.0f} SET/s")
                if wait_for(lambda n: n <= 3, "scale-in"):
                    result.reached.append(shards_now())
            time.sleep(0.5)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=10)
            controller.stop()
        result.migrations = [r.as_dict() for r in controller.scale_history]
        result.keys_written = len(acked)
        keys = list(acked)
        for i in range(0, len(keys), 1000):
            chunk = keys[i : i + 1000]
            values = client.mget(chunk)
            result.keys_read_back += sum(
                1 for k, v in zip(chunk, values, strict=True) if v == k.encode()
            )
        client.close()
        platform.close()
    result.seconds = round(time.monotonic() - t0, 1)
    for m in result.migrations:
        runs = m["migrations"]
        moving = sum(r["seconds"] for r in runs)
        speed = sum(r["keys"] for r in runs) / moving if moving else 0.0
        engine = ",".join(sorted({r["engine"] for r in runs}))
        say(
            f"{m['before']} -> {m['after']} shards in {m['seconds']:.1f}s: {m['slots_moved']} "
            f"slots, {m['keys_moved']} keys moved in {moving:.2f}s ({speed:,.0f} keys/s, {engine})"
        )
    say(
        f"{result.operations} writes, {sum(result.errors.values())} client errors, "
        f"{result.keys_read_back}/{result.keys_written} keys read back, shards "
        + " -> ".join(str(n) for n in result.reached)
    )
    return result


def _pct(controller: Any) -> str:
    view = controller.view
    util = view.utilization if view is not None else None
    return "unknown" if util is None else f"{util * 100:.0f} %"


def print_result(result: DemoResult | ReshardResult, out: TextIO = sys.stdout) -> None:
    out.write(json.dumps(asdict(result), indent=2) + "\n")


def _shown(path: str) -> str:
    """A path as a reader of the output wants it: relative when under the working dir."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative
