"""asyncio GET/SET throughput on one local 3x1 cluster: one event loop, N concurrent
tasks, AsyncClusterClient vs redis-py's redis.asyncio.RedisCluster, alternating rounds.

Goal (issue 12): AsyncClusterClient >= 1.5x redis.asyncio.RedisCluster.
Run: .venv/bin/python -m bench.async_throughput [--tasks 50] [--seconds 2] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

from balancer.aio import AsyncClusterClient
from bench.common import emit, log, machine
from controller.localcluster import LocalCluster, available_servers

OURS = "slotpilot.AsyncClusterClient"
THEIRS = "redis.asyncio.RedisCluster"


async def ops_per_second(
    fn: Callable[[int], Awaitable[object]], tasks: int, seconds: float
) -> float:
    """``tasks`` loops calling ``fn`` for ``seconds``; completed calls per second."""
    done = [0] * tasks
    deadline = time.perf_counter() + seconds

    async def loop(n: int) -> None:
        i = n
        while time.perf_counter() < deadline:
            for _ in range(20):
                await fn(i)
                i += tasks
            done[n] += 20

    started = time.perf_counter()
    await asyncio.gather(*(loop(n) for n in range(tasks)))
    return sum(done) / (time.perf_counter() - started)


async def measure(seed: str, port: int, args: argparse.Namespace) -> None:
    keys = [f"bench:{i}" for i in range(100)]
    ours = AsyncClusterClient(seed, max_connections_per_node=args.tasks + 8)
    theirs = aioredis.RedisCluster(host="127.0.0.1", port=port)
    await ours.initialize()
    await theirs.initialize()
    clients: dict[str, Any] = {OURS: ours, THEIRS: theirs}
    await ours.mset({k: "x" * 32 for k in keys})
    results: dict[tuple[str, str], list[float]] = {}
    for round_no in range(args.rounds):
        for op in ("GET", "SET"):
            for name, client in clients.items():
                if op == "GET":
                    fn = lambda i, c=client: c.get(keys[i % 100])  # noqa: E731
                else:
                    fn = lambda i, c=client: c.set(keys[i % 100], "y" * 32)  # noqa: E731
                rate = await ops_per_second(fn, args.tasks, args.seconds)
                results.setdefault((name, op), []).append(rate)
                log(f"round {round_no} {op} {name} ({args.tasks} tasks): {rate:,.0f}/s")
    info = machine()
    for (name, op), rates in results.items():
        emit(
            "async_throughput",
            client=name,
            op=op,
            server=args.server,
            tasks=args.tasks,
            ops_per_second=round(statistics.median(rates)),
            rounds=args.rounds,
            **info,
        )
    for op in ("GET", "SET"):
        ratio = statistics.median(results[(OURS, op)]) / statistics.median(results[(THEIRS, op)])
        emit(
            "async_throughput_ratio",
            op=op,
            server=args.server,
            tasks=args.tasks,
            vs_redis_asyncio_cluster=round(ratio, 2),
        )
    await ours.aclose()
    await theirs.aclose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--server", choices=["valkey", "redis"], default="valkey")
    args = parser.parse_args()
    with LocalCluster(3, 1, binary=available_servers()[args.server]) as cluster:
        asyncio.run(measure(cluster.seed, cluster.primaries()[0].port, args))


if __name__ == "__main__":
    main()
