"""Replica reads under load while a replica is killed (connections refused) or hung
(SIGSTOP: accepts, never answers): errors surfaced to the caller and the longest stall.

Goal (issue 2): 0 errors, longest read stall <= 1 s with ClusterClient's defaults.
redis-py's RedisCluster is measured the same way with ``socket_timeout=1`` (with its
default of None a hung replica blocks the caller forever).
Run: .venv/bin/python -m bench.failures [--seconds 6]
"""

from __future__ import annotations

import argparse
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from redis.cluster import LoadBalancingStrategy

from balancer import ClusterClient
from bench.common import emit, log, machine
from controller.localcluster import LocalCluster, available_servers


def run_case(
    make_client: Callable[[LocalCluster], Any], fault: str, seconds: float, binary: str
) -> dict[str, Any]:
    with LocalCluster(3, 1, binary=binary) as cluster:
        client = make_client(cluster)
        keys = [f"k:{i}" for i in range(300)]
        for key in keys:
            client.set(key, key)
        victim = cluster.shard_map()[0][1][0]
        stats = {"reads": 0, "errors": 0, "worst": 0.0}
        stop = threading.Event()

        def reader() -> None:
            i = 0
            while not stop.is_set():
                started = time.monotonic()
                try:
                    client.get(keys[i % len(keys)])
                    stats["reads"] += 1
                except Exception:
                    stats["errors"] += 1
                stats["worst"] = max(stats["worst"], time.monotonic() - started)
                i += 1

        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        time.sleep(seconds / 3)
        if fault == "kill":
            victim.kill()
        else:
            victim.signal(signal.SIGSTOP)
        time.sleep(seconds * 2 / 3)
        stop.set()
        thread.join(timeout=30)
        if thread.is_alive():  # still blocked in a read on the hung node
            stats["worst"] = float("inf")
        victim.signal(signal.SIGCONT)
        return stats


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--server", choices=["valkey", "redis"], default="valkey")
    args = parser.parse_args()
    binary = available_servers()[args.server]
    clients: dict[str, Callable[[LocalCluster], Any]] = {
        "slotpilot.ClusterClient(read_from=replicas)": lambda c: ClusterClient(
            c.seed, read_from="replicas"
        ),
        "redis.RedisCluster(replicas, socket_timeout=1)": lambda c: redis.RedisCluster(
            host="127.0.0.1",
            port=c.nodes[0].port,
            load_balancing_strategy=LoadBalancingStrategy.ROUND_ROBIN_REPLICAS,
            socket_timeout=1,
        ),
    }
    info = machine()
    for fault in ("kill", "hang"):
        for name, make in clients.items():
            stats = run_case(make, fault, args.seconds, binary)
            log(f"{fault} {name}: {stats}")
            emit(
                "failures",
                client=name,
                fault=fault,
                server=args.server,
                reads=stats["reads"],
                errors=stats["errors"],
                longest_stall_seconds=round(stats["worst"], 3),
                **info,
            )


if __name__ == "__main__":
    main()
