"""Resharding speed: keys/s of slotpilot's classic and atomic engines vs
``redis-cli --cluster rebalance --cluster-use-empty-masters``, same data, same machine.

Each case: a fresh 3-primary cluster with ``--keys`` keys, 2 empty primaries joined,
then one rebalance (6,553 slots move). Goals (issue 4): classic >= 10x redis-cli,
atomic >= 50x.
Run: .venv/bin/python -m bench.migration [--keys 50000] [--server valkey]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import time
from collections.abc import Callable

from balancer import ClusterClient
from bench.common import emit, log, machine
from controller.localcluster import LocalCluster, available_servers
from controller.migration import MigrationExecutor
from controller.rebalance import ownership_from_cluster_shards, plan_rebalance
from controller.topology import connector


def _prepare(binary: str, keys: int) -> tuple[LocalCluster, int]:
    cluster = LocalCluster(3, 0, binary=binary).start()
    client = ClusterClient(cluster.seed)
    for start in range(0, keys, 5000):
        client.mset({f"key:{i}": "v" * 64 for i in range(start, min(keys, start + 5000))})
    client.close()
    cluster.add_node()
    cluster.add_node()
    return cluster, keys


def run_slotpilot(cluster: LocalCluster, engine: str) -> tuple[float, int, int]:
    reply = cluster.nodes[0].client().execute_command("CLUSTER", "SHARDS")
    plan = plan_rebalance(ownership_from_cluster_shards(reply))
    addresses = {cluster.node_id(n): n.address for n in cluster.primaries()}
    report = MigrationExecutor(addresses, connector(), engine=engine).execute(plan)
    return report.seconds, report.keys, report.slots


def run_redis_cli(cluster: LocalCluster) -> tuple[float, int, int]:
    before = {n.address: n.client().dbsize() for n in cluster.primaries()}
    started = time.monotonic()
    subprocess.run(
        ["redis-cli", "--cluster", "rebalance", cluster.seed, "--cluster-use-empty-masters"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=1800,
    )  # fmt: skip
    seconds = time.monotonic() - started
    after = {n.address: n.client().dbsize() for n in cluster.primaries()}
    moved = sum(max(0, before[a] - after.get(a, 0)) for a in before)
    return seconds, moved, 6553


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, default=50_000)
    parser.add_argument("--server", choices=["valkey", "redis"], default="valkey")
    args = parser.parse_args()
    binary = available_servers()[args.server]
    cases: list[tuple[str, Callable[[LocalCluster], tuple[float, int, int]]]] = [
        ("slotpilot classic", lambda c: run_slotpilot(c, "classic")),
    ]
    if args.server == "valkey":
        cases.append(("slotpilot atomic", lambda c: run_slotpilot(c, "atomic")))
    if shutil.which("redis-cli"):
        cases.append(("redis-cli --cluster rebalance", run_redis_cli))
    results = {}
    for name, run in cases:
        cluster, _ = _prepare(binary, args.keys)
        try:
            seconds, keys, slots = run(cluster)
        finally:
            cluster.stop()
        results[name] = keys / seconds
        log(f"{name}: {keys} keys, {slots} slots in {seconds:.2f}s")
        rate = round(keys / seconds)
        emit("migration", method=name, server=args.server, keys=keys, slots=slots,
             seconds=round(seconds, 3), keys_per_second=rate, **machine())  # fmt: skip
    base = results.get("redis-cli --cluster rebalance")
    if base:
        for name, rate in results.items():
            emit(
                "migration_ratio",
                method=name,
                server=args.server,
                vs_redis_cli=round(rate / base, 1),
            )


if __name__ == "__main__":
    main()
